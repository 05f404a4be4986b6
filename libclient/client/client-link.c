/* SPDX-License-Identifier: MIT */
/*
 * The master's end of links (PROTOCOL.md 9): an address that names a host
 * (ssh://, slurm://, exec:) is reached through a launcher command running
 * `herdd --stdio` there, whose stdin and stdout become the link. Each
 * connection to that host (the master session, an inspector session, a
 * worker's socket) is one channel of the link, handed to the connection code
 * as the local end of a socketpair, so nothing above the connect knows.
 *
 * One link per host spec per process, shared by every connection to it and
 * finished when its last channel closes. The links run on one loop thread of
 * their own (started with the first), whose loop holds the lock except while
 * it polls (libev's release/acquire hooks): a connecting thread takes the
 * lock, changes the loop, wakes it and waits on the condition variable.
 * A connection's own thread also works the link under the lock, so that a
 * call's round trip does not wait for the loop thread twice (the sink,
 * below): it writes its lines to the link, and while it waits for a reply
 * it reads the link in the loop thread's place.
 *
 * The launcher gets one end of a socketpair as stdin and stdout, so a write
 * to a launcher that died is an error, never a SIGPIPE for the master. It
 * runs from the loop thread and dies with the master's process.
 * When the link ends (the launcher's EOF, silence past the heartbeat
 * timeout), its channels close, so their connections fail as any lost
 * connection does; the launcher is given a moment to exit, then SIGKILLed,
 * and reaped.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/client-internal.h"
#include "common/link.h"
#include "ship.h"

/* How long a launcher may take to exit once its link ended, before SIGKILL. */
#define REAP_GRACE_S 1.0

extern char **environ;

enum mlink_state {
	ML_STARTING, /* launching, waiting for herdd's hello */
	ML_UP,
	ML_DEAD,
};

struct mlink {
	LIST_ENTRY(mlink) entry;
	char *spec;
	struct herd__link link;
	enum mlink_state state;
	bool listed; /* on mlinks, where connects find it */
	char *why; /* why it died */
	struct launcher *launcher; /* to run on the loop thread (NULL once it runs) */
	pid_t pid; /* the launcher (0 before it runs) */
	int pidfd;
	ev_io pid_io;
	ev_timer reap_timer;
	unsigned hb_interval_ms, hb_timeout_ms; /* from the hello on */
	unsigned cpus; /* what the remote herdd's hello said its workers can use (0: not said) */
	unsigned next_id;
	unsigned users; /* connects in progress: the link stays while they run */
	bool reaped; /* the launcher is reaped: freed once users is 0 */
	int epfd; /* holds the link's input for the loop, unless a waiting thread reads it */
	bool reader; /* a thread waiting for its connection reads the link (sink_poll) */
	struct ship_req *ship; /* the shipment under way (one at a time) */
};

/* An executable being shipped (PROTOCOL.md 9.5): the shipping thread's, until answered. */
struct ship_req {
	const char *sha;
	int state; /* SHIP_WAIT, SHIP_SEND, then 0 (shipped) or -errno */
	char *path; /* where it is on the host */
	char *why;
};

enum { SHIP_WAIT = 1, SHIP_SEND = 2 };

