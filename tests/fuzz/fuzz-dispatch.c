/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for herdd's request handling: dispatch, hello, every
 * request handler, spawn's validation and the supervisor's bookkeeping, the
 * worker's channel, captured output, events and limits, in one process.
 * herdd-core is linked as herdd links it, with fake-spawn.c at the exec
 * boundary; the connections are socketpairs adopted as accepted ones.
 *
 * The input is lines. A line is written, newline included, to the current
 * peer, and the loop then runs until nothing is left to do (replies are read
 * and dropped). Lines starting with '!' steer instead (K is a digit):
 *   !cK       talk on control connection K (0-7, uid 1000, 1000, 0, 1001, ...),
 *             adopted on first use
 *   !wK       talk on worker K's channel, as the worker (K: K-th spawn here)
 *   !oK TEXT  worker K writes TEXT to its stdout; !eK to its stderr
 *   !xK N     worker K exits with status N: its fds close, then the reap
 *   !kK N     worker K is killed by signal N, reaped at once
 *   !zK       worker K closes its channel and lives on
 *   !q        the current peer closes its end
 *   !t        time passes: every armed timer of herdd's fires now
 *   !s        herdd begins its shutdown
 *   !u        herdd runs as uid 1000 (a user's daemon), not as root
 *   !L        small limits (connections, workers, requests in flight, output)
 *   !F        the next spawn fails in clone()
 * Anything else after '!' is sent like any line. At the end every peer
 * closes, every worker is killed and reaped, and the state is freed.
 * Oracles, beyond "no crash, no leak, no UB": the counters herdd keeps
 * (connections, unauthenticated ones, workers by state, requests in flight,
 * workers per master) agree with its lists after every step, and teardown
 * leaves no watcher in the loop and no fd open.
 * The same function replays the committed corpus in every build (replay.c).
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fake-spawn.h"
#include "fuzz.h"
#include "herdd.h"

#define MAX_CONNS 8
/* Rounds of the loop without progress before it counts as settled, and at most. */
#define IDLE_ROUNDS 2
#define MAX_ROUNDS  64

enum target_kind { TO_CONTROL, TO_WORKER };

static struct herdd_config base_cfg;
/* One loop for every input: its fds stay from one input to the next. */
static struct ev_loop *loop;
static char base_dir[] = "/tmp/herd-fuzz-XXXXXX";
static char *workers_dir;
static int base_fds;

/* The client ends of the control connections: -1 not yet adopted, -2 closed. */
static int clients[MAX_CONNS];
static enum target_kind target;
static unsigned target_index;
static uint64_t drained;
/* HERD_FUZZ_VERBOSE=1: herdd's log and every reply go to stderr, for writing seeds. */
static bool verbose;

/* Open fds of this process; with show, each with what it is, on stderr. */
static int
count_fds(bool show)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	char path[300], what[256];
	int n = 0;

	FUZZ_CHECK(d != NULL);
	while ((e = readdir(d))) {
		ssize_t k;

		n++;
		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		if (show && (k = readlink(path, what, sizeof(what) - 1)) > 0)
			fprintf(stderr, "fd %s: %.*s\n", e->d_name, (int)k, what);
	}
	closedir(d);
	return n;
}

/* Removes the per-uid worker directories and the base directory. */
static void
remove_dirs(void)
{
	DIR *d = opendir(workers_dir);
	struct dirent *e;
	char path[512];

	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", workers_dir, e->d_name);
		rmdir(path);
	}
	if (d)
		closedir(d);
	rmdir(workers_dir);
	rmdir(base_dir);
}

