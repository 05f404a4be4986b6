/* SPDX-License-Identifier: MIT */
/*
 * libherd calls against the example worker, served both by the
 * rpc-example-worker executable and by a forked copy of this test: the
 * rpc_parallel examples (sum, product, a failing handler, a failing
 * connection-state init), one-way calls, timeouts, cancellation, 1,000
 * concurrent calls on one connection driven through the loop-independent
 * core, and the libev attachment.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <ev.h>
#include <herd/herd-ev.h>

#include "ht-check.h"
#include "ht-example.h"

static struct ht_example worker;

static void
setup_worker(int mode)
{
	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(mode), "{\"who\":\"test\"}"), 0);
}

START_TEST(test_sum_and_product)
{
	json_t *result = NULL;
	herd_conn *conn;

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);

	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, &result), 0);
	ck_assert_msg(json_integer_value(result) == 861, "sum 42 = %s", ht_dump(result));
	json_decref(result);

	ck_assert_int_eq(herd_call(conn, "product", ht_args("{s:i}", "n", 10), 0, &result), 0);
	ck_assert_msg(json_integer_value(result) == 3628800, "product 10 = %s", ht_dump(result));
	json_decref(result);

	/* A result nobody wants is fine too. */
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 3), 0, NULL), 0);
	ck_assert_ptr_null(herd_conn_unref(conn));
}
END_TEST

START_TEST(test_failure_keeps_connection)
{
	json_t *args = ht_args("{s:s}", "message", "the handler says no");
	json_t *result = NULL;
	herd_error *err;
	herd_conn *conn;

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);

	ck_assert_int_eq(herd_call(conn, "fail", args, 0, &result), -EREMOTEIO);
	ck_assert_ptr_null(result);
	err = herd_conn_last_error(conn);
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(herd_error_name(err), "function_failed");
	ck_assert_int_eq(herd_error_code(err), HERD_E_FUNCTION_FAILED);
	ck_assert_str_eq(herd_error_message(err), "the handler says no");
	ck_assert_str_eq(
	    json_string_value(json_object_get(herd_error_data(err), "name")), "function_failed");

	/* The same connection keeps working. */
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 861);
	json_decref(result);

	/* An unknown function is a remote error too, and the connection stays. */
	ck_assert_int_eq(herd_call(conn, "no_such_function", NULL, 0, NULL), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "method_not_found");
	ck_assert_int_eq(herd_conn_is_closed(conn), 0);
	herd_conn_unref(conn);
}
END_TEST

START_TEST(test_connection_init)
{
	json_t *init = json_pack("{s:s}", "fail_conn", "connection refused by init");
	json_t *result = NULL;
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	int fds = ht_count_fds(getpid());

	setup_worker(_i);
	fds = ht_count_fds(getpid());
	ck_assert_int_eq(herd_conn_connect(worker.socket, init, NULL, &conn, &err), -EREMOTEIO);
	ck_assert_ptr_null(conn);
	ck_assert_ptr_nonnull(err);
	ck_assert_str_eq(herd_error_name(err), "init_failed");
	ck_assert_msg(strstr(herd_error_message(err), "connection refused by init"), "message: %s",
	    herd_error_message(err));
	herd_error_unref(err);
	json_decref(init);
	ck_assert_int_eq(ht_count_fds(getpid()), fds);

	/* The argument reaches the connection's state, and the worker's init its own. */
	init = json_pack("{s:i}", "answer", 42);
	conn = ht_herd_connect(worker.socket, init);
	ck_assert_int_eq(herd_call(conn, "stats", NULL, 0, &result), 0);
	ck_assert(json_equal(json_object_get(result, "conn_init"), init));
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(result, "worker_init"), "who")),
	    "test");
	json_decref(result);
	json_decref(init);

	/* Server info from the handshake lists the functions. */
	ck_assert(json_is_array(json_object_get(herd_conn_get_server_info(conn), "functions")));
	herd_conn_unref(conn);
}
END_TEST

