/* SPDX-License-Identifier: MIT */
/*
 * herdd's side of the fd-3 channel, driven by workers written in sh so that
 * each test says exactly what goes over the channel (no libherd involved):
 * the hello result, ready, init_failed, failure after ready, garbage, a worker
 * that stops heartbeating while idle (killed) or while computing (spared).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ht-check.h"

/* sh snippets: one channel message out, one line in. */
#define SEND(json) "printf '%s\\n' '" json "' >&3; "
#define RECV       "read -r line <&3; "
#define HELLO                                                                                      \
	SEND("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"hello\",\"params\":{\"version\":1,"       \
	     "\"role\":\"worker\"}}")                                                              \
	RECV
#define READY                                                                                      \
	SEND("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"ready\",\"params\":{\"functions\":[]}}")  \
	RECV

static const char *const herdd_args[] = { "--grace-ms", "500", NULL };

/* The case's teardown: every test ends with every worker gone, by its own doing (all explicit). */
static void
finish(void)
{
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(10000)), 0);
}

/* A shell worker named name, shutdown_on explicit, with extra's members (stolen, may be NULL). */
static json_t *
sh_worker(const char *name, const char *script, json_t *extra)
{
	json_t *p = ht_sh_params(script, extra);

	json_object_set_new(p, "name", json_string(name));
	json_object_set_new(p, "shutdown_on", json_string("explicit"));
	return p;
}

/* Spawn params asking for heartbeats every interval_ms, lost after timeout_ms. */
static json_t *
heartbeats(int interval_ms, int timeout_ms)
{
	return json_pack("{s:{s:i, s:i}}", "settings", "heartbeat_interval_ms", interval_ms,
	    "heartbeat_timeout_ms", timeout_ms);
}

/*
 * Stops the worker spawned (released) with a shutdown request, extra's
 * members (stolen, may be NULL) added: it must end with reason shutdown.
 */
static void
shutdown_ok(struct ht_conn *c, json_t *spawned, json_t *extra)
{
	json_t *params = json_pack("{s:s}", "id", ht_str(spawned, "id")), *r;

	if (extra)
		json_object_update(params, extra);
	json_decref(extra);
	r = ht_conn_call(c, "shutdown", params, ht_ms(10000));
	ck_assert_str_eq(ht_str(ht_assert_result(r), "reason"), "shutdown");
	json_decref(r);
	json_decref(spawned);
}

START_TEST(test_hello_result_and_ready)
{
	struct ht_conn *c = ht_master;
	json_t *r, *lines, *hello, *settings;
	json_error_t jerr;
	json_t *spawned;
	const char *id;

	/* The worker writes herdd's hello result to its stderr, then says ready and waits. */
	spawned = ht_spawn_ok(c,
	    sh_worker("hello", HELLO "echo \"$line\" >&2; " READY "read -r line <&3",
	        json_pack("{s:{s:i}, s:i}", "init", "scale", 3, "connection_timeout_ms", 1234)));
	id = ht_str(spawned, "id");
	r = ht_conn_call(c, "logs", json_pack("{s:s}", "id", id), ht_ms(5000));
	lines = json_object_get(ht_assert_result(r), "lines");
	hello = json_loads(json_string_value(json_array_get(lines, 0)), 0, &jerr);
	ck_assert_msg(hello, "the hello result is not JSON: %s", ht_dump(lines));
	json_decref(r);
	r = json_object_get(hello, "result");
	ck_assert_str_eq(ht_str(r, "id"), id);
	ck_assert_str_eq(ht_str(r, "name"), "hello");
	ck_assert(strstr(ht_str(r, "socket"), "/workers/"));
	ck_assert_str_eq(ht_str(r, "shutdown_on"), "explicit");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(r, "init"), "scale")), 3);
	ck_assert_int_eq(json_integer_value(json_object_get(r, "connection_timeout_ms")), 1234);
	ck_assert_int_eq(json_integer_value(json_object_get(r, "heartbeat_interval_ms")), 1000);
	settings = json_object_get(r, "settings");
	ck_assert_int_eq(json_object_size(settings), 6);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(settings, "connection_timeout_ms")), 1234);
	json_decref(hello);
	/* shutdown: herdd sends "shutdown" on fd 3; the worker's read returns and it exits. */
	shutdown_ok(c, spawned, NULL);
}
END_TEST