/* A channel being opened: the connecting thread's, until answered. */
struct open_req {
	int result; /* 1 while waiting, then 0 or -errno */
	char *why;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond;
static unsigned news; /* broadcasts so far, under the lock: wait_news() misses none */
static struct ev_loop *loop;
static ev_async wake;
static ev_prepare idle_check;
static LIST_HEAD(, mlink) mlinks = LIST_HEAD_INITIALIZER(mlinks);

/* Wakes the connecting threads: something they wait for changed; lock held. */
static void
news_broadcast(void)
{
	news++;
	pthread_cond_broadcast(&cond);
}

static const char *const schemes[] = { "ssh://", "slurm://", "exec:" };

bool
herd__link_address(const char *address)
{
	for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
		if (address && strncmp(address, schemes[i], strlen(schemes[i])) == 0)
			return true;
	return false;
}

/* ---- launching ---- */

/* ssh://[user@]host[:port][/path/to/herdd] as sh -c arguments: `$HERD_SSH_COMMAND "$@"`. */
static int
ssh_argv(const char *spec, const char **argv, char **owned)
{
	const char *rest = spec + strlen("ssh://"), *slash = strchr(rest, '/');
	const char *at, *colon, *cmd = secure_getenv("HERD_SSH_COMMAND");
	const char *herdd = secure_getenv("HERD_REMOTE_HERDD");
	char *host = strndup(rest, slash ? (size_t)(slash - rest) : strlen(rest));
	int n = 0;

	if (!host)
		return -ENOMEM;
	owned[0] = host;
	at = strchr(host, '@');
	colon = strrchr(at ? at : host, ':');
	if (at)
		host[at - host] = '\0';
	if (colon)
		host[colon - host] = '\0';
	if (!slash)
		slash = herdd && *herdd ? herdd : "herdd";
	if (asprintf(&owned[1], "exec %s \"$@\"", cmd && *cmd ? cmd : "ssh") < 0 ||
	    asprintf(&owned[2], "%s --stdio", slash) < 0)
		return -ENOMEM;
	argv[n++] = "/bin/sh";
	argv[n++] = "-c";
	argv[n++] = owned[1];
	argv[n++] = "herd-ssh";
	if (colon) {
		argv[n++] = "-p";
		argv[n++] = colon + 1;
	}
	if (at) {
		argv[n++] = "-l";
		argv[n++] = host;
	}
	argv[n++] = "--";
	argv[n++] = at ? at + 1 : host;
	argv[n++] = owned[2];
	argv[n] = NULL;
	if (!*argv[n - 2])
		return -EINVAL;
	return 0;
}

/* The launcher's argv for spec; owned[] receives what to free. */
static int
launcher_argv(const char *spec, const char **argv, char **owned)
{
	static const char srun[] =
	    "exec srun --nodes=1 --ntasks=1 --nodelist=\"$1\" $HERD_SRUN_OPTIONS "
	    "${HERD_REMOTE_HERDD:-herdd} --stdio";

	if (strncmp(spec, "ssh://", 6) == 0)
		return ssh_argv(spec, argv, owned);
	argv[0] = "/bin/sh";
	argv[1] = "-c";
	if (strncmp(spec, "slurm://", 8) == 0) {
		argv[2] = srun;
		argv[3] = "herd-srun";
		argv[4] = spec + 8;
		argv[5] = NULL;
		return *argv[4] ? 0 : -EINVAL;
	}
	argv[2] = spec + strlen("exec:");
	argv[3] = NULL;
	return *argv[2] ? 0 : -EINVAL;
}

/* What the loop thread runs for a link: the command, and its end of the socketpair. */
struct launcher {
	const char *argv[16];
	char *owned[3];
	int fd; /* the launcher's stdin and stdout (-1 once it runs) */
};

static void
launcher_free(struct launcher *la)
{
	for (size_t i = 0; i < 3; i++)
		free(la->owned[i]);
	if (la->fd >= 0)
		close(la->fd);
	free(la);
}

/* The launcher for spec, and a socketpair: *ret_fd gets our end. */
static int
launcher_new(const char *spec, struct launcher **ret, int *ret_fd)
{
	struct launcher *la = calloc(1, sizeof(*la));
	int sv[2], r;

	if (!la)
		return -ENOMEM;
	la->fd = -1;
	r = launcher_argv(spec, la->argv, la->owned);
	if (r == 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		r = -errno;
	if (r < 0) {
		launcher_free(la);
		return r;
	}
	la->fd = sv[1];
	*ret_fd = sv[0];
	*ret = la;
	return 0;
}

/*
 * The launcher's child, between clone and exec: only system calls here.
 * It dies with the master (PR_SET_PDEATHSIG), for a launcher does not end
 * by itself while its transport hangs: an ssh client whose network is cut
 * waits minutes for TCP to give up. The loop thread that forks it lives as
 * long as the process. A process group of its own: a signal to the
 * master's group (a terminal's ^C, a test runner's cleanup) must not kill
 * srun together with its helper, which leaves the job running.
 */
static _Noreturn void
launcher_exec(const struct launcher *la, pid_t parent)
{
	sigset_t none;
	int fd = la->fd;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 || getppid() != parent)
		_exit(127);
	/* Out of the way of dup2() onto 0 and 1, which keeps close-on-exec off. */
	if (fd <= 1)
		fd = fcntl(fd, F_DUPFD_CLOEXEC, 2);
	sigemptyset(&none);
	if (fd < 0 || setpgid(0, 0) < 0 || dup2(fd, 0) < 0 || dup2(fd, 1) < 0 ||
	    sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		_exit(127);
	/* execve() takes char *const[] but does not write to the strings. */
	execve(la->argv[0], (char *const *)la->argv, environ);
	_exit(127);
}

/*
 * Runs the launcher; the loop thread's (see launcher_exec). A raw clone
 * is a fork without the atfork handlers, one of which takes the lock this
 * thread holds. Returns the pid or -errno.
 */
static pid_t
launcher_run(struct launcher *la)
{
	pid_t parent = getpid();
	long pid = syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);

	if (pid == 0)
		launcher_exec(la, parent);
	if (pid < 0)
		return -errno;
	close(la->fd);
	la->fd = -1;
	return (pid_t)pid;
}

/* ---- the loop thread ---- */

static void
mlink_free(struct mlink *ml)
{
	if (ml->launcher)
		launcher_free(ml->launcher);
	herd__link_free(&ml->link);
	if (ml->epfd >= 0)
		close(ml->epfd);
	free(ml->spec);
	free(ml->why);
	free(ml);
}

/*
 * The launcher is gone or gets SIGKILL now; either way it is reaped, and
 * the link freed unless a connect still looks at it (it frees it then).
 */
static void
mlink_reap(struct mlink *ml, bool force)
{
	/* A link that died before its launcher ran has none. */
	if (ml->pid > 0 && force)
		kill(ml->pid, SIGKILL);
	while (ml->pid > 0 && waitpid(ml->pid, NULL, 0) < 0 && errno == EINTR) {
	}
	ml->reaped = true;
	if (ml->pidfd >= 0) {
		ev_io_stop(loop, &ml->pid_io);
		close(ml->pidfd);
		ml->pidfd = -1;
	}
	ev_timer_stop(loop, &ml->reap_timer);
	if (ml->users == 0)
		mlink_free(ml);
}

static void
pid_cb(struct ev_loop *l, ev_io *w, int revents)
{
	mlink_reap(w->data, false);
}

static void
reap_timer_cb(struct ev_loop *l, ev_timer *w, int revents)
{
	mlink_reap(w->data, true);
}

static void
mlink_unlist(struct mlink *ml)
{
	if (ml->listed)
		LIST_REMOVE(ml, entry);
	ml->listed = false;
}

static void
ml_dead(struct herd__link *l, int reason, const char *why)
{
	struct mlink *ml = l->userdata;

	ml->state = ML_DEAD;
	ml->why = strdup(why ? why : "the link ended");
	mlink_unlist(ml);
	news_broadcast();
	/* Not from inside the link's own callback: the reap frees it. */
	ml->pidfd = ml->pid > 0 ? (int)syscall(SYS_pidfd_open, ml->pid, 0) : -1;
	if (ml->pidfd >= 0) {
		(void)fcntl(ml->pidfd, F_SETFD, FD_CLOEXEC);
		ev_io_init(&ml->pid_io, pid_cb, ml->pidfd, EV_READ);
		ml->pid_io.data = ml;
		ev_io_start(loop, &ml->pid_io);
	}
	ev_timer_init(&ml->reap_timer, reap_timer_cb, ml->pidfd >= 0 ? REAP_GRACE_S : 0., 0.);
	ml->reap_timer.data = ml;
	ev_timer_start(loop, &ml->reap_timer);
}

/* herdd's answers to a shipment: ship_send, shipped {path}, ship_failed {error}. */
static void
ml_ship_answer(struct mlink *ml, const char *method, json_t *params)
{
	const char *sha = json_string_value(json_object_get(params, "sha256"));
	struct ship_req *req = ml->ship;

	if (!req || !sha || strcmp(sha, req->sha) != 0)
		return;
	if (strcmp(method, "ship_send") == 0) {
		req->state = SHIP_SEND;
	} else if (strcmp(method, "shipped") == 0) {
		req->path = strdup(json_string_value(json_object_get(params, "path")) ?: "");
		req->state = req->path ? 0 : -ENOMEM;
	} else if (strcmp(method, "ship_failed") == 0) {
		req->why = strdup(json_string_value(json_object_get(params, "error")) ?: "refused");
		req->state = -EPERM;
	}
	news_broadcast();
}

static void
ml_control(struct herd__link *l, const char *method, json_t *params)
{
	struct mlink *ml = l->userdata;
	json_int_t id = json_integer_value(json_object_get(params, "channel"));
	struct herd__link_chan *c;
	struct open_req *req;

	if (strcmp(method, "hello") == 0) {
		if (json_integer_value(json_object_get(params, "version")) != HERD__LINK_VERSION) {
			herd__link_kill(l, -EPROTO, "the remote herdd speaks another link version");
			return;
		}
		id = json_integer_value(json_object_get(params, "cpus"));
		ml->cpus = id > 0 && id <= HERD__LINK_MAX_CPUS ? (unsigned)id : 0;
		/* An older herdd names no window: the link runs without (link.h). */
		id = json_integer_value(json_object_get(params, "window"));
		if (id > 0 && id <= HERD__LINK_WINDOW_MAX)
			herd__link_set_windows(l, (size_t)id);
		ml->state = ML_UP;
		herd__link_set_heartbeat(l, ml->hb_interval_ms, ml->hb_timeout_ms);
		news_broadcast();
	} else if (strncmp(method, "ship", 4) == 0) {
		ml_ship_answer(ml, method, params);
	} else if (strcmp(method, "opened") == 0 && id > 0 && id <= UINT32_MAX &&
	    (c = herd__link_chan_find(l, (unsigned)id)) && (req = c->userdata)) {
		req->result = 0;
		c->userdata = NULL;
		news_broadcast();
	}
}

/* The far end closed c; a connect still waiting for it learns why. */
static void
ml_chan_closed(struct herd__link *l, struct herd__link_chan *c, const char *error)
{
	struct open_req *req = c->userdata;

	if (!req)
		return;
	req->result = -ECONNREFUSED;
	req->why = strdup(error ? error : "the remote herdd refused the channel");
	c->userdata = NULL;
	news_broadcast();
}

static const struct herd__link_ops ml_ops = {
	.control = ml_control,
	.chan_closed = ml_chan_closed,
	.dead = ml_dead,
};

/*
 * Before each poll: a new link's launcher runs (here, on the loop thread:
 * launcher_exec), and a link nobody uses any more is finished (its far end
 * sees EOF).
 */
static void
idle_check_cb(struct ev_loop *l, ev_prepare *w, int revents)
{
	struct mlink *ml, *next;
	pid_t pid;

	for (ml = LIST_FIRST(&mlinks); ml; ml = next) {
		next = LIST_NEXT(ml, entry);
		if (ml->launcher) {
			pid = launcher_run(ml->launcher);
			launcher_free(ml->launcher);
			ml->launcher = NULL;
			if (pid > 0)
				ml->pid = pid;
			else
				herd__link_kill(&ml->link, pid, "cannot run the launcher");
		} else if (ml->state == ML_UP && ml->users == 0 && LIST_EMPTY(&ml->link.chans)) {
			mlink_unlist(ml);
			herd__link_finish(&ml->link);
		}
	}
}

static void
wake_cb(struct ev_loop *l, ev_async *w, int revents)
{
}

static void
loop_release(struct ev_loop *l)
{
	pthread_mutex_unlock(&lock);
}

static void
loop_acquire(struct ev_loop *l)
{
	pthread_mutex_lock(&lock);
}

static void *
loop_thread(void *arg)
{
	pthread_mutex_lock(&lock);
	ev_run(loop, 0);
	pthread_mutex_unlock(&lock);
	return NULL;
}

/*
 * A forked child has no loop thread and must not speak on its parent's
 * links: it forgets them and closes its copies of their sockets, so that
 * only the parent holds each link open.
 */
static void
atfork_prepare(void)
{
	pthread_mutex_lock(&lock);
}

static void
atfork_parent(void)
{
	pthread_mutex_unlock(&lock);
}

static void
atfork_child(void)
{
	struct herd__link_chan *c;
	struct mlink *ml;

	LIST_FOREACH(ml, &mlinks, entry) {
		LIST_FOREACH(c, &ml->link.chans, entry)
			close(c->fd);
		close(ml->link.in_fd);
		if (ml->epfd >= 0)
			close(ml->epfd);
		if (ml->launcher)
			close(ml->launcher->fd);
	}
	LIST_INIT(&mlinks);
	loop = NULL;
	pthread_mutex_init(&lock, NULL);
}

/* Starts the loop thread once; lock held. */
static int
loop_start(void)
{
	pthread_condattr_t ca;
	pthread_attr_t ta;
	sigset_t all, old;
	pthread_t t;
	int r;

	static bool atfork;

	if (loop)
		return 0;
	if (!atfork && pthread_atfork(atfork_prepare, atfork_parent, atfork_child) == 0)
		atfork = true;
	loop = ev_loop_new(EVFLAG_AUTO);
	if (!loop)
		return -ENOMEM;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cond, &ca);
	pthread_condattr_destroy(&ca);
	ev_async_init(&wake, wake_cb);
	ev_async_start(loop, &wake);
	ev_prepare_init(&idle_check, idle_check_cb);
	ev_prepare_start(loop, &idle_check);
	ev_set_loop_release_cb(loop, loop_release, loop_acquire);
	/*
	 * The thread takes no signal of the program's but SIGCHLD, its
	 * launchers' news: one aimed at a thread that blocks it stays pending
	 * and interrupts another thread's wait (EINTR), where an unblocked one
	 * left at SIG_DFL is dropped at once.
	 */
	sigfillset(&all);
	sigdelset(&all, SIGCHLD);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&ta);
	pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
	r = -pthread_create(&t, &ta, loop_thread, NULL);
	pthread_attr_destroy(&ta);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r < 0) {
		ev_loop_destroy(loop);
		loop = NULL;
	}
	return r;
}

