/* SPDX-License-Identifier: MIT */
/*
 * herdd's control plane under load, against a running herdd ($HERD_SOCKET):
 *
 *   herd-load load WORKER MASTERS RATE SECONDS LIVE CHURN
 *       MASTERS connections send RATE requests/s in all (ping, stats and 1%
 *       list of a few fields), open loop, for SECONDS; meanwhile one master
 *       keeps LIVE workers, spawning CHURN a second and shutting down the
 *       oldest, one worker is SIGKILLed a second, and a forked master with
 *       workers of its own is SIGKILLed every two seconds. Spawn-to-ready
 *       under that load is set beside spawns at the same CHURN a second on
 *       an idle herdd (and back to back, for reference).
 *   herd-load lister WORKER MASTERS RATE SECONDS WORKERS
 *       WORKERS workers live; herdd's CPU per list of them (all fields, and a
 *       few); then the same load twice, without and with one more client (a
 *       process of its own) listing them all in a loop: everyone else's
 *       latency.
 *   herd-load ping MASTERS WINDOW SECONDS
 *       ping only, WINDOW in flight on each connection, herdd on one CPU.
 *
 * WORKER is the absolute path of herd-testworker. It speaks the wire itself
 * (raw sockets, jansson) so the client costs little beside herdd. Figures
 * are JSON lines like the other benchmarks'. At the end it checks that
 * nothing was lost: every request answered exactly once, every killed
 * master's workers gone, no zombie child of herdd, herdd's open fds back to
 * their count at the start; if anything was lost it says what on stderr and
 * exits 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "stats.h"

/* Requests in flight per connection: ids map to slots of a ring this big. */
#define RING 1024
/* Workers each forked master spawns before it is killed. */
#define DOOMED_WORKERS 4
/* How long the end may take to settle (replies, reaps, fds). */
#define SETTLE_NS (15ull * 1000000000ull)

enum kind { K_NONE, K_PING, K_STATS, K_LIST, K_SPAWN, K_SHUTDOWN };

struct slot {
	uint64_t id; /* 0: free */
	uint64_t t0;
	enum kind kind;
};

struct conn {
	int fd;
	uint64_t next_id;
	unsigned inflight;
	struct slot ring[RING];
	char *in;
	size_t in_len, in_cap;
	bool sample; /* its latencies count (a lister's do not) */
};

struct live {
	char id[24];
	int pidfd;
};

struct doomed {
	int pidfds[DOOMED_WORKERS];
	int left;
	uint64_t killed_at;
};

static const char *sock_path;
static pid_t herdd_pid;
static int ep;
static struct conn *conns;
static int nconns;
/* Request counts: every one sent must be answered exactly once. */
static uint64_t sent, answered, errors, unknown;
static struct samples lat, orphan_lat;
static struct live *lives;
static int nlive, cap_live;
static struct doomed *doomeds;
static int ndoomed;
static bool refill; /* ping mode: a reply sends the next ping */

static void __attribute__((noreturn)) die(const char *what)
{
	fprintf(stderr, "herd-load: %s: %s\n", what, strerror(errno));
	exit(1);
}

/* Adds fd to the epoll set; tag says what it is. */
static void
watch(int fd, uint32_t tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };

	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

/*
 * herdd's CPU time (all its threads, user + system) in ns: its process CPU
 * clock, exact to the nanosecond where /proc/PID/stat's ticks are 10 ms,
 * which a figure of a millisecond per list cannot be told from.
 */
static uint64_t
herdd_cpu_ns(void)
{
	static clockid_t clock;
	static bool have;
	struct timespec ts;

	if (!have) {
		int r = clock_getcpuclockid(herdd_pid, &clock);

		if (r != 0) {
			errno = r;
			die("herdd's CPU clock");
		}
		have = true;
	}
	if (clock_gettime(clock, &ts) < 0)
		die("herdd's CPU clock");
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* herdd's open fds. */
static int
herdd_fds(void)
{
	char path[64];
	struct dirent *d;
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)herdd_pid);
	dir = opendir(path);
	if (!dir)
		die("herdd's /proc/PID/fd");
	while ((d = readdir(dir)))
		n += d->d_name[0] != '.';
	closedir(dir);
	return n;
}

/* Zombie children of herdd (its workers it has not reaped). */
static int
herdd_zombies(void)
{
	char path[96], buf[32];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)herdd_pid, (int)herdd_pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fscanf(f, "%31s", buf) == 1) {
		char sp[64], line[512], *p;
		FILE *s;

		snprintf(sp, sizeof(sp), "/proc/%s/stat", buf);
		s = fopen(sp, "re");
		if (s && fgets(line, sizeof(line), s) && (p = strrchr(line, ')')) && p[2] == 'Z')
			n++;
		if (s)
			fclose(s);
	}
	fclose(f);
	return n;
}

/* A blocking connection to herdd (non-blocking once it joins the loop). */
static int
dial(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		die("socket");
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock_path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect to herdd");
	return fd;
}

/* Writes all of s to a socket or pipe (waiting: the requests are small and herdd reads them). */
static void
write_all(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0 && errno == EAGAIN) {
			struct pollfd p = { .fd = fd, .events = POLLOUT };

			poll(&p, 1, 100);
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("send");
		s += w;
		n -= (size_t)w;
	}
}

