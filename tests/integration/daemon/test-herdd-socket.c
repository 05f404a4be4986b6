/* SPDX-License-Identifier: MIT */
/*
 * herdd's socket and life: a stale socket left by a killed herdd is taken
 * over, the lock keeps a second herdd off a live socket, a path that is not a
 * socket is never removed, the directories get their modes, and SIGTERM
 * stops the workers, removes the socket and lock files and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ht-check.h"

struct herdd_run {
	const char *socket;
	const char *notify; /* NULL: none */
	const char *const *extra;
	const char *watchdog_usec; /* NULL: no watchdog */
	bool activate; /* run under systemd-socket-activate */
};

static int
exec_herdd(void *arg)
{
	const struct herdd_run *r = arg;
	const char *herdd = ht_env_path("HERDD");
	const char *const *extra = r->extra;
	const char *argv[16];
	size_t n = 0;

	if (!herdd)
		return 127;
	argv[n++] = herdd;
	argv[n++] = "--socket";
	argv[n++] = r->socket;
	argv[n++] = "--log-level";
	argv[n++] = "warn";
	while (extra && *extra && n < 15)
		argv[n++] = *extra++;
	argv[n] = NULL;
	if (r->notify)
		setenv("NOTIFY_SOCKET", r->notify, 1);
	else
		unsetenv("NOTIFY_SOCKET");
	if (r->watchdog_usec)
		setenv("WATCHDOG_USEC", r->watchdog_usec, 1);
	if (r->activate) {
		const char *act[24];
		size_t k = 0, i;

		act[k++] = "systemd-socket-activate";
		act[k++] = "-l";
		act[k++] = r->socket;
		act[k++] = "-E";
		act[k++] = "NOTIFY_SOCKET";
		act[k++] = herdd;
		/* No --socket: the activated socket names itself. */
		for (i = 3; i < n && k < 23; i++)
			act[k++] = argv[i];
		act[k] = NULL;
		execvp(act[0], (char *const *)act);
		return 127;
	}
	execv(herdd, (char *const *)argv);
	return 127;
}

/* A fresh temporary dir (128 bytes), and in it the paths (192 bytes each) of herdd's socket and of a NOTIFY_SOCKET. */
static void
make_paths(char *dir, char *path, char *notify)
{
	ck_assert_int_eq(ht_tmpdir(dir, 128), 0);
	snprintf(path, 192, "%s/herdd.sock", dir);
	snprintf(notify, 192, "%s/notify", dir);
}

/* Binds r->notify (its fd in *ret_fd), then starts herdd as r says. Returns its pid. */
static pid_t
start_run(struct herdd_run *r, int *ret_fd)
{
	pid_t pid;

	*ret_fd = ht_notify_bind(r->notify);
	ck_assert_int_ge(*ret_fd, 0);
	pid = ht_fork_fn(exec_herdd, r, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(pid, 0);
	return pid;
}

/* SIGTERM to our herdd pid: it must exit 0. */
static void
stop_ok(pid_t pid)
{
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 0);
}

/* Starts herdd on path and waits for READY=1. Returns its pid (tracked for teardown). */
static pid_t
start_on(const char *dir, const char *path)
{
	char notify[256], seen[1024] = "";
	struct herdd_run r = { .socket = path, .notify = notify };
	pid_t pid;
	int fd;

	snprintf(notify, sizeof(notify), "%s/notify-%d", dir, (int)ht_now_ms());
	pid = start_run(&r, &fd);
	ck_assert_msg(ht_notify_wait(fd, "READY=1", seen, sizeof(seen), ht_ms(10000)),
	    "herdd on %s sent no READY=1: %s", path, seen);
	close(fd);
	unlink(notify);
	return pid;
}

/* Runs herdd on path expecting it to refuse: returns its exit status. */
static int
run_refused(const char *path)
{
	struct herdd_run r = { .socket = path };
	pid_t pid = ht_fork_fn(exec_herdd, &r, (uid_t)-1, (gid_t)-1);
	int st = 0;

	ck_assert_int_gt(pid, 0);
	ck_assert_msg(ht_wait_child(pid, ht_ms(10000), &st) == 0, "herdd did not exit");
	return st;
}