/* ---- connecting ---- */

/*
 * Waits (lock held) for the loop thread's next news; false once the deadline
 * passed. Meanwhile the process's other connections get their heartbeats, as
 * in every wait inside libherd: a launch that queues (srun waiting for
 * resources) must not cost the master its sessions on the other hosts.
 */
static bool
wait_news(const struct timespec *deadline)
{
	unsigned seen = news;
	struct timespec until = *deadline;
	uint64_t next, end;

	/*
	 * Not under the lock: the keepalive takes its list's lock, which a
	 * fork() elsewhere holds while its atfork handler waits for ours (a
	 * deadlock that froze every link, heartbeats and all). What changed
	 * meanwhile is news already.
	 */
	pthread_mutex_unlock(&lock);
	next = herd__keepalive(NULL);
	pthread_mutex_lock(&lock);
	if (news != seen)
		return true;
	end = (uint64_t)deadline->tv_sec * 1000000u + (uint64_t)deadline->tv_nsec / 1000u;
	if (next < end) {
		until.tv_sec = (time_t)(next / 1000000u);
		until.tv_nsec = (long)(next % 1000000u) * 1000;
	}
	return pthread_cond_timedwait(&cond, &lock, &until) != ETIMEDOUT || next < end;
}

/* A new link to spec, launched and saying hello; lock held. */
static int
mlink_new(const char *spec, const struct herd__settings *s, struct mlink **ret)
{
	unsigned interval = s->heartbeat_interval_ms ? s->heartbeat_interval_ms
	                                             : HERD_DEFAULT_HEARTBEAT_INTERVAL_MS;
	unsigned timeout =
	    s->heartbeat_timeout_ms ? s->heartbeat_timeout_ms : HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS;
	struct mlink *ml = calloc(1, sizeof(*ml));
	int fd, r;

	if (!ml || !(ml->spec = strdup(spec))) {
		free(ml);
		return -ENOMEM;
	}
	r = launcher_new(spec, &ml->launcher, &fd);
	if (r < 0) {
		free(ml->spec);
		free(ml);
		return r;
	}
	ml->pidfd = -1;
	ev_timer_init(&ml->reap_timer, reap_timer_cb, 0., 0.);
	herd__link_init(&ml->link, loop, fd, fd, &ml_ops, ml, s->max_message_size);
	/* The loop watches the input through an epoll set a waiting thread can empty (sink_poll). */
	ml->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (ml->epfd >= 0 &&
	    epoll_ctl(ml->epfd, EPOLL_CTL_ADD, fd, &(struct epoll_event){ .events = EPOLLIN }) <
	        0) {
		close(ml->epfd);
		ml->epfd = -1;
	}
	if (ml->epfd >= 0)
		herd__link_watch_in(&ml->link, ml->epfd);
	/* Until the hello, the connect's deadline bounds the launch (srun may queue). */
	ml->hb_interval_ms = interval;
	ml->hb_timeout_ms = timeout;
	(void)herd__link_notify(&ml->link, "hello",
	    json_pack("{s:i, s:I, s:I, s:I}", "version", HERD__LINK_VERSION,
	        "heartbeat_interval_ms", (json_int_t)interval, "heartbeat_timeout_ms",
	        (json_int_t)timeout, "window", (json_int_t)HERD__LINK_WINDOW));
	LIST_INSERT_HEAD(&mlinks, ml, entry);
	ml->listed = true;
	*ret = ml;
	return 0;
}

