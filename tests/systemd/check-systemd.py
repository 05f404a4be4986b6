#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""herdd under a real systemd (issue 18).

Installs this build into a private DESTDIR, boots a throw-away Debian
container whose PID 1 is systemd 252 (shared/testbed/systemd.sh) with the
installed prefix bind-mounted at its configured path, installs the real
system and user units, and drives systemctl, journalctl, herdctl and a
master (sum-demo) inside it: socket activation, READY/STATUS, stop with
STOPPING=1 and every descendant gone, restart after SIGKILL, the start
limit, the watchdog, Delegate=yes, journal priorities, the user units, and
systemd-analyze security. It prints what each check measured.

usage: check-systemd.py MESON BUILD_ROOT SOURCE_ROOT PREFIX SUM_DEMO THRESHOLD
Exits 77 (skipped) only where no container can be booted: not root, no
systemd.sh, or no Debian rootfs could be made (no network, no debootstrap).
HERD_SYSTEMD_KEEP=1 leaves the container up for a look afterwards.
"""
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
# herd's libraries, the PAM module a lingering user's manager needs, and
# python3's full library for probe.py (the rootfs has python3-minimal).
PACKAGES = "libev4 libjansson4 libpam-systemd python3"
USER, UID = "herdtest", 4242

failures = []
figures = []


class Fail(Exception):
    pass


class Terminated(BaseException):
    """meson's timeout: skips every later step, still brings the container down."""


def skip(why):
    print("SKIP: " + why)
    sys.exit(SKIP)


def check(cond, what):
    if not cond:
        raise Fail(what)
    print("PASS: " + what, flush=True)


def figure(name, seconds):
    figures.append((name, seconds))
    print("  measured: %s: %.3f s" % (name, seconds), flush=True)


def find_systemd_sh(src):
    if os.environ.get("HERD_SYSTEMD_SH"):
        return os.environ["HERD_SYSTEMD_SH"]
    d = os.path.abspath(src)
    while True:
        p = os.path.join(d, "shared", "testbed", "systemd.sh")
        if os.access(p, os.X_OK):
            return p
        if d == os.path.dirname(d):
            return None
        d = os.path.dirname(d)


