/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the proto reader. The first two input bytes pick the
 * message size limit and the seed for how the rest is split into feeds; the
 * rest is the byte stream. Oracles, beyond "no crash, no leak":
 * - feeding in random pieces gives the same messages and the same final error
 *   as feeding everything at once;
 * - the reader never holds more than max_message + 1 bytes of a partial line;
 * - every message that validates survives proto_outq_push_json and a second
 *   reader unchanged;
 * - differential: the whole input as one text gets the same verdict and
 *   value from herd's decoder as from json_loadb, the same error code from
 *   proto_parse as from the old checks-then-jansson pipeline (ref_parse),
 *   and encode(decode(x)) is json_dumps(json_loadb(x)) byte for byte.
 * The same function replays the committed corpus in every build (replay.c).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "proto.h"
#include "ref-parse.h"

struct outcome {
	json_t *msgs;
	int code; /* 0 or the violation's HERD_E_* code */
};

static void
drain(struct proto_reader *r, struct outcome *o)
{
	struct proto_error err;
	json_t *v;
	int rc;

	while ((rc = proto_reader_next(r, &v, &err)) == 1)
		json_array_append_new(o->msgs, v);
	if (rc == -EBADMSG)
		o->code = err.code;
	else
		FUZZ_CHECK(rc == 0 || rc == -EPROTO);
	FUZZ_CHECK(r->len - r->start - r->scanned <= r->max_message + 1);
}

/* Re-encodes a valid message and reads it back. */
static void
round_trip(json_t *msg)
{
	struct proto_msg m;
	struct proto_error err;
	struct proto_outq q;
	struct proto_reader r;
	struct iovec iov[16];
	json_t *back = NULL;
	int n, rc;

	if (proto_msg_parse(msg, &m, &err) < 0) {
		FUZZ_CHECK(err.code == HERD_E_INVALID_REQUEST);
		return;
	}
	/* Encodings may grow (1e2 becomes 100.0), so allow room. */
	proto_outq_init(&q, SIZE_MAX);
	rc = proto_outq_push_json(&q, msg, SIZE_MAX);
	FUZZ_CHECK(rc == 0);
	proto_reader_init(&r, SIZE_MAX, HERD_MAX_DEPTH);
	n = proto_outq_peek(&q, iov, 16);
	for (int i = 0; i < n; i++)
		FUZZ_CHECK(proto_reader_feed(&r, iov[i].iov_base, iov[i].iov_len) == 0);
	FUZZ_CHECK(proto_reader_next(&r, &back, &err) == 1);
	FUZZ_CHECK(json_equal(back, msg));
	json_decref(back);
	FUZZ_CHECK(proto_reader_next(&r, &back, &err) == 0);
	proto_reader_free(&r);
	proto_outq_free(&q);
}

/* The decoder against jansson, and proto_parse against the pipeline it replaced. */
static void
differential(const char *text, size_t len, size_t max_message)
{
	json_error_t jerr;
	json_t *want, *got, *ref, *msg;
	struct proto_error err;
	int rc, ref_code;

	want = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	rc = proto_json_decode(text, len, UINT_MAX, &got, &err);
	/* jansson skips a NUL byte after a number or literal; herd refuses every NUL. */
	if (memchr(text, '\0', len)) {
		FUZZ_CHECK(rc < 0);
	} else {
		FUZZ_CHECK((rc == 0) == (want != NULL));
	}
	if (rc == 0) {
		char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
		char *b = proto_json_dumps(got);

		FUZZ_CHECK(json_equal(got, want));
		FUZZ_CHECK(a != NULL);
		if (b)
			FUZZ_CHECK(strcmp(a, b) == 0);
		else
			FUZZ_CHECK(proto_check_depth(a, strlen(a), HERD_MAX_DEPTH) == -E2BIG);
		free(a);
		free(b);
	}
	json_decref(want);
	json_decref(got);

	ref_code = ref_parse(text, len, max_message, HERD_MAX_DEPTH, &ref);
	rc = proto_parse(text, len, max_message, HERD_MAX_DEPTH, &msg, &err);
	if (rc != 0 && err.code != ref_code)
		fprintf(
		    stderr, "proto_parse: %d (%s), ref_parse: %d\n", err.code, err.text, ref_code);
	FUZZ_CHECK((rc == 0 ? 0 : err.code) == ref_code);
	FUZZ_CHECK(rc == 0 ? json_is_object(msg) : proto_error_name(err.code) != NULL);
	FUZZ_CHECK(ref_code != 0 || json_equal(ref, msg));
	json_decref(ref);
	json_decref(msg);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_reader whole, split;
	struct outcome a = { 0 }, b = { 0 };
	size_t max_message, off;
	unsigned seed;

	if (size < 2)
		return 0;
	max_message = 16 + (size_t)data[0] * 8;
	seed = data[1];
	data += 2;
	size -= 2;

	a.msgs = json_array();
	b.msgs = json_array();

	proto_reader_init(&whole, max_message, HERD_MAX_DEPTH);
	FUZZ_CHECK(proto_reader_feed(&whole, data, size) == 0);
	drain(&whole, &a);

	proto_reader_init(&split, max_message, HERD_MAX_DEPTH);
	for (off = 0; off < size && b.code == 0;) {
		size_t piece;

		seed = seed * 1103515245u + 12345u;
		piece = (seed >> 16) % 4 == 0 ? (seed >> 8) % 512 : 1 + (seed >> 16) % 9;
		if (piece > size - off)
			piece = size - off;
		FUZZ_CHECK(proto_reader_feed(&split, data + off, piece) == 0);
		off += piece;
		drain(&split, &b);
	}
	FUZZ_CHECK(a.code == b.code);
	FUZZ_CHECK(json_equal(a.msgs, b.msgs));
	if (a.code != 0) {
		FUZZ_CHECK(whole.failed && split.failed);
		FUZZ_CHECK(proto_reader_feed(&split, "{}\n", 3) == -EPROTO);
	}

	for (size_t i = 0; i < json_array_size(a.msgs); i++)
		round_trip(json_array_get(a.msgs, i));

	/* The whole input as one message text, too. */
	differential((const char *)data, size, max_message);

	proto_reader_free(&whole);
	proto_reader_free(&split);
	json_decref(a.msgs);
	json_decref(b.msgs);
	return 0;
}
