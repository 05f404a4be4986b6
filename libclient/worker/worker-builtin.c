/* SPDX-License-Identifier: MIT */
/*
 * The functions every worker serves under the reserved prefix "herd.", and
 * lookups in a worker type's function table.
 */
#include <errno.h>
#include <string.h>

#include "worker/worker-internal.h"

static struct herd_server *
req_server(herd_request *req)
{
	return req->conn->srv;
}

/* Built-ins take no arguments: absent, null or {}. */
static bool
no_params(herd_request *req, json_t *arg)
{
	struct proto_error err;

	if (proto_unpack(json_is_null(arg) ? NULL : arg, &err, "{}") == 0)
		return true;
	herd_request_error(
	    req, HERD_E_INVALID_PARAMS, NULL, "%s takes no parameters", herd_request_function(req));
	return false;
}

static void
builtin_functions(herd_request *req, json_t *arg)
{
	if (no_params(req, arg))
		herd_request_reply(req, herd__functions_json(req_server(req)));
}

static void
builtin_shutdown(herd_request *req, json_t *arg)
{
	if (!no_params(req, arg))
		return;
	herd_log(HERD_LOG_INFO, "shutdown requested by a client");
	herd_request_reply(req, json_object());
	herd__server_request_shutdown(req_server(req));
}

static void
builtin_close_server(herd_request *req, json_t *arg)
{
	if (!no_params(req, arg))
		return;
	herd_request_reply(req, json_object());
	herd__server_stop_accepting(req_server(req));
}

static void
builtin_settings(herd_request *req, json_t *arg)
{
	struct herd_server *srv = req_server(req);
	json_t *s;

	if (!no_params(req, arg))
		return;
	s = herd__settings_to_json(&srv->settings);
	if (s) {
		json_object_set_new(s, "max_pending", json_integer(srv->max_pending));
		json_object_set_new(s, "max_output", json_integer((json_int_t)srv->max_output));
	}
	herd_request_reply(req, s);
}

/* A pipe of log items until the caller cancels it (log.c writes them). */
static void
builtin_logs(herd_request *req, json_t *arg)
{
	if (no_params(req, arg))
		herd__log_subscribe(req);
}

/* A function table like every worker type's: data, one row per function. */
static const struct herd_function builtins[] = {
	{ "herd.functions", HERD_KIND_CALL, builtin_functions },
	{ "herd.shutdown", HERD_KIND_CALL, builtin_shutdown },
	{ "herd.close_server", HERD_KIND_CALL, builtin_close_server },
	{ "herd.logs", HERD_KIND_PIPE, builtin_logs },
	{ "herd.settings", HERD_KIND_CALL, builtin_settings },
	{ "herd.fold", HERD_KIND_CALL, herd__builtin_fold },
	{ "herd.take", HERD_KIND_CALL, herd__builtin_take },
	{ "herd.batch", HERD_KIND_CALL, herd__builtin_batch },
};

static const struct herd_function *
function_in(const struct herd_function *table, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(table[i].name, name) == 0)
			return &table[i];
	return NULL;
}

const struct herd_function *
herd__builtin_find(const char *method)
{
	return function_in(builtins, PROTO_LEN(builtins), method);
}

const struct herd_function *
herd__function_find(const struct herd_server *srv, const char *name)
{
	return function_in(srv->type->functions, srv->n_functions, name);
}

json_t *
herd__functions_json(const struct herd_server *srv)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < srv->n_functions; i++) {
		const struct herd_function *f = &srv->type->functions[i];

		if (json_array_append_new(a,
		        json_pack("{s:s, s:s}", "name", f->name, "kind", herd_kind_name(f->kind))) <
		    0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}
