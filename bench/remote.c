/* SPDX-License-Identifier: MIT */
/*
 * Workers on another host (PROTOCOL.md 9) beside what the transport costs
 * by itself, over the same launcher:
 *   remote-bench rtt HOST WORKER N     a call's round trip through the link
 *                                      vs a line echoed by `cat` through the
 *                                      same launcher (ssh HOST cat)
 *   remote-bench spawn HOST WORKER N   a remote spawn (link and herdd up) vs
 *                                      the launcher running `true`
 *   remote-bench pool HOSTS WORKER FUNCTION ARG N J
 *                                      a pool map of N tasks (FUNCTION, the
 *                                      JSON ARG each) over every host of the
 *                                      comma-separated HOSTS, J workers each,
 *                                      vs the same pool on the first host only
 * HOST is a host address (ssh://h1); $HERD_SSH_COMMAND applies to both sides.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
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

/*
 * A call's round trip through the link against a line echoed by `cat`
 * through the same launcher, in alternating blocks (the first tenth of
 * each is warm-up), so a busy machine weighs on both alike; the ratio of
 * the medians is the figure.
 */
static int
run_rtt(char **args)
{
	const char *host = args[0];
	int n = atoi(args[2]), fd, status;
	json_t *opts = herd_spawn_opts_new(args[1], NULL), *arg = json_pack("{s:i}", "x", 1);
	struct samples herd = { 0 }, raw = { 0 };
	herd_master *m = NULL;
	herd_worker *w = NULL;
	herd_conn *c = NULL;
	pid_t pid;

	if (herd_master_connect(host, NULL, &m, NULL) < 0 ||
	    herd_master_spawn(m, opts, 0, &w) < 0 || herd_worker_connect(w, NULL, &c, NULL) < 0)
		return 1;
	pid = launch(host, "cat", &fd);
	if (pid < 0)
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
	}
	close(fd);
	waitpid(pid, &status, 0);
	samples_report(&herd, "remote_rtt", "herd_link");
	samples_report(&raw, "remote_rtt", "ssh_cat");
	printf("remote_rtt ratio (p50 herd_link / ssh_cat): %.2f\n",
	    (double)samples_pct(&herd, 50) / (double)samples_pct(&raw, 50));
	samples_free(&herd);
	samples_free(&raw);
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
		{ NULL },
	};
	static const struct bench_prog prog = { "remote-bench", modes, NULL, NULL };

	return bench_main(&prog, argc, argv);
}
