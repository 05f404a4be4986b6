"""The master side: a session with herdd (PROTOCOL.md section 4) and
connections to the workers it spawns (section 6)."""

from __future__ import annotations

import errno
import fnmatch
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional

from . import _autostart
from ._proto import Connection, HerdError, resolve_settings

EventCallback = Callable[[Dict[str, Any]], None]

# Events libherd's on_failure reports (libclient/master/master.c event_is_failure).
FAILURE_EVENTS = frozenset({"crashed", "failed", "heartbeat_lost", "spawn_timeout",
                            "init_failed", "killed", "host_lost"})
# What libherd's spawn passes from the master's environment by default (4.2).
DEFAULT_INHERIT_ENV = ("PATH", "LANG", "TZ", "LC_*")
_REFUSED_ENV = ("HERD_*", "NOTIFY_SOCKET", "LISTEN_*", "WATCHDOG_*")


def socket_path(socket: Optional[str] = None) -> str:
    """herdd's control socket: the argument, ``$HERD_SOCKET``, then the per-user
    socket (not for root), then the system one, as libherd chooses it."""
    if socket:
        return socket
    env = os.environ.get("HERD_SOCKET")
    if env:
        return env
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


class Master:
    """A master session with herdd. Use :func:`connect`."""

    def __init__(self, conn: Connection, settings: Dict[str, int]) -> None:
        self._conn = conn
        self.settings = settings  # resolved (3.3); each spawn passes them on
        self._failure_cbs: List[EventCallback] = []
        self._event_cbs: List[EventCallback] = []
        self.events: List[Dict[str, Any]] = []
        conn.on_notification("event", self._on_event)

    @property
    def herdd_pid(self) -> int:
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
        this master waits in one of its methods or in :meth:`poll`."""
        self._failure_cbs.append(callback)

    def on_event(self, callback: EventCallback) -> None:
        """Call ``callback(event)`` for every event this session receives."""
        self._event_cbs.append(callback)

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
            for i, ev in enumerate(self.events):
                if predicate(ev):
                    return self.events.pop(i)
            if self._conn.closed:
                raise self._conn.closed
            if not self._conn.pump(deadline):
                raise HerdError("timeout", f"no such event within {timeout} s",
                                data={"what": "event"})

    def request(self, method: str, params: Any = None) -> Any:
        """Any control method of PROTOCOL.md section 4, by name."""
        return self._conn.call(method, params)

    def spawn(self, path: str, args: Optional[List[str]] = None, init: Any = None,
              name: Optional[str] = None, *, inherit_env: Any = DEFAULT_INHERIT_ENV,
              inherit_cwd: bool = True, **options: Any) -> "Worker":
        """Start a worker and return once it is ready.

        ``args`` follow argv[0] (= ``path``); ``options`` are the other spawn
        params of PROTOCOL.md 4.2 (``env``, ``cwd``, ``shutdown_on``,
        ``restart``, ``settings``...). As libherd does, the variables named by
        ``inherit_env`` join ``env`` and the working directory becomes ``cwd``.
        """
        return Worker(self, self._conn.call("spawn", self._spawn_params(
            path, args, init, name, inherit_env=inherit_env, inherit_cwd=inherit_cwd,
            **options)))

    def _spawn_params(self, path: str, args: Optional[List[str]] = None, init: Any = None,
                      name: Optional[str] = None, *, inherit_env: Any = DEFAULT_INHERIT_ENV,
                      inherit_cwd: bool = True, **options: Any) -> Dict[str, Any]:
        """The params of :meth:`spawn` (a pool sends several before reading a reply)."""
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
        params["settings"] = dict(self.settings, **options.pop("settings", {}))
        params.update(options)
        return params

    def list(self, all: bool = False) -> List[Dict[str, Any]]:
        """The visible workers (WORKER objects, 4.3); exited records too with ``all``."""
        return self._conn.call("list", {"all": all})["workers"]

    def inspect(self, id: str) -> Dict[str, Any]:
        return self._conn.call("inspect", {"id": id})

    def kill(self, id: str, signal: Any = "TERM") -> None:
        self._conn.call("kill", {"id": id, "signal": signal})

    def shutdown(self, id: str) -> Dict[str, Any]:
        """Stop a worker gracefully; returns its final WORKER record."""
        return self._conn.call("shutdown", {"id": id})

    def logs(self, id: str, stream: str = "stderr", lines: int = 100) -> List[str]:
        return self._conn.call("logs", {"id": id, "stream": stream, "lines": lines})["lines"]

    def stats(self) -> Dict[str, Any]:
        return self._conn.call("stats")

    def subscribe(self, all: bool = True) -> Dict[str, Any]:
        return self._conn.call("subscribe", {"all": all})

    def close(self) -> None:
        """End the session on purpose: its workers stop as ``master_closed`` (4.1)."""
        if not self._conn.closed:
            try:
                self._conn.notify("goodbye")
            except HerdError:
                pass
        self._conn.close()

    def __enter__(self) -> "Master":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Worker:
    """A spawned worker: its ``id``, ``pid``, ``socket`` and ``name``."""

    def __init__(self, master: Master, result: Dict[str, Any]) -> None:
        self.master = master
        self.id: str = result["id"]
        self.pid: int = result["pid"]
        self.socket: str = result["socket"]
        self.name: str = result.get("name", "")
        self.incarnation: int = result.get("incarnation", 1)

    def connect(self, init: Any = None, name: Optional[str] = None,
                settings: Optional[Dict[str, int]] = None) -> "WorkerConnection":
        """A client connection to this worker; ``init`` is the connection-state init,
        ``settings`` the connection settings asked for (3.4)."""
        return WorkerConnection(Connection.open(self.socket, "client", name=name, init=init,
                                                settings=settings))

    def inspect(self) -> Dict[str, Any]:
        return self.master.inspect(self.id)

    def kill(self, signal: Any = "TERM") -> None:
        self.master.kill(self.id, signal)

    def shutdown(self) -> Dict[str, Any]:
        return self.master.shutdown(self.id)

    def __repr__(self) -> str:
        return f"<herd.Worker {self.id} {self.name} pid {self.pid}>"


class WorkerConnection:
    """A client connection to a worker's socket (PROTOCOL.md section 6)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

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

    def stream(self, fn: str, arg: Any = None) -> "Stream":
        """Open a pipe or state stream; iterate over its items."""
        return Stream(self._conn, fn, arg)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "WorkerConnection":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Stream:
    """A server stream: iterating yields items; :attr:`result` is the final reply.

    ``initial`` is True after the first item of a state stream was yielded.
    """

    def __init__(self, conn: Connection, fn: str, arg: Any) -> None:
        self._conn = conn
        self._id = conn.open_stream(fn, arg)
        self._cancelled = False
        self._done = False
        self.result: Any = None
        self.initial = False

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._conn.next_item(self._id)
        if item is not None and not self._cancelled:
            self.initial = bool(item.get("initial"))
            return item.get("item")
        self._finish()
        raise StopIteration

    def _finish(self) -> None:
        self._done = True
        try:
            self.result = self._conn.wait(self._id)
        except HerdError as e:
            if not (self._cancelled and e.name == "cancelled"):
                raise

    def cancel(self) -> None:
        """Ask the worker to end the stream; items still on the way are dropped."""
        if not self._done and not self._cancelled:
            self._cancelled = True
            self._conn.notify("herd.cancel", {"id": self._id})
            self._finish()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cancel()


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
        if e.name != "connection_failed" or not _autostart.enabled() or \
                e.data.get("errno") not in (errno.ENOENT, errno.ECONNREFUSED):
            raise
    default = not socket and not os.environ.get("HERD_SOCKET")
    try:
        _autostart.autostart(path, default, resolved["handshake_timeout_ms"] / 1000)
    except OSError as e:
        raise HerdError("connection_failed", f"starting herdd for {path}: {e}",
                        data={"errno": e.errno, "path": path}) from None
    return Master(Connection.open(path, "master", name=name, settings=settings), resolved)