/* The listed link to spec, launched if there is none, once its herdd said hello. */
static int
mlink_get(const char *spec, const struct herd__settings *s, const struct timespec *deadline,
    struct mlink **ret, char **ret_why)
{
	struct mlink *ml;
	int r;

	LIST_FOREACH(ml, &mlinks, entry)
		if (strcmp(ml->spec, spec) == 0)
			break;
	if (!ml) {
		r = mlink_new(spec, s, &ml);
		if (r < 0) {
			*ret_why = strdup("cannot run the launcher");
			return r;
		}
		ev_async_send(loop, &wake);
	}
	ml->users++;
	while (ml->state == ML_STARTING && wait_news(deadline)) {
	}
	*ret = ml;
	if (ml->state == ML_STARTING) {
		herd__link_kill(&ml->link, -ETIMEDOUT, "no hello from the remote herdd in time");
		ev_async_send(loop, &wake);
	}
	if (ml->state == ML_UP)
		return 0;
	*ret_why = strdup(ml->why);
	return strstr(ml->why, "in time") ? -ETIMEDOUT : -ECONNREFUSED;
}

/*
 * A connection's way onto its channel's link (struct herd__peer_sink), so
 * that a call's round trip wakes no loop thread in the master: the
 * connection's writing thread sends its lines on the link itself
 * (sink_write), and the thread that waits for the reply reads the link
 * itself (sink_poll). The channel's socketpair stays the connection's fd:
 * what these cannot do at once goes through it and the loop thread, as
 * before.
 */
