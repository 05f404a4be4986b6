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

void
ht_fixture(TCase *tc, const char *const *herdd_argv)
{
	if (fixture_argv && fixture_argv != herdd_argv) {
		fprintf(stderr, "herd_test: one herdd command line per program\n");
		abort();
	}
	fixture_argv = herdd_argv;
	tcase_add_checked_fixture(tc, fixture_setup, fixture_teardown);
}

void
ht_fixture_plain(TCase *tc)
{
	tcase_add_checked_fixture(tc, NULL, ht_teardown);
}

TCase *
ht_tcase(Suite *s, const char *name, int timeout_s, int loops, const TTest *const *tests)
{
	TCase *tc = tcase_create(name);

	/* Check runs teardowns last added first: a fixture added later sees the test's state. */
	ht_fixture_plain(tc);
	ht_timeout(tc, timeout_s);
	for (; *tests; tests++) {
		if (loops > 0)
			tcase_add_loop_test(tc, *tests, 0, loops);
		else
			tcase_add_test(tc, *tests);
	}
	suite_add_tcase(s, tc);
	return tc;
}

void
ht_timeout(TCase *tc, int seconds)
{
	tcase_set_timeout(tc, (double)seconds * ht_slow());
}

json_t *
ht_call_ok(struct ht_conn *c, const char *method, json_t *params)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));

	ck_assert_msg(reply, "%s: no reply (%s)", method, strerror(errno));
	return reply;
}

int
ht_wait_exit_ok(pid_t pid)
{
	int status;

	ck_assert_int_eq(ht_wait_child(pid, ht_ms(10000), &status), 0);
	ck_assert_msg(WIFEXITED(status), "pid %d killed by signal %d", (int)pid, WTERMSIG(status));
	return WEXITSTATUS(status);
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

int
ht_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	ht_teardown();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
