/* SPDX-License-Identifier: MIT */
/*
 * Nothing escapes: a worker whose descendants double-fork and call setsid()
 * loses all of them when the worker, its master or herdd is SIGKILLed, in a
 * cgroup of its own (herdd --cgroup on a scratch cgroup this test makes under
 * the unified hierarchy) and as the init of its own PID namespace. A herdd
 * killed outright leaves its workers' cgroups populated; the next one on the
 * same cgroup kills what it finds and says so. Without a cgroup herdd says it
 * falls back to the tree walk. test_kill_time prints the time to kill a
 * 100-process escaping tree by cgroup and by the tree walk. Each test removes
 * its scratch cgroup; one a failed test left is removed by the next run.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ht-check.h"

#define MAX_TREE 128
/* Descendants each test's worker leaves: escaped ones, plus one attached. */
#define N_ESCAPED 3

/* The scratch cgroup of the running test, or "" when none could be made. */
static char cg[512];

/* The unified hierarchy's mount point (first cgroup2 line of mountinfo), or -ENOENT. */
static int
cg2_mount(char *buf, size_t len)
{
	char line[4096], m[2048];
	FILE *f = fopen("/proc/self/mountinfo", "re");
	int r = -ENOENT;

	if (!f)
		return -errno;
	while (r < 0 && fgets(line, sizeof(line), f)) {
		if (strstr(line, " - cgroup2 ") && sscanf(line, "%*s %*s %*s %*s %2047s", m) == 1 &&
		    access(m, W_OK) == 0) {
			snprintf(buf, len, "%.255s", m);
			r = 0;
		}
	}
	fclose(f);
	return r;
}

static void cg_remove(const char *dir);

/*
 * Removes the scratch cgroups of test processes that are gone: a failed test
 * ends its process before its teardown, and so leaves its cgroup (and any
 * escaped descendant in it) to the next run.
 */
static void
cg_sweep(const char *mnt)
{
	const char *prefix = "herd-test-contain-";
	char path[600];
	struct dirent *e;
	DIR *d = opendir(mnt);
	int pid;

	while (d && (e = readdir(d))) {
		if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 ||
		    sscanf(e->d_name + strlen(prefix), "%d", &pid) != 1 ||
		    (kill(pid, 0) == 0 || errno != ESRCH))
			continue;
		snprintf(path, sizeof(path), "%s/%s", mnt, e->d_name);
		cg_remove(path);
	}
	if (d)
		closedir(d);
}

static void
cg_setup(void)
{
	static int n;
	char mnt[256];

	cg[0] = '\0';
	if (cg2_mount(mnt, sizeof(mnt)) < 0)
		return;
	cg_sweep(mnt);
	snprintf(cg, sizeof(cg), "%s/herd-test-contain-%d-%d", mnt, (int)getpid(), n++);
	ck_assert_msg(mkdir(cg, 0755) == 0, "mkdir %s: %s", cg, strerror(errno));
}

/* 1 while the cgroup at dir holds a process, 0 when empty, -errno. */
static int
cg_populated(const char *dir)
{
	char path[600], text[256];
	int fd, n;

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = (int)read(fd, text, sizeof(text) - 1);
	close(fd);
	text[n > 0 ? n : 0] = '\0';
	return strstr(text, "populated 1") != NULL;
}

/* Waits (poll on cgroup.events, which signals POLLPRI on change) until dir is empty. */
static int
cg_wait_empty(const char *dir, int timeout_ms)
{
	char path[600], text[256];
	int64_t deadline = ht_now_ms() + timeout_ms;
	struct pollfd p = { .events = POLLPRI };
	int r;

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	p.fd = open(path, O_RDONLY | O_CLOEXEC);
	if (p.fd < 0)
		return -errno;
	while ((r = cg_populated(dir)) > 0 && ht_now_ms() < deadline) {
		if (pread(p.fd, text, sizeof(text), 0) < 0)
			break;
		poll(&p, 1, (int)(deadline - ht_now_ms()));
	}
	close(p.fd);
	return r == 0 ? 0 : -ETIMEDOUT;
}

