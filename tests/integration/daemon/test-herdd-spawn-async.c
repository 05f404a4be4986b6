/* SPDX-License-Identifier: MIT */
/*
 * A spawn stops nothing but itself (issues 17 and 19): herdd's main thread
 * waits for the new process to call execve(), its loop thread goes on. The
 * tests slow that execve down: strace, attached to herdd, holds every
 * execve 400 ms at its entry. Meanwhile another connection is answered at
 * once, a master that goes away leaves no process behind once the spawn
 * comes back, and a reexec waits for the spawn. Workers outlive reexecs
 * whoever spawned them, before the first or between two.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ht-check.h"

/* How long strace holds each execve (scaled for slow runs, as ht_ms()). */
#define DELAY_MS ht_ms(400)
/* An answer this fast came while the spawn was still held: far below DELAY_MS. */
#define PROMPT_MS ht_ms(100)
/* Under the reexec's probe timeout (3 s, not scaled): the probe's execve is held too. */
#define REEXEC_DELAY_MS 400

static const char *strace_argv[16];

static int
run_strace(void *unused)
{
	execvp(strace_argv[0], (char *const *)strace_argv);
	return 127;
}

/* Every task of pid has a tracer. */
static bool
all_traced(pid_t pid)
{
	char path[320], line[256];
	struct dirent *e;
	bool all = true;
	int tasks = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return false;
	while (all && (e = readdir(d))) {
		FILE *f;
		bool traced = false;

		if (e->d_name[0] == '.')
			continue;
		tasks++;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, e->d_name);
		f = fopen(path, "re");
		while (f && fgets(line, sizeof(line), f))
			if (!strncmp(line, "TracerPid:", 10))
				traced = atoi(line + 10) > 0;
		if (f)
			fclose(f);
		all = traced;
	}
	closedir(d);
	return all && tasks > 0;
}

/*
 * Attaches strace to herdd (every thread, and the children they make) and
 * waits until it holds them all. Returns strace's pid.
 */
static pid_t
slow_execs(pid_t herdd, int delay_ms)
{
	static char pid_text[16], inject[64];
	int64_t deadline = ht_now_ms() + ht_ms(10000);
	const struct timespec ms = { 0, 1000000 };
	pid_t tracer;
	int n = 0;

	snprintf(pid_text, sizeof(pid_text), "%d", (int)herdd);
	snprintf(inject, sizeof(inject), "inject=execve:delay_enter=%d", delay_ms * 1000);
	strace_argv[n++] = "strace";
	strace_argv[n++] = "-f";
	strace_argv[n++] = "-qq";
	strace_argv[n++] = "-o";
	strace_argv[n++] = "/dev/null";
	strace_argv[n++] = "-e";
	strace_argv[n++] = "trace=execve";
	strace_argv[n++] = "-e";
	strace_argv[n++] = inject;
	strace_argv[n++] = "-p";
	strace_argv[n++] = pid_text;
	strace_argv[n] = NULL;
	tracer = ht_fork_fn(run_strace, NULL, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(tracer, 0);
	/* Attaching has no event to wait on: /proc says when it is done. */
	while (!all_traced(herdd)) {
		ck_assert_msg(ht_pid_alive(tracer), "strace could not attach to herdd");
		ck_assert_msg(ht_now_ms() < deadline, "strace did not attach within 10 s");
		nanosleep(&ms, NULL);
	}
	return tracer;
}

/* Detaches strace: herdd runs on untraced. */
static void
stop_strace(pid_t tracer)
{
	int status;

	ck_assert_int_eq(kill(tracer, SIGTERM), 0);
	ck_assert_int_eq(ht_wait_child(tracer, ht_ms(10000), &status), 0);
}

/*
 * herdd's count of spawns taken in hand (stats.spawns) once it is past
 * before: -1 for the count now, the count before a spawn to wait for it.
 */
static json_int_t
spawns_past(struct ht_conn *c, json_int_t before)
{
	int64_t deadline = ht_now_ms() + ht_ms(5000);
	json_int_t n;

	do {
		json_t *r = ht_call_ok(c, "stats", NULL);

		n = json_integer_value(json_object_get(ht_assert_result(r), "spawns"));
		json_decref(r);
		ck_assert_msg(ht_now_ms() < deadline, "herdd did not take the spawn");
	} while (n <= before);
	return n;
}

/*
 * While herdd's new process is held before its execve, another connection
 * is answered at once (ping and list); the spawn then completes and its
 * worker serves.
 */
START_TEST(test_loop_answers_while_spawn_waits)
{
	struct ht_conn *look = ht_herdd_open(ht_herdd, "inspector", "look");
	pid_t tracer = slow_execs(ht_herdd->pid, DELAY_MS);
	int64_t sent, answered, ready;
	json_t *r, *res;
	int64_t id;

	ck_assert_ptr_nonnull(look);
	sent = ht_now_ms();
	id = ht_conn_send_request(ht_master, "spawn", ht_testworker_params(NULL));
	ck_assert_int_gt(id, 0);
	r = ht_call_ok(look, "ping", NULL);
	json_decref(r);
	r = ht_call_ok(look, "list", json_pack("{s:b}", "all", 1));
	answered = ht_now_ms();
	json_decref(r);
	r = ht_conn_wait_reply(ht_master, id, ht_ms(10000));
	ready = ht_now_ms();
	res = ht_assert_result(r);
	ht_track_pid(ht_worker_pid(res));
	ck_assert_int_gt(ht_worker_pid(res), 0);
	/* The spawn was held all along: its answer could not come before the delay. */
	ck_assert_msg(ready - sent >= DELAY_MS, "spawn answered after %lld ms, below the delay",
	    (long long)(ready - sent));
	ck_assert_msg(answered - sent < PROMPT_MS,
	    "ping and list answered after %lld ms while the spawn was held %d ms",
	    (long long)(answered - sent), DELAY_MS);
	stop_strace(tracer);
	json_decref(ht_worker_call(
	    ht_str(res, "socket"), NULL, "sum", json_pack("{s:i}", "n", 4), ht_ms(5000)));
	json_decref(r);
	ht_conn_close(look);
}
END_TEST

/*
 * A master that goes away while its spawn is held: once the process exists
 * herdd stops it (killed_orphan) and reaps it, nothing is left.
 */
START_TEST(test_master_gone_while_spawn_waits)
{
	struct ht_conn *look = ht_herdd_open(ht_herdd, "inspector", "look");
	struct ht_conn *m = ht_herdd_open(ht_herdd, "master", "doomed");
	json_int_t before = spawns_past(look, -1);
	pid_t tracer = slow_execs(ht_herdd->pid, DELAY_MS), pid;
	int64_t sent;
	json_t *w;

	ck_assert_ptr_nonnull(m);
	sent = ht_now_ms();
	ck_assert_int_gt(ht_conn_send_request(m, "spawn",
	                     ht_testworker_params(json_pack("{s:s}", "name", "doomed"))),
	    0);
	spawns_past(look, before);
	ht_conn_close(m);
	ck_assert_msg(ht_now_ms() - sent < DELAY_MS, "the master did not go within the delay");
	w = ht_herdd_wait_listed(look, "doomed", "exited", ht_ms(10000));
	ck_assert_msg(w, "the orphan never exited");
	pid = ht_worker_pid(w);
	ck_assert_int_gt(pid, 0);
	ck_assert_str_eq(ht_str(w, "reason"), "killed_orphan");
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(2000)), 0);
	json_decref(w);
	stop_strace(tracer);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(2000)), 0);
	ht_conn_close(look);
}
END_TEST

