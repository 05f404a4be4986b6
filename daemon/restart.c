/* SPDX-License-Identifier: MIT */
/*
 * Restart policies (spawn's "restart", PROTOCOL.md 4.2) for workers that
 * outlive their master (shutdown_on explicit).
 *
 * A worker whose process ended and whose policy wants it back waits in state
 * restarting for its backoff: delay_ms, doubled at each restart up to
 * max_delay_ms, and back to delay_ms after an incarnation that lived longer
 * than the start-limit interval. Like systemd's StartLimitBurst and
 * StartLimitIntervalSec, burst ends within interval_ms give the worker up:
 * state failed, keeping the last end's reason and its stderr. The record,
 * its id, name and captured output go on from one incarnation to the next;
 * the process, its pidfd, its channel and its socket are new each time.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herdd.h"

#define RESTART_DELAY_DEFAULT_MS        100u
#define RESTART_MAX_DELAY_DEFAULT_MS    30000u
#define RESTART_DELAY_LIMIT_MS          3600000u /* an hour: no longer wait is useful */
#define START_LIMIT_BURST_DEFAULT       5u
#define START_LIMIT_BURST_MAX           100u
#define START_LIMIT_INTERVAL_DEFAULT_MS 10000u
#define START_LIMIT_INTERVAL_MAX_MS     86400000u

struct restart {
	enum proto_restart policy;
	unsigned delay_ms, max_delay_ms, burst, interval_ms;
	unsigned next_delay_ms; /* the wait before the next restart */
	unsigned last_delay_ms; /* the wait before the current incarnation */
	unsigned restarts;
	int64_t ends[START_LIMIT_BURST_MAX]; /* ring of the last burst ends, monotonic ms */
	unsigned nends, end_next;
	/* The previous incarnation's end. */
	bool have_last;
	enum proto_reason last_reason;
	int last_exit_code, last_signal;
	struct timespec last_ended_wall;
	/* What each incarnation starts from: spawn's env, init and settings. */
	json_t *env, *init, *settings;
	int64_t due_ms;
	ev_timer timer;
	struct worker *worker;
};

static void restart_cb(struct ev_loop *loop, ev_timer *t, int revents);

