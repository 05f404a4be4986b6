/* SPDX-License-Identifier: MIT */
/*
 * Streams: pipe and state functions (items from the worker) and sinks (items
 * to the worker). Both are pending requests whose final reply ends them, so
 * they share the operation machinery and end exactly once, even when the
 * connection dies.
 */
#include <errno.h>
#include <stdlib.h>

#include "client/client-internal.h"

static void
stream_free(struct herd__op *op)
{
	json_decref(((struct herd_stream *)op)->queue);
}

static void
stream_done(struct herd__op *op, herd_conn *conn, int r, json_t *result, herd_error *err)
{
	struct herd_stream *s = (struct herd_stream *)op;

	s->wake = true;
	if (s->on_end)
		s->on_end(s, r, result, err, s->userdata);
}

/* Delivers one item: to the callback, or to the iterator's queue. */
void
herd__stream_item(struct herd_stream *s, json_t *item, bool initial)
{
	if (s->on_item) {
		herd__op_ref(&s->op);
		s->on_item(s, item, initial, s->userdata);
		herd__op_unref(&s->op);
		return;
	}
	if (!s->queue)
		s->queue = json_array();
	/* Out of memory here loses the item; the end still arrives. */
	if (s->queue)
		json_array_append_new(s->queue, json_pack("[O, b]", item, initial));
	s->wake = true;
}

HERD_EXPORT int
herd_stream_open(herd_conn *conn, const char *function, json_t *args, herd_stream_item_cb on_item,
    herd_stream_end_cb on_end, void *userdata, herd_stream **ret)
{
	struct herd_stream *s;
	int r;

	if (!conn || !herd__function_valid(function) || !herd__args_valid(args))
		return -EINVAL;
	if (!on_item && !ret)
		return -EINVAL; /* an iterator nobody holds could never be read */
	s = herd__op_new(sizeof(*s), OP_STREAM, stream_done, stream_free);
	if (!s)
		return -ENOMEM;
	s->on_item = on_item;
	s->on_end = on_end;
	s->userdata = userdata;
	r = herd__op_launch(conn, &s->op, function, args, HERD_TIMEOUT_INFINITE, ret != NULL);
	if (r == 0 && ret)
		*ret = s;
	return r;
}

/* Pops the oldest queued item, if any. */
static bool
stream_pop(struct herd_stream *s, json_t **ret_item)
{
	json_t *pair;

	if (!s->queue || s->queue_head >= json_array_size(s->queue))
		return false;
	pair = json_array_get(s->queue, s->queue_head++);
	*ret_item = json_incref(json_array_get(pair, 0));
	s->last_initial = json_is_true(json_array_get(pair, 1));
	/* Compact once drained instead of shifting the array on every pop. */
	if (s->queue_head == json_array_size(s->queue)) {
		json_array_clear(s->queue);
		s->queue_head = 0;
	}
	return true;
}

HERD_EXPORT int
herd_stream_next(herd_stream *s, uint64_t timeout_usec, json_t **ret_item)
{
	herd_conn *conn;
	uint64_t deadline;
	int r;

	if (!s || !ret_item || s->on_item)
		return -EINVAL;
	*ret_item = NULL;
	if (stream_pop(s, ret_item))
		return 1;
	if (s->op.done)
		return s->op.r;

	conn = herd_conn_ref(s->op.conn);
	deadline = herd__deadline(herd__conn_timeout(conn, timeout_usec));
	herd__op_ref(&s->op);
	s->wake = false;
	r = herd__conn_run(conn, &s->wake, deadline);
	if (stream_pop(s, ret_item))
		r = 1;
	else if (s->op.done)
		r = s->op.r;
	else if (r == 0)
		r = -EIO; /* woken without an item or an end: cannot happen */
	herd__op_unref(&s->op);
	herd_conn_unref(conn);
	return r;
}

HERD__DEFINE_GETTER(herd_stream_item_initial, herd_stream, int, p->last_initial, -EINVAL)

HERD_EXPORT json_t *
herd_stream_result(herd_stream *s)
{
	return s && s->op.done && s->op.r == 0 ? s->op.result : NULL;
}

HERD_EXPORT herd_error *
herd_stream_error(herd_stream *s)
{
	return s && s->op.done ? s->op.error : NULL;
}

HERD__DEFINE_GETTER(herd_stream_is_done, herd_stream, int, p->op.done, -EINVAL)

/*
 * Tells the worker to stop and waits for its final reply (which says
 * "cancelled", or carries the result if the stream had already finished). The
 * call timeout bounds that wait so a worker that never answers cannot keep the
 * stream open forever.
 */
