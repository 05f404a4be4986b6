/* SPDX-License-Identifier: MIT */
/*
 * The whole-program layer of pools (libclient/pool/pool-run.c) and folding in
 * place (herd_request_acc, libclient/worker/worker-fold.c), against a real
 * herdd with this executable as the workers: counts objects, a function that
 * adds to the accumulator itself under herd.fold and in a plain call, mixed
 * with one that replies a value, exactly once through a worker crash,
 * herd_map_reduce()'s messages and errors, and its local mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>
#include <herd/herd.h>

#include "ht-check.h"
#include "worker-args.h"

/* ---- the worker side (this executable, spawned by herdd) ---- */

/*
 * {"k": K, "times": T, "reply": B, "crash": PATH} adds T to count K: in place
 * (herd_request_acc), or with "reply" true as a one-member counts value;
 * aborts first if it removes the file PATH (once, whoever gets there first).
 */
static void
fn_tally(herd_request *req, json_t *arg)
{
	const char *k = json_string_value(json_object_get(arg, "k"));
	const char *crash = json_string_value(json_object_get(arg, "crash"));
	json_int_t times = json_integer_value(json_object_get(arg, "times"));
	json_t *acc;

	if (crash && unlink(crash) == 0)
		wa_die_by(SIGABRT);
	if (!k) {
		herd_request_fail(req, "no k");
		return;
	}
	if (json_is_true(json_object_get(arg, "reply"))) {
		herd_request_reply(req, json_pack("{s:I}", k, times));
		return;
	}
	acc = herd_request_acc(req, json_object());
	/* The same accumulator until answered. */
	if (!acc || herd_request_acc(req, json_object()) != acc)
		herd_request_fail(req, "no accumulator, or not the same twice");
	else if (herd_counts_add(acc, k, strlen(k), times) < 0)
		herd_request_fail(req, "cannot add");
	else
		herd_request_reply_acc(req);
}

/* Off the loop: nothing to compute; the answer comes later, from done. */
static void
later_work(void *arg)
{
	(void)arg;
}

static void
later_done(herd_request *req, void *arg)
{
	fn_tally(req, arg);
	json_decref(arg);
}

/* fn_tally answered later, from the loop after an offload (local mode must wait for it). */
static void
fn_tally_later(herd_request *req, json_t *arg)
{
	if (herd_request_offload(req, later_work, later_done, json_incref(arg)) < 0)
		herd_request_fail(req, "cannot offload");
}

static const struct herd_worker_type run_worker = {
	.name = "pool-run-test",
	.functions = WA_FUNCTIONS({ "tally", HERD_KIND_CALL, fn_tally },
	    { "tally_later", HERD_KIND_CALL, fn_tally_later }),
	.combiners = WA_COMBINERS({ "add", herd_combine_counts }),
};

/* ---- master side ---- */

/*
 * herd_map_reduce()'s opts on the test's herdd, with extra's members (stolen,
 * may be NULL); kept until the teardown, as ht_args().
 */
static json_t *
run_opts(int workers, json_t *extra)
{
	json_t *o = ht_args(
	    "{s:s, s:i, s:s}", "socket", ht_herdd->socket, "workers", workers, "name", "trun");

	if (extra)
		json_object_update(o, extra);
	json_decref(extra);
	return o;
}

/* v equals want, or the test fails showing both. */
static void
assert_json_eq(json_t *v, json_t *want)
{
	char *a = json_dumps(v, JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_COMPACT);
	char *b = json_dumps(want, JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_COMPACT);

	ck_assert_msg(json_equal(v, want), "got %s\nwant %s", a ? a : "NULL", b ? b : "NULL");
	free(a);
	free(b);
}

