/* SPDX-License-Identifier: MIT */
/*
 * Calls (kind "call") and one-way calls. The blocking herd_call() is the
 * asynchronous call plus the poll engine, so both behave the same.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client-internal.h"

/* params must be an object or an array on the wire; absent means null. */
bool
herd__args_valid(const json_t *args)
{
	return !args || json_is_object(args) || json_is_array(args);
}

/* The protocol's own methods cannot be called as functions. */
bool
herd__function_valid(const char *name)
{
	return name && *name && strcmp(name, "hello") != 0 && strcmp(name, "heartbeat") != 0 &&
	    strcmp(name, "herd.item") != 0 && strcmp(name, "herd.end") != 0 &&
	    strcmp(name, "herd.cancel") != 0;
}

static void
call_done(struct herd__op *op, herd_conn *conn, int r, json_t *result, herd_error *err)
{
	struct herd_pending *call = (struct herd_pending *)op;

	if (call->cb)
		call->cb(conn, call, r, result, err, call->userdata);
}

int
herd__call_start(herd_conn *conn, const char *method, json_t *params, uint64_t timeout_usec,
    herd_call_cb cb, void *userdata, herd_pending **ret_call)
{
	struct herd_pending *call;
	int r;

	call = herd__op_new(sizeof(*call), OP_CALL, call_done, NULL);
	if (!call)
		return -ENOMEM;
	call->cb = cb;
	call->userdata = userdata;
	r = herd__op_launch(conn, &call->op, method, params, herd__conn_timeout(conn, timeout_usec),
	    ret_call != NULL);
	if (r == 0 && ret_call)
		*ret_call = call;
	return r;
}

struct sync_wait {
	bool done;
	int r;
	json_t *result;
	herd_error *err;
};

static void
sync_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata)
{
	struct sync_wait *w = userdata;

	w->done = true;
	w->r = r;
	w->result = json_incref(result);
	w->err = herd_error_ref(err);
}

int
herd__call_sync(herd_conn *conn, const char *method, json_t *params, uint64_t timeout_usec,
    json_t **ret_result, herd_error **ret_error)
{
	struct sync_wait w = { 0 };
	herd_pending *call = NULL;
	int r;

	if (ret_error)
		*ret_error = NULL;
	r = herd__call_start(conn, method, params, timeout_usec, sync_done, &w, &call);
	if (r < 0)
		return r;
	/* The call's own deadline ends the wait, so the engine needs no limit of its own. */
	r = herd__conn_run(conn, &w.done, HERD__USEC_INFINITY);
	if (!w.done) {
		/* The engine failed without completing the call (it cannot, short of a bug):
		 * complete it now so its callback does not write into a dead frame. */
		herd_call_cancel(call);
		w.r = r < 0 ? r : -EIO;
	}
	herd_pending_unref(call);
	if (w.r == 0 && ret_result)
		*ret_result = json_incref(w.result);
	if (ret_error)
		*ret_error = herd_error_ref(w.err);
	json_decref(w.result);
	herd_error_unref(w.err);
	return w.r;
}

/* Common argument checks of the public entry points; records a local error on conn. */
static int
check_call(herd_conn *conn, const char *function, json_t *args)
{
	if (!conn)
		return -EINVAL;
	if (!herd__function_valid(function) || !herd__args_valid(args)) {
		herd_error *err = herd__error_new(HERD_E_INVALID_PARAMS,
		    !herd__function_valid(function)
		        ? "function name missing or reserved"
		        : "arguments must be a JSON object or array (or NULL)",
		    NULL);

		herd__conn_set_error(conn, err);
		herd_error_unref(err);
		return -EINVAL;
	}
	if (conn->state == CONN_CLOSED)
		return -ENOTCONN;
	return 0;
}

