/* SPDX-License-Identifier: MIT */
/*
 * Bytes (PROTOCOL.md 1.1): in memory a one-member object {"$bytes": S} whose
 * string S holds the raw bytes (any bytes, NUL included: made with
 * json_stringn_nocheck and never encoded as a string); on the wire the same
 * object with S in base64, or a reference to a sealed memfd sent with the
 * line. The encoder and the decoder call these; nothing here does I/O.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proto.h"
#include "ship.h"

/* A new bytes value holding a copy of data[0..len); NULL on ENOMEM. */
json_t *
proto_bytes_new(const void *data, size_t len)
{
	json_t *obj = json_object();
	json_t *s = json_stringn_nocheck(len ? data : "", len);

	if (!obj || !s || json_object_set_new_nocheck(obj, PROTO_BYTES_KEY, s) < 0) {
		json_decref(obj);
		return NULL;
	}
	return obj;
}

/* True, with the bytes (borrowed from v), when v is a bytes value. */
bool
proto_bytes_get(const json_t *v, const char **ret_data, size_t *ret_len)
{
	void *it;
	json_t *s;

	/* The first member's key, not a lookup: every one-member object is asked. */
	if (!json_is_object(v) || json_object_size(v) != 1)
		return false;
	it = json_object_iter((json_t *)v);
	if (json_object_iter_key_len(it) != sizeof(PROTO_BYTES_KEY) - 1 ||
	    memcmp(json_object_iter_key(it), PROTO_BYTES_KEY, sizeof(PROTO_BYTES_KEY) - 1) != 0)
		return false;
	s = json_object_iter_value(it);
	if (!json_is_string(s))
		return false;
	*ret_data = json_string_value(s);
	*ret_len = json_string_length(s);
	return true;
}

/* True when the array features names name. */
bool
proto_features_has(const json_t *features, const char *name)
{
	for (size_t i = 0; i < json_array_size(features); i++) {
		const char *f = json_string_value(json_array_get(features, i));

		if (f && strcmp(f, name) == 0)
			return true;
	}
	return false;
}

/* Closes the descriptors the encoder made. */
void
proto_bytes_out_close(struct proto_bytes_out *out)
{
	for (unsigned i = 0; i < out->n; i++)
		close(out->fd[i]);
	out->n = 0;
	out->total = 0;
}

/* Writes data[0..len) as a quoted base64 string (RFC 4648, padded). */
int
proto_base64_write(struct proto_wbuf *w, const void *data, size_t len)
{
	size_t out;
	int rc;

	if (len > SIZE_MAX / 2)
		return -EMSGSIZE;
	out = PROTO_BASE64_SIZE(len); /* its NUL's place takes the closing quote */
	rc = w->end - w->p >= (ptrdiff_t)(out + 1) ? 0 : w->grow(w, out + 1);
	if (rc < 0)
		return rc;
	*w->p++ = '"';
	w->p += proto_base64_encode(data, len, w->p);
	*w->p++ = '"';
	return 0;
}

/* A new bytes value of base64 s[0..n); see proto.h. */
int
proto_bytes_from_base64(const char *s, size_t n, json_t **ret)
{
	char *buf = malloc(n / 4 * 3 + 1);
	ssize_t len;

	*ret = NULL;
	if (!buf)
		return -ENOMEM;
	len = proto_base64_decode(s, n, buf);
	if (len >= 0) {
		*ret = proto_bytes_new(buf, (size_t)len);
		len = *ret ? 0 : -ENOMEM;
	} else {
		len = -EILSEQ;
	}
	free(buf);
	return (int)len;
}
