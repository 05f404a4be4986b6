/* SPDX-License-Identifier: MIT */
/*
 * The lossless event stream: seqs and herdd's instance id on every event,
 * subscribe's "since" replaying from the ring, one gap event with the exact
 * count when the ring no longer holds the point asked for, and a subscriber
 * that stops reading: herdd holds a bounded ring for it, not a growing queue,
 * and tells it what it lost once it reads again. herdctl watch --since and
 * logs --follow. Output files with a size cap, rotated.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"

/* Spawns at most this many at once (herdd's pending limit is 1024). */
#define BATCH 256

/* herdd (--event-ring ring unless NULL, a short grace) and a master connection on it. */
static struct ht_conn *
start(const char *ring, struct ht_daemon **ret_d)
{
	const char *const args[] = { "--grace-ms", "300", ring ? "--event-ring" : NULL, ring,
		NULL };
	struct ht_conn *m;

	*ret_d = ht_daemon_start_ok(args);
	m = ht_herdd_open(*ret_d, "master", "producer");
	ck_assert_ptr_nonnull(m);
	return m;
}

/* Closes m and stops d, which must exit 0. */
static void
finish(struct ht_daemon *d, struct ht_conn *m)
{
	ht_conn_close(m);
	ht_daemon_stop_ok(d);
}

/* Spawns the test worker (spawn params extra, stolen, may be NULL) on m: its id and socket. */
static void
spawn_worker(struct ht_conn *m, json_t *extra, char id[32], char sock[256])
{
	json_t *w = ht_spawn(m, ht_testworker_params(extra), ht_ms(10000));

	snprintf(id, 32, "%s", ht_str(ht_assert_result(w), "id"));
	snprintf(sock, 256, "%s", ht_str(ht_result(w), "socket"));
	json_decref(w);
}

/*
 * Makes n events through p, quickly: a spawn of a missing executable fails
 * at exec and ends with one "exited" event, sent to p (its owner), which
 * reads and drops them with the replies.
 */
static void
produce(struct ht_conn *p, int n)
{
	while (n > 0) {
		int k = n < BATCH ? n : BATCH, replies = 0, events = 0;

		for (int i = 0; i < k; i++)
			ck_assert(ht_conn_send_request(p, "spawn",
			              json_pack("{s:s}", "path", "/nonexistent/herd-event")) > 0);
		while (replies < k || events < k) {
			json_t *m = ht_conn_recv(p, ht_ms(20000));

			ck_assert_msg(m, "producer: %s", strerror(errno));
			if (json_object_get(m, "id"))
				replies++;
			else
				events++;
			json_decref(m);
		}
		n -= k;
	}
}

/* The next event on c (params, new reference); other notifications are dropped. */
static json_t *
next_event(struct ht_conn *c)
{
	json_t *m = ht_conn_wait_method(c, "event", ht_ms(10000));
	json_t *params;

	ck_assert_msg(m, "no event: %s", strerror(errno));
	params = json_incref(json_object_get(m, "params"));
	json_decref(m);
	return params;
}

static long long
seq_of(const json_t *ev)
{
	return json_integer_value(json_object_get(ev, "seq"));
}

/* Subscribes c to everything, optionally since a seq (-1: none). Returns the result. */
static json_t *
subscribe(struct ht_conn *c, long long since, const char *instance)
{
	json_t *params = json_pack("{s:b}", "all", 1);

	if (since >= 0)
		json_object_set_new(params, "since", json_integer(since));
	if (instance)
		json_object_set_new(params, "instance", json_string(instance));
	return ht_call_ok(c, "subscribe", params);
}

/*
 * A new inspector connection subscribed to everything since a seq (-1: none)
 * of instance (NULL: not said); herdd's instance goes to ret_instance.
 */
static struct ht_conn *
open_subscribed(struct ht_daemon *d, long long since, const char *instance, char ret_instance[64])
{
	struct ht_conn *s = ht_herdd_open(d, "inspector", "watch");
	json_t *r;

	ck_assert_ptr_nonnull(s);
	r = subscribe(s, since, instance);
	snprintf(ret_instance, 64, "%s", ht_str(ht_result(r), "instance"));
	json_decref(r);
	return s;
}

