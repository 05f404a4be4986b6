/* SPDX-License-Identifier: MIT */
/*
 * How workers fail, and what herdd tells about it: init failures and spawn
 * timeouts answer the spawn and leave no process; crashes, exits and failures
 * reported after a function returned reach the owner as events with the
 * signal, exit code, message and stderr tail; the stderr kept is bounded in
 * lines and bytes; failed spawns leak no fd.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ht-check.h"

/* The record of a worker that no longer exists: reaped, and the reason is right. */
static void
assert_record(const char *id, const char *reason)
{
	json_t *w = ht_herdd_find(ht_master, id);

	ck_assert_msg(w, "no record for %s", id);
	ck_assert_msg(ht_str(w, "reason") && strcmp(ht_str(w, "reason"), reason) == 0,
	    "%s: reason %s expected: %s", id, reason, ht_dump(w));
	ck_assert_str_eq(ht_str(w, "state"), "exited");
	ck_assert_int_eq(ht_pid_state(ht_worker_pid(w)), 0);
	json_decref(w);
}

START_TEST(test_init_failure)
{
	json_t *reply, *ev;
	const char *id;

	reply = ht_spawn(ht_master,
	    ht_testworker_params(json_pack("{s:s, s:{s:s}}", "name", "bad-init", "init",
	        "fail_init", "no database at /nowhere")),
	    ht_ms(10000));
	ht_assert_error(reply, "init_failed");
	ck_assert_str_eq(ht_error_message(reply), "no database at /nowhere");
	json_decref(reply);
	/* Nothing is left running once the spawn has answered. */
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);

	ev = ht_wait_event_ok(ht_master, "init_failed", NULL, ht_ms(5000));
	ck_assert_str_eq(ht_str(ev, "message"), "no database at /nowhere");
	id = ht_str(json_object_get(ev, "worker"), "id");
	assert_record(id, "init_failed");
	json_decref(ev);
}
END_TEST

START_TEST(test_spawn_timeout)
{
	json_t *reply, *data, *w;

	reply = ht_spawn(ht_master,
	    ht_testworker_params(json_pack("{s:s, s:{s:i}, s:i}", "name", "too-slow", "init",
	        "init_delay_ms", 60000, "spawn_timeout_ms", 300)),
	    ht_ms(10000));
	ht_assert_error(reply, "timeout");
	data = ht_error_data(reply);
	ck_assert_str_eq(ht_str(data, "what"), "spawn");
	json_decref(reply);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	w = ht_herdd_wait_listed(ht_master, "too-slow", "exited", ht_ms(1000));
	ck_assert_msg(w, "no record of the timed-out worker");
	assert_record(ht_str(w, "id"), "spawn_timeout");
	json_decref(w);
}
END_TEST

START_TEST(test_crash_reports_signal)
{
	json_t *res, *reply, *ev, *worker;
	const char *socket;
	struct stat st;

	res = ht_spawn_ok(ht_master, ht_testworker_params(NULL));
	socket = ht_str(res, "socket");
	reply = ht_worker_call(
	    socket, NULL, "crash", json_pack("{s:s}", "signal", "SEGV"), ht_ms(5000));
	ck_assert_msg(!reply && errno == EPIPE, "the crash call answered: %s", ht_dump(reply));

	ev = ht_wait_event_ok(ht_master, "crashed", ht_str(res, "id"), ht_ms(5000));
	worker = json_object_get(ev, "worker");
	ck_assert_str_eq(ht_str(worker, "signal"), "SIGSEGV");
	ck_assert_str_eq(ht_str(worker, "reason"), "crashed");
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	/* The worker could not remove its socket; herdd must. */
	ck_assert_msg(stat(socket, &st) < 0 && errno == ENOENT, "stale socket %s", socket);
	json_decref(ev);
	json_decref(res);
}
END_TEST

