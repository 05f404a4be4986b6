/* SPDX-License-Identifier: MIT */
/*
 * herd wire constants shared by herdd, libherd and every other client:
 * the protocol version, the default limits and the stable error codes.
 * proto/PROTOCOL.md is the specification; this header only names its numbers.
 *
 * This header has no dependencies and is safe to include from any program.
 */
#ifndef HERD_PROTOCOL_H
#define HERD_PROTOCOL_H

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the wire protocol spoken in "hello". Bumped on any incompatible change. */
#define HERD_PROTOCOL_VERSION 1

/* Default limits (each is a setting unless marked fixed). */
#define HERD_DEFAULT_MAX_MESSAGE_SIZE      (16u * 1024u * 1024u) /* bytes, newline excluded */
#define HERD_MAX_DEPTH                     64u /* fixed: JSON nesting depth */
#define HERD_DEFAULT_HEARTBEAT_INTERVAL_MS 1000u
#define HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS  10000u
#define HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS  10000u
#define HERD_DEFAULT_SPAWN_TIMEOUT_MS      30000u
#define HERD_DEFAULT_CONNECTION_TIMEOUT_MS 10000u
#define HERD_DEFAULT_MAX_PENDING           1024u /* requests in flight per connection */
#define HERD_DEFAULT_MAX_OUTPUT            (64u * 1024u * 1024u) /* queued output bytes */

/*
 * Error codes carried in JSON-RPC error objects. -32768..-32000 is JSON-RPC's
 * reserved range: the first five are its standard codes, the rest are herd's
 * own ("server error" range -32099..-32000). Numbers are never reused.
 */
enum herd_error_code {
	HERD_E_PARSE_ERROR = -32700, /* parse_error: not valid JSON */
	HERD_E_INVALID_REQUEST = -32600, /* invalid_request: not a JSON-RPC 2.0 message */
	HERD_E_METHOD_NOT_FOUND = -32601, /* method_not_found */
	HERD_E_INVALID_PARAMS = -32602, /* invalid_params */
	HERD_E_INTERNAL_ERROR = -32603, /* internal_error */
	HERD_E_MESSAGE_TOO_LARGE = -32000, /* message_too_large: over max_message_size */
	HERD_E_TOO_DEEP = -32001, /* too_deep: JSON nested past HERD_MAX_DEPTH */
	HERD_E_DUPLICATE_KEY = -32002, /* duplicate_key: an object repeats a key */
	HERD_E_INVALID_UTF8 = -32003, /* invalid_utf8 */
	HERD_E_NUL_BYTE = -32004, /* nul_byte: a NUL byte inside a message */
	HERD_E_TOO_MANY_REQUESTS = -32005, /* too_many_requests: pending limit reached */
	HERD_E_HELLO_REQUIRED = -32006, /* hello_required: first message must be hello */
	HERD_E_VERSION_MISMATCH = -32007, /* version_mismatch */
	HERD_E_PERMISSION_DENIED = -32008, /* permission_denied */
	HERD_E_WORKER_NOT_FOUND = -32009, /* worker_not_found */
	HERD_E_SPAWN_FAILED = -32010, /* spawn_failed: fork/exec or setup failed */
	HERD_E_INIT_FAILED = -32011, /* init_failed: worker or connection state init failed */
	HERD_E_FUNCTION_FAILED = -32012, /* function_failed: the handler returned an error */
	HERD_E_TIMEOUT = -32013, /* timeout */
	HERD_E_CANCELLED = -32014, /* cancelled: the caller cancelled a stream */
	HERD_E_LIMIT_EXCEEDED = -32015, /* limit_exceeded: a named resource limit */
	HERD_E_SHUTTING_DOWN = -32016, /* shutting_down: the server is stopping */
	HERD_E_CONNECTION_CLOSED = -32017, /* connection_closed: the peer went away */
	HERD_E_WORKER_EXITED = -32018, /* worker_exited: the worker is no longer running */
	HERD_E_OUTPUT_OVERFLOW = -32019, /* output_overflow: the peer does not read */
	HERD_E_INVALID_BYTES = -32020, /* invalid_bytes: a $bytes value that cannot be read */
};

#ifdef __cplusplus
}
#endif

#endif
