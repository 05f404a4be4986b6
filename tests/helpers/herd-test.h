/* SPDX-License-Identifier: MIT */
/*
 * herd_test: what integration tests need to drive real processes.
 *
 * - A private herdd: a mkdtemp directory, the daemon started on a socket in it
 *   with a NOTIFY_SOCKET the harness owns, ready when it sends READY=1.
 * - A raw JSON-lines client, so a test speaks to herdd or a worker exactly as
 *   socat would (no libherd involved).
 * - Pid helpers that wait for events (pidfd, socket readiness) with deadlines
 *   instead of sleeping, and read /proc for states, children and fd counts.
 * - A registry of everything a test started. ht_teardown() kills and reaps it
 *   all by pid; every process the harness forks also gets PR_SET_PDEATHSIG so a
 *   test that dies half-way (a failed assertion, a Check timeout) still takes
 *   its herdd and masters with it.
 *
 * Functions that can fail return -errno (or NULL with errno set) and print one
 * line to stderr saying what failed, so a test log explains itself.
 */
#ifndef HERD_TEST_H
#define HERD_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

/* ---- time ---- */

/* CLOCK_MONOTONIC in milliseconds. */
int64_t ht_now_ms(void);

/* ---- registry and teardown (ht-proc.c) ---- */

/* Our own child: teardown SIGKILLs it (if still running) and reaps it. */
void ht_track_child(pid_t pid);
/*
 * Somebody else's child (a worker herdd started): teardown SIGKILLs it if it
 * still runs. Its parent reaps it.
 */
void ht_track_pid(pid_t pid);
/*
 * Kills and reaps everything registered, stops every daemon started with
 * ht_daemon_start() and removes every temporary directory. Safe to call twice.
 */
void ht_teardown(void);
/*
 * Makes this process the reaper of its orphaned descendants, so workers whose
 * herdd died are reparented here and a test can wait for and reap them.
 */
int ht_become_subreaper(void);
/*
 * Waits until no child of this process runs any more (zombies and the
 * harness's guardian do not count). Returns how many still run at the
 * deadline (each printed), 0 if none.
 */
int ht_children_left(int timeout_ms);

/* ---- pids (ht-proc.c) ---- */

/* State letter from /proc/<pid>/stat ('R', 'S', 'Z', 'T'...), or 0 if there is no such pid. */
char ht_pid_state(pid_t pid);
/* Parent pid from /proc/<pid>/stat, or -ESRCH. */
pid_t ht_pid_ppid(pid_t pid);
/* True if pid exists and is not a zombie (kill(pid, 0) and the /proc state). */
bool ht_pid_alive(pid_t pid);
/* True if pid is a zombie: exited, not yet reaped. */
bool ht_pid_is_zombie(pid_t pid);
/*
 * Waits until pid is no longer alive (exited: a zombie or reaped), through a
 * pidfd (under valgrind, which has none, by rechecking /proc every
 * millisecond). Returns 0, or -ETIMEDOUT.
 */
int ht_wait_pid_gone(pid_t pid, int timeout_ms);
/*
 * Rechecks /proc every millisecond until still(pid) is false or the deadline
 * passes: for what raises no event (a reap by another process, any exit under
 * valgrind, which has no pidfd_open, a process's start-up). Returns 0 or
 * -ETIMEDOUT.
 */
int ht_wait_pid_while(pid_t pid, bool (*still)(pid_t pid), int timeout_ms);
/*
 * Waits until pid has exited and been reaped by its parent (no /proc entry).
 * Exit is awaited on a pidfd; reaping by another process has no event, so
 * after the exit this rechecks /proc every millisecond until the deadline.
 * Returns 0, -ETIMEDOUT, or -ECHILD if pid is our own child (use ht_wait_child).
 */
int ht_wait_pid_reaped(pid_t pid, int timeout_ms);
/*
 * Waits for our child pid to exit and reaps it. *status (may be NULL) gets the
 * waitpid status. Returns 0, -ETIMEDOUT (the child still runs), or -errno.
 */
