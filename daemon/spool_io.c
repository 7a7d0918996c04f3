/*
 * spool_io: the file-system seam of the spool and the I/O helpers on it.
 *
 * Every call of the daemon's spool that changes the file system goes
 * through struct spool_io (spool.h), so tests can inject errors or record
 * the operations; reads go through spool_pread, so tests can fail them.
 * Any thread.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "spool_int.h"
#include "util.h"

static int sys_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	return openat(dirfd, path, flags, mode);
}

static ssize_t sys_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return pwritev(fd, iov, iovcnt, off);
}

static ssize_t sys_write(int fd, const void *buf, size_t len) { return write(fd, buf, len); }
static int sys_fsync(int fd) { return fsync(fd); }
static int sys_fdatasync(int fd) { return fdatasync(fd); }
static int sys_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

static int sys_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	return renameat(olddirfd, oldpath, newdirfd, newpath);
}

static int sys_unlinkat(int dirfd, const char *path, int flags) { return unlinkat(dirfd, path, flags); }
static int sys_mkdirat(int dirfd, const char *path, mode_t mode) { return mkdirat(dirfd, path, mode); }

struct spool_io spool_io = {
	.openat = sys_openat,
	.close = close,
	.pwritev = sys_pwritev,
	.write = sys_write,
	.fsync = sys_fsync,
	.fdatasync = sys_fdatasync,
	.ftruncate = sys_ftruncate,
	.renameat = sys_renameat,
	.unlinkat = sys_unlinkat,
	.mkdirat = sys_mkdirat,
};

ssize_t (*spool_pread)(int fd, void *buf, size_t len, off_t off) = pread;

int spool_pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = spool_pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

int spool_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = spool_io.write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* pwritev through the seam, IOV_MAX at a time, resuming short writes. */
int spool_pwritev_all(int fd, struct iovec *iov, size_t n, uint64_t off)
{
	for (;;) {
		while (n > 0 && iov->iov_len == 0) {
			iov++;
			n--;
		}
		if (n == 0)
			return 0;
		ssize_t w = spool_io.pwritev(fd, iov, n > IOV_MAX ? IOV_MAX : (int)n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		off += (uint64_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
}

/* True at most once per ERR_LOG_EVERY_MS for the given clock. */
bool spool_log_due(int64_t *last)
{
	int64_t now = now_ms();

	if (*last && now - *last < ERR_LOG_EVERY_MS)
		return false;
	*last = now;
	return true;
}

/* fdatasync through the seam, its time in ackd_spool_fsync_seconds. */
int spool_timed_fdatasync(int fd)
{
	struct timespec t0, t1;
	int rc;

	t0 = clock_now(CLOCK_MONOTONIC);
	rc = spool_io.fdatasync(fd);
	t1 = clock_now(CLOCK_MONOTONIC);
	metrics_fsync((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return rc;
}

int spool_zero_tail(int fd, uint64_t start, uint64_t size, uint64_t *from)
{
	unsigned char buf[65536];

	*from = size;
	while (*from > start) {
		size_t n = *from - start < sizeof(buf) ? (size_t)(*from - start) : sizeof(buf), got;
		if (spool_pread_all(fd, buf, n, *from - n, &got) < 0)
			return -1;
		if (got < n) {
			errno = EIO; /* the file shrank under us: nothing to conclude */
			return -1;
		}
		for (size_t i = n; i > 0; i--)
			if (buf[i - 1]) {
				*from -= n - i;
				return 0;
			}
		*from -= n;
	}
	return 0;
}
