/* SPDX-License-Identifier: MIT */
/*
 * herdd's connections (a control connection or a worker's fd 3) on the shared
 * JSON-lines peer (libclient/common/peer.h), which reads, frames, queues,
 * flushes, closes and sends heartbeats. What is herdd's own stays here: the
 * output cap and the reply that stands in for one too long for the peer, the
 * connection list and its counters, and the log lines.
 *
 * A connection's life: open -> closed (the session is over: no more reading,
 * the owner is told once) -> released (output flushed or given up, fd closed,
 * off the list) -> freed with the last reference. The peer holds a reference
 * while it calls out, so a handler may end its own connection and keep using
 * the pointer until it returns.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herdd.h"

/* Stop reading from a peer whose replies pile up past this (it is not reading). */
#define OUTPUT_HIGH_WATER (1u << 20)
/* Feeds (events, followed logs) hold back once this much output waits. */
#define FEED_HIGH_WATER (256u << 10)
/*
 * Fairness under load: a connection is handed at most this many requests per
 * wakeup, then waits its turn behind every other ready connection (the peer
 * defers it, peer.h). Small enough that a thousand busy clients make a loop
 * iteration of tens of ms at worst, large enough that one pipelining client
 * is not slowed by the extra wakeups.
 */
#define CONN_BUDGET 32
/*
 * Control connections' watchers run after the supervisor's (default
 * priority: reaps, spawn pipes, worker channels, timers) within a loop
 * iteration (CONN_CONTROL_PRIORITY), so a flood of requests never delays a
 * spawn, a reap or a heartbeat by more than the iteration the budget bounds.
 */

static uint64_t next_serial = 1;

static struct conn *
conn_of(struct herd__peer *p)
{
	return p->userdata;
}

static void
peer_message(struct herd__peer *p, json_t *msg)
{
	struct conn *c = conn_of(p);

	c->ops->message(c, msg);
}

static void
peer_closed(struct herd__peer *p, int reason, const char *why)
{
	struct conn *c = conn_of(p);

	if (why)
		log_debug("connection %llu: %s", (unsigned long long)c->serial, why);
	if (c->ops->closed)
		c->ops->closed(c);
}

