"""The worker side: :func:`serve` makes a Python script a herd worker that
herdd supervises over fd 3 (PROTOCOL.md section 5) and that serves its own
socket (section 6), like a C worker built with libherd.

Everything runs on one thread, in one loop. A handler that waits (a sink
reading its items, a pipe between items, :func:`sleep`) runs that loop
meanwhile, so heartbeats, cancels and other connections' requests keep
being served; what they start runs nested and finishes first. One
connection's calls run one after the other, in order (the C worker may
answer them out of order while one waits on a timer).

A worker that declares ``async def`` functions (or async generators for
streams) runs that loop on asyncio instead: each call of one is a task, so
while it awaits, the worker serves other calls (of any connection, answered
as they finish), heartbeats and cancels (a cancel cancels the task).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime
import heapq
import inspect
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections import deque
from typing import (Any, Callable, Deque, Dict, Iterator, List, Mapping, Optional, Tuple)

from . import _fold
from ._proto import (CONNECTION_SETTINGS, PROTOCOL_VERSION, Connection,
                     HerdError, Message, check_settings, resolve_settings)

MAX_FAILURE_MESSAGE = 4096
LOG_LEVELS = ("err", "warning", "notice", "info", "debug")
KINDS = ("call", "oneway", "pipe", "state", "sink")


class _Kind:
    """A function marked with its kind (:func:`oneway`, :func:`state`, :func:`sink`)."""

    def __init__(self, kind: str, fn: Callable[..., Any]) -> None:
        self.kind = kind
        self.fn = fn


def oneway(fn: Callable[[Any], Any]) -> _Kind:
    """Mark ``fn(arg)`` as a oneway function for :func:`serve` (a notification, no reply)."""
    return _Kind("oneway", fn)


def state(fn: Callable[[Any], Iterator[Any]]) -> _Kind:
    """Mark the generator function ``fn(arg)`` as a state stream: its first item
    is the initial state (sent flagged ``initial``), later ones the updates."""
    return _Kind("state", fn)


def sink(fn: Callable[[Any, "SinkItems"], Any]) -> _Kind:
    """Mark ``fn(arg, items)`` as a sink: ``items`` iterates over what the
    client sends until it ends the stream; ``fn``'s return value is the reply."""
    return _Kind("sink", fn)


class WorkerFailure(Exception):
    """Raised by :func:`fail`: the worker reports a failure to herdd and exits 1."""


def fail(message: str) -> None:
    """End this worker as failed (reason ``failed``, the owner's on_failure gets
    ``message``), as libherd's ``herd_worker_fail``."""
    raise WorkerFailure(message)


def _kind_of(fn: Any) -> str:
    if isinstance(fn, _Kind):
        return fn.kind
    return "pipe" if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn) \
        else "call"


def _is_async(fn: Any) -> bool:
    """Whether a function runs as an asyncio task (a coroutine or async generator function)."""
    fn = fn.fn if isinstance(fn, _Kind) else fn
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


_TRAITS: Dict[Any, Tuple[str, bool]] = {}


def _traits(fn: Any) -> Tuple[str, bool]:
    """A function's kind and whether it is async, worked out once per function
    (inspect's checks cost more than a tiny call)."""
    try:
        return _TRAITS[fn]
    except KeyError:
        traits = _TRAITS[fn] = (_kind_of(fn), _is_async(fn))
        return traits
    except TypeError:  # an unhashable callable
        return _kind_of(fn), _is_async(fn)


# The request an async handler's task serves (a task's own context).
_task_request: contextvars.ContextVar[Optional["_Request"]] = \
    contextvars.ContextVar("herd_request", default=None)


def _message(e: Exception) -> str:
    """An exception as the text of a failure: a HerdError's message as it is."""
    return e.message if isinstance(e, HerdError) else str(e)


def _cut(text: str, limit: int = MAX_FAILURE_MESSAGE) -> str:
    return text.encode()[:limit].decode("utf-8", "ignore")


