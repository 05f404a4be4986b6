/* SPDX-License-Identifier: MIT */
/*
 * Bytes values (PROTOCOL.md 1.1) in proto: base64 through the encoder and
 * the decoder, descriptors tied by the reader to the line they came with
 * (and closed, named or not), and the output queue sending a line with
 * descriptors alone. Pipe ends stand in for memfds: the fake reader below
 * only reports which descriptor it was given.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ht-check.h"
#include "proto.h"

static int last_read_fd = -1;

/* Reads nothing: a bytes value of len bytes 'f', and the fd noted. */
static json_t *
fake_fd_read(int fd, size_t len, struct proto_error *err)
{
	char *buf = malloc(len + 1);
	json_t *v;

	ck_assert_ptr_nonnull(buf);
	memset(buf, 'f', len);
	last_read_fd = fd;
	v = proto_bytes_new(buf, len);
	free(buf);
	return v;
}

static const struct proto_bytes_in fake_in = { .fd_read = fake_fd_read };

static bool
fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* One end of a fresh pipe (the other closed): a descriptor to hand over. */
static int
some_fd(void)
{
	int p[2];

	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	close(p[1]);
	return p[0];
}

START_TEST(base64_round_trip)
{
	static const size_t sizes[] = { 0, 1, 2, 3, 4, 65536 };

	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		char *p = malloc(sizes[k] + 1);
		struct proto_line_bytes lb = { .in = &fake_in, .limit = 1 << 20 };
		const char *data;
		json_t *v, *back = NULL, *plain = NULL;
		size_t len;
		char *text;

		for (size_t i = 0; i < sizes[k]; i++)
			p[i] = (char)(i * 7);
		v = json_pack("{s:o}", "x", proto_bytes_new(p, sizes[k]));
		text = proto_json_dumps(v);
		ck_assert_ptr_nonnull(text);
		/* Inline: {"$bytes":"<base64>"} is text, whatever the bytes. */
		ck_assert(proto_text_valid(text, strlen(text)));
		ck_assert_int_eq(
		    proto_json_decode_bytes(text, strlen(text), 64, 0, &lb, &back, NULL), 0);
		ck_assert(proto_bytes_get(json_object_get(back, "x"), &data, &len));
		ck_assert_uint_eq(len, sizes[k]);
		ck_assert_mem_eq(data, p, len);
		/* A decoder without bytes leaves the object as it came. */
		ck_assert_int_eq(proto_json_decode(text, strlen(text), 64, &plain, NULL), 0);
		ck_assert(json_is_string(json_object_get(json_object_get(plain, "x"), "$bytes")));
		json_decref(plain);
		json_decref(back);
		json_decref(v);
		free(text);
		free(p);
	}
}
END_TEST

START_TEST(bad_bytes_refused)
{
	static const char *const bad[] = {
		"{\"$bytes\":\"abc\"}",
		"{\"$bytes\":\"ab!=\"}",
		"{\"$bytes\":5}",
		"{\"$bytes\":{\"fd\":0}}",
		"{\"$bytes\":{\"fd\":0,\"len\":1}}",
		"{\"$bytes\":{\"fd\":-1,\"len\":1}}",
	};
	struct proto_line_bytes lb = { .in = &fake_in, .limit = 1 << 20 };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct proto_error err = { 0 };
		json_t *v = NULL;

		ck_assert_int_eq(
		    proto_json_decode_bytes(bad[i], strlen(bad[i]), 64, 0, &lb, &v, &err),
		    -EBADMSG);
		ck_assert_int_eq(err.code, HERD_E_INVALID_BYTES);
		ck_assert_ptr_null(v);
	}
}
END_TEST

#define REF_LINE "{\"b\":{\"$bytes\":{\"fd\":0,\"len\":3}}}\n"

/* The reader's next message: rc, and *v (NULL unless a message). */
static int
next(struct proto_reader *r, json_t **v, struct proto_error *err)
{
	*v = NULL;
	return proto_reader_next(r, v, err);
}

START_TEST(reader_ties_fds_to_lines)
{
	struct proto_reader r;
	struct proto_error err;
	const char *data;
	size_t len;
	json_t *v;
	int fd = some_fd(), stray = some_fd();

	proto_reader_init(&r, 1024, 64);
	proto_reader_set_bytes(&r, &fake_in);
	/* The line comes in two reads; its descriptor with the second, which ends inside it. */
	ck_assert_int_eq(proto_reader_feed(&r, REF_LINE, 10), 0);
	ck_assert_int_eq(
	    proto_reader_feed_fds(&r, REF_LINE + 10, strlen(REF_LINE) - 10, &fd, 1), 0);
	ck_assert_int_eq(next(&r, &v, &err), 1);
	ck_assert_int_eq(last_read_fd, fd);
	ck_assert(proto_bytes_get(json_object_get(v, "b"), &data, &len));
	ck_assert_mem_eq(data, "fff", 3);
	ck_assert(!fd_open(fd));
	json_decref(v);
	/* A descriptor with a line that names none is closed; the line is read. */
	ck_assert_int_eq(proto_reader_feed_fds(&r, "{\"a\":1}\n", 8, &stray, 1), 0);
	ck_assert_int_eq(next(&r, &v, &err), 1);
	ck_assert(!fd_open(stray));
	json_decref(v);
	proto_reader_free(&r);
}
END_TEST

