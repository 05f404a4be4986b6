/* SPDX-License-Identifier: MIT */
/*
 * herdd's state as one JSON object, for a reexec (reexec.c): the counters,
 * the event ring, every control connection and every worker record with the
 * fds they hold, and each connection's peer state (bytes read that are not a
 * whole message yet, output not written yet, a message held back by
 * backpressure), so the successor resumes every session where it stood.
 *
 * Times are CLOCK_MONOTONIC, which an exec does not reset, and fd numbers
 * stay the same across execve. Every record is unpacked with its types by
 * one function, used by the check (the probe, and the successor before it
 * takes anything over) and by the load, so a successor that cannot read its
 * predecessor's state fails before it has changed anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "herdd.h"

/*
 * Bumped whenever a record changes incompatibly: a successor refuses a format
 * it does not know (its probe fails and herdd goes on). New fields that may be
 * absent keep the format.
 */
#define STATE_FORMAT "herdd-reexec-1"

static bool save_failed;
/* Why the last record did not unpack, for the check's message. */
static json_error_t unpack_err;

static void
fds_add(struct reexec_fds *f, int fd)
{
	int *grown;

	if (fd < 0)
		return;
	if (f->n == f->cap) {
		grown = realloc(f->fd, (f->cap ? f->cap * 2 : 64) * sizeof(*grown));
		if (!grown) {
			save_failed = true;
			return;
		}
		f->fd = grown;
		f->cap = f->cap ? f->cap * 2 : 64;
	}
	f->fd[f->n++] = fd;
}

/* Bytes as a hex string: peer buffers need not be whole UTF-8 characters. */
static json_t *
hex_json(const char *data, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	char *s = malloc(2 * n + 1);
	json_t *j;

	if (!s)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		s[2 * i] = digits[(unsigned char)data[i] >> 4];
		s[2 * i + 1] = digits[(unsigned char)data[i] & 15];
	}
	j = json_stringn(s, 2 * n);
	free(s);
	return j;
}

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Decodes hex_json()'s string into *out (malloc'd, NULL when empty). Returns 0 or -EINVAL. */
static int
hex_decode(const char *s, char **out, size_t *n)
{
	size_t len = strlen(s);

	*out = NULL;
	*n = len / 2;
	if (len % 2)
		return -EINVAL;
	if (len == 0)
		return 0;
	*out = malloc(*n);
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < *n; i++) {
		int hi = hex_digit(s[2 * i]), lo = hex_digit(s[2 * i + 1]);

		if (hi < 0 || lo < 0) {
			free(*out);
			*out = NULL;
			return -EINVAL;
		}
		(*out)[i] = (char)(hi << 4 | lo);
	}
	return 0;
}

/* ---- connections ---- */

/* Moves the output queue into one buffer (new reference, hex) and queues it back as one chunk. */
static json_t *
outq_save(struct proto_outq *q)
{
	size_t n = q->bytes, got = 0;
	char *buf = malloc(n ? n : 1);
	struct iovec iov[64];
	json_t *j;
	int k;

	if (!buf)
		return NULL;
	while (got < n && (k = proto_outq_peek(q, iov, 64)) > 0) {
		size_t took = 0;

		for (int i = 0; i < k; i++) {
			memcpy(buf + got + took, iov[i].iov_base, iov[i].iov_len);
			took += iov[i].iov_len;
		}
		proto_outq_consume(q, took);
		got += took;
	}
	if (got && proto_outq_push(q, buf, got) < 0)
		save_failed = true;
	j = hex_json(buf, got);
	free(buf);
	return j;
}

static json_t *
peer_save(struct herd__peer *p)
{
	const struct proto_reader *r = &p->reader;

	return json_pack("{s:I, s:o, s:o, s:O*, s:b, s:I, s:[I, I, I], s:I, s:I, s:[I, I, I, I]}",
	    "max_message", (json_int_t)r->max_message, "in",
	    hex_json(r->buf + r->start, r->len - r->start), "out", outq_save(&p->outq), "held",
	    p->held, "paused", p->paused, "max_send", (json_int_t)p->max_send, "hb",
	    (json_int_t)p->hb_interval_ms, (json_int_t)p->hb_timeout_ms,
	    (json_int_t)p->line_timeout_ms, "last_recv", (json_int_t)p->last_recv, "deadline",
	    p->deadline == HERD__PEER_USEC_INFINITY ? (json_int_t)-1 : (json_int_t)p->deadline,
	    "counts", (json_int_t)p->bytes_in, (json_int_t)p->bytes_out, (json_int_t)p->msgs_in,
	    (json_int_t)p->msgs_out);
}

