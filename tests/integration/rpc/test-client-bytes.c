/* SPDX-License-Identifier: MIT */
/*
 * Bytes values (PROTOCOL.md 1.1) between libherd and herd-testworker: round
 * trips of 0, 1, 64 KiB and 1 MiB in arguments, results and stream items
 * both ways,
 * out of band (a local libherd client) and inline (a raw client that never
 * says herd.features); a payload just over the worker's limit; and a client
 * that sends the worker bad descriptors: unsealed, of the wrong size, named
 * by an index that did not come, or sent with a line that names none. No
 * descriptor is left open on either side.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>

#include "ht-example.h"
#include "proto.h"
#include "ship.h"

static const size_t sizes[] = { 0, 1, 65536, 1048576 };

/* size bytes, byte i being i mod 256: what count makes with "bytes": true. */
static char *
pattern(size_t size)
{
	char *p = malloc(size + 1);

	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < size; i++)
		p[i] = (char)(i & 0xff);
	return p;
}

/* One comparison, not an assertion a byte: under valgrind a master busy that long misses heartbeats. */
static void
assert_pattern(const json_t *v, size_t size)
{
	char *want = pattern(size);
	const void *data;
	size_t len;

	ck_assert_int_eq(herd_bytes_get(v, &data, &len), 0);
	ck_assert_uint_eq(len, size);
	ck_assert(memcmp(data, want, len) == 0);
	free(want);
}

/* The descriptors a process holds come back to want within a few seconds. */
static void
assert_fds_back(pid_t pid, int want)
{
	int64_t deadline = ht_now_ms() + ht_ms(5000);
	int n;

	while ((n = ht_count_fds(pid)) != want && ht_now_ms() < deadline) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };

		nanosleep(&ts, NULL);
	}
	ck_assert_int_eq(n, want);
}

/* Arguments, results and stream items of every size, out of band from 16 KiB on. */
START_TEST(test_round_trip)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *c = ht_herd_worker_connect_ok(w);
	int mine = ht_count_fds(getpid()), theirs = ht_count_fds(herd_worker_pid(w));

	ck_assert(proto_features_has(
	    json_object_get(herd_conn_get_server_info(c), "features"), PROTO_FEATURE_BYTES_FD));
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		char *p = pattern(sizes[k]);
		json_t *arg = json_pack("{s:o}", "data", herd_bytes_new(p, sizes[k]));
		json_t *res = NULL, *item = NULL;
		herd_stream *s = NULL;
		herd_sink *sink = NULL;
		int items = 0, r;

		ck_assert_int_eq(herd_call(c, "echo", arg, 0, &res), 0);
		assert_pattern(json_object_get(res, "data"), sizes[k]);
		json_decref(res);
		ck_assert_int_eq(herd_stream_open(c, "count",
		                     ht_args("{s:i, s:I, s:b}", "n", 3, "size",
		                         (json_int_t)sizes[k], "bytes", 1),
		                     NULL, NULL, NULL, &s),
		    0);
		while ((r = herd_stream_next(s, 0, &item)) == 1) {
			assert_pattern(item, sizes[k]);
			json_decref(item);
			items++;
		}
		ck_assert_int_eq(r, 0);
		ck_assert_int_eq(items, 3);
		herd_stream_unref(s);
		/* Items the other way: the sink total adds up their lengths. */
		ck_assert_int_eq(herd_sink_open(c, "total", NULL, &sink), 0);
		for (int i = 0; i < 3; i++)
			ck_assert_int_eq(herd_sink_send(sink, json_object_get(arg, "data")), 0);
		ck_assert_int_eq(herd_sink_finish(sink, 0, &res), 0);
		ck_assert_int_eq(json_integer_value(res), 3 * (json_int_t)sizes[k]);
		json_decref(res);
		herd_sink_unref(sink);
		json_decref(arg);
		free(p);
	}
	/* Not bytes: a string, and an object with another member too. */
	ck_assert_int_eq(
	    herd_bytes_get(ht_args("s", "x"), &(const void *){ NULL }, &(size_t){ 0 }), -EINVAL);
	ck_assert_int_eq(herd_bytes_get(ht_args("{s:s, s:i}", "$bytes", "x", "y", 1),
	                     &(const void *){ NULL }, &(size_t){ 0 }),
	    -EINVAL);
	assert_fds_back(getpid(), mine);
	assert_fds_back(herd_worker_pid(w), theirs);
	herd_conn_unref(c);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* A payload counts against the receiver's max_message_size as if inline. */
