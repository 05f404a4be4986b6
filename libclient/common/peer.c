/* SPDX-License-Identifier: MIT */
/*
 * The JSON-lines peer's core: reading, framing, the output queue, closing and
 * heartbeats, with no event loop (see peer.h; peer-ev.c is the libev driver).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "peer.h"

#define READ_CHUNK   65536u
#define WRITE_IOVECS 64
/*
 * Descriptors queued for a peer that does not read fast enough: past this
 * many, payloads go inline until the queue drains, so a slow reader does
 * not pile up memfds (and the uid's descriptors in flight, which the
 * kernel bounds by RLIMIT_NOFILE).
 */
#define QUEUED_FDS_MAX (4 * PROTO_MAX_FDS)
/* At release, input we will never read is dropped so the other side sees an end, not a reset. */
#define DISCARD_ROUNDS 64

#define INF            HERD__PEER_USEC_INFINITY

/* CLOCK_MONOTONIC in microseconds. */
uint64_t
herd__now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000ull;
}

/* now + timeout, saturating so an infinite timeout stays infinite. */
uint64_t
herd__deadline(uint64_t timeout_usec)
{
	uint64_t now = herd__now_usec();

	if (timeout_usec == INF || timeout_usec > UINT64_MAX - now)
		return INF;
	return now + timeout_usec;
}

static void
peer_changed(struct herd__peer *p)
{
	if (p->loop && !p->processing)
		herd__peer_update_ev(p);
}

/* Sets up p over fd with one reference. */
void
herd__peer_init(struct herd__peer *p, int fd, const struct herd__peer_ops *ops, void *userdata,
    size_t max_message, size_t max_output)
{
	memset(p, 0, sizeof(*p));
	p->ops = ops;
	p->userdata = userdata;
	p->fd = fd;
	p->n_ref = 1;
	proto_reader_init(&p->reader, max_message, HERD_MAX_DEPTH);
	proto_outq_init(&p->outq, max_output);
	p->max_send = max_message;
	p->high_water = p->low_water = SIZE_MAX;
	p->last_recv = herd__now_usec();
	p->flush_deadline = p->deadline = p->next_beat = INF;
	pthread_mutex_init(&p->lock, NULL);
}

static const struct proto_bytes_in peer_bytes_in = { .fd_read = herd__bytes_fd_read };

/* Bytes values from now on. */
void
herd__peer_read_bytes(struct herd__peer *p)
{
	proto_reader_set_bytes(&p->reader, &peer_bytes_in);
}

/* Takes a reference. */
struct herd__peer *
herd__peer_ref(struct herd__peer *p)
{
	if (p)
		p->n_ref++;
	return p;
}

/* Ends the session once: no more reading, and the user hears why. */
static void
peer_end_session(struct herd__peer *p, int reason, const char *why)
{
	if (p->closed)
		return;
	p->closed = true;
	if (p->ops->closed)
		p->ops->closed(p, reason, why);
}

/* Closes the fd: the last step before the free. */
static void
peer_release(struct herd__peer *p)
{
	char buf[4096];

	if (p->released)
		return;
	p->released = p->closed = true;
	for (int i = 0; !p->eof && i < DISCARD_ROUNDS; i++)
		if (recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT) <= 0)
			break;
	pthread_mutex_lock(&p->lock);
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	proto_outq_free(&p->outq);
	pthread_mutex_unlock(&p->lock);
	json_decref(p->held);
	p->held = NULL;
	herd__peer_detach_ev(p);
	if (p->ops->released)
		p->ops->released(p);
}

/* Drops a reference; the last one finishes the peer (outside any of its callbacks). */
void
herd__peer_unref(struct herd__peer *p)
{
	if (!p || --p->n_ref > 0)
		return;
	if (!p->released) {
		/* Revived for the close, so its callbacks see a live peer; one may keep it. */
		p->n_ref = 1;
		peer_end_session(p, 0, NULL);
		peer_release(p);
		if (--p->n_ref > 0)
			return;
	}
	proto_reader_free(&p->reader);
	proto_outq_free(&p->outq);
	if (p->sink)
		p->sink->release(p->sink_arg);
	pthread_mutex_destroy(&p->lock);
	if (p->ops->free)
		p->ops->free(p);
}

