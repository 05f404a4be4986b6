/* SPDX-License-Identifier: MIT */
/*
 * Restart policies and ids that never lie (issue 15): an explicit worker with
 * restart on-failure comes back with a growing backoff, keeping id and name,
 * with a new incarnation, process and socket; always restarts after exit 0,
 * no does not; the start limit gives up (state failed, last reason, stderr);
 * a request naming an old incarnation fails with worker_not_found; ids go on
 * after herdd restarts on the same socket directory; herdctl shows it all.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ht-check.h"

/* RFC 3339 "2026-12-03T16:51:24.123Z" as milliseconds since the epoch. */
static int64_t
wall_ms(const char *text)
{
	struct tm tm = { 0 };
	const char *rest;
	int ms = 0;

	ck_assert_ptr_nonnull(text);
	rest = strptime(text, "%Y-%m-%dT%H:%M:%S", &tm);
	ck_assert_msg(rest && sscanf(rest, ".%3dZ", &ms) == 1, "not RFC 3339: %s", text);
	return (int64_t)timegm(&tm) * 1000 + ms;
}

static json_int_t
int_at(const json_t *o, const char *k1, const char *k2)
{
	json_t *v = json_object_get(o, k1);

	if (k2)
		v = json_object_get(v, k2);
	ck_assert_msg(
	    json_is_integer(v), "%s.%s not an integer in %s", k1, k2 ? k2 : "", ht_dump(o));
	return json_integer_value(v);
}

/* Params for a worker that writes its pid to stderr and ends as script says. */
static json_t *
dying_params(const char *name, const char *how, json_t *restart)
{
	char script[256];

	snprintf(script, sizeof(script), "echo \"dying $$\" >&2; %s", how);
	return ht_sh_params(script,
	    json_pack(
	        "{s:s, s:s, s:o}", "name", name, "shutdown_on", "explicit", "restart", restart));
}

/* Waits for w's restart to incarnation n and checks what stays and what changes. */
static json_t *
wait_restarted(const char *id, const char *name, json_int_t n)
{
	json_t *ev = ht_wait_event_ok(ht_master, "restarted", id, ht_ms(10000));
	json_t *w = json_object_get(ev, "worker");

	ck_assert_str_eq(ht_str(w, "id"), id);
	ck_assert_str_eq(ht_str(w, "name"), name);
	ck_assert_int_eq(int_at(w, "incarnation", NULL), n);
	ck_assert_int_eq(int_at(w, "restart", "restarts"), n - 1);
	return ev;
}

/*
 * A worker that crashes at once comes back after 100, 200, 400, 400 ms: the
 * doubling backoff capped at max_delay_ms, each wait at least that long
 * between the end of one incarnation and the start of the next.
 */
