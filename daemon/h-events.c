/* SPDX-License-Identifier: MIT */
/*
 * Events and counters: "subscribe", "unsubscribe" and "stats" (the event
 * stream itself is events.c).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "herdd.h"

/*
 * subscribe {all?, since?, instance?} -> {instance, seq}: the reply comes
 * first, then the events after since that the ring still holds, then live.
 */
void
h_subscribe(struct conn *c, json_t *id, json_t *params)
{
	bool has_since = json_object_get(params, "since") != NULL;
	uint64_t last = events_last_seq();
	const char *instance = NULL;
	json_int_t since = 0;
	int all = 0;

	if (dispatch_unpack(c, id, params, "{s?b, s?I, s?s}", "all", &all, "since", &since,
	        "instance", &instance) < 0)
		return;
	if (since < 0 || (instance && !has_since)) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "since must be a seq (0 or more), and instance comes with since");
		return;
	}
	/* Another instance's seqs may be anything; ours stop at the last. */
	if ((uint64_t)since > last && (!instance || strcmp(instance, events_instance()) == 0)) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS,
		    json_pack("{s:I}", "seq", (json_int_t)last),
		    "since %lld is past the last event, %llu", (long long)since,
		    (unsigned long long)last);
		return;
	}
	c->subscribed_all = all;
	if (conn_reply(c, id,
	        json_pack("{s:s, s:I}", "instance", events_instance(), "seq", (json_int_t)last)) <
	    0)
		return;
	events_subscribe(c, has_since, (uint64_t)since, instance);
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
	json_object_set_new(r, "events", events_stats_json());
	conn_reply(c, id, r);
}
