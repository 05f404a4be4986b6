/* SPDX-License-Identifier: MIT */
/*
 * herd's side of the benchmarks, against a running herdd ($HERD_SOCKET):
 *
 *   herd-bench rtt WORKER N                 blocking herd_call of "echo"
 *   herd-bench pipeline WORKER N INFLIGHT W async calls over W workers
 *   herd-bench spawn WORKER N               spawn until ready, then shut down
 *
 * WORKER is the absolute path of herd-testworker. Each prints JSON lines like
 * bench/baseline so the runner can put both side by side.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <herd/herd.h>

#include "stats.h"

static herd_master *master;

static void
check(int r, const char *what)
{
	if (r < 0) {
		fprintf(stderr, "herd-bench: %s: %s\n", what, strerror(-r));
		exit(1);
	}
}

static herd_worker *
spawn(const char *path)
{
	json_t *opts = herd_spawn_opts_new(path, NULL);
	herd_worker *w;

	check(herd_master_spawn(master, opts, 0, &w), "spawn");
	json_decref(opts);
	return w;
}

static int
cmd_rtt(const char *path, long n)
{
	herd_worker *w = spawn(path);
	struct samples s = { 0 };
	json_t *args = json_pack("{s:i}", "x", 1);
	herd_conn *c;

	check(herd_worker_connect(w, NULL, &c, NULL), "connect");
	for (long i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();
		json_t *res;

		check(herd_call(c, "echo", args, 0, &res), "call");
		samples_add(&s, bench_now_ns() - t0);
		json_decref(res);
	}
	samples_report(&s, "call_rtt", "herd_call");
	samples_free(&s);
	json_decref(args);
	herd_conn_unref(c);
	herd_worker_unref(w);
	return 0;
}

struct pipe_state {
	json_t *args;
	long sent, done, n;
};

static void call_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata);

static void
send_one(herd_conn *c, struct pipe_state *st)
{
	st->sent++;
	check(herd_call_async(c, "echo", st->args, call_done, st, NULL), "call_async");
}

static void
call_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	struct pipe_state *st = userdata;

	check(r, "async reply");
	st->done++;
	if (st->sent < st->n)
		send_one(conn, st);
}

static int
cmd_pipeline(const char *path, long n, long inflight, int nworkers)
{
	herd_worker *w[8];
	herd_conn *c[8];
	struct pollfd pfd[8];
	struct pipe_state st = { .args = json_pack("{s:i}", "x", 1), .n = n };
	uint64_t t0;
	char name[64];

	if (nworkers < 1 || nworkers > 8)
		return 2;
	for (int i = 0; i < nworkers; i++) {
		w[i] = spawn(path);
		check(herd_worker_connect(w[i], NULL, &c[i], NULL), "connect");
	}
	t0 = bench_now_ns();
	for (long i = 0; i < inflight && st.sent < n; i++)
		send_one(c[i % nworkers], &st);
	while (st.done < n) {
		for (int i = 0; i < nworkers; i++) {
			pfd[i].fd = herd_conn_get_fd(c[i]);
			pfd[i].events = (short)herd_conn_get_events(c[i]);
		}
		if (poll(pfd, (nfds_t)nworkers, 10000) <= 0)
			check(-ETIMEDOUT, "poll");
		for (int i = 0; i < nworkers; i++)
			if (pfd[i].revents)
				check(herd_conn_process(c[i]), "process");
	}
	snprintf(name, sizeof(name), "herd_inflight%ld_workers%d", inflight, nworkers);
	bench_report_value(
	    "calls_per_s", name, (double)n / ((double)(bench_now_ns() - t0) / 1e9), "1/s");
	for (int i = 0; i < nworkers; i++) {
		herd_conn_unref(c[i]);
		herd_worker_unref(w[i]);
	}
	json_decref(st.args);
	return 0;
}

static int
cmd_spawn(const char *path, long n)
{
	struct samples s = { 0 };
	uint64_t all0 = bench_now_ns();

	for (long i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();
		herd_worker *w = spawn(path);
		char id[64];

		samples_add(&s, bench_now_ns() - t0);
		snprintf(id, sizeof(id), "%s", herd_worker_id(w));
		herd_worker_unref(w);
		check(herd_master_shutdown(master, id, 0, NULL), "shutdown");
	}
	bench_report_value("spawns_per_s", "herd_spawn_and_shutdown",
	    (double)n / ((double)(bench_now_ns() - all0) / 1e9), "1/s");
	samples_report(&s, "spawn_ready", "herd_spawn");
	samples_free(&s);
	return 0;
}

int
main(int argc, char **argv)
{
	int r = 2;

	if (argc < 4) {
		fprintf(
		    stderr, "usage: herd-bench rtt|pipeline|spawn WORKER N [INFLIGHT WORKERS]\n");
		return 2;
	}
	check(herd_master_connect(NULL, NULL, &master, NULL), "connect to herdd");
	if (strcmp(argv[1], "rtt") == 0)
		r = cmd_rtt(argv[2], atol(argv[3]));
	else if (strcmp(argv[1], "pipeline") == 0 && argc >= 6)
		r = cmd_pipeline(argv[2], atol(argv[3]), atol(argv[4]), atoi(argv[5]));
	else if (strcmp(argv[1], "spawn") == 0)
		r = cmd_spawn(argv[2], atol(argv[3]));
	herd_master_unref(master);
	return r;
}
