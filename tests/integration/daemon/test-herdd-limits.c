/* SPDX-License-Identifier: MIT */
/*
 * Limits on everything a client controls, each with its name in the error and
 * in stats: connections per uid, connections still before hello, requests in
 * flight, workers per uid, output queued for a peer that does not read, and
 * running out of file descriptors. herdd's own open-file limit, raised while
 * workers keep the one it was given. Plus the two ways a connection hears
 * more: subscribe {all} and connection heartbeats.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ht-check.h"

/* The next message must be limit_exceeded for limit (id null), then EOF. */
static void
expect_refused(struct ht_conn *c, const char *limit, int value)
{
	json_t *m = ht_conn_recv(c, ht_ms(5000));

	ht_assert_error(m, "limit_exceeded");
	ck_assert(json_is_null(json_object_get(m, "id")));
	ck_assert_str_eq(json_string_value(json_object_get(ht_error_data(m), "limit")), limit);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(m), "value")), value);
	json_decref(m);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
}

/*
 * The fixture's herdd started again with one limit option set to value, with
 * a new master (ht_master). The fixture stops it after the test: status 0.
 */
static struct ht_daemon *
restart_limited(const char *option, const char *value)
{
	const char *const args[] = { option, value, NULL };

	ht_fixture_restart(args);
	return ht_herdd;
}

/* The end of a test that started workers: with their masters gone, so are they. */
static void
workers_gone(void)
{
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(10000)), 0);
}

/* Sends a spawn of sleep, which never says ready: the request stays pending. */
static void
spawn_pending(struct ht_conn *c)
{
	ck_assert(
	    ht_conn_send_request(c, "spawn",
	        json_pack("{s:s, s:[s, s]}", "path", "/bin/sleep", "argv", "sleep", "100")) > 0);
}

/* Another spawn must be refused with error name. Returns the reply (new reference). */
static json_t *
spawn_another(struct ht_conn *c, const char *name)
{
	json_t *r = ht_conn_call(c, "spawn", json_pack("{s:s}", "path", "/bin/true"), ht_ms(5000));

	ht_assert_error(r, name);
	return r;
}

START_TEST(test_connections_per_uid)
{
	struct ht_daemon *d = restart_limited("--max-connections-per-uid", "2");
	/* The fixture's master is the first of the two. */
	struct ht_conn *b = ht_herdd_open(d, "master", "b");
	struct ht_conn *c;

	ck_assert(b);
	c = ht_conn_open_ok(d->socket);
	expect_refused(c, "connections_per_uid", 2);
	ht_conn_close(c);
	/* Room again once one leaves: the fresh inspector of ht_limit_hits gets in. */
	ht_conn_close(b);
	ck_assert_int_eq(ht_conn_wait_eof(ht_master, 50), -ETIMEDOUT);
	ck_assert_int_ge(ht_limit_hits(d, "connections_per_uid"), 1);
}
END_TEST

START_TEST(test_unauthenticated)
{
	struct ht_daemon *d = restart_limited("--max-unauthenticated", "2");
	struct ht_conn *a = ht_conn_open(d->socket), *b = ht_conn_open(d->socket), *c;
	json_t *r;

	ck_assert(a && b);
	c = ht_conn_open_ok(d->socket);
	expect_refused(c, "unauthenticated_connections", 2);
	ht_conn_close(c);
	/* Once one says hello, another may connect. */
	r = ht_conn_hello(a, "inspector", NULL, ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	c = ht_conn_open_ok(d->socket);
	r = ht_conn_hello(c, "inspector", NULL, ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	ht_conn_close(a);
	ht_conn_close(b);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_pending_requests)
{
	struct ht_daemon *d = restart_limited("--max-pending", "1");
	struct ht_conn *c = ht_herdd_open(d, "master", "pending");
	json_t *r;

	ck_assert(c);
	spawn_pending(c);
	r = spawn_another(c, "too_many_requests");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "limit")), 1);
	json_decref(r);
	ck_assert_int_ge(ht_limit_hits(d, "pending_requests"), 1);
	ht_conn_close(c);
	workers_gone();
}
END_TEST

START_TEST(test_workers_per_uid)
{
	struct ht_daemon *d = restart_limited("--max-workers-per-uid", "1");
	struct ht_conn *a = ht_herdd_open(d, "master", "a"), *b = ht_herdd_open(d, "master", "b");
	json_t *r;

	ck_assert(a && b);
	spawn_pending(a);
	r = ht_herdd_wait_listed(b, "sleep", "starting", ht_ms(5000));
	ck_assert(r);
	json_decref(r);
	r = spawn_another(b, "limit_exceeded");
	ck_assert_str_eq(
	    json_string_value(json_object_get(ht_error_data(r), "limit")), "workers_per_uid");
	json_decref(r);
	ht_conn_close(a);
	ht_conn_close(b);
	workers_gone();
}
END_TEST

