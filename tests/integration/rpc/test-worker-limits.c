/* SPDX-License-Identifier: MIT */
/*
 * Limits and bad input on a worker's socket: framing violations get one error
 * reply with id null and the connection closes; request-level errors get an
 * error reply and the connection stays. Also herd_serve()'s own argument
 * checks and the socket file rules (0600, stale replaced, live refused).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "example-worker.h"
#include "ht-check.h"
#include "ht-example.h"

static struct ht_server S;

/* A client connection to the worker under test, hello done. */
static struct ht_conn *
open_client(void *arg)
{
	return ht_client_ok(S.path, NULL);
}

/* Sends raw bytes after hello and expects one framing error with id null, then EOF. */
static void
expect_framing_error(const char *bytes, size_t len, const char *name)
{
	struct ht_conn *c = open_client(NULL);

	ck_assert_int_eq(ht_conn_send_raw(c, bytes, len), 0);
	ht_expect_close(c, name);
	ht_conn_close(c);
}

START_TEST(test_framing)
{
	char big[3000];
	struct ht_conn *c;
	json_t *reply;

	ht_server_start_ok(&S, NULL, json_pack("{s:i}", "max_message_size", 1024));
	/* An oversize line, whole. */
	memset(big, 'x', sizeof(big));
	memcpy(big, "{\"a\":\"", 6);
	big[sizeof(big) - 1] = '\n';
	expect_framing_error(big, sizeof(big), "message_too_large");
	/* An oversize line still without its newline is caught as soon as it is certain. */
	expect_framing_error(big, 1500, "message_too_large");
	/* The lines herdd refuses too (test-herdd-protocol.c), each on its own connection. */
	ht_expect_bad_lines_close(open_client, NULL);

	/* The limit is reported in the error's data. */
	c = ht_client_ok(S.path, NULL);
	ck_assert_int_eq(ht_conn_send_raw(c, big, sizeof(big)), 0);
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(reply), "limit")), 1024);
	json_decref(reply);
	ht_conn_close(c);

	/* A JSON object that is not JSON-RPC is a request error: the connection stays. */
	c = ht_client_ok(S.path, NULL);
	ck_assert_int_eq(ht_conn_send_raw(c, "{\"hello\":\"world\"}\n", 18), 0);
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "invalid_request");
	json_decref(reply);
	/* Empty lines are ignored. */
	ck_assert_int_eq(ht_conn_send_raw(c, "\n\n", 2), 0);
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 42), 861);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_reply_over_client_limit)
{
	struct ht_conn *c;
	char text[2001];

	ht_server_start_ok(&S, NULL, NULL);
	/* The client says it takes messages of 1024 bytes at most. */
	c = ht_client_ok(S.path, json_pack("{s:{s:i}}", "settings", "max_message_size", 1024));
	memset(text, 'y', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	ht_expect(c, "echo", json_pack("{s:s}", "t", text), "limit_exceeded");
	ht_expect(c, "echo", json_pack("{s:s}", "t", "short"), NULL);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_pending_limit)
{
	struct ht_conn *c;
	json_t *reply, *data;
	int64_t first = 0, over;

	ht_server_start_ok(&S, NULL, NULL);
	c = ht_client_ok(S.path, NULL);
	for (int i = 0; i < 1024; i++) {
		int64_t id = ht_conn_send_request(c, "sleep", json_pack("{s:i}", "ms", 600000));

		ck_assert_int_gt(id, 0);
		if (i == 0)
			first = id;
	}
	over = ht_conn_send_request(c, "sum", json_pack("{s:i}", "n", 3));
	reply = ht_conn_wait_reply(c, over, ht_ms(10000));
	ck_assert_str_eq(ht_error_name(reply), "too_many_requests");
	data = ht_error_data(reply);
	ck_assert_int_eq(json_integer_value(json_object_get(data, "limit")), 1024);
	json_decref(reply);
	/* Finishing one (a cancel) makes room for one more. */
	ht_cancel_ok(c, first);
	ht_expect_int(c, "sum", json_pack("{s:i}", "n", 3), 3);
	/* Closing the connection cancels the 1023 left; ht_server_stop_ok() checks they are all freed. */
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

START_TEST(test_duplicate_id)
{
	struct ht_conn *c;
	json_t *reply;
	const char *req =
	    "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"method\":\"sleep\",\"params\":{\"ms\":200}}\n";

	ht_server_start_ok(&S, NULL, NULL);
	c = ht_client_ok(S.path, NULL);
	ck_assert_int_eq(ht_conn_send_raw(c, req, strlen(req)), 0);
	ck_assert_int_eq(ht_conn_send_raw(c, req, strlen(req)), 0);
	/* The second use of a pending id is refused at once; the first still completes. */
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_str_eq(ht_error_name(reply), "invalid_request");
	json_decref(reply);
	reply = ht_conn_recv(c, ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "slept")), 200);
	json_decref(reply);
	ht_conn_close(c);
	ht_server_stop_ok(&S);
}
END_TEST

