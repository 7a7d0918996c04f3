/*
 * spool_writer: batches, submission and the writer thread.
 *
 * Writing (group commit). Request threads encode and CRC their records into a
 * struct spool_batch and queue it with spool_submit(), which refuses at once
 * when max_bytes or the file system's free space would be exceeded. One
 * writer thread takes everything queued, stamps consecutive sequence numbers,
 * writes it with pwritev at the end of the active segment, calls fdatasync
 * once (fsync=always), then each batch's done callback, then the commit hook.
 * With fsync=interval the callbacks follow the write and fdatasync runs every
 * fsync_interval_ms; with never it does not run. A failed write or sync
 * truncates the segment back to its size before the group and fails every
 * batch of the group (ENOSPC: SPOOL_EFULL, else SPOOL_EIO); sequences are
 * reused, so a segment's sequences stay contiguous. When that cut-back fails
 * too, every later group is refused with SPOOL_EIO until a retried cut (and
 * its fdatasync) succeeds, so nothing is ever appended after a refused
 * group's bytes. When the active segment
 * has grown past segment_bytes, the writer creates the next one (temp file,
 * header, fsync, rename, fsync the directory) and then seals the old one
 * with a footer saying its sequence range, so opening it later reads 68
 * bytes instead of its records.
 *
 * Threads: batches are built on request threads; spool_submit() and
 * spool_writable() from any thread; the rest on the writer thread.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

struct spool_batch *spool_batch_new(size_t nrecords_hint)
{
	struct spool_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->cap = nrecords_hint ? nrecords_hint * 256 : 1024;
	b->buf = malloc(b->cap);
	if (!b->buf) {
		free(b);
		return NULL;
	}
	return b;
}

static int batch_reserve(struct spool_batch *b, size_t n)
{
	size_t cap = b->cap;
	unsigned char *nb;

	if (b->len + n <= b->cap)
		return 0;
	while (cap < b->len + n)
		cap *= 2;
	nb = realloc(b->buf, cap);
	if (!nb)
		return -1;
	b->buf = nb;
	b->cap = cap;
	return 0;
}

static void batch_note(struct spool_batch *b, const unsigned char *rec)
{
	int64_t ts = spool_rec_peek_timestamp(rec);

	if (b->count == 0 || ts < b->min_ts)
		b->min_ts = ts;
	b->count++;
}

int spool_batch_add(struct spool_batch *b, const struct spool_msg *m)
{
	size_t len = spool_rec_size(m);

	if (len == 0 || batch_reserve(b, len) < 0)
		return -1;
	spool_rec_encode(m, b->buf + b->len);
	batch_note(b, b->buf + b->len);
	b->len += len;
	return 0;
}

int spool_batch_add_key(struct spool_batch *b, const struct spool_key *k)
{
	size_t len = spool_key_size(k), off = 0;

	if (len == 0 || b->count != k->nrecs || batch_reserve(b, len) < 0)
		return -1;
	/* Every record so far is the key's: mark them, so a torn batch is cut whole. */
	while (off < b->len) {
		spool_rec_set_flags(b->buf + off, spool_rec_flags(b->buf + off) | SPOOL_REC_F_KEYED);
		off += spool_rec_total(b->buf + off);
	}
	spool_key_encode(k, b->buf + b->len);
	batch_note(b, b->buf + b->len);
	b->len += len;
	b->has_key = true;
	return 0;
}

void spool_batch_set_unfiled(struct spool_batch *b)
{
	for (size_t off = 0; off < b->len; off += spool_rec_total(b->buf + off))
		spool_rec_set_flags(b->buf + off, spool_rec_flags(b->buf + off) | SPOOL_REC_F_UNFILED);
}

/*
 * Add an already encoded record (copy-forward), marked as a copy. It keeps
 * SPOOL_REC_F_UNFILED, not SPOOL_REC_F_KEYED: in the newest segment without
 * its KEY record, recovery would cut it as a torn batch.
 */
int batch_add_copy(struct spool_batch *b, const unsigned char *rec, size_t len)
{
	if (batch_reserve(b, len) < 0)
		return -1;
	memcpy(b->buf + b->len, rec, len);
	spool_rec_set_flags(b->buf + b->len,
	    (spool_rec_flags(rec) & SPOOL_REC_F_UNFILED) | SPOOL_REC_F_COPY);
	batch_note(b, b->buf + b->len);
	b->len += len;
	return 0;
}

