/* SPDX-License-Identifier: MIT */
/*
 * herdd: the worker supervisor. Options, start-up and shutdown.
 *
 * herdd runs in the foreground (a service manager or the user's session
 * supervises it; it never double-forks). On SIGTERM or SIGINT it stops
 * accepting, stops every worker (graceful, then SIGKILL after the grace
 * period), reaps them all, removes its socket and lock files and exits 0.
 * SIGHUP reopens the log file. With --exit-idle-ms (libherd's autostarted
 * private herdd) it does the same by itself once idle that long.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "herdd.h"

struct herdd herdd;

static ev_signal sig_term, sig_int, sig_hup;
static ev_timer exit_deadline;
/* --exit-idle-ms: the check runs before every poll, so no code path that ends a
 * connection or a worker needs to remember to arm the timer. */
static ev_prepare idle_check;
static ev_timer idle_timer;

/* Monotonic milliseconds. */
int64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void load_settings(bool have_max_message, bool have_handshake);

/* ---- options ---- */

/* How an option's argument is read into its herdd_config field. */
enum opt_type {
	OPT_NUMBER, /* unsigned */
	OPT_BYTES, /* size_t; its default is shown in MiB */
	OPT_STRING, /* char *, strdup'd */
	OPT_ABSPATH, /* char *, an absolute path */
	OPT_LOG_LEVEL, /* enum log_level */
	OPT_FLAG, /* bool, set by the option */
	OPT_VERSION,
	OPT_HELP,
};

/* The default of a worker limit sized to the machine at start-up (size_worker_limits()). */
#define DEF_SIZED ULLONG_MAX

/*
 * One row per option: getopt_long's table, the parsing, the defaults and
 * --help all come from here, so they cannot disagree.
 */
