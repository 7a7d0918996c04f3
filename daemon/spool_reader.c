/*
 * spool_reader: the producer's side: spool_next(), spool_get(),
 * spool_ack(), spool_rewind(); and spool_seq_live(), from any thread.
 *
 * Reading and acknowledging. Memory holds no backlog: spool_next() reads the
 * records back from the files in 256 KiB blocks, up to the committed end.
 * Each segment keeps a bitmap of acknowledged sequences; spool_ack() sets a
 * bit and buffers the sequence for the segment's .ack file, which
 * maintenance appends to without fsync (a lost acknowledgement can only
 * cause a duplicate). A segment whose records are all acknowledged, and
 * which is not the active one, is deleted with its .ack file; one over
 * TRIM_STEP is renamed to its temp name instead and shrunk a step per
 * maintenance pass before the unlink (trim_step()). Every 64th
 * record the reader notes its offset, so spool_get() finds a record by
 * sequence without reading the segment from its start.
 *
 * Threads: the producer thread only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

void spool_log_damage(struct spool *sp, struct seg *seg, const struct it_item *item, uint64_t lost)
{
	log_warnx("spool: %s: segment %" PRIu64 ": %s at offset %" PRIu64 ", skipped %" PRIu64
	    " bytes, %" PRIu64 " records lost",
	    sp->dir, seg->first_seq, spool_rec_status_str(item->why), item->off,
	    item->resync_off - item->off, lost);
}

void reader_forget(struct spool *sp, struct seg *seg)
{
	if (sp->rd_seg == seg)
		sp->rd_seg = NULL;
}

/*
 * Read the live record cur_seq of seg with the aux iterator. 1 and *out; 0
 * when it is gone or damaged (then marked lost); -1 when it could not be
 * read (I/O error, out of memory): it stays live, read it again later.
 */
int reader_read_one(struct spool *sp, struct seg *seg, uint64_t cur_seq, struct spool_rec **out)
{
	uint64_t end, end_seq;
	struct it_item item;
	enum it_res r;

	*out = NULL;
	seg_snapshot(sp, seg, &end, &end_seq, NULL);
	it_seek(&sp->aux, seg, cur_seq, end, end_seq);
	while ((r = it_next(&sp->aux, &item)) != IT_END) {
		if (r == IT_DAMAGE) {
			uint64_t to = item.lost_to ? item.lost_to : end_seq;
			if (item.lost_from <= cur_seq && cur_seq < to) {
				spool_log_damage(sp, seg, &item, ack_mark_lost(sp, seg, item.lost_from, to));
				return 0;
			}
			continue;
		}
		if (item.h.seq < cur_seq)
			continue;
		if (item.h.seq > cur_seq)
			break;
		if (item.h.type == SPOOL_REC_KEY) {
			ack_mark(sp, seg, cur_seq, false); /* no message: nothing to read */
			return 0;
		}
		enum spool_rec_status st;
		*out = it_rec_copy(&item, &st);
		if (*out)
			return 1;
		if (st == SPOOL_REC_OK) {
			if (spool_log_due(&sp->ackerr_log_ms))
				log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64
				    ": out of memory, read again later",
				    sp->dir, seg->first_seq, cur_seq);
			return -1;
		}
		log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64 ": %s, record lost",
		    sp->dir, seg->first_seq, cur_seq, spool_rec_status_str(st));
		ack_mark(sp, seg, cur_seq, true);
		return 0;
	}
	if (sp->aux.io_errno) {
		if (spool_log_due(&sp->ackerr_log_ms))
			log_warnx("spool: %s: segment %" PRIu64 ": read: %s, record %" PRIu64
			    " read again later",
			    sp->dir, seg->first_seq, strerror(sp->aux.io_errno), cur_seq);
		return -1;
	}
	return 0;
}

void spool_rewind(struct spool *sp)
{
	pthread_mutex_lock(&sp->mu);
	/* Copies made so far stand for records nobody holds any more. */
	sp->run_first_seq = sp->next_seq;
	pthread_mutex_unlock(&sp->mu);
	sp->read_pos = 0; /* nothing is handed out: no segment may be copied forward yet */
	sp->rd_seg = NULL;
	/*
	 * A copy-forward under way would delete originals the rebuilt producer
	 * is about to read again, and map them to copies it may never be handed
	 * (written after this point they count as made in this run) or may be
	 * handed under their own sequence (written before): keep the originals.
	 */
	if (sp->cf.seg)
		sp->cf.abandoned = true;
	/* No producer holds an original any more: copies are records of their own. */
	seqmap_fini(&sp->fwd);
	seqmap_fini(&sp->rev);
}

