/* SPDX-License-Identifier: MIT */
/*
 * The example worker type (example-worker.h) for the libherd tests, run the
 * ways they need it:
 * - as the rpc-example-worker executable ($HERD_EXAMPLE_WORKER), with or
 *   without a stand-in for herdd's end of the fd-3 channel;
 * - served by herd_serve() in a forked copy of the test (its own loop);
 * - served on a thread of this process (libherd's rule: one loop, one
 *   thread), so a test can count this process's fds around it;
 * and a scripted fake worker for what a well-behaved worker never does.
 * Every start returns once the worker listens, so no test races it.
 */
#ifndef HT_EXAMPLE_H
#define HT_EXAMPLE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <ev.h>
#include <herd/herd-ev.h>
#include <herd/herd.h>

#include "example-worker.h"
#include "ht-check.h"

/* A time budget in microseconds (libherd's timeouts) scaled like ht_ms(). */
#define HT_USEC(ms) ((uint64_t)ht_ms(ms) * 1000u)

/* ---- the example worker as a process ---- */

enum ht_mode {
	HT_EXEC, /* $HERD_EXAMPLE_WORKER --socket PATH */
	HT_FORK, /* herd_serve() in a forked child of the test */
};

/* The mode a looped test case runs in: _i is 0 for exec, 1 for fork. */
#define HT_MODE(i) ((i) == 0 ? HT_EXEC : HT_FORK)

/* Setup of a libherd client test: SIGPIPE ignored (a worker may close first). */
void ht_client_setup(void);
/*
 * Teardown of a libherd client test: HERD_RPC_SETTINGS and HERD_SOCKET,
 * which a test may set for libherd to read, are unset for the next one.
 */
void ht_client_teardown(void);

/*
 * A struct ht_case of libherd client tests (ht_client_setup and
 * ht_client_teardown around each), each test run loops_ times: 2 to run it
 * in both modes (HT_MODE(_i)), 0 for once.
 */
#define HT_CLIENT_CASE(name_, timeout_s_, loops_, ...)                                             \
	{                                                                                          \
		.name = (name_), .timeout_s = (timeout_s_), .loops = (loops_),                     \
		.setup = ht_client_setup, .teardown = ht_client_teardown, .tests = {               \
			__VA_ARGS__                                                                \
		}                                                                                  \
	}
/* A struct ht_case of libherd client tests run once each, with the herdd fixture. */
#define HT_CLIENT_HERDD_CASE(name_, timeout_s_, ...)                                               \
	{                                                                                          \
		.name = (name_), .timeout_s = (timeout_s_), .herdd = true,                         \
		.setup = ht_client_setup, .teardown = ht_client_teardown, .tests = {               \
			__VA_ARGS__                                                                \
		}                                                                                  \
	}

struct ht_example {
	pid_t pid;
	char dir[128];
	char socket[192];
};

/*
 * Starts the example worker on DIR/worker.sock in a fresh temporary
 * directory, init_json (may be NULL) its init argument, and waits until it
 * accepts connections. Returns 0 or -errno (message printed).
 */
int ht_example_start(struct ht_example *w, enum ht_mode mode, const char *init_json);
/* SIGKILLs the worker (if it still runs) and reaps it by pid. */
void ht_example_kill(struct ht_example *w);
/*
 * Starts $HERD_EXAMPLE_WORKER with argv[1..] = args (NULL-terminated, may be
 * NULL), without waiting. With channel_fd >= 0 it becomes the child's fd 3
 * and the child gets HERD_CHANNEL_FD=3 and HERD_WORKER_ID=worker_id
 * ("w-test" if NULL). stderr_fd >= 0 replaces the child's stderr. The child
 * is registered for teardown. Returns its pid or -errno.
 */
pid_t ht_example_spawn(
    const char *const *args, int channel_fd, const char *worker_id, int stderr_fd);
/*
 * Sends sig (unless 0) to the example worker pid and reaps it: it must exit
 * with code, its socket removed.
 */
void ht_example_end_ok(pid_t pid, int sig, int code, const char *socket);
/*
 * herdd's end of a worker's fd-3 channel: a socketpair whose other end,
 * *ret_child, goes to ht_example_spawn() (close it after spawning). Returns
 * the connection or NULL with errno set.
 */
struct ht_conn *ht_chan_open(int *ret_child);

/*
 * libherd's master connected to the fixture's herdd (ht_herdd) with settings
 * (borrowed, may be NULL); fails the test on error.
 */
