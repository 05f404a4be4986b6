/* SPDX-License-Identifier: MIT */
/*
 * The output queue: bytes waiting for a non-blocking socket. Small messages
 * share chunks so a burst of notifications does not cost one allocation each
 * and are encoded in place; a large message is encoded into a chunk of its
 * own that grows as it is written and is trimmed to size once it is whole.
 * Memory is held only while bytes wait: most messages are written at once, and
 * a daemon with thousands of idle peers must not keep a chunk for each.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"

#define OUTQ_CHUNK 16384u

struct proto_chunk {
	struct proto_chunk *next;
	size_t size; /* bytes allocated in data */
	size_t len; /* bytes filled */
	size_t off; /* bytes already written */
	/* Descriptors to send with the chunk's first byte: then it holds one line, and nothing more. */
	unsigned nfds;
	int fds[PROTO_MAX_FDS];
	size_t fd_bytes; /* their payloads */
	char data[];
};

static void
chunk_close_fds(struct proto_outq *q, struct proto_chunk *c)
{
	for (unsigned i = 0; i < c->nfds; i++)
		close(c->fds[i]);
	q->nfds -= c->nfds;
	q->fd_bytes -= c->fd_bytes;
	c->nfds = 0;
	c->fd_bytes = 0;
}

/* Initialises an empty queue that refuses to hold more than cap bytes. */
void
proto_outq_init(struct proto_outq *q, size_t cap)
{
	*q = (struct proto_outq){ .cap = cap };
}

/* Drops everything queued. */
void
proto_outq_free(struct proto_outq *q)
{
	struct proto_chunk *c = q->head;

	while (c) {
		struct proto_chunk *next = c->next;

		chunk_close_fds(q, c);
		free(c);
		c = next;
	}
	q->head = q->tail = NULL;
	q->bytes = 0;
}

/*
 * Returns room for n bytes at the end of the queue, counted as queued, or NULL
 * with *rc set. The caller must fill all n bytes.
 */
static char *
outq_reserve(struct proto_outq *q, size_t n, int *rc)
{
	struct proto_chunk *c = q->tail;
	size_t size;
	char *p;

	if (n > q->cap || q->bytes > q->cap - n) {
		*rc = -ENOBUFS;
		return NULL;
	}
	if (!c || c->size - c->len < n) {
		/* An empty queue likely drains at once: take what this message needs. */
		size = n > OUTQ_CHUNK || !q->head ? n : OUTQ_CHUNK;
		if (size > SIZE_MAX - sizeof(*c)) {
			*rc = -ENOMEM;
			return NULL;
		}
		c = malloc(sizeof(*c) + size);
		if (!c) {
			*rc = -ENOMEM;
			return NULL;
		}
		c->next = NULL;
		c->size = size;
		c->len = c->off = 0;
		c->nfds = 0;
		c->fd_bytes = 0;
		if (q->tail)
			q->tail->next = c;
		else
			q->head = c;
		q->tail = c;
	}
	p = c->data + c->len;
	c->len += n;
	q->bytes += n;
	return p;
}

/* Appends a copy of data; see proto.h. */
int
proto_outq_push(struct proto_outq *q, const void *data, size_t len)
{
	int rc = 0;
	char *p;

	if (len == 0)
		return 0;
	p = outq_reserve(q, len, &rc);
	if (!p)
		return rc;
	memcpy(p, data, len);
	return 0;
}

/*
 * Fills up to n iovecs from the head of the queue. A line with descriptors
 * is written alone, starting a write: the reader finds its descriptors by
 * the read that ends inside it (proto_reader_feed_fds()).
 */
int
proto_outq_peek(const struct proto_outq *q, struct iovec *iov, int n)
{
	int i = 0;

	for (const struct proto_chunk *c = q->head; c && i < n; c = c->next) {
		if (c->len == c->off)
			continue;
		if (c->nfds && i > 0)
			break;
		iov[i].iov_base = (void *)(c->data + c->off);
		iov[i].iov_len = c->len - c->off;
		i++;
		if (c->nfds)
			break;
	}
	return i;
}

/* The descriptors to send with the next write (borrowed), and how many. */
unsigned
proto_outq_fds(const struct proto_outq *q, const int **ret_fds)
{
	const struct proto_chunk *c = q->head;

	while (c && c->len == c->off)
		c = c->next;
	if (!c || !c->nfds)
		return 0;
	*ret_fds = c->fds;
	return c->nfds;
}

/* Drops the first n bytes, freeing chunks that were written out entirely. */
void
proto_outq_consume(struct proto_outq *q, size_t n)
{
	if (n > q->bytes)
		n = q->bytes;
	q->bytes -= n;
	/* The kernel holds its own references to descriptors it took with the first byte. */
	if (n > 0 && q->head && q->head->nfds)
		chunk_close_fds(q, q->head);
	while (q->head) {
		struct proto_chunk *c = q->head;
		size_t avail = c->len - c->off;

		if (n < avail) {
			c->off += n;
			break;
		}
		n -= avail;
		q->head = c->next;
		if (c == q->tail)
			q->tail = NULL;
		free(c);
	}
}

/* The encoder's sink for one message: the tail chunk's free room, then a chunk of its own. */
struct outq_wbuf {
	struct proto_wbuf w;
	struct proto_chunk *fresh; /* not yet linked; NULL while writing into the tail */
	size_t size; /* bytes allocated in fresh */
	size_t limit; /* max_message + the newline */
};

