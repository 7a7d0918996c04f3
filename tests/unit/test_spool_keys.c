/*
 * test_spool_keys: Idempotency-Key records in the spool: never handed to
 * the producer, loaded at open, kept in the keys file once their segment is
 * deleted, expired ones dropped and the file compacted, a torn keys file
 * cut, a leftover keys.tmp removed, records that decode badly dropped.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test_spool_util.h"

#define MAXK 8192

struct seen {
	int64_t ttl_ms; /* keys older than this are not counted, as the key table does */
	int n;
	char keys[MAXK][32];
	uint64_t seqs[MAXK];
	uint32_t nrecs[MAXK];
};

static void on_key(void *arg, uint64_t seq, const struct spool_key *k)
{
	struct seen *s = arg;

	if (s->ttl_ms && wall_ms() - k->timestamp_ms >= s->ttl_ms)
		return;
	assert_true(s->n < MAXK);
	snprintf(s->keys[s->n], sizeof(s->keys[0]), "%.*s", (int)k->key_len, k->key);
	s->seqs[s->n] = seq;
	s->nrecs[s->n] = k->nrecs;
	s->n++;
}

static int found(const struct seen *s, const char *key)
{
	int c = 0;

	for (int i = 0; i < s->n; i++)
		c += strcmp(s->keys[i], key) == 0;
	return c;
}

/* Messages [from, to) as one batch ending with key "k<from>", accepted at ts. */
static uint64_t write_keyed(struct spool *sp, int from, int to, int64_t ts)
{
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, SPOOL_OK, 0 };
	struct spool_batch *b = spool_batch_new((size_t)(to - from) + 1);
	char key[32], ids[8 * SPOOL_KEY_ID_LEN];
	struct spool_key k = { .timestamp_ms = ts, .nrecs = (uint32_t)(to - from), .scope = "unix",
		.scope_len = 4, .topic = "t", .topic_len = 1, .ids = ids };

	assert_true(to - from <= 8);
	memset(ids, 'A', sizeof(ids));
	snprintf(key, sizeof(key), "k%d", from);
	k.key = key;
	k.key_len = strlen(key);
	for (int i = from; i < to; i++)
		add_msg(b, i);
	assert_int_equal(spool_batch_add_key(b, &k), 0);
	assert_int_equal(spool_submit(sp, b, waiter_done, &w), SPOOL_OK);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(w.err, SPOOL_OK);
	return w.first_seq;
}

/* Everything spool_next() hands out is acknowledged; the messages counted. */
static size_t drain_ack(struct spool *sp)
{
	uint64_t cursor = 0, seqs[4096];
	int nums[4096];
	size_t n = drain(sp, &cursor, nums, seqs, 4096);

	for (size_t i = 0; i < n; i++)
		spool_ack(sp, seqs[i]);
	spool_maintain(sp);
	return n;
}

/*
 * One round of the tests that grow the keys file: 20 batches of keys
 * "k<from * 4>" on, each accepted ahead_ms after its write, all acknowledged.
 */
static void keyed_round(struct spool *sp, int from, int64_t ahead_ms)
{
	for (int j = from; j < from + 20; j++)
		write_keyed(sp, j * 4, j * 4 + 4, wall_ms() + ahead_ms);
	drain_ack(sp);
}

/* Every key from k<from * 4> to before k<to * 4>, once, at the next open. */
static void all_keys_there(struct spool_opts *o, int from, int to)
{
	struct seen *s = calloc(1, sizeof(*s));
	struct spool *sp;

	assert_non_null(s);
	s->ttl_ms = o->key_ttl_ms;
	o->on_key = on_key;
	o->on_key_arg = s;
	sp = open_ok(o);
	for (int i = from; i < to; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_int_equal(found(s, key), 1);
	}
	spool_close(sp);
	free(s);
}

static void test_keys_not_produced_and_loaded(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct seen s = { 0 };
	struct spool *sp = open_ok(&o);
	uint64_t cursor = 0, seqs[16], first;
	int nums[16];

	first = write_keyed(sp, 0, 3, wall_ms());
	assert_int_equal(write_range(sp, 3, 5, NULL), SPOOL_OK);
	/* The KEY record takes a sequence and is never handed out. */
	assert_int_equal(drain(sp, &cursor, nums, seqs, 16), 5);
	assert_int_equal(nums[2], 2);
	assert_int_equal(nums[3], 3);
	assert_int_equal(seqs[3], first + 4);
	spool_close(sp);
	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.keys[0], "k0");
	assert_int_equal(s.seqs[0], first + 3);
	assert_int_equal(s.nrecs[0], 3);
	cursor = 0;
	assert_int_equal(drain(sp, &cursor, nums, seqs, 16), 5);
	spool_close(sp);
}

