/* SPDX-License-Identifier: MIT */
/*
 * What a first user tripped over (issue 12), each point checked against a real
 * herdd and real workers: defaults that surprised (the working directory, the
 * environment, the worker limits, nested masters) and names and numbers that
 * misled (master_closed against killed_orphan, an operator's kill, CPU time,
 * and herdctl's stats, call, logs, watch, list and no-daemon message).
 *
 * This program is also its own worker, through herd_start_app(): herdd starts
 * it with HERD_CHANNEL_FD set and it serves first_user_type instead of running
 * the tests. A worker spawned with init {"depth": N > 0} is a master itself:
 * it reaches herdd with herd_master_connect(NULL) and spawns one more level.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include <herd/herd-ev.h>
#include <herd/herd.h>

#include "ht-check.h"
#include "ht-example.h"
#include "worker-args.h"

#define NEST_DEPTH    3 /* levels below the top worker */
#define NEST_GRACE_MS 2000

/* ---- this program as a worker ---- */

/* A nested master's session and the worker it spawned, kept while it serves. */
struct nest {
	herd_master *m;
	herd_worker *child;
};

static int
nest_init(json_t *arg, void **ret_state, char **reterr)
{
	json_int_t depth = json_integer_value(json_object_get(arg, "depth"));
	struct nest *n;
	herd_error *err = NULL;
	json_t *opts;
	int r;

	*ret_state = NULL;
	if (depth <= 0)
		return 0;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	/* No path: HERD_SOCKET, which herdd set, leads back to it. */
	r = herd_master_connect(NULL, NULL, &n->m, &err);
	if (r < 0) {
		free(n);
		r = herd_init_fail(reterr, "connect: %s", err ? herd_error_message(err) : "?");
		herd_error_unref(err);
		return r;
	}
	opts = herd_spawn_opts_new(herd_self_path(), json_pack("{s:I}", "depth", depth - 1));
	json_object_set_new(opts, "name", json_sprintf("nest%d", (int)(depth - 1)));
	r = herd_master_spawn(n->m, opts, 0, &n->child);
	json_decref(opts);
	if (r < 0) {
		r = herd_init_fail(
		    reterr, "spawn: %s", herd_error_message(herd_master_last_error(n->m)));
		herd_master_unref(n->m);
		free(n);
		return r;
	}
	/*
	 * The session stays open and on the worker's loop, as the user's nested
	 * masters had it: such a worker does not end on SIGTERM by itself, so
	 * only herdd's SIGKILL ends each level.
	 */
	herd_master_attach_ev(n->m, ev_default_loop(0));
	*ret_state = n;
	return 0;
}

static void
fn_cwd(herd_request *req, json_t *arg)
{
	char *cwd = getcwd(NULL, 0);

	herd_request_reply(req, json_pack("{s:s?}", "cwd", cwd));
	free(cwd);
}

static void
fn_getenv(herd_request *req, json_t *arg)
{
	const char *name = json_string_value(json_object_get(arg, "name"));

	herd_request_reply(req, json_pack("{s:s?}", "value", name ? getenv(name) : NULL));
}

