/* SPDX-License-Identifier: MIT */
/*
 * Pools: a master connection of their own, N worker slots, and the engine
 * that drives them (an epoll fd over every connection, deadlines for
 * respawns and for deaths herdd has not explained yet). Jobs and tasks are
 * in pool-job.c.
 *
 * A slot's life: IDLE -> SPAWNING -> READY -> DYING -> IDLE (respawn after a
 * backoff) ... -> GONE once the pool closes or gives up. DYING is the moment
 * between losing the connection and hearing from herdd how the worker died
 * (the event carries the signal and the stderr tail a poison task's report
 * needs); it lasts until that event, or DYING_WAIT_USEC at most, and is
 * skipped when nothing needs the account (slot_may_bury_early()).
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "pool/pool-internal.h"

#define DEFAULT_WINDOW       4u
#define DEFAULT_RETRIES      3u
#define DEFAULT_MAX_RESTARTS 10u
#define DYING_WAIT_USEC      (2ull * 1000000ull)
#define BACKOFF_BASE_USEC    (50ull * 1000ull)
#define BACKOFF_MAX_USEC     (2ull * 1000000ull)
/* How long closing waits for herdd to confirm its workers stopped. */
#define CLOSE_WAIT_USEC (10ull * 1000000ull)

/* The pool's clock: CLOCK_MONOTONIC in microseconds. */
uint64_t
herd__pool_now(void)
{
	return herd__now_usec();
}

/* Remembers err as the pool's last error. */
void
herd__pool_set_error(struct herd_pool *p, herd_error *err)
{
	herd__error_set(&p->last_error, err);
}

/* ---- options ---- */

static unsigned
cpus_allowed(void)
{
	cpu_set_t set;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		return (unsigned)CPU_COUNT(&set);
	return 1;
}

static int
pool_options(struct herd_pool *p, json_t *opts, const char **ret_socket, json_t **ret_settings,
    json_t **ret_hosts)
{
	json_int_t workers = 0, window = DEFAULT_WINDOW, retries = DEFAULT_RETRIES, timeout = 0,
	           restarts = 0, chunksize = 0;
	const char *name = NULL;
	int retry_failed = 0, r;
	json_error_t err;

	*ret_socket = NULL;
	*ret_settings = NULL;
	*ret_hosts = NULL;
	if (opts &&
	    json_unpack_ex(opts, &err, JSON_STRICT,
	        "{s?I, s?I, s?I, s?b, s?I, s?I, s?s, s?s, s?o, s?I, s?o}", "workers", &workers,
	        "window", &window, "retries", &retries, "retry_failed", &retry_failed,
	        "task_timeout_ms", &timeout, "max_restarts", &restarts, "name", &name, "socket",
	        ret_socket, "settings", ret_settings, "chunksize", &chunksize, "hosts",
	        ret_hosts) < 0)
		return -EINVAL;
	if (workers < 0 || workers > 4096 || window < 1 || window > 1024 || retries < 0 ||
	    retries > 1000000 || timeout < 0 || restarts < 0 || chunksize < 0)
		return -EINVAL;
	if (chunksize > HERD_POOL_MAX_CHUNKSIZE)
		return -E2BIG;
	p->chunksize = (unsigned)chunksize;
	/* With "hosts", "workers" is the count of a host that names none. */
	r = herd__pool_hosts_parse(p, *ret_hosts, *ret_socket, (unsigned)workers);
	if (r < 0)
		return r;
	p->window = (unsigned)window;
	p->retries = (unsigned)retries;
	p->retry_failed = retry_failed;
	p->task_timeout_usec = (uint64_t)timeout * HERD__USEC_PER_MSEC;
	p->max_restarts = restarts ? (unsigned)restarts : DEFAULT_MAX_RESTARTS;
	p->max_restarts_set = restarts > 0;
	if (name)
		p->name = strdup(name);
	else if (asprintf(&p->name, "%s-pool", program_invocation_short_name) < 0)
		p->name = NULL;
	return p->name ? 0 : -ENOMEM;
}

/* The spawn options with "path" (this executable when absent). */
static int
pool_spawn_opts(struct herd_pool *p, json_t *spawn_opts)
{
	const char *self;

	if (spawn_opts && !json_is_object(spawn_opts))
		return -EINVAL;
	p->spawn_opts = spawn_opts ? json_deep_copy(spawn_opts) : json_object();
	if (!p->spawn_opts)
		return -ENOMEM;
	if (json_object_get(p->spawn_opts, "path"))
		return 0;
	self = herd_self_path();
	if (!self)
		return -ENOENT;
	return json_object_set_new(p->spawn_opts, "path", json_string(self)) < 0 ? -ENOMEM : 0;
}

/* ---- epoll over the connections ---- */

/*
 * Makes the epoll set follow conn's events. *reg remembers what is registered
 * so an unchanged connection costs no system call; a new connection starts
 * from a zeroed one (its fd number may be a closed one's, which epoll dropped).
 */
