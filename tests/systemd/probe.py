#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Runs inside the test container (check-systemd.py copies nothing: the
test's directory is bind-mounted), so that what it times is not slowed by
entering the container for every look.

  probe.py wait UNIT TIMEOUT PROP=VALUE...   until systemctl show matches
  probe.py stop UNIT PID...     systemctl stop; times its return and the last pid gone
  probe.py restart UNIT PID...  systemctl restart; the new MainPID and the pids left
  probe.py kill UNIT SIGNAL TIMEOUT PID...   signals MainPID; times until systemd
                                has a new MainPID active and the old pids are gone
  probe.py gone TIMEOUT PID...  until none of the pids exists
  probe.py time CMD [ARG]...    runs CMD; its output and how long it took

systemd has no descriptor to poll for a unit's state or for another
namespace's process exit, so these poll with a deadline, every 10 ms.
Each prints one JSON line. With PROBE_USER=1 they ask the user manager."""
import json
import os
import signal
import subprocess
import sys
import time

POLL = 0.01


def show(unit, props):
    scope = ["--user"] if os.environ.get("PROBE_USER") == "1" else []
    out = subprocess.run(["systemctl"] + scope + ["show", "-p", ",".join(props), unit],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def wait_gone(pids, deadline):
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(POLL)


def cmd_wait(unit, timeout, *want):
    want = dict(w.split("=", 1) for w in want)
    deadline = time.monotonic() + float(timeout)
    while True:
        got = show(unit, list(want))
        if got == want or time.monotonic() > deadline:
            print(json.dumps({"ok": got == want, "got": got}))
            return
        time.sleep(POLL)


def systemctl_timed(verb, unit, pids):
    """systemctl VERB UNIT, timing its return and the last of pids gone."""
    pids = [int(p) for p in pids]
    t0 = time.monotonic()
    r = subprocess.run(["systemctl", verb, unit])
    returned = time.monotonic() - t0
    left = wait_gone(pids, t0 + 30)
    return {"rc": r.returncode, "returned_s": returned,
            "gone_s": time.monotonic() - t0, "left": left}


def cmd_stop(unit, *pids):
    print(json.dumps(systemctl_timed("stop", unit, pids)))


def cmd_restart(unit, *pids):
    old = int(show(unit, ["MainPID"])["MainPID"])
    out = systemctl_timed("restart", unit, pids)
    out.update(old=old, new=int(show(unit, ["MainPID"])["MainPID"]))
    print(json.dumps(out))


def cmd_kill(unit, sig, timeout, *pids):
    pids = [int(p) for p in pids]
    old = int(show(unit, ["MainPID"])["MainPID"])
    t0 = time.monotonic()
    deadline = t0 + float(timeout)
    os.kill(old, getattr(signal, "SIG" + sig))
    new, killed_s, state = 0, None, {}
    while time.monotonic() < deadline:
        if killed_s is None and not alive(old):
            killed_s = time.monotonic() - t0
        state = show(unit, ["MainPID", "ActiveState", "SubState", "Result", "NRestarts"])
        if state["ActiveState"] == "failed":
            break
        if state["ActiveState"] == "active" and int(state["MainPID"]) not in (0, old):
            new = int(state["MainPID"])
            break
        time.sleep(POLL)
    restarted = time.monotonic() - t0
    left = wait_gone(pids + [old], deadline)
    print(json.dumps({"old": old, "new": new, "killed_s": killed_s, "restarted_s": restarted,
                      "left": left, "state": state}))


def cmd_gone(timeout, *pids):
    t0 = time.monotonic()
    left = wait_gone([int(p) for p in pids], t0 + float(timeout))
    print(json.dumps({"left": left, "gone_s": time.monotonic() - t0}))


def cmd_time(*cmd):
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    print(json.dumps({"s": time.monotonic() - t0, "out": out}))


if __name__ == "__main__":
    {"wait": cmd_wait, "stop": cmd_stop, "restart": cmd_restart, "kill": cmd_kill,
     "gone": cmd_gone, "time": cmd_time}[sys.argv[1]](
        *sys.argv[2:])
