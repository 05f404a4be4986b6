/* SPDX-License-Identifier: MIT */
/*
 * Requests on the serving side: the handle handed to worker functions, the
 * per-connection table of pending requests, and the rules that make every
 * request end exactly once (reply, failure, or cancel) whatever the handler
 * and the caller do.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker-internal.h"

/* A name table like worker-log.c's levels: data, one row per kind, looked up as proto's. */
static const char *const kind_names[] = {
	[HERD_KIND_CALL] = "call",
	[HERD_KIND_ONEWAY] = "oneway",
	[HERD_KIND_PIPE] = "pipe",
	[HERD_KIND_SINK] = "sink",
	[HERD_KIND_STATE] = "state",
};

HERD_EXPORT const char *
herd_kind_name(enum herd_kind kind)
{
	return proto_name_at(kind_names, PROTO_LEN(kind_names), (unsigned)kind);
}

HERD_EXPORT int
herd_kind_from_name(const char *name)
{
	int kind = proto_name_find(kind_names, PROTO_LEN(kind_names), name);

	return kind < 0 ? -EINVAL : kind;
}

HERD_EXPORT int
herd_init_fail(char **reterr_message, const char *fmt, ...)
{
	va_list ap;

	if (reterr_message) {
		va_start(ap, fmt);
		if (vasprintf(reterr_message, fmt, ap) < 0)
			*reterr_message = NULL;
		va_end(ap);
	}
	return -EINVAL;
}

/* ---- lifetime ---- */

/* A request's first members: one reference, its connection (a reference), function and params. */
static void
request_init(
    struct herd_request *req, struct srv_conn *c, const struct herd_function *fn, json_t *params)
{
	req->n_ref = 1;
	req->conn = c;
	req->fn = fn;
	req->params = params ? json_incref(params) : json_null();
}

/* Drops what a request holds besides its connection: renewed and freed requests alike. */
static void
request_release(struct herd_request *req)
{
	json_decref(req->id);
	json_decref(req->params);
	json_decref(req->own_acc);
	free(req->key);
}

struct herd_request *
herd__request_new(struct srv_conn *c, const struct herd_function *fn, json_t *id, json_t *params)
{
	struct herd_request *req = calloc(1, sizeof(*req));

	if (!req)
		return NULL;
	if (id) {
		req->key = proto_json_dumps(id);
		if (!req->key) {
			free(req);
			return NULL;
		}
		req->id = json_incref(id);
	}
	request_init(req, herd__sconn_ref(c), fn, params);
	return req;
}

bool
herd__request_renew(struct herd_request *req, json_t *params)
{
	struct srv_conn *conn = req->conn;
	const struct herd_function *fn = req->fn;

	if (req->n_ref != 1 || !req->finished || req->id || req->in_table || req->log_subscribed)
		return false;
	request_release(req);
	memset(req, 0, sizeof(*req));
	request_init(req, conn, fn, params); /* the connection's reference carries over */
	return true;
}

static void
request_free(herd_request *req)
{
	request_release(req);
	herd__sconn_unref(req->conn);
	free(req);
}

HERD__DEFINE_REF_UNREF(herd_request, herd_request, request_free)

/* ---- pending table ---- */

static size_t
key_hash(const char *s)
{
	size_t h = 5381;

	while (*s)
		h = h * 33 + (unsigned char)*s++;
	return h;
}

static int
table_grow(struct srv_conn *c)
{
	size_t n = c->n_buckets ? c->n_buckets * 2 : 16;
	struct herd_request **b = calloc(n, sizeof(*b));

	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < c->n_buckets; i++) {
		struct herd_request *r = c->buckets[i], *next;

		for (; r; r = next) {
			size_t h = key_hash(r->key) % n;

			next = r->hash_next;
			r->hash_next = b[h];
			b[h] = r;
		}
	}
	free(c->buckets);
	c->buckets = b;
	c->n_buckets = n;
	return 0;
}