START_TEST(test_on_failure_backoff)
{
	static const json_int_t delays[] = { 100, 200, 400, 400 };
	json_t *reply, *w;
	char id[24];
	pid_t last = 0;
	size_t i;

	reply = ht_spawn(ht_master,
	    dying_params("crasher", "kill -SEGV $$",
	        json_pack("{s:s, s:i, s:i, s:i, s:i}", "policy", "on-failure", "delay_ms", 100,
	            "max_delay_ms", 400, "burst", 10, "interval_ms", 60000)),
	    ht_ms(10000));
	/* The spawn answers for the first incarnation. */
	ht_assert_error(reply, "worker_exited");
	json_decref(reply);
	reply = ht_wait_event_ok(ht_master, "crashed", NULL, ht_ms(5000));
	w = json_object_get(reply, "worker");
	snprintf(id, sizeof(id), "%s", ht_str(w, "id"));
	ck_assert_str_eq(ht_str(w, "state"), "restarting");
	ck_assert_int_eq(int_at(w, "incarnation", NULL), 1);
	json_decref(reply);
	for (i = 0; i < sizeof(delays) / sizeof(delays[0]); i++) {
		json_t *ev = wait_restarted(id, "crasher", (json_int_t)i + 2);
		json_t *r;
		int64_t gap;

		w = json_object_get(ev, "worker");
		r = json_object_get(w, "restart");
		ck_assert_int_eq(int_at(r, "last_delay_ms", NULL), delays[i]);
		ck_assert_str_eq(ht_str(json_object_get(r, "last_exit"), "reason"), "crashed");
		ck_assert_str_eq(ht_str(json_object_get(r, "last_exit"), "signal"), "SIGSEGV");
		/* Millisecond timestamps, each truncated: one ms of slack. */
		gap = wall_ms(ht_str(w, "started_at")) -
		    wall_ms(ht_str(json_object_get(r, "last_exit"), "ended_at"));
		ck_assert_msg(gap >= delays[i] - 1, "restart %zu after %lld ms, policy says %lld",
		    i + 1, (long long)gap, (long long)delays[i]);
		ck_assert_int_ne(ht_worker_pid(w), last);
		last = ht_worker_pid(w);
		ht_track_pid(last);
		json_decref(ev);
		/* The end of this incarnation comes before the next restart. */
		ev = ht_wait_event_ok(ht_master, "crashed", id, ht_ms(5000));
		ck_assert_int_eq(
		    int_at(json_object_get(ev, "worker"), "incarnation", NULL), (json_int_t)i + 2);
		json_decref(ev);
	}
	/* shutdown calls the restart off, whatever the worker is doing. */
	reply = ht_call_ok(ht_master, "shutdown", json_pack("{s:s, s:i}", "id", id, "grace_ms", 0));
	w = ht_assert_result(reply);
	ck_assert_str_eq(ht_str(w, "state"), "exited");
	json_decref(reply);
	/* Nothing left running, and no restart pending (restarting counts as live). */
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(2000)), 0);
	ht_assert_no_workers(ht_herdd);
}
END_TEST

/*
 * A herd worker that crashes comes back with the same id and name, a new
 * pid and a new listening socket that a client finds by id (inspect, as
 * herdctl call does); requests naming the old incarnation find nothing.
 */
START_TEST(test_reconnect_by_id)
{
	json_t *res, *reply, *w, *ev;
	const char *socket;
	pid_t pid1, pid2;
	char id[24];

	res = ht_spawn_ok(ht_master,
	    ht_testworker_params(json_pack("{s:s, s:s, s:s}", "name", "phoenix", "shutdown_on",
	        "explicit", "restart", "on-failure")));
	snprintf(id, sizeof(id), "%s", ht_str(res, "id"));
	ck_assert_int_eq(int_at(res, "incarnation", NULL), 1);
	json_decref(ht_wait_event_ok(ht_master, "ready", id, ht_ms(5000)));
	pid1 = (pid_t)int_at(res, "pid", NULL);
	reply = ht_worker_call(ht_str(res, "socket"), NULL, "crash", NULL, ht_ms(5000));
	json_decref(reply);
	json_decref(res);
	ck_assert_int_eq(ht_wait_pid_gone(pid1, ht_ms(5000)), 0);

	ev = ht_wait_event_ok(ht_master, "ready", id, ht_ms(10000));
	ck_assert_int_eq(int_at(json_object_get(ev, "worker"), "incarnation", NULL), 2);
	json_decref(ev);
	w = ht_call_ok(ht_master, "inspect", json_pack("{s:s}", "id", id));
	res = ht_assert_result(w);
	ck_assert_str_eq(ht_str(res, "name"), "phoenix");
	ck_assert_int_eq(int_at(res, "incarnation", NULL), 2);
	ck_assert_int_eq(int_at(res, "restart", "restarts"), 1);
	ck_assert_str_eq(
	    ht_str(json_object_get(json_object_get(res, "restart"), "last_exit"), "signal"),
	    "SIGSEGV");
	pid2 = ht_worker_pid(res);
	ht_track_pid(pid2);
	ck_assert_int_ne(pid2, pid1);
	socket = ht_str(res, "socket");
	ck_assert_ptr_nonnull(socket);
	reply = ht_worker_call(socket, NULL, "pid", NULL, ht_ms(5000));
	ck_assert_int_eq(int_at(ht_assert_result(reply), "pid", NULL), pid2);
	json_decref(reply);
	json_decref(w);

	/* The first incarnation is gone for every request that names it. */
	ht_expect(ht_master, "kill",
	    json_pack("{s:s, s:i, s:s}", "id", id, "incarnation", 1, "signal", "KILL"),
	    "worker_not_found");
	ht_expect(ht_master, "inspect", json_pack("{s:s, s:i}", "id", id, "incarnation", 1),
	    "worker_not_found");
	ht_expect(ht_master, "shutdown", json_pack("{s:s, s:i}", "id", id, "incarnation", 1),
	    "worker_not_found");
	ck_assert(ht_pid_alive(pid2));
	ht_expect(ht_master, "inspect", json_pack("{s:s, s:i}", "id", id, "incarnation", 2), NULL);
	reply =
	    ht_call_ok(ht_master, "shutdown", json_pack("{s:s, s:i}", "id", id, "incarnation", 2));
	ck_assert_str_eq(ht_str(ht_assert_result(reply), "reason"), "shutdown");
	json_decref(reply);
	ck_assert_int_eq(ht_wait_pid_gone(pid2, ht_ms(5000)), 0);
}
END_TEST

