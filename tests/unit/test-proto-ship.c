/* SPDX-License-Identifier: MIT */
/* SHA-256 against FIPS 180-4's vectors, base64 against RFC 4648's (proto/ship.h). */
#include <string.h>

#include <check.h>

#include "ht-check.h"
#include "ship.h"

static const char *
sha(const char *text, size_t times)
{
	static char hex[65];
	struct proto_sha256 s;

	proto_sha256_init(&s);
	for (size_t i = 0; i < times; i++)
		proto_sha256_update(&s, text, strlen(text));
	proto_sha256_hex(&s, hex);
	return hex;
}

START_TEST(test_sha256_vectors)
{
	ck_assert_str_eq(
	    sha("", 1), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	ck_assert_str_eq(
	    sha("abc", 1), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	ck_assert_str_eq(sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 1),
	    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	/* A million 'a', fed in pieces that straddle blocks. */
	ck_assert_str_eq(sha("aaaaaaaaaaaaaaaaaaaaaaaaa", 40000),
	    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}
END_TEST

START_TEST(test_base64_vectors)
{
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const coded[] = { "", "Zg==", "Zm8=", "Zm9v",
		"Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	char enc[16], dec[16];

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		ck_assert_uint_eq(
		    proto_base64_encode(plain[i], strlen(plain[i]), enc), strlen(coded[i]));
		ck_assert_str_eq(enc, coded[i]);
		ck_assert_int_eq(proto_base64_decode(coded[i], strlen(coded[i]), dec),
		    (ssize_t)strlen(plain[i]));
		ck_assert(memcmp(dec, plain[i], strlen(plain[i])) == 0);
	}
	ck_assert_int_eq(proto_base64_decode("Zm9", 3, dec), -1);
	ck_assert_int_eq(proto_base64_decode("Zm=v", 4, dec), -1);
	ck_assert_int_eq(proto_base64_decode("Z!9v", 4, dec), -1);
}
END_TEST

HT_MAIN("proto-ship", HT_CASE("vectors", 30, test_sha256_vectors, test_base64_vectors))
