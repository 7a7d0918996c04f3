/*
 * spool_seg: the segment file: names, the in-memory struct seg and its
 * acknowledged bitmap, creating a segment (temp file, header, rename),
 * sealing it with a footer, deleting it (and shrinking deleted ones step by
 * step), finding the segment of a sequence.
 *
 * Threads: seg_create() and seg_seal() run on the writer thread (at open, on
 * the opening thread); deletion and trimming on the producer thread, which
 * alone deletes segments; the rest from either, under sp->mu where marked.
 */
#include "config.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

void seg_name(char *buf, size_t len, uint64_t first, const char *ext)
{
	snprintf(buf, len, "seg-%020" PRIu64 ".%s", first, ext);
}

/* "seg-<20 digits>.<ext>" -> first sequence. */
bool seg_parse_name(const char *name, const char *ext, uint64_t *first)
{
	size_t elen = strlen(ext);
	uint64_t v = 0;

	if (strlen(name) != 4 + 20 + 1 + elen || strncmp(name, "seg-", 4) != 0 || name[24] != '.' ||
	    strcmp(name + 25, ext) != 0)
		return false;
	for (int i = 4; i < 24; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(name[i] - '0');
		if (v >= SPOOL_SEQ_MAX)
			return false; /* not a name the writer gives: no segment */
	}
	*first = v;
	return v > 0;
}

size_t spool_rec_total(const unsigned char *rec)
{
	uint32_t len = (uint32_t)rec[8] | (uint32_t)rec[9] << 8 | (uint32_t)rec[10] << 16 |
	    (uint32_t)rec[11] << 24;
	return SPOOL_REC_HDR_SIZE + len;
}

struct seg *seg_new(uint64_t first)
{
	struct seg *seg = calloc(1, sizeof(*seg));

	if (!seg)
		return NULL;
	seg->first_seq = first;
	seg->end_seq = first;
	seg->fd = -1;
	seg->ack_fd = -1;
	return seg;
}

void seg_free(struct seg *seg)
{
	if (!seg)
		return;
	if (seg->fd >= 0)
		spool_io.close(seg->fd);
	if (seg->ack_fd >= 0)
		spool_io.close(seg->ack_fd);
	free(seg->acked);
	free(seg->cps);
	free(seg);
}

/* Bitmap room for sequences below end; 0 or -1 (ENOMEM). Under sp->mu. */
int seg_reserve(struct seg *seg, uint64_t end)
{
	size_t need = (size_t)((end - seg->first_seq + 63) / 64);
	size_t words = seg->acked_words ? seg->acked_words : 16;
	uint64_t *a;

	if (need <= seg->acked_words)
		return 0;
	while (words < need)
		words *= 2;
	a = realloc(seg->acked, words * sizeof(*a));
	if (!a)
		return -1;
	memset(a + seg->acked_words, 0, (words - seg->acked_words) * sizeof(*a));
	seg->acked = a;
	seg->acked_words = words;
	return 0;
}

/* The segment holding seq (committed), or NULL. Producer thread. */
struct seg *seg_find(struct spool *sp, uint64_t seq)
{
	struct seg *seg;

	pthread_mutex_lock(&sp->mu);
	for (seg = sp->segs; seg; seg = seg->next) {
		if (seq < seg->first_seq) {
			seg = NULL;
			break;
		}
		if (seq < seg->end_seq)
			break;
	}
	pthread_mutex_unlock(&sp->mu);
	return seg;
}

void seg_snapshot(struct spool *sp, struct seg *seg, uint64_t *end, uint64_t *end_seq,
    bool *active)
{
	pthread_mutex_lock(&sp->mu);
	*end = seg->data_end;
	*end_seq = seg->end_seq;
	if (active)
		*active = seg == sp->active;
	pthread_mutex_unlock(&sp->mu);
}

bool seg_acked(struct spool *sp, struct seg *seg, uint64_t seq)
{
	bool acked;

	pthread_mutex_lock(&sp->mu);
	acked = seq >= seg->end_seq || seg_is_acked(seg, seq);
	pthread_mutex_unlock(&sp->mu);
	return acked;
}

/*
 * A footer whose CRC holds can still be nonsense (written by something else):
 * no more records than fit between header and footer, no sequence near the
 * top of the range (the bitmap is sized by it). Else the segment is scanned.
 */
bool seg_seal_plausible(const struct spool_seal *s)
{
	return s->end_seq >= s->first_seq && s->end_seq < (UINT64_C(1) << 62) &&
	    s->data_end >= SPOOL_SEG_HDR_SIZE &&
	    s->end_seq - s->first_seq <= (s->data_end - SPOOL_SEG_HDR_SIZE) / SPOOL_REC_HDR_SIZE;
}

