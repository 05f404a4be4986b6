/* SPDX-License-Identifier: MIT */
/*
 * herd's side of the benchmarks, against a running herdd ($HERD_SOCKET):
 *
 *   herd-bench rtt WORKER N                 blocking herd_call of "echo"
 *   herd-bench pipeline WORKER N INFLIGHT W async calls over W workers
 *   herd-bench spawn WORKER N               spawn until ready, then shut down
 *   herd-bench failure WORKER N             worker SIGKILL -> on_failure runs
 *   herd-bench orphan WORKER N ROUNDS       master SIGKILL -> its N workers exited
 *   herd-bench memory WORKER N              herdd's RSS growth per supervised worker
 *
 * WORKER is the absolute path of herd-testworker. Each prints JSON lines like
 * bench/baseline so the runner can put both side by side.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

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

static void
on_failure(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *stderr_tail, json_t *worker, void *userdata)
{
	*(uint64_t *)userdata = bench_now_ns();
}

/* Runs the master's connection until *done is set, at most 10 s. */
static void
master_run_until(const uint64_t *done)
{
	herd_conn *c = herd_master_get_conn(master);
	uint64_t deadline = bench_now_ns() + 10000000000u;

	while (!*done) {
		if (bench_now_ns() > deadline)
			check(-ETIMEDOUT, "waiting for an event");
		check(herd_conn_wait(c, 100000), "wait");
		check(herd_conn_process(c), "process");
	}
}

static int
cmd_failure(const char *path, long n)
{
	struct samples s = { 0 };
	uint64_t fired = 0;

	check(herd_master_on_failure(master, on_failure, &fired), "on_failure");
	for (long i = 0; i < n; i++) {
		herd_worker *w = spawn(path);
		uint64_t t0;

		fired = 0;
		t0 = bench_now_ns();
		check(kill(herd_worker_pid(w), SIGKILL) < 0 ? -errno : 0, "kill");
		master_run_until(&fired);
		samples_add(&s, fired - t0);
		herd_worker_unref(w);
	}
	samples_report(&s, "failure_detection", "sigkill_to_on_failure");
	samples_free(&s);
	return 0;
}

static int
pidfd_of(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* A master in a child process spawns n workers, reports their pids, then waits to be killed. */
static pid_t
start_doomed_master(const char *path, long n, int *pids_fd)
{
	int p[2];
	pid_t child;

	if (pipe2(p, O_CLOEXEC) < 0)
		check(-errno, "pipe");
	child = fork();
	if (child == 0) {
		herd_master *m;

		close(p[0]);
		check(herd_master_connect(NULL, NULL, &m, NULL), "child connect");
		master = m;
		for (long i = 0; i < n; i++) {
			herd_worker *w = spawn(path);
			int pid = herd_worker_pid(w);

			if (write(p[1], &pid, sizeof(pid)) != sizeof(pid))
				_exit(1);
		}
		close(p[1]);
		for (;;)
			pause();
	}
	close(p[1]);
	*pids_fd = p[0];
	return child;
}

static int
cmd_orphan(const char *path, long n, long rounds)
{
	struct samples s = { 0 };

	for (long r = 0; r < rounds; r++) {
		int rd, *fds = calloc((size_t)n, sizeof(int));
		pid_t child = start_doomed_master(path, n, &rd);
		uint64_t t0, last = 0;

		for (long i = 0; i < n; i++) {
			int pid;

			if (read(rd, &pid, sizeof(pid)) != sizeof(pid))
				check(-EPIPE, "reading worker pids");
			fds[i] = pidfd_of(pid);
			check(fds[i] < 0 ? -errno : 0, "pidfd_open");
		}
		close(rd);
		t0 = bench_now_ns();
		kill(child, SIGKILL);
		for (long i = 0; i < n; i++) {
			struct pollfd pfd = { .fd = fds[i], .events = POLLIN };

			if (poll(&pfd, 1, 10000) != 1)
				check(-ETIMEDOUT, "worker outlived its master");
			close(fds[i]);
		}
		last = bench_now_ns();
		waitpid(child, NULL, 0);
		samples_add(&s, last - t0);
		free(fds);
	}
	samples_report(&s, "orphan_kill", "master_sigkill_to_last_worker_exit");
	samples_free(&s);
	return 0;
}

static long
rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static int
cmd_memory(const char *path, long n)
{
	json_t *info = herd_master_get_server_info(master);
	pid_t herdd = (pid_t)json_integer_value(json_object_get(info, "pid"));
	herd_master *extra[64];
	herd_worker **w = calloc((size_t)n, sizeof(*w));
	long before = rss_kib(herdd), after;
	int nextra = 0;
	char name[64];

	/* herdd caps workers per master (64 by default): spread them over masters. */
	for (long i = 0; i < n; i++) {
		if (i % 60 == 0 && nextra < 64) {
			check(herd_master_connect(NULL, NULL, &extra[nextra], NULL), "connect");
			master = extra[nextra++];
		}
		w[i] = spawn(path);
	}
	after = rss_kib(herdd);
	bench_report_value("daemon_rss", "baseline_kib", (double)before, "KiB");
	snprintf(name, sizeof(name), "with_%ld_workers_kib", n);
	bench_report_value("daemon_rss", name, (double)after, "KiB");
	bench_report_value(
	    "daemon_rss", "per_worker_kib", (double)(after - before) / (double)n, "KiB");
	for (long i = 0; i < n; i++)
		herd_worker_unref(w[i]);
	free(w);
	for (int i = 0; i < nextra; i++)
		herd_master_unref(extra[i]);
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
	else if (strcmp(argv[1], "failure") == 0)
		r = cmd_failure(argv[2], atol(argv[3]));
	else if (strcmp(argv[1], "orphan") == 0 && argc >= 5)
		r = cmd_orphan(argv[2], atol(argv[3]), atol(argv[4]));
	else if (strcmp(argv[1], "memory") == 0) {
		herd_master *first = master;

		r = cmd_memory(argv[2], atol(argv[3]));
		master = first;
	}
	herd_master_unref(master);
	return r;
}
