/* SPDX-License-Identifier: MIT */
/*
 * Local mode (herd_map_reduce()'s "local": true, like Ray's local_mode): every
 * task runs in this process through the worker type's own functions, as a
 * real request whose answer goes to a hook instead of a socket, and folds
 * into an accumulator exactly as herd.fold does (herd_request_acc() adds in
 * place). A program's sequential check is then its parallel code minus the
 * pool, and a worker function can be stepped through under gdb.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker-internal.h"

#define LOCAL_ACC "local"

struct local_run {
	struct herd_server *srv;
	herd_combine_fn combine;
	bool answered;
	herd_error *err;
};

/* A task's answer: its result goes into the accumulator; its error ends the run. */
static void
local_answered(herd_request *req, json_t *result, json_t *error)
{
	struct local_run *run = req->hook_data;

	run->answered = true;
	if (error)
		run->err = herd__error_new((int)json_integer_value(json_object_get(error, "code")),
		    json_string_value(json_object_get(error, "message")),
		    json_object_get(error, "data"));
	else if (herd__acc_fold(run->srv, req, run->combine, result) < 0)
		run->err = herd__error_newf(HERD_E_FUNCTION_FAILED, "the combine function failed");
	json_decref(result);
	json_decref(error);
}

/* The local connection's last reference went: free it as worker-conn.c frees one. */
static void
local_conn_free(struct herd__peer *p)
{
	struct srv_conn *c = p->userdata;
	struct herd_server *srv = c->srv;

	if (c->conn_state_set && srv->type->free_conn)
		srv->type->free_conn(srv->worker_state, c->conn_state);
	free(c);
	herd__server_conn_freed(srv);
}

/* Never attached to a loop: nothing is read, only freed. */
static const struct herd__peer_ops local_conn_ops = {
	.free = local_conn_free,
};

/* A connection with no socket for the requests to hang on, its state initialised. */
static struct srv_conn *
local_conn_new(struct herd_server *srv, herd_error **ret_err)
{
	struct srv_conn *c = calloc(1, sizeof(*c));
	char *msg = NULL;
	int r = 0;

	if (!c)
		return NULL;
	herd__peer_init(&c->peer, -1, &local_conn_ops, c, srv->settings.max_message_size, 0);
	c->peer.eof = true;
	c->srv = srv;
	c->state = SCONN_OPEN;
	srv->n_live++;
	if (srv->type->init_conn)
		r = srv->type->init_conn(srv->worker_state, json_null(), &c->conn_state, &msg);
	c->conn_state_set = r == 0;
	if (r < 0) {
		*ret_err = herd__error_newf(HERD_E_INIT_FAILED, "%s", msg ? msg : strerror(-r));
		free(msg);
		herd__sconn_unref(c);
		return NULL;
	}
	return c;
}

/* Runs one task to its answer on the server's loop; false when it can never answer. */
static bool
local_task(struct local_run *run, struct srv_conn *c, const struct herd_function *fn, size_t i,
    json_t *arg)
{
	json_t *id = json_integer((json_int_t)i);
	herd_request *req = herd__request_new(c, fn, id, arg);

	json_decref(id);
	if (!req) {
		run->err = herd__error_newf(HERD_E_INTERNAL_ERROR, "out of memory");
		return false;
	}
	req->acc_key = LOCAL_ACC;
	req->answer_hook = local_answered;
	req->hook_data = run;
	run->answered = false;
	herd__request_dispatch(req);
	/* A function that answers later (offload, a timer) does so from the loop. */
	while (!run->answered && ev_run(run->srv->loop, EVRUN_ONCE))
		;
	if (!run->answered)
		herd__request_cancel_inner(req);
	herd_request_unref(req);
	return run->answered;
}

/* Every task of args in turn, stopping at the first error; the accumulator into *ret_value. */
static int
local_run_all(struct local_run *run, const char *function, json_t *args, json_t **ret_value)
{
	const struct herd_function *fn = herd__function_find(run->srv, function);
	struct srv_conn *c;
	json_t *arg;
	size_t i;

	if (!fn || fn->kind != HERD_KIND_CALL) {
		run->err =
		    herd__error_newf(HERD_E_METHOD_NOT_FOUND, "no call function %s", function);
		return -EREMOTEIO;
	}
	c = local_conn_new(run->srv, &run->err);
	if (!c)
		return run->err ? -EREMOTEIO : -ENOMEM;
	json_array_foreach(args, i, arg) {
		if (!local_task(run, c, fn, i, arg) && !run->err)
			run->err = herd__error_newf(
			    HERD_E_INTERNAL_ERROR, "function %s never answered", function);
		if (run->err)
			break;
	}
	herd__sconn_unref(c);
	if (herd__acc_take(run->srv, LOCAL_ACC, ret_value) < 0 && !run->err)
		run->err = herd__error_newf(HERD_E_FUNCTION_FAILED, "the combine function failed");
	if (!*ret_value)
		*ret_value = json_null();
	return run->err ? herd__error_to_errno(herd_error_code(run->err)) : 0;
}

int
herd__local_reduce(const struct herd_worker_type *type, const char *function, json_t *args,
    const char *combiner, herd_combine_fn combine, json_t **ret_value, herd_error **ret_err)
{
	struct local_run run = { .combine = combiner ? NULL : combine };
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char *msg = NULL;
	int r;

	*ret_value = NULL;
	*ret_err = NULL;
	if (!loop)
		return -ENOMEM;
	r = herd__server_new(loop, type, NULL, NULL, &run.srv, &msg);
	if (r < 0 && msg)
		run.err = herd__error_newf(HERD_E_INIT_FAILED, "worker init failed: %s", msg);
	if (r == 0 && combiner && !(run.combine = herd__combiner_find(type, combiner))) {
		run.err = herd__error_newf(
		    HERD_E_METHOD_NOT_FOUND, "this worker declares no combine %s", combiner);
		r = -EREMOTEIO;
	}
	if (r == 0)
		r = local_run_all(&run, function, args, ret_value);
	if (r < 0) {
		json_decref(*ret_value);
		*ret_value = NULL;
	}
	herd_server_unref(run.srv);
	ev_loop_destroy(loop);
	free(msg);
	*ret_err = run.err;
	return r;
}
