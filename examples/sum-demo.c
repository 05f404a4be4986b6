/* SPDX-License-Identifier: MIT */
/*
 * sum-demo: rpc_parallel's classic, in C. One executable is both the master
 * and its workers (herd_start_app): the master asks herdd for N copies of
 * itself, splits 0..M-1 into N ranges, sums them in parallel with one call per
 * worker, checks the total against M(M-1)/2, prints who did what, and exits.
 * Its workers go with it (shutdown_on master_disconnect); a second connection
 * to herdd watches them go and lists their records to prove it.
 *
 *   sum-demo [--workers N] [--max M] [--socket PATH]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <herd/herd-ev.h>
#include <herd/master.h>

#define MAX_WORKERS 64

static int64_t
now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- the worker side: one function ---- */

/* {from, to} -> {"sum": from + ... + to-1, "pid", "us"}: the work, timed where it runs. */
static void
sum_range(herd_request *req, json_t *arg)
{
	json_int_t from, to, i, sum = 0;
	int64_t start = now_us();

	if (json_unpack(arg, "{s:I, s:I}", "from", &from, "to", &to) < 0 || from > to) {
		herd_request_fail(req, "expected {\"from\": A, \"to\": B} with A <= B");
		return;
	}
	for (i = from; i < to; i++)
		sum += i;
	herd_request_reply(req,
	    json_pack("{s:I, s:i, s:I}", "sum", sum, "pid", (int)getpid(), "us",
	        (json_int_t)(now_us() - start)));
}

static const struct herd_function functions[] = {
	{ "sum_range", HERD_KIND_CALL, sum_range },
	{ NULL, 0, NULL },
};

static const struct herd_worker_type sum_worker = {
	.name = "sum-demo",
	.functions = functions,
};

/* ---- the master side ---- */

struct part {
	herd_worker *w;
	herd_conn *conn;
	json_int_t from, to, sum;
	int64_t worker_us, round_trip_us;
	bool done;
};

struct demo {
	struct ev_loop *loop;
	struct part parts[MAX_WORKERS];
	int n, pending, failed;
};

static void
spawned(herd_master *m, int r, herd_worker *w, herd_error *error, void *userdata)
{
	struct part *p = userdata;
	struct demo *d = (struct demo *)ev_userdata(EV_DEFAULT);

	if (r < 0) {
		fprintf(stderr, "sum-demo: spawn failed: %s: %s\n", herd_error_name(error),
		    herd_error_message(error));
		d->failed++;
	} else {
		p->w = herd_worker_ref(w);
	}
	if (--d->pending == 0)
		ev_break(d->loop, EVBREAK_ALL);
}

static void
summed(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	struct part *p = userdata;
	struct demo *d = (struct demo *)ev_userdata(EV_DEFAULT);

	p->round_trip_us += now_us();
	if (r < 0) {
		fprintf(stderr, "sum-demo: %s: %s\n", herd_error_name(error),
		    herd_error_message(error));
		d->failed++;
	} else {
		p->sum = json_integer_value(json_object_get(result, "sum"));
		p->worker_us = json_integer_value(json_object_get(result, "us"));
		p->done = true;
	}
	if (--d->pending == 0)
		ev_break(d->loop, EVBREAK_ALL);
}

/* rpc_parallel's on_failure: a worker died or failed outside a call. */
static void
on_failure(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *stderr_tail, json_t *worker, void *userdata)
{
	fprintf(stderr, "sum-demo: worker %s: %s%s%s\n", worker_id, event, message ? ": " : "",
	    message ? message : "");
}

/* Spawns n copies of this executable at once and waits for all of them. */
static int
spawn_all(struct demo *d, herd_master *m)
{
	int i;

	herd_master_attach_ev(m, d->loop);
	d->pending = d->n;
	for (i = 0; i < d->n; i++) {
		json_t *opts = herd_spawn_opts_new(herd_self_path(), NULL);
		char name[32];
		int r;

		snprintf(name, sizeof(name), "sum-demo-%d", i + 1);
		json_object_set_new(opts, "name", json_string(name));
		r = herd_master_spawn_async(m, opts, spawned, &d->parts[i]);
		json_decref(opts);
		if (r < 0) {
			fprintf(stderr, "sum-demo: spawn: %s\n", strerror(-r));
			d->failed++;
			d->pending--;
		}
	}
	if (d->pending > 0)
		ev_run(d->loop, 0);
	herd_master_detach_ev(m);
	return d->failed ? -EREMOTEIO : 0;
}

