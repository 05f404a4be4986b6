/* SPDX-License-Identifier: MIT */
/*
 * libherd, master side: a connection to herdd (PROTOCOL.md section 4) to spawn
 * workers, watch them fail, stop them and look at them, and rpc_parallel's
 * start_app, which lets one executable be both the master and its workers.
 *
 * The master connection is a herd_conn underneath: drive it with the same
 * loop-independent core (herd_master_get_conn() with herd_conn_get_fd() &
 * co., or herd_master_attach_ev() in herd/herd-ev.h). Event callbacks run from
 * herd_conn_process() on that connection, from any blocking herd_master_*
 * call, or from the attached loop. Conventions and thread safety: herd/common.h.
 *
 * Blocking on a worker: while the program waits in a blocking call on another
 * connection (a long herd_call() or herd_stream_next() on a worker), libherd
 * sends the master connection's heartbeats, so herdd does not take the master
 * for dead, unless the master connection is attached to a libev loop, whose
 * own running is then what keeps it alive (herd/client.h says more). Events
 * that arrive meanwhile, failures included, are not delivered from inside that
 * other call: on_failure and on_event never run from a wait on another
 * connection. They wait in the socket, in order, until the master connection
 * is next processed (herd_conn_process(), a blocking herd_master_* call or its
 * loop).
 *
 * Ownership of workers: herdd stops a worker spawned with the default
 * shutdown_on "master_disconnect" as soon as the master connection closes, for
 * any reason, so a master that dies leaves nothing behind.
 */
#ifndef HERD_MASTER_H
#define HERD_MASTER_H

#include <stdint.h>

#include <jansson.h>

#include <herd/client.h>
#include <herd/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct herd_worker_type;

typedef struct herd_master herd_master;
/* A spawned worker: an immutable record of its id, pid and socket. */
typedef struct herd_worker herd_worker;

/*
 * Connects to herdd and says hello as a master. socket_path may be NULL: then
 * $HERD_SOCKET, else /run/herd/herdd.sock for root, else
 * $XDG_RUNTIME_DIR/herd/herdd.sock, else /run/herd/herdd.sock (the system
 * instance). settings (borrowed, may be NULL) are resolved as for
 * herd_conn_connect() and also become the default RPC settings of every worker
 * this master spawns (PROTOCOL.md 3.3).
 * If nobody serves that socket (no socket, or a stale one that refuses
 * connections), a private herdd is started for it first, whichever way the
 * path was chosen, as tmux starts its server (but for a path the caller or
 * $HERD_SOCKET gave, only if its directory exists): $HERDD, else the installed
 * herdd, detached (not our child), run with --socket PATH and --exit-idle-ms
 * (10000, or $HERD_AUTOSTART_IDLE_MS) so it exits by itself once it has had no
 * connection and no worker that long; its stderr goes to herdd.log next to the
 * socket. Readiness (READY=1) is awaited for at most handshake_timeout_ms.
 * HERD_NO_AUTOSTART=1 in the environment turns this off.
 * socket_path (or $HERD_SOCKET) may name another host instead:
 * "ssh://[user@]host[:port][/path/to/herdd]", "slurm://node" or
 * "exec:COMMAND" (PROTOCOL.md 9): a launcher runs `herdd --stdio` there and
 * its stdin/stdout become a link that carries this session and the
 * connections to the workers spawned there (their socket is "HOST#PATH").
 * Everything below works the same; the link's heartbeats are this master's
 * settings, and a link that is lost reports each worker not yet ended as
 * "host_lost". Never autostarted.
 * Returns 0 with *ret (new reference), or -EINVAL, -ENOENT/-ECONNREFUSED (no
 * herdd there and none could be started), -ETIMEDOUT, -EREMOTEIO (herdd refused: permission_denied...);
 * ret_error (may be NULL) receives a new reference to the error.
 */
HERD_EXPORT int herd_master_connect(
    const char *socket_path, json_t *settings, herd_master **ret, herd_error **ret_error);

/*
 * Like herd_master_connect(), but says hello as an inspector (PROTOCOL.md
 * 3.1): a session that looks and controls (list, inspect, logs, stats,
 * subscribe, shutdown, kill) without counting among stats' masters, as
 * herdctl's does. It never starts a herdd. Same returns.
 */
HERD_EXPORT int herd_inspector_connect(
    const char *socket_path, json_t *settings, herd_master **ret, herd_error **ret_error);

/*
 * The control socket herd_master_connect(socket_path, ...) uses (socket_path
 * may be NULL: the default chosen as above), as a new malloc'd string the
 * caller frees, or NULL on ENOMEM. For messages such as "no herdd runs at ...".
 */
