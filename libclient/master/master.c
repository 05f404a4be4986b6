/* SPDX-License-Identifier: MIT */
/*
 * The master side of herdd's control socket: a herd_conn that said hello as a
 * master, plus spawn options, worker records and event dispatch. Everything
 * travels through the connection engine, so blocking requests, asynchronous
 * ones and events all work with any loop.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client/client-internal.h"
#include "herd/master.h"

/* What herdd needs beyond the spawn timeout to answer: fork, exec, hello, ready. */
#define SPAWN_MARGIN_USEC (10ull * 1000000ull)
#define DEFAULT_GRACE_MS  5000u
/* How long closing waits for the goodbye to leave (a local socket: at once). */
#define GOODBYE_FLUSH_USEC (1000ull * 1000ull)

extern char **environ;

struct herd_master {
	unsigned n_ref;
	herd_conn *conn;
	char *path; /* herdd's control socket */
	json_t *settings; /* resolved: every spawn and worker connection starts from them */
	herd_master_event_cb on_failure;
	void *failure_userdata;
	herd_master_event_cb on_event;
	void *event_userdata;
	herd_master_notice_cb on_notice;
	void *notice_userdata;
	/* On another host: its workers not yet ended (id -> WORKER), told if the link is lost. */
	json_t *live;
};

struct herd_worker {
	unsigned n_ref;
	char *id;
	char *socket;
	char *name;
	int pid;
	unsigned incarnation; /* 0: herdd did not say */
	/* herdd and this process name pids alike: a connection can check its peer is pid. */
	bool check_pid;
	json_t *settings;
	char *herdd; /* the control socket of the herdd that spawned it */
};

/* ---- socket path ---- */

/* The control socket: argument, $HERD_SOCKET, then where herdd puts it by default. */
static char *
master_socket_path(const char *arg)
{
	const char *env = secure_getenv("HERD_SOCKET");
	const char *rt = secure_getenv("XDG_RUNTIME_DIR");
	char *p = NULL;

	if (arg)
		return strdup(arg);
	if (env && *env)
		return strdup(env);
	/* herdd running as root always serves /run/herd, whatever the session says. */
	if (geteuid() != 0 && rt && rt[0] == '/') {
		if (asprintf(&p, "%s/herd/herdd.sock", rt) < 0)
			return NULL;
		return p;
	}
	return strdup("/run/herd/herdd.sock");
}

/* True when neither the caller nor $HERD_SOCKET chose the path: herdd may create its directory. */
static bool
master_socket_is_default(const char *arg)
{
	const char *env = secure_getenv("HERD_SOCKET");

	return !arg && !(env && *env);
}

/* ---- events ---- */

static bool
event_is_failure(const char *event, json_t *worker)
{
	static const char *const failures[] = { "crashed", "failed", "heartbeat_lost",
		"spawn_timeout", "init_failed", "killed", "host_lost" };
	json_t *code;

	if (proto_name_find(failures, PROTO_LEN(failures), event) >= 0)
		return true;
	code = json_object_get(worker, "exit_code");
	return strcmp(event, "exited") == 0 && json_is_integer(code) &&
	    json_integer_value(code) != 0;
}

/* Runs the callbacks for one event; a worker that ended is no longer live. */
static void
master_deliver(herd_master *m, const char *event, const char *id, const char *message, json_t *tail,
    json_t *worker)
{
	const char *state = json_string_value(json_object_get(worker, "state"));

	if (m->live && state && strcmp(state, "exited") == 0)
		json_object_del(m->live, id);
	/* A callback may drop the last reference to the master. */
	herd_master_ref(m);
	if (m->on_event)
		m->on_event(m, event, id, message, tail, worker, m->event_userdata);
	if (m->on_failure && event_is_failure(event, worker))
		m->on_failure(m, event, id, message, tail, worker, m->failure_userdata);
	herd_master_unref(m);
}

/* herdd's notifications: all to on_notice; "event" to the callbacks; others are ignored (forward compat). */
static void
master_notify(herd_conn *conn, const char *method, json_t *params, void *userdata)
{
	herd_master *m = userdata;
	json_t *worker, *tail, *empty = NULL;
	const char *event, *id, *message;

	if (!json_is_object(params))
		return;
	if (m->on_notice) {
		/* A callback may drop the last reference to the master. */
		herd_master_ref(m);
		m->on_notice(m, method, params, m->notice_userdata);
		herd_master_unref(m);
	}
	if (strcmp(method, "event") != 0)
		return;
	event = json_string_value(json_object_get(params, "event"));
	worker = json_object_get(params, "worker");
	id = json_string_value(json_object_get(worker, "id"));
	message = json_string_value(json_object_get(params, "message"));
	tail = json_object_get(params, "stderr_tail");
	if (!event || !id)
		return;
	if (!json_is_array(tail))
		tail = empty = json_array();
	master_deliver(m, event, id, message, tail, worker);
	json_decref(empty);
}

