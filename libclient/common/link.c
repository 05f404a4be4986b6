/* SPDX-License-Identifier: MIT */
/*
 * The link's relay (link.h): lines from the link to channel sockets and back,
 * channel 0's notifications, heartbeats and the link's end.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "link.h"
#include "peer.h"

/* Bytes read per read() from the link or a channel. */
#define READ_CHUNK 65536
/* Queued bytes past which the other direction stops reading (backpressure). */
#define HIGH_WATER (1u << 20)
/* Most credit a channel may pile up from a peer's grants. */
#define CREDIT_MAX   ((int64_t)1 << 40)
#define IOV_MAX_LINK 64

static void link_update(struct herd__link *l);
static void link_flush(struct herd__link *l);

/* ---- buffers and writes ---- */

/* Makes room for n more bytes at the end of b. Returns 0 or -ENOMEM. */
static int
buf_reserve(struct herd__link_buf *b, size_t n)
{
	size_t cap;
	char *d;

	if (b->start > 0 && (b->len == 0 || b->start + b->len + n > b->cap)) {
		memmove(b->data, b->data + b->start, b->len);
		b->start = 0;
	}
	if (b->len + n <= b->cap)
		return 0;
	cap = b->cap ? b->cap : READ_CHUNK;
	while (cap < b->len + n)
		cap *= 2;
	d = realloc(b->data, cap);
	if (!d)
		return -ENOMEM;
	b->data = d;
	b->cap = cap;
	return 0;
}

/* Reads once from fd into b. Returns bytes read, 0 at EOF, -EAGAIN or -errno. */
static ssize_t
buf_read(struct herd__link_buf *b, int fd)
{
	ssize_t n;

	if (buf_reserve(b, READ_CHUNK) < 0)
		return -ENOMEM;
	do
		n = read(fd, b->data + b->start + b->len, READ_CHUNK);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	b->len += (size_t)n;
	return n;
}

/*
 * Writes q to fd until it is empty or fd is full. A socket gets sendmsg()
 * with MSG_NOSIGNAL, so a closed reader is an error here, never a SIGPIPE
 * for the master's process. Returns 0 (empty), -EAGAIN or -errno.
 */
static int
outq_write(int fd, bool sock, struct proto_outq *q)
{
	struct iovec iov[IOV_MAX_LINK];
	struct msghdr mh = { .msg_iov = iov };
	ssize_t n;

	while (!proto_outq_empty(q)) {
		mh.msg_iovlen = (size_t)proto_outq_peek(q, iov, IOV_MAX_LINK);
		n = sock ? sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT)
		         : writev(fd, iov, (int)mh.msg_iovlen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		}
		proto_outq_consume(q, (size_t)n);
	}
	return 0;
}

static bool
fd_is_socket(int fd)
{
	int type;
	socklen_t len = sizeof(type);

	return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
}

static void
fd_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl >= 0)
		(void)fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
}

/* Queues "CHANNEL SP" and the line (its newline included) on the link. */
static int
link_queue_line(struct herd__link *l, unsigned id, const char *line, size_t len)
{
	char prefix[HERD__LINK_LINE_EXTRA];
	int n = snprintf(prefix, sizeof(prefix), "%u ", id);
	int r = proto_outq_push(&l->out, prefix, (size_t)n);

	return r < 0 ? r : proto_outq_push(&l->out, line, len);
}

/* ---- channels ---- */

static void
chan_free(struct herd__link_chan *c)
{
	if (c->link->loop)
		ev_io_stop(c->link->loop, &c->io);
	if (c->holder)
		*c->holder = NULL;
	LIST_REMOVE(c, entry);
	close(c->fd);
	free(c->in.data);
	proto_outq_free(&c->out);
	free(c);
}

/*
 * n more bytes of c reached its socket: once half a window has, the far end
 * gets that much credit back, so a channel whose reader keeps up never waits.
 */
static void
chan_delivered(struct herd__link_chan *c, size_t n)
{
	struct herd__link *l = c->link;

	if (!l->windows || c->closing || l->dead || l->draining)
		return;
	c->delivered += n;
	if (c->delivered < HERD__LINK_WINDOW / 2)
		return;
	if (herd__link_notify(l, "window",
	        json_pack("{s:I, s:I}", "channel", (json_int_t)c->id, "bytes",
	            (json_int_t)c->delivered)) < 0)
		herd__link_kill(l, -ENOMEM, "out of memory");
	c->delivered = 0;
}

/*
 * Writes what c holds; a channel closed by the far end goes once it is
 * written. Returns false when c is gone.
 */
