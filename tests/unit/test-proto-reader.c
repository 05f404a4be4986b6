/* SPDX-License-Identifier: MIT */
/*
 * The incremental reader: framing in every split, the size limit enforced
 * while bytes arrive, and one distinct error code per kind of bad input.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ht-check.h"
#include "proto.h"

#define MAX_MSG 1024u

/* Messages taken out of a reader, and how the reader ended. */
struct drained {
	json_t *msgs; /* array */
	int last_rc; /* 0, or -EBADMSG */
	struct proto_error err;
};

static void
drain(struct proto_reader *r, struct drained *d)
{
	json_t *v;
	int rc;

	while ((rc = proto_reader_next(r, &v, &d->err)) == 1) {
		ck_assert_ptr_nonnull(v);
		ck_assert(json_is_object(v));
		json_array_append_new(d->msgs, v);
	}
	ck_assert_ptr_null(v);
	d->last_rc = rc;
}

/* Feeds text cut at the given split points (sorted, within len), draining after each piece. */
static void
feed_split(const char *text, size_t len, const size_t *cuts, size_t ncuts, size_t max_message,
    struct drained *d)
{
	struct proto_reader r;
	size_t prev = 0;

	d->msgs = json_array();
	memset(&d->err, 0, sizeof(d->err));
	proto_reader_init(&r, max_message, HERD_MAX_DEPTH);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : len;

		ck_assert_int_eq(proto_reader_feed(&r, text + prev, end - prev), 0);
		prev = end;
		drain(&r, d);
		if (d->last_rc < 0)
			break;
	}
	proto_reader_free(&r);
}

/* Parses one line and expects a violation with the given code. */
static void
expect_error(const char *line, size_t len, int code)
{
	struct proto_reader r;
	struct proto_error err = { 0 };
	json_t *v = NULL;

	proto_reader_init(&r, MAX_MSG, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_feed(&r, line, len), 0);
	ck_assert_int_eq(proto_reader_feed(&r, "\n", 1), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), -EBADMSG);
	ck_assert_ptr_null(v);
	ck_assert_msg(err.code == code, "line %.*s: code %d (%s), want %d", (int)len, line,
	    err.code, err.text, code);
	ck_assert(err.text[0] != '\0');
	ck_assert(r.failed);
	/* A failed reader stays failed. */
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), -EPROTO);
	ck_assert_int_eq(proto_reader_feed(&r, "{}\n", 3), -EPROTO);
	proto_reader_free(&r);
}

static void
expect_ok(const char *line, size_t len)
{
	struct proto_reader r;
	struct proto_error err = { 0 };
	json_t *v = NULL;
	int rc;

	proto_reader_init(&r, MAX_MSG, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_feed(&r, line, len), 0);
	ck_assert_int_eq(proto_reader_feed(&r, "\n", 1), 0);
	rc = proto_reader_next(&r, &v, &err);
	ck_assert_msg(
	    rc == 1, "line %.*s: rc %d code %d (%s)", (int)len, line, rc, err.code, err.text);
	json_decref(v);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	proto_reader_free(&r);
}

#define EXPECT_ERROR(lit, code) expect_error(lit, sizeof(lit) - 1, code)
#define EXPECT_OK(lit)          expect_ok(lit, sizeof(lit) - 1)

static const char three[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}\n"
                            "{\"s\":\"x\\n\\\"y\\u00e9\"}\n"
                            "{\"n\":[1,{\"m\":null}]}\n";

static json_t *
three_expected(void)
{
	return json_pack("[{s:s,s:i,s:s},{s:s},{s:[i,{s:n}]}]", "jsonrpc", "2.0", "id", 1, "method",
	    "a", "s", "x\n\"y\xc3\xa9", "n", 1, "m");
}

START_TEST(every_split_point)
{
	size_t len = sizeof(three) - 1;
	json_t *want = three_expected();

	for (size_t i = 0; i <= len; i++) {
		for (size_t j = i; j <= len; j++) {
			size_t cuts[2] = { i, j };
			struct drained d;

			feed_split(three, len, cuts, 2, MAX_MSG, &d);
			ck_assert_int_eq(d.last_rc, 0);
			ck_assert_msg(json_equal(d.msgs, want), "split at %zu,%zu", i, j);
			json_decref(d.msgs);
		}
	}
	json_decref(want);
}
END_TEST

