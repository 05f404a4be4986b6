/* SPDX-License-Identifier: MIT */
/*
 * libherd pools: N supervised workers of one executable, and parallel map,
 * map-reduce and find-first over them that survive crashes (rpc_parallel's
 * Map_reduce and managed worker; Python's multiprocessing.Pool).
 *
 * A pool owns a master connection to herdd of its own and spawns its workers
 * through it (names "POOL.K", so herdctl list shows which pool a worker is
 * in); closing the pool stops them (a normal stop), and a master process that
 * dies takes them with it as any master's workers. Work is a job: a function
 * name and a sequence of JSON arguments (an array or an iterator), each one a
 * task. The pool keeps a window of tasks in flight on every worker and gives
 * the next task to whichever worker frees up first.
 *
 * Failures. A worker that dies (crash, exit, heartbeat loss, operator kill) is
 * replaced after a backoff, and every task it held is dispatched again: those
 * in flight, and for a map-reduce those already folded into its accumulator.
 * A task in flight on a dying worker becomes a suspect: it runs alone on its
 * next worker, so a task that kills every worker it touches (a poison task) is
 * found out after "retries" deaths and reported with the crash (error name
 * "task_crashed", data: "index", "event", "signal", "exit_code",
 * "stderr_tail", "worker"); the job then stops, or skips it with
 * HERD_JOB_SKIP_CRASHED. A task over "task_timeout_ms" gets its worker killed
 * and replaced, and counts like a crash (error name "timeout"). A task whose
 * handler fails (function_failed, invalid_params...) is not retried unless
 * "retry_failed" is true; its error reaches the caller for that task, and the
 * job stops or, with HERD_JOB_SKIP_FAILED, goes on. When "max_restarts"
 * deaths or failed spawns follow each other with no task finished in
 * between, the pool gives up: every job ends with error "crash_loop" carrying
 * the last death, and the pool spawns no more. Every result is delivered (and
 * counted in a reduction) exactly once, whatever dies when; the argument is
 * written in libclient/worker/worker-fold.c and libclient/pool/pool-job.c.
 *
 * Engine. As a herd_conn: herd_pool_get_fd() (an epoll fd over the pool's
 * connections), herd_pool_get_events(), herd_pool_get_timeout() and
 * herd_pool_process() drive it from any loop; herd_pool_attach_ev() (in
 * herd/herd-ev.h) from libev; the blocking calls (herd_job_wait(),
 * herd_pool_map() & co.) run it until their job ends. Every callback below
 * runs on the thread driving the pool, from herd_pool_process(), a blocking
 * pool call, or the attached loop. As for any master connection, a pool that
 * nobody drives while the program computes for longer than
 * heartbeat_timeout_ms without calling into libherd loses its workers
 * (herd/client.h explains the keepalive). Conventions, errors and thread safety:
 * herd/common.h. JSON ownership: arguments are borrowed, results handed to
 * callbacks are borrowed (valid during the callback), results returned
 * through ret_ pointers are new references.
 */
#ifndef HERD_POOL_H
#define HERD_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include <herd/common.h>
#include <herd/master.h>
#include <herd/worker.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct herd_pool herd_pool;
typedef struct herd_job herd_job;

