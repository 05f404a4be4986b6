/* SPDX-License-Identifier: MIT */
/*
 * Executables shipped over the link (PROTOCOL.md 9.5), as rpc_parallel
 * ships a master's own binary: each lives in a per-user cache under its
 * SHA-256, so a second spawn of the same binary copies nothing, and a cached
 * copy whose content no longer matches its name is refused, never run.
 * One shipment at a time per link: the master waits for each answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herdd.h"
#include "link.h"
#include "ship.h"

static struct {
	char sha[65];
	char *tmp; /* the copy being received, renamed to its hash once whole */
	int fd;
	uint64_t size, got;
	struct proto_sha256 hash;
} ship = { .fd = -1 };

/* mkdir -p, each new level 0700. Returns 0 or -errno. */
static int
make_dirs(char *path)
{
	char c;

	for (char *p = path + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		c = *p;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			*p = c;
			return -errno;
		}
		*p = c;
		if (c == '\0')
			return 0;
	}
}

/* $XDG_CACHE_HOME/herd/bin, else $HOME/.cache/herd/bin, else /tmp/herd-cache.UID/bin. */
static char *
cache_dir(void)
{
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	char *dir = NULL;
	int r;

	if (xdg && xdg[0] == '/')
		r = asprintf(&dir, "%s/herd/bin", xdg);
	else if (home && home[0] == '/')
		r = asprintf(&dir, "%s/.cache/herd/bin", home);
	else
		r = asprintf(&dir, "/tmp/herd-cache.%u/bin", (unsigned)herdd.uid);
	if (r < 0)
		return NULL;
	if (make_dirs(dir) < 0) {
		free(dir);
		return NULL;
	}
	return dir;
}

static bool
sha_valid(const char *h)
{
	return h && strlen(h) == 64 && strspn(h, "0123456789abcdef") == 64;
}

static void
ship_reset(void)
{
	if (ship.fd >= 0)
		close(ship.fd);
	if (ship.tmp)
		(void)unlink(ship.tmp);
	free(ship.tmp);
	ship.tmp = NULL;
	ship.fd = -1;
}

static void
ship_failed(struct herd__link *l, const char *sha, const char *error)
{
	log_warn("shipping %.64s: %s", sha, error);
	ship_reset();
	(void)herd__link_notify(
	    l, "ship_failed", json_pack("{s:s, s:s}", "sha256", sha, "error", error));
}

static void
ship_done(struct herd__link *l, const char *sha, const char *path, bool copied)
{
	(void)herd__link_notify(l, "shipped",
	    json_pack("{s:s, s:s, s:b}", "sha256", sha, "path", path, "copied", copied));
}

static void ship_open(
    struct herd__link *l, const char *sha, json_int_t size, const char *dir, const char *path);

/* "ship" {sha256, size}: the cached copy if it is intact, else a request for the bytes. */
static void
ship_begin(struct herd__link *l, const char *sha, json_int_t size)
{
	char *dir = cache_dir(), *path = NULL;

	if (!dir || asprintf(&path, "%s/%s", dir, sha) < 0) {
		free(dir);
		ship_failed(l, sha, "no cache directory");
		return;
	}
	ship_open(l, sha, size, dir, path);
	free(dir);
	free(path);
}

/* The cached copy at path if intact, else a new copy in dir is asked for. */
static void
ship_open(struct herd__link *l, const char *sha, json_int_t size, const char *dir, const char *path)
{
	char have[65];
	int fd, r;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0) {
		r = proto_sha256_fd(fd, have);
		close(fd);
		if (r == 0 && strcmp(have, sha) == 0)
			ship_done(l, sha, path, false);
		else
			ship_failed(l, sha,
			    "the cached copy differs from the master's executable: refused");
		return;
	}
	ship_reset();
	if (asprintf(&ship.tmp, "%s/.%s.%d", dir, sha, (int)herdd.pid) < 0) {
		ship.tmp = NULL;
		ship_failed(l, sha, "out of memory");
		return;
	}
	ship.fd = open(ship.tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0700);
	if (ship.fd < 0) {
		ship_failed(l, sha, strerror(errno));
		return;
	}
	memcpy(ship.sha, sha, sizeof(ship.sha));
	ship.size = (uint64_t)size;
	ship.got = 0;
	proto_sha256_init(&ship.hash);
	(void)herd__link_notify(l, "ship_send", json_pack("{s:s}", "sha256", sha));
}

/* "ship_data" {sha256, data}: the next bytes, in base64. */
static void
ship_data(struct herd__link *l, const char *sha, const char *data)
{
	size_t len = strlen(data);
	char *bytes;
	ssize_t n;

	if (ship.fd < 0 || strcmp(sha, ship.sha) != 0)
		return;
	bytes = malloc(len / 4 * 3 + 3);
	n = bytes ? proto_base64_decode(data, len, bytes) : -1;
	if (n < 0 || ship.got + (uint64_t)n > ship.size || write(ship.fd, bytes, (size_t)n) != n)
		ship_failed(l, sha, n < 0 ? "bad data" : "cannot write the copy");
	else {
		proto_sha256_update(&ship.hash, bytes, (size_t)n);
		ship.got += (uint64_t)n;
	}
	free(bytes);
}

/* "ship_end" {sha256}: the copy is kept under its hash if it is whole and matches. */
static void
ship_end(struct herd__link *l, const char *sha)
{
	char *path = NULL, *slash;
	char have[65];

	if (ship.fd < 0 || strcmp(sha, ship.sha) != 0)
		return;
	proto_sha256_hex(&ship.hash, have);
	if (ship.got != ship.size || strcmp(have, sha) != 0) {
		ship_failed(l, sha, "the copy does not match the master's executable");
		return;
	}
	slash = strrchr(ship.tmp, '/');
	if (asprintf(&path, "%.*s/%s", (int)(slash - ship.tmp), ship.tmp, sha) < 0)
		path = NULL;
	if (!path || fsync(ship.fd) < 0 || rename(ship.tmp, path) < 0) {
		ship_failed(l, sha, path ? strerror(errno) : "out of memory");
	} else {
		close(ship.fd);
		ship.fd = -1;
		free(ship.tmp);
		ship.tmp = NULL;
		ship_done(l, sha, path, true);
	}
	free(path);
}

/* The link's ship_* methods; false for another method. */
bool
stdio_ship(struct herd__link *l, const char *method, json_t *params)
{
	const char *sha = json_string_value(json_object_get(params, "sha256"));
	json_t *size = json_object_get(params, "size");
	const char *data = json_string_value(json_object_get(params, "data"));

	if (strncmp(method, "ship", 4) != 0)
		return false;
	if (!sha_valid(sha)) {
		herd__link_kill(l, -EBADMSG, "a ship message without a valid sha256");
		return true;
	}
	if (strcmp(method, "ship") == 0 && json_is_integer(size) && json_integer_value(size) >= 0)
		ship_begin(l, sha, json_integer_value(size));
	else if (strcmp(method, "ship_data") == 0 && data)
		ship_data(l, sha, data);
	else if (strcmp(method, "ship_end") == 0)
		ship_end(l, sha);
	else
		herd__link_kill(l, -EBADMSG, "a bad ship message");
	return true;
}

/* A shipment cut short by the link's end leaves no partial copy. */
void
stdio_ship_cleanup(void)
{
	ship_reset();
}