static void
ping(const char *path)
{
	struct ht_conn *c = ht_conn_open(path);
	json_t *r;

	ck_assert_msg(c, "connect %s: %s", path, strerror(errno));
	r = ht_conn_hello(c, "inspector", NULL, ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}

START_TEST(test_lock_refuses_second_daemon)
{
	struct ht_daemon *d = ht_daemon_start(NULL);
	int st;

	ck_assert(d);
	st = run_refused(d->socket);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 1, "second herdd: status %d", st);
	/* The first one still serves, on the same socket file. */
	ping(d->socket);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(5000)), 0);
}
END_TEST

START_TEST(test_stale_socket_takeover)
{
	struct ht_daemon *d = ht_daemon_start(NULL);
	char path[sizeof(d->socket)], dir[sizeof(d->dir)];
	struct stat st;
	pid_t pid;

	ck_assert(d);
	snprintf(path, sizeof(path), "%s", d->socket);
	snprintf(dir, sizeof(dir), "%s", d->dir);
	/* A SIGKILLed herdd leaves its socket file behind, with nobody listening. */
	ck_assert_int_eq(ht_daemon_kill(d), 0);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));

	pid = start_on(dir, path);
	ping(path);
	stop_ok(pid);
	ck_assert(access(path, F_OK) < 0);
}
END_TEST

START_TEST(test_not_a_socket_is_kept)
{
	char dir[128], path[192];
	int fd, st;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/herdd.sock", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "data", 4), 4);
	close(fd);
	st = run_refused(path);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(lseek(fd, 0, SEEK_END), 4);
	close(fd);
}
END_TEST

START_TEST(test_directories)
{
	char dir[128], sub[160], path[192], workers[192];
	struct stat st;
	pid_t pid;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(sub, sizeof(sub), "%s/run", dir);
	snprintf(path, sizeof(path), "%s/herdd.sock", sub);
	snprintf(workers, sizeof(workers), "%s/workers", sub);
	pid = start_on(dir, path);
	/* herdd made its socket directory: private to a user daemon, reachable for root's. */
	ck_assert_int_eq(lstat(sub, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	ck_assert_int_eq(st.st_uid, geteuid());
	ck_assert_int_eq(st.st_mode & 07777, geteuid() == 0 ? 0755 : 0700);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	/* A socket named with --socket is its owner's alone, root's included (PROTOCOL.md 4.1). */
	ck_assert_int_eq(st.st_mode & 077, 0);
	ck_assert_int_eq(lstat(workers, &st), 0);
	ck_assert_int_eq(st.st_mode & 022, 0);
	ping(path);
	stop_ok(pid);
	ck_assert(access(path, F_OK) < 0);
	snprintf(path, sizeof(path), "%s/herdd.sock.lock", sub);
	ck_assert(access(path, F_OK) < 0);
}
END_TEST

/* A group directory is refused: someone else could plant a socket there. */
START_TEST(test_unsafe_directory_refused)
{
	char dir[128], path[192];
	int st;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	ck_assert_int_eq(chmod(dir, 0770), 0);
	snprintf(path, sizeof(path), "%s/herdd.sock", dir);
	st = run_refused(path);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1);
	ck_assert(access(path, F_OK) < 0);
}
END_TEST

START_TEST(test_sigterm_stops_workers_and_cleans_up)
{
	static const char *const args[] = { "--grace-ms", "2000", NULL };
	struct ht_daemon *d = ht_daemon_start(args);
	char lock[sizeof(d->socket) + 8], wsock[256];
	struct ht_conn *c;
	json_t *params, *r, *ev;
	pid_t wpid;

	ck_assert(d);
	snprintf(lock, sizeof(lock), "%s.lock", d->socket);
	ck_assert_int_eq(access(lock, F_OK), 0);
	c = ht_herdd_open(d, "master", "sigterm");
	ck_assert(c);
	params = ht_testworker_params(json_pack("{s:s}", "shutdown_on", "explicit"));
	ck_assert(params);
	r = ht_spawn(c, params, ht_ms(10000));
	wpid = ht_worker_pid(ht_assert_result(r));
	snprintf(
	    wsock, sizeof(wsock), "%s", json_string_value(json_object_get(ht_result(r), "socket")));
	json_decref(r);
	ck_assert_int_eq(access(wsock, F_OK), 0);

	ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
	/* The owner hears its worker stop before herdd goes. */
	ev = ht_wait_event_ok(c, "stopped", NULL, ht_ms(10000));
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(ev, "worker"), "reason")),
	    "daemon_shutdown");
	json_decref(ev);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(10000)), 0);
	ht_conn_close(c);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(10000)), 0);
	ck_assert(!ht_pid_alive(wpid));
	ck_assert(access(d->socket, F_OK) < 0);
	ck_assert(access(lock, F_OK) < 0);
	ck_assert(access(wsock, F_OK) < 0);
}
END_TEST

