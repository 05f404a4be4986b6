/* SPDX-License-Identifier: MIT */
/*
 * Pids: states from /proc, waits through pidfds, forked functions, and the
 * registry that lets a test teardown kill and reap everything it started.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "herd-test.h"
#include "ht-internal.h"

#define HT_MAX_TRACKED 4096

struct tracked {
	pid_t pid;
	bool child;
};

static struct tracked tracked[HT_MAX_TRACKED];
static size_t n_tracked;

/*
 * The guardian: a process in a session of its own that learns every tracked
 * pid through a pipe and SIGKILLs those still alive when the pipe closes
 * without a "clear" first, that is when the test died without its teardown.
 * Check ends a failed test with _exit() and kills only the test's process
 * group, so workers' descendants would otherwise outlive a failed test.
 */
static int guard_fd = -1;
static pid_t guard_pid;

static void
guardian_main(int fd, int ready_fd)
{
	static pid_t pids[HT_MAX_TRACKED];
	size_t n = 0, i;
	pid_t p;

	/* Hold nothing of the test's: a kept socket would keep a master connected. */
	setsid();
	if (dup2(fd, 3) < 0 || dup2(ready_fd, 4) < 0)
		_exit(1);
	fd = 3;
	close_range(5, ~0U, 0);
	/* The test goes on only now: until here we held copies of all its fds. */
	if (write(4, "g", 1) != 1)
		_exit(1);
	close(4);
	for (;;) {
		ssize_t k = read(fd, &p, sizeof(p));

		if (k < 0 && errno == EINTR)
			continue;
		if (k != (ssize_t)sizeof(p))
			break;
		if (p == 0)
			n = 0; /* clear: the teardown ran */
		else if (n < HT_MAX_TRACKED)
			pids[n++] = p;
	}
	for (i = 0; i < n; i++) {
		char st = ht_pid_state(pids[i]);

		if (st && st != 'Z')
			kill(pids[i], SIGKILL);
	}
	_exit(0);
}

static void
guard(pid_t pid)
{
	if (guard_fd < 0) {
		struct pollfd pfd = { .events = POLLIN };
		int p[2], ready[2];
		char byte;

		if (pipe2(p, O_CLOEXEC) < 0)
			return;
		if (pipe2(ready, O_CLOEXEC) < 0) {
			close(p[0]);
			close(p[1]);
			return;
		}
		fflush(NULL);
		guard_pid = fork();
		if (guard_pid == 0) {
			close(p[1]);
			close(ready[0]);
			guardian_main(p[0], ready[1]);
		}
		close(p[0]);
		close(ready[1]);
		if (guard_pid < 0) {
			close(p[1]);
			close(ready[0]);
			return;
		}
		guard_fd = p[1];
		/* A socket the test closes must really close: wait until the guardian let go of it. */
		pfd.fd = ready[0];
		if (poll(&pfd, 1, ht_ms(10000)) != 1 || read(ready[0], &byte, 1) != 1)
			fprintf(stderr, "herd_test: the guardian did not start\n");
		close(ready[0]);
	}
	if (write(guard_fd, &pid, sizeof(pid)) != (ssize_t)sizeof(pid))
		fprintf(stderr, "herd_test: the guardian did not take pid %d\n", (int)pid);
}

/* Tells the guardian all is cleaned up, and reaps it. */
static void
guard_release(void)
{
	pid_t zero = 0;
	int st;

	if (guard_fd < 0)
		return;
	if (write(guard_fd, &zero, sizeof(zero)) < 0)
		fprintf(stderr, "herd_test: the guardian went away\n");
	close(guard_fd);
	guard_fd = -1;
	waitpid(guard_pid, &st, 0);
}

/* In a forked child: the parent's guardian is not ours. */
static void
guard_forget(void)
{
	if (guard_fd >= 0)
		close(guard_fd);
	guard_fd = -1;
}

