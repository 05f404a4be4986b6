/* SPDX-License-Identifier: MIT */
/*
 * The example worker executable started directly (herd_worker_main in
 * standalone mode): it serves its --socket until herd.shutdown or a signal,
 * exits with the documented status, and never leaves its socket file behind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"
#include "ht-example.h"

static char dir[128], sock[192];
static int fds_before;

/* The case's setup: a fresh directory for the socket, and the fds we hold now. */
static void
setup(void)
{
	fds_before = ht_count_fds(getpid());
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(sock, sizeof(sock), "%s/w.sock", dir);
}

/* The case's teardown: everything the test started is gone, and no fd of ours leaked. */
static void
finish(void)
{
	ht_teardown();
	ck_assert_int_eq(ht_count_fds(getpid()), fds_before);
}

/* Starts the worker on sock with extra args and waits for its socket. */
static pid_t
start_worker(const char *init, const char *settings)
{
	const char *args[8] = { "--socket", sock };
	int n = 2;
	pid_t pid;

	if (init) {
		args[n++] = "--init";
		args[n++] = init;
	}
	if (settings) {
		args[n++] = "--settings";
		args[n++] = settings;
	}
	args[n] = NULL;
	pid = ht_example_spawn(args, -1, NULL, -1);
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(ht_wait_path(sock, pid, ht_ms(10000)), 0);
	return pid;
}

/*
 * The last call on c: method (params stolen) answers with an object, then
 * the worker pid exits by itself with status and removes its socket.
 */
static void
last_call(struct ht_conn *c, pid_t pid, const char *method, json_t *params, int status)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));

	ck_assert_msg(json_is_object(ht_result(reply)), "%s: %s", method, ht_dump(reply));
	json_decref(reply);
	ht_example_end_ok(pid, 0, status, sock);
	ht_conn_close(c);
}

START_TEST(test_serve_and_sigterm)
{
	struct ht_conn *c;
	struct stat st;
	json_t *reply;
	pid_t pid;

	pid = start_worker("{\"answer\":42}", NULL);
	ck_assert_int_eq(stat(sock, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	c = ht_conn_open_ok(sock);
	reply = ht_conn_hello(c, "client", NULL, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "pid")), pid);
	ck_assert(json_is_null(json_object_get(ht_result(reply), "id")));
	json_decref(reply);
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 42), 861);
	reply = ht_conn_call(c, "stats", NULL, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(ht_result(reply), "worker_init"), "answer")),
	    42);
	ck_assert(json_is_false(json_object_get(ht_result(reply), "env_channel_fd")));
	json_decref(reply);
	/* SIGTERM: a graceful stop, status 0, socket removed, our connection closed. */
	ht_example_end_ok(pid, SIGTERM, 0, sock);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_shutdown_builtin)
{
	struct ht_conn *c;
	json_t *reply;
	pid_t pid;

	pid = start_worker(NULL, "{\"handshake_timeout_ms\": 4321}");
	c = ht_client_ok(sock, NULL);
	reply = ht_conn_call(c, "herd.settings", NULL, ht_ms(5000));
	ck_assert_int_eq(
	    json_integer_value(json_object_get(ht_result(reply), "handshake_timeout_ms")), 4321);
	json_decref(reply);
	last_call(c, pid, "herd.shutdown", NULL, 0);
}
END_TEST

START_TEST(test_init_failure_and_usage)
{
	const char *fail[] = { "--socket", sock, "--init", "{\"fail_init\":\"no database\"}",
		NULL };
	const char *no_socket[] = { "--init", "{}", NULL };
	const char *bad_json[] = { "--socket", sock, "--init", "{nope", NULL };
	char err[4096];
	int pipefd[2];
	pid_t pid;

	ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
	pid = ht_example_spawn(fail, -1, NULL, pipefd[1]);
	close(pipefd[1]);
	ck_assert_int_ge(ht_read_all(pipefd[0], err, sizeof(err), ht_ms(10000)), 0);
	close(pipefd[0]);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 1);
	ck_assert_msg(strstr(err, "no database"), "stderr: %s", err);
	ck_assert_int_ne(access(sock, F_OK), 0);

	pid = ht_example_spawn(no_socket, -1, NULL, -1);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 2);
	pid = ht_example_spawn(bad_json, -1, NULL, -1);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 2);
}
END_TEST

/*
 * Waits until the worker renames its new socket over the path: the old file
 * is still there, so waiting for the path to exist would return at once.
 */
static void
wait_replaced(int ifd, int timeout_ms)
{
	const char *base = strrchr(sock, '/') + 1;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct pollfd p = { .fd = ifd, .events = POLLIN };

	for (;;) {
		ssize_t n;

		ck_assert_int_eq(poll(&p, 1, timeout_ms), 1);
		n = read(ifd, buf, sizeof(buf));
		ck_assert_int_gt(n, 0);
		for (char *e = buf; e < buf + n;) {
			const struct inotify_event *ev = (const struct inotify_event *)e;

			if (ev->len && strcmp(ev->name, base) == 0)
				return;
			e += sizeof(*ev) + ev->len;
		}
	}
}

START_TEST(test_socket_in_use)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *args[] = { "--socket", sock, NULL };
	struct ht_conn *c;
	pid_t pid;
	int fd, ifd;

	strcpy(sa.sun_path, sock);
	/* A live server on the path: the worker refuses to take it over. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 4), 0);
	pid = ht_example_spawn(args, -1, NULL, -1);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 1);
	ck_assert_int_eq(access(sock, F_OK), 0);
	/* Once that server is dead, its file is stale and gets replaced. */
	close(fd);
	ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	ck_assert_int_ge(ifd, 0);
	ck_assert_int_ge(inotify_add_watch(ifd, dir, IN_MOVED_TO), 0);
	pid = ht_example_spawn(args, -1, NULL, -1);
	wait_replaced(ifd, 10000);
	close(ifd);
	c = ht_client_ok(sock, NULL);
	ht_expect_int(c, "product", json_pack("{s:i}", "n", 5), 120);
	ht_conn_close(c);
	ht_example_end_ok(pid, SIGINT, 0, sock);
}
END_TEST

START_TEST(test_worker_fail_standalone)
{
	pid_t pid = start_worker(NULL, NULL);

	/* The reply comes first; then the failure ends the process with status 1. */
	last_call(
	    ht_client_ok(sock, NULL), pid, "worker_fail", json_pack("{s:s}", "message", "late"), 1);
}
END_TEST

HT_MAIN("worker-exec",
    HT_CASE_WITH("exec", 60, setup, finish, test_serve_and_sigterm, test_shutdown_builtin,
        test_init_failure_and_usage, test_socket_in_use, test_worker_fail_standalone))
