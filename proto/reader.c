/* SPDX-License-Identifier: MIT */
/*
 * The incremental line reader and the checks every incoming message passes:
 * size, NUL bytes, UTF-8, nesting depth. Each check has its own error code so
 * a peer learns exactly what it did wrong.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "utf8.h"

#define READER_MIN_CAP 4096u

/* Offset of the first byte that is not strict UTF-8 (see utf8.h), or len. */
static size_t
utf8_check(const unsigned char *s, size_t len)
{
	size_t i = 0, n;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		n = utf8_seq(s + i, len - i);
		if (n == 0)
			return i;
		i += n;
	}
	return len;
}

/*
 * One pass over the text outside and inside strings: counts bracket depth
 * (brackets inside strings do not count) and, when asked, finds the escape
 * \u0000, which jansson would otherwise turn into a NUL inside a string.
 * Returns 0, HERD_E_TOO_DEEP or HERD_E_NUL_BYTE with *pos at the culprit.
 */
static int
scan_text(const char *s, size_t len, unsigned max_depth, bool check_nul, size_t *pos)
{
	unsigned depth = 0;
	bool in_string = false;

	for (size_t i = 0; i < len; i++) {
		char c = s[i];

		if (in_string) {
			if (c == '"') {
				in_string = false;
			} else if (c == '\\') {
				if (check_nul && len - i > 5 && s[i + 1] == 'u' &&
				    memcmp(s + i + 2, "0000", 4) == 0) {
					*pos = i;
					return HERD_E_NUL_BYTE;
				}
				i++; /* the escaped character cannot end the string */
			}
			continue;
		}
		switch (c) {
		case '"':
			in_string = true;
			break;
		case '[':
		case '{':
			if (++depth > max_depth) {
				*pos = i;
				return HERD_E_TOO_DEEP;
			}
			break;
		case ']':
		case '}':
			/* Unbalanced text is jansson's to report. */
			if (depth > 0)
				depth--;
			break;
		default:
			break;
		}
	}
	return 0;
}

/* Checks nesting depth only; brackets inside strings do not count. */
int
proto_check_depth(const char *text, size_t len, unsigned max_depth)
{
	size_t pos;

	return scan_text(text, len, max_depth, false, &pos) ? -E2BIG : 0;
}

/* Checks an encoded text for what a peer would refuse: too deep, or \u0000. */
int
proto_check_text(const char *text, size_t len, unsigned max_depth)
{
	size_t pos;

	switch (scan_text(text, len, max_depth, true, &pos)) {
	case HERD_E_TOO_DEEP:
		return -E2BIG;
	case HERD_E_NUL_BYTE:
		return -EILSEQ;
	default:
		return 0;
	}
}

/*
 * Why a message was refused, as the checks ran before the decoder was folded
 * into one pass: a NUL byte, then invalid UTF-8 anywhere in the text, then
 * nesting or \u0000 in text order, and only then the parser's own verdict.
 * Run only on failure, so a peer keeps getting the same code for the same
 * text. Returns true with *err filled when one of those checks fails.
 */
static bool
classify_refusal(const char *text, size_t len, unsigned max_depth, struct proto_error *err)
{
	const char *nul = memchr(text, '\0', len);
	size_t pos;
	int code;

	if (nul) {
		proto_error_setf(
		    err, HERD_E_NUL_BYTE, "NUL byte at byte %zu", (size_t)(nul - text));
		return true;
	}
	pos = utf8_check((const unsigned char *)text, len);
	if (pos < len) {
		proto_error_setf(err, HERD_E_INVALID_UTF8, "invalid UTF-8 at byte %zu", pos);
		return true;
	}
	code = scan_text(text, len, max_depth, true, &pos);
	if (code == HERD_E_TOO_DEEP) {
		proto_error_setf(err, code, "nesting deeper than %u at byte %zu", max_depth, pos);
		return true;
	}
	if (code == HERD_E_NUL_BYTE) {
		proto_error_setf(err, code, "escaped NUL (\\u0000) at byte %zu", pos);
		return true;
	}
	return false;
}

