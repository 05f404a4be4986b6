/* SPDX-License-Identifier: MIT */
/*
 * A private herdd on demand. When a master finds nobody on its control socket,
 * libherd starts a herdd for that socket itself, fully detached (double fork
 * and setsid: it is not the master's child and outlives it), and waits for its
 * READY=1 on a private notify socket. That herdd runs with --exit-idle-ms, so
 * it goes away by itself once no master and no worker has used it for a while.
 *
 * Two masters may race: herdd's lock file lets one herdd win and makes the
 * other exit. The loser's starter sees its herdd exit (pidfd) and then waits
 * for the winner's socket to answer (inotify on its directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/client-internal.h"
#include "config.h"

/* How long an autostarted herdd stays without masters and workers. */
#define AUTOSTART_IDLE_MS 10000u

extern char **environ;

/*
 * A poll() timeout for these waits: the time left, shortened to wake for the
 * next keepalive pass, which runs first (client-keepalive.c). Waiting for a
 * herdd to start takes up to handshake_timeout_ms, long enough for the
 * program's other connections to time out if nobody sent their heartbeats.
 */
static int
wait_ms(uint64_t deadline)
{
	uint64_t ka = herd__keepalive(NULL);

	return herd__poll_ms(ka < deadline ? ka : deadline);
}

bool
herd__autostart_enabled(void)
{
	const char *v = secure_getenv("HERD_NO_AUTOSTART");

	return !(v && strcmp(v, "1") == 0);
}

/* 1 if something accepts connections at path, 0 if not, for the given errno in *err. */
static int
socket_answers(const char *path, int *err)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	*err = r < 0 ? errno : 0;
	close(fd);
	return r == 0;
}

/*
 * Our herdd exited without READY=1: another one holds the lock. Waits until
 * that one's socket answers, woken by changes in the socket's directory. The
 * winner binds before it listens; a refusal right after the socket appeared
 * is retried on a 1 ms tick, the only window that has no event.
 */
static int
wait_for_winner(const char *path, uint64_t deadline)
{
	_cleanup_free_ char *dir = strdup(path);
	char *slash;
	int in, r, err = 0;
	bool appeared = false;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash && slash != dir)
		*slash = '\0';
	in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (in < 0)
		return -errno;
	/* Watch first, then look, so no change falls in between. */
	(void)inotify_add_watch(in, dir, IN_CREATE | IN_MOVED_TO | IN_DELETE);
	for (;;) {
		struct pollfd p = { .fd = in, .events = POLLIN };
		char buf[4096];

		r = socket_answers(path, &err);
		if (r != 0)
			break;
		if (herd__now_usec() >= deadline) {
			r = -ETIMEDOUT;
			break;
		}
		r = poll(&p, 1, appeared && err == ECONNREFUSED ? 1 : wait_ms(deadline));
		if (r < 0 && errno != EINTR) {
			r = -errno;
			break;
		}
		if (r > 0) {
			while (read(in, buf, sizeof(buf)) > 0) {
			}
			appeared = true;
		}
	}
	close(in);
	return r < 0 ? r : 0;
}

/* Waits for READY=1 from our herdd, or for its exit. Returns 1 ready, 0 exited, or -errno. */
static int
wait_ready(int notify_fd, int pidfd, uint64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = { { .fd = notify_fd, .events = POLLIN },
			{ .fd = pidfd, .events = POLLIN } };
		char buf[4096];
		ssize_t n;
		int r;

		r = poll(p, pidfd >= 0 ? 2 : 1, wait_ms(deadline));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0 && herd__now_usec() >= deadline)
			return -ETIMEDOUT;
		if (r == 0)
			continue; /* woken for the keepalive */
		while ((n = recv(notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT)) > 0) {
			buf[n] = '\0';
			if (strncmp(buf, "READY=1", 7) == 0 || strstr(buf, "\nREADY=1"))
				return 1;
		}
		if (p[1].revents)
			return 0;
	}
}

/* The environment for herdd: ours, minus what a service manager gave us, plus NOTIFY_SOCKET. */
static char **
child_env(const char *notify_var)
{
	static const char *const drop[] = { "NOTIFY_SOCKET=", "LISTEN_PID=", "LISTEN_FDS=",
		"LISTEN_FDNAMES=", "WATCHDOG_PID=", "WATCHDOG_USEC=" };
	size_t n = 0, k = 0;
	char **env;

	while (environ && environ[n])
		n++;
	env = calloc(n + 2, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool keep = true;

		for (size_t j = 0; j < sizeof(drop) / sizeof(drop[0]); j++)
			if (strncmp(environ[i], drop[j], strlen(drop[j])) == 0)
				keep = false;
		if (keep)
			env[k++] = environ[i];
	}
	env[k++] = (char *)notify_var;
	env[k] = NULL;
	return env;
}