def _failed(e: Exception) -> HerdError:
    """A handler's exception as the ``function_failed`` error it answers
    (called while handling it: the traceback is the current one)."""
    return HerdError("function_failed", _cut(f"{type(e).__name__}: {e}"),
                     data={"traceback": traceback.format_exc()})


class _Request:
    """One request being served: where to answer, and what the client said since."""

    def __init__(self, conn: "_ClientConnection", rid: Any, function: str) -> None:
        self.conn = conn
        self.id = rid
        self.function = function
        self.cancelled = False
        self.items: Deque[Any] = deque()  # a sink's items not yet taken
        self.ended = False  # a sink's herd.end arrived
        self.on_cancel: Optional[Callable[[], None]] = None
        self.waiter: Optional[asyncio.Future[None]] = None  # an async sink's, for items

    def wake(self) -> None:
        """Something an async sink may wait for came (an item, its end, a cancel)."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def check(self, server: "_Server") -> None:
        """Raises what ends this request early: a cancel, its client gone, a stop."""
        if self.cancelled or self.conn.closed:
            raise HerdError("cancelled", "cancelled")
        if server.stopping:
            raise HerdError("shutting_down", "the worker is stopping")


class SinkItems:
    """The items a client sends to a sink, in order; iteration ends with its
    ``herd.end``. A cancel, the client leaving or the worker stopping raise
    :class:`HerdError` (``cancelled``, ``shutting_down``) from the iteration."""

    def __init__(self, server: "_Server", req: _Request) -> None:
        self._server = server
        self._req = req

    def __iter__(self) -> "SinkItems":
        return self

    def __next__(self) -> Any:
        req = self._req
        self._server.wait_until(req, lambda: bool(req.items) or req.ended)
        if req.items:
            return req.items.popleft()
        raise StopIteration

    def __aiter__(self) -> "SinkItems":
        return self

    async def __anext__(self) -> Any:
        """An async sink's next item: awaits it while the worker serves on."""
        req = self._req
        while True:
            req.check(self._server)
            if req.items:
                return req.items.popleft()
            if req.ended:
                raise StopAsyncIteration
            req.waiter = asyncio.get_running_loop().create_future()
            try:
                await req.waiter
            finally:
                req.waiter = None


class _ClientConnection(Connection):
    """One client of the worker's socket; requests run in the worker's loop."""

    def __init__(self, sock: socket.socket, server: "_Server") -> None:
        super().__init__(sock, dict(server.settings, heartbeat_interval_ms=0,
                                    heartbeat_timeout_ms=0))
        self.server = server
        self.said_hello = False
        self.running: Dict[Any, _Request] = {}
        self.state: Any = None
        self.active = 0  # handlers of this connection's calls on the stack
        self.deferred: Deque[Message] = deque()

    def got_request(self, msg: Message) -> None:
        """A connection's calls run one after the other, in order: one that
        arrives while a handler waits (between a pipe's items, in a sink or
        herd.sleep) runs once that handler returned, not nested above it,
        which would hold the earlier reply back until the later call ends."""
        self.deferred.append(msg)
        while self.deferred and self.active == 0 and not self.closed:
            self.server.on_request(self, self.deferred.popleft())

    def got_item(self, params: Message) -> None:
        req = self.running.get(params.get("id"))
        if req is not None and not req.ended:
            req.items.append(params.get("item"))
            req.wake()

    def got_notification(self, method: str, params: Any) -> None:
        req = self.running.get(params.get("id")) if isinstance(params, dict) else None
        if method in ("herd.cancel", "herd.end"):
            if req is None:
                if method == "herd.cancel":
                    self.cancel_deferred(params.get("id") if isinstance(params, dict) else None)
                return  # unknown or finished: ignored (6.3)
            if method == "herd.end":
                req.ended = True
                req.wake()
            else:
                req.cancelled = True
                if req.on_cancel:
                    req.on_cancel()
        elif self.said_hello and method != "heartbeat":
            self.server.on_oneway(self, method, params)

    def cancel_deferred(self, rid: Any) -> None:
        """A cancel for a call still waiting its turn: it never runs."""
        for msg in self.deferred:
            if msg.get("id") == rid:
                self.deferred.remove(msg)
                self.answer(rid, error=HerdError("cancelled", "cancelled"))
                return

    def finish(self, req: _Request, result: Any = None,
               error: Optional[HerdError] = None) -> None:
        """Answers ``req`` once; a client already gone gets nothing."""
        if self.running.pop(req.id, None) is None or self.closed:
            return
        try:
            self.answer(req.id, result, error)
        except HerdError:
            pass