START_TEST(byte_at_a_time)
{
	size_t len = sizeof(three) - 1;
	size_t cuts[sizeof(three)];
	json_t *want = three_expected();
	struct drained d;

	for (size_t i = 0; i < len; i++)
		cuts[i] = i;
	feed_split(three, len, cuts, len, MAX_MSG, &d);
	ck_assert_int_eq(d.last_rc, 0);
	ck_assert(json_equal(d.msgs, want));
	json_decref(d.msgs);
	json_decref(want);
}
END_TEST

/* Many messages in one feed, then many in many small feeds: the buffer stays small. */
START_TEST(many_messages)
{
	struct proto_reader r;
	struct proto_error err;
	char line[64];
	json_t *v;
	size_t got = 0, fed = 0;
	unsigned seed = 7;
	char *blob = NULL;
	size_t blen = 0;
	FILE *f = open_memstream(&blob, &blen);

	for (int i = 0; i < 1000; i++)
		fprintf(f, "{\"i\":%d}\n", i);
	fclose(f);
	proto_reader_init(&r, MAX_MSG, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_feed(&r, blob, blen), 0);
	while (proto_reader_next(&r, &v, &err) == 1) {
		ck_assert_int_eq(json_integer_value(json_object_get(v, "i")), (json_int_t)got);
		json_decref(v);
		got++;
	}
	ck_assert_uint_eq(got, 1000);
	proto_reader_free(&r);

	/* 20000 messages in pieces of 1..7 bytes: compaction keeps the buffer at its minimum. */
	got = 0;
	proto_reader_init(&r, MAX_MSG, HERD_MAX_DEPTH);
	for (int i = 0; i < 20000; i++) {
		int n = snprintf(line, sizeof(line), "{\"i\":%d}\n", i);

		for (int off = 0; off < n;) {
			int piece = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 7;

			if (piece > n - off)
				piece = n - off;
			ck_assert_int_eq(proto_reader_feed(&r, line + off, (size_t)piece), 0);
			off += piece;
			fed += (size_t)piece;
			while (proto_reader_next(&r, &v, &err) == 1) {
				ck_assert_int_eq(
				    json_integer_value(json_object_get(v, "i")), (json_int_t)got);
				json_decref(v);
				got++;
			}
			ck_assert_uint_le(r.cap, 4096);
		}
	}
	ck_assert_uint_eq(got, 20000);
	ck_assert_uint_gt(fed, 20000 * 9);
	proto_reader_free(&r);
	free(blob);
}
END_TEST

/* A line of exactly len bytes: {"s":"xxx..."} */
static char *
line_of(size_t len)
{
	char *s = malloc(len + 1);

	ck_assert_uint_ge(len, 8);
	memcpy(s, "{\"s\":\"", 6);
	memset(s + 6, 'x', len - 8);
	memcpy(s + len - 2, "\"}", 2);
	s[len] = '\0';
	return s;
}

START_TEST(size_limit_exact)
{
	struct drained d;
	char *s = line_of(MAX_MSG);
	char *text;

	/* Exactly max_message bytes is accepted, in one piece and byte by byte. */
	ck_assert_int_eq(asprintf(&text, "{}\n%s\n{}\n", s), (int)MAX_MSG + 7);
	feed_split(text, strlen(text), NULL, 0, MAX_MSG, &d);
	ck_assert_int_eq(d.last_rc, 0);
	ck_assert_uint_eq(json_array_size(d.msgs), 3);
	json_decref(d.msgs);
	free(text);
	free(s);

	/* One more byte is refused, after the whole messages before it. */
	s = line_of(MAX_MSG + 1);
	ck_assert_int_eq(asprintf(&text, "{}\n%s\n{}\n", s), (int)MAX_MSG + 8);
	for (size_t cut = 0; cut <= strlen(text); cut += 97) {
		feed_split(text, strlen(text), &cut, 1, MAX_MSG, &d);
		ck_assert_int_eq(d.last_rc, -EBADMSG);
		ck_assert_int_eq(d.err.code, HERD_E_MESSAGE_TOO_LARGE);
		ck_assert_uint_eq(json_array_size(d.msgs), 1);
		json_decref(d.msgs);
	}
	free(text);
	free(s);
}
END_TEST

