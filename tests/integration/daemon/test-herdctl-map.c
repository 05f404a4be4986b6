/* SPDX-License-Identifier: MIT */
/*
 * herdctl map against a real herdd and herd-testworker: exact output in
 * order and out of order, a failing task's error line in its place, a poison
 * task reported with its signal and stderr tail, a worker SIGKILLed in the
 * middle, a task timeout, the pool shown by list, and no progress bar when
 * stderr is not a terminal (and one when it is).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ht-check.h"

#define N_LINES 1000

struct map_run {
	char dir[128];
	char in[192], out[192], err[192];
	pid_t pid;
	int code;
	char *stdout_text, *stderr_text;
};

/* The whole file (malloc'd), or fails the test. */
static char *
read_file(const char *path)
{
	char *text = ht_read_file(path, NULL);

	ck_assert_msg(text, "%s: %s", path, strerror(errno));
	return text;
}

/*
 * Starts herdctl --socket S map ARGS... with stdin from in_fd (or r->in when
 * in_fd < 0) and stdout, stderr into files of r->dir.
 */
static void
map_start(struct map_run *r, int in_fd, const char *const *args)
{
	const char *argv[32];
	size_t n = 0;

	argv[n++] = ht_env_path("HERDCTL");
	ck_assert_ptr_nonnull(argv[0]);
	argv[n++] = "--socket";
	argv[n++] = ht_herdd->socket;
	argv[n++] = "map";
	for (; *args && n < 31; args++)
		argv[n++] = *args;
	argv[n] = NULL;
	r->pid = fork();
	ck_assert_int_ge(r->pid, 0);
	if (r->pid == 0) {
		int in = in_fd >= 0 ? in_fd : open(r->in, O_RDONLY);
		int out = open(r->out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int err = open(r->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if (in < 0 || out < 0 || err < 0 || dup2(in, 0) < 0 || dup2(out, 1) < 0 ||
		    dup2(err, 2) < 0)
			_exit(126);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	ht_track_child(r->pid);
}

/* Waits for herdctl and reads what it wrote. */
static void
map_wait(struct map_run *r)
{
	int status;

	ck_assert_int_eq(ht_wait_child(r->pid, ht_ms(60000), &status), 0);
	ck_assert(WIFEXITED(status));
	r->code = WEXITSTATUS(status);
	r->stdout_text = read_file(r->out);
	r->stderr_text = read_file(r->err);
}

static void
map_prepare(struct map_run *r, const char *input)
{
	ck_assert_int_eq(ht_tmpdir(r->dir, sizeof(r->dir)), 0);
	snprintf(r->in, sizeof(r->in), "%s/in", r->dir);
	snprintf(r->out, sizeof(r->out), "%s/out", r->dir);
	snprintf(r->err, sizeof(r->err), "%s/err", r->dir);
	if (input)
		ck_assert_int_eq(ht_write_file(r->in, 0, "%s", input), 0);
}

/* Runs herdctl map ARGS... over input (ends with NULL), to its exit. */
static void
map_run(struct map_run *r, const char *input, const char *const *args)
{
	map_prepare(r, input);
	map_start(r, -1, args);
	map_wait(r);
}

static void
map_free(struct map_run *r)
{
	free(r->stdout_text);
	free(r->stderr_text);
}

/* Appends one line made by fmt to *buf (malloc'd, grown). */
static void appendf(char **buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
appendf(char **buf, const char *fmt, ...)
{
	size_t len = *buf ? strlen(*buf) : 0;
	char *line;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&line, fmt, ap);
	va_end(ap);
	ck_assert_int_ge(n, 0);
	*buf = realloc(*buf, len + (size_t)n + 1);
	ck_assert_ptr_nonnull(*buf);
	memcpy(*buf + len, line, (size_t)n + 1);
	free(line);
}

/* N_LINES lines {"n":I} and the sums 0 + ... + I-1 herd-testworker's sum answers. */
static void
sum_lines(char **in, char **want)
{
	*in = *want = NULL;
	for (long long i = 0; i < N_LINES; i++) {
		appendf(in, "{\"n\":%lld}\n", i);
		appendf(want, "%lld\n", i * (i - 1) / 2);
	}
}

/* Output line i (0-based) parsed as JSON (new reference), or fails the test. */
static json_t *
out_line(const struct map_run *r, size_t i)
{
	const char *p = r->stdout_text;
	json_error_t e;
	json_t *v;

	for (; i > 0; i--) {
		p = strchr(p, '\n');
		ck_assert_ptr_nonnull(p);
		p++;
	}
	v = json_loadb(p, strcspn(p, "\n"), JSON_DECODE_ANY, &e);
	ck_assert_msg(v, "output line is not JSON (%s): %.80s", e.text, p);
	return v;
}

static size_t
count_lines(const char *text)
{
	size_t n = 0;

	for (; (text = strchr(text, '\n')); text++)
		n++;
	return n;
}

/*
 * herdctl map with args (in order) over sum_lines' input: exit 0, the sums
 * line for line, and, stderr being a file, no progress bar: nothing at all.
 */
static void
assert_ordered_sums(const char *const *args)
{
	struct map_run r = { 0 };
	char *in, *want;

	sum_lines(&in, &want);
	map_run(&r, in, args);
	ck_assert_msg(r.code == 0, "exit %d: %s", r.code, r.stderr_text);
	ck_assert_msg(strcmp(r.stdout_text, want) == 0, "output differs");
	ck_assert_msg(r.stderr_text[0] == '\0', "stderr: %s", r.stderr_text);
	map_free(&r);
	free(in);
	free(want);
}

START_TEST(test_map_unordered)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	const char *args[] = { "--unordered", "--workers", "3", "--window", "2", "--", tw, "sum",
		NULL };
	struct map_run r = { 0 };
	bool seen[N_LINES] = { false };
	char *in, *want;

	sum_lines(&in, &want);
	map_run(&r, in, args);
	ck_assert_msg(r.code == 0, "exit %d: %s", r.code, r.stderr_text);
	ck_assert_int_eq(count_lines(r.stdout_text), N_LINES);
	/* Sorted by index, the results are the ordered run's. */
	for (size_t i = 0; i < N_LINES; i++) {
		json_t *v = out_line(&r, i);
		json_int_t index = json_integer_value(json_object_get(v, "index"));

		ck_assert_msg(index >= 0 && index < N_LINES && !seen[index], "%s", ht_dump(v));
		seen[index] = true;
		ck_assert_int_eq(json_integer_value(json_object_get(v, "result")),
		    (json_int_t)index * (index - 1) / 2);
		json_decref(v);
	}
	ck_assert_msg(r.stderr_text[0] == '\0', "stderr: %s", r.stderr_text);
	map_free(&r);
	free(in);
	free(want);
}
END_TEST

/*
 * herdctl map with args over six lines for product: it fails past 20
 * (overflow), and a scalar and a non-JSON line fail with invalid_params.
 * Each failure is its own output line and stderr line; the others stand.
 */
static void
assert_failed_products(const char *const *args)
{
	struct map_run r = { 0 };
	json_t *v;

	map_run(&r, "{\"n\":3}\n{\"n\":30}\n{\"n\":4}\n7\nnot json\n{\"n\":5}\n", args);
	ck_assert_msg(r.code == 1, "exit %d: %s", r.code, r.stderr_text);
	ck_assert_int_eq(count_lines(r.stdout_text), 6);
	v = out_line(&r, 0);
	ck_assert_int_eq(json_integer_value(v), 6);
	json_decref(v);
	v = out_line(&r, 1);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "index")), 1);
	ck_assert_str_eq(ht_str(json_object_get(v, "error"), "name"), "function_failed");
	ck_assert_str_eq(
	    ht_str(json_object_get(v, "error"), "message"), "product of 1..30 overflows");
	json_decref(v);
	v = out_line(&r, 2);
	ck_assert_int_eq(json_integer_value(v), 24);
	json_decref(v);
	for (size_t i = 3; i <= 4; i++) {
		v = out_line(&r, i);
		ck_assert_int_eq(json_integer_value(json_object_get(v, "index")), (json_int_t)i);
		ck_assert_str_eq(ht_str(json_object_get(v, "error"), "name"), "invalid_params");
		json_decref(v);
	}
	v = out_line(&r, 5);
	ck_assert_int_eq(json_integer_value(v), 120);
	json_decref(v);
	/* One line per failure on stderr, by input line number, then the count. */
	ck_assert_msg(
	    strstr(r.stderr_text, "herdctl: function_failed: line 2: product of 1..30 overflows\n"),
	    "%s", r.stderr_text);
	ck_assert_msg(strstr(r.stderr_text,
	                  "line 4: a task's argument is an object, an array or "
	                  "null, not a number"),
	    "%s", r.stderr_text);
	ck_assert_msg(strstr(r.stderr_text, "line 5: not JSON"), "%s", r.stderr_text);
	ck_assert_msg(
	    strstr(r.stderr_text, "herdctl: failed: 3 of 6 tasks failed\n"), "%s", r.stderr_text);
	ck_assert_ptr_null(strchr(r.stderr_text, '\r'));
	map_free(&r);
}

