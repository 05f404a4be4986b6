/* SPDX-License-Identifier: MIT */
/*
 * Resource limits per worker (spawn option "limits", PROTOCOL.md 4.2).
 * memory_max, pids_max and cpu_max go into the worker's own cgroup
 * (memory.max, pids.max, cpu.max) when herdd contains workers by cgroup and
 * the controller is enabled for them (contain.c); otherwise the child sets an
 * rlimit before exec: RLIMIT_AS for memory (address space, not resident
 * memory) and RLIMIT_NPROC for pids (counted per uid, not per worker, and
 * not enforced for root). cpu_max is a rate, which no rlimit expresses, so
 * without the cpu controller it is refused. nofile is always RLIMIT_NOFILE.
 * Which mechanism enforced each one is decided at every spawn and shown by
 * inspect. A worker whose cgroup's memory limit killed a process ends with
 * reason oom_killed, read from memory.events before the cgroup is removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herdd.h"

#define MEMORY_MIN (1ll << 20) /* 1 MiB: less cannot even exec */
#define MEMORY_MAX (1ll << 50)
#define PIDS_MAX   4194304ll /* the kernel's PID_MAX_LIMIT */
#define NOFILE_MIN 8ll /* fds 0-3 and a few of libherd's own */
#define NOFILE_MAX (1ll << 20)
#define PERIOD_MIN 1000ll /* cpu.max's bounds, in microseconds */
#define PERIOD_MAX 1000000ll
#define CPU_PERIOD 100000ll
#define QUOTA_MIN  1000ll
#define QUOTA_MAX  (PERIOD_MAX * 1024)

static const char *const names[LIMIT_COUNT] = { "memory_max", "pids_max", "cpu_max", "nofile" };
/* The controller and file of each cgroup-enforceable limit. */
static const char *const controllers[LIMIT_COUNT] = { "memory", "pids", "cpu", NULL };
static const char *const files[LIMIT_COUNT] = { "memory.max", "pids.max", "cpu.max", NULL };

/* An integer member within lo..hi; 0 when absent. */
static int
parse_int(
    json_t *o, enum limit_kind k, long long lo, long long hi, int64_t *out, char *why, size_t len)
{
	json_t *v = json_object_get(o, names[k]);

	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
		snprintf(why, len, "limits.%s must be an integer %lld..%lld", names[k], lo, hi);
		return -EINVAL;
	}
	*out = json_integer_value(v);
	return 0;
}

/* cpu_max: "QUOTA PERIOD" in microseconds as cpu.max takes it, or a number of CPUs. */
static int
parse_cpu(json_t *o, struct worker_limits *l, char *why, size_t len)
{
	json_t *v = json_object_get(o, "cpu_max");
	long long quota = 0, period = CPU_PERIOD;
	char end;

	if (!v)
		return 0;
	if (json_is_number(v)) {
		/* Bounded before the conversion: a huge double does not fit a long long. */
		if (json_number_value(v) >= 0.01 && json_number_value(v) <= 1024)
			quota = (long long)(json_number_value(v) * CPU_PERIOD);
	} else if (!json_is_string(v) ||
	    sscanf(json_string_value(v), "%lld %lld%c", &quota, &period, &end) != 2) {
		quota = 0;
	}
	if (period < PERIOD_MIN || period > PERIOD_MAX || quota < QUOTA_MIN || quota > QUOTA_MAX) {
		snprintf(why, len,
		    "limits.cpu_max must be \"QUOTA PERIOD\" (microseconds, period %lld..%lld, "
		    "quota at least %lld) or a number of CPUs (0.01..1024)",
		    PERIOD_MIN, PERIOD_MAX, QUOTA_MIN);
		return -EINVAL;
	}
	if (!contain_has_controller("cpu")) {
		snprintf(why, len,
		    "limits.cpu_max needs the cpu controller in herdd's cgroup "
		    "(stats.containment)");
		return -EINVAL;
	}
	l->value[LIMIT_CPU] = quota;
	l->cpu_period_us = period;
	return 0;
}

