/* SPDX-License-Identifier: MIT */
/*
 * A master that blocks on one connection keeps its others alive.
 *
 * The master connects to a real herdd with short heartbeats (interval 50 ms,
 * timeout 300 ms, scaled for slow runs), spawns herd-testworker and then
 * blocks for several heartbeat timeouts: in herd_call() of "sleep" (a timer in
 * the worker, so the worker's own loop stays live), in a herd_stream_next()
 * loop over a slow "count" stream, or in a herd_master_spawn() of a worker
 * whose init is slow. Nothing processes the other connections meanwhile. Before
 * libherd sent their heartbeats from inside its waits, herdd closed the
 * master connection after 300 ms ("nothing received") and killed the worker
 * in the middle of the call. The waits here are the time under test, not
 * sleeps for an event.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "ht-example.h"

#define HB_INTERVAL_MS 50
#define HB_TIMEOUT_MS  300
/* How long each test blocks: several heartbeat timeouts. */
#define HOLD_MS (6 * HB_TIMEOUT_MS)

static herd_master *
connect_master(void)
{
	json_t *settings = json_pack("{s:i, s:i}", "heartbeat_interval_ms", ht_ms(HB_INTERVAL_MS),
	    "heartbeat_timeout_ms", ht_ms(HB_TIMEOUT_MS));
	herd_master *m = ht_herd_master_ok(settings);

	json_decref(settings);
	return m;
}

/* Counts the master's events but "ready": any would mean herdd stopped or lost the worker. */
static void
count_event(herd_master *m, const char *event, const char *id, const char *message, json_t *tail,
    json_t *worker, void *userdata)
{
	int *n = userdata;

	if (strcmp(event, "ready") != 0)
		(*n)++;
}

/*
 * The master survived the wait: its connection is open, and herdd (asked on a
 * connection of its own, not the master's) still has w ready and owned by that
 * connection, so it never saw the master go.
 */
static void
assert_master_alive(herd_master *m, const herd_worker *w)
{
	json_int_t number =
	    json_integer_value(json_object_get(herd_master_get_server_info(m), "connection"));
	struct ht_conn *c = ht_herdd_open(ht_herdd, "inspector", "keepalive-test");
	json_t *record, *list = NULL;

	ck_assert_int_eq(herd_conn_is_closed(herd_master_get_conn(m)), 0);
	ck_assert_ptr_nonnull(c);
	record = ht_herdd_find(c, herd_worker_id(w));
	ck_assert_ptr_nonnull(record);
	ck_assert_str_eq(json_string_value(json_object_get(record, "state")), "ready");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(record, "owner"), "connection")),
	    number);
	ck_assert(ht_pid_alive(herd_worker_pid(w)));
	json_decref(record);
	ht_conn_close(c);
	/* And the master connection still works. */
	ck_assert_int_eq(herd_master_list(m, false, &list), 0);
	ck_assert_int_eq(json_array_size(json_object_get(list, "workers")), 1);
	json_decref(list);
}

/* A blocking call longer than the heartbeat timeout: the master and a second, idle
 * connection to the same worker both stay open. */
