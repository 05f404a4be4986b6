/* SPDX-License-Identifier: MIT */
/*
 * herdctl: look at and control herd workers from a shell. Tables for people,
 * --json (the raw results, one JSON text per line) for scripts. Every failure
 * prints one line "herdctl: NAME: MESSAGE" and exits non-zero.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <herd/pool.h>

#include "herdctl.h"

void
ctl_error(const char *name, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "herdctl: %s: ", name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

struct command;

/*
 * Runs a command: params (stolen) holds its options and worker "id", args its
 * other arguments, already counted. Returns the exit status.
 */
typedef int command_run(struct ctl *c, const struct command *cmd, json_t *params, char **args);

/* What a command needs besides its arguments. */
enum {
	/* Its first argument is a worker ID, sent as params "id". */
	CMD_ID = 1 << 0,
	/* It may start a private herdd when none runs. */
	CMD_AUTOSTART = 1 << 1,
	/* It ends with a program's command line: options stop at that program's path. */
	CMD_ARGV = 1 << 2,
};

/* One command: dispatch, its --help line and its checks all come from here. */
struct command {
	const char *name; /* also herdd's method, for a command that is one request */
	const char *args; /* its arguments after ID and options, for --help and usage errors */
	const char *help;
	unsigned flags;
	int min_args, max_args; /* how many arguments, ID included, options not */
	/* NULL: it takes no options, so its arguments may start with '-'. */
	const struct ctl_opt *opts;
	command_run *run;
	void (*show)(FILE *, const json_t *); /* its result for people */
};

/* Prints a result: raw compact JSON with --json, else through show. */
static void
output(const struct ctl *c, const json_t *result, void (*show)(FILE *, const json_t *))
{
	if (c->json) {
		char *text = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);

		printf("%s\n", text ? text : "null");
		free(text);
	} else {
		show(stdout, result);
	}
	fflush(stdout);
}

/* Prints a command's result through its show and drops it: the command succeeded. */
static int
output_result(const struct ctl *c, const struct command *cmd, json_t *res)
{
	output(c, res, cmd->show);
	json_decref(res);
	return EXIT_SUCCESS;
}

static void
show_list(FILE *f, const json_t *res)
{
	print_worker_table(f, json_object_get(res, "workers"));
}

static void
show_logs(FILE *f, const json_t *res)
{
	const json_t *line;
	size_t i;

	json_array_foreach(json_object_get(res, "lines"), i, line)
		fprintf(f, "%s\n", json_string_value(line) ?: "");
}

static void
show_nothing(FILE *f, const json_t *res)
{
	(void)f;
	(void)res;
}

static void
show_spawned(FILE *f, const json_t *res)
{
	fprintf(f, "%s %lld %s\n", json_string_value(json_object_get(res, "id")) ?: "?",
	    (long long)json_integer_value(json_object_get(res, "pid")),
	    json_string_value(json_object_get(res, "socket")) ?: "-");
}

/* logs --follow: the reply, then each "log" notification until the stream ends. */
static int
follow_lines(json_t *lines, void *userdata)
{
	const struct ctl *c = userdata;
	long long dropped = json_integer_value(json_object_get(lines, "dropped"));

	if (dropped > 0 && json_object_get(lines, "end"))
		fprintf(stderr, "herdctl: %lld lines dropped (herdctl did not keep up)\n", dropped);
	output(c, lines, show_logs);
	return 0;
}

/* logs: the lines; none at all is said on stderr, so an empty output is not a puzzle. */
static int
cmd_logs(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	const char *stream = json_string_value(json_object_get(params, "stream")) ?: "stderr";
	char *id = strdup(json_string_value(json_object_get(params, "id")) ?: "?");
	json_t *res;

	(void)args;
	if (id && json_is_true(json_object_get(params, "follow"))) {
		free(id);
		return ctl_follow(c, params, follow_lines, c) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	}
	if (!id || ctl_request(c, cmd->name, params, &res) < 0) {
		free(id);
		return EXIT_FAILURE;
	}
	output(c, res, cmd->show);
	if (json_array_size(json_object_get(res, "lines")) == 0)
		fprintf(stderr, "herdctl: worker %s has written nothing to its %s\n", id, stream);
	json_decref(res);
	free(id);
	return EXIT_SUCCESS;
}

