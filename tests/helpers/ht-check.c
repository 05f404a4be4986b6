/* SPDX-License-Identifier: MIT */
/*
 * The Check side of herd_test: the herdd fixture, asserting shorthands,
 * inline call arguments and the suite runner (see ht-check.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <sys/wait.h>

#include "ht-check.h"
#include "ht-internal.h"

struct ht_daemon *ht_herdd;
struct ht_conn *ht_master;
const char *const ht_grace_args[] = { "--grace-ms", "300", NULL };
static const char *const *fixture_argv;

static void
fixture_start(const char *const *argv)
{
	ht_herdd = ht_daemon_start_ok(argv);
	ht_master = ht_herdd_open(ht_herdd, "master", "test");
	ck_assert_msg(ht_master, "no master connection: %s", strerror(errno));
}

static void
fixture_setup(void)
{
	fixture_start(fixture_argv);
}

void
ht_fixture_restart(const char *const *herdd_argv)
{
	ht_conn_close(ht_master);
	ht_master = NULL;
	ht_daemon_stop_ok(ht_herdd);
	fixture_start(herdd_argv);
}

static void
fixture_teardown(void)
{
	int stopped = 0, status = 0, left;

	ht_conn_close(ht_master);
	ht_master = NULL;
	if (ht_herdd) {
		stopped = ht_daemon_stop(ht_herdd, ht_ms(10000));
		status = ht_herdd->exit_status;
	}
	ht_herdd = NULL;
	left = ht_children_left(ht_ms(2000));
	/* Clean up first: a failed assertion leaves this function. */
	ht_teardown();
	ck_assert_msg(stopped == 0, "herdd did not exit 0 on SIGTERM (status %#x)", status);
	ck_assert_msg(left == 0, "%d child(ren) of the test left running", left);
}

/*
 * Whether $HERD_TEST_SKIP (test names separated by spaces) names test t: the
 * runs against another worker leave out what only the C worker can do.
 */
static bool
skipped(const TTest *t)
{
	const char *list = getenv("HERD_TEST_SKIP"), *p;
	size_t n = strlen(t->name);

	for (p = list ? strstr(list, t->name) : NULL; p; p = strstr(p + 1, t->name)) {
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) {
			fprintf(stderr, "%s: skipped ($HERD_TEST_SKIP)\n", t->name);
			return true;
		}
	}
	return false;
}

/* Builds one test case; see struct ht_case. */
static TCase *
make_tcase(const struct ht_case *c)
{
	TCase *tc = tcase_create(c->name);
	const TTest *const *t;

	/* Check runs setups first added first and teardowns last added first. */
	tcase_add_checked_fixture(tc, NULL, ht_teardown);
	if (c->herdd)
		tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
	if (c->setup || c->teardown)
		tcase_add_checked_fixture(tc, c->setup, c->teardown);
	tcase_set_timeout(tc, (double)c->timeout_s * ht_slow());
	for (t = c->tests; t < c->tests + 32 && *t; t++) {
		if (skipped(*t))
			continue;
		if (c->loops > 0)
			tcase_add_loop_test(tc, *t, 0, c->loops);
		else
			tcase_add_test(tc, *t);
	}
	return tc;
}

int
ht_run_cases(const char *suite, const struct ht_case *cases, size_t n)
{
	Suite *s = suite_create(suite);
	SRunner *sr;
	bool herdd = false;
	size_t i;
	int failed;

	for (i = 0; i < n; i++) {
		if (cases[i].herdd && herdd && fixture_argv != cases[i].herdd_argv) {
			fprintf(stderr, "herd_test: one herdd command line per program\n");
			return EXIT_FAILURE;
		}
		if (cases[i].herdd) {
			fixture_argv = cases[i].herdd_argv;
			herdd = true;
		}
		suite_add_tcase(s, make_tcase(&cases[i]));
	}
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	ht_teardown();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

struct ht_conn *
ht_conn_open_ok(const char *path)
{
	struct ht_conn *c = ht_conn_open(path);

	ck_assert_msg(c, "connecting to %s: %s", path, strerror(errno));
	return c;
}

struct ht_conn *
ht_client_ok(const char *socket, json_t *extra)
{
	struct ht_conn *c = ht_hello_open(socket, "client", extra, NULL);

	ck_assert_msg(c, "no client connection to %s: %s", socket, strerror(errno));
	return c;
}

json_t *
ht_call_ok(struct ht_conn *c, const char *method, json_t *params)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));

	ck_assert_msg(reply, "%s: no reply (%s)", method, strerror(errno));
	return reply;
}

void
ht_expect(struct ht_conn *c, const char *method, json_t *params, const char *error)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));

	if (error)
		ht_assert_error(reply, error);
	else
		ht_assert_result(reply);
	json_decref(reply);
}

void
ht_expect_int(struct ht_conn *c, const char *method, json_t *params, long long want)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));

	ck_assert_msg(ht_int_result(reply) == want, "%s: %lld expected, got %s", method, want,
	    ht_dump(reply));
	json_decref(reply);
}

void
ht_expect_close(struct ht_conn *c, const char *name)
{
	json_t *m = ht_conn_recv(c, ht_ms(5000));

	ht_assert_error(m, name);
	ck_assert_msg(
	    json_is_null(json_object_get(m, "id")), "%s without id null: %s", name, ht_dump(m));
	json_decref(m);
	ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
}