static void test_keys_outlive_their_segment(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct seen s = { 0 };
	struct spool *sp;
	struct spool_stats st;

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	for (int i = 0; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	spool_stats(sp, &st);
	assert_true(st.segments >= 3);
	assert_int_equal(drain_ack(sp), 1200);
	spool_stats(sp, &st);
	assert_int_equal(st.segments, 1); /* the older ones deleted */
	assert_true(file_size(t->dir, "keys") > SPOOL_SEG_HDR_SIZE);
	spool_close(sp);

	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	/* Every key once: from the keys file, or from the segment still there. */
	for (int i = 0; i < 300; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_int_equal(found(&s, key), 1);
	}
	spool_close(sp);
}

static void test_keys_expire_and_compact(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct seen s = { 0 };
	struct spool *sp;
	off_t before;

	o.key_ttl_ms = 2000;
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	/* 250 keys that expire in half a second, then 50 that do not. */
	for (int i = 0; i < 250; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms() - 1500);
	for (int i = 250; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms() + 3600000);
	drain_ack(sp);
	spool_close(sp);
	before = file_size(t->dir, "keys");
	assert_true(before > SPOOL_SEG_HDR_SIZE);
	usleep(600 * 1000);

	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	for (int i = 0; i < 300; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_int_equal(found(&s, key), i < 250 ? 0 : 1);
	}
	spool_close(sp);
	/* Mostly expired: compacted at open, the live keys kept. */
	assert_true(file_size(t->dir, "keys") < before / 2);
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	memset(&s, 0, sizeof(s));
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	assert_int_equal(found(&s, "k1000"), 1);
	assert_int_equal(found(&s, "k996"), 0);
	spool_close(sp);
}

struct acks_seen {
	int n;
	struct spool_key_ack a[8];
};

static void on_key_ack(void *arg, const struct spool_key_ack *a)
{
	struct acks_seen *s = arg;

	assert_true(s->n < 8);
	s->a[s->n++] = *a;
}

/*
 * spool_ack_keyed(): the offsets Kafka gave keyed records are in the keys
 * file, read back at open, also after a compaction, and the records are
 * acknowledged.
 */
static void test_key_acks_read_back(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct acks_seen s = { 0 };
	struct spool *sp;
	uint64_t first, cursor = 0, seqs[8];
	int nums[8];
	const char *id1 = "01AAAAAAAAAAAAAAAAAAAAAAA1", *id2 = "01AAAAAAAAAAAAAAAAAAAAAAA2";

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	first = write_keyed(sp, 0, 2, wall_ms());
	spool_ack_keyed(sp, first, id1, 1, 41);
	spool_ack_keyed(sp, first + 1, id2, 0, 7);
	spool_close(sp);
	assert_int_equal(file_size(t->dir, "keys"), SPOOL_SEG_HDR_SIZE + 2 * SPOOL_KEY_ACK_SIZE);

	o.on_key_ack = on_key_ack;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	assert_int_equal(s.n, 2);
	assert_memory_equal(s.a[0].id, id1, SPOOL_KEY_ID_LEN);
	assert_int_equal(s.a[0].partition, 1);
	assert_int_equal(s.a[0].offset, 41);
	assert_memory_equal(s.a[1].id, id2, SPOOL_KEY_ID_LEN);
	assert_int_equal(s.a[1].partition, 0);
	assert_int_equal(s.a[1].offset, 7);
	/* Acknowledged: nothing is handed out again. */
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 0);
	spool_close(sp);

	/* A keys file without a keys TTL: no offsets are written. */
	o.key_ttl_ms = 0;
	o.on_key_ack = NULL;
	sp = open_ok(&o);
	first = write_keyed(sp, 10, 11, wall_ms());
	spool_ack_keyed(sp, first, id1, 3, 3);
	spool_close(sp);
	assert_int_equal(file_size(t->dir, "keys"), SPOOL_SEG_HDR_SIZE + 2 * SPOOL_KEY_ACK_SIZE);
}

/*
 * A torn append at the keys file's end and a leftover keys.tmp. as_tool: the
 * open after them is ackd-spool reinject's (no on_key, SPOOL_KEY_TTL_ALL),
 * which also appends the keys of the segments it deletes: after the cut too.
 */
static void torn_tail_then_open(void **state, bool as_tool)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct spool_opts tool = opts_for(t->dir, 64 << 10);
	struct seen s = { 0 };
	struct spool_stats st;
	struct spool *sp;
	char path[128];
	off_t size;
	int fd;

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	for (int i = 0; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	drain_ack(sp);
	spool_close(sp);
	size = file_size(t->dir, "keys");
	/* A torn append: half of the last record again; and a leftover keys.tmp. */
	snprintf(path, sizeof(path), "%s/keys", t->dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	{
		unsigned char buf[64];
		assert_int_equal(pread(fd, buf, sizeof(buf), SPOOL_SEG_HDR_SIZE), sizeof(buf));
		assert_int_equal(pwrite(fd, buf, 40, size), 40);
	}
	close(fd);
	snprintf(path, sizeof(path), "%s/keys.tmp", t->dir);
	fd = open(path, O_CREAT | O_WRONLY, 0640);
	assert_true(fd >= 0);
	close(fd);

	o.on_key = on_key;
	o.on_key_arg = &s;
	tool.key_ttl_ms = SPOOL_KEY_TTL_ALL;
	sp = open_ok(as_tool ? &tool : &o);
	spool_stats(sp, &st);
	assert_int_equal(st.torn_bytes, 40);
	assert_int_equal(found(&s, "k0"), as_tool ? 0 : 1);
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	spool_close(sp); /* the open deleted the first run's last segment: its keys were appended */
	assert_true(file_size(t->dir, "keys") > size);
	/* Appended after the cut, not after the torn bytes: every key whole, once. */
	memset(&s, 0, sizeof(s));
	sp = open_ok(&o);
	spool_stats(sp, &st);
	assert_int_equal(st.torn_bytes, 0);
	for (int i = 0; i < 300; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_int_equal(found(&s, key), 1);
	}
	spool_close(sp);
}

static void test_keys_torn_tail_and_tmp(void **state) { torn_tail_then_open(state, false); }

static void test_keys_torn_tail_then_tool_open(void **state) { torn_tail_then_open(state, true); }

static ino_t keys_inode(const char *dir)
{
	char path[128];
	struct stat st;

	snprintf(path, sizeof(path), "%s/keys", dir);
	assert_int_equal(stat(path, &st), 0);
	return st.st_ino;
}

/*
 * A compaction at open, then one when the file has grown past 1 MiB and its
 * oldest key expired, in the same run: the second reads the file the first
 * installed (it must be readable), and renames a new one over it.
 */
static void test_keys_compact_twice_in_one_run(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct seen s = { 0 };
	struct spool *sp;
	ino_t after_open;
	int64_t expiring;
	off_t size;
	int n = 0;

	o.key_ttl_ms = 2000;
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	for (int i = 0; i < 250; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms() - 1500);
	for (int i = 250; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms() + 3600000);
	drain_ack(sp);
	spool_close(sp);
	usleep(600 * 1000);

	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o); /* mostly expired: the first compaction */
	assert_int_equal(s.n, 50);
	after_open = keys_inode(t->dir);
	/*
	 * Keys that expire 5 s from now, then live keys until the file passes
	 * 1 MiB and twice its compacted size (the segments deleted meanwhile
	 * save the first ones to the file: a segment holds about 130 of these
	 * batches). Once those expired, the next save compacts.
	 */
	expiring = wall_ms() + 5000 - o.key_ttl_ms;
	for (int i = 300; i < 320; i++)
		write_keyed(sp, i * 4, i * 4 + 4, expiring);
	for (n = 320; keys_inode(t->dir) == after_open; n += 20) {
		keyed_round(sp, n, 3600000);
		assert_true(file_size(t->dir, "keys") < 16 << 20); /* not compacted for good */
		if (file_size(t->dir, "keys") > (1 << 20) + (64 << 10) &&
		    wall_ms() <= expiring + o.key_ttl_ms)
			usleep(100 * 1000); /* big enough: waits for the first ones to expire */
	}
	assert_true(keys_inode(t->dir) != after_open);
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	spool_close(sp);
	size = file_size(t->dir, "keys");
	assert_true(size > SPOOL_SEG_HDR_SIZE);
	/* Every live key once, nothing lost by either rewrite (the expired ones
	 * are not handed out either way). */
	memset(&s, 0, sizeof(s));
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	for (int i = 250; i < n; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		if (i < 300 || i >= 320)
			assert_int_equal(found(&s, key), 1);
	}
	spool_close(sp);
}