/* Reads a (relative) path: what a start_app master hands its workers. */
static void
fn_read(herd_request *req, json_t *arg)
{
	const char *path = json_string_value(json_object_get(arg, "path"));
	char buf[256] = "";
	ssize_t n;
	int fd;

	fd = path ? open(path, O_RDONLY | O_CLOEXEC) : -1;
	if (fd < 0) {
		herd_request_fail(req, "open %s: %s", path ? path : "(null)", strerror(errno));
		return;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	herd_request_reply(req, json_pack("{s:s}", "text", buf));
}

static const struct herd_worker_type first_user_type = {
	.name = "first-user",
	.functions = WA_FUNCTIONS({ "cwd", HERD_KIND_CALL, fn_cwd },
	    { "getenv", HERD_KIND_CALL, fn_getenv }, { "read", HERD_KIND_CALL, fn_read }),
	.init_worker = nest_init,
};

/* main()'s first act: a worker serves and exits here; the tests run otherwise. */
static void
start_as_worker(void)
{
	static char name[] = "test-first-user";
	static char *argv[] = { name, NULL };

	herd_start_app(&first_user_type, 1, argv);
}

/* ---- helpers ---- */

static herd_master *
master_open(const struct ht_daemon *d)
{
	herd_error *err = NULL;
	herd_master *m = NULL;
	int r = herd_master_connect(d->socket, NULL, &m, &err);

	ck_assert_msg(r == 0, "herd_master_connect: %s", err ? herd_error_message(err) : "?");
	return m;
}

/* Spawns this program (start_app) with opts' members (stolen, may be NULL) added. */
static herd_worker *
spawn_self(herd_master *m, json_t *extra)
{
	json_t *opts = herd_spawn_opts_new(herd_self_path(), NULL);

	if (extra && opts)
		json_object_update(opts, extra);
	json_decref(extra);
	return ht_herd_spawn_opts_ok(m, opts);
}

/* Calls function(args) (stolen) on w and returns the result (new reference). */
static json_t *
call(herd_worker *w, const char *function, json_t *args)
{
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	json_t *res = NULL;
	int r;

	r = herd_worker_connect(w, NULL, &conn, &err);
	ck_assert_msg(r == 0, "connect: %s", err ? herd_error_message(err) : "?");
	r = herd_call(conn, function, args, 0, &res);
	ck_assert_msg(r == 0, "%s: %s", function, herd_error_message(herd_conn_last_error(conn)));
	json_decref(args);
	herd_conn_unref(conn);
	return res;
}

static const char *
getenv_in(herd_worker *w, const char *name)
{
	static char value[512];
	json_t *res = call(w, "getenv", json_pack("{s:s}", "name", name));
	const char *v = ht_str(res, "value");

	snprintf(value, sizeof(value), "%s", v ? v : "(unset)");
	json_decref(res);
	return value;
}

/* Waits until worker id has exited, then returns its record (new reference). */
static json_t *
exited_record(const struct ht_daemon *d, const char *id, pid_t pid)
{
	struct ht_conn *c = ht_herdd_open(d, "inspector", "test");
	json_t *w;

	ck_assert_ptr_nonnull(c);
	/* Subscribed before looking, so the reap's event cannot slip in between. */
	ht_expect(c, "subscribe", json_pack("{s:b}", "all", 1), NULL);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(10000)), 0);
	w = ht_herdd_find(c, id);
	ck_assert_msg(w, "no record of %s", id);
	/* The reap follows the exit within one loop turn: its event says when. */
	while (strcmp(ht_str(w, "state"), "exited") != 0) {
		json_t *ev = ht_conn_wait_method(c, "event", ht_ms(10000));

		ck_assert_msg(ev, "%s did not end", id);
		json_decref(ev);
		json_decref(w);
		w = ht_herdd_find(c, id);
		ck_assert_msg(w, "no record of %s", id);
	}
	ht_conn_close(c);
	return w;
}

static json_int_t
stats_field(const struct ht_daemon *d, const char *group, const char *key)
{
	struct ht_conn *c = ht_herdd_open(d, "inspector", "stats");
	json_t *r, *o;
	json_int_t v;

	ck_assert_ptr_nonnull(c);
	r = ht_conn_call(c, "stats", NULL, ht_ms(5000));
	o = ht_assert_result(r);
	if (group)
		o = json_object_get(o, group);
	v = json_integer_value(json_object_get(o, key));
	json_decref(r);
	ht_conn_close(c);
	return v;
}

/* ---- defaults that surprise ---- */

