/* SPDX-License-Identifier: MIT */
/*
 * The harness checks itself: pid states and waits, children, fd counts,
 * forked functions as nobody, the raw client against a socketpair peer, and
 * teardown leaving nothing behind. No herdd involved.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"

static int
pause_forever(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

static int
exit_now(void *arg)
{
	return (int)(intptr_t)arg;
}

static int
report_uid(void *arg)
{
	uid_t uid;
	gid_t gid;

	(void)arg;
	if (ht_nobody(&uid, &gid) < 0)
		return 2;
	return getuid() == uid && getgid() == gid && geteuid() == uid ? 0 : 1;
}

START_TEST(test_pid_states)
{
	pid_t pid = ht_fork_fn(pause_forever, NULL, (uid_t)-1, (gid_t)-1);
	pid_t kids[8];
	int st, n;

	ck_assert_int_gt(pid, 0);
	ck_assert(ht_pid_alive(pid));
	ck_assert(!ht_pid_is_zombie(pid));
	ck_assert_int_eq(ht_pid_ppid(pid), getpid());
	/* Our children: pid, and the harness's guardian. */
	n = ht_list_children(getpid(), kids, 8);
	ck_assert_int_eq(n, 2);
	ck_assert(kids[0] == pid || kids[1] == pid);
	/* The guardian does not count as a child left behind; pid does. */
	ck_assert_int_eq(ht_children_left(50), 1);
	ck_assert_int_eq(ht_wait_pid_gone(pid, 50), -ETIMEDOUT);
	ck_assert_int_eq(ht_wait_child(pid, 50, NULL), -ETIMEDOUT);

	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_pid_gone(pid, 5000), 0);
	/* Exited and not reaped: a zombie of ours, and not alive. */
	ck_assert(ht_pid_is_zombie(pid));
	ck_assert(!ht_pid_alive(pid));
	ck_assert_int_eq(ht_wait_pid_reaped(pid, 10), -ECHILD);
	ck_assert_int_eq(ht_wait_child(pid, 5000, &st), 0);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	ck_assert_int_eq(ht_pid_state(pid), 0);
	ck_assert_int_eq(ht_children_left(50), 0);
	ck_assert_int_eq(ht_list_children(getpid(), kids, 8), 1);
}
END_TEST

START_TEST(test_exit_code_and_nobody)
{
	pid_t pid = ht_fork_fn(exit_now, (void *)(intptr_t)7, (uid_t)-1, (gid_t)-1);
	int st;

	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(ht_wait_child(pid, 5000, &st), 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 7);
	if (getuid() != 0)
		return;
	ck_assert_int_eq(ht_run_as_nobody(report_uid, NULL, 5000), 0);
}
END_TEST

START_TEST(test_count_fds)
{
	int before = ht_count_fds(getpid());
	int sv[2];

	ck_assert_int_ge(before, 3);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(ht_count_fds(getpid()), before + 2);
	close(sv[0]);
	close(sv[1]);
	ck_assert_int_eq(ht_count_fds(getpid()), before);
}
END_TEST

/* Binds and listens in the test itself, so the socket is ready before the peer forks. */
static int
listen_at(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	strcpy(sa.sun_path, path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 1) < 0)
		return -1;
	return fd;
}

