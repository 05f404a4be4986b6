/* SPDX-License-Identifier: MIT */
/*
 * libherd's libev integration: the only public header that includes <ev.h>.
 * Attaching a handle registers an ev_io watcher on its socket and an ev_timer
 * (ev_timer uses libev's monotonic clock) for its next deadline; the handle's
 * callbacks then run from inside ev_run() on the loop's thread.
 */
#ifndef HERD_HERD_EV_H
#define HERD_HERD_EV_H

#include <ev.h>

#include <herd/herd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- calling side (client.h) ---- */

/*
 * Drives conn from loop: its I/O, timeouts and heartbeats run there, and its
 * callbacks run from ev_run(). The connection holds no reference on the loop;
 * detach (or drop the last reference to conn) before destroying the loop.
 * Returns 0, -EINVAL (NULL argument), -EBUSY (already attached to a loop) or
 * -ENOTCONN (the connection is closed). Blocking calls (herd_call() & co.)
 * still work on an attached connection: they drive it with poll() until their
 * own request completes, and the watchers are updated afterwards.
 * An attached connection is driven by its loop alone: a blocking call on
 * another connection does not send its heartbeats (as it does for unattached
 * ones, herd/client.h), so do not block inside the loop's callbacks for longer
 * than the heartbeat timeout. Detaching makes it an unattached one again.
 */
HERD_EXPORT int herd_conn_attach_ev(herd_conn *conn, struct ev_loop *loop);
/* Stops the watchers. Returns 0 or -EINVAL; detaching an unattached conn is 0. */
HERD_EXPORT int herd_conn_detach_ev(herd_conn *conn);

/* The same for a herdd master connection: events and async replies run from ev_run(). */
HERD_EXPORT int herd_master_attach_ev(herd_master *m, struct ev_loop *loop);
HERD_EXPORT int herd_master_detach_ev(herd_master *m);

/*
 * The same for a pool (herd/pool.h): its connections, respawns and jobs run
 * from ev_run(), and the pool's callbacks with them. Returns 0, -EINVAL,
 * -EBUSY or -ENOTCONN (closed).
 */
HERD_EXPORT int herd_pool_attach_ev(herd_pool *p, struct ev_loop *loop);
HERD_EXPORT int herd_pool_detach_ev(herd_pool *p);

/* ---- serving side (worker.h) ---- */

/*
 * A worker type served on a Unix socket from a libev loop. Opaque and
 * reference-counted. herd_worker_main() uses one on libev's default loop;
 * programs with their own loop (or tests) use herd_serve() directly.
 */
typedef struct herd_server herd_server;

typedef void (*herd_server_cb)(herd_server *srv, void *userdata);

/*
 * Runs type's worker-state init with init_arg (borrowed; NULL means JSON
 * null), then binds socket_path (mode 0600; an existing socket file is
 * replaced only if nothing answers on it) and serves from loop. settings
 * (borrowed, may be NULL) are the RPC settings given in code; the environment
 * variable HERD_RPC_SETTINGS overrides them field by field.
 * On success *ret holds a new reference. Returns 0, or:
 *   -EINVAL        bad argument, function table or settings;
 *   -EREMOTEIO     the worker-state init failed (its message is logged with
 *                  herd_log() at HERD_LOG_ERR);
 *   -ENAMETOOLONG  socket_path does not fit a sockaddr_un;
 *   -EADDRINUSE    a live server answers on socket_path;
 *   another -errno from socket(), bind() or listen().
 * The server holds no reference on loop: close it before destroying the loop.
 */
HERD_EXPORT int herd_serve(struct ev_loop *loop, const struct herd_worker_type *type,
    const char *socket_path, json_t *init_arg, json_t *settings, herd_server **ret);

/* Takes a reference; returns srv (NULL-safe). */
HERD_EXPORT herd_server *herd_server_ref(herd_server *srv);
/* Drops a reference; the last one closes the server if still open. NULL-safe;
 * returns NULL. The worker state is freed once no connection or request of
 * the server is left. */
HERD_EXPORT herd_server *herd_server_unref(herd_server *srv);

/*
 * Stops serving: closes the listening socket and removes its file, cancels
 * every pending request (callers get shutting_down, handlers their on_cancel)
 * and closes every connection once its queued replies are written. Idempotent.
 * Returns 0 or -EINVAL.
 */
HERD_EXPORT int herd_server_close(herd_server *srv);

/* The socket path (borrowed, valid while srv is), NULL once closed. */
HERD_EXPORT const char *herd_server_socket_path(const herd_server *srv);
/* The state built by the type's init_worker (possibly NULL). */
HERD_EXPORT void *herd_server_worker_state(const herd_server *srv);
HERD_EXPORT struct ev_loop *herd_server_loop(const herd_server *srv);

/*
 * What the built-in herd.shutdown does once its reply is queued: runs cb
 * from the loop (cb NULL: herd_server_close(), the default). Returns 0 or
 * -EINVAL.
 */
HERD_EXPORT int herd_server_on_shutdown(herd_server *srv, herd_server_cb cb, void *userdata);

/* The loop serving req, for handlers that answer later from a watcher. */
HERD_EXPORT struct ev_loop *herd_request_loop(const herd_request *req);

#ifdef __cplusplus
}
#endif

#endif
