/* SPDX-License-Identifier: MIT */
/*
 * RPC settings: defaults < settings given in code < HERD_RPC_SETTINGS, field
 * by field, as rpc_parallel does. A typo in a field name is an error rather
 * than silently ignored, since a misspelt timeout would otherwise look like a
 * working configuration.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/internal.h"

#define SETTINGS_ENV "HERD_RPC_SETTINGS"

enum field_type {
	FIELD_SIZE,
	FIELD_MS,
};

static const struct {
	const char *name;
	enum field_type type;
	size_t offset;
	bool zero_ok; /* 0 means "off" */
} fields[] = {
	{ "max_message_size", FIELD_SIZE, offsetof(struct herd__settings, max_message_size),
	    false },
	{ "heartbeat_interval_ms", FIELD_MS, offsetof(struct herd__settings, heartbeat_interval_ms),
	    true },
	{ "heartbeat_timeout_ms", FIELD_MS, offsetof(struct herd__settings, heartbeat_timeout_ms),
	    true },
	{ "handshake_timeout_ms", FIELD_MS, offsetof(struct herd__settings, handshake_timeout_ms),
	    false },
	{ "spawn_timeout_ms", FIELD_MS, offsetof(struct herd__settings, spawn_timeout_ms), false },
	{ "connection_timeout_ms", FIELD_MS, offsetof(struct herd__settings, connection_timeout_ms),
	    false },
};

#define N_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* A day: longer timeouts are almost certainly unit mistakes (seconds vs ms). */
#define MAX_MS (24u * 3600u * 1000u)

/* Fills *ret with the built-in defaults. */
void
herd__settings_defaults(struct herd__settings *ret)
{
	*ret = (struct herd__settings){
		.max_message_size = HERD_DEFAULT_MAX_MESSAGE_SIZE,
		.heartbeat_interval_ms = HERD_DEFAULT_HEARTBEAT_INTERVAL_MS,
		.heartbeat_timeout_ms = HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS,
		.handshake_timeout_ms = HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS,
		.spawn_timeout_ms = HERD_DEFAULT_SPAWN_TIMEOUT_MS,
		.connection_timeout_ms = HERD_DEFAULT_CONNECTION_TIMEOUT_MS,
	};
}

static int fail(char **reterr_text, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int
fail(char **reterr_text, const char *fmt, ...)
{
	va_list ap;

	if (reterr_text) {
		va_start(ap, fmt);
		if (vasprintf(reterr_text, fmt, ap) < 0)
			*reterr_text = NULL;
		va_end(ap);
	}
	return -EINVAL;
}

/* Applies the fields of obj on top of *s; on error *s is left unchanged. */
int
herd__settings_apply(
    struct herd__settings *s, const json_t *obj, const char *source, char **reterr_text)
{
	struct herd__settings next;
	const char *key;
	json_t *value;

	if (!s || !source)
		return -EINVAL;
	if (!obj)
		return 0;
	if (!json_is_object(obj))
		return fail(reterr_text, "%s must be a JSON object", source);

	next = *s;
	json_object_foreach((json_t *)obj, key, value) {
		json_int_t v;
		size_t i;

		for (i = 0; i < N_FIELDS; i++)
			if (strcmp(fields[i].name, key) == 0)
				break;
		if (i == N_FIELDS)
			return fail(reterr_text,
			    "%s: unknown field \"%s\" (known: max_message_size, "
			    "heartbeat_interval_ms, heartbeat_timeout_ms, handshake_timeout_ms, "
			    "spawn_timeout_ms, connection_timeout_ms)",
			    source, key);
		if (!json_is_integer(value))
			return fail(
			    reterr_text, "%s: field \"%s\" must be an integer", source, key);
		v = json_integer_value(value);
		if (v < 0 || (v == 0 && !fields[i].zero_ok))
			return fail(reterr_text, "%s: field \"%s\" must be %s, not %lld", source,
			    key, fields[i].zero_ok ? "0 or positive" : "positive", (long long)v);

		if (fields[i].type == FIELD_SIZE) {
			if (v < HERD__MIN_MESSAGE_SIZE || v > HERD__MAX_MESSAGE_SIZE)
				return fail(reterr_text,
				    "%s: field \"%s\" must be between %u and %u bytes, not %lld",
				    source, key, HERD__MIN_MESSAGE_SIZE, HERD__MAX_MESSAGE_SIZE,
				    (long long)v);
			*(size_t *)((char *)&next + fields[i].offset) = (size_t)v;
		} else {
			if (v > MAX_MS)
				return fail(reterr_text,
				    "%s: field \"%s\" must be at most %u ms, not %lld", source, key,
				    MAX_MS, (long long)v);
			*(unsigned *)((char *)&next + fields[i].offset) = (unsigned)v;
		}
	}

	*s = next;
	return 0;
}

/* Resolves defaults < in_code < $HERD_RPC_SETTINGS. */
int
herd__settings_resolve(const json_t *in_code, struct herd__settings *ret, char **reterr_text)
{
	struct herd__settings s;
	const char *env;
	int r;

	if (reterr_text)
		*reterr_text = NULL;
	if (!ret)
		return -EINVAL;

	herd__settings_defaults(&s);
	r = herd__settings_apply(&s, in_code, "settings", reterr_text);
	if (r < 0)
		return r;

	env = secure_getenv(SETTINGS_ENV);
	if (env && *env) {
		_cleanup_json_ json_t *obj = NULL;
		json_error_t jerr;

		obj = json_loads(env, JSON_REJECT_DUPLICATES, &jerr);
		if (!obj)
			return fail(reterr_text, SETTINGS_ENV " is not valid JSON: %s (column %d)",
			    jerr.text, jerr.column);
		r = herd__settings_apply(&s, obj, SETTINGS_ENV, reterr_text);
		if (r < 0)
			return r;
	}

	if (s.heartbeat_interval_ms > 0 && s.heartbeat_timeout_ms > 0 &&
	    s.heartbeat_timeout_ms <= s.heartbeat_interval_ms)
		return fail(reterr_text,
		    "heartbeat_timeout_ms (%u) must be longer than heartbeat_interval_ms (%u)",
		    s.heartbeat_timeout_ms, s.heartbeat_interval_ms);

	*ret = s;
	return 0;
}

/* Every field as a JSON object. */
json_t *
herd__settings_to_json(const struct herd__settings *s)
{
	if (!s)
		return NULL;
	return json_pack("{s:I, s:I, s:I, s:I, s:I, s:I}", "max_message_size",
	    (json_int_t)s->max_message_size, "heartbeat_interval_ms",
	    (json_int_t)s->heartbeat_interval_ms, "heartbeat_timeout_ms",
	    (json_int_t)s->heartbeat_timeout_ms, "handshake_timeout_ms",
	    (json_int_t)s->handshake_timeout_ms, "spawn_timeout_ms",
	    (json_int_t)s->spawn_timeout_ms, "connection_timeout_ms",
	    (json_int_t)s->connection_timeout_ms);
}
