/* SPDX-License-Identifier: MIT */
/*
 * Requests about existing workers: inspect, logs, shutdown, kill (list: h-list.c).
 * A worker of another uid answers worker_not_found, exactly like an id that
 * never existed, so ids do not leak across users.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

#define MAX_LOG_LINES 1000

static void
not_found(struct conn *c, json_t *id, const char *wid)
{
	conn_reply_error(c, id, HERD_E_WORKER_NOT_FOUND, json_pack("{s:s}", "id", wid),
	    "no worker \"%.*s\"", proto_text_prec(wid, 64), wid);
}

/*
 * The worker a request names by id and, if it says one, incarnation; or
 * NULL, answered worker_not_found, when no such worker or incarnation is
 * there (a restart replaced it).
 */
static struct worker *
find_named(struct conn *c, json_t *id, const char *wid, json_int_t incarnation)
{
	struct worker *w = sup_find(c, wid);

	if (!w || !restart_is_current(w, incarnation)) {
		not_found(c, id, wid);
		return NULL;
	}
	return w;
}

/* inspect {id, incarnation?} -> WORKER */
void
h_inspect(struct conn *c, json_t *id, json_t *params)
{
	json_int_t incarnation = 0;
	const char *wid;
	struct worker *w;
	json_t *o;

	if (dispatch_unpack(c, id, params, "{s:s, s?I}", "id", &wid, "incarnation", &incarnation) <
	    0)
		return;
	w = find_named(c, id, wid, incarnation);
	if (!w)
		return;
	o = sup_worker_json(w);
	if (o && w->functions)
		json_object_set_new(o, "functions", json_loads(w->functions, 0, NULL));
	conn_reply(c, id, o);
}

/* logs {id, stream?, lines?} -> {lines, dropped} */
void
h_logs(struct conn *c, json_t *id, json_t *params)
{
	const char *wid, *stream = "stderr";
	json_int_t lines = 100;
	struct worker *w;
	int follow = 0, i, r;
	json_t *res;

	if (dispatch_unpack(c, id, params, "{s:s, s?s, s?I, s?b}", "id", &wid, "stream", &stream,
	        "lines", &lines, "follow", &follow) < 0)
		return;
	if (!strcmp(stream, "stdout")) {
		i = 0;
	} else if (!strcmp(stream, "stderr")) {
		i = 1;
	} else {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: stream must be \"stdout\" or \"stderr\"");
		return;
	}
	if (lines < 1 || lines > MAX_LOG_LINES) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: lines must be between 1 and %d", MAX_LOG_LINES);
		return;
	}
	w = sup_find(c, wid);
	if (!w) {
		not_found(c, id, wid);
		return;
	}
	if (w->out[i].kind != OUT_CAPTURE) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: worker %s's %s is not captured", w->id, stream);
		return;
	}
	res = json_pack("{s:o, s:I}", "lines", capture_tail(&w->cap[i], (unsigned)lines), "dropped",
	    (json_int_t)w->cap[i].dropped);
	if (!follow || !res) {
		conn_reply(c, id, res);
		return;
	}
	/* Following a stream that already ended: the reply says so, nothing follows. */
	r = w->cap[i].fd >= 0 ? follow_add(&w->cap[i], c) : 0;
	if (r < 0) {
		json_decref(res);
		if (r == -EMFILE)
			conn_reply_error(c, id, HERD_E_LIMIT_EXCEEDED,
			    json_pack("{s:s, s:i}", "limit", "followers", "value", FOLLOW_MAX),
			    "worker %s's %s has %d followers already", w->id, stream, FOLLOW_MAX);
		else
			conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
		return;
	}
	json_object_set_new(res, "following", json_boolean(w->cap[i].fd >= 0));
	conn_reply(c, id, res);
}

/* shutdown {id, incarnation?, grace_ms?} -> WORKER once reaped */
void
h_shutdown(struct conn *c, json_t *id, json_t *params)
{
	json_int_t grace = PROTO_SHUTDOWN_GRACE_DEFAULT_MS, incarnation = 0;
	const char *wid;
	struct worker *w;

	if (dispatch_unpack(c, id, params, "{s:s, s?I, s?I}", "id", &wid, "grace_ms", &grace,
	        "incarnation", &incarnation) < 0)
		return;
	if (grace < 0 || grace > PROTO_SHUTDOWN_GRACE_MAX_MS) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: grace_ms must be between 0 and %u",
		    PROTO_SHUTDOWN_GRACE_MAX_MS);
		return;
	}
	w = find_named(c, id, wid, incarnation);
	if (!w)
		return;
	/* Between incarnations there is no process to stop: the restart is called off. */
	restart_cancel(w, PROTO_REASON_SHUTDOWN);
	if (sup_state_ended(w->state)) {
		conn_reply(c, id, sup_worker_json(w));
		return;
	}
	if (sup_add_waiter(w, c, id, false) < 0) {
		conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
		return;
	}
	sup_stop(w, PROTO_REASON_SHUTDOWN, (unsigned)grace);
}

/* Parses "TERM", "SIGTERM" or a number 1..64. Returns the signal or -EINVAL. */
static int
parse_signal(json_t *v)
{
	const char *s;
	int sig;

	if (!v)
		return SIGTERM;
	if (json_is_integer(v)) {
		json_int_t n = json_integer_value(v);

		return n >= 1 && n <= 64 && n < NSIG ? (int)n : -EINVAL;
	}
	if (!json_is_string(v))
		return -EINVAL;
	s = json_string_value(v);
	if (!strncmp(s, "SIG", 3))
		s += 3;
	for (sig = 1; sig < NSIG; sig++) {
		const char *abbrev = sigabbrev_np(sig);

		if (abbrev && !strcmp(abbrev, s))
			return sig;
	}
	return -EINVAL;
}

/* kill {id, incarnation?, signal?} -> {} */
void
h_kill(struct conn *c, json_t *id, json_t *params)
{
	json_int_t incarnation = 0;
	json_t *sigv = NULL;
	const char *wid;
	struct worker *w;
	int sig;

	if (dispatch_unpack(c, id, params, "{s:s, s?o, s?I}", "id", &wid, "signal", &sigv,
	        "incarnation", &incarnation) < 0)
		return;
	sig = parse_signal(sigv);
	if (sig < 0) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: signal must be a name like \"TERM\" or a number");
		return;
	}
	w = find_named(c, id, wid, incarnation);
	if (!w)
		return;
	/* An exited worker (or one between incarnations) has no process to signal. */
	if (!sup_is_live(w) || w->reaped) {
		not_found(c, id, wid);
		return;
	}
	/* An operator's kill is its own reason: the owner is told who ended its worker. */
	if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT || sig == SIGKILL) {
		if (!w->reason && !w->message &&
		    asprintf(&w->message, "SIG%s sent by a kill request (pid %d, uid %u)",
		        sigabbrev_np(sig), (int)c->cred.pid, (unsigned)c->cred.uid) < 0)
			w->message = NULL;
		sup_mark_stopping(w, PROTO_REASON_KILLED);
	}
	sup_signal(w, sig);
	log_info("worker %s pid %d: signal %d sent by uid %u", w->id, (int)w->pid, sig,
	    (unsigned)c->cred.uid);
	conn_reply(c, id, json_object());
}
