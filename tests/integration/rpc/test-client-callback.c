/* SPDX-License-Identifier: MIT */
/*
 * Calls from a worker's handler back to its client on the same connection
 * (PROTOCOL.md 6.6): progress notifications and a question answered while
 * the client's blocking herd_call() waits for the very call that asks, a
 * function the client does not serve, and one that fails.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <check.h>

#include "ht-example.h"
#include "worker-args.h"

/* How the last call back ended, by the server thread; read after ht_server_stop() joined it. */
static int last_asked_r = 1;
static char last_asked_error[64];

/* Worker side: "ask" {"function", "args"} reports progress twice, then asks function(args). */
static void
asked(herd_request *req, int r, json_t *result, herd_error *error, void *userdata)
{
	last_asked_r = r;
	snprintf(last_asked_error, sizeof(last_asked_error), "%s",
	    error ? herd_error_name(error) : "(none)");
	if (r == 0)
		herd_request_reply(req, json_pack("{s:O}", "answer", result));
	else
		herd_request_reply(req,
		    json_pack("{s:i, s:s, s:s}", "r", r, "error", herd_error_name(error), "message",
		        herd_error_message(error)));
}

static void
fn_ask(herd_request *req, json_t *arg)
{
	const char *function = json_string_value(json_object_get(arg, "function"));
	int r;

	for (int i = 1; i <= 2; i++) {
		json_t *p = json_pack("{s:i}", "done", i);

		r = herd_request_call_client(req, "progress", p, NULL, NULL);
		json_decref(p);
		if (r < 0) {
			herd_request_fail(req, "progress: %s", strerror(-r));
			return;
		}
	}
	r = herd_request_call_client(req, function, json_object_get(arg, "args"), asked, NULL);
	if (r < 0)
		herd_request_fail(req, "ask: %s", strerror(-r));
}

static const struct herd_worker_type callback_type = {
	.name = "callback",
	.functions = WA_FUNCTIONS({ "ask", HERD_KIND_CALL, fn_ask }),
};

/* Client side. */
struct seen {
	int progress;
	json_int_t last_done;
};

static int
on_progress(herd_conn *conn, const char *function, json_t *args, json_t **ret_result,
    char **reterr_message, void *userdata)
{
	struct seen *s = userdata;

	s->progress++;
	s->last_done = json_integer_value(json_object_get(args, "done"));
	return 0;
}

static int
on_more(herd_conn *conn, const char *function, json_t *args, json_t **ret_result,
    char **reterr_message, void *userdata)
{
	*ret_result =
	    json_pack("{s:I}", "twice", 2 * json_integer_value(json_object_get(args, "n")));
	return 0;
}

static int
on_refuse(herd_conn *conn, const char *function, json_t *args, json_t **ret_result,
    char **reterr_message, void *userdata)
{
	*reterr_message = strdup("no more work");
	return -EPERM;
}

/* Closes the connection instead of answering. */
static int
on_close(herd_conn *conn, const char *function, json_t *args, json_t **ret_result,
    char **reterr_message, void *userdata)
{
	herd_conn_close(conn);
	return 0;
}

START_TEST(test_worker_calls_client_back)
{
	struct ht_server s;
	struct seen seen = { 0 };
	herd_conn *conn = NULL;
	json_t *result = NULL;

	ck_assert_int_eq(ht_server_start(&s, &callback_type, NULL, NULL), 0);
	ck_assert_int_eq(herd_conn_connect(s.path, NULL, NULL, &conn, NULL), 0);
	ck_assert_int_eq(herd_conn_serve(NULL, "more", on_more, NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_serve(conn, "hello", on_more, NULL), -EINVAL);
	ck_assert_int_eq(herd_conn_serve(conn, "progress", on_progress, &seen), 0);
	ck_assert_int_eq(herd_conn_serve(conn, "more", on_more, NULL), 0);
	ck_assert_int_eq(herd_conn_serve(conn, "refuse", on_refuse, NULL), 0);

	/* Served from inside the blocking call that waits for "ask". */
	ck_assert_int_eq(
	    herd_call(conn, "ask", ht_args("{s:s, s:{s:i}}", "function", "more", "args", "n", 21),
	        0, &result),
	    0);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(result, "answer"), "twice")), 42);
	json_decref(result);
	ck_assert_int_eq(seen.progress, 2);
	ck_assert_int_eq(seen.last_done, 2);

	/* The client's function fails: the worker sees function_failed with its text. */
	ck_assert_int_eq(
	    herd_call(conn, "ask", ht_args("{s:s}", "function", "refuse"), 0, &result), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(result, "r")), -EREMOTEIO);
	ck_assert_str_eq(json_string_value(json_object_get(result, "error")), "function_failed");
	ck_assert_str_eq(json_string_value(json_object_get(result, "message")), "no more work");
	json_decref(result);

	/* A function the client stopped serving, or never served: method_not_found. */
	ck_assert_int_eq(herd_conn_serve(conn, "more", NULL, NULL), 0);
	ck_assert_int_eq(
	    herd_call(conn, "ask", ht_args("{s:s}", "function", "more"), 0, &result), 0);
	ck_assert_str_eq(json_string_value(json_object_get(result, "error")), "method_not_found");
	json_decref(result);
	ck_assert_int_eq(seen.progress, 6);

	herd_conn_unref(conn);
	ck_assert_int_eq(ht_server_stop(&s), 0);
}
END_TEST

/* A client that goes away before answering: the worker's callback still runs, once. */
START_TEST(test_call_back_connection_closed)
{
	struct ht_server s;
	struct seen seen = { 0 };
	herd_conn *conn = NULL;

	ck_assert_int_eq(ht_server_start(&s, &callback_type, NULL, NULL), 0);
	ck_assert_int_eq(herd_conn_connect(s.path, NULL, NULL, &conn, NULL), 0);
	ck_assert_int_eq(herd_conn_serve(conn, "progress", on_progress, &seen), 0);
	ck_assert_int_eq(herd_conn_serve(conn, "vanish", on_close, NULL), 0);
	ck_assert_int_eq(
	    herd_call(conn, "ask", ht_args("{s:s}", "function", "vanish"), HT_USEC(5000), NULL),
	    -ECONNRESET);
	ck_assert_int_eq(seen.progress, 2);
	herd_conn_unref(conn);
	/* Stopping waits for the worker's connection to be freed: the callback ran by then. */
	ck_assert_int_eq(ht_server_stop(&s), 0);
	ck_assert_int_eq(last_asked_r, -ECONNRESET);
	ck_assert_str_eq(last_asked_error, "connection_closed");
}
END_TEST

HT_MAIN("client-callback",
    HT_CLIENT_CASE(
        "callback", 30, 0, test_worker_calls_client_back, test_call_back_connection_closed))