/*
 * A file past 1 MiB whose keys all live is not rewritten: a compaction would
 * drop nothing, and it rewrites the whole file (93 MB of live keys took
 * about half a second).
 */
static void test_keys_not_compacted_while_nothing_expired(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct spool *sp;
	ino_t first = 0;

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	for (int i = 0; file_size(t->dir, "keys") <= 3 << 20; i += 20) {
		keyed_round(sp, i, 0);
		if (file_size(t->dir, "keys") < 0)
			continue; /* no segment with keys deleted yet */
		if (!first)
			first = keys_inode(t->dir);
		assert_true(keys_inode(t->dir) == first);
	}
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	spool_close(sp);
}

/* keys.tmp cannot be created (a full disk): every compaction fails. */
static atomic_int tmp_opens;

static int openat_no_tmp(int dirfd, const char *path, int flags, mode_t mode)
{
	if (strcmp(path, "keys.tmp") == 0) {
		atomic_fetch_add(&tmp_opens, 1);
		errno = ENOSPC;
		return -1;
	}
	return real_io.openat(dirfd, path, flags, mode);
}

/*
 * A compaction that fails is not tried again on every save after it: each
 * try reads the whole file. The file stays as it is,
 * every live key in it.
 */
static void test_keys_failed_compaction_waits(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	int (*saved)(int, const char *, int, mode_t) = spool_io.openat;
	struct seen s = { 0 };
	struct spool *sp;
	int64_t expiring;
	int i = 0, saves = 0;

	o.key_ttl_ms = 2000;
	sp = open_ok(&o);
	spool_io.openat = openat_no_tmp;
	atomic_store(&tmp_opens, 0);
	/* Keys that expire 5 s from now (saved to the file before that), then
	 * live ones past 1 MiB. */
	expiring = wall_ms() + 5000 - o.key_ttl_ms;
	for (; i < 20; i++)
		write_keyed(sp, i * 4, i * 4 + 4, expiring);
	for (; file_size(t->dir, "keys") <= (1 << 20) + (64 << 10); i += 20) {
		keyed_round(sp, i, 3600000);
	}
	while (wall_ms() <= expiring + o.key_ttl_ms)
		usleep(50 * 1000);
	/*
	 * Due from here: each round deletes segments, each deletion saves keys
	 * (four saves, well within the minute's wait on a slow disk).
	 */
	for (off_t before = file_size(t->dir, "keys"); saves < 4; i += 20) {
		keyed_round(sp, i, 3600000);
		if (file_size(t->dir, "keys") > before) {
			before = file_size(t->dir, "keys");
			saves++;
		}
	}
	spool_io.openat = saved;
	assert_int_equal(atomic_load(&tmp_opens), 1);
	spool_close(sp);

	o.on_key = on_key;
	o.on_key_arg = &s;
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	for (int k = 20; k < i; k++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", k * 4);
		assert_int_equal(found(&s, key), 1);
	}
	spool_close(sp);
}

/*
 * A keys file of 0 bytes (a crash between its creation and its header's
 * write) gets its header at open: the keys appended in the run that
 * follows are there at the next open.
 */
