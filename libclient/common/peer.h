/* SPDX-License-Identifier: MIT */
/*
 * The JSON-lines peer: one connection's fd, its reader and output queue, and
 * everything every user of a connection needs the same way (tmux's proc.c
 * peer, for herdd's sockets, the worker's connections, the worker's fd-3
 * channel and the client engine alike):
 *
 *  - reading into proto's reader and handing out whole messages, a framing
 *    violation answered with one error (id null) and the session closed;
 *  - an output queue written with one sendmsg() helper, with backpressure:
 *    a message that finds the output past the high-water mark is held, and
 *    reading waits with it, until the output is back under the low-water mark;
 *  - references, so a peer is never freed inside its own callbacks: every
 *    entry that calls out holds one, and the last unref frees afterwards;
 *  - closing as flag, flush, release, free: herd__peer_close() ends the
 *    session (no more reading, the closed callback runs once), the queued
 *    output gets a short deadline to leave, then the fd is closed
 *    (released) and the peer is freed with its last reference;
 *  - heartbeats: one sent every interval, the session closed after a
 *    silence of the timeout. A peer draining output we hold back from
 *    reading counts as alive. No heartbeat is queued while output waits:
 *    the waiting output proves we are alive once read, and a peer that does
 *    not read cannot make us hold more for it;
 *  - an unfinished line that stops growing is closed after the line timeout.
 *
 * Users keep their policy only (limits, hello rules, dispatch) in callbacks.
 *
 * The core is loop-independent, sd-varlink style: herd__peer_events(),
 * herd__peer_timeout() and herd__peer_process() let any loop, or a blocking
 * poll(), drive it. herd__peer_attach_ev() (peer-ev.c) is the libev driver
 * herdd and the worker use; the client engine uses it for herd_conn_attach_ev().
 *
 * Threads: a peer belongs to one thread, except that its output side (queue,
 * writes, the heartbeat schedule) is under lock, so another thread may queue
 * a heartbeat and write without blocking (herd__peer_keepalive()).
 *
 * Not exported: linked into herdd and libherd, whose version script hides it.
 */
#ifndef HERD_PEER_H
#define HERD_PEER_H

#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <ev.h>
#include <jansson.h>

#include "proto.h"

#define HERD__PEER_USEC_INFINITY UINT64_MAX
/* How long a closing peer's output may take to leave. */
#define HERD__PEER_FLUSH_USEC 2000000ull

struct herd__peer;

/* What the user decides. Only message is required; each runs with a reference held. */
struct herd__peer_ops {
	/* One whole message (borrowed). */
	void (*message)(struct herd__peer *p, json_t *msg);
	/* End of input. NULL: herd__peer_close(p, -ECONNRESET, "closed by the peer"). */
	void (*eof)(struct herd__peer *p);
	/* The session ended; runs once. reason: 0 (closed here) or -errno; why may be NULL. */
	void (*closed)(struct herd__peer *p, int reason, const char *why);
	/* The fd was closed; the output was flushed or given up. */
	void (*released)(struct herd__peer *p);
	/* Nothing received for the heartbeat timeout. NULL: herd__peer_close() with -ETIMEDOUT. */
	void (*silent)(struct herd__peer *p);
	/* The deadline of herd__peer_set_deadline() passed (a handshake timeout). */
	void (*deadline)(struct herd__peer *p);
	/* Output is under the low-water mark after a write (writers waiting may go on). */
	void (*drained)(struct herd__peer *p);
	/*
	 * What the peer holds (herd__peer_held()) may have changed: after a read
	 * and after a message was queued. The user's budget may close the peer.
	 */
	void (*usage)(struct herd__peer *p);
	/* Params of a heartbeat (a new reference, or NULL for none). Runs under the lock. */
	json_t *(*heartbeat_params)(struct herd__peer *p);
	/* The last reference went and the peer is finished: free what holds it. */
	void (*free)(struct herd__peer *p);
	/*
	 * For a user with more to do per wakeup than the peer (the client engine's
	 * call deadlines): what the libev driver runs and waits for instead of
	 * herd__peer_process() and herd__peer_timeout().
	 */
	int (*process)(struct herd__peer *p);
	uint64_t (*timeout)(struct herd__peer *p);
};

/*
 * An ev_io and an ev_timer that both call run(data): how libev drives a
 * loop-independent core (a peer, a pool) whose run re-arms them afterwards.
 */
struct herd__ev_pair {
	ev_io io;
	ev_timer timer;
	void (*run)(void *data);
	void *data;
};

/*
 * Where a peer's output may go instead of its fd's socket: a link's channel
 * (client-link.c) sends it on the link from the writing thread. write takes
 * whole lines from the start of iov and returns how many bytes it took, 0
 * when the socket must carry them; it runs under the peer's lock. poll
 * waits as poll() would on the peer's fd alone (the link's reads meanwhile
 * done by the waiting thread). release runs once, when the peer is freed.
 */
