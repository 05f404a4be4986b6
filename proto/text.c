/* SPDX-License-Identifier: MIT */
/*
 * Text for the wire and for logs. A peer's strings are valid UTF-8 when they
 * arrive, but a byte budget can cut one inside a character, and a worker's own
 * code may hand over any bytes: every text built from them goes through here
 * so that encoding it cannot fail and a log line cannot be forged.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "utf8.h"

/* U+FFFD REPLACEMENT CHARACTER, for a byte that starts no character. */
static const char replacement[] = "\xef\xbf\xbd";

/* Length of the character at s[0..n) (n >= 1), or 0 if s[0] starts none or is NUL. */
static size_t
char_len(const unsigned char *s, size_t n)
{
	if (s[0] == 0)
		return 0;
	return s[0] < 0x80 ? 1 : utf8_seq(s, n);
}

/* True when s[0..len) is UTF-8 the wire accepts (no NUL, no invalid sequence). */
bool
proto_text_valid(const char *s, size_t len)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i, n;

	for (i = 0; i < len; i += n) {
		n = char_len(u + i, len - i);
		if (n == 0)
			return false;
	}
	return true;
}

/* Precision for "%.*s" printing at most max bytes of s, not ending inside a character. */
int
proto_text_prec(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);

	if (n > max) {
		/* s[max] is the first byte left out: a continuation byte means a character is cut. */
		n = max;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	return n > INT_MAX ? INT_MAX : (int)n;
}

/* A log line's spelling of byte c: \n, \r, \t or \xNN. */
static const char *
escape(char esc[5], unsigned char c)
{
	if (c == '\n')
		return "\\n";
	if (c == '\r')
		return "\\r";
	if (c == '\t')
		return "\\t";
	snprintf(esc, 5, "\\x%02x", c);
	return esc;
}

/*
 * Copies s[0..len) into dst character by character, ending on a character
 * within size - 1 bytes. A byte that starts no character becomes U+FFFD, or
 * for a log line an escape, as do control characters (C0, DEL, C1) there.
 */
static size_t
text_walk(char *dst, size_t size, const char *s, size_t len, bool log)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, o = 0, n, out_len;
	const char *out;
	char esc[5];

	if (size == 0)
		return 0;
	while (i < len) {
		n = char_len(u + i, len - i);
		out = s + i;
		out_len = n;
		if (log &&
		    (n == 0 || u[i] < 0x20 || u[i] == 0x7f ||
		        (n == 2 && u[i] == 0xc2 && u[i + 1] < 0xa0))) {
			out = escape(esc, n == 2 ? u[i + 1] : u[i]);
			out_len = strlen(out);
		} else if (n == 0) {
			out = replacement;
			out_len = sizeof(replacement) - 1;
		}
		if (o + out_len > size - 1)
			break;
		memcpy(dst + o, out, out_len);
		o += out_len;
		i += n ? n : 1;
	}
	dst[o] = '\0';
	return o;
}

/* Copies s[0..len) as valid text; see proto.h. */
size_t
proto_text_copy(char *dst, size_t size, const char *s, size_t len)
{
	return text_walk(dst, size, s, len, false);
}

/* A JSON string of s as valid text of at most max bytes; see proto.h. */
json_t *
proto_text_string(const char *s, size_t max)
{
	size_t len = strlen(s), size;
	char *buf;
	json_t *v;

	if (len <= max && proto_text_valid(s, len))
		return json_stringn(s, len);
	/* Each byte may become three; past max bytes nothing is kept. */
	size = (len < max ? len * 3 : max) + 1;
	buf = malloc(size);
	if (!buf)
		return NULL;
	v = json_stringn(buf, proto_text_copy(buf, size, s, len));
	free(buf);
	return v;
}

/* Escapes s[0..len) for one log line; see proto.h. */
size_t
proto_text_escape(char *dst, size_t size, const char *s, size_t len)
{
	return text_walk(dst, size, s, len, true);
}

/* Formats into dst as valid text; see proto.h. */
size_t
proto_text_vformat(char *dst, size_t size, const char *fmt, va_list ap)
{
	char *text = NULL;
	size_t n;
	int len;

	if (size == 0)
		return 0;
	len = vasprintf(&text, fmt, ap);
	if (len < 0)
		return proto_text_copy(dst, size, "(out of memory)", 15);
	n = proto_text_copy(dst, size, text, (size_t)len);
	free(text);
	return n;
}

/* Fills an incoming message's error; see proto.h. */
void
proto_error_setf(struct proto_error *err, int code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return;
	err->code = code;
	va_start(ap, fmt);
	proto_text_vformat(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
}

/* snprintf() whose result is valid text; see proto.h. */
size_t
proto_text_format(char *dst, size_t size, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	n = proto_text_vformat(dst, size, fmt, ap);
	va_end(ap);
	return n;
}