static void test_keys_empty_file_gets_header(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct seen s = { 0 };
	struct spool *sp;
	char path[128];
	int fd;

	o.key_ttl_ms = 3600000;
	o.on_key = on_key;
	o.on_key_arg = &s;
	snprintf(path, sizeof(path), "%s/keys", t->dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0640);
	assert_true(fd >= 0);
	close(fd);
	sp = open_ok(&o);
	assert_int_equal(s.n, 0);
	assert_int_equal(file_size(t->dir, "keys"), SPOOL_SEG_HDR_SIZE);
	for (int i = 0; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	drain_ack(sp);
	spool_close(sp);
	assert_true(file_size(t->dir, "keys") > SPOOL_SEG_HDR_SIZE);

	memset(&s, 0, sizeof(s));
	sp = open_ok(&o);
	for (int i = 0; i < 300; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_int_equal(found(&s, key), 1);
	}
	spool_close(sp);
}

/* Whether keys.tmp was renamed over keys (set by rename_note()). */
static atomic_int renamed_keys;

static int rename_note(int fd1, const char *from, int fd2, const char *to)
{
	int rc = real_io.renameat(fd1, from, fd2, to);

	if (rc == 0 && strcmp(to, "keys") == 0)
		atomic_store(&renamed_keys, 1);
	return rc;
}

/* Directory syncs to fail once keys.tmp was renamed over keys (rename_note()). */
static atomic_int dir_fails_after_rename;

static int fsync_fails_after_rename(int fd)
{
	if (atomic_load(&renamed_keys) && atomic_load(&dir_fails_after_rename) > 0) {
		atomic_fetch_sub(&dir_fails_after_rename, 1);
		errno = EIO;
		return -1;
	}
	return real_io.fsync(fd);
}

/*
 * A compaction whose rename went through and whose directory sync failed
 * once: the keys appended after it go to the new file (not to the old,
 * unlinked one), and the next open finds them.
 */
static void test_keys_dir_sync_fails_after_rename(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	int (*saved_rename)(int, const char *, int, const char *) = spool_io.renameat;
	int (*saved_fsync)(int) = spool_io.fsync;
	struct seen s = { 0 };
	struct spool *sp;

	o.key_ttl_ms = 2000;
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	for (int i = 0; i < 250; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms() - 1500);
	drain_ack(sp);
	spool_close(sp);
	usleep(600 * 1000);

	o.on_key = on_key;
	o.on_key_arg = &s;
	atomic_store(&renamed_keys, 0);
	atomic_store(&dir_fails_after_rename, 1);
	spool_io.renameat = rename_note;
	spool_io.fsync = fsync_fails_after_rename;
	sp = open_ok(&o); /* mostly expired: compacted, the directory sync fails once */
	spool_io.renameat = saved_rename;
	spool_io.fsync = saved_fsync;
	assert_int_equal(atomic_load(&renamed_keys), 1);
	assert_int_equal(atomic_load(&dir_fails_after_rename), 0); /* the failure happened */
	for (int i = 300; i < 600; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms() + 3600000);
	drain_ack(sp);
	spool_close(sp);

	memset(&s, 0, sizeof(s));
	s.ttl_ms = o.key_ttl_ms;
	sp = open_ok(&o);
	for (int i = 300; i < 600; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_int_equal(found(&s, key), 1);
	}
	spool_close(sp);
}

/*
 * Directory syncs made right after an fdatasync of the keys file (the
 * one named by keys_path) on the same thread, and how many of them are
 * left to fail. Per thread: the spool writer's own syncs do not interleave.
 */
static char keys_path[PATH_MAX];
static atomic_int dir_sync_fails, keys_then_dir;
static _Thread_local bool keys_just_synced;

static int fdatasync_note(int fd)
{
	struct stat a, b;

	keys_just_synced = fstat(fd, &a) == 0 && stat(keys_path, &b) == 0 && a.st_ino == b.st_ino;
	return real_io.fdatasync(fd);
}

/* Names change between two syncs: what follows is not right after the keys file's. */
static int unlinkat_note(int dirfd, const char *path, int flags)
{
	keys_just_synced = false;
	return real_io.unlinkat(dirfd, path, flags);
}

static int renameat_note(int fd1, const char *from, int fd2, const char *to)
{
	keys_just_synced = false;
	return real_io.renameat(fd1, from, fd2, to);
}

/* A directory sync right after the keys file's fdatasync fails while dir_sync_fails > 0. */
static int fsync_after_keys_fails(int fd)
{
	bool after_keys = keys_just_synced;
	struct stat st;

	keys_just_synced = false;
	if (!after_keys || fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode))
		return real_io.fsync(fd);
	atomic_fetch_add(&keys_then_dir, 1);
	if (atomic_load(&dir_sync_fails) > 0) {
		atomic_fetch_sub(&dir_sync_fails, 1);
		errno = EIO;
		return -1;
	}
	return real_io.fsync(fd);
}

/*
 * From here on, count (keys_then_dir) the directory syncs right after an
 * fdatasync of dir's keys file, failing the first `fails` of them.
 */
static void watch_dir_syncs_after_keys(const char *dir, int fails)
{
	snprintf(keys_path, sizeof(keys_path), "%s/keys", dir);
	atomic_store(&dir_sync_fails, fails);
	atomic_store(&keys_then_dir, 0);
	spool_io.fdatasync = fdatasync_note;
	spool_io.fsync = fsync_after_keys_fails;
	spool_io.unlinkat = unlinkat_note;
	spool_io.renameat = renameat_note;
}

/*
 * The keys file is created while the directory cannot be synced: the keys
 * stay in the file, and once the directory syncs again the next save syncs
 * it right after its own fdatasync, once (the file's name was not known to
 * be durable until then), and not again for later saves.
 */
