/* SPDX-License-Identifier: MIT */
/*
 * herdctl's pieces: commands (herdctl.c), the conversation with herdd
 * (herdctl-conn.c) and output for people (herdctl-format.c).
 */
#ifndef HERDCTL_H
#define HERDCTL_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

struct ctl_conn;

struct ctl {
	const char *socket; /* --socket, or NULL for libherd's default */
	bool json; /* --json: print raw results for scripts */
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

/* ---- herdd (herdctl-conn.c) ---- */

/* Connects to herdd as an inspector. Returns 0 or -errno (error printed). */
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
 * Subscribes to every worker this uid may see and calls cb for each event
 * (params of the notification, borrowed) until herdd closes the connection
 * or cb returns non-zero. Returns 0 or -errno (error printed).
 */
int ctl_watch(struct ctl *c, int (*cb)(json_t *event, void *userdata), void *userdata);
/*
 * Connects to a worker's socket and calls function(args) (args borrowed, may
 * be NULL). Returns 0 with *ret the result, or -errno with the error printed.
 */
int ctl_call(const char *socket, const char *function, json_t *args, json_t **ret);

/* ---- output (herdctl-format.c) ---- */

/* "450ms", "12.3s", "3m04s", "1h02m", "2d03h"; "-" for a non-integer. */
void fmt_duration(char *buf, size_t len, const json_t *ms);
/* "512K", "1.8M", "2.0G"; "-" for a non-integer. */
void fmt_kib(char *buf, size_t len, const json_t *kib);
/* The worker table: ID NAME PID STATE UPTIME HB-AGE RSS CPU REASON. */
void print_worker_table(FILE *f, const json_t *workers);
/* One worker, one "field: value" line each. */
void print_worker(FILE *f, const json_t *worker);
/* Daemon counters, nested objects flattened to dotted names. */
void print_stats(FILE *f, const json_t *stats);
/* One event: time, event, id, name, pid, reason and message, then the stderr tail. */
void print_event(FILE *f, const json_t *event);
/* A JSON value for people: strings bare, the rest indented JSON. */
void print_value(FILE *f, const json_t *v);

#endif
