/* SPDX-License-Identifier: MIT */
/*
 * rpc_parallel's start_app: one executable that is the master when a person
 * runs it and a worker when herdd spawns it, so a program can spawn itself
 * without shipping a second binary.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/internal.h"
#include "herd/master.h"
#include "herd/worker.h"

/* The roles taken so far: bits only ever added, from any thread. */
static int process_role;

void
herd__role_add(int role)
{
	__atomic_fetch_or(&process_role, role, __ATOMIC_RELAXED);
}

HERD_EXPORT int
herd_process_role(void)
{
	return __atomic_load_n(&process_role, __ATOMIC_RELAXED);
}

static pthread_once_t self_once = PTHREAD_ONCE_INIT;
static char *self_path;

static void
self_path_init(void)
{
	char buf[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);

	if (n <= 0)
		return;
	buf[n] = '\0';
	self_path = strdup(buf);
}

HERD_EXPORT const char *
herd_self_path(void)
{
	pthread_once(&self_once, self_path_init);
	return self_path;
}

/* For herd_map_reduce()'s local mode: the functions this program's workers serve. */
static const struct herd_worker_type *app_type;

const struct herd_worker_type *
herd__app_type(void)
{
	return __atomic_load_n(&app_type, __ATOMIC_ACQUIRE);
}

HERD_EXPORT int
herd_start_app(const struct herd_worker_type *type, int argc, char **argv)
{
	const char *fd = getenv("HERD_CHANNEL_FD");

	if (!type)
		return -EINVAL;
	__atomic_store_n(&app_type, type, __ATOMIC_RELEASE);
	/* herdd sets HERD_CHANNEL_FD only for the processes it spawns as workers. */
	if (fd && *fd)
		exit(herd_worker_main(type, argc, argv));
	return 0;
}
