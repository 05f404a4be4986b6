/* SPDX-License-Identifier: MIT */
/*
 * libherd, serving side: a worker type declared as data (a table of functions
 * plus state constructors and destructors), the request handle handed to each
 * function, herd_worker_main() for worker executables, and herd_log().
 *
 * The libev part (herd_serve(), herd_server, the loop of a request) lives in
 * herd/herd-ev.h so programs that only declare a worker type never include ev.h.
 *
 * Thread safety: every function declared here, herd_log() included, must be
 * called from the thread that runs the worker's event loop, and every callback
 * (handlers, init functions, destructors, on_* callbacks) runs on that thread,
 * except herd_offload_set_threads() (any thread) and the work function of
 * herd_request_offload(), which runs on a pool thread and touches no libherd
 * object. Long work goes there, so the loop keeps answering other calls and
 * sending heartbeats meanwhile; its done function replies from the loop.
 *
 * Ownership words follow jansson: "borrowed" (the caller keeps its reference),
 * "new reference" (the caller must json_decref), "stolen" (the callee takes the
 * reference, even when the call fails; the one exception is an item that
 * herd_request_write() refuses with -EAGAIN, which stays the caller's).
 */
#ifndef HERD_WORKER_H
#define HERD_WORKER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "herd/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * How a function is called (PROTOCOL.md section 6). Wire names: "call",
 * "oneway", "pipe", "sink", "state".
 */
enum herd_kind {
	HERD_KIND_CALL, /* request -> one result */
	HERD_KIND_ONEWAY, /* notification; never answered */
	HERD_KIND_PIPE, /* request -> items written by the worker -> final result */
	HERD_KIND_SINK, /* request + items sent by the caller + end -> result */
	HERD_KIND_STATE, /* a pipe whose first item is the initial state ("initial":true) */
};

/* Wire name of a kind ("pipe"), or NULL for a value outside the enum. */
HERD_EXPORT const char *herd_kind_name(enum herd_kind kind);
/* Kind for a wire name: returns the kind (>= 0) or -EINVAL. */
HERD_EXPORT int herd_kind_from_name(const char *name);

/* One incoming call of a worker function. Opaque and reference-counted. */
typedef struct herd_request herd_request;

/*
 * A worker function. arg is the call's params (borrowed; JSON null when the
 * caller sent none; valid during this call, and later through
 * herd_request_params()). The handler finishes the request now or later:
 *
 *   - call: herd_request_reply() or herd_request_fail();
 *   - pipe/state: herd_request_write() items, then herd_request_end() or fail;
 *   - sink: register herd_request_on_item() and herd_request_on_end(), and
 *     reply from the end callback (or later);
 *   - oneway: nothing to answer; the request cannot reply.
 *
 * To finish after returning, take a reference with herd_request_ref() (and drop
 * it once done) or register a callback the library will call (on_end, on_drain).
 * A call, pipe, state or sink request left unfinished with neither is failed by
 * the library with internal_error, so a forgetful handler never hangs a caller.
 * Nothing a handler does to its request closes the connection.
 */
typedef void (*herd_handler_fn)(herd_request *req, json_t *arg);

/* One entry of a worker type's function table. */
struct herd_function {
	const char *name; /* unique in the table; must not start with "herd." */
	enum herd_kind kind;
	herd_handler_fn handler;
};

/*
 * Worker-state constructor, run once before the worker serves. arg is the
 * worker's init argument (borrowed; JSON null when none was given). On success
 * it stores the state (may be NULL) in *ret_state and returns 0. On failure it
 * returns a negative errno and may store a message (malloc'd, freed by the
 * library) in *reterr_message; herd_init_fail() does both. The message reaches
 * whoever asked for the worker as the init_failed error.
 */
typedef int (*herd_init_worker_fn)(json_t *arg, void **ret_state, char **reterr_message);

/*
 * Connection-state constructor, run for every client connection during hello.
 * worker_state is the worker's state; arg is the "init" member of the client's
 * hello (borrowed; JSON null when absent). Same result convention as above; a
 * failure answers the hello with init_failed carrying the message and closes
 * the connection.
 */
