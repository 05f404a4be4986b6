/* SPDX-License-Identifier: MIT */
/*
 * The control socket's request table and the checks every request shares:
 * JSON-RPC validity, hello first (under a handshake timeout), the role, and
 * the per-connection limit on requests in flight. Method names are looked up
 * in a fixed table; nothing else is reachable from the wire.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

#define NEED_HELLO     0x1 /* refused (and the connection closed) before hello */
#define WHILE_STOPPING 0x2 /* still served while herdd stops, so people can watch */

struct method {
	const char *name;
	void (*handler)(struct conn *c, json_t *id, json_t *params);
	unsigned flags;
};

static const struct method methods[] = {
	{ "hello", h_hello, WHILE_STOPPING },
	{ "ping", h_ping, NEED_HELLO | WHILE_STOPPING },
	{ "spawn", h_spawn, NEED_HELLO },
	{ "shutdown", h_shutdown, NEED_HELLO },
	{ "kill", h_kill, NEED_HELLO },
	{ "list", h_list, NEED_HELLO | WHILE_STOPPING },
	{ "inspect", h_inspect, NEED_HELLO | WHILE_STOPPING },
	{ "logs", h_logs, NEED_HELLO },
	{ "subscribe", h_subscribe, NEED_HELLO },
	{ "unsubscribe", h_unsubscribe, NEED_HELLO },
	{ "stats", h_stats, NEED_HELLO | WHILE_STOPPING },
	{ "reexec", h_reexec, NEED_HELLO },
};

static const struct method *
find_method(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		if (strcmp(methods[i].name, name) == 0)
			return &methods[i];
	}
	return NULL;
}

/* True if c may see and touch uid's workers: the same uid, or root. */
bool
dispatch_may_see(const struct conn *c, uid_t uid)
{
	return c->cred.uid == 0 || c->cred.uid == uid;
}

/* Unpacks params strictly; where they do not fit, replies the error itself. */
int
dispatch_unpack(struct conn *c, json_t *id, json_t *params, const char *fmt, ...)
{
	struct proto_error err;
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = proto_vunpack(params, &err, fmt, ap);
	va_end(ap);
	if (r == -EINVAL)
		conn_reply_error(
		    c, id, HERD_E_INVALID_PARAMS, NULL, "invalid params: %s", err.text);
	else if (r < 0)
		conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
	return r;
}

/* Replies limit_exceeded naming the limit. */
void
dispatch_limit(struct conn *c, json_t *id, const char *limit, unsigned value)
{
	conn_reply_error(c, id, HERD_E_LIMIT_EXCEEDED,
	    json_pack("{s:s, s:I}", "limit", limit, "value", (json_int_t)value),
	    "limit %s (%u) reached", limit, value);
}

/* No hello within the handshake timeout. */
static void
control_deadline(struct conn *c)
{
	if (c->hello)
		return;
	log_info("connection %llu (uid %u): no hello within %u ms, closing",
	    (unsigned long long)c->serial, (unsigned)c->cred.uid, herdd.cfg.handshake_timeout_ms);
	conn_reply_error(c, NULL, HERD_E_TIMEOUT,
	    json_pack("{s:s, s:I}", "what", "handshake", "ms",
	        (json_int_t)herdd.cfg.handshake_timeout_ms),
	    "no hello within %u ms", herdd.cfg.handshake_timeout_ms);
	conn_close(c);
}

/* Starts the handshake deadline of an accepted connection. */
void
dispatch_accepted(struct conn *c)
{
	conn_set_deadline(c, herdd.cfg.handshake_timeout_ms);
}

static void
request(struct conn *c, const struct proto_msg *m)
{
	const struct method *meth = find_method(m->method);

	if (!conn_request_gate(c, m, meth, meth && (meth->flags & NEED_HELLO), true))
		return;
	if (herdd.stopping && !(meth->flags & WHILE_STOPPING)) {
		conn_reply_error(c, m->id, HERD_E_SHUTTING_DOWN, NULL, "herdd is shutting down");
		return;
	}
	if (c->pending > 0 && (sup_id_pending(c, m->id) || list_id_pending(c, m->id))) {
		conn_reply_error(c, m->id, HERD_E_INVALID_REQUEST, NULL,
		    "a request with this id is still pending");
		return;
	}
	if (c->pending >= herdd.cfg.max_pending) {
		herdd.stats.limit_pending++;
		conn_reply_error(c, m->id, HERD_E_TOO_MANY_REQUESTS,
		    json_pack("{s:I}", "limit", (json_int_t)herdd.cfg.max_pending),
		    "too many requests in flight (%u)", herdd.cfg.max_pending);
		return;
	}
	meth->handler(c, m->id, m->params);
}

