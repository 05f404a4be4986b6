/* SPDX-License-Identifier: MIT */
/*
 * The name tables of herd's words (names.h). Each is indexed by its enum, so a
 * name is one array access and a lookup by name a short scan.
 */
#include <string.h>

#include "names.h"

/* One table per vocabulary: data rows, alike only in shape; NAME_TABLE below is their one code. */
static const char *const state_names[PROTO_STATE_COUNT] = {
	[PROTO_STATE_STARTING] = "starting",
	[PROTO_STATE_READY] = "ready",
	[PROTO_STATE_STOPPING] = "stopping",
	[PROTO_STATE_EXITED] = "exited",
	[PROTO_STATE_RESTARTING] = "restarting",
	[PROTO_STATE_FAILED] = "failed",
};

static const char *const shutdown_on_names[PROTO_SHUTDOWN_ON_COUNT] = {
	[PROTO_SHUTDOWN_MASTER_DISCONNECT] = "master_disconnect",
	[PROTO_SHUTDOWN_CONNECTION_CLOSED] = "connection_closed",
	[PROTO_SHUTDOWN_EXPLICIT] = "explicit",
};

static const char *const restart_names[PROTO_RESTART_COUNT] = {
	[PROTO_RESTART_NO] = "no",
	[PROTO_RESTART_ON_FAILURE] = "on-failure",
	[PROTO_RESTART_ALWAYS] = "always",
};

static const char *const event_names[PROTO_EVENT_COUNT] = {
	[PROTO_EVENT_READY] = "ready",
	[PROTO_EVENT_EXITED] = "exited",
	[PROTO_EVENT_CRASHED] = "crashed",
	[PROTO_EVENT_FAILED] = "failed",
	[PROTO_EVENT_HEARTBEAT_LOST] = "heartbeat_lost",
	[PROTO_EVENT_SPAWN_TIMEOUT] = "spawn_timeout",
	[PROTO_EVENT_INIT_FAILED] = "init_failed",
	[PROTO_EVENT_STOPPED] = "stopped",
	[PROTO_EVENT_KILLED] = "killed",
	[PROTO_EVENT_RESTARTED] = "restarted",
	[PROTO_EVENT_GIVEN_UP] = "given_up",
};

static const char *const reason_names[PROTO_REASON_COUNT] = {
	[PROTO_REASON_CRASHED] = "crashed",
	[PROTO_REASON_FAILED] = "failed",
	[PROTO_REASON_INIT_FAILED] = "init_failed",
	[PROTO_REASON_SPAWN_FAILED] = "spawn_failed",
	[PROTO_REASON_SPAWN_TIMEOUT] = "spawn_timeout",
	[PROTO_REASON_HEARTBEAT_LOST] = "heartbeat_lost",
	[PROTO_REASON_KILLED_ORPHAN] = "killed_orphan",
	[PROTO_REASON_EXITED] = "exited",
	[PROTO_REASON_SHUTDOWN] = "shutdown",
	[PROTO_REASON_DAEMON_SHUTDOWN] = "daemon_shutdown",
	[PROTO_REASON_MASTER_CLOSED] = "master_closed",
	[PROTO_REASON_KILLED] = "killed",
	[PROTO_REASON_OOM_KILLED] = "oom_killed",
};

/*
 * The event each reason produces and whether "stats" counts it as a failure.
 * A master that closed its session ends its workers normally; one that
 * vanished (killed_orphan) is a failure. An operator's kill is its own event,
 * so the owner learns that its worker went without its asking.
 */
static const struct {
	enum proto_event event;
	bool failure;
} reason_rows[PROTO_REASON_COUNT] = {
	[PROTO_REASON_NONE] = { PROTO_EVENT_EXITED, false },
	[PROTO_REASON_CRASHED] = { PROTO_EVENT_CRASHED, true },
	[PROTO_REASON_FAILED] = { PROTO_EVENT_FAILED, true },
	[PROTO_REASON_INIT_FAILED] = { PROTO_EVENT_INIT_FAILED, true },
	[PROTO_REASON_SPAWN_FAILED] = { PROTO_EVENT_EXITED, true },
	[PROTO_REASON_SPAWN_TIMEOUT] = { PROTO_EVENT_SPAWN_TIMEOUT, true },
	[PROTO_REASON_HEARTBEAT_LOST] = { PROTO_EVENT_HEARTBEAT_LOST, true },
	[PROTO_REASON_KILLED_ORPHAN] = { PROTO_EVENT_STOPPED, true },
	[PROTO_REASON_EXITED] = { PROTO_EVENT_EXITED, false },
	[PROTO_REASON_SHUTDOWN] = { PROTO_EVENT_STOPPED, false },
	[PROTO_REASON_DAEMON_SHUTDOWN] = { PROTO_EVENT_STOPPED, false },
	[PROTO_REASON_MASTER_CLOSED] = { PROTO_EVENT_STOPPED, false },
	[PROTO_REASON_KILLED] = { PROTO_EVENT_KILLED, true },
	/* Its cgroup's memory limit: the kernel's SIGKILL, a crash the owner is told the cause of. */
	[PROTO_REASON_OOM_KILLED] = { PROTO_EVENT_CRASHED, true },
};

/* names[i]: NULL out of range and for a hole in the table. */
const char *
proto_name_at(const char *const *names, size_t n, unsigned i)
{
	return i < n ? names[i] : NULL;
}

/* The index of name in names (holes skipped), or -1; a NULL name is unknown. */
int
proto_name_find(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; name && i < n; i++)
		if (names[i] && strcmp(names[i], name) == 0)
			return (int)i;
	return -1;
}

/* Defines PREFIX_name() and PREFIX_from_name() (names.h) over one name table. */
#define NAME_TABLE(prefix, type, names)                                                            \
	const char *prefix##_name(type v)                                                          \
	{                                                                                          \
		return proto_name_at(names, PROTO_LEN(names), (unsigned)v);                        \
	}                                                                                          \
	int prefix##_from_name(const char *name)                                                   \
	{                                                                                          \
		return proto_name_find(names, PROTO_LEN(names), name);                             \
	}

NAME_TABLE(proto_state, enum proto_state, state_names)
NAME_TABLE(proto_shutdown_on, enum proto_shutdown_on, shutdown_on_names)
NAME_TABLE(proto_restart, enum proto_restart, restart_names)
NAME_TABLE(proto_event, enum proto_event, event_names)
NAME_TABLE(proto_reason, enum proto_reason, reason_names)

/* The event of PROTOCOL.md 4.3's table. */
enum proto_event
proto_reason_event(enum proto_reason r)
{
	return (unsigned)r < PROTO_REASON_COUNT ? reason_rows[r].event : PROTO_EVENT_EXITED;
}

/* True for the reasons counted under "failures" in "stats". */
bool
proto_reason_is_failure(enum proto_reason r)
{
	return (unsigned)r < PROTO_REASON_COUNT && reason_rows[r].failure;
}