START_TEST(test_exit_code_reported)
{
	json_t *res, *reply, *ev, *worker;

	res = ht_spawn_ok(ht_master, ht_testworker_params(NULL));
	reply = ht_worker_call(
	    ht_str(res, "socket"), NULL, "exit", json_pack("{s:i}", "code", 3), ht_ms(5000));
	ck_assert_ptr_null(reply);
	ev = ht_wait_event_ok(ht_master, "exited", ht_str(res, "id"), ht_ms(5000));
	worker = json_object_get(ev, "worker");
	ck_assert_int_eq(json_integer_value(json_object_get(worker, "exit_code")), 3);
	ck_assert_str_eq(ht_str(worker, "reason"), "exited");
	ck_assert(json_is_null(json_object_get(worker, "signal")));
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	json_decref(ev);
	json_decref(res);
}
END_TEST

START_TEST(test_background_failure)
{
	json_t *res, *reply, *ev, *tail;
	const char *socket, *id;

	res = ht_spawn_ok(ht_master, ht_testworker_params(NULL));
	socket = ht_str(res, "socket");
	id = ht_str(res, "id");
	reply = ht_worker_call(
	    socket, NULL, "stderr", json_pack("{s:s}", "text", "preparing the disk"), ht_ms(5000));
	ht_assert_result(reply);
	json_decref(reply);
	/* The call itself succeeds: the failure happens after it returned. */
	reply = ht_worker_call(socket, NULL, "fail_later",
	    json_pack("{s:i, s:s}", "ms", 50, "message", "disk on fire"), ht_ms(5000));
	ht_assert_result(reply);
	json_decref(reply);

	ev = ht_wait_event_ok(ht_master, "failed", id, ht_ms(5000));
	ck_assert_str_eq(ht_str(ev, "message"), "disk on fire");
	tail = json_object_get(ev, "stderr_tail");
	ck_assert_msg(
	    ht_lines_contain(tail, "preparing the disk"), "stderr_tail %s", ht_dump(tail));
	ck_assert_msg(ht_lines_contain(tail, "disk on fire"), "stderr_tail %s", ht_dump(tail));
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	assert_record(id, "failed");

	/* The captured stderr outlives the worker. */
	reply = ht_conn_call(ht_master, "logs", json_pack("{s:s}", "id", id), ht_ms(5000));
	ck_assert_msg(ht_lines_contain(
	                  json_object_get(ht_assert_result(reply), "lines"), "preparing the disk"),
	    "logs: %s", ht_dump(reply));
	json_decref(reply);
	json_decref(ev);
	json_decref(res);
}
END_TEST

/* One failed spawn of kind k: every way a spawn can fail, in turn. */
static void
failed_spawn(int k)
{
	static const char *const names[] = { "spawn_failed", "spawn_failed", "init_failed",
		"invalid_params", "invalid_params" };
	json_t *params, *reply;

	switch (k % 5) {
	case 0: /* no such executable */
		params = json_pack("{s:s}", "path", "/nonexistent/herd-worker");
		break;
	case 1: /* not executable */
		params = json_pack("{s:s}", "path", "/etc/hostname");
		break;
	case 2:
		params = ht_testworker_params(
		    json_pack("{s:{s:s}}", "init", "fail_init", "refusing to start"));
		break;
	case 3:
		params = json_pack("{s:s}", "path", "relative/path");
		break;
	default:
		params = ht_testworker_params(json_pack("{s:{s:s}}", "env", "HERD_X", "y"));
		break;
	}
	reply = ht_spawn(ht_master, params, ht_ms(10000));
	ht_assert_error(reply, names[k % 5]);
	json_decref(reply);
}

START_TEST(test_failed_spawns_leak_no_fd)
{
	int before, after, i;

	/* Warm up: whatever herdd opens once (directories, caches) is opened now. */
	for (i = 0; i < 10; i++)
		failed_spawn(i);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	before = ht_count_held_fds(ht_herdd->pid);
	ck_assert_int_gt(before, 0);
	for (i = 0; i < 100; i++)
		failed_spawn(i);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(1000)), 0);
	after = ht_count_held_fds(ht_herdd->pid);
	ck_assert_msg(
	    after == before, "herdd had %d fds before 100 failed spawns, %d after", before, after);
}
END_TEST

