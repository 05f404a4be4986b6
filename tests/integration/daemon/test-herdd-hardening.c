/* SPDX-License-Identifier: MIT */
/*
 * Issue 11's hardening against a real herdd and real herd-testworkers:
 * - texts cut at a byte budget inside a UTF-8 character still make a valid
 *   reply or event (error texts, a worker's init_failed and failure);
 * - a peer's string cannot forge a line in herdd's log;
 * - integer ids past +-2^53 (and past 64 bits) get invalid_request with id
 *   null, and the connection stays;
 * - owner.connection stays set after the worker exits, until the master's
 *   connection closes;
 * - a master that dies during its worker's slow init takes the worker with
 *   it whatever its policy; a bad stdout/stderr file is named in the error.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ht-check.h"

/* herdd's SIGTERM-to-SIGKILL grace in ht_grace_args, the fixture's arguments. */
#define GRACE_MS 300

/* U+FFFD: what a repaired cut would show instead of a whole character. */
#define REPLACEMENT "\xef\xbf\xbd"
#define E_ACUTE     "\xc3\xa9"

/* head (at most one byte) and n "é": the parity of head decides which byte budgets cut an "é". */
static char *
cut_text(const char *head, int n)
{
	size_t h = strlen(head);
	char *s = malloc(h + 2 * (size_t)n + 1);

	ck_assert_ptr_nonnull(s);
	memcpy(s, head, h);
	for (int i = 0; i < n; i++)
		memcpy(s + h + 2 * i, E_ACUTE, 2);
	s[h + 2 * n] = '\0';
	return s;
}

/* "a" and n "é": every even byte budget cuts an "é" in two. */
static char *
odd_text(int n)
{
	return cut_text("a", n);
}

/* An error reply named name quoting whole "é"s only (cut on a boundary). */
static void
assert_cut_error(json_t *reply, const char *name)
{
	const char *msg;

	ht_assert_error(reply, name);
	msg = ht_error_message(reply);
	ck_assert_ptr_nonnull(msg);
	ck_assert_msg(strstr(msg, E_ACUTE E_ACUTE), "the text is missing: %s", ht_dump(reply));
	ck_assert_msg(!strstr(msg, REPLACEMENT), "cut inside a character: %s", ht_dump(reply));
}

/* The connection still answers: method (no params) gets a result. */
static void
assert_answers(struct ht_conn *c, const char *method)
{
	json_t *r = ht_conn_call(c, method, NULL, ht_ms(5000));

	ht_assert_result(r);
	json_decref(r);
}

/* The case's teardown, before the fixture stops herdd: every worker of the test is gone. */
static void
finish(void)
{
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(10000)), 0);
}

/* Sends one raw line and returns the next message. */
static json_t *
raw_call(struct ht_conn *c, const char *line)
{
	ck_assert_int_eq(ht_conn_send_raw(c, line, strlen(line)), 0);
	return ht_conn_recv(c, ht_ms(5000));
}

/* ---- 1. texts cut inside a character ---- */

START_TEST(test_cut_texts_in_herdd_replies)
{
	struct ht_conn *c = ht_herdd_open(ht_herdd, "master", "cuts");
	char *name = odd_text(40), line[512];
	const char *const methods[] = { "inspect", "logs", "kill" };
	json_t *r;

	ck_assert_ptr_nonnull(c);
	/* "unknown method" keeps 64 bytes of the name. */
	r = ht_conn_call(c, name, NULL, ht_ms(5000));
	assert_cut_error(r, "method_not_found");
	json_decref(r);
	assert_answers(c, "ping");

	/* "no worker" keeps 64 bytes of the id. */
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		r = ht_conn_call(c, methods[i], json_pack("{s:s}", "id", name), ht_ms(5000));
		assert_cut_error(r, "worker_not_found");
		json_decref(r);
		assert_answers(c, "ping");
	}

	/* An env name is quoted with 64 bytes. */
	r = ht_spawn(
	    c, ht_testworker_params(json_pack("{s:{s:s}}", "env", name, "v")), ht_ms(5000));
	assert_cut_error(r, "invalid_params");
	json_decref(r);
	assert_answers(c, "ping");

	/* An unknown top-level member is quoted with 64 bytes. */
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"ping\",\"%s\":1}\n", name);
	r = raw_call(c, line);
	assert_cut_error(r, "invalid_request");
	ck_assert_int_eq(json_integer_value(json_object_get(r, "id")), 7);
	json_decref(r);
	assert_answers(c, "ping");
	ht_conn_close(c);

	/* A hello role is quoted with 32 bytes; the refusal arrives before the close. */
	c = ht_conn_open(ht_herdd->socket);
	ck_assert_ptr_nonnull(c);
	name[1 + 2 * 20] = '\0';
	r = ht_conn_hello(c, name, NULL, ht_ms(5000));
	assert_cut_error(r, "invalid_params");
	json_decref(r);
	ht_conn_close(c);
	free(name);
}
END_TEST

