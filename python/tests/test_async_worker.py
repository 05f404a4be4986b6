"""Python workers with async functions (herd.serve runs them as asyncio tasks)."""

import os
import time

import herd
from conftest import HERE, herd_error

ASYNCWORKER = os.path.join(HERE, "asyncworker.py")


def spawn(m, **kw):
    return m.spawn(ASYNCWORKER, env={"PYTHONDONTWRITEBYTECODE": "1"}, **kw)


def test_async_calls_run_concurrently(herdd):
    with herd.connect() as m:
        w = spawn(m)
        assert w.connect().functions == {
            "wait_gate": "call", "open_gate": "call", "nap": "call", "ticks": "pipe",
            "counter": "state", "total": "sink", "broken": "call", "note": "oneway",
            "notes": "call", "sum": "call", "die": "call"}
        with w.connect(init={"user": "ann"}) as c, w.connect() as d:
            # wait_gate awaits while the same connection's later calls and another
            # connection's are served; it answers after them, once the gate opened.
            gated = c._conn.request("wait_gate")
            assert c.call("sum", {"n": 4}) == 6
            assert not c._conn.replied(gated)
            assert d.call("open_gate") == "open"
            assert c._conn.wait(gated, 10) == {"opened": True, "conn": {"user": "ann"}}
            c.notify("note", {"text": "async oneway"})
            assert c.call("notes") == ["async oneway"]
            e = herd_error("function_failed", c.call, "broken")
            assert e.message == "ValueError: async handler failed"
            assert "in broken" in e.data["traceback"]
            assert c.call("sum", {"n": 3}) == 3


def test_async_streams_and_sinks(herdd):
    with herd.connect() as m:
        with spawn(m).connect() as c:
            s = c.stream("ticks", {"n": 3})
            assert list(s) == [0, 1, 2] and s.result is None
            st = c.stream("counter", {"n": 2})
            assert next(st) == 0 and st.initial
            assert list(st) == [1] and not st.initial
            k = c.sink("total")
            for i in (4, 6, 5):
                k.send(i)
            assert k.finish() == 15
            # A cancel cancels the task awaiting between items; the worker serves on.
            s = c.stream("ticks", {"n": 3, "wait": True})
            t0 = time.monotonic()
            s.cancel()
            assert list(s) == [] and time.monotonic() - t0 < 5
            gated = c._conn.request("wait_gate")
            c.notify("herd.cancel", {"id": gated})
            herd_error("cancelled", c._conn.wait, gated, 10)
            assert c.call("sum", {"n": 5}) == 10


def test_async_call_keeps_heartbeats(herdd):
    # herdd would kill a worker silent for 300 ms: a call awaiting for 1.5 s
    # leaves the loop free to beat.
    with herd.connect() as m:
        w = spawn(m, settings={"heartbeat_interval_ms": 50, "heartbeat_timeout_ms": 300})
        with w.connect() as c:
            assert c.call("nap", {"s": 1.5}) == 1.5
        assert w.inspect()["state"] == "ready"
        # herdd's stop (shutdown on fd 3, SIGTERM) ends the asyncio loop cleanly.
        end = w.shutdown()
        assert end["reason"] == "shutdown" and end["exit_code"] == 0

