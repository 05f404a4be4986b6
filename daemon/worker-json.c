/* SPDX-License-Identifier: MIT */
/*
 * The WORKER object (PROTOCOL.md 4.3) as a table of fields, each written
 * straight into JSON text, so `list` builds only the fields it was asked
 * for, without a jansson value per field (a list of a thousand workers is
 * tens of thousands of them), and an unknown field name is found in one
 * place. The JSON object the other replies and events carry is that text
 * decoded. Every figure comes from the record in memory: what /proc says is
 * sampled by sample.c on herdd's own schedule, never read here.
 *
 * Most fields change only when the process does (starts, changes state, is
 * reaped) or never (id, name, path, argv...); they hold most of an object's
 * text and all of its escaping. Their text is built at a record's first
 * list and copied from then on until one of the members it depends on
 * changes (struct text_key), so a list of a thousand workers with every
 * field costs well under a millisecond of herdd's CPU. Only the figures
 * (ages, samples, counters) and the rarer members are written each time.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herdd.h"

/*
 * A field's writer: 0, ABSENT (the worker has no such member: nothing written) or -errno.
 * One per row of the table below; most are a line and alike only in shape.
 */
#define ABSENT 1
typedef int field_fn(struct proto_wbuf *b, const struct worker *w, int64_t now);

/*
 * Appends n bytes. Inline, unlike proto_wbuf_put(): a worker's object is
 * some thirty short pieces, and a call each cost as much as the copying.
 */
static inline int
put(struct proto_wbuf *b, const char *s, size_t n)
{
	int r = (size_t)(b->end - b->p) < n ? b->grow(b, n) : 0;

	if (r == 0)
		b->p = (char *)memcpy(b->p, s, n) + n;
	return r;
}

/* A string literal: its length is known when compiled. */
#define put_lit(b, s) put((b), "" s, sizeof(s) - 1)

/* A string member, or null. */
static int
put_str(struct proto_wbuf *b, const char *s)
{
	return s ? proto_json_write_string(b, s, strlen(s)) : put_lit(b, "null");
}

/* One of herdd's own names (a state, a reason...): nothing in it needs escaping. */
static int
put_name(struct proto_wbuf *b, const char *s)
{
	size_t n;
	int r;

	if (!s)
		return put_lit(b, "null");
	n = strlen(s);
	if ((r = put_lit(b, "\"")) < 0 || (r = put(b, s, n)) < 0)
		return r;
	return put_lit(b, "\"");
}

static int
put_int_or_null(struct proto_wbuf *b, bool have, json_int_t v)
{
	return have ? proto_json_write_int(b, v) : put_lit(b, "null");
}

/* A value built as JSON (stolen; the rarer, nested members). */
static int
put_json(struct proto_wbuf *b, json_t *v)
{
	int r = v ? proto_json_write(b, v, HERD_MAX_DEPTH, false) : -ENOMEM;

	json_decref(v);
	return r;
}

static int
f_id(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b, w->id);
}

static int
f_name(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b, w->name);
}

static int
f_pool(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b, w->pool);
}

/* pid and pgid: the leader's pid is its group's id. */
static int
f_pid(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write_int(b, w->pid);
}

/* The owner's connection number, while that connection lasts. */
static int
f_owner(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	int r;

	if ((r = put_lit(b, "{\"pid\":")) < 0 || (r = proto_json_write_int(b, w->owner_pid)) < 0 ||
	    (r = put_lit(b, ",\"uid\":")) < 0 || (r = proto_json_write_int(b, w->uid)) < 0 ||
	    (r = put_lit(b, ",\"gid\":")) < 0 || (r = proto_json_write_int(b, w->owner_gid)) < 0 ||
	    (r = put_lit(b, ",\"connection\":")) < 0 ||
	    (r = put_int_or_null(b, w->owner != NULL, (json_int_t)w->owner_serial)) < 0)
		return r;
	return put_lit(b, "}");
}

static int
f_uid(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write_int(b, (json_int_t)w->uid);
}

static int
f_state(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_name(b, proto_state_name(w->state));
}

static int
f_reason(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_name(b, proto_reason_name(w->reason));
}

static int
f_exit_code(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_int_or_null(
	    b, sup_state_ended(w->state) && w->signal == 0 && w->exit_code >= 0, w->exit_code);
}

