/* SPDX-License-Identifier: MIT */
/*
 * herdd --stdio: serves one master over standard input and output, the link
 * of PROTOCOL.md 9 (libclient/common/link.h), as the far end of `ssh HOST
 * herdd --stdio`, `srun ... herdd --stdio` or any launcher. Each channel the
 * master opens is either a control connection (a socketpair whose other end
 * is served as an accepted connection from our own uid) or a connection to
 * one of our workers' sockets. The link's end, by EOF or by silence past the
 * heartbeat timeout, stops every worker and herdd exits: the transport alone
 * is never trusted to take them (a remote command that does not read its
 * stdin outlives a killed ssh client, and srun's task outlives srun killed
 * with its helper).
 *
 * The socket and the worker sockets live in a directory of this instance's
 * own, so several masters' herdd --stdio share a host (and a file system)
 * without meeting; an operator there reaches it with herdctl --socket (the
 * path is in the log and in the link's hello).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "herdd.h"
#include "link.h"

static struct herd__link stdio_link;
static bool stdio_on;
static int stdio_in = -1, stdio_out = -1;
static bool stdio_default_dir; /* ours is the default kind: the dead ones of that kind are swept */

/* Where the per-instance directories go: $XDG_RUNTIME_DIR, else /tmp. */
static const char *
stdio_base(void)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");

	return rt && rt[0] == '/' ? rt : "/tmp";
}

/* Removes the worker sockets in dir_fd's sub: their herdd is gone, so are they (fd 3). */
static void
sweep_sockets(int dir_fd, const char *sub)
{
	int fd = openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *e;
	DIR *dir;

	if (fd < 0 || !(dir = fdopendir(fd))) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((e = readdir(dir))) {
		size_t n = strlen(e->d_name);

		if (n > 5 && strcmp(e->d_name + n - 5, ".sock") == 0)
			(void)unlinkat(dirfd(dir), e->d_name, 0);
	}
	closedir(dir);
}

/* Removes what a herdd --stdio of ours left in dir when it was SIGKILLed. */
static void
sweep_one(int base_fd, const char *name)
{
	static const char *const files[] = { "herdd.sock", "herdd.sock.lock" };
	char path[256];
	int fd = openat(base_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	if (fd < 0)
		return;
	if (fstat(fd, &st) == 0 && st.st_uid == herdd.uid) {
		for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++)
			(void)unlinkat(fd, files[i], 0);
		snprintf(path, sizeof(path), "workers/%u", (unsigned)herdd.uid);
		sweep_sockets(fd, path);
		(void)unlinkat(fd, path, AT_REMOVEDIR);
		(void)unlinkat(fd, "workers", AT_REMOVEDIR);
		if (unlinkat(base_fd, name, AT_REMOVEDIR) == 0)
			log_info("removed %s/%s, left by a herdd --stdio that is gone",
			    stdio_base(), name);
	}
	close(fd);
}

/*
 * A herdd --stdio SIGKILLed (or on a host that froze) could not remove its
 * directory: the next one removes those of our uid whose pid is gone. A
 * directory still holding worker sockets stays (rmdir refuses).
 */
static void
stdio_sweep(void)
{
	char prefix[32];
	struct dirent *d;
	DIR *base = opendir(stdio_base());
	size_t n;
	long pid;

	if (!base)
		return;
	n = (size_t)snprintf(prefix, sizeof(prefix), "herd-stdio.%u.", (unsigned)herdd.uid);
	while ((d = readdir(base))) {
		if (strncmp(d->d_name, prefix, n) != 0)
			continue;
		pid = strtol(d->d_name + n, NULL, 10);
		if (pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH)
			sweep_one(dirfd(base), d->d_name);
	}
	closedir(base);
}

/* The per-instance socket, named by uid and pid. */
static char *
stdio_socket_path(void)
{
	char *p;

	if (asprintf(&p, "%s/herd-stdio.%u.%d/herdd.sock", stdio_base(), (unsigned)herdd.uid,
	        (int)herdd.pid) < 0)
		return NULL;
	return p;
}

/*
 * Takes stdin and stdout for the link (close-on-exec copies) and puts
 * /dev/null in their place, so nothing herdd starts can write into the link.
 */
void
stdio_take(void)
{
	int null;

	stdio_in = fcntl(0, F_DUPFD_CLOEXEC, 3);
	stdio_out = fcntl(1, F_DUPFD_CLOEXEC, 3);
	if (stdio_in < 0 || stdio_out < 0)
		fatal("--stdio: taking stdin and stdout: %m");
	null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0)
		fatal("--stdio: /dev/null: %m");
	close(null);
	if (!herdd.cfg.socket_path) {
		stdio_default_dir = true;
		herdd.cfg.socket_path = stdio_socket_path();
		if (!herdd.cfg.socket_path)
			fatal("out of memory");
	}
}

/* A new control connection: one end relayed, the other served as accepted. */
static int
open_control(unsigned id)
{
	struct ucred cred = { .pid = herdd.pid, .uid = herdd.uid, .gid = herdd.gid };
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
		return -errno;
	if (!herd__link_chan_add(&stdio_link, id, sv[0])) {
		close(sv[1]);
		return -ENOMEM;
	}
	server_adopt(sv[1], &cred);
	return 0;
}

