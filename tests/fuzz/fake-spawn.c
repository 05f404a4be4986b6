/* SPDX-License-Identifier: MIT */
/*
 * The exec boundary of the dispatch fuzz target: daemon/spawn.c's three
 * functions, without a process. Everything above them runs as in herdd:
 * validation, sup_spawn() with its socketpair and capture pipes, the error
 * pipe, the channel, records, events and limits.
 *
 * The "process" gets a pid above the kernel's PID_MAX_LIMIT (4194304), so
 * the signals the supervisor sends it (pidfd_open, kill, its process group)
 * and the /proc reads it makes all find nothing (ESRCH): they can never
 * reach a real process. The fuzz driver plays the worker: it writes on the
 * worker's end of the channel and of the capture pipes, and makes it exit
 * through sup_reap() when the input says so. A path under /nonexistent
 * fails at exec with ENOENT, as it would for real: the report goes down the
 * error pipe and the process exits 127.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "fake-spawn.h"
#include "herdd.h"

#define FAKE_PID_BASE (1 << 30)

struct fake_worker fake_workers[FAKE_MAX];
unsigned fake_count;
bool fake_fail_next_clone;

/* Forgets the previous input's workers. */
void
fake_reset(void)
{
	fake_count = 0;
	fake_fail_next_clone = false;
}

/* Closes the worker's ends. */
void
fake_close_fds(struct fake_worker *f)
{
	if (f->channel >= 0)
		close(f->channel);
	for (int i = 0; i < 2; i++) {
		if (f->out[i] >= 0)
			close(f->out[i]);
		f->out[i] = -1;
	}
	f->channel = -1;
}

/* No low fds to hold: nothing is cloned. */
void
spawn_init(void)
{
}

/* A copy of fd the fake worker keeps (herdd closes its own after the spawn), or -1. */
static int
keep_fd(int fd)
{
	int k = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 3);

	if (k >= 0)
		fcntl(k, F_SETFL, O_NONBLOCK);
	return k;
}

/* Starts w's fake process; returns the error pipe's read end or -errno, as spawn.c does. */
int
spawn_start(struct worker *w, int channel_fd, int capture_fds[2], int cgroup_fd)
{
	struct fake_worker *f;
	int rep[2];

	if (fake_fail_next_clone || fake_count == FAKE_MAX) {
		fake_fail_next_clone = false;
		w->spawn_stage = "fork";
		return -EAGAIN;
	}
	if (pipe2(rep, O_CLOEXEC) < 0)
		return -errno;
	f = &fake_workers[fake_count];
	*f = (struct fake_worker){ .pid = FAKE_PID_BASE + (pid_t)fake_count, .exit_status = -1 };
	f->channel = keep_fd(channel_fd);
	f->out[0] = keep_fd(capture_fds[0]);
	f->out[1] = keep_fd(capture_fds[1]);
	if (!strncmp(w->path, "/nonexistent", 12)) {
		struct spawn_report report = { "exec", ENOENT };

		if (write(rep[1], &report, sizeof(report)) == (ssize_t)sizeof(report))
			f->exit_status = 127 << 8;
	}
	/* Closed as a successful exec closes it: EOF says the exec went through. */
	close(rep[1]);
	fcntl(rep[0], F_SETFL, O_NONBLOCK);
	w->pid = f->pid;
	fake_count++;
	return rep[0];
}
