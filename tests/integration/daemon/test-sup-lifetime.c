/* SPDX-License-Identifier: MIT */
/*
 * How long workers live: they die with their master (even a SIGKILLed one,
 * even while still in init), with their first connection (connection_closed),
 * with herdd itself; they outlive their master only when asked (explicit).
 * After every test herdd holds no child, running or zombie.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"

/* The SIGTERM-to-SIGKILL period of ht_grace_args. */
#define GRACE_MS 300
/* What a forked master does: spawn n workers, report their pids, then stay or leave. */
struct master_job {
	const struct ht_daemon *d;
	int n;
	json_t *params; /* spawn params, borrowed */
	int pipe_fd; /* write end: pids, or one byte once a spawn was sent */
	bool exit_after; /* exit normally once the pids are written */
	bool no_wait; /* send one spawn and report without waiting for its reply */
};

static int
master_main(void *arg)
{
	struct master_job *job = arg;
	struct ht_conn *c = ht_herdd_open(job->d, "master", "test-master");
	pid_t pids[64];
	char *ids[64];
	int i, n;

	if (!c)
		return 10;
	if (job->no_wait) {
		if (ht_conn_send_request(c, "spawn", json_incref(job->params)) < 0)
			return 11;
		if (write(job->pipe_fd, "s", 1) != 1)
			return 12;
		for (;;)
			pause();
	}
	n = ht_spawn_many(c, job->n, job->params, pids, ids, ht_ms(30000));
	if (n < 0)
		return 13;
	if (write(job->pipe_fd, pids, sizeof(pids[0]) * (size_t)job->n) < 0)
		return 14;
	for (i = 0; i < job->n; i++)
		free(ids[i]);
	if (job->exit_after) {
		ht_conn_close(c);
		return 0;
	}
	for (;;)
		pause();
}

/* Forks a master running job; fills job->pipe_fd and returns the read end in *rfd. */
static pid_t
start_master(struct master_job *job, int *rfd)
{
	int p[2];
	pid_t pid;

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	job->pipe_fd = p[1];
	pid = ht_fork_fn(master_main, job, (uid_t)-1, (gid_t)-1);
	ck_assert_int_gt(pid, 0);
	close(p[1]);
	*rfd = p[0];
	return pid;
}

/* Checks a worker's exited record (list {all}) carries reason. */
static void
assert_reason(struct ht_conn *insp, const char *id, const char *reason)
{
	json_t *w = ht_herdd_find(insp, id);
	const char *r = json_string_value(json_object_get(w, "reason"));

	ck_assert_msg(w, "worker %s is not listed", id);
	ck_assert_msg(r && strcmp(r, reason) == 0, "worker %s: reason %s expected, record %s", id,
	    reason, ht_dump(w));
	json_decref(w);
}

START_TEST(test_master_sigkill_kills_50_workers)
{
	struct ht_daemon *d = ht_herdd;
	struct master_job job = { .n = 50 };
	pid_t master, pids[50];
	int64_t deadline;
	int rfd, i;

	job.d = d;
	job.params = ht_testworker_params(NULL);
	master = start_master(&job, &rfd);
	ck_assert_int_eq(ht_read_pids(rfd, pids, 50, ht_ms(60000)), 50);
	for (i = 0; i < 50; i++) {
		ck_assert_msg(pids[i] > 0, "spawn %d failed", i);
		ht_track_pid(pids[i]);
		ck_assert(ht_pid_alive(pids[i]));
	}

	ck_assert_int_eq(kill(master, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_child(master, 5000, NULL), 0);
	/* The master is reaped: herdd sees EOF now, and every worker must be gone within grace. */
	deadline = ht_now_ms() + ht_ms(GRACE_MS + 100);
	for (i = 0; i < 50; i++) {
		int left = (int)(deadline - ht_now_ms());

		ck_assert_msg(ht_wait_pid_gone(pids[i], left < 0 ? 0 : left) == 0,
		    "worker %d (pid %d) still runs %d ms after its master died", i, (int)pids[i],
		    ht_ms(GRACE_MS + 100));
	}
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);

	ht_assert_no_workers(d);
	json_decref(job.params);
	close(rfd);
}
END_TEST