class Box:
    """The container, through systemd.sh with a private testbed directory."""

    def __init__(self, script, tmp, rootfs):
        self.script = script
        self.env = dict(os.environ, HERD_TESTBED_DIR=os.path.join(tmp, "testbed"),
                        HERD_SYSTEMD_ROOTFS=rootfs, HERD_SYSTEMD_PACKAGES=PACKAGES)
        self.units = os.path.join(tmp, "testbed", "systemd", "units")
        self.probe = os.path.join(tmp, "probe.py")

    def sd(self, *args, check=True, timeout=120):
        r = subprocess.run([self.script] + list(args), env=self.env, capture_output=True,
                           text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise Fail("%s: exit %d: %s%s" % (" ".join(args[:6]), r.returncode, r.stdout,
                                              r.stderr))
        return r

    def run(self, *cmd, check=True, timeout=120):
        return self.sd("run", *cmd, check=check, timeout=timeout).stdout

    def as_user(self, *cmd, check=True, timeout=120):
        return self.run("setpriv", "--reuid=%d" % UID, "--regid=%d" % UID, "--init-groups",
                        "env", "HOME=/home/" + USER, "XDG_RUNTIME_DIR=/run/user/%d" % UID,
                        *cmd, check=check, timeout=timeout)

    def probe_json(self, *args, user=False, timeout=120):
        if user:
            out = self.as_user("env", "PROBE_USER=1", "python3", self.probe, *args,
                               timeout=timeout)
        else:
            out = self.run("python3", self.probe, *args, timeout=timeout)
        return json.loads(out.strip().splitlines()[-1])

    def show(self, unit, *props, user=False):
        cmd = ["systemctl"] + (["--user"] if user else []) + ["show", "-p", ",".join(props),
                                                                unit]
        out = self.as_user(*cmd) if user else self.run(*cmd)
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait(self, unit, timeout, user=False, **want):
        r = self.probe_json("wait", unit, str(timeout),
                            *["%s=%s" % kv for kv in want.items()], user=user)
        if not r["ok"]:
            raise Fail("%s did not reach %s within %s s: %s" % (unit, want, timeout, r["got"]))
        return r["got"]

    def journal(self, *args):
        return self.run("journalctl", "--no-pager", "-o", "cat", *args)


class Herd:
    """The installed programs, as the container sees them."""

    def __init__(self, box, prefix, worker):
        self.box = box
        self.herdctl = os.path.join(prefix, "bin", "herdctl")
        self.worker = worker

    def ctl(self, *args, user=False, check=True):
        run = self.box.as_user if user else self.box.run
        return run(self.herdctl, *args, check=check)

    def json(self, *args, user=False):
        return json.loads(self.ctl("--json", *args, user=user))

    def spawn(self, user=False):
        return self.json("spawn", "--", self.worker, user=user)


def journal_until(box, text, *args, timeout=5):
    """The journal once it has text: journald reads streams and datagrams
    asynchronously, and offers nothing to wait on from outside, so poll."""
    deadline = time.monotonic() + timeout
    while True:
        out = box.journal(*args)
        if text in out or time.monotonic() > deadline:
            return out


def herdd_lines(pid):
    """journalctl arguments for what herdd pid wrote to stderr. Not "-u
    herdd": in this container journald files the lines a service writes in
    its first seconds under init.scope (the stream's metadata is taken
    before the forked process joins the unit's cgroup; a plain "sh -c echo"
    unit shows the same), but the identifier systemd gives the stream holds."""
    return ["-t", "herdd", "_PID=%d" % pid]


def notifications(box, pid, text):
    """The sd_notify messages systemd (at log level debug) logged for pid."""
    out = journal_until(box, text, "-u", "herdd.service", "_PID=1")
    pat = re.compile(r"Got notification message from PID %d \((.*)\)" % pid)
    return [m.group(1) for m in map(pat.search, out.splitlines()) if m]


# ---- the checks ----

def check_activation(box, herd):
    st = box.show("herdd.socket", "ActiveState", "SubState")
    check(st == {"ActiveState": "active", "SubState": "listening"},
          "herdd.socket listening: %s" % st)
    sv = box.show("herdd.service", "ActiveState")
    check(sv["ActiveState"] == "inactive", "herdd.service not started before a connection")
    r = box.probe_json("time", herd.herdctl, "--json", "stats")
    stats = json.loads(r["out"])
    figure("activation latency (herdctl stats on the idle socket)", r["s"])
    r = box.probe_json("time", herd.herdctl, "--json", "stats")
    figure("herdctl stats on the running herdd", r["s"])
    sv = box.show("herdd.service", "ActiveState", "SubState", "StatusText", "MainPID",
                  "NRestarts")
    check(sv["ActiveState"] == "active" and sv["SubState"] == "running",
          "herdd.service activated by the first connection: %s/%s" %
          (sv["ActiveState"], sv["SubState"]))
    check(int(sv["MainPID"]) == stats["pid"],
          "MainPID %s is the herdd that answered" % sv["MainPID"])
    check(re.match(r"\d+ masters, ", sv["StatusText"]) is not None,
          "STATUS= reaches systemctl show: StatusText=%s" % sv["StatusText"])
    got = notifications(box, stats["pid"], "READY=1")
    check(any("READY=1" in n for n in got), "READY=1 received by systemd: %s" % got[:1])


def check_workers(box, herd, sum_demo):
    w = herd.spawn()
    check(herd.ctl("call", w["id"], "sum", '{"n":42}').strip() == "861",
          "herdctl spawned worker %s (pid %d) and called sum" % (w["id"], w["pid"]))
    out = box.run(sum_demo, "--workers", "3", "--max", "3000000")
    check("closed form" in out and "verified" in out,
          "sum-demo (a libherd master) spawned, called and lost 3 workers: %s" %
          [line for line in out.splitlines() if "closed form" in line])
    st = box.show("herdd.service", "StatusText")
    print("  StatusText now: " + st["StatusText"])


def workers_with_grandchild(herd, n=2):
    pids = []
    for _ in range(n):
        w = herd.spawn()
        pids.append(w["pid"])
    g = json.loads(herd.ctl("call", w["id"], "spawn_grandchild", '{"detach":true}'))
    check(g["detached"] and g["sid"] == g["pid"],
          "worker %d started a grandchild %d in its own session" % (pids[-1], g["pid"]))
    return pids + [g["pid"]]


def check_stop(box, herd):
    main = herd.json("stats")["pid"]
    pids = workers_with_grandchild(herd)
    r = box.probe_json("stop", "herdd.service", *map(str, pids))
    check(r["rc"] == 0 and not r["left"], "systemctl stop: every worker and the detached "
          "grandchild gone (%s)" % pids)
    figure("systemctl stop returned", r["returned_s"])
    figure("systemctl stop to the last worker gone", r["gone_s"])
    sv = box.show("herdd.service", "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    check(sv == {"ActiveState": "inactive", "Result": "success", "ExecMainCode": "1",
                 "ExecMainStatus": "0"}, "herdd exited cleanly: %s" % sv)
    got = notifications(box, main, "STOPPING=1")
    check(any(n.startswith("STOPPING=1") for n in got), "STOPPING=1 received: %s" % got[-1:])
    st = box.show("herdd.socket", "ActiveState")
    check(st["ActiveState"] == "active", "herdd.socket still listening after the stop")


