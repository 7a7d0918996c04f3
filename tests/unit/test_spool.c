/*
 * test_spool: segments, group commit, acknowledgements, copy-forward,
 * recovery from the damaged spools in tests/fixtures/spool/, full disk and
 * I/O errors through the spool_io seam.
 *
 * Every message i carries key "k<i>", header ackd-id "id-<i>" and value
 * "value-<i>" (the fixtures follow the same rule), so a test names records
 * by number and checks exactly which ones come back.
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

#ifndef FIXTURES
#define FIXTURES "tests/fixtures"
#endif

/* --- the I/O seam ------------------------------------------------------------ */

static struct spool_io real_io;
static atomic_int n_fdatasync;
static atomic_int fail_write_errno; /* next pwritev writes half, then fails with this */
static atomic_int fail_sync_errno;  /* next fdatasync fails with this */

static ssize_t test_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	int e = atomic_exchange(&fail_write_errno, 0);

	if (e) {
		/* A partial write first, as a filling disk does, then the error. */
		struct iovec half = { iov[0].iov_base, iov[0].iov_len / 2 };
		if (real_io.pwritev(fd, &half, 1, off) < 0)
			return -1;
		errno = e;
		return -1;
	}
	return real_io.pwritev(fd, iov, iovcnt, off);
}

static int test_fdatasync(int fd)
{
	int e = atomic_exchange(&fail_sync_errno, 0);

	atomic_fetch_add(&n_fdatasync, 1);
	if (e) {
		errno = e;
		return -1;
	}
	return real_io.fdatasync(fd);
}

/* --- helpers ------------------------------------------------------------------ */

struct tmp {
	char dir[64];
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));

	snprintf(t->dir, sizeof(t->dir), "/tmp/test_spool.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	atomic_store(&n_fdatasync, 0);
	atomic_store(&fail_write_errno, 0);
	atomic_store(&fail_sync_errno, 0);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct tmp *t = *state;

	nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

static struct spool_opts opts_for(const char *dir, uint64_t segment_bytes)
{
	struct spool_opts o = {
		.dir = dir,
		.fsync = CONF_FSYNC_ALWAYS,
		.fsync_interval_ms = 50,
		.max_bytes = 0,
		.segment_bytes = segment_bytes,
	};
	return o;
}

static struct spool *open_ok(const struct spool_opts *o)
{
	struct spool *sp = NULL;
	char err[256] = "";

	if (spool_open(o, &sp, err, sizeof(err)) < 0)
		fail_msg("spool_open: %s", err);
	return sp;
}

/* Add message number i (see the opening comment). */
static void add_msg(struct spool_batch *b, int i)
{
	char key[32], id[32], value[48];
	struct spool_hdr h = { "ackd-id", 7, id, 0 };
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = 0 };

	m.key_len = (size_t)snprintf(key, sizeof(key), "k%d", i);
	m.key = key;
	h.value_len = (size_t)snprintf(id, sizeof(id), "id-%d", i);
	m.value_len = (size_t)snprintf(value, sizeof(value), "value-%d", i);
	m.value = value;
	m.hdrs = &h;
	m.nhdrs = 1;
	m.timestamp_ms = 1700000000000 + i;
	assert_int_equal(spool_batch_add(b, &m), 0);
}

/* The message number of a record read back, checking its other fields. */
static int msg_num(const struct spool_rec *r)
{
	char buf[64];
	int i;

	assert_true(r->msg.value_len < sizeof(buf));
	memcpy(buf, r->msg.value, r->msg.value_len);
	buf[r->msg.value_len] = 0;
	assert_int_equal(sscanf(buf, "value-%d", &i), 1);
	assert_int_equal(r->msg.nhdrs, 1);
	assert_memory_equal(r->msg.hdrs[0].name, "ackd-id", 7);
	return i;
}

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	enum spool_err err;
	uint64_t first_seq;
};

static void waiter_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct waiter *w = arg;

	pthread_mutex_lock(&w->mu);
	w->done++;
	w->err = err;
	w->first_seq = first_seq;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
}

