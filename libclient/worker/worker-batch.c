/* SPDX-License-Identifier: MIT */
/*
 * herd.batch (PROTOCOL.md 6.6): one message that runs a call function over an
 * array of arguments, one after the other, and answers with every item's
 * outcome in one reply; with an accumulator, successful items are folded as
 * herd.fold folds them. A pool sends its tasks this way when its chunksize is
 * above 1, so the cost of a message (framing, parsing the envelope, a system
 * call or two, a wake-up) is paid once per batch, not once per task.
 *
 * With "bare": true an item is the function's argument as it is, a number or
 * a string as well as an object or an array: tiny tasks then travel without
 * the array or object that would wrap them as params, on both sides.
 *
 * Each item runs as an inner request whose answer comes to a hook (as
 * herd.fold's) instead of the wire: no reply message is built per item. Items
 * run in order, one at a time, so a handler that answers later (a timer, an
 * offload) holds the batch until it answers; a handler that answers at once
 * lets the loop go on without recursion (batch_run is a trampoline). Every
 * BATCH_SLICE_USEC the batch gives the loop a turn, or a batch longer than
 * the heartbeat timeout would look like a hung worker and be killed.
 *
 * Exactly once, worker side. The batch's reply is sent once, after its last
 * item; a folded item is counted in the reply's "n" (the accumulator's count
 * after the batch), so the master, reading the reply on the same ordered
 * connection, knows every fold the batch added. A batch cancelled midway
 * (herd.cancel, the connection closing) stops after the item running: the
 * items it already folded stay in the accumulator, whose connection's master
 * has given up on it (it discards or never takes it).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/worker-internal.h"

/* Items a batch may carry (pool.h's HERD_POOL_MAX_CHUNKSIZE). */
#define BATCH_MAX_ITEMS 65536
/* How long a batch runs items before the loop gets a turn. */
#define BATCH_SLICE_USEC 5000u

struct batch {
	herd_request *outer; /* the herd.batch request */
	herd_request *inner; /* the item running, until it answers */
	herd_request *spare; /* the last item's request, renewed for the next one */
	const struct herd_function *fn;
	json_t *args; /* borrowed: the outer request holds its params */
	size_t next, n;
	json_t *results; /* without an accumulator: one value per item (null when it failed) */
	json_t *errors; /* [{"index":I,"error":E}...], NULL while none failed */
	herd_combine_fn combine; /* with an accumulator */
	const char *key; /* borrowed from the params, as args */
	json_int_t folds; /* the accumulator's count after the last fold */
	bool bare; /* items are arguments as they are, any JSON value ("bare": true) */
	bool running; /* batch_run is on the stack: it goes on by itself */
	bool answered; /* the item dispatched last has answered */
	bool cancelled;
	ev_timer resume; /* batch_run again from the loop */
	struct batch *q_next;
};

/*
 * The clock a batch reads after every item: the coarse monotonic clock, whose
 * tick (1 to 4 ms) a 5 ms slice can afford, costs a fraction of the precise
 * one, which was a tenth of a tiny item's time.
 */
