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

#include "herdctl.h"

/* Exit codes: 0 success, 1 the operation failed, 2 usage error. */
#define EXIT_USAGE 2

static const char usage_text[] =
    "Usage: herdctl [--socket PATH] [--json] COMMAND [ARGS]\n"
    "\n"
    "Look at and control the workers herdd supervises.\n"
    "\n"
    "Commands:\n"
    "  list [--all]                   workers (with --all, exited records too)\n"
    "  inspect ID                     one worker in detail\n"
    "  logs ID [--stream stderr|stdout] [--lines N]\n"
    "                                 the last captured lines of a worker's stream\n"
    "  shutdown ID [--grace-ms N]     stop a worker gracefully; waits until it is reaped\n"
    "  kill ID [SIGNAL]               send a signal (TERM, KILL, 9...) to its process group\n"
    "  call ID FUNCTION [JSON]        call a function on the worker, print the result\n"
    "  watch                          print events of every worker you may see, until ^C\n"
    "  stats                          herdd's counters\n"
    "  spawn [OPTIONS] -- PATH [ARGS...]\n"
    "                                 start a worker and print its id, pid and socket\n"
    "\n"
    "spawn options:\n"
    "  --name NAME                    label shown in list and events\n"
    "  --env K=V                      add a variable (repeatable); PATH, LANG, TZ and\n"
    "                                 LC_* are passed from herdctl's environment\n"
    "  --cwd DIR                      working directory (default /)\n"
    "  --umask MODE                   octal, default 022\n"
    "  --init JSON                    the worker-state init argument\n"
    "  --shutdown-on MODE             explicit (default), connection_closed, or\n"
    "                                 master_disconnect. herdctl exits as soon as the\n"
    "                                 worker is ready, so with master_disconnect the\n"
    "                                 worker stops at once; explicit workers live until\n"
    "                                 'herdctl shutdown ID'\n"
    "  --stderr null|capture|FILE     where the worker's stderr goes (default capture)\n"
    "  --stdout null|capture|FILE     where its stdout goes (default null); FILE is an\n"
    "                                 absolute path, append with +FILE\n"
    "  --spawn-timeout-ms N           fork-to-ready deadline\n"
    "\n"
    "Options:\n"
    "  --socket PATH                  herdd's socket (default $HERD_SOCKET, then\n"
    "                                 $XDG_RUNTIME_DIR/herd/herdd.sock, then\n"
    "                                 /run/herd/herdd.sock)\n"
    "  --json                         print raw JSON results for scripts\n"
    "  -h, --help                     this text\n"
    "\n"
    "Exit status: 0 on success, 1 if the operation failed, 2 for a usage error.\n";

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

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "herdctl: usage: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see herdctl --help)\n");
	return EXIT_USAGE;
}

/* Prints a result: raw compact JSON with --json, else through show. */
static void
output(const struct ctl *c, const json_t *result, void (*show)(FILE *, const json_t *))
{
	if (c->json || !show) {
		char *text = json_dumps(result, JSON_COMPACT | JSON_ENCODE_ANY);

		printf("%s\n", text ? text : "null");
		free(text);
	} else {
		show(stdout, result);
	}
	fflush(stdout);
}

/* Parses a decimal integer argument in [min, max]. Returns 0 or -EINVAL. */
static int
parse_int(const char *s, long long min, long long max, long long *ret)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

/* Parses JSON text given on the command line. Returns a new reference or NULL (printed). */
static json_t *
parse_json_arg(const char *what, const char *text)
{
	json_error_t err;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

	if (!v)
		ctl_error("invalid_params", "%s is not JSON: %s", what, err.text);
	return v;
}

