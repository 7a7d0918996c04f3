/*
 * test_spool_recover: recovery from the damaged spools in tests/fixtures/spool/ and the start-up cost of a large backlog.
 * Helpers and the message numbering: test_spool_util.h.
 */
#include "config.h"

#include <dirent.h>
#include <stdbool.h>
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
#include "spool_rec.h"

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
	{ "zero-tail", { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 0, 0 }, /* zeros: cut, not torn */
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

/* --- records inside a message never become records (torn tail, damage) ------------ */

/* An encoded record of topic "evil" with sequence seq, as a publisher could send it. */
static size_t forged_record(unsigned char *buf, size_t cap, uint64_t seq)
{
	struct spool_hdr h = { "ackd-id", 7, "forged", 6 };
	struct spool_msg m = { .topic = "evil", .topic_len = 4, .partition = 0, .value = "x",
		.value_len = 1, .hdrs = &h, .nhdrs = 1, .timestamp_ms = 1 };
	size_t len = spool_rec_size(&m);

	assert_true(len > 0 && len <= cap);
	spool_rec_encode(&m, buf);
	spool_rec_set_seq(buf, seq);
	return len;
}

/* Write messages 1 and 2, then message 3 whose value holds a forged record. */
static void write_with_forgery(struct spool *sp, uint64_t forged_seq, size_t *value_len)
{
	static unsigned char value[4096];
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, SPOOL_OK, 0 };
	struct spool_batch *b = spool_batch_new(3);
	struct spool_hdr h = { "ackd-id", 7, "id-3", 4 };
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = 0, .key = "k3",
		.key_len = 2, .hdrs = &h, .nhdrs = 1, .timestamp_ms = 1700000000003 };
	size_t n;

	add_msg(b, 1);
	add_msg(b, 2);
	memset(value, 'a', sizeof(value));
	n = forged_record(value + 100, sizeof(value) - 100, forged_seq);
	(void)n;
	m.value = (const char *)value;
	m.value_len = sizeof(value);
	assert_int_equal(spool_batch_add(b, &m), 0);
	assert_int_equal(spool_submit(sp, b, waiter_done, &w), SPOOL_OK);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(w.err, SPOOL_OK);
	*value_len = sizeof(value);
}

/* The records handed out are messages 1, 2 and, with four, 4; never "evil". */
static void expect_msgs(struct spool *sp, bool four)
{
	const int want[] = { 1, 2, 4 };
	struct spool_rec *r;
	uint64_t cursor = 0;
	int n = 0;

	while (spool_next(sp, &cursor, &r) == 1) {
		if (r->msg.topic_len == 4 && memcmp(r->msg.topic, "evil", 4) == 0)
			fail_msg("a record inside a message's value was handed out (seq %lu)",
			    (unsigned long)r->seq);
		assert_true(n < 3);
		assert_int_equal(msg_num(r), want[n]);
		n++;
		spool_rec_free(r);
	}
	assert_int_equal(n, four ? 3 : 2);
}

/*
 * kill -9 in the middle of a large write: the newest segment ends inside
 * message 3, after a complete record embedded in its value. Recovery cuts
 * the torn tail at message 3's header and never reads inside it.
 */
static void torn_tail_with_embedded_record(const char *dir, uint64_t forged_seq)
{
	struct spool_opts o = opts_for(dir, 0);
	struct spool_stats st;
	struct spool *sp;
	char path[256];
	size_t value_len;
	off_t size;

	sp = open_ok(&o);
	write_with_forgery(sp, forged_seq, &value_len);
	spool_close(sp);
	size = file_size(dir, "seg-00000000000000000001.spool");
	assert_true(size > 2000);
	/* Cut after the embedded record, inside message 3's value. */
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", dir);
	assert_int_equal(truncate(path, size - 2000), 0);

	sp = open_ok(&o);
	expect_msgs(sp, false);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 2);
	assert_true(st.torn_bytes > 0);
	spool_close(sp);
}

static void test_torn_tail_forged_plausible(void **state)
{
	struct tmp *t = *state;
	torn_tail_with_embedded_record(t->dir, 4);
}

/* A forged sequence of 2^40 would need a 128 GiB bitmap: the spool must still open. */
static void test_torn_tail_forged_huge_seq(void **state)
{
	struct tmp *t = *state;
	torn_tail_with_embedded_record(t->dir, UINT64_C(1) << 40);
}

/*
 * Damage in the middle: message 3 is whole and its header CRC valid, but
 * its sequence is out of place (1, as a stray write could leave). The
 * reader skips it whole, resumes at message 4, and never accepts the
 * record inside its value.
 */
