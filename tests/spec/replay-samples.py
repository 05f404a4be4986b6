#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Replays every sample exchange in PROTOCOL.md against a real herdd.

usage: replay-samples.py PROTOCOL.md HERDD HERD-TESTWORKER [README.md]

The conventions it reads are PROTOCOL.md's own (section 0, "Samples"): an
indented block of "> " (sent) and "< " (received) lines is a sample, and the
HTML comment just above it says where it is replayed ("<!-- replay: NAME -->")
or why it is not ("<!-- not replayed: REASON -->"). A block holding a JSON-RPC
message with neither comment fails the test, so every sample is either checked
or explicitly excused.

Connections are opened by name on first use and kept to the end: a name
starting "herdd" connects to the private herdd, "worker" to the socket of the
last worker a replayed spawn returned; "sh" runs the block as a shell script
(with $sock set) that must succeed. Sent lines go out as written, except that
/usr/local/libexec/herd/herd-testworker is the build's herd-testworker. Each
received line must match one message that arrived on that connection (first
match in arrival order; heartbeats skipped): objects key for key, "..." standing
for further members (or array elements), a placeholder such as <pid> for any
value but null, and one such as <signal?> for any value, null included. Replies (messages with an id) that no sample shows fail the
test too; notifications the samples leave out (events, stream items after a
cancel) are allowed.

With README.md, its "socat - UNIX-CONNECT:..." block is also run as written,
with XDG_RUNTIME_DIR pointing at the private herdd's directory.
"""
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

INSTALLED_TESTWORKER = "/usr/local/libexec/herd/herd-testworker"
MORE = "$more"
PLACEHOLDER = "$placeholder"
DEADLINE_S = 10.0


class Fail(Exception):
    pass


# ---- reading PROTOCOL.md ----


def blocks(text):
    """Yields (line number, marker or None, [lines]) for every indented block."""
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        if lines[i].startswith("    ") and lines[i].strip() and (i == 0 or not lines[i - 1].strip()):
            start, body = i, []
            indent = len(lines[i]) - len(lines[i].lstrip(" "))
            while i < len(lines) and (lines[i].startswith(" " * indent) or not lines[i].strip()):
                body.append(lines[i][indent:])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            marker = None
            j = start - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            m = re.match(r"\s*<!-- (replay: \S+|not replayed: .+) -->\s*$", lines[j]) if j >= 0 else None
            if m:
                marker = m.group(1)
            yield start + 1, marker, body
        else:
            i += 1


def pattern(line):
    """Parses a received line: "..." and <name> placeholders, outside strings."""
    out, stack, i, n = [], [], 0, len(line)
    while i < n:
        c = line[i]
        if c == '"':
            j = i + 1
            while line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            out.append(line[i : j + 1])
            i = j + 1
            continue
        if c in "{[":
            stack.append(c)
        elif c in "}]":
            stack.pop()
        if line.startswith("...", i):
            out.append('"%s":true' % MORE if stack[-1] == "{" else '"%s"' % MORE)
            i += 3
            continue
        m = re.match(r"<([a-z_]+)(\??)>", line[i:])
        if m:
            out.append(json.dumps({PLACEHOLDER: m.group(1), "null": m.group(2) == "?"}))
            i += m.end()
            continue
        out.append(c)
        i += 1
    return json.loads("".join(out))


def match(want, got):
    if isinstance(want, dict) and PLACEHOLDER in want:
        return want["null"] or got is not None
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return False
        keys = set(want) - {MORE}
        if MORE not in want and keys != set(got):
            return False
        return all(k in got and match(want[k], got[k]) for k in keys)
    if isinstance(want, list):
        if not isinstance(got, list):
            return False
        if want and want[-1] == MORE:
            want = want[:-1]
            if len(got) < len(want):
                return False
            got = got[: len(want)]
        return len(want) == len(got) and all(match(w, g) for w, g in zip(want, got))
    return type(want) is type(got) and want == got


# ---- connections ----


class Conn:
    def __init__(self, name, path):
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.connect(path)
        self.buf = b""
        self.queue = []
        self.eof = False

    def send(self, line):
        self.sock.sendall(line.encode() + b"\n")

    def read(self, until):
        """Reads what arrives before the monotonic deadline until; False at EOF or timeout."""
        while not self.eof:
            left = until - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                return False
            data = self.sock.recv(65536)
            if not data:
                self.eof = True
                return False
            self.buf += data
            while b"\n" in self.buf:
                raw, self.buf = self.buf.split(b"\n", 1)
                msg = json.loads(raw)
                if msg.get("method") != "heartbeat":
                    self.queue.append(msg)
            return True
        return False

    def expect(self, want):
        until = time.monotonic() + DEADLINE_S
        while True:
            for k, got in enumerate(self.queue):
                if match(want, got):
                    return self.queue.pop(k)
            if not self.read(until):
                raise Fail(
                    "%s: no message matched\n  want: %s\n  got:  %s"
                    % (self.name, json.dumps(want), "\n        ".join(json.dumps(m) for m in self.queue) or "nothing")
                )

    def unshown_replies(self):
        self.read(time.monotonic() + 0.2)
        return [m for m in self.queue if "id" in m and "method" not in m]


class Replay:
    def __init__(self, tmp, herdd_sock, testworker):
        self.tmp = tmp
        self.herdd_sock = herdd_sock
        self.testworker = testworker
        self.conns = {}
        self.worker_sock = None

    def conn(self, name):
        if name not in self.conns:
            if name.startswith("herdd"):
                path = self.herdd_sock
            elif name.startswith("worker"):
                if not self.worker_sock:
                    raise Fail("%s: no worker spawned yet" % name)
                path = self.worker_sock
            else:
                raise Fail("unknown connection name %s" % name)
            self.conns[name] = Conn(name, path)
        return self.conns[name]

    def run_sh(self, where, body):
        env = dict(os.environ, sock=self.herdd_sock, XDG_RUNTIME_DIR=self.tmp)
        r = subprocess.run(["sh", "-ec", "\n".join(body)], env=env, capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Fail("%s: the shell sample failed (%d): %s" % (where, r.returncode, r.stderr.strip()))
        return r.stdout

    def block(self, where, name, body):
        if name == "sh":
            self.run_sh(where, body)
            return
        c = self.conn(name)
        for line in body:
            if line.startswith("> "):
                c.send(line[2:].replace(INSTALLED_TESTWORKER, self.testworker))
            elif line.startswith("< "):
                try:
                    got = c.expect(pattern(line[2:]))
                except Fail as e:
                    raise Fail("%s: %s" % (where, e))
                res = got.get("result")
                if isinstance(res, dict) and isinstance(res.get("socket"), str) and "pid" in res:
                    self.worker_sock = res["socket"]
            else:
                raise Fail("%s: a sample line must start with '> ' or '< ': %s" % (where, line))


def replay_protocol(text, replay):
    replayed = excused = 0
    for lineno, marker, body in blocks(text):
        where = "PROTOCOL.md:%d" % lineno
        samples = any(l.startswith(("> ", "< ")) for l in body)
        if not marker:
            if samples or any('"jsonrpc"' in l for l in body):
                raise Fail("%s: a sample without <!-- replay: NAME --> or <!-- not replayed: REASON -->" % where)
            continue
        if marker.startswith("not replayed"):
            excused += 1
            continue
        replay.block(where, marker.split(": ", 1)[1], body)
        replayed += 1
    for c in replay.conns.values():
        left = c.unshown_replies()
        if left:
            raise Fail("%s: replies no sample shows:\n  %s" % (c.name, "\n  ".join(json.dumps(m) for m in left)))
    print("PROTOCOL.md: %d samples replayed, %d marked not replayable" % (replayed, excused))


def replay_readme(text, replay):
    """Runs README's socat block: the command line, then its input lines."""
    for lineno, _, body in blocks(text):
        if body and body[0].startswith("socat - UNIX-CONNECT:"):
            cmd = body[0] + " <<'EOF'\n" + "\n".join(body[1:]) + "\nEOF"
            out = replay.run_sh("README.md:%d" % lineno, [cmd])
            ids = [json.loads(l).get("id") for l in out.splitlines() if "result" in json.loads(l)]
            want = [json.loads(l)["id"] for l in body[1:]]
            if ids != want:
                raise Fail("README.md:%d: results for ids %s, not %s:\n%s" % (lineno, ids, want, out))
            print("README.md:%d: the socat session answers %d requests" % (lineno, len(want)))
            return
    raise Fail("README.md has no socat block")


