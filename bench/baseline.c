/* SPDX-License-Identifier: MIT */
/*
 * Baselines for herd's benchmarks: what the machine does without herd, measured
 * in the same run so herd's figures can be reported as ratios.
 *
 *   baseline pingpong raw|json N         ping-pong of a small JSON-RPC line
 *   baseline pipeline raw|json N INFLIGHT
 *   baseline echo-server N CLIENTS INFLIGHT  libev JSON echo server
 *   baseline bulk BYTES                  bulk write over a socketpair
 *   baseline items raw|json N SIZE       N stream-item lines (herd's own bytes) over a
 *                                        socketpair: written in bulk and counted, or
 *                                        encoded and parsed one by one with jansson
 *   baseline spawn N EXE [ARGS...]       fork+exec EXE until it answers on fd 3
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "stats.h"

static const char small_msg[] =
    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"x\":1}}\n";

/* A blocking line reader over one fd; lines up to 256 KiB (stream items of 64 KiB fit). */
struct lines {
	int fd;
	char buf[1 << 18];
	size_t start, len;
};

static void
die(const char *what)
{
	perror(what);
	exit(1);
}

/* Returns a pointer to the next line (without '\n', NUL-terminated) or NULL at EOF. */
static char *
lines_next(struct lines *l, size_t *ret_len)
{
	for (;;) {
		char *nl = memchr(l->buf + l->start, '\n', l->len - l->start);
		ssize_t n;

		if (nl) {
			char *line = l->buf + l->start;

			*nl = '\0';
			*ret_len = (size_t)(nl - line);
			l->start = (size_t)(nl - l->buf) + 1;
			return line;
		}
		if (l->start > 0) {
			memmove(l->buf, l->buf + l->start, l->len - l->start);
			l->len -= l->start;
			l->start = 0;
		}
		if (l->len == sizeof(l->buf))
			return NULL;
		n = read(l->fd, l->buf + l->len, sizeof(l->buf) - l->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return NULL;
		l->len += (size_t)n;
	}
}

static void
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("write");
		p += w;
		n -= (size_t)w;
	}
}

/* Re-encodes a line through jansson, as a JSON-speaking peer would. */
static char *
json_roundtrip(const char *line, size_t len, size_t *ret_len)
{
	json_error_t err;
	json_t *v = json_loadb(line, len, JSON_REJECT_DUPLICATES, &err);
	char *out;

	if (!v) {
		fprintf(stderr, "bad json: %s\n", err.text);
		exit(1);
	}
	out = json_dumps(v, JSON_COMPACT);
	json_decref(v);
	*ret_len = strlen(out);
	return out;
}

/* Writes line (len bytes, no newline) to fd re-encoded through jansson, with its newline. */
static void
write_roundtrip(int fd, const char *line, size_t len)
{
	size_t olen;
	char *out = json_roundtrip(line, len, &olen);

	out = realloc(out, olen + 1);
	out[olen] = '\n';
	write_all(fd, out, olen + 1);
	free(out);
}

/* Echoes lines on fd until EOF, optionally through jansson. */
static void
echo_peer(int fd, bool json)
{
	struct lines l = { .fd = fd };
	size_t len;
	char *line;

	while ((line = lines_next(&l, &len))) {
		if (json) {
			write_roundtrip(fd, line, len);
		} else {
			line[len] = '\n';
			write_all(fd, line, len + 1);
		}
	}
	_exit(0);
}

static pid_t
start_echo(int *ret_fd, bool json)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[0]);
		echo_peer(sv[1], json);
	}
	close(sv[1]);
	*ret_fd = sv[0];
	return pid;
}

