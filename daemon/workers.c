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
#include <stddef.h>
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

/*
 * An intrusive hash table: items chained through a void * member at offset
 * link, in a power-of-two array that doubles once it holds as many items as
 * slots, so chains stay short. It exists from start-up, so adding never
 * fails: if it cannot grow, its chains get longer.
 */
struct chain_map {
	void **slots;
	size_t size, count;
	size_t link; /* offsetof the item's next pointer */
	size_t (*hash)(const void *item);
};

#define CHAIN_MAP_MIN       64
#define CHAIN_NEXT(m, item) (*(void **)((char *)(item) + (m)->link))

static int
chain_grow(struct chain_map *m)
{
	size_t size = m->size ? m->size * 2 : CHAIN_MAP_MIN, i;
	void **slots = calloc(size, sizeof(*slots));

	if (!slots)
		return -ENOMEM;
	for (i = 0; i < m->size; i++) {
		while (m->slots[i]) {
			void *item = m->slots[i];
			size_t slot = m->hash(item) & (size - 1);

			m->slots[i] = CHAIN_NEXT(m, item);
			CHAIN_NEXT(m, item) = slots[slot];
			slots[slot] = item;
		}
	}
	free(m->slots);
	m->slots = slots;
	m->size = size;
	return 0;
}

static void
chain_add(struct chain_map *m, void *item)
{
	size_t slot;

	if (m->count >= m->size)
		chain_grow(m);
	slot = m->hash(item) & (m->size - 1);
	CHAIN_NEXT(m, item) = m->slots[slot];
	m->slots[slot] = item;
	m->count++;
}

static void
chain_remove(struct chain_map *m, void *item)
{
	void **pp = &m->slots[m->hash(item) & (m->size - 1)];

	while (*pp && *pp != item)
		pp = &CHAIN_NEXT(m, *pp);
	if (*pp) {
		*pp = CHAIN_NEXT(m, item);
		m->count--;
	}
	CHAIN_NEXT(m, item) = NULL;
}

/* The chain items of hash h are on (the caller walks it through their next pointers). */
static void *
chain_first(const struct chain_map *m, size_t h)
{
	return m->slots[h & (m->size - 1)];
}

static void
chain_free(struct chain_map *m)
{
	free(m->slots);
	m->slots = NULL;
	m->size = m->count = 0;
}

/* Pids are handed out nearly in sequence: the low bits spread them well. */
static size_t
pid_hash(const void *item)
{
	return (size_t)((const struct worker *)item)->pid;
}

/* Unreaped workers by pid. A worker missing from it would be taken for an escapee and killed. */
static struct chain_map pid_map = { .link = offsetof(struct worker, pid_next), .hash = pid_hash };

/* Maps w->pid to w. */
void
sup_pid_add(struct worker *w)
{
	if (w->in_pid_map)
		return;
	chain_add(&pid_map, w);
	w->in_pid_map = true;
}

/* Unmaps w (reaped or freed). */
void
sup_pid_forget(struct worker *w)
{
	if (!w->in_pid_map)
		return;
	chain_remove(&pid_map, w);
	w->in_pid_map = false;
}

/* The unreaped worker of pid. */
struct worker *
sup_by_pid(pid_t pid)
{
	struct worker *w;

	for (w = chain_first(&pid_map, (size_t)pid); w; w = w->pid_next) {
		if (w->pid == pid)
			return w;
	}
	return NULL;
}

/*
 * Listed workers by uid, live and exited: the per-uid spawn limit and the
 * pruning of exited records read these instead of walking every worker at
 * each spawn and each reap. Few uids: a small array. If it cannot grow, the
 * counts are abandoned and both walk the lists as they used to.
 */
struct uid_tally {
	uid_t uid;
	unsigned live, exited;
};
static struct uid_tally *tallies;
static size_t ntallies, tallies_cap;
static bool tallies_lost;

static struct uid_tally *
tally_find(uid_t uid)
{
	for (size_t i = 0; i < ntallies; i++) {
		if (tallies[i].uid == uid)
			return &tallies[i];
	}
	return NULL;
}

