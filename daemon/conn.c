/* SPDX-License-Identifier: MIT */
/*
 * Buffered non-blocking I/O for one peer (a control connection or a worker's
 * fd 3). Input goes through proto's reader, which enforces the size and depth
 * limits before anything is parsed; output goes to proto's queue, capped so a
 * peer that never reads cannot grow it without bound.
 *
 * A connection's life: open -> closed (the session is over: no more reading,
 * the owner is told once) -> released (output flushed or given up, fd closed)
 * -> freed when the last reference goes. Freeing happens from an ev_prepare
 * watcher, never inside the connection's own callback, so a handler may end
 * its own connection and keep using the pointer until it returns.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "herdd.h"

/* How long queued output may take to drain after the session ended. */
#define FLUSH_DEADLINE_S 2.0
/* Stop reading from a peer whose replies pile up past this (it is not reading). */
#define OUTPUT_HIGH_WATER (1u << 20)
#define READ_CHUNK        65536

static struct conn **garbage;
static size_t ngarbage, garbage_cap;
static ev_prepare reaper;
static uint64_t next_serial = 1;

static void conn_release(struct conn *c);

/* Frees connections whose last reference is gone. */
void
conn_free_garbage(void)
{
	size_t i;

	for (i = 0; i < ngarbage; i++) {
		struct conn *c = garbage[i];

		proto_reader_free(&c->rd);
		proto_outq_free(&c->out);
		free(c->name);
		free(c);
	}
	ngarbage = 0;
	ev_prepare_stop(herdd.loop, &reaper);
}

/* Frees what is left at exit. */
void
conn_cleanup(void)
{
	conn_free_garbage();
	free(garbage);
	garbage = NULL;
	garbage_cap = 0;
}

static void
reaper_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	conn_free_garbage();
}

/* Sets up the deferred free. */
void
conn_init_reaper(void)
{
	ev_prepare_init(&reaper, reaper_cb);
}

static void
update_write_watcher(struct conn *c)
{
	if (c->released)
		return;
	if (proto_outq_empty(&c->out))
		ev_io_stop(herdd.loop, &c->wio);
	else
		ev_io_start(herdd.loop, &c->wio);
	/* Backpressure: a peer that sends requests but never reads replies waits. */
	if (!c->closed) {
		if (c->out.bytes > OUTPUT_HIGH_WATER)
			ev_io_stop(herdd.loop, &c->rio);
		else
			ev_io_start(herdd.loop, &c->rio);
	}
}

/* Writes as much as the kernel takes. Returns 0, or -errno on a fatal error. */
static int
flush_some(struct conn *c)
{
	while (!proto_outq_empty(&c->out)) {
		struct iovec iov[16];
		struct msghdr mh = { .msg_iov = iov };
		ssize_t n;

		mh.msg_iovlen = (size_t)proto_outq_peek(&c->out, iov, 16);
		n = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			return -errno;
		}
		proto_outq_consume(&c->out, (size_t)n);
		/*
		 * While backpressure keeps us from reading, a peer draining our queue (far
		 * more than a socket buffer) is alive though we cannot hear its heartbeats.
		 */
		if (n > 0 && !c->closed && !ev_is_active(&c->rio))
			c->last_rx_ms = now_ms();
		c->bytes_out += (uint64_t)n;
		herdd.stats.bytes_out += (uint64_t)n;
	}
	return 0;
}

static void
end_session(struct conn *c)
{
	if (c->closed)
		return;
	c->closed = true;
	ev_io_stop(herdd.loop, &c->rio);
	ev_timer_stop(herdd.loop, &c->hb_timer);
	if (c->ops->closed)
		c->ops->closed(c);
}

/*
 * A write failed: the peer is gone. What it sent before going still counts
 * (a master's goodbye, say), so it is read before the session ends.
 */
static void
write_failed(struct conn *c, int r)
{
	log_debug("connection %llu: write: %s", (unsigned long long)c->serial, strerror(-r));
	conn_drain(c);
	conn_abort(c);
}

static void
write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	int r = flush_some(c);

	if (r < 0) {
		write_failed(c, r);
		return;
	}
	if (c->closed && proto_outq_empty(&c->out)) {
		conn_release(c);
		return;
	}
	update_write_watcher(c);
}