/* While stopping, herdd still answers the watchers and refuses new spawns. */
/*
 * Waits until pid runs the program comm (it has exec'd it). There is no event
 * for an exec, so /proc is read every millisecond until the deadline.
 */
static bool
wait_comm(pid_t pid, const char *comm, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	char path[64], buf[64];

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	while (ht_now_ms() < deadline) {
		struct timespec ms = { 0, 1000000 };
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;

		if (fd >= 0)
			close(fd);
		if (n > 0) {
			buf[n] = '\0';
			buf[strcspn(buf, "\n")] = '\0';
			if (!strcmp(buf, comm))
				return true;
		}
		nanosleep(&ms, NULL);
	}
	return false;
}

START_TEST(test_stopping_refuses_spawn)
{
	static const char *const args[] = { "--grace-ms", "3000", NULL };
	struct ht_daemon *d = ht_daemon_start(args);
	struct ht_conn *c, *m;
	int64_t sid;
	json_t *r;

	ck_assert(d);
	m = ht_herdd_open(d, "master", "stopping");
	c = ht_herdd_open(d, "inspector", "watcher");
	ck_assert(m && c);
	/* A worker that ignores SIGTERM holds herdd in its stopping state for the grace. */
	sid = ht_conn_send_request(m, "spawn",
	    ht_sh_params("trap '' TERM; exec sleep 100",
	        json_pack("{s:s, s:i}", "shutdown_on", "explicit", "spawn_timeout_ms", 60000)));
	ck_assert(sid > 0);
	r = ht_herdd_wait_listed(c, "sh", "starting", ht_ms(5000));
	ck_assert_msg(r, "the spawned shell was never listed");
	ck_assert_msg(
	    wait_comm(ht_worker_pid(r), "sleep", ht_ms(5000)), "the worker never became sleep");
	json_decref(r);
	ck_assert_int_eq(kill(d->pid, SIGTERM), 0);
	/* The pending spawn fails with shutting_down. */
	r = ht_conn_wait_reply(m, sid, ht_ms(10000));
	ht_assert_error(r, "shutting_down");
	json_decref(r);
	ht_expect(m, "spawn", json_pack("{s:s}", "path", "/bin/true"), "shutting_down");
	/* Watchers may still look. */
	r = ht_conn_call(c, "list", NULL, ht_ms(5000));
	ck_assert_str_eq(
	    json_string_value(json_object_get(
	        json_array_get(json_object_get(ht_assert_result(r), "workers"), 0), "state")),
	    "stopping");
	json_decref(r);
	ht_conn_close(m);
	ht_conn_close(c);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(10000)), 0);
}
END_TEST

