/* SPDX-License-Identifier: MIT */
/*
 * The worker's side of herdd's private channel (PROTOCOL.md section 5): a
 * socketpair on fd 3 speaking the same JSON lines.
 *
 *   worker -> herdd  hello {version, role: "worker", pid}
 *   herdd  -> worker {id, name, socket, init, settings, shutdown_on, ...}
 *   (worker-state init, bind, listen)
 *   worker -> herdd  ready {functions}         or  init_failed {message}, exit 1
 *   worker -> herdd  heartbeat {served}        every heartbeat_interval_ms
 *   worker -> herdd  connection {open}         shutdown_on connection_closed
 *   worker -> herdd  failure {message}         herd_worker_fail(), exit 1
 *   herdd  -> worker shutdown {}               graceful stop
 *   EOF from herdd                              exit at once: nobody supervises us
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker-internal.h"

/* The channel carries small control messages only. */
#define CH_MAX_MESSAGE (16u * 1024u * 1024u)
#define CH_MAX_OUTPUT  (1024u * 1024u)

/* Writes everything queued, waiting up to timeout_ms. Returns 0 or -errno. */
static int
ch_flush(struct herd__main *m, int timeout_ms)
{
	for (;;) {
		struct pollfd p = { .fd = m->ch_fd, .events = POLLOUT };
		int r = herd__outq_write(&m->ch_outq, m->ch_fd, NULL);

		if (r != -EAGAIN && r != -EWOULDBLOCK)
			return r;
		if (timeout_ms <= 0)
			return -ETIMEDOUT;
		if (poll(&p, 1, 10) < 0 && errno != EINTR)
			return -errno;
		timeout_ms -= 10;
	}
}

/* Queues msg (stolen). */
static int
ch_send(struct herd__main *m, json_t *msg)
{
	int r;

	if (!msg)
		return -ENOMEM;
	if (m->ch_fd < 0) {
		json_decref(msg);
		return -ENOTCONN;
	}
	r = proto_outq_push_json(&m->ch_outq, msg, CH_MAX_MESSAGE);
	json_decref(msg);
	if (r < 0 || ev_is_active(&m->ch_wio))
		return r;
	/*
	 * Written at once: a loop iteration only to learn that the socket is
	 * writable would delay hello and ready, which herdd and a master wait
	 * for. What is left, after EAGAIN or an error, goes to the write
	 * watcher, which also ends the worker on an error as it always did.
	 */
	herd__outq_write(&m->ch_outq, m->ch_fd, NULL);
	if (!proto_outq_empty(&m->ch_outq))
		ev_io_start(m->loop, &m->ch_wio);
	return 0;
}

static int64_t
ch_request(struct herd__main *m, const char *method, json_t *params)
{
	int64_t id = ++m->ch_next_id;

	return ch_send(m, proto_request_int(id, method, params)) < 0 ? -1 : id;
}

/* Reports a start-up failure to herdd and exits: herdd gets the message as init_failed. */
static void __attribute__((noreturn)) ch_init_failed(struct herd__main *m, const char *message)
{
	herd_log(HERD_LOG_ERR, "init failed: %s", message);
	ch_request(m, "init_failed",
	    json_pack("{s:o}", "message", proto_text_string(message, PROTO_FAILURE_TEXT_MAX)));
	ch_flush(m, 1000);
	herd__main_exit_now(1);
}

static void
ch_heartbeat_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct herd__main *m = w->data;
	json_int_t served = m->srv ? (json_int_t)m->srv->served : 0;

	ch_send(m, proto_notification("heartbeat", json_pack("{s:I}", "served", served)));
}

static void
ch_conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct herd__main *m = w->data;

	herd_log(HERD_LOG_ERR, "no client connected within %u ms; shutting down",
	    m->connection_timeout_ms);
	herd__main_stop(m, 1);
}

/* shutdown_on connection_closed: the first connection is the only one, and its end is ours. */
static void
ch_conn_change(struct herd_server *srv, bool opened, void *userdata)
{
	struct herd__main *m = userdata;

	ch_send(m, proto_notification("connection", json_pack("{s:i}", "open", srv->n_conns)));
	if (opened) {
		ev_timer_stop(m->loop, &m->conn_timeout);
		herd__server_stop_accepting(srv);
	} else if (srv->n_conns == 0) {
		herd_log(HERD_LOG_INFO, "the client connection closed; shutting down");
		herd__main_stop(m, 0);
	}
}

