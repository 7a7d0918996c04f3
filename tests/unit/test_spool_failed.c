/*
 * test_spool_failed: failed/, the records Kafka rejected: torn tails of a
 * failed/ log repaired at open, retries when failed/ cannot be written, a
 * reason that never makes a record unwritable, an unfiled dead letter
 * deleted instead of filed.
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

/* failed/ of segment 1 holds want whole records and no damage. */
static void expect_failed_log(const char *dir, size_t want)
{
	size_t records, damage;

	read_failed_log(dir, &records, &damage);
	assert_int_equal(records, want);
	assert_int_equal(damage, 0);
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
	assert_int_equal(spool_fail(sp, seqs[0], "rejected"), SPOOL_FAIL_FILED);
	assert_int_equal(spool_fail(sp, seqs[1], "rejected"), SPOOL_FAIL_FILED);
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
	expect_failed_log(t->dir, 2);
}

/* --- failed/ cannot be written: retried ----------------------------------------------- */

static atomic_int fail_failed_write; /* appends to failed/ fail with ENOSPC while set */

static ssize_t enospc_write(int fd, const void *buf, size_t len)
{
	char link[64], path[512];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n > 0 && atomic_load(&fail_failed_write)) {
		path[n] = 0;
		if (strstr(path, "/failed/")) {
			errno = ENOSPC;
			return -1;
		}
	}
	return real_io.write(fd, buf, len);
}

/* Maintain until done(stats, want), at most timeout_ms. */
static bool wait_stats(struct spool *sp, bool (*done)(const struct spool_stats *, uint64_t),
    uint64_t want, int64_t timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	struct spool_stats st;

	for (;;) {
		spool_maintain(sp);
		spool_stats(sp, &st);
		if (done(&st, want))
			return true;
		if (now_ms() > deadline)
			return false;
		usleep(20000);
	}
}

static bool failed_reached(const struct spool_stats *st, uint64_t want)
{
	return st->failed >= want;
}

static bool records_left(const struct spool_stats *st, uint64_t want)
{
	return st->records == want;
}

/* Maintain until failed/ holds want records, at most timeout_ms. */
static bool wait_failed(struct spool *sp, uint64_t want, int64_t timeout_ms)
{
	return wait_stats(sp, failed_reached, want, timeout_ms);
}

/*
 * spool_fail() of seq while every read fails: taken over for retry, and
 * nothing is done (done(stats, want) stays false) until reads work again;
 * live records are in the spool meanwhile, none counted as damaged.
 */
static void fail_while_unreadable(struct spool *sp, uint64_t seq, uint64_t live,
    bool (*done)(const struct spool_stats *, uint64_t), uint64_t want)
{
	struct spool_stats st;

	atomic_store(&fail_read_errno, EIO);
	assert_int_equal(spool_fail(sp, seq, "rejected"), SPOOL_FAIL_LATER);
	assert_false(wait_stats(sp, done, want, 300));
	atomic_store(&fail_read_errno, 0);
	spool_stats(sp, &st);
	assert_int_equal(st.records, live);
	assert_int_equal(st.damaged, 0);
}

/*
 * Kafka rejected a record and failed/ is full (ENOSPC): the spool keeps
 * the record and writes it to failed/ later, with backoff, once it can.
 */
static void test_fail_retried_after_enospc(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool_stats st;
	struct spool *sp = open_ok(&o);
	ssize_t (*saved)(int, const void *, size_t) = spool_io.write;
	uint64_t seqs[4], cursor = 0;
	int nums[4];

	assert_int_equal(write_range(sp, 1, 3, NULL), SPOOL_OK);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 4), 2);
	spool_io.write = enospc_write;
	atomic_store(&fail_failed_write, 1);
	assert_int_equal(spool_fail(sp, seqs[0], "rejected"), SPOOL_FAIL_LATER); /* taken over: retried */
	spool_stats(sp, &st);
	assert_int_equal(st.failed, 0);
	assert_int_equal(st.records, 2); /* still in the spool */
	assert_false(wait_failed(sp, 1, 300));
	atomic_store(&fail_failed_write, 0);
	assert_true(wait_failed(sp, 1, 10000));
	spool_io.write = saved;
	spool_stats(sp, &st);
	assert_int_equal(st.records, 1);
	spool_close(sp);
	expect_failed_log(t->dir, 1);
}

