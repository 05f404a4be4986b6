/* SPDX-License-Identifier: MIT */
/*
 * A raw JSON-lines client: what a test uses to speak to herdd or a worker as
 * socat would. Reads go through proto's reader, so the harness applies the
 * same framing rules as everything else, and every wait has a deadline.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "herd-test.h"
#include "ht-internal.h"
#include "proto.h"

struct ht_conn {
	int fd;
	bool eof;
	int64_t next_id;
	struct proto_reader reader;
	json_t *aside; /* array of messages received while waiting for something else */
};

struct ht_conn *
ht_conn_adopt(int fd)
{
	struct ht_conn *c = calloc(1, sizeof(*c));

	if (!c || !(c->aside = json_array())) {
		free(c);
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	c->fd = fd;
	c->next_id = 1;
	proto_reader_init(&c->reader, HERD_DEFAULT_MAX_MESSAGE_SIZE, HERD_MAX_DEPTH);
	return c;
}

struct ht_conn *
ht_conn_open(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 10 };
	int fd, e;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		errno = ENAMETOOLONG;
		return NULL;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	/* A peer that stops reading must fail a test, not hang it. */
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		goto fail;
	return ht_conn_adopt(fd);

fail:
	e = errno;
	fprintf(stderr, "herd_test: connecting to %s: %m\n", path);
	if (fd >= 0)
		close(fd);
	errno = e;
	return NULL;
}

void
ht_conn_close(struct ht_conn *c)
{
	if (!c)
		return;
	close(c->fd);
	proto_reader_free(&c->reader);
	json_decref(c->aside);
	free(c);
}

int
ht_conn_fd(const struct ht_conn *c)
{
	return c->fd;
}

