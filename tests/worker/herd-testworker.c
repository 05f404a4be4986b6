/* SPDX-License-Identifier: MIT */
/*
 * herd-testworker: a worker executable whose functions make a worker behave in
 * every way a supervisor must cope with: answer, compute, block its loop, fail
 * now or later, crash, exit, fork descendants, write to its streams, and report
 * what it was given (environment, cwd, umask, init arguments, identity). It also
 * has one function of every kind, which PROTOCOL.md's samples call (tests/spec).
 *
 * Worker init argument: {"fail_init": MSG} fails init with MSG;
 * {"init_delay_ms": N} blocks inside init for N ms first (a slow init is the
 * thing under test). Connection init argument: {"fail_conn": MSG} fails the
 * connection's init. Other members are kept and returned by "state".
 *
 * Run by herdd (HERD_CHANNEL_FD set) or standalone:
 *   herd-testworker --socket PATH [--init JSON]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include <herd/protocol.h>
#include <herd/worker.h>

#include "worker-args.h"

/* examples/sum-demo.c reads the clock the same way: each program stands alone. */
static int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die_by(herd_request *req, int sig);

/* Every function opens alike (count, unpack, answer): the worker API's grammar, not a copy. */
static void
fn_sum(herd_request *req, json_t *arg)
{
	json_int_t n, i, s = 0;
	int crash = 0;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:I, s?b}", "n", &n, "crash", &crash) < 0)
		return;
	/* A poison task: it kills every worker it is given, and says so on stderr. */
	if (crash) {
		fprintf(stderr, "herd-testworker: sum crashes on n=%lld\n", (long long)n);
		die_by(req, SIGSEGV);
		return;
	}
	for (i = 0; i < n; i++)
		s += i;
	herd_request_reply(req, json_integer(s));
}

static void
fn_product(herd_request *req, json_t *arg)
{
	json_int_t n, i, p = 1;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:I}", "n", &n) < 0)
		return;
	for (i = 2; i <= n; i++) {
		if (__builtin_mul_overflow(p, i, &p)) {
			herd_request_fail(req, "product of 1..%lld overflows", (long long)n);
			return;
		}
	}
	herd_request_reply(req, json_integer(p));
}

/* sleep's reply is {"slept_ms": ms} here; the example worker's, {"slept": ms}. */
static void
fn_sleep(herd_request *req, json_t *arg)
{
	wa_sleep(req, arg, "slept_ms");
}

/* Blocks the event loop while burning CPU: busy is not hung. */
static void
fn_spin(herd_request *req, json_t *arg)
{
	json_int_t ms;
	int64_t end;
	volatile uint64_t x = 0;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:I}", "ms", &ms) < 0)
		return;
	end = now_ms() + ms;
	while (now_ms() < end)
		x++;
	herd_request_reply(req, json_pack("{s:I}", "spun_ms", ms));
}

/* A signal given as a number, "SEGV" or "SIGSEGV". Returns it or -EINVAL. */
static int
parse_signal(json_t *v)
{
	const char *name;
	int i;

	if (json_is_integer(v))
		return json_integer_value(v) > 0 && json_integer_value(v) < NSIG
		    ? (int)json_integer_value(v)
		    : -EINVAL;
	name = json_string_value(v);
	if (!name)
		return -EINVAL;
	if (strncmp(name, "SIG", 3) == 0)
		name += 3;
	for (i = 1; i < NSIG; i++) {
		const char *abbrev = sigabbrev_np(i);

		if (abbrev && strcmp(abbrev, name) == 0)
			return i;
	}
	return -EINVAL;
}

/* Ends the process by sig (wa_die_by); answers only if sig did not end it. */
static void
die_by(herd_request *req, int sig)
{
	wa_die_by(sig);
	herd_request_fail(req, "signal %d did not end the process", sig);
}

static void
fn_crash(herd_request *req, json_t *arg)
{
	json_t *sigv = NULL;
	int sig = SIGSEGV;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s?o}", "signal", &sigv) < 0)
		return;
	if (sigv && (sig = parse_signal(sigv)) < 0) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL, "unknown signal");
		return;
	}
	die_by(req, sig);
}

static void
fn_exit(herd_request *req, json_t *arg)
{
	json_int_t code = 0;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s?I}", "code", &code) < 0)
		return;
	fflush(NULL);
	_exit((int)code);
}

/* ---- fail_later: reply now, fail in the background after a delay ---- */

struct tw_later {
	ev_timer timer;
	char message[]; /* NUL-terminated */
};

