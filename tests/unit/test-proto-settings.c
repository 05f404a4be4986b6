/* SPDX-License-Identifier: MIT */
/*
 * proto's settings table (PROTOCOL.md 3.2, 3.4) and the name tables of
 * states, reasons, events and shutdown_on policies. herdd and libherd (both
 * ends of a hello included) validate through these functions, so what is
 * refused here is refused on every side.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ht-check.h"
#include "proto.h"

#define DAY_MS 86400000LL
#define MAX_MS 4294967295LL

static json_t *
obj(const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);

	ck_assert_msg(v != NULL, "test text does not parse: %s", jerr.text);
	return v;
}

/* Field by field: the struct has padding memcmp would read. */
static bool
same(const struct proto_settings *a, const struct proto_settings *b)
{
	for (int i = 0; i < PROTO_SETTINGS_COUNT; i++)
		if (proto_settings_get(a, (enum proto_setting)i) !=
		    proto_settings_get(b, (enum proto_setting)i))
			return false;
	return true;
}

/* Applies text on the defaults; on failure checks that err names want_field. */
static int
apply(const char *text, const char *want_field, struct proto_settings *s)
{
	struct proto_settings_error err = { 0 };
	struct proto_settings before;
	json_t *v = obj(text);
	int r;

	proto_settings_defaults(s);
	before = *s;
	r = proto_settings_apply(s, v, "test", &err);
	json_decref(v);
	if (r < 0) {
		ck_assert_int_eq(r, -EINVAL);
		ck_assert_msg(same(&before, s), "%s changed *s", text);
		ck_assert_str_eq(err.source, "test");
		ck_assert_msg(!strncmp(err.text, "test: ", 6), "\"%s\" lacks the source", err.text);
		if (want_field) {
			ck_assert_ptr_nonnull(err.field);
			ck_assert_str_eq(err.field, want_field);
		}
		ck_assert_msg(!want_field || strstr(err.text, want_field), "\"%s\" lacks \"%s\"",
		    err.text, want_field);
	}
	return r;
}

static void
accepts(const char *text)
{
	struct proto_settings s;

	ck_assert_msg(apply(text, NULL, &s) == 0, "%s refused", text);
}

static void
refuses(const char *text, const char *field)
{
	struct proto_settings s;

	ck_assert_msg(apply(text, field, &s) == -EINVAL, "%s accepted", text);
}

START_TEST(table_rows)
{
	static const char *const names[] = { "max_message_size", "heartbeat_interval_ms",
		"heartbeat_timeout_ms", "handshake_timeout_ms", "spawn_timeout_ms",
		"connection_timeout_ms" };
	struct proto_settings s;
	json_t *j;
	int i;

	ck_assert_int_eq(PROTO_SETTINGS_COUNT, 6);
	proto_settings_defaults(&s);
	j = proto_settings_to_json(&s);
	ck_assert_int_eq(json_object_size(j), 6);
	for (i = 0; i < PROTO_SETTINGS_COUNT; i++) {
		const struct proto_setting_info *in = proto_setting_info((enum proto_setting)i);

		ck_assert_str_eq(in->name, names[i]);
		ck_assert_int_eq(proto_setting_lookup(names[i]), i);
		ck_assert_uint_eq(proto_settings_get(&s, (enum proto_setting)i), in->def);
		ck_assert_int_eq(json_integer_value(json_object_get(j, names[i])), in->def);
		ck_assert(in->min <= in->def && in->def <= in->max);
		/* 0 has a meaning exactly when it is allowed. */
		ck_assert_int_eq(in->zero != NULL, in->min == 0);
	}
	json_decref(j);
	ck_assert_ptr_null(proto_setting_info(PROTO_SETTINGS_COUNT));
	ck_assert_int_eq(proto_setting_lookup("max_mesage_size"), -1);
	ck_assert_int_eq(proto_setting_lookup(NULL), -1);

	/* The defaults are PROTOCOL.md 3.2's. */
	ck_assert_uint_eq(s.max_message_size, 16777216);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 1000);
	ck_assert_uint_eq(s.heartbeat_timeout_ms, 10000);
	ck_assert_uint_eq(s.handshake_timeout_ms, 10000);
	ck_assert_uint_eq(s.spawn_timeout_ms, 30000);
	ck_assert_uint_eq(s.connection_timeout_ms, 10000);
}
END_TEST