static const struct opt_row {
	const char *name;
	enum opt_type type;
	size_t offset; /* in struct herdd_config */
	unsigned long long min, max, def;
	const char *arg; /* the argument's name in --help; NULL: none */
	const char *help; /* "\n" continues on the next line */
	const char *def_text; /* the default as --help says it, when not the number */
} opt_rows[] = {
#define CFG(field) offsetof(struct herdd_config, field)
	{ "socket", OPT_STRING, CFG(socket_path), 0, 0, 0, "PATH", "control socket",
	    "$XDG_RUNTIME_DIR/herd/herdd.sock,\n/run/herd/herdd.sock for root" },
	{ "log-level", OPT_LOG_LEVEL, CFG(log_level), 0, 0, LOG_LEVEL_INFO, "LEVEL",
	    "debug, info, warn or error", "info" },
	{ "log-file", OPT_ABSPATH, CFG(log_file), 0, 0, 0, "PATH",
	    "log to PATH instead of stderr (SIGHUP reopens it)", NULL },
	{ "grace-ms", OPT_NUMBER, CFG(grace_ms), 0, 3600000, 2000, "N",
	    "SIGTERM-to-SIGKILL grace when herdd stops a\nworker itself", "2000; shutdown: 5000" },
	{ "handshake-timeout-ms", OPT_NUMBER, CFG(handshake_timeout_ms), 1, 3600000,
	    HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS, "N", "close connections without hello after N ms",
	    NULL },
	{ "max-message-size", OPT_BYTES, CFG(max_message_size), 1024, 1u << 30,
	    HERD_DEFAULT_MAX_MESSAGE_SIZE, "BYTES", "largest request accepted", NULL },
	{ "max-output-bytes", OPT_BYTES, CFG(max_output), 4096, 1u << 30, HERD_DEFAULT_MAX_OUTPUT,
	    "BYTES", "output queued per connection", NULL },
	{ "max-connections", OPT_NUMBER, CFG(max_connections), 1, 1 << 20, 1024, "N",
	    "connections in all", NULL },
	{ "max-connections-per-uid", OPT_NUMBER, CFG(max_connections_per_uid), 1, 1 << 20, 256, "N",
	    "connections per uid", NULL },
	{ "max-unauthenticated", OPT_NUMBER, CFG(max_unauthenticated), 1, 1 << 20, 64, "N",
	    "connections still before hello", NULL },
	{ "max-unauthenticated-per-uid", OPT_NUMBER, CFG(max_unauthenticated_per_uid), 1, 1 << 20,
	    16, "N", "connections of one uid still before hello", NULL },
	{ "max-bytes-per-uid", OPT_BYTES, CFG(max_bytes_per_uid), 65536, 1ull << 40, 128u << 20,
	    "BYTES",
	    "bytes one uid's connections make herdd hold\n(input buffers and output queues)",
	    NULL },
	{ "min-heartbeat-interval-ms", OPT_NUMBER, CFG(min_heartbeat_interval_ms), 1, 3600000, 50,
	    "N", "a hello asking for heartbeats more often is\nrefused", NULL },
	{ "idle-line-timeout-ms", OPT_NUMBER, CFG(idle_line_timeout_ms), 0, 86400000, 30000, "N",
	    "close a connection whose unfinished message gets\nno byte for N ms (0: never)", NULL },
	{ "max-workers", OPT_NUMBER, CFG(max_workers), 0, 1 << 20, DEF_SIZED, "N",
	    "live workers in all", "sized to the machine,\nsee below" },
	{ "max-workers-per-uid", OPT_NUMBER, CFG(max_workers_per_uid), 0, 1 << 20, DEF_SIZED, "N",
	    "live workers per uid", "--max-workers; a\nquarter of it for a root herdd" },
	{ "max-workers-per-master", OPT_NUMBER, CFG(max_workers_per_master), 0, 1 << 20, DEF_SIZED,
	    "N", "live workers per master connection", "as per uid" },
	{ "max-pending", OPT_NUMBER, CFG(max_pending), 1, 1 << 20, HERD_DEFAULT_MAX_PENDING, "N",
	    "requests in flight per connection", NULL },
	{ "keep-exited", OPT_NUMBER, CFG(keep_exited), 0, 1 << 20, 256, "N",
	    "exited records kept per uid", NULL },
	{ "keep-exited-ms", OPT_NUMBER, CFG(keep_exited_ms), 0, 86400000, 600000, "N",
	    "and for at most N ms", NULL },
	{ "exit-idle-ms", OPT_NUMBER, CFG(exit_idle_ms), 0, 86400000, 0, "N",
	    "exit after N ms with no connection and no live\nworker",
	    "0: never; autostarted: 10000" },
	{ "event-ring", OPT_NUMBER, CFG(event_ring), 1, 1 << 20, 4096, "N",
	    "events kept for subscribers to replay (subscribe\n\"since\"); at most 32 MiB of them",
	    NULL },
	{ "output-max-bytes", OPT_BYTES, CFG(output_max_bytes), 0, OUTPUT_MAX_BYTES,
	    OUTPUT_DEFAULT_BYTES, "BYTES",
	    "cap of a worker's stdout/stderr FILE whose spawn\nsets none; rotated above it (0: "
	    "no cap)",
	    NULL },
	{ "output-max-files", OPT_NUMBER, CFG(output_max_files), 1, OUTPUT_MAX_FILES,
	    OUTPUT_DEFAULT_FILES, "N", "such a FILE and N-1 rotated ones are kept", NULL },
	{ "stdio", OPT_FLAG, CFG(stdio), 0, 0, 0, NULL,
	    "serve one master over stdin and stdout (the\nlink of PROTOCOL.md 9: ssh, srun); exit "
	    "when\nit ends",
	    NULL },
	{ "cgroup", OPT_ABSPATH, CFG(cgroup), 0, 0, 0, "DIR",
	    "use the cgroup v2 directory DIR as delegated:\nherdd moves into DIR/herdd, each "
	    "worker gets\n"
	    "DIR/workers/wN",
	    "the unit's, when Delegate=yes" },
	{ "version", OPT_VERSION, 0, 0, 0, 0, NULL, "print herdd's version and exit", NULL },
	{ "help", OPT_HELP, 0, 0, 0, 0, NULL, "print this help and exit", NULL },
#undef CFG
};