/* The violation is reported as soon as max_message + 1 bytes of a line are in, newline or not. */
START_TEST(size_limit_early)
{
	struct proto_reader r;
	struct proto_error err;
	char *s = line_of(MAX_MSG + 1);
	json_t *v;

	proto_reader_init(&r, MAX_MSG, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_feed(&r, s, MAX_MSG), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	ck_assert_int_eq(proto_reader_feed(&r, s + MAX_MSG, 1), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), -EBADMSG);
	ck_assert_int_eq(err.code, HERD_E_MESSAGE_TOO_LARGE);
	proto_reader_free(&r);
	free(s);
}
END_TEST

/* 64 MiB of one line never makes the reader hold more than max_message + 1 bytes. */
START_TEST(huge_line_bounded)
{
	struct proto_reader r;
	struct proto_error err;
	static char chunk[65536];
	json_t *v;
	int rc = 0;

	const size_t max = 100000;

	memset(chunk, '[', sizeof(chunk));
	proto_reader_init(&r, max, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_feed(&r, "{}\n", 3), 0);
	for (int i = 0; i < 1024; i++) {
		ck_assert_int_eq(proto_reader_feed(&r, chunk, sizeof(chunk)), 0);
		ck_assert_uint_le(r.len - r.start, 3 + max + 1);
		ck_assert_uint_le(r.cap, 2 * (max + 4));
	}
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 1);
	json_decref(v);
	rc = proto_reader_next(&r, &v, &err);
	ck_assert_int_eq(rc, -EBADMSG);
	ck_assert_int_eq(err.code, HERD_E_MESSAGE_TOO_LARGE);
	ck_assert_int_eq(proto_reader_feed(&r, chunk, 10), -EPROTO);
	proto_reader_free(&r);
}
END_TEST

static char *
nested(unsigned depth, const char *open, const char *inner, const char *close)
{
	size_t ol = strlen(open), il = strlen(inner), cl = strlen(close);
	char *s = malloc(depth * (ol + cl) + il + 1), *p = s;

	for (unsigned i = 0; i < depth; i++, p += ol)
		memcpy(p, open, ol);
	memcpy(p, inner, il);
	p += il;
	for (unsigned i = 0; i < depth; i++, p += cl)
		memcpy(p, close, cl);
	*p = '\0';
	return s;
}

START_TEST(depth_limit)
{
	char *s;

	/* The outer object is level 1. */
	s = nested(HERD_MAX_DEPTH - 1, "[", "", "]");
	{
		char *line;

		ck_assert_int_gt(asprintf(&line, "{\"a\":%s}", s), 0);
		expect_ok(line, strlen(line));
		free(line);
	}
	free(s);
	s = nested(HERD_MAX_DEPTH, "{\"k\":", "1", "}");
	expect_ok(s, strlen(s));
	free(s);
	s = nested(HERD_MAX_DEPTH + 1, "{\"k\":", "1", "}");
	expect_error(s, strlen(s), HERD_E_TOO_DEEP);
	free(s);
	/* Far too deep for jansson's recursion on a small stack: refused before parsing. */
	s = nested(100000, "[", "", "]");
	ck_assert_int_eq(proto_check_depth(s, strlen(s), HERD_MAX_DEPTH), -E2BIG);
	{
		json_t *v;
		struct proto_error err;

		ck_assert_int_eq(
		    proto_parse(s, strlen(s), SIZE_MAX, HERD_MAX_DEPTH, &v, &err), -EBADMSG);
		ck_assert_int_eq(err.code, HERD_E_TOO_DEEP);
	}
	free(s);

	ck_assert_int_eq(proto_check_depth("[[]]", 4, 2), 0);
	ck_assert_int_eq(proto_check_depth("[[[]]]", 6, 2), -E2BIG);
	/* Closed brackets free their level again. */
	ck_assert_int_eq(proto_check_depth("[[],[],{}]", 10, 2), 0);
}
END_TEST

START_TEST(depth_ignores_strings)
{
	char *s = nested(200, "[", "", "]");
	char *line;

	ck_assert_int_gt(asprintf(&line, "{\"a\":\"%s\",\"%s\":1}", s, s), 0);
	expect_ok(line, strlen(line));
	free(line);
	free(s);
	/* Escaped quotes and backslashes do not end the string early. */
	EXPECT_OK("{\"a\":\"\\\"[[[[[[[[[[\\\\\",\"b\":\"\\\\\\\"{{{{{{{{{{\"}");
	ck_assert_int_eq(proto_check_depth("[\"\\\"[[[[\"]", 10, 1), 0);
	ck_assert_int_eq(proto_check_depth("[\"\\\\\",[]]", 9, 1), -E2BIG);
}
END_TEST