/* A start_app worker runs where its master runs, so relative paths work. */
START_TEST(test_start_app_inherits_cwd)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	char dir[128], path[192], *old = getcwd(NULL, 0);
	herd_master *m;
	herd_worker *w, *w2;
	json_t *res;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/data.txt", dir);
	ck_assert_int_eq(ht_write_file(path, 0, "relative works"), 0);
	ck_assert_int_eq(chdir(dir), 0);
	m = master_open(d);

	w = spawn_self(m, NULL);
	res = call(w, "cwd", json_object());
	ck_assert_str_eq(ht_str(res, "cwd"), dir);
	json_decref(res);
	res = call(w, "read", json_pack("{s:s}", "path", "data.txt"));
	ck_assert_str_eq(ht_str(res, "text"), "relative works");
	json_decref(res);

	/* Opting out leaves herdd's default, and an explicit cwd wins. */
	w2 = spawn_self(m, json_pack("{s:b}", "inherit_cwd", 0));
	res = call(w2, "cwd", json_object());
	ck_assert_str_eq(ht_str(res, "cwd"), "/");
	json_decref(res);
	herd_worker_unref(w2);
	w2 = spawn_self(m, json_pack("{s:s}", "cwd", "/tmp"));
	res = call(w2, "cwd", json_object());
	ck_assert_str_eq(ht_str(res, "cwd"), "/tmp");
	json_decref(res);

	ck_assert_int_eq(chdir(old), 0);
	free(old);
	herd_worker_unref(w2);
	herd_worker_unref(w);
	herd_master_unref(m);
	ht_daemon_stop_ok(d);
}
END_TEST

/* inherit_env: the default list, a pattern, everything but HERD_*, nothing. */
START_TEST(test_inherit_env)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	herd_master *m;
	herd_worker *w;

	ck_assert_int_eq(setenv("FIRST_USER_SET", "by the master", 1), 0);
	ck_assert_int_eq(setenv("LC_FIRST_USER", "lc", 1), 0);
	ck_assert_int_eq(setenv("HERD_FIRST_USER", "reserved", 1), 0);
	m = master_open(d);

	/* The documented default: PATH, LANG, TZ and LC_* only. */
	w = spawn_self(m, NULL);
	ck_assert_str_eq(getenv_in(w, "FIRST_USER_SET"), "(unset)");
	ck_assert_str_eq(getenv_in(w, "LC_FIRST_USER"), "lc");
	ck_assert_str_eq(getenv_in(w, "PATH"), getenv("PATH"));
	herd_worker_unref(w);

	w = spawn_self(m, json_pack("{s:[s]}", "inherit_env", "FIRST_USER_*"));
	ck_assert_str_eq(getenv_in(w, "FIRST_USER_SET"), "by the master");
	ck_assert_str_eq(getenv_in(w, "LC_FIRST_USER"), "(unset)");
	herd_worker_unref(w);

	/* Everything but HERD_*: the HERD_* a worker sees are herdd's, never the master's. */
	w = spawn_self(m,
	    json_pack("{s:b, s:{s:s}}", "inherit_env", 1, "env", "FIRST_USER_SET",
	        "the caller's env wins"));
	ck_assert_str_eq(getenv_in(w, "FIRST_USER_SET"), "the caller's env wins");
	ck_assert_str_eq(getenv_in(w, "LC_FIRST_USER"), "lc");
	ck_assert_str_eq(getenv_in(w, "HERD_FIRST_USER"), "(unset)");
	ck_assert_str_eq(getenv_in(w, "HERD_SOCKET"), d->socket);
	herd_worker_unref(w);

	w = spawn_self(m, json_pack("{s:b}", "inherit_env", 0));
	ck_assert_str_eq(getenv_in(w, "LC_FIRST_USER"), "(unset)");
	ck_assert_str_eq(getenv_in(w, "PATH"), "/usr/local/bin:/usr/bin:/bin");
	herd_worker_unref(w);

	unsetenv("FIRST_USER_SET");
	unsetenv("LC_FIRST_USER");
	unsetenv("HERD_FIRST_USER");
	herd_master_unref(m);
	ht_daemon_stop_ok(d);
}
END_TEST

