/* SPDX-License-Identifier: MIT */
/*
 * herd_worker_main under supervision: this test plays herdd on the worker's
 * fd 3 (a socketpair given to a real child process) and checks the worker's
 * side of PROTOCOL.md section 5: hello, ready or init_failed, heartbeats,
 * failure, shutdown, EOF, and shutdown_on connection_closed.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"
#include "ht-example.h"
#include "proto.h"

static char dir[128], sock[192];
static int fds_before;
static struct ht_conn *ch; /* herdd's end of the worker's fd 3 */

/* Sends msg (stolen) on the channel. Returns 0 or -errno. */
static int
chan_send(json_t *msg)
{
	int r = msg ? ht_conn_send(ch, msg) : -ENOMEM;

	json_decref(msg);
	return r;
}

/* herdd goes away (or the test ends): closes our end. */
static void
chan_close(void)
{
	ht_conn_close(ch);
	ch = NULL;
}

/* Starts the worker with fd 3 and reads its hello request. Returns the pid. */
static pid_t
spawn_supervised(void)
{
	json_t *msg, *params;
	int child_end;
	pid_t pid;

	fds_before = ht_count_fds(getpid());
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(sock, sizeof(sock), "%s/w.sock", dir);
	ck_assert_ptr_nonnull(ch = ht_chan_open(&child_end));
	pid = ht_example_spawn(NULL, child_end, "w7", -1);
	close(child_end);
	ck_assert_int_gt(pid, 0);

	msg = ht_conn_recv(ch, ht_ms(10000));
	ck_assert_msg(msg, "no hello from the worker");
	ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "hello");
	ck_assert_int_eq(json_integer_value(json_object_get(msg, "id")), 1);
	params = json_object_get(msg, "params");
	ck_assert_int_eq(json_integer_value(json_object_get(params, "version")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(params, "role")), "worker");
	ck_assert_int_eq(json_integer_value(json_object_get(params, "pid")), pid);
	json_decref(msg);
	return pid;
}

/* Answers hello with the worker's parameters (extra's members stolen and merged). */
static void
answer_hello(json_t *extra)
{
	json_t *res = json_pack("{s:s, s:s, s:s, s:{s:i}, s:{}, s:s, s:i, s:i}", "id", "w7", "name",
	    "ex", "socket", sock, "init", "seat", 3, "settings", "shutdown_on", "explicit",
	    "connection_timeout_ms", 10000, "heartbeat_interval_ms", 50);
	json_t *id = json_integer(1);

	if (extra)
		json_object_update(res, extra);
	json_decref(extra);
	ck_assert_int_eq(chan_send(proto_result(id, res)), 0);
	json_decref(id);
}

/* Expects the ready request, checks its functions and accepts it. */
static void
expect_ready(void)
{
	json_t *msg = ht_conn_recv_except(ch, "heartbeat", ht_ms(10000)), *fns;

	ck_assert_msg(msg, "no ready");
	ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "ready");
	fns = json_object_get(json_object_get(msg, "params"), "functions");
	ck_assert_int_eq(json_array_size(fns), 13);
	ck_assert_int_eq(chan_send(proto_result(json_object_get(msg, "id"), json_object())), 0);
	json_decref(msg);
	/* The socket is listening before ready is sent. */
	ck_assert_int_eq(access(sock, F_OK), 0);
}

/* Expects the worker's "connection" notification telling open connections. */
static void
expect_connection(int open)
{
	json_t *msg = ht_conn_recv_except(ch, "heartbeat", ht_ms(5000));

	ck_assert_str_eq(ht_str(msg, "method"), "connection");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(msg, "params"), "open")), open);
	json_decref(msg);
}

static void
finish(void)
{
	chan_close();
	ht_teardown();
	ck_assert_int_eq(ht_count_fds(getpid()), fds_before);
}

START_TEST(test_ready_heartbeat_shutdown)
{
	struct ht_conn *c;
	json_t *reply, *msg;
	json_int_t served0, served1 = 0;
	pid_t pid;

	pid = spawn_supervised();
	answer_hello(NULL);
	expect_ready();
	/* fd 3 is close-on-exec once taken, and the variables are gone from the environment. */
	c = ht_client_ok(sock, NULL);
	reply = ht_conn_call(c, "stats", NULL, ht_ms(5000));
	ck_assert(json_is_true(json_object_get(ht_result(reply), "fd3_cloexec")));
	ck_assert(json_is_false(json_object_get(ht_result(reply), "env_channel_fd")));
	ck_assert_int_eq(json_integer_value(json_object_get(
	                     json_object_get(ht_result(reply), "worker_init"), "seat")),
	    3);
	json_decref(reply);

	/* Heartbeats come from the loop and count the calls served. */
	msg = ht_conn_recv(ch, ht_ms(5000));
	ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "heartbeat");
	served0 = json_integer_value(json_object_get(json_object_get(msg, "params"), "served"));
	json_decref(msg);
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 10), 45);
	while (served1 <= served0) {
		msg = ht_conn_recv(ch, ht_ms(5000));
		ck_assert_msg(msg, "heartbeats stopped");
		served1 =
		    json_integer_value(json_object_get(json_object_get(msg, "params"), "served"));
		json_decref(msg);
	}
	/* The hello result names the worker's id from herdd. */
	ht_conn_close(c);
	c = ht_conn_open(sock);
	reply = ht_conn_hello(c, "client", NULL, ht_ms(5000));
	ck_assert_str_eq(json_string_value(json_object_get(ht_result(reply), "id")), "w7");
	json_decref(reply);

	/* herdd's shutdown: a graceful stop with status 0 and no socket left. */
	ck_assert_int_eq(chan_send(proto_notification("shutdown", json_object())), 0);
	ht_example_end_ok(pid, 0, 0, sock);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);
	finish();
}
END_TEST