/* Adds req (which must have an id) to the pending table; the table takes a reference. */
int
herd__request_table_add(struct srv_conn *c, struct herd_request *req)
{
	size_t h;

	if (c->n_pending >= c->n_buckets && table_grow(c) < 0)
		return -ENOMEM;
	h = key_hash(req->key) % c->n_buckets;
	req->hash_next = c->buckets[h];
	c->buckets[h] = req;
	req->in_table = true;
	c->n_pending++;
	herd_request_ref(req);
	return 0;
}

struct herd_request *
herd__request_find(struct srv_conn *c, json_t *id)
{
	char *key;
	struct herd_request *r = NULL;

	if (c->n_buckets == 0)
		return NULL;
	key = proto_json_dumps(id);
	if (!key)
		return NULL;
	for (r = c->buckets[key_hash(key) % c->n_buckets]; r; r = r->hash_next)
		if (strcmp(r->key, key) == 0)
			break;
	free(key);
	return r;
}

static void
table_remove(struct herd_request *req)
{
	struct srv_conn *c = req->conn;
	struct herd_request **p;

	if (!req->in_table)
		return;
	for (p = &c->buckets[key_hash(req->key) % c->n_buckets]; *p; p = &(*p)->hash_next) {
		if (*p == req) {
			*p = req->hash_next;
			break;
		}
	}
	req->in_table = false;
	c->n_pending--;
}

static void
drain_remove(struct herd_request *req)
{
	struct herd_request **p;

	if (!req->draining)
		return;
	for (p = &req->conn->drain_head; *p; p = &(*p)->drain_next) {
		if (*p == req) {
			*p = req->drain_next;
			break;
		}
	}
	req->draining = false;
	herd_request_unref(req);
}

/*
 * Marks req finished: no callback runs any more, it leaves the pending table
 * and the table's reference is dropped. The caller holds its own reference.
 */
static void
request_finish(struct herd_request *req)
{
	req->finished = true;
	req->on_drain = NULL;
	req->on_end = NULL;
	req->on_item = NULL;
	drain_remove(req);
	if (req->log_subscribed)
		herd__log_unsubscribe(req);
	if (req->in_table) {
		table_remove(req);
		herd__sconn_request_done(req->conn);
		herd_request_unref(req);
	}
}

/* ---- dispatch ---- */

void
herd__request_dispatch(struct herd_request *req)
{
	unsigned base;
	bool held;

	herd_request_ref(req);
	/* References beyond these, once the handler returns, are the handler's. */
	base = req->n_ref;
	req->conn->srv->served++;
	req->fn->handler(req, req->params);
	held = req->n_ref > base || req->on_end || req->draining;
	if (req->fn->kind != HERD_KIND_ONEWAY && !req->finished && !held) {
		herd_log(HERD_LOG_ERR, "function %s returned without finishing its request",
		    req->fn->name);
		herd_request_error(req, HERD_E_INTERNAL_ERROR, NULL,
		    "function %s returned without finishing its request", req->fn->name);
	}
	if (req->fn->kind == HERD_KIND_ONEWAY)
		req->finished = true;
	herd_request_unref(req);
}

void
herd__request_cancel(struct herd_request *req, int code)
{
	herd_request_cb cb;

	if (req->finished)
		return;
	herd_request_ref(req);
	if (code && req->id)
		herd__sconn_reply(req->conn, req->id, proto_error(req->id, code, NULL, NULL));
	req->cancelled = true;
	cb = req->on_cancel;
	req->on_cancel = NULL;
	request_finish(req);
	if (cb)
		cb(req, req->cancel_data);
	herd_request_unref(req);
}

void
herd__request_cancel_all(struct srv_conn *c, int code)
{
	/* Cancel callbacks may finish other requests: restart the scan each time. */
	for (;;) {
		struct herd_request *req = NULL;

		for (size_t i = 0; i < c->n_buckets && !req; i++)
			req = c->buckets[i];
		if (!req)
			break;
		herd__request_cancel(req, code);
	}
}

void
herd__request_item(struct herd_request *req, json_t *item)
{
	if (req->finished || !req->on_item)
		return;
	herd_request_ref(req);
	req->on_item(req, item, req->item_data);
	herd_request_unref(req);
}

