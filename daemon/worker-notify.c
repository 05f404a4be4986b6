/* SPDX-License-Identifier: MIT */
/*
 * Workers started with ready "notify" speak systemd's sd_notify protocol
 * (sd_notify(3)): each gets a private datagram socket as NOTIFY_SOCKET.
 * READY=1 makes it ready, WATCHDOG=1 is a heartbeat, STATUS= is kept for
 * inspect and list, STOPPING=1 is recorded. Other fields are ignored.
 *
 * The socket is abstract (no file to clean up; it dies with its fd), so any
 * process of the network namespace could send to it: SO_PASSCRED makes the
 * kernel attach the sender's pid, and only the worker's main process is
 * heard (systemd's NotifyAccess=main).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "herdd.h"

/* One notification's bytes; systemd allows more, but these fields are short. */
#define NOTIFY_MAX_BYTES 4096
/* A STATUS= longer than this is cut (it is shown, not parsed). */
#define NOTIFY_STATUS_MAX 512

static const char *const mode_names[] = { "protocol", "exec", "notify" };

const char *
sup_ready_mode_name(enum ready_mode m)
{
	return proto_name_at(mode_names, PROTO_LEN(mode_names), (unsigned)m);
}

int
sup_ready_mode_from_name(const char *name)
{
	return proto_name_find(mode_names, PROTO_LEN(mode_names), name);
}

void
wnotify_addr(const struct worker *w, char *buf, size_t len)
{
	snprintf(buf, len, "@herdd/%d/%s/%u", (int)herdd.pid, w->id, w->incarnation);
}

int
wnotify_open(struct worker *w)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, one = 1;
	socklen_t salen;

	wnotify_addr(w, sa.sun_path, sizeof(sa.sun_path));
	sa.sun_path[0] = '\0';
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, salen) < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	w->notify_fd = fd;
	return 0;
}

/* Acts on one field of a notification. */
static void
notify_field(struct worker *w, const char *f, size_t n)
{
	if (n == 7 && !memcmp(f, "READY=1", 7)) {
		if (w->state == PROTO_STATE_STARTING) {
			sup_heartbeat_start(w);
			sup_worker_ready(w);
		}
	} else if (n == 10 && !memcmp(f, "WATCHDOG=1", 10)) {
		w->last_heartbeat_ms = now_ms();
	} else if (n == 10 && !memcmp(f, "STOPPING=1", 10)) {
		if (!w->said_stopping)
			log_info("worker %s pid %d: STOPPING=1", w->id, (int)w->pid);
		w->said_stopping = true;
	} else if (n >= 7 && !memcmp(f, "STATUS=", 7)) {
		free(w->status);
		w->status = strndup(f + 7, n - 7 < NOTIFY_STATUS_MAX ? n - 7 : NOTIFY_STATUS_MAX);
		/* Shown as a JSON string: control and non-ASCII bytes become '?'. */
		for (char *c = w->status; c && *c; c++) {
			if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
				*c = '?';
		}
		if (w->status)
			log_debug("worker %s: status %.*s", w->id, proto_text_prec(w->status, 200),
			    w->status);
	}
}

/* The sender of a datagram, from its SCM_CREDENTIALS; 0 if none came. */
static pid_t
sender_pid(struct msghdr *mh)
{
	struct cmsghdr *cm;
	struct ucred uc;

	for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_CREDENTIALS &&
		    cm->cmsg_len == CMSG_LEN(sizeof(uc))) {
			memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
			return uc.pid;
		}
	}
	return 0;
}

static void
notify_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct worker *w = io->data;
	char buf[NOTIFY_MAX_BYTES], *p, *nl;
	union {
		struct cmsghdr h;
		char space[CMSG_SPACE(sizeof(struct ucred))];
	} ctl;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t n;
	pid_t pid;

	/* A bounded batch per wakeup: a flooding sender cannot hold the loop. */
	for (int i = 0; i < 16 && w->notify_fd >= 0; i++) {
		mh.msg_control = &ctl;
		mh.msg_controllen = sizeof(ctl);
		n = recvmsg(w->notify_fd, &mh, MSG_CMSG_CLOEXEC | MSG_TRUNC);
		if (n < 0)
			return;
		pid = sender_pid(&mh);
		if (pid != w->pid) {
			log_debug("worker %s: notification from pid %d ignored", w->id, (int)pid);
			continue;
		}
		if ((size_t)n > sizeof(buf) || (mh.msg_flags & MSG_CTRUNC)) {
			log_warn("worker %s: notification over %u bytes ignored", w->id,
			    NOTIFY_MAX_BYTES);
			continue;
		}
		/* Newline-separated VAR=VALUE fields. */
		for (p = buf; p < buf + n; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(buf + n - p));
			if (!nl)
				nl = buf + n;
			notify_field(w, p, (size_t)(nl - p));
			if (!sup_is_live(w) || w->notify_fd < 0)
				return;
		}
	}
}

void
wnotify_start(struct worker *w)
{
	if (w->notify_fd < 0)
		return;
	ev_io_init(&w->notify_io, notify_cb, w->notify_fd, EV_READ);
	w->notify_io.data = w;
	ev_io_start(herdd.loop, &w->notify_io);
}

void
wnotify_close(struct worker *w)
{
	main_io_close(&w->notify_io, &w->notify_fd);
}
