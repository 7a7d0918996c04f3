/*
 * test_spool_util: what the spool test programs share: temp directories,
 * opening, message numbering, writing and draining, the I/O seam's fault
 * injection (pwritev, fdatasync, ftruncate and reads).
 *
 * Every message i carries key "k<i>", header ackd-id "id-<i>" and value
 * "value-<i>" (the fixtures follow the same rule), so a test names records
 * by number and checks exactly which ones come back.
 */
#ifndef ACKD_TEST_SPOOL_UTIL_H
#define ACKD_TEST_SPOOL_UTIL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cmocka.h>

#include "spool.h"
#include "util.h" /* now_ms() */

#ifndef FIXTURES
#define FIXTURES "tests/fixtures"
#endif

extern struct spool_io real_io;
extern atomic_int n_fdatasync;
extern atomic_int fail_write_errno; /* next pwritev writes half, then fails with this */
extern atomic_int fail_sync_errno;  /* next fdatasync fails with this */
extern atomic_int fail_trunc_errno; /* next ftruncate fails with this */
extern atomic_int fail_read_errno;  /* every read fails with this while set */

struct tmp {
	char dir[64];
};

struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	enum spool_err err;
	uint64_t first_seq;
};

ssize_t test_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off);
int test_fdatasync(int fd);
int test_ftruncate(int fd, off_t len);
ssize_t test_pread(int fd, void *buf, size_t len, off_t off);
int setup(void **state);
int teardown(void **state);
struct spool_opts opts_for(const char *dir, uint64_t segment_bytes);
struct spool *open_ok(const struct spool_opts *o);
void add_msg(struct spool_batch *b, int i);
int msg_num(const struct spool_rec *r);
void waiter_done(void *arg, enum spool_err err, uint64_t first_seq);
enum spool_err write_range(struct spool *sp, int from, int to, uint64_t *first_seq);
/* Submit b and wait for it to be durable (b is the spool's from here on). */
enum spool_err write_batch(struct spool *sp, struct spool_batch *b, uint64_t *first_seq);
size_t drain(struct spool *sp, uint64_t *cursor, int *nums, uint64_t *seqs, size_t max);
int count_files(const char *dir, const char *suffix);
off_t file_size(const char *dir, const char *name);
void copy_dir(const char *from, const char *to);

/* Install the fault-injecting seam, set the log level, run the tests. */
int spool_test_main(const struct CMUnitTest *tests, size_t n);

#endif
