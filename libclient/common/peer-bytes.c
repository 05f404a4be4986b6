/* SPDX-License-Identifier: MIT */
/*
 * Bytes out of band (PROTOCOL.md 1.1): a payload travels as a sealed memfd
 * sent with its line over SCM_RIGHTS, and the line names it. The sender
 * writes the bytes once into the memfd; the receiver checks that nobody can
 * change them any more (the seals) and that they are as long as the line
 * says, then copies them out of a mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peer.h"

/* Every seal: the size and the content are final, and so are the seals. */
#define BYTES_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

/* A sealed memfd holding data[0..len), or -errno. */
int
herd__bytes_fd_make(const char *data, size_t len)
{
	int fd = memfd_create("herd-bytes", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	size_t done = 0;
	int r;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t n = write(fd, data + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -errno : -EIO;
			close(fd);
			return r;
		}
		done += (size_t)n;
	}
	if (fcntl(fd, F_ADD_SEALS, BYTES_SEALS) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

/* The len bytes of a received memfd as a new bytes value, or NULL with *err. */
json_t *
herd__bytes_fd_read(int fd, size_t len, struct proto_error *err)
{
	struct stat st;
	json_t *v;
	void *map;
	int seals;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		proto_error_setf(err, HERD_E_INVALID_BYTES, "a $bytes descriptor is not a memfd");
		return NULL;
	}
	seals = fcntl(fd, F_GET_SEALS);
	if (seals < 0 || (seals & BYTES_SEALS) != BYTES_SEALS) {
		proto_error_setf(err, HERD_E_INVALID_BYTES,
		    "a $bytes memfd is not sealed against writes, growing and shrinking");
		return NULL;
	}
	if ((uint64_t)st.st_size != len) {
		proto_error_setf(err, HERD_E_INVALID_BYTES,
		    "a $bytes memfd holds %lld bytes, not the %zu its line says",
		    (long long)st.st_size, len);
		return NULL;
	}
	if (len == 0)
		return proto_bytes_new("", 0);
	/* Sealed: the mapping cannot change under the copy, nor shrink into SIGBUS. */
	map = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (map == MAP_FAILED) {
		proto_error_setf(err, HERD_E_INVALID_BYTES, "a $bytes memfd cannot be mapped: %s",
		    strerror(errno));
		return NULL;
	}
	v = proto_bytes_new(map, len);
	munmap(map, len);
	if (!v)
		proto_error_setf(err, HERD_E_INTERNAL_ERROR, "out of memory");
	return v;
}
