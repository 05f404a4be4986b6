/* SPDX-License-Identifier: MIT */
/*
 * herdd's control protocol as a user speaks it, raw JSON lines on a real
 * herdd: the handshake and its failures, unknown methods, invalid params for
 * every method, framing errors (oversize, not JSON) that close, malformed
 * JSON-RPC that does not, the handshake timeout, ids of unknown workers, and
 * request ids still pending.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"

static const char *const small_limits[] = { "--max-message-size", "4096", "--handshake-timeout-ms",
	"400", NULL };

/* Another connection to the fixture's herdd that completed hello as role. */
static struct ht_conn *
open_hello(const char *role)
{
	struct ht_conn *c = ht_herdd_open(ht_herdd, role, "test-herdd-protocol");

	ck_assert_msg(c, "hello as %s failed", role);
	return c;
}

START_TEST(test_hello_result)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_conn_open(d->socket);
	json_t *r, *res, *settings;

	ck_assert(c);
	r = ht_conn_hello(c, "inspector", json_pack("{s:s}", "name", "me"), ht_ms(5000));
	res = ht_assert_result(r);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "version")), 1);
	ck_assert_str_eq(json_string_value(json_object_get(res, "server")), "herdd");
	ck_assert_int_eq(json_integer_value(json_object_get(res, "pid")), d->pid);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "uid")), getuid());
	ck_assert(json_integer_value(json_object_get(res, "connection")) > 0);
	settings = json_object_get(res, "settings");
	ck_assert_int_eq(json_integer_value(json_object_get(settings, "max_message_size")), 4096);
	ck_assert_int_eq(json_integer_value(json_object_get(settings, "heartbeat_timeout_ms")), 0);
	json_decref(r);

	/* A second hello is refused, and the connection stays. */
	r = ht_conn_hello(c, "inspector", NULL, ht_ms(5000));
	ht_assert_error(r, "invalid_request");
	json_decref(r);
	r = ht_conn_call(c, "ping", NULL, ht_ms(5000));
	ck_assert(json_is_object(ht_assert_result(r)));
	ck_assert_int_eq(json_object_size(ht_result(r)), 0);
	json_decref(r);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_hello_refusals_close)
{
	struct ht_daemon *d = ht_herdd;
	struct {
		json_t *params;
		const char *error;
	} cases[] = {
		{ json_pack("{s:i, s:s}", "version", 2, "role", "master"), "version_mismatch" },
		{ json_pack("{s:i, s:s}", "version", 1, "role", "worker"), "invalid_params" },
		{ json_pack("{s:i, s:s}", "version", 1, "role", "client"), "invalid_params" },
		{ json_pack("{s:i}", "version", 1), "invalid_params" },
		{ json_pack("{s:i, s:s, s:i}", "version", 1, "role", "master", "pid", 1),
		    "invalid_params" },
		{ json_pack("{s:i, s:s, s:{s:i}}", "version", 1, "role", "master", "settings",
		      "spawn_timeout_ms", 5),
		    "invalid_params" },
		{ json_pack("{s:i, s:s, s:{s:i}}", "version", 1, "role", "master", "settings",
		      "heartbeat_timeout_ms", 1000),
		    "invalid_params" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ht_conn *c = ht_conn_open(d->socket);
		json_t *r;

		ck_assert(c);
		r = ht_conn_call(c, "hello", cases[i].params, ht_ms(5000));
		ht_assert_error(r, cases[i].error);
		if (!strcmp(cases[i].error, "version_mismatch")) {
			json_t *sup = json_object_get(ht_error_data(r), "supported");

			ck_assert_int_eq(json_integer_value(json_array_get(sup, 0)), 1);
		}
		json_decref(r);
		ck_assert_msg(ht_conn_wait_eof(c, ht_ms(5000)) == 0, "case %zu left it open", i);
		ht_conn_close(c);
	}
}
END_TEST

START_TEST(test_hello_required)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_conn_open(d->socket);
	json_t *r;

	ck_assert(c);
	r = ht_conn_call(c, "list", NULL, ht_ms(5000));
	ht_assert_error(r, "hello_required");
	ck_assert_int_eq(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);

	/* A notification first is no better. */
	c = ht_conn_open_ok(d->socket);
	ck_assert_int_eq(ht_conn_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"ping\"}\n", 34), 0);
	ht_expect_close(c, "hello_required");
	ht_conn_close(c);
}
END_TEST