static void
epoll_follow(struct herd_pool *p, herd_conn *conn, struct ep_reg *reg)
{
	int fd = herd_conn_get_fd(conn), ev = herd_conn_get_events(conn);
	struct epoll_event e = { .events = EPOLLIN };

	if (fd < 0 || ev < 0)
		return;
	if (ev & POLLOUT)
		e.events |= EPOLLOUT;
	if (reg->fd == fd + 1 && reg->events == e.events)
		return;
	e.data.fd = fd;
	if (epoll_ctl(p->epfd, EPOLL_CTL_MOD, fd, &e) < 0 && errno == ENOENT)
		epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &e);
	reg->fd = fd + 1;
	reg->events = e.events;
}

static void
epoll_follow_all(struct herd_pool *p)
{
	for (unsigned i = 0; i < p->n_hosts; i++)
		if (p->hosts[i].m)
			epoll_follow(p, herd_master_get_conn(p->hosts[i].m), &p->hosts[i].reg);
	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].conn)
			epoll_follow(p, p->slots[i].conn, &p->slots[i].reg);
}

/* ---- deaths ---- */

/* The slot of worker id on host h (two herdds may give the same id). */
static struct slot *
slot_by_id(struct host *h, const char *id)
{
	struct herd_pool *p = h->pool;

	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].host == h && p->slots[i].w &&
		    strcmp(herd_worker_id(p->slots[i].w), id) == 0)
			return &p->slots[i];
	return NULL;
}

static uint64_t
backoff_usec(unsigned consecutive)
{
	uint64_t d;

	if (consecutive <= 1)
		return 0;
	d = BACKOFF_BASE_USEC << (consecutive - 2 < 16 ? consecutive - 2 : 16);
	return d < BACKOFF_MAX_USEC ? d : BACKOFF_MAX_USEC;
}

/* Every job ends with err (a new reference, taken) and nothing is spawned any more. */
static void
pool_end(struct herd_pool *p, herd_error *err)
{
	p->broken = true;
	p->broken_error = err;
	herd__pool_set_error(p, err);
	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].state == SLOT_IDLE)
			p->slots[i].state = SLOT_GONE;
	herd__pool_end_jobs(p, -EIO, err);
}

/* Too many deaths in a row: every job ends with crash_loop. */
static void
pool_give_up(struct herd_pool *p, herd_error *last)
{
	json_t *data;
	herd_error *err;
	char text[1024];

	if (p->broken)
		return;
	data = last ? json_deep_copy(herd_error_data(last)) : json_object();
	if (data)
		json_object_set_new(data, "name", json_string("crash_loop"));
	snprintf(text, sizeof(text),
	    "pool %s gave up: %u worker deaths or failed spawns in a row with no task finished; "
	    "last: %s",
	    p->name, p->consecutive, last ? herd_error_message(last) : "unknown");
	err = herd__error_new(HERD_E_WORKER_EXITED, text, data);
	json_decref(data);
	pool_end(p, err);
}

/* One more death or failed spawn: count it and schedule the respawn. */
static void
slot_died(struct slot *s, herd_error *why)
{
	struct herd_pool *p = s->pool;

	if (!s->host->m) {
		/* Its host is down: the host's loss is counted, not each worker's. */
		s->state = p->closed || s->host->gone ? SLOT_GONE : SLOT_IDLE;
		s->respawn_at = 0;
		return;
	}
	p->consecutive++;
	s->host->deaths++;
	s->state = p->closed ? SLOT_GONE : SLOT_IDLE;
	/* A host whose workers keep dying backs off even while the others progress. */
	s->respawn_at = herd__pool_now() +
	    backoff_usec(p->consecutive > s->host->deaths ? p->consecutive : s->host->deaths);
	if (!p->closed && p->consecutive >= p->max_restarts)
		pool_give_up(p, why);
}

/* herdd told why (or we stopped waiting): the orphans go back to the queue. */
static void
slot_bury(struct slot *s)
{
	struct herd_pool *p = s->pool;

	if (!s->death)
		s->death =
		    herd__error_newf(HERD_E_WORKER_EXITED, "worker %s of pool %s was lost (%s)",
		        herd_worker_id(s->w), p->name, s->lost_why);
	herd__pool_requeue(p, s);
	herd_worker_unref(s->w);
	s->w = NULL;
	slot_died(s, s->death);
	herd_error_unref(s->death);
	s->death = NULL;
}

/*
 * A first death since a task last finished, where no task it held is due to
 * be reported: its tasks go back to the queue and its replacement starts at
 * once, not after herdd's account of the death (only a report or the crash
 * loop's error needs it, and on busy CPUs it takes milliseconds to come).
 */
static bool
slot_may_bury_early(const struct slot *s)
{
	const struct herd_pool *p = s->pool;

	if (p->consecutive > 0)
		return false;
	for (const struct task *t = s->orphans.head; t; t = t->next)
		if (!t->folded && t->deaths + 1 > p->retries)
			return false;
	return true;
}