/* Heartbeats from now on; the silence is counted from now too. */
void
herd__peer_set_heartbeat(struct herd__peer *p, unsigned interval_ms, unsigned timeout_ms)
{
	uint64_t now = herd__now_usec();

	pthread_mutex_lock(&p->lock);
	p->hb_interval_ms = interval_ms;
	p->hb_timeout_ms = timeout_ms;
	p->next_beat = interval_ms ? now + interval_ms * 1000ull : INF;
	pthread_mutex_unlock(&p->lock);
	p->last_recv = now;
	peer_changed(p);
}

/* The user's one deadline. */
void
herd__peer_set_deadline(struct herd__peer *p, uint64_t when)
{
	p->deadline = when;
	peer_changed(p);
}

/* The unfinished-line timeout. */
void
herd__peer_set_line_timeout(struct herd__peer *p, unsigned timeout_ms)
{
	p->line_timeout_ms = timeout_ms;
	peer_changed(p);
}

/* Bytes held in the input buffer (allocated) and the output queue. */
size_t
herd__peer_held(struct herd__peer *p)
{
	return p->reader.cap + herd__peer_queued(p);
}

/* Bytes of an unfinished line in the input buffer. */
static size_t
peer_partial(const struct herd__peer *p)
{
	return p->reader.len - p->reader.start - p->reader.scanned;
}

/* When an unfinished line times out; INF without one (or while reading waits for our output). */
static uint64_t
peer_line_deadline(const struct herd__peer *p)
{
	if (!p->line_timeout_ms || p->paused || peer_partial(p) == 0)
		return INF;
	return p->last_recv + p->line_timeout_ms * 1000ull;
}

static void
peer_usage(struct herd__peer *p)
{
	if (p->ops->usage && !p->closed)
		p->ops->usage(p);
}

void
herd__peer_set_sink(struct herd__peer *p, const struct herd__peer_sink *sink, void *arg)
{
	p->sink = sink;
	p->sink_arg = arg;
}

/* Backpressure marks. */
void
herd__peer_set_water(struct herd__peer *p, size_t high, size_t low)
{
	p->high_water = high;
	p->low_water = low;
}

/* The one writer: sendmsg() until the queue is empty or the socket full; lock held. */
static int
peer_write_locked(struct herd__peer *p)
{
	size_t written = 0;
	int r = 0;

	while (!proto_outq_empty(&p->outq)) {
		struct iovec iov[WRITE_IOVECS];
		struct msghdr mh = { .msg_iov = iov };
		union {
			char buf[CMSG_SPACE(PROTO_MAX_FDS * sizeof(int))];
			struct cmsghdr align;
		} ctl;
		const int *fds;
		unsigned nfds = proto_outq_fds(&p->outq, &fds);
		ssize_t n;

		mh.msg_iovlen = (size_t)proto_outq_peek(&p->outq, iov, WRITE_IOVECS);
		/* Lines with descriptors need the socket; the sink takes what it can of the rest. */
		if (p->sink && !nfds &&
		    (n = (ssize_t)p->sink->write(p->sink_arg, iov, (int)mh.msg_iovlen)) > 0) {
			proto_outq_consume(&p->outq, (size_t)n);
			written += (size_t)n;
			continue;
		}
		if (nfds) {
			/* A line's descriptors go with its first byte (proto_outq_peek() starts it). */
			struct cmsghdr *cm;

			mh.msg_control = ctl.buf;
			mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
			/* The header's padding too: nothing uninitialised goes to the kernel. */
			memset(ctl.buf, 0, mh.msg_controllen);
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
			memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
		}
		/* MSG_NOSIGNAL: a vanished reader is an error code, not SIGPIPE. */
		n = sendmsg(p->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/*
			 * ETOOMANYREFS: this uid's descriptors in flight reached
			 * RLIMIT_NOFILE; they come back as receivers read, so wait
			 * like a full socket.
			 */
			if (errno != EAGAIN && errno != ETOOMANYREFS)
				r = -errno;
			break;
		}
		proto_outq_consume(&p->outq, (size_t)n);
		written += (size_t)n;
	}
	if (written == 0)
		return r;
	p->bytes_out += written;
	if (p->sum_out)
		*p->sum_out += written;
	/* While backpressure keeps us from reading, a peer draining our queue is alive. */
	if (p->paused)
		p->last_recv = herd__now_usec();
	return r < 0 ? r : 1;
}