/* herdctl map's options and herd-testworker's function, and the check its output must pass. */
static const struct map_case {
	const char *opts[5]; /* up to the first NULL */
	const char *function;
	void (*check)(const char *const *args);
} map_cases[] = {
	{ { "--workers", "3" }, "sum", assert_ordered_sums },
	{ { "-j", "2" }, "product", assert_failed_products },
	/* --chunksize: lines go in batches, the output is the same line for line, failures included. */
	{ { "-j", "2", "--chunksize", "64" }, "sum", assert_ordered_sums },
	{ { "-j", "1", "--chunksize", "4" }, "product", assert_failed_products },
};
#define N_MAP_CASES ((int)(sizeof(map_cases) / sizeof(map_cases[0])))

/* Loop test: map_cases[_i], herdctl map OPTS -- herd-testworker FUNCTION. */
START_TEST(test_map_outputs)
{
	const struct map_case *mc = &map_cases[_i];
	const char *args[sizeof(mc->opts) / sizeof(mc->opts[0]) + 4];
	size_t n = 0;

	for (const char *const *o = mc->opts; *o; o++)
		args[n++] = *o;
	args[n++] = "--";
	args[n++] = ht_env_path("HERD_TESTWORKER");
	args[n++] = mc->function;
	args[n] = NULL;
	mc->check(args);
}
END_TEST

