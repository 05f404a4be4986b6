/* SPDX-License-Identifier: MIT */
/*
 * Worker lifecycle: spawn, ready, stop, reap (records: workers.c, /proc: proc.c).
 *
 * Reaping: herdd's SIGCHLD watcher is the only reaper. It calls wait4(), not
 * libev's ev_child (whose waitpid() drops the child's rusage), so a worker's
 * final CPU time is exact even when it lived shorter than one heartbeat
 * interval; herdd's loop is not libev's default one, which would reap first.
 * A pid is mapped to its worker at reap time, which is exact because a pid
 * cannot be reused before it is reaped. Signals go to
 * the main process through its pidfd (ESRCH after the reap, never a recycled
 * pid) and to its process group only while the leader is unreaped.
 *
 * herdd is a child subreaper, so a descendant that detaches (setsid, double
 * fork) is reparented to herdd rather than to init. After every reap, any
 * child of herdd that is not a known worker is such an escapee: it is killed
 * and reaped. A worker being stopped has its whole tree signalled, collected
 * from /proc before the leader dies. A worker in a cgroup of its own
 * (contain.c) is SIGKILLed as a unit through it instead, and whatever is left
 * in that cgroup is killed when the worker is reaped: a descendant that
 * escaped the walk (or outlived a herdd) cannot escape its cgroup.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "herdd.h"

#define MAX_TREE          4096
#define CHANNEL_MAX_BYTES (1u << 20)

static ev_signal child_watcher;
static ev_prepare escapee_check;
/*
 * Something was reaped that leaves escapees only the walk can find: a worker
 * outside a cgroup, or a pid that was no worker (its orphans came to herdd).
 */
static bool walk_escapees;
/* A SIGCHLD came while the leader was making a child: the reap waits for its end. */
static bool reap_waited;

static void grace_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void spawn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void heartbeat_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void conn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents);
static void reaped(struct worker *w, int status, const struct rusage *ru);
static void reap_all(struct ev_loop *loop);

/* A fresh record with defaults. */
struct worker *
sup_worker_new(void)
{
	struct worker *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->pidfd = -1;
	w->errpipe = -1;
	w->spawn_channel = -1;
	w->notify_fd = -1;
	w->exit_code = -1;
	w->umask = 022;
	w->incarnation = 1;
	w->out[0].kind = OUT_NULL;
	w->out[1].kind = OUT_CAPTURE;
	capture_init(&w->cap[0], w);
	capture_init(&w->cap[1], w);
	ev_init(&w->spawn_timer, spawn_timeout_cb);
	ev_init(&w->grace_timer, grace_cb);
	ev_init(&w->hb_timer, heartbeat_cb);
	ev_init(&w->conn_timer, conn_timeout_cb);
	w->spawn_timer.data = w->grace_timer.data = w->hb_timer.data = w->conn_timer.data = w;
	return w;
}

/* ---- signals and stopping ---- */

/* Sends sig to the main process, its group (while unreaped) and, with tree, every descendant. */
static int
signal_worker(struct worker *w, int sig, bool tree)
{
	struct proc_kid desc[MAX_TREE];
	size_t n = 0, i;
	int r = 0;

	if (w->reaped)
		return -ESRCH;
	if (w->spawning) {
		/* No process yet: it gets the strongest signal asked for once it exists. */
		if (w->spawn_sig != SIGKILL)
			w->spawn_sig = sig;
		return 0;
	}
	/* One write kills the whole cgroup; the walk is for other signals, or no cgroup. */
	if (tree && sig == SIGKILL && contain_kill(w) == 0)
		tree = false;
	if (tree)
		n = proc_tree(w->pid, desc, MAX_TREE);
	if (w->pidfd >= 0) {
		if (pidfd_send_signal(w->pidfd, sig, NULL, 0) < 0)
			r = -errno;
	} else if (kill(w->pid, sig) < 0) {
		r = -errno;
	}
	/* The group id is the leader's pid, still ours until we reap it. */
	kill(-w->pid, sig);
	for (i = 0; i < n; i++)
		proc_signal(&desc[i], sig);
	return r;
}

/* Sends sig to the group (the "kill" request). */
int
sup_signal(struct worker *w, int sig)
{
	return signal_worker(w, sig, false);
}

static void
grace_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	/* A worker that promised to exit and did not ends with the backup's reason. */
	if (!w->reason && w->backup_reason)
		w->reason = w->backup_reason;

	log_info(
	    "worker %s pid %d: still running after the grace period, SIGKILL", w->id, (int)w->pid);
	signal_worker(w, SIGKILL, true);
}

