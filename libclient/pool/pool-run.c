/* SPDX-License-Identifier: MIT */
/*
 * Whole-program conveniences on top of pools: a map-reduce in one blocking
 * call that says what happened on stderr as a command-line program would, and
 * counts objects ({"word": 12, ...}), the usual value of a map-reduce (word
 * counts, histograms): adding to one, a combine that adds them up, the top K.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool-internal.h"

/* Prints what a map-reduce's pool went through: deaths survived, the error that ended it. */
static void
run_report(herd_pool *p, int r, herd_error *err)
{
	const char *prog = program_invocation_short_name;
	uint64_t deaths = p ? herd_pool_deaths(p) : 0;

	if (deaths)
		fprintf(stderr, "%s: %llu worker(s) died; the tasks they held ran again\n", prog,
		    (unsigned long long)deaths);
	if (r < 0)
		fprintf(stderr, "%s: %s\n", prog, err ? herd_error_message(err) : strerror(-r));
}

/* Runs a REDUCE job of function over args on p to its end; the job's error into *ret_err. */
static int
run_reduce(herd_pool *p, const char *function, json_t *args, const char *combiner,
    herd_combine_fn combine, bool quiet, json_t **ret_value, herd_error **ret_err)
{
	herd_job *job = NULL;
	int r = herd_job_new(p, HERD_JOB_REDUCE, function, &job);

	if (r == 0)
		r = herd_job_set_args(job, args);
	if (r == 0)
		r = herd_job_set_combine(job, combiner, combine, NULL);
	if (r == 0 && !quiet)
		r = herd_job_on_progress(
		    job, herd_progress_bar, (void *)program_invocation_short_name);
	if (r == 0)
		r = herd_job_wait(job, HERD_TIMEOUT_INFINITE, ret_value);
	if (r < 0)
		*ret_err = herd_error_ref(
		    job && herd_job_error(job) ? herd_job_error(job) : herd_pool_last_error(p));
	herd_job_unref(job);
	return r;
}

HERD_EXPORT int
herd_map_reduce(json_t *opts, const char *function, json_t *args, const char *combiner,
    herd_combine_fn combine, json_t **ret_value, herd_error **ret_error)
{
	json_t *pool_opts = opts ? json_copy(opts) : json_object();
	json_t *spawn = json_object_get(pool_opts, "spawn");
	json_t *quiet = json_object_get(pool_opts, "quiet");
	json_t *local = json_object_get(pool_opts, "local");
	herd_error *err = NULL;
	json_t *value = NULL;
	herd_pool *p = NULL;
	int r = 0;

	if (ret_value)
		*ret_value = NULL;
	if (ret_error)
		*ret_error = NULL;
	if (!pool_opts)
		return -ENOMEM;
	json_incref(spawn);
	json_object_del(pool_opts, "spawn");
	json_object_del(pool_opts, "quiet");
	json_object_del(pool_opts, "local");
	if ((opts && !json_is_object(opts)) || (spawn && !json_is_object(spawn)) ||
	    (quiet && !json_is_boolean(quiet)) || (local && !json_is_boolean(local)) || !args ||
	    !combine || (json_is_true(local) && !herd__app_type()))
		r = -EINVAL;
	if (r == 0 && json_is_true(local))
		r = herd__local_reduce(
		    herd__app_type(), function, args, combiner, combine, &value, &err);
	else if (r == 0 && (r = herd_pool_new(spawn, pool_opts, &p, &err)) == 0)
		r = run_reduce(
		    p, function, args, combiner, combine, json_is_true(quiet), &value, &err);
	if (!json_is_true(quiet))
		run_report(p, r, err);
	herd_pool_unref(p);
	json_decref(spawn);
	json_decref(pool_opts);
	if (ret_value)
		*ret_value = value;
	else
		json_decref(value);
	if (ret_error)
		*ret_error = err;
	else
		herd_error_unref(err);
	return r;
}

/* ---- counts objects ---- */

HERD_EXPORT int
herd_counts_add(json_t *counts, const char *key, size_t len, json_int_t n)
{
	json_t *v;

	if (!json_is_object(counts) || !key)
		return -EINVAL;
	v = json_object_getn(counts, key, len);
	if (v)
		return json_integer_set(v, json_integer_value(v) + n) < 0 ? -EINVAL : 0;
	return json_object_setn_new(counts, key, len, json_integer(n)) < 0 ? -ENOMEM : 0;
}

HERD_EXPORT json_t *
herd_combine_counts(json_t *acc, json_t *value, void *userdata)
{
	const char *key;
	size_t len;
	json_t *n;

	(void)userdata;
	if (!json_is_object(acc) || !json_is_object(value)) {
		json_decref(acc);
		return NULL;
	}
	json_object_keylen_foreach(value, key, len, n)
	{
		if (!json_is_integer(n) ||
		    herd_counts_add(acc, key, len, json_integer_value(n)) < 0) {
			json_decref(acc);
			return NULL;
		}
	}
	return acc;
}

HERD_EXPORT json_int_t
herd_counts_total(json_t *counts)
{
	json_int_t total = 0;
	const char *key;
	json_t *n;

	json_object_foreach(counts, key, n)
		total += json_integer_value(n);
	return total;
}

struct top_entry {
	const char *key;
	size_t len;
	json_int_t n;
};

/* True when a ranks before b: a larger count, or the same and a smaller key (bytes). */
static bool
top_before(const struct top_entry *a, const struct top_entry *b)
{
	int c;

	if (a->n != b->n)
		return a->n > b->n;
	c = memcmp(a->key, b->key, a->len < b->len ? a->len : b->len);
	return c < 0 || (c == 0 && a->len < b->len);
}

/* The array of [key, n] pairs of top[0..n). */
static json_t *
top_array(const struct top_entry *top, size_t n)
{
	json_t *res = json_array();

	for (size_t i = 0; res && i < n; i++) {
		if (json_array_append_new(
		        res, json_pack("[s%I]", top[i].key, top[i].len, top[i].n)) < 0) {
			json_decref(res);
			return NULL;
		}
	}
	return res;
}

HERD_EXPORT json_t *
herd_counts_top(json_t *counts, size_t k)
{
	struct top_entry *top, e;
	size_t n = 0, i;
	json_t *v, *res;

	if (!json_is_object(counts))
		return NULL;
	if (k > json_object_size(counts))
		k = json_object_size(counts);
	top = calloc(k ? k : 1, sizeof(*top));
	if (!top)
		return NULL;
	/* One pass keeping the best k in order: most members lose to the k-th at once. */
	json_object_keylen_foreach(counts, e.key, e.len, v)
	{
		e.n = json_integer_value(v);
		if (k == 0 || (n == k && !top_before(&e, &top[k - 1])))
			continue;
		for (i = n < k ? n++ : k - 1; i > 0 && top_before(&e, &top[i - 1]); i--)
			top[i] = top[i - 1];
		top[i] = e;
	}
	res = top_array(top, n);
	free(top);
	return res;
}
