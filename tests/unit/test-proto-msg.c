/* SPDX-License-Identifier: MIT */
/*
 * JSON-RPC message validation, the builders, the error name table and
 * proto_unpack's strictness.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ht-check.h"
#include "proto.h"

static int
parse_text(const char *text, struct proto_msg *m, struct proto_error *err, json_t **keep)
{
	json_error_t jerr;
	json_t *v = json_loads(text, 0, &jerr);

	ck_assert_msg(v != NULL, "test text does not parse: %s", jerr.text);
	*keep = v;
	return proto_msg_parse(v, m, err);
}

static void
expect_invalid(const char *text, const char *why)
{
	struct proto_msg m;
	struct proto_error err = { 0 };
	json_t *v;

	ck_assert_msg(parse_text(text, &m, &err, &v) == -EBADMSG, "accepted: %s", text);
	ck_assert_int_eq(err.code, HERD_E_INVALID_REQUEST);
	ck_assert_msg(
	    strstr(err.text, why) != NULL, "%s: text \"%s\" lacks \"%s\"", text, err.text, why);
	json_decref(v);
}

static void
expect_kind(const char *text, enum proto_kind kind)
{
	struct proto_msg m;
	struct proto_error err = { 0 };
	json_t *v;
	int rc = parse_text(text, &m, &err, &v);

	ck_assert_msg(rc == 0, "%s refused: %s", text, err.text);
	ck_assert_int_eq(m.kind, kind);
	json_decref(v);
}

START_TEST(kinds)
{
	struct proto_msg m;
	struct proto_error err;
	json_t *v;

	ck_assert_int_eq(parse_text("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"spawn\","
	                            "\"params\":{\"path\":\"/bin/true\"}}",
	                     &m, &err, &v),
	    0);
	ck_assert_int_eq(m.kind, PROTO_REQUEST);
	ck_assert_str_eq(m.method, "spawn");
	ck_assert_int_eq(json_integer_value(m.id), 7);
	ck_assert_str_eq(json_string_value(json_object_get(m.params, "path")), "/bin/true");
	json_decref(v);

	ck_assert_int_eq(
	    parse_text("{\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\"}", &m, &err, &v), 0);
	ck_assert_int_eq(m.kind, PROTO_NOTIFICATION);
	ck_assert_ptr_null(m.id);
	ck_assert_ptr_null(m.params);
	json_decref(v);

	ck_assert_int_eq(
	    parse_text("{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":[1]}", &m, &err, &v), 0);
	ck_assert_int_eq(m.kind, PROTO_RESULT);
	ck_assert_str_eq(json_string_value(m.id), "a");
	ck_assert(json_is_array(m.result));
	json_decref(v);

	ck_assert_int_eq(parse_text("{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,"
	                            "\"message\":\"bad\",\"data\":{\"name\":\"parse_error\"}}}",
	                     &m, &err, &v),
	    0);
	ck_assert_int_eq(m.kind, PROTO_ERROR);
	ck_assert(json_is_null(m.id));
	ck_assert_int_eq(m.error_code, HERD_E_PARSE_ERROR);
	ck_assert_str_eq(m.error_message, "bad");
	ck_assert(json_is_object(m.error_data));
	json_decref(v);

	/* A result may be null; params may be an array; data may be absent or any value. */
	expect_kind("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":null}", PROTO_RESULT);
	expect_kind(
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":[1,2]}", PROTO_REQUEST);
	expect_kind(
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"\"}}", PROTO_ERROR);
	expect_kind("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"\","
	            "\"data\":\"x\"}}",
	    PROTO_ERROR);
}
END_TEST

