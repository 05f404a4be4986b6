/* SPDX-License-Identifier: MIT */
/*
 * The link's relay (libclient/common/link.h) on a libev loop: the test is
 * the far end of the link (raw lines on a socketpair) and the local user of
 * a channel (the other end of the channel's socketpair).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>

#include "ht-check.h"
#include "link.h"

struct fixture {
	struct ev_loop *loop;
	struct herd__link link;
	int far; /* the far end of the link */
	int user; /* the local user's end of channel 1 */
	char buf[65536];
	size_t len;
	int dead, dead_reason;
	int controls, closed;
	char method[32];
};

static struct fixture fx;

static void
on_control(struct herd__link *l, const char *method, json_t *params)
{
	fx.controls++;
	snprintf(fx.method, sizeof(fx.method), "%s", method);
}

static void
on_chan_closed(struct herd__link *l, struct herd__link_chan *c, const char *error)
{
	fx.closed++;
}

static void
on_dead(struct herd__link *l, int reason, const char *why)
{
	fx.dead++;
	fx.dead_reason = reason;
}

static const struct herd__link_ops ops = {
	.control = on_control,
	.chan_closed = on_chan_closed,
	.dead = on_dead,
};

/* Runs the loop for about ms. */
static void
pump(int ms)
{
	int64_t end = ht_now_ms() + ms;

	while (ht_now_ms() < end) {
		ev_run(fx.loop, EVRUN_NOWAIT);
		poll(NULL, 0, 1);
	}
}

/* Runs the loop until fd has a whole line (returned, NUL-terminated, from buf) or EOF (NULL). */
static char *
line_from(int fd, int timeout_ms)
{
	int64_t end = ht_now_ms() + timeout_ms;
	char *nl;
	ssize_t n;

	fx.len = 0;
	while (ht_now_ms() < end) {
		ev_run(fx.loop, EVRUN_NOWAIT);
		n = recv(fd, fx.buf + fx.len, 1, MSG_DONTWAIT);
		if (n == 0)
			return NULL;
		if (n < 0) {
			poll(NULL, 0, 1);
			continue;
		}
		fx.len++;
		nl = memchr(fx.buf, '\n', fx.len);
		if (nl) {
			*nl = '\0';
			return fx.buf;
		}
	}
	ck_abort_msg("no line in time");
	return NULL;
}

static void
far_send(const char *text)
{
	ck_assert_int_eq(write(fx.far, text, strlen(text)), (ssize_t)strlen(text));
}

static void
setup(void)
{
	int sv[2], ch[2];

	memset(&fx, 0, sizeof(fx));
	fx.loop = ev_loop_new(EVFLAG_AUTO);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch), 0);
	herd__link_init(&fx.link, fx.loop, sv[0], sv[0], &ops, NULL, 1024);
	fx.far = sv[1];
	ck_assert_ptr_nonnull(herd__link_chan_add(&fx.link, 1, ch[0]));
	fx.user = ch[1];
}

static void
teardown(void)
{
	herd__link_kill(&fx.link, 0, "test over");
	herd__link_free(&fx.link);
	close(fx.far);
	if (fx.user >= 0)
		close(fx.user);
	ev_loop_destroy(fx.loop);
}

START_TEST(test_relay_both_ways)
{
	static const char half1[] = "{\"jsonrpc\":\"2.0\",", half2[] = "\"method\":\"x\"}\n";

	far_send("1 {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"sum\"}\n");
	ck_assert_str_eq(
	    line_from(fx.user, 1000), "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"sum\"}");
	/* A line written in two pieces leaves as one, behind its channel. */
	ck_assert_int_eq(write(fx.user, half1, strlen(half1)), (ssize_t)strlen(half1));
	pump(20);
	ck_assert_int_eq(write(fx.user, half2, strlen(half2)), (ssize_t)strlen(half2));
	ck_assert_str_eq(line_from(fx.far, 1000), "1 {\"jsonrpc\":\"2.0\",\"method\":\"x\"}");
	/* Lines for a channel nobody has are dropped; the link lives. */
	far_send("7 {\"jsonrpc\":\"2.0\",\"method\":\"lost\"}\n");
	far_send("1 {\"n\":2}\n");
	ck_assert_str_eq(line_from(fx.user, 1000), "{\"n\":2}");
	ck_assert_int_eq(fx.dead, 0);
}
END_TEST

