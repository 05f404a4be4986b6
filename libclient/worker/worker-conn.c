/* SPDX-License-Identifier: MIT */
/*
 * One client connection to a worker's socket on the shared JSON-lines peer
 * (common/peer.h, which reads, frames, queues, flushes and sends heartbeats):
 * the hello handshake, backpressure for streams, and dispatch of each
 * message to a request, a built-in or a stream.
 *
 * A framing violation (oversize, not JSON...) gets one error reply with id null
 * and the connection closes after flushing it; anything wrong with a single
 * request gets an error reply and the connection stays. Replies are only
 * queued by the calls handlers make; the writing, and any close it causes,
 * happens from the loop, so no user callback ever runs inside another herd
 * call. Deferred work (an overflow, a half-closed connection with nothing
 * left to answer, drain waiters) is the peer's deadline set to now.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker-internal.h"

static void conn_message(struct srv_conn *c, json_t *msg);

static struct srv_conn *
conn_of(struct herd__peer *p)
{
	return p->userdata;
}

struct srv_conn *
herd__sconn_ref(struct srv_conn *c)
{
	if (c)
		herd__peer_ref(&c->peer);
	return c;
}

struct srv_conn *
herd__sconn_unref(struct srv_conn *c)
{
	if (c)
		herd__peer_unref(&c->peer);
	return NULL;
}

/* Runs the peer's deadline from the loop as soon as it can (see conn_deadline()). */
static void
conn_wake(struct srv_conn *c)
{
	if (c->state != SCONN_CLOSED)
		herd__peer_set_deadline(&c->peer, 0);
}

void
herd__sconn_abort(struct srv_conn *c, const char *why)
{
	if (why)
		herd_log(HERD_LOG_DEBUG, "closing a connection: %s", why);
	c->cancel_code = 0;
	herd__peer_abort(&c->peer, 0, NULL);
}

void
herd__sconn_close_graceful(struct srv_conn *c, int cancel_code, const char *why)
{
	if (c->state >= SCONN_CLOSING)
		return;
	if (why)
		herd_log(HERD_LOG_DEBUG, "closing a connection: %s", why);
	c->cancel_code = cancel_code;
	herd__peer_close(&c->peer, 0, NULL);
}

int
herd__sconn_send(struct srv_conn *c, json_t *msg)
{
	int r;

	if (!msg)
		return -ENOMEM;
	if (c->state == SCONN_CLOSED || c->overflowed) {
		json_decref(msg);
		return -ENOBUFS;
	}
	r = herd__peer_queue(&c->peer, msg);
	json_decref(msg);
	if (r == -ENOBUFS) {
		/* The peer does not read: give up on it from the loop. */
		herd_log(HERD_LOG_WARNING, "a client does not read its replies (%zu bytes queued)",
		    c->peer.outq.bytes);
		c->overflowed = true;
		conn_wake(c);
	}
	return r;
}

int
herd__sconn_reply(struct srv_conn *c, json_t *id, json_t *reply)
{
	int r;

	if (reply)
		return herd__sconn_send(c, reply);
	reply = herd__peer_standin(&c->peer, id, -ENOMEM);
	r = herd__sconn_send(c, reply);
	return r < 0 ? r : -ENOMEM;
}

/*
 * The reply goes out in the connection's reused envelope: building and
 * freeing a fresh object cost about a seventh of a call's instructions. The
 * wire text is the same (jansson keeps a replaced key in its place).
 */
int
herd__sconn_result(struct srv_conn *c, json_t *id, json_t *result)
{
	json_t *m = c->reply;
	int r;

	if (!id)
		id = json_null();
	if (!m)
		m = c->reply = proto_result(id, json_null());
	if (!m || json_object_set(m, "id", id) < 0) {
		json_decref(result);
		return herd__sconn_reply(c, id, NULL);
	}
	if (json_object_set_new(m, "result", result) < 0)
		return herd__sconn_reply(c, id, NULL);
	r = herd__sconn_reply(c, id, json_incref(m));
	/* The envelope keeps no references (json_null() allocates nothing). */
	json_object_set_new(m, "id", json_null());
	json_object_set_new(m, "result", json_null());
	return r;
}