START_TEST(reader_fds_belong_to_the_last_line)
{
	struct proto_reader r;
	struct proto_error err;
	json_t *v;
	int fd = some_fd();
	char text[256];

	proto_reader_init(&r, 1024, 64);
	proto_reader_set_bytes(&r, &fake_in);
	/* One read: a whole line naming fd 0, then the start of the next; the descriptor is the next's. */
	snprintf(text, sizeof(text), "%s{\"a\"", REF_LINE);
	ck_assert_int_eq(proto_reader_feed_fds(&r, text, strlen(text), &fd, 1), 0);
	ck_assert_int_eq(next(&r, &v, &err), -EBADMSG);
	ck_assert_int_eq(err.code, HERD_E_INVALID_BYTES);
	ck_assert_ptr_nonnull(strstr(err.text, "came with 0"));
	/* Failed: every descriptor it held is closed. */
	ck_assert(!fd_open(fd));
	proto_reader_free(&r);
}
END_TEST

START_TEST(reader_closes_fds)
{
	struct proto_reader r, plain;
	int a = some_fd(), b = some_fd();

	/* A reader without bytes takes no descriptor. */
	proto_reader_init(&plain, 1024, 64);
	ck_assert_int_eq(proto_reader_feed_fds(&plain, "{\"a\"", 4, &a, 1), 0);
	ck_assert(!fd_open(a));
	proto_reader_free(&plain);
	/* One waiting for its line's end is closed with the reader. */
	proto_reader_init(&r, 1024, 64);
	proto_reader_set_bytes(&r, &fake_in);
	ck_assert_int_eq(proto_reader_feed_fds(&r, "{\"a\"", 4, &b, 1), 0);
	ck_assert(fd_open(b));
	proto_reader_free(&r);
	ck_assert(!fd_open(b));
}
END_TEST

static int
fake_fd_make(const char *data, size_t len)
{
	return some_fd();
}

START_TEST(outq_sends_fd_lines_alone)
{
	struct proto_outq q;
	struct proto_bytes_out out = { .fd_make = fake_fd_make, .limit = 1 << 20 };
	char *big = calloc(1, PROTO_BYTES_FD_MIN);
	json_t *small = json_pack("{s:i}", "a", 1);
	json_t *msg = json_pack("{s:o}", "b", proto_bytes_new(big, PROTO_BYTES_FD_MIN));
	struct iovec iov[8];
	const int *fds;
	int fd;

	proto_outq_init(&q, 1 << 20);
	ck_assert_int_eq(proto_outq_push_json(&q, small, 1024), 0);
	ck_assert_int_eq(proto_outq_push_json_ex(&q, msg, 1024, &out), 0);
	ck_assert_int_eq(proto_outq_push_json(&q, small, 1024), 0);
	ck_assert_uint_eq(q.nfds, 1);
	/* The line before goes first, without descriptors. */
	ck_assert_int_eq(proto_outq_peek(&q, iov, 8), 1);
	ck_assert_uint_eq(proto_outq_fds(&q, &fds), 0);
	ck_assert_uint_eq(iov[0].iov_len, 8);
	proto_outq_consume(&q, iov[0].iov_len);
	/* Then the line with its descriptor, alone. */
	ck_assert_int_eq(proto_outq_peek(&q, iov, 8), 1);
	ck_assert_uint_eq(proto_outq_fds(&q, &fds), 1);
	fd = fds[0];
	ck_assert_mem_eq(
	    iov[0].iov_base, "{\"b\":{\"$bytes\":{\"fd\":0,\"len\":16384}}}\n", iov[0].iov_len);
	/* Written: the kernel holds its own reference, the queue closes its. */
	proto_outq_consume(&q, 1);
	ck_assert(!fd_open(fd));
	ck_assert_uint_eq(q.nfds, 0);
	/* Over the limit out of band: refused, nothing left open. */
	out.limit = PROTO_BYTES_FD_MIN - 1;
	ck_assert_int_eq(proto_outq_push_json_ex(&q, msg, 1024, &out), -EMSGSIZE);
	ck_assert_uint_eq(out.n, 0);
	proto_outq_free(&q);
	json_decref(msg);
	json_decref(small);
	free(big);
}
END_TEST

HT_MAIN("proto-bytes",
    HT_CASE("bytes", 60, base64_round_trip, bad_bytes_refused, reader_ties_fds_to_lines,
        reader_fds_belong_to_the_last_line, reader_closes_fds, outq_sends_fd_lines_alone))
