/* SPDX-License-Identifier: MIT */
/*
 * herd's words as enums with name tables, like errors.c for error codes:
 * worker states, exit reasons, events and shutdown_on policies (PROTOCOL.md
 * 4.2, 4.3, 4.7). Code compares enums; names appear only on the wire and in
 * logs, and come from one table each.
 */
#ifndef HERD_PROTO_NAMES_H
#define HERD_PROTO_NAMES_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Each vocabulary is one list of X(VALUE, "name", ...) rows; its enum here and
 * its name table in names.c are both made from that list, so a value cannot
 * be added without its name or lose its place in the table.
 */
#define PROTO_ENUM_ROW(value, ...) value,

/* A worker's state (PROTOCOL.md 4.3). */
#define PROTO_STATES(X)                                                                            \
	X(PROTO_STATE_STARTING, "starting")                                                        \
	X(PROTO_STATE_READY, "ready")                                                              \
	X(PROTO_STATE_STOPPING, "stopping")                                                        \
	X(PROTO_STATE_EXITED, "exited")                                                            \
	/* between incarnations, waiting out the backoff */                                        \
	X(PROTO_STATE_RESTARTING, "restarting")                                                    \
	/* given up by its restart policy's start limit */                                         \
	X(PROTO_STATE_FAILED, "failed")
enum proto_state { PROTO_STATES(PROTO_ENUM_ROW) PROTO_STATE_COUNT };

/* When a worker goes away (spawn's shutdown_on, PROTOCOL.md 4.2). */
#define PROTO_SHUTDOWN_ONS(X)                                                                      \
	X(PROTO_SHUTDOWN_MASTER_DISCONNECT, "master_disconnect")                                   \
	X(PROTO_SHUTDOWN_CONNECTION_CLOSED, "connection_closed")                                   \
	X(PROTO_SHUTDOWN_EXPLICIT, "explicit")
enum proto_shutdown_on { PROTO_SHUTDOWN_ONS(PROTO_ENUM_ROW) PROTO_SHUTDOWN_ON_COUNT };

/* When an explicit worker that ended is started again (spawn's restart, PROTOCOL.md 4.2). */
#define PROTO_RESTARTS(X)                                                                          \
	X(PROTO_RESTART_NO, "no")                                                                  \
	X(PROTO_RESTART_ON_FAILURE, "on-failure")                                                  \
	X(PROTO_RESTART_ALWAYS, "always")
enum proto_restart { PROTO_RESTARTS(PROTO_ENUM_ROW) PROTO_RESTART_COUNT };

/* The events of the "event" notification (PROTOCOL.md 4.7). */
#define PROTO_EVENTS(X)                                                                            \
	X(PROTO_EVENT_READY, "ready")                                                              \
	X(PROTO_EVENT_EXITED, "exited")                                                            \
	X(PROTO_EVENT_CRASHED, "crashed")                                                          \
	X(PROTO_EVENT_FAILED, "failed")                                                            \
	X(PROTO_EVENT_HEARTBEAT_LOST, "heartbeat_lost")                                            \
	X(PROTO_EVENT_SPAWN_TIMEOUT, "spawn_timeout")                                              \
	X(PROTO_EVENT_INIT_FAILED, "init_failed")                                                  \
	X(PROTO_EVENT_STOPPED, "stopped")                                                          \
	X(PROTO_EVENT_KILLED, "killed")                                                            \
	/* a new incarnation started */                                                            \
	X(PROTO_EVENT_RESTARTED, "restarted")                                                      \
	/* the start limit was reached: state failed */                                            \
	X(PROTO_EVENT_GIVEN_UP, "given_up")
enum proto_event { PROTO_EVENTS(PROTO_ENUM_ROW) PROTO_EVENT_COUNT };

/*
 * Why a worker ended (PROTOCOL.md 4.3), with the event each reason produces
 * and whether "stats" counts it as a failure. PROTO_REASON_NONE is a live
 * worker's; it has no name. Rows of data, alike in shape, one per reason.
 */