class _Server:
    def __init__(self, functions: Mapping[str, Any], channel: Connection, name: str,
                 conn_init: Optional[Callable[[Any], Any]] = None,
                 combiners: Optional[Mapping[str, Callable[[Any, Any], Any]]] = None) -> None:
        for fname in functions:
            if not fname or fname.startswith("herd.") or fname in ("hello", "heartbeat"):
                raise ValueError(f"{fname!r} cannot name a function (PROTOCOL.md 6.2)")
        # Not copied: a mapping may resolve names on demand (a herd.Pool worker's).
        self.functions = functions
        self.channel = channel
        self.name = name
        self.conn_init = conn_init
        self.combiners = combiners if combiners is not None else {}
        self.accumulators: Dict[str, _fold.Accumulator] = {}
        self.worker_state: Any = None
        info = channel.hello
        self.id = info.get("id")
        self.path = info["socket"]
        self.settings = resolve_settings(info.get("settings") or {})
        self.served = 0
        self.clients: List[_ClientConnection] = []
        self.stopping = False
        self.current: Optional[_Request] = None
        self.log_streams: List[_Request] = []
        self.timers: List[Tuple[float, int, Callable[[], Any]]] = []  # a heap
        self.timer_seq = 0
        # A connection_closed worker lives for its first client (PROTOCOL.md 4.2, 5).
        self.one_client = info.get("shutdown_on") == "connection_closed"
        self.first_client: Optional[_ClientConnection] = None
        self.no_client_by = time.monotonic() + info.get("connection_timeout_ms", 10000) / 1000
        self.listener: Optional[socket.socket] = None
        self.signals = -1
        self.function_list = [{"name": n, "kind": _kind_of(f)} for n, f in self.functions.items()]
        # With async functions the loop runs on asyncio (loop_async), their calls as tasks.
        self.is_async = any(_is_async(f) for _, f in self.functions.items())
        self.aio: Optional[asyncio.AbstractEventLoop] = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: Optional[BaseException] = None  # what ended a task and ends the worker
        self.kick: Optional[asyncio.Future[None]] = None  # loop_async's wait, to cut short

    def listen(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is 0600 (5, item 2)
        try:
            if os.path.exists(self.path):
                os.unlink(self.path)
            s.bind(self.path)
        finally:
            os.umask(old)
        s.listen(64)
        self.listener = s

    # ---- requests ----

    def on_request(self, c: _ClientConnection, msg: Message) -> None:
        rid, method, params = msg["id"], msg["method"], msg.get("params")
        if not c.said_hello:
            self.hello(c, rid, method, params)
            return
        fn = self.functions.get(method)
        if method == "hello":
            c.answer(rid, error=HerdError("invalid_request", "a second hello"))
        elif method in self.BUILTINS:
            self.BUILTINS[method](self, c, _Request(c, rid, method), params)
        elif fn is None:
            c.answer(rid, error=HerdError("method_not_found",
                                          f"unknown function {method[:100]!r}",
                                          data={"method": method[:100]}))
        elif _traits(fn)[0] == "oneway":
            c.answer(rid, error=HerdError("invalid_request", f"{method} is a oneway function"))
        else:
            self.run(_Request(c, rid, method), fn, params)

    def hello(self, c: _ClientConnection, rid: Any, method: str, params: Any) -> None:
        def refuse(name: str, message: str, **data: Any) -> None:
            c.answer(rid, error=HerdError(name, message, data=data))
            c._fail(HerdError(name, message))

        if method != "hello":
            return refuse("hello_required", "the first request must be hello")
        p = params if isinstance(params, dict) else {}
        if p.get("version") != PROTOCOL_VERSION:
            return refuse("version_mismatch", "unsupported version", supported=[1])
        if p.get("role") != "client":
            return refuse("invalid_params", "role must be client on a worker's socket")
        unknown = set(p) - {"version", "role", "name", "settings", "init"}
        if unknown:
            return refuse("invalid_params", f"hello: unexpected {sorted(unknown)[0][:64]!r}")
        try:
            asked = check_settings(p.get("settings", {}), "hello settings", CONNECTION_SETTINGS)
        except HerdError as e:
            return refuse(e.name, e.message)
        hb = {k: asked.get(k, 0) for k in CONNECTION_SETTINGS[1:]}
        if self.conn_init:
            try:
                c.state = self.conn_init(p.get("init"))
            except Exception as e:  # the init's failure is the client's answer
                return refuse("init_failed", _cut(_message(e)))
        c.p.peer_max_message_size = int(asked.get("max_message_size",
                                                  c.p.peer_max_message_size))
        c.p.heartbeat_interval = hb["heartbeat_interval_ms"] / 1000
        c.p.heartbeat_timeout = hb["heartbeat_timeout_ms"] / 1000
        c.said_hello = True
        c.answer(rid, {"version": PROTOCOL_VERSION, "server": "worker", "pid": os.getpid(),
                       "name": self.name, "id": self.id, "functions": self.function_list,
                       "settings": dict(self.settings, **hb)})

    def run(self, req: _Request, fn: Any, params: Any) -> None:
        """Runs a function for ``req`` and answers it (a oneway's error is logged);
        an async one is started as a task that will."""
        if _traits(fn)[1]:
            return self.start_task(req, fn, params)
        try:
            result, error = self.invoke(req, fn, params), None
        except HerdError as e:
            result, error = None, e
        self.answer(req, result, error)

    def answer(self, req: _Request, result: Any, error: Optional[HerdError]) -> None:
        if req.id is not None:
            req.conn.finish(req, result, error)
        elif error is not None:
            self.log(str(error.data.get("traceback", error)), "err")

    # ---- async functions ----

    def start_task(self, req: _Request, fn: Any, params: Any) -> None:
        """An async function's call as a task of the worker's asyncio loop: the
        connection's later calls do not wait for it, a cancel cancels it."""
        if self.aio is None:
            return self.answer(req, None, HerdError(
                "function_failed", f"{req.function} is async, and this worker declared no "
                "async function: its loop is not asyncio's"))
        if req.id is not None:
            req.conn.running[req.id] = req
        self.served += 1
        task = self.aio.create_task(self.run_task(req, _kind_of(fn),
                                                  fn.fn if isinstance(fn, _Kind) else fn, params))
        self.tasks.add(task)
        task.add_done_callback(lambda t: self.task_done(req, t))
        req.on_cancel = task.cancel

    def task_done(self, req: _Request, task: "asyncio.Task[None]") -> None:
        """A cancelled task's answer (a task may be cancelled before it starts)."""
        self.tasks.discard(task)
        if task.cancelled() and req.id is not None:
            req.conn.finish(req, error=HerdError("cancelled", "cancelled")
                            if req.cancelled or req.conn.closed else
                            HerdError("shutting_down", "the worker is stopping"))

    async def run_task(self, req: _Request, kind: str, fn: Any, params: Any) -> None:
        _task_request.set(req)
        result, error = None, None
        try:
            if kind in ("pipe", "state"):
                result = await self.run_async_stream(req, fn(params), kind == "state")
            elif kind == "sink":
                result = await fn(params, SinkItems(self, req))
            else:
                result = await fn(params)
        except HerdError as e:
            error = e
        except asyncio.CancelledError:
            raise  # answered by task_done
        except Exception as e:
            if isinstance(e, WorkerFailure):
                return self.end_worker(e)
            error = _failed(e)
        except BaseException as e:  # an exit: the worker ends, as for a plain function
            return self.end_worker(e)
        self.answer(req, result, error)

    def end_worker(self, e: BaseException) -> None:
        """What :func:`fail` (or an exit) raised in a task ends the worker from its loop."""
        if self.failure is None:
            self.failure = e
        if self.kick is not None and not self.kick.done():
            self.kick.set_result(None)

    async def run_async_stream(self, req: _Request, gen: Any, initial: bool) -> None:
        """An async generator's items, sent as they come; the loop turns between
        them, so a cancel or a stop read there ends the stream (its result is null)."""
        try:
            async for item in gen:
                req.check(self)
                params = {"id": req.id, "item": item}
                if initial:
                    params["initial"] = True
                    initial = False
                req.conn.notify("herd.item", params)
                await asyncio.sleep(0)
            req.check(self)
        finally:
            await gen.aclose()
        return None

    def invoke(self, req: _Request, fn: Any, params: Any) -> Any:
        """Runs ``fn`` for ``req`` as its kind says and returns its result. A
        handler's exception is raised as the HerdError it answers (a
        ``function_failed`` with the traceback); WorkerFailure goes through."""
        kind = _traits(fn)[0]
        fn = fn.fn if isinstance(fn, _Kind) else fn
        c = req.conn
        if req.id is not None:
            c.running[req.id] = req
            c.active += 1
        outer, self.current = self.current, req
        self.served += 1
        try:
            if kind in ("pipe", "state"):
                return self.run_stream(req, fn(params), kind == "state")
            if kind == "sink":
                return fn(params, SinkItems(self, req))
            return fn(params)
        except (HerdError, WorkerFailure):
            raise
        except Exception as e:
            raise _failed(e) from None
        finally:
            self.current = outer
            if req.id is not None:
                c.active -= 1

    def run_stream(self, req: _Request, gen: Iterator[Any], initial: bool) -> Any:
        """Sends a generator's items as they come; its return value is the result.
        The loop turns between items, so a cancel read there ends the stream."""
        try:
            while True:
                self.step(0)
                req.check(self)
                try:
                    item = next(gen)
                except StopIteration as end:
                    return end.value
                params = {"id": req.id, "item": item}
                if initial:
                    params["initial"] = True
                    initial = False
                req.conn.notify("herd.item", params)
        finally:
            gen.close()  # type: ignore[attr-defined]

    def on_oneway(self, c: _ClientConnection, method: str, params: Any) -> None:
        fn = self.functions.get(method)
        if _kind_of(fn) == "oneway":
            self.run(_Request(c, None, method), fn, params)
        else:
            self.log(f"ignored notification {method[:100]!r}", "warning")

    # ---- built-ins (6.5) ----

    def builtin_functions(self, c: _ClientConnection, req: _Request, _params: Any) -> None:
        c.answer(req.id, self.function_list)

    def builtin_settings(self, c: _ClientConnection, req: _Request, _params: Any) -> None:
        c.answer(req.id, dict(self.settings, max_pending=1024, max_output=64 << 20))

    def builtin_shutdown(self, c: _ClientConnection, req: _Request, _params: Any) -> None:
        c.answer(req.id, {})
        self.stop_now("shutdown requested by a client")

    def builtin_close_server(self, c: _ClientConnection, req: _Request, _params: Any) -> None:
        self.close_listener()
        c.answer(req.id, {})

    def builtin_logs(self, c: _ClientConnection, req: _Request, _params: Any) -> None:
        """A stream of what :func:`log` logs, until cancelled; it runs no handler."""
        c.running[req.id] = req

        def cancelled() -> None:
            self.log_streams.remove(req)
            c.finish(req, error=HerdError("cancelled", "cancelled"))

        req.on_cancel = cancelled
        self.log_streams.append(req)

    BUILTINS: Dict[str, Callable[["_Server", _ClientConnection, _Request, Any], None]] = {
        "herd.functions": builtin_functions,
        "herd.settings": builtin_settings,
        "herd.shutdown": builtin_shutdown,
        "herd.close_server": builtin_close_server,
        "herd.logs": builtin_logs,
        "herd.fold": _fold.builtin_fold,
        "herd.take": _fold.builtin_take,
        "herd.batch": _fold.builtin_batch,
    }

    def log(self, message: str, level: str = "info") -> None:
        if level not in LOG_LEVELS:
            raise ValueError(f"level must be one of {LOG_LEVELS}")
        if level != "debug":  # debug goes to herd.logs only, as libherd's
            line = message.encode("unicode_escape").decode("ascii")
            print(f"{level}: {line}", file=sys.stderr, flush=True)
        item = {"time": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="milliseconds").replace("+00:00", "Z"), "level": level, "message": message}
        for req in list(self.log_streams):
            if req.conn.closed:
                self.log_streams.remove(req)
                continue
            try:
                req.conn.notify("herd.item", {"id": req.id, "item": item})
            except HerdError:
                pass

    # ---- the loop ----

    def wait_until(self, req: _Request, done: Callable[[], bool],
                   deadline: Optional[float] = None) -> None:
        """Runs the loop until ``done()`` or ``deadline``; raises what ends ``req``."""
        while True:
            req.check(self)
            if done() or (deadline is not None and time.monotonic() >= deadline):
                return
            self.step(deadline)

    def loop(self) -> None:
        if self.is_async:
            asyncio.run(self.loop_async())
            return
        while not self.stopping:
            self.step(None)

    async def loop_async(self) -> None:
        """The loop on asyncio: each turn polls as :meth:`step` does, then awaits
        the worker's fds or its next wake while the tasks run."""
        loop = self.aio = asyncio.get_running_loop()
        try:
            while not self.stopping and self.failure is None:
                self.step(0)
                if self.stopping or self.failure is not None:
                    break
                wake = self.wake_at(None, time.monotonic())
                self.kick = loop.create_future()
                fds = self.fds()
                for fd in fds:
                    loop.add_reader(fd, lambda k=self.kick: k.done() or k.set_result(None))
                try:
                    await asyncio.wait([self.kick], timeout=None if wake is None else
                                       max(0.0, wake - time.monotonic()))
                finally:
                    for fd in fds:
                        loop.remove_reader(fd)
        finally:
            self.kick = None
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.failure is not None:
            raise self.failure

    def wake_at(self, deadline: Optional[float], now: float) -> Optional[float]:
        """When the loop must turn next (monotonic): ``deadline``, a heartbeat, a
        timer, a client's silence; now for messages read and not yet routed."""
        wake = [t for t in [deadline, self.channel.p.next_beat()] if t is not None]
        if self.timers:
            wake.append(self.timers[0][0])
        if self.one_client and not self.first_client:
            wake.append(self.no_client_by)
        for c in self.clients:
            wake += [t for t in (c.p.next_beat(), c.p.dead_at()) if t is not None]
        if any(c.inbox for c in self.clients):
            wake.append(now)  # read, not yet routed: route it without waiting
        return min(wake) if wake else None

    def fds(self) -> List[Any]:
        socks: List[Any] = [self.channel, self.signals] + self.clients
        if self.listener:
            socks.append(self.listener)
        return socks

    def step(self, deadline: Optional[float]) -> None:
        """One turn of the loop: waits for I/O (no longer than the next heartbeat
        or ``deadline``; 0 polls), handles what is ready, sends heartbeats due."""
        self.reap_clients()
        if self.stopping:
            return
        now = time.monotonic()
        if self.one_client and not self.first_client and now >= self.no_client_by:
            ms = int(self.channel.hello.get("connection_timeout_ms", 10000))
            self.log(f"no client connected within {ms} ms; shutting down", "err")
            os._exit(1)
        wake = self.wake_at(deadline, now)
        wait = None if wake is None else max(0.0, wake - now)
        for s in select.select(self.fds(), [], [], wait)[0]:
            if s is self.signals:
                # SIGTERM, SIGINT: stop as on herd.shutdown (the C worker does too).
                signum = os.read(self.signals, 64)[-1]
                self.stop_now(f"{signal.strsignal(signum)}: stopping")
            elif s is self.listener:
                self.accept()
            elif s is self.channel:
                self.channel._read()
                if self.channel.closed:  # herdd is gone (5.1)
                    self.log(f"herdd's channel: {self.channel.closed.message}; exiting", "err")
                    os._exit(1)
            elif not s.closed:
                s._read()
        for c in self.clients:
            c.dispatch()
        self.beat()
        while self.timers and self.timers[0][0] <= time.monotonic():
            heapq.heappop(self.timers)[2]()

    def accept(self) -> None:
        assert self.listener is not None
        sock, _ = self.listener.accept()
        self.clients.append(_ClientConnection(sock, self))
        if self.one_client and not self.first_client:
            self.first_client = self.clients[-1]
            self.channel.notify("connection", {"open": 1})

    def reap_clients(self) -> None:
        for c in [c for c in self.clients if c.closed]:
            c.close()
            self.clients.remove(c)
            if c is self.first_client:
                self.channel.notify("connection", {"open": 0})
                self.stop_now("the client connection closed; shutting down")

    def beat(self) -> None:
        now = time.monotonic()
        beat = self.channel.p.next_beat()
        if beat is not None and now >= beat:
            self.channel.notify("heartbeat", {"served": self.served})
        for c in self.clients:
            if c.closed or not c.said_hello:
                continue
            dead = c.p.dead_at()
            if dead is not None and now >= dead:
                # Section 2: the silent client hears why before the close.
                ms = int(c.p.heartbeat_timeout * 1000)
                try:
                    c.send({"jsonrpc": "2.0", "id": None, "error": HerdError(
                        "timeout", "no heartbeat", data={"what": "heartbeat", "ms": ms}
                    ).to_error()})
                except HerdError:
                    pass
                c._fail(HerdError("connection_closed", "heartbeat timeout"))
            elif (c.p.next_beat() or now + 1) <= now:
                try:
                    c.notify("heartbeat")
                except HerdError:
                    pass

    def stop_now(self, why: str) -> None:
        """Stop as herd.shutdown says (6.5), once, saying why on the log."""
        if not self.stopping:
            self.log(why)
            self.stopping = True

    def catch_signals(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signals = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _sig, _frame: None)

    def close_listener(self) -> None:
        if self.listener:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def stop(self) -> None:
        self.close_listener()
        for c in self.clients:
            for req in list(c.running.values()):
                c.finish(req, error=HerdError("shutting_down", "the worker is stopping"))
            c.close()


