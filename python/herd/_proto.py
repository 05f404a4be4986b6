"""herd's wire (proto/PROTOCOL.md): JSON-RPC 2.0 lines on Unix stream sockets.

:class:`Protocol` is the connection's state without I/O (h11's model): bytes
in, messages out, the framing limits of section 1, request IDs, the hello
handshake (3.1) and the heartbeat clock (7). :class:`Connection` drives it
over a blocking socket, with heartbeats kept while the caller blocks or
computes; herd.aio drives the same core from asyncio.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import threading
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

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


# The codes of PROTOCOL.md section 2 that this package sends.
ERROR_CODES = {"invalid_request": -32600, "method_not_found": -32601,
               "invalid_params": -32602, "internal_error": -32603,
               "init_failed": -32011, "function_failed": -32012, "cancelled": -32014,
               "limit_exceeded": -32015, "shutting_down": -32016, "connection_closed": -32017}


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

    def to_error(self) -> Dict[str, Any]:
        """This error as a reply's ``error`` member."""
        return {"code": self.code or ERROR_CODES.get(self.name, -32603),
                "message": self.message, "data": dict(self.data)}

    @classmethod
    def from_reply(cls, error: Any) -> "HerdError":
        """The exception an error reply's ``error`` member (2.3) stands for."""
        if not isinstance(error, dict):
            return cls("internal_error", f"malformed error reply: {error!r}")
        data = error.get("data") if isinstance(error.get("data"), dict) else {}
        return cls(str(data.get("name", "internal_error")), str(error.get("message", "")),
                   error.get("code"), data)


# The bounds of section 3.2, the same table as proto/settings.c.
SETTINGS_BOUNDS: Dict[str, Tuple[int, int]] = {
    "max_message_size": (1024, 1 << 30),
    "heartbeat_interval_ms": (0, 86400000),
    "heartbeat_timeout_ms": (0, 86400000),
    "handshake_timeout_ms": (1, (1 << 32) - 1),
    "spawn_timeout_ms": (1, (1 << 32) - 1),
    "connection_timeout_ms": (1, (1 << 32) - 1),
}


def check_settings(obj: Any, where: str, fields: Any = SETTINGS_BOUNDS) -> Dict[str, int]:
    """``obj`` if it is a settings object of ``fields`` within the bounds of
    3.2, heartbeats included (a timeout needs an interval, and must be longer);
    else raises ``invalid_params`` naming ``where`` and the field."""
    if not isinstance(obj, dict):
        raise HerdError("invalid_params", f"{where}: not a JSON object")
    for k, v in obj.items():
        if k not in fields:
            raise HerdError("invalid_params", f"{where}: unknown field {k!r}")
        lo, hi = SETTINGS_BOUNDS[k]
        if not _is_int(v) or not lo <= v <= hi:
            raise HerdError("invalid_params", f"{where}: {k} must be an integer {lo}..{hi}")
    interval = obj.get("heartbeat_interval_ms", 0)
    timeout = obj.get("heartbeat_timeout_ms", 0)
    if timeout and (not interval or timeout <= interval):
        raise HerdError("invalid_params",
                        f"{where}: heartbeat_timeout_ms must be longer than a non-zero interval")
    return obj


def resolve_settings(code: Optional[Dict[str, int]] = None) -> Dict[str, int]:
    """Defaults, then ``code``, then ``$HERD_RPC_SETTINGS``, field by field (3.3)."""
    s = dict(SETTINGS_DEFAULTS)
    s.update(check_settings(dict(code or {}), "settings") if code else {})
    env = os.environ.get("HERD_RPC_SETTINGS")
    if env:
        try:
            extra = json.loads(env)
        except ValueError as e:
            raise HerdError("invalid_params", f"HERD_RPC_SETTINGS: not JSON: {e}") from None
        s.update(check_settings(extra, "HERD_RPC_SETTINGS"))
    return check_settings(s, "settings")


def _no_duplicates(pairs: Any) -> Dict[str, Any]:
    obj: Dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            raise HerdError("duplicate_key", f"duplicate key {k!r}")
        obj[k] = v
    return obj


Message = Dict[str, Any]