struct herd__link_sink {
	struct herd__link_chan *chan; /* under the lock; NULL once the channel went */
};

/*
 * Runs under the peer's lock, maybe inside a keepalive pass holding its
 * list's lock: it only tries the lock (a fork()'s atfork handlers take
 * ours, then the keepalive's), and a busy loop thread means the socket.
 */
static size_t
sink_write(void *arg, const struct iovec *iov, int n)
{
	struct herd__link_sink *sk = arg;
	struct herd__link *l;
	size_t took = 0;

	if (pthread_mutex_trylock(&lock) != 0)
		return 0;
	if (loop && sk->chan) {
		l = sk->chan->link;
		took = herd__link_chan_send(sk->chan, iov, n);
		/* The loop picks up what is left to write, or the link's end. */
		if (l->dead || !proto_outq_empty(&l->out))
			ev_async_send(loop, &wake);
	}
	pthread_mutex_unlock(&lock);
	return took;
}

/*
 * poll() on the connection's socket, by a thread that waits for its
 * connection: meanwhile it reads the link itself, in the loop thread's
 * place, so a reply reaches it without a wakeup of the loop thread in
 * between. One thread at a time; the others poll their sockets, where the
 * reader relays their lines. The loop's epoll set gives the input up
 * meanwhile, so the loop thread sleeps through it.
 */