START_TEST(test_unknown_method_keeps_connection)
{
	struct ht_conn *c = open_hello("master");
	const char *names[] = { "nope", "supervisor.supervisord.options.execve", "__proto__",
		"Spawn", "herd.shutdown" };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		ht_expect(c, names[i], NULL, "method_not_found");
	}
	/* Unknown notifications are ignored: never answered. */
	ck_assert_int_eq(ht_conn_send_raw(c, "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}\n", 34), 0);
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}
END_TEST

/* Each method with params it must refuse, and the connection lives on. */
START_TEST(test_invalid_params)
{
	struct ht_conn *c = open_hello("master");
	struct {
		const char *method;
		const char *params;
	} cases[] = {
		{ "ping", "{\"x\":1}" },
		{ "stats", "{\"x\":1}" },
		{ "list", "{\"all\":1}" },
		{ "list", "[true]" },
		{ "inspect", "{}" },
		{ "inspect", "{\"id\":12}" },
		{ "logs", "{\"id\":\"w1\",\"stream\":\"stdin\"}" },
		{ "logs", "{\"id\":\"w1\",\"lines\":0}" },
		{ "shutdown", "{\"id\":\"w1\",\"grace_ms\":-1}" },
		{ "shutdown", "{\"grace_ms\":10}" },
		{ "kill", "{\"id\":\"w1\",\"signal\":\"NOPE\"}" },
		{ "kill", "{\"id\":\"w1\",\"signal\":0}" },
		{ "kill", "{\"id\":\"w1\",\"signal\":\"term\"}" },
		{ "subscribe", "{\"all\":\"yes\"}" },
		{ "unsubscribe", "{\"all\":true}" },
		{ "spawn", "{}" },
		{ "spawn", "{\"path\":\"bin/sh\"}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"HERD_CHANNEL_FD\":\"4\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"HERD_X\":\"1\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"NOTIFY_SOCKET\":\"/x\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"LISTEN_FDS\":\"1\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"A=B\":\"1\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"1A\":\"1\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"env\":{\"A\":1}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"argv\":[]}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"argv\":[\"true\",1]}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"cwd\":\"tmp\"}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"umask\":512}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"stdout\":\"tty\"}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"stderr\":{\"file\":\"rel/x\"}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"stderr\":{\"file\":\"/tmp/x\",\"mode\":1}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"shutdown_on\":\"never\"}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"settings\":{\"bogus\":1}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"settings\":{\"max_message_size\":10}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"settings\":{\"heartbeat_interval_ms\":-1}}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"spawn_timeout_ms\":-5}" },
		{ "spawn", "{\"path\":\"/bin/true\",\"unknown\":1}" },
	};
	size_t i;
	json_t *r, *list;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_error_t jerr;
		json_t *params = json_loads(cases[i].params, 0, &jerr);

		ck_assert_msg(params, "bad test case %zu", i);
		r = ht_conn_call(c, cases[i].method, params, ht_ms(5000));
		ck_assert_msg(ht_error_name(r) && !strcmp(ht_error_name(r), "invalid_params"),
		    "%s %s: expected invalid_params, got %s", cases[i].method, cases[i].params,
		    ht_dump(r));
		json_decref(r);
	}
	/* None of them started anything. */
	r = ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht_ms(5000));
	list = json_object_get(ht_assert_result(r), "workers");
	ck_assert_int_eq(json_array_size(list), 0);
	json_decref(r);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_unknown_worker)
{
	struct ht_conn *c = open_hello("inspector");
	const char *methods[] = { "inspect", "logs", "shutdown", "kill" };
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		json_t *r =
		    ht_conn_call(c, methods[i], json_pack("{s:s}", "id", "w999"), ht_ms(5000));
		json_t *data = ht_error_data(r);

		ht_assert_error(r, "worker_not_found");
		ck_assert_str_eq(json_string_value(json_object_get(data, "id")), "w999");
		json_decref(r);
	}
	ht_conn_close(c);
}
END_TEST

START_TEST(test_oversize_closes)
{
	struct ht_conn *c = open_hello("master");
	size_t n = 8192;
	char *line = malloc(n + 1);
	json_t *m;

	ck_assert(line);
	memset(line, ' ', n);
	line[n] = '\n';
	ck_assert_int_eq(ht_conn_send_raw(c, line, n + 1), 0);
	free(line);
	m = ht_conn_recv(c, ht_ms(5000));
	ht_assert_error(m, "message_too_large");
	ck_assert_int_eq(json_integer_value(json_object_get(ht_error_data(m), "limit")), 4096);
	json_decref(m);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);

	/* herdd serves the next connection as if nothing happened. */
	c = open_hello("master");
	ht_conn_close(c);
}
END_TEST

