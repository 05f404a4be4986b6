/* SPDX-License-Identifier: MIT */
/*
 * Workers on other hosts (PROTOCOL.md 9): a master reaches each host of
 * $HERD_REMOTE_HOSTS (comma-separated addresses: ssh://, slurm://, exec:)
 * through a link to `herdd --stdio` there, and gets the same API and the
 * same fate-sharing as on one machine. Without $HERD_REMOTE_HOSTS the hosts
 * are three `exec:` links to $HERDD on this machine, so the link itself is
 * tested everywhere; tests/remote/run-remote.sh brings up the ssh testbed
 * and Slurm and runs this program against them.
 *
 * Every host shares this machine's pids (the testbed's hosts are network and
 * UTS namespaces), so the test watches remote processes by pid.
 */
#include <dlfcn.h>
#include <sched.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>

#include <herd/pool.h>

#include "example-worker.h"
#include "ht-example.h"

#define MAX_HOSTS 8
/* Short heartbeats, so fate-sharing is measured in a test's time. */
#define HB_INTERVAL_MS 100
#define HB_TIMEOUT_MS  1000

static char *hosts[MAX_HOSTS];
static int n_hosts;

/* The hosts under test: $HERD_REMOTE_HOSTS, else three exec: links to $HERDD. */
static void
hosts_load(void)
{
	const char *env = getenv("HERD_REMOTE_HOSTS");
	const char *herdd = getenv("HERDD");
	char *list, *save = NULL, *h;

	if (env && *env) {
		list = strdup(env);
		for (h = strtok_r(list, ",", &save); h && n_hosts < MAX_HOSTS;
		     h = strtok_r(NULL, ",", &save))
			hosts[n_hosts++] = strdup(h);
		free(list);
		return;
	}
	for (int i = 0; i < 3 && herdd; i++)
		if (asprintf(&hosts[n_hosts], "exec:HERD_TEST_HOST=h%d exec %s --stdio", i + 1,
		        herdd) > 0)
			n_hosts++;
}

static json_t *
short_heartbeats(void)
{
	return json_pack("{s:i, s:i}", "heartbeat_interval_ms", HB_INTERVAL_MS,
	    "heartbeat_timeout_ms", HB_TIMEOUT_MS);
}

/* A master on host i with settings (borrowed), or the test fails. */
static herd_master *
remote_master_with(int i, json_t *settings)
{
	herd_error *err = NULL;
	herd_master *m = NULL;
	int r;

	r = herd_master_connect(hosts[i], settings, &m, &err);
	ck_assert_msg(r == 0, "master on %s: %s (%s)", hosts[i], strerror(-r),
	    err ? herd_error_message(err) : "-");
	herd_error_unref(err);
	return m;
}

/* A master on host i with short heartbeats, or the test fails. */
static herd_master *
remote_master_ok(int i)
{
	json_t *settings = short_heartbeats();
	herd_master *m = remote_master_with(i, settings);

	json_decref(settings);
	return m;
}

/* A connection to w, or the test fails. */
static herd_conn *
worker_connect_ok(herd_worker *w)
{
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	int r = herd_worker_connect(w, NULL, &conn, &err);

	ck_assert_msg(r == 0, "connect to %s: %s (%s)", herd_worker_socket(w), strerror(-r),
	    err ? herd_error_message(err) : "-");
	herd_error_unref(err);
	return conn;
}

/* A call whose integer result must be want. */
static void
call_int_ok(herd_conn *conn, const char *fn, json_t *args, json_int_t want)
{
	json_t *result = NULL;
	int r = herd_call(conn, fn, args, HT_USEC(10000), &result);

	ck_assert_msg(r == 0, "%s: %s", fn, strerror(-r));
	ck_assert_msg(json_integer_value(result) == want, "%s gave %s, not %lld", fn,
	    ht_dump(result), (long long)want);
	json_decref(result);
	json_decref(args);
}

/* Every function kind on one remote worker, with exact results. */
static void
kinds_ok(herd_conn *conn)
{
	json_t *result = NULL, *item = NULL, *args;
	herd_stream *s = NULL;
	herd_sink *k = NULL;
	int r, n = 0;

	call_int_ok(conn, "sum", json_pack("{s:i}", "n", 42), 861);
	call_int_ok(conn, "product", json_pack("{s:i}", "n", 10), 3628800);
	/* oneway, then a call on the same connection sees its effect */
	args = json_pack("{s:s}", "text", "hello");
	ck_assert_int_eq(herd_oneway(conn, "note", args), 0);
	json_decref(args);
	ck_assert_int_eq(herd_call(conn, "notes", NULL, HT_USEC(10000), &result), 0);
	ck_assert_str_eq(ht_dump(result), "[\"hello\"]");
	json_decref(result);
	/* pipe: items 0..99 in order, then the final result */
	args = json_pack("{s:i}", "n", 100);
	ck_assert_int_eq(herd_stream_open(conn, "count", args, NULL, NULL, NULL, &s), 0);
	json_decref(args);
	while ((r = herd_stream_next(s, HT_USEC(10000), &item)) > 0) {
		ck_assert_int_eq(json_integer_value(item), n++);
		json_decref(item);
	}
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(n, 100);
	result = herd_stream_result(s);
	ck_assert_int_eq(json_integer_value(json_object_get(result, "count")), 100);
	herd_stream_unref(s);
	/* sink: 1..1000 summed on the worker */
	ck_assert_int_eq(herd_sink_open(conn, "sum_stream", NULL, &k), 0);
	for (int i = 1; i <= 1000; i++) {
		item = json_integer(i);
		r = herd_sink_send(k, item);
		if (r == -ENOBUFS) {
			ck_assert_int_eq(herd_conn_flush(conn, HT_USEC(10000)), 0);
			r = herd_sink_send(k, item);
		}
		ck_assert_int_eq(r, 0);
		json_decref(item);
	}
	ck_assert_int_eq(herd_sink_finish(k, HT_USEC(10000), &result), 0);
	ck_assert_int_eq(json_integer_value(result), 500500);
	json_decref(result);
	herd_sink_unref(k);
}

START_TEST(test_kinds_on_every_host)
{
	herd_master *m[MAX_HOSTS];
	herd_worker *w[MAX_HOSTS];
	herd_conn *c[MAX_HOSTS];

	for (int i = 0; i < n_hosts; i++) {
		m[i] = remote_master_ok(i);
		w[i] = ht_herd_spawn_ok(m[i], "HERD_EXAMPLE_WORKER", NULL);
		c[i] = worker_connect_ok(w[i]);
	}
	for (int i = 0; i < n_hosts; i++)
		kinds_ok(c[i]);
	/* list and shutdown go to the herdd on that host */
	for (int i = 0; i < n_hosts; i++) {
		json_t *list = NULL, *record = NULL, *first;

		ck_assert_int_eq(herd_master_list(m[i], false, &list), 0);
		ck_assert_int_eq(json_array_size(json_object_get(list, "workers")), 1);
		first = json_array_get(json_object_get(list, "workers"), 0);
		ck_assert_str_eq(ht_str(first, "id"), herd_worker_id(w[i]));
		ck_assert_int_eq(ht_worker_pid(first), herd_worker_pid(w[i]));
		json_decref(list);
		herd_conn_unref(c[i]);
		c[i] = NULL;
		ck_assert_int_eq(herd_master_shutdown(m[i], herd_worker_id(w[i]), 0, &record), 0);
		ck_assert_str_eq(ht_str(record, "state"), "exited");
		json_decref(record);
	}
	/* The master closes: nothing is left on the far side, herdd included. */
	for (int i = 0; i < n_hosts; i++) {
		pid_t pid = herd_worker_pid(w[i]);
		pid_t herdd = (pid_t)json_integer_value(
		    json_object_get(herd_master_get_server_info(m[i]), "pid"));

		ht_track_pid(herdd);
		herd_conn_unref(c[i]);
		herd_worker_unref(w[i]);
		herd_master_unref(m[i]);
		ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(5000)), 0);
		ck_assert_int_eq(ht_wait_pid_gone(herdd, ht_ms(5000)), 0);
	}
}
END_TEST

