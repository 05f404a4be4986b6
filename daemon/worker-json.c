/* SPDX-License-Identifier: MIT */
/*
 * The WORKER object (PROTOCOL.md 4.3) as a table of fields, one builder
 * each, so `list` with "fields" builds only what it was asked for and an
 * unknown field name is found in one place. Every figure comes from the
 * record in memory: what /proc says is sampled by sample.c on herdd's own
 * schedule, never read here, so a list of a thousand workers costs no
 * syscall.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

typedef json_t *field_fn(const struct worker *w, int64_t now);

/* A string member, or null. */
static json_t *
str_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *
f_id(const struct worker *w, int64_t now)
{
	return json_string(w->id);
}

static json_t *
f_name(const struct worker *w, int64_t now)
{
	return str_or_null(w->name);
}

static json_t *
f_pool(const struct worker *w, int64_t now)
{
	return str_or_null(w->pool);
}

/* pid and pgid: the leader's pid is its group's id. */
static json_t *
f_pid(const struct worker *w, int64_t now)
{
	return json_integer(w->pid);
}

/* The owner's connection number, while that connection lasts. */
static json_t *
f_owner(const struct worker *w, int64_t now)
{
	return json_pack("{s:i, s:I, s:I, s:o}", "pid", (int)w->owner_pid, "uid",
	    (json_int_t)w->uid, "gid", (json_int_t)w->owner_gid, "connection",
	    w->owner ? json_integer((json_int_t)w->owner_serial) : json_null());
}

static json_t *
f_uid(const struct worker *w, int64_t now)
{
	return json_integer((json_int_t)w->uid);
}

static json_t *
f_state(const struct worker *w, int64_t now)
{
	return json_string(proto_state_name(w->state));
}

static json_t *
f_reason(const struct worker *w, int64_t now)
{
	return str_or_null(proto_reason_name(w->reason));
}

static json_t *
f_exit_code(const struct worker *w, int64_t now)
{
	return sup_state_ended(w->state) && w->signal == 0 && w->exit_code >= 0
	    ? json_integer(w->exit_code)
	    : json_null();
}

static json_t *
f_signal(const struct worker *w, int64_t now)
{
	return w->signal ? sup_signal_json(w->signal) : json_null();
}

static json_t *
f_started_at(const struct worker *w, int64_t now)
{
	return sup_rfc3339(&w->started_wall);
}

static json_t *
f_uptime_ms(const struct worker *w, int64_t now)
{
	return json_integer((json_int_t)((w->reaped ? w->ended_ms : now) - w->started_ms));
}

static json_t *
f_heartbeat_age_ms(const struct worker *w, int64_t now)
{
	return w->last_heartbeat_ms && w->hb_interval_ms &&
	        (w->state == PROTO_STATE_READY || w->state == PROTO_STATE_STOPPING)
	    ? json_integer(now - w->last_heartbeat_ms)
	    : json_null();
}

static json_t *
f_shutdown_on(const struct worker *w, int64_t now)
{
	return json_string(proto_shutdown_on_name(w->shutdown_on));
}

static json_t *
f_socket(const struct worker *w, int64_t now)
{
	return str_or_null(w->socket[0] && w->state != PROTO_STATE_STARTING && !w->reaped &&
	            w->ready_mode == READY_PROTOCOL
	        ? w->socket
	        : NULL);
}

static json_t *
f_path(const struct worker *w, int64_t now)
{
	return json_string(w->path);
}

static json_t *
f_argv(const struct worker *w, int64_t now)
{
	return json_incref(w->argv);
}

/* The sample describes the running process: none before the first, none after the reap. */
static bool
sampled(const struct worker *w)
{
	return w->sampled_ms && sup_is_live(w) && !w->reaped;
}

static json_t *
f_rss_kib(const struct worker *w, int64_t now)
{
	return sampled(w) ? json_integer((json_int_t)w->rss_kib) : json_null();
}

