/* SPDX-License-Identifier: MIT */
/*
 * Forking and executing one worker. Everything the child needs (argv, the
 * environment, the group list) is built before the fork, because between fork
 * and exec only async-signal-safe calls are allowed.
 *
 * The child is started with clone(CLONE_VM | CLONE_VFORK), as posix_spawn()
 * does: it borrows herdd's memory on a stack of its own and the thread that
 * cloned it waits until it has called execve() or exited. That thread is
 * herdd's main one (leader.c), never the loop's: the wait (1-7 ms under
 * load) stops nothing else, and the child's errno is the sleeping main
 * thread's, not the loop's. The loop queues spawns and hands them over one
 * at a time (one stack, one set of fd slots); the worker gets its pid when
 * the clone returns (sup_spawned()). A plain fork() copies herdd's page tables
 * and leaves every page copy-on-write; that cost grows with herdd's memory
 * (each record of an exited worker adds some) and it was most of the gap
 * between a spawn through herdd and a bare fork+exec. Sharing memory puts
 * rules on the child: it writes nothing of herdd's but its own errno, it
 * never runs a signal handler (signals stay blocked until every disposition
 * is back to default), and it changes credentials with the raw system calls,
 * which act on the calling task only. A call that could block for good
 * (opening a FIFO nobody reads) is made non-blocking, since every later
 * spawn waits.
 *
 * The fd table is shared too (CLONE_FILES): copying it, and closing every
 * copy again at exec, cost each spawn time in proportion to herdd's open fds,
 * so spawning 1,000 workers took 20x what 100 took. herdd places the child's
 * fds in four low slots it holds from the start; the child's first act is to
 * unshare the table keeping only the fds up to those slots.
 *
 * Containment (contain.c): a worker with a cgroup of its own starts in it,
 * clone3(CLONE_INTO_CGROUP), so not even its first instruction runs outside.
 * clone3 has no libc wrapper and a CLONE_VM child must leave the system call
 * on its own stack, so on x86-64 a few lines of assembly call child_main()
 * there; elsewhere, and where the kernel lacks clone3, the child moves itself
 * by writing to cgroup.procs before anything else. With pid_namespace the
 * child is also the init of a new PID namespace (CLONE_NEWPID): its
 * getppid() is 0, so the check after PR_SET_PDEATHSIG cannot be made; a
 * worker whose herdd died that early sees EOF on its channel.
 *
 * The child's order matters:
 *   0. join its cgroup when clone3 could not place it there;
 *   1. reset the signal mask and dispositions (ignored signals survive exec);
 *   2. setsid(): its own session and process group, away from our terminal;
 *   3. drop to the requester's groups, gid and uid (when herdd is root);
 *   4. PR_SET_PDEATHSIG after the drop, because a credential change clears
 *      it, then check getppid() in case herdd died before the prctl;
 *   5. stdin from /dev/null; stdout/stderr as asked (a file is opened only
 *      now, with the requester's credentials, so nobody makes root write it);
 *   6. the channel on fd 3, every other fd close-on-exec, the open-file
 *      soft limit herdd started with (herdd raised its own), then the
 *      spawn's limits its cgroup does not hold (limits.c);
 *   7. chdir, umask, execve with an explicit environment.
 * A failure writes a spawn_report (herdd.h) to a close-on-exec pipe and
 * exits 127; EOF on that pipe means the exec succeeded.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "config.h"
#include "herdd.h"

#if HAVE_VALGRIND_H
#include <valgrind/valgrind.h>
#endif

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define MAX_GROUPS 256
/* The child's stack: it calls a few libc wrappers, nothing deep. */
#define CHILD_STACK_SIZE (256u * 1024u)

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif

/* The kernel's struct clone_args (version 2, with cgroup), spelled out: no libc has it. */
struct clone3_args {
	uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
	    set_tid_size, cgroup;
};

/* Low fds held for the child's channel, capture pipes and report pipe; see spawn_init(). */
enum { SLOT_CHANNEL, SLOT_OUT, SLOT_ERR, SLOT_REPORT, N_SLOTS };
static int slots[N_SLOTS] = { -1, -1, -1, -1 };
static int slot_null = -1;
/* The highest slot, or -1 when there are none and spawns copy the fd table. */
static int top_slot = -1;