/* Moves w to stopping: its exit will be reason's (unless one was already set). */
void
sup_mark_stopping(struct worker *w, enum proto_reason reason)
{
	if (!sup_is_live(w))
		return;
	if (!w->reason)
		w->reason = reason;
	sup_set_state(w, PROTO_STATE_STOPPING);
	ev_timer_stop(herdd.loop, &w->spawn_timer);
	ev_timer_stop(herdd.loop, &w->conn_timer);
	ev_timer_stop(herdd.loop, &w->hb_timer);
}

/*
 * The worker whose process tree c's peer runs in (its pid), or -1. Workers are
 * herdd's children, so the nearest worker up the peer's parents is the one.
 * Looked up in /proc once per connection: a thousand stops must not walk
 * /proc a thousand times.
 */
static pid_t
peer_worker(struct conn *c)
{
	pid_t pid = c->cred.pid;

	if (c->peer_worker)
		return c->peer_worker;
	c->peer_worker = -1;
	/* The bound stops a walk that a race made circular. */
	for (int depth = 0; pid > 1 && pid != herdd.pid && depth < 64; depth++) {
		if (sup_by_pid(pid)) {
			c->peer_worker = pid;
			break;
		}
		pid = proc_ppid(pid);
	}
	return c->peer_worker;
}

/*
 * Stops at once the master_disconnect workers of the master sessions that w's
 * processes opened (a worker that is itself a master): they would be stopped
 * anyway once w's session ends, and waiting for that costs a grace period
 * per level of nesting. A normal stop ends them as master_closed, a failure
 * as killed_orphan, herdd's own stop as daemon_shutdown.
 */
static void
stop_nested(struct worker *w, enum proto_reason reason, unsigned grace_ms)
{
	enum proto_reason theirs = reason == PROTO_REASON_DAEMON_SHUTDOWN ? reason
	    : proto_reason_is_failure(reason) ? PROTO_REASON_KILLED_ORPHAN
	                                      : PROTO_REASON_MASTER_CLOSED;
	struct worker *k;
	struct conn *c;

	TAILQ_FOREACH(c, &herdd.conns, link) {
		if (c->nworkers == 0 || c->peer.closed || peer_worker(c) != w->pid)
			continue;
		TAILQ_FOREACH(k, &herdd.workers, link) {
			if (k->owner == c && k->shutdown_on == PROTO_SHUTDOWN_MASTER_DISCONNECT)
				sup_stop(k, theirs, grace_ms);
		}
	}
}

/* Stops w gracefully: see the header. */
void
sup_stop(struct worker *w, enum proto_reason reason, unsigned grace_ms)
{
	if (!sup_is_live(w) || w->reaped)
		return;
	if (w->stop_sent) {
		/* Already stopping: a shorter grace may only bring the SIGKILL closer. */
		if (grace_ms == 0)
			signal_worker(w, SIGKILL, true);
		return;
	}
	w->stop_sent = true;
	sup_mark_stopping(w, reason);
	ev_timer_stop(herdd.loop, &w->grace_timer);
	log_info("worker %s pid %d: stopping (%s)", w->id, (int)w->pid, proto_reason_name(reason));
	channel_send_shutdown(w);
	stop_nested(w, reason, grace_ms);
	if (grace_ms == 0) {
		signal_worker(w, SIGKILL, true);
		return;
	}
	signal_worker(w, SIGTERM, true);
	ev_timer_set(&w->grace_timer, grace_ms / 1000.0, 0.);
	ev_timer_start(herdd.loop, &w->grace_timer);
}

/* The worker said it is exiting on its own (failure, init failure): SIGKILL if it does not. */
void
sup_expect_exit(struct worker *w, enum proto_reason reason, const char *message)
{
	if (!sup_is_live(w))
		return;
	if (!w->reason)
		w->reason = reason;
	if (message && !w->message)
		w->message =
		    strndup(message, (size_t)proto_text_prec(message, PROTO_FAILURE_TEXT_MAX));
	if (!ev_is_active(&w->grace_timer)) {
		ev_timer_set(&w->grace_timer, herdd.cfg.grace_ms / 1000.0, 0.);
		ev_timer_start(herdd.loop, &w->grace_timer);
	}
}

