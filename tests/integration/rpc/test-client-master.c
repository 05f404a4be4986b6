/* SPDX-License-Identifier: MIT */
/*
 * libherd's master API against a real herdd on a private socket: spawn the
 * example worker, call it directly, watch failures arrive through
 * on_failure, stop and inspect workers, and rpc_parallel's start_app (this
 * test spawns itself as the worker).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <ev.h>
#include <herd/herd-ev.h>

#include "example-worker.h"
#include "ht-example.h"

struct seen {
	int failures;
	int events;
	const char *want_event; /* on_event counts matches of this event and worker id */
	const char *want_id;
	int matches;
	char event[32];
	char id[32];
	char message[128];
	size_t tail;
};

static void
on_failure(herd_master *m, const char *event, const char *id, const char *message, json_t *tail,
    json_t *worker, void *userdata)
{
	struct seen *s = userdata;

	s->failures++;
	snprintf(s->event, sizeof(s->event), "%s", event);
	snprintf(s->id, sizeof(s->id), "%s", id);
	snprintf(s->message, sizeof(s->message), "%s", message ? message : "");
	s->tail = json_array_size(tail);
	ck_assert_str_eq(json_string_value(json_object_get(worker, "id")), id);
}

static void
on_event(herd_master *m, const char *event, const char *id, const char *message, json_t *tail,
    json_t *worker, void *userdata)
{
	struct seen *s = userdata;

	s->events++;
	if (s->want_event && strcmp(event, s->want_event) == 0 && strcmp(id, s->want_id) == 0)
		s->matches++;
}

/*
 * Runs the master's connection until *counter is non-zero, with a deadline. The
 * event may already have run: a blocking request on the master's connection
 * dispatches what arrives behind its reply (herd_master_kill and the "killed").
 */
static void
wait_master(herd_master *m, const int *counter, int timeout_ms)
{
	herd_conn *conn = herd_master_get_conn(m);
	int64_t deadline = ht_now_ms() + timeout_ms;

	while (*counter == 0) {
		ck_assert_msg(ht_now_ms() < deadline, "no event from herdd in time");
		ck_assert_int_ge(herd_conn_wait(conn, 100000), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
	}
}

START_TEST(test_spawn_call_inspect)
{
	json_t *result = NULL, *list = NULL, *record = NULL, *logs = NULL;
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	herd_conn *conn = NULL;
	bool found = false;
	size_t i;
	json_t *x;

	ck_assert_ptr_nonnull(herd_worker_id(w));
	ck_assert_int_gt(herd_worker_pid(w), 0);
	ck_assert_int_eq(herd_worker_connect(w, NULL, &conn, NULL), 0);
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 861);
	json_decref(result);
	/* The hello of a herdd-spawned worker names it by herdd's id. */
	ck_assert_str_eq(json_string_value(json_object_get(herd_conn_get_server_info(conn), "id")),
	    herd_worker_id(w));
	herd_conn_unref(conn);

	ck_assert_int_eq(herd_master_list(m, false, &list), 0);
	json_array_foreach(json_object_get(list, "workers"), i, x)
		found = found ||
		    strcmp(json_string_value(json_object_get(x, "id")), herd_worker_id(w)) == 0;
	ck_assert_msg(found, "%s not in %s", herd_worker_id(w), ht_dump(list));
	json_decref(list);

	ck_assert_int_eq(herd_master_inspect(m, herd_worker_id(w), &record), 0);
	ck_assert_str_eq(json_string_value(json_object_get(record, "state")), "ready");
	json_decref(record);
	ck_assert_int_eq(herd_master_logs(m, herd_worker_id(w), NULL, 0, &logs), 0);
	ck_assert(json_is_array(json_object_get(logs, "lines")));
	json_decref(logs);

	ck_assert_int_eq(herd_master_inspect(m, "w999999", &record), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_master_last_error(m)), "worker_not_found");

	ck_assert_int_eq(herd_master_shutdown(m, herd_worker_id(w), 2000, &record), 0);
	ck_assert_str_eq(json_string_value(json_object_get(record, "state")), "exited");
	ck_assert_str_eq(json_string_value(json_object_get(record, "reason")), "shutdown");
	json_decref(record);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* A signal herdd did not send: a crash. Returns no connection. */
