/* SPDX-License-Identifier: MIT */
/*
 * Replacing herdd by a fresh exec of its (possibly upgraded) binary without
 * losing a worker or a connection: the "reexec" request and SIGUSR2, like
 * systemd's daemon-reexec and nginx's binary upgrade.
 *
 * Why an exec in place, with a probe first. Workers are herdd's children and
 * herdd is their subreaper: only the same pid keeps reaping them (wait4), and
 * keeps their parent-death signal and cgroup placement. So the new binary runs
 * in herdd's own process, after execve(), with the state serialized into a
 * sealed memfd whose number is in HERDD_REEXEC_STATE and FD_CLOEXEC cleared
 * only on the fds the state names. What an execve cannot undo is a binary that
 * starts and cannot take over (/bin/false, an older herdd, a broken build): the
 * old image is gone by then. So herdd first forks a probe of the new binary
 * with the same state and waits, up to PROBE_TIMEOUT_MS, for one byte on a
 * pipe: the probe parsed herdd's options and checked every record. Only then
 * does it execve; if execve fails, herdd puts FD_CLOEXEC back and goes on. A
 * successor that passed the probe and still cannot take over (out of memory)
 * execs the old binary back through an fd kept open on it. One that crashes
 * while taking over cannot: herdd is gone then, and its workers with it, as
 * when herdd crashes at any other time. Signals are blocked from just before
 * the execve until the successor's watchers run, so none is lost or fatal.
 *
 * The loop does not run during the probe, so the state it checks is the state
 * handed over. Masters call workers over the workers' own sockets, which do not
 * go through herdd; heartbeats are late by the pause at most.
 *
 * Only settled state is handed over: the reexec waits (WAIT_MS at most, then
 * timeout {what: "reexec"}) while a worker is starting or stopping, a request
 * waits for a worker, or a captured stream is followed.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "herdd.h"

#define ENV_STATE    "HERDD_REEXEC_STATE"
#define ENV_PROBE    "HERDD_REEXEC_PROBE"
#define ENV_FALLBACK "HERDD_REEXEC_FALLBACK"
/* The loop waits for the probe: well under the default heartbeat timeout (10 s). */
#define PROBE_TIMEOUT_MS 3000
#define WAIT_MS          10000u

extern char **environ;

/* A "reexec" request answered by the successor (or by us when it fails). */
struct rx_waiter {
	struct rx_waiter *next;
	struct conn *conn; /* a reference */
	json_t *id;
};

static char *self_path; /* the binary herdd was started from */
static char **self_argv;
static char *next_binary; /* a request's "binary", or NULL: self_path */
static struct rx_waiter *waiters;
static bool wanted; /* a request or SIGUSR2 waits for settled state */
static unsigned generation; /* reexecs so far */
static ev_signal sig_usr2;
static ev_prepare settle_check;
static ev_timer settle_timer;
static json_t *adopted; /* a successor's state until reexec_adopt() */
static bool fell_back; /* the successor failed and this is the previous binary again */
static bool successor; /* this image took over from a predecessor */
static sigset_t run_mask; /* the predecessor's signal mask, put back once our watchers run */

/* ---- the successor ---- */

/* The state in memfd fd (read from offset 0: the probe shares the file offset). */
static json_t *
state_read(int fd, char *why, size_t len)
{
	json_error_t err;
	struct stat st;
	json_t *state;
	char *buf;

	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		snprintf(why, len, "no state in fd %d", fd);
		return NULL;
	}
	buf = malloc((size_t)st.st_size);
	if (!buf || pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		snprintf(
		    why, len, "reading the state: %s", buf ? strerror(errno) : "out of memory");
		free(buf);
		return NULL;
	}
	state = json_loadb(buf, (size_t)st.st_size, 0, &err);
	free(buf);
	if (!state)
		snprintf(why, len, "the state is not JSON: %s", err.text);
	return state;
}

static int
env_fd(const char *name)
{
	const char *v = getenv(name);
	char *end;
	long fd;

	if (!v)
		return -1;
	fd = strtol(v, &end, 10);
	return *end || fd < 0 || fd > INT_MAX ? -1 : (int)fd;
}

