/* SPDX-License-Identifier: MIT */
/*
 * herdd's internal interfaces. One header for the whole daemon: the global
 * state, the connection layer (conn.c), the request table (dispatch.c), the
 * supervisor (supervisor.c, spawn.c, channel.c, capture.c, workers.c, proc.c),
 * notifications to the service manager (notify.c), the delegated cgroup
 * (cgroup.c) and logging (log.c).
 *
 * Everything runs in one libev loop, in a thread of its own, whose SIGCHLD
 * watcher (supervisor.c) is the only reaper of child processes. The main
 * thread only makes those children and performs the reexec's execve()
 * (leader.c), so that a spawn never stops the loop.
 */
#ifndef HERDD_H
#define HERDD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ev.h>
#include <jansson.h>

#include "peer.h"
#include "proto.h"

/* ---- log.c ---- */

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

/* Parses "debug", "info", "warn" or "error". Returns the level or -EINVAL. */
int log_parse_level(const char *s);
/* Sets the threshold and the destination (NULL: stderr). Returns 0 or -errno. */
int log_open(enum log_level level, const char *path);
/* Reopens the log file after rotation (SIGHUP); stderr needs nothing. */
void log_reopen(void);
void log_close(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Logs at error level and exits with status 1: for start-up failures only. */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

/* ---- global state (main.c) ---- */

struct herdd_config {
	char *socket_path;
	enum log_level log_level;
	char *log_file;
	char *cgroup; /* --cgroup: a cgroup v2 directory to use as delegated */
	unsigned grace_ms;
	unsigned handshake_timeout_ms;
	size_t max_message_size;
	size_t max_output;
	unsigned max_connections;
	unsigned max_connections_per_uid;
	unsigned max_unauthenticated;
	unsigned max_unauthenticated_per_uid;
	size_t max_bytes_per_uid; /* input buffers and output queues of one uid's connections */
	unsigned min_heartbeat_interval_ms; /* a hello asking for less is refused */
	unsigned idle_line_timeout_ms; /* an unfinished line that stops growing closes */
	unsigned max_workers;
	unsigned max_workers_per_uid;
	unsigned max_workers_per_master;
	unsigned max_pending;
	unsigned keep_exited; /* exited records kept per uid */
	unsigned keep_exited_ms; /* and for at most this long */
	unsigned exit_idle_ms; /* exit once idle this long; 0: never */
	unsigned event_ring; /* events kept for replay (events.c) */
	size_t output_max_bytes; /* the cap of an output file whose spawn sets none; 0: none */
	unsigned output_max_files;
	bool stdio; /* --stdio: serve one master over stdin/stdout (stdio.c) */
	struct proto_settings worker_settings; /* what spawned workers start from */
};

/* Counters for "stats". */
struct herdd_stats {
	uint64_t connections_accepted;
	uint64_t spawns;
	uint64_t bytes_in;
	uint64_t bytes_out;
	uint64_t limit_connections;
	uint64_t limit_connections_per_uid;
	uint64_t limit_unauthenticated;
	uint64_t limit_unauthenticated_per_uid;
	uint64_t limit_bytes_per_uid;
	uint64_t limit_workers;
	uint64_t limit_workers_per_uid;
	uint64_t limit_workers_per_master;
	uint64_t limit_pending;
	uint64_t limit_output;
	uint64_t limit_fds;
	uint64_t events_lost; /* sequence numbers reported in gap events */
};

TAILQ_HEAD(conn_list, conn);
LIST_HEAD(account_list, account);
TAILQ_HEAD(worker_list, worker);

struct herdd {
	struct ev_loop *loop;
	struct herdd_config cfg;
	uid_t uid; /* our effective uid; 0 serves every uid */
	gid_t gid;
	pid_t pid;
	struct rlimit nofile; /* RLIMIT_NOFILE as herdd got it: what workers get */
	bool nofile_raised; /* herdd runs with its soft limit raised to the hard one */
	unsigned long max_fds; /* herdd's own soft limit: no fd of its is at or above it */
	int64_t started_ms; /* monotonic */

	/* server.c */
	char *socket_dir;
	char *workers_dir;
	char *lock_path;
	int listen_fd;
	int lock_fd;
	int reserve_fd; /* kept open to accept-and-close when out of fds */
	bool activated; /* the socket came from the service manager: never unlink it */
	bool own_socket;
	ev_io accept_io;
	ev_timer accept_pause;

	struct conn_list conns;
	unsigned nconns;
	unsigned nunauth;
	struct account_list accounts; /* one per uid with a control connection */
	struct worker_list workers; /* every record, live or exited, in the order it was listed */
	unsigned nworkers
	    [PROTO_STATE_COUNT]; /* listed workers by state, kept by sup_link() and sup_set_state() */
	struct worker_list exited; /* exited records in the order they ended, oldest first */
	bool stopping;
	struct herdd_stats stats;
};

extern struct herdd herdd;

/* Monotonic clock in milliseconds. */
int64_t now_ms(void);
/* Stops accepting and every worker; the loop ends once they are reaped (SIGTERM's path). */
void main_shutdown(void);
/* Called when the last worker is gone during shutdown: ends the loop. */
void main_maybe_exit(void);
/* Fills herdd.cfg from the defaults, the options and HERD_RPC_SETTINGS; exits on a bad one. */
void main_parse_options(int argc, char **argv);
/* Sets up the loop, the connection list and the supervisor (start-up, or a fuzz input). */
void main_state_init(void);
/* Aborts every connection and frees every worker record; the loop stays. */
void main_state_free(void);
/* Stops io on herdd's loop and closes *fd (set to -1); nothing if *fd is -1. */
void main_io_close(ev_io *io, int *fd);
/* herdd from start-up to exit; returns its exit status. */
int main_run(int argc, char **argv);

/* ---- leader.c: the main thread's work, apart from the loop's thread ---- */

/* Work for the leader: run() there, then done() on the loop (leader_post). */
struct leader_task {
	void (*run)(struct leader_task *t);
	void (*done)(struct leader_task *t);
	bool waited; /* leader_call(): no done(), the caller waits */
	bool finished; /* under leader.c's lock */
};
/* The eventfd that brings a task's end to the loop. Returns 0 or -errno. */
int leader_init(void);
void leader_cleanup(void);
/* Runs fn (the loop) in a thread of its own and serves tasks until it returns. */
void leader_run(void (*fn)(void));
/* Hands t to the leader; t->done(t) runs on the loop later. Never while busy. */
void leader_post(struct leader_task *t);
/* Runs t in the leader while this thread waits (the reexec's execve). */
void leader_call(struct leader_task *t);
/* A task is in flight: a child may exist that the loop has not been told of. */
bool leader_busy(void);

/* ---- server.c ---- */

/* Finds or creates the listening socket (activation first, own bind second). Fatal on error. */
void server_open(void);
void server_start(void);
/* Serves fd (non-blocking, close-on-exec; taken over) as a control connection from cred. */
void server_adopt(int fd, const struct ucred *cred);
/* Stops accepting and removes the socket (unless activated). */
void server_stop_accepting(void);
/* Removes the lock file and closes what server_open() opened. */
void server_close(void);
/* Creates (if needed) the per-uid 0700 worker socket directory. Returns 0 or -errno. */
int server_worker_dir(uid_t uid, gid_t gid, char *buf, size_t len);

/* ---- cpus.c ---- */

/* The CPUs herdd's workers can use here: affinity, cgroup quota, a Slurm task's share (at least 1). */
unsigned cpus_usable(void);

/* ---- stdio.c ---- */

/* --stdio: takes stdin/stdout for the link (before anything opens fds) and picks the socket. */
void stdio_take(void);
/* Starts serving the master on the link (after the server is up). */
void stdio_start(void);
/* Ends the link and removes this instance's files and directories. */
void stdio_cleanup(void);

/* ---- stdio-ship.c ---- */

struct herd__link;
/* Handles a link's ship_* message (PROTOCOL.md 9.5); false for another method. */
bool stdio_ship(struct herd__link *l, const char *method, json_t *params);
/* Removes a copy left unfinished by the link's end. */
void stdio_ship_cleanup(void);

/* ---- conn.c ---- */

enum conn_kind {
	CONN_CONTROL, /* a master or inspector on the control socket */
	CONN_CHANNEL, /* a worker's fd 3 */
};

enum conn_role {
	ROLE_NONE,
	ROLE_MASTER,
	ROLE_INSPECTOR,
};

struct conn;
struct worker;

/*
 * What one uid holds in herdd, so no uid can fill a limit for the others:
 * its control connections, those before hello, and the bytes their input
 * buffers and output queues hold. Freed with its last connection.
 */
struct account {
	LIST_ENTRY(account) link;
	uid_t uid;
	unsigned nconns;
	unsigned nunauth;
	size_t bytes;
};

struct conn_ops {
	/* One whole, framed message (borrowed). */
	void (*message)(struct conn *c, json_t *msg);
	/* The session ended (EOF, error, or conn_close()); runs exactly once. */
	void (*closed)(struct conn *c);
	/* The deadline set with conn_set_deadline() passed; may be NULL. */
	void (*deadline)(struct conn *c);
};

/*
 * A control connection or a worker's channel: the shared JSON-lines peer
 * (libclient/common/peer.h: I/O, framing, output queue, closing, heartbeats)
 * plus herdd's policy for the session.
 */
struct conn {
	struct herd__peer peer;
	TAILQ_ENTRY(conn) link; /* herdd.conns (control connections only) */
	enum conn_kind kind;
	const struct conn_ops *ops;
	uint64_t serial;
	bool on_list;
	struct account *account; /* control connections: its uid's, from conn_join() */
	size_t held; /* bytes counted in account->bytes */
	bool over_budget; /* its uid went over --max-bytes-per-uid: aborted at its next wakeup */

	/* Control sessions. */
	struct ucred cred;
	bool hello;
	enum conn_role role;
	char *name;
	unsigned pending; /* requests answered later (spawn, shutdown) */
	unsigned nworkers; /* live workers this connection owns */
	unsigned spawning; /* its spawns with no pid yet: its lists wait for them */
	bool subscribed_all; /* gets every event it may see, not only its own workers' */
	bool ev_behind; /* its queue was full: events wait in the ring (events.c) */
	bool ev_feeding; /* events.c is feeding it from the ring */
	uint64_t ev_cursor; /* the last event seq it was given or passed over */
	const char *ev_reason; /* the next gap's reason; NULL: "fell_behind" */
	bool goodbye; /* the master said goodbye: it closes on purpose, its workers end normally */
	pid_t
	    peer_worker; /* the worker whose process tree the peer is in; -1 none, 0 not known yet */

	/* Channels. */
	struct worker *worker;
};

/* Wraps an accepted or socketpair fd (taken over). Returns NULL on ENOMEM (fd closed). */
struct conn *conn_new(int fd, enum conn_kind kind, const struct conn_ops *ops, size_t max_message);
/*
 * Puts an accepted control connection on herdd's list, counted before hello
 * and in its uid's account. Returns 0 or -ENOMEM (then it is not listed).
 */
int conn_join(struct conn *c);
/* The connection said hello: it no longer counts as unauthenticated. */
void conn_said_hello(struct conn *c);
struct conn *conn_ref(struct conn *c);
/* Masters whose session is open (hello done, not closed). */
unsigned conn_count_masters(void);
/* Drops a reference; the last one frees, never inside the connection's own callbacks. */
void conn_unref(struct conn *c);
/* More output waits for c than a feed (events, followed logs) should add to. */
bool conn_feed_full(struct conn *c);
/* Queues msg (stolen). Returns 0 or -errno; on overflow the connection is closed. */
int conn_send(struct conn *c, json_t *msg);
/* Queues a reply to id encoded by herdd (line: compact JSON and its newline), as conn_send(). */
int conn_send_line(struct conn *c, const char *line, size_t len, const json_t *id);
/*
 * Result reply (result stolen). NULL is a result that could not be built: the
 * request is answered with internal_error, so a handler that means {} passes
 * json_object().
 */
int conn_reply(struct conn *c, json_t *id, json_t *result);
/* Error reply; data (stolen, may be NULL) gets "name" added by proto. */
int conn_reply_error(struct conn *c, json_t *id, int code, json_t *data, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/*
 * The gate before any request's handler, on herdd's socket and on a worker's
 * channel alike: hello first (a method that needs hello, or an unknown one,
 * before it ends the session), then a known method. False when m was refused
 * and answered; name_in_data puts the unknown method's name in the error.
 */
bool conn_request_gate(
    struct conn *c, const struct proto_msg *m, bool known, bool needs_hello, bool name_in_data);
/*
 * Ends the session: reading stops at once, the closed callback runs, queued
 * output is flushed (for at most a short deadline), then the fd is closed.
 */
void conn_close(struct conn *c);
/* Like conn_close() but drops queued output. */
void conn_abort(struct conn *c);
/* Handles whatever the peer already sent, without blocking. */
void conn_drain(struct conn *c);
/* Starts the I/O: from here on the loop drives the connection. */
void conn_start(struct conn *c);
/* Gives c its serial from before a reexec; later connections get higher ones. */
void conn_set_serial(struct conn *c, uint64_t serial);
/* Runs ops->deadline ms from now (0: never). */
void conn_set_deadline(struct conn *c, unsigned ms);
/* When the peer last sent anything (now_ms() time). */
static inline int64_t
conn_last_rx_ms(const struct conn *c)
{
	return (int64_t)(c->peer.last_recv / 1000);
}

/* ---- dispatch.c (control socket) ---- */

extern const struct conn_ops dispatch_control_ops;
/* Sets up a freshly accepted control connection (handshake timer). */
void dispatch_accepted(struct conn *c);
/* True if c may see and touch workers of uid. */
bool dispatch_may_see(const struct conn *c, uid_t uid);
/*
 * Unpacks a handler's params with proto_unpack; on failure replies
 * invalid_params with proto's text (or internal_error) and returns < 0.
 */
int dispatch_unpack(struct conn *c, json_t *id, json_t *params, const char *fmt, ...);
void dispatch_limit(struct conn *c, json_t *id, const char *limit, unsigned value);

/* Request handlers: each validates its params with one dispatch_unpack(). */
void h_hello(struct conn *c, json_t *id, json_t *params);
void h_ping(struct conn *c, json_t *id, json_t *params);
void h_stats(struct conn *c, json_t *id, json_t *params);
void h_subscribe(struct conn *c, json_t *id, json_t *params);
void h_unsubscribe(struct conn *c, json_t *id, json_t *params);
void h_spawn(struct conn *c, json_t *id, json_t *params);
void h_list(struct conn *c, json_t *id, json_t *params);
/* h-list.c: lists built over several turns, and what they need to hear. */
void list_forget(struct worker *w);
bool list_id_pending(const struct conn *c, const json_t *id);
bool list_busy(void);
void list_conn_gone(struct conn *c);
/* c's last spawn in flight has its pid: c's lists that waited for it start. */
void list_spawned(struct conn *c);
/* Control connections' watchers (and their lists) run after the supervisor's (conn.c). */
#define CONN_CONTROL_PRIORITY (EV_MINPRI + 1)
void h_inspect(struct conn *c, json_t *id, json_t *params);
void h_logs(struct conn *c, json_t *id, json_t *params);
void h_shutdown(struct conn *c, json_t *id, json_t *params);
void h_kill(struct conn *c, json_t *id, json_t *params);
void h_reexec(struct conn *c, json_t *id, json_t *params);

/* Sends an event about w to its owner and to subscribers, and keeps it for replay (events.c). */
void events_emit(struct worker *w, enum proto_event event);
/* ---- events.c: the ring, seqs and replay ---- */
void events_init(void);
void events_free(void);
const char *events_instance(void);
uint64_t events_last_seq(void);
/* The ring as "stats" shows it (a new reference). */
json_t *events_stats_json(void);
/* Starts c's events after since (replay false: from now on); instance NULL is ours. */
void events_subscribe(struct conn *c, bool replay, uint64_t since, const char *instance);
/* c's output drained (conn.c): one that fell behind is fed from the ring. */
void events_drained(struct conn *c);
/* The ring across a reexec: saved as JSON, loaded by the successor (same instance, seqs go on). */
json_t *events_save(void);
int events_load(json_t *saved);

/* ---- capture.c ---- */

/* The last lines a worker wrote to a captured stream. */
LIST_HEAD(follower_list, follower);

struct capture {
	struct logfile *file; /* a rotated file output: bytes go there, not to lines */
	struct follower_list followers; /* "logs" with follow (follow.c) */
	json_t *fresh; /* lines read since the followers were last sent some */
	char **lines; /* ring of slots, grown as lines arrive up to max_lines */
	unsigned slots;
	unsigned max_lines;
	unsigned first; /* index of the oldest line */
	unsigned count;
	size_t bytes; /* held in lines */
	size_t max_bytes;
	uint64_t dropped;
	char *partial; /* an unfinished line, NULL between lines */
	size_t partial_len;
	size_t partial_size;
	int fd; /* read end of the pipe, -1 when closed */
	ev_io io;
	struct worker *worker;
};

void capture_init(struct capture *cap, struct worker *w);
/* ---- follow.c: new lines of a captured stream sent as they come ---- */
/* Followers of one stream at a time. */
#define FOLLOW_MAX 16
/* c follows cap. Returns 0, -ENOMEM or -EMFILE (too many followers). */
int follow_add(struct capture *cap, struct conn *c);
void follow_line(struct capture *cap, const char *line);
void follow_flush(struct capture *cap);
void follow_end(struct capture *cap);
/* Takes over the read end of a pipe and starts watching it. */
void capture_start(struct capture *cap, int fd);
/* Reads what is left without blocking, keeps the partial line, closes the pipe. */
void capture_finish(struct capture *cap);
void capture_free(struct capture *cap);
/* The last n lines (0: all) as a new JSON array of strings. */
json_t *capture_tail(const struct capture *cap, unsigned n);
/* Puts back a predecessor's lines, dropped count and unfinished line (a reexec). */
void capture_restore(
    struct capture *cap, json_t *lines, uint64_t dropped, const char *partial, size_t len);

/* ---- supervisor.c, spawn.c, channel.c ---- */

enum output_kind {
	OUT_NULL,
	OUT_CAPTURE,
	OUT_FILE,
};

struct output_spec {
	enum output_kind kind;
	char *path;
	bool append;
	uint64_t max_bytes; /* a file rotated by herdd (logfile.c); 0: the worker holds the file */
	unsigned max_files;
};

/* Bounds and defaults of a rotated file output's max_bytes and max_files. */
#define OUTPUT_MIN_BYTES     64u
#define OUTPUT_MAX_BYTES     (1ull << 40)
#define OUTPUT_DEFAULT_BYTES (10ull << 20)
#define OUTPUT_MAX_FILES     100u
#define OUTPUT_DEFAULT_FILES 5u

/* A file output that goes through a pipe to herdd, which rotates it. */
static inline bool
output_rotated(const struct output_spec *o)
{
	return o->kind == OUT_FILE && o->max_bytes > 0;
}

/* ---- logfile.c: output files with a size cap and rotation ---- */
struct logfile;
struct logfile *logfile_open(const struct output_spec *o, const struct worker *w);
void logfile_write(struct logfile *lf, const char *buf, size_t n);
void logfile_close(struct logfile *lf);

/* A request answered when a worker reaches a state (spawn: ready; shutdown: reaped). */
struct waiter {
	struct waiter *next;
	void *map_next; /* the next waiter in its chain of the table sup_id_pending looks up */
	struct conn *conn; /* a reference */
	json_t *id;
	bool spawn;
};

/*
 * When a worker counts as ready (spawn option "ready"): its channel's "ready"
 * message, its exec, or READY=1 on its NOTIFY_SOCKET (worker-notify.c).
 */
enum ready_mode { READY_PROTOCOL, READY_EXEC, READY_NOTIFY };
/* A worker's resource limits (limits.c): 0 where not asked. */
enum limit_kind { LIMIT_MEMORY, LIMIT_PIDS, LIMIT_CPU, LIMIT_NOFILE, LIMIT_COUNT };
struct worker_limits {
	int64_t value[LIMIT_COUNT]; /* bytes, processes, CPU quota (us), open files */
	int64_t cpu_period_us;
	bool by_cgroup[LIMIT_COUNT]; /* decided at each spawn */
};

struct worker {
	TAILQ_ENTRY(worker) link;
	bool listed; /* on herdd.workers, counted in herdd.nworkers */
	TAILQ_ENTRY(worker) exited_link; /* on herdd.exited once listed and exited */
	void *pid_next; /* the next worker in its chain of the pid map, while unreaped */
	bool in_pid_map;
	char id[24];
	char *name;
	char *pool; /* the pool it belongs to (spawn param "pool"), for display; or NULL */
	char *path;
	json_t *argv; /* array of strings */
	json_t *env; /* object, the requester's additions; until the worker is ready */
	char *cwd;
	unsigned umask;
	struct output_spec out[2]; /* stdout, stderr */
	json_t *init; /* until the channel's hello, which hands it over */
	json_t *settings; /* the worker's effective RPC settings, all six fields; until hello */
	enum proto_shutdown_on shutdown_on;
	unsigned spawn_timeout_ms;
	unsigned connection_timeout_ms;
	unsigned hb_interval_ms;
	unsigned hb_timeout_ms;
	char socket[108];

	/* Who asked, and as whom the worker runs. */
	uid_t uid;
	gid_t gid;
	pid_t owner_pid;
	gid_t owner_gid;
	uint64_t owner_serial;
	struct conn *owner; /* a reference while the master's session lasts */

	pid_t pid;
	int pidfd;
	bool reaped;
	/* Its spawn is queued or with the leader (spawn.c): no process, no pid yet. */
	bool spawning;
	int spawn_sig; /* the strongest signal asked for meanwhile, sent once it exists */
	int spawn_channel; /* herdd's end of its channel until then, or -1 */
	struct conn *spawn_conn; /* a reference to the connection that asked, until then */
	enum proto_state state;
	enum proto_reason reason; /* PROTO_REASON_NONE while running */
	int exit_code; /* -1 if killed by a signal */
	int signal;
	char *message;
	int spawn_errno;
	const char *spawn_stage;

	int64_t started_ms; /* monotonic */
	int64_t ended_ms;
	struct timespec started_wall;
	int64_t last_heartbeat_ms;
	uint64_t last_cpu_ms; /* CPU time at the last heartbeat check that heard the worker */
	int64_t heard_ms; /* when the worker was last heard, as that check saw it */
	int64_t next_check_ms; /* a busy silent worker is checked again then */
	char *functions; /* from "ready", as compact JSON text */
	uint64_t served;
	/* The last sample of its process (sample.c), which list and inspect serve. */
	uint64_t cpu_ms; /* CPU time; after the reap the kernel's final figure */
	uint64_t rss_kib;
	char proc_state; /* /proc's state letter */
	int64_t sampled_ms; /* when (now_ms()); 0: not sampled yet */
	enum proto_reason backup_reason; /* the reason if the backup SIGKILL has to fire */
	bool stop_sent; /* sup_stop() signalled it; the grace timer runs */
	bool had_connection;
	bool in_cgroup; /* started in its own cgroup (contain.c) */
	bool pid_ns; /* spawn option pid_namespace: init of its own PID namespace */
	enum ready_mode ready_mode; /* spawn option "ready" */
	char *status; /* the last STATUS= of a notify worker, or NULL */
	bool said_stopping; /* a notify worker sent STOPPING=1 */
	int notify_fd; /* a notify worker's NOTIFY_SOCKET, or -1 */
	ev_io notify_io;
	struct worker_limits limits; /* spawn option limits (limits.c) */

	struct conn *channel;
	int errpipe;
	ev_io errpipe_io;
	struct capture cap[2]; /* stdout, stderr */
	ev_timer spawn_timer;
	ev_timer grace_timer;
	ev_timer hb_timer;
	ev_timer conn_timer;
	struct waiter *waiters;

	/* Incarnations and the restart policy (restart.c). */
	unsigned incarnation; /* 1 for the first process, one more for each restart */
	struct restart *restart; /* NULL: restart "no" */
	/* The text of most of its WORKER object, kept by lists (worker-json.c). */
	struct worker_text *text;
};

/* "protocol", "exec" or "notify"; sup_ready_mode_from_name() returns -1 for others. */
const char *sup_ready_mode_name(enum ready_mode m);
int sup_ready_mode_from_name(const char *name);
/* w's NOTIFY_SOCKET value: an abstract address, "@" standing for its leading NUL. */
void wnotify_addr(const struct worker *w, char *buf, size_t len);
/* Creates and binds w's notify socket. Returns 0 or -errno. */
int wnotify_open(struct worker *w);
/* Starts watching w's notify socket (the process exists). */
void wnotify_start(struct worker *w);
/* Closes w's notify socket. */
void wnotify_close(struct worker *w);

/* Everything a spawn needs, validated by h-spawn.c; owned by the worker afterwards. */
struct worker *sup_worker_new(void);
void sup_worker_free(struct worker *w);
/*
 * Starts w (filled in by h-spawn.c, owner set), or its next incarnation
 * (restart.c: the id stays). Returns 0 or a negative errno with stage set.
 */
int sup_spawn(struct worker *w);
/* Keeps the record of a spawn that failed before a process existed. */
void sup_record_failed(struct worker *w, int err);
/* Adds a waiter (takes a reference on c, copies id). */
int sup_add_waiter(struct worker *w, struct conn *c, json_t *id, bool spawn);
/* Stops w: in-band shutdown, SIGTERM to its tree, SIGKILL after grace_ms. */
void sup_stop(struct worker *w, enum proto_reason reason, unsigned grace_ms);
/* SIGKILLs w after seconds unless it is gone; reason (may be NONE) is then its reason. */
void sup_backup_kill(struct worker *w, enum proto_reason reason, double seconds);
/* Moves w to stopping with this reason (a terminating "kill"). */
void sup_mark_stopping(struct worker *w, enum proto_reason reason);
/* Sends sig to the worker's main process and its process group. */
int sup_signal(struct worker *w, int sig);
/* The worker announced its own exit (failure, init failure): SIGKILL if it is not gone in grace. */
void sup_expect_exit(struct worker *w, enum proto_reason reason, const char *message);
/*
 * The master's session ended: stops its master_disconnect workers (reason
 * master_closed after its goodbye, killed_orphan without), forgets the owner.
 */
void sup_owner_gone(struct conn *c);
/* True if a request of c with this id waits for its reply. */
bool sup_id_pending(const struct conn *c, const json_t *id);
/* Drops c's waiters (its session ended). */
void sup_conn_gone(struct conn *c);
/* Forgets x (off every list already): its connection's count, its table entry, its memory. */
void sup_waiter_free(struct waiter *x);
/* Finds a worker by id that c may see, or NULL. */
struct worker *sup_find(const struct conn *c, const char *id);
/* Live workers owned by uid. */
unsigned sup_count_uid(uid_t uid);
unsigned sup_count_live(void);
/* Stops every worker (daemon shutdown). */
void sup_stop_all(void);
/* ---- worker-json.c, sample.c ---- */

/* The worker's public JSON object (new reference). */
json_t *sup_worker_json(struct worker *w);
#define SUP_WORKER_ALL_FIELDS UINT64_MAX
/* The bit of a WORKER field's name, 0 for no such field. */
uint64_t sup_worker_field(const char *name);
/* Only the fields whose bits are in mask (new reference). */
json_t *sup_worker_json_fields(struct worker *w, uint64_t mask);
/*
 * Writes them as JSON text into b (a list's reply is built as text), the
 * ages as of now (now_ms()). Returns 0 or -errno.
 */
int sup_worker_write(struct proto_wbuf *b, struct worker *w, uint64_t mask, int64_t now);
/* Hints that w's record, then its cached text, will be written soon (a list's walk). */
void sup_worker_prefetch_record(const struct worker *w);
void sup_worker_prefetch_text(const struct worker *w);
/* Reads w's state, CPU time and memory from /proc into its record. Returns 0 or -errno. */
int sample_worker(struct worker *w);
/* The sweep that samples every live worker about once a second. */
void sample_start(void);
void sample_stop(void);
/* w leaves herdd.workers: the sweep's place moves past it. */
void sample_forget(struct worker *w);
/* What the reaper does with one reaped child (status as from waitpid()). */
void sup_reap(pid_t pid, int status, const struct rusage *ru);
/* Reaps: the SIGCHLD watcher and the retention timer. */
void sup_init(void);
void sup_cleanup(void);
/* Ready (from channel.c): answers the spawn request, emits "ready". */
void sup_worker_ready(struct worker *w);
/* Counts of workers per state and failures per reason, for "stats". */
json_t *sup_stats_json(void);

/* Heartbeat bookkeeping started once the worker's channel said hello. */
void sup_heartbeat_start(struct worker *w);

/*
 * spawn.c: starts w's process, with its own copies of the fds given. Returns
 * the read end of the child's error-report pipe (non-blocking), or -errno.
 * With w->spawning set the process comes later, from the leader thread, and
 * sup_spawned() says so; otherwise it exists already (w->pid set).
 */
/* Takes the low fds spawns pass through (early, while fd numbers are low). */
void spawn_init(void);
int spawn_start(struct worker *w, int channel_fd, int capture_fds[2], int cgroup_fd);
/* The end of w's spawn: its pid, or -errno when no process came to be. */
void sup_spawned(struct worker *w, pid_t pid);
/*
 * What a child that failed before exec writes on its report pipe. stage is a
 * string literal of herdd's: the child runs in herdd's memory (CLONE_VM), and
 * only that code writes the pipe, which closes at exec.
 */
struct spawn_report {
	const char *stage;
	int err;
};

/* channel.c */
extern const struct conn_ops channel_ops;
/* Sends the in-band shutdown notification. */
void channel_send_shutdown(struct worker *w);

/* ---- proc.c ---- */

/* State letter, utime+stime in clock ticks, RSS in KiB of pid. Returns 0 or -errno. */
int proc_stat(pid_t pid, char *state, uint64_t *cpu_ticks, uint64_t *rss_kib);

/* A process found in /proc, with the parent it was found under. */
struct proc_kid {
	pid_t pid;
	pid_t parent;
};

/* Appends the children of pid (every thread's) to out[*n..max). */
void proc_children(pid_t pid, struct proc_kid *out, size_t *n, size_t max);
/* Every descendant of root, breadth first. Returns how many (at most max). */
size_t proc_tree(pid_t root, struct proc_kid *out, size_t max);
/* Parent pid of pid, or -1. */
pid_t proc_ppid(pid_t pid);
/* Signals k through a pidfd, only if it is still the process that was found. */
void proc_signal(const struct proc_kid *k, int sig);

/* ---- workers.c (records) ---- */

/* Exited, or failed (given up by its restart policy): a record, no longer a worker. */
static inline bool
sup_state_ended(enum proto_state s)
{
	return s == PROTO_STATE_EXITED || s == PROTO_STATE_FAILED;
}

static inline bool
sup_is_live(const struct worker *w)
{
	return !sup_state_ended(w->state);
}

/* Puts w on herdd.workers (at the tail) and counts it; sup_unlink() undoes both. */
void sup_link(struct worker *w);
void sup_unlink(struct worker *w);
/* Moves w to state s, keeping the counts right. */
void sup_set_state(struct worker *w, enum proto_state s);
/* Maps w->pid to w until sup_pid_forget() (at the reap). Never fails. */
void sup_pid_add(struct worker *w);
void sup_pid_forget(struct worker *w);
/* The unreaped worker whose main process is pid, or NULL. */
struct worker *sup_by_pid(pid_t pid);

/* Answers and removes w's spawn waiters (spawn true) or the others with reply (no id). */
void sup_answer_waiters(struct worker *w, bool spawn, json_t *reply);
json_t *sup_rfc3339(const struct timespec *ts);
/* The same text in buf (at least 32 bytes), which it returns. */
const char *sup_rfc3339_text(const struct timespec *ts, char *buf, size_t len);
/* "SIGKILL" for 9 (new reference). */
json_t *sup_signal_json(int sig);
/* Counts an exit for "stats". */
void sup_count_reason(enum proto_reason reason);
/* Drops old exited records, and uid's past the per-uid count. */
void sup_prune(uid_t uid);
void sup_records_start(void);
void sup_records_free(void);

/* ---- restart.c (restart policies), ids.c (worker ids) ---- */

/*
 * Parses spawn's "restart" (a policy name or an object, PROTOCOL.md 4.2) into
 * w, keeping what a new incarnation needs. Returns 0, -EINVAL (why says
 * why) or -ENOMEM.
 */
int restart_parse(struct worker *w, json_t *spec, char *why, size_t len);
/* w's process was reaped as w->reason: the state it moves to (exited, restarting, failed). */
enum proto_state restart_after_exit(struct worker *w);
/* Ends a restarting worker's wait for good (shutdown, daemon shutdown). */
void restart_cancel(struct worker *w, enum proto_reason reason);
/* A WORKER object's "restart": policy, count and last exit (new reference). */
json_t *restart_policy_json(const struct worker *w);
void restart_free(struct worker *w);
/*
 * True if the incarnation a request names (params' optional "incarnation", 0
 * when absent) is w's current one.
 */
bool restart_is_current(const struct worker *w, json_int_t incarnation);
/* w's policy and history across a reexec (null: none); restart_load() returns 0 or -errno. */
json_t *restart_save(const struct worker *w);
int restart_load(struct worker *w, json_t *saved);

/* Continues worker ids from the counter kept in dir (NULL: none kept, ids start at w1). */
void ids_open(const char *dir);
/* The next worker id, "wN", never one this state directory handed out before. */
void ids_next(char *buf, size_t len);
/* Writes back the exact next id (clean exit) and forgets the directory. */
void ids_close(void);

/* ---- cgroup.c ---- */

/* Finds the cgroup subtree delegated to herdd, if any, and moves herdd into a child of it. */
void cgroup_init(void);
/* {"delegated", "dir", "herdd"} or null, for "stats" (new reference). */
json_t *cgroup_json(void);
/* The delegated cgroup's directory (borrowed), or NULL. */
const char *cgroup_delegated_dir(void);
/* The delegated subtree across a reexec: herdd stays in its child, nothing is looked up again. */
json_t *cgroup_save(void);
void cgroup_load(json_t *saved);
void cgroup_cleanup(void);

/* ---- limits.c ---- */

/* Spawn option "limits" (PROTOCOL.md 4.2). */
/* One resource limit the child sets before exec. */
struct limit_rlimit {
	int resource;
	rlim_t value;
};
/* Parses the "limits" param (NULL: none) into w; -EINVAL with why, or 0. */
int limits_parse(struct worker *w, json_t *v, char *why, size_t len);
/* Writes w's cgroup-enforced limits into its cgroup dir_fd (-1: none); 0 or -errno
 * (-EOPNOTSUPP: cpu_max without a cgroup). */
int limits_apply_cgroup(struct worker *w, int dir_fd);
/* The rlimits the child sets (at most LIMIT_COUNT); returns how many. */
int limits_rlimits(const struct worker *w, struct limit_rlimit *out);
/* inspect's "limits" (new reference): null when none was asked. */
json_t *limits_json(const struct worker *w);
/* The oom_kill count in memory.events text, or -1 when absent. */
long long limits_oom_kills(const char *events);
/* true when w's cgroup memory limit killed a process of it (read before removal). */
bool limits_oom_killed(const struct worker *w);

/* ---- contain.c ---- */

/* Sets up a cgroup per worker under dir (NULL: tree walk only); kills leftovers. */
void contain_init(const char *dir);
/* Creates w's cgroup; returns its directory fd (caller closes) or -1. */
int contain_prepare(struct worker *w);
/* true when controller is enabled for the worker cgroups. */
bool contain_has_controller(const char *controller);
/* Opens file in w's cgroup: an fd or -errno. */
int contain_open(const struct worker *w, const char *file, int flags);
/* SIGKILLs every process in w's cgroup: 0 or -errno. */
int contain_kill(const struct worker *w);
/* w was reaped: kill what is left in its cgroup, remove it once empty. */
void contain_reaped(struct worker *w);
/* {cgroup, pid_namespace} for the WORKER object (new reference). */
json_t *contain_worker_json(const struct worker *w);
/* stats.containment (new reference). */
json_t *contain_json(void);
void contain_cleanup(void);

/* ---- notify.c ---- */
/* ---- reexec.c, reexec-state.c: herdd replaced by a fresh exec of its binary ---- */

/* Remembers how herdd was started (the binary, argv) and starts the SIGUSR2 watcher. */
void reexec_init(int argc, char **argv);
/*
 * First thing at start-up: a probe (HERDD_REEXEC_PROBE) checks the state and
 * exits here; a successor (HERDD_REEXEC_STATE) loads it and keeps only the fds
 * it names. True when herdd is taking over from a predecessor.
 */
bool reexec_early(int argc, char **argv);
/* A successor: the predecessor's cgroup, and whether worker cgroup id is one of its workers'. */
json_t *reexec_cgroup(void);
bool reexec_keeps(const char *id);
/* A successor: the listening socket, lock and paths instead of server_open(). */
void reexec_server(void);
/* A successor: takes over the connections, workers, events and counters. */
void reexec_adopt(void);
/* A successor whose signal watchers run: the signals blocked across the exec may come. */
void reexec_started(void);
void reexec_cleanup(void);

/* reexec-state.c: herdd's state as JSON, and the fds it names. */
struct reexec_fds {
	int *fd;
	size_t n, cap;
};
/* The whole state (new reference) or NULL; every fd it names is added to fds. */
json_t *reexec_state_save(struct reexec_fds *fds);
/* Checks a saved state without touching herdd: 0 or -EINVAL, why set. */
int reexec_state_check(json_t *state, char *why, size_t len);
/* Takes over the connections and workers of a checked state. */
void reexec_state_load(json_t *state);
/* The control connection with this serial, or NULL. */
struct conn *reexec_conn(uint64_t serial);

void notify_init(void);
void notify_ready(void);
void notify_stopping(void);
/* Updates STATUS= with the current counts. */
void notify_status(void);

#endif
