/* SPDX-License-Identifier: MIT */
/*
 * Jobs: their life cycle and settings, the outcomes of their tasks (in order,
 * unordered, reduced, found), progress, completion, and the blocking forms.
 * Tasks themselves (dispatch, replies, redo after a death, takes) are in
 * pool-task.c, which also holds the exactly-once argument.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool-internal.h"

#define PROGRESS_EVERY_USEC (100ull * 1000ull)
/* The largest automatic chunksize (pool.h explains the automatic choice). */
#define AUTO_CHUNKSIZE_MAX 1024u

/* ---- jobs: life cycle ---- */

HERD_EXPORT int
herd_job_new(herd_pool *p, enum herd_job_kind kind, const char *function, herd_job **ret)
{
	struct herd_job *job, **tail;

	if (!p || !function || !*function || !ret || (unsigned)kind > HERD_JOB_CALL)
		return -EINVAL;
	if (p->closed)
		return -ENOTCONN;
	job = calloc(1, sizeof(*job));
	if (!job || !(job->function = strdup(function))) {
		free(job);
		return -ENOMEM;
	}
	job->n_ref = 2; /* the caller's, and the pool's until the job ends */
	job->pool = p;
	job->id = ++p->next_job_id;
	job->kind = kind;
	/* Appended, so jobs are fed in the order they were created. */
	tail = &p->jobs;
	while (*tail)
		tail = &(*tail)->next_job;
	*tail = job;
	*ret = job;
	return 0;
}

static void
job_free(herd_job *job)
{
	free(job->function);
	free(job->worker_combine);
	json_decref(job->args);
	json_decref(job->value);
	herd_error_unref(job->error);
	for (size_t i = 0; i < job->pending_cap; i++) {
		json_decref(job->pending[i].result);
		herd_error_unref(job->pending[i].err);
	}
	free(job->pending);
	free(job);
}

HERD__DEFINE_REF_UNREF(herd_job, herd_job, job_free)

/*
 * Every setter's first check: a job that exists and has not started
 * (-EALREADY), then ok, the verdict on the setter's own argument (-EINVAL),
 * so the setters differ only in that verdict and their assignments.
 */
static int
setter_check(struct herd_job *job, bool ok)
{
	if (!job)
		return -EINVAL;
	if (job->started)
		return -EALREADY;
	return ok ? 0 : -EINVAL;
}

HERD_EXPORT int
herd_job_set_args(herd_job *job, json_t *args)
{
	int r = setter_check(job, json_is_array(args));

	if (r < 0)
		return r;
	json_decref(job->args);
	job->args = json_incref(args);
	job->next = NULL;
	return 0;
}

