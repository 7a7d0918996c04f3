/*
 * fuzz_replay: the main() of a fuzz target when it is not built with libFuzzer.
 *
 * Replays files and directories given as arguments, or the target's checked-in
 * corpus (CORPUS) when none are, through LLVMFuzzerTestOneInput(): this is
 * how `make check` runs every corpus with gcc. Arguments starting with "--"
 * go to the target's own fuzz_tool() (seed writers, packers) when it has one.
 * Single-threaded; each input is read into a buffer of exactly its length so
 * a read past its end is a sanitizer error.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_util.h"

#ifndef CORPUS
#error "CORPUS must name the target's corpus directory"
#endif
#ifndef TARGET
#error "TARGET must name the fuzz target"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));
/* Called once after every input was replayed; a target that starts a server checks and stops it there. */
void fuzz_replay_done(void) __attribute__((weak));

/* Run one file through the target; -1 when it cannot be read. */
static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;
	int rc = -1;

	if (f == NULL)
		goto fail;
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto fail;
	buf = malloc(len > 0 ? (size_t)len : 1);
	if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len)
		goto fail;
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	rc = 0;
fail:
	if (rc < 0)
		perror(path);
	free(buf);
	if (f != NULL)
		fclose(f);
	return rc;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A file, or every regular file in a directory (in name order). Returns the files run, -1 on error. */
static int replay(const char *path)
{
	struct dirent *de;
	struct stat st;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int run = 0;
	DIR *d;

	if (stat(path, &st) != 0) {
		perror(path);
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path) == 0 ? 1 : -1;
	d = opendir(path);
	if (d == NULL) {
		perror(path);
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **nv = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));
			if (nv == NULL)
				goto fail;
			names = nv;
		}
		if ((names[n] = strdup(de->d_name)) == NULL)
			goto fail;
		n++;
	}
	qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		char file[4096];
		snprintf(file, sizeof(file), "%s/%s", path, names[i]);
		if (replay_file(file) != 0)
			goto fail;
		run++;
	}
	goto out;
fail:
	run = -1;
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return run;
}

int main(int argc, char **argv)
{
	const char *def[] = {CORPUS};
	const char **paths = argc > 1 ? (const char **)argv + 1 : def;
	int npaths = argc > 1 ? argc - 1 : 1;
	int total = 0;

	if (argc > 1 && strncmp(argv[1], "--", 2) == 0) {
		if (fuzz_tool == NULL) {
			fprintf(stderr, "%s: no option %s\n", TARGET, argv[1]);
			return 2;
		}
		return fuzz_tool(argc, argv);
	}
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 0; i < npaths; i++) {
		int n = replay(paths[i]);
		if (n < 0)
			return 1;
		total += n;
	}
	if (total == 0) {
		fprintf(stderr, "%s: no inputs found\n", TARGET);
		return 1;
	}
	if (fuzz_replay_done != NULL)
		fuzz_replay_done();
	printf("%s: %d inputs replayed\n", TARGET, total);
	return 0;
}
