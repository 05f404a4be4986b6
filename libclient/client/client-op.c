/* SPDX-License-Identifier: MIT */
/*
 * Pending operations of a connection: a hash of ids for matching replies
 * (thousands may be in flight) and a list in start order for deadlines and for
 * failing everything when the connection dies.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/client-internal.h"

#define INITIAL_BUCKETS 64u

static size_t
bucket_of(const herd_conn *conn, int64_t id)
{
	uint64_t h = (uint64_t)id * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 32) & (conn->n_buckets - 1);
}

/* Doubles the table when it is more than full on average, keeping lookups short. */
static int
ops_grow(herd_conn *conn)
{
	size_t n = conn->n_buckets ? conn->n_buckets * 2 : INITIAL_BUCKETS;
	struct herd__op **old = conn->buckets;
	size_t old_n = conn->n_buckets;
	struct herd__op **b;

	b = calloc(n, sizeof(*b));
	if (!b)
		return -ENOMEM;
	conn->buckets = b;
	conn->n_buckets = n;
	for (size_t i = 0; i < old_n; i++) {
		struct herd__op *op = old[i];

		while (op) {
			struct herd__op *next = op->hnext;
			size_t k = bucket_of(conn, op->id);

			op->hnext = b[k];
			b[k] = op;
			op = next;
		}
	}
	free(old);
	return 0;
}

/* The pending operation with this id, or NULL. */
struct herd__op *
herd__op_find(herd_conn *conn, int64_t id)
{
	struct herd__op *op;

	if (!conn->n_buckets)
		return NULL;
	for (op = conn->buckets[bucket_of(conn, id)]; op; op = op->hnext)
		if (op->id == id)
			return op;
	return NULL;
}

static void
ops_remove(herd_conn *conn, struct herd__op *op)
{
	struct herd__op **p = &conn->buckets[bucket_of(conn, op->id)];

	while (*p && *p != op)
		p = &(*p)->hnext;
	if (*p)
		*p = op->hnext;
	op->hnext = NULL;

	HERD__TLIST_REMOVE(conn->pending_head, conn->pending_tail, op, prev, next);
	conn->n_pending--;
	conn->deadline_dirty = true;
}

void
herd__op_ref(struct herd__op *op)
{
	op->n_ref++;
}

void
herd__op_unref(struct herd__op *op)
{
	if (!op || --op->n_ref > 0)
		return;
	if (op->free_fn)
		op->free_fn(op);
	json_decref(op->result);
	herd_error_unref(op->error);
	free(op);
}

/* Picks the call timeout for timeout_usec (0: the connection's default). */
uint64_t
herd__conn_timeout(herd_conn *conn, uint64_t timeout_usec)
{
	return timeout_usec ? timeout_usec : conn->call_timeout_usec;
}

/* A new operation; see client-internal.h. */
void *
herd__op_new(
    size_t size, enum op_type type, herd__op_done_fn done_fn, void (*free_fn)(struct herd__op *op))
{
	struct herd__op *op = calloc(1, size);

	if (!op)
		return NULL;
	op->n_ref = 1;
	op->type = type;
	op->done_fn = done_fn;
	op->free_fn = free_fn;
	return op;
}

/* Starts op and hands over the caller's reference; see client-internal.h. */
int
herd__op_launch(herd_conn *conn, struct herd__op *op, const char *method, json_t *params,
    uint64_t timeout_usec, bool keep)
{
	int r = herd__op_start(conn, op, method, params, timeout_usec);

	if (r < 0 || !keep)
		herd__op_unref(op);
	return r;
}

/*
 * The request for id, method and params (borrowed), in the connection's
 * reused envelope: building and freeing a fresh object cost about a fifth of
 * a call's instructions. The wire text is the same (jansson keeps a replaced
 * key in its place; params, when present, is always last).
 */
static json_t *
request_fill(herd_conn *conn, int64_t id, const char *method, json_t *params)
{
	json_t *m = conn->request, *jmethod;

	if (!m) {
		m = conn->request = proto_request_int(id, method, NULL);
		if (!m)
			return NULL;
	} else {
		jmethod = json_object_get(m, "method");
		if (json_integer_set(json_object_get(m, "id"), id) < 0 ||
		    (strcmp(json_string_value(jmethod), method) != 0 &&
		        json_string_set(jmethod, method) < 0))
			return NULL;
	}
	if (!params)
		json_object_del(m, "params");
	else if (json_object_set(m, "params", params) < 0)
		return NULL;
	return m;
}

/*
 * Sends the request first and registers only if it was accepted, so a refused
 * message (too large) leaves no trace on the connection.
 */
