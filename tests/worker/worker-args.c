/* SPDX-License-Identifier: MIT */
/* Argument unpacking, states and the functions shared by the test workers. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <herd/herd-ev.h>
#include <herd/protocol.h>

#include "worker-args.h"

int
wa_unpack(herd_request *req, json_t *arg, const char *fmt, ...)
{
	json_error_t err;
	json_t *empty = NULL;
	va_list ap;
	int r;

	if (json_is_null(arg))
		arg = empty = json_object();
	va_start(ap, fmt);
	r = json_vunpack_ex(arg, &err, JSON_STRICT, fmt, ap);
	va_end(ap);
	json_decref(empty);
	if (r < 0) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL, "%s", err.text);
		return -EINVAL;
	}
	return 0;
}

struct wa_worker *
wa_begin(herd_request *req)
{
	struct wa_worker *w = herd_request_worker_state(req);
	struct wa_conn *c = herd_request_conn_state(req);

	if (w)
		w->served++;
	if (c)
		c->calls++;
	return w;
}

void
wa_cancelled(herd_request *req)
{
	struct wa_worker *w = herd_request_worker_state(req);

	w->cancelled++;
	herd_log(HERD_LOG_DEBUG, "%s: cancelled", herd_request_function(req));
}

int
wa_state_new(
    json_t *arg, const char *fail_key, size_t size, void **ret_state, char **reterr_message)
{
	const char *fail = json_string_value(json_object_get(arg, fail_key));
	json_t **state;

	if (fail)
		return herd_init_fail(reterr_message, "%s", fail);
	state = calloc(1, size);
	if (!state)
		return -ENOMEM;
	*state = json_incref(arg);
	*ret_state = state;
	return 0;
}

void *
wa_calloc(herd_request *req, size_t size)
{
	void *p = calloc(1, size);

	if (!p)
		herd_request_fail(req, "out of memory");
	return p;
}

void
wa_state_free(void *state)
{
	if (state) {
		json_decref(*(json_t **)state);
		free(state);
	}
}

int
wa_init_conn(void *worker_state, json_t *arg, void **ret_state, char **reterr_message)
{
	(void)worker_state;
	return wa_state_new(arg, "fail_conn", sizeof(struct wa_conn), ret_state, reterr_message);
}

void
wa_free_conn(void *worker_state, void *conn_state)
{
	(void)worker_state;
	wa_state_free(conn_state);
}

/* A crash on purpose: sig's default action, no core file. */
void
wa_die_by(int sig)
{
	struct rlimit no_core = { 0, 0 };
	sigset_t set;

	setrlimit(RLIMIT_CORE, &no_core);
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
}

void
wa_echo(herd_request *req, json_t *arg)
{
	wa_begin(req);
	herd_request_reply(req, json_incref(arg));
}

void
wa_fail(herd_request *req, json_t *arg)
{
	const char *message = "failed on purpose";

	wa_begin(req);
	if (wa_unpack(req, arg, "{s?s}", "message", &message) < 0)
		return;
	herd_request_fail(req, "%s", message);
}

/* ---- the sink: a running total and the count of items seen ---- */

struct wa_sum {
	json_int_t total;
	long items;
};

static void
sum_item(herd_request *req, json_t *item, void *userdata)
{
	struct wa_sum *s = userdata;
	const void *data;
	size_t len;

	/* A bytes value counts its length: a client-to-server stream of payloads. */
	if (herd_bytes_get(item, &data, &len) == 0) {
		s->total += (json_int_t)len;
		s->items++;
		return;
	}
	if (!json_is_integer(item)) {
		/* Finished: neither on_end nor on_cancel will run, so free here. */
		herd_request_fail(req, "item %ld is not an integer", s->items);
		free(s);
		return;
	}
	s->total += json_integer_value(item);
	s->items++;
}

static void
sum_end(herd_request *req, void *userdata)
{
	struct wa_sum *s = userdata;

	herd_request_reply(req, json_integer(s->total));
	free(s);
}

/* Runs when the caller cancels or goes away: on_end never will. */
static void
sum_cancel(herd_request *req, void *userdata)
{
	wa_cancelled(req);
	free(userdata);
}

void
wa_sum_items(herd_request *req, json_t *arg)
{
	struct wa_sum *s;

	wa_begin(req);
	if (wa_unpack(req, arg, "{}") < 0)
		return;
	s = wa_calloc(req, sizeof(*s));
	if (!s)
		return;
	herd_request_on_item(req, sum_item, s);
	herd_request_on_cancel(req, sum_cancel, s);
	herd_request_on_end(req, sum_end, s);
}

/* ---- sleep: an asynchronous reply from a timer ---- */

struct wa_sleep {
	ev_timer timer;
	struct ev_loop *loop;
	herd_request *req; /* a reference */
	const char *key; /* static */
	json_int_t ms;
};

static void
sleep_free(struct wa_sleep *s)
{
	ev_timer_stop(s->loop, &s->timer);
	herd_request_unref(s->req);
	free(s);
}

static void
sleep_fired(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct wa_sleep *s = t->data;

	herd_request_reply(s->req, json_pack("{s:I}", s->key, s->ms));
	sleep_free(s);
}

static void
sleep_cancel(herd_request *req, void *userdata)
{
	wa_cancelled(req);
	sleep_free(userdata);
}

void
wa_sleep(herd_request *req, json_t *arg, const char *key)
{
	struct wa_sleep *s;
	json_int_t ms;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:I}", "ms", &ms) < 0)
		return;
	if (ms < 0) {
		herd_request_fail(req, "ms must not be negative");
		return;
	}
	s = wa_calloc(req, sizeof(*s));
	if (!s)
		return;
	s->loop = herd_request_loop(req);
	s->req = herd_request_ref(req);
	s->key = key;
	s->ms = ms;
	ev_timer_init(&s->timer, sleep_fired, (double)ms / 1000.0, 0.);
	s->timer.data = s;
	ev_timer_start(s->loop, &s->timer);
	herd_request_on_cancel(req, sleep_cancel, s);
}
