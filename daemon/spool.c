/*
 * spool: open, close, statistics and the maintenance pass of the on-disk
 * queue between the publish API and Kafka (spool.h says what it promises).
 *
 * Files in the spool directory:
 *   lock                   flock()ed while an ackd owns the directory
 *   seg-<first seq>.spool  a segment: header, records, and when sealed a footer
 *   seg-<first seq>.ack    acknowledged sequences of that segment, appended
 *   failed/failed-<first seq>.log  records Kafka rejected, with the reason
 * docs/spool-format.md describes the bytes.
 *
 * The spool is split by concept, each file with the spool_ prefix:
 *   spool_io.c      the file-system seam (struct spool_io) and I/O helpers
 *   spool_seg.c     the segment file: create, seal, delete, trim, lookup
 *   spool_ack.c     the acknowledgement bitmaps and the .ack files
 *   spool_iter.c    the record iterator over a segment's bytes
 *   spool_writer.c  batches, submission, the writer thread, group commit
 *   spool_reader.c  spool_next/get/ack/rewind (the producer's side)
 *   spool_failed.c  failed/: records Kafka rejected
 *   spool_copy.c    copy-forward of almost empty old segments
 *   spool_recover.c recovery at open: listing, scanning, torn tails
 *   spool_ro.c      the read-only view for ackd-spool(8)
 *   spool_seqmap.c  the seq -> seq map of copy-forward
 * spool_int.h holds the shared structure and which thread owns which field.
 *
 * Threads: spool_open/close/quiesce from the main thread; spool_maintain()
 * from the producer thread; spool_stats() from any thread.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "health.h"
#include "log.h"
#include "spool_int.h"
#include "util.h"

/*
 * 64 MiB, or an eighth of spool.max_bytes when that is less: only whole
 * segments are deleted, so a spool must hold several of them to drain.
 */
static uint64_t default_segment_bytes(const struct spool_opts *opts)
{
	uint64_t eighth = opts->max_bytes / 8;

	if (opts->max_bytes == 0 || eighth >= SEG_DEFAULT_BYTES)
		return SEG_DEFAULT_BYTES;
	return eighth > SEG_MIN_BYTES ? eighth : SEG_MIN_BYTES;
}

void spool_maint(struct spool *sp, bool force)
{
	uint_fast64_t rolls = atomic_load(&sp->rolls);
	int64_t now;
	bool done = false, due;

	keys_job_poll(sp);
	if (sp->cf.seg) {
		pthread_mutex_lock(&sp->mu);
		done = sp->cf.done;
		pthread_mutex_unlock(&sp->mu);
		if (done)
			cf_apply(sp);
	}
	now = coarse_ms(); /* once per record handed out or acknowledged */
	due = force || now - sp->maint_ms >= sp->maint_every_ms;
	if (!due && rolls == sp->rolls_swept)
		return;
	sp->rolls_swept = rolls;
	if (due) {
		/* Not after every roll: trimming faster than a step per interval stalls fdatasync. */
		sp->maint_ms = now;
		trim_step(sp, false);
		failed_retry_due(sp);
	}

	/*
	 * Not under sp->mu: a write can wait for the file system, and spool_submit()
	 * on the request threads and the writer's commit take that lock. Only this
	 * thread deletes segments, so seg stays valid between the steps; the lock
	 * is held only to read the link the writer may be setting.
	 */
	pthread_mutex_lock(&sp->mu);
	for (struct seg *seg = sp->segs, *next; seg; seg = next) {
		pthread_mutex_unlock(&sp->mu);
		ack_flush(sp, seg);
		pthread_mutex_lock(&sp->mu);
		next = seg->next;
	}
	pthread_mutex_unlock(&sp->mu);

	for (;;) {
		struct seg *seg;
		pthread_mutex_lock(&sp->mu);
		for (seg = sp->segs; seg; seg = seg->next)
			if (seg != sp->active && seg != sp->cf.seg && seg_live(seg) == 0)
				break;
		pthread_mutex_unlock(&sp->mu);
		if (!seg)
			break;
		seg_delete(sp, seg);
	}
	cf_start(sp);
}

void spool_maintain(struct spool *sp) { spool_maint(sp, true); }

void spool_stats(struct spool *sp, struct spool_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&sp->mu);
	out->records = sp->live;
	out->bytes = sp->bytes;
	out->segments = sp->nsegs;
	out->damaged = sp->damaged;
	out->failed = sp->failed;
	out->commits = sp->commits;
	out->write_errors = sp->write_errors;
	out->torn_bytes = sp->torn_bytes;
	out->max_bytes = sp->max_bytes;
	out->spares_used = sp->spares_used;
	out->spare_ready = sp->spare_fd >= 0;
	out->spare_wanted = sp->spare_wanted;
	for (struct seg *seg = sp->segs; seg; seg = seg->next)
		if (seg_live(seg) && seg->nrecs && (out->oldest_ms == 0 || seg->min_ts < out->oldest_ms))
			out->oldest_ms = seg->min_ts;
	pthread_mutex_unlock(&sp->mu);
}

