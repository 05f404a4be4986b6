/* SPDX-License-Identifier: MIT */
/*
 * The request handle's contract, checked from inside handlers of a worker type
 * made for it: each misuse returns its documented -errno (recorded by the
 * handler, read back through the "codes" call), a handler that forgets its
 * request still answers the caller, and cancelled requests refuse answers.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ht-check.h"
#include "ht-example.h"

/* Return codes recorded by handlers, by name. Only the server thread touches it. */
static json_t *codes;

static void
record(const char *name, int r)
{
	json_object_set_new(codes, name, json_integer(r));
}

static void
fn_codes(herd_request *req, json_t *arg)
{
	herd_request_reply(req, json_deep_copy(codes));
}

/* Returns without answering or keeping the request. */
static void
fn_forget(herd_request *req, json_t *arg)
{
}

/* A sink that registers no end callback and keeps no reference. */
static void
ignore_item(herd_request *req, json_t *item, void *userdata)
{
}

static void
fn_sink_no_end(herd_request *req, json_t *arg)
{
	herd_request_on_item(req, ignore_item, NULL);
}

static void
noop_cb(herd_request *req, void *userdata)
{
}

static void
fn_misuse(herd_request *req, json_t *arg)
{
	record("call_write", herd_request_write(req, json_integer(1)));
	record("call_on_item", herd_request_on_item(req, ignore_item, NULL));
	record("call_on_drain", herd_request_on_drain(req, noop_cb, NULL));
	record("call_writable", herd_request_writable(req));
	record("call_kind", herd_request_kind(req));
	record("reply", herd_request_reply(req, json_string("ok")));
	record("reply_again", herd_request_reply(req, json_string("again")));
	record("fail_after", herd_request_fail(req, "too late"));
	record("on_cancel_after", herd_request_on_cancel(req, noop_cb, NULL));
	record("finished", herd_request_is_finished(req));
	record("null_reply", herd_request_reply(NULL, NULL));
}

static void
fn_oneway_misuse(herd_request *req, json_t *arg)
{
	record("oneway_reply", herd_request_reply(req, json_true()));
	record("oneway_on_cancel", herd_request_on_cancel(req, noop_cb, NULL));
	record("oneway_fail", herd_request_fail(req, "only logged"));
}

static void
fn_stream_misuse(herd_request *req, json_t *arg)
{
	record("stream_write", herd_request_write(req, json_integer(1)));
	record("stream_writable", herd_request_writable(req));
	record("stream_on_end", herd_request_on_end(req, noop_cb, NULL));
	record("stream_end", herd_request_end(req, NULL));
	record("stream_write_after", herd_request_write(req, json_integer(2)));
}

/* Writes an item over the caller's limit, then a small one, then ends. */
static void
fn_big_item(herd_request *req, json_t *arg)
{
	char big[4096];

	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	record("big_write", herd_request_write(req, json_string(big)));
	record("small_write", herd_request_write(req, json_string("small")));
	herd_request_end(req, json_string("done"));
}

static void
deferred_cancelled(herd_request *req, void *userdata)
{
	record("cancelled_flag", herd_request_is_cancelled(req));
	record("cancelled_write", herd_request_write(req, json_integer(1)));
	record("cancelled_reply", herd_request_reply(req, json_null()));
	record("cancelled_fail", herd_request_fail(req, "x"));
	herd_request_unref(req);
}

/* Keeps the request and waits for a cancel. */
static void
fn_wait_cancel(herd_request *req, json_t *arg)
{
	herd_request_on_cancel(req, deferred_cancelled, herd_request_ref(req));
	record("state_null",
	    herd_request_worker_state(req) == NULL && herd_request_conn_state(req) == NULL);
	record("function_name", strcmp(herd_request_function(req), "wait_cancel") == 0);
}

/* Replies with a value nested deeper than the protocol allows. */
static void
fn_deep(herd_request *req, json_t *arg)
{
	json_t *v = json_array();

	for (int i = 0; i < 70; i++) {
		json_t *outer = json_array();

		json_array_append_new(outer, v);
		v = outer;
	}
	record("deep_reply", herd_request_reply(req, v));
}

/* A function table like every worker type's (the test workers', the built-ins): data rows. */
static const struct herd_function api_functions[] = {
	{ "deep", HERD_KIND_CALL, fn_deep },
	{ "codes", HERD_KIND_CALL, fn_codes },
	{ "forget", HERD_KIND_CALL, fn_forget },
	{ "sink_no_end", HERD_KIND_SINK, fn_sink_no_end },
	{ "misuse", HERD_KIND_CALL, fn_misuse },
	{ "oneway_misuse", HERD_KIND_ONEWAY, fn_oneway_misuse },
	{ "stream_misuse", HERD_KIND_PIPE, fn_stream_misuse },
	{ "big_item", HERD_KIND_STATE, fn_big_item },
	{ "wait_cancel", HERD_KIND_PIPE, fn_wait_cancel },
};

/* No state constructors at all: both states are NULL. */
static const struct herd_worker_type api_type = {
	.name = "api",
	.functions = api_functions,
	.n_functions = sizeof(api_functions) / sizeof(api_functions[0]),
};

static json_int_t
code(json_t *c, const char *name)
{
	json_t *v = json_object_get(c, name);

	ck_assert_msg(json_is_integer(v), "no code recorded for %s", name);
	return json_integer_value(v);
}