static void
close_fds(const int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

/*
 * Parses one message text in one pass (json-dec.c). The decoder enforces the
 * depth limit before it allocates a container, so no text nests it deeper
 * than max_depth.
 */
static int
parse_line(const char *text, size_t len, size_t max_message, unsigned max_depth,
    const struct proto_line_bytes *bytes, json_t **ret, struct proto_error *err)
{
	struct proto_error derr;
	json_t *v;

	*ret = NULL;
	if (len > max_message) {
		proto_error_setf(
		    err, HERD_E_MESSAGE_TOO_LARGE, "message longer than %zu bytes", max_message);
		return -EBADMSG;
	}
	if (proto_json_decode_bytes(
	        text, len, max_depth, PROTO_DECODE_BIG_INT_REAL, bytes, &v, &derr) < 0) {
		if (!classify_refusal(text, len, max_depth, err) && err)
			*err = derr;
		return -EBADMSG;
	}
	if (!json_is_object(v)) {
		proto_error_setf(err, HERD_E_INVALID_REQUEST, "a message must be a JSON object");
		json_decref(v);
		return -EBADMSG;
	}
	*ret = v;
	return 0;
}

int
proto_parse(const char *text, size_t len, size_t max_message, unsigned max_depth, json_t **ret,
    struct proto_error *err)
{
	return parse_line(text, len, max_message, max_depth, NULL, ret, err);
}

/* A line of the reader, with the descriptors that came with it when bytes values are read. */
static int
reader_parse(struct proto_reader *r, const char *line, size_t n, const int *fds, unsigned nfds,
    json_t **ret, struct proto_error *err)
{
	struct proto_line_bytes bytes = {
		.in = r->bytes, .fds = fds, .nfds = nfds, .limit = r->max_message
	};

	return parse_line(
	    line, n, r->max_message, r->max_depth, r->bytes ? &bytes : NULL, ret, err);
}

/* Initialises an empty reader; nothing is allocated until the first feed. */
void
proto_reader_init(struct proto_reader *r, size_t max_message, unsigned max_depth)
{
	/* The reader holds max_message + 1 bytes of a line, so keep that sum representable. */
	if (max_message > SIZE_MAX / 2)
		max_message = SIZE_MAX / 2;
	*r = (struct proto_reader){
		.max_message = max_message,
		.max_depth = max_depth,
	};
}

/* Closes the descriptors waiting for their line. */
static void
reader_close_fds(struct proto_reader *r)
{
	for (unsigned i = 0; i < r->nfds; i++)
		close(r->fds[i].fd);
	r->nfds = 0;
}

/* Frees the buffer; the reader may be initialised again. */
void
proto_reader_free(struct proto_reader *r)
{
	reader_close_fds(r);
	free(r->buf);
	r->buf = NULL;
	r->len = r->cap = r->start = r->scanned = 0;
}

/*
 * Makes room for n more bytes. Held bytes move to the front only when the
 * consumed prefix is at least as large as what is held, so every byte moves a
 * bounded number of times: many small messages cost O(n) in total.
 */
static int
reader_reserve(struct proto_reader *r, size_t n)
{
	size_t held = r->len - r->start;
	size_t want;
	char *p;

	if (r->cap - r->len >= n)
		return 0;
	if (r->start > 0 && r->start >= held && r->cap - held >= n) {
		memmove(r->buf, r->buf + r->start, held);
		r->start = 0;
		r->len = held;
		return 0;
	}
	if (held > SIZE_MAX - n)
		return -ENOMEM;
	want = r->cap < READER_MIN_CAP ? READER_MIN_CAP : r->cap;
	while (want < held + n)
		want = want > SIZE_MAX / 2 ? held + n : want * 2;
	if (r->start > 0) {
		/* Moving into a fresh buffer compacts for free. */
		p = malloc(want);
		if (!p)
			return -ENOMEM;
		memcpy(p, r->buf + r->start, held);
		free(r->buf);
	} else {
		p = realloc(r->buf, want);
		if (!p)
			return -ENOMEM;
	}
	r->buf = p;
	r->cap = want;
	r->start = 0;
	r->len = held;
	return 0;
}

/*
 * Splits the new bytes at newlines as they arrive, so a line is known to be
 * too long the moment it passes max_message. Such a line is cut at
 * max_message + 1 bytes (which proves the violation to proto_reader_next())
 * and everything after it is dropped: the stream cannot be trusted past it.
 */
int
proto_reader_feed(struct proto_reader *r, const void *data, size_t len)
{
	const char *p = data;
	size_t held = r->len - r->start;
	size_t partial = held - r->scanned; /* bytes of the unterminated last line */
	size_t whole = r->scanned;
	size_t keep = len, off = 0;
	int rc;

	if (r->failed)
		return -EPROTO;
	if (partial > r->max_message)
		return 0; /* already doomed; proto_reader_next() will say so */
	while (off < len) {
		const char *nl = memchr(p + off, '\n', len - off);
		size_t end = nl ? (size_t)(nl - p) : len;

		if (partial + (end - off) > r->max_message) {
			keep = off + (r->max_message + 1 - partial);
			break;
		}
		if (!nl)
			break;
		whole = held + end + 1;
		partial = 0;
		off = end + 1;
	}
	if (keep == 0)
		return 0;
	rc = reader_reserve(r, keep);
	if (rc < 0)
		return rc;
	memcpy(r->buf + r->len, p, keep);
	r->len += keep;
	r->scanned = whole;
	return 0;
}

/* Bytes values from now on. */
void
proto_reader_set_bytes(struct proto_reader *r, const struct proto_bytes_in *in)
{
	r->bytes = in;
}

/* Feeds bytes that came with descriptors; see proto.h. */
int
proto_reader_feed_fds(
    struct proto_reader *r, const void *data, size_t len, const int *fds, unsigned nfds)
{
	size_t held = r->len - r->start;
	int rc = proto_reader_feed(r, data, len);
	unsigned i = 0;

	/* Kept only when some of the bytes were: a line past the limit loses the rest. */
	if (rc == 0 && r->bytes && r->len - r->start > held) {
		uint64_t at = r->taken + (r->len - r->start) - 1;

		for (; i < nfds && r->nfds < sizeof(r->fds) / sizeof(r->fds[0]); i++)
			r->fds[r->nfds++] = (struct proto_reader_fd){ .fd = fds[i], .at = at };
	}
	for (; i < nfds; i++)
		close(fds[i]);
	return rc;
}

/*
 * Takes the descriptors that came with the line at stream offsets
 * [from, to] into fds (at most PROTO_MAX_FDS); closes those of earlier
 * bytes, which no line claimed, and those past the bound.
 */
static unsigned
reader_line_fds(struct proto_reader *r, uint64_t from, uint64_t to, int *fds)
{
	unsigned n = 0, i = 0;

	for (; i < r->nfds && r->fds[i].at <= to; i++) {
		if (r->fds[i].at >= from && n < PROTO_MAX_FDS)
			fds[n++] = r->fds[i].fd;
		else
			close(r->fds[i].fd);
	}
	memmove(r->fds, r->fds + i, (r->nfds - i) * sizeof(r->fds[0]));
	r->nfds -= i;
	return n;
}

/* JSON whitespace only (a CRLF blank line is "\r"): skipped like an empty line. */
static bool
line_is_blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r')
			return false;
	return true;
}