/*
 * Moves the text written so far into a chunk of its own with room for n more
 * bytes, or refuses once the line would pass the limit. The encoder asks only
 * for room it will fill, so -EMSGSIZE here means the line is too long.
 */
static int
outq_grow(struct proto_wbuf *w, size_t n)
{
	struct outq_wbuf *o = (struct outq_wbuf *)w;
	size_t used = o->fresh || w->start ? (size_t)(w->p - w->start) : 0;
	size_t want, size;
	struct proto_chunk *c;

	if (n > o->limit - used)
		return -EMSGSIZE;
	want = used + n;
	/*
	 * Half again, not double: a 64 KiB string asks for its room at once, and
	 * doubling would pass malloc's mmap threshold, a fresh mapping (and its
	 * page faults) for every such message.
	 */
	size = want < OUTQ_CHUNK ? OUTQ_CHUNK : want > SIZE_MAX / 4 ? want : want + want / 2;
	if (size > SIZE_MAX - sizeof(*c))
		return -ENOMEM;
	if (o->fresh) {
		c = realloc(o->fresh, sizeof(*c) + size);
		if (!c)
			return -ENOMEM;
	} else {
		c = malloc(sizeof(*c) + size);
		if (!c)
			return -ENOMEM;
		if (used)
			memcpy(c->data, w->start, used);
	}
	o->fresh = c;
	o->size = size;
	w->start = c->data;
	w->p = c->data + used;
	w->end = c->data + (size < o->limit ? size : o->limit);
	return 0;
}

/*
 * Encodes msg as one line straight into the queue. A message the peer would
 * refuse (nested past HERD_MAX_DEPTH, a NUL character, invalid UTF-8) is
 * refused here with -EINVAL so the sender can report the failure instead of
 * losing the connection. The text is written past the end of the queued
 * bytes and counted only once it is whole, so a failure queues nothing.
 */
int
proto_outq_push_json(struct proto_outq *q, const json_t *msg, size_t max_message)
{
	return proto_outq_push_json_ex(q, msg, max_message, NULL);
}

/* A line written into the tail chunk moves to a chunk of its own, for its descriptors. */
static int
outq_own_chunk(struct outq_wbuf *o, size_t len)
{
	struct proto_chunk *c;

	if (o->fresh)
		return 0;
	c = malloc(sizeof(*c) + len);
	if (!c)
		return -ENOMEM;
	memcpy(c->data, o->w.start, len);
	o->fresh = c;
	o->size = len;
	return 0;
}

/* Encodes msg as one line, bytes values out of band into out; see proto.h. */
int
proto_outq_push_json_ex(
    struct proto_outq *q, const json_t *msg, size_t max_message, struct proto_bytes_out *out)
{
	struct proto_chunk *tail = q->tail;
	struct outq_wbuf o = { .w.grow = outq_grow };
	size_t len;
	int rc;

	if (!json_is_object(msg))
		return -EINVAL;
	o.limit = max_message < SIZE_MAX - 1 ? max_message + 1 : SIZE_MAX - 1;
	if (tail) {
		o.w.start = o.w.p = tail->data + tail->len;
		o.w.end =
		    tail->size - tail->len < o.limit ? tail->data + tail->size : o.w.p + o.limit;
	}
	rc = proto_json_write_ex(&o.w, msg, HERD_MAX_DEPTH, false, out);
	if (rc == 0 && o.w.p == o.w.end)
		rc = outq_grow(&o.w, 1);
	if (rc == 0)
		*o.w.p++ = '\n';
	if (rc < 0)
		goto fail;
	len = (size_t)(o.w.p - o.w.start);
	if (len > q->cap || q->bytes > q->cap - len) {
		rc = -ENOBUFS;
		goto fail;
	}
	if (out && out->n) {
		rc = outq_own_chunk(&o, len);
		if (rc < 0)
			goto fail;
	}
	if (o.fresh) {
		/* Doubling may have left up to half a big chunk unused: give it back. */
		if (o.size - len > OUTQ_CHUNK) {
			struct proto_chunk *c = realloc(o.fresh, sizeof(*c) + len);

			if (c) {
				o.fresh = c;
				o.size = len;
			}
		}
		o.fresh->next = NULL;
		o.fresh->size = o.size;
		o.fresh->len = len;
		o.fresh->off = 0;
		o.fresh->nfds = 0;
		o.fresh->fd_bytes = 0;
		if (out && out->n) {
			/* Full, so that no other line joins it. */
			o.fresh->size = len;
			memcpy(o.fresh->fds, out->fd, out->n * sizeof(int));
			o.fresh->nfds = out->n;
			q->nfds += out->n;
			o.fresh->fd_bytes = out->total;
			q->fd_bytes += out->total;
			out->n = 0;
		}
		if (tail)
			tail->next = o.fresh;
		else
			q->head = o.fresh;
		q->tail = o.fresh;
	} else {
		tail->len += len;
	}
	q->bytes += len;
	return 0;
fail:
	free(o.fresh);
	if (out)
		proto_bytes_out_close(out);
	return rc == -EMSGSIZE || rc == -ENOBUFS || rc == -ENOMEM ? rc : -EINVAL;
}