/* Runs herd_map_reduce with stderr into a file; returns r, *ret_err what it wrote (malloc'd). */
static int
map_reduce_captured(json_t *opts, json_t *args, const char *combiner, json_t **ret_value,
    herd_error **ret_error, char **ret_err)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO), r;
	long len;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_ge(saved, 0);
	fflush(stderr);
	ck_assert_int_ge(dup2(fileno(f), STDERR_FILENO), 0);
	r = herd_map_reduce(
	    opts, "tally", args, combiner, herd_combine_counts, ret_value, ret_error);
	fflush(stderr);
	ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
	close(saved);
	len = ftell(f);
	*ret_err = calloc(1, (size_t)len + 1);
	rewind(f);
	ck_assert_int_eq(fread(*ret_err, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	return r;
}

START_TEST(test_counts)
{
	json_t *c = json_object(), *d = json_pack("{s:i, s:i}", "b", 5, "z", 1), *top;
	json_t *not_counts = json_array(), *want;

	ck_assert_int_eq(herd_counts_add(c, "a", 1, 3), 0);
	ck_assert_int_eq(herd_counts_add(c, "b", 1, 2), 0);
	ck_assert_int_eq(herd_counts_add(c, "abc", 1, 1), 0); /* len bytes of key: "a" */
	ck_assert_int_eq(herd_counts_add(c, "n\0ul", 4, 7), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(c, "a")), 4);
	ck_assert_int_eq(json_integer_value(json_object_getn(c, "n\0ul", 4)), 7);
	ck_assert_int_eq(herd_counts_add(d, NULL, 0, 1), -EINVAL);
	ck_assert_int_eq(herd_counts_add(not_counts, "a", 1, 1), -EINVAL);
	json_decref(not_counts);

	c = herd_combine_counts(c, d, NULL);
	want = json_pack("{s:i, s:i, s%:i, s:i}", "a", 4, "b", 7, "n\0ul", (size_t)4, 7, "z", 1);
	assert_json_eq(c, want);
	json_decref(want);
	/* Largest first, equal counts by key bytewise; k larger than the object is fine. */
	top = herd_counts_top(c, 10);
	want = json_pack(
	    "[[s,i], [s%,i], [s,i], [s,i]]", "b", 7, "n\0ul", (size_t)4, 7, "a", 4, "z", 1);
	assert_json_eq(top, want);
	json_decref(top);
	json_array_remove(want, 3);
	json_array_remove(want, 2);
	top = herd_counts_top(c, 2);
	assert_json_eq(top, want);
	json_decref(top);
	json_decref(want);
	top = herd_counts_top(c, 0);
	ck_assert_int_eq(json_array_size(top), 0);
	json_decref(top);
	ck_assert_ptr_null(herd_counts_top(NULL, 3));
	ck_assert_int_eq(herd_counts_total(c), 4 + 7 + 7 + 1);
	ck_assert_int_eq(herd_counts_total(NULL), 0);
	/* A value that is not a counts object fails the combine (acc consumed). */
	json_object_set_new(d, "bad", json_string("x"));
	ck_assert_ptr_null(herd_combine_counts(c, d, NULL));
	ck_assert_ptr_null(herd_combine_counts(json_object(), json_null(), NULL));
	json_decref(d);
}
END_TEST

/* A plain call of an in-place function replies what it added to its own, empty accumulator. */
START_TEST(test_acc_plain_call)
{
	json_t *opts = json_pack("{s:s, s:i}", "socket", ht_herdd->socket, "workers", 1);
	json_t *arg = json_pack("{s:s, s:i}", "k", "w", "times", 3), *v = NULL;
	herd_pool *p = NULL;

	ck_assert_int_eq(herd_pool_new(NULL, opts, &p, NULL), 0);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(herd_pool_call(p, "tally", arg, &v), 0);
		ck_assert_int_eq(json_object_size(v), 1);
		ck_assert_int_eq(json_integer_value(json_object_get(v, "w")), 3);
		json_decref(v);
	}
	json_decref(arg);
	json_decref(opts);
	herd_pool_unref(p);
}
END_TEST

