"""The worker side: :func:`serve` makes a Python script a herd worker that
herdd supervises over fd 3 (PROTOCOL.md section 5) and that serves its own
socket (section 6), like a C worker built with libherd."""

from __future__ import annotations

import inspect
import os
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, Optional

from . import _fold
from ._proto import (CONNECTION_SETTINGS, PROTOCOL_VERSION, Connection, HerdError,
                     resolve_settings)

ERROR_CODES = {"invalid_request": -32600, "method_not_found": -32601,
               "invalid_params": -32602, "internal_error": -32603,
               "function_failed": -32012, "cancelled": -32014, "shutting_down": -32016}
MAX_FAILURE_MESSAGE = 4096


class _Oneway:
    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn


def oneway(fn: Callable[..., Any]) -> _Oneway:
    """Mark ``fn`` as a oneway function for :func:`serve` (a notification, no reply)."""
    return _Oneway(fn)


class WorkerFailure(Exception):
    """Raised by :func:`fail`: the worker reports a failure to herdd and exits 1."""


def fail(message: str) -> None:
    """End this worker as failed (reason ``failed``, the owner's on_failure gets
    ``message``), as libherd's ``herd_worker_fail``."""
    raise WorkerFailure(message)


def _kind(fn: Any) -> str:
    if isinstance(fn, _Oneway):
        return "oneway"
    return "pipe" if inspect.isgeneratorfunction(fn) else "call"


def _error(name: str, message: str, **data: Any) -> Dict[str, Any]:
    return {"code": ERROR_CODES.get(name, -32603), "message": message,
            "data": dict(data, name=name)}


def _cut(text: str, limit: int = MAX_FAILURE_MESSAGE) -> str:
    return text.encode()[:limit].decode("utf-8", "ignore")


def _error_of(e: Exception) -> Dict[str, Any]:
    """The error object a handler's exception answers (called while handling it)."""
    if isinstance(e, HerdError):
        return {"code": e.code or ERROR_CODES.get(e.name, -32603), "message": e.message,
                "data": e.data}
    return _error("function_failed", _cut(f"{type(e).__name__}: {e}"),
                  traceback=traceback.format_exc())


def _outcome(fn: Callable[[Any], Any], params: Any) -> Any:
    """``(result, None)`` or ``(None, error object)`` of ``fn(params)``."""
    try:
        return fn(params), None
    except WorkerFailure:
        raise
    except Exception as e:
        return None, _error_of(e)


class _ClientConnection(Connection):
    """One client of the worker's socket; requests run in the worker's loop."""

    def __init__(self, sock: socket.socket, server: "_Server") -> None:
        super().__init__(sock, dict(server.settings, heartbeat_interval_ms=0,
                                    heartbeat_timeout_ms=0))
        self.server = server
        self.said_hello = False
        self.cancelled: set = set()
        self.state: Any = None

    def _on_request(self, msg: Dict[str, Any]) -> None:
        self.server.on_request(self, msg)

    def _on_notification(self, method: str, params: Any) -> None:
        if method == "herd.cancel" and isinstance(params, dict):
            self.cancelled.add(params.get("id"))
        elif self.said_hello and method != "heartbeat":
            self.server.on_oneway(self, method, params)

    def reply(self, rid: Any, result: Any = None, error: Optional[Dict[str, Any]] = None) -> None:
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            msg["error"] = error
        else:
            msg["result"] = result
        try:
            self.send(msg)
        except HerdError as e:
            if e.name == "limit_exceeded":
                self.send({"jsonrpc": "2.0", "id": rid, "error": _error(
                    "limit_exceeded", "reply over max_message_size",
                    limit="max_message_size", value=self.peer_max_message_size)})


