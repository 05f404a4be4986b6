/* SPDX-License-Identifier: MIT */
/*
 * herd's own JSON codec against jansson: the encoder must write exactly what
 * json_dumps(JSON_COMPACT) writes, for a fixed corpus of awkward values and
 * for many random ones, and refuse what a receiver would refuse; the decoder
 * must accept exactly what json_loadb accepts, with equal values, and
 * proto_parse must refuse each bad text with the code it had before it used
 * the decoder (ref_parse, the old pipeline, is the oracle).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ht-check.h"
#include "proto.h"
#include "ref-parse.h"

static unsigned long long rng_state = 88172645463325252ull;

/* xorshift64: reproducible, and wide enough for random doubles and int64s. */
static unsigned long long
rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* The encoder's text for v must be jansson's; pushes objects through the queue too. */
static void
expect_same_encoding(const json_t *v)
{
	char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	char *got = proto_json_dumps(v);
	char buf[64];
	ssize_t n;

	ck_assert_ptr_nonnull(want);
	ck_assert_msg(got && strcmp(got, want) == 0, "want %s got %s", want, got ? got : "(null)");
	n = proto_json_encode(v, buf, sizeof(buf));
	if (strlen(want) < sizeof(buf)) {
		ck_assert_int_eq(n, (ssize_t)strlen(want));
		ck_assert_str_eq(buf, want);
	} else {
		ck_assert_int_eq(n, -ENOSPC);
	}
	if (json_is_object(v) && !memmem(want, strlen(want), "\\u0000", 6)) {
		struct proto_outq q;
		struct iovec iov[4];
		size_t len = strlen(want);

		proto_outq_init(&q, SIZE_MAX);
		ck_assert_int_eq(proto_outq_push_json(&q, v, len), 0);
		ck_assert_int_eq(proto_outq_peek(&q, iov, 4), 1);
		ck_assert_uint_eq(iov[0].iov_len, len + 1);
		ck_assert(memcmp(iov[0].iov_base, want, len) == 0);
		ck_assert_int_eq(((char *)iov[0].iov_base)[len], '\n');
		/* One byte less is too long, and nothing is queued. */
		ck_assert_int_eq(proto_outq_push_json(&q, v, len - 1), -EMSGSIZE);
		ck_assert_uint_eq(q.bytes, len + 1);
		proto_outq_free(&q);
	}
	free(want);
	free(got);
}

static const double interesting_reals[] = {
	0.0,
	-0.0,
	0.1,
	-0.1,
	1.0,
	-1.0,
	100.0,
	1e15,
	1e16,
	1e17,
	1e21,
	1e22,
	123456789012345678.0,
	1e300,
	-1e300,
	1.7976931348623157e308,
	2.2250738585072014e-308,
	5e-324,
	-5e-324,
	1e-5,
	1e-7,
	0.5,
	1.5,
	3.141592653589793,
	9007199254740993.0,
	0.30000000000000004,
};

static const long long interesting_ints[] = {
	0,
	1,
	-1,
	9,
	10,
	-10,
	123,
	99999,
	2147483647,
	-2147483648LL,
	4294967296LL,
	INT64_MAX,
	INT64_MIN,
	INT64_MAX - 1,
	INT64_MIN + 1,
	1000000000000000000LL,
	-999999999999999999LL,
};

/* Strings that exercise every escape and every UTF-8 length. */
static json_t *
interesting_strings(void)
{
	json_t *a = json_array();
	char all[0x80];

	json_array_append_new(a, json_string(""));
	json_array_append_new(a, json_string("plain"));
	json_array_append_new(a, json_string("\"\\/\b\f\n\r\t"));
	json_array_append_new(a, json_string("\x7f\x01\x1f\x1e"));
	json_array_append_new(
	    a, json_string("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf"));
	json_array_append_new(
	    a, json_string("\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80"));
	json_array_append_new(a, json_string("</script>"));
	/* Every ASCII character, NUL included. */
	for (int i = 0; i < 0x80; i++)
		all[i] = (char)i;
	json_array_append_new(a, json_stringn(all, sizeof(all)));
	json_array_append_new(a, json_stringn("a\0b", 3));
	return a;
}