START_TEST(bounds)
{
	char text[128];
	int i;

	accepts("{\"max_message_size\": 1024}");
	accepts("{\"max_message_size\": 1073741824}");
	refuses("{\"max_message_size\": 0}", "max_message_size");
	refuses("{\"max_message_size\": 1023}", "max_message_size");
	refuses("{\"max_message_size\": 1073741825}", "max_message_size");

	/* Heartbeats: 0 turns them off; at most a day. */
	accepts("{\"heartbeat_interval_ms\": 0, \"heartbeat_timeout_ms\": 0}");
	accepts("{\"heartbeat_interval_ms\": 1000, \"heartbeat_timeout_ms\": 86400000}");
	refuses("{\"heartbeat_timeout_ms\": 86400001}", "heartbeat_timeout_ms");
	refuses("{\"heartbeat_interval_ms\": 90000000}", "heartbeat_interval_ms");
	refuses("{\"heartbeat_interval_ms\": 4294967296}", "heartbeat_interval_ms");

	/* The other timeouts: 1 .. 2^32-1; 0 would expire at once. */
	for (i = PROTO_SET_HANDSHAKE_TIMEOUT_MS; i <= PROTO_SET_CONNECTION_TIMEOUT_MS; i++) {
		const char *name = proto_setting_info((enum proto_setting)i)->name;

		snprintf(text, sizeof(text), "{\"%s\": 1}", name);
		accepts(text);
		snprintf(text, sizeof(text), "{\"%s\": %lld}", name, MAX_MS);
		accepts(text);
		snprintf(text, sizeof(text), "{\"%s\": 0}", name);
		refuses(text, name);
		snprintf(text, sizeof(text), "{\"%s\": %lld}", name, MAX_MS + 1);
		refuses(text, name);
		snprintf(text, sizeof(text), "{\"%s\": -1}", name);
		refuses(text, name);
	}
}
END_TEST

START_TEST(types_and_fields)
{
	struct proto_settings s;

	refuses("{\"spawn_timeout_ms\": \"10\"}", "spawn_timeout_ms");
	refuses("{\"spawn_timeout_ms\": 1.5}", "spawn_timeout_ms");
	refuses("{\"spawn_timeout_ms\": true}", "spawn_timeout_ms");
	refuses("{\"spawn_timeout_ms\": null}", "spawn_timeout_ms");
	/* An unknown field or a non-object names no field but says what is wrong. */
	refuses("{\"spawn_timeout\": 10}", NULL);
	refuses("[1]", NULL);
	refuses("7", NULL);
	/* A later bad field leaves the earlier good ones unapplied. */
	refuses("{\"spawn_timeout_ms\": 5, \"bogus\": 1}", NULL);

	/* NULL changes nothing; {} neither. */
	proto_settings_defaults(&s);
	ck_assert_int_eq(proto_settings_apply(&s, NULL, "test", NULL), 0);
	ck_assert_int_eq(apply("{}", NULL, &s), 0);
	ck_assert_uint_eq(s.spawn_timeout_ms, 30000);
}
END_TEST

START_TEST(text_and_field_by_field)
{
	struct proto_settings_error err;
	struct proto_settings s;

	proto_settings_defaults(&s);
	ck_assert_int_eq(
	    proto_settings_apply_text(&s, "{\"spawn_timeout_ms\": 5000}", "code", &err), 0);
	ck_assert_int_eq(
	    proto_settings_apply_text(&s, "{\"heartbeat_interval_ms\": 250}", "env", &err), 0);
	ck_assert_uint_eq(s.spawn_timeout_ms, 5000);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 250);
	ck_assert_uint_eq(s.connection_timeout_ms, 10000);

	ck_assert_int_eq(proto_settings_apply_text(&s, "{not json", "ENV", &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.text, "ENV: not valid JSON"));
	ck_assert_ptr_null(err.field);
	ck_assert_int_eq(
	    proto_settings_apply_text(&s, "{\"a\": 1, \"a\": 2}", "ENV", &err), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err.text, "not valid JSON"));

	/* proto_settings_set() checks the same bounds. */
	ck_assert_int_eq(
	    proto_settings_set(&s, PROTO_SET_SPAWN_TIMEOUT_MS, 0, "spawn", &err), -EINVAL);
	ck_assert_str_eq(err.field, "spawn_timeout_ms");
	ck_assert_int_eq(proto_settings_set(&s, PROTO_SET_SPAWN_TIMEOUT_MS, 7, "spawn", NULL), 0);
	ck_assert_uint_eq(s.spawn_timeout_ms, 7);
	ck_assert_int_eq(proto_settings_set(&s, PROTO_SETTINGS_COUNT, 7, "spawn", NULL), -EINVAL);
}
END_TEST