bool
herd__sconn_writable(const struct srv_conn *c)
{
	return c->state <= SCONN_OPEN && !c->overflowed &&
	    proto_outq_backlog(&c->peer.outq) < HERD__OUT_HIGH_WATER;
}

void
herd__sconn_wait_drain(struct srv_conn *c, struct herd_request *req)
{
	struct herd_request **p = &c->drain_head;

	while (*p)
		p = &(*p)->drain_next;
	req->drain_next = NULL;
	*p = req;
	/* The waiters run once the output is low, even if it already is. */
	conn_wake(c);
}

/* Runs the drain callbacks registered so far; ones registered meanwhile wait for the next turn. */
static void
conn_run_drain(struct srv_conn *c)
{
	struct herd_request *list = c->drain_head, *req;

	c->drain_head = NULL;
	while (list && c->state <= SCONN_OPEN) {
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

void
herd__sconn_flush(struct srv_conn *c)
{
	(void)herd__peer_flush(&c->peer, 200);
}

void
herd__sconn_request_done(struct srv_conn *c)
{
	if (c->peer.eof && c->n_pending == 0)
		conn_wake(c);
}

/* ---- the peer's callbacks ---- */

static void
conn_peer_message(struct herd__peer *p, json_t *msg)
{
	conn_message(conn_of(p), msg);
}

/* The peer shut its side down. If it only half-closed, answer what it asked first. */
static void
conn_peer_eof(struct herd__peer *p)
{
	struct srv_conn *c = conn_of(p);
	struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };

	if (poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR))) {
		herd__sconn_abort(c, "closed by the peer");
		return;
	}
	if (c->state == SCONN_HELLO)
		herd__sconn_close_graceful(c, 0, "end of input before hello");
	else
		herd__sconn_request_done(c);
}

/* The session ended: what is pending is cancelled (answered with cancel_code unless 0). */
static void
conn_peer_closed(struct herd__peer *p, int reason, const char *why)
{
	struct srv_conn *c = conn_of(p);

	if (why)
		herd_log(HERD_LOG_DEBUG, "closing a connection: %s", why);
	c->state = SCONN_CLOSING;
	herd__request_cancel_all(c, c->cancel_code);
	herd__client_call_fail_all(c);
}

/* The fd is closed: the connection leaves its server and drops its reference on itself. */
static void
conn_peer_released(struct herd__peer *p)
{
	struct srv_conn *c = conn_of(p);
	struct herd_server *srv = c->srv;

	c->state = SCONN_CLOSED;
	HERD__LIST_REMOVE(srv->conns, c, prev, next);
	srv->n_conns--;
	if (srv->on_conn_change)
		srv->on_conn_change(srv, false, srv->on_conn_change_data);
	herd__sconn_unref(c);
}

/* Closes a connection that sent nothing for the heartbeat timeout. */
static void
conn_peer_silent(struct herd__peer *p)
{
	struct srv_conn *c = conn_of(p);

	herd__sconn_send(c,
	    proto_error(NULL, HERD_E_TIMEOUT, "no heartbeat within the timeout",
	        json_pack("{s:s, s:I}", "what", "heartbeat", "ms", (json_int_t)p->hb_timeout_ms)));
	herd__sconn_close_graceful(c, 0, "heartbeat timeout");
}

/*
 * The handshake deadline while in hello; afterwards the deferred work that
 * must not run inside a herd call made by a handler: closing a connection
 * whose output overflowed, and closing a half-closed one that has nothing
 * left to answer. A wakeup for drain waiters needs nothing here: the write
 * that follows runs them.
 */
static void
conn_peer_deadline(struct herd__peer *p)
{
	struct srv_conn *c = conn_of(p);
	unsigned ms = c->srv->settings.handshake_timeout_ms;

	if (c->overflowed) {
		herd__sconn_abort(c, "output overflow");
	} else if (c->state == SCONN_HELLO) {
		herd__sconn_send(c,
		    proto_error(NULL, HERD_E_TIMEOUT, "no hello within the handshake timeout",
		        json_pack("{s:s, s:I}", "what", "handshake", "ms", (json_int_t)ms)));
		herd__sconn_close_graceful(c, 0, "handshake timeout");
	} else if (c->peer.eof && c->n_pending == 0) {
		herd__sconn_close_graceful(c, 0, NULL);
	}
}