/*
 * Kafka rejected a record and it cannot be read just then (EIO): it is not
 * gone, so spool_fail() takes it over for retry, and maintenance files it
 * once it reads again.
 */
static void test_fail_retried_after_read_error(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool_stats st;
	struct spool *sp = open_ok(&o);
	uint64_t seqs[4], cursor = 0;
	int nums[4];

	assert_int_equal(write_range(sp, 1, 3, NULL), SPOOL_OK);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 4), 2);
	fail_while_unreadable(sp, seqs[0], 2, failed_reached, 1);
	assert_true(wait_failed(sp, 1, 10000));
	spool_stats(sp, &st);
	assert_int_equal(st.records, 1);
	spool_close(sp);
	expect_failed_log(t->dir, 1);
}

/* --- an unfiled dead letter is deleted, not filed -------------------------------------- */

/* Maintain until the spool holds want records, at most timeout_ms. */
static bool wait_records(struct spool *sp, uint64_t want, int64_t timeout_ms)
{
	return wait_stats(sp, records_left, want, timeout_ms);
}

/*
 * A dead letter written after spool_batch_set_unfiled() (an earlier one of
 * its message is kept): spool_fail() acknowledges it and files nothing,
 * also when it could first not be read and the retry decides.
 */
static void test_unfiled_dead_letter_deleted_not_filed(void **state)
{
	struct tmp *t = *state;
	struct spool_opts o = opts_for(t->dir, 0);
	struct spool_batch *b = spool_batch_new(2);
	struct spool_stats st;
	struct spool *sp = open_ok(&o);
	uint64_t seqs[4], cursor = 0, first;
	int nums[4];

	assert_int_equal(write_range(sp, 1, 2, NULL), SPOOL_OK);
	add_msg(b, 2);
	add_msg(b, 3);
	spool_batch_set_unfiled(b);
	assert_int_equal(write_batch(sp, b, &first), SPOOL_OK);
	assert_int_equal(drain(sp, &cursor, nums, seqs, 4), 3);
	assert_int_equal(spool_fail(sp, seqs[0], "rejected"), SPOOL_FAIL_FILED);
	assert_int_equal(spool_fail(sp, seqs[1], "rejected"), SPOOL_FAIL_DELETED);
	spool_stats(sp, &st);
	assert_int_equal(st.failed, 1);
	assert_int_equal(st.records, 1);

	fail_while_unreadable(sp, seqs[2], 1, records_left, 0);
	assert_true(wait_records(sp, 0, 10000));
	spool_stats(sp, &st);
	assert_int_equal(st.failed, 1);
	spool_close(sp);
	expect_failed_log(t->dir, 1);
}

/* --- a reason never makes a record unwritable -------------------------------------------- */

