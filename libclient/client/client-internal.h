/* SPDX-License-Identifier: MIT */
/*
 * Internals of the calling side: the connection engine shared by calls,
 * streams, sinks and the herdd master API.
 *
 * Ownership: a connection holds one reference on each pending operation; an
 * operation points back at its connection without a reference (the pointer is
 * cleared when the operation completes). Closing a connection completes every
 * pending operation, so no operation ever outlives the connection it points at.
 */
#ifndef HERD_CLIENT_INTERNAL_H
#define HERD_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "herd/client.h"
#include "common/internal.h"
#include "proto.h"

enum op_type {
	OP_CALL,
	OP_STREAM,
	OP_SINK,
};

struct herd__op;
/* Completion hook of an operation: runs exactly once. */
typedef void (*herd__op_done_fn)(
    struct herd__op *op, herd_conn *conn, int r, json_t *result, herd_error *err);

/* A request waiting for its reply. The first member of herd_pending, herd_stream, herd_sink. */
struct herd__op {
	unsigned n_ref;
	enum op_type type;
	herd_conn *conn; /* weak; NULL once done */
	int64_t id;
	uint64_t deadline; /* absolute monotonic usec, HERD__USEC_INFINITY for none */
	bool done;
	bool cancelling; /* herd.cancel sent: items are dropped, the end is -ECANCELED */
	struct herd__op *hnext; /* hash bucket chain */
	struct herd__op *prev, *next; /* the connection's list of pending operations */
	herd__op_done_fn done_fn;
	void (*free_fn)(struct herd__op *op);
	/* The outcome, kept for getters once done. */
	int r;
	json_t *result;
	herd_error *error;
};

struct herd_pending {
	struct herd__op op;
	herd_call_cb cb;
	void *userdata;
};

struct herd_stream {
	struct herd__op op;
	herd_stream_item_cb on_item;
	herd_stream_end_cb on_end;
	void *userdata;
	json_t *queue; /* iterator style: array of [item, initial] pairs not yet taken */
	size_t queue_head;
	bool last_initial;
	bool wake; /* set when an item or the end arrives, for herd_stream_next() */
};

struct herd_sink {
	struct herd__op op;
	bool ended; /* herd.end or herd.cancel sent */
	bool async; /* herd_sink_finish_async() registered cb */
	herd_sink_cb cb;
	void *userdata;
};

enum conn_state {
	CONN_HANDSHAKE,
	CONN_OPEN,
	CONN_CLOSED,
};

/*
 * A connection: the shared JSON-lines peer (common/peer.h) for the socket,
 * its reader, output queue, heartbeats and references, plus the calls
 * pending on it. The public reference count is the peer's.
 */
struct herd_conn {
	struct herd__peer peer;
	enum conn_state state;
	bool closing; /* inside conn_close: no new operations */
	herd_error *close_err; /* why herd__conn_close() is closing, for the closed callback */

	struct herd__settings settings; /* ours; max_message_size is what we accept */

	int64_t next_id;
	struct herd__op **buckets;
	size_t n_buckets; /* power of two */
	size_t n_pending;
	struct herd__op *pending_head, *pending_tail;
	bool deadline_dirty;
	uint64_t next_op_deadline;

	uint64_t call_timeout_usec;

	/* The last request sent, reused by the next: only its id, method and params change. */
	json_t *request;

	/*
	 * Another thread's keepalive (client-keepalive.c) may write on this connection while
	 * it is listed: it touches only the peer's output side, under the peer's lock.
	 */
	bool ka_listed; /* in the keepalive list; changed by the owning thread only */
	herd_conn *ka_prev, *ka_next;

	json_t *server_info; /* hello result */
	herd_error *last_error;

	herd_conn_close_cb close_cb;
	void *close_userdata;

	/* Notifications the conn itself does not know ("event" for the master API). */
	void (*notify_fn)(herd_conn *conn, const char *method, json_t *params, void *userdata);
	/* The connection closed (before the close callback), with notify_userdata. */
	void (*closed_fn)(herd_conn *conn, int reason, herd_error *err, void *userdata);
	/* Params of our heartbeats (a new reference; NULL: none), with notify_userdata. */
	json_t *(*heartbeat_fn)(herd_conn *conn, void *userdata);
	void *notify_userdata;

	/*
	 * A spawned worker's connection (herd_worker_connect()): asks herdd why the
	 * worker ended when the connection is lost with operations pending. Returns
	 * the error they fail with (new reference), or NULL for connection_closed.
	 */
	herd_error *(*exit_cause_fn)(herd_conn *conn, void *userdata);
	void *exit_cause_userdata;
	void (*exit_cause_free)(void *userdata);