/* always brings back a worker that exited 0; no leaves it exited. */
START_TEST(test_always_and_no)
{
	json_t *res, *reply, *ev, *w;
	char id[24];

	res = ht_spawn_ok(ht_master,
	    ht_testworker_params(json_pack("{s:s, s:s, s:s}", "name", "loyal", "shutdown_on",
	        "explicit", "restart", "always")));
	snprintf(id, sizeof(id), "%s", ht_str(res, "id"));
	json_decref(ht_wait_event_ok(ht_master, "ready", id, ht_ms(5000)));
	reply = ht_worker_call(
	    ht_str(res, "socket"), NULL, "exit", json_pack("{s:i}", "code", 0), ht_ms(5000));
	json_decref(reply);
	json_decref(res);
	ev = ht_wait_event_ok(ht_master, "exited", id, ht_ms(5000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "state"), "restarting");
	json_decref(ev);
	ev = ht_wait_event_ok(ht_master, "ready", id, ht_ms(10000));
	w = json_object_get(ev, "worker");
	ck_assert_int_eq(int_at(w, "incarnation", NULL), 2);
	ck_assert_int_eq(
	    int_at(json_object_get(json_object_get(w, "restart"), "last_exit"), "exit_code", NULL),
	    0);
	ht_track_pid(ht_worker_pid(w));
	json_decref(ev);
	ht_expect(ht_master, "shutdown", json_pack("{s:s}", "id", id), NULL);

	res = ht_spawn_ok(ht_master,
	    ht_testworker_params(json_pack(
	        "{s:s, s:s, s:s}", "name", "once", "shutdown_on", "explicit", "restart", "no")));
	snprintf(id, sizeof(id), "%s", ht_str(res, "id"));
	reply = ht_worker_call(ht_str(res, "socket"), NULL, "crash", NULL, ht_ms(5000));
	json_decref(reply);
	json_decref(res);
	ev = ht_wait_event_ok(ht_master, "crashed", id, ht_ms(5000));
	w = json_object_get(ev, "worker");
	ck_assert_str_eq(ht_str(w, "state"), "exited");
	ck_assert_int_eq(int_at(w, "incarnation", NULL), 1);
	ck_assert_str_eq(ht_str(json_object_get(w, "restart"), "policy"), "no");
	json_decref(ev);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(2000)), 0);
}
END_TEST