static int
sink_poll(void *arg, struct pollfd *pfd, int timeout_ms)
{
	struct herd__link_sink *sk = arg;
	struct pollfd p[2];
	struct mlink *ml;
	int r, err, pumped;

	pthread_mutex_lock(&lock);
	ml = loop && sk->chan ? sk->chan->link->userdata : NULL;
	/* Without windows (an older herdd) reading the link may have to wait: the loop's job. */
	if (!ml || ml->reader || ml->state != ML_UP || ml->epfd < 0 || !ml->link.windows ||
	    epoll_ctl(ml->epfd, EPOLL_CTL_DEL, ml->link.in_fd, NULL) < 0) {
		pthread_mutex_unlock(&lock);
		return poll(pfd, 1, timeout_ms);
	}
	ml->reader = true;
	ml->users++;
	pthread_mutex_unlock(&lock);

	p[0] = *pfd;
	p[1] = (struct pollfd){ .fd = ml->link.in_fd, .events = POLLIN };
	r = poll(p, 2, timeout_ms);
	err = errno;
	if (r > 0 && p[1].revents) {
		pthread_mutex_lock(&lock);
		pumped = herd__link_pump(&ml->link);
		if (pumped != 0)
			ev_async_send(loop, &wake);
		pthread_mutex_unlock(&lock);
		/* Our own reply, if it came, is on our socket now. */
		r = poll(p, 1, 0);
	}
	pfd->revents = p[0].revents;

	pthread_mutex_lock(&lock);
	ml->reader = false;
	/* The loop watches the input again; a dead link's is gone with it. */
	if (!ml->link.dead)
		(void)epoll_ctl(ml->epfd, EPOLL_CTL_ADD, ml->link.in_fd,
		    &(struct epoll_event){ .events = EPOLLIN });
	if (--ml->users == 0 && ml->reaped)
		mlink_free(ml);
	pthread_mutex_unlock(&lock);
	errno = err;
	return r;
}

static void
sink_release(void *arg)
{
	struct herd__link_sink *sk = arg;

	pthread_mutex_lock(&lock);
	if (sk->chan)
		sk->chan->holder = NULL;
	pthread_mutex_unlock(&lock);
	free(sk);
}

const struct herd__peer_sink herd__link_sink_ops = {
	.write = sink_write,
	.poll = sink_poll,
	.release = sink_release,
};