/* The next events on c must be seqs first..last, of instance. */
static void
expect_seqs(struct ht_conn *c, long long first, long long last, const char *instance)
{
	for (long long s = first; s <= last; s++) {
		json_t *ev = next_event(c);

		ck_assert_msg(seq_of(ev) == s, "expected seq %lld, got %s", s, ht_dump(ev));
		ck_assert_str_eq(ht_str(ev, "instance"), instance);
		ck_assert_str_eq(ht_str(ev, "event"), "exited");
		json_decref(ev);
	}
}

static json_t *
events_stats(struct ht_daemon *d)
{
	struct ht_conn *c = ht_herdd_open(d, "inspector", "stats");
	json_t *r = ht_call_ok(c, "stats", NULL);
	json_t *ev = json_incref(json_object_get(ht_result(r), "events"));

	ck_assert_ptr_nonnull(ev);
	json_decref(r);
	ht_conn_close(c);
	return ev;
}

START_TEST(test_seq_and_instance)
{
	struct ht_daemon *d;
	struct ht_conn *p = start(NULL, &d);
	struct ht_conn *s = ht_herdd_open(d, "inspector", "watch");
	json_t *r = subscribe(s, -1, NULL), *st;
	char instance[64];

	ck_assert_int_eq(json_integer_value(json_object_get(ht_result(r), "seq")), 0);
	snprintf(instance, sizeof(instance), "%s", ht_str(ht_result(r), "instance"));
	ck_assert_int_eq(strlen(instance), 32);
	json_decref(r);
	produce(p, 5);
	expect_seqs(s, 1, 5, instance);
	st = events_stats(d);
	ck_assert_str_eq(ht_str(st, "instance"), instance);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "seq")), 5);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "held")), 5);
	json_decref(st);
	/* since past the last event is a mistake, said so. */
	ht_expect(s, "subscribe", json_pack("{s:b, s:i}", "all", 1, "since", 6), "invalid_params");
	ht_expect(s, "subscribe", json_pack("{s:b, s:i}", "all", 1, "since", -1), "invalid_params");
	ht_expect(s, "subscribe", json_pack("{s:s}", "instance", instance), "invalid_params");
	ht_conn_close(s);
	finish(d, p);
}
END_TEST

START_TEST(test_since_replays_what_was_missed)
{
	struct ht_daemon *d;
	struct ht_conn *p = start(NULL, &d);
	struct ht_conn *s;
	char instance[64];

	produce(p, 10);
	s = open_subscribed(d, 4, NULL, instance);
	/* Exactly the six it missed, then live ones. */
	expect_seqs(s, 5, 10, instance);
	produce(p, 1);
	expect_seqs(s, 11, 11, instance);
	ht_conn_close(s);
	/* Resuming with our own instance named is the same. */
	s = open_subscribed(d, 9, instance, instance);
	expect_seqs(s, 10, 11, instance);
	ht_conn_close(s);
	finish(d, p);
}
END_TEST

/* The next event must be a gap of first..last with reason. */
static void
expect_gap(struct ht_conn *c, long long first, long long last, const char *reason)
{
	json_t *ev = next_event(c);

	ck_assert_msg(
	    strcmp(ht_str(ev, "event"), "gap") == 0, "expected a gap, got %s", ht_dump(ev));
	ck_assert_int_eq(json_integer_value(json_object_get(ev, "lost")), last - first + 1);
	ck_assert_int_eq(json_integer_value(json_object_get(ev, "first")), first);
	ck_assert_int_eq(json_integer_value(json_object_get(ev, "last")), last);
	ck_assert_str_eq(ht_str(ev, "reason"), reason);
	json_decref(ev);
}

START_TEST(test_since_older_than_ring)
{
	struct ht_daemon *d;
	struct ht_conn *p = start("16", &d);
	struct ht_conn *s;
	char instance[64], other[64];

	produce(p, 40);
	s = open_subscribed(d, 3, NULL, instance);
	/* The ring holds 25..40: 4..24 are gone, said once, then the rest. */
	expect_gap(s, 4, 24, "since");
	expect_seqs(s, 25, 40, instance);
	ht_conn_close(s);
	/* Another herdd's seqs mean nothing here: all that is gone, then all there is. */
	s = open_subscribed(d, 30, "0123456789abcdef0123456789abcdef", other);
	ck_assert_str_eq(other, instance);
	expect_gap(s, 1, 24, "instance");
	expect_seqs(s, 25, 40, instance);
	ht_conn_close(s);
	finish(d, p);
}
END_TEST