HERD_EXPORT char *herd_master_socket_path(const char *socket_path);

HERD_EXPORT herd_master *herd_master_ref(herd_master *m);
/* Drops a reference (NULL-safe, returns NULL); the last one closes the connection. */
HERD_EXPORT herd_master *herd_master_unref(herd_master *m);
/*
 * Closes the connection to herdd. Its master_disconnect workers are stopped
 * with reason master_closed: this and the last herd_master_unref() first tell
 * herdd ("goodbye") that the session ends on purpose. A session that ends
 * without it (the process died or exited holding it) leaves them killed_orphan,
 * which stats counts as a failure.
 */
HERD_EXPORT int herd_master_close(herd_master *m);

/* The underlying connection (borrowed): fd, events, timeout, process, on_close. */
HERD_EXPORT herd_conn *herd_master_get_conn(herd_master *m);
/* herdd's hello result (borrowed): "pid", "uid", "connection", "settings". */
HERD_EXPORT json_t *herd_master_get_server_info(herd_master *m);
/* The error of the last failed request (borrowed; valid until the next call). */
HERD_EXPORT herd_error *herd_master_last_error(herd_master *m);

/* ---- spawning ---- */

/*
 * Spawn options are the JSON params of PROTOCOL.md 4.2: "path" (required,
 * absolute), "argv", "name", "env", "cwd", "umask", "stdout", "stderr",
 * "init", "shutdown_on", "spawn_timeout_ms", "connection_timeout_ms",
 * "settings", plus two that libherd itself reads:
 *   "inherit_env": which variables of this process join "env" (the caller's
 *     own "env" members win): an array of names, where "LC_*" (a trailing
 *     '*') stands for every name with that prefix; true for all of them; false
 *     or [] for none. Default ["PATH", "LANG", "TZ", "LC_*"]. Names herdd
 *     refuses are never inherited: HERD_*, NOTIFY_SOCKET, LISTEN_*,
 *     WATCHDOG_*, and names that are not [A-Za-z_][A-Za-z0-9_]*. What the
 *     process set with setenv() counts: environ is read at the spawn.
 *   "inherit_cwd": true (the default) runs the worker in this process's
 *     working directory, as fork() would and as rpc_parallel's workers run
 *     where their master runs, so relative paths mean the same to both;
 *     false leaves herdd's default, "/". An explicit "cwd" wins.
 *   "ship": true, for a master on another host (herd_master_connect()),
 *     copies the executable at "path" there first, into a per-user cache
 *     named by its SHA-256 (nothing is copied when the host has it), and
 *     runs that copy; a cached copy that changed is refused (spawn_failed,
 *     -EREMOTEIO). The copy must find its shared libraries on the host.
 *     Ignored on this host. PROTOCOL.md 9.5.
 * libherd also adds, unless present: "settings" = this master's resolved
 * settings (with the options' own "settings" fields on top).
 * herdd gives every worker HERD_SOCKET, its own control socket, so a worker
 * that is a master itself reaches it with herd_master_connect(NULL, ...); the
 * workers such a nested master owns are stopped at once when its worker is.
 *
 * herd_spawn_opts_new() makes {"path": path, "init": init} (init borrowed, may
 * be NULL): a new reference, or NULL on ENOMEM/EINVAL. Add members with
 * json_object_set_new().
 */
HERD_EXPORT json_t *herd_spawn_opts_new(const char *path, json_t *init);

/*
 * Spawns a worker and waits until it serves (or fails). timeout_usec 0 means
 * the spawn timeout plus a margin for herdd. Returns 0 with *ret (new
 * reference), or -EINVAL (bad options), -EREMOTEIO (herd_master_last_error():
 * spawn_failed, init_failed with the worker's message, worker_exited,
 * limit_exceeded, invalid_params...), -ETIMEDOUT, -ECONNRESET.
 */
HERD_EXPORT int herd_master_spawn(
    herd_master *m, json_t *opts, uint64_t timeout_usec, herd_worker **ret);

/* Completion of herd_master_spawn_async(): worker (borrowed; take a reference
 * to keep it) on success, error (borrowed) on failure. Runs exactly once. */
typedef void (*herd_spawn_cb)(
    herd_master *m, int r, herd_worker *worker, herd_error *error, void *userdata);
/* Starts a spawn; cb runs exactly once if this returns 0. */
HERD_EXPORT int herd_master_spawn_async(
    herd_master *m, json_t *opts, herd_spawn_cb cb, void *userdata);