/* Three ends within the interval: the third gives up, keeping what went wrong. */
START_TEST(test_start_limit)
{
	json_t *reply, *ev, *w, *list;
	const char *id;
	size_t i;
	bool listed = false;

	reply = ht_spawn(ht_master,
	    dying_params("hopeless", "exit 7",
	        json_pack("{s:s, s:i, s:i, s:i}", "policy", "on-failure", "delay_ms", 10, "burst",
	            3, "interval_ms", 60000)),
	    ht_ms(10000));
	ht_assert_error(reply, "worker_exited");
	json_decref(reply);
	ev = ht_wait_event_ok(ht_master, "given_up", NULL, ht_ms(10000));
	w = json_object_get(ev, "worker");
	id = ht_str(w, "id");
	ck_assert_str_eq(ht_str(w, "state"), "failed");
	ck_assert_str_eq(ht_str(w, "reason"), "exited");
	ck_assert_int_eq(int_at(w, "exit_code", NULL), 7);
	ck_assert_int_eq(int_at(w, "incarnation", NULL), 3);
	ck_assert_int_eq(int_at(w, "restart", "restarts"), 2);
	ck_assert(ht_lines_contain(json_object_get(ev, "stderr_tail"), "dying"));
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(2000)), 0);

	/* A failed worker stays in the plain list: given up is news. */
	reply = ht_call_ok(ht_master, "list", json_object());
	list = json_object_get(ht_assert_result(reply), "workers");
	for (i = 0; i < json_array_size(list); i++)
		listed |= !strcmp(ht_str(json_array_get(list, i), "id"), id) &&
		    !strcmp(ht_str(json_array_get(list, i), "state"), "failed");
	ck_assert_msg(listed, "%s", ht_dump(list));
	json_decref(reply);
	ht_expect(ht_master, "kill", json_pack("{s:s}", "id", id), "worker_not_found");
	reply = ht_call_ok(ht_master, "shutdown", json_pack("{s:s}", "id", id));
	ck_assert_str_eq(ht_str(ht_assert_result(reply), "state"), "failed");
	json_decref(reply);
	json_decref(ev);
}
END_TEST

/* herdd stopping while a worker waits out its backoff ends the wait at once. */
START_TEST(test_restarting_at_herdd_stop)
{
	json_t *reply, *ev, *w;

	reply = ht_spawn(ht_master,
	    dying_params("patient", "exit 3",
	        json_pack("{s:s, s:i, s:i}", "policy", "always", "delay_ms", 600000, "max_delay_ms",
	            600000)),
	    ht_ms(10000));
	ht_assert_error(reply, "worker_exited");
	json_decref(reply);
	ev = ht_wait_event_ok(ht_master, "exited", NULL, ht_ms(5000));
	w = json_object_get(ev, "worker");
	ck_assert_str_eq(ht_str(w, "state"), "restarting");
	ck_assert_int_gt(int_at(w, "restart", "restart_in_ms"), 500000);
	ck_assert_str_eq(
	    ht_str(json_object_get(json_object_get(w, "restart"), "last_exit"), "reason"),
	    "exited");
	json_decref(ev);
	reply = ht_call_ok(ht_master, "stats", json_object());
	ck_assert_int_eq(
	    int_at(json_object_get(ht_assert_result(reply), "workers"), "restarting", NULL), 1);
	json_decref(reply);
	/* It must exit 0, promptly, on SIGTERM: checked by the restart. */
	ht_fixture_restart(ht_grace_args);
}
END_TEST

/* What spawn refuses: a restart for a worker its master's end would stop, bad limits. */
START_TEST(test_restart_params)
{
	ht_expect(ht_master, "spawn",
	    ht_sh_params("exit 0", json_pack("{s:s}", "restart", "on-failure")), "invalid_params");
	ht_expect(ht_master, "spawn",
	    ht_sh_params("exit 0",
	        json_pack("{s:s, s:s}", "shutdown_on", "explicit", "restart", "sometimes")),
	    "invalid_params");
	ht_expect(ht_master, "spawn",
	    ht_sh_params("exit 0",
	        json_pack("{s:s, s:{s:s, s:i, s:i}}", "shutdown_on", "explicit", "restart",
	            "policy", "always", "delay_ms", 500, "max_delay_ms", 100)),
	    "invalid_params");
	ht_expect(ht_master, "spawn",
	    ht_sh_params("exit 0",
	        json_pack("{s:s, s:{s:s, s:i}}", "shutdown_on", "explicit", "restart", "policy",
	            "always", "burst", 0)),
	    "invalid_params");
}
END_TEST

/* Spawns one worker on the herdd at socket and returns its id's number. */
static long
spawn_number(const char *socket)
{
	struct ht_conn *m = ht_hello_open(socket, "master", NULL, NULL);
	json_t *res;
	long n;

	ck_assert_ptr_nonnull(m);
	res = ht_spawn_ok(m, ht_testworker_params(NULL));
	ck_assert_int_eq(sscanf(ht_str(res, "id"), "w%ld", &n), 1);
	json_decref(res);
	ht_conn_close(m);
	return n;
}

