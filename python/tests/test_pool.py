"""herd.Pool against a real herdd: Python workers (the start_app pattern) and
herd-testworker (C)."""

import concurrent.futures
import itertools
import operator
import os
import select
import signal
import subprocess
import sys
import textwrap

import pytest

import herd
import poolfuncs as f
from conftest import HERE


def expected_sum_of_sums(n):
    return sum(k * (k - 1) // 2 for k in range(n))


def test_map_shapes(herdd):
    with herd.Pool(2) as p:
        assert p.map(f.square, range(100)) == [x * x for x in range(100)]
        assert p.map(f.square, iter(range(5)), chunksize=2) == [0, 1, 4, 9, 16]
        assert p.starmap(f.add, [(1, 2), ("a", "b")]) == [3, "ab"]
        assert list(p.imap(f.square, iter(range(50)), chunksize=3)) == \
            [x * x for x in range(50)]
        assert p.apply(f.add, (2, 3)) == 5
        futures = [p.submit(f.square, x) for x in range(10)]
        assert [x.result() for x in concurrent.futures.as_completed(futures)] != []
        assert [x.result() for x in futures] == [x * x for x in range(10)]
        assert p.map(f.square, []) == []
        # Pickled by default, as multiprocessing: a tuple comes back a tuple.
        assert p.map(f.pair, [1]) == [(1, "1")]
        assert p.wait_ready(30) and len(set(p.pids())) == 2
    with herd.Pool(1, pickle=False) as p:
        # JSON: a tuple comes back as a list.
        assert p.map(f.pair, [1]) == [[1, "1"]]
        assert p.starmap(f.add, [(1, 2), ("a", "b")]) == [3, "ab"]


def test_pickle_mode(herdd):
    with herd.Pool(2, pickle=True) as p:
        assert p.map(f.pair, range(3)) == [(0, "0"), (1, "1"), (2, "2")]
        assert p.map(f.word_lengths, ["a bb"]) == [{"a": 1, "bb": 2}]
        with pytest.raises(herd.TaskError) as e:
            p.map(f.fails_on_three, range(5))
        assert e.value.index == 3 and e.value.item == 3


def test_imap_unordered_does_not_wait_for_a_slow_task(herdd, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    # One task in flight a worker: none waits behind the one that blocks.
    with herd.Pool(2, window=1) as p:
        it = p.imap_unordered(f.wait_fifo_if_zero, ((x, fifo) for x in range(20)))
        # Item 0 blocks its worker until the FIFO has a writer: the other
        # nineteen can only come first if the results are unordered.
        first = list(itertools.islice(it, 19))
        assert sorted(first) == list(range(1, 20))
        with open(fifo, "w") as w:
            w.write("zero")
        assert list(it) == ["zero"]


def test_a_raising_function_names_its_item(herdd):
    with herd.Pool(2) as p:
        with pytest.raises(herd.TaskError) as e:
            p.map(f.fails_on_three, range(10), chunksize=2)
        err = e.value
        assert err.name == "function_failed" and err.index == 3 and err.item == 3
        assert "task 3 (3): ValueError: three is right out (got 3)" in str(err)
        assert "Traceback (most recent call last)" in err.traceback
        assert "in fails_on_three" in err.traceback and "in fails_on_three" in str(err)
        # The pool goes on; skip_failed puts None in the failed task's place.
        assert p.map(f.square, [3]) == [9]
    with herd.Pool(2, skip_failed=True) as p:
        assert p.map(f.fails_on_three, range(5)) == [0, 1, 2, None, 4]


def test_map_exact_when_a_worker_dies_mid_map(herdd, tmp_path):
    marker = str(tmp_path / "died")
    seen = []
    with herd.Pool(2) as p:
        out = p.map(f.die_once, [(x, marker) for x in range(200)], chunksize=5,
                    progress=seen.append)
        assert out == [x * 10 for x in range(200)]
        assert p.deaths == 1 and p.spawns == 3
        assert seen[-1].done == 200 and seen[-1].failed == 0 and seen[-1].retried >= 1
        assert seen[-1].total == 200


def test_map_exact_when_a_worker_is_sigkilled(herdd, tmp_path):
    for fifo in ("pid", "never"):
        os.mkfifo(tmp_path / fifo)
    with herd.Pool(2) as p:
        it = p.imap(f.stall_once, ((x, str(tmp_path)) for x in range(3000)), chunksize=4)
        # Task 100 says which worker holds it, and holds it until that worker dies.
        victim = int((tmp_path / "pid").read_text())
        (tmp_path / "done").touch()
        os.kill(victim, signal.SIGKILL)
        assert list(it) == [x * x for x in range(3000)]
        assert p.deaths == 1 and victim not in p.pids()


def test_a_poison_task_fails_after_its_retries(herdd):
    with herd.Pool(2, retries=2) as p:
        with pytest.raises(herd.TaskError) as e:
            p.map(f.poison, range(10), chunksize=3)
        err = e.value
        assert err.name == "task_crashed" and err.index == 5 and err.item == 5
        assert "killed its worker 3 times" in str(err) and "SIGKILL" in str(err)
        assert err.data["signal"] == "SIGKILL"
        assert p.map(f.square, [4]) == [16]


def test_poison_task_of_the_c_worker_shows_its_stderr(herdd, testworker):
    args = [{"n": n, "crash": n == 4} for n in range(8)]
    with herd.Pool(2, executable=testworker, retries=1, skip_failed=True) as p:
        out = p.map("sum", args, chunksize=2)
        assert out == [n * (n - 1) // 2 if n != 4 else None for n in range(8)]
        assert p.deaths == 2
    with herd.Pool(1, executable=testworker, retries=0) as p:
        with pytest.raises(herd.TaskError) as e:
            p.map("sum", args)
        assert e.value.name == "task_crashed" and e.value.item == args[4]
        assert "sum crashes on n=4" in str(e.value)


def test_task_timeout(herdd, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    with herd.Pool(2, task_timeout=1, retries=0, skip_failed=True) as p:
        # The FIFO never gets a writer: the task blocks until its worker is killed.
        assert p.map(f.wait_fifo_if_zero, [(x, fifo) for x in (3, 2, 1, 0)],
                     chunksize=1) == [3, 2, 1, None]
        assert p.deaths == 1
    with herd.Pool(1, task_timeout=1, retries=1) as p:
        with pytest.raises(herd.TaskError) as e:
            p.map(f.wait_fifo_if_zero, [(1, fifo), (0, fifo)], chunksize=1)
        assert e.value.name == "timeout" and e.value.index == 1
        assert "ran longer than 1 s (2 times)" in str(e.value)
        assert p.deaths == 2 and p.map(f.square, [5]) == [25]


def test_a_long_chunk_keeps_its_worker_heartbeating(herdd):
    # One chunk of 1 s of idle tasks, a 400 ms heartbeat timeout: the worker's
    # loop must take its turn between items or herdd kills it as hung.
    with herd.Pool(1, settings={"heartbeat_interval_ms": 100,
                                "heartbeat_timeout_ms": 400}) as p:
        assert p.map(f.idle, range(50), chunksize=50) == list(range(50))
        assert p.deaths == 0


def test_find_first_cancels_the_rest(herdd, testworker):
    with herd.Pool(2) as p:
        # An endless input: find can only return by stopping the rest.
        i, r = p.find(f.square, itertools.count(), lambda r: r > 1000)
        assert r == i * i and r > 1000
        assert p.find(f.square, range(10), lambda r: r < 0) is None
        assert p.find(f.square, [0, 3], lambda r: r) == (1, 9)
    with herd.Pool(2, executable=testworker) as p:
        i, r = p.find("sum", ({"n": n} for n in itertools.count()), lambda r: r >= 45)
        assert r == i * (i - 1) // 2 and r >= 45


def test_map_reduce_c_worker(herdd, testworker):
    args = [{"n": n} for n in range(500)]
    with herd.Pool(2, executable=testworker) as p:
        # Folded on the workers with their combine "add", one partial each.
        assert p.map_reduce("sum", args, operator.add, worker_combine="add",
                            chunksize=7) == expected_sum_of_sums(500)
        assert p.map_reduce("sum", args, operator.add, worker_combine=False) == \
            expected_sum_of_sums(500)
        assert p.map_reduce("sum", [], operator.add, initial=0) == 0
        with pytest.raises(herd.HerdError) as e:
            p.map_reduce("sum", args, operator.add, worker_combine="max")
        assert e.value.name == "method_not_found"


def test_map_reduce_exact_when_workers_die(herdd, tmp_path, testworker):
    marker = str(tmp_path / "died")
    with herd.Pool(2) as p:
        assert p.map_reduce(f.die_once, [(x, marker) for x in range(300)], operator.add,
                            chunksize=4) == 10 * sum(range(300))
        assert p.deaths == 1
        texts = ["a bb", "ccc a", "dddd"]
        assert p.map_reduce(f.word_lengths, texts, f.merge_max) == \
            {"a": 1, "bb": 2, "ccc": 3, "dddd": 4}
    # The C worker's folds survive a worker SIGKILLed while it holds them.
    killed = []

    def kill_one(progress):
        if not killed and progress.done + progress.retried == 0:
            killed.append(pool.pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    with herd.Pool(2, executable=testworker) as pool:
        args = [{"n": n} for n in range(2000)]
        assert pool.map_reduce("sum", args, operator.add, worker_combine="add", chunksize=3,
                               progress=kill_one) == expected_sum_of_sums(2000)


def test_map_reduce_exact_when_a_folding_worker_is_sigkilled(herdd, tmp_path):
    """Folds the victim acknowledged but no take covered die with it and run again."""
    for fifo in ("pid", "never"):
        os.mkfifo(tmp_path / fifo)
    args = [(x, str(tmp_path)) for x in range(3000)]
    with herd.Pool(2) as p, concurrent.futures.ThreadPoolExecutor(1) as ex:
        total = ex.submit(p.map_reduce, f.stall_once, args, operator.add, chunksize=8)
        victim = int((tmp_path / "pid").read_text())
        (tmp_path / "done").touch()
        os.kill(victim, signal.SIGKILL)
        assert total.result(timeout=60) == sum(x * x for x in range(3000))
        assert p.deaths == 1


def test_progress(herdd):
    seen = []
    with herd.Pool(2) as p:
        p.map(f.square, range(300), chunksize=10, progress=seen.append)
    assert seen and seen[-1] == herd.Progress(300, 0, 0, 300, seen[-1].rate)
    assert all(a.done <= b.done for a, b in zip(seen, seen[1:]))
    assert seen[-1].rate > 0


def test_close_terminate_join(herdd):
    p = herd.Pool(2, name="closing")
    fut = p.submit(f.square, 3)
    p.close()
    with pytest.raises(ValueError):
        p.map(f.square, [1])
    p.join()
    assert fut.result() == 9
    # Closing stops the workers through herdd, a normal stop.
    with herd.connect() as m:
        ended = [w for w in m.list(all=True) if w["pool"] == "closing"]
        assert len(ended) == 2 and {w["reason"] for w in ended} == {"shutdown"}
    p = herd.Pool(1)
    p.terminate()
    with pytest.raises(ValueError):
        p.submit(f.square, 1)


def test_unreachable_functions_are_refused(herdd, testworker):
    def nested(x):
        return x

    with herd.Pool(1) as p:
        for fn in (lambda x: x, nested):
            with pytest.raises(TypeError, match="top level"):
                p.map(fn, [1])
        with pytest.raises(herd.HerdError) as e:
            p.map("poolfuncs:nonesuch", [1])
        assert e.value.name == "method_not_found" and "nonesuch" in str(e.value)
    with herd.Pool(1, executable=testworker) as p:
        with pytest.raises(TypeError, match="by name"):
            p.map(f.square, [1])


def run_script(tmp_path, text, *args, timeout=60):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_script_without_main_guard_gets_a_clear_error(herdd, tmp_path):
    out = run_script(tmp_path, """
        import herd

        def double(x):
            return 2 * x

        with herd.Pool(2) as p:
            print(p.map(double, [1, 2]))
    """)
    assert out.returncode != 0
    assert 'if __name__ == "__main__":' in out.stderr, out.stderr
    assert "init_failed" in out.stderr


def test_sigkilled_master_takes_its_pool_workers_along(herdd, tmp_path):
    script = tmp_path / "master.py"
    script.write_text(textwrap.dedent("""
        import sys
        import herd

        def pid(x):
            import os
            return os.getpid()

        if __name__ == "__main__":
            p = herd.Pool(3)
            p.wait_ready(30)
            print(*p.pids(), flush=True)
            sys.stdin.read()
    """))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    master = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env, text=True)
    pids = [int(x) for x in master.stdout.readline().split()]
    assert len(set(pids)) == 3
    pidfds = [os.pidfd_open(pid) for pid in pids]
    master.send_signal(signal.SIGKILL)
    master.wait()
    # Every worker's pidfd turns readable when it exits: awaited with a deadline.
    import time
    deadline = time.monotonic() + 30
    waiting = list(pidfds)
    while waiting and time.monotonic() < deadline:
        ready, _, _ = select.select(waiting, [], [], deadline - time.monotonic())
        waiting = [fd for fd in waiting if fd not in ready]
    assert waiting == [], "pool workers outlived their SIGKILLed master"
    for fd in pidfds:
        os.close(fd)
    master.stdin.close()
    master.stdout.close()


def test_python_worker_batches_and_folds(herdd):
    """herd.serve's pool built-ins, by hand (PROTOCOL.md 6.6)."""
    with herd.connect() as m:
        w = m.spawn(os.path.join(HERE, "pyworker.py"),
                    env={"PYTHONPATH": os.path.dirname(HERE)})
        with w.connect() as c:
            assert c.call("herd.batch", {"function": "sum", "args": [{"n": 3}, {"n": 4}]}) == \
                {"results": [3, 6]}
            r = c.call("herd.batch", {"function": "divide", "args": [{"a": 1, "b": 2},
                                                                      {"a": 1, "b": 0}, 7]})
            assert r["results"] == [0.5, None, None]
            assert [e["index"] for e in r["errors"]] == [1, 2]
            assert r["errors"][0]["error"]["data"]["name"] == "function_failed"
            assert r["errors"][1]["error"]["data"]["name"] == "invalid_params"
            with pytest.raises(herd.HerdError) as e:
                c.call("herd.batch", {"function": "nonesuch", "args": []})
            assert e.value.name == "method_not_found"
            with pytest.raises(herd.HerdError) as e:
                c.call("herd.fold", {"function": "sum", "args": {"n": 4}, "acc": "k",
                                     "combine": "add"})
            assert e.value.name == "method_not_found"
            assert c.call("herd.take", {"acc": "k"}) == {"n": 0}


def test_wordfreq_example_equals_a_sequential_count(herdd, tmp_path):
    import collections
    import re
    from conftest import ROOT
    texts = ["The cat, the hat.\n", "A cat; a CAT -- 1984 é the end", "hat" * 3 + " x"]
    texts_dir = tmp_path / "texts"
    texts_dir.mkdir()
    for k, text in enumerate(texts * 5):
        (texts_dir / f"t{k:02d}.txt").write_text(text)
    want = collections.Counter(w for t in texts * 5 for w in re.findall("[a-z]+", t.lower()))
    env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
    top = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    # After (herd.Pool) and before (multiprocessing): the same answer.
    for before in ([], ["--multiprocessing"]):
        out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "wordfreq.py")]
                             + before + ["--workers", "2", str(texts_dir)], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == f"{sum(want.values())} words, {len(want)} different, in 15 files"
        assert lines[1:] == [f"{n} {w}" for w, n in top]


def test_pool_futures_await_under_asyncio(herdd):
    # herd.aio has no Pool of its own: the Pool's engine is a thread, so its
    # futures await in a loop that keeps turning, and a map runs in an executor.
    import asyncio

    async def main(p):
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.ensure_future(tick())
        squares = await asyncio.gather(*(asyncio.wrap_future(p.submit(f.square, x))
                                         for x in range(20)))
        mapped = await asyncio.get_running_loop().run_in_executor(None, p.map, f.square,
                                                                  range(100))
        ticker.cancel()
        return squares, mapped, ticks

    with herd.Pool(2) as p:
        squares, mapped, ticks = asyncio.run(main(p))
    assert squares == [x * x for x in range(20)] and mapped == [x * x for x in range(100)]
    assert ticks > 1
