/* SPDX-License-Identifier: MIT */
/*
 * herdctl map: a worker function over JSON lines from stdin, with a pool
 * (herd/pool.h), one JSON line out per line in. GNU parallel with
 * persistent, supervised workers.
 *
 * Input is read as workers free up, never all at once: memory is bounded by
 * the pool's window and, in input order, by the results waiting for an
 * earlier one. Every input line gets exactly one output line at its place
 * (or, with --unordered, a line carrying its index), so a failed task leaves
 * {"index":N,"error":{...}} where its result would be and the output stays
 * aligned with the input.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <herd/pool.h>

#include "herdctl.h"

/* A line that is not a task's argument: the pool fails it, herdctl says why. */
struct bad_line {
	size_t index;
	char *why;
};

struct map {
	bool unordered;
	char *buf; /* getline's */
	size_t cap;
	size_t n_read;
	int read_errno; /* stdin failed: the input ended early */
	struct bad_line *bad; /* by rising index, until their outcome is written */
	size_t n_bad, cap_bad;
	uint64_t failed;
};

static json_t *bad_line(struct map *m, size_t index, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Remembers why line index is refused. Returns a scalar the pool refuses to send. */
static json_t *
bad_line(struct map *m, size_t index, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	if (m->n_bad == m->cap_bad) {
		size_t cap = m->cap_bad ? 2 * m->cap_bad : 8;
		struct bad_line *b = realloc(m->bad, cap * sizeof(*b));

		if (!b)
			return json_false();
		m->bad = b;
		m->cap_bad = cap;
	}
	m->bad[m->n_bad] = (struct bad_line){ index, strdup(why) };
	if (m->bad[m->n_bad].why)
		m->n_bad++;
	return json_false();
}

/* Takes the reason line index was refused, if it was (free it). */
static char *
take_bad_line(struct map *m, size_t index)
{
	for (size_t i = 0; i < m->n_bad; i++) {
		if (m->bad[i].index == index) {
			char *why = m->bad[i].why;

			memmove(m->bad + i, m->bad + i + 1, (m->n_bad - i - 1) * sizeof(*m->bad));
			m->n_bad--;
			return why;
		}
	}
	return NULL;
}

static const char *
json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_STRING:
		return "string";
	case JSON_TRUE:
	case JSON_FALSE:
		return "boolean";
	default:
		return "number";
	}
}

/*
 * The pool's iterator: the next line's argument. A scalar or a line that is
 * not JSON is not wrapped (a function taking {"n":...} would fail on a bare
 * 3 anyway, with a less clear message): its task fails with invalid_params.
 */
static json_t *
map_next(void *userdata)
{
	struct map *m = userdata;
	json_error_t err;
	ssize_t n;
	size_t index;
	json_t *v;

	errno = 0;
	n = getline(&m->buf, &m->cap, stdin);
	if (n < 0) {
		if (ferror(stdin))
			m->read_errno = errno ? errno : EIO;
		return NULL;
	}
	index = m->n_read++;
	if (n > 0 && m->buf[n - 1] == '\n')
		m->buf[--n] = '\0';
	v = json_loadb(m->buf, (size_t)n, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);
	if (!v)
		return bad_line(m, index, "not JSON: %s", err.text);
	if (!json_is_object(v) && !json_is_array(v) && !json_is_null(v)) {
		const char *kind = json_kind(v);

		json_decref(v);
		return bad_line(
		    m, index, "a task's argument is an object, an array or null, not a %s", kind);
	}
	return v;
}

/* The stderr report of a failed task: one line, and a crash's stderr tail. */
static void
report_failure(size_t index, const char *name, const char *message, json_t *data)
{
	const json_t *line;
	size_t i;

	if (isatty(STDERR_FILENO))
		fputs("\r\033[K", stderr); /* over the progress bar, which redraws below */
	fprintf(stderr, "herdctl: %s: line %zu: %s\n", name, index + 1, message);
	json_array_foreach(json_object_get(data, "stderr_tail"), i, line) {
		if (json_is_string(line))
			fprintf(stderr, "    | %s\n", json_string_value(line));
	}
}

/* One outcome: its result, or {"index":N,"error":{name,message,data}} in its place. */
static void
map_task(herd_job *job, size_t index, int r, json_t *result, herd_error *err, void *userdata)
{
	struct map *m = userdata;
	json_t *out = result;
	char *why = take_bad_line(m, index), *text;

	(void)job;
	if (r < 0) {
		const char *name = why ? "invalid_params" : err ? herd_error_name(err) : "error";
		const char *message = why ? why : err ? herd_error_message(err) : strerror(-r);
		json_t *data = why || !err ? NULL : herd_error_data(err);

		m->failed++;
		out = json_pack("{s:I, s:{s:s, s:s, s:O*}}", "index", (json_int_t)index, "error",
		    "name", name, "message", message, "data", data);
		report_failure(index, name, message, data);
	} else if (m->unordered) {
		out = json_pack("{s:I, s:O}", "index", (json_int_t)index, "result", result);
	}
	text = json_dumps(out, JSON_COMPACT | JSON_ENCODE_ANY);
	printf("%s\n", text ? text : "null");
	free(text);
	if (out != result)
		json_decref(out);
	free(why);
}

/*
 * The executable's absolute path, as herdd wants it: a name without '/' is
 * looked up in PATH as a shell would, a relative path is made absolute.
 * Returns a malloc'd path or NULL (printed).
 */
