/*
 * spool_spare: a zero-filled segment file kept ready for the writer's next
 * roll (spool_opts.prealloc).
 *
 * An fdatasync after an append also commits the file's new size (on ext4 a
 * journal commit); after an overwrite of blocks already written it flushes
 * the data alone, in about half the time (bench/fsync). So at the first
 * group of each segment (spare_want(), asked by the writer), a thread of
 * its own (ackd-spare) begins writing segment_bytes of zeros into a new
 * file, .seg-spare.tmp, and hands its descriptor to the writer once all are
 * written and synced. At the next roll seg_create() renames it to the new
 * segment's temp name and writes the header over its first bytes; the
 * records then overwrite the zeros.
 *
 * The zeros are paced by the records (spare_pace()): the spare is written
 * in SPARE_CHUNK steps, with an fdatasync every SPARE_SYNC_EVERY bytes, no
 * further than a third ahead of the active segment's records plus
 * SPARE_LEAD. It is whole once the records fill three quarters of
 * (segment_bytes - SPARE_LEAD): 74% of a 64 MiB segment. Written at once,
 * 64 MiB took about 0.15 s of CPU in one burst, 0.2-0.35 s with its
 * fdatasyncs, and the writer's fdatasyncs could queue behind its 4 MiB
 * flushes (docs/performance.md, "The half-rate tail, traced"). Paced, a
 * step is a fraction of a millisecond among the writer's; an ackd that
 * spooled nothing writes no spare, one that spooled a little SPARE_LEAD. A
 * spare not yet whole at a roll is kept and goes on, paced by the next
 * segment's records, for the one after.
 *
 * What this leaves on disk: zeros after the active segment's last record.
 * A segment rolls only once its records reach segment_bytes, the spare's
 * size, so a sealed one has none left; closing the spool cuts the active
 * one's off. A stopped spool is byte for byte what appending would have
 * made. A crash leaves them after the newest segment's last record:
 * recovery cuts them with the torn tail (zeros hold no record; they are
 * not counted as torn bytes), and removes a spare with the other .seg-*.tmp
 * files.
 *
 * A spare that cannot be made (an I/O error, a disk that would keep less
 * than DISK_MARGIN free) is logged, removed, and tried again after a
 * second; meanwhile the writer creates empty segments and appends, as
 * without prealloc.
 *
 * Threads: spare_main() is the spare thread, spare_want() and spare_take()
 * the writer's, spare_start() and spare_stop() the opening and closing
 * thread's. The request and the hand-over (sp->spare_wanted, sp->spare_fd)
 * are under sp->mu.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

#define SPARE_NAME ".seg-spare.tmp"
#define SPARE_CHUNK (256u << 10)
#define SPARE_SYNC_EVERY (UINT64_C(1) << 20)
#define SPARE_LEAD (UINT64_C(1) << 20)
#define SPARE_RETRY_MS 1000

/* Never written; not const, so it lies in .bss, not in the binary. */
static unsigned char zeros[SPARE_CHUNK];

/* Under sp->mu: how far the spare may be written now. */
static uint64_t spare_allowed(const struct spool *sp)
{
	uint64_t fill = sp->active ? sp->active->data_end : 0;
	uint64_t allowed = fill + fill / 3 + SPARE_LEAD;

	return allowed < sp->segment_bytes ? allowed : sp->segment_bytes;
}

/*
 * Wait until the spare may be written up to end: the writer's records have
 * gone far enough (it wakes this thread once its segment's data_end reaches
 * spare_resume_at). false: the spool is stopping.
 */
static bool spare_pace(struct spool *sp, uint64_t end)
{
	bool go;

	pthread_mutex_lock(&sp->mu);
	while (!sp->stopping && end > spare_allowed(sp)) {
		/*
		 * allowed >= SPARE_LEAD unless the segment is smaller, and then
		 * end <= segment_bytes = allowed: here end > SPARE_LEAD. A fill f
		 * of this or more has f + f / 3 + SPARE_LEAD >= end.
		 */
		uint64_t resume = (end - SPARE_LEAD) / 4 * 3 + 3;
		atomic_store_explicit(&sp->spare_resume_at, resume, memory_order_relaxed);
		pthread_cond_wait(&sp->spare_wake, &sp->mu);
	}
	atomic_store_explicit(&sp->spare_resume_at, UINT64_MAX, memory_order_relaxed);
	go = !sp->stopping;
	pthread_mutex_unlock(&sp->mu);
	return go;
}

/* Write size zero bytes from offset 0, synced in steps. 0, or -1 with errno. */
static int spare_fill(struct spool *sp, int fd, uint64_t size)
{
	for (uint64_t off = 0; off < size;) {
		struct iovec iov = { zeros, size - off < SPARE_CHUNK ? size - off : SPARE_CHUNK };
		if (!spare_pace(sp, off + iov.iov_len)) {
			errno = ECANCELED;
			return -1;
		}
		if (spool_pwritev_all(fd, &iov, 1, off) < 0)
			return -1;
		off += iov.iov_len;
		if ((off % SPARE_SYNC_EVERY == 0 || off == size) && spool_io.fdatasync(fd) < 0)
			return -1;
	}
	return 0;
}