static void
conn_peer_drained(struct herd__peer *p)
{
	struct srv_conn *c = conn_of(p);

	if (c->state <= SCONN_OPEN && c->drain_head)
		conn_run_drain(c);
}

/* Out of line: GCC 12 at -O3 cannot see the reference every unref's caller holds. */
static __attribute__((noinline)) void
conn_peer_free(struct herd__peer *p)
{
	struct srv_conn *c = conn_of(p);
	struct herd_server *srv = c->srv;

	if (c->conn_state_set && srv->type->free_conn)
		srv->type->free_conn(srv->worker_state, c->conn_state);
	free(c->buckets);
	json_decref(c->reply);
	free(c);
	herd__server_conn_freed(srv);
}

/* A callback table like every herd__peer_ops (client-io.c, daemon/conn.c): data, not logic. */
static const struct herd__peer_ops conn_peer_ops = {
	.message = conn_peer_message,
	.eof = conn_peer_eof,
	.closed = conn_peer_closed,
	.released = conn_peer_released,
	.silent = conn_peer_silent,
	.deadline = conn_peer_deadline,
	.drained = conn_peer_drained,
	.free = conn_peer_free,
};

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
	herd__sconn_reply(c, id, proto_error(id, code, text, data));
}

/* What a hello asks for. */
struct hello_args {
	json_t *init;
	struct proto_settings settings; /* the heartbeats asked for and the peer's limit */
};

/* Unpacks and checks the hello; answers and returns -1 when it is wrong. */
static int
hello_parse(struct srv_conn *c, const struct proto_msg *m, struct hello_args *a)
{
	struct proto_settings_error serr;
	json_t *settings = NULL, *init = NULL, *v;
	const char *role, *name = NULL;
	struct proto_error err;
	json_int_t version;

	v = json_is_object(m->params) ? json_object_get(m->params, "version") : NULL;
	if (!json_is_integer(v)) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL,
		    "hello needs params {\"version\": 1, \"role\": \"client\", ...}");
		return -1;
	}
	if (json_integer_value(v) != HERD_PROTOCOL_VERSION) {
		conn_send_error(c, m->id, HERD_E_VERSION_MISMATCH,
		    json_pack("{s:[i]}", "supported", HERD_PROTOCOL_VERSION),
		    "protocol version %lld is not supported", (long long)json_integer_value(v));
		return -1;
	}
	if (proto_unpack(m->params, &err, "{s:I, s:s, s?:s, s?:o, s?:o}", "version", &version,
	        "role", &role, "name", &name, "settings", &settings, "init", &init) < 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL, "hello: %s", err.text);
		return -1;
	}
	if (strcmp(role, "client") != 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL,
		    "role \"%s\" cannot connect to a worker; use \"client\"", role);
		return -1;
	}
	/* herdd's rules (proto's table); absent: no clamp and no heartbeats. */
	proto_settings_defaults(&a->settings);
	a->settings.max_message_size = c->peer.max_send;
	a->settings.heartbeat_interval_ms = a->settings.heartbeat_timeout_ms = 0;
	if (proto_settings_apply_hello(&a->settings, settings, &serr) < 0) {
		conn_send_error(c, m->id, HERD_E_INVALID_PARAMS, NULL, "%s", serr.text);
		return -1;
	}
	a->init = init;
	return 0;
}

/* Runs the worker type's per-connection init; answers and returns -1 when it fails. */
static int
hello_init_conn(struct srv_conn *c, const struct proto_msg *m, json_t *init)
{
	struct herd_server *srv = c->srv;
	char *msg = NULL;
	void *state = NULL;
	int r;

	if (srv->type->init_conn) {
		r = srv->type->init_conn(
		    srv->worker_state, init ? init : json_null(), &state, &msg);
		if (r < 0) {
			herd__sconn_reply(c, m->id,
			    proto_error(m->id, HERD_E_INIT_FAILED, msg ? msg : strerror(-r), NULL));
			free(msg);
			return -1;
		}
	}
	c->conn_state = state;
	c->conn_state_set = true;
	return 0;
}