/* One read and the messages it completes. Returns 1 if more may be waiting, else 0. */
static int
read_once(struct conn *c)
{
	char buf[READ_CHUNK];
	ssize_t n;
	int r;

	n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n < 0) {
		if (errno == EINTR)
			return 1;
		if (errno == EAGAIN)
			return 0;
		log_debug("connection %llu: read: %m", (unsigned long long)c->serial);
		conn_abort(c);
		return 0;
	}
	if (n == 0) {
		conn_close(c);
		return 0;
	}
	c->bytes_in += (uint64_t)n;
	herdd.stats.bytes_in += (uint64_t)n;
	c->last_rx_ms = now_ms();
	r = proto_reader_feed(&c->rd, buf, (size_t)n);
	if (r < 0) {
		conn_abort(c);
		return 0;
	}
	/* The handler may take its own reference; ours keeps c valid throughout. */
	conn_ref(c);
	while (!c->closed) {
		struct proto_error err;
		json_t *msg = NULL;

		r = proto_reader_next(&c->rd, &msg, &err);
		if (r == 0)
			break;
		if (r < 0) {
			/* A framing error: the stream cannot be trusted past this point. */
			log_debug("connection %llu: framing error: %s",
			    (unsigned long long)c->serial, err.text);
			if (err.code == HERD_E_MESSAGE_TOO_LARGE)
				conn_reply_error(c, NULL, err.code,
				    json_pack("{s:I}", "limit", (json_int_t)c->max_message), "%s",
				    err.text);
			else if (err.code == HERD_E_TOO_DEEP)
				conn_reply_error(c, NULL, err.code,
				    json_pack("{s:i}", "limit", (int)HERD_MAX_DEPTH), "%s",
				    err.text);
			else
				conn_reply_error(c, NULL, err.code, NULL, "%s", err.text);
			conn_close(c);
			break;
		}
		c->ops->message(c, msg);
		json_decref(msg);
	}
	r = !c->closed;
	conn_unref(c);
	return r;
}

static void
read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	read_once(w->data);
}

/* Reads and handles everything already received (the peer is gone; its last words count). */
void
conn_drain(struct conn *c)
{
	int rounds;

	conn_ref(c);
	for (rounds = 0; rounds < 64 && !c->closed && !c->released; rounds++) {
		if (!read_once(c))
			break;
	}
	conn_unref(c);
}

/* Wraps fd in a connection. */
struct conn *
conn_new(int fd, enum conn_kind kind, const struct conn_ops *ops, size_t max_message)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return NULL;
	}
	c->kind = kind;
	c->ops = ops;
	c->fd = fd;
	c->refs = 1;
	c->serial = next_serial++;
	c->max_message = max_message;
	c->send_max = HERD_DEFAULT_MAX_MESSAGE_SIZE;
	c->last_rx_ms = now_ms();
	proto_reader_init(&c->rd, max_message, HERD_MAX_DEPTH);
	proto_outq_init(&c->out, herdd.cfg.max_output);
	ev_io_init(&c->rio, read_cb, fd, EV_READ);
	ev_io_init(&c->wio, write_cb, fd, EV_WRITE);
	c->rio.data = c;
	c->wio.data = c;
	ev_init(&c->timer, NULL);
	ev_init(&c->hb_timer, NULL);
	return c;
}

/* Starts reading. */
void
conn_start(struct conn *c)
{
	ev_io_start(herdd.loop, &c->rio);
}

/* Takes a reference. */
struct conn *
conn_ref(struct conn *c)
{
	c->refs++;
	return c;
}

/* Drops a reference; the last one schedules the free. */
void
conn_unref(struct conn *c)
{
	if (!c || --c->refs > 0)
		return;
	/* The last reference: the session must be over by now. */
	end_session(c);
	conn_release(c);
	if (ngarbage == garbage_cap) {
		size_t cap = garbage_cap ? garbage_cap * 2 : 64;
		struct conn **g = realloc(garbage, cap * sizeof(*g));

		if (!g) {
			/* Leak rather than free inside a callback that may still use it. */
			log_error("out of memory freeing a connection");
			return;
		}
		garbage = g;
		garbage_cap = cap;
	}
	garbage[ngarbage++] = c;
	ev_prepare_start(herdd.loop, &reaper);
}

