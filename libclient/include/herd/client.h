/* SPDX-License-Identifier: MIT */
/*
 * libherd, calling side: a connection to a worker's socket and the functions
 * it serves (rpc_parallel's Connection and Function.run).
 *
 * One engine serves both styles. The asynchronous API queues requests and
 * invokes callbacks from herd_conn_process(), which you drive from any event
 * loop with herd_conn_get_fd(), herd_conn_get_events() and
 * herd_conn_get_timeout() (or from libev with herd_conn_attach_ev() in
 * herd/herd-ev.h). The blocking API (herd_call(), herd_stream_next(),
 * herd_sink_finish()) runs the same engine over poll() until its own request
 * completes; callbacks of other requests on the connection may run meanwhile.
 *
 * Heartbeats while blocking: a connection sends its heartbeats when it is
 * processed, and a blocking call processes only its own connection. So that a
 * call longer than heartbeat_timeout_ms does not cost the program its other
 * connections (herdd would take a silent master for dead and kill its
 * workers), every wait inside libherd (the blocking calls, herd_conn_flush(),
 * herd_conn_wait(), the herd_master_* requests, a connect) also sends the
 * heartbeats that fall due on every other open connection of the process that
 * is not attached to a libev loop, whichever thread owns it. It only writes:
 * nothing is read from those connections, none of their callbacks runs and
 * none is closed from inside someone else's wait. What their peers sent
 * meanwhile (replies, stream items, herdd's events, heartbeats) waits in the
 * socket until the connection is next processed, which reads it before it
 * judges silence, so a connection is not timed out for the time it was not
 * read. Two limits: a connection attached with herd_conn_attach_ev() is its
 * loop's alone (block inside that loop's callbacks for no longer than the
 * timeout); and nothing is sent while no thread is inside libherd, so a
 * program that computes longer than the timeout without calling libherd must
 * process its connections meanwhile or choose a longer heartbeat_timeout_ms.
 * A worker that streams to a connection nobody reads stops reading it once its
 * output backs up (PROTOCOL.md 6.4), so read streams steadily or cancel them.
 *
 * Timeouts are in microseconds. 0 means "the default": the connection's call
 * timeout (HERD_DEFAULT_CALL_TIMEOUT_USEC unless changed with
 * herd_conn_set_call_timeout()). HERD_TIMEOUT_INFINITE waits forever.
 *
 * Errors: see herd/common.h. Besides -EINVAL for bad arguments, calls return
 * -EREMOTEIO when the worker answered with an error (herd_conn_last_error() or
 * the callback's herd_error tell which: function_failed with the handler's
 * text, method_not_found, invalid_params...), -ETIMEDOUT when the call's
 * timeout passed, -ECONNRESET when the connection closed while the request was
 * pending (error name connection_closed; worker_exited with herdd's account of
 * the end when the connection came from herd_worker_connect() and its worker
 * died: herd/master.h), -ENOTCONN when it was already
 * closed, -EMSGSIZE when the encoded request is larger than max_message_size
 * (refused locally; the connection is untouched), -ECANCELED when cancelled.
 */
#ifndef HERD_CLIENT_H
#define HERD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include <herd/common.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HERD_TIMEOUT_INFINITE UINT64_MAX
/* Default per-call timeout: long enough for real work, finite so nothing hangs forever. */
#define HERD_DEFAULT_CALL_TIMEOUT_USEC (120ull * 1000000ull)

typedef struct herd_conn herd_conn;
typedef struct herd_pending herd_pending;
typedef struct herd_stream herd_stream;
typedef struct herd_sink herd_sink;

/* ---- connections ---- */