class RawJSON:
    """JSON text made elsewhere, spliced as a message's ``params`` or ``result``
    as it is: a pool's pickled chunk (one quoted hex string) skips a pass of
    the JSON encoder over its whole length."""

    __slots__ = ("text",)

    def __init__(self, text: bytes) -> None:
        self.text = text


MAX_DEPTH = 64
MAX_ID = 1 << 53
MAX_PENDING = 1024
_ESCAPED_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_MEMBERS = {"jsonrpc", "id", "method", "params", "result", "error"}


def _depth(text: str) -> int:
    """How deep arrays and objects nest in JSON ``text`` (strings skipped)."""
    depth = deepest = 0
    for m in _STRUCTURE.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


_STRUCTURE = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _brackets_over(line: bytes, limit: int) -> bool:
    """Whether ``line`` has more than ``limit`` opening brackets (nothing can nest
    deeper than that), by finds that stop at ``limit``."""
    n = 0
    for c in (b"[", b"{"):
        i = line.find(c)
        while i >= 0:
            n += 1
            if n > limit:
                return True
            i = line.find(c, i + 1)
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is too large for a double")
    return v


def _no_lone_surrogate(v: Any) -> None:
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a lone UTF-16 surrogate") from None
    elif isinstance(v, dict):
        for k, x in v.items():
            _no_lone_surrogate(k)
            _no_lone_surrogate(x)
    elif isinstance(v, list):
        for x in v:
            _no_lone_surrogate(x)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _malformed(msg: Message) -> Optional[str]:
    """Why ``msg`` is not a JSON-RPC 2.0 message of section 1, or None."""
    if msg.get("jsonrpc") != "2.0":
        return 'not "jsonrpc":"2.0"'
    if set(msg) - _MEMBERS:
        return "unknown members"
    rid = msg.get("id")
    if "id" in msg and not (rid is None or isinstance(rid, str) or _is_int(rid)):
        return "an ID of another type"
    if "method" in msg:
        if not isinstance(msg["method"], str):
            return "a method that is not a string"
        if "result" in msg or "error" in msg:
            return "a request with result or error"
        if _is_int(rid) and abs(rid) > MAX_ID:
            return "an ID outside +-2^53"
    elif ("result" in msg) == ("error" in msg):
        return "a reply needs one of result and error"
    return None