/* A second herdd on the same socket directory goes on where the first stopped. */
START_TEST(test_ids_continue)
{
	struct ht_daemon *d1 = ht_daemon_start_ok(ht_grace_args), *d2;
	const char *argv[] = { "--grace-ms", "300", "--socket", d1->socket, NULL };
	long a, b, c;

	a = spawn_number(d1->socket);
	b = spawn_number(d1->socket);
	ck_assert_int_gt(b, a);
	ht_daemon_stop_ok(d1);
	d2 = ht_daemon_start_ok(argv);
	/* d2 listens where it was told last: d1's socket. */
	c = spawn_number(d1->socket);
	ck_assert_msg(c > b, "w%ld after w%ld: an id came back", c, b);
	/* A herdd that was SIGKILLed skips ids rather than repeating one. */
	ck_assert_int_eq(ht_daemon_kill(d2), 0);
	ck_assert_int_eq(ht_children_left(ht_ms(2000)), 0);
	d2 = ht_daemon_start_ok(argv);
	ck_assert_int_gt(spawn_number(d1->socket), c);
	ht_daemon_stop_ok(d2);
}
END_TEST

/* herdctl spawn --restart, list's INC and RESTARTS, ID@INCARNATION. */
START_TEST(test_herdctl_restart)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	struct ht_out o;
	json_t *res, *ev;
	char id[24], old[40];
	pid_t pid;

	o = ht_herdctl(ht_herdd->socket, "--json", "spawn", "--restart", "on-failure",
	    "--restart-delay", "0.05", "--start-limit-burst", "4", "--", tw, NULL);
	ck_assert_msg(o.code == 0, "%s", o.err);
	res = json_loads(o.out, 0, NULL);
	ck_assert_ptr_nonnull(res);
	snprintf(id, sizeof(id), "%s", ht_str(res, "id"));
	pid = ht_worker_pid(res);
	ht_track_pid(pid);
	json_decref(res);
	ht_out_free(&o);
	ht_expect(ht_master, "subscribe", json_pack("{s:b}", "all", 1), NULL);

	o = ht_herdctl(ht_herdd->socket, "inspect", id, NULL);
	ck_assert_msg(strstr(o.out, "\"policy\":\"on-failure\"") && strstr(o.out, "\"burst\":4") &&
	        strstr(o.out, "\"delay_ms\":50"),
	    "%s", o.out);
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "kill", id, "KILL", NULL);
	ck_assert_int_eq(o.code, 0);
	ht_out_free(&o);
	ev = ht_wait_event_ok(ht_master, "ready", id, ht_ms(10000));
	ht_track_pid(ht_worker_pid(json_object_get(ev, "worker")));
	json_decref(ev);

	o = ht_herdctl(ht_herdd->socket, "list", NULL);
	ck_assert_msg(strstr(o.out, "INC") && strstr(o.out, "RESTARTS"), "%s", o.out);
	ht_out_free(&o);
	snprintf(old, sizeof(old), "%s@1", id);
	o = ht_herdctl(ht_herdd->socket, "kill", old, NULL);
	ck_assert_msg(o.code != 0 && strstr(o.err, "worker_not_found"), "%s", o.err);
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "call", old, "pid", NULL);
	ck_assert_msg(o.code != 0 && strstr(o.err, "worker_not_found"), "%s", o.err);
	ht_out_free(&o);
	snprintf(old, sizeof(old), "%s@2", id);
	o = ht_herdctl(ht_herdd->socket, "call", old, "pid", NULL);
	ck_assert_msg(o.code == 0, "%s", o.err);
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "--json", "shutdown", old, NULL);
	ck_assert_msg(o.code == 0 && strstr(o.out, "\"incarnation\":2"), "%s%s", o.out, o.err);
	ht_out_free(&o);
}
END_TEST

HT_MAIN("sup-restart",
    HT_HERDD_CASE("restart", 60, ht_grace_args, test_on_failure_backoff, test_reconnect_by_id,
        test_always_and_no, test_start_limit, test_restarting_at_herdd_stop, test_restart_params,
        test_herdctl_restart),
    HT_CASE("ids", 60, test_ids_continue))
