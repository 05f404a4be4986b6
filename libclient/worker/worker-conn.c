/* SPDX-License-Identifier: MIT */
/*
 * One client connection to a worker's socket: non-blocking buffered I/O, the
 * hello handshake, connection heartbeats, backpressure, and dispatch of each
 * message to a request, a built-in or a stream.
 *
 * A framing violation (oversize, not JSON...) gets one error reply with id null
 * and the connection closes after flushing it; anything wrong with a single
 * request gets an error reply and the connection stays. Replies are only
 * queued by the calls handlers make; the writing, and any close it causes,
 * happens from the loop, so no user callback ever runs inside another herd
 * call.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker-internal.h"

#define READ_CHUNK (64u * 1024u)

static void conn_process(struct srv_conn *c);

struct srv_conn *
herd__sconn_ref(struct srv_conn *c)
{
	if (c)
		c->n_ref++;
	return c;
}

/*
 * Out of line: inlined, GCC 12 at -O3 cannot see the reference every caller of
 * herd__sconn_unref() holds across a nested unref, and warns of a use after free.
 */
static __attribute__((noinline)) void
conn_free(struct srv_conn *c)
{
	struct herd_server *srv = c->srv;

	if (c->conn_state_set && srv->type->free_conn)
		srv->type->free_conn(srv->worker_state, c->conn_state);
	proto_reader_free(&c->reader);
	proto_outq_free(&c->outq);
	free(c->buckets);
	free(c);
	herd__server_conn_freed(srv);
}

struct srv_conn *
herd__sconn_unref(struct srv_conn *c)
{
	if (c && --c->n_ref == 0)
		conn_free(c);
	return NULL;
}

/* Schedules conn_reap() from the loop (see its comment). */
static void
conn_schedule_reap(struct srv_conn *c)
{
	if (!ev_is_active(&c->reaper) && c->state != CONN_CLOSED)
		ev_timer_start(c->srv->loop, &c->reaper);
}

/* Reads and drops what the peer sent and we will never read, so the peer sees
 * a clean end of stream after our last reply rather than a reset. Bounded. */
static void
conn_discard_input(struct srv_conn *c)
{
	char buf[4096];

	for (int i = 0; i < 64; i++)
		if (read(c->fd, buf, sizeof(buf)) <= 0)
			break;
}

/* Closes the fd and drops the connection's reference on itself. */
static void
conn_close_fd(struct srv_conn *c)
{
	struct herd_server *srv = c->srv;
	struct ev_loop *loop = srv->loop;

	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_CLOSED;
	ev_io_stop(loop, &c->rio);
	ev_io_stop(loop, &c->wio);
	ev_timer_stop(loop, &c->handshake_timer);
	ev_timer_stop(loop, &c->hb_send);
	ev_timer_stop(loop, &c->hb_check);
	ev_timer_stop(loop, &c->reaper);
	conn_discard_input(c);
	close(c->fd);
	c->fd = -1;
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	srv->n_conns--;
	if (srv->on_conn_change)
		srv->on_conn_change(srv, false, srv->on_conn_change_data);
	herd__sconn_unref(c);
}

void
herd__sconn_abort(struct srv_conn *c, const char *why)
{
	if (c->state == CONN_CLOSED)
		return;
	herd__sconn_ref(c);
	if (why)
		herd_log(HERD_LOG_DEBUG, "closing a connection: %s", why);
	c->state = CONN_CLOSING;
	herd__request_cancel_all(c, 0);
	conn_close_fd(c);
	herd__sconn_unref(c);
}

void
herd__sconn_close_graceful(struct srv_conn *c, int cancel_code, const char *why)
{
	struct ev_loop *loop = c->srv->loop;

	if (c->state >= CONN_CLOSING)
		return;
	herd__sconn_ref(c);
	if (why)
		herd_log(HERD_LOG_DEBUG, "closing a connection: %s", why);
	c->state = CONN_CLOSING;
	ev_io_stop(loop, &c->rio);
	ev_timer_stop(loop, &c->hb_send);
	ev_timer_stop(loop, &c->hb_check);
	herd__request_cancel_all(c, cancel_code);
	if (c->state == CONN_CLOSING) {
		if (proto_outq_empty(&c->outq)) {
			conn_close_fd(c);
		} else {
			ev_io_start(loop, &c->wio);
			ev_timer_stop(loop, &c->handshake_timer);
			ev_timer_set(&c->handshake_timer, HERD__FLUSH_TIMEOUT_S, 0.0);
			ev_timer_start(loop, &c->handshake_timer);
		}
	}
	herd__sconn_unref(c);
}

