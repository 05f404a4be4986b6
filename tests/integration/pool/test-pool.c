/* SPDX-License-Identifier: MIT */
/*
 * Pools against a real herdd, with this executable as the workers (the
 * start_app pattern): every entry point, results in order, handler errors,
 * poison tasks, task timeouts, the crash-loop give-up, the managed worker,
 * closing, and randomized SIGKILLs during map-reduce checked against the
 * sequential answer (every task counted exactly once).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>
#include <ev.h>
#include <herd/herd-ev.h>
#include <herd/herd.h>

#include "ht-check.h"
#include "worker-args.h"

/* ---- the worker side (this executable, spawned by herdd) ---- */

static json_int_t
arg_int(json_t *arg, const char *key, json_int_t dflt)
{
	json_t *v = json_object_get(arg, key);

	return json_is_integer(v) ? json_integer_value(v) : dflt;
}

/* {"x": X, "us": sleep first, "bad": B, "how": "fail"|"crash"|"hang"} -> 2X. */
static void
fn_double(herd_request *req, json_t *arg)
{
	json_int_t x = arg_int(arg, "x", 0);
	const char *how = json_string_value(json_object_get(arg, "how"));
	json_int_t us = arg_int(arg, "us", 0);

	if (us > 0)
		usleep((useconds_t)us);
	if (how && x == arg_int(arg, "bad", -1)) {
		if (strcmp(how, "fail") == 0) {
			herd_request_fail(req, "bad x %lld", (long long)x);
			return;
		}
		if (strcmp(how, "crash") == 0) {
			fprintf(stderr, "about to crash on x=%lld\n", (long long)x);
			wa_die_by(SIGSEGV);
		}
		if (strcmp(how, "hang") == 0)
			sleep(60);
	}
	if (how && strcmp(how, "always_crash") == 0)
		wa_die_by(SIGABRT);
	herd_request_reply(req, json_integer(2 * x));
}

/* {"x": X, "us": U} -> {"n": 1, "sum": X, "seen": {"X": 1}}: merged, a double count shows. */
static void
fn_item(herd_request *req, json_t *arg)
{
	json_int_t x = arg_int(arg, "x", 0), us = arg_int(arg, "us", 0);
	char key[32];

	if (us > 0)
		usleep((useconds_t)us);
	if (x == arg_int(arg, "crash_on", -1))
		wa_die_by(SIGSEGV);
	snprintf(key, sizeof(key), "%lld", (long long)x);
	herd_request_reply(req, json_pack("{s:i, s:I, s:{s:i}}", "n", 1, "sum", x, "seen", key, 1));
}

static void
fn_pid(herd_request *req, json_t *arg)
{
	herd_request_reply(req, json_integer(getpid()));
}

/* Adds n, sum and every count of seen (acc stolen and updated in place). */
static json_t *
merge(json_t *acc, json_t *value, void *userdata)
{
	json_t *seen = json_object_get(acc, "seen"), *v;
	const char *k;

	json_object_set_new(acc, "n", json_integer(arg_int(acc, "n", 0) + arg_int(value, "n", 0)));
	json_object_set_new(
	    acc, "sum", json_integer(arg_int(acc, "sum", 0) + arg_int(value, "sum", 0)));
	json_object_foreach(json_object_get(value, "seen"), k, v)
		json_object_set_new(
		    seen, k, json_integer(arg_int(seen, k, 0) + json_integer_value(v)));
	return acc;
}

static int
init_worker(json_t *arg, void **ret_state, char **reterr)
{
	const char *fail = json_string_value(json_object_get(arg, "fail_init"));

	if (fail)
		return herd_init_fail(reterr, "%s", fail);
	*ret_state = NULL;
	return 0;
}

static const struct herd_worker_type pool_worker = {
	.name = "pool-test",
	.functions = WA_FUNCTIONS({ "double", HERD_KIND_CALL, fn_double },
	    { "echo", HERD_KIND_CALL, wa_echo }, { "item", HERD_KIND_CALL, fn_item },
	    { "pid", HERD_KIND_CALL, fn_pid }),
	.init_worker = init_worker,
	.combiners = WA_COMBINERS({ "merge", merge }),
};

/* ---- master side ---- */

