/*
 * test_spool_reader: acknowledgements, deletion of finished segments, reopening, copy-forward.
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

/* --- acknowledgements, deletion, reopen ------------------------------------------- */

static void shuffle(uint64_t *v, size_t n, unsigned seed)
{
	srand(seed);
	for (size_t i = n - 1; i > 0; i--) {
		size_t j = (size_t)rand() % (i + 1);
		uint64_t x = v[i];
		v[i] = v[j];
		v[j] = x;
	}
}

/*
 * A deleted segment larger than one trim step leaves the spool at once
 * (renamed to its temp name, which spool_open() removes after a crash) and
 * is then shrunk by maintenance until it is gone.
 */
static void test_delete_in_steps(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 5u << 20);
	struct spool *sp = open_ok(&o);
	struct spool_stats st;
	struct spool_rec *r;
	uint64_t cursor = 0, segs;
	char tmpname[64];
	off_t size, prev = -1;
	int n = 0, passes = 0;

	for (int i = 0; i < 100000; i += 10000)
		assert_int_equal(write_range(sp, i, i + 10000, NULL), SPOOL_OK);
	spool_stats(sp, &st);
	assert_int_equal(st.segments, 2);
	segs = st.segments;
	snprintf(tmpname, sizeof(tmpname), ".seg-%020d.tmp", 1);
	while (spool_next(sp, &cursor, &r) == 1) {
		spool_ack(sp, r->seq);
		spool_rec_free(r);
		n++;
		spool_stats(sp, &st);
		if (st.segments < segs) {
			/* The first segment was just deleted: gone by name, its blocks not yet. */
			segs = st.segments;
			assert_int_equal(file_size(t->dir, "seg-00000000000000000001.spool"), -1);
			assert_int_equal(file_size(t->dir, "seg-00000000000000000001.ack"), -1);
			prev = file_size(t->dir, tmpname);
			assert_true(prev > 0);
		}
	}
	assert_int_equal(n, 100000);
	assert_true(prev > 0);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	assert_int_equal(st.segments, 1);
	assert_int_equal(count_files(t->dir, ".spool"), 1);
	while ((size = file_size(t->dir, tmpname)) >= 0) {
		assert_true(size < prev || passes == 0);
		prev = size;
		spool_maintain(sp);
		assert_true(++passes <= 3);
	}
	assert_int_equal(count_files(t->dir, ".tmp"), 0);

	/* A temp file left by a crash is removed at open. */
	spool_close(sp);
	{
		char path[512];
		int fd;
		snprintf(path, sizeof(path), "%s/%s", t->dir, tmpname);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, 1 << 20), 0);
		close(fd);
	}
	sp = open_ok(&o);
	assert_int_equal(count_files(t->dir, ".tmp"), 0);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	spool_close(sp);
}

static void test_acks_delete_segments(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 4096);
	struct spool *sp = open_ok(&o);
	struct spool_stats st;
	int nums[600];
	uint64_t seqs[600], cursor = 0, odd[300], even[300];
	size_t n, nodd = 0, neven = 0;

	for (int i = 0; i < 600; i += 50)
		assert_int_equal(write_range(sp, i, i + 50, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 600);
	assert_int_equal(n, 600);
	spool_stats(sp, &st);
	assert_true(st.segments >= 8);
	assert_int_equal(count_files(t->dir, ".spool"), (int)st.segments);
	assert_true(st.oldest_ms == 1700000000000);

	for (size_t i = 0; i < n; i++) {
		if (seqs[i] % 2)
			odd[nodd++] = seqs[i];
		else
			even[neven++] = seqs[i];
	}
	shuffle(odd, nodd, 1);
	shuffle(even, neven, 2);
	for (size_t i = 0; i < nodd; i++)
		spool_ack(sp, odd[i]);
	spool_ack(sp, odd[0]); /* a duplicate ack changes nothing */
	spool_maintain(sp);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 300);
	assert_true(st.segments >= 8); /* every segment still has live records */

	for (size_t i = 0; i < neven; i++)
		spool_ack(sp, even[i]);
	/*
	 * A slow run may have started a copy-forward of an almost empty segment
	 * among the acks; that segment goes once the copy is written.
	 */
	for (int64_t end = now_ms() + 5000;;) {
		spool_maintain(sp);
		spool_stats(sp, &st);
		if (st.segments == 1 || now_ms() > end)
			break;
		usleep(2000);
	}
	assert_int_equal(st.records, 0);
	assert_int_equal(st.segments, 1); /* only the active one */
	assert_int_equal(st.oldest_ms, 0);
	assert_int_equal(count_files(t->dir, ".spool"), 1);
	assert_true(count_files(t->dir, ".ack") <= 1);
	spool_close(sp);
}

