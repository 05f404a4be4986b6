/* SPDX-License-Identifier: MIT */
/*
 * What herdd reads from /proc about its workers: state, CPU time and memory,
 * and process trees (children of every thread, recursively), plus signalling
 * a process found there without ever hitting a recycled pid.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

#include "herdd.h"

/*
 * Reads /proc/PID/stat into buf and returns what follows the command name (the
 * state letter first), or NULL with errno set. A pointer, not an out-parameter
 * beside "-errno": the compiler cannot prove errno nonzero, and at -O3 it
 * warned that the out-parameter might be read unset.
 */
static const char *
read_stat(pid_t pid, char *buf, size_t size)
{
	char path[64], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0) {
		errno = EIO;
		return NULL;
	}
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: parse after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ') {
		errno = EIO;
		return NULL;
	}
	return p + 2;
}

/* Reads state, utime+stime (ticks) and RSS (KiB) of pid. Returns 0 or -errno. */
int
proc_stat(pid_t pid, char *state, uint64_t *cpu_ticks, uint64_t *rss_kib)
{
	char buf[1024];
	const char *p = read_stat(pid, buf, sizeof(buf));
	unsigned long utime, stime;
	long rss;

	if (!p)
		return -errno;
	if (sscanf(p,
	        "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d "
	        "%*d %*u %*u %ld",
	        state, &utime, &stime, &rss) != 4)
		return -EIO;
	if (cpu_ticks)
		*cpu_ticks = (uint64_t)utime + stime;
	if (rss_kib)
		*rss_kib = rss > 0 ? (uint64_t)rss * (uint64_t)(sysconf(_SC_PAGESIZE) / 1024) : 0;
	return 0;
}

/*
 * Appends the pids listed in a task's children file. The list is read to its
 * end: herdd's own holds every worker, far more than one read returns.
 */
static void
read_children(int fd, pid_t parent, struct proc_kid *out, size_t *n, size_t max)
{
	char buf[4096];
	size_t held = 0;

	while (*n < max) {
		ssize_t len = read(fd, buf + held, sizeof(buf) - 1 - held);
		char *p, *end, *last;

		if (len < 0 && errno == EINTR)
			continue;
		if (len <= 0)
			break;
		held += (size_t)len;
		buf[held] = '\0';
		/* Every pid is followed by a space; a pid cut by the read waits for the rest. */
		last = strrchr(buf, ' ');
		if (!last) {
			if (held == sizeof(buf) - 1)
				break; /* not the format we know */
			continue;
		}
		*last = '\0';
		for (p = buf; *n < max; p = end) {
			long v = strtol(p, &end, 10);

			if (end == p)
				break;
			if (v > 0) {
				out[*n].pid = (pid_t)v;
				out[*n].parent = parent;
				(*n)++;
			}
		}
		held -= (size_t)(last + 1 - buf);
		memmove(buf, last + 1, held);
	}
}

/* Appends the children of pid (every thread's) to out. */
void
proc_children(pid_t pid, struct proc_kid *out, size_t *n, size_t max)
{
	char path[64];
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir)) && *n < max) {
		char file[320];
		int fd;

		if (d->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "/proc/%d/task/%s/children", (int)pid, d->d_name);
		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		read_children(fd, pid, out, n, max);
		close(fd);
	}
	closedir(dir);
}

/* Every descendant of root, breadth first. Returns how many. */
size_t
proc_tree(pid_t root, struct proc_kid *out, size_t max)
{
	size_t n = 0, i;

	proc_children(root, out, &n, max);
	for (i = 0; i < n; i++)
		proc_children(out[i].pid, out, &n, max);
	return n;
}

/* Parent pid of pid from /proc, or -1. */
pid_t
proc_ppid(pid_t pid)
{
	char buf[1024];
	const char *p = read_stat(pid, buf, sizeof(buf));
	int ppid;

	if (!p || sscanf(p, "%*c %d", &ppid) != 1)
		return -1;
	return (pid_t)ppid;
}

/*
 * Signals a process found in /proc without ever hitting a recycled pid: the
 * pidfd pins one process, and its parent, read after opening the pidfd, proves
 * it is the one we saw (or an orphan already handed to herdd, the subreaper).
 */
void
proc_signal(const struct proc_kid *k, int sig)
{
	int pfd = pidfd_open(k->pid, 0);
	pid_t ppid;

	if (pfd < 0)
		return;
	ppid = proc_ppid(k->pid);
	if (ppid == k->parent || ppid == herdd.pid)
		pidfd_send_signal(pfd, sig, NULL, 0);
	close(pfd);
}