/* The 32-bit id calls where the plain ones take 16-bit ids (i386, arm). */
#ifdef SYS_setgroups32
#define SYS_SETGROUPS SYS_setgroups32
#define SYS_SETGID    SYS_setgid32
#define SYS_SETUID    SYS_setuid32
#else
#define SYS_SETGROUPS SYS_setgroups
#define SYS_SETGID    SYS_setgid
#define SYS_SETUID    SYS_setuid
#endif

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
	bool share_fds; /* the fds are in the slots: clone with CLONE_FILES */
	int top_slot;
	const char *cwd;
	mode_t umask;
	int cgroup_fd; /* the worker's cgroup directory, or -1 */
	bool join_cgroup; /* clone3 did not place the child: it writes cgroup.procs */
	bool new_pid_ns;
	struct limit_rlimit rlimits[LIMIT_COUNT]; /* the spawn's limits not in its cgroup */
	int nrlimits;
};

/*
 * The child's code stays out of AddressSanitizer's reach, as libc's own
 * posix_spawn() does: ASan keeps one shadow of stack frames per thread and
 * knows nothing of a task that shares herdd's memory on a stack of its own.
 */
#define CHILD_CODE __attribute__((no_sanitize_address))

/* The child's fds: its own copies, since the plan is herdd's memory. */
struct child_fds {
	int channel;
	int capture[2];
	int report;
};

static __attribute__((noreturn)) CHILD_CODE void
child_fail(const struct child_fds *f, const char *stage)
{
	struct spawn_report rep;
	int err = errno;

	/* Zeroed whole, padding included, so no byte of the report is undefined. */
	memset(&rep, 0, sizeof(rep));
	rep.stage = stage;
	rep.err = err;
	if (write(f->report, &rep, sizeof(rep)) < 0) {
		/* Exit status 127 still tells the parent something went wrong. */
	}
	_exit(127);
}

/* Moves fd to a number >= 10 so the dup2() onto 0..3 below cannot clobber it. */
static CHILD_CODE int
lift_fd(int fd)
{
	if (fd < 0 || fd >= 10)
		return fd;
	return fcntl(fd, F_DUPFD_CLOEXEC, 10);
}

/*
 * Opens an output file. O_NONBLOCK keeps a FIFO without a reader from
 * blocking the child, and herdd with it (ENXIO instead); the worker gets
 * the file in blocking mode.
 */
static CHILD_CODE int
open_output(const struct output_spec *o)
{
	int fd = open(o->path,
	    O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | O_NONBLOCK |
	        (o->append ? O_APPEND : O_TRUNC),
	    0666);
	int fl = fd < 0 ? -1 : fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
		return -1;
	return fd;
}

static CHILD_CODE void
place_output(
    const struct child_plan *p, const struct child_fds *f, int i, int target, const char *stage)
{
	const struct output_spec *o = &p->out[i];
	int fd;

	switch (o->kind) {
	case OUT_CAPTURE:
		fd = f->capture[i];
		break;
	case OUT_FILE:
		fd = open_output(o);
		/* Opened as the caller (may they write it?); herdd writes it from the pipe. */
		if (fd >= 0 && o->max_bytes > 0) {
			close(fd);
			fd = f->capture[i];
		}
		break;
	default:
		fd = open("/dev/null", O_WRONLY | O_CLOEXEC | O_NOCTTY);
		break;
	}
	if (fd < 0 || dup2(fd, target) < 0)
		child_fail(f, stage);
}