/* Drops s's connection; its tasks wait as orphans until herdd says how it died. */
void
herd__slot_lost(struct slot *s, const char *why)
{
	struct herd_pool *p = s->pool;
	herd_conn *conn = s->conn;

	if (s->state != SLOT_READY)
		return;
	s->state = p->closed ? SLOT_GONE : SLOT_DYING;
	p->n_deaths++;
	while (s->flight.head) {
		struct task *t = s->flight.head;

		/* Detached first: the failed reply closing the connection brings is ignored. */
		if (t->batch)
			herd__batch_abandon(t->batch);
		herd__task_list_push(&s->orphans, t, false);
	}
	s->n_batches = 0;
	while (s->folded.head)
		herd__task_list_push(&s->orphans, s->folded.head, false);
	s->conn = NULL;
	s->suspect_running = false;
	/* Pending calls fail now, with their tasks already orphans: their callbacks ignore them. */
	herd_conn_on_close(conn, NULL, NULL);
	herd_conn_close(conn);
	herd_conn_unref(conn);
	if (p->closed) {
		herd_worker_unref(s->w);
		s->w = NULL;
		return;
	}
	s->lost_why = why;
	s->dying_deadline = herd__pool_now() + DYING_WAIT_USEC;
	if (s->death || slot_may_bury_early(s))
		slot_bury(s);
}

static void
kill_done(herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *ud)
{
	/* The worker may have died by itself meanwhile (worker_not_found): nothing to do. */
}

/* SIGKILLs w through m (its herdd), without waiting: its death event follows. */
static void
kill_worker(herd_master *m, herd_worker *w)
{
	json_t *params;

	if (!m)
		return;
	params = json_pack("{s:s, s:s}", "id", herd_worker_id(w), "signal", "KILL");
	if (params)
		herd_master_request_async(m, "kill", params, kill_done, NULL);
	json_decref(params);
}

/* SIGKILLs s's worker through herdd, then drops it. */
void
herd__slot_kill(struct slot *s, const char *why)
{
	if (s->state != SLOT_READY)
		return;
	kill_worker(s->host->m, s->w);
	herd__slot_lost(s, why);
}

/* A task finished: the run of deaths without progress is over, for the pool and the host. */
void
herd__slot_progressed(struct slot *s)
{
	s->pool->consecutive = 0;
	s->host->deaths = 0;
}

/* A death record from herdd's event: message, signal, exit code, stderr tail. */
static herd_error *
death_error(struct herd_pool *p, const char *event, const char *id, const char *message,
    json_t *tail, json_t *worker)
{
	json_t *data = json_pack("{s:s, s:s, s:O, s:O?, s:O?, s:O?, s:O?}", "event", event,
	    "worker", id, "stderr_tail", tail, "pid", json_object_get(worker, "pid"), "signal",
	    json_object_get(worker, "signal"), "exit_code", json_object_get(worker, "exit_code"),
	    "reason", json_object_get(worker, "reason"));
	json_t *sig = json_object_get(worker, "signal");
	char how[64] = "", text[1024];
	herd_error *err;

	if (json_is_string(sig))
		snprintf(how, sizeof(how), " (%s)", json_string_value(sig));
	else if (json_is_integer(sig))
		snprintf(how, sizeof(how), " (signal %lld)", (long long)json_integer_value(sig));
	snprintf(text, sizeof(text), "worker %s of pool %s %s%s%s%s", id, p->name, event, how,
	    message ? ": " : "", message ? message : "");
	err = herd__error_new(HERD_E_WORKER_EXITED, text, data);
	json_decref(data);
	return err;
}

static void
master_event(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *tail, json_t *worker, void *userdata)
{
	struct host *h = userdata;
	struct herd_pool *p = h->pool;
	struct slot *s;

	/* The link is gone: host_lost() drops the host and its workers at once. */
	if (p->multi_host && strcmp(event, "host_lost") == 0) {
		h->lost = true;
		return;
	}
	if (strcmp(event, "ready") == 0 || !(s = slot_by_id(h, worker_id)))
		return;
	if (s->state != SLOT_READY && s->state != SLOT_DYING)
		return;
	herd_error_unref(s->death);
	s->death = death_error(p, event, worker_id, message, tail, worker);
	if (s->state == SLOT_READY)
		herd__slot_lost(s, event);
	else
		slot_bury(s);
}

/*
 * The worker closed (it died or exited: herdd's event tells how), or we gave
 * up on a live one (heartbeats stopped: its loop is stuck; a protocol
 * error): then it is killed, so it neither lingers nor keeps a CPU.
 */
static void
slot_conn_closed(herd_conn *conn, int reason, herd_error *err, void *userdata)
{
	if (reason == -ECONNRESET)
		herd__slot_lost(userdata, "connection closed");
	else
		herd__slot_kill(userdata, "connection lost");
}

/* ---- spawning ---- */