/* Parses and routes like worker-conn.c's conn_message; herdd's rules before hello are its own. */
static void
control_message(struct conn *c, json_t *msg)
{
	struct proto_error err;
	struct proto_msg m;

	if (proto_msg_parse(msg, &m, &err) < 0) {
		/* The framing held: answer with the id if it is usable, and keep going. */
		conn_reply_error(c, proto_reply_id(msg), err.code, NULL, "%s", err.text);
		return;
	}
	switch (m.kind) {
	case PROTO_REQUEST:
		request(c, &m);
		break;
	case PROTO_NOTIFICATION:
		if (!c->hello) {
			conn_reply_error(c, NULL, HERD_E_HELLO_REQUIRED, NULL,
			    "the first message must be the hello request");
			conn_close(c);
		}
		/* "heartbeat" only refreshes the peer's last_recv, done on every read; others are ignored. */
		else if (!strcmp(m.method, "goodbye")) {
			log_debug("connection %llu: goodbye", (unsigned long long)c->serial);
			c->goodbye = true;
		}
		break;
	case PROTO_RESULT:
	case PROTO_ERROR:
		/* herdd sends no requests on the control socket: a reply answers nothing. */
		log_debug("connection %llu: ignoring a reply", (unsigned long long)c->serial);
		break;
	}
}

static void
control_closed(struct conn *c)
{
	log_debug("connection %llu (uid %u) closed", (unsigned long long)c->serial,
	    (unsigned)c->cred.uid);
	sup_conn_gone(c);
	list_conn_gone(c);
	sup_owner_gone(c);
}

const struct conn_ops dispatch_control_ops = {
	.message = control_message,
	.closed = control_closed,
	.deadline = control_deadline,
};

/* Refuses a hello: every error answering hello closes the connection. */
static void
refuse_hello(struct conn *c, json_t *id, int code, json_t *data, const char *text)
{
	conn_reply_error(c, id, code, data, "%s", text);
	conn_close(c);
}

/* What a hello asks for. */
struct hello_args {
	const char *role, *name;
	struct proto_settings settings;
};

/* Unpacks and checks the hello's params; refuses the hello and returns -1 when they are wrong. */
static int
hello_parse(struct conn *c, json_t *id, json_t *params, struct hello_args *a)
{
	json_int_t version = 0;
	const char *role = NULL, *name = NULL;
	json_t *settings = NULL, *init = NULL;
	struct proto_settings_error serr;
	struct proto_error err;
	char text[256];

	if (proto_unpack(params, &err, "{s:I, s:s, s?s, s?o, s?o}", "version", &version, "role",
	        &role, "name", &name, "settings", &settings, "init", &init) < 0) {
		snprintf(text, sizeof(text), "invalid params: %s", err.text);
		refuse_hello(c, id, HERD_E_INVALID_PARAMS, NULL, text);
		return -1;
	}
	if (version != HERD_PROTOCOL_VERSION) {
		snprintf(text, sizeof(text), "protocol version %lld is not supported",
		    (long long)version);
		refuse_hello(c, id, HERD_E_VERSION_MISMATCH,
		    json_pack("{s:[i]}", "supported", HERD_PROTOCOL_VERSION), text);
		return -1;
	}
	if (strcmp(role, "master") != 0 && strcmp(role, "inspector") != 0) {
		snprintf(text, sizeof(text),
		    "role \"%.*s\" cannot use herdd's control socket (master or inspector)",
		    proto_text_prec(role, 32), role);
		refuse_hello(c, id, HERD_E_INVALID_PARAMS, NULL, text);
		return -1;
	}
	if (name && strlen(name) > 256) {
		refuse_hello(c, id, HERD_E_INVALID_PARAMS, NULL, "name is longer than 256 bytes");
		return -1;
	}
	/* Absent: the default size limit and no heartbeats (PROTOCOL.md 3.4). */
	proto_settings_defaults(&a->settings);
	a->settings.heartbeat_interval_ms = a->settings.heartbeat_timeout_ms = 0;
	if (proto_settings_apply_hello(&a->settings, settings, &serr) < 0) {
		refuse_hello(c, id, HERD_E_INVALID_PARAMS, NULL, serr.text);
		return -1;
	}
	/* Each heartbeat costs herdd a wakeup and a write: their rate is bounded. */
	if (a->settings.heartbeat_interval_ms > 0 &&
	    a->settings.heartbeat_interval_ms < herdd.cfg.min_heartbeat_interval_ms) {
		snprintf(text, sizeof(text),
		    "heartbeat_interval_ms (%u) is below herdd's minimum of %u ms",
		    a->settings.heartbeat_interval_ms, herdd.cfg.min_heartbeat_interval_ms);
		refuse_hello(c, id, HERD_E_INVALID_PARAMS,
		    json_pack("{s:s, s:I}", "limit", "min_heartbeat_interval_ms", "value",
		        (json_int_t)herdd.cfg.min_heartbeat_interval_ms),
		    text);
		return -1;
	}
	a->role = role;
	a->name = name;
	return 0;
}

