/* SPDX-License-Identifier: MIT */
/*
 * The small conveniences of the calling side: one call on a connection of its
 * own ("connect, call, close", rpc_parallel's Connection.with_close), and a
 * connection's counters.
 */
#include <errno.h>

#include "client/client-internal.h"

int
herd__call_once(int r, herd_conn *conn, const char *function, json_t *args, uint64_t timeout_usec,
    json_t **ret_result, herd_error **ret_error)
{
	if (ret_result)
		*ret_result = NULL;
	if (r < 0)
		return r;
	r = herd_call(conn, function, args, timeout_usec, ret_result);
	if (r < 0 && ret_error)
		*ret_error = herd_error_ref(herd_conn_last_error(conn));
	herd_conn_unref(conn);
	return r;
}

HERD_EXPORT int
herd_call_once(const char *socket_path, const char *function, json_t *args, uint64_t timeout_usec,
    json_t **ret_result, herd_error **ret_error)
{
	herd_conn *conn = NULL;
	int r = herd_conn_connect(socket_path, NULL, NULL, &conn, ret_error);

	return herd__call_once(r, conn, function, args, timeout_usec, ret_result, ret_error);
}

HERD_EXPORT int
herd_conn_get_stats(herd_conn *conn, struct herd_conn_stats *ret)
{
	struct herd__peer *p;

	if (!conn || !ret)
		return -EINVAL;
	p = &conn->peer;
	/* Another thread's keepalive may be writing: the output side is under the lock. */
	pthread_mutex_lock(&p->lock);
	*ret = (struct herd_conn_stats){
		.bytes_in = p->bytes_in,
		.bytes_out = p->bytes_out,
		.messages_in = p->msgs_in,
		.messages_out = p->msgs_out,
		.last_received_age_usec = herd__now_usec() - p->last_recv,
	};
	pthread_mutex_unlock(&p->lock);
	return 0;
}