/*
 * A subscriber that never reads (a 4 KiB receive buffer) while 10,000 events
 * pass: herdd keeps the ring and a short queue for it, not 10,000 events,
 * and when it reads it gets what it had queued, one gap with the exact
 * count, then the ring's events to the last.
 */
START_TEST(test_slow_subscriber_told_it_fell_behind)
{
	struct ht_daemon *d;
	struct ht_conn *p = start("256", &d);
	struct ht_conn *s = ht_herdd_open(d, "inspector", "sleepy");
	const int total = 10000;
	long long expect = 1, got = 0, lost = 0;
	int small = 4096, gaps = 0;
	json_t *st, *r;

	ck_assert_int_eq(
	    setsockopt(ht_conn_fd(s), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	r = subscribe(s, -1, NULL);
	json_decref(r);
	produce(p, total);
	st = events_stats(d);
	ck_assert_int_eq(json_integer_value(json_object_get(st, "seq")), total);
	ck_assert_int_le(json_integer_value(json_object_get(st, "held")), 256);
	json_decref(st);
	/* Now it reads: contiguous seqs, a gap that covers exactly the rest, to the last. */
	while (expect <= total) {
		json_t *ev = next_event(s);

		if (strcmp(ht_str(ev, "event"), "gap") == 0) {
			ck_assert_int_eq(json_integer_value(json_object_get(ev, "first")), expect);
			ck_assert_str_eq(ht_str(ev, "reason"), "fell_behind");
			lost += json_integer_value(json_object_get(ev, "lost"));
			expect = json_integer_value(json_object_get(ev, "last")) + 1;
			gaps++;
		} else {
			ck_assert_msg(
			    seq_of(ev) == expect, "expected seq %lld, got %s", expect, ht_dump(ev));
			expect++;
			got++;
		}
		json_decref(ev);
	}
	fprintf(stderr, "slow subscriber: %lld events received, %lld reported lost in %d gap(s)\n",
	    got, lost, gaps);
	ck_assert_int_eq(gaps, 1);
	ck_assert_int_eq(got + lost, total);
	ck_assert_int_gt(lost, 0);
	/* It is live again. */
	produce(p, 1);
	r = next_event(s);
	ck_assert_int_eq(seq_of(r), total + 1);
	json_decref(r);
	ht_conn_close(s);
	finish(d, p);
}
END_TEST

/* Reads JSON lines from l until one whose key is value; returns it (new reference). */
static json_t *
read_json_until(struct ht_lines *l, const char *key, const char *value)
{
	int64_t deadline = ht_now_ms() + ht_ms(10000);

	while (ht_read_line(l, (int)(deadline - ht_now_ms())) >= 0) {
		json_t *v = json_loads(l->buf, 0, NULL);

		ck_assert_msg(v, "herdctl printed a line that is not JSON: %s", l->buf);
		if (!strcmp(ht_str(v, key) ?: "", value))
			return v;
		json_decref(v);
	}
	ck_abort_msg("no line with %s %s", key, value);
	return NULL;
}

/* herdctl watch --since: the replay, the gap, then live events, as JSON lines with seq. */
START_TEST(test_herdctl_watch_since)
{
	struct ht_daemon *d;
	struct ht_conn *p = start("8", &d);
	const char *argv[] = { ht_env_path("HERDCTL"), "--socket", d->socket, "--json", "watch",
		"--since", "2", NULL };
	struct ht_lines l = { 0 };
	json_t *ev;
	pid_t watch;

	produce(p, 12);
	watch = ht_start_reader(argv, &l.fd);
	ck_assert_int_gt(watch, 0);
	/* The ring holds 5..12: 3 and 4 are lost. */
	ev = read_json_until(&l, "event", "gap");
	ck_assert_int_eq(json_integer_value(json_object_get(ev, "lost")), 2);
	ck_assert_int_eq(json_integer_value(json_object_get(ev, "first")), 3);
	json_decref(ev);
	for (long long s = 5; s <= 12; s++) {
		ev = read_json_until(&l, "event", "exited");
		ck_assert_int_eq(seq_of(ev), s);
		json_decref(ev);
	}
	produce(p, 1);
	ev = read_json_until(&l, "event", "exited");
	ck_assert_int_eq(seq_of(ev), 13);
	json_decref(ev);
	kill(watch, SIGTERM);
	ck_assert_int_eq(ht_wait_child(watch, ht_ms(2000), NULL), 0);
	close(l.fd);
	finish(d, p);
}
END_TEST

/* herdctl logs --follow: lines written after it started, then it ends with the worker. */
START_TEST(test_herdctl_logs_follow)
{
	struct ht_daemon *d;
	struct ht_conn *m = start(NULL, &d);
	const char *argv[] = { ht_env_path("HERDCTL"), "--socket", d->socket, "logs", "--follow",
		NULL, NULL };
	struct ht_lines l = { 0 };
	char id[32], sock[256];
	int status = -1;
	pid_t follow;

	spawn_worker(m, NULL, id, sock);
	argv[5] = id;
	ht_worker_writes_ok(sock, "stderr", "before");
	follow = ht_start_reader(argv, &l.fd);
	ck_assert_int_gt(follow, 0);
	/* The last lines first (the reply), so it follows once "before" is printed. */
	for (;;) {
		ck_assert_int_ge(ht_read_line(&l, ht_ms(10000)), 0);
		if (!strcmp(l.buf, "before"))
			break;
	}
	for (int i = 0; i < 3; i++) {
		char text[32];

		snprintf(text, sizeof(text), "after %d", i);
		ht_worker_writes_ok(sock, "stderr", text);
		ck_assert_int_ge(ht_read_line(&l, ht_ms(10000)), 0);
		ck_assert_str_eq(l.buf, text);
	}
	/* The worker stops: herdctl prints its last words and exits 0. */
	ht_expect(m, "shutdown", json_pack("{s:s}", "id", id), NULL);
	ck_assert_int_eq(ht_wait_child(follow, ht_ms(10000), &status), 0);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	close(l.fd);
	finish(d, m);
}
END_TEST

/* The length of the file at path, read whole; -1 if absent. */
static long
read_length(const char *path)
{
	size_t n;
	char *text = ht_read_file(path, &n);

	if (!text)
		return -1;
	free(text);
	return (long)n;
}

/*
 * The files of a rotated path, oldest first, against all the worker wrote:
 * exactly files of them (path.files absent), each at most cap bytes, together
 * the end of all. Returns how many bytes they hold.
 */
static size_t
assert_rotated(const char *path, int files, long cap, const char *all)
{
	char name[300], got[8192] = "";
	size_t len;

	for (int k = files - 1; k >= 0; k--) {
		char *part;
		size_t n;

		snprintf(name, sizeof(name), k ? "%s.%d" : "%s", path, k);
		part = ht_read_file(name, &n);
		ck_assert_msg(part, "%s is missing", name);
		ck_assert_int_le(n, cap);
		len = strlen(got);
		snprintf(got + len, sizeof(got) - len, "%s", part);
		free(part);
	}
	snprintf(name, sizeof(name), "%s.%d", path, files);
	ck_assert_int_eq(access(name, F_OK), -1);
	/* Newest in the base file, and nothing lost between the files kept. */
	len = strlen(got);
	ck_assert_str_eq(got, all + strlen(all) - len);
	return len;
}

/* n lines of the worker at sock to its stdout, each also appended to all. */
static void
write_lines(const char *sock, int n, char *all, size_t size)
{
	for (int i = 0; i < n; i++) {
		char text[64];
		size_t len = strlen(all);

		snprintf(text, sizeof(text), "line %03d of the worker's output", i);
		ht_worker_writes_ok(sock, "stdout", text);
		snprintf(all + len, size - len, "%s\n", text);
	}
}

/*
 * stdout to a file of at most 100 bytes, 3 files: after 40 lines herdd has
 * rotated it, each file holds at most 100 bytes, no fourth file exists, and
 * the files, oldest first, are exactly the end of what the worker wrote.
 */
START_TEST(test_log_rotation)
{
	struct ht_daemon *d;
	struct ht_conn *m = start(NULL, &d);
	char dir[128], path[256], all[4096] = "";
	char id[32], sock[256];

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/out.log", dir);
	/* Bad caps are refused. */
	ht_expect(m, "spawn",
	    ht_testworker_params(
	        json_pack("{s:{s:s, s:i}}", "stdout", "file", path, "max_bytes", 10)),
	    "invalid_params");
	ht_expect(m, "spawn",
	    ht_testworker_params(
	        json_pack("{s:{s:s, s:i}}", "stdout", "file", path, "max_files", 0)),
	    "invalid_params");
	spawn_worker(m,
	    json_pack(
	        "{s:{s:s, s:i, s:i}}", "stdout", "file", path, "max_bytes", 100, "max_files", 3),
	    id, sock);
	write_lines(sock, 40, all, sizeof(all));
	/* Reaped means herdd has read the pipe to its end. */
	ht_expect(m, "shutdown", json_pack("{s:s}", "id", id), NULL);
	ck_assert_int_gt(assert_rotated(path, 3, 100, all), 200);
	finish(d, m);
}
END_TEST

/*
 * Caps by default: a file output that names none gets herdd's
 * --output-max-bytes and --output-max-files (here 1000 bytes, 3 files); a
 * spawn or herdctl's --max-bytes 0 takes the cap off; a FIFO is never
 * rotated (the worker holds it, as before).
 */
START_TEST(test_log_caps_by_default)
{
	const char *const args[] = { "--grace-ms", "300", "--output-max-bytes", "1000",
		"--output-max-files", "3", NULL };
	struct ht_daemon *d = ht_daemon_start_ok(args);
	struct ht_conn *m = ht_herdd_open(d, "master", "producer");
	char dir[128], path[256], free_path[256], ctl_path[256], name[300], all[8192] = "";
	char id[32], sock[256];
	struct ht_out o;
	json_t *res;

	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/default.log", dir);
	snprintf(free_path, sizeof(free_path), "%s/uncapped.log", dir);
	snprintf(ctl_path, sizeof(ctl_path), "%s/herdctl.log", dir);

	/* 150 lines of 31 bytes, 4650 bytes, past three files of 1000. */
	spawn_worker(m, json_pack("{s:{s:s}}", "stdout", "file", path), id, sock);
	write_lines(sock, 150, all, sizeof(all));
	ht_expect(m, "shutdown", json_pack("{s:s}", "id", id), NULL);
	/* The two older files full of whole 32-byte lines (992 bytes each), the newest begun. */
	ck_assert_int_gt(assert_rotated(path, 3, 1000, all), 2 * 992);

	/* max_bytes 0: the worker holds the file, nothing caps it. */
	all[0] = '\0';
	spawn_worker(
	    m, json_pack("{s:{s:s, s:i}}", "stdout", "file", free_path, "max_bytes", 0), id, sock);
	write_lines(sock, 50, all, sizeof(all));
	ht_expect(m, "shutdown", json_pack("{s:s}", "id", id), NULL);
	ck_assert_int_eq(read_length(free_path), (long)strlen(all));
	ck_assert_int_gt(strlen(all), 1000);
	snprintf(name, sizeof(name), "%s.1", free_path);
	ck_assert_int_eq(access(name, F_OK), -1);

	/* herdctl spawn --stdout FILE: the default caps too. */
	o = ht_herdctl(d->socket, "--json", "spawn", "--stdout", ctl_path, "--",
	    ht_env_path("HERD_TESTWORKER"), NULL);
	ck_assert_msg(o.code == 0, "%s", o.err);
	res = json_loads(o.out, 0, NULL);
	ck_assert_ptr_nonnull(res);
	ht_track_pid(ht_worker_pid(res));
	all[0] = '\0';
	write_lines(ht_str(res, "socket"), 100, all, sizeof(all));
	ht_expect(m, "shutdown", json_pack("{s:s}", "id", ht_str(res, "id")), NULL);
	assert_rotated(ctl_path, 3, 1000, all);
	json_decref(res);
	ht_out_free(&o);
	finish(d, m);
}
END_TEST

/*
 * herdd's own default, 10 MiB and 5 files: a worker that writes 12 MB into a
 * file the spawn gave no caps leaves a full first file rotated and the rest
 * in the new one, none above 10 MiB.
 */
START_TEST(test_log_default_is_10mib)
{
	struct ht_daemon *d;
	struct ht_conn *m = start(NULL, &d);
	char dir[128], path[256], name[300];
	const long cap = 10l << 20, total = 12000000;
	struct stat st;
	long sum = 0;
	json_t *r;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/big.log", dir);
	/* Lines of 100 bytes (fold leaves the last newline to echo); the process ends before any ready, so spawn answers worker_exited. */
	r = ht_spawn(m,
	    ht_sh_params("head -c 11880000 /dev/zero | tr '\\0' x | fold -w 99; echo",
	        json_pack("{s:{s:s}}", "stdout", "file", path)),
	    ht_ms(30000));
	ht_assert_error(r, "worker_exited");
	json_decref(r);
	for (int k = 0; k < 3; k++) {
		snprintf(name, sizeof(name), k ? "%s.%d" : "%s", path, k);
		if (k == 2) {
			ck_assert_int_eq(stat(name, &st), -1);
			break;
		}
		ck_assert_int_eq(stat(name, &st), 0);
		ck_assert_int_le(st.st_size, cap);
		sum += (long)st.st_size;
	}
	snprintf(name, sizeof(name), "%s.1", path);
	ck_assert_int_eq(stat(name, &st), 0);
	/* Rotated at a line end: the first file is within one line of the cap. */
	ck_assert_int_gt(st.st_size, cap - 100);
	ck_assert_int_eq(sum, total);
	finish(d, m);
}
END_TEST

/* herdctl spawn --max-bytes/--max-files: the caps reach herdd with the file; alone, a usage error. */
START_TEST(test_herdctl_spawn_caps)
{
	struct ht_daemon *d;
	struct ht_conn *m = start(NULL, &d);
	char dir[128], path[256], older[300], *out = NULL, *err = NULL, *kept;
	size_t n;
	const char *argv[] = { ht_env_path("HERDCTL"), "--socket", d->socket, "--json", "spawn",
		"--stdout", path, "--max-bytes", "100", "--max-files", "2", "--",
		ht_env_path("HERD_TESTWORKER"), NULL };
	const char *bad[] = { ht_env_path("HERDCTL"), "--socket", d->socket, "spawn", "--max-files",
		"2", "--", ht_env_path("HERD_TESTWORKER"), NULL };
	const char *text = "0123456789012345678901234567890123456789012345678901234567-";
	json_t *res;

	ck_assert_int_eq(ht_tmpdir(dir, sizeof(dir)), 0);
	snprintf(path, sizeof(path), "%s/caps.log", dir);
	ck_assert_int_eq(ht_run(bad, NULL, &err, ht_ms(10000)), 2);
	ck_assert_ptr_nonnull(strstr(err, "--max-bytes and --max-files"));
	free(err);
	err = NULL;
	ck_assert_int_eq(ht_run(argv, &out, &err, ht_ms(10000)), 0);
	res = json_loads(out, 0, NULL);
	ck_assert_msg(res, "herdctl spawn printed %s", out);
	ht_track_pid((pid_t)json_integer_value(json_object_get(res, "pid")));
	/* 3 lines of 60 bytes under a 100-byte cap with 2 files: one a file, the first rotated out. */
	for (int i = 0; i < 3; i++)
		ht_worker_writes_ok(ht_str(res, "socket"), "stdout", text);
	ht_expect(m, "shutdown", json_pack("{s:s}", "id", ht_str(res, "id")), NULL);
	kept = ht_read_file(path, &n);
	ck_assert_ptr_nonnull(kept);
	ck_assert_int_eq(n, 60);
	fprintf(stderr, "[%s]\n", kept);
	free(kept);
	snprintf(older, sizeof(older), "%s.1", path);
	ck_assert_int_eq(read_length(older), 60);
	snprintf(older, sizeof(older), "%s.2", path);
	ck_assert_int_eq(access(older, F_OK), -1);
	json_decref(res);
	free(out);
	free(err);
	finish(d, m);
}
END_TEST

HT_MAIN("herdd-events",
    HT_CASE("events", 120, test_seq_and_instance, test_since_replays_what_was_missed,
        test_since_older_than_ring, test_slow_subscriber_told_it_fell_behind,
        test_herdctl_watch_since, test_herdctl_logs_follow, test_log_rotation,
        test_herdctl_spawn_caps, test_log_caps_by_default, test_log_default_is_10mib))
