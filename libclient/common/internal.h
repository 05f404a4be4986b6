/* SPDX-License-Identifier: MIT */
/*
 * libherd internals shared by the calling side (client*.c, master*.c) and the
 * serving side (worker*.c, server*.c). Nothing here is exported: non-static
 * functions are named herd__* and the version script hides them.
 */
#ifndef HERD_INTERNAL_H
#define HERD_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "herd/common.h"
#include "common/peer.h"
#include "herd/protocol.h"
#include "herd/worker.h"

#define HERD__EXPORT HERD_EXPORT

/* ---- settings (settings.c) ---- */

/*
 * The RPC settings are proto's table (proto/settings.h: names, bounds,
 * defaults, what 0 means); libherd adds where they come from. The alias keeps
 * libherd's own name for the struct.
 */
#include "settings.h"
#define herd__settings proto_settings

/* Fills *ret with the built-in defaults. */
void herd__settings_defaults(struct herd__settings *ret);

/*
 * Resolves the effective settings, field by field: defaults, overridden by
 * in_code (a JSON object given by the program, borrowed, may be NULL),
 * overridden by the JSON object in the environment variable HERD_RPC_SETTINGS.
 * An unknown field, a value of the wrong type or out of range, or an
 * environment value that is not a JSON object is an error.
 *
 * Returns 0, -EINVAL (with *reterr_text set to a malloc'd sentence naming the
 * source and field, when reterr_text is not NULL) or -ENOMEM.
 */
int herd__settings_resolve(const json_t *in_code, struct herd__settings *ret, char **reterr_text);

/*
 * Applies the fields of obj (borrowed) on top of *s. source names obj in error
 * texts ("settings", "HERD_RPC_SETTINGS"). Same returns as resolve.
 */
int herd__settings_apply(
    struct herd__settings *s, const json_t *obj, const char *source, char **reterr_text);

/* The settings as a JSON object with every field: a new reference, or NULL on ENOMEM. */
json_t *herd__settings_to_json(const struct herd__settings *s);

/* ---- errors (error.c) ---- */

struct herd_error {
	unsigned n_ref;
	int code;
	char *name;
	char *message;
	json_t *data; /* object, always holds "name" */
};

/*
 * A new error (one reference) for code, with message (NULL: the code's name)
 * and data (borrowed, may be NULL; copied so "name" can be added). Returns
 * NULL on ENOMEM.
 */