typedef int (*herd_init_conn_fn)(
    void *worker_state, json_t *arg, void **ret_state, char **reterr_message);

/*
 * A combine function, for pools' map-reduce (herd/pool.h). acc is the running
 * accumulator (stolen: update it in place and return it, or return a new value
 * and drop it); value is the next result (borrowed). Returns the new
 * accumulator (a new reference), or NULL on failure (acc is still consumed).
 * userdata is the worker state on the worker side, the job's userdata on the
 * master side. For a commutative map-reduce it must be associative and
 * commutative, because results are folded in whatever order they complete.
 */
typedef json_t *(*herd_combine_fn)(json_t *acc, json_t *value, void *userdata);

/* A named combine function a worker type declares, for the built-in herd.fold. */
struct herd_combiner {
	const char *name;
	herd_combine_fn combine;
};

/*
 * A worker type: what herd_serve() and herd_worker_main() serve. Declare it as
 * a static const object; the library never copies or modifies it, so it must
 * outlive every server using it. Every member but functions may be NULL/0.
 */
struct herd_worker_type {
	const char *name; /* for logs and the hello result */
	const struct herd_function *functions;
	size_t n_functions; /* 0: the table ends at the first entry whose name is NULL */
	herd_init_worker_fn init_worker;
	herd_init_conn_fn init_conn;
	/* Called when the server is freed (its last reference dropped). */
	void (*free_worker)(void *worker_state);
	/* Called when a connection is freed: closed, and no request of it is still held. */
	void (*free_conn)(void *worker_state, void *conn_state);
	/*
	 * The combine functions herd.fold may name (PROTOCOL.md 6.6): a pool's
	 * map-reduce folds results into an accumulator kept by the worker with
	 * one of them. NULL/0: this type serves pools, but not worker-side folding.
	 */
	const struct herd_combiner *combiners;
	size_t n_combiners; /* 0: the table ends at the first entry whose name is NULL */
};

/*
 * For init functions: stores a message formatted from fmt (malloc'd) in
 * *reterr_message and returns -EINVAL, so "return herd_init_fail(reterr, ...);"
 * reports a failure in one line. If allocating fails the message is left NULL.
 */