/*
 * Connects to the worker listening on socket_path and completes the hello
 * handshake (role "client"). connect() waits at most connection_timeout_ms
 * and the answer to hello at most handshake_timeout_ms.
 * init (borrowed, may be NULL) is the connection-state init argument handed to
 * the worker's connection init. settings (borrowed JSON object, may be NULL)
 * overrides the defaults field by field and is itself overridden by
 * $HERD_RPC_SETTINGS. libherd clients ask for heartbeats by default
 * (heartbeat_interval_ms 1000, heartbeat_timeout_ms 10000); the worker's
 * answer decides (herd_conn_get_settings()). Set heartbeat_interval_ms to 0
 * for none. max_message_size limits what this side accepts; what it sends is
 * limited by the smaller of it and the worker's announced limit.
 *
 * Returns 0 with *ret a new connection, or -EINVAL (bad argument or invalid
 * settings), -ENOENT/-ECONNREFUSED (nobody listens), -ETIMEDOUT,
 * -EREMOTEIO (the worker refused: init_failed with the worker's message,
 * version_mismatch...), -ECONNRESET (closed during the handshake).
 * ret_error (may be NULL) receives a new reference to the error describing
 * any failure, local or remote; the caller unrefs it.
 */
HERD_EXPORT int herd_conn_connect(const char *socket_path, json_t *init, json_t *settings,
    herd_conn **ret, herd_error **ret_error);

HERD_EXPORT herd_conn *herd_conn_ref(herd_conn *conn);
/*
 * Drops a reference; NULL-safe, returns NULL. Dropping the last reference
 * closes the connection first (as herd_conn_close()), so pending callbacks
 * and the close callback still run, exactly once.
 */
HERD_EXPORT herd_conn *herd_conn_unref(herd_conn *conn);

/*
 * Closes the connection now. Every pending call, stream and sink fails at once
 * with -ECONNRESET (error connection_closed), then the close callback runs with
 * reason 0. Idempotent. Safe from inside any callback of this connection.
 */
HERD_EXPORT int herd_conn_close(herd_conn *conn);

/* 1 if the connection is closed, 0 if open, -EINVAL for NULL. */
HERD_EXPORT int herd_conn_is_closed(herd_conn *conn);

/*
 * Called once when the connection closes, for whatever reason. reason is 0
 * for herd_conn_close()/the last unref, -ECONNRESET when the peer closed,
 * -ETIMEDOUT when heartbeats stopped arriving, -EBADMSG for a framing error
 * (oversize or malformed message from the peer), -EPROTO for a protocol
 * violation, or another -errno from the socket; err (borrowed, valid during the
 * callback) describes it. Setting a new callback replaces the old one; cb NULL
 * removes it. Returns 0, -EINVAL, or -ENOTCONN if already closed.
 */
typedef void (*herd_conn_close_cb)(herd_conn *conn, int reason, herd_error *err, void *userdata);
HERD_EXPORT int herd_conn_on_close(herd_conn *conn, herd_conn_close_cb cb, void *userdata);

/*
 * The error of the last request that failed on conn (borrowed; valid until the
 * next call on conn), or NULL.
 */
HERD_EXPORT herd_error *herd_conn_last_error(herd_conn *conn);

/* Default timeout for calls started afterwards (0: HERD_DEFAULT_CALL_TIMEOUT_USEC). */
HERD_EXPORT int herd_conn_set_call_timeout(herd_conn *conn, uint64_t timeout_usec);

/*
 * The worker's hello result (borrowed): "version", "server", "pid", "name",
 * "id", "functions" [{name, kind}], "settings" (effective). NULL for NULL conn.
 */
HERD_EXPORT json_t *herd_conn_get_server_info(herd_conn *conn);
/* The effective settings agreed in the handshake (borrowed JSON object). */
HERD_EXPORT json_t *herd_conn_get_settings(herd_conn *conn);

/* ---- loop-independent core (the sd-varlink model) ---- */

/* The socket to watch, or -EINVAL/-ENOTCONN. */
HERD_EXPORT int herd_conn_get_fd(herd_conn *conn);
/* POLLIN, plus POLLOUT while output is queued; or -EINVAL/-ENOTCONN. */
HERD_EXPORT int herd_conn_get_events(herd_conn *conn);
/*
 * The next deadline (a call timeout, a heartbeat to send, the heartbeat
 * timeout) as an ABSOLUTE CLOCK_MONOTONIC time in microseconds, or
 * HERD_TIMEOUT_INFINITE when none. Call herd_conn_process() once it has passed.
 * Returns 0, -EINVAL or -ENOTCONN.
 */
