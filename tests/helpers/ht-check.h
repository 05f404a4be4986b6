/* SPDX-License-Identifier: MIT */
/*
 * Check glue for herd_test users: assertions that print the JSON they looked
 * at, a checked fixture that gives each test a herdd and a master, timeouts
 * in seconds scaled for slow runs, and a main() that runs one suite.
 */
#ifndef HT_CHECK_H
#define HT_CHECK_H

#include <errno.h>
#include <signal.h>
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
 * For a test that needs other herdd options than its case's: stops the
 * fixture's herdd (it must exit 0) and starts another with herdd_argv, with
 * a new master. ht_herdd and ht_master change.
 */
void ht_fixture_restart(const char *const *herdd_argv);

/* ht_conn_open() that must succeed. */
struct ht_conn *ht_conn_open_ok(const char *path);
/* ht_hello_open() as a client that must succeed (extra stolen, may be NULL). */
struct ht_conn *ht_client_ok(const char *socket, json_t *extra);
/* ht_conn_call() with a 5 s budget; fails the test without a reply. New reference. */
json_t *ht_call_ok(struct ht_conn *c, const char *method, json_t *params);
/*
 * Calls method(params) (stolen) on c with a 5 s budget: the reply must be a
 * result, or, with error not NULL, that error (data.name).
 */
void ht_expect(struct ht_conn *c, const char *method, json_t *params, const char *error);
/* Calls method(params) (stolen) on c with a 5 s budget: the result must be the integer want. */
void ht_expect_int(struct ht_conn *c, const char *method, json_t *params, long long want);
/*
 * The next message on c must be the framing error name (data.name) with id
 * null, and c must then close: what a JSON-lines peer does with a line it
 * refuses (PROTOCOL.md section 2).
 */
void ht_expect_close(struct ht_conn *c, const char *name);
/*
 * Sends each line a JSON-lines peer must refuse (not JSON, not an object, a
 * repeated key, a NUL, bad UTF-8) on its own connection from open_conn(arg), one
 * that completed hello, and checks ht_expect_close() with the error for it:
 * herdd and the worker are held to one list.
 */
void ht_expect_bad_lines_close(struct ht_conn *(*open_conn)(void *arg), void *arg);
/* Cancels request id on c (herd.cancel): its reply must be the error cancelled. */
void ht_cancel_ok(struct ht_conn *c, int64_t id);
/* herdd d lists no worker (list without "all") to a fresh inspector. */
void ht_assert_no_workers(const struct ht_daemon *d);
/* stats.limits_hit[name] of herdd d, as a fresh inspector sees it. */
json_int_t ht_limit_hits(const struct ht_daemon *d, const char *name);
/* ht_spawn() that must succeed: returns the spawn's result (new reference). params stolen. */
json_t *ht_spawn_ok(struct ht_conn *c, json_t *params);
/* ht_conn_wait_event() that must see the event: returns its params (new reference). */
json_t *ht_wait_event_ok(
    struct ht_conn *c, const char *event, const char *worker_id, int timeout_ms);
/* The test worker at sock writes text and a newline to stream ("stdout", "stderr"), or the test fails. */
void ht_worker_writes_ok(const char *sock, const char *stream, const char *text);
/* Reaps our child pid (10 s budget); fails the test unless it exited. Returns its exit code. */
int ht_wait_exit_ok(pid_t pid);
/*
 * json_pack() for call arguments: the value stays alive until the test's
 * teardown (ht_teardown), so arguments, which libherd borrows, can be
 * written inline. Fails the test if the format is wrong.
 */
json_t *ht_args(const char *fmt, ...);

/* What herdctl said: its exit code (as ht_run() returns it) and its output, malloc'd. */
struct ht_out {
	int code;
	char *out, *err;
};
/*
 * Runs herdctl (HERDCTL) with --socket socket (NULL: none) and the arguments
 * up to NULL; fails the test if it could not run. Free with ht_out_free().
 */
struct ht_out ht_herdctl(const char *socket, ...) __attribute__((sentinel));
void ht_out_free(struct ht_out *o);