herd_master *ht_herd_master_ok(json_t *settings);
/*
 * libherd's master m spawns a worker with opts (herd_spawn_opts_new's, stolen;
 * NULL fails the test); fails the test on error. The worker's pid is tracked
 * for teardown. Returns the worker.
 */
herd_worker *ht_herd_spawn_opts_ok(herd_master *m, json_t *opts);
/* ht_herd_spawn_opts_ok() of the program named by environment variable var with init (stolen, may be NULL). */
herd_worker *ht_herd_spawn_ok(herd_master *m, const char *var, json_t *init);
/* libherd's connection to the worker at socket with conn_init (borrowed, may be NULL); fails the test on error. */
herd_conn *ht_herd_connect(const char *socket, json_t *conn_init);
/* libherd's connection to worker w (herd_worker_connect); fails the test on error. */
herd_conn *ht_herd_worker_connect_ok(const herd_worker *w);

/* ---- failures a libherd master reports ---- */

/* What herd_master_on_failure reported last, and how many times it ran. */
struct ht_failures {
	int n;
	char event[32];
	char id[32];
	char message[256];
	json_t *tail; /* kept until the test's teardown (ht_teardown) */
	json_t *worker; /* the same */
};

/* A herd_master_event_cb recording into userdata, a struct ht_failures. */
void ht_on_failure(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *stderr_tail, json_t *worker, void *userdata);
/* Runs m's connection until f->n is non-zero or timeout_ms passed. */
void ht_wait_failure(herd_master *m, const struct ht_failures *f, int timeout_ms);

/* ---- outcomes of asynchronous libherd operations ---- */

/* How an asynchronous libherd operation ended, as its callback told. */
struct ht_outcome {
	int calls; /* times the callback ran */
	int r;
	json_t *result; /* kept until the test's teardown (ht_teardown) */
	char name[64]; /* the error's name, "(none)" without an error */
};

/* Records one run of an end callback (r, result borrowed, error) in o. */
void ht_outcome_set(struct ht_outcome *o, int r, json_t *result, herd_error *error);

/* ---- the example worker on a thread of this process ---- */

struct ht_server {
	pthread_t thread;
	struct ev_loop *loop;
	ev_async stop;
	herd_server *srv;
	char dir[128];
	char path[192];
	const struct herd_worker_type *type;
	json_t *init; /* borrowed until started */
	json_t *settings; /* borrowed until started */
	int serve_rc;
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool started;
	bool running;
	int fds_before; /* open fds of this process before ht_server_start_ok() */
};

/*
 * Serves type on DIR/worker.sock from a new thread and loop; init and
 * settings are borrowed. Returns herd_serve()'s result (the thread is gone
 * again on failure).
 */
int ht_server_start(
    struct ht_server *s, const struct herd_worker_type *type, json_t *init, json_t *settings);
/*
 * Closes the server from its thread, lets the loop run until every
 * connection has closed and been freed, destroys the loop and joins the
 * thread. Returns 0 or -ETIMEDOUT.
 */
int ht_server_stop(struct ht_server *s);
/*
 * ht_server_start() of the example type for a test body: fails the test if
 * the server does not start. init and settings are stolen (may be NULL).
 */
void ht_server_start_ok(struct ht_server *s, json_t *init, json_t *settings);
/*
 * ht_server_stop() for a test body: fails the test if it times out or if this
 * process holds another number of fds than before ht_server_start_ok(); then
 * ht_teardown().
 */
void ht_server_stop_ok(struct ht_server *s);

/* ---- a scripted fake worker ---- */

struct ht_fake {
	pid_t pid;
	int result_fd; /* the child writes the script's result here, one byte */
	char socket[192];
};

/*
 * Binds and listens on DIR/fake.sock (so it is ready when this returns), then
 * forks a child that accepts one connection and runs script(conn, arg).
 * Returns 0 or -errno. The child is registered for teardown.
 */
int ht_fake_start(struct ht_fake *f, int (*script)(struct ht_conn *c, void *arg), void *arg);
/*
 * Waits for the script's result (0..255) and reaps the child. The result
 * travels through a pipe rather than the exit status: under valgrind a forked
 * copy of the test would fail its exit with leak reports about the test's own
 * objects. Returns the result or -errno.
 */
int ht_fake_finish(struct ht_fake *f, int timeout_ms);

#endif