int64_t
ht_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left until deadline, never negative (poll's argument). */
int
ht__remaining(int64_t deadline)
{
	int64_t left = deadline - ht_now_ms();

	return left < 0 ? 0 : (int)left;
}

static void
track(pid_t pid, bool child)
{
	size_t i;

	for (i = 0; i < n_tracked; i++) {
		if (tracked[i].pid == pid) {
			tracked[i].child = tracked[i].child || child;
			return;
		}
	}
	if (n_tracked == HT_MAX_TRACKED) {
		fprintf(stderr, "herd_test: too many tracked pids, %d not tracked\n", (int)pid);
		return;
	}
	tracked[n_tracked].pid = pid;
	tracked[n_tracked].child = child;
	n_tracked++;
	guard(pid);
}

void
ht_track_child(pid_t pid)
{
	track(pid, true);
}

void
ht_track_pid(pid_t pid)
{
	track(pid, false);
}

/* Forgets a child already reaped, so teardown never signals a recycled pid. */
void
ht__untrack(pid_t pid)
{
	size_t i;

	for (i = 0; i < n_tracked; i++) {
		if (tracked[i].pid == pid) {
			tracked[i] = tracked[--n_tracked];
			return;
		}
	}
}

static int
pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* Polls a pidfd until the process exits or the deadline passes. Returns 0, -ETIMEDOUT or -errno. */
static int
pidfd_wait_exit(int pidfd, int64_t deadline)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int r;

	for (;;) {
		r = poll(&p, 1, ht__remaining(deadline));
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

void
ht_teardown(void)
{
	size_t i;

	ht__daemons_teardown();
	/* Signal everything first so they die in parallel, then reap our own. */
	for (i = 0; i < n_tracked; i++) {
		if (tracked[i].child || ht_pid_alive(tracked[i].pid))
			kill(tracked[i].pid, SIGKILL);
	}
	for (i = 0; i < n_tracked; i++) {
		if (tracked[i].child)
			(void)ht_wait_child(tracked[i].pid, 5000, NULL);
		else
			(void)ht_wait_pid_gone(tracked[i].pid, 5000);
	}
	n_tracked = 0;
	/* Orphans adopted as a subreaper are ours to reap too (a few rounds: they may fork). */
	for (i = 0; i < 8; i++) {
		pid_t kids[64];
		int n = ht_list_children(getpid(), kids, 64);
		int k;

		if (n <= 0)
			break;
		for (k = 0; k < n && k < 64; k++) {
			if (kids[k] == guard_pid)
				continue;
			kill(kids[k], SIGKILL);
			(void)ht_wait_child(kids[k], 5000, NULL);
		}
		if (n == 1 && kids[0] == guard_pid)
			break;
	}
	guard_release();
	ht__tmpdirs_teardown();
	ht__args_release();
}

/* Children of ours still running (zombies and the guardian do not count), into kids[0..64). */
static int
live_children(pid_t *kids)
{
	pid_t all[64];
	int n = ht_list_children(getpid(), all, 64), i, k = 0;

	for (i = 0; i < n && i < 64; i++) {
		if (all[i] != guard_pid && ht_pid_alive(all[i]))
			kids[k++] = all[i];
	}
	return n < 0 ? n : k;
}

int
ht_children_left(int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	pid_t kids[64];
	int n, i;

	while ((n = live_children(kids)) > 0) {
		if (ht_wait_pid_gone(kids[0], ht__remaining(deadline)) < 0)
			break;
	}
	for (i = 0; i < n; i++)
		fprintf(stderr, "herd_test: child %d (state %c) is left\n", (int)kids[i],
		    ht_pid_state(kids[i]) ?: '?');
	return n;
}

int
ht_become_subreaper(void)
{
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		return -errno;
	return 0;
}

/* Reads /proc/<pid>/stat and returns the state letter and ppid. Returns 0 or -errno. */
static int
read_stat(pid_t pid, char *state, pid_t *ppid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;
	int pp;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may contain anything, even ") "; the state follows the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1, " %c %d", state, &pp) != 2)
		return -EINVAL;
	*ppid = pp;
	return 0;
}

