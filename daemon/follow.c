/* SPDX-License-Identifier: MIT */
/*
 * "logs" with "follow": connections that asked for a captured stream's new
 * lines get them as "log" notifications, one per read of the pipe, and a
 * last one with "end":true when the pipe closes (the worker and whatever
 * inherited its stream are gone). A follower whose output is not drained
 * (conn_feed_full) loses lines, counted in the next notification's
 * "dropped", so herdd's memory does not grow for it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

struct follower {
	LIST_ENTRY(follower) link;
	struct conn *c; /* a reference */
	uint64_t dropped; /* lines it could not take since its last notification */
};

static const char *
stream_name(const struct capture *cap)
{
	return cap == &cap->worker->cap[0] ? "stdout" : "stderr";
}

static void
follower_free(struct follower *f)
{
	LIST_REMOVE(f, link);
	conn_unref(f->c);
	free(f);
}

/* Adds c to cap's followers. Returns 0, -ENOMEM or -EMFILE (FOLLOW_MAX reached). */
int
follow_add(struct capture *cap, struct conn *c)
{
	struct follower *f, *next;
	unsigned n = 0;

	/* Connections gone since the last line leave now. */
	for (f = LIST_FIRST(&cap->followers); f; f = next) {
		next = LIST_NEXT(f, link);
		if (f->c->peer.closed)
			follower_free(f);
		else
			n++;
	}
	if (n >= FOLLOW_MAX)
		return -EMFILE;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->c = conn_ref(c);
	LIST_INSERT_HEAD(&cap->followers, f, link);
	return 0;
}

/* A new line for the followers (the next follow_flush() sends it). */
void
follow_line(struct capture *cap, const char *line)
{
	if (LIST_EMPTY(&cap->followers))
		return;
	if (!cap->fresh)
		cap->fresh = json_array();
	if (!cap->fresh || json_array_append_new(cap->fresh, json_string(line)) < 0) {
		struct follower *f;

		LIST_FOREACH(f, &cap->followers, link)
			f->dropped++;
	}
}

static void
send_lines(struct capture *cap, json_t *lines, bool end)
{
	struct follower *f, *next;

	for (f = LIST_FIRST(&cap->followers); f; f = next) {
		/* Sending may close f->c, never free f: only we do. */
		next = LIST_NEXT(f, link);
		if (f->c->peer.closed) {
			follower_free(f);
			continue;
		}
		if (!end && conn_feed_full(f->c)) {
			f->dropped += json_array_size(lines);
			continue;
		}
		conn_send(f->c,
		    proto_notification("log",
		        json_pack("{s:s, s:s, s:O, s:I, s:b}", "id", cap->worker->id, "stream",
		            stream_name(cap), "lines", lines, "dropped", (json_int_t)f->dropped,
		            "end", end)));
		f->dropped = 0;
	}
}

/* Sends the lines read since the last flush. */
void
follow_flush(struct capture *cap)
{
	json_t *lines = cap->fresh;

	if (!lines)
		return;
	cap->fresh = NULL;
	send_lines(cap, lines, false);
	json_decref(lines);
}

/* The stream ended: the followers get what is left, "end", and are let go. */
void
follow_end(struct capture *cap)
{
	json_t *lines = cap->fresh ? cap->fresh : json_array();

	cap->fresh = NULL;
	if (!LIST_EMPTY(&cap->followers) && lines)
		send_lines(cap, lines, true);
	json_decref(lines);
	while (!LIST_EMPTY(&cap->followers))
		follower_free(LIST_FIRST(&cap->followers));
}
