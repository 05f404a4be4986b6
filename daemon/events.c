/* SPDX-License-Identifier: MIT */
/*
 * The event stream: every event gets the next sequence number of this herdd
 * instance and goes into a bounded ring (the last --event-ring events, at most
 * EVENT_RING_BYTES of them), which is also every subscriber's queue.
 *
 * A connection has a cursor, the last seq it was given or passed over. Live
 * events go straight out while its output queue is short; past
 * conn_feed_full() it is "behind": nothing more is queued for it, and when
 * its output drains it is fed again from the ring, after its cursor. What
 * left the ring meanwhile is announced by one "gap" event with the count, so
 * a subscriber that stops reading costs herdd a ring slot per event, never
 * an unbounded queue, and learns what it missed instead of being closed.
 * The same path replays a subscribe's "since".
 *
 * An owner's own events do not wait on the cursor: they are queued at once,
 * as before, bounded only by the connection's output cap.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "herdd.h"

/* Lines of captured stderr carried by every event. */
#define EVENT_TAIL_LINES 20
/* Bytes of events the ring holds at most, whatever --event-ring says. */
#define EVENT_RING_BYTES (32u << 20)

struct event_rec {
	uint64_t seq;
	uint64_t owner_serial; /* the connection that owned the worker */
	uid_t uid; /* the worker's */
	size_t bytes;
	json_t *params; /* the notification's params, shared by every send */
};

static struct {
	struct event_rec *recs;
	unsigned cap, head, count; /* head: the oldest */
	size_t bytes;
	uint64_t last_seq; /* the last seq given; 0: none yet */
	char instance[33];
} ring;

/* Starts the ring with a fresh instance id, so seqs of another herdd never pass for ours. */
void
events_init(void)
{
	unsigned char raw[16];
	size_t i;

	events_free();
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		/* No entropy yet: time and pid still tell two herdds apart. */
		uint64_t t = (uint64_t)now_ms() ^ ((uint64_t)herdd.pid << 32);

		memcpy(raw, &t, sizeof(t));
		memcpy(raw + 8, &herdd.started_ms, sizeof(t));
	}
	for (i = 0; i < sizeof(raw); i++)
		snprintf(ring.instance + 2 * i, 3, "%02x", raw[i]);
	ring.cap = herdd.cfg.event_ring ? herdd.cfg.event_ring : 1;
	ring.recs = calloc(ring.cap, sizeof(*ring.recs));
	if (!ring.recs)
		fatal("out of memory for %u events", ring.cap);
}

static void
ring_drop_oldest(void)
{
	struct event_rec *r = &ring.recs[ring.head];

	ring.bytes -= r->bytes;
	json_decref(r->params);
	r->params = NULL;
	ring.head = (ring.head + 1) % ring.cap;
	ring.count--;
}

/* Releases every event held. */
void
events_free(void)
{
	while (ring.count)
		ring_drop_oldest();
	free(ring.recs);
	ring.recs = NULL;
	ring.cap = 0;
}

/* herdd's instance id: 32 hex digits. */
const char *
events_instance(void)
{
	return ring.instance;
}

/* The seq of the last event (0: none yet). */
uint64_t
events_last_seq(void)
{
	return ring.last_seq;
}

/* The oldest seq the ring holds; last_seq + 1 when it is empty. */
static uint64_t
ring_oldest(void)
{
	return ring.last_seq + 1 - ring.count;
}

static const struct event_rec *
ring_at(uint64_t seq)
{
	return &ring.recs[(ring.head + (seq - ring_oldest())) % ring.cap];
}

static bool
wants(const struct conn *c, uint64_t owner_serial, uid_t uid)
{
	if (c->peer.closed || !c->hello)
		return false;
	if (c->serial == owner_serial)
		return true;
	return c->subscribed_all && dispatch_may_see(c, uid);
}

/* Tells c that events first..last are gone. Returns conn_send()'s result. */
static int
send_gap(struct conn *c, uint64_t first, uint64_t last, const char *reason)
{
	herdd.stats.events_lost += last - first + 1;
	return conn_send(c,
	    proto_notification("event",
	        json_pack("{s:s, s:s, s:I, s:I, s:I, s:s}", "event", "gap", "instance",
	            ring.instance, "lost", (json_int_t)(last - first + 1), "first",
	            (json_int_t)first, "last", (json_int_t)last, "reason", reason)));
}

/*
 * Feeds c from the ring after its cursor until it is caught up (it is live
 * again) or its queue is full again (it stays behind until the next drain).
 */
static void
catch_up(struct conn *c)
{
	uint64_t seq, first, oldest = ring_oldest();

	/* A send may write at once, and a write that drains calls us again. */
	if (c->ev_feeding)
		return;
	c->ev_feeding = true;
	conn_ref(c);
	if (c->ev_cursor + 1 < oldest) {
		first = c->ev_cursor + 1;
		c->ev_cursor = oldest - 1;
		if (send_gap(c, first, oldest - 1, c->ev_reason ? c->ev_reason : "fell_behind") < 0)
			goto out;
	}
	for (seq = c->ev_cursor + 1; seq <= ring.last_seq; seq++) {
		const struct event_rec *r = ring_at(seq);

		if (conn_feed_full(c))
			goto out;
		c->ev_cursor = seq;
		/* An owner's own events went out live. */
		if (c->serial == r->owner_serial || !wants(c, r->owner_serial, r->uid))
			continue;
		if (conn_send(c, proto_notification("event", json_incref(r->params))) < 0)
			goto out;
	}
	c->ev_behind = false;
out:
	c->ev_feeding = false;
	conn_unref(c);
}