/* Arms a SIGKILL one grace period from now in case w does not exit as it should. */
void
sup_backup_kill(struct worker *w, enum proto_reason reason, double seconds)
{
	if (!sup_is_live(w) || ev_is_active(&w->grace_timer))
		return;
	w->backup_reason = reason;
	ev_timer_set(&w->grace_timer, seconds, 0.);
	ev_timer_start(herdd.loop, &w->grace_timer);
}

/*
 * Stops a master's master_disconnect workers, and every worker of it not yet
 * ready whatever its policy: nobody is left to receive the spawn's answer,
 * and a connection_closed worker would otherwise finish its init and wait out
 * its connection timeout for a client that never comes. Records of exited
 * workers forget the owner too (owner.connection turns null now, not at exit).
 */
void
sup_owner_gone(struct conn *c)
{
	enum proto_reason reason =
	    c->goodbye ? PROTO_REASON_MASTER_CLOSED : PROTO_REASON_KILLED_ORPHAN;
	struct worker *w;

	TAILQ_FOREACH(w, &herdd.workers, link) {
		if (w->owner != c)
			continue;
		w->owner = NULL;
		if (!w->reaped)
			c->nworkers--;
		conn_unref(c);
		/* A restarted incarnation answers no spawn: it may finish starting. */
		if (sup_is_live(w) &&
		    (w->shutdown_on == PROTO_SHUTDOWN_MASTER_DISCONNECT ||
		        (w->state == PROTO_STATE_STARTING && w->incarnation == 1)))
			sup_stop(w, reason, herdd.cfg.grace_ms);
	}
}

/* Forgets c's pending requests. */
void
sup_conn_gone(struct conn *c)
{
	struct worker *w;

	TAILQ_FOREACH(w, &herdd.workers, link) {
		struct waiter **pp = &w->waiters;

		while (*pp) {
			struct waiter *x = *pp;

			if (x->conn != c) {
				pp = &x->next;
				continue;
			}
			*pp = x->next;
			sup_waiter_free(x);
		}
	}
}

/* Stops everything (herdd is shutting down). */
void
sup_stop_all(void)
{
	struct worker *w;

	json_t *err = proto_error(NULL, HERD_E_SHUTTING_DOWN, "herdd is shutting down", NULL);

	TAILQ_FOREACH(w, &herdd.workers, link) {
		/* Pending spawns fail now; their workers are stopped like the others. */
		if (sup_is_live(w))
			sup_answer_waiters(w, true, err);
		restart_cancel(w, PROTO_REASON_DAEMON_SHUTDOWN);
		sup_stop(w, PROTO_REASON_DAEMON_SHUTDOWN, herdd.cfg.grace_ms);
	}
	json_decref(err);
}

/* ---- timers ---- */

static void
spawn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	log_info(
	    "worker %s pid %d: not ready within %u ms", w->id, (int)w->pid, w->spawn_timeout_ms);
	sup_stop(w, PROTO_REASON_SPAWN_TIMEOUT, 0);
}

static void
conn_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;

	if (!w->had_connection && !w->message)
		w->message = strdup("no client connected within connection_timeout_ms");
	sup_stop(w, PROTO_REASON_KILLED_ORPHAN, 0);
}

/*
 * Hang detection (PROTOCOL.md 5.3). Every interval the worker's CPU time is
 * read. Once nothing has arrived on fd 3 for heartbeat_timeout_ms, a worker
 * whose CPU time grew since it was last heard is computing, not hung: it is
 * checked again one timeout later. One that is stopped, or whose CPU time did
 * not grow, is killed. The window is the whole silence, not one interval:
 * CPU time counts in clock ticks (10 ms), and a busy worker that a loaded
 * machine gives a few percent of a CPU can gain none in one short interval.
 */