/* Bytes of output queued. */
size_t
herd__peer_queued(struct herd__peer *p)
{
	size_t n;

	pthread_mutex_lock(&p->lock);
	n = p->outq.bytes;
	pthread_mutex_unlock(&p->lock);
	return n;
}

static void
peer_fail(struct herd__peer *p, int r, const char *what)
{
	char why[128];

	snprintf(why, sizeof(why), "%s failed: %s", what, strerror(-r));
	herd__peer_abort(p, r, why);
}

static int peer_dispatch(struct herd__peer *p);

/*
 * A write failed: the other side is gone or going, but what it sent before
 * (its last words: a worker's failure report before it exits) is still to be
 * read. The output is dropped and the session aborts at the next process,
 * after reading what has arrived.
 */
static int
peer_write_failed(struct herd__peer *p, int r)
{
	if (p->closed) {
		peer_fail(p, r, "write");
		return r;
	}
	pthread_mutex_lock(&p->lock);
	p->write_error = r;
	proto_outq_free(&p->outq);
	pthread_mutex_unlock(&p->lock);
	peer_changed(p);
	return r;
}

/* Writes what the socket takes, then acts on it. Returns >0 progress, 0, or -errno (failed). */
static int
peer_write(struct herd__peer *p)
{
	size_t queued, backlog;
	int r;

	if (p->released)
		return 0;
	if (p->write_error) {
		/* Nothing can leave any more. */
		if (p->closed)
			peer_release(p);
		return 0;
	}
	pthread_mutex_lock(&p->lock);
	r = peer_write_locked(p);
	queued = p->outq.bytes;
	backlog = proto_outq_backlog(&p->outq);
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		return peer_write_failed(p, r);
	if (r > 0)
		peer_usage(p);
	if (p->closed) {
		if (queued == 0)
			peer_release(p);
		return r;
	}
	if (backlog >= p->low_water)
		return r;
	if (p->paused) {
		/* Messages held back while the output was full come first, then reading. */
		p->paused = false;
		if (peer_dispatch(p) > 0)
			r = 1;
	}
	if (!p->closed && p->ops->drained)
		p->ops->drained(p);
	return r;
}

/* The error reply that answers id when its own reply failed with err. */
json_t *
herd__peer_standin(const struct herd__peer *p, const json_t *id, int err)
{
	json_t *reply;

	if (err == -EMSGSIZE) {
		reply = proto_error((json_t *)id, HERD_E_LIMIT_EXCEEDED,
		    "the reply is longer than the peer's max_message_size",
		    json_pack("{s:s, s:I}", "limit", "max_message_size", "value",
		        (json_int_t)p->max_send));
		if (reply)
			return reply;
	}
	/* Without data, so that only no memory at all leaves nothing to send. */
	return proto_error((json_t *)id, HERD_E_INTERNAL_ERROR,
	    err == -ENOMEM ? "the reply could not be built (out of memory)"
	                   : "the reply could not be encoded",
	    NULL);
}

/* A result or an error reply: what answers a request. */
static bool
is_reply(const json_t *msg)
{
	return json_object_get(msg, "id") && !json_object_get(msg, "method");
}

