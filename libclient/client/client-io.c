/* SPDX-License-Identifier: MIT */
/*
 * The connection engine: message dispatch and call deadlines on top of the
 * shared peer (common/peer.h), which reads, writes, frames and keeps the
 * heartbeats. herd_conn_process() is the single entry point; blocking calls
 * and the libev glue both drive it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "client/client-internal.h"

static herd_conn *
conn_of(struct herd__peer *p)
{
	return p->userdata;
}

/* Queues msg and writes at once: most messages go out without waiting for the loop. */
int
herd__conn_send(herd_conn *conn, json_t *msg)
{
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	/* A failed write closes the connection; the message counts as sent and lost. */
	return herd__peer_send(&conn->peer, msg);
}

/* Queues a notification; params are stolen. */
int
herd__conn_notify(herd_conn *conn, const char *method, json_t *params)
{
	_cleanup_json_ json_t *msg = proto_notification(method, params);

	if (!msg)
		return -ENOMEM;
	return herd__conn_send(conn, msg);
}

/* A reply to one of our requests. */
static void
conn_dispatch_reply(herd_conn *conn, const struct proto_msg *m)
{
	struct herd__op *op;
	herd_error *err;
	int r;

	if (!json_is_integer(m->id)) {
		/* id null: the peer could not read something we sent and is closing. */
		if (m->kind == PROTO_ERROR && json_is_null(m->id)) {
			err = herd__error_new(m->error_code, m->error_message, m->error_data);
			herd__conn_close(conn, -EPROTO, err);
			herd_error_unref(err);
		}
		return;
	}
	op = herd__op_find(conn, json_integer_value(m->id));
	if (!op)
		return; /* a call we gave up on (cancelled or timed out) */
	r = herd__reply_outcome(m, &err);
	herd__op_complete(op, r, r == 0 ? m->result : NULL, err);
	herd_error_unref(err);
}

/* herd.item {id, item, initial?}: an item of one of our streams. */
static void
conn_dispatch_item(herd_conn *conn, json_t *params)
{
	json_t *id = json_object_get(params, "id");
	json_t *item = json_object_get(params, "item");
	struct herd__op *op;

	if (!json_is_integer(id))
		return;
	op = herd__op_find(conn, json_integer_value(id));
	if (!op || op->type != OP_STREAM || op->cancelling)
		return;
	herd__stream_item((struct herd_stream *)op, item ? item : json_null(),
	    json_is_true(json_object_get(params, "initial")));
}

/* One incoming message. The peer holds a reference on conn. */
static void
conn_peer_message(struct herd__peer *p, json_t *msg)
{
	herd_conn *conn = conn_of(p);
	struct proto_msg m;
	struct proto_error perr;

	if (proto_msg_parse(msg, &m, &perr) < 0) {
		/* Tell the peer why (PROTOCOL.md asks it of every receiver) and close. */
		herd__peer_refuse(&conn->peer, &perr);
		return;
	}
	switch (m.kind) {
	case PROTO_RESULT:
	case PROTO_ERROR:
		conn_dispatch_reply(conn, &m);
		break;
	case PROTO_NOTIFICATION:
		if (strcmp(m.method, "heartbeat") == 0)
			break;
		if (strcmp(m.method, "herd.item") == 0)
			conn_dispatch_item(conn, m.params);
		else if (!herd__served_dispatch(conn, &m) && conn->notify_fn)
			conn->notify_fn(conn, m.method, m.params, conn->notify_userdata);
		break;
	case PROTO_REQUEST:
		/* The worker calls back (PROTOCOL.md 6.7): served, or method_not_found. */
		(void)herd__served_dispatch(conn, &m);
		break;
	}
}

/* End of input: the peer is gone, and so is every call waiting on it. */
static void
conn_peer_eof(struct herd__peer *p)
{
	herd_error *err =
	    herd__error_new(HERD_E_CONNECTION_CLOSED, "connection closed by the peer", NULL);

	herd__conn_close(conn_of(p), -ECONNRESET, err);
	herd_error_unref(err);
}

static int
conn_peer_process(struct herd__peer *p)
{
	return herd_conn_process(conn_of(p));
}

static uint64_t
conn_peer_timeout(struct herd__peer *p)
{
	uint64_t t;

	return herd_conn_get_timeout(conn_of(p), &t) < 0 ? HERD__USEC_INFINITY : t;
}

static json_t *
conn_peer_heartbeat_params(struct herd__peer *p)
{
	herd_conn *conn = conn_of(p);

	return conn->heartbeat_fn ? conn->heartbeat_fn(conn, conn->notify_userdata) : NULL;
}

/* A callback table like every herd__peer_ops (worker-conn.c, daemon/conn.c): data, not logic. */
const struct herd__peer_ops herd__conn_peer_ops = {
	.heartbeat_params = conn_peer_heartbeat_params,
	.message = conn_peer_message,
	.eof = conn_peer_eof,
	.closed = herd__conn_closed,
	.free = herd__conn_free,
	.process = conn_peer_process,
	.timeout = conn_peer_timeout,
};

/* 0 for a connection the loop-integration calls can use, else their error. */
static int
conn_usable(herd_conn *conn)
{
	if (!conn)
		return -EINVAL;
	return conn->state == CONN_CLOSED ? -ENOTCONN : 0;
}

