/* SPDX-License-Identifier: MIT */
/*
 * Captured worker output: the read end of a pipe whose write end is the
 * worker's stdout or stderr, kept as a ring of its last lines so "logs" and
 * failure events can show what a worker said before it died. Bytes are made
 * safe for JSON on the way in (invalid UTF-8 and NUL become U+FFFD), and both
 * the line count and the bytes held are bounded.
 *
 * Memory follows what was said, not the bounds: herdd captures the stderr of
 * every worker and most write little or nothing, so the ring grows as lines
 * arrive, each line is kept at its own size, and an unfinished line is held
 * in a buffer only until its newline.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herdd.h"
#include "utf8.h"

#define CAPTURE_MAX_LINES 1000
#define CAPTURE_MAX_BYTES (128u * 1024u)
#define CAPTURE_MAX_LINE  4096u
/* First sizes of the ring and of an unfinished line; both double up to their bounds. */
#define CAPTURE_MIN_SLOTS   16u
#define CAPTURE_MIN_PARTIAL 256u

/*
 * Copies text[0..len) into a new string that is valid UTF-8: every byte that
 * does not start a valid sequence, and NUL (which no peer accepts), becomes
 * U+FFFD.
 */
static char *
sanitize(const char *text, size_t len, size_t *out_len)
{
	const unsigned char *s = (const unsigned char *)text;
	char *out = malloc(len * 3 + 1), *o = out, *fit;
	size_t i = 0;

	if (!out)
		return NULL;
	while (i < len) {
		size_t k = s[i] >= 0x80 ? utf8_seq(s + i, len - i) : s[i] != 0;

		if (k == 0) {
			memcpy(o, "\xef\xbf\xbd", 3);
			o += 3;
			i++;
			continue;
		}
		memcpy(o, s + i, k);
		o += k;
		i += k;
	}
	*o = '\0';
	*out_len = (size_t)(o - out);
	/* The line is kept for the worker's whole record: give back the worst case's room. */
	fit = realloc(out, *out_len + 1);
	return fit ? fit : out;
}

/* Makes room for one more line, growing the ring towards max_lines. Returns 0 or -ENOMEM. */
static int
ring_reserve(struct capture *cap)
{
	unsigned slots, i;
	char **lines;

	if (cap->count < cap->slots)
		return 0;
	slots = cap->slots ? cap->slots * 2 : CAPTURE_MIN_SLOTS;
	if (slots > cap->max_lines)
		slots = cap->max_lines;
	lines = malloc(slots * sizeof(*lines));
	if (!lines)
		return -ENOMEM;
	/* Oldest first, from slot 0. */
	for (i = 0; i < cap->count; i++)
		lines[i] = cap->lines[(cap->first + i) % cap->slots];
	free(cap->lines);
	cap->lines = lines;
	cap->slots = slots;
	cap->first = 0;
	return 0;
}

static void
push_line(struct capture *cap, const char *text, size_t len)
{
	char *line;

	if (len > 0 && text[len - 1] == '\r')
		len--;
	line = sanitize(text, len, &len);
	if (!line) {
		cap->dropped++;
		return;
	}
	/* Evict the oldest lines until both bounds hold. */
	while (
	    cap->count > 0 && (cap->count == cap->max_lines || cap->bytes + len > cap->max_bytes)) {
		char *old = cap->lines[cap->first];

		cap->bytes -= strlen(old);
		free(old);
		cap->first = (cap->first + 1) % cap->slots;
		cap->count--;
		cap->dropped++;
	}
	if (ring_reserve(cap) < 0) {
		free(line);
		cap->dropped++;
		return;
	}
	follow_line(cap, line);
	cap->lines[(cap->first + cap->count) % cap->slots] = line;
	cap->count++;
	cap->bytes += len;
}

/* Appends to the unfinished line, growing its buffer. Returns 0 or -ENOMEM. */
static int
partial_append(struct capture *cap, const char *buf, size_t n)
{
	size_t need = cap->partial_len + n, size = cap->partial_size;
	char *p;

	if (need > size) {
		if (size == 0)
			size = CAPTURE_MIN_PARTIAL;
		while (size < need)
			size *= 2;
		if (size > CAPTURE_MAX_LINE)
			size = CAPTURE_MAX_LINE;
		p = realloc(cap->partial, size);
		if (!p)
			return -ENOMEM;
		cap->partial = p;
		cap->partial_size = size;
	}
	memcpy(cap->partial + cap->partial_len, buf, n);
	cap->partial_len = need;
	return 0;
}

static void
partial_release(struct capture *cap)
{
	free(cap->partial);
	cap->partial = NULL;
	cap->partial_size = 0;
}

/*
 * Splits new bytes into lines; a line longer than the limit is cut into
 * pieces. A line that is whole in buf is taken from there without a copy.
 */
