/* SPDX-License-Identifier: MIT */
/*
 * The service manager's side channel: READY=1 once herdd accepts connections,
 * STATUS= with the current counts, STOPPING=1 at shutdown, and WATCHDOG=1 at
 * half the interval the manager asked for. Without NOTIFY_SOCKET every call
 * is a no-op, so herdd runs the same with and without systemd.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "herdd.h"

#if HAVE_SYSTEMD
#include <systemd/sd-daemon.h>

static ev_timer watchdog;
static char last_status[160];

static void
watchdog_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	sd_notify(0, "WATCHDOG=1");
}

/* Starts the watchdog pings when the manager enabled them. */
void
notify_init(void)
{
	uint64_t usec = 0;

	/*
	 * WATCHDOG_* stays in herdd's environment for a reexec's successor, which
	 * keeps the pid and must keep pinging; workers never see it (their env is built).
	 */
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		double half = (double)usec / 2e6;

		ev_timer_init(&watchdog, watchdog_cb, half, half);
		ev_timer_start(herdd.loop, &watchdog);
		log_info("watchdog enabled: pinging every %.3f s", half);
	}
}

/* Tells the manager herdd accepts connections. */
void
notify_ready(void)
{
	sd_notifyf(0, "READY=1\nMAINPID=%d\nSTATUS=accepting on %s", (int)herdd.pid,
	    herdd.cfg.socket_path);
}

/* Tells the manager herdd is stopping. */
void
notify_stopping(void)
{
	sd_notify(0, "STOPPING=1\nSTATUS=stopping workers");
	ev_timer_stop(herdd.loop, &watchdog);
}

/* Sends STATUS= when the counts changed. */
void
notify_status(void)
{
	const unsigned *by_state = herdd.nworkers;
	char status[160];

	snprintf(status, sizeof(status),
	    "STATUS=%u masters, %u workers starting, %u ready, %u stopping; %u connections%s",
	    conn_count_masters(), by_state[PROTO_STATE_STARTING], by_state[PROTO_STATE_READY],
	    by_state[PROTO_STATE_STOPPING], herdd.nconns, herdd.stopping ? ", stopping" : "");
	if (strcmp(status, last_status) == 0)
		return;
	snprintf(last_status, sizeof(last_status), "%s", status);
	sd_notify(0, status);
}
#else
void
notify_init(void)
{
}

void
notify_ready(void)
{
}

void
notify_stopping(void)
{
}

void
notify_status(void)
{
}
#endif