/* Sends request method(params) on c (params stolen), remembering its kind and time. */
static bool
request(struct conn *c, enum kind kind, const char *method, json_t *params)
{
	uint64_t id = ++c->next_id;
	struct slot *s = &c->ring[id % RING];
	json_t *m;
	char *text;

	if (s->id) {
		/* The ring is full: this connection has RING requests unanswered. */
		c->next_id--;
		json_decref(params);
		return false;
	}
	m = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id, "method",
	    method, "params", params ? params : json_object());
	text = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	*s = (struct slot){ id, bench_now_ns(), kind };
	c->inflight++;
	if (kind != K_SPAWN && kind != K_SHUTDOWN)
		sent++;
	write_all(c->fd, text, strlen(text));
	write_all(c->fd, "\n", 1);
	free(text);
	return true;
}

static void on_reply(struct conn *c, struct slot *s, json_t *msg, uint64_t now);

/* One line from herdd: a reply is matched to its slot, exactly once; notifications pass. */
static void
on_line(struct conn *c, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *msg = json_loadb(line, len, 0, &jerr), *idv;
	struct slot *s;
	uint64_t id;

	if (!msg) {
		fprintf(stderr, "herd-load: unparsable line from herdd: %s\n", jerr.text);
		unknown++;
		return;
	}
	idv = json_object_get(msg, "id");
	if (!idv) {
		json_decref(msg);
		return;
	}
	id = json_is_integer(idv) ? (uint64_t)json_integer_value(idv) : 0;
	s = &c->ring[id % RING];
	if (!id || s->id != id) {
		fprintf(stderr, "herd-load: reply to an id not in flight: %.*s\n",
		    bench_cut(line, len, 200), line);
		unknown++;
	} else {
		on_reply(c, s, msg, bench_now_ns());
		s->id = 0;
		c->inflight--;
	}
	json_decref(msg);
}

/* At least 64 KiB free in c's input buffer past its first used bytes. */
static void
conn_room(struct conn *c, size_t used)
{
	if (c->in_cap - used >= 65536)
		return;
	c->in_cap = c->in_cap ? c->in_cap * 2 : 131072;
	c->in = realloc(c->in, c->in_cap);
	if (!c->in)
		die("realloc");
}

/* Reads what herdd sent on c. Returns false at EOF. */
static bool
conn_read(struct conn *c)
{
	for (;;) {
		ssize_t n;
		size_t start = 0;
		char *nl;

		conn_room(c, c->in_len);
		n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return true;
		if (n <= 0)
			return false;
		c->in_len += (size_t)n;
		while ((nl = memchr(c->in + start, '\n', c->in_len - start))) {
			on_line(c, c->in + start, (size_t)(nl - (c->in + start)));
			start = (size_t)(nl - c->in) + 1;
		}
		memmove(c->in, c->in + start, c->in_len - start);
		c->in_len -= start;
	}
}

/* Opens n connections that said hello as masters, hellos a few at a time (herdd's limit). */
static void
open_conns(int n)
{
	const char *hello = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":{"
	                    "\"version\":1,\"role\":\"master\",\"settings\":{"
	                    "\"heartbeat_interval_ms\":0,\"heartbeat_timeout_ms\":0}}}\n";

	conns = calloc((size_t)n, sizeof(*conns));
	if (!conns)
		die("calloc");
	for (int i = 0; i < n; i += 8) {
		for (int k = i; k < n && k < i + 8; k++) {
			conns[k].fd = dial();
			write_all(conns[k].fd, hello, strlen(hello));
		}
		for (int k = i; k < n && k < i + 8; k++) {
			char buf[4096];
			ssize_t r = recv(conns[k].fd, buf, sizeof(buf) - 1, 0);
			json_t *res;

			if (r <= 0)
				die("hello");
			buf[r] = '\0';
			res = json_loads(buf, 0, NULL);
			if (!json_object_get(res, "result")) {
				fprintf(stderr, "herd-load: hello refused: %s\n", buf);
				exit(1);
			}
			json_decref(res);
			fcntl(conns[k].fd, F_SETFL, O_NONBLOCK);
			conns[k].sample = true;
			watch(conns[k].fd, (uint32_t)k);
		}
	}
	nconns = n;
}

/* Closes every connection (a master's close stops its master_disconnect workers). */
static void
close_conns(void)
{
	for (int i = 0; i < nconns; i++) {
		close(conns[i].fd);
		free(conns[i].in);
	}
	free(conns);
	conns = NULL;
	nconns = 0;
}

/* ---- the churn master's workers, worker kills, doomed masters ---- */

static struct samples *spawn_into; /* where spawn-to-ready goes now */
static uint64_t spawn_errors;
static const char *worker_path;

static void
live_add(const char *id, pid_t pid)
{
	if (nlive == cap_live) {
		cap_live = cap_live ? cap_live * 2 : 256;
		lives = realloc(lives, (size_t)cap_live * sizeof(*lives));
		if (!lives)
			die("realloc");
	}
	snprintf(lives[nlive].id, sizeof(lives[nlive].id), "%s", id);
	lives[nlive].pidfd = pidfd_open(pid, 0);
	nlive++;
}

/* Forgets live worker i (its pidfd kept in *pidfd if asked, else closed). */
static void
live_drop(int i, int *pidfd)
{
	if (pidfd)
		*pidfd = lives[i].pidfd;
	else if (lives[i].pidfd >= 0)
		close(lives[i].pidfd);
	lives[i] = lives[--nlive];
}

