/* SPDX-License-Identifier: MIT */
/*
 * The cgroup subtree a service manager delegated to herdd (Delegate=yes).
 * herdd looks for it once at start: its own cgroup in the unified (v2)
 * hierarchy, marked delegated by systemd's "user.delegate" xattr and writable.
 * If found, herdd moves itself into a child "herdd" so the delegated cgroup
 * holds no process of its own: cgroup v2 lets only a cgroup without processes
 * hand controllers to children, and later ones are meant for workers.
 * Anywhere else (a shell, a test, an autostarted herdd) nothing is touched,
 * unless --cgroup names a directory to use as delegated: a private herdd is
 * given one it can write (a test makes one under the unified mount).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "herdd.h"

/* The delegated cgroup as /proc/self/cgroup names it, its directory, and herdd's own. */
static char *deleg_path, *deleg_dir, *own_path;

/* Where the unified hierarchy is mounted and which cgroup its root shows, from mountinfo. */
static int
unified_mount(char **mnt, char **root)
{
	char line[4096], r[2048], m[2048], *sep;
	FILE *f = fopen("/proc/self/mountinfo", "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS... - FSTYPE ..." */
		sep = strstr(line, " - ");
		if (!sep || strncmp(sep, " - cgroup2 ", 11) != 0)
			continue;
		if (sscanf(line, "%*s %*s %*s %2047s %2047s", r, m) != 2)
			continue;
		fclose(f);
		*root = strdup(r);
		*mnt = strdup(m);
		return *root && *mnt ? 0 : -ENOMEM;
	}
	fclose(f);
	return -ENOENT;
}

/* herdd's cgroup in the unified hierarchy (the "0::" line), or NULL. */
static char *
unified_path(void)
{
	char line[4096];
	size_t n;
	FILE *f = fopen("/proc/self/cgroup", "re");

	if (!f)
		return NULL;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3) != 0)
			continue;
		fclose(f);
		n = strcspn(line + 3, "\n");
		line[3 + n] = '\0';
		return strdup(line + 3);
	}
	fclose(f);
	return NULL;
}

/* The directory of cgroup path under the mount, or NULL when the mount does not show it. */
static char *
cgroup_dir(const char *mnt, const char *root, const char *path)
{
	size_t rl = strcmp(root, "/") == 0 ? 0 : strlen(root);
	char *dir;

	if (strncmp(path, root, rl) != 0 || (path[rl] != '/' && path[rl] != '\0'))
		return NULL;
	if (asprintf(&dir, "%s%s", mnt, path + rl) < 0)
		return NULL;
	return dir;
}

/* true when systemd marked dir delegated (user.delegate=1, systemd 251 and later). */
static bool
marked_delegated(const char *dir)
{
	char v[8];
	ssize_t n = getxattr(dir, "user.delegate", v, sizeof(v) - 1);

	if (n <= 0)
		return false;
	v[n] = '\0';
	return strcmp(v, "1") == 0;
}

/* Moves herdd into dir/herdd; returns its cgroup path or NULL (logged). */
static char *
enter_child(const char *dir, const char *path)
{
	char *sub = NULL, *procs = NULL, *own = NULL;
	int fd = -1;

	if (asprintf(&sub, "%s/herdd", dir) < 0 || asprintf(&procs, "%s/cgroup.procs", sub) < 0)
		goto out;
	/* A restart under the same unit may find it made already. */
	if (mkdir(sub, 0755) < 0 && errno != EEXIST) {
		log_warn("delegated cgroup %s: cannot create herdd's own child: %m", path);
		goto out;
	}
	fd = open(procs, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "0", 1) != 1) {
		log_warn("delegated cgroup %s: cannot move into %s: %m", path, sub);
		goto out;
	}
	if (asprintf(&own, "%s/herdd", strcmp(path, "/") == 0 ? "" : path) < 0)
		own = NULL;