/* Starts or stops reading: we read only while the output is under the high-water mark. */
static void
conn_update_read(struct srv_conn *c)
{
	bool want = c->state <= CONN_OPEN && !c->peer_eof && c->outq.bytes < HERD__OUT_HIGH_WATER;

	if (want && !ev_is_active(&c->rio))
		ev_io_start(c->srv->loop, &c->rio);
	else if (!want && ev_is_active(&c->rio))
		ev_io_stop(c->srv->loop, &c->rio);
	c->reading_paused = !want;
}

int
herd__sconn_send(struct srv_conn *c, json_t *msg)
{
	int r;

	if (!msg)
		return -ENOMEM;
	if (c->state == CONN_CLOSED || c->overflowed) {
		json_decref(msg);
		return -ENOBUFS;
	}
	r = proto_outq_push_json(&c->outq, msg, c->max_send);
	json_decref(msg);
	if (r == -ENOBUFS) {
		/* The peer does not read: give up on it from the loop. */
		herd_log(HERD_LOG_WARNING, "a client does not read its replies (%zu bytes queued)",
		    c->outq.bytes);
		c->overflowed = true;
		conn_schedule_reap(c);
		return r;
	}
	if (r < 0)
		return r;
	if (!ev_is_active(&c->wio))
		ev_io_start(c->srv->loop, &c->wio);
	return 0;
}

bool
herd__sconn_writable(const struct srv_conn *c)
{
	return c->state <= CONN_OPEN && !c->overflowed && c->outq.bytes < HERD__OUT_HIGH_WATER;
}

void
herd__sconn_wait_drain(struct srv_conn *c, struct herd_request *req)
{
	struct herd_request **p = &c->drain_head;

	while (*p)
		p = &(*p)->drain_next;
	req->drain_next = NULL;
	*p = req;
	/* The write watcher runs the waiters once the output is low, even if it already is. */
	if (c->state <= CONN_OPEN && !ev_is_active(&c->wio))
		ev_io_start(c->srv->loop, &c->wio);
}

/* Runs the drain callbacks registered so far; ones registered meanwhile wait for the next turn. */
static void
conn_run_drain(struct srv_conn *c)
{
	struct herd_request *list = c->drain_head, *req;

	c->drain_head = NULL;
	while (list && c->state <= CONN_OPEN) {
		req = list;
		list = req->drain_next;
		req->draining = false;
		herd__request_drained(req);
		herd_request_unref(req);
	}
	/* The connection closed under us: hand the rest back so finishing them unlinks them. */
	while (list) {
		req = list;
		list = req->drain_next;
		req->draining = false;
		herd_request_unref(req);
	}
}

/* Writes what the kernel takes now. Returns 0, -EAGAIN, or another -errno (peer gone). */
static int
conn_write_some(struct srv_conn *c)
{
	size_t written;
	int r = herd__outq_write(&c->outq, c->fd, &written);

	/*
	 * While backpressure keeps us from reading, a peer draining our queue (far
	 * more than a socket buffer) is alive though we cannot hear its heartbeats.
	 */
	if (written > 0 && c->reading_paused)
		c->last_rx = ev_now(c->srv->loop);
	return r;
}

static void
conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct srv_conn *c = w->data;
	int r;

	herd__sconn_ref(c);
	r = conn_write_some(c);
	if (r < 0 && r != -EAGAIN && r != -EWOULDBLOCK) {
		herd__sconn_abort(c, "write failed");
		goto out;
	}
	if (proto_outq_empty(&c->outq)) {
		ev_io_stop(loop, &c->wio);
		if (c->state == CONN_CLOSING) {
			conn_close_fd(c);
			goto out;
		}
	}
	if (c->outq.bytes < HERD__OUT_LOW_WATER && c->state <= CONN_OPEN) {
		/*
		 * Input first: a stream's drain waiter refills the queue past the
		 * high-water mark at once, and a cancel must not wait behind it forever.
		 * conn_process() handles the messages held back while we were paused,
		 * then resumes reading.
		 */
		if (c->reading_paused)
			conn_process(c);
		if (c->state <= CONN_OPEN)
			conn_run_drain(c);
	}