/* Kills everything under dir and removes it, children first. */
static void
cg_remove(const char *dir)
{
	char path[600], sub[900];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/cgroup.kill", dir);
	{
		int fd = open(path, O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			ck_assert_int_eq(write(fd, "1", 1), 1);
			close(fd);
		}
	}
	ck_assert_int_eq(cg_wait_empty(dir, ht_ms(5000)), 0);
	d = opendir(dir);
	while (d && (e = readdir(d))) {
		if (e->d_type == DT_DIR && e->d_name[0] != '.') {
			snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name);
			cg_remove(sub);
		}
	}
	if (d)
		closedir(d);
	ck_assert_msg(rmdir(dir) == 0, "rmdir %s: %s", dir, strerror(errno));
}

static void
cg_teardown(void)
{
	if (cg[0])
		cg_remove(cg);
	cg[0] = '\0';
}

/* herdd with a 300 ms grace, on the scratch cgroup when with_cgroup. */
static struct ht_daemon *
start_herdd(bool with_cgroup)
{
	const char *argv[] = { "--grace-ms", "300", with_cgroup ? "--cgroup" : NULL, cg, NULL };
	struct ht_daemon *d = ht_daemon_start(argv);

	ck_assert_ptr_nonnull(d);
	return d;
}

/* Skips a cgroup test where no writable cgroup v2 exists, saying so. */
#define NEED_CGROUP()                                                                              \
	do {                                                                                       \
		if (!cg[0]) {                                                                      \
			fprintf(stderr, "%s: no writable cgroup v2 mount: skipped\n", __func__);   \
			return;                                                                    \
		}                                                                                  \
	} while (0)

/*
 * Makes the worker at socket leave descendants: n_escaped double-forked in
 * sessions of their own, and one attached child. Adds their pids to tree.
 */
static void
grow_tree(const char *socket, int n_escaped, pid_t *tree, int *n)
{
	json_t *r, *pids, *v;
	size_t i;

	r = ht_worker_call(socket, NULL, "spawn_grandchild",
	    json_pack("{s:i}", "escape", n_escaped), ht_ms(10000));
	pids = json_object_get(ht_assert_result(r), "pids");
	ck_assert_int_eq(json_array_size(pids), n_escaped);
	json_array_foreach(pids, i, v) {
		tree[(*n)++] = (pid_t)json_integer_value(v);
		ht_track_pid(tree[*n - 1]);
	}
	json_decref(r);
	r = ht_worker_call(
	    socket, NULL, "spawn_grandchild", json_pack("{s:b}", "detach", 0), ht_ms(5000));
	tree[(*n)++] = ht_worker_pid(ht_assert_result(r));
	ht_track_pid(tree[*n - 1]);
	json_decref(r);
	for (int k = 0; k < *n; k++)
		ck_assert_msg(ht_pid_alive(tree[k]), "descendant %d is not running", (int)tree[k]);
}

/* Every pid of tree is gone (exited) within timeout_ms. */
static void
assert_tree_gone(const pid_t *tree, int n, int timeout_ms, const char *after)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (int i = 0; i < n; i++) {
		int left = (int)(deadline - ht_now_ms());

		ck_assert_msg(ht_wait_pid_gone(tree[i], left > 0 ? left : 0) == 0,
		    "after %s, pid %d of the tree survived", after, (int)tree[i]);
	}
}

/* Spawns a test worker (pid_namespace if asked) and grows its tree; tree[0] is the worker. */
static json_t *
spawn_tree(struct ht_conn *m, bool pid_ns, int n_escaped, pid_t *tree, int *n)
{
	json_t *res = ht_spawn_ok(
	    m, ht_testworker_params(pid_ns ? json_pack("{s:b}", "pid_namespace", 1) : NULL));

	*n = 0;
	tree[(*n)++] = ht_worker_pid(res);
	grow_tree(ht_str(res, "socket"), n_escaped, tree, n);
	return res;
}