int ht_wait_child(pid_t pid, int timeout_ms, int *status);
/* Number of open fds of pid (entries in /proc/<pid>/fd), or -errno. */
int ht_count_fds(pid_t pid);
/*
 * Open fds of pid other than /proc files, or -errno: herdd's sampler holds
 * /proc files only while it reads them, so a leak check counts the rest.
 */
int ht_count_held_fds(pid_t pid);
/* Resident memory of pid in KiB (/proc/PID/statm), or -1. */
long ht_pid_rss_kib(pid_t pid);
/*
 * Children of pid (all its threads) into out[0..max). Returns how many there
 * are (possibly more than max), or -errno.
 */
int ht_list_children(pid_t pid, pid_t *out, size_t max);

/* ---- forked functions (ht-proc.c) ---- */

/* Credentials of "nobody" (uid and its primary group). Returns 0 or -ENOENT. */
int ht_nobody(uid_t *uid, gid_t *gid);
/*
 * Forks a child that runs fn(arg) and exits with its return value. With
 * uid != (uid_t)-1 the child first drops its supplementary groups and switches
 * to gid/uid. The child dies with this process (PR_SET_PDEATHSIG) and is
 * registered for teardown. Returns the child's pid or -errno.
 */
pid_t ht_fork_fn(int (*fn)(void *arg), void *arg, uid_t uid, gid_t gid);
/*
 * Runs fn(arg) in a child as nobody and waits for it. Returns the child's exit
 * code (0..255), 128 + signal if it was killed, or -errno (-ETIMEDOUT).
 */
int ht_run_as_nobody(int (*fn)(void *arg), void *arg, int timeout_ms);

/*
 * Reads exactly n pids (raw pid_t values a forked child wrote) from fd, with a
 * deadline. Returns n, or -EPIPE (the writer closed early) or -ETIMEDOUT.
 */
int ht_read_pids(int fd, pid_t *pids, int n, int timeout_ms);
/*
 * Reads fd until EOF into buf (NUL-terminated, at most size - 1 bytes kept)
 * within timeout_ms. Returns the length, or -ETIMEDOUT or -errno with what
 * arrived before in buf.
 */
ssize_t ht_read_all(int fd, char *buf, size_t size, int timeout_ms);

/*
 * Runs argv[0] (a path) with argv, stdin /dev/null, and collects its stdout
 * and stderr (malloc'd, NUL-terminated; either pointer may be NULL to
 * discard). Waits for both pipes to close and the process to exit, with a
 * deadline, then SIGKILLs it. Returns the exit code (0..255), 128 + signal,
 * or -ETIMEDOUT / -errno.
 */
int ht_run(const char *const *argv, char **ret_out, char **ret_err, int timeout_ms);
/*
 * Starts argv[0] with argv, its stdout on a pipe whose read end is returned in
 * *ret_fd (close-on-exec). Registered for teardown. Returns the pid or -errno.
 */
pid_t ht_start_reader(const char *const *argv, int *ret_fd);
/* Lines read from a pipe (ht_read_line). Zero it, then set fd. */
struct ht_lines {
	int fd;
	size_t len; /* bytes held in buf */
	size_t skip; /* bytes of the line returned last, to drop on the next call */
	char buf[65536];
};
/*
 * Reads the next line from l->fd with a deadline. Returns its length with the
 * line NUL-terminated at l->buf (valid until the next call), -EPIPE at EOF,
 * -ETIMEDOUT, or -ENOBUFS for a line longer than the buffer.
 */
int ht_read_line(struct ht_lines *l, int timeout_ms);

/* ---- the file system (ht-fs.c) ---- */

/*
 * Waits until path exists (inotify on its directory, no polling), or pid
 * (if > 0) exits, or the deadline passes. Returns 0, -ECHILD (pid exited) or
 * -ETIMEDOUT.
 */
int ht_wait_path(const char *path, pid_t pid, int timeout_ms);
/* Waits until path no longer exists (inotify). Returns 0 or -ETIMEDOUT. */
int ht_wait_path_gone(const char *path, int timeout_ms);
/*
 * Waits until the Unix socket at path accepts a connection, or pid (if > 0)
 * exits. Returns 0, -ECHILD or -ETIMEDOUT (message printed).
 */