static void
dummy(herd_request *req, json_t *arg)
{
	herd_request_reply(req, NULL);
}

START_TEST(test_serve_arguments)
{
	static const struct herd_function dup[] = { { "f", HERD_KIND_CALL, dummy },
		{ "f", HERD_KIND_PIPE, dummy } };
	static const struct herd_function reserved[] = { { "herd.f", HERD_KIND_CALL, dummy } };
	static const struct herd_function nohandler[] = { { "f", HERD_KIND_CALL, NULL } };
	const struct herd_worker_type t_dup = { .functions = dup, .n_functions = 2 };
	const struct herd_worker_type t_res = { .functions = reserved, .n_functions = 1 };
	const struct herd_worker_type t_noh = { .functions = nohandler, .n_functions = 1 };
	int before = ht_count_fds(getpid());
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char dir[128], path[192], longpath[300];
	herd_server *srv = NULL;
	json_t *bad;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/w.sock", dir);
	ck_assert_int_eq(herd_serve(loop, &t_dup, path, NULL, NULL, &srv), -EINVAL);
	ck_assert_int_eq(herd_serve(loop, &t_res, path, NULL, NULL, &srv), -EINVAL);
	ck_assert_int_eq(herd_serve(loop, &t_noh, path, NULL, NULL, &srv), -EINVAL);
	ck_assert_int_eq(herd_serve(NULL, &example_worker_type, path, NULL, NULL, &srv), -EINVAL);
	bad = json_pack("{s:i}", "no_such_setting", 1);
	ck_assert_int_eq(herd_serve(loop, &example_worker_type, path, NULL, bad, &srv), -EINVAL);
	json_decref(bad);
	bad = json_pack("{s:s}", "fail_init", "init says no");
	ck_assert_int_eq(herd_serve(loop, &example_worker_type, path, bad, NULL, &srv), -EREMOTEIO);
	json_decref(bad);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	ck_assert_int_eq(
	    herd_serve(loop, &example_worker_type, longpath, NULL, NULL, &srv), -ENAMETOOLONG);
	ck_assert_ptr_null(srv);
	ck_assert_int_ne(access(path, F_OK), 0);
	ev_loop_destroy(loop);
	ck_assert_int_eq(ht_count_fds(getpid()), before);
	ht_teardown();
}
END_TEST

START_TEST(test_socket_file)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, before = ht_count_fds(getpid());
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	herd_server *srv = NULL, *srv2 = NULL;
	char dir[128], path[192];
	struct stat st;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/w.sock", dir);
	strcpy(sa.sun_path, path);

	/* A stale socket (bound, never listening, closed) is replaced. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(fd);
	ck_assert_int_eq(herd_serve(loop, &example_worker_type, path, NULL, NULL, &srv), 0);
	ck_assert_str_eq(herd_server_socket_path(srv), path);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	/* A live one is not. */
	ck_assert_int_eq(
	    herd_serve(loop, &example_worker_type, path, NULL, NULL, &srv2), -EADDRINUSE);
	/* Closing removes the file. */
	ck_assert_int_eq(herd_server_close(srv), 0);
	ck_assert_int_ne(access(path, F_OK), 0);
	ck_assert_ptr_null(herd_server_socket_path(srv));
	srv = herd_server_unref(srv);

	/* Something that is not a socket is never replaced. */
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(herd_serve(loop, &example_worker_type, path, NULL, NULL, &srv), -EEXIST);
	ck_assert_int_eq(access(path, F_OK), 0);
	unlink(path);

	/* Dropping the last reference closes too. */
	ck_assert_int_eq(herd_serve(loop, &example_worker_type, path, NULL, NULL, &srv), 0);
	srv = herd_server_unref(srv);
	ck_assert_int_ne(access(path, F_OK), 0);
	ev_loop_destroy(loop);
	ck_assert_int_eq(ht_count_fds(getpid()), before);
	ht_teardown();
}
END_TEST

HT_MAIN("worker-limits",
    HT_CASE("limits", 60, test_framing, test_reply_over_client_limit, test_pending_limit,
        test_duplicate_id, test_serve_arguments, test_socket_file))
