/* SPDX-License-Identifier: MIT */
/*
 * A master with no herdd running starts a private one (libclient/autostart.c):
 * the master connects, spawns and calls a worker, and once it is gone the
 * daemon exits by itself after its idle time. HERD_NO_AUTOSTART=1 turns this
 * off, a socket path in a missing directory starts nothing, and a stale
 * socket left by a dead daemon is replaced. Two masters racing to start one
 * both end up on the same daemon. A socket with a short name, and a user's
 * first start on the default path, leave herdd.log beside the socket.
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
#include "ht-example.h"

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
	json_t *args, *res = NULL;
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

	w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
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

/*
 * A socket named "s": the log's path is longer than the socket's. Autostart
 * once built it by writing "/herdd.log" over a copy of the socket path, past
 * its end for a name under 9 characters (ASan and valgrind see that here).
 */
START_TEST(test_short_socket_name)
{
	char log[224];
	struct stat st;

	snprintf(sock, sizeof(sock), "%s/s", dir);
	ck_assert_int_eq(setenv("HERD_SOCKET", sock, 1), 0);
	assert_idle_exit(use_once());
	snprintf(log, sizeof(log), "%s/herdd.log", dir);
	ck_assert_int_eq(stat(log, &st), 0);
	ck_assert_msg(st.st_size > 0, "herdd.log is empty");
}
END_TEST

/* What the first start on a user's default path does, as that user. */
struct first_start {
	char rt[160]; /* its $XDG_RUNTIME_DIR, owned by the user */
	int pid_fd; /* the autostarted herdd's pid goes here */
};

static int
first_start_as_user(void *arg)
{
	struct first_start *fs = arg;
	herd_master *m = NULL;
	pid_t pid;

	if (unsetenv("HERD_SOCKET") < 0 || setenv("XDG_RUNTIME_DIR", fs->rt, 1) < 0)
		return 10;
	if (herd_master_connect(NULL, NULL, &m, NULL) < 0)
		return 11;
	pid = (pid_t)json_integer_value(json_object_get(herd_master_get_server_info(m), "pid"));
	if (write(fs->pid_fd, &pid, sizeof(pid)) != sizeof(pid))
		return 12;
	herd_master_unref(m);
	return 0;
}

/*
 * A user's first autostart on the default path, with no $XDG_RUNTIME_DIR/herd
 * yet: the directory is made private to the user before herdd starts, so
 * herdd.log is there from the first start, and the socket is the user's alone.
 * Needs root to become nobody; skipped otherwise.
 */
START_TEST(test_first_start_default_dir)
{
	struct first_start fs = { .pid_fd = -1 };
	char path[224];
	struct stat st;
	int pipe_fds[2];
	pid_t pid;
	uid_t uid;
	gid_t gid;

	if (getuid() != 0) {
		fprintf(stderr, "test_first_start_default_dir needs root: skipped\n");
		return;
	}
	ck_assert_int_eq(ht_nobody(&uid, &gid), 0);
	snprintf(fs.rt, sizeof(fs.rt), "%s/rt", dir);
	ck_assert_int_eq(mkdir(fs.rt, 0700), 0);
	ck_assert_int_eq(chown(fs.rt, uid, gid), 0);
	ck_assert_int_eq(chmod(dir, 0711), 0);
	ck_assert_int_eq(pipe2(pipe_fds, O_CLOEXEC), 0);
	fs.pid_fd = pipe_fds[1];
	ck_assert_int_eq(ht_run_as_nobody(first_start_as_user, &fs, ht_ms(20000)), 0);
	close(pipe_fds[1]);
	ck_assert_int_eq(ht_read_pids(pipe_fds[0], &pid, 1, ht_ms(1000)), 1);
	close(pipe_fds[0]);
	ck_assert_int_gt(pid, 1);
	ht_track_pid(pid);

	snprintf(path, sizeof(path), "%s/herd", fs.rt);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_uint_eq(st.st_uid, uid);
	ck_assert_msg((st.st_mode & 07777) == 0700, "%s is mode %o", path, st.st_mode & 07777);
	snprintf(path, sizeof(path), "%s/herd/herdd.log", fs.rt);
	ck_assert_msg(stat(path, &st) == 0 && st.st_size > 0, "%s is missing or empty", path);
	ck_assert_uint_eq(st.st_uid, uid);
	ck_assert_msg((st.st_mode & 077) == 0, "%s is mode %o", path, st.st_mode & 07777);
	snprintf(sock, sizeof(sock), "%s/herd/herdd.sock", fs.rt);
	ck_assert_int_eq(lstat(sock, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_msg((st.st_mode & 077) == 0, "%s is mode %o", sock, st.st_mode & 07777);
	assert_idle_exit(pid);
}
END_TEST

/*
 * A root master's herdd on a path of its own ($HERD_SOCKET) is private: the
 * socket is owner-only, as for any --socket path (PROTOCOL.md 4.1). Only
 * the system path serves every uid. Needs root.
 */
START_TEST(test_root_autostart_socket_mode)
{
	herd_master *m = NULL;
	struct stat st;
	pid_t pid;

	if (getuid() != 0) {
		fprintf(stderr, "test_root_autostart_socket_mode needs root: skipped\n");
		return;
	}
	ck_assert_int_eq(herd_master_connect(NULL, NULL, &m, NULL), 0);
	pid = daemon_pid(m);
	ck_assert_int_eq(lstat(sock, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_uint_eq(st.st_uid, 0);
	ck_assert_msg((st.st_mode & 077) == 0, "socket mode %o", st.st_mode & 07777);
	herd_master_unref(m);
	assert_idle_exit(pid);
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
            test_stale_socket_replaced, test_two_masters_race, test_short_socket_name,
            test_first_start_default_dir, test_root_autostart_socket_mode } })
