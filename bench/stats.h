/* SPDX-License-Identifier: MIT */
/*
 * What every benchmark program shares: latency samples and their
 * percentiles, the JSON lines they print, and the table of modes each
 * program dispatches its first argument by.
 */
#ifndef HERD_BENCH_STATS_H
#define HERD_BENCH_STATS_H

#include <stddef.h>
#include <stdint.h>

struct samples {
	uint64_t *ns;
	size_t n, cap;
};

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);
void samples_add(struct samples *s, uint64_t ns);
void samples_free(struct samples *s);
/* p in [0,100]; sorts the samples in place. Returns 0 when empty. */
uint64_t samples_pct(struct samples *s, double p);
/*
 * Prints one JSON object on stdout: {"figure":..., "variant":..., "n":...,
 * "p50_us":..., "p99_us":..., "mean_us":...}. The runner collects these lines.
 */
void samples_report(struct samples *s, const char *figure, const char *variant);
/* Prints {"figure":..., "variant":..., "value":..., "unit":...}. */
void bench_report_value(const char *figure, const char *variant, double value, const char *unit);
/* How much of s (len bytes) a message quotes, at most max: never cut inside a UTF-8 character. */
int bench_cut(const char *s, size_t len, size_t max);

/* Raises RLIMIT_NOFILE's soft limit to the hard one (a thousand connections or workers). */
void bench_raise_fd_limit(void);

/* One mode of a benchmark program: "PROG NAME ARGS...". */
struct bench_mode {
	const char *name;
	const char *args; /* its arguments, for the usage text */
	int nargs; /* how many it needs at least */
	int (*run)(char **args); /* args: what follows the name, NULL-terminated */
};

/* A benchmark program: its name (for the usage text), its modes, what it does around one. */
struct bench_prog {
	const char *name;
	const struct bench_mode *modes; /* ends in a row without name */
	/* May be NULL; runs once the mode is known: nonzero is the exit status. */
	int (*start)(void);
	void (*finish)(void); /* may be NULL; runs after the mode */
};

/*
 * Every benchmark program's main(): runs the mode argv[1] names with the
 * arguments after it, between prog's start and finish, with SIGPIPE ignored
 * (a peer may close first: a write fails with EPIPE instead of ending the
 * program). Returns the exit status: the mode's, start's when it fails, or 2
 * after the usage text.
 */
int bench_main(const struct bench_prog *prog, int argc, char **argv);

#endif
