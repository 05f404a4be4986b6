/* SPDX-License-Identifier: MIT */
/*
 * herd's side of the benchmarks, against a running herdd ($HERD_SOCKET):
 *
 *   herd-bench rtt WORKER N                 blocking herd_call of "echo"
 *   herd-bench pipeline WORKER N INFLIGHT W async calls over W workers
 *   herd-bench spawn WORKER N               spawn until ready, then shut down
 *   herd-bench failure WORKER N             worker SIGKILL -> on_failure runs
 *   herd-bench orphan WORKER N ROUNDS [wedge]
 *                                           master SIGKILL -> its N workers exited;
 *                                           wedged workers ignore SIGTERM and block
 *   herd-bench stream WORKER N SIZE [bytes] N stream items of SIZE bytes (0: integers),
 *                                           strings, or bytes values (herd_bytes_new)
 *   herd-bench bytes-call WORKER N SIZE     N blocking calls carrying SIZE bytes each
 *                                           way (bytes values); MB/s of both ways
 *   herd-bench scale WORKER N               N spawns in flight until all serve, then
 *                                           the master leaves until all are reaped;
 *                                           herdd's RSS before and with the N workers
 *   herd-bench map WORKER N W WINDOW [CHUNK]
 *                                           a pool of W maps "echo" over 0..N-1 (bare
 *                                           integers), in order and unordered (best of
 *                                           3 rounds each),
 *                                           CHUNK tasks a message (default: what an
 *                                           array of N gets, automatic), and unordered
 *                                           one task a message over N/10
 *   herd-bench crash WORKER N W WINDOW ROUNDS
 *                                           the same map unordered, and with one worker
 *                                           SIGKILLed halfway, against a pool's spawn
 *   herd-bench pool-start WORKER W ROUNDS   a pool of W until all serve (median)
 *
 * WORKER is the absolute path of herd-testworker. Each prints JSON lines like
 * bench/baseline so the runner can put both side by side.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <herd/herd.h>

#include "stats.h"

/* Workers a pipeline run may spread its calls over. */
#define MAX_WORKERS 8

static herd_master *master;