static herd_conn *
crash_worker(herd_worker *w)
{
	/* SIGABRT rather than SIGSEGV, which a sanitizer build of the worker would catch. */
	ck_assert_int_eq(kill(herd_worker_pid(w), SIGABRT), 0);
	return NULL;
}

/* The function returns, then the worker fails (rpc_parallel's uncaught exception). */
static herd_conn *
fail_worker(herd_worker *w)
{
	herd_conn *conn = NULL;

	ck_assert_int_eq(herd_worker_connect(w, NULL, &conn, NULL), 0);
	ck_assert_int_eq(herd_call(conn, "worker_fail",
	                     ht_args("{s:s}", "message", "failed after returning"), 0, NULL),
	    0);
	return conn;
}

/*
 * Spawns an example worker, makes it end by provoke (which may return a
 * connection to close afterwards), and checks that on_failure reported event
 * for it and on_event saw it too. s gets what they saw.
 */
static void
check_on_failure(herd_conn *(*provoke)(herd_worker *w), const char *event, struct seen *s)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	herd_conn *conn;

	ck_assert_int_eq(herd_master_on_failure(m, on_failure, s), 0);
	ck_assert_int_eq(herd_master_on_event(m, on_event, s), 0);
	conn = provoke(w);
	wait_master(m, &s->failures, ht_ms(10000));
	ck_assert_str_eq(s->event, event);
	ck_assert_str_eq(s->id, herd_worker_id(w));
	ck_assert_int_ge(s->events, 1);
	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_unref(m);
}

START_TEST(test_on_failure_crash)
{
	struct seen s = { 0 };

	check_on_failure(crash_worker, "crashed", &s);
}
END_TEST

START_TEST(test_on_failure_reported)
{
	struct seen s = { 0 };

	check_on_failure(fail_worker, "failed", &s);
	ck_assert_msg(strstr(s.message, "failed after returning"), "message %s", s.message);
}
END_TEST

START_TEST(test_spawn_errors)
{
	json_t *init = json_pack("{s:s}", "fail_init", "no state for you");
	json_t *opts = herd_spawn_opts_new("/nonexistent/worker", NULL);
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = NULL;

	ck_assert_int_eq(herd_master_spawn(m, opts, 0, &w), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_master_last_error(m)), "spawn_failed");
	ck_assert_ptr_null(w);
	json_decref(opts);

	opts = herd_spawn_opts_new(ht_env_path("HERD_EXAMPLE_WORKER"), init);
	ck_assert_int_eq(herd_master_spawn(m, opts, 0, &w), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_master_last_error(m)), "init_failed");
	ck_assert_msg(strstr(herd_error_message(herd_master_last_error(m)), "no state for you"),
	    "message %s", herd_error_message(herd_master_last_error(m)));
	json_decref(opts);

	/* Options that are not the protocol's shape are refused before anything is sent. */
	ck_assert_int_eq(herd_master_spawn(m, init, 0, &w), -EINVAL);
	ck_assert_int_eq(herd_master_spawn(NULL, init, 0, &w), -EINVAL);
	ck_assert_int_eq(herd_master_kill(m, NULL, NULL), -EINVAL);
	json_decref(init);
	herd_master_unref(m);
}
END_TEST

START_TEST(test_master_disconnect_stops_workers)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_master *watcher = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	struct seen s = { .want_event = "stopped", .want_id = herd_worker_id(w) };

	/* A second master watches every worker of the uid, to see this one stop. */
	ck_assert_int_eq(herd_master_on_event(watcher, on_event, &s), 0);
	ck_assert_int_eq(
	    herd_master_request(watcher, "subscribe", ht_args("{s:b}", "all", 1), 0, NULL), 0);
	ck_assert(ht_pid_alive(herd_worker_pid(w)));
	/* The default shutdown_on is master_disconnect: closing the master stops its workers. */
	herd_master_unref(m);
	wait_master(watcher, &s.matches, ht_ms(10000));
	ck_assert(!ht_pid_alive(herd_worker_pid(w)));
	herd_worker_unref(w);
	herd_master_unref(watcher);
}
END_TEST

