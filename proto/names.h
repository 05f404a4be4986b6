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

/* A worker's state (PROTOCOL.md 4.3). */
enum proto_state {
	PROTO_STATE_STARTING,
	PROTO_STATE_READY,
	PROTO_STATE_STOPPING,
	PROTO_STATE_EXITED,
	PROTO_STATE_RESTARTING, /* between incarnations, waiting out the backoff */
	PROTO_STATE_FAILED, /* given up by its restart policy's start limit */
	PROTO_STATE_COUNT,
};

/* When a worker goes away (spawn's shutdown_on, PROTOCOL.md 4.2). */
enum proto_shutdown_on {
	PROTO_SHUTDOWN_MASTER_DISCONNECT,
	PROTO_SHUTDOWN_CONNECTION_CLOSED,
	PROTO_SHUTDOWN_EXPLICIT,
	PROTO_SHUTDOWN_ON_COUNT,
};

/* When an explicit worker that ended is started again (spawn's restart, PROTOCOL.md 4.2). */
enum proto_restart {
	PROTO_RESTART_NO,
	PROTO_RESTART_ON_FAILURE,
	PROTO_RESTART_ALWAYS,
	PROTO_RESTART_COUNT,
};

/* The events of the "event" notification (PROTOCOL.md 4.7). */
enum proto_event {
	PROTO_EVENT_READY,
	PROTO_EVENT_EXITED,
	PROTO_EVENT_CRASHED,
	PROTO_EVENT_FAILED,
	PROTO_EVENT_HEARTBEAT_LOST,
	PROTO_EVENT_SPAWN_TIMEOUT,
	PROTO_EVENT_INIT_FAILED,
	PROTO_EVENT_STOPPED,
	PROTO_EVENT_KILLED,
	PROTO_EVENT_RESTARTED, /* a new incarnation started */
	PROTO_EVENT_GIVEN_UP, /* the start limit was reached: state failed */
	PROTO_EVENT_COUNT,
};

/*
 * Why a worker ended (PROTOCOL.md 4.3). PROTO_REASON_NONE is a live worker's;
 * it has no name.
 */
enum proto_reason {
	PROTO_REASON_NONE,
	PROTO_REASON_CRASHED,
	PROTO_REASON_FAILED,
	PROTO_REASON_INIT_FAILED,
	PROTO_REASON_SPAWN_FAILED,
	PROTO_REASON_SPAWN_TIMEOUT,
	PROTO_REASON_HEARTBEAT_LOST,
	PROTO_REASON_KILLED_ORPHAN,
	PROTO_REASON_EXITED,
	PROTO_REASON_SHUTDOWN,
	PROTO_REASON_DAEMON_SHUTDOWN,
	PROTO_REASON_MASTER_CLOSED,
	PROTO_REASON_KILLED,
	PROTO_REASON_OOM_KILLED,
	PROTO_REASON_COUNT,
};

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
