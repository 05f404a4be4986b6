/* SPDX-License-Identifier: MIT */
/*
 * Worker records: the requests waiting on a worker, lookups by id, uid and
 * pid, the exited records kept for a while, and the counters "stats" reports
 * (the WORKER object is worker-json.c's).
 *
 * What runs for every event (a reap, a state change, a loop iteration) must
 * not walk the list: with a thousand workers that walk, repeated for each of
 * them, is what a thousand stops would cost. Counts by state are kept as
 * states change, and pids map to workers through a hash table.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herdd.h"

#define PRUNE_INTERVAL_S 10.0

static ev_timer prune_timer;

/* Exits by reason since start. */
static uint64_t reason_counts[PROTO_REASON_COUNT];

/* Unreaped workers by pid: chains in a power-of-two table, grown to keep them short. */
static struct worker **pid_map;
static size_t pid_map_size, pid_map_count;

#define PID_MAP_MIN 64

static size_t
pid_slot(pid_t pid, size_t size)
{
	/* Pids are handed out nearly in sequence: the low bits spread them well. */
	return (size_t)pid & (size - 1);
}

static int
pid_map_grow(void)
{
	size_t size = pid_map_size ? pid_map_size * 2 : PID_MAP_MIN, i;
	struct worker **map = calloc(size, sizeof(*map));

	if (!map)
		return -ENOMEM;
	for (i = 0; i < pid_map_size; i++) {
		while (pid_map[i]) {
			struct worker *w = pid_map[i];

			pid_map[i] = w->pid_next;
			w->pid_next = map[pid_slot(w->pid, size)];
			map[pid_slot(w->pid, size)] = w;
		}
	}
	free(pid_map);
	pid_map = map;
	pid_map_size = size;
	return 0;
}

/* Maps w->pid to w. */
void
sup_pid_add(struct worker *w)
{
	size_t slot;

	if (w->in_pid_map)
		return;
	/*
	 * The table exists from start-up, so adding never fails: if it cannot
	 * grow, its chains get longer. A worker missing from it would be taken
	 * for an escapee and killed.
	 */
	if (pid_map_count >= pid_map_size)
		pid_map_grow();
	slot = pid_slot(w->pid, pid_map_size);
	w->pid_next = pid_map[slot];
	pid_map[slot] = w;
	w->in_pid_map = true;
	pid_map_count++;
}

/* Unmaps w (reaped or freed). */
void
sup_pid_forget(struct worker *w)
{
	struct worker **pp;

	if (!w->in_pid_map)
		return;
	for (pp = &pid_map[pid_slot(w->pid, pid_map_size)]; *pp; pp = &(*pp)->pid_next) {
		if (*pp == w) {
			*pp = w->pid_next;
			break;
		}
	}
	w->pid_next = NULL;
	w->in_pid_map = false;
	pid_map_count--;
}

/* The unreaped worker of pid. */
struct worker *
sup_by_pid(pid_t pid)
{
	struct worker *w;

	for (w = pid_map[pid_slot(pid, pid_map_size)]; w; w = w->pid_next) {
		if (w->pid == pid)
			return w;
	}
	return NULL;
}

/* Lists w and counts it in its state. */
void
sup_link(struct worker *w)
{
	TAILQ_INSERT_TAIL(&herdd.workers, w, link);
	w->listed = true;
	herdd.nworkers[w->state]++;
	if (sup_state_ended(w->state))
		TAILQ_INSERT_TAIL(&herdd.exited, w, exited_link);
}

/* Takes w off the list and out of the counts. */
void
sup_unlink(struct worker *w)
{
	if (!w->listed)
		return;
	sample_forget(w);
	list_forget(w);
	TAILQ_REMOVE(&herdd.workers, w, link);
	w->listed = false;
	herdd.nworkers[w->state]--;
	if (sup_state_ended(w->state))
		TAILQ_REMOVE(&herdd.exited, w, exited_link);
}