static json_t *
conn_save(struct conn *c, struct reexec_fds *fds)
{
	fds_add(fds, c->peer.fd);
	return json_pack("{s:I, s:i, s:i, s:[i, i, i], s:b, s:i, s:s*, s:b, s:b, s:I, s:s*, s:b,"
	                 " s:i, s:o}",
	    "serial", (json_int_t)c->serial, "fd", c->peer.fd, "kind", (int)c->kind, "cred",
	    (int)c->cred.pid, (int)c->cred.uid, (int)c->cred.gid, "hello", c->hello, "role",
	    (int)c->role, "name", c->name, "subscribed_all", c->subscribed_all, "ev_behind",
	    c->ev_behind, "ev_cursor", (json_int_t)c->ev_cursor, "ev_reason", c->ev_reason,
	    "goodbye", c->goodbye, "peer_worker", (int)c->peer_worker, "peer", peer_save(&c->peer));
}

/* A connection record, unpacked (borrowed from its JSON; in and out decoded, to free). */
struct conn_rec {
	json_int_t serial, max_message, max_send, hb, hb_timeout, line_timeout, last_recv, deadline,
	    ev_cursor, counts[4];
	int fd, kind, pid, uid, gid, hello, role, subscribed_all, ev_behind, goodbye, peer_worker,
	    paused;
	const char *name, *ev_reason;
	json_t *held;
	char *in, *out;
	size_t in_len, out_len;
};

static void
conn_rec_free(struct conn_rec *r)
{
	free(r->in);
	free(r->out);
	r->in = r->out = NULL;
}

static int
conn_unpack(json_t *o, struct conn_rec *r)
{
	const char *in, *out;
	json_t *peer;

	memset(r, 0, sizeof(*r));
	unpack_err.text[0] = '\0';
	if (json_unpack_ex(o, &unpack_err, 0,
	        "{s:I, s:i, s:i, s:[i, i, i], s:b, s:i, s?s, s:b, s:b, s:I, s?s, s:b, s:i, s:o}",
	        "serial", &r->serial, "fd", &r->fd, "kind", &r->kind, "cred", &r->pid, &r->uid,
	        &r->gid, "hello", &r->hello, "role", &r->role, "name", &r->name, "subscribed_all",
	        &r->subscribed_all, "ev_behind", &r->ev_behind, "ev_cursor", &r->ev_cursor,
	        "ev_reason", &r->ev_reason, "goodbye", &r->goodbye, "peer_worker", &r->peer_worker,
	        "peer", &peer) < 0 ||
	    json_unpack_ex(peer, &unpack_err, 0,
	        "{s:I, s:s, s:s, s?o, s:b, s:I, s:[I, I, I], s:I, s:I, s:[I, I, I, I]}",
	        "max_message", &r->max_message, "in", &in, "out", &out, "held", &r->held, "paused",
	        &r->paused, "max_send", &r->max_send, "hb", &r->hb, &r->hb_timeout,
	        &r->line_timeout, "last_recv", &r->last_recv, "deadline", &r->deadline, "counts",
	        &r->counts[0], &r->counts[1], &r->counts[2], &r->counts[3]) < 0 ||
	    r->fd < 0 || r->serial <= 0 || r->max_message <= 0 ||
	    (r->kind != CONN_CONTROL && r->kind != CONN_CHANNEL))
		return -EINVAL;
	if (hex_decode(in, &r->in, &r->in_len) < 0 || hex_decode(out, &r->out, &r->out_len) < 0) {
		conn_rec_free(r);
		return -EINVAL;
	}
	return 0;
}

/* One of events.c's reasons for a gap: the same literal again. */
static const char *
ev_reason_literal(const char *s)
{
	static const char *const known[] = { "since", "instance", "fell_behind" };
	int i = proto_name_find(known, PROTO_LEN(known), s);

	return i < 0 ? NULL : known[i];
}