static void test_keys_dir_sync_retried_by_the_next_save(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct spool_io saved = spool_io;
	struct spool *sp;

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	watch_dir_syncs_after_keys(t->dir, 1000000);
	for (int i = 0; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	drain_ack(sp); /* segments go: the keys file is created, its directory not synced */
	assert_true(file_size(t->dir, "keys") > SPOOL_SEG_HDR_SIZE); /* kept, not cut back */
	assert_true(atomic_load(&keys_then_dir) > 0); /* tried, failed */

	atomic_store(&dir_sync_fails, 0);
	atomic_store(&keys_then_dir, 0);
	for (int i = 300; i < 600; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	drain_ack(sp); /* several segments go again: the first save syncs the directory */
	assert_int_equal(atomic_load(&keys_then_dir), 1);
	spool_io = saved;
	spool_close(sp);
	all_keys_there(&o, 0, 600);
}

/*
 * A keys file without a header is started again at open through keys.tmp,
 * and neither of the directory syncs after its rename works: the new file
 * is in use all the same (the open does not fail), the first save syncs the
 * directory right after its own fdatasync, and the keys appended are there
 * at the next open.
 */
static void test_keys_rewritten_at_open_when_the_directory_does_not_sync(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct spool_io saved = spool_io;
	struct spool *sp;
	char path[128];
	int fd;

	o.key_ttl_ms = 3600000;
	snprintf(path, sizeof(path), "%s/keys", t->dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0640);
	assert_true(fd >= 0);
	close(fd);
	atomic_store(&renamed_keys, 0);
	atomic_store(&dir_fails_after_rename, 2);
	spool_io.renameat = rename_note;
	spool_io.fsync = fsync_fails_after_rename;
	sp = open_ok(&o);
	assert_int_equal(atomic_load(&renamed_keys), 1);
	assert_int_equal(atomic_load(&dir_fails_after_rename), 0); /* both failed */
	assert_int_equal(file_size(t->dir, "keys"), SPOOL_SEG_HDR_SIZE);
	watch_dir_syncs_after_keys(t->dir, 0);
	for (int i = 0; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	drain_ack(sp);
	assert_int_equal(atomic_load(&keys_then_dir), 1);
	spool_io = saved;
	spool_close(sp);
	all_keys_there(&o, 0, 300);
}

/*
 * The next write (a keys file append) writes one record's header and a byte
 * of its payload, then fails: a torn record whose header holds. The KEY
 * records of the whole append are counted in torn_keys.
 */
static atomic_int tear_next_write;
static int torn_keys;
static ino_t keys_ino; /* the keys file: other writes (.ack files) pass */

static ssize_t tearing_write(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	struct spool_rec_hdr h;
	struct stat st;

	if (fstat(fd, &st) < 0 || st.st_ino != keys_ino ||
	    !atomic_exchange(&tear_next_write, 0))
		return real_io.write(fd, buf, len);
	for (size_t off = 0; off < len; off += SPOOL_REC_HDR_SIZE + h.payload_len) {
		assert_int_equal(spool_rec_parse_hdr(p + off, len - off, &h), SPOOL_REC_OK);
		torn_keys += h.type == SPOOL_REC_KEY;
	}
	assert_int_equal(real_io.write(fd, buf, SPOOL_REC_HDR_SIZE + 1), SPOOL_REC_HDR_SIZE + 1);
	errno = EIO;
	return -1;
}

/*
 * An append to the keys file fails halfway and its cut back fails too: the
 * next append cuts first, so the keys appended after it are not swallowed
 * by the torn record. Only the failed append's keys are lost.
 */
static void test_keys_failed_cut_blocks_appends(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	ssize_t (*saved_write)(int, const void *, size_t) = spool_io.write;
	struct seen s = { 0 };
	struct spool *sp;
	int total = 0;

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	for (int i = 0; i < 300; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	drain_ack(sp); /* the keys file exists */
	assert_true(file_size(t->dir, "keys") > SPOOL_SEG_HDR_SIZE);
	for (int i = 300; i < 600; i++)
		write_keyed(sp, i * 4, i * 4 + 4, wall_ms());
	torn_keys = 0;
	keys_ino = keys_inode(t->dir);
	spool_io.write = tearing_write;
	atomic_store(&tear_next_write, 1);
	atomic_store(&fail_trunc_errno, EIO);
	drain_ack(sp); /* several segments go: the first one's keys fail to append */
	spool_io.write = saved_write;
	assert_int_equal(atomic_load(&tear_next_write), 0);
	assert_int_equal(atomic_load(&fail_trunc_errno), 0);
	assert_true(torn_keys > 0);
	spool_close(sp);

	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	for (int i = 0; i < 600; i++) {
		char key[16];
		snprintf(key, sizeof(key), "k%d", i * 4);
		assert_true(found(&s, key) <= 1);
		total += found(&s, key);
	}
	assert_int_equal(total, 600 - torn_keys);
	spool_close(sp);
}

/* A KEY record for key at ts with sequence seq, at buf; returns its bytes. */
static size_t craft_key(unsigned char *buf, const char *key, int64_t ts, uint64_t seq)
{
	char ids[SPOOL_KEY_ID_LEN];
	struct spool_key k = { .timestamp_ms = ts, .nrecs = 1, .scope = "unix", .scope_len = 4,
		.topic = "t", .topic_len = 1, .key = key, .key_len = strlen(key), .ids = ids };
	size_t n;

	memset(ids, 'A', sizeof(ids));
	n = spool_key_encode(&k, buf);
	spool_rec_set_seq(buf, seq);
	return n;
}

/*
 * Records whose CRCs pass but whose contents do not hold up are dropped,
 * not kept: a KEY record with an empty payload (too short for the
 * timestamp a reader would take from the bytes after it), and one stamped
 * INT64_MIN (its age overflows an int64). With them in the file it is
 * mostly dead, so the open compacts it down to the one live key.
 */
static void test_keys_damaged_records_dropped(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	struct seen s = { 0 };
	unsigned char buf[4096], *p = buf;
	size_t live;
	char path[128];
	struct spool *sp;
	int fd;

	spool_seg_hdr_encode(p, 0, wall_ms());
	p += SPOOL_SEG_HDR_SIZE;
	/* The empty one: a KEY header with payload length 0 (bytes 8-11) and CRC 0 (20-23). */
	craft_key(p, "short", wall_ms(), 10);
	memset(p + 8, 0, 4);
	memset(p + 20, 0, 4);
	spool_rec_set_seq(p, 10); /* the header's CRC again */
	p += SPOOL_REC_HDR_SIZE;
	p += craft_key(p, "ancient", INT64_MIN, 11);
	live = craft_key(p, "live", wall_ms(), 12);
	p += live;
	snprintf(path, sizeof(path), "%s/keys", t->dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0640);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, (size_t)(p - buf)), p - buf);
	close(fd);

	o.key_ttl_ms = 3600000;
	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.keys[0], "live");
	spool_close(sp);
	assert_int_equal(file_size(t->dir, "keys"), SPOOL_SEG_HDR_SIZE + (off_t)live);
}

/* The file offset of the record at index i of a segment (walking the headers). */
static off_t rec_at(int fd, int i)
{
	off_t off = SPOOL_SEG_HDR_SIZE;
	unsigned char h[SPOOL_REC_HDR_SIZE];

	for (; i > 0; i--) {
		assert_int_equal(pread(fd, h, sizeof(h), off), sizeof(h));
		off += SPOOL_REC_HDR_SIZE + (h[8] | h[9] << 8 | h[10] << 16 | (off_t)h[11] << 24);
	}
	return off;
}

/*
 * A key comes back only with its whole batch. A crash during a write over a
 * spare's zeros can keep a batch's key record and lose a sector before it:
 * the first record's header here (zeros), a payload byte of another batch's
 * record there. Both keys are forgotten (a retry writes the batch again);
 * the intact batch's key and every intact record come back. When the
 * segment is deleted, only that key goes to the keys file.
 */
static void test_keys_of_damaged_batches_forgotten(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	static const unsigned char zeros[SPOOL_REC_HDR_SIZE];
	struct seen s = { 0 };
	uint64_t cursor = 0, seqs[16];
	char path[128];
	int nums[16], fd;
	unsigned char b;
	off_t off;
	struct spool *sp;

	o.key_ttl_ms = 3600000;
	sp = open_ok(&o);
	write_keyed(sp, 0, 3, wall_ms()); /* records 0-2, key: index 3 */
	write_keyed(sp, 3, 6, wall_ms()); /* 4-6, key: 7 */
	write_keyed(sp, 6, 8, wall_ms()); /* 8-9, key: 10 */
	assert_int_equal(write_range(sp, 8, 10, NULL), SPOOL_OK);
	spool_close(sp);

	snprintf(path, sizeof(path), "%s/seg-%020d.spool", t->dir, 1);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	off = rec_at(fd, 5) + SPOOL_REC_HDR_SIZE + 10;
	assert_int_equal(pread(fd, &b, 1, off), 1);
	b ^= 0x40;
	assert_int_equal(pwrite(fd, &b, 1, off), 1);
	assert_int_equal(pwrite(fd, zeros, sizeof(zeros), rec_at(fd, 0)), sizeof(zeros));
	close(fd);

	o.on_key = on_key;
	o.on_key_arg = &s;
	sp = open_ok(&o);
	assert_int_equal(s.n, 1);
	assert_string_equal(s.keys[0], "k6");
	assert_int_equal(drain(sp, &cursor, nums, seqs, 16), 8);
	for (int i = 0, want = 1; i < 8; i++, want += want == 3 ? 2 : 1)
		assert_int_equal(nums[i], want); /* 1 2 3 5 6 7 8 9: 0 and 4 lost */
	for (int i = 0; i < 8; i++)
		spool_ack(sp, seqs[i]);
	spool_maintain(sp);
	assert_int_equal(file_size(t->dir, "seg-00000000000000000001.spool"), -1); /* deleted */
	spool_close(sp);

	memset(&s, 0, sizeof(s));
	sp = open_ok(&o); /* the keys file's keys only */
	assert_int_equal(s.n, 1);
	assert_string_equal(s.keys[0], "k6");
	spool_close(sp);
}

static size_t longest_write;

static ssize_t measuring_write(int fd, const void *buf, size_t len)
{
	if (len > longest_write)
		longest_write = len;
	return real_io.write(fd, buf, len);
}

static void count_key(void *arg, uint64_t seq, const struct spool_key *k)
{
	(void)seq;
	(void)k;
	(*(int *)arg)++;
}

/*
 * A compaction holds a chunk of the live records in memory, not all of
 * them: 8 MiB of live keys (and more expired, so that the open compacts)
 * are written in pieces of at most a little over 1 MiB, and all are kept.
 */
static void test_keys_compaction_memory_bounded(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	ssize_t (*saved_write)(int, const void *, size_t) = spool_io.write;
	size_t cap = 32u << 20, live = 0;
	unsigned char *buf = malloc(cap), *p = buf;
	int64_t now = wall_ms();
	uint64_t seq = 1;
	struct spool *sp;
	char path[128], key[32];
	int fd, loaded = 0, nlive = 0;

	assert_non_null(buf);
	spool_seg_hdr_encode(p, 0, now);
	p += SPOOL_SEG_HDR_SIZE;
	while (live < (8u << 20)) {
		size_t n;
		/* One live key, then two expired ones. */
		snprintf(key, sizeof(key), "live-%d", nlive++);
		n = craft_key(p, key, now, seq++);
		live += n;
		p += n;
		for (int j = 0; j < 2; j++)
			p += craft_key(p, "expired", now - 7200000, seq++);
	}
	assert_true((size_t)(p - buf) <= cap);
	snprintf(path, sizeof(path), "%s/keys", t->dir);
	fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0640);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, (size_t)(p - buf)), p - buf);
	close(fd);
	free(buf);

	o.key_ttl_ms = 3600000;
	o.on_key = count_key;
	o.on_key_arg = &loaded;
	spool_io.write = measuring_write;
	sp = open_ok(&o);
	spool_io.write = saved_write;
	spool_close(sp);
	assert_int_equal(loaded, nlive);
	assert_int_equal(file_size(t->dir, "keys"), SPOOL_SEG_HDR_SIZE + (off_t)live);
	assert_true(longest_write <= (2u << 20));
	loaded = 0;
	sp = open_ok(&o);
	assert_int_equal(loaded, nlive);
	spool_close(sp);
}