/*
 * The link to another host was lost (its herdd killed, the network cut, the
 * launcher gone): no herdd is left to tell how the workers there ended, and
 * that herdd stops them all (PROTOCOL.md 9), so each live one is reported
 * here as "host_lost", a failure.
 */
static void
master_lost(herd_conn *conn, int reason, herd_error *err, void *userdata)
{
	herd_master *m = userdata;
	_cleanup_json_ json_t *live = m->live;
	_cleanup_json_ json_t *tail = json_array();
	const char *id;
	json_t *worker;

	m->live = NULL;
	if (reason == 0 || !live)
		return;
	json_object_foreach(live, id, worker) {
		json_object_set_new(worker, "state", json_string("exited"));
		json_object_set_new(worker, "reason", json_string("host_lost"));
		master_deliver(m, "host_lost", id, herd_error_message(err), tail, worker);
	}
}

/* ---- connection ---- */

/* Opens a session as role; a master may autostart herdd (herd_master_connect()). */
static int
master_open(const char *socket_path, json_t *settings, const char *role, herd_master **ret,
    herd_error **ret_error)
{
	_cleanup_free_ char *settings_err = NULL;
	_cleanup_free_ char *path = NULL;
	_cleanup_json_ json_t *extra = NULL;
	bool master = !strcmp(role, "master");
	struct herd__settings s;
	herd_master *m;
	int r;

	if (ret_error)
		*ret_error = NULL;
	if (!ret || (settings && !json_is_object(settings)))
		return -EINVAL;
	r = herd__settings_resolve(settings, &s, &settings_err);
	if (r < 0) {
		if (ret_error)
			*ret_error = herd__error_new(HERD_E_INVALID_PARAMS, settings_err, NULL);
		return r;
	}
	path = master_socket_path(socket_path);
	extra = json_pack("{s:s}", "name", program_invocation_short_name);
	m = calloc(1, sizeof(*m));
	if (!path || !extra || !m) {
		free(m);
		return -ENOMEM;
	}
	m->n_ref = 1;
	m->settings = herd__settings_to_json(&s);
	if (!m->settings) {
		free(m);
		return -ENOMEM;
	}
	r = herd__conn_open(path, role, extra, settings, true, &m->conn, ret_error);
	/* Nobody there (no socket, or a stale one): start a private herdd, as tmux does. */
	if (master && (r == -ENOENT || r == -ECONNREFUSED) && !herd__link_address(path) &&
	    herd__autostart_enabled() &&
	    herd__autostart(path, master_socket_is_default(socket_path), s.handshake_timeout_ms) ==
	        0) {
		if (ret_error)
			*ret_error = herd_error_unref(*ret_error);
		r = herd__conn_open(path, role, extra, settings, true, &m->conn, ret_error);
	}
	if (r < 0) {
		json_decref(m->settings);
		free(m);
		return r;
	}
	m->conn->notify_fn = master_notify;
	m->conn->notify_userdata = m;
	if (master && herd__link_address(path)) {
		m->live = json_object();
		m->conn->closed_fn = master_lost;
	}
	m->path = path;
	path = NULL;
	if (master)
		herd__role_add(HERD_ROLE_MASTER);
	*ret = m;
	return 0;
}

HERD_EXPORT int
herd_master_connect(
    const char *socket_path, json_t *settings, herd_master **ret, herd_error **ret_error)
{
	return master_open(socket_path, settings, "master", ret, ret_error);
}

HERD_EXPORT int
herd_inspector_connect(
    const char *socket_path, json_t *settings, herd_master **ret, herd_error **ret_error)
{
	return master_open(socket_path, settings, "inspector", ret, ret_error);
}

HERD_EXPORT char *
herd_master_socket_path(const char *socket_path)
{
	return master_socket_path(socket_path);
}

/*
 * Tells herdd this session ends on purpose, so its workers end as
 * master_closed rather than as orphans of a master that vanished
 * (PROTOCOL.md 4.1). Sending writes at once; only output still queued
 * behind it is flushed, briefly, since a flush may run event callbacks.
 */
static void
master_goodbye(herd_master *m)
{
	int events;

	if (herd_conn_is_closed(m->conn) != 0 || herd__conn_notify(m->conn, "goodbye", NULL) < 0)
		return;
	events = herd_conn_get_events(m->conn);
	if (events > 0 && (events & POLLOUT))
		herd_conn_flush(m->conn, GOODBYE_FLUSH_USEC);
}

/* Member by member like every handle's free function (pool.c's too): the members differ. */
static void
master_free(herd_master *m)
{
	/* The connection may outlive us (a caller holds it): it must not call back into us. */
	m->conn->notify_fn = NULL;
	m->conn->closed_fn = NULL;
	m->conn->notify_userdata = NULL;
	if (m->conn->peer.n_ref == 1)
		master_goodbye(m);
	herd_conn_unref(m->conn);
	json_decref(m->settings);
	json_decref(m->live);
	free(m->path);
	free(m);
}