/* One test case of a test program (HT_MAIN). */
struct ht_case {
	const char *name;
	int timeout_s; /* seconds, scaled like ht_ms() for sanitizers and $HERD_TEST_SLOW */
	int loops; /* 0: each test runs once; n: n times, with _i = 0..n-1 */
	/*
	 * The herdd fixture, checked: before each test herdd starts with herdd_argv
	 * (may be NULL; one list per program) and a master connects (ht_herdd,
	 * ht_master); after it the master closes, herdd must exit 0 on SIGTERM and
	 * no child of the test may be left running. With CK_FORK=no (valgrind) it
	 * runs in-process around each test all the same.
	 */
	bool herdd;
	const char *const *herdd_argv;
	void (*setup)(void); /* checked, after the herdd fixture's (may be NULL) */
	void (*teardown)(void); /* checked, before the herdd fixture's (may be NULL) */
	const TTest *tests[32]; /* up to the first NULL */
};

/* A struct ht_case of tests run once each, without herdd. */
#define HT_CASE(name_, timeout_s_, ...)                                                            \
	{                                                                                          \
		.name = (name_), .timeout_s = (timeout_s_), .tests = { __VA_ARGS__ }               \
	}
/*
 * A struct ht_case with the herdd fixture started with herdd_argv_, each test
 * run loops_ times with _i = 0..loops_-1 (0: once, a plain test).
 */
#define HT_HERDD_LOOP_CASE(name_, timeout_s_, herdd_argv_, loops_, ...)                            \
	{                                                                                          \
		.name = (name_), .timeout_s = (timeout_s_), .loops = (loops_), .herdd = true,      \
		.herdd_argv = (herdd_argv_), .tests = {                                            \
			__VA_ARGS__                                                                \
		}                                                                                  \
	}

/* A struct ht_case of tests run once each, with the herdd fixture started with herdd_argv_. */
#define HT_HERDD_CASE(name_, timeout_s_, herdd_argv_, ...)                                         \
	HT_HERDD_LOOP_CASE(name_, timeout_s_, herdd_argv_, 0, __VA_ARGS__)

/* HT_CASE with a checked setup_ and teardown_ (either may be NULL). */
#define HT_CASE_WITH(name_, timeout_s_, setup_, teardown_, ...)                                    \
	{                                                                                          \
		.name = (name_), .timeout_s = (timeout_s_), .setup = (setup_),                     \
		.teardown = (teardown_), .tests = {                                                \
			__VA_ARGS__                                                                \
		}                                                                                  \
	}
/* HT_HERDD_CASE with a checked setup_ and teardown_ of its own (either may be NULL). */
#define HT_HERDD_CASE_WITH(name_, timeout_s_, herdd_argv_, setup_, teardown_, ...)                 \
	{                                                                                          \
		.name = (name_), .timeout_s = (timeout_s_), .herdd = true,                         \
		.herdd_argv = (herdd_argv_), .setup = (setup_), .teardown = (teardown_),           \
		.tests = {                                                                         \
			__VA_ARGS__                                                                \
		}                                                                                  \
	}

/*
 * Runs the suite made of cases with Check; ht_teardown() runs after every
 * test and at the end. Returns main()'s exit status.
 */
int ht_run_cases(const char *suite, const struct ht_case *cases, size_t n);

/* main() for a test program: the suite's name, then its cases (struct ht_case initializers). */
#define HT_MAIN(suite, ...)                                                                        \
	int main(void)                                                                             \
	{                                                                                          \
		const struct ht_case cases_[] = { __VA_ARGS__ };                                   \
                                                                                                   \
		return ht_run_cases(suite, cases_, sizeof(cases_) / sizeof(cases_[0]));            \
	}

/*
 * HT_MAIN for a test program that is also its own worker, of the herd worker
 * type at type_ (the file includes <herd/herd.h>): spawned by herdd it serves
 * and exits in herd_start_app(); run as a test it ignores SIGPIPE, as
 * ht_client_setup() does, and runs the suite.
 */
#define HT_APP_MAIN(type_, suite, ...)                                                             \
	int main(int argc, char **argv)                                                            \
	{                                                                                          \
		const struct ht_case cases_[] = { __VA_ARGS__ };                                   \
                                                                                                   \
		herd_start_app((type_), argc, argv);                                               \
		signal(SIGPIPE, SIG_IGN);                                                          \
		return ht_run_cases(suite, cases_, sizeof(cases_) / sizeof(cases_[0]));            \
	}

#endif