out:
	herd__sconn_unref(c);
}

void
herd__sconn_flush(struct srv_conn *c)
{
	int budget_ms = 200;

	while (c->state != CONN_CLOSED && !proto_outq_empty(&c->outq) && budget_ms > 0) {
		struct pollfd p = { .fd = c->fd, .events = POLLOUT };
		int r = conn_write_some(c);

		if (r == 0 || (r != -EAGAIN && r != -EWOULDBLOCK))
			break;
		if (poll(&p, 1, 20) < 0 && errno != EINTR)
			break;
		budget_ms -= 20;
	}
}

/* ---- timers ---- */

/* The handshake deadline while in hello, the flush deadline while closing. */
static void
conn_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct srv_conn *c = w->data;
	unsigned ms = c->srv->settings.handshake_timeout_ms;

	herd__sconn_ref(c);
	if (c->state == CONN_HELLO) {
		herd__sconn_send(c,
		    proto_error(NULL, HERD_E_TIMEOUT, "no hello within the handshake timeout",
		        json_pack("{s:s, s:I}", "what", "handshake", "ms", (json_int_t)ms)));
		herd__sconn_close_graceful(c, 0, "handshake timeout");
	} else if (c->state == CONN_CLOSING) {
		herd__sconn_abort(c, "flush timeout");
	}
	herd__sconn_unref(c);
}

static void
conn_hb_send_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct srv_conn *c = w->data;

	herd__sconn_send(c, proto_notification("heartbeat", NULL));
}

/* Closes a connection that sent nothing for the heartbeat timeout. */
static void
conn_hb_check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct srv_conn *c = w->data;
	ev_tstamp left = c->last_rx + c->hb_timeout - ev_now(loop);

	if (left > 0) {
		w->repeat = left;
		ev_timer_again(loop, w);
		return;
	}
	herd__sconn_ref(c);
	herd__sconn_send(c,
	    proto_error(NULL, HERD_E_TIMEOUT, "no heartbeat within the timeout",
	        json_pack(
	            "{s:s, s:I}", "what", "heartbeat", "ms", (json_int_t)(c->hb_timeout * 1000))));
	herd__sconn_close_graceful(c, 0, "heartbeat timeout");
	herd__sconn_unref(c);
}

/*
 * Deferred work that must not run inside a herd call made by a handler: closing
 * a connection whose output overflowed, and closing a half-closed one that has
 * nothing left to answer.
 */
static void
conn_reap_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct srv_conn *c = w->data;

	herd__sconn_ref(c);
	if (c->overflowed)
		herd__sconn_abort(c, "output overflow");
	else if (c->peer_eof && c->n_pending == 0)
		herd__sconn_close_graceful(c, 0, NULL);
	herd__sconn_unref(c);
}

void
herd__sconn_request_done(struct srv_conn *c)
{
	if (c->peer_eof && c->n_pending == 0)
		conn_schedule_reap(c);
}

/* ---- input ---- */

static void conn_send_error(struct srv_conn *c, json_t *id, int code, json_t *data, const char *fmt,
    ...) __attribute__((format(printf, 5, 6)));

static void
conn_send_error(struct srv_conn *c, json_t *id, int code, json_t *data, const char *fmt, ...)
{
	char text[256];
	va_list ap;

	va_start(ap, fmt);
	proto_text_vformat(text, sizeof(text), fmt, ap);
	va_end(ap);
	herd__sconn_send(c, proto_error(id, code, text, data));
}

