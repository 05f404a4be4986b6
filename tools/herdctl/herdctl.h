/* SPDX-License-Identifier: MIT */
/*
 * herdctl's pieces: commands (herdctl.c), options from tables
 * (herdctl-opt.c), the conversation with herdd (herdctl-conn.c) and output
 * for people (herdctl-format.c).
 */
#ifndef HERDCTL_H
#define HERDCTL_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

/* Exit codes: 0 success, 1 the operation failed, 2 usage error. */
#define EXIT_USAGE 2

struct ctl_conn;

struct ctl {
	const char *socket; /* --socket, or NULL for libherd's default */
	bool json; /* --json: print raw results for scripts */
	bool master; /* the command spawns: connect as a master */
	struct ctl_conn *conn;
};

/*
 * Prints "herdctl: NAME: MESSAGE" on stderr. Every failure ends up here
 * exactly once, so scripts see one line.
 */
void ctl_error(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prints a libherd error (err may be NULL: then strerror(-r) about what). */
struct herd_error;
void ctl_print_herd_error(int r, const struct herd_error *err, const char *what);

/* ---- options (herdctl-opt.c) ---- */

struct ctl_opt;
/*
 * Stores an option's value (arg is NULL for an option without one) in into.
 * Returns 0, or the exit status after printing why not.
 */
typedef int ctl_opt_set(json_t *into, const struct ctl_opt *o, const char *arg);

/* One option: getopt_long's entry, its --help line and how its value is stored. */
struct ctl_opt {
	const char *name; /* --NAME; the value goes under NAME with '_' for '-' */
	char short_name; /* also -X, or 0 */
	const char *arg; /* the value's name in --help, or NULL for none */
	/* Its --help text ('\n' between lines); NULL: shown only in the command's usage line. */
	const char *help;
	ctl_opt_set *set;
	long long min, max; /* bounds for numbers */
};

/* Setters: true; the string; one of arg's '|'-separated words; a number; an octal mode; JSON. */
ctl_opt_set ctl_opt_true, ctl_opt_string, ctl_opt_choice, ctl_opt_int, ctl_opt_mode, ctl_opt_json;

/* Stores v (stolen) under the option's key. Returns 0, or EXIT_FAILURE when out of memory. */
int ctl_opt_store(json_t *into, const struct ctl_opt *o, json_t *v);

/*
 * Parses argv's options (from optind, getopt's way) into into, by rows ending
 * in a row without name. in_order stops at the first non-option. An unknown
 * option prints usage as a usage error. Returns 0, or the exit status.
 */
int ctl_opt_parse(const struct ctl_opt *rows, bool in_order, json_t *into, int argc, char **argv,
    const char *usage);
/* Prints the --help lines of rows that have help text. */
void ctl_opt_help(FILE *f, const struct ctl_opt *rows);
/* True if some row has help text (then the options get a section of their own in --help). */
bool ctl_opt_has_help(const struct ctl_opt *rows);
/* Appends " [--NAME ARG]" for every row to the string in buf (of size len). */
void ctl_opt_usage(char *buf, size_t len, const struct ctl_opt *rows);
/* One --help line: left, then help in the description column; long lefts get a line of their own. */
void ctl_help_row(FILE *f, const char *left, const char *help);

/* Prints "herdctl: usage: WHAT (see herdctl --help)". Returns EXIT_USAGE. */
int ctl_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Parses an integer in [min, max] written in base. Returns 0 or -EINVAL. */
int ctl_parse_int(const char *s, int base, long long min, long long max, long long *ret);
/* Parses JSON text from the command line. Returns a new reference, or NULL (printed). */
json_t *ctl_parse_json(const char *what, const char *text);

/* Seconds with fractions (--timeout 0.5), stored in ms, at most max ms. */
ctl_opt_set ctl_opt_seconds;

/* ---- map (herdctl-map.c) ---- */

/*
 * map -- EXE [ARGS...] FUNCTION: JSON lines from stdin through a pool of EXE,
 * one JSON line out per line in. params (stolen) holds the options. Returns
 * the exit status: 1 if any task failed.
 */
int ctl_map(struct ctl *c, json_t *params, char **args);

/* ---- herdd (herdctl-conn.c) ---- */

/*
 * Connects to herdd: as a master for a command that spawns, else as an
 * inspector (stats does not count it among masters). Returns 0 or -errno
 * (error printed; "no herdd runs at PATH" when nobody serves the socket).
 */
int ctl_connect(struct ctl *c);
void ctl_disconnect(struct ctl *c);
/*
 * Calls method(params) on herdd (params stolen, may be NULL). Returns 0 with
 * *ret a new reference to the result, or -errno with the error printed.
 */
int ctl_request(struct ctl *c, const char *method, json_t *params, json_t **ret);
/*
 * Spawns a worker from spawn params (stolen). Returns 0 with *ret the spawn
 * result, or -errno with the error printed.
 */
int ctl_spawn(struct ctl *c, json_t *params, json_t **ret);
/*
 * Subscribes to every worker this uid may see (sub: more subscribe params,
 * stolen, may be NULL) and calls cb for each event (params of the
 * notification, borrowed) until herdd closes the connection or cb returns
 * non-zero. Returns 0 or -errno (error printed).
 */
int ctl_watch(struct ctl *c, json_t *sub, int (*cb)(json_t *event, void *userdata), void *userdata);
/*
 * logs with follow (params stolen): cb gets the reply, then each "log"
 * notification's params for that worker (borrowed; "lines", "dropped",
 * "end"), until the stream ends. Returns 0 or -errno (error printed).
 */
int ctl_follow(
    struct ctl *c, json_t *params, int (*cb)(json_t *lines, void *userdata), void *userdata);
/* Runs the connection's callbacks until *stop is set. Returns 0 or -errno (error printed as what). */
int ctl_listen(struct ctl *c, const char *what, bool *stop);
/*
 * Connects to the worker a WORKER record (borrowed) names, and only while that
 * process still serves it (herd_worker_connect()). Returns 0 with *ret, or
 * -errno with the error printed.
 */
struct herd_conn;
int ctl_worker_connect(struct ctl *c, const json_t *record, struct herd_conn **ret);
/*
 * Calls function(args) (args borrowed, may be NULL) on the worker record names.
 * A function of kind (may be NULL) "pipe" or "state" is a stream: its items
 * are printed as JSON lines first. Returns 0 with *ret the result, or -errno
 * with the error printed.
 */
int ctl_call(struct ctl *c, const json_t *record, const char *function, const char *kind,
    json_t *args, json_t **ret);

/* ---- output (herdctl-format.c) ---- */

/* "450ms", "12.3s", "3m04s", "1h02m", "2d03h"; "-" for a non-integer. */
void fmt_duration(char *buf, size_t len, const json_t *ms);
/* "512K", "1.8M", "2.0G"; "-" for a non-integer. */
void fmt_kib(char *buf, size_t len, const json_t *kib);
/* The worker table: ID NAME POOL PID OWNER STATE UPTIME HB-AGE RSS CPU REASON. */
void print_worker_table(FILE *f, const json_t *workers);
/* One worker, one "field: value" line each. */
void print_worker(FILE *f, const json_t *worker);
/* Daemon counters, nested objects flattened to dotted names. */
void print_stats(FILE *f, const json_t *stats);
/*
 * One event: time, event, id, name, pid, the reason unless it is the event's
 * name, and the message; then the stderr tail, unless the worker ended normally.
 */
void print_event(FILE *f, const json_t *event);
/* A JSON value for people: strings bare, the rest indented JSON. */
void print_value(FILE *f, const json_t *v);

#endif