HERD_EXPORT int herd_conn_get_timeout(herd_conn *conn, uint64_t *ret_usec);
/*
 * Does whatever can be done without blocking: writes queued output, reads and
 * dispatches incoming messages (callbacks run here), handles expired timeouts
 * and heartbeats. Returns >0 if it made progress (call again before waiting),
 * 0 if there was nothing to do, or a negative errno (-ENOTCONN once closed).
 */
HERD_EXPORT int herd_conn_process(herd_conn *conn);
/*
 * Waits up to timeout_usec (HERD_TIMEOUT_INFINITE: no limit) for the socket
 * or the connection's next deadline, without processing this connection (the
 * other connections get their due heartbeats meanwhile, as in every wait: see
 * the top of this file). Returns >0 if ready, 0 on timeout, or a negative
 * errno (-EINTR included).
 */
HERD_EXPORT int herd_conn_wait(herd_conn *conn, uint64_t timeout_usec);
/* Blocks until queued output is written (or timeout). Returns 0 or -errno. */
HERD_EXPORT int herd_conn_flush(herd_conn *conn, uint64_t timeout_usec);

/* A connection's counters since it was opened (the hello included). */
struct herd_conn_stats {
	uint64_t bytes_in; /* read from the socket */
	uint64_t bytes_out; /* written to the socket */
	uint64_t messages_in; /* whole messages received (heartbeats included) */
	uint64_t messages_out; /* messages queued to send (heartbeats included) */
	/* Microseconds (CLOCK_MONOTONIC) since anything was last received (or since
	 * the connection opened): how long the peer has been silent. */
	uint64_t last_received_age_usec;
};
/*
 * Fills *ret with conn's counters. Also valid once closed: the counts stop
 * there, the silence keeps growing.
 * Owning thread only, like every function on conn. Returns 0 or -EINVAL.
 */
HERD_EXPORT int herd_conn_get_stats(herd_conn *conn, struct herd_conn_stats *ret);

/* ---- functions the worker calls back ---- */

/*
 * A function this side serves to its worker on conn (PROTOCOL.md 6.7): a
 * handler on the worker may call it while a call of ours runs, to report
 * progress or ask for more work (herd_request_call_client() in
 * herd/worker.h). args is the worker's params (borrowed; JSON null when
 * absent). Return 0 with *ret_result set (a new reference; left NULL it
 * answers JSON null), or a negative errno, optionally with *reterr_message (a
 * malloc'd text the library frees) for the function_failed error the worker
 * gets. The answer is sent when the function returns: it cannot be deferred.
 * For a notification from the worker (a call it does not want answered) the
 * return is dropped. It runs like every callback of conn: from
 * herd_conn_process(), a blocking call on conn (a herd_call() that is waiting
 * for the very call whose handler calls back, typically) or its loop, on the
 * thread that owns conn. It may call on conn, blocking calls included.
 */
typedef int (*herd_conn_function_fn)(herd_conn *conn, const char *function, json_t *args,
    json_t **ret_result, char **reterr_message, void *userdata);

/*
 * Serves function (a name as for calls) on conn with fn, replacing a previous
 * fn for that name; fn NULL stops serving it. A name conn does not serve
 * answers the worker's request with method_not_found. Returns 0, -EINVAL or
 * -ENOMEM.
 */
HERD_EXPORT int herd_conn_serve(
    herd_conn *conn, const char *function, herd_conn_function_fn fn, void *userdata);

/* ---- calls (kind "call") ---- */

/*
 * Connect, call, close: herd_conn_connect(socket_path) with the default
 * settings (and $HERD_RPC_SETTINGS), herd_call(), then the connection is
 * closed whatever happened, as rpc_parallel's Connection.with_close. For one
 * call in a while; keep a connection for many. timeout_usec bounds the call
 * (0: HERD_DEFAULT_CALL_TIMEOUT_USEC); the connect is bounded by
 * connection_timeout_ms and handshake_timeout_ms. Returns 0 with
 * *ret_result (new reference; may be NULL to discard) or a negative errno as
 * for herd_conn_connect() and herd_call(), with *ret_error (may be NULL) a
 * new reference to the error. For a spawned worker: herd_worker_call_once().
 */