/* The worker limits fit the machine: 80 spawns, 20 at a time, from one master. */
START_TEST(test_default_limits)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	const char *argv[] = { ht_env_path("HERDD"), "--help", NULL };
	struct ht_conn *c = ht_herdd_open(d, "master", "stress");
	json_t *params = ht_testworker_params(NULL);
	pid_t pids[20];
	char *ids[20], *out = NULL;
	int round, i;

	ck_assert_ptr_nonnull(c);
	for (round = 0; round < 4; round++) {
		ck_assert_int_eq(ht_spawn_many(c, 20, params, pids, ids, ht_ms(60000)), 20);
		for (i = 0; i < 20; i++)
			free(ids[i]);
	}
	ck_assert_int_eq(stats_field(d, "limits_hit", "workers_per_master"), 0);
	ck_assert_int_eq(stats_field(d, "workers", "ready"), 80);
	/* --help says how the defaults are sized. */
	ck_assert_int_eq(ht_run(argv, &out, NULL, ht_ms(5000)), 0);
	ck_assert_msg(strstr(out, "sized to the machine") && strstr(out, "pid_max") &&
	        strstr(out, "open-file hard limit"),
	    "%s", out);
	free(out);
	json_decref(params);
	ht_conn_close(c);
	ht_daemon_stop_ok(d);
}
END_TEST

/* The live workers' records from list (new reference). */
static json_t *
live_workers(const struct ht_daemon *d)
{
	struct ht_conn *c = ht_herdd_open(d, "inspector", "test");
	json_t *r, *a;

	ck_assert_ptr_nonnull(c);
	r = ht_conn_call(c, "list", NULL, ht_ms(5000));
	a = json_incref(json_object_get(ht_assert_result(r), "workers"));
	json_decref(r);
	ht_conn_close(c);
	return a;
}

/*
 * Nested masters find herdd through HERD_SOCKET, and stopping the top stops
 * every level at once: all gone within one grace period (plus a margin), not
 * one grace period per level.
 */
START_TEST(test_nested_masters)
{
	char grace[16];
	const char *args[] = { "--grace-ms", grace, NULL };
	struct ht_daemon *d;
	pid_t pids[NEST_DEPTH + 1];
	json_t *ws, *w, *rec;
	herd_master *m;
	herd_worker *top;
	int64_t t0, took;
	size_t i, j;

	snprintf(grace, sizeof(grace), "%d", NEST_GRACE_MS);
	d = ht_daemon_start_ok(args);
	m = master_open(d);
	top =
	    spawn_self(m, json_pack("{s:{s:i}, s:s}", "init", "depth", NEST_DEPTH, "name", "top"));

	ws = live_workers(d);
	ck_assert_int_eq(json_array_size(ws), NEST_DEPTH + 1);
	/* Each level is owned by the level above: its master session came from that worker. */
	json_array_foreach(ws, i, w) {
		pids[i] = ht_worker_pid(w);
		ht_track_pid(pids[i]);
		if (i == 0)
			continue;
		ck_assert_int_eq(
		    json_integer_value(json_object_get(json_object_get(w, "owner"), "pid")),
		    pids[i - 1]);
	}

	t0 = ht_now_ms();
	ck_assert_int_eq(herd_master_shutdown(m, herd_worker_id(top), NEST_GRACE_MS, NULL), 0);
	for (i = 0; i <= NEST_DEPTH; i++)
		ck_assert_int_eq(
		    ht_wait_pid_gone(pids[i], ht_ms(NEST_GRACE_MS * (NEST_DEPTH + 2))), 0);
	took = ht_now_ms() - t0;
	ck_assert_msg(took < ht_ms(NEST_GRACE_MS + 1500),
	    "%d levels took %lld ms to stop (grace %d ms each)", NEST_DEPTH + 1, (long long)took,
	    NEST_GRACE_MS);
	json_array_foreach(ws, j, w) {
		rec = exited_record(d, ht_str(w, "id"), pids[j]);
		ck_assert_str_eq(ht_str(rec, "reason"), j == 0 ? "shutdown" : "master_closed");
		json_decref(rec);
	}
	ck_assert_int_eq(stats_field(d, "failures", "killed_orphan"), 0);
	json_decref(ws);
	herd_worker_unref(top);
	herd_master_unref(m);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(5000)), 0);
	ht_daemon_stop_ok(d);
}
END_TEST