def worker_pids(herd):
    """id -> pid of every live worker herdctl lists."""
    return {w["id"]: w["pid"] for w in herd.json("list")["workers"]}


def check_reload(box, herd):
    """systemctl reload (ExecReload= SIGUSR2) reexecs herdd in place: the
    main pid, every worker (id and pid) and a detached grandchild stay, and
    the workers still answer."""
    main = herd.json("stats")["pid"]
    pids = workers_with_grandchild(herd)
    before = worker_pids(herd)
    restarts = box.show("herdd.service", "NRestarts")["NRestarts"]
    t0 = time.monotonic()
    box.run("systemctl", "reload", "herdd.service")
    log = journal_until(box, "reexec 1: took over", *herdd_lines(main), timeout=10)
    figure("systemctl reload to the reexeced herdd serving", time.monotonic() - t0)
    check("reexec 1: took over %d workers" % len(before) in log,
          "systemctl reload reexeced herdd, which took over its %d workers" % len(before))
    sv = box.show("herdd.service", "MainPID", "ActiveState", "NRestarts")
    check(sv == {"MainPID": str(main), "ActiveState": "active", "NRestarts": restarts},
          "the unit kept its main pid %d, no restart: %s" % (main, sv))
    check(worker_pids(herd) == before, "every worker kept its id and pid: %s" % before)
    r = box.probe_json("gone", "0", *map(str, pids))
    check(sorted(r["left"]) == sorted(pids),
          "workers and the detached grandchild %d all alive" % pids[-1])
    w = next(iter(before))
    check(herd.ctl("call", w, "sum", '{"n":42}').strip() == "861",
          "worker %s still answers after the reload" % w)
    # A binary that cannot take over loses nothing: the probe refuses it first.
    r = box.sd("run", herd.herdctl, "reexec", "--binary", "/bin/false", check=False)
    check(r.returncode == 1 and "internal_error" in r.stderr and
          worker_pids(herd) == before and herd.json("stats")["pid"] == main,
          "a reexec to /bin/false fails (%s) and keeps herdd %d and every worker" %
          (r.stderr.strip(), main))
    for wid in before:
        herd.ctl("shutdown", wid)


def check_restart(box, herd):
    """systemctl restart is a stop and a start: the new herdd adopts no
    worker. Every worker and the detached grandchild are gone (no orphan),
    which is what herdd(8) and the unit's comments say."""
    pids = workers_with_grandchild(herd)
    r = box.probe_json("restart", "herdd.service", *map(str, pids))
    check(r["rc"] == 0 and r["new"] not in (0, r["old"]),
          "systemctl restart: a new herdd (pid %d -> %d)" % (r["old"], r["new"]))
    check(not r["left"], "systemctl restart: every worker and the detached grandchild "
          "gone (%s)" % pids)
    figure("systemctl restart returned", r["returned_s"])
    check(worker_pids(herd) == {}, "the new herdd lists no live worker")


