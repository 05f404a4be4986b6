/* SPDX-License-Identifier: MIT */
/*
 * The connection engine: non-blocking reads and writes, message dispatch,
 * deadlines and heartbeats. herd_conn_process() is the single entry point;
 * blocking calls and the libev glue both drive it.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "client/client-internal.h"

#define READ_CHUNK   65536u
#define WRITE_IOVECS 64

/* One writer for every queue of libherd: connections, the worker's sockets, herdd's channel. */
int
herd__outq_write(struct proto_outq *q, int fd, size_t *ret_written)
{
	size_t written = 0;
	int r = 0;

	while (!proto_outq_empty(q)) {
		struct iovec iov[WRITE_IOVECS];
		struct msghdr mh = { .msg_iov = iov };
		ssize_t n;

		mh.msg_iovlen = (size_t)proto_outq_peek(q, iov, WRITE_IOVECS);
		/* sendmsg with MSG_NOSIGNAL: a dead peer is an error code, not SIGPIPE. */
		n = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			break;
		}
		proto_outq_consume(q, (size_t)n);
		written += (size_t)n;
	}
	if (ret_written)
		*ret_written = written;
	return r;
}

/* Writes as much queued output as the socket takes; io_lock held. >0 progress, 0, or -errno. */
int
herd__conn_write_locked(herd_conn *conn)
{
	size_t written;
	int r = herd__outq_write(&conn->outq, conn->fd, &written);

	if (r < 0 && r != -EAGAIN)
		return r;
	return written > 0;
}

/* The same, taking io_lock: the owning thread's writes. */
static int
conn_write(herd_conn *conn)
{
	int r;

	pthread_mutex_lock(&conn->io_lock);
	r = herd__conn_write_locked(conn);
	pthread_mutex_unlock(&conn->io_lock);
	return r;
}

/* True while output waits in the queue. */
static bool
conn_output_queued(herd_conn *conn)
{
	bool queued;

	pthread_mutex_lock(&conn->io_lock);
	queued = !proto_outq_empty(&conn->outq);
	pthread_mutex_unlock(&conn->io_lock);
	return queued;
}

/* Closes the connection after a socket error, with reason -ECONNRESET for a vanished peer. */
static void
conn_io_failed(herd_conn *conn, int r, const char *what)
{
	herd_error *err;

	if (r == -EPIPE)
		r = -ECONNRESET;
	err = herd__error_newf(
	    HERD_E_CONNECTION_CLOSED, "connection closed: %s failed: %s", what, strerror(-r));
	herd__conn_close(conn, r, err);
	herd_error_unref(err);
}

