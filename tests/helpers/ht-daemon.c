/* SPDX-License-Identifier: MIT */
/*
 * A private herdd per test: a temp dir, the daemon on a socket in it, and
 * readiness taken from sd_notify's READY=1 on a datagram socket we bind, so
 * no test ever guesses how long start-up takes.
 */
#define _XOPEN_SOURCE_EXTENDED 1
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "herd-test.h"
#include "ht-internal.h"

#define HT_MAX_DAEMONS      8
#define HT_MAX_TMPDIRS      16
#define HT_READY_TIMEOUT_MS 10000

static struct ht_daemon *daemons[HT_MAX_DAEMONS];
static char *tmpdirs[HT_MAX_TMPDIRS];

const char *
ht_env_path(const char *var)
{
	const char *p = getenv(var);

	if (!p || !*p) {
		fprintf(stderr,
		    "herd_test: environment variable %s is not set (run through meson test)\n",
		    var);
		return NULL;
	}
	return p;
}

int
ht_tmpdir(char *buf, size_t len)
{
	size_t i;

	if (snprintf(buf, len, "/tmp/herd-test-XXXXXX") >= (int)len)
		return -ENAMETOOLONG;
	if (!mkdtemp(buf))
		return -errno;
	for (i = 0; i < HT_MAX_TMPDIRS; i++) {
		if (!tmpdirs[i]) {
			tmpdirs[i] = strdup(buf);
			break;
		}
	}
	return 0;
}

static int
remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	if (remove(path) < 0 && errno != ENOENT)
		fprintf(stderr, "herd_test: removing %s: %m\n", path);
	return 0;
}

static void
remove_tree(const char *dir)
{
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void
ht__tmpdirs_teardown(void)
{
	size_t i;

	for (i = 0; i < HT_MAX_TMPDIRS; i++) {
		if (tmpdirs[i]) {
			remove_tree(tmpdirs[i]);
			free(tmpdirs[i]);
			tmpdirs[i] = NULL;
		}
	}
}

void
ht__forget_all(void)
{
	size_t i;

	/* The memory stays with the parent's copy; the child only forgets. */
	for (i = 0; i < HT_MAX_DAEMONS; i++)
		daemons[i] = NULL;
	for (i = 0; i < HT_MAX_TMPDIRS; i++)
		tmpdirs[i] = NULL;
}

int
ht_notify_bind(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

bool
ht_notify_wait(int fd, const char *want, char *seen, size_t len, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - ht_now_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char buf[1024];
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return false;
		n = recv(fd, buf, sizeof(buf) - 1, 0);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		strncat(seen, buf, len - strlen(seen) - 2);
		strcat(seen, "\n");
		if (strstr(buf, want))
			return true;
	}
}

/* Reads every queued datagram; returns 1 if one carried a READY=1 line. */
static int
drain_notify(int fd)
{
	char buf[4096];
	int ready = 0;
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf) - 1, 0)) > 0) {
		char *line, *save = NULL;

		buf[n] = '\0';
		for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (strcmp(line, "READY=1") == 0)
				ready = 1;
		}
	}
	return ready;
}

static void
exec_herdd(
    const char *herdd, struct ht_daemon *d, const char *notify, const char *const *extra_argv)
{
	const char *argv[64];
	size_t n = 0;

	argv[n++] = herdd;
	argv[n++] = "--socket";
	argv[n++] = d->socket;
	while (extra_argv && *extra_argv && n < 63)
		argv[n++] = *extra_argv++;
	argv[n] = NULL;
	setenv("NOTIFY_SOCKET", notify, 1);
	setenv("XDG_RUNTIME_DIR", d->dir, 1);
	execv(herdd, (char *const *)argv);
	fprintf(stderr, "herd_test: exec %s: %m\n", herdd);
	_exit(127);
}

/* Waits for READY=1 or herdd's exit. Returns 0, -ETIMEDOUT or -ECHILD (it exited). */
static int
wait_ready(struct ht_daemon *d)
{
	int64_t deadline = ht_now_ms() + HT_READY_TIMEOUT_MS;
	int pidfd = (int)syscall(SYS_pidfd_open, d->pid, 0);
	int r = -ETIMEDOUT;

	for (;;) {
		struct pollfd p[2] = { { .fd = d->notify_fd, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN } };
		int n = poll(p, pidfd >= 0 ? 2 : 1, ht__remaining(deadline));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if ((p[0].revents & POLLIN) && drain_notify(d->notify_fd)) {
			r = 0;
			break;
		}
		if (pidfd >= 0 && (p[1].revents & POLLIN)) {
			r = -ECHILD;
			break;
		}
	}
	if (pidfd >= 0)
		close(pidfd);
	return r;
}

