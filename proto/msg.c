/* SPDX-License-Identifier: MIT */
/*
 * JSON-RPC 2.0 messages: validation of what arrives and builders for what
 * leaves. Validation is strict (unknown members, wrong id types, replies with
 * both result and error are refused) so that a buggy peer is told early.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

/* A message that is not valid JSON-RPC. */
#define invalid(err, ...) proto_error_setf(err, HERD_E_INVALID_REQUEST, __VA_ARGS__)

/* Integer ids stay within what a double holds exactly (PROTOCOL.md 1), so any peer can echo them. */
#define ID_MAX ((json_int_t)1 << 53)

static bool
id_in_range(const json_t *id)
{
	json_int_t v = json_integer_value(id);

	return v >= -ID_MAX && v <= ID_MAX;
}

static bool
id_valid(const json_t *id)
{
	return json_is_integer(id) || json_is_string(id) || json_is_null(id);
}

/* The id to answer a message proto_msg_parse() refused with; see proto.h. */
json_t *
proto_reply_id(const json_t *msg)
{
	json_t *id = json_object_get(msg, "id");

	if (json_is_string(id) || (json_is_integer(id) && id_in_range(id)))
		return id;
	return NULL;
}

/* Validates an error object: {"code": int, "message": string, "data"?: any}. */
static int
parse_error_object(json_t *e, struct proto_msg *out, struct proto_error *err)
{
	json_error_t jerr;
	json_int_t code;

	if (!json_is_object(e)) {
		invalid(err, "\"error\" must be an object");
		return -EBADMSG;
	}
	if (json_unpack_ex(e, &jerr, JSON_STRICT, "{s:I, s:s, s?o}", "code", &code, "message",
	        &out->error_message, "data", &out->error_data) < 0) {
		invalid(err, "bad \"error\" object: %s", jerr.text);
		return -EBADMSG;
	}
	if (code < INT32_MIN || code > INT32_MAX) {
		invalid(err, "\"error.code\" out of range");
		return -EBADMSG;
	}
	out->error_code = (int)code;
	return 0;
}

/* Validates msg and fills *out; see proto.h. */
int
proto_msg_parse(json_t *msg, struct proto_msg *out, struct proto_error *err)
{
	json_t *jsonrpc, *method, *error;
	const char *key;
	json_t *value;

	*out = (struct proto_msg){ 0 };
	if (!json_is_object(msg)) {
		invalid(err, "a message must be a JSON object");
		return -EBADMSG;
	}
	json_object_foreach(msg, key, value) {
		if (strcmp(key, "jsonrpc") != 0 && strcmp(key, "id") != 0 &&
		    strcmp(key, "method") != 0 && strcmp(key, "params") != 0 &&
		    strcmp(key, "result") != 0 && strcmp(key, "error") != 0) {
			invalid(err, "unknown member \"%.*s\"", proto_text_prec(key, 64), key);
			return -EBADMSG;
		}
	}
	jsonrpc = json_object_get(msg, "jsonrpc");
	if (!jsonrpc) {
		invalid(err, "missing \"jsonrpc\"");
		return -EBADMSG;
	}
	if (!json_is_string(jsonrpc) || strcmp(json_string_value(jsonrpc), "2.0") != 0) {
		invalid(err, "\"jsonrpc\" must be \"2.0\"");
		return -EBADMSG;
	}
	out->id = json_object_get(msg, "id");
	if (out->id && !id_valid(out->id)) {
		invalid(err, "\"id\" must be an integer, a string or null");
		return -EBADMSG;
	}
	method = json_object_get(msg, "method");
	out->params = json_object_get(msg, "params");
	out->result = json_object_get(msg, "result");
	error = json_object_get(msg, "error");

	if (method) {
		if (!json_is_string(method) || json_string_length(method) == 0) {
			invalid(err, "\"method\" must be a non-empty string");
			return -EBADMSG;
		}
		if (out->result || error) {
			invalid(err, "a request cannot carry \"result\" or \"error\"");
			return -EBADMSG;
		}
		/* A reply's id is only matched against ours, so only a request's is bounded. */
		if (json_is_integer(out->id) && !id_in_range(out->id)) {
			invalid(err, "\"id\" must be an integer within -2^53..2^53");
			return -EBADMSG;
		}
		if (out->params && !json_is_object(out->params) && !json_is_array(out->params)) {
			invalid(err, "\"params\" must be an object or an array");
			return -EBADMSG;
		}
		out->method = json_string_value(method);
		out->kind = out->id ? PROTO_REQUEST : PROTO_NOTIFICATION;
		return 0;
	}

	if (!out->id) {
		invalid(err, "missing \"method\" (request) or \"id\" (reply)");
		return -EBADMSG;
	}
	if (out->params) {
		invalid(err, "a reply cannot carry \"params\"");
		return -EBADMSG;
	}
	if (!out->result == !error) {
		invalid(err, "a reply needs exactly one of \"result\" and \"error\"");
		return -EBADMSG;
	}
	if (out->result) {
		out->kind = PROTO_RESULT;
		return 0;
	}
	out->kind = PROTO_ERROR;
	return parse_error_object(error, out, err);
}

