/* SPDX-License-Identifier: MIT */
/*
 * The calling side's small conveniences: connect-call-close in one function,
 * a connection's counters, and which roles this process has taken on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "ht-example.h"

START_TEST(test_call_once)
{
	struct ht_server s;
	herd_error *err = NULL;
	json_t *result = NULL;
	char missing[256];

	ht_server_start_ok(&s, NULL, NULL);
	ck_assert_int_eq(
	    herd_call_once(s.path, "sum", ht_args("{s:i}", "n", 10), 0, &result, &err), 0);
	ck_assert_ptr_null(err);
	ck_assert_int_eq(json_integer_value(result), 45);
	json_decref(result);
	/* A remote error comes back as the error, the result untouched. */
	ck_assert_int_eq(
	    herd_call_once(s.path, "no_such_function", NULL, 0, &result, &err), -EREMOTEIO);
	ck_assert_ptr_null(result);
	ck_assert_str_eq(herd_error_name(err), "method_not_found");
	err = herd_error_unref(err);
	/* Nobody there: the connect's error. */
	snprintf(missing, sizeof(missing), "%s/missing.sock", s.dir);
	ck_assert_int_eq(herd_call_once(missing, "sum", NULL, 0, NULL, &err), -ENOENT);
	ck_assert_ptr_nonnull(err);
	err = herd_error_unref(err);
	ck_assert_int_eq(herd_call_once(NULL, "sum", NULL, 0, NULL, NULL), -EINVAL);
	ht_server_stop_ok(&s);
}
END_TEST

START_TEST(test_conn_stats)
{
	struct ht_server s;
	struct herd_conn_stats a, b;
	herd_conn *conn;

	ht_server_start_ok(&s, NULL, NULL);
	conn = ht_herd_connect(s.path, NULL);
	ck_assert_int_eq(herd_conn_get_stats(NULL, &a), -EINVAL);
	ck_assert_int_eq(herd_conn_get_stats(conn, NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_get_stats(conn, &a), 0);
	/* The hello went out and its answer came in. */
	ck_assert_uint_ge(a.messages_out, 1);
	ck_assert_uint_ge(a.messages_in, 1);
	ck_assert_uint_gt(a.bytes_in, 0);
	ck_assert_uint_gt(a.bytes_out, 0);
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 3), 0, NULL), 0);
	ck_assert_int_eq(herd_conn_get_stats(conn, &b), 0);
	ck_assert_uint_eq(b.messages_out - a.messages_out, 1);
	ck_assert_uint_eq(b.messages_in - a.messages_in, 1);
	ck_assert_uint_gt(b.bytes_out, a.bytes_out);
	ck_assert_uint_gt(b.bytes_in, a.bytes_in);
	/* The reply just arrived: the silence is short. */
	ck_assert_uint_lt(b.last_received_age_usec, HT_USEC(1000));
	herd_conn_close(conn);
	ck_assert_int_eq(herd_conn_get_stats(conn, &a), 0);
	ck_assert_uint_eq(a.messages_in, b.messages_in);
	herd_conn_unref(conn);
	ht_server_stop_ok(&s);
}
END_TEST

START_TEST(test_process_role)
{
	const char *fork_env = getenv("CK_FORK");
	struct ht_server s;

	/* A fresh test process has taken no role yet (without fork, the earlier tests served). */
	if (!fork_env || strcmp(fork_env, "no") != 0)
		ck_assert_int_eq(herd_process_role(), HERD_ROLE_NONE);
	ht_server_start_ok(&s, NULL, NULL);
	/* Serving on a thread of this process: a worker, not a supervised one. */
	ck_assert_int_eq(herd_process_role(), HERD_ROLE_WORKER);
	ht_server_stop_ok(&s);
	ck_assert_int_eq(herd_process_role(), HERD_ROLE_WORKER);
}
END_TEST

HT_MAIN("client-once", HT_CLIENT_CASE("once", 30, 0, test_call_once, test_conn_stats),
    HT_CLIENT_CASE("role", 30, 0, test_process_role))
