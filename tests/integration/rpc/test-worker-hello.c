/* SPDX-License-Identifier: MIT */
/*
 * The hello handshake on a worker's socket (PROTOCOL.md sections 3 and 6),
 * spoken as raw JSON lines to the example worker served in this process.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ht-check.h"
#include "ht-example.h"

static struct ht_server S;

/* Sends one raw line and expects one error reply, then the connection closing. */
static void
expect_error_then_close(struct ht_conn *c, const char *line, const char *name)
{
	json_t *reply;

	ck_assert_int_eq(ht_conn_send_raw(c, line, strlen(line)), 0);
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_msg(reply, "no reply to %s", line);
	ck_assert_str_eq(ht_error_name(reply), name);
	json_decref(reply);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
}

START_TEST(test_hello_good)
{
	struct ht_conn *c;
	json_t *reply, *res, *fns, *f;
	size_t i;
	bool has_sum = false, has_count = false;

	ht_server_start_ok(&S, NULL, NULL);
	c = ht_conn_open_ok(S.path);
	reply = ht_conn_hello(c, "client", json_pack("{s:s}", "name", "test"), ht_ms(5000));
	res = ht_result(reply);
	ck_assert_msg(res, "hello: %s", ht_dump(reply));
	ck_assert_int_eq(json_integer_value(json_object_get(res, "version")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(res, "server")), "worker");
	ck_assert_str_eq(json_string_value(json_object_get(res, "name")), "example");
	ck_assert_int_eq(json_integer_value(json_object_get(res, "pid")), getpid());
	ck_assert(json_is_object(json_object_get(res, "settings")));
	fns = json_object_get(res, "functions");
	json_array_foreach(fns, i, f) {
		const char *n = json_string_value(json_object_get(f, "name"));
		const char *k = json_string_value(json_object_get(f, "kind"));

		has_sum |= strcmp(n, "sum") == 0 && strcmp(k, "call") == 0;
		has_count |= strcmp(n, "count") == 0 && strcmp(k, "pipe") == 0;
	}
	ck_assert(has_sum && has_count);
	json_decref(reply);

	/* The connection serves calls after hello; a second hello is a request error. */
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 42), 861);
	reply = ht_conn_hello(c, "client", NULL, ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "invalid_request");
	json_decref(reply);
	ht_expect_int(c, "product", json_pack("{s:i}", "n", 10), 3628800);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_hello_bad_version)
{
	struct ht_conn *c;
	json_t *reply, *supported;

	ht_server_start_ok(&S, NULL, NULL);
	c = ht_conn_open_ok(S.path);
	ck_assert_int_eq(ht_conn_send_raw(c,
	                     "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":"
	                     "{\"version\":99,\"role\":\"client\"}}\n",
	                     strlen("{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":"
	                            "{\"version\":99,\"role\":\"client\"}}\n")),
	    0);
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "version_mismatch");
	ck_assert_int_eq(json_integer_value(json_object_get(reply, "id")), 0);
	supported = json_object_get(ht_error_data(reply), "supported");
	ck_assert_int_eq(json_array_size(supported), 1);
	ck_assert_int_eq(json_integer_value(json_array_get(supported, 0)), 1);
	json_decref(reply);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_hello_required)
{
	struct ht_conn *c;

	ht_server_start_ok(&S, NULL, NULL);
	/* A call before hello. */
	c = ht_conn_open(S.path);
	expect_error_then_close(c,
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"sum\",\"params\":{\"n\":3}}\n",
	    "hello_required");
	ht_conn_close(c);
	/* A notification before hello. */
	c = ht_conn_open(S.path);
	expect_error_then_close(
	    c, "{\"jsonrpc\":\"2.0\",\"method\":\"note\",\"params\":{}}\n", "hello_required");
	ht_conn_close(c);
	/* Not JSON before hello: a framing error. */
	c = ht_conn_open(S.path);
	expect_error_then_close(c, "hello?\n", "parse_error");
	ht_conn_close(c);
	/* The wrong role. */
	c = ht_conn_open(S.path);
	expect_error_then_close(c,
	    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":{\"version\":1,"
	    "\"role\":\"master\"}}\n",
	    "invalid_params");
	ht_conn_close(c);
	/* Unknown hello members. */
	c = ht_conn_open(S.path);
	expect_error_then_close(c,
	    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":{\"version\":1,"
	    "\"role\":\"client\",\"colour\":\"red\"}}\n",
	    "invalid_params");
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_hello_timeout)
{
	struct ht_conn *c, *c2;
	json_t *reply, *data;
	int64_t t0;

	ht_server_start_ok(&S, NULL, json_pack("{s:i}", "handshake_timeout_ms", 200));
	c = ht_conn_open_ok(S.path);
	/* A connection that completed hello is not affected by the handshake timeout. */
	c2 = ht_client_ok(S.path, NULL);
	t0 = ht_now_ms();
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_msg(reply, "no timeout error");
	ck_assert_str_eq(ht_error_name(reply), "timeout");
	ck_assert(json_is_null(json_object_get(reply, "id")));
	data = ht_error_data(reply);
	ck_assert_str_eq(json_string_value(json_object_get(data, "what")), "handshake");
	ck_assert_int_eq(json_integer_value(json_object_get(data, "ms")), 200);
	json_decref(reply);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	/* It did not fire before its time (a lower bound only). */
	ck_assert_int_ge(ht_now_ms() - t0, 150);
	ht_expect_int(c2, "sum", json_pack("{s:i}", "n", 4), 6);
	ht_conn_close(c);
	ht_conn_close(c2);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_conn_init)
{
	struct ht_conn *c;
	json_t *reply;

	ht_server_start_ok(&S, NULL, NULL);
	/* A failing connection-state init answers init_failed with its message and closes. */
	c = ht_conn_open_ok(S.path);
	reply = ht_conn_hello(
	    c, "client", json_pack("{s:{s:s}}", "init", "fail_conn", "no seats left"), ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "init_failed");
	ck_assert_str_eq(ht_error_message(reply), "no seats left");
	json_decref(reply);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);

	/* The next connection works and sees its own init argument. */
	c = ht_client_ok(S.path, json_pack("{s:{s:i}}", "init", "seat", 7));
	reply = ht_conn_call(c, "stats", NULL, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(ht_result(reply), "conn_init"), "seat")),
	    7);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "conn_calls")), 1);
	json_decref(reply);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_heartbeats)
{
	struct ht_conn *c;
	json_t *reply, *hb, *eff;

	ht_server_start_ok(&S, NULL, NULL);
	c = ht_conn_open_ok(S.path);
	reply = ht_conn_hello(c, "client",
	    json_pack("{s:{s:i, s:i}}", "settings", "heartbeat_interval_ms", 50,
	        "heartbeat_timeout_ms", 400),
	    ht_ms(5000));
	eff = json_object_get(ht_result(reply), "settings");
	ck_assert_int_eq(json_integer_value(json_object_get(eff, "heartbeat_interval_ms")), 50);
	ck_assert_int_eq(json_integer_value(json_object_get(eff, "heartbeat_timeout_ms")), 400);
	json_decref(reply);
	/* The worker sends heartbeats... */
	for (int i = 0; i < 3; i++) {
		hb = ht_conn_wait_method(c, "heartbeat", ht_ms(5000));
		ck_assert_msg(hb, "heartbeat %d missing", i);
		json_decref(hb);
		ck_assert_int_eq(ht_conn_notify(c, "heartbeat", NULL), 0);
	}
	/* ...and closes the connection once we stay silent past the timeout. */
	for (;;) {
		json_t *m = ht_conn_recv(c, ht_ms(5000));

		ck_assert_msg(m, "the connection was not closed with an error");
		if (ht_error_name(m)) {
			ck_assert_str_eq(ht_error_name(m), "timeout");
			json_decref(m);
			break;
		}
		json_decref(m);
	}
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

HT_MAIN("worker-hello",
    HT_CASE("hello", 30, test_hello_good, test_hello_bad_version, test_hello_required,
        test_hello_timeout, test_conn_init, test_heartbeats))
