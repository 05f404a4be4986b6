/* SPDX-License-Identifier: MIT */
/*
 * The output queue under partial writes, its cap, and proto_outq_push_json's
 * limits. One test writes through a real non-blocking socketpair.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ht-check.h"
#include "proto.h"

static unsigned rng_state = 12345;

static unsigned
rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 16;
}

/* Like writev() to a peer that takes at most max bytes: copies from the iovecs into out. */
static size_t
take(const struct iovec *iov, int n, size_t max, char *out)
{
	size_t done = 0;

	for (int i = 0; i < n && done < max; i++) {
		size_t k = iov[i].iov_len < max - done ? iov[i].iov_len : max - done;

		memcpy(out + done, iov[i].iov_base, k);
		done += k;
	}
	return done;
}

/* Writes whatever the queue holds, 1..7 bytes at a time, appending to out. */
static void
write_some(struct proto_outq *q, char *out, size_t *out_len, int rounds)
{
	struct iovec iov[4];

	for (int r = 0; r < rounds && !proto_outq_empty(q); r++) {
		int n = proto_outq_peek(q, iov, 4);
		size_t before = q->bytes, k;

		ck_assert_int_gt(n, 0);
		k = take(iov, n, 1 + rng() % 7, out + *out_len);
		proto_outq_consume(q, k);
		*out_len += k;
		ck_assert_uint_eq(q->bytes, before - k);
	}
}

START_TEST(partial_writes)
{
	/* Sizes straddle the 16 KiB chunk size so both shared and own chunks occur. */
	static const size_t sizes[] = { 1, 3, 100, 16383, 16384, 16385, 40000, 7, 0, 5000, 2 };
	size_t total = 0, out_len = 0, pos = 0;
	struct proto_outq q;
	char *want, *out;

	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		total += sizes[i];
	want = malloc(total);
	out = malloc(total);
	for (size_t i = 0; i < total; i++)
		want[i] = (char)rng();

	proto_outq_init(&q, total);
	ck_assert(proto_outq_empty(&q));
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		ck_assert_int_eq(proto_outq_push(&q, want + pos, sizes[i]), 0);
		pos += sizes[i];
		write_some(&q, out, &out_len, 50);
	}
	while (!proto_outq_empty(&q))
		write_some(&q, out, &out_len, 1000);
	ck_assert_uint_eq(out_len, total);
	ck_assert(memcmp(out, want, total) == 0);
	/* The emptied queue is usable again. */
	ck_assert_int_eq(proto_outq_push(&q, "ab", 2), 0);
	ck_assert_uint_eq(q.bytes, 2);
	proto_outq_free(&q);
	ck_assert(proto_outq_empty(&q));
	free(want);
	free(out);
}
END_TEST

START_TEST(peek_limits)
{
	static char big[20000];
	struct proto_outq q;
	struct iovec iov[8];
	size_t sum = 0;
	int n;

	proto_outq_init(&q, 1u << 20);
	ck_assert_int_eq(proto_outq_peek(&q, iov, 8), 0);
	/* Three chunks: a shared one, an own one for the big push, a shared one. */
	ck_assert_int_eq(proto_outq_push(&q, "abc", 3), 0);
	ck_assert_int_eq(proto_outq_push(&q, big, sizeof(big)), 0);
	ck_assert_int_eq(proto_outq_push(&q, "xyz", 3), 0);
	ck_assert_int_eq(proto_outq_peek(&q, iov, 1), 1);
	ck_assert_uint_eq(iov[0].iov_len, 3);
	ck_assert(memcmp(iov[0].iov_base, "abc", 3) == 0);
	n = proto_outq_peek(&q, iov, 8);
	ck_assert_int_eq(n, 3);
	for (int i = 0; i < n; i++)
		sum += iov[i].iov_len;
	ck_assert_uint_eq(sum, q.bytes);
	/* Consuming across a chunk boundary leaves the rest of the next chunk first. */
	proto_outq_consume(&q, 5);
	ck_assert_int_eq(proto_outq_peek(&q, iov, 8), 2);
	ck_assert_uint_eq(iov[0].iov_len, sizeof(big) - 2);
	proto_outq_consume(&q, 0);
	ck_assert_uint_eq(q.bytes, sizeof(big) - 2 + 3);
	proto_outq_consume(&q, sizeof(big) - 2 + 1);
	ck_assert_int_eq(proto_outq_peek(&q, iov, 8), 1);
	ck_assert(memcmp(iov[0].iov_base, "yz", 2) == 0);
	proto_outq_consume(&q, 2);
	ck_assert(proto_outq_empty(&q));
	ck_assert_int_eq(proto_outq_peek(&q, iov, 8), 0);
	proto_outq_free(&q);
}
END_TEST