HERD_EXPORT herd_worker *herd_worker_ref(herd_worker *w);
HERD_EXPORT herd_worker *herd_worker_unref(herd_worker *w);
/* herdd's worker id ("w12"), the pid, the socket path and the name (borrowed). */
HERD_EXPORT const char *herd_worker_id(const herd_worker *w);
HERD_EXPORT int herd_worker_pid(const herd_worker *w);
HERD_EXPORT const char *herd_worker_socket(const herd_worker *w);
HERD_EXPORT const char *herd_worker_name(const herd_worker *w);
/*
 * The incarnation the handle names: 1 for the worker's first process, one
 * more for each restart (spawn option "restart"). A restarted worker keeps its
 * id, name and socket path, so the handle's operations check the incarnation:
 * herd_worker_kill() and herd_worker_shutdown() act on this incarnation only,
 * and herd_worker_connect() refuses a socket served by another process. 0 for
 * NULL, or when herdd did not say (an older herdd).
 */
HERD_EXPORT unsigned herd_worker_incarnation(const herd_worker *w);

/*
 * A handle (new reference in *ret) for the worker a WORKER object describes
 * (record borrowed: from herd_master_inspect(), herd_master_list(), an event),
 * naming its incarnation then. Returns 0, or -EINVAL when record lacks "id",
 * "pid" or "socket" (an exited worker has no socket).
 */
HERD_EXPORT int herd_master_worker(herd_master *m, const json_t *record, herd_worker **ret);

/*
 * Connects to the worker's socket (herd_conn_connect() with the master's
 * settings) with conn_init (borrowed, may be NULL) as the connection-state
 * init argument. Same returns as herd_conn_connect(), and -ESRCH with
 * worker_not_found in *ret_error when another process serves the socket (the
 * worker restarted: this handle's incarnation is gone). The check compares
 * the socket peer's pid (SO_PEERCRED) with the handle's; it is skipped where
 * pids cannot be compared (a herdd on another host or in another pid
 * namespace).
 */
HERD_EXPORT int herd_worker_connect(
    const herd_worker *w, json_t *conn_init, herd_conn **ret, herd_error **ret_error);

/*
 * When a worker dies: a connection made by herd_worker_connect() knows its
 * worker and the herdd that spawned it. If it is lost (the worker closed it,
 * for example by crashing) while calls, streams or sinks are pending, it asks
 * herdd how the worker ended before failing them, on an inspector session of
 * its own (so no master callback runs from there): it waits for the worker's
 * ending event (or finds the reaped record), at most 1 second, inside the
 * herd_conn_process() or blocking call that met the close. Each pending
 * operation then ends with -ECONNRESET as always, but its error is
 * worker_exited (HERD_E_WORKER_EXITED) whose data holds "worker" (the id),
 * "reason" (crashed, exited, failed, killed... as in PROTOCOL.md 4.3),
 * "exit_code", "signal" ("SIGABRT"), "message" and "stderr_tail" (the last
 * stderr lines), and whose message reads "worker w3 crashed (SIGABRT)". So
 * the error that ends a call or stream tells the whole story; on_failure
 * still reports the same end separately. If herdd does not tell within the
 * bound (the worker lives on and only closed the connection), the error is
 * connection_closed. A connection closed here (herd_conn_close(), the last
 * unref) or lost to heartbeat silence never waits.
 */

/*
 * Connect, call, close for a spawned worker: herd_call_once() on
 * herd_worker_connect(w) (so a worker that dies during the call reports why,
 * as above). Same returns.
 */
HERD_EXPORT int herd_worker_call_once(const herd_worker *w, const char *function, json_t *args,
    uint64_t timeout_usec, json_t **ret_result, herd_error **ret_error);

/* ---- controlling workers (by id: any worker of this uid) ---- */

/*
 * Graceful stop: in-band shutdown, SIGTERM, SIGKILL after grace_ms (0: herdd's
 * default, 5000). Waits until the worker is reaped; *ret_record (may be NULL)
 * receives the final WORKER object (new reference).
 */
HERD_EXPORT int herd_master_shutdown(
    herd_master *m, const char *id, unsigned grace_ms, json_t **ret_record);
/* Sends signal (a name like "TERM"/"SIGKILL"; NULL: TERM) to the worker's process group. */
HERD_EXPORT int herd_master_kill(herd_master *m, const char *id, const char *signal);
/*
 * herd_master_shutdown() and herd_master_kill() on the worker and incarnation
 * w names (through m, any master session of the same herdd): once that
 * incarnation has ended, even if the worker restarted under the same id, they
 * fail with -EREMOTEIO and worker_not_found (herd_master_last_error()) and
 * touch no process.
 */