int
ht_conn_send_raw(struct ht_conn *c, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
ht_conn_send(struct ht_conn *c, const json_t *msg)
{
	char *text = json_dumps(msg, JSON_COMPACT);
	size_t len;
	int r;

	if (!text)
		return -ENOMEM;
	len = strlen(text);
	text[len] = '\n'; /* replaces the terminator: the buffer is len + 1 long */
	r = ht_conn_send_raw(c, text, len + 1);
	free(text);
	return r;
}

int
ht_conn_send_line(struct ht_conn *c, const char *text)
{
	int r = ht_conn_send_raw(c, text, strlen(text));

	return r < 0 ? r : ht_conn_send_raw(c, "\n", 1);
}

int
ht_conn_notify(struct ht_conn *c, const char *method, json_t *params)
{
	json_t *msg = proto_notification(method, params);
	int r;

	if (!msg)
		return -ENOMEM;
	r = ht_conn_send(c, msg);
	json_decref(msg);
	return r;
}

/* Reads the next message from the socket itself. NULL with errno on failure. */
static json_t *
recv_wire(struct ht_conn *c, int64_t deadline)
{
	for (;;) {
		struct proto_error err;
		char buf[65536];
		json_t *msg;
		ssize_t n;
		int r;

		r = proto_reader_next(&c->reader, &msg, &err);
		if (r == 1)
			return msg;
		if (r < 0) {
			fprintf(stderr, "herd_test: peer sent an invalid message: %s\n", err.text);
			errno = EBADMSG;
			return NULL;
		}
		if (c->eof) {
			errno = EPIPE;
			return NULL;
		}
		n = ht__read_by(c->fd, buf, sizeof(buf), deadline);
		if (n < 0 && n != -ECONNRESET) {
			errno = (int)-n;
			return NULL;
		}
		if (n <= 0) {
			c->eof = true;
			continue;
		}
		if (proto_reader_feed(&c->reader, buf, (size_t)n) < 0) {
			errno = ENOMEM;
			return NULL;
		}
	}
}

typedef bool (*match_fn)(const json_t *msg, const void *ctx);

/*
 * Returns the first message, set aside or new, that match accepts; other new
 * messages are set aside in arrival order.
 */
static json_t *
take_matching(struct ht_conn *c, match_fn match, const void *ctx, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	size_t i;
	json_t *msg;

	json_array_foreach(c->aside, i, msg) {
		if (match(msg, ctx)) {
			json_incref(msg);
			json_array_remove(c->aside, i);
			return msg;
		}
	}
	for (;;) {
		msg = recv_wire(c, deadline);
		if (!msg || match(msg, ctx))
			return msg;
		json_array_append_new(c->aside, msg);
	}
}

static bool
match_any(const json_t *msg, const void *ctx)
{
	(void)msg;
	(void)ctx;
	return true;
}

json_t *
ht_conn_recv(struct ht_conn *c, int timeout_ms)
{
	return take_matching(c, match_any, NULL, timeout_ms);
}

static bool
match_reply(const json_t *msg, const void *ctx)
{
	const json_t *id = json_object_get(msg, "id");

	return !json_object_get(msg, "method") && json_is_integer(id) &&
	    json_integer_value(id) == *(const int64_t *)ctx;
}

int64_t
ht_conn_send_request(struct ht_conn *c, const char *method, json_t *params)
{
	int64_t id = c->next_id++;
	json_t *req = proto_request_int(id, method, params);
	int r;

	if (!req)
		return -ENOMEM;
	r = ht_conn_send(c, req);
	json_decref(req);
	return r < 0 ? r : id;
}

json_t *
ht_conn_wait_reply(struct ht_conn *c, int64_t id, int timeout_ms)
{
	return take_matching(c, match_reply, &id, timeout_ms);
}

json_t *
ht_conn_call(struct ht_conn *c, const char *method, json_t *params, int timeout_ms)
{
	int64_t id = ht_conn_send_request(c, method, params);

	if (id < 0) {
		errno = (int)-id;
		return NULL;
	}
	return ht_conn_wait_reply(c, id, timeout_ms);
}

json_t *
ht_conn_hello(struct ht_conn *c, const char *role, json_t *extra, int timeout_ms)
{
	json_t *params = json_pack("{s:i, s:s}", "version", HERD_PROTOCOL_VERSION, "role", role);

	if (!params) {
		json_decref(extra);
		errno = ENOMEM;
		return NULL;
	}
	if (extra)
		json_object_update(params, extra);
	json_decref(extra);
	return ht_conn_call(c, "hello", params, timeout_ms);
}

static bool
match_method(const json_t *msg, const void *ctx)
{
	const char *m = json_string_value(json_object_get(msg, "method"));

	return m && !json_object_get(msg, "id") && strcmp(m, ctx) == 0;
}

json_t *
ht_conn_wait_method(struct ht_conn *c, const char *method, int timeout_ms)
{
	return take_matching(c, match_method, method, timeout_ms);
}

struct event_match {
	const char *event;
	const char *worker_id;
};

static bool
match_event(const json_t *msg, const void *ctx)
{
	const struct event_match *em = ctx;
	json_t *params = json_object_get(msg, "params");
	const char *ev = json_string_value(json_object_get(params, "event"));
	const char *id =
	    json_string_value(json_object_get(json_object_get(params, "worker"), "id"));

	if (!match_method(msg, "event") || !ev || strcmp(ev, em->event) != 0)
		return false;
	return !em->worker_id || (id && strcmp(id, em->worker_id) == 0);
}

json_t *
ht_conn_wait_event(struct ht_conn *c, const char *event, const char *worker_id, int timeout_ms)
{
	struct event_match em = { event, worker_id };
	json_t *msg = take_matching(c, match_event, &em, timeout_ms);
	json_t *params;

	if (!msg)
		return NULL;
	params = json_incref(json_object_get(msg, "params"));
	json_decref(msg);
	return params;
}

int
ht_conn_wait_eof(struct ht_conn *c, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	json_array_clear(c->aside);
	for (;;) {
		json_t *msg = recv_wire(c, deadline);

		if (!msg) {
			/* After a framing violation the reader stays failed; only EOF ends the wait. */
			if (errno == EBADMSG) {
				proto_reader_free(&c->reader);
				proto_reader_init(
				    &c->reader, HERD_DEFAULT_MAX_MESSAGE_SIZE, HERD_MAX_DEPTH);
				continue;
			}
			return errno == EPIPE ? 0 : -errno;
		}
		json_decref(msg);
	}
}

json_t *
ht_result(const json_t *reply)
{
	return json_object_get(reply, "result");
}

const char *
ht_error_name(const json_t *reply)
{
	json_t *err = json_object_get(reply, "error");

	if (!err)
		return NULL;
	return json_string_value(json_object_get(json_object_get(err, "data"), "name"));
}

int
ht_error_code(const json_t *reply)
{
	json_t *e = json_object_get(reply, "error");

	return e ? (int)json_integer_value(json_object_get(e, "code")) : 0;
}

long long
ht_int_result(const json_t *reply)
{
	json_t *r = ht_result(reply);

	return json_is_integer(r) ? json_integer_value(r) : LLONG_MIN;
}

const char *
ht_error_message(const json_t *reply)
{
	return json_string_value(json_object_get(json_object_get(reply, "error"), "message"));
}

json_t *
ht_error_data(const json_t *reply)
{
	return json_object_get(json_object_get(reply, "error"), "data");
}

bool
ht_lines_contain(const json_t *lines, const char *needle)
{
	const json_t *l;
	size_t i;

	json_array_foreach(lines, i, l) {
		if (json_is_string(l) && strstr(json_string_value(l), needle))
			return true;
	}
	return false;
}

const char *
ht_str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

const char *
ht_dump(const json_t *v)
{
	static char bufs[8][2048];
	static unsigned next;
	char *buf = bufs[next++ % 8];
	size_t n;

	if (!v)
		return "(null)";
	n = json_dumpb(v, buf, sizeof(bufs[0]) - 1, JSON_COMPACT | JSON_ENCODE_ANY);
	if (n >= sizeof(bufs[0]) - 1)
		strcpy(buf + sizeof(bufs[0]) - 5, "...");
	else
		buf[n] = '\0';
	return buf;
}
