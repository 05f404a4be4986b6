"""The start_app pattern for Python: a :class:`herd.Pool` of plain functions
runs the master's own script again as its workers, as multiprocessing's
spawn start method does.

A worker is ``python -c BOOTSTRAP``; its herd init argument names the main
script and the master's ``sys.path``. :func:`serve_pool` runs that script as the
module ``__mp_main__`` (so its ``if __name__ == "__main__":`` block does not
run, and it is also reachable as ``__main__``), then serves every function
the master names as ``"module:qualname"``: a call's params are the JSON array
of its positional arguments, its result the function's return value; that is
how herd.batch (a map-reduce folding on the workers) runs it. A combine is
named the same way. A map's tasks travel as chunk calls ``"chunk/module:qualname"``
``[items, star]`` answered ``[results, errors]``, one flat JSON message each
way; with ``pickle`` (``"pickle/module:qualname"``, a pool's default) the
params and the answer are each one pickle as a hex string instead (hex is
cheaper than base64 both ways in C, and spliced into the message as it is:
no JSON encoder pass over it).
"""

from __future__ import annotations

import binascii
import importlib
import itertools
import os
import pickle
import runpy
import sys
import time
import types
from typing import Any, Callable, Dict, Iterator, List, Optional

from ._proto import HerdError, RawJSON

MAIN = "__mp_main__"
PICKLE_PREFIX = "pickle/"
CHUNK_PREFIX = "chunk/"
SLICE_SECONDS = 0.05  # a chunk's items run between two looks at the clock, about
# True in a pool worker while the master's script runs as its main module.
bootstrapping = False


