/* SPDX-License-Identifier: MIT */
/*
 * The message parser as it was before herd had its own decoder: checks over
 * the whole text, then json_loadb. Kept as the oracle that the one-pass
 * decoder must agree with, code for code. One rule came later: an integer
 * past 64 bits is read as a real (PROTO_DECODE_BIG_INT_REAL), not refused.
 */
#ifndef HERD_FUZZ_REF_PARSE_H
#define HERD_FUZZ_REF_PARSE_H

#include <stddef.h>

#include <jansson.h>

/*
 * Returns 0 with *ret a new reference (always an object), or the HERD_E_*
 * code proto_parse() reported for this text before (and *ret NULL).
 */
int ref_parse(const char *text, size_t len, size_t max_message, unsigned max_depth, json_t **ret);

#endif
