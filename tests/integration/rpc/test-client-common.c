/* SPDX-License-Identifier: MIT */
/*
 * Worker processes for the client tests. Both modes end with the worker
 * listening before tc_worker_start() returns, so a test never races its
 * worker's start.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <check.h>
#include <ev.h>
#include <herd/herd-ev.h>

#include "example-worker.h"
#include "test-client-common.h"

struct exec_args {
	const char *path;
	const char *socket;
	const char *init;
	int death_fd; /* write end of a pipe the worker keeps open until it dies */
};

static int
exec_worker(void *arg)
{
	const struct exec_args *a = arg;
	char *argv[6];
	int n = 0;

	argv[n++] = (char *)a->path;
	argv[n++] = (char *)"--socket";
	argv[n++] = (char *)a->socket;
	if (a->init) {
		argv[n++] = (char *)"--init";
		argv[n++] = (char *)a->init;
	}
	argv[n] = NULL;
	/* Survives the exec, so the pipe reports the worker's death as a hangup. */
	fcntl(a->death_fd, F_SETFD, 0);
	execv(a->path, argv);
	fprintf(stderr, "exec %s: %m\n", a->path);
	return 127;
}

struct fork_args {
	const char *socket;
	const char *init;
	int ready_fd;
};

static void
fork_sigterm(struct ev_loop *loop, ev_signal *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void
fork_shutdown(herd_server *srv, void *userdata)
{
	herd_server_close(srv);
	ev_break(herd_server_loop(srv), EVBREAK_ALL);
}

/*
 * The in-process worker: the same worker type served from a libev loop in a
 * forked copy of the test, freed completely before exiting so valgrind's leak
 * check holds for the child too.
 */
static int
fork_worker(void *arg)
{
	const struct fork_args *a = arg;
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	json_t *init = a->init ? json_loads(a->init, 0, NULL) : NULL;
	herd_server *srv = NULL;
	ev_signal sigterm;
	char ok = 1;
	int r;

	signal(SIGPIPE, SIG_IGN);
	r = herd_serve(loop, &example_worker_type, a->socket, init, NULL, &srv);
	json_decref(init);
	if (r < 0) {
		fprintf(stderr, "herd_serve: %s\n", strerror(-r));
		ok = 0;
	}
	if (write(a->ready_fd, &ok, 1) != 1 || r < 0)
		return 1;
	close(a->ready_fd);
	herd_server_on_shutdown(srv, fork_shutdown, NULL);
	ev_signal_init(&sigterm, fork_sigterm, SIGTERM);
	ev_signal_start(loop, &sigterm);
	ev_run(loop, 0);
	ev_signal_stop(loop, &sigterm);
	herd_server_close(srv);
	herd_server_unref(srv);
	ev_loop_destroy(loop);
	return 0;
}

/*
 * Waits until path accepts a connection. The file appears at bind(), a moment
 * before listen(): inotify wakes us for the file, and a refused connect in
 * that window is retried after waiting 1 ms on death_fd, a pipe the worker
 * holds open, so the wait also ends at once if the worker dies instead. (A
 * pipe rather than a pidfd: valgrind does not know pidfd_open.)
 */
static int
wait_listening(const char *dir, const char *path, int death_fd, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	int ino, r = -ETIMEDOUT;

	ino = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (ino < 0 || inotify_add_watch(ino, dir, IN_CREATE | IN_MOVED_TO) < 0) {
		r = -errno;
		goto out;
	}
	while (ht_now_ms() < deadline) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		struct pollfd p[2] = { { .fd = ino, .events = POLLIN },
			{ .fd = death_fd, .events = POLLIN } };
		char buf[4096];
		int fd, left = (int)(deadline - ht_now_ms());
		struct stat st;

		if (stat(path, &st) == 0) {
			snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
			fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			r = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 ? 0 : -errno;
			close(fd);
			if (r == 0)
				goto out;
			if (r != -ECONNREFUSED)
				goto out;
			left = left < 1 ? left : 1;
		}
		if (poll(p, 2, left < 0 ? 0 : left) < 0 && errno != EINTR) {
			r = -errno;
			goto out;
		}
		if (p[1].revents) {
			fprintf(stderr, "the worker died before listening on %s\n", path);
			r = -ESRCH;
			goto out;
		}
		while (read(ino, buf, sizeof(buf)) > 0)
			;
		r = -ETIMEDOUT;
	}
out:
	if (ino >= 0)
		close(ino);
	return r;
}

