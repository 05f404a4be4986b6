/* SPDX-License-Identifier: MIT */
/*
 * Jobs and tasks: feeding arguments, dispatching tasks to worker slots,
 * collecting results (in order, unordered, reduced, found) and redoing what a
 * dead worker held.
 *
 * Exactly once, master side. A task's outcome is delivered when, and only
 * when, the task object is freed by task_result() (or, for a worker-folded
 * task, by take_reply() committing it); a task object lives in exactly one
 * list at a time (pool-internal.h), and every move is a list move. A reply
 * is accepted only from the dispatch the task is waiting for (t->call): a
 * task orphaned by a dying worker has t->call cleared first, so a late or
 * failed reply of that dispatch is ignored and the task runs again instead.
 * Worker-side folding adds one state, "folded": acknowledged by herd.fold,
 * held in that worker's accumulator. A take is sent only once no task of the
 * job is queued, in flight or orphaned, so every fold it covers was
 * acknowledged before it left; its reply commits exactly the folded tasks of
 * that job on that slot at that moment, and its "n" must equal their number
 * (otherwise the worker is killed and they are redone). A folded task on a
 * worker that dies before its take returns is redone; one on a live worker
 * never is. worker-fold.c has the worker's half.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool-internal.h"

#define PROGRESS_EVERY_USEC (100ull * 1000ull)

/* ---- task lists ---- */

void
herd__task_list_remove(struct task *t)
{
	struct task_list *l = t->list;

	if (!l)
		return;
	if (t->prev)
		t->prev->next = t->next;
	else
		l->head = t->next;
	if (t->next)
		t->next->prev = t->prev;
	else
		l->tail = t->prev;
	l->n--;
	t->prev = t->next = NULL;
	t->list = NULL;
}

void
herd__task_list_push(struct task_list *l, struct task *t, bool front)
{
	herd__task_list_remove(t);
	t->list = l;
	if (front) {
		t->next = l->head;
		if (l->head)
			l->head->prev = t;
		else
			l->tail = t;
		l->head = t;
	} else {
		t->prev = l->tail;
		if (l->tail)
			l->tail->next = t;
		else
			l->head = t;
		l->tail = t;
	}
	l->n++;
}

static void
task_free(struct task *t)
{
	herd_pending *call = t->call;

	herd__task_list_remove(t);
	if (call) {
		/* The callback sees t->call != call and leaves t alone. */
		t->call = NULL;
		if (t->slot && t->deaths > 0)
			t->slot->suspect_running = false;
		herd_call_cancel(call);
		herd_pending_unref(call);
	}
	json_decref(t->arg);
	herd_error_unref(t->death);
	free(t);
}

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

HERD_EXPORT herd_job *
herd_job_ref(herd_job *job)
{
	if (job)
		job->n_ref++;
	return job;
}

HERD_EXPORT herd_job *
herd_job_unref(herd_job *job)
{
	if (!job || --job->n_ref > 0)
		return NULL;
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
	return NULL;
}

static int
setter_check(struct herd_job *job)
{
	if (!job)
		return -EINVAL;
	return job->started ? -EALREADY : 0;
}

HERD_EXPORT int
herd_job_set_args(herd_job *job, json_t *args)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	if (!json_is_array(args))
		return -EINVAL;
	json_decref(job->args);
	job->args = json_incref(args);
	job->next = NULL;
	return 0;
}

HERD_EXPORT int
herd_job_set_iter(herd_job *job, herd_job_next_fn next, void *userdata)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	if (!next)
		return -EINVAL;
	json_decref(job->args);
	job->args = NULL;
	job->next = next;
	job->next_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_set_flags(herd_job *job, unsigned flags)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	if (flags & ~(HERD_JOB_SKIP_FAILED | HERD_JOB_SKIP_CRASHED))
		return -EINVAL;
	job->flags = flags;
	return 0;
}

HERD_EXPORT int
herd_job_set_combine(
    herd_job *job, const char *worker_combine, herd_combine_fn combine, void *userdata)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	if (!combine || (worker_combine && job->kind != HERD_JOB_REDUCE))
		return -EINVAL;
	free(job->worker_combine);
	job->worker_combine = worker_combine ? strdup(worker_combine) : NULL;
	if (worker_combine && !job->worker_combine)
		return -ENOMEM;
	job->combine = combine;
	job->combine_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_set_predicate(herd_job *job, herd_predicate_fn pred, void *userdata)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	if (!pred)
		return -EINVAL;
	job->pred = pred;
	job->pred_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_on_task(herd_job *job, herd_task_cb cb, void *userdata)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	job->on_task = cb;
	job->task_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_on_done(herd_job *job, herd_job_done_cb cb, void *userdata)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	job->on_done = cb;
	job->done_data = userdata;
	return 0;
}