START_TEST(test_control_and_close)
{
	char *line;

	far_send("0 {\"jsonrpc\":\"2.0\",\"method\":\"open\",\"params\":{\"channel\":2}}\n");
	pump(20);
	ck_assert_int_eq(fx.controls, 1);
	ck_assert_str_eq(fx.method, "open");
	/* Heartbeats are the link's own: no control call. */
	far_send("0 {\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\"}\n");
	pump(20);
	ck_assert_int_eq(fx.controls, 1);
	/* The far end closes channel 1: what it sent first arrives, then EOF. */
	far_send("1 {\"last\":true}\n0 {\"jsonrpc\":\"2.0\",\"method\":\"close\","
	         "\"params\":{\"channel\":1}}\n");
	ck_assert_str_eq(line_from(fx.user, 1000), "{\"last\":true}");
	ck_assert_ptr_null(line_from(fx.user, 1000));
	ck_assert_int_eq(fx.closed, 1);
	ck_assert_ptr_null(herd__link_chan_find(&fx.link, 1));
	/* The local end closes a channel: the far end hears close. */
	close(fx.user);
	fx.user = -1;
	{
		int ch[2];

		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch), 0);
		ck_assert_ptr_nonnull(herd__link_chan_add(&fx.link, 3, ch[0]));
		close(ch[1]);
	}
	line = line_from(fx.far, 1000);
	ck_assert_str_eq(
	    line, "0 {\"jsonrpc\":\"2.0\",\"method\":\"close\",\"params\":{\"channel\":3}}");
	ck_assert_int_eq(fx.dead, 0);
}
END_TEST

START_TEST(test_framing_error_ends_link)
{
	far_send("x {}\n");
	pump(20);
	ck_assert_int_eq(fx.dead, 1);
	ck_assert_int_eq(fx.dead_reason, -EBADMSG);
	/* Its channels close with it. */
	ck_assert_ptr_null(line_from(fx.user, 1000));
}
END_TEST

START_TEST(test_long_line_ends_link)
{
	char line[2048];

	memset(line, 'a', sizeof(line));
	ck_assert_int_eq(write(fx.far, line, sizeof(line)), (ssize_t)sizeof(line));
	pump(20);
	ck_assert_int_eq(fx.dead, 1);
	ck_assert_int_eq(fx.dead_reason, -EMSGSIZE);
}
END_TEST

START_TEST(test_eof_ends_link)
{
	shutdown(fx.far, SHUT_WR);
	pump(20);
	ck_assert_int_eq(fx.dead, 1);
	ck_assert_int_eq(fx.dead_reason, -ECONNRESET);
}
END_TEST

/* Heartbeats go out while idle; silence past the timeout ends the link. */
START_TEST(test_heartbeats_and_silence)
{
	int64_t t0 = ht_now_ms();

	herd__link_set_heartbeat(&fx.link, 20, 200);
	ck_assert_str_eq(
	    line_from(fx.far, 1000), "0 {\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\"}");
	/* Our heartbeats keep the link alive only if the far end answers. */
	for (int i = 0; i < 5; i++) {
		far_send("0 {\"jsonrpc\":\"2.0\",\"method\":\"heartbeat\"}\n");
		pump(50);
	}
	ck_assert_int_eq(fx.dead, 0);
	t0 = ht_now_ms();
	while (!fx.dead && ht_now_ms() - t0 < 2000)
		pump(5);
	ck_assert_int_eq(fx.dead, 1);
	ck_assert_int_eq(fx.dead_reason, -ETIMEDOUT);
	ck_assert_int_ge(ht_now_ms() - t0, 150);
	ck_assert_int_le(ht_now_ms() - t0, ht_ms(400));
}
END_TEST