#define N_OPTS (sizeof(opt_rows) / sizeof(opt_rows[0]))
/* How the worker limits are sized (size_worker_limits(), and --help says so). */
#define FDS_RESERVED   64u
#define FDS_PER_WORKER 6u
#define PIDS_SHARE     4u
#define MIB_PER_WORKER 4u
#define MIN_SIZED      64u
#define OPT_VAL_BASE   256
/* Where --help's texts start, as two spaces, the option and its argument take up to here. */
#define HELP_COLUMN 34

/* Prints text, indenting each line after the first to the help column. */
static void
print_indented(FILE *f, const char *text)
{
	const char *nl;

	while ((nl = strchr(text, '\n'))) {
		fprintf(f, "%.*s\n%*s", (int)(nl - text), text, HELP_COLUMN, "");
		text = nl + 1;
	}
	fputs(text, f);
}

static void
usage(FILE *f)
{
	char head[64];

	fprintf(f,
	    "Usage: herdd [OPTION]...\n"
	    "Supervise herd worker processes on behalf of masters.\n\n");
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt_row *o = &opt_rows[i];

		snprintf(head, sizeof(head), "--%s%s%s", o->name, o->arg ? " " : "",
		    o->arg ? o->arg : "");
		fprintf(f, "  %-*s", HELP_COLUMN - 2, head);
		print_indented(f, o->help);
		if (o->def_text) {
			fputs(" (default ", f);
			print_indented(f, o->def_text);
			fputs(")", f);
		} else if (o->type == OPT_BYTES) {
			fprintf(f, " (default %llu MiB)", o->def >> 20);
		} else if (o->type == OPT_NUMBER) {
			fprintf(f, " (default %llu)", o->def);
		}
		fputc('\n', f);
	}
	fprintf(f,
	    "\nUnless given, --max-workers is the smallest of: the open-file hard limit,\n"
	    "less %u, over %u (the descriptors herdd holds per worker); kernel.pid_max over\n"
	    "%u; RLIMIT_NPROC over 2 (when herdd is not root); and physical memory over\n"
	    "%u MiB; but at least %u.\n",
	    FDS_RESERVED, FDS_PER_WORKER, PIDS_SHARE, MIB_PER_WORKER, MIN_SIZED);
}

static unsigned long long
number(const char *opt, const char *s, unsigned long long min, unsigned long long max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "herdd: --%s needs a number between %llu and %llu, not \"%s\"\n",
		    opt, min, max, s);
		exit(2);
	}
	return v;
}

/* Sets every option's field to its default. */
static void
options_defaults(struct herdd_config *c)
{
	*c = (struct herdd_config){ 0 };
	for (size_t i = 0; i < N_OPTS; i++) {
		const struct opt_row *o = &opt_rows[i];
		void *field = (char *)c + o->offset;

		if (o->type == OPT_NUMBER)
			*(unsigned *)field = o->def == DEF_SIZED ? 0 : (unsigned)o->def;
		else if (o->type == OPT_BYTES)
			*(size_t *)field = (size_t)o->def;
		else if (o->type == OPT_LOG_LEVEL)
			*(enum log_level *)field = (enum log_level)o->def;
	}
}

/* Applies one option (row o, argument arg) to c; exits on a bad value. */
static void
option_apply(struct herdd_config *c, const struct opt_row *o, const char *arg)
{
	void *field = (char *)c + o->offset;
	int lvl;

	switch (o->type) {
	case OPT_NUMBER:
		*(unsigned *)field = (unsigned)number(o->name, arg, o->min, o->max);
		break;
	case OPT_BYTES:
		*(size_t *)field = (size_t)number(o->name, arg, o->min, o->max);
		break;
	case OPT_ABSPATH:
		if (arg[0] != '/') {
			fprintf(stderr, "herdd: --%s needs an absolute path\n", o->name);
			exit(2);
		}
		/* fall through */
	case OPT_STRING:
		free(*(char **)field);
		*(char **)field = strdup(arg);
		if (!*(char **)field)
			fatal("out of memory");
		break;
	case OPT_LOG_LEVEL:
		lvl = log_parse_level(arg);
		if (lvl < 0) {
			fprintf(stderr, "herdd: unknown log level \"%s\"\n", arg);
			exit(2);
		}
		*(enum log_level *)field = (enum log_level)lvl;
		break;
	case OPT_FLAG:
		*(bool *)field = true;
		break;
	case OPT_VERSION:
		printf("herdd %s\n", HERD_VERSION);
		exit(0);
	case OPT_HELP:
		usage(stdout);
		exit(0);
	}
}