START_TEST(test_strings_and_oneway)
{
	char *text = NULL;
	json_t *notes = NULL;
	herd_conn *conn;

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(herd_call_str(conn, "sum", "{\"n\": 42}", &text), 0);
	ck_assert_str_eq(text, "861");
	free(text);
	ck_assert_int_eq(herd_call_str(conn, "sum", "{\"n\": ", &text), -EINVAL);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "invalid_params");

	/* One-way calls are sent in order before the call that reads their effect. */
	ck_assert_int_eq(herd_oneway(conn, "note", ht_args("{s:s}", "text", "first")), 0);
	ck_assert_int_eq(herd_oneway(conn, "note", ht_args("{s:s}", "text", "second")), 0);
	ck_assert_int_eq(herd_call(conn, "notes", NULL, 0, &notes), 0);
	ck_assert_msg(json_array_size(notes) == 2, "notes %s", ht_dump(notes));
	ck_assert_str_eq(json_string_value(json_array_get(notes, 0)), "first");
	ck_assert_str_eq(json_string_value(json_array_get(notes, 1)), "second");
	json_decref(notes);
	herd_conn_unref(conn);
}
END_TEST

START_TEST(test_bad_arguments)
{
	json_t *number = json_integer(3);
	herd_stream *s = NULL;
	herd_sink *k = NULL;
	herd_conn *conn;

	/* Every entry point refuses NULL and bad values without aborting. */
	ck_assert_int_eq(herd_conn_connect(NULL, NULL, NULL, &conn, NULL), -EINVAL);
	ck_assert_int_eq(herd_call(NULL, "sum", NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(herd_call_async(NULL, "sum", NULL, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(herd_call_cancel(NULL), -EINVAL);
	ck_assert_int_eq(herd_oneway(NULL, "note", NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_process(NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_get_fd(NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_get_events(NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_get_timeout(NULL, NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_close(NULL), -EINVAL);
	ck_assert_int_eq(herd_stream_next(NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(herd_sink_send(NULL, NULL), -EINVAL);
	ck_assert_int_eq(herd_sink_finish(NULL, 0, NULL), -EINVAL);
	ck_assert_ptr_null(herd_conn_unref(NULL));
	ck_assert_ptr_null(herd_pending_unref(NULL));
	ck_assert_ptr_null(herd_stream_unref(NULL));
	ck_assert_ptr_null(herd_sink_unref(NULL));
	ck_assert_ptr_null(herd_error_unref(NULL));
	ck_assert_ptr_null(herd_conn_last_error(NULL));

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(herd_call(conn, NULL, NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(herd_call(conn, "", NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(herd_call(conn, "hello", NULL, 0, NULL), -EINVAL);
	ck_assert_int_eq(herd_call(conn, "sum", number, 0, NULL), -EINVAL);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "invalid_params");
	ck_assert_int_eq(herd_call_async(conn, "sum", NULL, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(herd_stream_open(conn, "count", NULL, NULL, NULL, NULL, NULL), -EINVAL);
	ck_assert_int_eq(herd_stream_open(conn, "count", number, NULL, NULL, NULL, &s), -EINVAL);
	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, NULL), -EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_ptr_null(k);
	ck_assert_int_eq(herd_conn_attach_ev(conn, NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_on_close(NULL, NULL, NULL), -EINVAL);
	/* None of that disturbed the connection. */
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 2), 0, NULL), 0);
	herd_conn_close(conn);
	ck_assert_int_eq(herd_call(conn, "sum", NULL, 0, NULL), -ENOTCONN);
	ck_assert_int_eq(herd_conn_get_fd(conn), -ENOTCONN);
	ck_assert_int_eq(herd_conn_process(conn), -ENOTCONN);
	ck_assert_int_eq(herd_conn_close(conn), 0);
	herd_conn_unref(conn);
	json_decref(number);
}
END_TEST

START_TEST(test_timeout_then_usable)
{
	json_t *result = NULL;
	herd_conn *conn;

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(
	    herd_call(conn, "sleep", ht_args("{s:i}", "ms", 3000), HT_USEC(100), &result),
	    -ETIMEDOUT);
	ck_assert_ptr_null(result);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "timeout");
	/* The late reply, whenever it comes, is ignored; other calls go on. */
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 861);
	json_decref(result);
	herd_conn_unref(conn);
}
END_TEST

struct outcome {
	int calls;
	int r;
	json_int_t value;
	herd_conn *unref_conn; /* dropped from inside the callback */
};

static void
on_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	struct outcome *o = userdata;

	ck_assert_ptr_nonnull(conn);
	o->calls++;
	o->r = r;
	if (r == 0)
		o->value = json_is_integer(result) ? json_integer_value(result) : -1;
	else
		ck_assert_ptr_nonnull(error);
	if (o->unref_conn)
		o->unref_conn = herd_conn_unref(o->unref_conn);
}

START_TEST(test_cancel_async)
{
	struct outcome slow = { 0 }, fast = { 0 };
	herd_pending *call = NULL;
	herd_conn *conn;
	bool done = false;

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(
	    herd_call_async(conn, "sleep", ht_args("{s:i}", "ms", 5000), on_reply, &slow, &call),
	    0);
	ck_assert_int_eq(herd_call_cancel(call), 0);
	ck_assert_int_eq(slow.calls, 1);
	ck_assert_int_eq(slow.r, -ECANCELED);
	ck_assert_int_eq(herd_call_cancel(call), -EALREADY);
	herd_pending_unref(call);

	/* The connection goes on; the cancelled call's callback never runs again. */
	ck_assert_int_eq(
	    herd_call_async(conn, "sum", ht_args("{s:i}", "n", 42), on_reply, &fast, NULL), 0);
	while (!done) {
		ck_assert_int_ge(herd_conn_wait(conn, HT_USEC(5000)), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
		done = fast.calls > 0;
	}
	ck_assert_int_eq(fast.r, 0);
	ck_assert_int_eq(fast.value, 861);
	ck_assert_int_eq(slow.calls, 1);
	herd_conn_unref(conn);
}
END_TEST

#define N_CONCURRENT 1000

/* The outcome of n concurrent sum calls, one slot each (send_sums, check_sums). */
struct many {
	int n;
	int done;
	int failed;
	int calls[N_CONCURRENT];
	json_int_t values[N_CONCURRENT];
	struct ev_loop *loop; /* if set, broken once all n are done */
};

struct slot {
	struct many *m;
	int i;
};

static void
on_many(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	struct slot *s = userdata;

	s->m->calls[s->i]++;
	s->m->done++;
	if (r < 0)
		s->m->failed++;
	else
		s->m->values[s->i] = json_integer_value(result);
	if (s->m->loop && s->m->done == s->m->n)
		ev_break(s->m->loop, EVBREAK_ALL);
}

/* Starts sum {n: i} for i in 0..n-1 on conn, each reporting to its slot of m. */
static void
send_sums(herd_conn *conn, struct many *m, struct slot *slots, int n)
{
	m->n = n;
	for (int i = 0; i < n; i++) {
		json_t *args = json_pack("{s:i}", "n", i);

		slots[i] = (struct slot){ .m = m, .i = i };
		ck_assert_int_eq(herd_call_async(conn, "sum", args, on_many, &slots[i], NULL), 0);
		json_decref(args);
	}
}

/* Every call of send_sums() answered once, none failed, each with its own sum. */
static void
check_sums(const struct many *m)
{
	ck_assert_int_eq(m->done, m->n);
	ck_assert_int_eq(m->failed, 0);
	for (int i = 0; i < m->n; i++) {
		ck_assert_int_eq(m->calls[i], 1);
		ck_assert_int_eq(m->values[i], (json_int_t)i * (i - 1) / 2);
	}
}

/* Drives the connection the way a foreign event loop would: fd, events, deadline, process. */
static void
drive_until(herd_conn *conn, const int *counter, int target, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	while (*counter < target) {
		struct pollfd p = { .fd = herd_conn_get_fd(conn) };
		uint64_t t;
		int ms = (int)(deadline - ht_now_ms());

		ck_assert_msg(
		    ms > 0, "only %d of %d completions before the deadline", *counter, target);
		p.events = (short)herd_conn_get_events(conn);
		ck_assert_int_ge(p.fd, 0);
		ck_assert_int_eq(herd_conn_get_timeout(conn, &t), 0);
		if (t != HERD_TIMEOUT_INFINITE) {
			uint64_t now = (uint64_t)ht_now_ms() * 1000u; /* same clock, coarser */
			int until = t > now ? (int)((t - now) / 1000u) + 1 : 0;

			ms = until < ms ? until : ms;
		}
		ck_assert_int_ge(poll(&p, 1, ms), 0);
		while (herd_conn_process(conn) > 0)
			;
	}
}

START_TEST(test_concurrent_calls)
{
	static struct many m;
	static struct slot slots[N_CONCURRENT];
	herd_conn *conn;

	memset(&m, 0, sizeof(m));
	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);
	send_sums(conn, &m, slots, N_CONCURRENT);
	drive_until(conn, &m.done, N_CONCURRENT, ht_ms(30000));
	check_sums(&m);
	herd_conn_unref(conn);
}
END_TEST

static void
ev_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
	ck_abort_msg("the libev loop did not complete the calls in time");
}

START_TEST(test_libev_attach)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	static struct many m;
	static struct slot slots[100];
	ev_timer guard;
	herd_conn *conn;

	setup_worker(_i);
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(herd_conn_attach_ev(conn, loop), 0);
	ck_assert_int_eq(herd_conn_attach_ev(conn, loop), 0);
	memset(&m, 0, sizeof(m));
	m.loop = loop;
	send_sums(conn, &m, slots, 100);
	ev_timer_init(&guard, ev_guard, ht_ms(20000) / 1000.0, 0.);
	ev_timer_start(loop, &guard);
	ev_run(loop, 0);
	check_sums(&m);

	/* A blocking call on an attached connection works too. */
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, NULL), 0);
	ck_assert_int_eq(herd_conn_detach_ev(conn), 0);
	ev_timer_stop(loop, &guard);
	herd_conn_unref(conn);
	ev_loop_destroy(loop);
}
END_TEST

START_TEST(test_unref_inside_callback)
{
	struct outcome first = { 0 }, second = { 0 };
	herd_conn *conn;
	int fds;

	setup_worker(_i);
	fds = ht_count_fds(getpid());
	conn = ht_herd_connect(worker.socket, NULL);
	/* The first reply's callback drops the only reference: the second call must then end
	 * with connection_closed, exactly once, and nothing may touch freed memory. */
	first.unref_conn = conn;
	ck_assert_int_eq(
	    herd_call_async(conn, "sum", ht_args("{s:i}", "n", 1), on_reply, &first, NULL), 0);
	ck_assert_int_eq(
	    herd_call_async(conn, "sleep", ht_args("{s:i}", "ms", 5000), on_reply, &second, NULL),
	    0);
	while (first.calls == 0) {
		ck_assert_int_ge(herd_conn_wait(conn, HT_USEC(5000)), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
	}
	ck_assert_int_eq(first.r, 0);
	ck_assert_int_eq(second.calls, 1);
	ck_assert_int_eq(second.r, -ECONNRESET);
	ck_assert_int_eq(ht_count_fds(getpid()), fds);
}
END_TEST

START_TEST(test_no_fd_leak)
{
	int fds;

	setup_worker(_i);
	fds = ht_count_fds(getpid());
	for (int i = 0; i < 20; i++) {
		herd_conn *conn = ht_herd_connect(worker.socket, NULL);
		herd_stream *s = NULL;

		ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", i), 0, NULL), 0);
		/* Leave a stream open too: the close must end it. */
		ck_assert_int_eq(
		    herd_stream_open(conn, "count",
		        ht_args("{s:i, s:i}", "n", 100, "delay_ms", 1000), NULL, NULL, NULL, &s),
		    0);
		herd_conn_unref(conn);
		ck_assert_int_eq(herd_stream_is_done(s), 1);
		herd_stream_unref(s);
	}
	ck_assert_int_eq(ht_count_fds(getpid()), fds);
}
END_TEST

HT_MAIN("client-calls",
    HT_CLIENT_CASE("calls", 60, 2, test_sum_and_product, test_failure_keeps_connection,
        test_connection_init, test_strings_and_oneway, test_bad_arguments, test_timeout_then_usable,
        test_cancel_async, test_concurrent_calls, test_libev_attach, test_unref_inside_callback,
        test_no_fd_leak))
