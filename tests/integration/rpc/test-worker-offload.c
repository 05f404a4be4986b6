/* SPDX-License-Identifier: MIT */
/*
 * Long work off the loop (herd_request_offload): a handler that computes for
 * 2 s on a pool thread while its worker keeps answering other calls and
 * heartbeats, then replies from the loop. And the write contract: an item
 * refused with -EAGAIN stays the writer's, to be written again on drain.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <check.h>

#include "ht-example.h"
#include "worker-args.h"

#define SPIN_MS 2000

struct spin {
	pthread_t loop_thread;
	long long ms; /* how long to compute */
	bool other_thread; /* work ran on a thread other than the loop's */
	long long spun_ms;
};

static long long
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Pool thread: computes (spins on the clock) for SPIN_MS; touches only arg. */
static void
spin_work(void *arg)
{
	struct spin *s = arg;
	long long start = mono_ms();
	volatile unsigned long x = 0;

	s->other_thread = !pthread_equal(pthread_self(), s->loop_thread);
	while (mono_ms() - start < s->ms)
		x++;
	s->spun_ms = mono_ms() - start;
}

/* What the last done function saw, by the server thread; read after ht_server_stop(). */
static int last_reply_r = 1;
static bool last_cancelled;

/* Loop thread: the reply. */
static void
spin_done(herd_request *req, void *arg)
{
	struct spin *s = arg;

	last_cancelled = herd_request_is_cancelled(req);
	last_reply_r = herd_request_reply(req,
	    json_pack("{s:b, s:I, s:b}", "other_thread", s->other_thread, "spun_ms",
	        (json_int_t)s->spun_ms, "on_loop", pthread_equal(pthread_self(), s->loop_thread)));
	free(s);
}

static void
fn_spin(herd_request *req, json_t *arg)
{
	struct spin *s = calloc(1, sizeof(*s));
	int r;

	if (!s) {
		herd_request_fail(req, "out of memory");
		return;
	}
	s->loop_thread = pthread_self();
	s->ms = json_is_integer(json_object_get(arg, "ms"))
	    ? (long long)json_integer_value(json_object_get(arg, "ms"))
	    : SPIN_MS;
	r = herd_request_offload(req, spin_work, spin_done, s);
	if (r < 0) {
		free(s);
		herd_request_fail(req, "offload: %s", strerror(-r));
	}
}

/* ---- the write contract ---- */

#define BIG_ITEMS 64
#define BIG_SIZE  (64 * 1024)

struct burst {
	json_t *item; /* our reference: written again after every -EAGAIN */
	int sent;
	int refused;
	json_int_t refcount_refused; /* the item's count right after a refusal */
};

static void burst_pump(herd_request *req, void *userdata);

/* Writes the same item, one reference per write, until the connection is full. */
static void
burst_pump(herd_request *req, void *userdata)
{
	struct burst *b = userdata;

	while (b->sent < BIG_ITEMS) {
		int r = herd_request_write(req, json_incref(b->item));

		if (r == -EAGAIN) {
			/* Not taken: the reference we handed is still ours. */
			b->refused++;
			b->refcount_refused = (json_int_t)b->item->refcount;
			json_decref(b->item);
			herd_request_on_drain(req, burst_pump, b);
			return;
		}
		if (r < 0)
			break;
		b->sent++;
	}
	herd_request_end(req,
	    json_pack("{s:i, s:i, s:I}", "sent", b->sent, "refused", b->refused, "refcount_refused",
	        b->refcount_refused));
	json_decref(b->item);
	free(b);
}

static void
fn_burst(herd_request *req, json_t *arg)
{
	struct burst *b = calloc(1, sizeof(*b));
	char *text = malloc(BIG_SIZE + 1);

	if (!b || !text) {
		free(b);
		free(text);
		herd_request_fail(req, "out of memory");
		return;
	}
	memset(text, 'x', BIG_SIZE);
	text[BIG_SIZE] = '\0';
	b->item = json_string(text);
	free(text);
	burst_pump(req, b);
}

static const struct herd_worker_type offload_type = {
	.name = "offload",
	.functions = WA_FUNCTIONS({ "spin", HERD_KIND_CALL, fn_spin },
	    { "echo", HERD_KIND_CALL, wa_echo }, { "burst", HERD_KIND_PIPE, fn_burst }),
};

static void
spin_outcome(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *error, void *userdata)
{
	ht_outcome_set(userdata, r, result, error);
}

/* Serves offload_type on a thread; returns a connection to it with settings (borrowed). */
static herd_conn *
offload_start(struct ht_server *s, json_t *settings)
{
	herd_conn *conn = NULL;

	ck_assert_int_eq(ht_server_start(s, &offload_type, NULL, NULL), 0);
	ck_assert_int_eq(herd_conn_connect(s->path, NULL, settings, &conn, NULL), 0);
	return conn;
}

