/*
 * test_spool_util: helpers shared by the spool test programs
 * (test_spool_util.h).
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


/* --- the I/O seam ------------------------------------------------------------ */

struct spool_io real_io;
atomic_int n_fdatasync;
atomic_int fail_write_errno;
atomic_int fail_sync_errno;
atomic_int fail_trunc_errno;
atomic_int fail_read_errno;

ssize_t test_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
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

int test_fdatasync(int fd)
{
	int e = atomic_exchange(&fail_sync_errno, 0);

	atomic_fetch_add(&n_fdatasync, 1);
	if (e) {
		errno = e;
		return -1;
	}
	return real_io.fdatasync(fd);
}

int test_ftruncate(int fd, off_t len)
{
	int e = atomic_exchange(&fail_trunc_errno, 0);

	if (e) {
		errno = e;
		return -1;
	}
	return real_io.ftruncate(fd, len);
}

ssize_t test_pread(int fd, void *buf, size_t len, off_t off)
{
	int e = atomic_load(&fail_read_errno);

	if (e) {
		errno = e;
		return -1;
	}
	return pread(fd, buf, len, off);
}

/* --- helpers ------------------------------------------------------------------ */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int setup(void **state)
{
	struct tmp *t = calloc(1, sizeof(*t));

	snprintf(t->dir, sizeof(t->dir), "/tmp/test_spool.XXXXXX");
	assert_non_null(mkdtemp(t->dir));
	atomic_store(&n_fdatasync, 0);
	atomic_store(&fail_write_errno, 0);
	atomic_store(&fail_sync_errno, 0);
	atomic_store(&fail_trunc_errno, 0);
	atomic_store(&fail_read_errno, 0);
	*state = t;
	return 0;
}

int teardown(void **state)
{
	struct tmp *t = *state;

	nftw(t->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(t);
	return 0;
}

struct spool_opts opts_for(const char *dir, uint64_t segment_bytes)
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

struct spool *open_ok(const struct spool_opts *o)
{
	struct spool *sp = NULL;
	char err[256] = "";

	if (spool_open(o, &sp, err, sizeof(err)) < 0)
		fail_msg("spool_open: %s", err);
	return sp;
}

/* Add message number i (see the opening comment). */
void add_msg(struct spool_batch *b, int i)
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
int msg_num(const struct spool_rec *r)
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

void waiter_done(void *arg, enum spool_err err, uint64_t first_seq)
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
enum spool_err write_range(struct spool *sp, int from, int to, uint64_t *first_seq)
{
	struct spool_batch *b = spool_batch_new((size_t)(to - from));

	for (int i = from; i < to; i++)
		add_msg(b, i);
	return write_batch(sp, b, first_seq);
}

enum spool_err write_batch(struct spool *sp, struct spool_batch *b, uint64_t *first_seq)
{
	struct waiter w = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, SPOOL_OK, 0 };
	enum spool_err err;

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
size_t drain(struct spool *sp, uint64_t *cursor, int *nums, uint64_t *seqs, size_t max)
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

int count_files(const char *dir, const char *suffix)
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

off_t file_size(const char *dir, const char *name)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (stat(path, &st) < 0)
		return -1;
	return st.st_size;
}

void copy_dir(const char *from, const char *to)
{
	DIR *d = opendir(from);
	struct dirent *de;
	char src[512], dst[512], buf[65536];

	assert_non_null(d);
	while ((de = readdir(d))) {
		int in, out;
		ssize_t n;
		if (de->d_name[0] == '.' || de->d_type == DT_DIR)
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

int spool_test_main(const struct CMUnitTest *tests, size_t n)
{
	real_io = spool_io;
	spool_io.pwritev = test_pwritev;
	spool_io.fdatasync = test_fdatasync;
	spool_io.ftruncate = test_ftruncate;
	spool_pread = test_pread;
	log_set_level(LOG_LVL_ERR);
	if (getenv("TEST_SPOOL_DEBUG"))
		log_set_level(LOG_LVL_DEBUG);
	return _cmocka_run_group_tests("spool", tests, n, NULL, NULL);
}
