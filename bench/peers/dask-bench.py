#!/usr/bin/python3
# dask.distributed beside herd's pool (bench/run-set.sh): the start-up of a
# LocalCluster of W worker processes until all have joined, and client.map of
# an echo over range(N) (one task an element, as dask maps), best of 3 rounds.
# Prints bench/herd.c's JSON lines. Debian's interpreter: python3-distributed
# is installed for it.
#   dask-bench.py N W     (N 0: the start-up only)
import json
import sys
import time

from dask.distributed import Client, LocalCluster, wait


def echo(x):
    return x


def report(figure, variant, value, unit):
    print(json.dumps({"figure": figure, "variant": variant, "value": round(value, 3),
                      "unit": unit}), flush=True)


def main():
    n, workers = int(sys.argv[1]), int(sys.argv[2])
    t0 = time.monotonic()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        client.wait_for_workers(workers, timeout=60)
        report("pool_start_ms", f"dask_local_cluster_workers{workers}",
               (time.monotonic() - t0) * 1e3, "ms")
        best = 0.0
        for _ in range(3 if n else 0):
            t = time.monotonic()
            futures = client.map(echo, range(n), pure=False)
            wait(futures, timeout=600)
            got = client.gather(futures)
            if got != list(range(n)):
                sys.exit("dask-bench: the map lost or changed results")
            best = max(best, n / (time.monotonic() - t))
        if n:
            report("pool_tasks_per_s", f"dask_client_map_workers{workers}", best, "1/s")


if __name__ == "__main__":
    main()