static void spool_free(struct spool *sp)
{
	struct seg *seg;

	while ((seg = sp->segs)) {
		sp->segs = seg->next;
		seg_free(seg);
	}
	it_fini(&sp->rd);
	it_fini(&sp->aux);
	seqmap_fini(&sp->fwd);
	seqmap_fini(&sp->rev);
	free(sp->cf.seqs);
	failed_fini(sp);
	keys_fini(sp);
	for (size_t i = 0; i < sp->ntrims; i++)
		spool_io.close(sp->trims[i].fd); /* the temp files go at the next open */
	if (sp->dir_fd >= 0)
		spool_io.close(sp->dir_fd);
	if (sp->lock_fd >= 0)
		spool_io.close(sp->lock_fd);
	pthread_cond_destroy(&sp->wake);
	pthread_cond_destroy(&sp->idle);
	pthread_cond_destroy(&sp->spare_wake);
	pthread_mutex_destroy(&sp->mu);
	free(sp->dir);
	free(sp);
}

/*
 * A directory just created survives a power loss only once the directory
 * holding it is synced: open the parent of path through the seam, fsync it.
 * 0, or -1 with errno.
 */
static int fsync_parent(const char *path)
{
	char parent[PATH_MAX];
	size_t len = strlen(path);
	int fd, rc, saved;

	if (len >= sizeof(parent)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(parent, path, len + 1);
	while (len > 1 && parent[len - 1] == '/')
		parent[--len] = 0;
	while (len > 0 && parent[len - 1] != '/')
		len--;
	while (len > 1 && parent[len - 1] == '/')
		len--;
	if (len == 0)
		strcpy(parent, ".");
	else
		parent[len] = 0;
	fd = spool_io.openat(AT_FDCWD, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	rc = spool_io.fsync(fd);
	saved = errno;
	spool_io.close(fd);
	errno = saved;
	return rc;
}

const char *spool_err_text(enum spool_err err)
{
	switch (err) {
	case SPOOL_OK:
		return "no error";
	case SPOOL_EFULL:
		return "the spool is full";
	case SPOOL_EIO:
		return "the spool cannot be written";
	case SPOOL_ECLOSED:
		return "the spool is closing";
	}
	return "unknown spool error";
}

int spool_open(const struct spool_opts *opts, struct spool **out, char *err, size_t errlen)
{
	struct spool *sp = calloc(1, sizeof(*sp));
	pthread_condattr_t ca;
	struct spool_stats st;

	*out = NULL;
	if (!sp || !(sp->dir = strdup(opts->dir))) {
		free(sp);
		snprintf(err, errlen, "spool %s: out of memory", opts->dir);
		return -1;
	}
	sp->dir_fd = -1;
	sp->lock_fd = -1;
	sp->keys_fd = -1;
	sp->spare_fd = -1;
	atomic_init(&sp->spare_resume_at, UINT64_MAX);
	sp->prealloc = opts->prealloc;
	sp->slice_us = opts->slice_us;
	sp->fsync = opts->fsync;
	sp->fsync_interval_ms = opts->fsync_interval_ms > 0 ? opts->fsync_interval_ms : 1000;
	sp->max_bytes = opts->max_bytes;
	sp->segment_bytes = opts->segment_bytes ? opts->segment_bytes : default_segment_bytes(opts);
	sp->maint_every_ms = opts->maint_every_ms > 0 ? opts->maint_every_ms : MAINT_EVERY_MS;
	sp->q_tail = &sp->q_head;
	pthread_mutex_init(&sp->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->wake, &ca);
	pthread_cond_init(&sp->idle, &ca);
	pthread_cond_init(&sp->spare_wake, &ca);
	pthread_condattr_destroy(&ca);

	if (spool_io.mkdirat(AT_FDCWD, sp->dir, 0750) == 0) {
		if (fsync_parent(sp->dir) < 0) {
			snprintf(err, errlen, "spool %s: cannot sync the directory holding it: %s", sp->dir,
			    strerror(errno));
			goto fail;
		}
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "spool %s: cannot create: %s", sp->dir, strerror(errno));
		goto fail;
	}
	sp->dir_fd = spool_io.openat(AT_FDCWD, sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
	if (sp->dir_fd < 0) {
		snprintf(err, errlen, "spool %s: cannot open: %s", sp->dir, strerror(errno));
		goto fail;
	}
	sp->lock_fd = spool_io.openat(sp->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (sp->lock_fd < 0) {
		snprintf(err, errlen, "spool %s: cannot open lock file: %s", sp->dir, strerror(errno));
		goto fail;
	}
	if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			snprintf(err, errlen, "spool %s is in use by another ackd (%s/lock is locked)",
			    sp->dir, sp->dir);
		else
			snprintf(err, errlen, "spool %s: cannot lock: %s", sp->dir, strerror(errno));
		goto fail;
	}
	if (spool_io.mkdirat(sp->dir_fd, "failed", 0750) == 0) {
		if (spool_io.fsync(sp->dir_fd) < 0) {
			snprintf(err, errlen, "spool %s: cannot sync after creating failed/: %s", sp->dir,
			    strerror(errno));
			goto fail;
		}
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "spool %s: cannot create failed/: %s", sp->dir, strerror(errno));
		goto fail;
	}
	sp->on_key = opts->on_key;
	sp->on_key_arg = opts->on_key_arg;
	sp->on_failed = opts->on_failed;
	sp->on_copy = opts->on_copy;
	sp->on_key_ack = opts->on_key_ack;
	sp->key_ttl_ms = opts->key_ttl_ms;
	if (failed_repair(sp, err, errlen) < 0 || spool_recover(sp, err, errlen) < 0)
		goto fail;
	sp->run_first_seq = sp->next_seq;
	spool_maint(sp, true); /* flush acks for damage found, delete finished segments */

	health_register(&sp->health, "spool writer", SPOOL_MAX_QUIET_MS);
	if (pthread_create(&sp->writer, NULL, spool_writer_main, sp) != 0) {
		health_unregister(&sp->health);
		snprintf(err, errlen, "spool %s: cannot start the writer thread", sp->dir);
		goto fail;
	}
	sp->writer_running = true;
	spare_start(sp);
	spool_stats(sp, &st);
	log_info("spool: %s: %" PRIu64 " records waiting in %" PRIu64 " segments (%" PRIu64
	    " damaged, %" PRIu64 " torn bytes cut)",
	    sp->dir, st.records, st.segments, st.damaged, st.torn_bytes);
	*out = sp;
	return 0;
fail:
	spool_free(sp);
	return -1;
}

int spool_quiesce(struct spool *sp, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	sp->refusing = true;
	while ((sp->q_head || sp->writing) && rc == 0) {
		struct timespec ts = { .tv_sec = deadline / 1000,
			.tv_nsec = (deadline % 1000) * 1000000 };
		if (pthread_cond_timedwait(&sp->idle, &sp->mu, &ts) == ETIMEDOUT)
			rc = -1;
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

/* A stopped spool's active segment ends at its records, as if appended to. */
static void cut_zeros(struct spool *sp, struct seg *seg)
{
	if (!seg || seg->zero_end <= seg->data_end)
		return;
	if (spool_io.ftruncate(seg->fd, (off_t)seg->data_end) < 0 ||
	    (sp->fsync != CONF_FSYNC_NEVER && spool_io.fdatasync(seg->fd) < 0))
		log_warn("spool: %s: cannot cut the unused end of segment %" PRIu64
		    " (the next start does)", sp->dir, seg->first_seq);
	else
		seg->zero_end = 0;
}

void spool_close(struct spool *sp)
{
	struct sub *list;

	if (!sp)
		return;
	pthread_mutex_lock(&sp->mu);
	sp->stopping = true;
	pthread_cond_signal(&sp->wake);
	pthread_mutex_unlock(&sp->mu);
	if (sp->writer_running) {
		pthread_join(sp->writer, NULL);
		health_unregister(&sp->health);
	}
	spare_stop(sp);
	cut_zeros(sp, sp->active);

	pthread_mutex_lock(&sp->mu);
	list = sp->q_head;
	sp->q_head = NULL;
	sp->q_tail = &sp->q_head;
	pthread_mutex_unlock(&sp->mu);
	while (list) {
		struct sub *next = list->next;
		if (list->done)
			list->done(list->arg, SPOOL_ECLOSED, 0);
		spool_batch_free(list->b);
		free(list);
		list = next;
	}
	if (sp->cf.seg && sp->cf.done && sp->cf.err == SPOOL_OK)
		cf_apply(sp);

	trim_step(sp, true);
	for (struct seg *seg = sp->segs; seg; seg = seg->next) {
		ack_flush(sp, seg);
		if (seg->ack_fd >= 0 && spool_io.fdatasync(seg->ack_fd) < 0)
			log_warn("spool: %s: fdatasync of acknowledgements of segment %" PRIu64, sp->dir,
			    seg->first_seq);
	}
	spool_free(sp);
}