	struct herd__served *served; /* functions the worker may call back (client-serve.c) */
};

/* True when the connection sends and expects heartbeats: both settings are non-zero. */
static inline bool
herd__conn_heartbeats_on(const herd_conn *conn)
{
	return conn->settings.heartbeat_interval_ms > 0 && conn->settings.heartbeat_timeout_ms > 0;
}

/* ---- autostart.c ---- */

/* False when HERD_NO_AUTOSTART=1. */
bool herd__autostart_enabled(void);
/*
 * Starts a private herdd for socket_path and waits until it answers. Unless
 * default_path, the socket's directory must exist already. 0 or -errno.
 */
int herd__autostart(const char *socket_path, bool default_path, unsigned timeout_ms);

/* ---- client-link.c ---- */

/* True when address names a host (ssh://, slurm://, exec:), reached over a link. */
bool herd__link_address(const char *address);
/* True while this process has a link up to address's host. */
bool herd__link_up(const char *address);
/* The CPUs the remote herdd of address's host said its workers can use (0: no link up, or not said). */
unsigned herd__link_cpus(const char *address);
/*
 * Connects to address, HOST or HOST#PATH (PATH a socket on HOST), through
 * the process's link to HOST (PROTOCOL.md 9), launched if there is none,
 * with s's heartbeats and message size, within timeout_ms. Returns 0 with
 * *ret_fd (connected, non-blocking, close-on-exec) and *ret_sink, for the
 * connection's peer (herd__peer_set_sink() with herd__link_sink_ops: its
 * lines then go on the link from the writing thread), or -errno with
 * *ret_why a malloc'd sentence (may be NULL).
 */
struct herd__link_sink;
extern const struct herd__peer_sink herd__link_sink_ops;
int herd__link_connect(const char *address, const struct herd__settings *s, unsigned timeout_ms,
    int *ret_fd, struct herd__link_sink **ret_sink, char **ret_why);

/*
 * Ships the executable at path to address's host (PROTOCOL.md 9.5) over its
 * link, unless the host's cache holds it already. Returns 0 with *ret_path
 * (malloc'd) its path there, or -errno with *ret_why a malloc'd sentence
 * (-EPERM: the host refused it, its cached copy differs).
 */
int herd__link_ship(const char *address, const struct herd__settings *s, const char *path,
    unsigned timeout_ms, char **ret_path, char **ret_why);

/* ---- client-conn.c ---- */

/*
 * Opens a connection and completes hello with role and extra hello params
 * (borrowed, may be NULL: merged into params). Blocks for connection_timeout_ms.
 */
int herd__conn_open(const char *socket_path, const char *role, json_t *hello_extra,
    json_t *settings, bool heartbeats, herd_conn **ret, herd_error **ret_error);
/*
 * A connection over fd (connected, non-blocking, close-on-exec; taken over)
 * with settings s, before any hello: herd__conn_open() says hello on it, the
 * worker's fd-3 channel its own. NULL on ENOMEM (fd closed).
 */
herd_conn *herd__conn_new(int fd, const struct herd__settings *s);
/* Closes with reason/err (err may be NULL: a connection_closed error is made). */
void herd__conn_close(herd_conn *conn, int reason, herd_error *err);
/* Stores the error of the last failed request. */
void herd__conn_set_error(herd_conn *conn, herd_error *err);
/* The peer's closed callback: fails what is pending and tells the owner once. */
void herd__conn_closed(struct herd__peer *p, int reason, const char *why);
/* The peer's free callback. */
void herd__conn_free(struct herd__peer *p);

/* ---- client-io.c ---- */

/* The peer's callbacks of a connection. */
extern const struct herd__peer_ops herd__conn_peer_ops;
/* Encodes msg and queues it, then tries to write at once. -EMSGSIZE leaves nothing queued. */
int herd__conn_send(herd_conn *conn, json_t *msg);
/* Queues a notification method(params) (params stolen). */
int herd__conn_notify(herd_conn *conn, const char *method, json_t *params);
/*
 * Runs the engine over poll() until *done becomes true, or deadline
 * (absolute) passes (-ETIMEDOUT), or the connection closes (-ENOTCONN, unless
 * *done was set by the close).
 */
int herd__conn_run(herd_conn *conn, const bool *done, uint64_t deadline);
/*
 * A poll() timeout in milliseconds until the absolute deadline (herd__now_usec()
 * time), rounded up and at most a minute; -1 for HERD__USEC_INFINITY.
 */
