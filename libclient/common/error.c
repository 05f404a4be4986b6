/* SPDX-License-Identifier: MIT */
/*
 * herd_error: an immutable, reference-counted description of a failure, either
 * received in a JSON-RPC error reply or made up locally (timeout, closed
 * connection). Its data object always carries the stable "name" so callers can
 * match on a word rather than a number.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "common/internal.h"
#include "proto.h"

HERD_EXPORT const char *
herd_version(void)
{
	return HERD_VERSION;
}

/* The name for code: its stable name, or a generic one for codes we do not know. */
static const char *
code_name(int code)
{
	const char *name = proto_error_name(code);

	return name ? name : "unknown_error";
}

/* A new error; data is copied so "name" can be filled in without touching the caller's. */
herd_error *
herd__error_new(int code, const char *message, const json_t *data)
{
	herd_error *err;
	json_t *name;

	err = calloc(1, sizeof(*err));
	if (!err)
		return NULL;
	err->n_ref = 1;
	err->code = code;

	err->data = json_is_object(data) ? json_deep_copy(data) : json_object();
	if (!err->data)
		goto fail;
	/* The peer's name wins if it sent one; otherwise it comes from our table. */
	name = json_object_get(err->data, "name");
	if (!json_is_string(name)) {
		if (json_object_set_new(err->data, "name", json_string(code_name(code))) < 0)
			goto fail;
		name = json_object_get(err->data, "name");
	}
	err->name = strdup(json_string_value(name));
	err->message = strdup(message ? message : err->name ? err->name : "");
	if (!err->name || !err->message)
		goto fail;
	return err;

fail:
	herd_error_unref(err);
	return NULL;
}

/* A new error with a vprintf-style message; without memory for the text, the code's name. */
herd_error *
herd__error_newv(int code, const char *fmt, va_list ap)
{
	_cleanup_free_ char *text = NULL;

	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	return herd__error_new(code, text, NULL);
}

/* A new error with a printf-style message. */
herd_error *
herd__error_newf(int code, const char *fmt, ...)
{
	herd_error *err;
	va_list ap;

	va_start(ap, fmt);
	err = herd__error_newv(code, fmt, ap);
	va_end(ap);
	return err;
}

/*
 * The errno a call returns for a peer's error code. Every error that is the
 * remote side's verdict on the request is -EREMOTEIO; only a few codes have a
 * more telling local meaning.
 */
int
herd__error_to_errno(int code)
{
	switch (code) {
	case HERD_E_TIMEOUT:
		return -ETIMEDOUT;
	case HERD_E_CANCELLED:
		return -ECANCELED;
	case HERD_E_CONNECTION_CLOSED:
		return -ECONNRESET;
	default:
		return -EREMOTEIO;
	}
}

int
herd__reply_outcome(const struct proto_msg *m, herd_error **ret_err)
{
	if (m->kind == PROTO_RESULT) {
		*ret_err = NULL;
		return 0;
	}
	*ret_err = herd__error_new(m->error_code, m->error_message, m->error_data);
	return herd__error_to_errno(m->error_code);
}

/* Replaces the error in *slot, taking a new reference on err. */
void
herd__error_set(herd_error **slot, herd_error *err)
{
	herd_error_ref(err);
	herd_error_unref(*slot);
	*slot = err;
}

static void
error_free(herd_error *err)
{
	free(err->name);
	free(err->message);
	json_decref(err->data);
	free(err);
}

HERD__DEFINE_REF_UNREF(herd_error, herd_error, error_free)

HERD__DEFINE_GETTER(herd_error_code, const herd_error, int, p->code, 0)
HERD__DEFINE_GETTER(herd_error_name, const herd_error, const char *, p->name, NULL)
HERD__DEFINE_GETTER(herd_error_message, const herd_error, const char *, p->message, NULL)
HERD__DEFINE_GETTER(herd_error_data, const herd_error, json_t *, p->data, NULL)
