/* SPDX-License-Identifier: MIT */
/*
 * herd_worker_main(): the main() of a worker executable. Standalone, it serves
 * the socket named on the command line; supervised (herdd gave it fd 3), the
 * channel code in worker-channel.c drives start-up and the server is created there.
 * Either way it stops gracefully on SIGTERM, SIGINT or herd.shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker-internal.h"

struct herd__main *herd__main_current;

void
herd__main_stop(struct herd__main *m, int status)
{
	if (m->stopping)
		return;
	m->stopping = true;
	m->exit_status = status;
	ev_signal_stop(m->loop, &m->sigterm);
	ev_signal_stop(m->loop, &m->sigint);
	ev_timer_stop(m->loop, &m->conn_timeout);
	herd__channel_stop(m);
	/* The loop ends by itself once the connections have flushed and closed. */
	if (m->srv) {
		herd_server_close(m->srv);
		m->srv = herd_server_unref(m->srv);
	}
	ev_timer_start(m->loop, &m->stop_deadline);
	ev_unref(m->loop); /* the deadline alone must not keep the loop running */
}

void
herd__main_exit_now(int status)
{
	for (struct herd_server *srv = herd__servers; srv; srv = srv->all_next)
		herd__server_unlink(srv);
	_exit(status);
}

static void
main_signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct herd__main *m = w->data;

	herd_log(HERD_LOG_INFO, "%s: stopping", strsignal(w->signum));
	herd__main_stop(m, 0);
}

static void
main_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	herd_log(HERD_LOG_WARNING, "connections did not close in time; exiting");
	ev_ref(loop);
	ev_break(loop, EVBREAK_ALL);
}

/* herd.shutdown from a client. */
static void
main_shutdown_cb(herd_server *srv, void *userdata)
{
	herd__main_stop(userdata, 0);
}

static void
usage(FILE *f, const char *prog)
{
	fprintf(f,
	    "Usage: %s --socket PATH [--init JSON] [--settings JSON]\n"
	    "Serves a herd worker on the Unix socket PATH until herd.shutdown, SIGTERM or\n"
	    "SIGINT. Started by herdd (HERD_CHANNEL_FD set), it takes no arguments.\n",
	    prog);
}

/* Parses a JSON option value; NULL (message printed) when it is not JSON. */
static json_t *
parse_json_arg(const char *opt, const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);

	if (!v)
		fprintf(stderr, "%s: not JSON: %s\n", opt, jerr.text);
	return v;
}

/* What main_standalone's options set. */
struct standalone_args {
	const char *socket_path;
	json_t *init, *settings; /* new references */
};

/* main_standalone's options: getopt_long's row, and where its value goes. */
static const struct standalone_opt {
	struct option opt;
	enum { OPT_STRING, OPT_JSON, OPT_HELP } kind;
	size_t offset; /* of its member in struct standalone_args */
} standalone_opts[] = {
	{ { "socket", required_argument, NULL, 's' }, OPT_STRING,
	    offsetof(struct standalone_args, socket_path) },
	{ { "init", required_argument, NULL, 'i' }, OPT_JSON,
	    offsetof(struct standalone_args, init) },
	{ { "settings", required_argument, NULL, 'S' }, OPT_JSON,
	    offsetof(struct standalone_args, settings) },
	{ { "help", no_argument, NULL, 'h' }, OPT_HELP, 0 },
};

#define N_STANDALONE_OPTS (sizeof(standalone_opts) / sizeof(standalone_opts[0]))

/* Stores one option's value in a. Returns -1 to go on, or the exit status. */
static int
standalone_set(struct standalone_args *a, const struct standalone_opt *o, const char *prog)
{
	void *member = (char *)a + o->offset;
	char name[32];

	switch (o->kind) {
	case OPT_STRING:
		*(const char **)member = optarg;
		return -1;
	case OPT_JSON:
		snprintf(name, sizeof(name), "--%s", o->opt.name);
		json_decref(*(json_t **)member);
		*(json_t **)member = parse_json_arg(name, optarg);
		return *(json_t **)member ? -1 : 2;
	case OPT_HELP:
		usage(stdout, prog);
		return 0;
	}
	return 2;
}

