/* SPDX-License-Identifier: MIT */
/*
 * RPC settings: defaults < settings in code < HERD_RPC_SETTINGS, field by
 * field, with unknown fields and wrong types refused by name. The resolver is
 * compiled into this test (it is hidden in libherd); the end-to-end cases
 * check that a real connection obeys the same precedence.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "common/internal.h"
#include "ht-check.h"
#include "ht-example.h"

static struct ht_example worker;

/* Resolves code_json (may be NULL) with env_json in the environment (NULL: unset). */
/* Field by field: the struct has padding memcmp would read. */
static bool
settings_equal(const struct herd__settings *a, const struct herd__settings *b)
{
	return a->max_message_size == b->max_message_size &&
	    a->heartbeat_interval_ms == b->heartbeat_interval_ms &&
	    a->heartbeat_timeout_ms == b->heartbeat_timeout_ms &&
	    a->handshake_timeout_ms == b->handshake_timeout_ms &&
	    a->spawn_timeout_ms == b->spawn_timeout_ms &&
	    a->connection_timeout_ms == b->connection_timeout_ms;
}

static int
resolve(const char *code_json, const char *env_json, struct herd__settings *s, char **err)
{
	json_t *code = code_json ? json_loads(code_json, 0, NULL) : NULL;
	int r;

	ck_assert(!code_json || code);
	if (env_json)
		setenv("HERD_RPC_SETTINGS", env_json, 1);
	else
		unsetenv("HERD_RPC_SETTINGS");
	r = herd__settings_resolve(code, s, err);
	json_decref(code);
	return r;
}

START_TEST(test_defaults)
{
	struct herd__settings s;
	char *err = NULL;

	ck_assert_int_eq(resolve(NULL, NULL, &s, &err), 0);
	ck_assert_ptr_null(err);
	ck_assert_uint_eq(s.max_message_size, HERD_DEFAULT_MAX_MESSAGE_SIZE);
	ck_assert_uint_eq(s.heartbeat_interval_ms, HERD_DEFAULT_HEARTBEAT_INTERVAL_MS);
	ck_assert_uint_eq(s.heartbeat_timeout_ms, HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS);
	ck_assert_uint_eq(s.handshake_timeout_ms, HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS);
	ck_assert_uint_eq(s.spawn_timeout_ms, HERD_DEFAULT_SPAWN_TIMEOUT_MS);
	ck_assert_uint_eq(s.connection_timeout_ms, HERD_DEFAULT_CONNECTION_TIMEOUT_MS);
	/* An empty environment variable counts as unset. */
	ck_assert_int_eq(resolve(NULL, "", &s, &err), 0);
}
END_TEST

START_TEST(test_precedence_field_by_field)
{
	struct herd__settings s;
	char *err = NULL;

	ck_assert_int_eq(
	    resolve("{\"max_message_size\": 65536, \"spawn_timeout_ms\": 5000}",
	        "{\"spawn_timeout_ms\": 7000, \"heartbeat_interval_ms\": 250}", &s, &err),
	    0);
	/* Code beats the default, the environment beats code, the rest stay default. */
	ck_assert_uint_eq(s.max_message_size, 65536);
	ck_assert_uint_eq(s.spawn_timeout_ms, 7000);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 250);
	ck_assert_uint_eq(s.heartbeat_timeout_ms, HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS);
	ck_assert_uint_eq(s.connection_timeout_ms, HERD_DEFAULT_CONNECTION_TIMEOUT_MS);

	/* Heartbeats can be turned off (0) from either source. */
	ck_assert_int_eq(
	    resolve("{\"heartbeat_interval_ms\": 0}", "{\"heartbeat_timeout_ms\": 0}", &s, &err),
	    0);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 0);
	ck_assert_uint_eq(s.heartbeat_timeout_ms, 0);

	/* herd__settings_to_json round-trips through apply. */
	{
		struct herd__settings back;
		json_t *j = herd__settings_to_json(&s);

		herd__settings_defaults(&back);
		ck_assert_int_eq(herd__settings_apply(&back, j, "json", NULL), 0);
		ck_assert(settings_equal(&back, &s));
		json_decref(j);
	}
}
END_TEST