HERD__DEFINE_REF_UNREF(herd_master, herd_master, master_free)

HERD_EXPORT int
herd_master_close(herd_master *m)
{
	if (!m)
		return -EINVAL;
	master_goodbye(m);
	return herd_conn_close(m->conn);
}

HERD__DEFINE_GETTER(herd_master_get_conn, herd_master, herd_conn *, p->conn, NULL)
HERD__DEFINE_GETTER(
    herd_master_get_server_info, herd_master, json_t *, herd_conn_get_server_info(p->conn), NULL)
HERD__DEFINE_GETTER(
    herd_master_last_error, herd_master, herd_error *, herd_conn_last_error(p->conn), NULL)

HERD__DEFINE_CALLBACK_SETTER(herd_master_on_failure, herd_master, herd_master_event_cb,
    p ? 0 : -EINVAL, on_failure, failure_userdata)
HERD__DEFINE_CALLBACK_SETTER(herd_master_on_event, herd_master, herd_master_event_cb,
    p ? 0 : -EINVAL, on_event, event_userdata)
HERD__DEFINE_CALLBACK_SETTER(herd_master_on_notice, herd_master, herd_master_notice_cb,
    p ? 0 : -EINVAL, on_notice, notice_userdata)

/* ---- generic requests ---- */

static void
master_local_error(herd_master *m, int code, const char *text)
{
	herd_error *err = herd__error_new(code, text, NULL);

	herd__conn_set_error(m->conn, err);
	herd_error_unref(err);
}

/*
 * herdd's methods travel like a worker's functions: the same checks, and the
 * same local errors in last_error when nothing could be sent.
 */
HERD_EXPORT int
herd_master_request(
    herd_master *m, const char *method, json_t *params, uint64_t timeout_usec, json_t **ret_result)
{
	return m ? herd_call(m->conn, method, params, timeout_usec, ret_result) : -EINVAL;
}

HERD_EXPORT int
herd_master_request_async(
    herd_master *m, const char *method, json_t *params, herd_call_cb cb, void *userdata)
{
	return m ? herd_call_async(m->conn, method, params, cb, userdata, NULL) : -EINVAL;
}

/* ---- spawning ---- */

HERD_EXPORT json_t *
herd_spawn_opts_new(const char *path, json_t *init)
{
	if (!path)
		return NULL;
	return init ? json_pack("{s:s, s:O}", "path", path, "init", init)
	            : json_pack("{s:s}", "path", path);
}

/* What "inherit_env" is when the options do not say. */
static const char *const default_inherit[] = { "PATH", "LANG", "TZ", "LC_*" };

/* True if name is one herdd accepts in "env": a valid name, not HERD_* or the service manager's. */
static bool
env_name_passable(const char *name, size_t len)
{
	static const char *const reserved[] = { "HERD_", "NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_" };

	if (len == 0 || len > 256 || (name[0] >= '0' && name[0] <= '9'))
		return false;
	for (size_t i = 0; i < len; i++) {
		char ch = name[i];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		        (ch >= '0' && ch <= '9') || ch == '_'))
			return false;
	}
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (!strncmp(name, reserved[i], strlen(reserved[i])))
			return false;
	return true;
}

/* True if the variable name (len bytes) matches pattern: a name, or a prefix ending in '*'. */
static bool
env_name_matches(const char *pattern, const char *name, size_t len)
{
	size_t plen = strlen(pattern);

	if (plen > 0 && pattern[plen - 1] == '*')
		return len >= plen - 1 && !strncmp(name, pattern, plen - 1);
	return len == plen && !strncmp(name, pattern, len);
}

/* True if "inherit_env" (NULL: the default list, true: all, false: none) takes this name. */
static bool
env_wanted(const json_t *inherit, const char *name, size_t len)
{
	const json_t *v;
	size_t i;

	if (!env_name_passable(name, len))
		return false;
	if (!inherit) {
		for (i = 0; i < sizeof(default_inherit) / sizeof(default_inherit[0]); i++)
			if (env_name_matches(default_inherit[i], name, len))
				return true;
		return false;
	}
	if (json_is_boolean(inherit))
		return json_is_true(inherit);
	json_array_foreach(inherit, i, v)
		if (env_name_matches(json_string_value(v), name, len))
			return true;
	return false;
}

/* "inherit_env" is absent, a boolean or an array of strings. */
static bool
inherit_valid(const json_t *inherit)
{
	const json_t *v;
	size_t i;

	if (!inherit || json_is_boolean(inherit))
		return true;
	if (!json_is_array(inherit))
		return false;
	json_array_foreach(inherit, i, v)
		if (!json_is_string(v))
			return false;
	return true;
}

