/* SPDX-License-Identifier: MIT */
/*
 * Any executable as a worker (spawn option "ready"): /bin/sleep with ready
 * "exec" is ready once exec'd, has no fd 3, and is stopped by shutdown and
 * killed with its master. A Python program speaking sd_notify with ready
 * "notify" is ready at READY=1, shows its STATUS= in inspect, and dies as
 * heartbeat_lost once its WATCHDOG=1 pings stop; one that never says READY=1
 * ends as spawn_timeout, even when another process sends READY=1 for it. A bad value is refused; herdctl spawn passes --ready.
 */
#include <stdio.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ht-check.h"

#define HB_INTERVAL_MS 100
#define HB_TIMEOUT_MS  300

/*
 * argv[1] "ready": STATUS=, READY=1, then WATCHDOG=1 every 50 ms for a
 * second, then silence; "never": silence. Exits 3 without NOTIFY_SOCKET or
 * WATCHDOG_USEC, or with HERD_CHANNEL_FD set.
 */
static const char notify_py[] =
    "import os, socket, sys, time\n"
    "a = os.environ.get('NOTIFY_SOCKET')\n"
    "if not a or 'WATCHDOG_USEC' not in os.environ or 'HERD_CHANNEL_FD' in os.environ:\n"
    "    sys.exit(3)\n"
    "if a[0] == '@':\n"
    "    a = '\\0' + a[1:]\n"
    "s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
    "if sys.argv[1] == 'ready':\n"
    "    s.sendto(b'STATUS=warming up', a)\n"
    "    s.sendto(b'STATUS=serving\\nREADY=1', a)\n"
    "    for i in range(20):\n"
    "        s.sendto(b'WATCHDOG=1', a)\n"
    "        time.sleep(0.05)\n"
    "time.sleep(1000)\n";

static json_t *
notify_params(const char *what, json_t *extra)
{
	json_t *p =
	    json_pack("{s:s, s:[s, s, s, s], s:s, s:{s:i, s:i}}", "path", "/usr/bin/python3",
	        "argv", "python3", "-c", notify_py, what, "ready", "notify", "settings",
	        "heartbeat_interval_ms", HB_INTERVAL_MS, "heartbeat_timeout_ms", HB_TIMEOUT_MS);

	if (extra) {
		json_object_update(p, extra);
		json_decref(extra);
	}
	return p;
}

static json_t *
sleep_params(void)
{
	return json_pack(
	    "{s:s, s:[s, s], s:s}", "path", "/bin/sleep", "argv", "sleep", "1000", "ready", "exec");
}

/* Whether pid holds an fd 3. */
static bool
holds_fd3(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/fd/3", (int)pid);
	return access(path, F_OK) == 0;
}

static json_t *
inspect(const char *id)
{
	return ht_conn_call(ht_master, "inspect", json_pack("{s:s}", "id", id), ht_ms(5000));
}

START_TEST(test_exec_ready)
{
	struct ht_conn *m = ht_master, *m2;
	json_t *reply, *res, *w;
	pid_t pid;

	reply = ht_spawn(m, sleep_params(), ht_ms(10000));
	res = ht_assert_result(reply);
	pid = ht_worker_pid(res);
	ck_assert(ht_pid_alive(pid));
	/*
	 * No channel. Ready comes at exec, while the dynamic loader may still
	 * hold a library open at fd 3 for a moment: sleep's own start-up ends
	 * with no fd 3, which a channel would keep.
	 */
	ck_assert_msg(ht_wait_pid_while(pid, holds_fd3, ht_ms(5000)) == 0,
	    "/proc/%d/fd/3 still exists", (int)pid);
	w = inspect(ht_str(res, "id"));
	ck_assert_str_eq(ht_str(ht_assert_result(w), "state"), "ready");
	ck_assert_str_eq(ht_str(ht_result(w), "ready"), "exec");
	/* Nothing serves herd functions there. */
	ck_assert(json_is_null(json_object_get(ht_result(w), "socket")));
	json_decref(w);
	/* Stopped by shutdown: SIGTERM ends sleep. */
	w = ht_conn_call(m, "shutdown",
	    json_pack("{s:s, s:i}", "id", ht_str(res, "id"), "grace_ms", 500), ht_ms(10000));
	ck_assert_str_eq(ht_str(ht_assert_result(w), "reason"), "shutdown");
	json_decref(w);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(1000)), 0);
	json_decref(reply);

	/* Killed with its master. */
	m2 = ht_herdd_open(ht_herdd, "master", "short-lived");
	ck_assert_ptr_nonnull(m2);
	reply = ht_spawn(m2,
	    json_pack("{s:s, s:[s, s], s:s, s:s}", "path", "/bin/sleep", "argv", "sleep", "1000",
	        "ready", "exec", "shutdown_on", "master_disconnect"),
	    ht_ms(10000));
	pid = ht_worker_pid(ht_assert_result(reply));
	ht_conn_close(m2);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(2000)), 0);
	json_decref(reply);

	/* A failed exec is still spawn_failed, not ready. */
	reply = ht_spawn(
	    m, json_pack("{s:s, s:s}", "path", "/nonexistent/x", "ready", "exec"), ht_ms(10000));
	ht_assert_error(reply, "spawn_failed");
	json_decref(reply);
}
END_TEST

