/* SPDX-License-Identifier: MIT */
/*
 * Every function kind on a worker's socket, as raw JSON lines: calls (now and
 * later), failures, pipes with cancel and backpressure, sinks, state streams,
 * oneway calls, concurrency, and what a closing connection does to its
 * pending requests.
 */
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ht-check.h"
#include "ht-example.h"

static struct ht_server S;

/* The case's checked setup: every test talks to a fresh in-process worker. */
static void
start(void)
{
	ht_server_start_ok(&S, json_pack("{s:s}", "hello", "there"), NULL);
}

/* The case's checked teardown: the worker stops, and the test left no fd open. */
static void
stop(void)
{
	ht_server_stop_ok(&S);
}

/* How many streams of the worker saw a cancel, as its stats tell c. */
static json_int_t
cancelled(struct ht_conn *c)
{
	json_t *reply = ht_call_ok(c, "stats", NULL);
	json_int_t n = json_integer_value(json_object_get(ht_assert_result(reply), "cancelled"));

	json_decref(reply);
	return n;
}

/* Subscribes c to herd.logs; returns the stream's id. */
static json_int_t
subscribe_logs(struct ht_conn *c)
{
	int64_t id = ht_conn_send_request(c, "herd.logs", NULL);

	ck_assert_int_gt(id, 0);
	/* A logged line proves the subscription is active before the test goes on. */
	json_decref(ht_call_ok(c, "log", json_pack("{s:s}", "message", "subscribed")));
	ck_assert(ht_conn_wait_log(c, id, "subscribed", ht_ms(5000)));
	return id;
}

START_TEST(test_calls)
{
	struct ht_conn *c;
	json_t *reply;

	c = ht_client_ok(S.path, NULL);
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 42), 861);
	ht_expect_int(c, "product", json_pack("{s:i}", "n", 20), 2432902008176640000LL);
	reply = ht_call_ok(c, "echo", json_pack("[i, s, {s:n}]", 1, "two", "three"));
	ck_assert_str_eq(ht_dump(ht_result(reply)), "[1,\"two\",{\"three\":null}]");
	json_decref(reply);
	/* Absent params reach the handler as null. */
	reply = ht_call_ok(c, "echo", NULL);
	ck_assert(json_is_null(ht_result(reply)));
	json_decref(reply);

	/* A handler failure is the caller's error; the connection stays usable. */
	reply = ht_call_ok(c, "fail", json_pack("{s:s}", "message", "it broke"));
	ck_assert_str_eq(ht_error_name(reply), "function_failed");
	ck_assert_str_eq(ht_error_message(reply), "it broke");
	json_decref(reply);
	ht_expect(c, "product", json_pack("{s:i}", "n", 21), "function_failed");
	ht_expect(c, "sum", json_pack("{s:s}", "n", "many"), "invalid_params");
	ht_expect(c, "no_such_function", NULL, "method_not_found");
	ht_expect(c, "herd.no_such_builtin", NULL, "method_not_found");
	/* A oneway function called as a request is refused, not run. */
	ht_expect(c, "note", json_pack("{s:s}", "text", "x"), "invalid_request");
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 4), 6);
	reply = ht_call_ok(c, "stats", NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "conn_calls")), 9);
	ck_assert_str_eq(json_string_value(json_object_get(
	                     json_object_get(ht_result(reply), "worker_init"), "hello")),
	    "there");
	json_decref(reply);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_async_and_concurrent)
{
	struct ht_conn *c[3];
	int64_t slow, fast, ids[3][100];
	json_t *reply;

	for (int i = 0; i < 3; i++) {
		c[i] = ht_hello_open(S.path, "client", NULL, NULL);
		ck_assert_ptr_nonnull(c[i]);
	}
	/* A reply sent later from a timer does not hold up the others. */
	slow = ht_conn_send_request(c[0], "sleep", json_pack("{s:i}", "ms", 300));
	fast = ht_conn_send_request(c[0], "sum", json_pack("{s:i}", "n", 3));
	reply = ht_conn_recv(c[0], ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), fast);
	json_decref(reply);
	reply = ht_conn_wait_reply(c[0], slow, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "slept")), 300);
	json_decref(reply);

	/* Many calls in flight on several connections, answered in any order. */
	for (int k = 0; k < 100; k++)
		for (int i = 0; i < 3; i++)
			ids[i][k] = ht_conn_send_request(c[i], k % 2 ? "sleep" : "sum",
			    k % 2 ? json_pack("{s:i}", "ms", 20 + k % 7)
			          : json_pack("{s:i}", "n", k));
	for (int i = 0; i < 3; i++) {
		for (int k = 0; k < 100; k++) {
			reply = ht_conn_wait_reply(c[i], ids[i][k], ht_ms(10000));
			ck_assert_msg(ht_result(reply), "call %d/%d: %s", i, k, ht_dump(reply));
			if (k % 2 == 0)
				ck_assert_int_eq(ht_int_result(reply), (long long)k * (k - 1) / 2);
			json_decref(reply);
		}
		ht_conn_close(c[i]);
	}
}
END_TEST