START_TEST(invalid_json)
{
	EXPECT_ERROR("{\"a\":}", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{\"a\":1", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{'a':1}", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{\"a\":01}", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{\"a\":\"\\ud800\"}", HERD_E_PARSE_ERROR); /* lone surrogate escape */
	EXPECT_ERROR("{\"a\":\"\\x\"}", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{\"a\":\"tab\there\"}", HERD_E_PARSE_ERROR); /* raw control character */
	EXPECT_ERROR("nope", HERD_E_PARSE_ERROR);
}
END_TEST

START_TEST(parse_error_text)
{
	struct proto_error err;
	json_t *v;

	ck_assert_int_eq(proto_parse("{\"a\":}", 6, MAX_MSG, HERD_MAX_DEPTH, &v, &err), -EBADMSG);
	ck_assert_int_eq(err.code, HERD_E_PARSE_ERROR);
	ck_assert_ptr_nonnull(strstr(err.text, "at byte"));
}
END_TEST

START_TEST(trailing_garbage)
{
	EXPECT_ERROR("{\"a\":1} x", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{}{}", HERD_E_PARSE_ERROR);
	EXPECT_ERROR("{} 1", HERD_E_PARSE_ERROR);
	EXPECT_OK("  {\"a\":1}  \t");
}
END_TEST

START_TEST(duplicate_keys)
{
	EXPECT_ERROR("{\"a\":1,\"a\":1}", HERD_E_DUPLICATE_KEY);
	EXPECT_ERROR("{\"p\":{\"x\":1,\"y\":2,\"x\":3}}", HERD_E_DUPLICATE_KEY);
	/* The same key in different objects is fine. */
	EXPECT_OK("{\"p\":{\"x\":1},\"q\":{\"x\":1}}");
}
END_TEST

START_TEST(bad_utf8)
{
	static const char *const bad[] = {
		"\x80", /* stray continuation byte */
		"\xbf", /* stray continuation byte */
		"\xc0\xaf", /* overlong '/' */
		"\xc1\xbf", /* overlong */
		"\xe0\x80\xaf", /* overlong, 3 bytes */
		"\xe0\x9f\xbf", /* overlong, 3 bytes */
		"\xf0\x80\x80\xaf", /* overlong, 4 bytes */
		"\xf0\x8f\xbf\xbf", /* overlong, 4 bytes */
		"\xed\xa0\x80", /* U+D800 */
		"\xed\xbf\xbf", /* U+DFFF */
		"\xf4\x90\x80\x80", /* U+110000 */
		"\xf5\x80\x80\x80", /* past the range */
		"\xfe", "\xff", "\xe2\x82", /* truncated, then the closing quote */
		"\xe2\x82x", /* bad continuation */
		"\xf0\x9f\x98", /* truncated 4-byte sequence */
		"\xc3", /* lead byte then the quote */
	};
	static const char *const good[] = {
		"\xc3\xa9", /* é */
		"\xe2\x82\xac", /* € */
		"\xef\xbf\xbf", /* U+FFFF */
		"\xee\x80\x80", /* U+E000, just past the surrogates */
		"\xed\x9f\xbf", /* U+D7FF, just before them */
		"\xf0\x90\x80\x80", /* U+10000 */
		"\xf4\x8f\xbf\xbf", /* U+10FFFF */
	};
	char *line;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		ck_assert_int_gt(asprintf(&line, "{\"s\":\"%s\"}", bad[i]), 0);
		expect_error(line, strlen(line), HERD_E_INVALID_UTF8);
		free(line);
		/* In a key, too. */
		ck_assert_int_gt(asprintf(&line, "{\"%s\":1}", bad[i]), 0);
		expect_error(line, strlen(line), HERD_E_INVALID_UTF8);
		free(line);
	}
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_int_gt(asprintf(&line, "{\"s\":\"%s\"}", good[i]), 0);
		expect_ok(line, strlen(line));
		free(line);
	}
	/* Truncated at the very end of the text. */
	expect_error("{}\xe2\x82", 4, HERD_E_INVALID_UTF8);
}
END_TEST

START_TEST(nul_bytes)
{
	expect_error("{\"a\":\"x\0y\"}", 11, HERD_E_NUL_BYTE);
	expect_error("{\"a\":1}\0", 8, HERD_E_NUL_BYTE);
	EXPECT_ERROR("{\"a\":\"x\\u0000y\"}", HERD_E_NUL_BYTE);
	EXPECT_ERROR("{\"a\\u0000\":1}", HERD_E_NUL_BYTE);
	/* An escaped backslash followed by "u0000" is six ordinary characters. */
	EXPECT_OK("{\"a\":\"\\\\u0000\"}");
	EXPECT_OK("{\"a\":\"\\u0001\\u0100\"}");
}
END_TEST

START_TEST(not_an_object)
{
	EXPECT_ERROR("[1,2]", HERD_E_INVALID_REQUEST);
	EXPECT_ERROR("[]", HERD_E_INVALID_REQUEST);
	EXPECT_ERROR("42", HERD_E_INVALID_REQUEST);
	EXPECT_ERROR("\"s\"", HERD_E_INVALID_REQUEST);
	EXPECT_ERROR("null", HERD_E_INVALID_REQUEST);
	EXPECT_ERROR("true", HERD_E_INVALID_REQUEST);
}
END_TEST

START_TEST(blank_lines_and_crlf)
{
	static const char text[] = "\n\n{\"a\":1}\r\n\r\n   \n\t\r\n{\"b\":2}\n\n";
	size_t len = sizeof(text) - 1;
	json_t *want = json_pack("[{s:i},{s:i}]", "a", 1, "b", 2);

	for (size_t i = 0; i <= len; i++) {
		struct drained d;

		feed_split(text, len, &i, 1, MAX_MSG, &d);
		ck_assert_int_eq(d.last_rc, 0);
		ck_assert(json_equal(d.msgs, want));
		json_decref(d.msgs);
	}
	json_decref(want);
}
END_TEST

/* A new reader fed one line and half of the next, the first taken out. */
static void
feed_one_and_a_half(struct proto_reader *r)
{
	struct proto_error err;
	json_t *v;

	proto_reader_init(r, MAX_MSG, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_feed(r, "{\"a\":1}\n{\"b\"", 12), 0);
	ck_assert_int_eq(proto_reader_next(r, &v, &err), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "a")), 1);
	json_decref(v);
}

