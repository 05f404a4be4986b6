/* SPDX-License-Identifier: MIT */
/*
 * The rpc_parallel examples as one worker type (see example-worker.h). Every
 * kind is exercised here the way an application would write it: validation
 * with json_unpack_ex, asynchronous replies from ev_timers, backpressure
 * through on_drain, and cleanup on cancel. echo, fail, the sum_stream sink and
 * sleep are worker-args.c's, which herd-testworker serves too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include <herd/herd-ev.h>

#include "example-worker.h"
#include "worker-args.h"

struct ex_watch;

struct ex_worker {
	struct wa_worker wa; /* first, for wa_state_new */
	json_t *notes; /* array of strings added by "note" */
	struct ex_watch *watchers; /* open "watch" streams */
};

/* Counts the call (wa_begin) and returns the worker's state. */
static struct ex_worker *
ex_begin(herd_request *req)
{
	return (struct ex_worker *)wa_begin(req);
}

static struct ex_worker *
ex_worker(herd_request *req)
{
	return herd_request_worker_state(req);
}

/* Begins a call whose argument is {n} with n in 0..max; else answers it and returns false. */
static bool
ex_begin_n(herd_request *req, json_t *arg, json_int_t max, json_int_t *n)
{
	ex_begin(req);
	if (wa_unpack(req, arg, "{s:I}", "n", n) < 0)
		return false;
	if (*n < 0 || *n > max) {
		herd_request_fail(
		    req, "n must be in 0..%lld, not %lld", (long long)max, (long long)*n);
		return false;
	}
	return true;
}

/* sum and product answer like herd-testworker's (callers use either), with their own checks. */
static void
ex_sum(herd_request *req, json_t *arg)
{
	json_int_t n, total = 0;

	if (!ex_begin_n(req, arg, 100000000, &n))
		return;
	for (json_int_t i = 0; i < n; i++)
		total += i;
	herd_log(HERD_LOG_INFO, "sum: %lld", (long long)total);
	herd_request_reply(req, json_integer(total));
}

static void
ex_product(herd_request *req, json_t *arg)
{
	json_int_t n, total = 1;

	if (!ex_begin_n(req, arg, 20, &n))
		return;
	for (json_int_t i = 2; i <= n; i++)
		total *= i;
	herd_request_reply(req, json_integer(total));
}

/* ---- a request held across loop iterations, with a timer ---- */

struct ex_timed {
	herd_request *req; /* a reference */
	struct ev_loop *loop;
	ev_timer timer;
};

/*
 * Allocates size bytes, a struct that starts with struct ex_timed, holding
 * req and its timer set to cb (not started). Answers req and returns NULL
 * when out of memory.
 */
static void *
ex_timed_new(herd_request *req, size_t size, void (*cb)(struct ev_loop *, ev_timer *, int),
    double after, double repeat)
{
	struct ex_timed *t = wa_calloc(req, size);

	if (!t)
		return NULL;
	t->req = herd_request_ref(req);
	t->loop = herd_request_loop(req);
	ev_timer_init(&t->timer, cb, after, repeat);
	t->timer.data = t;
	return t;
}

static void
ex_timed_free(void *p)
{
	struct ex_timed *t = p;

	ev_timer_stop(t->loop, &t->timer);
	herd_request_unref(t->req);
	free(t);
}

/* ---- count: a pipe that follows backpressure and notices cancel ---- */

struct ex_count {
	struct ex_timed t;
	json_int_t next, n;
	bool waited;
};

static void
count_cancel(herd_request *req, void *userdata)
{
	struct ex_count *c = userdata;

	ex_worker(req)->wa.cancelled++;
	herd_log(HERD_LOG_DEBUG, "count: cancelled after %lld items", (long long)c->next);
	ex_timed_free(c);
}

/* Writes as many items as the connection takes; waits for a drain when it is full. */
static void count_pump(herd_request *req, void *userdata);

static void
count_pump(herd_request *req, void *userdata)
{
	struct ex_count *c = userdata;

	while (c->next < c->n) {
		json_t *item = json_integer(c->next);
		int r = herd_request_write(req, item);

		if (r == -EAGAIN) {
			/* Not taken: the item is still ours. */
			json_decref(item);
			if (!c->waited)
				herd_log(HERD_LOG_DEBUG, "count: the reader is slow; waiting");
			c->waited = true;
			herd_request_on_drain(req, count_pump, c);
			return;
		}
		if (r < 0) {
			ex_timed_free(c);
			return;
		}
		c->next++;
	}
	herd_request_end(req, json_pack("{s:I}", "count", c->n));
	ex_timed_free(c);
}

