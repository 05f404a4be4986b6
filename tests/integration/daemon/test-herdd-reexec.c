/* SPDX-License-Identifier: MIT */
/*
 * Restarting herdd without losing a worker (issue 15): "reexec" (herdctl
 * reexec, SIGUSR2) replaces herdd's image by a fresh exec of its binary.
 * Workers keep their pid, id and incarnation, control connections stay open
 * (a request sent just before gets its reply), a master calling a worker
 * through several reexecs sees no failed call, events go on with the same
 * instance and the next seq, ownership holds (a master that goes away still
 * takes its workers with it), a worker that dies while herdd is between
 * images is still reaped and reported, and a new binary that cannot take over
 * (/bin/false, one that hangs, one gone before the exec, one that loses the
 * state) leaves herdd serving with every worker. herdd's fds are the same
 * before and after.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"

/* Reexecs while a master calls its worker. */
#define REEXECS 20

/* Sends reexec (params stolen, may be NULL) on c and returns the reply (new reference). */
static json_t *
reexec(struct ht_conn *c, json_t *params)
{
	json_t *r = ht_conn_call(c, "reexec", params ? params : json_object(), ht_ms(30000));

	ck_assert_msg(r, "no reply to reexec: %s", strerror(errno));
	return r;
}

/* A reexec that must succeed: herdd's pid stays, the generation is n. */
static void
reexec_ok(struct ht_conn *c, json_int_t n)
{
	json_t *r = reexec(c, NULL), *res = ht_assert_result(r);

	ck_assert_int_eq(json_integer_value(json_object_get(res, "pid")), ht_herdd->pid);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "generation")), n);
	ck_assert(json_is_false(json_object_get(res, "fell_back")));
	json_decref(r);
}

/* Spawns the test worker for m (shutdown_on as given, NULL: the default). */
static json_t *
spawn(struct ht_conn *m, const char *shutdown_on)
{
	return ht_spawn_ok(m,
	    ht_testworker_params(
	        shutdown_on ? json_pack("{s:s}", "shutdown_on", shutdown_on) : NULL));
}

/* The worker id is listed with this pid, incarnation 1 and state ready. */
static void
assert_listed(struct ht_conn *c, const char *id, pid_t pid)
{
	json_t *w = ht_herdd_find(c, id);

	ck_assert_msg(w, "worker %s not listed", id);
	ck_assert_int_eq(ht_worker_pid(w), pid);
	ck_assert_str_eq(ht_str(w, "state"), "ready");
	ck_assert_int_eq(json_integer_value(json_object_get(w, "incarnation")), 1);
	json_decref(w);
}

/* The worker at sock answers sum. */
static void
assert_serves(const char *sock)
{
	json_t *r = ht_worker_call(sock, NULL, "sum", json_pack("{s:i}", "n", 4), ht_ms(5000));

	ck_assert_int_eq(json_integer_value(ht_assert_result(r)), 6);
	json_decref(r);
}

/*
 * herdd holds want fds. A client that just closed (herdctl) may still hold
 * one until herdd reads its EOF: round trips on the master let herdd run
 * until then, within a deadline.
 */
static void
assert_fds(int want)
{
	int64_t deadline = ht_now_ms() + ht_ms(5000);
	int n;

	while ((n = ht_count_held_fds(ht_herdd->pid)) != want && ht_now_ms() < deadline)
		json_decref(ht_call_ok(ht_master, "ping", json_object()));
	ck_assert_int_eq(n, want);
}

/*
 * Workers, connections and fds survive: a ping sent right before the reexec
 * on the same connection is answered, a subscriber's stream goes on with the
 * same instance and the next seq, and herdd holds as many fds as before.
 */
