/*
 * test_spool_failed: failed/, the records Kafka rejected: torn tails of a
 * failed/ log repaired at open, retries when failed/ cannot be written, a
 * reason that never makes a record unwritable.
 * Helpers and the message numbering: test_spool_util.h.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "spool.h"
#include "test_spool_util.h"

#define FAILED_LOG "failed/failed-00000000000000000001.log"

/* Records and damage in the failed/ log of segment 1, read as ackd-spool does. */
static void read_failed_log(const char *dir, size_t *records, size_t *damage)
{
	const struct spool_ro_file *files;
	struct spool_ro_iter *it;
	struct spool_ro_item item;
	struct spool_ro *ro;
	char err[256];
	int r;

	*records = *damage = 0;
	assert_int_equal(spool_ro_open(dir, &ro, err, sizeof(err)), 0);
	assert_int_equal(spool_ro_failed(ro, &files), 1);
	assert_int_equal(spool_ro_iter_new(ro, &files[0], 0, &it), 0);
	while ((r = spool_ro_iter_next(it, &item)) > 0) {
		if (item.kind == SPOOL_RO_RECORD)
			(*records)++;
		else
			(*damage)++;
	}
	assert_int_equal(r, 0);
	spool_ro_iter_free(it);
	spool_ro_free(ro);
}

/*
 * A failed/ log whose last append was torn (a crash mid-write, or a failed
 * write whose cut-back failed): the next open cuts the torn tail, counts
 * it, and the whole records stay readable.
 */
static void test_failed_log_torn_tail_repaired(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool_stats st;
	struct spool *sp = open_ok(&o);
	uint64_t seqs[8], cursor = 0;
	int nums[8], fd;
	size_t records, damage;
	char path[256];
	off_t size;

	assert_int_equal(write_range(sp, 1, 4, NULL), SPOOL_OK);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 3);
	assert_int_equal(spool_fail(sp, seqs[0], "rejected"), 0);
	assert_int_equal(spool_fail(sp, seqs[1], "rejected"), 0);
	spool_close(sp);
	size = file_size(t->dir, FAILED_LOG);
	assert_true(size > 40);

	/* The first 30 bytes of another record: a torn append. */
	snprintf(path, sizeof(path), "%s/" FAILED_LOG, t->dir);
	fd = open(path, O_RDWR | O_APPEND);
	assert_true(fd >= 0);
	{
		unsigned char rec[64];
		assert_int_equal(pread(fd, rec, 30, 40), 30);
		assert_int_equal(write(fd, rec, 30), 30);
	}
	close(fd);
	read_failed_log(t->dir, &records, &damage);
	assert_int_equal(records, 2);
	assert_int_equal(damage, 1);

	sp = open_ok(&o);
	spool_stats(sp, &st);
	assert_int_equal(st.torn_bytes, 30);
	spool_close(sp);
	assert_int_equal(file_size(t->dir, FAILED_LOG), size);
	read_failed_log(t->dir, &records, &damage);
	assert_int_equal(records, 2);
	assert_int_equal(damage, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_failed_log_torn_tail_repaired, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
