/* SPDX-License-Identifier: MIT */
/* herdctl call: one function call on a worker's own socket, through libherd's client API. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <herd/client.h>
#include <herd/common.h>

#include "herdctl.h"

/* Prints a libherd error, remote or local, as herdctl's one line. */
void
ctl_print_herd_error(int r, const herd_error *err, const char *what)
{
	if (err)
		ctl_error(herd_error_name(err), "%s", herd_error_message(err));
	else
		ctl_error("error", "%s: %s", what, strerror(-r));
}

/* Prints a stream's items as JSON lines as they come; the result is left to the caller. */
static int
call_stream(herd_conn *conn, const char *function, json_t *args, json_t **ret)
{
	herd_stream *st = NULL;
	json_t *item;
	int r;

	r = herd_stream_open(conn, function, args, NULL, NULL, NULL, &st);
	if (r < 0) {
		ctl_print_herd_error(r, herd_conn_last_error(conn), function);
		return r;
	}
	while ((r = herd_stream_next(st, HERD_TIMEOUT_INFINITE, &item)) == 1) {
		char *text = json_dumps(item, JSON_COMPACT | JSON_ENCODE_ANY);

		printf("%s\n", text ? text : "null");
		fflush(stdout);
		free(text);
		json_decref(item);
	}
	if (r == 0)
		*ret = json_incref(herd_stream_result(st));
	else
		ctl_print_herd_error(r, herd_stream_error(st), function);
	herd_stream_unref(st);
	return r;
}

int
ctl_call(struct ctl *c, const json_t *record, const char *function, const char *kind, json_t *args,
    json_t **ret)
{
	herd_conn *conn = NULL;
	int r = ctl_worker_connect(c, record, &conn);

	if (r < 0)
		return r;
	/* A server-to-client stream's items would be lost to herd_call(). */
	if (kind && (!strcmp(kind, "pipe") || !strcmp(kind, "state"))) {
		r = call_stream(conn, function, args, ret);
	} else {
		r = herd_call(conn, function, args, 0, ret);
		if (r < 0)
			ctl_print_herd_error(r, herd_conn_last_error(conn), function);
	}
	herd_conn_unref(conn);
	return r;
}
