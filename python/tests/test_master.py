"""The Python master against a real herdd and herd-testworker (C)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import herd
from conftest import HERE, herd_error, running_herdd


def test_calls_of_every_kind(herdd, testworker):
    with herd.connect() as m:
        w = m.spawn(testworker, name="calc")
        assert w.name == "calc" and w.id.startswith("w")
        with w.connect(init={"user": "ann"}) as c:
            assert c.functions["sum"] == "call" and c.functions["count"] == "pipe"
            assert c.call("sum", {"n": 10}) == 45
            assert c.call("echo", {"a": [1, "é\n"]}) == {"a": [1, "é\n"]}
            c.notify("note", {"text": "from python"})
            s = c.stream("count", {"n": 4})
            assert list(s) == [0, 1, 2, 3]
            assert s.result == {"count": 4}
            st = c.stream("counter", {"n": 2})
            assert next(st) == 0 and st.initial
            assert next(st) == 1 and not st.initial
            assert list(st) == [] and st.result == {"count": 2}
            # The connection stays usable after an error reply.
            with pytest.raises(herd.HerdError) as e:
                c.call("product", {"n": 30})
            assert e.value.name == "function_failed" and e.value.code == -32012
            assert e.value.message == "product of 1..30 overflows"
            herd_error("invalid_params", c.call, "sum", {"n": "x"})
            herd_error("method_not_found", c.call, "nonesuch")
            assert c.call("sum", {"n": 3}) == 3


def test_stream_cancel(herdd, testworker):
    with herd.connect() as m:
        c = m.spawn(testworker).connect()
        s = c.stream("count", {"n": 10, "delay_ms": 1000})
        assert next(s) == 0
        t0 = time.monotonic()
        s.cancel()
        assert time.monotonic() - t0 < 5
        assert list(s) == []
        assert c.call("sum", {"n": 4}) == 6
        c.close()


def test_control_methods(herdd, testworker):
    with herd.connect(name="py-test") as m:
        w = m.spawn(testworker, args=["x"], shutdown_on="explicit", init={"scale": 1})
        listed = m.list()
        assert [x["id"] for x in listed] == [w.id]
        info = m.inspect(w.id)
        assert info["state"] == "ready" and info["argv"] == [testworker, "x"]
        assert info["pid"] == w.pid and info["shutdown_on"] == "explicit"
        assert info["owner"]["connection"] == m.connection
        assert m.stats()["workers"]["ready"] == 1
        end = w.shutdown()
        assert end["state"] == "exited" and end["reason"] == "shutdown"
        v = m.spawn(testworker)
        v.kill("KILL")
        ev = m.wait_event(lambda e: e["worker"]["id"] == v.id and e["event"] != "ready")
        assert ev["event"] == "killed" and ev["worker"]["reason"] == "killed"
        with pytest.raises(herd.HerdError) as e:
            m.inspect("w99")
        assert e.value.name == "worker_not_found" and e.value.data["id"] == "w99"
        assert m.stats()["failures"]["killed"] == 1


def test_spawn_passes_env_and_cwd(herdd, testworker, monkeypatch, tmp_path):
    monkeypatch.setenv("LC_PYTEST", "yes")
    monkeypatch.chdir(tmp_path)
    with herd.connect() as m:
        with m.spawn(testworker, env={"EXTRA": "1"}).connect() as c:
            assert c.call("env", {"name": "LC_PYTEST"}) == {"value": "yes"}
            assert c.call("env", {"name": "EXTRA"}) == {"value": "1"}
            assert c.call("env", {"name": "HOME"})["value"]
            assert c.call("cwd", {}) == {"cwd": str(tmp_path)}


def test_spawn_failure_is_an_exception(herdd):
    with herd.connect() as m:
        with pytest.raises(herd.HerdError) as e:
            m.spawn("/nonexistent")
        assert e.value.name == "spawn_failed" and e.value.data["stage"] == "exec"


def test_crash_reaches_on_failure(herdd, testworker):
    with herd.connect() as m:
        seen = []
        m.on_failure(seen.append)
        w = m.spawn(testworker)
        c = w.connect()
        herd_error("connection_closed", c.call, "sum", {"n": 1, "crash": True})
        m.wait_event(lambda ev: ev["event"] == "crashed")
        assert len(seen) == 1
        assert seen[0]["worker"]["id"] == w.id
        assert seen[0]["worker"]["reason"] == "crashed" and seen[0]["worker"]["signal"]
        assert any("crashes on n=1" in line for line in seen[0]["stderr_tail"])
        c.close()


def test_heartbeats_kept_while_blocked(herdd, testworker):
    fast = {"heartbeat_interval_ms": 100, "heartbeat_timeout_ms": 1000}
    with herd.connect(settings=fast) as m:
        w = m.spawn(testworker)
        # A call that blocks the master past the timeout: the pump answers heartbeats.
        with w.connect(settings=fast) as c:
            assert c.call("sleep", {"ms": 2500}) == {"slept_ms": 2500}
        # The caller computing outside herd: the heartbeat thread keeps herdd's side alive.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            pass
        assert m.inspect(w.id)["state"] == "ready"


MASTER_SCRIPT = textwrap.dedent("""
    import sys, herd
    m = herd.connect()
    ws = [m.spawn(sys.argv[1]) for _ in range(2)]
    print(" ".join(f"{w.id}:{w.pid}" for w in ws), flush=True)
    sys.stdin.read()
