/* SPDX-License-Identifier: MIT */
/*
 * A master with no herdd running starts a private one (libclient/autostart.c):
 * the master connects, spawns and calls a worker, and once it is gone the
 * daemon exits by itself after its idle time. HERD_NO_AUTOSTART=1 turns this
 * off, a socket path in a missing directory starts nothing, and a stale
 * socket left by a dead daemon is replaced. Two masters racing to start one
 * both end up on the same daemon.
 *
 * The autostarted herdd is double-forked, so it is nobody's child but ours
 * because this test is a subreaper: its exit is awaited and it is reaped here.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <herd/herd.h>

#include "ht-check.h"

static char dir[128];
static char sock[192];

/* A fresh private directory whose herdd.sock nobody serves; $HERD_SOCKET points at it. */
static void
setup(void)
{
	ck_assert_int_eq(ht_become_subreaper(), 0);
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(sock, sizeof(sock), "%s/herdd.sock", dir);
	ck_assert_int_eq(setenv("HERD_SOCKET", sock, 1), 0);
	ck_assert_int_eq(setenv("HERD_AUTOSTART_IDLE_MS", "1000", 1), 0);
	ck_assert_int_eq(unsetenv("HERD_NO_AUTOSTART"), 0);
}

/* herdd's pid as its hello answer gave it; tracked so teardown kills it if still alive. */
static pid_t
daemon_pid(herd_master *m)
{
	json_t *info = herd_master_get_server_info(m);
	json_t *pid = json_object_get(info, "pid");

	ck_assert_msg(json_is_integer(pid), "hello result has no pid");
	ck_assert_int_gt(json_integer_value(pid), 1);
	ht_track_pid((pid_t)json_integer_value(pid));
	return (pid_t)json_integer_value(pid);
}

/* Connects (autostarting herdd), runs sum {n:42} in a worker, closes; returns herdd's pid. */
static pid_t
use_once(void)
{
	json_t *opts, *args, *res = NULL;
	herd_master *m = NULL;
	herd_worker *w = NULL;
	herd_conn *conn = NULL;
	herd_error *err = NULL;
	pid_t pid;
	int r;

	r = herd_master_connect(NULL, NULL, &m, &err);
	ck_assert_msg(r == 0, "connect: %s (%s)", strerror(-r), herd_error_message(err));
	pid = daemon_pid(m);
	ck_assert_msg(ht_pid_ppid(pid) == getpid(),
	    "herdd %d should be detached (our orphan, as subreaper), its parent is %d", (int)pid,
	    (int)ht_pid_ppid(pid));

	opts = herd_spawn_opts_new(ht_env_path("HERD_TESTWORKER"), NULL);
	ck_assert_ptr_nonnull(opts);
	r = herd_master_spawn(m, opts, 0, &w);
	json_decref(opts);
	ck_assert_msg(r == 0, "spawn: %s", herd_error_message(herd_master_last_error(m)));
	ht_track_pid(herd_worker_pid(w));
	ck_assert_int_eq(herd_worker_connect(w, NULL, &conn, NULL), 0);
	args = json_pack("{s:i}", "n", 42);
	ck_assert_int_eq(herd_call(conn, "sum", args, 0, &res), 0);
	ck_assert_msg(json_integer_value(res) == 861, "sum 42 gave %s", ht_dump(res));
	json_decref(args);
	json_decref(res);

	herd_conn_close(conn);
	herd_conn_unref(conn);
	herd_worker_unref(w);
	herd_master_close(m);
	herd_master_unref(m);
	return pid;
}

/* herdd leaves by itself once idle: exit 0, socket and lock removed. */
static void
assert_idle_exit(pid_t pid)
{
	char lock[224];
	int status;

	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(10000)), 0);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "herdd status %#x", status);
	snprintf(lock, sizeof(lock), "%s.lock", sock);
	ck_assert_int_ne(access(sock, F_OK), 0);
	ck_assert_int_ne(access(lock, F_OK), 0);
}

START_TEST(test_autostart_then_idle_exit)
{
	pid_t pid = use_once();
	char log[224];

	assert_idle_exit(pid);
	/* herdd's stderr went next to its socket. */
	snprintf(log, sizeof(log), "%s/herdd.log", dir);
	ck_assert_int_eq(access(log, F_OK), 0);
}
END_TEST