herd_error *herd__error_new(int code, const char *message, const json_t *data);
herd_error *herd__error_newf(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
herd_error *herd__error_newv(int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* Maps an error code received from a peer to the errno a call returns. */
int herd__error_to_errno(int code);

struct proto_msg;
/*
 * How a reply m ends its call: 0 with *ret_err NULL for a result, else the
 * error's errno with *ret_err its new herd_error (the caller unrefs it).
 */
int herd__reply_outcome(const struct proto_msg *m, herd_error **ret_err);

/* Replaces *slot with err (a new reference is taken; err may be NULL). */
void herd__error_set(herd_error **slot, herd_error *err);

/* ---- small helpers ---- */

/* herd__now_usec() and herd__deadline() come with the peer (common/peer.h). */

/* Marks this process as taking on the HERD_ROLE_* bits in role (master-app.c). */
void herd__role_add(int role);
/* The worker type herd_start_app() was given, or NULL (master-app.c). */
const struct herd_worker_type *herd__app_type(void);
/*
 * herd_map_reduce()'s local mode (worker-local.c): runs function over args
 * (borrowed) in this process with type's functions, in order, folding with
 * type's combine named combiner (or with combine when combiner is NULL).
 * Stops at the first error. Returns 0 with *ret_value (new reference; JSON
 * null when nothing was folded), or -errno with *ret_err (new reference, or
 * NULL) saying why.
 */
int herd__local_reduce(const struct herd_worker_type *type, const char *function, json_t *args,
    const char *combiner, herd_combine_fn combine, json_t **ret_value, herd_error **ret_err);

#define HERD__USEC_PER_MSEC 1000ull
#define HERD__USEC_INFINITY UINT64_MAX

static inline void
herd__freep(void *p)
{
	free(*(void **)p);
}

static inline void
herd__json_decrefp(json_t **p)
{
	json_decref(*p);
}

/*
 * Defines a public handle's exported NAME_ref and NAME_unref (systemd's
 * DEFINE_TRIVIAL_REF_UNREF_FUNC): the handle counts its references in n_ref,
 * both accept NULL, unref returns NULL, and the last unref calls
 * free_fn(handle), which releases whatever the handle holds.
 */
#define HERD__DEFINE_REF_UNREF(type, name, free_fn)                                                \
	HERD_EXPORT type *name##_ref(type *p)                                                      \
	{                                                                                          \
		if (p)                                                                             \
			p->n_ref++;                                                                \
		return p;                                                                          \
	}                                                                                          \
	HERD_EXPORT type *name##_unref(type *p)                                                    \
	{                                                                                          \
		if (p && --p->n_ref == 0)                                                          \
			free_fn(p);                                                                \
		return NULL;                                                                       \
	}

/*
 * The same for a handle whose count lives in an embedded member (a call's
 * struct herd__op, a connection's peer): ref_fn and unref_fn take &p->member.
 */
#define HERD__DEFINE_REF_UNREF_VIA(type, name, member, ref_fn, unref_fn)                           \
	HERD_EXPORT type *name##_ref(type *p)                                                      \
	{                                                                                          \
		if (p)                                                                             \
			ref_fn(&p->member);                                                        \
		return p;                                                                          \
	}                                                                                          \
	HERD_EXPORT type *name##_unref(type *p)                                                    \
	{                                                                                          \
		if (p)                                                                             \
			unref_fn(&p->member);                                                      \
		return NULL;                                                                       \
	}

/*
 * A public callback setter: check, an int expression over the handle p and
 * the callback cb, is 0 or a negative errno to return; on 0 the callback and
 * its userdata are stored in p's members cb_member and data_member.
 */
#define HERD__DEFINE_CALLBACK_SETTER(name, type, cb_type, check, cb_member, data_member)           \
	HERD_EXPORT int name(type *p, cb_type cb, void *userdata)                                  \
	{                                                                                          \
		int r = (check);                                                                   \
                                                                                                   \
		if (r < 0)                                                                         \
			return r;                                                                  \
		p->cb_member = cb;                                                                 \
		p->data_member = userdata;                                                         \
		return 0;                                                                          \
	}

/*
 * A public getter: name(p) is expr, an expression over the handle p, and
 * fallback where p is NULL (every handle's getters accept NULL).
 */
#define HERD__DEFINE_GETTER(name, type, ret_type, expr, fallback)                                  \
	HERD_EXPORT ret_type name(type *p)                                                         \
	{                                                                                          \
		return p ? (expr) : (fallback);                                                    \
	}

/*
 * Intrusive doubly linked lists, as systemd's LIST_PREPEND/LIST_REMOVE: head
 * points at the first item, and an item links through its members prev and
 * next (named by the caller, so one struct can sit on several lists).
 */
#define HERD__LIST_PREPEND(head, item, prev, next)                                                 \
	do {                                                                                       \
		(item)->prev = NULL;                                                               \
		(item)->next = (head);                                                             \
		if (head)                                                                          \
			(head)->prev = (item);                                                     \
		(head) = (item);                                                                   \
	} while (0)

#define HERD__LIST_REMOVE(head, item, prev, next)                                                  \
	do {                                                                                       \
		if ((item)->prev)                                                                  \
			(item)->prev->next = (item)->next;                                         \
		else                                                                               \
			(head) = (item)->next;                                                     \
		if ((item)->next)                                                                  \
			(item)->next->prev = (item)->prev;                                         \
		(item)->prev = (item)->next = NULL;                                                \
	} while (0)

/* The same for a list that also keeps its last item in tail. */
#define HERD__TLIST_PREPEND(head, tail, item, prev, next)                                          \
	do {                                                                                       \
		if (!(head))                                                                       \
			(tail) = (item);                                                           \
		HERD__LIST_PREPEND(head, item, prev, next);                                        \
	} while (0)

#define HERD__TLIST_APPEND(head, tail, item, prev, next)                                           \
	do {                                                                                       \
		(item)->next = NULL;                                                               \
		(item)->prev = (tail);                                                             \
		if (tail)                                                                          \
			(tail)->next = (item);                                                     \
		else                                                                               \
			(head) = (item);                                                           \
		(tail) = (item);                                                                   \
	} while (0)

#define HERD__TLIST_REMOVE(head, tail, item, prev, next)                                           \
	do {                                                                                       \
		if (!(item)->next)                                                                 \
			(tail) = (item)->prev;                                                     \
		HERD__LIST_REMOVE(head, item, prev, next);                                         \
	} while (0)

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(herd__freep)
#define _cleanup_json_ _cleanup_(herd__json_decrefp)

/* ---- serving side (WORKER appends its section below) ---- */

#endif