START_TEST(id_types)
{
	expect_kind("{\"jsonrpc\":\"2.0\",\"id\":-3,\"method\":\"m\"}", PROTO_REQUEST);
	expect_kind("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"m\"}", PROTO_REQUEST);
	expect_kind("{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"m\"}", PROTO_REQUEST);
	expect_kind("{\"jsonrpc\":\"2.0\",\"id\":9007199254740993,\"result\":1}", PROTO_RESULT);
	expect_kind(
	    "{\"jsonrpc\":\"2.0\",\"id\":9007199254740992,\"method\":\"m\"}", PROTO_REQUEST);
	expect_kind(
	    "{\"jsonrpc\":\"2.0\",\"id\":-9007199254740992,\"method\":\"m\"}", PROTO_REQUEST);
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":9007199254740993,\"method\":\"m\"}", "2^53");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":-9007199254740993,\"method\":\"m\"}", "2^53");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}", "\"id\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"m\"}", "\"id\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"m\"}", "\"id\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":false,\"result\":1}", "\"id\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}", "\"id\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":[1],\"method\":\"m\"}", "\"id\"");
}
END_TEST

START_TEST(missing_and_extra)
{
	expect_invalid("{\"id\":1,\"method\":\"m\"}", "missing \"jsonrpc\"");
	expect_invalid("{\"jsonrpc\":\"1.0\",\"id\":1,\"method\":\"m\"}", "\"2.0\"");
	expect_invalid("{\"jsonrpc\":2.0,\"id\":1,\"method\":\"m\"}", "\"2.0\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"extra\":1}",
	    "unknown member \"extra\"");
	expect_invalid("{\"jsonrpc\":\"2.0\"}", "missing \"method\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"result\":1}", "missing \"method\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1}", "exactly one");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"error\":{\"code\":1,"
	               "\"message\":\"x\"}}",
	    "exactly one");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":1,\"params\":{}}", "\"params\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"result\":1}", "request");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":3}", "\"method\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\"}", "\"method\"");
	expect_invalid(
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":\"x\"}", "\"params\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":null}", "\"params\"");
}
END_TEST

START_TEST(error_object_shape)
{
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":\"boom\"}", "\"error\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"message\":\"x\"}}", "\"error\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1}}", "\"error\"");
	expect_invalid(
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":\"1\",\"message\":\"x\"}}",
	    "\"error\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1.5,\"message\":\"x\"}}",
	    "\"error\"");
	expect_invalid(
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":2}}", "\"error\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":1,\"message\":\"x\","
	               "\"extra\":1}}",
	    "\"error\"");
	expect_invalid("{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":4294967296,"
	               "\"message\":\"x\"}}",
	    "range");
}
END_TEST

START_TEST(not_object)
{
	struct proto_msg m;
	struct proto_error err;
	json_t *v = json_array();

	ck_assert_int_eq(proto_msg_parse(v, &m, &err), -EBADMSG);
	ck_assert_int_eq(err.code, HERD_E_INVALID_REQUEST);
	json_decref(v);
}
END_TEST

/* Every builder's output passes proto_msg_parse with the fields it was given. */
START_TEST(builders)
{
	struct proto_msg m;
	struct proto_error err;
	json_t *id = json_string("req-1");
	json_t *v;

	v = proto_request(id, "spawn", json_pack("{s:s}", "path", "/bin/true"));
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_int_eq(m.kind, PROTO_REQUEST);
	ck_assert(json_equal(m.id, id));
	ck_assert_str_eq(m.method, "spawn");
	ck_assert(json_is_object(m.params));
	json_decref(v);

	v = proto_request(NULL, "m", NULL);
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert(json_is_null(m.id));
	ck_assert_ptr_null(json_object_get(v, "params"));
	json_decref(v);

	v = proto_request_int((int64_t)1 << 53, "m", json_array());
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_int_eq(json_integer_value(m.id), (int64_t)1 << 53);
	ck_assert(json_is_array(m.params));
	json_decref(v);

	v = proto_notification("heartbeat", NULL);
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_int_eq(m.kind, PROTO_NOTIFICATION);
	ck_assert_ptr_null(json_object_get(v, "id"));
	ck_assert_uint_eq(json_object_size(v), 2);
	json_decref(v);

	v = proto_result(id, json_integer(5));
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_int_eq(m.kind, PROTO_RESULT);
	ck_assert_int_eq(json_integer_value(m.result), 5);
	json_decref(v);
	v = proto_result(NULL, json_object());
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert(json_is_null(m.id));
	json_decref(v);
	ck_assert_ptr_null(proto_result(id, NULL));

	/* A missing method is refused and params are still released (checked by ASan/valgrind). */
	ck_assert_ptr_null(proto_request(id, NULL, json_object()));
	ck_assert_ptr_null(proto_notification(NULL, json_array()));
	/* id is borrowed: still ours. */
	ck_assert_str_eq(json_string_value(id), "req-1");
	json_decref(id);
}
END_TEST