HERD_EXPORT int herd_worker_shutdown(
    herd_master *m, const herd_worker *w, unsigned grace_ms, json_t **ret_record);
HERD_EXPORT int herd_worker_kill(herd_master *m, const herd_worker *w, const char *signal);
/* {"workers":[WORKER...]} (new reference); all includes exited records. */
HERD_EXPORT int herd_master_list(herd_master *m, bool all, json_t **ret);
/* The WORKER object (new reference). */
HERD_EXPORT int herd_master_inspect(herd_master *m, const char *id, json_t **ret);
/* {"lines":[...],"dropped":N} from the capture ring; stream NULL: stderr; lines 0: 100. */
HERD_EXPORT int herd_master_logs(
    herd_master *m, const char *id, const char *stream, unsigned lines, json_t **ret);

/*
 * Any other herdd method (subscribe, stats, ping...): blocking with a result
 * (new reference), or asynchronous with a herd_call_cb whose conn is
 * herd_master_get_conn(m). timeout_usec 0: the call timeout.
 */
HERD_EXPORT int herd_master_request(
    herd_master *m, const char *method, json_t *params, uint64_t timeout_usec, json_t **ret_result);
HERD_EXPORT int herd_master_request_async(
    herd_master *m, const char *method, json_t *params, herd_call_cb cb, void *userdata);

/* ---- events ---- */

/*
 * herdd's event notification: event ("ready", "exited", "crashed", "failed",
 * "heartbeat_lost", "spawn_timeout", "init_failed", "stopped", "killed",
 * "host_lost" (libherd's own, for a master on another host whose link was
 * lost: a failure), or a newer name),
 * the worker's id, message (may be NULL), stderr_tail (borrowed array of the
 * last stderr lines) and worker (borrowed WORKER object). All are valid during
 * the callback only.
 */
typedef void (*herd_master_event_cb)(herd_master *m, const char *event, const char *worker_id,
    const char *message, json_t *stderr_tail, json_t *worker, void *userdata);

/*
 * rpc_parallel's on_failure: cb runs for every failure of a worker this master
 * owns (or, after "subscribe", may see): events crashed, failed,
 * heartbeat_lost, spawn_timeout, init_failed, killed (a kill request,
 * herdctl kill for one, ended it) and exited with a non-zero status. cb NULL removes it. Returns 0 or -EINVAL.
 */
HERD_EXPORT int herd_master_on_failure(herd_master *m, herd_master_event_cb cb, void *userdata);
/* Every event, failures included (ready, stopped, clean exits...). */
HERD_EXPORT int herd_master_on_event(herd_master *m, herd_master_event_cb cb, void *userdata);

/*
 * Every notification herdd sends on the master's connection, as it came:
 * method and params (borrowed, valid during the call). "event" carries "seq"
 * and "instance", and includes the events that name no worker (on_event never
 * sees them): "gap" {"lost", "first", "last", "reason"}, seqs this
 * connection will never get; to resume after a reconnect, subscribe with
 * "since" the last seq seen and its "instance". "log" carries the new lines
 * of a stream followed with logs {"follow": true}. PROTOCOL.md 4.6 and 4.7
 * say more. Runs before on_event and on_failure, on the same thread.
 */
typedef void (*herd_master_notice_cb)(
    herd_master *m, const char *method, json_t *params, void *userdata);
/* Sets the notice callback (NULL removes it). Returns 0 or -EINVAL. */
HERD_EXPORT int herd_master_on_notice(herd_master *m, herd_master_notice_cb cb, void *userdata);

/* ---- one executable, master and worker (rpc_parallel's start_app) ---- */

/*
 * Call first thing in main(). If herdd started this process as a worker
 * (HERD_CHANNEL_FD is set), serves type with herd_worker_main() and exits with
 * its status: it never returns. Otherwise returns 0 and the program goes on as
 * a master, which can spawn itself with herd_spawn_opts_new(herd_self_path()).
 * Those workers start in the master's working directory ("inherit_cwd"
 * above), so relative paths work in both halves of the program.
 * Returns -EINVAL for a NULL type.
 */
HERD_EXPORT int herd_start_app(const struct herd_worker_type *type, int argc, char **argv);

/*
 * The absolute path of this process's executable (/proc/self/exe), or NULL if
 * it cannot be read. The string is computed once and kept for the life of the
 * process.
 */
HERD_EXPORT const char *herd_self_path(void);

#ifdef __cplusplus
}
#endif

#endif