static void
spawn_done(herd_master *m, int r, herd_worker *w, herd_error *err, void *userdata)
{
	struct slot *s = userdata;
	struct herd_pool *p = s->pool;
	herd_error *cerr = NULL;
	herd_conn *conn = NULL;

	/* An answer from a master its lost host dropped: the slot was reset then. */
	if (m != s->host->m)
		return;
	if (p->closed || p->broken) {
		/* Kept for the stop at close, so it ends as a normal shutdown. */
		if (r == 0)
			s->w = herd_worker_ref(w);
		s->state = SLOT_GONE;
		return;
	}
	if (r == 0)
		r = herd_worker_connect(w, NULL, &conn, &cerr);
	if (r < 0) {
		herd_error *why = cerr ? cerr : err;

		/* Spawned but unreachable (its connection init failed...): it must not linger. */
		if (w)
			kill_worker(m, w);
		herd__pool_set_error(p, why);
		p->n_deaths++;
		slot_died(s, why);
		herd_error_unref(cerr);
		return;
	}
	p->n_spawns++;
	s->host->failures = 0;
	s->w = herd_worker_ref(w);
	s->conn = conn;
	s->state = SLOT_READY;
	herd_conn_set_call_timeout(
	    conn, p->task_timeout_usec ? p->task_timeout_usec : HERD_TIMEOUT_INFINITE);
	herd_conn_on_close(conn, slot_conn_closed, s);
	s->reg = (struct ep_reg){ 0 };
	epoll_follow(p, conn, &s->reg);
	herd__pool_dispatch(p);
}

static void
slot_spawn(struct slot *s)
{
	struct herd_pool *p = s->pool;
	json_t *opts = json_deep_copy(p->spawn_opts);
	char name[128];
	int r = -ENOMEM;

	snprintf(name, sizeof(name), "%s.%u", p->name, s->idx);
	/* herdd keeps the pool's name with the worker, for list and inspect. */
	if (opts && json_object_set_new(opts, "name", json_string(name)) == 0 &&
	    json_object_set_new(opts, "pool", json_string(p->name)) == 0)
		r = herd_master_spawn_async(s->host->m, opts, spawn_done, s);
	json_decref(opts);
	if (r < 0) {
		p->n_deaths++;
		slot_died(s, NULL);
		return;
	}
	s->gen++;
	s->state = SLOT_SPAWNING;
}

/* ---- hosts ---- */

static const char *
host_name(const struct host *h)
{
	return h->address ? h->address : "herdd";
}

/* m becomes h's master; h's slots may spawn at once. */
static void
host_install(struct host *h, herd_master *m)
{
	struct herd_pool *p = h->pool;

	h->m = m;
	herd_master_on_event(m, master_event, h);
	h->reg = (struct ep_reg){ 0 };
	h->lost = false;
	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].host == h && p->slots[i].state == SLOT_IDLE)
			p->slots[i].respawn_at = 0;
}

/* A blocking connect (the pool's creation). */
static int
host_connect(struct host *h, herd_error **ret_error)
{
	herd_master *m = NULL;
	int r = herd_master_connect(h->address, h->pool->settings, &m, ret_error);

	if (r == 0)
		host_install(h, m);
	return r;
}

/* h is unreachable (why): retried after a backoff, or given up after max_restarts in a row. */
static void
host_down(struct host *h, herd_error *why)
{
	struct herd_pool *p = h->pool;
	unsigned left = 0;

	h->failures++;
	herd__pool_set_error(p, why);
	if (h->failures < p->max_restarts) {
		h->retry_at = herd__pool_now() + backoff_usec(h->failures + 1);
		return;
	}
	h->gone = true;
	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].host == h)
			p->slots[i].state = SLOT_GONE;
	for (unsigned i = 0; i < p->n_hosts; i++)
		left += !p->hosts[i].gone;
	if (left == 0 && !p->broken)
		pool_end(p,
		    herd__error_newf(HERD_E_CONNECTION_CLOSED,
		        "pool %s lost every host (each %u times in a row); last: %s", p->name,
		        p->max_restarts, herd_error_message(why)));
}

/*
 * h's link is gone: its workers are lost together, their tasks go back to
 * the queue without a death counted against them (pool-task.c), and the
 * host is retried. The rest of the pool carries on.
 */
static void
host_lost(struct host *h, const char *why)
{
	struct herd_pool *p = h->pool;
	herd_master *m = h->m;
	herd_error *err;

	if (!m)
		return;
	h->m = NULL;
	h->lost = false;
	p->n_hosts_lost++;
	err = herd__error_newf(
	    HERD_E_CONNECTION_CLOSED, "pool %s lost host %s (%s)", p->name, host_name(h), why);
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];

		if (s->host != h)
			continue;
		if (s->state == SLOT_SPAWNING)
			s->state = SLOT_IDLE;
		if (s->state != SLOT_READY && s->state != SLOT_DYING)
			continue;
		if (!s->death)
			s->death = herd_error_ref(err);
		if (s->state == SLOT_READY)
			herd__slot_lost(s, "host lost");
		else
			slot_bury(s);
	}
	/* Spawns still pending fail here; spawn_done knows them by their old master. */
	herd_master_on_event(m, NULL, NULL);
	herd_master_close(m);
	herd_master_unref(m);
	host_down(h, err);
	herd_error_unref(err);
}