/*
 * Creates a pool and waits until its first worker is ready (the others start
 * in parallel and join as they come up).
 *
 * spawn_opts (borrowed, may be NULL): one worker's spawn options, as for
 * herd_master_spawn() ("path", "argv", "init", "cwd", "env", "settings"...).
 * Without "path" the pool runs this process's own executable
 * (herd_self_path(): the start_app pattern, see herd_start_app()). "name"
 * is replaced by "POOL.K", and "pool" (herdd's record, shown by list) by POOL.
 *
 * pool_opts (borrowed, may be NULL), an object of:
 *   "workers"         number of workers (default: the CPUs this process may
 *                     run on, sched_getaffinity);
 *   "window"          tasks in flight per worker (default 4), and with
 *                     batches at least two batches when it is 2 or more;
 *   "retries"         how many times a task may lose its worker (crash,
 *                     timeout) before it is reported as task_crashed
 *                     (default 3);
 *   "retry_failed"    true: a task whose handler failed is retried too, up
 *                     to "retries" (default false);
 *   "task_timeout_ms" a task running longer gets its worker killed (default
 *                     0: none);
 *   "max_restarts"    deaths in a row with no task finished before the pool
 *                     gives up (default 10, at least 2 x workers);
 *   "chunksize"       tasks per message to a worker, for every job that sets
 *                     none (default 0: automatic; see "Batches" below; at
 *                     most HERD_POOL_MAX_CHUNKSIZE);
 *   "name"            the pool's name, the prefix of its workers' names
 *                     (default: the program's name and "-pool");
 *   "socket"          herdd's socket (default as herd_master_connect());
 *   "hosts"           the herdds to spawn on instead of "socket", an array
 *                     of host addresses (ssh://, slurm://, exec:, a socket
 *                     path; herd_master_connect()), each a string "ADDRESS"
 *                     or "ADDRESS=N" (N workers there; "=N" only at the very
 *                     end, so ssh://h1:2222=4 is port 2222 with 4 workers)
 *                     or an object {"address": A, "workers": N}. A host
 *                     without N gets "workers", else the CPUs its herdd
 *                     says its workers can use there (a remote herdd's
 *                     affinity, CPU quota and Slurm share: PROTOCOL.md
 *                     9.3), else (a local herdd, or a host not reached
 *                     when the pool starts) this machine's CPUs, or
 *                     $SLURM_CPUS_ON_NODE for a Slurm node.
 *                     The string "slurm" (or "slurm=N") stands for every
 *                     node of the Slurm allocation this process runs in
 *                     ($SLURM_JOB_NODELIST, expanded by `scontrol show
 *                     hostnames` when scontrol is on PATH, else here:
 *                     "n[1-3],m5", one bracket group a name);
 *   "settings"        RPC settings for the pool's connections.
 * Unknown members are refused (-EINVAL).
 *
 * Hosts. With "hosts" the pool keeps one master connection per host and
 * spreads its workers over them ("workers" is then the count of each host
 * that names none, and herd_pool_size() the total); a worker's replacement
 * starts on its host. A host whose link is lost (the remote herdd or its
 * launcher died, the network was cut: host_lost) loses all its workers at
 * once: their tasks run again elsewhere (a host's loss does not count as a
 * death of the tasks it held, nor towards the pool's crash loop), the pool's
 * last error says which host was lost, and the host is reconnected after a
 * backoff (50 ms doubling to 2 s), then given up after "max_restarts"
 * losses or failed connects in a row with no worker started there. The rest
 * of the pool carries on; when every host is given up the jobs end with
 * connection_closed ("pool P lost every host"). A reconnect runs on a
 * thread of its own, so a host that does not answer stalls nothing; closing
 * the pool waits for one under way (at most the launcher's connect timeout
 * or handshake_timeout_ms). The first connects, in herd_pool_new(), are
 * made one after the other. Without "hosts" the pool's one herdd is its life: losing it
 * ends every job (crash_loop), as before.
 *
 * Returns 0 with *ret (new reference), or -EINVAL, -E2BIG (chunksize), a herd_master_connect()
 * error, or -EIO when no worker could start: the pool gave up after
 * max_restarts failed spawns, and the error (crash_loop) quotes the last
 * one (spawn_failed, init_failed with the worker's message...). ret_error
 * (may be NULL) receives a new reference to the error. The first worker's
 * connection is made with a blocking connect and hello (as
 * herd_worker_connect()), and so is each replacement's, from the pool's
 * processing: a worker that accepts but never answers hello stalls the pool
 * for handshake_timeout_ms.
 */
HERD_EXPORT int herd_pool_new(
    json_t *spawn_opts, json_t *pool_opts, herd_pool **ret, herd_error **ret_error);

HERD_EXPORT herd_pool *herd_pool_ref(herd_pool *p);
/* Drops a reference (NULL-safe, returns NULL); the last one closes the pool. */
HERD_EXPORT herd_pool *herd_pool_unref(herd_pool *p);