char
ht_pid_state(pid_t pid)
{
	char state;
	pid_t ppid;

	if (read_stat(pid, &state, &ppid) < 0)
		return 0;
	return state;
}

pid_t
ht_pid_ppid(pid_t pid)
{
	char state;
	pid_t ppid;
	int r = read_stat(pid, &state, &ppid);

	return r < 0 ? r : ppid;
}

bool
ht_pid_alive(pid_t pid)
{
	char st;

	if (pid <= 0 || (kill(pid, 0) < 0 && errno == ESRCH))
		return false;
	st = ht_pid_state(pid);
	return st != 0 && st != 'Z' && st != 'X';
}

bool
ht_pid_is_zombie(pid_t pid)
{
	return ht_pid_state(pid) == 'Z';
}

static int
proc_wait(pid_t pid, bool (*still)(pid_t pid), int64_t deadline)
{
	while (still(pid)) {
		struct timespec ms = { 0, 1000000 };

		if (ht_now_ms() >= deadline)
			return -ETIMEDOUT;
		nanosleep(&ms, NULL);
	}
	return 0;
}

int
ht_wait_pid_while(pid_t pid, bool (*still)(pid_t pid), int timeout_ms)
{
	return proc_wait(pid, still, ht_now_ms() + timeout_ms);
}

static bool
pid_listed(pid_t pid)
{
	return ht_pid_state(pid) != 0;
}

int
ht_wait_pid_gone(pid_t pid, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	int fd, r;

	if (!ht_pid_alive(pid))
		return 0;
	fd = pidfd_open_(pid);
	if (fd < 0 && errno == ENOSYS)
		return proc_wait(pid, ht_pid_alive, deadline);
	if (fd < 0)
		return errno == ESRCH ? 0 : -errno;
	r = pidfd_wait_exit(fd, deadline);
	close(fd);
	return r;
}

int
ht_wait_pid_reaped(pid_t pid, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	int r;

	if (ht_pid_ppid(pid) == getpid())
		return -ECHILD;
	r = ht_wait_pid_gone(pid, timeout_ms);
	if (r < 0)
		return r;
	return proc_wait(pid, pid_listed, deadline);
}

int
ht_wait_child(pid_t pid, int timeout_ms, int *status)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	int st = 0, fd, r;
	pid_t w;

	w = waitpid(pid, &st, WNOHANG);
	if (w == 0) {
		fd = pidfd_open_(pid);
		if (fd >= 0) {
			r = pidfd_wait_exit(fd, deadline);
			close(fd);
			if (r < 0)
				return r;
		}
		w = waitpid(pid, &st, 0);
	}
	if (w < 0)
		return -errno;
	ht__untrack(pid);
	if (status)
		*status = st;
	return 0;
}

/*
 * Calls fn(dir, name, ctx) for each entry of /proc/<pid>/<sub> (dot entries
 * skipped). Returns the sum of what fn returned, or -errno.
 */
static int
proc_each(
    pid_t pid, const char *sub, int (*fn)(const char *dir, const char *name, void *ctx), void *ctx)
{
	char path[64];
	struct dirent *de;
	DIR *d;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, sub);
	d = opendir(path);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		if (de->d_name[0] != '.')
			n += fn(path, de->d_name, ctx);
	}
	closedir(d);
	return n;
}

static int
count_one(const char *dir, const char *name, void *ctx)
{
	return 1;
}

long
ht_pid_rss_kib(pid_t pid)
{
	char path[64];
	long size, resident;
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fscanf(f, "%ld %ld", &size, &resident);
	fclose(f);
	return n == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : -1;
}

int
ht_count_fds(pid_t pid)
{
	int n = proc_each(pid, "fd", count_one, NULL);

	/* When pid is us, opendir's own fd is in the list. */
	return n >= 0 && pid == getpid() ? n - 1 : n;
}

