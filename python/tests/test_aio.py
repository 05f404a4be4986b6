"""herd.aio against a real herdd, with herd-testworker and its Python twin.
Each test runs its coroutine under asyncio.run with a deadline."""

import asyncio

import pytest

import herd
import herd.aio


def run(coro, timeout=60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def with_worker(path, body):
    """Runs ``body(m, w)``: a master session and a worker it spawned from ``path``."""
    async def main():
        async with herd.aio.connect() as m:
            await body(m, await m.spawn(path))
    run(main())


def test_calls_streams_sinks(herdd, anyworker):
    async def main():
        async with herd.aio.connect() as m:
            w = await m.spawn(anyworker, name="calc")
            assert w.name == "calc" and (await w.inspect())["state"] == "ready"
            async with await w.connect(init={"user": "ann"}) as c:
                assert await c.call("sum", {"n": 10}) == 45
                c.notify("note", {"text": "from asyncio"})
                s = c.stream("count", {"n": 3})
                assert [x async for x in s] == [0, 1, 2] and s.result == {"count": 3}
                st = c.stream("counter", {"n": 2})
                assert [(x, st.initial) async for x in st] == [(0, True), (1, False)]
                k = c.sink("total")
                for i in (4, 6):
                    await k.send(i)
                assert await k.finish() == 10
                with pytest.raises(herd.HerdError) as e:
                    await c.call("product", {"n": 30})
                assert e.value.name == "function_failed" and e.value.code == -32012
                assert (await c.call("state"))["conn_init"] == {"user": "ann"}
            assert [x["id"] for x in await m.list()] == [w.id]
            assert (await w.shutdown())["reason"] == "shutdown"
    run(main())


def test_one_connection_waits_others_go_on(herdd, anyworker):
    # The worker answers a second connection while a call sleeps on the first.
    async def body(m, w):
        async with await w.connect() as a, await w.connect() as b:
            slow = asyncio.ensure_future(a.call("sleep", {"ms": 1500}))
            assert await b.call("echo", [7]) == [7]
            assert not slow.done()
            assert await slow == {"slept_ms": 1500}
    with_worker(anyworker, body)


def test_task_cancel_cancels_the_request(herdd, anyworker):
    async def body(m, w):
        async with await w.connect() as watch, await w.connect() as c:
            logs = watch.stream("herd.logs")
            watch.notify("note", {"text": "following"})
            assert (await logs.__anext__())["message"] == "following"
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.call("sleep", {"ms": 60000}), 0.3)
            assert (await logs.__anext__())["message"] == "sleep: cancelled"
            # A task iterating over a stream, cancelled after its first item.
            first = asyncio.Event()

            async def consume(s):
                async for _ in s:
                    first.set()

            s = c.stream("count", {"n": 10 ** 6, "delay_ms": 5})
            task = asyncio.ensure_future(consume(s))
            await first.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # A call cancelled while another of its connection runs (the Python
            # worker had not started it yet): it never holds the connection up.
            slow = asyncio.ensure_future(c.call("sleep", {"ms": 400}))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.call("sleep", {"ms": 60000}), 0.2)
            assert await slow == {"slept_ms": 400}
            async with c.sink("total") as k:
                await k.send(1)
            # After the C worker's "sleep: cancelled" for the call above, if it ran.
            while (await logs.__anext__())["message"] != "total: cancelled":
                pass
            await logs.cancel()
            assert await c.call("sum", {"n": 4}) == 6
    with_worker(anyworker, body)


def test_events_and_failures(herdd, anyworker):
    async def main():
        async with herd.aio.connect() as m:
            called = []
            m.on_failure(called.append)
            failures = m.failures()
            w = await m.spawn(anyworker)
            c = await w.connect()
            with pytest.raises(herd.HerdError) as e:
                await c.call("crash", {"signal": "KILL"})
            assert e.value.name == "connection_closed"
            ev = await failures.__anext__()
            assert ev["event"] == "crashed" and ev["worker"]["id"] == w.id
            assert called == [ev]
            crashed = ev
            await failures.aclose()
            v = await m.spawn(anyworker)
            await v.kill("KILL")
            ev = await m.wait_event(lambda e: e["worker"]["id"] == v.id and e["event"] != "ready")
            assert ev["event"] == "killed"
            with pytest.raises(herd.HerdError) as e:
                await m.wait_event(lambda e: False, timeout=0.2)
            assert e.value.name == "timeout"
            await c.close()
            # Another session resumes after the crash: v's events replay, in order.
            async with herd.aio.connect() as late:
                got = await late.subscribe(since=crashed["seq"])
                assert got["seq"] >= ev["seq"] > crashed["seq"]
                ready = await late.wait_event(lambda e: e["worker"]["id"] == v.id)
                replayed = await late.wait_event(lambda e: e["worker"]["id"] == v.id)
                assert (ready["event"], replayed) == ("ready", ev)
                await late.unsubscribe()
    run(main())


def test_heartbeats_while_the_loop_turns(herdd, testworker):
    fast = {"heartbeat_interval_ms": 100, "heartbeat_timeout_ms": 1000}

    async def main():
        m = await herd.aio.connect(settings=fast)
        w = await m.spawn(testworker)
        async with await w.connect(settings=fast) as c:
            assert await c.call("sleep", {"ms": 2500}) == {"slept_ms": 2500}
            # Idle past the timeout: the heartbeat task keeps both sides alive.
            await asyncio.sleep(2.5)
            assert await c.call("echo", [1]) == [1]
        assert (await m.inspect(w.id))["state"] == "ready"
        await m.close()
    run(main())


def test_errors(herdd, tmp_path, monkeypatch):
    async def main():
        async with herd.aio.connect() as m:
            with pytest.raises(herd.HerdError) as e:
                await m.inspect("w99")
            assert e.value.name == "worker_not_found" and e.value.data["id"] == "w99"
            with pytest.raises(herd.HerdError) as e:
                await m.spawn("/nonexistent")
            assert e.value.data["stage"] == "exec"
        monkeypatch.setenv("HERD_NO_AUTOSTART", "1")
        with pytest.raises(herd.HerdError) as e:
            await herd.aio.connect(str(tmp_path / "none.sock"))
        assert e.value.name == "connection_failed"
    run(main())


def test_handle_incarnation(herdd, testworker):
    """herd.aio's handles name one incarnation too (test_master's test of it)."""
    import os
    import signal

    async def main():
        async with herd.aio.connect() as m:
            old = await m.spawn(testworker, shutdown_on="explicit", restart="always")
            os.kill(old.pid, signal.SIGKILL)
            ev = await m.wait_event(lambda e: e.get("event") == "ready" and
                                    e["worker"].get("incarnation") == 2)
            for op in (old.kill, old.shutdown, old.connect):
                with pytest.raises(herd.HerdError) as e:
                    await op()
                assert e.value.name == "worker_not_found"
            cur = m.worker(await m.inspect(old.id))
            assert (cur.incarnation, cur.pid) == (2, ev["worker"]["pid"])
            async with await cur.connect() as c:
                assert await c.call("sum", {"n": 3}) == 3
            assert (await cur.shutdown())["incarnation"] == 2
    run(main())
