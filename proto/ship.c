/* SPDX-License-Identifier: MIT */
/* SHA-256 (FIPS 180-4) and base64 (RFC 4648) for shipping executables (ship.h). */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "ship.h"

static const uint32_t k[64] = { 0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b,
	0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6,
	0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d,
	0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85,
	0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585,
	0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa,
	0xa4506ceb, 0xbef9a3f7, 0xc67178f2 };

static uint32_t
ror(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static void
sha256_block(struct proto_sha256 *s, const uint8_t *p)
{
	uint32_t w[64], a[8], t1, t2;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		    (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++)
		w[i] = w[i - 16] + (ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3)) +
		    w[i - 7] + (ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10));
	memcpy(a, s->h, sizeof(a));
	for (int i = 0; i < 64; i++) {
		t1 = a[7] + (ror(a[4], 6) ^ ror(a[4], 11) ^ ror(a[4], 25)) +
		    ((a[4] & a[5]) ^ (~a[4] & a[6])) + k[i] + w[i];
		t2 = (ror(a[0], 2) ^ ror(a[0], 13) ^ ror(a[0], 22)) +
		    ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
		memmove(a + 1, a, 7 * sizeof(a[0]));
		a[4] += t1;
		a[0] = t1 + t2;
	}
	for (int i = 0; i < 8; i++)
		s->h[i] += a[i];
}

void
proto_sha256_init(struct proto_sha256 *s)
{
	static const uint32_t h0[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f,
		0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };

	memset(s, 0, sizeof(*s));
	memcpy(s->h, h0, sizeof(h0));
}

void
proto_sha256_update(struct proto_sha256 *s, const void *data, size_t len)
{
	const uint8_t *p = data;

	s->bytes += len;
	while (len > 0) {
		size_t n = 64 - s->used < len ? 64 - s->used : len;

		memcpy(s->block + s->used, p, n);
		s->used += n;
		p += n;
		len -= n;
		if (s->used == 64) {
			sha256_block(s, s->block);
			s->used = 0;
		}
	}
}

void
proto_sha256_hex(struct proto_sha256 *s, char hex[65])
{
	static const char digits[] = "0123456789abcdef";
	uint64_t bits = s->bytes * 8;
	uint8_t pad[72] = { 0x80 };
	size_t n = (s->used < 56 ? 56 : 120) - s->used;

	for (int i = 0; i < 8; i++)
		pad[n + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
	proto_sha256_update(s, pad, n + 8);
	for (int i = 0; i < 32; i++) {
		uint8_t b = (uint8_t)(s->h[i / 4] >> (24 - 8 * (i % 4)));

		hex[2 * i] = digits[b >> 4];
		hex[2 * i + 1] = digits[b & 15];
	}
	hex[64] = '\0';
}

int
proto_sha256_fd(int fd, char hex[65])
{
	struct proto_sha256 s;
	uint8_t buf[65536];
	ssize_t n;

	proto_sha256_init(&s);
	while ((n = read(fd, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		proto_sha256_update(&s, buf, (size_t)n);
	}
	proto_sha256_hex(&s, hex);
	return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
proto_base64_encode(const void *src, size_t len, char *dst)
{
	const uint8_t *p = src;
	size_t o = 0;

	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
		    (i + 2 < len ? p[i + 2] : 0);

		dst[o++] = b64[v >> 18];
		dst[o++] = b64[(v >> 12) & 63];
		dst[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		dst[o++] = i + 2 < len ? b64[v & 63] : '=';
	}
	dst[o] = '\0';
	return o;
}

/* A character's value, or -1: computed, not searched, as payloads decode through here. */
static int
b64_value(char ch)
{
	unsigned char c = (unsigned char)ch;

	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

ssize_t
proto_base64_decode(const char *src, size_t len, void *dst)
{
	uint8_t *out = dst;
	size_t o = 0;

	if (len % 4)
		return -1;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		uint32_t x;
		bool last = i + 4 == len;

		for (int j = 0; j < 4; j++) {
			v[j] = b64_value(src[i + (size_t)j]);
			if (v[j] < 0 &&
			    !(last && j >= 2 && src[i + (size_t)j] == '=' &&
			        (j == 3 || src[i + 3] == '=')))
				return -1;
		}
		x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
		    (uint32_t)(v[2] < 0 ? 0 : v[2]) << 6 | (uint32_t)(v[3] < 0 ? 0 : v[3]);
		out[o++] = (uint8_t)(x >> 16);
		if (v[2] >= 0)
			out[o++] = (uint8_t)(x >> 8);
		if (v[3] >= 0)
			out[o++] = (uint8_t)x;
	}
	return (ssize_t)o;
}
