/* SPDX-License-Identifier: MIT */
/* herdctl call: one function call on a worker's own socket, through libherd's client API. */
#include <errno.h>
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

int
ctl_call(const char *socket, const char *function, json_t *args, json_t **ret)
{
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	int r;

	r = herd_conn_connect(socket, NULL, NULL, &conn, &err);
	if (r < 0) {
		ctl_print_herd_error(r, err, socket);
		herd_error_unref(err);
		return r;
	}
	r = herd_call(conn, function, args, 0, ret);
	if (r < 0)
		ctl_print_herd_error(r, herd_conn_last_error(conn), function);
	herd_conn_unref(conn);
	return r;
}