/* Counts w in state s (d = 1) or out of it (d = -1). */
static void
tally_add(const struct worker *w, enum proto_state s, int d)
{
	struct uid_tally *t = tally_find(w->uid);

	if (tallies_lost)
		return;
	if (!t && ntallies == tallies_cap) {
		size_t cap = tallies_cap ? tallies_cap * 2 : 8;
		struct uid_tally *grown = realloc(tallies, cap * sizeof(*grown));

		if (!grown) {
			tallies_lost = true;
			return;
		}
		tallies = grown;
		tallies_cap = cap;
	}
	if (!t) {
		t = &tallies[ntallies++];
		*t = (struct uid_tally){ .uid = w->uid };
	}
	if (sup_state_ended(s))
		t->exited += (unsigned)d;
	else
		t->live += (unsigned)d;
}

/* Lists w and counts it in its state. */
void
sup_link(struct worker *w)
{
	TAILQ_INSERT_TAIL(&herdd.workers, w, link);
	w->listed = true;
	herdd.nworkers[w->state]++;
	tally_add(w, w->state, 1);
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
	tally_add(w, w->state, -1);
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
		tally_add(w, w->state, -1);
		tally_add(w, s, 1);
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
		sup_waiter_free(x);
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
	if (w->spawn_channel >= 0)
		close(w->spawn_channel);
	if (w->spawn_conn)
		conn_unref(w->spawn_conn);
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
	free(w->text);
	json_decref(w->argv);
	json_decref(w->env);
	json_decref(w->init);
	json_decref(w->settings);
	free(w->functions);
	restart_free(w);
	free(w);
}

/* Integer and string ids (all a master sends) hash by value; json_equal decides. */
static size_t
waiter_hash(const struct conn *c, const json_t *id)
{
	size_t h = (size_t)(uintptr_t)c / sizeof(void *);

	if (json_is_integer(id)) {
		h ^= (size_t)json_integer_value(id) * 0x9e3779b97f4a7c15u;
	} else if (json_is_string(id)) {
		const char *s = json_string_value(id);

		for (size_t i = 0, n = json_string_length(id); i < n; i++)
			h = h * 33 + (unsigned char)s[i];
	}
	return h ^ h >> 17;
}

static size_t
waiter_item_hash(const void *item)
{
	const struct waiter *x = item;

	return waiter_hash(x->conn, x->id);
}

/*
 * Waiters by connection and id, for the duplicate-id check every request of a
 * connection with requests pending makes: a master with a thousand spawns in
 * flight would otherwise compare each new id with all of them.
 */
static struct chain_map waiter_map = { .link = offsetof(struct waiter, map_next),
	.hash = waiter_item_hash };

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
	chain_add(&waiter_map, x);
	c->pending++;
	return 0;
}

void
sup_waiter_free(struct waiter *x)
{
	chain_remove(&waiter_map, x);
	x->conn->pending--;
	conn_unref(x->conn);
	json_decref(x->id);
	free(x);
}

/* True if c has a pending request with this id. */
bool
sup_id_pending(const struct conn *c, const json_t *id)
{
	const struct waiter *x;

	for (x = chain_first(&waiter_map, waiter_hash(c, id)); x; x = x->map_next) {
		if (x->conn == c && json_equal(x->id, id))
			return true;
	}
	return false;
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
		if (reply_proto) {
			json_t *m = json_copy(reply_proto);

			if (m) {
				json_object_set(m, "id", x->id);
				conn_send(x->conn, m);
			}
		}
		sup_waiter_free(x);
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
	const struct uid_tally *t = tally_find(uid);
	struct worker *w;
	unsigned n = 0;

	if (!tallies_lost)
		return t ? t->live : 0;
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
	const struct uid_tally *t;
	struct worker *w, *next;
	unsigned n = 0;

	while ((w = TAILQ_FIRST(&herdd.exited)) && w->ended_ms < oldest_allowed) {
		sup_unlink(w);
		sup_worker_free(w);
	}
	t = tally_find(uid);
	if (!tallies_lost) {
		n = t ? t->exited : 0;
	} else {
		TAILQ_FOREACH(w, &herdd.exited, exited_link) {
			if (w->uid == uid)
				n++;
		}
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

/* Sets up the pid and waiter maps and starts dropping old exited records. */
void
sup_records_start(void)
{
	if (chain_grow(&pid_map) < 0 || chain_grow(&waiter_map) < 0)
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
	chain_free(&pid_map);
	chain_free(&waiter_map);
	free(tallies);
	tallies = NULL;
	ntallies = tallies_cap = 0;
	tallies_lost = false;
}
