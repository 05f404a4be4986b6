/* SPDX-License-Identifier: MIT */
/*
 * What the two test workers (herd-testworker, the example worker in
 * tests/helpers) share: strict argument unpacking, the start of their worker
 * state, the connection state that keeps the client's init argument, and the
 * functions they serve alike; and how the tests' in-process workers write
 * their function tables (WA_FUNCTIONS).
 */
#ifndef HERD_TEST_WORKER_ARGS_H
#define HERD_TEST_WORKER_ARGS_H

#include <jansson.h>

#include <herd/worker.h>

/*
 * The function table of a worker type, written in its declaration: the rows
 * (struct herd_function initializers) and the NULL row that ends them, as
 * an array of static storage (a compound literal at file scope). Every test
 * that serves a small worker type in-process declares it this way:
 *   static const struct herd_worker_type t = {
 *           .name = "t",
 *           .functions = WA_FUNCTIONS({ "f", HERD_KIND_CALL, fn_f }),
 *   };
 * Programs meant to be read as examples (examples/, tests/install/) spell
 * the two tables out, as the public header documents them.
 */
#define WA_FUNCTIONS(...) ((const struct herd_function[]){ __VA_ARGS__, { NULL, 0, NULL } })
/* The combiner table of a worker type, likewise: rows and the NULL row. */
#define WA_COMBINERS(...) ((const struct herd_combiner[]){ __VA_ARGS__, { NULL, NULL } })

/* A connection's state: the client's init argument and the calls made on it. */
struct wa_conn {
	json_t *init;
	long calls;
};

/* The start of both test workers' states (a worker may add members after it). */
struct wa_worker {
	json_t *init; /* the worker init argument; first, for wa_state_new */
	long served; /* calls handled so far */
	long cancelled; /* streams that saw a cancel */
};

/*
 * Counts a call on its worker and on its connection, each where it has a
 * state (a type without init callbacks has none); returns the worker's state.
 */
struct wa_worker *wa_begin(herd_request *req);

/* A stream saw a cancel: counted, and logged at debug level as "<function>: cancelled". */
void wa_cancelled(herd_request *req);

/*
 * Unpacks a function's argument strictly (unknown members are refused); a
 * missing argument (JSON null) reads as {}. On failure the request is answered
 * with invalid_params and -EINVAL is returned.
 */
int wa_unpack(herd_request *req, json_t *arg, const char *fmt, ...);

/*
 * A new zeroed state of size bytes for an init callback, whose first member is
 * json_t *init: set to arg (a new reference). Fails the init with MSG when arg
 * is {fail_key: MSG}. Returns 0, the herd_init_fail() error or -ENOMEM.
 */
int wa_state_new(
    json_t *arg, const char *fail_key, size_t size, void **ret_state, char **reterr_message);

/* size zeroed bytes, or NULL with req answered "out of memory". */
void *wa_calloc(herd_request *req, size_t size);

/* Frees a wa_state_new() state (NULL is fine): its init argument, then itself. */
void wa_state_free(void *state);

/* The herd_worker_type's init_conn: fails with MSG when arg is {"fail_conn": MSG}. */
int wa_init_conn(void *worker_state, json_t *arg, void **ret_state, char **reterr_message);

/* The herd_worker_type's free_conn. */
void wa_free_conn(void *worker_state, void *conn_state);

/*
 * Ends the process by sig's default action, not a sanitizer's handler, and
 * leaves no core file: a crash on purpose. Returns only if sig did not end it.
 */
void wa_die_by(int sig);

/* ---- functions both test workers serve ---- */

/* echo ANY (call): returns its argument. The in-process test workers serve it too. */
void wa_echo(herd_request *req, json_t *arg);
/* fail {message?} (call): fails with message, by default "failed on purpose". */
void wa_fail(herd_request *req, json_t *arg);
/* A sink of integers (sum_stream, total): the result is their sum; a non-integer fails it. */
void wa_sum_items(herd_request *req, json_t *arg);
/*
 * sleep {ms} (call): replies {key: ms} from a timer on the request's loop
 * after ms milliseconds; a cancel stops the timer (wa_cancelled).
 */
void wa_sleep(herd_request *req, json_t *arg, const char *key);

#endif