START_TEST(test_init_failed)
{
	struct ht_conn *c = ht_master;
	json_t *r, *ev;

	r = ht_spawn(c,
	    sh_worker("bad-init",
	        HELLO SEND("{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"init_failed\",\"params\":"
	                   "{\"message\":\"no database\"}}") RECV "exit 1",
	        NULL),
	    ht_ms(10000));
	ht_assert_error(r, "init_failed");
	ck_assert_str_eq(ht_error_message(r), "no database");
	json_decref(r);
	ev = ht_wait_event_ok(c, "init_failed", NULL, ht_ms(5000));
	ck_assert_str_eq(ht_str(ev, "message"), "no database");
	json_decref(ev);
}
END_TEST

START_TEST(test_failure_after_ready)
{
	struct ht_conn *c = ht_master;
	json_t *ev;

	json_decref(ht_spawn_ok(c,
	    sh_worker("fails-later",
	        HELLO READY "echo dying now >&2; " SEND(
	            "{\"jsonrpc\":\"2.0\",\"method\":\"failure\",\"params\":"
	            "{\"message\":\"uncaught: boom\"}}") "exit 1",
	        NULL)));
	ev = ht_wait_event_ok(c, "failed", NULL, ht_ms(5000));
	ck_assert_str_eq(ht_str(ev, "message"), "uncaught: boom");
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "reason"), "failed");
	ck_assert_str_eq(
	    json_string_value(json_array_get(json_object_get(ev, "stderr_tail"), 0)), "dying now");
	json_decref(ev);
}
END_TEST

/* Garbage on fd 3 is a broken worker: herdd closes the channel and SIGKILLs it. */
START_TEST(test_garbage_on_channel)
{
	struct ht_conn *c = ht_master;
	json_t *r;

	r = ht_spawn(
	    c, sh_worker("garbage", "echo 'not json' >&3; exec sleep 100", NULL), ht_ms(10000));
	ht_assert_error(r, "worker_exited");
	ck_assert_str_eq(ht_str(ht_error_data(r), "reason"), "crashed");
	ck_assert_str_eq(ht_str(ht_error_data(r), "signal"), "SIGKILL");
	json_decref(r);
	/* Requests before hello on the channel are refused the same way. */
	r = ht_spawn(c, sh_worker("no-hello", READY "exec sleep 100", NULL), ht_ms(10000));
	ht_assert_error(r, "worker_exited");
	json_decref(r);
}
END_TEST

START_TEST(test_heartbeat_lost_when_idle)
{
	struct ht_conn *c = ht_master;
	json_t *ev;

	/* Ready, then silent and idle: no heartbeat, no CPU. */
	json_decref(
	    ht_spawn_ok(c, sh_worker("idle", HELLO READY "exec sleep 100", heartbeats(100, 400))));
	ev = ht_wait_event_ok(c, "heartbeat_lost", NULL, ht_ms(10000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "signal"), "SIGKILL");
	ck_assert(strstr(ht_str(ev, "message"), "no CPU progress"));
	json_decref(ev);
}
END_TEST

START_TEST(test_busy_worker_is_spared)
{
	struct ht_conn *c = ht_master;
	json_t *r, *ev, *w, *spawned;
	const char *id;

	/* Ready, then computing without a heartbeat for far longer than the timeout. */
	spawned = ht_spawn_ok(
	    c, sh_worker("busy", HELLO READY "while :; do :; done", heartbeats(100, 300)));
	id = ht_str(spawned, "id");
	/* Five timeouts pass without heartbeat_lost (the wait must time out). */
	ev = ht_conn_wait_event(c, "heartbeat_lost", NULL, 1500);
	ck_assert_msg(!ev, "a busy worker was declared hung: %s", ht_dump(ev));
	r = ht_conn_call(c, "inspect", json_pack("{s:s}", "id", id), ht_ms(5000));
	w = ht_assert_result(r);
	ck_assert_str_eq(ht_str(w, "state"), "ready");
	ck_assert_int_gt(json_integer_value(json_object_get(w, "cpu_ms")), 100);
	json_decref(r);
	shutdown_ok(c, spawned, json_pack("{s:i}", "grace_ms", 200));
}
END_TEST

/*
 * Lowers the shell's priority as far as it goes: nice 19, and its session's
 * autogroup too where the kernel groups by session (nice alone then only
 * weighs against the session's own processes).
 */
#define STARVE "renice -n 19 $$ >/dev/null; echo 19 2>/dev/null >/proc/$$/autogroup; "

