/* SPDX-License-Identifier: MIT */
/*
 * The JSON encoder: a json_t written straight into the caller's buffer in
 * compact form, byte for byte what json_dumps(v, JSON_COMPACT) produces.
 *
 * Why not json_dumps: for every message it grows a string buffer by
 * reallocation, keeps a hashtable of visited containers keyed by
 * snprintf("%p") to find reference cycles, then the text is copied again into
 * the output queue. Here the depth limit stops cycles as well (a cycle is
 * infinitely deep), the text lands where it will be sent from, and the checks a
 * receiver makes (depth, UTF-8, NUL) happen while writing, so the text needs no
 * second scan.
 */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "utf8.h"

/* Short escapes as jansson writes them; 0 means \u00XX. */
static const char short_escape[0x60] = {
	['\b'] = 'b',
	['\f'] = 'f',
	['\n'] = 'n',
	['\r'] = 'r',
	['\t'] = 't',
	['"'] = '"',
	['\\'] = '\\',
};

struct enc {
	struct proto_wbuf *w;
	unsigned max_depth;
	bool allow_nul;
	struct proto_bytes_out *out; /* NULL: every bytes value inline */
};

/* Makes room for n more bytes, which the caller will certainly write. */
static inline int
room(struct proto_wbuf *w, size_t n)
{
	if ((size_t)(w->end - w->p) >= n)
		return 0;
	return w->grow(w, n);
}

static inline int
put(struct proto_wbuf *w, const char *s, size_t n)
{
	int rc = room(w, n);

	if (rc < 0)
		return rc;
	memcpy(w->p, s, n);
	w->p += n;
	return 0;
}

/*
 * Writes a quoted string. Room is only ever asked for bytes that will surely
 * be written (the rest of the input plus the closing quote), so a size limit
 * enforced by grow() fails exactly when the text would pass it.
 */
static int
enc_string(struct enc *e, const char *str, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *s = (const unsigned char *)str;
	struct proto_wbuf *w = e->w;
	size_t i = 0;
	int rc;

	rc = room(w, n + 2);
	if (rc < 0)
		return rc;
	*w->p++ = '"';
	while (i < n) {
		size_t run = i, len;
		unsigned char c;

		run += json_plain_run(s + run, n - run);
		memcpy(w->p, s + i, run - i);
		w->p += run - i;
		i = run;
		if (i == n)
			break;
		c = s[i];
		if (c >= 0x80) {
			len = utf8_seq(s + i, n - i);
			if (len == 0)
				return -EILSEQ;
			memcpy(w->p, s + i, len);
			w->p += len;
			i += len;
			continue;
		}
		if (c == 0 && !e->allow_nul)
			return -EILSEQ;
		/* The escape, the rest of the input and the closing quote: all will be written. */
		rc = room(w, (short_escape[c] ? 2 : 6) + (n - i - 1) + 1);
		if (rc < 0)
			return rc;
		if (short_escape[c]) {
			w->p[0] = '\\';
			w->p[1] = short_escape[c];
			w->p += 2;
		} else {
			memcpy(w->p, "\\u00", 4);
			w->p[4] = hex[c >> 4];
			w->p[5] = hex[c & 15];
			w->p += 6;
		}
		i++;
	}
	*w->p++ = '"';
	return 0;
}

static int
enc_integer(struct proto_wbuf *w, json_int_t v)
{
	char buf[24], *p = buf + sizeof(buf);
	/* Through unsigned so INT64_MIN negates without overflow. */
	unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;

	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	return put(w, p, (size_t)(buf + sizeof(buf) - p));
}

/*
 * Reals as jansson writes them: "%.17g", the locale's decimal point turned
 * back into '.', ".0" appended when the text would read back as an integer,
 * and the exponent stripped of its '+' and leading zeros (1e+300 -> 1e300,
 * 1e-05 -> 1e-5).
 */