START_TEST(test_workers_and_connections_survive)
{
	json_t *w1 = spawn(ht_master, NULL), *w2 = spawn(ht_master, "explicit"), *r, *ev;
	struct ht_conn *watch = ht_herdd_open(ht_herdd, "inspector", "watch");
	char instance[64];
	json_int_t seq;
	int64_t ping, rx;
	int fds;

	ck_assert_ptr_nonnull(watch);
	json_decref(ht_call_ok(watch, "subscribe", json_pack("{s:b}", "all", 1)));
	r = ht_call_ok(watch, "stats", json_object());
	snprintf(instance, sizeof(instance), "%s",
	    ht_str(json_object_get(ht_result(r), "events"), "instance"));
	seq = json_integer_value(json_object_get(json_object_get(ht_result(r), "events"), "seq"));
	json_decref(r);
	fds = ht_count_held_fds(ht_herdd->pid);

	/* Both requests are in herdd's socket before it reads either. */
	ping = ht_conn_send_request(ht_master, "ping", json_object());
	rx = ht_conn_send_request(ht_master, "reexec", json_object());
	r = ht_conn_wait_reply(ht_master, ping, ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	r = ht_conn_wait_reply(ht_master, rx, ht_ms(30000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "generation")), 1);
	ck_assert_str_eq(ht_str(ht_result(r), "instance"), instance);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(r), "seq")), seq);
	json_decref(r);

	assert_listed(ht_master, ht_str(w1, "id"), ht_worker_pid(w1));
	assert_listed(watch, ht_str(w2, "id"), ht_worker_pid(w2));
	assert_serves(ht_str(w1, "socket"));
	assert_serves(ht_str(w2, "socket"));
	assert_fds(fds);

	/* The stream goes on: the next event has the next seq of the same instance. */
	json_decref(ht_call_ok(ht_master, "shutdown", json_pack("{s:s}", "id", ht_str(w2, "id"))));
	ev = ht_wait_event_ok(watch, "stopped", ht_str(w2, "id"), ht_ms(5000));
	ck_assert_str_eq(ht_str(ev, "instance"), instance);
	ck_assert_int_eq(json_integer_value(json_object_get(ev, "seq")), seq + 1);
	json_decref(ev);

	/* A second reexec, from the inspector, with a worker fewer. */
	reexec_ok(watch, 2);
	assert_listed(ht_master, ht_str(w1, "id"), ht_worker_pid(w1));
	assert_fds(fds - 3);
	ht_conn_close(watch);
	json_decref(w1);
	json_decref(w2);
}
END_TEST

/*
 * A master calling its worker without pause through 20 reexecs sees no
 * failed call; the closing numbers are printed. The caller is a child process
 * that calls until its stop pipe closes, then reports "calls failed".
 */
START_TEST(test_calls_through_reexecs)
{
	json_t *w = spawn(ht_master, NULL);
	const char *sock = ht_str(w, "socket");
	int stop[2], report[2];
	long calls, failed;
	char text[64];
	pid_t pid;

	ck_assert_int_eq(pipe2(stop, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(report, O_CLOEXEC), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct pollfd pfd = { .fd = stop[0], .events = POLLIN };
		long ok = 0, bad = 0;

		close(stop[1]);
		while (poll(&pfd, 1, 0) == 0) {
			json_t *r = ht_worker_call(
			    sock, NULL, "sum", json_pack("{s:i}", "n", 10), ht_ms(5000));

			if (ht_result(r) && json_integer_value(ht_result(r)) == 45)
				ok++;
			else
				bad++;
			json_decref(r);
		}
		snprintf(text, sizeof(text), "%ld %ld", ok, bad);
		_exit(write(report[1], text, strlen(text)) > 0 ? 0 : 1);
	}
	ht_track_child(pid);
	close(stop[0]);
	close(report[1]);
	for (int i = 1; i <= REEXECS; i++) {
		reexec_ok(ht_master, i);
		/* The master's own requests work between reexecs too. */
		assert_listed(ht_master, ht_str(w, "id"), ht_worker_pid(w));
	}
	close(stop[1]);
	{
		char buf[64];
		ssize_t n = ht_read_all(report[0], buf, sizeof(buf) - 1, ht_ms(10000));

		ck_assert_int_gt(n, 0);
		buf[n] = '\0';
		ck_assert_int_eq(sscanf(buf, "%ld %ld", &calls, &failed), 2);
	}
	close(report[0]);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 0);
	printf("reexec: %ld calls during %d reexecs, %ld failed\n", calls, REEXECS, failed);
	ck_assert_int_gt(calls, 0);
	ck_assert_int_eq(failed, 0);
	json_decref(w);
}
END_TEST

/* A master that goes away after a reexec still takes its workers with it. */
START_TEST(test_ownership_kept)
{
	struct ht_conn *m2 = ht_herdd_open(ht_herdd, "master", "doomed");
	json_t *w, *ev;
	pid_t pid;

	ck_assert_ptr_nonnull(m2);
	json_decref(ht_call_ok(ht_master, "subscribe", json_pack("{s:b}", "all", 1)));
	w = spawn(m2, NULL);
	pid = ht_worker_pid(w);
	reexec_ok(ht_master, 1);
	assert_listed(m2, ht_str(w, "id"), pid);
	/* Gone without goodbye: its master_disconnect worker is killed as an orphan. */
	ht_conn_close(m2);
	ev = ht_wait_event_ok(ht_master, "stopped", ht_str(w, "id"), ht_ms(10000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "reason"), "killed_orphan");
	ck_assert_int_eq(ht_wait_pid_reaped(pid, ht_ms(5000)), 0);
	json_decref(ev);
	json_decref(w);
}
END_TEST