/* herdd answered hello: initialise, bind, and tell herdd we are ready. */
static void
ch_hello_result(struct herd__main *m, json_t *result)
{
	const char *id = NULL, *name = NULL, *socket_path = NULL, *shutdown_on = NULL;
	json_t *init = NULL, *settings = NULL;
	json_int_t conn_timeout = 0, hb_interval = 0;
	json_error_t jerr;
	char *msg = NULL, text[512];
	int r;

	/* Not strict: a newer herdd may say more than we know. */
	if (json_unpack_ex(result, &jerr, 0, "{s?:s, s?:s, s:s, s?:o, s?:o, s?:s, s?:I, s?:I}",
	        "id", &id, "name", &name, "socket", &socket_path, "init", &init, "settings",
	        &settings, "shutdown_on", &shutdown_on, "connection_timeout_ms", &conn_timeout,
	        "heartbeat_interval_ms", &hb_interval) < 0) {
		proto_text_format(
		    text, sizeof(text), "herdd's hello result is not understood: %s", jerr.text);
		ch_init_failed(m, text);
	}
	if (json_is_null(settings))
		settings = NULL;
	r = herd__server_new(m->loop, m->type, init, settings, &m->srv, &msg);
	if (r < 0) {
		proto_text_format(text, sizeof(text), "%s", msg ? msg : strerror(-r));
		free(msg);
		ch_init_failed(m, text);
	}
	if (id)
		m->srv->worker_id = strdup(id);
	r = herd__server_listen(m->srv, socket_path);
	if (r < 0) {
		proto_text_format(
		    text, sizeof(text), "cannot listen on %s: %s", socket_path, strerror(-r));
		ch_init_failed(m, text);
	}
	herd_server_on_shutdown(m->srv, NULL, NULL);
	m->heartbeat_interval_ms = hb_interval > 0 ? (unsigned)hb_interval : 0;
	m->connection_timeout_ms =
	    conn_timeout > 0 ? (unsigned)conn_timeout : m->srv->settings.connection_timeout_ms;
	m->close_on_disconnect =
	    proto_shutdown_on_from_name(shutdown_on) == PROTO_SHUTDOWN_CONNECTION_CLOSED;
	m->ch_ready_id =
	    ch_request(m, "ready", json_pack("{s:o}", "functions", herd__functions_json(m->srv)));
}

static void
main_shutdown_cb(herd_server *srv, void *userdata)
{
	herd__main_stop(userdata, 0);
}

/* herdd accepted ready: we serve from now on. */
static void
ch_ready_result(struct herd__main *m)
{
	herd_server_on_shutdown(m->srv, main_shutdown_cb, m);
	if (m->heartbeat_interval_ms > 0) {
		double s = m->heartbeat_interval_ms / 1000.0;

		ev_timer_init(&m->ch_heartbeat, ch_heartbeat_cb, s, s);
		m->ch_heartbeat.data = m;
		ev_timer_start(m->loop, &m->ch_heartbeat);
	}
	if (m->close_on_disconnect) {
		m->srv->on_conn_change = ch_conn_change;
		m->srv->on_conn_change_data = m;
		if (m->srv->n_conns > 0) {
			/* A client was faster than herdd's answer. */
			ch_conn_change(m->srv, true, m);
		} else if (m->connection_timeout_ms > 0) {
			ev_timer_init(&m->conn_timeout, ch_conn_timeout_cb,
			    m->connection_timeout_ms / 1000.0, 0.0);
			m->conn_timeout.data = m;
			ev_timer_start(m->loop, &m->conn_timeout);
		}
	}
}

