/* SPDX-License-Identifier: MIT */
/*
 * list {all?, state?, name?, owner?, fields?} -> {workers: [...]}
 *
 * Filters and fields let a tool ask for less: herdd walks its records in
 * memory (figures are sampled, sample.c) and builds only the fields asked
 * for (worker-json.c), a slice at a turn of the loop. An unknown filter,
 * state or field is invalid_params, never silently ignored.
 */
#include <errno.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

/* Workers a list builds per turn of the loop (~2-3 us each with every field). */
#define LIST_SLICE 64

struct list_query {
	int all;
	unsigned states; /* a bit per state asked for; 0: live ones (and exited with all) */
	const char *name; /* a shell pattern (fnmatch), or NULL */
	json_int_t owner_uid, owner_pid, owner_connection; /* -1: any */
	uint64_t fields;
};

/* Replies invalid_params naming what was wrong; always returns -1. */
static int
bad_param(struct conn *c, json_t *id, const char *what, const char *value, const char *why)
{
	conn_reply_error(c, id, HERD_E_INVALID_PARAMS, json_pack("{s:s}", what, value),
	    "invalid params: %s \"%.*s\" %s", what, proto_text_prec(value, 64), value, why);
	return -1;
}

/* "state": a state's name or an array of them. */
static int
parse_states(struct conn *c, json_t *id, json_t *v, struct list_query *q)
{
	json_t *one = v;
	size_t i = 0;

	if (!v)
		return 0;
	if (json_is_array(v) && json_array_size(v) > 0)
		one = json_array_get(v, 0);
	for (;;) {
		int s = json_is_string(one) ? proto_state_from_name(json_string_value(one)) : -1;

		if (!json_is_string(one)) {
			conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
			    "invalid params: state must be a state's name or a non-empty array of "
			    "them");
			return -1;
		}
		if (s < 0)
			return bad_param(c, id, "state", json_string_value(one), "is no state");
		q->states |= 1u << s;
		if (!json_is_array(v) || ++i >= json_array_size(v))
			return 0;
		one = json_array_get(v, i);
	}
}

/* "fields": an array of WORKER field names. */
static int
parse_fields(struct conn *c, json_t *id, json_t *v, struct list_query *q)
{
	json_t *f;
	size_t i;

	if (!v)
		return 0;
	if (!json_is_array(v)) {
		conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: fields must be an array of field names");
		return -1;
	}
	q->fields = 0;
	json_array_foreach(v, i, f) {
		uint64_t bit = json_is_string(f) ? sup_worker_field(json_string_value(f)) : 0;

		if (!json_is_string(f)) {
			conn_reply_error(c, id, HERD_E_INVALID_PARAMS, NULL,
			    "invalid params: fields must be an array of field names");
			return -1;
		}
		if (!bit)
			return bad_param(
			    c, id, "field", json_string_value(f), "is no WORKER field");
		q->fields |= bit;
	}
	return 0;
}

/* Unpacks and checks every filter; replies and returns -1 on a bad one. */
static int
parse_query(struct conn *c, json_t *id, json_t *params, struct list_query *q)
{
	json_t *state = NULL, *owner = NULL, *fields = NULL;
	struct proto_error err;
	int r;

	*q = (struct list_query){ .owner_uid = -1,
		.owner_pid = -1,
		.owner_connection = -1,
		.fields = SUP_WORKER_ALL_FIELDS };
	if (dispatch_unpack(c, id, params, "{s?b, s?o, s?s, s?o, s?o}", "all", &q->all, "state",
	        &state, "name", &q->name, "owner", &owner, "fields", &fields) < 0)
		return -1;
	if (parse_states(c, id, state, q) < 0 || parse_fields(c, id, fields, q) < 0)
		return -1;
	if (!owner)
		return 0;
	r = proto_unpack(owner, &err, "{s?I, s?I, s?I}", "uid", &q->owner_uid, "pid", &q->owner_pid,
	    "connection", &q->owner_connection);
	if (r == -EINVAL)
		conn_reply_error(
		    c, id, HERD_E_INVALID_PARAMS, NULL, "invalid params: owner: %s", err.text);
	else if (r < 0)
		conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
	return r < 0 ? -1 : 0;
}

