/* SPDX-License-Identifier: MIT */
/*
 * The demo as a test: sum-demo against a private herdd must print the right
 * total, verify its own cleanup, exit 0 and leave herdd with no child.
 */
#include <stdio.h>

#include "ht-check.h"

START_TEST(test_sum_demo)
{
	struct ht_daemon *d = ht_herdd;
	const char *argv[] = { ht_env_path("SUM_DEMO"), "--socket", NULL, "--workers", "3", "--max",
		"1000000", NULL };
	char *out = NULL, *err = NULL;
	int code;

	ck_assert_ptr_nonnull(argv[0]);
	argv[2] = d->socket;
	code = ht_run(argv, &out, &err, ht_ms(30000));
	ck_assert_msg(code == 0, "sum-demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out, err);
	ck_assert_msg(strstr(out, "= 499999500000 ") && strstr(out, ": correct"), "%s", out);
	ck_assert_msg(strstr(out, "all 3 workers exited"), "%s", out);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(1000)), 0);

	ht_assert_no_workers(d);
	free(out);
	free(err);
}
END_TEST

HT_MAIN("sup-demo", HT_HERDD_CASE("demo", 40, ht_grace_args, test_sum_demo))