/* Each bad input fails with -EINVAL and a text naming the source and the field. */
static void
expect_error(const char *code, const char *env, const char *needle1, const char *needle2)
{
	struct herd__settings s;
	char *err = NULL;

	herd__settings_defaults(&s);
	ck_assert_int_eq(resolve(code, env, &s, &err), -EINVAL);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, needle1), "\"%s\" lacks \"%s\"", err, needle1);
	if (needle2)
		ck_assert_msg(strstr(err, needle2), "\"%s\" lacks \"%s\"", err, needle2);
	free(err);
}

START_TEST(test_errors)
{
	expect_error("{\"max_mesage_size\": 1}", NULL, "settings", "max_mesage_size");
	expect_error(NULL, "{\"bogus\": 1}", "HERD_RPC_SETTINGS", "bogus");
	expect_error("{\"spawn_timeout_ms\": \"10\"}", NULL, "spawn_timeout_ms", "integer");
	expect_error("{\"spawn_timeout_ms\": 1.5}", NULL, "spawn_timeout_ms", "integer");
	expect_error(
	    NULL, "{\"connection_timeout_ms\": -1}", "HERD_RPC_SETTINGS", "connection_timeout_ms");
	expect_error(NULL, "{\"connection_timeout_ms\": 0}", "connection_timeout_ms", "positive");
	expect_error("{\"max_message_size\": 10}", NULL, "max_message_size", "between");
	expect_error(
	    "{\"handshake_timeout_ms\": 999999999999}", NULL, "handshake_timeout_ms", "at most");
	expect_error(NULL, "{not json", "HERD_RPC_SETTINGS", "not valid JSON");
	expect_error(NULL, "[1, 2]", "HERD_RPC_SETTINGS", "object");
	expect_error(NULL, "{\"a\": 1, \"a\": 2}", "HERD_RPC_SETTINGS", "not valid JSON");
	expect_error("[]", NULL, "settings", "object");
	expect_error("{\"heartbeat_interval_ms\": 500, \"heartbeat_timeout_ms\": 500}", NULL,
	    "heartbeat_timeout_ms", "longer");
	/* A bad environment fails even when the code's settings are fine. */
	expect_error("{\"spawn_timeout_ms\": 5000}", "{\"spawn_timeout_ms\": true}",
	    "HERD_RPC_SETTINGS", "spawn_timeout_ms");
	/* An error leaves *ret untouched and the out-text optional. */
	{
		struct herd__settings s, before;

		herd__settings_defaults(&s);
		before = s;
		ck_assert_int_eq(resolve("{\"x\": 1}", NULL, &s, NULL), -EINVAL);
		ck_assert(settings_equal(&before, &s));
		ck_assert_int_eq(herd__settings_resolve(NULL, NULL, NULL), -EINVAL);
	}
}
END_TEST

/* The environment beats code for a real connection: its send limit comes from the env. */
START_TEST(test_connection_obeys_env)
{
	json_t *settings = json_pack("{s:i}", "max_message_size", 1000000);
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	char big[4000];

	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(_i), NULL), 0);

	setenv("HERD_RPC_SETTINGS", "{\"max_message_size\": 2048}", 1);
	ck_assert_int_eq(herd_conn_connect(worker.socket, NULL, settings, &conn, NULL), 0);
	ck_assert_int_eq(herd_call(conn, "echo", ht_args("{s:s}", "t", big), 0, NULL), -EMSGSIZE);
	conn = herd_conn_unref(conn);

	/* Without the environment, the code's larger limit lets the same call through. */
	unsetenv("HERD_RPC_SETTINGS");
	ck_assert_int_eq(herd_conn_connect(worker.socket, NULL, settings, &conn, NULL), 0);
	ck_assert_int_eq(herd_call(conn, "echo", ht_args("{s:s}", "t", big), 0, NULL), 0);
	conn = herd_conn_unref(conn);

	/* A typo in the environment is refused with a clear text, before connecting. */
	setenv("HERD_RPC_SETTINGS", "{\"heartbeat_intervall_ms\": 5}", 1);
	ck_assert_int_eq(herd_conn_connect(worker.socket, NULL, settings, &conn, &err), -EINVAL);
	ck_assert_ptr_null(conn);
	ck_assert_str_eq(herd_error_name(err), "invalid_params");
	ck_assert_ptr_nonnull(strstr(herd_error_message(err), "heartbeat_intervall_ms"));
	herd_error_unref(err);
	json_decref(settings);
}
END_TEST

HT_MAIN("client-settings",
    HT_CLIENT_CASE("resolve", 10, 0, test_defaults, test_precedence_field_by_field, test_errors),
    HT_CLIENT_CASE("connection", 60, 2, test_connection_obeys_env))