int spool_next(struct spool *sp, uint64_t *cursor, struct spool_rec **out)
{
	*out = NULL;
	spool_maint(sp, false);
	for (;;) {
		uint64_t want = *cursor, end, end_seq;
		struct seg *seg;
		struct it_item item;
		enum it_res r;
		bool active;

		pthread_mutex_lock(&sp->mu);
		for (seg = sp->segs; seg && seg->end_seq <= want; seg = seg->next)
			;
		pthread_mutex_unlock(&sp->mu);
		if (!seg)
			return 0;
		seg_snapshot(sp, seg, &end, &end_seq, &active);
		if (want < seg->first_seq)
			want = seg->first_seq;
		if (sp->rd_seg != seg || sp->rd.next_seq > want) {
			it_seek(&sp->rd, seg, want, end, end_seq);
			sp->rd_seg = seg;
		}
		sp->rd.end = end;
		sp->rd.seq_limit = end_seq;

		while ((r = it_next(&sp->rd, &item)) != IT_END) {
			enum spool_rec_status st;
			uint64_t s;

			if (r == IT_DAMAGE) {
				uint64_t to = item.lost_to ? item.lost_to : end_seq;
				uint64_t lost = ack_mark_lost(sp, seg, item.lost_from, to);
				if (lost) /* else found and counted at open already */
					spool_log_damage(sp, seg, &item, lost);
				continue;
			}
			s = item.h.seq;
			seg_cp_note(seg, s, item.off);
			if (s < want || seg_acked(sp, seg, s))
				continue;
			if ((item.h.flags & SPOOL_REC_F_COPY) && s >= sp->run_first_seq)
				continue; /* its original was handed out in this run */
			if (item.h.type == SPOOL_REC_KEY) {
				/* Nothing to produce: the key table read it at open or submit. */
				ack_mark(sp, seg, s, false);
				continue;
			}
			*out = it_rec_copy(&item, &st);
			if (!*out && st == SPOOL_REC_OK) {
				/* Out of memory: read this record again next time. */
				sp->rd_seg = NULL;
				return 0;
			}
			if (!*out) {
				log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64
				    ": %s, record lost",
				    sp->dir, seg->first_seq, s, spool_rec_status_str(st));
				ack_mark(sp, seg, s, true);
				continue;
			}
			*cursor = s + 1;
			if (*cursor > sp->read_pos)
				sp->read_pos = *cursor;
			return 1;
		}
		if (sp->rd.io_errno) {
			if (spool_log_due(&sp->ackerr_log_ms))
				log_warnx("spool: %s: segment %" PRIu64 ": read: %s", sp->dir,
				    seg->first_seq, strerror(sp->rd.io_errno));
			sp->rd_seg = NULL;
			return 0;
		}
		if (active) {
			if (sp->rd.next_seq > *cursor)
				*cursor = sp->rd.next_seq;
			if (*cursor > sp->read_pos)
				sp->read_pos = *cursor;
			return 0;
		}
		/* A finished segment whose records ended early: the rest was damaged. */
		if (sp->rd.next_seq < end_seq) {
			uint64_t n = ack_mark_lost(sp, seg, sp->rd.next_seq, end_seq);
			if (n)
				log_warnx("spool: %s: segment %" PRIu64 ": records %" PRIu64 "..%" PRIu64
				    " missing, %" PRIu64 " lost",
				    sp->dir, seg->first_seq, sp->rd.next_seq, end_seq - 1, n);
		}
		*cursor = end_seq;
		if (*cursor > sp->read_pos)
			sp->read_pos = *cursor;
	}
}

/* Where the record handed out as seq lives now (copy-forward may have moved it). */
struct seg *reader_resolve(struct spool *sp, uint64_t seq, uint64_t *cur)
{
	struct seg *seg = seg_find(sp, seq);

	*cur = seq;
	if (!seg && seqmap_get(&sp->fwd, seq, cur))
		seg = seg_find(sp, *cur);
	if (seg && seg_acked(sp, seg, *cur))
		return NULL;
	return seg;
}

int spool_get(struct spool *sp, uint64_t seq, struct spool_rec **out)
{
	uint64_t cur;
	struct seg *seg = reader_resolve(sp, seq, &cur);
	int rc;

	*out = NULL;
	if (!seg)
		return 0;
	rc = reader_read_one(sp, seg, cur, out);
	if (rc == 1)
		(*out)->seq = seq;
	return rc;
}

void spool_rec_free(struct spool_rec *r) { free(r); }

int spool_seq_live(struct spool *sp, uint64_t seq)
{
	int live = 0;

	pthread_mutex_lock(&sp->mu);
	for (struct seg *seg = sp->segs; seg; seg = seg->next) {
		if (seq >= seg->first_seq && seq < seg->end_seq) {
			live = !seg_is_acked(seg, seq);
			break;
		}
	}
	pthread_mutex_unlock(&sp->mu);
	return live;
}

static void ack_one(struct spool *sp, uint64_t seq, bool now)
{
	struct seg *seg = seg_find(sp, seq);
	uint64_t cur;

	if (!seg && seqmap_get(&sp->fwd, seq, &cur)) {
		seqmap_del(&sp->fwd, seq);
		seqmap_del(&sp->rev, cur);
		seg = seg_find(sp, cur);
		seq = cur;
	}
	if (seg) {
		ack_mark(sp, seg, seq, false);
		if (now)
			ack_flush(sp, seg);
		seg_maybe_delete(sp, seg);
	}
	spool_maint(sp, false);
}

void spool_ack(struct spool *sp, uint64_t seq) { ack_one(sp, seq, false); }

void spool_ack_now(struct spool *sp, uint64_t seq) { ack_one(sp, seq, true); }

void spool_ack_keyed(struct spool *sp, uint64_t seq, const char *id, int32_t partition,
    int64_t offset)
{
	ack_one(sp, seq, true);
	if (keys_append_ack(sp, seq, id, partition, offset) < 0)
		log_warn("spool: %s: cannot note Kafka's offset of keyed record %" PRIu64
		    " in the keys file; after a restart its key answers 202 for it", sp->dir, seq);
}