static void
conn_hello(struct srv_conn *c, const struct proto_msg *m)
{
	struct herd_server *srv = c->srv;
	struct proto_settings_error serr;
	struct proto_settings hs;
	json_int_t version;
	json_t *settings = NULL, *init = NULL, *v, *result, *eff;
	const char *role, *name = NULL;
	struct proto_error err;
	char *msg = NULL;
	void *state = NULL;
	int r;

	v = json_is_object(m->params) ? json_object_get(m->params, "version") : NULL;
	if (!json_is_integer(v)) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL,
		    "hello needs params {\"version\": 1, \"role\": \"client\", ...}");
		goto fail;
	}
	if (json_integer_value(v) != HERD_PROTOCOL_VERSION) {
		conn_send_error(c, m->id, HERD_E_VERSION_MISMATCH,
		    json_pack("{s:[i]}", "supported", HERD_PROTOCOL_VERSION),
		    "protocol version %lld is not supported", (long long)json_integer_value(v));
		goto fail;
	}
	if (proto_unpack(m->params, &err, "{s:I, s:s, s?:s, s?:o, s?:o}", "version", &version,
	        "role", &role, "name", &name, "settings", &settings, "init", &init) < 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL, "hello: %s", err.text);
		goto fail;
	}
	if (strcmp(role, "client") != 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL,
		    "role \"%s\" cannot connect to a worker; use \"client\"", role);
		goto fail;
	}
	/* herdd's rules (proto's table); absent: no clamp and no heartbeats. */
	proto_settings_defaults(&hs);
	hs.max_message_size = c->max_send;
	hs.heartbeat_interval_ms = hs.heartbeat_timeout_ms = 0;
	if (proto_settings_apply_hello(&hs, settings, &serr) < 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL, "%s", serr.text);
		goto fail;
	}
	if (srv->type->init_conn) {
		r = srv->type->init_conn(
		    srv->worker_state, init ? init : json_null(), &state, &msg);
		if (r < 0) {
			herd__sconn_send(c,
			    proto_error(m->id, HERD_E_INIT_FAILED, msg ? msg : strerror(-r), NULL));
			free(msg);
			goto fail;
		}
	}
	c->conn_state = state;
	c->conn_state_set = true;
	c->state = CONN_OPEN;
	ev_timer_stop(srv->loop, &c->handshake_timer);
	if (hs.max_message_size < c->max_send)
		c->max_send = hs.max_message_size;
	if (hs.heartbeat_interval_ms > 0) {
		ev_timer_set(&c->hb_send, hs.heartbeat_interval_ms / 1000.0,
		    hs.heartbeat_interval_ms / 1000.0);
		ev_timer_start(srv->loop, &c->hb_send);
	}
	if (hs.heartbeat_timeout_ms > 0) {
		c->hb_timeout = hs.heartbeat_timeout_ms / 1000.0;
		ev_timer_set(&c->hb_check, c->hb_timeout, 0.0);
		ev_timer_start(srv->loop, &c->hb_check);
	}
	eff = herd__settings_to_json(&srv->settings);
	if (eff) {
		json_object_set_new(
		    eff, "heartbeat_interval_ms", json_integer(hs.heartbeat_interval_ms));
		json_object_set_new(
		    eff, "heartbeat_timeout_ms", json_integer(hs.heartbeat_timeout_ms));
	}
	result =
	    json_pack("{s:i, s:s, s:I, s:s?, s:s?, s:o?, s:o?}", "version", HERD_PROTOCOL_VERSION,
	        "server", "worker", "pid", (json_int_t)getpid(), "name", srv->type->name, "id",
	        srv->worker_id, "functions", herd__functions_json(srv), "settings", eff);
	herd__sconn_send(c, result ? proto_result(m->id, result) : NULL);
	return;
fail:
	herd__sconn_close_graceful(c, 0, "hello failed");
}

