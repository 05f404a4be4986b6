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
 *   herd-bench stream WORKER N SIZE         N stream items of SIZE bytes (0: integers)
 *   herd-bench scale WORKER N               N spawns in flight until all serve, then
 *                                           the master leaves until all are reaped;
 *                                           herdd's RSS before and with the N workers
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

static void conns_run_until(herd_conn *const *list, int n, const uint64_t *done, unsigned seconds);

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
	struct pipe_state st = { .args = json_pack("{s:i}", "x", 1), .n = n };
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

	st->items++;
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

/* stream WORKER N SIZE */
static int
cmd_stream(char **args)
{
	long n = atol(args[1]), size = atol(args[2]);
	herd_worker *w = spawn(args[0]);
	json_t *count = json_pack("{s:I, s:I}", "n", (json_int_t)n, "size", (json_int_t)size);
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
	snprintf(name, sizeof(name), "herd_stream_size%ld", size);
	bench_report_value("stream_items_per_s", name, (double)n / secs, "1/s");
	if (size > 0)
		bench_report_value("stream_mb_per_s", name, (double)st.bytes / 1e6 / secs, "MB/s");
	json_decref(count);
	herd_conn_unref(c);
	herd_worker_unref(w);
	return 0;
}

/* Reads /proc like test-worker-supervised's fd_flags: the benchmark links no test harness. */
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

/* Lets this process hold a pidfd for each of many workers. */
static void
raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void report_f(const char *figure, double value, const char *unit, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

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

	raise_fd_limit();
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

/* A mode table like baseline.c's: each program lists its own modes; bench_mode_find parses both. */
static const struct bench_mode modes[] = {
	{ "rtt", "WORKER N", 2, cmd_rtt },
	{ "pipeline", "WORKER N INFLIGHT W", 4, cmd_pipeline },
	{ "spawn", "WORKER N", 2, cmd_spawn },
	{ "failure", "WORKER N", 2, cmd_failure },
	{ "orphan", "WORKER N ROUNDS [wedge]", 3, cmd_orphan },
	{ "stream", "WORKER N SIZE", 3, cmd_stream },
	{ "scale", "WORKER N", 2, cmd_scale },
	{ 0 },
};

int
main(int argc, char **argv)
{
	const struct bench_mode *mode = bench_mode_find(modes, "herd-bench", argc, argv);
	int r;

	if (!mode)
		return 2;
	check(herd_master_connect(NULL, NULL, &master, NULL), "connect to herdd");
	r = mode->run(argv + 2);
	herd_master_unref(master);
	return r;
}