int
limits_parse(struct worker *w, json_t *v, char *why, size_t len)
{
	struct worker_limits *l = &w->limits;
	const char *key;
	json_t *m;

	if (!v)
		return 0;
	if (!json_is_object(v)) {
		snprintf(why, len, "limits must be an object");
		return -EINVAL;
	}
	json_object_foreach(v, key, m) {
		size_t k;

		for (k = 0; k < LIMIT_COUNT && strcmp(key, names[k]); k++) {
		}
		if (k == LIMIT_COUNT) {
			snprintf(why, len,
			    "limits.%.*s is not a limit (memory_max, pids_max, "
			    "cpu_max, nofile)",
			    proto_text_prec(key, 64), key);
			return -EINVAL;
		}
	}
	if (parse_int(v, LIMIT_MEMORY, MEMORY_MIN, MEMORY_MAX, &l->value[LIMIT_MEMORY], why, len) <
	        0 ||
	    parse_int(v, LIMIT_PIDS, 1, PIDS_MAX, &l->value[LIMIT_PIDS], why, len) < 0 ||
	    parse_int(v, LIMIT_NOFILE, NOFILE_MIN, NOFILE_MAX, &l->value[LIMIT_NOFILE], why, len) <
	        0)
		return -EINVAL;
	return parse_cpu(v, l, why, len);
}

static int
write_at(int dir_fd, const char *file, const char *text)
{
	int fd = openat(dir_fd, file, O_WRONLY | O_CLOEXEC), r = 0;

	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		r = -errno;
	close(fd);
	return r;
}

int
limits_apply_cgroup(struct worker *w, int dir_fd)
{
	struct worker_limits *l = &w->limits;
	char text[64];
	int r;

	for (size_t k = 0; k < LIMIT_COUNT; k++) {
		l->by_cgroup[k] = false;
		if (!l->value[k] || !controllers[k] || dir_fd < 0 ||
		    !contain_has_controller(controllers[k]))
			continue;
		if (k == LIMIT_CPU)
			snprintf(text, sizeof(text), "%lld %lld", (long long)l->value[k],
			    (long long)l->cpu_period_us);
		else
			snprintf(text, sizeof(text), "%lld", (long long)l->value[k]);
		r = write_at(dir_fd, files[k], text);
		if (r < 0) {
			log_warn("worker %s: writing %s: %s", w->id, files[k], strerror(-r));
			return r;
		}
		l->by_cgroup[k] = true;
	}
	/* Checked at the spawn, but this worker's cgroup could not be made: no rlimit stands in. */
	if (l->value[LIMIT_CPU] && !l->by_cgroup[LIMIT_CPU])
		return -EOPNOTSUPP;
	return 0;
}

int
limits_rlimits(const struct worker *w, struct limit_rlimit *out)
{
	static const int resources[LIMIT_COUNT] = { RLIMIT_AS, RLIMIT_NPROC, -1, RLIMIT_NOFILE };
	int n = 0;

	for (size_t k = 0; k < LIMIT_COUNT; k++) {
		if (!w->limits.value[k] || w->limits.by_cgroup[k] || resources[k] < 0)
			continue;
		out[n].resource = resources[k];
		out[n].value = (rlim_t)w->limits.value[k];
		n++;
	}
	return n;
}

json_t *
limits_json(const struct worker *w)
{
	const struct worker_limits *l = &w->limits;
	json_t *o = json_object(), *v;

	for (size_t k = 0; o && k < LIMIT_COUNT; k++) {
		if (!l->value[k])
			continue;
		if (k == LIMIT_CPU)
			v = json_sprintf(
			    "%lld %lld", (long long)l->value[k], (long long)l->cpu_period_us);
		else
			v = json_integer(l->value[k]);
		json_object_set_new(o, names[k],
		    json_pack("{s:o, s:s}", "value", v, "enforced_by",
		        l->by_cgroup[k] ? "cgroup" : "rlimit"));
	}
	if (o && json_object_size(o) == 0) {
		json_decref(o);
		return json_null();
	}
	return o;
}

long long
limits_oom_kills(const char *events)
{
	const char *p = events;
	long long n;

	/* Lines "KEY VALUE"; oom_kill is the count of processes the OOM killer took. */
	while (p && *p) {
		if (sscanf(p, "oom_kill %lld", &n) == 1 && !strncmp(p, "oom_kill ", 9))
			return n;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return -1;
}

bool
limits_oom_killed(const struct worker *w)
{
	char buf[512];
	ssize_t n;
	int fd;

	if (!w->limits.by_cgroup[LIMIT_MEMORY])
		return false;
	fd = contain_open(w, "memory.events", O_RDONLY);
	if (fd < 0)
		return false;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return limits_oom_kills(buf) > 0;
}
