#!/usr/bin/env python3
"""Word frequencies over a directory of text files on a herd pool: the
Python twin of examples/wordfreq.c, and what a multiprocessing script becomes
with herd (the same job with multiprocessing is bench/wordfreq.py's
python_pool). Each worker folds the counts of the files it gets into its own
partial (map_reduce), so the master merges one partial per worker, not one
per file; a worker that dies is replaced and its files counted again.
   wordfreq.py [--workers N] DIRECTORY
"""
import collections
import os
import re
import sys

import herd

WORD = re.compile(r"[a-z]+")


def count_file(path):
    """A word is a maximal run of ASCII letters, lowercased (latin-1 keeps bytes as they are)."""
    with open(path, "rb") as f:
        return collections.Counter(WORD.findall(f.read().decode("latin-1").lower()))


def merge(a, b):
    for word, n in b.items():
        a[word] = a.get(word, 0) + n
    return a


def main():
    args, workers = sys.argv[1:], None
    if args[:1] == ["--workers"]:
        workers, args = int(args[1]), args[2:]
    files = sorted(e.path for e in os.scandir(args[0]) if e.is_file(follow_symlinks=False))
    with herd.Pool(workers) as pool:
        counts = pool.map_reduce(count_file, files, merge, initial={})
    print(f"{sum(counts.values())} words, {len(counts)} different, in {len(files)} files")
    for word, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:20]:
        print(n, word)


if __name__ == "__main__":
    main()