/* ---- fate-sharing ---- */

/* What a doomed master (fate_master) reports: per host its worker, its herdd, its launcher. */
struct fate {
	pid_t master;
	pid_t worker[MAX_HOSTS];
	pid_t herdd[MAX_HOSTS];
	pid_t launcher[MAX_HOSTS];
};

static int fate_pipe[2];

/*
 * A master in a child process: one worker on every host, whose pids (and
 * each remote herdd's) it writes to fate_pipe; then it waits to be killed.
 */
static int
fate_master(void *arg)
{
	json_t *settings = short_heartbeats();
	pid_t pids[2 * MAX_HOSTS];

	for (int i = 0; i < n_hosts; i++) {
		json_t *opts = herd_spawn_opts_new(getenv("HERD_EXAMPLE_WORKER"), NULL);
		herd_master *m = NULL;
		herd_worker *w = NULL;

		if (herd_master_connect(hosts[i], settings, &m, NULL) < 0 ||
		    herd_master_spawn(m, opts, 0, &w) < 0)
			return 1;
		pids[2 * i] = herd_worker_pid(w);
		pids[2 * i + 1] = (pid_t)json_integer_value(
		    json_object_get(herd_master_get_server_info(m), "pid"));
		json_decref(opts);
		/* m and w stay: this process is to die holding them. */
	}
	if (write(fate_pipe[1], pids, sizeof(pid_t) * 2 * (size_t)n_hosts) < 0)
		return 1;
	for (;;)
		pause();
}

