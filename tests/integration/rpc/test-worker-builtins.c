/* SPDX-License-Identifier: MIT */
/*
 * The built-ins every worker serves (herd.functions, herd.settings, herd.logs,
 * herd.close_server, herd.shutdown) and the settings precedence: the
 * HERD_RPC_SETTINGS environment variable over code over defaults.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ht-check.h"
#include "ht-example.h"

static struct ht_server S;

START_TEST(test_functions)
{
	struct ht_conn *c;
	json_t *hello, *reply;

	ht_server_start_ok(&S, NULL, NULL);
	c = ht_conn_open_ok(S.path);
	hello = ht_conn_hello(c, "client", NULL, ht_ms(5000));
	reply = ht_call_ok(c, "herd.functions", NULL);
	ck_assert(json_equal(ht_result(reply), json_object_get(ht_result(hello), "functions")));
	ck_assert_int_eq(json_array_size(ht_result(reply)), 13);
	json_decref(reply);
	json_decref(hello);
	/* Built-ins take no parameters. */
	ht_expect(c, "herd.functions", json_pack("{s:i}", "x", 1), "invalid_params");
	reply = ht_call_ok(c, "herd.functions", json_object());
	ck_assert(json_is_array(ht_result(reply)));
	json_decref(reply);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_settings_precedence)
{
	struct ht_conn *c;
	json_t *reply, *s;

	/* The environment wins field by field; code fills the rest; defaults the others. */
	setenv("HERD_RPC_SETTINGS", "{\"max_message_size\": 4096}", 1);
	ht_server_start_ok(&S, NULL,
	    json_pack("{s:i, s:i}", "max_message_size", 2048, "handshake_timeout_ms", 1234));
	unsetenv("HERD_RPC_SETTINGS");
	c = ht_client_ok(S.path, NULL);
	reply = ht_call_ok(c, "herd.settings", NULL);
	s = ht_result(reply);
	ck_assert_int_eq(json_integer_value(json_object_get(s, "max_message_size")), 4096);
	ck_assert_int_eq(json_integer_value(json_object_get(s, "handshake_timeout_ms")), 1234);
	ck_assert_int_eq(json_integer_value(json_object_get(s, "heartbeat_interval_ms")), 1000);
	ck_assert_int_eq(json_integer_value(json_object_get(s, "max_pending")), 1024);
	json_decref(reply);
	ht_conn_close(c);
	ht_server_stop_ok(&S);

	/* A broken environment value is refused, not ignored. */
	setenv("HERD_RPC_SETTINGS", "{\"max_message_size\": \"big\"}", 1);
	ck_assert_int_eq(ht_server_start(&S, &example_worker_type, NULL, NULL), -EINVAL);
	unsetenv("HERD_RPC_SETTINGS");
	ht_teardown();
}
END_TEST

/* The next item of the herd.logs stream id on c must be message at level. */
static void
expect_log(struct ht_conn *c, int64_t id, const char *level, const char *message)
{
	json_t *params = ht_conn_next_item(c, id, ht_ms(5000));
	json_t *item = json_object_get(params, "item");
	const char *t = json_string_value(json_object_get(item, "time"));

	ck_assert_msg(params, "no log item \"%s\"", message);
	ck_assert_str_eq(json_string_value(json_object_get(item, "level")), level);
	ck_assert_str_eq(json_string_value(json_object_get(item, "message")), message);
	/* RFC 3339 UTC with milliseconds: 2026-01-02T03:04:05.678Z */
	ck_assert_msg(t && strlen(t) == 24 && t[10] == 'T' && t[19] == '.' && t[23] == 'Z',
	    "time %s", t ? t : "(none)");
	json_decref(params);
}

