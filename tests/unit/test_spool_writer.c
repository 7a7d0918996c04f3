/*
 * test_spool_writer: group commit, full disk and I/O errors through the spool_io seam, spool.max_bytes, the lock, the fsync modes.
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
#include <stdbool.h>
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

/* --- group commit ------------------------------------------------------------- */

enum { GC_THREADS = 8, GC_PER = 2000 };

struct gc_slot {
	atomic_int calls;
	enum spool_err err;
	uint64_t seq;
};

static struct gc_slot gc_slots[GC_THREADS * GC_PER];
static atomic_int gc_done;
static atomic_int hook_calls;

static void gc_cb(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct gc_slot *s = arg;

	s->err = err;
	s->seq = first_seq;
	atomic_fetch_add(&s->calls, 1);
	atomic_fetch_add(&gc_done, 1);
}

static void count_hook(void *arg)
{
	(void)arg;
	atomic_fetch_add(&hook_calls, 1);
}

static void *gc_thread(void *arg)
{
	struct spool *sp = arg;
	static atomic_int next_thread;
	int t = atomic_fetch_add(&next_thread, 1);

	for (int i = 0; i < GC_PER; i++) {
		int num = t * GC_PER + i;
		struct spool_batch *b = spool_batch_new(1);
		add_msg(b, num);
		if (spool_submit(sp, b, gc_cb, &gc_slots[num]) != SPOOL_OK)
			return NULL;
	}
	return NULL;
}

static void test_group_commit(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 256 * 1024);
	pthread_t th[GC_THREADS];
	struct spool_stats st;
	struct spool *sp = open_ok(&o);
	static int nums[GC_THREADS * GC_PER];
	static uint64_t seqs[GC_THREADS * GC_PER];
	uint64_t cursor = 0;
	int syncs0, syncs;
	size_t n;

	spool_set_commit_hook(sp, count_hook, NULL);
	syncs0 = atomic_load(&n_fdatasync);
	for (int i = 0; i < GC_THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, gc_thread, sp), 0);
	for (int i = 0; i < GC_THREADS; i++)
		pthread_join(th[i], NULL);
	for (int64_t end = now_ms() + 20000; atomic_load(&gc_done) < GC_THREADS * GC_PER;) {
		assert_true(now_ms() < end);
		usleep(1000);
	}
	syncs = atomic_load(&n_fdatasync) - syncs0;
	spool_stats(sp, &st);
	print_message("group commit: %d records, %d fdatasync, %lu commits, %lu segments\n",
	    GC_THREADS * GC_PER, syncs, (unsigned long)st.commits, (unsigned long)st.segments);
	assert_true(syncs > 0);
	assert_true(syncs < GC_THREADS * GC_PER / 4);
	assert_true(st.commits < (uint64_t)GC_THREADS * GC_PER / 4);
	assert_int_equal(st.records, GC_THREADS * GC_PER);
	assert_true(st.segments > 2);
	assert_true(atomic_load(&hook_calls) > 0);
	for (int i = 0; i < GC_THREADS * GC_PER; i++) {
		assert_int_equal(atomic_load(&gc_slots[i].calls), 1);
		assert_int_equal(gc_slots[i].err, SPOOL_OK);
	}

	n = drain(sp, &cursor, nums, seqs, GC_THREADS * GC_PER);
	assert_int_equal(n, GC_THREADS * GC_PER);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(seqs[i], i + 1); /* contiguous, in order */
		assert_int_equal(gc_slots[nums[i]].seq, seqs[i]); /* callback told the truth */
	}
	/* Each thread's records keep their submission order. */
	int last[GC_THREADS];
	memset(last, -1, sizeof(last));
	for (size_t i = 0; i < n; i++) {
		int thr = nums[i] / GC_PER;
		assert_true(nums[i] > last[thr]);
		last[thr] = nums[i];
	}
	spool_close(sp);
}

/* --- full disk and I/O errors ------------------------------------------------------ */