static struct account *
account_get(uid_t uid)
{
	struct account *a;

	LIST_FOREACH(a, &herdd.accounts, link) {
		if (a->uid == uid)
			return a;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->uid = uid;
	LIST_INSERT_HEAD(&herdd.accounts, a, link);
	return a;
}

/* Puts c on the list (which holds its first reference) and in its uid's account. */
int
conn_join(struct conn *c)
{
	struct account *a = account_get(c->cred.uid);

	if (!a)
		return -ENOMEM;
	c->account = a;
	a->nconns++;
	a->nunauth++;
	TAILQ_INSERT_TAIL(&herdd.conns, c, link);
	c->on_list = true;
	herdd.nconns++;
	herdd.nunauth++;
	herd__peer_set_line_timeout(&c->peer, herdd.cfg.idle_line_timeout_ms);
	return 0;
}

/* Counts c as authenticated from now on. */
void
conn_said_hello(struct conn *c)
{
	c->hello = true;
	herdd.nunauth--;
	c->account->nunauth--;
}

/* The fd is closed: the connection leaves the list, which held a reference, and its account. */
static void
peer_released(struct herd__peer *p)
{
	struct conn *c = conn_of(p);
	struct account *a = c->account;

	if (!c->on_list)
		return;
	TAILQ_REMOVE(&herdd.conns, c, link);
	c->on_list = false;
	herdd.nconns--;
	if (!c->hello)
		herdd.nunauth--;
	a->bytes -= c->held;
	a->nconns--;
	if (!c->hello)
		a->nunauth--;
	c->account = NULL;
	c->held = 0;
	if (a->nconns == 0) {
		LIST_REMOVE(a, link);
		free(a);
	}
	conn_unref(c);
}

/* The connection of account a holding the most bytes. */
static struct conn *
account_largest(const struct account *a)
{
	struct conn *k, *max = NULL;

	TAILQ_FOREACH(k, &herdd.conns, link) {
		if (k->account == a && !k->peer.closed && !k->over_budget &&
		    (!max || k->held > max->held))
			max = k;
	}
	return max;
}

/*
 * The bytes c holds changed: its uid's account follows. A uid past
 * --max-bytes-per-uid loses its largest connection (its output dropped: often
 * it is what the uid does not read), until it is under again; a small
 * connection that only tipped the sum over is spared.
 */
static void
peer_usage(struct herd__peer *p)
{
	struct conn *c = conn_of(p), *k;
	struct account *a = c->account;
	size_t held;
	bool grew;

	if (!a || p->closed || c->over_budget)
		return;
	held = herd__peer_held(p);
	grew = held > c->held;
	a->bytes = a->bytes - c->held + held;
	c->held = held;
	while (grew && a->bytes > herdd.cfg.max_bytes_per_uid && (k = account_largest(a))) {
		herdd.stats.limit_bytes_per_uid++;
		log_warn("connection %llu (uid %u): holds %zu bytes of the uid's %zu, over %zu; "
		         "closing",
		    (unsigned long long)k->serial, (unsigned)a->uid, k->held, a->bytes,
		    herdd.cfg.max_bytes_per_uid);
		/* It no longer counts. */
		a->bytes -= k->held;
		k->held = 0;
		if (k == c) {
			conn_abort(c);
			break;
		}
		/* Another connection is aborted from its own wakeup: a caller may be walking the list. */
		k->over_budget = true;
		herd__peer_set_deadline(&k->peer, 0);
	}
}

static void
peer_silent(struct herd__peer *p)
{
	struct conn *c = conn_of(p);

	log_info("connection %llu (uid %u): nothing received for %u ms, closing",
	    (unsigned long long)c->serial, (unsigned)c->cred.uid, p->hb_timeout_ms);
	conn_close(c);
}

static void
peer_deadline(struct herd__peer *p)
{
	struct conn *c = conn_of(p);

	if (c->over_budget)
		conn_abort(c);
	else if (c->ops->deadline)
		c->ops->deadline(c);
}

static void
peer_drained(struct herd__peer *p)
{
	events_drained(conn_of(p));
}

static void
peer_free(struct herd__peer *p)
{
	struct conn *c = conn_of(p);

	free(c->name);
	free(c);
}

/* A callback table like every herd__peer_ops (client-io.c, worker-conn.c): data, not logic. */
static const struct herd__peer_ops conn_peer_ops = {
	.message = peer_message,
	.closed = peer_closed,
	.released = peer_released,
	.silent = peer_silent,
	.deadline = peer_deadline,
	.usage = peer_usage,
	.drained = peer_drained,
	.free = peer_free,
};

/* Wraps fd in a connection. */
struct conn *
conn_new(int fd, enum conn_kind kind, const struct conn_ops *ops, size_t max_message)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return NULL;
	}
	herd__peer_init(&c->peer, fd, &conn_peer_ops, c, max_message, herdd.cfg.max_output);
	/* Backpressure: a peer that sends requests but never reads replies waits. */
	herd__peer_set_water(&c->peer, OUTPUT_HIGH_WATER, OUTPUT_HIGH_WATER);
	c->peer.max_send = HERD_DEFAULT_MAX_MESSAGE_SIZE;
	c->peer.budget = CONN_BUDGET;
	if (kind == CONN_CONTROL)
		c->peer.priority = CONN_CONTROL_PRIORITY;
	c->peer.sum_in = &herdd.stats.bytes_in;
	c->peer.sum_out = &herdd.stats.bytes_out;
	c->kind = kind;
	c->ops = ops;
	c->serial = next_serial++;
	return c;
}

/* Starts the I/O. */
void
conn_start(struct conn *c)
{
	herd__peer_attach_ev(&c->peer, herdd.loop);
}

/* Runs ops->deadline ms from now. */
void
conn_set_deadline(struct conn *c, unsigned ms)
{
	herd__peer_set_deadline(
	    &c->peer, ms ? herd__now_usec() + ms * 1000ull : HERD__PEER_USEC_INFINITY);
}

