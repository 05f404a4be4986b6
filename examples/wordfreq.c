/* SPDX-License-Identifier: MIT */
/*
 * wordfreq: the 20 most frequent words (runs of ASCII letters, lowercased) of
 * a directory's files, counted by a pool of this executable's own workers.
 * --crash-on NAME aborts the first worker to count file NAME (the pool counts
 * its files again); --sequential runs the same functions in this process.
 *   wordfreq [--workers N] [--crash-on NAME] [--sequential] DIR
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <herd/herd.h>

/* {"path": P, "crash": M}: adds P's words to this worker's partial; aborts if it removes M. */
static void
count(herd_request *req, json_t *arg)
{
	const char *path = json_string_value(json_object_get(arg, "path"));
	const char *crash = json_string_value(json_object_get(arg, "crash"));
	json_t *counts = herd_request_acc(req, json_object());
	ssize_t n = -1;
	struct stat st;
	char *s = NULL;
	int fd;

	if (crash && unlink(crash) == 0) /* only the first worker with this file removes M */
		abort();
	/* read(), not mmap(): a buffer the allocator reuses costs no page faults. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0 && fstat(fd, &st) == 0 &&
	    (s = malloc(st.st_size + 1))) /* + 1: never 0 */
		n = read(fd, s, st.st_size) == st.st_size ? st.st_size : -1; /* all or nothing */
	if (fd >= 0)
		close(fd);
	for (ssize_t i = 0, w; i < n; i = w + 1) {
		for (w = i; w < n && (unsigned)((s[w] | 0x20) - 'a') < 26; w++)
			s[w] |= 0x20;
		if (w > i)
			herd_counts_add(counts, s + i, w - i, 1);
	}
	free(s);
	if (!counts || n < 0)
		herd_request_fail(req, "cannot read %s", path);
	else
		herd_request_reply_acc(req);
}

static const struct herd_function functions[] = { { "count", HERD_KIND_CALL, count }, { NULL } };
static const struct herd_combiner combiners[] = { { "add", herd_combine_counts }, { NULL } };
static const struct herd_worker_type wordfreq = { "wordfreq", functions, .combiners = combiners };

int
main(int argc, char **argv)
{
	static const struct option options[] = { { "workers", required_argument, NULL, 'w' },
		{ "crash-on", required_argument, NULL, 'c' },
		{ "sequential", no_argument, NULL, 's' }, { 0 } };
	/* A file is a big task: one at a time per worker keeps the end of the map balanced. */
	json_t *opts = json_pack("{s:i}", "window", 1), *args = json_array(), *counts, *top, *a;
	char marker[] = "/tmp/wordfreq-crash-XXXXXX";
	const char *crash_on = NULL;
	struct dirent *e;
	int o, fd, r;
	size_t i;
	DIR *dir;

	setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 }); /* no core from --crash-on */
	herd_start_app(&wordfreq, argc, argv); /* in a worker run: serves count, never returns */
	while ((o = getopt_long(argc, argv, "", options, NULL)) != -1 && o != '?') {
		if (o == 'w')
			json_object_set_new(opts, "workers", json_integer(atoi(optarg)));
		else if (o == 's') /* the pool's functions and combine, run in this process */
			json_object_set_new(opts, "local", json_true());
		else if ((fd = mkostemp(marker, O_CLOEXEC)) >= 0 && close(fd) == 0)
			crash_on = optarg; /* the worker that removes the marker aborts */
	}
	if (o == '?' || optind != argc - 1 || !(dir = opendir(argv[optind]))) {
		fprintf(
		    stderr, "usage: wordfreq [--workers N] [--crash-on NAME] [--sequential] DIR\n");
		return 2;
	}
	while ((e = readdir(dir)))
		if (e->d_type == DT_REG)
			json_array_append_new(args,
			    json_pack("{s:s++, s:s*}", "path", argv[optind], "/", e->d_name,
			        "crash", crash_on && !strcmp(crash_on, e->d_name) ? marker : NULL));
	closedir(dir);
	r = herd_map_reduce(opts, "count", args, "add", herd_combine_counts, &counts, NULL);
	if (crash_on)
		unlink(marker);
	if (r < 0)
		return 1;
	printf("%lld words, %zu different, in %zu files\n", (long long)herd_counts_total(counts),
	    json_object_size(counts), json_array_size(args));
	top = herd_counts_top(counts, 20);
	json_array_foreach(top, i, a)
		printf("%lld %s\n", (long long)json_integer_value(json_array_get(a, 1)),
		    json_string_value(json_array_get(a, 0)));
	json_decref(top);
	json_decref(counts);
	json_decref(args);
	json_decref(opts);
	return 0;
}
