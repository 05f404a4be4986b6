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

static void
usage(FILE *f)
{
	fprintf(f,
	    "Usage: herdd [OPTION]...\n"
	    "Supervise herd worker processes on behalf of masters.\n\n"
	    "  --socket PATH                   control socket (default "
	    "$XDG_RUNTIME_DIR/herd/herdd.sock,\n"
	    "                                  /run/herd/herdd.sock for root)\n"
	    "  --log-level LEVEL               debug, info, warn or error (default info)\n"
	    "  --log-file PATH                 log to PATH instead of stderr (SIGHUP reopens it)\n"
	    "  --grace-ms N                    SIGTERM-to-SIGKILL grace period (default 2000)\n"
	    "  --handshake-timeout-ms N        close connections without hello after N ms (default "
	    "10000)\n"
	    "  --max-message-size BYTES        largest request accepted (default 16 MiB)\n"
	    "  --max-output-bytes BYTES        output queued per connection (default 64 MiB)\n"
	    "  --max-connections N             connections in all (default 1024)\n"
	    "  --max-connections-per-uid N     connections per uid (default 256)\n"
	    "  --max-unauthenticated N         connections still before hello (default 64)\n"
	    "  --max-workers N                 live workers in all (default 1024)\n"
	    "  --max-workers-per-uid N         live workers per uid (default 256)\n"
	    "  --max-workers-per-master N      live workers per master connection (default 64)\n"
	    "  --max-pending N                 requests in flight per connection (default 1024)\n"
	    "  --keep-exited N                 exited records kept per uid (default 256)\n"
	    "  --keep-exited-ms N              and for at most N ms (default 600000)\n"
	    "  --exit-idle-ms N                exit after N ms with no connection and no live\n"
	    "                                  worker (default 0: never; autostarted: 10000)\n"
	    "  --version, --help\n");
}

static unsigned long long
number(const char *opt, const char *s, unsigned long long min, unsigned long long max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "herdd: %s needs a number between %llu and %llu, not \"%s\"\n", opt,
		    min, max, s);
		exit(2);
	}
	return v;
}

enum {
	OPT_SOCKET = 256,
	OPT_LOG_LEVEL,
	OPT_LOG_FILE,
	OPT_GRACE,
	OPT_HANDSHAKE,
	OPT_MAX_MESSAGE,
	OPT_MAX_OUTPUT,
	OPT_MAX_CONN,
	OPT_MAX_CONN_UID,
	OPT_MAX_UNAUTH,
	OPT_MAX_WORKERS,
	OPT_MAX_WORKERS_UID,
	OPT_MAX_WORKERS_MASTER,
	OPT_MAX_PENDING,
	OPT_KEEP,
	OPT_KEEP_MS,
	OPT_EXIT_IDLE,
	OPT_VERSION,
	OPT_HELP,
};