int ht_wait_listening(const char *path, pid_t pid, int timeout_ms);
/*
 * The whole file at path, NUL-terminated (it may hold NULs too), malloc'd;
 * *ret_len (may be NULL) its length. NULL with errno set when it cannot be read.
 */
char *ht_read_file(const char *path, size_t *ret_len);
/*
 * Writes fmt's text to path, created or truncated, then gives it mode (0755
 * for a script; 0 leaves the mode it was created with). Returns 0 or -errno.
 */
int ht_write_file(const char *path, mode_t mode, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- temporary directories and herdd (ht-daemon.c) ---- */

/* Creates a 0700 directory /tmp/herd-test-XXXXXX removed by teardown. Returns 0 or -errno. */
int ht_tmpdir(char *buf, size_t len);

struct ht_daemon {
	pid_t pid;
	char dir[128]; /* private temp dir holding the socket */
	char socket[160]; /* control socket path, given as --socket */
	int notify_fd; /* our end of NOTIFY_SOCKET until READY=1, then -1 */
	int exit_status; /* waitpid status once stopped, -1 before */
};

/*
 * Starts $HERDD --socket DIR/herdd.sock EXTRA... with NOTIFY_SOCKET pointing
 * at a datagram socket in DIR, and waits (poll, deadline 10 s) for READY=1.
 * extra_argv may be NULL; it is NULL-terminated otherwise. XDG_RUNTIME_DIR is
 * set to DIR so whatever herdd creates lives there. Returns the daemon
 * (registered for teardown) or NULL with errno set.
 */
struct ht_daemon *ht_daemon_start(const char *const *extra_argv);
/*
 * SIGTERM, waits up to timeout_ms for the exit, then SIGKILL. The temp dir
 * stays until teardown, so a test can look for stale files in it. Returns 0 if herdd exited by itself with status 0 after SIGTERM, 1 if
 * it exited otherwise (d->exit_status tells how), -ETIMEDOUT if it had to be
 * SIGKILLed.
 */
int ht_daemon_stop(struct ht_daemon *d, int timeout_ms);

/*
 * A NOTIFY_SOCKET of our own: binds a non-blocking datagram socket on path.
 * Returns its fd or a negative errno.
 */
int ht_notify_bind(const char *path);
/*
 * Collects notify datagrams until one holds want, appending each to seen
 * (len bytes, NUL-terminated, one datagram a line). Returns false on timeout.
 */
bool ht_notify_wait(int fd, const char *want, char *seen, size_t len, int timeout_ms);
/* SIGKILLs herdd and reaps it (the temp dir stays until teardown). Returns 0 or -errno. */
int ht_daemon_kill(struct ht_daemon *d);
/* Path of an executable named by environment variable var, or NULL (message printed). */
const char *ht_env_path(const char *var);

/* ---- raw JSON-lines client (ht-conn.c) ---- */

struct ht_conn;

/*
 * Connects to a Unix stream socket at path. No retry: herdd listens before
 * READY=1 and a worker before its spawn reply. Returns NULL with errno set.
 */
struct ht_conn *ht_conn_open(const char *path);
/*
 * A connection on fd, already connected (a socketpair end, an accepted
 * socket), stolen: closed by ht_conn_close(), or at once on failure.
 * Returns NULL with errno set.
 */
struct ht_conn *ht_conn_adopt(int fd);
/* Closes the socket and frees c (NULL is fine). */
void ht_conn_close(struct ht_conn *c);
/* The connection's socket. */
int ht_conn_fd(const struct ht_conn *c);
/* Writes msg (borrowed) as one line. Returns 0 or -errno. */
int ht_conn_send(struct ht_conn *c, const json_t *msg);
/* Writes raw bytes as they are (for malformed-input tests). Returns 0 or -errno. */
int ht_conn_send_raw(struct ht_conn *c, const void *data, size_t len);
/* Writes text and a newline, as they are. Returns 0 or -errno. */
int ht_conn_send_line(struct ht_conn *c, const char *text);
/* Sends notification method(params) (params stolen, may be NULL). Returns 0 or -errno. */
int ht_conn_notify(struct ht_conn *c, const char *method, json_t *params);
/*
 * The next message: messages set aside by ht_conn_call() first, then what
 * arrives. Returns a new reference, or NULL with errno ETIMEDOUT, EPIPE (the
 * peer closed) or EBADMSG (the peer sent an invalid line).
 */
json_t *ht_conn_recv(struct ht_conn *c, int timeout_ms);
/*
 * Sends request method(params) (params stolen, may be NULL) with a fresh id
 * and returns its reply (the whole message: a new reference). Messages that
 * are not this reply are set aside for ht_conn_recv()/ht_conn_wait_method().
 * NULL with errno as for ht_conn_recv().
 */
json_t *ht_conn_call(struct ht_conn *c, const char *method, json_t *params, int timeout_ms);
/*
 * Sends request method(params) (params stolen) with a fresh id without waiting.
 * Returns the id (> 0) or -errno. Pair with ht_conn_wait_reply().
 */
int64_t ht_conn_send_request(struct ht_conn *c, const char *method, json_t *params);
/* Waits for the reply to request id, setting other messages aside. NULL with errno. */
json_t *ht_conn_wait_reply(struct ht_conn *c, int64_t id, int timeout_ms);
/*
 * Sends hello {version: 1, role, ...extra} (extra stolen, may be NULL: its
 * members are merged into params) and returns the reply (new reference).
 */
json_t *ht_conn_hello(struct ht_conn *c, const char *role, json_t *extra, int timeout_ms);
/*
 * Waits for a notification with this method (set-aside ones first; others are
 * kept). Returns the whole message (new reference) or NULL with errno.
 */
json_t *ht_conn_wait_method(struct ht_conn *c, const char *method, int timeout_ms);
/*
 * Waits for herdd's "event" notification with params.event == event and
 * params.worker.id == worker_id (NULL: any worker). Returns its params (new
 * reference) or NULL with errno. Other messages are kept.
 */
json_t *ht_conn_wait_event(
    struct ht_conn *c, const char *event, const char *worker_id, int timeout_ms);
/* Waits for the peer to close. Returns 0, -ETIMEDOUT, or -errno. Incoming messages are dropped. */
int ht_conn_wait_eof(struct ht_conn *c, int timeout_ms);

/* ---- herdd and worker conversations (ht-herd.c) ---- */

/*
 * Connects to socket and completes hello as role, with hello members extra
 * (stolen, may be NULL). On a failed hello the reply goes to *ret_reply (a
 * new reference) if ret_reply is not NULL, else it is printed. Returns the
 * connection, or NULL with errno set (EPROTO: the hello failed).
 */
struct ht_conn *ht_hello_open(
    const char *socket, const char *role, json_t *extra, json_t **ret_reply);
/*
 * The next message that is not a notification named method (those are
 * dropped: heartbeats on a worker channel). New reference, or NULL with errno.
 */
json_t *ht_conn_recv_except(struct ht_conn *c, const char *method, int timeout_ms);
/*
 * Waits for the next herd.item of stream id; returns its params (new
 * reference) or NULL. Items of other streams on c are dropped (with a
 * message): use one stream per connection with this helper.
 */
json_t *ht_conn_next_item(struct ht_conn *c, json_int_t id, int timeout_ms);
/*
 * Waits on a herd.logs stream (request id) for an item whose message contains
 * text. Returns true if one came before the deadline.
 */
bool ht_conn_wait_log(struct ht_conn *c, json_int_t id, const char *text, int timeout_ms);
/*
 * A peer's side of hello: reads the hello request that must come first and
 * answers it with result (stolen). Returns 0, -EPROTO, or -errno.
 */
int ht_conn_answer_hello(struct ht_conn *c, json_t *result, int timeout_ms);

/*
 * Connects to d's control socket and completes hello with role ("master",
 * "inspector") and name (may be NULL). ht_hello_open() on d's socket.
 */
struct ht_conn *ht_herdd_open(const struct ht_daemon *d, const char *role, const char *name);
/*
 * Spawn params for $HERD_TESTWORKER: {"path": P, "argv": [P]} with extra's
 * members (stolen, may be NULL) merged over them. NULL if HERD_TESTWORKER is unset.
 */
json_t *ht_testworker_params(json_t *extra);
/*
 * Spawn params for a shell worker: {"path": "/bin/sh", "argv": ["sh", "-c",
 * script]} with extra's members (stolen, may be NULL) merged over them.
 */
json_t *ht_sh_params(const char *script, json_t *extra);
/*
 * Calls spawn with params (stolen) and returns the reply (new reference). A
 * successful spawn's pid is registered for teardown (ht_track_pid).
 */
json_t *ht_spawn(struct ht_conn *c, json_t *params, int timeout_ms);
/*
 * Sends n spawn requests with the same params (borrowed) before reading any
 * reply (n concurrent spawns), then collects every reply. For each success
 * pids[i] and ids[i] (a malloc'd string) are set; failures leave 0 and NULL.
 * Returns how many succeeded, or -errno if the conversation broke.
 */
int ht_spawn_many(
    struct ht_conn *c, int n, const json_t *params, pid_t *pids, char **ids, int timeout_ms);
/*
 * Connects to a worker's socket, says hello as a client (init: conn_init,
 * stolen, may be NULL), calls function(args) (args stolen) and closes.
 * Returns the call's reply (new reference), or the hello's error reply if the
 * hello failed, or NULL with errno.
 */
json_t *ht_worker_call(
    const char *socket, json_t *conn_init, const char *function, json_t *args, int timeout_ms);
/*
 * Waits until herdd has no child process left, running or zombie: each child
 * is awaited on a pidfd, then until reaped. Returns 0 or -ETIMEDOUT (the
 * children left are printed).
 */
int ht_herdd_children_gone(const struct ht_daemon *d, int timeout_ms);
/*
 * Asks herdd's list (all records) until a worker named name is in state (any
 * state if NULL), for workers whose spawn has not answered yet: herdd has no
 * event for "forked", so this repeats the list every few milliseconds until
 * the deadline. Returns the WORKER object (new reference) or NULL.
 */
json_t *ht_herdd_wait_listed(
    struct ht_conn *c, const char *name, const char *state, int timeout_ms);
/* The WORKER object with this id from list {all: true} (new reference), or NULL. */
json_t *ht_herdd_find(struct ht_conn *c, const char *id);
/* Pid member of a WORKER object or spawn result, or 0. */
pid_t ht_worker_pid(const json_t *worker);
/*
 * How many times slower this run is: $HERD_TEST_SLOW (an integer), else 3
 * under ASan, else 1.
 */
int ht_slow(void);
/* A time budget in milliseconds scaled for slow runs: ms * ht_slow(). */
int ht_ms(int ms);
/*
 * 10 under valgrind ($HERD_UNDER_VALGRIND), else 1: for the few budgets that a
 * valgrind run (which ht_slow() leaves at 1) stretches, such as heartbeat timeouts.
 */
int ht_valgrind_slow(void);

/* The result member of a reply (borrowed), or NULL if it is an error reply. */
json_t *ht_result(const json_t *reply);
/* The error's data.name of a reply ("worker_not_found"), or NULL if it is not an error. */
const char *ht_error_name(const json_t *reply);
/* The error's code of a reply, or 0 if it is not an error. */
int ht_error_code(const json_t *reply);
/* The integer result of a reply, or LLONG_MIN. */
long long ht_int_result(const json_t *reply);
/* The error's message, or NULL. */
const char *ht_error_message(const json_t *reply);
/* The error's data object (borrowed), or NULL. */
json_t *ht_error_data(const json_t *reply);
/* True if some string of the array lines (stderr tails, logs) contains needle. */
bool ht_lines_contain(const json_t *lines, const char *needle);
/* The string member key of object o, or NULL. */
const char *ht_str(const json_t *o, const char *key);
/* Compact text of a JSON value for failure messages; the buffer is static (one per call site is fine). */
const char *ht_dump(const json_t *v);

#endif