/* Reads and handles everything already received (the peer is gone; its last words count). */
void
conn_drain(struct conn *c)
{
	herd__peer_drain_input(&c->peer, 64);
}

/* Takes a reference. */
struct conn *
conn_ref(struct conn *c)
{
	herd__peer_ref(&c->peer);
	return c;
}

/* Drops a reference. */
void
conn_unref(struct conn *c)
{
	if (c)
		herd__peer_unref(&c->peer);
}

/* Ends the session, flushing what is queued. */
void
conn_close(struct conn *c)
{
	herd__peer_close(&c->peer, 0, NULL);
}

/* Ends the session without flushing. */
void
conn_abort(struct conn *c)
{
	herd__peer_abort(&c->peer, 0, NULL);
}

/* Feeds hold back: the peer is slow, and what they send can wait in a ring or be counted lost. */
bool
conn_feed_full(struct conn *c)
{
	return herd__peer_queued(&c->peer) > FEED_HIGH_WATER;
}

/* What queueing returned: a peer whose output is full does not read, and is let go. */
static void
conn_queued(struct conn *c, int r)
{
	if (r != -ENOBUFS)
		return;
	herdd.stats.limit_output++;
	log_warn("connection %llu (uid %u): output over %zu bytes, closing",
	    (unsigned long long)c->serial, (unsigned)c->cred.uid, herdd.cfg.max_output);
	conn_abort(c);
}

/* Queues msg (stolen). */
int
conn_send(struct conn *c, json_t *msg)
{
	int r;

	if (!msg)
		return -ENOMEM;
	if (c->peer.released) {
		json_decref(msg);
		return -EPIPE;
	}
	/* Held: the byte budget may close c while it queues. */
	conn_ref(c);
	/* A reply the peer cannot take is answered by the peer's stand-in error with its id. */
	r = herd__peer_send(&c->peer, msg);
	json_decref(msg);
	conn_queued(c, r);
	conn_unref(c);
	return r;
}

/* Queues a reply herdd encoded itself (line ends in its newline) to request id. */
int
conn_send_line(struct conn *c, const char *line, size_t len, const json_t *id)
{
	int r;

	if (c->peer.released)
		return -EPIPE;
	conn_ref(c);
	r = herd__peer_queue_line(&c->peer, line, len, id);
	conn_queued(c, r);
	conn_unref(c);
	return r;
}

/* Sends the reply (stolen) to id; NULL (building it failed) sends internal_error instead. */
static int
conn_answer(struct conn *c, json_t *id, json_t *reply)
{
	if (!reply)
		reply = herd__peer_standin(&c->peer, id, -ENOMEM);
	return conn_send(c, reply);
}

/* Sends a result reply. */
int
conn_reply(struct conn *c, json_t *id, json_t *result)
{
	return conn_answer(c, id, proto_result(id, result));
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
	n = conn_answer(c, id, proto_error(id, code, message, data));
	free(message);
	return n;
}

bool
conn_request_gate(
    struct conn *c, const struct proto_msg *m, bool known, bool needs_hello, bool name_in_data)
{
	if (!c->hello && (!known || needs_hello)) {
		conn_reply_error(
		    c, m->id, HERD_E_HELLO_REQUIRED, NULL, "the first request must be hello");
		conn_close(c);
		return false;
	}
	if (!known) {
		conn_reply_error(c, m->id, HERD_E_METHOD_NOT_FOUND,
		    name_in_data ? json_pack("{s:s}", "method", m->method) : NULL,
		    "unknown method \"%.*s\"", proto_text_prec(m->method, 64), m->method);
		return false;
	}
	return true;
}

unsigned
conn_count_masters(void)
{
	unsigned n = 0;
	struct conn *k;

	TAILQ_FOREACH(k, &herdd.conns, link) {
		if (k->hello && k->role == ROLE_MASTER && !k->peer.closed)
			n++;
	}
	return n;
}

/* Gives c the serial it had before a reexec; later connections get higher ones. */
void
conn_set_serial(struct conn *c, uint64_t serial)
{
	c->serial = serial;
	if (serial >= next_serial)
		next_serial = serial + 1;
}
