/* SPDX-License-Identifier: MIT */
/*
 * The control socket: taken from the service manager when socket-activated,
 * bound by herdd otherwise. A lock file next to the socket makes sure two
 * daemons never serve the same path, and a socket file left by a dead daemon
 * is removed only after checking that nobody answers on it.
 *
 * Every accepted connection has its peer's credentials read once, at accept
 * time (SO_PEERCRED), and they stay pinned to the connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <dirent.h>
#include <unistd.h>

#include "config.h"
#include "herdd.h"

#if HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* After running out of fds, accepting pauses this long before trying again. */
#define ACCEPT_PAUSE_S 0.1
/* A root daemon's default socket: the only one that serves other uids (PROTOCOL.md 4.1). */
#define SYSTEM_SOCKET "/run/herd/herdd.sock"

static int
make_dir(const char *path, mode_t mode)
{
	struct stat st;

	if (mkdir(path, mode) == 0) {
		/* mkdir() applied our umask of 077. */
		if (chmod(path, mode) < 0)
			return -errno;
	} else if (errno != EEXIST) {
		return -errno;
	}
	if (lstat(path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	/* A directory someone else owns or can write to could hold a planted socket. */
	if (st.st_uid != herdd.uid || (st.st_mode & 022))
		return -EPERM;
	return 0;
}

static void
set_path(char **dst, const char *a, const char *b)
{
	if (asprintf(dst, "%s%s", a, b) < 0)
		fatal("out of memory");
}

static char *
default_socket_path(void)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	char *p;

	if (herdd.uid == 0)
		return strdup(SYSTEM_SOCKET);
	if (!rt || rt[0] != '/')
		fatal("XDG_RUNTIME_DIR is not set; give the socket path with --socket");
	if (asprintf(&p, "%s/herd/herdd.sock", rt) < 0)
		return NULL;
	return p;
}

/* Returns 1 if something accepts connections on path, 0 if not (stale), -errno otherwise. */
static int
socket_answers(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, r;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r == 0)
		r = 1;
	else if (errno == ECONNREFUSED || errno == ENOENT)
		r = 0;
	else
		r = -errno;
	close(fd);
	return r;
}

