/* SPDX-License-Identifier: MIT */
/*
 * Keepalive: heartbeats for the connections nobody is processing while
 * libherd waits on another one.
 *
 * Why: a connection sends its heartbeats when it is processed. A program that
 * blocks in herd_call() on a worker for longer than heartbeat_timeout_ms does
 * not process its master connection meanwhile, so herdd declares the master
 * dead and kills every worker it owns, the one being called included. Every
 * wait inside libherd (conn_poll() in client-io.c, autostart's waits) therefore
 * calls herd__keepalive(), which sends the heartbeats that fell due on every
 * other connection of the process.
 *
 * What a pass does to a connection: it queues a heartbeat when one is due and
 * writes queued output without blocking. It never reads, dispatches, runs a
 * callback or closes: a blocking call must not re-enter the program through
 * another connection's callbacks, and a write error is left for the
 * connection's own next herd_conn_process(), which finds it again and closes
 * on its owner's thread. What the peer sent meanwhile waits in the socket;
 * herd_conn_process() reads it before it judges silence (client-io.c), so the
 * connection does not time out for the time we did not read it.
 *
 * Which connections: open ones with heartbeats that are not attached to a
 * libev loop. An attached connection is its loop's to drive, and libev's
 * watchers cannot be touched from another thread.
 *
 * Threads: the list is process-wide, so a thread blocked in libherd keeps
 * alive the idle connections of other threads too. That is safe because a
 * pass (herd__peer_keepalive()) touches only the peer's output side, which
 * every thread changes under the peer's lock (its output queue, its socket's
 * writes and next_beat), and takes it with trylock, so it never waits for the
 * owner: a connection whose owner is writing is skipped (it is busy, hence alive). A pass holds list_lock while
 * it touches a connection, and a connection leaves the list under list_lock
 * before its socket closes or it is freed, so a pass never sees one go away.
 * The owner never holds the peer's lock while it takes list_lock: no lock order to get
 * wrong.
 *
 * fork(): a child inherits the parent's list and sockets. It must not send on
 * the parent's connections (the bytes would interleave with the parent's), so
 * the child empties its copy of the list.
 */
#include <errno.h>
#include <pthread.h>

#include "client/client-internal.h"

static pthread_mutex_t list_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static herd_conn *list_head; /* under list_lock */
/*
 * When the next pass is due: at most the earliest next heartbeat of the listed
 * connections (a connection that sent its own heartbeat since only makes it
 * early, and an early pass just finds nothing to do). Written under list_lock,
 * read without it on every wait.
 */
static uint64_t next_pass = HERD__USEC_INFINITY;

static void
atfork_prepare(void)
{
	pthread_mutex_lock(&list_lock);
}

static void
atfork_parent(void)
{
	pthread_mutex_unlock(&list_lock);
}

/* The child's connections are copies of the parent's: none is its to keep alive. */
static void
atfork_child(void)
{
	herd_conn *c, *next;

	for (c = list_head; c; c = next) {
		next = c->ka_next;
		c->ka_listed = false;
		c->ka_prev = c->ka_next = NULL;
	}
	list_head = NULL;
	__atomic_store_n(&next_pass, HERD__USEC_INFINITY, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&list_lock);
}

static void
atfork_register(void)
{
	(void)pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Lowers next_pass to t; list_lock held. */
static void
next_pass_lower(uint64_t t)
{
	if (t < __atomic_load_n(&next_pass, __ATOMIC_RELAXED))
		__atomic_store_n(&next_pass, t, __ATOMIC_RELAXED);
}

/* Lists conn for keepalive when it qualifies. */
void
herd__keepalive_add(herd_conn *conn)
{
	uint64_t beat;

	if (conn->ka_listed || conn->state != CONN_OPEN || conn->closing || conn->peer.loop ||
	    !herd__conn_heartbeats_on(conn))
		return;
	pthread_once(&atfork_once, atfork_register);
	pthread_mutex_lock(&conn->peer.lock);
	beat = conn->peer.next_beat;
	pthread_mutex_unlock(&conn->peer.lock);

	pthread_mutex_lock(&list_lock);
	HERD__LIST_PREPEND(list_head, conn, ka_prev, ka_next);
	conn->ka_listed = true;
	next_pass_lower(beat);
	pthread_mutex_unlock(&list_lock);
}

/* Unlists conn: once list_lock is ours, no pass is touching it, and none will. */
void
herd__keepalive_remove(herd_conn *conn)
{
	if (!conn->ka_listed)
		return;
	pthread_mutex_lock(&list_lock);
	HERD__LIST_REMOVE(list_head, conn, ka_prev, ka_next);
	conn->ka_listed = false;
	pthread_mutex_unlock(&list_lock);
}

/* Sends due heartbeats on the listed connections but self. Returns when the next pass is due. */
uint64_t
herd__keepalive(herd_conn *self)
{
	uint64_t now = herd__now_usec();
	uint64_t next = HERD__USEC_INFINITY;
	herd_conn *c;

	/* The common case, on every wait: nothing is due. */
	if (now < __atomic_load_n(&next_pass, __ATOMIC_RELAXED))
		return __atomic_load_n(&next_pass, __ATOMIC_RELAXED);

	pthread_mutex_lock(&list_lock);
	for (c = list_head; c; c = c->ka_next) {
		uint64_t t;

		if (c != self) {
			t = herd__peer_keepalive(&c->peer, now);
		} else {
			/* self is being processed by our caller, which sends its heartbeats. */
			pthread_mutex_lock(&c->peer.lock);
			t = c->peer.next_beat;
			pthread_mutex_unlock(&c->peer.lock);
		}
		if (t < next)
			next = t;
	}
	/* Never in the past: self's own due heartbeat is its caller's to send. */
	if (next <= now)
		next = now + 1000;
	__atomic_store_n(&next_pass, next, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&list_lock);
	return next;
}
