/* SPDX-License-Identifier: MIT */
/*
 * The JSON decoder: one text into json_t values in one pass, accepting
 * exactly what json_loadb(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES) accepts
 * and giving equal values, while enforcing herd's own rules as it goes:
 * nesting depth (checked before a container is allocated), no NUL byte or
 * \u0000, strict UTF-8 in strings.
 *
 * Why not json_loadb: its lexer reads through a stream with a function call
 * and a UTF-8 check per byte and copies every token into a growing string
 * buffer, and herd scanned the text once more beforehand. Here strings
 * without escapes go from the text straight to jansson, and numbers are read
 * in place.
 */
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "utf8.h"

/* jansson's own limit (JSON_PARSER_MAX_DEPTH), counted in values: keep refusing what it refuses. */
#define DEC_JANSSON_DEPTH 2048u

struct dec {
	const unsigned char *p; /* next byte */
	const unsigned char *end;
	const unsigned char *text;
	unsigned depth; /* containers open around p */
	unsigned max_depth;
	/* Strings with escapes are decoded here, used stack-wise (a key waits for its value). */
	char *scratch;
	size_t scratch_len, scratch_cap;
	bool scratch_heap;
	struct proto_error *err;
	bool big_int_real; /* an integer past json_int_t becomes a real, not a refusal */
	const struct proto_line_bytes *bytes; /* NULL: "$bytes" objects stay as they are */
	size_t bytes_total; /* payload bytes read from descriptors so far */
	char local[256];
};

static void *__attribute__((format(printf, 4, 5)))
dec_fail(struct dec *d, int code, const unsigned char *at, const char *fmt, ...)
{
	struct proto_error *err = d->err;
	va_list ap;
	int n;

	err->code = code;
	va_start(ap, fmt);
	n = vsnprintf(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(err->text))
		snprintf(err->text + n, sizeof(err->text) - (size_t)n, " at byte %zu",
		    (size_t)(at - d->text));
	return NULL;
}

static inline void
skip_space(struct dec *d)
{
	const unsigned char *p = d->p;

	/* Compact text has none: one test for the usual case. */
	if (p<d->end && * p> ' ')
		return;
	while (p < d->end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	d->p = p;
}

static void *
unexpected(struct dec *d, const char *wanted)
{
	if (d->p == d->end)
		return dec_fail(d, HERD_E_PARSE_ERROR, d->p, "unexpected end of text, %s", wanted);
	if (*d->p == '\0')
		return dec_fail(d, HERD_E_NUL_BYTE, d->p, "NUL byte");
	if (*d->p >= 0x80 && utf8_seq(d->p, (size_t)(d->end - d->p)) == 0)
		return dec_fail(d, HERD_E_INVALID_UTF8, d->p, "invalid UTF-8");
	return dec_fail(d, HERD_E_PARSE_ERROR, d->p, "%s", wanted);
}

/* Room for n more bytes of scratch. */
static bool
scratch_reserve(struct dec *d, size_t n)
{
	size_t cap = d->scratch_cap;
	char *p;

	if (cap - d->scratch_len >= n)
		return true;
	if (n > SIZE_MAX / 2 - d->scratch_len)
		return false;
	while (cap - d->scratch_len < n)
		cap *= 2;
	if (d->scratch_heap) {
		p = realloc(d->scratch, cap);
		if (!p)
			return false;
	} else {
		p = malloc(cap);
		if (!p)
			return false;
		memcpy(p, d->scratch, d->scratch_len);
		d->scratch_heap = true;
	}
	d->scratch = p;
	d->scratch_cap = cap;
	return true;
}

static int
hex4(const unsigned char *s)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		unsigned c = s[i];

		if (c >= '0' && c <= '9')
			c -= '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			c = (c | 0x20) - 'a' + 10;
		else
			return -1;
		v = v * 16 + (int)c;
	}
	return v;
}