HERD_EXPORT int herd_call_once(const char *socket_path, const char *function, json_t *args,
    uint64_t timeout_usec, json_t **ret_result, herd_error **ret_error);

/*
 * Calls function with args (borrowed: a JSON object or array, as JSON-RPC
 * params must be; NULL sends no params, which the worker sees as null; any
 * other type is -EINVAL) and waits for the reply. On success returns 0 and, if
 * ret_result is not NULL, a new reference to the result. See the errors
 * above; the remote error is herd_conn_last_error(conn).
 */
HERD_EXPORT int herd_call(herd_conn *conn, const char *function, json_t *args,
    uint64_t timeout_usec, json_t **ret_result);

/*
 * The same with JSON texts: json_args may be NULL (no params); on success
 * *ret_json_result is a malloc'd compact JSON text the caller free()s.
 * Invalid json_args is -EINVAL.
 */
HERD_EXPORT int herd_call_str(
    herd_conn *conn, const char *function, const char *json_args, char **ret_json_result);

/*
 * Completion of an asynchronous call: r is 0 or a negative errno as for
 * herd_call(); result (on success) and error (on failure) are borrowed and
 * valid during the callback. Runs exactly once, from herd_conn_process(), a
 * blocking call on the same connection, herd_call_cancel() or the close.
 */
typedef void (*herd_call_cb)(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata);

/*
 * Starts a call. Returns 0 (cb will run exactly once) or a negative errno (cb
 * never runs). ret_call (may be NULL) receives a new reference to the pending
 * call (herd_pending: the type cannot be called herd_call, which is the
 * blocking function), used to cancel it or change its timeout; the call stays
 * pending whether or not you keep that reference.
 */
HERD_EXPORT int herd_call_async(herd_conn *conn, const char *function, json_t *args,
    herd_call_cb cb, void *userdata, herd_pending **ret_call);

HERD_EXPORT herd_pending *herd_pending_ref(herd_pending *call);
HERD_EXPORT herd_pending *herd_pending_unref(herd_pending *call);
/* Changes the timeout of a pending call, counted from now. */
HERD_EXPORT int herd_call_set_timeout(herd_pending *call, uint64_t timeout_usec);
/*
 * Gives up on a pending call: its callback runs now with -ECANCELED and a late
 * reply is ignored. Returns 0, or -EALREADY if it already completed.
 */
HERD_EXPORT int herd_call_cancel(herd_pending *call);

/* Sends a one-way call (kind "oneway"): no reply, no callback. Returns 0 once queued. */
HERD_EXPORT int herd_oneway(herd_conn *conn, const char *function, json_t *args);

/* ---- server-to-client streams (kinds "pipe" and "state") ---- */

/*
 * Called for each item (borrowed, valid during the callback). initial is true
 * for the first item of a "state" function (the initial state).
 */
typedef void (*herd_stream_item_cb)(
    herd_stream *stream, json_t *item, bool initial, void *userdata);
/*
 * Called exactly once when the stream ends: r 0 with the final result
 * (borrowed, may be JSON null), -ECANCELED after herd_stream_cancel() (unless
 * the stream had already finished: then its real end), or another negative
 * errno with error (borrowed) as for herd_call().
 */
typedef void (*herd_stream_end_cb)(
    herd_stream *stream, int r, json_t *result, herd_error *error, void *userdata);

/*
 * Opens a stream. With on_item set, items and the end go to the callbacks
 * (on_end may be NULL). With on_item NULL the stream is an iterator: items
 * queue until herd_stream_next() takes them (on_end, if set, still runs once);
 * the queue has no limit, so read an iterator steadily or cancel it.
 * Streams have no overall timeout (they may legitimately run forever, like
 * herd.logs); herd_stream_next() has its own.
 * Returns 0 with *ret (a new reference; may be NULL in callback style) or a
 * negative errno (no callback runs).
 */