/* A peer that answers a hello and a call, sending an event in between, then closes. */
static int
fake_server(void *arg)
{
	const char *out =
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"version\":1}}\n"
	    "{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"event\":"
	    "\"exited\",\"worker\":{\"id\":\"w1\"}}}\n"
	    "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32009,"
	    "\"message\":\"no worker w9\",\"data\":{\"name\":\"worker_not_found\"}}}\n";
	char buf[4096];
	int fd, lines = 0;
	ssize_t n;

	fd = accept4(*(int *)arg, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return 1;
	/* Wait for two request lines before answering both. */
	while (lines < 2 && (n = read(fd, buf, sizeof(buf))) > 0) {
		ssize_t i;

		for (i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	if (write(fd, out, strlen(out)) < 0)
		return 1;
	close(fd);
	return 0;
}

START_TEST(test_raw_client)
{
	char dir[128], path[192];
	struct ht_conn *c;
	json_t *reply, *ev, *req;
	pid_t pid;
	int lfd;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/sock", dir);
	lfd = listen_at(path);
	ck_assert_int_ge(lfd, 0);
	pid = ht_fork_fn(fake_server, &lfd, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(pid, 0);
	close(lfd);
	c = ht_conn_open(path);
	ck_assert_ptr_nonnull(c);
	/* The peer answers only after two requests: the hello times out, replies match by id. */
	reply = ht_conn_hello(c, "inspector", NULL, 100);
	ck_assert_ptr_null(reply);
	ck_assert_int_eq(errno, ETIMEDOUT);
	req = json_pack("{s:s, s:i, s:s}", "jsonrpc", "2.0", "id", 2, "method", "inspect");
	ck_assert_int_eq(ht_conn_send(c, req), 0);
	json_decref(req);
	reply = ht_conn_recv(c, 5000);
	ck_assert_ptr_nonnull(reply);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "version")), 1);
	json_decref(reply);
	ev = ht_conn_wait_event(c, "exited", "w1", 5000);
	ck_assert_ptr_nonnull(ev);
	json_decref(ev);
	reply = ht_conn_recv(c, 5000);
	ck_assert_str_eq(ht_error_name(reply), "worker_not_found");
	ck_assert_str_eq(ht_error_message(reply), "no worker w9");
	json_decref(reply);
	ck_assert_int_eq(ht_conn_wait_eof(c, 5000), 0);
	ck_assert_ptr_null(ht_conn_recv(c, 10));
	ck_assert_int_eq(errno, EPIPE);
	ht_conn_close(c);
	ck_assert_int_eq(ht_wait_child(pid, 5000, NULL), 0);
}
END_TEST

START_TEST(test_run_and_read_lines)
{
	const char *const script[] = { "/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL };
	const char *const lines[] = { "/bin/sh", "-c", "printf 'a\\nbb\\n'; printf 'ccc\\n'",
		NULL };
	struct ht_lines l = { 0 };
	char *out, *err;
	pid_t pid;

	ck_assert_int_eq(ht_run(script, &out, &err, 5000), 3);
	ck_assert_str_eq(out, "out\n");
	ck_assert_str_eq(err, "err\n");
	free(out);
	free(err);

	pid = ht_start_reader(lines, &l.fd);
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(ht_read_line(&l, 5000), 1);
	ck_assert_str_eq(l.buf, "a");
	ck_assert_int_eq(ht_read_line(&l, 5000), 2);
	ck_assert_str_eq(l.buf, "bb");
	ck_assert_int_eq(ht_read_line(&l, 5000), 3);
	ck_assert_str_eq(l.buf, "ccc");
	ck_assert_int_eq(ht_read_line(&l, 5000), -EPIPE);
	close(l.fd);
	ck_assert_int_eq(ht_wait_child(pid, 5000, NULL), 0);
}
END_TEST

/* Starts a detached sleeper, tracks it, reports it and dies as a failed Check test does. */
static int
die_without_teardown(void *arg)
{
	int fd = *(int *)arg;
	pid_t g = fork();

	if (g == 0) {
		setsid();
		for (;;)
			pause();
	}
	ht_track_pid(g);
	if (write(fd, &g, sizeof(g)) != (ssize_t)sizeof(g))
		_exit(2);
	_exit(1);
}

START_TEST(test_guardian_kills_after_failed_test)
{
	pid_t c, g;
	int p[2];

	ck_assert_int_eq(ht_become_subreaper(), 0);
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	c = ht_fork_fn(die_without_teardown, &p[1], (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(c, 0);
	close(p[1]);
	ck_assert_int_eq(ht_read_pids(p[0], &g, 1, 5000), 1);
	close(p[0]);
	ck_assert_int_eq(ht_wait_child(c, 5000, NULL), 0);
	/* The sleeper was adopted by us; the dead test's guardian must kill it. */
	ck_assert_int_eq(ht_wait_pid_gone(g, 5000), 0);
	ck_assert_int_eq(ht_wait_child(g, 5000, NULL), 0);
}
END_TEST

START_TEST(test_teardown_kills_everything)
{
	pid_t a = ht_fork_fn(pause_forever, NULL, (uid_t)-1, (gid_t)-1);
	pid_t b = ht_fork_fn(pause_forever, NULL, (uid_t)-1, (gid_t)-1);
	char dir[128];
	struct stat st;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	ht_teardown();
	ck_assert_int_eq(ht_pid_state(a), 0);
	ck_assert_int_eq(ht_pid_state(b), 0);
	ck_assert_int_eq(stat(dir, &st), -1);
	ck_assert_int_eq(errno, ENOENT);
}
END_TEST

HT_MAIN("harness",
    HT_CASE("core", 20, test_pid_states, test_exit_code_and_nobody, test_count_fds, test_raw_client,
        test_run_and_read_lines, test_guardian_kills_after_failed_test,
        test_teardown_kills_everything))
