#!/usr/bin/env python3
"""Word frequencies over a directory of text files: the Python twin of
examples/wordfreq.c, written twice, before and after the switch from
multiprocessing to herd. Both print the same answer.

Before (--multiprocessing): a multiprocessing.Pool counts each file and the
parent merges one Counter per file. A worker that dies hangs or breaks the
pool without saying which file killed it, and the workers outlive a
SIGKILLed parent.

After (the default): herd.Pool. Each worker folds the counts of the files it
gets into its own partial (map_reduce), so the master merges one partial per
worker, not one per file; a worker that dies is replaced and its files are
counted again, and a SIGKILLed master takes its workers with it.
   wordfreq.py [--multiprocessing] [--workers N] DIRECTORY
"""
import collections
import multiprocessing
import os
import re
import sys

import herd

WORD = re.compile(rb"[a-z]+")


def count_file(path):
    """A word is a maximal run of ASCII letters, lowercased (bytes.lower is ASCII only)."""
    with open(path, "rb") as f:
        return collections.Counter(w.decode() for w in WORD.findall(f.read().lower()))


def merge(a, b):
    for word, n in b.items():
        a[word] = a.get(word, 0) + n
    return a


def before(files, workers):
    counts = collections.Counter()
    with multiprocessing.Pool(workers) as pool:
        for c in pool.imap_unordered(count_file, files):
            counts.update(c)
    return counts


def after(files, workers):
    with herd.Pool(workers) as pool:
        return pool.map_reduce(count_file, files, merge, initial={})


def main():
    args, workers, run = sys.argv[1:], None, after
    if args[:1] == ["--multiprocessing"]:
        run, args = before, args[1:]
    if args[:1] == ["--workers"]:
        workers, args = int(args[1]), args[2:]
    files = sorted(e.path for e in os.scandir(args[0]) if e.is_file(follow_symlinks=False))
    counts = run(files, workers)
    print(f"{sum(counts.values())} words, {len(counts)} different, in {len(files)} files")
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]:
        print(n, word)


if __name__ == "__main__":
    main()
