/* SPDX-License-Identifier: MIT */
/*
 * shutdown_on connection_closed when the client is faster than herdd: the
 * worker listens before it sends ready, so a client may connect, call and
 * close before the worker has read herdd's answer to ready (under load it
 * did, and the worker then waited for connection_timeout_ms). Playing herdd
 * on fd 3, this test never answers ready at all: the worker must still
 * report the connection's opening and end, and exit.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ht-check.h"
#include "ht-example.h"
#include "proto.h"

/* The method of msg (borrowed), or "" when it has none. */
static const char *
method_of(json_t *msg)
{
	const char *m = json_string_value(json_object_get(msg, "method"));

	return m ? m : "";
}

/* Reads the next "connection" notice and returns its count of open connections. */
static json_int_t
next_open_count(struct ht_conn *ch)
{
	json_t *msg = ht_conn_recv_except(ch, "heartbeat", ht_ms(5000));
	json_int_t open;

	ck_assert_msg(msg, "no connection notice from the worker");
	ck_assert_str_eq(method_of(msg), "connection");
	open = json_integer_value(json_object_get(json_object_get(msg, "params"), "open"));
	json_decref(msg);
	return open;
}

START_TEST(test_client_before_ready_answer)
{
	char dir[128], sock[192];
	struct ht_conn *ch, *c;
	json_t *msg, *ready, *reply;
	int child_end;
	pid_t pid;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(sock, sizeof(sock), "%s/early.sock", dir);
	ch = ht_chan_open(&child_end);
	ck_assert_ptr_nonnull(ch);
	pid = ht_example_spawn(NULL, child_end, "w-early", -1);
	close(child_end);
	ck_assert_int_gt(pid, 0);

	msg = ht_conn_recv(ch, ht_ms(10000));
	ck_assert_msg(msg, "no hello from the worker");
	ck_assert_str_eq(method_of(msg), "hello");
	reply = proto_result(json_object_get(msg, "id"),
	    json_pack("{s:s, s:s, s:s, s:i}", "id", "w-early", "socket", sock, "shutdown_on",
	        "connection_closed", "connection_timeout_ms", 60000));
	ck_assert_int_eq(ht_conn_send(ch, reply), 0);
	json_decref(reply);
	json_decref(msg);
	ready = ht_conn_recv_except(ch, "heartbeat", ht_ms(10000));
	ck_assert_msg(ready, "no ready from the worker");
	ck_assert_str_eq(method_of(ready), "ready");

	/* ready stays unanswered while a client comes and goes. */
	c = ht_hello_open(sock, "client", NULL, NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(next_open_count(ch), 1);
	ht_conn_close(c);
	ck_assert_int_eq(next_open_count(ch), 0);
	ht_example_end_ok(pid, 0, 0, sock);

	json_decref(ready);
	ht_conn_close(ch);
}
END_TEST

HT_MAIN("worker-early-client", HT_CASE("supervised", 60, test_client_before_ready_answer))