""")


def test_sigkilled_master_workers_vanish(herdd, testworker):
    with herd.connect() as watcher:
        watcher.subscribe(all=True)
        env = dict(os.environ, PYTHONPATH=os.path.dirname(HERE))
        p = subprocess.Popen([sys.executable, "-c", MASTER_SCRIPT, testworker],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        line = p.stdout.readline().split()
        ids = {x.split(":")[0] for x in line}
        assert len(ids) == 2
        p.send_signal(signal.SIGKILL)
        p.wait()
        for _ in range(len(ids)):
            ev = watcher.wait_event(lambda e: e["worker"]["id"] in ids and
                                    e["worker"]["state"] == "exited")
            assert ev["event"] == "stopped" and ev["worker"]["reason"] == "killed_orphan"
            ids.discard(ev["worker"]["id"])
        assert [w for w in watcher.list() if w["owner"]["pid"] == p.pid] == []
        p.stdin.close()
        p.stdout.close()


def test_close_says_goodbye(herdd, testworker):
    with herd.connect() as watcher:
        watcher.subscribe(all=True)
        m = herd.connect()
        w = m.spawn(testworker)
        m.close()
        ev = watcher.wait_event(lambda e: e["worker"]["id"] == w.id and e["event"] != "ready")
        assert ev["worker"]["reason"] == "master_closed"


def test_socket_path_rules(monkeypatch):
    monkeypatch.setenv("HERD_SOCKET", "/x/y.sock")
    assert herd.socket_path("/a.sock") == "/a.sock"
    assert herd.socket_path() == "/x/y.sock"
    monkeypatch.delenv("HERD_SOCKET")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    expect = "/run/herd/herdd.sock" if os.geteuid() == 0 else "/run/user/7/herd/herdd.sock"
    assert herd.socket_path() == expect
    # libherd's remote herdds are refused, never autostarted on as a path.
    monkeypatch.setenv("HERD_SOCKET", "ssh://h1")
    assert herd_error("connection_failed", herd.connect).data["path"] == "ssh://h1"
    herd_error("connection_failed", herd.socket_path, "exec:docker exec -i c herdd --stdio")


def test_no_herdd_is_an_exception(tmp_path, monkeypatch):
    monkeypatch.setenv("HERD_NO_AUTOSTART", "1")
    with pytest.raises(herd.HerdError) as e:
        herd.connect(str(tmp_path / "none.sock"))
    assert e.value.name == "connection_failed"


def test_rpc_settings_from_environment(monkeypatch):
    monkeypatch.setenv("HERD_RPC_SETTINGS", '{"heartbeat_interval_ms":2000}')
    s = herd.resolve_settings({"heartbeat_interval_ms": 500, "max_message_size": 1500})
    assert s["heartbeat_interval_ms"] == 2000 and s["max_message_size"] == 1500
    monkeypatch.setenv("HERD_RPC_SETTINGS", '{"bogus":1}')
    with pytest.raises(herd.HerdError):
        herd.resolve_settings()


def test_autostart_private_herdd(tmp_path, testworker, monkeypatch):
    from conftest import HERDD
    monkeypatch.setenv("HERDD", HERDD)
    sock = str(tmp_path / "auto.sock")
    with herd.connect(sock) as m:
        pid = m.herdd_pid
        pidfd = os.pidfd_open(pid)
        assert m.spawn(testworker).connect().call("sum", {"n": 5}) == 10
        assert os.getsid(pid) != os.getsid(0)  # detached: another session
    # Stopped by its pid, awaited through a pidfd (it is not our child).
    os.kill(pid, signal.SIGTERM)
    import select
    assert select.select([pidfd], [], [], 30)[0]
    os.close(pidfd)
    with pytest.raises(herd.HerdError) as e:
        herd.connect(str(tmp_path / "nodir" / "x.sock"))
    assert e.value.name == "connection_failed"


def test_handle_incarnation(herdd, testworker):
    """A restarted worker keeps its id and socket path: a handle of its first
    incarnation can neither kill, stop nor connect to the second (worker_not_found,
    no process touched); a handle made from the new record can."""
    with herd.connect() as m:
        old = m.spawn(testworker, shutdown_on="explicit", restart="always")
        assert old.incarnation == 1
        os.kill(old.pid, signal.SIGKILL)
        ev = m.wait_event(lambda e: e.get("event") == "ready" and
                          e["worker"].get("incarnation") == 2)
        new_pid = ev["worker"]["pid"]
        assert new_pid != old.pid
        herd_error("worker_not_found", old.kill, "KILL")
        herd_error("worker_not_found", old.shutdown)
        e = herd_error("worker_not_found", old.connect)
        assert f"pid {new_pid} serves its socket" in e.message
        record = m.inspect(old.id)
        assert record["state"] == "ready" and record["pid"] == new_pid
        os.kill(new_pid, 0)  # untouched
        cur = m.worker(record)
        assert (cur.id, cur.incarnation, cur.pid) == (old.id, 2, new_pid)
        with cur.connect() as c:
            assert c.call("sum", {"n": 3}) == 3
        end = cur.shutdown()
        assert end["reason"] == "shutdown" and end["incarnation"] == 2
        with pytest.raises(ValueError):
            m.worker(end)  # exited: no socket


def test_subscribe_replays_since_and_reports_gaps(tmp_path, monkeypatch, testworker):
    """subscribe's ``since`` replays what herdd's ring holds, a ``gap`` event
    says what it no longer holds (ring of 2 here), another ``instance``'s seq
    counts for nothing, and ``unsubscribe`` stops the extra events (4.7)."""
    with running_herdd(tmp_path, monkeypatch, "--event-ring", "2"), herd.connect() as m:
        for w in [m.spawn(testworker, shutdown_on="explicit") for _ in range(2)]:
            w.shutdown()
        start = m.subscribe()
        last = start["seq"]
        assert last >= 4 and len(start["instance"]) == 32
        with herd.connect() as late:
            assert late.subscribe(since=0) == start
            gap = late.wait_event(lambda e: e["event"] == "gap")
            assert (gap["reason"], gap["first"], gap["last"], gap["lost"]) == \
                ("since", 1, last - 2, last - 2)
            replayed = [late.wait_event(lambda e: "seq" in e)["seq"] for _ in range(2)]
            assert replayed == [last - 1, last]
            err = herd_error("invalid_params", late.subscribe, True, last + 1)
            assert err.data["seq"] == last
            late.subscribe(since=last, instance="0" * 32)
            gap = late.wait_event(lambda e: e["event"] == "gap")
            assert (gap["reason"], gap["first"], gap["last"]) == ("instance", 1, last - 2)
            late.unsubscribe()
            other = m.spawn(testworker)
            own = late.spawn(testworker)
            late.wait_event(lambda e: e["event"] == "ready" and e["worker"]["id"] == own.id)
            # Events come in seq order: other's ready (earlier) would be here by now.
            assert not [e for e in late.events if e.get("worker", {}).get("id") == other.id]


def test_spawn_passes_every_option(herdd, tmp_path):
    """The spawn params of PROTOCOL.md 4.2 reach herdd as given: a program that
    is no herd worker (``ready`` exec), restart policy, limits, a capped output
    file, umask, pool, timeouts."""
    out = str(tmp_path / "out.log")
    with herd.connect() as m:
        w = m.spawn("/bin/sleep", args=["30"], name="nap", ready="exec", shutdown_on="explicit",
                    restart={"policy": "on-failure", "delay_ms": 50, "burst": 3},
                    limits={"nofile": 64, "pids_max": 16},
                    stdout={"file": out, "max_bytes": 4096, "max_files": 2},
                    umask=0o077, pool="naps", spawn_timeout_ms=5000)
        info = m.inspect(w.id)
        assert info["state"] == "ready" and info["name"] == "nap" and info["pool"] == "naps"
        assert info["argv"] == ["/bin/sleep", "30"] and info["ready"] == "exec"
        assert info["shutdown_on"] == "explicit" and info["restart"]["policy"] == "on-failure"
        assert info["limits"]["nofile"] == {"value": 64, "enforced_by": "rlimit"}
        assert info["limits"]["pids_max"]["value"] == 16
        with open(f"/proc/{w.pid}/status") as f:
            assert "Umask:\t0077" in f.read()
        with open(f"/proc/{w.pid}/limits") as f:
            nofile = [line for line in f if line.startswith("Max open files")][0]
        assert nofile.split()[3:5] == ["64", "64"]
        assert os.path.exists(out)
        w.shutdown()
        # restart needs shutdown_on explicit: herdd's refusal comes back as it named it.
        herd_error("invalid_params", lambda: m.spawn("/bin/sleep", ["30"], ready="exec",
                                                     restart="always"))


def test_spawn_in_a_pid_namespace(herdd, testworker):
    # The worker is pid 1 of its own namespace; herdd and the handle give its host pid.
    with herd.connect() as m:
        w = m.spawn(testworker, pid_namespace=True)
        assert m.inspect(w.id)["containment"]["pid_namespace"] is True
        with w.connect() as c:
            assert c.call("pid")["pid"] == 1
        assert os.path.exists(f"/proc/{w.pid}")


def test_logs_events_and_any_method(herdd, testworker):
    """``logs`` (4.6), ``on_event`` (every event, not only failures) and
    ``request`` (any control method by name)."""
    with herd.connect() as m:
        seen = []
        m.on_event(seen.append)
        w = m.spawn(testworker)
        with w.connect() as c:
            c.notify("note", {"text": "hello logs"})
            assert c.call("sum", {"n": 2}) == 1  # after the note, on one connection
        assert m.logs(w.id) == ["info: hello logs"]
        herd_error("invalid_params", m.logs, w.id, "stdout")  # not captured
        herd_error("invalid_params", m.logs, w.id, "stderr", 0)
        assert m.request("ping") == {}
        herd_error("method_not_found", m.request, "nonesuch")
        w.kill("KILL")
        m.wait_event(lambda e: e["event"] == "killed")
        assert [e["event"] for e in seen] == ["ready", "killed"]
        assert all(e["worker"]["id"] == w.id for e in seen)
