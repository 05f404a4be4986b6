#!/usr/bin/env python3
# The Python peer of herd's pipelined calls: multiprocessing.Pool.apply_async
# of the same echo function, with INFLIGHT calls outstanding over WORKERS
# processes. Prints one JSON line like the C benchmarks.
#   pool.py N INFLIGHT WORKERS
import collections
import json
import multiprocessing
import sys
import time


def echo(args):
    return args


def main():
    n, inflight, workers = (int(a) for a in sys.argv[1:4])
    args = {"x": 1}
    with multiprocessing.Pool(workers) as pool:
        # The pool's processes start lazily: one call first, outside the timing.
        pool.apply(echo, (args,))
        pending = collections.deque()
        sent = done = 0
        t0 = time.monotonic()
        while done < n:
            while sent < n and len(pending) < inflight:
                pending.append(pool.apply_async(echo, (args,)))
                sent += 1
            if pending.popleft().get(timeout=60) != args:
                sys.exit("pool.py: wrong answer")
            done += 1
        secs = time.monotonic() - t0
    print(json.dumps({"figure": "calls_per_s",
                      "variant": f"python_pool_inflight{inflight}_workers{workers}",
                      "value": round(n / secs, 3), "unit": "1/s"}))


if __name__ == "__main__":
    main()
