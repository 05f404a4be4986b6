/* SPDX-License-Identifier: MIT */
/*
 * The RPC settings table (PROTOCOL.md 3.2) and the one function that applies
 * a JSON object to it. Like redis's configs[], each row says everything about
 * a setting, so a new setting is one row, not five validators.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "herd/protocol.h"
#include "proto.h"

/* A day: a longer heartbeat is almost certainly a unit mistake (seconds vs ms). */
#define HEARTBEAT_MAX_MS (24ull * 3600ull * 1000ull)
#define TIMEOUT_MAX_MS   4294967295ull
#define MESSAGE_MAX      (1024ull * 1024ull * 1024ull)

/* One row: the field's name is also its JSON name; is_size tells size_t from unsigned. */
#define ROW(f, field, lo, hi, zero_, hello_, dflt)                                                 \
	[PROTO_SET_##f] = { { #field, lo, hi, dflt, zero_, hello_ },                               \
		offsetof(struct proto_settings, field),                                            \
		sizeof(((struct proto_settings *)0)->field) == sizeof(size_t) }

static const struct {
	struct proto_setting_info info;
	size_t offset;
	bool is_size;
} table[PROTO_SETTINGS_COUNT] = {
	/* clang-format off */
	/*  PROTO_SET_*            field                  min   max               0 means  hello */
	ROW(MAX_MESSAGE_SIZE,      max_message_size,      1024, MESSAGE_MAX,      NULL,    true,
	    HERD_DEFAULT_MAX_MESSAGE_SIZE),
	ROW(HEARTBEAT_INTERVAL_MS, heartbeat_interval_ms, 0,    HEARTBEAT_MAX_MS, "none",  true,
	    HERD_DEFAULT_HEARTBEAT_INTERVAL_MS),
	ROW(HEARTBEAT_TIMEOUT_MS,  heartbeat_timeout_ms,  0,    HEARTBEAT_MAX_MS, "never", true,
	    HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS),
	/* 0 would expire at once, failing every handshake, spawn or connection: refused. */
	ROW(HANDSHAKE_TIMEOUT_MS,  handshake_timeout_ms,  1,    TIMEOUT_MAX_MS,   NULL,    false,
	    HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS),
	ROW(SPAWN_TIMEOUT_MS,      spawn_timeout_ms,      1,    TIMEOUT_MAX_MS,   NULL,    false,
	    HERD_DEFAULT_SPAWN_TIMEOUT_MS),
	ROW(CONNECTION_TIMEOUT_MS, connection_timeout_ms, 1,    TIMEOUT_MAX_MS,   NULL,    false,
	    HERD_DEFAULT_CONNECTION_TIMEOUT_MS),
	/* clang-format on */
};

/* The row of f, or NULL past the end. */
const struct proto_setting_info *
proto_setting_info(enum proto_setting f)
{
	return (unsigned)f < PROTO_SETTINGS_COUNT ? &table[f].info : NULL;
}

/* The setting called name, or -1. */
int
proto_setting_lookup(const char *name)
{
	for (int i = 0; name && i < PROTO_SETTINGS_COUNT; i++)
		if (strcmp(table[i].info.name, name) == 0)
			return i;
	return -1;
}