static void
peer_load(struct herd__peer *p, const struct conn_rec *r)
{
	p->max_send = (size_t)r->max_send;
	herd__peer_set_heartbeat(p, (unsigned)r->hb, (unsigned)r->hb_timeout);
	herd__peer_set_line_timeout(p, (unsigned)r->line_timeout);
	herd__peer_set_deadline(
	    p, r->deadline < 0 ? HERD__PEER_USEC_INFINITY : (uint64_t)r->deadline);
	p->last_recv = (uint64_t)r->last_recv;
	p->bytes_in = (uint64_t)r->counts[0];
	p->bytes_out = (uint64_t)r->counts[1];
	p->msgs_in = (uint64_t)r->counts[2];
	p->msgs_out = (uint64_t)r->counts[3];
	if (r->in_len && proto_reader_feed(&p->reader, r->in, r->in_len) < 0)
		log_warn("reexec: %zu bytes of a connection's input lost", r->in_len);
	if (r->out_len && proto_outq_push(&p->outq, r->out, r->out_len) < 0)
		log_warn("reexec: %zu bytes of a connection's output lost", r->out_len);
	p->held = json_incref(r->held);
	p->paused = r->paused;
}

/* The connection of a record (its fd taken over), not started yet; NULL without memory. */
static struct conn *
conn_load(json_t *o)
{
	struct conn_rec r;
	struct conn *c;

	if (conn_unpack(o, &r) < 0)
		return NULL;
	fcntl(r.fd, F_SETFD, FD_CLOEXEC);
	c = conn_new(r.fd, (enum conn_kind)r.kind,
	    r.kind == CONN_CONTROL ? &dispatch_control_ops : &channel_ops, (size_t)r.max_message);
	if (!c) {
		conn_rec_free(&r);
		return NULL;
	}
	conn_set_serial(c, (uint64_t)r.serial);
	c->cred = (struct ucred){ .pid = r.pid, .uid = (uid_t)r.uid, .gid = (gid_t)r.gid };
	c->hello = r.hello;
	c->role = (enum conn_role)r.role;
	c->name = r.name ? strdup(r.name) : NULL;
	c->subscribed_all = r.subscribed_all;
	c->ev_behind = r.ev_behind;
	c->ev_cursor = (uint64_t)r.ev_cursor;
	c->ev_reason = ev_reason_literal(r.ev_reason);
	c->goodbye = r.goodbye;
	c->peer_worker = r.peer_worker;
	peer_load(&c->peer, &r);
	conn_rec_free(&r);
	return c;
}

/* A control connection: on the list, counted in its uid's account, started. */
static void
control_load(json_t *o)
{
	struct conn *c = conn_load(o);
	bool hello;

	if (!c) {
		log_error("reexec: a control connection could not be taken over");
		return;
	}
	hello = c->hello;
	c->hello = false;
	if (conn_join(c) < 0) {
		log_error("reexec: out of memory taking over connection %llu",
		    (unsigned long long)c->serial);
		conn_unref(c);
		return;
	}
	if (hello)
		conn_said_hello(c);
	conn_start(c);
}

struct conn *
reexec_conn(uint64_t serial)
{
	struct conn *c;

	TAILQ_FOREACH(c, &herdd.conns, link)
		if (c->serial == serial)
			return c;
	return NULL;
}

/* ---- workers ---- */

static json_t *
out_save(const struct output_spec *o)
{
	return json_pack("[i, s?, b, I, I]", (int)o->kind, o->path, o->append,
	    (json_int_t)o->max_bytes, (json_int_t)o->max_files);
}

static json_t *
cap_save(const struct capture *cap, struct reexec_fds *fds)
{
	fds_add(fds, cap->fd);
	return json_pack("{s:i, s:o, s:I, s:o}", "fd", cap->fd, "lines", capture_tail(cap, 0),
	    "dropped", (json_int_t)cap->dropped, "partial",
	    hex_json(cap->partial ? cap->partial : "", cap->partial ? cap->partial_len : 0));
}