/*
 * n tasks over 7 keys, every third replying its value instead of adding in
 * place, one aborting its worker once if crash is set: task i adds i + 1 to
 * key i % 7. Returns the args; *want the exact counts.
 */
static json_t *
tally_args(int n, const char *crash, json_t **want)
{
	json_t *args = json_array();
	char k[8];

	*want = json_object();
	for (int i = 0; i < n; i++) {
		snprintf(k, sizeof(k), "k%d", i % 7);
		json_array_append_new(args,
		    json_pack("{s:s, s:i, s:b, s:s*}", "k", k, "times", i + 1, "reply", i % 3 == 0,
		        "crash", i == n / 2 ? crash : NULL));
		herd_counts_add(*want, k, strlen(k), i + 1);
	}
	return args;
}

START_TEST(test_map_reduce_in_place)
{
	json_t *want, *args = tally_args(600, NULL, &want), *v = NULL;
	char *err = NULL;

	/* Folding on the workers, in place and by the combine into the same accumulator. */
	ck_assert_int_eq(map_reduce_captured(run_opts(2, NULL), args, "add", &v, NULL, &err), 0);
	assert_json_eq(v, want);
	ck_assert_str_eq(err, ""); /* not a terminal: no progress bar, and nobody died */
	json_decref(v);
	free(err);
	/* Without a worker combine the master folds every result: the same answer. */
	ck_assert_int_eq(map_reduce_captured(
	                     run_opts(2, json_pack("{s:{}}", "spawn")), args, NULL, &v, NULL, &err),
	    0);
	assert_json_eq(v, want);
	json_decref(v);
	free(err);
	json_decref(args);
	json_decref(want);
	ht_assert_no_workers(ht_herdd);
}
END_TEST

