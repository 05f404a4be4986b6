/* SPDX-License-Identifier: MIT */
/*
 * "spawn": checks every parameter, then hands a complete record to the
 * supervisor. The reply comes later, when the worker is ready or gone.
 * Sizes are bounded below the kernel's exec limits (MAX_ARG_STRLEN 128 KiB)
 * so a spawn that passed validation does not fail with E2BIG.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "herdd.h"

#define MAX_ARGS       256
#define MAX_ENV        256
#define MAX_STRING     (32u * 1024u)
#define MAX_EXEC_BYTES (256u * 1024u)
#define MAX_NAME       256
/* A settings field that was not given. */
#define UNSET INT64_MIN

struct spawn_args {
	const char *path, *name, *pool, *cwd, *shutdown_on, *ready;
	json_t *argv, *env, *out[2], *init, *settings, *restart, *limits;
	json_int_t umask, spawn_timeout_ms, connection_timeout_ms;
	int pid_namespace;
};

/* Says why a parameter is refused; returns -EINVAL. */
static int invalid(char *why, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
invalid(char *why, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	proto_text_vformat(why, len, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static bool
absolute_path(const char *p)
{
	return p[0] == '/' && strlen(p) < PATH_MAX;
}

/* A string without embedded NUL and within the size limit. */
static bool
plain_string(const json_t *s)
{
	return json_is_string(s) && json_string_length(s) == strlen(json_string_value(s)) &&
	    json_string_length(s) <= MAX_STRING;
}

static bool
env_name_ok(const char *k)
{
	const char *p;

	if (!((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
		return false;
	for (p = k + 1; *p; p++) {
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		        (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	}
	return p - k <= 256;
}

/*
 * Whether a file output without caps of its own gets herdd's default ones:
 * only a regular file, or one still to be created. A FIFO, a terminal or
 * /dev/null is handed to the worker as before (renaming one would be wrong).
 */
static bool
output_default_caps(const char *path)
{
	struct stat st;

	if (herdd.cfg.output_max_bytes == 0)
		return false;
	if (stat(path, &st) < 0)
		return errno == ENOENT;
	return S_ISREG(st.st_mode);
}

static int
parse_output(json_t *v, struct output_spec *o, char *why, size_t len)
{
	struct proto_error err;
	const char *file = NULL;
	json_int_t max_bytes = -1, max_files = -1;
	int append = 0;

	if (!v)
		return 0;
	if (json_is_string(v)) {
		if (!strcmp(json_string_value(v), "null"))
			o->kind = OUT_NULL;
		else if (!strcmp(json_string_value(v), "capture"))
			o->kind = OUT_CAPTURE;
		else
			goto bad;
		return 0;
	}
	if (proto_unpack(v, &err, "{s:s, s?b, s?I, s?I}", "file", &file, "append", &append,
	        "max_bytes", &max_bytes, "max_files", &max_files) < 0 ||
	    !absolute_path(file))
		goto bad;
	/* max_bytes 0: no cap, the worker holds the file. */
	if ((max_bytes != -1 && max_bytes != 0 &&
	        (max_bytes < OUTPUT_MIN_BYTES || max_bytes > (json_int_t)OUTPUT_MAX_BYTES)) ||
	    (max_files != -1 && (max_files < 1 || max_files > OUTPUT_MAX_FILES))) {
		snprintf(why, len, "max_bytes must be 0 (no cap) or %u..%llu and max_files 1..%u",
		    OUTPUT_MIN_BYTES, (unsigned long long)OUTPUT_MAX_BYTES, OUTPUT_MAX_FILES);
		return -EINVAL;
	}
	o->kind = OUT_FILE;
	o->path = strdup(file);
	o->append = append;
	/* Each member the spawn leaves out takes herdd's default. */
	if (max_bytes == -1 && max_files == -1 && !output_default_caps(file))
		max_bytes = 0;
	o->max_bytes = max_bytes != -1 ? (uint64_t)max_bytes
	                               : (herdd.cfg.output_max_bytes ?: OUTPUT_DEFAULT_BYTES);
	o->max_files = max_files != -1 ? (unsigned)max_files : herdd.cfg.output_max_files;
	if (!o->max_bytes)
		o->max_files = 0;
	return o->path ? 0 : -ENOMEM;
bad:
	snprintf(why, len,
	    "must be \"null\", \"capture\" or {\"file\": ABSOLUTE_PATH, \"append\": BOOL, "
	    "\"max_bytes\": N, \"max_files\": N}");
	return -EINVAL;
}

/*
 * The worker's effective settings: herdd's own overridden field by field by
 * the spawn's settings, then by its top-level timeouts (PROTOCOL.md 3.3 and
 * 4.2), all with proto's table.
 */
static int
parse_settings(const struct spawn_args *a, struct worker *w, char *why, size_t len)
{
	struct proto_settings s = herdd.cfg.worker_settings;
	struct proto_settings_error err;

	if (proto_settings_apply(&s, a->settings, "settings", &err) < 0 ||
	    (a->spawn_timeout_ms != UNSET &&
	        proto_settings_set(
	            &s, PROTO_SET_SPAWN_TIMEOUT_MS, a->spawn_timeout_ms, "spawn", &err) < 0) ||
	    (a->connection_timeout_ms != UNSET &&
	        proto_settings_set(&s, PROTO_SET_CONNECTION_TIMEOUT_MS, a->connection_timeout_ms,
	            "spawn", &err) < 0) ||
	    proto_settings_check(&s, "settings", &err) < 0)
		return invalid(why, len, "%s", err.text);
	w->settings = proto_settings_to_json(&s);
	if (!w->settings)
		return -ENOMEM;
	w->hb_interval_ms = s.heartbeat_interval_ms;
	w->hb_timeout_ms = s.heartbeat_timeout_ms;
	w->spawn_timeout_ms = s.spawn_timeout_ms;
	w->connection_timeout_ms = s.connection_timeout_ms;
	return 0;
}

/* argv: 1 to MAX_ARGS plain strings (default [path]); adds their bytes to *total. */
static int
fill_argv(struct worker *w, const struct spawn_args *a, size_t *total, char *why, size_t len)
{
	size_t i;
	json_t *v;

	if (!a->argv) {
		w->argv = json_pack("[s]", a->path);
		return 0;
	}
	if (!json_is_array(a->argv) || json_array_size(a->argv) == 0 ||
	    json_array_size(a->argv) > MAX_ARGS)
		return invalid(why, len, "argv must be an array of 1 to %d strings", MAX_ARGS);
	json_array_foreach(a->argv, i, v) {
		if (!plain_string(v))
			return invalid(why, len, "argv[%zu] must be a string (at most %u bytes)", i,
			    MAX_STRING);
		*total += json_string_length(v) + 1;
	}
	w->argv = json_incref(a->argv);
	return 0;
}

/* env: at most MAX_ENV valid, unreserved names; adds their bytes to *total. */
static int
fill_env(struct worker *w, const struct spawn_args *a, size_t *total, char *why, size_t len)
{
	const char *key;
	json_t *v;

	if (!a->env) {
		w->env = json_object();
		return 0;
	}
	if (!json_is_object(a->env) || json_object_size(a->env) > MAX_ENV)
		return invalid(why, len, "env must be an object of at most %d strings", MAX_ENV);
	json_object_foreach(a->env, key, v) {
		if (!env_name_ok(key))
			return invalid(why, len, "env name \"%.*s\" is not a valid name",
			    proto_text_prec(key, 64), key);
		if (!strncmp(key, "HERD_", 5))
			return invalid(why, len,
			    "env names starting with HERD_ are reserved (%.*s)",
			    proto_text_prec(key, 64), key);
		/* The service manager's variables would make a worker talk to it as herdd. */
		if (!strcmp(key, "NOTIFY_SOCKET") || !strncmp(key, "LISTEN_", 7) ||
		    !strncmp(key, "WATCHDOG_", 9))
			return invalid(why, len, "env %.*s is reserved for the service manager",
			    proto_text_prec(key, 64), key);
		if (!plain_string(v))
			return invalid(why, len, "env %.*s must be a string (at most %u bytes)",
			    proto_text_prec(key, 64), key, MAX_STRING);
		*total += strlen(key) + json_string_length(v) + 2;
	}
	w->env = json_incref(a->env);
	return 0;
}

/* path, argv, env, cwd: what exec needs, within the kernel's limits. */
static int
fill_exec(struct worker *w, const struct spawn_args *a, char *why, size_t len)
{
	size_t total = 0;
	int r;

	if (!absolute_path(a->path))
		return invalid(why, len, "path must be an absolute path");
	r = fill_argv(w, a, &total, why, len);
	if (r == 0)
		r = fill_env(w, a, &total, why, len);
	if (r < 0)
		return r;
	if (total > MAX_EXEC_BYTES)
		return invalid(why, len, "argv and env hold more than %u bytes", MAX_EXEC_BYTES);
	if (a->cwd && !absolute_path(a->cwd))
		return invalid(why, len, "cwd must be an absolute path");
	return 0;
}

/* umask, name, pool, stdout/stderr, shutdown_on, ready and limits. */
static int
fill_process(struct worker *w, const struct spawn_args *a, char *why, size_t len)
{
	int r, policy;

	if (a->umask < 0 || a->umask > 0777)
		return invalid(why, len, "umask must be between 0 and 511 (0o777)");
	w->umask = (unsigned)a->umask;
	w->pid_ns = a->pid_namespace;
	if (a->name && (strlen(a->name) == 0 || strlen(a->name) > MAX_NAME))
		return invalid(why, len, "name must hold 1 to %d bytes", MAX_NAME);
	if (a->pool && (strlen(a->pool) == 0 || strlen(a->pool) > MAX_NAME))
		return invalid(why, len, "pool must hold 1 to %d bytes", MAX_NAME);
	for (size_t i = 0; i < 2; i++) {
		r = parse_output(a->out[i], &w->out[i], why, len);
		if (r < 0)
			return r;
	}
	if (a->shutdown_on) {
		policy = proto_shutdown_on_from_name(a->shutdown_on);
		if (policy < 0)
			return invalid(why, len,
			    "shutdown_on must be master_disconnect, connection_closed or explicit");
		w->shutdown_on = (enum proto_shutdown_on)policy;
	}
	if (a->ready) {
		policy = sup_ready_mode_from_name(a->ready);
		if (policy < 0)
			return invalid(why, len, "ready must be protocol, exec or notify");
		w->ready_mode = (enum ready_mode)policy;
	}
	return limits_parse(w, a->limits, why, len);
}

/* Fills w from a; on error why says which parameter is wrong. */
static int
fill(struct worker *w, const struct spawn_args *a, char *why, size_t len)
{
	int r;

	r = fill_exec(w, a, why, len);
	if (r == 0)
		r = fill_process(w, a, why, len);
	if (r == 0)
		r = parse_settings(a, w, why, len);
	if (r < 0)
		return r;
	w->path = strdup(a->path);
	w->cwd = strdup(a->cwd ? a->cwd : "/");
	if (a->name) {
		w->name = strdup(a->name);
	} else {
		const char *base = strrchr(a->path, '/') + 1;

		w->name = strndup(*base ? base : a->path, MAX_NAME);
	}
	w->pool = a->pool ? strdup(a->pool) : NULL;
	w->init = a->init ? json_incref(a->init) : NULL;
	if (!w->path || !w->cwd || !w->name || (a->pool && !w->pool) || !w->argv || !w->env ||
	    !w->settings) {
		snprintf(why, len, "out of memory");
		return -ENOMEM;
	}
	/* Last: the policy keeps what each incarnation starts from. */
	r = restart_parse(w, a->restart, why, len);
	if (r == -ENOMEM)
		snprintf(why, len, "out of memory");
	return r;
}

/* Checks the worker limits. Returns the name of the one reached, or NULL. */
static const char *
over_limit(struct conn *c, unsigned *value)
{
	if (sup_count_live() >= herdd.cfg.max_workers) {
		herdd.stats.limit_workers++;
		*value = herdd.cfg.max_workers;
		return "workers";
	}
	if (sup_count_uid(c->cred.uid) >= herdd.cfg.max_workers_per_uid) {
		herdd.stats.limit_workers_per_uid++;
		*value = herdd.cfg.max_workers_per_uid;
		return "workers_per_uid";
	}
	if (c->nworkers >= herdd.cfg.max_workers_per_master) {
		herdd.stats.limit_workers_per_master++;
		*value = herdd.cfg.max_workers_per_master;
		return "workers_per_master";
	}
	return NULL;
}

/* spawn {path, argv?, name?, pool?, env?, cwd?, umask?, stdout?, stderr?, init?, shutdown_on?, restart?, pid_namespace?, ready?, limits?, ...} */
void
h_spawn(struct conn *c, json_t *id, json_t *params)
{
	struct spawn_args a = {
		.umask = 022, .spawn_timeout_ms = UNSET, .connection_timeout_ms = UNSET
	};
	const char *limit;
	struct worker *w;
	char why[256];
	unsigned value;
	int r;

	if (dispatch_unpack(c, id, params,
	        "{s:s, s?o, s?s, s?s, s?o, s?s, s?I, s?o, s?o, s?o, s?s, s?I, s?I, s?o, s?o, s?b, "
	        "s?s, s?o}",
	        "path", &a.path, "argv", &a.argv, "name", &a.name, "pool", &a.pool, "env", &a.env,
	        "cwd", &a.cwd, "umask", &a.umask, "stdout", &a.out[0], "stderr", &a.out[1], "init",
	        &a.init, "shutdown_on", &a.shutdown_on, "spawn_timeout_ms", &a.spawn_timeout_ms,
	        "connection_timeout_ms", &a.connection_timeout_ms, "settings", &a.settings,
	        "restart", &a.restart, "pid_namespace", &a.pid_namespace, "ready", &a.ready,
	        "limits", &a.limits) < 0)
		return;
	w = sup_worker_new();
	if (!w) {
		conn_reply_error(c, id, HERD_E_INTERNAL_ERROR, NULL, "out of memory");
		return;
	}
	r = fill(w, &a, why, sizeof(why));
	if (r < 0) {
		conn_reply_error(c, id,
		    r == -ENOMEM ? HERD_E_INTERNAL_ERROR : HERD_E_INVALID_PARAMS, NULL,
		    "invalid params: %s", why);
		sup_worker_free(w);
		return;
	}
	limit = over_limit(c, &value);
	if (limit) {
		log_warn(
		    "uid %u: spawn refused, limit %s (%u)", (unsigned)c->cred.uid, limit, value);
		dispatch_limit(c, id, limit, value);
		sup_worker_free(w);
		return;
	}
	/* The worker runs as the requester: herdd never lends its own credentials. */
	w->uid = c->cred.uid;
	w->gid = c->cred.gid;
	w->owner_pid = c->cred.pid;
	w->owner_gid = c->cred.gid;
	w->owner_serial = c->serial;
	w->owner = conn_ref(c);
	r = sup_spawn(w);
	if (r < 0) {
		log_warn("spawn of %s for uid %u failed at %s: %s", w->path, (unsigned)w->uid,
		    w->spawn_stage ? w->spawn_stage : "?", strerror(-r));
		if (!w->spawn_stage)
			w->spawn_stage = "prepare";
		conn_reply_error(c, id, HERD_E_SPAWN_FAILED,
		    json_pack("{s:i, s:s, s:s}", "errno", -r, "stage", w->spawn_stage, "error",
		        strerror(-r)),
		    "spawn of %s failed (%s): %s", w->path, w->spawn_stage, strerror(-r));
		sup_record_failed(w, -r);
		return;
	}
	if (sup_add_waiter(w, c, id, true) < 0)
		log_error("worker %s: out of memory remembering the spawn request", w->id);
	if (w->spawning) {
		/* This client's next list must show it, with its pid (list_spawned()). */
		w->spawn_conn = conn_ref(c);
		c->spawning++;
	}
}
