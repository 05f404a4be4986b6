/* SPDX-License-Identifier: MIT */
/* herdctl's conversation with herdd, through libherd's master API. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <herd/master.h>

#include "herdctl.h"

struct ctl_conn {
	herd_master *m;
};

int
ctl_connect(struct ctl *c)
{
	herd_error *err = NULL;
	herd_master *m = NULL;
	int r;

	if (c->conn)
		return 0;
	r = c->master ? herd_master_connect(c->socket, NULL, &m, &err)
	              : herd_inspector_connect(c->socket, NULL, &m, &err);
	if (r == -ENOENT || r == -ECONNREFUSED) {
		char *path = herd_master_socket_path(c->socket);

		ctl_error("no_daemon",
		    "no herdd runs at %s; start one with 'herdd --socket %s &', or let "
		    "'herdctl spawn' start one",
		    path ? path : "herdd's socket", path ? path : "PATH");
		free(path);
	} else if (r < 0) {
		ctl_print_herd_error(r, err, c->socket ? c->socket : "herdd's default socket");
	}
	herd_error_unref(err);
	if (r < 0)
		return r;
	c->conn = calloc(1, sizeof(*c->conn));
	if (!c->conn) {
		herd_master_unref(m);
		ctl_error("error", "out of memory");
		return -ENOMEM;
	}
	c->conn->m = m;
	return 0;
}

void
ctl_disconnect(struct ctl *c)
{
	if (!c->conn)
		return;
	herd_master_unref(c->conn->m);
	free(c->conn);
	c->conn = NULL;
}

int
ctl_request(struct ctl *c, const char *method, json_t *params, json_t **ret)
{
	json_int_t grace = json_integer_value(json_object_get(params, "grace_ms"));
	/* shutdown answers once the worker is reaped: allow for its grace period. */
	uint64_t timeout = grace > 0 ? ((uint64_t)grace + 10000) * 1000 : 0;
	int r = ctl_connect(c);

	if (r < 0) {
		json_decref(params);
		return r;
	}
	r = herd_master_request(c->conn->m, method, params, timeout, ret);
	json_decref(params);
	if (r < 0)
		ctl_print_herd_error(r, herd_master_last_error(c->conn->m), method);
	return r;
}

int
ctl_spawn(struct ctl *c, json_t *params, json_t **ret)
{
	herd_worker *w = NULL;
	int r = ctl_connect(c);

	if (r < 0) {
		json_decref(params);
		return r;
	}
	r = herd_master_spawn(c->conn->m, params, 0, &w);
	json_decref(params);
	if (r < 0) {
		ctl_print_herd_error(r, herd_master_last_error(c->conn->m), "spawn");
		return r;
	}
	*ret = json_pack("{s:s, s:i, s:s?, s:s?}", "id", herd_worker_id(w), "pid",
	    herd_worker_pid(w), "socket", herd_worker_socket(w), "name", herd_worker_name(w));
	herd_worker_unref(w);
	return *ret ? 0 : -ENOMEM;
}

struct watch {
	int (*cb)(json_t *event, void *userdata);
	void *userdata;
	bool stop;
};

/* Rebuilds the event notification's params, so --json prints what herdd sent. */
static void
watch_event(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *stderr_tail, json_t *worker, void *userdata)
{
	struct watch *wt = userdata;
	json_t *ev = json_pack("{s:s, s:O?, s:s?, s:O?}", "event", event, "worker", worker,
	    "message", message, "stderr_tail", stderr_tail);

	if (ev && wt->cb(ev, wt->userdata) != 0)
		wt->stop = true;
	json_decref(ev);
}

int
ctl_watch(struct ctl *c, int (*cb)(json_t *event, void *userdata), void *userdata)
{
	struct watch wt = { cb, userdata, false };
	herd_conn *conn;
	json_t *res = NULL;
	int r;

	r = ctl_connect(c);
	if (r < 0)
		return r;
	herd_master_on_event(c->conn->m, watch_event, &wt);
	r = ctl_request(c, "subscribe", json_pack("{s:b}", "all", 1), &res);
	json_decref(res);
	if (r < 0)
		return r;
	conn = herd_master_get_conn(c->conn->m);
	/* The engine's own wait covers the socket and its heartbeat deadlines. */
	while (!wt.stop) {
		r = herd_conn_wait(conn, HERD_TIMEOUT_INFINITE);
		if (r == -EINTR)
			continue;
		if (r >= 0)
			r = herd_conn_process(conn);
		if (r == -ENOTCONN || herd_conn_is_closed(conn) == 1) {
			ctl_error("connection_closed", "herdd closed the connection");
			return -ECONNRESET;
		}
		if (r < 0) {
			ctl_print_herd_error(r, NULL, "watch");
			return r;
		}
	}
	return 0;
}
