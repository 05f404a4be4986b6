/* SPDX-License-Identifier: MIT */
/*
 * Resource limits per worker (spawn's "limits", PROTOCOL.md 4.2), seen from
 * inside the worker: an open-file limit stops the worker's opens with
 * EMFILE, a memory limit makes a big allocation fail cleanly while the worker
 * goes on. The fixture's herdd has no cgroup, so every limit is an rlimit and
 * inspect says so; cpu_max, which only a cgroup enforces, is refused, as is
 * each bad value, naming the limit. herdctl's spawn options send the same.
 * The cgroup path (memory.max and oom_killed) needs a cgroup with the memory
 * controller, which the test machines lack; test-daemon-limits checks the
 * memory.events parsing it relies on.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ht-check.h"

/* Spawns the test worker with limits (stolen); returns its spawn result (new reference). */
static json_t *
spawn_limited(json_t *limits)
{
	json_t *params = ht_testworker_params(json_pack("{s:o}", "limits", limits));

	ck_assert(params);
	return ht_spawn_ok(ht_master, params);
}

/* Calls the worker's pid(args) (stolen), which tries its resources; returns the result (new reference). */
static json_t *
resources(const json_t *spawned, json_t *args)
{
	json_t *r = ht_worker_call(ht_str(spawned, "socket"), NULL, "pid", args, ht_ms(10000));
	json_t *res;

	ck_assert_msg(r, "resources: %s", strerror(errno));
	res = json_incref(ht_assert_result(r));
	json_decref(r);
	return res;
}

/* inspect's WORKER object of id (new reference). */
static json_t *
inspect(const char *id)
{
	json_t *r = ht_call_ok(ht_master, "inspect", json_pack("{s:s}", "id", id));
	json_t *w = json_incref(ht_assert_result(r));

	json_decref(r);
	return w;
}

/* inspect's limits.NAME of the worker spawned (new reference). */
static json_t *
inspect_limit(const json_t *spawned, const char *name)
{
	json_t *w = inspect(ht_str(spawned, "id"));
	json_t *l = json_object_get(json_object_get(w, "limits"), name);

	ck_assert_msg(json_is_object(l), "inspect has no limits.%s: %s", name, ht_dump(w));
	json_incref(l);
	json_decref(w);
	return l;
}

static json_int_t
int_of(const json_t *o, const char *key)
{
	ck_assert_msg(json_is_integer(json_object_get(o, key)), "no %s in %s", key, ht_dump(o));
	return json_integer_value(json_object_get(o, key));
}

START_TEST(test_nofile)
{
	json_t *sp = spawn_limited(json_pack("{s:i}", "nofile", 16));
	json_t *res = resources(sp, json_pack("{s:i}", "open", 64));
	json_t *l = inspect_limit(sp, "nofile");

	ck_assert_int_eq(int_of(res, "rlimit_nofile"), 16);
	/* fds 0-3 and libherd's own are open already: fewer than 16 more fit. */
	ck_assert_int_gt(int_of(res, "opened"), 0);
	ck_assert_int_lt(int_of(res, "opened"), 16);
	ck_assert_int_eq(int_of(res, "open_errno"), EMFILE);
	ck_assert_int_eq(int_of(l, "value"), 16);
	ck_assert_str_eq(ht_str(l, "enforced_by"), "rlimit");
	json_decref(l);
	json_decref(res);
	json_decref(sp);
}
END_TEST

START_TEST(test_memory_rlimit)
{
#if defined(__SANITIZE_ADDRESS__)
	/* ASan reserves terabytes of shadow address space: RLIMIT_AS stops it at start. */
	printf("test_memory_rlimit: skipped under AddressSanitizer (RLIMIT_AS and ASan's "
	       "shadow memory do not mix)\n");
#else
	json_int_t max = 128ll << 20;
	json_t *sp = spawn_limited(json_pack("{s:I}", "memory_max", max));
	json_t *big = resources(sp, json_pack("{s:i}", "alloc_mib", 256));
	json_t *small = resources(sp, json_pack("{s:i}", "alloc_mib", 1));
	json_t *l = inspect_limit(sp, "memory_max");

	ck_assert_int_eq(int_of(big, "rlimit_as"), max);
	ck_assert(json_is_false(json_object_get(big, "allocated")));
	ck_assert_int_eq(int_of(big, "alloc_errno"), ENOMEM);
	/* The failure was clean: the same worker still allocates below its limit. */
	ck_assert(json_is_true(json_object_get(small, "allocated")));
	ck_assert_int_eq(int_of(l, "value"), max);
	ck_assert_str_eq(ht_str(l, "enforced_by"), "rlimit");
	json_decref(l);
	json_decref(small);
	json_decref(big);
	json_decref(sp);
#endif
}
END_TEST