/*
 * Writes a "new binary" for reexec into herdd's directory as name (its path
 * into path): a shell script that runs first, then execs the real herdd.
 */
static void
script_to(char *path, size_t len, const char *name, const char *first)
{
	snprintf(path, len, "%s/%s", ht_herdd->dir, name);
	ck_assert_int_eq(
	    ht_write_file(path, 0755, "#!/bin/sh\n%sexec %s \"$@\"\n", first, ht_env_path("HERDD")),
	    0);
}

/*
 * A worker SIGKILLed while herdd is between images (by the new binary's probe,
 * a script that kills it first), and one that exits after the reexec, are both
 * reaped by the successor (no zombie) and reported to their master.
 */
START_TEST(test_exit_during_and_after)
{
	json_t *a = spawn(ht_master, NULL), *b = spawn(ht_master, NULL), *ev, *r;
	pid_t pa = ht_worker_pid(a), pb = ht_worker_pid(b);
	char script[256], body[128];

	snprintf(body, sizeof(body), "[ -n \"$HERDD_REEXEC_PROBE\" ] && kill -KILL %d\n", (int)pa);
	script_to(script, sizeof(script), "killer.sh", body);

	r = reexec(ht_master, json_pack("{s:s}", "binary", script));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "generation")), 1);
	json_decref(r);
	ev = ht_wait_event_ok(ht_master, "crashed", ht_str(a, "id"), ht_ms(10000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "signal"), "SIGKILL");
	json_decref(ev);
	ck_assert_int_eq(ht_wait_pid_reaped(pa, ht_ms(5000)), 0);

	/* After: the worker exits by itself. */
	r = ht_worker_call(
	    ht_str(b, "socket"), NULL, "exit", json_pack("{s:i}", "code", 3), ht_ms(5000));
	json_decref(r);
	ev = ht_wait_event_ok(ht_master, "exited", ht_str(b, "id"), ht_ms(10000));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(ev, "worker"), "exit_code")), 3);
	json_decref(ev);
	ck_assert_int_eq(ht_wait_pid_reaped(pb, ht_ms(5000)), 0);
	json_decref(a);
	json_decref(b);
}
END_TEST

/*
 * A binary that cannot take over leaves this herdd serving with every worker:
 * /bin/false and a missing file fail the probe; a binary that passes the probe
 * and then loses the state goes back to the previous binary. herdctl reexec
 * reports each, and a plain reexec still works afterwards.
 */
START_TEST(test_failed_binary)
{
	json_t *w = spawn(ht_master, NULL), *r;
	pid_t pid = ht_worker_pid(w);
	char script[256];
	struct ht_out o;
	int fds;

	/*
	 * The spawn may be answered before herdd reads the EOF of the worker's
	 * exec report in the same loop pass; a round trip lets that pass end.
	 */
	json_decref(ht_call_ok(ht_master, "ping", json_object()));
	fds = ht_count_held_fds(ht_herdd->pid);
	r = reexec(ht_master, json_pack("{s:s}", "binary", "/bin/false"));
	ht_assert_error(r, "internal_error");
	ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), "probe");
	json_decref(r);
	r = reexec(ht_master, json_pack("{s:s}", "binary", "/nonexistent/herdd"));
	ht_assert_error(r, "internal_error");
	json_decref(r);
	o = ht_herdctl(ht_herdd->socket, "reexec", "--binary", "/bin/false", NULL);
	ck_assert_int_ne(o.code, 0);
	ck_assert_msg(strstr(o.err, "/bin/false"), "herdctl said: %s", o.err);
	ht_out_free(&o);
	assert_listed(ht_master, ht_str(w, "id"), pid);
	assert_serves(ht_str(w, "socket"));
	assert_fds(fds);

	/* A probe that never answers is killed at its deadline (3 s). */
	script_to(script, sizeof(script), "hang.sh", "exec sleep 600\n");
	r = reexec(ht_master, json_pack("{s:s}", "binary", script));
	ht_assert_error(r, "internal_error");
	ck_assert_msg(strstr(ht_error_message(r), "did not answer"), "%s", ht_dump(r));
	json_decref(r);
	assert_listed(ht_master, ht_str(w, "id"), pid);

	/* Passes the probe and removes itself: the exec fails, herdd goes on. */
	script_to(script, sizeof(script), "vanishing.sh", "rm -f \"$0\"\n");
	r = reexec(ht_master, json_pack("{s:s}", "binary", script));
	ht_assert_error(r, "internal_error");
	ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), "exec");
	json_decref(r);
	assert_listed(ht_master, ht_str(w, "id"), pid);
	assert_serves(ht_str(w, "socket"));
	assert_fds(fds);

	/* Passes the probe, then starts with its state pointing at /dev/null. */
	script_to(script, sizeof(script), "lossy.sh",
	    "[ -n \"$HERDD_REEXEC_PROBE\" ] || export HERDD_REEXEC_STATE=0\n");
	r = reexec(ht_master, json_pack("{s:s}", "binary", script));
	ck_assert(json_is_true(json_object_get(ht_assert_result(r), "fell_back")));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(r), "pid")), ht_herdd->pid);
	json_decref(r);
	assert_listed(ht_master, ht_str(w, "id"), pid);
	assert_serves(ht_str(w, "socket"));
	assert_fds(fds);

	o = ht_herdctl(ht_herdd->socket, "reexec", NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_msg(strstr(o.out, "generation"), "herdctl said: %s", o.out);
	ht_out_free(&o);
	assert_listed(ht_master, ht_str(w, "id"), pid);
	json_decref(w);
}
END_TEST