static void
parse_options(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "log-level", required_argument, NULL, OPT_LOG_LEVEL },
		{ "log-file", required_argument, NULL, OPT_LOG_FILE },
		{ "grace-ms", required_argument, NULL, OPT_GRACE },
		{ "handshake-timeout-ms", required_argument, NULL, OPT_HANDSHAKE },
		{ "max-message-size", required_argument, NULL, OPT_MAX_MESSAGE },
		{ "max-output-bytes", required_argument, NULL, OPT_MAX_OUTPUT },
		{ "max-connections", required_argument, NULL, OPT_MAX_CONN },
		{ "max-connections-per-uid", required_argument, NULL, OPT_MAX_CONN_UID },
		{ "max-unauthenticated", required_argument, NULL, OPT_MAX_UNAUTH },
		{ "max-workers", required_argument, NULL, OPT_MAX_WORKERS },
		{ "max-workers-per-uid", required_argument, NULL, OPT_MAX_WORKERS_UID },
		{ "max-workers-per-master", required_argument, NULL, OPT_MAX_WORKERS_MASTER },
		{ "max-pending", required_argument, NULL, OPT_MAX_PENDING },
		{ "keep-exited", required_argument, NULL, OPT_KEEP },
		{ "keep-exited-ms", required_argument, NULL, OPT_KEEP_MS },
		{ "exit-idle-ms", required_argument, NULL, OPT_EXIT_IDLE },
		{ "version", no_argument, NULL, OPT_VERSION },
		{ "help", no_argument, NULL, OPT_HELP },
		{ 0 },
	};
	struct herdd_config *c = &herdd.cfg;
	bool have_max_message = false, have_handshake = false;
	int o, lvl;

	*c = (struct herdd_config){
		.log_level = LOG_LEVEL_INFO,
		.grace_ms = 2000,
		.handshake_timeout_ms = HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS,
		.max_message_size = HERD_DEFAULT_MAX_MESSAGE_SIZE,
		.max_output = HERD_DEFAULT_MAX_OUTPUT,
		.max_connections = 1024,
		.max_connections_per_uid = 256,
		.max_unauthenticated = 64,
		.max_workers = 1024,
		.max_workers_per_uid = 256,
		.max_workers_per_master = 64,
		.max_pending = HERD_DEFAULT_MAX_PENDING,
		.keep_exited = 256,
		.keep_exited_ms = 600000,
	};
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case OPT_SOCKET:
			free(c->socket_path);
			c->socket_path = strdup(optarg);
			break;
		case OPT_LOG_LEVEL:
			lvl = log_parse_level(optarg);
			if (lvl < 0) {
				fprintf(stderr, "herdd: unknown log level \"%s\"\n", optarg);
				exit(2);
			}
			c->log_level = (enum log_level)lvl;
			break;
		case OPT_LOG_FILE:
			if (optarg[0] != '/') {
				fprintf(stderr, "herdd: --log-file needs an absolute path\n");
				exit(2);
			}
			free(c->log_file);
			c->log_file = strdup(optarg);
			break;
		case OPT_GRACE:
			c->grace_ms = (unsigned)number("--grace-ms", optarg, 0, 3600000);
			break;
		case OPT_HANDSHAKE:
			c->handshake_timeout_ms =
			    (unsigned)number("--handshake-timeout-ms", optarg, 1, 3600000);
			have_handshake = true;
			break;
		case OPT_MAX_MESSAGE:
			c->max_message_size =
			    (size_t)number("--max-message-size", optarg, 1024, 1u << 30);
			have_max_message = true;
			break;
		case OPT_MAX_OUTPUT:
			c->max_output =
			    (size_t)number("--max-output-bytes", optarg, 4096, 1u << 30);
			break;
		case OPT_MAX_CONN:
			c->max_connections =
			    (unsigned)number("--max-connections", optarg, 1, 1 << 20);
			break;
		case OPT_MAX_CONN_UID:
			c->max_connections_per_uid =
			    (unsigned)number("--max-connections-per-uid", optarg, 1, 1 << 20);
			break;
		case OPT_MAX_UNAUTH:
			c->max_unauthenticated =
			    (unsigned)number("--max-unauthenticated", optarg, 1, 1 << 20);
			break;
		case OPT_MAX_WORKERS:
			c->max_workers = (unsigned)number("--max-workers", optarg, 0, 1 << 20);
			break;
		case OPT_MAX_WORKERS_UID:
			c->max_workers_per_uid =
			    (unsigned)number("--max-workers-per-uid", optarg, 0, 1 << 20);
			break;
		case OPT_MAX_WORKERS_MASTER:
			c->max_workers_per_master =
			    (unsigned)number("--max-workers-per-master", optarg, 0, 1 << 20);
			break;
		case OPT_MAX_PENDING:
			c->max_pending = (unsigned)number("--max-pending", optarg, 1, 1 << 20);
			break;
		case OPT_KEEP:
			c->keep_exited = (unsigned)number("--keep-exited", optarg, 0, 1 << 20);
			break;
		case OPT_KEEP_MS:
			c->keep_exited_ms =
			    (unsigned)number("--keep-exited-ms", optarg, 0, 86400000);
			break;
		case OPT_EXIT_IDLE:
			c->exit_idle_ms = (unsigned)number("--exit-idle-ms", optarg, 0, 86400000);
			break;
		case OPT_VERSION:
			printf("herdd %s\n", HERD_VERSION);
			exit(0);
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "herdd: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		exit(2);
	}
	load_settings(have_max_message, have_handshake);
}

/*
 * herdd's own settings: the defaults, then HERD_RPC_SETTINGS from its
 * environment, field by field (PROTOCOL.md 3.3). They set herdd's message
 * size limit and handshake timeout unless an option did, and the defaults
 * every spawned worker starts from. A bad value stops herdd at start-up.
 */