struct async_spawn {
	struct ev_loop *loop;
	struct ht_outcome end;
	herd_worker *w;
};

static void
on_spawned(herd_master *m, int r, herd_worker *w, herd_error *error, void *userdata)
{
	struct async_spawn *a = userdata;

	ht_outcome_set(&a->end, r, NULL, error);
	a->w = herd_worker_ref(w);
	ev_break(a->loop, EVBREAK_ALL);
}

START_TEST(test_async_spawn_libev)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct async_spawn a = { .loop = loop };
	herd_master *m;
	json_t *opts;

	/* The socket from $HERD_SOCKET when none is given. */
	setenv("HERD_SOCKET", ht_herdd->socket, 1);
	ck_assert_int_eq(herd_master_connect(NULL, NULL, &m, NULL), 0);
	ck_assert_int_eq(herd_master_attach_ev(m, loop), 0);
	opts = herd_spawn_opts_new(ht_env_path("HERD_EXAMPLE_WORKER"), NULL);
	ck_assert_int_eq(herd_master_spawn_async(m, opts, on_spawned, &a), 0);
	json_decref(opts);
	ev_run(loop, 0);
	ck_assert_int_eq(a.end.calls, 1);
	ck_assert_int_eq(a.end.r, 0);
	ck_assert_ptr_nonnull(a.w);
	ht_track_pid(herd_worker_pid(a.w));
	/* The owner hears of its own workers' ends without subscribing. */
	{
		/* A kill request is its own event (issue 12), not a "stopped". */
		struct seen s = { .want_event = "killed", .want_id = herd_worker_id(a.w) };

		ck_assert_int_eq(herd_master_on_event(m, on_event, &s), 0);
		ck_assert_int_eq(herd_master_kill(m, herd_worker_id(a.w), "KILL"), 0);
		wait_master(m, &s.matches, ht_ms(10000));
		herd_master_on_event(m, NULL, NULL);
	}
	herd_worker_unref(a.w);
	herd_master_detach_ev(m);
	herd_master_unref(m);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_start_app_self)
{
	json_t *opts = herd_spawn_opts_new(herd_self_path(), NULL);
	herd_master *m = ht_herd_master_ok(NULL);
	json_t *result = NULL;
	herd_conn *conn = NULL;
	herd_worker *w = NULL;

	/* This very executable, spawned by herdd, becomes the example worker (see main). */
	ck_assert_ptr_nonnull(herd_self_path());
	ck_assert_int_eq(herd_master_spawn(m, opts, 0, &w), 0);
	ht_track_pid(herd_worker_pid(w));
	ck_assert_int_eq(herd_worker_connect(w, NULL, &conn, NULL), 0);
	ck_assert_int_eq(herd_call(conn, "product", ht_args("{s:i}", "n", 5), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 120);
	json_decref(result);
	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_unref(m);
	json_decref(opts);
}
END_TEST

/* Set once herdd says the worker's incarnation want is ready. */
struct ready_wait {
	json_int_t want;
	int pid;
};

static void
on_ready(herd_master *m, const char *event, const char *id, const char *message, json_t *tail,
    json_t *worker, void *userdata)
{
	struct ready_wait *r = userdata;

	if (strcmp(event, "ready") == 0 &&
	    json_integer_value(json_object_get(worker, "incarnation")) == r->want)
		r->pid = (pid_t)json_integer_value(json_object_get(worker, "pid"));
}

/* An operation through a handle of a gone incarnation: worker_not_found, no process touched. */
static void
assert_not_found(herd_master *m, int r)
{
	ck_assert_int_eq(r, -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_master_last_error(m)), "worker_not_found");
}

