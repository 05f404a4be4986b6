/* SPDX-License-Identifier: MIT */
/* Helpers of the worker-side tests; see worker-test-util.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "example-worker.h"
#include "worker-test-util.h"

/* ---- in-process server ---- */

static void
stop_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct wt_server *s = w->data;

	ev_async_stop(loop, w);
	herd_server_close(s->srv);
	s->srv = herd_server_unref(s->srv);
}

static void *
server_thread(void *arg)
{
	struct wt_server *s = arg;

	s->serve_rc = herd_serve(s->loop, s->type, s->path, s->init, s->settings, &s->srv);
	pthread_mutex_lock(&s->mu);
	s->started = true;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
	if (s->serve_rc < 0)
		return NULL;
	/* Returns once the server and every connection are gone: no watcher is left. */
	ev_run(s->loop, 0);
	pthread_mutex_lock(&s->mu);
	s->running = false;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

int
wt_server_start(struct wt_server *s, json_t *init, json_t *settings)
{
	return wt_server_start_type(s, &example_worker_type, init, settings);
}

int
wt_server_start_type(
    struct wt_server *s, const struct herd_worker_type *type, json_t *init, json_t *settings)
{
	int r;

	memset(s, 0, sizeof(*s));
	s->type = type;
	r = ht_tmpdir(s->dir, sizeof(s->dir));
	if (r < 0)
		return r;
	snprintf(s->path, sizeof(s->path), "%s/worker.sock", s->dir);
	s->init = init;
	s->settings = settings;
	s->loop = ev_loop_new(EVFLAG_AUTO);
	if (!s->loop)
		return -ENOMEM;
	ev_async_init(&s->stop, stop_cb);
	s->stop.data = s;
	ev_async_start(s->loop, &s->stop);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cond, NULL);
	s->running = true;
	r = pthread_create(&s->thread, NULL, server_thread, s);
	if (r != 0) {
		ev_loop_destroy(s->loop);
		return -r;
	}
	pthread_mutex_lock(&s->mu);
	while (!s->started)
		pthread_cond_wait(&s->cond, &s->mu);
	pthread_mutex_unlock(&s->mu);
	s->init = s->settings = NULL;
	if (s->serve_rc < 0) {
		pthread_join(s->thread, NULL);
		ev_loop_destroy(s->loop);
		pthread_mutex_destroy(&s->mu);
		pthread_cond_destroy(&s->cond);
	}
	return s->serve_rc;
}

int
wt_server_stop(struct wt_server *s)
{
	struct timespec deadline;
	int r = 0;

	ev_async_send(s->loop, &s->stop);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	/* pthread_cond_timedwait takes CLOCK_REALTIME; only a deadline, never a measurement. */
	pthread_mutex_lock(&s->mu);
	while (s->running && r == 0)
		r = pthread_cond_timedwait(&s->cond, &s->mu, &deadline);
	pthread_mutex_unlock(&s->mu);
	if (r != 0) {
		fprintf(stderr, "wt: the server thread did not finish\n");
		return -ETIMEDOUT;
	}
	pthread_join(s->thread, NULL);
	ev_loop_destroy(s->loop);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cond);
	return 0;
}

void
wt_start(struct wt_server *s, json_t *init, json_t *settings)
{
	int fds_before = wt_fd_count();

	ck_assert_int_eq(wt_server_start(s, init, settings), 0);
	s->fds_before = fds_before;
	json_decref(init);
	json_decref(settings);
}

void
wt_stop(struct wt_server *s)
{
	ck_assert_int_eq(wt_server_stop(s), 0);
	ck_assert_int_eq(wt_fd_count(), s->fds_before);
	ht_teardown();
}

/* ---- clients ---- */

struct ht_conn *
wt_connect(const char *path, json_t *extra)
{
	struct ht_conn *c = ht_conn_open(path);
	json_t *reply;

	if (!c) {
		json_decref(extra);
		return NULL;
	}
	reply = ht_conn_hello(c, "client", extra, ht_ms(5000));
	if (!ht_result(reply)) {
		fprintf(stderr, "wt: hello failed: %s\n", ht_dump(reply));
		json_decref(reply);
		ht_conn_close(c);
		return NULL;
	}
	json_decref(reply);
	return c;
}

json_t *
wt_call(struct ht_conn *c, const char *method, json_t *params)
{
	json_t *reply = ht_conn_call(c, method, params, ht_ms(5000));

	ck_assert_msg(reply, "%s: no reply", method);
	return reply;
}

int
wt_notify(struct ht_conn *c, const char *method, json_t *params)
{
	json_t *msg = proto_notification(method, params);
	int r;

	if (!msg)
		return -ENOMEM;
	r = ht_conn_send(c, msg);
	json_decref(msg);
	return r;
}

int
wt_error_code(const json_t *reply)
{
	json_t *e = json_object_get(reply, "error");

	return e ? (int)json_integer_value(json_object_get(e, "code")) : 0;
}

long long
wt_int_result(const json_t *reply)
{
	json_t *r = ht_result(reply);

	return json_is_integer(r) ? json_integer_value(r) : LLONG_MIN;
}

json_t *
wt_next_item(struct ht_conn *c, json_int_t id, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	json_t *msg, *params = NULL;

	while (!params) {
		int64_t left = deadline - ht_now_ms();

		msg = ht_conn_wait_method(c, "herd.item", left > 0 ? (int)left : 0);
		if (!msg)
			break;
		if (json_integer_value(json_object_get(json_object_get(msg, "params"), "id")) == id)
			params = json_incref(json_object_get(msg, "params"));
		else
			fprintf(
			    stderr, "wt: dropped an item of another stream: %s\n", ht_dump(msg));
		json_decref(msg);
	}
	return params;
}