/* Create segment first: temp file, header, fsync, rename, fsync the directory. */
int seg_create(struct spool *sp, uint64_t first, struct seg **out)
{
	char tmp[64], name[64];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	struct iovec iov = { hdr, sizeof(hdr) };
	struct seg *seg = NULL;
	uint64_t zero_end = 0;
	int fd;

	*out = NULL;
	snprintf(tmp, sizeof(tmp), ".seg-%020" PRIu64 ".tmp", first);
	seg_name(name, sizeof(name), first, "spool");
	fd = spare_take(sp, tmp, &zero_end);
	if (fd < 0)
		fd = spool_io.openat(sp->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	seg = seg_new(first);
	if (!seg || seg_reserve(seg, first + 1) < 0)
		goto fail;
	spool_seg_hdr_encode(hdr, first, wall_ms());
	if (spool_pwritev_all(fd, &iov, 1, 0) < 0 || spool_io.fdatasync(fd) < 0)
		goto fail;
	if (spool_io.renameat(sp->dir_fd, tmp, sp->dir_fd, name) < 0)
		goto fail;
	if (spool_io.fsync(sp->dir_fd) < 0) {
		/*
		 * The writer keeps appending to the old segment; an empty segment
		 * left under its final name would end the old one early at the
		 * next open, and its later records would be lost. Take it back.
		 */
		int saved = errno;
		spool_io.unlinkat(sp->dir_fd, name, 0);
		if (spool_io.fsync(sp->dir_fd) < 0)
			log_warn("spool: %s: fsync of the directory", sp->dir);
		errno = saved;
		goto fail;
	}
	seg->fd = fd;
	seg->gen = sp->next_gen++;
	seg->data_end = SPOOL_SEG_HDR_SIZE;
	seg->file_bytes = SPOOL_SEG_HDR_SIZE;
	seg->zero_end = zero_end;
	*out = seg;
	return 0;
fail:
	{
		int saved = errno;
		seg_free(seg);
		spool_io.close(fd);
		spool_io.unlinkat(sp->dir_fd, tmp, 0);
		errno = saved;
	}
	return -1;
}

/* Append the footer to a finished segment; on failure it stays unsealed. */
void seg_seal(struct spool *sp, struct seg *seg)
{
	unsigned char buf[SPOOL_SEAL_SIZE];
	struct iovec iov = { buf, sizeof(buf) };
	struct spool_seal s;

	pthread_mutex_lock(&sp->mu);
	s.first_seq = seg->first_seq;
	s.end_seq = seg->end_seq;
	s.nrecs = seg->nrecs;
	s.data_end = seg->data_end;
	s.min_ts = seg->min_ts;
	pthread_mutex_unlock(&sp->mu);
	spool_seal_encode(buf, &s);
	/*
	 * The footer must end the file. A segment begun in a spare rolls only
	 * once its records reach segment_bytes, the spare's size: they have
	 * overwritten every zero.
	 */
	assert(seg->zero_end <= s.data_end);
	if (spool_pwritev_all(seg->fd, &iov, 1, s.data_end) < 0 ||
	    (sp->fsync != CONF_FSYNC_NEVER && spool_io.fdatasync(seg->fd) < 0)) {
		if (spool_log_due(&sp->werr_log_ms))
			log_warn("spool: %s: cannot seal segment %" PRIu64, sp->dir, seg->first_seq);
		if (spool_io.ftruncate(seg->fd, (off_t)s.data_end) < 0)
			log_warn("spool: %s: cannot truncate segment %" PRIu64, sp->dir, seg->first_seq);
		return;
	}
	pthread_mutex_lock(&sp->mu);
	seg->sealed = true;
	seg->file_bytes += SPOOL_SEAL_SIZE;
	sp->bytes += SPOOL_SEAL_SIZE;
	pthread_mutex_unlock(&sp->mu);
}

/* Delete a segment and its .ack file. Producer thread; not the active one. */
void seg_delete(struct spool *sp, struct seg *seg)
{
	struct seg **pp;
	char name[64], tmp[64];
	uint64_t size;

	/* Its Idempotency-Keys outlive it: in the keys file, synced, before it goes. */
	if (keys_save(sp, seg) < 0)
		log_warn("spool: %s: cannot save the Idempotency-Keys of segment %" PRIu64
		    " to the keys file; they are forgotten", sp->dir, seg->first_seq);
	pthread_mutex_lock(&sp->mu);
	for (pp = &sp->segs; *pp && *pp != seg; pp = &(*pp)->next)
		;
	*pp = seg->next;
	sp->nsegs--;
	sp->bytes -= seg->file_bytes;
	sp->live -= seg_live(seg);
	size = seg->file_bytes;
	pthread_mutex_unlock(&sp->mu);

	reader_forget(sp, seg);
	seg_name(name, sizeof(name), seg->first_seq, "spool");
	snprintf(tmp, sizeof(tmp), ".seg-%020" PRIu64 ".tmp", seg->first_seq);
	if (size > TRIM_STEP && sp->ntrims < TRIM_MAX &&
	    spool_io.renameat(sp->dir_fd, name, sp->dir_fd, tmp) == 0) {
		/* Gone from the spool; trim_step() frees its blocks a step at a time. */
		sp->trims[sp->ntrims++] = (struct trim){ seg->fd, seg->first_seq, size };
		seg->fd = -1;
	} else if (spool_io.unlinkat(sp->dir_fd, name, 0) < 0)
		log_warn("spool: %s: cannot delete %s", sp->dir, name);
	seg_name(name, sizeof(name), seg->first_seq, "ack");
	if (spool_io.unlinkat(sp->dir_fd, name, 0) < 0 && errno != ENOENT)
		log_warn("spool: %s: cannot delete %s", sp->dir, name);
	if (spool_io.fsync(sp->dir_fd) < 0)
		log_warn("spool: %s: fsync of the directory", sp->dir);
	log_debug("spool: %s: deleted segment %" PRIu64, sp->dir, seg->first_seq);
	seg_free(seg);
}

/*
 * Shrink the oldest deleted segment by TRIM_STEP; unlink it once empty.
 * Unlinking 64 MiB at once (blocks freed, discarded on a file system mounted
 * with discard) stalled the writer's next fdatasync by 15-40 ms; 4 MiB per
 * maintenance pass does not show. A crash leaves the temp file, which
 * spool_open() removes like any unfinished segment. Producer thread.
 */
void trim_step(struct spool *sp, bool all)
{
	char tmp[64];

	while (sp->ntrims > 0) {
		struct trim *t = &sp->trims[0];
		t->size = t->size > TRIM_STEP ? t->size - TRIM_STEP : 0;
		if (!all && t->size > 0 && spool_io.ftruncate(t->fd, (off_t)t->size) == 0)
			return;
		/* The last step, or truncation failed: the unlink frees the rest. */
		spool_io.close(t->fd);
		snprintf(tmp, sizeof(tmp), ".seg-%020" PRIu64 ".tmp", t->first_seq);
		if (spool_io.unlinkat(sp->dir_fd, tmp, 0) < 0)
			log_warn("spool: %s: cannot delete %s", sp->dir, tmp);
		memmove(sp->trims, sp->trims + 1, --sp->ntrims * sizeof(*sp->trims));
		if (!all)
			return;
	}
}

/* Delete seg if every record is acknowledged and nothing still needs it. */
void seg_maybe_delete(struct spool *sp, struct seg *seg)
{
	bool done;

	pthread_mutex_lock(&sp->mu);
	done = seg != sp->active && seg != sp->cf.seg && seg_live(seg) == 0;
	pthread_mutex_unlock(&sp->mu);
	if (done)
		seg_delete(sp, seg);
}

int spool_name_kind(const char *name, bool in_failed, uint64_t *first)
{
	size_t len = strlen(name);

	*first = 0;
	if (!strcmp(name, ".") || !strcmp(name, ".."))
		return -1;
	if (in_failed)
		return failed_parse_name(name, first) ? SPOOL_NAME_FAILED : SPOOL_NAME_OTHER;
	/* paused/: the Control API's pause files (control.c), not the spool's. */
	if (!strcmp(name, "lock") || !strcmp(name, "failed") || !strcmp(name, "keys") ||
	    !strcmp(name, "keys.tmp") || !strcmp(name, "paused"))
		return -1;
	if (seg_parse_name(name, "spool", first))
		return SPOOL_NAME_SEG;
	if (seg_parse_name(name, "ack", first))
		return SPOOL_NAME_ACK;
	if (!strncmp(name, ".seg-", 5) && len > 9 && !strcmp(name + len - 4, ".tmp"))
		return SPOOL_NAME_TEMP;
	return SPOOL_NAME_OTHER;
}

int spool_list(int dir_fd, const char *sub, spool_list_fn *each, void *arg)
{
	struct dirent *de;
	int dfd = sub ? openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : dup(dir_fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
	int rc = 0;

	if (!d) {
		int saved = errno;
		if (dfd >= 0)
			close(dfd); /* read-only, not opened through the seam */
		errno = saved;
		return -1;
	}
	rewinddir(d);
	while (rc == 0 && (de = readdir(d))) {
		uint64_t first;
		int kind = spool_name_kind(de->d_name, sub != NULL, &first);
		if (kind >= 0)
			rc = each(arg, de->d_name, (enum spool_name_kind)kind, first);
	}
	{
		int saved = errno;
		closedir(d);
		errno = saved;
	}
	return rc;
}