static void
conn_request(struct srv_conn *c, const struct proto_msg *m)
{
	struct herd_server *srv = c->srv;
	const struct herd_function *fn;
	struct herd_request *req;

	if (strcmp(m->method, "hello") == 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_REQUEST, NULL, "hello was already done");
		return;
	}
	fn = strncmp(m->method, "herd.", 5) == 0 ? herd__builtin_find(m->method)
	                                         : herd__function_find(srv, m->method);
	if (!fn) {
		conn_send_error(c, m->id, HERD_E_METHOD_NOT_FOUND,
		    json_pack("{s:s}", "method", m->method), "no function named \"%.*s\"",
		    proto_text_prec(m->method, 100), m->method);
		return;
	}
	if (fn->kind == HERD_KIND_ONEWAY) {
		conn_send_error(c, m->id, HERD_E_INVALID_REQUEST, NULL,
		    "%s is oneway: send it as a notification (no id)", fn->name);
		return;
	}
	if (c->n_pending >= srv->max_pending) {
		conn_send_error(c, m->id, HERD_E_TOO_MANY_REQUESTS,
		    json_pack("{s:I}", "limit", (json_int_t)srv->max_pending),
		    "%u requests are already pending on this connection", c->n_pending);
		return;
	}
	if (herd__request_find(c, m->id)) {
		conn_send_error(c, m->id, HERD_E_INVALID_REQUEST, NULL,
		    "the id is already used by a pending request");
		return;
	}
	req = herd__request_new(c, fn, m->id, m->params);
	if (!req || herd__request_table_add(c, req) < 0) {
		conn_send_error(c, m->id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
		herd_request_unref(req);
		return;
	}
	herd__request_dispatch(req);
	herd_request_unref(req);
}

/* The request a stream notification names, if it is pending and of kind want. */
static struct herd_request *
conn_stream_target(struct srv_conn *c, const struct proto_msg *m, json_t **item)
{
	struct proto_error err;
	struct herd_request *req;
	json_t *id = NULL;
	int r;

	if (item)
		r = proto_unpack(m->params, &err, "{s:o, s:o}", "id", &id, "item", item);
	else
		r = proto_unpack(m->params, &err, "{s:o}", "id", &id);
	if (r < 0) {
		herd_log(HERD_LOG_WARNING, "%s ignored: %s", m->method, err.text);
		return NULL;
	}
	/* A stream that already ended is not an error: the messages crossed. */
	req = herd__request_find(c, id);
	return req;
}

static void
conn_notification(struct srv_conn *c, const struct proto_msg *m)
{
	const struct herd_function *fn;
	struct herd_request *req;
	json_t *item = NULL;

	if (strcmp(m->method, "heartbeat") == 0)
		return;
	if (strcmp(m->method, "herd.cancel") == 0) {
		req = conn_stream_target(c, m, NULL);
		if (req)
			herd__request_cancel(req, HERD_E_CANCELLED);
		return;
	}
	if (strcmp(m->method, "herd.item") == 0) {
		req = conn_stream_target(c, m, &item);
		if (req && req->fn->kind == HERD_KIND_SINK)
			herd__request_item(req, item);
		return;
	}
	if (strcmp(m->method, "herd.end") == 0) {
		req = conn_stream_target(c, m, NULL);
		if (req && req->fn->kind == HERD_KIND_SINK)
			herd__request_end_input(req);
		return;
	}
	fn = herd__function_find(c->srv, m->method);
	if (!fn || fn->kind != HERD_KIND_ONEWAY) {
		herd_log(HERD_LOG_WARNING,
		    "notification %.100s ignored: no oneway function has that name", m->method);
		return;
	}
	req = herd__request_new(c, fn, NULL, m->params);
	if (!req) {
		herd_log(HERD_LOG_ERR, "oneway %s dropped: out of memory", fn->name);
		return;
	}
	herd__request_dispatch(req);
	herd_request_unref(req);
}

static void
conn_message(struct srv_conn *c, json_t *msg)
{
	struct proto_msg m;
	struct proto_error err;

	if (proto_msg_parse(msg, &m, &err) < 0) {
		herd__sconn_send(
		    c, proto_error(proto_reply_id(msg), HERD_E_INVALID_REQUEST, err.text, NULL));
		if (c->state == CONN_HELLO)
			herd__sconn_close_graceful(c, 0, "invalid first message");
		return;
	}
	if (c->state == CONN_HELLO) {
		if (m.kind == PROTO_REQUEST && strcmp(m.method, "hello") == 0) {
			conn_hello(c, &m);
			return;
		}
		conn_send_error(c, m.kind == PROTO_REQUEST ? m.id : NULL, HERD_E_HELLO_REQUIRED,
		    NULL, "the first message must be a hello request");
		herd__sconn_close_graceful(c, 0, "no hello");
		return;
	}
	switch (m.kind) {
	case PROTO_REQUEST:
		conn_request(c, &m);
		break;
	case PROTO_NOTIFICATION:
		conn_notification(c, &m);
		break;
	case PROTO_RESULT:
	case PROTO_ERROR:
		/* A worker sends no requests, so replies answer nothing. */
		break;
	}
}