static size_t
utf8_put(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* The byte a one-letter escape stands for (after "\\": n, t, ...); 0 for u and for an invalid letter. */
static char
simple_escape(unsigned char c)
{
	switch (c) {
	case '"':
	case '\\':
	case '/':
		return (char)c;
	case 'b':
		return '\b';
	case 'f':
		return '\f';
	case 'n':
		return '\n';
	case 'r':
		return '\r';
	case 't':
		return '\t';
	default:
		return 0;
	}
}

/*
 * The escape at p ("\\" already seen, p at the next byte) decoded into
 * scratch. Returns the byte after it, or NULL with the error set.
 */
static const unsigned char *
dec_escape(struct dec *d, const unsigned char *p)
{
	const unsigned char *esc = p - 1;
	int cp, lo;
	char c;

	if (p == d->end)
		return dec_fail(d, HERD_E_PARSE_ERROR, p, "unterminated string");
	if (!scratch_reserve(d, 4))
		return dec_fail(d, HERD_E_INTERNAL_ERROR, p, "out of memory");
	if ((c = simple_escape(*p)) != 0) {
		d->scratch[d->scratch_len++] = c;
		return p + 1;
	}
	if (*p != 'u')
		return dec_fail(d, HERD_E_PARSE_ERROR, esc, "invalid escape");
	if (d->end - p < 5 || (cp = hex4(p + 1)) < 0)
		return dec_fail(d, HERD_E_PARSE_ERROR, esc, "invalid \\u escape");
	p += 5;
	if (cp == 0)
		return dec_fail(d, HERD_E_NUL_BYTE, esc, "escaped NUL (\\u0000)");
	if (cp >= 0xdc00 && cp <= 0xdfff)
		return dec_fail(d, HERD_E_PARSE_ERROR, esc, "lone low surrogate \\u%04X", cp);
	if (cp >= 0xd800 && cp <= 0xdbff) {
		/* A high surrogate must be followed by an escaped low one. */
		if (d->end - p < 6 || p[0] != '\\' || p[1] != 'u' || (lo = hex4(p + 2)) < 0 ||
		    lo < 0xdc00 || lo > 0xdfff)
			return dec_fail(
			    d, HERD_E_PARSE_ERROR, esc, "lone high surrogate \\u%04X", cp);
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		p += 6;
	}
	d->scratch_len += utf8_put(d->scratch + d->scratch_len, (unsigned)cp);
	return p;
}

/*
 * The string at d->p (its opening quote). Without escapes *ret points into the
 * text; with them it points into scratch, which the caller pops back to
 * *mark once done with it. Returns false with the error set.
 */
static bool
dec_string(struct dec *d, const char **ret, size_t *len, size_t *mark)
{
	const unsigned char *s = d->p + 1, *q = s, *end = d->end;
	size_t n;

	*mark = d->scratch_len;
	for (;;) {
		q += json_plain_run(q, (size_t)(end - q));
		if (q == end) {
			dec_fail(d, HERD_E_PARSE_ERROR, d->p, "unterminated string");
			return false;
		}
		if (*q == '"') {
			*ret = (const char *)s;
			*len = (size_t)(q - s);
			d->p = q + 1;
			return true;
		}
		if (*q < 0x80)
			break;
		n = utf8_seq(q, (size_t)(end - q));
		if (n == 0) {
			dec_fail(d, HERD_E_INVALID_UTF8, q, "invalid UTF-8");
			return false;
		}
		q += n;
	}

	/*
	 * Escapes (or a control character): decode from here on into scratch.
	 * s..q are ordinary bytes not yet copied; q is at a byte that stopped the scan.
	 */
	for (;;) {
		if (!scratch_reserve(d, (size_t)(q - s))) {
			dec_fail(d, HERD_E_INTERNAL_ERROR, q, "out of memory");
			return false;
		}
		memcpy(d->scratch + d->scratch_len, s, (size_t)(q - s));
		d->scratch_len += (size_t)(q - s);
		if (q == end) {
			dec_fail(d, HERD_E_PARSE_ERROR, d->p, "unterminated string");
			return false;
		}
		if (*q == '"')
			break;
		if (*q == '\\') {
			q = dec_escape(d, q + 1);
			if (!q)
				return false;
			s = q;
		} else if (*q < 0x20) {
			if (*q == 0)
				dec_fail(d, HERD_E_NUL_BYTE, q, "NUL byte");
			else
				dec_fail(d, HERD_E_PARSE_ERROR, q,
				    "control character 0x%02x in string", *q);
			return false;
		} else {
			n = utf8_seq(q, (size_t)(end - q));
			if (n == 0) {
				dec_fail(d, HERD_E_INVALID_UTF8, q, "invalid UTF-8");
				return false;
			}
			s = q;
			q += n;
		}
		q += json_plain_run(q, (size_t)(end - q));
	}
	*ret = d->scratch + *mark;
	*len = d->scratch_len - *mark;
	d->p = q + 1;
	return true;
}

static inline bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* A real as jansson reads one: strtod in the C locale's sense, overflow refused. */
static json_t *
dec_real(struct dec *d, const unsigned char *start, size_t n)
{
	char local[64], *buf = local;
	const char *point = localeconv()->decimal_point;
	double v;
	json_t *r;

	if (n >= sizeof(local)) {
		buf = malloc(n + 1);
		if (!buf)
			return dec_fail(d, HERD_E_INTERNAL_ERROR, start, "out of memory");
	}
	memcpy(buf, start, n);
	buf[n] = '\0';
	if (point[0] != '.') {
		char *dot = strchr(buf, '.');

		if (dot)
			*dot = point[0];
	}
	errno = 0;
	v = strtod(buf, NULL);
	if (buf != local)
		free(buf);
	if (errno == ERANGE && isinf(v))
		return dec_fail(d, HERD_E_PARSE_ERROR, start, "real number overflow");
	r = json_real(v);
	return r ? r : dec_fail(d, HERD_E_INTERNAL_ERROR, start, "out of memory");
}

/* A number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static json_t *
dec_number(struct dec *d)
{
	const unsigned char *start = d->p, *p = d->p, *end = d->end;
	bool neg = false, real = false;
	unsigned long long u = 0;
	json_t *v;

	if (*p == '-') {
		neg = true;
		p++;
	}
	if (p == end || !is_digit(*p))
		return dec_fail(d, HERD_E_PARSE_ERROR, start, "invalid number");
	if (*p == '0') {
		p++;
		if (p < end && is_digit(*p))
			return dec_fail(d, HERD_E_PARSE_ERROR, start, "leading zero in number");
	} else {
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && *p == '.') {
		real = true;
		if (++p == end || !is_digit(*p))
			return dec_fail(d, HERD_E_PARSE_ERROR, start, "invalid number");
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		real = true;
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !is_digit(*p))
			return dec_fail(d, HERD_E_PARSE_ERROR, start, "invalid number");
		while (p < end && is_digit(*p))
			p++;
	}
	d->p = p;
	if (real)
		return dec_real(d, start, (size_t)(p - start));

	/* Integers past json_int_t are refused, as jansson's strtoll check does. */
	for (const unsigned char *q = start + neg; q < p; q++) {
		unsigned digit = *q - '0';

		if (u > ((neg ? 0x8000000000000000ull : 0x7fffffffffffffffull) - digit) / 10)
			return d->big_int_real
			    ? dec_real(d, start, (size_t)(p - start))
			    : dec_fail(d, HERD_E_PARSE_ERROR, start, "integer out of range");
		u = u * 10 + digit;
	}
	v = json_integer(neg ? (json_int_t)(0ull - u) : (json_int_t)u);
	return v ? v : dec_fail(d, HERD_E_INTERNAL_ERROR, start, "out of memory");
}