static void
heartbeat_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct worker *w = t->data;
	int64_t now = now_ms(), heard, silence;
	uint64_t cpu;
	char st;

	/* Before ready, the spawn timeout is the only deadline (PROTOCOL.md 5.2). */
	if (w->state != PROTO_STATE_READY)
		return;
	if (sample_worker(w) < 0)
		return;
	cpu = w->cpu_ms;
	st = w->proc_state;
	heard = w->channel ? conn_last_rx_ms(w->channel) : w->last_heartbeat_ms;
	silence = now - heard;
	if (heard != w->heard_ms) {
		w->heard_ms = heard;
		w->last_cpu_ms = cpu;
	}
	if (silence < (int64_t)w->hb_timeout_ms) {
		w->next_check_ms = 0;
		return;
	}
	if (now < w->next_check_ms)
		return;
	if (st != 'T' && st != 't' && cpu > w->last_cpu_ms) {
		log_debug("worker %s: silent for %lld ms but busy", w->id, (long long)silence);
		w->last_cpu_ms = cpu;
		w->next_check_ms = now + w->hb_timeout_ms;
		return;
	}
	log_warn("worker %s pid %d: no heartbeat for %lld ms and %s; killing", w->id, (int)w->pid,
	    (long long)silence, st == 'T' || st == 't' ? "stopped" : "no CPU progress");
	if (!w->message &&
	    asprintf(&w->message, "no heartbeat for %lld ms and %s", (long long)silence,
	        st == 'T' || st == 't' ? "the process is stopped" : "no CPU progress") < 0)
		w->message = NULL;
	sup_stop(w, PROTO_REASON_HEARTBEAT_LOST, 0);
}

/*
 * The heartbeat checks fall due on a common grid of the loop's clock: the
 * first one is put off to the next multiple of HB_GRID_US, and an interval
 * that is a multiple of it (a whole number of 10 ms, as 1 s) keeps every
 * later one there, so herdd wakes once for all the checks of a grid point
 * instead of once per worker. Workers become ready one by one, and
 * unaligned their checks spread over the whole interval: a thousand idle
 * workers cost a wakeup per check (strace: about 1,000 a second, a third
 * of them for checks alone), where aligned they cost at most 100. A check
 * comes at most HB_GRID_US later than it would have.
 */
#define HB_GRID_US 10000

/* Seconds from the loop's now to the first check: an interval, then to the grid. */
static ev_tstamp
heartbeat_first_s(unsigned interval_ms)
{
	ev_tstamp now = ev_now(herdd.loop);
	int64_t at = (int64_t)((now + interval_ms / 1000.0) * 1e6);

	at = (at / HB_GRID_US + 1) * HB_GRID_US;
	return (double)at / 1e6 - now;
}

/* Starts the heartbeat check (the worker's channel said hello). */
void
sup_heartbeat_start(struct worker *w)
{
	w->last_heartbeat_ms = now_ms();
	if (w->hb_timeout_ms == 0 || w->hb_interval_ms == 0)
		return;
	ev_timer_set(
	    &w->hb_timer, heartbeat_first_s(w->hb_interval_ms), w->hb_interval_ms / 1000.0);
	ev_timer_start(herdd.loop, &w->hb_timer);
}

/* ---- spawn ---- */

static void
errpipe_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct worker *w = io->data;
	struct spawn_report rep;
	ssize_t n = read(w->errpipe, &rep, sizeof(rep));

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n == (ssize_t)sizeof(rep)) {
		w->spawn_errno = rep.err;
		w->spawn_stage = rep.stage;
		log_info(
		    "worker %s: spawn failed at %s: %s", w->id, w->spawn_stage, strerror(rep.err));
	}
	/* EOF: the exec succeeded. Either way the pipe has said all it will. */
	ev_io_stop(loop, io);
	close(w->errpipe);
	w->errpipe = -1;
	/* Ready "exec": running the program is all that was asked. */
	if (n == 0 && w->ready_mode == READY_EXEC && !w->reaped)
		sup_worker_ready(w);
}

static int
make_capture_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC) < 0)
		return -errno;
	fcntl(fds[0], F_SETFL, O_NONBLOCK);
	return 0;
}

/* Names w and reserves its socket path in the uid's worker directory. */
static int
spawn_name(struct worker *w)
{
	char dir[256];
	int r;

	/* A new incarnation keeps its id, and with it its socket's path. */
	if (!w->id[0])
		ids_next(w->id, sizeof(w->id));
	r = server_worker_dir(w->uid, w->gid, dir, sizeof(dir));
	if (r < 0) {
		w->spawn_stage = "prepare";
		return r;
	}
	if ((size_t)snprintf(w->socket, sizeof(w->socket), "%s/%s.sock", dir, w->id) >=
	    sizeof(w->socket)) {
		w->socket[0] = '\0';
		w->spawn_stage = "prepare";
		return -ENAMETOOLONG;
	}
	unlink(w->socket);
	return 0;
}

/*
 * The spawn is under way: w is listed as starting, its spawn timer runs, and
 * a stop or signal meanwhile waits for the process (signal_worker()).
 * Failures from here on end with a reap, never a leak.
 */
