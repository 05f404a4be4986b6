/* SPDX-License-Identifier: MIT */
/*
 * Pools' internals: the pool (its master connection, worker slots, an epoll
 * fd over every connection) in pool.c, jobs and tasks in pool-job.c.
 *
 * Where a task is: exactly one of the pool's retry queue, a slot's in-flight
 * list, a slot's folded list (REDUCE with a worker combine: acknowledged by
 * herd.fold, not yet covered by a herd.take), a dying slot's orphan list, or
 * freed (its outcome delivered). Moving a task is always a list move, never
 * a copy, which is what makes "exactly once" checkable.
 */
#ifndef HERD_POOL_INTERNAL_H
#define HERD_POOL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <ev.h>

#include "client/client-internal.h"
#include "herd/herd-ev.h"
#include "herd/pool.h"

struct host;
struct slot;
struct task;

/* A doubly linked list head; tasks carry the links. */
struct task_list {
	struct task *head, *tail;
	unsigned n;
};

struct task {
	struct herd_job *job;
	size_t index;
	json_t *arg;
	unsigned deaths; /* workers lost while this task ran on them */
	unsigned failures; /* handler failures (retry_failed) */
	bool folded; /* acknowledged by herd.fold or a folding herd.batch */
	bool timed_out; /* its worker was killed because it overran */
	unsigned cap; /* most tasks it may share a message with (0: the job's chunksize) */
	struct slot *slot; /* where it runs or is folded; NULL when queued */
	struct batch *batch; /* the dispatch in flight; NULL otherwise */
	unsigned batch_pos; /* its place in batch->tasks */
	herd_error *death; /* how its last worker died (timeout, crash) */
	struct task_list *list;
	struct task *prev, *next;
};

/*
 * One dispatch: the tasks of one job sent to a slot in one message (a plain
 * call or herd.fold for one task, herd.batch for more). It lives exactly as
 * long as its call: allocated before the call is sent, freed by the call's
 * callback, which runs exactly once. A task leaving it (freed, orphaned)
 * clears its entry; a batch whose tasks all left is "abandoned" and its
 * reply, whenever it comes, is ignored.
 */
struct batch {
	struct slot *slot;
	herd_pending *call; /* NULL once abandoned or answered */
	unsigned cap; /* room in tasks[] */
	unsigned n; /* tasks sent */
	unsigned n_live; /* entries of tasks[] still set */
	bool plain; /* one task as a plain call or herd.fold, not herd.batch */
	struct task *tasks[];
};

enum slot_state {
	SLOT_IDLE, /* no worker; respawn at respawn_at */
	SLOT_SPAWNING, /* spawn request sent */
	SLOT_READY, /* connected, serving tasks */
	SLOT_DYING, /* connection gone: waiting for herdd's word on why */
	SLOT_GONE, /* the pool gave up or closed */
};

/* What a connection has registered in the pool's epoll set (fd + 1: 0 is none). */
struct ep_reg {
	int fd;
	uint32_t events;
};

/*
 * One herdd the pool spawns on (pool-host.c reads the list): its master
 * connection, NULL while the host is down. A lost host is retried with
 * backoff until it has failed max_restarts times in a row, then given up.
 */
struct host {
	struct herd_pool *pool;
	char *address; /* NULL: the default herdd (herd_master_connect()) */
	unsigned workers; /* slots it carries */
	herd_master *m;
	struct ep_reg reg;
	bool lost; /* its master reported host_lost: dropped at the next round */
	bool gone; /* given up */
	unsigned failures; /* losses and failed connects since a worker last started there */
	unsigned deaths; /* worker deaths and failed spawns there since a task finished there */
	uint64_t retry_at;
	unsigned stops_pending; /* shutdown requests sent by close, unanswered */
	/* A reconnect runs on a thread of its own (pool.c: host_retry()). */
	bool connecting;
	pthread_t connector;
	int connected; /* set (atomic) by the connector when it is done */
	json_t *connect_settings; /* the connector's own copy */
	herd_master *new_m;
	herd_error *new_err;
	int new_r;
};