START_TEST(encode_corpus)
{
	json_t *strs = interesting_strings();
	json_t *all = json_object(), *v;
	char key[32];

	for (size_t i = 0; i < sizeof(interesting_reals) / sizeof(interesting_reals[0]); i++) {
		v = json_real(interesting_reals[i]);
		expect_same_encoding(v);
		snprintf(key, sizeof(key), "r%zu", i);
		json_object_set_new(all, key, v);
	}
	for (size_t i = 0; i < sizeof(interesting_ints) / sizeof(interesting_ints[0]); i++) {
		v = json_integer(interesting_ints[i]);
		expect_same_encoding(v);
		snprintf(key, sizeof(key), "i%zu", i);
		json_object_set_new(all, key, v);
	}
	for (size_t i = 0; i < json_array_size(strs); i++) {
		v = json_array_get(strs, i);
		expect_same_encoding(v);
		/* As a key, too. */
		json_object_setn(all, json_string_value(v), json_string_length(v), v);
	}
	json_object_set_new(all, "t", json_true());
	json_object_set_new(all, "f", json_false());
	json_object_set_new(all, "n", json_null());
	json_object_set_new(all, "ea", json_array());
	json_object_set_new(all, "eo", json_object());
	json_object_set_new(all, "strs", strs);
	expect_same_encoding(json_true());
	expect_same_encoding(json_false());
	expect_same_encoding(json_null());
	expect_same_encoding(all);
	v = json_pack("{s:s,s:i,s:s,s:{s:i}}", "jsonrpc", "2.0", "id", 123, "method", "echo",
	    "params", "x", 1);
	expect_same_encoding(v);
	json_decref(v);
	v = json_pack("[[[]],{},[{}],{s:[{}]}]", "a");
	expect_same_encoding(v);
	json_decref(v);
	json_decref(all);
	/* Every length around proto_json_dumps's buffer growth (ASan checks the edges). */
	for (size_t n = 0; n < 2400; n++) {
		char *s = malloc(n + 1);

		memset(s, 'x', n);
		s[n] = '\0';
		v = json_pack("[s]", s);
		expect_same_encoding(v);
		json_decref(v);
		free(s);
	}
}
END_TEST

/* Bytes for random strings: mostly ASCII, with escapes and multi-byte characters. */
static size_t
random_char(char *out)
{
	static const char *const pieces[] = { "\"", "\\", "\n", "\x01", "\x1f", "\x7f", "/",
		"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xed\x9f\xbf",
		"\xf4\x8f\xbf\xbf" };
	unsigned long long r = rng();

	if (r % 4 != 0) {
		out[0] = (char)(' ' + (r >> 8) % 95);
		return 1;
	}
	if ((r >> 8) % 16 == 0) {
		out[0] = (char)((r >> 16) % 0x20);
		return 1;
	}
	{
		const char *p = pieces[(r >> 16) % (sizeof(pieces) / sizeof(pieces[0]))];

		memcpy(out, p, strlen(p));
		return strlen(p);
	}
}

static json_t *
random_string(void)
{
	char buf[256];
	size_t len = 0, n = rng() % 24;

	for (size_t i = 0; i < n; i++)
		len += random_char(buf + len);
	return json_stringn(buf, len);
}

static double
random_real(void)
{
	for (;;) {
		unsigned long long bits = rng();
		double d;

		switch (rng() % 4) {
		case 0:
			return interesting_reals[rng() %
			    (sizeof(interesting_reals) / sizeof(interesting_reals[0]))];
		case 1:
			return (double)(long long)(rng() % 2000001) - 1000000.0;
		case 2:
			return (double)(rng() % 100000) / 1000.0;
		default:
			memcpy(&d, &bits, sizeof(d));
			if (isfinite(d))
				return d;
		}
	}
}

/* A random value at most max_depth containers deep. */
static json_t *
random_value(unsigned max_depth)
{
	unsigned kind = (unsigned)(rng() % (max_depth ? 9 : 7));

	switch (kind) {
	case 0:
		return json_null();
	case 1:
		return json_boolean(rng() % 2);
	case 2:
		return json_integer((json_int_t)rng() >> (rng() % 64));
	case 3:
		return json_integer(interesting_ints[rng() %
		    (sizeof(interesting_ints) / sizeof(interesting_ints[0]))]);
	case 4:
		return json_real(random_real());
	case 5:
	case 6:
		return random_string();
	case 7: {
		json_t *a = json_array();
		size_t n = rng() % 6;

		for (size_t i = 0; i < n; i++)
			json_array_append_new(a, random_value(max_depth - 1));
		return a;
	}
	default: {
		json_t *o = json_object();
		size_t n = rng() % 6;

		for (size_t i = 0; i < n; i++) {
			json_t *k = random_string();

			json_object_setn_new(o, json_string_value(k), json_string_length(k),
			    random_value(max_depth - 1));
			json_decref(k);
		}
		return o;
	}
	}
}