/* One bounded integer field of the "restart" object. */
static int
bounded(
    json_int_t v, unsigned lo, unsigned hi, const char *name, unsigned *out, char *why, size_t len)
{
	if (v == INT64_MIN)
		return 0;
	if (v < lo || v > hi) {
		snprintf(why, len, "restart.%s must be between %u and %u", name, lo, hi);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

/* The policy and limits of spec (a name or an object) into r. */
static int
parse_policy(struct restart *r, json_t *spec, char *why, size_t len)
{
	json_int_t delay = INT64_MIN, max_delay = INT64_MIN, burst = INT64_MIN,
	           interval = INT64_MIN;
	const char *policy = NULL;
	struct proto_error err;
	int p;

	if (json_is_string(spec)) {
		policy = json_string_value(spec);
	} else if (proto_unpack(spec, &err, "{s:s, s?I, s?I, s?I, s?I}", "policy", &policy,
	               "delay_ms", &delay, "max_delay_ms", &max_delay, "burst", &burst,
	               "interval_ms", &interval) < 0) {
		snprintf(why, len,
		    "restart must be a policy name or {\"policy\", \"delay_ms\", "
		    "\"max_delay_ms\", \"burst\", \"interval_ms\"}");
		return -EINVAL;
	}
	p = proto_restart_from_name(policy);
	if (p < 0) {
		snprintf(why, len, "restart must be \"no\", \"on-failure\" or \"always\"");
		return -EINVAL;
	}
	r->policy = (enum proto_restart)p;
	r->delay_ms = RESTART_DELAY_DEFAULT_MS;
	r->max_delay_ms = RESTART_MAX_DELAY_DEFAULT_MS;
	r->burst = START_LIMIT_BURST_DEFAULT;
	r->interval_ms = START_LIMIT_INTERVAL_DEFAULT_MS;
	if (bounded(delay, 0, RESTART_DELAY_LIMIT_MS, "delay_ms", &r->delay_ms, why, len) < 0 ||
	    bounded(max_delay, 0, RESTART_DELAY_LIMIT_MS, "max_delay_ms", &r->max_delay_ms, why,
	        len) < 0 ||
	    bounded(burst, 1, START_LIMIT_BURST_MAX, "burst", &r->burst, why, len) < 0 ||
	    bounded(interval, 0, START_LIMIT_INTERVAL_MAX_MS, "interval_ms", &r->interval_ms, why,
	        len) < 0)
		return -EINVAL;
	if (r->max_delay_ms < r->delay_ms) {
		snprintf(why, len, "restart.max_delay_ms must not be below restart.delay_ms");
		return -EINVAL;
	}
	return 0;
}

/* Parses spawn's "restart"; see the header. */
int
restart_parse(struct worker *w, json_t *spec, char *why, size_t len)
{
	struct restart *r;

	if (!spec)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	if (parse_policy(r, spec, why, len) < 0) {
		free(r);
		return -EINVAL;
	}
	if (r->policy == PROTO_RESTART_NO) {
		free(r);
		return 0;
	}
	/* A worker its master's end would stop has nobody to come back for. */
	if (w->shutdown_on != PROTO_SHUTDOWN_EXPLICIT) {
		free(r);
		snprintf(why, len, "restart needs shutdown_on \"explicit\"");
		return -EINVAL;
	}
	r->next_delay_ms = r->delay_ms;
	r->env = json_incref(w->env);
	r->init = json_incref(w->init);
	r->settings = json_incref(w->settings);
	r->worker = w;
	ev_init(&r->timer, restart_cb);
	r->timer.data = r;
	w->restart = r;
	return 0;
}

void
restart_free(struct worker *w)
{
	struct restart *r = w->restart;

	if (!r)
		return;
	ev_timer_stop(herdd.loop, &r->timer);
	json_decref(r->env);
	json_decref(r->init);
	json_decref(r->settings);
	free(r);
	w->restart = NULL;
}

/* True if policy brings back w, which ended for w->reason. */
static bool
wants_restart(enum proto_restart policy, const struct worker *w)
{
	enum proto_reason reason = w->reason;

	switch (reason) {
	/* Asked for: the end of the worker, not of one incarnation. */
	case PROTO_REASON_SHUTDOWN:
	case PROTO_REASON_DAEMON_SHUTDOWN:
	case PROTO_REASON_MASTER_CLOSED:
		return false;
	default:
		break;
	}
	/* Like systemd's on-failure, a non-zero exit status is a failure too. */
	return policy == PROTO_RESTART_ALWAYS ||
	    (policy == PROTO_RESTART_ON_FAILURE &&
	        (proto_reason_is_failure(reason) ||
	            (reason == PROTO_REASON_EXITED && w->exit_code != 0)));
}

/* Records an end at now; true if it is the burst-th within the interval. */
static bool
start_limit_hit(struct restart *r, int64_t now)
{
	int64_t oldest;

	r->ends[r->end_next] = now;
	r->end_next = (r->end_next + 1) % r->burst;
	if (r->nends < r->burst)
		r->nends++;
	if (r->nends < r->burst)
		return false;
	/* The ring is full: the slot to be written next holds the oldest end. */
	oldest = r->ends[r->end_next];
	return now - oldest < (int64_t)r->interval_ms;
}

/* Decides what follows an end; see the header. */
enum proto_state
restart_after_exit(struct worker *w)
{
	struct restart *r = w->restart;

	if (!r || herdd.stopping || !wants_restart(r->policy, w))
		return PROTO_STATE_EXITED;
	r->have_last = true;
	r->last_reason = w->reason;
	r->last_exit_code = w->exit_code;
	r->last_signal = w->signal;
	clock_gettime(CLOCK_REALTIME, &r->last_ended_wall);
	if (start_limit_hit(r, w->ended_ms)) {
		log_warn("worker %s: %u ends within %u ms, giving up (last: %s)", w->id, r->burst,
		    r->interval_ms, proto_reason_name(w->reason));
		return PROTO_STATE_FAILED;
	}
	/* An incarnation that lived through a whole interval was healthy: start over. */
	if (w->ended_ms - w->started_ms >= (int64_t)r->interval_ms)
		r->next_delay_ms = r->delay_ms;
	r->last_delay_ms = r->next_delay_ms;
	r->next_delay_ms =
	    r->next_delay_ms > r->max_delay_ms / 2 ? r->max_delay_ms : r->next_delay_ms * 2;
	/* From the reap's own time, not the loop's: the wait is never shorter than promised. */
	ev_now_update(herdd.loop);
	r->due_ms = now_ms() + r->last_delay_ms;
	ev_timer_set(&r->timer, r->last_delay_ms / 1000.0, 0.);
	ev_timer_start(herdd.loop, &r->timer);
	log_info("worker %s: %s, restarting in %u ms", w->id, proto_reason_name(w->reason),
	    r->last_delay_ms);
	return PROTO_STATE_RESTARTING;
}

/* Clears what belonged to the previous process before the next one starts. */
static void
new_incarnation(struct worker *w, struct restart *r)
{
	free(w->message);
	free(w->functions);
	w->message = w->functions = NULL;
	w->pid = 0;
	w->reaped = false;
	w->reason = w->backup_reason = PROTO_REASON_NONE;
	w->exit_code = -1;
	w->signal = 0;
	w->spawn_errno = 0;
	w->spawn_stage = NULL;
	w->stop_sent = w->had_connection = false;
	w->served = w->cpu_ms = w->last_cpu_ms = w->rss_kib = 0;
	w->sampled_ms = 0;
	w->last_heartbeat_ms = w->next_check_ms = w->heard_ms = 0;
	/* A restart whose spawn failed may have left the previous copies. */
	json_decref(w->env);
	json_decref(w->init);
	json_decref(w->settings);
	w->env = json_incref(r->env);
	w->init = json_incref(r->init);
	w->settings = json_incref(r->settings);
	w->incarnation++;
	r->restarts++;
}

static void
restart_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct restart *r = t->data;
	struct worker *w = r->worker;
	enum proto_state s;
	int err;

	new_incarnation(w, r);
	err = sup_spawn(w);
	/* Its pid and the "restarted" event come when the process exists (sup_spawned()). */
	if (err == 0)
		return;
	/* No process came to be: an end like any other, which the policy judges. */
	log_warn("worker %s: restart failed at %s: %s", w->id,
	    w->spawn_stage ? w->spawn_stage : "prepare", strerror(-err));
	if (!w->spawn_stage)
		w->spawn_stage = "prepare";
	w->spawn_errno = -err;
	w->reason = PROTO_REASON_SPAWN_FAILED;
	w->reaped = true;
	w->ended_ms = now_ms();
	sup_count_reason(w->reason);
	s = restart_after_exit(w);
	sup_set_state(w, s);
	events_emit(w, PROTO_EVENT_EXITED);
	if (s == PROTO_STATE_FAILED)
		events_emit(w, PROTO_EVENT_GIVEN_UP);
	notify_status();
}

/* Ends the wait for good. */
void
restart_cancel(struct worker *w, enum proto_reason reason)
{
	if (w->state != PROTO_STATE_RESTARTING)
		return;
	ev_timer_stop(herdd.loop, &w->restart->timer);
	w->reason = reason;
	sup_set_state(w, PROTO_STATE_EXITED);
	log_info("worker %s: restart cancelled (%s)", w->id, proto_reason_name(reason));
	events_emit(w, proto_reason_event(reason));
	notify_status();
}

bool
restart_is_current(const struct worker *w, json_int_t incarnation)
{
	return incarnation == 0 || incarnation == (json_int_t)w->incarnation;
}

/* The previous incarnation's end, or null. */
static json_t *
last_exit_json(const struct restart *r)
{
	if (!r || !r->have_last)
		return json_null();
	return json_pack("{s:s, s:o, s:o, s:o}", "reason", proto_reason_name(r->last_reason),
	    "exit_code",
	    r->last_signal == 0 && r->last_exit_code >= 0 ? json_integer(r->last_exit_code)
	                                                  : json_null(),
	    "signal", r->last_signal ? sup_signal_json(r->last_signal) : json_null(), "ended_at",
	    sup_rfc3339(&r->last_ended_wall));
}

/* The WORKER object's "restart" (PROTOCOL.md 4.3), a new reference. */
json_t *
restart_policy_json(const struct worker *w)
{
	const struct restart *r = w->restart;
	json_t *policy;

	if (!r)
		return json_pack("{s:s}", "policy", "no");
	policy = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "policy",
	    proto_restart_name(r->policy), "delay_ms", (json_int_t)r->delay_ms, "max_delay_ms",
	    (json_int_t)r->max_delay_ms, "burst", (json_int_t)r->burst, "interval_ms",
	    (json_int_t)r->interval_ms, "restarts", (json_int_t)r->restarts, "last_delay_ms",
	    (json_int_t)r->last_delay_ms, "last_exit", last_exit_json(r));
	if (policy && w->state == PROTO_STATE_RESTARTING)
		json_object_set_new(policy, "restart_in_ms",
		    json_integer(r->due_ms > now_ms() ? r->due_ms - now_ms() : 0));
	return policy;
}