START_TEST(test_pipe)
{
	struct ht_conn *c;
	json_t *reply, *item;
	int64_t id;

	c = ht_client_ok(S.path, NULL);
	id = ht_conn_send_request(c, "count", json_pack("{s:i}", "n", 5));
	for (int i = 0; i < 5; i++) {
		item = ht_conn_next_item(c, id, ht_ms(5000));
		ck_assert_msg(item, "item %d missing", i);
		ck_assert_int_eq(json_integer_value(json_object_get(item, "item")), i);
		ck_assert_ptr_null(json_object_get(item, "initial"));
		json_decref(item);
	}
	reply = ht_conn_wait_reply(c, id, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "count")), 5);
	json_decref(reply);
	/* An empty pipe ends at once. */
	reply = ht_call_ok(c, "count", json_pack("{s:i}", "n", 0));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "count")), 0);
	json_decref(reply);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_pipe_cancel)
{
	struct ht_conn *c, *logs;
	json_t *item, *m;
	json_int_t log_id;
	int64_t id;
	int errors = 0, items_after = 0;

	logs = ht_client_ok(S.path, NULL);
	log_id = subscribe_logs(logs);
	c = ht_client_ok(S.path, NULL);
	id = ht_conn_send_request(c, "count", json_pack("{s:i, s:i}", "n", 1000000, "delay_ms", 5));
	for (int i = 0; i < 3; i++) {
		item = ht_conn_next_item(c, id, ht_ms(5000));
		ck_assert_msg(item, "item %d missing", i);
		json_decref(item);
	}
	ck_assert_int_eq(
	    ht_conn_notify(c, "herd.cancel", json_pack("{s:I}", "id", (json_int_t)id)), 0);
	/* The handler is told... */
	ck_assert(ht_conn_wait_log(logs, log_id, "count: cancelled", ht_ms(5000)));
	/* ...and the stream ends exactly once, with cancelled. A cancel sent again, or for
	 * an unknown id, is ignored; a later call proves everything before it arrived. */
	ck_assert_int_eq(
	    ht_conn_notify(c, "herd.cancel", json_pack("{s:I}", "id", (json_int_t)id)), 0);
	ck_assert_int_eq(ht_conn_notify(c, "herd.cancel", json_pack("{s:i}", "id", 999999)), 0);
	ht_conn_send_request(c, "sum", json_pack("{s:i}", "n", 3));
	for (;;) {
		m = ht_conn_recv(c, ht_ms(5000));
		ck_assert_ptr_nonnull(m);
		if (json_object_get(m, "method")) {
			/* Items written before the cancel was read may still arrive, but not after. */
			ck_assert_int_eq(errors, 0);
			items_after++;
		} else if (json_integer_value(json_object_get(m, "id")) == id) {
			ck_assert_str_eq(ht_error_name(m), "cancelled");
			errors++;
		} else {
			ck_assert_int_eq(ht_int_result(m), 3);
			json_decref(m);
			break;
		}
		json_decref(m);
	}
	ck_assert_int_eq(errors, 1);
	ck_assert_int_le(items_after, 2);
	ck_assert_int_eq(cancelled(c), 1);
	ht_conn_close(c);
	ht_conn_close(logs);
}
END_TEST