/* The connector thread: the master is handed over to the pool's thread when it is done. */
static void *
host_connector(void *arg)
{
	struct host *h = arg;

	h->new_r = herd_master_connect(h->address, h->connect_settings, &h->new_m, &h->new_err);
	__atomic_store_n(&h->connected, 1, __ATOMIC_RELEASE);
	eventfd_write(h->pool->wake_fd, 1);
	return NULL;
}

/*
 * A down host's retry is due: a new link, made on a thread of its own, so
 * that a host that does not answer (a cut network: ssh waits for its
 * connect timeout) stalls nothing while the other hosts work.
 */
static void
host_retry(struct host *h)
{
	struct herd_pool *p = h->pool;
	herd_error *err;
	int r;

	h->connected = 0;
	h->new_m = NULL;
	h->new_err = NULL;
	h->connect_settings = p->settings ? json_deep_copy(p->settings) : NULL;
	r = -pthread_create(&h->connector, NULL, host_connector, h);
	if (r == 0) {
		h->connecting = true;
		return;
	}
	json_decref(h->connect_settings);
	h->connect_settings = NULL;
	err = herd__error_newf(HERD_E_CONNECTION_CLOSED, "pool %s cannot reach host %s: %s",
	    p->name, host_name(h), strerror(-r));
	host_down(h, err);
	herd_error_unref(err);
}

/* Waits for h's connector; returns its master (or NULL, with *ret_error when given). */
static herd_master *
host_join(struct host *h, herd_error **ret_error)
{
	herd_master *m = h->new_m;

	pthread_join(h->connector, NULL);
	h->connecting = false;
	json_decref(h->connect_settings);
	h->connect_settings = NULL;
	h->new_m = NULL;
	if (ret_error)
		*ret_error = h->new_err;
	else
		herd_error_unref(h->new_err);
	h->new_err = NULL;
	return m;
}

/* Connectors that are done: their host is back, or down again. */
static void
pool_reap_connectors(struct herd_pool *p)
{
	eventfd_t v;

	eventfd_read(p->wake_fd, &v);
	for (unsigned i = 0; i < p->n_hosts; i++) {
		struct host *h = &p->hosts[i];
		herd_error *err = NULL;
		herd_master *m;

		if (!h->connecting || !__atomic_load_n(&h->connected, __ATOMIC_ACQUIRE))
			continue;
		m = host_join(h, &err);
		if (m) {
			host_install(h, m);
			continue;
		}
		if (!err)
			err = herd__error_newf(HERD_E_CONNECTION_CLOSED,
			    "pool %s cannot reach host %s", p->name, host_name(h));
		host_down(h, err);
		herd_error_unref(err);
	}
}

/* ---- the engine ---- */

/* Timers: host retries, respawns due, deaths herdd has not explained in time. */
static void
pool_timers(struct herd_pool *p)
{
	uint64_t now = herd__pool_now();

	for (unsigned i = 0; i < p->n_hosts && !p->closed && !p->broken; i++)
		if (!p->hosts[i].m && !p->hosts[i].gone && !p->hosts[i].connecting &&
		    now >= p->hosts[i].retry_at)
			host_retry(&p->hosts[i]);
	for (unsigned i = 0; i < p->n_slots && !p->closed; i++) {
		struct slot *s = &p->slots[i];

		if (s->state == SLOT_DYING && now >= s->dying_deadline)
			slot_bury(s);
		else if (s->state == SLOT_IDLE && !p->broken && s->host->m && now >= s->respawn_at)
			slot_spawn(s);
	}
}

static int
conn_drain(herd_conn *conn)
{
	int r, progress = 0;

	herd_conn_ref(conn);
	while ((r = herd_conn_process(conn)) > 0)
		progress = 1;
	herd_conn_unref(conn);
	return r < 0 ? r : progress;
}

/* Processes every host's master connection; a lost one is the pool's end, or with "hosts" the host's. */
static int
pool_drain_hosts(struct herd_pool *p)
{
	int r, progress = 0;

	for (unsigned i = 0; i < p->n_hosts; i++) {
		struct host *h = &p->hosts[i];

		if (!h->m)
			continue;
		r = conn_drain(herd_master_get_conn(h->m));
		progress |= r > 0;
		if (r < 0 && p->multi_host) {
			host_lost(h, "its link is gone");
			progress = 1;
		} else if (r < 0 && !p->broken) {
			herd_error *err = herd__error_newf(HERD_E_CONNECTION_CLOSED,
			    "pool %s lost its connection to herdd", p->name);

			p->consecutive = p->max_restarts;
			pool_give_up(p, err);
			herd_error_unref(err);
		}
	}
	return progress;
}

