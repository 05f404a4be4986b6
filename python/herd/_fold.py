"""The pool built-ins of a Python worker (PROTOCOL.md 6.6): ``herd.batch`` runs
a call function over many arguments in one request, ``herd.fold`` folds one
call's result into a named accumulator with a combine the worker declares
(``herd.serve(..., combiners=...)``), ``herd.take`` hands an accumulator over.

Exactly once rests on order: a connection's requests run one after the other
and are answered in order, so when a pool reads take's reply it has read the
reply of every fold the take covers, and of no other.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ._proto import HerdError

if TYPE_CHECKING:
    from ._worker import _ClientConnection, _Server

MAX_ACCUMULATORS = 4096
MAX_BATCH = 65536
SLICE_SECONDS = 0.05  # items run between two looks at the clock, about
_VALID = {dict, list, type(None)}
Error = Dict[str, Any]


class _Acc:
    __slots__ = ("value", "n", "broken")

    def __init__(self) -> None:
        self.value: Any = None
        self.n = 0
        self.broken: Optional[Error] = None


def _lookup(server: "_Server", params: Any, batch: bool) -> Tuple[Any, Any, Optional[Error]]:
    """(function, combine or None, error) for a fold's or a batch's params."""
    from ._worker import _error, _kind
    if not isinstance(params, dict) or not isinstance(params.get("function"), str) or \
            ("acc" in params) != ("combine" in params) or \
            (batch and not isinstance(params.get("args"), list)):
        return None, None, _error("invalid_params", "herd.batch/herd.fold: bad params")
    name = params["function"]
    fn = server.functions[name] if name in server.functions else None
    if fn is None or _kind(fn) != "call":
        return None, None, _error("method_not_found", f"no call function {name}")
    combine = None
    if "combine" in params:
        combine = server.combiners.get(params["combine"]) if isinstance(params["combine"], str) \
            else None
        if combine is None or not isinstance(params["acc"], str):
            return None, None, _error("method_not_found",
                                      f"this worker declares no combine {params['combine']}")
    if batch and len(params["args"]) > MAX_BATCH:
        return None, None, _error("limit_exceeded", f"more than {MAX_BATCH} items",
                                  limit="items", value=MAX_BATCH)
    return fn, combine, None


def _accumulator(server: "_Server", key: str) -> Optional[_Acc]:
    acc = server.accumulators.get(key)
    if acc is None and len(server.accumulators) < MAX_ACCUMULATORS:
        acc = server.accumulators[key] = _Acc()
    return acc


def _fold_into(acc: _Acc, combine: Callable[[Any, Any], Any], result: Any) -> Optional[Error]:
    """Folds result into acc; the error that poisoned it, if any."""
    from ._worker import _cut, _error
    if acc.broken is None:
        try:
            acc.value = result if acc.n == 0 else combine(acc.value, result)
            acc.n += 1
        except Exception as e:
            acc.broken = _error("function_failed", _cut(f"combine failed: {type(e).__name__}: {e}"))
            acc.broken["data"]["name"] = "combine_failed"
    return acc.broken


def _full(key: str) -> Error:
    from ._worker import _error
    return _error("limit_exceeded", f"more than {MAX_ACCUMULATORS} accumulators",
                  limit="accumulators", value=MAX_ACCUMULATORS, acc=key)


def fold(server: "_Server", c: "_ClientConnection", rid: Any, params: Any) -> None:
    from ._worker import _outcome
    fn, combine, error = _lookup(server, params, False)
    if error is None:
        server.served += 1
        result, error = _outcome(fn, params.get("args"))
    if error is None:
        acc = _accumulator(server, params["acc"])
        error = _full(params["acc"]) if acc is None else _fold_into(acc, combine, result)
        if error is None:
            return c.reply(rid, {"n": acc.n})  # type: ignore[union-attr]
    c.reply(rid, error=error)


def take(server: "_Server", c: "_ClientConnection", rid: Any, params: Any) -> None:
    from ._worker import _error
    key = params.get("acc") if isinstance(params, dict) else None
    if not isinstance(key, str):
        return c.reply(rid, error=_error("invalid_params", "herd.take: acc must be a string"))
    acc = server.accumulators.pop(key, None)
    if acc is None or acc.n == 0:
        c.reply(rid, {"n": 0})
    elif acc.broken is not None:
        c.reply(rid, error=acc.broken)
    else:
        c.reply(rid, {"n": acc.n, "value": acc.value})


def _invalid(_arg: Any) -> Any:
    raise HerdError("invalid_params", "herd.batch: an item must be an object, an array or null")


def run_items(server: Optional["_Server"], args: List[Any], fn: Any = None, star: Any = None,
              check: bool = True) -> Tuple[List[Any], List[Error]]:
    """Every item's result in order (null for a failed one) and the failures:
    ``fn(item)``, or ``star(*item)``; ``check`` refuses items that are not
    params (an object, an array or null).

    The items run under map() or starmap(), in C between two calls: tiny
    tasks pay only their call. The fd-3 heartbeat goes on between slices of
    items: a long batch is not a hung worker.
    """
    from ._worker import WorkerFailure, _error_of
    results: List[Any] = []
    errors: List[Error] = []
    channel = server.channel if server else None
    interval = channel.heartbeat_interval if channel else 0
    start, step = 0, 16
    while start < len(args):
        # Slices double while they run quickly: tiny tasks pay no per-slice cost,
        # slow ones still let the clock be looked at every few of them.
        items = args[start:start + step]
        began = time.monotonic()
        if check and not set(map(type, items)) <= _VALID:
            mapped = map(lambda a: fn(a) if type(a) in _VALID else _invalid(a), items)
        elif star:
            mapped = itertools.starmap(star, items)
        else:
            mapped = map(fn, items)
        while True:
            try:
                results.extend(mapped)  # keeps what came before a failure
                break
            except WorkerFailure:
                raise
            except Exception as e:
                errors.append({"index": len(results), "error": _error_of(e)})
                results.append(None)
        start += len(items)
        now = time.monotonic()
        if now - began < SLICE_SECONDS:
            step *= 2
        if interval > 0 and now - channel._last_sent >= interval:
            channel.notify("heartbeat", {"served": server.served + len(results)})  # type: ignore
    if server:
        server.served += len(args)
    return results, errors


def batch(server: "_Server", c: "_ClientConnection", rid: Any, params: Any) -> None:
    fn, combine, error = _lookup(server, params, True)
    if error is not None:
        return c.reply(rid, error=error)
    results, errors = run_items(server, params["args"], fn, getattr(fn, "star", None))
    reply: Dict[str, Any] = {"results": results}
    if combine is not None:
        acc = _accumulator(server, params["acc"])
        if acc is None:
            return c.reply(rid, error=_full(params["acc"]))
        failed = {e["index"] for e in errors}
        for i, r in enumerate(results):
            if i not in failed and _fold_into(acc, combine, r) is not None:
                return c.reply(rid, error=acc.broken)
        reply = {"n": acc.n}
    if errors:
        reply["errors"] = errors
    c.reply(rid, reply)


BUILTINS = {"herd.batch": batch, "herd.fold": fold, "herd.take": take}