static void
on_reply(struct conn *c, struct slot *s, json_t *msg, uint64_t now)
{
	json_t *res = json_object_get(msg, "result");

	switch (s->kind) {
	case K_SPAWN:
		if (!res) {
			spawn_errors++;
			fprintf(stderr, "herd-load: spawn failed: %s\n",
			    json_string_value(
			        json_object_get(json_object_get(msg, "error"), "message")));
			return;
		}
		if (spawn_into)
			samples_add(spawn_into, now - s->t0);
		live_add(json_string_value(json_object_get(res, "id")) ?: "?",
		    (pid_t)json_integer_value(json_object_get(res, "pid")));
		return;
	case K_SHUTDOWN:
		return;
	default:
		break;
	}
	answered++;
	if (!res) {
		if (errors++ < 5)
			fprintf(stderr, "herd-load: error reply: %s\n",
			    json_string_value(
			        json_object_get(json_object_get(msg, "error"), "message")));
		return;
	}
	if (c->sample)
		samples_add(&lat, now - s->t0);
	if (refill && s->kind == K_PING) {
		/* The slot is freed after this returns: the next ping takes the following one. */
		request(c, K_PING, "ping", NULL);
	}
}

static void
spawn_one(struct conn *c)
{
	request(c, K_SPAWN, "spawn",
	    json_pack("{s:s, s:s}", "path", worker_path, "shutdown_on", "master_disconnect"));
}

/* Shuts down the oldest live worker (answered once it is reaped). */
static void
shutdown_oldest(struct conn *c)
{
	if (nlive == 0)
		return;
	request(
	    c, K_SHUTDOWN, "shutdown", json_pack("{s:s, s:i}", "id", lives[0].id, "grace_ms", 500));
	live_drop(0, NULL);
}

/* SIGKILLs one live worker of the churn master (through its pidfd: never a recycled pid). */
static void
kill_one(void)
{
	int fd;

	if (nlive == 0)
		return;
	live_drop(rand() % nlive, &fd);
	if (fd >= 0) {
		pidfd_send_signal(fd, SIGKILL, NULL, 0);
		close(fd);
	}
}

/* A forked master: spawns its workers, says their pids on out, then waits to be killed. */
static void __attribute__((noreturn)) doomed_master(int out)
{
	char line[65536], pids[256] = "";
	int fd = dial(), got = 0;
	FILE *f = fdopen(fd, "r");
	size_t n = 0;

	const char *hello = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":{"
	                    "\"version\":1,\"role\":\"master\",\"settings\":{"
	                    "\"heartbeat_interval_ms\":0,\"heartbeat_timeout_ms\":0}}}\n";
	write_all(fd, hello, strlen(hello));
	for (int k = 1; k <= DOOMED_WORKERS; k++) {
		snprintf(line, sizeof(line),
		    "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"spawn\",\"params\":{\"path\":\"%"
		    "s\","
		    "\"shutdown_on\":\"master_disconnect\"}}\n",
		    k, worker_path);
		write_all(fd, line, strlen(line));
	}
	while (got < DOOMED_WORKERS && f && fgets(line, sizeof(line), f)) {
		json_t *m = json_loads(line, 0, NULL), *res = json_object_get(m, "result");
		json_int_t id = json_integer_value(json_object_get(m, "id"));

		if (id >= 1 && id <= DOOMED_WORKERS) {
			got++;
			n += (size_t)snprintf(pids + n, sizeof(pids) - n, "%lld ",
			    res ? (long long)json_integer_value(json_object_get(res, "pid")) : 0ll);
		}
		json_decref(m);
	}
	pids[n ? n - 1 : 0] = '\n';
	write_all(out, pids, n ? n : 1);
	for (;;)
		pause();
}

struct pending_doomed {
	pid_t pid;
	int pipe_fd;
};
static struct pending_doomed doomed_starting = { 0, -1 };

#define TAG_DOOMED_PIPE 0x40000000u
#define TAG_PIDFD       0x80000000u

/* Forks a master that will be killed once its workers are up. */
/* Forks a child that runs fn(the write end of a pipe); *ret_fd is the read end. */
static pid_t
fork_with_pipe(void (*fn)(int out), int *ret_fd)
{
	int p[2];
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe2");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(p[0]);
		fn(p[1]);
		_exit(1);
	}
	close(p[1]);
	*ret_fd = p[0];
	return pid;
}

static void
doomed_start(void)
{
	int fd;

	if (doomed_starting.pid)
		return;
	doomed_starting.pid = fork_with_pipe(doomed_master, &fd);
	doomed_starting.pipe_fd = fd;
	watch(fd, TAG_DOOMED_PIPE);
}

/* The doomed master said its workers' pids: pin them with pidfds, then SIGKILL it. */
static void
doomed_kill(void)
{
	char buf[256] = "";
	ssize_t n = read(doomed_starting.pipe_fd, buf, sizeof(buf) - 1);
	struct doomed *d;
	char *p = buf;
	int status;

	epoll_ctl(ep, EPOLL_CTL_DEL, doomed_starting.pipe_fd, NULL);
	close(doomed_starting.pipe_fd);
	doomeds = realloc(doomeds, (size_t)(ndoomed + 1) * sizeof(*doomeds));
	if (!doomeds)
		die("realloc");
	d = &doomeds[ndoomed];
	memset(d, 0, sizeof(*d));
	for (int k = 0; k < DOOMED_WORKERS; k++) {
		long pid = n > 0 ? strtol(p, &p, 10) : 0;
		int fd = pid > 0 ? pidfd_open((pid_t)pid, 0) : -1;

		d->pidfds[k] = fd;
		if (fd < 0) {
			spawn_errors += pid <= 0;
			continue;
		}
		watch(fd, TAG_PIDFD | (uint32_t)(ndoomed * DOOMED_WORKERS + k));
		d->left++;
	}
	d->killed_at = bench_now_ns();
	kill(doomed_starting.pid, SIGKILL);
	waitpid(doomed_starting.pid, &status, 0);
	doomed_starting = (struct pending_doomed){ 0, -1 };
	ndoomed++;
}