/*
 * Sets p's "env": the caller's (opts's), with the variables of this process
 * that "inherit_env" names under it, then drops "inherit_env" (libherd's,
 * not herdd's).
 */
static int
spawn_env(json_t *opts, json_t *p)
{
	json_t *t = json_object_get(opts, "env"), *inherit = json_object_get(opts, "inherit_env");
	json_t *env;

	if ((t && !json_is_object(t)) || !inherit_valid(inherit))
		return -EINVAL;
	env = t ? json_copy(t) : json_object();
	if (!env || json_object_set_new(p, "env", env) < 0)
		return -ENOMEM;
	json_object_del(p, "inherit_env");
	for (char **e = environ; e && *e; e++) {
		const char *eq = strchr(*e, '=');
		_cleanup_free_ char *name = NULL;

		if (!eq || !env_wanted(inherit, *e, (size_t)(eq - *e)))
			continue;
		/* jansson 2.13 has no json_object_getn(): the name gets its own string. */
		name = strndup(*e, (size_t)(eq - *e));
		if (!name)
			return -ENOMEM;
		if (!json_object_get(env, name) &&
		    json_object_set_new(env, name, json_string(eq + 1)) < 0)
			return -ENOMEM;
	}
	return 0;
}

/*
 * Sets p's "cwd" to this process's working directory unless the options
 * gave one or "inherit_cwd" is false, as fork() and rpc_parallel's workers
 * do, so relative paths a master hands its workers mean the same to them.
 */
static int
spawn_cwd(json_t *opts, json_t *p)
{
	json_t *inherit = json_object_get(opts, "inherit_cwd");
	char *cwd;
	int r = 0;

	if (inherit && !json_is_boolean(inherit))
		return -EINVAL;
	json_object_del(p, "inherit_cwd");
	if (json_object_get(opts, "cwd") || json_is_false(inherit))
		return 0;
	/* A directory that is gone has no name to give herdd: the worker then starts in "/". */
	cwd = getcwd(NULL, 0);
	if (cwd && cwd[0] == '/')
		r = json_object_set_new(p, "cwd", json_string(cwd)) < 0 ? -ENOMEM : 0;
	free(cwd);
	return r;
}

/*
 * "ship": true on a master on another host copies the executable there
 * first (PROTOCOL.md 9.5) and runs that copy; here it changes nothing. A
 * refusal is the spawn's error (spawn_failed), returned as -EREMOTEIO.
 */
static int
spawn_ship(herd_master *m, json_t *opts, json_t *p)
{
	json_t *ship = json_object_get(opts, "ship");
	_cleanup_free_ char *path = NULL, *why = NULL;
	struct herd__settings s;
	herd_error *err;
	int r;

	if (ship && !json_is_boolean(ship))
		return -EINVAL;
	json_object_del(p, "ship");
	if (!json_is_true(ship) || !herd__link_address(m->path))
		return 0;
	r = herd__settings_resolve(m->settings, &s, NULL);
	if (r == 0)
		r = herd__link_ship(m->path, &s, json_string_value(json_object_get(opts, "path")),
		    s.spawn_timeout_ms, &path, &why);
	if (r == 0)
		return json_object_set_new(p, "path", json_string(path)) < 0 ? -ENOMEM : 0;
	err = herd__error_newf(HERD_E_SPAWN_FAILED, "shipping %s: %s",
	    json_string_value(json_object_get(opts, "path")), why ? why : strerror(-r));
	herd__conn_set_error(m->conn, err);
	herd_error_unref(err);
	return -EREMOTEIO;
}

/*
 * The spawn params: the caller's options (borrowed) with this master's settings
 * under theirs, the variables of this process they inherit under their env,
 * and this process's working directory unless they chose one.
 */
static int
spawn_params(herd_master *m, json_t *opts, json_t **ret, uint64_t *ret_timeout)
{
	_cleanup_json_ json_t *p = NULL;
	json_t *settings, *t;
	json_int_t spawn_ms;
	int r;

	if (!json_is_object(opts) || !json_is_string(json_object_get(opts, "path")))
		return -EINVAL;
	p = json_copy(opts);
	if (!p)
		return -ENOMEM;

	t = json_object_get(opts, "settings");
	if (t && !json_is_object(t))
		return -EINVAL;
	settings = json_copy(m->settings);
	if (!settings || (t && json_object_update(settings, t) < 0) ||
	    json_object_set_new(p, "settings", settings) < 0)
		return -ENOMEM;
	r = spawn_env(opts, p);
	if (r == 0)
		r = spawn_cwd(opts, p);
	if (r == 0)
		r = spawn_ship(m, opts, p);
	if (r < 0)
		return r;

	t = json_object_get(opts, "spawn_timeout_ms");
	spawn_ms = json_is_integer(t)
	    ? json_integer_value(t)
	    : json_integer_value(json_object_get(settings, "spawn_timeout_ms"));
	*ret_timeout =
	    (uint64_t)(spawn_ms > 0 ? spawn_ms : 0) * HERD__USEC_PER_MSEC + SPAWN_MARGIN_USEC;
	*ret = p;
	p = NULL;
	return 0;
}