/* Changes w's state and the counts with it. */
void
sup_set_state(struct worker *w, enum proto_state s)
{
	if (w->listed) {
		herdd.nworkers[w->state]--;
		herdd.nworkers[s]++;
		if (sup_state_ended(s) && !sup_state_ended(w->state))
			TAILQ_INSERT_TAIL(&herdd.exited, w, exited_link);
	}
	w->state = s;
}

static void
drop_waiters(struct worker *w)
{
	while (w->waiters) {
		struct waiter *x = w->waiters;

		w->waiters = x->next;
		x->conn->pending--;
		conn_unref(x->conn);
		json_decref(x->id);
		free(x);
	}
}

/*
 * Frees a record (the process must be reaped or never started), member by
 * member like every handle's free function in libclient: the members differ.
 */
void
sup_worker_free(struct worker *w)
{
	int i;

	if (!w)
		return;
	sup_pid_forget(w);
	ev_timer_stop(herdd.loop, &w->spawn_timer);
	ev_timer_stop(herdd.loop, &w->grace_timer);
	ev_timer_stop(herdd.loop, &w->hb_timer);
	ev_timer_stop(herdd.loop, &w->conn_timer);
	main_io_close(&w->errpipe_io, &w->errpipe);
	if (w->pidfd >= 0)
		close(w->pidfd);
	wnotify_close(w);
	free(w->status);
	if (w->channel) {
		conn_abort(w->channel);
		conn_unref(w->channel);
	}
	drop_waiters(w);
	if (w->owner)
		conn_unref(w->owner);
	for (i = 0; i < 2; i++) {
		capture_free(&w->cap[i]);
		free(w->out[i].path);
	}
	free(w->name);
	free(w->pool);
	free(w->path);
	free(w->cwd);
	free(w->message);
	json_decref(w->argv);
	json_decref(w->env);
	json_decref(w->init);
	json_decref(w->settings);
	free(w->functions);
	restart_free(w);
	free(w);
}

/* Registers a request answered later. */
int
sup_add_waiter(struct worker *w, struct conn *c, json_t *id, bool spawn)
{
	struct waiter *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	x->conn = conn_ref(c);
	x->id = id ? json_incref(id) : json_null();
	x->spawn = spawn;
	x->next = w->waiters;
	w->waiters = x;
	c->pending++;
	return 0;
}

/*
 * Answers and removes the spawn waiters (spawn true) or the others with
 * reply_proto, a reply without id. They are taken off the worker first:
 * sending may close a connection, whose callback edits waiter lists.
 */
void
sup_answer_waiters(struct worker *w, bool spawn, json_t *reply_proto)
{
	struct waiter **pp = &w->waiters, *mine = NULL;

	while (*pp) {
		struct waiter *x = *pp;

		if (x->spawn != spawn) {
			pp = &x->next;
			continue;
		}
		*pp = x->next;
		x->next = mine;
		mine = x;
	}
	while (mine) {
		struct waiter *x = mine;

		mine = x->next;
		x->conn->pending--;
		if (reply_proto) {
			json_t *m = json_copy(reply_proto);

			if (m) {
				json_object_set(m, "id", x->id);
				conn_send(x->conn, m);
			}
		}
		conn_unref(x->conn);
		json_decref(x->id);
		free(x);
	}
}

/* Finds a worker c may see. */
struct worker *
sup_find(const struct conn *c, const char *id)
{
	struct worker *w;

	TAILQ_FOREACH(w, &herdd.workers, link) {
		if (strcmp(w->id, id) == 0)
			return dispatch_may_see(c, w->uid) ? w : NULL;
	}
	return NULL;
}

/* Live workers of uid. */
unsigned
sup_count_uid(uid_t uid)
{
	struct worker *w;
	unsigned n = 0;

	TAILQ_FOREACH(w, &herdd.workers, link) {
		if (sup_is_live(w) && w->uid == uid)
			n++;
	}
	return n;
}