/* Spawns an explicit test worker for c and says hello to it as a client. */
static struct ht_conn *
worker_client(struct ht_conn *c, json_t **ret_spawn)
{
	json_t *r = ht_spawn(
	    c, ht_testworker_params(json_pack("{s:s}", "shutdown_on", "explicit")), ht_ms(10000));
	struct ht_conn *w = ht_conn_open(ht_str(ht_assert_result(r), "socket"));

	ck_assert_ptr_nonnull(w);
	json_decref(ht_conn_hello(w, "client", NULL, ht_ms(5000)));
	*ret_spawn = r;
	return w;
}

/* Closes the client w and kills its worker (spawn is the spawn reply, released). */
static void
worker_done(struct ht_conn *c, struct ht_conn *w, json_t *spawn)
{
	ht_conn_close(w);
	json_decref(ht_conn_call(c, "kill",
	    json_pack("{s:s, s:s}", "id", ht_str(ht_result(spawn), "id"), "signal", "KILL"),
	    ht_ms(5000)));
	json_decref(spawn);
}

START_TEST(test_cut_texts_in_worker_replies)
{
	struct ht_conn *c = ht_master, *w;
	char *name = odd_text(60);
	json_t *spawn, *e;

	w = worker_client(c, &spawn);
	/* "no function named" keeps 100 bytes of the name. */
	e = ht_conn_call(w, name, NULL, ht_ms(5000));
	assert_cut_error(e, "method_not_found");
	json_decref(e);
	assert_answers(w, "pid");
	worker_done(c, w, spawn);
	free(name);
}
END_TEST

/* The event's message is text, whole or cut on a character, and at least min bytes. */
static void
assert_event_text(json_t *ev, const char *text, size_t min)
{
	const char *msg = ht_str(ev, "message");

	ck_assert_msg(msg != NULL, "event without message: %s", ht_dump(ev));
	ck_assert_msg(strlen(msg) >= min && strncmp(msg, text, strlen(msg)) == 0,
	    "the event's message is not a prefix of the text sent: %.80s...", msg);
	ck_assert(!strstr(msg, REPLACEMENT));
}

START_TEST(test_long_init_failure_reaches_owner)
{
	struct ht_conn *c = ht_master;
	char *text = cut_text("", 3000);
	json_t *r, *ev;

	r = ht_spawn(c,
	    ht_testworker_params(
	        json_pack("{s:s, s:{s:s}}", "name", "initfail", "init", "fail_init", text)),
	    ht_ms(10000));
	/* The worker keeps 511 bytes of its init failure, an odd cut of this text. */
	assert_cut_error(r, "init_failed");
	json_decref(r);
	ev = ht_conn_wait_event(c, "init_failed", NULL, ht_ms(5000));
	ck_assert_msg(ev != NULL, "no init_failed event: %s", strerror(errno));
	assert_event_text(ev, text, 500);
	json_decref(ev);
	assert_answers(c, "ping");
	free(text);
}
END_TEST

START_TEST(test_long_failure_reaches_owner)
{
	struct ht_conn *c = ht_master;
	char *text = odd_text(3000);
	json_t *r, *res, *call, *ev;

	r = ht_spawn(
	    c, ht_testworker_params(json_pack("{s:s}", "shutdown_on", "explicit")), ht_ms(10000));
	res = ht_assert_result(r);
	call = ht_worker_call(ht_str(res, "socket"), NULL, "fail_later",
	    json_pack("{s:i, s:s}", "ms", 0, "message", text), ht_ms(5000));
	ht_assert_result(call);
	json_decref(call);
	/* herdd keeps 4096 bytes, an odd cut of this text: the event still leaves. */
	ev = ht_conn_wait_event(c, "failed", ht_str(res, "id"), ht_ms(5000));
	ck_assert_msg(ev != NULL, "no failed event: %s", strerror(errno));
	assert_event_text(ev, text, 4000);
	json_decref(ev);
	json_decref(r);
	assert_answers(c, "ping");
	free(text);
}
END_TEST

#define FAILERS 16

/*
 * Many workers fail with a long message at about the same time: every one is
 * recorded failed with its message, none as a plain exit (the failure written
 * just before exiting must not lose the race with the reap).
 */
