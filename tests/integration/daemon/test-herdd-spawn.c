/* SPDX-License-Identifier: MIT */
/*
 * spawn as herdd implements it, over raw JSON lines: every distinct failure
 * (exec, chdir, exit or crash before ready, spawn timeout) with its error
 * data and a record left behind, output to a FIFO, the environment and
 * identity a worker gets, a real worker's ready/list/logs/shutdown round trip
 * with its socket file, limits, duplicate pending ids, and a detached
 * grandchild that must not outlive its worker.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ht-check.h"

/* The record of the only worker named name, from list {all: true} (new reference). */
static json_t *
record(struct ht_conn *c, const char *name)
{
	json_t *r = ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht_ms(5000));
	json_t *w, *found = NULL;
	size_t i;

	json_array_foreach(json_object_get(ht_assert_result(r), "workers"), i, w) {
		if (!strcmp(ht_str(w, "name"), name))
			found = json_incref(w);
	}
	json_decref(r);
	ck_assert_msg(found, "no record named %s", name);
	return found;
}

START_TEST(test_exec_failures)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_master;
	char noexec[192];
	json_t *r, *rec;
	int fd;

	r = ht_spawn(
	    c, json_pack("{s:s, s:s}", "path", "/nonexistent/worker", "name", "gone"), ht_ms(5000));
	ht_assert_error(r, "spawn_failed");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "errno")), ENOENT);
	ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), "exec");
	ck_assert_str_eq(
	    ht_error_message(r), "exec /nonexistent/worker: No such file or directory");
	json_decref(r);
	rec = record(c, "gone");
	ck_assert_str_eq(ht_str(rec, "state"), "exited");
	ck_assert_str_eq(ht_str(rec, "reason"), "spawn_failed");
	ck_assert(!ht_pid_alive(ht_worker_pid(rec)));
	json_decref(rec);

	/* A file without the execute bit. */
	snprintf(noexec, sizeof(noexec), "%s/not-executable", d->dir);
	fd = open(noexec, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	r = ht_spawn(c, json_pack("{s:s}", "path", noexec), ht_ms(5000));
	ht_assert_error(r, "spawn_failed");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "errno")), EACCES);
	json_decref(r);

	/* A working directory that does not exist. */
	r = ht_spawn(c, json_pack("{s:s, s:s}", "path", "/bin/true", "cwd", "/nonexistent-dir"),
	    ht_ms(5000));
	ht_assert_error(r, "spawn_failed");
	ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), "chdir");
	json_decref(r);

	/* stdout to a file in a directory that does not exist. */
	r = ht_spawn(c,
	    json_pack("{s:s, s:{s:s}}", "path", "/bin/true", "stdout", "file", "/nonexistent/out"),
	    ht_ms(5000));
	ht_assert_error(r, "spawn_failed");
	ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), "stdout");
	json_decref(r);

	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(5000)), 0);
}
END_TEST

/*
 * stdout to a FIFO. herdd waits while its child prepares the exec, so the
 * child must not block: a FIFO nobody reads fails at once with ENXIO. One
 * with a reader gets the output, and the worker gets it in blocking mode.
 */
START_TEST(test_fifo_output)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_master;
	struct ht_lines *l = calloc(1, sizeof(*l));
	unsigned long flags = 0;
	char fifo[192];
	json_t *r;

	ck_assert_ptr_nonnull(l);
	snprintf(fifo, sizeof(fifo), "%s/out.fifo", d->dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	r = ht_spawn(c, json_pack("{s:s, s:{s:s}}", "path", "/bin/true", "stdout", "file", fifo),
	    ht_ms(5000));
	ht_assert_error(r, "spawn_failed");
	ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), "stdout");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "errno")), ENXIO);
	json_decref(r);

	l->fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	ck_assert_int_ge(l->fd, 0);
	r = ht_spawn(c,
	    ht_sh_params(
	        "grep ^flags: /proc/self/fdinfo/1", json_pack("{s:{s:s}}", "stdout", "file", fifo)),
	    ht_ms(5000));
	ht_assert_error(r, "worker_exited");
	json_decref(r);
	ck_assert_int_gt(ht_read_line(l, ht_ms(5000)), 0);
	ck_assert_int_eq(sscanf(l->buf, "flags: %lo", &flags), 1);
	ck_assert_msg(!(flags & O_NONBLOCK), "fd 1 flags %lo", flags);
	close(l->fd);
	free(l);
}
END_TEST

/*
 * A worker gets fds 0-3 and nothing else of herdd's, however many herdd holds:
 * the child shares herdd's fd table until it unshares it (spawn.c).
 */
