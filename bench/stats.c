/* SPDX-License-Identifier: MIT */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "stats.h"

uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
samples_add(struct samples *s, uint64_t ns)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint64_t *p = realloc(s->ns, cap * sizeof(*p));

		if (!p) {
			perror("realloc");
			exit(1);
		}
		s->ns = p;
		s->cap = cap;
	}
	s->ns[s->n++] = ns;
}

void
samples_free(struct samples *s)
{
	free(s->ns);
	s->ns = NULL;
	s->n = s->cap = 0;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t
samples_pct(struct samples *s, double p)
{
	size_t i;

	if (s->n == 0)
		return 0;
	qsort(s->ns, s->n, sizeof(*s->ns), cmp_u64);
	i = (size_t)(p / 100.0 * (double)(s->n - 1) + 0.5);
	return s->ns[i];
}

void
samples_report(struct samples *s, const char *figure, const char *variant)
{
	double sum = 0;

	for (size_t i = 0; i < s->n; i++)
		sum += (double)s->ns[i];
	printf("{\"figure\":\"%s\",\"variant\":\"%s\",\"n\":%zu,\"p50_us\":%.2f,"
	       "\"p99_us\":%.2f,\"mean_us\":%.2f}\n",
	    figure, variant, s->n, (double)samples_pct(s, 50) / 1e3,
	    (double)samples_pct(s, 99) / 1e3, s->n ? sum / (double)s->n / 1e3 : 0.0);
	fflush(stdout);
}

void
bench_report_value(const char *figure, const char *variant, double value, const char *unit)
{
	printf("{\"figure\":\"%s\",\"variant\":\"%s\",\"value\":%.3f,\"unit\":\"%s\"}\n", figure,
	    variant, value, unit);
	fflush(stdout);
}

int
bench_cut(const char *s, size_t len, size_t max)
{
	if (len <= max)
		return (int)len;
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return (int)max;
}

/*
 * The mode argv names in modes (ending in a row without name), if it has
 * enough arguments; else NULL after printing the usage text on stderr.
 */
static const struct bench_mode *
bench_mode_find(const struct bench_mode *modes, const char *prog, int argc, char **argv)
{
	const struct bench_mode *m;

	for (m = modes; argc >= 2 && m->name; m++) {
		if (strcmp(argv[1], m->name) == 0 && argc - 2 >= m->nargs)
			return m;
	}
	fprintf(stderr, "usage:\n");
	for (m = modes; m->name; m++)
		fprintf(stderr, "  %s %s %s\n", prog, m->name, m->args);
	return NULL;
}

int
bench_main(const struct bench_prog *prog, int argc, char **argv)
{
	const struct bench_mode *mode = bench_mode_find(prog->modes, prog->name, argc, argv);
	int r;

	if (!mode)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if (prog->start && (r = prog->start()) != 0)
		return r;
	r = mode->run(argv + 2);
	if (prog->finish)
		prog->finish();
	return r;
}

void
bench_raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}
