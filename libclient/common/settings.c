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

/* Fills *ret with the built-in defaults. */
void
herd__settings_defaults(struct herd__settings *ret)
{
	proto_settings_defaults(ret);
}

/* Copies proto's sentence out for the caller; -ENOMEM if that fails. */
static int
fail(char **reterr_text, const struct proto_settings_error *err)
{
	if (reterr_text) {
		*reterr_text = strdup(err->text);
		if (!*reterr_text)
			return -ENOMEM;
	}
	return -EINVAL;
}

/* Applies the fields of obj on top of *s; on error *s is left unchanged. */
int
herd__settings_apply(
    struct herd__settings *s, const json_t *obj, const char *source, char **reterr_text)
{
	struct proto_settings_error err;

	if (!s || !source)
		return -EINVAL;
	if (proto_settings_apply(s, obj, source, &err) < 0)
		return fail(reterr_text, &err);
	return 0;
}

/* Resolves defaults < in_code < $HERD_RPC_SETTINGS. */
int
herd__settings_resolve(const json_t *in_code, struct herd__settings *ret, char **reterr_text)
{
	struct proto_settings_error err;
	struct herd__settings s;
	const char *env;

	if (reterr_text)
		*reterr_text = NULL;
	if (!ret)
		return -EINVAL;

	proto_settings_defaults(&s);
	if (proto_settings_apply(&s, in_code, "settings", &err) < 0)
		return fail(reterr_text, &err);
	env = secure_getenv(SETTINGS_ENV);
	if (env && *env && proto_settings_apply_text(&s, env, SETTINGS_ENV, &err) < 0)
		return fail(reterr_text, &err);
	if (proto_settings_check(&s, env && *env ? SETTINGS_ENV : "settings", &err) < 0)
		return fail(reterr_text, &err);
	*ret = s;
	return 0;
}

/* Every field as a JSON object. */
json_t *
herd__settings_to_json(const struct herd__settings *s)
{
	return s ? proto_settings_to_json(s) : NULL;
}