static void
later_fired(EV_P_ ev_timer *t, int revents)
{
	struct tw_later *l = t->data;

	fprintf(stderr, "herd-testworker: failing in the background: %s\n", l->message);
	herd_worker_fail("%s", l->message);
}

static void
fn_fail_later(herd_request *req, json_t *arg)
{
	const char *message = "failed later on purpose";
	struct tw_later *l;
	json_int_t ms = 0;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s?I, s?s}", "ms", &ms, "message", &message) < 0)
		return;
	/* Lives until the process exits through herd_worker_fail(). */
	l = wa_calloc(req, sizeof(*l) + strlen(message) + 1);
	if (!l)
		return;
	strcpy(l->message, message);
	ev_timer_init(&l->timer, later_fired, (double)ms / 1000.0, 0.);
	l->timer.data = l;
	ev_timer_start(EV_DEFAULT, &l->timer);
	herd_request_reply(req, json_pack("{s:I}", "fail_in_ms", ms));
}

/*
 * Tries to hold n more open fds and a mib MiB block (touched) and says how far
 * it got, with the rlimits it runs under: the spawn's limits at work.
 * Everything is released before it returns.
 */
static json_t *
resources(json_int_t n, json_int_t mib)
{
	json_int_t opened = 0;
	int open_errno = 0, alloc_errno = 0, *fds = n > 0 ? calloc((size_t)n, sizeof(*fds)) : NULL;
	struct rlimit nofile, as;
	char *block = NULL;

	for (; fds && opened < n; opened++) {
		fds[opened] = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fds[opened] < 0) {
			open_errno = errno;
			break;
		}
	}
	if (mib > 0) {
		block = malloc((size_t)mib << 20);
		if (block)
			memset(block, 1, (size_t)mib << 20);
		else
			alloc_errno = errno;
	}
	free(block);
	for (json_int_t i = 0; i < opened; i++)
		close(fds[i]);
	free(fds);
	getrlimit(RLIMIT_NOFILE, &nofile);
	getrlimit(RLIMIT_AS, &as);
	return json_pack("{s:I, s:i, s:b, s:i, s:I, s:I}", "opened", opened, "open_errno",
	    open_errno, "allocated", mib > 0 && !alloc_errno, "alloc_errno", alloc_errno,
	    "rlimit_nofile", (json_int_t)nofile.rlim_cur, "rlimit_as",
	    as.rlim_cur == RLIM_INFINITY ? (json_int_t)-1 : (json_int_t)as.rlim_cur);
}

/*
 * pid: the worker's identity. With {"open": N} or {"alloc_mib": M} it also
 * reports resources() (one function, not a new one: the worker's hello must
 * stay within a 1 KiB max_message_size).
 */
static void
fn_pid(herd_request *req, json_t *arg)
{
	json_int_t n = -1, mib = -1;
	json_t *o;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s?I, s?I}", "open", &n, "alloc_mib", &mib) < 0)
		return;
	o = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "pid", (int)getpid(), "ppid",
	    (int)getppid(), "pgid", (int)getpgid(0), "sid", (int)getsid(0), "uid", (int)getuid(),
	    "gid", (int)getgid(), "role", herd_process_role());
	if (o && (n >= 0 || mib >= 0))
		json_object_update_new(o, resources(n, mib));
	herd_request_reply(req, o);
}

/*
 * wedge (oneway): ignores SIGTERM and SIGINT, writes one byte to the FIFO named
 * by "notify" so the caller knows, then blocks its loop for good. Only SIGKILL
 * ends it: the worker a supervisor's grace period exists for.
 */
static void
fn_wedge(herd_request *req, json_t *arg)
{
	const char *notify = json_string_value(json_object_get(arg, "notify"));
	int fd;

	wa_begin(req);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	if (notify) {
		fd = open(notify, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "w", 1) != 1)
			_exit(1);
		close(fd);
	}
	for (;;)
		pause();
}

/* ---- spawn_grandchild: a descendant the supervisor must not leave behind ---- */

static void
grandchild_reaped(EV_P_ ev_child *c, int revents)
{
	ev_child_stop(EV_A_ c);
	free(c);
}

/* This process's pid as the host sees it (/proc is the host's, even in a PID namespace). */
static pid_t
host_pid(void)
{
	char buf[32];
	ssize_t n = readlink("/proc/self", buf, sizeof(buf) - 1);

	if (n <= 0)
		return getpid();
	buf[n] = '\0';
	return (pid_t)atoi(buf);
}