struct herd__peer_sink {
	size_t (*write)(void *arg, const struct iovec *iov, int n);
	/* poll() on pfd, the peer's fd, for a thread that waits for this peer (NULL: poll). */
	int (*poll)(void *arg, struct pollfd *pfd, int timeout_ms);
	void (*release)(void *arg);
};

struct herd__peer {
	const struct herd__peer_ops *ops;
	void *userdata;
	int fd;
	unsigned n_ref;
	bool closed; /* the session ended: no more reading or dispatch */
	bool released; /* fd closed */
	bool eof; /* the peer shut its side */
	bool paused; /* a message met output over the high-water mark: reading waits */
	int write_error; /* a write failed (-errno): what was received is read, then the session aborts */
	json_t *held; /* that message, handed out first once the output drains */
	struct proto_reader reader;
	struct proto_outq outq;
	size_t max_send; /* what the other side accepts, newline excluded */
	bool fds_out; /* the other side takes bytes values out of band (it said so) */
	size_t high_water, low_water;
	uint64_t bytes_in, bytes_out;
	uint64_t msgs_in, msgs_out; /* messages dispatched and queued (heartbeats included) */
	uint64_t *sum_in, *sum_out; /* process-wide counters to add to; may be NULL */

	/* Times are CLOCK_MONOTONIC microseconds; HERD__PEER_USEC_INFINITY for none. */
	uint64_t last_recv;
	uint64_t flush_deadline;
	uint64_t deadline;
	unsigned hb_interval_ms; /* 0: no heartbeats sent */
	unsigned hb_timeout_ms; /* 0: silence is never fatal */
	unsigned
	    line_timeout_ms; /* an unfinished line that does not grow for this long closes; 0: never */

	/* The output side: outq, the socket's writes and next_beat. */
	pthread_mutex_t lock;
	const struct herd__peer_sink *sink; /* NULL: everything goes to fd */
	void *sink_arg;
	uint64_t next_beat;

	bool processing; /* inside herd__peer_process(): the driver re-arms afterwards */
	bool more; /* the last read filled its buffer or stopped at descriptors: more may wait */
	/*
	 * Fairness: at most budget messages are handed out per herd__peer_process()
	 * (0: no bound). Past it the peer is deferred: it reads nothing more and
	 * is due again at once, so the loop serves every other peer in between.
	 */
	unsigned budget;
	unsigned spent;
	bool deferred;

	/* The libev driver (peer-ev.c). */
	struct ev_loop *loop;
	int priority; /* of its watchers (ev_set_priority), set before attaching */
	struct herd__ev_pair ev;
	int io_events;
	uint64_t timer_at; /* what the timer is armed for */
};

/* CLOCK_MONOTONIC in microseconds. */
uint64_t herd__now_usec(void);
/* Adds a relative timeout to now, saturating at HERD__PEER_USEC_INFINITY. */
uint64_t herd__deadline(uint64_t timeout_usec);

/*
 * Sets p up over fd (non-blocking, close-on-exec; taken over) with one
 * reference. max_message bounds what we read, max_output what we queue; the
 * other side's limit (max_send) starts as max_message.
 */
void herd__peer_init(struct herd__peer *p, int fd, const struct herd__peer_ops *ops, void *userdata,
    size_t max_message, size_t max_output);
struct herd__peer *herd__peer_ref(struct herd__peer *p);
/* Drops a reference; the last one closes the session if open, releases and frees. NULL-safe. */
void herd__peer_unref(struct herd__peer *p);

/*
 * Reads bytes values from now on (PROTOCOL.md 1.1): "$bytes" objects become
 * raw bytes, and sealed memfds sent with a line may carry them. Without it
 * (herdd), "$bytes" objects stay objects and descriptors received are closed.
 */
void herd__peer_read_bytes(struct herd__peer *p);
/* A sealed memfd holding data[0..len), or -errno (peer-bytes.c). */
int herd__bytes_fd_make(const char *data, size_t len);
/* The len bytes of a received memfd (borrowed) as a new bytes value, or NULL with *err. */
json_t *herd__bytes_fd_read(int fd, size_t len, struct proto_error *err);

/* Heartbeats from now on: 0 turns either part off. */
void herd__peer_set_heartbeat(struct herd__peer *p, unsigned interval_ms, unsigned timeout_ms);
/* One deadline for the user (absolute; HERD__PEER_USEC_INFINITY clears it). */
void herd__peer_set_deadline(struct herd__peer *p, uint64_t when);
/*
 * An unfinished line that gets no byte for timeout_ms (0: never, the default)
 * is answered with a timeout error (id null) and the session closed.
 */