int
herd__op_start(
    herd_conn *conn, struct herd__op *op, const char *method, json_t *params, uint64_t timeout_usec)
{
	json_t *msg;
	int64_t id;
	size_t k;
	int r;

	if (conn->state == CONN_CLOSED || conn->closing)
		return -ENOTCONN;
	if (conn->n_pending + 1 > conn->n_buckets) {
		r = ops_grow(conn);
		if (r < 0)
			return r;
	}

	id = conn->next_id;
	msg = request_fill(conn, id, method, params);
	if (!msg)
		return -ENOMEM;
	r = herd__conn_send(conn, msg);
	/* The envelope keeps no reference to the caller's params (json_null() allocates nothing). */
	if (params)
		json_object_set_new(msg, "params", json_null());
	if (r < 0)
		return r;
	/* Writing found the peer gone and closed the connection: register nothing, or the
	 * operation would wait for a reply that cannot come. */
	if (conn->state == CONN_CLOSED)
		return -ECONNRESET;
	conn->next_id++;

	op->id = id;
	op->conn = conn;
	op->deadline = timeout_usec == HERD_TIMEOUT_INFINITE ? HERD__USEC_INFINITY
	                                                     : herd__deadline(timeout_usec);
	op->n_ref++; /* the connection's reference */
	k = bucket_of(conn, id);
	op->hnext = conn->buckets[k];
	conn->buckets[k] = op;
	HERD__TLIST_APPEND(conn->pending_head, conn->pending_tail, op, prev, next);
	conn->n_pending++;
	conn->deadline_dirty = true;
	return 0;
}

/* Records the outcome, detaches op from its connection, then tells its owner. */
void
herd__op_complete(struct herd__op *op, int r, json_t *result, herd_error *err)
{
	herd_conn *conn = op->conn;

	if (op->done)
		return;
	op->done = true;
	op->r = r;
	op->result = json_incref(result);
	op->error = herd_error_ref(err);
	if (conn) {
		ops_remove(conn, op);
		op->conn = NULL;
		if (err)
			herd__conn_set_error(conn, err);
	}
	/* The connection's reference keeps op alive through its callback. */
	if (op->done_fn)
		op->done_fn(op, conn, r, result, err);
	if (conn)
		herd__op_unref(op);
}

/* Completes op with an error made here rather than received. */
void
herd__op_fail(struct herd__op *op, int r, int code, const char *fmt, ...)
{
	herd_error *err;
	va_list ap;

	va_start(ap, fmt);
	err = herd__error_newv(code, fmt, ap);
	va_end(ap);
	/* Without memory for the error the operation still completes, just without one. */
	herd__op_complete(op, r, NULL, err);
	herd_error_unref(err);
}

/* The earliest deadline among pending operations, recomputed only when it changed. */
uint64_t
herd__ops_next_deadline(herd_conn *conn)
{
	if (conn->deadline_dirty) {
		uint64_t min = HERD__USEC_INFINITY;

		for (struct herd__op *op = conn->pending_head; op; op = op->next)
			if (op->deadline < min)
				min = op->deadline;
		conn->next_op_deadline = min;
		conn->deadline_dirty = false;
	}
	return conn->next_op_deadline;
}

/* Fails every operation whose deadline passed; a cancelled stream ends as cancelled. */
int
herd__ops_expire(herd_conn *conn, uint64_t now)
{
	int n = 0;

	if (herd__ops_next_deadline(conn) > now)
		return 0;
	for (;;) {
		struct herd__op *op;

		/* Restart from the head each time: a callback may complete other operations. */
		for (op = conn->pending_head; op; op = op->next)
			if (op->deadline <= now)
				break;
		if (!op)
			break;
		if (op->cancelling)
			herd__op_fail(op, -ECANCELED, HERD_E_CANCELLED,
			    "cancelled (the worker did not confirm in time)");
		else
			herd__op_fail(op, -ETIMEDOUT, HERD_E_TIMEOUT,
			    "no reply to request %lld within its timeout", (long long)op->id);
		n++;
		if (conn->state == CONN_CLOSED)
			break;
	}
	return n;
}

/* Fails everything still pending with err; used when the connection closes. */
void
herd__ops_fail_all(herd_conn *conn, herd_error *err)
{
	while (conn->pending_head)
		herd__op_complete(conn->pending_head, -ECONNRESET, NULL, err);
}

void
herd__ops_free(herd_conn *conn)
{
	free(conn->buckets);
	conn->buckets = NULL;
	conn->n_buckets = 0;
}