static int
enc_real(struct proto_wbuf *w, double v)
{
	char buf[64], *e;
	const char *point;
	int n;

	n = snprintf(buf, sizeof(buf), "%.17g", v);
	if (n < 0 || (size_t)n >= sizeof(buf) - 3)
		return -EINVAL;
	point = localeconv()->decimal_point;
	if (point[0] != '.') {
		char *pos = strchr(buf, point[0]);

		if (pos)
			*pos = '.';
	}
	if (!strchr(buf, '.') && !strchr(buf, 'e')) {
		memcpy(buf + n, ".0", 3);
		n += 2;
	}
	e = strchr(buf, 'e');
	if (e) {
		char *start = e + 1, *end = e + 2;

		if (*start == '-')
			start++;
		while (*end == '0')
			end++;
		if (end != start) {
			memmove(start, end, (size_t)(buf + n - end) + 1);
			n -= (int)(end - start);
		}
	}
	return put(w, buf, (size_t)n);
}

static int enc_value(struct enc *e, const json_t *v, unsigned depth);

/*
 * A bytes value: out of band when the peer takes descriptors and the payload
 * is worth one (a descriptor that cannot be made sends it inline), else
 * base64. Its raw string is never written as a string: it need not be text.
 */
static int
enc_bytes(struct enc *e, const char *data, size_t len)
{
	struct proto_bytes_out *out = e->out;
	char ref[96];
	int fd, rc, n;

	rc = put(e->w, "{\"" PROTO_BYTES_KEY "\":", sizeof(PROTO_BYTES_KEY) + 3);
	if (rc < 0)
		return rc;
	if (out && len >= PROTO_BYTES_FD_MIN && out->n < PROTO_MAX_FDS) {
		if (len > out->limit || out->total > out->limit - len)
			return -EMSGSIZE;
		fd = out->fd_make(data, len);
		if (fd >= 0) {
			out->fd[out->n] = fd;
			out->total += len;
			n = snprintf(ref, sizeof(ref), "{\"fd\":%u,\"len\":%zu}}", out->n++, len);
			return put(e->w, ref, (size_t)n);
		}
	}
	rc = proto_base64_write(e->w, data, len);
	return rc < 0 ? rc : put(e->w, "}", 1);
}

/* True when the object whose first member is it is a bytes value: that member alone, a string. */
static bool
is_bytes(const json_t *obj, void *it)
{
	return json_object_iter_key_len(it) == sizeof(PROTO_BYTES_KEY) - 1 &&
	    memcmp(json_object_iter_key(it), PROTO_BYTES_KEY, sizeof(PROTO_BYTES_KEY) - 1) == 0 &&
	    json_is_string(json_object_iter_value(it)) && !json_object_iter_next((json_t *)obj, it);
}

static int
enc_object(struct enc *e, const json_t *obj, unsigned depth)
{
	struct proto_wbuf *w = e->w;
	void *first_it = json_object_iter((json_t *)obj);
	bool first = true;
	int rc;

	/* Found on the way, not asked of every object: the first key's length rules most out. */
	if (first_it && is_bytes(obj, first_it)) {
		json_t *s = json_object_iter_value(first_it);

		return enc_bytes(e, json_string_value(s), json_string_length(s));
	}
	rc = put(w, "{", 1);
	/* jansson's iteration order is its dump order: insertion order since 2.8. */
	for (void *it = first_it; it && rc == 0; it = json_object_iter_next((json_t *)obj, it)) {
		if (!first) {
			rc = put(w, ",", 1);
			if (rc < 0)
				break;
		}
		first = false;
		rc = enc_string(e, json_object_iter_key(it), json_object_iter_key_len(it));
		if (rc == 0)
			rc = put(w, ":", 1);
		if (rc == 0)
			rc = enc_value(e, json_object_iter_value(it), depth);
	}
	return rc < 0 ? rc : put(w, "}", 1);
}

static int
enc_array(struct enc *e, const json_t *arr, unsigned depth)
{
	struct proto_wbuf *w = e->w;
	size_t n = json_array_size(arr);
	int rc;

	rc = put(w, "[", 1);
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (i > 0)
			rc = put(w, ",", 1);
		if (rc == 0)
			rc = enc_value(e, json_array_get(arr, i), depth);
	}
	return rc < 0 ? rc : put(w, "]", 1);
}