static unsigned
idle_ms(void)
{
	const char *v = secure_getenv("HERD_AUTOSTART_IDLE_MS");
	unsigned long n;
	char *end;

	if (!v || !*v)
		return AUTOSTART_IDLE_MS;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || *end || n == 0 || n > 86400000)
		return AUTOSTART_IDLE_MS;
	return (unsigned)n;
}

/* Closes each fd of fds that is open. */
static void
close_all(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
	}
}

/*
 * The middle child: a new session, herdd forked from it with stdin and stdout
 * on /dev/null and stderr on err_fd, herdd's pid sent on pid_fd, and then a
 * wait for the starter's word (EOF on go_fd) before leaving.
 */
static void __attribute__((noreturn)) detached_middle(const char *exe, char *const *argv,
    char *const *env, int null_fd, int err_fd, int pid_fd, int go_fd)
{
	sigset_t none;
	pid_t pid;
	char c;
	int e;

	setsid();
	pid = fork();
	if (pid == 0) {
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(null_fd, 0);
		dup2(null_fd, 1);
		dup2(err_fd, 2);
		execve(exe, argv, env);
		/* pid_fd is close-on-exec: the starter reads EOF if exec worked, errno if not. */
		e = errno;
		(void)!write(pid_fd, &e, sizeof(e));
		_exit(127);
	}
	(void)!write(pid_fd, &pid, sizeof(pid));
	close(pid_fd);
	while (read(go_fd, &c, 1) < 0 && errno == EINTR) {
	}
	_exit(0);
}

/* Reads exactly n bytes from fd, retrying on EINTR. Returns how many it read. */
static ssize_t
read_full(int fd, void *buf, size_t n)
{
	ssize_t r;

	do
		r = read(fd, buf, n);
	while (r < 0 && errno == EINTR);
	return r;
}

/*
 * The starter's side of pid_fd: herdd's pid, held as a pidfd at once, then
 * EOF if exec worked or exec's errno. Returns 0 or -errno.
 */
static int
detached_pidfd(int pid_fd, int *ret_pidfd)
{
	pid_t pid = -1;
	int exec_err;

	if (read_full(pid_fd, &pid, sizeof(pid)) != sizeof(pid) || pid <= 0)
		return -ECHILD;
	*ret_pidfd = pidfd_open(pid, 0);
	if (*ret_pidfd < 0)
		return -errno;
	if (read_full(pid_fd, &exec_err, sizeof(exec_err)) == sizeof(exec_err))
		return -exec_err;
	return 0;
}

/*
 * Starts herdd detached. The middle child stays until we hold a pidfd for
 * herdd: until then herdd cannot be reaped, so its pid cannot be reused.
 * Returns 0, or -errno (that of execve if herdd could not be run).
 */