static void
spawn_queued(struct worker *w, int fd, int rep)
{
	w->errpipe = rep;
	ev_io_init(&w->errpipe_io, errpipe_cb, rep, EV_READ);
	w->errpipe_io.data = w;
	w->spawn_channel = fd;
	if (w->listed) {
		sup_set_state(w, PROTO_STATE_STARTING);
	} else {
		w->state = PROTO_STATE_STARTING;
		sup_link(w);
	}
	if (w->owner)
		w->owner->nworkers++;
	herdd.stats.spawns++;
	ev_timer_set(&w->spawn_timer, w->spawn_timeout_ms / 1000.0, 0.);
	ev_timer_start(herdd.loop, &w->spawn_timer);
	notify_status();
	if (!w->spawning)
		sup_spawned(w, w->pid);
}

/* The process exists: watch its error pipe and its channel (taken over), map its pid. */
static void
spawn_started(struct worker *w)
{
	int fd = w->spawn_channel;
	struct conn *ch;

	w->spawn_channel = -1;
	w->pidfd = pidfd_open(w->pid, 0);
	if (w->pidfd >= 0)
		fcntl(w->pidfd, F_SETFD, FD_CLOEXEC);
	ev_io_start(herdd.loop, &w->errpipe_io);
	wnotify_start(w);
	sup_pid_add(w);
	log_info("worker %s pid %d: spawned %s for uid %u", w->id, (int)w->pid, w->path,
	    (unsigned)w->uid);
	if (w->incarnation > 1) {
		log_info("worker %s: incarnation %u, pid %d", w->id, w->incarnation, (int)w->pid);
		events_emit(w, PROTO_EVENT_RESTARTED);
	}
	if (fd < 0) {
		/* Ready "exec" or "notify": no channel. */
	} else if ((ch = conn_new(fd, CONN_CHANNEL, &channel_ops, CHANNEL_MAX_BYTES))) {
		fcntl(fd, F_SETFL, O_NONBLOCK);
		ch->worker = w;
		w->channel = ch;
		conn_start(ch);
	} else {
		/* Without its channel the worker cannot register: stop it now. */
		w->reason = PROTO_REASON_SPAWN_FAILED;
		signal_worker(w, SIGKILL, true);
	}
}

void
sup_spawned(struct worker *w, pid_t pid)
{
	int sig = w->spawn_sig;

	w->spawning = false;
	w->spawn_sig = 0;
	if (pid < 0) {
		/* No process: an exit at stage "fork", which answers and counts like any other. */
		log_warn("spawn of %s for uid %u failed at fork: %s", w->path, (unsigned)w->uid,
		    strerror((int)-pid));
		if (w->spawn_channel >= 0)
			close(w->spawn_channel);
		w->spawn_channel = -1;
		w->spawn_stage = "fork";
		w->spawn_errno = (int)-pid;
		reaped(w, W_EXITCODE(127, 0), NULL);
	} else {
		w->pid = pid;
		spawn_started(w);
		/* A stop, a kill or a lost master while it was being made. */
		if (sig)
			signal_worker(w, sig, true);
	}
	if (w->spawn_conn) {
		if (--w->spawn_conn->spawning == 0)
			list_spawned(w->spawn_conn);
		conn_unref(w->spawn_conn);
		w->spawn_conn = NULL;
	}
	/* What exited or escaped meanwhile waited for the leader to be done. */
	if (reap_waited)
		reap_all(herdd.loop);
	else if (walk_escapees)
		ev_prepare_start(herdd.loop, &escapee_check);
}