/* Commands that are one request of the same name, printed through their show. */
static int
cmd_request(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	json_t *res;

	(void)args;
	if (ctl_request(c, cmd->name, params, &res) < 0)
		return EXIT_FAILURE;
	return output_result(c, cmd, res);
}

static int
cmd_kill(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	long long num;

	if (args[0]) {
		/* A number goes as a number; herdd checks names and ranges. */
		if (ctl_parse_int(args[0], 10, 1, 64, &num) == 0)
			json_object_set_new(params, "signal", json_integer(num));
		else
			json_object_set_new(params, "signal", json_string(args[0]));
	}
	return cmd_request(c, cmd, params, args);
}

/* call: herdd names the worker's socket (inspect); the call goes to the worker itself. */
static int
cmd_call(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	json_t *fargs = NULL, *worker = NULL, *res = NULL, *fn;
	const char *kind = NULL;
	int r = EXIT_FAILURE;
	size_t i;

	if (args[1] && !(fargs = ctl_parse_json("the argument", args[1]))) {
		json_decref(params);
		return EXIT_USAGE;
	}
	if (ctl_request(c, "inspect", json_incref(params), &worker) < 0)
		goto out;
	json_array_foreach(json_object_get(worker, "functions"), i, fn) {
		if (!strcmp(json_string_value(json_object_get(fn, "name")) ?: "", args[0]))
			kind = json_string_value(json_object_get(fn, "kind"));
	}
	/* The process inspect described, or worker_not_found: a restart may come between. */
	if (ctl_call(c, worker, args[0], kind, fargs, &res) == 0) {
		output(c, res, cmd->show);
		r = EXIT_SUCCESS;
	}
out:
	json_decref(res);
	json_decref(worker);
	json_decref(fargs);
	json_decref(params);
	return r;
}

static int
watch_event(json_t *event, void *userdata)
{
	const struct ctl *c = userdata;

	output(c, event, print_event);
	return 0;
}

