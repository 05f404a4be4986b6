/* SPDX-License-Identifier: MIT */
/* Strict UTF-8 (RFC 3629) for the JSON encoder, the decoder and the reader. */
#ifndef HERD_PROTO_UTF8_H
#define HERD_PROTO_UTF8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * Length of the well-formed UTF-8 sequence at s[0..n), where n >= 1 and
 * s[0] >= 0x80, or 0 when there is none: no overlong forms, no surrogates,
 * nothing past U+10FFFF, no truncated sequences.
 */
static inline size_t
utf8_seq(const unsigned char *s, size_t n)
{
	unsigned c = s[0], lo = 0x80, hi = 0xbf;
	size_t need;

	if (c >= 0xc2 && c <= 0xdf) {
		need = 1;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 2;
		if (c == 0xe0)
			lo = 0xa0; /* shorter forms are overlong */
		else if (c == 0xed)
			hi = 0x9f; /* U+D800..U+DFFF are surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 3;
		if (c == 0xf0)
			lo = 0x90;
		else if (c == 0xf4)
			hi = 0x8f; /* nothing above U+10FFFF */
	} else {
		return 0; /* a stray continuation byte, C0, C1 or F5..FF */
	}
	if (n - 1 < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t k = 2; k <= need; k++)
		if ((s[k] & 0xc0) != 0x80)
			return 0;
	return need + 1;
}

/* Bytes a JSON string cannot hold as they are ('"', '\\', controls) or that start UTF-8. */
static const unsigned char json_stop[256] = {
	[0x00 ... 0x1f] = 1,
	['"'] = 1,
	['\\'] = 1,
	[0x80 ... 0xff] = 1,
};

/*
 * The first byte of s[0..n) in json_stop, or n. Keys and names end within
 * a few bytes, a table lookup each; past 16 bytes the scan goes eight bytes
 * a step, as long strings of plain text are what payloads mostly are.
 */
static inline size_t
json_plain_run(const unsigned char *s, size_t n)
{
	const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
	size_t i = 0, head = n < 16 ? n : 16;

	while (i < head && !json_stop[s[i]])
		i++;
	if (i < head)
		return i;
	for (; n - i >= 8; i += 8) {
		uint64_t x, q, b;

		memcpy(&x, s + i, 8);
		q = x ^ (ones * '"');
		b = x ^ (ones * '\\');
		/* Any byte below 0x20, zero after an xor (a quote, a backslash), or high. */
		if ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((b - ones) & ~b) | x) & high)
			break;
	}
	while (i < n && !json_stop[s[i]])
		i++;
	return i;
}

#endif