HERD_EXPORT int
herd_job_set_iter(herd_job *job, herd_job_next_fn next, void *userdata)
{
	int r = setter_check(job, next != NULL);

	if (r < 0)
		return r;
	json_decref(job->args);
	job->args = NULL;
	job->next = next;
	job->next_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_set_flags(herd_job *job, unsigned flags)
{
	int r = setter_check(
	    job, !(flags & ~(HERD_JOB_SKIP_FAILED | HERD_JOB_SKIP_CRASHED | HERD_JOB_BARE_ARGS)));

	if (r < 0)
		return r;
	job->flags = flags;
	return 0;
}

HERD_EXPORT int
herd_job_set_combine(
    herd_job *job, const char *worker_combine, herd_combine_fn combine, void *userdata)
{
	/* A worker-side combine is for reduce jobs only. */
	int r = setter_check(
	    job, combine && (!worker_combine || (job && job->kind == HERD_JOB_REDUCE)));

	if (r < 0)
		return r;
	free(job->worker_combine);
	job->worker_combine = worker_combine ? strdup(worker_combine) : NULL;
	if (worker_combine && !job->worker_combine)
		return -ENOMEM;
	job->combine = combine;
	job->combine_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_set_chunksize(herd_job *job, unsigned chunksize)
{
	int r = setter_check(job, true);

	if (r < 0)
		return r;
	if (chunksize > HERD_POOL_MAX_CHUNKSIZE)
		return -E2BIG;
	job->chunksize = chunksize;
	return 0;
}

/*
 * The chunksize a job runs with: its own, else the pool's, else automatic as
 * Python's map: about total / (4 x workers), so every worker gets a few
 * batches and the end stays balanced, at most AUTO_CHUNKSIZE_MAX so progress
 * stays live and a lost batch costs little; 1 when the total is unknown (an
 * iterator), where a batch would wait for arguments that may come slowly.
 */
static unsigned
job_chunksize(const struct herd_job *job)
{
	size_t total, c;

	if (job->chunksize)
		return job->chunksize;
	if (job->pool->chunksize)
		return job->pool->chunksize;
	if (!job->args)
		return 1;
	total = json_array_size(job->args);
	c = (total + 4 * job->pool->n_slots - 1) / (4 * job->pool->n_slots);
	return c < 1 ? 1 : c > AUTO_CHUNKSIZE_MAX ? AUTO_CHUNKSIZE_MAX : (unsigned)c;
}

HERD__DEFINE_CALLBACK_SETTER(herd_job_set_predicate, herd_job, herd_predicate_fn,
    setter_check(p, cb != NULL), pred, pred_data)
HERD__DEFINE_CALLBACK_SETTER(
    herd_job_on_task, herd_job, herd_task_cb, setter_check(p, true), on_task, task_data)
HERD__DEFINE_CALLBACK_SETTER(
    herd_job_on_done, herd_job, herd_job_done_cb, setter_check(p, true), on_done, done_data)
HERD__DEFINE_CALLBACK_SETTER(herd_job_on_progress, herd_job, herd_progress_cb,
    setter_check(p, true), on_progress, progress_data)

static bool
job_reduces(const struct herd_job *job)
{
	return job->kind == HERD_JOB_REDUCE || job->kind == HERD_JOB_REDUCE_ORDERED;
}

/* Results come out in input order: MAP with a task callback, REDUCE_ORDERED. */
static bool
job_in_order(const struct herd_job *job)
{
	return (job->kind == HERD_JOB_MAP && job->on_task) || job->kind == HERD_JOB_REDUCE_ORDERED;
}

HERD_EXPORT int
herd_job_start(herd_job *job)
{
	struct herd_pool *p;

	if (!job)
		return -EINVAL;
	if (job->started)
		return -EALREADY;
	p = job->pool;
	if (!p || p->closed || p->broken)
		return -EIO;
	if ((!job->args && !job->next) || (job_reduces(job) && !job->combine) ||
	    (job->kind == HERD_JOB_FIND && !job->pred))
		return -EINVAL;
	if ((job->kind == HERD_JOB_MAP || job->kind == HERD_JOB_MAP_UNORDERED) && !job->on_task) {
		job->value = json_array();
		if (!job->value)
			return -ENOMEM;
	}
	job->chunksize = job_chunksize(job);
	job->started = true;
	job->started_at = herd__pool_now();
	p->kick = true;
	herd__pool_dispatch(p);
	return 0;
}

/* ---- ending a job ---- */

static void
take_discard(herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *ud)
{
}

/* Frees the tasks of job in l; folded ones leave an accumulator to discard on s. */
static bool
drop_tasks(struct task_list *l, struct herd_job *job)
{
	bool any = false;

	for (struct task *t = l->head, *next; t; t = next) {
		next = t->next;
		if (t->job == job) {
			any = true;
			herd__task_free(t);
		}
	}
	return any;
}

static void job_progress(struct herd_job *job, bool final);

/* Ends job exactly once: its tasks go, on_done runs, the pool lets go of it. */
static void
job_end(struct herd_job *job, int r, herd_error *err)
{
	struct herd_pool *p = job->pool;

	if (job->done)
		return;
	job->done = true;
	job->r = r;
	herd__error_set(&job->error, err);
	if (err)
		herd__pool_set_error(p, err);
	herd_job_ref(job);
	for (struct herd_job **pp = &p->jobs; *pp; pp = &(*pp)->next_job) {
		if (*pp == job) {
			*pp = job->next_job;
			break;
		}
	}
	drop_tasks(&p->retry, job);
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];

		drop_tasks(&s->flight, job);
		drop_tasks(&s->orphans, job);
		if (drop_tasks(&s->folded, job) && s->state == SLOT_READY) {
			/* The job stopped early: free the worker's accumulator. */
			char acc[128];
			json_t *params;

			herd__acc_name(acc, sizeof(acc), s, job);
			params = json_pack("{s:s}", "acc", acc);
			if (params)
				herd__slot_call(s, "herd.take", params, take_discard, NULL, NULL);
			json_decref(params);
		}
	}
	if (r == 0 && !job->value)
		job->value = json_null();
	if (job->started) {
		job_progress(job, true);
		if (job->on_done)
			job->on_done(job, r, job->value, job->error, job->done_data);
	}
	job->pool = NULL;
	herd_job_unref(job); /* the pool's */
	herd_job_unref(job);
}