/* Lines a channel's user writes leave only while the far end's window has room. */
START_TEST(test_window_holds_lines_back)
{
	static const char lines[] = "aaaaaaaaaaaaa\nbbbbbbbbbbbbb\nccccccccccccc\n";
	char c;

	herd__link_set_windows(&fx.link, 20);
	ck_assert_int_eq(write(fx.user, lines, strlen(lines)), (ssize_t)strlen(lines));
	/* 14 bytes leave 6 of credit: the second line starts, the third waits. */
	ck_assert_str_eq(line_from(fx.far, 1000), "1 aaaaaaaaaaaaa");
	ck_assert_str_eq(line_from(fx.far, 1000), "1 bbbbbbbbbbbbb");
	pump(50);
	ck_assert_int_eq(recv(fx.far, &c, 1, MSG_DONTWAIT), -1);
	ck_assert_int_eq(errno, EAGAIN);
	far_send("0 {\"jsonrpc\":\"2.0\",\"method\":\"window\",\"params\":{\"channel\":1,"
	         "\"bytes\":28}}\n");
	ck_assert_str_eq(line_from(fx.far, 1000), "1 ccccccccccccc");
	ck_assert_int_eq(fx.dead, 0);
}
END_TEST

/* Writes n lines of 1000 bytes to channel 1 from the far end, running the loop; reads them if drain. */
static void
far_flood(int n, bool drain)
{
	char line[1003];

	memset(line, 'x', sizeof(line));
	memcpy(line, "1 ", 2);
	line[sizeof(line) - 1] = '\n';
	for (int i = 0; i < n && !fx.dead; i++) {
		ck_assert_int_eq(write(fx.far, line, sizeof(line)), (ssize_t)sizeof(line));
		for (int k = 0; k < 4; k++)
			ev_run(fx.loop, EVRUN_NOWAIT);
		while (drain && recv(fx.user, fx.buf, sizeof(fx.buf), MSG_DONTWAIT) > 0) {
		}
	}
}

/* Once half our window reached the user, the far end is told so on channel 0. */
START_TEST(test_delivery_grants_credit)
{
	long bytes = 0;

	herd__link_set_windows(&fx.link, HERD__LINK_WINDOW);
	far_flood(HERD__LINK_WINDOW / 2 / 1001 + 10, true);
	ck_assert_int_eq(
	    sscanf(line_from(fx.far, 1000),
	        "0 {\"jsonrpc\":\"2.0\",\"method\":\"window\",\"params\":{\"channel\":1,"
	        "\"bytes\":%ld}}",
	        &bytes),
	    1);
	/* Granted as soon as half the window was delivered, in the writes that took it there. */
	ck_assert_int_ge(bytes, HERD__LINK_WINDOW / 2);
	ck_assert_int_lt(bytes, HERD__LINK_WINDOW / 2 + 2 * 1001);
	ck_assert_int_eq(fx.dead, 0);
}
END_TEST

/* A far end that sends past our window to a user who does not read ends the link. */
START_TEST(test_window_overrun_ends_link)
{
	herd__link_set_windows(&fx.link, HERD__LINK_WINDOW);
	far_flood(4 * HERD__LINK_WINDOW / 1001, false);
	ck_assert_int_eq(fx.dead, 1);
	ck_assert_int_eq(fx.dead_reason, -EPROTO);
}
END_TEST

START_TEST(test_finish_shuts_the_write_side)
{
	far_send("1 {\"n\":1}\n");
	ck_assert_str_eq(line_from(fx.user, 1000), "{\"n\":1}");
	herd__link_finish(&fx.link);
	/* The channel is closed with a close, then EOF. */
	ck_assert_str_eq(line_from(fx.far, 1000),
	    "0 {\"jsonrpc\":\"2.0\",\"method\":\"close\",\"params\":{\"channel\":1}}");
	ck_assert_ptr_null(line_from(fx.far, 1000));
	ck_assert_int_eq(fx.dead, 0);
	close(fx.far);
	fx.far = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pump(20);
	ck_assert_int_eq(fx.dead, 1);
}
END_TEST

/* Reads a whole line from fd without running the loop: what is there already. */
static char *
line_now(int fd)
{
	ssize_t n;

	fx.len = 0;
	while ((n = recv(fd, fx.buf + fx.len, 1, MSG_DONTWAIT)) == 1) {
		if (fx.buf[fx.len++] == '\n') {
			fx.buf[fx.len - 1] = '\0';
			return fx.buf;
		}
	}
	return NULL;
}