/*
 * What a worker record holds goes on: captured lines and a rotated output file
 * keep what came before and get what comes after, a restart policy still
 * restarts (incarnation 2), and an exited record is still listed.
 */
START_TEST(test_records_kept)
{
	char dir[128], path[256], *text;
	json_t *a, *b, *c, *r, *ev, *lines;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/out.log", dir);
	a = ht_spawn_ok(ht_master,
	    ht_testworker_params(json_pack("{s:s, s:{s:s, s:i}}", "shutdown_on", "explicit",
	        "stdout", "file", path, "max_bytes", 1000)));
	b = ht_spawn_ok(ht_master,
	    ht_testworker_params(
	        json_pack("{s:s, s:s}", "shutdown_on", "explicit", "restart", "always")));
	c = spawn(ht_master, NULL);
	ht_expect(ht_master, "shutdown", json_pack("{s:s}", "id", ht_str(c, "id")), NULL);
	ht_worker_writes_ok(ht_str(a, "socket"), "stdout", "before out");
	ht_worker_writes_ok(ht_str(a, "socket"), "stderr", "before err");

	reexec_ok(ht_master, 1);
	r = ht_herdd_find(ht_master, ht_str(c, "id"));
	ck_assert_msg(r, "the exited record of %s is gone", ht_str(c, "id"));
	ck_assert_str_eq(ht_str(r, "state"), "exited");
	ck_assert_str_eq(ht_str(r, "reason"), "shutdown");
	json_decref(r);

	ht_worker_writes_ok(ht_str(a, "socket"), "stdout", "after out");
	ht_worker_writes_ok(ht_str(a, "socket"), "stderr", "after err");
	/* Reaped means herdd has read both pipes to their end. */
	ht_expect(ht_master, "shutdown", json_pack("{s:s}", "id", ht_str(a, "id")), NULL);
	text = ht_read_file(path, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "before out\nafter out\n");
	free(text);
	r = ht_call_ok(ht_master, "logs", json_pack("{s:s}", "id", ht_str(a, "id")));
	lines = json_object_get(ht_assert_result(r), "lines");
	ck_assert_msg(ht_lines_contain(lines, "before err") && ht_lines_contain(lines, "after err"),
	    "logs: %s", ht_dump(r));
	json_decref(r);

	ck_assert_int_eq(kill(ht_worker_pid(b), SIGKILL), 0);
	ev = ht_wait_event_ok(ht_master, "restarted", ht_str(b, "id"), ht_ms(10000));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(ev, "worker"), "incarnation")), 2);
	json_decref(ev);
	ht_expect(ht_master, "shutdown", json_pack("{s:s}", "id", ht_str(b, "id")), NULL);
	json_decref(a);
	json_decref(b);
	json_decref(c);
}
END_TEST

/*
 * A reexec waits for settled state: asked while a worker that ignores SIGTERM
 * is stopping (its shutdown request pending), it runs once the grace ended
 * with SIGKILL and the shutdown was answered.
 */