/* Live workers, those waiting to restart included. */
unsigned
sup_count_live(void)
{
	return herdd.nworkers[PROTO_STATE_STARTING] + herdd.nworkers[PROTO_STATE_READY] +
	    herdd.nworkers[PROTO_STATE_STOPPING] + herdd.nworkers[PROTO_STATE_RESTARTING];
}

json_t *
sup_signal_json(int sig)
{
	const char *abbrev = sig > 0 ? sigabbrev_np(sig) : NULL;
	char name[32];

	if (!abbrev)
		return sig > 0 ? json_integer(sig) : json_null();
	snprintf(name, sizeof(name), "SIG%s", abbrev);
	return json_string(name);
}

/* A wall-clock time as RFC 3339 text in UTC, to the millisecond, in buf (returned). */
const char *
sup_rfc3339_text(const struct timespec *ts, char *buf, size_t len)
{
	struct tm tm;
	size_t n;

	gmtime_r(&ts->tv_sec, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03ldZ", ts->tv_nsec / 1000000);
	return buf;
}

/* The same as a JSON string (new reference). */
json_t *
sup_rfc3339(const struct timespec *ts)
{
	char buf[64];

	return json_string(sup_rfc3339_text(ts, buf, sizeof(buf)));
}

void
sup_count_reason(enum proto_reason reason)
{
	if ((unsigned)reason < PROTO_REASON_COUNT)
		reason_counts[reason]++;
}

/* ---- retention ---- */

/*
 * Drops exited records past the per-uid count or older than the age limit.
 * It runs at every reap, so it walks only the exited records, which are kept
 * in the order they ended: the oldest come first.
 */
void
sup_prune(uid_t uid)
{
	int64_t oldest_allowed = now_ms() - (int64_t)herdd.cfg.keep_exited_ms;
	struct worker *w, *next;
	unsigned n = 0;

	while ((w = TAILQ_FIRST(&herdd.exited)) && w->ended_ms < oldest_allowed) {
		sup_unlink(w);
		sup_worker_free(w);
	}
	TAILQ_FOREACH(w, &herdd.exited, exited_link) {
		if (w->uid == uid)
			n++;
	}
	for (w = TAILQ_FIRST(&herdd.exited); w && n > herdd.cfg.keep_exited; w = next) {
		next = TAILQ_NEXT(w, exited_link);
		if (w->uid != uid)
			continue;
		sup_unlink(w);
		sup_worker_free(w);
		n--;
	}
}

static void
prune_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	sup_prune((uid_t)-1);
}
/* ---- stats ---- */

/* Workers by state and exits by reason. */
json_t *
sup_stats_json(void)
{
	json_t *states = json_object(), *reasons_o = json_object();
	int i;

	for (i = 0; states && i < PROTO_STATE_COUNT; i++)
		json_object_set_new(states, proto_state_name((enum proto_state)i),
		    json_integer((json_int_t)herdd.nworkers[i]));
	for (i = 0; reasons_o && i < PROTO_REASON_COUNT; i++)
		if (proto_reason_is_failure((enum proto_reason)i))
			json_object_set_new(reasons_o, proto_reason_name((enum proto_reason)i),
			    json_integer((json_int_t)reason_counts[i]));
	return json_pack("{s:o?, s:o?}", "workers", states, "failures", reasons_o);
}

/* Sets up the pid map and starts dropping old exited records. */
void
sup_records_start(void)
{
	if (pid_map_grow() < 0)
		fatal("out of memory");
	ev_timer_init(&prune_timer, prune_cb, PRUNE_INTERVAL_S, PRUNE_INTERVAL_S);
	ev_timer_start(herdd.loop, &prune_timer);
	sample_start();
}

/* Frees every record (after the loop ended). */
void
sup_records_free(void)
{
	struct worker *w;

	ev_timer_stop(herdd.loop, &prune_timer);
	sample_stop();
	while ((w = TAILQ_FIRST(&herdd.workers))) {
		sup_unlink(w);
		sup_worker_free(w);
	}
	free(pid_map);
	pid_map = NULL;
	pid_map_size = pid_map_count = 0;
}
