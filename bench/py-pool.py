#!/usr/bin/env python3
# herd's Python package against what it replaces, on the same CPUs in one run:
# herd.Pool.map of a tiny Python function (echo of an integer; arguments and
# results pickled, the pool's default, and as JSON with pickle=False) against
# multiprocessing.Pool.map and concurrent.futures.ProcessPoolExecutor.map, each
# with the best of a few chunksizes; and a Python master's calls/s to a C
# worker (herd-testworker) against the same to a Python worker (herd.serve).
# Prints JSON lines like the C benchmarks.
#   py-pool.py N WORKERS TESTWORKER CALLS   ($HERD_SOCKET: the herdd to use)
import concurrent.futures
import json
import multiprocessing
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import herd  # noqa: E402

CHUNKSIZES = (64, 1024, 16384)
PY_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "py-worker.py")


def echo(x):
    return x


def timed(run, n):
    """Tasks per second of run() over range(n), whose results must be range(n)."""
    t0 = time.monotonic()
    out = run()
    rate = n / (time.monotonic() - t0)
    if list(out) != list(range(n)):
        sys.exit("py-pool.py: wrong answer")
    return rate


def report(figure, variant, rate, **extra):
    print(json.dumps(dict({"figure": figure, "variant": variant, "value": round(rate, 3),
                           "unit": "1/s"}, **extra)), flush=True)


def best(variants, workers, n):
    """Each variant's best chunksize and rate: the variants take turns at each
    chunksize, twice over, so a burst of load from elsewhere slows one turn of
    each, not every turn of one."""
    top = {}
    for chunk in CHUNKSIZES * 2:
        for api, map_fn in variants:
            rate = timed(lambda: map_fn(echo, range(n), chunksize=chunk), n)
            top[api] = max(top.get(api, (0, 0)), (rate, chunk))
    for api, _ in variants:
        rate, chunk = top[api]
        report("py_pool_tasks_per_s", f"{api}_workers{workers}", rate, chunksize=chunk)


def calls(c, n, inflight):
    """Calls per second of echo over one connection, inflight at a time."""
    conn = c._conn
    t0 = time.monotonic()
    pending = []
    for i in range(n):
        pending.append(conn.request("echo", {"x": i}))
        if len(pending) >= inflight:
            conn.wait(pending.pop(0))
    for rid in pending:
        conn.wait(rid)
    return n / (time.monotonic() - t0)


def main():
    n, workers, testworker, ncalls = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], \
        int(sys.argv[4])
    # multiprocessing's processes fork before herd's pool threads exist.
    with multiprocessing.Pool(workers) as mp_pool, \
            concurrent.futures.ProcessPoolExecutor(workers) as ex:
        mp_pool.map(echo, range(workers))
        list(ex.map(echo, range(workers)))
        with herd.Pool(workers) as pool, herd.Pool(workers, pickle=False) as json_pool:
            for p in (pool, json_pool):
                p.wait_ready(60)
                p.map(echo, range(workers))
            best([("herd_pool_map", pool.map), ("herd_pool_map_json", json_pool.map),
                  ("python_pool_map", mp_pool.map),
                  ("process_pool_executor_map",
                   lambda f, it, chunksize: list(ex.map(f, it, chunksize=chunksize)))],
                 workers, n)
    with herd.connect() as m:
        for kind, path in (("c", testworker), ("py", PY_WORKER)):
            with m.spawn(path, env={"PYTHONPATH": os.path.dirname(herd.__path__[0])}) \
                    .connect() as c:
                for inflight in (1, 64):
                    rate = max(calls(c, ncalls, inflight) for _ in range(3))
                    report("py_master_calls_per_s", f"{kind}_worker_inflight{inflight}", rate)


if __name__ == "__main__":
    main()