HERD_EXPORT int herd_init_fail(char **reterr_message, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- requests ---- */

/* Takes a reference. Returns req (NULL-safe). */
HERD_EXPORT herd_request *herd_request_ref(herd_request *req);
/* Drops a reference; returns NULL (NULL-safe). Dropping the last reference of
 * an unfinished request does not finish it: see herd_handler_fn. */
HERD_EXPORT herd_request *herd_request_unref(herd_request *req);

/* The function's name and kind. The name is borrowed from the type's table. */
HERD_EXPORT const char *herd_request_function(const herd_request *req);
HERD_EXPORT enum herd_kind herd_request_kind(const herd_request *req);
/* The call's params (borrowed, JSON null when absent), valid while req is. */
HERD_EXPORT json_t *herd_request_params(const herd_request *req);
/* The state built by init_worker / init_conn (possibly NULL). The connection
 * state stays valid while any reference to req is held, even after the
 * connection closed. */
HERD_EXPORT void *herd_request_worker_state(const herd_request *req);
HERD_EXPORT void *herd_request_conn_state(const herd_request *req);

/*
 * Finishes a call with its result (stolen; NULL means JSON null). For pipe,
 * state and sink requests it is the final reply that ends the stream.
 * Returns 0 (sent or queued), or:
 *   -EINVAL     req is NULL, or a oneway request (nothing is sent);
 *   -EALREADY   the request was already finished;
 *   -ECANCELED  the caller cancelled it or its connection closed (nothing sent);
 *   -EMSGSIZE   the encoded result is over the connection's max_message_size:
 *               the caller gets limit_exceeded instead, and the request is finished;
 *   -EINVAL     also when the result cannot be encoded (nested deeper than 64):
 *               the caller gets internal_error, and the request is finished.
 */
HERD_EXPORT int herd_request_reply(herd_request *req, json_t *result);
/* Same as herd_request_reply(); reads better at the end of a stream. */
HERD_EXPORT int herd_request_end(herd_request *req, json_t *result);

/*
 * Folding in place. A call function that herd.fold runs (a pool's map-reduce
 * with a worker combine, herd/pool.h) may add its result straight into the
 * worker's accumulator instead of replying a value that the combine then
 * merges: a word count adds each file's words to the partial counts, with no
 * object per task and every word hashed once.
 *
 * herd_request_acc() returns the accumulator to add to (borrowed, valid until
 * req is answered). Under herd.fold it is the fold's accumulator, which takes
 * empty (stolen; dropped otherwise) as its value if it has none yet; from
 * then on the call's result is what it added, whatever it replies. In a plain
 * call it is a fresh accumulator of the call's own, empty. Returns NULL
 * (empty dropped) when req is NULL or answered, or the fold's accumulator is
 * lost or out of room (the fold then fails, saying why).
 * Add to it only once nothing can fail any more, and answer in the same
 * callback: what was added stays, and a fold that then fails would be
 * counted twice when the pool runs it again.
 *
 * herd_request_reply_acc() answers req once its result is in the
 * accumulator: a fold counts it (the combine does not run); a plain call
 * replies the accumulator, so either way the function computes the same
 * thing. Same returns as herd_request_reply().
 */
HERD_EXPORT json_t *herd_request_acc(herd_request *req, json_t *empty);
HERD_EXPORT int herd_request_reply_acc(herd_request *req);

/*
 * Finishes the request with error function_failed and a message formatted from
 * fmt (the caller sees it as the error's message). Same returns as reply; for a
 * oneway request the message is logged with herd_log() and 0 is returned.
 */
HERD_EXPORT int herd_request_fail(herd_request *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
HERD_EXPORT int herd_request_failv(herd_request *req, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/*
 * Finishes the request with an error of any code (a HERD_E_* value from
 * herd/protocol.h, e.g. HERD_E_INVALID_PARAMS), an optional data object
 * (stolen; its "name" member is filled in) and a formatted message.
 */
HERD_EXPORT int herd_request_error(herd_request *req, int code, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Sends one stream item of a pipe or state request (NULL means JSON null). The
 * first item of a state request is flagged "initial":true.
 * Ownership: the item is stolen, except when -EAGAIN is returned: then it was
 * not taken and the caller still owns its reference, so it can write the same
 * item again from its drain callback (or json_decref() it). Every other return
 * takes the item, as herd_request_reply() takes its result.
 * Returns 0 when queued, or:
 *   -EAGAIN     the connection's output is above its high-water mark: the item
 *               was NOT sent and is still the caller's. Register
 *               herd_request_on_drain() and write it again from there
 *               (backpressure: the caller is reading slowly);
 *   -EINVAL     not a pipe or state request, or the item cannot be encoded;
 *   -EALREADY   the request was already finished;
 *   -ECANCELED  cancelled or the connection closed;
 *   -EMSGSIZE   the item is over the connection's max_message_size (dropped;
 *               the stream continues).
 */
HERD_EXPORT int herd_request_write(herd_request *req, json_t *item);
/* True when herd_request_write() would not return -EAGAIN right now. */
HERD_EXPORT bool herd_request_writable(const herd_request *req);

/* True once the request was cancelled (by the caller, its connection closing,
 * or the server stopping). */
HERD_EXPORT bool herd_request_is_cancelled(const herd_request *req);
/* True once the request was finished (replied, failed, cancelled). */
HERD_EXPORT bool herd_request_is_finished(const herd_request *req);

/* Callbacks a handler registers on its request. Each registration replaces the
 * previous one of the same event; cb NULL removes it. They return 0, -EINVAL
 * (req NULL, or the wrong kind) or -EALREADY (the request is already finished).
 * None of them runs after the request is finished. */
typedef void (*herd_request_cb)(herd_request *req, void *userdata);
typedef void (*herd_item_cb)(herd_request *req, json_t *item, void *userdata);

/*
 * Runs at most once, when the request is cancelled before it finished: the
 * caller sent herd.cancel (accepted for every kind, calls included), its
 * connection closed, or the server is stopping.
 * Before the callback runs the library has already answered the caller (error
 * cancelled, or shutting_down), so the stream ends exactly once; every later
 * reply/write returns -ECANCELED. Stop any work for req here and drop the
 * references you hold. Any kind but oneway.
 */
HERD_EXPORT int herd_request_on_cancel(herd_request *req, herd_request_cb cb, void *userdata);

/*
 * Pipe and state: runs once, after a write returned -EAGAIN (or at once-ish,
 * from the loop, if the output is already below the low-water mark), when the
 * connection's output has drained. One-shot: register again for the next wait.
 * A registered drain callback keeps the request alive like a reference.
 */
HERD_EXPORT int herd_request_on_drain(herd_request *req, herd_request_cb cb, void *userdata);

/* Sink: runs for every herd.item the caller sends (item borrowed, valid during
 * the callback). Items arriving while none is registered are dropped. */
HERD_EXPORT int herd_request_on_item(herd_request *req, herd_item_cb cb, void *userdata);
/* Sink: runs once when the caller sends herd.end; reply from it (or later). A
 * registered end callback keeps the request alive like a reference. */
HERD_EXPORT int herd_request_on_end(herd_request *req, herd_request_cb cb, void *userdata);

/* ---- calling the client back ---- */

/*
 * Completion of herd_request_call_client(): r 0 with the client's result
 * (borrowed, valid during the callback), or a negative errno with error
 * (borrowed): -EREMOTEIO with the client's error (method_not_found when it
 * serves no such function, function_failed with its message), -ECONNRESET
 * when the connection closed first (connection_closed). Loop thread.
 */
typedef void (*herd_client_reply_cb)(
    herd_request *req, int r, json_t *result, herd_error *error, void *userdata);

/*
 * Calls function on the client that made req, on req's connection
 * (PROTOCOL.md 6.7), as rpc_parallel's workers call their master back: to
 * report progress or ask for more work while the call runs. The client serves
 * it with herd_conn_serve() (herd/client.h). args (borrowed) is an object, an
 * array or NULL (no params). With cb NULL it is a notification: sent, never
 * answered. Otherwise cb runs exactly once on the loop thread, and until then
 * the call holds a reference on req (so the library does not fail it as
 * forgotten). Any kind of request, finished or not, as long as its connection
 * is open: a client's blocking herd_call() serves these while it waits.
 * Returns 0, -EINVAL (bad arguments), -ECANCELED (the connection is closing
 * or closed), -EMSGSIZE (over the client's max_message_size; nothing sent).
 */
HERD_EXPORT int herd_request_call_client(
    herd_request *req, const char *function, json_t *args, herd_client_reply_cb cb, void *userdata);

/* ---- long work off the loop ---- */

/* Runs on a pool thread with the arg given to herd_request_offload(). */
typedef void (*herd_work_fn)(void *arg);
/* Runs on the loop thread once work(arg) returned; may reply to req. */
typedef void (*herd_work_done_fn)(herd_request *req, void *arg);

/*
 * Runs work(arg) on a thread of the process's pool, then done(req, arg) on
 * the thread of the loop that serves req, so a handler computes for as long as
 * it needs while the worker goes on answering other calls and heartbeats:
 *
 *     static void work(void *arg) { struct job *j = arg; j->answer = compute(j->n); }
 *     static void done(herd_request *req, void *arg) {
 *             struct job *j = arg;
 *             herd_request_reply(req, json_integer(j->answer));
 *             free(j);
 *     }
 *     ... in the handler: herd_request_offload(req, work, done, j);
 *
 * Thread rules: work must not call libherd or touch req, its params or any
 * JSON value the loop thread may use (jansson values are not thread-safe);
 * copy what it needs into arg before, and take results back through arg.
 * done runs on the loop thread like any handler callback.
 * Lifetime: the pending offload holds a reference on req (the library does
 * not fail it as forgotten) and keeps the loop running (ev_run() does not
 * return) until done has run. If this returns 0, done runs exactly once, after
 * work returned, whatever happened to the request meanwhile.
 * Cancel: work cannot be interrupted. If the caller cancels or its connection
 * closes meanwhile, the caller is answered at once (on_cancel runs as usual)
 * and done still runs later; its reply then returns -ECANCELED, and
 * herd_request_is_cancelled() tells. To stop early, have on_cancel set a flag
 * (an atomic the work reads) in arg.
 * Shutdown: a stopping worker answers its open requests with shutting_down at
 * once, as for any request; herd_worker_main() does not wait for running work
 * past its graceful-stop deadline, and work still running when the process
 * exits is abandoned.
 * The pool starts threads as work arrives, up to herd_offload_set_threads()
 * (default: the number of online CPUs), each with every signal blocked, and
 * keeps them for later work; jobs beyond that wait in order.
 * Returns 0, -EINVAL (a NULL argument), -EALREADY (req already finished),
 * -ENOMEM, or -EAGAIN (no pool thread could be started).
 */
HERD_EXPORT int herd_request_offload(
    herd_request *req, herd_work_fn work, herd_work_done_fn done, void *arg);

/*
 * The most pool threads herd_request_offload() may run (0: the online CPUs,
 * the default). Takes effect as the pool grows; threads never stop. Any
 * thread. Returns 0.
 */
HERD_EXPORT int herd_offload_set_threads(unsigned n);

/* ---- worker executables ---- */

/*
 * The main() of a worker executable: "return herd_worker_main(&type, argc, argv);".
 *
 * Supervised mode (herdd started us: HERD_CHANNEL_FD is set): speaks
 * PROTOCOL.md section 5 on that fd: hello, worker-state init, bind the socket
 * herdd named, ready (or init_failed), heartbeats; stops on herdd's shutdown,
 * on SIGTERM/SIGINT, on herd.shutdown, or (shutdown_on connection_closed) when
 * the first client connection closes; exits at once when herdd goes away.
 * HERD_CHANNEL_FD and HERD_WORKER_ID are removed from the environment and the
 * fd is made close-on-exec, so programs the worker runs inherit neither.
 *
 * Standalone mode: "--socket PATH [--init JSON] [--settings JSON]" serves on
 * PATH until herd.shutdown, SIGTERM or SIGINT.
 *
 * Returns the process exit status: 0 after a graceful stop (herd.shutdown,
 * herdd's shutdown, SIGTERM/SIGINT, the connection_closed connection ending),
 * 1 when init or binding failed or no client came within
 * connection_timeout_ms, 2 for a usage error. herd_worker_fail() and the loss
 * of herdd's channel exit the process directly with status 1. Runs libev's
 * default loop.
 *
 * A client connection that half-closes (shutdown(SHUT_WR), as socat does at
 * the end of its input) still gets the answers to what it asked; the
 * connection closes once they are written.
 */
HERD_EXPORT int herd_worker_main(const struct herd_worker_type *type, int argc, char **argv);

/*
 * A failure outside any request (rpc_parallel's uncaught exception after a
 * function returned): logs the message, tells herdd with a "failure"
 * notification when supervised, removes the socket file and exits with status 1.
 */
HERD_EXPORT __attribute__((noreturn, format(printf, 1, 2))) void herd_worker_fail(
    const char *fmt, ...);

/* ---- logging (rpc_parallel's async_log) ---- */

/* Levels, numbered as syslog's. */
enum herd_log_level {
	HERD_LOG_ERR = 3,
	HERD_LOG_WARNING = 4,
	HERD_LOG_NOTICE = 5,
	HERD_LOG_INFO = 6,
	HERD_LOG_DEBUG = 7,
};

/* "err", "warning", "notice", "info", "debug"; NULL for another value. */
HERD_EXPORT const char *herd_log_level_name(int level);

/*
 * Logs one message: a line "LEVEL: message" on stderr (HERD_LOG_DEBUG
 * excepted, so herdd's captured stderr tail stays useful), and an item
 * {"time": RFC 3339 UTC, "level": name, "message": text} on every open
 * herd.logs stream of this process. Items a slow reader cannot take are
 * dropped and counted in a later warning item. Loop thread only.
 */
HERD_EXPORT void herd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
HERD_EXPORT void herd_logv(int level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#ifdef __cplusplus
}
#endif

#endif