/* Queues msg and writes at once: most messages go out without waiting for the loop. */
int
herd__conn_send(herd_conn *conn, json_t *msg)
{
	int r, w = 0;

	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	pthread_mutex_lock(&conn->io_lock);
	r = proto_outq_push_json(&conn->outq, msg, conn->max_send);
	if (r == 0)
		w = herd__conn_write_locked(conn);
	pthread_mutex_unlock(&conn->io_lock);
	if (r < 0)
		return r;
	r = w;
	if (r < 0) {
		/* The failure closes the connection; the message counts as sent and lost. */
		conn_io_failed(conn, r, "write");
		return 0;
	}
	if (conn->loop)
		herd__conn_update_ev(conn);
	return 0;
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

/*
 * A framing error from the peer: tell it why (one error reply with id null,
 * best effort) and close, as PROTOCOL.md asks of every receiver.
 */
static void
conn_framing_error(herd_conn *conn, const struct proto_error *perr)
{
	_cleanup_json_ json_t *reply = proto_error(json_null(), perr->code, perr->text, NULL);
	herd_error *err;

	pthread_mutex_lock(&conn->io_lock);
	if (reply && proto_outq_push_json(&conn->outq, reply, conn->max_send) == 0)
		(void)herd__conn_write_locked(conn);
	pthread_mutex_unlock(&conn->io_lock);
	err = herd__error_newf(HERD_E_CONNECTION_CLOSED,
	    "connection closed: the peer sent an invalid message (%s: %s)",
	    proto_error_name(perr->code) ? proto_error_name(perr->code) : "?", perr->text);
	herd__conn_close(conn, -EBADMSG, err);
	herd_error_unref(err);
}

/* A reply to one of our requests. */
static void
conn_dispatch_reply(herd_conn *conn, const struct proto_msg *m)
{
	struct herd__op *op;
	herd_error *err;

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

	if (m->kind == PROTO_RESULT) {
		herd__op_complete(op, 0, m->result, NULL);
		return;
	}
	err = herd__error_new(m->error_code, m->error_message, m->error_data);
	herd__op_complete(op, herd__error_to_errno(m->error_code), NULL, err);
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

/* One incoming message. The caller holds a reference on conn. */
static void
conn_dispatch(herd_conn *conn, json_t *msg)
{
	struct proto_msg m;
	struct proto_error perr;

	if (proto_msg_parse(msg, &m, &perr) < 0) {
		conn_framing_error(conn, &perr);
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
		else if (conn->notify_fn)
			conn->notify_fn(conn, m.method, m.params, conn->notify_userdata);
		break;
	case PROTO_REQUEST: {
		/* We serve nothing on this side; say so rather than leave the peer waiting. */
		_cleanup_json_ json_t *reply = proto_errorf(m.id, HERD_E_METHOD_NOT_FOUND,
		    "a %s does not serve \"%s\"", "client", m.method);

		if (reply)
			(void)herd__conn_send(conn, reply);
		break;
	}
	}
}

/* Dispatches every whole message already buffered. Returns how many. */
static int
conn_dispatch_buffered(herd_conn *conn)
{
	int n = 0;

	while (conn->state != CONN_CLOSED) {
		struct proto_error perr;
		json_t *msg = NULL;
		int r;

		r = proto_reader_next(&conn->reader, &msg, &perr);
		if (r == 0)
			break;
		if (r < 0) {
			conn_framing_error(conn, &perr);
			return n + 1;
		}
		conn_dispatch(conn, msg);
		json_decref(msg);
		n++;
	}
	return n;
}

/* One read. Returns >0 bytes read, 0 nothing available, or <0 after closing. */
static int
conn_read(herd_conn *conn)
{
	char buf[READ_CHUNK];
	ssize_t n;
	int r;

	do
		n = recv(conn->fd, buf, sizeof(buf), MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN)
			return 0;
		r = -errno;
		conn_io_failed(conn, r, "read");
		return r;
	}
	if (n == 0) {
		herd_error *err = herd__error_new(
		    HERD_E_CONNECTION_CLOSED, "connection closed by the peer", NULL);

		herd__conn_close(conn, -ECONNRESET, err);
		herd_error_unref(err);
		return -ECONNRESET;
	}
	conn->last_recv_usec = herd__now_usec();
	r = proto_reader_feed(&conn->reader, buf, (size_t)n);
	if (r < 0) {
		conn_io_failed(conn, r, "buffering input");
		return r;
	}
	return 1;
}

/*
 * Sends a heartbeat when due and closes a connection that has gone silent.
 *
 * Silence is judged after herd_conn_process() has read the socket: a connection
 * nobody processed for a while (the program blocked on another one, and the
 * keepalive only writes) has its peer's heartbeats waiting in the socket, and
 * reading them first counts them as received now. A peer that died shut its
 * socket and is seen as EOF by the same read.
 */
static int
conn_heartbeat(herd_conn *conn, uint64_t now)
{
	uint64_t timeout = conn->settings.heartbeat_timeout_ms * HERD__USEC_PER_MSEC;
	bool due;

	if (!herd__conn_heartbeats_on(conn) || conn->state != CONN_OPEN)
		return 0;
	if (now - conn->last_recv_usec >= timeout) {
		herd_error *err = herd__error_newf(HERD_E_CONNECTION_CLOSED,
		    "connection closed: nothing received for %u ms (heartbeat timeout)",
		    conn->settings.heartbeat_timeout_ms);

		herd__conn_close(conn, -ETIMEDOUT, err);
		herd_error_unref(err);
		return 1;
	}
	/* Decided under io_lock so this and another thread's keepalive never both send it. */
	pthread_mutex_lock(&conn->io_lock);
	due = now >= conn->next_heartbeat_usec;
	if (due)
		conn->next_heartbeat_usec =
		    now + conn->settings.heartbeat_interval_ms * HERD__USEC_PER_MSEC;
	pthread_mutex_unlock(&conn->io_lock);
	if (!due)
		return 0;
	(void)herd__conn_notify(conn, "heartbeat", NULL);
	return 1;
}

HERD_EXPORT int
herd_conn_process(herd_conn *conn)
{
	int progress = 0;
	uint64_t now;
	int r;

	if (!conn)
		return -EINVAL;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;

	herd_conn_ref(conn);
	r = conn_write(conn);
	if (r < 0) {
		conn_io_failed(conn, r, "write");
		progress = 1;
		goto out;
	}
	progress |= r;

	/* Buffered messages first: a nested blocking call may have left some behind. */
	if (conn_dispatch_buffered(conn) > 0)
		progress = 1;
	if (conn->state == CONN_CLOSED)
		goto out;
	r = conn_read(conn);
	if (r != 0)
		progress = 1;
	if (r > 0)
		(void)conn_dispatch_buffered(conn);
	if (conn->state == CONN_CLOSED)
		goto out;

	now = herd__now_usec();
	if (herd__ops_expire(conn, now) > 0)
		progress = 1;
	if (conn->state == CONN_CLOSED)
		goto out;
	if (conn_heartbeat(conn, now) > 0)
		progress = 1;
	if (conn->state == CONN_CLOSED)
		goto out;

	r = conn_write(conn);
	if (r < 0) {
		conn_io_failed(conn, r, "write");
		progress = 1;
	}
out:
	if (conn->loop)
		herd__conn_update_ev(conn);
	herd_conn_unref(conn);
	return progress;
}

HERD_EXPORT int
herd_conn_get_fd(herd_conn *conn)
{
	if (!conn)
		return -EINVAL;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	return conn->fd;
}

HERD_EXPORT int
herd_conn_get_events(herd_conn *conn)
{
	if (!conn)
		return -EINVAL;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	return POLLIN | (conn_output_queued(conn) ? POLLOUT : 0);
}

HERD_EXPORT int
herd_conn_get_timeout(herd_conn *conn, uint64_t *ret_usec)
{
	uint64_t t;

	if (!conn || !ret_usec)
		return -EINVAL;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	t = herd__ops_next_deadline(conn);
	if (herd__conn_heartbeats_on(conn) && conn->state == CONN_OPEN) {
		uint64_t silent = conn->last_recv_usec +
		    conn->settings.heartbeat_timeout_ms * HERD__USEC_PER_MSEC;
		uint64_t beat;

		pthread_mutex_lock(&conn->io_lock);
		beat = conn->next_heartbeat_usec;
		pthread_mutex_unlock(&conn->io_lock);
		if (beat < t)
			t = beat;
		if (silent < t)
			t = silent;
	}
	*ret_usec = t;
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
	struct pollfd pfd;
	uint64_t t, ka;
	int r;

	r = herd_conn_get_timeout(conn, &t);
	if (r < 0)
		return r;
	if (limit < t)
		t = limit;
	pfd = (struct pollfd){ .fd = conn->fd, .events = (short)herd_conn_get_events(conn) };
	for (;;) {
		ka = herd__keepalive(conn);
		r = poll(&pfd, 1, herd__poll_ms(ka < t ? ka : t));
		if (r < 0)
			return -errno;
		if (r > 0 || ka >= t || herd__now_usec() >= t)
			return r;
	}
}

HERD_EXPORT int
herd_conn_wait(herd_conn *conn, uint64_t timeout_usec)
{
	if (!conn)
		return -EINVAL;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	return conn_poll(conn, herd__deadline(timeout_usec));
}

/*
 * The blocking engine: process, then poll for the socket or the next deadline,
 * until *done. EINTR is retried so a signal handler in the program does not
 * fail a call.
 */
int
herd__conn_run(herd_conn *conn, const bool *done, uint64_t deadline)
{
	int r;

	herd_conn_ref(conn);
	for (;;) {
		do
			r = herd_conn_process(conn);
		while (r > 0 && !*done);
		if (*done) {
			r = 0;
			break;
		}
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

HERD_EXPORT int
herd_conn_flush(herd_conn *conn, uint64_t timeout_usec)
{
	uint64_t deadline;
	int r;

	if (!conn)
		return -EINVAL;
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	deadline = herd__deadline(herd__conn_timeout(conn, timeout_usec));
	herd_conn_ref(conn);
	/* process() reads and dispatches too, so a peer that waits for us to read before it
	 * reads again cannot deadlock with us. */
	for (;;) {
		r = herd_conn_process(conn);
		if (conn->state == CONN_CLOSED) {
			r = -ECONNRESET;
			break;
		}
		if (!conn_output_queued(conn)) {
			r = 0;
			break;
		}
		if (r > 0)
			continue;
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