/* w's policy and history for a reexec (reexec-state.c): null without a policy. */
json_t *
restart_save(const struct worker *w)
{
	const struct restart *r = w->restart;
	json_t *ends;

	if (!r)
		return json_null();
	ends = json_array();
	for (unsigned i = 0; ends && i < r->nends; i++)
		json_array_append_new(ends, json_integer(r->ends[i]));
	return json_pack("{s:i, s:[I, I, I, I, I, I, I], s:o, s:I, s:b, s:[i, i, i, I, I], s:O*,"
	                 " s:O*, s:O*, s:I}",
	    "policy", (int)r->policy, "delays", (json_int_t)r->delay_ms,
	    (json_int_t)r->max_delay_ms, (json_int_t)r->burst, (json_int_t)r->interval_ms,
	    (json_int_t)r->next_delay_ms, (json_int_t)r->last_delay_ms, (json_int_t)r->restarts,
	    "ends", ends, "end_next", (json_int_t)r->end_next, "have_last", r->have_last, "last",
	    (int)r->last_reason, r->last_exit_code, r->last_signal,
	    (json_int_t)r->last_ended_wall.tv_sec, (json_int_t)r->last_ended_wall.tv_nsec, "env",
	    r->env, "init", r->init, "settings", r->settings, "due_ms", (json_int_t)r->due_ms);
}