HERD_EXPORT int
herd_job_on_progress(herd_job *job, herd_progress_cb cb, void *userdata)
{
	int r = setter_check(job);

	if (r < 0)
		return r;
	job->on_progress = cb;
	job->progress_data = userdata;
	return 0;
}

static bool
job_reduces(const struct herd_job *job)
{
	return job->kind == HERD_JOB_REDUCE || job->kind == HERD_JOB_REDUCE_ORDERED;
}

static bool
job_folds(const struct herd_job *job)
{
	return job->kind == HERD_JOB_REDUCE && job->worker_combine;
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
	job->started = true;
	job->started_at = herd__pool_now();
	p->kick = true;
	herd__pool_dispatch(p);
	return 0;
}

/* ---- ending a job ---- */

/*
 * Calls method on s's worker. Sending may find the worker gone and close the
 * connection, whose close callback drops the slot's reference: hold one.
 */
static int
slot_call(struct slot *s, const char *method, json_t *params, herd_call_cb cb, void *userdata,
    herd_pending **ret_call)
{
	herd_conn *conn = herd_conn_ref(s->conn);
	int r = herd_call_async(conn, method, params, cb, userdata, ret_call);

	herd_conn_unref(conn);
	return r;
}

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
			task_free(t);
		}
	}
	return any;
}

static void job_progress(struct herd_job *job, bool final);

static void
acc_name(char *buf, size_t len, const struct slot *s, const struct herd_job *job)
{
	snprintf(buf, len, "%s.%u.%u.%llu", s->pool->key_prefix, s->idx, s->gen,
	    (unsigned long long)job->id);
}

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

			acc_name(acc, sizeof(acc), s, job);
			params = json_pack("{s:s}", "acc", acc);
			if (params)
				slot_call(s, "herd.take", params, take_discard, NULL, NULL);
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
static void
job_combine(struct herd_job *job, json_t *value)
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
	if (job->on_task && !(job_folds(job) && r == 0))
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
		job_combine(job, result);
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

/* Keeps an outcome until the ones before it are out, then releases what is in order. */
static void
job_in_order_put(struct herd_job *job, size_t index, int r, json_t *result, herd_error *err)
{
	size_t off = index - job->next_emit, k = 0;

	if (off >= job->pending_cap) {
		size_t cap = job->pending_cap ? job->pending_cap : 16;
		struct outcome *o;

		while (cap <= off)
			cap *= 2;
		o = realloc(job->pending, cap * sizeof(*o));
		if (!o) {
			herd_error *e =
			    herd__error_new(HERD_E_INTERNAL_ERROR, "out of memory", NULL);

			job_end(job, -ENOMEM, e);
			herd_error_unref(e);
			return;
		}
		memset(o + job->pending_cap, 0, (cap - job->pending_cap) * sizeof(*o));
		job->pending = o;
		job->pending_cap = cap;
	}
	job->pending[off] = (struct outcome){ true, r, json_incref(result), herd_error_ref(err) };
	while (k < job->pending_cap && job->pending[k].have && !job->done) {
		struct outcome *o = &job->pending[k];

		job_deliver(job, job->next_emit + k, o->r, o->result, o->err);
		json_decref(o->result);
		herd_error_unref(o->err);
		*o = (struct outcome){ 0 };
		k++;
	}
	if (k && !job->done) {
		memmove(
		    job->pending, job->pending + k, (job->pending_cap - k) * sizeof(*job->pending));
		memset(job->pending + job->pending_cap - k, 0, k * sizeof(*job->pending));
		job->next_emit += k;
	}
}

/* Task t is finished for good (result, handler error, poison): deliver it and free it. */
static void
task_result(struct task *t, int r, json_t *result, herd_error *err)
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
	task_free(t);
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

/* ---- feeding and dispatch ---- */

static struct task *
job_feed(struct herd_job *job)
{
	json_t *arg;
	struct task *t;

	if (!job->started || job->done || job->exhausted)
		return NULL;
	if (job->args)
		arg = json_incref(json_array_get(job->args, job->n_fed));
	else
		arg = job->next(job->next_data);
	if (!arg) {
		job->exhausted = true;
		job->pool->kick = true;
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		json_decref(arg);
		return NULL;
	}
	t->job = job;
	t->index = job->n_fed++;
	t->arg = arg;
	if (job->value && (job->kind == HERD_JOB_MAP || job->kind == HERD_JOB_MAP_UNORDERED))
		json_array_append_new(job->value, json_null());
	return t;
}

