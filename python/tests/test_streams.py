"""Sinks, state streams, connection and worker state, herd.logs and the pool
built-ins, with the blocking API: each against herd-testworker and its
Python twin (herd.serve), which must answer alike."""

import pytest

import herd
from conftest import PYTESTWORKER, herd_error


def test_sink(herdd, anyworker):
    with herd.connect() as m:
        with m.spawn(anyworker).connect() as c:
            assert c.functions["total"] == "sink"
            s = c.sink("total")
            for i in (4, 6, 32):
                s.send(i)
            assert s.finish() == 42 and s.result == 42
            with pytest.raises(BrokenPipeError):
                s.send(1)
            # The function's error ends the sink early: finish() raises it.
            s = c.sink("total")
            s.send(1)
            s.send("x")
            e = herd_error("function_failed", s.finish)
            assert e.message == "item 1 is not an integer"
            # Leaving the block without finish() cancels; the connection goes on.
            with c.sink("total") as s:
                s.send(5)
            assert s.result is None
            assert c.call("sum", {"n": 4}) == 6
            herd_error("invalid_params", c.sink("total", {"x": 1}).finish)


def test_sink_cancel_reaches_the_handler(herdd, anyworker):
    with herd.connect() as m:
        w = m.spawn(anyworker)
        with w.connect() as watch, w.connect() as c:
            logs = watch.stream("herd.logs")
            # On the stream's own connection: once this is seen, it follows the log.
            watch.notify("note", {"text": "following"})
            assert next(logs)["message"] == "following"
            s = c.sink("total")
            s.send(1)
            s.cancel()
            assert next(logs)["message"] == "total: cancelled"
            logs.cancel()


def test_state_stream_and_init_arguments(herdd, anyworker):
    with herd.connect() as m:
        w = m.spawn(anyworker, init={"scale": 3})
        with w.connect(init={"user": "ann"}) as c:
            st = c.stream("counter", {"n": 3})
            items = [(x, st.initial) for x in st]
            assert items == [(0, True), (1, False), (2, False)]
            assert st.result == {"count": 3}
            got = c.call("state")
            assert got["init"] == {"scale": 3} and got["conn_init"] == {"user": "ann"}
        with w.connect() as c:
            assert c.call("state")["conn_init"] is None
        with pytest.raises(herd.HerdError) as e:
            w.connect(init={"fail_conn": "no such user"})
        assert e.value.name == "init_failed" and e.value.message == "no such user"


def test_logs_and_close_server(herdd, anyworker):
    with herd.connect() as m:
        w = m.spawn(anyworker)
        with w.connect() as c:
            logs = c.stream("herd.logs")
            c.notify("note", {"text": "sum 1..10"})
            item = next(logs)
            assert item["level"] == "info" and item["message"] == "sum 1..10"
            assert item["time"].endswith("Z")
            logs.cancel()
            assert c.call("herd.close_server") == {}
            herd_error("connection_failed", w.connect)
            assert c.call("sum", {"n": 3}) == 3


def test_fold_take_batch(herdd, anyworker):
    with herd.connect() as m:
        with m.spawn(anyworker).connect() as c:
            fold = {"function": "sum", "acc": "k", "combine": "add"}
            assert c.call("herd.fold", dict(fold, args={"n": 4})) == {"n": 1}
            assert c.call("herd.fold", dict(fold, args={"n": 5})) == {"n": 2}
            herd_error("function_failed", c.call, "herd.fold",
                       dict(fold, function="product", args={"n": 30}))
            herd_error("method_not_found", c.call, "herd.fold", dict(fold, combine="max"))
            assert c.call("herd.take", {"acc": "k"}) == {"n": 2, "value": 16}
            assert c.call("herd.take", {"acc": "k"}) == {"n": 0}
            got = c.call("herd.batch", {"function": "product", "args": [{"n": 3}, {"n": 30}, 7]})
            assert got["results"] == [6, None, None]
            assert [(x["index"], x["error"]["data"]["name"]) for x in got["errors"]] == \
                [(1, "function_failed"), (2, "invalid_params")]
            assert c.call("herd.batch", dict(fold, args=[{"n": 4}, {"n": 5}], acc="j")) == {"n": 2}
            assert c.call("herd.take", {"acc": "j"}) == {"n": 2, "value": 16}


def test_python_worker_api(herdd, tmp_path):
    # What a worker script sees: worker_state, conn_state, a combine that fails.
    script = tmp_path / "w.py"
    script.write_text(
        "#!/usr/bin/env python3\n"
        "import sys\n"
        f"sys.path.insert(0, {str(PYTESTWORKER.rsplit('/tests/', 1)[0])!r})\n"
        "sys.dont_write_bytecode = True\n"
        "import herd\n"
        "@herd.sink\n"
        "def join(arg, items):\n"
        "    return arg['sep'].join(items)\n"
        "@herd.state\n"
        "def view(arg):\n"
        "    yield {'user': herd.conn_state(), 'db': herd.worker_state()}\n"
        "    return 'done'\n"
        "herd.serve({'join': join, 'view': view, 'one': lambda a: 1},\n"
        "           init=lambda arg: arg['db'], conn_init=lambda arg: arg,\n"
        "           combiners={'bad': lambda a, b: 1 / 0})\n")
    script.chmod(0o755)
    with herd.connect() as m:
        w = m.spawn(str(script), init={"db": "users.db"})
        with w.connect(init="ann") as c:
            assert c.functions == {"join": "sink", "view": "state", "one": "call"}
            with c.sink("join", {"sep": "-"}) as s:
                s.send("a")
                s.send("b")
                assert s.finish() == "a-b"
            st = c.stream("view")
            assert next(st) == {"user": "ann", "db": "users.db"} and st.initial
            assert list(st) == [] and st.result == "done"
            fold = {"function": "one", "acc": "k", "combine": "bad"}
            assert c.call("herd.fold", fold) == {"n": 1}
            assert herd_error("combine_failed", c.call, "herd.fold", fold).code == -32012
            herd_error("combine_failed", c.call, "herd.take", {"acc": "k"})
