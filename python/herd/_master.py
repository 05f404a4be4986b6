"""The master side: a session with herdd (PROTOCOL.md section 4) and
connections to the workers it spawns (section 6)."""

from __future__ import annotations

import errno
import fnmatch
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from . import _autostart
from ._proto import Connection, HerdError, Message, resolve_settings

EventCallback = Callable[[Dict[str, Any]], None]

# Events libherd's on_failure reports (libclient/master/master.c event_is_failure).
FAILURE_EVENTS = frozenset({"crashed", "failed", "heartbeat_lost", "spawn_timeout",
                            "init_failed", "killed", "host_lost"})
# What libherd's spawn passes from the master's environment by default (4.2).
DEFAULT_INHERIT_ENV = ("PATH", "LANG", "TZ", "LC_*")
_REFUSED_ENV = ("HERD_*", "NOTIFY_SOCKET", "LISTEN_*", "WATCHDOG_*")


# libherd's remote herdds (client-link.c): not spoken here (PROTOCOL.md 9).
_REMOTE_SCHEMES = ("ssh://", "slurm://", "exec:")


def socket_path(socket: Optional[str] = None) -> str:
    """herdd's control socket: the argument, ``$HERD_SOCKET``, then the per-user
    socket (not for root), then the system one, as libherd chooses it. A
    remote herdd (``ssh://``, ``slurm://``, ``exec:``) is ``connection_failed``:
    this package reaches herdds on this host only."""
    path = socket or os.environ.get("HERD_SOCKET") or ""
    if path.startswith(_REMOTE_SCHEMES):
        raise HerdError("connection_failed", f"{path[:100]!r}: herd for Python reaches "
                        "local herdds only; a remote one needs libherd or herdctl",
                        data={"path": path[:100]})
    if path:
        return path
    rt = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.geteuid() != 0 and rt.startswith("/"):
        return os.path.join(rt, "herd", "herdd.sock")
    return "/run/herd/herdd.sock"


def is_failure(event: Dict[str, Any]) -> bool:
    """True for an event libherd's failure callbacks get."""
    name = event.get("event")
    if name in FAILURE_EVENTS:
        return True
    code = (event.get("worker") or {}).get("exit_code")
    return name == "exited" and isinstance(code, int) and code != 0


def _inherited_env(inherit: Any) -> Dict[str, str]:
    if inherit is False:
        return {}
    patterns = ["*"] if inherit is True else [p.replace("*", "") + "*" if p.endswith("*")
                                              else p for p in inherit]
    return {k: v for k, v in os.environ.items()
            if any(fnmatch.fnmatchcase(k, p) for p in patterns)
            and not any(fnmatch.fnmatchcase(k, r) for r in _REFUSED_ENV)}


def spawn_params(path: str, args: Optional[List[str]], init: Any, name: Optional[str],
                 inherit_env: Any, inherit_cwd: bool, master_settings: Dict[str, int],
                 options: Dict[str, Any]) -> Dict[str, Any]:
    """The params of a ``spawn`` request (4.2), completed as libherd completes them."""
    params: Dict[str, Any] = {"path": os.path.abspath(path)}
    params["argv"] = [params["path"]] + list(args or [])
    if name is not None:
        params["name"] = name
    if init is not None:
        params["init"] = init
    env = _inherited_env(inherit_env)
    env.update(options.pop("env", {}))
    params["env"] = env
    if inherit_cwd and "cwd" not in options:
        params["cwd"] = os.getcwd()
    # As libherd: the master's resolved settings, the caller's own over them.
    params["settings"] = dict(master_settings, **options.pop("settings", {}))
    params.update(options)
    return params


_C = TypeVar("_C", bound="_Closing")