/* Once per process: herdd's configuration as its options make it, a log to /dev/null. */
static void
init_once(void)
{
	static char args[] = "herdd\0--log-level\0debug\0--log-file\0/dev/null";
	char *argv[6] = { NULL };

	/* getopt wants writable strings. */
	for (int i = 0, at = 0; i < 5; at += (int)strlen(args + at) + 1)
		argv[i++] = args + at;
	verbose = getenv("HERD_FUZZ_VERBOSE") != NULL;
	main_parse_options(verbose ? 3 : 5, argv);
	base_cfg = herdd.cfg;
	FUZZ_CHECK(log_open(base_cfg.log_level, base_cfg.log_file) == 0);
	signal(SIGPIPE, SIG_IGN);
	FUZZ_CHECK(mkdtemp(base_dir) != NULL);
	FUZZ_CHECK(asprintf(&workers_dir, "%s/workers", base_dir) > 0);
	FUZZ_CHECK(mkdir(workers_dir, 0755) == 0);
	atexit(remove_dirs);
	/* The loop's own fds stay from one input to the next (not libev's default loop,
	 * which would take SIGCHLD for itself: herdd reaps through its own watcher). */
	loop = ev_loop_new(EVFLAG_AUTO);
	FUZZ_CHECK(loop != NULL);
	{
		/* herdd's SIGCHLD watcher makes libev open its signal pipe once, for good:
		 * opened here, it is not counted as an fd the first input leaked. */
		ev_signal warm;

		ev_signal_init(&warm, NULL, SIGCHLD);
		ev_signal_start(loop, &warm);
		ev_signal_stop(loop, &warm);
	}
}

/* A fresh herdd: a root daemon without a listening socket. */
static void
state_new(void)
{
	herdd = (struct herdd){ 0 };
	herdd.loop = loop;
	herdd.cfg = base_cfg;
	herdd.pid = getpid();
	herdd.started_ms = now_ms();
	herdd.listen_fd = herdd.lock_fd = herdd.reserve_fd = -1;
	herdd.max_fds = 1024;
	herdd.workers_dir = workers_dir;
	main_state_init();
	for (int i = 0; i < MAX_CONNS; i++)
		clients[i] = -1;
	target = TO_CONTROL;
	target_index = 0;
	fake_reset();
}

static void
small_limits(void)
{
	herdd.cfg.max_connections = 4;
	herdd.cfg.max_connections_per_uid = 2;
	herdd.cfg.max_unauthenticated = 3;
	herdd.cfg.max_workers = 3;
	herdd.cfg.max_workers_per_uid = 2;
	herdd.cfg.max_workers_per_master = 2;
	herdd.cfg.max_pending = 2;
	herdd.cfg.keep_exited = 1;
	herdd.cfg.keep_exited_ms = 0;
	herdd.cfg.max_output = 4096;
}

/* Reads and drops what is waiting on fd; returns -1 at EOF or on an error. */
static int
drain_fd(int fd)
{
	char buf[65536];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		drained += (uint64_t)n;
		if (verbose)
			fprintf(stderr, "fd %d got: %.*s", fd, (int)n, buf);
	}
	return n == 0 || errno != EAGAIN ? -1 : 0;
}

static void
drain_clients(void)
{
	for (int i = 0; i < MAX_CONNS; i++) {
		if (clients[i] >= 0 && drain_fd(clients[i]) < 0) {
			close(clients[i]);
			clients[i] = -2;
		}
	}
	for (unsigned k = 0; k < fake_count; k++) {
		struct fake_worker *f = &fake_workers[k];

		if (f->channel >= 0 && drain_fd(f->channel) < 0) {
			close(f->channel);
			f->channel = -1;
		}
	}
}

/* What changes while herdd still has work: bytes moved and connections. */
static uint64_t
progress_mark(void)
{
	return herdd.stats.bytes_in + herdd.stats.bytes_out + drained + herdd.nconns +
	    ((uint64_t)sup_count_live() << 32);
}

static void fake_exit(struct fake_worker *f, int status, bool settle_first);

/* Runs the loop without blocking until a few rounds change nothing. */
static void
settle(void)
{
	int idle = 0;

	for (int i = 0; i < MAX_ROUNDS && idle < IDLE_ROUNDS; i++) {
		uint64_t before = progress_mark();

		ev_run(herdd.loop, EVRUN_NOWAIT);
		drain_clients();
		/* A failed exec's process exits after its report, outside herdd's callbacks. */
		for (unsigned k = 0; k < fake_count; k++) {
			if (fake_workers[k].exit_status >= 0 && !fake_workers[k].exited)
				fake_exit(&fake_workers[k], fake_workers[k].exit_status, false);
		}
		idle = progress_mark() == before ? idle + 1 : 0;
	}
}