/* Why a spawn that herdd answered gives no worker record. */
static const char no_record_text[] = "herdd's spawn result lacks id, pid or socket";

/* The pid of the process at fd's other end, as this process names it; 0 if unknown. */
static int
peer_pid(int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return 0;
	return (int)cred.pid;
}

/*
 * True when the peer of m's connection is the pid herdd says it has: herdd
 * and this process see one pid namespace, on one host (a link's relay or a
 * container in between would make a worker's pid mean another process).
 */
static bool
master_pids_agree(herd_master *m)
{
	json_t *pid = json_object_get(herd_conn_get_server_info(m->conn), "pid");
	int peer = peer_pid(herd_conn_get_fd(m->conn));

	return peer > 0 && json_is_integer(pid) && json_integer_value(pid) == peer;
}

/* A worker record from spawn's result or a WORKER object {"id","pid","socket","name","incarnation"}. */
static herd_worker *
worker_new(herd_master *m, const json_t *result)
{
	const char *id = json_string_value(json_object_get(result, "id"));
	const char *socket = json_string_value(json_object_get(result, "socket"));
	const char *name = json_string_value(json_object_get(result, "name"));
	json_t *pid = json_object_get(result, "pid");
	json_t *inc = json_object_get(result, "incarnation");
	herd_worker *w;

	if (!id || !socket || !json_is_integer(pid))
		return NULL;
	w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->n_ref = 1;
	w->id = strdup(id);
	/* A worker on another host is reached through the master's link: HOST#PATH. */
	if (!herd__link_address(m->path))
		w->socket = strdup(socket);
	else if (asprintf(&w->socket, "%s#%s", m->path, socket) < 0)
		w->socket = NULL;
	w->name = strdup(name ? name : id);
	w->pid = (int)json_integer_value(pid);
	if (json_is_integer(inc) && json_integer_value(inc) > 0 &&
	    json_integer_value(inc) <= UINT32_MAX)
		w->incarnation = (unsigned)json_integer_value(inc);
	w->check_pid = !herd__link_address(m->path) && master_pids_agree(m);
	w->settings = json_incref(m->settings);
	w->herdd = strdup(m->path);
	if (!w->id || !w->socket || !w->name || !w->herdd)
		return herd_worker_unref(w);
	return w;
}

/* The record of a worker this master spawned; a remote one is watched for the link's loss. */
static herd_worker *
worker_spawned(herd_master *m, json_t *result)
{
	herd_worker *w = worker_new(m, result);

	if (w && m->live)
		json_object_set_new(m->live, w->id, json_copy(result));
	return w;
}

HERD_EXPORT int
herd_master_worker(herd_master *m, const json_t *record, herd_worker **ret)
{
	if (!m || !json_is_object(record) || !ret)
		return -EINVAL;
	*ret = worker_new(m, record);
	return *ret ? 0 : -EINVAL;
}

HERD_EXPORT int
herd_master_spawn(herd_master *m, json_t *opts, uint64_t timeout_usec, herd_worker **ret)
{
	_cleanup_json_ json_t *params = NULL;
	_cleanup_json_ json_t *result = NULL;
	uint64_t timeout;
	int r;

	if (!m || !ret)
		return -EINVAL;
	r = spawn_params(m, opts, &params, &timeout);
	if (r < 0) {
		/* A failed shipment set its own error. */
		if (r != -EREMOTEIO)
			master_local_error(m, HERD_E_INVALID_PARAMS,
			    "spawn options must be an object with a string \"path\"; "
			    "\"settings\" and \"env\" must be objects, \"inherit_env\" a boolean "
			    "or an array of strings, \"inherit_cwd\" and \"ship\" booleans");
		return r;
	}
	/* A callback run during the wait may drop the caller's reference; worker_new needs m. */
	herd_master_ref(m);
	r = herd_master_request(m, "spawn", params, timeout_usec ? timeout_usec : timeout, &result);
	if (r == 0) {
		*ret = worker_spawned(m, result);
		if (!*ret) {
			master_local_error(m, HERD_E_INVALID_REQUEST, no_record_text);
			r = -EPROTO;
		}
	}
	herd_master_unref(m);
	return r;
}

struct spawn_ctx {
	herd_master *m;
	herd_spawn_cb cb;
	void *userdata;
};