START_TEST(test_worker_gets_only_its_fds)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_master, *extra[16];
	struct ht_lines *l = calloc(1, sizeof(*l));
	char fifo[192], seen[64] = "";
	json_t *r;
	int i, n;

	ck_assert_ptr_nonnull(l);
	/* Connections make herdd hold fds above the ones a spawn passes on. */
	for (i = 0; i < 16; i++)
		ck_assert_ptr_nonnull(extra[i] = ht_herdd_open(d, "inspector", NULL));
	snprintf(fifo, sizeof(fifo), "%s/fds.fifo", d->dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	l->fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	ck_assert_int_ge(l->fd, 0);
	/* ls itself opens the directory it lists: 4 is its own. */
	r = ht_spawn(c,
	    ht_sh_params("exec ls /proc/self/fd", json_pack("{s:{s:s}}", "stdout", "file", fifo)),
	    ht_ms(5000));
	ht_assert_error(r, "worker_exited");
	json_decref(r);
	while ((n = ht_read_line(l, ht_ms(5000))) > 0) {
		ck_assert_uint_lt(strlen(seen) + (size_t)n + 2, sizeof(seen));
		strcat(seen, l->buf);
		strcat(seen, " ");
	}
	ck_assert_int_eq(n, -EPIPE);
	ck_assert_str_eq(seen, "0 1 2 3 4 ");
	close(l->fd);
	free(l);
	for (i = 0; i < 16; i++)
		ht_conn_close(extra[i]);
}
END_TEST

START_TEST(test_exit_and_crash_before_ready)
{
	struct ht_conn *c = ht_master;
	json_t *r, *ev;

	r = ht_spawn(c,
	    ht_sh_params("echo about to leave >&2; exit 3", json_pack("{s:s}", "name", "leaver")),
	    ht_ms(5000));
	ht_assert_error(r, "worker_exited");
	ck_assert_str_eq(ht_str(ht_error_data(r), "reason"), "exited");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "exit_code")), 3);
	ck_assert_str_eq(
	    json_string_value(json_array_get(json_object_get(ht_error_data(r), "stderr_tail"), 0)),
	    "about to leave");
	json_decref(r);
	ev = ht_wait_event_ok(c, "exited", NULL, ht_ms(5000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "name"), "leaver");
	json_decref(ev);

	r = ht_spawn(
	    c, ht_sh_params("kill -SEGV $$", json_pack("{s:s}", "name", "crasher")), ht_ms(5000));
	ht_assert_error(r, "worker_exited");
	ck_assert_str_eq(ht_str(ht_error_data(r), "reason"), "crashed");
	ck_assert_str_eq(ht_str(ht_error_data(r), "signal"), "SIGSEGV");
	json_decref(r);
	ev = ht_wait_event_ok(c, "crashed", NULL, ht_ms(5000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "signal"), "SIGSEGV");
	json_decref(ev);
}
END_TEST

/* A program that never says ready, with a child that detaches (setsid, double fork). */
START_TEST(test_spawn_timeout_kills_the_tree)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_master;
	json_t *r, *ev, *rec;

	r = ht_spawn(c,
	    ht_sh_params("(setsid sleep 1000 &); sleep 1000 & exec sleep 1000",
	        json_pack("{s:s, s:i}", "name", "never-ready", "spawn_timeout_ms", 500)),
	    ht_ms(10000));
	ht_assert_error(r, "timeout");
	ck_assert_str_eq(ht_str(ht_error_data(r), "what"), "spawn");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "ms")), 500);
	json_decref(r);
	ev = ht_wait_event_ok(c, "spawn_timeout", NULL, ht_ms(5000));
	json_decref(ev);
	rec = record(c, "never-ready");
	ck_assert_str_eq(ht_str(rec, "reason"), "spawn_timeout");
	ck_assert_str_eq(ht_str(rec, "signal"), "SIGKILL");
	ck_assert(json_is_null(json_object_get(rec, "socket")));
	json_decref(rec);
	/* The worker, its child and the detached grandchild are all gone and reaped. */
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(5000)), 0);
}
END_TEST

