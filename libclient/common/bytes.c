/* SPDX-License-Identifier: MIT */
/* herd_bytes: binary payloads as JSON values (herd/common.h, PROTOCOL.md 1.1). */
#include <errno.h>

#include "common/internal.h"
#include "proto.h"

HERD_EXPORT json_t *
herd_bytes_new(const void *data, size_t len)
{
	if (!data && len > 0)
		return NULL;
	return proto_bytes_new(data, len);
}

HERD_EXPORT int
herd_bytes_get(const json_t *v, const void **ret_data, size_t *ret_len)
{
	const char *data;
	size_t len;

	if (!ret_data || !ret_len || !proto_bytes_get(v, &data, &len))
		return -EINVAL;
	*ret_data = data;
	*ret_len = len;
	return 0;
}