/*
 * The sweep a roll brings deletes finished segments but leaves the
 * shrinking of deleted ones to the interval: trimming faster than a step
 * per interval stalls the writer's fdatasync (docs/performance.md).
 */
static void test_roll_sweep_does_not_trim(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 5u << 20);
	struct spool *sp;
	struct spool_stats st;
	struct spool_rec *r;
	uint64_t cursor = 0;
	char tmpname[64];
	off_t deleted;

	o.maint_every_ms = 3600 * 1000;
	sp = open_ok(&o);
	spool_maintain(sp); /* the interval starts now */
	for (int i = 0; i < 100000; i += 10000)
		assert_int_equal(write_range(sp, i, i + 10000, NULL), SPOOL_OK);
	while (spool_next(sp, &cursor, &r) == 1) {
		spool_ack(sp, r->seq);
		spool_rec_free(r);
	}
	spool_stats(sp, &st);
	assert_int_equal(st.segments, 1);
	snprintf(tmpname, sizeof(tmpname), ".seg-%020d.tmp", 1);
	deleted = file_size(t->dir, tmpname);
	assert_true(deleted > (off_t)(4u << 20)); /* deleted, not yet shrunk */

	for (int i = 100000; i < 200000; i += 10000) /* another roll */
		assert_int_equal(write_range(sp, i, i + 10000, NULL), SPOOL_OK);
	while (spool_next(sp, &cursor, &r) == 1)
		spool_rec_free(r);
	spool_stats(sp, &st);
	assert_true(st.segments >= 2);
	assert_int_equal(file_size(t->dir, tmpname), deleted);
	spool_maintain(sp);
	assert_true(file_size(t->dir, tmpname) < deleted);
	spool_close(sp);
}

/*
 * A segment whose records were all acknowledged while it was still the
 * active one goes at the first maintenance after the writer rolls past it,
 * not one maintenance interval later: acknowledged batches published
 * faster than that filled a small spool.max_bytes with finished segments.
 * The interval is an hour here, so only the roll can bring that sweep.
 */
static void test_roll_deletes_acked_segment(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 4096);
	struct spool *sp;
	struct spool_stats st;
	int nums[100];
	uint64_t seqs[100], cursor = 0;
	size_t n;

	o.maint_every_ms = 3600 * 1000;
	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 0, 80, NULL), SPOOL_OK); /* more than a segment */
	n = drain(sp, &cursor, nums, seqs, 100);
	assert_int_equal(n, 80);
	for (size_t i = 0; i < n; i++)
		spool_ack(sp, seqs[i]);
	spool_maintain(sp);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	assert_int_equal(st.segments, 1); /* the active one stays, though finished */

	assert_int_equal(write_range(sp, 80, 81, NULL), SPOOL_OK); /* rolls */
	spool_stats(sp, &st);
	assert_int_equal(st.segments, 2);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 100), 1); /* spool_next() maintains */
	spool_stats(sp, &st);
	assert_int_equal(st.segments, 1);
	assert_int_equal(count_files(t->dir, ".spool"), 1);
	spool_close(sp);
}

static void test_reopen_returns_unacked(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 8192);
	struct spool *sp = open_ok(&o);
	int nums[300];
	uint64_t seqs[300], cursor = 0;
	size_t n;

	assert_int_equal(write_range(sp, 0, 150, NULL), SPOOL_OK);
	assert_int_equal(write_range(sp, 150, 300, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 300);
	assert_int_equal(n, 300);
	for (size_t i = 0; i < n; i++)
		if (nums[i] % 3 != 0)
			spool_ack(sp, seqs[i]); /* out of order within segments is fine too */
	spool_close(sp);

	sp = open_ok(&o);
	cursor = 0;
	n = drain(sp, &cursor, nums, NULL, 300);
	assert_int_equal(n, 100);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(nums[i], (int)i * 3);
	spool_close(sp);
}

/* --- copy-forward --------------------------------------------------------------- */

/* Run maintenance until the file is gone (the copy committed and applied). */
static void maintain_until_gone(struct spool *sp, const char *dir, const char *name)
{
	for (int64_t end = now_ms() + 5000; file_size(dir, name) >= 0;) {
		assert_true(now_ms() < end);
		spool_maintain(sp);
		usleep(2000);
	}
}

