/* SPDX-License-Identifier: MIT */
/*
 * herdd's side of a worker's private channel (fd 3, PROTOCOL.md section 5):
 * hello, ready or init_failed, heartbeats, failure reports and connection
 * counts from the worker; the in-band shutdown from herdd. The worker runs
 * with its owner's credentials, so everything it says is checked like any
 * other untrusted input.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

/* How long a worker that closed its channel has to exit before SIGKILL. */
#define CHANNEL_EOF_KILL_S 0.5

/* hello {version, role: "worker", pid?}: the answer carries what the worker needs to start. */
static void
ch_hello(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	json_int_t version = 0, pid = 0;
	const char *role = NULL;

	if (c->hello) {
		conn_reply_error(c, m->id, HERD_E_INVALID_REQUEST, NULL, "hello was already done");
		return;
	}
	if (dispatch_unpack(c, m->id, m->params, "{s:I, s:s, s?I}", "version", &version, "role",
	        &role, "pid", &pid) < 0)
		return;
	if (version != HERD_PROTOCOL_VERSION) {
		conn_reply_error(c, m->id, HERD_E_VERSION_MISMATCH,
		    json_pack("{s:[i]}", "supported", HERD_PROTOCOL_VERSION),
		    "protocol version %lld is not supported", (long long)version);
		conn_close(c);
		return;
	}
	if (strcmp(role, "worker") != 0) {
		conn_reply_error(
		    c, m->id, HERD_E_INVALID_PARAMS, NULL, "the channel's role is \"worker\"");
		return;
	}
	if (pid && pid != w->pid)
		log_warn("worker %s: channel hello from pid %lld, expected %d", w->id,
		    (long long)pid, (int)w->pid);
	c->hello = true;
	conn_reply(c, m->id,
	    json_pack("{s:s, s:s?, s:s, s:O, s:O, s:s, s:I, s:I, s:I}", "id", w->id, "name",
	        w->name, "socket", w->socket, "init", w->init ? w->init : json_null(), "settings",
	        w->settings, "shutdown_on", proto_shutdown_on_name(w->shutdown_on),
	        "connection_timeout_ms", (json_int_t)w->connection_timeout_ms,
	        "heartbeat_interval_ms", (json_int_t)w->hb_interval_ms, "heartbeat_timeout_ms",
	        (json_int_t)w->hb_timeout_ms));
	/* Handed over once and shown nowhere: a big init must not live as long as the record. */
	json_decref(w->init);
	json_decref(w->settings);
	w->init = w->settings = NULL;
	sup_heartbeat_start(w);
}