/*
 * Ids that never lie, through libherd's handles: a restarted worker keeps its
 * id and socket path, and a handle of the first incarnation can neither kill,
 * stop nor call the second; a handle made from the new record can.
 */
START_TEST(test_handle_incarnation)
{
	herd_master *m = ht_herd_master_ok(NULL);
	json_t *opts = herd_spawn_opts_new(ht_env_path("HERD_EXAMPLE_WORKER"), NULL);
	json_t *record = NULL, *result = NULL;
	herd_worker *old = NULL, *cur = NULL;
	struct ready_wait ready = { .want = 2 };
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	pid_t first;

	json_object_set_new(opts, "shutdown_on", json_string("explicit"));
	json_object_set_new(opts, "restart", json_string("always"));
	ck_assert_int_eq(herd_master_spawn(m, opts, 0, &old), 0);
	first = herd_worker_pid(old);
	ht_track_pid(first);
	ck_assert_uint_eq(herd_worker_incarnation(old), 1);
	ck_assert_uint_eq(herd_worker_incarnation(NULL), 0);
	ck_assert_int_eq(herd_master_on_event(m, on_ready, &ready), 0);

	ck_assert_int_eq(kill(first, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_pid_gone(first, ht_ms(5000)), 0);
	wait_master(m, &ready.pid, ht_ms(10000));
	ht_track_pid(ready.pid);
	ck_assert_int_ne(ready.pid, first);

	/* The old handle names a gone process: every operation refuses. */
	assert_not_found(m, herd_worker_kill(m, old, "KILL"));
	assert_not_found(m, herd_worker_shutdown(m, old, 1000, NULL));
	ck_assert_int_eq(herd_worker_connect(old, NULL, &conn, &err), -ESRCH);
	ck_assert_ptr_null(conn);
	ck_assert_str_eq(herd_error_name(err), "worker_not_found");
	herd_error_unref(err);
	ck_assert_int_eq(
	    herd_worker_call_once(old, "sum", ht_args("{s:i}", "n", 3), 0, NULL, NULL), -ESRCH);
	/* ...and the new incarnation lives on, untouched. */
	ck_assert_int_eq(kill(ready.pid, 0), 0);
	ck_assert_int_eq(herd_master_inspect(m, herd_worker_id(old), &record), 0);
	ck_assert_str_eq(json_string_value(json_object_get(record, "state")), "ready");
	ck_assert_int_eq(json_integer_value(json_object_get(record, "pid")), ready.pid);

	ck_assert_int_eq(herd_master_worker(m, record, &cur), 0);
	ck_assert_uint_eq(herd_worker_incarnation(cur), 2);
	ck_assert_str_eq(herd_worker_id(cur), herd_worker_id(old));
	ck_assert_int_eq(
	    herd_worker_call_once(cur, "sum", ht_args("{s:i}", "n", 3), 0, &result, NULL), 0);
	ck_assert_int_eq(json_integer_value(result), 3);
	json_decref(result);
	json_decref(record);
	ck_assert_int_eq(herd_worker_shutdown(m, cur, 2000, &record), 0);
	ck_assert_str_eq(json_string_value(json_object_get(record, "reason")), "shutdown");
	ck_assert_int_eq(json_integer_value(json_object_get(record, "incarnation")), 2);
	ck_assert_int_eq(ht_wait_pid_gone(ready.pid, ht_ms(5000)), 0);
	json_decref(record);
	herd_worker_unref(cur);
	herd_worker_unref(old);
	herd_master_unref(m);
	json_decref(opts);
}
END_TEST

HT_APP_MAIN(&example_worker_type, "client-master",
    HT_CLIENT_HERDD_CASE("master", 60, test_spawn_call_inspect, test_on_failure_crash,
        test_on_failure_reported, test_spawn_errors, test_master_disconnect_stops_workers,
        test_async_spawn_libev, test_start_app_self, test_handle_incarnation))
