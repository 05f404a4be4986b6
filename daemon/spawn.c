/* SPDX-License-Identifier: MIT */
/*
 * Forking and executing one worker. Everything the child needs (argv, the
 * environment, the group list) is built before fork(), because between fork
 * and exec only async-signal-safe calls are allowed.
 *
 * The child's order matters:
 *   1. reset the signal mask and dispositions (ignored signals survive exec);
 *   2. setsid(): its own session and process group, away from our terminal;
 *   3. drop to the requester's groups, gid and uid (when herdd is root);
 *   4. PR_SET_PDEATHSIG after the drop, because a credential change clears
 *      it, then check getppid() in case herdd died before the prctl;
 *   5. stdin from /dev/null; stdout/stderr as asked (a file is opened only
 *      now, with the requester's credentials, so nobody makes root write it);
 *   6. the channel on fd 3, every other fd close-on-exec, and the open-file
 *      soft limit herdd started with (herdd raised its own);
 *   7. chdir, umask, execve with an explicit environment.
 * A failure writes {stage, errno} to a close-on-exec pipe and exits 127; EOF
 * on that pipe means the exec succeeded.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "herdd.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MAX_GROUPS 256

enum spawn_stage {
	STAGE_SIGNALS = 1,
	STAGE_SETSID,
	STAGE_SETGROUPS,
	STAGE_SETGID,
	STAGE_SETUID,
	STAGE_PDEATHSIG,
	STAGE_STDIN,
	STAGE_STDOUT,
	STAGE_STDERR,
	STAGE_FDS,
	STAGE_CHDIR,
	STAGE_EXEC,
};

static const char *const stage_names[] = {
	[STAGE_SIGNALS] = "signals",
	[STAGE_SETSID] = "setsid",
	[STAGE_SETGROUPS] = "setgroups",
	[STAGE_SETGID] = "setgid",
	[STAGE_SETUID] = "setuid",
	[STAGE_PDEATHSIG] = "pdeathsig",
	[STAGE_STDIN] = "stdin",
	[STAGE_STDOUT] = "stdout",
	[STAGE_STDERR] = "stderr",
	[STAGE_FDS] = "fds",
	[STAGE_CHDIR] = "chdir",
	[STAGE_EXEC] = "exec",
};

struct child_report {
	int stage;
	int err;
};

/* What the child needs, prepared in the parent. */
struct child_plan {
	const char *path;
	char **argv;
	char **envp;
	gid_t groups[MAX_GROUPS];
	int ngroups;
	bool drop;
	uid_t uid;
	gid_t gid;
	pid_t parent;
	const struct output_spec *out; /* [2] */
	int capture_fds[2];
	int channel_fd;
	int report_fd;
	const char *cwd;
	mode_t umask;
};

/* Name of a stage reported by a child, for error data. */
const char *
spawn_stage_name(int stage)
{
	if (stage <= 0 || stage > STAGE_EXEC)
		return "unknown";
	return stage_names[stage];
}

static __attribute__((noreturn)) void
child_fail(const struct child_plan *p, int stage)
{
	struct child_report rep = { stage, errno };

	if (write(p->report_fd, &rep, sizeof(rep)) < 0) {
		/* Exit status 127 still tells the parent something went wrong. */
	}
	_exit(127);
}

/* Moves fd to a number >= 10 so the dup2() onto 0..3 below cannot clobber it. */
static int
lift_fd(int fd)
{
	if (fd < 0 || fd >= 10)
		return fd;
	return fcntl(fd, F_DUPFD_CLOEXEC, 10);
}

static void
place_output(const struct child_plan *p, int i, int target, int stage)
{
	const struct output_spec *o = &p->out[i];
	int fd;

	switch (o->kind) {
	case OUT_CAPTURE:
		fd = p->capture_fds[i];
		break;
	case OUT_FILE:
		fd = open(o->path,
		    O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | (o->append ? O_APPEND : O_TRUNC),
		    0666);
		break;
	default:
		fd = open("/dev/null", O_WRONLY | O_CLOEXEC | O_NOCTTY);
		break;
	}
	if (fd < 0 || dup2(fd, target) < 0)
		child_fail(p, stage);
}