/* A last line without its newline waits; nothing is lost or parsed early. */
START_TEST(partial_last_line)
{
	struct proto_reader r;
	struct proto_error err;
	json_t *v;

	feed_one_and_a_half(&r);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	ck_assert_int_eq(proto_reader_feed(&r, ":2}", 3), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	ck_assert_int_eq(proto_reader_feed(&r, "\n", 1), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "b")), 2);
	json_decref(v);
	proto_reader_free(&r);
	/* A freed reader can be fed again after init. */
	proto_reader_init(&r, MAX_MSG, HERD_MAX_DEPTH);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	proto_reader_free(&r);
}
END_TEST

/* An idle reader holds no buffer: herdd keeps one per worker, nearly all of them idle. */
START_TEST(idle_holds_nothing)
{
	struct proto_reader r;
	struct proto_error err;
	json_t *v;

	feed_one_and_a_half(&r);
	/* The partial second line is held... */
	ck_assert_ptr_nonnull(r.buf);
	ck_assert_int_eq(proto_reader_feed(&r, ":2}\n\n", 5), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 1);
	json_decref(v);
	/* ...and once every byte is consumed, the buffer is gone. */
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 0);
	ck_assert_ptr_null(r.buf);
	ck_assert_uint_eq(r.cap, 0);
	ck_assert_int_eq(proto_reader_feed(&r, "{\"c\":3}\n", 8), 0);
	ck_assert_int_eq(proto_reader_next(&r, &v, &err), 1);
	ck_assert_int_eq(json_integer_value(json_object_get(v, "c")), 3);
	json_decref(v);
	ck_assert_ptr_null(r.buf);
	proto_reader_free(&r);
}
END_TEST

HT_MAIN("proto-reader",
    HT_CASE("reader", 60, every_split_point, byte_at_a_time, many_messages, size_limit_exact,
        size_limit_early, huge_line_bounded, depth_limit, depth_ignores_strings, invalid_json,
        parse_error_text, trailing_garbage, duplicate_keys, bad_utf8, nul_bytes, not_an_object,
        blank_lines_and_crlf, partial_last_line, idle_holds_nothing))
