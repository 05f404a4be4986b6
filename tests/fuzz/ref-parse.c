/* SPDX-License-Identifier: MIT */
/*
 * The reference message parser (see ref-parse.h). Its UTF-8 check decodes
 * each code point and tests ranges, a different method from proto's, so the
 * two cannot share a mistake.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "ref-parse.h"

/* True when s[0..len) is valid UTF-8. */
static bool
ref_utf8_valid(const unsigned char *s, size_t len)
{
	static const unsigned long min_cp[] = { 0, 0x80, 0x800, 0x10000 };

	for (size_t i = 0; i < len;) {
		unsigned c = s[i];
		size_t n;
		unsigned long cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= n)
			return false;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if (cp < min_cp[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

/* True when the digits d[0..n) (no sign) name a number past json_int_t's range. */
static bool
ref_past_int64(const char *d, size_t n, bool neg)
{
	const char *limit = neg ? "9223372036854775808" : "9223372036854775807";
	size_t k = strlen(limit);

	return n > k || (n == k && memcmp(d, limit, k) > 0);
}

/*
 * A copy of text in which every integer literal past json_int_t's range gets
 * "e0" appended, so that json_loadb reads it as the real strtod makes of it,
 * as the reader does (PROTO_DECODE_BIG_INT_REAL). NULL when there is none.
 * Found by scanning tokens, not by the decoder's overflow arithmetic.
 */
static char *
ref_big_ints_as_reals(const char *text, size_t len, size_t *ret_len)
{
	char *out = NULL;
	size_t o = 0, copied = 0, i = 0;
	bool in_string = false;

	while (i < len) {
		size_t end, digits;
		bool neg;

		if (in_string) {
			if (text[i] == '\\')
				i++;
			else if (text[i] == '"')
				in_string = false;
			i++;
			continue;
		}
		if (text[i] == '"') {
			in_string = true;
			i++;
			continue;
		}
		if (text[i] != '-' && (text[i] < '0' || text[i] > '9')) {
			i++;
			continue;
		}
		neg = text[i] == '-';
		end = i + neg;
		while (end < len && text[end] >= '0' && text[end] <= '9')
			end++;
		digits = end - i - neg;
		/* Only a whole integer: no fraction or exponent follows. */
		if (digits > 0 &&
		    !(end < len && (text[end] == '.' || text[end] == 'e' || text[end] == 'E')) &&
		    ref_past_int64(text + i + neg, digits, neg)) {
			if (!out && !(out = malloc(len * 2 + 1)))
				return NULL;
			memcpy(out + o, text + copied, end - copied);
			o += end - copied;
			memcpy(out + o, "e0", 2);
			o += 2;
			copied = end;
		}
		i = end;
	}
	if (out) {
		memcpy(out + o, text + copied, len - copied);
		o += len - copied;
		*ret_len = o;
	}
	return out;
}

int
ref_parse(const char *text, size_t len, size_t max_message, unsigned max_depth, json_t **ret)
{
	json_error_t jerr;
	json_t *v;

	*ret = NULL;
	if (len > max_message)
		return HERD_E_MESSAGE_TOO_LARGE;
	if (memchr(text, '\0', len))
		return HERD_E_NUL_BYTE;
	if (!ref_utf8_valid((const unsigned char *)text, len))
		return HERD_E_INVALID_UTF8;
	switch (proto_check_text(text, len, max_depth)) {
	case -E2BIG:
		return HERD_E_TOO_DEEP;
	case -EILSEQ:
		return HERD_E_NUL_BYTE;
	default:
		break;
	}
	v = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!v && json_error_code(&jerr) == json_error_numeric_overflow) {
		size_t n;
		char *real = ref_big_ints_as_reals(text, len, &n);

		if (real) {
			v = json_loadb(real, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
			free(real);
		}
	}
	if (!v) {
		switch (json_error_code(&jerr)) {
		case json_error_duplicate_key:
			return HERD_E_DUPLICATE_KEY;
		case json_error_invalid_utf8:
			return HERD_E_INVALID_UTF8;
		case json_error_null_character:
		case json_error_null_byte_in_key:
			return HERD_E_NUL_BYTE;
		case json_error_out_of_memory:
			return HERD_E_INTERNAL_ERROR;
		default:
			return HERD_E_PARSE_ERROR;
		}
	}
	if (!json_is_object(v)) {
		json_decref(v);
		return HERD_E_INVALID_REQUEST;
	}
	*ret = v;
	return 0;
}
