"""herd's wire (proto/PROTOCOL.md): JSON-RPC 2.0 lines on Unix stream sockets.

One blocking connection: requests and their replies matched by ID, the hello
handshake (3.1), heartbeats (7) kept while the caller blocks or computes, and
the framing limit of section 1 on what it reads.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Optional

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_SIZE = 16 * 1024 * 1024
# Bytes one read may take: a pool's batch of 16,384 results is ~100 KB, and
# each read costs a trip through the caller's loop. Not more: glibc serves a
# bigger buffer by mmap, 70 us a read however small the message.
RECV_SIZE = 1 << 18
CONNECTION_SETTINGS = ("max_message_size", "heartbeat_interval_ms", "heartbeat_timeout_ms")
SETTINGS_DEFAULTS: Dict[str, int] = {
    "max_message_size": DEFAULT_MAX_MESSAGE_SIZE,
    "heartbeat_interval_ms": 1000,
    "heartbeat_timeout_ms": 10000,
    "handshake_timeout_ms": 10000,
    "spawn_timeout_ms": 30000,
    "connection_timeout_ms": 10000,
}


class HerdError(Exception):
    """An error reply (PROTOCOL.md section 2), or a local failure named the same way.

    ``name`` is the stable snake_case name (``data["name"]``): match on it, not
    on ``message``.
    """

    def __init__(self, name: str, message: str, code: Optional[int] = None,
                 data: Optional[Dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.code = code
        self.data: Dict[str, Any] = dict(data or {})
        self.data.setdefault("name", name)

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

    @classmethod
    def from_reply(cls, error: Any) -> "HerdError":
        if not isinstance(error, dict):
            return cls("internal_error", f"malformed error reply: {error!r}")
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        return cls(str(data.get("name", "internal_error")), str(error.get("message", "")),
                   error.get("code"), data)


def resolve_settings(code: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """Defaults, then ``code``, then ``$HERD_RPC_SETTINGS``, field by field (3.3)."""
    s = dict(SETTINGS_DEFAULTS)
    s.update(code or {})
    env = os.environ.get("HERD_RPC_SETTINGS")
    if env:
        try:
            extra = json.loads(env)
        except ValueError as e:
            raise HerdError("invalid_params", f"HERD_RPC_SETTINGS: not JSON: {e}") from None
        if not isinstance(extra, dict):
            raise HerdError("invalid_params", "HERD_RPC_SETTINGS: not a JSON object")
        for k, v in extra.items():
            if k not in SETTINGS_DEFAULTS:
                raise HerdError("invalid_params", f"HERD_RPC_SETTINGS: unknown field {k!r}")
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise HerdError("invalid_params", f"HERD_RPC_SETTINGS: bad value for {k!r}")
            s[k] = v
    return s


def _encode(msg: Dict[str, Any]) -> bytes:
    # Compact, one line: json.dumps escapes every newline inside strings.
    return (json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _no_duplicates(pairs: Any) -> Dict[str, Any]:
    obj: Dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise HerdError("duplicate_key", f"duplicate key {k!r}")
        obj[k] = v
    return obj


NotificationHandler = Callable[[str, Any], None]


class Connection:
    """One hello'd connection. Not thread-safe, except for the heartbeat sender."""

    def __init__(self, sock: socket.socket, settings: Dict[str, int]) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._send_lock = threading.Lock()
        self._next_id = 1
        self._replies: Dict[Any, Dict[str, Any]] = {}
        self._items: Dict[Any, Deque[Any]] = {}
        self._handlers: Dict[str, NotificationHandler] = {}
        self.closed: Optional[HerdError] = None
        self.max_message_size = settings["max_message_size"]
        self.peer_max_message_size = DEFAULT_MAX_MESSAGE_SIZE
        self.heartbeat_interval = settings["heartbeat_interval_ms"] / 1000
        self.heartbeat_timeout = settings["heartbeat_timeout_ms"] / 1000
        self._last_recv = time.monotonic()
        self._last_sent = self._last_recv
        self._hb_stop = threading.Event()
        self._hb_thread: Optional[threading.Thread] = None
        self.hello: Dict[str, Any] = {}

    # ---- opening ----

    @classmethod
    def open(cls, path: str, role: str, name: Optional[str] = None,
             settings: Optional[Dict[str, int]] = None, init: Any = None,
             extra: Optional[Dict[str, Any]] = None) -> "Connection":
        """Connect to ``path`` and say hello with ``role`` (3.1)."""
        s = resolve_settings(settings)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # CLOEXEC by default
        try:
            sock.connect(path)
        except OSError as e:
            sock.close()
            raise HerdError("connection_failed", f"connect {path}: {e.strerror}",
                            data={"errno": e.errno, "path": path}) from None
        return cls.from_socket(sock, role, s, name=name, init=init, extra=extra)

    @classmethod
    def from_socket(cls, sock: socket.socket, role: str, settings: Dict[str, int],
                    name: Optional[str] = None, init: Any = None,
                    extra: Optional[Dict[str, Any]] = None) -> "Connection":
        c = cls(sock, settings)
        params: Dict[str, Any] = {"version": PROTOCOL_VERSION, "role": role}
        if name is not None:
            params["name"] = name
        if role != "worker":
            params["settings"] = {k: settings[k] for k in CONNECTION_SETTINGS}
        if init is not None:
            params["init"] = init
        params.update(extra or {})
        try:
            c.hello = c.call("hello", params, timeout=settings["handshake_timeout_ms"] / 1000)
        except BaseException:
            c.close()
            raise
        peer = c.hello.get("settings") or {}
        c.peer_max_message_size = int(peer.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE))
        if role == "worker":
            # The channel's heartbeats are the worker's alone (5), timed by herdd's answer.
            c.heartbeat_interval = c.hello.get("heartbeat_interval_ms", 0) / 1000
            c.heartbeat_timeout = 0
        if c.heartbeat_interval > 0 and role != "worker":
            # A worker's own loop heartbeats on fd 3: a hung loop must fall silent (5.3).
            c._hb_thread = threading.Thread(target=c._heartbeat_loop, daemon=True,
                                            name="herd-heartbeat")
            c._hb_thread.start()
        return c

    # ---- sending ----

    def send(self, msg: Dict[str, Any]) -> None:
        if self.closed:
            raise self.closed
        data = _encode(msg)
        if len(data) - 1 > self.peer_max_message_size:
            raise HerdError("limit_exceeded", "message longer than the peer's max_message_size",
                            data={"limit": "max_message_size", "value": self.peer_max_message_size})
        try:
            with self._send_lock:
                self._sock.sendall(data)
                self._last_sent = time.monotonic()
        except OSError as e:
            self._fail(HerdError("connection_closed", f"send: {e.strerror}"))
            raise self.closed from None  # type: ignore[misc]

    def request(self, method: str, params: Any = None) -> int:
        """Send a request; returns its ID for :meth:`wait`."""
        rid = self._next_id
        self._next_id += 1
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        return rid

    def notify(self, method: str, params: Any = None) -> None:
        msg: Dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)

    def call(self, method: str, params: Any = None, timeout: Optional[float] = None) -> Any:
        """A request and its reply's result; an error reply raises :class:`HerdError`."""
        return self.wait(self.request(method, params), timeout)

    # ---- receiving ----

    def on_notification(self, method: str, handler: NotificationHandler) -> None:
        self._handlers[method] = handler

    def wait(self, rid: Any, timeout: Optional[float] = None) -> Any:
        """Block (heartbeats kept) until the reply to ``rid`` arrives."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while rid not in self._replies:
            if self.closed:
                self._items.pop(rid, None)
                raise self.closed
            if not self.pump(deadline):
                raise HerdError("timeout", f"no reply within {timeout} s", data={"what": "reply"})
        reply = self._replies.pop(rid)
        self._items.pop(rid, None)
        if "error" in reply:
            raise HerdError.from_reply(reply["error"])
        return reply.get("result")

    def pump(self, deadline: Optional[float] = None) -> bool:
        """Read and dispatch what arrives until something did or ``deadline`` passed.

        Returns False on the deadline. Checks the peer's heartbeat timeout.
        """
        while not self.closed:
            now = time.monotonic()
            wake = deadline
            dead = None
            if self.heartbeat_timeout > 0:
                dead = self._last_recv + self.heartbeat_timeout
                wake = dead if wake is None else min(wake, dead)
            wait = None if wake is None else max(0.0, wake - now)
            ready, _, _ = select.select([self._sock], [], [], wait)
            if ready:
                self._read()
                return True
            # Silence is judged only after what waited in the socket was read.
            now = time.monotonic()
            if dead is not None and now >= dead:
                self._fail(HerdError("connection_closed",
                                     f"no message for {self.heartbeat_timeout} s"))
            elif deadline is not None and now >= deadline:
                return False
        return True

    def _read(self) -> None:
        try:
            chunk = self._sock.recv(RECV_SIZE)
        except OSError as e:
            self._fail(HerdError("connection_closed", f"recv: {e.strerror}"))
            return
        if not chunk:
            self._fail(HerdError("connection_closed", "the peer closed the connection"))
            return
        self._last_recv = time.monotonic()
        start = len(self._buf)
        self._buf += chunk
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                if len(self._buf) > self.max_message_size:
                    self._fail(HerdError("message_too_large", "a line over max_message_size",
                                         data={"limit": self.max_message_size}))
                return
            line = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            start = 0
            if len(line) > self.max_message_size:
                self._fail(HerdError("message_too_large", "a line over max_message_size",
                                     data={"limit": self.max_message_size}))
                return
            if line.strip(b" \t\r"):
                self._dispatch_line(line)
            if self.closed:
                return

    def _dispatch_line(self, line: bytes) -> None:
        try:
            if b"\0" in line:
                raise HerdError("nul_byte", "a NUL byte")
            msg = json.loads(line.decode("utf-8"), object_pairs_hook=_no_duplicates)
        except UnicodeDecodeError:
            self._fail(HerdError("invalid_utf8", "a line that is not UTF-8"))
            return
        except HerdError as e:
            self._fail(e)
            return
        except ValueError as e:
            self._fail(HerdError("parse_error", f"not JSON: {e}"))
            return
        if not isinstance(msg, dict):
            self._fail(HerdError("invalid_request", "a message that is not an object"))
            return
        if "method" not in msg:
            if msg.get("id") is None and "error" in msg:
                # A framing error about what we sent: the peer closes now.
                self._fail(HerdError.from_reply(msg["error"]))
            elif "id" in msg:
                self._replies[msg["id"]] = msg
            return
        method, params = msg["method"], msg.get("params")
        if "id" in msg:
            # Requests from the peer are for subclasses (worker side); refuse the rest.
            self._on_request(msg)
        elif method == "herd.item" and isinstance(params, dict):
            q = self._items.get(params.get("id"))
            if q is not None:
                q.append(params)
        else:
            self._on_notification(method, params)

    def _on_notification(self, method: str, params: Any) -> None:
        handler = self._handlers.get(method)
        if handler:
            handler(method, params)

    def _on_request(self, msg: Dict[str, Any]) -> None:
        self.send({"jsonrpc": "2.0", "id": msg["id"], "error": {
            "code": -32601, "message": f"unknown method {msg['method']!r}",
            "data": {"name": "method_not_found", "method": str(msg["method"])}}})

    # ---- streams ----

    def open_stream(self, method: str, params: Any = None) -> int:
        rid = self.request(method, params)
        self._items[rid] = deque()
        return rid

    def next_item(self, rid: int) -> Optional[Dict[str, Any]]:
        """The next ``herd.item`` params of stream ``rid``, or None once its reply came."""
        q = self._items.get(rid)
        while q is not None and not q:
            if rid in self._replies:
                return None
            if self.closed:
                raise self.closed
            self.pump()
        if q:
            return q.popleft()
        return None

    # ---- closing ----

    def _heartbeat_loop(self) -> None:
        while not self._hb_stop.wait(self.heartbeat_interval / 2):
            if self.closed:
                return
            if time.monotonic() - self._last_sent >= self.heartbeat_interval:
                try:
                    self.notify("heartbeat", self._heartbeat_params())
                except HerdError:
                    return

    def _heartbeat_params(self) -> Any:
        return None

    def _fail(self, err: HerdError) -> None:
        if not self.closed:
            self.closed = err
            self._hb_stop.set()
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._fail(HerdError("connection_closed", "closed by this side"))
        if self._hb_thread and self._hb_thread is not threading.current_thread():
            self._hb_thread.join()
        self._sock.close()

    def fileno(self) -> int:
        return self._sock.fileno()