START_TEST(error_builder)
{
	struct proto_msg m;
	struct proto_error err;
	json_t *v, *data;
	json_t *id4 = json_integer(4), *ids = json_string("s");

	/* No message, no data: the name serves as message, data is {"name": ...}. */
	v = proto_error(NULL, HERD_E_WORKER_NOT_FOUND, NULL, NULL);
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_int_eq(m.kind, PROTO_ERROR);
	ck_assert(json_is_null(m.id));
	ck_assert_int_eq(m.error_code, HERD_E_WORKER_NOT_FOUND);
	ck_assert_str_eq(m.error_message, "worker_not_found");
	ck_assert_uint_eq(json_object_size(m.error_data), 1);
	ck_assert_str_eq(
	    json_string_value(json_object_get(m.error_data, "name")), "worker_not_found");
	json_decref(v);

	/* An object is extended, and a stale "name" replaced. */
	v = proto_error(id4, HERD_E_TIMEOUT, "too slow",
	    json_pack("{s:s,s:i,s:s}", "what", "spawn", "ms", 30000, "name", "bogus"));
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_str_eq(m.error_message, "too slow");
	ck_assert_str_eq(json_string_value(json_object_get(m.error_data, "name")), "timeout");
	ck_assert_int_eq(json_integer_value(json_object_get(m.error_data, "ms")), 30000);
	json_decref(v);

	/* A shared object is copied, never changed under its other owner. */
	data = json_pack("{s:i}", "limit", 3);
	json_incref(data);
	v = proto_error(NULL, HERD_E_LIMIT_EXCEEDED, NULL, data);
	ck_assert_ptr_null(json_object_get(data, "name"));
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_str_eq(
	    json_string_value(json_object_get(m.error_data, "name")), "limit_exceeded");
	ck_assert_int_eq(json_integer_value(json_object_get(m.error_data, "limit")), 3);
	json_decref(v);
	json_decref(data);

	/* Anything else is wrapped. */
	v = proto_error(NULL, HERD_E_INTERNAL_ERROR, "x", json_string("detail text"));
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_str_eq(
	    json_string_value(json_object_get(m.error_data, "name")), "internal_error");
	ck_assert_str_eq(json_string_value(json_object_get(m.error_data, "detail")), "detail text");
	json_decref(v);

	/* A code outside the table still gets a name. */
	v = proto_error(NULL, 12345, NULL, NULL);
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_int_eq(m.error_code, 12345);
	ck_assert_str_eq(json_string_value(json_object_get(m.error_data, "name")), "unknown");
	json_decref(v);

	v = proto_errorf(ids, HERD_E_SPAWN_FAILED, "exec %s: %d", "/x", 2);
	ck_assert_int_eq(proto_msg_parse(v, &m, &err), 0);
	ck_assert_str_eq(m.error_message, "exec /x: 2");
	ck_assert_str_eq(json_string_value(m.id), "s");
	ck_assert_str_eq(json_string_value(json_object_get(m.error_data, "name")), "spawn_failed");
	json_decref(v);
	/* The ids were borrowed. */
	json_decref(id4);
	json_decref(ids);
}
END_TEST