void
herd__request_end_input(struct herd_request *req)
{
	herd_request_cb cb = req->on_end;
	unsigned base;
	bool held;

	if (req->finished)
		return;
	req->on_end = NULL;
	herd_request_ref(req);
	base = req->n_ref;
	if (cb)
		cb(req, req->end_data);
	held = req->n_ref > base || req->draining;
	if (!req->finished && !held)
		herd_request_error(req, HERD_E_INTERNAL_ERROR, NULL,
		    "function %s did not answer at the end of its input", req->fn->name);
	herd_request_unref(req);
}

void
herd__request_drained(struct herd_request *req)
{
	herd_request_cb cb = req->on_drain;

	req->on_drain = NULL;
	if (!req->finished && cb)
		cb(req, req->drain_data);
}

/* ---- accessors ---- */

HERD__DEFINE_GETTER(herd_request_function, const herd_request, const char *, p->fn->name, NULL)
HERD__DEFINE_GETTER(
    herd_request_kind, const herd_request, enum herd_kind, p->fn->kind, HERD_KIND_CALL)
HERD__DEFINE_GETTER(herd_request_params, const herd_request, json_t *, p->params, NULL)
HERD__DEFINE_GETTER(
    herd_request_worker_state, const herd_request, void *, p->conn->srv->worker_state, NULL)
HERD__DEFINE_GETTER(herd_request_conn_state, const herd_request, void *, p->conn->conn_state, NULL)
HERD__DEFINE_GETTER(
    herd_request_loop, const herd_request, struct ev_loop *, p->conn->srv->loop, NULL)

HERD_EXPORT bool
herd_request_is_cancelled(const herd_request *req)
{
	return req && req->cancelled;
}

HERD_EXPORT bool
herd_request_is_finished(const herd_request *req)
{
	return req && req->finished;
}

/* ---- answers ---- */

/* Common checks before answering; returns 0 when req may still answer. */
static int
answer_check(const herd_request *req)
{
	if (!req)
		return -EINVAL;
	if (req->cancelled)
		return -ECANCELED;
	if (req->finished)
		return -EALREADY;
	if (req->fn->kind == HERD_KIND_ONEWAY)
		return -EINVAL;
	return 0;
}

/*
 * Hands an inner request's answer (result or error, stolen) to its hook and
 * finishes it. The caller holds a reference. A result skips the message a
 * reply would build: herd.batch answers many items, and this is its path.
 */
static int
answer_hooked(herd_request *req, json_t *result, json_t *error)
{
	req->answer_hook(req, result, error);
	request_finish(req);
	herd_request_unref(req);
	return 0;
}

/* Finishes req after its answer went out with r, dropping the caller's reference. */
static int
answer_sent(herd_request *req, int r)
{
	request_finish(req);
	herd_request_unref(req);
	return r == -ENOBUFS ? -ECANCELED : r;
}

/*
 * Sends the final message (stolen; NULL when building it failed) and finishes
 * req. The peer answers the id with an error when the message cannot go.
 */
static int
answer(herd_request *req, json_t *msg)
{
	herd_request_ref(req);
	if (req->answer_hook) {
		/* An inner request (herd.fold, herd.batch): the error goes to its hook. */
		json_t *error = json_incref(json_object_get(msg, "error"));

		json_decref(msg);
		return answer_hooked(req, NULL, error ? error : json_null());
	}
	return answer_sent(req, herd__sconn_reply(req->conn, req->id, msg));
}

HERD_EXPORT int
herd_request_reply(herd_request *req, json_t *result)
{
	int r = answer_check(req);

	if (r < 0) {
		json_decref(result);
		return r;
	}
	if (req->answer_hook)
		return answer_hooked(herd_request_ref(req), result ? result : json_null(), NULL);
	herd_request_ref(req);
	return answer_sent(
	    req, herd__sconn_result(req->conn, req->id, result ? result : json_null()));
}

HERD_EXPORT int
herd_request_end(herd_request *req, json_t *result)
{
	return herd_request_reply(req, result);
}