size_t spool_batch_count(const struct spool_batch *b) { return b->count; }

void spool_batch_free(struct spool_batch *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b);
}

/* Free space of the spool's file system, refreshed every 100 ms. Under sp->mu. */
static uint64_t disk_free(struct spool *sp)
{
	int64_t now = now_ms();
	struct statvfs vfs;

	if (sp->disk_checked_ms && now - sp->disk_checked_ms < STATVFS_EVERY_MS)
		return sp->disk_free;
	sp->disk_checked_ms = now;
	if (fstatvfs(sp->dir_fd, &vfs) == 0)
		sp->disk_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	else
		sp->disk_free = UINT64_MAX; /* unknown: let the write tell */
	return sp->disk_free;
}

enum spool_err spool_submit_batch(struct spool *sp, struct spool_batch *b, spool_done_fn *done,
    void *arg, bool check_space)
{
	struct sub *s = calloc(1, sizeof(*s));
	enum spool_err err = SPOOL_OK;

	pthread_mutex_lock(&sp->mu);
	if (!s)
		err = SPOOL_EIO;
	else if (sp->stopping || sp->refusing)
		err = SPOOL_ECLOSED;
	else if (check_space && sp->max_bytes && sp->bytes + sp->q_bytes + b->len > sp->max_bytes)
		err = SPOOL_EFULL;
	else if (check_space && disk_free(sp) < sp->q_bytes + b->len + DISK_MARGIN)
		err = SPOOL_EFULL;
	if (err == SPOOL_OK) {
		s->b = b;
		s->done = done;
		s->arg = arg;
		*sp->q_tail = s;
		sp->q_tail = &s->next;
		sp->q_bytes += b->len;
		pthread_cond_signal(&sp->wake);
	}
	pthread_mutex_unlock(&sp->mu);
	if (err != SPOOL_OK) {
		free(s);
		spool_batch_free(b);
	}
	return err;
}