/*
 * Once everything is consumed, let go of the buffer: a peer is idle between
 * messages most of the time, and herdd holds a reader per worker.
 */
static void
reader_drained(struct proto_reader *r)
{
	if (r->start != r->len)
		return;
	free(r->buf);
	r->buf = NULL;
	r->start = r->len = r->cap = 0;
}

/* Takes out the next whole line and parses it; see proto.h. */
int
proto_reader_next(struct proto_reader *r, json_t **ret, struct proto_error *err)
{
	*ret = NULL;
	if (r->failed)
		return -EPROTO;
	for (;;) {
		int fds[PROTO_MAX_FDS];
		const char *line, *nl;
		unsigned nfds;
		size_t n;
		int rc;

		if (r->scanned == 0) {
			if (r->len - r->start > r->max_message) {
				proto_error_setf(err, HERD_E_MESSAGE_TOO_LARGE,
				    "message longer than %zu bytes", r->max_message);
				r->failed = true;
				return -EBADMSG;
			}
			return 0;
		}
		line = r->buf + r->start;
		nl = memchr(line, '\n', r->scanned);
		n = (size_t)(nl - line);
		nfds = r->nfds ? reader_line_fds(r, r->taken, r->taken + n, fds) : 0;
		r->start += n + 1;
		r->scanned -= n + 1;
		r->taken += n + 1;
		if (line_is_blank(line, n)) {
			close_fds(fds, nfds);
			reader_drained(r);
			continue;
		}
		/* A trailing \r is JSON whitespace, so CRLF lines parse as they are. */
		rc = reader_parse(r, line, n, fds, nfds, ret, err);
		close_fds(fds, nfds);
		if (rc < 0) {
			r->failed = true;
			reader_close_fds(r);
			return rc;
		}
		reader_drained(r);
		return 1;
	}
}