/* Closes every fd from 3 up except those in keep (sorted in place). */
static void
close_all_but(json_t *keep)
{
	size_t n = json_array_size(keep), i, j;
	int *fds = calloc(n ? n : 1, sizeof(*fds)), from = 3;

	if (!fds)
		fatal("out of memory");
	for (i = 0; i < n; i++)
		fds[i] = (int)json_integer_value(json_array_get(keep, i));
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
			int t = fds[j];

			fds[j] = fds[j - 1];
			fds[j - 1] = t;
		}
	for (i = 0; i < n; i++) {
		if (fds[i] > from)
			close_range((unsigned)from, (unsigned)fds[i] - 1, 0);
		if (fds[i] >= from)
			from = fds[i] + 1;
	}
	close_range((unsigned)from, ~0U, 0);
	free(fds);
}

/*
 * The successor could not take over: the previous binary gets the state.
 * HERDD_REEXEC_FALLBACK is "EXE_FD:STATE_FD", its own copy of where the state
 * is, so a successor that lost HERDD_REEXEC_STATE can still go back.
 */
static _Noreturn void
fall_back(const char *why, char **argv)
{
	const char *v = getenv(ENV_FALLBACK);
	int exe = -1, state = -1;
	char text[32];

	fprintf(stderr, "herdd: reexec: %s\n", why);
	if (v && sscanf(v, "%d:%d", &exe, &state) == 2 && exe >= 0 && state >= 0) {
		fprintf(stderr, "herdd: reexec: going back to the previous binary\n");
		snprintf(text, sizeof(text), "%d", state);
		setenv(ENV_STATE, text, 1);
		setenv(ENV_FALLBACK, "back", 1);
		execveat(exe, "", argv, environ, AT_EMPTY_PATH);
		fprintf(stderr, "herdd: reexec: the previous binary: %s\n", strerror(errno));
	}
	exit(1);
}

bool
reexec_early(int argc, char **argv)
{
	int fd = env_fd(ENV_STATE), probe = env_fd(ENV_PROBE), exe = -1, state_fd = -1;
	const char *fallback = getenv(ENV_FALLBACK);
	char why[256] = "";
	json_t *state, *sig;
	size_t i;

	if (fd < 0)
		return false;
	state = state_read(fd, why, sizeof(why));
	if (state && reexec_state_check(state, why, sizeof(why)) < 0) {
		json_decref(state);
		state = NULL;
	}
	if (probe >= 0) {
		/* Exits 2 on an option this binary does not take. */
		main_parse_options(argc, argv);
		if (!state) {
			fprintf(stderr, "herdd: reexec probe: %s\n", why);
			exit(1);
		}
		exit(write(probe, "1", 1) == 1 ? 0 : 1);
	}
	if (!state)
		fall_back(why, argv);
	fell_back = fallback && !strcmp(fallback, "back");
	if (fallback && sscanf(fallback, "%d:%d", &exe, &state_fd) == 2 && exe >= 0)
		close(exe);
	unsetenv(ENV_STATE);
	unsetenv(ENV_FALLBACK);
	close(fd);
	close_all_but(json_object_get(state, "fds"));
	generation = (unsigned)json_integer_value(json_object_get(state, "generation"));
	sigemptyset(&run_mask);
	json_array_foreach(json_object_get(state, "sigmask"), i, sig)
		sigaddset(&run_mask, (int)json_integer_value(sig));
	adopted = state;
	successor = true;
	return true;
}

void
reexec_started(void)
{
	/* Signals waited, blocked, from before the exec until the watchers ran: now they come. */
	if (successor)
		sigprocmask(SIG_SETMASK, &run_mask, NULL);
}

json_t *
reexec_cgroup(void)
{
	return json_object_get(adopted, "cgroup");
}

bool
reexec_keeps(const char *id)
{
	json_t *workers = json_object_get(adopted, "workers"), *w, *ident, *proc;
	size_t i;

	json_array_foreach(workers, i, w) {
		ident = json_object_get(w, "ident");
		proc = json_object_get(w, "proc");
		if (!strcmp(json_string_value(json_object_get(ident, "id")), id) &&
		    json_is_true(json_object_get(proc, "in_cgroup")))
			return true;
	}
	return false;
}