static int
cmd_watch(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	(void)cmd;
	(void)args;
	return ctl_watch(c, params, watch_event, c) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* --env K=V: one member of params "env". */
static int
opt_env(json_t *params, const struct ctl_opt *o, const char *arg)
{
	const char *eq = strchr(arg, '=');
	json_t *env = json_object_get(params, o->name);
	char *name;

	if (!eq || eq == arg)
		return ctl_usage_error("--%s takes K=V, not '%s'", o->name, arg);
	if (!env && json_object_set_new(params, o->name, env = json_object()) < 0)
		return EXIT_FAILURE;
	name = strndup(arg, (size_t)(eq - arg));
	if (!name || json_object_set_new(env, name, json_string(eq + 1)) < 0) {
		free(name);
		return EXIT_FAILURE;
	}
	free(name);
	return 0;
}

/* --stderr/--stdout null|capture|FILE|+FILE: where a worker's stream goes. */
static int
opt_stream(json_t *params, const struct ctl_opt *o, const char *arg)
{
	bool append = arg[0] == '+';
	const char *file = append ? arg + 1 : arg;

	if (!strcmp(arg, "null") || !strcmp(arg, "capture"))
		return ctl_opt_string(params, o, arg);
	if (file[0] != '/')
		return ctl_usage_error(
		    "--%s takes null, capture, FILE or +FILE (absolute)", o->name);
	return ctl_opt_store(params, o, json_pack("{s:s, s:b}", "file", file, "append", append));
}

/* --max-bytes/--max-files: the size cap of the streams that go to a file. */
static int
move_caps(json_t *params)
{
	static const char *const caps[] = { "max_bytes", "max_files" };
	static const char *const streams[] = { "stdout", "stderr" };
	bool any = false;

	for (size_t k = 0; k < 2; k++) {
		json_t *v = json_object_get(params, caps[k]);

		if (!v)
			continue;
		any = true;
		for (size_t i = 0; i < 2; i++) {
			json_t *o = json_object_get(params, streams[i]);

			if (json_is_object(o))
				json_object_set(o, caps[k], v);
		}
		json_object_del(params, caps[k]);
	}
	if (any && !json_is_object(json_object_get(params, "stdout")) &&
	    !json_is_object(json_object_get(params, "stderr")))
		return ctl_usage_error(
		    "--max-bytes and --max-files cap a --stdout or --stderr FILE");
	return 0;
}

/* spawn: the executable and its argv come last; herdctl exits once the worker is ready. */
/*
 * The restart options become spawn's "restart" object (PROTOCOL.md 4.2):
 * --restart POLICY with --restart-delay, --restart-max-delay,
 * --start-limit-burst and --start-limit-interval.
 */
static int
fold_restart(json_t *params)
{
	static const char *const keys[][2] = { { "restart_delay", "delay_ms" },
		{ "restart_max_delay", "max_delay_ms" }, { "start_limit_burst", "burst" },
		{ "start_limit_interval", "interval_ms" } };
	json_t *policy = json_object_get(params, "restart"), *o;
	size_t i;

	o = json_pack("{s:O?}", "policy", policy);
	for (i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(params, keys[i][0]);

		if (!v)
			continue;
		if (!policy) {
			json_decref(o);
			return ctl_usage_error("--%s needs --restart", keys[i][0]);
		}
		json_object_set(o, keys[i][1], v);
		json_object_del(params, keys[i][0]);
	}
	if (policy)
		json_object_set_new(params, "restart", o);
	else
		json_decref(o);
	return 0;
}

/* --cpu-max: a number of CPUs, or cpu.max's "QUOTA PERIOD" (herdd checks either). */
static int
opt_cpu(json_t *into, const struct ctl_opt *o, const char *arg)
{
	char *end;
	double cpus = strtod(arg, &end);

	if (end != arg && *end == '\0')
		return ctl_opt_store(into, o, json_real(cpus));
	return ctl_opt_string(into, o, arg);
}

/* --memory-max, --pids-max, --cpu-max and --nofile become spawn's "limits" object. */
static void
fold_limits(json_t *params)
{
	static const char *const keys[] = { "memory_max", "pids_max", "cpu_max", "nofile" };
	json_t *o = json_object();

	for (size_t i = 0; o && i < sizeof(keys) / sizeof(keys[0]); i++) {
		json_t *v = json_object_get(params, keys[i]);

		if (!v)
			continue;
		json_object_set(o, keys[i], v);
		json_object_del(params, keys[i]);
	}
	if (o && json_object_size(o))
		json_object_set_new(params, "limits", o);
	else
		json_decref(o);
}

static int
cmd_spawn(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	json_t *argvj = json_array(), *res;
	int r = move_caps(params);

	if (r != 0) {
		json_decref(argvj);
		json_decref(params);
		return r;
	}

	for (char **a = args; *a; a++)
		json_array_append_new(argvj, json_string(*a));
	json_object_set_new(params, "path", json_string(args[0]));
	json_object_set_new(params, "argv", argvj);
	if (!json_object_get(params, "env"))
		json_object_set_new(params, "env", json_object());
	if (!json_object_get(params, "shutdown_on"))
		json_object_set_new(params, "shutdown_on", json_string("explicit"));
	if (fold_restart(params) < 0) {
		json_decref(params);
		return EXIT_USAGE;
	}
	fold_limits(params);
	if (ctl_spawn(c, params, &res) < 0)
		return EXIT_FAILURE;
	return output_result(c, cmd, res);
}

/* map: the options become the pool's; the last argument is the function. */
static int
cmd_map(struct ctl *c, const struct command *cmd, json_t *params, char **args)
{
	(void)cmd;
	return ctl_map(c, params, args);
}

static const struct ctl_opt map_opts[] = {
	{ "workers", 'j', "N", "workers in the pool (default: the CPUs herdctl\nmay run on)",
	    ctl_opt_int, 1, 4096 },
	{ "unordered", 'u', NULL,
	    "write results as they complete, each as\n{\"index\":N,\"result\":R} (default: in "
	    "input\norder, the bare result)",
	    ctl_opt_true, 0, 0 },
	{ "retries", 0, "K",
	    "times a task may lose its worker (crash,\ntimeout) before it is reported (default 3)",
	    ctl_opt_int, 0, 1000 },
	{ "timeout", 0, "S",
	    "seconds a task may run (fractions allowed);\nits worker is killed and replaced after",
	    ctl_opt_seconds, 0, UINT32_MAX },
	{ "window", 0, "N", "tasks in flight per worker (default 4)", ctl_opt_int, 1, 1024 },
	{ "chunksize", 0, "N",
	    "lines sent to a worker in one message\n(default 1, at most 65536): tiny tasks\ngo "
	    "faster in batches",
	    ctl_opt_int, 0, HERD_POOL_MAX_CHUNKSIZE },
	{ "name", 0, "NAME", "the pool's name in list (default map-PID)", ctl_opt_string, 0, 0 },
	{ "hosts", 'H', "ADDR[=N],...",
	    "workers on these herdds (ssh://, slurm://...),\nN on each (default -j, else the "
	    "CPUs);\n"
	    "\"slurm\": every node of the Slurm allocation",
	    ctl_opt_string, 0, 0 },
	{ "help", 'h', NULL, "this command's help", ctl_opt_true, 0, 0 },
	{ 0 },
};

/* Appends each word of a comma-separated list to array a, through alias (may be NULL). */
static int
append_words(json_t *a, const char *arg, const char *(*alias)(const char *word))
{
	char *copy = strdup(arg), *save = NULL, *w;
	int r = copy ? 0 : EXIT_FAILURE;

	for (w = copy ? strtok_r(copy, ",", &save) : NULL; w && !r; w = strtok_r(NULL, ",", &save))
		r = json_array_append_new(a, json_string(alias ? alias(w) : w)) < 0 ? EXIT_FAILURE
		                                                                    : 0;
	free(copy);
	return r;
}

/* "running" stands for the states of a worker whose process runs. */
static int
opt_state(json_t *params, const struct ctl_opt *o, const char *arg)
{
	json_t *a = json_array();

	if (!strcmp(arg, "running"))
		arg = "starting,ready,stopping";
	if (!a || append_words(a, arg, NULL)) {
		json_decref(a);
		return EXIT_FAILURE;
	}
	return ctl_opt_store(params, o, a);
}

/* The table's column names (RSS, CPU...) for the WORKER fields they show. */
static const char *
field_alias(const char *w)
{
	static const char *const alias[][2] = { { "rss", "rss_kib" }, { "cpu", "cpu_ms" },
		{ "uptime", "uptime_ms" }, { "hb-age", "heartbeat_age_ms" },
		{ "inc", "incarnation" }, { "restarts", "restart" } };

	for (size_t i = 0; i < sizeof(alias) / sizeof(alias[0]); i++)
		if (!strcasecmp(w, alias[i][0]))
			return alias[i][1];
	return w;
}

static int
opt_fields(json_t *params, const struct ctl_opt *o, const char *arg)
{
	json_t *a = json_array();

	if (!a || append_words(a, arg, field_alias)) {
		json_decref(a);
		return EXIT_FAILURE;
	}
	return ctl_opt_store(params, o, a);
}

/* --owner me|UID: the workers of a uid (a root herdd serves many). */
static int
opt_owner(json_t *params, const struct ctl_opt *o, const char *arg)
{
	long long uid;

	if (!strcmp(arg, "me"))
		uid = getuid();
	else if (ctl_parse_int(arg, 10, 0, UINT32_MAX, &uid) < 0)
		return ctl_usage_error("--owner takes me or a uid, not '%s'", arg);
	return ctl_opt_store(params, o, json_pack("{s:I}", "uid", (json_int_t)uid));
}

static const struct ctl_opt list_opts[] = {
	{ "all", 'a', NULL, NULL, ctl_opt_true, 0, 0 },
	{ "state", 0, "STATE,...", "only these states (running: starting, ready,\nstopping)",
	    opt_state, 0, 0 },
	{ "name", 0, "PATTERN", "only names matching a shell pattern", ctl_opt_string, 0, 0 },
	{ "owner", 0, "me|UID", "only the workers of this uid", opt_owner, 0, 0 },
	{ "fields", 0, "FIELD,...",
	    "only these WORKER fields (columns: rss, cpu,\nuptime... stand for theirs)", opt_fields,
	    0, 0 },
	{ 0 },
};

static const struct ctl_opt logs_opts[] = {
	{ "stream", 's', "stderr|stdout", NULL, ctl_opt_choice, 0, 0 },
	{ "lines", 'n', "N", NULL, ctl_opt_int, 1, 1000 },
	{ "follow", 'f', NULL, NULL, ctl_opt_true, 0, 0 },
	{ 0 },
};

static const struct ctl_opt watch_opts[] = {
	{ "since", 0, "N",
	    "first replay the events after seq N that herdd\nstill holds (a gap line says what it "
	    "lost)",
	    ctl_opt_int, 0, INT64_MAX },
	{ "instance", 0, "ID", "the herdd instance N belongs to (--json shows it)", ctl_opt_string,
	    0, 0 },
	{ 0 },
};

static const struct ctl_opt reexec_opts[] = {
	{ "binary", 0, "PATH", "the binary to run (default: herdd's own path)", ctl_opt_string, 0,
	    0 },
	{ 0 },
};

static const struct ctl_opt shutdown_opts[] = {
	{ "grace-ms", 'g', "N", NULL, ctl_opt_int, 0, 600000 },
	{ 0 },
};

static const struct ctl_opt spawn_opts[] = {
	{ "name", 0, "NAME", "label shown in list and events", ctl_opt_string, 0, 0 },
	{ "env", 0, "K=V",
	    "add a variable (repeatable); PATH, LANG, TZ and\n"
	    "LC_* are passed from herdctl's environment",
	    opt_env, 0, 0 },
	{ "cwd", 0, "DIR", "working directory (default: this one)", ctl_opt_string, 0, 0 },
	{ "umask", 0, "MODE", "octal, default 022", ctl_opt_mode, 0, 0777 },
	{ "init", 0, "JSON", "the worker-state init argument", ctl_opt_json, 0, 0 },
	{ "shutdown-on", 0, "MODE",
	    "explicit (default), connection_closed, or\n"
	    "master_disconnect. herdctl exits as soon as the\n"
	    "worker is ready, so with master_disconnect the\n"
	    "worker stops at once; explicit workers live until\n"
	    "'herdctl shutdown ID'",
	    ctl_opt_string, 0, 0 },
	{ "stderr", 0, "null|capture|FILE", "where the worker's stderr goes (default capture)",
	    opt_stream, 0, 0 },
	{ "stdout", 0, "null|capture|FILE",
	    "where its stdout goes (default null); FILE is an\n"
	    "absolute path, append with +FILE",
	    opt_stream, 0, 0 },
	{ "max-bytes", 0, "N",
	    "rotate a FILE above N bytes (default herdd's\n--output-max-bytes, 10 MiB; 0: no cap)",
	    ctl_opt_int, 0, 1ll << 40 },
	{ "max-files", 0, "N", "keep FILE and N-1 rotated ones (default 5)", ctl_opt_int, 1, 100 },
	{ "spawn-timeout-ms", 0, "N", "fork-to-ready deadline", ctl_opt_int, 0, UINT32_MAX },
	{ "ready", 0, "protocol|exec|notify",
	    "when the worker counts as ready: its herd\n"
	    "\"ready\" (default), its exec (any program), or\n"
	    "READY=1 on NOTIFY_SOCKET (sd_notify)",
	    ctl_opt_choice, 0, 0 },
	{ "pid-namespace", 0, NULL, "run it as the init of a PID namespace of its own",
	    ctl_opt_true, 0, 0 },
	{ "restart", 0, "no|on-failure|always",
	    "bring the worker back when it ends (on-failure:\n"
	    "a crash, a failure or a non-zero exit)",
	    ctl_opt_choice, 0, 0 },
	{ "restart-delay", 0, "S", "first restart's delay, doubled at each (0.1)", ctl_opt_seconds,
	    0, 3600000 },
	{ "restart-max-delay", 0, "S", "the delay's cap (30)", ctl_opt_seconds, 0, 3600000 },
	{ "start-limit-burst", 0, "N", "give up after N ends within the interval (5)", ctl_opt_int,
	    1, 100 },
	{ "start-limit-interval", 0, "S", "the start limit's interval (10)", ctl_opt_seconds, 0,
	    86400000 },
	{ "memory-max", 0, "BYTES",
	    "memory limit: the worker's cgroup memory.max, else\n"
	    "RLIMIT_AS (address space)",
	    ctl_opt_int, 1 << 20, 1ll << 50 },
	{ "pids-max", 0, "N", "process limit: pids.max, else RLIMIT_NPROC (per uid)", ctl_opt_int,
	    1, 4194304 },
	{ "cpu-max", 0, "CPUS|'QUOTA PERIOD'", "CPU bandwidth (cpu.max; needs the cpu controller)",
	    opt_cpu, 0, 0 },
	{ "nofile", 0, "N", "open-file limit (RLIMIT_NOFILE)", ctl_opt_int, 8, 1 << 20 },
	{ 0 },
};

static const struct command commands[] = {
	{ "list", "", "workers (with --all, exited records too)", 0, 0, 0, list_opts, cmd_request,
	    show_list },
	{ "inspect", "", "one worker in detail", CMD_ID, 1, 1, NULL, cmd_request, print_worker },
	{ "logs", "", "the last captured lines of a worker's stream", CMD_ID, 1, 1, logs_opts,
	    cmd_logs, show_logs },
	{ "shutdown", "", "stop a worker gracefully; waits until it is reaped", CMD_ID, 1, 1,
	    shutdown_opts, cmd_request, print_worker },
	{ "kill", "[SIGNAL]", "send a signal (TERM, KILL, 9...) to its process group", CMD_ID, 1, 2,
	    NULL, cmd_kill, show_nothing },
	{ "call", "FUNCTION [JSON]",
	    "call a function on the worker, print the result\n(a stream's items first, as JSON "
	    "lines)",
	    CMD_ID, 2, 3, NULL, cmd_call, print_value },
	{ "watch", "", "print events of every worker you may see, until ^C", 0, 0, 0, watch_opts,
	    cmd_watch, print_event },
	{ "stats", "", "herdd's counters", 0, 0, 0, NULL, cmd_request, print_stats },
	{ "reexec", "",
	    "replace herdd by a fresh exec of its binary, keeping\nevery worker and "
	    "connection; print the new herdd",
	    0, 0, 0, reexec_opts, cmd_request, print_stats },
	{ "spawn", "-- PATH [ARGS...]", "start a worker and print its id, pid and socket",
	    CMD_AUTOSTART | CMD_ARGV, 1, INT_MAX, spawn_opts, cmd_spawn, show_spawned },
	{ "map", "-- EXE [ARGS...] FUNCTION",
	    "call FUNCTION on each JSON line of stdin with a\npool of EXE workers; one JSON line "
	    "out per line\nin, a failed one as {\"index\":N,\"error\":{...}};\nexit 1 if any "
	    "failed",
	    CMD_AUTOSTART | CMD_ARGV, 2, INT_MAX, map_opts, cmd_map, NULL },
	{ 0 },
};

static const struct ctl_opt main_opts[] = {
	{ "socket", 0, "PATH",
	    "herdd's socket (default $HERD_SOCKET, then\n"
	    "$XDG_RUNTIME_DIR/herd/herdd.sock, then\n"
	    "/run/herd/herdd.sock)",
	    ctl_opt_string, 0, 0 },
	{ "json", 0, NULL, "print raw JSON results for scripts", ctl_opt_true, 0, 0 },
	{ "help", 'h', NULL, "this text", ctl_opt_true, 0, 0 },
	{ 0 },
};

/*
 * A worker named as ID or ID@INCARNATION ("w3@2"): with the incarnation,
 * herdd acts only while that process is the worker's current one.
 */
static int
set_id(json_t *params, const char *arg)
{
	const char *at = strchr(arg, '@');
	long long inc;

	if (!at) {
		json_object_set_new(params, "id", json_string(arg));
		return 0;
	}
	if (at == arg || ctl_parse_int(at + 1, 10, 1, UINT32_MAX, &inc) < 0)
		return ctl_usage_error("'%s' is not ID or ID@INCARNATION", arg);
	json_object_set_new(params, "id", json_stringn(arg, (size_t)(at - arg)));
	json_object_set_new(params, "incarnation", json_integer(inc));
	return 0;
}

/* "logs ID [--stream stderr|stdout] [--lines N]": a command's usage line. */
static const char *
command_usage(const struct command *cmd, char *buf, size_t len)
{
	bool section = ctl_opt_has_help(cmd->opts);

	snprintf(buf, len, "%s%s%s", cmd->name, cmd->flags & CMD_ID ? " ID" : "",
	    section ? " [OPTIONS]" : "");
	if (!section)
		ctl_opt_usage(buf, len, cmd->opts);
	if (*cmd->args)
		snprintf(buf + strlen(buf), len - strlen(buf), " %s", cmd->args);
	return buf;
}

static void
print_help(FILE *f)
{
	const struct command *cmd;
	char usage[128];

	fputs("Usage: herdctl [--socket PATH] [--json] COMMAND [ARGS]\n"
	      "\n"
	      "Look at and control the workers herdd supervises.\n"
	      "\n"
	      "Commands:\n",
	    f);
	for (cmd = commands; cmd->name; cmd++)
		ctl_help_row(f, command_usage(cmd, usage, sizeof(usage)), cmd->help);
	for (cmd = commands; cmd->name; cmd++) {
		if (ctl_opt_has_help(cmd->opts)) {
			fprintf(f, "\n%s options:\n", cmd->name);
			ctl_opt_help(f, cmd->opts);
		}
	}
	fputs("\nOptions:\n", f);
	ctl_opt_help(f, main_opts);
	fputs("\nExit status: 0 on success, 1 if the operation failed, 2 for a usage error.\n", f);
}

/* "herdctl COMMAND --help", for a command whose options include --help. */
static void
print_command_help(FILE *f, const struct command *cmd)
{
	char usage[128];

	fprintf(f, "Usage: herdctl [--socket PATH] %s\n\n%s\n\nOptions:\n",
	    command_usage(cmd, usage, sizeof(usage)), cmd->help);
	ctl_opt_help(f, cmd->opts);
	fputs("\nExit status: 0 on success, 1 if the operation failed, 2 for a usage error.\n", f);
}

static const struct command *
find_command(const char *name)
{
	const struct command *cmd;

	for (cmd = commands; cmd->name; cmd++) {
		if (!strcmp(cmd->name, name))
			return cmd;
	}
	return NULL;
}

/* Parses a command's options and counts its arguments, then runs it. argv[0] is its name. */
static int
run(struct ctl *c, const struct command *cmd, int argc, char **argv)
{
	json_t *params = json_object();
	char usage[128];
	int r = 0, nargs;

	command_usage(cmd, usage, sizeof(usage));
	/* getopt starts afresh on the command's own argv. */
	optind = 0;
	if (cmd->opts)
		r = ctl_opt_parse(cmd->opts, cmd->flags & CMD_ARGV, params, argc, argv, usage);
	else
		optind = 1;
	nargs = argc - optind;
	if (r == 0 && json_is_true(json_object_get(params, "help"))) {
		print_command_help(stdout, cmd);
		json_decref(params);
		return EXIT_SUCCESS;
	}
	if (r == 0 && (nargs < cmd->min_args || nargs > cmd->max_args))
		r = cmd->max_args == 0 ? ctl_usage_error("%s takes no argument", cmd->name)
		                       : ctl_usage_error("%s", usage);
	if (r) {
		json_decref(params);
		return r;
	}
	if ((cmd->flags & CMD_ID) && set_id(params, argv[optind++]) < 0) {
		json_decref(params);
		return EXIT_USAGE;
	}
	return cmd->run(c, cmd, params, argv + optind);
}

int
main(int argc, char **argv)
{
	json_t *globals = json_object();
	const struct command *cmd = NULL;
	struct ctl c = { 0 };
	int r;

	r = ctl_opt_parse(main_opts, true, globals, argc, argv, "unknown option");
	if (r == 0 && json_is_true(json_object_get(globals, "help"))) {
		print_help(stdout);
		json_decref(globals);
		return EXIT_SUCCESS;
	}
	if (r == 0 && optind >= argc)
		r = ctl_usage_error("a command is needed");
	if (r == 0 && !(cmd = find_command(argv[optind])))
		r = ctl_usage_error("unknown command '%s'", argv[optind]);
	/*
	 * Looking at herdd must not start one (tmux's ls does not start a server
	 * either); only spawn starts a private herdd when none runs.
	 */
	if (r == 0 && !(cmd->flags & CMD_AUTOSTART) && setenv("HERD_NO_AUTOSTART", "1", 0) < 0)
		r = EXIT_FAILURE;
	if (r == 0) {
		c.socket = json_string_value(json_object_get(globals, "socket"));
		c.json = json_is_true(json_object_get(globals, "json"));
		/* Only a spawn is a master's act; looking and stopping are an inspector's. */
		c.master = cmd->flags & CMD_AUTOSTART;
		r = run(&c, cmd, argc - optind, argv + optind);
	}
	ctl_disconnect(&c);
	json_decref(globals);
	return r;
}
