/* SPDX-License-Identifier: MIT */
/*
 * libherd streams against the example worker: a counting pipe read through
 * callbacks and through the blocking iterator, cancelled after k items (the
 * worker's handler sees the cancel; the caller sees the end exactly once), a
 * state stream whose first item is the initial state, and client-to-server
 * sinks (rpc_parallel's direct pipes in both directions).
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>

#include "ht-check.h"
#include "ht-example.h"

static struct ht_example worker;

static herd_conn *
setup_conn(int mode)
{
	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(mode), NULL), 0);
	return ht_herd_connect(worker.socket, NULL);
}

static json_int_t
worker_cancelled(herd_conn *conn)
{
	json_t *stats = NULL;
	json_int_t n;

	ck_assert_int_eq(herd_call(conn, "stats", NULL, 0, &stats), 0);
	n = json_integer_value(json_object_get(stats, "cancelled"));
	json_decref(stats);
	return n;
}

struct counter {
	herd_stream *stream; /* for cancelling from on_item */
	int cancel_after; /* 0: never */
	int items;
	json_int_t next_expected;
	bool out_of_order;
	bool saw_initial;
	struct ht_outcome end;
};

static void
on_item(herd_stream *s, json_t *item, bool initial, void *userdata)
{
	struct counter *c = userdata;

	c->saw_initial = c->saw_initial || initial;
	if (!json_is_integer(item) || json_integer_value(item) != c->next_expected)
		c->out_of_order = true;
	c->next_expected++;
	c->items++;
	ck_assert_int_eq(c->end.calls, 0);
	if (c->cancel_after && c->items == c->cancel_after)
		ck_assert_int_eq(herd_stream_cancel(s), 0);
}

static void
on_end(herd_stream *s, int r, json_t *result, herd_error *error, void *userdata)
{
	struct counter *c = userdata;

	ht_outcome_set(&c->end, r, result, error);
}

static void
drive(herd_conn *conn, const int *flag)
{
	int64_t deadline = ht_now_ms() + ht_ms(20000);

	while (!*flag) {
		ck_assert_msg(ht_now_ms() < deadline, "stream did not end in time");
		ck_assert_int_ge(herd_conn_wait(conn, HT_USEC(1000)), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
	}
}

START_TEST(test_count_callbacks)
{
	struct counter c = { 0 };
	herd_conn *conn = setup_conn(_i);

	ck_assert_int_eq(
	    herd_stream_open(conn, "count", ht_args("{s:i}", "n", 50), on_item, on_end, &c, NULL),
	    0);
	drive(conn, &c.end.calls);
	ck_assert_int_eq(c.items, 50);
	ck_assert(!c.out_of_order);
	ck_assert(!c.saw_initial);
	ck_assert_int_eq(c.end.calls, 1);
	ck_assert_int_eq(c.end.r, 0);
	ck_assert_int_eq(json_integer_value(json_object_get(c.end.result, "count")), 50);
	herd_conn_unref(conn);
	ck_assert_int_eq(c.end.calls, 1);
}
END_TEST

/*
 * A stream faster than its reader keeps the worker's output above its
 * high-water mark, so the worker stops reading (and so hears none of the
 * client's heartbeats) for longer than the heartbeat timeout. A reader that
 * keeps taking the output is alive: the connection must survive.
 */
START_TEST(test_slow_reader_outlives_heartbeat_timeout)
{
	/* Under valgrind one read's worth of items takes this reader longer than 300 ms. */
	int k = ht_valgrind_slow();
	json_t *settings = json_pack("{s:i, s:i}", "heartbeat_interval_ms", k * ht_ms(50),
	    "heartbeat_timeout_ms", k * ht_ms(300));
	struct timespec slow = { 0, ht_ms(30) * 1000000L };
	struct counter c = { 0 };
	herd_conn *conn = NULL;
	int64_t until;

	/*
	 * A forked worker runs under valgrind too, where one loop pass refilling its
	 * 1 MiB of output outlasts any timeout worth waiting for: the exec'd one runs
	 * natively, so under valgrind only it is tested.
	 */
	if (k > 1 && HT_MODE(_i) == HT_FORK) {
		json_decref(settings);
		return;
	}
	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(_i), NULL), 0);
	ck_assert_int_eq(herd_conn_connect(worker.socket, NULL, settings, &conn, NULL), 0);
	ck_assert_int_eq(herd_stream_open(conn, "count", ht_args("{s:i}", "n", 100000000), on_item,
	                     on_end, &c, &c.stream),
	    0);
	/* The slowness of this reader is what is under test: it pauses between reads. */
	until = ht_now_ms() + k * ht_ms(1500);
	while (ht_now_ms() < until) {
		ck_assert_int_ge(herd_conn_wait(conn, 100000), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
		ck_assert_msg(
		    !herd_conn_is_closed(conn), "closed after %d items (%s)", c.items, c.end.name);
		nanosleep(&slow, NULL);
	}
	ck_assert_int_gt(c.items, 0);
	ck_assert_int_eq(c.end.calls, 0);
	ck_assert_int_eq(herd_stream_cancel(c.stream), 0);
	drive(conn, &c.end.calls);
	ck_assert_int_eq(c.end.r, -ECANCELED);
	herd_stream_unref(c.stream);
	herd_conn_unref(conn);
	json_decref(settings);
}
END_TEST