int herd__poll_ms(uint64_t deadline);
/* Makes the libev watchers follow the connection's events and deadline. */
void herd__conn_update_ev(herd_conn *conn);

/* ---- client-keepalive.c ---- */

/*
 * Lists conn for keepalive if it is open, has heartbeats and is not attached to
 * a loop; a no-op otherwise or if listed already. Owning thread only.
 */
void herd__keepalive_add(herd_conn *conn);
/* Unlists conn; returns once no keepalive pass can be touching it. Owning thread only. */
void herd__keepalive_remove(herd_conn *conn);
/*
 * Called by every wait inside libherd: sends the heartbeats that are due on the
 * listed connections other than self (may be NULL). Write-only: no read, no
 * callback, no close. Returns the absolute time of the next pass to make.
 */
uint64_t herd__keepalive(herd_conn *self);

/* ---- calls (client-call.c) ---- */

/* Starts a call of any method, "hello" and herdd's methods included. */
int herd__call_start(herd_conn *conn, const char *method, json_t *params, uint64_t timeout_usec,
    herd_call_cb cb, void *userdata, herd_pending **ret_call);
/*
 * Calls method and waits. Returns 0 with *ret_result (new reference), or a
 * negative errno with *ret_error (new reference, may be NULL for local
 * argument errors) when ret_error is not NULL.
 */
int herd__call_sync(herd_conn *conn, const char *method, json_t *params, uint64_t timeout_usec,
    json_t **ret_result, herd_error **ret_error);
/* True if args can travel as params: NULL, an object or an array. */
bool herd__args_valid(const json_t *args);
/* True if name is a function name callers may use (not hello/heartbeat). */
bool herd__function_valid(const char *name);

/* ---- operations (client-op.c) ---- */

/*
 * Registers op as pending on conn with a fresh id and sends method(params)
 * (params borrowed). On failure op is not registered and nothing was sent.
 */
int herd__op_start(herd_conn *conn, struct herd__op *op, const char *method, json_t *params,
    uint64_t timeout_usec);
/*
 * A zeroed operation of size bytes (herd_pending, herd_stream or herd_sink,
 * whose first member is the op) holding one reference, or NULL on ENOMEM.
 */
void *herd__op_new(
    size_t size, enum op_type type, herd__op_done_fn done_fn, void (*free_fn)(struct herd__op *op));
/*
 * herd__op_start(), then the caller's reference: kept when keep (the caller
 * stores the handle), else dropped (the connection holds the op until it
 * completes). On failure the op is freed.
 */
int herd__op_launch(herd_conn *conn, struct herd__op *op, const char *method, json_t *params,
    uint64_t timeout_usec, bool keep);
/* Completes op: removes it from its connection, records the outcome and runs done_fn. */
void herd__op_complete(struct herd__op *op, int r, json_t *result, herd_error *err);
/* Completes op with a locally made error. */
void herd__op_fail(struct herd__op *op, int r, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
struct herd__op *herd__op_find(herd_conn *conn, int64_t id);
void herd__op_ref(struct herd__op *op);
void herd__op_unref(struct herd__op *op);
/* The earliest operation deadline. */
uint64_t herd__ops_next_deadline(herd_conn *conn);
/* Fails every operation whose deadline passed. Returns how many. */
int herd__ops_expire(herd_conn *conn, uint64_t now);
/* Fails every pending operation (the connection closed). */
void herd__ops_fail_all(herd_conn *conn, herd_error *err);
void herd__ops_free(herd_conn *conn);

/* Timeout to use: 0 means the connection's call timeout. */
uint64_t herd__conn_timeout(herd_conn *conn, uint64_t timeout_usec);

/* ---- client-serve.c ---- */

/*
 * Runs the served function a request or notification from the worker names.
 * Returns false for a notification nothing here serves (it goes on to
 * notify_fn); a request is always answered, method_not_found if need be.
 */
bool herd__served_dispatch(herd_conn *conn, const struct proto_msg *m);
void herd__served_free(herd_conn *conn);

/* ---- client-once.c ---- */

/*
 * The rest of a call_once after its connect returned r (0 with conn, or a
 * -errno whose error the connect already stored in *ret_error): calls, then
 * drops conn.
 */
int herd__call_once(int r, herd_conn *conn, const char *function, json_t *args,
    uint64_t timeout_usec, json_t **ret_result, herd_error **ret_error);

/* Handles a herd.item notification for a stream (client-stream.c). */
void herd__stream_item(struct herd_stream *s, json_t *item, bool initial);

#endif
