/* SPDX-License-Identifier: MIT */
/*
 * Tasks: creating them from a job's arguments, dispatching them to worker
 * slots, taking their replies, redoing what a dead worker held, and the
 * herd.take requests that end a worker-folded reduce.
 *
 * Exactly once, master side. A task's outcome is delivered when, and only
 * when, the task object is freed by herd__task_result() (or, for a worker-folded
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

/* ---- task lists ---- */

/* Unlinks t from whatever list holds it (none: nothing). */
void
herd__task_list_remove(struct task *t)
{
	struct task_list *l = t->list;

	if (!l)
		return;
	HERD__TLIST_REMOVE(l->head, l->tail, t, prev, next);
	l->n--;
	t->list = NULL;
}

/* Moves t to l (front or back), out of its previous list. */
void
herd__task_list_push(struct task_list *l, struct task *t, bool front)
{
	herd__task_list_remove(t);
	t->list = l;
	if (front)
		HERD__TLIST_PREPEND(l->head, l->tail, t, prev, next);
	else
		HERD__TLIST_APPEND(l->head, l->tail, t, prev, next);
	l->n++;
}

/* Takes t out of its dispatch; the last task out abandons it and cancels its call. */
void
herd__task_unbatch(struct task *t)
{
	struct batch *b = t->batch;
	herd_pending *call;

	if (!b)
		return;
	b->tasks[t->batch_pos] = NULL;
	t->batch = NULL;
	if (t->deaths > 0)
		b->slot->suspect_running = false;
	if (--b->n_live > 0 || !b->call)
		return;
	/* Nobody waits for its reply now: the worker stops, the window has room. */
	call = b->call;
	b->call = NULL;
	b->slot->n_batches--;
	if (!b->plain && b->slot->conn)
		herd__conn_notify(b->slot->conn, "herd.cancel",
		    json_pack("{s:I}", "id", (json_int_t)call->op.id));
	herd_call_cancel(call); /* its callback runs now, sees b abandoned, frees b */
	herd_pending_unref(call);
}

/*
 * Freed tasks the pool keeps for the next ones: a map of tiny tasks would
 * otherwise pay a calloc and a free per task, a good part of its cost.
 */
#define FREE_TASKS_MAX 16384u

/* Frees t; a dispatch in flight loses it (and is cancelled once empty). */
void
herd__task_free(struct task *t)
{
	struct herd_pool *p = t->job->pool;

	herd__task_list_remove(t);
	herd__task_unbatch(t);
	json_decref(t->arg);
	herd_error_unref(t->death);
	if (!p || p->n_free_tasks >= FREE_TASKS_MAX) {
		free(t);
		return;
	}
	t->next = p->free_tasks;
	p->free_tasks = t;
	p->n_free_tasks++;
}

/* A zeroed task, a kept one if there is one. */
static struct task *
task_alloc(struct herd_pool *p)
{
	struct task *t = p->free_tasks;

	if (!t)
		return calloc(1, sizeof(*t));
	p->free_tasks = t->next;
	p->n_free_tasks--;
	memset(t, 0, sizeof(*t));
	return t;
}

void
herd__pool_free_tasks(struct herd_pool *p)
{
	while (p->free_tasks) {
		struct task *t = p->free_tasks;

		p->free_tasks = t->next;
		free(t);
	}
	p->n_free_tasks = 0;
}

/*
 * Calls method on s's worker. Sending may find the worker gone and close the
 * connection, whose close callback drops the slot's reference: hold one.
 */
int
herd__slot_call(struct slot *s, const char *method, json_t *params, herd_call_cb cb, void *userdata,
    herd_pending **ret_call)
{
	herd_conn *conn = herd_conn_ref(s->conn);
	int r = herd_call_async(conn, method, params, cb, userdata, ret_call);

	herd_conn_unref(conn);
	return r;
}

