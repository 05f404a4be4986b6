/* SPDX-License-Identifier: MIT */
/*
 * proto: herd's wire protocol as pure functions. Newline-delimited JSON-RPC
 * 2.0: an incremental reader with hard limits, an output queue that survives
 * partial writes, message builders and validators, the error code table, and
 * the tables of herd's words (names.h) and RPC settings (settings.h).
 *
 * Nothing here performs I/O or knows about an event loop, so every function can
 * be unit-tested and fuzzed. JSON values follow jansson's ownership words:
 * "borrowed" (the caller keeps its reference), "new reference" (the caller
 * must json_decref), "stolen" (the callee takes the reference, even on failure).
 */
#ifndef HERD_PROTO_H
#define HERD_PROTO_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <jansson.h>

#include "herd/protocol.h"
#include "names.h"
#include "settings.h"

/* ---- error table (errors.c) ---- */

/* Stable snake_case name of a code ("worker_not_found"), or NULL if unknown. */
const char *proto_error_name(int code);
/* Code for a stable name, or 0 if unknown. */
int proto_error_code(const char *name);
/* The table's size and its i-th code (0 past the end), to walk every code. */
size_t proto_error_count(void);
int proto_error_code_at(size_t i);

/* ---- text (text.c) ---- */

/*
 * Every text herd builds from a peer's strings or a user's bytes and sends or
 * logs goes through these, so that a byte budget never cuts a character, an
 * encoder never refuses the text, and a log line shows what it was given.
 */

/* True when s[0..len) is UTF-8 the wire accepts: well-formed, no NUL. */
bool proto_text_valid(const char *s, size_t len);
/*
 * The precision for "%.*s" that prints at most max bytes of the
 * NUL-terminated s without ending inside a UTF-8 character.
 */
int proto_text_prec(const char *s, size_t max);
/*
 * Copies s[0..len) into dst as valid text: every byte that starts no
 * well-formed character (a NUL included) becomes U+FFFD, and the copy ends
 * on a character boundary within size - 1 bytes. NUL-terminates (size > 0);
 * returns the length written.
 */
size_t proto_text_copy(char *dst, size_t size, const char *s, size_t len);
/*
 * A JSON string (new reference, NULL on ENOMEM) of the NUL-terminated s made
 * valid as proto_text_copy() does and cut to at most max bytes.
 */
json_t *proto_text_string(const char *s, size_t max);
/*
 * Copies s[0..len) into dst for a log line: control characters (C0, DEL, C1)
 * and bytes that start no character are shown as \n, \r, \t or \xNN, so a
 * peer's text can never end the line or fake another; the copy ends on a
 * character (or escape) boundary within size - 1 bytes. NUL-terminates
 * (size > 0); returns the length written.
 */
size_t proto_text_escape(char *dst, size_t size, const char *s, size_t len);
/*
 * vsnprintf() into dst whose result is valid text: formatted whole, then
 * copied as proto_text_copy() does, so the cut at size never splits a
 * character. Returns the length written.
 */
