/* SPDX-License-Identifier: MIT */
/*
 * Calls from a handler back to its client on the same connection (PROTOCOL.md
 * 6.7): requests the worker sends, numbered per connection, whose replies
 * come back among the client's messages. Each waiting call holds its request
 * (and so the connection); a connection that closes fails what still waits.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker-internal.h"

struct herd__client_call {
	struct herd__client_call *next;
	int64_t id;
	herd_request *req;
	herd_client_reply_cb cb;
	void *userdata;
};

/* Takes call out of its connection's list. */
static void
call_unlink(struct srv_conn *c, struct herd__client_call *call)
{
	for (struct herd__client_call **p = &c->client_calls; *p; p = &(*p)->next) {
		if (*p == call) {
			*p = call->next;
			return;
		}
	}
}

/* Runs the callback once and lets the call go. */
static void
call_finish(struct herd__client_call *call, int r, json_t *result, herd_error *err)
{
	call->cb(call->req, r, result, err, call->userdata);
	herd_request_unref(call->req);
	free(call);
}

HERD_EXPORT int
herd_request_call_client(
    herd_request *req, const char *function, json_t *args, herd_client_reply_cb cb, void *userdata)
{
	struct herd__client_call *call;
	struct srv_conn *c;
	json_t *params, *msg;
	int r;

	if (!req || !function || !*function ||
	    (args && !json_is_object(args) && !json_is_array(args)))
		return -EINVAL;
	c = req->conn;
	if (c->state != SCONN_OPEN)
		return -ECANCELED;
	params = args ? json_incref(args) : NULL;
	if (!cb) {
		msg = proto_notification(function, params);
		r = herd__sconn_send(c, msg);
		return r == -ENOBUFS ? -ECANCELED : r;
	}
	call = calloc(1, sizeof(*call));
	if (!call) {
		json_decref(params);
		return -ENOMEM;
	}
	*call =
	    (struct herd__client_call){ .id = ++c->next_client_id, .cb = cb, .userdata = userdata };
	r = herd__sconn_send(c, proto_request_int(call->id, function, params));
	if (r < 0) {
		free(call);
		return r == -ENOBUFS ? -ECANCELED : r;
	}
	call->req = herd_request_ref(req);
	call->next = c->client_calls;
	c->client_calls = call;
	return 0;
}

void
herd__client_call_reply(struct srv_conn *c, const struct proto_msg *m)
{
	struct herd__client_call *call;
	herd_error *err;
	int r;

	if (!json_is_integer(m->id))
		return;
	for (call = c->client_calls; call; call = call->next)
		if (call->id == json_integer_value(m->id))
			break;
	/* A reply to nothing we asked (or asked and gave up on) answers nothing. */
	if (!call)
		return;
	call_unlink(c, call);
	r = herd__reply_outcome(m, &err);
	call_finish(call, r, r == 0 ? m->result : NULL, err);
	herd_error_unref(err);
}

void
herd__client_call_fail_all(struct srv_conn *c)
{
	herd_error *err = herd__error_new(
	    HERD_E_CONNECTION_CLOSED, "the client's connection closed before it answered", NULL);

	while (c->client_calls) {
		struct herd__client_call *call = c->client_calls;

		c->client_calls = call->next;
		call_finish(call, -ECONNRESET, NULL, err);
	}
	herd_error_unref(err);
}