/* Handles buffered messages while the connection serves and the output is not full. */
static void
conn_process(struct srv_conn *c)
{
	struct proto_error err;
	json_t *msg;
	int r;

	while (c->state <= CONN_OPEN && c->outq.bytes < HERD__OUT_HIGH_WATER) {
		r = proto_reader_next(&c->reader, &msg, &err);
		if (r == 0)
			break;
		if (r < 0) {
			json_t *data = err.code == HERD_E_MESSAGE_TOO_LARGE
			    ? json_pack("{s:I}", "limit", (json_int_t)c->reader.max_message)
			    : NULL;

			herd__sconn_send(c, proto_error(NULL, err.code, err.text, data));
			herd__sconn_close_graceful(c, 0, err.text);
			break;
		}
		conn_message(c, msg);
		json_decref(msg);
	}
	conn_update_read(c);
}

/* The peer shut its side down. If it only half-closed, answer what it asked first. */
static void
conn_peer_eof(struct srv_conn *c)
{
	struct pollfd p = { .fd = c->fd, .events = POLLOUT };

	if (poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
		herd__sconn_abort(c, "closed by the peer");
		return;
	}
	c->peer_eof = true;
	conn_update_read(c);
	if (c->state == CONN_HELLO)
		herd__sconn_close_graceful(c, 0, "end of input before hello");
	else
		herd__sconn_request_done(c);
}

static void
conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct srv_conn *c = w->data;
	char buf[READ_CHUNK];
	ssize_t n;

	herd__sconn_ref(c);
	n = read(c->fd, buf, sizeof(buf));
	if (n > 0) {
		c->last_rx = ev_now(loop);
		if (proto_reader_feed(&c->reader, buf, (size_t)n) < 0)
			herd__sconn_abort(c, "out of memory");
		else
			conn_process(c);
	} else if (n == 0) {
		conn_peer_eof(c);
	} else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
		herd__sconn_abort(c, strerror(errno));
	}
	herd__sconn_unref(c);
}

int
herd__sconn_start(struct herd_server *srv, int fd)
{
	struct srv_conn *c = calloc(1, sizeof(*c));
	struct ev_loop *loop = srv->loop;

	if (!c)
		return -ENOMEM;
	c->n_ref = 1;
	c->srv = srv;
	srv->n_live++;
	c->fd = fd;
	c->state = CONN_HELLO;
	c->max_send = srv->settings.max_message_size;
	proto_reader_init(&c->reader, srv->settings.max_message_size, HERD_MAX_DEPTH);
	proto_outq_init(&c->outq, srv->max_output);
	ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
	ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
	ev_init(&c->handshake_timer, conn_deadline_cb);
	ev_init(&c->hb_send, conn_hb_send_cb);
	ev_init(&c->hb_check, conn_hb_check_cb);
	ev_timer_init(&c->reaper, conn_reap_cb, 0.0, 0.0);
	c->rio.data = c->wio.data = c->handshake_timer.data = c;
	c->hb_send.data = c->hb_check.data = c->reaper.data = c;
	c->last_rx = ev_now(loop);
	c->next = srv->conns;
	if (c->next)
		c->next->prev = c;
	srv->conns = c;
	srv->n_conns++;
	srv->n_accepted++;
	ev_io_start(loop, &c->rio);
	if (srv->settings.handshake_timeout_ms > 0) {
		ev_timer_set(&c->handshake_timer, srv->settings.handshake_timeout_ms / 1000.0, 0.0);
		ev_timer_start(loop, &c->handshake_timer);
	}
	if (srv->on_conn_change)
		srv->on_conn_change(srv, true, srv->on_conn_change_data);
	return 0;
}
