/* SPDX-License-Identifier: MIT */
/*
 * The WORKER object (PROTOCOL.md 4.3) as a table of fields, each written
 * straight into JSON text, so `list` builds only the fields it was asked
 * for, without a jansson value per field (a list of a thousand workers is
 * tens of thousands of them), and an unknown field name is found in one
 * place. The JSON object the other replies and events carry is that text
 * decoded. Every figure comes from the record in memory: what /proc says is
 * sampled by sample.c on herdd's own schedule, never read here.
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

static int
put_lit(struct proto_wbuf *b, const char *s)
{
	return proto_wbuf_put(b, s, strlen(s));
}

/* A string member, or null. */
static int
put_str(struct proto_wbuf *b, const char *s)
{
	return s ? proto_json_write_string(b, s, strlen(s)) : put_lit(b, "null");
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
	return put_str(b, proto_state_name(w->state));
}

static int
f_reason(struct proto_wbuf *b, const struct worker *w, int64_t now)
{
	return put_str(b, proto_reason_name(w->reason));
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
	return put_str(b, proto_shutdown_on_name(w->shutdown_on));
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
	return w->ready_mode != READY_PROTOCOL ? put_str(b, sup_ready_mode_name(w->ready_mode))
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
	return put_lit(b, w->said_stopping ? "true" : "false");
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
	return put_lit(b,
	    w->pid_ns ? "{\"cgroup\":null,\"pid_namespace\":true}"
	              : "{\"cgroup\":null,\"pid_namespace\":false}");
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
	const char *key; /* "name": as it is written */
	size_t key_len;
	field_fn *put;
} fields[] = {
#define FIELD(n, fn)                                                                               \
	{                                                                                          \
#n, "\"" #n "\":", sizeof(#n) + 2, fn                                              \
	}
	FIELD(id, f_id),
	FIELD(name, f_name),
	FIELD(pool, f_pool),
	FIELD(pid, f_pid),
	FIELD(pgid, f_pid),
	FIELD(owner, f_owner),
	FIELD(uid, f_uid),
	FIELD(state, f_state),
	FIELD(reason, f_reason),
	FIELD(exit_code, f_exit_code),
	FIELD(signal, f_signal),
	FIELD(started_at, f_started_at),
	FIELD(uptime_ms, f_uptime_ms),
	FIELD(heartbeat_age_ms, f_heartbeat_age_ms),
	FIELD(shutdown_on, f_shutdown_on),
	FIELD(socket, f_socket),
	FIELD(path, f_path),
	FIELD(argv, f_argv),
	FIELD(rss_kib, f_rss_kib),
	FIELD(cpu_ms, f_cpu_ms),
	FIELD(sample_age_ms, f_sample_age_ms),
	FIELD(ready, f_ready),
	FIELD(status, f_status),
	FIELD(said_stopping, f_said_stopping),
	FIELD(message, f_message),
	FIELD(served, f_served),
	FIELD(spawn_error, f_spawn_error),
	FIELD(incarnation, f_incarnation),
	FIELD(restart, f_restart),
	FIELD(containment, f_containment),
	FIELD(limits, f_limits),
#undef FIELD
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))
_Static_assert(N_FIELDS <= 64, "a field mask is 64 bits");

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

/* Writes the fields of mask as one JSON object. */
int
sup_worker_write(struct proto_wbuf *b, const struct worker *w, uint64_t mask)
{
	int64_t now = now_ms();
	bool first = true;
	int r = proto_wbuf_put(b, "{", 1);

	for (size_t i = 0; r >= 0 && i < N_FIELDS; i++) {
		size_t at = (size_t)(b->p - b->start);

		if (!(mask & (1ull << i)))
			continue;
		if ((!first && (r = proto_wbuf_put(b, ",", 1)) < 0) ||
		    (r = proto_wbuf_put(b, fields[i].key, fields[i].key_len)) < 0)
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
	return r < 0 ? r : proto_wbuf_put(b, "}", 1);
}

/* The fields of mask as a JSON object (a new reference; NULL when it cannot be built). */
json_t *
sup_worker_json_fields(const struct worker *w, uint64_t mask)
{
	struct proto_error err;
	struct proto_wbuf b;
	json_t *o = NULL;

	proto_wbuf_heap(&b);
	if (sup_worker_write(&b, w, mask) == 0 &&
	    proto_json_decode(b.start, (size_t)(b.p - b.start), HERD_MAX_DEPTH, &o, &err) < 0)
		o = NULL;
	free(b.start);
	return o;
}

/* The whole WORKER object. */
json_t *
sup_worker_json(const struct worker *w)
{
	return sup_worker_json_fields(w, SUP_WORKER_ALL_FIELDS);
}