static void
register_daemon(struct ht_daemon *d)
{
	size_t i;

	for (i = 0; i < HT_MAX_DAEMONS; i++) {
		if (!daemons[i]) {
			daemons[i] = d;
			return;
		}
	}
	fprintf(stderr, "herd_test: too many daemons; pid %d only tracked by pid\n", (int)d->pid);
}

struct ht_daemon *
ht_daemon_start(const char *const *extra_argv)
{
	const char *herdd = ht_env_path("HERDD");
	char notify[sizeof(((struct ht_daemon *)0)->dir) + 16];
	struct ht_daemon *d;
	pid_t parent = getpid();
	int r;

	if (!herdd) {
		errno = ENOENT;
		return NULL;
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	d->notify_fd = -1;
	d->exit_status = -1;
	r = ht_tmpdir(d->dir, sizeof(d->dir));
	if (r < 0)
		goto fail;
	snprintf(d->socket, sizeof(d->socket), "%s/herdd.sock", d->dir);
	snprintf(notify, sizeof(notify), "%s/notify", d->dir);
	r = ht_notify_bind(notify);
	if (r < 0)
		goto fail;
	d->notify_fd = r;

	fflush(NULL);
	d->pid = fork();
	if (d->pid < 0) {
		r = -errno;
		goto fail;
	}
	if (d->pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
			_exit(127);
		exec_herdd(herdd, d, notify, extra_argv);
	}
	ht_track_child(d->pid);
	register_daemon(d);

	r = wait_ready(d);
	if (r < 0) {
		fprintf(stderr, "herd_test: herdd pid %d %s\n", (int)d->pid,
		    r == -ECHILD ? "exited before READY=1" : "sent no READY=1 within 10 s");
		ht_daemon_stop(d, 1000);
		errno = r == -ECHILD ? ECHILD : ETIMEDOUT;
		return NULL;
	}
	/*
	 * READY=1 is all we wait for. Nobody reads the socket from now on, so
	 * remove it: later notifications (STATUS=...) then fail at once instead
	 * of filling the queue and blocking a daemon that sends them blocking.
	 */
	close(d->notify_fd);
	d->notify_fd = -1;
	unlink(notify);
	return d;

fail:
	fprintf(stderr, "herd_test: starting herdd: %s\n", strerror(-r));
	if (d->notify_fd >= 0)
		close(d->notify_fd);
	free(d);
	errno = -r;
	return NULL;
}

int
ht_daemon_kill(struct ht_daemon *d)
{
	int st, r;

	if (d->pid <= 0)
		return -ESRCH;
	if (kill(d->pid, SIGKILL) < 0)
		return -errno;
	r = ht_wait_child(d->pid, 5000, &st);
	if (r < 0)
		return r;
	d->exit_status = st;
	d->pid = 0;
	return 0;
}

int
ht_daemon_stop(struct ht_daemon *d, int timeout_ms)
{
	int st = 0, r = 0;

	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		r = ht_wait_child(d->pid, timeout_ms, &st);
		if (r == -ETIMEDOUT) {
			fprintf(stderr, "herd_test: herdd pid %d ignored SIGTERM for %d ms\n",
			    (int)d->pid, timeout_ms);
			kill(d->pid, SIGKILL);
			(void)ht_wait_child(d->pid, 5000, &st);
		}
		d->exit_status = st;
		d->pid = 0;
		if (r == 0)
			r = WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
	}
	if (d->notify_fd >= 0) {
		close(d->notify_fd);
		d->notify_fd = -1;
	}
	return r;
}

void
ht__daemons_teardown(void)
{
	size_t i;

	for (i = 0; i < HT_MAX_DAEMONS; i++) {
		if (daemons[i]) {
			ht_daemon_stop(daemons[i], 2000);
			free(daemons[i]);
			daemons[i] = NULL;
		}
	}
}