/* Hosts whose master reported host_lost while connections were processed. */
static void
pool_drop_lost_hosts(struct herd_pool *p)
{
	for (unsigned i = 0; i < p->n_hosts; i++)
		if (p->hosts[i].lost)
			host_lost(&p->hosts[i], "host_lost");
}

HERD_EXPORT int
herd_pool_process(herd_pool *p)
{
	int progress;

	if (!p)
		return -EINVAL;
	if (p->closed)
		return -ENOTCONN;
	if (p->processing)
		return 0;
	p->processing++;
	herd_pool_ref(p);
	progress = pool_drain_hosts(p);
	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].conn)
			progress |= conn_drain(p->slots[i].conn) > 0;
	pool_drop_lost_hosts(p);
	pool_reap_connectors(p);
	pool_timers(p);
	herd__pool_dispatch(p);
	herd__pool_check_jobs(p);
	if (!p->closed)
		epoll_follow_all(p);
	p->processing--;
	if (p->loop)
		herd__pool_update_ev(p);
	herd_pool_unref(p);
	return progress;
}

HERD_EXPORT int
herd_pool_get_fd(herd_pool *p)
{
	if (!p)
		return -EINVAL;
	return p->closed ? -ENOTCONN : p->epfd;
}

HERD_EXPORT int
herd_pool_get_events(herd_pool *p)
{
	if (!p)
		return -EINVAL;
	return p->closed ? -ENOTCONN : POLLIN;
}

static uint64_t
min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

HERD_EXPORT int
herd_pool_get_timeout(herd_pool *p, uint64_t *ret_usec)
{
	uint64_t t = HERD_TIMEOUT_INFINITE, c;

	if (!p || !ret_usec)
		return -EINVAL;
	if (p->closed)
		return -ENOTCONN;
	if (p->kick)
		t = 0;
	for (unsigned i = 0; i < p->n_hosts; i++) {
		struct host *h = &p->hosts[i];

		if (h->m && herd_conn_get_timeout(herd_master_get_conn(h->m), &c) == 0)
			t = min_u64(t, c);
		if (!h->m && !h->gone && !h->connecting && !p->broken)
			t = min_u64(t, h->retry_at);
	}
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];

		if (s->conn && herd_conn_get_timeout(s->conn, &c) == 0)
			t = min_u64(t, c);
		if (s->state == SLOT_DYING)
			t = min_u64(t, s->dying_deadline);
		if (s->state == SLOT_IDLE && !p->broken && s->host->m)
			t = min_u64(t, s->respawn_at);
	}
	*ret_usec = t;
	return 0;
}

HERD_EXPORT int
herd_pool_wait(herd_pool *p, uint64_t timeout_usec)
{
	struct epoll_event ev[8];
	uint64_t deadline, t;
	int r;

	r = herd_pool_get_timeout(p, &t);
	if (r < 0)
		return r;
	deadline = min_u64(t, herd__deadline(timeout_usec));
	/* Every wait inside libherd keeps the process's other connections alive. */
	deadline = min_u64(deadline, herd__keepalive(NULL));
	r = epoll_wait(p->epfd, ev, 8, herd__poll_ms(deadline));
	if (r < 0)
		return -errno;
	return r > 0 || herd__pool_now() >= t;
}

/* Runs the pool until *done or the deadline (-ETIMEDOUT). */
int
herd__pool_run(struct herd_pool *p, const bool *done, uint64_t deadline)
{
	int r;

	while (!*done) {
		r = herd_pool_process(p);
		if (r < 0)
			return r;
		if (r > 0 || *done)
			continue;
		if (herd__pool_now() >= deadline)
			return -ETIMEDOUT;
		r = herd_pool_wait(p,
		    deadline == HERD_TIMEOUT_INFINITE ? HERD_TIMEOUT_INFINITE
		                                      : deadline - herd__pool_now());
		if (r < 0 && r != -EINTR)
			return r;
	}
	return 0;
}

/* ---- life cycle ---- */

static bool
pool_has_ready(struct herd_pool *p)
{
	for (unsigned i = 0; i < p->n_slots; i++)
		if (p->slots[i].state == SLOT_READY)
			return true;
	return p->broken;
}

/* Runs until a slot is ready or the pool gave up. */
static int
pool_wait_first(struct herd_pool *p)
{
	int r;

	while (!pool_has_ready(p)) {
		r = herd_pool_process(p);
		if (r < 0)
			return r;
		if (r == 0 && !pool_has_ready(p)) {
			r = herd_pool_wait(p, HERD_TIMEOUT_INFINITE);
			if (r < 0 && r != -EINTR)
				return r;
		}
	}
	return p->broken ? -EIO : 0;
}

/*
 * Connects to every host. Without "hosts" a failure is the pool's; with
 * it, a host that cannot be reached is retried later, unless none can.
 */