/* ---- names and numbers that mislead ---- */

/* A master in a child process that spawns, reports the worker's pid, then waits to die. */
struct vanishing {
	const char *socket;
	int fd;
};

static int
vanishing_master(void *arg)
{
	struct vanishing *v = arg;
	herd_error *err = NULL;
	herd_master *m = NULL;
	herd_worker *w = NULL;
	json_t *opts;
	pid_t pid;

	if (herd_master_connect(v->socket, NULL, &m, &err) < 0)
		return 1;
	opts = herd_spawn_opts_new(ht_env_path("HERD_TESTWORKER"), NULL);
	if (herd_master_spawn(m, opts, 0, &w) < 0)
		return 2;
	pid = herd_worker_pid(w);
	if (write(v->fd, &pid, sizeof(pid)) != sizeof(pid))
		return 3;
	for (;;)
		pause();
}

/* A master that closed is normal (master_closed); one that vanished is a failure. */
START_TEST(test_master_closed_or_vanished)
{
	static const char *const args[] = { "--grace-ms", "500", NULL };
	struct ht_daemon *d = ht_daemon_start_ok(args);
	struct vanishing v = { d->socket, -1 };
	herd_master *m = master_open(d);
	herd_worker *w = NULL;
	json_t *rec;
	char id[32];
	pid_t pid, child;
	int fds[2];

	w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	pid = herd_worker_pid(w);
	snprintf(id, sizeof(id), "%s", herd_worker_id(w));
	herd_worker_unref(w);
	ck_assert_int_eq(herd_master_close(m), 0);
	herd_master_unref(m);
	rec = exited_record(d, id, pid);
	ck_assert_str_eq(ht_str(rec, "reason"), "master_closed");
	json_decref(rec);
	ck_assert_int_eq(stats_field(d, "failures", "killed_orphan"), 0);
	ck_assert_int_eq(stats_field(d, "failures", "master_closed"), 0);

	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	v.fd = fds[1];
	child = ht_fork_fn(vanishing_master, &v, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(child, 0);
	close(fds[1]);
	ck_assert_int_eq(ht_read_pids(fds[0], &pid, 1, ht_ms(20000)), 1);
	close(fds[0]);
	ht_track_pid(pid);
	ck_assert_int_eq(kill(child, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_child(child, ht_ms(5000), NULL), 0);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(5000)), 0);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(5000)), 0);
	ck_assert_int_eq(stats_field(d, "failures", "killed_orphan"), 1);
	ht_daemon_stop_ok(d);
}
END_TEST

START_TEST(test_operator_kill)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	herd_master *m = master_open(d);
	struct ht_failures seen = { 0 };
	herd_worker *w = NULL;
	struct ht_out o;
	json_t *rec;

	herd_master_on_failure(m, ht_on_failure, &seen);
	w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	o = ht_herdctl(d->socket, "kill", herd_worker_id(w), "KILL", NULL);
	ck_assert_msg(o.code == 0, "kill: %s", o.err);
	ht_out_free(&o);
	ht_wait_failure(m, &seen, ht_ms(5000));
	ck_assert_int_eq(seen.n, 1);
	ck_assert_str_eq(seen.event, "killed");
	ck_assert_msg(strstr(seen.message, "SIGKILL"), "message: %s", seen.message);
	rec = exited_record(d, herd_worker_id(w), herd_worker_pid(w));
	ck_assert_str_eq(ht_str(rec, "reason"), "killed");
	ck_assert_str_eq(ht_str(rec, "signal"), "SIGKILL");
	json_decref(rec);
	herd_worker_unref(w);
	herd_master_unref(m);
	ht_daemon_stop_ok(d);
}
END_TEST

