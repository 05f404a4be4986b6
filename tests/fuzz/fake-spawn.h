/* SPDX-License-Identifier: MIT */
/* The dispatch fuzz target's exec boundary (fake-spawn.c) and the driver's view of it. */
#ifndef HERD_FAKE_SPAWN_H
#define HERD_FAKE_SPAWN_H

#include <stdbool.h>
#include <sys/types.h>

/* Workers one input may start; the next spawn fails at "fork" (EAGAIN). */
#define FAKE_MAX 16

/* A worker "process": the ends of its fds that the driver plays. */
struct fake_worker {
	pid_t pid;
	int channel; /* its fd 3 (non-blocking), -1 once closed */
	int out[2]; /* write ends of its captured stdout and stderr, or -1 */
	bool exited; /* herdd has reaped it */
	int exit_status; /* waitpid() status of an exit due (exec failed), or -1 */
};

extern struct fake_worker fake_workers[FAKE_MAX];
extern unsigned fake_count;
/* The next spawn fails in clone() (EAGAIN), as when the process table is full. */
extern bool fake_fail_next_clone;

/* Forgets the workers of the previous input (their fds are closed already). */
void fake_reset(void);
/* Closes what the process held; an exited process's fds close with it. */
void fake_close_fds(struct fake_worker *f);

#endif