/* The hello result: who we are, our functions, and the settings in effect. */
static json_t *
hello_result(struct srv_conn *c, const struct hello_args *a)
{
	struct herd_server *srv = c->srv;
	json_t *eff = herd__settings_to_json(&srv->settings);

	if (eff) {
		json_object_set_new(
		    eff, "heartbeat_interval_ms", json_integer(a->settings.heartbeat_interval_ms));
		json_object_set_new(
		    eff, "heartbeat_timeout_ms", json_integer(a->settings.heartbeat_timeout_ms));
	}
	/* Every connection is a Unix socket: descriptors can come along (PROTOCOL.md 1.1). */
	return json_pack("{s:i, s:s, s:I, s:s?, s:s?, s:o?, s:o?, s:[s]}", "version",
	    HERD_PROTOCOL_VERSION, "server", "worker", "pid", (json_int_t)getpid(), "name",
	    srv->type->name, "id", srv->worker_id, "functions", herd__functions_json(srv),
	    "settings", eff, "features", PROTO_FEATURE_BYTES_FD);
}

static void
conn_hello(struct srv_conn *c, const struct proto_msg *m)
{
	struct hello_args a;
	json_t *result;

	if (hello_parse(c, m, &a) < 0 || hello_init_conn(c, m, a.init) < 0) {
		herd__sconn_close_graceful(c, 0, "hello failed");
		return;
	}
	c->state = SCONN_OPEN;
	herd__peer_set_deadline(&c->peer, HERD__PEER_USEC_INFINITY);
	if (a.settings.max_message_size < c->peer.max_send)
		c->peer.max_send = a.settings.max_message_size;
	herd__peer_set_heartbeat(
	    &c->peer, a.settings.heartbeat_interval_ms, a.settings.heartbeat_timeout_ms);
	result = hello_result(c, &a);
	herd__sconn_result(c, m->id, result);
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
	if (strcmp(m->method, "herd.features") == 0) {
		/* The client takes bytes out of band too: our hello offered it. */
		if (proto_features_has(
		        json_object_get(m->params, "features"), PROTO_FEATURE_BYTES_FD))
			c->peer.fds_out = true;
		return;
	}
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
		herd__sconn_reply(c, proto_reply_id(msg),
		    proto_error(proto_reply_id(msg), HERD_E_INVALID_REQUEST, err.text, NULL));
		if (c->state == SCONN_HELLO)
			herd__sconn_close_graceful(c, 0, "invalid first message");
		return;
	}
	if (c->state == SCONN_HELLO) {
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
		/* The client answers a handler's call back (PROTOCOL.md 6.7). */
		herd__client_call_reply(c, &m);
		break;
	}
}

int
herd__sconn_start(struct herd_server *srv, int fd)
{
	struct srv_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	/* The peer's first reference is the connection's own, dropped when its fd closes. */
	herd__peer_init(
	    &c->peer, fd, &conn_peer_ops, c, srv->settings.max_message_size, srv->max_output);
	herd__peer_set_water(&c->peer, HERD__OUT_HIGH_WATER, HERD__OUT_LOW_WATER);
	herd__peer_read_bytes(&c->peer);
	c->srv = srv;
	srv->n_live++;
	c->state = SCONN_HELLO;
	HERD__LIST_PREPEND(srv->conns, c, prev, next);
	srv->n_conns++;
	srv->n_accepted++;
	if (srv->settings.handshake_timeout_ms > 0)
		herd__peer_set_deadline(&c->peer,
		    herd__now_usec() + srv->settings.handshake_timeout_ms * HERD__USEC_PER_MSEC);
	herd__peer_attach_ev(&c->peer, srv->loop);
	if (srv->on_conn_change)
		srv->on_conn_change(srv, true, srv->on_conn_change_data);
	return 0;
}
