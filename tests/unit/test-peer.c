/* SPDX-License-Identifier: MIT */
/*
 * The JSON-lines peer (libclient/common/peer.h) driven by its loop-independent
 * core over a socketpair: framing, the framing-error reply, flush-then-close,
 * deferred free, backpressure, heartbeats and the silence timeout; a reply
 * that cannot go answered by a stand-in, no heartbeat piling up behind
 * output that waits, an unfinished line that stops growing, and the other
 * side's last words read after a write to it failed; a budget of messages
 * per round, and lines the user encoded.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ht-check.h"
#include "peer.h"

struct rec {
	struct herd__peer peer;
	int messages, closed, released, drained;
	int reason;
	json_t *last;
	bool unref_in_message;
};

static int freed_total;

static void
rec_message(struct herd__peer *p, json_t *msg)
{
	struct rec *r = p->userdata;

	r->messages++;
	json_decref(r->last);
	r->last = json_incref(msg);
	if (r->unref_in_message) {
		int before = freed_total;

		r->unref_in_message = false;
		herd__peer_unref(p);
		/* Still alive until the callback returns. */
		ck_assert_int_eq(freed_total, before);
		ck_assert_int_eq(r->messages, 1);
	}
}

static void
rec_closed(struct herd__peer *p, int reason, const char *why)
{
	struct rec *r = p->userdata;

	r->closed++;
	r->reason = reason;
}

static void
rec_released(struct herd__peer *p)
{
	((struct rec *)p->userdata)->released++;
}

static void
rec_drained(struct herd__peer *p)
{
	((struct rec *)p->userdata)->drained++;
}

static void
rec_free(struct herd__peer *p)
{
	struct rec *r = p->userdata;

	freed_total++;
	json_decref(r->last);
	free(r);
}

/* A recording herd__peer_ops: a callback table like the daemon's and the worker's, data. */
static const struct herd__peer_ops rec_ops = {
	.message = rec_message,
	.closed = rec_closed,
	.released = rec_released,
	.drained = rec_drained,
	.free = rec_free,
};

/* A peer over one end of a socketpair; *ret_other is the test's end. */
static struct rec *
rec_new(int *ret_other)
{
	struct rec *r = calloc(1, sizeof(*r));
	int sv[2];

	ck_assert_ptr_nonnull(r);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
	herd__peer_init(&r->peer, sv[0], &rec_ops, r, 1024, 1 << 20);
	*ret_other = sv[1];
	return r;
}

/* The end of a test: the peer's last reference and the test's end of the pair go. */
static void
rec_end(struct rec *r, int other)
{
	herd__peer_unref(&r->peer);
	close(other);
}

/* Runs the peer as a loop would, until done() or ms pass. */
static void
run(struct rec *r, bool (*done)(struct rec *r), int ms)
{
	uint64_t end = herd__now_usec() + (uint64_t)ms * 1000;

	while (!done(r) && herd__now_usec() < end && !r->peer.released) {
		struct pollfd pfd = { .fd = r->peer.fd,
			.events = (short)herd__peer_events(&r->peer) };
		uint64_t t = herd__peer_timeout(&r->peer), now = herd__now_usec();

		if (t > end)
			t = end;
		poll(&pfd, 1, t > now ? (int)((t - now + 999) / 1000) : 0);
		herd__peer_process(&r->peer);
	}
}

static bool
two_messages(struct rec *r)
{
	return r->messages >= 2;
}

static bool
is_paused(struct rec *r)
{
	return r->peer.paused;
}

static bool
is_closed(struct rec *r)
{
	return r->closed > 0;
}

/* Writes text, whole, to the test's end of the pair. */
static void
send_text(int other, const char *text)
{
	ck_assert_int_eq(write(other, text, strlen(text)), (ssize_t)strlen(text));
}

/* What the peer wrote to other, up to its end, must hold text. */
static void
expect_sent(int other, const char *text)
{
	char buf[4096];

	ck_assert_int_ge(ht_read_all(other, buf, sizeof(buf), ht_ms(1000)), 0);
	ck_assert_msg(strstr(buf, text), "\"%s\" not in \"%s\"", text, buf);
}