START_TEST(test_waits_for_settled)
{
	char fifo[256], script[512], byte[2];
	int64_t down, rx;
	json_t *w, *r;
	int fd;

	/* The worker says on a FIFO once it ignores SIGTERM (O_RDWR: reading waits for it). */
	snprintf(fifo, sizeof(fifo), "%s/trapped", ht_herdd->dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	fd = open(fifo, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	snprintf(script, sizeof(script), "trap '' TERM; echo > %s; exec sleep 600", fifo);
	w = ht_spawn_ok(ht_master,
	    ht_sh_params(
	        script, json_pack("{s:s, s:s}", "ready", "exec", "shutdown_on", "explicit")));
	ck_assert_int_eq(ht_read_all(fd, byte, sizeof(byte), ht_ms(10000)), 1);
	close(fd);

	down = ht_conn_send_request(
	    ht_master, "shutdown", json_pack("{s:s, s:i}", "id", ht_str(w, "id"), "grace_ms", 500));
	rx = ht_conn_send_request(ht_master, "reexec", json_object());
	r = ht_conn_wait_reply(ht_master, down, ht_ms(10000));
	ck_assert_str_eq(ht_str(ht_assert_result(r), "state"), "exited");
	ck_assert_str_eq(ht_str(ht_result(r), "signal"), "SIGKILL");
	json_decref(r);
	r = ht_conn_wait_reply(ht_master, rx, ht_ms(30000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "generation")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(r), "workers")), 0);
	json_decref(r);
	ck_assert_int_eq(ht_wait_pid_reaped(ht_worker_pid(w), ht_ms(5000)), 0);
	json_decref(w);
}
END_TEST

/*
 * An idle herdd (no worker, nothing to wake its loop) reexecs at once, not
 * when its wait for settled state would give up (10 s).
 */
START_TEST(test_idle_at_once)
{
	json_t *r = ht_conn_call(ht_master, "reexec", json_object(), ht_ms(3000));

	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "generation")), 1);
	json_decref(r);
}
END_TEST

/* What nobody gets when it asks a root herdd to reexec: permission_denied. */
static int
ask_as_nobody(void *arg)
{
	struct ht_conn *c = ht_herdd_open(arg, "master", "nobody");
	json_t *r;
	int code;

	if (!c)
		return 10;
	r = ht_conn_call(c, "reexec", json_object(), ht_ms(5000));
	code = ht_error_name(r) && !strcmp(ht_error_name(r), "permission_denied") ? 0 : 11;
	if (code)
		fprintf(stderr, "as nobody, reexec answered %s\n", ht_dump(r));
	json_decref(r);
	ht_conn_close(c);
	return code;
}

/*
 * SIGUSR2 reexecs as the request does: the successor says READY=1 again on
 * NOTIFY_SOCKET, keeps the worker and answers as generation 1. Only root and
 * herdd's own uid may ask by request.
 */
START_TEST(test_sigusr2_and_permission)
{
	json_t *w = spawn(ht_master, NULL), *r;
	pid_t pid = ht_worker_pid(w);
	char path[256], seen[1024] = "";
	uid_t uid;
	gid_t gid;
	int fd;

	snprintf(path, sizeof(path), "%s/notify", ht_herdd->dir);
	unlink(path);
	fd = ht_notify_bind(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(kill(ht_herdd->pid, SIGUSR2), 0);
	ck_assert_msg(ht_notify_wait(fd, "READY=1", seen, sizeof(seen), ht_ms(20000)),
	    "no READY=1 after SIGUSR2: %s", seen);
	close(fd);
	unlink(path);
	assert_listed(ht_master, ht_str(w, "id"), pid);
	r = reexec(ht_master, NULL);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "generation")), 2);
	json_decref(r);
	assert_serves(ht_str(w, "socket"));

	if (getuid() == 0 && ht_nobody(&uid, &gid) == 0) {
		ck_assert_int_eq(chmod(ht_herdd->dir, 0755), 0);
		ck_assert_int_eq(chmod(ht_herdd->socket, 0666), 0);
		ck_assert_int_eq(ht_run_as_nobody(ask_as_nobody, ht_herdd, ht_ms(10000)), 0);
	} else {
		fprintf(stderr, "the permission part of test_sigusr2_and_permission needs root\n");
	}
	json_decref(w);
}
END_TEST

HT_MAIN("herdd-reexec",
    HT_HERDD_CASE("reexec", 120, ht_grace_args, test_idle_at_once,
        test_workers_and_connections_survive, test_calls_through_reexecs, test_ownership_kept,
        test_exit_during_and_after, test_failed_binary, test_records_kept, test_waits_for_settled,
        test_sigusr2_and_permission))