START_TEST(test_blocking_call_keeps_others_alive)
{
	herd_master *m = connect_master();
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *busy = ht_herd_worker_connect_ok(w), *idle = ht_herd_worker_connect_ok(w);
	json_t *result = NULL;
	int64_t start;
	int events = 0;

	herd_master_on_event(m, count_event, &events);
	start = ht_now_ms();
	ck_assert_int_eq(
	    herd_call(busy, "sleep", ht_args("{s:i}", "ms", ht_ms(HOLD_MS)), 0, &result), 0);
	ck_assert_int_ge(ht_now_ms() - start, ht_ms(HOLD_MS));
	json_decref(result);

	assert_master_alive(m, w);
	/* The idle connection was not closed by the worker for silence, nor by us. */
	ck_assert_int_eq(herd_conn_is_closed(idle), 0);
	ck_assert_int_eq(herd_call(idle, "echo", ht_args("[i]", 7), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(json_array_get(result, 0)), 7);
	json_decref(result);
	ck_assert_int_eq(herd_conn_is_closed(busy), 0);
	ck_assert_int_eq(events, 0);

	herd_conn_unref(idle);
	herd_conn_unref(busy);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* An iterator read item by item over a stream that lasts several heartbeat timeouts. */
START_TEST(test_stream_next_keeps_master_alive)
{
	herd_master *m = connect_master();
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *conn = ht_herd_worker_connect_ok(w);
	int n = HOLD_MS / HB_INTERVAL_MS + 1, seen = 0, r;
	herd_stream *s = NULL;
	json_t *item = NULL;
	int64_t start = ht_now_ms();

	ck_assert_int_eq(herd_stream_open(conn, "count",
	                     ht_args("{s:i, s:i}", "n", n, "delay_ms", ht_ms(HB_INTERVAL_MS)), NULL,
	                     NULL, NULL, &s),
	    0);
	while ((r = herd_stream_next(s, 0, &item)) == 1) {
		ck_assert_int_eq(json_integer_value(item), seen++);
		json_decref(item);
	}
	ck_assert_msg(r == 0, "stream ended with %s", strerror(-r));
	ck_assert_int_eq(seen, n);
	/* Items 0..n-1, a delay between each two. */
	ck_assert_int_ge(ht_now_ms() - start, (n - 1) * ht_ms(HB_INTERVAL_MS));
	herd_stream_unref(s);

	assert_master_alive(m, w);
	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* The other way round: blocked on the master (a spawn whose init is slow), the
 * connection to the first worker stays open. */
START_TEST(test_master_request_keeps_worker_conn_alive)
{
	herd_master *m = connect_master();
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL), *slow;
	herd_conn *conn = ht_herd_worker_connect_ok(w);
	json_t *result = NULL;
	int64_t start = ht_now_ms();

	slow = ht_herd_spawn_ok(
	    m, "HERD_TESTWORKER", json_pack("{s:i}", "init_delay_ms", ht_ms(HOLD_MS)));
	ck_assert_int_ge(ht_now_ms() - start, ht_ms(HOLD_MS));

	ck_assert_int_eq(herd_conn_is_closed(conn), 0);
	ck_assert_int_eq(herd_call(conn, "echo", ht_args("[i]", 8), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(json_array_get(result, 0)), 8);
	json_decref(result);

	herd_conn_unref(conn);
	herd_worker_unref(slow);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

struct caller {
	const herd_worker *w;
	int64_t until;
	int calls;
	int failed; /* the first failure's -errno, or 0 */
	bool idle_open;
};

/* Another thread's busy connection and idle one, next to the main thread's wait. */
static void *
caller_thread(void *arg)
{
	struct caller *k = arg;
	herd_conn *busy = NULL, *idle = NULL;
	json_t *args = json_pack("[i]", 1), *result = NULL;
	int r;

	if (herd_worker_connect(k->w, NULL, &busy, NULL) < 0 ||
	    herd_worker_connect(k->w, NULL, &idle, NULL) < 0) {
		k->failed = -ENOTCONN;
		goto out;
	}
	while (ht_now_ms() < k->until) {
		r = herd_call(busy, "echo", args, 0, &result);
		json_decref(result);
		result = NULL;
		if (r < 0) {
			k->failed = r;
			break;
		}
		k->calls++;
	}
	k->idle_open =
	    herd_conn_is_closed(idle) == 0 && herd_call(idle, "echo", args, 0, &result) == 0;
	json_decref(result);
out:
	herd_conn_unref(idle);
	herd_conn_unref(busy);
	json_decref(args);
	return NULL;
}

/*
 * Two threads: while the main thread blocks in a long call, another one calls
 * as fast as it can on its own connection and leaves a second one idle. The
 * keepalive passes of both threads cross (each may send on the other's
 * connections); nothing breaks, nothing times out. Run under a sanitizer for
 * the locking.
 */
START_TEST(test_threads)
{
	herd_master *m = connect_master();
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *conn = ht_herd_worker_connect_ok(w);
	struct caller k = { .w = w, .until = ht_now_ms() + ht_ms(HOLD_MS) };
	json_t *result = NULL;
	pthread_t t;

	ck_assert_int_eq(pthread_create(&t, NULL, caller_thread, &k), 0);
	ck_assert_int_eq(
	    herd_call(conn, "sleep", ht_args("{s:i}", "ms", ht_ms(HOLD_MS)), 0, &result), 0);
	json_decref(result);
	ck_assert_int_eq(pthread_join(t, NULL), 0);
	ck_assert_msg(k.failed == 0, "the other thread's call failed: %s", strerror(-k.failed));
	ck_assert_int_gt(k.calls, 0);
	ck_assert(k.idle_open);

	assert_master_alive(m, w);
	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

HT_MAIN("client-keepalive",
    HT_CLIENT_HERDD_CASE("keepalive", 60, test_blocking_call_keeps_others_alive,
        test_stream_next_keeps_master_alive, test_master_request_keeps_worker_conn_alive,
        test_threads))
