/* SPDX-License-Identifier: MIT */
/*
 * The serving side's internals: a server (listening socket, worker state), its
 * connections (the shared peer of common/peer.h, plus hello and dispatch) and
 * the requests in flight on them. Everything runs on the loop's thread.
 *
 * Lifetimes are reference counts, so nothing is freed inside its own callback:
 * a request holds its connection, a connection holds its server. A connection
 * holds one reference on itself while it is open (dropped when it closes); a
 * request holds one for the pending table while it is unfinished.
 */
#ifndef HERD_WORKER_INTERNAL_H
#define HERD_WORKER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <jansson.h>

#include "herd/herd-ev.h"
#include "common/internal.h"
#include "proto.h"

/* Output above this holds the next request (and reading) back and makes stream writes wait. */
#define HERD__OUT_HIGH_WATER (1024u * 1024u)
/* Waiting writers are resumed once the output is back under this. */
#define HERD__OUT_LOW_WATER (256u * 1024u)
/* How long a closing connection may take to flush what it still has to say. */
#define HERD__FLUSH_TIMEOUT_S ((double)HERD__PEER_FLUSH_USEC / 1e6)

struct srv_conn;

struct herd_server {
	unsigned n_ref;
	struct ev_loop *loop;
	const struct herd_worker_type *type;
	size_t n_functions;
	void *worker_state;
	bool worker_state_set;
	struct herd__settings settings;
	unsigned max_pending;
	size_t max_output;

	int listen_fd;
	char *socket_path;
	dev_t sock_dev; /* identity of the socket file we bound, so we only unlink ours */
	ino_t sock_ino;
	ev_io accept_io;
	ev_timer accept_retry; /* out of fds: try accepting again later */
	ev_timer deferred; /* runs herd.shutdown after its reply is queued */
	bool accepting;
	bool closed;
	bool shutdown_requested;

	struct srv_conn *conns;
	unsigned n_conns; /* open connections */
	unsigned n_live; /* connections not yet freed (open or closed but held) */
	uint64_t n_accepted; /* connections ever accepted */
	uint64_t served; /* user function calls dispatched */
	char *worker_id; /* from herdd, for the hello result; may be NULL */

	herd_server_cb on_shutdown;
	void *on_shutdown_data;
	/* For herd_worker_main: told when a connection opens or closes. */
	void (*on_conn_change)(struct herd_server *srv, bool opened, void *userdata);
	void *on_conn_change_data;

	struct herd_server *all_next; /* every live server in the process */
	struct herd__offload *offload; /* herd_request_offload()'s completions; NULL until used */
};

enum srv_conn_state {
	SCONN_HELLO, /* waiting for hello */
	SCONN_OPEN, /* serving */
	SCONN_CLOSING, /* flushing the last replies, reading nothing */
	SCONN_CLOSED, /* fd closed; freed when the last reference goes */
};

struct srv_conn {
	struct herd__peer peer; /* I/O, framing, output, closing, heartbeats */
	struct herd_server *srv;
	enum srv_conn_state state;
	int cancel_code; /* what pending requests are answered with when the session ends */
	bool overflowed;

	void *conn_state;
	bool conn_state_set;

	/* The last result reply sent, reused by the next: only its id and result change. */
	json_t *reply;

	/* Pending requests, hashed by their id's text. */
	struct herd_request **buckets;
	size_t n_buckets;
	unsigned n_pending;
	/* Requests waiting for the output to drain. */
	struct herd_request *drain_head;
	/* Calls back to the client waiting for its reply (worker-callback.c). */
	struct herd__client_call *client_calls;
	int64_t next_client_id;
	struct srv_conn *prev, *next;
};

struct herd_request {
	unsigned n_ref;
	struct srv_conn *conn;
	const struct herd_function *fn;
	json_t *id; /* NULL for oneway */
	char *key; /* the id's text, the pending table key */
	json_t *params;
	bool finished;
	bool cancelled;
	bool in_table;
	bool wrote_item;
	bool draining; /* in conn->drain_head */
	herd_request_cb on_cancel, on_drain, on_end;
	herd_item_cb on_item;
	void *cancel_data, *drain_data, *end_data, *item_data;
	struct herd_request *hash_next;
	struct herd_request *drain_next;
	/*
	 * herd.fold's and herd.batch's inner requests: the answer goes here, not
	 * to the wire: result or error (the JSON-RPC error object), stolen, exactly
	 * one of them non-NULL.
	 */
	void (*answer_hook)(struct herd_request *req, json_t *result, json_t *error);
	void *hook_data;
	/*
	 * The accumulator herd.fold or herd.batch folds this inner request's result
	 * into (borrowed from them), and whether the function added to it itself
	 * (herd_request_acc()); without one, a call's own accumulator, its result.
	 */
	const char *acc_key;
	bool acc_in_place;
	json_t *own_acc;
	/* herd.logs subscribers (log.c). */
	struct herd_request *log_prev, *log_next;
	bool log_subscribed;
	unsigned long log_dropped;
};