static json_t *
limits_save(const struct worker_limits *l)
{
	return json_pack("{s:[I, I, I, I], s:I, s:[b, b, b, b]}", "value", (json_int_t)l->value[0],
	    (json_int_t)l->value[1], (json_int_t)l->value[2], (json_int_t)l->value[3], "period",
	    (json_int_t)l->cpu_period_us, "by_cgroup", l->by_cgroup[0], l->by_cgroup[1],
	    l->by_cgroup[2], l->by_cgroup[3]);
}

static json_int_t
timer_left_ms(const ev_timer *t)
{
	return ev_is_active(t) ? (json_int_t)(ev_timer_remaining(herdd.loop, (ev_timer *)t) * 1000)
	                       : -1;
}

static json_t *
worker_save(struct worker *w, struct reexec_fds *fds)
{
	fds_add(fds, w->pidfd);
	fds_add(fds, w->notify_fd);
	return json_pack("{s:{s:s, s:s*, s:s*, s:s, s:O*, s:s*, s:i, s:s, s:I, s:i},"
	                 " s:[o, o], s:[i, I, I, I, I], s:[i, i, i, i, I, I],"
	                 " s:{s:i, s:i, s:b, s:i, s:i, s:i, s:i, s:i, s:s*, s:i, s:b, s:b, s:i},"
	                 " s:[I, I, I, I, I, I, I, I, I, I, b],"
	                 " s:{s:s*, s:s*, s:s*}, s:[b, b, b], s:o, s:{s:O*, s:O*, s:O*}, s:o, s:o,"
	                 " s:[o, o]}",
	    "ident", "id", w->id, "name", w->name, "pool", w->pool, "path", w->path, "argv",
	    w->argv, "cwd", w->cwd, "umask", (int)w->umask, "socket", w->socket, "incarnation",
	    (json_int_t)w->incarnation, "ready_mode", (int)w->ready_mode, "out",
	    out_save(&w->out[0]), out_save(&w->out[1]), "timing", (int)w->shutdown_on,
	    (json_int_t)w->spawn_timeout_ms, (json_int_t)w->connection_timeout_ms,
	    (json_int_t)w->hb_interval_ms, (json_int_t)w->hb_timeout_ms, "owner", (int)w->uid,
	    (int)w->gid, (int)w->owner_pid, (int)w->owner_gid, (json_int_t)w->owner_serial,
	    (json_int_t)(w->owner ? w->owner->serial : 0), "proc", "pid", (int)w->pid, "pidfd",
	    w->pidfd, "reaped", w->reaped, "state", (int)w->state, "reason", (int)w->reason,
	    "exit_code", w->exit_code, "signal", w->signal, "spawn_errno", w->spawn_errno,
	    "spawn_stage", w->spawn_stage, "backup_reason", (int)w->backup_reason, "in_cgroup",
	    w->in_cgroup, "pid_ns", w->pid_ns, "notify_fd", w->notify_fd, "times",
	    (json_int_t)w->started_ms, (json_int_t)w->ended_ms, (json_int_t)w->started_wall.tv_sec,
	    (json_int_t)w->started_wall.tv_nsec, (json_int_t)w->last_heartbeat_ms,
	    (json_int_t)w->last_cpu_ms, (json_int_t)w->next_check_ms, (json_int_t)w->served,
	    (json_int_t)w->cpu_ms, timer_left_ms(&w->conn_timer), ev_is_active(&w->hb_timer),
	    "text", "message", w->message, "functions", w->functions, "status", w->status, "flags",
	    w->had_connection, w->said_stopping, w->stop_sent, "limits", limits_save(&w->limits),
	    "json", "env", w->env, "init", w->init, "settings", w->settings, "restart",
	    restart_save(w), "channel", w->channel ? conn_save(w->channel, fds) : json_null(),
	    "cap", cap_save(&w->cap[0], fds), cap_save(&w->cap[1], fds));
}

/* A worker record, unpacked (strings and objects borrowed from its JSON). */
struct worker_rec {
	const char *id, *name, *pool, *path, *cwd, *socket, *stage, *message, *functions, *status;
	json_t *argv, *out[2], *limits, *env, *init, *settings, *restart, *channel, *cap[2];
	int umask, ready_mode, shutdown_on, uid, gid, owner_pid, owner_gid, pid, pidfd, reaped,
	    state, reason, exit_code, signal, spawn_errno, backup_reason, in_cgroup, pid_ns,
	    notify_fd, hb_active, had_connection, said_stopping, stop_sent;
	json_int_t incarnation, timing[4], owner_serial, owner, times[10];
};