/* 1 unless the fd dir/name names a /proc file. */
static int
count_held(const char *dir, const char *name, void *ctx)
{
	char path[384], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return 0;
	target[n] = '\0';
	return strncmp(target, "/proc/", 6) != 0;
}

int
ht_count_held_fds(pid_t pid)
{
	return proc_each(pid, "fd", count_held, NULL);
}

struct children {
	pid_t *out;
	size_t max;
	size_t n;
};

/* Appends the children of one thread (dir/name/children) to ctx. Returns how many. */
static int
task_children(const char *dir, const char *name, void *ctx)
{
	struct children *ch = ctx;
	char path[384];
	FILE *f;
	int c, n = 0;

	snprintf(path, sizeof(path), "%s/%s/children", dir, name);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fscanf(f, "%d", &c) == 1) {
		if (ch->n < ch->max)
			ch->out[ch->n] = c;
		ch->n++;
		n++;
	}
	fclose(f);
	return n;
}

int
ht_list_children(pid_t pid, pid_t *out, size_t max)
{
	struct children ch = { out, max, 0 };

	return proc_each(pid, "task", task_children, &ch);
}

int
ht_nobody(uid_t *uid, gid_t *gid)
{
	struct passwd *pw = getpwnam("nobody");

	if (!pw)
		return -ENOENT;
	*uid = pw->pw_uid;
	*gid = pw->pw_gid;
	return 0;
}

pid_t
ht_fork_fn(int (*fn)(void *arg), void *arg, uid_t uid, gid_t gid)
{
	pid_t parent = getpid();
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		/* Die with the test, and never outlive a parent that died before this line. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
			_exit(127);
		if (uid != (uid_t)-1 &&
		    (setgroups(0, NULL) < 0 || setgid(gid) < 0 || setuid(uid) < 0)) {
			fprintf(stderr, "herd_test: dropping to uid %d: %m\n", (int)uid);
			_exit(126);
		}
		/* The child has its own registry: it must not kill the parent's processes. */
		n_tracked = 0;
		guard_forget();
		ht__forget_all();
		_exit(fn(arg) & 0xff);
	}
	ht_track_child(pid);
	return pid;
}

int
ht_run_as_nobody(int (*fn)(void *arg), void *arg, int timeout_ms)
{
	uid_t uid;
	gid_t gid;
	pid_t pid;
	int st, r;

	r = ht_nobody(&uid, &gid);
	if (r < 0)
		return r;
	pid = ht_fork_fn(fn, arg, uid, gid);
	if (pid < 0)
		return pid;
	r = ht_wait_child(pid, timeout_ms, &st);
	if (r < 0)
		return r;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

ssize_t
ht__read_by(int fd, void *buf, size_t len, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int r = poll(&p, 1, ht__remaining(deadline));
		ssize_t n;

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -ETIMEDOUT;
		n = read(fd, buf, len);
		if (n >= 0)
			return n;
		if (errno != EINTR)
			return -errno;
	}
}

ssize_t
ht_read_all(int fd, char *buf, size_t size, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	size_t len = 0;
	ssize_t n;

	do {
		n = ht__read_by(fd, buf + len, size - 1 - len, deadline);
		if (n > 0)
			len += (size_t)n;
	} while (n > 0 && len < size - 1);
	buf[len] = '\0';
	return n < 0 ? n : (ssize_t)len;
}

int
ht_read_pids(int fd, pid_t *pids, int n, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	size_t want = (size_t)n * sizeof(*pids), got = 0;

	while (got < want) {
		ssize_t k = ht__read_by(fd, (char *)pids + got, want - got, deadline);

		if (k <= 0)
			return k < 0 ? (int)k : -EPIPE;
		got += (size_t)k;
	}
	return n;
}