/* Opens a channel on ml to path (NULL: herdd's control); *ret_fd gets its local end. */
static int
chan_open(struct mlink *ml, const char *path, const struct timespec *deadline, int *ret_fd,
    struct herd__link_sink *sink, char **ret_why)
{
	struct open_req req = { .result = 1 };
	struct herd__link_chan *c;
	unsigned id = ++ml->next_id;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	c = herd__link_chan_add(&ml->link, id, sv[0]);
	if (!c) {
		close(sv[1]);
		return -ENOMEM;
	}
	c->userdata = &req;
	(void)herd__link_notify(
	    &ml->link, "open", json_pack("{s:i, s:s*}", "channel", (int)id, "socket", path));
	ev_async_send(loop, &wake);
	while (req.result == 1 && ml->state != ML_DEAD && wait_news(deadline)) {
	}
	if (req.result == 0) {
		/* Opened, and maybe closed by the far end already (then writes take the socket). */
		c = ml->state == ML_DEAD ? NULL : herd__link_chan_find(&ml->link, id);
		if (c) {
			c->holder = &sink->chan;
			sink->chan = c;
		}
		*ret_fd = sv[1];
		return 0;
	}
	close(sv[1]);
	c = ml->state == ML_DEAD ? NULL : herd__link_chan_find(&ml->link, id);
	if (c) {
		c->userdata = NULL;
		herd__link_chan_close(c, NULL);
	}
	*ret_why = req.why
	    ? req.why
	    : strdup(ml->state == ML_DEAD ? ml->why : "no answer from the remote herdd");
	return req.result < 0 ? req.result : ml->state == ML_DEAD ? -ECONNRESET : -ETIMEDOUT;
}

/*
 * HOST#PATH is the socket PATH on HOST; the last "#/" splits them (herdd's
 * paths hold none). Returns the length of HOST; *ret_path gets PATH or NULL.
 */
static size_t
address_split(const char *address, const char **ret_path)
{
	const char *hash = NULL, *p;

	for (p = address; (p = strstr(p, "#/")); p++)
		hash = p;
	*ret_path = hash ? hash + 1 : NULL;
	return hash ? (size_t)(hash - address) : strlen(address);
}

/* The link up to address's host, or NULL; lock held. */
static struct mlink *
mlink_find_up(const char *address)
{
	const char *path;
	size_t n = address_split(address, &path);
	struct mlink *ml;

	LIST_FOREACH(ml, &mlinks, entry)
		if (ml->state == ML_UP && strlen(ml->spec) == n &&
		    strncmp(ml->spec, address, n) == 0)
			return ml;
	return NULL;
}

bool
herd__link_up(const char *address)
{
	bool up;

	pthread_mutex_lock(&lock);
	up = mlink_find_up(address) != NULL;
	pthread_mutex_unlock(&lock);
	return up;
}

unsigned
herd__link_cpus(const char *address)
{
	struct mlink *ml;
	unsigned cpus;

	pthread_mutex_lock(&lock);
	ml = mlink_find_up(address);
	cpus = ml ? ml->cpus : 0;
	pthread_mutex_unlock(&lock);
	return cpus;
}

/* The deadline timeout_ms from now on CLOCK_MONOTONIC, as the condition variable counts. */
static void
deadline_in(unsigned timeout_ms, struct timespec *ret)
{
	clock_gettime(CLOCK_MONOTONIC, ret);
	ret->tv_sec += timeout_ms / 1000;
	ret->tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (ret->tv_nsec >= 1000000000) {
		ret->tv_sec++;
		ret->tv_nsec -= 1000000000;
	}
}

/*
 * Takes the lock and the link to address's host for a connect or a
 * shipment, up (the loop thread started and the link launched if need be)
 * and held until mlink_put(), which drops both. *deadline is timeout_ms
 * from now. On failure *ret may still be set: mlink_put() it all the same.
 */
static int
mlink_take(const char *address, const struct herd__settings *s, unsigned timeout_ms,
    struct timespec *deadline, struct mlink **ret, char **ret_why)
{
	const char *path;
	char *spec = strndup(address, address_split(address, &path));
	int r = spec ? 0 : -ENOMEM;

	*ret = NULL;
	deadline_in(timeout_ms, deadline);
	pthread_mutex_lock(&lock);
	if (r == 0)
		r = loop_start();
	if (r == 0)
		r = mlink_get(spec, s, deadline, ret, ret_why);
	free(spec);
	return r;
}

/* A connect or shipment is done with ml (may be NULL); the lock goes too. */
static void
mlink_put(struct mlink *ml)
{
	/* The loop picks up what changed here (a channel given up, the last user gone). */
	if (ml && --ml->users == 0 && ml->reaped)
		mlink_free(ml);
	else if (loop)
		ev_async_send(loop, &wake);
	pthread_mutex_unlock(&lock);
}