/*
 * In the forked descendant: default signals, its own session if asked, none
 * of our fds. It writes its host pid on ready_fd once its session is final.
 */
static void __attribute__((noreturn)) grandchild_main(bool detach, int ready_fd)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD, SIGPIPE };
	sigset_t none;
	pid_t self;
	size_t i;

	for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		signal(sigs[i], SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	if (detach)
		setsid();
	/* Our caller reads the session only after this, so it sees the final one. */
	self = host_pid();
	if (write(ready_fd, &self, sizeof(self)) != (ssize_t)sizeof(self))
		_exit(1);
	close_range(3, ~0U, 0);
	for (;;)
		pause();
}

/*
 * spawn_grandchild {escape: count}: descendants that leave by every door a
 * supervisor can miss.
 * A child calls setsid() and forks count grandchildren, each in a session of
 * its own, then exits: they are double-forked orphans, reparented away from
 * the worker. Replies {pids: [...]} (host pids) once every one of them runs.
 */
static void
escape(herd_request *req, json_int_t count)
{
	json_int_t i;
	pid_t mid, got[1024];
	size_t have = 0;
	json_t *pids;
	int p[2], status;
	ssize_t n;

	if (count < 1 || count > 1024) {
		herd_request_fail(req, "count must be 1 to 1024");
		return;
	}
	if (pipe2(p, O_CLOEXEC) < 0) {
		herd_request_fail(req, "pipe: %s", strerror(errno));
		return;
	}
	fflush(NULL);
	mid = fork();
	if (mid == 0) {
		setsid();
		for (i = 0; i < count; i++) {
			if (fork() == 0)
				grandchild_main(true, p[1]);
		}
		_exit(0);
	}
	close(p[1]);
	/* Blocking reads: every grandchild writes at once, and EOF comes if they all die. */
	while (mid > 0 && have < (size_t)count * sizeof(pid_t) &&
	    (n = read(p[0], (char *)got + have, (size_t)count * sizeof(pid_t) - have)) > 0)
		have += (size_t)n;
	close(p[0]);
	if (mid > 0)
		waitpid(mid, &status, 0);
	if (have < (size_t)count * sizeof(pid_t)) {
		herd_request_fail(req, "escape: %zu of %lld descendants started",
		    have / sizeof(pid_t), (long long)count);
		return;
	}
	pids = json_array();
	for (i = 0; i < count; i++)
		json_array_append_new(pids, json_integer(got[i]));
	herd_request_reply(req, json_pack("{s:o}", "pids", pids));
}

static void
fn_spawn_grandchild(herd_request *req, json_t *arg)
{
	json_int_t n_escape = 0;
	int detach = 0, p[2];
	ev_child *watch;
	pid_t pid, host;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s?b, s?I}", "detach", &detach, "escape", &n_escape) < 0)
		return;
	if (n_escape) {
		escape(req, n_escape);
		return;
	}
	watch = calloc(1, sizeof(*watch));
	if (!watch || pipe2(p, O_CLOEXEC) < 0) {
		free(watch);
		herd_request_fail(req, "cannot prepare a descendant: %s", strerror(errno));
		return;
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		grandchild_main(detach, p[1]);
	close(p[1]);
	/* A short blocking read: the child writes at once. */
	if (pid < 0 || read(p[0], &host, sizeof(host)) != (ssize_t)sizeof(host)) {
		close(p[0]);
		free(watch);
		herd_request_fail(req, "fork: %s", pid < 0 ? strerror(errno) : "child died");
		return;
	}
	close(p[0]);
	/* Reap it if it dies while we live, so we never hold a zombie. */
	ev_child_init(watch, grandchild_reaped, pid, 0);
	ev_child_start(EV_DEFAULT, watch);
	herd_request_reply(req,
	    json_pack(
	        "{s:i, s:b, s:i}", "pid", (int)host, "detached", detach, "sid", (int)getsid(pid)));
}

/* Writes text to a stream, ending it with a newline if it has none. */
static void
write_stream(herd_request *req, json_t *arg, FILE *f)
{
	const char *text;
	size_t len;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:s}", "text", &text) < 0)
		return;
	len = strlen(text);
	fputs(text, f);
	if (len == 0 || text[len - 1] != '\n')
		fputc('\n', f);
	fflush(f);
	herd_request_reply(req, json_object());
}

static void
fn_stderr(herd_request *req, json_t *arg)
{
	write_stream(req, arg, stderr);
}

