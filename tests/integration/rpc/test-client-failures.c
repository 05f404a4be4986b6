/* SPDX-License-Identifier: MIT */
/*
 * How libherd's calling side fails: a worker SIGKILLed mid-call (everything
 * pending fails at once with connection_closed), oversize messages in both
 * directions, a peer that goes silent (heartbeat timeout), a peer that never
 * answers hello (connection timeout), and connecting to nothing.
 */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <check.h>

#include "ht-check.h"
#include "ht-example.h"

static struct ht_example worker;

struct closed {
	int calls;
	int reason;
	char name[64];
};

static void
on_close(herd_conn *conn, int reason, herd_error *err, void *userdata)
{
	struct closed *c = userdata;

	c->calls++;
	c->reason = reason;
	snprintf(c->name, sizeof(c->name), "%s", err ? herd_error_name(err) : "(none)");
	ck_assert_int_eq(herd_conn_is_closed(conn), 1);
}

static void
on_reply(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	ht_outcome_set(userdata, r, result, error);
}

static void
on_stream_end(herd_stream *s, int r, json_t *result, herd_error *error, void *userdata)
{
	ht_outcome_set(userdata, r, result, error);
}

static void
on_ignore_item(herd_stream *s, json_t *item, bool initial, void *userdata)
{
}

/* The worker dies while a blocking call waits: the call returns at once, not at its timeout. */
static void
kill_worker_from_callback(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(kill(worker.pid, SIGKILL), 0);
}

START_TEST(test_worker_killed_mid_call)
{
	struct ht_outcome calls[10] = { 0 }, stream = { 0 };
	struct closed closed = { 0 };
	herd_sink *sink = NULL;
	herd_conn *conn;
	int64_t started;
	int fds;

	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(_i), NULL), 0);
	fds = ht_count_fds(getpid());
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(herd_conn_on_close(conn, on_close, &closed), 0);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(herd_call_async(conn, "sleep", ht_args("{s:i}", "ms", 60000),
		                     on_reply, &calls[i], NULL),
		    0);
	ck_assert_int_eq(
	    herd_stream_open(conn, "count", ht_args("{s:i, s:i}", "n", 1000, "delay_ms", 1000),
	        on_ignore_item, on_stream_end, &stream, NULL),
	    0);
	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, &sink), 0);
	/* The kill happens from the reply of a quick call, so it lands while everything
	 * else is pending and the blocking call below is waiting. */
	ck_assert_int_eq(herd_call_async(conn, "sum", ht_args("{s:i}", "n", 1),
	                     kill_worker_from_callback, NULL, NULL),
	    0);
	herd_conn_set_call_timeout(conn, HT_USEC(60000));
	started = ht_now_ms();
	ck_assert_int_eq(
	    herd_call(conn, "sleep", ht_args("{s:i}", "ms", 60000), 0, NULL), -ECONNRESET);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "connection_closed");
	/* Not a timing assertion: the call's own timeout is 60 s; ending well before it
	 * shows the death was noticed, not waited out. */
	ck_assert_int_lt(ht_now_ms() - started, ht_ms(30000));

	for (int i = 0; i < 10; i++) {
		ck_assert_int_eq(calls[i].calls, 1);
		ck_assert_int_eq(calls[i].r, -ECONNRESET);
		ck_assert_str_eq(calls[i].name, "connection_closed");
	}
	ck_assert_int_eq(stream.calls, 1);
	ck_assert_int_eq(stream.r, -ECONNRESET);
	ck_assert_int_eq(herd_sink_finish(sink, 0, NULL), -ECONNRESET);
	ck_assert_int_eq(herd_sink_send(sink, NULL), -EPIPE);
	ck_assert_int_eq(closed.calls, 1);
	ck_assert_int_eq(closed.reason, -ECONNRESET);
	ck_assert_int_eq(herd_conn_is_closed(conn), 1);
	ck_assert_int_eq(herd_call(conn, "sum", NULL, 0, NULL), -ENOTCONN);
	herd_sink_unref(sink);
	herd_conn_unref(conn);
	/* Already closed: the last unref runs no callback again. */
	ck_assert_int_eq(closed.calls, 1);
	ht_example_kill(&worker);
	ck_assert_int_eq(ht_count_fds(getpid()), fds);
}
END_TEST