/* Parses the command line into a, by standalone_opts. Returns -1 to go on, or the exit status. */
static int
standalone_parse(struct standalone_args *a, int argc, char **argv)
{
	struct option longopts[N_STANDALONE_OPTS + 1] = { { 0 } };
	char shorts[2 * N_STANDALONE_OPTS + 1] = "", *s = shorts;
	size_t i;
	int c, r;

	for (i = 0; i < N_STANDALONE_OPTS; i++) {
		longopts[i] = standalone_opts[i].opt;
		*s++ = (char)standalone_opts[i].opt.val;
		if (standalone_opts[i].opt.has_arg)
			*s++ = ':';
	}
	optind = 1;
	while ((c = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
		for (i = 0; i < N_STANDALONE_OPTS && standalone_opts[i].opt.val != c; i++) {
		}
		if (i == N_STANDALONE_OPTS) {
			usage(stderr, argv[0]);
			return 2;
		}
		r = standalone_set(a, &standalone_opts[i], argv[0]);
		if (r >= 0)
			return r;
	}
	if (!a->socket_path || optind != argc) {
		usage(stderr, argv[0]);
		return 2;
	}
	return -1;
}

static int
main_standalone(struct herd__main *m, int argc, char **argv)
{
	struct standalone_args a = { 0 };
	char *msg = NULL;
	int r, status;

	status = standalone_parse(&a, argc, argv);
	if (status >= 0)
		goto out;
	status = 1;
	r = herd__server_new(m->loop, m->type, a.init, a.settings, &m->srv, &msg);
	if (r < 0) {
		herd_log(HERD_LOG_ERR, "%s: %s",
		    r == -EREMOTEIO ? "worker init failed" : "cannot start",
		    msg ? msg : strerror(-r));
		goto out;
	}
	r = herd__server_listen(m->srv, a.socket_path);
	if (r < 0) {
		herd_log(HERD_LOG_ERR, "cannot listen on %s: %s", a.socket_path, strerror(-r));
		goto out;
	}
	herd_server_on_shutdown(m->srv, main_shutdown_cb, m);
	m->exit_status = 0;
	ev_run(m->loop, 0);
	status = m->exit_status;
out:
	m->srv = herd_server_unref(m->srv);
	free(msg);
	json_decref(a.init);
	json_decref(a.settings);
	return status;
}

/* Reads and hides herdd's variables; returns the channel fd, or -1 when standalone. */
static int
take_channel_fd(void)
{
	const char *v = getenv("HERD_CHANNEL_FD");
	char *end;
	long fd;

	if (!v)
		return -1;
	errno = 0;
	fd = strtol(v, &end, 10);
	unsetenv("HERD_CHANNEL_FD");
	if (errno || *end || end == v || fd < 0 || fd > 65535) {
		fprintf(stderr, "HERD_CHANNEL_FD=%s is not an fd number\n", v);
		return -2;
	}
	return (int)fd;
}

HERD_EXPORT int
herd_worker_main(const struct herd_worker_type *type, int argc, char **argv)
{
	struct herd__main m = { .type = type, .exit_status = 1 };
	int fd, status;

	if (!type || argc < 1 || !argv)
		return 2;
	if (herd__main_current) {
		fprintf(stderr, "herd_worker_main is already running\n");
		return 2;
	}
	fd = take_channel_fd();
	if (fd == -2)
		return 2;
	herd__role_add(HERD_ROLE_WORKER | (fd >= 0 ? HERD_ROLE_SUPERVISED : 0));
	m.loop = ev_default_loop(0);
	if (!m.loop) {
		fprintf(stderr, "cannot create the event loop\n");
		return 1;
	}
	herd__main_current = &m;
	ev_signal_init(&m.sigterm, main_signal_cb, SIGTERM);
	ev_signal_init(&m.sigint, main_signal_cb, SIGINT);
	m.sigterm.data = m.sigint.data = &m;
	ev_signal_start(m.loop, &m.sigterm);
	ev_signal_start(m.loop, &m.sigint);
	ev_timer_init(&m.stop_deadline, main_deadline_cb, HERD__FLUSH_TIMEOUT_S + 1.0, 0.0);
	ev_init(&m.conn_timeout, NULL);

	if (fd >= 0) {
		if (herd__channel_start(&m, fd) < 0) {
			status = 1;
		} else {
			ev_run(m.loop, 0);
			status = m.exit_status;
		}
		m.srv = herd_server_unref(m.srv);
		herd__channel_free(&m);
	} else {
		status = main_standalone(&m, argc, argv);
	}
	ev_signal_stop(m.loop, &m.sigterm);
	ev_signal_stop(m.loop, &m.sigint);
	if (ev_is_active(&m.stop_deadline)) {
		ev_ref(m.loop);
		ev_timer_stop(m.loop, &m.stop_deadline);
	}
	herd__main_current = NULL;
	return status;
}

HERD_EXPORT void
herd_worker_fail(const char *fmt, ...)
{
	char *message = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&message, fmt, ap) < 0)
		message = NULL;
	va_end(ap);
	herd_log(HERD_LOG_ERR, "worker failed: %s", message ? message : "(out of memory)");
	/* Replies already queued still reach their callers. */
	herd__server_flush_all();
	if (herd__main_current)
		herd__channel_send_failure(herd__main_current, message ? message : "out of memory");
	free(message);
	herd__main_exit_now(1);
}
