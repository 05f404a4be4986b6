/* SPDX-License-Identifier: MIT */
/*
 * Check glue for herd_test users: assertions that print the JSON they looked
 * at, and a main() that runs one suite.
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

/*
 * main() for a test program made of one suite: runs prepare (a statement, e.g.
 * signal(SIGPIPE, SIG_IGN)), the suite, then ht_teardown() (for CK_FORK=no runs).
 */
#define HT_MAIN_PREPARED(suite_fn, prepare)                                                        \
	int main(void)                                                                             \
	{                                                                                          \
		SRunner *sr;                                                                       \
		int failed;                                                                        \
                                                                                                   \
		prepare;                                                                           \
		sr = srunner_create(suite_fn());                                                   \
		srunner_run_all(sr, CK_NORMAL);                                                    \
		failed = srunner_ntests_failed(sr);                                                \
		srunner_free(sr);                                                                  \
		ht_teardown();                                                                     \
		return failed ? EXIT_FAILURE : EXIT_SUCCESS;                                       \
	}
#define HT_MAIN(suite_fn) HT_MAIN_PREPARED(suite_fn, (void)0)

#endif
