/* SPDX-License-Identifier: MIT */
/*
 * The name tables of herd's words (names.h). Each is indexed by its enum, so a
 * name is one array access and a lookup by name a short scan.
 */
#include <string.h>

#include "names.h"

/* A name table's row and reason_rows' row, made from the lists in names.h. */
#define NAME_ROW(value, name, ...)              [value] = name,
#define REASON_ROW(value, name, event, failure) [value] = { event, failure },

static const char *const state_names[] = { PROTO_STATES(NAME_ROW) };
static const char *const shutdown_on_names[] = { PROTO_SHUTDOWN_ONS(NAME_ROW) };
static const char *const restart_names[] = { PROTO_RESTARTS(NAME_ROW) };
static const char *const event_names[] = { PROTO_EVENTS(NAME_ROW) };
static const char *const reason_names[] = { PROTO_REASONS(NAME_ROW) };

/* The event each reason produces and whether "stats" counts it as a failure (names.h). */
static const struct {
	enum proto_event event;
	bool failure;
} reason_rows[] = { PROTO_REASONS(REASON_ROW) };

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