static void test_enospc_eio(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	const char *seg = "seg-00000000000000000001.spool";
	struct spool *sp = open_ok(&o);
	struct spool_stats st;
	int nums[64];
	uint64_t first, cursor = 0;
	off_t size;

	assert_int_equal(write_range(sp, 1, 11, &first), SPOOL_OK);
	assert_int_equal(first, 1);
	size = file_size(t->dir, seg);

	atomic_store(&fail_write_errno, ENOSPC);
	assert_int_equal(write_range(sp, 11, 21, NULL), SPOOL_EFULL);
	assert_int_equal(file_size(t->dir, seg), size); /* the partial write is gone */

	atomic_store(&fail_sync_errno, EIO);
	assert_int_equal(write_range(sp, 21, 31, NULL), SPOOL_EIO);
	assert_int_equal(file_size(t->dir, seg), size);

	atomic_store(&fail_write_errno, EIO);
	assert_int_equal(write_range(sp, 31, 41, NULL), SPOOL_EIO);
	assert_int_equal(file_size(t->dir, seg), size);

	/* The problem is gone: writing works again, sequences continue. */
	assert_int_equal(write_range(sp, 41, 51, &first), SPOOL_OK);
	assert_int_equal(first, 11);
	spool_stats(sp, &st);
	assert_int_equal(st.write_errors, 3);
	assert_int_equal(st.records, 20);
	spool_close(sp);

	/* Recovery sees only the good records. */
	sp = open_ok(&o);
	size_t n = drain(sp, &cursor, nums, NULL, 64);
	assert_int_equal(n, 20);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(nums[i], i < 10 ? (int)i + 1 : (int)i + 31);
	spool_stats(sp, &st);
	assert_int_equal(st.damaged, 0);
	assert_int_equal(st.torn_bytes, 0);
	spool_close(sp);
}

/*
 * A refused group whose cut-back fails must never come back: its bytes stay
 * past the committed end, so nothing may be appended after them until the
 * cut succeeds, or the next group would overwrite only their start and
 * recovery would read the rest as records.
 */
static void test_failed_cut_refuses(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	const char *seg = "seg-00000000000000000001.spool";
	struct spool *sp = open_ok(&o);
	struct spool_stats st;
	int nums[64];
	uint64_t first, cursor = 0;
	off_t size;

	assert_int_equal(write_range(sp, 1, 11, &first), SPOOL_OK);
	size = file_size(t->dir, seg);

	/* The group reaches the file, its fdatasync and the cut-back fail. */
	atomic_store(&fail_sync_errno, EIO);
	atomic_store(&fail_trunc_errno, EIO);
	assert_int_equal(write_range(sp, 11, 21, NULL), SPOOL_EIO);
	assert_true(file_size(t->dir, seg) > size); /* the refused bytes are still there */

	/* The cut fails again: the next group is refused, not written after them. */
	atomic_store(&fail_trunc_errno, EIO);
	assert_int_equal(write_range(sp, 21, 22, NULL), SPOOL_EIO);

	/* The cut succeeds: writing goes on where the committed records end. */
	assert_int_equal(write_range(sp, 22, 23, &first), SPOOL_OK);
	assert_int_equal(first, 11);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 11);
	assert_int_equal(st.write_errors, 2);
	spool_close(sp);

	/* Recovery hands out the committed records only. */
	sp = open_ok(&o);
	size_t n = drain(sp, &cursor, nums, NULL, 64);
	assert_int_equal(n, 11);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(nums[i], i < 10 ? (int)i + 1 : 22);
	spool_stats(sp, &st);
	assert_int_equal(st.damaged, 0);
	spool_close(sp);
}

static void count_cb(void *arg, enum spool_err err, uint64_t first_seq)
{
	(void)err;
	(void)first_seq;
	(*(int *)arg)++;
}

static void test_max_bytes(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp;
	struct spool_stats st;
	struct spool_batch *b;
	int called = 0;

	o.max_bytes = 4096;
	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 0, 20, NULL), SPOOL_OK);
	spool_stats(sp, &st);
	assert_true(st.bytes < 4096);

	/* A batch that would cross max_bytes is refused at once, done not called. */
	b = spool_batch_new(100);
	for (int i = 0; i < 100; i++)
		add_msg(b, i);
	assert_int_equal(spool_submit(sp, b, count_cb, &called), SPOOL_EFULL);
	assert_int_equal(called, 0);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 20);

	/* A small one still fits. */
	assert_int_equal(write_range(sp, 20, 21, NULL), SPOOL_OK);
	spool_close(sp);
}

/* --- lock, fsync modes, start-up cost -------------------------------------------------- */