/*
 * Gives w the policy restart_save() wrote (null: none); a worker waiting to
 * restart gets its timer back, due when it was. Returns 0 or -EINVAL/-ENOMEM.
 */
int
restart_load(struct worker *w, json_t *saved)
{
	json_int_t v[7], end_next, sec, nsec, due;
	int policy, reason, code, sig, have_last;
	json_t *ends, *env = NULL, *init = NULL, *settings = NULL, *e;
	struct restart *r;
	size_t i;

	if (json_is_null(saved))
		return 0;
	if (json_unpack(saved,
	        "{s:i, s:[I, I, I, I, I, I, I], s:o, s:I, s:b, s:[i, i, i, I, I], s?o, s?o, s?o,"
	        " s:I}",
	        "policy", &policy, "delays", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
	        "ends", &ends, "end_next", &end_next, "have_last", &have_last, "last", &reason,
	        &code, &sig, &sec, &nsec, "env", &env, "init", &init, "settings", &settings,
	        "due_ms", &due) < 0 ||
	    !json_is_array(ends) || json_array_size(ends) > START_LIMIT_BURST_MAX || end_next < 0 ||
	    end_next >= START_LIMIT_BURST_MAX)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->policy = (enum proto_restart)policy;
	r->delay_ms = (unsigned)v[0];
	r->max_delay_ms = (unsigned)v[1];
	r->burst = (unsigned)v[2];
	r->interval_ms = (unsigned)v[3];
	r->next_delay_ms = (unsigned)v[4];
	r->last_delay_ms = (unsigned)v[5];
	r->restarts = (unsigned)v[6];
	json_array_foreach(ends, i, e)
		r->ends[i] = json_integer_value(e);
	r->nends = (unsigned)json_array_size(ends);
	r->end_next = (unsigned)end_next;
	r->have_last = have_last;
	r->last_reason = (enum proto_reason)reason;
	r->last_exit_code = code;
	r->last_signal = sig;
	r->last_ended_wall.tv_sec = (time_t)sec;
	r->last_ended_wall.tv_nsec = (long)nsec;
	r->env = json_incref(env);
	r->init = json_incref(init);
	r->settings = json_incref(settings);
	r->due_ms = due;
	r->worker = w;
	ev_init(&r->timer, restart_cb);
	r->timer.data = r;
	w->restart = r;
	if (w->state == PROTO_STATE_RESTARTING) {
		ev_timer_set(
		    &r->timer, due > now_ms() ? (double)(due - now_ms()) / 1000.0 : 0., 0.);
		ev_timer_start(herdd.loop, &r->timer);
	}
	return 0;
}