static char *
state_string(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));
	char *s;

	/* null: a path this herdd does not have (the lock under socket activation). */
	if (!v)
		return NULL;
	s = strdup(v);
	if (!s)
		fatal("out of memory");
	return s;
}

void
reexec_server(void)
{
	json_t *s = json_object_get(adopted, "server");

	free(herdd.cfg.socket_path);
	herdd.cfg.socket_path = state_string(s, "socket");
	herdd.socket_dir = state_string(s, "socket_dir");
	herdd.lock_path = state_string(s, "lock");
	herdd.workers_dir = state_string(s, "workers_dir");
	herdd.listen_fd = (int)json_integer_value(json_object_get(s, "listen_fd"));
	herdd.lock_fd = (int)json_integer_value(json_object_get(s, "lock_fd"));
	herdd.activated = json_is_true(json_object_get(s, "activated"));
	herdd.own_socket = json_is_true(json_object_get(s, "own_socket"));
	fcntl(herdd.listen_fd, F_SETFD, FD_CLOEXEC);
	fcntl(herdd.lock_fd, F_SETFD, FD_CLOEXEC);
	herdd.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	log_info("listening on %s (taken over from the previous herdd)", herdd.cfg.socket_path);
}

/* What a reexec answers: the successor as it runs now (new reference). */
static json_t *
result_json(void)
{
	return json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "pid", (int)herdd.pid,
	    "binary", self_path ? self_path : "", "version", HERD_VERSION, "instance",
	    events_instance(), "seq", (json_int_t)events_last_seq(), "workers",
	    (json_int_t)sup_count_live(), "connections", (json_int_t)herdd.nconns, "generation",
	    (json_int_t)generation, "fell_back", fell_back);
}

void
reexec_adopt(void)
{
	json_t *w, *result;
	struct conn *c;
	size_t i;

	if (!adopted)
		return;
	reexec_state_load(adopted);
	result = result_json();
	json_array_foreach(json_object_get(adopted, "waiters"), i, w) {
		c = reexec_conn((uint64_t)json_integer_value(json_array_get(w, 0)));
		if (c)
			conn_reply(c, json_array_get(w, 1), json_incref(result));
	}
	log_info("reexec %u%s: took over %u workers and %u connections (event seq %llu)",
	    generation, fell_back ? " (back to the previous binary)" : "", sup_count_live(),
	    herdd.nconns, (unsigned long long)events_last_seq());
	json_decref(result);
	json_decref(adopted);
	adopted = NULL;
	/* A worker that ended while no herdd image ran is reaped now. */
	ev_feed_signal_event(herdd.loop, SIGCHLD);
}

/* ---- the predecessor ---- */

/* Why the state is not settled enough to hand over, or NULL. */
static const char *
unsettled(void)
{
	struct worker *w;

	if (list_busy())
		return "a list is being built";
	if (leader_busy())
		return "a spawn is in flight";
	TAILQ_FOREACH(w, &herdd.workers, link) {
		if (w->state == PROTO_STATE_STARTING || w->state == PROTO_STATE_STOPPING ||
		    ev_is_active(&w->grace_timer) || w->errpipe >= 0)
			return "a worker is starting or stopping";
		if (w->waiters)
			return "a request waits for a worker";
		if (!LIST_EMPTY(&w->cap[0].followers) || !LIST_EMPTY(&w->cap[1].followers))
			return "a worker's output is followed";
		if (w->channel && w->channel->peer.closed && !w->reaped)
			return "a worker closed its channel";
	}
	return NULL;
}

/* Answers every waiting request with an error (data stolen, may be NULL). */
static void
answer_error(int code, json_t *data, const char *text)
{
	while (waiters) {
		struct rx_waiter *x = waiters;

		waiters = x->next;
		conn_reply_error(
		    x->conn, x->id, code, data ? json_deep_copy(data) : NULL, "%s", text);
		conn_unref(x->conn);
		json_decref(x->id);
		free(x);
	}
	json_decref(data);
}

