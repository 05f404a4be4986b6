/* SPDX-License-Identifier: MIT */
/*
 * Another uid can neither see nor touch a worker: a master running as nobody,
 * talking to a root herdd, gets worker_not_found for root's worker whatever it
 * tries, cannot reach the worker's socket, and its own worker runs as nobody
 * (root sees that one). Needs root; skipped otherwise.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ht-check.h"

struct intruder {
	const struct ht_daemon *d;
	const char *id; /* root's worker */
	const char *socket; /* its socket */
	pid_t pid;
	uid_t uid;
};

/* Runs method on root's worker as nobody; true if herdd answered worker_not_found. */
static bool
not_found(struct ht_conn *c, const char *method, json_t *params)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));
	const char *name = ht_error_name(reply);
	bool ok = name && strcmp(name, "worker_not_found") == 0;

	if (!ok)
		fprintf(stderr, "as nobody, %s answered %s\n", method, ht_dump(reply));
	json_decref(reply);
	return ok;
}

/* The intruder's steps; its exit code names the first one that went wrong. */
static int
intrude(void *arg)
{
	struct intruder *in = arg;
	struct ht_conn *c = ht_herdd_open(in->d, "master", "intruder");
	json_t *reply, *res;
	size_t n;

	if (!c)
		return 10;
	reply = ht_conn_call(c, "list", json_pack("{s:b}", "all", 1), ht_ms(5000));
	n = json_array_size(json_object_get(ht_result(reply), "workers"));
	if (!ht_result(reply) || n != 0) {
		fprintf(stderr, "as nobody, list answered %s\n", ht_dump(reply));
		return 11;
	}
	json_decref(reply);
	if (!not_found(c, "inspect", json_pack("{s:s}", "id", in->id)))
		return 12;
	if (!not_found(c, "logs", json_pack("{s:s}", "id", in->id)))
		return 13;
	if (!not_found(c, "kill", json_pack("{s:s, s:s}", "id", in->id, "signal", "KILL")))
		return 14;
	if (!not_found(c, "shutdown", json_pack("{s:s}", "id", in->id)))
		return 15;
	/* Around herdd: the worker's socket sits in root's 0700 directory. */
	reply = ht_worker_call(in->socket, NULL, "pid", NULL, ht_ms(5000));
	if (reply || errno != EACCES) {
		fprintf(stderr, "as nobody, the worker socket answered %s (%m)\n", ht_dump(reply));
		return 16;
	}
	if (kill(in->pid, SIGKILL) == 0 || errno != EPERM)
		return 17;

	/* Its own worker runs as nobody. */
	reply =
	    ht_spawn(c, ht_testworker_params(json_pack("{s:s}", "name", "nobodys")), ht_ms(10000));
	res = ht_result(reply);
	if (!res || json_integer_value(json_object_get(res, "pid")) <= 0) {
		fprintf(stderr, "as nobody, spawn answered %s\n", ht_dump(reply));
		return 18;
	}
	{
		json_t *p = ht_worker_call(ht_str(res, "socket"), NULL, "pid", NULL, ht_ms(5000));

		if (json_integer_value(json_object_get(ht_result(p), "uid")) !=
		    (json_int_t)in->uid) {
			fprintf(stderr, "nobody's worker answered %s\n", ht_dump(p));
			return 19;
		}
		json_decref(p);
	}
	json_decref(reply);
	ht_conn_close(c);
	return 0;
}

START_TEST(test_other_uid_cannot_see_or_touch)
{
	struct intruder in = { 0 };
	struct ht_daemon *d = ht_herdd;
	struct ht_conn *m = ht_master, *insp;
	json_t *reply, *res, *ev;
	gid_t gid;
	int code;

	if (getuid() != 0) {
		fprintf(stderr, "test_other_uid_cannot_see_or_touch needs root: skipped\n");
		return;
	}
	ck_assert_int_eq(ht_nobody(&in.uid, &gid), 0);
	/* Let nobody reach the control socket; herdd's own checks are what is tested. */
	ck_assert_int_eq(chmod(d->dir, 0755), 0);
	ck_assert_int_eq(chmod(d->socket, 0666), 0);

	reply = ht_spawn(m,
	    ht_testworker_params(
	        json_pack("{s:s, s:s}", "name", "roots", "shutdown_on", "explicit")),
	    ht_ms(10000));
	res = ht_assert_result(reply);
	insp = ht_herdd_open(d, "inspector", "root-watch");
	ck_assert_ptr_nonnull(insp);
	json_decref(ht_conn_call(insp, "subscribe", json_pack("{s:b}", "all", 1), ht_ms(5000)));

	in.d = d;
	in.id = ht_str(res, "id");
	in.socket = ht_str(res, "socket");
	in.pid = ht_worker_pid(res);
	code = ht_run_as_nobody(intrude, &in, ht_ms(30000));
	ck_assert_msg(code == 0, "the intruder failed at step %d (see its stderr)", code);

	/* Root's worker is untouched. */
	ck_assert(ht_pid_alive(in.pid));
	ev = ht_conn_call(m, "inspect", json_pack("{s:s}", "id", in.id), ht_ms(5000));
	ck_assert_str_eq(ht_str(ht_assert_result(ev), "state"), "ready");
	json_decref(ev);
	/* Root saw nobody's worker come. */
	ev = ht_conn_wait_event(insp, "ready", NULL, ht_ms(5000));
	while (ev &&
	    json_integer_value(json_object_get(json_object_get(ev, "worker"), "uid")) !=
	        (json_int_t)in.uid) {
		json_decref(ev);
		ev = ht_conn_wait_event(insp, "ready", NULL, ht_ms(5000));
	}
	ck_assert_msg(ev, "root saw no ready event for nobody's worker");
	json_decref(ev);

	json_decref(reply);
	ht_conn_close(insp);
}
END_TEST

HT_MAIN("sup-perm", HT_HERDD_CASE("perm", 30, ht_grace_args, test_other_uid_cannot_see_or_touch))
