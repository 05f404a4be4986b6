/* SPDX-License-Identifier: MIT */
/*
 * examples/wordfreq against a private herdd, over text files this test
 * writes from a seeded generator that counts every word it writes: the
 * sequential count, the pool's and the pool's with a worker crash must all
 * print exactly the answer the generator knows, and leave no worker.
 *
 * $HERD_WORDFREQ_MB sets the size of the text (default 50 MB, 16 MB under
 * sanitizers or $HERD_TEST_SLOW, where counting is many times slower).
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>

#include "ht-check.h"

#define VOCABULARY 5000
#define FILE_BYTES (512 * 1024)

static uint64_t rng = 0x9e3779b97f4a7c15u;

/* xorshift64*: the same text on every run. */
static uint64_t
next_random(void)
{
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717u;
}

/* Word i of the vocabulary: i + 27 in bijective base 26, so distinct, 2 letters or more. */
static void
vocabulary_word(unsigned i, char *buf)
{
	char rev[16];
	int n = 0;

	for (unsigned v = i + 27; v > 0; v = (v - 1) / 26)
		rev[n++] = (char)('a' + (v - 1) % 26);
	for (int k = 0; k < n; k++)
		buf[k] = rev[n - 1 - k];
	buf[n] = '\0';
}

/*
 * Writes one file of about FILE_BYTES: vocabulary words drawn with a skew (a
 * few are frequent), some capitalised or upper-cased, between separators that
 * are not ASCII letters (digits, punctuation, UTF-8, newlines). Adds what it
 * wrote to counts.
 */
static void
write_text(const char *path, json_int_t *counts)
{
	static const char *const seps[] = { " ", " ", " ", " ", ", ", ". ", ".\n", "\n\n", " 42 ",
		" -- ", "\t", "'", " \xc3\xa9\xc3\xa8 ", "_", "0" };
	FILE *f = fopen(path, "we");
	long written = 0;

	ck_assert_msg(f != NULL, "%s: %m", path);
	while (written < FILE_BYTES) {
		double u = (double)(next_random() >> 11) / 9007199254740992.0;
		unsigned i = (unsigned)(VOCABULARY * u * u * u);
		uint64_t r = next_random();
		char word[16];

		vocabulary_word(i, word);
		if (r % 8 == 0)
			word[0] = (char)(word[0] - 'a' + 'A');
		for (int k = 0; r % 64 == 1 && word[k]; k++)
			word[k] = (char)(word[k] - 'a' + 'A');
		counts[i]++;
		written +=
		    fprintf(f, "%s%s", word, seps[(r >> 8) % (sizeof(seps) / sizeof(seps[0]))]);
	}
	ck_assert_int_eq(fclose(f), 0);
}

/* The output wordfreq must print for counts: the totals, then the top 20, ties alphabetically. */
static char *
expected_output(json_int_t *counts, int files)
{
	json_int_t total = 0;
	size_t len = 0, different = 0;
	char *out = NULL, a[16], b[16];
	FILE *f = open_memstream(&out, &len);

	for (unsigned i = 0; i < VOCABULARY; i++) {
		total += counts[i];
		different += counts[i] > 0;
	}
	fprintf(f, "%lld words, %zu different, in %d files\n", (long long)total, different, files);
	for (int k = 0; k < 20; k++) {
		int best = -1;

		for (unsigned i = 0; i < VOCABULARY; i++) {
			if (counts[i] == 0)
				continue;
			vocabulary_word(i, a);
			if (best >= 0)
				vocabulary_word((unsigned)best, b);
			if (best < 0 || counts[i] > counts[best] ||
			    (counts[i] == counts[best] && strcmp(a, b) < 0))
				best = (int)i;
		}
		if (best < 0)
			break;
		vocabulary_word((unsigned)best, a);
		fprintf(f, "%lld %s\n", (long long)counts[best], a);
		counts[best] = 0;
	}
	fclose(f);
	return out;
}