/* A doomed master's worker exited. */
static void
doomed_worker_gone(uint32_t tag)
{
	struct doomed *d = &doomeds[tag / DOOMED_WORKERS];
	int *fd = &d->pidfds[tag % DOOMED_WORKERS];

	epoll_ctl(ep, EPOLL_CTL_DEL, *fd, NULL);
	close(*fd);
	*fd = -1;
	if (--d->left == 0)
		samples_add(&orphan_lat, bench_now_ns() - d->killed_at);
}

/*
 * How long each wakeup of this process took to handle what was ready, while
 * a phase is measured: a reply read last in a wakeup waited that long here,
 * not in herdd.
 */
static struct samples *busy_into;

/* Handles what is ready, waiting at most timeout_ms. */
static void
poll_once(int timeout_ms)
{
	struct epoll_event evs[256];
	int n = epoll_wait(ep, evs, 256, timeout_ms);
	uint64_t t0 = bench_now_ns();

	for (int i = 0; i < n; i++) {
		uint32_t tag = evs[i].data.u32;

		if (tag == TAG_DOOMED_PIPE)
			doomed_kill();
		else if (tag & TAG_PIDFD)
			doomed_worker_gone(tag & ~TAG_PIDFD);
		else if (!conn_read(&conns[tag])) {
			fprintf(stderr, "herd-load: herdd closed connection %u\n", tag);
			exit(1);
		}
	}
	if (busy_into && n > 0)
		samples_add(busy_into, bench_now_ns() - t0);
}

/* ---- phases ---- */

struct load {
	int masters;
	double rate; /* requests/s in all, open loop */
	double seconds;
	int live; /* the churn master's workers */
	double churn; /* its spawns/s (each with a shutdown once at live) */
	bool kills; /* a worker SIGKILLed a second, a master every two */
};

static const char *const method_names[] = {
	[K_PING] = "ping", [K_STATS] = "stats", [K_LIST] = "list"
};

#define SEC 1000000000ull

static struct conn *
churn_conn(int masters)
{
	return &conns[masters];
}

static struct conn *
lister_conn(int masters)
{
	return &conns[masters + 1];
}

static bool
any_inflight(void)
{
	for (int i = 0; i < nconns; i++)
		if (conns[i].inflight)
			return true;
	return false;
}

/* Runs the loop until every request was answered, or the deadline. */
static void
wait_replies(uint64_t deadline)
{
	while (any_inflight() && bench_now_ns() < deadline)
		poll_once(10);
}

/* The next request of the mix: ping, one in ten stats, one in a hundred a list of a few fields. */
static void
offer(struct conn *c, uint64_t n)
{
	enum kind k = n % 100 == 99 ? K_LIST : n % 10 == 5 ? K_STATS : K_PING;

	request(c, k, method_names[k],
	    k == K_LIST ? json_pack("{s:[sss]}", "fields", "id", "state", "rss_kib") : NULL);
}

/* One task's time runnable but waiting for a CPU, in ns, from its schedstat file. */
static uint64_t
task_wait_ns(const char *path)
{
	unsigned long long run = 0, wait = 0;
	FILE *f = fopen(path, "re");

	if (!f || fscanf(f, "%llu %llu", &run, &wait) != 2)
		wait = 0;
	if (f)
		fclose(f);
	return wait;
}

/*
 * Time pid (0: this process) spent runnable but waiting for a CPU, in ns,
 * summed over its threads (herdd's loop is not its main thread): on a
 * shared machine, the part of a latency that is neither herdd's work nor
 * this client's but the other tasks'.
 */
static uint64_t
runq_wait_ns(pid_t pid)
{
	char path[300];
	struct dirent *e;
	uint64_t wait = 0;
	DIR *d;

	if (!pid)
		return task_wait_ns("/proc/self/schedstat");
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	while (d && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/schedstat", (int)pid, e->d_name);
		wait += task_wait_ns(path);
	}
	if (d)
		closedir(d);
	return wait;
}

/*
 * The machine's CPU pressure so far, in us (/proc/pressure/cpu, "some"):
 * time in which at least one task, anyone's, waited for a CPU. 0 without PSI.
 */
static uint64_t
cpu_pressure_us(void)
{
	unsigned long long total = 0;
	FILE *f = fopen("/proc/pressure/cpu", "re");

	if (!f || fscanf(f, "some avg10=%*f avg60=%*f avg300=%*f total=%llu", &total) != 1)
		total = 0;
	if (f)
		fclose(f);
	return total;
}

/* The last phase's waits for a CPU, each a fraction of the phase, and this process's wakeups. */
static double phase_herdd_wait, phase_self_wait, phase_pressure, phase_self_cpu;

/* This process's CPU time so far, in ns. */
static uint64_t
self_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * SEC +
	    (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}
static struct samples phase_busy;