/* The error that stops a job at task index: err with "index" added. */
static herd_error *
task_error(herd_error *err, size_t index)
{
	json_t *data = json_deep_copy(herd_error_data(err));
	herd_error *e;

	if (data)
		json_object_set_new(data, "index", json_integer((json_int_t)index));
	e = herd__error_new(herd_error_code(err), herd_error_message(err), data);
	json_decref(data);
	return e;
}

HERD_EXPORT int
herd_job_cancel(herd_job *job)
{
	herd_error *err;

	if (!job)
		return -EINVAL;
	if (job->done || !job->started)
		return -EALREADY;
	err = herd__error_new(HERD_E_CANCELLED, "job cancelled", NULL);
	job_end(job, -ECANCELED, err);
	herd_error_unref(err);
	return 0;
}

/* Ends every started job (closing, or giving up). */
void
herd__pool_end_jobs(struct herd_pool *p, int r, herd_error *err)
{
	struct herd_job *job = p->jobs;

	/* job_end unlinks the job it ends: restart from the head each time. */
	while (job) {
		if (job->started && !job->done) {
			job_end(job, r, err);
			job = p->jobs;
		} else {
			job = job->next_job;
		}
	}
}

/* Jobs never started lose their pool (it is being freed). */
void
herd__pool_forget_jobs(struct herd_pool *p)
{
	while (p->jobs) {
		struct herd_job *job = p->jobs;

		p->jobs = job->next_job;
		job->pool = NULL;
		job->done = true;
		herd_job_unref(job);
	}
}

/* ---- outcomes ---- */

static void
job_stop_at(struct herd_job *job, size_t index, int r, herd_error *err)
{
	herd_error *e = task_error(err, index);

	job_end(job, r, e ? e : err);
	herd_error_unref(e);
}

/* Combines one more value into the job's accumulator (REDUCE: result or partial). */
void
herd__job_combine(struct herd_job *job, json_t *value)
{
	if (!job->value) {
		job->value = json_incref(value);
		return;
	}
	job->value = job->combine(job->value, value, job->combine_data);
	if (!job->value) {
		herd_error *err = herd__error_new(
		    HERD_E_FUNCTION_FAILED, "the master's combine function failed", NULL);

		job_end(job, -EIO, err);
		herd_error_unref(err);
	}
}

/* Delivers one outcome whose turn has come (in order or not, as the kind wants). */
static void
job_deliver(struct herd_job *job, size_t index, int r, json_t *result, herd_error *err)
{
	if (job->on_task && !(herd__job_folds(job) && r == 0))
		job->on_task(job, index, r, result, err, job->task_data);
	if (job->done)
		return;
	if (r < 0)
		return;
	switch (job->kind) {
	case HERD_JOB_MAP:
	case HERD_JOB_MAP_UNORDERED:
		if (job->value)
			json_array_set(job->value, index, result);
		break;
	case HERD_JOB_REDUCE:
	case HERD_JOB_REDUCE_ORDERED:
		herd__job_combine(job, result);
		break;
	case HERD_JOB_FIND:
		if (job->pred(result, job->pred_data)) {
			job->value =
			    json_pack("{s:I, s:O}", "index", (json_int_t)index, "result", result);
			job_end(job, 0, NULL);
		}
		break;
	case HERD_JOB_CALL:
		job->value = json_incref(result);
		break;
	}
}

/*
 * The outcomes waiting for their turn are a ring of pending_cap (a power of
 * two) slots indexed by task index: a batch's results go in and come out
 * without moving the others.
 */
static struct outcome *
pending_at(struct herd_job *job, size_t index)
{
	return &job->pending[index & (job->pending_cap - 1)];
}