static char *
find_exe(const char *exe)
{
	const char *path = getenv("PATH") ?: "/usr/local/bin:/usr/bin:/bin";
	char cand[PATH_MAX];

	if (strchr(exe, '/')) {
		char *abs = realpath(exe, NULL);

		if (!abs)
			ctl_error("spawn_failed", "%s: %s", exe, strerror(errno));
		return abs;
	}
	while (*path) {
		size_t len = strcspn(path, ":");

		snprintf(cand, sizeof(cand), "%.*s/%s", (int)len, len ? path : ".", exe);
		if (access(cand, X_OK) == 0)
			return realpath(cand, NULL);
		path += len + (path[len] == ':');
	}
	ctl_error("spawn_failed", "%s: not found in PATH", exe);
	return NULL;
}

/* --hosts A,B=4,slurm: the pool's "hosts", one string each (herd/pool.h reads them). */
static int
map_hosts(json_t *popts, const char *list)
{
	json_t *hosts;
	const char *s;

	if (!list)
		return 0;
	hosts = json_array();
	for (s = list; hosts && *s;) {
		size_t len = strcspn(s, ",");

		if (len && json_array_append_new(hosts, json_stringn(s, len)) < 0)
			break;
		s += len + (s[len] == ',');
	}
	return json_object_set_new(popts, "hosts", hosts) < 0 ? -ENOMEM : 0;
}

/*
 * The pool, from map's options (params) under herd_pool_new's names. Its
 * own connections never time out for silence (the iterator may block on a
 * slow stdin), while its workers keep their heartbeats with herdd.
 */
static int
map_pool(struct ctl *c, json_t *params, char *exe, char **args, herd_pool **ret)
{
	static const char *const from[] = { "workers", "window", "retries", "timeout",
		"chunksize" };
	static const char *const to[] = { "workers", "window", "retries", "task_timeout_ms",
		"chunksize" };
	json_t *argvj = json_array(), *spawn, *popts;
	herd_error *err = NULL;
	char name[64];
	int r = 0;

	for (char **a = args; a[1]; a++)
		json_array_append_new(argvj, json_string(a == args ? exe : *a));
	snprintf(name, sizeof(name), "map-%d", (int)getpid());
	spawn = json_pack("{s:s, s:o, s:{s:i, s:i}}", "path", exe, "argv", argvj, "settings",
	    "heartbeat_interval_ms", 1000, "heartbeat_timeout_ms", 10000);
	popts = json_pack("{s:s, s:{s:i}}", "name",
	    json_string_value(json_object_get(params, "name")) ?: name, "settings",
	    "heartbeat_timeout_ms", 0);
	for (size_t i = 0; popts && i < sizeof(from) / sizeof(from[0]); i++) {
		json_t *v = json_object_get(params, from[i]);

		if (v && json_object_set(popts, to[i], v) < 0)
			r = -ENOMEM;
	}
	if (popts && c->socket && json_object_set_new(popts, "socket", json_string(c->socket)) < 0)
		r = -ENOMEM;
	if (popts && r == 0)
		r = map_hosts(popts, json_string_value(json_object_get(params, "hosts")));
	if (r == 0)
		r = spawn && popts ? herd_pool_new(spawn, popts, ret, &err) : -ENOMEM;
	if (r < 0)
		ctl_print_herd_error(r, err, "pool");
	herd_error_unref(err);
	json_decref(spawn);
	json_decref(popts);
	return r;
}

/* Runs the job to its end. Returns the exit status. */
static int
map_run(herd_pool *p, struct map *m, const char *function)
{
	enum herd_job_kind kind = m->unordered ? HERD_JOB_MAP_UNORDERED : HERD_JOB_MAP;
	herd_job *job = NULL;
	int r;

	r = herd_job_new(p, kind, function, &job);
	if (r == 0) {
		herd_job_set_iter(job, map_next, m);
		herd_job_set_flags(job, HERD_JOB_SKIP_FAILED | HERD_JOB_SKIP_CRASHED);
		herd_job_on_task(job, map_task, m);
		if (isatty(STDERR_FILENO))
			herd_job_on_progress(job, herd_progress_bar, (void *)function);
		r = herd_job_wait(job, HERD_TIMEOUT_INFINITE, NULL);
	}
	if (r < 0)
		ctl_print_herd_error(r, job ? herd_job_error(job) : NULL, "map");
	herd_job_unref(job);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		ctl_error("error", "writing the results: %s", strerror(errno));
		return EXIT_FAILURE;
	}
	if (m->read_errno) {
		ctl_error("error", "reading stdin: %s", strerror(m->read_errno));
		return EXIT_FAILURE;
	}
	if (herd_pool_hosts_lost(p) > 0)
		fprintf(stderr,
		    "herdctl: map: %llu host losses on the way, their tasks ran again (last: %s)\n",
		    (unsigned long long)herd_pool_hosts_lost(p),
		    herd_pool_last_error(p) ? herd_error_message(herd_pool_last_error(p)) : "-");
	if (r == 0 && m->failed)
		ctl_error(
		    "failed", "%llu of %zu tasks failed", (unsigned long long)m->failed, m->n_read);
	return r < 0 || m->failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* map -- EXE [ARGS...] FUNCTION: the last argument is the function, the rest the worker's argv. */
int
ctl_map(struct ctl *c, json_t *params, char **args)
{
	struct map m = { .unordered = json_is_true(json_object_get(params, "unordered")) };
	herd_pool *p = NULL;
	size_t n = 0;
	char *exe;
	int r = EXIT_FAILURE;

	while (args[n])
		n++;
	exe = find_exe(args[0]);
	if (exe && map_pool(c, params, exe, args, &p) == 0)
		r = map_run(p, &m, args[n - 1]);
	herd_pool_close(p);
	herd_pool_unref(p);
	for (size_t i = 0; i < m.n_bad; i++)
		free(m.bad[i].why);
	free(m.bad);
	free(m.buf);
	free(exe);
	json_decref(params);
	return r;
}