/* The next task for a slot: a retry first (a suspect only for an empty slot), else a new one. */
static struct task *
pick_task(struct herd_pool *p, bool slot_empty)
{
	for (struct task *t = p->retry.head; t; t = t->next) {
		if (t->deaths == 0 || slot_empty) {
			herd__task_list_remove(t);
			return t;
		}
	}
	for (struct herd_job *job = p->jobs; job; job = job->next_job) {
		struct task *t = job_feed(job);

		if (t)
			return t;
	}
	return NULL;
}

static void task_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata);

/* A local error for a task whose argument cannot travel. */
static void
task_bad_arg(struct task *t, int r)
{
	herd_error *err = herd__error_newf(HERD_E_INVALID_PARAMS,
	    "argument %zu cannot be sent: %s (it must be an object, an array or null)", t->index,
	    strerror(-r));

	task_result(t, -EREMOTEIO, NULL, err);
	herd_error_unref(err);
}

/* Sends t to s. Returns false if s cannot take it (t went back to the queue or failed). */
static bool
task_send(struct slot *s, struct task *t)
{
	struct herd_job *job = t->job;
	json_t *params = NULL, *arg = json_is_null(t->arg) ? NULL : t->arg;
	const char *method = job->function;
	char acc[128];
	int r;

	if (job_folds(job)) {
		acc_name(acc, sizeof(acc), s, job);
		params = json_pack("{s:s, s:O?, s:s, s:s}", "function", job->function, "args", arg,
		    "acc", acc, "combine", job->worker_combine);
		method = "herd.fold";
		if (arg && !json_is_object(arg) && !json_is_array(arg)) {
			json_decref(params);
			task_bad_arg(t, -EINVAL);
			return true;
		}
	} else {
		params = json_incref(arg);
	}
	r = slot_call(s, method, params, task_reply, t, &t->call);
	json_decref(params);
	if (r == -EINVAL || r == -EMSGSIZE) {
		task_bad_arg(t, r);
		return true;
	}
	if (r < 0) {
		herd__task_list_push(&s->pool->retry, t, true);
		herd__slot_lost(s, "send failed");
		return false;
	}
	t->slot = s;
	herd__task_list_push(&s->flight, t, false);
	if (t->deaths > 0)
		s->suspect_running = true;
	return true;
}

/* True when a suspect waits in the retry queue for a worker of its own. */
static bool
suspect_waiting(struct herd_pool *p)
{
	for (struct task *t = p->retry.head; t; t = t->next)
		if (t->deaths > 0)
			return true;
	return false;
}

void
herd__pool_dispatch(struct herd_pool *p)
{
	struct slot *reserved = NULL;

	if (p->closed || p->broken)
		return;
	/* A waiting suspect needs an empty worker: one worker stops taking new work until then. */
	if (suspect_waiting(p)) {
		for (unsigned i = 0; i < p->n_slots && !reserved; i++)
			if (p->slots[i].state == SLOT_READY && !p->slots[i].suspect_running)
				reserved = &p->slots[i];
	}
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];

		if (s == reserved && s->flight.n > 0)
			continue;
		while (s->state == SLOT_READY && !s->suspect_running && s->flight.n < p->window) {
			struct task *t = pick_task(p, s->flight.n == 0);

			if (!t || !task_send(s, t))
				break;
		}
	}
}

/* ---- replies ---- */

static herd_error *
task_crash_error(struct task *t)
{
	json_t *data = t->death ? json_deep_copy(herd_error_data(t->death)) : json_object();
	herd_error *err;

	char text[1024];

	if (data) {
		json_object_set_new(
		    data, "name", json_string(t->timed_out ? "timeout" : "task_crashed"));
		json_object_set_new(data, "deaths", json_integer(t->deaths));
	}
	snprintf(text, sizeof(text), "task %zu %s its worker %u times; last: %s", t->index,
	    t->timed_out ? "overran (timeout) and lost" : "killed", t->deaths,
	    t->death ? herd_error_message(t->death) : "unknown");
	err = herd__error_new(t->timed_out ? HERD_E_TIMEOUT : HERD_E_WORKER_EXITED, text, data);
	json_decref(data);
	return err;
}

void
herd__pool_requeue(struct herd_pool *p, struct slot *s)
{
	while (s->orphans.head) {
		struct task *t = s->orphans.head;

		herd__task_list_remove(t);
		t->slot = NULL;
		t->job->n_retried++;
		if (t->folded) {
			/* Its result was in the lost accumulator; it did nothing wrong. */
			t->folded = false;
			t->job->n_ok--;
			herd__task_list_push(&p->retry, t, false);
			continue;
		}
		t->deaths++;
		herd__error_set(&t->death, s->death);
		if (t->deaths > p->retries) {
			herd_error *err = task_crash_error(t);

			t->job->n_retried--;
			task_result(t, t->timed_out ? -ETIMEDOUT : -ECHILD, NULL, err);
			herd_error_unref(err);
			continue;
		}
		herd__task_list_push(&p->retry, t, true);
	}
}