static bool
chan_flush(struct herd__link_chan *c)
{
	size_t before = c->out.bytes;
	int r = outq_write(c->fd, true, &c->out);

	chan_delivered(c, before - c->out.bytes);
	if (c->link->dead)
		return false;

	if (r == -EAGAIN)
		return true;
	if (r < 0 && !c->closing) {
		herd__link_chan_close(c, NULL);
		return false;
	}
	if (c->closing && (r < 0 || proto_outq_empty(&c->out))) {
		shutdown(c->fd, SHUT_RDWR);
		chan_free(c);
		return false;
	}
	return true;
}

/* Whole lines read from c go to the link while it has credit, each behind its channel number. */
static void
chan_relay(struct herd__link_chan *c)
{
	struct herd__link *l = c->link;
	char *line = c->in.data + c->in.start, *nl;

	while ((!l->windows || c->credit > 0) && (nl = memchr(line, '\n', c->in.len))) {
		size_t len = (size_t)(nl - line) + 1;

		if (link_queue_line(l, c->id, line, len) < 0) {
			herd__link_kill(l, -ENOMEM, "out of memory");
			return;
		}
		c->credit -= (int64_t)len;
		line += len;
		c->in.len -= len;
	}
	c->in.start = c->in.len ? (size_t)(line - c->in.data) : 0;
	/* Lines waiting for credit are whole: only an unfinished one can be too long. */
	if (c->in.len > l->max_line && !memchr(line, '\n', c->in.len)) {
		herd__link_chan_close(c, "message too large for the link");
		return;
	}
	link_flush(l);
}

static void
chan_read(struct herd__link_chan *c)
{
	ssize_t n = buf_read(&c->in, c->fd);

	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		herd__link_chan_close(c, n == 0 ? NULL : strerror((int)-n));
		return;
	}
	chan_relay(c);
}

static void
chan_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd__link_chan *c = w->data;
	struct herd__link *l = c->link;

	if ((revents & EV_WRITE) && !chan_flush(c))
		c = NULL;
	if (c && (revents & EV_READ) && !c->closing)
		chan_read(c);
	if (!l->dead)
		link_update(l);
}

struct herd__link_chan *
herd__link_chan_add(struct herd__link *l, unsigned id, int fd)
{
	struct herd__link_chan *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return NULL;
	}
	fd_nonblock(fd);
	c->link = l;
	c->id = id;
	c->fd = fd;
	c->credit = (int64_t)l->peer_window;
	proto_outq_init(&c->out, SIZE_MAX);
	ev_io_init(&c->io, chan_io_cb, fd, 0);
	c->io.data = c;
	LIST_INSERT_HEAD(&l->chans, c, entry);
	link_update(l);
	return c;
}

/* The bytes from iov[*i] + *off up to and including the next newline; 0: none whole. */
static size_t
iov_line_len(const struct iovec *iov, int n, int i, size_t off)
{
	size_t len = 0;

	for (; i < n; i++, off = 0) {
		const char *base = (const char *)iov[i].iov_base + off;
		const char *nl = memchr(base, '\n', iov[i].iov_len - off);

		if (nl)
			return len + (size_t)(nl - base) + 1;
		len += iov[i].iov_len - off;
	}
	return 0;
}

