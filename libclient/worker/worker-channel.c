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
 *
 * The channel is an ordinary client connection (client/) over the inherited
 * fd, attached to the worker's loop: the engine reads, writes, frames, sends
 * the heartbeats and matches replies; this file is the conversation only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/client-internal.h"
#include "worker/worker-internal.h"

/* The channel carries small control messages only. */
#define CH_MAX_MESSAGE (16u * 1024u * 1024u)
#define CH_MAX_OUTPUT  (1024u * 1024u)

/* Calls method(params, stolen) on the channel, without a deadline; done may be NULL. */
static int
ch_call(struct herd__main *m, const char *method, json_t *params, herd_call_cb done)
{
	int r = params ? herd__call_start(m->ch, method, params, HERD__USEC_INFINITY, done, m, NULL)
	               : -ENOMEM;

	json_decref(params);
	return r;
}

/* Reports a start-up failure to herdd and exits: herdd gets the message as init_failed. */
static void __attribute__((noreturn)) ch_init_failed(struct herd__main *m, const char *message)
{
	herd_log(HERD_LOG_ERR, "init failed: %s", message);
	ch_call(m, "init_failed",
	    json_pack("{s:o}", "message", proto_text_string(message, PROTO_FAILURE_TEXT_MAX)),
	    NULL);
	herd__peer_flush(&m->ch->peer, 1000);
	herd__main_exit_now(1);
}

/* The heartbeat's params: how many calls the worker served. */
static json_t *
ch_heartbeat_params(herd_conn *conn, void *userdata)
{
	struct herd__main *m = userdata;

	return json_pack("{s:I}", "served", m->srv ? (json_int_t)m->srv->served : 0);
}

static void ch_ready_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata);

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

	herd__conn_notify(m->ch, "connection", json_pack("{s:i}", "open", srv->n_conns));
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
	/*
	 * Followed from now on, not from herdd's answer to ready: a client may
	 * come and go before that answer is read, and its end is still ours.
	 */
	if (m->close_on_disconnect) {
		m->srv->on_conn_change = ch_conn_change;
		m->srv->on_conn_change_data = m;
	}
	ch_call(m, "ready", json_pack("{s:o}", "functions", herd__functions_json(m->srv)),
	    ch_ready_done);
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
	if (m->stopping)
		return;
	herd_server_on_shutdown(m->srv, main_shutdown_cb, m);
	herd__peer_set_heartbeat(&m->ch->peer, m->heartbeat_interval_ms, 0);
	/* A client that came (and maybe went) already was seen by ch_conn_change(). */
	if (m->close_on_disconnect && m->srv->n_accepted == 0 && m->connection_timeout_ms > 0) {
		ev_timer_init(
		    &m->conn_timeout, ch_conn_timeout_cb, m->connection_timeout_ms / 1000.0, 0.0);
		m->conn_timeout.data = m;
		ev_timer_start(m->loop, &m->conn_timeout);
	}
}

/*
 * herdd's answer to hello or ready; a refusal of either ends the worker. A
 * call failed by the channel's close is the close's business (ch_closed(), or
 * our own exit).
 */
static bool
ch_refused(herd_conn *conn, int r, herd_error *error)
{
	if (r >= 0)
		return false;
	if (conn->state == CONN_CLOSED)
		return true;
	herd_log(HERD_LOG_ERR, "herdd refused a message: %s",
	    error ? herd_error_message(error) : strerror(-r));
	herd__main_exit_now(1);
}

static void
ch_ready_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	if (!ch_refused(conn, r, error))
		ch_ready_result(userdata);
}

static void
ch_hello_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	if (!ch_refused(conn, r, error))
		ch_hello_result(userdata, result);
}

/* herdd's notifications: shutdown is the only one. */
static void
ch_notify(herd_conn *conn, const char *method, json_t *params, void *userdata)
{
	if (strcmp(method, "shutdown") == 0) {
		herd_log(HERD_LOG_INFO, "herdd asked us to stop");
		herd__main_stop(userdata, 0);
	}
}

/* herdd is gone (or broke the channel): nobody would reap or supervise us. */
static void
ch_closed(herd_conn *conn, int reason, herd_error *err, void *userdata)
{
	herd_log(HERD_LOG_ERR, "herdd's channel: %s; exiting", herd_error_message(err));
	herd__main_exit_now(1);
}

int
herd__channel_start(struct herd__main *m, int fd)
{
	struct herd__settings s;
	int fl;

	/* Programs the worker runs must not inherit herdd's channel. */
	unsetenv("HERD_WORKER_ID");
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || (fl = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		fprintf(stderr, "herd channel fd %d: %s\n", fd, strerror(errno));
		return -errno;
	}
	/* herdd sends no heartbeats here: it watches the worker's CPU time instead. */
	herd__settings_defaults(&s);
	s.max_message_size = CH_MAX_MESSAGE;
	s.heartbeat_interval_ms = s.heartbeat_timeout_ms = 0;
	m->ch = herd__conn_new(fd, &s);
	if (!m->ch)
		return -ENOMEM;
	m->ch->peer.outq.cap = CH_MAX_OUTPUT;
	m->ch->state = CONN_OPEN;
	m->ch->next_id = 1; /* herdd sees the ids it always saw: hello is 1 */
	m->ch->notify_fn = ch_notify;
	m->ch->heartbeat_fn = ch_heartbeat_params;
	m->ch->notify_userdata = m;
	herd_conn_on_close(m->ch, ch_closed, m);
	herd_conn_attach_ev(m->ch, m->loop);
	return ch_call(m, "hello",
	    json_pack("{s:i, s:s, s:I}", "version", HERD_PROTOCOL_VERSION, "role", "worker", "pid",
	        (json_int_t)getpid()),
	    ch_hello_done);
}

void
herd__channel_stop(struct herd__main *m)
{
	if (!m->ch || !m->ch->peer.loop)
		return;
	/* No more heartbeats or reading; what is queued (a last "connection" notice) still goes out. */
	herd__peer_set_heartbeat(&m->ch->peer, 0, 0);
	herd__peer_flush(&m->ch->peer, 200);
	herd__peer_detach_ev(&m->ch->peer);
}

void
herd__channel_free(struct herd__main *m)
{
	if (!m->ch)
		return;
	herd__channel_stop(m);
	herd_conn_on_close(m->ch, NULL, NULL);
	m->ch = herd_conn_unref(m->ch);
}

void
herd__channel_send_failure(struct herd__main *m, const char *message)
{
	if (!m->ch || m->ch->state == CONN_CLOSED)
		return;
	herd__conn_notify(m->ch, "failure",
	    json_pack("{s:o}", "message", proto_text_string(message, PROTO_FAILURE_TEXT_MAX)));
	herd__peer_flush(&m->ch->peer, 1000);
}