static int
hosts_connect(struct herd_pool *p, herd_error **ret_error)
{
	herd_error *first = NULL;
	unsigned up = 0;
	int r, first_r = 0;

	for (unsigned i = 0; i < p->n_hosts; i++) {
		herd_error *err = NULL;

		r = host_connect(&p->hosts[i], &err);
		if (r == 0) {
			up++;
			continue;
		}
		if (!first_r) {
			first_r = r;
			first = herd_error_ref(err);
		}
		if (!err)
			err = herd__error_newf(HERD_E_CONNECTION_CLOSED,
			    "pool %s cannot reach host %s: %s", p->name, host_name(&p->hosts[i]),
			    strerror(-r));
		host_down(&p->hosts[i], err);
		herd_error_unref(err);
	}
	if (up == 0 && ret_error)
		*ret_error = herd_error_ref(first);
	herd_error_unref(first);
	return up ? 0 : first_r;
}

static int
pool_setup(struct herd_pool *p, json_t *spawn_opts, json_t *pool_opts, herd_error **ret_error)
{
	static unsigned pool_seq;
	const char *socket;
	json_t *settings, *hosts;
	int r;

	r = pool_options(p, pool_opts, &socket, &settings, &hosts);
	if (r == 0)
		r = pool_spawn_opts(p, spawn_opts);
	if (r < 0)
		return r;
	p->epfd = epoll_create1(EPOLL_CLOEXEC);
	p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->epfd < 0 || p->wake_fd < 0 ||
	    epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wake_fd,
	        &(struct epoll_event){ .events = EPOLLIN, .data.fd = p->wake_fd }) < 0)
		return -ENOMEM;
	snprintf(p->key_prefix, sizeof(p->key_prefix), "%d.%u", (int)getpid(),
	    __atomic_add_fetch(&pool_seq, 1, __ATOMIC_RELAXED));
	p->settings = json_incref(settings);
	/* Connected first: a host without a count takes what its herdd says it has. */
	r = hosts_connect(p, ret_error);
	if (r == 0)
		r = herd__pool_hosts_count(p, cpus_allowed());
	if (r < 0)
		return r;
	if (!p->max_restarts_set && p->max_restarts < 2 * p->n_slots)
		p->max_restarts = 2 * p->n_slots;
	p->slots = calloc(p->n_slots, sizeof(*p->slots));
	if (!p->slots)
		return -ENOMEM;
	for (unsigned i = 0, k = 0; i < p->n_hosts; i++)
		for (unsigned j = 0; j < p->hosts[i].workers; j++, k++)
			p->slots[k] = (struct slot){ .pool = p, .host = &p->hosts[i], .idx = k };
	for (unsigned i = 0; r == 0 && i < p->n_slots; i++)
		if (p->slots[i].host->m)
			slot_spawn(&p->slots[i]);
	return r;
}

HERD_EXPORT int
herd_pool_new(json_t *spawn_opts, json_t *pool_opts, herd_pool **ret, herd_error **ret_error)
{
	struct herd_pool *p;
	int r;

	if (ret_error)
		*ret_error = NULL;
	if (!ret)
		return -EINVAL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->n_ref = 1;
	p->epfd = -1;
	p->wake_fd = -1;
	r = pool_setup(p, spawn_opts, pool_opts, ret_error);
	if (r == 0)
		r = pool_wait_first(p);
	if (r < 0) {
		if (ret_error && !*ret_error && (p->broken_error || p->last_error))
			*ret_error =
			    herd_error_ref(p->broken_error ? p->broken_error : p->last_error);
		herd_pool_unref(p);
		return r;
	}
	*ret = p;
	return 0;
}

static void pool_close(struct herd_pool *p);

/* Member by member like every handle's free function (master.c, error.c): the members differ. */
static void
pool_free(struct herd_pool *p)
{
	pool_close(p);
	herd__pool_forget_jobs(p);
	herd__pool_hosts_free(p);
	json_decref(p->settings);
	if (p->epfd >= 0)
		close(p->epfd);
	if (p->wake_fd >= 0)
		close(p->wake_fd);
	free(p->slots);
	free(p->spare_batch);
	json_decref(p->batch_args);
	herd__pool_free_tasks(p);
	json_decref(p->spawn_opts);
	free(p->name);
	herd_error_unref(p->broken_error);
	herd_error_unref(p->last_error);
	free(p);
}

HERD__DEFINE_REF_UNREF(herd_pool, herd_pool, pool_free)

static void
stop_done(herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *ud)
{
	struct host *h = ud;

	h->stops_pending--;
}

/* Processes h's master until pending() is false or the deadline passes. */
static void
host_wait(struct host *h, bool (*pending)(struct host *), uint64_t deadline)
{
	herd_conn *mc = herd_master_get_conn(h->m);
	int r;

	while (pending(h) && herd__now_usec() < deadline) {
		r = herd_conn_process(mc);
		if (r < 0 ||
		    (r == 0 && pending(h) && herd_conn_wait(mc, deadline - herd__now_usec()) < 0))
			break;
	}
}

static bool
host_spawning(struct host *h)
{
	for (unsigned i = 0; i < h->pool->n_slots; i++)
		if (h->pool->slots[i].host == h && h->pool->slots[i].state == SLOT_SPAWNING)
			return true;
	return false;
}