/* True if the option that sets this herdd_config field was given. */
static bool
given(const bool *seen, size_t offset)
{
	for (size_t i = 0; i < N_OPTS; i++)
		if (opt_rows[i].type < OPT_VERSION && opt_rows[i].offset == offset)
			return seen[i];
	return false;
}

/* Which options the command line gave (the worker limits are sized unless given). */
static bool opt_seen[N_OPTS];

/* Fills herdd.cfg from the defaults, argv and HERD_RPC_SETTINGS; exits on a bad one. */
void
main_parse_options(int argc, char **argv)
{
	struct option opts[N_OPTS + 1] = { { 0 } };
	int o;

	memset(opt_seen, 0, sizeof(opt_seen));
	for (size_t i = 0; i < N_OPTS; i++)
		opts[i] = (struct option){ opt_rows[i].name,
			opt_rows[i].arg ? required_argument : no_argument, NULL,
			OPT_VAL_BASE + (int)i };
	options_defaults(&herdd.cfg);
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o < OPT_VAL_BASE || o >= OPT_VAL_BASE + (int)N_OPTS) {
			usage(stderr);
			exit(2);
		}
		opt_seen[o - OPT_VAL_BASE] = true;
		option_apply(&herdd.cfg, &opt_rows[o - OPT_VAL_BASE], optarg);
	}
	if (herdd.cfg.output_max_bytes && herdd.cfg.output_max_bytes < OUTPUT_MIN_BYTES) {
		fprintf(
		    stderr, "herdd: --output-max-bytes needs 0 or at least %u\n", OUTPUT_MIN_BYTES);
		exit(2);
	}
	if (optind < argc) {
		fprintf(stderr, "herdd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	load_settings(given(opt_seen, offsetof(struct herdd_config, max_message_size)),
	    given(opt_seen, offsetof(struct herdd_config, handshake_timeout_ms)));
}

/*
 * herdd's own settings: the defaults, then HERD_RPC_SETTINGS from its
 * environment, field by field (PROTOCOL.md 3.3), with proto's table. They set
 * herdd's message size limit and handshake timeout unless an option did, and
 * the defaults every spawned worker starts from. A bad value stops herdd at
 * start-up.
 */
static void
load_settings(bool have_max_message, bool have_handshake)
{
	struct proto_settings *s = &herdd.cfg.worker_settings;
	const char *env = getenv("HERD_RPC_SETTINGS");
	struct proto_settings_error err;

	proto_settings_defaults(s);
	if (env && *env &&
	    (proto_settings_apply_text(s, env, "HERD_RPC_SETTINGS", &err) < 0 ||
	        proto_settings_check(s, "HERD_RPC_SETTINGS", &err) < 0)) {
		fprintf(stderr, "herdd: %s\n", err.text);
		exit(2);
	}
	if (!have_max_message)
		herdd.cfg.max_message_size = s->max_message_size;
	if (!have_handshake)
		herdd.cfg.handshake_timeout_ms = s->handshake_timeout_ms;
}

/* Ends the loop once shutdown has stopped the last worker. */
void
main_maybe_exit(void)
{
	if (herdd.stopping && sup_count_live() == 0)
		ev_break(herdd.loop, EVBREAK_ALL);
}

static void
exit_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_error("%u workers still not reaped after SIGKILL; exiting anyway", sup_count_live());
	ev_break(loop, EVBREAK_ALL);
}