static json_t *dec_value(struct dec *d);

/* Steps over a container's opening bracket; true, with close consumed too, when it is empty. */
static bool
dec_open(struct dec *d, unsigned char close)
{
	d->p++;
	skip_space(d);
	if (d->p < d->end && *d->p == close) {
		d->p++;
		return true;
	}
	return false;
}

/* Refuses a "$bytes" value (HERD_E_INVALID_BYTES) and drops obj. */
static void *__attribute__((format(printf, 4, 5)))
bytes_fail(struct dec *d, json_t *obj, const unsigned char *at, const char *fmt, ...)
{
	char text[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	json_decref(obj);
	return dec_fail(d, HERD_E_INVALID_BYTES, at, "%s", text);
}

/*
 * The object {"$bytes": X} just read (obj, stolen) becomes the raw bytes
 * value: X is base64, or {"fd": I, "len": N} naming the I-th descriptor that
 * came with the line, which must hold exactly N bytes. Every payload of a
 * line counts towards the line's limit, as if it were inline.
 */
static json_t *
dec_bytes(struct dec *d, json_t *obj, const unsigned char *at)
{
	json_t *x = json_object_get(obj, PROTO_BYTES_KEY), *v = NULL, *fd, *len;
	json_int_t i, n;
	int rc;

	if (json_is_string(x)) {
		rc = proto_bytes_from_base64(json_string_value(x), json_string_length(x), &v);
		if (rc == -ENOMEM)
			return bytes_fail(d, obj, at, "out of memory");
		if (rc < 0)
			return bytes_fail(d, obj, at, "$bytes is not padded base64");
		json_decref(obj);
		return v;
	}
	fd = json_object_get(x, "fd");
	len = json_object_get(x, "len");
	if (json_object_size(x) != 2 || !json_is_integer(fd) || !json_is_integer(len))
		return bytes_fail(
		    d, obj, at, "$bytes is neither base64 nor {\"fd\": I, \"len\": N}");
	i = json_integer_value(fd);
	n = json_integer_value(len);
	if (i < 0 || (uint64_t)i >= d->bytes->nfds)
		return bytes_fail(d, obj, at, "$bytes names fd %lld, but the line came with %u",
		    (long long)i, d->bytes->nfds);
	if (n < 0 || (uint64_t)n > d->bytes->limit - d->bytes_total)
		return bytes_fail(d, obj, at,
		    "$bytes of %lld bytes passes the limit of %zu a message", (long long)n,
		    d->bytes->limit);
	d->bytes_total += (size_t)n;
	json_decref(obj);
	return d->bytes->in->fd_read(d->bytes->fds[i], (size_t)n, d->err);
}

/*
 * jansson looks a key up before it reads the value, so a duplicate key is the
 * error even when what follows it is broken too. Here the lookup is saved on
 * the good path (a replaced key leaves the size unchanged) and made only when
 * the rest of the member failed.
 */
static json_t *
dec_object(struct dec *d)
{
	json_t *obj = json_object(), *v;
	const unsigned char *at = NULL;
	const char *key = NULL;
	size_t len = 0, mark = 0, members = 0;
	bool key_in_scratch = false; /* else in the text */

	if (!obj)
		return dec_fail(d, HERD_E_INTERNAL_ERROR, d->p, "out of memory");
	if (dec_open(d, '}'))
		return obj;
	for (;;) {
		key = NULL;
		if (d->p == d->end || *d->p != '"') {
			unexpected(d, "string or '}' expected");
			goto fail;
		}
		at = d->p;
		if (!dec_string(d, &key, &len, &mark)) {
			key = NULL;
			goto fail;
		}
		key_in_scratch = d->scratch_len > mark;
		skip_space(d);
		if (d->p == d->end || *d->p != ':') {
			unexpected(d, "':' expected");
			goto fail;
		}
		d->p++;
		v = dec_value(d);
		if (!v)
			goto fail;
		if (key_in_scratch)
			key = d->scratch + mark; /* scratch may have moved */
		if (json_object_setn_new_nocheck(obj, key, len, v) < 0) {
			dec_fail(d, HERD_E_INTERNAL_ERROR, at, "out of memory");
			key = NULL;
			goto fail;
		}
		if (json_object_size(obj) != ++members) {
			dec_fail(d, HERD_E_DUPLICATE_KEY, at, "duplicate object key");
			key = NULL;
			goto fail;
		}
		d->scratch_len = mark;
		skip_space(d);
		if (d->p < d->end && *d->p == ',') {
			d->p++;
			skip_space(d);
			continue;
		}
		if (d->p < d->end && *d->p == '}') {
			d->p++;
			if (d->bytes && members == 1 && len == sizeof(PROTO_BYTES_KEY) - 1 &&
			    memcmp(key, PROTO_BYTES_KEY, len) == 0)
				return dec_bytes(d, obj, at);
			return obj;
		}
		key = NULL;
		unexpected(d, "',' or '}' expected");
		goto fail;
	}
fail:
	if (key) {
		if (key_in_scratch)
			key = d->scratch + mark;
		if (json_object_getn(obj, key, len))
			dec_fail(d, HERD_E_DUPLICATE_KEY, at, "duplicate object key");
	}
	json_decref(obj);
	return NULL;
}

static json_t *
dec_array(struct dec *d)
{
	json_t *arr = json_array(), *v;

	if (!arr)
		return dec_fail(d, HERD_E_INTERNAL_ERROR, d->p, "out of memory");
	if (dec_open(d, ']'))
		return arr;
	for (;;) {
		v = dec_value(d);
		if (!v)
			break;
		if (json_array_append_new(arr, v) < 0) {
			dec_fail(d, HERD_E_INTERNAL_ERROR, d->p, "out of memory");
			break;
		}
		skip_space(d);
		if (d->p < d->end && *d->p == ',') {
			d->p++;
			continue;
		}
		if (d->p < d->end && *d->p == ']') {
			d->p++;
			return arr;
		}
		unexpected(d, "',' or ']' expected");
		break;
	}
	json_decref(arr);
	return NULL;
}

static json_t *
dec_literal(struct dec *d, const char *word, size_t n, json_t *v)
{
	if ((size_t)(d->end - d->p) < n || memcmp(d->p, word, n) != 0)
		return unexpected(d, "invalid token");
	d->p += n;
	return v;
}

/* The value at d->p, after any whitespace. */
static json_t *
dec_value(struct dec *d)
{
	const char *s;
	size_t len, mark;
	json_t *v;

	skip_space(d);
	if (d->p == d->end)
		return unexpected(d, "value expected");
	/* jansson counts every value, herd's limit counts containers. */
	if (d->depth + 1 > DEC_JANSSON_DEPTH)
		return dec_fail(d, HERD_E_PARSE_ERROR, d->p, "maximum parsing depth reached");
	switch (*d->p) {
	case '{':
	case '[':
		if (d->depth + 1 > d->max_depth)
			return dec_fail(
			    d, HERD_E_TOO_DEEP, d->p, "nesting deeper than %u", d->max_depth);
		d->depth++;
		v = *d->p == '{' ? dec_object(d) : dec_array(d);
		d->depth--;
		return v;
	case '"':
		if (!dec_string(d, &s, &len, &mark))
			return NULL;
		v = json_stringn_nocheck(s, len);
		d->scratch_len = mark;
		return v ? v : dec_fail(d, HERD_E_INTERNAL_ERROR, d->p, "out of memory");
	case '-':
	case '0' ... '9':
		return dec_number(d);
	case 't':
		return dec_literal(d, "true", 4, json_true());
	case 'f':
		return dec_literal(d, "false", 5, json_false());
	case 'n':
		return dec_literal(d, "null", 4, json_null());
	default:
		return unexpected(d, "invalid token");
	}
}

/* Decodes one JSON text; see proto.h. */
int
proto_json_decode(
    const char *text, size_t len, unsigned max_depth, json_t **ret, struct proto_error *err)
{
	return proto_json_decode_ex(text, len, max_depth, 0, ret, err);
}

/* Decodes one JSON text with flags; see proto.h. */
int
proto_json_decode_ex(const char *text, size_t len, unsigned max_depth, unsigned flags, json_t **ret,
    struct proto_error *err)
{
	return proto_json_decode_bytes(text, len, max_depth, flags, NULL, ret, err);
}

/* Decodes one JSON text with flags, bytes values read through bytes; see proto.h. */
int
proto_json_decode_bytes(const char *text, size_t len, unsigned max_depth, unsigned flags,
    const struct proto_line_bytes *bytes, json_t **ret, struct proto_error *err)
{
	struct proto_error spare;
	struct dec d; /* not zeroed as a whole: local is scratch space */
	json_t *v;

	d.p = d.text = (const unsigned char *)text;
	d.end = d.text + len;
	d.depth = 0;
	d.max_depth = max_depth;
	d.scratch = d.local;
	d.scratch_len = 0;
	d.scratch_cap = sizeof(d.local);
	d.scratch_heap = false;
	d.err = err ? err : &spare;
	d.big_int_real = flags & PROTO_DECODE_BIG_INT_REAL;
	d.bytes = bytes;
	d.bytes_total = 0;
	v = dec_value(&d);
	if (v) {
		skip_space(&d);
		if (d.p != d.end) {
			unexpected(&d, "end of text expected");
			json_decref(v);
			v = NULL;
		}
	}
	if (d.scratch_heap)
		free(d.scratch);
	*ret = v;
	return v ? 0 : -EBADMSG;
}