/* What the last phase says of who waited: herdd's and this client's share, and its wakeups. */
static void
contention_extra(char *buf, size_t size)
{
	snprintf(buf, size,
	    ",\"client_cpu_pct\":%.1f,\"herdd_runq_wait_pct\":%.2f,\"client_runq_wait_pct\":%.2f,"
	    "\"cpu_pressure_pct\":%.1f,\"client_wakeup_p99_us\":%.1f,\"client_wakeup_max_us\":%.1f",
	    phase_self_cpu * 100, phase_herdd_wait * 100, phase_self_wait * 100,
	    phase_pressure * 100, (double)samples_pct(&phase_busy, 99) / 1e3,
	    (double)samples_pct(&phase_busy, 100) / 1e3);
}

/* One measured stretch of load; returns herdd's CPU use over it (fraction of one CPU). */
static double
run_phase(const struct load *lp, uint64_t *answered_in)
{
	uint64_t t0 = bench_now_ns(), end = t0 + (uint64_t)(lp->seconds * SEC), now;
	uint64_t offered = 0, spawned = 0, next_kill = t0 + SEC, next_doom = t0 + SEC / 2;
	uint64_t cpu0 = herdd_cpu_ns(), a0 = answered;
	uint64_t hw0 = runq_wait_ns(herdd_pid), sw0 = runq_wait_ns(0), pr0 = cpu_pressure_us();
	uint64_t scpu0 = self_cpu_ns();
	struct conn *churn = churn_conn(lp->masters);
	unsigned rr = 0;

	samples_free(&phase_busy);
	busy_into = &phase_busy;

	while ((now = bench_now_ns()) < end) {
		double el = (double)(now - t0) / SEC;

		for (int burst = 0; offered < (uint64_t)(el * lp->rate) && burst < 4096; burst++)
			offer(&conns[rr++ % (unsigned)lp->masters], offered++);
		while (lp->churn > 0 && spawned < (uint64_t)(el * lp->churn)) {
			if (nlive >= lp->live)
				shutdown_oldest(churn);
			spawn_one(churn);
			spawned++;
		}
		if (lp->kills && now >= next_kill) {
			kill_one();
			next_kill += SEC;
		}
		if (lp->kills && now >= next_doom) {
			doomed_start();
			next_doom += 2 * SEC;
		}
		poll_once(1);
	}
	busy_into = NULL;
	now = bench_now_ns();
	phase_herdd_wait = (double)(runq_wait_ns(herdd_pid) - hw0) / (double)(now - t0);
	phase_self_wait = (double)(runq_wait_ns(0) - sw0) / (double)(now - t0);
	phase_pressure = (double)(cpu_pressure_us() - pr0) * 1e3 / (double)(now - t0);
	phase_self_cpu = (double)(self_cpu_ns() - scpu0) / (double)(now - t0);
	*answered_in = answered - a0;
	return (double)(herdd_cpu_ns() - cpu0) / (double)(now - t0);
}

static void
report_latency(const char *figure, const char *variant, struct samples *s, const char *extra)
{
	printf("{\"figure\":\"%s\",\"variant\":\"%s\",\"n\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
	       "\"p999_us\":%.1f,\"max_us\":%.1f%s}\n",
	    figure, variant, s->n, (double)samples_pct(s, 50) / 1e3,
	    (double)samples_pct(s, 99) / 1e3, (double)samples_pct(s, 99.9) / 1e3,
	    (double)samples_pct(s, 100) / 1e3, extra ? extra : "");
	fflush(stdout);
}

/* Spawns n workers on c, at most window in flight, and waits for them all. */
static void
spawn_many(struct conn *c, int n, int window)
{
	uint64_t deadline = bench_now_ns() + 120 * SEC;
	int started = 0, want = nlive + n;

	while (nlive + (int)spawn_errors < want && bench_now_ns() < deadline) {
		while (started < n && (int)c->inflight < window) {
			spawn_one(c);
			started++;
		}
		poll_once(10);
	}
	if (nlive < want) {
		fprintf(stderr, "herd-load: only %d of %d workers started\n", nlive, want);
		exit(1);
	}
}

/*
 * Spawn-to-ready of n spawns one at a time, nothing else going on, each
 * shut down once ready. per_s > 0 starts them at that rate, as the load's
 * churn does (the idle base); 0, back to back. Back to back a spawn finds
 * both CPUs awake and its caches warm from the last one; 26 a second on
 * an otherwise idle machine it does not, and takes about 1.5x as long at
 * p50 and p99 on the test VM.
 */
static void
spawn_idle(struct conn *c, int n, double per_s, struct samples *into)
{
	uint64_t t0 = bench_now_ns(), at, now;

	spawn_into = into;
	for (int i = 0; i < n; i++) {
		at = per_s > 0 ? t0 + (uint64_t)((double)i * (double)SEC / per_s) : t0;
		while ((now = bench_now_ns()) < at)
			poll_once((int)((at - now + 999999) / 1000000));
		spawn_one(c);
		wait_replies(bench_now_ns() + 10 * SEC);
		shutdown_oldest(c);
		wait_replies(bench_now_ns() + 10 * SEC);
	}
	spawn_into = NULL;
}

/* ---- the end: nothing lost ---- */

static int fds_at_start;

