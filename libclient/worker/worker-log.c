/* SPDX-License-Identifier: MIT */
/*
 * herd_log(): a line on stderr (herdd captures it for failure reports) and an
 * item on every herd.logs stream open in this process (rpc_parallel's
 * async_log). A stream whose reader is slow loses items rather than growing
 * without bound; the loss is reported in the next item it can take.
 *
 * A message may hold a client's text (a method name) or any bytes the
 * application passed: the stderr line is escaped so it stays one line (herdd
 * shows it in stderr tails), and the stream item is made valid text so that
 * encoding it cannot fail.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/worker-internal.h"

static struct herd_request *subscribers;
static bool logging; /* writing to a stream may log: never recurse */

/* Bytes of one stderr line, escapes included; a longer message is cut on a character. */
#define LOG_LINE_MAX 16384

static const char *const level_names[] = {
	[HERD_LOG_ERR] = "err",
	[HERD_LOG_WARNING] = "warning",
	[HERD_LOG_NOTICE] = "notice",
	[HERD_LOG_INFO] = "info",
	[HERD_LOG_DEBUG] = "debug",
};

/* Levels below HERD_LOG_ERR are holes in the table: no name. */
HERD_EXPORT const char *
herd_log_level_name(int level)
{
	return proto_name_at(level_names, PROTO_LEN(level_names), (unsigned)level);
}

void
herd__log_subscribe(struct herd_request *req)
{
	req->log_subscribed = true;
	HERD__LIST_PREPEND(subscribers, req, log_prev, log_next);
	herd_request_ref(req);
}

void
herd__log_unsubscribe(struct herd_request *req)
{
	if (!req->log_subscribed)
		return;
	req->log_subscribed = false;
	HERD__LIST_REMOVE(subscribers, req, log_prev, log_next);
	herd_request_unref(req);
}

/* The wall-clock time as RFC 3339 UTC with milliseconds. */
static void
log_time(char *buf, size_t size)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

static json_t *
log_item(const char *time, const char *level, const char *message)
{
	return json_pack("{s:s, s:s, s:o}", "time", time, "level", level, "message",
	    proto_text_string(message, SIZE_MAX));
}

/* Writes a log item; one a slow reader cannot take now (still ours) is dropped. */
static int
log_write(herd_request *req, json_t *item)
{
	int r = herd_request_write(req, item);

	if (r == -EAGAIN)
		json_decref(item);
	return r;
}

static void
log_publish(int level, const char *message)
{
	char time[40], note[80];
	struct herd_request *req, *next;

	log_time(time, sizeof(time));
	for (req = subscribers; req; req = next) {
		next = req->log_next;
		if (req->log_dropped > 0 && herd_request_writable(req)) {
			snprintf(note, sizeof(note),
			    "%lu log messages were dropped: the reader is slow", req->log_dropped);
			if (log_write(req, log_item(time, "warning", note)) == 0)
				req->log_dropped = 0;
		}
		if (log_write(req, log_item(time, level_names[level], message)) < 0)
			req->log_dropped++;
	}
}

HERD_EXPORT void
herd_logv(int level, const char *fmt, va_list ap)
{
	char *message, *line;
	size_t len, size;

	if (!herd_log_level_name(level))
		level = HERD_LOG_ERR;
	if (!fmt || vasprintf(&message, fmt, ap) < 0)
		return;
	/* Debug messages go to herd.logs streams only, not to the captured stderr. */
	len = strlen(message);
	/* An escape takes at most four bytes per byte. */
	size = len < LOG_LINE_MAX / 4 ? len * 4 + 1 : LOG_LINE_MAX;
	line = level <= HERD_LOG_INFO ? malloc(size) : NULL;
	if (line) {
		proto_text_escape(line, size, message, len);
		fprintf(stderr, "%s: %s\n", level_names[level], line);
		free(line);
	}
	if (!logging) {
		logging = true;
		log_publish(level, message);
		logging = false;
	}
	free(message);
}

HERD_EXPORT void
herd_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	herd_logv(level, fmt, ap);
	va_end(ap);
}
