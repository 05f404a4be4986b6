/* SPDX-License-Identifier: MIT */
/*
 * libev glue for connections: an ev_io on the socket and an ev_timer for the
 * next deadline, both feeding herd_conn_process(). This file is the only part
 * of the calling side that knows libev.
 */
#include <errno.h>
#include <poll.h>

#include "client/client-internal.h"
#include "herd/herd-ev.h"

/* Bounds the work done per wakeup so one busy connection cannot starve the loop. */
#define MAX_PROCESS_ROUNDS 16

static void
conn_ev_process(herd_conn *conn)
{
	herd_conn_ref(conn);
	for (int i = 0; i < MAX_PROCESS_ROUNDS; i++)
		if (herd_conn_process(conn) <= 0)
			break;
	if (conn->loop)
		herd__conn_update_ev(conn);
	herd_conn_unref(conn);
}

static void
conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	conn_ev_process(w->data);
}

static void
conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	conn_ev_process(w->data);
}

/* Re-arms the watchers for the current events and deadline. */
void
herd__conn_update_ev(herd_conn *conn)
{
	uint64_t t, now;
	int events, ev_events;

	if (!conn->loop)
		return;
	if (conn->state == CONN_CLOSED) {
		herd__conn_detach_ev(conn);
		return;
	}
	events = herd_conn_get_events(conn);
	ev_events = EV_READ | ((events & POLLOUT) ? EV_WRITE : 0);
	if (ev_events != conn->io_events || !ev_is_active(&conn->io)) {
		ev_io_stop(conn->loop, &conn->io);
		ev_io_set(&conn->io, conn->fd, ev_events);
		ev_io_start(conn->loop, &conn->io);
		conn->io_events = ev_events;
	}

	ev_timer_stop(conn->loop, &conn->timer);
	if (herd_conn_get_timeout(conn, &t) < 0 || t == HERD__USEC_INFINITY)
		return;
	now = herd__now_usec();
	/* Half a millisecond late rather than early, so the deadline has passed when we wake. */
	ev_timer_set(&conn->timer, t > now ? (double)(t - now) / 1e6 + 0.0005 : 0., 0.);
	ev_timer_start(conn->loop, &conn->timer);
}

/* Stops the watchers; the connection no longer knows the loop. */
void
herd__conn_detach_ev(herd_conn *conn)
{
	if (!conn->loop)
		return;
	ev_io_stop(conn->loop, &conn->io);
	ev_timer_stop(conn->loop, &conn->timer);
	conn->loop = NULL;
	conn->io_events = 0;
}

HERD_EXPORT int
herd_conn_attach_ev(herd_conn *conn, struct ev_loop *loop)
{
	if (!conn || !loop)
		return -EINVAL;
	if (conn->loop)
		return conn->loop == loop ? 0 : -EBUSY;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	/* The loop drives it now, maybe from another thread: keepalive passes leave it alone. */
	herd__keepalive_remove(conn);
	conn->loop = loop;
	ev_io_init(&conn->io, conn_io_cb, conn->fd, EV_READ);
	conn->io.data = conn;
	ev_timer_init(&conn->timer, conn_timer_cb, 0., 0.);
	conn->timer.data = conn;
	conn->io_events = 0;
	herd__conn_update_ev(conn);
	return 0;
}

HERD_EXPORT int
herd_conn_detach_ev(herd_conn *conn)
{
	if (!conn)
		return -EINVAL;
	herd__conn_detach_ev(conn);
	/* Back to being driven by its owner's calls: waits elsewhere keep it alive again. */
	herd__keepalive_add(conn);
	return 0;
}

HERD_EXPORT int
herd_master_attach_ev(herd_master *m, struct ev_loop *loop)
{
	if (!m)
		return -EINVAL;
	return herd_conn_attach_ev(herd_master_get_conn(m), loop);
}

HERD_EXPORT int
herd_master_detach_ev(herd_master *m)
{
	if (!m)
		return -EINVAL;
	return herd_conn_detach_ev(herd_master_get_conn(m));
}
