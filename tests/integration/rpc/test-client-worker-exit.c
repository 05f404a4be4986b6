/* SPDX-License-Identifier: MIT */
/*
 * A worker that dies under its callers, against a real herdd: the error that
 * ends a pending call or stream on a herd_worker_connect() connection is
 * worker_exited with herdd's account (reason, signal, stderr tail), not a bare
 * connection_closed to be matched with on_failure by worker id. Also the
 * scoped call of a spawned worker and the process roles on both sides.
 */
#include <errno.h>
#include <string.h>

#include <check.h>

#include "ht-example.h"

/* err is worker_exited for worker w: crashed by SIGABRT after writing line to stderr. */
static void
assert_crashed(herd_error *err, const herd_worker *w, const char *line)
{
	json_t *data = herd_error_data(err), *tail, *v;
	bool found = false;
	size_t i;

	ck_assert_ptr_nonnull(err);
	ck_assert_msg(herd_error_code(err) == HERD_E_WORKER_EXITED,
	    "expected worker_exited, got %s: %s", herd_error_name(err), herd_error_message(err));
	ck_assert_str_eq(herd_error_name(err), "worker_exited");
	ck_assert_str_eq(json_string_value(json_object_get(data, "worker")), herd_worker_id(w));
	ck_assert_str_eq(json_string_value(json_object_get(data, "reason")), "crashed");
	ck_assert_str_eq(json_string_value(json_object_get(data, "signal")), "SIGABRT");
	ck_assert_msg(
	    strstr(herd_error_message(err), "SIGABRT"), "message: %s", herd_error_message(err));
	tail = json_object_get(data, "stderr_tail");
	json_array_foreach(tail, i, v)
		found = found || (json_is_string(v) && strstr(json_string_value(v), line));
	ck_assert_msg(found, "\"%s\" not in the stderr tail %s", line, ht_dump(tail));
}

START_TEST(test_crash_ends_stream_and_call)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *streaming = NULL, *calling = NULL;
	herd_stream *s = NULL;
	json_t *item = NULL;
	int r;

	ck_assert_int_eq(herd_worker_connect(w, NULL, &streaming, NULL), 0);
	ck_assert_int_eq(herd_worker_connect(w, NULL, &calling, NULL), 0);
	ck_assert_int_eq(
	    herd_call(calling, "stderr", ht_args("{s:s}", "text", "about to abort"), 0, NULL), 0);
	/* A long stream, one item every 20 ms: it is mid-way when the worker aborts. */
	ck_assert_int_eq(
	    herd_stream_open(streaming, "count", ht_args("{s:i, s:i}", "n", 100000, "delay_ms", 20),
	        NULL, NULL, NULL, &s),
	    0);
	ck_assert_int_eq(herd_stream_next(s, HT_USEC(5000), &item), 1);
	json_decref(item);

	/* The plain call that crashes the worker: its own error says how. */
	r = herd_call(calling, "crash", ht_args("{s:s}", "signal", "ABRT"), HT_USEC(10000), NULL);
	ck_assert_int_eq(r, -ECONNRESET);
	assert_crashed(herd_conn_last_error(calling), w, "about to abort");

	/* The stream: items already sent, then the same end. */
	while ((r = herd_stream_next(s, HT_USEC(10000), &item)) == 1)
		json_decref(item);
	ck_assert_int_eq(r, -ECONNRESET);
	assert_crashed(herd_stream_error(s), w, "about to abort");

	herd_stream_unref(s);
	herd_conn_unref(streaming);
	herd_conn_unref(calling);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

static void
call_outcome(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	ht_outcome_set(userdata, r, result, error);
}

/* A connection the program closes itself ends its calls with connection_closed, at once. */
START_TEST(test_local_close_stays_connection_closed)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *conn = NULL;
	struct ht_outcome o = { 0 };
	int64_t start;

	ck_assert_int_eq(herd_worker_connect(w, NULL, &conn, NULL), 0);
	ck_assert_int_eq(
	    herd_call_async(conn, "sleep", ht_args("{s:i}", "ms", 5000), call_outcome, &o, NULL),
	    0);
	start = ht_now_ms();
	ck_assert_int_eq(herd_conn_close(conn), 0);
	ck_assert_int_eq(o.calls, 1);
	ck_assert_int_eq(o.r, -ECONNRESET);
	ck_assert_str_eq(o.name, "connection_closed");
	ck_assert_int_lt(ht_now_ms() - start, 500);
	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

START_TEST(test_worker_call_once_and_roles)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_error *err = NULL;
	json_t *result = NULL;

	ck_assert_int_eq(
	    herd_worker_call_once(w, "sum", ht_args("{s:i}", "n", 10), 0, &result, &err), 0);
	ck_assert_ptr_null(err);
	ck_assert_int_eq(json_integer_value(result), 45);
	json_decref(result);
	ck_assert_int_eq(
	    herd_worker_call_once(w, "fail", ht_args("{s:s}", "message", "no"), 0, &result, &err),
	    -EREMOTEIO);
	ck_assert_ptr_null(result);
	ck_assert_str_eq(herd_error_name(err), "function_failed");
	err = herd_error_unref(err);

	/* This process is a master; herdd's worker serves under supervision. */
	ck_assert_int_eq(herd_process_role() & HERD_ROLE_MASTER, HERD_ROLE_MASTER);
	ck_assert_int_eq(herd_worker_call_once(w, "pid", NULL, 0, &result, NULL), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(result, "role")),
	    HERD_ROLE_WORKER | HERD_ROLE_SUPERVISED);
	json_decref(result);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

HT_MAIN("client-worker-exit",
    HT_CLIENT_HERDD_CASE("worker-exit", 60, test_crash_ends_stream_and_call,
        test_local_close_stays_connection_closed, test_worker_call_once_and_roles))
