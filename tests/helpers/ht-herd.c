/* SPDX-License-Identifier: MIT */
/*
 * Conversations with herdd and workers that many tests share: hello, spawning
 * herd-testworker (one or many at once), one call on a worker's socket, and
 * waiting until herdd holds no child at all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "herd-test.h"
#include "ht-internal.h"

int
ht_slow(void)
{
	const char *slow = getenv("HERD_TEST_SLOW");
	int k = slow ? atoi(slow) : 0;

	if (k < 1) {
#if defined(__SANITIZE_ADDRESS__)
		/* Sanitized processes start, run and exit (leak check) several times slower. */
		k = 3;
#else
		k = 1;
#endif
	}
	return k;
}

int
ht_ms(int ms)
{
	return ms * ht_slow();
}

int
ht_valgrind_slow(void)
{
	return getenv("HERD_UNDER_VALGRIND") ? 10 : 1;
}

struct ht_conn *
ht_herdd_open(const struct ht_daemon *d, const char *role, const char *name)
{
	return ht_hello_open(d->socket, role, name ? json_pack("{s:s}", "name", name) : NULL, NULL);
}

json_t *
ht_testworker_params(json_t *extra)
{
	const char *path = ht_env_path("HERD_TESTWORKER");
	json_t *params;

	if (!path) {
		json_decref(extra);
		return NULL;
	}
	params = json_pack("{s:s, s:[s]}", "path", path, "argv", path);
	if (params && extra)
		json_object_update(params, extra);
	json_decref(extra);
	return params;
}

json_t *
ht_sh_params(const char *script, json_t *extra)
{
	json_t *p = json_pack("{s:s, s:[s, s, s]}", "path", "/bin/sh", "argv", "sh", "-c", script);

	if (p && extra)
		json_object_update(p, extra);
	json_decref(extra);
	return p;
}

pid_t
ht_worker_pid(const json_t *worker)
{
	return (pid_t)json_integer_value(json_object_get(worker, "pid"));
}

json_t *
ht_spawn(struct ht_conn *c, json_t *params, int timeout_ms)
{
	json_t *reply = ht_conn_call(c, "spawn", params, timeout_ms);
	pid_t pid = ht_worker_pid(ht_result(reply));

	if (pid > 0)
		ht_track_pid(pid);
	return reply;
}

int
ht_spawn_many(
    struct ht_conn *c, int n, const json_t *params, pid_t *pids, char **ids, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	int64_t *req_ids = calloc((size_t)n, sizeof(*req_ids));
	int i, ok = 0, r = 0;

	if (!req_ids)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		pids[i] = 0;
		ids[i] = NULL;
	}
	for (i = 0; i < n; i++) {
		req_ids[i] = ht_conn_send_request(c, "spawn", json_deep_copy(params));
		if (req_ids[i] < 0) {
			r = (int)req_ids[i];
			goto out;
		}
	}
	for (i = 0; i < n; i++) {
		json_t *reply = ht_conn_wait_reply(c, req_ids[i], ht__remaining(deadline));
		json_t *res = ht_result(reply);

		if (!reply) {
			r = -errno;
			goto out;
		}
		if (res && ht_worker_pid(res) > 0) {
			pids[i] = ht_worker_pid(res);
			ht_track_pid(pids[i]);
			ids[i] = strdup(json_string_value(json_object_get(res, "id")) ?: "");
			ok++;
		} else {
			fprintf(stderr, "herd_test: spawn %d of %d failed: %s\n", i + 1, n,
			    ht_dump(reply));
		}
		json_decref(reply);
	}
	r = ok;
out:
	free(req_ids);
	return r;
}

struct ht_conn *
ht_hello_open(const char *socket, const char *role, json_t *extra, json_t **ret_reply)
{
	struct ht_conn *c = ht_conn_open(socket);
	json_t *reply;

	if (!c) {
		json_decref(extra);
		return NULL;
	}
	reply = ht_conn_hello(c, role, extra, ht_ms(5000));
	if (!ht_result(reply)) {
		if (ret_reply)
			*ret_reply = reply;
		else {
			fprintf(
			    stderr, "herd_test: hello as %s failed: %s\n", role, ht_dump(reply));
			json_decref(reply);
		}
		ht_conn_close(c);
		errno = EPROTO;
		return NULL;
	}
	json_decref(reply);
	return c;
}