/* ready {functions?}: the worker serves; the master waits for this. */
static void
ch_ready(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	struct proto_error err;
	json_t *functions = NULL;

	if (proto_unpack(m->params, &err, "{s?o}", "functions", &functions) < 0 ||
	    (functions && !json_is_array(functions))) {
		conn_reply_error(c, m->id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: functions must be an array");
		return;
	}
	if (w->state != PROTO_STATE_STARTING) {
		conn_reply_error(c, m->id, HERD_E_INVALID_REQUEST, NULL, "the worker is %s",
		    proto_state_name(w->state));
		return;
	}
	/*
	 * Kept as text, parsed again by inspect: a tree costs about ten times
	 * more. herd's encoder writes jansson's compact bytes in a fraction of
	 * its time (json_dumps was a sixth of herdd's work for a spawn).
	 */
	free(w->functions);
	w->functions = functions ? proto_json_dumps(functions) : NULL;
	/* The master waits for this; the worker already serves and need not. */
	sup_worker_ready(w);
	conn_reply(c, m->id, json_object());
}

/* The worker said it is exiting: why goes to the log and to its record. */
static void
ch_exiting(struct worker *w, enum proto_reason reason, const char *message)
{
	log_info("worker %s: %s: %.*s", w->id, proto_reason_name(reason),
	    proto_text_prec(message, 200), message);
	sup_expect_exit(w, reason, message);
}

/* init_failed {message}: the worker's start-up failed and it exits. */
static void
ch_init_failed(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	const char *message = NULL;

	if (dispatch_unpack(c, m->id, m->params, "{s:s}", "message", &message) < 0)
		return;
	conn_reply(c, m->id, json_object());
	ch_exiting(w, PROTO_REASON_INIT_FAILED, message);
}

/* heartbeat {served?} */
static void
ch_heartbeat(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	struct proto_error err;
	json_int_t served = 0;

	if (proto_unpack(m->params, &err, "{s?I}", "served", &served) == 0 && served >= 0)
		w->served = (uint64_t)served;
	w->last_heartbeat_ms = now_ms();
}

/* failure {message}: herd_worker_fail() in the worker, which exits. */
static void
ch_failure(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	struct proto_error err;
	const char *message = NULL;

	if (proto_unpack(m->params, &err, "{s:s}", "message", &message) < 0)
		message = "the worker reported a failure";
	ch_exiting(w, PROTO_REASON_FAILED, message);
}

/* connection {open}: the worker's client connections, for shutdown_on connection_closed. */
static void
ch_connection(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	struct proto_error err;
	json_int_t open = 0;

	if (proto_unpack(m->params, &err, "{s:I}", "open", &open) < 0)
		return;
	if (open > 0) {
		w->had_connection = true;
		ev_timer_stop(herdd.loop, &w->conn_timer);
	} else if (w->had_connection && w->shutdown_on == PROTO_SHUTDOWN_CONNECTION_CLOSED) {
		/* The worker exits by itself now; herdd makes sure it does. */
		sup_backup_kill(w, PROTO_REASON_KILLED_ORPHAN, herdd.cfg.grace_ms / 1000.0);
	}
}

#define CH_REQUEST    0x1 /* a request (an id, a reply); otherwise a notification */
#define CH_NEED_HELLO 0x2 /* refused (and the channel closed) before hello */

struct ch_method {
	const char *name;
	void (*handler)(struct conn *c, struct worker *w, const struct proto_msg *m);
	unsigned flags;
};

/* What a worker may say on its channel (PROTOCOL.md section 5); a table like dispatch.c's: data. */
static const struct ch_method ch_methods[] = {
	{ "hello", ch_hello, CH_REQUEST },
	{ "ready", ch_ready, CH_REQUEST | CH_NEED_HELLO },
	{ "init_failed", ch_init_failed, CH_REQUEST | CH_NEED_HELLO },
	{ "heartbeat", ch_heartbeat, CH_NEED_HELLO },
	{ "failure", ch_failure, CH_NEED_HELLO },
	{ "connection", ch_connection, CH_NEED_HELLO },
};

static const struct ch_method *
ch_find(const char *name, unsigned kind)
{
	for (size_t i = 0; i < sizeof(ch_methods) / sizeof(ch_methods[0]); i++) {
		if ((ch_methods[i].flags & CH_REQUEST) == kind && !strcmp(ch_methods[i].name, name))
			return &ch_methods[i];
	}
	return NULL;
}

static void
channel_request(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	const struct ch_method *meth = ch_find(m->method, CH_REQUEST);

	if (conn_request_gate(c, m, meth, meth && (meth->flags & CH_NEED_HELLO), false))
		meth->handler(c, w, m);
}

static void
channel_notification(struct conn *c, struct worker *w, const struct proto_msg *m)
{
	const struct ch_method *meth = ch_find(m->method, 0);

	/* Before hello nothing counts; an unknown notification is ignored. */
	if (c->hello && meth)
		meth->handler(c, w, m);
}

static void
channel_message(struct conn *c, json_t *msg)
{
	struct worker *w = c->worker;
	struct proto_error err;
	struct proto_msg m;

	if (!w)
		return;
	if (proto_msg_parse(msg, &m, &err) < 0) {
		conn_reply_error(c, NULL, err.code, NULL, "%s", err.text);
		return;
	}
	if (m.kind == PROTO_REQUEST)
		channel_request(c, w, &m);
	else if (m.kind == PROTO_NOTIFICATION)
		channel_notification(c, w, &m);
}

/*
 * EOF or a framing error from the worker: it is exiting or broken. A worker
 * that is still there shortly after is SIGKILLed (PROTOCOL.md 5.1); the short
 * wait lets one that closes fd 3 on its way out finish exiting by itself.
 */
static void
channel_closed(struct conn *c)
{
	struct worker *w = c->worker;

	if (!w || w->reaped)
		return;
	log_debug("worker %s: channel closed", w->id);
	sup_backup_kill(w, PROTO_REASON_NONE, CHANNEL_EOF_KILL_S);
}

const struct conn_ops channel_ops = {
	.message = channel_message,
	.closed = channel_closed,
};

/* Asks the worker to stop (PROTOCOL.md 5.5). */
void
channel_send_shutdown(struct worker *w)
{
	if (w->channel && !w->channel->peer.closed && w->channel->hello)
		conn_send(w->channel, proto_notification("shutdown", json_object()));
}