/* A task that kills every worker it touches: reported with its signal and stderr tail. */
START_TEST(test_map_poison)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	const char *args[] = { "-j", "2", "--retries", "1", "--", tw, "sum", NULL };
	struct map_run r = { 0 };
	json_t *v, *data;
	char *in = NULL;

	for (int i = 0; i < 200; i++)
		appendf(&in, i == 57 ? "{\"n\":%d,\"crash\":true}\n" : "{\"n\":%d}\n", i);
	map_run(&r, in, args);
	ck_assert_msg(r.code == 1, "exit %d: %s", r.code, r.stderr_text);
	ck_assert_int_eq(count_lines(r.stdout_text), 200);
	for (size_t i = 0; i < 200; i++) {
		v = out_line(&r, i);
		if (i != 57)
			ck_assert_int_eq(json_integer_value(v), (json_int_t)(i * (i - 1) / 2));
		else {
			ck_assert_int_eq(json_integer_value(json_object_get(v, "index")), 57);
			ck_assert_str_eq(
			    ht_str(json_object_get(v, "error"), "name"), "task_crashed");
			data = json_object_get(json_object_get(v, "error"), "data");
			ck_assert_str_eq(ht_str(data, "signal"), "SIGSEGV");
			ck_assert_msg(ht_lines_contain(json_object_get(data, "stderr_tail"),
			                  "sum crashes on n=57"),
			    "%s", ht_dump(data));
		}
		json_decref(v);
	}
	ck_assert_msg(
	    strstr(r.stderr_text, "herdctl: task_crashed: line 58: "), "%s", r.stderr_text);
	ck_assert_msg(strstr(r.stderr_text, "SIGSEGV"), "%s", r.stderr_text);
	ck_assert_msg(strstr(r.stderr_text, "    | herd-testworker: sum crashes on n=57\n"), "%s",
	    r.stderr_text);
	map_free(&r);
	free(in);
}
END_TEST

