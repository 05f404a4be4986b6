#!/usr/bin/env python3
"""A herd worker in Python whose functions are async: calls that await
(gate, nap) while the worker serves others, async generators as streams, an
async sink, and the failures of each."""

import asyncio
import os
import sys

sys.dont_write_bytecode = True  # herdd's spawn passes no PYTHON* variable: keep the tree clean
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import herd  # noqa: E402

gate = asyncio.Event()  # created before the loop: bound to it at first use
notes = []


async def wait_gate(arg):
    """Answers once open_gate was called: it awaits while the worker serves that."""
    await gate.wait()
    return {"opened": True, "conn": herd.conn_state()}


async def open_gate(arg):
    gate.set()
    return "open"


async def nap(arg):
    await asyncio.sleep(arg["s"])
    return arg["s"]


async def ticks(arg):
    for i in range(arg["n"]):
        if arg.get("wait"):
            await asyncio.Event().wait()  # until cancelled
        yield i


async def counter(arg):
    for i in range(arg["n"]):
        yield i


async def total(arg, items):
    n = 0
    async for x in items:
        n += x
    return n


async def broken(arg):
    await asyncio.sleep(0)
    raise ValueError("async handler failed")


async def note(arg):
    notes.append(arg["text"])


async def get_notes(arg):
    return notes  # a task after note's: asyncio runs tasks in the order they were made


async def die(arg):
    await asyncio.sleep(0)
    herd.fail(arg["message"])


herd.serve({
    "wait_gate": wait_gate,
    "open_gate": open_gate,
    "nap": nap,
    "ticks": ticks,
    "counter": herd.state(counter),
    "total": herd.sink(total),
    "broken": broken,
    "note": herd.oneway(note),
    "notes": get_notes,
    "sum": lambda arg: sum(range(arg["n"])),
    "die": die,
}, conn_init=lambda arg: arg)