START_TEST(test_notify_and_watchdog)
{
	char dir[128], path[192], notify[192], seen[8192] = "";
	struct herdd_run r = { .socket = path, .notify = notify, .watchdog_usec = "200000" };
	pid_t pid;
	int fd, st;

	make_paths(dir, path, notify);
	pid = start_run(&r, &fd);
	ck_assert_msg(ht_notify_wait(fd, "READY=1", seen, sizeof(seen), ht_ms(10000)), "%s", seen);
	ck_assert_msg(strstr(seen, "STATUS="), "no STATUS with READY: %s", seen);
	/* WATCHDOG_USEC=200000: a ping at least every 100 ms. */
	ck_assert_msg(
	    ht_notify_wait(fd, "WATCHDOG=1", seen, sizeof(seen), ht_ms(2000)), "%s", seen);
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	ck_assert_msg(
	    ht_notify_wait(fd, "STOPPING=1", seen, sizeof(seen), ht_ms(5000)), "%s", seen);
	ck_assert_int_eq(ht_wait_child(pid, ht_ms(10000), &st), 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(fd);
}
END_TEST

START_TEST(test_socket_activation)
{
	char dir[128], path[192], notify[192], seen[4096] = "";
	struct herdd_run r = { .socket = path, .notify = notify, .activate = true };
	struct ht_conn *c = NULL;
	struct stat sst;
	int64_t deadline;
	json_t *reply;
	pid_t pid;
	int fd;

	if (access("/usr/bin/systemd-socket-activate", X_OK) < 0 &&
	    access("/bin/systemd-socket-activate", X_OK) < 0) {
		fprintf(stderr, "skipped: systemd-socket-activate is not installed\n");
		return;
	}
	make_paths(dir, path, notify);
	pid = start_run(&r, &fd);
	/* The activator binds, then starts herdd on the first connection; nothing to await but the file. */
	deadline = ht_now_ms() + ht_ms(5000);
	while (!c && ht_now_ms() < deadline) {
		struct timespec ms = { 0, 1000000 };

		if (lstat(path, &sst) == 0)
			c = ht_conn_open(path);
		else
			nanosleep(&ms, NULL);
	}
	ck_assert_msg(c, "the activator never listened on %s", path);
	reply = ht_conn_hello(c, "inspector", NULL, ht_ms(10000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(reply), "pid")), pid);
	json_decref(reply);
	ck_assert(ht_notify_wait(fd, "READY=1", seen, sizeof(seen), ht_ms(5000)));
	ht_conn_close(c);
	stop_ok(pid);
	/* An activated socket belongs to the service manager: herdd never unlinks it. */
	ck_assert_int_eq(lstat(path, &sst), 0);
	close(fd);
}
END_TEST

START_TEST(test_log_file_reopen)
{
	char dir[128], path[192], log[192], rotated[200], notify[192];
	const char *extra[] = { "--log-file", log, "--log-level", "info", NULL };
	struct herdd_run r = { .socket = path, .notify = notify, .extra = extra };
	struct stat st;
	char seen[4096] = "";
	pid_t pid;
	int fd;

	make_paths(dir, path, notify);
	snprintf(log, sizeof(log), "%s/herdd.log", dir);
	snprintf(rotated, sizeof(rotated), "%s/herdd.log.1", dir);
	pid = start_run(&r, &fd);
	ck_assert(ht_notify_wait(fd, "READY=1", seen, sizeof(seen), ht_ms(10000)));
	ck_assert_int_eq(stat(log, &st), 0);
	ck_assert_int_gt(st.st_size, 0);
	/* Rotate: herdd writes to the new file only after SIGHUP. */
	ck_assert_int_eq(rename(log, rotated), 0);
	ck_assert_int_eq(kill(pid, SIGHUP), 0);
	/* "log file reopened" is the first line of the new file; ping proves SIGHUP was handled. */
	ping(path);
	ck_assert_int_eq(stat(log, &st), 0);
	ck_assert_int_gt(st.st_size, 0);
	stop_ok(pid);
	close(fd);
}
END_TEST

HT_MAIN("herdd-socket",
    HT_CASE("socket", 40, test_lock_refuses_second_daemon, test_stale_socket_takeover,
        test_not_a_socket_is_kept, test_directories, test_unsafe_directory_refused,
        test_sigterm_stops_workers_and_cleans_up, test_stopping_refuses_spawn,
        test_notify_and_watchdog, test_socket_activation, test_log_file_reopen))
