/* SPDX-License-Identifier: MIT */
/*
 * A worker's server: the worker state, the listening Unix socket and the
 * connections accepted on it. herd_serve() is the public entry; the pieces are
 * internal so herd_worker_main() can report an init failure to herdd before it
 * binds anything.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "worker/worker-internal.h"

struct herd_server *herd__servers;

static void deferred_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Checks a worker type's table; returns its length or -EINVAL with *reterr set. */
static int
type_check(const struct herd_worker_type *type, size_t *ret_n, char **reterr)
{
	size_t n = 0;

	if (!type || !type->functions)
		return herd_init_fail(reterr, "the worker type has no function table");
	for (n = 0; type->n_functions ? n < type->n_functions : type->functions[n].name != NULL;
	     n++) {
		const struct herd_function *f = &type->functions[n];

		if (!f->name || !f->handler || !herd_kind_name(f->kind))
			return herd_init_fail(reterr, "function %zu of the table is incomplete", n);
		if (strncmp(f->name, "herd.", 5) == 0 || strcmp(f->name, "hello") == 0 ||
		    strcmp(f->name, "heartbeat") == 0)
			return herd_init_fail(reterr, "function name \"%s\" is reserved", f->name);
		for (size_t j = 0; j < n; j++)
			if (strcmp(type->functions[j].name, f->name) == 0)
				return herd_init_fail(
				    reterr, "function \"%s\" is declared twice", f->name);
	}
	*ret_n = n;
	return 0;
}

int
herd__server_new(struct ev_loop *loop, const struct herd_worker_type *type, json_t *init_arg,
    json_t *settings, struct herd_server **ret, char **reterr_message)
{
	struct herd_server *srv;
	char *msg = NULL;
	size_t n = 0;
	int r;

	*reterr_message = NULL;
	if (!loop || !ret)
		return herd_init_fail(reterr_message, "no loop or result pointer");
	r = type_check(type, &n, reterr_message);
	if (r < 0)
		return r;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	r = herd__settings_resolve(settings, &srv->settings, reterr_message);
	if (r < 0) {
		free(srv);
		return r;
	}
	srv->n_ref = 1;
	srv->loop = loop;
	srv->type = type;
	srv->n_functions = n;
	srv->listen_fd = -1;
	srv->max_pending = HERD_DEFAULT_MAX_PENDING;
	srv->max_output = HERD_DEFAULT_MAX_OUTPUT;
	ev_timer_init(&srv->deferred, deferred_cb, 0.0, 0.0);
	srv->deferred.data = srv;
	if (type->init_worker) {
		r = type->init_worker(init_arg ? init_arg : json_null(), &srv->worker_state, &msg);
		if (r < 0) {
			*reterr_message = msg ? msg : strdup(strerror(-r));
			free(srv);
			return -EREMOTEIO;
		}
	}
	srv->worker_state_set = true;
	srv->all_next = herd__servers;
	herd__servers = srv;
	*ret = srv;
	return 0;
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd_server *srv = w->data;

	/* A bounded batch, so one busy socket cannot starve the loop. */
	for (int i = 0; i < 32 && srv->accepting; i++) {
		int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of fds: stop accepting for a moment instead of spinning. */
				herd_log(HERD_LOG_WARNING, "accept: %s; pausing", strerror(errno));
				ev_io_stop(loop, &srv->accept_io);
				ev_timer_start(loop, &srv->accept_retry);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK) {
				herd_log(HERD_LOG_ERR, "accept: %s", strerror(errno));
			}
			return;
		}
		if (herd__sconn_start(srv, fd) < 0) {
			herd_log(HERD_LOG_ERR, "out of memory for a new connection");
			close(fd);
		}
	}
}

static void
accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct herd_server *srv = w->data;

	if (srv->accepting)
		ev_io_start(loop, &srv->accept_io);
}

/* True when something accepts connections on path. */
static bool
socket_alive(const struct sockaddr_un *sa)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool alive;

	if (fd < 0)
		return true; /* cannot tell: do not remove anything */
	alive = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
	    (errno != ECONNREFUSED && errno != ENOENT);
	close(fd);
	return alive;
}

/* Binds fd to path as a 0600 socket file and listens. Returns 0 or -errno. */
static int
bind_listen(int fd, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t old_mask;
	int r;

	strcpy(sa.sun_path, path);
	/* The socket file is created 0600: only our uid may connect. */
	old_mask = umask(0177);
	r = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ? -errno : 0;
	umask(old_mask);
	if (r == 0 && listen(fd, SOMAXCONN) < 0) {
		r = -errno;
		unlink(path);
	}
	return r;
}

/*
 * The socket is bound under a temporary name and renamed into place once it
 * listens, so whoever sees the path appear (inotify, a polling client) can
 * connect at once. An existing file is replaced only if it is a socket nobody
 * answers on: a stale one left by a dead process.
 */