START_TEST(test_messages_in_pieces)
{
	static const char text[] = "{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\n{\"jsonrpc\":\"2.0\",";
	int other;
	struct rec *r = rec_new(&other);

	send_text(other, text);
	send_text(other, "\"method\":\"b\"}\n");
	run(r, two_messages, 2000);
	ck_assert_int_eq(r->messages, 2);
	ck_assert_str_eq(json_string_value(json_object_get(r->last, "method")), "b");
	ck_assert_int_eq(r->closed, 0);
	rec_end(r, other);
}
END_TEST

START_TEST(test_framing_error_answered_then_closed)
{
	char buf[4096];
	int other, before = freed_total;
	struct rec *r = rec_new(&other);

	send_text(other, "not json\n");
	run(r, is_closed, 2000);
	ck_assert_int_eq(r->closed, 1);
	ck_assert_int_eq(r->reason, -EBADMSG);
	ck_assert_int_eq(r->released, 1);
	herd__peer_unref(&r->peer);
	ck_assert_int_eq(freed_total, before + 1);
	ck_assert_int_ge(ht_read_all(other, buf, sizeof(buf), ht_ms(1000)), 0);
	ck_assert_ptr_nonnull(strstr(buf, "\"id\":null"));
	ck_assert_ptr_nonnull(strstr(buf, "parse_error"));
	close(other);
}
END_TEST

START_TEST(test_close_flushes_then_releases)
{
	int other;
	struct rec *r = rec_new(&other);
	json_t *msg = proto_notification("bye", NULL);

	ck_assert_int_eq(herd__peer_queue(&r->peer, msg), 0);
	json_decref(msg);
	ck_assert(herd__peer_events(&r->peer) & POLLOUT);
	herd__peer_close(&r->peer, 0, NULL);
	herd__peer_close(&r->peer, 0, NULL);
	ck_assert_int_eq(r->closed, 1);
	ck_assert_int_eq(r->released, 1);
	expect_sent(other, "\"bye\"");
	rec_end(r, other);
}
END_TEST

START_TEST(test_unref_inside_callback_defers_free)
{
	int other, before = freed_total;
	struct rec *r = rec_new(&other);
	struct pollfd pfd = { .fd = r->peer.fd, .events = POLLIN };

	/* The only reference goes inside the callback; the free waits for its return. */
	r->unref_in_message = true;
	send_text(other, "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n");
	ck_assert_int_eq(poll(&pfd, 1, 2000), 1);
	herd__peer_process(&r->peer);
	ck_assert_int_eq(freed_total, before + 1);
	close(other);
}
END_TEST

