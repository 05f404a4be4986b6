/* SPDX-License-Identifier: MIT */
/*
 * How many CPUs herdd's workers can use on this host: what a pool over
 * hosts starts there by default (herdd --stdio says it in the link's hello,
 * PROTOCOL.md 9.3). The workers inherit herdd's affinity and cgroup, so the
 * count is herdd's affinity, capped by a CPU quota on its cgroup or an
 * ancestor (cgroup v2 cpu.max, v1 cpu.cfs_quota_us; a container's
 * `--cpus`), rounded up, and by $SLURM_CPUS_ON_NODE when herdd runs as a
 * Slurm task (its job's share of the node, which affinity shows only with
 * task/affinity or task/cgroup).
 */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "herdd.h"

/* true when tok is one of the comma-separated words of list. */
static bool
has_word(const char *list, const char *tok)
{
	size_t n = strlen(tok);

	for (const char *s = list; s; s = strchr(s, ',')) {
		s += *s == ',';
		if (strncmp(s, tok, n) == 0 && (s[n] == ',' || s[n] == '\0' || s[n] == '\n'))
			return true;
	}
	return false;
}

/* herdd's cpu cgroup as /proc/self/cgroup names it (v2: "0::P", v1: "N:...cpu...:P"), or NULL. */
static char *
own_cgroup(bool v2)
{
	char line[4096], *ctl, *path;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		ctl = strchr(line, ':');
		path = ctl ? strchr(ctl + 1, ':') : NULL;
		if (!path)
			continue;
		*path++ = '\0';
		if (v2 ? strcmp(line, "0:") == 0 : has_word(ctl + 1, "cpu")) {
			fclose(f);
			return strdup(path);
		}
	}
	fclose(f);
	return NULL;
}

/* The directory of herdd's cpu cgroup (v2 or v1), from mountinfo, or NULL; *ret_mnt its mount's length. */
static char *
own_cgroup_dir(bool v2, size_t *ret_mnt)
{
	char line[4096], root[2048], mnt[2048], type[64], opts[1024], *sep, *path, *dir = NULL;
	FILE *f = fopen("/proc/self/mountinfo", "re");
	size_t rl;

	if (!f)
		return NULL;
	while (!dir && fgets(line, sizeof(line), f)) {
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE SOURCE SUPER_OPTIONS" */
		sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %*s %2047s %2047s", root, mnt) != 2 ||
		    sscanf(sep, " - %63s %*s %1023s", type, opts) != 2)
			continue;
		if (v2 ? strcmp(type, "cgroup2") != 0
		       : strcmp(type, "cgroup") != 0 || !has_word(opts, "cpu"))
			continue;
		path = own_cgroup(v2);
		rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
		/* A mount that does not show our cgroup (another namespace's root) tells nothing. */
		if (path && strncmp(path, root, rl) == 0 && (path[rl] == '/' || path[rl] == '\0') &&
		    asprintf(&dir, "%s%s", mnt, path + rl) < 0)
			dir = NULL;
		*ret_mnt = strlen(mnt);
		free(path);
		break;
	}
	fclose(f);
	return dir;
}

/* Reads two numbers (or "max", as -1) from file in dir; false if it is not there. */
static bool
read_pair(const char *dir, const char *file, double *a, double *b)
{
	char path[4096], w1[32] = "", w2[32] = "";
	FILE *f;
	int n;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "re");
	if (!f)
		return false;
	n = fscanf(f, "%31s %31s", w1, w2);
	fclose(f);
	*a = strcmp(w1, "max") == 0 ? -1 : strtod(w1, NULL);
	*b = n == 2 ? strtod(w2, NULL) : 0;
	return n >= 1;
}

/* The CPUs a quota in dir allows (0: none): v2 "QUOTA PERIOD", v1 two files. */
static double
quota_in(const char *dir, bool v2)
{
	double q, p, unused;

	if (v2) {
		if (!read_pair(dir, "cpu.max", &q, &p))
			return 0;
	} else if (!read_pair(dir, "cpu.cfs_quota_us", &q, &unused) ||
	    !read_pair(dir, "cpu.cfs_period_us", &p, &unused)) {
		return 0;
	}
	return q > 0 && p > 0 ? q / p : 0;
}

/* The tightest quota on herdd's cgroup and its ancestors up to the mount (0: none). */
static double
cgroup_quota(bool v2)
{
	size_t mnt = 0;
	char *dir = own_cgroup_dir(v2, &mnt), *slash;
	double least = 0, q;

	/* A quota on an ancestor bounds its whole subtree. */
	while (dir) {
		q = quota_in(dir, v2);
		if (q > 0 && (least == 0 || q < least))
			least = q;
		slash = strrchr(dir, '/');
		if (!slash || (size_t)(slash - dir) < mnt)
			break;
		*slash = '\0';
	}
	free(dir);
	return least;
}

/* The CPUs herdd's workers can use here (at least 1). */
unsigned
cpus_usable(void)
{
	const char *slurm = getenv("SLURM_CPUS_ON_NODE");
	unsigned n = 1;
	cpu_set_t set;
	double q;
	long s;
	unsigned c;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0)
		n = (unsigned)CPU_COUNT(&set);
	for (int v2 = 0; v2 < 2; v2++) {
		q = cgroup_quota(v2);
		/* Rounded up: half a CPU still runs one worker. */
		c = (unsigned)q + (q > (unsigned)q);
		if (q > 0 && c < n)
			n = c;
	}
	s = slurm ? strtol(slurm, NULL, 10) : 0;
	if (s > 0 && (unsigned long)s < n)
		n = (unsigned)s;
	return n;
}
