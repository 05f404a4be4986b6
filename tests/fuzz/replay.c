/* SPDX-License-Identifier: MIT */
/*
 * Replays fuzz inputs through the fuzz target without libFuzzer, so every
 * build checks the committed corpus (and any crash input added to it).
 * Usage: fuzz-replay FILE|DIR...  Fails when it found nothing to replay.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

static int
replay_file(int dirfd, const char *path)
{
	int fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	uint8_t *buf;
	size_t got = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		fprintf(stderr, "fuzz-replay: %s: %s\n", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		close(fd);
		return -1;
	}
	while (got < (size_t)st.st_size) {
		ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);

		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	LLVMFuzzerTestOneInput(buf, got);
	free(buf);
	return 0;
}

static int
by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int
main(int argc, char **argv)
{
	int replayed = 0;

	for (int i = 1; i < argc; i++) {
		struct dirent **names;
		struct stat st;
		int dirfd, n;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "fuzz-replay: %s: %s\n", argv[i], strerror(errno));
			return EXIT_FAILURE;
		}
		if (!S_ISDIR(st.st_mode)) {
			if (replay_file(AT_FDCWD, argv[i]) < 0)
				return EXIT_FAILURE;
			replayed++;
			continue;
		}
		dirfd = open(argv[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		n = scandir(argv[i], &names, NULL, by_name);
		if (dirfd < 0 || n < 0) {
			fprintf(stderr, "fuzz-replay: %s: %s\n", argv[i], strerror(errno));
			return EXIT_FAILURE;
		}
		for (int k = 0; k < n; k++) {
			if (names[k]->d_name[0] != '.') {
				if (replay_file(dirfd, names[k]->d_name) < 0)
					return EXIT_FAILURE;
				replayed++;
			}
			free(names[k]);
		}
		free(names);
		close(dirfd);
	}
	printf("replayed %d inputs\n", replayed);
	return replayed > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