/* The ring as "stats" shows it (a new reference). */
json_t *
events_stats_json(void)
{
	return json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "instance", ring.instance, "seq",
	    (json_int_t)ring.last_seq, "held", (json_int_t)ring.count, "bytes",
	    (json_int_t)ring.bytes, "limit", (json_int_t)ring.cap, "lost",
	    (json_int_t)herdd.stats.events_lost);
}

/* c's output drained: a subscriber that was behind is fed again. */
void
events_drained(struct conn *c)
{
	if (c->ev_behind && !c->peer.closed && c->hello)
		catch_up(c);
}

/*
 * Starts c's stream after since (the seq it saw last, of instance; NULL: ours),
 * replaying what the ring still holds. A different instance's seqs mean
 * nothing here: everything before the ring's oldest is reported lost.
 */
void
events_subscribe(struct conn *c, bool replay, uint64_t since, const char *instance)
{
	c->ev_behind = false;
	c->ev_cursor = ring.last_seq;
	if (!replay)
		return;
	c->ev_reason = "since";
	if (instance && strcmp(instance, ring.instance) != 0) {
		c->ev_reason = "instance";
		since = 0;
	}
	c->ev_cursor = since;
	c->ev_behind = true;
	catch_up(c);
	c->ev_reason = "fell_behind";
}

static void
ring_push_rec(uint64_t owner_serial, uid_t uid, json_t *params)
{
	struct event_rec *r;
	/* herd's encoder, the one that sends it: jansson's took a fifth of a spawn's work in herdd. */
	char *text = proto_json_dumps(params);
	size_t bytes = (text ? strlen(text) : 0) + sizeof(*r);

	free(text);

	/* After events_free(): herdd is stopping, nobody can ask for a replay. */
	if (!ring.cap)
		return;
	while (ring.count && (ring.count == ring.cap || ring.bytes + bytes > EVENT_RING_BYTES))
		ring_drop_oldest();
	r = &ring.recs[(ring.head + ring.count) % ring.cap];
	r->seq = ring.last_seq;
	r->owner_serial = owner_serial;
	r->uid = uid;
	r->bytes = bytes;
	r->params = json_incref(params);
	ring.bytes += bytes;
	ring.count++;
}

/* Sends event E about w to its owner and watchers, and keeps it in the ring. */
void
events_emit(struct worker *w, enum proto_event event)
{
	const char *name = proto_event_name(event);
	struct conn *c, *next;
	json_t *params;

	log_debug("worker %s: event %s", w->id, name);
	params = json_pack("{s:s, s:I, s:s, s:o, s:s?, s:o}", "event", name, "seq",
	    (json_int_t)(ring.last_seq + 1), "instance", ring.instance, "worker",
	    sup_worker_json(w), "message", w->message, "stderr_tail",
	    event != PROTO_EVENT_READY && event != PROTO_EVENT_RESTARTED
	        ? capture_tail(&w->cap[1], EVENT_TAIL_LINES)
	        : json_array());
	if (!params) {
		log_error("out of memory building event %s", name);
		return;
	}
	ring.last_seq++;
	ring_push_rec(w->owner_serial, w->uid, params);
	for (c = TAILQ_FIRST(&herdd.conns); c; c = next) {
		bool own = c->serial == w->owner_serial;

		/* Sending may close c (output overflow), which unlinks it. */
		next = TAILQ_NEXT(c, link);
		if (!wants(c, w->owner_serial, w->uid))
			continue;
		if (!own && (c->ev_behind || conn_feed_full(c))) {
			/* The ring holds it until c reads again. */
			c->ev_behind = true;
			continue;
		}
		if (!c->ev_behind)
			c->ev_cursor = ring.last_seq;
		conn_send(c, proto_notification("event", json_incref(params)));
	}
	json_decref(params);
}

/* The ring for a reexec (reexec-state.c): the instance, the last seq and every event held. */
json_t *
events_save(void)
{
	json_t *recs = json_array();

	for (unsigned i = 0; recs && i < ring.count; i++) {
		const struct event_rec *r = &ring.recs[(ring.head + i) % ring.cap];

		json_array_append_new(recs,
		    json_pack(
		        "[I, I, O]", (json_int_t)r->owner_serial, (json_int_t)r->uid, r->params));
	}
	return json_pack("{s:s, s:I, s:o}", "instance", ring.instance, "last_seq",
	    (json_int_t)ring.last_seq, "events", recs);
}

/*
 * Takes over a predecessor's ring (events_save()'s object, checked): the same
 * instance, seqs continuing, the events it held replayable. Returns 0 or -EINVAL.
 */
int
events_load(json_t *saved)
{
	const char *instance;
	json_int_t last, owner, uid;
	json_t *recs, *rec, *params;
	size_t i, n;

	if (json_unpack(saved, "{s:s, s:I, s:o}", "instance", &instance, "last_seq", &last,
	        "events", &recs) < 0 ||
	    strlen(instance) != sizeof(ring.instance) - 1 || !json_is_array(recs) || last < 0)
		return -EINVAL;
	n = json_array_size(recs);
	if ((json_int_t)n > last)
		return -EINVAL;
	snprintf(ring.instance, sizeof(ring.instance), "%s", instance);
	json_array_foreach(recs, i, rec) {
		if (json_unpack(rec, "[I, I, o]", &owner, &uid, &params) < 0)
			return -EINVAL;
		ring.last_seq = (uint64_t)last - n + i + 1;
		ring_push_rec((uint64_t)owner, (uid_t)uid, params);
	}
	ring.last_seq = (uint64_t)last;
	return 0;
}