/* The reexec did not happen: herdd serves on, the waiters learn why. */
static void
fail(const char *stage, int err, const char *text)
{
	log_error("reexec failed (%s): %s; this herdd goes on", stage, text);
	answer_error(
	    HERD_E_INTERNAL_ERROR, json_pack("{s:s, s:i}", "stage", stage, "errno", err), text);
}

/* environ without our variables, plus extra (NULL-terminated). A new array of borrowed strings. */
static char **
child_env(char *const *extra)
{
	size_t n = 0, k = 0, i;
	char **env;

	while (environ[n])
		n++;
	for (i = 0; extra[i]; i++)
		k++;
	env = calloc(n + k + 1, sizeof(*env));
	if (!env)
		return NULL;
	k = 0;
	for (i = 0; i < n; i++)
		if (strncmp(environ[i], "HERDD_REEXEC_", 13) != 0)
			env[k++] = environ[i];
	for (i = 0; extra[i]; i++)
		env[k++] = extra[i];
	return env;
}

/* Runs binary as a probe on the state in memfd: 0 once it said it can take over. */
static int
probe(const char *binary, int memfd, char *why, size_t len)
{
	char state_var[64], probe_var[64], ready = 0;
	char *extra[] = { state_var, probe_var, NULL }, **env;
	int p[2], status, r = -ETIMEDOUT;
	int64_t deadline = now_ms() + PROBE_TIMEOUT_MS, left;
	struct pollfd pfd;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	snprintf(state_var, sizeof(state_var), ENV_STATE "=%d", memfd);
	snprintf(probe_var, sizeof(probe_var), ENV_PROBE "=%d", p[1]);
	env = child_env(extra);
	/*
	 * Forked by the loop's thread, unlike workers (leader.c): harmless, as
	 * the probe has no parent-death signal and is awaited below, the reexec
	 * only running once no spawn is in flight.
	 */
	pid = env ? fork() : -1;
	if (pid == 0) {
		fcntl(p[1], F_SETFD, 0);
		fcntl(memfd, F_SETFD, 0);
		execve(binary, self_argv, env);
		_exit(127);
	}
	r = pid < 0 ? (env ? -errno : -ENOMEM) : -ETIMEDOUT;
	free(env);
	close(p[1]);
	if (pid < 0) {
		close(p[0]);
		return r;
	}
	pfd = (struct pollfd){ .fd = p[0], .events = POLLIN };
	while ((left = deadline - now_ms()) > 0) {
		int n = poll(&pfd, 1, (int)left);

		if (n < 0 && errno == EINTR)
			continue;
		if (n > 0)
			r = read(p[0], &ready, 1) == 1 ? 0 : -EPROTO;
		break;
	}
	close(p[0]);
	if (r < 0)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (r == -ETIMEDOUT)
		snprintf(why, len, "%s did not answer within %d ms", binary, PROBE_TIMEOUT_MS);
	else if (r < 0 && WIFEXITED(status))
		snprintf(why, len, "%s exited with %d without taking the state", binary,
		    WEXITSTATUS(status));
	else if (r < 0)
		snprintf(why, len, "%s was killed by signal %d", binary,
		    WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	return r;
}

/* A sealed memfd holding state: the successor reads it, nobody can change it. */
static int
state_memfd(json_t *state)
{
	char *text = json_dumps(state, JSON_COMPACT);
	size_t len = text ? strlen(text) : 0, done = 0;
	int fd = text ? memfd_create("herdd-state", MFD_CLOEXEC | MFD_ALLOW_SEALING) : -1;

	while (fd >= 0 && done < len) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			fd = -1;
			break;
		}
		done += (size_t)n;
	}
	free(text);
	if (fd >= 0)
		fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
	return fd;
}