START_TEST(test_many_failures_all_recorded)
{
	struct ht_conn *c = ht_master;
	char *text = odd_text(3000);
	json_t *spawned[FAILERS];

	for (int i = 0; i < FAILERS; i++)
		spawned[i] = ht_spawn_ok(
		    c, ht_testworker_params(json_pack("{s:s}", "shutdown_on", "explicit")));
	/* Each fails 400 ms after its call: the calls take less, so the failures bunch up. */
	for (int i = 0; i < FAILERS; i++) {
		json_t *call = ht_worker_call(ht_str(spawned[i], "socket"), NULL, "fail_later",
		    json_pack("{s:i, s:s}", "ms", 400, "message", text), ht_ms(5000));

		ht_assert_result(call);
		json_decref(call);
	}
	/* Each worker's end is its owner's event: "failed", never a plain "exited". */
	for (int i = 0; i < FAILERS; i++) {
		json_t *ev =
		    ht_conn_wait_event(c, "failed", ht_str(spawned[i], "id"), ht_ms(10000));

		ck_assert_msg(ev, "worker %d of %d: no failed event", i + 1, FAILERS);
		ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "reason"), "failed");
		json_decref(ev);
		json_decref(spawned[i]);
	}
	free(text);
}
END_TEST

/* ---- 2. log forging ---- */

#define FORGED "herdd[1]: error: FORGED"

struct forger {
	const struct ht_daemon *d;
};

/* As another uid: a spawn of a forged path and an init failure with a forged text. */
static int
forge(void *arg)
{
	struct forger *f = arg;
	struct ht_conn *c = ht_herdd_open(f->d, "master", "forger");
	json_t *r;
	int bad = 0;

	if (!c)
		return 10;
	r = ht_spawn(c, json_pack("{s:s, s:[s]}", "path", "/nonexistent\n" FORGED, "argv", "x"),
	    ht_ms(5000));
	if (!ht_error_name(r))
		bad = 11;
	json_decref(r);
	r = ht_spawn(c,
	    ht_testworker_params(json_pack("{s:{s:s}}", "init", "fail_init", "x\n" FORGED)),
	    ht_ms(10000));
	if (!ht_error_name(r) || strcmp(ht_error_name(r), "init_failed") != 0)
		bad = 12;
	json_decref(r);
	ht_conn_close(c);
	return bad;
}

START_TEST(test_log_cannot_be_forged)
{
	char dir[128], path[160];
	const char *argv[] = { "--grace-ms", "300", "--log-file", path, NULL };
	struct forger f;
	struct ht_daemon *d;
	uid_t uid = (uid_t)-1;
	gid_t gid = (gid_t)-1;
	char *log = NULL, *line, *save = NULL;
	size_t len = 0;
	int status, seen = 0;
	pid_t pid;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/herdd.log", dir);
	d = ht_daemon_start_ok(argv);
	f.d = d;
	/* Root's herdd and another uid, as the issue saw it; as ourselves when not root. */
	if (geteuid() == 0) {
		ck_assert_int_eq(ht_nobody(&uid, &gid), 0);
		ck_assert_int_eq(chmod(d->dir, 0755), 0);
		ck_assert_int_eq(chmod(d->socket, 0666), 0);
	}
	pid = ht_fork_fn(forge, &f, uid, gid);
	ck_assert_int_gt(pid, 0);
	ck_assert_int_eq(ht_wait_child(pid, ht_ms(20000), &status), 0);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forger status %d", status);
	/* Its own herdd (a log file): stopped here, so the whole log is written. */
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(10000)), 0);
	ht_daemon_stop_ok(d);

	log = ht_read_file(path, &len);
	ck_assert_ptr_nonnull(log);
	ck_assert(len > 0);
	for (line = strtok_r(log, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		/* herdd's lines in a file start with a timestamp; a forged one may not. */
		const char *text = strchr(line, ' ') ? strchr(line, ' ') + 1 : line;

		ck_assert_msg(strncmp(line, FORGED, strlen(FORGED)) != 0 &&
		        strncmp(text, FORGED, strlen(FORGED)) != 0,
		    "forged line: %s", line);
		if (strstr(line, "\\n" FORGED))
			seen++;
	}
	/* Both texts were logged, escaped: the spawn's path and the init failure. */
	ck_assert_msg(seen >= 2, "escaped texts seen %d times in:\n%s", seen, log);
	free(log);
}
END_TEST

/* ---- 3. ids out of range ---- */