START_TEST(heartbeat_rule)
{
	struct proto_settings_error err;
	struct proto_settings s;

	proto_settings_defaults(&s);
	ck_assert_int_eq(proto_settings_check(&s, "x", &err), 0);
	s.heartbeat_interval_ms = 500;
	s.heartbeat_timeout_ms = 500;
	ck_assert_int_eq(proto_settings_check(&s, "x", &err), -EINVAL);
	ck_assert_str_eq(err.field, "heartbeat_timeout_ms");
	ck_assert_ptr_nonnull(strstr(err.text, "longer"));
	/* Either one off: nothing to compare. */
	s.heartbeat_interval_ms = 0;
	ck_assert_int_eq(proto_settings_check(&s, "x", &err), 0);
	s.heartbeat_interval_ms = 500;
	s.heartbeat_timeout_ms = 0;
	ck_assert_int_eq(proto_settings_check(&s, "x", &err), 0);
}
END_TEST

/* What herdd's hello and the worker's hello both call. */
static int
hello(const char *text, struct proto_settings *s)
{
	struct proto_settings_error err = { 0 };
	struct proto_settings before;
	json_t *v = text ? obj(text) : NULL;
	int r;

	proto_settings_defaults(s);
	s->heartbeat_interval_ms = s->heartbeat_timeout_ms = 0;
	before = *s;
	r = proto_settings_apply_hello(s, v, &err);
	json_decref(v);
	if (r < 0) {
		ck_assert_msg(same(&before, s), "%s changed *s", text);
		ck_assert_ptr_nonnull(strstr(err.text, "hello settings"));
	}
	return r;
}

START_TEST(hello_rules)
{
	static const char *const refused[] = {
		/* Values the worker's hello took before it shared herdd's rules. */
		"{\"max_message_size\": 0}",
		"{\"max_message_size\": 1023}",
		"{\"max_message_size\": 1073741825}",
		"{\"heartbeat_interval_ms\": 4294967296}",
		"{\"heartbeat_interval_ms\": 1000, \"heartbeat_timeout_ms\": 4294967296}",
		"{\"heartbeat_interval_ms\": -1}",
		/* PROTOCOL.md 3.4: only the connection's three fields. */
		"{\"spawn_timeout_ms\": 5}",
		"{\"handshake_timeout_ms\": 5}",
		"{\"connection_timeout_ms\": 5}",
		/* A timeout without an interval, or not longer than it. */
		"{\"heartbeat_timeout_ms\": 1000}",
		"{\"heartbeat_interval_ms\": 1000, \"heartbeat_timeout_ms\": 1000}",
		"{\"heartbeat_interval_ms\": 1000, \"heartbeat_timeout_ms\": 86400001}",
		"[]",
		"null",
	};
	struct proto_settings s;
	size_t i;

	for (i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		ck_assert_msg(hello(refused[i], &s) == -EINVAL, "hello took %s", refused[i]);

	ck_assert_int_eq(hello(NULL, &s), 0);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 0);
	ck_assert_uint_eq(s.max_message_size, 16777216);
	ck_assert_int_eq(hello("{\"max_message_size\": 1024, \"heartbeat_interval_ms\": 50, "
	                       "\"heartbeat_timeout_ms\": 400}",
	                     &s),
	    0);
	ck_assert_uint_eq(s.max_message_size, 1024);
	ck_assert_uint_eq(s.heartbeat_interval_ms, 50);
	ck_assert_uint_eq(s.heartbeat_timeout_ms, 400);
	ck_assert_int_eq(hello("{\"heartbeat_interval_ms\": 86400000}", &s), 0);
}
END_TEST