/* A user herdd serves only its own uid; root serves everyone. */
static int
hello_permitted(struct conn *c, json_t *id)
{
	char text[256];

	if (herdd.uid == 0 || c->cred.uid == herdd.uid)
		return 0;
	log_warn("uid %u pid %d refused: this herdd serves uid %u", (unsigned)c->cred.uid,
	    (int)c->cred.pid, (unsigned)herdd.uid);
	snprintf(text, sizeof(text), "this herdd serves uid %u only", (unsigned)herdd.uid);
	refuse_hello(c, id, HERD_E_PERMISSION_DENIED, NULL, text);
	return -1;
}

/* The session starts: the role, the peer's limit and the heartbeats it asked for. */
static void
hello_accept(struct conn *c, const struct hello_args *a)
{
	conn_said_hello(c);
	conn_set_deadline(c, 0);
	c->role = strcmp(a->role, "master") == 0 ? ROLE_MASTER : ROLE_INSPECTOR;
	if (a->name)
		c->name = strdup(a->name);
	c->peer.max_send = a->settings.max_message_size;
	herd__peer_set_heartbeat(
	    &c->peer, a->settings.heartbeat_interval_ms, a->settings.heartbeat_timeout_ms);
	log_debug("connection %llu: hello from %s uid %u pid %d (%s)",
	    (unsigned long long)c->serial, a->role, (unsigned)c->cred.uid, (int)c->cred.pid,
	    c->name ? c->name : "-");
}

/* hello {version, role, name?, settings?, init?} */
void
h_hello(struct conn *c, json_t *id, json_t *params)
{
	struct hello_args a;
	json_t *eff;

	if (c->hello) {
		conn_reply_error(c, id, HERD_E_INVALID_REQUEST, NULL, "hello was already done");
		return;
	}
	if (hello_parse(c, id, params, &a) < 0 || hello_permitted(c, id) < 0)
		return;
	hello_accept(c, &a);
	eff =
	    json_pack("{s:I, s:I, s:I}", "max_message_size", (json_int_t)c->peer.reader.max_message,
	        "heartbeat_interval_ms", (json_int_t)c->peer.hb_interval_ms, "heartbeat_timeout_ms",
	        (json_int_t)c->peer.hb_timeout_ms);
	conn_reply(c, id,
	    json_pack("{s:i, s:s, s:i, s:I, s:I, s:o}", "version", HERD_PROTOCOL_VERSION, "server",
	        "herdd", "pid", (int)herdd.pid, "uid", (json_int_t)c->cred.uid, "connection",
	        (json_int_t)c->serial, "settings", eff));
}

/* ping {} -> {} */
void
h_ping(struct conn *c, json_t *id, json_t *params)
{
	if (dispatch_unpack(c, id, params, "{}") < 0)
		return;
	conn_reply(c, id, json_object());
}