_server: Optional[_Server] = None


def _request() -> _Request:
    req = _task_request.get() or (_server.current if _server else None)
    if req is None:
        raise RuntimeError("not inside a herd function")
    return req


def conn_state() -> Any:
    """Inside a function: what ``conn_init`` returned for the calling connection."""
    return _request().conn.state


def worker_state() -> Any:
    """What :func:`serve`'s ``init`` returned (None outside a worker)."""
    return _server.worker_state if _server else None


def log(message: str, level: str = "info") -> None:
    """Log ``message`` on stderr (herdd keeps its tail for failure reports) and
    to every ``herd.logs`` stream; ``level`` is err, warning, notice, info or
    debug (debug goes to the streams only)."""
    if _server is None:
        print(f"{level}: {message}", file=sys.stderr, flush=True)
    else:
        _server.log(message, level)


def sleep(seconds: float) -> None:
    """Inside a function: wait ``seconds`` while the worker keeps serving
    (heartbeats, cancels, other requests). Raises :class:`HerdError`
    ``cancelled`` if the caller cancels meanwhile (the handler then ends with
    that error) or ``shutting_down`` if the worker stops."""
    req = _request()
    assert _server is not None
    if _task_request.get() is not None:
        raise RuntimeError("herd.sleep would hold the worker's loop: an async function "
                           "awaits asyncio.sleep")
    _server.wait_until(req, lambda: False, time.monotonic() + seconds)


