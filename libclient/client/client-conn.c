/* SPDX-License-Identifier: MIT */
/*
 * Connections: connect and hello, reference counting, and closing. Closing is
 * the one place where pending operations fail en masse, so every path that
 * loses the socket (peer EOF, I/O error, framing error, heartbeat silence,
 * explicit close, last unref) goes through herd__conn_close().
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/client-internal.h"

static void
set_error(herd_error **ret_error, herd_error *err)
{
	if (ret_error)
		*ret_error = herd_error_ref(err);
}

static int fail_local(herd_error **ret_error, int r, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Returns r, handing out a new error describing it if the caller wants one. */
static int
fail_local(herd_error **ret_error, int r, int code, const char *fmt, ...)
{
	_cleanup_free_ char *text = NULL;
	va_list ap;

	if (!ret_error)
		return r;
	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		text = NULL;
	va_end(ap);
	*ret_error = herd__error_new(code, text, NULL);
	return r;
}

/*
 * Connects with a blocking connect bounded by SO_SNDTIMEO (a Unix socket
 * connect only blocks while the listener's backlog is full), then switches the
 * socket to non-blocking for the engine.
 */
static int
socket_connect(const char *path, unsigned timeout_ms)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = {
		.tv_sec = timeout_ms / 1000,
		.tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000,
	};
	int fd, r;

	/* The caller checked that path fits, terminator included. */
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
		goto fail;
	do
		r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		if (errno == EAGAIN || errno == EINPROGRESS)
			errno = ETIMEDOUT;
		goto fail;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		goto fail;
	return fd;
fail:
	r = -errno;
	close(fd);
	return r;
}

/*
 * A connected fd to a socket path, or through a link to an address on
 * another host (then *ret_sink is its way onto the link, else NULL).
 */
static int
conn_connect(const char *address, const struct herd__settings *s, struct herd__link_sink **ret_sink,
    herd_error **ret_error)
{
	_cleanup_free_ char *why = NULL;
	int fd, r;

	*ret_sink = NULL;
	if (!herd__link_address(address)) {
		fd = socket_connect(address, s->connection_timeout_ms);
		if (fd < 0)
			return fail_local(ret_error, fd, HERD_E_CONNECTION_CLOSED,
			    "cannot connect to %s: %s", address, strerror(-fd));
		return fd;
	}
	r = herd__link_connect(address, s, s->connection_timeout_ms, &fd, ret_sink, &why);
	if (r < 0)
		return fail_local(ret_error, r, HERD_E_CONNECTION_CLOSED,
		    "cannot connect to %s: %s", address, why ? why : strerror(-r));
	return fd;
}

/* Takes the effective settings the server answered with; heartbeats only if it agreed. */
static void
conn_apply_effective(herd_conn *conn, json_t *result)
{
	json_t *s = json_object_get(result, "settings");
	json_t *v;

	v = json_object_get(s, "heartbeat_interval_ms");
	conn->settings.heartbeat_interval_ms =
	    json_is_integer(v) && json_integer_value(v) > 0 ? (unsigned)json_integer_value(v) : 0;
	v = json_object_get(s, "heartbeat_timeout_ms");
	conn->settings.heartbeat_timeout_ms =
	    json_is_integer(v) && json_integer_value(v) > 0 ? (unsigned)json_integer_value(v) : 0;
	/* The peer announces what it accepts; what we accept stays our own setting. */
	v = json_object_get(s, "max_message_size");
	if (json_is_integer(v) && json_integer_value(v) > 0 &&
	    (uint64_t)json_integer_value(v) < conn->peer.max_send)
		conn->peer.max_send = (size_t)json_integer_value(v);
}