class _Closing:
    """A handle that ``with`` closes on the way out, however the block ended."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _C) -> _C:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Session:
    """The control methods (PROTOCOL.md section 4) of :class:`Master` and of
    herd.aio's master: each builds its request and hands it to ``_run``, which
    blocks in one and returns an awaitable in the other."""

    _conn: Any
    settings: Dict[str, int]

    def __init__(self) -> None:
        self._failure_cbs: List[EventCallback] = []
        self._event_cbs: List[EventCallback] = []
        self.events: List[Dict[str, Any]] = []

    def _run(self, method: str, params: Any = None,
             post: Optional[Callable[[Any], Any]] = None) -> Any:
        raise NotImplementedError

    @property
    def herdd_pid(self) -> int:
        """herdd's pid, as its hello gave it."""
        return int(self._conn.hello["pid"])

    @property
    def connection(self) -> int:
        """herdd's number for this session (the ``owner.connection`` of its workers)."""
        return int(self._conn.hello["connection"])

    def _on_event(self, _method: str, params: Any) -> None:
        if not isinstance(params, dict):
            return
        self.events.append(params)
        for cb in list(self._event_cbs):
            cb(params)
        if is_failure(params):
            for cb in list(self._failure_cbs):
                cb(params)

    def on_failure(self, callback: EventCallback) -> None:
        """Call ``callback(event)`` for each failure event of this session's workers
        (and of every visible worker after :meth:`subscribe`). Callbacks run while
        this master waits in one of its methods or in ``poll``."""
        self._failure_cbs.append(callback)

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(event)`` for every event this session receives."""
        self._event_cbs.append(callback)

    def _take_event(self, predicate: Callable[[Dict[str, Any]], bool]) -> Optional[Dict[str, Any]]:
        for i, ev in enumerate(self.events):
            if predicate(ev):
                return self.events.pop(i)
        return None

    def request(self, method: str, params: Any = None) -> Any:
        """Any control method of PROTOCOL.md section 4, by name."""
        return self._run(method, params)

    def spawn(self, path: str, args: Optional[List[str]] = None, init: Any = None,
              name: Optional[str] = None, *, inherit_env: Any = DEFAULT_INHERIT_ENV,
              inherit_cwd: bool = True, **options: Any) -> "Worker":
        """Start a worker and return it once it is ready.

        ``args`` follow argv[0] (= ``path``); ``options`` are the other spawn
        params of PROTOCOL.md 4.2 (``env``, ``cwd``, ``shutdown_on``,
        ``restart``, ``settings``...). As libherd does, the variables named by
        ``inherit_env`` join ``env`` and the working directory becomes ``cwd``.
        """
        params = spawn_params(path, args, init, name, inherit_env, inherit_cwd, self.settings,
                              options)
        return self._run("spawn", params, lambda r: Worker(self, r))

    def list(self, all: bool = False) -> List[Dict[str, Any]]:
        """The visible workers (WORKER objects, 4.3); exited records too with ``all``."""
        return self._run("list", {"all": all}, lambda r: r["workers"])

    def inspect(self, id: str) -> Dict[str, Any]:
        """One worker's WORKER object (4.5)."""
        return self._run("inspect", {"id": id})

    def kill(self, id: str, signal: Any = "TERM", incarnation: int = 0) -> None:
        """Send ``signal`` (a name or number) to a worker (4.4); with
        ``incarnation``, only if that is still the worker's process
        (``worker_not_found`` once a restart replaced it)."""
        return self._run("kill", _named(id, incarnation, signal=signal), lambda r: None)

    def shutdown(self, id: str, incarnation: int = 0) -> Dict[str, Any]:
        """Stop a worker gracefully; returns its final WORKER record. With
        ``incarnation``, as :meth:`kill`."""
        return self._run("shutdown", _named(id, incarnation))

    def worker(self, record: Dict[str, Any]) -> "Worker":
        """A handle for the worker a WORKER object describes (from :meth:`inspect`,
        :meth:`list` or an event), naming its incarnation then."""
        if not all(record.get(k) for k in ("id", "pid", "socket")):
            raise ValueError("a worker record needs id, pid and socket (an exited "
                             "worker has no socket)")
        return Worker(self, record)

    def _pids_agree(self) -> bool:
        """Whether herdd's pids are this process's: herdd is the peer of the
        session's socket under the pid its hello gave (no relay or pid
        namespace in between), so a worker's pid names its process here too."""
        return self._conn.peer_pid() == self.herdd_pid

    def logs(self, id: str, stream: str = "stderr", lines: int = 100) -> List[str]:
        """The last ``lines`` lines a worker wrote to ``stream`` (4.6)."""
        return self._run("logs", {"id": id, "stream": stream, "lines": lines},
                         lambda r: r["lines"])

    def stats(self) -> Dict[str, Any]:
        """herdd's counters (4.8)."""
        return self._run("stats")

    def subscribe(self, all: bool = True, since: Optional[int] = None,
                  instance: Optional[str] = None) -> Dict[str, Any]:
        """Receive the events of every worker this session may see, not only its
        own (4.7); returns herdd's ``instance`` and the ``seq`` of its last event.
        With ``since`` (the last seq seen, from that ``instance``), herdd first
        replays the later events it still holds; what it no longer holds arrives
        as one ``gap`` event (``lost``, ``first``, ``last``, ``reason``)."""
        params: Dict[str, Any] = {"all": all}
        if since is not None:
            params["since"] = since
        if instance is not None:
            params["instance"] = instance
        return self._run("subscribe", params)

    def unsubscribe(self) -> None:
        """Stop the events :meth:`subscribe` added (a master's own still come, 4.7)."""
        return self._run("unsubscribe", {}, lambda r: None)