struct slot {
	struct herd_pool *pool;
	struct host *host;
	unsigned idx;
	unsigned gen; /* incremented at each spawn: accumulator names change with it */
	enum slot_state state;
	herd_worker *w;
	herd_conn *conn;
	struct task_list flight;
	struct task_list folded;
	struct task_list orphans; /* held while dying */
	unsigned n_batches; /* dispatches in flight */
	unsigned n_takes; /* herd.take requests in flight */
	bool suspect_running; /* a suspect runs alone: nothing else is dispatched */
	uint64_t respawn_at;
	uint64_t dying_deadline;
	herd_error *death; /* what herdd said about the death, once known */
	const char *lost_why; /* why we dropped the connection (static text) */
	struct ep_reg reg;
};

struct herd_pool {
	unsigned n_ref;
	struct host *hosts; /* one without the "hosts" option: the pool's herdd */
	unsigned n_hosts;
	bool multi_host; /* "hosts" given: a lost host is retried, not the pool's end */
	json_t *settings; /* the master connections' (reconnects) */
	uint64_t n_hosts_lost;
	json_t *spawn_opts; /* with "path" */
	char *name;
	int epfd;
	int wake_fd; /* an eventfd in epfd: a host's connector is done */
	unsigned n_slots;
	struct slot *slots;
	unsigned window;
	unsigned chunksize; /* 0: automatic */
	unsigned retries;
	bool retry_failed;
	uint64_t task_timeout_usec;
	unsigned max_restarts;
	bool max_restarts_set; /* given: not raised to 2 x the workers */
	unsigned consecutive; /* deaths and failed spawns since a task last finished */
	uint64_t n_deaths, n_spawns;
	bool broken; /* gave up (crash loop) */
	bool closed;
	herd_error *broken_error;
	herd_error *last_error;
	char key_prefix[64]; /* accumulator names: unique per process and pool */
	uint64_t next_job_id;

	struct task_list retry; /* tasks to dispatch again, before new ones */
	struct batch *spare_batch; /* a freed batch kept for the next (pool-task.c) */
	json_t *batch_args; /* herd.batch's args array, emptied and reused for the next */
	struct task *free_tasks; /* freed tasks kept for the next ones (pool-task.c) */
	unsigned n_free_tasks;
	struct herd_job *jobs; /* running jobs, in start order */
	unsigned processing; /* depth of herd_pool_process(): no re-entry */
	bool kick; /* something to do at once (a job just started) */

	struct ev_loop *loop;
	struct herd__ev_pair ev; /* its io watches epfd */
};

struct outcome {
	bool have;
	int r;
	json_t *result;
	herd_error *err;
};

struct herd_job {
	unsigned n_ref;
	struct herd_pool *pool;
	uint64_t id;
	enum herd_job_kind kind;
	char *function;
	unsigned flags;
	unsigned chunksize; /* as set (0: the pool's), then in effect once started */
	json_t *args;
	herd_job_next_fn next;
	void *next_data;
	char *worker_combine;
	herd_combine_fn combine;
	void *combine_data;
	herd_predicate_fn pred;
	void *pred_data;
	herd_task_cb on_task;
	void *task_data;
	herd_job_done_cb on_done;
	void *done_data;
	herd_progress_cb on_progress;
	void *progress_data;

	bool started, exhausted, done;
	size_t n_fed; /* tasks created so far */
	size_t n_finished; /* tasks whose outcome is final */
	uint64_t n_ok, n_failed, n_retried;
	uint64_t started_at, progress_at;
	int r;
	json_t *value; /* MAP: results array; REDUCE: accumulator; FIND/CALL: the answer */
	herd_error *error;
	/* In-order delivery (MAP with on_task, REDUCE_ORDERED): outcomes from next_emit on. */
	struct outcome *pending;
	size_t pending_cap;
	size_t next_emit;
	struct herd_job *next_job;
};

