/* SPDX-License-Identifier: MIT */
/*
 * herd's own JSON codec against jansson: the encoder must write exactly what
 * json_dumps(JSON_COMPACT) writes, for a fixed corpus of awkward values and
 * for many random ones, and refuse what a receiver would refuse.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

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
	struct iovec iov[64];
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
	n = proto_outq_peek(&q, iov, 64);
	ck_assert_int_lt(n, 64);
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

static Suite *
json_suite(void)
{
	Suite *s = suite_create("proto-json");
	TCase *tc = tcase_create("encode");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, encode_corpus);
	tcase_add_test(tc, encode_random);
	tcase_add_test(tc, encode_refuses);
	tcase_add_test(tc, encode_cycle);
	tcase_add_test(tc, encode_chunks);
	tcase_add_test(tc, encode_limit_exact);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(json_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
