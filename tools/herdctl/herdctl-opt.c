/* SPDX-License-Identifier: MIT */
/*
 * Options from tables: one row per option gives getopt_long its entry, --help
 * its line and the setter that stores the value, so an option is named once.
 * Every value lands in a JSON object under the option's name with '_' for
 * '-' (--grace-ms sets "grace_ms"), which for commands is herdd's params.
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "herdctl.h"

/* Rows one table may hold; a longer table is a programming error caught at its first use. */
#define OPT_MAX 32
/* Where --help's descriptions start, after a two-space indent and one space. */
#define HELP_COLUMN 30

int
ctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "herdctl: usage: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see herdctl --help)\n");
	return EXIT_USAGE;
}

int
ctl_parse_int(const char *s, int base, long long min, long long max, long long *ret)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(s, &end, base);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

json_t *
ctl_parse_json(const char *what, const char *text)
{
	json_error_t err;
	json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &err);

	if (!v)
		ctl_error("invalid_params", "%s is not JSON: %s", what, err.text);
	return v;
}

/* The member an option sets: its name with '_' for '-'. */
static const char *
opt_key(const struct ctl_opt *o, char *buf, size_t len)
{
	char *p;

	snprintf(buf, len, "%s", o->name);
	for (p = buf; (p = strchr(p, '-')); p++)
		*p = '_';
	return buf;
}

int
ctl_opt_store(json_t *into, const struct ctl_opt *o, json_t *v)
{
	char key[64];

	return json_object_set_new(into, opt_key(o, key, sizeof(key)), v) < 0 ? EXIT_FAILURE : 0;
}

int
ctl_opt_true(json_t *into, const struct ctl_opt *o, const char *arg)
{
	(void)arg;
	return ctl_opt_store(into, o, json_true());
}

int
ctl_opt_string(json_t *into, const struct ctl_opt *o, const char *arg)
{
	return ctl_opt_store(into, o, json_string(arg));
}

int
ctl_opt_choice(json_t *into, const struct ctl_opt *o, const char *arg)
{
	const char *p = o->arg;
	size_t n = strlen(arg);

	for (; p; p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL) {
		if (strncmp(p, arg, n) == 0 && (p[n] == '|' || p[n] == '\0'))
			return ctl_opt_string(into, o, arg);
	}
	return ctl_usage_error("--%s takes %s, not '%s'", o->name, o->arg, arg);
}

int
ctl_opt_int(json_t *into, const struct ctl_opt *o, const char *arg)
{
	long long v;

	if (ctl_parse_int(arg, 10, o->min, o->max, &v) < 0)
		return ctl_usage_error(
		    "--%s takes a number in %lld..%lld, not '%s'", o->name, o->min, o->max, arg);
	return ctl_opt_store(into, o, json_integer(v));
}

int
ctl_opt_mode(json_t *into, const struct ctl_opt *o, const char *arg)
{
	long long v;

	if (ctl_parse_int(arg, 8, o->min, o->max, &v) < 0)
		return ctl_usage_error("--%s takes an octal mode, not '%s'", o->name, arg);
	return ctl_opt_store(into, o, json_integer(v));
}

int
ctl_opt_json(json_t *into, const struct ctl_opt *o, const char *arg)
{
	char what[64];
	json_t *v;

	snprintf(what, sizeof(what), "--%s", o->name);
	v = ctl_parse_json(what, arg);
	return v ? ctl_opt_store(into, o, v) : EXIT_USAGE;
}

int
ctl_opt_seconds(json_t *into, const struct ctl_opt *o, const char *arg)
{
	char *end;
	double s;

	errno = 0;
	s = strtod(arg, &end);
	if (errno || end == arg || *end || !(s > 0) || s * 1000.0 > (double)o->max)
		return ctl_usage_error(
		    "--%s takes seconds above 0 (0.5, 30...), not '%s'", o->name, arg);
	return ctl_opt_store(into, o, json_integer((json_int_t)(s * 1000.0 + 0.5) ?: 1));
}

/* getopt_long's value for row i: its short letter, or a number above every letter. */
static int
opt_val(const struct ctl_opt *rows, size_t i)
{
	return rows[i].short_name ? rows[i].short_name : 256 + (int)i;
}

int
ctl_opt_parse(const struct ctl_opt *rows, bool in_order, json_t *into, int argc, char **argv,
    const char *usage)
{
	struct option longopts[OPT_MAX + 1] = { { 0 } };
	char shorts[2 * OPT_MAX + 2], *s = shorts;
	size_t n, i;
	int o, r;

	if (in_order)
		*s++ = '+';
	for (n = 0; rows[n].name; n++) {
		if (n == OPT_MAX)
			abort();
		longopts[n] = (struct option){ rows[n].name,
			rows[n].arg ? required_argument : no_argument, NULL, opt_val(rows, n) };
		if (rows[n].short_name) {
			*s++ = rows[n].short_name;
			if (rows[n].arg)
				*s++ = ':';
		}
	}
	*s = '\0';
	while ((o = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
		for (i = 0; i < n && opt_val(rows, i) != o; i++) {
		}
		if (i == n)
			return ctl_usage_error("%s", usage);
		r = rows[i].set(into, &rows[i], optarg);
		if (r)
			return r;
	}
	return 0;
}

void
ctl_help_row(FILE *f, const char *left, const char *help)
{
	const char *nl;

	if (strlen(left) > HELP_COLUMN)
		fprintf(f, "  %s\n%*s", left, HELP_COLUMN + 3, "");
	else
		fprintf(f, "  %-*s ", HELP_COLUMN, left);
	while ((nl = strchr(help, '\n'))) {
		fprintf(f, "%.*s\n%*s", (int)(nl - help), help, HELP_COLUMN + 3, "");
		help = nl + 1;
	}
	fprintf(f, "%s\n", help);
}

void
ctl_opt_help(FILE *f, const struct ctl_opt *rows)
{
	char left[128];

	for (; rows->name; rows++) {
		int n =
		    rows->short_name ? snprintf(left, sizeof(left), "-%c, ", rows->short_name) : 0;

		snprintf(left + n, sizeof(left) - (size_t)n, "--%s%s%s", rows->name,
		    rows->arg ? " " : "", rows->arg ? rows->arg : "");
		if (rows->help)
			ctl_help_row(f, left, rows->help);
	}
}

bool
ctl_opt_has_help(const struct ctl_opt *rows)
{
	for (; rows && rows->name; rows++) {
		if (rows->help)
			return true;
	}
	return false;
}

void
ctl_opt_usage(char *buf, size_t len, const struct ctl_opt *rows)
{
	size_t used = strlen(buf);

	for (; rows && rows->name && used < len; rows++) {
		snprintf(buf + used, len - used, " [--%s%s%s]", rows->name, rows->arg ? " " : "",
		    rows->arg ? rows->arg : "");
		used += strlen(buf + used);
	}
}
