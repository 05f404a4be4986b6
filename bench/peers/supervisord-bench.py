#!/usr/bin/python3
# supervisord beside herdd (bench/run-set.sh): N programs, each the test worker
# serving its own socket, from supervisorctl's "start all" until every one is
# RUNNING (startsecs=0: as soon as it is spawned), then from "stop all" until
# none is. supervisord runs in the foreground from a generated config in a
# temporary directory; its state is polled over XML-RPC on its Unix socket.
# When something fails, the programs still up and supervisord are killed by pid.
# Debian's interpreter: the supervisor package is installed for it.
#   supervisord-bench.py N WORKER
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xmlrpc.client

from supervisor.xmlrpc import SupervisorTransport

CONFIG = """[unix_http_server]
file={d}/supervisor.sock

[supervisord]
nodaemon=true
logfile={d}/supervisord.log
pidfile={d}/supervisord.pid
childlogdir={d}
minfds={fds}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:w]
command={worker} --socket {d}/w%(process_num)d.sock
process_name=%(program_name)s%(process_num)d
numprocs={n}
autostart=false
autorestart=false
startsecs=0
stopwaitsecs=10
stdout_logfile=NONE
stderr_logfile=NONE
"""


def wait_for(what, deadline_s, ready):
    """Polls ready() every 5 ms until true; exits non-zero after deadline_s."""
    deadline = time.monotonic() + deadline_s
    while not ready():
        if time.monotonic() > deadline:
            sys.exit(f"supervisord-bench: {what} not within {deadline_s} s")
        time.sleep(0.005)
    return time.monotonic()


def answers(path):
    """True once something accepts connections on the Unix socket path."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        return s.connect_ex(path) == 0


def states(rpc):
    return [p["statename"] for p in rpc.supervisor.getAllProcessInfo()]


def report(variant, secs):
    print(json.dumps({"figure": "peer_scale", "variant": variant,
                      "value": round(secs * 1e3, 3), "unit": "ms"}), flush=True)


def main():
    n, worker = int(sys.argv[1]), os.path.abspath(sys.argv[2])
    d = tempfile.mkdtemp(prefix="herd-supervisord-")
    with open(os.path.join(d, "supervisord.conf"), "w") as f:
        f.write(CONFIG.format(d=d, n=n, worker=worker, fds=4 * n + 64))
    sup = subprocess.Popen(["supervisord", "-c", os.path.join(d, "supervisord.conf")],
                           stdout=subprocess.DEVNULL)
    rpc = xmlrpc.client.ServerProxy(
        "http://localhost", transport=SupervisorTransport(None, None, f"unix://{d}/supervisor.sock"))
    stopped = False
    try:
        wait_for("supervisord's socket", 30, lambda: answers(f"{d}/supervisor.sock"))
        wait_for("supervisord RUNNING", 30,
                 lambda: rpc.supervisor.getState()["statename"] == "RUNNING")
        t0 = time.monotonic()
        rpc.supervisor.startProcessGroup("w", False)
        t1 = wait_for(f"{n} programs RUNNING", 300, lambda: states(rpc).count("RUNNING") == n)
        # RUNNING is the fork; herd's ready is the worker serving: both are shown,
        # and the stop starts from workers that serve, as herd's does.
        socks = [f"{d}/w{i}.sock" for i in range(n)]
        t_serving = wait_for(f"{n} programs serving", 300,
                             lambda: all(answers(p) for p in socks))
        rpc.supervisor.stopProcessGroup("w", False)
        t2 = wait_for(f"{n} programs stopped", 300,
                      lambda: states(rpc).count("STOPPED") == n)
        stopped = True
        report(f"supervisord_spawn_{n}_all_running", t1 - t0)
        report(f"supervisord_spawn_{n}_all_serving", t_serving - t0)
        report(f"supervisord_stop_{n}_all_stopped", t2 - t_serving)
        rpc.supervisor.shutdown()
        sup.wait(30)
    finally:
        # Something failed: the programs supervisord has not reaped (pid 0 once
        # it has), then supervisord itself.
        if not stopped and sup.poll() is None:
            try:
                pids = [p["pid"] for p in rpc.supervisor.getAllProcessInfo() if p["pid"]]
            except Exception:  # noqa: BLE001 - supervisord may be the failure
                pids = []
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if sup.poll() is None:
            sup.kill()
        sup.wait()
        subprocess.run(["rm", "-rf", d], check=False)


if __name__ == "__main__":
    main()
