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
    # The hello line only: what the connection answers after it is the test's.
    first = theirs.recv(4096, socket.MSG_PEEK)
    sent = json.loads(theirs.recv(first.index(b"\n") + 1))
    assert sent["method"] == "hello" and sent["params"]["role"] == "master"
    assert sent["params"]["settings"]["max_message_size"] == 1024
    return c, theirs


@pytest.mark.parametrize("line, name", [
    (b'{"jsonrpc":"2.0","method":"x","params":"' + b"a" * 2000 + b'"}\n', "message_too_large"),
    (b'{"jsonrpc":"2.0","method":"x","method":"y"}\n', "duplicate_key"),
    (b'{"jsonrpc":"2.0",\xff}\n', "invalid_utf8"),
    (b'{"jsonrpc":"2.0"\n', "parse_error"),
    (b'[1]\n', "invalid_request"),
    (b'{"jsonrpc":"2.0","method":"x","params":["\\u0000"]}\n', "nul_byte"),
    (b'{"jsonrpc":"2.0","method":"x","params":' + b"[" * 65 + b"]" * 65 + b'}\n', "too_deep"),
    (b'{"jsonrpc":"2.0","method":"x","params":[1e400]}\n', "parse_error"),
    (b'{"jsonrpc":"2.0","method":"x","params":[NaN]}\n', "parse_error"),
    (b'{"jsonrpc":"2.0","method":"x","params":["\\ud800"]}\n', "parse_error"),
])
def test_framing_errors_close(line, name):
    c, theirs = connected([b"\n  \r\n", line])
    with pytest.raises(herd.HerdError) as e:
        c.call("ping", timeout=5)
    assert e.value.name == name
    # The peer heard why (section 1): an id-null error, then the close.
    lines = b"".join(iter(lambda: theirs.recv(4096), b"")).decode().splitlines()
    last = json.loads(lines[-1])
    assert last["id"] is None and last["error"]["data"]["name"] == name
    c.close()
    theirs.close()


def test_malformed_messages_answered():
    c, theirs = connected([
        b'{"jsonrpc":"2.0","id":9007199254740993,"method":"x"}\n',
        b'{"jsonrpc":"1.0","id":"a","method":"x"}\n',
        b'{"jsonrpc":"2.0","id":3,"method":"x","extra":1}\n',
        b'{"jsonrpc":"2.0","id":4,"method":"x"}\n',
    ])
    # The connection stays: a call after them is answered.
    theirs.sendall(b'{"jsonrpc":"2.0","id":2,"result":"pong"}\n')
    assert c.call("ping", timeout=5) == "pong"
    got = [json.loads(x) for x in theirs.recv(65536).decode().splitlines()]
    assert [(m["id"], m["error"]["data"]["name"]) for m in got if "error" in m] == \
        [(None, "invalid_request"), ("a", "invalid_request"), (3, "invalid_request"),
         (4, "method_not_found")]
    c.close()
    theirs.close()


def test_peer_limit_respected():
    c, theirs = connected([])
    with pytest.raises(herd.HerdError) as e:
        c.notify("x", {"text": "a" * 2000})
    assert e.value.name == "limit_exceeded"
    c.close()
    theirs.close()