/* Opens an iterator stream (no callbacks) on fn with args (borrowed); fails the test if it cannot. */
static herd_stream *
open_iterator(herd_conn *conn, const char *fn, json_t *args)
{
	herd_stream *s = NULL;

	ck_assert_int_eq(herd_stream_open(conn, fn, args, NULL, NULL, NULL, &s), 0);
	return s;
}

START_TEST(test_count_iterator)
{
	herd_conn *conn = setup_conn(_i);
	herd_stream *s;
	json_t *item = NULL;
	int r, n = 0;

	s = open_iterator(conn, "count", ht_args("{s:i, s:i}", "n", 5, "delay_ms", 2));
	while ((r = herd_stream_next(s, HT_USEC(10000), &item)) == 1) {
		ck_assert_int_eq(json_integer_value(item), n);
		ck_assert_int_eq(herd_stream_item_initial(s), 0);
		json_decref(item);
		n++;
	}
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(n, 5);
	ck_assert_int_eq(herd_stream_is_done(s), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(herd_stream_result(s), "count")), 5);
	/* The end repeats; it is not delivered twice to anyone. */
	ck_assert_int_eq(herd_stream_next(s, 0, &item), 0);
	ck_assert_int_eq(herd_stream_cancel(s), -EALREADY);
	herd_stream_unref(s);
	herd_conn_unref(conn);
}
END_TEST

START_TEST(test_cancel_after_k)
{
	struct counter c = { .cancel_after = 3 };
	herd_conn *conn = setup_conn(_i);
	json_int_t before = worker_cancelled(conn);
	json_t *result = NULL;

	ck_assert_int_eq(
	    herd_stream_open(conn, "count", ht_args("{s:i, s:i}", "n", 100000, "delay_ms", 1),
	        on_item, on_end, &c, &c.stream),
	    0);
	drive(conn, &c.end.calls);
	ck_assert_int_eq(c.end.calls, 1);
	ck_assert_int_eq(c.end.r, -ECANCELED);
	ck_assert_str_eq(c.end.name, "cancelled");
	/* Items arriving after the cancel are dropped, not delivered. */
	ck_assert_int_eq(c.items, 3);
	ck_assert_int_eq(herd_stream_cancel(c.stream), -EALREADY);
	/* The handler saw the cancel. */
	ck_assert_int_eq(worker_cancelled(conn), before + 1);
	/* And the connection carries on. */
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 861);
	json_decref(result);
	herd_stream_unref(c.stream);
	herd_conn_unref(conn);
	ck_assert_int_eq(c.end.calls, 1);
}
END_TEST

START_TEST(test_cancel_iterator)
{
	herd_conn *conn = setup_conn(_i);
	json_int_t before = worker_cancelled(conn);
	herd_stream *s;
	json_t *item = NULL;

	s = open_iterator(conn, "count", ht_args("{s:i, s:i}", "n", 1000, "delay_ms", 1));
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(herd_stream_next(s, HT_USEC(10000), &item), 1);
		json_decref(item);
	}
	ck_assert_int_eq(herd_stream_cancel(s), 0);
	ck_assert_int_eq(herd_stream_next(s, HT_USEC(10000), &item), -ECANCELED);
	ck_assert_str_eq(herd_error_name(herd_stream_error(s)), "cancelled");
	ck_assert_int_eq(herd_stream_next(s, 0, &item), -ECANCELED);
	ck_assert_int_eq(worker_cancelled(conn), before + 1);
	herd_stream_unref(s);
	herd_conn_unref(conn);
}
END_TEST

START_TEST(test_state_initial)
{
	herd_conn *conn = setup_conn(_i);
	herd_stream *s;
	json_t *item = NULL;

	ck_assert_int_eq(herd_oneway(conn, "note", ht_args("{s:s}", "text", "before")), 0);
	s = open_iterator(conn, "watch", ht_args("{s:i}", "updates", 2));
	ck_assert_int_eq(herd_stream_next(s, HT_USEC(10000), &item), 1);
	ck_assert_int_eq(herd_stream_item_initial(s), 1);
	ck_assert_msg(json_is_array(item) && json_array_size(item) == 1 &&
	        json_is_string(json_array_get(item, 0)) &&
	        strcmp(json_string_value(json_array_get(item, 0)), "before") == 0,
	    "initial state %s", ht_dump(item));
	json_decref(item);

	ck_assert_int_eq(herd_oneway(conn, "note", ht_args("{s:s}", "text", "one")), 0);
	ck_assert_int_eq(herd_stream_next(s, HT_USEC(10000), &item), 1);
	ck_assert_int_eq(herd_stream_item_initial(s), 0);
	ck_assert_str_eq(json_string_value(item), "one");
	json_decref(item);
	ck_assert_int_eq(herd_oneway(conn, "note", ht_args("{s:s}", "text", "two")), 0);
	ck_assert_int_eq(herd_stream_next(s, HT_USEC(10000), &item), 1);
	ck_assert_str_eq(json_string_value(item), "two");
	json_decref(item);
	ck_assert_int_eq(herd_stream_next(s, HT_USEC(10000), &item), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(herd_stream_result(s), "updates")), 2);
	herd_stream_unref(s);
	herd_conn_unref(conn);
}
END_TEST