/* ---- pool.c ---- */

uint64_t herd__pool_now(void);
/* The connection of a slot broke (or must be dropped): requeue its tasks once herdd tells why. */
void herd__slot_lost(struct slot *s, const char *why);
/* Kills a slot's worker through herdd (a task overran), then drops it. */
void herd__slot_kill(struct slot *s, const char *why);
/* A task finished on s's worker: the crash-loop counts (the pool's, its host's) start over. */
void herd__slot_progressed(struct slot *s);
void herd__pool_set_error(struct herd_pool *p, herd_error *err);
/* Runs the pool until *done or the absolute deadline (-ETIMEDOUT). */
int herd__pool_run(struct herd_pool *p, const bool *done, uint64_t deadline);

/* ---- pool-host.c ---- */

/*
 * Fills p->hosts from the "hosts" option (NULL: one host, socket); workers
 * is the count for a host that names none (0: decided once connected).
 */
int herd__pool_hosts_parse(
    struct herd_pool *p, json_t *hosts, const char *socket, unsigned workers);
/* Once the hosts are connected: every count decided (cpus: this machine's), p->n_slots set. */
int herd__pool_hosts_count(struct herd_pool *p, unsigned cpus);
void herd__pool_hosts_free(struct herd_pool *p);

/* ---- pool-ev.c ---- */

/* Re-arms the libev watchers after processing. */
void herd__pool_update_ev(struct herd_pool *p);

/* ---- pool-task.c ---- */

void herd__task_list_push(struct task_list *l, struct task *t, bool front);
void herd__task_list_remove(struct task *t);
/* Frees t wherever it is, leaving its dispatch (cancelled once no task is left in it). */
void herd__task_free(struct task *t);
/* Frees the tasks the pool keeps for reuse (the pool is being freed). */
void herd__pool_free_tasks(struct herd_pool *p);
/* Takes t out of its dispatch, which is abandoned (its call cancelled) once empty. */
void herd__task_unbatch(struct task *t);
/* Takes every task out of b (its worker is lost): its reply, when it comes, frees it. */
void herd__batch_abandon(struct batch *b);
/* herd_call_async() on s's worker, holding the connection across the call. */
int herd__slot_call(struct slot *s, const char *method, json_t *params, herd_call_cb cb,
    void *userdata, herd_pending **ret_call);
/* The name of job's accumulator on s's current worker. */
void herd__acc_name(char *buf, size_t len, const struct slot *s, const struct herd_job *job);
/* Hands tasks to every ready slot with room. */
void herd__pool_dispatch(struct herd_pool *p);
/* Puts a dead slot's orphans back in the retry queue (in-flight ones become suspects). */
void herd__pool_requeue(struct herd_pool *p, struct slot *s);
/* A worker-folded job with nothing left to run: sends herd.take where folds wait. */
void herd__job_take_if_settled(struct herd_pool *p, struct herd_job *job);

/* ---- pool-job.c ---- */

/* True when job's results are folded on the workers (herd.fold). */
static inline bool
herd__job_folds(const struct herd_job *job)
{
	return job->kind == HERD_JOB_REDUCE && job->worker_combine;
}

/* Task t is finished for good (result, handler error, poison): delivers it and frees it. */
void herd__task_result(struct task *t, int r, json_t *result, herd_error *err);
/* Combines a result or a worker's partial into the job's accumulator. */
void herd__job_combine(struct herd_job *job, json_t *value);
/* Ends every running job with r and err (pool closing or broken). */
void herd__pool_end_jobs(struct herd_pool *p, int r, herd_error *err);
/* Job bookkeeping after progress: completion, progress callbacks. */
void herd__pool_check_jobs(struct herd_pool *p);
/* The pool is being freed: jobs never started let go of it. */
void herd__pool_forget_jobs(struct herd_pool *p);

#endif
