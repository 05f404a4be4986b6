"""Python workers (herd.serve) under a real herdd, driven by the Python master."""

import json
import os
import subprocess
import time

import pytest

import herd
from conftest import HERE, herd_error

PYWORKER = os.path.join(HERE, "pyworker.py")


def spawn(m, **kw):
    return m.spawn(PYWORKER, env={"PYTHONDONTWRITEBYTECODE": "1"}, **kw)


def test_python_worker_serves_every_kind(herdd):
    with herd.connect() as m:
        w = spawn(m, init={"scale": 2}, name="py", settings={"connection_timeout_ms": 7000})
        info = m.inspect(w.id)
        assert info["state"] == "ready"
        assert {"name": "count", "kind": "pipe"} in info["functions"]
        fast = {"heartbeat_interval_ms": 100, "heartbeat_timeout_ms": 1000}
        with w.connect(settings=fast) as c:
            got = c.call("herd.settings")
            assert got["connection_timeout_ms"] == 7000
            assert got["heartbeat_interval_ms"] == m.settings["heartbeat_interval_ms"]
            assert c.functions == {"echo": "call", "sum": "call", "divide": "call",
                                   "count": "pipe", "note": "oneway", "notes": "call",
                                   "pid": "call", "die": "call", "bail": "call"}
            assert c.call("sum", {"n": 10}) == 90
            assert c.call("echo", {"x": ["é\n", None]}) == {"x": ["é\n", None]}
            assert c.call("pid") == w.pid
            c.notify("note", {"text": "one"})
            assert c.call("notes") == ["one"]
            s = c.stream("count", {"n": 3})
            assert list(s) == [0, 1, 2] and s.result == {"count": 3}
            e = herd_error("function_failed", c.call, "divide", {"a": 1, "b": 0})
            assert e.message.startswith("ZeroDivisionError")
            assert "Traceback" in e.data["traceback"]
            herd_error("invalid_params", c.call, "sum", {"n": "x"})
            herd_error("method_not_found", c.call, "nope")
            # Idle past the heartbeat timeout: the worker's loop keeps the connection.
            deadline = time.monotonic() + 2.5
            while time.monotonic() < deadline:
                m.poll(0.1)
            assert c.call("sum", {"n": 3}) == 6
        assert m.shutdown(w.id)["reason"] == "shutdown"


def test_python_worker_stream_cancel(herdd):
    with herd.connect() as m:
        with spawn(m).connect() as c:
            s = c.stream("count", {"n": 100, "delay_ms": 50})
            assert next(s) == 0
            s.cancel()
            assert list(s) == []
            assert c.call("sum", {"n": 4}) == 6


def test_python_worker_init_failure(herdd):
    with herd.connect() as m:
        with pytest.raises(herd.HerdError) as e:
            spawn(m, init={"fail_init": "no database"})
        assert e.value.name == "init_failed" and "no database" in e.value.message


@pytest.mark.parametrize("script", ["pyworker.py", "asyncworker.py"])
def test_python_worker_failure_reaches_on_failure(herdd, script):
    # herd.fail in a plain function, and in an async one (a task).
    with herd.connect() as m:
        seen = []
        m.on_failure(seen.append)
        w = m.spawn(os.path.join(HERE, script), env={"PYTHONDONTWRITEBYTECODE": "1"})
        with w.connect() as c:
            herd_error("connection_closed", c.call, "die", {"message": "disk on fire"})
        ev = m.wait_event(lambda e: e["worker"]["id"] == w.id and e["event"] != "ready")
        assert ev["event"] == "failed" and ev["message"] == "disk on fire"
        assert seen == [ev]


def test_python_worker_exit_in_a_handler_reports_the_traceback(herdd):
    # What escapes a handler (SystemExit here) is the worker's failure, its
    # traceback the failure message and in the stderr herdd keeps.
    with herd.connect() as m:
        w = spawn(m)
        with w.connect() as c:
            herd_error("connection_closed", c.call, "bail", 3)
        ev = m.wait_event(lambda e: e["worker"]["id"] == w.id and e["event"] != "ready")
        assert ev["event"] == "failed" and ev["worker"]["exit_code"] == 1
        assert ev["message"].startswith("Traceback (most recent call last)")
        assert "in bail" in ev["message"] and ev["message"].rstrip().endswith("SystemExit: 3")
        assert any("SystemExit: 3" in line for line in ev["stderr_tail"])


def test_python_worker_sigkilled_master(herdd):
    # The python worker ends with its master's connection, as a C worker does.
    with herd.connect() as watcher:
        watcher.subscribe(all=True)
        m = herd.connect()
        w = spawn(m)
        m._conn.close()  # no goodbye: as if the process died
        ev = watcher.wait_event(lambda e: e["worker"]["id"] == w.id and e["event"] != "ready")
        assert ev["worker"]["reason"] == "killed_orphan"


def test_python_worker_connection_closed(herdd):
    # A connection_closed worker exits by itself when its one client leaves.
    with herd.connect() as m:
        w = spawn(m, shutdown_on="connection_closed")
        with w.connect() as c:
            assert c.call("sum", {"n": 3}) == 3
        ev = m.wait_event(lambda e: e["worker"]["id"] == w.id and e["event"] != "ready")
        assert ev["event"] == "exited" and ev["worker"]["exit_code"] == 0


HERDCTL = os.environ.get("HERDCTL", os.path.join(os.path.dirname(os.path.dirname(HERE)),
                                                 "build", "tools", "herdctl", "herdctl"))


def test_c_client_calls_python_worker(herdd):
    # herdctl (libherd) spawns and calls the Python worker like a C one.
    def herdctl(*args):
        return subprocess.run([HERDCTL, "--socket", herdd] + list(args), capture_output=True,
                              text=True, timeout=60)

    out = herdctl("--json", "spawn", "--", PYWORKER)
    assert out.returncode == 0, out.stderr
    wid = json.loads(out.stdout)["id"]
    assert herdctl("call", wid, "sum", '{"n":10}').stdout == "45\n"
    assert herdctl("--json", "call", wid, "count", '{"n":2}').stdout.split() == \
        ["0", "1", '{"count":2}']
    out = herdctl("call", wid, "divide", '{"a":1,"b":0}')
    assert out.returncode == 1 and "function_failed: ZeroDivisionError" in out.stderr
    # SIGTERM stops it cleanly (exit 0), as herdd's own stop does.
    assert herdctl("kill", wid, "TERM").returncode == 0
    with herd.connect() as m:
        m.subscribe(all=True)
        info = m.inspect(wid)
        if info["state"] != "exited":
            ev = m.wait_event(lambda e: e["worker"]["id"] == wid and e["event"] == "killed")
            info = ev["worker"]
        assert info["exit_code"] == 0 and info["signal"] is None