static int
error_v(herd_request *req, int code, json_t *data, const char *fmt, va_list ap)
{
	char *text = NULL;
	int r = answer_check(req);

	if (r == -EINVAL && req && req->fn->kind == HERD_KIND_ONEWAY) {
		/* Nobody waits for a oneway call: its failure is only logged. */
		json_decref(data);
		if (vasprintf(&text, fmt, ap) < 0)
			return -ENOMEM;
		herd_log(HERD_LOG_WARNING, "%s: %s", req->fn->name, text);
		free(text);
		return 0;
	}
	if (r < 0) {
		json_decref(data);
		return r;
	}
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	r = answer(req, proto_error(req->id, code, text, data));
	free(text);
	return r;
}

HERD_EXPORT int
herd_request_failv(herd_request *req, const char *fmt, va_list ap)
{
	return error_v(req, HERD_E_FUNCTION_FAILED, NULL, fmt, ap);
}

HERD_EXPORT int
herd_request_fail(herd_request *req, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = error_v(req, HERD_E_FUNCTION_FAILED, NULL, fmt, ap);
	va_end(ap);
	return r;
}

HERD_EXPORT int
herd_request_error(herd_request *req, int code, json_t *data, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (data && !json_is_object(data)) {
		json_decref(data);
		data = NULL;
	}
	va_start(ap, fmt);
	r = error_v(req, code, data, fmt, ap);
	va_end(ap);
	return r;
}

/* ---- streams ---- */

static bool
is_stream(const herd_request *req)
{
	return req->fn->kind == HERD_KIND_PIPE || req->fn->kind == HERD_KIND_STATE;
}

HERD_EXPORT bool
herd_request_writable(const herd_request *req)
{
	return req && !req->finished && is_stream(req) && herd__sconn_writable(req->conn);
}

HERD_EXPORT int
herd_request_write(herd_request *req, json_t *item)
{
	json_t *params, *msg;
	int r = answer_check(req);

	if (r == 0 && !is_stream(req))
		r = -EINVAL;
	if (r == 0 && !herd__sconn_writable(req->conn))
		return -EAGAIN; /* not taken: the caller keeps item to write it again */
	if (r < 0) {
		json_decref(item);
		return r;
	}
	params = json_pack("{s:O, s:o}", "id", req->id, "item", item ? item : json_null());
	if (params && req->fn->kind == HERD_KIND_STATE && !req->wrote_item)
		json_object_set_new(params, "initial", json_true());
	msg = params ? proto_notification("herd.item", params) : NULL;
	if (!msg)
		return -ENOMEM;
	r = herd__sconn_send(req->conn, msg);
	if (r == 0)
		req->wrote_item = true;
	return r == -ENOBUFS ? -ECANCELED : r;
}

/* ---- callbacks ---- */

static int
register_check(const herd_request *req, bool ok_kind)
{
	if (!req || !ok_kind)
		return -EINVAL;
	if (req->finished)
		return -EALREADY;
	return 0;
}

HERD__DEFINE_CALLBACK_SETTER(herd_request_on_cancel, herd_request, herd_request_cb,
    register_check(p, p && p->fn->kind != HERD_KIND_ONEWAY), on_cancel, cancel_data)

HERD_EXPORT int
herd_request_on_drain(herd_request *req, herd_request_cb cb, void *userdata)
{
	int r = register_check(req, req && is_stream(req));

	if (r < 0)
		return r;
	req->on_drain = cb;
	req->drain_data = userdata;
	if (cb && !req->draining) {
		req->draining = true;
		herd_request_ref(req);
		herd__sconn_wait_drain(req->conn, req);
	} else if (!cb) {
		drain_remove(req);
	}
	return 0;
}

HERD__DEFINE_CALLBACK_SETTER(herd_request_on_item, herd_request, herd_item_cb,
    register_check(p, p && p->fn->kind == HERD_KIND_SINK), on_item, item_data)
HERD__DEFINE_CALLBACK_SETTER(herd_request_on_end, herd_request, herd_request_cb,
    register_check(p, p && p->fn->kind == HERD_KIND_SINK), on_end, end_data)