START_TEST(cap_enforced)
{
	struct proto_outq q;
	char buf[100] = { 0 };

	proto_outq_init(&q, 100);
	ck_assert_int_eq(proto_outq_push(&q, buf, 60), 0);
	ck_assert_int_eq(proto_outq_push(&q, buf, 41), -ENOBUFS);
	ck_assert_uint_eq(q.bytes, 60);
	ck_assert_int_eq(proto_outq_push(&q, buf, 40), 0);
	ck_assert_uint_eq(q.bytes, 100);
	ck_assert_int_eq(proto_outq_push(&q, buf, 1), -ENOBUFS);
	/* Written bytes free their room. */
	proto_outq_consume(&q, 10);
	ck_assert_int_eq(proto_outq_push(&q, buf, 10), 0);
	ck_assert_int_eq(proto_outq_push(&q, buf, 1), -ENOBUFS);
	ck_assert_int_eq(proto_outq_push(&q, buf, SIZE_MAX), -ENOBUFS);
	proto_outq_free(&q);
}
END_TEST

/* A compact message whose encoding is exactly len bytes: {"s":"xx..."} */
static json_t *
message_of(size_t len)
{
	char *s = malloc(len - 8 + 1);
	json_t *m;

	memset(s, 'x', len - 8);
	s[len - 8] = '\0';
	m = json_pack("{s:s}", "s", s);
	free(s);
	return m;
}

START_TEST(push_json_lines)
{
	struct proto_outq q;
	struct proto_reader r;
	struct proto_error err;
	struct iovec iov[8];
	json_t *m = json_pack("{s:s,s:i,s:s}", "jsonrpc", "2.0", "id", 1, "s", "a\nb\"c\xc3\xa9");
	json_t *v;
	int n;

	proto_outq_init(&q, 1u << 20);
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1024), 0);
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1024), 0);
	/* Two lines, each one compact JSON text that the reader gives back unchanged. */
	proto_reader_init(&r, 1024, HERD_MAX_DEPTH);
	n = proto_outq_peek(&q, iov, 8);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(proto_reader_feed(&r, iov[i].iov_base, iov[i].iov_len), 0);
	ck_assert(memchr(iov[0].iov_base, ' ', iov[0].iov_len) == NULL);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(proto_reader_next(&r, &v, &err), 1);
		ck_assert(json_equal(v, m));
		json_decref(v);
	}
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	proto_reader_free(&r);
	proto_outq_free(&q);
	json_decref(m);
}
END_TEST

/* A drained queue holds no chunk, and a lone small message gets no 16 KiB chunk. */
START_TEST(drained_holds_nothing)
{
	struct proto_outq q;
	struct iovec iov[4];
	json_t *m = json_pack("{s:i}", "id", 1);

	proto_outq_init(&q, 1u << 20);
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1024), 0);
	ck_assert_int_eq(proto_outq_peek(&q, iov, 4), 1);
	ck_assert_uint_eq(iov[0].iov_len, strlen("{\"id\":1}\n"));
	proto_outq_consume(&q, 3);
	ck_assert_ptr_nonnull(q.head);
	proto_outq_consume(&q, q.bytes);
	ck_assert_ptr_null(q.head);
	ck_assert_ptr_null(q.tail);
	/* Usable again after draining. */
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1024), 0);
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1024), 0);
	ck_assert_uint_eq(q.bytes, 2 * strlen("{\"id\":1}\n"));
	proto_outq_consume(&q, q.bytes);
	ck_assert_ptr_null(q.head);
	proto_outq_free(&q);
	json_decref(m);
}
END_TEST