static void
load_settings(bool have_max_message, bool have_handshake)
{
	static const char *const names[] = { "max_message_size", "heartbeat_interval_ms",
		"heartbeat_timeout_ms", "handshake_timeout_ms", "spawn_timeout_ms",
		"connection_timeout_ms" };
	json_int_t v[6] = { HERD_DEFAULT_MAX_MESSAGE_SIZE, HERD_DEFAULT_HEARTBEAT_INTERVAL_MS,
		HERD_DEFAULT_HEARTBEAT_TIMEOUT_MS, HERD_DEFAULT_HANDSHAKE_TIMEOUT_MS,
		HERD_DEFAULT_SPAWN_TIMEOUT_MS, HERD_DEFAULT_CONNECTION_TIMEOUT_MS };
	const char *env = getenv("HERD_RPC_SETTINGS");
	json_error_t jerr;
	json_t *o;
	size_t i;

	if (env && *env) {
		o = json_loads(env, JSON_REJECT_DUPLICATES, &jerr);
		if (!o ||
		    json_unpack_ex(o, &jerr, JSON_STRICT, "{s?I, s?I, s?I, s?I, s?I, s?I}",
		        names[0], &v[0], names[1], &v[1], names[2], &v[2], names[3], &v[3],
		        names[4], &v[4], names[5], &v[5]) < 0) {
			fprintf(stderr,
			    "herdd: HERD_RPC_SETTINGS is not a valid settings object: %s\n",
			    jerr.text);
			exit(2);
		}
		json_decref(o);
		for (i = 0; i < 6; i++) {
			json_int_t lo = i == 0 ? 1024 : 0, hi = i == 0 ? 1073741824 : 4294967295LL;

			if (v[i] < lo || v[i] > hi) {
				fprintf(stderr,
				    "herdd: HERD_RPC_SETTINGS: %s must be between %lld and %lld\n",
				    names[i], (long long)lo, (long long)hi);
				exit(2);
			}
		}
	}
	if (!have_max_message)
		herdd.cfg.max_message_size = (size_t)v[0];
	if (!have_handshake)
		herdd.cfg.handshake_timeout_ms = (unsigned)v[3];
	herdd.cfg.worker_settings = json_object();
	if (!herdd.cfg.worker_settings)
		fatal("out of memory");
	for (i = 0; i < 6; i++)
		json_object_set_new(herdd.cfg.worker_settings, names[i], json_integer(v[i]));
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

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct worker *k;

	if (herdd.stopping) {
		log_info("signal %d again: killing every worker now", w->signum);
		TAILQ_FOREACH(k, &herdd.workers, link)
			sup_stop(k, "daemon_shutdown", 0);
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

static void
close_connections(void)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&herdd.conns)))
		conn_abort(c);
}

int
main(int argc, char **argv)
{
	sigset_t late;
	int r;

	close_inherited_fds();
	ensure_std_fds();
	/* Everything herdd creates (sockets, directories) is private unless chmod'ed. */
	umask(077);
	herdd.uid = geteuid();
	herdd.gid = getegid();
	herdd.pid = getpid();
	herdd.started_ms = now_ms();
	parse_options(argc, argv);
	r = log_open(herdd.cfg.log_level, herdd.cfg.log_file);
	if (r < 0) {
		fprintf(
		    stderr, "herdd: opening log file %s: %s\n", herdd.cfg.log_file, strerror(-r));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	raise_nofile();
	spawn_init();
	/* Never keep a mount busy; every path herdd uses is absolute. */
	if (chdir("/") < 0)
		fatal("chdir /: %m");
	/* Orphaned descendants of workers come to us, so none outlives its worker's stop. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		log_warn("PR_SET_CHILD_SUBREAPER: %m; detached grandchildren may escape");

	herdd.loop = ev_default_loop(EVFLAG_AUTO);
	if (!herdd.loop)
		fatal("cannot initialise libev's default loop");
	TAILQ_INIT(&herdd.conns);
	sup_init();
	server_open();
	server_start();

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

	notify_init();
	log_info(
	    "herdd %s ready (pid %d, uid %u)", HERD_VERSION, (int)herdd.pid, (unsigned)herdd.uid);
	notify_ready();
	notify_status();

	ev_run(herdd.loop, 0);

	/* Everything is stopped: another SIGTERM must not turn this clean exit into a kill. */
	sigemptyset(&late);
	sigaddset(&late, SIGTERM);
	sigaddset(&late, SIGINT);
	sigprocmask(SIG_BLOCK, &late, NULL);

	ev_timer_stop(herdd.loop, &exit_deadline);
	ev_prepare_stop(herdd.loop, &idle_check);
	ev_timer_stop(herdd.loop, &idle_timer);
	close_connections();
	sup_cleanup();
	server_close();
	ev_signal_stop(herdd.loop, &sig_term);
	ev_signal_stop(herdd.loop, &sig_int);
	ev_signal_stop(herdd.loop, &sig_hup);
	log_info("stopped");
	log_close();
	ev_loop_destroy(herdd.loop);
	free(herdd.cfg.socket_path);
	free(herdd.cfg.log_file);
	json_decref(herdd.cfg.worker_settings);
	return 0;
}