START_TEST(test_close_callbacks)
{
	struct ht_outcome pending = { 0 };
	struct closed closed = { 0 };
	herd_conn *conn;

	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(_i), NULL), 0);
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(herd_conn_on_close(conn, on_close, &closed), 0);
	ck_assert_int_eq(
	    herd_call_async(conn, "sleep", ht_args("{s:i}", "ms", 60000), on_reply, &pending, NULL),
	    0);
	ck_assert_int_eq(herd_conn_close(conn), 0);
	ck_assert_int_eq(pending.calls, 1);
	ck_assert_int_eq(pending.r, -ECONNRESET);
	ck_assert_str_eq(pending.name, "connection_closed");
	ck_assert_int_eq(closed.calls, 1);
	ck_assert_int_eq(closed.reason, 0);
	ck_assert_int_eq(herd_conn_close(conn), 0);
	ck_assert_int_eq(herd_conn_on_close(conn, on_close, &closed), -ENOTCONN);
	herd_conn_unref(conn);
	ck_assert_int_eq(closed.calls, 1);

	/* Dropping the last reference closes too, and still tells everyone once. */
	memset(&pending, 0, sizeof(pending));
	memset(&closed, 0, sizeof(closed));
	conn = ht_herd_connect(worker.socket, NULL);
	ck_assert_int_eq(herd_conn_on_close(conn, on_close, &closed), 0);
	ck_assert_int_eq(
	    herd_call_async(conn, "sleep", ht_args("{s:i}", "ms", 60000), on_reply, &pending, NULL),
	    0);
	herd_conn_unref(conn);
	ck_assert_int_eq(pending.calls, 1);
	ck_assert_int_eq(closed.calls, 1);
}
END_TEST

START_TEST(test_oversize_outgoing)
{
	json_t *settings = json_pack("{s:i}", "max_message_size", 4096);
	char big[8192];
	json_t *result = NULL;
	herd_stream *s = NULL;
	herd_sink *k = NULL;
	herd_conn *conn = NULL;
	json_t *item;

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(_i), NULL), 0);
	ck_assert_int_eq(herd_conn_connect(worker.socket, NULL, settings, &conn, NULL), 0);

	/* Refused locally, nothing sent, the connection untouched. */
	ck_assert_int_eq(
	    herd_call(conn, "echo", ht_args("{s:s}", "text", big), 0, &result), -EMSGSIZE);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "message_too_large");
	ck_assert_int_eq(herd_oneway(conn, "note", ht_args("{s:s}", "text", big)), -EMSGSIZE);
	ck_assert_int_eq(
	    herd_stream_open(conn, "count", ht_args("{s:s}", "pad", big), NULL, NULL, NULL, &s),
	    -EMSGSIZE);
	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, &k), 0);
	item = json_string(big);
	ck_assert_int_eq(herd_sink_send(k, item), -EMSGSIZE);
	json_decref(item);
	item = json_integer(5);
	ck_assert_int_eq(herd_sink_send(k, item), 0);
	json_decref(item);
	ck_assert_int_eq(herd_sink_finish(k, 0, &result), 0);
	ck_assert_int_eq(json_integer_value(result), 5);
	json_decref(result);
	herd_sink_unref(k);

	ck_assert_int_eq(herd_conn_is_closed(conn), 0);
	ck_assert_int_eq(herd_call(conn, "echo", ht_args("{s:s}", "text", "small"), 0, &result), 0);
	ck_assert_str_eq(json_string_value(json_object_get(result, "text")), "small");
	json_decref(result);
	herd_conn_unref(conn);
	json_decref(settings);
}
END_TEST

