/* SPDX-License-Identifier: MIT */
/*
 * The libev driver of a peer: one ev_io following herd__peer_events() and one
 * ev_timer for the next deadline, both running the peer's process. The only
 * part of the peer that knows libev.
 */
#include <poll.h>

#include "peer.h"

/* Bounds the work done per wakeup so one busy peer cannot starve the loop. */
#define MAX_PROCESS_ROUNDS 16

/*
 * A user's own process (the client engine) runs until it has nothing to do;
 * the peer's, which reads once a round, runs again only while the last read
 * filled its buffer, so a wakeup costs no read that finds nothing.
 */
static void
peer_ev_run(void *data)
{
	struct herd__peer *p = data;

	herd__peer_ref(p);
	for (int i = 0; i < MAX_PROCESS_ROUNDS && p->loop; i++) {
		if (p->ops->process) {
			if (p->ops->process(p) <= 0)
				break;
		} else if (herd__peer_process(p) <= 0 || !p->more || p->deferred) {
			break;
		}
	}
	herd__peer_update_ev(p);
	herd__peer_unref(p);
}

static void
ev_pair_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd__ev_pair *pair = w->data;

	pair->run(pair->data);
}

static void
ev_pair_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct herd__ev_pair *pair = w->data;

	pair->run(pair->data);
}

/* One pair of trampolines for every core libev drives: the peer here, pools in pool-ev.c. */
void
herd__ev_pair_init(
    struct herd__ev_pair *pair, int fd, int events, void (*run)(void *data), void *data)
{
	ev_io_init(&pair->io, ev_pair_io_cb, fd, events);
	ev_timer_init(&pair->timer, ev_pair_timer_cb, 0., 0.);
	pair->io.data = pair->timer.data = pair;
	pair->run = run;
	pair->data = data;
}

/* Drives p from loop. */
void
herd__peer_attach_ev(struct herd__peer *p, struct ev_loop *loop)
{
	if (p->loop || p->released)
		return;
	p->loop = loop;
	herd__ev_pair_init(&p->ev, p->fd, 0, peer_ev_run, p);
	ev_set_priority(&p->ev.io, p->priority);
	ev_set_priority(&p->ev.timer, p->priority);
	p->io_events = 0;
	p->timer_at = HERD__PEER_USEC_INFINITY;
	herd__peer_update_ev(p);
}

/* Stops the watchers; the peer no longer knows the loop. */
void
herd__peer_detach_ev(struct herd__peer *p)
{
	if (!p->loop)
		return;
	ev_io_stop(p->loop, &p->ev.io);
	ev_timer_stop(p->loop, &p->ev.timer);
	p->loop = NULL;
	p->io_events = 0;
}

/* Re-arms the watchers for the current events and deadline. */
void
herd__peer_update_ev(struct herd__peer *p)
{
	uint64_t t;
	int events, ev_events;

	if (!p->loop)
		return;
	if (p->released) {
		herd__peer_detach_ev(p);
		return;
	}
	events = herd__peer_events(p);
	ev_events = ((events & POLLIN) ? EV_READ : 0) | ((events & POLLOUT) ? EV_WRITE : 0);
	if (ev_events != p->io_events) {
		ev_io_stop(p->loop, &p->ev.io);
		if (ev_events) {
			ev_io_set(&p->ev.io, p->fd, ev_events);
			ev_io_start(p->loop, &p->ev.io);
		}
		p->io_events = ev_events;
	}
	t = p->ops->timeout ? p->ops->timeout(p) : herd__peer_timeout(p);
	/* Most changes (a message queued) leave the deadline as it was. */
	if (t == p->timer_at && (t == HERD__PEER_USEC_INFINITY || ev_is_active(&p->ev.timer)))
		return;
	p->timer_at = t;
	herd__ev_timer_at(p->loop, &p->ev.timer, t);
}

void
herd__ev_timer_at(struct ev_loop *loop, ev_timer *timer, uint64_t at_usec)
{
	uint64_t now;

	ev_timer_stop(loop, timer);
	if (at_usec == HERD__PEER_USEC_INFINITY)
		return;
	now = herd__now_usec();
	/* Half a millisecond late rather than early, so the deadline has passed when we wake. */
	ev_timer_set(timer, at_usec > now ? (double)(at_usec - now) / 1e6 + 0.0005 : 0., 0.);
	ev_timer_start(loop, timer);
}