/* The worker's process ends: its fds close, and herdd reaps it (after seeing the EOFs). */
static void
fake_exit(struct fake_worker *f, int status, bool settle_first)
{
	if (f->exited)
		return;
	fake_close_fds(f);
	f->exited = true;
	if (settle_first)
		settle();
	sup_reap(f->pid, status, NULL);
}

/* The counters herdd keeps agree with its lists. */
static void
check_invariants(void)
{
	unsigned nconns = 0, nunauth = 0, by_state[PROTO_STATE_COUNT] = { 0 };
	struct worker *w;
	struct conn *c;

	TAILQ_FOREACH(w, &herdd.workers, link) {
		FUZZ_CHECK(w->listed && (unsigned)w->state < PROTO_STATE_COUNT);
		by_state[w->state]++;
		FUZZ_CHECK(sup_is_live(w) || w->reaped);
	}
	for (int s = 0; s < PROTO_STATE_COUNT; s++)
		FUZZ_CHECK(by_state[s] == herdd.nworkers[s]);
	TAILQ_FOREACH(c, &herdd.conns, link) {
		unsigned pending = 0, owned = 0;

		nconns++;
		nunauth += !c->hello;
		TAILQ_FOREACH(w, &herdd.workers, link) {
			for (struct waiter *x = w->waiters; x; x = x->next)
				pending += x->conn == c;
			owned += w->owner == c && !w->reaped;
		}
		FUZZ_CHECK(c->pending == pending);
		FUZZ_CHECK(c->nworkers == owned);
	}
	FUZZ_CHECK(nconns == herdd.nconns);
	FUZZ_CHECK(nunauth == herdd.nunauth);
}

/* The fd the current target's lines go to, or -1 when it is gone. */
static int
target_fd(void)
{
	if (target == TO_WORKER)
		return target_index < fake_count ? fake_workers[target_index].channel : -1;
	if (clients[target_index] == -1) {
		static const uid_t uids[] = { 1000, 1000, 0, 1001 };
		struct ucred cred = { .pid = 100 + (pid_t)target_index,
			.uid = uids[target_index % 4],
			.gid = uids[target_index % 4] };
		int sv[2];

		FUZZ_CHECK(
		    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0);
		clients[target_index] = sv[1];
		server_adopt(sv[0], &cred);
	}
	return clients[target_index];
}

/* Writes all of text to fd, letting herdd read in between; gives up on a peer that does not. */
static void
send_all(int fd, const char *text, size_t len)
{
	for (int tries = 0; fd >= 0 && len > 0 && tries < 16; tries++) {
		ssize_t n = write(fd, text, len);

		if (n < 0 && errno != EAGAIN)
			return;
		if (n > 0) {
			text += n;
			len -= (size_t)n;
		}
		if (len > 0)
			settle();
	}
}

/* Makes a peer's deadlines due (handshake, flush, heartbeats) and wakes it. */
static void
peer_time_passes(struct herd__peer *p)
{
	if (p->released)
		return;
	if (p->deadline != HERD__PEER_USEC_INFINITY)
		p->deadline = 0;
	if (p->closed)
		p->flush_deadline = 0;
	if (p->hb_timeout_ms)
		p->last_recv = 0;
	if (p->hb_interval_ms)
		p->next_beat = 0;
	if (p->loop)
		ev_feed_event(herdd.loop, &p->ev.timer, EV_TIMER);
}

/* Makes every armed timer of herdd's due now: the workers' and the connections'. */
static void
time_passes(void)
{
	struct worker *w;
	struct conn *c;

	TAILQ_FOREACH(w, &herdd.workers, link) {
		ev_timer *once[] = { &w->spawn_timer, &w->grace_timer, &w->conn_timer };

		for (size_t i = 0; i < sizeof(once) / sizeof(once[0]); i++) {
			/* As libev fires a timer without repeat: stopped, then called. */
			if (ev_is_active(once[i])) {
				ev_timer_stop(herdd.loop, once[i]);
				ev_feed_event(herdd.loop, once[i], EV_TIMER);
			}
		}
		if (ev_is_active(&w->hb_timer))
			ev_feed_event(herdd.loop, &w->hb_timer, EV_TIMER);
		if (w->channel)
			peer_time_passes(&w->channel->peer);
	}
	TAILQ_FOREACH(c, &herdd.conns, link)
		peer_time_passes(&c->peer);
}