/* A worker that lived well under a second but worked has its CPU time recorded. */
START_TEST(test_cpu_of_short_worker)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	struct ht_conn *c = ht_herdd_open(d, "master", "cpu");
	json_t *r, *rec;
	char id[32], socket[256];

	ck_assert_ptr_nonnull(c);
	r = ht_spawn(c, ht_testworker_params(NULL), ht_ms(10000));
	snprintf(id, sizeof(id), "%s", ht_str(ht_assert_result(r), "id"));
	snprintf(socket, sizeof(socket), "%s", ht_str(ht_result(r), "socket"));
	json_decref(r);
	r = ht_worker_call(socket, NULL, "spin", json_pack("{s:i}", "ms", 300), ht_ms(10000));
	ht_assert_result(r);
	json_decref(r);
	r = ht_conn_call(c, "shutdown", json_pack("{s:s}", "id", id), ht_ms(10000));
	rec = ht_assert_result(r);
	/* Well under 300: the spin is timed by the clock, and the machine may be busy. */
	ck_assert_msg(json_integer_value(json_object_get(rec, "cpu_ms")) >= 30,
	    "a 300 ms spin recorded as %s", ht_dump(json_object_get(rec, "cpu_ms")));
	json_decref(r);
	ht_conn_close(c);
	ht_daemon_stop_ok(d);
}
END_TEST

/* herdctl: stats, call on a stream, logs of a silent worker, list's owner, no herdd. */
START_TEST(test_herdctl_reports)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	herd_master *m = master_open(d);
	herd_worker *w = NULL;
	struct ht_out o;
	json_t *res;
	char owner[32], nosock[200];

	/* herdctl looks as an inspector: the one master is this test. */
	o = ht_herdctl(d->socket, "--json", "stats", NULL);
	ck_assert_int_eq(o.code, 0);
	res = json_loads(o.out, 0, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "masters")), 1);
	json_decref(res);
	ht_out_free(&o);

	w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);

	/* A pipe function's items come out as JSON lines, then its result. */
	o = ht_herdctl(d->socket, "call", herd_worker_id(w), "count", "{\"n\":3}", NULL);
	ck_assert_msg(o.code == 0, "call: %s", o.err);
	ck_assert_msg(
	    !strncmp(o.out, "0\n1\n2\n", 6) && strstr(o.out, "\"count\": 3"), "call: %s", o.out);
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "logs", herd_worker_id(w), NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_str_eq(o.out, "");
	ck_assert_msg(strstr(o.err, "has written nothing to its stderr"), "stderr: %s", o.err);
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "list", NULL);
	ck_assert_int_eq(o.code, 0);
	snprintf(owner, sizeof(owner), " %d ", (int)getpid());
	ck_assert_msg(strstr(o.out, "OWNER") && strstr(o.out, owner), "list: %s", o.out);
	ht_out_free(&o);

	snprintf(nosock, sizeof(nosock), "%s/nobody.sock", d->dir);
	o = ht_herdctl(nosock, "inspect", "w13", NULL);
	ck_assert_int_eq(o.code, 1);
	ck_assert_msg(strstr(o.err, "no herdd runs at") && strstr(o.err, nosock) &&
	        strstr(o.err, "herdd --socket"),
	    "stderr: %s", o.err);
	ht_out_free(&o);

	herd_worker_unref(w);
	herd_master_unref(m);
	ht_daemon_stop_ok(d);
}
END_TEST