class _Server:
    def __init__(self, functions: Mapping[str, Any], channel: Connection, name: str,
                 conn_init: Optional[Callable[[Any], Any]],
                 combiners: Optional[Mapping[str, Callable[[Any, Any], Any]]] = None) -> None:
        # Not copied: a mapping may resolve names on demand (the start_app pool's).
        self.functions = functions
        self.combiners = combiners if combiners is not None else {}
        self.accumulators: Dict[str, Any] = {}
        self.channel = channel
        self.name = name
        self.conn_init = conn_init
        info = channel.hello
        self.id = info.get("id")
        self.path = info["socket"]
        self.settings = resolve_settings(info.get("settings") or {})
        self.served = 0
        self.clients: List[_ClientConnection] = []
        self.stopping = False
        # A connection_closed worker lives for its first client (PROTOCOL.md 4.2, 5).
        self.one_client = info.get("shutdown_on") == "connection_closed"
        self.first_client: Optional[_ClientConnection] = None
        self.listener: Optional[socket.socket] = None
        self.signals = -1
        self.function_list = [{"name": n, "kind": _kind(f)} for n, f in self.functions.items()]

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

    def on_request(self, c: _ClientConnection, msg: Dict[str, Any]) -> None:
        rid, method, params = msg["id"], msg["method"], msg.get("params")
        if not c.said_hello:
            self.hello(c, rid, method, params)
            return
        if method == "hello":
            c.reply(rid, error=_error("invalid_request", "a second hello"))
        elif method == "herd.functions":
            c.reply(rid, self.function_list)
        elif method == "herd.settings":
            c.reply(rid, dict(self.settings, max_pending=1024, max_output=64 << 20))
        elif method == "herd.shutdown":
            c.reply(rid, {})
            self.stopping = True
        elif method in _fold.BUILTINS:
            _fold.BUILTINS[method](self, c, rid, params)
        elif method not in self.functions:
            c.reply(rid, error=_error("method_not_found", f"unknown function {method!r}",
                                      method=method))
        elif isinstance(self.functions[method], _Oneway):
            c.reply(rid, error=_error("invalid_request", f"{method} is a oneway function"))
        else:
            self.run(c, rid, method, params)

    def hello(self, c: _ClientConnection, rid: Any, method: str, params: Any) -> None:
        def refuse(name: str, message: str, **data: Any) -> None:
            c.reply(rid, error=_error(name, message, **data))
            c._fail(HerdError(name, message))

        if method != "hello":
            return refuse("hello_required", "the first request must be hello")
        p = params if isinstance(params, dict) else {}
        if p.get("version") != PROTOCOL_VERSION:
            return refuse("version_mismatch", "unsupported version", supported=[1])
        if p.get("role") != "client":
            return refuse("invalid_params", "role must be client on a worker's socket")
        asked = p.get("settings") or {}
        hb = {k: int(asked.get(k, 0)) for k in CONNECTION_SETTINGS[1:]}
        if self.conn_init:
            try:
                c.state = self.conn_init(p.get("init"))
            except Exception as e:  # the init's failure is the client's answer
                return refuse("init_failed", _cut(str(e)))
        c.peer_max_message_size = int(asked.get("max_message_size", c.peer_max_message_size))
        c.heartbeat_interval = hb["heartbeat_interval_ms"] / 1000
        c.heartbeat_timeout = hb["heartbeat_timeout_ms"] / 1000
        c.said_hello = True
        c.reply(rid, {"version": PROTOCOL_VERSION, "server": "worker", "pid": os.getpid(),
                      "name": self.name, "id": self.id, "functions": self.function_list,
                      "settings": dict(self.settings, **hb)})

    def run(self, c: _ClientConnection, rid: Any, method: str, params: Any) -> None:
        fn = self.functions[method]
        self.served += 1
        if _kind(fn) == "pipe":
            _, error = _outcome(lambda p: self.run_pipe(c, rid, fn(p)), params)
            if error is not None:
                c.reply(rid, error=error)
        else:
            c.reply(rid, *_outcome(fn, params))

    def run_pipe(self, c: _ClientConnection, rid: Any, gen: Any) -> None:
        """Items as they come; a cancel read between two items ends the stream."""
        while True:
            self.read_ready(c)
            if rid in c.cancelled or c.closed:
                gen.close()
                c.cancelled.discard(rid)
                if not c.closed:
                    c.reply(rid, error=_error("cancelled", "cancelled"))
                return
            try:
                item = next(gen)
            except StopIteration as end:
                c.reply(rid, end.value)
                return
            c.notify("herd.item", {"id": rid, "item": item})

    def read_ready(self, c: _ClientConnection) -> None:
        # Requests read here run nested, after the cancel they may carry.
        while not c.closed and select.select([c], [], [], 0)[0]:
            c._read()

    def on_oneway(self, c: _ClientConnection, method: str, params: Any) -> None:
        fn = self.functions.get(method)
        if isinstance(fn, _Oneway):
            self.served += 1
            try:
                fn.fn(params)
            except WorkerFailure:
                raise
            except Exception:
                traceback.print_exc()
        else:
            print(f"herd: ignored notification {method!r}", file=sys.stderr)

    # ---- the loop ----

    def loop(self) -> None:
        interval = self.channel.heartbeat_interval
        next_beat = time.monotonic() + interval if interval > 0 else None
        no_client_by = time.monotonic() + self.channel.hello.get("connection_timeout_ms",
                                                                 10000) / 1000
        while not self.stopping:
            for c in [c for c in self.clients if c.closed]:
                c.close()
                self.clients.remove(c)
                if c is self.first_client:
                    self.channel.notify("connection", {"open": 0})
                    return
            now = time.monotonic()
            if self.one_client and not self.first_client and now >= no_client_by:
                os._exit(1)
            wake = [next_beat] if next_beat else []
            if self.one_client and not self.first_client:
                wake.append(no_client_by)
            for c in self.clients:
                if c.heartbeat_interval > 0:
                    wake.append(c._last_sent + c.heartbeat_interval)
                if c.heartbeat_timeout > 0:
                    wake.append(c._last_recv + c.heartbeat_timeout)
            wait = max(0.0, min(wake) - now) if wake else None
            socks: List[Any] = [self.channel, self.listener, self.signals] + self.clients
            ready, _, _ = select.select(socks, [], [], wait)
            for s in ready:
                if s is self.signals:
                    # SIGTERM, SIGINT: stop as on herd.shutdown (the C worker does too).
                    os.read(self.signals, 64)
                    self.stopping = True
                elif s is self.listener:
                    sock, _ = self.listener.accept()
                    self.clients.append(_ClientConnection(sock, self))
                    if self.one_client and not self.first_client:
                        self.first_client = self.clients[-1]
                        self.channel.notify("connection", {"open": 1})
                elif s is self.channel:
                    self.channel._read()
                    if self.channel.closed:  # herdd is gone (5.1)
                        os._exit(1)
                else:
                    s._read()
            self.beat_clients()
            if next_beat and time.monotonic() >= next_beat:
                self.channel.notify("heartbeat", {"served": self.served})
                next_beat = time.monotonic() + interval

    def catch_signals(self) -> None:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signals = r
        signal.set_wakeup_fd(w)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _sig, _frame: None)

    def beat_clients(self) -> None:
        now = time.monotonic()
        for c in self.clients:
            if c.closed or not c.said_hello:
                continue
            if c.heartbeat_timeout > 0 and now >= c._last_recv + c.heartbeat_timeout:
                c._fail(HerdError("connection_closed", "heartbeat timeout"))
            elif c.heartbeat_interval > 0 and now >= c._last_sent + c.heartbeat_interval:
                try:
                    c.notify("heartbeat")
                except HerdError:
                    pass

    def stop(self) -> None:
        if self.listener:
            self.listener.close()
            try:
                os.unlink(self.path)
            except OSError:
                pass
        for c in self.clients:
            c.close()