/* One item per tick; an item the connection cannot take now is retried next tick. */
static void
count_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ex_count *c = w->data;
	int r;

	if (c->next < c->n) {
		json_t *item = json_integer(c->next);

		r = herd_request_write(c->t.req, item);
		if (r == -EAGAIN) {
			json_decref(item);
			return;
		}
		if (r < 0) {
			ex_timed_free(c);
			return;
		}
		c->next++;
	}
	if (c->next == c->n) {
		herd_request_end(c->t.req, json_pack("{s:I}", "count", c->n));
		ex_timed_free(c);
	}
}

static void
ex_count(herd_request *req, json_t *arg)
{
	json_int_t n, delay_ms = 0;
	struct ex_count *c;

	ex_begin(req);
	if (wa_unpack(req, arg, "{s:I, s?:I}", "n", &n, "delay_ms", &delay_ms) < 0)
		return;
	if (n < 0 || delay_ms < 0) {
		herd_request_fail(req, "n and delay_ms must not be negative");
		return;
	}
	c = ex_timed_new(req, sizeof(*c), count_tick, delay_ms / 1000.0, delay_ms / 1000.0);
	if (!c)
		return;
	c->n = n;
	herd_request_on_cancel(req, count_cancel, c);
	if (delay_ms > 0 && n > 0)
		ev_timer_start(c->t.loop, &c->t.timer);
	else
		count_pump(req, c);
}

/* ---- watch (state) and note (oneway) ---- */

struct ex_watch {
	herd_request *req;
	json_int_t left, updates;
	struct ex_watch *next;
};

static void
watch_remove(struct ex_worker *w, struct ex_watch *x)
{
	struct ex_watch **p;

	for (p = &w->watchers; *p; p = &(*p)->next) {
		if (*p == x) {
			*p = x->next;
			break;
		}
	}
	herd_request_unref(x->req);
	free(x);
}

static void
watch_cancel(herd_request *req, void *userdata)
{
	wa_cancelled(req);
	watch_remove(ex_worker(req), userdata);
}

static void
ex_watch(herd_request *req, json_t *arg)
{
	struct ex_worker *w = ex_begin(req);
	json_int_t updates;
	struct ex_watch *x;
	json_t *notes;

	if (wa_unpack(req, arg, "{s:I}", "updates", &updates) < 0)
		return;
	if (updates < 0) {
		herd_request_fail(req, "updates must not be negative");
		return;
	}
	notes = json_deep_copy(w->notes);
	/* The first item of a fresh stream; a full connection (not taken: ours) drops it. */
	if (herd_request_write(req, notes) == -EAGAIN)
		json_decref(notes);
	if (updates == 0) {
		herd_request_end(req, json_pack("{s:I}", "updates", updates));
		return;
	}
	x = wa_calloc(req, sizeof(*x));
	if (!x)
		return;
	x->req = herd_request_ref(req);
	x->left = x->updates = updates;
	x->next = w->watchers;
	w->watchers = x;
	herd_request_on_cancel(req, watch_cancel, x);
}

static void
ex_note(herd_request *req, json_t *arg)
{
	struct ex_worker *w = ex_begin(req);
	struct ex_watch *x, *next;
	const char *text;
	json_error_t jerr;

	/* A oneway call cannot answer; a bad argument is only logged. */
	if (json_unpack_ex(arg, &jerr, JSON_STRICT, "{s:s}", "text", &text) < 0) {
		herd_request_fail(req, "%s", jerr.text);
		return;
	}
	json_array_append_new(w->notes, json_string(text));
	for (x = w->watchers; x; x = next) {
		json_t *item = json_string(text);
		int r = herd_request_write(x->req, item);

		next = x->next;
		if (r == -EAGAIN)
			json_decref(item); /* not taken: ours to drop */
		if (r < 0)
			herd_log(HERD_LOG_WARNING, "watch: an update was not sent");
		if (--x->left == 0) {
			herd_request_end(x->req, json_pack("{s:I}", "updates", x->updates));
			watch_remove(w, x);
		}
	}
}