/*
 * A gate on the spool's reads from any thread but the test's (the writer
 * thread reads nothing): the compaction's thread stops at its first read
 * of the keys file until the test opens it.
 */
static pthread_t test_thread;
static ino_t gate_ino; /* the keys file the compaction reads */
static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_closed, gate_reached;

static ssize_t gated_pread(int fd, void *buf, size_t len, off_t off)
{
	if (!pthread_equal(pthread_self(), test_thread)) {
		pthread_mutex_lock(&gate_mu);
		gate_reached = true;
		pthread_cond_broadcast(&gate_cv);
		while (gate_closed)
			pthread_cond_wait(&gate_cv, &gate_mu);
		pthread_mutex_unlock(&gate_mu);
	}
	return pread(fd, buf, len, off);
}

static bool gate_was_reached(void)
{
	bool reached;

	pthread_mutex_lock(&gate_mu);
	reached = gate_reached;
	pthread_mutex_unlock(&gate_mu);
	return reached;
}

static void gate_open(void)
{
	pthread_mutex_lock(&gate_mu);
	gate_closed = false;
	pthread_cond_broadcast(&gate_cv);
	pthread_mutex_unlock(&gate_mu);
}

/*
 * An open spool whose keys file is past 1 MiB with its oldest keys expired:
 * the next save starts a compaction, which stops at the gate. Returns the
 * spool; *next: the next keyed_round's start.
 */
