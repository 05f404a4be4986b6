/* SPDX-License-Identifier: MIT */
/*
 * herdctl's output for people: aligned tables, short durations and sizes.
 * Scripts use --json and never see any of this.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "herdctl.h"

#define N_COLS 13

void
fmt_duration(char *buf, size_t len, const json_t *ms)
{
	long long v, s;

	if (!json_is_integer(ms)) {
		snprintf(buf, len, "-");
		return;
	}
	v = json_integer_value(ms);
	s = v / 1000;
	if (v < 1000)
		snprintf(buf, len, "%lldms", v);
	else if (s < 60)
		snprintf(buf, len, "%.1fs", (double)v / 1000.0);
	else if (s < 3600)
		snprintf(buf, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%lldh%02lldm", s / 3600, s / 60 % 60);
	else
		snprintf(buf, len, "%lldd%02lldh", s / 86400, s / 3600 % 24);
}

void
fmt_kib(char *buf, size_t len, const json_t *kib)
{
	long long v;

	if (!json_is_integer(kib)) {
		snprintf(buf, len, "-");
		return;
	}
	v = json_integer_value(kib);
	if (v < 1024)
		snprintf(buf, len, "%lldK", v);
	else if (v < 1024 * 1024)
		snprintf(buf, len, "%.1fM", (double)v / 1024.0);
	else
		snprintf(buf, len, "%.1fG", (double)v / (1024.0 * 1024.0));
}

static const char *
str_or_dash(const json_t *v)
{
	return json_is_string(v) ? json_string_value(v) : "-";
}

/* An integer cell, or "-". */
static void
fmt_int(char cell[64], const json_t *v)
{
	if (json_is_integer(v))
		snprintf(cell, 64, "%lld", (long long)json_integer_value(v));
	else
		snprintf(cell, 64, "-");
}

/* Fills the cells of one worker row. */
static void
worker_row(const json_t *w, char cells[N_COLS][64])
{
	json_t *pid = json_object_get(w, "pid");
	json_t *cpu = json_object_get(w, "cpu_ms");
	json_t *owner = json_object_get(w, "owner");
	json_t *opid = json_object_get(owner, "pid");

	snprintf(cells[0], 64, "%s", str_or_dash(json_object_get(w, "id")));
	snprintf(cells[1], 64, "%s", str_or_dash(json_object_get(w, "name")));
	snprintf(cells[2], 64, "%s", str_or_dash(json_object_get(w, "pool")));
	if (json_is_integer(pid))
		snprintf(cells[3], 64, "%lld", (long long)json_integer_value(pid));
	else
		snprintf(cells[3], 64, "-");
	/* The master's pid; in parentheses once its session ended. */
	if (!json_is_integer(opid))
		snprintf(cells[4], 64, "-");
	else if (json_is_null(json_object_get(owner, "connection")))
		snprintf(cells[4], 64, "(%lld)", (long long)json_integer_value(opid));
	else
		snprintf(cells[4], 64, "%lld", (long long)json_integer_value(opid));
	snprintf(cells[5], 64, "%s", str_or_dash(json_object_get(w, "state")));
	fmt_duration(cells[6], 64, json_object_get(w, "uptime_ms"));
	fmt_duration(cells[7], 64, json_object_get(w, "heartbeat_age_ms"));
	fmt_kib(cells[8], 64, json_object_get(w, "rss_kib"));
	if (json_is_integer(cpu))
		snprintf(cells[9], 64, "%.2fs", (double)json_integer_value(cpu) / 1000.0);
	else
		snprintf(cells[9], 64, "-");
	snprintf(cells[10], 64, "%s", str_or_dash(json_object_get(w, "reason")));
	fmt_int(cells[11], json_object_get(w, "incarnation"));
	/* Restarts so far, "-" for a worker whose policy is "no". */
	fmt_int(cells[12], json_object_get(json_object_get(w, "restart"), "restarts"));
}