/* Makes room for index in the ring. Returns 0 or -ENOMEM. */
static int
pending_reserve(struct herd_job *job, size_t index)
{
	size_t cap = job->pending_cap ? job->pending_cap : 16;
	struct outcome *o;

	if (index - job->next_emit < job->pending_cap)
		return 0;
	while (cap <= index - job->next_emit)
		cap *= 2;
	o = calloc(cap, sizeof(*o));
	if (!o)
		return -ENOMEM;
	for (size_t i = job->next_emit; i < job->next_emit + job->pending_cap; i++)
		o[i & (cap - 1)] = *pending_at(job, i);
	free(job->pending);
	job->pending = o;
	job->pending_cap = cap;
	return 0;
}

/* Keeps an outcome until the ones before it are out, then releases what is in order. */
static void
job_in_order_put(struct herd_job *job, size_t index, int r, json_t *result, herd_error *err)
{
	if (pending_reserve(job, index) < 0) {
		herd_error *e = herd__error_new(HERD_E_INTERNAL_ERROR, "out of memory", NULL);

		job_end(job, -ENOMEM, e);
		herd_error_unref(e);
		return;
	}
	*pending_at(job, index) =
	    (struct outcome){ true, r, json_incref(result), herd_error_ref(err) };
	while (!job->done && pending_at(job, job->next_emit)->have) {
		struct outcome o = *pending_at(job, job->next_emit);

		*pending_at(job, job->next_emit) = (struct outcome){ 0 };
		job->next_emit++;
		job_deliver(job, job->next_emit - 1, o.r, o.result, o.err);
		json_decref(o.result);
		herd_error_unref(o.err);
	}
}

/* Task t is finished for good (result, handler error, poison): deliver it and free it. */
void
herd__task_result(struct task *t, int r, json_t *result, herd_error *err)
{
	struct herd_job *job = t->job;
	size_t index = t->index;
	bool skip;

	herd__task_list_remove(t);
	job->n_finished++;
	if (r == 0 && !t->folded)
		job->n_ok++;
	else if (r < 0)
		job->n_failed++;
	herd__task_free(t);
	if (r < 0) {
		skip = (r == -ECHILD || r == -ETIMEDOUT) ? job->flags & HERD_JOB_SKIP_CRASHED
		                                         : job->flags & HERD_JOB_SKIP_FAILED;
		if (!skip) {
			if (job->on_task)
				job->on_task(job, index, r, NULL, err, job->task_data);
			if (!job->done)
				job_stop_at(job, index, r, err);
			return;
		}
	}
	if (job_in_order(job))
		job_in_order_put(job, index, r, result, err);
	else
		job_deliver(job, index, r, result, err);
}

/* ---- progress and completion ---- */

static void
job_progress(struct herd_job *job, bool final)
{
	uint64_t now = herd__pool_now();
	double secs;

	if (!job->on_progress || (!final && now - job->progress_at < PROGRESS_EVERY_USEC))
		return;
	job->progress_at = now;
	secs = (double)(now - job->started_at) / 1e6;
	job->on_progress(job, job->n_ok, job->n_failed, job->n_retried,
	    job->exhausted ? job->n_fed : 0, secs > 0 ? (double)job->n_ok / secs : 0.0,
	    job->progress_data);
}

/* Ends the jobs that are complete, sends due takes and progress. */
void
herd__pool_check_jobs(struct herd_pool *p)
{
	struct herd_job *job = p->jobs;

	p->kick = false;
	while (job) {
		struct herd_job *next = job->next_job;

		if (job->started && !job->done) {
			if (job->exhausted && job->n_finished == job->n_fed) {
				job_end(job, 0, NULL);
				next = p->jobs; /* the list changed */
			} else {
				herd__job_take_if_settled(p, job);
				job_progress(job, false);
			}
		}
		job = next;
	}
}

/* ---- blocking forms ---- */

HERD_EXPORT int
herd_job_wait(herd_job *job, uint64_t timeout_usec, json_t **ret_value)
{
	struct herd_pool *p;
	int r;

	if (ret_value)
		*ret_value = NULL;
	if (!job)
		return -EINVAL;
	p = job->pool;
	if (!job->started) {
		r = herd_job_start(job);
		if (r < 0)
			return r;
	}
	if (!job->done) {
		if (p->processing)
			return -EDEADLK; /* called from one of the pool's callbacks */
		herd_job_ref(job);
		r = herd__pool_run(p, &job->done, herd__deadline(timeout_usec));
		herd_job_unref(job);
		if (r < 0 && !job->done)
			return r;
	}
	if (job->r == 0 && ret_value)
		*ret_value = json_incref(job->value);
	return job->r;
}

