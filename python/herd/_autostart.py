"""A private herdd on demand, as libherd starts one
(libclient/master/master-autostart.c): when a master finds nobody on its
control socket, it starts herdd for that socket, fully detached (double fork
and setsid), with ``--exit-idle-ms``, and waits for its READY=1 on a private
notify socket. When two masters race, herdd's lock file lets one win; the
loser's starter sees its herdd exit and waits for the winner's socket."""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import tempfile
import time
from typing import Optional

AUTOSTART_IDLE_MS = 10000
_DROPPED_ENV = ("NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES",
                "WATCHDOG_PID", "WATCHDOG_USEC")


def enabled() -> bool:
    return os.environ.get("HERD_NO_AUTOSTART") != "1"


def _herdd() -> Optional[str]:
    exe = os.environ.get("HERDD")
    if exe:
        return exe
    try:
        from ._config import BINDIR  # written by meson at install
        return os.path.join(BINDIR, "herdd")
    except ImportError:
        return shutil.which("herdd")


def _idle_ms() -> str:
    v = os.environ.get("HERD_AUTOSTART_IDLE_MS", "")
    return v if v.isdigit() and 0 < int(v) <= 86400000 else str(AUTOSTART_IDLE_MS)


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def _spawn_detached(argv: list, env: dict, log_path: str) -> int:
    """herdd as a grandchild in its own session; returns a pidfd for it."""
    r, w = os.pipe()
    mid = os.fork()
    if mid == 0:
        try:
            os.setsid()
            pid = os.fork()
            if pid == 0:
                null = os.open(os.devnull, os.O_RDWR)
                log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                              0o600)
                os.dup2(null, 0)
                os.dup2(null, 1)
                os.dup2(log, 2)
                os.execve(argv[0], argv, env)
            os.write(w, str(pid).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = os.read(r, 32)
    os.close(r)
    os.waitpid(mid, 0)
    if not data:
        raise OSError(errno.ECHILD, "herdd could not be started")
    return os.pidfd_open(int(data))


def autostart(path: str, default_path: bool, timeout: float) -> None:
    """Start herdd on ``path`` and return once it answers; raises OSError."""
    deadline = time.monotonic() + timeout
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        # The default directory is created; elsewhere a missing one is a typo.
        if not default_path:
            raise FileNotFoundError(errno.ENOENT, "no such directory", parent)
        os.makedirs(parent, 0o700, exist_ok=True)
    exe = _herdd()
    if not exe:
        raise FileNotFoundError(errno.ENOENT, "herdd not found ($HERDD, PATH)")
    base = next((d for d in (os.environ.get("XDG_RUNTIME_DIR"), os.environ.get("TMPDIR"))
                 if d and d.startswith("/")), "/tmp")
    with tempfile.TemporaryDirectory(prefix="herd-start-", dir=base) as tmp:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            notify.bind(os.path.join(tmp, "notify"))
            env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
            env["NOTIFY_SOCKET"] = os.path.join(tmp, "notify")
            pidfd = _spawn_detached([exe, "--socket", path, "--exit-idle-ms", _idle_ms()],
                                    env, os.path.join(parent, "herdd.log"))
            try:
                ready = _wait_ready(notify, pidfd, deadline)
            finally:
                os.close(pidfd)
        finally:
            notify.close()
    if not ready:
        _wait_for_winner(path, deadline)


def _wait_ready(notify: socket.socket, pidfd: int, deadline: float) -> bool:
    """True on READY=1, False when our herdd exited first (another won the lock)."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(errno.ETIMEDOUT, "herdd did not get ready")
        ready, _, _ = select.select([notify, pidfd], [], [], left)
        if notify in ready:
            msg = notify.recv(4096).decode(errors="replace")
            if msg.startswith("READY=1") or "\nREADY=1" in msg:
                return True
        elif ready:
            return False


def _wait_for_winner(path: str, deadline: float) -> None:
    # Python has no inotify: the winner's socket is tried on a short tick.
    while not _answers(path):
        if time.monotonic() >= deadline:
            raise TimeoutError(errno.ETIMEDOUT, "no herdd answered on " + path)
        time.sleep(0.005)