/* ---- worker-server.c ---- */

/* Every server of the process, for herd_worker_fail() and the log streams. */
extern struct herd_server *herd__servers;

/*
 * Creates a server: resolves settings, runs the worker-state init. Does not
 * listen yet. On init failure returns -EREMOTEIO with *reterr_message set
 * (malloc'd); on bad settings -EINVAL with the text likewise.
 */
int herd__server_new(struct ev_loop *loop, const struct herd_worker_type *type, json_t *init_arg,
    json_t *settings, struct herd_server **ret, char **reterr_message);
/* Binds and listens on path (0600, stale socket replaced only if dead). */
int herd__server_listen(struct herd_server *srv, const char *path);
/* Stops accepting and removes the socket file; existing connections stay. */
void herd__server_stop_accepting(struct herd_server *srv);
/* Removes the socket file if it is still the one we bound. Safe anywhere. */
void herd__server_unlink(struct herd_server *srv);
/* herd.shutdown: runs the shutdown callback (or closes) from the loop. */
void herd__server_request_shutdown(struct herd_server *srv);
/* Tries to write every connection's queued output, waiting at most briefly. */
void herd__server_flush_all(void);
/* A connection of srv was freed: frees srv once unreferenced and connection-less. */
void herd__server_conn_freed(struct herd_server *srv);

/* ---- worker-conn.c ---- */

int herd__sconn_start(struct herd_server *srv, int fd);
struct srv_conn *herd__sconn_ref(struct srv_conn *c);
struct srv_conn *herd__sconn_unref(struct srv_conn *c);
/* Closes now: cancels pending requests, closes the fd. */
void herd__sconn_abort(struct srv_conn *c, const char *why);
/*
 * Closes after flushing: stops reading, cancels pending requests (answering
 * them with error code cancel_code unless 0), writes what is queued, then
 * closes (at the latest after HERD__FLUSH_TIMEOUT_S).
 */
void herd__sconn_close_graceful(struct srv_conn *c, int cancel_code, const char *why);
/*
 * Queues a message (stolen). Returns 0, -EMSGSIZE (over the peer's limit),
 * -EINVAL (not encodable), -ENOMEM, or -ENOBUFS (output cap: the connection
 * is closing). A reply that fails for its size or text is answered by the
 * peer's stand-in error with its id (herd__peer_queue()).
 */
int herd__sconn_send(struct srv_conn *c, json_t *msg);
/* Queues the reply (stolen) to id; NULL (building it failed) queues internal_error instead. */
int herd__sconn_reply(struct srv_conn *c, json_t *id, json_t *reply);
/* Replies to id (borrowed) with result (stolen), like herd__sconn_reply(c, id, proto_result(...)). */
int herd__sconn_result(struct srv_conn *c, json_t *id, json_t *result);
bool herd__sconn_writable(const struct srv_conn *c);
/* Queues a drain callback run once the output is under the low-water mark. */
void herd__sconn_wait_drain(struct srv_conn *c, struct herd_request *req);
/* Tries to write queued output now, waiting at most briefly. */
void herd__sconn_flush(struct srv_conn *c);
/* A request of c finished: a half-closed connection closes when none is left. */
void herd__sconn_request_done(struct srv_conn *c);

/* ---- worker-request.c ---- */

struct herd_request *herd__request_new(
    struct srv_conn *c, const struct herd_function *fn, json_t *id, json_t *params);
/*
 * Makes req, finished and held by its caller alone, a new inner request of
 * the same function with params (borrowed): herd.batch runs thousands of
 * items, and a request each would cost an allocation and a free per item.
 * Returns false (req untouched) when anyone else holds it or it is not done.
 */
bool herd__request_renew(struct herd_request *req, json_t *params);
/* Pending table. */
int herd__request_table_add(struct srv_conn *c, struct herd_request *req);
struct herd_request *herd__request_find(struct srv_conn *c, json_t *id);
/* Runs fn's handler, then fails the request if it was left unfinished and unheld. */
void herd__request_dispatch(struct herd_request *req);
/*
 * Cancels (code HERD_E_CANCELLED or HERD_E_SHUTTING_DOWN answers the caller;
 * 0 answers nothing because the connection is going away), then runs on_cancel.
 */