static void test_lock(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp = open_ok(&o), *sp2 = NULL;
	char err[256] = "";

	assert_int_equal(spool_open(&o, &sp2, err, sizeof(err)), -1);
	assert_null(sp2);
	assert_non_null(strstr(err, t->dir));
	assert_non_null(strstr(err, "in use"));
	spool_close(sp);

	/* Free again once closed. */
	sp = open_ok(&o);
	spool_close(sp);
}

static void test_fsync_modes(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp;
	int before;

	o.fsync = CONF_FSYNC_NEVER;
	sp = open_ok(&o);
	before = atomic_load(&n_fdatasync);
	for (int i = 0; i < 10; i++)
		assert_int_equal(write_range(sp, i, i + 1, NULL), SPOOL_OK);
	assert_int_equal(atomic_load(&n_fdatasync), before);
	spool_close(sp);

	o.fsync = CONF_FSYNC_INTERVAL;
	o.fsync_interval_ms = 30;
	sp = open_ok(&o);
	before = atomic_load(&n_fdatasync);
	assert_int_equal(write_range(sp, 10, 11, NULL), SPOOL_OK);
	for (int64_t end = now_ms() + 2000; atomic_load(&n_fdatasync) == before;) {
		assert_true(now_ms() < end);
		usleep(5000);
	}
	spool_close(sp);
}

/* --- directories created durably ---------------------------------------------------- */

/* What the seam saw: "mkdir <path>", "open <path> <fd>" for directories, "fsync <fd>". */
static char dir_ops[64][300];
static int n_dir_ops;

static void dir_op(const char *what, const char *path, int fd)
{
	if (n_dir_ops < 64)
		snprintf(dir_ops[n_dir_ops++], sizeof(dir_ops[0]), "%s %s %d", what, path, fd);
}

static int rec_mkdirat(int dirfd, const char *path, mode_t mode)
{
	int rc = real_io.mkdirat(dirfd, path, mode);
	if (rc == 0)
		dir_op("mkdir", path, -1);
	return rc;
}

static int rec_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	int fd = real_io.openat(dirfd, path, flags, mode);
	if (fd >= 0 && (flags & O_DIRECTORY))
		dir_op("open", path, fd);
	return fd;
}

static int rec_fsync(int fd)
{
	dir_op("fsync", "-", fd);
	return real_io.fsync(fd);
}

/* Whether, after "mkdir <made>", a directory opened as <dir> was fsynced. */
static bool synced_after_mkdir(const char *made, const char *dir)
{
	int fd = -1;
	bool made_seen = false;
	char want[300];

	for (int i = 0; i < n_dir_ops; i++) {
		char path[280];
		int f;
		snprintf(want, sizeof(want), "mkdir %s -1", made);
		if (!strcmp(dir_ops[i], want))
			made_seen = true;
		if (sscanf(dir_ops[i], "open %279s %d", path, &f) == 2 && !strcmp(path, dir))
			fd = f;
		if (made_seen && fd >= 0 && sscanf(dir_ops[i], "fsync - %d", &f) == 1 && f == fd)
			return true;
	}
	return false;
}

/*
 * A spool directory (and failed/) that ackd creates must survive a power
 * loss: after the mkdir, the directory holding the new one is fsynced.
 */
static void test_mkdir_fsyncs_parent(void **state)
{
	struct tmp *t = *state;
	char dir[128], failed[160];
	struct spool_opts o;
	struct spool *sp;
	struct spool_io saved = spool_io;

	snprintf(dir, sizeof(dir), "%s/sub", t->dir);
	o = opts_for(dir, 0);
	spool_io.mkdirat = rec_mkdirat;
	spool_io.openat = rec_openat;
	spool_io.fsync = rec_fsync;
	n_dir_ops = 0;
	sp = open_ok(&o);
	spool_close(sp);
	assert_true(synced_after_mkdir(dir, t->dir));

	/* failed/ made again on an existing spool whose empty segment is reused. */
	snprintf(failed, sizeof(failed), "%s/failed", dir);
	assert_int_equal(rmdir(failed), 0);
	n_dir_ops = 0;
	sp = open_ok(&o);
	spool_close(sp);
	spool_io = saved;
	assert_true(synced_after_mkdir("failed", dir));
}