size_t proto_text_vformat(char *dst, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
size_t proto_text_format(char *dst, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Bytes of a worker's failure or init failure text that travel and are kept. */
#define PROTO_FAILURE_TEXT_MAX 4096

/* ---- bytes (bytes.c; PROTOCOL.md 1.1) ---- */

/*
 * A bytes value in memory is the one-member object {"$bytes": S} whose string
 * S holds the raw bytes (made with json_stringn_nocheck: any bytes, NUL
 * included). The encoder writes S as base64, or as a reference to a sealed
 * memfd sent with the line when the peer accepts them; the decoder of a
 * reader with a proto_bytes_in turns both back into raw bytes.
 */
struct proto_error;

#define PROTO_BYTES_KEY "$bytes"
/*
 * The hello feature of a side that takes bytes values out of band: a
 * worker's hello result lists it in "features", a client answers with the
 * notification herd.features naming it, and from then on each side may send
 * descriptors to the other.
 */
#define PROTO_FEATURE_BYTES_FD "bytes_fd"
/* True when features (borrowed, an array of strings or anything else) names name. */
bool proto_features_has(const json_t *features, const char *name);
/* Descriptors one message may carry (far below the kernel's SCM_MAX_FD). */
#define PROTO_MAX_FDS 16u
/* Payloads from this size go out of band when the peer accepts it; smaller ones inline. */
#define PROTO_BYTES_FD_MIN 16384u

/* A new bytes value holding a copy of data[0..len); NULL on ENOMEM. */
json_t *proto_bytes_new(const void *data, size_t len);
/* True, with the bytes (borrowed from v), when v is a bytes value. */
bool proto_bytes_get(const json_t *v, const char **ret_data, size_t *ret_len);

/* Receiving: how a line's descriptors are read. */
struct proto_bytes_in {
	/*
	 * A new bytes value of the len bytes in fd (borrowed: the reader closes
	 * it), or NULL with *err filled (HERD_E_INVALID_BYTES, or
	 * HERD_E_INTERNAL_ERROR without memory).
	 */
	json_t *(*fd_read)(int fd, size_t len, struct proto_error *err);
};

/* What the decoder reads bytes values with: one line's descriptors. */
struct proto_line_bytes {
	const struct proto_bytes_in *in;
	const int *fds; /* borrowed: the caller closes them after the decode */
	unsigned nfds;
	size_t limit; /* payload bytes the line may carry out of band */
};

/* Sending: where the encoder puts payloads out of band. */
struct proto_bytes_out {
	/* A new sealed descriptor holding data[0..len), or -errno (the payload then goes inline). */
	int (*fd_make)(const char *data, size_t len);
	size_t limit; /* payload bytes one message may carry out of band */
	/* Filled by the encoder: the descriptors of this message, in order, and their bytes. */
	int fd[PROTO_MAX_FDS];
	unsigned n;
	size_t total;
};
/* Closes the descriptors the encoder made (a message that was not queued). */
void proto_bytes_out_close(struct proto_bytes_out *out);

/* ---- incremental reader (reader.c) ---- */

/*
 * One reader per connection. Bytes go in with proto_reader_feed() in any split;
 * whole messages come out of proto_reader_next(). A message longer than
 * max_message (newline excluded) is reported once it is certain, without
 * buffering more than max_message + 1 bytes of it.
 */
struct proto_reader {
	char *buf;
	size_t len; /* bytes held */
	size_t cap; /* bytes allocated */
	size_t start; /* first unconsumed byte */
	size_t scanned; /* bytes after start that form whole lines; the rest is one partial line */
	size_t max_message; /* limit, newline excluded */
	unsigned max_depth;
	bool failed; /* a violation was reported; the stream cannot be resynchronised */
	/* Bytes values (NULL: "$bytes" objects stay objects, and descriptors are closed). */
	const struct proto_bytes_in *bytes;
	uint64_t taken; /* stream offset of buf[start] */
	/* Descriptors received, each with the stream offset of the last byte read with it. */
	struct proto_reader_fd {
		int fd;
		uint64_t at;
	} fds[2 * PROTO_MAX_FDS];
	unsigned nfds;
};

/* What went wrong with an incoming message. code is a HERD_E_* value. */
struct proto_error {
	int code;
	char text[160];
};

/* Sets *err (err may be NULL) to code and a text formatted as proto_text_vformat() does. */
void proto_error_setf(struct proto_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void proto_reader_init(struct proto_reader *r, size_t max_message, unsigned max_depth);
void proto_reader_free(struct proto_reader *r);

/*
 * Copies len bytes into the reader. Returns 0, -ENOMEM, or -EPROTO once the
 * reader has failed (a violation was taken out with proto_reader_next()).
 */
int proto_reader_feed(struct proto_reader *r, const void *data, size_t len);

/*
 * Reads bytes values through in from now on (see struct proto_line_bytes):
 * a "$bytes" object becomes raw bytes, and descriptors sent with a line may
 * carry them.
 */
void proto_reader_set_bytes(struct proto_reader *r, const struct proto_bytes_in *in);
/*
 * proto_reader_feed() of bytes that came with descriptors (taken over,
 * closed on every path). They belong to the line holding the last of these
 * bytes: a sender writes a line with descriptors alone, from its first byte,
 * so the read that brings them ends inside that line. A line's descriptors
 * that its text does not name are closed, so are those past PROTO_MAX_FDS.
 */
int proto_reader_feed_fds(
    struct proto_reader *r, const void *data, size_t len, const int *fds, unsigned nfds);

/*
 * Takes out the next whole message. Returns 1 with *ret set (a new reference,
 * always a JSON object), 0 when more bytes are needed, or -EBADMSG with *err
 * filled for a violation: HERD_E_MESSAGE_TOO_LARGE, HERD_E_TOO_DEEP,
 * HERD_E_PARSE_ERROR, HERD_E_DUPLICATE_KEY, HERD_E_INVALID_UTF8,
 * HERD_E_NUL_BYTE, HERD_E_INVALID_REQUEST (valid JSON that is not an object).
 * Every violation is final: the reader stays failed and later calls return
 * -EPROTO. Empty lines (and lines of JSON whitespace, such as a lone "\r")
 * are skipped; a "\r" before the "\n" counts towards max_message.
 */
int proto_reader_next(struct proto_reader *r, json_t **ret, struct proto_error *err);

/*
 * Checks that text[0..len) nests no deeper than max_depth, skipping strings.
 * Returns 0 or -E2BIG. Exposed for tests and for callers parsing whole texts.
 */
int proto_check_depth(const char *text, size_t len, unsigned max_depth);

/*
 * Checks an encoded text for what a receiver refuses beyond size and UTF-8:
 * nesting past max_depth (-E2BIG) or the escape \u0000 in a string (-EILSEQ).
 */
int proto_check_text(const char *text, size_t len, unsigned max_depth);

/*
 * Parses one complete message text (no newline) with the same checks as the
 * reader. Returns 0 with *ret a new reference, or -EBADMSG with *err filled.
 */
int proto_parse(const char *text, size_t len, size_t max_message, unsigned max_depth, json_t **ret,
    struct proto_error *err);

/* ---- JSON decoder (json-dec.c) ---- */

/*
 * Decodes one JSON text of any type (surrounding JSON whitespace allowed).
 * Accepts exactly what json_loadb(JSON_DECODE_ANY | JSON_REJECT_DUPLICATES)
 * accepts, giving json_equal() values, and refuses besides: containers nested
 * deeper than max_depth (HERD_E_TOO_DEEP, found before the container is
 * allocated), a NUL byte or \u0000 (HERD_E_NUL_BYTE), invalid UTF-8 in a
 * string (HERD_E_INVALID_UTF8). Returns 0 with *ret a new reference, or
 * -EBADMSG with *ret NULL and *err (may be NULL) naming the first fault met:
 * those codes, HERD_E_DUPLICATE_KEY, HERD_E_PARSE_ERROR or, when memory ran
 * out, HERD_E_INTERNAL_ERROR. proto_parse() adds the reader's rules on top.
 */
int proto_json_decode(
    const char *text, size_t len, unsigned max_depth, json_t **ret, struct proto_error *err);

/*
 * proto_json_decode() with flags. PROTO_DECODE_BIG_INT_REAL reads an integer
 * past the 64-bit range as the real number strtod() makes of it (refused only
 * if that overflows), where jansson refuses it: a message's framing must not
 * break on a number, so the reader decodes with it and a too-large id is then
 * an id of the wrong type, a request-level error.
 */
#define PROTO_DECODE_BIG_INT_REAL 1u
int proto_json_decode_ex(const char *text, size_t len, unsigned max_depth, unsigned flags,
    json_t **ret, struct proto_error *err);
/*
 * proto_json_decode_ex() that, given bytes (may be NULL: no such decoding),
 * turns every one-member object {"$bytes": X} into a raw bytes value (X is
 * base64 or names one of bytes->fds) and refuses one that cannot be read
 * with HERD_E_INVALID_BYTES.
 */
int proto_json_decode_bytes(const char *text, size_t len, unsigned max_depth, unsigned flags,
    const struct proto_line_bytes *bytes, json_t **ret, struct proto_error *err);

/* ---- JSON encoder (json-enc.c) ---- */

/*
 * Where the encoder writes: bytes go to p, up to end; when there is no more
 * room it calls grow(w, n), which must make room for n more bytes (moving
 * start, p and end) or return a negative errno that ends the encoding. The
 * encoder only asks for room it will certainly fill, so grow() can enforce a
 * size limit exactly.
 */
struct proto_wbuf {
	char *start; /* first byte of the text */
	char *p; /* next byte to write */
	char *end; /* end of the room */
	int (*grow)(struct proto_wbuf *w, size_t n);
	void *ctx; /* grow()'s own */
};

/*
 * Writes v (borrowed) as compact JSON, the same bytes as
 * json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY). Returns 0, -E2BIG when
 * containers nest deeper than max_depth (which also stops reference cycles),
 * -EILSEQ for a string that is not valid UTF-8 (json_stringn_nocheck() can
 * make one) or, unless allow_nul, that holds a NUL (written as \u0000),
 * -EINVAL for a NULL value, or grow()'s error. On failure w holds a partial text.
 */
int proto_json_write(struct proto_wbuf *w, const json_t *v, unsigned max_depth, bool allow_nul);

/*
 * Pieces of a text written by hand (herdd's WORKER objects, built straight
 * into text for lists): raw bytes, a string quoted and escaped like
 * proto_json_write() does (-EILSEQ for one that is not valid UTF-8 or holds
 * a NUL), an integer. Each returns 0 or grow()'s error.
 */
int proto_wbuf_put(struct proto_wbuf *w, const char *s, size_t n);
int proto_json_write_string(struct proto_wbuf *w, const char *s, size_t n);
int proto_json_write_int(struct proto_wbuf *w, json_int_t v);
/* Writes data[0..len) as a quoted base64 string (RFC 4648, padded). */
int proto_base64_write(struct proto_wbuf *w, const void *data, size_t len);
/*
 * Decodes padded base64 s[0..n) into a new bytes value. Returns 0 with *ret
 * set, -EILSEQ for text that is not padded base64, or -ENOMEM.
 */
int proto_bytes_from_base64(const char *s, size_t n, json_t **ret);
/*
 * proto_json_write() that, given out (may be NULL), writes bytes values of
 * at least PROTO_BYTES_FD_MIN bytes out of band into out (up to
 * PROTO_MAX_FDS of them, at most out->limit bytes in all: -EMSGSIZE past
 * it), the rest inline as base64. On failure the caller closes out's fds.
 */
int proto_json_write_ex(struct proto_wbuf *w, const json_t *v, unsigned max_depth, bool allow_nul,
    struct proto_bytes_out *out);
/*
 * Sets w up empty, growing on the heap: the text is at w->start (NULL until
 * something was written), w->p - w->start bytes, with a byte of room after
 * them for a NUL; free(w->start) when done.
 */
void proto_wbuf_heap(struct proto_wbuf *w);

/*
 * Encodes v (borrowed, at most HERD_MAX_DEPTH deep) into buf as a
 * NUL-terminated string. Returns its length, -ENOSPC if buf is too small, or
 * proto_json_write()'s errors. NUL characters are written as \u0000.
 */
ssize_t proto_json_encode(const json_t *v, char *buf, size_t size);

/*
 * Like json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) for values at most
 * HERD_MAX_DEPTH deep: a new malloc'd string, or NULL if v cannot be encoded
 * or memory ran out.
 */
char *proto_json_dumps(const json_t *v);

/* ---- output queue (outq.c) ---- */

/*
 * Bytes waiting to be written to a non-blocking socket, kept as a list of
 * chunks. The caller fills an iovec with proto_outq_peek(), writes it, and
 * reports what the kernel took with proto_outq_consume(). The queue refuses to
 * grow past cap bytes so a peer that never reads cannot exhaust memory.
 */
struct proto_chunk;
struct proto_outq {
	struct proto_chunk *head;
	struct proto_chunk *tail;
	size_t bytes; /* queued, not yet consumed */
	size_t cap;
	unsigned nfds; /* descriptors queued, not yet sent */
	size_t fd_bytes; /* the payload bytes behind them */
};
/*
 * What a queue holds back from its peer: its bytes and the payloads of its
 * descriptors, which a reader takes as long to read as inline bytes. For
 * water marks (backpressure), not for the socket.
 */
static inline size_t
proto_outq_backlog(const struct proto_outq *q)
{
	return q->bytes + q->fd_bytes;
}

void proto_outq_init(struct proto_outq *q, size_t cap);
void proto_outq_free(struct proto_outq *q);
/* Appends a copy of data. Returns 0, -ENOBUFS if bytes + len > cap, or -ENOMEM. */
int proto_outq_push(struct proto_outq *q, const void *data, size_t len);
/* Fills up to n iovecs with queued data, returns how many. */
int proto_outq_peek(const struct proto_outq *q, struct iovec *iov, int n);
/* Drops the first n queued bytes (n <= bytes). */
void proto_outq_consume(struct proto_outq *q, size_t n);
static inline bool
proto_outq_empty(const struct proto_outq *q)
{
	return q->bytes == 0;
}

/*
 * Encodes msg (borrowed) as one compact line ending in "\n" and appends it.
 * Returns 0, -EMSGSIZE if the text is longer than max_message, -ENOBUFS if
 * the queue is full, -ENOMEM, or -EINVAL if msg is not an object or cannot be
 * encoded, or if the peer would refuse it: nested past HERD_MAX_DEPTH (a
 * reference cycle included), holding a NUL character (which JSON would carry
 * as \u0000) or a string that is not valid UTF-8. When a message is both too
 * long and refused, the fault met first in the text decides. Nothing is
 * queued on failure.
 */
int proto_outq_push_json(struct proto_outq *q, const json_t *msg, size_t max_message);
/*
 * proto_outq_push_json() with bytes values out of band into out (may be
 * NULL): the line then takes out's descriptors (closed once written, or
 * when the queue is freed; on failure closed at once) and goes out alone.
 */
int proto_outq_push_json_ex(
    struct proto_outq *q, const json_t *msg, size_t max_message, struct proto_bytes_out *out);
/* The descriptors to send with the next write (borrowed from the queue), and how many. */
unsigned proto_outq_fds(const struct proto_outq *q, const int **ret_fds);

/* ---- messages (msg.c) ---- */

enum proto_kind {
	PROTO_REQUEST, /* method + id */
	PROTO_NOTIFICATION, /* method, no id */
	PROTO_RESULT, /* id + result */
	PROTO_ERROR, /* id + error {code, message, data?} */
};

/* A validated message; every pointer is borrowed from the message object. */
struct proto_msg {
	enum proto_kind kind;
	json_t *id; /* integer, string or null; NULL for notifications */
	const char *method; /* requests and notifications */
	json_t *params; /* object, array, or NULL when absent */
	json_t *result; /* PROTO_RESULT */
	int error_code; /* PROTO_ERROR */
	const char *error_message;
	json_t *error_data; /* may be NULL */
};

/*
 * Validates msg (borrowed) as a JSON-RPC 2.0 message and fills *out. Returns 0
 * or -EBADMSG with *err = HERD_E_INVALID_REQUEST and a text naming the fault
 * (missing "jsonrpc", wrong id type, a request's integer id past +-2^53,
 * both result and error, extra members...).
 */
int proto_msg_parse(json_t *msg, struct proto_msg *out, struct proto_error *err);
/*
 * The id (borrowed) to answer msg with after proto_msg_parse() refused it: its
 * "id" if that is a string or an integer in range, else NULL (reply with null).
 */
json_t *proto_reply_id(const json_t *msg);

/* Builders. Each returns a new reference or NULL on ENOMEM; params/result/data are stolen. */
json_t *proto_request(json_t *id, const char *method, json_t *params); /* id borrowed */
json_t *proto_request_int(int64_t id, const char *method, json_t *params);
json_t *proto_notification(const char *method, json_t *params);
/* id borrowed, NULL id means null; result NULL is taken as a failed allocation (returns NULL). */
json_t *proto_result(json_t *id, json_t *result);
/*
 * An error reply; message may be NULL (the code's name is used), data may be
 * NULL. A message that is not valid text is repaired (proto_text_copy()),
 * never refused. "data" always ends up an object carrying "name", the code's name
 * ("unknown" for a code outside the table): an object is extended (copied
 * first if shared), anything else is wrapped as {"name": ..., "detail": data}.
 * id borrowed, NULL means null.
 */
json_t *proto_error(json_t *id, int code, const char *message, json_t *data);
json_t *proto_errorf(json_t *id, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Unpacks params (borrowed, NULL treated as {}) with json_unpack_ex and
 * JSON_STRICT so unknown members are refused. Returns 0 or -EINVAL with
 * err = HERD_E_INVALID_PARAMS and jansson's text (-ENOMEM, err untouched,
 * if NULL params cannot become {}). proto_vunpack takes the va_list of a
 * caller's own variadic wrapper.
 */
int proto_unpack(json_t *params, struct proto_error *err, const char *fmt, ...);
int proto_vunpack(json_t *params, struct proto_error *err, const char *fmt, va_list ap);

#endif
