/* SPDX-License-Identifier: MIT */
/*
 * Two threads. The loop (libev, every request, every reap) runs in a thread
 * of its own; the main thread, the thread-group leader, does only what must
 * not stop the loop yet must happen in the leader: starting workers, and the
 * reexec's execve().
 *
 * A spawn clones with CLONE_VFORK (spawn.c), so the cloning thread sleeps
 * until the child has called execve(): 1-7 ms under load, during which the
 * loop used to answer nobody. The leader sleeps instead. It must be the
 * leader because PR_SET_PDEATHSIG fires when the thread that created a
 * worker exits, not the process: the leader lives as long as herdd, and an
 * execve() by the leader keeps its children (one by another thread would end
 * the leader, and every worker with it). The loop thread reaps them all
 * (wait4 sees the children of every thread of the process).
 *
 * Signals stay blocked in the leader, so every one goes to the loop thread's
 * ev_signal watchers as before. Hand-off: one task at a time, under a mutex
 * and condition variable for the leader; its end is written to an eventfd
 * the loop watches, which then runs the task's done() callback.
 *
 * While a task runs, a child may exist whose pid the loop has not yet been
 * told: the reaper and the escapee walk wait for the task to end
 * (leader_busy()), or they would take it for a stranger.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "herdd.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
/* Under lock: the task the leader is to run, and whether the loop has ended. */
static struct leader_task *posted;
static bool loop_ended;

/* The loop's side: the task in flight (posted or done, not yet finished). */
static struct leader_task *in_flight;
static bool serving; /* the leader serves tasks (leader_run) */
static int done_fd = -1;
static ev_io done_io;
static sigset_t loop_mask;
static void (*loop_main)(void);

/* Says the task is done; the loop runs its done() when it next polls. */
static void
signal_done(void)
{
	uint64_t one = 1;

	while (write(done_fd, &one, sizeof(one)) < 0 && errno == EINTR) {
	}
}

static void
done_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct leader_task *t = in_flight;
	uint64_t n;

	if (read(done_fd, &n, sizeof(n)) < 0 || !t)
		return;
	/* Taken once, so everything the leader wrote before its end is seen here. */
	pthread_mutex_lock(&lock);
	pthread_mutex_unlock(&lock);
	in_flight = NULL;
	t->done(t);
}

int
leader_init(void)
{
	done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (done_fd < 0)
		return -errno;
	ev_io_init(&done_io, done_cb, done_fd, EV_READ);
	ev_io_start(herdd.loop, &done_io);
	return 0;
}

void
leader_cleanup(void)
{
	main_io_close(&done_io, &done_fd);
}

bool
leader_busy(void)
{
	return in_flight != NULL;
}

/*
 * Runs t->run(t) in the leader and t->done(t) in the loop afterwards, one
 * task at a time (after leader_init(), never while leader_busy()). Without a
 * leader serving (start-up, no thread) run() is called at once, and done()
 * still comes from the loop, later.
 */
void
leader_post(struct leader_task *t)
{
	in_flight = t;
	t->waited = false;
	if (!serving) {
		t->run(t);
		signal_done();
		return;
	}
	pthread_mutex_lock(&lock);
	posted = t;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
}

/*
 * Runs t in the leader and waits for it, the loop stopped: for the reexec's
 * execve(), whose success ends this thread. t->done is not called.
 */
void
leader_call(struct leader_task *t)
{
	if (!serving) {
		t->run(t);
		return;
	}
	pthread_mutex_lock(&lock);
	posted = t;
	t->waited = true;
	t->finished = false;
	pthread_cond_signal(&wake);
	while (!t->finished)
		pthread_cond_wait(&wake, &lock);
	pthread_mutex_unlock(&lock);
}

static void *
loop_thread(void *unused)
{
	pthread_sigmask(SIG_SETMASK, &loop_mask, NULL);
	loop_main();
	pthread_mutex_lock(&lock);
	loop_ended = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	return NULL;
}

/* The leader's work: tasks as they come, until the loop has ended. */
static void
serve(void)
{
	struct leader_task *t;

	pthread_mutex_lock(&lock);
	for (;;) {
		while (!posted && !loop_ended)
			pthread_cond_wait(&wake, &lock);
		if (!posted)
			break;
		t = posted;
		posted = NULL;
		pthread_mutex_unlock(&lock);
		t->run(t);
		pthread_mutex_lock(&lock);
		/* A leader_call() waits on the same condition; a leader_post() on the eventfd. */
		t->finished = true;
		pthread_cond_broadcast(&wake);
		if (!t->waited)
			signal_done();
	}
	pthread_mutex_unlock(&lock);
}

/*
 * Runs fn (the loop) in a new thread with the current signal mask, and serves
 * tasks in this one, all signals blocked, until fn returns. If no thread can
 * be made, fn runs here and tasks run in the loop (as herdd did before).
 */
void
leader_run(void (*fn)(void))
{
	sigset_t all;
	pthread_t thread;
	int r;

	loop_main = fn;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &loop_mask);
	serving = true;
	r = pthread_create(&thread, NULL, loop_thread, NULL);
	if (r != 0) {
		serving = false;
		pthread_sigmask(SIG_SETMASK, &loop_mask, NULL);
		log_warn("no thread for the loop (%s): each spawn stops it", strerror(r));
		fn();
		return;
	}
	serve();
	pthread_join(thread, NULL);
	serving = false;
	pthread_sigmask(SIG_SETMASK, &loop_mask, NULL);
}