/* The worker's containment as inspect shows it (new reference). */
static json_t *
containment(struct ht_conn *m, const char *id)
{
	json_t *r = ht_call_ok(m, "inspect", json_pack("{s:s}", "id", id));
	json_t *c = json_incref(json_object_get(ht_assert_result(r), "containment"));

	json_decref(r);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* stats.containment of d (new reference). */
static json_t *
stats_containment(const struct ht_daemon *d)
{
	struct ht_conn *i = ht_herdd_open(d, "inspector", NULL);
	json_t *r, *c;

	ck_assert_ptr_nonnull(i);
	r = ht_call_ok(i, "stats", NULL);
	c = json_incref(json_object_get(ht_assert_result(r), "containment"));
	json_decref(r);
	ht_conn_close(i);
	ck_assert_ptr_nonnull(c);
	return c;
}

/* ---- a master in a process of its own, to be SIGKILLed ---- */

struct master_job {
	const struct ht_daemon *d;
	bool pid_ns;
	int fd; /* write end: the tree's pids */
};

static int
master_main(void *arg)
{
	struct master_job *job = arg;
	struct ht_conn *c = ht_herdd_open(job->d, "master", "doomed");
	pid_t tree[MAX_TREE];
	int n = 0;

	if (!c)
		return 10;
	json_decref(spawn_tree(c, job->pid_ns, N_ESCAPED, tree, &n));
	if (write(job->fd, tree, sizeof(tree[0]) * (size_t)n) < 0)
		return 11;
	for (;;)
		pause();
}

/* SIGKILLs a master that made a tree: the whole tree goes. */
static void
kill_master(const struct ht_daemon *d, bool pid_ns)
{
	struct master_job job = { d, pid_ns, -1 };
	pid_t tree[MAX_TREE], master;
	int p[2], n = N_ESCAPED + 2;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	job.fd = p[1];
	master = ht_fork_fn(master_main, &job, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(master, 0);
	close(p[1]);
	ck_assert_int_eq(ht_read_pids(p[0], tree, n, ht_ms(10000)), n);
	close(p[0]);
	for (int i = 0; i < n; i++)
		ht_track_pid(tree[i]);
	ck_assert_int_eq(kill(master, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_child(master, ht_ms(5000), NULL), 0);
	assert_tree_gone(tree, n, ht_ms(3000), "SIGKILL of the master");
}

/*
 * SIGKILLs the worker tree[0] (cgroup want): the tree goes, and so does its
 * cgroup once empty; then a master's tree goes with its SIGKILL, and d stops.
 */
static void
kill_all(struct ht_daemon *d, struct ht_conn *m, const pid_t *tree, int n, const char *want,
    const char *after)
{
	ck_assert_int_eq(kill(tree[0], SIGKILL), 0);
	assert_tree_gone(tree, n, ht_ms(3000), after);
	ck_assert_int_eq(ht_wait_path_gone(want, ht_ms(3000)), 0);
	kill_master(d, false);
	ht_conn_close(m);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(5000)), 0);
}

/* ---- tests ---- */

START_TEST(test_cgroup_nothing_escapes)
{
	pid_t tree[MAX_TREE];
	struct ht_daemon *d;
	struct ht_conn *m;
	json_t *res, *c, *st;
	char want[600], path[700];
	int n;

	NEED_CGROUP();
	d = start_herdd(true);
	m = ht_herdd_open(d, "master", "contain");
	ck_assert_ptr_nonnull(m);
	st = stats_containment(d);
	ck_assert_str_eq(ht_str(st, "mode"), "cgroup");
	json_decref(st);

	/* The worker and every descendant are in its own cgroup, from the start. */
	res = spawn_tree(m, false, N_ESCAPED, tree, &n);
	c = containment(m, ht_str(res, "id"));
	snprintf(want, sizeof(want), "%s/workers/%s", cg, ht_str(res, "id"));
	ck_assert_str_eq(ht_str(c, "cgroup"), want);
	ck_assert(!json_is_true(json_object_get(c, "pid_namespace")));
	snprintf(path, sizeof(path), "%s/cgroup.procs", want);
	{
		FILE *f = fopen(path, "re");
		int seen = 0, p;

		ck_assert_ptr_nonnull(f);
		while (fscanf(f, "%d", &p) == 1) {
			for (int i = 0; i < n; i++)
				seen += p == tree[i];
		}
		fclose(f);
		ck_assert_int_eq(seen, n);
	}
	json_decref(c);

	json_decref(res);
	kill_all(d, m, tree, n, want, "SIGKILL of the worker");
}
END_TEST

/*
 * SIGKILL herdd: its workers die with it (PR_SET_PDEATHSIG), their escaped
 * descendants do not; the next herdd on the cgroup kills them and says so.
 */
START_TEST(test_cgroup_leftovers_killed)
{
	pid_t tree[MAX_TREE];
	struct ht_daemon *d;
	struct ht_conn *m;
	json_t *res, *st, *left;
	int n, alive = 0;

	NEED_CGROUP();
	d = start_herdd(true);
	m = ht_herdd_open(d, "master", "contain");
	ck_assert_ptr_nonnull(m);
	res = spawn_tree(m, false, N_ESCAPED, tree, &n);
	json_decref(res);
	ck_assert_int_eq(ht_daemon_kill(d), 0);
	ht_conn_close(m);
	ck_assert_int_eq(ht_wait_pid_gone(tree[0], ht_ms(3000)), 0);
	/* Nobody is left to kill the escaped ones: they still run. */
	for (int i = 1; i < n; i++)
		alive += ht_pid_alive(tree[i]);
	ck_assert_int_eq(alive, n - 1);

	d = start_herdd(true);
	assert_tree_gone(tree, n, ht_ms(3000), "a new herdd on the cgroup");
	st = stats_containment(d);
	left = json_object_get(st, "leftovers_killed");
	ck_assert_int_eq(json_integer_value(json_object_get(left, "cgroups")), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(left, "processes")), alive);
	json_decref(st);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(5000)), 0);
}
END_TEST