static bool
host_stopping(struct host *h)
{
	return h->stops_pending > 0;
}

/* Asks h's herdd to stop every worker of the pool still up there and waits for its answers. */
static void
host_stop_workers(struct host *h, uint64_t deadline)
{
	struct herd_pool *p = h->pool;

	/*
	 * Spawns in flight answer first: their workers are stopped like the others.
	 * Process until nothing is left before waiting: a spawn answer handled here
	 * connects to its worker (a nested blocking call), which can leave the next
	 * answer read but not dispatched, and the socket would then stay quiet.
	 */
	host_wait(h, host_spawning, deadline);
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];
		json_t *params;

		if (s->host != h)
			continue;
		if (s->conn) {
			herd_conn *c = s->conn;

			s->conn = NULL;
			herd_conn_on_close(c, NULL, NULL);
			herd_conn_close(c);
			herd_conn_unref(c);
		}
		if (s->w) {
			params = json_pack("{s:s}", "id", herd_worker_id(s->w));
			if (params &&
			    herd_master_request_async(h->m, "shutdown", params, stop_done, h) == 0)
				h->stops_pending++;
			json_decref(params);
			s->w = herd_worker_unref(s->w);
		}
		s->state = SLOT_GONE;
	}
	host_wait(h, host_stopping, deadline);
}

/* Stops the workers on every host still up, then closes the hosts' masters. */
static void
pool_stop_workers(struct herd_pool *p)
{
	uint64_t deadline = herd__deadline(CLOSE_WAIT_USEC);

	for (unsigned i = 0; i < p->n_hosts; i++) {
		/* A reconnect under way ends first (at most its connect timeout): nothing runs there yet. */
		if (p->hosts[i].connecting) {
			herd_master *m = host_join(&p->hosts[i], NULL);

			herd_master_close(m);
			herd_master_unref(m);
		}
		if (p->hosts[i].m)
			host_stop_workers(&p->hosts[i], deadline);
	}
	for (unsigned i = 0; i < p->n_slots; i++) {
		/* Workers of a host that is down: their link took them. */
		p->slots[i].w = herd_worker_unref(p->slots[i].w);
		p->slots[i].state = SLOT_GONE;
	}
	for (unsigned i = 0; i < p->n_hosts; i++) {
		if (p->hosts[i].m) {
			herd_master_on_event(p->hosts[i].m, NULL, NULL);
			herd_master_close(p->hosts[i].m);
		}
	}
}

/* Closes p; the caller holds a reference (or is freeing it). */
static void
pool_close(struct herd_pool *p)
{
	herd_error *err;

	if (p->closed)
		return;
	if (!p->slots) {
		/* herd_pool_new failed before it had anything to stop. */
		p->closed = true;
		return;
	}
	err = herd__error_newf(HERD_E_CANCELLED, "pool %s closed", p->name);
	herd__pool_end_jobs(p, -ECANCELED, err);
	herd_error_unref(err);
	p->closed = true;
	if (p->loop)
		herd_pool_detach_ev(p);
	for (unsigned i = 0; i < p->n_slots; i++) {
		herd_error_unref(p->slots[i].death);
		p->slots[i].death = NULL;
	}
	pool_stop_workers(p);
}

HERD_EXPORT int
herd_pool_close(herd_pool *p)
{
	if (!p)
		return -EINVAL;
	herd_pool_ref(p);
	pool_close(p);
	herd_pool_unref(p);
	return 0;
}

/* ---- getters ---- */

HERD__DEFINE_GETTER(herd_pool_get_master, herd_pool, herd_master *, p->hosts[0].m, NULL)
HERD__DEFINE_GETTER(herd_pool_last_error, herd_pool, herd_error *, p->last_error, NULL)
HERD__DEFINE_GETTER(herd_pool_size, herd_pool, int, (int)p->n_slots, -EINVAL)

HERD_EXPORT int
herd_pool_worker_pids(herd_pool *p, pid_t *pids, size_t max)
{
	int n = 0;

	if (!p || (!pids && max))
		return -EINVAL;
	for (unsigned i = 0; i < p->n_slots; i++) {
		if (p->slots[i].state != SLOT_READY)
			continue;
		if ((size_t)n < max)
			pids[n] = herd_worker_pid(p->slots[i].w);
		n++;
	}
	return n;
}

HERD__DEFINE_GETTER(herd_pool_deaths, herd_pool, uint64_t, p->n_deaths, 0)
HERD__DEFINE_GETTER(herd_pool_spawns, herd_pool, uint64_t, p->n_spawns, 0)
HERD__DEFINE_GETTER(herd_pool_hosts_lost, herd_pool, uint64_t, p->n_hosts_lost, 0)

HERD_EXPORT int
herd_pool_hosts_up(herd_pool *p)
{
	int n = 0;

	if (!p)
		return -EINVAL;
	for (unsigned i = 0; i < p->n_hosts; i++)
		n += p->hosts[i].m != NULL;
	return n;
}