/* depth is the number of containers around v. */
static int
enc_value(struct enc *e, const json_t *v, unsigned depth)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		if (depth >= e->max_depth)
			return -E2BIG;
		return enc_object(e, v, depth + 1);
	case JSON_ARRAY:
		if (depth >= e->max_depth)
			return -E2BIG;
		return enc_array(e, v, depth + 1);
	case JSON_STRING:
		return enc_string(e, json_string_value(v), json_string_length(v));
	case JSON_INTEGER:
		return enc_integer(e->w, json_integer_value(v));
	case JSON_REAL:
		return enc_real(e->w, json_real_value(v));
	case JSON_TRUE:
		return put(e->w, "true", 4);
	case JSON_FALSE:
		return put(e->w, "false", 5);
	case JSON_NULL:
		return put(e->w, "null", 4);
	}
	return -EINVAL;
}

/* Writes v (borrowed) into w; see proto.h. */
int
proto_json_write(struct proto_wbuf *w, const json_t *v, unsigned max_depth, bool allow_nul)
{
	return proto_json_write_ex(w, v, max_depth, allow_nul, NULL);
}

/* Writes v (borrowed) into w, bytes values out of band into out; see proto.h. */
int
proto_json_write_ex(struct proto_wbuf *w, const json_t *v, unsigned max_depth, bool allow_nul,
    struct proto_bytes_out *out)
{
	struct enc e = { .w = w, .max_depth = max_depth, .allow_nul = allow_nul, .out = out };

	if (!v)
		return -EINVAL;
	return enc_value(&e, v, 0);
}

/* Appends n bytes of text as they are (JSON punctuation, keys known to need no escape). */
int
proto_wbuf_put(struct proto_wbuf *w, const char *s, size_t n)
{
	return put(w, s, n);
}

/* Writes s[0..n) as a JSON string; see proto.h. */
int
proto_json_write_string(struct proto_wbuf *w, const char *s, size_t n)
{
	struct enc e = { .w = w, .max_depth = HERD_MAX_DEPTH, .allow_nul = false };

	return enc_string(&e, s, n);
}

/* Writes v as a JSON integer. */
int
proto_json_write_int(struct proto_wbuf *w, json_int_t v)
{
	return enc_integer(w, v);
}

/* A fixed buffer: there is no more room. */
static int
fixed_grow(struct proto_wbuf *w, size_t n)
{
	return -ENOSPC;
}

/* Encodes into buf; see proto.h. */
ssize_t
proto_json_encode(const json_t *v, char *buf, size_t size)
{
	struct proto_wbuf w = { .p = buf, .end = buf, .grow = fixed_grow };
	int rc;

	if (size == 0)
		return -ENOSPC;
	w.end = buf + size - 1; /* keep a byte for the terminating NUL */
	rc = proto_json_write(&w, v, HERD_MAX_DEPTH, true);
	if (rc < 0)
		return rc;
	*w.p = '\0';
	return w.p - buf;
}

/* A heap buffer that doubles; ctx is the allocation, or NULL while it is the caller's. */
static int
heap_grow(struct proto_wbuf *w, size_t n)
{
	char *old = w->ctx ? w->ctx : w->start;
	size_t used = (size_t)(w->p - old), size = (size_t)(w->end - old) * 2 + 64;
	char *p;

	if (n > SIZE_MAX / 2 - used)
		return -ENOMEM;
	while (size <= used + n) /* one byte more, for the NUL */
		size *= 2;
	p = w->ctx ? realloc(w->ctx, size) : malloc(size);
	if (!p)
		return -ENOMEM;
	if (!w->ctx && used)
		memcpy(p, old, used);
	w->ctx = p;
	w->start = p;
	w->p = p + used;
	w->end = p + size - 1; /* keep a byte for the terminating NUL */
	return 0;
}

/* An empty buffer on the heap; see proto.h. */
void
proto_wbuf_heap(struct proto_wbuf *w)
{
	*w = (struct proto_wbuf){ .grow = heap_grow };
}

/* Encodes into a new string; see proto.h. */
char *
proto_json_dumps(const json_t *v)
{
	char local[256], *s;
	struct proto_wbuf w = {
		.start = local, .p = local, .end = local + sizeof(local) - 1, .grow = heap_grow
	};
	size_t len;

	if (proto_json_write(&w, v, HERD_MAX_DEPTH, true) < 0) {
		free(w.ctx);
		return NULL;
	}
	len = (size_t)(w.p - w.start);
	if (w.ctx) {
		*w.p = '\0';
		return w.ctx;
	}
	s = malloc(len + 1);
	if (s) {
		memcpy(s, local, len);
		s[len] = '\0';
	}
	return s;
}