/* Stops accepting, stops every worker, and ends the loop once they are reaped. */
static void
shutdown_begin(struct ev_loop *loop)
{
	if (herdd.stopping)
		return;
	herdd.stopping = true;
	ev_prepare_stop(loop, &idle_check);
	ev_timer_stop(loop, &idle_timer);
	notify_stopping();
	server_stop_accepting();
	sup_stop_all();
	ev_timer_init(&exit_deadline, exit_deadline_cb, herdd.cfg.grace_ms / 1000.0 + 5.0, 0.);
	ev_timer_start(loop, &exit_deadline);
	main_maybe_exit();
}

void
main_shutdown(void)
{
	shutdown_begin(herdd.loop);
}

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct worker *k;

	if (herdd.stopping) {
		log_info("signal %d again: killing every worker now", w->signum);
		TAILQ_FOREACH(k, &herdd.workers, link)
			sup_stop(k, PROTO_REASON_DAEMON_SHUTDOWN, 0);
		return;
	}
	log_info("signal %d: stopping %u workers", w->signum, sup_count_live());
	shutdown_begin(loop);
}

static void
idle_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	log_info("idle for %u ms (no connection, no worker): exiting", herdd.cfg.exit_idle_ms);
	shutdown_begin(loop);
}

/* Arms the idle timer while nobody uses herdd, disarms it as soon as someone does. */
static void
idle_check_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	bool idle = herdd.nconns == 0 && sup_count_live() == 0;

	if (idle && !ev_is_active(&idle_timer)) {
		ev_timer_set(&idle_timer, herdd.cfg.exit_idle_ms / 1000.0, 0.);
		ev_timer_start(loop, &idle_timer);
	} else if (!idle && ev_is_active(&idle_timer)) {
		ev_timer_stop(loop, &idle_timer);
	}
}

static void
hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_reopen();
}

/*
 * Whoever started herdd may have leaked descriptors into it (a test runner's
 * temp file, a shell's pipe). Only stdio and the sockets the service manager
 * passed (LISTEN_FDS, for this very pid) are ours.
 */
static void
close_inherited_fds(void)
{
	const char *lpid = getenv("LISTEN_PID"), *lfds = getenv("LISTEN_FDS");
	unsigned keep = 0;

	if (lpid && lfds && strtol(lpid, NULL, 10) == (long)getpid())
		keep = (unsigned)strtoul(lfds, NULL, 10);
	if (keep > 1024)
		keep = 1024;
	close_range(3 + keep, ~0U, 0);
}

/*
 * Every worker costs herdd four or five descriptors (its channel, captured
 * output, pidfd, error pipe), so the usual soft limit of 1024 would stop it
 * near 200 workers. herdd polls with epoll, which has no FD_SETSIZE ceiling,
 * so it raises its soft limit to the hard one, as systemd recommends for
 * such daemons; workers get the limit herdd started with (spawn.c), so one
 * that uses select() is not handed descriptors past FD_SETSIZE.
 */
static void
raise_nofile(void)
{
	struct rlimit want;
	unsigned long max = 0;
	FILE *f;

	herdd.max_fds = 1024;
	if (getrlimit(RLIMIT_NOFILE, &herdd.nofile) < 0)
		return;
	herdd.max_fds = herdd.nofile.rlim_cur;
	want = herdd.nofile;
	if (want.rlim_max == RLIM_INFINITY) {
		/* The kernel refuses more than fs.nr_open. */
		f = fopen("/proc/sys/fs/nr_open", "re");
		if (!f)
			return;
		if (fscanf(f, "%lu", &max) != 1)
			max = 0;
		fclose(f);
		want.rlim_cur = (rlim_t)max;
	} else {
		want.rlim_cur = want.rlim_max;
	}
	if (want.rlim_cur <= herdd.nofile.rlim_cur)
		return;
	if (setrlimit(RLIMIT_NOFILE, &want) < 0) {
		log_warn("raising the open-file limit to %lu: %m", (unsigned long)want.rlim_cur);
		return;
	}
	herdd.nofile_raised = true;
	herdd.max_fds = want.rlim_cur;
}