/* A peer that answers hello, then sends one line longer than the client's limit. */
static int
script_oversize(struct ht_conn *p, void *arg)
{
	size_t n = 8192;
	char *line = malloc(n + 64);
	json_t *req, *reply;
	int r = 0;

	if (ht_conn_answer_hello(p,
	        json_pack(
	            "{s:i, s:s, s:i}", "version", 1, "server", "worker", "pid", (int)getpid()),
	        5000) < 0)
		return 10;
	req = ht_conn_recv(p, 5000); /* the call the client is waiting on */
	if (!req)
		return 11;
	json_decref(req);
	memset(line, ' ', n);
	memcpy(line, "{\"jsonrpc\":\"2.0\",\"method\":\"x\",\"params\":[\"", 41);
	line[n - 3] = '"';
	line[n - 2] = ']';
	line[n - 1] = '}';
	line[n] = '\0';
	for (size_t i = 41; i < n - 3; i++)
		line[i] = 'y';
	/* The client may close before taking the whole line: a short write is expected. */
	(void)ht_conn_send_line(p, line);
	free(line);
	/* The client answers the framing error with one error reply, id null, then closes. */
	reply = ht_conn_recv(p, 5000);
	if (!reply || !json_is_null(json_object_get(reply, "id")) ||
	    json_integer_value(json_object_get(json_object_get(reply, "error"), "code")) !=
	        HERD_E_MESSAGE_TOO_LARGE)
		r = 13;
	json_decref(reply);
	return r;
}

/*
 * Connects with settings (stolen) to a fake worker running script and calls
 * it with a budget of call_ms: the call must fail as the connection closes,
 * once, for reason, and the script must succeed.
 */
static void
expect_closed_by(
    int (*script)(struct ht_conn *p, void *arg), json_t *settings, int call_ms, int reason)
{
	struct closed closed = { 0 };
	herd_conn *conn = NULL;
	struct ht_fake fake;

	ck_assert_int_eq(ht_fake_start(&fake, script, NULL), 0);
	ck_assert_int_eq(herd_conn_connect(fake.socket, NULL, settings, &conn, NULL), 0);
	ck_assert_int_eq(herd_conn_on_close(conn, on_close, &closed), 0);
	ck_assert_int_eq(herd_call(conn, "anything", NULL, HT_USEC(call_ms), NULL), -ECONNRESET);
	ck_assert_str_eq(herd_error_name(herd_conn_last_error(conn)), "connection_closed");
	ck_assert_int_eq(closed.calls, 1);
	ck_assert_int_eq(closed.reason, reason);
	herd_conn_unref(conn);
	ck_assert_int_eq(ht_fake_finish(&fake, ht_ms(10000)), 0);
	json_decref(settings);
}

START_TEST(test_oversize_incoming)
{
	expect_closed_by(
	    script_oversize, json_pack("{s:i}", "max_message_size", 4096), 10000, -EBADMSG);
}
END_TEST

/* A peer that agrees to heartbeats, counts the client's, and never sends any itself. */
static int
script_silent(struct ht_conn *p, void *arg)
{
	int heartbeats = 0;
	json_t *msg;

	if (ht_conn_answer_hello(p,
	        json_pack("{s:i, s:s, s:{s:i, s:i}}", "version", 1, "server", "worker", "settings",
	            "heartbeat_interval_ms", 50, "heartbeat_timeout_ms", 400),
	        5000) < 0)
		return 10;
	while ((msg = ht_conn_recv(p, 20000))) {
		const char *m = json_string_value(json_object_get(msg, "method"));

		heartbeats += m && strcmp(m, "heartbeat") == 0;
		json_decref(msg);
	}
	/* EOF: the client gave up on us. It must have sent heartbeats meanwhile. */
	return heartbeats > 0 ? 0 : 14;
}