/* The names are the protocol's (PROTOCOL.md section 2); each round-trips. */
START_TEST(error_names)
{
	static const struct {
		int code;
		const char *name;
	} spec[] = {
		{ -32700, "parse_error" },
		{ -32600, "invalid_request" },
		{ -32601, "method_not_found" },
		{ -32602, "invalid_params" },
		{ -32603, "internal_error" },
		{ -32000, "message_too_large" },
		{ -32001, "too_deep" },
		{ -32002, "duplicate_key" },
		{ -32003, "invalid_utf8" },
		{ -32004, "nul_byte" },
		{ -32005, "too_many_requests" },
		{ -32006, "hello_required" },
		{ -32007, "version_mismatch" },
		{ -32008, "permission_denied" },
		{ -32009, "worker_not_found" },
		{ -32010, "spawn_failed" },
		{ -32011, "init_failed" },
		{ -32012, "function_failed" },
		{ -32013, "timeout" },
		{ -32014, "cancelled" },
		{ -32015, "limit_exceeded" },
		{ -32016, "shutting_down" },
		{ -32017, "connection_closed" },
		{ -32018, "worker_exited" },
		{ -32019, "output_overflow" },
		{ -32020, "invalid_bytes" },
	};
	size_t n = sizeof(spec) / sizeof(spec[0]);

	ck_assert_uint_eq(proto_error_count(), n);
	for (size_t i = 0; i < n; i++) {
		ck_assert_pstr_eq(proto_error_name(spec[i].code), spec[i].name);
		ck_assert_int_eq(proto_error_code(spec[i].name), spec[i].code);
	}
	/* Every table entry round-trips and no name or code appears twice. */
	for (size_t i = 0; i < proto_error_count(); i++) {
		int code = proto_error_code_at(i);

		ck_assert_int_eq(proto_error_code(proto_error_name(code)), code);
		for (size_t j = i + 1; j < proto_error_count(); j++)
			ck_assert_int_ne(code, proto_error_code_at(j));
	}
	ck_assert_int_eq(proto_error_code_at(n), 0);
	ck_assert_ptr_null(proto_error_name(0));
	ck_assert_ptr_null(proto_error_name(-32099));
	ck_assert_int_eq(proto_error_code("no_such_error"), 0);
	ck_assert_int_eq(proto_error_code(""), 0);
	ck_assert_int_eq(proto_error_code(NULL), 0);
}
END_TEST

START_TEST(unpack_strict)
{
	struct proto_error err = { 0 };
	json_t *p = json_pack("{s:s,s:i}", "id", "w1", "grace_ms", 500);
	const char *id = NULL;
	int grace = 0, all = 0;

	ck_assert_int_eq(proto_unpack(p, &err, "{s:s,s?i}", "id", &id, "grace_ms", &grace), 0);
	ck_assert_str_eq(id, "w1");
	ck_assert_int_eq(grace, 500);
	/* An unknown member is refused, naming it. */
	ck_assert_int_eq(proto_unpack(p, &err, "{s:s}", "id", &id), -EINVAL);
	ck_assert_int_eq(err.code, HERD_E_INVALID_PARAMS);
	ck_assert_ptr_nonnull(strstr(err.text, "grace_ms"));
	/* Wrong type and missing member. */
	ck_assert_int_eq(
	    proto_unpack(p, &err, "{s:i,s?i}", "id", &grace, "grace_ms", &grace), -EINVAL);
	ck_assert_int_eq(err.code, HERD_E_INVALID_PARAMS);
	ck_assert_int_eq(
	    proto_unpack(p, &err, "{s:s,s:i,s:b}", "id", &id, "grace_ms", &grace, "all", &all),
	    -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.text, "all"));
	json_decref(p);

	/* Absent params are an empty object. */
	ck_assert_int_eq(proto_unpack(NULL, &err, "{s?b}", "all", &all), 0);
	ck_assert_int_eq(proto_unpack(NULL, &err, "{s:b}", "all", &all), -EINVAL);
	/* Arrays are checked for length too. */
	p = json_pack("[i,i,i]", 1, 2, 3);
	ck_assert_int_eq(proto_unpack(p, &err, "[ii]", &grace, &all), -EINVAL);
	ck_assert_int_eq(proto_unpack(p, &err, "[iii]", &grace, &all, &grace), 0);
	ck_assert_int_eq(proto_unpack(p, &err, "{}"), -EINVAL);
	json_decref(p);
	/* Nested objects are strict as well. */
	p = json_pack("{s:{s:i,s:i}}", "settings", "a", 1, "b", 2);
	ck_assert_int_eq(proto_unpack(p, &err, "{s:{s:i}}", "settings", "a", &grace), -EINVAL);
	ck_assert_int_eq(proto_unpack(p, NULL, "{s:{s:i}}", "settings", "a", &grace), -EINVAL);
	json_decref(p);
}
END_TEST