static int
worker_unpack(json_t *o, struct worker_rec *r)
{
	json_t *ident, *proc, *text, *js;

	memset(r, 0, sizeof(*r));
	unpack_err.text[0] = '\0';
	if (json_unpack_ex(o, &unpack_err, 0,
	        "{s:o, s:[o, o], s:[i, I, I, I, I], s:[i, i, i, i, I, I], s:o,"
	        " s:[I, I, I, I, I, I, I, I, I, I, b], s:o, s:[b, b, b], s:o, s:o, s:o, s:o,"
	        " s:[o, o]}",
	        "ident", &ident, "out", &r->out[0], &r->out[1], "timing", &r->shutdown_on,
	        &r->timing[0], &r->timing[1], &r->timing[2], &r->timing[3], "owner", &r->uid,
	        &r->gid, &r->owner_pid, &r->owner_gid, &r->owner_serial, &r->owner, "proc", &proc,
	        "times", &r->times[0], &r->times[1], &r->times[2], &r->times[3], &r->times[4],
	        &r->times[5], &r->times[6], &r->times[7], &r->times[8], &r->times[9], &r->hb_active,
	        "text", &text, "flags", &r->had_connection, &r->said_stopping, &r->stop_sent,
	        "limits", &r->limits, "json", &js, "restart", &r->restart, "channel", &r->channel,
	        "cap", &r->cap[0], &r->cap[1]) < 0 ||
	    json_unpack_ex(ident, &unpack_err, 0,
	        "{s:s, s?s, s?s, s:s, s?o, s?s, s:i, s:s, s:I, s:i}", "id", &r->id, "name",
	        &r->name, "pool", &r->pool, "path", &r->path, "argv", &r->argv, "cwd", &r->cwd,
	        "umask", &r->umask, "socket", &r->socket, "incarnation", &r->incarnation,
	        "ready_mode", &r->ready_mode) < 0 ||
	    json_unpack_ex(proc, &unpack_err, 0,
	        "{s:i, s:i, s:b, s:i, s:i, s:i, s:i, s:i, s?s, s:i, s:b, s:b, s:i}", "pid", &r->pid,
	        "pidfd", &r->pidfd, "reaped", &r->reaped, "state", &r->state, "reason", &r->reason,
	        "exit_code", &r->exit_code, "signal", &r->signal, "spawn_errno", &r->spawn_errno,
	        "spawn_stage", &r->stage, "backup_reason", &r->backup_reason, "in_cgroup",
	        &r->in_cgroup, "pid_ns", &r->pid_ns, "notify_fd", &r->notify_fd) < 0 ||
	    json_unpack_ex(text, &unpack_err, 0, "{s?s, s?s, s?s}", "message", &r->message,
	        "functions", &r->functions, "status", &r->status) < 0 ||
	    json_unpack_ex(js, &unpack_err, 0, "{s?o, s?o, s?o}", "env", &r->env, "init", &r->init,
	        "settings", &r->settings) < 0)
		return -EINVAL;
	if (r->state < 0 || r->state >= PROTO_STATE_COUNT || strlen(r->id) >= 24 ||
	    strlen(r->socket) >= 108 || (!r->reaped && r->pid <= 0))
		return -EINVAL;
	return 0;
}

/* spawn.c's and supervisor.c's stage literals: the record needs a string that lives on. */
static const char *
stage_literal(const char *s)
{
	static const char *const known[] = { "prepare", "socketpair", "socket", "fork", "signals",
		"setsid", "setgroups", "setgid", "setuid", "pdeathsig", "stdin", "stdout", "stderr",
		"fds", "chdir", "exec", "limits", "cgroup", "rlimits" };
	int i;

	if (!s)
		return NULL;
	i = proto_name_find(known, PROTO_LEN(known), s);
	return i < 0 ? "prepare" : known[i];
}