size_t
herd__link_chan_send(struct herd__link_chan *c, const struct iovec *iov, int n)
{
	struct herd__link *l = c->link;
	char prefix[HERD__LINK_LINE_EXTRA];
	size_t took = 0, off = 0, len;
	int pending = 0, plen, i = 0;

	if (l->dead || l->draining || c->closing || c->in.len || l->out.bytes > HIGH_WATER ||
	    ioctl(c->fd, FIONREAD, &pending) < 0 || pending)
		return 0;
	plen = snprintf(prefix, sizeof(prefix), "%u ", c->id);
	/* A line starts while there is credit (as chan_relay()). */
	while ((!l->windows || c->credit > 0) && (len = iov_line_len(iov, n, i, off)) > 0) {
		if (proto_outq_push(&l->out, prefix, (size_t)plen) < 0)
			goto nomem;
		c->credit -= (int64_t)len;
		took += len;
		while (len > 0) {
			size_t k = iov[i].iov_len - off < len ? iov[i].iov_len - off : len;

			if (proto_outq_push(&l->out, (const char *)iov[i].iov_base + off, k) < 0)
				goto nomem;
			len -= k;
			off += k;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
	}
	if (took) {
		link_flush(l);
		if (!l->dead && !proto_outq_empty(&l->out))
			link_update(l);
	}
	return took;
nomem:
	herd__link_kill(l, -ENOMEM, "out of memory");
	return took;
}

struct herd__link_chan *
herd__link_chan_find(struct herd__link *l, unsigned id)
{
	struct herd__link_chan *c;

	LIST_FOREACH(c, &l->chans, entry)
		if (c->id == id)
			return c;
	return NULL;
}

void
herd__link_chan_close(struct herd__link_chan *c, const char *error)
{
	struct herd__link *l = c->link;
	json_t *p;

	if (!l->dead && !l->draining) {
		p = json_pack("{s:i}", "channel", (int)c->id);
		if (p && error)
			json_object_set_new(p, "error", json_string(error));
		(void)herd__link_notify(l, "close", p);
	}
	chan_free(c);
}

/* ---- the link ---- */

/* Without windows, reading the link waits while a channel's socket is that far behind. */
static bool
link_paused(const struct herd__link *l)
{
	const struct herd__link_chan *c;

	if (l->windows)
		return false;
	LIST_FOREACH(c, &l->chans, entry)
		if (c->out.bytes > HIGH_WATER)
			return true;
	return false;
}

static void
io_set(struct herd__link *l, ev_io *io, int *cur, int want)
{
	if (*cur == want)
		return;
	ev_io_stop(l->loop, io);
	ev_io_set(io, io->fd, want);
	if (want)
		ev_io_start(l->loop, io);
	*cur = want;
	l->rearmed = true;
}

/* Arms the watchers for what the link and its channels want now. */
static void
link_update(struct herd__link *l)
{
	bool out_full = l->out.bytes > HIGH_WATER;
	struct herd__link_chan *c;
	int in_events = 0;

	if (l->dead)
		return;
	if (!link_paused(l))
		in_events = EV_READ;
	if (in_events != (ev_is_active(&l->in_io) ? EV_READ : 0)) {
		if (in_events)
			ev_io_start(l->loop, &l->in_io);
		else
			ev_io_stop(l->loop, &l->in_io);
		l->rearmed = true;
	}
	if (!proto_outq_empty(&l->out) && l->out_fd >= 0) {
		l->rearmed |= !ev_is_active(&l->out_io);
		ev_io_start(l->loop, &l->out_io);
	} else {
		l->rearmed |= ev_is_active(&l->out_io);
		ev_io_stop(l->loop, &l->out_io);
	}
	LIST_FOREACH(c, &l->chans, entry)
		io_set(l, &c->io, &c->io_events,
		    (c->closing || out_full || (l->windows && c->credit <= 0) ? 0 : EV_READ) |
		        (proto_outq_empty(&c->out) ? 0 : EV_WRITE));
}

/* Writes the link's output; once draining and empty, shuts the write side. */
static void
link_flush(struct herd__link *l)
{
	int r;

	if (l->dead || l->out_fd < 0)
		return;
	r = outq_write(l->out_fd, l->out_sock, &l->out);
	if (r < 0 && r != -EAGAIN) {
		herd__link_kill(l, r, "writing to the link failed");
		return;
	}
	if (r == 0 && l->draining) {
		ev_io_stop(l->loop, &l->out_io);
		if (l->out_fd == l->in_fd)
			shutdown(l->out_fd, SHUT_WR);
		else
			close(l->out_fd);
		l->out_fd = -1;
	}
}

int
herd__link_notify(struct herd__link *l, const char *method, json_t *params)
{
	json_t *msg = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
	char *text;
	int r;

	if (msg && params)
		json_object_set(msg, "params", params);
	json_decref(params);
	if (!msg)
		return -ENOMEM;
	text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text)
		return -ENOMEM;
	r = link_queue_line(l, 0, text, strlen(text));
	free(text);
	if (r == 0)
		r = proto_outq_push(&l->out, "\n", 1);
	link_update(l);
	return r;
}

/* "window" {channel, bytes}: the far end delivered that much of what we sent on channel. */
static void
link_window(struct herd__link *l, json_t *params)
{
	json_int_t id = json_integer_value(json_object_get(params, "channel"));
	json_int_t bytes = json_integer_value(json_object_get(params, "bytes"));
	struct herd__link_chan *c;

	if (bytes <= 0 || bytes > HERD__LINK_WINDOW_MAX) {
		herd__link_kill(l, -EBADMSG, "a bad window on the link");
		return;
	}
	c = l->windows && id > 0 && id <= UINT32_MAX ? herd__link_chan_find(l, (unsigned)id) : NULL;
	if (!c)
		return;
	c->credit = c->credit + bytes < CREDIT_MAX ? c->credit + bytes : CREDIT_MAX;
	/* Lines read while the credit was out go first. */
	if (c->credit > 0 && c->in.len)
		chan_relay(c);
}