START_TEST(test_notify_ready_status_watchdog)
{
	struct ht_conn *m = ht_master;
	json_t *reply, *res, *w, *ev;
	pid_t pid;

	reply = ht_spawn(m, notify_params("ready", NULL), ht_ms(10000));
	res = ht_assert_result(reply);
	pid = ht_worker_pid(res);
	w = inspect(ht_str(res, "id"));
	ck_assert_str_eq(ht_str(ht_assert_result(w), "state"), "ready");
	ck_assert_str_eq(ht_str(ht_result(w), "ready"), "notify");
	ck_assert_str_eq(ht_str(ht_result(w), "status"), "serving");
	json_decref(w);
	/* The pings stop after a second; the watchdog fires one timeout later. */
	ev = ht_wait_event_ok(m, "heartbeat_lost", ht_str(res, "id"), ht_ms(5000));
	ck_assert_str_eq(ht_str(json_object_get(ev, "worker"), "reason"), "heartbeat_lost");
	json_decref(ev);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(1000)), 0);
	json_decref(reply);
}
END_TEST

/* Sends text to the notify socket of worker id from this process, not the worker. */
static void
send_foreign(const char *id, const char *text)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int n;

	ck_assert_int_ge(fd, 0);
	n = snprintf(
	    sa.sun_path + 1, sizeof(sa.sun_path) - 1, "herdd/%d/%s/1", (int)ht_herdd->pid, id);
	ck_assert_int_ne(sendto(fd, text, strlen(text), 0, (struct sockaddr *)&sa,
	                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)),
	    -1);
	close(fd);
}

START_TEST(test_notify_never_ready)
{
	json_t *reply, *list, *w;
	int64_t req;
	char id[32];

	/* A READY=1 from another process is not the worker's. */
	req = ht_conn_send_request(ht_master, "spawn",
	    notify_params("never", json_pack("{s:i}", "spawn_timeout_ms", 700)));
	ck_assert_int_gt(req, 0);
	list = ht_conn_call(ht_master, "list", NULL, ht_ms(5000));
	w = json_array_get(json_object_get(ht_assert_result(list), "workers"), 0);
	ck_assert_ptr_nonnull(w);
	snprintf(id, sizeof(id), "%s", ht_str(w, "id"));
	ht_track_pid(ht_worker_pid(w));
	json_decref(list);
	send_foreign(id, "READY=1");
	reply = ht_conn_wait_reply(ht_master, req, ht_ms(10000));
	ht_assert_error(reply, "timeout");
	json_decref(reply);
	ck_assert_int_eq(ht_herdd_children_gone(ht_herdd, ht_ms(2000)), 0);
}
END_TEST

START_TEST(test_bad_ready_and_herdctl)
{
	struct ht_out o;
	json_t *reply, *res;
	pid_t pid;

	reply = ht_spawn(ht_master,
	    json_pack("{s:s, s:s}", "path", "/bin/sleep", "ready", "whenever"), ht_ms(5000));
	ht_assert_error(reply, "invalid_params");
	ck_assert_ptr_nonnull(strstr(ht_dump(reply), "ready must be"));
	json_decref(reply);

	o = ht_herdctl(
	    ht_herdd->socket, "spawn", "--ready", "sometimes", "--", "/bin/sleep", "9", NULL);
	ck_assert_int_ne(o.code, 0);
	ht_out_free(&o);

	o = ht_herdctl(ht_herdd->socket, "--json", "spawn", "--ready", "exec", "--pid-namespace",
	    "--", "/bin/sleep", "1000", NULL);
	ck_assert_msg(o.code == 0, "spawn: %d %s %s", o.code, o.out, o.err);
	res = json_loads(o.out, 0, NULL);
	ck_assert_ptr_nonnull(res);
	pid = ht_worker_pid(res);
	ht_track_pid(pid);
	ck_assert(ht_pid_alive(pid));
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "inspect", ht_str(res, "id"), NULL);
	ck_assert_int_eq(o.code, 0);
	ck_assert_msg(strstr(o.out, "exec") && strstr(o.out, "pid_namespace"), "%s", o.out);
	ht_out_free(&o);
	o = ht_herdctl(ht_herdd->socket, "shutdown", ht_str(res, "id"), NULL);
	ck_assert_msg(o.code == 0, "shutdown: %s", o.err);
	ht_out_free(&o);
	ck_assert_int_eq(ht_wait_pid_gone(pid, ht_ms(2000)), 0);
	json_decref(res);
}
END_TEST

HT_MAIN("sup-ready",
    HT_HERDD_CASE("ready", 40, ht_grace_args, test_exec_ready, test_notify_ready_status_watchdog,
        test_notify_never_ready, test_bad_ready_and_herdctl))