static void
reap(pid_t pid)
{
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

/* The first argument of pingpong, pipeline and items: raw or json. */
static bool
is_json(const char *arg)
{
	return strcmp(arg, "json") == 0;
}

/* pingpong raw|json N */
static int
cmd_pingpong(char **args)
{
	bool json = is_json(args[0]);
	long n = atol(args[1]);
	struct samples s = { 0 };
	struct lines l;
	int fd;
	pid_t pid = start_echo(&fd, json);

	l = (struct lines){ .fd = fd };
	for (long i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();
		size_t len;
		char *line;

		if (json)
			write_roundtrip(fd, small_msg, sizeof(small_msg) - 2);
		else
			write_all(fd, small_msg, sizeof(small_msg) - 1);
		line = lines_next(&l, &len);
		if (!line)
			die("echo peer closed");
		if (json)
			free(json_roundtrip(line, len, &len));
		samples_add(&s, bench_now_ns() - t0);
	}
	close(fd);
	reap(pid);
	samples_report(&s, "call_rtt", json ? "pingpong_json" : "pingpong_raw");
	samples_free(&s);
	return 0;
}

/* pipeline raw|json N INFLIGHT */
static int
cmd_pipeline(char **args)
{
	bool json = is_json(args[0]);
	long n = atol(args[1]), inflight = atol(args[2]);
	struct lines l;
	long sent = 0, got = 0;
	uint64_t t0;
	int fd;
	pid_t pid = start_echo(&fd, json);
	char name[64];

	l = (struct lines){ .fd = fd };
	t0 = bench_now_ns();
	while (got < n) {
		size_t len;
		char *line;

		while (sent < n && sent - got < inflight) {
			write_all(fd, small_msg, sizeof(small_msg) - 1);
			sent++;
		}
		line = lines_next(&l, &len);
		if (!line)
			die("echo peer closed");
		if (json)
			free(json_roundtrip(line, len, &len));
		got++;
	}
	snprintf(name, sizeof(name), "%s_inflight%ld", json ? "pipeline_json" : "pipeline_raw",
	    inflight);
	bench_report_value(
	    "calls_per_s", name, (double)n / ((double)(bench_now_ns() - t0) / 1e9), "1/s");
	close(fd);
	reap(pid);
	return 0;
}

/* The libev JSON echo server: one loop, many clients, non-blocking. */
struct echo_conn {
	ev_io io;
	char in[65536];
	size_t len;
};

static void
echo_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct echo_conn *c = (struct echo_conn *)w;
	ssize_t n = read(w->fd, c->in + c->len, sizeof(c->in) - c->len);
	size_t start = 0;
	char *nl;

	if (n <= 0) {
		ev_io_stop(loop, w);
		close(w->fd);
		free(c);
		return;
	}
	c->len += (size_t)n;
	while ((nl = memchr(c->in + start, '\n', c->len - start))) {
		size_t len = (size_t)(nl - (c->in + start));

		/* Clients read everything they are sent, so a blocking write is fine here. */
		write_roundtrip(w->fd, c->in + start, len);
		start += len + 1;
	}
	memmove(c->in, c->in + start, c->len - start);
	c->len -= start;
}

static void
echo_server(int *fds, int nfds)
{
	struct ev_loop *loop = ev_default_loop(0);

	for (int i = 0; i < nfds; i++) {
		struct echo_conn *c = calloc(1, sizeof(*c));

		ev_io_init(&c->io, echo_conn_cb, fds[i], EV_READ);
		ev_io_start(loop, &c->io);
	}
	ev_run(loop, 0);
	_exit(0);
}

/* One echo-server client: waits for the start (EOF on go_fd), then keeps inflight calls going. */
static void __attribute__((noreturn)) echo_client(int fd, int go_fd, long n, long inflight)
{
	struct lines l = { .fd = fd };
	long sent = 0, got = 0;
	char c;

	if (read(go_fd, &c, 1) < 0)
		_exit(1);
	while (got < n) {
		size_t len;

		while (sent < n && sent - got < inflight) {
			write_all(fd, small_msg, sizeof(small_msg) - 1);
			sent++;
		}
		if (!lines_next(&l, &len))
			_exit(1);
		got++;
	}
	_exit(0);
}