static herd_pool *
pool_open(int workers, json_t *extra_opts, json_t *spawn_opts)
{
	json_t *opts = json_pack(
	    "{s:s, s:i, s:s}", "socket", ht_herdd->socket, "workers", workers, "name", "tpool");
	herd_error *err = NULL;
	herd_pool *p = NULL;
	int r;

	if (extra_opts)
		json_object_update(opts, extra_opts);
	r = herd_pool_new(spawn_opts, opts, &p, &err);
	ck_assert_msg(r == 0, "pool: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	json_decref(opts);
	json_decref(extra_opts);
	return p;
}

static json_t *
xs(int n, json_t *extra)
{
	json_t *a = json_array();

	for (int i = 0; i < n; i++) {
		json_t *o = json_pack("{s:i}", "x", i);

		if (extra)
			json_object_update(o, extra);
		json_array_append_new(a, o);
	}
	json_decref(extra);
	return a;
}

/* The answer of fn_item over 0..n-1 merged: checks every x counted exactly once. */
static void
assert_items_exact(json_t *v, int n)
{
	json_t *seen = json_object_get(v, "seen");

	ck_assert_msg(json_is_object(v), "no value: %s", ht_dump(v));
	ck_assert_int_eq(arg_int(v, "n", -1), n);
	ck_assert_int_eq(arg_int(v, "sum", -1), (json_int_t)n * (n - 1) / 2);
	ck_assert_int_eq(json_object_size(seen), n);
	for (int i = 0; i < n; i++) {
		char key[32];

		snprintf(key, sizeof(key), "%d", i);
		ck_assert_msg(arg_int(seen, key, 0) == 1, "x=%d counted %lld times", i,
		    (long long)arg_int(seen, key, 0));
	}
}

START_TEST(test_map_in_order)
{
	herd_pool *p = pool_open(2, NULL, NULL);
	json_t *args = xs(300, NULL), *res = NULL;

	ck_assert_int_eq(herd_pool_size(p), 2);
	ck_assert_int_eq(herd_pool_map(p, "double", args, 0, &res), 0);
	ck_assert_int_eq(json_array_size(res), 300);
	for (int i = 0; i < 300; i++)
		ck_assert_int_eq(json_integer_value(json_array_get(res, i)), 2 * i);
	json_decref(res);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

struct seen_tasks {
	int n;
	int last_index;
	bool in_order;
	unsigned char hit[1000];
	int errors;
	char error_name[64];
	char error_message[256];
	json_t *error_data;
};

static void
on_task(herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *ud)
{
	struct seen_tasks *s = ud;

	if ((int)index != s->last_index + 1)
		s->in_order = false;
	s->last_index = (int)index;
	s->n++;
	if (index < sizeof(s->hit))
		s->hit[index]++;
	if (r < 0) {
		s->errors++;
		snprintf(s->error_name, sizeof(s->error_name), "%s", herd_error_name(err));
		snprintf(s->error_message, sizeof(s->error_message), "%s", herd_error_message(err));
		json_decref(s->error_data);
		s->error_data = json_incref(herd_error_data(err));
	} else {
		ck_assert_int_eq(json_integer_value(result), 2 * (json_int_t)index);
	}
}

/* Runs a job of kind over args calling "double", with flags, tasks reported to s. Returns its r. */
static int
run_seen(herd_pool *p, enum herd_job_kind kind, json_t *args, unsigned flags, struct seen_tasks *s)
{
	herd_job *job;
	int r;

	ck_assert_int_eq(herd_job_new(p, kind, "double", &job), 0);
	ck_assert_int_eq(herd_job_set_args(job, args), 0);
	ck_assert_int_eq(herd_job_set_flags(job, flags), 0);
	ck_assert_int_eq(herd_job_on_task(job, on_task, s), 0);
	r = herd_job_wait(job, HERD_TIMEOUT_INFINITE, NULL);
	herd_job_unref(job);
	return r;
}

/*
 * A MAP over n tasks calling "double" where only task bad fails (with
 * error name), skipped with flags: every other result right, in order.
 */
static void
assert_one_failure(herd_pool *p, json_t *args, unsigned flags, int n, int bad, const char *name,
    struct seen_tasks *s)
{
	*s = (struct seen_tasks){ .last_index = -1, .in_order = true };
	ck_assert_int_eq(run_seen(p, HERD_JOB_MAP, args, flags, s), 0);
	ck_assert_int_eq(s->n, n);
	ck_assert(s->in_order);
	ck_assert_int_eq(s->errors, 1);
	ck_assert_int_eq(s->hit[bad], 1);
	ck_assert_str_eq(s->error_name, name);
}

START_TEST(test_map_callbacks)
{
	herd_pool *p = pool_open(3, NULL, NULL);
	json_t *args = xs(500, NULL), *v = NULL;
	struct seen_tasks s = { .last_index = -1, .in_order = true };
	struct seen_tasks u = { .last_index = -1, .in_order = true };
	herd_job *job;

	/* Ordered, with a per-task callback. */
	ck_assert_int_eq(run_seen(p, HERD_JOB_MAP, args, 0, &s), 0);
	ck_assert_int_eq(s.n, 500);
	ck_assert(s.in_order);

	/* Unordered: every index once, and the value array in input order anyway. */
	ck_assert_int_eq(herd_job_new(p, HERD_JOB_MAP_UNORDERED, "double", &job), 0);
	ck_assert_int_eq(herd_job_set_args(job, args), 0);
	ck_assert_int_eq(herd_job_wait(job, HERD_TIMEOUT_INFINITE, &v), 0);
	for (int i = 0; i < 500; i++)
		ck_assert_int_eq(json_integer_value(json_array_get(v, i)), 2 * i);
	json_decref(v);
	herd_job_unref(job);
	ck_assert_int_eq(run_seen(p, HERD_JOB_MAP_UNORDERED, args, 0, &u), 0);
	ck_assert_int_eq(u.n, 500);
	for (int i = 0; i < 500; i++)
		ck_assert_int_eq(u.hit[i], 1);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

static int iter_i;
static json_t *
iter_next(void *ud)
{
	int n = *(int *)ud;

	return iter_i < n ? json_pack("{s:i}", "x", iter_i++) : NULL;
}

static json_t *
append(json_t *acc, json_t *value, void *ud)
{
	if (!json_is_array(acc)) {
		json_t *a = json_pack("[o]", acc);

		acc = a;
	}
	json_array_append(acc, value);
	return acc;
}

START_TEST(test_iterator_and_ordered_reduce)
{
	herd_pool *p = pool_open(2, NULL, NULL);
	int n = 400;
	json_t *v = NULL;
	herd_job *job;

	iter_i = 0;
	ck_assert_int_eq(herd_job_new(p, HERD_JOB_REDUCE_ORDERED, "double", &job), 0);
	ck_assert_int_eq(herd_job_set_iter(job, iter_next, &n), 0);
	ck_assert_int_eq(herd_job_set_combine(job, NULL, append, NULL), 0);
	ck_assert_int_eq(herd_job_wait(job, HERD_TIMEOUT_INFINITE, &v), 0);
	herd_job_unref(job);
	ck_assert_int_eq(json_array_size(v), 400);
	for (int i = 0; i < 400; i++)
		ck_assert_int_eq(json_integer_value(json_array_get(v, i)), 2 * i);
	json_decref(v);
	herd_pool_unref(p);
}
END_TEST

START_TEST(test_reduce_worker_side)
{
	herd_pool *p = pool_open(3, NULL, NULL);
	json_t *args = xs(2000, NULL), *v = NULL;

	ck_assert_int_eq(herd_pool_map_reduce(p, "item", args, "merge", merge, NULL, &v), 0);
	assert_items_exact(v, 2000);
	json_decref(v);
	/* Master-side folding gives the same answer. */
	ck_assert_int_eq(herd_pool_map_reduce(p, "item", args, NULL, merge, NULL, &v), 0);
	assert_items_exact(v, 2000);
	json_decref(v);
	/* A combine the worker does not declare is the task's error. */
	ck_assert_int_eq(
	    herd_pool_map_reduce(p, "item", args, "nope", merge, NULL, &v), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_pool_last_error(p)), "method_not_found");
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

static bool
over_300(json_t *result, void *ud)
{
	return json_integer_value(result) > 300;
}

START_TEST(test_find_first)
{
	herd_pool *p = pool_open(2, NULL, NULL);
	json_t *args = xs(1000, json_pack("{s:i}", "us", 200)), *found = NULL;

	ck_assert_int_eq(herd_pool_find(p, "double", args, over_300, NULL, &found), 0);
	ck_assert_msg(
	    json_integer_value(json_object_get(found, "result")) > 300, "%s", ht_dump(found));
	ck_assert_int_eq(json_integer_value(json_object_get(found, "result")),
	    2 * json_integer_value(json_object_get(found, "index")));
	json_decref(found);
	json_decref(args);
	/* Nothing matches: null. */
	args = xs(10, NULL);
	ck_assert_int_eq(herd_pool_find(p, "double", args, over_300, NULL, &found), 0);
	ck_assert(json_is_null(found));
	json_decref(found);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/*
 * A handler failure fails its task alone: a map stops on it with its error,
 * a skipping one has every other result. With a chunksize (0: the pool's
 * choice), the task fails inside a batch and its siblings' results stand.
 */
static void
handler_error(int chunksize)
{
	herd_pool *p = pool_open(2, json_pack("{s:i}", "chunksize", chunksize), NULL);
	json_t *args = xs(100, json_pack("{s:s, s:i}", "how", "fail", "bad", 37)), *res = NULL;
	struct seen_tasks s;
	herd_error *err;

	ck_assert_int_eq(herd_pool_map(p, "double", args, 0, &res), -EREMOTEIO);
	err = herd_pool_last_error(p);
	ck_assert_str_eq(herd_error_name(err), "function_failed");
	ck_assert_str_eq(herd_error_message(err), "bad x 37");
	ck_assert_int_eq(json_integer_value(json_object_get(herd_error_data(err), "index")), 37);
	ck_assert_ptr_null(res);

	/* Skipping: every other result, and the error reaches the task callback. */
	assert_one_failure(p, args, HERD_JOB_SKIP_FAILED, 100, 37, "function_failed", &s);
	ck_assert_str_eq(s.error_message, "bad x 37");
	json_decref(s.error_data);
	ck_assert_int_eq(herd_pool_deaths(p), 0);
	json_decref(args);
	herd_pool_unref(p);
}

START_TEST(test_handler_error)
{
	handler_error(0);
}
END_TEST

/*
 * A task that crashes its worker every time: a map stops on it once its
 * retries (2) are spent, a skipping one has the 59 others right and reports
 * it once, after three deaths. With a chunksize (0: the pool's choice), the
 * poison is found out alone in its batch.
 */
static void
poison_task(int chunksize)
{
	herd_pool *p =
	    pool_open(2, json_pack("{s:i, s:i}", "retries", 2, "chunksize", chunksize), NULL);
	json_t *args = xs(60, json_pack("{s:s, s:i}", "how", "crash", "bad", 17)), *res = NULL;
	struct seen_tasks s;
	json_t *data;
	herd_error *err;
	uint64_t deaths;

	ck_assert_int_eq(herd_pool_map(p, "double", args, 0, &res), -ECHILD);
	err = herd_pool_last_error(p);
	data = herd_error_data(err);
	ck_assert_str_eq(herd_error_name(err), "task_crashed");
	ck_assert_int_eq(json_integer_value(json_object_get(data, "index")), 17);
	ck_assert_int_eq(json_integer_value(json_object_get(data, "deaths")), 3);
	ck_assert_msg(
	    strstr(ht_dump(json_object_get(data, "stderr_tail")), "about to crash on x=17"),
	    "no stderr tail: %s", ht_dump(data));
	ck_assert_msg(json_object_get(data, "signal") != NULL, "no signal: %s", ht_dump(data));
	ck_assert_ptr_null(res);

	deaths = herd_pool_deaths(p);
	assert_one_failure(p, args, HERD_JOB_SKIP_CRASHED, 60, 17, "task_crashed", &s);
	ck_assert_int_eq(json_integer_value(json_object_get(s.error_data, "deaths")), 3);
	ck_assert_uint_eq(herd_pool_deaths(p) - deaths, 3);
	json_decref(s.error_data);
	json_decref(args);
	herd_pool_unref(p);
}

START_TEST(test_poison_task)
{
	poison_task(0);
}
END_TEST

/* A poison task inside a worker-folded reduce: the folds its crashes lost are redone. */
START_TEST(test_poison_in_reduce)
{
	herd_pool *p = pool_open(2, json_pack("{s:i}", "retries", 1), NULL);
	json_t *args = xs(300, json_pack("{s:i}", "crash_on", 77)), *v = NULL, *seen;
	struct seen_tasks s = { .last_index = -1, .in_order = true };
	herd_job *job;

	ck_assert_int_eq(herd_job_new(p, HERD_JOB_REDUCE, "item", &job), 0);
	herd_job_set_args(job, args);
	herd_job_set_combine(job, "merge", merge, NULL);
	herd_job_set_flags(job, HERD_JOB_SKIP_CRASHED);
	herd_job_on_task(job, on_task, &s);
	ck_assert_int_eq(herd_job_wait(job, HERD_TIMEOUT_INFINITE, &v), 0);
	herd_job_unref(job);
	ck_assert_int_eq(s.errors, 1);
	ck_assert_int_eq(s.last_index, 77);
	ck_assert_str_eq(s.error_name, "task_crashed");
	seen = json_object_get(v, "seen");
	ck_assert_int_eq(arg_int(v, "n", -1), 299);
	ck_assert_int_eq(arg_int(v, "sum", -1), 299 * 300 / 2 - 77);
	ck_assert_int_eq(json_object_size(seen), 299);
	for (int i = 0; i < 300; i++) {
		char key[32];

		snprintf(key, sizeof(key), "%d", i);
		ck_assert_int_eq(arg_int(seen, key, 0), i == 77 ? 0 : 1);
	}
	ck_assert_uint_ge(herd_pool_deaths(p), 2);
	json_decref(s.error_data);
	json_decref(v);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/*
 * A pool of two with retries 1 and extra_opts (stolen) maps n tasks, task bad
 * of which hangs: it alone fails, with error name, skipped, and every other
 * result is right and in order. Returns the pool for the caller's own checks.
 */
static herd_pool *
assert_hang_fails(json_t *extra_opts, int n, int bad, const char *name)
{
	herd_pool *p;
	json_t *args = xs(n, json_pack("{s:s, s:i}", "how", "hang", "bad", bad));
	struct seen_tasks s;

	json_object_set_new(extra_opts, "retries", json_integer(1));
	p = pool_open(2, extra_opts, NULL);
	assert_one_failure(p, args, HERD_JOB_SKIP_CRASHED, n, bad, name, &s);
	json_decref(s.error_data);
	json_decref(args);
	return p;
}

/* A task over task_timeout_ms loses its worker and, with its retry spent, fails with timeout. */
START_TEST(test_task_timeout)
{
	herd_pool *p =
	    assert_hang_fails(json_pack("{s:i}", "task_timeout_ms", 300), 40, 5, "timeout");
	uint64_t deaths = herd_pool_deaths(p);

	ck_assert_msg(deaths == 2, "%llu deaths", (unsigned long long)deaths);
	herd_pool_unref(p);
}
END_TEST

/* A worker whose loop hangs loses its connection (heartbeats): it is killed, the task redone. */
START_TEST(test_hung_worker)
{
	herd_pool *p =
	    assert_hang_fails(json_pack("{s:{s:i, s:i}}", "settings", "heartbeat_interval_ms", 100,
	                          "heartbeat_timeout_ms", 600),
	        30, 9, "task_crashed");
	json_t *list = NULL, *w;
	pid_t pids[8];
	size_t i;
	int n;

	ck_assert_uint_ge(herd_pool_deaths(p), 2);
	/* No hung worker is left running: every worker but the pool's live ones goes. */
	n = herd_pool_worker_pids(p, pids, 8);
	ck_assert_int_eq(herd_master_list(herd_pool_get_master(p), false, &list), 0);
	json_array_foreach(json_object_get(list, "workers"), i, w) {
		bool live = strcmp(ht_str(w, "state"), "starting") == 0;

		for (int k = 0; k < n && k < 8; k++)
			live |= pids[k] == ht_worker_pid(w);
		if (!live)
			ck_assert_int_eq(ht_wait_pid_gone(ht_worker_pid(w), ht_ms(5000)), 0);
	}
	json_decref(list);
	herd_pool_unref(p);
}
END_TEST

START_TEST(test_crash_loop)
{
	herd_pool *p =
	    pool_open(2, json_pack("{s:i, s:i}", "retries", 1000, "max_restarts", 5), NULL);
	json_t *args = xs(20, json_pack("{s:s}", "how", "always_crash")), *res = NULL;
	herd_error *err = NULL;
	json_t *opts;
	int r;

	ck_assert_int_eq(herd_pool_map(p, "double", args, 0, &res), -EIO);
	ck_assert_str_eq(herd_error_name(herd_pool_last_error(p)), "crash_loop");
	ck_assert_msg(strstr(herd_error_message(herd_pool_last_error(p)), "gave up"), "%s",
	    herd_error_message(herd_pool_last_error(p)));
	/* A pool that gave up takes no more work. */
	ck_assert_int_eq(herd_pool_map(p, "double", args, 0, &res), -EIO);
	herd_pool_unref(p);
	json_decref(args);

	/* Options are checked. */
	opts = json_pack("{s:s, s:i}", "socket", ht_herdd->socket, "windw", 2);
	ck_assert_int_eq(herd_pool_new(NULL, opts, &p, &err), -EINVAL);
	json_decref(opts);
	opts = json_pack("{s:s, s:i}", "socket", ht_herdd->socket, "window", 0);
	ck_assert_int_eq(herd_pool_new(NULL, opts, &p, &err), -EINVAL);
	json_decref(opts);

	/* Workers that cannot even start: herd_pool_new says why. */
	opts = json_pack(
	    "{s:s, s:i, s:i}", "socket", ht_herdd->socket, "workers", 2, "max_restarts", 4);
	args = json_pack("{s:{s:s}}", "init", "fail_init", "no database here");
	r = herd_pool_new(args, opts, &p, &err);
	ck_assert_int_lt(r, 0);
	ck_assert_msg(err && strstr(herd_error_message(err), "no database here"), "%s",
	    err ? herd_error_message(err) : "no error");
	herd_error_unref(err);
	json_decref(opts);
	json_decref(args);
}
END_TEST

START_TEST(test_managed_worker)
{
	herd_pool *p = pool_open(1, NULL, NULL);
	json_t *res = NULL, *x = json_pack("{s:i}", "x", 21);
	pid_t pid, pid2;

	ck_assert_int_eq(herd_pool_call(p, "pid", NULL, &res), 0);
	pid = (pid_t)json_integer_value(res);
	json_decref(res);
	ck_assert_int_eq(kill(pid, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(5000)), 0);
	/* The next call goes to a new worker. */
	ck_assert_int_eq(herd_pool_call(p, "pid", NULL, &res), 0);
	pid2 = (pid_t)json_integer_value(res);
	json_decref(res);
	ck_assert_int_ne(pid, pid2);
	ck_assert_int_eq(herd_pool_call(p, "double", x, &res), 0);
	ck_assert_int_eq(json_integer_value(res), 42);
	json_decref(res);
	json_decref(x);
	herd_pool_unref(p);
}
END_TEST

struct submitted {
	int done;
	json_int_t sum;
};

static void
submit_cb(herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *ud)
{
	struct submitted *s = ud;

	ck_assert_int_eq(r, 0);
	s->sum += json_integer_value(result);
	if (++s->done == 50)
		ev_break(EV_DEFAULT, EVBREAK_ALL);
}

START_TEST(test_submit_on_libev)
{
	herd_pool *p = pool_open(2, NULL, NULL);
	struct submitted s = { 0 };

	ck_assert_int_eq(herd_pool_attach_ev(p, EV_DEFAULT), 0);
	for (int i = 0; i < 50; i++) {
		json_t *a = json_pack("{s:i}", "x", i);

		ck_assert_int_eq(herd_pool_submit(p, "double", a, submit_cb, &s), 0);
		json_decref(a);
	}
	ev_run(EV_DEFAULT, 0);
	ck_assert_int_eq(s.done, 50);
	ck_assert_int_eq(s.sum, 2 * (49 * 50 / 2));
	herd_pool_detach_ev(p);
	herd_pool_unref(p);
}
END_TEST

START_TEST(test_close_leaves_no_worker)
{
	herd_pool *p = pool_open(3, NULL, NULL);
	herd_master *m = NULL;
	json_t *list = NULL, *w, *res = NULL;
	pid_t pids[8];
	int n;
	size_t i;

	ck_assert_int_eq(herd_pool_call(p, "pid", NULL, &res), 0);
	json_decref(res);
	n = herd_pool_worker_pids(p, pids, 8);
	ck_assert_int_ge(n, 1);
	ck_assert_int_eq(herd_master_connect(ht_herdd->socket, NULL, &m, NULL), 0);
	ck_assert_int_eq(herd_master_list(m, false, &list), 0);
	/* herdd shows which pool a worker belongs to: its name. */
	json_array_foreach(json_object_get(list, "workers"), i, w)
		ck_assert_msg(strncmp(ht_str(w, "name"), "tpool.", 6) == 0, "%s", ht_dump(w));
	json_decref(list);
	ck_assert_int_eq(herd_pool_close(p), 0);
	for (int k = 0; k < n && k < 8; k++)
		ck_assert_int_eq(ht_wait_pid_gone(pids[k], ht_ms(5000)), 0);
	ck_assert_int_eq(herd_master_list(m, true, &list), 0);
	json_array_foreach(json_object_get(list, "workers"), i, w) {
		ck_assert_msg(strcmp(ht_str(w, "state"), "exited") == 0, "%s", ht_dump(w));
		ck_assert_msg(strcmp(ht_str(w, "reason"), "shutdown") == 0, "%s", ht_dump(w));
		/* 0 also says the worker found no leak under ASan (the fold path included). */
		ck_assert_msg(
		    json_integer_value(json_object_get(w, "exit_code")) == 0, "%s", ht_dump(w));
	}
	json_decref(list);
	ck_assert_int_eq(herd_pool_process(p), -ENOTCONN);
	herd_pool_unref(p);
	herd_master_unref(m);
}
END_TEST

struct progress_seen {
	int calls;
	uint64_t done, failed, retried, total;
};

static void
on_progress(herd_job *job, uint64_t done, uint64_t failed, uint64_t retried, uint64_t total,
    double rate, void *ud)
{
	struct progress_seen *ps = ud;

	ps->calls++;
	ps->done = done;
	ps->failed = failed;
	ps->retried = retried;
	ps->total = total;
	/* The ready-made bar draws only on a terminal; it must be callable from here. */
	herd_progress_bar(job, done, failed, retried, total, rate, (void *)"test");
}

START_TEST(test_progress_and_retry_failed)
{
	herd_pool *p = pool_open(2, json_pack("{s:b, s:i}", "retry_failed", 1, "retries", 2), NULL);
	json_t *args = xs(100, json_pack("{s:s, s:i}", "how", "fail", "bad", 3));
	struct progress_seen ps = { 0 };
	herd_job *job;

	ck_assert_int_eq(herd_job_new(p, HERD_JOB_MAP_UNORDERED, "double", &job), 0);
	herd_job_set_args(job, args);
	herd_job_set_flags(job, HERD_JOB_SKIP_FAILED);
	herd_job_on_progress(job, on_progress, &ps);
	ck_assert_int_eq(herd_job_wait(job, HERD_TIMEOUT_INFINITE, NULL), 0);
	herd_job_unref(job);
	/* The failing task ran three times (two retries), then was reported. */
	ck_assert_int_ge(ps.calls, 1);
	ck_assert_int_eq(ps.done, 99);
	ck_assert_int_eq(ps.failed, 1);
	ck_assert_int_eq(ps.retried, 2);
	ck_assert_int_eq(ps.total, 100);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* ---- randomized kills ---- */

static unsigned kills_total;

static bool
all_done(herd_job **jobs, int n)
{
	for (int i = 0; i < n; i++)
		if (!herd_job_is_done(jobs[i]))
			return false;
	return true;
}

/* Runs jobs on p together, SIGKILLing a random worker every few milliseconds, at most max_kills. */
static void
run_with_kills(herd_pool *p, herd_job **jobs, int n_jobs, unsigned max_kills)
{
	uint64_t next_kill = 0;
	unsigned kills = 0;
	int r;

	for (int i = 0; i < n_jobs; i++)
		ck_assert_int_eq(herd_job_start(jobs[i]), 0);
	while (!all_done(jobs, n_jobs)) {
		struct timespec ts;
		uint64_t now;

		r = herd_pool_process(p);
		ck_assert_int_ge(r, 0);
		if (r > 0)
			continue;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
		if (!next_kill)
			next_kill = now + 2000 + (uint64_t)(rand() % 30000);
		if (now >= next_kill && kills < max_kills) {
			pid_t pids[8];
			int n = herd_pool_worker_pids(p, pids, 8);

			if (n > 0) {
				kill(pids[rand() % (n < 8 ? n : 8)], SIGKILL);
				kills++;
			}
			next_kill = now + 2000 + (uint64_t)(rand() % 40000);
		}
		herd_pool_wait(p, 2000);
	}
	kills_total += kills;
}

/* A job over args calling "item": MAP, or REDUCE folded on the workers or not, or REDUCE_ORDERED. */
static herd_job *
item_job(herd_pool *p, enum herd_job_kind kind, json_t *args, bool worker_fold)
{
	herd_job *job;

	ck_assert_int_eq(herd_job_new(p, kind, "item", &job), 0);
	ck_assert_int_eq(herd_job_set_args(job, args), 0);
	if (kind == HERD_JOB_REDUCE || kind == HERD_JOB_REDUCE_ORDERED)
		ck_assert_int_eq(
		    herd_job_set_combine(job, worker_fold ? "merge" : NULL, merge, NULL), 0);
	return job;
}

/* The job's value checked against the sequential answer over 0..n-1; the job is released. */
static void
assert_job_exact(herd_job *job, int n)
{
	json_t *v = NULL;

	ck_assert_int_eq(herd_job_wait(job, 0, &v), 0);
	if (json_is_array(v)) {
		json_t *acc = json_pack("{s:i, s:i, s:{}}", "n", 0, "sum", 0, "seen");

		for (size_t i = 0; i < json_array_size(v); i++)
			acc = merge(acc, json_array_get(v, i), NULL);
		json_decref(v);
		v = acc;
	}
	assert_items_exact(v, n);
	json_decref(v);
	herd_job_unref(job);
}

START_TEST(test_random_kills_reduce)
{
	int rounds = getenv("HERD_POOL_KILL_ROUNDS") ? atoi(getenv("HERD_POOL_KILL_ROUNDS")) : 30;
	herd_pool *p =
	    pool_open(3, json_pack("{s:i, s:i}", "retries", 1000, "max_restarts", 1000), NULL);
	json_t *args = xs(2000, json_pack("{s:i}", "us", 100));

	srand((unsigned)time(NULL));
	kills_total = 0;
	for (int round = 0; round < rounds; round++) {
		enum herd_job_kind kind = round % 3 == 2 ? HERD_JOB_MAP : HERD_JOB_REDUCE;
		herd_job *job = item_job(p, kind, args, round % 3 == 0);

		run_with_kills(p, &job, 1, 8);
		assert_job_exact(job, 2000);
	}
	fprintf(stderr, "random kills: %d rounds, %u kills, %llu deaths, %llu spawns\n", rounds,
	    kills_total, (unsigned long long)herd_pool_deaths(p),
	    (unsigned long long)herd_pool_spawns(p));
	ck_assert_uint_gt(kills_total, 0);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* Jobs of every kind at once share the workers, the retry queue and the deaths. */
START_TEST(test_random_kills_concurrent)
{
	int rounds = getenv("HERD_POOL_KILL_ROUNDS") ? atoi(getenv("HERD_POOL_KILL_ROUNDS")) : 30;
	herd_pool *p =
	    pool_open(3, json_pack("{s:i, s:i}", "retries", 1000, "max_restarts", 1000), NULL);
	json_t *args = xs(1000, json_pack("{s:i}", "us", 100));

	srand((unsigned)time(NULL) + 1);
	kills_total = 0;
	for (int round = 0; round < rounds / 3 + 1; round++) {
		herd_job *jobs[4] = {
			item_job(p, HERD_JOB_REDUCE, args, true),
			item_job(p, HERD_JOB_REDUCE, args, true),
			item_job(p, HERD_JOB_REDUCE, args, false),
			item_job(p, HERD_JOB_MAP_UNORDERED, args, false),
		};

		run_with_kills(p, jobs, 4, 10);
		for (int i = 0; i < 4; i++)
			assert_job_exact(jobs[i], 1000);
	}
	fprintf(stderr, "random kills, 4 jobs at once: %d rounds, %u kills\n", rounds / 3 + 1,
	    kills_total);
	ck_assert_uint_gt(kills_total, 0);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* ---- batches (chunksize) ---- */

/* MAP of "double" over args (n tasks, x = index): every result right, and no worker died. */
static void
assert_map_doubles(herd_pool *p, json_t *args, int n)
{
	json_t *res = NULL;

	ck_assert_int_eq(herd_pool_map(p, "double", args, 0, &res), 0);
	ck_assert_int_eq(json_array_size(res), n);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(json_integer_value(json_array_get(res, i)), 2 * i);
	ck_assert_int_eq(herd_pool_deaths(p), 0);
	json_decref(res);
}

/* A handler failure inside a batch fails its task alone; its siblings' results stand. */
START_TEST(test_batch_handler_error)
{
	handler_error(10);
}
END_TEST

/* A poison task in a big batch is found out alone; its 59 siblings are right. */
START_TEST(test_batch_poison)
{
	poison_task(30);
}
END_TEST

/* Counts FIND's reported tasks by index, without checking their values. */
static void
count_task(herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *ud)
{
	struct seen_tasks *s = ud;

	s->n++;
	if (index < sizeof(s->hit))
		s->hit[index]++;
}

static bool
is_100(json_t *result, void *ud)
{
	return json_integer_value(result) == 100;
}

/* A find-first whose match is in the middle of a batch stops there; the pool goes on. */
START_TEST(test_batch_find_stops_midway)
{
	herd_pool *p = pool_open(1, json_pack("{s:i}", "chunksize", 100), NULL);
	json_t *args = xs(1000, json_pack("{s:i}", "us", 1000)), *found = NULL;
	struct seen_tasks s = { 0 };
	herd_job *job;

	ck_assert_int_eq(herd_job_new(p, HERD_JOB_FIND, "double", &job), 0);
	ck_assert_int_eq(herd_job_set_args(job, args), 0);
	ck_assert_int_eq(herd_job_set_predicate(job, is_100, NULL), 0);
	ck_assert_int_eq(herd_job_on_task(job, count_task, &s), 0);
	ck_assert_int_eq(herd_job_wait(job, HERD_TIMEOUT_INFINITE, &found), 0);
	herd_job_unref(job);
	ck_assert_int_eq(json_integer_value(json_object_get(found, "index")), 50);
	/* In order within the batch, up to the match and no further. */
	ck_assert_int_eq(s.n, 51);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(s.hit[i], i <= 50);
	json_decref(found);
	json_decref(args);
	/* The worker dropped the rest of its batches: the next map gets it at once, right. */
	args = xs(300, NULL);
	assert_map_doubles(p, args, 300);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* 40 tasks of us microseconds each on a pool of workers with opts (stolen): all right, no death. */
static void
assert_slow_map_lives(int workers, json_t *opts, int us)
{
	herd_pool *p = pool_open(workers, opts, NULL);
	json_t *args = xs(40, json_pack("{s:i}", "us", us));

	assert_map_doubles(p, args, 40);
	json_decref(args);
	herd_pool_unref(p);
}

/* A batch's timeout is task_timeout_ms times its size: ten 60 ms tasks under 300 ms each pass. */
START_TEST(test_batch_timeout_scaled)
{
	assert_slow_map_lives(2,
	    json_pack("{s:i, s:i, s:i}", "task_timeout_ms", 300, "chunksize", 10, "retries", 0),
	    60000);
}
END_TEST

/*
 * A batch longer than the heartbeat timeout (20 tasks of 40 ms against 600
 * ms) is not a hung worker: the worker's loop gets its turn between items.
 */
START_TEST(test_batch_keeps_heartbeats)
{
	assert_slow_map_lives(1,
	    json_pack("{s:i, s:{s:i, s:i}}", "chunksize", 20, "settings", "heartbeat_interval_ms",
	        100, "heartbeat_timeout_ms", 600),
	    40000);
}
END_TEST

/* 0 (automatic), 1, more than the tasks, the limit itself, and beyond it. */
START_TEST(test_chunksize_edges)
{
	herd_pool *p = pool_open(2, NULL, NULL), *q = NULL;
	json_t *args = xs(300, NULL), *res = NULL, *opts;
	unsigned sizes[] = { 0, 1, 7, 5000, HERD_POOL_MAX_CHUNKSIZE };
	herd_job *job;

	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		ck_assert_int_eq(herd_job_new(p, HERD_JOB_MAP, "double", &job), 0);
		ck_assert_int_eq(herd_job_set_args(job, args), 0);
		ck_assert_int_eq(herd_job_set_chunksize(job, sizes[k]), 0);
		ck_assert_int_eq(herd_job_wait(job, HERD_TIMEOUT_INFINITE, &res), 0);
		ck_assert_int_eq(herd_job_set_chunksize(job, 1), -EALREADY);
		herd_job_unref(job);
		ck_assert_int_eq(json_array_size(res), 300);
		for (int i = 0; i < 300; i++)
			ck_assert_int_eq(json_integer_value(json_array_get(res, i)), 2 * i);
		json_decref(res);
	}
	ck_assert_int_eq(herd_job_new(p, HERD_JOB_MAP, "double", &job), 0);
	ck_assert_int_eq(herd_job_set_chunksize(job, HERD_POOL_MAX_CHUNKSIZE + 1), -E2BIG);
	ck_assert_int_eq(herd_job_set_chunksize(NULL, 1), -EINVAL);
	herd_job_unref(job);
	opts = json_pack("{s:s, s:i}", "socket", ht_herdd->socket, "chunksize",
	    (int)HERD_POOL_MAX_CHUNKSIZE + 1);
	ck_assert_int_eq(herd_pool_new(NULL, opts, &q, NULL), -E2BIG);
	ck_assert_ptr_null(q);
	json_object_set_new(opts, "chunksize", json_integer(-1));
	ck_assert_int_eq(herd_pool_new(NULL, opts, &q, NULL), -EINVAL);
	json_decref(opts);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* Arguments that cannot travel fail alone, whether they open a batch or come in its middle. */
START_TEST(test_batch_bad_args)
{
	herd_pool *p = pool_open(1, json_pack("{s:i}", "chunksize", 8), NULL);
	json_t *args = xs(40, NULL);
	struct seen_tasks s = { .last_index = -1, .in_order = true };

	json_array_set_new(args, 0, json_integer(5));
	json_array_set_new(args, 13, json_string("no"));
	ck_assert_int_eq(run_seen(p, HERD_JOB_MAP, args, HERD_JOB_SKIP_FAILED, &s), 0);
	ck_assert_int_eq(s.n, 40);
	ck_assert(s.in_order);
	ck_assert_int_eq(s.errors, 2);
	ck_assert_str_eq(s.error_name, "invalid_params");
	json_decref(s.error_data);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* A new MAP job of "echo" over args (borrowed), each argument bare. */
static herd_job *
bare_echo_job(herd_pool *p, json_t *args)
{
	herd_job *job;

	ck_assert_int_eq(herd_job_new(p, HERD_JOB_MAP, "echo", &job), 0);
	ck_assert_int_eq(herd_job_set_args(job, args), 0);
	ck_assert_int_eq(herd_job_set_flags(job, HERD_JOB_BARE_ARGS), 0);
	return job;
}

/* A bare job over args (chunksize chunk), blocking: the results are the arguments, in order. */
static void
assert_bare_echo(herd_pool *p, json_t *args, unsigned chunk)
{
	herd_job *job = bare_echo_job(p, args);
	json_t *res = NULL;
	int r;

	ck_assert_int_eq(herd_job_set_chunksize(job, chunk), 0);
	r = herd_job_wait(job, HERD_TIMEOUT_INFINITE, &res);
	ck_assert_msg(r == 0, "bare echo: %d %s", r,
	    herd_job_error(job) ? herd_error_message(herd_job_error(job)) : "-");
	ck_assert_msg(json_equal(res, args), "bare echo: %s", ht_dump(res));
	json_decref(res);
	herd_job_unref(job);
}

/*
 * A bare job's arguments travel as they are (integers, a string, null, an
 * array, true), in batches and one at a time; and under random SIGKILLs
 * every result still comes once, in order.
 */
START_TEST(test_batch_bare_args)
{
	herd_pool *p = pool_open(2,
	    json_pack("{s:i, s:i, s:i}", "chunksize", 64, "retries", 1000, "max_restarts", 1000),
	    NULL);
	json_t *args = json_array(), *res = NULL;
	int n = 100000, round;

	for (int i = 0; i < n; i++)
		json_array_append_new(args, json_integer(i));
	json_array_set_new(args, 5, json_string("five"));
	json_array_set_new(args, 6, json_null());
	json_array_set_new(args, 7, json_pack("[i]", 7));
	json_array_set_new(args, 8, json_true());
	assert_bare_echo(p, args, 0);
	res = json_array();
	for (int i = 0; i < 20; i++)
		json_array_append(res, json_array_get(args, i));
	assert_bare_echo(p, res, 1);
	json_decref(res);
	kills_total = 0;
	for (round = 0; round < 20 && kills_total == 0; round++) {
		herd_job *job = bare_echo_job(p, args);

		run_with_kills(p, &job, 1, 2);
		ck_assert_int_eq(herd_job_wait(job, 0, &res), 0);
		ck_assert(json_equal(res, args));
		json_decref(res);
		herd_job_unref(job);
	}
	fprintf(stderr, "bare map under kills: %d rounds, %u kills\n", round, kills_total);
	ck_assert_uint_gt(kills_total, 0);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

/* Every kind of job in batches of 16, random SIGKILLs: the sequential answer, every time. */
START_TEST(test_batch_random_kills)
{
	int rounds = getenv("HERD_POOL_KILL_ROUNDS") ? atoi(getenv("HERD_POOL_KILL_ROUNDS")) : 30;
	herd_pool *p = pool_open(3,
	    json_pack("{s:i, s:i, s:i}", "retries", 1000, "max_restarts", 1000, "chunksize", 16),
	    NULL);
	json_t *args = xs(1500, json_pack("{s:i}", "us", 100));

	srand((unsigned)time(NULL) + 2);
	kills_total = 0;
	for (int round = 0; round < rounds; round++) {
		enum herd_job_kind kinds[] = { HERD_JOB_REDUCE, HERD_JOB_REDUCE, HERD_JOB_MAP,
			HERD_JOB_MAP_UNORDERED, HERD_JOB_REDUCE_ORDERED };
		herd_job *job = item_job(p, kinds[round % 5], args, round % 5 == 0);

		run_with_kills(p, &job, 1, 6);
		assert_job_exact(job, 1500);
	}
	fprintf(stderr, "random kills in batches: %d rounds, %u kills, %llu deaths\n", rounds,
	    kills_total, (unsigned long long)herd_pool_deaths(p));
	ck_assert_uint_gt(kills_total, 0);
	json_decref(args);
	herd_pool_unref(p);
}
END_TEST

HT_APP_MAIN(&pool_worker, "pool",
    HT_HERDD_CASE("pool", 120, NULL, test_map_in_order, test_map_callbacks,
        test_iterator_and_ordered_reduce, test_reduce_worker_side, test_find_first,
        test_handler_error, test_poison_task, test_poison_in_reduce, test_task_timeout,
        test_hung_worker, test_crash_loop, test_managed_worker, test_submit_on_libev,
        test_close_leaves_no_worker, test_progress_and_retry_failed, test_random_kills_reduce,
        test_random_kills_concurrent, test_batch_handler_error, test_batch_find_stops_midway,
        test_batch_poison, test_batch_timeout_scaled, test_batch_keeps_heartbeats,
        test_chunksize_edges, test_batch_bad_args, test_batch_random_kills, test_batch_bare_args))