/*
 * Silence is judged after the peer has read the socket: a connection nobody
 * processed for a while (the program blocked on another one, and the
 * keepalive only writes) has its peer's heartbeats waiting in the socket, and
 * reading them first counts them as received now. A peer that died shut its
 * socket and is seen as EOF by the same read.
 */
HERD_EXPORT int
herd_conn_process(herd_conn *conn)
{
	int progress, r = conn_usable(conn);

	if (r < 0)
		return r;
	herd_conn_ref(conn);
	progress = herd__peer_process(&conn->peer) > 0;
	if (conn->state != CONN_CLOSED && herd__ops_expire(conn, herd__now_usec()) > 0)
		progress = 1;
	herd__conn_update_ev(conn);
	herd_conn_unref(conn);
	return progress;
}

HERD_EXPORT int
herd_conn_get_fd(herd_conn *conn)
{
	int r = conn_usable(conn);

	if (r < 0)
		return r;
	return conn->peer.fd;
}

HERD_EXPORT int
herd_conn_get_events(herd_conn *conn)
{
	int r = conn_usable(conn);

	if (r < 0)
		return r;
	return POLLIN | (herd__peer_events(&conn->peer) & POLLOUT);
}

HERD_EXPORT int
herd_conn_get_timeout(herd_conn *conn, uint64_t *ret_usec)
{
	uint64_t t, peer;
	int r = ret_usec ? conn_usable(conn) : -EINVAL;

	if (r < 0)
		return r;
	t = herd__ops_next_deadline(conn);
	peer = herd__peer_timeout(&conn->peer);
	*ret_usec = peer < t ? peer : t;
	return 0;
}

/* Milliseconds for poll() until the absolute deadline, rounded up, at most a minute; -1 for none. */
int
herd__poll_ms(uint64_t deadline)
{
	uint64_t now, ms;

	if (deadline == HERD__USEC_INFINITY)
		return -1;
	now = herd__now_usec();
	if (deadline <= now)
		return 0;
	ms = (deadline - now + 999) / 1000;
	return ms > 60000 ? 60000 : (int)ms;
}

/*
 * Waits for the socket or the connection's deadline, bounded by the absolute
 * limit. Every wait of libherd on one connection passes here, so this is where
 * the others get their heartbeats (client-keepalive.c): the poll also wakes for
 * the next keepalive pass, which then runs and the wait goes on. Returns >0
 * when the socket is ready, 0 once the deadline or the limit passed, -errno.
 */
static int
conn_poll(herd_conn *conn, uint64_t limit)
{
	const struct herd__peer_sink *sink = conn->peer.sink; /* set before the first wait */
	struct pollfd pfd;
	uint64_t t, ka;
	int r, ms;

	r = herd_conn_get_timeout(conn, &t);
	if (r < 0)
		return r;
	if (limit < t)
		t = limit;
	pfd = (struct pollfd){ .fd = conn->peer.fd, .events = (short)herd_conn_get_events(conn) };
	for (;;) {
		ka = herd__keepalive(conn);
		ms = herd__poll_ms(ka < t ? ka : t);
		r = sink && sink->poll ? sink->poll(conn->peer.sink_arg, &pfd, ms)
		                       : poll(&pfd, 1, ms);
		if (r < 0)
			return -errno;
		if (r > 0 || ka >= t || herd__now_usec() >= t)
			return r;
	}
}

HERD_EXPORT int
herd_conn_wait(herd_conn *conn, uint64_t timeout_usec)
{
	int r = conn_usable(conn);

	if (r < 0)
		return r;
	return conn_poll(conn, herd__deadline(timeout_usec));
}

/*
 * The blocking engine: process, then poll for the socket or the next deadline,
 * until stop(conn, arg) is nonzero: positive ends the wait with 0, negative with
 * that error. EINTR is retried so a signal handler in the program does not
 * fail a call.
 */
static int
conn_wait(herd_conn *conn, uint64_t deadline, int (*stop)(herd_conn *conn, const void *arg),
    const void *arg)
{
	int r, s;

	herd_conn_ref(conn);
	for (;;) {
		r = herd_conn_process(conn);
		s = stop(conn, arg);
		if (s != 0) {
			r = s > 0 ? 0 : s;
			break;
		}
		if (r > 0)
			continue;
		if (r < 0)
			break;
		if (herd__now_usec() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		r = conn_poll(conn, deadline);
		if (r < 0 && r != -EINTR)
			break;
	}
	herd_conn_unref(conn);
	return r;
}

static int
stop_when_done(herd_conn *conn, const void *arg)
{
	(void)conn;
	return *(const bool *)arg;
}

/* Runs the engine until *done. */
int
herd__conn_run(herd_conn *conn, const bool *done, uint64_t deadline)
{
	return conn_wait(conn, deadline, stop_when_done, done);
}

/* process() reads and dispatches too, so a peer that waits for us to read before it
 * reads again cannot deadlock with us. */
static int
stop_when_flushed(herd_conn *conn, const void *arg)
{
	(void)arg;
	if (conn->state == CONN_CLOSED)
		return -ECONNRESET;
	return !(herd__peer_events(&conn->peer) & POLLOUT);
}

HERD_EXPORT int
herd_conn_flush(herd_conn *conn, uint64_t timeout_usec)
{
	int r = conn_usable(conn);

	if (r < 0)
		return r;
	return conn_wait(
	    conn, herd__deadline(herd__conn_timeout(conn, timeout_usec)), stop_when_flushed, NULL);
}
