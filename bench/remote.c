/* SPDX-License-Identifier: MIT */
/*
 * Workers on another host (PROTOCOL.md 9) beside what the transport costs
 * by itself, over the same launcher:
 *   remote-bench rtt HOST WORKER N     a call's round trip through the link
 *                                      vs a line echoed by `cat` through the
 *                                      same launcher (ssh HOST cat), and the
 *                                      floor of the link's design: cat's
 *                                      echo plus a local call on HOST (a
 *                                      master there calling WORKER spawned
 *                                      by a herdd there: the hop the remote
 *                                      herdd adds to cat's path)
 *   remote-bench spawn HOST WORKER N   a remote spawn (link and herdd up) vs
 *                                      the launcher running `true`
 *   remote-bench pool HOSTS WORKER FUNCTION ARG N J
 *                                      a pool map of N tasks (FUNCTION, the
 *                                      JSON ARG each) over every host of the
 *                                      comma-separated HOSTS, J workers each,
 *                                      vs the same pool on the first host only
 *   remote-bench local-serve WORKER    what rtt runs on HOST for that local
 *                                      call (through the same launcher, with
 *                                      $HERDD the herdd to start there)
 * HOST is a host address (ssh://h1); $HERD_SSH_COMMAND applies to both sides.
 * rtt runs this very executable on HOST, and $HERD_REMOTE_HERDD (default
 * herdd on the remote PATH), as the link does: HOST must see both paths (the
 * test bed's hosts share this file system).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <herd/herd.h>

#include "stats.h"

extern char **environ;

/* The launcher of an ssh:// host running cmd, on a socketpair; *ret_fd gets our end. */
static pid_t
launch(const char *host, const char *cmd, int *ret_fd)
{
	const char *ssh = getenv("HERD_SSH_COMMAND");
	const char *argv[] = { "sh", "-c", NULL, NULL };
	posix_spawn_file_actions_t fa;
	char *script = NULL;
	pid_t pid = -1;
	int sv[2];

	if (strncmp(host, "ssh://", 6) != 0 ||
	    asprintf(&script, "exec %s %s %s", ssh && *ssh ? ssh : "ssh", host + 6, cmd) < 0 ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		free(script);
		return -1;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 0);
	posix_spawn_file_actions_adddup2(&fa, sv[1], 1);
	argv[2] = script;
	if (posix_spawn(&pid, "/bin/sh", &fa, NULL, (char *const *)argv, environ) != 0)
		pid = -1;
	posix_spawn_file_actions_destroy(&fa);
	close(sv[1]);
	free(script);
	*ret_fd = sv[0];
	return pid;
}

