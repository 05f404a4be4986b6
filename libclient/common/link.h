/* SPDX-License-Identifier: MIT */
/*
 * The link (PROTOCOL.md 9): one byte stream between a master and a remote
 * `herdd --stdio` (a launcher's stdin and stdout: ssh, srun, any command)
 * that carries several JSON-lines connections at once. Every line on the
 * link is "CHANNEL SP PAYLOAD LF": channel 0 is the link's own talk (hello,
 * open, opened, close, heartbeat: JSON-RPC notifications), every other
 * channel is one connection whose lines are relayed untouched between the
 * link and a local socket. So both ends keep their ordinary connection code
 * (the peer, the client engine, herdd's dispatch) on a socketpair, and the
 * relay costs a memchr and a copy per line, no JSON.
 *
 * Both ends run this same core on a libev loop: herdd on its own loop
 * (daemon/stdio.c), libherd on a loop thread of its own (client/client-link.c).
 * What differs (who opens channels, what a dead link means) is in the ops.
 *
 * Heartbeats: each side sends one every interval while its output is idle,
 * and the link dies after a silence of the timeout (any byte counts), so a
 * cut network or a frozen host is seen on both sides within the timeout.
 *
 * Flow control, per channel (PROTOCOL.md 9.2), as SSH's channel windows: a
 * side sends a channel's lines only while it has credit there (the far
 * end's window, less what it sent, plus what the far end granted back in
 * "window" messages once it delivered them to its local socket). So a local
 * connection that stops reading stops its own channel and no other, and
 * each channel holds at most its window and one line. Reading the channels
 * also waits while the link's own output is past a high-water mark (the
 * transport is slow: every channel waits alike). A peer whose hello named no
 * window (an older herd) gets the old scheme: reading the link waits while
 * a channel's socket is behind, and that time does not count as silence.
 *
 * Threads: a link belongs to its loop's thread, or to a thread that holds
 * the lock the loop releases while it polls (libev's release/acquire
 * hooks): libherd's connections write their lines on the link themselves
 * and read it while they wait (herd__link_chan_send(), herd__link_pump()),
 * which saves the loop thread's wakeups on a call's way out and back.
 */
#ifndef HERD_LINK_H
#define HERD_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include <ev.h>
#include <jansson.h>

#include "proto.h"

/* The link's own version, in its hello. */
#define HERD__LINK_VERSION 1
/* The most CPUs a hello may claim (as many as a pool's workers). */
#define HERD__LINK_MAX_CPUS 4096
/* The window each side grants every channel: what it holds for one at most, besides a line. */
#define HERD__LINK_WINDOW (2u << 20)
/* The largest window a hello may grant. */
#define HERD__LINK_WINDOW_MAX (1u << 30)
/* Bytes a line may add to a connection's message: the channel number and the space. */
#define HERD__LINK_LINE_EXTRA 16

struct herd__link;

/* A growable input buffer: data[start, start + len) is unread. */
struct herd__link_buf {
	char *data;
	size_t start, len, cap;
};

/* One relayed connection: the local socket end and what waits to be written to it. */
struct herd__link_chan {
	LIST_ENTRY(herd__link_chan) entry;
	struct herd__link *link;
	unsigned id;
	int fd;
	bool closing; /* the far end closed: what is queued is written, then fd closes */
	struct herd__link_buf
	    in; /* read from fd: an unfinished line, or lines waiting for credit */
	struct proto_outq out; /* lines for fd */
	int64_t
	    credit; /* bytes we may still send (the far end's window): a line starts while > 0 */
	size_t delivered; /* bytes written to fd since the last "window" we sent */
	ev_io io;
	int io_events;
	void *userdata; /* the user's, for a channel being opened */
	struct herd__link_chan **holder; /* set to NULL when c goes (may be NULL) */
};

struct herd__link_ops {
	/* A channel-0 message other than a heartbeat or a close (borrowed). */
	void (*control)(struct herd__link *l, const char *method, json_t *params);
	/* The far end closed channel c (before c goes); error is its reason or NULL. */
	void (*chan_closed)(struct herd__link *l, struct herd__link_chan *c, const char *error);
	/* The link ended: EOF, an I/O error, a framing error or silence. Runs once. */
	void (*dead)(struct herd__link *l, int reason, const char *why);
};