/* Learns herdd's pid and counts its fds (the probe connection excluded). */
static void
probe_herdd(void)
{
	const char *hello = "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":{"
	                    "\"version\":1,\"role\":\"inspector\"}}\n";
	struct ucred cr;
	socklen_t len = sizeof(cr);
	int fd = dial();
	char buf[4096];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
		die("SO_PEERCRED");
	herdd_pid = cr.pid;
	/* The hello's reply proves herdd accepted the probe, which its fd count then holds. */
	write_all(fd, hello, strlen(hello));
	if (recv(fd, buf, sizeof(buf), 0) <= 0)
		die("hello");
	fds_at_start = herdd_fds() - 1;
	close(fd);
}

/* Every request answered once, every worker and killed master's worker gone, fds back. */
static int
check_nothing_lost(void)
{
	uint64_t deadline = bench_now_ns() + SETTLE_NS;
	int bad = 0, left = 0, zombies, fds;

	wait_replies(deadline);
	while (doomed_starting.pid && bench_now_ns() < deadline)
		poll_once(10);
	if (sent != answered || unknown) {
		fprintf(stderr,
		    "herd-load: LOST: %llu requests sent, %llu answered, %llu replies unexpected\n",
		    (unsigned long long)sent, (unsigned long long)answered,
		    (unsigned long long)unknown);
		bad = 1;
	}
	if (spawn_errors) {
		fprintf(
		    stderr, "herd-load: %llu spawns failed\n", (unsigned long long)spawn_errors);
		bad = 1;
	}
	/* The masters leave: their master_disconnect workers must all go. */
	close_conns();
	for (int i = 0; i < nlive; i++) {
		struct pollfd p = { .fd = lives[i].pidfd, .events = POLLIN };
		uint64_t now = bench_now_ns();

		if (p.fd >= 0 &&
		    (now >= deadline || poll(&p, 1, (int)((deadline - now) / 1000000)) <= 0))
			left++;
	}
	for (int i = 0; i < ndoomed; i++) {
		while (doomeds[i].left > 0 && bench_now_ns() < deadline)
			poll_once(10);
		left += doomeds[i].left;
	}
	if (left) {
		fprintf(stderr,
		    "herd-load: LOST: %d workers still running after their master left\n", left);
		bad = 1;
	}
	/*
	 * herdd closes and reaps on its own time: look until both settle, or the
	 * deadline. Its sampler opens /proc files for a moment, so one look that
	 * finds no more fds than at the start is the answer (never a second look).
	 */
	for (;;) {
		zombies = herdd_zombies();
		fds = herdd_fds();
		if ((!zombies && fds <= fds_at_start) || bench_now_ns() >= deadline)
			break;
		poll(NULL, 0, 10);
	}
	if (zombies || fds > fds_at_start) {
		fprintf(stderr,
		    "herd-load: LOST: herdd has %d zombies and %d fds (%d at the start)\n", zombies,
		    fds, fds_at_start);
		bad = 1;
	}
	printf(
	    "{\"figure\":\"load_check\",\"variant\":\"nothing_lost\",\"value\":%d,\"unit\":\"ok\","
	    "\"requests\":%llu,\"answered\":%llu,\"killed_masters\":%d,\"herdd_fds\":%d}\n",
	    !bad, (unsigned long long)sent, (unsigned long long)answered, ndoomed, fds);
	for (int i = 0; i < nlive; i++)
		if (lives[i].pidfd >= 0)
			close(lives[i].pidfd);
	free(lives);
	free(doomeds);
	samples_free(&lat);
	samples_free(&orphan_lat);
	samples_free(&phase_busy);
	close(ep);
	return bad;
}

/* ---- modes ---- */

static void
setup(int masters)
{
	bench_raise_fd_limit();
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		die("epoll_create1");
	probe_herdd();
	/* The masters, then the churn master and the lister, whose latencies are not sampled. */
	open_conns(masters + 2);
	conns[masters].sample = conns[masters + 1].sample = false;
}

/* How many idle spawns make the base: half the load's length of the churn, 20 to 1,000. */
static int
idle_spawns(const struct load *lp)
{
	double n = lp->churn * lp->seconds / 2;

	return n < 20 ? 20 : n > 1000 ? 1000 : (int)n;
}

/* load WORKER MASTERS RATE SECONDS LIVE CHURN */
static int
cmd_load(char **args)
{
	struct load lp = { .masters = atoi(args[1]),
		.rate = atof(args[2]),
		.seconds = atof(args[3]),
		.live = atoi(args[4]),
		.churn = atof(args[5]),
		.kills = true };
	struct samples idle = { 0 }, warm = { 0 }, loaded = { 0 };
	uint64_t got;
	char extra[768], variant[64], who[256];
	double cpu;

	worker_path = args[0];
	setup(lp.masters);
	/*
	 * The idle p99 is the ratio's base, spawns at the churn's rate on an
	 * idle herdd: the load's spawns differ from it by the load alone. Of
	 * 100 spawns the p99 was the 2nd-worst, and one stray 11 ms start
	 * moved the ratio by half: half the load's length of them, 780 in a
	 * full run. Back to back is a figure of its own.
	 */
	spawn_idle(churn_conn(lp.masters), idle_spawns(&lp), lp.churn, &idle);
	spawn_idle(churn_conn(lp.masters), 1000, 0, &warm);
	spawn_many(churn_conn(lp.masters), lp.live, 64);
	spawn_into = &loaded;
	cpu = run_phase(&lp, &got);
	spawn_into = NULL;
	snprintf(variant, sizeof(variant), "masters%d_rate%.0f", lp.masters, lp.rate);
	contention_extra(who, sizeof(who));
	snprintf(extra, sizeof(extra),
	    ",\"offered_per_s\":%.0f,\"sustained_per_s\":%.0f,\"herdd_cpu_pct\":%.1f,\"seconds\":%."
	    "0f%s",
	    lp.rate, (double)got / lp.seconds, cpu * 100, lp.seconds, who);
	report_latency("load", variant, &lat, extra);
	report_latency("load_spawn_ready", "idle", &idle, NULL);
	report_latency("load_spawn_ready", "idle_back_to_back", &warm, NULL);
	report_latency("load_spawn_ready", "under_load", &loaded, NULL);
	report_latency("load_master_kill", "to_last_worker_exit", &orphan_lat, NULL);
	samples_free(&idle);
	samples_free(&warm);
	samples_free(&loaded);
	return check_nothing_lost();
}

/*
 * herdd's CPU per second while nobody asks anything: with a thousand
 * workers it samples a thousand /proc files a second (sample.c), which is
 * no list's cost.
 */
static double
idle_cpu_ns_per_s(double secs)
{
	uint64_t t0 = bench_now_ns(), cpu0 = herdd_cpu_ns();
	struct timespec ts = { .tv_sec = (time_t)secs,
		.tv_nsec = (long)((secs - (double)(time_t)secs) * 1e9) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
	return (double)(herdd_cpu_ns() - cpu0) / ((double)(bench_now_ns() - t0) / SEC);
}

/*
 * One list on c, with nothing else in flight on it: the request written
 * and its reply read raw off the socket, herdd's CPU read just before and
 * just after, and only then the reply decoded and checked (it lists the
 * workers workers). Decoding a megabyte takes the client longer than herdd
 * its list; in the window, herdd would idle through it, and the idle
 * figure taken back out of that would swamp the list's own. Adds the
 * window's length and herdd's CPU in it.
 */
static void
list_once(struct conn *c, json_t *fields, int workers, uint64_t *window, uint64_t *cpu)
{
	json_t *m, *reply, *list;
	json_error_t err;
	uint64_t t0, cpu0;
	size_t len = 0;
	char *text, *nl = NULL;

	if (c->in_len)
		die("the lister's connection has unread input");
	m = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)++c->next_id,
	    "method", "list", "params",
	    fields ? json_pack("{s:O}", "fields", fields) : json_object());
	text = json_dumps(m, JSON_COMPACT);
	json_decref(m);
	cpu0 = herdd_cpu_ns();
	t0 = bench_now_ns();
	write_all(c->fd, text, strlen(text));
	write_all(c->fd, "\n", 1);
	free(text);
	while (!nl) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ssize_t n;

		conn_room(c, len);
		n = recv(c->fd, c->in + len, c->in_cap - len, MSG_DONTWAIT);
		if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (poll(&p, 1, 10000) == 0) {
				errno = ETIMEDOUT;
				die("waiting for a list");
			}
			continue;
		}
		if (n <= 0)
			die("reading a list");
		nl = memchr(c->in + len, '\n', (size_t)n);
		len += (size_t)n;
	}
	*window += bench_now_ns() - t0;
	*cpu += herdd_cpu_ns() - cpu0;
	if (nl + 1 != c->in + len)
		die("more than the list's reply came");
	reply = json_loadb(c->in, (size_t)(nl - c->in), 0, &err);
	list = json_object_get(json_object_get(reply, "result"), "workers");
	if (!json_is_array(list) || json_array_size(list) != (size_t)workers) {
		fprintf(stderr, "herd-load: a list of %d workers came back as: %.*s\n", workers,
		    bench_cut(c->in, len, 200), c->in);
		exit(1);
	}
	json_decref(reply);
}