START_TEST(encode_random)
{
	for (int i = 0; i < 20000; i++) {
		json_t *v = random_value(1 + (unsigned)(rng() % 5));

		expect_same_encoding(v);
		json_decref(v);
	}
	/* Reals from every corner of the bit space. */
	for (int i = 0; i < 100000; i++) {
		json_t *v = json_real(random_real());

		expect_same_encoding(v);
		json_decref(v);
	}
}
END_TEST

/* Strings jansson would hold but a receiver refuses. */
START_TEST(encode_refuses)
{
	static const char *const bad[] = { "\x80", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"\xe2\x82", "\xf0\x9f\x98", "ok\xff", "\xc3" };
	struct proto_outq q;
	char buf[64];

	proto_outq_init(&q, 1u << 20);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *s = json_stringn_nocheck(bad[i], strlen(bad[i]));
		json_t *m = json_pack("{s:O}", "s", s);
		json_t *k = json_object();

		ck_assert_ptr_null(json_dumps(s, JSON_ENCODE_ANY)); /* jansson agrees */
		ck_assert_ptr_null(proto_json_dumps(s));
		ck_assert_int_eq(proto_json_encode(s, buf, sizeof(buf)), -EILSEQ);
		ck_assert_int_eq(proto_outq_push_json(&q, m, 1000), -EINVAL);
		json_object_setn_new_nocheck(k, bad[i], strlen(bad[i]), json_null());
		ck_assert_int_eq(proto_outq_push_json(&q, k, 1000), -EINVAL);
		json_decref(s);
		json_decref(m);
		json_decref(k);
	}
	ck_assert(proto_outq_empty(&q));
	proto_outq_free(&q);
	ck_assert_int_eq(proto_json_encode(NULL, buf, sizeof(buf)), -EINVAL);
	ck_assert_int_eq(proto_json_encode(json_null(), buf, 4), -ENOSPC);
	ck_assert_int_eq(proto_json_encode(json_null(), buf, 5), 4);
}
END_TEST

/* A reference cycle is too deep, not a hang. */
START_TEST(encode_cycle)
{
	json_t *a = json_array(), *o = json_object();
	struct proto_outq q;

	json_array_append(a, o);
	json_object_set(o, "a", a);
	proto_outq_init(&q, 1u << 20);
	ck_assert_int_eq(proto_outq_push_json(&q, o, 1u << 20), -EINVAL);
	ck_assert(proto_outq_empty(&q));
	ck_assert_ptr_null(proto_json_dumps(a));
	proto_outq_free(&q);
	json_object_del(o, "a");
	json_decref(a);
	json_decref(o);
}
END_TEST