/* Accumulator names are unique per process, pool, slot, worker generation and job. */
void
herd__acc_name(char *buf, size_t len, const struct slot *s, const struct herd_job *job)
{
	snprintf(buf, len, "%s.%u.%u.%llu", s->pool->key_prefix, s->idx, s->gen,
	    (unsigned long long)job->id);
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
	t = task_alloc(job->pool);
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

/* A job whose arguments travel as they are, in herd.batch's bare form (pool.h). */
static bool
job_bare(const struct herd_job *job)
{
	return job->flags & HERD_JOB_BARE_ARGS;
}

/* How many tasks may travel with t: one for a suspect, else its cap or its job's chunksize. */
static unsigned
batch_max(const struct task *t)
{
	unsigned max = t->job->chunksize ? t->job->chunksize : 1;

	if (t->deaths > 0)
		return 1;
	return t->cap && t->cap < max ? t->cap : max;
}

/* True when a task's argument can travel: a call's params, or any value in a bare job. */
static bool
arg_ok(const struct task *t)
{
	return job_bare(t->job) || json_is_object(t->arg) || json_is_array(t->arg) ||
	    json_is_null(t->arg);
}

/*
 * Fills b (holding its first task) with more tasks of the same job, retries
 * first, up to max. Stops at a task whose argument cannot travel: returned
 * for the caller to report once b is sent.
 */
static struct task *
batch_fill(struct herd_pool *p, struct batch *b, unsigned max)
{
	struct herd_job *job = b->tasks[0]->job;
	struct task *t, *next;

	for (t = p->retry.head; t && b->n < max; t = next) {
		next = t->next;
		if (t->job != job || t->deaths > 0 || (t->cap && t->cap < max))
			continue;
		herd__task_list_remove(t);
		if (!arg_ok(t))
			return t;
		b->tasks[b->n++] = t;
	}
	while (b->n < max && (t = job_feed(job))) {
		if (!arg_ok(t))
			return t;
		b->tasks[b->n++] = t;
	}
	return NULL;
}

/*
 * A batch for up to max tasks. The pool keeps one freed batch for the next:
 * a big one (thousands of tasks) would otherwise be a large allocation per
 * message, which makes malloc consolidate every small block freed since.
 */
static struct batch *
batch_alloc(struct herd_pool *p, unsigned max)
{
	struct batch *b = p->spare_batch;

	if (b && b->cap >= max) {
		p->spare_batch = NULL;
	} else {
		b = malloc(sizeof(*b) + max * sizeof(b->tasks[0]));
		if (!b)
			return NULL;
		b->cap = max;
	}
	b->slot = NULL;
	b->call = NULL;
	b->n = b->n_live = 0;
	b->plain = false;
	return b;
}

/* Frees b, or keeps it as the pool's spare. */
static void
batch_free(struct herd_pool *p, struct batch *b)
{
	if (!p->spare_batch || p->spare_batch->cap < b->cap) {
		free(p->spare_batch);
		p->spare_batch = b;
	} else {
		free(b);
	}
}

static void batch_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata);

/* A local error for a task whose argument cannot travel. */
static void
task_bad_arg(struct task *t, int r)
{
	herd_error *err = herd__error_newf(HERD_E_INVALID_PARAMS,
	    "argument %zu cannot be sent: %s (it must be an object, an array or null)", t->index,
	    strerror(-r));

	herd__task_result(t, -EREMOTEIO, NULL, err);
	herd_error_unref(err);
}

/* Empties the args array once its message went (a reference kept elsewhere: let it go). */
static void
batch_args_release(struct herd_pool *p)
{
	if (p->batch_args && p->batch_args->refcount == 1) {
		json_array_clear(p->batch_args);
	} else {
		json_decref(p->batch_args);
		p->batch_args = NULL;
	}
}

/*
 * herd.batch's args for b (borrowed), in the pool's array: emptied after each
 * send, it keeps its room, where a new array per batch would grow to the
 * batch's size again by reallocations (large ones, each a malloc_consolidate).
 */
static json_t *
batch_args_fill(struct herd_pool *p, const struct batch *b)
{
	if (!p->batch_args)
		p->batch_args = json_array();
	for (unsigned i = 0; p->batch_args && i < b->n; i++)
		if (json_array_append(p->batch_args, b->tasks[i]->arg) < 0)
			break;
	if (p->batch_args && json_array_size(p->batch_args) == b->n)
		return p->batch_args;
	batch_args_release(p);
	return NULL;
}

/*
 * The message for b on s: one task as the plain call (or herd.fold), several
 * (or a bare job's) as herd.batch. Returns the params (new reference; NULL for a plain call of
 * null) and *ret_method, which is NULL when there is no memory for them.
 */
