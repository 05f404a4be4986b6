/* SPDX-License-Identifier: MIT */
/*
 * What the libherd client tests share: the example worker started as an
 * executable (fork/exec rpc-example-worker --socket) or served in a forked
 * copy of the test (herd_serve on its own libev loop, no exec), with waits
 * that end on events and deadlines, and teardown by pid.
 */
#ifndef TEST_CLIENT_COMMON_H
#define TEST_CLIENT_COMMON_H

#include <stdbool.h>
#include <sys/types.h>

#include <herd/herd.h>

#include "herd-test.h"

enum tc_mode {
	TC_EXEC, /* $HERD_EXAMPLE_WORKER --socket PATH */
	TC_FORK, /* herd_serve() in a forked child of the test */
};

struct tc_worker {
	enum tc_mode mode;
	pid_t pid;
	char dir[128];
	char socket[192];
};

/*
 * Starts the example worker in a fresh temporary directory and waits (with a
 * deadline) until it accepts connections. init_json (may be NULL) is the
 * worker-state init argument. Returns 0 or -errno (message printed).
 */
int tc_worker_start(struct tc_worker *w, enum tc_mode mode, const char *init_json);
/* SIGKILLs the worker (if it still runs) and reaps it by pid. */
void tc_worker_kill(struct tc_worker *w);

/* Connects to w with conn_init (borrowed, may be NULL); fails the test on error. */
herd_conn *tc_connect(const struct tc_worker *w, json_t *conn_init);

/* Open fds of this process (entries of /proc/self/fd). */
int tc_count_fds(void);

/* A time budget scaled for slow runs (valgrind, sanitizers): ht_ms(). */
#define TC_MS(ms)   ht_ms(ms)
#define TC_USEC(ms) ((uint64_t)ht_ms(ms) * 1000u)

/* The mode a looped test case runs in: _i is 0 for exec, 1 for fork. */
#define TC_MODE(i) ((i) == 0 ? TC_EXEC : TC_FORK)

#endif

/* ---- a scripted peer, for what a well-behaved worker never does ---- */

/* One accepted connection of a fake worker: its fd and a line buffer. */
struct tc_peer {
	int fd;
	char buf[65536];
	size_t len;
};

struct tc_fake {
	pid_t pid;
	int result_fd; /* the child writes the script's result here, one byte */
	char socket[192];
};

/*
 * Binds and listens on DIR/fake.sock (so it is ready when this returns), then
 * forks a child that accepts one connection and runs script(peer, arg).
 * Returns 0 or -errno. The child is registered for teardown.
 */
int tc_fake_start(struct tc_fake *f, int (*script)(struct tc_peer *p, void *arg), void *arg);
/*
 * Waits for the script's result (0..255) and reaps the child. The result
 * travels through a pipe rather than the exit status: under valgrind a forked
 * copy of the test would fail its exit with leak reports about the test's own
 * objects. Returns the result or -errno.
 */
int tc_fake_finish(struct tc_fake *f, int timeout_ms);
/* The next line from the peer as JSON (new reference), or NULL on EOF/timeout. */
json_t *tc_peer_recv(struct tc_peer *p, int timeout_ms);
/* Writes text and a newline. Returns 0 or -errno. */
int tc_peer_send(struct tc_peer *p, const char *text);
/* Answers the hello that must come first with result (stolen). Returns 0 or -errno. */
int tc_peer_hello(struct tc_peer *p, json_t *result, int timeout_ms);

/*
 * json_pack() for call arguments: the value stays alive until
 * tc_args_release() (called by the tests' teardown), so arguments, which
 * libherd borrows, can be written inline.
 */
json_t *tc_args(const char *fmt, ...);
void tc_args_release(void);
