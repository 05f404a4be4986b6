/* SPDX-License-Identifier: MIT */
/*
 * Worker ids that never repeat on one state directory: "wN", with N continued
 * across herdd restarts from a counter in the directory next to the socket.
 *
 * Ids stay short and readable ("w17", not a UUID) at the cost of depending on
 * that directory: a runtime directory on tmpfs starts over at boot, when no
 * process of the previous boot survives to be confused with. Writing the
 * counter at every spawn would cost a rename each; instead a block of
 * IDS_BLOCK ids is reserved per write, so a herdd that crashes skips at most
 * that many, and a clean exit writes back the exact next one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "herdd.h"

#define IDS_BLOCK 64
#define IDS_FILE  "worker-ids"

static uint64_t next_id = 1;
static uint64_t reserved; /* ids below this are on disk as handed out */
static char *ids_path;

/* Writes n as the first id not yet handed out (temporary file, then rename). */
static int
ids_write(uint64_t n)
{
	char tmp[PATH_MAX], text[32];
	int fd, len, r = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", ids_path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	len = snprintf(text, sizeof(text), "%" PRIu64 "\n", n);
	if (write(fd, text, (size_t)len) != len)
		r = errno ? -errno : -EIO;
	if (close(fd) < 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, ids_path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* Continues from dir's counter; see the file comment. */
void
ids_open(const char *dir)
{
	char text[32];
	ssize_t n;
	int fd;

	free(ids_path);
	ids_path = NULL;
	next_id = 1;
	reserved = 0;
	if (!dir || asprintf(&ids_path, "%s/" IDS_FILE, strcmp(dir, "/") ? dir : "") < 0) {
		ids_path = NULL;
		return;
	}
	fd = open(ids_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn(
			    "%s: %m; worker ids may repeat those of an earlier herdd", ids_path);
		return;
	}
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n > 0) {
		char *end;

		text[n] = '\0';
		errno = 0;
		next_id = strtoull(text, &end, 10);
		if (errno || end == text || next_id == 0 || next_id > UINT64_MAX / 2) {
			log_warn("%s: not a worker id counter; starting at w1", ids_path);
			next_id = 1;
		}
	}
	reserved = next_id;
	log_debug("worker ids continue at w%" PRIu64, next_id);
}

/* Hands out the next id, reserving a block on disk when the last one is used up. */
void
ids_next(char *buf, size_t len)
{
	if (ids_path && next_id >= reserved) {
		int r = ids_write(next_id + IDS_BLOCK);

		if (r < 0)
			log_warn("writing %s: %s; worker ids may repeat after a restart", ids_path,
			    strerror(-r));
		/* Tried once per block, not at every spawn, whether it worked or not. */
		reserved = next_id + IDS_BLOCK;
	}
	snprintf(buf, len, "w%" PRIu64, next_id++);
}

/* Writes back the exact next id. */
void
ids_close(void)
{
	int r = ids_path && reserved > 0 ? ids_write(next_id) : 0;

	if (r < 0)
		log_warn("writing %s: %s", ids_path, strerror(-r));
	free(ids_path);
	ids_path = NULL;
}