static void
assert_ids_refused(struct ht_conn *c, const char *method)
{
	const char *const ids[] = { "9007199254740993", "-9007199254740993", "9223372036854775808",
		"-9223372036854775809", "99999999999999999999999", "1e300" };
	char line[256];
	json_t *r;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		snprintf(line, sizeof(line), "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"%s\"}\n",
		    ids[i], method);
		r = raw_call(c, line);
		ck_assert_msg(r != NULL, "no reply to id %s: %s", ids[i], strerror(errno));
		ht_assert_error(r, "invalid_request");
		ck_assert_msg(
		    json_is_null(json_object_get(r, "id")), "id %s: %s", ids[i], ht_dump(r));
		json_decref(r);
		assert_answers(c, method);
	}
	/* The bounds themselves are ids. */
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":9007199254740992,\"method\":\"%s\"}\n", method);
	r = raw_call(c, line);
	ht_assert_result(r);
	ck_assert(json_integer_value(json_object_get(r, "id")) == 9007199254740992LL);
	json_decref(r);
	snprintf(line, sizeof(line),
	    "{\"jsonrpc\":\"2.0\",\"id\":-9007199254740992,\"method\":\"%s\"}\n", method);
	r = raw_call(c, line);
	ht_assert_result(r);
	json_decref(r);
}

START_TEST(test_ids_out_of_range)
{
	struct ht_conn *c = ht_master, *w;
	json_t *spawn;

	assert_ids_refused(c, "ping");
	w = worker_client(c, &spawn);
	assert_ids_refused(w, "pid");
	worker_done(c, w, spawn);
}
END_TEST

/* ---- 4. owner.connection ---- */

static json_t *
owner_connection(struct ht_conn *c, const char *id)
{
	json_t *w = ht_herdd_find(c, id);
	json_t *v;

	ck_assert_msg(w != NULL, "worker %s not listed", id);
	v = json_incref(json_object_get(json_object_get(w, "owner"), "connection"));
	json_decref(w);
	return v;
}

START_TEST(test_owner_connection_outlives_worker)
{
	struct ht_conn *c = ht_conn_open(ht_herdd->socket);
	struct ht_conn *look = ht_herdd_open(ht_herdd, "inspector", "look");
	json_t *hello, *r, *ev, *v;
	json_int_t serial;
	char id[64];
	int64_t deadline;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_nonnull(look);
	hello = ht_conn_hello(c, "master", NULL, ht_ms(5000));
	serial = json_integer_value(json_object_get(ht_assert_result(hello), "connection"));
	ck_assert_int_gt(serial, 0);
	json_decref(hello);
	r = ht_spawn(
	    c, ht_testworker_params(json_pack("{s:s}", "shutdown_on", "explicit")), ht_ms(10000));
	snprintf(id, sizeof(id), "%s", ht_str(ht_assert_result(r), "id"));
	ck_assert_int_gt(ht_worker_pid(ht_result(r)), 0);
	ck_assert_int_eq(kill(ht_worker_pid(ht_result(r)), SIGKILL), 0);
	ev = ht_conn_wait_event(c, "crashed", id, ht_ms(5000));
	ck_assert_msg(ev != NULL, "no crashed event");
	json_decref(ev);
	json_decref(r);

	/* Exited, its master still connected: the connection is named. */
	v = owner_connection(c, id);
	ck_assert_msg(json_integer_value(v) == serial, "owner.connection %s, want %lld", ht_dump(v),
	    (long long)serial);
	json_decref(v);
	v = owner_connection(look, id);
	ck_assert(json_integer_value(v) == serial);
	json_decref(v);

	/* Closed: null, as soon as herdd has seen the close (no event says so: ask until then). */
	ht_conn_close(c);
	deadline = ht_now_ms() + ht_ms(5000);
	for (;;) {
		v = owner_connection(look, id);
		if (json_is_null(v))
			break;
		json_decref(v);
		ck_assert_msg(ht_now_ms() < deadline, "owner.connection still set after the close");
	}
	json_decref(v);
	ht_conn_close(look);
}
END_TEST

/* ---- 5. fate sharing during a slow init; bad output files ---- */

struct slow_master {
	const struct ht_daemon *d;
	const char *name;
	const char *policy;
};

/* Asks for a worker whose init takes 15 s, without waiting for the answer. */
static struct ht_conn *
spawn_slow(const struct ht_daemon *d, const char *name, const char *policy)
{
	struct ht_conn *c = ht_herdd_open(d, "master", "slow");

	if (c &&
	    ht_conn_send_request(c, "spawn",
	        ht_testworker_params(json_pack("{s:s, s:s, s:{s:i}}", "name", name, "shutdown_on",
	            policy, "init", "init_delay_ms", 15000))) < 0) {
		ht_conn_close(c);
		c = NULL;
	}
	return c;
}