/* As init of its own PID namespace, without any cgroup: SIGKILL worker, master, herdd. */
START_TEST(test_pid_namespace_nothing_escapes)
{
	pid_t tree[MAX_TREE];
	struct ht_daemon *d = start_herdd(false);
	struct ht_conn *m = ht_herdd_open(d, "master", "contain");
	json_t *res, *c, *r;
	int n;

	ck_assert_ptr_nonnull(m);
	res = spawn_tree(m, true, N_ESCAPED, tree, &n);
	c = containment(m, ht_str(res, "id"));
	ck_assert(json_is_true(json_object_get(c, "pid_namespace")));
	ck_assert(json_is_null(json_object_get(c, "cgroup")));
	json_decref(c);
	/* The worker sees itself as pid 1; herdd reports its pid on the host. */
	r = ht_worker_call(ht_str(res, "socket"), NULL, "pid", json_object(), ht_ms(5000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "pid")), 1);
	json_decref(r);
	ck_assert_int_eq(kill(tree[0], SIGKILL), 0);
	assert_tree_gone(tree, n, ht_ms(3000), "SIGKILL of the worker (pid namespace)");
	json_decref(res);

	kill_master(d, true);

	res = spawn_tree(m, true, N_ESCAPED, tree, &n);
	json_decref(res);
	ck_assert_int_eq(ht_daemon_kill(d), 0);
	ht_conn_close(m);
	assert_tree_gone(tree, n, ht_ms(3000), "SIGKILL of herdd (pid namespace)");
}
END_TEST

/* Without a writable cgroup herdd says it falls back to the tree walk. */
START_TEST(test_fallback_reported)
{
	const char *bad[] = { "--cgroup", "/tmp", NULL };
	struct ht_daemon *d = start_herdd(false);
	struct ht_conn *m = ht_herdd_open(d, "master", "contain");
	json_t *st = stats_containment(d), *res, *c;

	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(ht_str(st, "mode"), "tree_walk");
	ck_assert(json_is_null(json_object_get(st, "workers")));
	json_decref(st);
	res = ht_spawn_ok(m, ht_testworker_params(NULL));
	c = containment(m, ht_str(res, "id"));
	ck_assert(json_is_null(json_object_get(c, "cgroup")));
	json_decref(c);
	json_decref(res);
	ht_conn_close(m);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(5000)), 0);

	/* A --cgroup that is no cgroup v2 directory is refused, not half used. */
	d = ht_daemon_start(bad);
	ck_assert_ptr_nonnull(d);
	st = stats_containment(d);
	ck_assert_str_eq(ht_str(st, "mode"), "tree_walk");
	json_decref(st);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(5000)), 0);
}
END_TEST