static void
fn_stdout(herd_request *req, json_t *arg)
{
	write_stream(req, arg, stdout);
}

static void
fn_env(herd_request *req, json_t *arg)
{
	const char *name, *value;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:s}", "name", &name) < 0)
		return;
	value = getenv(name);
	herd_request_reply(req, json_pack("{s:s?}", "value", value));
}

static void
fn_cwd(herd_request *req, json_t *arg)
{
	char buf[4096];

	wa_begin(req);
	if (wa_unpack(req, arg, "{}") < 0)
		return;
	if (!getcwd(buf, sizeof(buf))) {
		herd_request_fail(req, "getcwd: %s", strerror(errno));
		return;
	}
	herd_request_reply(req, json_pack("{s:s}", "cwd", buf));
}

static void
fn_umask(herd_request *req, json_t *arg)
{
	mode_t m;

	wa_begin(req);
	if (wa_unpack(req, arg, "{}") < 0)
		return;
	/* umask can only be read by setting it; put it back at once. */
	m = umask(0);
	umask(m);
	herd_request_reply(req, json_pack("{s:i}", "umask", (int)m));
}

static void
fn_state(herd_request *req, json_t *arg)
{
	struct wa_worker *w = wa_begin(req);
	struct wa_conn *c = herd_request_conn_state(req);

	if (wa_unpack(req, arg, "{}") < 0)
		return;
	herd_request_reply(req,
	    json_pack("{s:O, s:O, s:I}", "init", w->init, "conn_init", c ? c->init : json_null(),
	        "served", (json_int_t)w->served));
}

/*
 * ---- count: a pipe of 0..n-1, paced by a timer or by backpressure; with
 * "size", every item is instead a string of that many bytes (the stream
 * benchmark), and with "bytes": true a bytes value of that many, byte i
 * being i mod 256 (NULs and bytes that are not text included). echo sends
 * bytes values back as it does any argument ----
 */

struct tw_count {
	ev_timer timer;
	herd_request *req;
	json_int_t next, n, delay_ms, size;
	bool bytes;
	char *pad;
};

/* The next item: an integer, a string of size bytes, or bytes. */
static json_t *
count_item(const struct tw_count *c)
{
	if (c->bytes)
		return herd_bytes_new(c->pad, (size_t)c->size);
	return c->pad ? json_string(c->pad) : json_integer(c->next);
}

static void count_step(struct tw_count *c);

static void
count_free(struct tw_count *c)
{
	ev_timer_stop(EV_DEFAULT, &c->timer);
	herd_request_unref(c->req);
	free(c->pad);
	free(c);
}

static void
count_cancelled(herd_request *req, void *userdata)
{
	count_free(userdata);
}

static void
count_drained(herd_request *req, void *userdata)
{
	count_step(userdata);
}

static void
count_timer(EV_P_ ev_timer *t, int revents)
{
	count_step(t->data);
}

/* Writes what it may now; then ends, waits for the timer, or waits for a drain. */
static void
count_step(struct tw_count *c)
{
	while (c->next < c->n) {
		json_t *item = count_item(c);
		int r = herd_request_write(c->req, item);

		if (r == -EAGAIN) {
			json_decref(item); /* not taken; made again after the drain */
			herd_request_on_drain(c->req, count_drained, c);
			return;
		}
		if (r < 0) {
			count_free(c);
			return;
		}
		c->next++;
		if (c->delay_ms > 0 && c->next < c->n) {
			ev_timer_set(&c->timer, (double)c->delay_ms / 1000.0, 0.);
			ev_timer_start(EV_DEFAULT, &c->timer);
			return;
		}
	}
	herd_request_end(c->req, json_pack("{s:I}", "count", c->n));
	count_free(c);
}

static void
fn_count(herd_request *req, json_t *arg)
{
	json_int_t n, delay_ms = 0, size = 0;
	struct tw_count *c;
	int bytes = 0;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:I, s?I, s?I, s?b}", "n", &n, "delay_ms", &delay_ms, "size",
	        &size, "bytes", &bytes) < 0)
		return;
	if (size < 0 || size > (1 << 24)) {
		herd_request_fail(req, "size must be 0..16777216");
		return;
	}
	c = calloc(1, sizeof(*c));
	if (c && (size > 0 || bytes) && (c->pad = malloc((size_t)size + 1))) {
		for (json_int_t i = 0; i < size; i++)
			c->pad[i] = bytes ? (char)(i & 0xff) : 'x';
		c->pad[size] = '\0';
	}
	if (!c || ((size > 0 || bytes) && !c->pad)) {
		free(c);
		herd_request_fail(req, "out of memory");
		return;
	}
	c->req = herd_request_ref(req);
	c->n = n;
	c->size = size;
	c->bytes = bytes;
	c->delay_ms = delay_ms;
	ev_timer_init(&c->timer, count_timer, 0., 0.);
	c->timer.data = c;
	herd_request_on_cancel(req, count_cancelled, c);
	count_step(c);
}