static json_t *
batch_params(struct slot *s, struct batch *b, const char **ret_method)
{
	struct herd_job *job = b->tasks[0]->job;
	json_t *arg = b->tasks[0]->arg, *params, *args;
	char acc[128];

	if (herd__job_folds(job))
		herd__acc_name(acc, sizeof(acc), s, job);
	if (b->plain && !herd__job_folds(job)) {
		*ret_method = job->function;
		return json_is_null(arg) ? NULL : json_incref(arg);
	}
	if (b->plain) {
		params = json_pack("{s:s, s:O?, s:s, s:s}", "function", job->function, "args",
		    json_is_null(arg) ? NULL : arg, "acc", acc, "combine", job->worker_combine);
		*ret_method = params ? "herd.fold" : NULL;
		return params;
	}
	*ret_method = "herd.batch";
	args = batch_args_fill(s->pool, b);
	if (args && herd__job_folds(job))
		params = json_pack("{s:s, s:O, s:s, s:s}", "function", job->function, "args", args,
		    "acc", acc, "combine", job->worker_combine);
	else if (args)
		params = json_pack("{s:s, s:O}", "function", job->function, "args", args);
	else
		params = NULL;
	if (params && job_bare(job) && json_object_set_new(params, "bare", json_true()) < 0) {
		json_decref(params);
		params = NULL;
	}
	if (!params)
		*ret_method = NULL;
	return params;
}

/*
 * Sends b's tasks to s as one message. Returns false if s cannot take it (the
 * tasks went back to the queue); b is freed unless its call went out.
 */
static bool
batch_send(struct slot *s, struct batch *b)
{
	struct herd_pool *p = s->pool;
	const char *method = NULL;
	json_t *params;
	int r;

	b->slot = s;
	b->plain = b->n == 1 && !job_bare(b->tasks[0]->job);
	params = batch_params(s, b, &method);
	r = method ? herd__slot_call(s, method, params, batch_reply, b, &b->call) : -ENOMEM;
	json_decref(params);
	if (!b->plain)
		batch_args_release(p);
	if (r == -EINVAL || r == -EMSGSIZE) {
		if (b->n == 1) {
			task_bad_arg(b->tasks[0], r);
		} else {
			/* Too big together: the halves go again. */
			for (unsigned i = b->n; i-- > 0;) {
				b->tasks[i]->cap = b->n / 2;
				herd__task_list_push(&p->retry, b->tasks[i], true);
			}
		}
		batch_free(p, b);
		return true;
	}
	if (r < 0) {
		for (unsigned i = b->n; i-- > 0;)
			herd__task_list_push(&p->retry, b->tasks[i], true);
		batch_free(p, b);
		herd__slot_lost(s, "send failed");
		return false;
	}
	if (!b->plain && p->task_timeout_usec)
		herd_call_set_timeout(b->call, p->task_timeout_usec * b->n);
	s->n_batches++;
	b->n_live = b->n;
	for (unsigned i = 0; i < b->n; i++) {
		struct task *t = b->tasks[i];

		t->slot = s;
		t->batch = b;
		t->batch_pos = i;
		t->timed_out = false;
		herd__task_list_push(&s->flight, t, false);
		if (t->deaths > 0)
			s->suspect_running = true;
	}
	return true;
}

/* Sends s its next message. Returns false when there is nothing to send or s failed. */
static bool
slot_send_next(struct slot *s)
{
	struct herd_pool *p = s->pool;
	struct task *t = pick_task(p, s->n_batches == 0), *bad;
	struct herd_job *job;
	struct batch *b;
	unsigned max;
	bool ok;

	if (!t)
		return false;
	if (!arg_ok(t)) {
		task_bad_arg(t, -EINVAL);
		return true;
	}
	max = batch_max(t);
	b = batch_alloc(p, max);
	if (!b) {
		herd__task_list_push(&p->retry, t, true);
		return false;
	}
	b->tasks[b->n++] = t;
	job = herd_job_ref(t->job);
	bad = batch_fill(p, b, max);
	ok = batch_send(s, b);
	if (bad && job->done)
		herd__task_free(bad);
	else if (bad)
		task_bad_arg(bad, -EINVAL);
	herd_job_unref(job);
	return ok;
}

/*
 * True when a suspect waits in the retry queue for a worker of its own and
 * none is coming: a slot being replaced gets a fresh worker, empty, which
 * takes the suspects while the others go on with new work at full speed
 * (holding one back to drain its window, then run suspects one round trip at
 * a time, cost more than the crash itself).
 */