/* The number after a directive's letter and index ("!x0 3": 3), or def. */
static int
directive_number(const char *s, size_t len, int def)
{
	char buf[16];

	if (len < 4 || s[3] != ' ' || len - 4 >= sizeof(buf))
		return def;
	memcpy(buf, s + 4, len - 4);
	buf[len - 4] = '\0';
	return atoi(buf);
}

/* Carries out a "!" line; returns false for one that is not a directive. */
static bool
directive(const char *s, size_t len)
{
	unsigned k = len >= 3 && s[2] >= '0' && s[2] <= '9' ? (unsigned)(s[2] - '0') : 0;
	struct fake_worker *f = k < fake_count ? &fake_workers[k] : NULL;
	int fd, sig;

	switch (len >= 2 ? s[1] : 0) {
	case 'c':
		target = TO_CONTROL;
		target_index = k % MAX_CONNS;
		return true;
	case 'w':
		target = TO_WORKER;
		target_index = k;
		return true;
	case 'o':
	case 'e':
		fd = f ? f->out[s[1] == 'e'] : -1;
		if (fd >= 0 && len > 4) {
			send_all(fd, s + 4, len - 4);
			send_all(fd, "\n", 1);
		}
		return true;
	case 'x':
		if (f)
			fake_exit(f, (directive_number(s, len, 0) & 0xff) << 8, true);
		return true;
	case 'k':
		sig = directive_number(s, len, SIGKILL) & 0x3f;
		if (f)
			fake_exit(f, sig ? sig : SIGKILL, false);
		return true;
	case 'z':
		if (f && f->channel >= 0) {
			close(f->channel);
			f->channel = -1;
		}
		return true;
	case 'q':
		fd = target_fd();
		if (fd >= 0 && target == TO_CONTROL) {
			close(fd);
			clients[target_index] = -2;
		} else if (fd >= 0) {
			close(fd);
			fake_workers[target_index].channel = -1;
		}
		return true;
	case 't':
		time_passes();
		return true;
	case 's':
		herdd.stopping = true;
		sup_stop_all();
		return true;
	case 'u':
		herdd.uid = 1000;
		return true;
	case 'L':
		small_limits();
		return true;
	case 'F':
		fake_fail_next_clone = true;
		return true;
	default:
		return false;
	}
}

/* Every peer closes, every worker dies, and herdd's state is freed: nothing may be left. */
static void
teardown(void)
{
	for (int i = 0; i < MAX_CONNS; i++) {
		if (clients[i] >= 0)
			close(clients[i]);
		clients[i] = -2;
	}
	for (unsigned k = 0; k < fake_count; k++)
		fake_close_fds(&fake_workers[k]);
	settle();
	for (unsigned k = 0; k < fake_count; k++)
		fake_exit(&fake_workers[k], SIGKILL, false);
	settle();
	check_invariants();
	main_state_free();
	FUZZ_CHECK(herdd.nconns == 0 && herdd.nunauth == 0 && sup_count_live() == 0);
	/* No watcher left behind: nothing would keep a loop alive. */
	FUZZ_CHECK(ev_run(herdd.loop, EVRUN_NOWAIT) == 0);
	FUZZ_CHECK(count_fds(false) == base_fds || count_fds(true) < 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	const char *s = (const char *)data, *end = s + size;

	if (!ready) {
		init_once();
		ready = true;
	}
	/* Counted per input: libFuzzer opens and closes fds of its own between inputs. */
	base_fds = count_fds(false);
	state_new();
	while (s < end) {
		const char *nl = memchr(s, '\n', (size_t)(end - s));
		size_t len = nl ? (size_t)(nl - s) : (size_t)(end - s);

		if (!(len >= 1 && s[0] == '!' && directive(s, len))) {
			int fd = target_fd();

			/* The line and its newline; a last line without one stays unfinished. */
			send_all(fd, s, nl ? len + 1 : len);
		}
		settle();
		check_invariants();
		s += nl ? len + 1 : len;
	}
	teardown();
	return 0;
}
