/* SPDX-License-Identifier: MIT */
/*
 * The output queue: bytes waiting for a non-blocking socket. Small messages
 * share chunks so a burst of notifications does not cost one allocation each;
 * a large message gets a chunk of its own size so it is copied only once.
 * Memory is held only while bytes wait: most messages are written at once, and
 * a daemon with thousands of idle peers must not keep a chunk for each.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

#define OUTQ_CHUNK 16384u

struct proto_chunk {
	struct proto_chunk *next;
	size_t size; /* bytes allocated in data */
	size_t len; /* bytes filled */
	size_t off; /* bytes already written */
	char data[];
};

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

/* Fills up to n iovecs from the head of the queue. */
int
proto_outq_peek(const struct proto_outq *q, struct iovec *iov, int n)
{
	int i = 0;

	for (const struct proto_chunk *c = q->head; c && i < n; c = c->next) {
		if (c->len == c->off)
			continue;
		iov[i].iov_base = (void *)(c->data + c->off);
		iov[i].iov_len = c->len - c->off;
		i++;
	}
	return i;
}

/* Drops the first n bytes, freeing chunks that were written out entirely. */
void
proto_outq_consume(struct proto_outq *q, size_t n)
{
	if (n > q->bytes)
		n = q->bytes;
	q->bytes -= n;
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

/*
 * Encodes msg as one line. A message the peer would refuse (a NUL character,
 * which jansson writes as \u0000, or nesting past HERD_MAX_DEPTH) is refused
 * here with -EINVAL so the sender can report the failure instead of losing
 * the connection.
 */
int
proto_outq_push_json(struct proto_outq *q, const json_t *msg, size_t max_message)
{
	char *text, *p;
	size_t len;
	int rc = 0;

	if (!json_is_object(msg))
		return -EINVAL;
	/* jansson fails only on a reference cycle or on ENOMEM; a cycle is the likelier bug. */
	text = json_dumps(msg, JSON_COMPACT);
	if (!text)
		return -EINVAL;
	len = strlen(text);
	if (len > max_message) {
		rc = -EMSGSIZE;
		goto out;
	}
	if (proto_check_text(text, len, HERD_MAX_DEPTH) < 0) {
		rc = -EINVAL;
		goto out;
	}
	p = outq_reserve(q, len + 1, &rc);
	if (!p)
		goto out;
	memcpy(p, text, len);
	p[len] = '\n';
out:
	free(text);
	return rc;
}
