/* SPDX-License-Identifier: MIT */
/*
 * Events and counters: "subscribe", "unsubscribe", "stats", and the "event"
 * notifications sent to a worker's owner and to watchers.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "herdd.h"

/* Lines of captured stderr carried by every event. */
#define EVENT_TAIL_LINES 20

/* subscribe {all?} -> {} */
void
h_subscribe(struct conn *c, json_t *id, json_t *params)
{
	int all = 0;

	if (dispatch_unpack(c, id, params, "{s?b}", "all", &all) < 0)
		return;
	c->subscribed_all = all;
	conn_reply(c, id, json_object());
}

/* unsubscribe {} -> {} */
void
h_unsubscribe(struct conn *c, json_t *id, json_t *params)
{
	if (dispatch_unpack(c, id, params, "{}") < 0)
		return;
	c->subscribed_all = false;
	conn_reply(c, id, json_object());
}

/* stats {} -> counters */
void
h_stats(struct conn *c, json_t *id, json_t *params)
{
	const struct herdd_stats *s = &herdd.stats;
	unsigned masters = conn_count_masters();
	json_t *r, *limits;

	if (dispatch_unpack(c, id, params, "{}") < 0)
		return;
	limits = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "connections",
	    (json_int_t)s->limit_connections, "connections_per_uid",
	    (json_int_t)s->limit_connections_per_uid, "unauthenticated_connections",
	    (json_int_t)s->limit_unauthenticated, "unauthenticated_connections_per_uid",
	    (json_int_t)s->limit_unauthenticated_per_uid, "bytes_per_uid",
	    (json_int_t)s->limit_bytes_per_uid, "workers", (json_int_t)s->limit_workers,
	    "workers_per_uid", (json_int_t)s->limit_workers_per_uid, "workers_per_master",
	    (json_int_t)s->limit_workers_per_master, "pending_requests",
	    (json_int_t)s->limit_pending, "output_bytes", (json_int_t)s->limit_output, "fds",
	    (json_int_t)s->limit_fds);
	r = sup_stats_json();
	if (!r || !limits) {
		json_decref(r);
		json_decref(limits);
		conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
		return;
	}
	json_object_set_new(r, "uptime_ms", json_integer(now_ms() - herdd.started_ms));
	json_object_set_new(r, "pid", json_integer(herdd.pid));
	json_object_set_new(r, "cgroup", cgroup_json());
	json_object_set_new(r, "containment", contain_json());
	json_object_set_new(r, "masters", json_integer(masters));
	json_object_set_new(r, "connections", json_integer(herdd.nconns));
	json_object_set_new(
	    r, "connections_accepted", json_integer((json_int_t)s->connections_accepted));
	json_object_set_new(r, "spawns", json_integer((json_int_t)s->spawns));
	json_object_set_new(r, "bytes_in", json_integer((json_int_t)s->bytes_in));
	json_object_set_new(r, "bytes_out", json_integer((json_int_t)s->bytes_out));
	json_object_set_new(r, "limits_hit", limits);
	conn_reply(c, id, r);
}

static bool
wants(const struct conn *c, const struct worker *w)
{
	if (c->peer.closed || !c->hello)
		return false;
	if (c->serial == w->owner_serial)
		return true;
	return c->subscribed_all && dispatch_may_see(c, w->uid);
}

/* Sends event E about w to its owner and watchers. */
void
events_emit(struct worker *w, enum proto_event event)
{
	const char *name = proto_event_name(event);
	json_t *params = NULL;
	struct conn *c, *next;

	log_debug("worker %s: event %s", w->id, name);
	for (c = TAILQ_FIRST(&herdd.conns); c; c = next) {
		/* Sending may close c (output overflow), which unlinks it. */
		next = TAILQ_NEXT(c, link);
		if (!wants(c, w))
			continue;
		if (!params) {
			params = json_pack("{s:s, s:o, s:s?, s:o}", "event", name, "worker",
			    sup_worker_json(w), "message", w->message, "stderr_tail",
			    event != PROTO_EVENT_READY ? capture_tail(&w->cap[1], EVENT_TAIL_LINES)
			                               : json_array());
			if (!params) {
				log_error("out of memory building event %s", name);
				return;
			}
		}
		conn_send(c, proto_notification("event", json_incref(params)));
	}
	json_decref(params);
}
