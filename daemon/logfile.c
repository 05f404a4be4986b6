/* SPDX-License-Identifier: MIT */
/*
 * Output files with a size cap: for a spawn's {"file": P, "max_bytes": M,
 * "max_files": N} the worker writes into a pipe (as for "capture") and herdd
 * appends what it reads to P; a write that would take P past M bytes first
 * rotates: P.N-1 is removed, P.k becomes P.k+1, P becomes P.1 and a new P is
 * started. So at most N files of at most M bytes each exist, the newest
 * output in P. (A worker that held the file itself could not be rotated
 * under: only the pipe's reader can.)
 *
 * The child still opens P first, with the caller's credentials (spawn.c), so
 * the spawn fails as before where the caller may not write it. herdd's own
 * opens and renames then run with the worker's uid and gid as file-system
 * credentials (setfsuid: this thread only), so a root herdd never writes or
 * renames where that user could not. Supplementary groups are not taken.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herdd.h"

struct logfile {
	char *path;
	int fd; /* P, -1 after a failure (output is then dropped, counted) */
	uint64_t size; /* bytes in P */
	uint64_t max_bytes;
	unsigned max_files;
	uid_t uid;
	gid_t gid;
	mode_t umask; /* the worker's: P is created as the child created it */
	uint64_t dropped; /* bytes that could not be written */
};

/* Runs the next file operations as the worker's user (a root herdd only). */
static void
as_user(const struct logfile *lf, bool on)
{
	if (herdd.uid != 0)
		return;
	/* Order: the gid while still root, the uid last; back the other way. */
	if (on) {
		setfsgid(lf->gid);
		setfsuid(lf->uid);
	} else {
		setfsuid(herdd.uid);
		setfsgid(herdd.gid);
	}
}

static int
open_current(struct logfile *lf)
{
	struct stat st;
	mode_t old;

	as_user(lf, true);
	old = umask(lf->umask);
	/* O_NONBLOCK: a FIFO put at P since the spawn must not block herdd (ENXIO instead). */
	lf->fd = open(lf->path,
	    O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW | O_NONBLOCK, 0666);
	umask(old);
	as_user(lf, false);
	if (lf->fd < 0 || fstat(lf->fd, &st) < 0) {
		log_warn("output file %s: %m; its output is dropped", lf->path);
		if (lf->fd >= 0)
			close(lf->fd);
		lf->fd = -1;
		return -1;
	}
	lf->size = (uint64_t)st.st_size;
	return 0;
}

/* P.k's name into buf (k 0: P itself). */
static void
name_of(const struct logfile *lf, unsigned k, char *buf, size_t len)
{
	if (k == 0)
		snprintf(buf, len, "%s", lf->path);
	else
		snprintf(buf, len, "%s.%u", lf->path, k);
}

/* Shifts every file one up, the oldest out, and starts P again. */
static void
rotate(struct logfile *lf)
{
	char from[PATH_MAX + 16], to[PATH_MAX + 16];
	unsigned k;

	close(lf->fd);
	lf->fd = -1;
	as_user(lf, true);
	if (lf->max_files == 1) {
		/* No room for an older file: P starts again empty. */
		unlink(lf->path);
	} else {
		for (k = lf->max_files - 1; k >= 1; k--) {
			name_of(lf, k - 1, from, sizeof(from));
			name_of(lf, k, to, sizeof(to));
			if (rename(from, to) < 0 && errno != ENOENT)
				log_warn("rotating %s to %s: %m", from, to);
		}
	}
	as_user(lf, false);
	open_current(lf);
}

/*
 * Appends n bytes, rotating at the cap. Lines stay whole: a file ends at a
 * newline unless one line alone is longer than the cap.
 */
void
logfile_write(struct logfile *lf, const char *buf, size_t n)
{
	struct stat st;

	/* Another worker may append to the same file: its bytes count against the cap too. */
	if (lf->fd >= 0 && fstat(lf->fd, &st) == 0)
		lf->size = (uint64_t)st.st_size;
	while (n > 0) {
		size_t room, take;
		ssize_t w;

		if (lf->fd >= 0 && lf->size >= lf->max_bytes)
			rotate(lf);
		if (lf->fd < 0) {
			lf->dropped += n;
			return;
		}
		room = lf->max_bytes - lf->size;
		if (n <= room) {
			take = n;
		} else {
			const char *nl = memrchr(buf, '\n', room);

			if (nl) {
				take = (size_t)(nl - buf) + 1;
			} else if (lf->size > 0) {
				rotate(lf);
				continue;
			} else {
				take = room;
			}
		}
		w = write(lf->fd, buf, take);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			log_warn("writing %s: %m; its output is dropped", lf->path);
			close(lf->fd);
			lf->fd = -1;
			continue;
		}
		lf->size += (uint64_t)w;
		buf += w;
		n -= (size_t)w;
	}
}

/* A rotating file for o, written as w's user. NULL (logged) on ENOMEM. */
struct logfile *
logfile_open(const struct output_spec *o, const struct worker *w)
{
	struct logfile *lf = calloc(1, sizeof(*lf));

	if (lf)
		lf->path = strdup(o->path);
	if (!lf || !lf->path) {
		free(lf);
		log_error("out of memory for output file %s", o->path);
		return NULL;
	}
	lf->max_bytes = o->max_bytes;
	lf->max_files = o->max_files;
	lf->uid = w->uid;
	lf->gid = w->gid;
	lf->umask = (mode_t)w->umask;
	open_current(lf);
	return lf;
}

/* Closes and frees lf (NULL is fine). */
void
logfile_close(struct logfile *lf)
{
	if (!lf)
		return;
	if (lf->dropped)
		log_warn("output file %s: %llu bytes dropped", lf->path,
		    (unsigned long long)lf->dropped);
	if (lf->fd >= 0)
		close(lf->fd);
	free(lf->path);
	free(lf);
}
