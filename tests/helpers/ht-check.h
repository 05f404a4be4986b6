/* SPDX-License-Identifier: MIT */
/*
 * Check glue for herd_test users: assertions that print the JSON they looked
 * at, a checked fixture that gives each test a herdd and a master, timeouts
 * in seconds scaled for slow runs, and a main() that runs one suite.
 */
#ifndef HT_CHECK_H
#define HT_CHECK_H

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "herd-test.h"

/* A reply with a result; the result (borrowed) is returned. */
#define ht_assert_result(reply)                                                                    \
	({                                                                                         \
		const json_t *_r = (reply);                                                        \
		ck_assert_msg(ht_result(_r) != NULL, "expected a result, got %s (%s)",             \
		    ht_dump(_r), _r ? "" : strerror(errno));                                       \
		ht_result(_r);                                                                     \
	})

/* An error reply whose data.name is name. */
#define ht_assert_error(reply, name)                                                               \
	do {                                                                                       \
		const json_t *_r = (reply);                                                        \
		const char *_n = ht_error_name(_r);                                                \
		ck_assert_msg(_n &&strcmp(_n, (name)) == 0, "expected error %s, got %s", (name),   \
		    ht_dump(_r));                                                                  \
	} while (0)

/* herdd started with extra_argv (see ht_daemon_start), or the test fails. */
#define ht_daemon_start_ok(extra_argv)                                                             \
	({                                                                                         \
		struct ht_daemon *_d = ht_daemon_start(extra_argv);                                \
		ck_assert_msg(_d, "herdd did not start: %s", strerror(errno));                     \
		_d;                                                                                \
	})

/* Stops herdd and checks it exited 0 (under ASan that includes no leak). */
#define ht_daemon_stop_ok(d)                                                                       \
	do {                                                                                       \
		struct ht_daemon *_d = (d);                                                        \
		ck_assert_msg(ht_daemon_stop(_d, ht_ms(10000)) == 0, "herdd exit status %d",       \
		    _d->exit_status);                                                              \
	} while (0)

/* ---- ht-check.c ---- */

/*
 * The herdd and the master connection (named "test") of the running test
 * when its test case has the herdd fixture; NULL otherwise.
 */
extern struct ht_daemon *ht_herdd;
extern struct ht_conn *ht_master;
/* herdd's arguments for quick tests: a 300 ms SIGTERM-to-SIGKILL grace. */
extern const char *const ht_grace_args[];

/*
 * Adds the herdd fixture to tc, checked: before each test herdd starts with
 * herdd_argv (NULL-terminated, static; may be NULL; one command line per
 * program) and a master connects; after it the master closes, herdd must exit
 * 0 on SIGTERM, and no child of the test may be left running. With CK_FORK=no
 * (valgrind) it runs in-process around each test all the same.
 */
void ht_fixture(TCase *tc, const char *const *herdd_argv);
/*
 * For a test that needs other herdd options than its case's: stops the
 * fixture's herdd (it must exit 0) and starts another with herdd_argv, with
 * a new master. ht_herdd and ht_master change.
 */
void ht_fixture_restart(const char *const *herdd_argv);
/* Adds the teardown alone (ht_teardown after each test), for tests without herdd. */
void ht_fixture_plain(TCase *tc);
/*
 * Adds test case name to s: each of tests (NULL-terminated) runs once, or,
 * with loops > 0, loops times (_i = 0..loops-1); the timeout is timeout_s
 * seconds (ht_timeout) and ht_teardown() runs after every test. Returns the
 * test case, for a fixture (ht_fixture: its teardown runs first).
 */
TCase *ht_tcase(Suite *s, const char *name, int timeout_s, int loops, const TTest *const *tests);
/* Sets tc's timeout in seconds, scaled like ht_ms() for sanitizers and $HERD_TEST_SLOW. */
void ht_timeout(TCase *tc, int seconds);

/* ht_conn_call() with a 5 s budget; fails the test without a reply. New reference. */
json_t *ht_call_ok(struct ht_conn *c, const char *method, json_t *params);
/* Reaps our child pid (10 s budget); fails the test unless it exited. Returns its exit code. */
int ht_wait_exit_ok(pid_t pid);
/*
 * json_pack() for call arguments: the value stays alive until the test's
 * teardown (ht_teardown), so arguments, which libherd borrows, can be
 * written inline. Fails the test if the format is wrong.
 */
json_t *ht_args(const char *fmt, ...);

/* Runs suite s with Check, then ht_teardown(). Returns main()'s exit status. */
int ht_run_suite(Suite *s);

/* main() for a test program made of one suite: runs prepare (a statement), then the suite. */
#define HT_MAIN_PREPARED(suite_fn, prepare)                                                        \
	int main(void)                                                                             \
	{                                                                                          \
		prepare;                                                                           \
		return ht_run_suite(suite_fn());                                                   \
	}
#define HT_MAIN(suite_fn) HT_MAIN_PREPARED(suite_fn, (void)0)

#endif