LIST_HEAD(herd__link_chans, herd__link_chan);

struct herd__link {
	const struct herd__link_ops *ops;
	void *userdata;
	struct ev_loop *loop;
	int in_fd, out_fd;
	bool out_sock; /* out_fd is a socket: sendmsg() with MSG_NOSIGNAL */
	bool dead;
	bool draining; /* herd__link_finish(): the output leaves, then out_fd is shut */
	bool windows; /* the far end speaks per-channel windows (its hello said "window") */
	size_t peer_window; /* the window it grants each channel */
	size_t max_line;
	struct herd__link_buf in;
	struct proto_outq out;
	struct herd__link_chans chans;
	unsigned hb_interval_ms, hb_timeout_ms;
	uint64_t last_recv, next_beat; /* CLOCK_MONOTONIC microseconds */
	ev_io in_io, out_io;
	ev_timer timer;
	bool rearmed; /* a watcher changed (herd__link_pump()) */
};

/*
 * Sets l up on loop over in_fd and out_fd (may be the same socket; taken
 * over, made non-blocking), relaying connections of up to max_message bytes.
 */
void herd__link_init(struct herd__link *l, struct ev_loop *loop, int in_fd, int out_fd,
    const struct herd__link_ops *ops, void *userdata, size_t max_message);
/* Heartbeats from now on (0 turns either part off). */
void herd__link_set_heartbeat(struct herd__link *l, unsigned interval_ms, unsigned timeout_ms);
/*
 * The far end's hello said "window" (a value the ops checked, at most
 * HERD__LINK_WINDOW_MAX): per-channel flow control from now on, before any
 * channel is added. Our own hello must have said HERD__LINK_WINDOW.
 */
void herd__link_set_windows(struct herd__link *l, size_t peer_window);
/* Sends a channel-0 notification; params stolen (NULL: none). Returns 0 or -errno. */
int herd__link_notify(struct herd__link *l, const char *method, json_t *params);
/* Relays channel id over fd (a local socket, taken over). NULL on ENOMEM (fd closed). */
struct herd__link_chan *herd__link_chan_add(struct herd__link *l, unsigned id, int fd);
/*
 * Sends the whole lines at the start of iov (n entries) on c straight to
 * the link, as if read from c's socket, and writes the link at once: the
 * writer of c's other end saves the relay's wakeup. Takes nothing (returns
 * 0: write to the socket instead) while the socket holds unrelayed bytes,
 * lines wait for credit or the link is busy, so lines keep their order.
 * Returns the bytes taken. c may be freed (a write failure kills the link).
 */
size_t herd__link_chan_send(struct herd__link_chan *c, const struct iovec *iov, int n);
/*
 * Reads the link once and relays what came, as its watcher does, from a
 * thread other than the loop's (holding the loop's lock; the thread then
 * waits on in_fd itself). Returns 1 when a watcher changed or the link
 * died (wake the loop), 0, or -1 when the link is dead or reading it waits
 * (backpressure): stop waiting on in_fd then.
 */
int herd__link_pump(struct herd__link *l);
/* The watcher for the link's input watches fd instead of in_fd (an epoll fd holding it). */
void herd__link_watch_in(struct herd__link *l, int fd);
/* The channel with that id, or NULL. */
struct herd__link_chan *herd__link_chan_find(struct herd__link *l, unsigned id);
/* Closes c here and tells the far end (with error, NULL for none); c is freed. */
void herd__link_chan_close(struct herd__link_chan *c, const char *error);
/* Marks the link dead: channels closed, watchers stopped, ops->dead run once. */
void herd__link_kill(struct herd__link *l, int reason, const char *why);
/*
 * Ends the link cleanly: every channel is closed, the output queued so far
 * leaves, then the write side is shut so the far end reads EOF; ops->dead
 * runs when the far end closes too (or on silence).
 */
void herd__link_finish(struct herd__link *l);
/* Frees what the link holds (after it is dead); fds closed. */
void herd__link_free(struct herd__link *l);

#endif