class Master(_Session, _Closing):
    """A master session with herdd. Use :func:`connect`."""

    def __init__(self, conn: Connection, settings: Dict[str, int]) -> None:
        super().__init__()
        self._conn = conn
        self.settings = settings  # resolved (3.3); each spawn passes them on
        conn.on_notification("event", self._on_event)

    def _run(self, method: str, params: Any = None,
             post: Optional[Callable[[Any], Any]] = None) -> Any:
        result = self._conn.call(method, params)
        return post(result) if post else result

    def _connect_worker(self, worker: "Worker", kw: Dict[str, Any]) -> "WorkerConnection":
        conn = Connection.open(worker.socket, "client", **kw)
        try:
            worker._check_peer(conn.peer_pid())
        except HerdError:
            conn.close()
            raise
        return WorkerConnection(conn)

    def poll(self, timeout: float = 0.0) -> None:
        """Read what herdd sent within ``timeout`` seconds and run the callbacks."""
        deadline = time.monotonic() + timeout
        while self._conn.pump(deadline):
            if self._conn.closed:
                raise self._conn.closed

    def wait_event(self, predicate: Callable[[Dict[str, Any]], bool],
                   timeout: float = 10.0) -> Dict[str, Any]:
        """The first event (already received or arriving within ``timeout``) for
        which ``predicate`` holds; it is taken off :attr:`events`."""
        deadline = time.monotonic() + timeout
        while True:
            ev = self._take_event(predicate)
            if ev is not None:
                return ev
            if self._conn.closed:
                raise self._conn.closed
            if not self._conn.pump(deadline):
                raise HerdError("timeout", f"no such event within {timeout} s",
                                data={"what": "event"})

    def close(self) -> None:
        """End the session on purpose: its workers stop as ``master_closed`` (4.1)."""
        if not self._conn.closed:
            try:
                self._conn.notify("goodbye")
            except HerdError:
                pass
        self._conn.close()


def _named(id: str, incarnation: int, **params: Any) -> Dict[str, Any]:
    """A shutdown's or kill's params: the worker, and its incarnation if known."""
    return dict({"id": id}, **({"incarnation": incarnation} if incarnation else {}), **params)