static double
now_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

#define KILL_RUNS 5

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/*
 * The median of KILL_RUNS times, in ms, from SIGKILL of a worker with a
 * 100-process escaping tree to the last process of it gone.
 */
static double
time_kill(bool with_cgroup)
{
	pid_t tree[MAX_TREE];
	struct ht_daemon *d = start_herdd(with_cgroup);
	struct ht_conn *m = ht_herdd_open(d, "master", "bench");
	double t0, ms[KILL_RUNS];
	json_t *res, *st;
	int n;

	ck_assert_ptr_nonnull(m);
	st = stats_containment(d);
	ck_assert_str_eq(ht_str(st, "mode"), with_cgroup ? "cgroup" : "tree_walk");
	json_decref(st);
	for (int i = 0; i < KILL_RUNS; i++) {
		res = spawn_tree(m, false, 100, tree, &n);
		ck_assert_int_eq(n, 102);
		t0 = now_us();
		ck_assert_int_eq(kill(tree[0], SIGKILL), 0);
		assert_tree_gone(tree, n, ht_ms(10000), "SIGKILL of the worker");
		ms[i] = (now_us() - t0) / 1000.0;
		json_decref(res);
	}
	ht_conn_close(m);
	ck_assert_int_eq(ht_daemon_stop(d, ht_ms(5000)), 0);
	qsort(ms, KILL_RUNS, sizeof(ms[0]), cmp_double);
	return ms[KILL_RUNS / 2];
}

START_TEST(test_kill_time)
{
	double walk, cgroup;

	NEED_CGROUP();
	walk = time_kill(false);
	cgroup = time_kill(true);
	printf("kill a 100-process escaping tree (median of %d): cgroup.kill %.2f ms, tree walk "
	       "%.2f ms\n",
	    KILL_RUNS, cgroup, walk);
}
END_TEST

/*
 * A reexec keeps the workers' cgroups: the successor kills none of them as a
 * leftover, and SIGKILL of a worker (or of a master) after it still takes the
 * whole tree and removes the cgroup.
 */
START_TEST(test_cgroup_kept_across_reexec)
{
	pid_t tree[MAX_TREE];
	struct ht_daemon *d;
	struct ht_conn *m;
	json_t *res, *st, *r;
	char want[600];
	int n;

	NEED_CGROUP();
	d = start_herdd(true);
	m = ht_herdd_open(d, "master", "contain");
	ck_assert_ptr_nonnull(m);
	res = spawn_tree(m, false, N_ESCAPED, tree, &n);
	snprintf(want, sizeof(want), "%s/workers/%s", cg, ht_str(res, "id"));
	r = ht_conn_call(m, "reexec", json_object(), ht_ms(30000));
	ck_assert_int_eq(json_integer_value(json_object_get(ht_assert_result(r), "pid")), d->pid);
	json_decref(r);
	for (int i = 0; i < n; i++)
		ck_assert_msg(ht_pid_alive(tree[i]), "pid %d died in the reexec", (int)tree[i]);
	st = stats_containment(d);
	ck_assert_str_eq(ht_str(st, "mode"), "cgroup");
	ck_assert_int_eq(
	    json_integer_value(json_object_get(json_object_get(st, "leftovers_killed"), "cgroups")),
	    0);
	json_decref(st);
	json_decref(res);
	kill_all(d, m, tree, n, want, "SIGKILL of the worker after a reexec");
}
END_TEST

HT_MAIN("sup-contain",
    HT_CASE_WITH("contain", 60, cg_setup, cg_teardown, test_cgroup_nothing_escapes,
        test_cgroup_leftovers_killed, test_pid_namespace_nothing_escapes, test_fallback_reported,
        test_kill_time, test_cgroup_kept_across_reexec))
