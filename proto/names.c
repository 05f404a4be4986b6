/* SPDX-License-Identifier: MIT */
/*
 * The name tables of herd's words (names.h). Each is indexed by its enum, so a
 * name is one array access and a lookup by name a short scan.
 */
#include <string.h>

#include "names.h"

#define LEN(a) (sizeof(a) / sizeof((a)[0]))

static const char *const state_names[PROTO_STATE_COUNT] = {
	[PROTO_STATE_STARTING] = "starting",
	[PROTO_STATE_READY] = "ready",
	[PROTO_STATE_STOPPING] = "stopping",
	[PROTO_STATE_EXITED] = "exited",
};

static const char *const shutdown_on_names[PROTO_SHUTDOWN_ON_COUNT] = {
	[PROTO_SHUTDOWN_MASTER_DISCONNECT] = "master_disconnect",
	[PROTO_SHUTDOWN_CONNECTION_CLOSED] = "connection_closed",
	[PROTO_SHUTDOWN_EXPLICIT] = "explicit",
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
};

/* Name, the event it produces, and whether "stats" counts it as a failure. */
static const struct {
	const char *name;
	enum proto_event event;
	bool failure;
} reasons[PROTO_REASON_COUNT] = {
	[PROTO_REASON_NONE] = { NULL, PROTO_EVENT_EXITED, false },
	[PROTO_REASON_CRASHED] = { "crashed", PROTO_EVENT_CRASHED, true },
	[PROTO_REASON_FAILED] = { "failed", PROTO_EVENT_FAILED, true },
	[PROTO_REASON_INIT_FAILED] = { "init_failed", PROTO_EVENT_INIT_FAILED, true },
	[PROTO_REASON_SPAWN_FAILED] = { "spawn_failed", PROTO_EVENT_EXITED, true },
	[PROTO_REASON_SPAWN_TIMEOUT] = { "spawn_timeout", PROTO_EVENT_SPAWN_TIMEOUT, true },
	[PROTO_REASON_HEARTBEAT_LOST] = { "heartbeat_lost", PROTO_EVENT_HEARTBEAT_LOST, true },
	[PROTO_REASON_KILLED_ORPHAN] = { "killed_orphan", PROTO_EVENT_STOPPED, true },
	[PROTO_REASON_EXITED] = { "exited", PROTO_EVENT_EXITED, false },
	[PROTO_REASON_SHUTDOWN] = { "shutdown", PROTO_EVENT_STOPPED, false },
	[PROTO_REASON_DAEMON_SHUTDOWN] = { "daemon_shutdown", PROTO_EVENT_STOPPED, false },
};

static const char *
name_at(const char *const *names, size_t n, unsigned i)
{
	return i < n ? names[i] : NULL;
}

static int
find(const char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; name && i < n; i++)
		if (names[i] && strcmp(names[i], name) == 0)
			return (int)i;
	return -1;
}

/* A state's name. */
const char *
proto_state_name(enum proto_state s)
{
	return name_at(state_names, LEN(state_names), s);
}

/* A state by name, or -1. */
int
proto_state_from_name(const char *name)
{
	return find(state_names, LEN(state_names), name);
}

/* A shutdown_on policy's name. */
const char *
proto_shutdown_on_name(enum proto_shutdown_on p)
{
	return name_at(shutdown_on_names, LEN(shutdown_on_names), p);
}

/* A shutdown_on policy by name, or -1. */
int
proto_shutdown_on_from_name(const char *name)
{
	return find(shutdown_on_names, LEN(shutdown_on_names), name);
}

/* An event's name. */
const char *
proto_event_name(enum proto_event e)
{
	return name_at(event_names, LEN(event_names), e);
}

/* An event by name, or -1. */
int
proto_event_from_name(const char *name)
{
	return find(event_names, LEN(event_names), name);
}

/* A reason's name; NULL for PROTO_REASON_NONE. */
const char *
proto_reason_name(enum proto_reason r)
{
	return (unsigned)r < PROTO_REASON_COUNT ? reasons[r].name : NULL;
}

/* A reason by name, or -1. */
int
proto_reason_from_name(const char *name)
{
	for (int i = 0; name && i < PROTO_REASON_COUNT; i++)
		if (reasons[i].name && strcmp(reasons[i].name, name) == 0)
			return i;
	return -1;
}

/* The event of PROTOCOL.md 4.3's table. */
enum proto_event
proto_reason_event(enum proto_reason r)
{
	return (unsigned)r < PROTO_REASON_COUNT ? reasons[r].event : PROTO_EVENT_EXITED;
}

/* True for the reasons counted under "failures" in "stats". */
bool
proto_reason_is_failure(enum proto_reason r)
{
	return (unsigned)r < PROTO_REASON_COUNT && reasons[r].failure;
}