static void
ch_message(struct herd__main *m, json_t *msg)
{
	struct proto_msg pm;
	struct proto_error err;
	json_int_t id;

	if (proto_msg_parse(msg, &pm, &err) < 0) {
		herd_log(HERD_LOG_WARNING, "herdd sent an invalid message: %s", err.text);
		return;
	}
	switch (pm.kind) {
	case PROTO_RESULT:
	case PROTO_ERROR:
		id = json_is_integer(pm.id) ? json_integer_value(pm.id) : -1;
		if (pm.kind == PROTO_ERROR) {
			herd_log(HERD_LOG_ERR, "herdd refused a message: %s", pm.error_message);
			if (id == m->ch_hello_id || id == m->ch_ready_id)
				herd__main_exit_now(1);
			return;
		}
		if (id == m->ch_hello_id)
			ch_hello_result(m, pm.result);
		else if (id == m->ch_ready_id)
			ch_ready_result(m);
		return;
	case PROTO_NOTIFICATION:
		if (strcmp(pm.method, "shutdown") == 0) {
			herd_log(HERD_LOG_INFO, "herdd asked us to stop");
			herd__main_stop(m, 0);
		}
		return;
	case PROTO_REQUEST:
		ch_send(m,
		    proto_errorf(
		        pm.id, HERD_E_METHOD_NOT_FOUND, "a worker serves no %s", pm.method));
		return;
	}
}

static void
ch_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd__main *m = w->data;
	struct proto_error err;
	char buf[16384];
	json_t *msg;
	ssize_t n;
	int r;

	n = read(m->ch_fd, buf, sizeof(buf));
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		/* herdd is gone: nobody would reap or supervise us. */
		herd_log(HERD_LOG_ERR, "herdd closed the channel; exiting");
		herd__main_exit_now(1);
	}
	if (proto_reader_feed(&m->ch_reader, buf, (size_t)n) < 0)
		herd__main_exit_now(1);
	while (
	    ev_is_active(&m->ch_rio) && (r = proto_reader_next(&m->ch_reader, &msg, &err)) != 0) {
		if (r < 0) {
			herd_log(HERD_LOG_ERR, "herdd's channel is broken: %s", err.text);
			herd__main_exit_now(1);
		}
		ch_message(m, msg);
		json_decref(msg);
	}
}

static void
ch_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct herd__main *m = w->data;
	int r = herd__outq_write(&m->ch_outq, m->ch_fd, NULL);

	if (r < 0 && r != -EAGAIN && r != -EWOULDBLOCK) {
		herd_log(HERD_LOG_ERR, "herdd's channel: %s; exiting", strerror(-r));
		herd__main_exit_now(1);
	}
	if (proto_outq_empty(&m->ch_outq))
		ev_io_stop(loop, w);
}

int
herd__channel_start(struct herd__main *m, int fd)
{
	int fl;

	/* Programs the worker runs must not inherit herdd's channel. */
	unsetenv("HERD_WORKER_ID");
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || (fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		fprintf(stderr, "herd channel fd %d: %s\n", fd, strerror(errno));
		return -errno;
	}
	m->ch_fd = fd;
	proto_reader_init(&m->ch_reader, CH_MAX_MESSAGE, HERD_MAX_DEPTH);
	proto_outq_init(&m->ch_outq, CH_MAX_OUTPUT);
	ev_io_init(&m->ch_rio, ch_read_cb, fd, EV_READ);
	ev_io_init(&m->ch_wio, ch_write_cb, fd, EV_WRITE);
	ev_init(&m->ch_heartbeat, NULL);
	m->ch_rio.data = m->ch_wio.data = m;
	ev_io_start(m->loop, &m->ch_rio);
	m->ch_hello_id = ch_request(m, "hello",
	    json_pack("{s:i, s:s, s:I}", "version", HERD_PROTOCOL_VERSION, "role", "worker", "pid",
	        (json_int_t)getpid()));
	return m->ch_hello_id < 0 ? -ENOMEM : 0;
}

void
herd__channel_stop(struct herd__main *m)
{
	if (m->ch_fd < 0)
		return;
	ev_io_stop(m->loop, &m->ch_rio);
	ev_timer_stop(m->loop, &m->ch_heartbeat);
	/* What is queued (a last "connection" notice) still goes out. */
	ch_flush(m, 200);
	ev_io_stop(m->loop, &m->ch_wio);
}

void
herd__channel_free(struct herd__main *m)
{
	if (m->ch_fd < 0)
		return;
	herd__channel_stop(m);
	proto_reader_free(&m->ch_reader);
	proto_outq_free(&m->ch_outq);
	close(m->ch_fd);
	m->ch_fd = -1;
}

void
herd__channel_send_failure(struct herd__main *m, const char *message)
{
	if (m->ch_fd < 0)
		return;
	ch_send(m,
	    proto_notification("failure",
	        json_pack("{s:o}", "message", proto_text_string(message, PROTO_FAILURE_TEXT_MAX))));
	ch_flush(m, 1000);
}