/* A channel-0 line: the link's own notifications. */
static void
link_control(struct herd__link *l, const char *text, size_t len)
{
	json_t *msg = json_loadb(text, len, 0, NULL);
	const char *method = json_string_value(json_object_get(msg, "method"));
	json_t *params = json_object_get(msg, "params");
	struct herd__link_chan *c;
	json_int_t id;

	if (!method) {
		json_decref(msg);
		herd__link_kill(l, -EBADMSG, "a link message is not a notification");
		return;
	}
	if (strcmp(method, "close") == 0) {
		id = json_integer_value(json_object_get(params, "channel"));
		c = id > 0 && id <= UINT32_MAX ? herd__link_chan_find(l, (unsigned)id) : NULL;
		/* A channel we closed meanwhile is already gone. */
		if (c && !c->closing) {
			if (l->ops->chan_closed)
				l->ops->chan_closed(
				    l, c, json_string_value(json_object_get(params, "error")));
			c->closing = true;
			(void)chan_flush(c);
		}
	} else if (strcmp(method, "window") == 0) {
		link_window(l, params);
	} else if (strcmp(method, "heartbeat") != 0 && l->ops->control) {
		l->ops->control(l, method, params);
	}
	json_decref(msg);
}

/* One whole line from the link: "CHANNEL SP PAYLOAD LF". */
static void
link_line(struct herd__link *l, const char *line, size_t len)
{
	struct herd__link_chan *c;
	unsigned long id = 0;
	size_t i = 0;

	while (i < len && line[i] >= '0' && line[i] <= '9' && i < 10)
		id = id * 10 + (unsigned long)(line[i++] - '0');
	if (i == 0 || i >= len || line[i] != ' ' || id > UINT32_MAX) {
		herd__link_kill(l, -EBADMSG, "a link line lacks its channel number");
		return;
	}
	i++;
	if (id == 0) {
		link_control(l, line + i, len - i);
		return;
	}
	c = herd__link_chan_find(l, (unsigned)id);
	/* Lines for a channel closed here meanwhile are dropped. */
	if (!c || c->closing)
		return;
	if (proto_outq_push(&c->out, line + i, len - i) < 0) {
		herd__link_kill(l, -ENOMEM, "out of memory");
		return;
	}
	/* The far end sends no more than our window and the line it started within it. */
	if (l->windows && c->out.bytes + c->delivered > HERD__LINK_WINDOW + l->max_line) {
		herd__link_kill(l, -EPROTO, "the far end overran a channel's window");
		return;
	}
	(void)chan_flush(c);
}

static void
link_read(struct herd__link *l)
{
	ssize_t n = buf_read(&l->in, l->in_fd);
	char *line, *nl;

	if (n == -EAGAIN)
		return;
	if (n <= 0) {
		herd__link_kill(l, n == 0 ? -ECONNRESET : (int)n,
		    n == 0 ? "the link's input ended" : "reading the link failed");
		return;
	}
	l->last_recv = herd__now_usec();
	line = l->in.data + l->in.start;
	while (!l->dead && (nl = memchr(line, '\n', l->in.len))) {
		size_t len = (size_t)(nl - line) + 1;

		l->in.len -= len;
		l->in.start = (size_t)(line + len - l->in.data);
		link_line(l, line, len);
		line += len;
	}
	if (!l->dead && l->in.len > l->max_line)
		herd__link_kill(l, -EMSGSIZE, "a link line is too long");
}

static void
link_in_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd__link *l = w->data;

	link_read(l);
	if (!l->dead)
		link_flush(l);
	link_update(l);
}

int
herd__link_pump(struct herd__link *l)
{
	if (l->dead || link_paused(l))
		return -1;
	l->rearmed = false;
	link_in_cb(l->loop, &l->in_io, EV_READ);
	return l->dead || l->rearmed;
}

void
herd__link_watch_in(struct herd__link *l, int fd)
{
	bool on = ev_is_active(&l->in_io);

	ev_io_stop(l->loop, &l->in_io);
	ev_io_set(&l->in_io, fd, EV_READ);
	if (on)
		ev_io_start(l->loop, &l->in_io);
}

static void
link_out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd__link *l = w->data;

	link_flush(l);
	link_update(l);
}