static char *
dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static void
out_load(struct output_spec *o, json_t *j)
{
	int kind = OUT_NULL, append = 0;
	const char *path = NULL;
	json_int_t max_bytes = 0, max_files = 0;

	json_t *pj = NULL;

	json_unpack(j, "[i, o, b, I, I]", &kind, &pj, &append, &max_bytes, &max_files);
	path = json_string_value(pj);
	o->kind = (enum output_kind)kind;
	o->path = dup_or_null(path);
	o->append = append;
	o->max_bytes = (uint64_t)max_bytes;
	o->max_files = (unsigned)max_files;
}

static void
limits_load(struct worker_limits *l, json_t *j)
{
	json_int_t v[LIMIT_COUNT] = { 0 }, period = 0;
	int by[LIMIT_COUNT] = { 0 };

	json_unpack(j, "{s:[I, I, I, I], s:I, s:[b, b, b, b]}", "value", &v[0], &v[1], &v[2], &v[3],
	    "period", &period, "by_cgroup", &by[0], &by[1], &by[2], &by[3]);
	for (int i = 0; i < LIMIT_COUNT; i++) {
		l->value[i] = v[i];
		l->by_cgroup[i] = by[i];
	}
	l->cpu_period_us = period;
}

static void
cap_load(struct capture *cap, json_t *j)
{
	json_int_t dropped = 0;
	const char *hex = "";
	json_t *lines = NULL;
	char *partial;
	size_t len;
	int fd = -1;

	json_unpack(j, "{s:i, s:o, s:I, s:s}", "fd", &fd, "lines", &lines, "dropped", &dropped,
	    "partial", &hex);
	if (hex_decode(hex, &partial, &len) < 0)
		len = 0;
	capture_restore(cap, lines, (uint64_t)dropped, partial, len);
	free(partial);
	if (fd >= 0) {
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		capture_start(cap, fd);
	}
}

/* The process side: pidfd, channel, captured output, notify socket, timers. */
static void
worker_load_process(struct worker *w, const struct worker_rec *r)
{
	if (r->pidfd >= 0)
		fcntl(r->pidfd, F_SETFD, FD_CLOEXEC);
	w->pidfd = r->pidfd;
	if (r->notify_fd >= 0) {
		fcntl(r->notify_fd, F_SETFD, FD_CLOEXEC);
		w->notify_fd = r->notify_fd;
		wnotify_start(w);
	}
	cap_load(&w->cap[0], r->cap[0]);
	cap_load(&w->cap[1], r->cap[1]);
	if (!json_is_null(r->channel)) {
		w->channel = conn_load(r->channel);
		if (w->channel) {
			w->channel->worker = w;
			conn_start(w->channel);
		} else {
			log_error("reexec: worker %s: its channel could not be taken over", w->id);
		}
	}
	if (!w->reaped)
		sup_pid_add(w);
	if (r->hb_active) {
		sup_heartbeat_start(w);
		w->last_heartbeat_ms = r->times[4];
	}
	if (r->times[9] >= 0) {
		ev_timer_set(&w->conn_timer, (double)r->times[9] / 1000.0, 0.);
		ev_timer_start(herdd.loop, &w->conn_timer);
	}
}