int
tc_worker_start(struct tc_worker *w, enum tc_mode mode, const char *init_json)
{
	int r;

	*w = (struct tc_worker){ .mode = mode };
	r = ht_tmpdir(w->dir, sizeof(w->dir));
	if (r < 0)
		return r;
	snprintf(w->socket, sizeof(w->socket), "%s/worker.sock", w->dir);

	if (mode == TC_EXEC) {
		struct exec_args a = { .socket = w->socket, .init = init_json };

		int p[2];

		a.path = ht_env_path("HERD_EXAMPLE_WORKER");
		if (!a.path)
			return -ENOENT;
		if (pipe2(p, O_CLOEXEC) < 0)
			return -errno;
		a.death_fd = p[1];
		w->pid = ht_fork_fn(exec_worker, &a, (uid_t)-1, (gid_t)-1);
		close(p[1]);
		if (w->pid < 0) {
			close(p[0]);
			return w->pid;
		}
		r = wait_listening(w->dir, w->socket, p[0], TC_MS(10000));
		close(p[0]);
	} else {
		struct fork_args a = { .socket = w->socket, .init = init_json };
		int p[2];
		char ok = 0;

		if (pipe2(p, O_CLOEXEC) < 0)
			return -errno;
		a.ready_fd = p[1];
		w->pid = ht_fork_fn(fork_worker, &a, (uid_t)-1, (gid_t)-1);
		close(p[1]);
		if (w->pid < 0) {
			close(p[0]);
			return w->pid;
		}
		/* The child writes one byte once it listens, or closes the pipe on failure. */
		{
			struct pollfd pfd = { .fd = p[0], .events = POLLIN };

			r = poll(&pfd, 1, TC_MS(10000));
			r = r > 0 && read(p[0], &ok, 1) == 1 && ok == 1 ? 0 : -EIO;
		}
		close(p[0]);
	}
	if (r < 0)
		fprintf(stderr, "worker on %s did not start: %s\n", w->socket, strerror(-r));
	return r;
}

void
tc_worker_kill(struct tc_worker *w)
{
	if (w->pid <= 0)
		return;
	kill(w->pid, SIGKILL);
	ht_wait_child(w->pid, TC_MS(10000), NULL);
	w->pid = 0;
}

herd_conn *
tc_connect(const struct tc_worker *w, json_t *conn_init)
{
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	int r;

	r = herd_conn_connect(w->socket, conn_init, NULL, &conn, &err);
	ck_assert_msg(r == 0, "connect %s: %s (%s)", w->socket, strerror(-r),
	    err ? herd_error_message(err) : "no error");
	herd_error_unref(err);
	return conn;
}

int
tc_count_fds(void)
{
	return ht_count_fds(getpid());
}

/* ---- scripted peers ---- */

struct fake_args {
	int listen_fd;
	int result_fd;
	int (*script)(struct tc_peer *p, void *arg);
	void *arg;
};

static int
fake_child(void *arg)
{
	struct fake_args *a = arg;
	struct tc_peer *p = calloc(1, sizeof(*p));
	unsigned char result = 100;

	signal(SIGPIPE, SIG_IGN);
	p->fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	close(a->listen_fd);
	if (p->fd >= 0) {
		result = (unsigned char)a->script(p, a->arg);
		close(p->fd);
	}
	free(p);
	if (write(a->result_fd, &result, 1) != 1)
		return 101;
	/* Our heap is a copy of the test's, whose leak check is the parent's business: under
	 * valgrind, leave through an exec so no leak check of the copy runs. */
	if (getenv("HERD_UNDER_VALGRIND"))
		execl("/bin/true", "true", (char *)NULL);
	return 0;
}