/*
 * herdd's CPU per list of everything (fields NULL) or of a few fields, over
 * about secs: its CPU while each list was under way, less what it spends
 * in as long when idle (idle: ns a second).
 */
static void
list_cost(
    struct conn *c, double secs, json_t *fields, int workers, const char *variant, double idle)
{
	uint64_t t0 = bench_now_ns(), window = 0, cpu = 0, n = 0;
	double busy;

	while (bench_now_ns() - t0 < (uint64_t)(secs * SEC) || n < 5) {
		list_once(c, fields, workers, &window, &cpu);
		n++;
	}
	busy = (double)cpu - idle * (double)window / SEC;
	printf("{\"figure\":\"list_cost\",\"variant\":\"%s\",\"value\":%.3f,\"unit\":\"us\","
	       "\"with_idle_us\":%.3f,\"lists\":%llu,\"herdd_idle_cpu_pct\":%.2f}\n",
	    variant, busy / (double)n / 1e3, (double)cpu / (double)n / 1e3, (unsigned long long)n,
	    idle / 1e7);
	fflush(stdout);
}

/*
 * The client that lists every worker in a loop, in a process of its own:
 * reading a reply of a megabyte takes its reader milliseconds, which must
 * not delay the replies this process times. Each list done is a byte on out.
 */
static void __attribute__((noreturn)) lister_loop(int out)
{
	static const char hello[] =
	    "{\"jsonrpc\":\"2.0\",\"id\":0,\"method\":\"hello\",\"params\":{"
	    "\"version\":1,\"role\":\"inspector\"}}\n",
	                  req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"list\"}\n";
	static char buf[1 << 16];
	int fd = dial(), replies = 0;

	write_all(fd, hello, sizeof(hello) - 1);
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));

		if (n <= 0)
			_exit(1);
		/* One request in flight: every newline ends a reply, the hello's first. */
		for (char *p = buf; (p = memchr(p, '\n', (size_t)(buf + n - p))); p++) {
			if (replies++ > 0)
				write_all(out, "l", 1);
			write_all(fd, req, sizeof(req) - 1);
		}
	}
}

