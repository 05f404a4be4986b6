/* SPDX-License-Identifier: MIT */
/*
 * What the worker-side tests share: the example worker type served in this
 * process (on a thread of its own that owns the libev loop, as libherd asks:
 * one loop, one thread), the example executable started as a child, and a
 * stand-in for herdd's end of the fd-3 channel.
 *
 * The tests speak to workers with the raw JSON-lines client of herd-test.h,
 * exactly as socat would.
 */
#ifndef HERD_WORKER_TEST_UTIL_H
#define HERD_WORKER_TEST_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include <ev.h>
#include <jansson.h>

#include <herd/herd-ev.h>

#include "herd-test.h"
#include "proto.h"

/* ---- in-process server ---- */

struct wt_server {
	pthread_t thread;
	struct ev_loop *loop;
	ev_async stop;
	herd_server *srv;
	char dir[128];
	char path[192];
	const struct herd_worker_type *type;
	json_t *init; /* borrowed until started */
	json_t *settings; /* borrowed until started */
	int serve_rc;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool started;
	bool running;
	int fds_before; /* open fds of this process before wt_start() */
};

/*
 * Serves example_worker_type on DIR/worker.sock from a new thread and loop.
 * Returns herd_serve()'s result (the thread is gone again on failure).
 */
int wt_server_start(struct wt_server *s, json_t *init, json_t *settings);
/* The same with another worker type. */
int wt_server_start_type(
    struct wt_server *s, const struct herd_worker_type *type, json_t *init, json_t *settings);
/*
 * Closes the server from its thread, lets the loop run until every
 * connection has closed and been freed, destroys the loop and joins the
 * thread. Returns 0 or -ETIMEDOUT.
 */
int wt_server_stop(struct wt_server *s);

/*
 * wt_server_start() for a test body: fails the test if the server does not
 * start. init and settings are stolen (may be NULL).
 */
void wt_start(struct wt_server *s, json_t *init, json_t *settings);
/*
 * wt_server_stop() for a test body: fails the test if it times out or if this
 * process holds another number of fds than before wt_start(); then ht_teardown().
 */
void wt_stop(struct wt_server *s);

/* ---- clients ---- */

/*
 * Connects to path and says hello as a client, with hello members extra
 * (stolen, may be NULL). Returns the connection or NULL if the hello failed.
 */
struct ht_conn *wt_connect(const char *path, json_t *extra);
/* ht_conn_call() with a 5 s budget; fails the test without a reply. New reference. */
json_t *wt_call(struct ht_conn *c, const char *method, json_t *params);
/* Sends a notification method(params) (params stolen). Returns 0 or -errno. */
int wt_notify(struct ht_conn *c, const char *method, json_t *params);
/* The error code of a reply, or 0 if it is not an error. */
int wt_error_code(const json_t *reply);
/* The integer result of a reply, or LLONG_MIN. */
long long wt_int_result(const json_t *reply);
/*
 * Waits for the next herd.item of stream id; returns its params (new reference)
 * or NULL. Items of other streams on c are dropped (with a message): use one
 * stream per connection with this helper.
 */
json_t *wt_next_item(struct ht_conn *c, json_int_t id, int timeout_ms);
/*
 * Waits on a herd.logs stream (request id) for an item whose message contains
 * text. Returns true if one came before the deadline.
 */
bool wt_wait_log(struct ht_conn *c, json_int_t id, const char *text, int timeout_ms);

/* Open fds of this process. */
int wt_fd_count(void);

/* ---- the example executable ---- */

/* $HERD_EXAMPLE_WORKER (set by meson). */
const char *wt_worker_path(void);

/*
 * Starts the example worker with argv[1..] = args (NULL-terminated, may be
 * NULL). With channel_fd >= 0 it becomes the child's fd 3 and the child gets
 * HERD_CHANNEL_FD=3 and HERD_WORKER_ID=worker_id. stderr_fd >= 0 replaces the
 * child's stderr. The child is registered for teardown. Returns its pid or -errno.
 */
pid_t wt_spawn(const char *const *args, int channel_fd, const char *worker_id, int stderr_fd);

/* Reaps child pid (10 s budget); fails the test unless it exited. Returns its exit code. */
int wt_wait_exit(pid_t pid);

/*
 * Waits until path exists (inotify on its directory, no polling), or pid
 * exits, or the deadline passes. Returns 0, -ECHILD (pid exited) or -ETIMEDOUT.
 */
int wt_wait_path(const char *path, pid_t pid, int timeout_ms);
/* Waits until path no longer exists (inotify). Returns 0 or -ETIMEDOUT. */
int wt_wait_path_gone(const char *path, int timeout_ms);

/* ---- herdd's end of the channel ---- */

struct wt_chan {
	int fd;
	bool eof;
	struct proto_reader reader;
};

/* A socketpair: *ret_child is the end for the worker's fd 3 (close it after spawning). */
int wt_chan_open(struct wt_chan *ch, int *ret_child);
void wt_chan_close(struct wt_chan *ch);
/* Sends msg (stolen). Returns 0 or -errno. */
int wt_chan_send(struct wt_chan *ch, json_t *msg);
/* Next message (new reference) or NULL: errno ETIMEDOUT, EPIPE (EOF) or EBADMSG. */
json_t *wt_chan_recv(struct wt_chan *ch, int timeout_ms);
/* Next message that is not a heartbeat notification. */
json_t *wt_chan_recv_skip_heartbeats(struct wt_chan *ch, int timeout_ms);

#endif
