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

/* main() for a test program made of one suite. */
#define HT_MAIN(suite_fn)                                                                          \
	int main(void)                                                                             \
	{                                                                                          \
		SRunner *sr = srunner_create(suite_fn());                                          \
		int failed;                                                                        \
                                                                                                   \
		srunner_run_all(sr, CK_NORMAL);                                                    \
		failed = srunner_ntests_failed(sr);                                                \
		srunner_free(sr);                                                                  \
		return failed ? EXIT_FAILURE : EXIT_SUCCESS;                                       \
	}

#endif
