#!/usr/bin/env python3
# wordfreq four ways over the same generated text: examples/wordfreq
# --sequential (C, one process), examples/wordfreq on a herd pool of 1..CPUs
# workers, and the same job in Python before and after the switch to herd
# (examples/wordfreq.py --multiprocessing: multiprocessing.Pool, a Counter per
# file merged in the parent; examples/wordfreq.py: herd.Pool, map_reduce),
# each a process of its own as a user runs it. Every run must print the
# sequential answer.
# Prints one JSON line per variant (best of ROUNDS wall-clock times, seconds,
# the variants taking turns).
#   wordfreq.py WORDFREQ MB [ROUNDS]   ($HERD_SOCKET: the herdd to use)
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

FILE_BYTES = 512 * 1024


def generate(directory, mb):
    """Files of text drawn from a Zipf-like vocabulary, with capitals and punctuation."""
    r = random.Random(13)
    vocabulary = ["".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9)))
                  for _ in range(20000)]
    weights = [1 / (i + 1) for i in range(len(vocabulary))]
    seps = [" "] * 8 + [", ", ". ", ".\n", "\n\n", " 1984 ", " -- ", "'", "\u00e9"]
    for k in range(mb * 1024 * 1024 // FILE_BYTES):
        words = r.choices(vocabulary, weights, k=FILE_BYTES // 6)
        text = "".join(w.capitalize() + s if s == ". " else w + s
                       for w, s in zip(words, r.choices(seps, k=len(words))))
        with open(os.path.join(directory, f"text{k:04d}.txt"), "w", encoding="utf-8") as f:
            f.write(text)


def best_times(runs, rounds):
    """Best wall-clock time of each run over rounds, taken in turns: a burst of load
    from elsewhere then slows one round of every variant, not every round of one.
    Every answer must be the first run's (the sequential count)."""
    best, want = {}, None
    for _ in range(rounds):
        for name, run in runs:
            t0 = time.monotonic()
            out = run()
            secs = time.monotonic() - t0
            if want is None:
                want = out
            elif out != want:
                sys.exit(f"wordfreq.py: {name} gave a different answer:\n{out}\n"
                         f"instead of\n{want}")
            best[name] = min(best.get(name, secs), secs)
    return best


def report(variant, secs, mb):
    print(json.dumps({"figure": "wordfreq_s", "variant": variant, "value": round(secs, 4),
                      "unit": "s", "mb": mb}), flush=True)


def main():
    exe, mb = sys.argv[1], int(sys.argv[2])
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    cpus = len(os.sched_getaffinity(0))
    tmp = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    directory = tempfile.mkdtemp(prefix="herd-wordfreq-", dir=tmp)
    try:
        generate(directory, mb)
        run = lambda *a: subprocess.run([exe, *a, directory], check=True, stdout=subprocess.PIPE,
                                        text=True).stdout
        runs = [("c_sequential", lambda: run("--sequential"))]
        runs += [(f"herd_workers{n}", lambda n=n: run("--workers", str(n)))
                 for n in range(1, cpus + 1)]
        # The Python job before (multiprocessing) and after (herd.Pool) the switch.
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ, PYTHONPATH=os.path.join(here, "..", "python"))
        py = lambda *a: subprocess.run(
            [sys.executable, os.path.join(here, "..", "examples", "wordfreq.py"), *a, directory],
            check=True, stdout=subprocess.PIPE, text=True, env=env).stdout
        for n in sorted({1, cpus}):
            runs += [(f"python_pool_workers{n}",
                      lambda n=n: py("--multiprocessing", "--workers", str(n))),
                     (f"python_herd_pool_workers{n}", lambda n=n: py("--workers", str(n)))]
        for name, secs in best_times(runs, rounds).items():
            report(name, secs, mb)
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