/* The state plus what only the reexec knows: the fds to keep and the waiters to answer. */
static json_t *
full_state(struct reexec_fds *fds)
{
	json_t *state = reexec_state_save(fds), *list = json_array(), *ws = json_array(),
	       *mask = json_array();
	struct rx_waiter *x;
	sigset_t cur;

	sigprocmask(SIG_BLOCK, NULL, &cur);
	for (int sig = 1; mask && sig < NSIG; sig++)
		if (sigismember(&cur, sig) == 1)
			json_array_append_new(mask, json_integer(sig));

	for (size_t i = 0; list && i < fds->n; i++)
		json_array_append_new(list, json_integer(fds->fd[i]));
	for (x = waiters; ws && x; x = x->next)
		if (!x->conn->peer.closed)
			json_array_append_new(
			    ws, json_pack("[I, O]", (json_int_t)x->conn->serial, x->id));
	if (!state || !list || !ws || json_object_set_new(state, "sigmask", mask) < 0 ||
	    json_object_set_new(state, "fds", list) < 0 ||
	    json_object_set_new(state, "waiters", ws) < 0 ||
	    json_object_set_new(state, "generation", json_integer(generation + 1)) < 0 ||
	    json_object_set_new(json_object_get(state, "server"), "socket_dir",
	        json_string(herdd.socket_dir)) < 0) {
		json_decref(state);
		return NULL;
	}
	return state;
}

static void
set_cloexec(const struct reexec_fds *fds, bool on)
{
	for (size_t i = 0; i < fds->n; i++)
		fcntl(fds->fd[i], F_SETFD, on ? FD_CLOEXEC : 0);
}

/* The execve, by the leader: one by another thread would end the leader and its workers. */
struct exec_task {
	struct leader_task task;
	const char *binary;
	char **env;
	int err;
};

static void
exec_run(struct leader_task *t)
{
	struct exec_task *e = (struct exec_task *)t;

	execve(e->binary, self_argv, e->env);
	e->err = -errno;
}

/* Executes binary in place with the state; returns only when execve failed (-errno). */
static int
exec_successor(const char *binary, int memfd, const struct reexec_fds *fds)
{
	char state_var[64], fallback_var[64];
	char *extra[] = { state_var, fallback_var, NULL }, **env;
	int old = open("/proc/self/exe", O_PATH);
	struct exec_task e = { .task.run = exec_run, .binary = binary };
	sigset_t all, prev;

	snprintf(state_var, sizeof(state_var), ENV_STATE "=%d", memfd);
	snprintf(fallback_var, sizeof(fallback_var), ENV_FALLBACK "=%d:%d", old, memfd);
	if (old < 0)
		extra[1] = NULL;
	env = child_env(extra);
	if (!env) {
		if (old >= 0)
			close(old);
		return -ENOMEM;
	}
	ids_close();
	/* A signal between here and the successor's watchers waits instead of killing. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &prev);
	set_cloexec(fds, false);
	fcntl(memfd, F_SETFD, 0);
	log_info("reexec: executing %s", binary);
	e.env = env;
	leader_call(&e.task);
	set_cloexec(fds, true);
	sigprocmask(SIG_SETMASK, &prev, NULL);
	ids_open(herdd.socket_dir);
	free(env);
	if (old >= 0)
		close(old);
	return e.err;
}

static void
reexec_now(void)
{
	const char *binary = next_binary ? next_binary : self_path;
	struct reexec_fds fds = { 0 };
	char why[512] = "";
	json_t *state;
	int memfd, r;

	wanted = false;
	if (!binary) {
		fail("prepare", ENOENT, "herdd does not know its own binary");
		return;
	}
	state = full_state(&fds);
	memfd = state ? state_memfd(state) : -1;
	json_decref(state);
	if (memfd < 0) {
		free(fds.fd);
		fail("prepare", ENOMEM, "the state could not be saved");
		return;
	}
	r = probe(binary, memfd, why, sizeof(why));
	if (r < 0) {
		fail("probe", -r, why[0] ? why : strerror(-r));
	} else {
		r = exec_successor(binary, memfd, &fds);
		snprintf(why, sizeof(why), "executing %s: %s", binary, strerror(-r));
		fail("exec", -r, why);
	}
	close(memfd);
	free(fds.fd);
	free(next_binary);
	next_binary = NULL;
}

static void
settle_stop(void)
{
	ev_prepare_stop(herdd.loop, &settle_check);
	ev_timer_stop(herdd.loop, &settle_timer);
}

/*
 * Before each poll (a check watcher started inside a callback would wait for
 * the next wakeup): once nothing is in flight, the reexec runs.
 */
static void
settle_check_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	if (herdd.stopping) {
		settle_stop();
		answer_error(HERD_E_SHUTTING_DOWN, NULL, "herdd is shutting down");
		return;
	}
	if (unsettled())
		return;
	settle_stop();
	reexec_now();
}