static int fail(struct proto_settings_error *err, const char *source, const char *field,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Fills *err with "SOURCE: TEXT" and returns -EINVAL. */
static int
fail(struct proto_settings_error *err, const char *source, const char *field, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (err) {
		err->source = source;
		err->field = field;
		n = snprintf(err->text, sizeof(err->text), "%s: ", source);
		va_start(ap, fmt);
		proto_text_vformat(err->text + n, sizeof(err->text) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

static void
store(struct proto_settings *s, enum proto_setting f, uint64_t v)
{
	char *p = (char *)s + table[f].offset;

	if (table[f].is_size)
		*(size_t *)p = (size_t)v;
	else
		*(unsigned *)p = (unsigned)v;
}

/* Fills *s with the table's defaults. */
void
proto_settings_defaults(struct proto_settings *s)
{
	for (int i = 0; i < PROTO_SETTINGS_COUNT; i++)
		store(s, (enum proto_setting)i, table[i].info.def);
}

/* The value of f in s. */
uint64_t
proto_settings_get(const struct proto_settings *s, enum proto_setting f)
{
	const char *p;

	if ((unsigned)f >= PROTO_SETTINGS_COUNT)
		return 0;
	p = (const char *)s + table[f].offset;
	return table[f].is_size ? *(const size_t *)p : *(const unsigned *)p;
}

/* Sets f to v within its bounds. */
int
proto_settings_set(struct proto_settings *s, enum proto_setting f, json_int_t v, const char *source,
    struct proto_settings_error *err)
{
	const struct proto_setting_info *in = proto_setting_info(f);

	if (!in)
		return -EINVAL;
	if (v < 0 || (uint64_t)v < in->min) {
		if (in->min == 1)
			return fail(err, source, in->name,
			    "field \"%s\" must be positive (at most %llu), not %lld", in->name,
			    (unsigned long long)in->max, (long long)v);
		return fail(err, source, in->name,
		    "field \"%s\" must be between %llu and %llu, not %lld", in->name,
		    (unsigned long long)in->min, (unsigned long long)in->max, (long long)v);
	}
	if ((uint64_t)v > in->max)
		return fail(err, source, in->name, "field \"%s\" must be at most %llu, not %lld",
		    in->name, (unsigned long long)in->max, (long long)v);
	store(s, f, (uint64_t)v);
	return 0;
}

/* Applies obj's fields to s; hello_only refuses the fields a hello may not carry. */
static int
apply(struct proto_settings *s, const json_t *obj, bool hello_only, const char *source,
    struct proto_settings_error *err)
{
	struct proto_settings next;
	const char *key;
	json_t *value;
	int f, r;

	if (!obj)
		return 0;
	if (!json_is_object(obj))
		return fail(err, source, NULL, "settings must be a JSON object");
	next = *s;
	json_object_foreach((json_t *)obj, key, value) {
		f = proto_setting_lookup(key);
		if (f < 0)
			return fail(err, source, NULL,
			    "unknown field \"%.*s\" (known: max_message_size, "
			    "heartbeat_interval_ms, heartbeat_timeout_ms, handshake_timeout_ms, "
			    "spawn_timeout_ms, connection_timeout_ms)",
			    proto_text_prec(key, 64), key);
		if (hello_only && !table[f].info.hello)
			return fail(err, source, table[f].info.name,
			    "field \"%s\" cannot be negotiated in hello (only max_message_size, "
			    "heartbeat_interval_ms, heartbeat_timeout_ms)",
			    key);
		if (!json_is_integer(value))
			return fail(err, source, table[f].info.name,
			    "field \"%s\" must be an integer", key);
		r = proto_settings_set(
		    &next, (enum proto_setting)f, json_integer_value(value), source, err);
		if (r < 0)
			return r;
	}
	*s = next;
	return 0;
}

/* Applies obj's fields to s: see the header. */
int
proto_settings_apply(struct proto_settings *s, const json_t *obj, const char *source,
    struct proto_settings_error *err)
{
	return apply(s, obj, false, source, err);
}

/* Parses text (duplicates refused) and applies it. */
int
proto_settings_apply_text(struct proto_settings *s, const char *text, const char *source,
    struct proto_settings_error *err)
{
	json_error_t jerr;
	json_t *obj;
	int r;

	obj = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
	if (!obj)
		return fail(
		    err, source, NULL, "not valid JSON: %s (column %d)", jerr.text, jerr.column);
	r = apply(s, obj, false, source, err);
	json_decref(obj);
	return r;
}

/* The heartbeat timeout outlasts the interval. */
int
proto_settings_check(
    const struct proto_settings *s, const char *source, struct proto_settings_error *err)
{
	if (s->heartbeat_interval_ms > 0 && s->heartbeat_timeout_ms > 0 &&
	    s->heartbeat_timeout_ms <= s->heartbeat_interval_ms)
		return fail(err, source, table[PROTO_SET_HEARTBEAT_TIMEOUT_MS].info.name,
		    "heartbeat_timeout_ms (%u) must be longer than heartbeat_interval_ms (%u)",
		    s->heartbeat_timeout_ms, s->heartbeat_interval_ms);
	return 0;
}

/* A hello's settings: see the header. */
int
proto_settings_apply_hello(
    struct proto_settings *s, const json_t *obj, struct proto_settings_error *err)
{
	static const char source[] = "hello settings";
	struct proto_settings next = *s;
	int r;

	r = apply(&next, obj, true, source, err);
	if (r < 0)
		return r;
	/* The peer would never hear anything it could count as alive. */
	if (next.heartbeat_timeout_ms > 0 && next.heartbeat_interval_ms == 0)
		return fail(err, source, table[PROTO_SET_HEARTBEAT_TIMEOUT_MS].info.name,
		    "a heartbeat_timeout_ms needs a heartbeat_interval_ms");
	r = proto_settings_check(&next, source, err);
	if (r < 0)
		return r;
	*s = next;
	return 0;
}

/* Every field, in the table's order. */
json_t *
proto_settings_to_json(const struct proto_settings *s)
{
	json_t *o = json_object();

	for (int i = 0; o && i < PROTO_SETTINGS_COUNT; i++) {
		if (json_object_set_new(o, table[i].info.name,
		        json_integer((json_int_t)proto_settings_get(s, (enum proto_setting)i))) <
		    0) {
			json_decref(o);
			return NULL;
		}
	}
	return o;
}