/*
 * Closes the pool: every job still running ends with -ECANCELED, and every
 * worker is stopped through herdd (recorded as a normal shutdown); waits for
 * them (at most a few seconds), then closes the master connection.
 * Idempotent. Returns 0 or -EINVAL.
 */
HERD_EXPORT int herd_pool_close(herd_pool *p);

/*
 * The pool's own master connection (borrowed), e.g. for herd_master_list();
 * with "hosts", the first host's (NULL while that host is down).
 */
HERD_EXPORT herd_master *herd_pool_get_master(herd_pool *p);
/* The error of the last pool call or job that failed (borrowed), or NULL. */
HERD_EXPORT herd_error *herd_pool_last_error(herd_pool *p);
/* Number of workers the pool keeps (its "workers"). */
HERD_EXPORT int herd_pool_size(herd_pool *p);
/*
 * The pids of the workers ready now into pids[0..max). Returns how many are
 * ready (possibly more than max), or -EINVAL.
 */
HERD_EXPORT int herd_pool_worker_pids(herd_pool *p, pid_t *pids, size_t max);
/* Counters since the pool started: worker deaths seen and workers spawned. */
HERD_EXPORT uint64_t herd_pool_deaths(herd_pool *p);
HERD_EXPORT uint64_t herd_pool_spawns(herd_pool *p);
/* Hosts lost so far (their link went: "hosts"), and how many are connected now (or -EINVAL). */
HERD_EXPORT uint64_t herd_pool_hosts_lost(herd_pool *p);
HERD_EXPORT int herd_pool_hosts_up(herd_pool *p);

/* ---- loop-independent core (as herd_conn's) ---- */

/* An fd readable when the pool has something to process, or -EINVAL/-ENOTCONN. */
HERD_EXPORT int herd_pool_get_fd(herd_pool *p);
/* POLLIN (the fd is an epoll fd), or -EINVAL/-ENOTCONN once closed. */
HERD_EXPORT int herd_pool_get_events(herd_pool *p);
/* The next deadline, ABSOLUTE CLOCK_MONOTONIC usec, or HERD_TIMEOUT_INFINITE. */
HERD_EXPORT int herd_pool_get_timeout(herd_pool *p, uint64_t *ret_usec);
/* Does what can be done without blocking; callbacks run here. >0 progress, 0, or -errno. */
HERD_EXPORT int herd_pool_process(herd_pool *p);
/* Waits up to timeout_usec for the fd or the next deadline. >0 ready, 0 timeout, -errno. */
HERD_EXPORT int herd_pool_wait(herd_pool *p, uint64_t timeout_usec);

/* ---- jobs ---- */

enum herd_job_kind {
	/* Results in input order: on_task runs in order; the value is the array. */
	HERD_JOB_MAP,
	/* Results as they complete, each with its input index. */
	HERD_JOB_MAP_UNORDERED,
	/*
	 * Map-reduce with a commutative, associative combine. With a worker
	 * combine name, each worker folds its results into its own accumulator
	 * (herd.fold) and the master combines one partial per worker;
	 * otherwise the master folds results as they complete.
	 */
	HERD_JOB_REDUCE,
	/* Map-reduce with an associative combine applied in input order. */
	HERD_JOB_REDUCE_ORDERED,
	/* Stops at the first result (in completion order) the predicate accepts. */
	HERD_JOB_FIND,
	/* One task (herd_pool_submit()). */
	HERD_JOB_CALL,
};

/* A task whose handler failed is reported (on_task) and skipped; default: the job stops. */
#define HERD_JOB_SKIP_FAILED (1u << 0)
/* A task that killed its workers "retries" times is reported and skipped; default: stop. */
#define HERD_JOB_SKIP_CRASHED (1u << 1)
/*
 * The arguments are the function's argument as they are, any JSON value (a
 * bare integer or string too), not a call's params: every task travels in
 * herd.batch's bare form (PROTOCOL.md 6.6), even alone, and its handler gets
 * the value as its arg. The cheapest form for tiny tasks (no array or object
 * around each argument). Workers of a libherd without it refuse the batch
 * (invalid_params). Default: an argument that is not an object, an array or
 * null fails its task with invalid_params.
 */