/* Connects to every worker and runs the n calls in parallel. */
static int
sum_all(struct demo *d, json_int_t max)
{
	herd_error *err = NULL;
	int i, r;

	d->pending = 0;
	for (i = 0; i < d->n; i++) {
		struct part *p = &d->parts[i];

		p->from = max * i / d->n;
		p->to = max * (i + 1) / d->n;
		r = herd_worker_connect(p->w, NULL, &p->conn, &err);
		if (r < 0) {
			fprintf(stderr, "sum-demo: connecting to %s: %s\n", herd_worker_id(p->w),
			    err ? herd_error_message(err) : strerror(-r));
			herd_error_unref(err);
			return r;
		}
		herd_conn_attach_ev(p->conn, d->loop);
	}
	for (i = 0; i < d->n; i++) {
		struct part *p = &d->parts[i];
		json_t *args = json_pack("{s:I, s:I}", "from", p->from, "to", p->to);

		p->round_trip_us = -now_us();
		r = herd_call_async(p->conn, "sum_range", args, summed, p, NULL);
		json_decref(args);
		if (r < 0) {
			fprintf(stderr, "sum-demo: call: %s\n", strerror(-r));
			return r;
		}
		d->pending++;
	}
	ev_run(d->loop, 0);
	return d->failed ? -EREMOTEIO : 0;
}

static void
print_split(const struct demo *d)
{
	int i;

	printf("%-4s %-7s %-27s %20s %10s %10s\n", "ID", "PID", "RANGE", "PARTIAL SUM", "WORK",
	    "CALL");
	for (i = 0; i < d->n; i++) {
		const struct part *p = &d->parts[i];
		char range[40];

		snprintf(
		    range, sizeof(range), "[%lld, %lld)", (long long)p->from, (long long)p->to);
		printf("%-4s %-7d %-27s %20lld %8.1fms %8.1fms\n", herd_worker_id(p->w),
		    herd_worker_pid(p->w), range, (long long)p->sum, (double)p->worker_us / 1000.0,
		    (double)p->round_trip_us / 1000.0);
	}
}

struct watch {
	struct demo *d;
	int stopped;
};

static void
on_event(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *stderr_tail, json_t *worker, void *userdata)
{
	struct watch *wt = userdata;
	int i;

	if (strcmp(event, "stopped") && strcmp(event, "exited") && strcmp(event, "crashed"))
		return;
	for (i = 0; i < wt->d->n; i++) {
		if (wt->d->parts[i].w && !strcmp(herd_worker_id(wt->d->parts[i].w), worker_id)) {
			if (++wt->stopped == wt->d->n)
				ev_break(wt->d->loop, EVBREAK_ALL);
		}
	}
}

static void
watch_timeout(EV_P_ ev_timer *t, int revents)
{
	ev_break(EV_A_ EVBREAK_ALL);
}

/*
 * Subscribes check to every worker of this uid, closes the master's
 * connection, and waits (at most 10 s) for the end events of d's workers.
 */
static int
watch_workers_end(struct demo *d, herd_master *m, herd_master *check)
{
	struct watch wt = { d, 0 };
	json_t *sub = json_pack("{s:b}", "all", 1), *res = NULL;
	ev_timer deadline;
	int i, r;

	herd_master_on_event(check, on_event, &wt);
	r = herd_master_request(check, "subscribe", sub, 0, &res);
	json_decref(sub);
	json_decref(res);
	if (r < 0)
		return r;
	for (i = 0; i < d->n; i++)
		d->parts[i].conn = herd_conn_unref(d->parts[i].conn);
	herd_master_close(m);

	herd_master_attach_ev(check, d->loop);
	ev_timer_init(&deadline, watch_timeout, 10.0, 0.);
	ev_timer_start(d->loop, &deadline);
	ev_run(d->loop, 0);
	ev_timer_stop(d->loop, &deadline);
	herd_master_detach_ev(check);
	herd_master_on_event(check, NULL, NULL);
	return 0;
}

/* The part whose worker has this id, or NULL. */
static const struct part *
part_of(const struct demo *d, const char *id)
{
	int i;

	for (i = 0; id && i < d->n; i++) {
		if (!strcmp(id, herd_worker_id(d->parts[i].w)))
			return &d->parts[i];
	}
	return NULL;
}

/* Prints each of d's workers that herdd's records show exited and whose pid is gone; counts them. */
static int
count_exited(const struct demo *d, herd_master *check)
{
	json_t *list = NULL, *rec;
	int r, gone = 0;
	size_t k;

	r = herd_master_list(check, true, &list);
	if (r < 0)
		return r;
	json_array_foreach(json_object_get(list, "workers"), k, rec) {
		const char *id = json_string_value(json_object_get(rec, "id"));
		const char *state = json_string_value(json_object_get(rec, "state"));
		const struct part *p = part_of(d, id);

		if (p && state && !strcmp(state, "exited") && kill(herd_worker_pid(p->w), 0) < 0 &&
		    errno == ESRCH) {
			printf("  %s pid %d: %s (%s)\n", id, herd_worker_pid(p->w), state,
			    json_string_value(json_object_get(rec, "reason")) ?: "?");
			gone++;
		}
	}
	json_decref(list);
	return gone;
}