void herd__request_cancel(struct herd_request *req, int code);
/* Cancels every pending request of c. */
void herd__request_cancel_all(struct srv_conn *c, int code);
void herd__request_item(struct herd_request *req, json_t *item);
void herd__request_end_input(struct herd_request *req);
void herd__request_drained(struct herd_request *req);

/* ---- worker-builtin.c ---- */

/* The built-in function named method, or NULL. */
const struct herd_function *herd__builtin_find(const char *method);
/* The worker type's functions as [{name, kind}] (new reference or NULL). */
json_t *herd__functions_json(const struct herd_server *srv);
/* The type's function named name, or NULL. */
const struct herd_function *herd__function_find(const struct herd_server *srv, const char *name);

/* ---- worker-fold.c: herd.fold and herd.take ---- */

void herd__builtin_fold(herd_request *req, json_t *arg);
void herd__builtin_take(herd_request *req, json_t *arg);
/* The combine function type declares under name, or NULL. */
herd_combine_fn herd__combiner_find(const struct herd_worker_type *type, const char *name);
/*
 * Folds result (borrowed) of inner into its accumulator (inner->acc_key) of
 * srv, unless the function added to it in place. Returns the accumulator's
 * fold count, -ENOSPC (no room) or -EPIPE (a combine failed: it is lost).
 */
json_int_t herd__acc_fold(
    struct herd_server *srv, herd_request *inner, herd_combine_fn combine, json_t *result);
/* Hands accumulator key over and forgets it (*ret_value NULL if empty): its count or -EPIPE. */
json_int_t herd__acc_take(struct herd_server *srv, const char *key, json_t **ret_value);
/*
 * herd__acc_fold() into req's server. Returns the accumulator's fold count,
 * or 0 after answering req with the error.
 */
json_int_t herd__fold_into(
    herd_request *req, herd_request *inner, herd_combine_fn combine, json_t *result);
/* Cancels an inner request (herd.fold's, herd.batch's item) without telling its hook. */
void herd__request_cancel_inner(herd_request *inner);
/* Answers req with an inner request's JSON-RPC error object (borrowed). */
void herd__request_pass_error(herd_request *req, json_t *error);

/* ---- worker-batch.c: herd.batch ---- */

void herd__builtin_batch(herd_request *req, json_t *arg);

/* ---- worker-callback.c ---- */

/* A reply from the client: completes the call back it answers, if any. */
void herd__client_call_reply(struct srv_conn *c, const struct proto_msg *m);
/* The connection closed: every call back still waiting fails with -ECONNRESET. */
void herd__client_call_fail_all(struct srv_conn *c);

/* ---- worker-offload.c ---- */

/* Frees srv's offload completion side (it has no job out by then). */
void herd__offload_free(struct herd_server *srv);

/* ---- worker-log.c ---- */

void herd__log_subscribe(struct herd_request *req);
void herd__log_unsubscribe(struct herd_request *req);

/* ---- worker-main.c and worker-channel.c: herd_worker_main() ---- */

struct herd__main {
	struct ev_loop *loop;
	const struct herd_worker_type *type;
	struct herd_server *srv;
	ev_signal sigterm, sigint;
	ev_timer stop_deadline; /* a stop that takes too long ends the loop anyway */
	int exit_status;
	bool stopping;

	/* Supervised mode: herdd's channel on fd 3, a client connection (worker-channel.c). */
	herd_conn *ch;
	ev_timer conn_timeout; /* shutdown_on connection_closed: no client came */
	bool close_on_disconnect; /* shutdown_on connection_closed */
	unsigned connection_timeout_ms;
	unsigned heartbeat_interval_ms;
};

/* The running herd_worker_main(), or NULL (for herd_worker_fail()). */
extern struct herd__main *herd__main_current;

/* Stops serving and ends the loop once connections have flushed; the main returns status. */
void herd__main_stop(struct herd__main *m, int status);
/* Removes every server's socket file and exits at once with status. */
__attribute__((noreturn)) void herd__main_exit_now(int status);

/* Starts the supervised conversation on fd (PROTOCOL.md section 5). Returns 0 or -errno. */
int herd__channel_start(struct herd__main *m, int fd);
/* Sends the "failure" notification and waits briefly for it to leave. */
void herd__channel_send_failure(struct herd__main *m, const char *message);
/* Stops the channel's watchers (the fd stays open until exit, so herdd sees EOF then). */
void herd__channel_stop(struct herd__main *m);
/* Frees the channel's buffers and closes its fd. */
void herd__channel_free(struct herd__main *m);

#endif