START_TEST(test_master_dies_during_init)
{
	struct ht_daemon *d = ht_herdd;
	struct master_job job = { .n = 1, .no_wait = true };
	struct ht_conn *insp;
	json_t *w;
	pid_t master, pid;
	char byte;
	int rfd;

	job.d = d;
	job.params = ht_testworker_params(json_pack("{s:s, s:{s:i}, s:i}", "name", "slow-init",
	    "init", "init_delay_ms", 60000, "spawn_timeout_ms", 120000));
	master = start_master(&job, &rfd);
	ck_assert_int_eq(read(rfd, &byte, 1), 1);

	insp = ht_herdd_open(d, "inspector", "test");
	ck_assert_ptr_nonnull(insp);
	w = ht_herdd_wait_listed(insp, "slow-init", "starting", ht_ms(5000));
	ck_assert_msg(w, "the worker never showed up as starting");
	pid = ht_worker_pid(w);
	ck_assert_int_gt(pid, 0);
	ht_track_pid(pid);
	ck_assert(ht_pid_alive(pid));

	ck_assert_int_eq(kill(master, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_child(master, 5000, NULL), 0);
	/* The worker blocks in init (SIGTERM cannot stop it): the SIGKILL after grace must. */
	ck_assert_msg(ht_wait_pid_gone(pid, ht_ms(GRACE_MS + 100)) == 0,
	    "worker %d in init outlived its master", (int)pid);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);
	assert_reason(insp, json_string_value(json_object_get(w, "id")), "killed_orphan");
	json_decref(w);
	ht_conn_close(insp);
	json_decref(job.params);
	close(rfd);
}
END_TEST

START_TEST(test_connection_closed)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *m = ht_master, *client;
	json_t *reply, *res, *ev;
	const char *socket, *id;
	struct stat st;
	pid_t pid;

	reply = ht_spawn(m,
	    ht_testworker_params(json_pack(
	        "{s:s, s:i}", "shutdown_on", "connection_closed", "connection_timeout_ms", 10000)),
	    ht_ms(10000));
	res = ht_assert_result(reply);
	pid = ht_worker_pid(res);
	socket = json_string_value(json_object_get(res, "socket"));
	id = json_string_value(json_object_get(res, "id"));
	ck_assert_ptr_nonnull(socket);

	client = ht_conn_open_ok(socket);
	{
		json_t *r = ht_conn_hello(client, "client", NULL, ht_ms(5000));

		ht_assert_result(r);
		json_decref(r);
		r = ht_conn_call(client, "pid", NULL, ht_ms(5000));

		ck_assert_int_eq(
		    json_integer_value(json_object_get(ht_assert_result(r), "pid")), pid);
		json_decref(r);
	}
	ck_assert(ht_pid_alive(pid));
	ht_conn_close(client);
	ck_assert_msg(ht_wait_pid_gone(pid, ht_ms(GRACE_MS + 1000)) == 0,
	    "connection_closed worker %d survived its connection", (int)pid);
	ev = ht_wait_event_ok(m, "exited", id, ht_ms(5000));
	json_decref(ev);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);
	ck_assert_msg(stat(socket, &st) < 0 && errno == ENOENT, "stale socket %s", socket);
	json_decref(reply);

	/* Nobody ever connects: the worker goes after connection_timeout_ms. */
	reply = ht_spawn(m,
	    ht_testworker_params(json_pack(
	        "{s:s, s:i}", "shutdown_on", "connection_closed", "connection_timeout_ms", 200)),
	    ht_ms(10000));
	pid = ht_worker_pid(ht_assert_result(reply));
	ck_assert_msg(ht_wait_pid_gone(pid, ht_ms(200 + GRACE_MS + 1000)) == 0,
	    "worker %d outlived its connection timeout", (int)pid);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);
	json_decref(reply);
}
END_TEST