static void test_copy_forward(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 4096);
	struct spool *sp = open_ok(&o);
	struct spool_stats st;
	struct spool_rec *r;
	int nums[400];
	uint64_t seqs[400], cursor = 0, n;
	const char *seg1 = "seg-00000000000000000001.spool";

	for (int i = 1; i < 401; i += 20)
		assert_int_equal(write_range(sp, i, i + 20, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 400);
	assert_int_equal(n, 400);
	/* Everything acknowledged but records 2, 5 and 7: stragglers in segment 1. */
	for (size_t i = 0; i < n; i++)
		if (seqs[i] != 2 && seqs[i] != 5 && seqs[i] != 7)
			spool_ack(sp, seqs[i]);
	spool_maintain(sp); /* starts the copy of segment 1 */
	spool_ack(sp, 7);   /* acknowledged while the copy is in flight */
	maintain_until_gone(sp, t->dir, seg1);

	spool_stats(sp, &st);
	assert_int_equal(st.records, 2);
	assert_int_equal(st.damaged, 0);
	/* The copies are not handed out again in this run. */
	assert_int_equal(spool_next(sp, &cursor, &r), 0);
	/* The producer keeps using the sequences it was given. */
	assert_int_equal(spool_get(sp, 2, &r), 1);
	assert_int_equal(r->seq, 2);
	assert_int_equal(msg_num(r), 2);
	spool_rec_free(r);
	assert_int_equal(spool_get(sp, 7, &r), 0);
	spool_ack(sp, 2);
	assert_int_equal(spool_fail(sp, 5, "message too large"), SPOOL_FAIL_FILED);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	assert_int_equal(st.failed, 1);
	assert_int_equal(count_files(t->dir, ".spool") >= 1, 1);
	char failed_dir[128];
	snprintf(failed_dir, sizeof(failed_dir), "%s/failed", t->dir);
	assert_int_equal(count_files(failed_dir, ".log"), 1);
	spool_close(sp);
	/*
	 * The failed record was the copy: it is filed under the segment the copy
	 * was in, with the copy's sequence, so ackd-spool verify finds it in range.
	 */
	{
		const struct spool_ro_file *files;
		struct spool_ro_iter *it;
		struct spool_ro_item item;
		struct spool_ro *ro;
		char err[256];

		assert_int_equal(spool_ro_open(t->dir, &ro, err, sizeof(err)), 0);
		assert_int_equal(spool_ro_failed(ro, &files), 1);
		assert_int_equal(spool_ro_iter_new(ro, &files[0], 0, &it), 0);
		assert_int_equal(spool_ro_iter_next(it, &item), 1);
		assert_int_equal(item.kind, SPOOL_RO_RECORD);
		assert_true(item.seq >= files[0].first_seq);
		assert_int_equal(item.rec->msg.value_len, 7);
		assert_memory_equal(item.rec->msg.value, "value-5", 7);
		spool_ro_iter_free(it);
		spool_ro_free(ro);
	}

	/* Nothing comes back: the originals are gone and the copies acknowledged. */
	sp = open_ok(&o);
	cursor = 0;
	assert_int_equal(drain(sp, &cursor, nums, NULL, 400), 0);
	spool_close(sp);
}

static void test_copy_forward_survives_restart(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 4096);
	struct spool *sp = open_ok(&o);
	int nums[400];
	uint64_t seqs[400], cursor = 0, n;

	for (int i = 1; i < 401; i += 20)
		assert_int_equal(write_range(sp, i, i + 20, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 400);
	assert_int_equal(n, 400);
	for (size_t i = 0; i < n; i++)
		if (seqs[i] != 3 && seqs[i] != 4)
			spool_ack(sp, seqs[i]);
	spool_maintain(sp);
	maintain_until_gone(sp, t->dir, "seg-00000000000000000001.spool");
	spool_close(sp);

	/* After a restart the copies are ordinary records, each exactly once. */
	sp = open_ok(&o);
	cursor = 0;
	n = drain(sp, &cursor, nums, seqs, 400);
	assert_int_equal(n, 2);
	assert_int_equal(nums[0], 3);
	assert_int_equal(nums[1], 4);
	assert_true(seqs[0] > 400);
	spool_close(sp);
}