/* A worker that aborts holding in-place folds: they are all redone, none twice, and said so. */
START_TEST(test_map_reduce_crash)
{
	char marker[64], *err = NULL;
	json_t *want, *args, *v = NULL;
	int fd;

	snprintf(marker, sizeof(marker), "%s/trun-crash-XXXXXX", P_tmpdir);
	fd = mkostemp(marker, O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	close(fd);
	args = tally_args(400, marker, &want);
	ck_assert_int_eq(map_reduce_captured(run_opts(3, NULL), args, "add", &v, NULL, &err), 0);
	ck_assert_int_eq(access(marker, F_OK), -1);
	assert_json_eq(v, want);
	ck_assert_msg(
	    strstr(err, ": 1 worker(s) died; the tasks they held ran again\n"), "%s", err);
	json_decref(v);
	json_decref(args);
	json_decref(want);
	free(err);
}
END_TEST

/* Local mode: the same functions and combine in this process, the same answer, no worker. */
START_TEST(test_map_reduce_local)
{
	json_t *want, *args = tally_args(300, NULL, &want), *local = json_pack("{s:b}", "local", 1);
	json_t *bad =
	    json_pack("[{s:s, s:i}, {}, {s:s, s:i}]", "k", "a", "times", 1, "k", "b", "times", 1);
	json_t *v = NULL;
	herd_error *e = NULL;
	char *err = NULL;

	/* Folding in place and by the type's combine, then by the master's combine alone. */
	ck_assert_int_eq(map_reduce_captured(local, args, "add", &v, &e, &err), 0);
	assert_json_eq(v, want);
	ck_assert_ptr_null(e);
	ck_assert_str_eq(err, "");
	json_decref(v);
	free(err);
	ck_assert_int_eq(map_reduce_captured(local, args, NULL, &v, NULL, &err), 0);
	assert_json_eq(v, want);
	json_decref(v);
	free(err);
	/* A task's error ends the run: returned and printed as a pool's. */
	ck_assert_int_eq(map_reduce_captured(local, bad, "add", &v, &e, &err), -EREMOTEIO);
	ck_assert_ptr_null(v);
	ck_assert_str_eq(herd_error_name(e), "function_failed");
	ck_assert_str_eq(herd_error_message(e), "no k");
	ck_assert_msg(strstr(err, ": no k\n") && !strchr(err, '\r'), "%s", err);
	e = herd_error_unref(e);
	free(err);
	/* A combine the type does not declare. */
	ck_assert_int_eq(map_reduce_captured(local, args, "nope", &v, &e, &err), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(e), "method_not_found");
	e = herd_error_unref(e);
	free(err);
	/* Functions that answer later, from the loop. */
	ck_assert_int_eq(herd_map_reduce(ht_args("{s:b, s:b}", "local", 1, "quiet", 1),
	                     "tally_later", args, "add", herd_combine_counts, &v, NULL),
	    0);
	assert_json_eq(v, want);
	json_decref(v);
	/* No tasks: JSON null, as a pool's. */
	ck_assert_int_eq(
	    herd_map_reduce(local, "tally", ht_args("[]"), "add", herd_combine_counts, &v, NULL),
	    0);
	ck_assert(json_is_null(v));
	json_decref(v);
	ck_assert_int_eq(herd_map_reduce(ht_args("{s:i}", "local", 1), "tally", args, "add",
	                     herd_combine_counts, &v, NULL),
	    -EINVAL);
	json_decref(bad);
	json_decref(local);
	json_decref(args);
	json_decref(want);
	ht_assert_no_workers(ht_herdd);
}
END_TEST

START_TEST(test_map_reduce_errors)
{
	json_t *args = json_pack("[{s:s, s:i}, {}]", "k", "a", "times", 1), *v = NULL;
	herd_error *e = NULL;
	char *err = NULL;

	/* The task's error is returned, and printed after the program's name. */
	ck_assert_int_eq(
	    map_reduce_captured(run_opts(1, NULL), args, "add", &v, &e, &err), -EREMOTEIO);
	ck_assert_ptr_null(v);
	ck_assert_str_eq(herd_error_message(e), "no k");
	ck_assert_msg(strstr(err, ": no k\n") && !strchr(err, '\r'), "%s", err);
	e = herd_error_unref(e);
	free(err);
	/* quiet: the same outcome, nothing written. */
	ck_assert_int_eq(map_reduce_captured(run_opts(1, json_pack("{s:b}", "quiet", 1)), args,
	                     "add", &v, &e, &err),
	    -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(e), "function_failed");
	ck_assert_str_eq(err, "");
	e = herd_error_unref(e);
	free(err);
	/* Bad options: -EINVAL before any worker starts. */
	ck_assert_int_eq(herd_map_reduce(run_opts(1, json_pack("{s:i}", "quiet", 1)), "tally", args,
	                     "add", herd_combine_counts, &v, NULL),
	    -EINVAL);
	ck_assert_int_eq(herd_map_reduce(run_opts(1, json_pack("{s:[]}", "spawn")), "tally", args,
	                     "add", herd_combine_counts, &v, NULL),
	    -EINVAL);
	ck_assert_int_eq(
	    herd_map_reduce(run_opts(1, json_pack("{s:b, s:i}", "quiet", 1, "nope", 1)), "tally",
	        args, "add", herd_combine_counts, &v, &e),
	    -EINVAL);
	ck_assert_int_eq(herd_map_reduce(NULL, "tally", args, "add", NULL, &v, NULL), -EINVAL);
	ck_assert_int_eq(
	    herd_map_reduce(ht_args("[]"), "tally", args, "add", herd_combine_counts, &v, NULL),
	    -EINVAL);
	ck_assert_ptr_null(v);
	herd_error_unref(e);
	json_decref(args);
	ht_assert_no_workers(ht_herdd);
}
END_TEST

HT_APP_MAIN(&run_worker, "pool-run",
    HT_HERDD_CASE("pool-run", 120, NULL, test_counts, test_acc_plain_call, test_map_reduce_in_place,
        test_map_reduce_crash, test_map_reduce_local, test_map_reduce_errors))