/* Closes the fd and stops every watcher. */
static void
conn_release(struct conn *c)
{
	if (c->released)
		return;
	c->released = true;
	ev_io_stop(herdd.loop, &c->rio);
	ev_io_stop(herdd.loop, &c->wio);
	ev_timer_stop(herdd.loop, &c->timer);
	ev_timer_stop(herdd.loop, &c->hb_timer);
	close(c->fd);
	c->fd = -1;
	if (c->on_list) {
		TAILQ_REMOVE(&herdd.conns, c, link);
		c->on_list = false;
		herdd.nconns--;
		if (!c->hello)
			herdd.nunauth--;
		/* The list held a reference. */
		conn_unref(c);
	}
}

static void
flush_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;

	log_debug(
	    "connection %llu: peer did not read its last replies", (unsigned long long)c->serial);
	conn_release(c);
}

/* Ends the session, flushing what is queued. */
void
conn_close(struct conn *c)
{
	if (c->released)
		return;
	conn_ref(c);
	end_session(c);
	if (flush_some(c) < 0 || proto_outq_empty(&c->out)) {
		conn_release(c);
	} else {
		ev_timer_stop(herdd.loop, &c->timer);
		ev_timer_init(&c->timer, flush_deadline_cb, FLUSH_DEADLINE_S, 0.);
		c->timer.data = c;
		ev_timer_start(herdd.loop, &c->timer);
		update_write_watcher(c);
	}
	conn_unref(c);
}

/* Ends the session without flushing. */
void
conn_abort(struct conn *c)
{
	if (c->released)
		return;
	conn_ref(c);
	end_session(c);
	conn_release(c);
	conn_unref(c);
}

/* Queues msg (stolen). */
int
conn_send(struct conn *c, json_t *msg)
{
	int r;

	if (!msg)
		return -ENOMEM;
	if (c->released) {
		json_decref(msg);
		return -EPIPE;
	}
	r = proto_outq_push_json(&c->out, msg, c->send_max);
	if (r == -EMSGSIZE && json_object_get(msg, "id") && !json_object_get(msg, "method")) {
		/* A reply the peer could not read: answer the request with the limit instead. */
		json_t *e = proto_error(json_object_get(msg, "id"), HERD_E_LIMIT_EXCEEDED,
		    "the reply is longer than the peer's max_message_size",
		    json_pack("{s:s, s:I}", "limit", "max_message_size", "value",
		        (json_int_t)c->send_max));

		r = e ? proto_outq_push_json(&c->out, e, c->send_max) : -ENOMEM;
		json_decref(e);
	}
	json_decref(msg);
	if (r == -ENOBUFS) {
		/* The peer does not read: nothing more can be said to it. */
		herdd.stats.limit_output++;
		log_warn("connection %llu (uid %u): output over %zu bytes, closing",
		    (unsigned long long)c->serial, (unsigned)c->cred.uid, herdd.cfg.max_output);
		conn_abort(c);
		return r;
	}
	if (r < 0)
		return r;
	/* Try at once: most replies fit in the socket buffer and need no watcher. */
	r = flush_some(c);
	if (r < 0) {
		write_failed(c, r);
		return r;
	}
	if (c->closed && proto_outq_empty(&c->out))
		conn_release(c);
	else
		update_write_watcher(c);
	return 0;
}

/* Sends a result reply. */
int
conn_reply(struct conn *c, json_t *id, json_t *result)
{
	if (!result)
		result = json_object();
	return conn_send(c, proto_result(id, result));
}

/* Sends an error reply. */
int
conn_reply_error(struct conn *c, json_t *id, int code, json_t *data, const char *fmt, ...)
{
	char *message = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&message, fmt, ap);
	va_end(ap);
	if (n < 0)
		message = NULL;
	n = conn_send(c, proto_error(id, code, message, data));
	free(message);
	return n;
}

unsigned
conn_count_masters(void)
{
	unsigned n = 0;
	struct conn *k;

	TAILQ_FOREACH(k, &herdd.conns, link) {
		if (k->hello && k->role == ROLE_MASTER && !k->closed)
			n++;
	}
	return n;
}