static void
spawn_done(
    herd_conn *conn, herd_pending *call, int r, json_t *result, herd_error *err, void *userdata)
{
	struct spawn_ctx *ctx = userdata;
	herd_error *own = NULL;
	herd_worker *w = NULL;

	if (r == 0) {
		w = worker_spawned(ctx->m, result);
		if (!w) {
			r = -EPROTO;
			err = own = herd__error_new(HERD_E_INVALID_REQUEST, no_record_text, NULL);
		}
	}
	ctx->cb(ctx->m, r, w, err, ctx->userdata);
	herd_worker_unref(w);
	herd_error_unref(own);
	herd_master_unref(ctx->m);
	free(ctx);
}

HERD_EXPORT int
herd_master_spawn_async(herd_master *m, json_t *opts, herd_spawn_cb cb, void *userdata)
{
	_cleanup_json_ json_t *params = NULL;
	struct spawn_ctx *ctx;
	uint64_t timeout;
	int r;

	if (!m || !cb)
		return -EINVAL;
	r = spawn_params(m, opts, &params, &timeout);
	if (r < 0)
		return r;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return -ENOMEM;
	*ctx = (struct spawn_ctx){ .m = herd_master_ref(m), .cb = cb, .userdata = userdata };
	r = herd__call_start(m->conn, "spawn", params, timeout, spawn_done, ctx, NULL);
	if (r < 0) {
		herd_master_unref(ctx->m);
		free(ctx);
	}
	return r;
}

/* ---- worker records ---- */

/* Member by member like every handle's free function (pool-job.c, error.c): the members differ. */
static void
worker_free(herd_worker *w)
{
	free(w->id);
	free(w->socket);
	free(w->name);
	free(w->herdd);
	json_decref(w->settings);
	free(w);
}

HERD__DEFINE_REF_UNREF(herd_worker, herd_worker, worker_free)

HERD__DEFINE_GETTER(herd_worker_id, const herd_worker, const char *, p->id, NULL)
HERD__DEFINE_GETTER(herd_worker_pid, const herd_worker, int, p->pid, -EINVAL)
HERD__DEFINE_GETTER(herd_worker_socket, const herd_worker, const char *, p->socket, NULL)
HERD__DEFINE_GETTER(herd_worker_name, const herd_worker, const char *, p->name, NULL)
HERD__DEFINE_GETTER(herd_worker_incarnation, const herd_worker, unsigned, p->incarnation, 0)

/* ---- why a worker's connection was lost ---- */

/*
 * How long a worker's lost connection waits for herdd's account of the end:
 * the worker is already dead or dying, so herdd reaps it within milliseconds.
 */
#define EXIT_CAUSE_USEC (1000ull * 1000ull)

/* What a worker's connection needs to ask herdd about it. */
struct exit_watch {
	char *herdd;
	char *id;
};

/* The answer being waited for on the private inspector session. */
struct exit_wait {
	const char *id;
	json_t *record; /* the WORKER object once it ended */
	json_t *tail; /* its stderr tail */
	bool done;
};

static void
exit_watch_free(void *userdata)
{
	struct exit_watch *x = userdata;

	free(x->herdd);
	free(x->id);
	free(x);
}

/* True for the WORKER record of a process herdd has reaped. */
static bool
record_ended(const json_t *worker)
{
	const char *state = json_string_value(json_object_get(worker, "state"));

	return state && strcmp(state, "exited") == 0;
}

/* herdd's events on the private session: the first ending one of our worker answers. */
static void
exit_note(herd_conn *conn, const char *method, json_t *params, void *userdata)
{
	struct exit_wait *w = userdata;
	json_t *worker = json_object_get(params, "worker");
	const char *id = json_string_value(json_object_get(worker, "id"));

	if (w->done || strcmp(method, "event") != 0 || !id || strcmp(id, w->id) != 0 ||
	    !record_ended(worker))
		return;
	w->record = json_incref(worker);
	w->tail = json_incref(json_object_get(params, "stderr_tail"));
	w->done = true;
}

/* A request on the private session within the wait's deadline; params stolen. */
static int
exit_request(herd_conn *c, const char *method, json_t *params, uint64_t deadline, json_t **ret)
{
	uint64_t now = herd__now_usec();
	int r;

	if (!params)
		return -ENOMEM;
	r = now < deadline ? herd__call_sync(c, method, params, deadline - now, ret, NULL)
	                   : -ETIMEDOUT;
	json_decref(params);
	return r;
}