/* A task over --timeout loses its worker; with --retries 0 it is reported at once. */
START_TEST(test_map_timeout)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	const char *args[] = { "-j", "2", "--retries", "0", "--timeout", "0.4", "--", tw, "sleep",
		NULL };
	struct map_run r = { 0 };
	int64_t start = ht_now_ms();
	json_t *v;
	char *in = NULL;

	for (int i = 0; i < 20; i++)
		appendf(&in, "{\"ms\":%d}\n", i == 7 ? 60000 : i);
	map_run(&r, in, args);
	ck_assert_msg(r.code == 1, "exit %d: %s", r.code, r.stderr_text);
	ck_assert_int_lt(ht_now_ms() - start, ht_ms(30000));
	ck_assert_int_eq(count_lines(r.stdout_text), 20);
	for (size_t i = 0; i < 20; i++) {
		v = out_line(&r, i);
		if (i == 7)
			ck_assert_str_eq(ht_str(json_object_get(v, "error"), "name"), "timeout");
		else
			ck_assert_int_eq(
			    json_integer_value(json_object_get(v, "slept_ms")), (json_int_t)i);
		json_decref(v);
	}
	ck_assert_msg(strstr(r.stderr_text, "herdctl: timeout: line 8: "), "%s", r.stderr_text);
	map_free(&r);
	free(in);
}
END_TEST

/* The pid of the next worker that becomes ready (subscribed c), which must be of pool name. */
static pid_t
pool_worker_pid(struct ht_conn *c, const char *name)
{
	json_t *ev = ht_wait_event_ok(c, "ready", NULL, ht_ms(10000));
	json_t *w = json_object_get(ev, "worker");
	pid_t pid = ht_worker_pid(w);

	ck_assert_msg(
	    json_is_string(json_object_get(w, "pool")) && !strcmp(ht_str(w, "pool"), name), "%s",
	    ht_dump(w));
	json_decref(ev);
	return pid;
}

/*
 * Half the input, a worker of the pool SIGKILLed, the other half: the output
 * is exact all the same, and herdctl list showed the pool meanwhile.
 */
START_TEST(test_map_worker_killed)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	const char *herdctl = ht_env_path("HERDCTL");
	const char *args[] = { "-j", "2", "--name", "maptest", "--", tw, "sum", NULL };
	const char *list_argv[] = { herdctl, "--socket", ht_herdd->socket, "list", NULL };
	struct map_run r = { 0 };
	char *half1 = NULL, *half2 = NULL, *want = NULL, *list_out = NULL;
	int fds[2];
	pid_t victim;

	for (int i = 0; i < N_LINES; i++) {
		appendf(i < N_LINES / 2 ? &half1 : &half2, "{\"n\":%d}\n", i);
		appendf(&want, "%d\n", i * (i - 1) / 2);
	}
	map_prepare(&r, NULL);
	json_decref(ht_call_ok(ht_master, "subscribe", json_pack("{s:b}", "all", 1)));
	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	map_start(&r, fds[0], args);
	close(fds[0]);
	ck_assert_int_eq(write(fds[1], half1, strlen(half1)), (ssize_t)strlen(half1));

	victim = pool_worker_pid(ht_master, "maptest");
	ck_assert_int_eq(ht_run(list_argv, &list_out, NULL, ht_ms(10000)), 0);
	ck_assert_msg(strstr(list_out, " POOL ") && strstr(list_out, "maptest.0") &&
	        strstr(list_out, "maptest "),
	    "%s", list_out);
	ck_assert_int_eq(kill(victim, SIGKILL), 0);
	ck_assert_int_eq(ht_wait_pid_gone(victim, ht_ms(5000)), 0);

	ck_assert_int_eq(write(fds[1], half2, strlen(half2)), (ssize_t)strlen(half2));
	close(fds[1]);
	map_wait(&r);
	ck_assert_msg(r.code == 0, "exit %d: %s", r.code, r.stderr_text);
	ck_assert_msg(strcmp(r.stdout_text, want) == 0, "output differs");
	map_free(&r);
	free(list_out);
	free(half1);
	free(half2);
	free(want);
}
END_TEST

