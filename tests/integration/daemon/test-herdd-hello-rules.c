/* SPDX-License-Identifier: MIT */
/*
 * Both servers of a hello, herdd's control socket and a worker's socket, take
 * the same settings (PROTOCOL.md 3.4): each hello below goes to herdd and to
 * a herd-testworker it spawned, and both must refuse it or both accept it.
 */
#include <stdio.h>
#include <string.h>

#include "ht-check.h"

/* The hello settings, and whether they are acceptable. */
static const struct {
	const char *settings;
	bool ok;
} cases[] = {
	{ "{}", true },
	/* Not 1024: herd-testworker's hello result (its functions, its features) is longer. */
	{ "{\"max_message_size\": 2048, \"heartbeat_interval_ms\": 50, "
	  "\"heartbeat_timeout_ms\": 400}",
	    true },
	{ "{\"heartbeat_interval_ms\": 86400000}", true },
	/* The worker used to take these four; herdd never did. */
	{ "{\"max_message_size\": 0}", false },
	{ "{\"max_message_size\": 1023}", false },
	{ "{\"max_message_size\": 1073741825}", false },
	{ "{\"heartbeat_interval_ms\": 4294967296}", false },
	{ "{\"heartbeat_timeout_ms\": 1000}", false },
	{ "{\"heartbeat_interval_ms\": 500, \"heartbeat_timeout_ms\": 500}", false },
	{ "{\"heartbeat_interval_ms\": -1}", false },
	{ "{\"spawn_timeout_ms\": 5}", false },
	{ "{\"max_message_size\": \"big\"}", false },
};

/* Says hello with settings on a fresh connection to path; true if accepted. */
static bool
hello_accepted(const char *path, const char *role, const char *settings)
{
	struct ht_conn *c = ht_conn_open(path);
	json_t *reply, *s = json_loads(settings, 0, NULL);
	bool ok;

	ck_assert(c && s);
	reply = ht_conn_hello(c, role, json_pack("{s:o}", "settings", s), ht_ms(5000));
	ck_assert_msg(reply, "no answer to hello %s as %s", settings, role);
	ok = ht_result(reply) != NULL;
	if (!ok) {
		ht_assert_error(reply, "invalid_params");
		ck_assert_int_eq(ht_conn_wait_eof(c, ht_ms(5000)), 0);
	}
	json_decref(reply);
	ht_conn_close(c);
	return ok;
}

START_TEST(test_same_rules)
{
	struct ht_daemon *d = ht_daemon_start_ok(NULL);
	struct ht_conn *c = ht_herdd_open(d, "master", "hello-rules");
	json_t *params = ht_testworker_params(NULL);
	char sock[256];
	json_t *sp;
	size_t i;

	ck_assert(c && params);
	sp = ht_spawn(c, params, ht_ms(10000));
	snprintf(sock, sizeof(sock), "%s", ht_str(ht_assert_result(sp), "socket"));
	json_decref(sp);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(hello_accepted(d->socket, "master", cases[i].settings) == cases[i].ok,
		    "herdd %s %s", cases[i].ok ? "refused" : "took", cases[i].settings);
		ck_assert_msg(hello_accepted(sock, "client", cases[i].settings) == cases[i].ok,
		    "the worker %s %s", cases[i].ok ? "refused" : "took", cases[i].settings);
	}
	ht_conn_close(c);
	ht_daemon_stop_ok(d);
}
END_TEST

HT_MAIN("herdd-hello-rules", HT_CASE("rules", 60, test_same_rules))