static void
worker_load(json_t *o)
{
	struct worker_rec r;
	struct worker *w;

	if (worker_unpack(o, &r) < 0 || !(w = sup_worker_new())) {
		log_error("reexec: a worker record could not be taken over");
		return;
	}
	snprintf(w->id, sizeof(w->id), "%s", r.id);
	snprintf(w->socket, sizeof(w->socket), "%s", r.socket);
	w->name = dup_or_null(r.name);
	w->pool = dup_or_null(r.pool);
	w->path = strdup(r.path);
	w->argv = json_incref(r.argv);
	w->cwd = dup_or_null(r.cwd);
	w->umask = (unsigned)r.umask;
	w->incarnation = (unsigned)r.incarnation;
	w->ready_mode = (enum ready_mode)r.ready_mode;
	out_load(&w->out[0], r.out[0]);
	out_load(&w->out[1], r.out[1]);
	w->shutdown_on = (enum proto_shutdown_on)r.shutdown_on;
	w->spawn_timeout_ms = (unsigned)r.timing[0];
	w->connection_timeout_ms = (unsigned)r.timing[1];
	w->hb_interval_ms = (unsigned)r.timing[2];
	w->hb_timeout_ms = (unsigned)r.timing[3];
	w->uid = (uid_t)r.uid;
	w->gid = (gid_t)r.gid;
	w->owner_pid = r.owner_pid;
	w->owner_gid = (gid_t)r.owner_gid;
	w->owner_serial = (uint64_t)r.owner_serial;
	w->pid = r.pid;
	w->reaped = r.reaped;
	w->state = (enum proto_state)r.state;
	w->reason = (enum proto_reason)r.reason;
	w->exit_code = r.exit_code;
	w->signal = r.signal;
	w->spawn_errno = r.spawn_errno;
	w->spawn_stage = stage_literal(r.stage);
	w->backup_reason = (enum proto_reason)r.backup_reason;
	w->in_cgroup = r.in_cgroup;
	w->pid_ns = r.pid_ns;
	w->started_ms = r.times[0];
	w->ended_ms = r.times[1];
	w->started_wall.tv_sec = (time_t)r.times[2];
	w->started_wall.tv_nsec = (long)r.times[3];
	w->last_heartbeat_ms = r.times[4];
	w->last_cpu_ms = (uint64_t)r.times[5];
	w->next_check_ms = r.times[6];
	w->served = (uint64_t)r.times[7];
	w->cpu_ms = (uint64_t)r.times[8];
	w->message = dup_or_null(r.message);
	w->functions = dup_or_null(r.functions);
	w->status = dup_or_null(r.status);
	w->had_connection = r.had_connection;
	w->said_stopping = r.said_stopping;
	w->stop_sent = r.stop_sent;
	limits_load(&w->limits, r.limits);
	w->env = json_incref(r.env);
	w->init = json_incref(r.init);
	w->settings = json_incref(r.settings);
	sup_link(w);
	if (restart_load(w, r.restart) < 0)
		log_error("reexec: worker %s: its restart policy could not be taken over", w->id);
	if (r.owner && (w->owner = reexec_conn((uint64_t)r.owner))) {
		conn_ref(w->owner);
		if (!w->reaped)
			w->owner->nworkers++;
	}
	worker_load_process(w, &r);
}

/* ---- the whole state ---- */

/* Every counter of herdd.stats, in order: they are all uint64_t. */
#define NSTATS (sizeof(struct herdd_stats) / sizeof(uint64_t))

json_t *
reexec_state_save(struct reexec_fds *fds)
{
	json_t *conns = json_array(), *workers = json_array(), *stats = json_array(), *state;
	const uint64_t *st = (const uint64_t *)&herdd.stats;
	struct worker *w;
	struct conn *c;

	_Static_assert(sizeof(struct herdd_stats) % sizeof(uint64_t) == 0, "stats are uint64_t");
	save_failed = false;
	fds_add(fds, herdd.listen_fd);
	fds_add(fds, herdd.lock_fd);
	TAILQ_FOREACH(c, &herdd.conns, link) {
		/* A session that ended is only flushing: it ends with this herdd. */
		if (!c->peer.closed && json_array_append_new(conns, conn_save(c, fds)) < 0)
			save_failed = true;
	}
	TAILQ_FOREACH(w, &herdd.workers, link) {
		if (json_array_append_new(workers, worker_save(w, fds)) < 0)
			save_failed = true;
	}
	for (size_t i = 0; stats && i < NSTATS; i++)
		json_array_append_new(stats, json_integer((json_int_t)st[i]));
	/* No lock under socket activation: herdd binds nothing of its own there. */
	state = json_pack("{s:s, s:{s:s, s:s?, s:s, s:i, s:i, s:b, s:b}, s:I, s:[I, I], s:o, s:o,"
	                  " s:o, s:o, s:o}",
	    "format", STATE_FORMAT, "server", "socket", herdd.cfg.socket_path, "lock",
	    herdd.lock_path, "workers_dir", herdd.workers_dir, "listen_fd", herdd.listen_fd,
	    "lock_fd", herdd.lock_fd, "activated", herdd.activated, "own_socket", herdd.own_socket,
	    "started_ms", (json_int_t)herdd.started_ms, "nofile", (json_int_t)herdd.nofile.rlim_cur,
	    (json_int_t)herdd.nofile.rlim_max, "stats", stats, "events", events_save(), "cgroup",
	    cgroup_save(), "connections", conns, "workers", workers);
	if (save_failed || !state) {
		json_decref(state);
		return NULL;
	}
	return state;
}

