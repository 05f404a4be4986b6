/* SPDX-License-Identifier: MIT */
/*
 * Worker-side combining for pools (PROTOCOL.md 6.6): herd.fold runs one of the
 * type's call functions and folds its result into a named accumulator with a
 * combine function the type declares; herd.take hands an accumulator over and
 * forgets it. A map-reduce master then merges one partial per worker instead
 * of every result. A function may also add its result to the accumulator
 * itself (herd_request_acc()): its fold then counts without the combine.
 *
 * Exactly once. The master (libclient/pool) names one accumulator per job and
 * per connection to a worker, so an accumulator lives only as long as the
 * connection that fills it is useful. A fold's reply is sent at the moment its
 * result is combined, and herd.take's reply at the moment the accumulator is
 * handed over; both travel on the same ordered connection, so when the master
 * reads take's reply it has already read the reply of every fold that take
 * includes, and of none it does not ("n" lets it check). The master therefore
 * counts a task once its fold was acknowledged and a take covering it
 * returned: a worker (or connection) lost before that loses exactly the
 * acknowledged-but-untaken folds, which the master dispatches again; a live
 * worker's acknowledged folds are never redone. An accumulator whose
 * connection died is never taken, and a combine that fails poisons its
 * accumulator (take then fails) rather than silently dropping folds.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker-internal.h"

/* Accumulators a process keeps at most: each open pool job holds one. */
#define FOLD_MAX_ACCS 4096

struct fold_acc {
	struct herd_server *srv;
	char *key;
	json_t *value; /* NULL until the first fold */
	json_int_t n; /* folds combined into value */
	bool broken; /* a combine failed: the folds in it are gone */
	struct fold_acc *next;
};

/* Accumulators of every server of this (loop) thread's process. */
static struct fold_acc *accs;
static unsigned n_accs;

static struct fold_acc *
acc_find(struct herd_server *srv, const char *key)
{
	for (struct fold_acc *a = accs; a; a = a->next)
		if (a->srv == srv && strcmp(a->key, key) == 0)
			return a;
	return NULL;
}

static struct fold_acc *
acc_get(struct herd_server *srv, const char *key)
{
	struct fold_acc *a = acc_find(srv, key);

	if (a || n_accs >= FOLD_MAX_ACCS)
		return a;
	a = calloc(1, sizeof(*a));
	if (!a || !(a->key = strdup(key))) {
		free(a);
		return NULL;
	}
	a->srv = srv;
	a->next = accs;
	accs = a;
	n_accs++;
	return a;
}

static void
acc_remove(struct fold_acc *a)
{
	for (struct fold_acc **p = &accs; *p; p = &(*p)->next) {
		if (*p == a) {
			*p = a->next;
			break;
		}
	}
	n_accs--;
	json_decref(a->value);
	free(a->key);
	free(a);
}

/* The combine type declares under name, or NULL. */
herd_combine_fn
herd__combiner_find(const struct herd_worker_type *type, const char *name)
{
	const struct herd_combiner *c = type->combiners;

	for (size_t i = 0; c && (type->n_combiners ? i < type->n_combiners : c[i].name != NULL);
	     i++)
		if (strcmp(c[i].name, name) == 0)
			return c[i].combine;
	return NULL;
}

struct fold {
	herd_request *outer; /* the herd.fold request */
	herd_request *inner; /* the user function's request, until it answered */
	herd_combine_fn combine;
	char *key;
};

static void
fold_free(struct fold *f)
{
	herd_request_unref(f->outer);
	free(f->key);
	free(f);
}

/*
 * Folds result (borrowed) of inner into its accumulator of srv with combine,
 * unless the function added it there itself. Returns the fold count, -ENOSPC
 * (no room for the accumulator) or -EPIPE (a combine failed: it is lost).
 */
json_int_t
herd__acc_fold(
    struct herd_server *srv, herd_request *inner, herd_combine_fn combine, json_t *result)
{
	struct fold_acc *a = acc_get(srv, inner->acc_key);

	if (!a)
		return -ENOSPC;
	if (!a->broken && !inner->acc_in_place) {
		a->value =
		    a->value ? combine(a->value, result, srv->worker_state) : json_incref(result);
		a->broken = !a->value;
	}
	return a->broken ? -EPIPE : ++a->n;
}

/*
 * herd__acc_fold() answering req with its error. Returns the fold count, or 0
 * after answering req with the error (no room, or the combine failed).
 */
json_int_t
herd__fold_into(herd_request *req, herd_request *inner, herd_combine_fn combine, json_t *result)
{
	json_int_t n = herd__acc_fold(req->conn->srv, inner, combine, result);

	if (n == -ENOSPC)
		herd_request_error(
		    req, HERD_E_LIMIT_EXCEEDED, NULL, "no room for accumulator %s", inner->acc_key);
	else if (n == -EPIPE)
		herd_request_error(req, HERD_E_FUNCTION_FAILED,
		    json_pack("{s:s}", "name", "combine_failed"),
		    "the combine function failed: accumulator %s is lost", inner->acc_key);
	return n < 0 ? 0 : n;
}

/* Cancels an inner request whose outer one went away: its hook hears nothing more. */
void
herd__request_cancel_inner(herd_request *inner)
{
	inner->answer_hook = NULL;
	inner->hook_data = NULL;
	herd__request_cancel(inner, 0);
}

