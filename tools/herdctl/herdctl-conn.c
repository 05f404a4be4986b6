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
	*ret = json_pack("{s:s, s:i, s:s?, s:s?, s:I}", "id", herd_worker_id(w), "pid",
	    herd_worker_pid(w), "socket", herd_worker_socket(w), "name", herd_worker_name(w),
	    "incarnation", (json_int_t)herd_worker_incarnation(w));
	herd_worker_unref(w);
	return *ret ? 0 : -ENOMEM;
}

int
ctl_worker_connect(struct ctl *c, const json_t *record, herd_conn **ret)
{
	herd_error *err = NULL;
	herd_worker *w = NULL;
	int r = ctl_connect(c);

	if (r < 0)
		return r;
	r = herd_master_worker(c->conn->m, record, &w);
	if (r < 0) {
		ctl_error("worker_exited", "worker %s is %s and has no socket",
		    json_string_value(json_object_get(record, "id")) ?: "?",
		    json_string_value(json_object_get(record, "state")) ?: "gone");
		return r;
	}
	r = herd_worker_connect(w, NULL, ret, &err);
	if (r < 0)
		ctl_print_herd_error(r, err, herd_worker_socket(w));
	herd_error_unref(err);
	herd_worker_unref(w);
	return r;
}

/* What a command listens to: notifications named method (about worker id, unless NULL). */
struct listen {
	const char *method;
	const char *id;
	int (*cb)(json_t *params, void *userdata);
	void *userdata;
	bool stop; /* cb said so, or the stream said "end" */
};

/* herdd's notifications as it sent them: --json prints seq, instance, gaps and log lines. */
static void
listen_notice(herd_master *m, const char *method, json_t *params, void *userdata)
{
	struct listen *l = userdata;
	const char *id = json_string_value(json_object_get(params, "id"));

	(void)m;
	if (l->stop || strcmp(method, l->method) != 0 || (l->id && strcmp(id ?: "", l->id) != 0))
		return;
	if (l->cb(params, l->userdata) != 0 || json_is_true(json_object_get(params, "end")))
		l->stop = true;
}

int
ctl_watch(struct ctl *c, json_t *sub, int (*cb)(json_t *event, void *userdata), void *userdata)
{
	struct listen wt = { "event", NULL, cb, userdata, false };
	json_t *res = NULL, *params = json_pack("{s:b}", "all", 1);
	int r;

	if (!params || (sub && json_object_update(params, sub) < 0)) {
		json_decref(sub);
		json_decref(params);
		return -ENOMEM;
	}
	json_decref(sub);
	r = ctl_connect(c);
	if (r < 0) {
		json_decref(params);
		return r;
	}
	herd_master_on_notice(c->conn->m, listen_notice, &wt);
	r = ctl_request(c, "subscribe", params, &res);
	json_decref(res);
	if (r < 0)
		return r;
	return ctl_listen(c, "watch", &wt.stop);
}

int
ctl_follow(struct ctl *c, json_t *params, int (*cb)(json_t *lines, void *userdata), void *userdata)
{
	struct listen fo = { "log", NULL, cb, userdata, false };
	json_t *res = NULL;
	char *id;
	int r;

	id = strdup(json_string_value(json_object_get(params, "id")) ?: "");
	r = id ? ctl_connect(c) : -ENOMEM;
	if (r < 0) {
		free(id);
		json_decref(params);
		return r;
	}
	fo.id = id;
	herd_master_on_notice(c->conn->m, listen_notice, &fo);
	r = ctl_request(c, "logs", params, &res);
	if (r == 0) {
		/* A stream that already ended says so: nothing follows. */
		fo.stop =
		    cb(res, userdata) != 0 || !json_is_true(json_object_get(res, "following"));
		r = ctl_listen(c, "logs", &fo.stop);
	}
	herd_master_on_notice(c->conn->m, NULL, NULL);
	json_decref(res);
	free(id);
	return r;
}

/* Processes herdd's messages (the callbacks run) until *stop is set. Returns 0 or -errno, said. */
int
ctl_listen(struct ctl *c, const char *what, bool *stop)
{
	herd_conn *conn = herd_master_get_conn(c->conn->m);
	int r;

	/* The engine's own wait covers the socket and its heartbeat deadlines. */
	while (!*stop) {
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
			ctl_print_herd_error(r, NULL, what);
			return r;
		}
	}
	return 0;
}
