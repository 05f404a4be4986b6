/* SPDX-License-Identifier: MIT */
/*
 * herdctl as a program against a real herdd: usage errors, spawn, list,
 * inspect, call, logs, kill, shutdown, stats and watch, tables for people and
 * --json for scripts, and the one-line error with a non-zero exit.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "ht-check.h"

/* Parses stdout as one JSON text. */
static json_t *
out_json(const struct ht_out *o)
{
	json_error_t e;
	json_t *v = json_loads(o->out, JSON_DECODE_ANY, &e);

	ck_assert_msg(v, "herdctl printed no JSON (%s): %s", e.text, o->out);
	return v;
}

/* Exactly one line on stderr, starting with "herdctl: NAME: ". */
static void
assert_error_line(const struct ht_out *o, const char *name)
{
	char prefix[128];

	snprintf(prefix, sizeof(prefix), "herdctl: %s: ", name);
	ck_assert_msg(o->code == 1, "exit code %d, stderr %s", o->code, o->err);
	ck_assert_msg(strncmp(o->err, prefix, strlen(prefix)) == 0, "stderr: %s", o->err);
	ck_assert_msg(
	    strchr(o->err, '\n') == o->err + strlen(o->err) - 1, "not one line: %s", o->err);
}

START_TEST(test_usage)
{
	struct ht_out o;

	o = ht_herdctl(NULL, NULL);
	ck_assert_int_eq(o.code, 2);
	ht_out_free(&o);
	o = ht_herdctl(NULL, "frobnicate", NULL);
	ck_assert_int_eq(o.code, 2);
	ck_assert_ptr_nonnull(strstr(o.err, "frobnicate"));
	ht_out_free(&o);
	o = ht_herdctl(NULL, "--help", NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_ptr_nonnull(strstr(o.out, "--shutdown-on"));
	ck_assert_ptr_nonnull(strstr(o.out, "explicit"));
	ht_out_free(&o);
	/* No herdd there: one error line, exit 1. */
	o = ht_herdctl("/nonexistent/herdd.sock", "list", NULL);
	ck_assert_int_eq(o.code, 1);
	ck_assert_msg(strncmp(o.err, "herdctl: ", 9) == 0, "stderr: %s", o.err);
	ht_out_free(&o);
}
END_TEST

START_TEST(test_spawn_list_call_stop)
{
	struct ht_daemon *d = ht_herdd;
	const char *tw = ht_env_path("HERD_TESTWORKER");
	struct ht_out o;
	json_t *res, *w;
	char id[32], id2[32];
	pid_t pid, pid2;

	o = ht_herdctl(d->socket, "--json", "spawn", "--name", "tw", "--init", "{\"k\":1}", "--env",
	    "COLOUR=green", "--cwd", "/tmp", "--", tw, NULL);
	ck_assert_msg(o.code == 0, "spawn: %s", o.err);
	res = out_json(&o);
	snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(res, "id")));
	pid = ht_worker_pid(res);
	ht_track_pid(pid);
	json_decref(res);
	ht_out_free(&o);
	/* herdctl has exited, and the explicit worker lives on. */
	ck_assert(ht_pid_alive(pid));

	o = ht_herdctl(d->socket, "spawn", "--name", "tw2", "--", tw, NULL);
	ck_assert_msg(o.code == 0, "spawn: %s", o.err);
	ck_assert_int_eq(sscanf(o.out, "%31s %d", id2, &pid2), 2);
	ht_track_pid(pid2);
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "list", NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_msg(strncmp(o.out, "ID ", 3) == 0 && strstr(o.out, "REASON"), "%s", o.out);
	ck_assert_ptr_nonnull(strstr(o.out, id));
	ck_assert_ptr_nonnull(strstr(o.out, id2));
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "--json", "list", NULL);
	res = out_json(&o);
	ck_assert_int_eq(json_array_size(json_object_get(res, "workers")), 2);
	json_decref(res);
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "inspect", id, NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_ptr_nonnull(strstr(o.out, "explicit"));
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "call", id, "sum", "{\"n\":10}", NULL);
	ck_assert_msg(o.code == 0, "call: %s", o.err);
	ck_assert_str_eq(o.out, "45\n");
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "--json", "call", id, "env", "{\"name\":\"COLOUR\"}", NULL);
	res = out_json(&o);
	ck_assert_str_eq(json_string_value(json_object_get(res, "value")), "green");
	json_decref(res);
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "--json", "call", id, "state", NULL);
	res = out_json(&o);
	ck_assert_int_eq(json_integer_value(json_object_get(json_object_get(res, "init"), "k")), 1);
	json_decref(res);
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "call", id, "fail", "{\"message\":\"no such thing\"}", NULL);
	assert_error_line(&o, "function_failed");
	ck_assert_str_eq(o.err, "herdctl: function_failed: no such thing\n");
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "call", id, "stderr", "{\"text\":\"a line for the logs\"}", NULL);
	ck_assert_int_eq(o.code, 0);
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "logs", id, "--lines", "50", NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_msg(strstr(o.out, "a line for the logs"), "logs: %s", o.out);
	ht_out_free(&o);

	o = ht_herdctl(d->socket, "kill", id2, "KILL", NULL);
	ck_assert_msg(o.code == 0, "kill: %s", o.err);
	ht_out_free(&o);
	ck_assert_int_eq(ht_wait_pid_gone(pid2, ht_ms(2000)), 0);

	o = ht_herdctl(d->socket, "--json", "shutdown", id, "--grace-ms", "1000", NULL);
	ck_assert_msg(o.code == 0, "shutdown: %s", o.err);
	w = out_json(&o);
	ck_assert_str_eq(json_string_value(json_object_get(w, "state")), "exited");
	json_decref(w);
	ht_out_free(&o);
	ck_assert(!ht_pid_alive(pid));

	o = ht_herdctl(d->socket, "inspect", "w999", NULL);
	assert_error_line(&o, "worker_not_found");
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "list", "--all", NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_ptr_nonnull(strstr(o.out, "shutdown"));
	ht_out_free(&o);
	o = ht_herdctl(d->socket, "--json", "stats", NULL);
	res = out_json(&o);
	ck_assert(json_integer_value(json_object_get(res, "spawns")) >= 2);
	json_decref(res);
	ht_out_free(&o);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(1000)), 0);
}
END_TEST