int
tc_fake_start(struct tc_fake *f, int (*script)(struct tc_peer *p, void *arg), void *arg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fake_args a = { .script = script, .arg = arg };
	char dir[128];
	int p[2], r;

	*f = (struct tc_fake){ .pid = -1, .result_fd = -1 };
	r = ht_tmpdir(dir, sizeof(dir));
	if (r < 0)
		return r;
	snprintf(f->socket, sizeof(f->socket), "%s/fake.sock", dir);
	memcpy(sa.sun_path, f->socket, strlen(f->socket) + 1);
	a.listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (a.listen_fd < 0)
		return -errno;
	if (bind(a.listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(a.listen_fd, 4) < 0 || pipe2(p, O_CLOEXEC) < 0) {
		r = -errno;
		close(a.listen_fd);
		return r;
	}
	a.result_fd = p[1];
	f->pid = ht_fork_fn(fake_child, &a, (uid_t)-1, (gid_t)-1);
	close(a.listen_fd);
	close(p[1]);
	if (f->pid < 0) {
		close(p[0]);
		return f->pid;
	}
	f->result_fd = p[0];
	return 0;
}

int
tc_fake_finish(struct tc_fake *f, int timeout_ms)
{
	struct pollfd pfd = { .fd = f->result_fd, .events = POLLIN };
	unsigned char result;
	int r;

	r = poll(&pfd, 1, timeout_ms);
	if (r > 0 && read(f->result_fd, &result, 1) == 1)
		r = result;
	else
		r = r == 0 ? -ETIMEDOUT : -EIO;
	close(f->result_fd);
	f->result_fd = -1;
	if (r == -ETIMEDOUT)
		kill(f->pid, SIGKILL);
	ht_wait_child(f->pid, timeout_ms, NULL);
	return r;
}

json_t *
tc_peer_recv(struct tc_peer *p, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		char *nl = memchr(p->buf, '\n', p->len);
		struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
		ssize_t n;
		int left;

		if (nl) {
			json_t *v = json_loadb(p->buf, (size_t)(nl - p->buf), 0, NULL);

			p->len -= (size_t)(nl + 1 - p->buf);
			memmove(p->buf, nl + 1, p->len);
			return v;
		}
		if (p->len == sizeof(p->buf))
			return NULL;
		left = (int)(deadline - ht_now_ms());
		if (left <= 0 || poll(&pfd, 1, left) <= 0)
			return NULL;
		n = read(p->fd, p->buf + p->len, sizeof(p->buf) - p->len);
		if (n <= 0)
			return NULL;
		p->len += (size_t)n;
	}
}

int
tc_peer_send(struct tc_peer *p, const char *text)
{
	size_t len = strlen(text);

	if (write(p->fd, text, len) != (ssize_t)len || write(p->fd, "\n", 1) != 1)
		return -EIO;
	return 0;
}

int
tc_peer_hello(struct tc_peer *p, json_t *result, int timeout_ms)
{
	json_t *hello = tc_peer_recv(p, timeout_ms);
	json_t *reply;
	char *text;
	int r;

	if (!hello || !json_is_string(json_object_get(hello, "method")) ||
	    strcmp(json_string_value(json_object_get(hello, "method")), "hello") != 0) {
		json_decref(hello);
		json_decref(result);
		return -EPROTO;
	}
	reply = json_pack("{s:s, s:O, s:o}", "jsonrpc", "2.0", "id", json_object_get(hello, "id"),
	    "result", result);
	text = json_dumps(reply, JSON_COMPACT);
	r = tc_peer_send(p, text);
	free(text);
	json_decref(reply);
	json_decref(hello);
	return r;
}

static json_t *args_pool;

json_t *
tc_args(const char *fmt, ...)
{
	json_error_t jerr;
	json_t *v;
	va_list ap;

	va_start(ap, fmt);
	v = json_vpack_ex(&jerr, 0, fmt, ap);
	va_end(ap);
	ck_assert_msg(v != NULL, "json_pack %s: %s", fmt, jerr.text);
	if (!args_pool)
		args_pool = json_array();
	json_array_append_new(args_pool, v);
	return v;
}

void
tc_args_release(void)
{
	args_pool = (json_decref(args_pool), NULL);
}