/* herdctl watch: no reason repeated, no stderr tail for a normal stop, one for a crash. */
START_TEST(test_herdctl_watch)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	const char *argv[] = { ht_env_path("HERDCTL"), "--socket", d->socket, "watch", NULL };
	struct ht_conn *c = ht_herdd_open(d, "master", "watched");
	struct ht_lines *l = calloc(1, sizeof(*l));
	const char *const names[] = { "calm", "noisy" };
	char sock[2][256], id[2][32];
	json_t *r;
	pid_t watch;
	int n, i;

	ck_assert_ptr_nonnull(c);
	watch = ht_start_reader(argv, &l->fd);
	ck_assert_int_gt(watch, 0);
	/* watch has subscribed once it reports an event: spawn probes until one shows. */
	do {
		r = ht_spawn(
		    c, ht_testworker_params(json_pack("{s:s}", "name", "probe")), ht_ms(10000));
		ht_assert_result(r);
		json_decref(r);
		n = ht_read_line(l, ht_ms(300));
		ck_assert(n > 0 || n == -ETIMEDOUT);
	} while (n < 0);
	for (i = 0; i < 2; i++) {
		r = ht_spawn(
		    c, ht_testworker_params(json_pack("{s:s}", "name", names[i])), ht_ms(10000));
		snprintf(id[i], sizeof(id[i]), "%s", ht_str(ht_assert_result(r), "id"));
		snprintf(sock[i], sizeof(sock[i]), "%s", ht_str(ht_result(r), "socket"));
		json_decref(r);
		json_decref(ht_worker_call(sock[i], NULL, "stderr",
		    json_pack("{s:s}", "text", "last words"), ht_ms(5000)));
	}
	do {
		n = ht_read_line(l, ht_ms(5000));
		ck_assert_int_gt(n, 0);
	} while (!strstr(l->buf, "ready") || !strstr(l->buf, "noisy"));

	r = ht_conn_call(c, "shutdown", json_pack("{s:s}", "id", id[0]), ht_ms(10000));
	json_decref(r);
	json_decref(ht_worker_call(sock[1], NULL, "crash", json_object(), ht_ms(5000)));

	ck_assert_int_gt(ht_read_line(l, ht_ms(5000)), 0);
	ck_assert_msg(strstr(l->buf, "stopped") && strstr(l->buf, "calm") &&
	        strstr(l->buf, "shutdown") && !strstr(strstr(l->buf, "stopped") + 7, "stopped"),
	    "%s", l->buf);
	/* The next line is the crash, not the calm worker's tail. */
	ck_assert_int_gt(ht_read_line(l, ht_ms(5000)), 0);
	ck_assert_msg(strstr(l->buf, "crashed") && strstr(l->buf, "noisy") &&
	        !strstr(strstr(l->buf, "crashed") + 7, "crashed"),
	    "%s", l->buf);
	ck_assert_int_gt(ht_read_line(l, ht_ms(5000)), 0);
	ck_assert_msg(strstr(l->buf, "| last words"), "no tail after the crash: %s", l->buf);

	kill(watch, SIGTERM);
	ck_assert_int_eq(ht_wait_child(watch, ht_ms(2000), NULL), 0);
	close(l->fd);
	free(l);
	ht_conn_close(c);
	ht_daemon_stop_ok(d);
}
END_TEST

int
main(void)
{
	const struct ht_case cases[] = { { .name = "first-user",
	    .timeout_s = 90,
	    .tests = { test_start_app_inherits_cwd, test_inherit_env, test_default_limits,
		test_nested_masters, test_master_closed_or_vanished, test_operator_kill,
		test_cpu_of_short_worker, test_herdctl_reports, test_herdctl_watch } } };

	/* The program is its own worker (herd_start_app): that side never reaches Check. */
	start_as_worker();
	return ht_run_cases("first-user", cases, sizeof(cases) / sizeof(cases[0]));
}