int
herd__link_connect(const char *address, const struct herd__settings *s, unsigned timeout_ms,
    int *ret_fd, struct herd__link_sink **ret_sink, char **ret_why)
{
	struct herd__link_sink *sink = calloc(1, sizeof(*sink));
	struct mlink *ml = NULL;
	struct timespec deadline;
	const char *path;
	int r;

	*ret_why = NULL;
	if (!sink)
		return -ENOMEM;
	(void)address_split(address, &path);
	r = mlink_take(address, s, timeout_ms, &deadline, &ml, ret_why);
	if (r == 0)
		r = chan_open(ml, path, &deadline, ret_fd, sink, ret_why);
	mlink_put(ml);
	if (r < 0) {
		free(sink);
		return r;
	}
	(void)fcntl(*ret_fd, F_SETFL, fcntl(*ret_fd, F_GETFL) | O_NONBLOCK);
	*ret_sink = sink;
	return 0;
}

/* ---- shipping executables (PROTOCOL.md 9.5) ---- */

/* Bytes per ship_data message: 64 KiB of base64. */
#define SHIP_CHUNK 49152

/* Reads the file at path whole. Returns 0 with *ret (malloc'd) and *ret_len, or -errno. */
static int
file_read(const char *path, char **ret, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	size_t got = 0;
	ssize_t n;
	char *buf;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return -ENOMEM;
	}
	while (got < (size_t)st.st_size && (n = read(fd, buf + got, (size_t)st.st_size - got)) > 0)
		got += (size_t)n;
	close(fd);
	if (got != (size_t)st.st_size) {
		free(buf);
		return -EIO;
	}
	*ret = buf;
	*ret_len = got;
	return 0;
}

/* Queues the whole executable as ship_data messages and a ship_end; lock held. */
static int
ship_send(struct mlink *ml, const char *sha, const char *data, size_t len)
{
	char *b64 = malloc(PROTO_BASE64_SIZE(SHIP_CHUNK));
	int r = b64 ? 0 : -ENOMEM;

	for (size_t off = 0; r == 0 && off < len; off += SHIP_CHUNK) {
		proto_base64_encode(
		    data + off, len - off < SHIP_CHUNK ? len - off : SHIP_CHUNK, b64);
		r = herd__link_notify(
		    &ml->link, "ship_data", json_pack("{s:s, s:s}", "sha256", sha, "data", b64));
	}
	free(b64);
	if (r == 0)
		r = herd__link_notify(&ml->link, "ship_end", json_pack("{s:s}", "sha256", sha));
	ev_async_send(loop, &wake);
	return r;
}

/* Runs one shipment on ml and waits for its answers; lock held. */
static int
ship_run(struct mlink *ml, struct ship_req *req, const char *data, size_t len,
    const struct timespec *deadline)
{
	while (ml->ship && ml->state == ML_UP && wait_news(deadline)) {
	}
	if (ml->ship || ml->state != ML_UP)
		return ml->state == ML_UP ? -ETIMEDOUT : -ECONNRESET;
	ml->ship = req;
	(void)herd__link_notify(&ml->link, "ship",
	    json_pack("{s:s, s:I}", "sha256", req->sha, "size", (json_int_t)len));
	ev_async_send(loop, &wake);
	while (req->state == SHIP_WAIT && ml->state == ML_UP && wait_news(deadline)) {
	}
	if (req->state == SHIP_SEND && ship_send(ml, req->sha, data, len) == 0)
		while (req->state == SHIP_SEND && ml->state == ML_UP && wait_news(deadline)) {
		}
	ml->ship = NULL;
	news_broadcast();
	if (req->state > 0)
		return ml->state == ML_UP ? -ETIMEDOUT : -ECONNRESET;
	return req->state;
}

int
herd__link_ship(const char *address, const struct herd__settings *s, const char *path,
    unsigned timeout_ms, char **ret_path, char **ret_why)
{
	struct ship_req req = { .state = SHIP_WAIT };
	_cleanup_free_ char *data = NULL;
	struct proto_sha256 hash;
	struct mlink *ml = NULL;
	struct timespec deadline;
	char sha[65];
	size_t len = 0;
	int r;

	*ret_path = *ret_why = NULL;
	r = file_read(path, &data, &len);
	if (r < 0) {
		*ret_why = strdup(strerror(-r));
		return r;
	}
	proto_sha256_init(&hash);
	proto_sha256_update(&hash, data, len);
	proto_sha256_hex(&hash, sha);
	req.sha = sha;
	r = mlink_take(address, s, timeout_ms, &deadline, &ml, ret_why);
	if (r == 0)
		r = ship_run(ml, &req, data, len, &deadline);
	mlink_put(ml);
	if (r == 0)
		*ret_path = req.path;
	else
		free(req.path);
	if (!*ret_why)
		*ret_why = req.why ? req.why : strdup(strerror(-r));
	else
		free(req.why);
	return r;
}
