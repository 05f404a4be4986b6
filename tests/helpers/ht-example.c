/* SPDX-License-Identifier: MIT */
/* The example worker run as the libherd tests need it; see ht-example.h. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ht-example.h"
#include "ht-internal.h"

/* ---- the executable ---- */

struct exec_args {
	const char *argv[16];
	int channel_fd;
	const char *worker_id;
	int stderr_fd;
};

static int
exec_example(void *arg)
{
	const struct exec_args *a = arg;

	if (a->stderr_fd >= 0 && dup2(a->stderr_fd, 2) < 0)
		return 127;
	if (a->channel_fd >= 0) {
		/* dup2 clears close-on-exec on the new fd, as herdd's spawner does. */
		if (a->channel_fd == 3 ? fcntl(3, F_SETFD, 0) < 0 : dup2(a->channel_fd, 3) < 0)
			return 127;
		setenv("HERD_CHANNEL_FD", "3", 1);
		setenv("HERD_WORKER_ID", a->worker_id ? a->worker_id : "w-test", 1);
	} else {
		unsetenv("HERD_CHANNEL_FD");
	}
	execv(a->argv[0], (char *const *)a->argv);
	fprintf(stderr, "exec %s: %m\n", a->argv[0]);
	return 127;
}

pid_t
ht_example_spawn(const char *const *args, int channel_fd, const char *worker_id, int stderr_fd)
{
	struct exec_args a = {
		.channel_fd = channel_fd, .worker_id = worker_id, .stderr_fd = stderr_fd
	};
	size_t n = 1;

	a.argv[0] = ht_env_path("HERD_EXAMPLE_WORKER");
	if (!a.argv[0])
		return -ENOENT;
	for (; args && args[n - 1] && n < 15; n++)
		a.argv[n] = args[n - 1];
	a.argv[n] = NULL;
	return ht_fork_fn(exec_example, &a, (uid_t)-1, (gid_t)-1);
}

void
ht_example_end_ok(pid_t pid, int sig, int code, const char *socket)
{
	if (sig)
		ck_assert_int_eq(kill(pid, sig), 0);
	ck_assert_int_eq(ht_wait_exit_ok(pid), code);
	ck_assert_msg(access(socket, F_OK) < 0 && errno == ENOENT, "%s is left", socket);
}

struct ht_conn *
ht_chan_open(int *ret_child)
{
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return NULL;
	*ret_child = sv[1];
	return ht_conn_adopt(sv[0]);
}

/* ---- served in a forked copy of the test ---- */

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

/* Forks fork_worker; it writes one byte once it listens, or closes the pipe on failure. */
static int
start_forked(struct ht_example *w, const char *init_json)
{
	struct fork_args a = { .socket = w->socket, .init = init_json };
	int p[2], r;
	char ok = 0;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	a.ready_fd = p[1];
	w->pid = ht_fork_fn(fork_worker, &a, (uid_t)-1, (gid_t)-1);
	close(p[1]);
	if (w->pid < 0)
		r = w->pid;
	else
		r = ht__read_by(p[0], &ok, 1, ht_now_ms() + ht_ms(10000)) == 1 && ok == 1 ? 0
		                                                                          : -EIO;
	close(p[0]);
	return r;
}

int
ht_example_start(struct ht_example *w, enum ht_mode mode, const char *init_json)
{
	int r;

	*w = (struct ht_example){ 0 };
	r = ht_tmpdir(w->dir, sizeof(w->dir));
	if (r < 0)
		return r;
	snprintf(w->socket, sizeof(w->socket), "%s/worker.sock", w->dir);
	if (mode == HT_EXEC) {
		const char *args[] = { "--socket", w->socket, init_json ? "--init" : NULL,
			init_json, NULL };

		w->pid = ht_example_spawn(args, -1, NULL, -1);
		r = w->pid < 0 ? w->pid : ht_wait_listening(w->socket, w->pid, ht_ms(10000));
	} else {
		r = start_forked(w, init_json);
	}
	if (r < 0)
		fprintf(stderr, "worker on %s did not start: %s\n", w->socket, strerror(-r));
	return r;
}

void
ht_example_kill(struct ht_example *w)
{
	if (w->pid <= 0)
		return;
	kill(w->pid, SIGKILL);
	ht_wait_child(w->pid, ht_ms(10000), NULL);
	w->pid = 0;
}

void
ht_client_setup(void)
{
	signal(SIGPIPE, SIG_IGN);
}

void
ht_client_teardown(void)
{
	unsetenv("HERD_RPC_SETTINGS");
	unsetenv("HERD_SOCKET");
}

void
ht_outcome_set(struct ht_outcome *o, int r, json_t *result, herd_error *error)
{
	o->calls++;
	o->r = r;
	o->result = result ? ht__keep(json_incref(result)) : NULL;
	snprintf(o->name, sizeof(o->name), "%s", error ? herd_error_name(error) : "(none)");
}