static struct spool *compaction_at_the_gate(struct tmp *t, struct spool_opts *o, int *next)
{
	struct spool *sp;
	int64_t expiring;
	int i = 0;

	o->key_ttl_ms = 2000;
	/* Closed from the start: a slow machine may start the compaction early. */
	test_thread = pthread_self();
	gate_closed = true;
	gate_reached = false;
	spool_pread = gated_pread;
	sp = open_ok(o);
	expiring = wall_ms() + 5000 - o->key_ttl_ms;
	for (; i < 20; i++)
		write_keyed(sp, i * 4, i * 4 + 4, expiring);
	for (; file_size(t->dir, "keys") <= (1 << 20) + (64 << 10); i += 20)
		keyed_round(sp, i, 3600000);
	while (wall_ms() <= expiring + o->key_ttl_ms)
		usleep(50 * 1000);
	gate_ino = keys_inode(t->dir);
	for (ino_t ino = gate_ino; !gate_was_reached(); i += 20) {
		keyed_round(sp, i, 3600000);
		assert_true(keys_inode(t->dir) == ino);
		assert_true(file_size(t->dir, "keys") < 16 << 20); /* it did start */
	}
	*next = i;
	return sp;
}

/*
 * The compaction runs on its own thread: while it is held, keys go on
 * being saved to the old file, and once it is let go the new file has them
 * too (copied after the walk), the expired ones gone, no keys.tmp left.
 */
static void test_keys_compacted_on_its_own_thread(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	ssize_t (*saved)(int, void *, size_t, off_t) = spool_pread;
	struct spool *sp;
	int64_t deadline;
	off_t held;
	int i;

	sp = compaction_at_the_gate(t, &o, &i);
	held = file_size(t->dir, "keys");
	/* Saved meanwhile: rounds until segments went, and a few more. */
	for (int rounds = 0, more = 3; more > 0; i += 20, rounds++) {
		keyed_round(sp, i, 3600000);
		more -= file_size(t->dir, "keys") > held;
		assert_true(rounds < 100);
	}
	assert_true(keys_inode(t->dir) == gate_ino);
	assert_true(file_size(t->dir, "keys.tmp") >= SPOOL_SEG_HDR_SIZE);
	held = file_size(t->dir, "keys");
	gate_open();
	deadline = wall_ms() + 20000;
	while (keys_inode(t->dir) == gate_ino && wall_ms() < deadline) {
		spool_maintain(sp); /* installs it once the thread is done */
		usleep(10 * 1000);
	}
	spool_pread = saved;
	assert_true(keys_inode(t->dir) != gate_ino);
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	assert_true(file_size(t->dir, "keys") < held); /* without the expired keys */
	/* Saved to the new file after it: its size was counted right. */
	held = file_size(t->dir, "keys");
	for (int rounds = 0; file_size(t->dir, "keys") == held; i += 20, rounds++) {
		keyed_round(sp, i, 3600000);
		assert_true(rounds < 100);
	}
	spool_close(sp);
	all_keys_there(&o, 20, i);
}

static void *open_gate_later(void *arg)
{
	(void)arg;
	usleep(200 * 1000);
	gate_open();
	return NULL;
}

/*
 * A compaction still running when the spool closes is given up: the old
 * file stays, every key in it, and keys.tmp is gone. (The gate opens a
 * moment later, whatever the close did meanwhile: it is given up either way.)
 */
static void test_keys_compaction_given_up_at_close(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	ssize_t (*saved)(int, void *, size_t, off_t) = spool_pread;
	struct spool *sp;
	pthread_t opener;
	int i;

	sp = compaction_at_the_gate(t, &o, &i);
	assert_int_equal(pthread_create(&opener, NULL, open_gate_later, NULL), 0);
	spool_close(sp); /* waits for the thread, which sees it must stop */
	pthread_join(opener, NULL);
	spool_pread = saved;
	assert_true(keys_inode(t->dir) == gate_ino);
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	all_keys_there(&o, 20, i);
}

/* keys.tmp's fdatasync fails once (on the compaction's thread). */
static atomic_int tmp_sync_failures;
static char tmp_path[160];