#define HERD_JOB_BARE_ARGS (1u << 2)

/*
 * The next argument of an iterator job: a new reference (a JSON object, array
 * or null, as JSON-RPC params; any value with HERD_JOB_BARE_ARGS), or NULL
 * at the end. Called on the pool's
 * thread, as tasks are needed.
 */
typedef json_t *(*herd_job_next_fn)(void *userdata);

/*
 * One task finished: index is its position in the input; r is 0 with result
 * (borrowed), or a negative errno with err (borrowed): -EREMOTEIO for a
 * handler's error (err: function_failed with its message...), -ECHILD for a
 * task that killed its workers (task_crashed) or -ETIMEDOUT (timeout). For
 * HERD_JOB_MAP it runs in input order, except for a failure that stops the
 * job, reported at once; HERD_JOB_REDUCE's worker-folded tasks report only
 * failures (their results are in the accumulator). A task callback may
 * cancel its job, but must not block on the pool (herd_job_wait() returns
 * -EDEADLK there).
 */
typedef void (*herd_task_cb)(
    herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *userdata);

/*
 * The job ended, exactly once: r is 0 with value (borrowed; see each kind),
 * or -EREMOTEIO/-ECHILD/-ETIMEDOUT with err (borrowed; data "index": the task
 * that stopped it), -ECANCELED (herd_job_cancel(), the pool closed), or
 * -EIO with err crash_loop.
 */
typedef void (*herd_job_done_cb)(
    herd_job *job, int r, json_t *value, herd_error *err, void *userdata);

/* FIND's test: true when result (borrowed) is the one sought. */
typedef bool (*herd_predicate_fn)(json_t *result, void *userdata);

/*
 * Progress, at most every 100 ms and once at the end: tasks done (succeeded),
 * failed, retried (dispatches redone because a worker died), total (0 while
 * an iterator is not exhausted) and rate (tasks done per second since start).
 */
typedef void (*herd_progress_cb)(herd_job *job, uint64_t done, uint64_t failed, uint64_t retried,
    uint64_t total, double rate, void *userdata);

/*
 * A new job of kind calling function (a user function of the worker type)
 * on pool p. Configure it with the setters below, then herd_job_start().
 * Returns 0 with *ret (new reference) or -EINVAL.
 */
HERD_EXPORT int herd_job_new(
    herd_pool *p, enum herd_job_kind kind, const char *function, herd_job **ret);
HERD_EXPORT herd_job *herd_job_ref(herd_job *job);
/* Drops a reference (NULL-safe). A started job runs on until it ends, referenced or not. */
HERD_EXPORT herd_job *herd_job_unref(herd_job *job);

/* The arguments: a JSON array (borrowed; its elements are referenced, not copied). */
HERD_EXPORT int herd_job_set_args(herd_job *job, json_t *args);
/* The arguments from an iterator, pulled as workers free up. */
HERD_EXPORT int herd_job_set_iter(herd_job *job, herd_job_next_fn next, void *userdata);
/* HERD_JOB_SKIP_* flags. */
HERD_EXPORT int herd_job_set_flags(herd_job *job, unsigned flags);
/*
 * REDUCE and REDUCE_ORDERED: combine (master side; required) merges results
 * or partials, called with userdata. worker_combine (REDUCE only, may be
 * NULL) names the worker type's combine (struct herd_combiner) that folds on
 * the workers: both must compute the same thing.
 */
HERD_EXPORT int herd_job_set_combine(
    herd_job *job, const char *worker_combine, herd_combine_fn combine, void *userdata);
/* FIND: the predicate (required). */
HERD_EXPORT int herd_job_set_predicate(herd_job *job, herd_predicate_fn pred, void *userdata);
/* Per-task callback (optional). For MAP and MAP_UNORDERED it replaces the value array. */
HERD_EXPORT int herd_job_on_task(herd_job *job, herd_task_cb cb, void *userdata);
HERD_EXPORT int herd_job_on_done(herd_job *job, herd_job_done_cb cb, void *userdata);
HERD_EXPORT int herd_job_on_progress(herd_job *job, herd_progress_cb cb, void *userdata);