START_TEST(test_contract)
{
	struct ht_server s;
	struct ht_conn *c;
	json_t *reply, *r, *item;
	int fds_before = ht_count_fds(getpid());
	int64_t id;

	codes = json_object();
	ck_assert_int_eq(ht_server_start(&s, &api_type, NULL, NULL), 0);
	/* The client takes messages of 2048 bytes at most. */
	c = ht_client_ok(s.path, json_pack("{s:{s:i}}", "settings", "max_message_size", 2048));

	ht_expect(c, "forget", NULL, "internal_error");
	ht_expect(c, "sink_no_end", NULL, "internal_error");

	ht_expect(c, "deep", NULL, "internal_error");
	reply = ht_conn_call(c, "misuse", NULL, ht_ms(5000));
	ck_assert_str_eq(json_string_value(ht_result(reply)), "ok");
	json_decref(reply);
	ht_conn_notify(c, "oneway_misuse", NULL);
	reply = ht_conn_call(c, "stream_misuse", NULL, ht_ms(5000));
	ck_assert(json_is_null(ht_result(reply)));
	json_decref(reply);

	id = ht_conn_send_request(c, "big_item", NULL);
	item = ht_conn_next_item(c, id, ht_ms(5000));
	ck_assert_ptr_nonnull(item);
	/* The oversize item was dropped, so "small" is the first and carries "initial". */
	ck_assert_str_eq(json_string_value(json_object_get(item, "item")), "small");
	ck_assert(json_is_true(json_object_get(item, "initial")));
	json_decref(item);
	reply = ht_conn_wait_reply(c, id, ht_ms(5000));
	ck_assert_str_eq(json_string_value(ht_result(reply)), "done");
	json_decref(reply);

	id = ht_conn_send_request(c, "wait_cancel", NULL);
	json_decref(ht_conn_call(c, "codes", NULL, ht_ms(5000)));
	ht_cancel_ok(c, id);

	reply = ht_conn_call(c, "codes", NULL, ht_ms(5000));
	r = ht_result(reply);
	ck_assert_int_eq(code(r, "deep_reply"), -EINVAL);
	ck_assert_int_eq(code(r, "call_write"), -EINVAL);
	ck_assert_int_eq(code(r, "call_on_item"), -EINVAL);
	ck_assert_int_eq(code(r, "call_on_drain"), -EINVAL);
	ck_assert_int_eq(code(r, "call_writable"), 0);
	ck_assert_int_eq(code(r, "call_kind"), HERD_KIND_CALL);
	ck_assert_int_eq(code(r, "reply"), 0);
	ck_assert_int_eq(code(r, "reply_again"), -EALREADY);
	ck_assert_int_eq(code(r, "fail_after"), -EALREADY);
	ck_assert_int_eq(code(r, "on_cancel_after"), -EALREADY);
	ck_assert_int_eq(code(r, "finished"), 1);
	ck_assert_int_eq(code(r, "null_reply"), -EINVAL);
	ck_assert_int_eq(code(r, "oneway_reply"), -EINVAL);
	ck_assert_int_eq(code(r, "oneway_on_cancel"), -EINVAL);
	ck_assert_int_eq(code(r, "oneway_fail"), 0);
	ck_assert_int_eq(code(r, "stream_write"), 0);
	ck_assert_int_eq(code(r, "stream_writable"), 1);
	ck_assert_int_eq(code(r, "stream_on_end"), -EINVAL);
	ck_assert_int_eq(code(r, "stream_end"), 0);
	ck_assert_int_eq(code(r, "stream_write_after"), -EALREADY);
	ck_assert_int_eq(code(r, "big_write"), -EMSGSIZE);
	ck_assert_int_eq(code(r, "small_write"), 0);
	ck_assert_int_eq(code(r, "state_null"), 1);
	ck_assert_int_eq(code(r, "function_name"), 1);
	ck_assert_int_eq(code(r, "cancelled_flag"), 1);
	ck_assert_int_eq(code(r, "cancelled_write"), -ECANCELED);
	ck_assert_int_eq(code(r, "cancelled_reply"), -ECANCELED);
	ck_assert_int_eq(code(r, "cancelled_fail"), -ECANCELED);
	json_decref(reply);

	ht_conn_close(c);
	ck_assert_int_eq(ht_server_stop(&s), 0);
	json_decref(codes);
	ck_assert_int_eq(ht_count_fds(getpid()), fds_before);
	ht_teardown();
}
END_TEST

START_TEST(test_kind_names)
{
	ck_assert_str_eq(herd_kind_name(HERD_KIND_STATE), "state");
	ck_assert_ptr_null(herd_kind_name((enum herd_kind)42));
	ck_assert_int_eq(herd_kind_from_name("sink"), HERD_KIND_SINK);
	ck_assert_int_eq(herd_kind_from_name("oneway"), HERD_KIND_ONEWAY);
	ck_assert_int_eq(herd_kind_from_name("stream"), -EINVAL);
	ck_assert_int_eq(herd_kind_from_name(NULL), -EINVAL);
	ck_assert_str_eq(herd_log_level_name(HERD_LOG_WARNING), "warning");
	ck_assert_ptr_null(herd_log_level_name(99));
}
END_TEST

HT_MAIN("worker-api", HT_CASE("api", 30, test_contract, test_kind_names))