static bool
suspect_needs_reserve(struct herd_pool *p)
{
	bool waiting = false;

	for (struct task *t = p->retry.head; t && !waiting; t = t->next)
		waiting = t->deaths > 0;
	for (unsigned i = 0; i < p->n_slots && waiting; i++) {
		enum slot_state st = p->slots[i].state;

		if (st == SLOT_IDLE || st == SLOT_SPAWNING || st == SLOT_DYING)
			return false;
	}
	return waiting;
}

/*
 * The window counts tasks; batches are let past it up to two in flight, so a
 * worker has the next batch at hand when one ends (one task a message: the
 * window alone, as ever).
 */
static bool
slot_has_room(const struct herd_pool *p, const struct slot *s)
{
	return s->n_batches < p->window && (s->flight.n < p->window || s->n_batches < 2);
}

/* Fills every ready slot up to its window; suspects run alone. */
void
herd__pool_dispatch(struct herd_pool *p)
{
	struct slot *reserved = NULL;

	if (p->closed || p->broken)
		return;
	/* A waiting suspect needs an empty worker: one worker stops taking new work until then. */
	if (suspect_needs_reserve(p)) {
		for (unsigned i = 0; i < p->n_slots && !reserved; i++)
			if (p->slots[i].state == SLOT_READY && !p->slots[i].suspect_running)
				reserved = &p->slots[i];
	}
	for (unsigned i = 0; i < p->n_slots; i++) {
		struct slot *s = &p->slots[i];

		if (s == reserved && s->n_batches > 0)
			continue;
		while (s->state == SLOT_READY && !s->suspect_running && slot_has_room(p, s))
			if (!slot_send_next(s))
				break;
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

/* Back to the queue: folded tasks as they were, in-flight ones one death closer to poison. */
void
herd__pool_requeue(struct herd_pool *p, struct slot *s)
{
	while (s->orphans.head) {
		struct task *t = s->orphans.head;

		herd__task_list_remove(t);
		t->slot = NULL;
		t->job->n_retried++;
		if (t->folded || !s->host->m) {
			/* Its result was in the lost accumulator, or its host went: it did nothing wrong. */
			if (t->folded)
				t->job->n_ok--;
			t->folded = false;
			herd__task_list_push(&p->retry, t, false);
			continue;
		}
		/* Whether it ran or waited behind the one that did is unknown: alone next time. */
		t->deaths++;
		herd__error_set(&t->death, s->death);
		if (t->deaths > p->retries) {
			herd_error *err = task_crash_error(t);

			t->job->n_retried--;
			herd__task_result(t, t->timed_out ? -ETIMEDOUT : -ECHILD, NULL, err);
			herd_error_unref(err);
			continue;
		}
		herd__task_list_push(&p->retry, t, true);
	}
}

/* One task's outcome came back from its worker s (result and err borrowed). */
static void
task_outcome(struct slot *s, struct task *t, int r, json_t *result, herd_error *err)
{
	struct herd_pool *p = s->pool;

	herd__task_list_remove(t);
	if (r == 0 && herd__job_folds(t->job)) {
		t->folded = true;
		t->job->n_ok++;
		herd__task_list_push(&s->folded, t, false);
	} else if (r == 0) {
		herd__task_result(t, 0, result, NULL);
	} else if (p->retry_failed && t->failures < p->retries) {
		t->failures++;
		t->job->n_retried++;
		t->slot = NULL;
		herd__task_list_push(&p->retry, t, false);
	} else {
		herd__task_result(t, r, NULL, err);
	}
}

/* The outcome of item i of a herd.batch reply: 0 and *ret_result, or an error. */
static int
batch_item(json_t *results, json_t *errors, size_t *cursor, size_t i, json_t **ret_result,
    herd_error **ret_err)
{
	json_t *e = json_array_get(errors, *cursor), *error;

	*ret_result = json_array_get(results, i);
	*ret_err = NULL;
	if ((size_t)json_integer_value(json_object_get(e, "index")) != i || !json_is_object(e))
		return 0;
	(*cursor)++;
	error = json_object_get(e, "error");
	*ret_err = herd__error_new((int)json_integer_value(json_object_get(error, "code")),
	    json_string_value(json_object_get(error, "message")), json_object_get(error, "data"));
	return *ret_err ? herd__error_to_errno(herd_error_code(*ret_err)) : -ENOMEM;
}

/* True when a herd.batch reply has the shape b expects ("results" or "n", "errors"). */
static bool
batch_reply_ok(const struct batch *b, json_t *result)
{
	json_t *errors = json_object_get(result, "errors");

	if (errors && !json_is_array(errors))
		return false;
	if (json_is_integer(json_object_get(result, "n")))
		return true; /* folded */
	return json_array_size(json_object_get(result, "results")) == b->n;
}

/* Hands every task still in b its outcome, in order; the job may end on the way. */
static void
batch_deliver(struct batch *b, int r, json_t *result, herd_error *err)
{
	json_t *results = json_object_get(result, "results");
	json_t *errors = json_object_get(result, "errors");
	size_t cursor = 0;

	for (unsigned i = 0; i < b->n; i++) {
		struct task *t = b->tasks[i];
		json_t *res = result;
		herd_error *e = NULL;
		int ri = r;

		if (!b->plain && r == 0)
			ri = batch_item(results, errors, &cursor, i, &res, &e);
		if (!t) {
			herd_error_unref(e);
			continue; /* freed meanwhile (its job ended) */
		}
		b->tasks[i] = NULL;
		b->n_live--;
		t->batch = NULL;
		if (t->deaths > 0)
			b->slot->suspect_running = false;
		task_outcome(b->slot, t, ri, res, e ? e : err);
		herd_error_unref(e);
	}
}

/* Takes every task out of b, which stays allocated until its callback. */
void
herd__batch_abandon(struct batch *b)
{
	for (unsigned i = 0; i < b->n; i++) {
		if (b->tasks[i])
			b->tasks[i]->batch = NULL;
		b->tasks[i] = NULL;
	}
	b->n_live = 0;
	if (b->call) {
		b->slot->n_batches--;
		b->call = herd_pending_unref(b->call);
	}
}

static void
batch_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata)
{
	struct batch *b = userdata;
	struct slot *s = b->slot;
	const char *name = herd_error_name(err);
	struct herd_job *job;

	if (b->call != call) {
		batch_free(s->pool, b); /* abandoned: its worker's death decides */
		return;
	}
	if (r == -ETIMEDOUT) {
		for (unsigned i = 0; i < b->n; i++)
			if (b->tasks[i])
				b->tasks[i]->timed_out = true;
		herd__slot_kill(s, "task timeout");
	} else if (r < 0 && r != -EREMOTEIO) {
		/* The connection is closing: its close callback (next) drops the slot. */
	} else if (r == -EREMOTEIO && name && strcmp(name, "combine_failed") == 0) {
		herd__slot_kill(s, "combine failed");
	} else if (r == 0 && !b->plain && !batch_reply_ok(b, result)) {
		herd__slot_kill(s, "malformed herd.batch reply");
	} else {
		/* A reply: every task in it is answered. */
		b->call = herd_pending_unref(b->call);
		s->n_batches--;
		if (r == 0)
			herd__slot_progressed(s);
		job = NULL;
		for (unsigned i = 0; i < b->n && !job; i++)
			job = b->tasks[i] ? herd_job_ref(b->tasks[i]->job) : NULL;
		batch_deliver(b, r, result, err);
		herd_job_unref(job);
		batch_free(s->pool, b);
		herd__pool_dispatch(s->pool);
		return;
	}
	herd__batch_abandon(b);
	batch_free(s->pool, b);
}

/* ---- takes: the end of a worker-folded reduce ---- */

/* A reply callback's context, shaped like any other (test-client-calls.c): the fields differ. */
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
		herd__job_combine(job, value);
	for (struct task *t = s->folded.head, *next; t && !job->done; t = next) {
		next = t->next;
		if (t->job == job) {
			job->n_finished++;
			herd__task_free(t);
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
		herd__acc_name(acc, sizeof(acc), s, job);
		params = json_pack("{s:s}", "acc", acc);
		if (!tk || !params) {
			free(tk);
			json_decref(params);
			continue;
		}
		*tk = (struct take){ s, s->gen, herd_job_ref(job) };
		if (herd__slot_call(s, "herd.take", params, take_reply, tk, NULL) == 0) {
			s->n_takes++;
		} else {
			herd_job_unref(job);
			free(tk);
			herd__slot_lost(s, "take failed");
		}
		json_decref(params);
	}
}

/* Sends the takes of a worker-folded job once nothing of it runs or waits. */
void
herd__job_take_if_settled(struct herd_pool *p, struct herd_job *job)
{
	if (herd__job_folds(job) && job_settled(p, job))
		job_send_takes(p, job);
}