/* A channel's writer puts whole lines on the link itself, in order with what its socket holds. */
START_TEST(test_send_direct)
{
	static char one[] = "{\"n\":1}\n{\"n\"", two[] = ":2}\n{\"n\":", four[] = "{\"n\":4}\n";
	struct herd__link_chan *c = herd__link_chan_find(&fx.link, 1);
	struct iovec iov[] = { { .iov_base = one, .iov_len = strlen(one) },
		{ .iov_base = two, .iov_len = strlen(two) } };

	/* The first line and the one across the two iovecs go; the unfinished third stays. */
	ck_assert_uint_eq(herd__link_chan_send(c, iov, 2), 16);
	ck_assert_str_eq(line_now(fx.far), "1 {\"n\":1}");
	ck_assert_str_eq(line_now(fx.far), "1 {\"n\":2}");
	/* Bytes in the channel's socket go first: nothing is taken until the loop relayed them. */
	ck_assert_int_eq(write(fx.user, "{\"n\":3}\n", 8), 8);
	iov[0] = (struct iovec){ .iov_base = four, .iov_len = strlen(four) };
	ck_assert_uint_eq(herd__link_chan_send(c, iov, 1), 0);
	ck_assert_str_eq(line_from(fx.far, 1000), "1 {\"n\":3}");
	ck_assert_uint_eq(herd__link_chan_send(c, iov, 1), 8);
	ck_assert_str_eq(line_now(fx.far), "1 {\"n\":4}");
	ck_assert_int_eq(fx.dead, 0);
}
END_TEST

/* Without credit a line waits, as one read from the socket would. */
START_TEST(test_send_direct_holds_for_credit)
{
	static char lines[] = "aaaaaaaaaaaaa\nbbbbbbbbbbbbb\nccccccccccccc\n";
	struct iovec iov = { .iov_base = lines, .iov_len = strlen(lines) };
	struct herd__link_chan *c;

	herd__link_set_windows(&fx.link, 20);
	c = herd__link_chan_find(&fx.link, 1);
	/* 14 bytes leave 6 of credit: the second line starts, the third waits. */
	ck_assert_uint_eq(herd__link_chan_send(c, &iov, 1), 28);
	ck_assert_str_eq(line_now(fx.far), "1 aaaaaaaaaaaaa");
	ck_assert_str_eq(line_now(fx.far), "1 bbbbbbbbbbbbb");
	iov = (struct iovec){ .iov_base = lines + 28, .iov_len = 14 };
	ck_assert_uint_eq(herd__link_chan_send(c, &iov, 1), 0);
	ck_assert_ptr_null(line_now(fx.far));
	ck_assert_int_eq(fx.dead, 0);
}
END_TEST

/* Another thread may read the link in the loop's place: lines reach their sockets, EOF ends it. */
START_TEST(test_pump)
{
	char c;

	far_send("1 {\"n\":1}\n");
	ck_assert_int_ge(herd__link_pump(&fx.link), 0);
	ck_assert_str_eq(line_now(fx.user), "{\"n\":1}");
	/* Nothing more there: the pump does not wait. */
	ck_assert_int_ge(herd__link_pump(&fx.link), 0);
	ck_assert_int_eq(recv(fx.user, &c, 1, MSG_DONTWAIT), -1);
	close(fx.far);
	fx.far = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_eq(herd__link_pump(&fx.link), 1);
	ck_assert_int_eq(fx.dead, 1);
	ck_assert_int_eq(herd__link_pump(&fx.link), -1);
}
END_TEST

HT_MAIN("link",
    { .name = "relay",
        .timeout_s = 30,
        .setup = setup,
        .teardown = teardown,
        .tests = { test_relay_both_ways, test_control_and_close, test_framing_error_ends_link,
            test_long_line_ends_link, test_eof_ends_link, test_heartbeats_and_silence,
            test_finish_shuts_the_write_side, test_window_holds_lines_back,
            test_delivery_grants_credit, test_window_overrun_ends_link, test_send_direct,
            test_send_direct_holds_for_credit, test_pump } })
