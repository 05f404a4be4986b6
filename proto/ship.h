/* SPDX-License-Identifier: MIT */
/*
 * What shipping an executable over a link needs (PROTOCOL.md 9.5): its
 * SHA-256, which names it in the remote cache and proves it unchanged, and
 * base64, which carries its bytes in JSON. Pure functions, as all of proto.
 */
#ifndef HERD_PROTO_SHIP_H
#define HERD_PROTO_SHIP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proto_sha256 {
	uint32_t h[8];
	uint64_t bytes;
	uint8_t block[64];
	size_t used;
};

void proto_sha256_init(struct proto_sha256 *s);
void proto_sha256_update(struct proto_sha256 *s, const void *data, size_t len);
/* Finishes and writes the digest as 64 lowercase hex digits and a NUL. */
void proto_sha256_hex(struct proto_sha256 *s, char hex[65]);
/* The SHA-256 of the file at fd (read from where it is) as hex. Returns 0 or -errno. */
int proto_sha256_fd(int fd, char hex[65]);

/* Bytes base64 needs for len bytes, NUL included. */
#define PROTO_BASE64_SIZE(len) ((((len) + 2) / 3) * 4 + 1)
/* Writes src as base64 (with padding) and a NUL into dst; returns the length. */
size_t proto_base64_encode(const void *src, size_t len, char *dst);
/* Decodes len characters of base64 into dst (len / 4 * 3 bytes room); -1 if not base64. */
ssize_t proto_base64_decode(const char *src, size_t len, void *dst);

#endif