START_TEST(test_pids_inspect)
{
	json_t *sp = spawn_limited(json_pack("{s:i}", "pids_max", 4096));
	json_t *l = inspect_limit(sp, "pids_max");
	json_t *w = inspect(ht_str(sp, "id"));

	ck_assert_int_eq(int_of(l, "value"), 4096);
	ck_assert_str_eq(ht_str(l, "enforced_by"), "rlimit");
	/* Only what was asked is shown. */
	ck_assert_int_eq(json_object_size(json_object_get(w, "limits")), 1);
	json_decref(w);
	json_decref(l);
	json_decref(sp);
	/* A worker spawned without limits shows null. */
	sp = ht_spawn_ok(ht_master, ht_testworker_params(NULL));
	w = inspect(ht_str(sp, "id"));
	ck_assert(json_is_null(json_object_get(w, "limits")));
	json_decref(w);
	json_decref(sp);
}
END_TEST

/* spawn with limits (stolen) must be invalid_params, its message naming what. */
static void
refused(json_t *limits, const char *what)
{
	json_t *r = ht_conn_call(ht_master, "spawn",
	    ht_testworker_params(json_pack("{s:o}", "limits", limits)), ht_ms(5000));
	const char *msg;

	ht_assert_error(r, "invalid_params");
	msg = json_string_value(json_object_get(json_object_get(r, "error"), "message"));
	ck_assert_msg(msg && strstr(msg, what), "message %s lacks %s", msg, what);
	json_decref(r);
}

START_TEST(test_bad_values)
{
	refused(json_pack("{s:i}", "nofile", 3), "limits.nofile");
	refused(json_pack("{s:s}", "nofile", "16"), "limits.nofile");
	refused(json_pack("{s:i}", "memory_max", 4096), "limits.memory_max");
	refused(json_pack("{s:i}", "pids_max", 0), "limits.pids_max");
	refused(json_pack("{s:s}", "cpu_max", "half"), "limits.cpu_max");
	refused(json_pack("{s:s}", "cpu_max", "10 100000"), "limits.cpu_max");
	refused(json_pack("{s:f}", "cpu_max", 1e300), "limits.cpu_max");
	refused(json_pack("{s:i}", "memory", 1 << 30), "limits.memory is not a limit");
	refused(json_pack("[i]", 1), "limits must be an object");
	/* Valid, but no rlimit is a rate: without the cpu controller it is refused. */
	refused(json_pack("{s:s}", "cpu_max", "50000 100000"), "cpu controller");
	refused(json_pack("{s:f}", "cpu_max", 0.5), "cpu controller");
	ht_assert_no_workers(ht_herdd);
}
END_TEST

START_TEST(test_herdctl_options)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	struct ht_out o;
	json_t *res, *w, *l;
	char id[64];

	o = ht_herdctl(ht_herdd->socket, "--json", "spawn", "--nofile", "32", "--pids-max", "512",
	    "--", tw, NULL);
	ck_assert_msg(o.code == 0, "spawn: %d %s %s", o.code, o.err, o.out);
	res = json_loads(o.out, 0, NULL);
	ck_assert_msg(res, "not JSON: %s", o.out);
	ht_track_pid(ht_worker_pid(res));
	snprintf(id, sizeof(id), "%s", ht_str(res, "id"));
	ht_out_free(&o);
	w = inspect(id);
	l = json_object_get(w, "limits");
	ck_assert_int_eq(int_of(json_object_get(l, "nofile"), "value"), 32);
	ck_assert_int_eq(int_of(json_object_get(l, "pids_max"), "value"), 512);
	json_decref(w);
	json_decref(res);
	/* herdctl checks its own bounds; herdd names the limit it refuses. */
	o = ht_herdctl(ht_herdd->socket, "spawn", "--nofile", "2", "--", tw, NULL);
	ck_assert_int_eq(o.code, 2);
	ck_assert_ptr_nonnull(strstr(o.err, "--nofile"));
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "spawn", "--cpu-max", "0.5", "--", tw, NULL);
	ck_assert_int_eq(o.code, 1);
	ck_assert_msg(strstr(o.err, "cpu controller"), "stderr: %s", o.err);
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "shutdown", id, NULL);
	ck_assert_msg(o.code == 0, "shutdown: %s", o.err);
	ht_out_free(&o);
}
END_TEST

HT_MAIN("sup-limits",
    HT_HERDD_CASE("limits", 60, NULL, test_nofile, test_memory_rlimit, test_pids_inspect,
        test_bad_values, test_herdctl_options))
