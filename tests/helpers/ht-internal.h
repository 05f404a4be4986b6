/* SPDX-License-Identifier: MIT */
/* What the herd_test files share and tests do not see. */
#ifndef HT_INTERNAL_H
#define HT_INTERNAL_H

#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* Milliseconds left until deadline (ht_now_ms time), 0 once passed: a poll timeout. */
int ht__remaining(int64_t deadline);
/*
 * One read(2) of up to len bytes once fd is readable, with a deadline (ht_now_ms
 * time). Returns the bytes read, 0 at EOF, -ETIMEDOUT or -errno.
 */
ssize_t ht__read_by(int fd, void *buf, size_t len, int64_t deadline);
/* Drops pid from the teardown registry (it was reaped). */
void ht__untrack(pid_t pid);
/* Stops every daemon ht_daemon_start() started. */
void ht__daemons_teardown(void);
/* Removes every directory ht_tmpdir() made. */
void ht__tmpdirs_teardown(void);
/* Keeps v (stolen) until the test's teardown, like ht_args() values. Returns v. */
json_t *ht__keep(json_t *v);
/* Frees the values ht_args() and ht__keep() kept for the test. */
void ht__args_release(void);
/* In a forked child: drop the parent's daemons and temp dirs from the registry. */
void ht__forget_all(void);

#endif