void
print_worker_table(FILE *f, const json_t *workers)
{
	static const char *const head[N_COLS] = { "ID", "NAME", "POOL", "PID", "OWNER", "STATE",
		"UPTIME", "HB-AGE", "RSS", "CPU", "REASON", "INC", "RESTARTS" };
	/* Numbers read better right-aligned. */
	static const bool right[N_COLS] = { false, false, false, true, true, false, true, true,
		true, true, false, true, true };
	static const char *const source[N_COLS] = { "id", "name", "pool", "pid", "owner", "state",
		"uptime_ms", "heartbeat_age_ms", "rss_kib", "cpu_ms", "reason", "incarnation",
		"restart" };
	size_t n = json_array_size(workers), i, c, last = 0;
	bool shown[N_COLS];
	char(*rows)[N_COLS][64] = calloc(n + 1, sizeof(*rows));
	int width[N_COLS] = { 0 };

	if (!rows)
		return;
	for (c = 0; c < N_COLS; c++)
		snprintf(rows[0][c], 64, "%s", head[c]);
	for (i = 0; i < n; i++)
		worker_row(json_array_get(workers, i), rows[i + 1]);
	for (i = 0; i <= n; i++) {
		for (c = 0; c < N_COLS; c++) {
			int w = (int)strlen(rows[i][c]);

			if (w > width[c])
				width[c] = w;
		}
	}
	/* A column whose field no worker has (list --fields left it out) is not shown. */
	for (c = 0; c < N_COLS; c++) {
		shown[c] = n == 0;
		for (i = 0; i < n && !shown[c]; i++)
			shown[c] = json_object_get(json_array_get(workers, i), source[c]) != NULL;
		if (shown[c])
			last = c;
	}
	for (i = 0; i <= n; i++) {
		for (c = 0; c <= last; c++) {
			const char *sep = c < last ? "  " : "\n";

			if (!shown[c])
				continue;
			if (c == last)
				fprintf(f, "%s%s", rows[i][c], sep);
			else
				fprintf(
				    f, right[c] ? "%*s%s" : "%-*s%s", width[c], rows[i][c], sep);
		}
	}
	free(rows);
}

void
print_value(FILE *f, const json_t *v)
{
	char *text;

	if (json_is_string(v)) {
		fprintf(f, "%s\n", json_string_value(v));
		return;
	}
	text = json_dumps(v, JSON_INDENT(2) | JSON_ENCODE_ANY | JSON_SORT_KEYS);
	fprintf(f, "%s\n", text ? text : "?");
	free(text);
}

/* A field's value on one line: strings bare, null as "-", the rest compact JSON. */
static void
print_field_w(FILE *f, int width, const char *key, const json_t *v)
{
	char *text;

	if (json_is_string(v)) {
		fprintf(f, "%-*s %s\n", width, key, json_string_value(v));
		return;
	}
	if (!v || json_is_null(v)) {
		fprintf(f, "%-*s -\n", width, key);
		return;
	}
	text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	fprintf(f, "%-*s %s\n", width, key, text ? text : "?");
	free(text);
}

static void
print_field(FILE *f, const char *key, const json_t *v)
{
	print_field_w(f, 17, key, v);
}

void
print_worker(FILE *f, const json_t *worker)
{
	static const char *const order[] = { "id", "name", "pool", "state", "reason", "pid", "pgid",
		"uid", "owner", "shutdown_on", "incarnation", "restart", "started_at", "uptime_ms",
		"heartbeat_age_ms", "rss_kib", "cpu_ms", "exit_code", "signal", "message", "socket",
		"path", "argv", NULL };
	const char *key;
	json_t *v;
	size_t i;

	for (i = 0; order[i]; i++) {
		if (json_object_get(worker, order[i]))
			print_field(f, order[i], json_object_get(worker, order[i]));
	}
	/* Fields a newer herdd added, so nothing is hidden. */
	json_object_foreach((json_t *)worker, key, v) {
		bool known = false;

		for (i = 0; order[i] && !known; i++)
			known = strcmp(order[i], key) == 0;
		if (!known)
			print_field(f, key, v);
	}
}