def check_sigkill(box, herd):
    herd.json("stats")
    pids = workers_with_grandchild(herd)
    before = int(box.show("herdd.service", "NRestarts")["NRestarts"])
    r = box.probe_json("kill", "herdd.service", "KILL", "30", *map(str, pids))
    sv = box.show("herdd.service", "NRestarts", "ActiveState")
    check(r["new"] and int(sv["NRestarts"]) == before + 1,
          "herdd SIGKILLed: systemd restarted it (Restart=on-failure), pid %d -> %d" %
          (r["old"], r["new"]))
    check(not r["left"], "nothing of the old generation survives (workers, grandchild %d)" %
          pids[-1])
    figure("SIGKILL to the new herdd active (RestartSec=1s included)", r["restarted_s"])
    check(herd.json("stats")["pid"] == r["new"], "the restarted herdd answers on the socket")


def check_start_limit(box, herd):
    box.run("systemctl", "reset-failed", "herdd.service")
    lim = box.show("herdd.service", "StartLimitBurst", "StartLimitIntervalUSec")
    burst = int(lim["StartLimitBurst"])
    t0 = time.monotonic()
    kills = 0
    while kills <= burst + 1:
        r = box.probe_json("kill", "herdd.service", "KILL", "30")
        kills += 1
        if r["state"].get("ActiveState") == "failed" or not r["new"]:
            break
    sv = box.wait("herdd.service", 10, ActiveState="failed")
    log = journal_until(box, "Start request repeated too quickly", "-u", "herdd.service",
                        "_PID=1", "-n", "20")
    check(kills == burst + 1 and "Start request repeated too quickly" in log,
          "crash loop stopped by the start limit after %d kills (StartLimitBurst=%d in %s): "
          "\"Start request repeated too quickly\", %s" %
          (kills, burst, lim["StartLimitIntervalUSec"], sv))
    figure("crash loop of %d SIGKILLs until start-limit-hit" % kills, time.monotonic() - t0)
    left = box.run("sh", "-c", "grep -l '^herdd$' /proc/[0-9]*/comm 2>/dev/null || true")
    check(not left.strip(), "no herdd process left after the start limit")
    box.run("systemctl", "reset-failed", "herdd.service", "herdd.socket")
    box.run("systemctl", "start", "herdd.socket")
    box.wait("herdd.socket", 10, ActiveState="active")


def check_watchdog(box, herd):
    # WatchdogSec= reaches herdd (WATCHDOG_USEC) when it starts: set it while stopped.
    box.run("systemctl", "stop", "herdd.service")
    os.makedirs(os.path.join(box.units, "herdd.service.d"), exist_ok=True)
    with open(os.path.join(box.units, "herdd.service.d", "watchdog.conf"), "w") as f:
        f.write("[Service]\nWatchdogSec=2s\n")
    box.run("systemctl", "daemon-reload")
    main = herd.json("stats")["pid"]
    pids = [herd.spawn()["pid"]]
    # Two pings seen by systemd: herdd's loop pets the watchdog.
    seen = set()
    deadline = time.monotonic() + 5
    while len(seen) < 3 and time.monotonic() < deadline:
        seen.add(box.show("herdd.service", "WatchdogTimestampMonotonic")[
            "WatchdogTimestampMonotonic"])
    check(len(seen) >= 3, "WATCHDOG=1 pings reach systemd (WatchdogSec=2s, %d timestamps)" %
          len(seen))
    r = box.probe_json("kill", "herdd.service", "STOP", "20", *map(str, pids))
    sv = box.show("herdd.service", "NRestarts", "ActiveState")
    res = journal_until(box, "result 'watchdog'", "-u", "herdd.service", "_PID=1", "-n", "30")
    check(r["new"] and "Failed with result 'watchdog'" in res,
          "SIGSTOPped herdd killed by the watchdog and restarted (pid %d -> %d)" %
          (main, r["new"]))
    check(not r["left"], "its worker %s gone too" % pids)
    figure("SIGSTOP to herdd killed (WatchdogSec=2s)", r["killed_s"] or -1)
    figure("SIGSTOP to the new herdd active", r["restarted_s"])
    os.unlink(os.path.join(box.units, "herdd.service.d", "watchdog.conf"))
    box.run("systemctl", "daemon-reload")


