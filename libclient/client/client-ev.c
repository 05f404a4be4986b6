/* SPDX-License-Identifier: MIT */
/*
 * libev glue for connections: the peer's libev driver (common/peer-ev.c),
 * whose ev_io and ev_timer feed herd_conn_process(). This file is the only
 * part of the calling side that knows libev.
 */
#include <errno.h>
#include <poll.h>

#include "client/client-internal.h"
#include "herd/herd-ev.h"

/* Re-arms the watchers for the current events and deadline. */
void
herd__conn_update_ev(herd_conn *conn)
{
	herd__peer_update_ev(&conn->peer);
}

HERD_EXPORT int
herd_conn_attach_ev(herd_conn *conn, struct ev_loop *loop)
{
	if (!conn || !loop)
		return -EINVAL;
	if (conn->peer.loop)
		return conn->peer.loop == loop ? 0 : -EBUSY;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	/* The loop drives it now, maybe from another thread: keepalive passes leave it alone. */
	herd__keepalive_remove(conn);
	herd__peer_attach_ev(&conn->peer, loop);
	return 0;
}

HERD_EXPORT int
herd_conn_detach_ev(herd_conn *conn)
{
	if (!conn)
		return -EINVAL;
	herd__peer_detach_ev(&conn->peer);
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