/* The connections ht_expect_bad_lines_close() sends on: masters of the fixture's herdd. */
static struct ht_conn *
open_master(void *arg)
{
	return open_hello("master");
}

START_TEST(test_invalid_json_closes)
{
	ht_expect_bad_lines_close(open_master, NULL);
}
END_TEST

START_TEST(test_too_deep_closes)
{
	struct ht_conn *c = open_hello("master");
	char line[300];

	memset(line, '[', 100);
	memset(line + 100, ']', 100);
	line[200] = '\n';
	ck_assert_int_eq(ht_conn_send_raw(c, line, 201), 0);
	ht_expect_close(c, "too_deep");
	ht_conn_close(c);
}
END_TEST

/* Sends {"jsonrpc":"2.0","id":id,"method":method} with params (stolen, may be NULL); id stolen. */
static void
send_with_id(struct ht_conn *c, json_t *id, const char *method, json_t *params)
{
	json_t *m = json_pack("{s:s, s:o, s:s}", "jsonrpc", "2.0", "id", id, "method", method);

	if (params)
		json_object_set_new(m, "params", params);
	ck_assert_int_eq(ht_conn_send(c, m), 0);
	json_decref(m);
}

/* The next reply on c (events skipped): its id must equal id (stolen). New reference. */
static json_t *
reply_to(struct ht_conn *c, json_t *id, int timeout_ms)
{
	json_t *r = ht_conn_recv_except(c, "event", timeout_ms);

	ck_assert_msg(r, "no reply");
	ck_assert_msg(
	    json_equal(json_object_get(r, "id"), id), "a reply to another id: %s", ht_dump(r));
	json_decref(id);
	return r;
}

/*
 * While a spawn waits for its worker, its id (an integer or a string) is
 * taken on that connection: a request reusing it is refused, others are
 * served, and once the spawn is answered the id is free again.
 */
START_TEST(test_pending_id)
{
	struct ht_conn *c = open_hello("master");
	json_t *ids[2] = { json_integer(7), json_string("s7") }, *r;
	bool answered[2] = { false, false };
	size_t i;

	for (i = 0; i < 2; i++)
		send_with_id(c, json_incref(ids[i]), "spawn",
		    ht_testworker_params(json_pack("{s:{s:i}}", "init", "init_delay_ms", 1000)));
	for (i = 0; i < 2; i++) {
		send_with_id(c, json_incref(ids[i]), "ping", NULL);
		r = reply_to(c, json_incref(ids[i]), ht_ms(5000));
		ht_assert_error(r, "invalid_request");
		ck_assert(strstr(
		    json_string_value(json_object_get(json_object_get(r, "error"), "message")),
		    "still pending"));
		json_decref(r);
	}
	/* The same text as another type is another id. */
	send_with_id(c, json_string("7"), "ping", NULL);
	r = reply_to(c, json_string("7"), ht_ms(5000));
	ht_assert_result(r);
	json_decref(r);
	/* The two spawns' replies, in whichever order their workers got ready. */
	for (i = 0; i < 2; i++) {
		bool first;
		pid_t pid;

		r = ht_conn_recv_except(c, "event", ht_ms(10000));
		ck_assert_msg(r, "no spawn reply");
		first = json_equal(json_object_get(r, "id"), ids[0]);
		ck_assert(first || json_equal(json_object_get(r, "id"), ids[1]));
		ck_assert_msg(!answered[!first], "two replies to %s", ht_dump(r));
		answered[!first] = true;
		pid = ht_worker_pid(ht_assert_result(r));
		ck_assert_int_gt(pid, 0);
		ht_track_pid(pid);
		json_decref(r);
	}
	for (i = 0; i < 2; i++) {
		send_with_id(c, json_incref(ids[i]), "ping", NULL);
		r = reply_to(c, json_incref(ids[i]), ht_ms(5000));
		ht_assert_result(r);
		json_decref(r);
		json_decref(ids[i]);
	}
	ht_conn_close(c);
}
END_TEST

