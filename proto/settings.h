/* SPDX-License-Identifier: MIT */
/*
 * The six RPC settings (PROTOCOL.md 3.2): one table gives each its name,
 * bounds, default and what 0 means, and one function applies a JSON object
 * to them. herdd (its environment, spawn's settings, hello) and libherd
 * (settings in code, HERD_RPC_SETTINGS, the worker's hello) all use it, so a
 * value one side accepts is never refused by the other.
 */
#ifndef HERD_PROTO_SETTINGS_H
#define HERD_PROTO_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

enum proto_setting {
	PROTO_SET_MAX_MESSAGE_SIZE,
	PROTO_SET_HEARTBEAT_INTERVAL_MS,
	PROTO_SET_HEARTBEAT_TIMEOUT_MS,
	PROTO_SET_HANDSHAKE_TIMEOUT_MS,
	PROTO_SET_SPAWN_TIMEOUT_MS,
	PROTO_SET_CONNECTION_TIMEOUT_MS,
	PROTO_SETTINGS_COUNT,
};

/* One row of the table. */
struct proto_setting_info {
	const char *name; /* the JSON field */
	uint64_t min, max; /* inclusive bounds */
	uint64_t def; /* the built-in default */
	const char *zero; /* what 0 means ("none", "never"), or NULL when 0 is refused */
	bool hello; /* may appear in a hello's settings (PROTOCOL.md 3.4) */
};

/* The row of f, or NULL past the end. */
const struct proto_setting_info *proto_setting_info(enum proto_setting f);
/* The setting called name, or -1. */
int proto_setting_lookup(const char *name);

/* Every setting's value. */
struct proto_settings {
	size_t max_message_size; /* bytes per message, newline excluded */
	unsigned heartbeat_interval_ms;
	unsigned heartbeat_timeout_ms;
	unsigned handshake_timeout_ms;
	unsigned spawn_timeout_ms;
	unsigned connection_timeout_ms;
};

/*
 * Why a settings object was refused: the source as the caller named it
 * ("HERD_RPC_SETTINGS", "spawn settings"), the field (NULL when the object as
 * a whole is wrong) and a sentence naming both.
 */
struct proto_settings_error {
	const char *source; /* borrowed from the caller */
	const char *field; /* static, from the table; NULL if no single field */
	char text[256];
};

/* Fills *s with the table's defaults. */
void proto_settings_defaults(struct proto_settings *s);
/* The value of f in s (0 for an unknown f). */
uint64_t proto_settings_get(const struct proto_settings *s, enum proto_setting f);

/*
 * Sets f to v after checking v against f's bounds. Returns 0 or -EINVAL with
 * *err (may be NULL) filled, s unchanged.
 */
int proto_settings_set(struct proto_settings *s, enum proto_setting f, json_int_t v,
    const char *source, struct proto_settings_error *err);

/*
 * Applies the fields of obj (borrowed; NULL changes nothing) on top of *s,
 * field by field. An object that is not a JSON object, an unknown field, a
 * value that is not an integer or is out of bounds is refused: -EINVAL with
 * *err filled, and *s unchanged. The fields are checked one by one; call
 * proto_settings_check() on the result for the rules between fields.
 */
int proto_settings_apply(struct proto_settings *s, const json_t *obj, const char *source,
    struct proto_settings_error *err);

/* Like proto_settings_apply() for a JSON text (duplicate keys refused). */
int proto_settings_apply_text(struct proto_settings *s, const char *text, const char *source,
    struct proto_settings_error *err);

/*
 * The rule between fields: a heartbeat timeout must be longer than the
 * interval when both are on. Returns 0 or -EINVAL with *err filled.
 */
int proto_settings_check(
    const struct proto_settings *s, const char *source, struct proto_settings_error *err);

/*
 * A hello's settings (PROTOCOL.md 3.4), applied on top of *s (which holds what
 * an absent field means to the server): only max_message_size and the two
 * heartbeat fields may appear, with the table's bounds; a non-zero heartbeat
 * timeout needs a non-zero interval, and proto_settings_check() holds.
 * Returns 0 or -EINVAL with *err filled and *s unchanged.
 */
int proto_settings_apply_hello(
    struct proto_settings *s, const json_t *obj, struct proto_settings_error *err);

/* Every field as a JSON object: a new reference, or NULL on ENOMEM. */
json_t *proto_settings_to_json(const struct proto_settings *s);

#endif