static int
op_cancel(struct herd__op *op)
{
	herd_conn *conn = op->conn;
	int r;

	if (op->done)
		return -EALREADY;
	if (op->cancelling)
		return 0;
	op->cancelling = true;
	r = herd__conn_notify(conn, "herd.cancel", json_pack("{s:I}", "id", (json_int_t)op->id));
	if (op->done)
		return 0; /* sending found the connection dead: the op already ended */
	op->deadline = herd__deadline(conn->call_timeout_usec);
	conn->deadline_dirty = true;
	herd__conn_update_ev(conn);
	/* A failed send has closed the connection, which ended the op: the cancel is done. */
	(void)r;
	return 0;
}

HERD_EXPORT int
herd_stream_cancel(herd_stream *s)
{
	if (!s)
		return -EINVAL;
	if (s->queue) {
		json_array_clear(s->queue);
		s->queue_head = 0;
	}
	return op_cancel(&s->op);
}

HERD__DEFINE_REF_UNREF_VIA(herd_stream, herd_stream, op, herd__op_ref, herd__op_unref)

/* ---- sinks ---- */

static void
sink_done(struct herd__op *op, herd_conn *conn, int r, json_t *result, herd_error *err)
{
	struct herd_sink *k = (struct herd_sink *)op;
	herd_sink_cb cb = k->cb;

	k->cb = NULL;
	if (cb)
		cb(k, r, result, err, k->userdata);
}

HERD_EXPORT int
herd_sink_open(herd_conn *conn, const char *function, json_t *args, herd_sink **ret)
{
	struct herd_sink *k;
	int r;

	if (!conn || !ret || !herd__function_valid(function) || !herd__args_valid(args))
		return -EINVAL;
	k = herd__op_new(sizeof(*k), OP_SINK, sink_done, NULL);
	if (!k)
		return -ENOMEM;
	r = herd__op_launch(conn, &k->op, function, args, HERD_TIMEOUT_INFINITE, true);
	if (r == 0)
		*ret = k;
	return r;
}

HERD_EXPORT int
herd_sink_send(herd_sink *k, json_t *item)
{
	json_t *params;

	if (!k)
		return -EINVAL;
	if (k->op.done || k->ended)
		return -EPIPE;
	params =
	    json_pack("{s:I, s:O}", "id", (json_int_t)k->op.id, "item", item ? item : json_null());
	if (!params)
		return -ENOMEM;
	return herd__conn_notify(k->op.conn, "herd.item", params);
}

/* Sends herd.end once and starts the finish timeout. */
static int
sink_end(herd_sink *k, uint64_t timeout_usec)
{
	herd_conn *conn = k->op.conn;
	int r;

	if (k->ended || k->op.done)
		return 0;
	k->ended = true;
	r = herd__conn_notify(conn, "herd.end", json_pack("{s:I}", "id", (json_int_t)k->op.id));
	if (k->op.done)
		return 0;
	if (r < 0)
		return r;
	k->op.deadline = herd__deadline(herd__conn_timeout(conn, timeout_usec));
	conn->deadline_dirty = true;
	herd__conn_update_ev(conn);
	return 0;
}

HERD_EXPORT int
herd_sink_finish(herd_sink *k, uint64_t timeout_usec, json_t **ret_result)
{
	herd_conn *conn;
	int r;

	if (!k || k->async)
		return -EINVAL;
	if (!k->op.done) {
		conn = herd_conn_ref(k->op.conn);
		r = sink_end(k, timeout_usec);
		if (r < 0) {
			herd_conn_unref(conn);
			return r;
		}
		herd__op_ref(&k->op);
		/* The deadline set by sink_end() completes the op, so the run always ends. */
		(void)herd__conn_run(conn, &k->op.done, HERD__USEC_INFINITY);
		herd__op_unref(&k->op);
		herd_conn_unref(conn);
		if (!k->op.done)
			return -EIO;
	}
	if (k->op.r == 0 && ret_result)
		*ret_result = json_incref(k->op.result);
	return k->op.r;
}

HERD_EXPORT int
herd_sink_finish_async(herd_sink *k, herd_sink_cb cb, void *userdata)
{
	int r;

	if (!k || !cb || k->async)
		return -EINVAL;
	if (k->op.done)
		return -EALREADY;
	r = sink_end(k, 0);
	if (r < 0)
		return r;
	if (k->op.done)
		return -EALREADY;
	k->async = true;
	k->cb = cb;
	k->userdata = userdata;
	return 0;
}

HERD_EXPORT int
herd_sink_cancel(herd_sink *k)
{
	if (!k)
		return -EINVAL;
	k->ended = true;
	return op_cancel(&k->op);
}

HERD_EXPORT herd_error *
herd_sink_error(herd_sink *k)
{
	return k && k->op.done ? k->op.error : NULL;
}

HERD__DEFINE_REF_UNREF_VIA(herd_sink, herd_sink, op, herd__op_ref, herd__op_unref)
