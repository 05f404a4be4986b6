/* SPDX-License-Identifier: MIT */
/*
 * wordfreq: the 20 most frequent words in a directory's files, counted by a
 * pool of this executable's own workers (start_app). Each worker folds the
 * counts of the files it gets into one partial (worker-side combining), and
 * the master merges the partials. A word is a maximal run of ASCII letters,
 * lowercased. --crash-on NAME aborts the first worker to count file NAME: the
 * pool replaces it and counts its files again. --sequential counts in this
 * process with the same code, to check the answer.
 *   wordfreq [--workers N] [--crash-on NAME] [--sequential] DIR
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <herd/herd.h>

/* Adds the words of the file at path to counts. Returns 0 or -1. */
static int
count_file(const char *path, json_t *counts)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	json_t *n;
	char *s;

	if (fd < 0)
		return -1;
	s = fstat(fd, &st) < 0 ? MAP_FAILED
	    : st.st_size == 0  ? NULL
	                       : mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	if (s == MAP_FAILED)
		return -1;
	for (off_t i = 0, w; i < st.st_size; i = w + 1) {
		for (w = i; w < st.st_size && (unsigned)((s[w] | 0x20) - 'a') < 26; w++)
			s[w] |= 0x20;
		n = w > i ? json_object_getn(counts, s + i, w - i) : NULL;
		if (n)
			json_integer_set(n, json_integer_value(n) + 1);
		else if (w > i)
			json_object_setn_new(counts, s + i, w - i, json_integer(1));
	}
	if (s)
		munmap(s, st.st_size);
	return 0;
}

/* {"path": P, "crash": MARKER}: P's counts; aborts if it is first to create MARKER. */
static void
count(herd_request *req, json_t *arg)
{
	const char *path = json_string_value(json_object_get(arg, "path"));
	const char *crash = json_string_value(json_object_get(arg, "crash"));
	json_t *counts = json_object();

	if (crash && open(crash, O_CREAT | O_EXCL | O_CLOEXEC, 0600) >= 0) {
		setrlimit(
		    RLIMIT_CORE, &(struct rlimit){ 0, 0 }); /* a crash on purpose: no core file */
		abort();
	}
	if (count_file(path, counts) < 0) {
		json_decref(counts);
		herd_request_fail(req, "cannot read %s", path);
	} else {
		herd_request_reply(req, counts);
	}
}

/* Adds value's counts into acc (stolen, updated in place): on the workers and the master. */
static json_t *
merge(json_t *acc, json_t *value, void *userdata)
{
	const char *word;
	json_t *n, *a;

	json_object_foreach(value, word, n) {
		if ((a = json_object_get(acc, word)))
			json_integer_set(a, json_integer_value(a) + json_integer_value(n));
		else
			json_object_set_new(acc, word, json_integer(json_integer_value(n)));
	}
	return acc;
}

static const struct herd_function functions[] = { { "count", HERD_KIND_CALL, count }, { NULL } };
static const struct herd_combiner combiners[] = { { "merge", merge }, { NULL } };
static const struct herd_worker_type wordfreq = {
	.name = "wordfreq", .functions = functions, .combiners = combiners
};

/* Counts the files of args with a pool. Returns the counts (new reference) or NULL. */
static json_t *
count_pool(json_t *args, json_t *pool_opts)
{
	json_t *counts = NULL;
	herd_error *err = NULL;
	herd_pool *p = NULL;
	herd_job *job = NULL;
	int r;

	r = herd_pool_new(NULL, pool_opts, &p, &err);
	if (r == 0 && (r = herd_job_new(p, HERD_JOB_REDUCE, "count", &job)) == 0) {
		herd_job_set_args(job, args);
		herd_job_set_combine(job, "merge", merge, NULL);
		herd_job_on_progress(job, herd_progress_bar, (void *)"wordfreq");
		r = herd_job_wait(job, HERD_TIMEOUT_INFINITE, &counts);
		if (herd_pool_deaths(p))
			fprintf(stderr,
			    "wordfreq: %llu worker(s) died; their files were counted again\n",
			    (unsigned long long)herd_pool_deaths(p));
	}
	if (r < 0)
		fprintf(stderr, "wordfreq: %s\n",
		    p && herd_pool_last_error(p) ? herd_error_message(herd_pool_last_error(p))
		        : err                    ? herd_error_message(err)
		                                 : strerror(-r));
	herd_error_unref(err);
	herd_job_unref(job);
	herd_pool_unref(p);
	return counts;
}

/* Prints the total and the 20 most frequent words of counts (emptied), ties alphabetically. */
static void
print_top(json_t *counts, size_t files)
{
	const char *word, *best;
	json_int_t total = 0, max = 0;
	json_t *n;

	json_object_foreach(counts, word, n)
		total += json_integer_value(n);
	printf("%lld words, %zu different, in %zu files\n", (long long)total,
	    json_object_size(counts), files);
	for (int k = 0; k < 20 && json_object_size(counts); k++) {
		best = NULL;
		json_object_foreach(counts, word, n) {
			if (!best || json_integer_value(n) > max ||
			    (json_integer_value(n) == max && strcmp(word, best) < 0))
				best = word, max = json_integer_value(n);
		}
		printf("%lld %s\n", (long long)max, best);
		json_object_del(counts, best);
	}
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = { { "workers", required_argument, NULL, 'w' },
		{ "crash-on", required_argument, NULL, 'c' },
		{ "sequential", no_argument, NULL, 's' }, { 0 } };
	char tmp[] = "/tmp/wordfreq-XXXXXX", marker[64];
	/* A file is a big task: one at a time per worker keeps the end of the map balanced. */
	json_t *pool_opts = json_pack("{s:i}", "window", 1), *args = json_array(), *counts = NULL,
	       *a;
	const char *crash_on = NULL;
	bool sequential = false;
	struct dirent *e;
	size_t i;
	DIR *dir;
	int o;

	/* In a worker run of this executable, serves count and never returns. */
	herd_start_app(&wordfreq, argc, argv);
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'w')
			json_object_set_new(pool_opts, "workers", json_integer(atoi(optarg)));
		else if (o == 'c' && mkdtemp(tmp))
			crash_on = optarg;
		else if (o == 's')
			sequential = true;
		else
			return 2;
	}
	if (optind != argc - 1 || !(dir = opendir(argv[optind]))) {
		fprintf(
		    stderr, "usage: wordfreq [--workers N] [--crash-on NAME] [--sequential] DIR\n");
		return 2;
	}
	snprintf(marker, sizeof(marker), "%s/crashed", tmp);
	while ((e = readdir(dir)))
		if (e->d_type == DT_REG)
			json_array_append_new(args,
			    json_pack("{s:s++, s:s*}", "path", argv[optind], "/", e->d_name,
			        "crash", crash_on && !strcmp(crash_on, e->d_name) ? marker : NULL));
	closedir(dir);
	if (sequential) {
		counts = json_object();
		json_array_foreach(args, i, a)
			if (count_file(json_string_value(json_object_get(a, "path")), counts) < 0)
				return 1;
	} else {
		counts = count_pool(args, pool_opts);
	}
	if (crash_on && (unlink(marker), rmdir(tmp)) < 0)
		perror("wordfreq: removing the crash marker");
	if (counts)
		print_top(counts, json_array_size(args));
	json_decref(counts);
	json_decref(args);
	json_decref(pool_opts);
	return !counts;
}