static int
f_signal(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return w->signal ? put_json(b, sup_signal_json(w->signal)) : put_lit(b, "null");
}

/* Workers started in the same second share its text: a list does not format each anew. */
static int
f_started_at(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	static time_t second = -1;
	static char text[64];
	long ms = w->started_wall.tv_nsec / 1000000;
	char *dot;

	if (w->started_wall.tv_sec != second) {
		sup_rfc3339_text(&w->started_wall, text, sizeof(text));
		second = w->started_wall.tv_sec;
	}
	/* The milliseconds: "...SS.mmmZ". */
	dot = strchr(text, '.');
	if (dot && ms >= 0 && ms < 1000) {
		dot[1] = (char)('0' + ms / 100);
		dot[2] = (char)('0' + ms / 10 % 10);
		dot[3] = (char)('0' + ms % 10);
	}
	return put_str(b, text);
}

static int
f_uptime_ms(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write_int(b, (w->reaped ? w->ended_ms : now) - w->started_ms);
}

static int
f_heartbeat_age_ms(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_int_or_null(b,
	    w->last_heartbeat_ms && w->hb_interval_ms &&
	        (w->state == PROTO_STATE_READY || w->state == PROTO_STATE_STOPPING),
	    now - w->last_heartbeat_ms);
}

static int
f_shutdown_on(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_name(b, proto_shutdown_on_name(w->shutdown_on));
}

static int
f_socket(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b,
	    w->socket[0] && w->state != PROTO_STATE_STARTING && !w->reaped &&
	            w->ready_mode == READY_PROTOCOL
	        ? w->socket
	        : NULL);
}

static int
f_path(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b, w->path);
}

static int
f_argv(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write(b, w->argv, HERD_MAX_DEPTH, false);
}

/* The sample describes the running process: none before the first, none after the reap. */
static bool
sampled(const struct worker *w)
{
	return w->sampled_ms && sup_is_live(w) && !w->reaped;
}

static int
f_rss_kib(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_int_or_null(b, sampled(w), (json_int_t)w->rss_kib);
}

static int
f_cpu_ms(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write_int(b, (json_int_t)w->cpu_ms);
}

static int
f_sample_age_ms(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_int_or_null(b, sampled(w), now - w->sampled_ms);
}

/* Shown for the other modes only: a herd worker's object stays as it was. */
static int
f_ready(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return w->ready_mode != READY_PROTOCOL ? put_name(b, sup_ready_mode_name(w->ready_mode))
	                                       : ABSENT;
}

/* A notify worker's STATUS= and STOPPING=1 (worker-notify.c). */
static int
f_status(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return w->ready_mode == READY_NOTIFY ? put_str(b, w->status) : ABSENT;
}

static int
f_said_stopping(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	if (w->ready_mode != READY_NOTIFY)
		return ABSENT;
	return w->said_stopping ? put_lit(b, "true") : put_lit(b, "false");
}

static int
f_message(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b, w->message);
}

static int
f_served(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write_int(b, (json_int_t)w->served);
}

static int
f_spawn_error(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	if (!w->spawn_stage)
		return ABSENT;
	return put_json(b,
	    json_pack("{s:s, s:i, s:s}", "stage", w->spawn_stage, "errno", w->spawn_errno, "error",
	        strerror(w->spawn_errno)));
}

static int
f_incarnation(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return proto_json_write_int(b, w->incarnation);
}

/* The common cases are written here; the others are built where they are kept. */
static int
f_restart(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return w->restart ? put_json(b, restart_policy_json(w)) : put_lit(b, "{\"policy\":\"no\"}");
}

static int
f_containment(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	if (w->in_cgroup)
		return put_json(b, contain_worker_json(w));
	return w->pid_ns ? put_lit(b, "{\"cgroup\":null,\"pid_namespace\":true}")
	                 : put_lit(b, "{\"cgroup\":null,\"pid_namespace\":false}");
}

static int
f_limits(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	for (size_t k = 0; k < LIMIT_COUNT; k++) {
		if (w->limits.value[k])
			return put_json(b, limits_json(w));
	}
	return put_lit(b, "null");
}