/* Reads one number from a /proc file, or returns 0. */
static unsigned long long
proc_number(const char *path)
{
	unsigned long long v = 0;
	FILE *f = fopen(path, "re");

	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

/*
 * The worker limits no option set, sized to the machine as --help says: a
 * fixed default (64 per master once) made concurrent spawns fail on machines
 * where herdd runs thousands of workers in a few MiB.
 */
static void
size_worker_limits(void)
{
	unsigned long long n = herdd.max_fds > FDS_RESERVED + FDS_PER_WORKER * MIN_SIZED
	    ? (herdd.max_fds - FDS_RESERVED) / FDS_PER_WORKER
	    : MIN_SIZED;
	unsigned long long pids = proc_number("/proc/sys/kernel/pid_max") / PIDS_SHARE;
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
	unsigned long long mem = pages > 0 && page > 0
	    ? (unsigned long long)pages * (unsigned long long)page / (MIB_PER_WORKER << 20)
	    : 0;
	struct rlimit nproc;

	if (pids && pids < n)
		n = pids;
	if (herdd.uid != 0 && getrlimit(RLIMIT_NPROC, &nproc) == 0 &&
	    nproc.rlim_cur != RLIM_INFINITY && nproc.rlim_cur / 2 < n)
		n = nproc.rlim_cur / 2;
	if (mem && mem < n)
		n = mem;
	if (n < MIN_SIZED)
		n = MIN_SIZED;
	if (n > 1 << 20)
		n = 1 << 20;
	if (!given(opt_seen, offsetof(struct herdd_config, max_workers)))
		herdd.cfg.max_workers = (unsigned)n;
	if (!given(opt_seen, offsetof(struct herdd_config, max_workers_per_uid)))
		herdd.cfg.max_workers_per_uid =
		    herdd.uid == 0 && n / 4 > MIN_SIZED ? (unsigned)(n / 4) : (unsigned)n;
	if (!given(opt_seen, offsetof(struct herdd_config, max_workers_per_master)))
		herdd.cfg.max_workers_per_master = herdd.cfg.max_workers_per_uid;
	log_debug("worker limits: %u in all, %u per uid, %u per master", herdd.cfg.max_workers,
	    herdd.cfg.max_workers_per_uid, herdd.cfg.max_workers_per_master);
}

/* fds 0..2 must exist, or the first socket would become someone's stdout. */
static void
ensure_std_fds(void)
{
	int fd;

	while ((fd = open("/dev/null", O_RDWR)) >= 0 && fd <= 2) {
	}
	if (fd > 2)
		close(fd);
}

/* The loop, the connection list and the supervisor, for the configuration in herdd.cfg. */
void
main_state_init(void)
{
	/* Not libev's default loop: that one reaps every child itself (supervisor.c). */
	if (!herdd.loop)
		herdd.loop = ev_loop_new(EVFLAG_AUTO);
	if (!herdd.loop)
		fatal("cannot initialise libev's loop");
	TAILQ_INIT(&herdd.conns);
	LIST_INIT(&herdd.accounts);
	sup_init();
	events_init();
}

/* Drops every connection and every worker record; the loop stays. */
void
main_state_free(void)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&herdd.conns)))
		conn_abort(c);
	sup_cleanup();
	events_free();
}

void
main_io_close(ev_io *io, int *fd)
{
	if (*fd < 0)
		return;
	ev_io_stop(herdd.loop, io);
	close(*fd);
	*fd = -1;
}

