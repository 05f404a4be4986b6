/* SPDX-License-Identifier: MIT */
/*
 * A pool's host list (the "hosts" option, herd/pool.h): addresses with a
 * worker count each, and "slurm" for every node of the Slurm allocation the
 * process runs in. The hosts' connections and their loss are in pool.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool/pool-internal.h"

#define MAX_HOSTS   4096u
#define MAX_WORKERS 4096u

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

/* Every node of $SLURM_JOB_NODELIST ("n[1-3],m5"), as slurm:// hosts. */
static int
slurm_nodes(struct hosts_build *b, unsigned workers)
{
	const char *list = getenv("SLURM_JOB_NODELIST"), *cpus = getenv("SLURM_CPUS_ON_NODE");
	const char *s;
	int depth = 0, r;

	if (!list || !*list)
		return -ENXIO;
	/* Inside an allocation the node's CPUs are the job's share of it. */
	if (!workers && cpus)
		workers = parse_count(cpus, strlen(cpus));
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
herd__pool_hosts_parse(
    struct herd_pool *p, json_t *hosts, const char *socket, unsigned workers, unsigned cpus)
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
		p->hosts[0] = (struct host){ .pool = p, .workers = workers ? workers : cpus };
		if (socket && !(p->hosts[0].address = strdup(socket)))
			return -ENOMEM;
		p->n_hosts = 1;
		p->n_slots = p->hosts[0].workers;
		return 0;
	}
	if (!json_is_array(hosts) || json_array_size(hosts) == 0)
		return -EINVAL;
	p->multi_host = true;
	json_array_foreach(hosts, i, e) {
		r = host_entry(&b, e, workers);
		if (r < 0)
			return r;
	}
	p->n_slots = 0;
	for (unsigned k = 0; k < p->n_hosts; k++) {
		if (!p->hosts[k].workers)
			p->hosts[k].workers = cpus;
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