static void
take_lock(void)
{
	set_path(&herdd.lock_path, herdd.cfg.socket_path, ".lock");
	herdd.lock_fd =
	    open(herdd.lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (herdd.lock_fd < 0)
		fatal("opening lock file %s: %m", herdd.lock_path);
	if (flock(herdd.lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			fatal("another herdd is serving %s (lock %s is held)",
			    herdd.cfg.socket_path, herdd.lock_path);
		fatal("locking %s: %m", herdd.lock_path);
	}
}

/*
 * A root daemon serves every uid. With a "herd" group the socket is 0660
 * root:herd (PROTOCOL.md 4.1: only root and members connect); without one it
 * is open to all, and every request is still authorised by SO_PEERCRED.
 */
static void
open_system_socket(const char *path)
{
	struct group gr, *grp = NULL;
	char buf[4096];

	if (getgrnam_r("herd", &gr, buf, sizeof(buf), &grp) == 0 && grp) {
		if (chown(path, 0, grp->gr_gid) < 0 || chmod(path, 0660) < 0)
			fatal("setting owner and mode of %s: %m", path);
		return;
	}
	if (chmod(path, 0666) < 0)
		fatal("chmod %s: %m", path);
}

static void
bind_own_socket(void)
{
	const char *path = herdd.cfg.socket_path;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, r;

	if (strlen(path) >= sizeof(sa.sun_path))
		fatal("socket path %s is too long (at most %zu bytes)", path,
		    sizeof(sa.sun_path) - 1);
	strcpy(sa.sun_path, path);
	take_lock();
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			fatal("%s exists and is not a socket; not removing it", path);
		r = socket_answers(path);
		if (r > 0)
			fatal("another daemon answers on %s", path);
		if (r < 0)
			fatal("checking %s: %s", path, strerror(-r));
		log_info("removing stale socket %s", path);
		if (unlink(path) < 0 && errno != ENOENT)
			fatal("removing stale socket %s: %m", path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		fatal("socket: %m");
	/* umask(077) is in force: the socket is created 0600. */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		fatal("binding %s: %m", path);
	herdd.own_socket = true;
	/* A socket named by hand is its owner's private daemon, even under root: umask 077 keeps it so. */
	if (herdd.uid == 0 && strcmp(path, SYSTEM_SOCKET) == 0)
		open_system_socket(path);
	if (listen(fd, SOMAXCONN) < 0)
		fatal("listen on %s: %m", path);
	herdd.listen_fd = fd;
}

#if HAVE_SYSTEMD
/* Uses a socket passed by the service manager. Returns true if there was one. */
static bool
take_activated_socket(void)
{
	struct sockaddr_un sa;
	socklen_t len = sizeof(sa);
	int n = sd_listen_fds(1);
	int fd = SD_LISTEN_FDS_START;

	if (n <= 0)
		return false;
	if (n > 1)
		log_warn("%d sockets passed; using the first", n);
	if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
		fatal("the activated socket is not a listening Unix stream socket");
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
		fatal("fcntl: %m");
	memset(&sa, 0, sizeof(sa));
	if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || sa.sun_path[0] != '/')
		fatal("the activated socket has no path");
	free(herdd.cfg.socket_path);
	herdd.cfg.socket_path = strndup(sa.sun_path, sizeof(sa.sun_path));
	if (!herdd.cfg.socket_path)
		fatal("out of memory");
	herdd.listen_fd = fd;
	herdd.activated = true;
	return true;
}
#endif

/* Removes worker sockets a previous daemon on this path left behind. */
static void
sweep_worker_sockets(void)
{
	DIR *top = opendir(herdd.workers_dir);
	struct dirent *d;

	if (!top)
		return;
	while ((d = readdir(top))) {
		char sub[PATH_MAX];
		struct dirent *e;
		DIR *dir;

		if (d->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", herdd.workers_dir, d->d_name);
		dir = opendir(sub);
		if (!dir)
			continue;
		while ((e = readdir(dir))) {
			size_t n = strlen(e->d_name);

			if (n > 5 && strcmp(e->d_name + n - 5, ".sock") == 0 &&
			    unlinkat(dirfd(dir), e->d_name, 0) == 0)
				log_info("removed stale worker socket %s/%s", sub, e->d_name);
		}
		closedir(dir);
	}
	closedir(top);
}

/* Opens the listening socket; see the file comment. */
void
server_open(void)
{
	char *slash;
	int r;

	herdd.listen_fd = -1;
	herdd.lock_fd = -1;
#if HAVE_SYSTEMD
	take_activated_socket();
#endif
	if (!herdd.cfg.socket_path) {
		herdd.cfg.socket_path = default_socket_path();
		if (!herdd.cfg.socket_path)
			fatal("out of memory");
	}
	if (herdd.cfg.socket_path[0] != '/')
		fatal("the socket path must be absolute: %s", herdd.cfg.socket_path);
	herdd.socket_dir = strdup(herdd.cfg.socket_path);
	if (!herdd.socket_dir)
		fatal("out of memory");
	slash = strrchr(herdd.socket_dir, '/');
	if (slash == herdd.socket_dir)
		slash[1] = '\0';
	else
		*slash = '\0';
	if (!herdd.activated) {
		/* A user daemon's directory is private; a root daemon's must be reachable. */
		r = make_dir(herdd.socket_dir, herdd.uid == 0 ? 0755 : 0700);
		if (r < 0)
			fatal("socket directory %s: %s", herdd.socket_dir,
			    r == -EPERM ? "owned by another user or writable by others"
			                : strerror(-r));
		bind_own_socket();
	}
	set_path(
	    &herdd.workers_dir, strcmp(herdd.socket_dir, "/") ? herdd.socket_dir : "", "/workers");
	r = make_dir(herdd.workers_dir, herdd.uid == 0 ? 0755 : 0700);
	if (r < 0)
		fatal("worker socket directory %s: %s", herdd.workers_dir, strerror(-r));
	sweep_worker_sockets();
	herdd.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	log_info("listening on %s%s", herdd.cfg.socket_path,
	    herdd.activated ? " (socket activation)" : "");
}

/* Creates or checks <workers>/<uid>, 0700 and owned by uid. */
int
server_worker_dir(uid_t uid, gid_t gid, char *buf, size_t len)
{
	struct stat st;
	int fd, r;

	if ((size_t)snprintf(buf, len, "%s/%u", herdd.workers_dir, (unsigned)uid) >= len)
		return -ENAMETOOLONG;
	if (mkdir(buf, 0700) < 0 && errno != EEXIST)
		return -errno;
	fd = open(buf, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (st.st_uid != uid && fchown(fd, uid, gid) < 0)
		goto fail;
	if ((st.st_mode & 07777) != 0700 && fchmod(fd, 0700) < 0)
		goto fail;
	close(fd);
	return 0;
fail:
	r = -errno;
	close(fd);
	return r;
}

/* Refuses a connection with a reason it can read, then closes it. */
static void
refuse(struct conn *c, const char *limit, unsigned value)
{
	log_warn("refusing a connection from uid %u pid %d: limit %s (%u)", (unsigned)c->cred.uid,
	    (int)c->cred.pid, limit, value);
	conn_reply_error(c, NULL, HERD_E_LIMIT_EXCEEDED,
	    json_pack("{s:s, s:I}", "limit", limit, "value", (json_int_t)value),
	    "too many connections (%s)", limit);
	conn_close(c);
}

/*
 * The connection limits, per uid first. Each per-uid limit is below its
 * total (by default), so no one uid can fill a total and lock the others
 * out. Returns false after refusing c.
 */
static bool
admit(struct conn *c)
{
	const struct account *a = c->account;

	if (a->nconns > herdd.cfg.max_connections_per_uid) {
		herdd.stats.limit_connections_per_uid++;
		refuse(c, "connections_per_uid", herdd.cfg.max_connections_per_uid);
		return false;
	}
	if (a->nunauth > herdd.cfg.max_unauthenticated_per_uid) {
		herdd.stats.limit_unauthenticated_per_uid++;
		refuse(c, "unauthenticated_connections_per_uid",
		    herdd.cfg.max_unauthenticated_per_uid);
		return false;
	}
	if (herdd.nconns > herdd.cfg.max_connections) {
		herdd.stats.limit_connections++;
		refuse(c, "connections", herdd.cfg.max_connections);
		return false;
	}
	if (herdd.nunauth > herdd.cfg.max_unauthenticated) {
		herdd.stats.limit_unauthenticated++;
		refuse(c, "unauthenticated_connections", herdd.cfg.max_unauthenticated);
		return false;
	}
	return true;
}

static void
out_of_fds(void)
{
	int fd, dropped = 0;

	/*
	 * Accept with the reserve fd and drop what is queued, so the pending
	 * connections neither spin the loop nor wait for an fd that is not coming.
	 */
	if (herdd.reserve_fd >= 0) {
		close(herdd.reserve_fd);
		while (dropped < 1024 &&
		    (fd = accept4(herdd.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >=
		        0) {
			close(fd);
			dropped++;
		}
		herdd.reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	}
	herdd.stats.limit_fds += dropped ? (uint64_t)dropped : 1;
	log_warn("out of file descriptors; dropped %d connections", dropped);
	ev_io_stop(herdd.loop, &herdd.accept_io);
	ev_timer_start(herdd.loop, &herdd.accept_pause);
}

static void
accept_pause_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	if (herdd.listen_fd >= 0 && !herdd.stopping)
		ev_io_start(loop, &herdd.accept_io);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	int fd;

	fd = accept4(herdd.listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			out_of_fds();
		else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
			log_warn("accept: %m");
		return;
	}
	/* Fail closed: a connection whose credentials cannot be read is not served. */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("SO_PEERCRED: %m; dropping the connection");
		close(fd);
		return;
	}
	server_adopt(fd, &cred);
}

/* Serves a control connection as accepted, with the limits on connections. */
void
server_adopt(int fd, const struct ucred *cred)
{
	struct conn *c;

	c = conn_new(fd, CONN_CONTROL, &dispatch_control_ops, herdd.cfg.max_message_size);
	if (!c) {
		log_error("out of memory accepting a connection");
		return;
	}
	c->cred = *cred;
	if (conn_join(c) < 0) {
		log_error("out of memory accepting a connection");
		conn_unref(c);
		return;
	}
	/* Started first: a refusal below is flushed and closed by the loop. */
	conn_start(c);
	herdd.stats.connections_accepted++;
	log_debug("connection %llu from uid %u pid %d", (unsigned long long)c->serial,
	    (unsigned)cred->uid, (int)cred->pid);
	if (admit(c))
		dispatch_accepted(c);
}

/* Starts accepting. */
void
server_start(void)
{
	ev_io_init(&herdd.accept_io, accept_cb, herdd.listen_fd, EV_READ);
	ev_timer_init(&herdd.accept_pause, accept_pause_cb, ACCEPT_PAUSE_S, 0.);
	ev_io_start(herdd.loop, &herdd.accept_io);
}

/* Stops accepting and removes our socket file. */
void
server_stop_accepting(void)
{
	if (herdd.listen_fd < 0)
		return;
	ev_io_stop(herdd.loop, &herdd.accept_io);
	ev_timer_stop(herdd.loop, &herdd.accept_pause);
	close(herdd.listen_fd);
	herdd.listen_fd = -1;
	if (herdd.own_socket && unlink(herdd.cfg.socket_path) < 0 && errno != ENOENT)
		log_warn("removing %s: %m", herdd.cfg.socket_path);
	herdd.own_socket = false;
}

/* Releases the lock last, so no second daemon starts while we still clean up. */
void
server_close(void)
{
	server_stop_accepting();
	if (herdd.reserve_fd >= 0)
		close(herdd.reserve_fd);
	herdd.reserve_fd = -1;
	if (herdd.lock_fd >= 0) {
		if (unlink(herdd.lock_path) < 0 && errno != ENOENT)
			log_warn("removing %s: %m", herdd.lock_path);
		close(herdd.lock_fd);
		herdd.lock_fd = -1;
	}
	free(herdd.lock_path);
	free(herdd.socket_dir);
	free(herdd.workers_dir);
	herdd.lock_path = herdd.socket_dir = herdd.workers_dir = NULL;
}