/*
 * Every name of one vocabulary both ways, from the test's own list of them:
 * proto_KIND_name(i) is names[i] and proto_KIND_from_name(names[i]) is i for
 * each of the count values, the list has no more, and past them there is no name.
 */
#define assert_names(kind, count, names)                                                           \
	do {                                                                                       \
		ck_assert_int_eq(PROTO_LEN(names), (count));                                       \
		for (int i_ = 0; i_ < (count); i_++) {                                             \
			ck_assert_str_eq(proto_##kind##_name((enum proto_##kind)i_), (names)[i_]); \
			ck_assert_int_eq(proto_##kind##_from_name((names)[i_]), i_);               \
		}                                                                                  \
		ck_assert_ptr_null(proto_##kind##_name((enum proto_##kind)(count)));               \
	} while (0)

START_TEST(name_tables)
{
	static const char *const states[] = { "starting", "ready", "stopping", "exited",
		"restarting", "failed" };
	static const char *const policies[] = { "master_disconnect", "connection_closed",
		"explicit" };
	static const char *const events[] = { "ready", "exited", "crashed", "failed",
		"heartbeat_lost", "spawn_timeout", "init_failed", "stopped", "killed", "restarted",
		"given_up" };
	static const char *const restarts[] = { "no", "on-failure", "always" };

	assert_names(state, PROTO_STATE_COUNT, states);
	assert_names(shutdown_on, PROTO_SHUTDOWN_ON_COUNT, policies);
	ck_assert_int_eq(proto_shutdown_on_from_name("never"), -1);
	ck_assert_int_eq(proto_shutdown_on_from_name(NULL), -1);
	assert_names(event, PROTO_EVENT_COUNT, events);
	ck_assert_int_eq(proto_event_from_name("exploded"), -1);
	assert_names(restart, PROTO_RESTART_COUNT, restarts);
	ck_assert_int_eq(proto_restart_from_name("sometimes"), -1);
}
END_TEST

/* PROTOCOL.md 4.3: every reason, the event it produces, and whether stats counts it. */
START_TEST(reasons)
{
	static const struct {
		const char *name, *event;
		bool failure;
	} rows[] = {
		/* One row per reason (PROTOCOL.md 4.3): data, not repeated logic. */
		{ "exited", "exited", false },
		{ "crashed", "crashed", true },
		{ "failed", "failed", true },
		{ "init_failed", "init_failed", true },
		{ "spawn_failed", "exited", true },
		{ "spawn_timeout", "spawn_timeout", true },
		{ "heartbeat_lost", "heartbeat_lost", true },
		{ "killed_orphan", "stopped", true },
		{ "shutdown", "stopped", false },
		{ "daemon_shutdown", "stopped", false },
		{ "master_closed", "stopped", false },
		{ "killed", "killed", true },
		{ "oom_killed", "crashed", true },
	};
	size_t i;
	int r;

	ck_assert_int_eq(PROTO_REASON_COUNT, 1 + sizeof(rows) / sizeof(rows[0]));
	for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		r = proto_reason_from_name(rows[i].name);
		ck_assert_msg(r > PROTO_REASON_NONE, "%s unknown", rows[i].name);
		ck_assert_str_eq(proto_reason_name((enum proto_reason)r), rows[i].name);
		ck_assert_str_eq(
		    proto_event_name(proto_reason_event((enum proto_reason)r)), rows[i].event);
		ck_assert_int_eq(proto_reason_is_failure((enum proto_reason)r), rows[i].failure);
	}
	/* A live worker has no reason, and no name for it. */
	ck_assert_ptr_null(proto_reason_name(PROTO_REASON_NONE));
	ck_assert_ptr_null(proto_reason_name(PROTO_REASON_COUNT));
	ck_assert_int_eq(proto_reason_from_name("none"), -1);
	ck_assert(!proto_reason_is_failure(PROTO_REASON_NONE));
	ck_assert_uint_eq(PROTO_SHUTDOWN_GRACE_DEFAULT_MS, 5000);
	ck_assert_uint_eq(PROTO_SHUTDOWN_GRACE_MAX_MS, 600000);
}
END_TEST

HT_MAIN("proto-settings",
    HT_CASE("settings", 10, table_rows, bounds, types_and_fields, text_and_field_by_field,
        heartbeat_rule, hello_rules),
    HT_CASE("names", 10, name_tables, reasons))