/* worker_exited (PROTOCOL.md 2) from herdd's record and stderr tail. */
static herd_error *
exit_error(const char *id, json_t *record, json_t *tail)
{
	_cleanup_json_ json_t *data = NULL;
	const char *reason = json_string_value(json_object_get(record, "reason"));
	const char *sig = json_string_value(json_object_get(record, "signal"));
	const char *message = json_string_value(json_object_get(record, "message"));
	json_t *code = json_object_get(record, "exit_code");
	_cleanup_free_ char *text = NULL;
	int r;

	data = json_pack("{s:s, s:s?, s:O?, s:s?, s:s?, s:O}", "worker", id, "reason", reason,
	    "exit_code", code, "signal", sig, "message", message, "stderr_tail",
	    json_is_array(tail) ? tail : json_array());
	if (!data)
		return NULL;
	if (sig)
		r = asprintf(&text, "worker %s %s (%s)", id, reason ? reason : "ended", sig);
	else if (json_is_integer(code))
		r = asprintf(&text, "worker %s %s with status %lld", id, reason ? reason : "ended",
		    (long long)json_integer_value(code));
	else
		r = asprintf(&text, "worker %s %s", id, reason ? reason : "ended");
	if (r >= 0 && message) {
		char *longer = NULL;

		r = asprintf(&longer, "%s: %s", text, message);
		free(text);
		text = r >= 0 ? longer : NULL;
	}
	return herd__error_new(HERD_E_WORKER_EXITED, r >= 0 ? text : NULL, data);
}

/*
 * The connection's exit_cause_fn: asks herdd, on an inspector session of its
 * own (so no callback of the master runs from here), how the worker ended.
 * Subscribing first and inspecting second leaves no gap: either the record
 * says it exited (the tail then comes from "logs") or its ending event
 * arrives. Waits at most EXIT_CAUSE_USEC; NULL if herdd did not tell by then.
 */
static herd_error *
worker_exit_cause(herd_conn *conn, void *userdata)
{
	struct exit_watch *x = userdata;
	struct exit_wait w = { .id = x->id };
	uint64_t deadline = herd__deadline(EXIT_CAUSE_USEC);
	_cleanup_json_ json_t *settings = NULL;
	_cleanup_json_ json_t *record = NULL;
	_cleanup_json_ json_t *logs = NULL;
	herd_error *err = NULL;
	herd_conn *c = NULL;

	/* A lost host has no herdd left to ask; a new link would only meet a new one. */
	if (herd__link_address(x->herdd) && !herd__link_up(x->herdd))
		return NULL;
	settings = json_pack("{s:i, s:i, s:i}", "connection_timeout_ms",
	    (int)(EXIT_CAUSE_USEC / HERD__USEC_PER_MSEC), "handshake_timeout_ms",
	    (int)(EXIT_CAUSE_USEC / HERD__USEC_PER_MSEC), "heartbeat_interval_ms", 0);
	if (!settings ||
	    herd__conn_open(x->herdd, "inspector", NULL, settings, false, &c, NULL) < 0)
		return NULL;
	c->notify_fn = exit_note;
	c->notify_userdata = &w;
	if (exit_request(c, "subscribe", json_pack("{s:b}", "all", true), deadline, NULL) == 0 &&
	    exit_request(c, "inspect", json_pack("{s:s}", "id", x->id), deadline, &record) == 0) {
		if (!w.done && record_ended(record) &&
		    exit_request(c, "logs", json_pack("{s:s, s:i}", "id", x->id, "lines", 20),
		        deadline, &logs) == 0) {
			w.record = json_incref(record);
			w.tail = json_incref(json_object_get(logs, "lines"));
			w.done = true;
		}
		if (!w.done)
			(void)herd__conn_run(c, &w.done, deadline);
	}
	c->notify_fn = NULL;
	herd_conn_unref(c);
	if (w.done)
		err = exit_error(x->id, w.record, w.tail);
	json_decref(w.record);
	json_decref(w.tail);
	return err;
}

/* Lets conn, a connection to w, tell its callers how w ended should it die. */
static int
worker_conn_watch(const herd_worker *w, herd_conn *conn)
{
	struct exit_watch *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	x->herdd = strdup(w->herdd);
	x->id = strdup(w->id);
	if (!x->herdd || !x->id) {
		exit_watch_free(x);
		return -ENOMEM;
	}
	/* A callback, its data and their free function, set as any handle sets its three. */
	conn->exit_cause_fn = worker_exit_cause;
	conn->exit_cause_userdata = x;
	conn->exit_cause_free = exit_watch_free;
	return 0;
}

/*
 * The process serving w's socket must be w's: a restart gives the worker a
 * new process on the same path, and this handle names the old one. -ESRCH
 * with worker_not_found when another process answers.
 */
static int
worker_conn_check(const herd_worker *w, herd_conn *conn, herd_error **ret_error)
{
	int peer = peer_pid(herd_conn_get_fd(conn));

	if (!w->check_pid || peer == 0 || peer == w->pid)
		return 0;
	if (ret_error)
		*ret_error = herd__error_newf(HERD_E_WORKER_NOT_FOUND,
		    "worker %s@%u (pid %d) is gone: pid %d serves its socket now", w->id,
		    w->incarnation, w->pid, peer);
	return -ESRCH;
}