static void
ex_notes(herd_request *req, json_t *arg)
{
	herd_request_reply(req, json_deep_copy(ex_begin(req)->notes));
}

/* sleep's reply is {"slept": ms} here; herd-testworker's, {"slept_ms": ms}. */
static void
ex_sleep(herd_request *req, json_t *arg)
{
	wa_sleep(req, arg, "slept");
}

static void
ex_log(herd_request *req, json_t *arg)
{
	const char *message;
	int level = HERD_LOG_INFO;

	ex_begin(req);
	if (wa_unpack(req, arg, "{s:s, s?:i}", "message", &message, "level", &level) < 0)
		return;
	if (!herd_log_level_name(level)) {
		herd_request_fail(req, "unknown log level %d", level);
		return;
	}
	herd_log(level, "%s", message);
	herd_request_reply(req, json_object());
}

static void
ex_stats(herd_request *req, json_t *arg)
{
	struct ex_worker *w = ex_begin(req);
	struct wa_conn *c = herd_request_conn_state(req);

	int fd3 = fcntl(3, F_GETFD);

	herd_request_reply(req,
	    json_pack("{s:I, s:I, s:O, s:O, s:b, s:b}", "cancelled", (json_int_t)w->wa.cancelled,
	        "conn_calls", (json_int_t)c->calls, "conn_init", c->init, "worker_init", w->wa.init,
	        "env_channel_fd", getenv("HERD_CHANNEL_FD") != NULL, "fd3_cloexec",
	        fd3 >= 0 && (fd3 & FD_CLOEXEC)));
}

/* ---- worker_fail: a failure after the function returned ---- */

static void
worker_fail_later(int revents, void *arg)
{
	herd_worker_fail("%s", (const char *)arg);
}

static void
ex_worker_fail(herd_request *req, json_t *arg)
{
	const char *message;
	char *copy;

	ex_begin(req);
	if (wa_unpack(req, arg, "{s:s}", "message", &message) < 0)
		return;
	copy = strdup(message);
	if (!copy) {
		herd_request_fail(req, "out of memory");
		return;
	}
	herd_request_reply(req, json_object());
	ev_once(herd_request_loop(req), -1, 0, 0.0, worker_fail_later, copy);
}

/* ---- states ---- */

static int
ex_init_worker(json_t *arg, void **ret_state, char **reterr_message)
{
	struct ex_worker *w;
	int r = wa_state_new(arg, "fail_init", sizeof(*w), ret_state, reterr_message);

	if (r < 0)
		return r;
	w = *ret_state;
	w->notes = json_array();
	if (!w->notes) {
		wa_state_free(w);
		return -ENOMEM;
	}
	return 0;
}

static void
ex_free_worker(void *state)
{
	struct ex_worker *w = state;

	json_decref(w->notes);
	wa_state_free(w);
}

/* One row per function, like every worker's table (herd-testworker's, the built-ins): data. */
static const struct herd_function ex_functions[] = {
	{ "sum", HERD_KIND_CALL, ex_sum },
	{ "product", HERD_KIND_CALL, ex_product },
	{ "fail", HERD_KIND_CALL, wa_fail },
	{ "echo", HERD_KIND_CALL, wa_echo },
	{ "count", HERD_KIND_PIPE, ex_count },
	{ "sum_stream", HERD_KIND_SINK, wa_sum_items },
	{ "watch", HERD_KIND_STATE, ex_watch },
	{ "note", HERD_KIND_ONEWAY, ex_note },
	{ "notes", HERD_KIND_CALL, ex_notes },
	{ "sleep", HERD_KIND_CALL, ex_sleep },
	{ "log", HERD_KIND_CALL, ex_log },
	{ "stats", HERD_KIND_CALL, ex_stats },
	{ "worker_fail", HERD_KIND_CALL, ex_worker_fail },
	{ NULL, 0, NULL },
};

const struct herd_worker_type example_worker_type = {
	.name = "example",
	.functions = ex_functions,
	.init_worker = ex_init_worker,
	.init_conn = wa_init_conn,
	.free_worker = ex_free_worker,
	.free_conn = wa_free_conn,
};