/* Everything before the loop runs: process state, logging, libev, the socket. */
static void
start_up(int argc, char **argv)
{
	/* A reexec's successor keeps exactly the fds its predecessor's state names. */
	bool adopting = reexec_early(argc, argv);
	int r;

	if (!adopting)
		close_inherited_fds();
	ensure_std_fds();
	/* Everything herdd creates (sockets, directories) is private unless chmod'ed. */
	umask(077);
	herdd.uid = geteuid();
	herdd.gid = getegid();
	herdd.pid = getpid();
	herdd.started_ms = now_ms();
	main_parse_options(argc, argv);
	if (herdd.cfg.stdio) {
		stdio_take();
		/* Its stderr is the master's terminal: only what needs a look. */
		if (!given(opt_seen, offsetof(struct herdd_config, log_level)))
			herdd.cfg.log_level = LOG_LEVEL_WARN;
	}
	r = log_open(herdd.cfg.log_level, herdd.cfg.log_file);
	if (r < 0) {
		fprintf(
		    stderr, "herdd: opening log file %s: %s\n", herdd.cfg.log_file, strerror(-r));
		exit(1);
	}
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	size_worker_limits();
	if (adopting)
		cgroup_load(reexec_cgroup());
	else
		cgroup_init();
	spawn_init();
	/* Never keep a mount busy; every path herdd uses is absolute. */
	if (chdir("/") < 0)
		fatal("chdir /: %m");
	/* Orphaned descendants of workers come to us, so none outlives its worker's stop. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		log_warn("PR_SET_CHILD_SUBREAPER: %m; detached grandchildren may escape");

	main_state_init();
	r = leader_init();
	if (r < 0)
		fatal("eventfd: %s", strerror(-r));
	contain_init(cgroup_delegated_dir());
	if (adopting)
		reexec_server();
	else
		server_open();
	/*
	 * Ids continue from the last herdd's on this socket directory; a --stdio
	 * instance's directory is its own and removed at exit: nothing to continue.
	 */
	ids_open(herdd.cfg.stdio ? NULL : herdd.socket_dir);
	server_start();
	if (herdd.cfg.stdio)
		stdio_start();
	reexec_init(argc, argv);
	reexec_adopt();
}

/* The signals and the idle check. */
static void
watch_start(void)
{
	ev_signal_init(&sig_term, stop_cb, SIGTERM);
	ev_signal_init(&sig_int, stop_cb, SIGINT);
	ev_signal_init(&sig_hup, hup_cb, SIGHUP);
	ev_signal_start(herdd.loop, &sig_term);
	ev_signal_start(herdd.loop, &sig_int);
	ev_signal_start(herdd.loop, &sig_hup);

	ev_timer_init(&idle_timer, idle_timer_cb, 0., 0.);
	ev_prepare_init(&idle_check, idle_check_cb);
	if (herdd.cfg.exit_idle_ms > 0)
		ev_prepare_start(herdd.loop, &idle_check);
}

/* After the loop: every worker is stopped; release what start_up() took. */
static void
clean_up(void)
{
	sigset_t late;

	/* Everything is stopped: another SIGTERM must not turn this clean exit into a kill. */
	sigemptyset(&late);
	sigaddset(&late, SIGTERM);
	sigaddset(&late, SIGINT);
	sigprocmask(SIG_BLOCK, &late, NULL);

	ev_timer_stop(herdd.loop, &exit_deadline);
	ev_prepare_stop(herdd.loop, &idle_check);
	ev_timer_stop(herdd.loop, &idle_timer);
	reexec_cleanup();
	main_state_free();
	leader_cleanup();
	stdio_cleanup();
	server_close();
	contain_cleanup();
	cgroup_cleanup();
	ev_signal_stop(herdd.loop, &sig_term);
	ev_signal_stop(herdd.loop, &sig_int);
	ev_signal_stop(herdd.loop, &sig_hup);
	log_info("stopped");
	log_close();
	ev_loop_destroy(herdd.loop);
	free(herdd.cfg.socket_path);
	free(herdd.cfg.log_file);
	free(herdd.cfg.cgroup);
}

static void
run_loop(void)
{
	ev_run(herdd.loop, 0);
}

/* herdd's whole life; main() is in herdd.c, apart, so the fuzz target can link the rest. */
int
main_run(int argc, char **argv)
{
	start_up(argc, argv);
	watch_start();
	reexec_started();
	notify_init();
	log_info(
	    "herdd %s ready (pid %d, uid %u)", HERD_VERSION, (int)herdd.pid, (unsigned)herdd.uid);
	notify_ready();
	notify_status();
	leader_run(run_loop);
	clean_up();
	return 0;
}