void herd__peer_set_line_timeout(struct herd__peer *p, unsigned timeout_ms);
/* Bytes the peer holds: its input buffer and its queued output. */
size_t herd__peer_held(struct herd__peer *p);
/* Bytes of output queued, not yet written. */
size_t herd__peer_queued(struct herd__peer *p);
/* Output goes through sink (see struct herd__peer_sink) from now on; before any is queued. */
void herd__peer_set_sink(struct herd__peer *p, const struct herd__peer_sink *sink, void *arg);
/* Backpressure marks; SIZE_MAX turns it off (the default). */
void herd__peer_set_water(struct herd__peer *p, size_t high, size_t low);

/*
 * Queues msg (borrowed) without writing; the loop writes it. Returns 0,
 * -ENOTCONN once released, or proto_outq_push_json()'s errors (-EMSGSIZE
 * past max_send, -EINVAL not encodable, -ENOBUFS when the queue is full,
 * -ENOMEM): msg is not queued then. A request is answered exactly once,
 * always: a reply (a message with an id and no method) that fails with
 * -EMSGSIZE, -EINVAL or -ENOMEM is replaced by herd__peer_standin()'s error
 * with the same id, and the reason is returned.
 */
int herd__peer_queue(struct herd__peer *p, const json_t *msg);
/*
 * Queues one message already encoded by the user: line[0..len) is compact
 * JSON ending in its newline. Like herd__peer_queue(): a reply (id not NULL)
 * longer than max_send is answered by the stand-in limit_exceeded instead,
 * and -EMSGSIZE returned; -ENOBUFS when the queue is full.
 */
int herd__peer_queue_line(struct herd__peer *p, const char *line, size_t len, const json_t *id);
/*
 * The error reply (new reference, NULL without memory) that answers id when
 * its own reply failed with err: limit_exceeded {limit: max_message_size,
 * value: max_send} for -EMSGSIZE, internal_error otherwise (-ENOMEM: building
 * the reply failed, which is how a user answers an id whose reply is NULL).
 */
json_t *herd__peer_standin(const struct herd__peer *p, const json_t *id, int err);
/*
 * herd__peer_queue() then writes at once: most messages need no wakeup. A
 * failed write aborts the session (the message counts as sent and lost) and
 * does not change the result.
 */
int herd__peer_send(struct herd__peer *p, const json_t *msg);
/* Sends a notification; params are stolen (NULL for none). */
int herd__peer_notify(struct herd__peer *p, const char *method, json_t *params);

/*
 * Ends the session: reading stops, the closed callback runs, queued output
 * gets HERD__PEER_FLUSH_USEC to leave, then the fd closes.
 */
void herd__peer_close(struct herd__peer *p, int reason, const char *why);
/* Like herd__peer_close() but drops the queued output. */
void herd__peer_abort(struct herd__peer *p, int reason, const char *why);
/*
 * The other side broke the framing: answers with one error (id null; the
 * limit as data when a limit was passed) and closes with -EBADMSG.
 */
void herd__peer_refuse(struct herd__peer *p, const struct proto_error *err);

/* POLLIN and POLLOUT as wanted now; 0 once released. */
int herd__peer_events(struct herd__peer *p);
/* The earliest time herd__peer_process() has something to do (absolute). */
uint64_t herd__peer_timeout(struct herd__peer *p);
/*
 * Writes, reads once, dispatches, and runs what fell due (heartbeat, silence,
 * flush and user deadlines). Returns >0 if anything happened, 0, or -ENOTCONN.
 */
int herd__peer_process(struct herd__peer *p);
/* Reads and dispatches what is already in the socket, at most rounds reads. */
void herd__peer_drain_input(struct herd__peer *p, int rounds);
/* Writes queued output now, waiting at most timeout_ms for the socket. Returns 0 or -errno. */
int herd__peer_flush(struct herd__peer *p, int timeout_ms);
/*
 * From another thread, without blocking: queues a heartbeat if one is due
 * and writes what the socket takes. Never reads, closes or calls back
 * (besides heartbeat_params). Returns when it is next needed.
 */
uint64_t herd__peer_keepalive(struct herd__peer *p, uint64_t now);

/* Drives p from loop (libev) until it is released or detached. */
void herd__peer_attach_ev(struct herd__peer *p, struct ev_loop *loop);
void herd__peer_detach_ev(struct herd__peer *p);
/* Re-arms the watchers after a change (the core calls it; users with own process hooks too). */
void herd__peer_update_ev(struct herd__peer *p);
/* Sets up pair's two watchers, stopped, to call run(data); the io one watches fd for events. */
void herd__ev_pair_init(
    struct herd__ev_pair *pair, int fd, int events, void (*run)(void *data), void *data);
/*
 * Stops timer and, unless at_usec (CLOCK_MONOTONIC) is HERD__PEER_USEC_INFINITY,
 * starts it to fire once at_usec has passed: the one deadline-to-libev
 * conversion, used by the peer's driver and the pool's.
 */
void herd__ev_timer_at(struct ev_loop *loop, ev_timer *timer, uint64_t at_usec);

#endif
