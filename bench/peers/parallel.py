#!/usr/bin/env python3
# GNU parallel beside `herdctl map` (bench/run-set.sh): a map over N lines with
# a tiny command, W at a time, in input order. parallel runs `echo` once a
# line; herdctl map calls the test worker's echo in a pool of W. The time is
# each whole command, start-up included; every output is checked.
#   parallel.py N W HERDCTL WORKER
import json
import os
import subprocess
import sys
import tempfile
import time


def timed(cmd, stdin_path, cwd):
    with open(stdin_path, "rb") as f:
        t = time.monotonic()
        p = subprocess.run(cmd, stdin=f, stdout=subprocess.PIPE, cwd=cwd, timeout=600)
        secs = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"parallel.py: {cmd[0]} exited with {p.returncode}")
    return secs, p.stdout.decode().splitlines()


def main():
    n, w = int(sys.argv[1]), int(sys.argv[2])
    herdctl, worker = (os.path.abspath(a) for a in sys.argv[3:5])
    lines = [json.dumps([i]) for i in range(n)]
    # In an empty directory: the shell parallel runs must not glob "[0]" into a file name.
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "lines.jsonl")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        runs = (("gnu_parallel", ["parallel", "--will-cite", "-k", "-j", str(w), "echo"]),
                ("herdctl_map", [herdctl, "map", "-j", str(w), "--", worker, "echo"]))
        for name, cmd in runs:
            secs, out = timed(cmd, path, d)
            if [json.loads(x) for x in out] != [json.loads(x) for x in lines]:
                sys.exit(f"parallel.py: {name} did not answer every line in order")
            print(json.dumps({"figure": "map_lines_per_s", "variant": f"{name}_j{w}",
                              "value": round(n / secs, 3), "unit": "1/s"}), flush=True)


if __name__ == "__main__":
    main()