/* Starts w; see the header. */
int
sup_spawn(struct worker *w)
{
	int sv[2] = { -1, -1 }, pipes[2][2] = { { -1, -1 }, { -1, -1 } }, wr[2] = { -1, -1 };
	int r, i, rep, cgfd;

	r = spawn_name(w);
	if (r < 0)
		return r;
	if (w->ready_mode == READY_PROTOCOL &&
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		w->spawn_stage = "socketpair";
		return -errno;
	}
	if (w->ready_mode == READY_NOTIFY) {
		r = wnotify_open(w);
		if (r < 0) {
			w->spawn_stage = "socket";
			return r;
		}
	}
	for (i = 0; i < 2; i++) {
		if (w->out[i].kind != OUT_CAPTURE && !output_rotated(&w->out[i]))
			continue;
		r = make_capture_pipe(pipes[i]);
		if (r < 0) {
			w->spawn_stage = "prepare";
			goto fail;
		}
		wr[i] = pipes[i][1];
	}
	clock_gettime(CLOCK_REALTIME, &w->started_wall);
	w->started_ms = now_ms();
	cgfd = contain_prepare(w);
	r = limits_apply_cgroup(w, cgfd);
	rep = r < 0 ? r : spawn_start(w, sv[1], wr, cgfd);
	if (r < 0)
		w->spawn_stage = "limits";
	if (cgfd >= 0)
		close(cgfd);
	if (rep < 0) {
		contain_reaped(w);
		r = rep;
		if (!w->spawn_stage)
			w->spawn_stage = "prepare";
		goto fail;
	}
	if (sv[1] >= 0)
		close(sv[1]);
	for (i = 0; i < 2; i++) {
		if (pipes[i][1] >= 0)
			close(pipes[i][1]);
		if (pipes[i][0] >= 0)
			capture_start(&w->cap[i], pipes[i][0]);
	}
	spawn_queued(w, sv[0], rep);
	return 0;

fail:
	for (i = 0; i < 2; i++) {
		if (pipes[i][0] >= 0)
			close(pipes[i][0]);
		if (pipes[i][1] >= 0)
			close(pipes[i][1]);
	}
	if (sv[0] >= 0)
		close(sv[0]);
	if (sv[1] >= 0)
		close(sv[1]);
	wnotify_close(w);
	return r;
}

/* Keeps a failed spawn listable (reason spawn_failed). */
void
sup_record_failed(struct worker *w, int err)
{
	w->spawn_errno = err;
	if (!w->spawn_stage)
		w->spawn_stage = "prepare";
	w->reason = PROTO_REASON_SPAWN_FAILED;
	w->state = PROTO_STATE_EXITED;
	w->reaped = true;
	w->socket[0] = '\0';
	if (!w->started_ms) {
		clock_gettime(CLOCK_REALTIME, &w->started_wall);
		w->started_ms = now_ms();
	}
	w->ended_ms = now_ms();
	sup_count_reason(w->reason);
	sup_link(w);
	events_emit(w, PROTO_EVENT_EXITED);
	sup_prune(w->uid);
}

/* The worker is ready: answer the spawn request. */
void
sup_worker_ready(struct worker *w)
{
	json_t *reply;

	if (w->state != PROTO_STATE_STARTING)
		return;
	sup_set_state(w, PROTO_STATE_READY);
	ev_timer_stop(herdd.loop, &w->spawn_timer);
	/* The environment served its exec; no request shows it. */
	json_decref(w->env);
	w->env = NULL;
	/* The spawn request is answered first: everything else can wait, its master cannot. */
	reply = proto_result(NULL,
	    json_pack("{s:s, s:i, s:s, s:s?, s:I}", "id", w->id, "pid", (int)w->pid, "socket",
	        w->socket, "name", w->name, "incarnation", (json_int_t)w->incarnation));
	sup_answer_waiters(w, true, reply);
	json_decref(reply);
	log_info("worker %s pid %d: ready", w->id, (int)w->pid);
	/* Its first figures, so the ready event and the first inspect show them. */
	(void)sample_worker(w);
	if (w->shutdown_on == PROTO_SHUTDOWN_CONNECTION_CLOSED && !w->had_connection) {
		/* The worker exits by itself at the timeout; herdd backs it up a grace later. */
		ev_timer_set(&w->conn_timer,
		    (w->connection_timeout_ms + (double)herdd.cfg.grace_ms) / 1000.0, 0.);
		ev_timer_start(herdd.loop, &w->conn_timer);
	}
	events_emit(w, PROTO_EVENT_READY);
	notify_status();
}

/* ---- reaping ---- */

/* What a failed spawn stage worked on: the directory, an output file or the executable. */
static const char *
stage_subject(const struct worker *w, const char *stage)
{
	if (!strcmp(stage, "chdir"))
		return w->cwd;
	if (!strcmp(stage, "stdout") && w->out[0].kind == OUT_FILE)
		return w->out[0].path;
	if (!strcmp(stage, "stderr") && w->out[1].kind == OUT_FILE)
		return w->out[1].path;
	return w->path;
}