/*
 * Starts the job. Returns 0 (on_done will run exactly once) or -EINVAL
 * (missing arguments, combine or predicate), -EALREADY (started), -EIO (the
 * pool gave up or is closed: on_done never runs).
 *
 * The value on_done gets: MAP and MAP_UNORDERED, the array of results in
 * input order (null for skipped tasks), or null when on_task is set; REDUCE
 * and REDUCE_ORDERED, the combined value (null when no task succeeded);
 * FIND, {"index": I, "result": R} or null when no result matched; CALL, the
 * result.
 */
HERD_EXPORT int herd_job_start(herd_job *job);
/* Ends a running job now with -ECANCELED; tasks in flight are cancelled. 0 or -EALREADY. */
HERD_EXPORT int herd_job_cancel(herd_job *job);
/*
 * Runs the pool until job ends (starting it if needed) or timeout_usec
 * (HERD_TIMEOUT_INFINITE: none) passes (-ETIMEDOUT; the job goes on).
 * Returns the job's r, with *ret_value (may be NULL) a new reference to its
 * value on success; the error is herd_job_error() and herd_pool_last_error().
 */
HERD_EXPORT int herd_job_wait(herd_job *job, uint64_t timeout_usec, json_t **ret_value);
/* 1 once the job ended, 0 before, -EINVAL. */
HERD_EXPORT int herd_job_is_done(herd_job *job);
/* The error the job ended with (borrowed), or NULL. */
HERD_EXPORT herd_error *herd_job_error(herd_job *job);
/* The pool of a job (borrowed). */
HERD_EXPORT herd_pool *herd_job_get_pool(herd_job *job);

/* ---- batches (chunksize) ---- */

/*
 * Batches. With a chunksize above 1, a worker gets up to chunksize tasks of
 * a job in one message (herd.batch, PROTOCOL.md 6.6) and answers them in one,
 * as multiprocessing's chunksize: the cost of a message is paid once per
 * batch. The worker runs a batch's tasks one after the other. The guarantees
 * stay per task: each task's outcome is delivered (or folded) exactly once;
 * a task whose handler fails fails alone (its siblings' results stand); a
 * worker that dies loses its whole batch, whose tasks are suspects like any
 * task in flight on it (each counts the death against its "retries" and
 * runs alone next, so the poison is found and its siblings finish); a
 * batch's timeout is task_timeout_ms times its number of tasks; FIND and
 * cancel drop the rest of a batch (its worker stops it). In-order results
 * stay in input order, and a reduce folds each task once. A batch too big
 * for one message (max_message_size) goes again as two halves.
 *
 * The chunksize in effect: the job's (herd_job_set_chunksize()), else the
 * pool's "chunksize", else automatic: for an array of arguments about
 * total / (4 x workers), at most 1024, as Python's Pool.map; for an iterator
 * 1 (its total is unknown and its arguments may come slowly).
 */
#define HERD_POOL_MAX_CHUNKSIZE 65536u

/*
 * Sets job's chunksize (0: the pool's, or automatic), before it starts.
 * Returns 0, -EINVAL, -EALREADY (started) or -E2BIG (above
 * HERD_POOL_MAX_CHUNKSIZE).
 */
HERD_EXPORT int herd_job_set_chunksize(herd_job *job, unsigned chunksize);

/* ---- one-call forms ---- */

/*
 * Submits one task; cb (may be NULL) runs once with its outcome (index 0).
 * Returns 0 or -errno (cb never runs).
 */
HERD_EXPORT int herd_pool_submit(
    herd_pool *p, const char *function, json_t *arg, herd_task_cb cb, void *userdata);
/*
 * One task, blocking: rpc_parallel's managed worker when the pool has one
 * worker (a call that goes to a live worker, respawned when needed).
 * Returns 0 with *ret_result (may be NULL; new reference) or the task's error.
 */
HERD_EXPORT int herd_pool_call(
    herd_pool *p, const char *function, json_t *arg, json_t **ret_result);