int
herd__server_listen(struct herd_server *srv, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char tmp[sizeof(sa.sun_path) + 32];
	struct stat st;
	int fd, r;

	if (!path || !*path)
		return -EINVAL;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	if (srv->listen_fd >= 0 || srv->closed)
		return -EBUSY;
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		if (socket_alive(&sa))
			return -EADDRINUSE;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	if (strlen(tmp) < sizeof(sa.sun_path)) {
		unlink(tmp);
		r = bind_listen(fd, tmp);
		if (r == 0 && rename(tmp, path) < 0) {
			r = -errno;
			unlink(tmp);
		}
	} else {
		/* No room for a temporary name: bind in place. */
		unlink(path);
		r = bind_listen(fd, path);
	}
	if (r == 0 && lstat(path, &st) < 0)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	srv->socket_path = strdup(path);
	if (!srv->socket_path) {
		unlink(path);
		close(fd);
		return -ENOMEM;
	}
	srv->sock_dev = st.st_dev;
	srv->sock_ino = st.st_ino;
	srv->listen_fd = fd;
	ev_io_init(&srv->accept_io, accept_cb, fd, EV_READ);
	ev_timer_init(&srv->accept_retry, accept_retry_cb, 0.1, 0.0);
	srv->accept_io.data = srv->accept_retry.data = srv;
	srv->accepting = true;
	ev_io_start(srv->loop, &srv->accept_io);
	return 0;
}

void
herd__server_unlink(struct herd_server *srv)
{
	struct stat st;

	if (!srv->socket_path)
		return;
	/* Only remove the file if it is still ours (nobody replaced it since). */
	if (lstat(srv->socket_path, &st) == 0 && st.st_dev == srv->sock_dev &&
	    st.st_ino == srv->sock_ino)
		unlink(srv->socket_path);
	free(srv->socket_path);
	srv->socket_path = NULL;
}

void
herd__server_stop_accepting(struct herd_server *srv)
{
	srv->accepting = false;
	if (srv->listen_fd >= 0) {
		ev_io_stop(srv->loop, &srv->accept_io);
		ev_timer_stop(srv->loop, &srv->accept_retry);
		close(srv->listen_fd);
		srv->listen_fd = -1;
	}
	herd__server_unlink(srv);
}

static void
deferred_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct herd_server *srv = w->data;

	herd_server_ref(srv);
	srv->shutdown_requested = false;
	if (srv->on_shutdown)
		srv->on_shutdown(srv, srv->on_shutdown_data);
	else
		herd_server_close(srv);
	herd_server_unref(srv);
}

void
herd__server_request_shutdown(struct herd_server *srv)
{
	if (srv->closed || srv->shutdown_requested)
		return;
	srv->shutdown_requested = true;
	ev_timer_start(srv->loop, &srv->deferred);
}

void
herd__server_flush_all(void)
{
	for (struct herd_server *srv = herd__servers; srv; srv = srv->all_next)
		for (struct srv_conn *c = srv->conns; c; c = c->next)
			herd__sconn_flush(c);
}

static void
server_free(struct herd_server *srv)
{
	struct herd_server **p;

	for (p = &herd__servers; *p; p = &(*p)->all_next) {
		if (*p == srv) {
			*p = srv->all_next;
			break;
		}
	}
	if (srv->worker_state_set && srv->type->free_worker)
		srv->type->free_worker(srv->worker_state);
	herd__offload_free(srv);
	free(srv->worker_id);
	free(srv);
}

void
herd__server_conn_freed(struct herd_server *srv)
{
	if (--srv->n_live == 0 && srv->n_ref == 0)
		server_free(srv);
}

/* ---- public ---- */

HERD_EXPORT int
herd_serve(struct ev_loop *loop, const struct herd_worker_type *type, const char *socket_path,
    json_t *init_arg, json_t *settings, herd_server **ret)
{
	struct herd_server *srv = NULL;
	char *msg = NULL;
	int r;

	if (!loop || !type || !socket_path || !ret)
		return -EINVAL;
	r = herd__server_new(loop, type, init_arg, settings, &srv, &msg);
	if (r < 0) {
		herd_log(HERD_LOG_ERR, "%s: %s",
		    r == -EREMOTEIO ? "worker init failed" : "cannot serve",
		    msg ? msg : strerror(-r));
		free(msg);
		return r;
	}
	r = herd__server_listen(srv, socket_path);
	if (r < 0) {
		herd_server_unref(srv);
		return r;
	}
	herd__role_add(HERD_ROLE_WORKER);
	*ret = srv;
	return 0;
}

/* The last reference closes the server; connections keep its worker state alive until they go. */
static void
server_release(herd_server *srv)
{
	srv->n_ref++;
	herd_server_close(srv);
	srv->n_ref--;
	if (srv->n_live == 0)
		server_free(srv);
}

HERD__DEFINE_REF_UNREF(herd_server, herd_server, server_release)

HERD_EXPORT int
herd_server_close(herd_server *srv)
{
	struct srv_conn *c;

	if (!srv)
		return -EINVAL;
	srv->closed = true;
	ev_timer_stop(srv->loop, &srv->deferred);
	herd__server_stop_accepting(srv);
	/* Closing one connection may run handlers that close others: rescan each time. */
	for (;;) {
		for (c = srv->conns; c && c->state >= SCONN_CLOSING; c = c->next)
			;
		if (!c)
			break;
		herd__sconn_close_graceful(c, HERD_E_SHUTTING_DOWN, "server closing");
	}
	return 0;
}

HERD__DEFINE_GETTER(herd_server_socket_path, const herd_server, const char *, p->socket_path, NULL)
HERD__DEFINE_GETTER(herd_server_worker_state, const herd_server, void *, p->worker_state, NULL)
HERD__DEFINE_GETTER(herd_server_loop, const herd_server, struct ev_loop *, p->loop, NULL)

HERD__DEFINE_CALLBACK_SETTER(herd_server_on_shutdown, herd_server, herd_server_cb, p ? 0 : -EINVAL,
    on_shutdown, on_shutdown_data)