int
reexec_state_check(json_t *state, char *why, size_t len)
{
	const char *format = NULL;
	json_t *conns = NULL, *workers = NULL, *o, *server, *stats, *events, *cg;
	struct worker_rec wr;
	struct conn_rec cr;
	int fd, flag;
	size_t i;

	if (json_unpack(state, "{s:s, s:o, s:o, s:o, s:o, s:o, s:o}", "format", &format, "server",
	        &server, "stats", &stats, "events", &events, "cgroup", &cg, "connections", &conns,
	        "workers", &workers) < 0 ||
	    strcmp(format, STATE_FORMAT) != 0) {
		snprintf(why, len, "not a %s state (format %s)", STATE_FORMAT,
		    format ? format : "missing");
		return -EINVAL;
	}
	if (json_unpack(server, "{s:s, s:o, s:s, s:i, s:i, s:b, s:b}", "socket", &format, "lock",
	        &o, "workers_dir", &format, "listen_fd", &fd, "lock_fd", &fd, "activated", &flag,
	        "own_socket", &flag) < 0 ||
	    !(json_is_string(o) || json_is_null(o)) || !json_is_array(stats) ||
	    !json_is_array(conns) || !json_is_array(workers)) {
		snprintf(why, len, "the server or counters do not fit this herdd");
		return -EINVAL;
	}
	json_array_foreach(conns, i, o) {
		if (conn_unpack(o, &cr) < 0) {
			snprintf(
			    why, len, "connection record %zu does not fit: %s", i, unpack_err.text);
			return -EINVAL;
		}
		conn_rec_free(&cr);
	}
	json_array_foreach(workers, i, o) {
		if (worker_unpack(o, &wr) < 0 ||
		    (!json_is_null(wr.channel) &&
		        (conn_unpack(wr.channel, &cr) < 0 || (conn_rec_free(&cr), false)))) {
			snprintf(
			    why, len, "worker record %zu does not fit: %s", i, unpack_err.text);
			return -EINVAL;
		}
	}
	return 0;
}

void
reexec_state_load(json_t *state)
{
	json_t *conns = json_object_get(state, "connections"),
	       *workers = json_object_get(state, "workers"),
	       *stats = json_object_get(state, "stats"), *o;
	uint64_t *st = (uint64_t *)&herdd.stats;
	struct conn *c, *next;
	struct worker *w;
	size_t i;

	/* By position: a binary with counters added at the end starts those at 0. */
	json_array_foreach(stats, i, o)
		if (i < NSTATS)
			st[i] = (uint64_t)json_integer_value(o);
	herdd.started_ms = json_integer_value(json_object_get(state, "started_ms"));
	/* What workers get is the limit the first image started with, not the one it raised. */
	herdd.nofile.rlim_cur =
	    (rlim_t)json_integer_value(json_array_get(json_object_get(state, "nofile"), 0));
	herdd.nofile.rlim_max =
	    (rlim_t)json_integer_value(json_array_get(json_object_get(state, "nofile"), 1));
	if (events_load(json_object_get(state, "events")) < 0)
		log_error("reexec: the event ring could not be taken over; seqs start again");
	json_array_foreach(conns, i, o)
		control_load(o);
	json_array_foreach(workers, i, o)
		worker_load(o);
	/*
	 * Input read but not handled, and a held message, are handled now as the
	 * loop would; processing may end a session, which unlinks it.
	 */
	for (c = TAILQ_FIRST(&herdd.conns); c; c = next) {
		bool listed;

		next = TAILQ_NEXT(c, link);
		if (next)
			conn_ref(next);
		herd__peer_process(&c->peer);
		/* A subscriber that was behind with nothing left to drain is fed now. */
		events_drained(c);
		listed = next && next->on_list;
		conn_unref(next);
		if (!listed)
			break;
	}
	TAILQ_FOREACH(w, &herdd.workers, link)
		if (w->channel)
			herd__peer_process(&w->channel->peer);
}