static int fdatasync_fail_tmp(int fd)
{
	struct stat a, b;

	if (fstat(fd, &a) == 0 && stat(tmp_path, &b) == 0 && a.st_ino == b.st_ino &&
	    atomic_fetch_add(&tmp_sync_failures, 1) == 0) {
		errno = EIO;
		return -1;
	}
	return real_io.fdatasync(fd);
}

static atomic_int tmp_creates;

static int openat_count_tmp(int dirfd, const char *path, int flags, mode_t mode)
{
	if (strcmp(path, "keys.tmp") == 0)
		atomic_fetch_add(&tmp_creates, 1);
	return real_io.openat(dirfd, path, flags, mode);
}

/*
 * The compaction's thread fails (its sync of keys.tmp): keys.tmp goes,
 * `keys` stays with every key, and the compaction waits its minute rather
 * than starting again on the next save.
 */
static void test_keys_compaction_thread_fails(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	ssize_t (*saved_pread)(int, void *, size_t, off_t) = spool_pread;
	int (*saved_sync)(int) = spool_io.fdatasync;
	int (*saved_open)(int, const char *, int, mode_t) = spool_io.openat;
	struct spool *sp;
	int64_t deadline;
	int i;

	snprintf(tmp_path, sizeof(tmp_path), "%s/keys.tmp", t->dir);
	atomic_store(&tmp_sync_failures, 0);
	sp = compaction_at_the_gate(t, &o, &i);
	spool_io.fdatasync = fdatasync_fail_tmp;
	gate_open();
	deadline = wall_ms() + 20000;
	while (file_size(t->dir, "keys.tmp") >= 0 && wall_ms() < deadline) {
		spool_maintain(sp); /* drops it once the thread is done */
		usleep(10 * 1000);
	}
	spool_io.fdatasync = saved_sync;
	spool_pread = saved_pread;
	assert_int_equal(atomic_load(&tmp_sync_failures), 1);
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	assert_true(keys_inode(t->dir) == gate_ino);
	/* Still due, but not tried again within the minute. */
	atomic_store(&tmp_creates, 0);
	spool_io.openat = openat_count_tmp;
	for (int end = i + 100; i < end; i += 20)
		keyed_round(sp, i, 3600000);
	spool_io.openat = saved_open;
	assert_int_equal(atomic_load(&tmp_creates), 0);
	spool_close(sp);
	all_keys_there(&o, 20, i);
}

/* The next write to the keys file fails whole (ENOSPC), once. */
static atomic_int fail_keys_write;

static ssize_t write_fail_keys(int fd, const void *buf, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) == 0 && st.st_ino == gate_ino && atomic_exchange(&fail_keys_write, 0)) {
		errno = ENOSPC;
		return -1;
	}
	return real_io.write(fd, buf, len);
}

/* Opens the gate once the failing write happened: the thread is held until then. */
static void *open_gate_after_failed_write(void *arg)
{
	(void)arg;
	for (int i = 0; i < 6000 && atomic_load(&fail_keys_write); i++)
		usleep(10 * 1000);
	gate_open();
	return NULL;
}

/*
 * An append to `keys` fails while a compaction runs (whose keys.tmp may be
 * what filled the disk): the compaction is given up, keys.tmp removed, and
 * the append tried again: no key of it is lost.
 */
static void test_keys_failed_append_gives_compaction_up(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 64 << 10);
	ssize_t (*saved_pread)(int, void *, size_t, off_t) = spool_pread;
	ssize_t (*saved_write)(int, const void *, size_t) = spool_io.write;
	struct spool *sp;
	pthread_t opener;
	off_t held;
	int i;

	sp = compaction_at_the_gate(t, &o, &i);
	held = file_size(t->dir, "keys");
	atomic_store(&fail_keys_write, 1);
	spool_io.write = write_fail_keys;
	/* Giving up joins the thread, which waits at the gate until it opens. */
	assert_int_equal(pthread_create(&opener, NULL, open_gate_after_failed_write, NULL), 0);
	for (int rounds = 0; atomic_load(&fail_keys_write); i += 20, rounds++) {
		keyed_round(sp, i, 3600000);
		assert_true(rounds < 100);
	}
	pthread_join(opener, NULL);
	spool_io.write = saved_write;
	spool_pread = saved_pread;
	assert_int_equal(file_size(t->dir, "keys.tmp"), -1);
	assert_true(keys_inode(t->dir) == gate_ino);
	assert_true(file_size(t->dir, "keys") > held); /* the failed append, tried again */
	spool_close(sp);
	all_keys_there(&o, 20, i);
}

/* A test that failed with the gate closed must not hold the next one's reads. */
static int teardown_gate(void **state)
{
	gate_open();
	spool_pread = test_pread;
	return teardown(state);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_keys_not_produced_and_loaded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_outlive_their_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_expire_and_compact, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_acks_read_back, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_torn_tail_and_tmp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_torn_tail_then_tool_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_compact_twice_in_one_run, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_failed_compaction_waits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_not_compacted_while_nothing_expired, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_keys_empty_file_gets_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_dir_sync_fails_after_rename, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(
		    test_keys_rewritten_at_open_when_the_directory_does_not_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_dir_sync_retried_by_the_next_save, setup,
		    teardown),
		cmocka_unit_test_setup_teardown(test_keys_failed_cut_blocks_appends, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_damaged_records_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_of_damaged_batches_forgotten, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_compaction_memory_bounded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_compacted_on_its_own_thread, setup,
		    teardown_gate),
		cmocka_unit_test_setup_teardown(test_keys_compaction_given_up_at_close, setup,
		    teardown_gate),
		cmocka_unit_test_setup_teardown(test_keys_compaction_thread_fails, setup,
		    teardown_gate),
		cmocka_unit_test_setup_teardown(test_keys_failed_append_gives_compaction_up, setup,
		    teardown_gate),
	};
	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