START_TEST(test_explicit_outlives_master)
{
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *a, *b;
	json_t *ex, *dflt, *reply, *worker;
	pid_t ex_pid, dflt_pid;
	const char *ex_id, *socket;
	struct stat st;

	a = ht_herdd_open(d, "master", "master-a");
	ck_assert_ptr_nonnull(a);
	ex = ht_spawn(
	    a, ht_testworker_params(json_pack("{s:s}", "shutdown_on", "explicit")), ht_ms(10000));
	dflt = ht_spawn(a, ht_testworker_params(NULL), ht_ms(10000));
	ex_pid = ht_worker_pid(ht_assert_result(ex));
	dflt_pid = ht_worker_pid(ht_assert_result(dflt));
	ex_id = json_string_value(json_object_get(ht_result(ex), "id"));
	socket = json_string_value(json_object_get(ht_result(ex), "socket"));

	ht_conn_close(a);
	/* The default worker's death shows herdd has handled master A's disconnect. */
	ck_assert_int_eq(ht_wait_pid_gone(dflt_pid, ht_ms(GRACE_MS + 1000)), 0);
	ck_assert(ht_pid_alive(ex_pid));
	reply = ht_worker_call(socket, NULL, "echo", json_pack("[s]", "still here"), ht_ms(5000));
	ck_assert_str_eq(
	    json_string_value(json_array_get(ht_assert_result(reply), 0)), "still here");
	json_decref(reply);

	/* Another master of the same user finds it and shuts it down. */
	b = ht_herdd_open(d, "master", "master-b");
	ck_assert_ptr_nonnull(b);
	reply = ht_conn_call(b, "inspect", json_pack("{s:s}", "id", ex_id), ht_ms(5000));
	worker = ht_assert_result(reply);
	ck_assert_str_eq(json_string_value(json_object_get(worker, "state")), "ready");
	ck_assert_str_eq(json_string_value(json_object_get(worker, "shutdown_on")), "explicit");
	json_decref(reply);
	reply = ht_conn_call(
	    b, "shutdown", json_pack("{s:s, s:i}", "id", ex_id, "grace_ms", 2000), ht_ms(10000));
	worker = ht_assert_result(reply);
	ck_assert_str_eq(json_string_value(json_object_get(worker, "state")), "exited");
	ck_assert_str_eq(json_string_value(json_object_get(worker, "reason")), "shutdown");
	json_decref(reply);
	ck_assert(!ht_pid_alive(ex_pid));
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);
	ck_assert_msg(stat(socket, &st) < 0 && errno == ENOENT, "stale socket %s", socket);
	json_decref(ex);
	json_decref(dflt);
	ht_conn_close(b);
}
END_TEST

START_TEST(test_herdd_sigkill_kills_every_worker)
{
	struct ht_daemon *d;
	struct ht_conn *m;
	json_t *params;
	pid_t pids[6];
	char *ids[6];
	int i;

	/* Orphaned workers come to us, so we can reap them and see how they ended. */
	ck_assert_int_eq(ht_become_subreaper(), 0);
	d = ht_herdd;
	m = ht_master;
	params = ht_testworker_params(NULL);
	ck_assert_int_eq(ht_spawn_many(m, 3, params, pids, ids, ht_ms(20000)), 3);
	json_object_set_new(params, "shutdown_on", json_string("explicit"));
	ck_assert_int_eq(ht_spawn_many(m, 3, params, pids + 3, ids + 3, ht_ms(20000)), 3);
	json_decref(params);

	ck_assert_int_eq(ht_daemon_kill(d), 0);
	for (i = 0; i < 6; i++) {
		ck_assert_msg(ht_wait_pid_gone(pids[i], ht_ms(1000)) == 0,
		    "worker %d (pid %d) outlived herdd", i, (int)pids[i]);
		/* Reparented to us; reap it (or init already did). */
		if (ht_pid_ppid(pids[i]) == getpid())
			ck_assert_int_eq(ht_wait_child(pids[i], 1000, NULL), 0);
		free(ids[i]);
	}
}
END_TEST

START_TEST(test_spawn_bursts_then_master_exit)
{
	struct ht_daemon *d = ht_herdd;
	struct master_job job = { .n = 20, .exit_after = true };
	int loop, i;

	job.d = d;
	job.params = ht_testworker_params(NULL);
	for (loop = 0; loop < 20; loop++) {
		pid_t pids[20], master;
		int rfd, st;

		master = start_master(&job, &rfd);
		ck_assert_int_eq(ht_read_pids(rfd, pids, 20, ht_ms(30000)), 20);
		close(rfd);
		ck_assert_int_eq(ht_wait_child(master, ht_ms(10000), &st), 0);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		for (i = 0; i < 20; i++) {
			ck_assert_msg(pids[i] > 0, "loop %d: spawn %d failed", loop, i);
			ht_track_pid(pids[i]);
		}
		for (i = 0; i < 20; i++)
			ck_assert_msg(ht_wait_pid_gone(pids[i], ht_ms(GRACE_MS + 1000)) == 0,
			    "loop %d: worker %d outlived its master", loop, (int)pids[i]);
		ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);
	}
	ht_assert_no_workers(d);
	json_decref(job.params);
}
END_TEST

HT_MAIN("sup-lifetime",
    HT_HERDD_CASE("lifetime", 30, ht_grace_args, test_master_sigkill_kills_50_workers,
        test_master_dies_during_init, test_connection_closed, test_explicit_outlives_master,
        test_herdd_sigkill_kills_every_worker),
    HT_HERDD_CASE("bursts", 90, ht_grace_args, test_spawn_bursts_then_master_exit))
