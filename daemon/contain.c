/* SPDX-License-Identifier: MIT */
/*
 * Containment: each worker and all its descendants in a cgroup v2 of its own,
 * DIR/workers/wN under herdd's delegated cgroup DIR (cgroup.c). A descendant
 * that calls setsid() or double-forks stays in it, so one write to cgroup.kill
 * ends the whole tree, and cgroup.events' "populated 0" says that everything
 * is gone. The cgroup exists before the process: clone3(CLONE_INTO_CGROUP)
 * starts the child in it (spawn.c), or the child moves itself there first.
 *
 * "workers" holds no process, so the no-internal-process rule never stands in
 * the way of controllers later. A worker's cgroup is killed when the worker is
 * reaped (as the tree walk kills escapees) and removed once it is empty,
 * watched through inotify on its cgroup.events.
 *
 * A herdd that died leaves its workers' cgroups populated (SIGKILL cannot be
 * caught, and a descendant outside PR_SET_PDEATHSIG's reach lives on). The
 * next herdd on the same cgroup kills every cgroup it finds under "workers"
 * before its first spawn, and reports what it found in the log and "stats".
 *
 * Without a writable delegated cgroup, nothing here is used: herdd falls back
 * to the process-tree walk of supervisor.c and says so.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herdd.h"

/* How long a starting herdd waits for a predecessor's leftovers to empty. */
#define LEFTOVER_WAIT_MS 2000

/* A worker cgroup that was killed and is removed once empty. */
struct drain {
	struct drain *next;
	int wd;
	char *dir;
};

static char *workers_dir; /* DIR/workers, or NULL: no containment by cgroup */
static int ino_fd = -1;
static ev_io ino_io;
static struct drain *drains;
static unsigned leftover_cgroups, leftover_procs;

static int
write_file(const char *dir, const char *name, const char *text)
{
	char path[PATH_MAX];
	int fd, r = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, text, strlen(text)) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* 1 while dir's cgroup (or a child of it) holds a process, 0 once empty, -errno. */
static int
populated(const char *dir)
{
	char path[PATH_MAX], line[128];
	FILE *f;
	int r = -ENOENT;

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "populated ", 10))
			r = line[10] == '1';
	}
	fclose(f);
	return r;
}

/* How many processes dir's cgroup holds now. */
static unsigned
count_procs(const char *dir)
{
	char path[PATH_MAX], line[64];
	unsigned n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		n++;
	fclose(f);
	return n;
}

/* Kills every process of dir's cgroup; 0 or -errno. */
static int
kill_dir(const char *dir)
{
	return write_file(dir, "cgroup.kill", "1");
}

static void
drain_free(struct drain **pp)
{
	struct drain *d = *pp;

	*pp = d->next;
	if (d->wd >= 0)
		inotify_rm_watch(ino_fd, d->wd);
	free(d->dir);
	free(d);
}

/*
 * Removes the drains whose cgroup is empty now: every one (wd -2), or those
 * watched by wd and those without a watch (nothing else tells of them).
 */
static void
drains_check_wd(int wd)
{
	struct drain **pp = &drains;

	while (*pp) {
		if ((wd != -2 && (*pp)->wd != wd && (*pp)->wd >= 0) || populated((*pp)->dir) > 0) {
			pp = &(*pp)->next;
			continue;
		}
		if (rmdir((*pp)->dir) < 0 && errno != ENOENT)
			log_warn("removing cgroup %s: %m", (*pp)->dir);
		drain_free(pp);
	}
}

static void
drains_check(void)
{
	drains_check_wd(-2);
}

static void
ino_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event *ev;
	ssize_t n;

	/* Only the cgroup whose cgroup.events changed is read again, not every draining one. */
	while ((n = read(ino_fd, buf, sizeof(buf))) > 0)
		for (char *p = buf; p < buf + n; p += sizeof(*ev) + ev->len) {
			ev = (const struct inotify_event *)p;
			if (!(ev->mask & IN_IGNORED))
				drains_check_wd(ev->wd);
		}
}