class Worker:
    """A spawned worker: its ``id``, ``pid``, ``socket``, ``name`` and
    ``incarnation`` (1 for its first process, one more per restart; 0 when
    herdd did not say). A restarted worker keeps its id and socket path, so
    the handle names one incarnation: :meth:`kill` and :meth:`shutdown` act
    on it only and :meth:`connect` refuses a socket another process serves,
    each with ``worker_not_found``; :meth:`Master.worker` makes a handle of
    the new one. Its methods block for a :class:`Master`'s worker and are
    awaitables for herd.aio's."""

    def __init__(self, master: _Session, result: Dict[str, Any]) -> None:
        self.master = master
        self.id: str = result["id"]
        self.pid: int = result["pid"]
        self.socket: str = result["socket"]
        self.name: str = result.get("name", "")
        self.incarnation: int = result.get("incarnation", 0)
        # The socket peer's pid says which process serves it only where
        # herdd's pids are ours (libherd's check_pid).
        self._check_pid = master._pids_agree()

    def _check_peer(self, peer: int) -> None:
        """Raises worker_not_found when another process serves this worker's socket."""
        if self._check_pid and peer and peer != self.pid:
            raise HerdError("worker_not_found", f"worker {self.id}@{self.incarnation} (pid "
                            f"{self.pid}) is gone: pid {peer} serves its socket now",
                            data={"id": self.id, "incarnation": self.incarnation})

    def connect(self, init: Any = None, name: Optional[str] = None,
                settings: Optional[Dict[str, int]] = None) -> "WorkerConnection":
        """A client connection to this worker; ``init`` is the connection-state init
        (the worker's ``conn_init`` argument), ``settings`` the connection
        settings asked for (3.4)."""
        return self.master._connect_worker(  # type: ignore[attr-defined]
            self, {"init": init, "name": name, "settings": settings})

    def inspect(self) -> Dict[str, Any]:
        """This worker's WORKER object (4.5)."""
        return self.master.inspect(self.id)

    def kill(self, signal: Any = "TERM") -> None:
        """Send ``signal`` to this incarnation of the worker (4.4)."""
        return self.master.kill(self.id, signal, self.incarnation)

    def shutdown(self) -> Dict[str, Any]:
        """Stop this incarnation gracefully; returns its final WORKER record."""
        return self.master.shutdown(self.id, self.incarnation)

    def __repr__(self) -> str:
        return f"<herd.Worker {self.id}@{self.incarnation} {self.name} pid {self.pid}>"


class _Calls:
    """Calls on a worker connection, blocking or awaitable as its connection's."""

    _conn: Any
    _stream_class: Any
    _sink_class: Any

    @property
    def functions(self) -> Dict[str, str]:
        """The worker's functions and their kinds, from its hello."""
        return {f["name"]: f["kind"] for f in self._conn.hello.get("functions", [])}

    def call(self, fn: str, arg: Any = None, timeout: Optional[float] = None) -> Any:
        """Call ``fn`` and return its result; a failure raises :class:`HerdError`."""
        return self._conn.call(fn, arg, timeout)

    def notify(self, fn: str, arg: Any = None) -> None:
        """Run a oneway function: nothing comes back, not even an error."""
        self._conn.notify(fn, arg)

    def stream(self, fn: str, arg: Any = None) -> Any:
        """Open a pipe or state stream; iterate over its items (``async for``
        under herd.aio)."""
        return self._stream_class(self._conn, fn, arg)

    def sink(self, fn: str, arg: Any = None) -> Any:
        """Open a sink: send its items, then finish it (awaiting both under herd.aio)."""
        return self._sink_class(self._conn, fn, arg)


class WorkerConnection(_Calls, _Closing):
    """A client connection to a worker's socket (PROTOCOL.md section 6)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._stream_class = Stream
        self._sink_class = Sink

    def close(self) -> None:
        """Close the connection; what still waits on it fails ``connection_closed``."""
        self._conn.close()


class _StreamBase:
    """What a server stream and a sink share, blocking or not: the request, how
    it ended, and the rule that a cancelled stream's ``cancelled`` is no error."""

    def __init__(self, conn: Any, rid: int) -> None:
        self._conn = conn
        self._id = rid
        self._cancelled = False
        self._done = False
        self.result: Any = None
        self.initial = False

    def _item(self, params: Optional[Message]) -> Tuple[bool, Any]:
        """(True, item) for an item to hand out, (False, None) at the end."""
        if params is None or self._cancelled:
            return False, None
        self.initial = bool(params.get("initial"))
        return True, params.get("item")

    def _ended(self, err: Optional[HerdError], result: Any = None) -> None:
        self._done = True
        self.result = result
        if err is not None and not (self._cancelled and err.name == "cancelled"):
            raise err

    def _cancel_needed(self) -> bool:
        if self._done or self._cancelled:
            return False
        self._cancelled = True
        self._conn.notify("herd.cancel", {"id": self._id})
        return True

    def _check_open(self) -> None:
        if self._done or self._cancelled or self._conn.replied(self._id):
            raise BrokenPipeError("the sink has ended; finish() says how")