/* What a worker process is given: environment, identity, stdin, fds. */
START_TEST(test_environment)
{
	struct ht_conn *c = ht_master;
	json_t *r, *lines, *line, *rec;
	bool path = false, chan = false, id = false, mine = false, notify = false, home = false;
	size_t i;

	setenv("NOTIFY_SOCKET", "/leak/test", 1);
	r = ht_spawn(c,
	    ht_sh_params("env; read x; echo stdin=$?",
	        json_pack("{s:s, s:s, s:{s:s}}", "name", "env", "stdout", "capture", "env",
	            "MY_VAR", "my value")),
	    ht_ms(5000));
	unsetenv("NOTIFY_SOCKET");
	ht_assert_error(r, "worker_exited");
	json_decref(r);
	rec = record(c, "env");
	r = ht_conn_call(c, "logs",
	    json_pack(
	        "{s:s, s:s, s:i}", "id", ht_str(rec, "id"), "stream", "stdout", "lines", 1000),
	    ht_ms(5000));
	json_decref(rec);
	lines = json_object_get(ht_assert_result(r), "lines");
	json_array_foreach(lines, i, line) {
		const char *l = json_string_value(line);

		path |= !strcmp(l, "PATH=/usr/local/bin:/usr/bin:/bin");
		chan |= !strcmp(l, "HERD_CHANNEL_FD=3");
		id |= !strncmp(l, "HERD_WORKER_ID=w", 16);
		mine |= !strcmp(l, "MY_VAR=my value");
		notify |= !strncmp(l, "NOTIFY_SOCKET=", 14);
		home |= !strncmp(l, "HOME=/", 6);
	}
	ck_assert_msg(
	    path && chan && id && mine && home && !notify, "environment: %s", ht_dump(lines));
	/* stdin is /dev/null: read hits EOF at once. */
	ck_assert_msg(strstr(ht_dump(lines), "stdin=1"), "stdin: %s", ht_dump(lines));
	json_decref(r);
}
END_TEST

/* As root, herdd runs a worker with the requester's credentials, files included. */
struct nobody_job {
	const char *socket;
	const char *out;
};

static int
spawn_as_nobody(void *arg)
{
	struct nobody_job *job = arg;
	struct ht_conn *c = ht_conn_open(job->socket);
	json_t *r;

	if (!c)
		return 2;
	r = ht_conn_hello(c, "master", NULL, 5000);
	if (!ht_result(r))
		return 3;
	json_decref(r);
	r = ht_conn_call(c, "spawn",
	    ht_sh_params("id -u", json_pack("{s:{s:s}}", "stdout", "file", job->out)), 10000);
	if (!ht_error_name(r) || strcmp(ht_error_name(r), "worker_exited") != 0)
		return 4;
	json_decref(r);
	ht_conn_close(c);
	return 0;
}