/* The error a pending spawn request gets when the worker died first. */
static json_t *
spawn_error(struct worker *w)
{
	json_t *tail = capture_tail(&w->cap[1], 20);
	switch (w->reason) {
	case PROTO_REASON_SPAWN_FAILED: {
		const char *stage = w->spawn_stage ? w->spawn_stage : "unknown";
		char text[PATH_MAX + 128];

		/* "exec /nonexistent: No such file or directory", "chdir /x: ...", "stdout /f: ..." */
		snprintf(text, sizeof(text), "%s %s: %s", stage, stage_subject(w, stage),
		    strerror(w->spawn_errno));
		return proto_error(NULL, HERD_E_SPAWN_FAILED, text,
		    json_pack("{s:i, s:s, s:s, s:o}", "errno", w->spawn_errno, "stage", stage,
		        "error", strerror(w->spawn_errno), "stderr_tail", tail));
	}
	case PROTO_REASON_INIT_FAILED:
		return proto_error(NULL, HERD_E_INIT_FAILED,
		    w->message ? w->message : "worker state init failed",
		    json_pack("{s:o}", "stderr_tail", tail));
	case PROTO_REASON_SPAWN_TIMEOUT:
		return proto_error(NULL, HERD_E_TIMEOUT, "the worker was not ready in time",
		    json_pack("{s:s, s:I, s:o}", "what", "spawn", "ms",
		        (json_int_t)w->spawn_timeout_ms, "stderr_tail", tail));
	case PROTO_REASON_DAEMON_SHUTDOWN:
		return proto_error(NULL, HERD_E_SHUTTING_DOWN, "herdd is shutting down",
		    json_pack("{s:o}", "stderr_tail", tail));
	default:
		break;
	}
	return proto_error(NULL, HERD_E_WORKER_EXITED, "the worker exited before it was ready",
	    json_pack("{s:s, s:o, s:o, s:o}", "reason", proto_reason_name(w->reason), "exit_code",
	        w->signal ? json_null() : json_integer(w->exit_code), "signal",
	        w->signal ? sup_signal_json(w->signal) : json_null(), "stderr_tail", tail));
}

/* Kills children of herdd that are not workers: descendants that escaped their worker. */
static void
kill_escapees(void)
{
	struct proc_kid kids[MAX_TREE];
	size_t n = 0, i;

	proc_children(herdd.pid, kids, &n, MAX_TREE);
	for (i = 0; i < n; i++) {
		if (!sup_by_pid(kids[i].pid)) {
			char st;

			/* A zombie waits for our reaper; only a running escapee needs a signal. */
			if (proc_stat(kids[i].pid, &st, NULL, NULL) == 0 && st == 'Z')
				continue;
			log_info("killing pid %d: escaped from its worker", (int)kids[i].pid);
			proc_signal(&kids[i], SIGKILL);
		}
	}
}

/* User plus system time of a reaped child (and of the children it reaped), in ms. */
static uint64_t
rusage_ms(const struct rusage *ru)
{
	return (uint64_t)(ru->ru_utime.tv_sec + ru->ru_stime.tv_sec) * 1000 +
	    (uint64_t)(ru->ru_utime.tv_usec + ru->ru_stime.tv_usec) / 1000;
}