# The worker this process serves as, once serve() started it (for long pool calls).
current: Optional[_Server] = None


def serve(functions: Mapping[str, Any], init: Optional[Callable[[Any], Any]] = None,
          conn_init: Optional[Callable[[Any], Any]] = None, name: Optional[str] = None,
          combiners: Optional[Mapping[str, Callable[[Any, Any], Any]]] = None) -> None:
    """Serve ``functions`` as a herd worker started by herdd; returns never (exits).

    ``functions`` maps names to callables taking the JSON argument: a plain
    function is a call, a generator function a pipe (its items, then its
    return value as the result), :func:`oneway` marks a oneway function.
    ``init(arg)`` runs once with the spawn's init argument; ``conn_init(arg)``
    per client connection. ``combiners`` names the combine functions
    ``combine(acc, result) -> acc`` a pool's map-reduce may fold results with
    here (``herd.fold``, ``herd.batch``, ``herd.take``: PROTOCOL.md 6.6).
    A handler's exception is a ``function_failed``
    reply (message ``Type: text``, ``data.traceback``); :func:`fail`, or an
    exception outside the handlers, reports a failure to herdd with the
    traceback and exits 1.
    """
    fd = os.environ.pop("HERD_CHANNEL_FD", None)
    os.environ.pop("HERD_WORKER_ID", None)
    if fd is None:
        raise HerdError("invalid_request", "not started by herdd (no HERD_CHANNEL_FD)")
    os.set_inheritable(int(fd), False)
    sock = socket.socket(fileno=int(fd))
    channel = Connection.from_socket(sock, "worker", resolve_settings(),
                                     extra={"pid": os.getpid()})
    global current
    server = current = _Server(functions, channel, name or os.path.basename(sys.argv[0]),
                               conn_init, combiners)
    channel.on_notification("shutdown", lambda _m, _p: setattr(server, "stopping", True))
    try:
        if init:
            init(channel.hello.get("init"))
        server.listen()
        server.catch_signals()
    except Exception as e:
        channel.call("init_failed", {"message": _cut(f"{type(e).__name__}: {e}")})
        os._exit(1)
    channel.call("ready", {"functions": server.function_list})
    try:
        server.loop()
    except BaseException as e:
        message = str(e) if isinstance(e, WorkerFailure) else traceback.format_exc()
        print(message, file=sys.stderr, flush=True)
        try:
            channel.notify("failure", {"message": _cut(message)})
        except HerdError:
            pass
        os._exit(1)
    server.stop()
    sys.stdout.flush()
    os._exit(0)