START_TEST(push_json_limits)
{
	struct proto_outq q;
	json_t *m = message_of(500);
	json_t *deep, *tail;
	char *text = json_dumps(m, JSON_COMPACT);

	ck_assert_uint_eq(strlen(text), 500);
	free(text);
	proto_outq_init(&q, 1u << 20);
	/* The limit excludes the newline. */
	ck_assert_int_eq(proto_outq_push_json(&q, m, 499), -EMSGSIZE);
	ck_assert(proto_outq_empty(&q));
	ck_assert_int_eq(proto_outq_push_json(&q, m, 500), 0);
	ck_assert_uint_eq(q.bytes, 501);
	proto_outq_free(&q);

	/* A full queue takes nothing, not even part of the line. */
	proto_outq_init(&q, 500);
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1000), -ENOBUFS);
	ck_assert(proto_outq_empty(&q));
	proto_outq_free(&q);
	json_decref(m);

	/* What the peer would refuse is refused here. */
	proto_outq_init(&q, 1u << 20);
	m = json_array();
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1000), -EINVAL);
	json_decref(m);
	m = json_pack("{s:s%}", "s", "a\0b", (size_t)3);
	ck_assert_int_eq(proto_outq_push_json(&q, m, 1000), -EINVAL);
	json_decref(m);
	/* An object holding HERD_MAX_DEPTH - 1 nested arrays: exactly the limit. */
	tail = json_array();
	deep = tail;
	for (unsigned i = 2; i < HERD_MAX_DEPTH; i++) {
		json_t *outer = json_array();

		json_array_append_new(outer, deep);
		deep = outer;
	}
	deep = json_pack("{s:o}", "k", deep);
	/* deep is now exactly HERD_MAX_DEPTH levels. */
	ck_assert_int_eq(proto_outq_push_json(&q, deep, 100000), 0);
	json_array_append_new(tail, json_array());
	ck_assert_int_eq(proto_outq_push_json(&q, deep, 100000), -EINVAL);
	json_decref(deep);
	ck_assert_uint_gt(q.bytes, 0);
	proto_outq_free(&q);
}
END_TEST

/* Real partial writes: a non-blocking socketpair with a small buffer, drained by poll(). */
START_TEST(socketpair_drain)
{
	int sv[2], sndbuf = 4096;
	struct proto_outq q;
	size_t total = 0, got = 0;
	char *want, buf[65536];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	proto_outq_init(&q, 8u << 20);
	for (int i = 0; i < 200; i++) {
		json_t *m = json_pack("{s:s,s:i,s:s}", "jsonrpc", "2.0", "id", i, "pad",
		    i % 2 ? "short" : "a somewhat longer string to vary the line lengths here");

		ck_assert_int_eq(proto_outq_push_json(&q, m, 1024), 0);
		json_decref(m);
	}
	total = q.bytes;
	want = malloc(total);
	{
		struct iovec iov[64];
		int n = proto_outq_peek(&q, iov, 64);
		size_t off = 0;

		for (int i = 0; i < n; i++) {
			memcpy(want + off, iov[i].iov_base, iov[i].iov_len);
			off += iov[i].iov_len;
		}
		ck_assert_uint_eq(off, total);
	}
	while (got < total) {
		struct pollfd p[2] = { { .fd = sv[0],
			                   .events = proto_outq_empty(&q) ? 0 : POLLOUT },
			{ .fd = sv[1], .events = POLLIN } };
		ssize_t k;

		ck_assert_int_gt(poll(p, 2, 10000), 0);
		if (p[0].revents & POLLOUT) {
			struct iovec iov[16];
			int n = proto_outq_peek(&q, iov, 16);

			k = writev(sv[0], iov, n);
			ck_assert_int_gt(k, 0);
			proto_outq_consume(&q, (size_t)k);
		}
		if (p[1].revents & POLLIN) {
			/* Read little at a time so the writer meets a full socket. */
			k = read(sv[1], buf, 1 + rng() % 700);
			ck_assert_int_gt(k, 0);
			ck_assert(memcmp(buf, want + got, (size_t)k) == 0);
			got += (size_t)k;
		}
	}
	ck_assert(proto_outq_empty(&q));
	proto_outq_free(&q);
	free(want);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

HT_MAIN("proto-outq",
    HT_CASE("outq", 30, partial_writes, peek_limits, cap_enforced, push_json_lines,
        push_json_limits, drained_holds_nothing, socketpair_drain))