/* Writes the text files into a new temporary directory dir; returns the expected output. */
static char *
generate(char *dir, size_t len, int *ret_files)
{
	const char *env = getenv("HERD_WORDFREQ_MB");
	int mb = env ? atoi(env) : ht_slow() > 1 ? 16 : 50, files = mb * 2;
	json_int_t *counts = calloc(VOCABULARY, sizeof(*counts));
	char path[256], *out;

	ck_assert_int_eq(ht_tmpdir(dir, len), 0);
	for (int i = 0; i < files; i++) {
		snprintf(path, sizeof(path), "%s/text%03d.txt", dir, i);
		write_text(path, counts);
	}
	/* An empty file counts as a file with no words; a directory is not counted. */
	snprintf(path, sizeof(path), "%s/empty.txt", dir);
	ck_assert_int_eq(ht_write_file(path, 0, "%s", ""), 0);
	snprintf(path, sizeof(path), "%s/subdir", dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	*ret_files = files + 1;
	out = expected_output(counts, files + 1);
	free(counts);
	return out;
}

/* Runs wordfreq with args (after the program, before DIR) and checks its output is want. */
static char *
run_wordfreq(const char *dir, const char *want, const char *a1, const char *a2, const char *a3)
{
	const char *argv[] = { ht_env_path("WORDFREQ"), a1, a2, a3, NULL, NULL };
	char *out = NULL, *err = NULL;
	int n = 1, code;

	while (argv[n])
		n++;
	argv[n] = dir;
	code = ht_run(argv, &out, &err, ht_ms(120000));
	ck_assert_msg(
	    code == 0, "wordfreq %s exited %d\nstdout:\n%s\nstderr:\n%s", a1, code, out, err);
	ck_assert_msg(strcmp(out, want) == 0, "wordfreq %s %s printed\n%s\ninstead of\n%s", a1,
	    a2 ? a2 : "", out, want);
	free(out);
	return err;
}

START_TEST(test_wordfreq)
{
	struct ht_daemon *d = ht_herdd;
	char dir[128], *want, *err;
	int files, crashed = 0;
	json_t *list, *w;
	struct ht_out o;
	size_t i;

	ck_assert_ptr_nonnull(ht_env_path("WORDFREQ"));
	want = generate(dir, sizeof(dir), &files);
	setenv("HERD_SOCKET", d->socket, 1);

	free(run_wordfreq(dir, want, "--sequential", NULL, NULL));
	err = run_wordfreq(dir, want, "--workers", "2", NULL);
	ck_assert_msg(!strstr(err, "died"), "no worker should die:\n%s", err);
	free(err);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);

	/* One worker aborts on text007.txt once: its files are counted again, the answer holds. */
	err = run_wordfreq(dir, want, "--workers", "3", "--crash-on=text007.txt");
	ck_assert_msg(
	    strstr(err, "wordfreq: 1 worker(s) died; the tasks they held ran again"), "%s", err);
	free(err);
	ck_assert_int_eq(ht_herdd_children_gone(d, ht_ms(2000)), 0);
	ht_assert_no_workers(d);
	/* herdd recorded that one crash, and only it, with its signal. */
	o = ht_herdctl(d->socket, "--json", "list", "--all", NULL);
	list = json_loads(o.out, 0, NULL);
	json_array_foreach(json_object_get(list, "workers"), i, w) {
		if (!ht_str(w, "reason") || strcmp(ht_str(w, "reason"), "crashed") != 0)
			continue;
		crashed++;
		ck_assert_str_eq(ht_str(w, "signal"), "SIGABRT");
	}
	ck_assert_msg(o.code == 0 && crashed == 1, "%d crashes in\n%s", crashed, o.out);
	json_decref(list);
	ht_out_free(&o);
	free(want);
}
END_TEST

HT_MAIN("sup-wordfreq", HT_HERDD_CASE("wordfreq", 300, ht_grace_args, test_wordfreq))