def check_delegate(box, herd):
    stats = herd.json("stats")
    sv = box.show("herdd.service", "ControlGroup", "Delegate")
    cg = stats.get("cgroup") or {}
    check(sv["Delegate"] == "yes" and cg.get("delegated") == sv["ControlGroup"],
          "Delegate=yes: herdd reports its delegated cgroup %s in stats" % cg.get("delegated"))
    own = sv["ControlGroup"] + "/herdd"
    mine = box.run("sed", "-n", "s/^0:://p", "/proc/%d/cgroup" % stats["pid"]).strip()
    w = herd.spawn()
    theirs = box.run("sed", "-n", "s/^0:://p", "/proc/%d/cgroup" % w["pid"]).strip()
    check(cg.get("herdd") == own and mine == own,
          "herdd created %s (the subtree is writable) and runs there" % own)
    # Each worker in a cgroup of its own under the subtree, from its first instruction.
    wcg = sv["ControlGroup"] + "/workers/" + w["id"]
    cont = stats.get("containment") or {}
    check(theirs == wcg and cont.get("mode") == "cgroup",
          "worker %s runs in its own cgroup %s (containment %s)" % (w["id"], theirs,
                                                                   cont.get("mode")))
    log = journal_until(box, "delegated cgroup", *herdd_lines(stats["pid"])).splitlines()
    log = [l for l in log if "delegated cgroup" in l]
    check(log and sv["ControlGroup"] in log[-1], "herdd logs its delegated cgroup: %s" % log[-1:])
    # In herdd's mount namespace only its own subtree is writable.
    probe = "for d in %s %s; do if test -w $d; then echo rw; else echo ro; fi; done" % (
        cg["dir"], os.path.dirname(cg["dir"]))
    rw = box.run("nsenter", "-t", str(stats["pid"]), "-m", "sh", "-c", probe).split()
    check(rw == ["rw", "ro"], "for herdd %s is writable, its parent not (ProtectControlGroups=yes"
          " with ReadWritePaths=): %s" % (cg["dir"], rw))
    herd.ctl("shutdown", w["id"])


def check_journal(box, herd):
    pid = herd.json("stats")["pid"]
    # One connection over --max-unauthenticated (64) is refused with a warning.
    box.run("python3", "-c", "import socket\nks = []\nfor i in range(66):\n"
            "    s = socket.socket(socket.AF_UNIX); s.settimeout(10)\n"
            "    s.connect('/run/herd/herdd.sock'); ks.append(s)\n"
            "ks[-1].recv(100)\n")
    warn = journal_until(box, "limit unauthenticated", "-p", "warning", *herdd_lines(pid))
    info = box.journal("-p", "info", *herdd_lines(pid))
    check("limit unauthenticated" in warn, "journalctl -p warning shows herdd's warning: %s" %
          [l for l in warn.splitlines() if "limit" in l][-1:])
    check("ready (pid" not in warn and "ready (pid" in info,
          "journalctl -p warning leaves out info lines; -p info has them")
    js = [json.loads(line) for line in box.run(
        "journalctl", "--no-pager", "-o", "json", *herdd_lines(pid)).splitlines()]
    prios = {(j["MESSAGE"].split(":", 1)[0], j["PRIORITY"]) for j in js}
    check(("warn", "4") in prios and ("info", "6") in prios and
          not any(j["MESSAGE"].startswith("<") for j in js),
          "PRIORITY from the <N> prefix: %s" % sorted(prios))