START_TEST(test_pipe_backpressure)
{
	struct ht_conn *c, *logs;
	const int n = 50000;
	json_t *item, *reply;
	json_int_t log_id;
	int64_t id;

	logs = ht_client_ok(S.path, NULL);
	log_id = subscribe_logs(logs);
	c = ht_client_ok(S.path, NULL);
	/* About 3 MB of items, far more than the socket and the high-water mark hold. */
	id = ht_conn_send_request(c, "count", json_pack("{s:i}", "n", n));
	/* While we do not read, the writer is told to wait (it logs that once). */
	ck_assert(
	    ht_conn_wait_log(logs, log_id, "count: the reader is slow; waiting", ht_ms(30000)));
	/* Nothing is lost or reordered when it resumes. */
	for (int i = 0; i < n; i++) {
		item = ht_conn_next_item(c, id, ht_ms(10000));
		ck_assert_msg(item, "item %d missing", i);
		ck_assert_int_eq(json_integer_value(json_object_get(item, "item")), i);
		json_decref(item);
	}
	reply = ht_conn_wait_reply(c, id, ht_ms(10000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "count")), n);
	json_decref(reply);
	ht_conn_close(c);
	ht_conn_close(logs);
}
END_TEST

START_TEST(test_sink)
{
	struct ht_conn *c;
	json_t *reply;
	int64_t id;

	c = ht_client_ok(S.path, NULL);
	id = ht_conn_send_request(c, "sum_stream", NULL);
	for (int i = 1; i <= 100; i++)
		ck_assert_int_eq(ht_conn_notify(c, "herd.item",
		                     json_pack("{s:I, s:i}", "id", (json_int_t)id, "item", i)),
		    0);
	ck_assert_int_eq(
	    ht_conn_notify(c, "herd.end", json_pack("{s:I}", "id", (json_int_t)id)), 0);
	reply = ht_conn_wait_reply(c, id, ht_ms(5000));
	ck_assert_int_eq(ht_int_result(reply), 5050);
	json_decref(reply);

	/* A bad item fails the sink; later items for it are ignored; the connection lives. */
	id = ht_conn_send_request(c, "sum_stream", NULL);
	ht_conn_notify(c, "herd.item", json_pack("{s:I, s:i}", "id", (json_int_t)id, "item", 1));
	ht_conn_notify(c, "herd.item", json_pack("{s:I, s:s}", "id", (json_int_t)id, "item", "x"));
	ht_conn_notify(c, "herd.item", json_pack("{s:I, s:i}", "id", (json_int_t)id, "item", 2));
	ht_conn_notify(c, "herd.end", json_pack("{s:I}", "id", (json_int_t)id));
	reply = ht_conn_wait_reply(c, id, ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "function_failed");
	ck_assert_str_eq(ht_error_message(reply), "item 1 is not an integer");
	json_decref(reply);

	/* A cancelled sink ends with cancelled. */
	id = ht_conn_send_request(c, "sum_stream", NULL);
	ht_conn_notify(c, "herd.item", json_pack("{s:I, s:i}", "id", (json_int_t)id, "item", 1));
	ht_cancel_ok(c, id);
	/* Malformed stream notifications are ignored. */
	ht_conn_notify(c, "herd.item", json_pack("{s:s}", "nothing", "here"));
	ht_conn_notify(c, "herd.end", NULL);
	ck_assert_int_eq(cancelled(c), 1);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_state_and_oneway)
{
	struct ht_conn *a, *b;
	json_t *item, *reply;
	int64_t id;

	a = ht_hello_open(S.path, "client", NULL, NULL);
	b = ht_hello_open(S.path, "client", NULL, NULL);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_int_eq(ht_conn_notify(b, "note", json_pack("{s:s}", "text", "first")), 0);
	/* A oneway call is never answered; the next call on b shows it ran before. */
	reply = ht_call_ok(b, "notes", NULL);
	ck_assert_str_eq(ht_dump(ht_result(reply)), "[\"first\"]");
	json_decref(reply);

	id = ht_conn_send_request(a, "watch", json_pack("{s:i}", "updates", 2));
	item = ht_conn_next_item(a, id, ht_ms(5000));
	ck_assert_ptr_nonnull(item);
	ck_assert(json_is_true(json_object_get(item, "initial")));
	ck_assert_str_eq(ht_dump(json_object_get(item, "item")), "[\"first\"]");
	json_decref(item);
	ht_conn_notify(b, "note", json_pack("{s:s}", "text", "second"));
	ht_conn_notify(b, "note", json_pack("{s:s}", "text", "third"));
	/* A bad oneway argument is only logged: nothing comes back, b still works. */
	ht_conn_notify(b, "note", json_pack("{s:i}", "text", 3));
	for (int i = 0; i < 2; i++) {
		item = ht_conn_next_item(a, id, ht_ms(5000));
		ck_assert_ptr_nonnull(item);
		ck_assert_ptr_null(json_object_get(item, "initial"));
		ck_assert_str_eq(
		    json_string_value(json_object_get(item, "item")), i == 0 ? "second" : "third");
		json_decref(item);
	}
	reply = ht_conn_wait_reply(a, id, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "updates")), 2);
	json_decref(reply);
	reply = ht_call_ok(b, "notes", NULL);
	ck_assert_str_eq(ht_dump(ht_result(reply)), "[\"first\",\"second\",\"third\"]");
	json_decref(reply);
	/* A notification naming a call function, or nothing known, is ignored. */
	ht_conn_notify(b, "sum", json_pack("{s:i}", "n", 3));
	ht_conn_notify(b, "nothing_here", NULL);
	ht_expect_int(b, "sum", json_pack("{s:i}", "n", 3), 3);
	ht_conn_close(a);
	ht_conn_close(b);
}
END_TEST