/* The hello params: version, role, our settings, then the caller's extra members. */
static json_t *
hello_params(herd_conn *conn, const char *role, json_t *extra)
{
	unsigned interval = conn->settings.heartbeat_interval_ms;
	unsigned timeout = interval ? conn->settings.heartbeat_timeout_ms : 0;
	json_t *p;

	/* Without heartbeats a silence timeout would close every idle connection (and herdd
	 * refuses one): no interval means no timeout either. */
	p = json_pack("{s:i, s:s, s:{s:I, s:I, s:I}}", "version", HERD_PROTOCOL_VERSION, "role",
	    role, "settings", "heartbeat_interval_ms", (json_int_t)interval, "heartbeat_timeout_ms",
	    (json_int_t)timeout, "max_message_size", (json_int_t)conn->settings.max_message_size);
	if (p && extra && json_object_update(p, extra) < 0)
		p = (json_decref(p), NULL);
	return p;
}

/* Checks the arguments of an open and resolves its settings. */
static int
open_check(const char *socket_path, json_t *settings, bool heartbeats, herd_conn **ret,
    struct herd__settings *s, herd_error **ret_error)
{
	_cleanup_free_ char *settings_err = NULL;
	int r;

	if (!socket_path || !*socket_path || !ret)
		return fail_local(ret_error, -EINVAL, HERD_E_INVALID_PARAMS,
		    "a socket path and a place for the connection are required");
	if (!herd__link_address(socket_path) &&
	    strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return fail_local(ret_error, -EINVAL, HERD_E_INVALID_PARAMS,
		    "socket path too long: %s", socket_path);
	if (settings && !json_is_object(settings))
		return fail_local(
		    ret_error, -EINVAL, HERD_E_INVALID_PARAMS, "settings must be a JSON object");
	r = herd__settings_resolve(settings, s, &settings_err);
	if (r < 0)
		return fail_local(ret_error, r, HERD_E_INVALID_PARAMS, "%s",
		    settings_err ? settings_err : strerror(-r));
	if (!heartbeats)
		s->heartbeat_interval_ms = s->heartbeat_timeout_ms = 0;
	return 0;
}

/* A connection over fd (taken over), before any hello. NULL on ENOMEM (fd closed). */
herd_conn *
herd__conn_new(int fd, const struct herd__settings *s)
{
	herd_conn *conn = calloc(1, sizeof(*conn));

	if (!conn) {
		close(fd);
		return NULL;
	}
	herd__peer_init(&conn->peer, fd, &herd__conn_peer_ops, conn, s->max_message_size,
	    HERD_DEFAULT_MAX_OUTPUT);
	herd__peer_read_bytes(&conn->peer);
	conn->state = CONN_HANDSHAKE;
	conn->settings = *s;
	conn->call_timeout_usec = HERD_DEFAULT_CALL_TIMEOUT_USEC;
	return conn;
}

/* Says hello with role and the extra params, and checks the answer. */
static int
conn_hello(herd_conn *conn, const char *role, json_t *hello_extra, json_t **ret_result,
    herd_error **ret_err)
{
	_cleanup_json_ json_t *params = hello_params(conn, role, hello_extra);
	json_t *version;
	int r;

	if (!params) {
		*ret_err = herd__error_new(HERD_E_INTERNAL_ERROR, "out of memory", NULL);
		return -ENOMEM;
	}
	/* connect() was bounded by connection_timeout_ms; the answer to hello is bounded by
	 * handshake_timeout_ms, the limit PROTOCOL.md 3.2 gives both ends of a handshake. */
	r = herd__call_sync(conn, "hello", params,
	    conn->settings.handshake_timeout_ms * HERD__USEC_PER_MSEC, ret_result, ret_err);
	if (r == -EMSGSIZE) {
		herd_error_unref(*ret_err);
		*ret_err = herd__error_new(HERD_E_MESSAGE_TOO_LARGE,
		    "the hello (init argument) is larger than max_message_size", NULL);
	}
	if (r < 0)
		return r;
	version = json_object_get(*ret_result, "version");
	if (!json_is_integer(version) || json_integer_value(version) != HERD_PROTOCOL_VERSION) {
		*ret_err = herd__error_newf(HERD_E_VERSION_MISMATCH,
		    "the server speaks protocol version %lld, not %d",
		    (long long)json_integer_value(version), HERD_PROTOCOL_VERSION);
		return -EPROTO;
	}
	return 0;
}

/*
 * Bytes out of band when the server offers it and descriptors can reach it:
 * over a link (another host) they cannot, so such a connection stays inline.
 */
static void
conn_features(herd_conn *conn, const char *address, json_t *result)
{
	if (herd__link_address(address) ||
	    !proto_features_has(json_object_get(result, "features"), PROTO_FEATURE_BYTES_FD))
		return;
	if (herd__peer_notify(&conn->peer, "herd.features",
	        json_pack("{s:[s]}", "features", PROTO_FEATURE_BYTES_FD)) == 0)
		conn->peer.fds_out = true;
}

/* The hello was answered: the session is open, with the settings the server agreed to. */
static void
conn_opened(herd_conn *conn, const char *address, json_t *result)
{
	conn->server_info = json_incref(result);
	conn_apply_effective(conn, result);
	conn_features(conn, address, result);
	conn->state = CONN_OPEN;
	if (herd__conn_heartbeats_on(conn))
		herd__peer_set_heartbeat(&conn->peer, conn->settings.heartbeat_interval_ms,
		    conn->settings.heartbeat_timeout_ms);
	/* From now on a wait on another connection sends this one's heartbeats too. */
	herd__keepalive_add(conn);
}

/* Connects, says hello and returns an open connection. */
int
herd__conn_open(const char *socket_path, const char *role, json_t *hello_extra, json_t *settings,
    bool heartbeats, herd_conn **ret, herd_error **ret_error)
{
	_cleanup_json_ json_t *result = NULL;
	struct herd__settings s;
	herd_error *err = NULL;
	struct herd__link_sink *sink;
	herd_conn *conn;
	int fd, r;

	if (ret_error)
		*ret_error = NULL;
	r = open_check(socket_path, settings, heartbeats, ret, &s, ret_error);
	if (r < 0)
		return r;
	fd = conn_connect(socket_path, &s, &sink, ret_error);
	if (fd < 0)
		return fd;
	conn = herd__conn_new(fd, &s);
	if (!conn) {
		if (sink)
			herd__link_sink_ops.release(sink);
		return fail_local(ret_error, -ENOMEM, HERD_E_INTERNAL_ERROR, "out of memory");
	}
	if (sink)
		herd__peer_set_sink(&conn->peer, &herd__link_sink_ops, sink);
	r = conn_hello(conn, role, hello_extra, &result, &err);
	if (r < 0) {
		set_error(ret_error, err);
		herd_error_unref(err);
		herd_conn_unref(conn);
		return r;
	}
	conn_opened(conn, socket_path, result);
	*ret = conn;
	return 0;
}

HERD_EXPORT int
herd_conn_connect(const char *socket_path, json_t *init, json_t *settings, herd_conn **ret,
    herd_error **ret_error)
{
	_cleanup_json_ json_t *extra = NULL;

	if (ret_error)
		*ret_error = NULL;
	if (init) {
		extra = json_pack("{s:O}", "init", init);
		if (!extra)
			return fail_local(
			    ret_error, -ENOMEM, HERD_E_INTERNAL_ERROR, "out of memory");
	}
	return herd__conn_open(socket_path, "client", extra, settings, true, ret, ret_error);
}

/*
 * Closes the socket and fails everything pending with connection_closed. err
 * (borrowed) describes why; the close callback receives it as it is, while
 * operations get a connection_closed error carrying its message, so a caller
 * always matches one name for "the connection went away".
 */
void
herd__conn_close(herd_conn *conn, int reason, herd_error *err)
{
	if (conn->state == CONN_CLOSED || conn->closing)
		return;
	conn->close_err = err;
	herd__peer_abort(&conn->peer, reason, NULL);
	conn->close_err = NULL;
}

/* Every path that loses the socket ends here, once: the peer's closed callback. */
void
herd__conn_closed(struct herd__peer *p, int reason, const char *why)
{
	herd_conn *conn = p->userdata;
	herd_error *err = conn->close_err, *own = NULL, *ops_err = NULL;
	herd_conn_close_cb cb;

	conn->closing = true;
	herd_conn_ref(conn);
	/* Off the list before the socket closes: no keepalive pass may write on it after. */
	herd__keepalive_remove(conn);
	/* What the peer still has to say (a framing error's reply) gets one try, no wait. */
	(void)herd__peer_flush(p, 0);
	herd__peer_abort(p, reason, NULL);
	conn->state = CONN_CLOSED;

	if (reason == -EPIPE)
		reason = -ECONNRESET;
	if (!err && why)
		err = own =
		    herd__error_newf(HERD_E_CONNECTION_CLOSED, "connection closed: %s", why);
	else if (!err)
		err = own = herd__error_new(HERD_E_CONNECTION_CLOSED,
		    reason == 0 ? "connection closed locally" : "connection closed", NULL);
	/* Lost, not closed here: a worker that died says why, so its callers see the cause. */
	if (reason == -ECONNRESET && conn->pending_head && conn->exit_cause_fn)
		ops_err = conn->exit_cause_fn(conn, conn->exit_cause_userdata);
	if (!ops_err && herd_error_code(err) == HERD_E_CONNECTION_CLOSED)
		ops_err = herd_error_ref(err);
	else if (!ops_err)
		ops_err = herd__error_newf(
		    HERD_E_CONNECTION_CLOSED, "connection closed: %s", herd_error_message(err));
	herd__ops_fail_all(conn, ops_err);
	herd_error_unref(ops_err);

	if (conn->closed_fn)
		conn->closed_fn(conn, reason, err, conn->notify_userdata);
	cb = conn->close_cb;
	conn->close_cb = NULL;
	if (cb)
		cb(conn, reason, err, conn->close_userdata);
	herd_error_unref(own);
	conn->closing = false;
	herd_conn_unref(conn);
}

/* The last reference went: what the connection holds goes with it. */
void
herd__conn_free(struct herd__peer *p)
{
	herd_conn *conn = p->userdata;

	herd__keepalive_remove(conn);
	herd__ops_free(conn);
	if (conn->exit_cause_free)
		conn->exit_cause_free(conn->exit_cause_userdata);
	herd__served_free(conn);
	json_decref(conn->server_info);
	json_decref(conn->request);
	herd_error_unref(conn->last_error);
	free(conn);
}

/* The last reference closes an open connection first; its callbacks see a live handle. */
HERD__DEFINE_REF_UNREF_VIA(herd_conn, herd_conn, peer, herd__peer_ref, herd__peer_unref)

HERD_EXPORT int
herd_conn_close(herd_conn *conn)
{
	if (!conn)
		return -EINVAL;
	herd__conn_close(conn, 0, NULL);
	return 0;
}

HERD__DEFINE_GETTER(herd_conn_is_closed, herd_conn, int, p->state == CONN_CLOSED, -EINVAL)

HERD_EXPORT int
herd_conn_on_close(herd_conn *conn, herd_conn_close_cb cb, void *userdata)
{
	if (!conn)
		return -EINVAL;
	if (conn->state == CONN_CLOSED || conn->closing)
		return -ENOTCONN;
	conn->close_cb = cb;
	conn->close_userdata = userdata;
	return 0;
}

/* Remembers the error of the latest failed request for herd_conn_last_error(). */
void
herd__conn_set_error(herd_conn *conn, herd_error *err)
{
	herd__error_set(&conn->last_error, err);
}

HERD__DEFINE_GETTER(herd_conn_last_error, herd_conn, herd_error *, p->last_error, NULL)

HERD_EXPORT int
herd_conn_set_call_timeout(herd_conn *conn, uint64_t timeout_usec)
{
	if (!conn)
		return -EINVAL;
	conn->call_timeout_usec = timeout_usec ? timeout_usec : HERD_DEFAULT_CALL_TIMEOUT_USEC;
	return 0;
}

HERD__DEFINE_GETTER(herd_conn_get_server_info, herd_conn, json_t *, p->server_info, NULL)
HERD__DEFINE_GETTER(
    herd_conn_get_settings, herd_conn, json_t *, json_object_get(p->server_info, "settings"), NULL)
