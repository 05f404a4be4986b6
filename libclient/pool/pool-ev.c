/* SPDX-License-Identifier: MIT */
/*
 * libev glue for pools: an ev_io on the pool's epoll fd and an ev_timer for
 * its next deadline, both feeding herd_pool_process(), as client-ev.c does
 * for a connection.
 */
#include <errno.h>

#include "pool/pool-internal.h"

/* Bounds the work done per wakeup so a busy pool cannot starve the loop. */
#define MAX_PROCESS_ROUNDS 16

/* Drives a pool as peer-ev.c drives a peer, but a pool's round is herd_pool_process(). */
static void
pool_ev_process(void *data)
{
	struct herd_pool *p = data;

	herd_pool_ref(p);
	for (int i = 0; i < MAX_PROCESS_ROUNDS; i++)
		if (herd_pool_process(p) <= 0)
			break;
	herd__pool_update_ev(p);
	herd_pool_unref(p);
}

/* Re-arms the timer for the pool's next deadline (the io watcher never changes). */
void
herd__pool_update_ev(struct herd_pool *p)
{
	uint64_t t;

	if (!p->loop)
		return;
	if (herd_pool_get_timeout(p, &t) < 0)
		t = HERD_TIMEOUT_INFINITE;
	herd__ev_timer_at(p->loop, &p->ev.timer, t);
}

HERD_EXPORT int
herd_pool_attach_ev(herd_pool *p, struct ev_loop *loop)
{
	if (!p || !loop)
		return -EINVAL;
	if (p->loop)
		return -EBUSY;
	if (p->closed)
		return -ENOTCONN;
	p->loop = loop;
	herd__ev_pair_init(&p->ev, p->epfd, EV_READ, pool_ev_process, p);
	ev_io_start(loop, &p->ev.io);
	herd__pool_update_ev(p);
	return 0;
}

HERD_EXPORT int
herd_pool_detach_ev(herd_pool *p)
{
	if (!p)
		return -EINVAL;
	if (!p->loop)
		return 0;
	ev_io_stop(p->loop, &p->ev.io);
	ev_timer_stop(p->loop, &p->ev.timer);
	p->loop = NULL;
	return 0;
}