def check_security(box, threshold, unit_text):
    out = box.run("systemd-analyze", "security", "--no-pager", "herdd.service", check=False)
    m = re.search(r"Overall exposure level for herdd.service: (\d+)\.(\d)", out)
    check(m is not None, "systemd-analyze security rates the loaded unit")
    score = int(m.group(1)) * 10 + int(m.group(2))
    check(score <= threshold, "exposure %d.%d at or below %d.%d" %
          (score // 10, score % 10, threshold // 10, threshold % 10))
    # Explained: named in a comment, or set with some of its values left out.
    bad = []
    for line in out.splitlines():
        if not line.startswith("✗"):
            continue
        setting = line[1:].split()[0]
        names = [n for n in re.split(r"[=/~ ]", setting) if re.match(r"^[A-Z][A-Za-z]+$", n)]
        if not any(n + "=" in unit_text for n in names):
            bad.append(setting)
    check(not bad, "every hardening option left out is explained in the unit%s" %
          (": missing " + ", ".join(bad) if bad else ""))


def check_user(box, herd, dest_user_units, sum_demo):
    box.run("useradd", "-m", "-u", str(UID), "-U", USER)
    box.run("loginctl", "enable-linger", USER)
    box.wait("user@%d.service" % UID, 30, ActiveState="active")
    box.run("mkdir", "-p", "/etc/systemd/user")
    for name in ("herdd.service", "herdd.socket"):
        box.run("install", "-m", "0644", os.path.join(dest_user_units, name),
                "/etc/systemd/user/" + name)
    box.as_user("systemctl", "--user", "daemon-reload")
    box.as_user("systemctl", "--user", "start", "herdd.socket")
    st = box.show("herdd.socket", "ActiveState", "Listen", user=True)
    check(st["ActiveState"] == "active" and "/run/user/%d/herd/herdd.sock" % UID in st["Listen"],
          "user herdd.socket listening under the user manager: %s" % st["Listen"])
    r = box.probe_json("time", herd.herdctl, "--json", "stats", user=True)
    stats = json.loads(r["out"])
    figure("user unit activation latency (herdctl stats)", r["s"])
    sv = box.show("herdd.service", "MainPID", "ActiveState", "StatusText", "ControlGroup",
                  user=True)
    check(int(sv["MainPID"]) == stats["pid"] and sv["ActiveState"] == "active",
          "user herdd.service activated by herdctl, MainPID %s, %s" %
          (sv["MainPID"], sv["StatusText"]))
    print("  user herdd's cgroup: %s, stats.cgroup: %s" % (sv["ControlGroup"],
                                                          stats.get("cgroup")))
    w = herd.spawn(user=True)
    check(herd.ctl("call", w["id"], "sum", '{"n":42}', user=True).strip() == "861",
          "user herdd spawned worker %s as uid %d and it answered" % (w["id"], UID))
    log = "/run/user/%d/herd/herdd.log" % UID
    box.as_user("systemctl", "--user", "stop", "herdd.service")
    box.probe_json("gone", "10", str(w["pid"]))
    # sum-demo autostarts a herdd when nothing answers on the socket.
    out = box.as_user(sum_demo, "--workers", "2")
    sv = box.show("herdd.service", "MainPID", "ActiveState", user=True)
    exists = box.run("sh", "-c", "test -e %s && echo yes || echo no" % log).strip()
    check("verified" in out and sv["ActiveState"] == "active" and exists == "no",
          "with the user socket listening, sum-demo's autostart stays out of the way: "
          "systemd started herdd %s, no %s" % (sv["MainPID"], log))
    box.as_user("systemctl", "--user", "stop", "herdd.service", "herdd.socket")
    out = box.as_user(sum_demo, "--workers", "2")
    stats = herd.json("stats", user=True)
    exists = box.run("sh", "-c", "test -e %s && echo yes || echo no" % log).strip()
    check("verified" in out and exists == "yes",
          "contrast: without the socket unit sum-demo autostarts herdd %d itself (%s written)"
          % (stats["pid"], log))
    box.run("kill", "-TERM", str(stats["pid"]))
    r = box.probe_json("gone", "20", str(stats["pid"]))
    check(not r["left"], "the autostarted herdd stopped")


# ---- set-up ----

def install(meson, build, tmp):
    dest = os.path.join(tmp, "dest")
    r = subprocess.run([meson, "install", "-C", build, "--destdir", dest, "--no-rebuild",
                        "--quiet"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail("meson install: %s%s" % (r.stdout, r.stderr))
    found = {}
    for d, _, files in os.walk(dest):
        for f in files:
            p = os.path.join(d, f)
            for key, tail in (("system", "systemd/system/herdd.service"),
                              ("user", "systemd/user/herdd.service"),
                              ("sysusers", "sysusers.d/herd.conf"),
                              ("worker", "herd/herd-testworker")):
                if p.endswith("/" + tail):
                    found[key] = os.path.dirname(p) if key in ("system", "user") else p
    if "system" not in found:
        skip("this build installs no systemd units (built without libsystemd)")
    return dest, found


def main():
    meson, build, src, prefix, sum_demo, threshold = sys.argv[1:7]
    threshold = int(threshold)
    if os.geteuid() != 0:
        skip("booting the systemd container needs root")
    script = find_systemd_sh(src)
    if not script:
        skip("no shared/testbed/systemd.sh above %s (set HERD_SYSTEMD_SH)" % src)
    prefix = os.path.normpath(prefix)
    if prefix in ("/", "/usr") or prefix.startswith(("/usr/lib", "/usr/bin", "/etc", "/var")):
        skip("the prefix %s cannot be bind-mounted over the container's system" % prefix)
    base = os.environ.get("HERD_TESTBED_DIR", "/tmp/herd-testbed")
    rootfs = os.environ.get("HERD_SYSTEMD_ROOTFS", os.path.join(base, "systemd", "rootfs"))
    tmp = tempfile.mkdtemp(prefix="herd-systemd.")
    os.chmod(tmp, 0o755)
    shutil.copy(os.path.join(HERE, "probe.py"), tmp)
    box = Box(script, tmp, rootfs)
    booted = False

    def on_term(signum, frame):
        raise Terminated("terminated by signal %d" % signum)
    signal.signal(signal.SIGTERM, on_term)
    try:
        dest, found = install(meson, build, tmp)
        herd = Herd(box, prefix, found["worker"].replace(dest, "", 1))
        # One rootfs is shared by every run: only one may create or extend it.
        os.makedirs(os.path.dirname(rootfs), exist_ok=True)
        with open(rootfs + ".herd-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            t0 = time.monotonic()
            r = box.sd("up", dest + prefix + ":" + prefix, build, tmp, check=False,
                       timeout=900)
            booted = True
            if r.returncode != 0:
                if not os.path.exists(os.path.join(rootfs, "usr/lib/systemd/systemd")):
                    skip("cannot make the container's Debian rootfs here: " +
                         r.stderr.strip()[-400:])
                raise Fail("systemd.sh up: " + r.stderr)
        figure("systemd.sh up (boot to running)", time.monotonic() - t0)
        box.run("systemd-analyze", "log-level", "debug")
        for name in ("herdd.service", "herdd.socket"):
            shutil.copy(os.path.join(found["system"], name), box.units)
        with open(os.path.join(found["system"], "herdd.service")) as f:
            unit_text = f.read()
        box.run("systemd-sysusers", found["sysusers"])
        box.run("systemctl", "daemon-reload")
        box.run("systemctl", "start", "herdd.socket")
        steps = [
            ("activation", lambda: check_activation(box, herd)),
            ("workers", lambda: check_workers(box, herd, sum_demo)),
            ("delegate", lambda: check_delegate(box, herd)),
            ("reload", lambda: check_reload(box, herd)),
            ("restart", lambda: check_restart(box, herd)),
            ("stop", lambda: check_stop(box, herd)),
            ("sigkill", lambda: check_sigkill(box, herd)),
            ("watchdog", lambda: check_watchdog(box, herd)),
            ("journal", lambda: check_journal(box, herd)),
            ("start-limit", lambda: check_start_limit(box, herd)),
            ("security", lambda: check_security(box, threshold, unit_text)),
            ("user", lambda: check_user(box, herd, found["user"], sum_demo)),
        ]
        for name, step in steps:
            print("== " + name, flush=True)
            try:
                step()
            except (Fail, subprocess.TimeoutExpired, KeyError, ValueError) as e:
                failures.append("%s: %s" % (name, e))
                print("FAIL: %s: %s" % (name, e), flush=True)
                print(box.journal("-u", "herdd.service", "-n", "15"))
    except (Fail, Terminated) as e:
        failures.append(str(e))
        print("FAIL: %s" % e)
    finally:
        if os.environ.get("HERD_SYSTEMD_KEEP") == "1":
            print("HERD_SYSTEMD_KEEP=1: left up; HERD_TESTBED_DIR=%s/testbed %s down" %
                  (tmp, script))
        else:
            if booted:
                t0 = time.monotonic()
                r = box.sd("down", check=False)
                if r.returncode != 0:
                    failures.append("systemd.sh down: " + r.stderr)
                figure("systemd.sh down", time.monotonic() - t0)
            shutil.rmtree(tmp, ignore_errors=True)
    print("\nmeasured under systemd 252:")
    for name, s in figures:
        print("  %-62s %8.3f s" % (name, s))
    if failures:
        print("%d failed:\n  %s" % (len(failures), "\n  ".join(failures)))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