START_TEST(test_sink_sum)
{
	herd_conn *conn = setup_conn(_i);
	json_t *result = NULL;
	herd_sink *k = NULL;

	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, &k), 0);
	for (int i = 1; i <= 1000; i++) {
		json_t *item = json_integer(i);

		ck_assert_int_eq(herd_sink_send(k, item), 0);
		json_decref(item);
	}
	ck_assert_int_eq(herd_sink_finish(k, 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 500500);
	json_decref(result);
	/* Finished: nothing more can be sent, and finishing again repeats the outcome. */
	ck_assert_int_eq(herd_sink_send(k, NULL), -EPIPE);
	ck_assert_int_eq(herd_sink_finish(k, 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 500500);
	json_decref(result);
	herd_sink_unref(k);
	herd_conn_unref(conn);
}
END_TEST

static void
on_sink_done(herd_sink *k, int r, json_t *result, herd_error *error, void *userdata)
{
	ht_outcome_set(userdata, r, result, error);
}

START_TEST(test_sink_async_and_cancel)
{
	herd_conn *conn = setup_conn(_i);
	struct ht_outcome e = { 0 };
	json_t *two = json_integer(2);
	json_int_t before = worker_cancelled(conn);
	herd_sink *k = NULL;

	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, &k), 0);
	ck_assert_int_eq(herd_sink_send(k, two), 0);
	ck_assert_int_eq(herd_sink_send(k, two), 0);
	ck_assert_int_eq(herd_sink_finish_async(k, on_sink_done, &e), 0);
	ck_assert_int_eq(herd_sink_finish_async(k, on_sink_done, &e), -EINVAL);
	drive(conn, &e.calls);
	ck_assert_int_eq(e.calls, 1);
	ck_assert_int_eq(e.r, 0);
	ck_assert_int_eq(json_integer_value(e.result), 4);
	herd_sink_unref(k);

	/* A cancelled sink ends as cancelled, and the handler is told. */
	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, &k), 0);
	ck_assert_int_eq(herd_sink_send(k, two), 0);
	ck_assert_int_eq(herd_sink_cancel(k), 0);
	ck_assert_int_eq(herd_sink_send(k, two), -EPIPE);
	ck_assert_int_eq(herd_sink_finish(k, HT_USEC(10000), NULL), -ECANCELED);
	ck_assert_str_eq(herd_error_name(herd_sink_error(k)), "cancelled");
	ck_assert_int_eq(worker_cancelled(conn), before + 1);
	herd_sink_unref(k);
	json_decref(two);
	herd_conn_unref(conn);
}
END_TEST

struct closer {
	herd_conn *conn;
	int items;
	struct ht_outcome end;
};

static void
close_on_second(herd_stream *s, json_t *item, bool initial, void *userdata)
{
	struct closer *c = userdata;

	if (++c->items == 2)
		ck_assert_int_eq(herd_conn_close(c->conn), 0);
}

static void
closer_end(herd_stream *s, int r, json_t *result, herd_error *error, void *userdata)
{
	struct closer *c = userdata;

	ht_outcome_set(&c->end, r, result, error);
}

/* Closing the connection from inside an item callback ends the stream once, at once. */
START_TEST(test_close_inside_item)
{
	herd_conn *conn = setup_conn(_i);
	struct closer c = { .conn = conn };

	ck_assert_int_eq(herd_stream_open(conn, "count", ht_args("{s:i}", "n", 100000),
	                     close_on_second, closer_end, &c, NULL),
	    0);
	while (!c.end.calls) {
		ck_assert_int_ge(herd_conn_wait(conn, HT_USEC(5000)), 0);
		ck_assert_int_ne(herd_conn_process(conn), -EINVAL);
	}
	ck_assert_int_eq(c.items, 2);
	ck_assert_int_eq(c.end.calls, 1);
	ck_assert_int_eq(c.end.r, -ECONNRESET);
	ck_assert_int_eq(herd_conn_process(conn), -ENOTCONN);
	herd_conn_unref(conn);
	ck_assert_int_eq(c.end.calls, 1);
}
END_TEST

HT_MAIN("client-streams",
    HT_CLIENT_CASE("streams", 60, 2, test_count_callbacks, test_count_iterator,
        test_slow_reader_outlives_heartbeat_timeout, test_cancel_after_k, test_cancel_iterator,
        test_state_initial, test_sink_sum, test_sink_async_and_cancel, test_close_inside_item))