START_TEST(test_over_limit)
{
	json_t *settings = json_pack("{s:i}", "max_message_size", 65536);
	herd_master *m = ht_herd_master_ok(settings);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	herd_conn *c = ht_herd_worker_connect_ok(w);
	char *p = pattern(65537);
	json_t *res = NULL;

	/* The whole limit fits (the line is short); one byte more does not leave. */
	ck_assert_int_eq(
	    herd_call(c, "echo", ht_args("{s:o}", "data", herd_bytes_new(p, 65536)), 0, &res), 0);
	assert_pattern(json_object_get(res, "data"), 65536);
	json_decref(res);
	ck_assert_int_eq(
	    herd_call(c, "echo", ht_args("{s:o}", "data", herd_bytes_new(p, 65537)), 0, &res),
	    -EMSGSIZE);
	/* The connection goes on. */
	ck_assert_int_eq(
	    herd_call(c, "echo", ht_args("{s:o}", "data", herd_bytes_new(p, 1)), 0, &res), 0);
	json_decref(res);
	free(p);
	json_decref(settings);
	herd_conn_unref(c);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* base64 of size pattern bytes (free it). */
static char *
pattern_base64(size_t size)
{
	char *p = pattern(size), *b = malloc(PROTO_BASE64_SIZE(size));

	ck_assert_ptr_nonnull(b);
	proto_base64_encode(p, size, b);
	free(p);
	return b;
}

/* A client that never says herd.features: bytes go both ways inline, as base64. */
START_TEST(test_inline)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	struct ht_conn *c = ht_hello_open(herd_worker_socket(w), "client", NULL, NULL);

	ck_assert_ptr_nonnull(c);
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		char *b = pattern_base64(sizes[k]);
		json_t *reply = ht_conn_call(
		    c, "echo", json_pack("{s:{s:s}}", "data", "$bytes", b), ht_ms(10000));

		ck_assert_msg(json_is_object(ht_result(reply)), "%s", ht_dump(reply));
		ck_assert_str_eq(ht_str(json_object_get(ht_result(reply), "data"), "$bytes"), b);
		json_decref(reply);
		free(b);
	}
	ht_conn_close(c);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

/* Sends text as one line with fds over SCM_RIGHTS. */
static void
send_with_fds(struct ht_conn *c, const char *text, const int *fds, unsigned n)
{
	char line[512];
	union {
		char buf[CMSG_SPACE(4 * sizeof(int))];
		struct cmsghdr align;
	} ctl = { { 0 } };
	struct iovec iov = { .iov_base = line,
		.iov_len = (size_t)snprintf(line, sizeof(line), "%s\n", text) };
	struct msghdr mh = { .msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = ctl.buf,
		.msg_controllen = CMSG_SPACE(n * sizeof(int)) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	ck_assert_int_eq(sendmsg(ht_conn_fd(c), &mh, MSG_NOSIGNAL), (ssize_t)iov.iov_len);
}

/* A memfd of len pattern bytes, sealed with seals (0: none). */
static int
memfd_of(size_t len, unsigned seals)
{
	int fd = memfd_create("bytes-test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	char *p = pattern(len);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, p, len), (ssize_t)len);
	free(p);
	if (seals)
		ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, seals), 0);
	return fd;
}

#define ALL_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL)

/* A client that announced herd.features, then sends line with fd; the worker's answer. */
static json_t *
bad_client(const herd_worker *w, const char *line, int fd)
{
	struct ht_conn *c = ht_hello_open(herd_worker_socket(w), "client", NULL, NULL);
	json_t *reply;

	ck_assert_ptr_nonnull(c);
	ck_assert_int_eq(ht_conn_notify(c, "herd.features",
	                     json_pack("{s:[s]}", "features", PROTO_FEATURE_BYTES_FD)),
	    0);
	send_with_fds(c, line, &fd, 1);
	close(fd);
	reply = ht_conn_recv(c, ht_ms(10000));
	ck_assert_ptr_nonnull(reply);
	if (json_object_get(reply, "error"))
		ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(10000)), 0);
	ht_conn_close(c);
	return reply;
}

/* Every descriptor the worker cannot take is refused with invalid_bytes, and closed. */
START_TEST(test_bad_descriptors)
{
	herd_master *m = ht_herd_master_ok(NULL);
	herd_worker *w = ht_herd_spawn_ok(m, "HERD_TESTWORKER", NULL);
	pid_t pid = herd_worker_pid(w);
	int theirs = ht_count_fds(pid);
	static const char call[] =
	    "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"data\":"
	    "{\"$bytes\":{\"fd\":%d,\"len\":%d}}}}";
	static const struct {
		unsigned seals;
		int index, len;
		const char *why;
	} bad[] = {
		{ 0, 0, 100, "not sealed" },
		{ F_SEAL_SHRINK | F_SEAL_GROW, 0, 100, "not sealed" },
		{ ALL_SEALS, 1, 100, "names fd 1" },
		{ ALL_SEALS, 0, 101, "holds 100 bytes" },
		{ ALL_SEALS, 0, 99, "holds 100 bytes" },
	};
	json_t *reply;
	char line[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(line, sizeof(line), call, bad[i].index, bad[i].len);
		reply = bad_client(w, line, memfd_of(100, bad[i].seals));
		ck_assert_str_eq(ht_error_name(reply), "invalid_bytes");
		ck_assert_msg(strstr(ht_error_message(reply), bad[i].why), "%s", ht_dump(reply));
		ck_assert(json_is_null(json_object_get(reply, "id")));
		json_decref(reply);
	}
	/* A descriptor with a line that names none is closed; the call is answered. */
	reply = bad_client(w, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":[5]}",
	    memfd_of(10, ALL_SEALS));
	ck_assert_int_eq(json_integer_value(json_array_get(ht_result(reply), 0)), 5);
	json_decref(reply);
	assert_fds_back(pid, theirs);
	herd_worker_unref(w);
	herd_master_unref(m);
}
END_TEST

HT_MAIN("client-bytes",
    HT_CLIENT_HERDD_CASE(
        "bytes", 120, test_round_trip, test_over_limit, test_inline, test_bad_descriptors))