/* Runs one request and prints its result. */
static int
simple(struct ctl *c, const char *method, json_t *params, void (*show)(FILE *, const json_t *))
{
	json_t *res;

	if (ctl_request(c, method, params, &res) < 0)
		return EXIT_FAILURE;
	output(c, res, show);
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

static int
cmd_list(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = { { "all", no_argument, NULL, 'a' }, { 0 } };
	bool all = false;
	int o;

	while ((o = getopt_long(argc, argv, "a", opts, NULL)) != -1) {
		if (o != 'a')
			return usage_error("list [--all]");
		all = true;
	}
	if (optind != argc)
		return usage_error("list takes no argument");
	return simple(c, "list", json_pack("{s:b}", "all", all), show_list);
}

static int
cmd_logs(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = { { "stream", required_argument, NULL, 's' },
		{ "lines", required_argument, NULL, 'n' }, { 0 } };
	json_t *params = json_object();
	long long lines;
	int o;

	while ((o = getopt_long(argc, argv, "s:n:", opts, NULL)) != -1) {
		if (o == 's' && (!strcmp(optarg, "stderr") || !strcmp(optarg, "stdout"))) {
			json_object_set_new(params, "stream", json_string(optarg));
		} else if (o == 'n' && parse_int(optarg, 1, 1000, &lines) == 0) {
			json_object_set_new(params, "lines", json_integer(lines));
		} else {
			json_decref(params);
			return usage_error("logs ID [--stream stderr|stdout] [--lines 1..1000]");
		}
	}
	if (optind + 1 != argc) {
		json_decref(params);
		return usage_error("logs takes one worker ID");
	}
	json_object_set_new(params, "id", json_string(argv[optind]));
	return simple(c, "logs", params, show_logs);
}

static int
cmd_shutdown(struct ctl *c, int argc, char **argv)
{
	static const struct option opts[] = { { "grace-ms", required_argument, NULL, 'g' }, { 0 } };
	json_t *params = json_object();
	long long grace;
	int o;

	while ((o = getopt_long(argc, argv, "g:", opts, NULL)) != -1) {
		if (o != 'g' || parse_int(optarg, 0, 600000, &grace) < 0) {
			json_decref(params);
			return usage_error("shutdown ID [--grace-ms 0..600000]");
		}
		json_object_set_new(params, "grace_ms", json_integer(grace));
	}
	if (optind + 1 != argc) {
		json_decref(params);
		return usage_error("shutdown takes one worker ID");
	}
	json_object_set_new(params, "id", json_string(argv[optind]));
	return simple(c, "shutdown", params, print_worker);
}

static int
cmd_kill(struct ctl *c, int argc, char **argv)
{
	json_t *params;
	long long num;

	if (argc < 2 || argc > 3)
		return usage_error("kill ID [SIGNAL]");
	params = json_pack("{s:s}", "id", argv[1]);
	if (argc == 3) {
		/* A number goes as a number; herdd checks names and ranges. */
		if (parse_int(argv[2], 1, 64, &num) == 0)
			json_object_set_new(params, "signal", json_integer(num));
		else
			json_object_set_new(params, "signal", json_string(argv[2]));
	}
	return simple(c, "kill", params, show_nothing);
}

static int
cmd_call(struct ctl *c, int argc, char **argv)
{
	json_t *args = NULL, *worker, *res;
	const char *socket;
	int r;

	if (argc < 3 || argc > 4)
		return usage_error("call ID FUNCTION [JSON]");
	if (argc == 4 && !(args = parse_json_arg("the argument", argv[3])))
		return EXIT_USAGE;
	if (ctl_request(c, "inspect", json_pack("{s:s}", "id", argv[1]), &worker) < 0) {
		json_decref(args);
		return EXIT_FAILURE;
	}
	socket = json_string_value(json_object_get(worker, "socket"));
	if (!socket) {
		ctl_error("worker_exited", "worker %s is %s and has no socket", argv[1],
		    json_string_value(json_object_get(worker, "state")) ?: "gone");
		json_decref(worker);
		json_decref(args);
		return EXIT_FAILURE;
	}
	r = ctl_call(socket, argv[2], args, &res);
	json_decref(worker);
	json_decref(args);
	if (r < 0)
		return EXIT_FAILURE;
	output(c, res, print_value);
	json_decref(res);
	return EXIT_SUCCESS;
}

static int
watch_event(json_t *event, void *userdata)
{
	const struct ctl *c = userdata;

	output(c, event, print_event);
	return 0;
}

/* Fills a spawn's stdout/stderr member from null|capture|FILE|+FILE. */
static int
set_stream(json_t *params, const char *key, const char *v)
{
	bool append = v[0] == '+';
	const char *file = append ? v + 1 : v;

	if (!strcmp(v, "null") || !strcmp(v, "capture"))
		return json_object_set_new(params, key, json_string(v));
	if (file[0] != '/')
		return -EINVAL;
	return json_object_set_new(
	    params, key, json_pack("{s:s, s:b}", "file", file, "append", append));
}

/* Parses spawn's options into params. Returns 0, or EXIT_USAGE after printing why. */
static int
spawn_options(json_t *params, json_t *env, int argc, char **argv)
{
	static const struct option opts[] = { { "name", required_argument, NULL, 'n' },
		{ "env", required_argument, NULL, 'e' }, { "cwd", required_argument, NULL, 'c' },
		{ "umask", required_argument, NULL, 'u' }, { "init", required_argument, NULL, 'i' },
		{ "shutdown-on", required_argument, NULL, 's' },
		{ "stderr", required_argument, NULL, 'E' },
		{ "stdout", required_argument, NULL, 'O' },
		{ "spawn-timeout-ms", required_argument, NULL, 't' }, { 0 } };
	long long v;
	char *end;
	json_t *j;
	int o;

	while ((o = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		switch (o) {
		case 'n':
		case 'c':
			json_object_set_new(params, o == 'n' ? "name" : "cwd", json_string(optarg));
			break;
		case 'e':
			end = strchr(optarg, '=');
			if (!end || end == optarg)
				return usage_error("--env takes K=V, not '%s'", optarg);
			*end = '\0';
			json_object_set_new(env, optarg, json_string(end + 1));
			break;
		case 'u':
			errno = 0;
			v = strtoll(optarg, &end, 8);
			if (errno || *end || v < 0 || v > 0777)
				return usage_error("--umask takes an octal mode, not '%s'", optarg);
			json_object_set_new(params, "umask", json_integer(v));
			break;
		case 'i':
			if (!(j = parse_json_arg("--init", optarg)))
				return EXIT_USAGE;
			json_object_set_new(params, "init", j);
			break;
		case 's':
			json_object_set_new(params, "shutdown_on", json_string(optarg));
			break;
		case 'E':
		case 'O':
			if (set_stream(params, o == 'E' ? "stderr" : "stdout", optarg) < 0)
				return usage_error(
				    "--%s takes null, capture, FILE or +FILE (absolute)",
				    o == 'E' ? "stderr" : "stdout");
			break;
		case 't':
			if (parse_int(optarg, 0, UINT32_MAX, &v) < 0)
				return usage_error("--spawn-timeout-ms takes a number of ms");
			json_object_set_new(params, "spawn_timeout_ms", json_integer(v));
			break;
		default:
			return usage_error("spawn [OPTIONS] -- PATH [ARGS...]");
		}
	}
	return 0;
}

static int
cmd_spawn(struct ctl *c, int argc, char **argv)
{
	json_t *params = json_pack("{s:s}", "shutdown_on", "explicit");
	json_t *env = json_object(), *argvj, *res;
	int r, i;

	r = spawn_options(params, env, argc, argv);
	if (r == 0 && optind >= argc)
		r = usage_error("spawn needs the executable's path after --");
	if (r) {
		json_decref(params);
		json_decref(env);
		return r;
	}
	argvj = json_array();
	for (i = optind; i < argc; i++)
		json_array_append_new(argvj, json_string(argv[i]));
	json_object_set_new(params, "path", json_string(argv[optind]));
	json_object_set_new(params, "argv", argvj);
	json_object_set_new(params, "env", env);
	if (ctl_spawn(c, params, &res) < 0)
		return EXIT_FAILURE;
	output(c, res, show_spawned);
	json_decref(res);
	return EXIT_SUCCESS;
}

/* Commands that take exactly one worker ID and nothing else. */
static int
cmd_one_id(
    struct ctl *c, const char *method, int argc, char **argv, void (*show)(FILE *, const json_t *))
{
	if (argc != 2)
		return usage_error("%s takes one worker ID", method);
	return simple(c, method, json_pack("{s:s}", "id", argv[1]), show);
}

static int
run(struct ctl *c, int argc, char **argv)
{
	const char *cmd = argv[0];

	/* Each command parses its own options from its own argv[0]. */
	optind = 0;
	if (!strcmp(cmd, "list"))
		return cmd_list(c, argc, argv);
	if (!strcmp(cmd, "inspect"))
		return cmd_one_id(c, "inspect", argc, argv, print_worker);
	if (!strcmp(cmd, "logs"))
		return cmd_logs(c, argc, argv);
	if (!strcmp(cmd, "shutdown"))
		return cmd_shutdown(c, argc, argv);
	if (!strcmp(cmd, "kill"))
		return cmd_kill(c, argc, argv);
	if (!strcmp(cmd, "call"))
		return cmd_call(c, argc, argv);
	if (!strcmp(cmd, "stats"))
		return argc == 1 ? simple(c, "stats", NULL, print_stats)
		                 : usage_error("stats takes no argument");
	if (!strcmp(cmd, "watch")) {
		if (argc != 1)
			return usage_error("watch takes no argument");
		return ctl_watch(c, watch_event, c) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	}
	if (!strcmp(cmd, "spawn"))
		return cmd_spawn(c, argc, argv);
	return usage_error("unknown command '%s'", cmd);
}

/* Whether a command is known, so a typo fails before connecting. */
static bool
known_command(const char *cmd)
{
	static const char *const cmds[] = { "list", "inspect", "logs", "shutdown", "kill", "call",
		"watch", "stats", "spawn", NULL };
	size_t i;

	for (i = 0; cmds[i]; i++) {
		if (!strcmp(cmd, cmds[i]))
			return true;
	}
	return false;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' }, { "help", no_argument, NULL, 'h' }, { 0 } };
	struct ctl c = { 0 };
	int o, r;

	while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			c.socket = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 'h':
			fputs(usage_text, stdout);
			return EXIT_SUCCESS;
		default:
			return usage_error("unknown option");
		}
	}
	if (optind >= argc)
		return usage_error("a command is needed");
	if (!known_command(argv[optind]))
		return usage_error("unknown command '%s'", argv[optind]);
	/*
	 * Looking at herdd must not start one (tmux's ls does not start a server
	 * either); only spawn starts a private herdd when none runs.
	 */
	if (strcmp(argv[optind], "spawn") != 0 && setenv("HERD_NO_AUTOSTART", "1", 0) < 0)
		return EXIT_FAILURE;
	r = run(&c, argc - optind, argv + optind);
	ctl_disconnect(&c);
	return r;
}