/* Answers req with an inner request's error object (borrowed) as it came. */
void
herd__request_pass_error(herd_request *req, json_t *error)
{
	json_t *data = json_object_get(error, "data");
	int code = (int)json_integer_value(json_object_get(error, "code"));

	herd_request_error(req, code ? code : HERD_E_INTERNAL_ERROR,
	    json_is_object(data) ? json_deep_copy(data) : NULL, "%s",
	    json_string_value(json_object_get(error, "message")) ?: "error");
}

/* Combines the inner request's result, or passes its error on to the caller. */
static void
fold_answered(herd_request *inner, json_t *result, json_t *error)
{
	struct fold *f = inner->hook_data;
	json_int_t n;

	inner->hook_data = NULL;
	f->inner = NULL;
	if (error) {
		herd__request_pass_error(f->outer, error);
	} else {
		n = herd__fold_into(f->outer, inner, f->combine, result);
		if (n > 0)
			herd_request_reply(f->outer, json_pack("{s:I}", "n", n));
	}
	json_decref(result);
	json_decref(error);
	fold_free(f);
}

/* The caller gave up on the fold (or its connection closed): stop the function too. */
static void
fold_cancelled(herd_request *outer, void *userdata)
{
	struct fold *f = userdata;

	herd__request_cancel_inner(f->inner);
	fold_free(f);
}

void
herd__builtin_fold(herd_request *req, json_t *arg)
{
	struct herd_server *srv = req->conn->srv;
	const char *function, *key, *combine;
	const struct herd_function *fn;
	json_t *args = NULL;
	struct proto_error err;
	struct fold *f;
	herd_request *inner;

	if (proto_unpack(arg, &err, "{s:s, s?o, s:s, s:s}", "function", &function, "args", &args,
	        "acc", &key, "combine", &combine) < 0) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL, "%s", err.text);
		return;
	}
	fn = herd__function_find(srv, function);
	if (!fn || fn->kind != HERD_KIND_CALL) {
		herd_request_error(
		    req, HERD_E_METHOD_NOT_FOUND, NULL, "herd.fold: no call function %s", function);
		return;
	}
	f = calloc(1, sizeof(*f));
	if (!f || !(f->key = strdup(key))) {
		free(f);
		herd_request_fail(req, "out of memory");
		return;
	}
	f->combine = herd__combiner_find(srv->type, combine);
	if (!f->combine) {
		herd_request_error(req, HERD_E_METHOD_NOT_FOUND, NULL,
		    "herd.fold: this worker declares no combine %s", combine);
		free(f->key);
		free(f);
		return;
	}
	inner = herd__request_new(req->conn, fn, req->id, args);
	if (!inner) {
		herd_request_fail(req, "out of memory");
		free(f->key);
		free(f);
		return;
	}
	f->outer = herd_request_ref(req);
	f->inner = inner;
	inner->acc_key = f->key;
	inner->answer_hook = fold_answered;
	inner->hook_data = f;
	herd_request_on_cancel(req, fold_cancelled, f);
	herd__request_dispatch(inner);
	herd_request_unref(inner);
}

HERD_EXPORT json_t *
herd_request_acc(herd_request *req, json_t *empty)
{
	struct fold_acc *a;
	json_t **acc = NULL;

	if (req && !req->finished && !req->cancelled) {
		if (!req->acc_key)
			acc = &req->own_acc;
		else if ((a = acc_get(req->conn->srv, req->acc_key)) && !a->broken)
			acc = &a->value; /* otherwise the fold's reply says why */
	}
	if (acc && !*acc)
		*acc = json_incref(empty);
	json_decref(empty);
	if (acc && req->acc_key)
		req->acc_in_place = true; /* from now on its result is what it adds */
	return acc ? *acc : NULL;
}

HERD_EXPORT int
herd_request_reply_acc(herd_request *req)
{
	if (req && !req->acc_key)
		return herd_request_reply(req, json_incref(req->own_acc));
	return herd_request_reply(req, NULL);
}

/*
 * Hands srv's accumulator key over and forgets it: *ret_value its value (new
 * reference; NULL when nothing was folded). Returns its fold count, or -EPIPE
 * when a combine failed and the folds in it are lost.
 */
json_int_t
herd__acc_take(struct herd_server *srv, const char *key, json_t **ret_value)
{
	struct fold_acc *a = acc_find(srv, key);
	json_int_t n = a ? a->n : 0;

	*ret_value = a && !a->broken ? json_incref(a->value) : NULL;
	if (a && a->broken)
		n = -EPIPE;
	if (a)
		acc_remove(a);
	return n;
}

void
herd__builtin_take(herd_request *req, json_t *arg)
{
	const char *key;
	struct proto_error err;
	json_int_t n;
	json_t *value;

	if (proto_unpack(arg, &err, "{s:s}", "acc", &key) < 0) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL, "%s", err.text);
		return;
	}
	n = herd__acc_take(req->conn->srv, key, &value);
	if (n < 0) {
		herd_request_error(req, HERD_E_FUNCTION_FAILED,
		    json_pack("{s:s}", "name", "combine_failed"),
		    "accumulator %s was lost to a failed combine", key);
		return;
	}
	herd_request_reply(req,
	    value ? json_pack("{s:I, s:o}", "n", n, "value", value)
	          : json_pack("{s:I}", "n", (json_int_t)0));
}
