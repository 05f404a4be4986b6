/* SPDX-License-Identifier: MIT */
/*
 * A worker type served on a thread of the test process, with its own libev
 * loop (libherd's rule: one loop, one thread); see ht-example.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ht-example.h"

static void
stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct ht_server *s = w->data;

	ev_async_stop(loop, w);
	herd_server_close(s->srv);
	s->srv = herd_server_unref(s->srv);
}

static void *
server_thread(void *arg)
{
	struct ht_server *s = arg;

	s->serve_rc = herd_serve(s->loop, s->type, s->path, s->init, s->settings, &s->srv);
	pthread_mutex_lock(&s->mu);
	s->started = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
	if (s->serve_rc < 0)
		return NULL;
	/* Returns once the server and every connection are gone: no watcher is left. */
	ev_run(s->loop, 0);
	pthread_mutex_lock(&s->mu);
	s->running = false;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* Frees what ht_server_start() made once the thread has ended. */
static void
server_free(struct ht_server *s)
{
	pthread_join(s->thread, NULL);
	ev_loop_destroy(s->loop);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
}

int
ht_server_start(
    struct ht_server *s, const struct herd_worker_type *type, json_t *init, json_t *settings)
{
	int r;

	memset(s, 0, sizeof(*s));
	s->type = type;
	r = ht_tmpdir(s->dir, sizeof(s->dir));
	if (r < 0)
		return r;
	snprintf(s->path, sizeof(s->path), "%s/worker.sock", s->dir);
	s->init = init;
	s->settings = settings;
	s->loop = ev_loop_new(EVFLAG_AUTO);
	if (!s->loop)
		return -ENOMEM;
	ev_async_init(&s->stop, stop_cb);
	s->stop.data = s;
	ev_async_start(s->loop, &s->stop);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->running = true;
	r = pthread_create(&s->thread, NULL, server_thread, s);
	if (r != 0) {
		ev_loop_destroy(s->loop);
		return -r;
	}
	pthread_mutex_lock(&s->mu);
	while (!s->started)
		pthread_cond_wait(&s->cond, &s->mu);
	pthread_mutex_unlock(&s->mu);
	s->init = s->settings = NULL;
	if (s->serve_rc < 0)
		server_free(s);
	return s->serve_rc;
}

int
ht_server_stop(struct ht_server *s)
{
	struct timespec deadline;
	int r = 0;

	ev_async_send(s->loop, &s->stop);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	/* pthread_cond_timedwait takes CLOCK_REALTIME; only a deadline, never a measurement. */
	pthread_mutex_lock(&s->mu);
	while (s->running && r == 0)
		r = pthread_cond_timedwait(&s->cond, &s->mu, &deadline);
	pthread_mutex_unlock(&s->mu);
	if (r != 0) {
		fprintf(stderr, "herd_test: the server thread did not finish\n");
		return -ETIMEDOUT;
	}
	server_free(s);
	return 0;
}

void
ht_server_start_ok(struct ht_server *s, json_t *init, json_t *settings)
{
	int fds_before = ht_count_fds(getpid());

	ck_assert_int_eq(ht_server_start(s, &example_worker_type, init, settings), 0);
	s->fds_before = fds_before;
	json_decref(init);
	json_decref(settings);
}

void
ht_server_stop_ok(struct ht_server *s)
{
	ck_assert_int_eq(ht_server_stop(s), 0);
	ck_assert_int_eq(ht_count_fds(getpid()), s->fds_before);
	ht_teardown();
}
