/* SPDX-License-Identifier: MIT */
/*
 * Per-worker figures (the process's state, CPU time, resident memory) read
 * from /proc on herdd's own schedule and kept in the record, so `list` and
 * `inspect` serve them from memory: reading /proc for every worker of every
 * list made one client listing in a loop cost herdd ~30 us a worker and
 * starve everyone else.
 *
 * The sweep samples a slice of the live workers every SAMPLE_TICK_MS, so
 * each is read about once every SAMPLE_PERIOD_MS and no tick holds the loop
 * for long (a thousand workers: fifty reads a tick). A worker is also
 * sampled when it becomes ready and at each heartbeat check (supervisor.c).
 * PROTOCOL.md 4.3 tells clients how old a sample may be (sample_age_ms).
 */
#include <errno.h>
#include <unistd.h>

#include "herdd.h"

#define SAMPLE_PERIOD_MS 1000
#define SAMPLE_TICK_MS   50

static ev_timer tick_timer;
/* The next record the sweep looks at; NULL: the head of herdd.workers. */
static struct worker *cursor;
static uint64_t clock_ticks;

/* Reads w's figures from /proc. */
int
sample_worker(struct worker *w)
{
	uint64_t ticks, rss;
	char st;
	int r;

	if (!sup_is_live(w) || w->reaped || w->pid <= 0)
		return -ESRCH;
	r = proc_stat(w->pid, &st, &ticks, &rss);
	if (r < 0)
		return r;
	if (!clock_ticks)
		clock_ticks = (uint64_t)sysconf(_SC_CLK_TCK);
	w->cpu_ms = ticks * 1000 / clock_ticks;
	w->rss_kib = rss;
	w->proc_state = st;
	w->sampled_ms = now_ms();
	return 0;
}

/* One slice: enough live workers that every one comes round once a period. */
static void
tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	static unsigned credit; /* samples owed, in 1/SAMPLE_PERIOD_MS: a few workers share ticks */
	unsigned left, steps = 0, listed = 0;
	struct worker *w = cursor;

	credit += sup_count_live() * SAMPLE_TICK_MS;
	left = credit / SAMPLE_PERIOD_MS;
	credit %= SAMPLE_PERIOD_MS;

	for (int s = 0; s < PROTO_STATE_COUNT; s++)
		listed += herdd.nworkers[s];
	/* At most one lap: exited records are passed over without a syscall. */
	while (left > 0 && steps++ < listed) {
		if (!w)
			w = TAILQ_FIRST(&herdd.workers);
		if (!w)
			break;
		if (sample_worker(w) == 0)
			left--;
		w = TAILQ_NEXT(w, link);
	}
	cursor = w;
}

/* Starts the sweep. */
void
sample_start(void)
{
	ev_timer_init(&tick_timer, tick_cb, SAMPLE_TICK_MS / 1000.0, SAMPLE_TICK_MS / 1000.0);
	ev_timer_start(herdd.loop, &tick_timer);
}

void
sample_stop(void)
{
	ev_timer_stop(herdd.loop, &tick_timer);
	cursor = NULL;
}

/* w leaves the list: the sweep must not resume from it. */
void
sample_forget(struct worker *w)
{
	if (cursor == w)
		cursor = TAILQ_NEXT(w, link);
}