static void test_middle_damage_skips_whole_record(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool *sp;
	size_t value_len;
	char path[256];
	unsigned char hdr[SPOOL_REC_HDR_SIZE];
	off_t off;
	int fd;

	sp = open_ok(&o);
	write_with_forgery(sp, 4, &value_len);
	assert_int_equal(write_range(sp, 4, 5, NULL), SPOOL_OK);
	spool_close(sp);
	/* Rewrite message 3's header with sequence 1 (and a valid CRC). */
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", t->dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	/* Find it by scanning for the third record header from the start. */
	{
		unsigned char buf[SPOOL_REC_HDR_SIZE];
		struct spool_rec_hdr h;
		off = SPOOL_SEG_HDR_SIZE;
		for (int i = 0; i < 2; i++) {
			assert_int_equal(pread(fd, buf, sizeof(buf), off), (ssize_t)sizeof(buf));
			assert_int_equal(spool_rec_parse_hdr(buf, sizeof(buf), &h), SPOOL_REC_SHORT);
			off += SPOOL_REC_HDR_SIZE + h.payload_len;
		}
	}
	assert_int_equal(pread(fd, hdr, sizeof(hdr), off), (ssize_t)sizeof(hdr));
	spool_rec_set_seq(hdr, 1);
	assert_int_equal(pwrite(fd, hdr, sizeof(hdr), off), (ssize_t)sizeof(hdr));
	close(fd);

	sp = open_ok(&o);
	expect_msgs(sp, true);
	spool_close(sp);
}

/*
 * Disk damage in the middle: message 3's header is damaged (its magic), so
 * the scan walks into its value, which holds a complete valid record with
 * sequence forged_seq. It must not be handed out, and it must not make the
 * records after message 3 look out of sequence: messages 1, 2 and 4..9 come
 * back, only message 3 is lost.
 */
static void header_damage_with_embedded_record(const char *dir, uint64_t forged_seq)
{
	struct spool_opts o = opts_for(dir, 0);
	struct spool_stats st;
	struct spool_rec *r;
	struct spool *sp;
	size_t value_len;
	char path[256];
	unsigned char buf[SPOOL_REC_HDR_SIZE];
	struct spool_rec_hdr h;
	uint64_t cursor = 0;
	off_t off = SPOOL_SEG_HDR_SIZE;
	int fd, n = 0;
	const int want[] = { 1, 2, 4, 5, 6, 7, 8, 9 };

	sp = open_ok(&o);
	write_with_forgery(sp, forged_seq, &value_len);
	assert_int_equal(write_range(sp, 4, 10, NULL), SPOOL_OK);
	spool_close(sp);

	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pread(fd, buf, sizeof(buf), off), (ssize_t)sizeof(buf));
		assert_int_equal(spool_rec_parse_hdr(buf, sizeof(buf), &h), SPOOL_REC_SHORT);
		off += SPOOL_REC_HDR_SIZE + h.payload_len;
	}
	assert_int_equal(pwrite(fd, "X", 1, off), 1); /* message 3's magic */
	close(fd);

	sp = open_ok(&o);
	while (spool_next(sp, &cursor, &r) == 1) {
		if (r->msg.topic_len == 4 && memcmp(r->msg.topic, "evil", 4) == 0)
			fail_msg("a record inside a message's value was handed out (seq %lu)",
			    (unsigned long)r->seq);
		assert_true(n < 8);
		assert_int_equal(msg_num(r), want[n]);
		n++;
		spool_rec_free(r);
	}
	assert_int_equal(n, 8);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 8);
	assert_int_equal(st.damaged, 1);
	spool_close(sp);
}

/* The forged record claims the sequence of the record after message 3. */
static void test_header_damage_forged_next(void **state)
{
	struct tmp *t = *state;
	header_damage_with_embedded_record(t->dir, 4);
}

/* The forged record claims a later sequence the old bound allowed. */
static void test_header_damage_forged_later(void **state)
{
	struct tmp *t = *state;
	header_damage_with_embedded_record(t->dir, 7);
}

/*
 * The same with a 1 MiB value packed with forged records (runs of
 * consecutive sequences, separated by filler): every forged header is
 * rejected, and each is walked from at most once, so the open stays fast.
 */