/* The WORKER object's members in the order they are sent. */
static const struct worker_field {
	const char *name;
	const char *key; /* ,"name": as it is written after another member */
	size_t key_len;
	field_fn *put;
	bool cached; /* its text depends only on the members struct text_key holds */
} fields[] = {
#define FIELD(n, fn, cached)                                                                       \
	{                                                                                          \
#n, ",\"" #n "\":", sizeof(#n) + 3, fn, cached                                     \
	}
	FIELD(id, f_id, true),
	FIELD(name, f_name, true),
	FIELD(pool, f_pool, true),
	FIELD(pid, f_pid, true),
	FIELD(pgid, f_pid, true),
	FIELD(owner, f_owner, true),
	FIELD(uid, f_uid, true),
	FIELD(state, f_state, true),
	FIELD(reason, f_reason, true),
	FIELD(exit_code, f_exit_code, true),
	FIELD(signal, f_signal, true),
	FIELD(started_at, f_started_at, true),
	FIELD(uptime_ms, f_uptime_ms, false),
	FIELD(heartbeat_age_ms, f_heartbeat_age_ms, false),
	FIELD(shutdown_on, f_shutdown_on, true),
	FIELD(socket, f_socket, true),
	FIELD(path, f_path, true),
	FIELD(argv, f_argv, true),
	FIELD(rss_kib, f_rss_kib, false),
	FIELD(cpu_ms, f_cpu_ms, false),
	FIELD(sample_age_ms, f_sample_age_ms, false),
	FIELD(ready, f_ready, false),
	FIELD(status, f_status, false),
	FIELD(said_stopping, f_said_stopping, false),
	FIELD(message, f_message, false),
	FIELD(served, f_served, false),
	FIELD(spawn_error, f_spawn_error, false),
	FIELD(incarnation, f_incarnation, true),
	FIELD(restart, f_restart, false),
	FIELD(containment, f_containment, false),
	FIELD(limits, f_limits, false),
#undef FIELD
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))
_Static_assert(N_FIELDS <= 64, "a field mask is 64 bits");

/*
 * What the cached fields' text depends on beside the members a record
 * keeps for its life (id, name, path, argv, owner's pid...): a process's
 * members, set together when it starts, is reaped or changes state.
 */
struct text_key {
	struct timespec started_wall;
	pid_t pid;
	int exit_code, signal;
	unsigned incarnation;
	enum proto_state state;
	enum proto_reason reason;
	bool reaped, owned;
};

/*
 * The text of a record's cached fields, each as ,"key":value in the table's
 * order: field i's text is text[at[i], at[i + 1]) (empty for the others), so
 * a run of them that a mask asks for together is one copy. Rebuilt when
 * the key changes.
 */
struct worker_text {
	struct text_key key;
	uint32_t at[N_FIELDS + 1];
	char text[];
};

static void
text_key(const struct worker *w, struct text_key *k)
{
	memset(k, 0, sizeof(*k)); /* the padding too: keys are compared with memcmp() */
	k->started_wall = w->started_wall;
	k->pid = w->pid;
	k->exit_code = w->exit_code;
	k->signal = w->signal;
	k->incarnation = w->incarnation;
	k->state = w->state;
	k->reason = w->reason;
	k->reaped = w->reaped;
	k->owned = w->owner != NULL;
}

/* Builds w's cached text for key k; NULL when it cannot be (the fields are then written each time). */
static struct worker_text *
text_build(const struct worker *w, const struct text_key *k)
{
	struct worker_text *t = NULL;
	struct proto_wbuf b;
	uint32_t at[N_FIELDS + 1];
	size_t i, len = 0;
	int r = 0;

	proto_wbuf_heap(&b);
	for (i = 0; i < N_FIELDS && r >= 0; i++) {
		at[i] = (uint32_t)len;
		if (!fields[i].cached)
			continue;
		if ((r = put(&b, fields[i].key, fields[i].key_len)) < 0 ||
		    (r = fields[i].put(&b, w, 0)) < 0)
			break;
		len = (size_t)(b.p - b.start);
		if (len > UINT32_MAX)
			r = -E2BIG;
	}
	at[N_FIELDS] = (uint32_t)len;
	if (r >= 0 && (t = malloc(sizeof(*t) + len))) {
		t->key = *k;
		memcpy(t->at, at, sizeof(at));
		memcpy(t->text, b.start, len);
	}
	free(b.start);
	return t;
}

/* w's cached text, built anew if what it depends on changed; NULL if it cannot be built. */
static struct worker_text *
text_of(struct worker *w)
{
	struct text_key k;

	text_key(w, &k);
	if (w->text && !memcmp(&w->text->key, &k, sizeof(k)))
		return w->text;
	free(w->text);
	w->text = text_build(w, &k);
	return w->text;
}