/* Burns CPU until killed: the machine's load for the starved-worker test. */
static int
hog(void *arg)
{
	for (volatile unsigned long n = 0;; n++)
		;
	return 0;
}

/*
 * A busy worker that a loaded machine starves (nice 19 beside a nice-0 hog
 * on each CPU: a few percent of a CPU) gains no clock tick of CPU time in most
 * 100 ms intervals; over its whole silence it does. It must be spared.
 */
START_TEST(test_starved_busy_worker_is_spared)
{
	struct ht_conn *c = ht_master;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	pid_t hogs[64];
	json_t *ev, *spawned;
	long i, n = ncpu < 1 ? 1 : ncpu > 64 ? 64 : ncpu;

	for (i = 0; i < n; i++) {
		hogs[i] = ht_fork_fn(hog, NULL, (uid_t)-1, (gid_t)-1);
		ck_assert_int_gt(hogs[i], 0);
	}
	spawned = ht_spawn_ok(c,
	    sh_worker("starved", HELLO READY STARVE "while :; do :; done", heartbeats(100, 2000)));
	/* Three timeouts pass without heartbeat_lost (the wait must time out). */
	ev = ht_conn_wait_event(c, "heartbeat_lost", NULL, 6000);
	ck_assert_msg(!ev, "a starved busy worker was declared hung: %s", ht_dump(ev));
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(kill(hogs[i], SIGKILL), 0);
		ck_assert_int_eq(ht_wait_child(hogs[i], ht_ms(10000), NULL), 0);
	}
	shutdown_ok(c, spawned, json_pack("{s:i}", "grace_ms", 200));
}
END_TEST

/* kill: a signal the worker handles leaves it ready; TERM stops it (reason shutdown). */
START_TEST(test_kill_signals)
{
	struct ht_conn *c = ht_master;
	json_t *r, *ev, *lines, *spawned;
	const char *id;
	bool seen = false;
	int64_t deadline;
	size_t i;

	/*
	 * The worker reports USR1 on stderr and goes on sleeping (the group's
	 * sleep dies of USR1; the loop starts another).
	 */
	spawned = ht_spawn_ok(c,
	    sh_worker("signals",
	        "trap 'echo got usr1 >&2' USR1; " HELLO READY "while :; do sleep 1; done", NULL));
	id = ht_str(spawned, "id");
	ht_expect(c, "kill", json_pack("{s:s, s:s}", "id", id, "signal", "SIGUSR1"), NULL);
	/* The line appears once sh has run its trap; there is no event for that, so logs is asked again. */
	deadline = ht_now_ms() + ht_ms(5000);
	while (!seen && ht_now_ms() < deadline) {
		r = ht_conn_call(c, "logs", json_pack("{s:s}", "id", id), ht_ms(5000));
		lines = json_object_get(ht_assert_result(r), "lines");
		/* sh also reports its sleep's death ("User defined signal 1"). */
		for (i = 0; i < json_array_size(lines); i++)
			seen |= !strcmp(json_string_value(json_array_get(lines, i)), "got usr1");
		json_decref(r);
		if (!seen) {
			json_t *none = ht_conn_wait_event(c, "exited", id, 10);

			ck_assert_msg(!none, "the worker died of USR1: %s", ht_dump(none));
		}
	}
	ck_assert_msg(seen, "the worker never reported USR1");
	r = ht_conn_call(c, "inspect", json_pack("{s:s}", "id", id), ht_ms(5000));
	ck_assert_str_eq(ht_str(ht_assert_result(r), "state"), "ready");
	json_decref(r);
	ht_expect(c, "kill", json_pack("{s:s, s:i}", "id", id, "signal", 15), NULL);
	/* An operator's kill is its own reason and event (issue 12). */
	ev = ht_wait_event_ok(c, "killed", id, ht_ms(5000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "reason"), "killed");
	ck_assert_ptr_nonnull(strstr(ht_str(ev, "message"), "SIGTERM sent by a kill request"));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "signal"), "SIGTERM");
	json_decref(ev);
	json_decref(spawned);
}
END_TEST

HT_MAIN("herdd-channel",
    HT_HERDD_CASE_WITH("channel", 40, herdd_args, NULL, finish, test_hello_result_and_ready,
        test_init_failed, test_failure_after_ready, test_garbage_on_channel,
        test_heartbeat_lost_when_idle, test_busy_worker_is_spared,
        test_starved_busy_worker_is_spared, test_kill_signals))
