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
#include "worker-test-util.h"

/* The method of msg (borrowed), or "" when it has none. */
static const char *
method_of(json_t *msg)
{
	const char *m = json_string_value(json_object_get(msg, "method"));

	return m ? m : "";
}

/* Reads the next "connection" notice and returns its count of open connections. */
static json_int_t
next_open_count(struct wt_chan *ch)
{
	json_t *msg = wt_chan_recv_skip_heartbeats(ch, ht_ms(5000));
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
	struct wt_chan ch;
	struct ht_conn *c;
	json_t *msg, *ready, *id;
	int child_end;
	pid_t pid;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(sock, sizeof(sock), "%s/early.sock", dir);
	ck_assert_int_eq(wt_chan_open(&ch, &child_end), 0);
	pid = wt_spawn(NULL, child_end, "w-early", -1);
	close(child_end);
	ck_assert_int_gt(pid, 0);

	msg = wt_chan_recv(&ch, ht_ms(10000));
	ck_assert_msg(msg, "no hello from the worker");
	ck_assert_str_eq(method_of(msg), "hello");
	id = json_object_get(msg, "id");
	ck_assert_int_eq(
	    wt_chan_send(&ch,
	        proto_result(id,
	            json_pack("{s:s, s:s, s:s, s:i}", "id", "w-early", "socket", sock,
	                "shutdown_on", "connection_closed", "connection_timeout_ms", 60000))),
	    0);
	json_decref(msg);
	ready = wt_chan_recv_skip_heartbeats(&ch, ht_ms(10000));
	ck_assert_msg(ready, "no ready from the worker");
	ck_assert_str_eq(method_of(ready), "ready");

	/* ready stays unanswered while a client comes and goes. */
	c = wt_connect(sock, NULL);
	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(next_open_count(&ch), 1);
	ht_conn_close(c);
	ck_assert_int_eq(next_open_count(&ch), 0);
	ck_assert_int_eq(wt_wait_exit(pid), 0);
	ck_assert_int_ne(access(sock, F_OK), 0);

	json_decref(ready);
	wt_chan_close(&ch);
	ht_teardown();
}
END_TEST

static Suite *
early_client_suite(void)
{
	Suite *s = suite_create("worker-early-client");
	TCase *tc = tcase_create("supervised");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_client_before_ready_answer);
	suite_add_tcase(s, tc);
	return s;
}

HT_MAIN(early_client_suite)