/* The end of a test on offload_start()'s server: conn is still open; it closes, the server stops. */
static void
offload_stop(struct ht_server *s, herd_conn *conn)
{
	ck_assert_int_eq(herd_conn_is_closed(conn), 0);
	herd_conn_unref(conn);
	ck_assert_int_eq(ht_server_stop(s), 0);
}

START_TEST(test_offload_keeps_answering)
{
	struct ht_server s;
	/*
	 * Heartbeats every 100 ms, dead after 600 ms of silence: a blocked loop would lose us.
	 * Under valgrind the silence between two passes of a loop can be longer.
	 */
	int k = ht_valgrind_slow();
	herd_conn *conn = offload_start(&s,
	    ht_args("{s:i, s:i}", "heartbeat_interval_ms", 100, "heartbeat_timeout_ms",
	        k * ht_ms(600)));
	struct ht_outcome o = { 0 };
	struct herd_conn_stats before, after;
	int64_t start = ht_now_ms();
	int echoes = 0;

	ck_assert_int_eq(herd_conn_get_stats(conn, &before), 0);
	ck_assert_int_eq(herd_call_async(conn, "spin", NULL, spin_outcome, &o, NULL), 0);
	/* While the spin computes, other calls are answered at once. */
	while (o.calls == 0) {
		int64_t t = ht_now_ms();
		json_t *result = NULL;

		ck_assert_msg(t - start < ht_ms(10000), "the offloaded call never ended");
		ck_assert_int_eq(
		    herd_call(conn, "echo", ht_args("{s:i}", "n", echoes), HT_USEC(5000), &result),
		    0);
		ck_assert_int_eq(json_integer_value(json_object_get(result, "n")), echoes);
		json_decref(result);
		ck_assert_msg(ht_now_ms() - t < k * ht_ms(300), "an echo took %lld ms",
		    (long long)(ht_now_ms() - t));
		echoes++;
		ck_assert_int_ge(herd_conn_wait(conn, 50000), 0);
		ck_assert_int_ge(herd_conn_process(conn), 0);
	}
	ck_assert_int_eq(o.r, 0);
	ck_assert(json_is_true(json_object_get(o.result, "other_thread")));
	ck_assert(json_is_true(json_object_get(o.result, "on_loop")));
	ck_assert_int_ge(json_integer_value(json_object_get(o.result, "spun_ms")), SPIN_MS);
	ck_assert_int_ge(echoes, 5);
	/* The worker's heartbeats kept coming: more messages than the replies. */
	ck_assert_int_eq(herd_conn_get_stats(conn, &after), 0);
	ck_assert_msg(after.messages_in - before.messages_in > (uint64_t)echoes + 1 + 5,
	    "%llu messages for %d replies",
	    (unsigned long long)(after.messages_in - before.messages_in), echoes + 1);
	offload_stop(&s, conn);
}
END_TEST

START_TEST(test_write_refused_item_stays_callers)
{
	struct ht_server s;
	herd_conn *conn = offload_start(&s, NULL);
	herd_stream *st = NULL;
	json_t *item = NULL, *result;
	int n = 0, r;

	ck_assert_int_eq(herd_stream_open(conn, "burst", NULL, NULL, NULL, NULL, &st), 0);
	while ((r = herd_stream_next(st, HT_USEC(10000), &item)) == 1) {
		ck_assert_int_eq(json_string_length(item), BIG_SIZE);
		json_decref(item);
		n++;
	}
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(n, BIG_ITEMS);
	result = herd_stream_result(st);
	ck_assert_int_eq(json_integer_value(json_object_get(result, "sent")), BIG_ITEMS);
	/* The writer met backpressure, and a refused write left its item's count alone:
	 * its own reference plus the one it handed over and got back. */
	ck_assert_int_gt(json_integer_value(json_object_get(result, "refused")), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(result, "refcount_refused")), 2);
	herd_stream_unref(st);
	offload_stop(&s, conn);
}
END_TEST

/*
 * The caller goes away while the work runs: the work is not interrupted, the
 * done function still runs once (the server's loop waits for it), sees the
 * request cancelled, and its reply is refused.
 */
START_TEST(test_offload_caller_gone)
{
	struct ht_server s;
	herd_conn *conn = offload_start(&s, NULL);
	struct ht_outcome o = { 0 };

	ck_assert_int_eq(
	    herd_call_async(conn, "spin", ht_args("{s:i}", "ms", 300), spin_outcome, &o, NULL), 0);
	/* The worker took the spin once it answers the echo sent behind it. */
	ck_assert_int_eq(herd_call(conn, "echo", NULL, HT_USEC(5000), NULL), 0);
	herd_conn_unref(conn);
	ck_assert_int_eq(o.r, -ECONNRESET);
	ck_assert_int_eq(ht_server_stop(&s), 0);
	ck_assert_int_eq(last_reply_r, -ECANCELED);
	ck_assert(last_cancelled);
}
END_TEST

HT_MAIN("worker-offload",
    HT_CLIENT_CASE("offload", 60, 0, test_offload_keeps_answering,
        test_write_refused_item_stays_callers, test_offload_caller_gone))
