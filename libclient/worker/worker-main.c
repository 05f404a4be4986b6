/* SPDX-License-Identifier: MIT */
/*
 * herd_worker_main(): the main() of a worker executable. Standalone, it serves
 * the socket named on the command line; supervised (herdd gave it fd 3), the
 * channel code in worker-channel.c drives start-up and the server is created there.
 * Either way it stops gracefully on SIGTERM, SIGINT or herd.shutdown.
 */
#include <errno.h>
#include <getopt.h>
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

static int
main_standalone(struct herd__main *m, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "init", required_argument, NULL, 'i' },
		{ "settings", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *socket_path = NULL;
	json_t *init = NULL, *settings = NULL;
	char *msg = NULL;
	int c, r, status = 2;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:i:S:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			socket_path = optarg;
			break;
		case 'i':
			json_decref(init);
			init = parse_json_arg("--init", optarg);
			if (!init)
				goto out;
			break;
		case 'S':
			json_decref(settings);
			settings = parse_json_arg("--settings", optarg);
			if (!settings)
				goto out;
			break;
		case 'h':
			usage(stdout, argv[0]);
			status = 0;
			goto out;
		default:
			usage(stderr, argv[0]);
			goto out;
		}
	}
	if (!socket_path || optind != argc) {
		usage(stderr, argv[0]);
		goto out;
	}
	status = 1;
	r = herd__server_new(m->loop, m->type, init, settings, &m->srv, &msg);
	if (r < 0) {
		herd_log(HERD_LOG_ERR, "%s: %s",
		    r == -EREMOTEIO ? "worker init failed" : "cannot start",
		    msg ? msg : strerror(-r));
		goto out;
	}
	r = herd__server_listen(m->srv, socket_path);
	if (r < 0) {
		herd_log(HERD_LOG_ERR, "cannot listen on %s: %s", socket_path, strerror(-r));
		goto out;
	}
	herd_server_on_shutdown(m->srv, main_shutdown_cb, m);
	m->exit_status = 0;
	ev_run(m->loop, 0);
	status = m->exit_status;
out:
	m->srv = herd_server_unref(m->srv);
	free(msg);
	json_decref(init);
	json_decref(settings);
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