/* Queues msg (borrowed) for the loop to write; a reply that cannot go is answered by a stand-in. */
int
herd__peer_queue(struct herd__peer *p, const json_t *msg)
{
	bool queued;
	int r;

	if (p->released)
		return -ENOTCONN;
	if (p->write_error)
		return p->write_error;
	pthread_mutex_lock(&p->lock);
	if (p->fds_out && p->outq.nfds < QUEUED_FDS_MAX) {
		struct proto_bytes_out out = { .fd_make = herd__bytes_fd_make,
			.limit = p->max_send };

		r = proto_outq_push_json_ex(&p->outq, msg, p->max_send, &out);
	} else {
		r = proto_outq_push_json(&p->outq, msg, p->max_send);
	}
	queued = r == 0;
	if ((r == -EMSGSIZE || r == -EINVAL || r == -ENOMEM) && is_reply(msg)) {
		/* A request is answered exactly once, always: never silence for a reply's size or text. */
		json_t *standin = herd__peer_standin(p, json_object_get(msg, "id"), r);
		int s = standin ? proto_outq_push_json(&p->outq, standin, p->max_send) : -ENOMEM;

		json_decref(standin);
		queued = s == 0;
		if (s < 0)
			r = s;
	}
	if (queued)
		p->msgs_out++;
	pthread_mutex_unlock(&p->lock);
	if (queued) {
		peer_changed(p);
		peer_usage(p);
	}
	return r;
}

/* Queues a line the user encoded; see peer.h. */
int
herd__peer_queue_line(struct herd__peer *p, const char *line, size_t len, const json_t *id)
{
	int r;

	if (p->released)
		return -ENOTCONN;
	if (p->write_error)
		return p->write_error;
	if (len - 1 > p->max_send && id) {
		json_t *standin = herd__peer_standin(p, id, -EMSGSIZE);

		r = standin ? herd__peer_queue(p, standin) : -ENOMEM;
		json_decref(standin);
		return r < 0 ? r : -EMSGSIZE;
	}
	pthread_mutex_lock(&p->lock);
	r = len - 1 > p->max_send ? -EMSGSIZE : proto_outq_push(&p->outq, line, len);
	if (r == 0)
		p->msgs_out++;
	pthread_mutex_unlock(&p->lock);
	if (r == 0) {
		peer_changed(p);
		peer_usage(p);
	}
	return r;
}

/* Queues msg (borrowed) and writes at once. */
int
herd__peer_send(struct herd__peer *p, const json_t *msg)
{
	int r;

	/* Held: the usage callback may end the peer while it queues. */
	herd__peer_ref(p);
	r = herd__peer_queue(p, msg);
	/* Also after a failure: a reply's stand-in may have been queued. */
	if (!p->released) {
		(void)peer_write(p);
		peer_changed(p);
	}
	herd__peer_unref(p);
	return r;
}

/* Sends method(params), params stolen. */
int
herd__peer_notify(struct herd__peer *p, const char *method, json_t *params)
{
	json_t *msg = proto_notification(method, params);
	int r = msg ? herd__peer_send(p, msg) : -ENOMEM;

	json_decref(msg);
	return r;
}

/* Ends the session; with flush, queued output gets its deadline to leave before the fd closes. */
static void
peer_end(struct herd__peer *p, int reason, const char *why, bool flush)
{
	if (p->released)
		return;
	herd__peer_ref(p);
	peer_end_session(p, reason, why);
	/* peer_write() releases once the queue is empty, or aborts on an error. */
	if (flush && !p->released && peer_write(p) >= 0 && !p->released) {
		if (p->flush_deadline == INF)
			p->flush_deadline = herd__now_usec() + HERD__PEER_FLUSH_USEC;
		peer_changed(p);
	} else {
		peer_release(p);
	}
	herd__peer_unref(p);
}

/* Ends the session, flushing what is queued. */
void
herd__peer_close(struct herd__peer *p, int reason, const char *why)
{
	peer_end(p, reason, why, true);
}

/* Ends the session, dropping what is queued. */
void
herd__peer_abort(struct herd__peer *p, int reason, const char *why)
{
	peer_end(p, reason, why, false);
}

