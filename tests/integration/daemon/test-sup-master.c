/* SPDX-License-Identifier: MIT */
/*
 * The same failures seen through libherd's master API: a failure after a
 * function returned reaches on_failure with the worker's message and stderr
 * tail, a crash reaches it with the signal, and a clean shutdown does not.
 */
#include <errno.h>
#include <stdio.h>

#include <herd/herd.h>

#include "ht-check.h"
#include "ht-example.h"

/* Spawns the testworker through libherd and connects to it. */
static herd_worker *
spawn(herd_master *m, herd_conn **conn)
{
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);

	ck_assert_int_eq(herd_worker_connect(w, NULL, conn, NULL), 0);
	return w;
}

START_TEST(test_on_failure_gets_message_and_stderr)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_failures s = { 0 };
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w;
	herd_conn *conn;
	json_t *args, *res = NULL;

	ck_assert_int_eq(herd_master_on_failure(m, ht_on_failure, &s), 0);
	w = spawn(m, &conn);

	args = json_pack("{s:s}", "text", "loading the model");
	ck_assert_int_eq(herd_call(conn, "stderr", args, 0, NULL), 0);
	json_decref(args);
	args = json_pack("{s:i, s:s}", "ms", 50, "message", "model file is corrupt");
	ck_assert_int_eq(herd_call(conn, "fail_later", args, 0, &res), 0);
	json_decref(args);
	json_decref(res);
	/* The call succeeded; the failure comes afterwards, as an event. */
	ck_assert_int_eq(s.n, 0);

	ht_wait_failure(m, &s, ht_ms(5000));
	ck_assert_msg(s.n == 1, "on_failure ran %d times", s.n);
	ck_assert_str_eq(s.event, "failed");
	ck_assert_str_eq(s.id, herd_worker_id(w));
	ck_assert_str_eq(s.message, "model file is corrupt");
	ck_assert_msg(ht_lines_contain(s.tail, "loading the model"), "tail %s", ht_dump(s.tail));
	ck_assert_int_eq(ht_wait_pid_gone(herd_worker_pid(w), ht_ms(2000)), 0);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(1000)), 0);

	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

START_TEST(test_on_failure_crash_and_clean_stop)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_failures s = { 0 };
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w, *w2;
	herd_conn *conn, *conn2;
	json_t *args, *rec = NULL;

	ck_assert_int_eq(herd_master_on_failure(m, ht_on_failure, &s), 0);
	w = spawn(m, &conn);
	w2 = spawn(m, &conn2);

	/* A clean shutdown is no failure. */
	ck_assert_int_eq(herd_master_shutdown(m, herd_worker_id(w2), 1000, &rec), 0);
	ck_assert_str_eq(json_string_value(json_object_get(rec, "reason")), "shutdown");
	json_decref(rec);

	args = json_pack("{s:s}", "signal", "ABRT");
	ck_assert_int_lt(herd_call(conn, "crash", args, 0, NULL), 0);
	json_decref(args);
	ht_wait_failure(m, &s, ht_ms(5000));
	ck_assert_msg(s.n == 1, "on_failure ran %d times", s.n);
	ck_assert_str_eq(s.event, "crashed");
	ck_assert_str_eq(s.id, herd_worker_id(w));
	ck_assert_str_eq(json_string_value(json_object_get(s.worker, "signal")), "SIGABRT");
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(1000)), 0);

	herd_conn_unref(conn);
	herd_conn_unref(conn2);
	herd_worker_unref(w);
	herd_worker_unref(w2);
	herd_master_unref(m);
}
END_TEST

HT_MAIN("sup-master",
    HT_HERDD_CASE("on_failure", 30, ht_grace_args, test_on_failure_gets_message_and_stderr,
        test_on_failure_crash_and_clean_stop))