/* In a forked child: stdin from /dev/null, stdout/stderr to the given fds, exec. */
static void
exec_with(const char *const *argv, int out_fd, int err_fd)
{
	int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (!argv[0]) {
		fprintf(stderr, "herd_test: no program to run\n");
		_exit(127);
	}
	if (null < 0 || dup2(null, 0) < 0 || (out_fd >= 0 && dup2(out_fd, 1) < 0) ||
	    (err_fd >= 0 && dup2(err_fd, 2) < 0))
		_exit(127);
	execv(argv[0], (char *const *)argv);
	fprintf(stderr, "herd_test: exec %s: %m\n", argv[0]);
	_exit(127);
}

/* Appends what fd has to *buf; closes fd and sets it to -1 at EOF. */
static int
slurp(int *fd, char **buf, size_t *len)
{
	char chunk[4096];
	ssize_t n = read(*fd, chunk, sizeof(chunk));
	char *nb;

	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -errno;
	if (n == 0) {
		close(*fd);
		*fd = -1;
		return 0;
	}
	nb = realloc(*buf, *len + (size_t)n + 1);
	if (!nb)
		return -ENOMEM;
	memcpy(nb + *len, chunk, (size_t)n);
	*len += (size_t)n;
	nb[*len] = '\0';
	*buf = nb;
	return 0;
}

int
ht_run(const char *const *argv, char **ret_out, char **ret_err, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	int out[2], err[2], st, r = 0;
	char *bufs[2] = { NULL, NULL };
	size_t lens[2] = { 0, 0 };
	int fds[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	if (pipe2(err, O_CLOEXEC) < 0) {
		close(out[0]);
		close(out[1]);
		return -errno;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		exec_with(argv, out[1], err[1]);
	close(out[1]);
	close(err[1]);
	if (pid < 0) {
		close(out[0]);
		close(err[0]);
		return -errno;
	}
	ht_track_child(pid);
	fds[0] = out[0];
	fds[1] = err[0];
	while (r == 0 && (fds[0] >= 0 || fds[1] >= 0)) {
		struct pollfd p[2] = { { .fd = fds[0], .events = POLLIN },
			{ .fd = fds[1], .events = POLLIN } };
		int n = poll(p, 2, ht__remaining(deadline));
		int i;

		if (n == 0)
			r = -ETIMEDOUT;
		for (i = 0; n > 0 && i < 2; i++) {
			if (fds[i] >= 0 && p[i].revents)
				r = slurp(&fds[i], &bufs[i], &lens[i]);
		}
	}
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	if (r == 0)
		r = ht_wait_child(pid, ht__remaining(deadline), &st);
	if (r < 0) {
		kill(pid, SIGKILL);
		(void)ht_wait_child(pid, 5000, NULL);
		free(bufs[0]);
		free(bufs[1]);
		return r;
	}
	if (ret_out)
		*ret_out = bufs[0] ? bufs[0] : strdup("");
	else
		free(bufs[0]);
	if (ret_err)
		*ret_err = bufs[1] ? bufs[1] : strdup("");
	else
		free(bufs[1]);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

pid_t
ht_start_reader(const char *const *argv, int *ret_fd)
{
	int out[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) < 0)
		return -errno;
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		exec_with(argv, out[1], -1);
	close(out[1]);
	if (pid < 0) {
		close(out[0]);
		return -errno;
	}
	ht_track_child(pid);
	*ret_fd = out[0];
	return pid;
}

int
ht_read_line(struct ht_lines *l, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	memmove(l->buf, l->buf + l->skip, l->len - l->skip);
	l->len -= l->skip;
	l->skip = 0;
	for (;;) {
		char *nl = memchr(l->buf, '\n', l->len);
		ssize_t n;

		if (nl) {
			*nl = '\0';
			l->skip = (size_t)(nl - l->buf) + 1;
			return (int)(nl - l->buf);
		}
		if (l->len == sizeof(l->buf))
			return -ENOBUFS;
		n = ht__read_by(l->fd, l->buf + l->len, sizeof(l->buf) - l->len, deadline);
		if (n <= 0)
			return n < 0 ? (int)n : -EPIPE;
		l->len += (size_t)n;
	}
}
