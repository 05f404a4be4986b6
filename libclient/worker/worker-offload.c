/* SPDX-License-Identifier: MIT */
/*
 * herd_request_offload(): a handler's long work on a thread of a small
 * process-wide pool, its completion back on the loop that serves the request.
 *
 * The pool is a queue under one mutex and up to max_threads detached threads,
 * started as work arrives and kept, idle on a condition variable, for the next
 * job. A finished job goes to its server's completion list and wakes that
 * server's loop with an ev_async; the loop then runs the done functions. The
 * ev_async is active only while the server has jobs out, so it keeps the loop
 * running exactly as long as there is a done function still to run. A job
 * holds a reference on its request, which holds its connection and so its
 * server: nothing a job points at is freed before its done function ran.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "worker/worker-internal.h"

struct offload_job {
	struct offload_job *next;
	struct herd__offload *home; /* where it finishes: the pool thread touches nothing else */
	herd_request *req;
	herd_work_fn work;
	herd_work_done_fn done;
	void *arg;
};

/* A server's side: the jobs it has out, and those finished, waiting for its loop. */
struct herd__offload {
	struct ev_loop *loop;
	ev_async wake;
	unsigned n_out; /* loop thread only */
	pthread_mutex_t lock; /* guards finished */
	struct offload_job *finished, **finished_tail;
};

/* The pool, shared by every server of the process. */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static struct offload_job *queue_head, **queue_tail = &queue_head;
static unsigned n_threads, n_idle, max_threads;

HERD_EXPORT int
herd_offload_set_threads(unsigned n)
{
	pthread_mutex_lock(&pool_lock);
	max_threads = n;
	pthread_mutex_unlock(&pool_lock);
	return 0;
}

/* The pool's size: as set, else the online CPUs. Pool lock held. */
static unsigned
pool_max(void)
{
	long cpus;

	if (max_threads > 0)
		return max_threads;
	cpus = sysconf(_SC_NPROCESSORS_ONLN);
	return cpus > 0 ? (unsigned)cpus : 1;
}

/*
 * Hands a finished job to its server's loop. Pool thread. The wakeup is sent
 * under the lock: once the loop can take the job (and so, after its done
 * function, free the server and o), this thread no longer touches o.
 */
static void
job_finished(struct offload_job *job)
{
	struct herd__offload *o = job->home;

	job->next = NULL;
	pthread_mutex_lock(&o->lock);
	*o->finished_tail = job;
	o->finished_tail = &job->next;
	ev_async_send(o->loop, &o->wake);
	pthread_mutex_unlock(&o->lock);
}

static void *
pool_thread(void *unused)
{
	for (;;) {
		struct offload_job *job;

		pthread_mutex_lock(&pool_lock);
		n_idle++;
		while (!queue_head)
			pthread_cond_wait(&pool_cond, &pool_lock);
		n_idle--;
		job = queue_head;
		queue_head = job->next;
		if (!queue_head)
			queue_tail = &queue_head;
		pthread_mutex_unlock(&pool_lock);

		job->work(job->arg);
		job_finished(job);
	}
	return NULL;
}

/* Starts a pool thread with every signal blocked: signals are the loop's. Pool lock held. */
static int
pool_grow(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t t;
	int r;

	sigfillset(&all);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&t, &attr, pool_thread, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (r != 0)
		return -r;
	n_threads++;
	return 0;
}

/* Queues job, starting a thread if none is idle and the pool may grow. */
static int
pool_submit(struct offload_job *job)
{
	int r = 0;

	pthread_mutex_lock(&pool_lock);
	if (n_idle == 0 && n_threads < pool_max()) {
		r = pool_grow();
		/* Without a new thread, one already running takes the job later. */
		if (r < 0 && n_threads > 0)
			r = 0;
	}
	if (r == 0) {
		job->next = NULL;
		*queue_tail = job;
		queue_tail = &job->next;
		pthread_cond_signal(&pool_cond);
	}
	pthread_mutex_unlock(&pool_lock);
	return r;
}

/* The loop's side: runs the done functions of the finished jobs. */
static void
offload_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	struct herd__offload *o = w->data;
	struct offload_job *list, *job;

	pthread_mutex_lock(&o->lock);
	list = o->finished;
	o->finished = NULL;
	o->finished_tail = &o->finished;
	pthread_mutex_unlock(&o->lock);

	while ((job = list)) {
		herd_request *req = job->req;

		list = job->next;
		job->done(req, job->arg);
		free(job);
		/* The last job out: nothing left to wait for keeps the loop running. */
		if (--o->n_out == 0)
			ev_async_stop(loop, &o->wake);
		/* Last: the last request may hold the last of its server, and so of o. */
		herd_request_unref(req);
	}
}

/* srv's completion side, made on first use. */
static struct herd__offload *
offload_of(struct herd_server *srv)
{
	struct herd__offload *o = srv->offload;

	if (o)
		return o;
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->loop = srv->loop;
	o->finished_tail = &o->finished;
	pthread_mutex_init(&o->lock, NULL);
	ev_async_init(&o->wake, offload_wake);
	o->wake.data = o;
	srv->offload = o;
	return o;
}

void
herd__offload_free(struct herd_server *srv)
{
	struct herd__offload *o = srv->offload;

	/* Every job held a request, so a freed server has none out. */
	if (!o)
		return;
	ev_async_stop(o->loop, &o->wake);
	/* The last pool thread to finish a job of ours may still be leaving the lock. */
	pthread_mutex_lock(&o->lock);
	pthread_mutex_unlock(&o->lock);
	pthread_mutex_destroy(&o->lock);
	free(o);
	srv->offload = NULL;
}

HERD_EXPORT int
herd_request_offload(herd_request *req, herd_work_fn work, herd_work_done_fn done, void *arg)
{
	struct herd__offload *o;
	struct offload_job *job;
	int r;

	if (!req || !work || !done)
		return -EINVAL;
	if (req->finished && req->fn->kind != HERD_KIND_ONEWAY)
		return -EALREADY;
	o = offload_of(req->conn->srv);
	job = calloc(1, sizeof(*job));
	if (!o || !job) {
		free(job);
		return -ENOMEM;
	}
	*job = (struct offload_job){
		.home = o, .req = herd_request_ref(req), .work = work, .done = done, .arg = arg
	};
	if (o->n_out++ == 0)
		ev_async_start(o->loop, &o->wake);
	r = pool_submit(job);
	if (r < 0) {
		if (--o->n_out == 0)
			ev_async_stop(o->loop, &o->wake);
		herd_request_unref(job->req);
		free(job);
	}
	return r;
}