/* ---- note (oneway): logs its text, which herd.logs streams ---- */

static void
fn_note(herd_request *req, json_t *arg)
{
	const char *text;

	wa_begin(req);
	if (wa_unpack(req, arg, "{s:s}", "text", &text) < 0)
		return;
	herd_log(HERD_LOG_INFO, "%s", text);
}

/* ---- states ---- */

static int
init_worker(json_t *arg, void **ret_state, char **reterr_message)
{
	json_int_t delay = json_integer_value(json_object_get(arg, "init_delay_ms"));

	if (delay > 0) {
		/* Blocking on purpose: a slow init is what the caller is testing. */
		struct timespec ts = { delay / 1000, (delay % 1000) * 1000000 };

		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return wa_state_new(arg, "fail_init", sizeof(struct wa_worker), ret_state, reterr_message);
}

/* One row per function, like every worker's table (example-worker.c, the built-ins): data. */
static const struct herd_function functions[] = {
	{ "echo", HERD_KIND_CALL, wa_echo },
	{ "sum", HERD_KIND_CALL, fn_sum },
	{ "product", HERD_KIND_CALL, fn_product },
	{ "sleep", HERD_KIND_CALL, fn_sleep },
	{ "spin", HERD_KIND_CALL, fn_spin },
	{ "fail", HERD_KIND_CALL, wa_fail },
	{ "crash", HERD_KIND_CALL, fn_crash },
	{ "exit", HERD_KIND_CALL, fn_exit },
	{ "fail_later", HERD_KIND_CALL, fn_fail_later },
	{ "pid", HERD_KIND_CALL, fn_pid },
	{ "spawn_grandchild", HERD_KIND_CALL, fn_spawn_grandchild },
	{ "stderr", HERD_KIND_CALL, fn_stderr },
	{ "stdout", HERD_KIND_CALL, fn_stdout },
	{ "env", HERD_KIND_CALL, fn_env },
	{ "cwd", HERD_KIND_CALL, fn_cwd },
	{ "umask", HERD_KIND_CALL, fn_umask },
	{ "state", HERD_KIND_CALL, fn_state },
	{ "count", HERD_KIND_PIPE, fn_count },
	/* count as a state stream: the library flags its first item initial. */
	{ "counter", HERD_KIND_STATE, fn_count },
	{ "total", HERD_KIND_SINK, wa_sum_items },
	{ "note", HERD_KIND_ONEWAY, fn_note },
	{ "wedge", HERD_KIND_ONEWAY, fn_wedge },
	{ NULL, 0, NULL },
};

/* Integer sum: the combine of herd.fold's samples (PROTOCOL.md 6.6). acc is stolen. */
static json_t *
combine_add(json_t *acc, json_t *value, void *worker_state)
{
	json_int_t sum = json_integer_value(acc) + json_integer_value(value);

	json_decref(acc);
	return json_integer(sum);
}

static const struct herd_combiner combiners[] = {
	{ "add", combine_add },
	{ NULL, NULL },
};

/* Like every worker type (test-pool.c) and every ops table (herd__peer_ops): data, not logic. */
static const struct herd_worker_type testworker = {
	.name = "herd-testworker",
	.functions = functions,
	.init_worker = init_worker,
	.init_conn = wa_init_conn,
	.free_worker = wa_state_free,
	.free_conn = wa_free_conn,
	.combiners = combiners,
};

/*
 * The spawn benchmark's baseline: the same binary, exec'd bare, echoes one line
 * on fd 3 and exits, so herd's spawn is compared with exec plus a handshake.
 */
static int
bench_raw_fd3(void)
{
	char buf[4096];
	ssize_t n = read(3, buf, sizeof(buf));

	return n > 0 && write(3, buf, (size_t)n) == n ? 0 : 1;
}

int
main(int argc, char **argv)
{
	if (argc == 2 && strcmp(argv[1], "--bench-raw-fd3") == 0)
		return bench_raw_fd3();
	return herd_worker_main(&testworker, argc, argv);
}
