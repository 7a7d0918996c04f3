/*
 * test_spool_ro: the read-only reader of ackd-spool(8).
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

/* --- the read-only reader (ackd-spool) ---------------------------------------------- */

/*
 * What the writer produced reads back through spool_ro_*: sealed segments
 * with valid footers that agree with their records, the .ack files, no
 * damage; the lock seen while a spool is open; nothing written.
 */
static void test_readonly_reader(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 4096);
	struct spool *sp = open_ok(&o);
	const struct spool_ro_file *segs, *failed;
	struct spool_ro *ro;
	int nums[300];
	uint64_t seqs[300], cursor = 0, live = 0, total = 0;
	size_t n, nsegs;
	char err[256];

	for (int i = 0; i < 300; i += 30)
		assert_int_equal(write_range(sp, i, i + 30, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 300);
	assert_int_equal(n, 300);
	for (size_t i = 0; i < n; i++)
		if (seqs[i] % 3 == 0)
			spool_ack(sp, seqs[i]);
	assert_int_equal(spool_fail(sp, seqs[1], "test reason"), SPOOL_FAIL_FILED);
	spool_maintain(sp);

	assert_int_equal(spool_ro_open(t->dir, &ro, err, sizeof(err)), 0);
	assert_int_equal(spool_ro_in_use(ro), 1);
	spool_ro_free(ro);
	spool_close(sp);

	assert_int_equal(spool_ro_open(t->dir, &ro, err, sizeof(err)), 0);
	assert_int_equal(spool_ro_in_use(ro), 0);
	nsegs = spool_ro_segments(ro, &segs);
	assert_true(nsegs >= 4);
	for (size_t i = 0; i < nsegs; i++) {
		struct spool_ro_iter *it;
		struct spool_ro_item item;
		uint64_t next = segs[i].first_seq, recs = 0;
		int footer = 0;
		int rc;

		assert_true(segs[i].hdr_ok);
		assert_int_equal(segs[i].sealed, i + 1 < nsegs);
		assert_int_equal(segs[i].ack_bad + segs[i].ack_stray + segs[i].ack_partial, 0);
		assert_int_equal(spool_ro_iter_new(ro, &segs[i], 0, &it), 0);
		while ((rc = spool_ro_iter_next(it, &item)) > 0) {
			assert_int_not_equal(item.kind, SPOOL_RO_DAMAGE);
			assert_int_not_equal(item.kind, SPOOL_RO_TRAILING);
			if (item.kind == SPOOL_RO_FOOTER) {
				assert_true(item.seal_ok);
				assert_int_equal(item.seal.end_seq, next);
				assert_int_equal(item.seal.nrecs, recs);
				assert_memory_equal(&item.seal, &segs[i].seal, sizeof(item.seal));
				footer = 1;
				continue;
			}
			assert_int_equal(item.seq, next++);
			assert_int_equal(item.acked, item.seq % 3 == 0 || item.seq == seqs[1]);
			assert_int_equal(item.rec->seq, item.seq);
			assert_int_equal(msg_num(item.rec), nums[item.seq - seqs[0]]);
			live += !item.acked;
			recs++;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(footer, segs[i].sealed);
		total += recs;
		spool_ro_iter_free(it);
	}
	assert_int_equal(total, 300);
	assert_int_equal(live, 300 - 100 - 1);

	assert_int_equal(spool_ro_failed(ro, &failed), 1);
	{
		struct spool_ro_iter *it;
		struct spool_ro_item item;

		assert_int_equal(spool_ro_iter_new(ro, &failed[0], 0, &it), 0);
		assert_int_equal(spool_ro_iter_next(it, &item), 1);
		assert_int_equal(item.kind, SPOOL_RO_RECORD);
		assert_int_equal(item.type, SPOOL_REC_FAILED);
		assert_int_equal(item.seq, seqs[1]);
		assert_int_equal(spool_ro_iter_next(it, &item), 0);
		spool_ro_iter_free(it);
	}
	spool_ro_free(ro);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_readonly_reader, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