int spool_writable(struct spool *sp, char *why, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	if (sp->last_werr_ms && now_ms() - sp->last_werr_ms < WERR_RECENT_MS) {
		snprintf(why, len, "a spool write failed in the last %d s", WERR_RECENT_MS / 1000);
		rc = -1;
	} else if (sp->max_bytes && sp->bytes + sp->q_bytes >= sp->max_bytes) {
		snprintf(why, len, "the spool is full (spool.max_bytes)");
		rc = -1;
	} else if (disk_free(sp) < sp->q_bytes + DISK_MARGIN) {
		snprintf(why, len, "the spool's file system is full");
		rc = -1;
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

enum spool_err spool_submit(struct spool *sp, struct spool_batch *b, spool_done_fn *done, void *arg)
{
	return spool_submit_batch(sp, b, done, arg, true);
}

void spool_set_commit_hook(struct spool *sp, void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&sp->mu);
	sp->hook = fn;
	sp->hook_arg = arg;
	pthread_mutex_unlock(&sp->mu);
}

uint64_t spool_end_seq(struct spool *sp)
{
	uint64_t end;

	pthread_mutex_lock(&sp->mu);
	end = sp->next_seq;
	pthread_mutex_unlock(&sp->mu);
	return end;
}

static void maybe_roll(struct spool *sp)
{
	struct seg *old = sp->active, *seg;

	if (old->data_end < sp->segment_bytes || old->end_seq == old->first_seq)
		return;
	if (seg_create(sp, sp->next_seq, &seg) < 0) {
		if (spool_log_due(&sp->werr_log_ms))
			log_warn("spool: %s: cannot create segment %" PRIu64, sp->dir, sp->next_seq);
		return; /* keep appending to the old one */
	}
	seg_seal(sp, old);
	pthread_mutex_lock(&sp->mu);
	old->next = seg;
	sp->active = seg;
	sp->nsegs++;
	sp->bytes += seg->file_bytes;
	pthread_mutex_unlock(&sp->mu);
	atomic_fetch_add(&sp->rolls, 1);
}

/* Tell each batch how it ended, then wake the producer. */
static void finish_group(struct spool *sp, struct sub *list, enum spool_err err)
{
	void (*hook)(void *);
	void *hook_arg;

	while (list) {
		struct sub *next = list->next;
		if (list->done)
			list->done(list->arg, err, err == SPOOL_OK ? list->first_seq : 0);
		spool_batch_free(list->b);
		free(list);
		list = next;
	}
	pthread_mutex_lock(&sp->mu);
	hook = sp->hook;
	hook_arg = sp->hook_arg;
	pthread_mutex_unlock(&sp->mu);
	if (err == SPOOL_OK && hook)
		hook(hook_arg);
}

/*
 * Cut the active segment back to off (where its committed records end) and
 * make the new size durable. On failure sp->cut_pending stays set and every
 * group is refused until a later call succeeds: a group appended after
 * bytes that were never committed could overwrite only their start, and
 * recovery would read the rest as records their clients were told were
 * refused. Writer thread.
 */
static int cut_back(struct spool *sp, struct seg *seg, uint64_t off)
{
	if (spool_io.ftruncate(seg->fd, (off_t)off) < 0 ||
	    (sp->fsync != CONF_FSYNC_NEVER && spool_timed_fdatasync(seg->fd) < 0)) {
		int saved = errno;
		if (!sp->cut_pending || spool_log_due(&sp->werr_log_ms))
			log_warn("spool: %s: cannot cut segment %" PRIu64 " back to %" PRIu64
			    ", refusing writes until it can",
			    sp->dir, seg->first_seq, off);
		sp->cut_pending = true;
		errno = saved;
		return -1;
	}
	if (sp->cut_pending)
		log_info("spool: %s: segment %" PRIu64 " cut back to %" PRIu64 ", writing again",
		    sp->dir, seg->first_seq, off);
	sp->cut_pending = false;
	seg->zero_end = 0; /* a spare's zeros went with the cut: appending from here */
	return 0;
}

/* Write one group; returns 0 when it was written. Writer thread. */
static int commit_group(struct spool *sp, struct sub *list)
{
	struct seg *seg;
	struct iovec *iov = NULL;
	size_t niov = 0, i = 0;
	uint64_t off0, seq, nrecs = 0, bytes = 0;
	int64_t min_ts = 0;
	enum spool_err err;
	int rc;

	for (struct sub *s = list; s; s = s->next)
		bytes += s->b->len;
	if (sp->cut_pending && cut_back(sp, sp->active, sp->active->data_end) < 0) {
		seg = sp->active;
		err = SPOOL_EIO;
		goto refuse;
	}
	bytes = 0;
	maybe_roll(sp);
	seg = sp->active;
	off0 = seg->data_end;
	seq = sp->next_seq;
	for (struct sub *s = list; s; s = s->next) {
		struct spool_batch *b = s->b;
		s->first_seq = seq;
		for (size_t o = 0; o < b->len; o += spool_rec_total(b->buf + o))
			spool_rec_set_seq(b->buf + o, seq++);
		if (b->count && (nrecs == 0 || b->min_ts < min_ts))
			min_ts = b->min_ts;
		nrecs += b->count;
		bytes += b->len;
		niov++;
	}
	iov = calloc(niov ? niov : 1, sizeof(*iov));
	pthread_mutex_lock(&sp->mu);
	rc = iov ? seg_reserve(seg, seq) : -1;
	pthread_mutex_unlock(&sp->mu);
	if (rc < 0) {
		errno = ENOMEM;
		err = SPOOL_EIO;
		goto fail;
	}
	for (struct sub *s = list; s; s = s->next) {
		iov[i].iov_base = s->b->buf;
		iov[i++].iov_len = s->b->len;
	}
	if (spool_pwritev_all(seg->fd, iov, niov, off0) < 0) {
		err = errno == ENOSPC || errno == EDQUOT ? SPOOL_EFULL : SPOOL_EIO;
		goto fail;
	}
	if (sp->fsync == CONF_FSYNC_ALWAYS && bytes && spool_timed_fdatasync(seg->fd) < 0) {
		err = SPOOL_EIO;
		goto fail;
	}
	free(iov);

	pthread_mutex_lock(&sp->mu);
	if (nrecs && (seg->nrecs == 0 || min_ts < seg->min_ts))
		seg->min_ts = min_ts;
	seg->end_seq = seq;
	seg->data_end += bytes;
	seg->file_bytes += bytes;
	seg->nrecs += nrecs;
	for (struct sub *s = list; s; s = s->next)
		seg->has_keys |= s->b->has_key;
	sp->next_seq = seq;
	sp->live += nrecs;
	sp->bytes += bytes;
	sp->q_bytes -= bytes;
	sp->commits++;
	pthread_mutex_unlock(&sp->mu);
	finish_group(sp, list, SPOOL_OK);
	spare_want(sp, seg); /* after the answers: it may take sp->mu */
	return 0;

fail:
	{
		int saved = errno;
		bool show = spool_log_due(&sp->werr_log_ms);
		errno = saved;
		if (show)
			log_warn("spool: %s: writing %" PRIu64 " records to segment %" PRIu64
			    " failed, refused",
			    sp->dir, nrecs, seg->first_seq);
	}
	free(iov);
	/* Never leave a partial record: cut back to the size before the group. */
	(void)cut_back(sp, seg, off0); /* failing, it refuses what follows */
refuse:
	pthread_mutex_lock(&sp->mu);
	sp->write_errors++;
	sp->last_werr_ms = now_ms();
	sp->q_bytes -= bytes;
	sp->disk_checked_ms = 0;
	pthread_mutex_unlock(&sp->mu);
	finish_group(sp, list, err);
	return -1;
}

static void sync_active(struct spool *sp)
{
	if (spool_timed_fdatasync(sp->active->fd) < 0) {
		if (spool_log_due(&sp->werr_log_ms))
			log_warn("spool: %s: fdatasync of segment %" PRIu64, sp->dir, sp->active->first_seq);
		pthread_mutex_lock(&sp->mu);
		sp->write_errors++;
		sp->last_werr_ms = now_ms();
		pthread_mutex_unlock(&sp->mu);
	}
}

/*
 * Take the queued batches for one group: all of them, unless they hold more
 * than a segment's worth (or GROUP_MAX_BYTES), so segments keep near their
 * size. At least one batch. Under sp->mu.
 */
static struct sub *take_group(struct spool *sp)
{
	uint64_t limit = sp->segment_bytes < GROUP_MAX_BYTES ? sp->segment_bytes : GROUP_MAX_BYTES;
	struct sub *list = sp->q_head, **tail = &sp->q_head;
	uint64_t bytes = 0;

	while (*tail && (bytes == 0 || bytes + (*tail)->b->len <= limit)) {
		bytes += (*tail)->b->len;
		tail = &(*tail)->next;
	}
	sp->q_head = *tail;
	*tail = NULL;
	if (!sp->q_head)
		sp->q_tail = &sp->q_head;
	return list;
}

void *spool_writer_main(void *arg)
{
	struct spool *sp = arg;
	bool interval = sp->fsync == CONF_FSYNC_INTERVAL, dirty = false;
	int64_t last_sync = now_ms();

	thread_name("ackd-writer");
	thread_slice("ackd-writer", sp->slice_us);
	pthread_mutex_lock(&sp->mu);
	while (!sp->stopping) {
		struct sub *list = sp->q_head;

		health_beat(&sp->health);
		if (!list) {
			if (!dirty) {
				/* Idle: wake now and then to show the loop is alive. */
				int64_t due = now_ms() + SPOOL_IDLE_BEAT_MS;
				struct timespec ts = { .tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000 };
				pthread_cond_timedwait(&sp->wake, &sp->mu, &ts);
				continue;
			}
			int64_t due = last_sync + sp->fsync_interval_ms;
			if (now_ms() < due) {
				struct timespec ts = { .tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000 };
				pthread_cond_timedwait(&sp->wake, &sp->mu, &ts);
				continue;
			}
		}
		list = take_group(sp);
		sp->writing = true;
		pthread_mutex_unlock(&sp->mu);

		if (list && commit_group(sp, list) == 0 && interval)
			dirty = true;
		if (dirty && now_ms() >= last_sync + sp->fsync_interval_ms) {
			sync_active(sp);
			dirty = false;
			last_sync = now_ms();
		}
		pthread_mutex_lock(&sp->mu);
		sp->writing = false;
		pthread_cond_broadcast(&sp->idle);
	}
	pthread_mutex_unlock(&sp->mu);
	if (dirty)
		sync_active(sp);
	if (sp->cut_pending) /* last try; else recovery finds the bytes damaged */
		(void)cut_back(sp, sp->active, sp->active->data_end);
	return NULL;
}