START_TEST(test_init_failed)
{
	json_t *msg;
	pid_t pid;

	pid = spawn_supervised();
	answer_hello(json_pack("{s:{s:s}}", "init", "fail_init", "config missing"));
	msg = ht_conn_recv_except(ch, "heartbeat", ht_ms(10000));
	ck_assert_msg(msg, "no init_failed");
	ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "init_failed");
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(msg, "params"), "message")),
	    "config missing");
	chan_send(proto_result(json_object_get(msg, "id"), json_object()));
	json_decref(msg);
	ht_example_end_ok(pid, 0, 1, sock);
	finish();

	/* A socket it cannot bind is an init failure too. */
	pid = spawn_supervised();
	answer_hello(json_pack("{s:s}", "socket", "/nonexistent-dir/w.sock"));
	msg = ht_conn_recv_except(ch, "heartbeat", ht_ms(10000));
	ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "init_failed");
	ck_assert_ptr_nonnull(
	    strstr(json_string_value(json_object_get(json_object_get(msg, "params"), "message")),
	        "cannot listen"));
	json_decref(msg);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 1);
	finish();
}
END_TEST

START_TEST(test_eof_exits)
{
	pid_t pid;

	pid = spawn_supervised();
	answer_hello(NULL);
	expect_ready();
	/* herdd goes away: the worker exits at once and removes its socket. */
	chan_close();
	ht_example_end_ok(pid, 0, 1, sock);
	finish();

	/* Also before herdd answered hello. */
	pid = spawn_supervised();
	chan_close();
	ck_assert_int_eq(ht_wait_exit_ok(pid), 1);
	finish();
}
END_TEST

START_TEST(test_failure_and_sigterm)
{
	struct ht_conn *c;
	json_t *reply, *msg;
	pid_t pid;

	pid = spawn_supervised();
	answer_hello(NULL);
	expect_ready();
	c = ht_client_ok(sock, NULL);
	reply = ht_conn_call(
	    c, "worker_fail", json_pack("{s:s}", "message", "lost my marbles"), ht_ms(5000));
	ck_assert(json_is_object(ht_result(reply)));
	json_decref(reply);
	msg = ht_conn_recv_except(ch, "heartbeat", ht_ms(5000));
	ck_assert_msg(msg, "no failure notification");
	ck_assert_str_eq(json_string_value(json_object_get(msg, "method")), "failure");
	ck_assert_ptr_null(json_object_get(msg, "id"));
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(msg, "params"), "message")),
	    "lost my marbles");
	json_decref(msg);
	ht_example_end_ok(pid, 0, 1, sock);
	ht_conn_close(c);
	finish();

	pid = spawn_supervised();
	answer_hello(NULL);
	expect_ready();
	ht_example_end_ok(pid, SIGTERM, 0, sock);
	finish();
}
END_TEST

START_TEST(test_connection_closed)
{
	struct ht_conn *c;
	pid_t pid;

	pid = spawn_supervised();
	answer_hello(json_pack("{s:s}", "shutdown_on", "connection_closed"));
	expect_ready();
	c = ht_client_ok(sock, NULL);
	expect_connection(1);
	/* The first connection is the only one: the socket is gone. */
	ck_assert_int_eq(ht_wait_path_gone(sock, ht_ms(5000)), 0);
	ht_conn_close(c);
	expect_connection(0);
	ck_assert_int_eq(ht_wait_exit_ok(pid), 0);
	finish();

	/* Nobody connects within connection_timeout_ms: the worker gives up. */
	pid = spawn_supervised();
	answer_hello(json_pack(
	    "{s:s, s:i}", "shutdown_on", "connection_closed", "connection_timeout_ms", 200));
	expect_ready();
	ht_example_end_ok(pid, 0, 1, sock);
	finish();
}
END_TEST

HT_MAIN("worker-supervised",
    HT_CASE("supervised", 60, test_ready_heartbeat_shutdown, test_init_failed, test_eof_exits,
        test_failure_and_sigterm, test_connection_closed))