/* A client that sends requests and never reads its replies is cut off. */
START_TEST(test_output_overflow)
{
	struct ht_daemon *d = restart_limited("--max-output-bytes", "65536");
	struct ht_conn *c = ht_herdd_open(d, "master", "no-reader");
	const char *req = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"stats\"}\n";
	size_t len = strlen(req), n = 20000, i;
	char *flood = malloc(len * n);

	ck_assert(c && flood);
	for (i = 0; i < n; i++)
		memcpy(flood + i * len, req, len);
	/* Sending may fail part-way once herdd has closed: either way it must close. */
	ht_conn_send_raw(c, flood, len * n);
	free(flood);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(20000)), 0);
	ht_conn_close(c);
	ck_assert_int_ge(ht_limit_hits(d, "output_bytes"), 1);
	/* herdd itself is fine. */
	c = ht_herdd_open(d, "master", "after");
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}
END_TEST

/* Out of file descriptors: connections are dropped, not spun on, and herdd recovers. */
START_TEST(test_out_of_fds)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *held[64], *c;
	struct rlimit low, old;
	json_t *r;
	int i;

	/* Only the soft limit: raising a hard one back needs CAP_SYS_RESOURCE. */
	ck_assert_int_eq(prlimit(d->pid, RLIMIT_NOFILE, NULL, &old), 0);
	low.rlim_cur = 24;
	low.rlim_max = old.rlim_max;
	ck_assert_int_eq(prlimit(d->pid, RLIMIT_NOFILE, &low, NULL), 0);
	for (i = 0; i < 64; i++) {
		held[i] = ht_conn_open_ok(d->socket);
	}
	/*
	 * The kernel queued them all; herdd keeps what its fds allow (the first
	 * ones) and drops the rest: the last one sees EOF.
	 */
	ck_assert_int_eq(ht_conn_wait_eof(held[63], ht_ms(10000)), 0);
	/* The first connection was kept and is served normally. */
	r = ht_conn_hello(held[0], "inspector", NULL, ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	r = ht_conn_call(held[0], "stats", NULL, ht_ms(5000));
	ck_assert_int_ge(json_integer_value(json_object_get(
	                     json_object_get(ht_assert_result(r), "limits_hit"), "fds")),
	    1);
	json_decref(r);
	for (i = 0; i < 64; i++)
		ht_conn_close(held[i]);
	ck_assert_int_eq(prlimit(d->pid, RLIMIT_NOFILE, &old, NULL), 0);
	/* With fds back, herdd serves new connections again. */
	c = ht_herdd_open(d, "inspector", "after");
	ck_assert(c);
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}
END_TEST

/*
 * herdd raises its open-file soft limit to the hard one (it needs about four
 * descriptors per worker), and its workers start with the soft limit herdd
 * was given.
 */
START_TEST(test_fd_limit_raised)
{
	struct rlimit old, low, got;
	struct ht_daemon *d;
	json_t *r, *tail;
	char want[96];

	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	if (old.rlim_max != RLIM_INFINITY && old.rlim_max <= 256) {
		fprintf(stderr, "skipped: the hard open-file limit is only %lu\n",
		    (unsigned long)old.rlim_max);
		return;
	}
	low = old;
	low.rlim_cur = 256;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	ht_fixture_restart(NULL);
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	d = ht_herdd;

	ck_assert_int_eq(prlimit(d->pid, RLIMIT_NOFILE, NULL, &got), 0);
	ck_assert_uint_gt(got.rlim_cur, 256);
	ck_assert_uint_eq(got.rlim_max, old.rlim_max);
	if (old.rlim_max != RLIM_INFINITY)
		ck_assert_uint_eq(got.rlim_cur, old.rlim_max);

	r = ht_spawn(ht_master,
	    ht_sh_params("echo \"soft=$(ulimit -Sn) hard=$(ulimit -Hn)\" >&2; exit 3", NULL),
	    ht_ms(5000));
	ht_assert_error(r, "worker_exited");
	tail = json_object_get(ht_error_data(r), "stderr_tail");
	if (old.rlim_max == RLIM_INFINITY)
		snprintf(want, sizeof(want), "soft=256 hard=unlimited");
	else
		snprintf(want, sizeof(want), "soft=256 hard=%lu", (unsigned long)old.rlim_max);
	ck_assert_msg(
	    json_array_size(tail) == 1 && !strcmp(json_string_value(json_array_get(tail, 0)), want),
	    "the worker said %s, not %s", ht_dump(tail), want);
	json_decref(r);
}
END_TEST