bool
wt_wait_log(struct ht_conn *c, json_int_t id, const char *text, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - ht_now_ms();
		json_t *p = wt_next_item(c, id, left > 0 ? (int)left : 0);
		const char *m;
		bool found;

		if (!p)
			return false;
		m = json_string_value(json_object_get(json_object_get(p, "item"), "message"));
		found = m && strstr(m, text);
		json_decref(p);
		if (found)
			return true;
	}
}

int
wt_fd_count(void)
{
	return ht_count_fds(getpid());
}

/* ---- the example executable ---- */

const char *
wt_worker_path(void)
{
	return ht_env_path("HERD_EXAMPLE_WORKER");
}

pid_t
wt_spawn(const char *const *args, int channel_fd, const char *worker_id, int stderr_fd)
{
	const char *path = wt_worker_path();
	const char *argv[16] = { path };
	size_t n = 1;
	pid_t pid;

	if (!path)
		return -ENOENT;
	for (; args && args[n - 1] && n < 15; n++)
		argv[n] = args[n - 1];
	argv[n] = NULL;
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (stderr_fd >= 0 && dup2(stderr_fd, 2) < 0)
			_exit(127);
		if (channel_fd >= 0) {
			/* dup2 clears close-on-exec on the new fd, as herdd's spawner does. */
			if (channel_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(channel_fd, 3) < 0)
				_exit(127);
			setenv("HERD_CHANNEL_FD", "3", 1);
			setenv("HERD_WORKER_ID", worker_id ? worker_id : "w-test", 1);
		} else {
			unsetenv("HERD_CHANNEL_FD");
		}
		execv(path, (char *const *)argv);
		_exit(127);
	}
	ht_track_child(pid);
	return pid;
}

static int
wait_path(const char *path, pid_t pid, bool want_present, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;
	char dir[256];
	char *slash;
	int in, pidfd = -1, r = -ETIMEDOUT;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (in < 0)
		return -errno;
	if (inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM) < 0) {
		r = -errno;
		goto out;
	}
	if (pid > 0)
		pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (;;) {
		struct pollfd p[2] = { { .fd = in, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN } };
		char buf[4096];
		int64_t left;

		/* Checked after the watch exists, so no change can slip between. */
		if ((access(path, F_OK) == 0) == want_present) {
			r = 0;
			break;
		}
		left = deadline - ht_now_ms();
		if (left <= 0)
			break;
		if (poll(p, pidfd >= 0 ? 2 : 1, (int)left) < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (pidfd >= 0 && (p[1].revents & POLLIN)) {
			r = (access(path, F_OK) == 0) == want_present ? 0 : -ECHILD;
			break;
		}
		while (read(in, buf, sizeof(buf)) > 0)
			;
	}
out:
	if (pidfd >= 0)
		close(pidfd);
	close(in);
	return r;
}

int
wt_wait_exit(pid_t pid)
{
	int status;

	ck_assert_int_eq(ht_wait_child(pid, ht_ms(10000), &status), 0);
	ck_assert_msg(WIFEXITED(status), "worker killed by signal %d", WTERMSIG(status));
	return WEXITSTATUS(status);
}

int
wt_wait_path(const char *path, pid_t pid, int timeout_ms)
{
	return wait_path(path, pid, true, timeout_ms);
}

int
wt_wait_path_gone(const char *path, int timeout_ms)
{
	return wait_path(path, 0, false, timeout_ms);
}

/* ---- herdd's end of the channel ---- */

int
wt_chan_open(struct wt_chan *ch, int *ret_child)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	ch->fd = sv[0];
	ch->eof = false;
	proto_reader_init(&ch->reader, HERD_DEFAULT_MAX_MESSAGE_SIZE, HERD_MAX_DEPTH);
	*ret_child = sv[1];
	return 0;
}

void
wt_chan_close(struct wt_chan *ch)
{
	if (ch->fd >= 0)
		close(ch->fd);
	ch->fd = -1;
	proto_reader_free(&ch->reader);
}

int
wt_chan_send(struct wt_chan *ch, json_t *msg)
{
	char *text;
	size_t len;
	ssize_t n;

	if (!msg)
		return -ENOMEM;
	text = json_dumps(msg, JSON_COMPACT);
	json_decref(msg);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	text[len] = '\n';
	n = send(ch->fd, text, len + 1, MSG_NOSIGNAL);
	free(text);
	return n == (ssize_t)(len + 1) ? 0 : -EIO;
}

json_t *
wt_chan_recv(struct wt_chan *ch, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { .fd = ch->fd, .events = POLLIN };
		struct proto_error err;
		char buf[65536];
		json_t *msg;
		int64_t left;
		ssize_t n;
		int r = proto_reader_next(&ch->reader, &msg, &err);

		if (r == 1)
			return msg;
		if (r < 0) {
			errno = EBADMSG;
			return NULL;
		}
		if (ch->eof) {
			errno = EPIPE;
			return NULL;
		}
		left = deadline - ht_now_ms();
		if (left <= 0 || poll(&p, 1, (int)left) == 0) {
			errno = ETIMEDOUT;
			return NULL;
		}
		n = read(ch->fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ch->eof = true;
			continue;
		}
		proto_reader_feed(&ch->reader, buf, (size_t)n);
	}
}

json_t *
wt_chan_recv_skip_heartbeats(struct wt_chan *ch, int timeout_ms)
{
	int64_t deadline = ht_now_ms() + timeout_ms;

	for (;;) {
		int64_t left = deadline - ht_now_ms();
		json_t *msg = wt_chan_recv(ch, left > 0 ? (int)left : 0);
		const char *m = json_string_value(json_object_get(msg, "method"));

		if (!msg || !m || strcmp(m, "heartbeat") != 0)
			return msg;
		json_decref(msg);
	}
}