/* Fail a message whose payload is room bytes short of the maximum; its failed/ record. */
static void fail_big(const char *dir, size_t room, const char *reason, char *got_reason,
    size_t got_len, uint16_t *flags)
{
	struct spool_opts o = opts_for(dir, 0);
	struct spool_stats st;
	struct spool *sp = open_ok(&o);
	struct spool_hdr h = { "ackd-id", 7, "id-1", 4 };
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = 0, .hdrs = &h,
		.nhdrs = 1, .timestamp_ms = 1, .value = "" };
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, SPOOL_OK, 0 };
	struct spool_batch *b = spool_batch_new(1);
	struct spool_rec *r;
	const struct spool_ro_file *files;
	struct spool_ro_iter *it;
	struct spool_ro_item item;
	struct spool_ro *ro;
	uint64_t cursor = 0;
	char *value;
	char err[256];

	/* spool_rec_size() of an empty value is the overhead. */
	m.value_len = SPOOL_REC_MAX_PAYLOAD + SPOOL_REC_HDR_SIZE - spool_rec_size(&m) - room;
	value = malloc(m.value_len);
	assert_non_null(value);
	memset(value, 'v', m.value_len);
	m.value = value;
	assert_int_equal(spool_batch_add(b, &m), 0);
	free(value);
	assert_int_equal(spool_submit(sp, b, waiter_done, &w), SPOOL_OK);
	pthread_mutex_lock(&w.mu);
	while (!w.done)
		pthread_cond_wait(&w.cv, &w.mu);
	pthread_mutex_unlock(&w.mu);
	assert_int_equal(w.err, SPOOL_OK);
	assert_int_equal(spool_next(sp, &cursor, &r), 1);
	assert_int_equal(spool_fail(sp, r->seq, reason), SPOOL_FAIL_FILED);
	spool_rec_free(r);
	spool_stats(sp, &st);
	assert_int_equal(st.failed, 1);
	assert_int_equal(st.records, 0);
	spool_close(sp);

	assert_int_equal(spool_ro_open(dir, &ro, err, sizeof(err)), 0);
	assert_int_equal(spool_ro_failed(ro, &files), 1);
	assert_int_equal(spool_ro_iter_new(ro, &files[0], 0, &it), 0);
	assert_int_equal(spool_ro_iter_next(it, &item), 1);
	assert_int_equal(item.kind, SPOOL_RO_RECORD);
	assert_int_equal(item.rec->msg.value_len, SPOOL_REC_MAX_PAYLOAD + SPOOL_REC_HDR_SIZE -
	    spool_rec_size(&(struct spool_msg){ .topic = "t", .topic_len = 1, .hdrs = &h,
		.nhdrs = 1, .value = "" }) - room);
	*flags = item.flags;
	got_reason[0] = 0;
	for (size_t i = 0; i < item.rec->msg.nhdrs; i++) {
		const struct spool_hdr *x = &item.rec->msg.hdrs[i];
		if (spool_hdr_is(x, SPOOL_HDR_FAILED_REASON))
			snprintf(got_reason, got_len, "%.*s", (int)x->value_len, x->value);
	}
	assert_int_equal(spool_ro_iter_next(it, &item), 0);
	spool_ro_iter_free(it);
	spool_ro_free(ro);
}

/* A value 30 bytes short of 64 MiB: the reason is cut to what fits. */
static void test_fail_reason_truncated(void **state)
{
	struct tmp *t = *state;
	char reason[64];
	uint16_t flags;

	/* 2 + 18 + 4 bytes of header around the reason: 6 bytes of it fit. */
	fail_big(t->dir, 30, "Message size too large", reason, sizeof(reason), &flags);
	assert_string_equal(reason, "Messag");
	assert_int_equal(flags & SPOOL_REC_F_NO_REASON, 0);
}

/* A value 10 bytes short of 64 MiB: no reason fits; the record says so in a flag. */
static void test_fail_no_room_for_reason(void **state)
{
	struct tmp *t = *state;
	char reason[64];
	uint16_t flags;

	fail_big(t->dir, 10, "Message size too large", reason, sizeof(reason), &flags);
	assert_string_equal(reason, "");
	assert_int_equal(flags & SPOOL_REC_F_NO_REASON, SPOOL_REC_F_NO_REASON);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_failed_log_torn_tail_repaired, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_retried_after_enospc, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_retried_after_read_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unfiled_dead_letter_deleted_not_filed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_reason_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fail_no_room_for_reason, setup, teardown),
	};

	return spool_test_main(tests, sizeof(tests) / sizeof(tests[0]));
}