/* Stops the lister; how many lists it got. */
static uint64_t
lister_stop(pid_t pid, int fd)
{
	char buf[4096];
	uint64_t lists = 0;
	ssize_t n;

	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		lists += (uint64_t)n;
	close(fd);
	return lists;
}

/* lister WORKER MASTERS RATE SECONDS WORKERS */
static int
cmd_lister(char **args)
{
	struct load lp = {
		.masters = atoi(args[1]), .rate = atof(args[2]), .seconds = atof(args[3])
	};
	int workers = atoi(args[4]);
	json_t *few = json_pack("[sss]", "id", "state", "rss_kib");
	char variant[64], extra[512], who[256];
	uint64_t lists = 0, got;
	pid_t lister = 0;
	double cpu, idle;
	int fd = -1;

	worker_path = args[0];
	setup(lp.masters);
	spawn_many(churn_conn(lp.masters), workers, 256);
	idle = idle_cpu_ns_per_s(lp.seconds / 4);
	snprintf(variant, sizeof(variant), "workers%d_all_fields", workers);
	list_cost(lister_conn(lp.masters), lp.seconds / 4, NULL, workers, variant, idle);
	snprintf(variant, sizeof(variant), "workers%d_3_fields", workers);
	list_cost(lister_conn(lp.masters), lp.seconds / 4, few, workers, variant, idle);
	json_decref(few);
	for (int with = 0; with < 2; with++) {
		samples_free(&lat);
		if (with)
			lister = fork_with_pipe(lister_loop, &fd);
		cpu = run_phase(&lp, &got);
		if (with)
			lists = lister_stop(lister, fd);
		contention_extra(who, sizeof(who));
		snprintf(extra, sizeof(extra),
		    ",\"sustained_per_s\":%.0f,\"lists_per_s\":%.1f,\"herdd_cpu_pct\":%.1f,"
		    "\"workers\":%d%s",
		    (double)got / lp.seconds, (double)lists / lp.seconds, cpu * 100, workers, who);
		wait_replies(bench_now_ns() + 10 * SEC);
		report_latency("load_lister", with ? "lister" : "no_lister", &lat, extra);
	}
	return check_nothing_lost();
}

/* Pins pid to the CPUs of mask (saving its old ones in old, if asked). */
static void
pin(pid_t pid, const cpu_set_t *mask, cpu_set_t *old)
{
	if (old)
		sched_getaffinity(pid, sizeof(*old), old);
	if (sched_setaffinity(pid, sizeof(*mask), mask) < 0)
		perror("herd-load: sched_setaffinity");
}

/* ping MASTERS WINDOW SECONDS */
static int
cmd_ping(char **args)
{
	int masters = atoi(args[0]), window = atoi(args[1]);
	double secs = atof(args[2]), cpu;
	cpu_set_t all, one, rest;
	uint64_t t0, a0, cpu0;
	char variant[64], extra[256];

	setup(masters);
	/* herdd on the first CPU it may use, this client on the others. */
	sched_getaffinity(0, sizeof(all), &all);
	CPU_ZERO(&one);
	rest = all;
	for (int i = 0; i < CPU_SETSIZE; i++) {
		if (CPU_ISSET(i, &all)) {
			CPU_SET(i, &one);
			if (CPU_COUNT(&all) > 1)
				CPU_CLR(i, &rest);
			break;
		}
	}
	pin(herdd_pid, &one, &all);
	pin(0, &rest, NULL);
	refill = true;
	for (int i = 0; i < masters; i++)
		for (int k = 0; k < window; k++)
			request(&conns[i], K_PING, "ping", NULL);
	t0 = bench_now_ns();
	a0 = answered;
	cpu0 = herdd_cpu_ns();
	while (bench_now_ns() - t0 < (uint64_t)(secs * SEC))
		poll_once(10);
	refill = false;
	cpu = (double)(herdd_cpu_ns() - cpu0) / (double)(bench_now_ns() - t0);
	snprintf(variant, sizeof(variant), "masters%d_window%d", masters, window);
	snprintf(extra, sizeof(extra), ",\"sustained_per_s\":%.0f,\"herdd_cpu_pct\":%.1f",
	    (double)(answered - a0) / secs, cpu * 100);
	wait_replies(bench_now_ns() + 10 * SEC);
	report_latency("ping_one_core", variant, &lat, extra);
	pin(herdd_pid, &all, NULL);
	return check_nothing_lost();
}

static const struct bench_mode modes[] = {
	{ "load", "WORKER MASTERS RATE SECONDS LIVE CHURN", 6, cmd_load },
	{ "lister", "WORKER MASTERS RATE SECONDS WORKERS", 5, cmd_lister },
	{ "ping", "MASTERS WINDOW SECONDS", 3, cmd_ping },
	{ 0 },
};

static int
start(void)
{
	sock_path = getenv("HERD_SOCKET");
	if (!sock_path) {
		fprintf(stderr, "herd-load: set HERD_SOCKET to herdd's socket\n");
		return 2;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct bench_prog prog = { "herd-load", modes, start, NULL };

	return bench_main(&prog, argc, argv);
}