def _settle(wait: Callable[[], Any]) -> Tuple[Optional[HerdError], Any]:
    try:
        return None, wait()
    except HerdError as e:
        return e, None


class Stream(_StreamBase):
    """A server stream: iterating yields items; :attr:`result` is the final reply.

    ``initial`` is True after the first item of a state stream was yielded.
    """

    def __init__(self, conn: Connection, fn: str, arg: Any) -> None:
        super().__init__(conn, conn.open_stream(fn, arg))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        more, item = self._item(self._conn.next_item(self._id))
        if more:
            return item
        self._finish()
        raise StopIteration

    def _finish(self, timeout: Optional[float] = None) -> None:
        self._ended(*_settle(lambda: self._conn.wait(self._id, timeout)))

    def cancel(self) -> None:
        """Ask the worker to end the stream; items still on the way are dropped."""
        if self._cancel_needed():
            self._finish()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


class Sink(Stream):
    """A client-to-worker stream (kind ``sink``), as libherd's ``herd_sink``:
    :meth:`send` items, then :meth:`finish` for the function's result. Leaving
    a ``with`` block without finishing cancels it."""

    def __init__(self, conn: Connection, fn: str, arg: Any) -> None:
        _StreamBase.__init__(self, conn, conn.request(fn, arg))

    def send(self, item: Any) -> None:
        """Send one item. Raises BrokenPipeError once the sink ended (finished,
        cancelled, or the worker answered early: :meth:`finish` then says how),
        HerdError ``limit_exceeded`` for an item over the worker's limit."""
        self._check_open()
        self._conn.notify("herd.item", {"id": self._id, "item": item})

    def finish(self, timeout: Optional[float] = None) -> Any:
        """End the stream and return the function's result (its error raises)."""
        if not self._done:
            if not self._cancelled and not self._conn.replied(self._id):
                self._conn.notify("herd.end", {"id": self._id})
            self._finish(timeout)
        return self.result


def connect(socket: Optional[str] = None, name: Optional[str] = None,
            settings: Optional[Dict[str, int]] = None) -> Master:
    """A master session with herdd at :func:`socket_path` (``socket``,
    ``$HERD_SOCKET``, the per-user socket, then the system one). When nobody
    answers there, a private herdd is started for it as libherd does
    (``$HERDD``; ``HERD_NO_AUTOSTART=1`` turns that off)."""
    path = socket_path(socket)
    resolved = resolve_settings(settings)
    try:
        return Master(Connection.open(path, "master", name=name, settings=settings), resolved)
    except HerdError as e:
        if not autostart_wanted(e):
            raise
    autostart(path, socket, resolved)
    return Master(Connection.open(path, "master", name=name, settings=settings), resolved)


def autostart_wanted(e: HerdError) -> bool:
    """Whether a failed connect to herdd calls for a private herdd (libherd's rule)."""
    return e.name == "connection_failed" and _autostart.enabled() and \
        e.data.get("errno") in (errno.ENOENT, errno.ECONNREFUSED)


def autostart(path: str, socket: Optional[str], resolved: Dict[str, int]) -> None:
    """Start a private herdd on ``path`` (blocking); raises HerdError."""
    default = not socket and not os.environ.get("HERD_SOCKET")
    try:
        _autostart.autostart(path, default, resolved["handshake_timeout_ms"] / 1000)
    except OSError as e:
        raise HerdError("connection_failed", f"starting herdd for {path}: {e}",
                        data={"errno": e.errno, "path": path}) from None