HERD_EXPORT int herd_stream_open(herd_conn *conn, const char *function, json_t *args,
    herd_stream_item_cb on_item, herd_stream_end_cb on_end, void *userdata, herd_stream **ret);

/*
 * Iterator style: waits up to timeout_usec (0: the call timeout) for the next
 * item. Returns 1 with *ret_item a new reference, 0 when the stream ended
 * successfully (the result is herd_stream_result()), or a negative errno: the
 * stream's error (-EREMOTEIO, -ECANCELED, -ECONNRESET; herd_stream_error()
 * tells more), -ETIMEDOUT if nothing arrived in time (the stream stays open),
 * -EINVAL in callback style. After the end, keeps returning the same end.
 */
HERD_EXPORT int herd_stream_next(herd_stream *stream, uint64_t timeout_usec, json_t **ret_item);
/* 1 if the item last returned by herd_stream_next() was flagged initial, else 0. */
HERD_EXPORT int herd_stream_item_initial(herd_stream *stream);
/* The final result once ended successfully (borrowed), else NULL. */
HERD_EXPORT json_t *herd_stream_result(herd_stream *stream);
/* The error the stream ended with (borrowed), else NULL. */
HERD_EXPORT herd_error *herd_stream_error(herd_stream *stream);
/* 1 once the stream ended, else 0. */
HERD_EXPORT int herd_stream_is_done(herd_stream *stream);

/*
 * Asks the worker to stop the stream (herd.cancel); the handler is told.
 * Items arriving afterwards are dropped, and the stream ends exactly once with
 * -ECANCELED (or its real end if it had already finished). Returns 0, or
 * -EALREADY if it already ended.
 */
HERD_EXPORT int herd_stream_cancel(herd_stream *stream);

HERD_EXPORT herd_stream *herd_stream_ref(herd_stream *stream);
HERD_EXPORT herd_stream *herd_stream_unref(herd_stream *stream);

/* ---- client-to-server streams (kind "sink") ---- */

/* Opens a sink stream. Returns 0 with *ret (a new reference) or a negative errno. */
HERD_EXPORT int herd_sink_open(
    herd_conn *conn, const char *function, json_t *args, herd_sink **ret);
/*
 * Queues one item (borrowed) without blocking. Returns 0, -EMSGSIZE (item too
 * large; nothing sent), -EPIPE if the sink already ended (finished, cancelled,
 * the connection closed, or the worker replied early: herd_sink_finish() then
 * returns how it ended), -ENOBUFS if the connection's output queue is full
 * (drain it with herd_conn_flush()).
 */
HERD_EXPORT int herd_sink_send(herd_sink *sink, json_t *item);
/*
 * Sends the end of the stream and waits up to timeout_usec (0: the call
 * timeout) for the handler's result: 0 with *ret_result (new reference, may be
 * NULL to discard), or a negative errno as for herd_call().
 */
HERD_EXPORT int herd_sink_finish(herd_sink *sink, uint64_t timeout_usec, json_t **ret_result);
/*
 * The same, asynchronously: cb runs exactly once if this returns 0. Returns
 * -EALREADY if the sink already ended (herd_sink_finish() then returns its
 * outcome without waiting).
 */
typedef void (*herd_sink_cb)(
    herd_sink *sink, int r, json_t *result, herd_error *error, void *userdata);
HERD_EXPORT int herd_sink_finish_async(herd_sink *sink, herd_sink_cb cb, void *userdata);
/* Aborts the sink (herd.cancel); a pending finish completes with -ECANCELED. */
HERD_EXPORT int herd_sink_cancel(herd_sink *sink);
/* The error the sink ended with (borrowed), else NULL. */
HERD_EXPORT herd_error *herd_sink_error(herd_sink *sink);

HERD_EXPORT herd_sink *herd_sink_ref(herd_sink *sink);
HERD_EXPORT herd_sink *herd_sink_unref(herd_sink *sink);

#ifdef __cplusplus
}
#endif

#endif