static bool
matches(const struct list_query *q, const struct worker *w)
{
	/* Listed once it has a pid, as when the spawn stopped the loop until it had one. */
	if (w->spawning)
		return false;
	if (q->states ? !(q->states & (1u << w->state)) : w->state == PROTO_STATE_EXITED && !q->all)
		return false;
	if (q->name && (!w->name || fnmatch(q->name, w->name, 0) != 0))
		return false;
	if (q->owner_uid >= 0 && (json_int_t)w->uid != q->owner_uid)
		return false;
	if (q->owner_pid >= 0 && (json_int_t)w->owner_pid != q->owner_pid)
		return false;
	return q->owner_connection < 0 ||
	    (w->owner && (json_int_t)w->owner_serial == q->owner_connection);
}

/*
 * A list of many workers is built a slice at a turn of the loop, like a
 * deferred connection's requests (conn.c), so one client listing a thousand
 * workers in a loop holds the loop for one slice at a time, not for the
 * whole list. The reply is written as text as it goes (worker-json.c) and
 * leaves once the walk reaches the end.
 */
struct list_job {
	LIST_ENTRY(list_job) link;
	struct conn *conn; /* a reference; its pending count includes the job */
	json_t *id;
	struct list_query q;
	char *name; /* q.name's copy: the params are gone after the handler */
	struct proto_wbuf text; /* the reply so far */
	size_t count; /* workers in it */
	struct worker *next; /* where the walk goes on; NULL: the end */
	bool waiting; /* for the connection's spawns in flight (list_spawned()) */
	ev_timer turn;
};

static LIST_HEAD(, list_job) jobs = LIST_HEAD_INITIALIZER(jobs);

static void
job_free(struct list_job *j)
{
	LIST_REMOVE(j, link);
	ev_timer_stop(herdd.loop, &j->turn);
	j->conn->pending--;
	conn_unref(j->conn);
	json_decref(j->id);
	free(j->text.start);
	free(j->name);
	free(j);
}

/* Starts the reply's text: everything before the first worker. */
static int
text_begin(struct proto_wbuf *b, const json_t *id)
{
	static const char head[] = "{\"jsonrpc\":\"2.0\",\"id\":",
	                  body[] = ",\"result\":{\"workers\":[";
	int r;

	proto_wbuf_heap(b);
	if ((r = proto_wbuf_put(b, head, sizeof(head) - 1)) < 0 ||
	    (r = proto_json_write(b, id, HERD_MAX_DEPTH, false)) < 0)
		return r;
	return proto_wbuf_put(b, body, sizeof(body) - 1);
}

/* How many matched records the walk's chase runs ahead of the one written. */
#define AHEAD 8

/*
 * Writes up to max of the workers from *next that c may see and q
 * matches. Returns 1 while more remain, 0 at the end, or -errno.
 *
 * A list walks records the loop has not touched since the last one, so
 * without help writing each is mostly waiting for memory: the next
 * record's address (the list's link), then a dozen lines of a record of a
 * kilobyte and its cached text elsewhere. So the walk's chase runs AHEAD
 * matched records ahead of the writer, one record a step: it asks for the
 * lines of the record it will look at next (worker-json.c), and for the
 * text of one it queues, and each wait overlaps the writing of a record
 * before instead of adding to it.
 */
static int
walk(struct conn *c, const struct list_query *q, struct proto_wbuf *b, size_t *count,
    struct worker **next, unsigned max)
{
	struct worker *chase = *next, *queue[AHEAD];
	int64_t now = now_ms();
	unsigned head = 0, queued = 0, written = 0;
	int r = 0;

	if (chase)
		sup_worker_prefetch_record(chase);
	while (r >= 0) {
		if (chase && written + queued < max) {
			struct worker *w = chase;

			chase = TAILQ_NEXT(w, link);
			if (chase)
				sup_worker_prefetch_record(chase);
			if (dispatch_may_see(c, w->uid) && matches(q, w)) {
				sup_worker_prefetch_text(w);
				queue[(head + queued++) % AHEAD] = w;
			}
			/* Until the queue is full, only the chase. */
			if (queued < AHEAD && chase && written + queued < max)
				continue;
		}
		if (!queued)
			break;
		if (!(*count)++ || (r = proto_wbuf_put(b, ",", 1)) >= 0)
			r = sup_worker_write(b, queue[head], q->fields, now);
		head = (head + 1) % AHEAD;
		queued--;
		written++;
	}
	*next = chase;
	return r < 0 ? r : chase != NULL;
}

/*
 * Grows b at once to about the size the whole list will have, judged by
 * its first slice (count workers): growing it by doubling would copy it
 * again and again. Only a guess: the buffer still grows if it was short.
 */
