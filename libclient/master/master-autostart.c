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

/*
 * Starts herdd detached. The middle child stays until we hold a pidfd for
 * herdd: until then herdd cannot be reaped, so its pid cannot be reused.
 * Returns 0, or -errno (that of execve if herdd could not be run).
 */
static int
spawn_detached(const char *exe, char *const *argv, char *const *env, int log_fd, int *ret_pidfd)
{
	int pidpipe[2], gopipe[2], nullfd, status, r = 0;
	pid_t mid, pid = -1;
	ssize_t n;

	nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (nullfd < 0)
		return -errno;
	if (pipe2(pidpipe, O_CLOEXEC) < 0) {
		r = -errno;
		close(nullfd);
		return r;
	}
	if (pipe2(gopipe, O_CLOEXEC) < 0) {
		r = -errno;
		close(pidpipe[0]);
		close(pidpipe[1]);
		close(nullfd);
		return r;
	}
	mid = fork();
	if (mid == 0) {
		sigset_t none;
		char c;

		close(pidpipe[0]);
		close(gopipe[1]);
		setsid();
		pid = fork();
		if (pid == 0) {
			sigemptyset(&none);
			sigprocmask(SIG_SETMASK, &none, NULL);
			dup2(nullfd, 0);
			dup2(nullfd, 1);
			dup2(log_fd >= 0 ? log_fd : nullfd, 2);
			execve(exe, argv, env);
			/* pidpipe is close-on-exec: the starter reads EOF if exec worked, errno if not. */
			r = errno;
			(void)!write(pidpipe[1], &r, sizeof(r));
			_exit(127);
		}
		(void)!write(pidpipe[1], &pid, sizeof(pid));
		close(pidpipe[1]);
		while (read(gopipe[0], &c, 1) < 0 && errno == EINTR) {
		}
		_exit(0);
	}
	if (mid < 0)
		r = -errno;
	close(pidpipe[1]);
	close(gopipe[0]);
	close(nullfd);
	if (mid > 0) {
		do
			n = read(pidpipe[0], &pid, sizeof(pid));
		while (n < 0 && errno == EINTR);
		if (n != sizeof(pid) || pid <= 0)
			r = -ECHILD;
		else if ((*ret_pidfd = pidfd_open(pid, 0)) < 0)
			r = -errno;
		else {
			int exec_err;

			do
				n = read(pidpipe[0], &exec_err, sizeof(exec_err));
			while (n < 0 && errno == EINTR);
			if (n == sizeof(exec_err))
				r = -exec_err;
		}
	}
	close(pidpipe[0]);
	close(gopipe[1]);
	if (mid > 0)
		while (waitpid(mid, &status, 0) < 0 && errno == EINTR) {
		}
	return r;
}

/* True if the directory that would hold path exists. */
static bool
parent_exists(const char *path)
{
	_cleanup_free_ char *dir = strdup(path);
	struct stat st;
	char *slash;

	if (!dir || !(slash = strrchr(dir, '/')))
		return false;
	if (slash == dir)
		return true;
	*slash = '\0';
	return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

int
herd__autostart(const char *socket_path, bool default_path, unsigned timeout_ms)
{
	const char *base = secure_getenv("XDG_RUNTIME_DIR");
	const char *exe = secure_getenv("HERDD");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_free_ char *tmpdir = NULL, *notify_var = NULL, *log_path = NULL;
	_cleanup_free_ char **env = NULL;
	uint64_t deadline = herd__deadline(timeout_ms * HERD__USEC_PER_MSEC);
	int notify_fd = -1, pidfd = -1, log_fd, r;
	char idle[16];
	char *slash;

	/* herdd creates its default directory; elsewhere a missing one is a typo, not an order. */
	if (!default_path && !parent_exists(socket_path))
		return -ENOENT;
	if (!exe || !*exe)
		exe = HERD_BINDIR "/herdd";
	if (!base || base[0] != '/')
		base = secure_getenv("TMPDIR");
	if (!base || base[0] != '/')
		base = "/tmp";
	if (asprintf(&tmpdir, "%s/herd-start-XXXXXX", base) < 0) {
		tmpdir = NULL;
		return -ENOMEM;
	}
	/* mkdtemp makes it 0700: nobody else can send us READY=1. */
	if (!mkdtemp(tmpdir))
		return -errno;
	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", tmpdir) >=
	    (int)sizeof(sa.sun_path)) {
		/* Never unlink a truncated path below. */
		sa.sun_path[0] = '\0';
		r = -ENAMETOOLONG;
		goto out;
	}
	notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (notify_fd < 0 || bind(notify_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		goto out;
	}
	if (asprintf(&notify_var, "NOTIFY_SOCKET=%s", sa.sun_path) < 0) {
		notify_var = NULL;
		r = -ENOMEM;
		goto out;
	}
	env = child_env(notify_var);
	log_path = strdup(socket_path);
	if (!env || !log_path) {
		r = -ENOMEM;
		goto out;
	}
	/* herdd's stderr goes next to its socket; if that directory is not there yet, nowhere. */
	slash = strrchr(log_path, '/');
	if (slash)
		strcpy(slash, "/herdd.log");
	log_fd = slash
	    ? open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)
	    : -1;
	snprintf(idle, sizeof(idle), "%u", idle_ms());
	{
		char *const argv[] = { (char *)exe, (char *)"--socket", (char *)socket_path,
			(char *)"--exit-idle-ms", idle, NULL };

		r = spawn_detached(exe, argv, env, log_fd, &pidfd);
	}
	if (log_fd >= 0)
		close(log_fd);
	if (r < 0)
		goto out;
	r = wait_ready(notify_fd, pidfd, deadline);
	if (r == 0)
		r = wait_for_winner(socket_path, deadline);
	else if (r > 0)
		r = 0;
out:
	if (notify_fd >= 0)
		close(notify_fd);
	if (pidfd >= 0)
		close(pidfd);
	if (sa.sun_path[0])
		unlink(sa.sun_path);
	rmdir(tmpdir);
	return r;
}