static json_t *
f_cpu_ms(const struct worker *w, int64_t now)
{
	return json_integer((json_int_t)w->cpu_ms);
}

static json_t *
f_sample_age_ms(const struct worker *w, int64_t now)
{
	return sampled(w) ? json_integer(now - w->sampled_ms) : json_null();
}

/* Shown for the other modes only: a herd worker's object stays as it was. */
static json_t *
f_ready(const struct worker *w, int64_t now)
{
	return w->ready_mode != READY_PROTOCOL ? json_string(sup_ready_mode_name(w->ready_mode))
	                                       : NULL;
}

/* A notify worker's STATUS= and STOPPING=1 (worker-notify.c). */
static json_t *
f_status(const struct worker *w, int64_t now)
{
	return w->ready_mode == READY_NOTIFY ? str_or_null(w->status) : NULL;
}

static json_t *
f_said_stopping(const struct worker *w, int64_t now)
{
	return w->ready_mode == READY_NOTIFY ? json_boolean(w->said_stopping) : NULL;
}

static json_t *
f_message(const struct worker *w, int64_t now)
{
	return str_or_null(w->message);
}

static json_t *
f_served(const struct worker *w, int64_t now)
{
	return json_integer((json_int_t)w->served);
}

static json_t *
f_spawn_error(const struct worker *w, int64_t now)
{
	if (!w->spawn_stage)
		return NULL;
	return json_pack("{s:s, s:i, s:s}", "stage", w->spawn_stage, "errno", w->spawn_errno,
	    "error", strerror(w->spawn_errno));
}

static json_t *
f_incarnation(const struct worker *w, int64_t now)
{
	return json_integer(w->incarnation);
}

static json_t *
f_restart(const struct worker *w, int64_t now)
{
	return restart_policy_json(w);
}

static json_t *
f_containment(const struct worker *w, int64_t now)
{
	return contain_worker_json(w);
}

static json_t *
f_limits(const struct worker *w, int64_t now)
{
	return limits_json(w);
}

/* The WORKER object's members in the order they are sent; NULL from a builder: not shown. */
static const struct worker_field {
	const char *name;
	field_fn *get;
} fields[] = {
	{ "id", f_id },
	{ "name", f_name },
	{ "pool", f_pool },
	{ "pid", f_pid },
	{ "pgid", f_pid },
	{ "owner", f_owner },
	{ "uid", f_uid },
	{ "state", f_state },
	{ "reason", f_reason },
	{ "exit_code", f_exit_code },
	{ "signal", f_signal },
	{ "started_at", f_started_at },
	{ "uptime_ms", f_uptime_ms },
	{ "heartbeat_age_ms", f_heartbeat_age_ms },
	{ "shutdown_on", f_shutdown_on },
	{ "socket", f_socket },
	{ "path", f_path },
	{ "argv", f_argv },
	{ "rss_kib", f_rss_kib },
	{ "cpu_ms", f_cpu_ms },
	{ "sample_age_ms", f_sample_age_ms },
	{ "ready", f_ready },
	{ "status", f_status },
	{ "said_stopping", f_said_stopping },
	{ "message", f_message },
	{ "served", f_served },
	{ "spawn_error", f_spawn_error },
	{ "incarnation", f_incarnation },
	{ "restart", f_restart },
	{ "containment", f_containment },
	{ "limits", f_limits },
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

/* The fields of mask (a new reference; NULL without memory). */
json_t *
sup_worker_json_fields(const struct worker *w, uint64_t mask)
{
	json_t *o = json_object();
	int64_t now = now_ms();

	for (size_t i = 0; o && i < N_FIELDS; i++) {
		json_t *v;

		if (!(mask & (1ull << i)))
			continue;
		v = fields[i].get(w, now);
		if (v && json_object_set_new_nocheck(o, fields[i].name, v) < 0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}

/* The whole WORKER object. */
json_t *
sup_worker_json(const struct worker *w)
{
	return sup_worker_json_fields(w, SUP_WORKER_ALL_FIELDS);
}