void
ht_on_failure(herd_master *m, const char *event, const char *worker_id, const char *message,
    json_t *stderr_tail, json_t *worker, void *userdata)
{
	struct ht_failures *f = userdata;

	f->n++;
	snprintf(f->event, sizeof(f->event), "%s", event);
	snprintf(f->id, sizeof(f->id), "%s", worker_id ? worker_id : "");
	snprintf(f->message, sizeof(f->message), "%s", message ? message : "");
	f->tail = stderr_tail ? ht__keep(json_incref(stderr_tail)) : NULL;
	f->worker = worker ? ht__keep(json_incref(worker)) : NULL;
}

void
ht_wait_failure(herd_master *m, const struct ht_failures *f, int timeout_ms)
{
	herd_conn *conn = herd_master_get_conn(m);
	int64_t deadline = ht_now_ms() + timeout_ms;

	while (f->n == 0 && ht_now_ms() < deadline) {
		int r = herd_conn_wait(conn, (uint64_t)(deadline - ht_now_ms()) * 1000);

		ck_assert_msg(r >= 0 || r == -EINTR, "herd_conn_wait: %s", strerror(-r));
		ck_assert_int_ge(herd_conn_process(conn), 0);
	}
}

herd_master *
ht_herd_master_ok(json_t *settings)
{
	herd_error *err = NULL;
	herd_master *m = NULL;
	int r;

	ck_assert_ptr_nonnull(ht_herdd);
	r = herd_master_connect(ht_herdd->socket, settings, &m, &err);
	ck_assert_msg(
	    r == 0, "master connect: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	herd_error_unref(err);
	return m;
}

herd_worker *
ht_herd_spawn_opts_ok(herd_master *m, json_t *opts)
{
	herd_worker *w = NULL;
	int r;

	ck_assert_ptr_nonnull(opts);
	r = herd_master_spawn(m, opts, 0, &w);
	ck_assert_msg(
	    r == 0, "spawn: %s (%s)", strerror(-r), herd_error_message(herd_master_last_error(m)));
	json_decref(opts);
	ht_track_pid(herd_worker_pid(w));
	return w;
}

herd_worker *
ht_herd_spawn_ok(herd_master *m, const char *var, json_t *init)
{
	json_t *opts = herd_spawn_opts_new(ht_env_path(var), init);

	json_decref(init);
	return ht_herd_spawn_opts_ok(m, opts);
}

herd_conn *
ht_herd_connect(const char *socket, json_t *conn_init)
{
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	int r;

	r = herd_conn_connect(socket, conn_init, NULL, &conn, &err);
	ck_assert_msg(r == 0, "connect %s: %s (%s)", socket, strerror(-r),
	    err ? herd_error_message(err) : "no error");
	herd_error_unref(err);
	return conn;
}

herd_conn *
ht_herd_worker_connect_ok(const herd_worker *w)
{
	herd_error *err = NULL;
	herd_conn *conn = NULL;
	int r = herd_worker_connect(w, NULL, &conn, &err);

	ck_assert_msg(
	    r == 0, "worker connect: %s (%s)", strerror(-r), err ? herd_error_message(err) : "-");
	herd_error_unref(err);
	return conn;
}

/* ---- scripted fake workers ---- */

struct fake_args {
	int listen_fd;
	int result_fd;
	int (*script)(struct ht_conn *c, void *arg);
	void *arg;
};

static int
fake_child(void *arg)
{
	struct fake_args *a = arg;
	int fd = accept4(a->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	unsigned char result = 100;

	signal(SIGPIPE, SIG_IGN);
	close(a->listen_fd);
	if (fd >= 0) {
		struct ht_conn *c = ht_conn_adopt(fd);

		result = c ? (unsigned char)a->script(c, a->arg) : 102;
		ht_conn_close(c);
	}
	if (write(a->result_fd, &result, 1) != 1)
		return 101;
	/* Our heap is a copy of the test's, whose leak check is the parent's business: under
	 * valgrind, leave through an exec so no leak check of the copy runs. */
	if (getenv("HERD_UNDER_VALGRIND"))
		execl("/bin/true", "true", (char *)NULL);
	return 0;
}

int
ht_fake_start(struct ht_fake *f, int (*script)(struct ht_conn *c, void *arg), void *arg)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct fake_args a = { .script = script, .arg = arg };
	char dir[128];
	int p[2], r;

	*f = (struct ht_fake){ .pid = -1, .result_fd = -1 };
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
ht_fake_finish(struct ht_fake *f, int timeout_ms)
{
	unsigned char result;
	ssize_t n = ht__read_by(f->result_fd, &result, 1, ht_now_ms() + timeout_ms);
	int r = n == 1 ? result : n == -ETIMEDOUT ? -ETIMEDOUT : -EIO;

	close(f->result_fd);
	f->result_fd = -1;
	if (r == -ETIMEDOUT)
		kill(f->pid, SIGKILL);
	ht_wait_child(f->pid, timeout_ms, NULL);
	return r;
}
