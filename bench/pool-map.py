#!/usr/bin/env python3
# The Python peers of herd-bench map: N tiny tasks (echo of an integer) over
# WORKERS processes with multiprocessing.Pool.map, Pool.imap_unordered and
# concurrent.futures.ProcessPoolExecutor.map, each with the best of a few
# chunksizes (one round each), and imap_unordered one task at a time (over N/10
# tasks), the way herd sends them. Prints JSON lines like the C benchmarks.
#   pool-map.py N WORKERS
import concurrent.futures
import json
import multiprocessing
import sys
import time

CHUNKSIZES = (64, 1024, 16384)


def echo(x):
    return x


def timed(run, n):
    """Tasks per second of run() over range(n), whose results must add up to 0 + ... + n-1."""
    t0 = time.monotonic()
    total = sum(run())
    rate = n / (time.monotonic() - t0)
    if total != n * (n - 1) // 2:
        sys.exit("pool-map.py: wrong answer")
    return rate


def report(api, workers, rate, chunksize):
    print(json.dumps({"figure": "pool_tasks_per_s", "variant": f"python_{api}_workers{workers}",
                      "value": round(rate, 3), "unit": "1/s", "chunksize": chunksize}),
          flush=True)


def main():
    n, workers = int(sys.argv[1]), int(sys.argv[2])
    with multiprocessing.Pool(workers) as pool:
        # The processes start lazily: one task first, outside the timing.
        pool.apply(echo, (0,))
        for api, fn in (("pool_map", pool.map), ("pool_imap_unordered", pool.imap_unordered)):
            rate, chunk = max((timed(lambda: fn(echo, range(n), chunksize=c), n), c)
                              for c in CHUNKSIZES)
            report(api, workers, rate, chunk)
        m = max(n // 10, 1)
        rate = timed(lambda: pool.imap_unordered(echo, range(m), chunksize=1), m)
        report("pool_imap_unordered_chunksize1", workers, rate, 1)
    with concurrent.futures.ProcessPoolExecutor(workers) as ex:
        list(ex.map(echo, range(workers)))
        rate, chunk = max((timed(lambda: ex.map(echo, range(n), chunksize=c), n), c)
                          for c in CHUNKSIZES)
        report("process_pool_executor_map", workers, rate, chunk)


if __name__ == "__main__":
    main()