static __attribute__((noreturn)) void
child_run(struct child_plan *p)
{
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;
	int sig, fd;

	sigemptyset(&none);
	for (sig = 1; sig < NSIG; sig++)
		sigaction(sig, &sa, NULL);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		child_fail(p, STAGE_SIGNALS);
	if (setsid() < 0)
		child_fail(p, STAGE_SETSID);
	if (p->drop) {
		if (setgroups((size_t)p->ngroups, p->groups) < 0)
			child_fail(p, STAGE_SETGROUPS);
		if (setgid(p->gid) < 0)
			child_fail(p, STAGE_SETGID);
		if (setuid(p->uid) < 0)
			child_fail(p, STAGE_SETUID);
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(p, STAGE_PDEATHSIG);
	if (getppid() != p->parent) {
		errno = ESRCH;
		child_fail(p, STAGE_PDEATHSIG);
	}
	/* Before any file is created for it. */
	umask(p->umask);
	p->channel_fd = lift_fd(p->channel_fd);
	p->capture_fds[0] = lift_fd(p->capture_fds[0]);
	p->capture_fds[1] = lift_fd(p->capture_fds[1]);
	p->report_fd = lift_fd(p->report_fd);
	if (p->channel_fd < 0 || p->report_fd < 0)
		child_fail(p, STAGE_FDS);
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || dup2(fd, 0) < 0)
		child_fail(p, STAGE_STDIN);
	place_output(p, 0, 1, STAGE_STDOUT);
	place_output(p, 1, 2, STAGE_STDERR);
	if (dup2(p->channel_fd, 3) < 0)
		child_fail(p, STAGE_FDS);
	/* Everything past the channel closes at exec, the report pipe included. */
	if (close_range(4, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		for (fd = 4; (unsigned long)fd < herdd.max_fds; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	if (herdd.nofile_raised && setrlimit(RLIMIT_NOFILE, &herdd.nofile) < 0)
		child_fail(p, STAGE_FDS);
	if (chdir(p->cwd) < 0)
		child_fail(p, STAGE_CHDIR);
	execve(p->path, p->argv, p->envp);
	child_fail(p, STAGE_EXEC);
}

static int
env_add(char **envp, size_t *n, const char *name, const char *value)
{
	if (asprintf(&envp[*n], "%s=%s", name, value) < 0)
		return -ENOMEM;
	(*n)++;
	return 0;
}

/*
 * The worker's environment: PATH fixed, HOME, USER, LOGNAME and SHELL from
 * the requester's passwd entry (never herdd's own environment), then the
 * requester's additions (its LANG, TZ...), then the channel variables.
 */
static char **
build_env(const struct worker *w, const char *home, const char *user, const char *shell)
{
	size_t cap = json_object_size(w->env) + 12, n = 0;
	char **envp = calloc(cap, sizeof(*envp));
	const char *const base[][2] = {
		{ "PATH", "/usr/local/bin:/usr/bin:/bin" },
		{ "HOME", home },
		{ "USER", user },
		{ "LOGNAME", user },
		{ "SHELL", shell },
	};
	const char *key;
	json_t *value;
	char fd[8];
	int r = 0;

	if (!envp)
		return NULL;
	for (size_t i = 0; i < sizeof(base) / sizeof(base[0]) && r == 0; i++) {
		if (!json_object_get(w->env, base[i][0]))
			r = env_add(envp, &n, base[i][0], base[i][1]);
	}
	json_object_foreach(w->env, key, value) {
		if (r == 0)
			r = env_add(envp, &n, key, json_string_value(value));
	}
	snprintf(fd, sizeof(fd), "%d", 3);
	if (r == 0)
		r = env_add(envp, &n, "HERD_CHANNEL_FD", fd);
	if (r == 0)
		r = env_add(envp, &n, "HERD_WORKER_ID", w->id);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(envp[i]);
		free(envp);
		return NULL;
	}
	return envp;
}

static void
free_strv(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

/* Forks and execs w; see the file comment. Returns the report pipe's read end or -errno. */
int
spawn_start(struct worker *w, int channel_fd, int capture_fds[2])
{
	struct child_plan p = { 0 };
	char pwbuf[4096], uidtext[16];
	struct passwd pw, *pwp = NULL;
	const char *home = "/", *user = uidtext, *shell = "/bin/sh";
	int pipefd[2], r;
	sigset_t all, old;
	size_t i, argc = json_array_size(w->argv);
	pid_t pid;

	snprintf(uidtext, sizeof(uidtext), "%u", (unsigned)w->uid);
	if (getpwuid_r(w->uid, &pw, pwbuf, sizeof(pwbuf), &pwp) == 0 && pwp) {
		home = pw.pw_dir && pw.pw_dir[0] == '/' ? pw.pw_dir : "/";
		user = pw.pw_name;
		if (pw.pw_shell && pw.pw_shell[0] == '/')
			shell = pw.pw_shell;
	}
	p.path = w->path;
	p.argv = calloc(argc + 1, sizeof(*p.argv));
	if (!p.argv)
		return -ENOMEM;
	for (i = 0; i < argc; i++)
		p.argv[i] = (char *)json_string_value(json_array_get(w->argv, i));
	p.envp = build_env(w, home, user, shell);
	if (!p.envp) {
		free(p.argv);
		return -ENOMEM;
	}
	p.uid = w->uid;
	p.gid = w->gid;
	p.drop = herdd.uid == 0;
	if (p.drop) {
		p.ngroups = MAX_GROUPS;
		if (!pwp) {
			/* No passwd entry: no supplementary groups (PROTOCOL.md 4.1). */
			p.ngroups = 0;
		} else if (getgrouplist(pw.pw_name, w->gid, p.groups, &p.ngroups) < 0) {
			/* More groups than we keep: the primary one only, never more than asked. */
			p.groups[0] = w->gid;
			p.ngroups = 1;
		}
	}
	p.parent = getpid();
	p.out = w->out;
	p.capture_fds[0] = capture_fds[0];
	p.capture_fds[1] = capture_fds[1];
	p.channel_fd = channel_fd;
	p.cwd = w->cwd;
	p.umask = (mode_t)w->umask;
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		r = -errno;
		goto out;
	}
	p.report_fd = pipefd[1];
	/*
	 * Signals stay blocked across fork() until the child has reset their
	 * handlers: a SIGTERM sent to the new pid early must kill it, not run
	 * herdd's libev handler inside the child and be lost.
	 */
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = fork();
	if (pid == 0)
		child_run(&p);
	r = pid < 0 ? -errno : 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
	close(pipefd[1]);
	if (r < 0) {
		close(pipefd[0]);
		w->spawn_stage = "fork";
		goto out;
	}
	w->pid = pid;
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	r = pipefd[0];
out:
	free(p.argv);
	free_strv(p.envp);
	return r;
}