/* --- zero-filled spare segments (prealloc) ------------------------------------------- */

#define SPARE_SEG (64 * 1024)

/* What a read-only pass over dir's segments finds. */
struct ro_scan {
	int segments, sealed, records, damage, unused;
	uint64_t newest_bytes;
	uint64_t unused_off; /* where the newest segment's zeros begin; 0: none */
	char newest[64];
};

static struct ro_scan ro_scan(const char *dir)
{
	struct ro_scan sc = { 0 };
	const struct spool_ro_file *files;
	struct spool_ro *ro;
	char err[256];
	size_t n;

	if (spool_ro_open(dir, &ro, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	n = spool_ro_segments(ro, &files);
	for (size_t i = 0; i < n; i++) {
		struct spool_ro_iter *it;
		struct spool_ro_item item;
		assert_int_equal(spool_ro_iter_new(ro, &files[i], 1, &it), 0);
		while (spool_ro_iter_next(it, &item) == 1) {
			sc.records += item.kind == SPOOL_RO_RECORD;
			sc.damage += item.kind == SPOOL_RO_DAMAGE || item.kind == SPOOL_RO_TRAILING;
			if (item.kind == SPOOL_RO_UNUSED) {
				sc.unused++;
				sc.unused_off = item.off;
			}
		}
		spool_ro_iter_free(it);
		sc.segments++;
		sc.sealed += files[i].sealed;
		sc.newest_bytes = files[i].bytes;
		snprintf(sc.newest, sizeof(sc.newest), "%s", files[i].name);
	}
	spool_ro_free(ro);
	return sc;
}

static struct spool_stats wait_spare(struct spool *sp)
{
	struct spool_stats st;

	for (int64_t end = now_ms() + 10000;; usleep(1000)) {
		spool_stats(sp, &st);
		if (st.spare_ready)
			return st;
		assert_true(now_ms() < end);
	}
}

/*
 * Write 40-record batches from *n on until done(st) holds; once the writer
 * asked for a spare (at its segment's first group; these segments are
 * under the 1 MiB the zeros may run ahead, so it is written whole), wait
 * until it is ready, so that the roll finds it.
 */
static struct spool_stats write_until(struct spool *sp, int *n,
    bool (*done)(const struct spool_stats *st, uint64_t arg), uint64_t arg)
{
	struct spool_stats st;

	for (spool_stats(sp, &st); !done(&st, arg); spool_stats(sp, &st)) {
		assert_int_equal(write_range(sp, *n, *n + 40, NULL), SPOOL_OK);
		*n += 40;
		spool_stats(sp, &st);
		if (st.spare_wanted)
			wait_spare(sp);
	}
	return st;
}

static bool spare_taken(const struct spool_stats *st, uint64_t used)
{
	return st->spares_used > used;
}

static bool spare_ready(const struct spool_stats *st, uint64_t unused)
{
	(void)unused;
	return st->spare_ready;
}

/*
 * Write until the writer has begun a segment in a spare, and wait for that
 * roll (the old segment's seal) to finish.
 */
static void roll_into_spare(struct spool *sp, int *n)
{
	struct spool_stats st;
	uint64_t segments;

	spool_stats(sp, &st);
	segments = st.segments;
	st = write_until(sp, n, spare_taken, st.spares_used);
	for (int64_t end = now_ms() + 10000; st.segments == segments; usleep(1000)) {
		assert_true(now_ms() < end);
		spool_stats(sp, &st);
	}
}

/* Every record 0..n-1 comes back once, in order; nothing torn or damaged. */
static void reopen_expect(const struct spool_opts *o, int n)
{
	struct spool *sp = open_ok(o);
	static int nums[4096];
	struct spool_stats st;
	uint64_t cursor = 0;
	size_t got = drain(sp, &cursor, nums, NULL, 4096);

	assert_int_equal(got, n);
	for (int i = 0; i < n; i++)
		assert_int_equal(nums[i], i);
	spool_stats(sp, &st);
	assert_int_equal(st.torn_bytes, 0);
	assert_int_equal(st.damaged, 0);
	spool_close(sp);
}

/*
 * With prealloc the writer begins segments in zero-filled spares and writes
 * over the zeros; a segment rolls once its records covered them, and
 * closing cuts the newest one's off, so a stopped spool is what appending
 * would have made.
 */
static void test_prealloc_spares(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, SPARE_SEG);
	struct spool *sp;
	struct ro_scan sc;
	int n = 0;

	o.prealloc = true;
	sp = open_ok(&o);
	for (int i = 0; i < 3; i++)
		roll_into_spare(sp, &n);
	sc = ro_scan(t->dir);
	assert_int_equal(sc.newest_bytes, SPARE_SEG); /* the active segment: a spare */
	assert_int_equal(sc.unused, 1);
	assert_int_equal(sc.damage, 0);
	assert_int_equal(sc.sealed, sc.segments - 1);
	write_until(sp, &n, spare_ready, 0); /* the next one, asked for at the first group */
	assert_int_equal(file_size(t->dir, ".seg-spare.tmp"), SPARE_SEG);
	spool_close(sp);

	assert_int_equal(file_size(t->dir, ".seg-spare.tmp"), -1);
	sc = ro_scan(t->dir);
	assert_int_equal(sc.records, n);
	assert_int_equal(sc.unused + sc.damage, 0);
	assert_true(sc.newest_bytes < SPARE_SEG);
	assert_int_equal(sc.sealed, sc.segments - 1);
	reopen_expect(&o, n);
}

#define PACED_SEG (UINT64_C(4) << 20)
#define MiB (UINT64_C(1) << 20)

/* Almost 1 MiB of records: 16 values of 65,000 bytes. */
static void write_mib(struct spool *sp)
{
	static char value[65000];
	struct spool_batch *b = spool_batch_new(16);
	struct spool_msg m = { .topic = "t", .topic_len = 1, .value = value,
			       .value_len = sizeof(value), .timestamp_ms = 1700000000000 };

	for (int i = 0; i < 16; i++)
		assert_int_equal(spool_batch_add(b, &m), 0);
	assert_int_equal(write_batch(sp, b, NULL), SPOOL_OK);
}

/*
 * How far the spare may run ahead of fill bytes of records: a third ahead
 * plus 1 MiB (SPARE_LEAD in spool_spare.c), in whole 256 KiB steps, at most
 * the segment.
 */
static off_t paced_limit(uint64_t fill)
{
	uint64_t limit = fill + fill / 3 + MiB;

	limit -= limit % (256 * 1024);
	return (off_t)(limit < PACED_SEG ? limit : PACED_SEG);
}

/*
 * The spare reaches the limit its records allow (a slow disk only delays
 * that), and stays there while no more records come.
 */
static void spare_reaches(const char *dir, struct spool *sp)
{
	struct spool_stats st;
	off_t want;

	spool_stats(sp, &st);
	assert_int_equal(st.segments, 1); /* so st.bytes is the active segment's records */
	want = paced_limit(st.bytes);
	for (int64_t end = now_ms() + 20000; file_size(dir, ".seg-spare.tmp") < want; usleep(1000))
		assert_true(now_ms() < end);
	usleep(200 * 1000);
	assert_int_equal(file_size(dir, ".seg-spare.tmp"), want);
}

/*
 * The zeros are paced by the records: asked for at the segment's first
 * group, the spare is written no further than a third ahead of the records
 * plus 1 MiB, in 256 KiB steps, and is whole once the records fill three
 * quarters of the segment less 1 MiB, before the roll.
 */
static void test_prealloc_paced(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, PACED_SEG);
	struct spool_stats st;
	struct spool *sp;