/* proto/text.c: cuts on a character, repairs, escapes (issue 11). */
START_TEST(text_helpers)
{
	/* "a" then two "é": every even budget falls inside an "é". */
	const char *s = "a\xc3\xa9\xc3\xa9";
	char buf[32], *text;
	json_t *v, *e;

	ck_assert_int_eq(proto_text_prec(s, 64), 5);
	ck_assert_int_eq(proto_text_prec(s, 5), 5);
	ck_assert_int_eq(proto_text_prec(s, 4), 3);
	ck_assert_int_eq(proto_text_prec(s, 2), 1);
	ck_assert_int_eq(proto_text_prec(s, 0), 0);
	ck_assert(proto_text_valid(s, 5));
	ck_assert(!proto_text_valid(s, 4));
	ck_assert(!proto_text_valid("a\0b", 3));

	/* A budget of 4 bytes plus the NUL keeps "aé" whole. */
	ck_assert_uint_eq(proto_text_copy(buf, 5, s, 5), 3);
	ck_assert_str_eq(buf, "a\xc3\xa9");
	/* A stray byte becomes U+FFFD; one that does not fit is left out. */
	ck_assert_uint_eq(proto_text_copy(buf, sizeof(buf), "x\xffy", 3), 5);
	ck_assert_str_eq(buf, "x\xef\xbf\xbdy");
	ck_assert_uint_eq(proto_text_copy(buf, 3, "x\xffy", 3), 1);
	ck_assert_uint_eq(proto_text_format(buf, 4, "%s", s), 3);
	ck_assert_str_eq(buf, "a\xc3\xa9");

	v = proto_text_string("a\xc3", 64);
	ck_assert_str_eq(json_string_value(v), "a\xef\xbf\xbd");
	json_decref(v);
	v = proto_text_string(s, 4);
	ck_assert_str_eq(json_string_value(v), "a\xc3\xa9");
	json_decref(v);

	/* A log line shows control characters and bad bytes, never writes them. */
	ck_assert_uint_eq(proto_text_escape(buf, sizeof(buf), "a\nb\x01\xc3", 5), 12);
	ck_assert_str_eq(buf, "a\\nb\\x01\\xc3");
	ck_assert_uint_eq(proto_text_escape(buf, sizeof(buf), "\xc2\x85\xc3\xa9", 4), 6);
	ck_assert_str_eq(buf, "\\x85\xc3\xa9");
	/* An escape is never cut: "a" fits, "\n" does not. */
	ck_assert_uint_eq(proto_text_escape(buf, 3, "a\n", 2), 1);

	/* An error whose message was cut inside a character is still built and encodable. */
	e = proto_error(NULL, HERD_E_INTERNAL_ERROR, "a\xc3", NULL);
	ck_assert_ptr_nonnull(e);
	text = proto_json_dumps(e);
	ck_assert_ptr_nonnull(text);
	free(text);
	json_decref(e);
}
END_TEST

HT_MAIN("proto-msg",
    HT_CASE("msg", 10, kinds, id_types, missing_and_extra, error_object_shape, not_object, builders,
        error_builder, error_names, unpack_strict, text_helpers))