START_TEST(test_no_autostart)
{
	herd_master *m = NULL;
	pid_t kids[8];
	int r;

	ck_assert_int_eq(setenv("HERD_NO_AUTOSTART", "1", 1), 0);
	r = herd_master_connect(NULL, NULL, &m, NULL);
	ck_assert_msg(r == -ENOENT || r == -ECONNREFUSED, "connect gave %s", strerror(-r));
	ck_assert_ptr_null(m);
	ck_assert_int_ne(access(sock, F_OK), 0);
	/* Nothing was started: no process of ours, no orphan handed to us. */
	ck_assert_int_eq(ht_list_children(getpid(), kids, 8), 0);
}
END_TEST

/* A path whose directory is missing is a mistake: nothing is started, nothing created. */
START_TEST(test_missing_dir_not_created)
{
	char path[256], sub[224];
	herd_master *m = NULL;
	pid_t kids[8];
	int r;

	snprintf(sub, sizeof(sub), "%s/missing", dir);
	snprintf(path, sizeof(path), "%s/herdd.sock", sub);
	r = herd_master_connect(path, NULL, &m, NULL);
	ck_assert_msg(r == -ENOENT, "connect gave %s", strerror(-r));
	ck_assert_int_ne(access(sub, F_OK), 0);
	ck_assert_int_eq(ht_list_children(getpid(), kids, 8), 0);
}
END_TEST

START_TEST(test_stale_socket_replaced)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* A socket file nobody listens on: what a killed herdd leaves behind. */
	ck_assert_int_ge(fd, 0);
	ck_assert_uint_lt(strlen(sock), sizeof(sa.sun_path));
	memcpy(sa.sun_path, sock, strlen(sock) + 1);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	ck_assert_int_eq(access(sock, F_OK), 0);

	assert_idle_exit(use_once());
}
END_TEST

/* Waits for the go signal, connects, reports herdd's pid (0 on failure), then closes. */
static void
racer(int go, int out)
{
	herd_master *m = NULL;
	pid_t pid = 0;
	char c;

	while (read(go, &c, 1) < 0 && errno == EINTR) {
	}
	if (herd_master_connect(NULL, NULL, &m, NULL) == 0) {
		pid = (pid_t)json_integer_value(
		    json_object_get(herd_master_get_server_info(m), "pid"));
		(void)!write(out, &pid, sizeof(pid));
		/* Stay connected until the parent has both answers, so herdd cannot idle out. */
		while (read(go, &c, 1) < 0 && errno == EINTR) {
		}
		herd_master_unref(m);
	} else {
		(void)!write(out, &pid, sizeof(pid));
	}
	_exit(0);
}

/* Two masters autostart at once: herdd's lock leaves one daemon and both reach it. */
START_TEST(test_two_masters_race)
{
	int go[2], out[2], status;
	pid_t kids[2], pids[2], z;

	ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		ck_assert_int_ge(kids[i], 0);
		if (kids[i] == 0) {
			close(go[1]);
			close(out[0]);
			racer(go[0], out[1]);
		}
		ht_track_child(kids[i]);
	}
	close(go[0]);
	close(out[1]);
	/* Both were blocked reading: one write each starts them together. */
	ck_assert_int_eq(write(go[1], "gg", 2), 2);
	ck_assert_int_eq(ht_read_pids(out[0], pids, 2, ht_ms(20000)), 2);
	ck_assert_int_gt(pids[0], 1);
	ck_assert_int_eq(pids[0], pids[1]);
	ht_track_pid(pids[0]);
	close(go[1]);
	close(out[0]);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(ht_wait_child(kids[i], ht_ms(10000), &status), 0);
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "racer %#x", status);
	}
	assert_idle_exit(pids[0]);
	/* A losing herdd, if one ran, was handed to us; it has exited long before the winner. */
	while ((z = waitpid(-1, &status, WNOHANG)) > 0)
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0,
		    "the losing herdd %d should have failed, status %#x", (int)z, status);
}
END_TEST

HT_MAIN("autostart",
    { .name = "autostart",
        .timeout_s = 30,
        .setup = setup,
        .tests = { test_autostart_then_idle_exit, test_no_autostart, test_missing_dir_not_created,
            test_stale_socket_replaced, test_two_masters_race } })
