/* SPDX-License-Identifier: MIT */
/*
 * A pool's host list (the "hosts" option, herd/pool.h): addresses with a
 * worker count each, and "slurm" for every node of the Slurm allocation the
 * process runs in, and the count of a host that names none. The hosts' connections and their loss are in pool.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pool/pool-internal.h"

#define MAX_HOSTS   4096u
#define MAX_WORKERS 4096u
/* Most bytes of node names taken from scontrol. */
#define HOSTNAMES_MAX (1u << 20)

extern char **environ;

struct hosts_build {
	struct herd_pool *p;
	unsigned cap;
};

static int
host_add(struct hosts_build *b, char *address, unsigned workers)
{
	struct herd_pool *p = b->p;

	if (!address)
		return -ENOMEM;
	if (p->n_hosts == MAX_HOSTS) {
		free(address);
		return -E2BIG;
	}
	if (p->n_hosts == b->cap) {
		unsigned cap = b->cap ? 2 * b->cap : 4;
		struct host *h = realloc(p->hosts, cap * sizeof(*h));

		if (!h) {
			free(address);
			return -ENOMEM;
		}
		p->hosts = h;
		b->cap = cap;
	}
	p->hosts[p->n_hosts++] = (struct host){ .pool = p, .address = address, .workers = workers };
	return 0;
}

/* A count 1..MAX_WORKERS in s[0..len), or 0. */
static unsigned
parse_count(const char *s, size_t len)
{
	unsigned long v = 0;

	if (len == 0 || len > 4)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v <= MAX_WORKERS ? (unsigned)v : 0;
}

/*
 * One item of a Slurm hostlist, "name" or "prefix[1-3,07,10-12]suffix"
 * (one bracket group; ranges keep their zero padding), added as slurm://
 * hosts.
 */
static int
nodelist_item(struct hosts_build *b, const char *item, size_t len, unsigned workers)
{
	const char *open = memchr(item, '[', len), *close, *r;
	char *addr;
	int n;

	if (!open) {
		n = asprintf(&addr, "slurm://%.*s", (int)len, item);
		return host_add(b, n < 0 ? NULL : addr, workers);
	}
	close = memchr(open, ']', len - (size_t)(open - item));
	if (!close)
		return -EINVAL;
	for (r = open + 1; r < close;) {
		char *end;
		unsigned long lo = strtoul(r, &end, 10), hi = lo;
		int width = (int)(end - r);

		if (end == r)
			return -EINVAL;
		if (*end == '-')
			hi = strtoul(end + 1, &end, 10);
		if (hi < lo || hi - lo >= MAX_HOSTS || (*end != ',' && end != close))
			return -EINVAL;
		for (unsigned long v = lo; v <= hi; v++) {
			int rc;

			n = asprintf(&addr, "slurm://%.*s%0*lu%.*s", (int)(open - item), item,
			    width, v, (int)(len - (size_t)(close + 1 - item)), close + 1);
			rc = host_add(b, n < 0 ? NULL : addr, workers);
			if (rc < 0)
				return rc;
		}
		r = end + (*end == ',');
	}
	return 0;
}

/*
 * list expanded by `scontrol show hostnames`, Slurm's own parser (as its
 * documentation advises): the names one a line (malloc'd), or NULL when
 * scontrol is not on PATH or fails (without a slurm.conf it does: its
 * errors are not shown, the parser here takes over).
 */