	o.prealloc = true;
	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 0, 40, NULL), SPOOL_OK);
	spare_reaches(t->dir, sp); /* a few KiB of records: 1 MiB of zeros */
	assert_int_equal(file_size(t->dir, ".seg-spare.tmp"), MiB);
	spool_stats(sp, &st);
	assert_false(st.spare_ready);
	assert_true(st.spare_wanted);

	write_mib(sp);
	spare_reaches(t->dir, sp);
	write_mib(sp);
	spare_reaches(t->dir, sp); /* about 2 MiB of records: 3.5 MiB of zeros */
	spool_stats(sp, &st);
	assert_false(st.spare_ready);

	write_mib(sp); /* about 3 MiB: the spare may be whole */
	st = wait_spare(sp);
	assert_int_equal(st.segments, 1);
	assert_int_equal(file_size(t->dir, ".seg-spare.tmp"), PACED_SEG);
	for (int i = 0; i < 3 && st.segments == 1; i++) { /* to the roll, into the spare */
		write_mib(sp);
		spool_stats(sp, &st);
	}
	assert_int_equal(st.segments, 2);
	assert_int_equal(st.spares_used, 1);
	spool_close(sp);
	assert_int_equal(ro_scan(t->dir).damage, 0);
}

/*
 * A crash leaves the zeros after the newest segment's records, and a spare:
 * recovery cuts the zeros without counting them torn, and removes the
 * spare. Bytes that are not zero before the zeros are a torn tail.
 */