class Protocol:
    """One connection's protocol state, without I/O: what to send as bytes,
    what arrived as messages, and when heartbeats are due.

    Both the blocking :class:`Connection` and herd.aio's connection drive one
    of these; they differ only in how they wait.
    """

    def __init__(self, settings: Dict[str, int]) -> None:
        self.max_message_size = settings["max_message_size"]
        self.peer_max_message_size = DEFAULT_MAX_MESSAGE_SIZE
        self.heartbeat_interval = settings["heartbeat_interval_ms"] / 1000
        self.heartbeat_timeout = settings["heartbeat_timeout_ms"] / 1000
        self.hello: Dict[str, Any] = {}
        self.closed: Optional[HerdError] = None
        self.broken: Optional[HerdError] = None  # why reading stopped (framing, EOF)
        self.last_recv = self.last_sent = time.monotonic()
        self.pending: Set[Any] = set()  # IDs of our requests still awaiting replies
        self.peer_pending: Set[Any] = set()  # IDs of the peer's requests not yet answered
        self.answer_break = False  # whether broken is a framing error to answer
        self._buf = bytearray()
        self._next_id = 1

    # ---- out ----

    def encode(self, msg: Message) -> bytes:
        """``msg`` as one line; raises if closed or over the peer's limit (section 1)."""
        if self.closed:
            raise self.closed
        raw = msg.get("params", msg.get("result"))
        if type(raw) is RawJSON:
            key = "params" if "params" in msg else "result"
            head = json.dumps({k: v for k, v in msg.items() if k != key}, separators=(",", ":"),
                              ensure_ascii=False)
            data = b"".join((head[:-1].encode(), b',"', key.encode(), b'":', raw.text, b"}\n"))
        else:
            # Compact, one line: json.dumps escapes every newline inside strings.
            data = (json.dumps(msg, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        if len(data) - 1 > self.peer_max_message_size:
            raise HerdError("limit_exceeded", "message longer than the peer's max_message_size",
                            data={"limit": "max_message_size",
                                  "value": self.peer_max_message_size})
        self.last_sent = time.monotonic()
        return data

    def request(self, method: str, params: Any = None) -> Tuple[int, bytes]:
        """A new request: its ID and its bytes. The reply is awaited from now on."""
        rid = self._next_id
        msg: Message = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        data = self.encode(msg)
        self._next_id += 1
        self.pending.add(rid)
        return rid, data

    def notification(self, method: str, params: Any = None) -> bytes:
        msg: Message = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        return self.encode(msg)

    def reply(self, rid: Any, result: Any = None, error: Optional[HerdError] = None) -> bytes:
        """The reply to the peer's request ``rid``; a result over the peer's limit
        becomes a ``limit_exceeded`` error, as libherd answers it."""
        self.peer_pending.discard(rid)
        msg: Message = {"jsonrpc": "2.0", "id": rid}
        if error is not None:
            msg["error"] = error.to_error()
        else:
            msg["result"] = result
        try:
            return self.encode(msg)
        except HerdError as e:
            if e.name != "limit_exceeded" or error is not None:
                raise
            return self.reply(rid, error=HerdError("limit_exceeded", "reply over max_message_size",
                                                   data=e.data))

    def forget(self, rid: Any) -> None:
        """Stop awaiting ``rid``'s reply (its caller gave up): it is dropped on arrival."""
        self.pending.discard(rid)

    # ---- in ----

    def receive(self, data: bytes) -> List[Message]:
        """The messages ``data`` completes, in order; ``b""`` is the peer's EOF.

        A framing violation (section 1) or EOF ends reading: :attr:`broken` says
        why, and its caller closes with that once it has routed the messages
        returned (those that came before it).
        """
        if self.broken:
            return []
        if not data:
            self.broken = HerdError("connection_closed", "the peer closed the connection")
            return []
        self.last_recv = time.monotonic()
        out: List[Message] = []
        # Lines are cut out of the read where they end in it: a pool's 100 KB
        # message is copied once here, not through the buffer each time.
        start = len(self._buf)
        buf: Any = data
        if start:
            self._buf += data
            buf = self._buf
        pos = 0
        while not self.broken:
            nl = buf.find(b"\n", start)
            if nl < 0:
                if len(buf) - pos > self.max_message_size:
                    self._too_large()
                break
            line = bytes(buf[pos:nl])
            pos = start = nl + 1
            if len(line) > self.max_message_size:
                self._too_large()
            elif line and (line[0] not in b" \t\r" or line.strip(b" \t\r")):
                msg = self._parse(line)
                if msg is not None:
                    out.append(msg)
        if buf is self._buf:
            del self._buf[:pos]
        elif pos < len(data):
            self._buf = bytearray(data[pos:])
        return out

    def _too_large(self) -> None:
        self._break(HerdError("message_too_large", "a line over max_message_size",
                              data={"limit": self.max_message_size}))

    def _parse(self, line: bytes) -> Optional[Message]:
        """The checks of section 1, in its order, then the message; None after
        a framing error (:attr:`broken`) or for a framing error the peer sent."""
        try:
            # The slow checks run only on lines that could fail them; the quick
            # ones are memchr scans (a two-byte search or a count costs 100x more).
            escapes = b"\\" in line and b"\\u" in line
            if b"\0" in line or (escapes and _ESCAPED_NUL.search(line)):
                raise HerdError("nul_byte", "a NUL byte")
            text = line.decode("utf-8")
            if _brackets_over(line, MAX_DEPTH) and _depth(text) > MAX_DEPTH:
                raise HerdError("too_deep", f"JSON nested over {MAX_DEPTH} deep",
                                data={"limit": MAX_DEPTH})
            msg = json.loads(text, object_pairs_hook=_no_duplicates,
                             parse_constant=_no_constant, parse_float=_finite)
            if escapes:
                _no_lone_surrogate(msg)
        except UnicodeError:
            self._break(HerdError("invalid_utf8", "a line that is not UTF-8"))
            return None
        except HerdError as e:
            self._break(e)
            return None
        except ValueError as e:
            self._break(HerdError("parse_error", f"not JSON: {e}"))
            return None
        if not isinstance(msg, dict):
            self._break(HerdError("invalid_request", "a message that is not an object"))
            return None
        if "method" not in msg and msg.get("id") is None and "error" in msg:
            # A framing error about what we sent: the peer closes now, unanswered.
            self.broken = self.broken or HerdError.from_reply(msg["error"])
            self.answer_break = False
            return None
        return msg

    def _break(self, err: HerdError) -> None:
        if not self.broken:
            self.broken = err
            self.answer_break = err.name != "connection_closed"

    def farewell(self) -> Optional[bytes]:
        """The ``"id": null`` error reply a framing error gets before the close (section 1)."""
        if not self.broken or not self.answer_break or self.closed:
            return None
        self.answer_break = False
        try:
            return self.encode({"jsonrpc": "2.0", "id": None, "error": self.broken.to_error()})
        except HerdError:
            return None

    def route(self, msg: Message, to: "Endpoint") -> None:
        """Hands ``msg`` to the matching method of ``to``: a reply to a pending
        request, the peer's request, a stream item, or another notification.
        A malformed message is answered ``invalid_request`` (section 1), a
        request whose ID is in flight too, one past 1024 in flight
        ``too_many_requests``."""
        bad = _malformed(msg)
        rid = msg.get("id")
        usable = isinstance(rid, str) or (_is_int(rid) and abs(rid) <= MAX_ID)
        if bad:
            to.answer(rid if usable else None, error=HerdError("invalid_request", bad))
            return
        method = msg.get("method")
        params = msg.get("params")
        if method is None:
            if rid in self.pending:
                self.pending.discard(rid)
                to.got_reply(msg)
        elif "id" in msg:
            if rid in self.peer_pending:
                to.answer(rid, error=HerdError("invalid_request", "this ID is in flight"))
            elif len(self.peer_pending) >= MAX_PENDING:
                to.answer(rid, error=HerdError("too_many_requests",
                                               f"{MAX_PENDING} requests in flight",
                                               data={"limit": MAX_PENDING}))
            else:
                self.peer_pending.add(rid)
                to.got_request(msg)
        elif method == "herd.item" and isinstance(params, dict):
            to.got_item(params)
        else:
            to.got_notification(method, params)

    # ---- hello (3.1) ----

    @staticmethod
    def hello_params(role: str, settings: Dict[str, int], name: Optional[str] = None,
                     init: Any = None, extra: Optional[Dict[str, Any]] = None) -> Message:
        params: Message = {"version": PROTOCOL_VERSION, "role": role}
        if name is not None:
            params["name"] = name
        if role != "worker":
            params["settings"] = {k: settings[k] for k in CONNECTION_SETTINGS}
        if init is not None:
            params["init"] = init
        params.update(extra or {})
        return params

    def hello_done(self, result: Message, role: str) -> None:
        """Takes the hello's result: the peer's limit and, for a worker, its heartbeats."""
        self.hello = result
        peer = result.get("settings") or {}
        self.peer_max_message_size = int(peer.get("max_message_size", DEFAULT_MAX_MESSAGE_SIZE))
        if role == "worker":
            # The channel's heartbeats are the worker's alone (5), timed by herdd's answer.
            self.heartbeat_interval = result.get("heartbeat_interval_ms", 0) / 1000
            self.heartbeat_timeout = 0

    # ---- time (7) ----

    def next_beat(self) -> Optional[float]:
        """When our next heartbeat is due (monotonic), or None without heartbeats."""
        return self.last_sent + self.heartbeat_interval if self.heartbeat_interval > 0 else None

    def dead_at(self) -> Optional[float]:
        """When the peer's silence closes the connection, or None."""
        return self.last_recv + self.heartbeat_timeout if self.heartbeat_timeout > 0 else None

    def check_silence(self, now: float) -> None:
        dead = self.dead_at()
        if dead is not None and now >= dead:
            self.fail(HerdError("connection_closed", f"no message for {self.heartbeat_timeout} s"))

    def fail(self, err: HerdError) -> bool:
        """Closes with ``err`` unless already closed; True if this closed it."""
        if self.closed:
            return False
        self.closed = err
        return True


class Endpoint:
    """What :meth:`Protocol.route` delivers to; the defaults answer requests
    ``method_not_found`` (6.7) and ignore notifications."""

    def got_reply(self, msg: Message) -> None:
        pass

    def got_request(self, msg: Message) -> None:
        """Answers a request the peer sent (``msg``: the whole message)."""
        self.answer(msg["id"], error=HerdError("method_not_found",
                                               f"unknown method {str(msg['method'])[:100]!r}",
                                               data={"method": str(msg["method"])[:100]}))

    def got_item(self, params: Message) -> None:
        pass

    def got_notification(self, method: str, params: Any) -> None:
        """Takes a notification the peer sent."""

    def answer(self, rid: Any, result: Any = None, error: Optional[HerdError] = None) -> None:
        """Replies to request ``rid`` with ``result``, or ``error`` if given."""
        raise NotImplementedError


NotificationHandler = Callable[[str, Any], None]


class Driver(Endpoint):
    """What a connection is however it waits (blocking here, asyncio in
    herd.aio): its :class:`Protocol`, its notification handlers, and the
    messages it writes; a subclass gives ``_write``."""

    def __init__(self, settings: Dict[str, int]) -> None:
        self.p = Protocol(settings)
        self._handlers: Dict[str, NotificationHandler] = {}

    @property
    def closed(self) -> Optional[HerdError]:
        """Why the connection closed (a HerdError), or None while it is open."""
        return self.p.closed

    @property
    def hello(self) -> Dict[str, Any]:
        """The result of this connection's hello (3.1): the peer's pid, settings..."""
        return self.p.hello

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def notify(self, method: str, params: Any = None) -> None:
        """Sends a notification (no reply comes)."""
        self._write(self.p.notification(method, params))

    def answer(self, rid: Any, result: Any = None, error: Optional[HerdError] = None) -> None:
        self._write(self.p.reply(rid, result, error))

    def on_notification(self, method: str, handler: NotificationHandler) -> None:
        """Run ``handler(method, params)`` for each notification ``method``
        (as it is read: in the waiting call, or herd.aio's reader task)."""
        self._handlers[method] = handler

    def got_notification(self, method: str, params: Any) -> None:
        handler = self._handlers.get(method)
        if handler:
            handler(method, params)

    def beat(self) -> Optional[float]:
        """Sends the heartbeat due now (section 7), if one is. Returns when the
        next one is due (monotonic), or None when closed or without heartbeats."""
        due = self.p.next_beat()
        if self.closed or due is None:
            return None
        if time.monotonic() >= due:
            try:
                self.notify("heartbeat")
            except HerdError:
                return None
            due = self.p.next_beat()
        return due


class Connection(Driver):
    """One hello'd connection over a blocking socket. Not thread-safe, except
    for the heartbeat sender."""

    def __init__(self, sock: socket.socket, settings: Dict[str, int]) -> None:
        super().__init__(settings)
        self._sock = sock
        self._send_lock = threading.Lock()
        self._replies: Dict[Any, Message] = {}
        self._items: Dict[Any, Deque[Any]] = {}
        self.inbox: Deque[Message] = deque()
        self._hb_stop = threading.Event()
        self._hb_thread: Optional[threading.Thread] = None

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
            raise connect_error(path, e) from None
        return cls.from_socket(sock, role, s, name=name, init=init, extra=extra)

    @classmethod
    def from_socket(cls, sock: socket.socket, role: str, settings: Dict[str, int],
                    name: Optional[str] = None, init: Any = None,
                    extra: Optional[Dict[str, Any]] = None) -> "Connection":
        c = cls(sock, settings)
        params = Protocol.hello_params(role, settings, name, init, extra)
        try:
            c.p.hello_done(c.call("hello", params,
                                  timeout=settings["handshake_timeout_ms"] / 1000), role)
        except BaseException:
            c.close()
            raise
        if c.p.heartbeat_interval > 0 and role != "worker":
            # A worker's own loop heartbeats on fd 3: a hung loop must fall silent (5.3).
            c._hb_thread = threading.Thread(target=c._heartbeat_loop, daemon=True,
                                            name="herd-heartbeat")
            c._hb_thread.start()
        return c

    # ---- sending ----

    def _write(self, data: bytes) -> None:
        try:
            with self._send_lock:
                self._sock.sendall(data)
        except OSError as e:
            self._fail(HerdError("connection_closed", f"send: {e.strerror}"))
            raise self.p.closed from None  # type: ignore[misc]

    def send(self, msg: Message) -> None:
        self._write(self.p.encode(msg))

    def request(self, method: str, params: Any = None) -> int:
        """Send a request; returns its ID for :meth:`wait`."""
        rid, data = self.p.request(method, params)
        self._write(data)
        return rid

    def call(self, method: str, params: Any = None, timeout: Optional[float] = None) -> Any:
        """A request and its reply's result; an error reply raises :class:`HerdError`."""
        return self.wait(self.request(method, params), timeout)

    # ---- receiving ----

    def got_reply(self, msg: Message) -> None:
        self._replies[msg["id"]] = msg

    def got_item(self, params: Message) -> None:
        q = self._items.get(params.get("id"))
        if q is not None:
            q.append(params)

    def wait(self, rid: Any, timeout: Optional[float] = None) -> Any:
        """Block (heartbeats kept) until the reply to ``rid`` arrives."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while rid not in self._replies:
            if self.closed or not self.pump(deadline):
                self.p.forget(rid)
                self._items.pop(rid, None)
                if self.closed:
                    raise self.closed
                raise HerdError("timeout", f"no reply within {timeout} s", data={"what": "reply"})
        self._items.pop(rid, None)
        return result_of(self._replies.pop(rid))

    def pump(self, deadline: Optional[float] = None) -> bool:
        """Read and dispatch what arrives until something did or ``deadline`` passed.

        Returns False on the deadline. Checks the peer's heartbeat timeout.
        """
        while not self.closed:
            dead = self.p.dead_at()
            wake = min((t for t in (deadline, dead) if t is not None), default=None)
            wait = None if wake is None else max(0.0, wake - time.monotonic())
            if select.select([self._sock], [], [], wait)[0]:
                self._read()
                return True
            # Silence is judged only after what waited in the socket was read.
            now = time.monotonic()
            self.p.check_silence(now)
            if self.closed:
                self._fail(self.closed)
            elif deadline is not None and now >= deadline:
                return False
        return True

    def _read(self) -> None:
        try:
            chunk = self._sock.recv(RECV_SIZE)
        except OSError as e:
            self._fail(HerdError("connection_closed", f"recv: {e.strerror}"))
            return
        self.inbox.extend(self.p.receive(chunk))
        self.dispatch()

    def dispatch(self) -> None:
        """Routes the messages read and not yet routed. A handler that waits may
        dispatch again: the messages after its own reach it from this queue."""
        while self.inbox and not self.closed:
            self.p.route(self.inbox.popleft(), self)
        if self.p.broken and not self.inbox:
            last = self.p.farewell()
            if last:
                try:
                    self._write(last)
                except HerdError:
                    pass
            self.p.fail(self.p.broken)
        if self.closed:
            self._fail(self.closed)

    # ---- streams ----

    def open_stream(self, method: str, params: Any = None) -> int:
        rid = self.request(method, params)
        self._items[rid] = deque()
        return rid

    def replied(self, rid: Any) -> bool:
        """Whether the reply to ``rid`` arrived (and waits to be taken)."""
        return rid in self._replies

    def next_item(self, rid: int) -> Optional[Message]:
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
        while not self._hb_stop.wait(self.p.heartbeat_interval / 2):
            if self.beat() is None:
                return

    def _fail(self, err: HerdError) -> None:
        """Closes the protocol with ``err`` (if open) and shuts the socket down."""
        self.p.fail(err)
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

    def peer_pid(self) -> int:
        return peer_pid(self._sock)


def peer_pid(sock: Optional[socket.socket]) -> int:
    """The pid of the process at the socket's other end (SO_PEERCRED); 0 if unknown."""
    try:
        cred = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,  # type: ignore[union-attr]
                               struct.calcsize("3i"))
    except (OSError, AttributeError):
        return 0
    return int(struct.unpack("3i", cred)[0])


def result_of(reply: Message) -> Any:
    """A reply's result; an error reply raises :class:`HerdError`."""
    if "error" in reply:
        raise HerdError.from_reply(reply["error"])
    return reply.get("result")


def connect_error(path: str, e: OSError) -> HerdError:
    return HerdError("connection_failed", f"connect {path}: {e.strerror}",
                     data={"errno": e.errno, "path": path})