START_TEST(test_logs)
{
	struct ht_conn *a, *b, *c;
	int64_t la, lb;

	ht_server_start_ok(&S, NULL, NULL);
	a = ht_hello_open(S.path, "client", NULL, NULL);
	b = ht_hello_open(S.path, "client", NULL, NULL);
	c = ht_hello_open(S.path, "client", NULL, NULL);
	ck_assert(a && b && c);
	/* Two subscribers, on two connections, both see everything logged after they subscribed. */
	la = ht_conn_send_request(a, "herd.logs", NULL);
	lb = ht_conn_send_request(b, "herd.logs", NULL);
	/* Round trips on a and b prove both subscriptions are in place. */
	json_decref(ht_call_ok(a, "stats", NULL));
	json_decref(ht_call_ok(b, "stats", NULL));
	json_decref(ht_call_ok(c, "sum", json_pack("{s:i}", "n", 0)));
	expect_log(a, la, "info", "sum: 0");
	expect_log(b, lb, "info", "sum: 0");

	json_decref(ht_call_ok(
	    c, "log", json_pack("{s:s, s:i}", "message", "disk almost full", "level", 4)));
	json_decref(ht_call_ok(c, "sum", json_pack("{s:i}", "n", 42)));
	for (int i = 0; i < 2; i++) {
		struct ht_conn *x = i ? b : a;
		int64_t id = i ? lb : la;

		expect_log(x, id, "warning", "disk almost full");
		expect_log(x, id, "info", "sum: 861");
	}
	/* Cancelling one subscription ends it with cancelled; the other keeps going. */
	ht_cancel_ok(a, la);
	json_decref(ht_call_ok(c, "log", json_pack("{s:s}", "message", "after")));
	expect_log(b, lb, "info", "after");
	/* A subscriber that goes away is dropped (ht_server_stop_ok() proves it is freed). */
	ht_conn_close(b);
	json_decref(ht_call_ok(c, "log", json_pack("{s:s}", "message", "nobody listens")));
	ht_conn_close(a);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_close_server)
{
	struct ht_conn *a, *b;
	json_t *reply;

	ht_server_start_ok(&S, NULL, NULL);
	a = ht_hello_open(S.path, "client", NULL, NULL);
	b = ht_hello_open(S.path, "client", NULL, NULL);
	ck_assert(a && b);
	reply = ht_call_ok(a, "herd.close_server", NULL);
	ck_assert(json_is_object(ht_result(reply)));
	json_decref(reply);
	/* No new connection: the socket file is gone... */
	ck_assert_int_eq(ht_wait_path_gone(S.path, ht_ms(5000)), 0);
	ck_assert_ptr_null(ht_conn_open(S.path));
	/* ...but the existing ones still serve. */
	ht_expect_int(b, "sum", json_pack("{s:i}", "n", 42), 861);
	reply = ht_call_ok(a, "herd.close_server", NULL);
	ck_assert(json_is_object(ht_result(reply)));
	json_decref(reply);
	ht_conn_close(a);
	ht_conn_close(b);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_shutdown)
{
	struct ht_conn *a, *b;
	json_t *reply;
	int64_t pending;

	ht_server_start_ok(&S, NULL, NULL);
	a = ht_hello_open(S.path, "client", NULL, NULL);
	b = ht_hello_open(S.path, "client", NULL, NULL);
	ck_assert(a && b);
	pending = ht_conn_send_request(b, "sleep", json_pack("{s:i}", "ms", 600000));
	json_decref(ht_call_ok(b, "sum", json_pack("{s:i}", "n", 1)));
	reply = ht_call_ok(a, "herd.shutdown", NULL);
	ck_assert(json_is_object(ht_result(reply)));
	json_decref(reply);
	/* Pending requests elsewhere are answered shutting_down; every connection closes. */
	reply = ht_conn_wait_reply(b, pending, ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "shutting_down");
	json_decref(reply);
	ck_assert_int_eq(ht_conn_wait_eof(a, ht_ms(5000)), 0);
	ck_assert_int_eq(ht_conn_wait_eof(b, ht_ms(5000)), 0);
	ck_assert_int_ne(access(S.path, F_OK), 0);
	ht_conn_close(a);
	ht_conn_close(b);
	ht_server_stop_ok(&S);
}
END_TEST

HT_MAIN("worker-builtins",
    HT_CASE("builtins", 30, test_functions, test_settings_precedence, test_logs, test_close_server,
        test_shutdown))