static char *
scontrol_hostnames(const char *list)
{
	const char *argv[] = { "scontrol", "show", "hostnames", list, NULL };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char *out = malloc(HOSTNAMES_MAX + 1);
	int p[2], r, status = -1;
	size_t len = 0;
	sigset_t none;
	ssize_t n;
	pid_t pid;

	if (!out || pipe2(p, O_CLOEXEC) < 0) {
		free(out);
		return NULL;
	}
	sigemptyset(&none);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
	/* posix_spawnp() takes char *const[] but does not write to the strings. */
	r = posix_spawnp(&pid, "scontrol", &fa, &attr, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(p[1]);
	while (r == 0 && len < HOSTNAMES_MAX &&
	    ((n = read(p[0], out + len, HOSTNAMES_MAX - len)) > 0 || (n < 0 && errno == EINTR)))
		len += n > 0 ? (size_t)n : 0;
	/* Closed first: a scontrol with more to say than we take ends on EPIPE. */
	close(p[0]);
	while (r == 0 && waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	if (r != 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0 || len == 0 ||
	    len == HOSTNAMES_MAX) {
		free(out);
		return NULL;
	}
	out[len] = '\0';
	return out;
}

/* Every node of $SLURM_JOB_NODELIST ("n[1-3],m5"), as slurm:// hosts. */
static int
slurm_nodes(struct hosts_build *b, unsigned workers)
{
	const char *list = getenv("SLURM_JOB_NODELIST");
	char *names, *name, *save = NULL;
	const char *s;
	int depth = 0, r = 0;

	if (!list || !*list)
		return -ENXIO;
	names = scontrol_hostnames(list);
	if (names) {
		for (name = strtok_r(names, "\n", &save); name && r == 0;
		     name = strtok_r(NULL, "\n", &save))
			r = nodelist_item(b, name, strlen(name), workers);
		free(names);
		return r;
	}
	for (s = list;; list++) {
		if (*list == '[')
			depth++;
		else if (*list == ']')
			depth--;
		else if ((*list == ',' && depth == 0) || !*list) {
			r = nodelist_item(b, s, (size_t)(list - s), workers);
			if (r < 0)
				return r;
			if (!*list)
				return 0;
			s = list + 1;
		}
	}
}

/* "ADDRESS" or "ADDRESS=N" (N workers), "slurm" or "slurm=N". */
static int
host_string(struct hosts_build *b, const char *spec, unsigned workers)
{
	const char *eq = strrchr(spec, '=');
	size_t len = strlen(spec);
	unsigned n;

	if (eq && (n = parse_count(eq + 1, strlen(eq + 1))) > 0) {
		len = (size_t)(eq - spec);
		workers = n;
	}
	if (len == 0)
		return -EINVAL;
	if (len == 5 && strncmp(spec, "slurm", 5) == 0)
		return slurm_nodes(b, workers);
	return host_add(b, strndup(spec, len), workers);
}

static int
host_entry(struct hosts_build *b, json_t *e, unsigned workers)
{
	json_int_t n = 0;
	const char *address;

	if (json_is_string(e))
		return host_string(b, json_string_value(e), workers);
	if (json_unpack(e, "{s:s, s?I !}", "address", &address, "workers", &n) < 0 || n < 0 ||
	    n > MAX_WORKERS || !*address)
		return -EINVAL;
	return host_add(b, strdup(address), n ? (unsigned)n : workers);
}

int
herd__pool_hosts_parse(struct herd_pool *p, json_t *hosts, const char *socket, unsigned workers)
{
	struct hosts_build b = { .p = p };
	size_t i;
	json_t *e;
	int r;

	if (!hosts) {
		/* The pool's one herdd: socket may be NULL (the default), so not host_add(). */
		p->hosts = calloc(1, sizeof(*p->hosts));
		if (!p->hosts)
			return -ENOMEM;
		p->hosts[0] = (struct host){ .pool = p, .workers = workers };
		p->n_hosts = 1;
		return socket && !(p->hosts[0].address = strdup(socket)) ? -ENOMEM : 0;
	}
	if (!json_is_array(hosts) || json_array_size(hosts) == 0)
		return -EINVAL;
	p->multi_host = true;
	json_array_foreach(hosts, i, e) {
		r = host_entry(&b, e, workers);
		if (r < 0)
			return r;
	}
	return 0;
}

/*
 * The count of a host that names none: what its herdd said its workers can
 * use (link.h: the hello's "cpus"). One not reached yet gets the job's
 * share of a node for a Slurm node ($SLURM_CPUS_ON_NODE), else cpus.
 */
static unsigned
host_default_workers(const struct host *h, unsigned cpus)
{
	const char *slurm = getenv("SLURM_CPUS_ON_NODE");
	unsigned n = h->address ? herd__link_cpus(h->address) : 0;

	if (!n && h->address && strncmp(h->address, "slurm://", 8) == 0 && slurm)
		n = parse_count(slurm, strlen(slurm));
	return n ? n : cpus;
}

int
herd__pool_hosts_count(struct herd_pool *p, unsigned cpus)
{
	p->n_slots = 0;
	for (unsigned k = 0; k < p->n_hosts; k++) {
		if (!p->hosts[k].workers)
			p->hosts[k].workers = host_default_workers(&p->hosts[k], cpus);
		p->n_slots += p->hosts[k].workers;
	}
	return p->n_slots > MAX_WORKERS ? -E2BIG : 0;
}

void
herd__pool_hosts_free(struct herd_pool *p)
{
	for (unsigned i = 0; i < p->n_hosts; i++) {
		herd_master_unref(p->hosts[i].m);
		free(p->hosts[i].address);
	}
	free(p->hosts);
}
