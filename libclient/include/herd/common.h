/* SPDX-License-Identifier: MIT */
/*
 * libherd: what every part of the public API shares.
 *
 * Conventions (they hold for every herd_* function):
 * - A function returns 0 (or a positive count) on success and a negative errno
 *   on failure. Bad arguments give -EINVAL; nothing aborts.
 * - A failure that came from the other side (the worker's function failed,
 *   herdd refused) returns -EREMOTEIO (or the errno named by the function)
 *   and leaves a herd_error describing it, retrievable from the handle
 *   (herd_conn_last_error(), herd_master_last_error()) or passed to the
 *   callback.
 * - JSON arguments are borrowed (the caller keeps its reference); JSON results
 *   are new references the caller must json_decref(). A function documented as
 *   stealing a value steals it even when it fails, with one exception:
 *   herd_request_write() leaves the item with the caller when it returns
 *   -EAGAIN (not sent: write the same item again once the output drained).
 * - Handles are opaque and reference-counted; every *_unref() accepts NULL and
 *   returns NULL, so `x = herd_conn_unref(x);` clears a pointer.
 * - A callback registered by a call that fails never runs. A callback
 *   registered by a call that succeeds runs exactly once (per item for item
 *   callbacks, which are followed by exactly one end callback).
 *
 * Thread safety: a handle (herd_conn, herd_master, a worker's server) and
 * everything derived from it belong to one thread at a time. Different handles
 * may be used from different threads concurrently; the library keeps no
 * unsynchronised global state except what herd_version() returns, which is
 * constant. Callbacks run on the thread that calls herd_*_process(), a
 * blocking herd_* function, or runs the libev loop the handle is attached to.
 * One exception to "one thread": while any thread waits inside libherd, it
 * sends the due heartbeats of the process's other open connections that are
 * not attached to a libev loop, another thread's included (herd/client.h).
 * That touches only a connection's outgoing queue, under a lock of the
 * connection's own, and never runs its callbacks, so it needs nothing from
 * the program. A child of fork() must not use its parent's connections; the
 * child's waits leave them alone.
 */
#ifndef HERD_COMMON_H
#define HERD_COMMON_H

#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef HERD_EXPORT
#define HERD_EXPORT __attribute__((visibility("default")))
#endif

/* The library's version string, e.g. "0.1.0". Constant; never NULL. */
HERD_EXPORT const char *herd_version(void);

/* What this process is to herd: bits of herd_process_role()'s answer. */
enum herd_role {
	HERD_ROLE_NONE = 0,
	HERD_ROLE_WORKER = 1 << 0, /* it serves a worker type (herd_worker_main(), herd_serve()) */
	HERD_ROLE_MASTER = 1 << 1, /* it connected to herdd as a master (herd_master_connect()) */
	HERD_ROLE_SUPERVISED = 1 << 2, /* herdd started it as a worker (fd-3 channel) */
};

/*
 * "Am I a worker or a master?": the HERD_ROLE_* bits this process has taken
 * on so far, so a program that is both (herd_start_app(), a worker that spawns
 * workers of its own) can tell. A bit is set once the role starts (a worker's
 * as soon as herd_worker_main() begins or herd_serve() succeeds, a master's
 * when herd_master_connect() succeeds) and stays set for the life of the
 * process. An inspector session is not a master. Any thread; never fails.
 */
HERD_EXPORT int herd_process_role(void);

/*
 * An error reported by the other side of a connection or made up locally (a
 * timeout, a closed connection). Immutable once created. Errors handed to you
 * are borrowed: take a reference with herd_error_ref() to keep one past the
 * point the documentation says it stays valid.
 */
typedef struct herd_error herd_error;

/* Takes a reference. Returns err (NULL-safe). */
HERD_EXPORT herd_error *herd_error_ref(herd_error *err);
/* Drops a reference. NULL-safe; returns NULL. */
HERD_EXPORT herd_error *herd_error_unref(herd_error *err);

/* The JSON-RPC error code (a HERD_E_* value from herd/protocol.h); 0 for NULL. */
HERD_EXPORT int herd_error_code(const herd_error *err);
/* The stable snake_case name ("function_failed"); never NULL for a non-NULL err. */
HERD_EXPORT const char *herd_error_name(const herd_error *err);
/* The human message (for function_failed: the handler's own text). Never NULL
 * for a non-NULL err. */
HERD_EXPORT const char *herd_error_message(const herd_error *err);
/* The error's "data" object (borrowed, may be NULL); it always holds "name". */
HERD_EXPORT json_t *herd_error_data(const herd_error *err);

/*
 * Bytes: binary payloads in arguments, results and stream items without
 * base64 by hand. A bytes value is a JSON object {"$bytes": ...} that herd's
 * encoder recognises: between two libherd peers on this host a payload of
 * 16 KiB or more travels in a sealed memfd passed with the message, and
 * otherwise (smaller, over a link to another host, a peer that does not
 * offer it, such as the Python package) as base64 inside the JSON. The
 * receiving libherd turns either form back into a bytes value, so code on
 * both sides sees the same thing; any other JSON reader sees
 * {"$bytes": "<base64>"} (proto/PROTOCOL.md 1.1). Payloads count against
 * the other side's max_message_size (inline ones as base64 in the line,
 * out-of-band ones added up per message): a call whose bytes pass it fails
 * with -EMSGSIZE, a reply with limit_exceeded.
 *
 * Put one anywhere in a value (an argument's member, a result, an item).
 * The object is meant for herd's encoder only: its member holds the raw
 * bytes, which jansson's own json_dumps() would write as they are.
 */

/* A new bytes value holding a copy of data[0..len) (data may be NULL when len is 0): a new
 * reference, or NULL without memory. */
HERD_EXPORT json_t *herd_bytes_new(const void *data, size_t len);
/*
 * If v is a bytes value, sets *ret_data (borrowed from v, valid while you
 * hold v; not NUL-terminated for you to rely on) and *ret_len and returns 0;
 * otherwise returns -EINVAL. Received bytes values are always of this form.
 */
HERD_EXPORT int herd_bytes_get(const json_t *v, const void **ret_data, size_t *ret_len);

#ifdef __cplusplus
}
#endif

#endif