void
ht_expect_bad_lines_close(struct ht_conn *(*open_conn)(void *arg), void *arg)
{
	/* PROTOCOL.md section 2's checks before parsing, one line each: data. */
	static const struct {
		const char *line, *error;
	} bad[] = {
		{ "{\"jsonrpc\":\"2.0\",\"id\":1,\n", "parse_error" },
		{ "[1,2]\n", "invalid_request" },
		{ "{\"a\":1,\"a\":2}\n", "duplicate_key" },
		{ "{\"a\":\"\\u0000\"}\n", "nul_byte" },
		{ "{\"a\":\"\xff\"}\n", "invalid_utf8" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ht_conn *c = open_conn(arg);

		ck_assert_int_eq(ht_conn_send_raw(c, bad[i].line, strlen(bad[i].line)), 0);
		ht_expect_close(c, bad[i].error);
		ht_conn_close(c);
	}
}

void
ht_cancel_ok(struct ht_conn *c, int64_t id)
{
	json_t *reply;

	ck_assert_int_eq(
	    ht_conn_notify(c, "herd.cancel", json_pack("{s:I}", "id", (json_int_t)id)), 0);
	reply = ht_conn_wait_reply(c, id, ht_ms(5000));
	ht_assert_error(reply, "cancelled");
	json_decref(reply);
}

void
ht_assert_no_workers(const struct ht_daemon *d)
{
	struct ht_conn *insp = ht_herdd_open(d, "inspector", "test");
	json_t *reply;

	ck_assert_msg(insp, "no inspector connection: %s", strerror(errno));
	reply = ht_conn_call(insp, "list", NULL, ht_ms(5000));
	ck_assert_msg(json_array_size(json_object_get(ht_assert_result(reply), "workers")) == 0,
	    "workers are left: %s", ht_dump(reply));
	json_decref(reply);
	ht_conn_close(insp);
}

json_int_t
ht_limit_hits(const struct ht_daemon *d, const char *name)
{
	struct ht_conn *c = ht_herdd_open(d, "inspector", "stats");
	json_t *r;
	json_int_t v;

	ck_assert_msg(c, "no inspector connection: %s", strerror(errno));
	r = ht_conn_call(c, "stats", NULL, ht_ms(5000));
	v = json_integer_value(
	    json_object_get(json_object_get(ht_assert_result(r), "limits_hit"), name));
	json_decref(r);
	ht_conn_close(c);
	return v;
}

json_t *
ht_spawn_ok(struct ht_conn *c, json_t *params)
{
	json_t *reply = ht_spawn(c, params, ht_ms(10000));
	json_t *res = json_incref(ht_assert_result(reply));

	json_decref(reply);
	return res;
}

json_t *
ht_wait_event_ok(struct ht_conn *c, const char *event, const char *worker_id, int timeout_ms)
{
	json_t *ev = ht_conn_wait_event(c, event, worker_id, timeout_ms);

	ck_assert_msg(ev, "no %s event for worker %s: %s", event, worker_id ? worker_id : "(any)",
	    strerror(errno));
	return ev;
}

int
ht_wait_exit_ok(pid_t pid)
{
	int status;

	ck_assert_int_eq(ht_wait_child(pid, ht_ms(10000), &status), 0);
	ck_assert_msg(WIFEXITED(status), "pid %d killed by signal %d", (int)pid, WTERMSIG(status));
	return WEXITSTATUS(status);
}

void
ht_worker_writes_ok(const char *sock, const char *stream, const char *text)
{
	json_t *r =
	    ht_worker_call(sock, NULL, stream, json_pack("{s:s}", "text", text), ht_ms(5000));

	ht_assert_result(r);
	json_decref(r);
}

static json_t *args_pool;

json_t *
ht_args(const char *fmt, ...)
{
	json_error_t jerr;
	json_t *v;
	va_list ap;

	va_start(ap, fmt);
	v = json_vpack_ex(&jerr, 0, fmt, ap);
	va_end(ap);
	ck_assert_msg(v != NULL, "json_pack %s: %s", fmt, jerr.text);
	return ht__keep(v);
}

json_t *
ht__keep(json_t *v)
{
	if (!args_pool)
		args_pool = json_array();
	json_array_append_new(args_pool, v);
	return v;
}

void
ht__args_release(void)
{
	args_pool = (json_decref(args_pool), NULL);
}

struct ht_out
ht_herdctl(const char *socket, ...)
{
	const char *argv[32];
	struct ht_out o = { 0 };
	va_list ap;
	size_t n = 0;
	const char *a;

	argv[n++] = ht_env_path("HERDCTL");
	ck_assert_ptr_nonnull(argv[0]);
	if (socket) {
		argv[n++] = "--socket";
		argv[n++] = socket;
	}
	va_start(ap, socket);
	while ((a = va_arg(ap, const char *)) && n < 31)
		argv[n++] = a;
	va_end(ap);
	argv[n] = NULL;
	o.code = ht_run(argv, &o.out, &o.err, ht_ms(20000));
	ck_assert_int_ge(o.code, 0);
	return o;
}

void
ht_out_free(struct ht_out *o)
{
	free(o->out);
	free(o->err);
}