/* A local failure that sent nothing still explains itself through herd_conn_last_error(). */
static void
note_local_failure(herd_conn *conn, int r)
{
	herd_error *err;

	if (r == -EMSGSIZE)
		err = herd__error_newf(HERD_E_MESSAGE_TOO_LARGE,
		    "the request is larger than max_message_size (%zu bytes); nothing was sent",
		    conn->peer.max_send);
	else if (r == -ENOTCONN || r == -ECONNRESET)
		err = herd__error_new(HERD_E_CONNECTION_CLOSED, "the connection is closed", NULL);
	else if (r == -ENOBUFS)
		err = herd__error_new(
		    HERD_E_OUTPUT_OVERFLOW, "the connection's output queue is full", NULL);
	else
		return;
	herd__conn_set_error(conn, err);
	herd_error_unref(err);
}

HERD_EXPORT int
herd_call(
    herd_conn *conn, const char *function, json_t *args, uint64_t timeout_usec, json_t **ret_result)
{
	herd_error *err = NULL;
	int r;

	r = check_call(conn, function, args);
	if (r < 0) {
		if (conn)
			note_local_failure(conn, r);
		return r;
	}
	herd_conn_ref(conn);
	r = herd__call_sync(conn, function, args, timeout_usec, ret_result, &err);
	/* A call that completed with an error already left it in last_error; only a refusal
	 * before anything was sent needs one made here. */
	if (r < 0 && !err)
		note_local_failure(conn, r);
	herd_error_unref(err);
	herd_conn_unref(conn);
	return r;
}

HERD_EXPORT int
herd_call_str(herd_conn *conn, const char *function, const char *json_args, char **ret_json_result)
{
	_cleanup_json_ json_t *args = NULL;
	_cleanup_json_ json_t *result = NULL;
	int r;

	if (!conn || !ret_json_result)
		return -EINVAL;
	if (json_args) {
		json_error_t jerr;

		args = json_loads(json_args, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
		if (!args) {
			herd_error *err = herd__error_newf(
			    HERD_E_INVALID_PARAMS, "arguments are not valid JSON: %s", jerr.text);

			herd__conn_set_error(conn, err);
			herd_error_unref(err);
			return -EINVAL;
		}
	}
	r = herd_call(conn, function, args, 0, &result);
	if (r < 0)
		return r;
	*ret_json_result = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);
	return *ret_json_result ? 0 : -ENOMEM;
}

HERD_EXPORT int
herd_call_async(herd_conn *conn, const char *function, json_t *args, herd_call_cb cb,
    void *userdata, herd_pending **ret_call)
{
	int r;

	if (!cb)
		return -EINVAL;
	r = check_call(conn, function, args);
	if (r == 0)
		r = herd__call_start(conn, function, args, 0, cb, userdata, ret_call);
	if (r < 0 && conn)
		note_local_failure(conn, r);
	return r;
}

HERD__DEFINE_REF_UNREF_VIA(herd_pending, herd_pending, op, herd__op_ref, herd__op_unref)

HERD_EXPORT int
herd_call_set_timeout(herd_pending *call, uint64_t timeout_usec)
{
	if (!call)
		return -EINVAL;
	if (call->op.done)
		return -EALREADY;
	call->op.deadline = herd__deadline(herd__conn_timeout(call->op.conn, timeout_usec));
	call->op.conn->deadline_dirty = true;
	herd__conn_update_ev(call->op.conn);
	return 0;
}

HERD_EXPORT int
herd_call_cancel(herd_pending *call)
{
	herd_conn *conn;

	if (!call)
		return -EINVAL;
	if (call->op.done)
		return -EALREADY;
	conn = herd_conn_ref(call->op.conn);
	herd__op_fail(&call->op, -ECANCELED, HERD_E_CANCELLED, "call cancelled by the caller");
	herd_conn_unref(conn);
	return 0;
}

HERD_EXPORT int
herd_oneway(herd_conn *conn, const char *function, json_t *args)
{
	int r;

	r = check_call(conn, function, args);
	if (r == 0)
		r = herd__conn_notify(conn, function, args ? json_incref(args) : NULL);
	if (r < 0 && conn)
		note_local_failure(conn, r);
	return r;
}
