/* SPDX-License-Identifier: MIT */
/*
 * Logging: one line per event, to stderr (a service manager's journal takes
 * it from there) or to a file reopened on SIGHUP for log rotation. When
 * stderr is the journal's stream (JOURNAL_STREAM names its device and inode,
 * see sd-daemon(3)), each line starts with its syslog priority, "<4>", and
 * leaves out the name and pid the journal records itself. Values a
 * client sends (environment, arguments) are never logged, only names.
 *
 * Names, paths and a worker's messages come from peers, so every line is
 * escaped here (proto_text_escape()) rather than at each call site: no text
 * can end a line early and write a forged one after it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "herdd.h"

static enum log_level threshold = LOG_LEVEL_INFO;
static char *log_path;
static int log_fd = STDERR_FILENO;
static bool to_journal;

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static const int level_priorities[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };

/* true when stderr is the stream the service manager connected to the journal. */
static bool
stderr_is_journal(void)
{
	const char *v = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!v || sscanf(v, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

/* Parses a level name. */
int
log_parse_level(const char *s)
{
	int level = proto_name_find(level_names, PROTO_LEN(level_names), s);

	return level < 0 ? -EINVAL : level;
}

static int
open_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0640);

	return fd < 0 ? -errno : fd;
}

/* Sets level and destination. */
int
log_open(enum log_level level, const char *path)
{
	threshold = level;
	to_journal = !path && stderr_is_journal();
	if (path) {
		int fd = open_file(path);

		if (fd < 0)
			return fd;
		free(log_path);
		log_path = strdup(path);
		if (!log_path) {
			close(fd);
			return -ENOMEM;
		}
		log_fd = fd;
	}
	return 0;
}

/* Reopens the file so a rotated log is not written to forever. */
void
log_reopen(void)
{
	int fd;

	if (!log_path)
		return;
	fd = open_file(log_path);
	if (fd < 0) {
		log_warn("reopening log file %s: %s; keeping the old one", log_path, strerror(-fd));
		return;
	}
	close(log_fd);
	log_fd = fd;
	log_info("log file reopened");
}

/* Closes the log file. */
void
log_close(void)
{
	if (log_path) {
		close(log_fd);
		log_fd = STDERR_FILENO;
		free(log_path);
		log_path = NULL;
	}
}

/* Bytes of one formatted message kept before escaping; the line's buffer caps it again. */
#define LOG_TEXT_MAX 2048

static void
log_v(enum log_level level, const char *fmt, va_list ap)
{
	char buf[LOG_TEXT_MAX + 128], text[LOG_TEXT_MAX + 4];
	struct timespec ts;
	struct tm tm;
	int n = 0, m;
	size_t len;

	if (level < threshold)
		return;
	/* A file has no journal to add timestamps; stderr usually has. */
	if (log_path) {
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = (int)strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, ".%03ldZ ", ts.tv_nsec / 1000000);
	}
	if (to_journal)
		m = snprintf(
		    buf, sizeof(buf), "<%d>%s: ", level_priorities[level], level_names[level]);
	else
		m = snprintf(buf + n, sizeof(buf) - (size_t)n, "herdd[%d]: %s: ", (int)getpid(),
		    level_names[level]);
	if (m > 0)
		n += m;
	m = vsnprintf(text, sizeof(text), fmt, ap);
	len = m < 0 ? 0 : (size_t)m < sizeof(text) ? (size_t)m : sizeof(text) - 1;
	/* A cut by vsnprintf may split a character: end on a boundary within LOG_TEXT_MAX. */
	if (len > LOG_TEXT_MAX)
		len = (size_t)proto_text_prec(text, LOG_TEXT_MAX);
	n += (int)proto_text_escape(buf + n, sizeof(buf) - (size_t)n - 1, text, len);
	buf[n++] = '\n';
	/* One write per line keeps lines whole when several processes share the file. */
	if (write(log_fd, buf, (size_t)n) < 0) {
		/* Nowhere left to report it. */
	}
}

/* Logs one line at level. */
void
log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(level, fmt, ap);
	va_end(ap);
}

/* Logs and exits: only for failures before the daemon serves anyone. */
void
fatal(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_v(LOG_LEVEL_ERROR, fmt, ap);
	va_end(ap);
	exit(1);
}