#define PROTO_REASONS(X)                                                                           \
	X(PROTO_REASON_NONE, NULL, PROTO_EVENT_EXITED, false)                                      \
	X(PROTO_REASON_CRASHED, "crashed", PROTO_EVENT_CRASHED, true)                              \
	X(PROTO_REASON_FAILED, "failed", PROTO_EVENT_FAILED, true)                                 \
	X(PROTO_REASON_INIT_FAILED, "init_failed", PROTO_EVENT_INIT_FAILED, true)                  \
	X(PROTO_REASON_SPAWN_FAILED, "spawn_failed", PROTO_EVENT_EXITED, true)                     \
	X(PROTO_REASON_SPAWN_TIMEOUT, "spawn_timeout", PROTO_EVENT_SPAWN_TIMEOUT, true)            \
	X(PROTO_REASON_HEARTBEAT_LOST, "heartbeat_lost", PROTO_EVENT_HEARTBEAT_LOST, true)         \
	/* a master that vanished: a failure, unlike master_closed */                              \
	X(PROTO_REASON_KILLED_ORPHAN, "killed_orphan", PROTO_EVENT_STOPPED, true)                  \
	X(PROTO_REASON_EXITED, "exited", PROTO_EVENT_EXITED, false)                                \
	X(PROTO_REASON_SHUTDOWN, "shutdown", PROTO_EVENT_STOPPED, false)                           \
	X(PROTO_REASON_DAEMON_SHUTDOWN, "daemon_shutdown", PROTO_EVENT_STOPPED, false)             \
	X(PROTO_REASON_MASTER_CLOSED, "master_closed", PROTO_EVENT_STOPPED, false)                 \
	/* an operator's kill is its own event, so the owner learns of it */                       \
	X(PROTO_REASON_KILLED, "killed", PROTO_EVENT_KILLED, true)                                 \
	/* its cgroup's memory limit: the kernel's kill, a crash with a cause */                   \
	X(PROTO_REASON_OOM_KILLED, "oom_killed", PROTO_EVENT_CRASHED, true)
enum proto_reason { PROTO_REASONS(PROTO_ENUM_ROW) PROTO_REASON_COUNT };

/* Default and largest grace of a "shutdown" request (PROTOCOL.md 4.4). */
#define PROTO_SHUTDOWN_GRACE_DEFAULT_MS 5000u
#define PROTO_SHUTDOWN_GRACE_MAX_MS     600000u

/*
 * Each table: the name of a value (NULL for one out of range, and for
 * PROTO_REASON_NONE), and the value of a name (-1 for an unknown name).
 */
const char *proto_state_name(enum proto_state s);
int proto_state_from_name(const char *name);
const char *proto_shutdown_on_name(enum proto_shutdown_on p);
int proto_shutdown_on_from_name(const char *name);
const char *proto_restart_name(enum proto_restart r);
int proto_restart_from_name(const char *name);
const char *proto_event_name(enum proto_event e);
int proto_event_from_name(const char *name);
const char *proto_reason_name(enum proto_reason r);
int proto_reason_from_name(const char *name);

/*
 * The lookups every name table indexed by its enum uses, these and libherd's
 * and herdd's own: names[i] (NULL out of range or for a hole), and the index
 * of a name (-1 for an unknown or NULL name).
 */
#define PROTO_LEN(a) (sizeof(a) / sizeof((a)[0]))
const char *proto_name_at(const char *const *names, size_t n, unsigned i);
int proto_name_find(const char *const *names, size_t n, const char *name);

/* The event an exit for reason r produces (the table in PROTOCOL.md 4.3). */
enum proto_event proto_reason_event(enum proto_reason r);
/* True for the reasons "stats" counts as failures. */
bool proto_reason_is_failure(enum proto_reason r);

#endif
