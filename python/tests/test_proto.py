"""The wire's framing checks (PROTOCOL.md section 1) on what the package reads."""

import json
import socket

import pytest

import herd
from herd._proto import Connection

HELLO_REPLY = {"jsonrpc": "2.0", "id": 1, "result": {
    "version": 1, "server": "herdd", "pid": 1, "uid": 0, "connection": 1,
    "settings": {"max_message_size": 1024, "heartbeat_interval_ms": 0,
                 "heartbeat_timeout_ms": 0}}}


def connected(peer_lines):
    """A Connection whose peer already answered hello, then sent ``peer_lines``."""
    ours, theirs = socket.socketpair()
    theirs.sendall((json.dumps(HELLO_REPLY) + "\n").encode() + b"".join(peer_lines))
    s = herd.resolve_settings({"max_message_size": 1024, "heartbeat_interval_ms": 0,
                               "heartbeat_timeout_ms": 0})
    c = Connection.from_socket(ours, "master", s)
    sent = json.loads(theirs.recv(4096).decode().splitlines()[0])
    assert sent["method"] == "hello" and sent["params"]["role"] == "master"
    assert sent["params"]["settings"]["max_message_size"] == 1024
    return c, theirs


@pytest.mark.parametrize("line, name", [
    (b'{"jsonrpc":"2.0","method":"x","params":"' + b"a" * 2000 + b'"}\n', "message_too_large"),
    (b'{"jsonrpc":"2.0","method":"x","method":"y"}\n', "duplicate_key"),
    (b'{"jsonrpc":"2.0",\xff}\n', "invalid_utf8"),
    (b'{"jsonrpc":"2.0"\n', "parse_error"),
    (b'[1]\n', "invalid_request"),
])
def test_framing_errors_close(line, name):
    c, theirs = connected([b"\n  \r\n", line])
    with pytest.raises(herd.HerdError) as e:
        c.call("ping", timeout=5)
    assert e.value.name == name
    c.close()
    theirs.close()


def test_peer_limit_respected():
    c, theirs = connected([])
    with pytest.raises(herd.HerdError) as e:
        c.notify("x", {"text": "a" * 2000})
    assert e.value.name == "limit_exceeded"
    c.close()
    theirs.close()