/* A connection to one of our workers' sockets (nothing outside their directory). */
static int
open_worker(unsigned id, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(herdd.workers_dir);
	int fd;

	if (strncmp(path, herdd.workers_dir, n) != 0 || path[n] != '/' || strstr(path, "/..") ||
	    strlen(path) >= sizeof(sa.sun_path))
		return -EPERM;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A local listener: connect() waits at most for its backlog. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	return herd__link_chan_add(&stdio_link, id, fd) ? 0 : -ENOMEM;
}

/* "open" {channel, socket?}: answered with "opened" or "close" {channel, error}. */
static void
stdio_open(json_t *params)
{
	json_int_t id = 0;
	const char *path = NULL;
	int r;

	if (json_unpack(params, "{s:I, s?s}", "channel", &id, "socket", &path) < 0 || id <= 0 ||
	    id > UINT32_MAX) {
		herd__link_kill(&stdio_link, -EBADMSG, "a bad open on the link");
		return;
	}
	if (herd__link_chan_find(&stdio_link, (unsigned)id))
		r = -EEXIST;
	else if (herdd.stopping)
		r = -ESHUTDOWN;
	else
		r = path ? open_worker((unsigned)id, path) : open_control((unsigned)id);
	if (r == 0)
		(void)herd__link_notify(&stdio_link, "opened", json_pack("{s:I}", "channel", id));
	else
		(void)herd__link_notify(&stdio_link, "close",
		    json_pack("{s:I, s:s}", "channel", id, "error", strerror(-r)));
}

/*
 * "hello" {version, heartbeat_interval_ms, heartbeat_timeout_ms, window}:
 * the master's heartbeats, and its channels' window (none: an older master).
 */
static void
stdio_hello(json_t *params)
{
	json_int_t version = 0, interval = 0, timeout = 0, window = 0;

	if (json_unpack(params, "{s:I, s?I, s?I, s?I}", "version", &version,
	        "heartbeat_interval_ms", &interval, "heartbeat_timeout_ms", &timeout, "window",
	        &window) < 0 ||
	    version != HERD__LINK_VERSION || interval < 0 || timeout < 0 ||
	    (interval && interval < herdd.cfg.min_heartbeat_interval_ms) || interval > 3600000 ||
	    timeout > 3600000 || window < 0 || window > HERD__LINK_WINDOW_MAX) {
		herd__link_kill(&stdio_link, -EPROTO, "the master's link hello is not one we take");
		return;
	}
	herd__link_set_heartbeat(&stdio_link, (unsigned)interval, (unsigned)timeout);
	if (window)
		herd__link_set_windows(&stdio_link, (size_t)window);
	(void)herd__link_notify(&stdio_link, "hello",
	    json_pack("{s:i, s:s, s:s, s:i, s:i, s:i, s:I}", "version", HERD__LINK_VERSION,
	        "server", "herdd", "socket", herdd.cfg.socket_path, "pid", (int)herdd.pid, "uid",
	        (int)herdd.uid, "cpus", (int)cpus_usable(), "window",
	        (json_int_t)HERD__LINK_WINDOW));
}

static void
stdio_control(struct herd__link *l, const char *method, json_t *params)
{
	if (strcmp(method, "hello") == 0)
		stdio_hello(params);
	else if (strcmp(method, "open") == 0)
		stdio_open(params);
	else if (stdio_ship(l, method, params))
		return;
	/* Other methods are newer than us: ignored (PROTOCOL.md 10). */
}

static void
stdio_dead(struct herd__link *l, int reason, const char *why)
{
	if (herdd.stopping)
		return;
	log_info("the link to the master ended (%s): stopping every worker", why);
	main_shutdown();
}

static const struct herd__link_ops stdio_ops = {
	.control = stdio_control,
	.dead = stdio_dead,
};

/* Starts relaying; until the master's hello, silence past the handshake timeout ends it. */
void
stdio_start(void)
{
	herd__link_init(&stdio_link, herdd.loop, stdio_in, stdio_out, &stdio_ops, NULL,
	    herdd.cfg.max_message_size);
	herd__link_set_heartbeat(&stdio_link, 0, herdd.cfg.handshake_timeout_ms);
	stdio_on = true;
	if (stdio_default_dir)
		stdio_sweep();
	log_info("serving one master over stdin and stdout (herdctl --socket %s)",
	    herdd.cfg.socket_path);
}

/*
 * After the loop: the link goes, then the server's files (server_close()
 * may run again later, it is idempotent), then this instance's directories.
 */
void
stdio_cleanup(void)
{
	char *uid_dir = NULL, *workers_dir, *socket_dir;

	if (!stdio_on)
		return;
	herd__link_kill(&stdio_link, 0, "herdd stopped");
	herd__link_free(&stdio_link);
	stdio_ship_cleanup();
	stdio_on = false;
	workers_dir = herdd.workers_dir ? strdup(herdd.workers_dir) : NULL;
	socket_dir = herdd.socket_dir ? strdup(herdd.socket_dir) : NULL;
	if (workers_dir && asprintf(&uid_dir, "%s/%u", workers_dir, (unsigned)herdd.uid) < 0)
		uid_dir = NULL;
	server_close();
	if (uid_dir)
		(void)rmdir(uid_dir);
	if (workers_dir)
		(void)rmdir(workers_dir);
	if (socket_dir)
		(void)rmdir(socket_dir);
	free(uid_dir);
	free(workers_dir);
	free(socket_dir);
}