/* Whether record seq, read again by its sequence, is marked unfiled. */
static bool unfiled_at(struct spool *sp, uint64_t seq)
{
	struct spool_rec *r;
	bool unfiled;

	assert_int_equal(spool_get(sp, seq, &r), 1);
	unfiled = r->unfiled;
	spool_rec_free(r);
	return unfiled;
}

/*
 * A dead letter marked unfiled (spool_batch_set_unfiled()) keeps the mark
 * when read by sequence, after copy-forward and after a restart, and only it:
 * the producer deletes such a record, refused for good, instead of filing it.
 */
static void test_unfiled_mark_survives_copy_and_restart(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 4096);
	struct spool *sp = open_ok(&o);
	struct spool_batch *b = spool_batch_new(2);
	struct spool_rec *r;
	int nums[420];
	uint64_t seqs[420], cursor = 0, first, n;

	assert_int_equal(write_range(sp, 1, 3, NULL), SPOOL_OK);
	add_msg(b, 3);
	add_msg(b, 4);
	spool_batch_set_unfiled(b);
	assert_int_equal(write_batch(sp, b, &first), SPOOL_OK);
	assert_int_equal(first, 3);
	for (int i = 5; i < 405; i += 20)
		assert_int_equal(write_range(sp, i, i + 20, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 420);
	assert_int_equal(n, 404);
	assert_false(unfiled_at(sp, 1));
	assert_true(unfiled_at(sp, 3));
	assert_true(unfiled_at(sp, 4));
	assert_false(unfiled_at(sp, 5));
	/* Stragglers 1 and 3 in segment 1, copied forward. */
	for (size_t i = 0; i < n; i++)
		if (seqs[i] != 1 && seqs[i] != 3)
			spool_ack(sp, seqs[i]);
	spool_maintain(sp);
	maintain_until_gone(sp, t->dir, "seg-00000000000000000001.spool");
	assert_false(unfiled_at(sp, 1));
	assert_true(unfiled_at(sp, 3));
	spool_close(sp);

	sp = open_ok(&o);
	cursor = 0;
	assert_int_equal(spool_next(sp, &cursor, &r), 1);
	assert_int_equal(msg_num(r), 1);
	assert_false(r->unfiled);
	spool_rec_free(r);
	assert_int_equal(spool_next(sp, &cursor, &r), 1);
	assert_int_equal(msg_num(r), 3);
	assert_true(r->unfiled);
	spool_rec_free(r);
	assert_int_equal(spool_next(sp, &cursor, &r), 0);
	spool_close(sp);
}

/* --- copy-forward against a producer rebuild (spool_rewind) -------------------------------- */

static atomic_int hold_writes; /* the writer's pwritev waits while set */
static ssize_t (*inner_pwritev)(int, const struct iovec *, int, off_t);

static ssize_t holding_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	while (atomic_load(&hold_writes))
		usleep(1000);
	return inner_pwritev(fd, iov, iovcnt, off);
}

/*
 * 400 records in segments of 4 KiB, all acknowledged but 2, 5 and 7 of
 * segment 1. The writer is held from before the acks (a slow run may start
 * the copy of segment 1 among them): the copy cannot be written yet.
 */
static struct spool *stragglers(const char *dir)
{
	struct spool_opts o = opts_for(dir, 4096);
	struct spool *sp;
	int nums[400];
	uint64_t seqs[400], cursor = 0, n;

	/* The seam is set before the writer starts (it reads it unlocked). */
	inner_pwritev = spool_io.pwritev;
	spool_io.pwritev = holding_pwritev;
	sp = open_ok(&o);