/* Kills dir's cgroup and removes it once empty (now, or when inotify says so). */
static void
drain_start(char *dir)
{
	char path[PATH_MAX];
	struct drain *d;

	kill_dir(dir);
	if (populated(dir) <= 0 || ino_fd < 0) {
		if (rmdir(dir) < 0 && errno != ENOENT && errno != EBUSY)
			log_warn("removing cgroup %s: %m", dir);
		free(dir);
		return;
	}
	d = calloc(1, sizeof(*d));
	if (!d) {
		free(dir);
		return;
	}
	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	d->dir = dir;
	d->wd = inotify_add_watch(ino_fd, path, IN_MODIFY);
	d->next = drains;
	drains = d;
	/* It may have emptied before the watch existed. */
	drains_check();
}

/* The cgroup directory of worker id (new string), or NULL. */
static char *
worker_dir(const char *id)
{
	char *dir;

	if (!workers_dir || asprintf(&dir, "%s/%s", workers_dir, id) < 0)
		return NULL;
	return dir;
}

/* Waits until dir's cgroup is empty or the deadline passes, woken by inotify. */
static void
wait_empty(const char *dir, int64_t deadline)
{
	char path[PATH_MAX], buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct pollfd pfd = { .fd = ino_fd, .events = POLLIN };
	int64_t left;
	int wd;

	snprintf(path, sizeof(path), "%s/cgroup.events", dir);
	wd = inotify_add_watch(ino_fd, path, IN_MODIFY);
	if (wd < 0)
		return;
	while (populated(dir) > 0 && (left = deadline - now_ms()) > 0) {
		if (poll(&pfd, 1, (int)left) > 0) {
			while (read(ino_fd, buf, sizeof(buf)) > 0) {
				/* Only the wake-up matters. */
			}
		}
	}
	inotify_rm_watch(ino_fd, wd);
}

/*
 * Kills the cgroups a dead predecessor left under "workers", waits a while for
 * them to empty and removes them. Runs before the first spawn, so every cgroup
 * found there is a leftover.
 */
static void
kill_leftovers(void)
{
	DIR *d = opendir(workers_dir);
	int64_t deadline = now_ms() + LEFTOVER_WAIT_MS;
	struct dirent *e;
	char *dir;

	if (!d)
		return;
	while ((e = readdir(d))) {
		unsigned n;

		/* A reexec's predecessor left its live workers' cgroups, not leftovers. */
		if (e->d_type != DT_DIR || e->d_name[0] == '.' || reexec_keeps(e->d_name) ||
		    asprintf(&dir, "%s/%s", workers_dir, e->d_name) < 0)
			continue;
		n = count_procs(dir);
		if (n > 0) {
			leftover_cgroups++;
			leftover_procs += n;
			log_warn("cgroup %s: %u process(es) left by a previous herdd; killing them",
			    dir, n);
			kill_dir(dir);
			wait_empty(dir, deadline);
		}
		if (rmdir(dir) < 0)
			log_warn("removing leftover cgroup %s: %m", dir);
		free(dir);
	}
	closedir(d);
	if (leftover_cgroups)
		log_warn("killed %u process(es) in %u cgroup(s) left by a previous herdd",
		    leftover_procs, leftover_cgroups);
}

/*
 * Hands the memory, pids and cpu controllers down to the worker cgroups where
 * dir has them (limits.c). Each one alone: a controller the parent lacks only
 * leaves its limits to rlimits.
 */
static void
enable_controllers(const char *dir)
{
	static const char *const wanted[] = { "+memory", "+pids", "+cpu" };

	for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
		if (write_file(dir, "cgroup.subtree_control", wanted[i]) == 0)
			write_file(workers_dir, "cgroup.subtree_control", wanted[i]);
	}
}

/* true when the worker cgroups have controller (DIR/workers' cgroup.subtree_control). */
bool
contain_has_controller(const char *controller)
{
	char path[PATH_MAX], line[256], *tok, *save;
	bool found = false;
	FILE *f;

	if (!workers_dir)
		return false;
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", workers_dir);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (fgets(line, sizeof(line), f)) {
		for (tok = strtok_r(line, " \n", &save); tok && !found;
		     tok = strtok_r(NULL, " \n", &save))
			found = strcmp(tok, controller) == 0;
	}
	fclose(f);
	return found;
}