START_TEST(test_runs_as_requester)
{
	struct ht_daemon *d;
	struct nobody_job job;
	char out[256], buf[64];
	struct stat st;
	uid_t uid;
	gid_t gid;
	ssize_t n;
	int fd;

	if (getuid() != 0 || ht_nobody(&uid, &gid) < 0) {
		fprintf(stderr, "skipped: needs root and a nobody user\n");
		return;
	}
	d = ht_herdd;
	/* nobody may write in the directory but not in herdd's private socket dir. */
	snprintf(out, sizeof(out), "%s/out", d->dir);
	ck_assert_int_eq(chmod(d->dir, 0711), 0);
	/* A socket named with --socket is owner-only (PROTOCOL.md 4.1); share it by hand. */
	ck_assert_int_eq(chmod(d->socket, 0666), 0);
	ck_assert_int_eq(mkdir(out, 0777), 0);
	ck_assert_int_eq(chmod(out, 0777), 0);
	snprintf(out, sizeof(out), "%s/out/id", d->dir);
	job.socket = d->socket;
	job.out = out;
	ck_assert_int_eq(ht_run_as_nobody(spawn_as_nobody, &job, ht_ms(20000)), 0);
	ck_assert_int_eq(chmod(d->dir, 0700), 0);
	ck_assert_int_eq(stat(out, &st), 0);
	ck_assert_int_eq(st.st_uid, uid);
	/* umask 022 applies to the file the worker created. */
	ck_assert_int_eq(st.st_mode & 0777, 0644);
	fd = open(out, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_int_eq(atoi(buf), (int)uid);
}
END_TEST

START_TEST(test_real_worker_round_trip)
{
	struct ht_conn *c = ht_master;
	json_t *params = ht_testworker_params(json_pack("{s:s}", "name", "tw"));
	json_t *sp, *r, *res, *ev, *w;
	char sock[256], dir[256];
	struct stat st;
	pid_t pid;

	ck_assert(c && params);
	sp = ht_spawn(c, params, ht_ms(10000));
	res = ht_assert_result(sp);
	ck_assert_str_eq(ht_str(res, "name"), "tw");
	ck_assert(!strncmp(ht_str(res, "id"), "w", 1));
	pid = ht_worker_pid(res);
	ck_assert(ht_pid_alive(pid));
	snprintf(sock, sizeof(sock), "%s", ht_str(res, "socket"));
	snprintf(dir, sizeof(dir), "%s", sock);
	*strrchr(dir, '/') = '\0';
	ck_assert_int_eq(lstat(sock, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(lstat(dir, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0700);
	ck_assert_int_eq(st.st_uid, getuid());

	ev = ht_wait_event_ok(c, "ready", ht_str(res, "id"), ht_ms(5000));
	ck_assert(json_is_array(json_object_get(ev, "stderr_tail")));
	json_decref(ev);

	r = ht_conn_call(c, "inspect", json_pack("{s:s}", "id", ht_str(res, "id")), ht_ms(5000));
	w = ht_assert_result(r);
	ck_assert_str_eq(ht_str(w, "state"), "ready");
	ck_assert_int_eq(json_integer_value(json_object_get(w, "pgid")), pid);
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(w, "owner"), "pid")), getpid());
	ck_assert(json_is_integer(json_object_get(w, "rss_kib")));
	ck_assert(json_is_string(json_object_get(w, "started_at")));
	ck_assert_str_eq(ht_str(w, "shutdown_on"), "master_disconnect");
	/* The functions the worker declared when it became ready. */
	ck_assert_msg(strstr(ht_dump(json_object_get(w, "functions")),
	                  "{\"name\":\"echo\",\"kind\":\"call\"}"),
	    "functions: %s", ht_dump(json_object_get(w, "functions")));
	json_decref(r);

	r = ht_conn_call(c, "logs", json_pack("{s:s}", "id", ht_str(res, "id")), ht_ms(5000));
	ck_assert(json_is_array(json_object_get(ht_assert_result(r), "lines")));
	json_decref(r);
	/* stdout is not captured by default. */
	ht_expect(c, "logs", json_pack("{s:s, s:s}", "id", ht_str(res, "id"), "stream", "stdout"),
	    "invalid_params");

	r = ht_conn_call(c, "shutdown",
	    json_pack("{s:s, s:i}", "id", ht_str(res, "id"), "grace_ms", 2000), ht_ms(10000));
	w = ht_assert_result(r);
	ck_assert_str_eq(ht_str(w, "state"), "exited");
	ck_assert_str_eq(ht_str(w, "reason"), "shutdown");
	ck_assert(json_is_null(json_object_get(w, "socket")));
	json_decref(r);
	ck_assert(!ht_pid_alive(pid));
	ck_assert_msg(access(sock, F_OK) < 0, "the worker's socket file was left behind");
	ev = ht_wait_event_ok(c, "stopped", NULL, ht_ms(5000));
	json_decref(ev);
	/* An exited worker is not there to signal. */
	ht_expect(c, "kill", json_pack("{s:s}", "id", ht_str(res, "id")), "worker_not_found");
	json_decref(sp);
}
END_TEST

START_TEST(test_limits_and_duplicate_ids)
{
	static const char *const args[] = { "--max-workers-per-master", "1", NULL };
	struct ht_daemon *d;
	struct ht_conn *c;
	const char *dup = "{\"jsonrpc\":\"2.0\",\"id\":\"same\",\"method\":\"spawn\",\"params\":"
	                  "{\"path\":\"/bin/sleep\",\"argv\":[\"sleep\",\"100\"]}}\n";
	json_t *r;

	ht_fixture_restart(args);
	d = ht_herdd;
	c = ht_master;
	/* The first spawn stays pending (sleep never says ready)... */
	ck_assert_int_eq(ht_conn_send_raw(c, dup, strlen(dup)), 0);
	/* ...so the same id again is refused, and a second worker is over the limit. */
	ck_assert_int_eq(ht_conn_send_raw(c, dup, strlen(dup)), 0);
	r = ht_conn_recv(c, ht_ms(5000));
	ht_assert_error(r, "invalid_request");
	ck_assert_str_eq(ht_str(r, "id"), "same");
	json_decref(r);
	r = ht_conn_call(c, "spawn", json_pack("{s:s}", "path", "/bin/true"), ht_ms(5000));
	ht_assert_error(r, "limit_exceeded");
	ck_assert_str_eq(ht_str(ht_error_data(r), "limit"), "workers_per_master");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(r), "value")), 1);
	json_decref(r);
	/* The master leaves: its starting worker goes too. */
	ht_conn_close(c);
	ht_master = NULL;
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(10000)), 0);
}
END_TEST

HT_MAIN("herdd-spawn",
    HT_HERDD_CASE("spawn", 40, NULL, test_exec_failures, test_fifo_output,
        test_worker_gets_only_its_fds, test_exit_and_crash_before_ready,
        test_spawn_timeout_kills_the_tree, test_environment, test_runs_as_requester,
        test_real_worker_round_trip, test_limits_and_duplicate_ids))