/* reexec, which must keep herdd's pid; returns the generation. */
static json_int_t
reexec_ok(struct ht_conn *c)
{
	json_t *r = ht_conn_call(c, "reexec", json_object(), ht_ms(30000)), *res;
	json_int_t gen;

	ck_assert_msg(r, "no reply to reexec: %s", strerror(errno));
	res = ht_assert_result(r);
	ck_assert_int_eq(json_integer_value(json_object_get(res, "pid")), ht_herdd->pid);
	gen = json_integer_value(json_object_get(res, "generation"));
	json_decref(r);
	return gen;
}

/* The worker of a spawn result is listed ready with the same pid and serves. */
static void
assert_alive(struct ht_conn *c, const json_t *spawned)
{
	json_t *w = ht_herdd_find(c, ht_str(spawned, "id")), *r;

	ck_assert_msg(w, "worker %s not listed", ht_str(spawned, "id"));
	ck_assert_int_eq(ht_worker_pid(w), ht_worker_pid(spawned));
	ck_assert_str_eq(ht_str(w, "state"), "ready");
	json_decref(w);
	r = ht_worker_call(
	    ht_str(spawned, "socket"), NULL, "sum", json_pack("{s:i}", "n", 4), ht_ms(5000));
	ck_assert_int_eq(json_integer_value(ht_assert_result(r)), 6);
	json_decref(r);
}

/*
 * Two reexecs in a row: the worker spawned before the first and the one
 * spawned between them both live on, same pids, callable.
 */
START_TEST(test_two_reexecs_keep_workers)
{
	json_t *first = ht_spawn_ok(ht_master, ht_testworker_params(NULL)), *second;

	ck_assert_int_eq(reexec_ok(ht_master), 1);
	assert_alive(ht_master, first);
	second = ht_spawn_ok(ht_master, ht_testworker_params(NULL));
	ck_assert_int_eq(reexec_ok(ht_master), 2);
	assert_alive(ht_master, first);
	assert_alive(ht_master, second);
	json_decref(first);
	json_decref(second);
}
END_TEST

/* A reexec asked while a spawn is held waits for it: the worker lives on. */
START_TEST(test_reexec_waits_for_spawn)
{
	struct ht_conn *look = ht_herdd_open(ht_herdd, "inspector", "look");
	json_int_t before = spawns_past(look, -1);
	pid_t tracer = slow_execs(ht_herdd->pid, REEXEC_DELAY_MS);
	json_t *r, *res;
	int64_t id;

	id = ht_conn_send_request(ht_master, "spawn", ht_testworker_params(NULL));
	ck_assert_int_gt(id, 0);
	spawns_past(look, before);
	ck_assert_int_eq(reexec_ok(look), 1);
	r = ht_conn_wait_reply(ht_master, id, ht_ms(10000));
	res = ht_assert_result(r);
	ht_track_pid(ht_worker_pid(res));
	stop_strace(tracer);
	assert_alive(look, res);
	json_decref(r);
	ht_conn_close(look);
}
END_TEST

HT_MAIN("herdd-spawn-async",
    HT_HERDD_CASE("spawn-async", 60, ht_grace_args, test_loop_answers_while_spawn_waits,
        test_master_gone_while_spawn_waits, test_two_reexecs_keep_workers,
        test_reexec_waits_for_spawn))
