/* SPDX-License-Identifier: MIT */
/*
 * Functions the calling side serves to its worker on the same connection
 * (PROTOCOL.md 6.7): progress reports and questions a handler asks its caller
 * while a call runs, as rpc_parallel's workers call back into their master.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "client/client-internal.h"

struct herd__served {
	struct herd__served *next;
	char *name;
	herd_conn_function_fn fn;
	void *userdata;
};

static struct herd__served *
served_find(herd_conn *conn, const char *name)
{
	for (struct herd__served *s = conn->served; s; s = s->next)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

HERD_EXPORT int
herd_conn_serve(herd_conn *conn, const char *function, herd_conn_function_fn fn, void *userdata)
{
	struct herd__served *s, **p;

	if (!conn || !herd__function_valid(function))
		return -EINVAL;
	s = served_find(conn, function);
	if (!fn) {
		for (p = &conn->served; *p; p = &(*p)->next) {
			if (*p == s) {
				*p = s->next;
				free(s->name);
				free(s);
				break;
			}
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s || !(s->name = strdup(function))) {
			free(s);
			return -ENOMEM;
		}
		s->next = conn->served;
		conn->served = s;
	}
	s->fn = fn;
	s->userdata = userdata;
	return 0;
}

void
herd__served_free(herd_conn *conn)
{
	while (conn->served) {
		struct herd__served *s = conn->served;

		conn->served = s->next;
		free(s->name);
		free(s);
	}
}

/* The reply to a request the worker sent: the function's result or its failure. */
static json_t *
served_reply(herd_conn *conn, const struct proto_msg *m)
{
	struct herd__served *s = served_find(conn, m->method);
	_cleanup_free_ char *message = NULL;
	json_t *result = NULL;
	int r;

	if (!s)
		return proto_errorf(m->id, HERD_E_METHOD_NOT_FOUND,
		    "this client serves no function \"%s\"", m->method);
	r = s->fn(
	    conn, m->method, m->params ? m->params : json_null(), &result, &message, s->userdata);
	if (r < 0) {
		json_decref(result);
		return proto_errorf(m->id, HERD_E_FUNCTION_FAILED, "%s",
		    message ? message : "the client's function failed");
	}
	return proto_result(m->id, result ? result : json_null());
}

bool
herd__served_dispatch(herd_conn *conn, const struct proto_msg *m)
{
	_cleanup_json_ json_t *reply = NULL;

	if (m->kind == PROTO_NOTIFICATION) {
		struct herd__served *s = served_find(conn, m->method);
		json_t *ignored = NULL;
		char *message = NULL;

		if (!s)
			return false;
		/* A notification has nobody to answer: what the function returns is dropped. */
		(void)s->fn(conn, m->method, m->params ? m->params : json_null(), &ignored,
		    &message, s->userdata);
		json_decref(ignored);
		free(message);
		return true;
	}
	herd_conn_ref(conn);
	reply = served_reply(conn, m);
	if (reply && !herd_conn_is_closed(conn))
		(void)herd__conn_send(conn, reply);
	herd_conn_unref(conn);
	return true;
}