/* herdd keeps spawn's "pool" for list and inspect, null without one, and checks it as "name". */
START_TEST(test_spawn_pool_param)
{
	json_t *sp, *w;
	char id[32];

	sp = ht_spawn_ok(ht_master, ht_testworker_params(json_pack("{s:s}", "pool", "p1")));
	snprintf(id, sizeof(id), "%s", ht_str(sp, "id"));
	json_decref(sp);
	w = ht_call_ok(ht_master, "inspect", json_pack("{s:s}", "id", id));
	ck_assert_str_eq(ht_str(ht_assert_result(w), "pool"), "p1");
	json_decref(w);
	sp = ht_spawn_ok(ht_master, ht_testworker_params(NULL));
	w = ht_call_ok(ht_master, "inspect", json_pack("{s:s}", "id", ht_str(sp, "id")));
	ck_assert(json_is_null(json_object_get(ht_assert_result(w), "pool")));
	json_decref(w);
	json_decref(sp);
	ht_expect(ht_master, "spawn", ht_testworker_params(json_pack("{s:s}", "pool", "")),
	    "invalid_params");
	ht_expect(ht_master, "spawn", ht_testworker_params(json_pack("{s:i}", "pool", 1)),
	    "invalid_params");
}
END_TEST

/* Under a terminal (script(1) gives stderr a pty) the progress bar is drawn. */
START_TEST(test_map_progress_on_terminal)
{
	const char *tw = ht_env_path("HERD_TESTWORKER");
	const char *herdctl = ht_env_path("HERDCTL");
	struct map_run r = { 0 };
	char cmd[1024], *out = NULL;
	const char *argv[] = { "/usr/bin/script", "-qec", cmd, "/dev/null", NULL };

	if (access(argv[0], X_OK) != 0)
		return; /* no script(1): the non-terminal case is checked by every other test */
	map_prepare(&r, "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n");
	snprintf(cmd, sizeof(cmd), "%s --socket %s map -j 1 -- %s sum <%s >%s", herdctl,
	    ht_herdd->socket, tw, r.in, r.out);
	ck_assert_int_eq(ht_run(argv, &out, NULL, ht_ms(20000)), 0);
	/* The bar redraws with a carriage return and ends with its count of 3. */
	ck_assert_msg(strchr(out, '\r') && strstr(out, "3/3"), "%s", out);
	r.stdout_text = read_file(r.out);
	ck_assert_str_eq(r.stdout_text, "0\n1\n3\n");
	free(out);
	map_free(&r);
}
END_TEST

START_TEST(test_map_usage)
{
	const char *herdctl = ht_env_path("HERDCTL");
	const char *help[] = { herdctl, "map", "--help", NULL };
	const char *one_arg[] = { herdctl, "map", "--", "/bin/true", NULL };
	const char *bad_timeout[] = { herdctl, "map", "--timeout", "soon", "--", "/bin/true", "f",
		NULL };
	char *out = NULL, *err = NULL;

	ck_assert_int_eq(ht_run(help, &out, NULL, ht_ms(10000)), 0);
	ck_assert_msg(strstr(out, "--unordered") && strstr(out, "--timeout S"), "%s", out);
	ck_assert_msg(strstr(out, "--chunksize N"), "%s", out);
	free(out);
	ck_assert_int_eq(ht_run(one_arg, NULL, &err, ht_ms(10000)), 2);
	ck_assert_msg(strstr(err, "usage: map"), "%s", err);
	free(err);
	ck_assert_int_eq(ht_run(bad_timeout, NULL, &err, ht_ms(10000)), 2);
	ck_assert_msg(strstr(err, "--timeout takes seconds"), "%s", err);
	free(err);
}
END_TEST

HT_MAIN("herdctl-map", HT_CASE("usage", 40, test_map_usage),
    HT_HERDD_LOOP_CASE("outputs", 120, ht_grace_args, N_MAP_CASES, test_map_outputs),
    HT_HERDD_CASE("map", 120, ht_grace_args, test_map_unordered, test_map_poison, test_map_timeout,
        test_map_worker_killed, test_map_progress_on_terminal, test_spawn_pool_param))
