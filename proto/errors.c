/* SPDX-License-Identifier: MIT */
/*
 * The stable names of herd's error codes. Names travel in every error reply
 * ("data": {"name": ...}) so clients can match on a word rather than a number.
 */
#include <string.h>

#include "proto.h"

static const struct {
	int code;
	const char *name;
} error_table[] = {
	{ HERD_E_PARSE_ERROR, "parse_error" },
	{ HERD_E_INVALID_REQUEST, "invalid_request" },
	{ HERD_E_METHOD_NOT_FOUND, "method_not_found" },
	{ HERD_E_INVALID_PARAMS, "invalid_params" },
	{ HERD_E_INTERNAL_ERROR, "internal_error" },
	{ HERD_E_MESSAGE_TOO_LARGE, "message_too_large" },
	{ HERD_E_TOO_DEEP, "too_deep" },
	{ HERD_E_DUPLICATE_KEY, "duplicate_key" },
	{ HERD_E_INVALID_UTF8, "invalid_utf8" },
	{ HERD_E_NUL_BYTE, "nul_byte" },
	{ HERD_E_TOO_MANY_REQUESTS, "too_many_requests" },
	{ HERD_E_HELLO_REQUIRED, "hello_required" },
	{ HERD_E_VERSION_MISMATCH, "version_mismatch" },
	{ HERD_E_PERMISSION_DENIED, "permission_denied" },
	{ HERD_E_WORKER_NOT_FOUND, "worker_not_found" },
	{ HERD_E_SPAWN_FAILED, "spawn_failed" },
	{ HERD_E_INIT_FAILED, "init_failed" },
	{ HERD_E_FUNCTION_FAILED, "function_failed" },
	{ HERD_E_TIMEOUT, "timeout" },
	{ HERD_E_CANCELLED, "cancelled" },
	{ HERD_E_LIMIT_EXCEEDED, "limit_exceeded" },
	{ HERD_E_SHUTTING_DOWN, "shutting_down" },
	{ HERD_E_CONNECTION_CLOSED, "connection_closed" },
	{ HERD_E_WORKER_EXITED, "worker_exited" },
	{ HERD_E_OUTPUT_OVERFLOW, "output_overflow" },
	{ HERD_E_INVALID_BYTES, "invalid_bytes" },
};

#define ERROR_TABLE_LEN (sizeof(error_table) / sizeof(error_table[0]))

/* A linear scan is fine: the table is short and error replies are rare. */
const char *
proto_error_name(int code)
{
	for (size_t i = 0; i < ERROR_TABLE_LEN; i++)
		if (error_table[i].code == code)
			return error_table[i].name;
	return NULL;
}

/* Looks a code up by its stable name. */
int
proto_error_code(const char *name)
{
	if (!name)
		return 0;
	for (size_t i = 0; i < ERROR_TABLE_LEN; i++)
		if (strcmp(error_table[i].name, name) == 0)
			return error_table[i].code;
	return 0;
}

/* Every code the table knows, for tests that walk all of them. */
size_t
proto_error_count(void)
{
	return ERROR_TABLE_LEN;
}

/* The i-th code of the table (i < proto_error_count()). */
int
proto_error_code_at(size_t i)
{
	return i < ERROR_TABLE_LEN ? error_table[i].code : 0;
}