def call_later(seconds: float, fn: Callable[[], Any]) -> None:
    """Run ``fn()`` in the worker's loop ``seconds`` from now (a timer). Its
    exception, as any outside the handlers, ends the worker as failed."""
    if _server is None:
        raise RuntimeError("not in a herd worker")
    _server.timer_seq += 1
    heapq.heappush(_server.timers, (time.monotonic() + seconds, _server.timer_seq, fn))


def serve(functions: Mapping[str, Any], init: Optional[Callable[[Any], Any]] = None,
          conn_init: Optional[Callable[[Any], Any]] = None, name: Optional[str] = None,
          combiners: Optional[Mapping[str, Callable[[Any, Any], Any]]] = None) -> None:
    """Serve ``functions`` as a herd worker started by herdd; returns never (exits).

    ``functions`` maps names to callables taking the JSON argument: a plain
    function is a call, a generator function a pipe (its items, then its
    return value as the result); :func:`oneway`, :func:`state` and
    :func:`sink` mark the other kinds. ``init(arg)`` runs once with the
    spawn's init argument and its result is :func:`worker_state`;
    ``conn_init(arg)`` runs per client connection with the client's init
    argument and its result is :func:`conn_state` (its exception refuses the
    connection with ``init_failed``). A handler's :class:`HerdError` is its
    error reply; another exception is a ``function_failed`` reply (message
    ``Type: text``, ``data.traceback``); :func:`fail`, or an exception
    outside the handlers, reports a failure to herdd with the traceback and
    exits 1. An ``async def`` function (an async generator for a stream, a
    sink's ``items`` then iterated with ``async for``) runs as an asyncio
    task: the worker serves other calls while it awaits. ``combiners`` names the functions ``combine(acc, value) -> acc``
    that pools may fold results with, where they are made (``herd.fold``,
    ``herd.batch``, PROTOCOL.md 6.6).
    """
    global _server
    fd = os.environ.pop("HERD_CHANNEL_FD", None)
    os.environ.pop("HERD_WORKER_ID", None)
    if fd is None:
        raise HerdError("invalid_request", "not started by herdd (no HERD_CHANNEL_FD)")
    os.set_inheritable(int(fd), False)
    sock = socket.socket(fileno=int(fd))
    channel = Connection.from_socket(sock, "worker", resolve_settings(),
                                     extra={"pid": os.getpid()})
    server = _server = _Server(functions, channel, name or os.path.basename(sys.argv[0]),
                               conn_init, combiners)
    channel.on_notification("shutdown", lambda _m, _p: server.stop_now("herdd asked us to stop"))
    try:
        if init:
            server.worker_state = init(channel.hello.get("init"))
        server.listen()
        server.catch_signals()
    except Exception as e:
        message = _message(e) if isinstance(e, HerdError) else f"{type(e).__name__}: {e}"
        server.log(f"init failed: {message}", "err")
        channel.call("init_failed", {"message": _cut(message)})
        os._exit(1)
    channel.call("ready", {"functions": server.function_list})
    try:
        server.loop()
    except BaseException as e:
        message = str(e) if isinstance(e, WorkerFailure) else traceback.format_exc()
        if not isinstance(e, WorkerFailure):
            print(message, file=sys.stderr, flush=True)
        server.log(f"worker failed: {_message(e)}", "err")
        try:
            channel.notify("failure", {"message": _cut(message)})
        except HerdError:
            pass
        os._exit(1)
    server.stop()
    sys.stdout.flush()
    os._exit(0)
