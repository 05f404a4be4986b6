"""The pool built-ins of a Python worker (PROTOCOL.md 6.6): ``herd.fold``,
``herd.take`` and ``herd.batch``. Results are folded where they are made,
into accumulators with the combine functions :func:`herd.serve` was given."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from ._proto import HerdError

if TYPE_CHECKING:
    from ._worker import _ClientConnection, _Request, _Server

MAX_ACCUMULATORS = 4096
MAX_BATCH_ITEMS = 65536
TURN_EVERY = 0.005  # seconds a batch runs before the loop takes its turn


class Accumulator:
    """A named fold: its value, how many results it holds, and whether a
    combine failed (the folds it held are lost)."""

    def __init__(self) -> None:
        self.value: Any = None
        self.n = 0
        self.broken = False


def _combine_lost(key: str, what: str) -> HerdError:
    return HerdError("combine_failed", what % key, code=-32012)


def fold(server: "_Server", key: str, combine: Callable[[Any, Any], Any], result: Any) -> int:
    """Folds ``result`` into accumulator ``key``; returns its fold count."""
    acc = server.accumulators.get(key)
    if acc is None:
        if len(server.accumulators) >= MAX_ACCUMULATORS:
            raise HerdError("limit_exceeded", f"no room for accumulator {key}",
                            data={"limit": "accumulators", "value": MAX_ACCUMULATORS})
        acc = server.accumulators[key] = Accumulator()
    if not acc.broken:
        try:
            acc.value = combine(acc.value, result) if acc.n else result
        except Exception:
            acc.broken = True
    if acc.broken:
        raise _combine_lost(key, "the combine function failed: accumulator %s is lost")
    acc.n += 1
    return acc.n


def _lookup(server: "_Server", where: str, function: Any,
            combine: Any) -> Tuple[Any, Optional[Callable[[Any, Any], Any]]]:
    """The call function and the combine (None if not asked) a request names."""
    from ._worker import _kind_of
    fn = server.functions.get(function)
    if fn is None or _kind_of(fn) != "call":
        raise HerdError("method_not_found", f"{where}: no call function {function}")
    if combine is None:
        return fn, None
    combine_fn = server.combiners.get(combine)  # get: a pool worker's resolves names
    if combine_fn is None:
        raise HerdError("method_not_found", f"{where}: this worker declares no combine {combine}")
    return fn, combine_fn


def _answering(builtin: Callable[..., Any]) -> Callable[..., None]:
    """A built-in that returns its result or raises its error, made to answer."""
    def answer(server: "_Server", c: "_ClientConnection", req: "_Request", params: Any) -> None:
        c.running[req.id] = req
        try:
            result, error = builtin(server, req, params if isinstance(params, dict) else {}), None
        except HerdError as e:
            result, error = None, e
        c.finish(req, result, error)
    answer.__doc__ = builtin.__doc__
    return answer


def _string(params: Dict[str, Any], key: str) -> str:
    v = params.get(key)
    if not isinstance(v, str):
        raise HerdError("invalid_params", f"{key} must be a string")
    return v


@_answering
def builtin_fold(server: "_Server", req: "_Request", params: Dict[str, Any]) -> Any:
    """herd.fold: F(A) as a direct call, its result folded into K with C."""
    key = _string(params, "acc")
    fn, combine = _lookup(server, "herd.fold", _string(params, "function"),
                          _string(params, "combine"))
    result = server.invoke(req, fn, params.get("args"))
    assert combine is not None
    return {"n": fold(server, key, combine, result)}


@_answering
def builtin_take(server: "_Server", req: "_Request", params: Dict[str, Any]) -> Any:
    """herd.take: K's value and fold count, and K forgotten."""
    key = _string(params, "acc")
    acc = server.accumulators.pop(key, None)
    if acc is not None and acc.broken:
        raise _combine_lost(key, "accumulator %s was lost to a failed combine")
    return {"n": acc.n, "value": acc.value} if acc and acc.n else {"n": 0}


@_answering
def builtin_batch(server: "_Server", req: "_Request", params: Dict[str, Any]) -> Any:
    """herd.batch: F over every item in order, one reply (results or a fold count)."""
    args, key, combine_name = params.get("args"), params.get("acc"), params.get("combine")
    if not isinstance(args, list) or (key is None) != (combine_name is None) or \
            not isinstance(params.get("function"), str):
        raise HerdError("invalid_params",
                        "herd.batch: args must be an array, and acc and combine go together")
    if len(args) > MAX_BATCH_ITEMS:
        raise HerdError("limit_exceeded",
                        f"herd.batch: {len(args)} items, at most {MAX_BATCH_ITEMS}",
                        data={"limit": "batch_items", "value": MAX_BATCH_ITEMS})
    if key is not None and not isinstance(key, str):
        raise HerdError("invalid_params", "herd.batch: acc must be a string")
    fn, combine = _lookup(server, "herd.batch", params["function"], combine_name)
    bare = params.get("bare") is True  # items are arguments as they are (6.6)
    results: List[Any] = []
    errors: List[Dict[str, Any]] = []
    n = 0
    turn = time.monotonic() + TURN_EVERY
    for i, arg in enumerate(args):
        if time.monotonic() >= turn:
            server.step(0)  # heartbeats, cancels and other clients, now and then
            turn = time.monotonic() + TURN_EVERY
        req.check(server)
        result = None
        try:
            if not bare and not (arg is None or isinstance(arg, (dict, list))):
                raise HerdError("invalid_params",
                                "herd.batch: an item must be an object, an array or null")
            result = server.invoke(req, fn, arg)
            if combine is not None:
                n = fold(server, key, combine, result)
        except HerdError as e:
            if e.name == "combine_failed" or e.name == "cancelled":
                raise
            errors.append({"index": i, "error": e.to_error()})
            result = None
        results.append(result)
    out: Dict[str, Any] = {"n": n} if combine is not None else {"results": results}
    if errors:
        out["errors"] = errors
    return out