/*
 * Closes the master's connection and proves its workers went with it: a
 * second connection subscribed to every worker of this uid waits for their
 * end events, then herdd's list of records shows each one exited.
 */
static int
verify_cleanup(struct demo *d, herd_master *m, const char *socket)
{
	herd_master *check = NULL;
	int r;

	r = herd_master_connect(socket, NULL, &check, NULL);
	if (r < 0)
		return r;
	r = watch_workers_end(d, m, check);
	if (r == 0)
		r = count_exited(d, check);
	herd_master_unref(check);
	if (r < 0)
		return r;
	return r == d->n ? 0 : -EBUSY;
}

static int
usage(void)
{
	fprintf(
	    stderr, "usage: sum-demo [--workers 1..%d] [--max M] [--socket PATH]\n", MAX_WORKERS);
	return 2;
}

/* Parses the command line into d->n, *max and *socket. Returns 0, or 2 after the usage line. */
static int
parse_args(struct demo *d, json_int_t *max, const char **socket, int argc, char **argv)
{
	static const struct option opts[] = { { "workers", required_argument, NULL, 'w' },
		{ "max", required_argument, NULL, 'm' }, { "socket", required_argument, NULL, 's' },
		{ 0 } };
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'w')
			d->n = atoi(optarg);
		else if (o == 'm')
			*max = strtoll(optarg, NULL, 10);
		else if (o == 's')
			*socket = optarg;
		else
			return usage();
	}
	/* Beyond 4e9 the total no longer fits in 64 bits. */
	if (d->n < 1 || d->n > MAX_WORKERS || *max < 1 || *max > 4000000000LL || optind != argc)
		return usage();
	return 0;
}

/* Spawns the workers, sums 0..max-1 over them and checks the total. Returns 0 if right. */
static int
run_sum(struct demo *d, herd_master *m, json_int_t max)
{
	json_int_t total = 0, expected = max * (max - 1) / 2;
	int64_t t0 = now_us();
	int i;

	if (spawn_all(d, m) < 0)
		return -1;
	printf("spawned %d workers of %s in %.1f ms\n", d->n, herd_self_path(),
	    (double)(now_us() - t0) / 1000.0);
	t0 = now_us();
	if (sum_all(d, max) < 0)
		return -1;
	for (i = 0; i < d->n; i++)
		total += d->parts[i].sum;
	printf("sum of 0..%lld = %lld in %.1f ms on %d workers; closed form %lld: %s\n",
	    (long long)(max - 1), (long long)total, (double)(now_us() - t0) / 1000.0, d->n,
	    (long long)expected, total == expected ? "correct" : "WRONG");
	print_split(d);
	return total == expected ? 0 : -1;
}

int
main(int argc, char **argv)
{
	static struct demo d = { .n = 4 };
	const char *socket = NULL;
	json_int_t max = 100000000;
	herd_master *m = NULL;
	herd_error *err = NULL;
	int i, r, status = 1;

	/* A worker run of this same executable serves sum_range and never returns. */
	herd_start_app(&sum_worker, argc, argv);

	if (parse_args(&d, &max, &socket, argc, argv))
		return 2;
	d.loop = EV_DEFAULT;
	ev_set_userdata(d.loop, &d);

	r = herd_master_connect(socket, NULL, &m, &err);
	if (r < 0) {
		fprintf(stderr, "sum-demo: cannot reach herdd: %s\n",
		    err ? herd_error_message(err) : strerror(-r));
		herd_error_unref(err);
		return 1;
	}
	herd_master_on_failure(m, on_failure, NULL);
	if (run_sum(&d, m, max) == 0) {
		printf("closing the master; herdd must stop its %d workers:\n", d.n);
		r = verify_cleanup(&d, m, socket);
		if (r < 0)
			fprintf(stderr, "sum-demo: could not verify the workers are gone: %s\n",
			    strerror(-r));
		else
			printf("verified with herdd's list: all %d workers exited, none left "
			       "running\n",
			    d.n);
		status = r < 0;
	}
	for (i = 0; i < d.n; i++) {
		herd_conn_unref(d.parts[i].conn);
		herd_worker_unref(d.parts[i].w);
	}
	herd_master_unref(m);
	return status;
}