/* Answers a framing violation and closes. */
void
herd__peer_refuse(struct herd__peer *p, const struct proto_error *err)
{
	const char *name = proto_error_name(err->code);
	json_t *data = NULL, *reply;
	char why[256];

	if (err->code == HERD_E_MESSAGE_TOO_LARGE)
		data = json_pack("{s:I}", "limit", (json_int_t)p->reader.max_message);
	else if (err->code == HERD_E_TOO_DEEP)
		data = json_pack("{s:i}", "limit", (int)HERD_MAX_DEPTH);
	reply = proto_error(NULL, err->code, err->text, data);
	if (reply)
		(void)herd__peer_queue(p, reply);
	json_decref(reply);
	snprintf(why, sizeof(why), "the peer sent an invalid message (%s: %s)", name ? name : "?",
	    err->text);
	herd__peer_close(p, -EBADMSG, why);
}

/*
 * Hands out every whole message already read, while the session lasts. A
 * message that finds the output past the high-water mark is held, and reading
 * waits with it, until a write brings the output under the low-water mark:
 * then the held message comes first, before the drained callback refills the
 * queue, so a cancel never waits behind a stream that keeps it full.
 */
static int
peer_dispatch(struct herd__peer *p)
{
	int n = 0;

	while (!p->closed && !p->paused) {
		struct proto_error err;
		json_t *msg = p->held;
		int r = 1;

		/* Its share of this round is spent: the rest waits in the reader. */
		if (p->budget && p->spent >= p->budget) {
			p->deferred = true;
			break;
		}

		p->held = NULL;
		if (!msg)
			r = proto_reader_next(&p->reader, &msg, &err);
		if (r == 0)
			break;
		n++;
		if (r == -EBADMSG) {
			/* A framing error: the stream cannot be trusted past this point. */
			herd__peer_refuse(p, &err);
			break;
		}
		if (r < 0) {
			peer_fail(p, r, "reading");
			break;
		}
		/* Unlocked: backpressure is for peers of one thread (the client engine has none). */
		if (p->high_water != SIZE_MAX && proto_outq_backlog(&p->outq) > p->high_water) {
			p->held = msg;
			p->paused = true;
			break;
		}
		p->msgs_in++;
		p->spent++;
		p->ops->message(p, msg);
		json_decref(msg);
	}
	return n;
}

/*
 * The descriptors that came with a read (SCM_RIGHTS, close-on-exec already):
 * into fds, at most max; any beyond are closed.
 */
static unsigned
peer_received_fds(struct msghdr *mh, int *fds, unsigned max)
{
	unsigned n = 0;

	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		const unsigned char *data = CMSG_DATA(cm);
		size_t count;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < count; i++) {
			int fd;

			memcpy(&fd, data + i * sizeof(int), sizeof(int));
			if (n < max)
				fds[n++] = fd;
			else
				close(fd);
		}
	}
	return n;
}