/* MAP over args (borrowed array), blocking: *ret_results the array of results. */
HERD_EXPORT int herd_pool_map(
    herd_pool *p, const char *function, json_t *args, unsigned flags, json_t **ret_results);
/* REDUCE over args, blocking: *ret_value the combined value (JSON null if none). */
HERD_EXPORT int herd_pool_map_reduce(herd_pool *p, const char *function, json_t *args,
    const char *worker_combine, herd_combine_fn combine, void *userdata, json_t **ret_value);
/* FIND over args, blocking: *ret_found {"index","result"} or JSON null. */
HERD_EXPORT int herd_pool_find(herd_pool *p, const char *function, json_t *args,
    herd_predicate_fn pred, void *userdata, json_t **ret_found);

/*
 * A herd_progress_cb that draws a one-line progress bar on stderr when
 * stderr is a terminal (nothing otherwise), and ends the line at the end.
 * userdata: a label (const char *) or NULL.
 */
HERD_EXPORT void herd_progress_bar(herd_job *job, uint64_t done, uint64_t failed, uint64_t retried,
    uint64_t total, double rate, void *userdata);

/* ---- whole programs: a map-reduce in one call, counts objects ---- */

/*
 * A whole map-reduce in one blocking call, for command-line programs: creates
 * a pool, runs function over args (borrowed array) folding on the workers with
 * their combine named combiner (may be NULL: the master folds every result)
 * and combining the partials with combine on the master (called with NULL
 * userdata), and closes the pool. On stderr, as a program would: the
 * progress bar when stderr is a terminal (labelled with the program's name),
 * how many workers died (their tasks ran again), and the error that ended the
 * job, each line starting "PROGRAM: ".
 *
 * opts (borrowed, may be NULL): herd_pool_new()'s pool options ("workers",
 * "window", "retries"...) plus "spawn", the workers' spawn options (default:
 * this executable, the start_app pattern), and "quiet": true to write nothing.
 *
 * "local": true is local mode (as Ray's local_mode): no pool and no herdd;
 * every task runs in this process, in order, through the worker type given
 * to herd_start_app() (-EINVAL if none), as a request folding into one
 * accumulator exactly as a worker's herd.fold does (herd_request_acc() adds
 * in place; the type's combine named combiner, or combine when combiner is
 * NULL). The first task error ends it. A program's sequential check is then
 * its parallel code, and a worker function can be stepped through under gdb.
 * The pool options are not used; there is no progress bar.
 *
 * Returns 0 with *ret_value (may be NULL; new reference) the combined value
 * (JSON null when no task succeeded), or a herd_pool_new() or herd_job_wait()
 * error (-EINVAL for bad opts), with *ret_error (may be NULL) a new reference
 * to its error when there is one.
 */
HERD_EXPORT int herd_map_reduce(json_t *opts, const char *function, json_t *args,
    const char *combiner, herd_combine_fn combine, json_t **ret_value, herd_error **ret_error);

/*
 * Counts objects map keys to integers ({"the": 1200, "of": 677}): a word
 * count, a histogram. herd_counts_add() adds n to key (len bytes, may hold
 * NUL) in counts, creating it at n. Returns 0, -EINVAL (counts not an object)
 * or -ENOMEM.
 */
HERD_EXPORT int herd_counts_add(json_t *counts, const char *key, size_t len, json_int_t n);
/*
 * A combine function (herd_combine_fn; declare it in a worker type's
 * combiners too) that adds value's counts to acc's. NULL (acc dropped) when
 * either is not an object or a count is not an integer.
 */
HERD_EXPORT json_t *herd_combine_counts(json_t *acc, json_t *value, void *userdata);
/*
 * The k largest counts of counts, as a new array of [key, n] pairs, the
 * largest first and equal counts by key (bytewise); fewer when counts has
 * fewer members. NULL when counts is not an object or memory runs out.
 */
HERD_EXPORT json_t *herd_counts_top(json_t *counts, size_t k);
/* The sum of counts' counts (0 when counts is not an object). */
HERD_EXPORT json_int_t herd_counts_total(json_t *counts);

#ifdef __cplusplus
}
#endif

#endif