static void
settle_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	const char *why = unsettled();
	char text[160];

	settle_stop();
	wanted = false;
	log_warn(
	    "reexec: not settled within %u ms (%s); not reexecuting", WAIT_MS, why ? why : "?");
	snprintf(
	    text, sizeof(text), "herdd did not settle within %u ms: %s", WAIT_MS, why ? why : "?");
	answer_error(HERD_E_TIMEOUT,
	    json_pack("{s:s, s:I}", "what", "reexec", "ms", (json_int_t)WAIT_MS), text);
}

static void
want(void)
{
	const char *why = unsettled();

	if (wanted)
		return;
	if (why)
		log_info("reexec waits: %s", why);
	wanted = true;
	ev_prepare_start(herdd.loop, &settle_check);
	ev_timer_set(&settle_timer, WAIT_MS / 1000.0, 0.);
	ev_timer_start(herdd.loop, &settle_timer);
}

static void
usr2_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_info("SIGUSR2: reexecuting %s", next_binary ? next_binary : self_path);
	want();
}

/* reexec {binary?} -> the successor's {pid, binary, version, instance, seq, ...} */
void
h_reexec(struct conn *c, json_t *id, json_t *params)
{
	const char *binary = NULL;
	struct rx_waiter *x;

	if (dispatch_unpack(c, id, params, "{s?s}", "binary", &binary) < 0)
		return;
	if (!self_argv) {
		conn_reply_error(
		    c, id, HERD_E_INTERNAL_ERROR, NULL, "reexec is not available here");
		return;
	}
	if (c->cred.uid != 0 && c->cred.uid != herdd.uid) {
		conn_reply_error(c, id, HERD_E_PERMISSION_DENIED, NULL,
		    "only root and uid %u may reexec herdd", (unsigned)herdd.uid);
		return;
	}
	if (herdd.cfg.stdio) {
		conn_reply_error(c, id, HERD_E_INVALID_REQUEST, NULL,
		    "a --stdio herdd serves one link and cannot reexec");
		return;
	}
	if (binary && binary[0] != '/') {
		conn_reply_error(
		    c, id, HERD_E_INVALID_PARAMS, NULL, "binary must be an absolute path");
		return;
	}
	x = calloc(1, sizeof(*x));
	if (!x || (binary && !(binary = strdup(binary)))) {
		free(x);
		conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
		return;
	}
	if (binary) {
		free(next_binary);
		next_binary = (char *)binary;
	}
	x->conn = conn_ref(c);
	x->id = json_incref(id);
	x->next = waiters;
	waiters = x;
	want();
}

void
reexec_init(int argc, char **argv)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	const char *deleted = " (deleted)";

	/* The path, not the inode: an upgrade replaced the file there. */
	if (n > 0) {
		buf[n] = '\0';
		if ((size_t)n > strlen(deleted) && !strcmp(buf + n - strlen(deleted), deleted))
			buf[n - strlen(deleted)] = '\0';
		self_path = strdup(buf);
	}
	self_argv = calloc((size_t)argc + 1, sizeof(*self_argv));
	for (int i = 0; self_argv && i < argc; i++)
		self_argv[i] = argv[i];
	ev_signal_init(&sig_usr2, usr2_cb, SIGUSR2);
	ev_signal_start(herdd.loop, &sig_usr2);
	ev_prepare_init(&settle_check, settle_check_cb);
	ev_timer_init(&settle_timer, settle_timer_cb, 0., 0.);
}

void
reexec_cleanup(void)
{
	settle_stop();
	ev_signal_stop(herdd.loop, &sig_usr2);
	answer_error(HERD_E_SHUTTING_DOWN, NULL, "herdd is shutting down");
	json_decref(adopted);
	adopted = NULL;
	free(self_path);
	free(self_argv);
	free(next_binary);
	self_path = next_binary = NULL;
	self_argv = NULL;
}
