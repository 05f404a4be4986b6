/* SPDX-License-Identifier: MIT */
/*
 * herd.batch (PROTOCOL.md 6.6): one message that runs a call function over an
 * array of arguments, one after the other, and answers with every item's
 * outcome in one reply; with an accumulator, successful items are folded as
 * herd.fold folds them. A pool sends its tasks this way when its chunksize is
 * above 1, so the cost of a message (framing, parsing the envelope, a system
 * call or two, a wake-up) is paid once per batch, not once per task.
 *
 * Each item runs as an inner request whose answer comes to a hook (as
 * herd.fold's) instead of the wire: no reply message is built per item. Items
 * run in order, one at a time, so a handler that answers later (a timer, an
 * offload) holds the batch until it answers; a handler that answers at once
 * lets the loop go on without recursion (batch_run is a trampoline).
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

#include "worker/worker-internal.h"

/* Items a batch may carry (pool.h's HERD_POOL_MAX_CHUNKSIZE). */
#define BATCH_MAX_ITEMS 65536

struct batch {
	herd_request *outer; /* the herd.batch request */
	herd_request *inner; /* the item running, until it answers */
	const struct herd_function *fn;
	json_t *args; /* borrowed: the outer request holds its params */
	size_t next, n;
	json_t *results; /* without an accumulator: one value per item (null when it failed) */
	json_t *errors; /* [{"index":I,"error":E}...], NULL while none failed */
	herd_combine_fn combine; /* with an accumulator */
	const char *key; /* borrowed from the params, as args */
	json_int_t folds; /* the accumulator's count after the last fold */
	bool running; /* batch_run is on the stack: it goes on by itself */
	bool answered; /* the item dispatched last has answered */
	bool cancelled;
};

static void
batch_free(struct batch *b)
{
	herd_request_unref(b->outer);
	json_decref(b->results);
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

/* Records the outcome of the item at b->next (result and error stolen): its result, fold or error. */
static void
batch_answered_item(struct batch *b, json_t *result, json_t *error)
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
		json_int_t n = herd__fold_into(b->outer, b->key, b->combine, result);

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
	batch_answered_item(b, result, error);
	if (!b->running)
		batch_run(b);
}

/* Runs items until one answers later, or the last answered (then replies). */
static void
batch_run(struct batch *b)
{
	b->running = true;
	while (!b->cancelled && b->next < b->n) {
		json_t *item = json_array_get(b->args, b->next);
		herd_request *inner;

		if (!json_is_object(item) && !json_is_array(item) && !json_is_null(item)) {
			/* As for a call: params are an object, an array or absent. */
			json_t *e = proto_error(NULL, HERD_E_INVALID_PARAMS,
			    "herd.batch: an item must be an object, an array or null", NULL);

			b->answered = false;
			batch_answered_item(b, NULL, json_incref(json_object_get(e, "error")));
			json_decref(e);
			continue;
		}
		inner = herd__request_new(b->outer->conn, b->fn, NULL, item);
		if (!inner) {
			herd_request_fail(b->outer, "out of memory");
			b->cancelled = true;
			break;
		}
		b->inner = inner;
		b->answered = false;
		inner->answer_hook = batch_answered;
		inner->hook_data = b;
		herd__request_dispatch(inner);
		herd_request_unref(inner);
		if (!b->answered) {
			/* It answers later: batch_answered's caller resumes the batch. */
			b->running = false;
			return;
		}
	}
	b->running = false;
	if (!b->cancelled)
		batch_finish(b);
	batch_free(b);
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
	/* On the stack, batch_run frees it when the item returns; else nobody else will. */
	if (!b->running)
		batch_free(b);
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

	if (proto_unpack(arg, &err, "{s:s, s:o, s?s, s?s}", "function", &function, "args", &args,
	        "acc", &key, "combine", &combine) < 0) {
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
	b->results = key ? NULL : json_array();
	if (!key && !b->results) {
		herd_request_fail(req, "out of memory");
		free(b);
		return NULL;
	}
	b->args = args;
	b->n = json_array_size(args);
	b->key = key;
	b->outer = herd_request_ref(req);
	return b;
}

void
herd__builtin_batch(herd_request *req, json_t *arg)
{
	struct batch *b = batch_new(req, arg);

	if (!b)
		return;
	herd_request_on_cancel(req, batch_cancelled, b);
	batch_run(b);
}