static void test_header_damage_many_forged(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	enum { VLEN = 1 << 20 };
	unsigned char *value = malloc(VLEN);
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, SPOOL_OK, 0 };
	struct spool_batch *b = spool_batch_new(3);
	struct spool_hdr hd = { "ackd-id", 7, "id-3", 4 };
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = 0, .key = "k3",
		.key_len = 2, .hdrs = &hd, .nhdrs = 1, .timestamp_ms = 1700000000003 };
	struct spool_stats st;
	struct spool_rec *r;
	struct spool *sp;
	unsigned char buf[SPOOL_REC_HDR_SIZE];
	struct spool_rec_hdr h;
	char path[256];
	uint64_t cursor = 0, forged = 0;
	off_t off = SPOOL_SEG_HDR_SIZE;
	size_t at = 0;
	int64_t t0;
	int fd, n = 0;

	assert_non_null(value);
	memset(value, 'a', VLEN);
	for (uint64_t seq = 3; at + 200 < VLEN; seq++) {
		at += forged_record(value + at, VLEN - at, seq % 64 + 3);
		if (seq % 7 == 0)
			at += 13; /* filler between runs */
		forged++;
	}
	add_msg(b, 1);
	add_msg(b, 2);
	m.value = (const char *)value;
	m.value_len = VLEN;
	assert_int_equal(spool_batch_add(b, &m), 0);
	sp = open_ok(&o);
	assert_int_equal(spool_submit(sp, b, waiter_done, &w), SPOOL_OK);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(w.err, SPOOL_OK);
	assert_int_equal(write_range(sp, 4, 10, NULL), SPOOL_OK);
	spool_close(sp);
	free(value);

	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", t->dir);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(pread(fd, buf, sizeof(buf), off), (ssize_t)sizeof(buf));
		assert_int_equal(spool_rec_parse_hdr(buf, sizeof(buf), &h), SPOOL_REC_SHORT);
		off += SPOOL_REC_HDR_SIZE + h.payload_len;
	}
	assert_int_equal(pwrite(fd, "X", 1, off), 1);
	close(fd);

	t0 = now_ms();
	sp = open_ok(&o);
	while (spool_next(sp, &cursor, &r) == 1) {
		assert_false(r->msg.topic_len == 4 && memcmp(r->msg.topic, "evil", 4) == 0);
		n++;
		spool_rec_free(r);
	}
	print_message("%lu forged records in a damaged 1 MiB message: open and read in %ld ms\n",
	    (unsigned long)forged, (long)(now_ms() - t0));
	assert_int_equal(n, 8);
	spool_stats(sp, &st);
	assert_int_equal(st.damaged, 1);
	spool_close(sp);
}

/*
 * An empty last segment is reused at start-up and its .ack file removed (it
 * can only name records that never reached the disk). The acknowledgements
 * of the new run must land in a file that exists: after a reopen, the
 * acknowledged records stay acknowledged.
 */
static void test_reused_segment_keeps_acks(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool_stats st;
	struct spool *sp;
	unsigned char entry[SPOOL_ACK_ENTRY_SIZE];
	uint64_t first, cursor = 0, seqs[8];
	int nums[8], fd;
	char path[256];

	sp = open_ok(&o); /* creates the empty segment 1 */
	spool_close(sp);
	/* A .ack file left by a run whose record 1 never reached the disk. */
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.ack", t->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	assert_true(fd >= 0);
	spool_ack_entry_encode(entry, 1);
	assert_int_equal(write(fd, entry, sizeof(entry)), (ssize_t)sizeof(entry));
	close(fd);

	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 1, 4, &first), SPOOL_OK);
	assert_int_equal(first, 1); /* the empty segment was reused */
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 3);
	for (int i = 0; i < 3; i++)
		spool_ack(sp, seqs[i]);
	spool_maintain(sp);
	spool_close(sp);
	assert_int_equal(file_size(t->dir, "seg-00000000000000000001.ack"), 3 * SPOOL_ACK_ENTRY_SIZE);

	sp = open_ok(&o);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 0);
	spool_close(sp);
}

/*
 * A segment file too short to hold a header, after the real newest segment,
 * is removed before recovery decides which segment is the newest. Otherwise
 * the real newest one is scanned by record headers only, its torn tail stays
 * on disk, and a record written in front of it later makes the old bytes
 * come back as records at the next open.
 */
static void test_short_segment_after_newest(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	static const char junk[] = "AKSR-torn";
	struct spool_stats st;
	struct spool *sp;
	uint64_t first, cursor = 0, seqs[8];
	int nums[8], fd;
	off_t before;
	char path[256];

	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 1, 4, &first), SPOOL_OK);
	spool_close(sp);
	before = file_size(t->dir, "seg-00000000000000000001.spool");
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", t->dir);
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000009.spool", t->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	assert_true(fd >= 0);
	close(fd);

	sp = open_ok(&o);
	spool_stats(sp, &st);
	assert_true(st.torn_bytes > 0); /* segment 1 was scanned as the newest */
	assert_true(file_size(t->dir, "seg-00000000000000000001.spool") < before + (off_t)sizeof(junk));
	assert_int_equal(file_size(t->dir, "seg-00000000000000000009.spool"), -1);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 3);
	spool_close(sp);
}