/*
 * A new spare's descriptor, or -1 (logged unless the spool is stopping). A
 * spare is not begun when it would leave less than DISK_MARGIN free: the
 * writer's batches come first.
 */
static int spare_make(struct spool *sp, int64_t *log_ms)
{
	struct statvfs vfs;
	int fd = -1, saved;

	if (fstatvfs(sp->dir_fd, &vfs) == 0 &&
	    (uint64_t)vfs.f_bavail * vfs.f_frsize < sp->segment_bytes + DISK_MARGIN)
		errno = ENOSPC;
	else if ((fd = spool_io.openat(sp->dir_fd, SPARE_NAME,
	    O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640)) >= 0 &&
	    spare_fill(sp, fd, sp->segment_bytes) == 0)
		return fd;
	saved = errno;
	if (fd >= 0) {
		spool_io.close(fd);
		spool_io.unlinkat(sp->dir_fd, SPARE_NAME, 0);
	}
	if (saved != ECANCELED && spool_log_due(log_ms))
		log_warnx("spool: %s: cannot prepare a spare segment: %s (new segments are "
		    "appended to until one can be made)", sp->dir, strerror(saved));
	return -1;
}

static void *spare_main(void *arg)
{
	struct spool *sp = arg;
	int64_t log_ms = 0;

	thread_name("ackd-spare");
	pthread_mutex_lock(&sp->mu);
	while (!sp->stopping) {
		int fd;
		if (sp->spare_fd >= 0 || !sp->spare_wanted) {
			pthread_cond_wait(&sp->spare_wake, &sp->mu);
			continue;
		}
		pthread_mutex_unlock(&sp->mu);
		fd = spare_make(sp, &log_ms);
		pthread_mutex_lock(&sp->mu);
		if (fd >= 0) {
			sp->spare_fd = fd;
			sp->spare_wanted = false;
		} else if (!sp->stopping) {
			int64_t due = now_ms() + SPARE_RETRY_MS;
			struct timespec ts = { .tv_sec = due / 1000, .tv_nsec = due % 1000 * 1000000 };
			pthread_cond_timedwait(&sp->spare_wake, &sp->mu, &ts);
		}
	}
	pthread_mutex_unlock(&sp->mu);
	return NULL;
}

void spare_start(struct spool *sp)
{
	if (!sp->prealloc)
		return;
	if (pthread_create(&sp->spare_thread, NULL, spare_main, sp) != 0) {
		log_warnx("spool: %s: cannot start the spare segment thread; new segments are "
		    "appended to", sp->dir);
		return;
	}
	sp->spare_running = true;
}

void spare_stop(struct spool *sp)
{
	pthread_mutex_lock(&sp->mu);
	sp->stopping = true;
	pthread_cond_signal(&sp->spare_wake);
	pthread_mutex_unlock(&sp->mu);
	if (sp->spare_running) {
		pthread_join(sp->spare_thread, NULL);
		sp->spare_running = false;
	}
	if (sp->spare_fd >= 0) {
		spool_io.close(sp->spare_fd);
		sp->spare_fd = -1;
		spool_io.unlinkat(sp->dir_fd, SPARE_NAME, 0); /* else the next open removes it */
	}
}

void spare_want(struct spool *sp, struct seg *seg)
{
	if (!sp->prealloc)
		return;
	if (seg->spare_asked) {
		/* An exchange: one wake-up per wait, not one per group. */
		if (seg->data_end < atomic_load_explicit(&sp->spare_resume_at, memory_order_relaxed) ||
		    atomic_exchange_explicit(&sp->spare_resume_at, UINT64_MAX,
		    memory_order_relaxed) == UINT64_MAX)
			return;
	}
	seg->spare_asked = true;
	pthread_mutex_lock(&sp->mu);
	if (sp->spare_fd < 0)
		sp->spare_wanted = true;
	pthread_cond_signal(&sp->spare_wake);
	pthread_mutex_unlock(&sp->mu);
}

int spare_take(struct spool *sp, const char *name, uint64_t *zero_end)
{
	int fd;

	pthread_mutex_lock(&sp->mu);
	fd = sp->spare_fd;
	pthread_mutex_unlock(&sp->mu);
	/* The spare thread makes no new file while spare_fd is set: the name is ours. */
	if (fd < 0 || spool_io.renameat(sp->dir_fd, SPARE_NAME, sp->dir_fd, name) < 0)
		return -1;
	pthread_mutex_lock(&sp->mu);
	sp->spare_fd = -1;
	sp->spares_used++;
	pthread_cond_signal(&sp->spare_wake);
	pthread_mutex_unlock(&sp->mu);
	*zero_end = sp->segment_bytes;
	return fd;
}
