/* SPDX-License-Identifier: MIT */
/*
 * Hang detection and process groups: a worker busy computing for three
 * heartbeat timeouts is left alone; a stopped one is killed as
 * heartbeat_lost; descendants of a worker, detached or not, go with it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "ht-check.h"

/* Short heartbeats so a hang shows within a second. */
#define HB_INTERVAL_MS 100
#define HB_TIMEOUT_MS  300

static json_t *
hb_params(void)
{
	return ht_testworker_params(json_pack("{s:{s:i, s:i}}", "settings", "heartbeat_interval_ms",
	    HB_INTERVAL_MS, "heartbeat_timeout_ms", HB_TIMEOUT_MS));
}

START_TEST(test_busy_worker_is_not_hung)
{
	struct ht_conn *m = ht_master, *client;
	json_t *reply, *res, *w;
	pid_t pid;

	reply = ht_spawn(m, hb_params(), ht_ms(10000));
	res = ht_assert_result(reply);
	pid = ht_worker_pid(res);

	client = ht_conn_open_ok(ht_str(res, "socket"));
	json_decref(ht_conn_hello(client, "client", NULL, ht_ms(5000)));
	/* Three heartbeat timeouts of CPU work with the loop blocked. */
	w = ht_conn_call(client, "spin", json_pack("{s:i}", "ms", 3 * HB_TIMEOUT_MS), ht_ms(10000));
	ck_assert_msg(
	    ht_result(w), "the spinning worker was killed: %s (%s)", ht_dump(w), strerror(errno));
	json_decref(w);
	/* Still serving, and herdd still counts it ready. */
	w = ht_conn_call(client, "echo", json_pack("[i]", 5), ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_array_get(ht_assert_result(w), 0)), 5);
	json_decref(w);
	ck_assert(ht_pid_alive(pid));
	w = ht_conn_call(m, "inspect", json_pack("{s:s}", "id", ht_str(res, "id")), ht_ms(5000));
	ck_assert_str_eq(ht_str(ht_assert_result(w), "state"), "ready");
	json_decref(w);
	w = ht_conn_wait_event(m, "heartbeat_lost", NULL, 0);
	ck_assert_msg(!w, "unexpected event %s", ht_dump(w));

	ht_conn_close(client);
	json_decref(reply);
}
END_TEST

START_TEST(test_stopped_worker_is_heartbeat_lost)
{
	struct ht_conn *m = ht_master;
	json_t *reply, *res, *ev;
	pid_t pid;

	reply = ht_spawn(m, hb_params(), ht_ms(10000));
	res = ht_assert_result(reply);
	pid = ht_worker_pid(res);

	ck_assert_int_eq(kill(pid, SIGSTOP), 0);
	ev = ht_wait_event_ok(m, "heartbeat_lost", ht_str(res, "id"), ht_ms(5000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "reason"), "heartbeat_lost");
	json_decref(ev);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(1000)), 0);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	json_decref(reply);
}
END_TEST

/* Forks two descendants of the worker at socket (one in a session of its own). */
static void
spawn_grandchildren(const char *socket, pid_t *attached, pid_t *detached)
{
	json_t *r;

	r = ht_worker_call(
	    socket, NULL, "spawn_grandchild", json_pack("{s:b}", "detach", 0), ht_ms(5000));
	*attached = ht_worker_pid(ht_assert_result(r));
	json_decref(r);
	r = ht_worker_call(
	    socket, NULL, "spawn_grandchild", json_pack("{s:b}", "detach", 1), ht_ms(5000));
	*detached = ht_worker_pid(ht_assert_result(r));
	json_decref(r);
	ck_assert_int_gt(*attached, 0);
	ck_assert_int_gt(*detached, 0);
	ht_track_pid(*attached);
	ht_track_pid(*detached);
	ck_assert(ht_pid_alive(*attached));
	ck_assert(ht_pid_alive(*detached));
	ck_assert_int_ne(getsid(*detached), getsid(*attached));
}

START_TEST(test_grandchildren_die_with_worker)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *m = ht_master;
	json_t *reply, *res, *r;
	pid_t g1, g2, pid;

	/* Stopped by shutdown. */
	reply = ht_spawn(m, ht_testworker_params(NULL), ht_ms(10000));
	res = ht_assert_result(reply);
	spawn_grandchildren(ht_str(res, "socket"), &g1, &g2);
	r = ht_conn_call(m, "shutdown",
	    json_pack("{s:s, s:i}", "id", ht_str(res, "id"), "grace_ms", 500), ht_ms(10000));
	ht_assert_result(r);
	json_decref(r);
	ck_assert_msg(ht_wait_pid_gone(g1, ht_ms(1000)) == 0, "grandchild %d survived", (int)g1);
	ck_assert_msg(
	    ht_wait_pid_gone(g2, ht_ms(1000)) == 0, "detached grandchild %d survived", (int)g2);
	json_decref(reply);

	/* Stopped because its master went away. */
	{
		struct ht_conn *m2 = ht_herdd_open(d, "master", "short-lived");

		ck_assert_ptr_nonnull(m2);
		reply = ht_spawn(m2, ht_testworker_params(NULL), ht_ms(10000));
		res = ht_assert_result(reply);
		pid = ht_worker_pid(res);
		spawn_grandchildren(ht_str(res, "socket"), &g1, &g2);
		ht_conn_close(m2);
	}
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(1000)), 0);
	ck_assert_msg(ht_wait_pid_gone(g1, ht_ms(1000)) == 0, "grandchild %d survived", (int)g1);
	ck_assert_msg(
	    ht_wait_pid_gone(g2, ht_ms(1000)) == 0, "detached grandchild %d survived", (int)g2);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(1000)), 0);
	json_decref(reply);
}
END_TEST

HT_MAIN("sup-heartbeat",
    HT_HERDD_CASE("heartbeat", 30, ht_grace_args, test_busy_worker_is_not_hung,
        test_stopped_worker_is_heartbeat_lost, test_grandchildren_die_with_worker))