json_t *
ht_worker_call(
    const char *socket, json_t *conn_init, const char *function, json_t *args, int timeout_ms)
{
	json_t *reply = NULL;
	struct ht_conn *c = ht_hello_open(
	    socket, "client", conn_init ? json_pack("{s:o}", "init", conn_init) : NULL, &reply);

	if (!c) {
		json_decref(args);
		return reply;
	}
	reply = ht_conn_call(c, function, args, timeout_ms);
	ht_conn_close(c);
	return reply;
}

json_t *
ht_conn_recv_except(struct ht_conn *c, const char *method, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		json_t *msg = ht_conn_recv(c, ht__remaining(deadline));
		const char *m = ht_str(msg, "method");

		if (!msg || !m || strcmp(m, method) != 0)
			return msg;
		json_decref(msg);
	}
}

json_t *
ht_conn_next_item(struct ht_conn *c, json_int_t id, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	json_t *msg, *params = NULL;

	while (!params) {
		msg = ht_conn_wait_method(c, "herd.item", ht__remaining(deadline));
		if (!msg)
			break;
		if (json_integer_value(json_object_get(json_object_get(msg, "params"), "id")) == id)
			params = json_incref(json_object_get(msg, "params"));
		else
			fprintf(stderr, "herd_test: dropped an item of another stream: %s\n",
			    ht_dump(msg));
		json_decref(msg);
	}
	return params;
}

bool
ht_conn_wait_log(struct ht_conn *c, json_int_t id, const char *text, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		json_t *p = ht_conn_next_item(c, id, ht__remaining(deadline));
		const char *m = ht_str(json_object_get(p, "item"), "message");
		bool found = m && strstr(m, text);

		json_decref(p);
		if (!p || found)
			return found;
	}
}

int
ht_conn_answer_hello(struct ht_conn *c, json_t *result, int timeout_ms)
{
	json_t *hello = ht_conn_recv(c, timeout_ms);
	const char *m = ht_str(hello, "method");
	json_t *reply;
	int r;

	if (!m || strcmp(m, "hello") != 0) {
		json_decref(hello);
		json_decref(result);
		return -EPROTO;
	}
	reply = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", json_object_get(hello, "id"),
	    "result", result);
	r = reply ? ht_conn_send(c, reply) : -ENOMEM;
	json_decref(reply);
	json_decref(hello);
	return r;
}

int
ht_herdd_children_gone(const struct ht_daemon *d, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	pid_t kids[256];
	int n, i;

	n = ht_list_children(d->pid, kids, 256);
	for (i = 0; i < n && i < 256; i++) {
		if (ht_wait_pid_reaped(kids[i], ht__remaining(deadline)) < 0)
			break;
	}
	n = ht_list_children(d->pid, kids, 256);
	if (n <= 0)
		return 0;
	for (i = 0; i < n && i < 256; i++)
		fprintf(stderr, "herd_test: herdd %d still has child %d (state %c)\n", (int)d->pid,
		    (int)kids[i], ht_pid_state(kids[i]) ?: '?');
	return -ETIMEDOUT;
}

/* The worker of a list reply matching name/state or id, as a new reference. */
static json_t *
pick_worker(const json_t *reply, const char *name, const char *state, const char *id)
{
	json_t *workers = json_object_get(ht_result(reply), "workers");
	json_t *w;
	size_t i;

	json_array_foreach(workers, i, w) {
		const char *wn = json_string_value(json_object_get(w, "name"));
		const char *ws = json_string_value(json_object_get(w, "state"));
		const char *wid = json_string_value(json_object_get(w, "id"));

		if (name && (!wn || strcmp(wn, name) != 0))
			continue;
		if (state && (!ws || strcmp(ws, state) != 0))
			continue;
		if (id && (!wid || strcmp(wid, id) != 0))
			continue;
		return json_incref(w);
	}
	return NULL;
}

json_t *
ht_herdd_wait_listed(struct ht_conn *c, const char *name, const char *state, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		json_t *reply =
		    ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht__remaining(deadline));
		json_t *w = pick_worker(reply, name, state, NULL);
		struct timespec gap = { 0, 5 * 1000000 };

		if (!reply)
			return NULL;
		json_decref(reply);
		if (w)
			return w;
		if (ht_now_ms() >= deadline)
			return NULL;
		nanosleep(&gap, NULL);
	}
}

json_t *
ht_herdd_find(struct ht_conn *c, const char *id)
{
	json_t *reply = ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht_ms(5000));
	json_t *w = pick_worker(reply, NULL, NULL, id);

	json_decref(reply);
	return w;
}