/* Sets up containment under the delegated cgroup dir (NULL: none); see the file comment. */
void
contain_init(const char *dir)
{
	if (!dir) {
		log_info("no writable cgroup v2: workers are contained by the process-tree walk "
		         "only (a descendant outlives a SIGKILLed herdd)");
		return;
	}
	if (asprintf(&workers_dir, "%s/workers", dir) < 0) {
		workers_dir = NULL;
		return;
	}
	if (mkdir(workers_dir, 0755) < 0 && errno != EEXIST) {
		log_warn("cgroup %s: %m; workers are contained by the process-tree walk only",
		    workers_dir);
		free(workers_dir);
		workers_dir = NULL;
		return;
	}
	enable_controllers(dir);
	ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (ino_fd < 0)
		log_warn("inotify: %m; emptied worker cgroups are removed only when checked");
	kill_leftovers();
	if (ino_fd >= 0) {
		ev_io_init(&ino_io, ino_cb, ino_fd, EV_READ);
		ev_io_start(herdd.loop, &ino_io);
	}
	log_info("each worker runs in a cgroup of its own under %s", workers_dir);
}

/*
 * Creates w's cgroup and returns an fd of its directory for CLONE_INTO_CGROUP
 * (the caller closes it), -1 when containment is off or failed (logged).
 * From here on contain_reaped() removes it, whether a process ran in it or not.
 */
int
contain_prepare(struct worker *w)
{
	char *dir = worker_dir(w->id);
	int fd;

	if (!dir)
		return -1;
	/* An id used before (a leftover killed at start) leaves no populated cgroup. */
	if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
		log_warn("worker %s: cgroup %s: %m; contained by the tree walk only", w->id, dir);
		free(dir);
		return -1;
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		log_warn("worker %s: cgroup %s: %m; contained by the tree walk only", w->id, dir);
		rmdir(dir);
	}
	w->in_cgroup = fd >= 0;
	free(dir);
	return fd;
}

/* Opens file in w's cgroup: an fd or -errno. */
int
contain_open(const struct worker *w, const char *file, int flags)
{
	char *dir, path[PATH_MAX];
	int fd;

	if (!w->in_cgroup || !(dir = worker_dir(w->id)))
		return -ENOENT;
	snprintf(path, sizeof(path), "%s/%s", dir, file);
	free(dir);
	fd = open(path, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Kills w's whole cgroup (SIGKILL to every process in it). 0 or -errno. */
int
contain_kill(const struct worker *w)
{
	char *dir;
	int r;

	if (!w->in_cgroup || !(dir = worker_dir(w->id)))
		return -ENOENT;
	r = kill_dir(dir);
	free(dir);
	return r;
}

/* w was reaped: whatever is left of its tree is killed and its cgroup removed once empty. */
void
contain_reaped(struct worker *w)
{
	char *dir;

	if (!w->in_cgroup || !(dir = worker_dir(w->id)))
		return;
	w->in_cgroup = false;
	drain_start(dir);
}

/* w's cgroup path for inspect (new reference): null when not in one. */
json_t *
contain_worker_json(const struct worker *w)
{
	char *dir = w->in_cgroup ? worker_dir(w->id) : NULL;
	json_t *o = json_pack("{s:s?, s:b}", "cgroup", dir, "pid_namespace", w->pid_ns);

	free(dir);
	return o;
}

/* For "stats": how workers are contained and what a predecessor left (new reference). */
json_t *
contain_json(void)
{
	unsigned n = 0;

	for (struct drain *d = drains; d; d = d->next)
		n++;
	return json_pack("{s:s, s:s?, s:{s:i, s:i}, s:i}", "mode",
	    workers_dir ? "cgroup" : "tree_walk", "workers", workers_dir, "leftovers_killed",
	    "cgroups", (int)leftover_cgroups, "processes", (int)leftover_procs, "draining", (int)n);
}

void
contain_cleanup(void)
{
	/* What still drains is left for the next herdd, which kills it at start. */
	drains_check();
	while (drains)
		drain_free(&drains);
	main_io_close(&ino_io, &ino_fd);
	free(workers_dir);
	workers_dir = NULL;
	leftover_cgroups = leftover_procs = 0;
}