def reference(fn: Callable[..., Any], what: str = "function") -> str:
    """``"module:qualname"`` for a function a worker can import, checked here as
    pickle checks it: a lambda or a nested function cannot be named."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(f"{what} {fn!r} cannot run in a pool worker: define it at the top "
                        "level of a module (a worker finds it by module and name)")
    if module == "__main__" and not getattr(sys.modules["__main__"], "__file__", None):
        raise TypeError(f"{what} {qualname} is defined in __main__ without a file (python -c "
                        "or an interactive session): a worker cannot import it")
    if _resolve(module, qualname) is not fn:
        raise TypeError(f"{what} {fn!r} is not {module}.{qualname}: a worker could not find it")
    return f"{module}:{qualname}"


def _resolve(module: str, qualname: str) -> Any:
    obj: Any = sys.modules.get(MAIN) if module in ("__main__", MAIN) and MAIN in sys.modules \
        else importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def encode(value: Any, params: bool = False) -> RawJSON:
    """``value`` pickled, as the JSON string of its hex digits (in an array: a
    request's params are structured)."""
    text = binascii.hexlify(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    return RawJSON(b'["%s"]' % text if params else b'"%s"' % text)


def decode(text: str) -> Any:
    return pickle.loads(binascii.unhexlify(text))


def _caller(ref: str) -> Callable[[Any], Any]:
    """The worker function behind a call's name: params are the arguments."""
    pickled = ref.startswith(PICKLE_PREFIX)
    chunk = ref.startswith(CHUNK_PREFIX)
    name = ref.split("/", 1)[1] if pickled or chunk else ref
    module, _, qualname = name.partition(":")
    try:
        fn = _resolve(module, qualname)
    except Exception as e:
        raise HerdError("method_not_found", f"{name}: {type(e).__name__}: {e}",
                        data={"method": ref}) from None
    if pickled:
        return lambda params: encode(_run_chunk(fn, *decode(params[0])))
    if chunk:
        return lambda params: _run_chunk(fn, *params)
    return lambda params: fn(*params)


def _raiser(error: HerdError) -> Callable[[Any], Any]:
    def fail(_params: Any) -> Any:
        raise error
    return fail


def _run_chunk(fn: Callable[..., Any], items: List[Any], star: bool = False) -> List[Any]:
    """A chunk call: ``fn`` over items (argument lists with ``star``), answered
    ``[results, errors]`` as herd.batch answers, in one flat message: a JSON
    array per item would cost more than a tiny task's run. With pickle, params
    and result are each one hex pickle of the same.

    The items run under map() or starmap(), in C between two calls: tiny
    tasks pay only their call. Between slices of items the worker's loop takes
    its turn, as in herd.batch: a long chunk keeps heartbeating and hears a
    cancel."""
    from . import _fold, _worker
    if not isinstance(items, list):
        raise HerdError("invalid_params", "a chunk call's params are [items, star]")
    server = _worker._server
    req = server.current if server else None
    results: List[Any] = []
    errors: List[Dict[str, Any]] = []
    start, size = 0, 16
    turn = time.monotonic() + _fold.TURN_EVERY
    while start < len(items):
        # Slices double while they run quickly: tiny tasks pay no per-slice cost,
        # slow ones still let the clock be looked at every few of them.
        part = items[start:start + size]
        began = time.monotonic()
        mapped = itertools.starmap(fn, part) if star else map(fn, part)
        while True:
            try:
                results.extend(mapped)  # keeps what came before a failure
                break
            except _worker.WorkerFailure:
                raise
            except Exception as e:
                error = e if isinstance(e, HerdError) else _worker._failed(e)
                errors.append({"index": len(results), "error": error.to_error()})
                results.append(None)
        start += len(part)
        now = time.monotonic()
        if now - began < SLICE_SECONDS:
            size *= 2
        if server and req and now >= turn:
            server.step(0)  # heartbeats, cancels and other clients, now and then
            req.check(server)
            turn = time.monotonic() + _fold.TURN_EVERY
    if server:
        server.served += len(items)
    return [results, errors]


class Functions(dict):  # type: ignore[type-arg]
    """``"module:qualname"`` names resolved on first use, for :func:`herd.serve`."""

    def __init__(self, combine: bool = False) -> None:
        super().__init__()
        self.combine = combine

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and ":" in name

    def __missing__(self, name: str) -> Callable[..., Any]:
        if self.combine:
            # A combine gets (acc, result), not a call's params.
            module, _, qualname = name.partition(":")
            fn = _resolve(module, qualname)
        else:
            try:
                fn = _caller(name)
            except HerdError as e:
                fn = _raiser(e)  # the call answers why the name does not resolve
        self[name] = fn
        return fn

    def get(self, name: Any, default: Any = None) -> Any:
        try:
            return self[name] if name in self else default
        except Exception:
            return default

    def items(self) -> Iterator[Any]:  # type: ignore[override]
        return iter(())  # nothing declared ahead: the master names what it calls


def _run_main(init: Dict[str, Any]) -> None:
    """The master's script as module __mp_main__ (spawn.py's _fixup_main_from_path)."""
    global bootstrapping
    sys.path[:] = list(init.get("sys_path") or sys.path)
    bootstrapping = True
    try:
        if init.get("main_module"):
            module = types.ModuleType(MAIN)
            sys.modules[MAIN] = sys.modules["__main__"] = module
            module.__dict__.update(runpy.run_module(init["main_module"], run_name=MAIN,
                                                    alter_sys=False))
        elif init.get("main_path"):
            module = types.ModuleType(MAIN)
            module.__file__ = init["main_path"]
            sys.modules[MAIN] = sys.modules["__main__"] = module
            module.__dict__.update(runpy.run_path(init["main_path"], run_name=MAIN))
    finally:
        bootstrapping = False


def main_spec() -> Dict[str, Any]:
    """What a worker needs to run this process's main module again."""
    main = sys.modules["__main__"]
    spec: Dict[str, Any] = {"sys_path": list(sys.path)}
    mod_spec = getattr(main, "__spec__", None)
    if mod_spec is not None and mod_spec.name not in ("__main__", MAIN):
        spec["main_module"] = mod_spec.name[:-len(".__main__")] \
            if mod_spec.name.endswith(".__main__") else mod_spec.name
    elif getattr(main, "__file__", None):
        spec["main_path"] = os.path.abspath(main.__file__)
    return spec


def argv() -> List[str]:
    """A worker's command line: this interpreter, importing this package from where
    the master found it."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return ["-c", f"import sys; sys.path.insert(0, {here!r}); "
            "from herd._startapp import serve_pool; serve_pool()"]


def check_not_bootstrapping() -> None:
    """Refuses a pool started while a worker imports the master's script."""
    if bootstrapping:
        raise RuntimeError(
            "herd.Pool was started while a pool worker was importing the main script: "
            "the script creates its pool at import time. Start the pool under "
            "'if __name__ == \"__main__\":', as with multiprocessing.")


def serve_pool(init_hook: Optional[Callable[[Any], Any]] = None) -> None:
    """A pool worker's life (the bootstrap command's entry point)."""
    from ._worker import serve

    def init(arg: Any) -> None:
        _run_main(arg or {})
        if (arg or {}).get("initializer"):
            module, _, qualname = arg["initializer"].partition(":")
            _resolve(module, qualname)(*arg.get("initargs", []))

    serve(Functions(), init=init, combiners=Functions(combine=True), name="herd-pool-worker")