out:
	if (fd >= 0)
		close(fd);
	free(procs);
	free(sub);
	return own;
}

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

/* --cgroup DIR: used as delegated when it is a writable cgroup v2 directory. */
static void
given_cgroup(const char *dir)
{
	struct statfs sf;
	char *self;

	if (statfs(dir, &sf) < 0 || sf.f_type != CGROUP2_SUPER_MAGIC || access(dir, W_OK) < 0) {
		log_warn("--cgroup %s: not a writable cgroup v2 directory: not using it", dir);
		return;
	}
	own_path = enter_child(dir, dir);
	/* Named as /proc/self/cgroup names it, now that herdd is inside. */
	self = own_path ? unified_path() : NULL;
	free(own_path);
	own_path = self;
	deleg_dir = strdup(dir);
	if (own_path && deleg_dir && strlen(own_path) > strlen("/herdd")) {
		deleg_path = strndup(own_path, strlen(own_path) - strlen("/herdd"));
		log_info("cgroup %s (%s) given by --cgroup; herdd runs in %s", deleg_path,
		    deleg_dir, own_path);
	}
	if (!deleg_path) {
		free(deleg_dir);
		free(own_path);
		deleg_dir = own_path = NULL;
	}
}

/* Finds the delegated subtree, if herdd has one, and moves herdd into its own child. */
void
cgroup_init(void)
{
	char *mnt = NULL, *root = NULL, *path = NULL, *dir = NULL;

	if (herdd.cfg.cgroup) {
		given_cgroup(herdd.cfg.cgroup);
		return;
	}
	path = unified_path();
	if (!path || unified_mount(&mnt, &root) < 0 || !(dir = cgroup_dir(mnt, root, path))) {
		log_debug("no cgroup v2 hierarchy visible: no delegated cgroup");
		goto out;
	}
	if (!marked_delegated(dir)) {
		log_debug("cgroup %s is not delegated to herdd", path);
		goto out;
	}
	if (access(dir, W_OK) < 0) {
		log_warn(
		    "cgroup %s is delegated but %s is not writable (%m): not using it", path, dir);
		goto out;
	}
	own_path = enter_child(dir, path);
	deleg_path = path;
	deleg_dir = dir;
	path = dir = NULL;
	log_info("delegated cgroup %s (%s); herdd runs in %s", deleg_path, deleg_dir,
	    own_path ? own_path : deleg_path);
out:
	free(path);
	free(dir);
	free(mnt);
	free(root);
}

/* For "stats": the delegated subtree, or null (new reference). */
json_t *
cgroup_json(void)
{
	if (!deleg_path)
		return json_null();
	return json_pack("{s:s, s:s, s:s}", "delegated", deleg_path, "dir", deleg_dir, "herdd",
	    own_path ? own_path : deleg_path);
}

/* The delegated cgroup's directory (borrowed), or NULL. */
const char *
cgroup_delegated_dir(void)
{
	return deleg_dir;
}

void
cgroup_cleanup(void)
{
	free(deleg_path);
	free(deleg_dir);
	free(own_path);
	deleg_path = deleg_dir = own_path = NULL;
}

/* The delegated subtree for a reexec: herdd is already inside its child (null: none). */
json_t *
cgroup_save(void)
{
	if (!deleg_path)
		return json_null();
	return json_pack("[s, s, s?]", deleg_path, deleg_dir, own_path);
}

/* Takes over cgroup_save()'s subtree instead of looking again (cgroup_init()). */
void
cgroup_load(json_t *saved)
{
	const char *path, *dir, *own;
	json_t *o;

	if (json_unpack(saved, "[s, s, o]", &path, &dir, &o) < 0)
		return;
	own = json_string_value(o);
	deleg_path = strdup(path);
	deleg_dir = strdup(dir);
	own_path = own ? strdup(own) : NULL;
	if (!deleg_path || !deleg_dir)
		fatal("out of memory");
}
