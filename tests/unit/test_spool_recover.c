/*
 * test_spool_recover: recovery from the damaged spools in tests/fixtures/spool/ and the start-up cost of a large backlog.
 * Helpers and the message numbering: test_spool_util.h.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "spool.h"

#include "test_spool_util.h"

/* --- recovery from damaged spools --------------------------------------------- */

struct fixture_case {
	const char *name;
	int expect[32]; /* message numbers, 0-terminated */
	uint64_t damaged;
	uint64_t torn_bytes; /* UINT64_MAX: some, not zero */
};

static const struct fixture_case cases[] = {
	{ "torn-tail", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 0, UINT64_MAX },
	{ "bad-hdr-crc",
	    { 1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18, 19, 20 }, 2, 0 },
	{ "bad-payload-crc",
	    { 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 18, 19, 20 }, 2, 0 },
	{ "zero-tail", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 0, 4096 },
	{ "missing-segment", { 1, 2, 3, 4, 5, 11, 12, 13, 14, 15 }, 0, 0 },
	{ "truncated-ack", { 4, 5, 6, 7, 8, 9, 10 }, 0, 0 },
	{ "bad-footer", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 }, 0, 0 },
};

static void run_fixture(const char *dir, const struct fixture_case *c)
{
	char src[512];
	struct spool_opts o = opts_for(dir, 0);
	struct spool_stats st;
	struct spool *sp;
	int nums[64];
	uint64_t seqs[64], cursor = 0, first;
	size_t n, want = 0;

	snprintf(src, sizeof(src), "%s/spool/%s", FIXTURES, c->name);
	copy_dir(src, dir);
	sp = open_ok(&o);
	n = drain(sp, &cursor, nums, seqs, 64);
	while (c->expect[want])
		want++;
	if (n != want)
		fail_msg("%s: %zu records back, expected %zu", c->name, n, want);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(nums[i], c->expect[i]);
		assert_int_equal(seqs[i], (uint64_t)c->expect[i]); /* fixture record i has seq i */
	}
	spool_stats(sp, &st);
	if (st.damaged != c->damaged)
		fail_msg("%s: damaged %lu, expected %lu", c->name, (unsigned long)st.damaged,
		    (unsigned long)c->damaged);
	if (c->torn_bytes == UINT64_MAX)
		assert_true(st.torn_bytes > 0);
	else
		assert_int_equal(st.torn_bytes, c->torn_bytes);
	assert_int_equal(st.records, want);

	/* The repaired spool takes new records after the last good one. */
	assert_int_equal(write_range(sp, 100, 101, &first), SPOOL_OK);
	assert_int_equal(first, (uint64_t)c->expect[want - 1] + 1);
	spool_close(sp);

	/* Reopened: the same records plus the new one, no damage left. */
	sp = open_ok(&o);
	cursor = 0;
	n = drain(sp, &cursor, nums, NULL, 64);
	assert_int_equal(n, want + 1);
	for (size_t i = 0; i < want; i++)
		assert_int_equal(nums[i], c->expect[i]);
	assert_int_equal(nums[want], 100);
	spool_stats(sp, &st);
	assert_int_equal(st.damaged, 0);
	assert_int_equal(st.torn_bytes, 0);
	spool_close(sp);
}

static void test_fixtures(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct tmp *t;
		setup((void **)&t);
		run_fixture(t->dir, &cases[i]);
		if (strcmp(cases[i].name, "missing-segment") == 0) {
			assert_int_equal(file_size(t->dir, "notes.txt"), 14); /* junk left alone */
			assert_int_equal(file_size(t->dir, "seg-00000000000000000006.ack"), -1);
		}
		teardown((void **)&t);
	}
	(void)state;
}

static void test_startup_1m(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp;
	struct spool_stats st;
	struct spool_rec *r;
	uint64_t cursor = 0;
	int64_t t0, ms;
#if defined(__SANITIZE_ADDRESS__)
	const int64_t limit_ms = 5000;
#else
	const int64_t limit_ms = 1000;
#endif

	o.fsync = CONF_FSYNC_NEVER;
	sp = open_ok(&o);
	for (int i = 0; i < 1000000; i += 5000)
		assert_int_equal(write_range(sp, i, i + 5000, NULL), SPOOL_OK);
	spool_close(sp);

	t0 = now_ms();
	sp = open_ok(&o);
	ms = now_ms() - t0;
	spool_stats(sp, &st);
	print_message("open with %lu records in %lu segments: %ld ms\n", (unsigned long)st.records,
	    (unsigned long)st.segments, (long)ms);
	assert_int_equal(st.records, 1000000);
	assert_true(ms < limit_ms);
	assert_int_equal(spool_next(sp, &cursor, &r), 1);
	assert_int_equal(msg_num(r), 0);
	spool_rec_free(r);
	spool_close(sp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test_setup_teardown(test_startup_1m, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