	for (int i = 1; i < 401; i += 20)
		assert_int_equal(write_range(sp, i, i + 20, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 400);
	assert_int_equal(n, 400);
	atomic_store(&hold_writes, 1);
	for (size_t i = 0; i < n; i++)
		if (seqs[i] != 2 && seqs[i] != 5 && seqs[i] != 7)
			spool_ack(sp, seqs[i]);
	spool_maintain(sp); /* starts the copy of segment 1 if the acks did not */
	return sp;
}

/* Let the writer go on. */
static void release_writes(void)
{
	atomic_store(&hold_writes, 0);
}

/* The seam as it was, once the spool (and its writer) is closed. */
static void close_and_restore(struct spool *sp)
{
	spool_close(sp);
	spool_io.pwritev = inner_pwritev;
}

/* Drain from 0, check the messages are exactly want[n], acknowledge them; the spool is empty. */
static void drain_ack_all(struct spool *sp, const int *want, size_t nwant)
{
	struct spool_stats st;
	int nums[8];
	uint64_t seqs[8], cursor = 0;
	size_t n = drain(sp, &cursor, nums, seqs, 8);

	assert_int_equal(n, nwant);
	for (size_t i = 0; i < n; i++) {
		struct spool_rec *r;
		assert_int_equal(nums[i], want[i]);
		assert_int_equal(spool_get(sp, seqs[i], &r), 1);
		assert_int_equal(msg_num(r), want[i]);
		spool_rec_free(r);
		spool_ack(sp, seqs[i]);
	}
	spool_maintain(sp);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
}

/*
 * The producer is rebuilt while a copy-forward is queued: the copies are
 * written after the rewind. The rebuilt producer must get the three
 * records (not have them stranded as copies nobody hands out).
 */
static void test_rewind_during_copy_forward(void **state)
{
	struct tmp *t = *state;
	struct spool *sp = stragglers(t->dir);
	const int want[] = { 2, 5, 7 };

	usleep(20000); /* the copy of segment 1 waits in the writer */
	spool_rewind(sp);
	release_writes();
	for (int64_t end = now_ms() + 300; now_ms() < end;) {
		spool_maintain(sp);
		usleep(2000);
	}
	drain_ack_all(sp, want, 3);
	close_and_restore(sp);
}

/*
 * The copies are written before the rewind but not yet applied. After the
 * rewind the producer holds whatever spool_next() hands out; when the
 * segment holding those is copied forward in turn, spool_get() and
 * spool_ack() by the sequences it holds must still reach the records.
 */
static void test_rewind_before_copy_applied(void **state)
{
	struct tmp *t = *state;
	struct spool *sp = stragglers(t->dir);
	struct spool_stats st;
	int nums[400];
	uint64_t seqs[400], held[8], cursor = 0, n, nheld;
	int held_nums[8];

	release_writes();
	for (int64_t end = now_ms() + 5000;;) { /* until the writer committed the copies */
		spool_stats(sp, &st);
		if (st.records == 6)
			break;
		assert_true(now_ms() < end);
		usleep(1000);
	}
	spool_rewind(sp);
	nheld = drain(sp, &cursor, held_nums, held, 8);
	assert_int_equal(nheld, 3);
	/* More traffic, all acknowledged: what the producer holds gets old, and copied. */
	for (int i = 401; i < 801; i += 20)
		assert_int_equal(write_range(sp, i, i + 20, NULL), SPOOL_OK);
	n = drain(sp, &cursor, nums, seqs, 400);
	assert_int_equal(n, 400);
	for (size_t i = 0; i < n; i++)
		spool_ack(sp, seqs[i]);
	for (int64_t end = now_ms() + 300; now_ms() < end;) {
		spool_maintain(sp);
		usleep(2000);
	}
	for (size_t i = 0; i < nheld; i++) {
		struct spool_rec *r;
		assert_int_equal(spool_get(sp, held[i], &r), 1);
		assert_int_equal(msg_num(r), held_nums[i]);
		spool_rec_free(r);
		spool_ack(sp, held[i]);
	}
	spool_maintain(sp);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	close_and_restore(sp);
}

/*
 * A record handed out and then not readable (EIO) is not gone: spool_get()
 * says so (-1), the record stays live, and a later spool_get() returns it.
 */
static void test_get_read_error_keeps_record(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp = open_ok(&o);
	struct spool_stats st;
	struct spool_rec *r = NULL;
	uint64_t seqs[8], cursor = 0;
	int nums[8];

	assert_int_equal(write_range(sp, 1, 6, NULL), SPOOL_OK);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 5);

	atomic_store(&fail_read_errno, EIO);
	assert_int_equal(spool_get(sp, seqs[2], &r), -1);
	assert_null(r);
	atomic_store(&fail_read_errno, 0);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 5);
	assert_int_equal(st.damaged, 0);

	assert_int_equal(spool_get(sp, seqs[2], &r), 1);
	assert_int_equal(r->seq, seqs[2]);
	assert_int_equal(msg_num(r), 3);
	spool_rec_free(r);
	spool_close(sp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_delete_in_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_acks_delete_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roll_deletes_acked_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_roll_sweep_does_not_trim, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_returns_unacked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_forward, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_forward_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unfiled_mark_survives_copy_and_restart, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_rewind_during_copy_forward, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewind_before_copy_applied, setup, teardown),
		cmocka_unit_test_setup_teardown(test_get_read_error_keeps_record, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