START_TEST(test_backpressure)
{
	char buf[65536];
	int other, i;
	struct rec *r = rec_new(&other);
	json_t *msg = json_pack("{s:s, s:s, s:{s:s}}", "jsonrpc", "2.0", "method", "fill", "params",
	    "pad", "0123456789012345678901234567890123456789012345678901234567890123");
	int sndbuf = 4096;

	setsockopt(r->peer.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	herd__peer_set_water(&r->peer, 2048, 512);
	for (i = 0; i < 2000; i++)
		ck_assert_int_eq(herd__peer_send(&r->peer, msg), 0);
	json_decref(msg);
	/* A message that finds the output full waits, and reading with it. */
	send_text(other, "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n");
	run(r, is_paused, 2000);
	ck_assert(r->peer.paused);
	ck_assert_int_eq(r->messages, 0);
	ck_assert_int_eq(herd__peer_events(&r->peer), POLLOUT);
	/* The other side reads: the queue drains, and the peer reads again. */
	while (r->peer.paused) {
		struct pollfd pfd = { .fd = other, .events = POLLIN };

		ck_assert_int_eq(poll(&pfd, 1, 2000), 1);
		ck_assert_int_gt(read(other, buf, sizeof(buf)), 0);
		herd__peer_process(&r->peer);
	}
	ck_assert_int_gt(r->drained, 0);
	ck_assert_int_eq(r->messages, 1);
	ck_assert(herd__peer_events(&r->peer) & POLLIN);
	rec_end(r, other);
}
END_TEST

START_TEST(test_heartbeat_then_silence)
{
	int other;
	struct rec *r = rec_new(&other);

	herd__peer_set_heartbeat(&r->peer, 20, 150);
	run(r, is_closed, 3000);
	ck_assert_int_eq(r->reason, -ETIMEDOUT);
	expect_sent(other, "\"heartbeat\"");
	rec_end(r, other);
}
END_TEST

START_TEST(test_eof_closes)
{
	int other;
	struct rec *r = rec_new(&other);

	close(other);
	run(r, is_closed, 2000);
	ck_assert_int_eq(r->reason, -ECONNRESET);
	ck_assert_int_eq(r->released, 1);
	herd__peer_unref(&r->peer);
}
END_TEST

/* n arrays, each inside the next: deeper than the peer encodes when n > HERD_MAX_DEPTH. */
static json_t *
nested(int n)
{
	json_t *v = json_array();

	for (int i = 1; i < n && v; i++)
		v = json_pack("[o]", v);
	ck_assert_ptr_nonnull(v);
	return v;
}

START_TEST(test_reply_standins)
{
	char buf[4096], big[2048];
	int other;
	struct rec *r = rec_new(&other);
	json_t *id7 = json_integer(7), *id8 = json_integer(8), *id9 = json_integer(9), *msg;

	/* Not encodable (too deep): internal_error with the same id, and the reason. */
	msg = proto_result(id7, nested(HERD_MAX_DEPTH + 10));
	ck_assert_int_eq(herd__peer_send(&r->peer, msg), -EINVAL);
	json_decref(msg);
	/* Longer than the other side's limit (1024): limit_exceeded with the same id. */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	msg = proto_result(id8, json_string(big));
	ck_assert_int_eq(herd__peer_send(&r->peer, msg), -EMSGSIZE);
	json_decref(msg);
	/* A reply that could not be built is answered too. */
	msg = herd__peer_standin(&r->peer, id9, -ENOMEM);
	ck_assert_int_eq(herd__peer_send(&r->peer, msg), 0);
	json_decref(msg);
	/* A notification is not a reply: it is only refused. */
	msg = proto_notification("note", json_pack("{s:s}", "t", big));
	ck_assert_int_eq(herd__peer_send(&r->peer, msg), -EMSGSIZE);
	json_decref(msg);
	herd__peer_close(&r->peer, 0, NULL);
	ck_assert_int_ge(ht_read_all(other, buf, sizeof(buf), ht_ms(1000)), 0);
	ck_assert_msg(strstr(buf, "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\"") &&
	        strstr(buf, "internal_error") && strstr(buf, "could not be encoded"),
	    "%s", buf);
	ck_assert_msg(strstr(buf, "{\"jsonrpc\":\"2.0\",\"id\":8,\"error\"") &&
	        strstr(buf, "\"limit\":\"max_message_size\""),
	    "%s", buf);
	ck_assert_msg(
	    strstr(buf, "{\"jsonrpc\":\"2.0\",\"id\":9,\"error\"") && strstr(buf, "out of memory"),
	    "%s", buf);
	ck_assert_msg(!strstr(buf, "note"), "%s", buf);
	json_decref(id7);
	json_decref(id8);
	json_decref(id9);
	rec_end(r, other);
}
END_TEST

START_TEST(test_no_heartbeat_while_output_waits)
{
	int other, sndbuf = 4096;
	struct rec *r = rec_new(&other);
	json_t *msg = proto_notification("fill", json_pack("{s:s}", "pad", "0123456789abcdef"));
	size_t queued;

	setsockopt(r->peer.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	/* The other side reads nothing: the socket fills, the rest waits in the queue. */
	while (r->peer.outq.bytes == 0)
		ck_assert_int_eq(herd__peer_send(&r->peer, msg), 0);
	json_decref(msg);
	queued = r->peer.outq.bytes;
	herd__peer_set_heartbeat(&r->peer, 1, 0);
	run(r, is_closed, 200);
	ck_assert_uint_eq(r->peer.outq.bytes, queued);
	/* Nor from another thread's keepalive. */
	herd__peer_keepalive(&r->peer, herd__now_usec() + 10000);
	ck_assert_uint_eq(r->peer.outq.bytes, queued);
	rec_end(r, other);
}
END_TEST

START_TEST(test_unfinished_line_times_out)
{
	int other;
	struct rec *r = rec_new(&other);
	uint64_t t0;

	herd__peer_set_line_timeout(&r->peer, 100);
	/* Whole lines and silence are not a stall. */
	send_text(other, "{\"jsonrpc\":\"2.0\",\"method\":\"a\"}\n");
	run(r, is_closed, 300);
	ck_assert_int_eq(r->closed, 0);
	send_text(other, "{\"jsonrpc\":\"2.0\",\"method\":");
	t0 = herd__now_usec();
	run(r, is_closed, 3000);
	ck_assert_int_eq(r->reason, -ETIMEDOUT);
	ck_assert_uint_ge(herd__now_usec() - t0, 100000);
	expect_sent(other, "\"what\":\"line\"");
	rec_end(r, other);
}
END_TEST

/*
 * The other side said its last words and went; our next write fails. What it
 * said is still handed out before the session ends (a worker's failure report
 * racing herdd's write to its channel).
 */
START_TEST(test_last_words_survive_a_failed_write)
{
	int other;
	struct rec *r = rec_new(&other);
	json_t *msg = proto_notification("shutdown", NULL);

	send_text(other, "{\"jsonrpc\":\"2.0\",\"method\":\"failure\"}\n");
	close(other);
	(void)herd__peer_send(&r->peer, msg);
	json_decref(msg);
	run(r, is_closed, 2000);
	ck_assert_int_eq(r->closed, 1);
	ck_assert_int_eq(r->messages, 1);
	ck_assert_str_eq(json_string_value(json_object_get(r->last, "method")), "failure");
	herd__peer_unref(&r->peer);
}
END_TEST

/* A budget hands out that many a round, defers the rest (due at once), and loses none at EOF. */
START_TEST(test_budget_defers_the_rest)
{
	char text[1024] = "";
	int other;
	struct rec *r = rec_new(&other);

	for (int i = 0; i < 10; i++)
		strcat(text, "{\"jsonrpc\":\"2.0\",\"method\":\"m\"}\n");
	send_text(other, text);
	shutdown(other, SHUT_WR);
	r->peer.budget = 3;
	/* The first round reads and hands out 3; the rest wait in the reader, nothing more is read. */
	ck_assert_int_eq(poll(&(struct pollfd){ .fd = r->peer.fd, .events = POLLIN }, 1, 1000), 1);
	herd__peer_process(&r->peer);
	ck_assert_int_eq(r->messages, 3);
	ck_assert(r->peer.deferred);
	ck_assert_int_eq(herd__peer_events(&r->peer) & POLLIN, 0);
	ck_assert_int_eq(herd__peer_timeout(&r->peer), 0);
	herd__peer_process(&r->peer);
	ck_assert_int_eq(r->messages, 6);
	/* The EOF behind them is read only once every message went out. */
	run(r, is_closed, 2000);
	ck_assert_int_eq(r->messages, 10);
	rec_end(r, other);
}
END_TEST

/* A line the user encoded goes as it is; a reply too long for the other side becomes the stand-in. */
START_TEST(test_queue_line)
{
	static const char line[] = "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n";
	char big[2048];
	json_t *id = json_integer(8);
	int other;
	struct rec *r = rec_new(&other);

	ck_assert_int_eq(herd__peer_queue_line(&r->peer, line, strlen(line), id), 0);
	memset(big, ' ', sizeof(big));
	big[0] = '{';
	big[sizeof(big) - 2] = '}';
	big[sizeof(big) - 1] = '\n';
	ck_assert_int_eq(herd__peer_queue_line(&r->peer, big, sizeof(big), id), -EMSGSIZE);
	ck_assert_int_eq(herd__peer_flush(&r->peer, 1000), 0);
	shutdown(r->peer.fd, SHUT_WR);
	expect_sent(other,
	    "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n{\"jsonrpc\":\"2.0\",\"id\":8,"
	    "\"error\":");
	json_decref(id);
	rec_end(r, other);
}
END_TEST

HT_MAIN("peer",
    HT_CASE("core", 10, test_messages_in_pieces, test_framing_error_answered_then_closed,
        test_close_flushes_then_releases, test_unref_inside_callback_defers_free, test_backpressure,
        test_heartbeat_then_silence, test_eof_closes, test_reply_standins,
        test_no_heartbeat_while_output_waits, test_unfinished_line_times_out,
        test_last_words_survive_a_failed_write, test_budget_defers_the_rest, test_queue_line))