static int
spawn_detached(const char *exe, char *const *argv, char *const *env, int log_fd, int *ret_pidfd)
{
	/* /dev/null, then the pid pipe's ends, then the go pipe's. */
	int fds[5] = { -1, -1, -1, -1, -1 };
	pid_t mid = -1;
	int status, r;

	if ((fds[0] = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0 || pipe2(fds + 1, O_CLOEXEC) < 0 ||
	    pipe2(fds + 3, O_CLOEXEC) < 0 || (mid = fork()) < 0) {
		r = -errno;
		close_all(fds, 5);
		return r;
	}
	if (mid == 0) {
		close(fds[1]);
		close(fds[4]);
		detached_middle(
		    exe, argv, env, fds[0], log_fd >= 0 ? log_fd : fds[0], fds[2], fds[3]);
	}
	/* Only the children may hold the pid pipe's write end, or its EOF never comes. */
	close(fds[2]);
	fds[2] = -1;
	r = detached_pidfd(fds[1], ret_pidfd);
	/* Closing the go pipe lets the middle child leave. */
	close_all(fds, 5);
	while (waitpid(mid, &status, 0) < 0 && errno == EINTR) {
	}
	return r;
}

/*
 * Makes sure the directory that would hold path exists. Only the default
 * path's directory is created, with the mode herdd gives it (private for a
 * user, reachable for root's system socket), so that herdd.log can be opened
 * there before herdd starts. Returns 0, or -ENOENT for a missing directory
 * that is not ours to create.
 */
static int
parent_ready(const char *path, bool create)
{
	_cleanup_free_ char *dir = strdup(path);
	mode_t mode = geteuid() == 0 ? 0755 : 0700;
	struct stat st;
	char *slash;

	if (!dir)
		return -ENOMEM;
	if (!(slash = strrchr(dir, '/')))
		return -ENOENT;
	if (slash == dir)
		return 0;
	*slash = '\0';
	if (stat(dir, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
	if (!create)
		return -ENOENT;
	/* herdd checks the owner and mode of what it finds, as of what it makes. */
	if (mkdir(dir, mode) < 0)
		return errno == EEXIST ? 0 : -errno;
	return chmod(dir, mode) < 0 ? -errno : 0;
}

/*
 * One start's private directory (mkdtemp makes it 0700, so nobody else can
 * send READY=1) and the notify socket in it that herdd reports on.
 */
struct start {
	char *dir;
	struct sockaddr_un notify; /* sun_path empty until the whole path fits */
	int notify_fd;
	int pidfd; /* herdd's, once started */
};

/* Makes the directory under $XDG_RUNTIME_DIR, $TMPDIR or /tmp and binds the notify socket. */
static int
start_open(struct start *st)
{
	const char *base = secure_getenv("XDG_RUNTIME_DIR");
	char path[sizeof(st->notify.sun_path)];

	if (!base || base[0] != '/')
		base = secure_getenv("TMPDIR");
	if (!base || base[0] != '/')
		base = "/tmp";
	if (asprintf(&st->dir, "%s/herd-start-XXXXXX", base) < 0) {
		st->dir = NULL;
		return -ENOMEM;
	}
	if (!mkdtemp(st->dir)) {
		int r = -errno;

		free(st->dir);
		st->dir = NULL;
		return r;
	}
	if (snprintf(path, sizeof(path), "%s/notify", st->dir) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	st->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (st->notify_fd < 0)
		return -errno;
	strcpy(st->notify.sun_path, path);
	if (bind(st->notify_fd, (struct sockaddr *)&st->notify, sizeof(st->notify)) < 0)
		return -errno;
	return 0;
}

/* Closes and removes what start_open made. */
static void
start_close(struct start *st)
{
	if (st->notify_fd >= 0)
		close(st->notify_fd);
	if (st->pidfd >= 0)
		close(st->pidfd);
	/* Never unlink a truncated path. */
	if (st->notify.sun_path[0])
		unlink(st->notify.sun_path);
	if (st->dir)
		rmdir(st->dir);
	free(st->dir);
}

/* herdd's stderr goes next to its socket (parent_ready made the directory); -1 if it cannot. */
static int
log_open(const char *socket_path)
{
	const char *slash = strrchr(socket_path, '/');
	_cleanup_free_ char *path = NULL;

	/* The log's name may be longer than the socket's: build it, do not overwrite. */
	if (!slash ||
	    asprintf(&path, "%.*s/herdd.log", (int)(slash - socket_path), socket_path) < 0)
		return -1;
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
}

/* Starts herdd ($HERDD, else the installed one) on socket_path, reporting to st's socket. */
static int
start_herdd(struct start *st, const char *socket_path)
{
	const char *exe = secure_getenv("HERDD");
	_cleanup_free_ char *notify_var = NULL;
	_cleanup_free_ char **env = NULL;
	char idle[16];
	int log_fd, r;

	if (!exe || !*exe)
		exe = HERD_BINDIR "/herdd";
	if (asprintf(&notify_var, "NOTIFY_SOCKET=%s", st->notify.sun_path) < 0) {
		notify_var = NULL;
		return -ENOMEM;
	}
	env = child_env(notify_var);
	if (!env)
		return -ENOMEM;
	snprintf(idle, sizeof(idle), "%u", idle_ms());
	log_fd = log_open(socket_path);
	{
		char *const argv[] = { (char *)exe, (char *)"--socket", (char *)socket_path,
			(char *)"--exit-idle-ms", idle, NULL };

		r = spawn_detached(exe, argv, env, log_fd, &st->pidfd);
	}
	if (log_fd >= 0)
		close(log_fd);
	return r;
}

int
herd__autostart(const char *socket_path, bool default_path, unsigned timeout_ms)
{
	struct start st = { .notify = { .sun_family = AF_UNIX }, .notify_fd = -1, .pidfd = -1 };
	uint64_t deadline = herd__deadline(timeout_ms * HERD__USEC_PER_MSEC);
	int r;

	/* The default directory is created; elsewhere a missing one is a typo, not an order. */
	r = parent_ready(socket_path, default_path);
	if (r < 0)
		return r;
	r = start_open(&st);
	if (r == 0)
		r = start_herdd(&st, socket_path);
	if (r == 0)
		r = wait_ready(st.notify_fd, st.pidfd, deadline);
	/* Our herdd exited without READY=1: another one won the lock. */
	if (r == 0)
		r = wait_for_winner(socket_path, deadline);
	else if (r > 0)
		r = 0;
	start_close(&st);
	return r;
}