/*
 * A FAILED record (the kind failed/ logs hold) found in a segment, with
 * intact CRCs and the next sequence, is damage: it is never handed out, or
 * its bytes and its ackd-failed-reason header would be produced to Kafka.
 */
static void test_failed_record_in_segment(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	static const struct spool_hdr reason = { SPOOL_HDR_FAILED_REASON, 18, "rejected", 8 };
	static const struct spool_msg m = {
		.topic = "evil", .topic_len = 4, .partition = -1, .value = "failed", .value_len = 6,
		.hdrs = &reason, .nhdrs = 1, .timestamp_ms = 1700000000000,
	};
	unsigned char buf[256];
	struct spool_stats st;
	struct spool *sp;
	uint64_t first, cursor = 0, seqs[8];
	int nums[8], fd;
	size_t len;
	char path[256];

	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 1, 4, &first), SPOOL_OK);
	spool_close(sp);
	assert_true(spool_rec_size(&m) <= sizeof(buf));
	len = spool_rec_encode_type(&m, SPOOL_REC_FAILED, buf);
	spool_rec_set_seq(buf, 4);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", t->dir);
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);

	sp = open_ok(&o);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 3);
	for (int i = 0; i < 3; i++)
		assert_int_equal(nums[i], i + 1);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 3);
	spool_close(sp);
}

/*
 * The newest segment ends with a record whose CRCs hold but whose payload
 * is empty. Recovery must not peek a timestamp past it (a heap over-read,
 * caught under --enable-asan); the reader then finds the payload malformed
 * and counts the record lost.
 */
static void test_empty_payload_at_end(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	unsigned char buf[SPOOL_REC_HDR_SIZE] = { 0 }, full[256];
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = -1 };
	struct spool_stats st;
	struct spool *sp;
	uint64_t first, cursor = 0, seqs[8];
	int nums[8], fd;
	char path[256];

	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 1, 4, &first), SPOOL_OK);
	spool_close(sp);
	/* A message's header, then payload length 0 and the CRC of nothing. */
	assert_true(spool_rec_size(&m) <= sizeof(full));
	assert_true(spool_rec_encode(&m, full) > SPOOL_REC_HDR_SIZE);
	memcpy(buf, full, SPOOL_REC_HDR_SIZE);
	memset(buf + 8, 0, 4);
	memset(buf + 20, 0, 4);
	spool_rec_set_seq(buf, 4);
	snprintf(path, sizeof(path), "%s/seg-00000000000000000001.spool", t->dir);
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, sizeof(buf)), (ssize_t)sizeof(buf));
	close(fd);

	sp = open_ok(&o);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 3);
	spool_stats(sp, &st);
	assert_int_equal(st.records, 3);
	assert_int_equal(st.damaged, 1);
	spool_close(sp);
}

/*
 * A file named seg-18446744073709551615.spool is no segment: recovery must
 * not continue at sequence 2^64-1, where an appended record is committed
 * but never handed out (the cursor cannot pass it).
 */
static void test_segment_name_at_seq_max(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	static const char junk[64] = "not a segment";
	struct spool *sp;
	uint64_t first, cursor = 0, seqs[8];
	int nums[8], fd;
	char path[256];

	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 1, 4, &first), SPOOL_OK);
	spool_close(sp);
	snprintf(path, sizeof(path), "%s/seg-18446744073709551615.spool", t->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);

	sp = open_ok(&o);
	assert_int_equal(write_range(sp, 4, 5, &first), SPOOL_OK);
	assert_int_equal(first, 4);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 8), 4);
	assert_int_equal(nums[3], 4);
	assert_int_equal(seqs[3], 4);
	spool_close(sp);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test_setup_teardown(test_startup_1m, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_forged_plausible, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_tail_forged_huge_seq, setup, teardown),
		cmocka_unit_test_setup_teardown(test_middle_damage_skips_whole_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_damage_forged_next, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_damage_forged_later, setup, teardown),
		cmocka_unit_test_setup_teardown(test_header_damage_many_forged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reused_segment_keeps_acks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_segment_after_newest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_record_in_segment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_payload_at_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_segment_name_at_seq_max, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