static void
reserve(struct proto_wbuf *b, size_t count)
{
	size_t used = (size_t)(b->p - b->start), listed = 0;

	for (int s = 0; s < PROTO_STATE_COUNT; s++)
		listed += herdd.nworkers[s];
	if (count && listed > count)
		(void)b->grow(b, used / count * (listed - count));
}

/* Ends the text and sends it (r: the walk's error, if any), then frees it. */
static void
text_send(struct conn *c, const json_t *id, struct proto_wbuf *b, int r)
{
	if (r >= 0)
		r = proto_wbuf_put(b, "]}}\n", 4);
	if (r >= 0)
		conn_send_line(c, b->start, (size_t)(b->p - b->start), id);
	else
		conn_reply_error(c, (json_t *)id, HERD_E_INTERNAL_ERROR, NULL,
		    "the list could not be written: %s", strerror(-r));
	free(b->start);
	b->start = NULL;
}

static void
job_turn(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct list_job *j = t->data;
	struct proto_wbuf text;
	struct conn *c;
	json_t *id;
	int r = walk(j->conn, &j->q, &j->text, &j->count, &j->next, LIST_SLICE);

	if (r > 0) {
		ev_timer_start(loop, t);
		return;
	}
	/* The job goes first: the reply may end the connection, whose end frees its jobs. */
	c = conn_ref(j->conn);
	id = json_incref(j->id);
	text = j->text;
	j->text.start = NULL;
	job_free(j);
	text_send(c, id, &text, r);
	json_decref(id);
	conn_unref(c);
}

void
h_list(struct conn *c, json_t *id, json_t *params)
{
	struct worker *next = TAILQ_FIRST(&herdd.workers);
	struct list_query q;
	struct proto_wbuf text;
	struct list_job *j;
	size_t count = 0;
	bool waiting;
	int r;

	if (parse_query(c, id, params, &q) < 0)
		return;
	r = text_begin(&text, id);
	/* A spawn this client asked for before is in its list: the list waits for its pid. */
	waiting = c->spawning > 0;
	if (r >= 0 && !waiting)
		r = walk(c, &q, &text, &count, &next, LIST_SLICE);
	if (r < 0 || (r == 0 && !waiting)) {
		text_send(c, id, &text, r);
		return;
	}
	/* More than a slice: the rest in later turns, into a buffer sized for them now. */
	if (!waiting)
		reserve(&text, count);
	j = calloc(1, sizeof(*j));
	if (!j || (q.name && !(j->name = strdup(q.name)))) {
		free(j);
		text_send(c, id, &text, -ENOMEM);
		return;
	}
	j->conn = conn_ref(c);
	j->id = json_incref(id);
	j->q = q;
	j->q.name = j->name;
	j->text = text;
	j->count = count;
	j->next = next;
	j->waiting = waiting;
	c->pending++;
	LIST_INSERT_HEAD(&jobs, j, link);
	ev_timer_init(&j->turn, job_turn, 0., 0.);
	j->turn.data = j;
	ev_set_priority(&j->turn, CONN_CONTROL_PRIORITY);
	if (!j->waiting)
		ev_timer_start(herdd.loop, &j->turn);
}

void
list_spawned(struct conn *c)
{
	struct list_job *j;

	LIST_FOREACH(j, &jobs, link) {
		if (j->conn != c || !j->waiting)
			continue;
		j->waiting = false;
		j->next = TAILQ_FIRST(&herdd.workers);
		ev_timer_start(herdd.loop, &j->turn);
	}
}

/* w leaves herdd.workers: a walk that was to resume from it resumes after it. */
void
list_forget(struct worker *w)
{
	struct list_job *j;

	LIST_FOREACH(j, &jobs, link) {
		if (j->next == w)
			j->next = TAILQ_NEXT(w, link);
	}
}

/* True while any list is being built (a reexec waits for them). */
bool
list_busy(void)
{
	return !LIST_EMPTY(&jobs);
}

/* True if c's list with this id is still being built. */
bool
list_id_pending(const struct conn *c, const json_t *id)
{
	struct list_job *j;

	LIST_FOREACH(j, &jobs, link) {
		if (j->conn == c && json_equal(j->id, id))
			return true;
	}
	return false;
}

/* c's session ended: its lists are dropped unanswered. */
void
list_conn_gone(struct conn *c)
{
	struct list_job *j, *next;

	for (j = LIST_FIRST(&jobs); j; j = next) {
		next = LIST_NEXT(j, link);
		if (j->conn == c)
			job_free(j);
	}
}