/* Reads watch's lines until an event named event about a worker named name. */
static json_t *
read_event(struct ht_lines *l, const char *event, const char *name, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	while (ht_read_line(l, (int)(deadline - ht_now_ms())) >= 0) {
		json_t *ev = json_loads(l->buf, 0, NULL);
		json_t *w = json_object_get(ev, "worker");
		const char *e = json_string_value(json_object_get(ev, "event"));
		const char *n = json_string_value(json_object_get(w, "name"));

		ck_assert_msg(ev, "watch printed a line that is not JSON: %s", l->buf);
		if (e && n && !strcmp(e, event) && !strcmp(n, name))
			return ev;
		json_decref(ev);
		if (ht_now_ms() >= deadline)
			break;
	}
	return NULL;
}

START_TEST(test_watch)
{
	struct ht_daemon *d = ht_herdd;
	const char *argv[] = { ht_env_path("HERDCTL"), "--socket", NULL, "--json", "watch", NULL };
	struct ht_lines l = { 0 };
	struct ht_conn *m = ht_master;
	json_t *reply, *ev = NULL;
	int64_t deadline;
	pid_t watch;

	argv[2] = d->socket;
	watch = ht_start_reader(argv, &l.fd);
	ck_assert_int_gt(watch, 0);
	m = ht_master;
	/*
	 * watch subscribes some time after it starts, and says nothing until an event
	 * comes: spawn probes until one is seen, then every later event must show.
	 */
	deadline = ht_now_ms() + ht_ms(10000);
	while (!ev && ht_now_ms() < deadline) {
		reply = ht_spawn(
		    m, ht_testworker_params(json_pack("{s:s}", "name", "probe")), ht_ms(10000));
		ht_assert_result(reply);
		json_decref(reply);
		ev = read_event(&l, "ready", "probe", 200);
	}
	ck_assert_msg(ev, "watch printed no event");
	json_decref(ev);

	reply =
	    ht_spawn(m, ht_testworker_params(json_pack("{s:s}", "name", "watched")), ht_ms(10000));
	ht_assert_result(reply);
	json_decref(reply);
	ev = read_event(&l, "ready", "watched", ht_ms(5000));
	ck_assert_msg(ev, "watch missed the ready event");
	json_decref(ev);
	/* The master leaves: its worker is stopped as an orphan. */
	ht_conn_close(m);
	ht_master = NULL;
	ev = read_event(&l, "stopped", "watched", ht_ms(5000));
	ck_assert_msg(ev, "watch missed the stopped event");
	ck_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(ev, "worker"), "reason")),
	    "killed_orphan");
	json_decref(ev);
	kill(watch, SIGTERM);
	ck_assert_int_eq(ht_wait_child(watch, ht_ms(2000), NULL), 0);
	close(l.fd);
}
END_TEST

HT_MAIN("sup-herdctl", HT_CASE("usage", 40, test_usage),
    HT_HERDD_CASE("herdctl", 40, ht_grace_args, test_spawn_list_call_stop, test_watch))