/*
 * A list walks a thousand records that the loop has not touched since the
 * last list, so writing one is mostly waiting for memory: some ten lines
 * of the record scattered over its kilobyte and its cached text elsewhere.
 * The walk asks for them a few records ahead of the one it writes
 * (h-list.c), so those misses overlap the writing of the records before.
 * Hints only: nothing depends on them.
 */
#define PREFETCH(p) __builtin_prefetch((p), 0, 1)

/* The lines from member from to member to. */
static inline void
prefetch_span(const void *from, const void *to)
{
	for (const char *p = from; p < (const char *)to; p += 64)
		PREFETCH(p);
	PREFETCH(to);
}

/* The lines of w the writer and the walk's filters read (some forty members). */
void
sup_worker_prefetch_record(const struct worker *w)
{
	PREFETCH(&w->link);
	PREFETCH(&w->hb_interval_ms);
	prefetch_span(&w->uid, &w->last_heartbeat_ms);
	prefetch_span(&w->served, &w->said_stopping);
	prefetch_span(&w->limits.value[0], &w->limits.value[LIMIT_COUNT - 1]);
	prefetch_span(&w->incarnation, &w->text);
}

/*
 * The lines of w's cached text. Its record must be at hand already (asked
 * for a step of the walk before). The text itself is not read, as its
 * length would be one more wait: its first TEXT_LINES lines are asked for,
 * about all of it with every field; asking for lines past its end costs
 * nothing.
 */
#define TEXT_LINES 12

void
sup_worker_prefetch_text(const struct worker *w)
{
	const char *t = (const char *)w->text;

	if (!t)
		return;
	for (int i = 0; i < TEXT_LINES; i++)
		PREFETCH(t + 64 * i);
}

/* The bit of WORKER field name, or 0 when there is no such field. */
uint64_t
sup_worker_field(const char *name)
{
	for (size_t i = 0; i < N_FIELDS; i++) {
		if (!strcmp(fields[i].name, name))
			return 1ull << i;
	}
	return 0;
}

/* The last of the run of cached fields in mask that starts at field i. */
static size_t
cached_run(uint64_t mask, size_t i)
{
	while (i + 1 < N_FIELDS && fields[i + 1].cached && (mask & (1ull << (i + 1))))
		i++;
	return i;
}

/* Writes the fields of mask as one JSON object; now: now_ms(), the figures' clock. */
int
sup_worker_write(struct proto_wbuf *b, struct worker *w, uint64_t mask, int64_t now)
{
	struct worker_text *t = text_of(w);
	bool first = true;
	int r = put_lit(b, "{");

	for (size_t i = 0; r >= 0 && i < N_FIELDS; i++) {
		size_t at = (size_t)(b->p - b->start), last;

		if (!(mask & (1ull << i)))
			continue;
		if (fields[i].cached && t) {
			last = cached_run(mask, i);
			r = put(b, t->text + t->at[i] + first, t->at[last + 1] - t->at[i] - first);
			i = last;
			first = false;
			continue;
		}
		/* The key's leading comma is left out of the first member. */
		if ((r = put(b, fields[i].key + first, fields[i].key_len - first)) < 0)
			break;
		r = fields[i].put(b, w, now);
		if (r == ABSENT) {
			/* Nothing of it stays: not even its key. */
			b->p = b->start + at;
			r = 0;
			continue;
		}
		first = false;
	}
	return r < 0 ? r : put_lit(b, "}");
}

/* The fields of mask as a JSON object (a new reference; NULL when it cannot be built). */
json_t *
sup_worker_json_fields(struct worker *w, uint64_t mask)
{
	struct proto_error err;
	struct proto_wbuf b;
	json_t *o = NULL;

	proto_wbuf_heap(&b);
	if (sup_worker_write(&b, w, mask, now_ms()) == 0 &&
	    proto_json_decode(b.start, (size_t)(b.p - b.start), HERD_MAX_DEPTH, &o, &err) < 0)
		o = NULL;
	free(b.start);
	return o;
}

/* The whole WORKER object. */
json_t *
sup_worker_json(struct worker *w)
{
	return sup_worker_json_fields(w, SUP_WORKER_ALL_FIELDS);
}
