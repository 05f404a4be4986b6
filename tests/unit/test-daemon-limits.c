/* SPDX-License-Identifier: MIT */
/*
 * herdd's reading of a cgroup's memory.events (daemon/limits.c): the
 * oom_kill count that makes a worker's end oom_killed. The test machines have
 * no memory controller to make a real OOM kill with, so the parsing is
 * checked here on the kernel's format.
 */
#include "herdd.h"
#include "ht-check.h"

START_TEST(test_oom_kill_count)
{
	/* Linux 5.x and later: oom_group_kill may follow oom_kill. */
	ck_assert_int_eq(limits_oom_kills("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\n"
	                                  "oom_group_kill 0\n"),
	    2);
	ck_assert_int_eq(limits_oom_kills("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"), 0);
	/* oom_group_kill is not oom_kill, and a missing line is -1. */
	ck_assert_int_eq(limits_oom_kills("oom_group_kill 5\n"), -1);
	ck_assert_int_eq(limits_oom_kills("oom 1\n"), -1);
	ck_assert_int_eq(limits_oom_kills(""), -1);
	ck_assert_int_eq(limits_oom_kills("oom_kill 7"), 7);
}
END_TEST

HT_MAIN("daemon-limits", HT_CASE("memory.events", 10, test_oom_kill_count))