/* Starts fate_master and learns its pids; its launchers are its children. */
static void
fate_start(struct fate *f)
{
	pid_t pids[2 * MAX_HOSTS], kids[MAX_HOSTS + 4];
	int n;

	ck_assert_int_eq(pipe2(fate_pipe, O_CLOEXEC), 0);
	f->master = ht_fork_fn(fate_master, NULL, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(f->master, 0);
	close(fate_pipe[1]);
	ck_assert_int_eq(ht_read_pids(fate_pipe[0], pids, 2 * n_hosts, ht_ms(30000)), 2 * n_hosts);
	close(fate_pipe[0]);
	for (int i = 0; i < n_hosts; i++) {
		f->worker[i] = pids[2 * i];
		f->herdd[i] = pids[2 * i + 1];
		ht_track_pid(f->worker[i]);
		ht_track_pid(f->herdd[i]);
		ck_assert(ht_pid_alive(f->worker[i]));
	}
	n = ht_list_children(f->master, kids, MAX_HOSTS + 4);
	ck_assert_int_eq(n, n_hosts);
	for (int i = 0; i < n; i++) {
		f->launcher[i] = kids[i];
		ht_track_pid(kids[i]);
	}
}

/* Waits until every remote worker and herdd is gone; returns the time it took since t0. */
static int64_t
fate_all_gone(const struct fate *f, int64_t t0, int timeout_ms)
{
	for (int i = 0; i < n_hosts; i++) {
		ck_assert_msg(ht_wait_pid_gone(f->worker[i], timeout_ms) == 0,
		    "worker %d on %s still runs", (int)f->worker[i], hosts[i]);
		ck_assert_msg(ht_wait_pid_gone(f->herdd[i], timeout_ms) == 0,
		    "herdd %d on %s still runs", (int)f->herdd[i], hosts[i]);
	}
	return ht_now_ms() - t0;
}

/* What a fate test SIGKILLs: the master, each launcher, or each launcher's process group. */
enum victim { VICTIM_MASTER, VICTIM_LAUNCHER, VICTIM_LAUNCHER_GROUP };

/* Kills the victim of a doomed master and measures until nothing is left on the far side. */
static void
fate_kill(enum victim v, const char *what, int timeout_ms)
{
	struct fate f;
	int64_t t0, took;

	fate_start(&f);
	t0 = ht_now_ms();
	if (v == VICTIM_MASTER)
		ck_assert_int_eq(kill(f.master, SIGKILL), 0);
	for (int i = 0; v != VICTIM_MASTER && i < n_hosts; i++)
		ck_assert_int_eq(
		    kill(v == VICTIM_LAUNCHER ? f.launcher[i] : -f.launcher[i], SIGKILL), 0);
	took = fate_all_gone(&f, t0, timeout_ms);
	printf("%s SIGKILLed: every remote worker and herdd gone after %lld ms (timeout %d)\n",
	    what, (long long)took, HB_TIMEOUT_MS);
}

START_TEST(test_master_killed)
{
	fate_kill(VICTIM_MASTER, "master", ht_ms(HB_TIMEOUT_MS));
}
END_TEST

START_TEST(test_launcher_killed)
{
	fate_kill(VICTIM_LAUNCHER, "launchers", ht_ms(HB_TIMEOUT_MS));
}
END_TEST

/*
 * The launcher's whole process group SIGKILLed: srun with its helper, which
 * leaves the Slurm task running. The far side must end by itself: EOF, or
 * silence past the heartbeat timeout.
 */
START_TEST(test_launcher_group_killed)
{
	fate_kill(VICTIM_LAUNCHER_GROUP, "launchers' process groups", ht_ms(HB_TIMEOUT_MS + 1000));
}
END_TEST

/* A remote herdd SIGKILLed: its master hears host_lost for its worker, and the worker goes. */
START_TEST(test_remote_herdd_killed)
{
	struct ht_failures fails[MAX_HOSTS] = { { 0 } };
	herd_master *m[MAX_HOSTS];
	herd_worker *w[MAX_HOSTS];
	int64_t t0;

	for (int i = 0; i < n_hosts; i++) {
		m[i] = remote_master_ok(i);
		ck_assert_int_eq(herd_master_on_failure(m[i], ht_on_failure, &fails[i]), 0);
		w[i] = ht_herd_spawn_ok(m[i], "HERD_EXAMPLE_WORKER", NULL);
	}
	t0 = ht_now_ms();
	for (int i = 0; i < n_hosts; i++) {
		pid_t herdd = (pid_t)json_integer_value(
		    json_object_get(herd_master_get_server_info(m[i]), "pid"));

		ck_assert_int_gt(herdd, 0);
		ck_assert_msg(
		    kill(herdd, SIGKILL) == 0, "herdd %d of %s: %m", (int)herdd, hosts[i]);
	}
	for (int i = 0; i < n_hosts; i++) {
		/* The launcher may outlive its herdd (srun does): then silence tells. */
		ht_wait_failure(m[i], &fails[i], ht_ms(HB_TIMEOUT_MS + 1000));
		ck_assert_int_eq(fails[i].n, 1);
		ck_assert_str_eq(fails[i].event, "host_lost");
		ck_assert_str_eq(fails[i].id, herd_worker_id(w[i]));
		ck_assert_int_eq(ht_wait_pid_gone(herd_worker_pid(w[i]), ht_ms(HB_TIMEOUT_MS)), 0);
	}
	printf("remote herdds SIGKILLed: on_failure host_lost on every master after %lld ms\n",
	    (long long)(ht_now_ms() - t0));
	for (int i = 0; i < n_hosts; i++) {
		herd_worker_unref(w[i]);
		herd_master_unref(m[i]);
	}
}
END_TEST

/* A remote worker crashes: on_failure says crashed, with the signal and its stderr tail. */
START_TEST(test_remote_worker_crash)
{
	struct ht_failures f = { 0 };
	herd_master *m = remote_master_ok(0);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	herd_conn *c = worker_connect_ok(w);
	json_t *args = json_pack("{s:s}", "message", "about to crash");

	ck_assert_int_eq(herd_master_on_failure(m, ht_on_failure, &f), 0);
	ck_assert_int_eq(herd_call(c, "log", args, HT_USEC(10000), NULL), 0);
	json_decref(args);
	ck_assert_int_eq(kill(herd_worker_pid(w), SIGABRT), 0);
	ht_wait_failure(m, &f, ht_ms(5000));
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.event, "crashed");
	ck_assert_str_eq(ht_str(f.worker, "signal"), "SIGABRT");
	ck_assert_msg(
	    ht_lines_contain(f.tail, "about to crash"), "stderr tail %s", ht_dump(f.tail));
	herd_conn_unref(c);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* Items a stalled stream would send: tens of MB, far more than the link may hold for it. */
#define STALL_ITEMS 600000
/* What the link may hold for a channel that stops reading (its window, a message, slack). */
#define STALL_MAX_GROWTH_KIB (16 * 1024)

/*
 * One connection stops reading while another keeps calling through the same
 * link: each channel has its own window (PROTOCOL.md 9.2), so the stalled
 * one stops only its own worker, the other's calls all complete, and the
 * link's memory on both sides stays bounded. Then the stalled stream is
 * read to its end, every item in order.
 */
START_TEST(test_stalled_channel)
{
	/*
	 * Long heartbeats: reading the stream back never waits, and only a wait
	 * sends the master's heartbeats, while a slow build on a loaded machine
	 * reads for more than the default 10 s (then herdd drops the master).
	 */
	json_t *settings = json_pack("{s:i}", "heartbeat_timeout_ms", 120000);
	herd_master *m = remote_master_with(0, settings);
	herd_worker *wa = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	herd_worker *wb = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	herd_conn *ca = worker_connect_ok(wa), *cb = worker_connect_ok(wb);
	pid_t herdd =
	    (pid_t)json_integer_value(json_object_get(herd_master_get_server_info(m), "pid"));
	json_t *args = json_pack("{s:i}", "n", STALL_ITEMS), *item = NULL;
	long rss0 = ht_pid_rss_kib(getpid()), far0 = ht_pid_rss_kib(herdd), rss1, far1;
	int64_t t0 = ht_now_ms(), took;
	herd_stream *s = NULL;
	int calls = 0, r;
	json_int_t n = 0;

	ck_assert_int_eq(herd_stream_open(ca, "count", args, NULL, NULL, NULL, &s), 0);
	json_decref(args);
	json_decref(settings);
	/* ca is never processed meanwhile: its items pile up as far as the link lets them. */
	while (calls < 2000 || ht_now_ms() - t0 < 1000) {
		call_int_ok(
		    cb, "sum", json_pack("{s:i}", "n", calls), (json_int_t)calls * (calls - 1) / 2);
		calls++;
	}
	took = ht_now_ms() - t0;
	rss1 = ht_pid_rss_kib(getpid());
	far1 = ht_pid_rss_kib(herdd);
	printf("stalled channel: %d calls on another channel of the link in %lld ms; memory grew "
	       "%ld KiB here, %ld KiB in the remote herdd\n",
	    calls, (long long)took, rss1 - rss0, far1 - far0);
#ifdef __SANITIZE_ADDRESS__
	/* ASan's quarantine keeps the calls' freed memory resident: the plain build checks it. */
	printf("stalled channel: memory bound not checked under AddressSanitizer\n");
#else
	ck_assert_int_lt(rss1 - rss0, STALL_MAX_GROWTH_KIB);
	ck_assert_int_lt(far1 - far0, STALL_MAX_GROWTH_KIB);
#endif
	while ((r = herd_stream_next(s, HT_USEC(10000), &item)) > 0) {
		ck_assert_int_eq(json_integer_value(item), n++);
		json_decref(item);
	}
	ck_assert_msg(r == 0, "stream after %lld items: %s (%s)", (long long)n, strerror(-r),
	    herd_stream_error(s) ? herd_error_message(herd_stream_error(s)) : "-");
	ck_assert_int_eq(n, STALL_ITEMS);
	printf("stalled channel read afterwards: %d items in order, %lld ms\n", STALL_ITEMS,
	    (long long)(ht_now_ms() - t0 - took));
	herd_stream_unref(s);
	herd_conn_unref(ca);
	herd_conn_unref(cb);
	herd_worker_unref(wa);
	herd_worker_unref(wb);
	herd_master_unref(m);
}
END_TEST

/* The path herdd ran w from (its WORKER record's), malloc'd. */
static char *
worker_path(herd_master *m, herd_worker *w)
{
	json_t *rec = NULL, *worker;
	char *path;

	ck_assert_int_eq(herd_master_inspect(m, herd_worker_id(w), &rec), 0);
	worker = json_object_get(rec, "worker") ? json_object_get(rec, "worker") : rec;
	ck_assert_ptr_nonnull(ht_str(worker, "path"));
	path = strdup(ht_str(worker, "path"));
	json_decref(rec);
	return path;
}

/* A copy of $HERD_EXAMPLE_WORKER with bytes of this run appended: a hash never shipped before. */
static void
unique_worker(char *exe, size_t size)
{
	char dir[128], buf[65536], tag[64];
	int in, out;
	ssize_t n;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(exe, size, "%s/worker", dir);
	in = open(getenv("HERD_EXAMPLE_WORKER"), O_RDONLY | O_CLOEXEC);
	out = open(exe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	ck_assert(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
	n = snprintf(
	    tag, sizeof(tag), "\nherd test %d %lld\n", (int)getpid(), (long long)ht_now_ms());
	ck_assert_int_eq(write(out, tag, (size_t)n), n);
	close(in);
	close(out);
}

/*
 * "ship": the first spawn copies the executable into the host's cache under
 * its hash, the second runs the same copy, and a cached copy that was
 * changed is refused.
 */
START_TEST(test_ship_executable)
{
	herd_master *m = remote_master_ok(0);
	herd_worker *w1 = NULL, *w2 = NULL, *w3 = NULL;
	char exe[192], libdir[4096], *cached, *again;
	Dl_info lib;
	struct stat st1, st2;
	herd_conn *c;
	json_t *opts;
	int fd;

	unique_worker(exe, sizeof(exe));
	opts = herd_spawn_opts_new(exe, NULL);
	json_object_set_new(opts, "ship", json_true());
	/* The copy runs from the cache: the build's libherd is no longer at $ORIGIN/../.. */
	ck_assert_int_ne(dladdr((void *)herd_master_connect, &lib), 0);
	*strrchr(strcpy(libdir, lib.dli_fname), '/') = '\0';
	json_object_set_new(opts, "env", json_pack("{s:s}", "LD_LIBRARY_PATH", libdir));
	ck_assert_msg(herd_master_spawn(m, opts, 0, &w1) == 0, "spawn: %s",
	    herd_error_message(herd_master_last_error(m)));
	ht_track_pid(herd_worker_pid(w1));
	cached = worker_path(m, w1);
	ck_assert_str_ne(cached, exe);
	ck_assert_uint_eq(strlen(strrchr(cached, '/') + 1), 64);
	ck_assert_int_eq(stat(cached, &st1), 0);
	c = worker_connect_ok(w1);
	call_int_ok(c, "sum", json_pack("{s:i}", "n", 42), 861);
	herd_conn_unref(c);
	/* The second spawn finds the copy: nothing is written again. */
	ck_assert_int_eq(herd_master_spawn(m, opts, 0, &w2), 0);
	ht_track_pid(herd_worker_pid(w2));
	again = worker_path(m, w2);
	ck_assert_str_eq(again, cached);
	ck_assert_int_eq(stat(cached, &st2), 0);
	ck_assert_int_eq(st1.st_ino, st2.st_ino);
	ck_assert_int_eq(st1.st_mtim.tv_nsec, st2.st_mtim.tv_nsec);
	/* A changed copy no longer matches its hash: refused, not run. */
	ck_assert_int_eq(herd_master_shutdown(m, herd_worker_id(w1), 0, NULL), 0);
	ck_assert_int_eq(herd_master_shutdown(m, herd_worker_id(w2), 0, NULL), 0);
	/* Writable once neither runs it (ETXTBSY), which a slow exit (ASan) delays. */
	ck_assert_int_eq(ht_wait_pid_gone(herd_worker_pid(w1), ht_ms(5000)), 0);
	ck_assert_int_eq(ht_wait_pid_gone(herd_worker_pid(w2), ht_ms(5000)), 0);
	fd = open(cached, O_WRONLY | O_APPEND | O_CLOEXEC);
	ck_assert_msg(fd >= 0, "%s: %m", cached);
	ck_assert_int_eq(write(fd, "x", 1), 1);
	close(fd);
	ck_assert_int_eq(herd_master_spawn(m, opts, 0, &w3), -EREMOTEIO);
	ck_assert_str_eq(herd_error_name(herd_master_last_error(m)), "spawn_failed");
	ck_assert_msg(strstr(herd_error_message(herd_master_last_error(m)), "refused"), "%s",
	    herd_error_message(herd_master_last_error(m)));
	ck_assert_int_eq(unlink(cached), 0);
	free(cached);
	free(again);
	json_decref(opts);
	herd_worker_unref(w1);
	herd_worker_unref(w2);
	herd_master_unref(m);
}
END_TEST

/*
 * ssh:// makes the command line git's GIT_SSH_COMMAND users expect: a fake
 * ssh in $HERD_SSH_COMMAND (with an option of its own, split by the shell)
 * records its arguments and runs the remote command here.
 */
START_TEST(test_ssh_command_line)
{
	char dir[128], fake[192], args[256], address[512], cmd[512];
	const char *herdd = getenv("HERDD");
	herd_error *err = NULL;
	herd_master *m = NULL;
	char *got;
	int r;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(fake, sizeof(fake), "%s/fake-ssh", dir);
	snprintf(args, sizeof(args), "%s/args", dir);
	/* The remote command is the last argument, as ssh hands it to the remote shell. */
	r = ht_write_file(fake, 0755,
	    "#!/bin/sh\necho \"$*\" > %s\nfor a; do last=$a; done\nexec sh -c \"$last\"\n", args);
	ck_assert_int_eq(r, 0);
	snprintf(cmd, sizeof(cmd), "%s -F my_config", fake);
	ck_assert_int_eq(setenv("HERD_SSH_COMMAND", cmd, 1), 0);
	snprintf(address, sizeof(address), "ssh://me@somehost:2222%s", herdd);
	r = herd_master_connect(address, NULL, &m, &err);
	ck_assert_msg(r == 0, "%s", err ? herd_error_message(err) : strerror(-r));
	got = ht_read_file(args, NULL);
	ck_assert_ptr_nonnull(got);
	snprintf(cmd, sizeof(cmd), "-F my_config -p 2222 -l me -- somehost %s --stdio\n", herdd);
	ck_assert_str_eq(got, cmd);
	free(got);
	herd_master_unref(m);
	unsetenv("HERD_SSH_COMMAND");
}
END_TEST

/* Runs the ssh testbed's script with verb and host 1 ("cut 1", "heal 1"). */
static void
testbed_ok(const char *verb)
{
	const char *argv[] = { getenv("HERD_TESTBED_SSH"), verb, "1", NULL };

	ck_assert_msg(
	    ht_run(argv, NULL, NULL, ht_ms(30000)) == 0, "ssh-hosts.sh %s 1 failed", verb);
}

/*
 * Each test starts with host 1's link up: a cut test that failed (Check
 * ends it at once, without its teardown) must not leave it cut for the rest.
 */
static void
remote_setup(void)
{
	ht_client_setup();
	if (getenv("HERD_TESTBED_SSH"))
		testbed_ok("heal");
}

/*
 * Host 1's network cut: no EOF arrives on either side, so only heartbeats
 * tell. The master hears host_lost, and the far side stops its worker and
 * exits, each within the heartbeat timeout of the last byte it got.
 */
START_TEST(test_network_cut)
{
	struct ht_failures f = { 0 };
	herd_master *m;
	herd_worker *w;
	pid_t herdd;
	int64_t t0, master_ms, far_ms;

	if (!getenv("HERD_TESTBED_SSH")) {
		printf("network cut: skipped (no ssh testbed: HERD_TESTBED_SSH is unset)\n");
		return;
	}
	m = remote_master_ok(0);
	ck_assert_int_eq(herd_master_on_failure(m, ht_on_failure, &f), 0);
	w = ht_herd_spawn_ok(m, "HERD_EXAMPLE_WORKER", NULL);
	herdd = (pid_t)json_integer_value(json_object_get(herd_master_get_server_info(m), "pid"));
	ht_track_pid(herdd);
	testbed_ok("cut");
	t0 = ht_now_ms();
	ht_wait_failure(m, &f, ht_ms(HB_TIMEOUT_MS + 1000));
	master_ms = ht_now_ms() - t0;
	ck_assert_int_eq(f.n, 1);
	ck_assert_str_eq(f.event, "host_lost");
	ck_assert_int_eq(ht_wait_pid_gone(herd_worker_pid(w), ht_ms(HB_TIMEOUT_MS + 1000)), 0);
	ck_assert_int_eq(ht_wait_pid_gone(herdd, ht_ms(HB_TIMEOUT_MS + 1000)), 0);
	far_ms = ht_now_ms() - t0;
	testbed_ok("heal");
	printf("network cut: the master heard host_lost after %lld ms, the far side's worker and "
	       "herdd were gone after %lld ms (timeout %d)\n",
	    (long long)master_ms, (long long)far_ms, HB_TIMEOUT_MS);
	/* The timeout runs from the last byte, before the cut; the margin is for a loaded CI. */
	ck_assert_int_le(master_ms, ht_ms(HB_TIMEOUT_MS + 500));
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/*
 * A master SIGKILLed while host 1's network is cut: no EOF can reach that
 * host's ssh, which would wait minutes for TCP to give up. Its launchers
 * die with it all the same (PR_SET_PDEATHSIG), at once.
 */
START_TEST(test_master_killed_in_cut)
{
	struct fate f;
	int64_t t0, took;

	if (!getenv("HERD_TESTBED_SSH")) {
		printf("master killed in a cut: skipped (no ssh testbed: HERD_TESTBED_SSH is "
		       "unset)\n");
		return;
	}
	fate_start(&f);
	testbed_ok("cut");
	t0 = ht_now_ms();
	ck_assert_int_eq(kill(f.master, SIGKILL), 0);
	for (int i = 0; i < n_hosts; i++)
		ck_assert_msg(ht_wait_pid_gone(f.launcher[i], ht_ms(1000)) == 0,
		    "launcher %d of the killed master still runs", (int)f.launcher[i]);
	took = ht_now_ms() - t0;
	/* The far side of the cut ends by its heartbeat timeout. */
	fate_all_gone(&f, t0, ht_ms(HB_TIMEOUT_MS + 1000));
	testbed_ok("heal");
	printf("master SIGKILLed with %s cut: its launchers gone after %lld ms\n", hosts[0],
	    (long long)took);
}
END_TEST

/* ---- pools over hosts ---- */

#define POOL_WORKERS_PER_HOST 2

/* The "hosts" option over every host of the test, two workers each. */
static json_t *
pool_hosts(void)
{
	json_t *a = json_array();

	for (int i = 0; i < n_hosts; i++)
		json_array_append_new(a,
		    json_pack("{s:s, s:i}", "address", hosts[i], "workers", POOL_WORKERS_PER_HOST));
	return a;
}

struct map_watch;
static void pool_hosts_back_ok(herd_pool *p, struct map_watch *w, int timeout_ms);

/* A pool of the example worker over every host, or the test fails. */
static herd_pool *
remote_pool_ok(void)
{
	json_t *spawn = json_pack("{s:s}", "path", getenv("HERD_EXAMPLE_WORKER"));
	json_t *opts = json_pack("{s:o, s:o, s:s}", "hosts", pool_hosts(), "settings",
	    short_heartbeats(), "name", "remote-pool");
	herd_error *err = NULL;
	herd_pool *p = NULL;
	int r = herd_pool_new(spawn, opts, &p, &err);

	ck_assert_msg(r == 0, "pool: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	ck_assert_int_eq(herd_pool_size(p), POOL_WORKERS_PER_HOST * n_hosts);
	/* A host that did not answer in time (a Slurm step queued) is retried: wait for it. */
	pool_hosts_back_ok(p, NULL, ht_ms(30000));
	herd_error_unref(err);
	json_decref(spawn);
	json_decref(opts);
	return p;
}

/*
 * A map's watch: its input ({"n":0..}: n tasks, and with until_lost as
 * many more as it takes for the pool to see a host lost, then 1000), what
 * its task callback saw, and the blow (act) it strikes after kill_at results.
 */
struct map_watch {
	herd_pool *p;
	size_t n, fed, fed_at_loss;
	bool until_lost;
	size_t seen, kill_at;
	void (*act)(struct map_watch *w);
	pid_t herdd;
	int64_t t_kill, t_noticed, t_back;
};

static json_t *
map_watch_next(void *ud)
{
	struct map_watch *w = ud;

	if (w->until_lost && !w->fed_at_loss && herd_pool_hosts_lost(w->p) > 0)
		w->fed_at_loss = w->fed;
	if (w->fed >= w->n &&
	    (!w->until_lost || (w->fed_at_loss && w->fed >= w->fed_at_loss + 1000)))
		return NULL;
	return json_pack("{s:I}", "n", (json_int_t)w->fed++);
}

/* SIGKILLs the pool's first host's herdd. */
static void
kill_herdd(struct map_watch *w)
{
	ck_assert_int_eq(kill(w->herdd, SIGKILL), 0);
}

/* Results in input order, each exact (sum of 0..i-1); kills the herdd at kill_at. */
static void
map_watch_task(herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *ud)
{
	struct map_watch *w = ud;

	ck_assert_msg(r == 0, "task %zu: %s", index, err ? herd_error_message(err) : "-");
	ck_assert_uint_eq(index, w->seen);
	ck_assert_int_eq(
	    json_integer_value(result), (json_int_t)index * ((json_int_t)index - 1) / 2);
	if (++w->seen == w->kill_at && w->act) {
		w->act(w);
		w->t_kill = ht_now_ms();
	}
	if (w->t_kill && !w->t_noticed && herd_pool_hosts_lost(w->p) > 0)
		w->t_noticed = ht_now_ms();
	if (w->t_noticed && !w->t_back && herd_pool_hosts_up(w->p) == n_hosts)
		w->t_back = ht_now_ms();
}

/* sum over w's input on the pool: every result exact and seen once, in order. */
static void
pool_map_ok(herd_pool *p, struct map_watch *w)
{
	herd_job *job = NULL;
	int r;

	w->p = p;
	ck_assert_int_eq(herd_job_new(p, HERD_JOB_MAP, "sum", &job), 0);
	ck_assert_int_eq(herd_job_set_iter(job, map_watch_next, w), 0);
	ck_assert_int_eq(herd_job_on_task(job, map_watch_task, w), 0);
	r = herd_job_wait(job, HT_USEC(60000), NULL);
	ck_assert_msg(r == 0, "map: %s (%s)", strerror(-r),
	    herd_job_error(job) ? herd_error_message(herd_job_error(job)) : "-");
	ck_assert_uint_eq(w->seen, w->fed);
	ck_assert_uint_ge(w->seen, w->n);
	herd_job_unref(job);
}

/* Runs the pool until every host is up (w->t_back, unless w is NULL or the map saw it). */
static void
pool_hosts_back_ok(herd_pool *p, struct map_watch *w, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	while (herd_pool_hosts_up(p) < n_hosts && ht_now_ms() < deadline) {
		ck_assert_int_ge(herd_pool_process(p), 0);
		ck_assert_int_ge(herd_pool_wait(p, 100 * 1000), 0);
	}
	ck_assert_int_eq(herd_pool_hosts_up(p), n_hosts);
	if (w && !w->t_back)
		w->t_back = ht_now_ms();
}

/* A lost host is back in service: a second map over every host; then p is closed and freed. */
static void
pool_map_again_close(herd_pool *p)
{
	struct map_watch w = { .n = 1000 };

	pool_map_ok(p, &w);
	herd_pool_close(p);
	herd_pool_unref(p);
}

/* A pool over every host: workers on each, one map with exact results. */
START_TEST(test_pool_over_hosts)
{
	struct map_watch w = { .n = 3000 };
	herd_pool *p = remote_pool_ok();

	pool_map_ok(p, &w);
	ck_assert_uint_eq(herd_pool_hosts_lost(p), 0);
	herd_pool_close(p);
	herd_pool_unref(p);
}
END_TEST

/*
 * Host 1's herdd SIGKILLed mid-map: its workers are lost together, their
 * tasks run elsewhere, every result is still exact and seen once, the pool
 * counts the lost host and brings it back (a new herdd there).
 */
START_TEST(test_pool_host_killed)
{
	struct map_watch w = { .n = 2000, .until_lost = true, .kill_at = 500, .act = kill_herdd };
	herd_pool *p = remote_pool_ok();
	herd_master *m = herd_pool_get_master(p);

	w.herdd = (pid_t)json_integer_value(json_object_get(herd_master_get_server_info(m), "pid"));
	ck_assert_int_gt(w.herdd, 0);
	ht_track_pid(w.herdd);
	pool_map_ok(p, &w);
	ck_assert_int_ne(w.t_kill, 0);
	ck_assert_int_eq(ht_wait_pid_gone(w.herdd, ht_ms(HB_TIMEOUT_MS + 1000)), 0);
	/* Slurm may hold the node's CPUs until the killed step is cleaned up (KillWait). */
	pool_hosts_back_ok(p, &w, ht_ms(30000));
	ck_assert_uint_ge(herd_pool_hosts_lost(p), 1);
	ck_assert_ptr_nonnull(herd_pool_last_error(p));
	ck_assert_msg(strstr(herd_error_message(herd_pool_last_error(p)), "lost host") != NULL,
	    "last error: %s", herd_error_message(herd_pool_last_error(p)));
	printf("pool: herdd of %s SIGKILLed after %zu results: lost host seen %lld ms later, "
	       "back (all %d hosts up) after %lld ms; map of %zu exact\n",
	    hosts[0], w.kill_at, (long long)(w.t_noticed ? w.t_noticed - w.t_kill : -1), n_hosts,
	    (long long)(w.t_back - w.t_kill), w.seen);
	pool_map_again_close(p);
}
END_TEST

/* Cuts host 1's network (ssh-hosts.sh cut 1). */
static void
cut_host(struct map_watch *w)
{
	testbed_ok("cut");
}

/*
 * Host 1's network cut mid-map: only heartbeats tell. The other hosts
 * carry on while host 1 is retried (each try on a thread, so a connect
 * that hangs stalls nothing); every result is exact, and once the network
 * is back the host rejoins.
 */
START_TEST(test_pool_host_cut)
{
	struct map_watch w = { .n = 2000, .until_lost = true, .kill_at = 500, .act = cut_host };
	herd_pool *p;

	if (!getenv("HERD_TESTBED_SSH")) {
		printf("pool network cut: skipped (no ssh testbed: HERD_TESTBED_SSH is unset)\n");
		return;
	}
	p = remote_pool_ok();
	pool_map_ok(p, &w);
	ck_assert_uint_ge(herd_pool_hosts_lost(p), 1);
	ck_assert_int_lt(herd_pool_hosts_up(p), n_hosts);
	testbed_ok("heal");
	pool_hosts_back_ok(p, &w, ht_ms(20000));
	printf("pool: %s cut after %zu results: lost host seen %lld ms later (heartbeat timeout "
	       "%d ms), map of %zu exact on the other hosts; back %lld ms after the cut, once "
	       "healed\n",
	    hosts[0], w.kill_at, (long long)(w.t_noticed ? w.t_noticed - w.t_kill : -1),
	    HB_TIMEOUT_MS, w.seen, (long long)(w.t_back - w.t_kill));
	pool_map_again_close(p);
}
END_TEST

/* The CPUs pid's affinity allows. */
static unsigned
affinity_cpus(pid_t pid)
{
	cpu_set_t set;

	ck_assert_int_eq(sched_getaffinity(pid, sizeof(set), &set), 0);
	return (unsigned)CPU_COUNT(&set);
}

/* The CPUs a process (a remote herdd: every host shares our pids) may use: affinity, Slurm share. */
static unsigned
pid_cpus(pid_t pid)
{
	char path[64], *env, *e;
	unsigned n = affinity_cpus(pid), slurm;
	size_t len;

	snprintf(path, sizeof(path), "/proc/%d/environ", (int)pid);
	env = ht_read_file(path, &len);
	ck_assert_msg(env, "%s: %m", path);
	/* NUL-separated variables. */
	for (e = env; e < env + len; e += strlen(e) + 1)
		if (sscanf(e, "SLURM_CPUS_ON_NODE=%u", &slurm) == 1 && slurm < n)
			n = slurm;
	free(env);
	return n;
}

/*
 * Host 1's herdd bound to CPU 0 (taskset), where the host's address names
 * its herdd: exec:, and ssh:// through a wrapper on the shared file system.
 */
static char *
host_on_cpu0(int i, const char *dir)
{
	char wrapper[512], *address = NULL;

	if (strncmp(hosts[i], "exec:", 5) == 0) {
		ck_assert_int_gt(
		    asprintf(&address, "exec:exec taskset -c 0 %s --stdio", getenv("HERDD")), 0);
	} else if (strncmp(hosts[i], "ssh://", 6) == 0 && !strchr(hosts[i] + 6, '/')) {
		snprintf(wrapper, sizeof(wrapper), "%s/herdd-cpu0", dir);
		ck_assert_int_eq(ht_write_file(wrapper, 0755,
		                     "#!/bin/sh\nexec taskset -c 0 %s \"$@\"\n", getenv("HERDD")),
		    0);
		ck_assert_int_gt(asprintf(&address, "%s%s", hosts[i], wrapper), 0);
	} else {
		address = strdup(hosts[i]);
	}
	return address;
}

/*
 * A pool over hosts that name no worker count starts on each as many
 * workers as that host's herdd can use, not this machine's CPUs: host 1's
 * herdd is bound to one CPU where its address allows, and over ssh this
 * process to one CPU (the remote herdds, children of sshd, are not).
 */
START_TEST(test_pool_remote_cpus)
{
	json_t *spawn = json_pack("{s:s}", "path", getenv("HERD_EXAMPLE_WORKER"));
	json_t *list = json_array(), *opts, *settings = short_heartbeats();
	char *address[MAX_HOSTS], dir[128];
	unsigned want = 0, cpus[MAX_HOSTS], local;
	struct map_watch w = { .n = 300 };
	herd_master *m[MAX_HOSTS];
	herd_error *err = NULL;
	herd_pool *p = NULL;
	cpu_set_t one;
	int r;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	if (strncmp(hosts[0], "ssh://", 6) == 0) {
		CPU_ZERO(&one);
		CPU_SET(0, &one);
		ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	}
	local = pid_cpus(getpid());
	for (int i = 0; i < n_hosts; i++) {
		address[i] = i == 0 ? host_on_cpu0(0, dir) : strdup(hosts[i]);
		/* The same address in this process shares the pool's link, so the same herdd. */
		r = herd_master_connect(address[i], settings, &m[i], &err);
		ck_assert_msg(
		    r == 0, "master on %s: %s", address[i], err ? herd_error_message(err) : "-");
		cpus[i] = pid_cpus((pid_t)json_integer_value(
		    json_object_get(herd_master_get_server_info(m[i]), "pid")));
		want += cpus[i];
		json_array_append_new(list, json_string(address[i]));
	}
	if (strcmp(address[0], hosts[0]) != 0)
		ck_assert_uint_eq(cpus[0], 1);
	opts =
	    json_pack("{s:o, s:O, s:s}", "hosts", list, "settings", settings, "name", "cpus-pool");
	r = herd_pool_new(spawn, opts, &p, &err);
	ck_assert_msg(r == 0, "pool: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	printf("pool over hosts without counts: %d workers (the hosts' herdds: %u",
	    herd_pool_size(p), cpus[0]);
	for (int i = 1; i < n_hosts; i++)
		printf(" + %u", cpus[i]);
	printf("; this process: %u CPUs)\n", local);
	ck_assert_int_eq(herd_pool_size(p), (int)want);
	pool_map_ok(p, &w);
	herd_pool_close(p);
	herd_pool_unref(p);
	for (int i = 0; i < n_hosts; i++) {
		herd_master_unref(m[i]);
		free(address[i]);
	}
	json_decref(spawn);
	json_decref(opts);
	json_decref(settings);
}
END_TEST

/*
 * A cgroup with a quota of half a CPU (v2 cpu.max, else v1
 * cpu.cfs_quota_us) in dir, or false where this machine does not let us.
 */
static bool
half_cpu_cgroup(char *dir, size_t size)
{
	snprintf(dir, size, "/sys/fs/cgroup/herd-test-%d", (int)getpid());
	if (access("/sys/fs/cgroup/cgroup.subtree_control", W_OK) == 0 && mkdir(dir, 0755) == 0) {
		char path[512];

		snprintf(path, sizeof(path), "%s/cpu.max", dir);
		if (ht_write_file(path, 0, "50000 100000") == 0)
			return true;
		rmdir(dir);
	}
	snprintf(dir, size, "/sys/fs/cgroup/cpu/herd-test-%d", (int)getpid());
	if (mkdir(dir, 0755) == 0) {
		char path[512];

		snprintf(path, sizeof(path), "%s/cpu.cfs_quota_us", dir);
		if (ht_write_file(path, 0, "50000") == 0)
			return true;
		rmdir(dir);
	}
	return false;
}

/* A herdd in a cgroup with a quota of half a CPU says its workers can use one: a pool starts one. */
START_TEST(test_pool_cpu_quota)
{
	struct map_watch w = { .n = 100 };
	char dir[256], *address = NULL;
	herd_error *err = NULL;
	herd_pool *p = NULL;
	json_t *spawn, *opts;
	pid_t herdd;
	int r;

	if (strncmp(hosts[0], "exec:", 5) != 0 || !half_cpu_cgroup(dir, sizeof(dir))) {
		printf("pool on a herdd with a CPU quota: skipped (no exec: hosts, or no cgroup to "
		       "make)\n");
		return;
	}
	spawn = json_pack("{s:s}", "path", getenv("HERD_EXAMPLE_WORKER"));
	ck_assert_int_gt(asprintf(&address, "exec:echo $$ >%s/cgroup.procs && exec %s --stdio", dir,
	                     getenv("HERDD")),
	    0);
	opts = json_pack("{s:[s], s:o}", "hosts", address, "settings", short_heartbeats());
	r = herd_pool_new(spawn, opts, &p, &err);
	ck_assert_msg(r == 0, "pool: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	ck_assert_int_eq(herd_pool_size(p), 1);
	herdd = (pid_t)json_integer_value(
	    json_object_get(herd_master_get_server_info(herd_pool_get_master(p)), "pid"));
	ht_track_pid(herdd);
	pool_map_ok(p, &w);
	printf("pool on a herdd limited to half a CPU (%s): 1 worker, this process %u CPUs\n", dir,
	    affinity_cpus(0));
	herd_pool_close(p);
	herd_pool_unref(p);
	ck_assert_int_eq(ht_wait_pid_gone(herdd, ht_ms(5000)), 0);
	ck_assert_int_eq(rmdir(dir), 0);
	free(address);
	herd_error_unref(err);
	json_decref(spawn);
	json_decref(opts);
}
END_TEST

/* A stand-in srun: notes the node it is asked for, then runs the command (herdd --stdio) here. */
static const char fake_srun[] =
    "#!/bin/sh\n"
    "for a; do case $a in --nodelist=*) echo \"${a#--nodelist=}\" >>\"$HERD_FAKE_SRUN_LOG\";; "
    "esac; done\n"
    "shift $(($# - 2))\n"
    "exec \"$@\"\n";

/*
 * "hosts": ["slurm"] inside an allocation: every node of
 * $SLURM_JOB_NODELIST (bracket ranges with their zero padding), with
 * $SLURM_CPUS_ON_NODE workers each. The real thing runs on the Slurm test
 * bed (map-hosts.sbatch); here a stand-in srun runs each node's herdd on
 * this machine, so the plain suite checks the list and the pool over it.
 */
START_TEST(test_pool_slurm_nodelist)
{
	struct map_watch w = { .n = 300 };
	char dir[256], path[512], log[512], env[1024], *nodes;
	herd_error *err = NULL;
	herd_pool *p = NULL;
	json_t *spawn, *opts;
	int r;

	if (getenv("HERD_REMOTE_HOSTS") || !getenv("HERDD")) {
		printf(
		    "pool over a Slurm nodelist, stand-in srun: skipped (real hosts under test)\n");
		return;
	}
	spawn = json_pack("{s:s}", "path", getenv("HERD_EXAMPLE_WORKER"));
	opts = json_pack("{s:[s]}", "hosts", "slurm");
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/srun", dir);
	snprintf(log, sizeof(log), "%s/nodes", dir);
	ck_assert_int_eq(ht_write_file(path, 0755, "%s", fake_srun), 0);
	snprintf(env, sizeof(env), "%s:%s", dir, getenv("PATH"));
	/* This test runs in a child of its own (check's fork mode): the environment is its own. */
	ck_assert_int_eq(setenv("PATH", env, 1), 0);
	ck_assert_int_eq(setenv("HERD_FAKE_SRUN_LOG", log, 1), 0);
	ck_assert_int_eq(setenv("HERD_REMOTE_HERDD", getenv("HERDD"), 1), 0);
	ck_assert_int_eq(setenv("SLURM_JOB_NODELIST", "x[09-10],y", 1), 0);
	ck_assert_int_eq(setenv("SLURM_CPUS_ON_NODE", "2", 1), 0);
	r = herd_pool_new(spawn, opts, &p, &err);
	ck_assert_msg(r == 0, "pool: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	/* Each node's herdd (run here) says the job's share of the node, within our CPUs. */
	ck_assert_int_eq(herd_pool_size(p), 3 * (int)(affinity_cpus(0) < 2 ? affinity_cpus(0) : 2));
	ck_assert_int_eq(herd_pool_hosts_up(p), 3);
	pool_map_ok(p, &w);
	herd_pool_close(p);
	herd_pool_unref(p);
	nodes = ht_read_file(log, NULL);
	ck_assert_ptr_nonnull(nodes);
	ck_assert_str_eq(nodes, "x09\nx10\ny\n");
	free(nodes);
	herd_error_unref(err);
	json_decref(spawn);
	json_decref(opts);
}
END_TEST

/* A map over "hosts": ["slurm=1"], every node of $SLURM_JOB_NODELIST (the test's slurm:// hosts). */
static void
pool_slurm_nodes_ok(void)
{
	json_t *spawn = json_pack("{s:s}", "path", getenv("HERD_EXAMPLE_WORKER"));
	json_t *opts =
	    json_pack("{s:[s], s:o}", "hosts", "slurm=1", "settings", short_heartbeats());
	struct map_watch w = { .n = 300 };
	herd_error *err = NULL;
	herd_pool *p = NULL;
	int r = herd_pool_new(spawn, opts, &p, &err);

	ck_assert_msg(r == 0, "pool: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	ck_assert_int_eq(herd_pool_size(p), n_hosts);
	pool_hosts_back_ok(p, NULL, ht_ms(30000));
	pool_map_ok(p, &w);
	herd_pool_close(p);
	herd_pool_unref(p);
	herd_error_unref(err);
	json_decref(spawn);
	json_decref(opts);
}

/*
 * On the Slurm test bed, "hosts": ["slurm"] expands $SLURM_JOB_NODELIST
 * with `scontrol show hostnames` (Slurm's own parser) when scontrol is on
 * PATH: a wrapper notes its arguments before it runs the real one. With
 * no scontrol on PATH (only srun there), the parser in libherd does it.
 */
START_TEST(test_pool_slurm_scontrol)
{
	char dir[128], path[512], log[512], *got, *list = NULL, *tmp;
	const char *old_path = getenv("PATH");

	if (strncmp(hosts[0], "slurm://", 8) != 0) {
		printf("nodelist through scontrol: skipped (no Slurm hosts under test)\n");
		return;
	}
	/* The test bed's nodes n1, n2, n3 as Slurm writes them: n[1,2,3]. */
	for (int i = 0; i < n_hosts; i++) {
		unsigned k;

		ck_assert_int_eq(sscanf(hosts[i], "slurm://n%u", &k), 1);
		ck_assert_int_gt(
		    asprintf(&tmp, "%s%s%u", list ? list : "n[", list ? "," : "", k), 0);
		free(list);
		list = tmp;
	}
	ck_assert_int_gt(asprintf(&tmp, "%s]", list), 0);
	free(list);
	list = tmp;
	/* This test runs in a child of its own (check's fork mode): the environment is its own. */
	ck_assert_int_eq(setenv("SLURM_JOB_NODELIST", list, 1), 0);
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/scontrol", dir);
	snprintf(log, sizeof(log), "%s/args", dir);
	ck_assert_int_eq(
	    ht_write_file(path, 0755,
	        "#!/bin/sh\necho \"$*\" >>%s\nPATH='%s' exec scontrol \"$@\"\n", log, old_path),
	    0);
	snprintf(path, sizeof(path), "%s:%s", dir, old_path);
	ck_assert_int_eq(setenv("PATH", path, 1), 0);
	pool_slurm_nodes_ok();
	got = ht_read_file(log, NULL);
	ck_assert_msg(got, "%s: %m", log);
	snprintf(path, sizeof(path), "show hostnames %s\n", list);
	ck_assert_str_eq(got, path);
	free(got);
	printf("nodelist %s through scontrol show hostnames: %d nodes, map exact\n", list, n_hosts);
	/* Without scontrol: PATH holds srun alone. */
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/srun", dir);
	ck_assert_int_eq(ht_run((const char *[]){ "/bin/sh", "-c",
	                            "ln -s \"$(command -v srun)\" \"$0\"", path, NULL },
	                     NULL, NULL, ht_ms(10000)),
	    0);
	ck_assert_int_eq(setenv("PATH", dir, 1), 0);
	pool_slurm_nodes_ok();
	printf("nodelist %s without scontrol on PATH: parsed by libherd, map exact\n", list);
	free(list);
}
END_TEST

/*
 * herdctl map --hosts over every host, two workers each: 100 lines, 100
 * exact results in order (run-remote.sh runs the README's own command on
 * the testbeds).
 */
START_TEST(test_herdctl_map_hosts)
{
	const char *herdctl = getenv("HERDCTL"), *worker = getenv("HERD_TESTWORKER");
	const char *argv[] = { "/bin/sh", "-c", NULL, NULL };
	char *list = NULL, *cmd = NULL, *out = NULL, *err = NULL, *want = NULL, *tmp;
	int r;

	ck_assert_ptr_nonnull(herdctl);
	ck_assert_ptr_nonnull(worker);
	for (int i = 0; i < n_hosts; i++) {
		ck_assert_int_gt(
		    asprintf(&tmp, "%s%s%s=2", list ? list : "", list ? "," : "", hosts[i]), 0);
		free(list);
		list = tmp;
	}
	ck_assert_int_gt(
	    asprintf(&cmd,
	        "seq 1 100 | sed 's/.*/{\"n\":&}/' | \"%s\" map --hosts '%s' -- '%s' sum", herdctl,
	        list, worker),
	    0);
	argv[2] = cmd;
	/* On Slurm each host is a job that may queue behind the last test's steps. */
	r = ht_run(argv, &out, &err, ht_ms(100000));
	ck_assert_msg(r == 0, "herdctl map --hosts: status %d, stderr: %s", r, err ? err : "");
	want = strdup("");
	for (int n = 1; n <= 100; n++) {
		ck_assert_int_gt(asprintf(&tmp, "%s%d\n", want, n * (n - 1) / 2), 0);
		free(want);
		want = tmp;
	}
	ck_assert_str_eq(out, want);
	free(list);
	free(cmd);
	free(out);
	free(err);
	free(want);
}
END_TEST

int
main(int argc, char **argv)
{
	const struct ht_case remote = { .name = "remote",
		.timeout_s = 120,
		.setup = remote_setup,
		.teardown = ht_client_teardown,
		.tests = { test_kinds_on_every_host, test_master_killed, test_launcher_killed,
		    test_launcher_group_killed, test_remote_herdd_killed, test_remote_worker_crash,
		    test_stalled_channel, test_ship_executable, test_network_cut,
		    test_master_killed_in_cut, test_ssh_command_line, test_pool_over_hosts,
		    test_pool_host_killed, test_pool_host_cut, test_pool_remote_cpus,
		    test_pool_cpu_quota, test_pool_slurm_scontrol, test_pool_slurm_nodelist,
		    test_herdctl_map_hosts } };
	int r;

	hosts_load();
	if (n_hosts == 0) {
		fprintf(stderr, "no hosts: set HERD_REMOTE_HOSTS or HERDD\n");
		return 77;
	}
	for (int i = 0; i < n_hosts; i++)
		fprintf(stderr, "host %d: %s\n", i + 1, hosts[i]);
	/*
	 * What a test leaves when Check kills it (its timeout) comes to us, and
	 * ht_run_cases() kills it at the end: nothing may hold meson's pipes.
	 */
	r = ht_become_subreaper();
	if (r < 0)
		fprintf(stderr, "PR_SET_CHILD_SUBREAPER: %s\n", strerror(-r));
	return ht_run_cases("remote", &remote, 1);
}