static void
reaped(struct worker *w, int status, const struct rusage *ru)
{
	json_t *r;

	w->reaped = true;
	walk_escapees |= !w->in_cgroup;
	/* Before its cgroup goes: memory.events says whether its memory limit killed it. */
	if (!w->reason && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL &&
	    limits_oom_killed(w))
		w->reason = PROTO_REASON_OOM_KILLED;
	contain_reaped(w);
	/* The last /proc reading may be an interval old: the kernel's total is final. */
	if (ru && rusage_ms(ru) > w->cpu_ms)
		w->cpu_ms = rusage_ms(ru);
	sup_pid_forget(w);
	w->ended_ms = now_ms();
	if (w->pidfd >= 0) {
		close(w->pidfd);
		w->pidfd = -1;
	}
	if (WIFSIGNALED(status)) {
		w->signal = WTERMSIG(status);
		w->exit_code = -1;
	} else {
		w->exit_code = WEXITSTATUS(status);
	}
	/* The child wrote its report before exiting: it is in the pipe now if ever. */
	if (w->errpipe >= 0)
		errpipe_cb(herdd.loop, &w->errpipe_io, EV_READ);
	capture_finish(&w->cap[0]);
	capture_finish(&w->cap[1]);
	wnotify_close(w);
	if (w->channel) {
		/* An init_failed or failure sent just before exiting must not be lost. */
		if (!w->channel->peer.closed)
			conn_drain(w->channel);
		conn_abort(w->channel);
		conn_unref(w->channel);
		w->channel = NULL;
	}
	ev_timer_stop(herdd.loop, &w->spawn_timer);
	ev_timer_stop(herdd.loop, &w->grace_timer);
	ev_timer_stop(herdd.loop, &w->hb_timer);
	ev_timer_stop(herdd.loop, &w->conn_timer);
	/* What only the live process needed goes; the record keeps what requests show. */
	json_decref(w->env);
	json_decref(w->init);
	json_decref(w->settings);
	w->env = w->init = w->settings = NULL;
	if (w->spawn_stage)
		w->reason = PROTO_REASON_SPAWN_FAILED;
	else if (!w->reason)
		w->reason = w->signal ? PROTO_REASON_CRASHED : PROTO_REASON_EXITED;
	sup_set_state(w, restart_after_exit(w));
	if (w->socket[0] && unlink(w->socket) < 0 && errno != ENOENT)
		log_warn("removing %s: %m", w->socket);
	if (w->signal)
		log_info("worker %s pid %d: killed by signal %d (%s)", w->id, (int)w->pid,
		    w->signal, proto_reason_name(w->reason));
	else
		log_info("worker %s pid %d: exited with %d (%s)", w->id, (int)w->pid, w->exit_code,
		    proto_reason_name(w->reason));
	sup_count_reason(w->reason);

	if (w->waiters) {
		r = spawn_error(w);
		sup_answer_waiters(w, true, r);
		json_decref(r);
		r = proto_result(NULL, sup_worker_json(w));
		sup_answer_waiters(w, false, r);
		json_decref(r);
	}
	/* The record keeps its owner until the connection closes (sup_owner_gone). */
	if (w->owner)
		w->owner->nworkers--;
	events_emit(w, proto_reason_event(w->reason));
	if (w->state == PROTO_STATE_FAILED)
		events_emit(w, PROTO_EVENT_GIVEN_UP);
	sup_prune(w->uid);
	notify_status();
	main_maybe_exit();
}

static void
escapee_check_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
	ev_prepare_stop(loop, p);
	/* A child the leader is making would look like an escapee: the end of its spawn walks. */
	if (leader_busy())
		return;
	walk_escapees = false;
	kill_escapees();
}

/* One reaped child: a worker's exit, or a pid that was no worker. ru may be NULL. */
void
sup_reap(pid_t pid, int status, const struct rusage *ru)
{
	struct worker *w = sup_by_pid(pid);

	if (w) {
		reaped(w, status, ru);
	} else {
		walk_escapees = true;
		log_debug("reaped pid %d (not a worker)", (int)pid);
	}
}

/* Reaps every child that has ended. */
static void
reap_all(struct ev_loop *loop)
{
	struct rusage ru;
	int status;
	pid_t pid;

	/*
	 * Not while the leader makes a child: its pid is not mapped yet, and its
	 * exit would be taken for a stranger's. sup_spawned() comes back here.
	 */
	if (leader_busy()) {
		reap_waited = true;
		return;
	}
	reap_waited = false;
	/* One SIGCHLD may stand for many children. */
	while ((pid = wait4(-1, &status, WNOHANG, &ru)) > 0)
		sup_reap(pid, status, &ru);
	/*
	 * Once for all the reaps of this loop iteration: a thousand workers
	 * stopped together must not read /proc a thousand times. A worker in a
	 * cgroup needs no walk: cgroup.kill took its whole tree.
	 */
	if (walk_escapees)
		ev_prepare_start(loop, &escapee_check);
}

static void
child_cb(struct ev_loop *loop, ev_signal *s, int revents)
{
	reap_all(loop);
}

/* Starts the reaper and the retention timer. */
void
sup_init(void)
{
	TAILQ_INIT(&herdd.workers);
	TAILQ_INIT(&herdd.exited);
	/* A fresh state (the fuzz target makes one per input) names its first worker w1. */
	ids_open(NULL);
	ev_signal_init(&child_watcher, child_cb, SIGCHLD);
	ev_signal_start(herdd.loop, &child_watcher);
	ev_prepare_init(&escapee_check, escapee_check_cb);
	sup_records_start();
}

/* Frees every record (after the loop ended). */
void
sup_cleanup(void)
{
	ev_signal_stop(herdd.loop, &child_watcher);
	ev_prepare_stop(herdd.loop, &escapee_check);
	sup_records_free();
	ids_close();
}