/* echo-server N CLIENTS INFLIGHT: one server process, CLIENTS client processes. */
static int
cmd_echo_server(char **args)
{
	long n = atol(args[0]), inflight = atol(args[2]);
	int clients = atoi(args[1]);
	int *srv = calloc((size_t)clients, sizeof(int));
	int *cli = calloc((size_t)clients, sizeof(int));
	pid_t server, *pids = calloc((size_t)clients, sizeof(pid_t));
	int go[2];
	uint64_t t0;
	long per = n / clients;
	char name[64];

	if (pipe2(go, O_CLOEXEC) < 0)
		die("pipe");
	for (int i = 0; i < clients; i++) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		srv[i] = sv[1];
		cli[i] = sv[0];
	}
	server = fork();
	if (server == 0) {
		for (int i = 0; i < clients; i++)
			close(cli[i]);
		close(go[0]);
		close(go[1]);
		echo_server(srv, clients);
	}
	for (int i = 0; i < clients; i++) {
		close(srv[i]);
		pids[i] = fork();
		if (pids[i] == 0) {
			close(go[1]);
			echo_client(cli[i], go[0], per, inflight);
		}
		close(cli[i]);
	}
	close(go[0]);
	/* All clients start together once the parent has its clock. */
	t0 = bench_now_ns();
	close(go[1]);
	for (int i = 0; i < clients; i++)
		reap(pids[i]);
	snprintf(name, sizeof(name), "echo_server_%dx%ld", clients, inflight);
	bench_report_value("calls_per_s", name,
	    (double)(per * clients) / ((double)(bench_now_ns() - t0) / 1e9), "1/s");
	reap(server);
	free(srv);
	free(cli);
	free(pids);
	return 0;
}

/* bulk BYTES */
static int
cmd_bulk(char **args)
{
	long bytes = atol(args[0]);
	static char chunk[65536];
	int sv[2];
	pid_t pid;
	long got = 0;
	uint64_t t0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	memset(chunk, 'x', sizeof(chunk));
	t0 = bench_now_ns();
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		for (long left = bytes; left > 0; left -= (long)sizeof(chunk))
			write_all(sv[1], chunk,
			    left < (long)sizeof(chunk) ? (size_t)left : sizeof(chunk));
		_exit(0);
	}
	close(sv[1]);
	while (got < bytes) {
		char buf[65536];
		ssize_t n = read(sv[0], buf, sizeof(buf));

		if (n <= 0)
			die("bulk read");
		got += n;
	}
	bench_report_value("stream_mb_per_s", "bulk_raw",
	    (double)bytes / 1e6 / ((double)(bench_now_ns() - t0) / 1e9), "MB/s");
	close(sv[0]);
	reap(pid);
	return 0;
}

/* size bytes of 'x' as a C string, or NULL for size 0 (then items are integers). */
static char *
make_pad(long size)
{
	char *pad;

	if (size <= 0)
		return NULL;
	pad = malloc((size_t)size + 1);
	if (!pad)
		die("malloc");
	memset(pad, 'x', (size_t)size);
	pad[size] = '\0';
	return pad;
}

/* One herd.item notification line, newline included, encoded with jansson. */
static char *
encode_item(const char *pad, long i, size_t *ret_len)
{
	json_t *item = pad ? json_string(pad) : json_integer(i);
	json_t *msg = json_pack("{s:s, s:s, s:{s:i, s:o}}", "jsonrpc", "2.0", "method", "herd.item",
	    "params", "id", 3, "item", item);
	char *line = json_dumps(msg, JSON_COMPACT);

	json_decref(msg);
	*ret_len = strlen(line);
	line = realloc(line, *ret_len + 1);
	line[(*ret_len)++] = '\n';
	return line;
}

/*
 * The writer side of cmd_items. raw: one encoded line copied into 64 KiB writes.
 * json: every item built and encoded with jansson, then staged into 64 KiB writes
 * the way an output queue would.
 */
static void __attribute__((noreturn)) items_writer(int fd, bool json, long n, long size)
{
	static char out[65536];
	char *pad = make_pad(size);
	size_t len, used = 0;
	char *line = encode_item(pad, 1, &len);

	for (long i = 0; i < n; i++) {
		if (json) {
			free(line);
			line = encode_item(pad, i, &len);
		}
		if (used + len > sizeof(out)) {
			write_all(fd, out, used);
			used = 0;
		}
		if (len > sizeof(out)) {
			write_all(fd, line, len);
		} else {
			memcpy(out + used, line, len);
			used += len;
		}
	}
	write_all(fd, out, used);
	_exit(0);
}

