/* SPDX-License-Identifier: MIT */
/*
 * Waits on the file system: a path appearing or going away (inotify on its
 * directory, no polling), and a Unix socket starting to accept connections.
 * And a whole file read or written at once.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "herd-test.h"
#include "ht-internal.h"

/*
 * Waits until path exists (want_present) or not, or pid (if > 0) exits, or
 * the deadline passes. Without pidfds (valgrind) a dead pid shows as a timeout.
 */
static int
wait_path(const char *path, pid_t pid, bool want_present, int64_t deadline)
{
	char dir[256];
	char *slash;
	int in, pidfd = -1, r = -ETIMEDOUT;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (in < 0)
		return -errno;
	if (inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM) < 0) {
		r = -errno;
		goto out;
	}
	if (pid > 0)
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		struct pollfd p[2] = { { .fd = in, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN } };
		char buf[4096];
		int left;

		/* Checked after the watch exists, so no change can slip between. */
		if ((access(path, F_OK) == 0) == want_present) {
			r = 0;
			break;
		}
		left = ht__remaining(deadline);
		if (left <= 0)
			break;
		if (poll(p, pidfd >= 0 ? 2 : 1, left) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (pidfd >= 0 && (p[1].revents & POLLIN)) {
			r = (access(path, F_OK) == 0) == want_present ? 0 : -ECHILD;
			break;
		}
		while (read(in, buf, sizeof(buf)) > 0)
			;
	}
out:
	if (pidfd >= 0)
		close(pidfd);
	close(in);
	return r;
}

int
ht_wait_path(const char *path, pid_t pid, int timeout_ms)
{
	return wait_path(path, pid, true, ht_now_ms() + timeout_ms);
}

int
ht_wait_path_gone(const char *path, int timeout_ms)
{
	return wait_path(path, 0, false, ht_now_ms() + timeout_ms);
}

int
ht_wait_listening(const char *path, pid_t pid, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	for (;;) {
		int fd;

		r = wait_path(path, pid, true, deadline);
		if (r < 0)
			break;
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
		close(fd);
		if (r != -ECONNREFUSED)
			break;
		/* The file appears at bind(), a moment before listen(): no event marks the
		 * rest, so a refused connect is retried every millisecond until the deadline. */
		if (ht__remaining(deadline) <= 0 || (pid > 0 && !ht_pid_alive(pid))) {
			r = ht__remaining(deadline) <= 0 ? -ETIMEDOUT : -ECHILD;
			break;
		}
		poll(NULL, 0, 1);
	}
	if (r < 0)
		fprintf(
		    stderr, "herd_test: %s does not accept connections: %s\n", path, strerror(-r));
	return r;
}

char *
ht_read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "re");
	char *text = NULL;
	size_t len = 0, cap = 0, n;
	int err = 0;

	if (!f)
		return NULL;
	do {
		if (cap - len < 4096) {
			char *more = realloc(text, cap + 65536);

			if (!more) {
				err = ENOMEM;
				break;
			}
			text = more;
			cap += 65536;
		}
		n = fread(text + len, 1, cap - len - 1, f);
		len += n;
	} while (n > 0);
	if (!err && ferror(f))
		err = EIO;
	fclose(f);
	if (err) {
		free(text);
		errno = err;
		return NULL;
	}
	text[len] = '\0';
	if (ret_len)
		*ret_len = len;
	return text;
}

int
ht_write_file(const char *path, mode_t mode, const char *fmt, ...)
{
	FILE *f = fopen(path, "we");
	va_list ap;
	int r;

	if (!f)
		return -errno;
	va_start(ap, fmt);
	r = vfprintf(f, fmt, ap) < 0 ? -EIO : 0;
	va_end(ap);
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && mode && chmod(path, mode) < 0)
		r = -errno;
	return r;
}