static uint64_t
slice_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * Every batch not yet ended, in arrival order: a connection's batches run one
 * after the other, as their items do, so a batch's time is its own items'
 * (what a pool's scaled timeout assumes) even while one gives the loop a turn.
 */
static struct batch *queue;

/*
 * A results array emptied for the next batch: it keeps its room, where a new
 * one would grow to the batch's size by reallocations again.
 */
static json_t *spare_results;

static json_t *
results_new(void)
{
	json_t *a = spare_results;

	spare_results = NULL;
	return a ? a : json_array();
}

static void
batch_free(struct batch *b)
{
	herd_request_unref(b->outer);
	herd_request_unref(b->spare);
	if (b->results && b->results->refcount == 1 && !spare_results) {
		json_array_clear(b->results);
		spare_results = b->results;
	} else {
		json_decref(b->results);
	}
	json_decref(b->errors);
	free(b);
}

/* Every item answered: the one reply of the batch. */
static void
batch_finish(struct batch *b)
{
	json_t *res;

	if (b->key)
		res = json_pack("{s:I}", "n", b->folds);
	else
		res = json_pack("{s:O}", "results", b->results);
	if (res && b->errors)
		json_object_set(res, "errors", b->errors);
	herd_request_reply(b->outer, res);
}

/*
 * Records the outcome of the item at b->next (result and error stolen; inner,
 * its request, NULL for an item refused before it ran): its result, fold or error.
 */
static void
batch_answered_item(struct batch *b, herd_request *inner, json_t *result, json_t *error)
{
	size_t index = b->next;

	b->inner = NULL;
	b->next++;
	b->answered = true;
	if (error) {
		if (!b->errors)
			b->errors = json_array();
		json_array_append_new(
		    b->errors, json_pack("{s:I, s:O}", "index", (json_int_t)index, "error", error));
		if (!b->key)
			json_array_append_new(b->results, json_null());
	} else if (b->key) {
		json_int_t n = herd__fold_into(b->outer, inner, b->combine, result);

		/* 0: the combine failed and the batch was answered with it. */
		if (n == 0)
			b->cancelled = true;
		b->folds = n;
	} else {
		json_array_append(b->results, result);
	}
	json_decref(result);
	json_decref(error);
}

static void batch_run(struct batch *b);

/* An item's hook: records its answer; one that came later resumes the batch from here. */
static void
batch_answered(herd_request *inner, json_t *result, json_t *error)
{
	struct batch *b = inner->hook_data;

	inner->hook_data = NULL;
	batch_answered_item(b, inner, result, error);
	if (!b->running)
		batch_run(b);
}

/* True when b is the first batch of its connection in the queue: its turn. */
static bool
batch_turn(const struct batch *b)
{
	for (const struct batch *q = queue; q; q = q->q_next)
		if (q->outer->conn == b->outer->conn)
			return q == b;
	return false;
}

/* The batch left (answered or cancelled): if it was running, the next one runs from the loop. */
static void
batch_end(struct batch *b)
{
	struct ev_loop *loop = b->outer->conn->srv->loop;
	bool was_turn = batch_turn(b);

	for (struct batch **pp = &queue; *pp; pp = &(*pp)->q_next) {
		if (*pp == b) {
			*pp = b->q_next;
			break;
		}
	}
	for (struct batch *q = queue; q && was_turn; q = q->q_next) {
		if (q->outer->conn == b->outer->conn) {
			ev_timer_start(loop, &q->resume);
			break;
		}
	}
	ev_timer_stop(loop, &b->resume);
	batch_free(b);
}

/* The loop's turn is over (a slice, or the batch before it ended): go on. */
static void
batch_resume(struct ev_loop *loop, ev_timer *w, int revents)
{
	batch_run(w->data);
}

/* Runs one item; returns false when it answers later (its hook resumes the batch). */
static bool
batch_item(struct batch *b)
{
	json_t *item = json_array_get(b->args, b->next);
	herd_request *inner;

	b->answered = false;
	if (!b->bare && !json_is_object(item) && !json_is_array(item) && !json_is_null(item)) {
		/* As for a call: params are an object, an array or absent. */
		json_t *e = proto_error(NULL, HERD_E_INVALID_PARAMS,
		    "herd.batch: an item must be an object, an array or null", NULL);

		batch_answered_item(b, NULL, NULL, json_incref(json_object_get(e, "error")));
		json_decref(e);
		return true;
	}
	inner = b->spare;
	b->spare = NULL;
	if (!inner || !herd__request_renew(inner, item)) {
		herd_request_unref(inner);
		inner = herd__request_new(b->outer->conn, b->fn, NULL, item);
	}
	if (!inner) {
		herd_request_fail(b->outer, "out of memory");
		b->cancelled = true;
		return true;
	}
	b->inner = inner;
	inner->acc_key = b->key;
	inner->answer_hook = batch_answered;
	inner->hook_data = b;
	herd__request_dispatch(inner);
	b->spare = inner; /* the batch's reference, kept for the next item */
	return b->answered;
}

/*
 * Runs items until one answers later, the slice is used up (the loop gets
 * its turn: heartbeats, herd.cancel, other connections), or the last one
 * answered (then replies and lets the next batch of the connection run).
 */
static void
batch_run(struct batch *b)
{
	uint64_t slice_end = slice_now_usec() + BATCH_SLICE_USEC;

	if (b->inner || !batch_turn(b))
		return; /* its item's hook, or the end of the batch before it, resumes it */
	b->running = true;
	while (!b->cancelled && b->next < b->n) {
		if (!batch_item(b)) {
			b->running = false;
			return;
		}
		if (b->next < b->n && slice_now_usec() >= slice_end) {
			b->running = false;
			ev_timer_start(b->outer->conn->srv->loop, &b->resume);
			return;
		}
	}
	b->running = false;
	if (!b->cancelled)
		batch_finish(b);
	batch_end(b);
}

/* The caller gave up on the batch (or its connection closed): stop the item running. */
static void
batch_cancelled(herd_request *outer, void *userdata)
{
	struct batch *b = userdata;
	herd_request *inner = b->inner;

	b->cancelled = true;
	b->inner = NULL;
	if (inner)
		herd__request_cancel_inner(inner);
	/* On the stack, batch_run ends it when the item returns; else nobody else will. */
	if (!b->running)
		batch_end(b);
}

/* Checks the params; returns the batch to run, or NULL after answering req. */
static struct batch *
batch_new(herd_request *req, json_t *arg)
{
	struct herd_server *srv = req->conn->srv;
	const char *function, *key = NULL, *combine = NULL;
	json_t *args;
	struct proto_error err;
	struct batch *b;
	int bare = 0;

	if (proto_unpack(arg, &err, "{s:s, s:o, s?s, s?s, s?b}", "function", &function, "args",
	        &args, "acc", &key, "combine", &combine, "bare", &bare) < 0) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL, "%s", err.text);
		return NULL;
	}
	if (!json_is_array(args) || !key != !combine) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL,
		    "herd.batch: args must be an array, and acc and combine go together");
		return NULL;
	}
	if (json_array_size(args) > BATCH_MAX_ITEMS) {
		herd_request_error(req, HERD_E_LIMIT_EXCEEDED, NULL,
		    "herd.batch: %zu items, at most %d", json_array_size(args), BATCH_MAX_ITEMS);
		return NULL;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		herd_request_fail(req, "out of memory");
		return NULL;
	}
	b->fn = herd__function_find(srv, function);
	if (!b->fn || b->fn->kind != HERD_KIND_CALL) {
		herd_request_error(req, HERD_E_METHOD_NOT_FOUND, NULL,
		    "herd.batch: no call function %s", function);
		free(b);
		return NULL;
	}
	b->combine = combine ? herd__combiner_find(srv->type, combine) : NULL;
	if (combine && !b->combine) {
		herd_request_error(req, HERD_E_METHOD_NOT_FOUND, NULL,
		    "herd.batch: this worker declares no combine %s", combine);
		free(b);
		return NULL;
	}
	b->results = key ? NULL : results_new();
	if (!key && !b->results) {
		herd_request_fail(req, "out of memory");
		free(b);
		return NULL;
	}
	b->args = args;
	b->bare = bare;
	b->n = json_array_size(args);
	b->key = key;
	b->outer = herd_request_ref(req);
	ev_timer_init(&b->resume, batch_resume, 0., 0.);
	b->resume.data = b;
	return b;
}

void
herd__builtin_batch(herd_request *req, json_t *arg)
{
	struct batch *b = batch_new(req, arg);

	struct batch **tail = &queue;

	if (!b)
		return;
	while (*tail)
		tail = &(*tail)->q_next;
	*tail = b;
	herd_request_on_cancel(req, batch_cancelled, b);
	batch_run(b);
}
