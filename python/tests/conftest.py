"""Fixtures: a private herdd per test, on a socket in a temporary directory."""

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


def _wait_listening(proc, path, timeout=10.0):
    """herdd binds at start-up: its readiness is a connectable socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"herdd exited with {proc.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return
            except OSError:
                pass
        # Nothing to wait on before herdd binds but the clock.
        time.sleep(0.01)
    raise RuntimeError(f"herdd did not listen on {path}")


@pytest.fixture
def herdd(tmp_path, monkeypatch):
    """The socket path of a fresh herdd, also in $HERD_SOCKET."""
    sock = str(tmp_path / "herdd.sock")
    log = open(tmp_path / "herdd.log", "w")
    env = dict(os.environ)
    env.pop("HERD_RPC_SETTINGS", None)
    proc = subprocess.Popen([HERDD, "--socket", sock], stderr=log, env=env)
    try:
        _wait_listening(proc, sock)
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
def testworker():
    return TESTWORKER


def herd_error(name, fn, *args):
    """The HerdError ``fn(*args)`` raises, checked to be named ``name``."""
    import herd
    with pytest.raises(herd.HerdError) as e:
        fn(*args)
    assert e.value.name == name, e.value
    return e.value