START_TEST(test_close_cancels)
{
	struct ht_conn *a, *logs;
	json_int_t log_id;

	logs = ht_client_ok(S.path, NULL);
	log_id = subscribe_logs(logs);
	a = ht_client_ok(S.path, NULL);
	ht_conn_send_request(a, "sleep", json_pack("{s:i}", "ms", 600000));
	ht_conn_send_request(a, "count", json_pack("{s:i, s:i}", "n", 1000000, "delay_ms", 1000));
	ht_conn_send_request(a, "sum_stream", NULL);
	/* A call on a proves the three requests above were dispatched. */
	json_decref(ht_call_ok(a, "sum", json_pack("{s:i}", "n", 1)));
	ht_conn_close(a);
	ck_assert(ht_conn_wait_log(logs, log_id, "sleep: cancelled", ht_ms(5000)));
	/* The three are cancelled in some order; wait for the other two as well. */
	while (cancelled(logs) < 3)
		ck_assert(ht_conn_wait_log(logs, log_id, "cancelled", ht_ms(5000)));
	ht_conn_close(logs);
}
END_TEST

HT_MAIN("worker-kinds",
    HT_CASE_WITH("kinds", 60, start, stop, test_calls, test_async_and_concurrent, test_pipe,
        test_pipe_cancel, test_pipe_backpressure, test_sink, test_state_and_oneway,
        test_close_cancels))