static void
take_bytes(struct capture *cap, const char *buf, size_t n)
{
	while (n > 0) {
		const char *nl = memchr(buf, '\n', n);
		size_t chunk = nl ? (size_t)(nl - buf) : n;
		size_t room = CAPTURE_MAX_LINE - cap->partial_len;
		size_t take = chunk < room ? chunk : room;
		bool ends = take == room || (nl && take == chunk);

		if (ends && cap->partial_len == 0) {
			push_line(cap, buf, take);
		} else {
			if (take > 0 && partial_append(cap, buf, take) < 0) {
				cap->dropped++;
				return;
			}
			if (ends) {
				push_line(cap, cap->partial, cap->partial_len);
				cap->partial_len = 0;
			}
		}
		buf += take;
		n -= take;
		if (ends && nl && buf == nl) {
			buf++;
			n--;
		}
	}
	if (cap->partial_len == 0)
		partial_release(cap);
}

/* Reads what is available. Returns 1 at EOF or error, 0 otherwise. */
static int
read_some(struct capture *cap)
{
	char buf[16384];
	int rounds;

	/* A few reads per wake-up: a chatty worker must not starve the loop. */
	for (rounds = 0; rounds < 4; rounds++) {
		ssize_t n = read(cap->fd, buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN ? 0 : 1;
		}
		if (n == 0)
			return 1;
		if (cap->file)
			logfile_write(cap->file, buf, (size_t)n);
		else
			take_bytes(cap, buf, (size_t)n);
	}
	return 0;
}

static void
close_pipe(struct capture *cap)
{
	if (cap->fd < 0)
		return;
	main_io_close(&cap->io, &cap->fd);
	if (cap->partial_len > 0) {
		push_line(cap, cap->partial, cap->partial_len);
		cap->partial_len = 0;
	}
	partial_release(cap);
	follow_end(cap);
}

static void
capture_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct capture *cap = w->data;

	if (read_some(cap))
		close_pipe(cap);
	else
		follow_flush(cap);
}

/* Initialises an empty capture. */
void
capture_init(struct capture *cap, struct worker *w)
{
	memset(cap, 0, sizeof(*cap));
	LIST_INIT(&cap->followers);
	cap->fd = -1;
	cap->max_lines = CAPTURE_MAX_LINES;
	cap->max_bytes = CAPTURE_MAX_BYTES;
	cap->worker = w;
}

/* Starts watching the pipe's read end (non-blocking, close-on-exec). */
void
capture_start(struct capture *cap, int fd)
{
	const struct output_spec *o = &cap->worker->out[cap == &cap->worker->cap[0] ? 0 : 1];

	/* A rotated file: what the worker writes goes there, no line is kept. */
	if (output_rotated(o))
		cap->file = logfile_open(o, cap->worker);
	cap->fd = fd;
	ev_io_init(&cap->io, capture_cb, fd, EV_READ);
	cap->io.data = cap;
	ev_io_start(herdd.loop, &cap->io);
}

/* Drains what is left (the worker is gone) and closes the pipe. */
void
capture_finish(struct capture *cap)
{
	int i;

	if (cap->fd < 0)
		return;
	/* Bounded: a descendant still writing must not keep us here. */
	for (i = 0; i < 16; i++) {
		if (read_some(cap))
			break;
	}
	close_pipe(cap);
}

/* Frees every line. */
void
capture_free(struct capture *cap)
{
	unsigned i;

	close_pipe(cap);
	follow_end(cap);
	logfile_close(cap->file);
	cap->file = NULL;
	for (i = 0; i < cap->count; i++)
		free(cap->lines[(cap->first + i) % cap->slots]);
	free(cap->lines);
	cap->lines = NULL;
	cap->slots = 0;
	cap->first = 0;
	cap->count = 0;
	cap->bytes = 0;
}

/* The last n lines as a new array. */
json_t *
capture_tail(const struct capture *cap, unsigned n)
{
	json_t *a = json_array();
	unsigned i, skip;

	if (!a)
		return NULL;
	skip = (n == 0 || n >= cap->count) ? 0 : cap->count - n;
	for (i = skip; i < cap->count; i++) {
		const char *line = cap->lines[(cap->first + i) % cap->slots];

		json_array_append_new(a, json_string(line));
	}
	return a;
}

/* A predecessor's lines and unfinished line (a reexec), with its dropped count. */
void
capture_restore(
    struct capture *cap, json_t *lines, uint64_t dropped, const char *partial, size_t len)
{
	size_t i;
	json_t *l;

	json_array_foreach(lines, i, l) {
		if (json_is_string(l))
			push_line(cap, json_string_value(l), json_string_length(l));
	}
	if (len > 0 && partial_append(cap, partial, len) < 0)
		dropped++;
	cap->dropped = dropped;
}