HERD__DEFINE_GETTER(herd_job_is_done, herd_job, int, p->done, -EINVAL)
HERD__DEFINE_GETTER(herd_job_error, herd_job, herd_error *, p->error, NULL)
HERD__DEFINE_GETTER(herd_job_get_pool, herd_job, herd_pool *, p->pool, NULL)

/* One job of kind over args (an array, or the single arg of a CALL), run to its end. */
static int
run_job(herd_pool *p, enum herd_job_kind kind, const char *function, json_t *args, unsigned flags,
    herd_job **ret_job)
{
	herd_job *job;
	int r;

	r = herd_job_new(p, kind, function, &job);
	if (r < 0)
		return r;
	r = herd_job_set_args(job, args);
	if (r == 0)
		r = herd_job_set_flags(job, flags);
	if (r < 0) {
		herd_job_unref(job);
		return r;
	}
	*ret_job = job;
	return 0;
}

static int
wait_and_unref(herd_job *job, json_t **ret_value)
{
	int r = herd_job_wait(job, HERD_TIMEOUT_INFINITE, ret_value);

	if (!job->done)
		herd_job_cancel(job);
	herd_job_unref(job);
	return r;
}

/* [arg] for the one-task forms (arg borrowed; NULL: JSON null). */
static json_t *
one_arg(json_t *arg)
{
	return json_pack("[O]", arg ? arg : json_null());
}

HERD_EXPORT int
herd_pool_submit(herd_pool *p, const char *function, json_t *arg, herd_task_cb cb, void *userdata)
{
	json_t *args = one_arg(arg);
	herd_job *job = NULL;
	int r = args ? run_job(p, HERD_JOB_CALL, function, args, 0, &job) : -ENOMEM;

	json_decref(args);
	if (r < 0)
		return r;
	herd_job_on_task(job, cb, userdata);
	r = herd_job_start(job);
	herd_job_unref(job);
	return r;
}

HERD_EXPORT int
herd_pool_call(herd_pool *p, const char *function, json_t *arg, json_t **ret_result)
{
	json_t *args = one_arg(arg);
	herd_job *job = NULL;
	int r = args ? run_job(p, HERD_JOB_CALL, function, args, 0, &job) : -ENOMEM;

	json_decref(args);
	if (ret_result)
		*ret_result = NULL;
	return r < 0 ? r : wait_and_unref(job, ret_result);
}

HERD_EXPORT int
herd_pool_map(
    herd_pool *p, const char *function, json_t *args, unsigned flags, json_t **ret_results)
{
	herd_job *job = NULL;
	int r = run_job(p, HERD_JOB_MAP, function, args, flags, &job);

	if (ret_results)
		*ret_results = NULL;
	return r < 0 ? r : wait_and_unref(job, ret_results);
}

HERD_EXPORT int
herd_pool_map_reduce(herd_pool *p, const char *function, json_t *args, const char *worker_combine,
    herd_combine_fn combine, void *userdata, json_t **ret_value)
{
	herd_job *job = NULL;
	int r = run_job(p, HERD_JOB_REDUCE, function, args, 0, &job);

	if (ret_value)
		*ret_value = NULL;
	if (r < 0)
		return r;
	r = herd_job_set_combine(job, worker_combine, combine, userdata);
	if (r < 0) {
		herd_job_unref(job);
		return r;
	}
	return wait_and_unref(job, ret_value);
}

HERD_EXPORT int
herd_pool_find(herd_pool *p, const char *function, json_t *args, herd_predicate_fn pred,
    void *userdata, json_t **ret_found)
{
	herd_job *job = NULL;
	int r = run_job(p, HERD_JOB_FIND, function, args, 0, &job);

	if (ret_found)
		*ret_found = NULL;
	if (r < 0)
		return r;
	r = herd_job_set_predicate(job, pred, userdata);
	if (r < 0) {
		herd_job_unref(job);
		return r;
	}
	return wait_and_unref(job, ret_found);
}
