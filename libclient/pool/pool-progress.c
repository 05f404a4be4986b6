/* SPDX-License-Identifier: MIT */
/*
 * A ready-made progress callback: one line on stderr, redrawn in place, only
 * when stderr is a terminal (a log file gets nothing).
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pool/pool-internal.h"

#define BAR_WIDTH 30

HERD_EXPORT void
herd_progress_bar(herd_job *job, uint64_t done, uint64_t failed, uint64_t retried, uint64_t total,
    double rate, void *userdata)
{
	const char *label = userdata ? userdata : "";
	char bar[BAR_WIDTH + 1];
	bool end = job && job->done;
	unsigned fill = 0;

	if (!isatty(STDERR_FILENO))
		return;
	if (total > 0)
		fill = (unsigned)((done + failed) * BAR_WIDTH / total);
	if (fill > BAR_WIDTH)
		fill = BAR_WIDTH;
	memset(bar, '#', fill);
	memset(bar + fill, '.', BAR_WIDTH - fill);
	bar[BAR_WIDTH] = '\0';
	if (total > 0)
		fprintf(stderr, "\r%s%s[%s] %llu/%llu", label, *label ? " " : "", bar,
		    (unsigned long long)(done + failed), (unsigned long long)total);
	else
		fprintf(stderr, "\r%s%s%llu", label, *label ? " " : "",
		    (unsigned long long)(done + failed));
	fprintf(stderr, "  %.0f/s", rate);
	if (failed)
		fprintf(stderr, "  %llu failed", (unsigned long long)failed);
	if (retried)
		fprintf(stderr, "  %llu retried", (unsigned long long)retried);
	fprintf(stderr, "\033[K%s", end ? "\n" : "");
	fflush(stderr);
}