/* Longest dotted name under obj, so the values line up. */
static int
flat_width(const char *prefix, const json_t *obj)
{
	const char *key;
	json_t *v;
	int w = 0;

	json_object_foreach((json_t *)obj, key, v) {
		int k = (int)strlen(prefix) + (*prefix ? 1 : 0) + (int)strlen(key);

		if (json_is_object(v)) {
			char name[256];

			snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", key);
			k = flat_width(name, v);
		}
		if (k > w)
			w = k;
	}
	return w;
}

static void
print_flat(FILE *f, int width, const char *prefix, const json_t *obj)
{
	const char *key;
	json_t *v;

	json_object_foreach((json_t *)obj, key, v) {
		char name[256];

		snprintf(name, sizeof(name), "%s%s%s", prefix, *prefix ? "." : "", key);
		if (json_is_object(v))
			print_flat(f, width, name, v);
		else
			print_field_w(f, width, name, v);
	}
}

void
print_stats(FILE *f, const json_t *stats)
{
	print_flat(f, flat_width("", stats), "", stats);
}

/* True for an event of a worker that ended as asked or by itself with status 0. */
static bool
ended_normally(const char *event, const json_t *w)
{
	static const char *const normal[] = { "shutdown", "daemon_shutdown", "master_closed" };
	const char *reason = json_string_value(json_object_get(w, "reason"));
	const json_t *code = json_object_get(w, "exit_code");

	if (!strcmp(event, "exited"))
		return json_is_integer(code) && json_integer_value(code) == 0;
	for (size_t i = 0;
	     reason && !strcmp(event, "stopped") && i < sizeof(normal) / sizeof(normal[0]); i++)
		if (!strcmp(reason, normal[i]))
			return true;
	return false;
}

void
print_event(FILE *f, const json_t *event)
{
	const json_t *w = json_object_get(event, "worker");
	const json_t *tail = json_object_get(event, "stderr_tail");
	const json_t *msg = json_object_get(event, "message");
	const char *name = str_or_dash(json_object_get(event, "event"));
	const char *reason = str_or_dash(json_object_get(w, "reason"));
	const json_t *line;
	struct timespec ts;
	struct tm tm;
	char when[32];
	size_t i;

	/* "crashed ... crashed" says nothing twice; a reason that differs is news. */
	if (!strcmp(reason, name) || !strcmp(reason, "-"))
		reason = "";

	clock_gettime(CLOCK_REALTIME, &ts);
	localtime_r(&ts.tv_sec, &tm);
	strftime(when, sizeof(when), "%H:%M:%S", &tm);
	if (!strcmp(name, "gap")) {
		fprintf(f, "%s.%03ld  #%-6s gap: %lld events lost (seq %lld..%lld, %s)\n", when,
		    ts.tv_nsec / 1000000, "-",
		    (long long)json_integer_value(json_object_get(event, "lost")),
		    (long long)json_integer_value(json_object_get(event, "first")),
		    (long long)json_integer_value(json_object_get(event, "last")),
		    str_or_dash(json_object_get(event, "reason")));
		fflush(f);
		return;
	}
	fprintf(f, "%s.%03ld  #%-6lld %-14s %-6s %-16s pid %-7lld %s%s%s\n", when,
	    ts.tv_nsec / 1000000, (long long)json_integer_value(json_object_get(event, "seq")),
	    name, str_or_dash(json_object_get(w, "id")), str_or_dash(json_object_get(w, "name")),
	    (long long)json_integer_value(json_object_get(w, "pid")), reason,
	    json_is_string(msg) ? (*reason ? ": " : "") : "",
	    json_is_string(msg) ? json_string_value(msg) : "");
	/* A normal stop's last lines are noise; a failure's are the story. */
	if (ended_normally(name, w))
		tail = NULL;
	json_array_foreach(tail, i, line) {
		if (json_is_string(line))
			fprintf(f, "    | %s\n", json_string_value(line));
	}
	fflush(f);
}