/* Submit messages [from, to) as one batch and wait for the callback. */
static enum spool_err write_range(struct spool *sp, int from, int to, uint64_t *first_seq)
{
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, SPOOL_OK, 0 };
	struct spool_batch *b = spool_batch_new((size_t)(to - from));
	enum spool_err err;

	for (int i = from; i < to; i++)
		add_msg(b, i);
	err = spool_submit(sp, b, waiter_done, &w);
	if (err != SPOOL_OK)
		return err;
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(w.done, 1);
	if (first_seq)
		*first_seq = w.first_seq;
	return w.err;
}

/* Read everything spool_next hands out: message numbers and sequences. */
static size_t drain(struct spool *sp, uint64_t *cursor, int *nums, uint64_t *seqs, size_t max)
{
	struct spool_rec *r;
	size_t n = 0;
	uint64_t last = 0;

	while (spool_next(sp, cursor, &r) == 1) {
		assert_true(n < max);
		assert_true(r->seq > last); /* sequence order */
		last = r->seq;
		nums[n] = msg_num(r);
		if (seqs)
			seqs[n] = r->seq;
		n++;
		spool_rec_free(r);
	}
	return n;
}

static int count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name), s = strlen(suffix);
		n += l > s && strcmp(de->d_name + l - s, suffix) == 0;
	}
	closedir(d);
	return n;
}

static off_t file_size(const char *dir, const char *name)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (stat(path, &st) < 0)
		return -1;
	return st.st_size;
}

static void copy_dir(const char *from, const char *to)
{
	DIR *d = opendir(from);
	struct dirent *de;
	char src[512], dst[512], buf[65536];

	assert_non_null(d);
	while ((de = readdir(d))) {
		int in, out;
		ssize_t n;
		if (de->d_name[0] == '.')
			continue;
		snprintf(src, sizeof(src), "%s/%s", from, de->d_name);
		snprintf(dst, sizeof(dst), "%s/%s", to, de->d_name);
		in = open(src, O_RDONLY);
		out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		assert_true(in >= 0 && out >= 0);
		while ((n = read(in, buf, sizeof(buf))) > 0)
			assert_int_equal(write(out, buf, (size_t)n), n);
		close(in);
		close(out);
	}
	closedir(d);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
	spool_maintain(sp);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	assert_int_equal(st.segments, 1); /* only the active one */
	assert_int_equal(st.oldest_ms, 0);
	assert_int_equal(count_files(t->dir, ".spool"), 1);
	assert_true(count_files(t->dir, ".ack") <= 1);
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
	assert_int_equal(spool_fail(sp, 5, "message too large"), 0);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	assert_int_equal(st.failed, 1);
	assert_int_equal(count_files(t->dir, ".spool") >= 1, 1);
	char failed_dir[128];
	snprintf(failed_dir, sizeof(failed_dir), "%s/failed", t->dir);
	assert_int_equal(count_files(failed_dir, ".log"), 1);
	spool_close(sp);

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

static void test_startup_1m(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp;
	struct spool_stats st;
	struct spool_rec *r;
	uint64_t cursor = 0;
	int64_t t0, ms;
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
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
	assert_int_equal(spool_fail(sp, seqs[1], "test reason"), 0);
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
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_acks_delete_segments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reopen_returns_unacked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_forward, setup, teardown),
		cmocka_unit_test_setup_teardown(test_copy_forward_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_enospc_eio, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_in_steps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_max_bytes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lock, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fsync_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_startup_1m, setup, teardown),
		cmocka_unit_test_setup_teardown(test_readonly_reader, setup, teardown),
	};

	real_io = spool_io;
	spool_io.pwritev = test_pwritev;
	spool_io.fdatasync = test_fdatasync;
	log_set_level(LOG_LVL_ERR);
	if (getenv("TEST_SPOOL_DEBUG"))
		log_set_level(LOG_LVL_DEBUG);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