/* {"jsonrpc":"2.0"} plus id (borrowed; NULL leaves it out). */
static json_t *
envelope(json_t *id)
{
	json_t *m = json_object();

	if (!m)
		return NULL;
	if (json_object_set_new(m, "jsonrpc", json_string("2.0")) < 0 ||
	    (id && json_object_set(m, "id", id) < 0)) {
		json_decref(m);
		return NULL;
	}
	return m;
}

/* Adds value (stolen) under key, or frees m and returns NULL. */
static json_t *
add_or_drop(json_t *m, const char *key, json_t *value)
{
	if (!m) {
		json_decref(value);
		return NULL;
	}
	if (json_object_set_new(m, key, value) < 0) {
		json_decref(m);
		return NULL;
	}
	return m;
}

static json_t *
call_message(json_t *id, const char *method, json_t *params)
{
	json_t *m;

	if (!method) {
		json_decref(params);
		return NULL;
	}
	m = envelope(id);
	m = add_or_drop(m, "method", json_string(method));
	if (params)
		m = add_or_drop(m, "params", params);
	else if (!m)
		return NULL;
	return m;
}

/* A request with id (borrowed); params (stolen) may be NULL. */
json_t *
proto_request(json_t *id, const char *method, json_t *params)
{
	json_t *null_id = NULL;
	json_t *m;

	if (!id)
		id = null_id = json_null();
	m = call_message(id, method, params);
	json_decref(null_id);
	return m;
}

/* A request with an integer id. */
json_t *
proto_request_int(int64_t id, const char *method, json_t *params)
{
	json_t *jid = json_integer(id);
	json_t *m;

	if (!jid) {
		json_decref(params);
		return NULL;
	}
	m = call_message(jid, method, params);
	json_decref(jid);
	return m;
}

/* A notification: no id, no reply. */
json_t *
proto_notification(const char *method, json_t *params)
{
	return call_message(NULL, method, params);
}

/* A result reply. result (stolen) NULL is taken as a failed allocation. */
json_t *
proto_result(json_t *id, json_t *result)
{
	json_t *m;

	if (!result)
		return NULL;
	m = envelope(id ? id : json_null());
	return add_or_drop(m, "result", result);
}

/*
 * data as an object carrying "name". A caller's object is extended in place
 * unless someone else holds a reference to it, in which case it is copied.
 */
static json_t *
error_data(const char *name, json_t *data)
{
	json_t *obj;

	if (json_is_object(data)) {
		obj = data;
		if (data->refcount > 1) {
			obj = json_copy(data);
			json_decref(data);
			if (!obj)
				return NULL;
		}
	} else {
		obj = json_object();
		if (data)
			obj = add_or_drop(obj, "detail", data);
		if (!obj)
			return NULL;
	}
	return add_or_drop(obj, "name", json_string(name));
}

/* An error reply; see proto.h. Unknown codes are named "unknown". */
json_t *
proto_error(json_t *id, int code, const char *message, json_t *data)
{
	const char *name = proto_error_name(code);
	json_t *e, *m;

	if (!name)
		name = "unknown";
	data = error_data(name, data);
	if (!data)
		return NULL;
	e = json_object();
	e = add_or_drop(e, "code", json_integer(code));
	/* The message may be cut from a peer's text or be a user's bytes: never refuse it. */
	e = add_or_drop(e, "message", proto_text_string(message ? message : name, SIZE_MAX));
	e = add_or_drop(e, "data", data);
	if (!e)
		return NULL;
	m = envelope(id ? id : json_null());
	return add_or_drop(m, "error", e);
}

/* An error reply with a printf-style message and no extra data. */
json_t *
proto_errorf(json_t *id, int code, const char *fmt, ...)
{
	va_list ap;
	char *message;
	json_t *m;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&message, fmt, ap);
	va_end(ap);
	if (n < 0)
		return NULL;
	m = proto_error(id, code, message, NULL);
	free(message);
	return m;
}

/* Unpacks params strictly; see proto.h. */
int
proto_vunpack(json_t *params, struct proto_error *err, const char *fmt, va_list ap)
{
	json_t *empty = NULL;
	json_error_t jerr;
	int rc;

	if (!params) {
		params = empty = json_object();
		if (!params)
			return -ENOMEM;
	}
	rc = json_vunpack_ex(params, &jerr, JSON_STRICT, fmt, ap);
	json_decref(empty);
	if (rc < 0) {
		if (err) {
			err->code = HERD_E_INVALID_PARAMS;
			proto_text_copy(err->text, sizeof(err->text), jerr.text, strlen(jerr.text));
		}
		return -EINVAL;
	}
	return 0;
}

/* The variadic front of proto_vunpack, the C idiom proto_text_format follows too. */
int
proto_unpack(json_t *params, struct proto_error *err, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = proto_vunpack(params, err, fmt, ap);
	va_end(ap);
	return rc;
}