/* The next deadline: a heartbeat to send or the silence limit. */
static void
link_arm_timer(struct herd__link *l, uint64_t now)
{
	uint64_t at = UINT64_MAX;

	if (l->hb_interval_ms)
		at = l->next_beat;
	if (l->hb_timeout_ms && l->last_recv + l->hb_timeout_ms * 1000ull < at)
		at = l->last_recv + l->hb_timeout_ms * 1000ull;
	ev_timer_stop(l->loop, &l->timer);
	if (at == UINT64_MAX)
		return;
	ev_timer_set(&l->timer, at > now ? (double)(at - now) / 1e6 : 0., 0.);
	ev_timer_start(l->loop, &l->timer);
}

static void
link_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct herd__link *l = w->data;
	uint64_t now = herd__now_usec();
	char why[64];

	if (link_paused(l))
		l->last_recv = now;
	if (l->hb_timeout_ms && now >= l->last_recv + l->hb_timeout_ms * 1000ull) {
		snprintf(why, sizeof(why), "nothing heard on the link for %u ms", l->hb_timeout_ms);
		herd__link_kill(l, -ETIMEDOUT, why);
		return;
	}
	if (l->hb_interval_ms && now >= l->next_beat) {
		/* Output waiting to leave proves we live once read; a heartbeat adds nothing. */
		if (proto_outq_empty(&l->out) && l->out_fd >= 0 &&
		    herd__link_notify(l, "heartbeat", NULL) == 0)
			link_flush(l);
		l->next_beat = now + l->hb_interval_ms * 1000ull;
	}
	if (!l->dead) {
		link_arm_timer(l, now);
		link_update(l);
	}
}

void
herd__link_init(struct herd__link *l, struct ev_loop *loop, int in_fd, int out_fd,
    const struct herd__link_ops *ops, void *userdata, size_t max_message)
{
	memset(l, 0, sizeof(*l));
	l->ops = ops;
	l->userdata = userdata;
	l->loop = loop;
	l->in_fd = in_fd;
	l->out_fd = out_fd;
	fd_nonblock(in_fd);
	fd_nonblock(out_fd);
	l->out_sock = fd_is_socket(out_fd);
	l->max_line = max_message + HERD__LINK_LINE_EXTRA;
	proto_outq_init(&l->out, SIZE_MAX);
	LIST_INIT(&l->chans);
	l->last_recv = herd__now_usec();
	ev_io_init(&l->in_io, link_in_cb, in_fd, EV_READ);
	ev_io_init(&l->out_io, link_out_cb, out_fd, EV_WRITE);
	ev_timer_init(&l->timer, link_timer_cb, 0., 0.);
	l->in_io.data = l->out_io.data = l->timer.data = l;
	link_update(l);
}

void
herd__link_set_windows(struct herd__link *l, size_t peer_window)
{
	struct herd__link_chan *c;

	l->windows = true;
	l->peer_window = peer_window;
	LIST_FOREACH(c, &l->chans, entry)
		c->credit = (int64_t)peer_window;
}

void
herd__link_set_heartbeat(struct herd__link *l, unsigned interval_ms, unsigned timeout_ms)
{
	uint64_t now = herd__now_usec();

	l->hb_interval_ms = interval_ms;
	l->hb_timeout_ms = timeout_ms;
	l->last_recv = now;
	l->next_beat = now;
	if (!l->dead)
		link_arm_timer(l, now);
}

void
herd__link_kill(struct herd__link *l, int reason, const char *why)
{
	struct herd__link_chan *c;

	if (l->dead)
		return;
	l->dead = true;
	ev_io_stop(l->loop, &l->in_io);
	ev_io_stop(l->loop, &l->out_io);
	ev_timer_stop(l->loop, &l->timer);
	while ((c = LIST_FIRST(&l->chans))) {
		if (l->ops->chan_closed)
			l->ops->chan_closed(l, c, why);
		chan_free(c);
	}
	if (l->ops->dead)
		l->ops->dead(l, reason, why);
}

void
herd__link_finish(struct herd__link *l)
{
	struct herd__link_chan *c;

	if (l->dead || l->draining)
		return;
	while ((c = LIST_FIRST(&l->chans)))
		herd__link_chan_close(c, NULL);
	l->draining = true;
	link_flush(l);
	if (!l->dead)
		link_update(l);
}

void
herd__link_free(struct herd__link *l)
{
	struct herd__link_chan *c;

	while ((c = LIST_FIRST(&l->chans)))
		chan_free(c);
	ev_io_stop(l->loop, &l->in_io);
	ev_io_stop(l->loop, &l->out_io);
	ev_timer_stop(l->loop, &l->timer);
	if (l->out_fd >= 0 && l->out_fd != l->in_fd)
		close(l->out_fd);
	if (l->in_fd >= 0)
		close(l->in_fd);
	l->in_fd = l->out_fd = -1;
	free(l->in.data);
	proto_outq_free(&l->out);
}
