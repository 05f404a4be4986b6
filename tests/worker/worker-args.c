/* SPDX-License-Identifier: MIT */
/* Argument unpacking and connection state shared by the test workers. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <herd/protocol.h>

#include "worker-args.h"

int
wa_unpack(herd_request *req, json_t *arg, const char *fmt, ...)
{
	json_error_t err;
	json_t *empty = NULL;
	va_list ap;
	int r;

	if (json_is_null(arg))
		arg = empty = json_object();
	va_start(ap, fmt);
	r = json_vunpack_ex(arg, &err, JSON_STRICT, fmt, ap);
	va_end(ap);
	json_decref(empty);
	if (r < 0) {
		herd_request_error(req, HERD_E_INVALID_PARAMS, NULL, "%s", err.text);
		return -EINVAL;
	}
	return 0;
}

int
wa_state_new(
    json_t *arg, const char *fail_key, size_t size, void **ret_state, char **reterr_message)
{
	const char *fail = json_string_value(json_object_get(arg, fail_key));
	json_t **state;

	if (fail)
		return herd_init_fail(reterr_message, "%s", fail);
	state = calloc(1, size);
	if (!state)
		return -ENOMEM;
	*state = json_incref(arg);
	*ret_state = state;
	return 0;
}

int
wa_init_conn(void *worker_state, json_t *arg, void **ret_state, char **reterr_message)
{
	(void)worker_state;
	return wa_state_new(arg, "fail_conn", sizeof(struct wa_conn), ret_state, reterr_message);
}

void
wa_free_conn(void *worker_state, void *conn_state)
{
	struct wa_conn *c = conn_state;

	(void)worker_state;
	if (c) {
		json_decref(c->init);
		free(c);
	}
}

/* A crash on purpose: sig's default action, no core file. */
void
wa_die_by(int sig)
{
	struct rlimit no_core = { 0, 0 };
	sigset_t set;

	setrlimit(RLIMIT_CORE, &no_core);
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(sig);
}
