#!/usr/bin/env python3
"""A herd worker in Python serving herd-testworker-like functions."""

import os
import sys
import time

sys.dont_write_bytecode = True  # herdd's spawn passes no PYTHON* variable: keep the tree clean
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import herd  # noqa: E402

state = {"scale": 1, "notes": []}


def init(arg):
    if arg and "fail_init" in arg:
        raise RuntimeError(arg["fail_init"])
    state["scale"] = (arg or {}).get("scale", 1)


def total(arg):
    if not isinstance(arg.get("n"), int):
        raise herd.HerdError("invalid_params", "n must be an integer")
    return state["scale"] * sum(range(arg["n"]))


def count(arg):
    for i in range(arg["n"]):
        if i and arg.get("delay_ms"):
            time.sleep(arg["delay_ms"] / 1000)
        yield i
    return {"count": arg["n"]}


def divide(arg):
    return arg["a"] / arg["b"]


def note(arg):
    state["notes"].append(arg["text"])


def die(arg):
    herd.fail(arg.get("message", "failed on purpose"))


def bail(arg):
    sys.exit(arg)  # not an Exception: it ends the worker, as an uncaught exit would


herd.serve({
    "echo": lambda arg: arg,
    "sum": total,
    "divide": divide,
    "count": count,
    "note": herd.oneway(note),
    "notes": lambda arg: state["notes"],
    "pid": lambda arg: os.getpid(),
    "die": die,
    "bail": bail,
}, init=init)
