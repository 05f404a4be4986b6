"""Fixtures: a private herdd per test, on a socket in a temporary directory."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

ROOT = os.path.dirname(os.path.dirname(HERE))
HERDD = os.environ.get("HERDD", os.path.join(ROOT, "build", "daemon", "herdd"))
TESTWORKER = os.environ.get("HERD_TESTWORKER",
                            os.path.join(ROOT, "build", "tests", "worker", "herd-testworker"))


def _start(argv, env, log, notify_path, timeout=10.0):
    """herdd, once it said READY=1 on notify_path (as the autostart waits for it)."""
    from herd._autostart import _wait_ready
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    proc = subprocess.Popen(argv, stderr=log, env=dict(env, NOTIFY_SOCKET=notify_path))
    pidfd = os.pidfd_open(proc.pid)
    try:
        ready = _wait_ready(notify, pidfd, time.monotonic() + timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(pidfd)
        notify.close()
    if not ready:
        raise RuntimeError(f"herdd exited with {proc.wait()}")
    return proc


@contextlib.contextmanager
def running_herdd(tmp_path, monkeypatch, *options):
    """A fresh herdd started with ``options``, its socket path also in
    $HERD_SOCKET; it must stop cleanly (exit 0) on SIGTERM at the end."""
    sock = str(tmp_path / "herdd.sock")
    log = open(tmp_path / "herdd.log", "w")
    env = dict(os.environ)
    env.pop("HERD_RPC_SETTINGS", None)
    proc = _start([HERDD, "--socket", sock, *options], env, log, str(tmp_path / "notify"))
    try:
        monkeypatch.setenv("HERD_SOCKET", sock)
        yield sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        log.close()
        assert rc == 0, (tmp_path / "herdd.log").read_text()[-4000:]


@pytest.fixture
def herdd(tmp_path, monkeypatch):
    """The socket path of a fresh herdd, also in $HERD_SOCKET."""
    with running_herdd(tmp_path, monkeypatch) as sock:
        yield sock


@pytest.fixture
def testworker():
    return TESTWORKER


def herd_error(name, fn, *args):
    """The HerdError ``fn(*args)`` raises, checked to be named ``name``."""
    import herd
    with pytest.raises(herd.HerdError) as e:
        fn(*args)
    assert e.value.name == name, e.value
    return e.value


# herd-testworker's Python twin (herd.serve): the same functions as the C one.
PYTESTWORKER = os.path.join(HERE, "testworker", "herd-testworker")


@pytest.fixture(params=["c", "python"])
def anyworker(request):
    """herd-testworker, then its Python twin: a test holds both to one behaviour."""
    return TESTWORKER if request.param == "c" else PYTESTWORKER