/* Runs sh -c script as a worker named name that exits before ready; returns its "logs" (new reference). */
static json_t *
chatty_logs(const char *name, const char *script, json_t **ret_tail)
{
	json_t *reply, *rec;

	reply = ht_spawn(
	    ht_master, ht_sh_params(script, json_pack("{s:s}", "name", name)), ht_ms(10000));
	ht_assert_error(reply, "worker_exited");
	*ret_tail = json_incref(json_object_get(ht_error_data(reply), "stderr_tail"));
	json_decref(reply);
	rec = ht_herdd_wait_listed(ht_master, name, "exited", ht_ms(5000));
	ck_assert_ptr_nonnull(rec);
	reply = ht_conn_call(ht_master, "logs",
	    json_pack("{s:s, s:i}", "id", ht_str(rec, "id"), "lines", 1000), ht_ms(5000));
	json_decref(rec);
	ht_assert_result(reply);
	return reply;
}

static void
assert_line(json_t *lines, int from_end, const char *want)
{
	json_t *l = json_array_get(lines, json_array_size(lines) - (size_t)from_end);

	ck_assert_msg(l && !strcmp(json_string_value(l), want), "line -%d is %s, not %.40s",
	    from_end, l ? json_string_value(l) : "(none)", want);
}

/*
 * The capture ring keeps the last 1000 lines and at most 128 KiB, cuts lines
 * at 4096 bytes, makes them valid UTF-8, and counts what it dropped.
 */
START_TEST(test_capture_bounds)
{
	json_t *reply, *lines, *tail;
	char a4096[4097], a1808[1809];
	size_t i, bytes = 0;

	memset(a4096, 'a', 4096);
	a4096[4096] = '\0';
	memset(a1808, 'a', 1808);
	a1808[1808] = '\0';
	/* 1200 short lines, one of 10000 bytes (three pieces), bad bytes with CRLF, no newline. */
	reply = chatty_logs("chatty",
	    "exec >&2; i=0; while [ $i -lt 1200 ]; do echo \"line $i\"; i=$((i+1)); done; "
	    "head -c 10000 /dev/zero | tr '\\0' a; echo; "
	    "printf 'bad \\377\\000 crlf\\r\\n'; printf 'no newline'; exit 3",
	    &tail);
	lines = json_object_get(ht_result(reply), "lines");
	ck_assert_uint_eq(json_array_size(lines), 1000);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "dropped")), 205);
	assert_line(lines, 1000, "line 205");
	assert_line(lines, 6, "line 1199");
	assert_line(lines, 5, a4096);
	assert_line(lines, 4, a4096);
	assert_line(lines, 3, a1808);
	assert_line(lines, 2, "bad \xef\xbf\xbd\xef\xbf\xbd crlf");
	assert_line(lines, 1, "no newline");
	/* The spawn's error carries the last 20 of them. */
	ck_assert_uint_eq(json_array_size(tail), 20);
	assert_line(tail, 1, "no newline");
	assert_line(tail, 20, "line 1185");
	json_decref(tail);
	json_decref(reply);

	/* 40 lines of 4000 bytes: the byte bound keeps 32 of them. */
	reply = chatty_logs("wordy",
	    "exec >&2; i=0; while [ $i -lt 40 ]; do head -c 4000 /dev/zero | tr '\\0' b; echo; "
	    "i=$((i+1)); done; exit 3",
	    &tail);
	lines = json_object_get(ht_result(reply), "lines");
	for (i = 0; i < json_array_size(lines); i++)
		bytes += strlen(json_string_value(json_array_get(lines, i)));
	ck_assert_uint_eq(json_array_size(lines), 32);
	ck_assert_uint_le(bytes, 128 * 1024);
	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(reply), "dropped")), 8);
	json_decref(tail);
	json_decref(reply);
}
END_TEST

HT_MAIN("sup-failures",
    HT_HERDD_CASE("failures", 30, ht_grace_args, test_init_failure, test_spawn_timeout,
        test_crash_reports_signal, test_exit_code_reported, test_background_failure,
        test_failed_spawns_leak_no_fd, test_capture_bounds))