/* One read. Returns >0 after reading, 0 when nothing waits, <0 once the input ended. */
static int
peer_read(struct herd__peer *p)
{
	char buf[READ_CHUNK];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	union {
		char buf[CMSG_SPACE(PROTO_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh = { .msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = sizeof(ctl.buf) };
	int fds[PROTO_MAX_FDS];
	unsigned nfds;
	ssize_t n;
	int r;

	do
		n = recvmsg(p->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	/* Descriptors are never left open, whatever the read brought. */
	nfds = n >= 0 && mh.msg_controllen ? peer_received_fds(&mh, fds, PROTO_MAX_FDS) : 0;
	if (n <= 0)
		for (unsigned i = 0; i < nfds; i++)
			close(fds[i]);
	if (n < 0) {
		if (errno == EAGAIN)
			return 0;
		r = -errno;
		peer_fail(p, r, "read");
		return r;
	}
	if (n == 0) {
		p->eof = true;
		if (p->ops->eof)
			p->ops->eof(p);
		else
			herd__peer_close(p, -ECONNRESET, "closed by the peer");
		peer_changed(p);
		return -ECONNRESET;
	}
	/* A read that brought descriptors stops at their line: more may wait behind it. */
	p->more = (size_t)n == sizeof(buf) || nfds > 0;
	p->last_recv = herd__now_usec();
	p->bytes_in += (uint64_t)n;
	if (p->sum_in)
		*p->sum_in += (uint64_t)n;
	r = nfds ? proto_reader_feed_fds(&p->reader, buf, (size_t)n, fds, nfds)
	         : proto_reader_feed(&p->reader, buf, (size_t)n);
	if (r < 0) {
		peer_fail(p, r, "buffering input");
		return r;
	}
	peer_usage(p);
	return 1;
}

/* Reads and dispatches what already waits in the socket (the other side's last words). */
void
herd__peer_drain_input(struct herd__peer *p, int rounds)
{
	unsigned budget = p->budget;

	herd__peer_ref(p);
	/* Last words are handed out whole, budget or not: an EOF read next would drop the rest. */
	p->budget = 0;
	peer_dispatch(p);
	for (int i = 0; i < rounds && !p->closed && !p->eof; i++) {
		if (peer_read(p) <= 0)
			break;
		peer_dispatch(p);
	}
	p->budget = budget;
	p->deferred = false;
	herd__peer_unref(p);
}

/* An unfinished line stopped growing: the other side is told, and the session ends. */
static void
peer_line_stalled(struct herd__peer *p)
{
	json_t *reply = proto_error(NULL, HERD_E_TIMEOUT, "an unfinished message stopped arriving",
	    json_pack("{s:s, s:I}", "what", "line", "ms", (json_int_t)p->line_timeout_ms));
	char why[128];

	if (reply)
		(void)herd__peer_queue(p, reply);
	json_decref(reply);
	snprintf(why, sizeof(why), "an unfinished line of %zu bytes got nothing for %u ms",
	    peer_partial(p), p->line_timeout_ms);
	herd__peer_close(p, -ETIMEDOUT, why);
}

/* Runs what fell due. Returns 1 if anything did. */
static int
peer_timers(struct herd__peer *p, uint64_t now)
{
	bool beat;

	if (p->closed) {
		if (now < p->flush_deadline)
			return 0;
		/* The other side did not read its last replies. */
		peer_release(p);
		return 1;
	}
	if (now >= p->deadline) {
		p->deadline = INF;
		if (p->ops->deadline)
			p->ops->deadline(p);
		return 1;
	}
	if (p->hb_timeout_ms && now >= p->last_recv + p->hb_timeout_ms * 1000ull) {
		char why[96];

		if (p->ops->silent) {
			p->ops->silent(p);
		} else {
			snprintf(why, sizeof(why), "nothing received for %u ms (heartbeat timeout)",
			    p->hb_timeout_ms);
			herd__peer_close(p, -ETIMEDOUT, why);
		}
		return 1;
	}
	if (now >= peer_line_deadline(p)) {
		peer_line_stalled(p);
		return 1;
	}
	/* Replies queued this round leave first: only output the socket refused is backed up. */
	if (now >= p->next_beat && herd__peer_queued(p) > 0 && (peer_write(p) < 0 || p->closed))
		return 1;
	/* Decided under the lock, so this and another thread's keepalive never both send it. */
	pthread_mutex_lock(&p->lock);
	beat = now >= p->next_beat;
	if (beat)
		p->next_beat = now + p->hb_interval_ms * 1000ull;
	/* Output still waits: it proves we live once read, and a heartbeat would only pile up. */
	if (beat && p->outq.bytes > 0)
		beat = false;
	pthread_mutex_unlock(&p->lock);
	if (!beat)
		return 0;
	(void)herd__peer_notify(
	    p, "heartbeat", p->ops->heartbeat_params ? p->ops->heartbeat_params(p) : NULL);
	return 1;
}

/* What the peer waits for now. */
int
herd__peer_events(struct herd__peer *p)
{
	int events;

	if (p->released)
		return 0;
	events = !p->closed && !p->eof && !p->paused && !p->deferred ? POLLIN : 0;
	if (herd__peer_queued(p) > 0)
		events |= POLLOUT;
	return events;
}

/* When the peer next has something to do. */
uint64_t
herd__peer_timeout(struct herd__peer *p)
{
	uint64_t t = p->deadline;

	if (p->released)
		return INF;
	if (p->closed)
		return p->flush_deadline;
	if (p->write_error || p->deferred)
		return 0;
	if (p->hb_timeout_ms && p->last_recv + p->hb_timeout_ms * 1000ull < t)
		t = p->last_recv + p->hb_timeout_ms * 1000ull;
	if (peer_line_deadline(p) < t)
		t = peer_line_deadline(p);
	pthread_mutex_lock(&p->lock);
	if (p->next_beat < t)
		t = p->next_beat;
	pthread_mutex_unlock(&p->lock);
	return t;
}

/* One round: write, dispatch, read once, dispatch, timers, write. */
int
herd__peer_process(struct herd__peer *p)
{
	bool nested = p->processing;
	int progress = 0;

	if (p->released)
		return -ENOTCONN;
	herd__peer_ref(p);
	p->processing = true;
	p->more = false;
	p->spent = 0;
	p->deferred = false;
	if (peer_write(p) != 0)
		progress = 1;
	/* Buffered messages first: a nested blocking call may have left some behind. */
	if (peer_dispatch(p) > 0)
		progress = 1;
	if (p->write_error && !p->closed) {
		/* The other side's last words, then the end. */
		herd__peer_drain_input(p, DISCARD_ROUNDS);
		peer_fail(p, p->write_error, "write");
		progress = 1;
	}
	if (!p->closed && !p->eof && !p->paused && !p->deferred) {
		int r = peer_read(p);

		if (r != 0)
			progress = 1;
		if (r > 0)
			(void)peer_dispatch(p);
	}
	if (!p->released && peer_timers(p, herd__now_usec()))
		progress = 1;
	if (peer_write(p) != 0)
		progress = 1;
	p->processing = nested;
	peer_changed(p);
	herd__peer_unref(p);
	return progress;
}

/* Writes the queue out, waiting at most timeout_ms. */
int
herd__peer_flush(struct herd__peer *p, int timeout_ms)
{
	uint64_t end = herd__now_usec() + (uint64_t)timeout_ms * 1000ull;

	for (;;) {
		struct pollfd pfd = { .fd = p->fd, .events = POLLOUT };
		size_t queued;
		uint64_t now;
		int r;

		if (p->released)
			return -ENOTCONN;
		pthread_mutex_lock(&p->lock);
		r = peer_write_locked(p);
		queued = p->outq.bytes;
		pthread_mutex_unlock(&p->lock);
		if (r < 0)
			return r;
		if (queued == 0)
			return 0;
		now = herd__now_usec();
		if (now >= end)
			return -ETIMEDOUT;
		if (poll(&pfd, 1, (int)((end - now + 999) / 1000)) < 0 && errno != EINTR)
			return -errno;
	}
}

/* Another thread's heartbeat and write, never blocking. */
uint64_t
herd__peer_keepalive(struct herd__peer *p, uint64_t now)
{
	uint64_t next;

	/* Its owner is writing right now: look again one interval later. */
	if (pthread_mutex_trylock(&p->lock) != 0)
		return now + p->hb_interval_ms * 1000ull;
	/* Errors are left for the owner's next process, which meets them again. */
	if (p->fd >= 0)
		(void)peer_write_locked(p);
	if (p->fd >= 0 && p->hb_interval_ms && now >= p->next_beat) {
		/* Output still waits: it speaks for us once read (see peer_timers()). */
		json_t *msg = p->outq.bytes > 0
		    ? NULL
		    : proto_notification("heartbeat",
		          p->ops->heartbeat_params ? p->ops->heartbeat_params(p) : NULL);

		/* A full queue or no memory: the other side hears the queued output, or nothing. */
		if (msg && proto_outq_push_json(&p->outq, msg, p->max_send) == 0) {
			p->msgs_out++;
			(void)peer_write_locked(p);
		}
		json_decref(msg);
		p->next_beat = now + p->hb_interval_ms * 1000ull;
	}
	next = p->next_beat;
	pthread_mutex_unlock(&p->lock);
	return next;
}