/* Reads n item lines from fd and parses each with jansson. */
static void
items_read_json(int fd, long n)
{
	static struct lines l;

	l = (struct lines){ .fd = fd };
	for (long got = 0; got < n; got++) {
		size_t len;
		char *line = lines_next(&l, &len);
		json_t *v;

		if (!line)
			die("items writer closed early");
		v = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
		if (!v)
			die("bad item line");
		json_decref(v);
	}
}

/* Reads from fd until n newlines have come: counted, not parsed. */
static void
items_read_raw(int fd, long n)
{
	static char buf[1 << 18];
	long got = 0;

	while (got < n) {
		ssize_t r = read(fd, buf, sizeof(buf));

		if (r <= 0)
			die("items read");
		for (char *p = buf; (p = memchr(p, '\n', (size_t)(buf + r - p))); p++)
			got++;
	}
}

/* items raw|json N SIZE */
static int
cmd_items(char **args)
{
	bool json = is_json(args[0]);
	long n = atol(args[1]), size = atol(args[2]);
	int sv[2];
	pid_t pid;
	uint64_t t0;
	double secs;
	char name[64];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		die("socketpair");
	t0 = bench_now_ns();
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(sv[0]);
		items_writer(sv[1], json, n, size);
	}
	close(sv[1]);
	if (json)
		items_read_json(sv[0], n);
	else
		items_read_raw(sv[0], n);
	secs = (double)(bench_now_ns() - t0) / 1e9;
	snprintf(name, sizeof(name), "items_%s_size%ld", json ? "json" : "raw", size);
	bench_report_value("stream_items_per_s", name, (double)n / secs, "1/s");
	if (size > 0)
		bench_report_value(
		    "stream_mb_per_s", name, (double)n * (double)size / 1e6 / secs, "MB/s");
	close(sv[0]);
	reap(pid);
	return 0;
}

/* spawn N EXE [ARGS...]: fork+exec EXE with a socketpair end on fd 3; it must answer there. */
static int
cmd_spawn(char **args)
{
	long n = atol(args[0]);
	char **argv = args + 1;
	struct samples s = { 0 };
	uint64_t all0 = bench_now_ns();
	extern char **environ;

	for (long i = 0; i < n; i++) {
		uint64_t t0 = bench_now_ns();
		int sv[2];
		pid_t pid;
		struct lines l;
		size_t len;

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		pid = fork();
		if (pid == 0) {
			if (dup2(sv[1], 3) < 0)
				_exit(127);
			execve(argv[0], argv, environ);
			_exit(127);
		}
		close(sv[1]);
		write_all(sv[0], small_msg, sizeof(small_msg) - 1);
		l = (struct lines){ .fd = sv[0] };
		if (!lines_next(&l, &len))
			die("spawned child did not answer");
		samples_add(&s, bench_now_ns() - t0);
		close(sv[0]);
		reap(pid);
	}
	bench_report_value("spawns_per_s", "fork_exec_handshake",
	    (double)n / ((double)(bench_now_ns() - all0) / 1e9), "1/s");
	samples_report(&s, "spawn_ready", "fork_exec_handshake");
	samples_free(&s);
	return 0;
}

/* The baselines' modes, one row each like herd.c's (bench_main in stats.c runs them): data. */
static const struct bench_mode modes[] = {
	{ "pingpong", "raw|json N", 2, cmd_pingpong },
	{ "pipeline", "raw|json N INFLIGHT", 3, cmd_pipeline },
	{ "echo-server", "N CLIENTS INFLIGHT", 3, cmd_echo_server },
	{ "bulk", "BYTES", 1, cmd_bulk },
	{ "items", "raw|json N SIZE", 3, cmd_items },
	{ "spawn", "N EXE [ARGS...]", 2, cmd_spawn },
	{ 0 },
};

int
main(int argc, char **argv)
{
	static const struct bench_prog prog = { "baseline", modes, NULL, NULL };

	return bench_main(&prog, argc, argv);
}