static void test_prealloc_crash(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, SPARE_SEG);
	char crash[96], torn[96], path[256];
	unsigned char junk[100];
	struct spool_stats st;
	struct spool *sp;
	struct ro_scan sc;
	int n = 0, fd;

	o.prealloc = true;
	sp = open_ok(&o);
	roll_into_spare(sp, &n);
	snprintf(crash, sizeof(crash), "%s/crash", t->dir);
	snprintf(torn, sizeof(torn), "%s/torn", t->dir);
	assert_int_equal(mkdir(crash, 0750), 0);
	assert_int_equal(mkdir(torn, 0750), 0);
	copy_dir(t->dir, crash); /* every record was committed: what a power loss keeps */
	copy_dir(t->dir, torn);
	spool_close(sp);

	snprintf(path, sizeof(path), "%s/.seg-spare.tmp", crash);
	assert_true((fd = open(path, O_WRONLY | O_CREAT, 0640)) >= 0);
	assert_int_equal(ftruncate(fd, SPARE_SEG), 0);
	close(fd);
	sc = ro_scan(crash);
	assert_int_equal(sc.newest_bytes, SPARE_SEG);
	assert_int_equal(sc.unused, 1);
	assert_int_equal(sc.damage, 0);
	o.dir = crash;
	reopen_expect(&o, n);
	assert_int_equal(file_size(crash, ".seg-spare.tmp"), -1);
	sc = ro_scan(crash);
	assert_int_equal(sc.unused, 0);
	assert_true(sc.newest_bytes < SPARE_SEG);

	/* A write that reached the disk in part: 100 bytes, then the zeros. */
	sc = ro_scan(torn);
	assert_true(sc.unused_off > 0);
	memset(junk, 0x55, sizeof(junk));
	snprintf(path, sizeof(path), "%s/%s", torn, sc.newest);
	assert_true((fd = open(path, O_WRONLY)) >= 0);
	assert_int_equal(pwrite(fd, junk, sizeof(junk), (off_t)sc.unused_off), sizeof(junk));
	close(fd);
	sc = ro_scan(torn);
	assert_int_equal(sc.unused, 0);
	assert_int_equal(sc.damage, 1);
	o.dir = torn;
	sp = open_ok(&o);
	spool_stats(sp, &st);
	assert_int_equal(st.torn_bytes, sizeof(junk));
	assert_int_equal(st.records, n);
	spool_close(sp);
}

static int (*inner_openat)(int, const char *, int, mode_t);

static int spare_open_fails(int dirfd, const char *path, int flags, mode_t mode)
{
	if (strcmp(path, ".seg-spare.tmp") == 0) {
		errno = EIO;
		return -1;
	}
	return inner_openat(dirfd, path, flags, mode);
}

/* No spare can be made: segments are created empty and appended to, as without prealloc. */
static void test_prealloc_spare_fails(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, SPARE_SEG);
	struct spool_io saved = spool_io;
	struct spool_stats st;
	struct spool *sp;
	int n = 0;

	o.prealloc = true;
	inner_openat = spool_io.openat;
	spool_io.openat = spare_open_fails;
	sp = open_ok(&o);
	for (spool_stats(sp, &st); st.segments < 4; spool_stats(sp, &st)) {
		assert_int_equal(write_range(sp, n, n + 40, NULL), SPOOL_OK);
		n += 40;
	}
	assert_int_equal(st.spares_used, 0);
	assert_false(st.spare_ready);
	spool_close(sp);
	spool_io = saved;
	reopen_expect(&o, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enospc_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_cut_refuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fsync_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mkdir_fsyncs_parent, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prealloc_spares, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prealloc_paced, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prealloc_crash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_prealloc_spare_fails, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