START_TEST(test_subscribe_all)
{
	struct ht_conn *m = ht_master, *w = ht_herdd_open(ht_herdd, "inspector", "w");
	json_t *ev;

	ck_assert(w);
	ht_expect(w, "subscribe", json_pack("{s:b}", "all", 1), NULL);
	ht_expect(m, "spawn",
	    ht_sh_params("echo last words >&2; exit 7", json_pack("{s:s}", "name", "one")),
	    "worker_exited");
	ev = ht_wait_event_ok(w, "exited", NULL, ht_ms(5000));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(ev, "worker"), "exit_code")), 7);
	ck_assert_str_eq(
	    json_string_value(json_array_get(json_object_get(ev, "stderr_tail"), 0)), "last words");
	json_decref(ev);

	ht_expect(w, "unsubscribe", NULL, NULL);
	ht_expect(m, "spawn", json_pack("{s:s, s:s}", "path", "/bin/true", "name", "two"),
	    "worker_exited");
	/* The owner still hears it; the watcher no longer does. */
	ev = ht_conn_wait_event(m, "exited", NULL, ht_ms(5000));
	ck_assert(ev);
	json_decref(ev);
	ev = ht_conn_wait_event(m, "exited", NULL, ht_ms(5000));
	ck_assert(ev);
	json_decref(ev);
	ht_expect(w, "ping", NULL, NULL);
	ev = ht_conn_wait_event(w, "exited", NULL, 200);
	ck_assert_msg(!ev, "an unsubscribed watcher got %s", ht_dump(ev));
	ht_conn_close(w);
}
END_TEST

START_TEST(test_connection_heartbeats)
{
	struct ht_conn *c = ht_conn_open(ht_herdd->socket);
	json_t *r, *hb;

	ck_assert(c);
	r = ht_conn_hello(c, "master",
	    json_pack("{s:{s:i, s:i}}", "settings", "heartbeat_interval_ms", 100,
	        "heartbeat_timeout_ms", 600),
	    ht_ms(5000));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(
	        json_object_get(ht_assert_result(r), "settings"), "heartbeat_timeout_ms")),
	    600);
	json_decref(r);
	hb = ht_conn_wait_method(c, "heartbeat", ht_ms(5000));
	ck_assert_msg(hb, "herdd sent no heartbeat");
	ck_assert(!json_object_get(hb, "id"));
	json_decref(hb);
	/* We stay silent: herdd closes after the timeout. */
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);
}
END_TEST

/* A reply longer than the client's max_message_size becomes limit_exceeded. */
START_TEST(test_reply_too_long_for_peer)
{
	struct ht_conn *c = ht_conn_open(ht_herdd->socket);
	json_t *r;
	int i;

	ck_assert(c);
	r = ht_conn_hello(
	    c, "master", json_pack("{s:{s:i}}", "settings", "max_message_size", 1024), ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	for (i = 0; i < 3; i++) {
		ht_expect(c, "spawn", json_pack("{s:s}", "path", "/bin/true"), "worker_exited");
	}
	r = ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht_ms(5000));
	ht_assert_error(r, "limit_exceeded");
	ck_assert_str_eq(
	    json_string_value(json_object_get(ht_error_data(r), "limit")), "max_message_size");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "value")), 1024);
	json_decref(r);
	/* The connection stays, and short replies still come. */
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}
END_TEST

/* Exited records are kept per uid up to --keep-exited, the oldest dropped first. */
START_TEST(test_exited_records_kept)
{
	static const char *const names[] = { "t1", "t2", "t3" };
	struct ht_conn *c;
	json_t *r, *list;
	int i;

	restart_limited("--keep-exited", "2");
	c = ht_master;
	for (i = 0; i < 3; i++) {
		ht_expect(c, "spawn",
		    json_pack("{s:s, s:s}", "path", "/bin/true", "name", names[i]),
		    "worker_exited");
	}
	r = ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht_ms(5000));
	list = json_object_get(ht_assert_result(r), "workers");
	ck_assert_int_eq(json_array_size(list), 2);
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 0), "name")), "t2");
	ck_assert_str_eq(json_string_value(json_object_get(json_array_get(list, 1), "name")), "t3");
	json_decref(r);
	/* Without "all", exited records are not listed. */
	r = ht_conn_call(c, "list", NULL, ht_ms(5000));
	ck_assert_int_eq(json_array_size(json_object_get(ht_assert_result(r), "workers")), 0);
	json_decref(r);
}
END_TEST

HT_MAIN("herdd-limits",
    HT_HERDD_CASE("limits", 60, NULL, test_connections_per_uid, test_unauthenticated,
        test_pending_requests, test_workers_per_uid, test_output_overflow, test_out_of_fds,
        test_fd_limit_raised, test_subscribe_all, test_connection_heartbeats,
        test_reply_too_long_for_peer, test_exited_records_kept))