static void
task_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata)
{
	struct task *t = userdata;
	const char *name = herd_error_name(err);
	struct herd_pool *p;
	struct slot *s;

	if (t->call != call)
		return; /* orphaned or cancelled: its worker's death decides */
	s = t->slot;
	p = s->pool;
	if (r == -ETIMEDOUT) {
		t->timed_out = true;
		herd__slot_kill(s, "task timeout");
		return;
	}
	if (r < 0 && r != -EREMOTEIO) {
		/* The connection is closing: its close callback (next) drops the slot. */
		return;
	}
	if (r == -EREMOTEIO && name && strcmp(name, "combine_failed") == 0) {
		herd__slot_kill(s, "combine failed");
		return;
	}
	t->call = NULL;
	herd_pending_unref(call);
	if (t->deaths > 0)
		s->suspect_running = false;
	herd__task_list_remove(t);
	if (r == 0) {
		herd__pool_progressed(p);
		if (job_folds(t->job)) {
			t->folded = true;
			t->job->n_ok++;
			herd__task_list_push(&s->folded, t, false);
		} else {
			task_result(t, 0, result, NULL);
		}
	} else if (p->retry_failed && t->failures < p->retries) {
		t->failures++;
		t->job->n_retried++;
		t->slot = NULL;
		herd__task_list_push(&p->retry, t, false);
	} else {
		task_result(t, r, NULL, err);
	}
	herd__pool_dispatch(p);
}

/* ---- takes: the end of a worker-folded reduce ---- */

struct take {
	struct slot *slot;
	unsigned gen;
	struct herd_job *job;
};

static void
take_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata)
{
	struct take *tk = userdata;
	struct slot *s = tk->slot;
	struct herd_job *job = tk->job;
	json_int_t n = json_integer_value(json_object_get(result, "n"));
	json_t *value = json_object_get(result, "value");
	unsigned k = 0;

	s->n_takes--;
	if (job->done || s->gen != tk->gen || s->state != SLOT_READY)
		goto out; /* the job ended, or the slot died and its folds were requeued */
	for (struct task *t = s->folded.head; t; t = t->next)
		k += t->job == job;
	if (r < 0 || n != (json_int_t)k) {
		/* The worker lost (or invented) folds: redo everything it held. */
		herd__slot_kill(s, r < 0 ? "take failed" : "take count mismatch");
		goto out;
	}
	if (n > 0)
		job_combine(job, value);
	for (struct task *t = s->folded.head, *next; t && !job->done; t = next) {
		next = t->next;
		if (t->job == job) {
			job->n_finished++;
			task_free(t);
		}
	}
out:
	herd_job_unref(job);
	free(tk);
}

/* True when no task of job waits or runs anywhere (folded ones excepted). */
static bool
job_settled(struct herd_pool *p, struct herd_job *job)
{
	if (!job->exhausted)
		return false;
	for (struct task *t = p->retry.head; t; t = t->next)
		if (t->job == job)
			return false;
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];

		for (struct task *t = s->flight.head; t; t = t->next)
			if (t->job == job)
				return false;
		for (struct task *t = s->orphans.head; t; t = t->next)
			if (t->job == job)
				return false;
	}
	return true;
}

static void
job_send_takes(struct herd_pool *p, struct herd_job *job)
{
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];
		struct take *tk;
		json_t *params;
		char acc[128];
		bool any = false;

		if (s->state != SLOT_READY || s->n_takes > 0)
			continue;
		for (struct task *t = s->folded.head; t && !any; t = t->next)
			any = t->job == job;
		if (!any)
			continue;
		tk = calloc(1, sizeof(*tk));
		acc_name(acc, sizeof(acc), s, job);
		params = json_pack("{s:s}", "acc", acc);
		if (!tk || !params) {
			free(tk);
			json_decref(params);
			continue;
		}
		*tk = (struct take){ s, s->gen, herd_job_ref(job) };
		if (slot_call(s, "herd.take", params, take_reply, tk, NULL) == 0) {
			s->n_takes++;
		} else {
			herd_job_unref(job);
			free(tk);
			herd__slot_lost(s, "take failed");
		}
		json_decref(params);
	}
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
				if (job_folds(job) && job_settled(p, job))
					job_send_takes(p, job);
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

HERD_EXPORT int
herd_job_is_done(herd_job *job)
{
	return job ? job->done : -EINVAL;
}

HERD_EXPORT herd_error *
herd_job_error(herd_job *job)
{
	return job ? job->error : NULL;
}

HERD_EXPORT herd_pool *
herd_job_get_pool(herd_job *job)
{
	return job ? job->pool : NULL;
}

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
