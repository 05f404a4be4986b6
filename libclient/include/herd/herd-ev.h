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
 */
HERD_EXPORT int herd_conn_attach_ev(herd_conn *conn, struct ev_loop *loop);
/* Stops the watchers. Returns 0 or -EINVAL; detaching an unattached conn is 0. */
HERD_EXPORT int herd_conn_detach_ev(herd_conn *conn);

#ifdef __cplusplus
}
#endif

#endif