static void report_f(const char *figure, double value, const char *unit, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void conns_run_until(herd_conn *const *list, int n, const uint64_t *done, unsigned seconds);

static void
check(int r, const char *what)
{
	if (r < 0) {
		fprintf(stderr, "herd-bench: %s: %s\n", what, strerror(-r));
		exit(1);
	}
}

/* Every mode talks to herdd through one master (check() ends the program if it cannot). */
static int
start(void)
{
	check(herd_master_connect(NULL, NULL, &master, NULL), "connect to herdd");
	return 0;
}

static void
finish(void)
{
	herd_master_unref(master);
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

/* rtt WORKER N */
static int
cmd_rtt(char **args)
{
	long n = atol(args[1]);
	herd_worker *w = spawn(args[0]);
	struct samples s = { 0 };
	json_t *echo = json_pack("{s:i}", "x", 1);
	herd_conn *c;

	check(herd_worker_connect(w, NULL, &c, NULL), "connect");
	for (long i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();
		json_t *res;

		check(herd_call(c, "echo", echo, 0, &res), "call");
		samples_add(&s, bench_now_ns() - t0);
		json_decref(res);
	}
	samples_report(&s, "call_rtt", "herd_call");
	samples_free(&s);
	json_decref(echo);
	herd_conn_unref(c);
	herd_worker_unref(w);
	return 0;
}

struct pipe_state {
	json_t *args;
	long sent, done, n;
	uint64_t finished;
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
	st->finished = ++st->done == st->n;
	if (st->sent < st->n)
		send_one(conn, st);
}

/* pipeline WORKER N INFLIGHT W */
static int
cmd_pipeline(char **args)
{
	const char *path = args[0];
	long n = atol(args[1]), inflight = atol(args[2]);
	int nworkers = atoi(args[3]);
	herd_worker *w[MAX_WORKERS];
	herd_conn *c[MAX_WORKERS];
	/* No calls (bench/call-cost.sh's reference run) is finished at once. */
	struct pipe_state st = { .args = json_pack("{s:i}", "x", 1), .n = n, .finished = n == 0 };
	uint64_t t0;
	char name[64];

	if (nworkers < 1 || nworkers > MAX_WORKERS)
		return 2;
	for (int i = 0; i < nworkers; i++) {
		w[i] = spawn(path);
		check(herd_worker_connect(w[i], NULL, &c[i], NULL), "connect");
	}
	t0 = bench_now_ns();
	for (long i = 0; i < inflight && st.sent < n; i++)
		send_one(c[i % nworkers], &st);
	conns_run_until(c, nworkers, &st.finished, 600);
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

/* spawn WORKER N */
static int
cmd_spawn(char **args)
{
	const char *path = args[0];
	long n = atol(args[1]);
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

/*
 * Serves the n connections of list, and the master's (herdd takes a master
 * silent for its heartbeat timeout for dead), until *done is set, at most
 * seconds. A connection is processed when its socket is ready or its next
 * deadline (a heartbeat to send) has passed, as the loop-independent API asks.
 */
static void
conns_run_until(herd_conn *const *list, int n, const uint64_t *done, unsigned seconds)
{
	herd_conn *conns[MAX_WORKERS + 1], *mc = master ? herd_master_get_conn(master) : NULL;
	struct pollfd p[MAX_WORKERS + 1];
	uint64_t deadline = bench_now_ns() + (uint64_t)seconds * 1000000000u;
	int m = 0;

	for (int i = 0; i < n; i++) {
		conns[m++] = list[i];
		if (list[i] == mc)
			mc = NULL;
	}
	if (mc)
		conns[m++] = mc;
	while (!*done) {
		uint64_t next = HERD_TIMEOUT_INFINITE, now, t;
		int wait_ms = 100;

		if (bench_now_ns() > deadline)
			check(-ETIMEDOUT, "waiting for the connection");
		for (int i = 0; i < m; i++) {
			p[i].fd = herd_conn_get_fd(conns[i]);
			p[i].events = (short)herd_conn_get_events(conns[i]);
			p[i].revents = 0;
			check(herd_conn_get_timeout(conns[i], &t), "timeout");
			next = t < next ? t : next;
		}
		now = bench_now_ns() / 1000;
		if (next <= now)
			wait_ms = 0;
		else if (next - now < 100000)
			wait_ms = (int)((next - now + 999) / 1000);
		if (poll(p, (nfds_t)m, wait_ms) < 0 && errno != EINTR)
			check(-errno, "poll");
		now = bench_now_ns() / 1000;
		for (int i = 0; i < m; i++) {
			check(herd_conn_get_timeout(conns[i], &t), "timeout");
			if (p[i].revents || t <= now)
				check(herd_conn_process(conns[i]), "process");
		}
	}
}

static void
conn_run_until(herd_conn *c, const uint64_t *done, unsigned seconds)
{
	conns_run_until(&c, 1, done, seconds);
}

/* failure WORKER N */
static int
cmd_failure(char **args)
{
	const char *path = args[0];
	long n = atol(args[1]);
	struct samples s = { 0 };
	uint64_t fired = 0;

	check(herd_master_on_failure(master, on_failure, &fired), "on_failure");
	for (long i = 0; i < n; i++) {
		herd_worker *w = spawn(path);
		uint64_t t0;

		fired = 0;
		t0 = bench_now_ns();
		check(kill(herd_worker_pid(w), SIGKILL) < 0 ? -errno : 0, "kill");
		conn_run_until(herd_master_get_conn(master), &fired, 10);
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
	int fd = (int)syscall(SYS_pidfd_open, pid, 0);

	check(fd < 0 ? -errno : 0, "pidfd_open");
	return fd;
}

/* Waits until every pidfd says its process is gone (at most 30 s), closing them. */
static void
wait_all_gone(int *fds, long n)
{
	uint64_t deadline = bench_now_ns() + 30000000000u;

	for (long i = 0; i < n; i++) {
		struct pollfd pfd = { .fd = fds[i], .events = POLLIN };
		int left = (int)((deadline - bench_now_ns()) / 1000000);

		if (left <= 0 || poll(&pfd, 1, left) != 1)
			check(-ETIMEDOUT, "a worker outlived its master");
		close(fds[i]);
	}
}

/*
 * Wedges w: it ignores SIGTERM and blocks its loop. Returns once the worker says
 * so on the FIFO at fifo_path (read end fifo_fd), at most 10 s.
 */
static void
wedge(herd_worker *w, const char *fifo_path, int fifo_fd)
{
	json_t *args = json_pack("{s:s}", "notify", fifo_path);
	struct pollfd p[2] = { { .fd = fifo_fd, .events = POLLIN } };
	uint64_t deadline = bench_now_ns() + 10000000000u;
	herd_conn *c;
	char byte;

	check(herd_worker_connect(w, NULL, &c, NULL), "connect");
	check(herd_oneway(c, "wedge", args), "wedge");
	json_decref(args);
	while (!(p[0].revents & POLLIN)) {
		if (bench_now_ns() > deadline)
			check(-ETIMEDOUT, "waiting for a worker to wedge");
		p[1].fd = herd_conn_get_fd(c);
		p[1].events = (short)herd_conn_get_events(c);
		if (poll(p, 2, 100) < 0 && errno != EINTR)
			check(-errno, "poll");
		if (p[1].revents)
			check(herd_conn_process(c), "process");
	}
	if (read(fifo_fd, &byte, 1) != 1)
		check(-EIO, "reading the wedge FIFO");
	herd_conn_unref(c);
}

/*
 * The doomed master itself: connects, spawns n workers (wedged if asked),
 * writes each pid on pid_fd, then waits to be killed.
 */
static void __attribute__((noreturn))
doomed_master(const char *path, long n, bool wedged, int pid_fd)
{
	char dir[] = "/tmp/herd-bench-XXXXXX", fifo[64];
	int fifo_fd = -1;
	herd_master *m;

	if (wedged) {
		if (!mkdtemp(dir))
			_exit(1);
		snprintf(fifo, sizeof(fifo), "%s/wedged", dir);
		if (mkfifo(fifo, 0600) < 0)
			_exit(1);
		/* The read end stays open: every worker's open for writing finds it. */
		fifo_fd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	}
	check(herd_master_connect(NULL, NULL, &m, NULL), "child connect");
	master = m;
	for (long i = 0; i < n; i++) {
		herd_worker *w = spawn(path);
		int pid = herd_worker_pid(w);

		if (wedged)
			wedge(w, fifo, fifo_fd);
		if (write(pid_fd, &pid, sizeof(pid)) != sizeof(pid))
			_exit(1);
	}
	if (wedged) {
		unlink(fifo);
		rmdir(dir);
	}
	close(pid_fd);
	for (;;)
		pause();
}

/* Starts doomed_master in a child process; *pids_fd reads the pids of its workers. */
static pid_t
start_doomed_master(const char *path, long n, bool wedged, int *pids_fd)
{
	int p[2];
	pid_t child;

	if (pipe2(p, O_CLOEXEC) < 0)
		check(-errno, "pipe");
	child = fork();
	if (child == 0) {
		close(p[0]);
		doomed_master(path, n, wedged, p[1]);
	}
	close(p[1]);
	*pids_fd = p[0];
	return child;
}

/* orphan WORKER N ROUNDS [wedge] */
static int
cmd_orphan(char **args)
{
	const char *path = args[0];
	long n = atol(args[1]), rounds = atol(args[2]);
	bool wedged = args[3] && strcmp(args[3], "wedge") == 0;
	struct samples s = { 0 };

	for (long r = 0; r < rounds; r++) {
		int rd, *fds = calloc((size_t)n, sizeof(int));
		pid_t child = start_doomed_master(path, n, wedged, &rd);
		uint64_t t0;

		for (long i = 0; i < n; i++) {
			int pid;

			if (read(rd, &pid, sizeof(pid)) != sizeof(pid))
				check(-EPIPE, "reading worker pids");
			fds[i] = pidfd_of(pid);
		}
		close(rd);
		t0 = bench_now_ns();
		kill(child, SIGKILL);
		wait_all_gone(fds, n);
		samples_add(&s, bench_now_ns() - t0);
		waitpid(child, NULL, 0);
		free(fds);
	}
	samples_report(&s, "orphan_kill",
	    wedged ? "wedged_master_sigkill_to_last_worker_exit"
	           : "master_sigkill_to_last_worker_exit");
	samples_free(&s);
	return 0;
}

struct stream_state {
	uint64_t items, bytes, done;
};

static void
stream_item(herd_stream *stream, json_t *item, bool initial, void *userdata)
{
	struct stream_state *st = userdata;

	const void *data;
	size_t len;

	st->items++;
	if (herd_bytes_get(item, &data, &len) == 0)
		st->bytes += len;
	else
		st->bytes += json_is_string(item) ? json_string_length(item) : 0;
}

static void
stream_end(herd_stream *stream, int r, json_t *result, herd_error *error, void *userdata)
{
	if (r < 0) {
		fprintf(stderr, "herd-bench: stream: %s\n",
		    error ? herd_error_message(error) : strerror(-r));
		exit(1);
	}
	((struct stream_state *)userdata)->done = 1;
}

/* stream WORKER N SIZE [bytes] */
static int
cmd_stream(char **args)
{
	long n = atol(args[1]), size = atol(args[2]);
	bool bytes = args[3] && strcmp(args[3], "bytes") == 0;
	herd_worker *w = spawn(args[0]);
	json_t *count = json_pack(
	    "{s:I, s:I, s:b}", "n", (json_int_t)n, "size", (json_int_t)size, "bytes", bytes);
	struct stream_state st = { 0 };
	herd_conn *c;
	double secs;
	char name[64];
	uint64_t t0;

	check(herd_worker_connect(w, NULL, &c, NULL), "connect");
	t0 = bench_now_ns();
	check(herd_stream_open(c, "count", count, stream_item, stream_end, &st, NULL), "stream");
	conn_run_until(c, &st.done, 600);
	secs = (double)(bench_now_ns() - t0) / 1e9;
	if (st.items != (uint64_t)n || st.bytes != (uint64_t)n * (uint64_t)size)
		check(-EPROTO, "stream lost items");
	snprintf(name, sizeof(name), "herd_stream%s_size%ld", bytes ? "_bytes" : "", size);
	bench_report_value("stream_items_per_s", name, (double)n / secs, "1/s");
	if (size > 0)
		bench_report_value("stream_mb_per_s", name, (double)st.bytes / 1e6 / secs, "MB/s");
	json_decref(count);
	herd_conn_unref(c);
	herd_worker_unref(w);
	return 0;
}

/* bytes-call WORKER N SIZE: blocking calls of echo, SIZE bytes out and back. */
static int
cmd_bytes_call(char **args)
{
	long n = atol(args[1]), size = atol(args[2]);
	herd_worker *w = spawn(args[0]);
	char *buf = calloc(1, (size_t)size + 1);
	json_t *arg = json_pack("{s:o}", "data", herd_bytes_new(buf, (size_t)size));
	herd_conn *c;
	uint64_t t0;
	double secs;

	check(herd_worker_connect(w, NULL, &c, NULL), "connect");
	t0 = bench_now_ns();
	for (long i = 0; i < n; i++) {
		const void *data;
		size_t len;
		json_t *res;

		check(herd_call(c, "echo", arg, 0, &res), "call");
		if (herd_bytes_get(json_object_get(res, "data"), &data, &len) < 0 ||
		    len != (size_t)size)
			check(-EPROTO, "echo answered something else");
		json_decref(res);
	}
	secs = (double)(bench_now_ns() - t0) / 1e9;
	report_f("bytes_call_mb_per_s", 2.0 * (double)n * (double)size / 1e6 / secs, "MB/s",
	    "herd_bytes_call_size%ld", size);
	report_f("calls_per_s", (double)n / secs, "1/s", "herd_bytes_call_size%ld", size);
	json_decref(arg);
	free(buf);
	herd_conn_unref(c);
	herd_worker_unref(w);
	return 0;
}

/* The resident set of pid in KiB (VmRSS), or -1. */
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

struct scale_state {
	herd_worker **w;
	long n, next, ready;
	uint64_t all_ready;
};

static void
scale_spawned(herd_master *m, int r, herd_worker *worker, herd_error *error, void *userdata)
{
	struct scale_state *st = userdata;

	if (r < 0) {
		fprintf(stderr, "herd-bench: spawn: %s\n",
		    error ? herd_error_message(error) : strerror(-r));
		exit(1);
	}
	st->w[st->ready++] = herd_worker_ref(worker);
	if (st->ready == st->n)
		st->all_ready = 1;
}

/* Reports one figure whose variant name is formatted. */
static void
report_f(const char *figure, double value, const char *unit, const char *fmt, ...)
{
	char name[64];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	bench_report_value(figure, name, value, unit);
}

/* scale WORKER N */
static int
cmd_scale(char **args)
{
	const char *path = args[0];
	long n = atol(args[1]);
	json_t *info = herd_master_get_server_info(master);
	pid_t herdd = (pid_t)json_integer_value(json_object_get(info, "pid"));
	struct scale_state st = { .w = calloc((size_t)n, sizeof(herd_worker *)), .n = n };
	int *fds = calloc((size_t)n, sizeof(int));
	long before = rss_kib(herdd), after;
	json_t *opts = herd_spawn_opts_new(path, NULL);
	uint64_t t0, t1;

	bench_raise_fd_limit();
	t0 = bench_now_ns();
	for (long i = 0; i < n; i++)
		check(herd_master_spawn_async(master, opts, scale_spawned, &st), "spawn_async");
	conn_run_until(herd_master_get_conn(master), &st.all_ready, 300);
	t1 = bench_now_ns();
	after = rss_kib(herdd);
	for (long i = 0; i < n; i++) {
		fds[i] = pidfd_of(herd_worker_pid(st.w[i]));
		herd_worker_unref(st.w[i]);
	}
	/* The master leaves: herdd stops every worker it owns. */
	herd_master_unref(master);
	master = NULL;
	wait_all_gone(fds, n);
	report_f("scale", (double)(t1 - t0) / 1e6, "ms", "spawn_%ld_all_ready", n);
	report_f("scale", (double)(bench_now_ns() - t1) / 1e6, "ms", "stop_%ld_all_reaped", n);
	report_f("daemon_rss", (double)before, "KiB", "before_%ld_kib", n);
	report_f("daemon_rss", (double)after, "KiB", "with_%ld_workers_kib", n);
	report_f(
	    "daemon_rss", (double)(after - before) / (double)n, "KiB", "per_worker_kib_%ld", n);
	json_decref(opts);
	free(st.w);
	free(fds);
	return 0;
}

/* ---- pools ---- */

struct map_state {
	herd_pool *pool;
	long n, next, done, kill_at;
	bool bare; /* arguments as bare integers (batches), else [i] */
	json_int_t sum;
	uint64_t killed_ns, respawned_ns; /* the kill, and its replacement's first sight */
	uint64_t spawns_before;
};

/*
 * The next argument: the echo of an integer, as Python's map(echo,
 * range(n)). In batches the integer i itself (a bare job); one task a
 * message [i], the params of a plain call, which costs less than a batch
 * of one.
 */
static json_t *
map_next(void *userdata)
{
	struct map_state *st = userdata;
	json_int_t i = (json_int_t)st->next;

	if (st->next >= st->n)
		return NULL;
	st->next++;
	return st->bare ? json_integer(i) : json_pack("[I]", i);
}

/* One echo came back: adds it up, and SIGKILLs a worker when kill_at are done. */
static void
map_task(herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *userdata)
{
	struct map_state *st = userdata;
	pid_t pid;

	check(r, "pool task");
	st->sum += json_integer_value(st->bare ? result : json_array_get(result, 0));
	if (st->killed_ns && !st->respawned_ns && herd_pool_spawns(st->pool) > st->spawns_before)
		st->respawned_ns = bench_now_ns();
	if (++st->done == st->kill_at && herd_pool_worker_pids(st->pool, &pid, 1) > 0) {
		st->spawns_before = herd_pool_spawns(st->pool);
		st->killed_ns = bench_now_ns();
		check(kill(pid, SIGKILL) < 0 ? -errno : 0, "kill");
	}
}

/*
 * Maps echo over 0..n-1 on p, the arguments from an iterator and the results
 * checked as they come (nothing kept: a million tasks stay small), killing a
 * worker after kill_at results (0: never). Returns the seconds it took.
 */
static double
pool_run(herd_pool *p, enum herd_job_kind kind, long n, unsigned chunksize, long kill_at,
    double *ret_respawn)
{
	struct map_state st = { .pool = p, .n = n, .kill_at = kill_at, .bare = chunksize != 1 };
	uint64_t t0 = bench_now_ns();
	herd_job *job;

	check(herd_job_new(p, kind, "echo", &job), "job");
	check(herd_job_set_iter(job, map_next, &st), "job iter");
	check(herd_job_set_flags(job, st.bare ? HERD_JOB_BARE_ARGS : 0), "job flags");
	check(herd_job_set_chunksize(job, chunksize), "job chunksize");
	check(herd_job_on_task(job, map_task, &st), "job on_task");
	check(herd_job_wait(job, HERD_TIMEOUT_INFINITE, NULL), "map");
	herd_job_unref(job);
	if (st.done != n || st.sum != (json_int_t)n * (n - 1) / 2)
		check(-EPROTO, "the map lost or repeated results");
	if (ret_respawn)
		*ret_respawn = st.respawned_ns ? (double)(st.respawned_ns - st.killed_ns) / 1e9 : 0;
	return (double)(bench_now_ns() - t0) / 1e9;
}

/* A pool of workers copies of path with window tasks each, once all of them are ready. */
static herd_pool *
pool_open(const char *path, int workers, int window)
{
	json_t *spawn_opts = herd_spawn_opts_new(path, NULL);
	json_t *opts = json_pack("{s:i, s:i}", "workers", workers, "window", window);
	uint64_t deadline = bench_now_ns() + 30000000000u;
	herd_error *err = NULL;
	herd_pool *p;
	int r;

	r = herd_pool_new(spawn_opts, opts, &p, &err);
	if (r < 0) {
		fprintf(
		    stderr, "herd-bench: pool: %s\n", err ? herd_error_message(err) : strerror(-r));
		exit(1);
	}
	while (herd_pool_worker_pids(p, NULL, 0) < workers) {
		if (bench_now_ns() > deadline)
			check(-ETIMEDOUT, "waiting for the pool's workers");
		if (herd_pool_process(p) == 0)
			herd_pool_wait(p, 100000);
	}
	json_decref(spawn_opts);
	json_decref(opts);
	return p;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The best rate of three rounds, as for Python's figures. */
static double
pool_best_rate(herd_pool *p, enum herd_job_kind kind, long n, unsigned chunksize)
{
	double best = 0;

	for (int round = 0; round < 3; round++) {
		double rate = (double)n / pool_run(p, kind, n, chunksize, 0, NULL);

		best = rate > best ? rate : best;
	}
	return best;
}

/*
 * The chunksize a pool of workers picks for an array of n arguments (pool.h):
 * the iterator the benchmark uses to stay small gets it explicitly.
 */
static unsigned
auto_chunksize(long n, int workers)
{
	long c = (n + 4 * workers - 1) / (4 * workers);

	return c < 1 ? 1 : c > 1024 ? 1024 : (unsigned)c;
}

/* map WORKER N W WINDOW [CHUNK] */
static int
cmd_map(char **args)
{
	long n = atol(args[1]);
	int workers = atoi(args[2]), window = atoi(args[3]);
	unsigned chunk = args[4] ? (unsigned)atol(args[4]) : auto_chunksize(n, workers);
	herd_pool *p = pool_open(args[0], workers, window);
	static const struct {
		enum herd_job_kind kind;
		const char *name;
	} kinds[] = { { HERD_JOB_MAP, "map" }, { HERD_JOB_MAP_UNORDERED, "map_unordered" } };

	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++)
		report_f("pool_tasks_per_s", pool_best_rate(p, kinds[k].kind, n, chunk), "1/s",
		    "herd_pool_%s_workers%d_window%d_chunk%u", kinds[k].name, workers, window,
		    chunk);
	/* One task a message, as Python's imap_unordered with chunksize 1 (over N/10). */
	report_f("pool_tasks_per_s",
	    pool_best_rate(p, HERD_JOB_MAP_UNORDERED, n / 10 > 0 ? n / 10 : 1, 1), "1/s",
	    "herd_pool_map_unordered_chunksize1_workers%d_window%d", workers, window);
	herd_pool_unref(p);
	return 0;
}

/*
 * crash WORKER N W WINDOW ROUNDS: medians over ROUNDS of the map without and
 * with a worker SIGKILLed after N/2 results (a fresh pool each), their
 * difference, and the bound it must stay under: the time a pool of one takes
 * to start (one spawn, connect and hello) plus the work of the tasks the dead
 * worker held (WINDOW tasks at the base run's time per task and worker); and
 * how long the replacement took to serve, spawned while the map runs.
 */
static int
cmd_crash(char **args)
{
	long n = atol(args[1]), rounds = atol(args[4]);
	int workers = atoi(args[2]), window = atoi(args[3]);
	double *base = calloc((size_t)rounds, sizeof(double));
	double *crash = calloc((size_t)rounds, sizeof(double));
	double *extra = calloc((size_t)rounds, sizeof(double));
	double *spawn = calloc((size_t)rounds, sizeof(double));
	double *respawn = calloc((size_t)rounds, sizeof(double));
	double lost;

	for (long r = 0; r < rounds; r++) {
		uint64_t t0 = bench_now_ns();
		herd_pool *p = pool_open(args[0], 1, window);

		spawn[r] = (double)(bench_now_ns() - t0) / 1e9;
		herd_pool_unref(p);
		p = pool_open(args[0], workers, window);
		base[r] = pool_run(p, HERD_JOB_MAP_UNORDERED, n, 1, 0, NULL);
		herd_pool_unref(p);
		p = pool_open(args[0], workers, window);
		crash[r] = pool_run(p, HERD_JOB_MAP_UNORDERED, n, 1, n / 2, &respawn[r]);
		if (herd_pool_deaths(p) != 1)
			check(-EPROTO, "the killed worker was not seen dying once");
		herd_pool_unref(p);
		extra[r] = crash[r] - base[r];
	}
	qsort(base, (size_t)rounds, sizeof(double), cmp_double);
	qsort(crash, (size_t)rounds, sizeof(double), cmp_double);
	qsort(extra, (size_t)rounds, sizeof(double), cmp_double);
	qsort(spawn, (size_t)rounds, sizeof(double), cmp_double);
	qsort(respawn, (size_t)rounds, sizeof(double), cmp_double);
	lost = window * base[rounds / 2] * workers / (double)n;
	report_f("crash_cost", base[rounds / 2] * 1e3, "ms", "map%ld_base_ms", n);
	report_f("crash_cost", crash[rounds / 2] * 1e3, "ms", "map%ld_one_sigkill_ms", n);
	report_f("crash_cost", extra[rounds / 2] * 1e3, "ms", "map%ld_extra_ms", n);
	report_f("crash_cost", spawn[rounds / 2] * 1e3, "ms", "pool_of_one_start_ms");
	report_f("crash_cost", (spawn[rounds / 2] + lost) * 1e3, "ms", "map%ld_bound_ms", n);
	/* How long the replacement really took, spawned while the map kept the CPUs busy. */
	report_f("crash_cost", respawn[rounds / 2] * 1e3, "ms", "map%ld_respawn_ms", n);
	free(base);
	free(crash);
	free(extra);
	free(spawn);
	free(respawn);
	return 0;
}

/* pool-start WORKER W ROUNDS: the median time a pool of W takes until all its workers serve. */
static int
cmd_pool_start(char **args)
{
	int workers = atoi(args[1]);
	long rounds = atol(args[2]);
	struct samples s = { 0 };

	for (long r = 0; r < rounds; r++) {
		uint64_t t0 = bench_now_ns();
		herd_pool *p = pool_open(args[0], workers, 1);

		samples_add(&s, bench_now_ns() - t0);
		herd_pool_unref(p);
	}
	report_f("pool_start_ms", (double)samples_pct(&s, 50) / 1e6, "ms", "herd_pool_workers%d",
	    workers);
	samples_free(&s);
	return 0;
}

/* Each program lists its own modes; bench_main (stats.c) parses and runs them for all. */
static const struct bench_mode modes[] = {
	{ "rtt", "WORKER N", 2, cmd_rtt },
	{ "pipeline", "WORKER N INFLIGHT W", 4, cmd_pipeline },
	{ "spawn", "WORKER N", 2, cmd_spawn },
	{ "failure", "WORKER N", 2, cmd_failure },
	{ "orphan", "WORKER N ROUNDS [wedge]", 3, cmd_orphan },
	{ "stream", "WORKER N SIZE [bytes]", 3, cmd_stream },
	{ "bytes-call", "WORKER N SIZE", 3, cmd_bytes_call },
	{ "scale", "WORKER N", 2, cmd_scale },
	{ "map", "WORKER N W WINDOW [CHUNK]", 4, cmd_map },
	{ "crash", "WORKER N W WINDOW ROUNDS", 5, cmd_crash },
	{ "pool-start", "WORKER W ROUNDS", 3, cmd_pool_start },
	{ 0 },
};

int
main(int argc, char **argv)
{
	static const struct bench_prog prog = { "herd-bench", modes, start, finish };

	return bench_main(&prog, argc, argv);
}