HERD_EXPORT int
herd_worker_connect(
    const herd_worker *w, json_t *conn_init, herd_conn **ret, herd_error **ret_error)
{
	int r;

	if (!w) {
		if (ret_error)
			*ret_error = NULL;
		return -EINVAL;
	}
	r = herd_conn_connect(w->socket, conn_init, w->settings, ret, ret_error);
	if (r == 0 && (r = worker_conn_check(w, *ret, ret_error)) < 0)
		*ret = herd_conn_unref(*ret);
	else if (r == 0 && worker_conn_watch(w, *ret) < 0) {
		*ret = herd_conn_unref(*ret);
		if (ret_error)
			*ret_error = herd__error_new(HERD_E_INTERNAL_ERROR, "out of memory", NULL);
		return -ENOMEM;
	}
	return r;
}

HERD_EXPORT int
herd_worker_call_once(const herd_worker *w, const char *function, json_t *args,
    uint64_t timeout_usec, json_t **ret_result, herd_error **ret_error)
{
	herd_conn *conn = NULL;
	int r = herd_worker_connect(w, NULL, &conn, ret_error);

	return herd__call_once(r, conn, function, args, timeout_usec, ret_result, ret_error);
}

/* ---- control by id ---- */

static bool
id_valid(const char *id)
{
	return id && *id;
}

/* Sends method with params packed from fmt and its arguments, waiting up to timeout_usec. */
static int
master_requestf(
    herd_master *m, const char *method, uint64_t timeout_usec, json_t **ret, const char *fmt, ...)
{
	_cleanup_json_ json_t *params = NULL;
	va_list ap;

	va_start(ap, fmt);
	params = json_vpack_ex(NULL, 0, fmt, ap);
	va_end(ap);
	if (!params)
		return -ENOMEM;
	return herd_master_request(m, method, params, timeout_usec, ret);
}

/* shutdown {id, incarnation (0: any), grace_ms (0: herdd's default)}, waiting until reaped. */
static int
master_shutdown(
    herd_master *m, const char *id, unsigned incarnation, unsigned grace_ms, json_t **ret_record)
{
	_cleanup_json_ json_t *params = json_pack("{s:s}", "id", id);
	uint64_t timeout;

	if (!params)
		return -ENOMEM;
	if (incarnation)
		json_object_set_new(params, "incarnation", json_integer(incarnation));
	if (grace_ms)
		json_object_set_new(params, "grace_ms", json_integer(grace_ms));
	/* The reply comes once the worker is reaped: up to the grace period, plus a margin. */
	timeout =
	    (grace_ms ? grace_ms : DEFAULT_GRACE_MS) * HERD__USEC_PER_MSEC + SPAWN_MARGIN_USEC;
	if (timeout < m->conn->call_timeout_usec)
		timeout = m->conn->call_timeout_usec;
	return herd_master_request(m, "shutdown", params, timeout, ret_record);
}

HERD_EXPORT int
herd_master_shutdown(herd_master *m, const char *id, unsigned grace_ms, json_t **ret_record)
{
	if (!m || !id_valid(id))
		return -EINVAL;
	return master_shutdown(m, id, 0, grace_ms, ret_record);
}

HERD_EXPORT int
herd_worker_shutdown(herd_master *m, const herd_worker *w, unsigned grace_ms, json_t **ret_record)
{
	if (!m || !w)
		return -EINVAL;
	return master_shutdown(m, w->id, w->incarnation, grace_ms, ret_record);
}

HERD_EXPORT int
herd_master_kill(herd_master *m, const char *id, const char *signal)
{
	if (!m || !id_valid(id))
		return -EINVAL;
	return master_requestf(
	    m, "kill", 0, NULL, "{s:s, s:s}", "id", id, "signal", signal ? signal : "TERM");
}

HERD_EXPORT int
herd_worker_kill(herd_master *m, const herd_worker *w, const char *signal)
{
	if (!m || !w)
		return -EINVAL;
	if (!w->incarnation)
		return herd_master_kill(m, w->id, signal);
	return master_requestf(m, "kill", 0, NULL, "{s:s, s:I, s:s}", "id", w->id, "incarnation",
	    (json_int_t)w->incarnation, "signal", signal ? signal : "TERM");
}

HERD_EXPORT int
herd_master_list(herd_master *m, bool all, json_t **ret)
{
	if (!m || !ret)
		return -EINVAL;
	return master_requestf(m, "list", 0, ret, "{s:b}", "all", all);
}

HERD_EXPORT int
herd_master_inspect(herd_master *m, const char *id, json_t **ret)
{
	if (!m || !id_valid(id) || !ret)
		return -EINVAL;
	return master_requestf(m, "inspect", 0, ret, "{s:s}", "id", id);
}

HERD_EXPORT int
herd_master_logs(herd_master *m, const char *id, const char *stream, unsigned lines, json_t **ret)
{
	if (!m || !id_valid(id) || !ret)
		return -EINVAL;
	return master_requestf(m, "logs", 0, ret, "{s:s, s:s, s:I}", "id", id, "stream",
	    stream ? stream : "stderr", "lines", (json_int_t)(lines ? lines : 100));
}