START_TEST(test_malformed_rpc_keeps_connection)
{
	struct ht_conn *c = open_hello("master");
	const char *bad = "{\"jsonrpc\":\"1.0\",\"id\":7,\"method\":\"ping\"}\n";
	json_t *m;

	ck_assert_int_eq(ht_conn_send_raw(c, bad, strlen(bad)), 0);
	m = ht_conn_recv(c, ht_ms(5000));
	ht_assert_error(m, "invalid_request");
	ck_assert_int_eq(json_integer_value(json_object_get(m, "id")), 7);
	json_decref(m);
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_handshake_timeout)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_conn_open(d->socket);
	json_t *m, *data;

	ck_assert(c);
	/* Say nothing: herdd gives up after --handshake-timeout-ms 400. */
	m = ht_conn_recv(c, ht_ms(5000));
	ht_assert_error(m, "timeout");
	data = ht_error_data(m);
	ck_assert_str_eq(json_string_value(json_object_get(data, "what")), "handshake");
	ck_assert_int_eq(json_integer_value(json_object_get(data, "ms")), 400);
	json_decref(m);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);

	/* A connection that said hello in time is not timed out. */
	c = open_hello("master");
	m = ht_conn_recv(c, 800);
	ck_assert_msg(!m && errno == ETIMEDOUT, "unexpected %s", ht_dump(m));
	ht_expect(c, "ping", NULL, NULL);
	ht_conn_close(c);
}
END_TEST

START_TEST(test_stats)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *c = ht_master;
	json_t *r = ht_conn_call(c, "stats", NULL, ht_ms(5000)), *res;

	res = ht_assert_result(r);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "pid")), d->pid);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "masters")), 1);
	ck_assert(json_integer_value(json_object_get(res, "connections")) >= 1);
	ck_assert(json_is_object(json_object_get(res, "workers")));
	ck_assert(json_is_object(json_object_get(res, "failures")));
	ck_assert(json_is_object(json_object_get(res, "limits_hit")));
	ck_assert(json_integer_value(json_object_get(res, "bytes_in")) > 0);
	json_decref(r);
}
END_TEST

/* A per-user herdd (here: run as nobody) refuses any other uid, root included. */
struct user_herdd {
	char dir[128];
	char notify[160];
};

static int
run_user_herdd(void *arg)
{
	struct user_herdd *u = arg;
	char sock[192];
	const char *herdd = ht_env_path("HERDD");

	if (!herdd)
		return 127;
	snprintf(sock, sizeof(sock), "%s/herdd.sock", u->dir);
	setenv("XDG_RUNTIME_DIR", u->dir, 1);
	setenv("NOTIFY_SOCKET", u->notify, 1);
	execl(herdd, herdd, "--socket", sock, "--log-level", "warn", (char *)NULL);
	return 127;
}

START_TEST(test_user_herdd_refuses_other_uid)
{
	struct user_herdd u;
	struct ht_conn *c;
	char sock[192], seen[1024] = "";
	uid_t uid;
	gid_t gid;
	pid_t pid;
	json_t *r;
	int nfd, st;

	if (getuid() != 0 || ht_nobody(&uid, &gid) < 0) {
		fprintf(stderr, "skipped: needs root and a nobody user\n");
		return;
	}
	ck_assert_int_eq(ht_tmpdir(u.dir, sizeof(u.dir)), 0);
	snprintf(u.notify, sizeof(u.notify), "%s/notify", u.dir);
	nfd = ht_notify_bind(u.notify);
	ck_assert_int_ge(nfd, 0);
	/* The per-user herdd runs as nobody and must be able to send to it. */
	ck_assert_int_eq(chmod(u.notify, 0666), 0);
	ck_assert_int_eq(chown(u.dir, uid, gid), 0);
	pid = ht_fork_fn(run_user_herdd, &u, uid, gid);
	ck_assert_int_gt(pid, 0);
	ck_assert_msg(ht_notify_wait(nfd, "READY=1", seen, sizeof(seen), ht_ms(10000)),
	    "the per-user herdd sent no READY=1: %s", seen);
	close(nfd);
	snprintf(sock, sizeof(sock), "%s/herdd.sock", u.dir);
	c = ht_conn_open_ok(sock);
	r = ht_conn_hello(c, "master", NULL, ht_ms(5000));
	ht_assert_error(r, "permission_denied");
	json_decref(r);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	ht_conn_close(c);
	ck_assert_int_eq(kill(pid, SIGTERM), 0);
	ck_assert_int_eq(ht_wait_child(pid, ht_ms(5000), &st), 0);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	ck_assert(access(sock, F_OK) < 0);
}
END_TEST

HT_MAIN("herdd-protocol",
    HT_HERDD_CASE("protocol", 30, small_limits, test_hello_result, test_hello_refusals_close,
        test_hello_required, test_unknown_method_keeps_connection, test_invalid_params,
        test_unknown_worker, test_oversize_closes, test_invalid_json_closes, test_too_deep_closes,
        test_malformed_rpc_keeps_connection, test_pending_id, test_handshake_timeout, test_stats,
        test_user_herdd_refuses_other_uid))