static __attribute__((noreturn)) CHILD_CODE void
child_run(const struct child_plan *p)
{
	struct child_fds f = { p->channel_fd, { p->capture_fds[0], p->capture_fds[1] },
		p->report_fd };
	struct sigaction sa = { .sa_handler = SIG_DFL };
	sigset_t none;
	int sig, fd;

	/* Its cgroup first, while the shared table still holds the cgroup's fd. */
	if (p->join_cgroup) {
		fd = openat(p->cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, "0", 1) != 1)
			child_fail(&f, "cgroup");
		close(fd);
	}
	/* Our own fd table before touching any fd: the copy stops at the slots. */
	if (p->share_fds && close_range((unsigned)p->top_slot + 1, ~0U, CLOSE_RANGE_UNSHARE) < 0 &&
	    unshare(CLONE_FILES) < 0)
		child_fail(&f, "fds");
	sigemptyset(&none);
	for (sig = 1; sig < NSIG; sig++)
		sigaction(sig, &sa, NULL);
	if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
		child_fail(&f, "signals");
	if (setsid() < 0)
		child_fail(&f, "setsid");
	if (p->drop) {
		if (syscall(SYS_SETGROUPS, (size_t)p->ngroups, p->groups) < 0)
			child_fail(&f, "setgroups");
		if (syscall(SYS_SETGID, p->gid) < 0)
			child_fail(&f, "setgid");
		if (syscall(SYS_SETUID, p->uid) < 0)
			child_fail(&f, "setuid");
	}
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		child_fail(&f, "pdeathsig");
	if (!p->new_pid_ns && getppid() != p->parent) {
		errno = ESRCH;
		child_fail(&f, "pdeathsig");
	}
	/* Before any file is created for it. */
	umask(p->umask);
	f.channel = lift_fd(f.channel);
	f.capture[0] = lift_fd(f.capture[0]);
	f.capture[1] = lift_fd(f.capture[1]);
	f.report = lift_fd(f.report);
	if ((p->channel_fd >= 0 && f.channel < 0) || f.report < 0)
		child_fail(&f, "fds");
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0 || dup2(fd, 0) < 0)
		child_fail(&f, "stdin");
	place_output(p, &f, 0, 1, "stdout");
	place_output(p, &f, 1, 2, "stderr");
	/* Without a channel (ready "exec" or "notify") fd 3 closes at exec too. */
	if (f.channel >= 0 && dup2(f.channel, 3) < 0)
		child_fail(&f, "fds");
	/* Everything past the channel closes at exec, the report pipe included. */
	if (close_range(f.channel >= 0 ? 4 : 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
		for (fd = f.channel >= 0 ? 4 : 3; (unsigned long)fd < herdd.max_fds; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	if (herdd.nofile_raised && setrlimit(RLIMIT_NOFILE, &herdd.nofile) < 0)
		child_fail(&f, "fds");
	/* The spawn's own limits after herdd's: a nofile limit wins. */
	for (int i = 0; i < p->nrlimits; i++) {
		struct rlimit rl = { p->rlimits[i].value, p->rlimits[i].value };

		if (setrlimit(p->rlimits[i].resource, &rl) < 0)
			child_fail(&f, "limits");
	}
	if (chdir(p->cwd) < 0)
		child_fail(&f, "chdir");
	execve(p->path, p->argv, p->envp);
	child_fail(&f, "exec");
}

/* clone()'s entry point; it never returns. */
static CHILD_CODE int
child_main(void *plan)
{
	child_run(plan);
}

/*
 * The top of the child's stack, mapped once with a guard page below it. One
 * stack serves every spawn: herdd spawns one child at a time and waits until
 * that child no longer runs on it.
 */
static void *
child_stack_top(void)
{
	static char *base;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	if (!base) {
		char *m = mmap(NULL, page + CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);

		if (m == MAP_FAILED)
			return NULL;
		if (mprotect(m, page, PROT_NONE) < 0) {
			munmap(m, page + CHILD_STACK_SIZE);
			return NULL;
		}
		base = m;
	}
	return base + page + CHILD_STACK_SIZE;
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
 * sd_notify's variables: NOTIFY_SOCKET, and WATCHDOG_USEC when heartbeats
 * are checked. WATCHDOG_PID is left out: the pid is not known before the
 * clone, and sd_watchdog_enabled() accepts its absence.
 */
static int
notify_env(const struct worker *w, char **envp, size_t *n)
{
	char addr[108], usec[24];
	int r;

	wnotify_addr(w, addr, sizeof(addr));
	r = env_add(envp, n, "NOTIFY_SOCKET", addr);
	if (r == 0 && w->hb_timeout_ms && w->hb_interval_ms) {
		snprintf(usec, sizeof(usec), "%llu", (unsigned long long)w->hb_timeout_ms * 1000);
		r = env_add(envp, n, "WATCHDOG_USEC", usec);
	}
	return r;
}

/*
 * The worker's environment: PATH fixed, HOME, USER, LOGNAME and SHELL from
 * the requester's passwd entry (never herdd's own environment), then the
 * requester's additions (its LANG, TZ...), then the channel variables and
 * herdd's own socket (HERD_SOCKET).
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
	if (r == 0 && w->ready_mode == READY_PROTOCOL)
		r = env_add(envp, &n, "HERD_CHANNEL_FD", "3");
	if (r == 0 && w->ready_mode == READY_NOTIFY)
		r = notify_env(w, envp, &n);
	if (r == 0)
		r = env_add(envp, &n, "HERD_WORKER_ID", w->id);
	/* A worker that is a master itself finds the herdd that spawned it. */
	if (r == 0)
		r = env_add(envp, &n, "HERD_SOCKET", herdd.cfg.socket_path);
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

/*
 * Takes the slots: four fds as low as they come at start-up, /dev/null until a
 * spawn fills them. Without them spawns copy herdd's whole fd table.
 */
void
spawn_init(void)
{
	int i;

#if HAVE_VALGRIND_H
	/* valgrind runs no clone() that shares the fd table: spawn with a copy under it. */
	if (RUNNING_ON_VALGRIND)
		return;
#endif
	slot_null = open("/dev/null", O_RDONLY | O_CLOEXEC | O_NOCTTY);
	for (i = 0; slot_null >= 0 && i < N_SLOTS; i++) {
		slots[i] = fcntl(slot_null, F_DUPFD_CLOEXEC, 3);
		if (slots[i] < 0)
			break;
		top_slot = slots[i] > top_slot ? slots[i] : top_slot;
	}
	if (i < N_SLOTS) {
		top_slot = -1;
		log_warn("no low fds for spawning (%m): each spawn copies every fd of herdd");
	}
}

/* Puts fd in slot i for the child; the slot keeps a copy until slots_clear(). */
static int
slot_fill(int i, int fd)
{
	if (fd < 0)
		return -1;
	return dup3(fd, slots[i], O_CLOEXEC) < 0 ? -1 : slots[i];
}

/* Points every slot at /dev/null again: a kept copy would hide a worker's EOF. */
static void
slots_clear(void)
{
	for (int i = 0; i < N_SLOTS; i++)
		dup3(slot_null, slots[i], O_CLOEXEC);
}

/*
 * What the child runs and as whom: argv, the environment built from the
 * caller's passwd entry, and (when herdd is root) the credentials to drop to.
 * Returns 0 or -ENOMEM; free p->argv and p->envp either way.
 */
static int
plan_identity(struct worker *w, struct child_plan *p)
{
	char pwbuf[4096], uidtext[16];
	struct passwd pw, *pwp = NULL;
	const char *home = "/", *user = uidtext, *shell = "/bin/sh";
	size_t i, argc = json_array_size(w->argv);

	snprintf(uidtext, sizeof(uidtext), "%u", (unsigned)w->uid);
	if (getpwuid_r(w->uid, &pw, pwbuf, sizeof(pwbuf), &pwp) == 0 && pwp) {
		home = pw.pw_dir && pw.pw_dir[0] == '/' ? pw.pw_dir : "/";
		user = pw.pw_name;
		if (pw.pw_shell && pw.pw_shell[0] == '/')
			shell = pw.pw_shell;
	}
	p->path = w->path;
	p->argv = calloc(argc + 1, sizeof(*p->argv));
	if (!p->argv)
		return -ENOMEM;
	for (i = 0; i < argc; i++)
		p->argv[i] = (char *)json_string_value(json_array_get(w->argv, i));
	p->envp = build_env(w, home, user, shell);
	if (!p->envp)
		return -ENOMEM;
	p->uid = w->uid;
	p->gid = w->gid;
	p->drop = herdd.uid == 0;
	if (p->drop) {
		p->ngroups = MAX_GROUPS;
		if (!pwp) {
			/* No passwd entry: no supplementary groups (PROTOCOL.md 4.1). */
			p->ngroups = 0;
		} else if (getgrouplist(pw.pw_name, w->gid, p->groups, &p->ngroups) < 0) {
			/* More groups than we keep: the primary one only, never more than asked. */
			p->groups[0] = w->gid;
			p->ngroups = 1;
		}
	}
	return 0;
}

/*
 * Moves the child's fds into the reserved low slots, so a CLONE_FILES child
 * finds them below its descriptor limit. Returns 0 or -errno (slots cleared).
 */
static int
plan_share_fds(struct child_plan *p, int channel_fd, const int capture_fds[2], int report_fd)
{
	p->share_fds = top_slot >= 0;
	if (!p->share_fds)
		return 0;
	p->top_slot = top_slot;
	p->channel_fd = channel_fd >= 0 ? slot_fill(SLOT_CHANNEL, channel_fd) : -1;
	p->capture_fds[0] = slot_fill(SLOT_OUT, capture_fds[0]);
	p->capture_fds[1] = slot_fill(SLOT_ERR, capture_fds[1]);
	p->report_fd = slot_fill(SLOT_REPORT, report_fd);
	if ((channel_fd >= 0 && p->channel_fd < 0) || p->report_fd < 0 ||
	    (capture_fds[0] >= 0 && p->capture_fds[0] < 0) ||
	    (capture_fds[1] >= 0 && p->capture_fds[1] < 0)) {
		int r = -errno;

		slots_clear();
		return r;
	}
	return 0;
}

#if defined(__x86_64__)
/*
 * clone3() whose child calls fn(arg) on the stack the arguments name and never
 * returns into C code that ran before the call (x86-64 system call ABI).
 * Returns the pid, or -1 with errno.
 */
static pid_t
clone3_run(struct clone3_args *a, int (*fn)(void *), void *arg)
{
	register long r12 __asm__("r12") = (long)fn;
	register long r13 __asm__("r13") = (long)arg;
	long ret;

	__asm__ volatile("syscall\n\t"
	                 "test %%rax, %%rax\n\t"
	                 "jnz 1f\n\t"
	                 "xor %%ebp, %%ebp\n\t"
	                 "mov %%r13, %%rdi\n\t"
	                 "call *%%r12\n\t"
	                 "mov %%eax, %%edi\n\t"
	                 "mov $60, %%eax\n\t" /* exit(), should fn return */
	                 "syscall\n\t"
	                 "hlt\n"
	                 "1:"
	                 : "=a"(ret)
	                 : "0"((long)SYS_clone3), "D"(a), "S"(sizeof(*a)), "r"(r12), "r"(r13)
	                 : "rcx", "r11", "memory");
	if (ret < 0) {
		errno = (int)-ret;
		return -1;
	}
	return (pid_t)ret;
}
#endif

/*
 * Starts the child straight into its cgroup with clone3. Returns the pid, or
 * -1 with errno; ENOSYS when it cannot be used (and never will be: no clone3,
 * valgrind): the caller then clones and the child joins by itself.
 */
static pid_t
clone_into_cgroup(struct child_plan *p, void *stack, unsigned long flags)
{
#if defined(__x86_64__)
	static bool no_clone3;
	struct clone3_args a = { 0 };
	pid_t pid;

	if (no_clone3) {
		errno = ENOSYS;
		return -1;
	}
	a.flags = flags | CLONE_INTO_CGROUP;
	a.exit_signal = SIGCHLD;
	a.stack = (uint64_t)(uintptr_t)((char *)stack - CHILD_STACK_SIZE);
	a.stack_size = CHILD_STACK_SIZE;
	a.cgroup = (uint64_t)p->cgroup_fd;
	pid = clone3_run(&a, child_main, p);
	if (pid < 0 && (errno == ENOSYS || errno == E2BIG))
		no_clone3 = true;
	return pid;
#else
	errno = ENOSYS;
	return -1;
#endif
}

/*
 * Clones the child with p. Signals stay blocked across the clone until the
 * child has reset their handlers: a SIGTERM sent to the new pid early must
 * kill it, not run herdd's libev handler inside the child, on herdd's memory,
 * and be lost. Returns the pid or -errno.
 */
static pid_t
clone_child(struct child_plan *p, void *stack)
{
	sigset_t all, old;
	pid_t pid;
	int r;

	unsigned long flags = CLONE_VM | CLONE_VFORK | (p->share_fds ? CLONE_FILES : 0) |
	    (p->new_pid_ns ? CLONE_NEWPID : 0);

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, &old);
	pid = p->cgroup_fd >= 0 ? clone_into_cgroup(p, stack, flags) : -1;
	/* Without clone3 (or refused by it), the child joins by itself or fails saying so. */
	if (p->cgroup_fd >= 0 && pid < 0)
		p->join_cgroup = true;
	if (p->cgroup_fd < 0 || p->join_cgroup)
		pid = clone(child_main, stack, (int)flags | SIGCHLD, p);
	r = pid < 0 ? -errno : 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
	if (p->share_fds)
		slots_clear();
	return r < 0 ? r : pid;
}

/* One spawn: its plan and its own copies of the fds the child gets. */
struct spawn_job {
	struct leader_task task; /* first: the leader runs it */
	struct spawn_job *next;
	struct worker *w;
	struct child_plan plan;
	int fds[5]; /* channel, stdout, stderr, cgroup, report pipe's write end; or -1 */
	pid_t result; /* the pid, or -errno */
};

/* Spawns wait here for the leader, one at a time (it has one set of slots, one stack). */
static struct spawn_job *queue, **queue_tail = &queue;

static int
job_fd(struct spawn_job *j, int i, int fd)
{
	j->fds[i] = fd < 0 ? -1 : fcntl(fd, F_DUPFD_CLOEXEC, 3);
	return fd >= 0 && j->fds[i] < 0 ? -errno : 0;
}

static void
job_free(struct spawn_job *j)
{
	for (size_t i = 0; i < sizeof(j->fds) / sizeof(j->fds[0]); i++)
		if (j->fds[i] >= 0)
			close(j->fds[i]);
	free(j->plan.argv);
	free_strv(j->plan.envp);
	free(j);
}

/* In the leader: the clone, which returns once the child has called execve() or exited. */
static void
job_run(struct leader_task *t)
{
	struct spawn_job *j = (struct spawn_job *)t;
	void *stack = child_stack_top();

	if (j->result < 0) {
		/* Failed in the loop already (the slots). */
	} else if (!stack) {
		j->result = -errno;
		if (j->plan.share_fds)
			slots_clear();
	} else {
		j->result = clone_child(&j->plan, stack);
	}
}

static void job_done(struct leader_task *t);

/* Hands the next queued spawn to the leader, its fds in the slots. */
static void
dispatch(void)
{
	struct spawn_job *j = queue;
	int r;

	if (!j || leader_busy())
		return;
	r = plan_share_fds(&j->plan, j->fds[0], &j->fds[1], j->fds[4]);
	if (r < 0)
		j->result = r;
	leader_post(&j->task);
}

/* On the loop: the spawn has ended; the worker learns its pid, the next one starts. */
static void
job_done(struct leader_task *t)
{
	struct spawn_job *j = (struct spawn_job *)t;
	struct worker *w = j->w;
	pid_t result = j->result;

	queue = j->next;
	if (!queue)
		queue_tail = &queue;
	job_free(j);
	sup_spawned(w, result);
	dispatch();
}

/*
 * Queues w's spawn, in the cgroup cgroup_fd when >= 0; see the file comment.
 * The fds given stay the caller's: the job holds copies until it ends.
 * Returns the report pipe's read end or -errno.
 */
int
spawn_start(struct worker *w, int channel_fd, int capture_fds[2], int cgroup_fd)
{
	struct spawn_job *j = calloc(1, sizeof(*j));
	struct child_plan *p;
	int pipefd[2], r;

	if (!j)
		return -ENOMEM;
	for (size_t i = 0; i < sizeof(j->fds) / sizeof(j->fds[0]); i++)
		j->fds[i] = -1;
	j->w = w;
	j->task.run = job_run;
	j->task.done = job_done;
	p = &j->plan;
	r = plan_identity(w, p);
	if (r == 0 && pipe2(pipefd, O_CLOEXEC) < 0)
		r = -errno;
	if (r < 0) {
		job_free(j);
		return r;
	}
	j->fds[4] = pipefd[1];
	r = job_fd(j, 0, channel_fd);
	for (int i = 0; i < 2 && r == 0; i++)
		r = job_fd(j, 1 + i, capture_fds[i]);
	if (r == 0)
		r = job_fd(j, 3, cgroup_fd);
	if (r < 0) {
		close(pipefd[0]);
		job_free(j);
		return r;
	}
	p->parent = getpid();
	p->out = w->out;
	p->channel_fd = j->fds[0];
	p->capture_fds[0] = j->fds[1];
	p->capture_fds[1] = j->fds[2];
	p->report_fd = j->fds[4];
	p->cwd = w->cwd;
	p->umask = (mode_t)w->umask;
	p->cgroup_fd = j->fds[3];
	p->new_pid_ns = w->pid_ns;
	p->nrlimits = limits_rlimits(w, p->rlimits);
	w->spawning = true;
	*queue_tail = j;
	queue_tail = &j->next;
	dispatch();
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	return pipefd[0];
}