/* Writes line and reads it back whole. Returns 0 or -1. */
static int
echo_once(int fd, const char *line, size_t len, char *buf)
{
	size_t got = 0;
	ssize_t n;

	if (write(fd, line, len) != (ssize_t)len)
		return -1;
	while (got < len) {
		n = read(fd, buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/* Calls and echoes per block: the two alternate, so both see the same load. */
#define RTT_BLOCK 10

/* One echo of line through the cat session on fd, timed into s. */
static int
raw_once(int fd, struct samples *s, bool keep)
{
	static const char line[] =
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"x\":1}}\n";
	char buf[sizeof(line)];
	uint64_t t0 = bench_now_ns();

	if (echo_once(fd, line, sizeof(line) - 1, buf) < 0)
		return -1;
	if (keep)
		samples_add(s, bench_now_ns() - t0);
	return 0;
}

static int
remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path) < 0 ? -1 : 0;
}

/*
 * HOST's side of the floor: a master there calls a worker spawned by a
 * private herdd there (started for a socket in a directory of its own;
 * both are gone at the end). Says "ready" once the worker is connected; then
 * each line read on stdin gets RTT_BLOCK calls of the link's function and
 * payload, answered with their round trips in ns on one line. Ends at EOF.
 */
static int
run_local_serve(char **args)
{
	char dir[] = "/tmp/herd-remote-bench-XXXXXX", path[PATH_MAX], *line = NULL;
	json_t *opts = herd_spawn_opts_new(args[0], NULL), *arg = json_pack("{s:i}", "x", 1);
	herd_master *m = NULL;
	herd_worker *w = NULL;
	herd_conn *c = NULL;
	size_t cap = 0;
	int rc = 1, pidfd = -1;

	if (!mkdtemp(dir))
		return 1;
	snprintf(path, sizeof(path), "%s/herdd.sock", dir);
	if (herd_master_connect(path, NULL, &m, NULL) == 0) {
		json_t *info = herd_master_get_server_info(m);

		pidfd = (int)syscall(
		    SYS_pidfd_open, (pid_t)json_integer_value(json_object_get(info, "pid")), 0);
		if (herd_master_spawn(m, opts, 0, &w) == 0 &&
		    herd_worker_connect(w, NULL, &c, NULL) == 0 && printf("ready\n") > 0 &&
		    fflush(stdout) == 0)
			rc = 0;
	}
	while (rc == 0 && getline(&line, &cap, stdin) > 0) {
		for (int k = 0; k < RTT_BLOCK && rc == 0; k++) {
			uint64_t t0 = bench_now_ns();

			if (herd_call(c, "echo", arg, 0, NULL) < 0)
				rc = 1;
			else
				printf("%s%llu", k ? " " : "",
				    (unsigned long long)(bench_now_ns() - t0));
		}
		if (printf("\n") < 0 || fflush(stdout) != 0)
			rc = 1;
	}
	free(line);
	herd_conn_unref(c);
	herd_worker_unref(w);
	herd_master_unref(m);
	/* The master has left, so herdd has stopped the worker; now herdd itself. */
	if (pidfd >= 0 && syscall(SYS_pidfd_send_signal, pidfd, SIGTERM, NULL, 0) == 0) {
		struct pollfd pfd = { .fd = pidfd, .events = POLLIN };

		poll(&pfd, 1, 10000);
	}
	if (pidfd >= 0)
		close(pidfd);
	nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
	json_decref(opts);
	json_decref(arg);
	return rc;
}

/* Starts local-serve WORKER on host through its launcher; *ret_in reads its lines. */
static pid_t
launch_local_serve(const char *host, const char *worker, int *ret_fd, FILE **ret_in)
{
	const char *herdd = getenv("HERD_REMOTE_HERDD");
	char self[PATH_MAX], *cmd = NULL, *line = NULL;
	ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	size_t cap = 0;
	pid_t pid = -1;
	int fd;

	if (len <= 0 ||
	    asprintf(&cmd, "HERDD=%s exec %.*s local-serve %s", herdd && *herdd ? herdd : "herdd",
	        (int)len, self, worker) < 0)
		return -1;
	pid = launch(host, cmd, ret_fd);
	free(cmd);
	if (pid < 0)
		return -1;
	fd = fcntl(*ret_fd, F_DUPFD_CLOEXEC, 0);
	*ret_in = fd < 0 ? NULL : fdopen(fd, "r");
	if (!*ret_in || getline(&line, &cap, *ret_in) <= 0 || strcmp(line, "ready\n") != 0) {
		free(line);
		return -1;
	}
	free(line);
	return pid;
}

/* One block of local calls on the far side; their round trips go into s. */
static int
local_block(int fd, FILE *in, struct samples *s, int first, int warm)
{
	char *line = NULL, *p, *end;
	size_t cap = 0;
	int k = first;

	if (write(fd, "b\n", 2) != 2 || getline(&line, &cap, in) <= 0) {
		free(line);
		return -1;
	}
	for (p = line;; p = end, k++) {
		unsigned long long ns = strtoull(p, &end, 10);

		if (end == p)
			break;
		if (k >= warm)
			samples_add(s, ns);
	}
	free(line);
	return k - first == RTT_BLOCK ? 0 : -1;
}

/*
 * A call's round trip through the link against a line echoed by `cat`
 * through the same launcher and against a local call on the far host, in
 * alternating blocks (the first tenth of each is warm-up), so a busy
 * machine weighs on all three alike; the ratio of the medians is the
 * figure. The link's design makes cat's echo plus that local call its
 * floor: the remote herdd relays each call to its worker and back, a hop
 * that cat's echo does not have (PROTOCOL.md 9).
 */
static int
run_rtt(char **args)
{
	const char *host = args[0];
	int n = atoi(args[2]), fd, lfd, status;
	json_t *opts = herd_spawn_opts_new(args[1], NULL), *arg = json_pack("{s:i}", "x", 1);
	struct samples herd = { 0 }, raw = { 0 }, local = { 0 };
	herd_master *m = NULL;
	herd_worker *w = NULL;
	herd_conn *c = NULL;
	FILE *lin = NULL;
	pid_t pid, lpid;
	double cat, floor_us;

	if (herd_master_connect(host, NULL, &m, NULL) < 0 ||
	    herd_master_spawn(m, opts, 0, &w) < 0 || herd_worker_connect(w, NULL, &c, NULL) < 0)
		return 1;
	pid = launch(host, "cat", &fd);
	lpid = launch_local_serve(host, args[1], &lfd, &lin);
	if (pid < 0 || lpid < 0)
		return 1;
	for (int i = 0; i < n + n / 10; i += RTT_BLOCK) {
		for (int k = i; k < i + RTT_BLOCK; k++) {
			uint64_t t0 = bench_now_ns();

			if (herd_call(c, "echo", arg, 0, NULL) < 0)
				return 1;
			if (k >= n / 10)
				samples_add(&herd, bench_now_ns() - t0);
		}
		for (int k = i; k < i + RTT_BLOCK; k++)
			if (raw_once(fd, &raw, k >= n / 10) < 0)
				return 1;
		if (local_block(lfd, lin, &local, i, n / 10) < 0)
			return 1;
	}
	close(fd);
	waitpid(pid, &status, 0);
	/* EOF ends local-serve, which stops its herdd before the launcher returns. */
	close(lfd);
	fclose(lin);
	waitpid(lpid, &status, 0);
	samples_report(&herd, "remote_rtt", "herd_link");
	samples_report(&raw, "remote_rtt", "ssh_cat");
	samples_report(&local, "remote_rtt", "remote_local_call");
	cat = (double)samples_pct(&raw, 50);
	floor_us = (cat + (double)samples_pct(&local, 50)) / 1000;
	printf("remote_rtt ratio (p50 herd_link / ssh_cat): %.2f\n",
	    (double)samples_pct(&herd, 50) / cat);
	printf("remote_rtt floor (p50 ssh_cat + remote_local_call): %.1f us, %.2fx ssh_cat; "
	       "herd_link %.2fx the floor\n",
	    floor_us, floor_us * 1000 / cat, (double)samples_pct(&herd, 50) / 1000 / floor_us);
	samples_free(&herd);
	samples_free(&raw);
	samples_free(&local);
	herd_conn_unref(c);
	herd_worker_unref(w);
	herd_master_unref(m);
	json_decref(opts);
	json_decref(arg);
	return 0;
}

static int
run_spawn(char **args)
{
	const char *host = args[0];
	int n = atoi(args[2]), fd, status;
	json_t *opts = herd_spawn_opts_new(args[1], NULL);
	struct samples herd = { 0 }, raw = { 0 };
	char buf[1];

	for (int i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();
		herd_master *m = NULL;
		herd_worker *w = NULL;
		pid_t pid;

		if (herd_master_connect(host, NULL, &m, NULL) < 0 ||
		    herd_master_spawn(m, opts, 0, &w) < 0)
			return 1;
		samples_add(&herd, bench_now_ns() - t0);
		herd_worker_unref(w);
		herd_master_unref(m);
		t0 = bench_now_ns();
		pid = launch(host, "true", &fd);
		if (pid < 0 || read(fd, buf, 1) != 0)
			return 1;
		waitpid(pid, &status, 0);
		close(fd);
		samples_add(&raw, bench_now_ns() - t0);
	}
	samples_report(&herd, "remote_spawn", "herd_connect_spawn");
	samples_report(&raw, "remote_spawn", "ssh_true");
	samples_free(&herd);
	samples_free(&raw);
	json_decref(opts);
	return 0;
}

/* Tasks per second of one map of n tasks over hosts (an array), j workers each; <0 on failure. */
static double
pool_rate(json_t *hosts, const char *worker, const char *function, json_t *arg, int n, int j)
{
	json_t *spawn = herd_spawn_opts_new(worker, NULL), *args = json_array(), *results = NULL;
	json_t *opts = json_pack("{s:O, s:i}", "hosts", hosts, "workers", j);
	herd_error *err = NULL;
	herd_pool *p = NULL;
	double rate = -1;
	uint64_t t0;

	for (int i = 0; i < n; i++)
		json_array_append(args, arg);
	if (herd_pool_new(spawn, opts, &p, &err) < 0) {
		fprintf(stderr, "pool: %s\n", err ? herd_error_message(err) : "failed");
	} else {
		/* Every worker up before the clock starts: spawns are measured by "spawn". */
		pid_t pids[1];

		while (herd_pool_worker_pids(p, pids, 0) < herd_pool_size(p) &&
		    herd_pool_process(p) >= 0)
			herd_pool_wait(p, 10000);
		t0 = bench_now_ns();
		if (herd_pool_map(p, function, args, 0, &results) == 0)
			rate = n / ((bench_now_ns() - t0) / 1e9);
	}
	herd_error_unref(err);
	herd_pool_unref(p);
	json_decref(results);
	json_decref(args);
	json_decref(opts);
	json_decref(spawn);
	return rate;
}

static int
run_pool(char **args)
{
	json_t *hosts = json_array(), *first, *arg = json_loads(args[3], JSON_DECODE_ANY, NULL);
	int n = atoi(args[4]), j = atoi(args[5]);
	char *list = strdup(args[0]), *save = NULL;
	double all, one;

	for (char *h = strtok_r(list, ",", &save); h; h = strtok_r(NULL, ",", &save))
		json_array_append_new(hosts, json_string(h));
	free(list);
	first = json_pack("[O]", json_array_get(hosts, 0));
	if (!arg || !first || json_array_size(hosts) == 0)
		return 2;
	one = pool_rate(first, args[1], args[2], arg, n, j);
	all = pool_rate(hosts, args[1], args[2], arg, n, j);
	if (one > 0 && all > 0)
		printf("pool map of %d %s tasks, %d workers a host: %zu hosts %.0f tasks/s, "
		       "1 host %.0f tasks/s, ratio %.2f\n",
		    n, args[2], j, json_array_size(hosts), all, one, all / one);
	json_decref(hosts);
	json_decref(first);
	json_decref(arg);
	return one > 0 && all > 0 ? 0 : 1;
}

int
main(int argc, char **argv)
{
	static const struct bench_mode modes[] = {
		{ "rtt", "HOST WORKER N", 3, run_rtt },
		{ "spawn", "HOST WORKER N", 3, run_spawn },
		{ "pool", "HOSTS WORKER FUNCTION ARG N J", 6, run_pool },
		{ "local-serve", "WORKER", 1, run_local_serve },
		{ NULL },
	};
	static const struct bench_prog prog = { "remote-bench", modes, NULL, NULL };

	return bench_main(&prog, argc, argv);
}