/* Messages that straddle the tail chunk, or outgrow a chunk, land whole and in order. */
START_TEST(encode_chunks)
{
	struct proto_outq q;
	char *want = NULL, *got;
	size_t want_len = 0, off = 0;
	FILE *f = open_memstream(&want, &want_len);
	struct iovec iov[1024];
	int n;

	proto_outq_init(&q, SIZE_MAX);
	for (int i = 0; i < 300; i++) {
		size_t len = i % 7 == 0 ? (size_t)(40000 + i) : (size_t)(10 + rng() % 3000);
		char *s = malloc(len + 1);
		json_t *m;
		char *text;

		memset(s, 'a' + i % 26, len);
		s[len] = '\0';
		m = json_pack("{s:i,s:s}", "i", i, "s", s);
		ck_assert_int_eq(proto_outq_push_json(&q, m, SIZE_MAX), 0);
		text = json_dumps(m, JSON_COMPACT);
		fprintf(f, "%s\n", text);
		free(text);
		free(s);
		json_decref(m);
	}
	fclose(f);
	ck_assert_uint_eq(q.bytes, want_len);
	got = malloc(want_len);
	n = proto_outq_peek(&q, iov, 1024);
	ck_assert_int_lt(n, 1024);
	for (int i = 0; i < n; i++) {
		memcpy(got + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	ck_assert_uint_eq(off, want_len);
	ck_assert(memcmp(got, want, want_len) == 0);
	free(got);
	free(want);
	proto_outq_free(&q);
}
END_TEST

/* The size limit holds whether the line fits the tail chunk or not. */
START_TEST(encode_limit_exact)
{
	struct proto_outq q;

	proto_outq_init(&q, SIZE_MAX);
	for (size_t len = 8; len < 40000; len += len < 100 ? 1 : 997) {
		char *s = malloc(len);
		json_t *m;

		memset(s, 'x', len - 8);
		s[len - 8] = '\0';
		m = json_pack("{s:s}", "s", s); /* exactly len bytes */
		ck_assert_int_eq(proto_outq_push_json(&q, m, len - 1), -EMSGSIZE);
		ck_assert_int_eq(proto_outq_push_json(&q, m, len), 0);
		proto_outq_consume(&q, q.bytes - (rng() % 2 ? 0 : (size_t)len + 1));
		json_decref(m);
		free(s);
	}
	proto_outq_free(&q);
}
END_TEST

/*
 * The decoder against json_loadb, with no depth limit of its own (jansson's
 * 2048 applies to both), then proto_parse against the old pipeline.
 */
static void
expect_like_jansson(const char *text, size_t len)
{
	json_error_t jerr;
	json_t *want = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	json_t *got = NULL, *ref, *msg;
	struct proto_error err = { 0 };
	int rc, ref_code;

	rc = proto_json_decode(text, len, UINT_MAX, &got, &err);
	if (memchr(text, '\0', len)) {
		/*
		 * jansson drops a NUL byte that follows a number or a literal (its
		 * stream takes NUL for "nothing buffered" after an unget), so it
		 * accepts "[1\0]". herd refused NUL bytes before jansson saw them.
		 */
		ck_assert_int_eq(rc, -EBADMSG);
		json_decref(want);
		want = NULL;
	}
	ck_assert_msg((rc == 0) == (want != NULL), "%.*s: jansson %s, decoder %s (%s)", (int)len,
	    text, want ? "accepts" : jerr.text, rc == 0 ? "accepts" : "refuses", err.text);
	if (want) {
		char *a = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
		char *b = proto_json_dumps(got);

		ck_assert_msg(json_equal(got, want), "%.*s: values differ", (int)len, text);
		/* Encoding what was decoded gives jansson's text, unless too deep for herd. */
		if (b)
			ck_assert_str_eq(a, b);
		else
			ck_assert_int_eq(proto_check_depth(a, strlen(a), HERD_MAX_DEPTH), -E2BIG);
		free(a);
		free(b);
	} else {
		ck_assert_ptr_null(got);
		ck_assert(err.text[0] != '\0');
	}
	json_decref(want);
	json_decref(got);

	ref_code = ref_parse(text, len, SIZE_MAX, HERD_MAX_DEPTH, &ref);
	rc = proto_parse(text, len, SIZE_MAX, HERD_MAX_DEPTH, &msg, &err);
	ck_assert_msg((rc == 0 ? 0 : err.code) == ref_code, "%.*s: code %d (%s), was %d", (int)len,
	    text, rc == 0 ? 0 : err.code, err.text, ref_code);
	if (ref)
		ck_assert(json_equal(ref, msg));
	json_decref(ref);
	json_decref(msg);
}

#define LIKE_JANSSON(lit) expect_like_jansson(lit, sizeof(lit) - 1)

START_TEST(decode_corpus)
{
	static const char *const texts[] = {
		/* accepted */
		"{}",
		"[]",
		"{\"a\":1}",
		" \t\r\n{ \"a\" : [ 1 , 2 ] }\r\n ",
		"0",
		"-0",
		"-0.0",
		"1",
		"-1",
		"123",
		"1E5",
		"1e5",
		"1e+5",
		"1e-5",
		"1.5",
		"0.1",
		"1e300",
		"5e-324",
		"1e-999",
		"2.2250738585072014e-308",
		"1.7976931348623157e308",
		"9223372036854775807",
		"-9223372036854775808",
		"9223372036854775806",
		"1.0000000000000001e300",
		"100.0",
		"0e0",
		"-0e-0",
		"true",
		"false",
		"null",
		"\"\"",
		"\"abc\"",
		"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"",
		"\"\\u0001\\u001f\\u007f\\u0080\"",
		"\"\\u00e9\\u00E9\\u20ac\\uFFFF\\ud7ff\\ue000\"",
		"\"\\uD834\\uDD1E\\ud83d\\ude00\"",
		"\"\\udbff\\udfff\"",
		"\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\"",
		"\"\x7f\"",
		"\"a\\u0041b\\nc\xc3\xa9\\\\\"",
		"{\"\\u0061\":1,\"b\":\"\\n\"}",
		"{\"a\":{\"a\":{\"a\":[]}}}",
		"[[],[[]],{},{\"\":{}}]",
		"{\"jsonrpc\":\"2.0\",\"id\":123,\"method\":\"echo\",\"params\":{\"x\":1}}",
		"{\"a\":1,\"b\":1,\"A\":1,\"a \":1}",
		/* refused */
		"",
		" ",
		"{",
		"}",
		"[",
		"]",
		"{\"a\"}",
		"{\"a\":}",
		"{\"a\":1,}",
		"[1,]",
		"[,1]",
		"{,}",
		"{\"a\" 1}",
		"{1:1}",
		"{'a':1}",
		"[1 2]",
		"01",
		"-01",
		"00",
		"1.",
		".5",
		"+1",
		"-",
		"1e",
		"1e+",
		"1.5e",
		"1.e5",
		"0x10",
		"1e999",
		"-1e999",
		"9223372036854775808",
		"-9223372036854775809",
		"99999999999999999999",
		"tru",
		"truex",
		"true1",
		"nul",
		"NaN",
		"Infinity",
		"-Infinity",
		"\"abc",
		"\"\\\"",
		"\"\\x\"",
		"\"\\u12\"",
		"\"\\u12g4\"",
		"\"\\U0041\"",
		"\"\\ud800\"",
		"\"\\udc00\"",
		"\"\\ud800\\u0041\"",
		"\"\\ud800\\ud800\"",
		"\"\\ud800x\"",
		"\"\\ud800\\\"",
		"\"\\udfff\\ud800\"",
		"\"tab\there\"",
		"\"nl\nhere\"",
		"\"\\u0000\"",
		"{\"\\u0000\":1}",
		"\"a\\u0000\"",
		"\"\xc3\"",
		"\"\xff\"",
		"\"\xed\xa0\x80\"",
		"\"\xc0\xaf\"",
		"\xc3\xa9",
		"\xef\xbb\xbf{}",
		"{}{}",
		"{} x",
		"[] []",
		"{\"a\":1,\"a\":2}",
		"{\"a\":1,\"a\":}",
		"{\"a\":1,\"a\"}",
		"{\"a\":1,\"a\":[[[}",
		"{\"x\":{\"a\":1,\"a\":2}}",
		"{\"a\":{\"b\":1,\"b\":\x80}}",
		"{\"a\":1,\"b\":\"\\u0000\",\"a\":2}",
		"{\"a\":\"x\",\"a\":\"\xff\"}",
		"[\"\\ud800\",\"\xff\"]",
		"{\"a\":[1,\"\\q\",\"\\u0000\"]}",
		"[1,]\xff",
		"/**/{}",
		"{\"a\":1}//",
		"[\"a\"\"b\"]",
		/* A duplicate key wins over a broken value after it, escaped keys included. */
		"{\"a\":{\"b\":9},\"c\":1,\"a\":\"}\n",
		"{\"a\":1,\"a\":\"\\q\"}",
		"{\"\\u0061\":1,\"a\":\"x\n\"}",
		"{\"\\u0061\":{\"\\u0062\":[\"\\n\"]},\"a\":\"\\u\"}",
	};

	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
		expect_like_jansson(texts[i], strlen(texts[i]));
	/* NUL bytes, raw. */
	expect_like_jansson("\"a\0b\"", 5);
	expect_like_jansson("{\"a\":1}\0", 8);
	expect_like_jansson("{\"a\0\":1}", 8);
	expect_like_jansson("\0", 1);
	/* Every byte alone, in a string and after a value. */
	for (int c = 0; c < 256; c++) {
		char t[8];

		t[0] = (char)c;
		expect_like_jansson(t, 1);
		memcpy(t, "[\"", 2);
		t[2] = (char)c;
		memcpy(t + 3, "\"]", 2);
		expect_like_jansson(t, 5);
		memcpy(t, "[1", 2);
		t[2] = (char)c;
		t[3] = ']';
		expect_like_jansson(t, 4);
	}
}
END_TEST

/* A text of depth n: n arrays around inner. */
static char *
nest(unsigned n, const char *inner)
{
	size_t il = strlen(inner);
	char *s = malloc(2 * n + il + 1);

	memset(s, '[', n);
	memcpy(s + n, inner, il);
	memset(s + n + il, ']', n);
	s[2 * n + il] = '\0';
	return s;
}

START_TEST(decode_depth)
{
	static const unsigned depths[] = { 1, 2, 63, 64, 65, 2046, 2047, 2048, 2049, 3000 };
	struct proto_error err;
	json_t *v;

	for (size_t i = 0; i < sizeof(depths) / sizeof(depths[0]); i++) {
		char *a = nest(depths[i], ""), *b = nest(depths[i], "1"),
		     *c = nest(depths[i], "{}");

		expect_like_jansson(a, strlen(a));
		expect_like_jansson(b, strlen(b));
		expect_like_jansson(c, strlen(c));
		/* herd's own limit counts containers, and stops before allocating past it. */
		ck_assert_int_eq(
		    proto_json_decode(a, strlen(a), 64, &v, &err), depths[i] <= 64 ? 0 : -EBADMSG);
		if (depths[i] <= 64)
			json_decref(v);
		else
			ck_assert_int_eq(err.code, HERD_E_TOO_DEEP);
		ck_assert_int_eq(
		    proto_json_decode(c, strlen(c), 64, &v, &err), depths[i] < 64 ? 0 : -EBADMSG);
		json_decref(v);
		free(a);
		free(b);
		free(c);
	}
}
END_TEST

/* Values, encoded by jansson, decode to themselves; then the same texts, damaged. */
START_TEST(decode_random)
{
	static const char noise[] = "\"\\{}[],:0-+.eEu \x00\x01\x1f\x7f\x80\xbf\xc3\xed\xf0\xff"
	                            "a/";

	for (int i = 0; i < 20000; i++) {
		json_t *v = random_value(1 + (unsigned)(rng() % 5)), *back;
		char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		size_t len = strlen(text);
		struct proto_error err;

		if (!memmem(text, len, "\\u0000", 6)) {
			ck_assert_int_eq(
			    proto_json_decode(text, len, HERD_MAX_DEPTH, &back, &err), 0);
			ck_assert(json_equal(back, v));
			json_decref(back);
		}
		expect_like_jansson(text, len);
		for (int k = 0; k < 4 && len > 0; k++) {
			size_t at = rng() % len;
			char c = noise[rng() % (sizeof(noise) - 1)];

			switch (rng() % 3) {
			case 0:
				text[at] = c;
				break;
			case 1:
				memmove(text + at, text + at + 1, len - at);
				len--;
				break;
			default:
				text = realloc(text, len + 2);
				memmove(text + at + 1, text + at, len - at + 1);
				text[at] = c;
				len++;
				break;
			}
			expect_like_jansson(text, len);
		}
		free(text);
		json_decref(v);
	}
}
END_TEST

/* Long strings and numbers take the slow paths: scratch growth, heap copies. */
START_TEST(decode_long_tokens)
{
	size_t n = 100000;
	char *t = malloc(n + 64), *p;

	/* A long string of escapes, then as a key with an escaped value after it. */
	p = t;
	*p++ = '"';
	for (size_t i = 0; i < n / 6; i++, p += 6)
		memcpy(p, i % 2 ? "\\u00e9" : "\\n\\t\\\"", 6);
	*p++ = '"';
	expect_like_jansson(t, (size_t)(p - t));
	memmove(t + 1, t, (size_t)(p - t));
	t[0] = '{';
	p++;
	memcpy(p, ":\"\\u20ac\\n\"}", 12);
	p += 12;
	expect_like_jansson(t, (size_t)(p - t));
	/* A long number. */
	memset(t, '1', n);
	t[1] = '.';
	expect_like_jansson(t, n);
	t[1] = '1';
	expect_like_jansson(t, n);
	memcpy(t + n - 5, "e-999", 5);
	expect_like_jansson(t, n);
	free(t);
}
END_TEST

HT_MAIN("proto-json",
    HT_CASE("encode", 60, encode_corpus, encode_random, encode_refuses, encode_cycle, encode_chunks,
        encode_limit_exact),
    HT_CASE("decode", 120, decode_corpus, decode_depth, decode_random, decode_long_tokens))