START_TEST(test_heartbeat_timeout)
{
	/* The call would wait 60 s; the silence closes the connection first. */
	expect_closed_by(script_silent,
	    json_pack("{s:i, s:i}", "heartbeat_interval_ms", 50, "heartbeat_timeout_ms", 400),
	    60000, -ETIMEDOUT);
}
END_TEST

/* Heartbeats keep an idle connection to the real worker open past the timeout. */
START_TEST(test_heartbeat_keeps_alive)
{
	json_t *settings =
	    json_pack("{s:i, s:i}", "heartbeat_interval_ms", 50, "heartbeat_timeout_ms", 300);
	herd_conn *conn = NULL;
	json_t *eff;
	int64_t until;

	ck_assert_int_eq(ht_example_start(&worker, HT_MODE(_i), NULL), 0);
	ck_assert_int_eq(herd_conn_connect(worker.socket, NULL, settings, &conn, NULL), 0);
	eff = herd_conn_get_settings(conn);
	ck_assert_msg(json_integer_value(json_object_get(eff, "heartbeat_timeout_ms")) == 300,
	    "effective settings %s", ht_dump(eff));
	/* Idle for several heartbeat timeouts: this waits for time itself, not an event. */
	until = ht_now_ms() + 1500;
	while (ht_now_ms() < until) {
		ck_assert_int_ge(herd_conn_wait(conn, 100000), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
	}
	ck_assert_int_eq(herd_conn_is_closed(conn), 0);
	ck_assert_int_eq(herd_call(conn, "sum", ht_args("{s:i}", "n", 42), 0, NULL), 0);
	herd_conn_unref(conn);
	json_decref(settings);
}
END_TEST

/* A peer that accepts and reads but never answers hello. */
static int
script_mute(struct ht_conn *p, void *arg)
{
	json_t *msg;

	while ((msg = ht_conn_recv(p, 20000)))
		json_decref(msg);
	return 0;
}

START_TEST(test_connect_failures)
{
	json_t *settings = json_pack("{s:i}", "handshake_timeout_ms", 300);
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	char path[192], dir[128], longpath[200];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct ht_fake fake;
	int fd, fds;

	/* The peer that never answers starts first, so the fd baseline includes what the test
	 * harness opens for its first child. */
	ck_assert_int_eq(ht_fake_start(&fake, script_mute, NULL), 0);
	fds = ht_count_fds(getpid());

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/nobody.sock", dir);
	ck_assert_int_eq(herd_conn_connect(path, NULL, NULL, &conn, &err), -ENOENT);
	ck_assert_ptr_nonnull(strstr(herd_error_message(err), "nobody.sock"));
	err = herd_error_unref(err);

	/* A socket file nobody listens on. */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_lt(strlen(path), sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(herd_conn_connect(path, NULL, NULL, &conn, NULL), -ECONNREFUSED);
	close(fd);

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	ck_assert_int_eq(herd_conn_connect(longpath, NULL, NULL, &conn, NULL), -EINVAL);

	/* Nobody answers hello: handshake_timeout_ms bounds the wait. */
	ck_assert_int_eq(herd_conn_connect(fake.socket, NULL, settings, &conn, &err), -ETIMEDOUT);
	ck_assert_str_eq(herd_error_name(err), "timeout");
	herd_error_unref(err);
	ck_assert_ptr_null(conn);
	ck_assert_int_eq(ht_count_fds(getpid()), fds);
	ck_assert_int_eq(ht_fake_finish(&fake, ht_ms(20000)), 0);
	json_decref(settings);
}
END_TEST

HT_MAIN("client-failures",
    HT_CLIENT_CASE(
        "failures", 90, 0, test_oversize_incoming, test_heartbeat_timeout, test_connect_failures),
    HT_CLIENT_CASE("failures-modes", 90, 2, test_worker_killed_mid_call, test_close_callbacks,
        test_oversize_outgoing, test_heartbeat_keeps_alive))