def wait_for_socket(path, proc):
    until = time.monotonic() + DEADLINE_S
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise Fail("herdd exited with %d" % proc.returncode)
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.connect(path)
            s.close()
            return
        except OSError:
            # herdd binds at start-up; its readiness is a connectable socket.
            select.select([], [], [], 0.01)
    raise Fail("herdd did not listen on %s" % path)


def main():
    if len(sys.argv) not in (4, 5):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    protocol, herdd, testworker = sys.argv[1:4]
    tmp = tempfile.mkdtemp(prefix="herd-spec.")
    sock = os.path.join(tmp, "herd", "herdd.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERD_")}
    proc = subprocess.Popen([herdd, "--socket", sock], env=env, stderr=open(os.path.join(tmp, "herdd.log"), "w"))
    try:
        wait_for_socket(sock, proc)
        replay = Replay(tmp, sock, os.path.abspath(testworker))
        with open(protocol) as f:
            replay_protocol(f.read(), replay)
        if len(sys.argv) == 5:
            with open(sys.argv[4]) as f:
                replay_readme(f.read(), replay)
        return 0
    except Fail as e:
        print("FAIL: %s" % e, file=sys.stderr)
        with open(os.path.join(tmp, "herdd.log")) as f:
            sys.stderr.write("herdd's log:\n" + f.read()[-4000:])
        return 1
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