/* A master process that asks for a slow worker and waits for its answer until killed. */
static int
slow_master(void *arg)
{
	struct slow_master *m = arg;
	struct ht_conn *c = spawn_slow(m->d, m->name, m->policy);

	if (!c)
		return 10;
	json_decref(ht_conn_recv(c, 60000));
	return 11;
}

/*
 * The master of a worker in a 15 s init goes away (SIGKILLed, or closing its
 * connection); the worker must be gone within the grace period.
 */
static void
orphan_during_init(
    const struct ht_daemon *d, struct ht_conn *look, const char *policy, bool kill_it)
{
	struct slow_master m = { d, NULL, policy };
	struct ht_conn *c = NULL;
	char name[64];
	json_t *w;
	pid_t master = 0, pid;
	int64_t t0;
	int status;

	snprintf(name, sizeof(name), "slow-%s-%s", policy, kill_it ? "killed" : "closed");
	m.name = name;
	if (kill_it) {
		master = ht_fork_fn(slow_master, &m, (uid_t)-1, (gid_t)-1);
		ck_assert_int_gt(master, 0);
	} else {
		c = spawn_slow(d, name, policy);
		ck_assert_ptr_nonnull(c);
	}
	w = ht_herdd_wait_listed(look, name, "starting", ht_ms(5000));
	ck_assert_msg(w != NULL, "%s not listed as starting", name);
	pid = ht_worker_pid(w);
	json_decref(w);
	ck_assert_int_gt(pid, 0);
	ht_track_pid(pid);
	if (kill_it) {
		ck_assert_int_eq(kill(master, SIGKILL), 0);
		ck_assert_int_eq(ht_wait_child(master, ht_ms(5000), &status), 0);
	} else {
		ht_conn_close(c);
	}
	t0 = ht_now_ms();
	ck_assert_msg(ht_wait_pid_gone(pid, ht_ms(GRACE_MS + 2000)) == 0,
	    "%s: worker pid %d still there %lld ms after its master went", name, (int)pid,
	    (long long)(ht_now_ms() - t0));
}

START_TEST(test_master_gone_during_slow_init)
{
	struct ht_conn *look = ht_herdd_open(ht_herdd, "inspector", "look");

	ck_assert_ptr_nonnull(look);
	orphan_during_init(ht_herdd, look, "connection_closed", true);
	orphan_during_init(ht_herdd, look, "connection_closed", false);
	orphan_during_init(ht_herdd, look, "explicit", true);
	orphan_during_init(ht_herdd, look, "explicit", false);
	ht_conn_close(look);
}
END_TEST

START_TEST(test_bad_output_file_is_named)
{
	struct ht_conn *c = ht_master;
	const char *const which[] = { "stdout", "stderr" };
	json_t *r;

	for (int i = 0; i < 2; i++) {
		char file[64];
		const char *msg;

		snprintf(file, sizeof(file), "/nonexistent-dir/%s.log", which[i]);
		r = ht_spawn(c,
		    ht_testworker_params(json_pack("{s:{s:s}}", which[i], "file", file)),
		    ht_ms(10000));
		ht_assert_error(r, "spawn_failed");
		msg = ht_error_message(r);
		ck_assert_msg(msg && strstr(msg, file) && strstr(msg, which[i]),
		    "the error does not name %s: %s", file, ht_dump(r));
		ck_assert_str_eq(ht_str(ht_error_data(r), "stage"), which[i]);
		json_decref(r);
	}
}
END_TEST

static void
ignore_sigpipe(void)
{
	signal(SIGPIPE, SIG_IGN);
}

HT_MAIN("herdd-hardening",
    HT_HERDD_CASE_WITH("hardening", 60, ht_grace_args, ignore_sigpipe, finish,
        test_cut_texts_in_herdd_replies, test_cut_texts_in_worker_replies,
        test_long_init_failure_reaches_owner, test_long_failure_reaches_owner,
        test_many_failures_all_recorded, test_ids_out_of_range,
        test_owner_connection_outlives_worker, test_master_gone_during_slow_init,
        test_bad_output_file_is_named),
    /* Its own herdd, with a log file to read. */
    { .name = "log",
        .timeout_s = 60,
        .setup = ignore_sigpipe,
        .tests = { test_log_cannot_be_forged } })
