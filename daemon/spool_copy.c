/*
 * spool_copy: copy-forward.
 *
 * Copy-forward. One record stuck in retry must not pin a 64 MiB segment. A
 * segment that is not among the newest four, whose records were all handed
 * out by spool_next() and of which fewer than 10% are unacknowledged, has
 * its live records copied (flagged SPOOL_REC_F_COPY, with new sequences)
 * into the active segment through the writer. Once that commit is durable,
 * maintenance maps each original sequence to its copy (fwd) and back (rev),
 * acknowledges copies whose original was acknowledged meanwhile, and deletes
 * the old segment. The producer keeps using the sequence it was given:
 * spool_ack(), spool_fail() and spool_get() follow fwd. spool_next() never
 * hands out a copy made in this run (its original was handed out already);
 * after a restart the maps are gone and copies are ordinary records. A crash
 * between the copy and the deletion leaves both: a duplicate, never a loss.
 *
 * Threads: the producer thread (cf_done() runs on the writer thread and
 * only sets fields under sp->mu).
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

static void cf_reset(struct spool *sp)
{
	free(sp->cf.seqs);
	sp->cf.seqs = NULL;
	sp->cf.n = 0;
	sp->cf.abandoned = false;
	pthread_mutex_lock(&sp->mu);
	sp->cf.seg = NULL;
	sp->cf.done = false;
	pthread_mutex_unlock(&sp->mu);
}

static void cf_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct spool *sp = arg;

	pthread_mutex_lock(&sp->mu);
	sp->cf.done = true;
	sp->cf.err = err;
	sp->cf.first_seq = first_seq;
	pthread_mutex_unlock(&sp->mu);
}

/* The copies are durable: point the originals at them, drop the old segment. */
/* Keep the originals of a copy-forward: the copies are surplus, acknowledged. */
static void cf_drop_copies(struct spool *sp, const char *why)
{
	struct seg *seg;

	log_warnx("spool: %s: %s, keeping segment %" PRIu64, sp->dir, why, sp->cf.seg->first_seq);
	for (size_t i = 0; i < sp->cf.n; i++)
		if ((seg = seg_find(sp, sp->cf.first_seq + i)))
			ack_mark(sp, seg, sp->cf.first_seq + i, false);
	sp->cf.retry_ms = now_ms() + CF_RETRY_MS;
	cf_reset(sp);
}

void cf_apply(struct spool *sp)
{
	struct seg *old = sp->cf.seg, *seg;
	uint64_t first = sp->cf.first_seq;
	size_t n = sp->cf.n, moved = 0;

	if (sp->cf.err != SPOOL_OK) {
		log_warnx("spool: %s: copying segment %" PRIu64 " forward failed, retrying later",
		    sp->dir, old->first_seq);
		sp->cf.retry_ms = now_ms() + CF_RETRY_MS;
		cf_reset(sp);
		seg_maybe_delete(sp, old);
		return;
	}
	if (sp->cf.abandoned) {
		cf_drop_copies(sp, "the producer was rebuilt during a copy-forward");
		return;
	}
	/*
	 * With spool.fsync interval or never the copies may still be in the page
	 * cache: they must be on disk before the originals are deleted.
	 */
	seg = seg_find(sp, first);
	if (sp->fsync != CONF_FSYNC_ALWAYS && (!seg || spool_timed_fdatasync(seg->fd) < 0)) {
		cf_drop_copies(sp, "cannot make the copies durable");
		return;
	}
	if (seqmap_reserve(&sp->fwd, n) < 0 || seqmap_reserve(&sp->rev, n) < 0) {
		cf_drop_copies(sp, "out of memory mapping copied records");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t o = sp->cf.seqs[i], copy = first + i, orig;
		if (seg_acked(sp, old, o)) {
			if ((seg = seg_find(sp, copy)))
				ack_mark(sp, seg, copy, false);
			continue;
		}
		if (seqmap_get(&sp->rev, o, &orig))
			seqmap_del(&sp->rev, o);
		else
			orig = o;
		seqmap_put_nogrow(&sp->fwd, orig, copy);
		seqmap_put_nogrow(&sp->rev, copy, orig);
		pthread_mutex_lock(&sp->mu);
		seg_set_acked(old, o);
		sp->live--;
		pthread_mutex_unlock(&sp->mu);
		moved++;
	}
	log_info("spool: %s: copied %zu live records of segment %" PRIu64 " forward, deleting it",
	    sp->dir, moved, old->first_seq);
	cf_reset(sp);
	seg_delete(sp, old);
}

/*
 * Pick an old (CF_KEEP_NEWEST segments were created after it), almost empty
 * segment whose records were all handed out.
 */
static struct seg *cf_candidate(struct spool *sp)
{
	struct seg *seg, *pick = NULL;

	pthread_mutex_lock(&sp->mu);
	for (seg = sp->segs; seg && seg->gen + CF_KEEP_NEWEST <= sp->active->gen; seg = seg->next) {
		uint64_t total = seg->end_seq - seg->first_seq, live = seg_live(seg);
		if (seg->end_seq > sp->read_pos)
			break;
		if (live > 0 && live * 100 < total * CF_LIVE_PERCENT) {
			pick = seg;
			break;
		}
	}
	pthread_mutex_unlock(&sp->mu);
	return pick;
}

void cf_start(struct spool *sp)
{
	struct seg *seg;
	struct spool_batch *b = NULL;
	uint64_t end, end_seq, *seqs = NULL;
	struct it_item item;
	enum it_res r;
	size_t n = 0, cap;

	if (sp->cf.seg || now_ms() < sp->cf.retry_ms || !(seg = cf_candidate(sp)))
		return;
	seg_snapshot(sp, seg, &end, &end_seq, NULL);
	cap = (size_t)seg_live(seg);
	b = spool_batch_new(cap);
	seqs = calloc(cap, sizeof(*seqs));
	if (!b || !seqs)
		goto fail;
	it_init(&sp->aux, seg->fd, SPOOL_SEG_HDR_SIZE, end, seg->first_seq, end_seq);
	while ((r = it_next(&sp->aux, &item)) != IT_END) {
		if (r == IT_DAMAGE) {
			uint64_t to = item.lost_to ? item.lost_to : end_seq;
			spool_log_damage(sp, seg, &item, ack_mark_lost(sp, seg, item.lost_from, to));
			continue;
		}
		if (seg_acked(sp, seg, item.h.seq))
			continue;
		if (item.h.type == SPOOL_REC_KEY) {
			ack_mark(sp, seg, item.h.seq, false); /* not a message: nothing to copy */
			continue;
		}
		if (!it_payload_ok(&item)) {
			log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64 ": bad payload crc, record lost",
			    sp->dir, seg->first_seq, item.h.seq);
			ack_mark(sp, seg, item.h.seq, true);
			continue;
		}
		if (n == cap || batch_add_copy(b, item.rec, item.len) < 0)
			goto fail;
		seqs[n++] = item.h.seq;
	}
	if (sp->aux.io_errno)
		goto fail;
	if (n == 0) {
		spool_batch_free(b);
		free(seqs);
		seg_maybe_delete(sp, seg);
		return;
	}
	sp->cf.seqs = seqs;
	sp->cf.n = n;
	pthread_mutex_lock(&sp->mu);
	sp->cf.seg = seg;
	sp->cf.done = false;
	pthread_mutex_unlock(&sp->mu);
	if (spool_submit_batch(sp, b, cf_done, sp, false) != SPOOL_OK) {
		cf_reset(sp);
		return;
	}
	log_debug("spool: %s: copying %zu live records of segment %" PRIu64 " forward", sp->dir, n,
	    seg->first_seq);
	return;
fail:
	log_warnx("spool: %s: cannot copy segment %" PRIu64 " forward, retrying later", sp->dir,
	    seg->first_seq);
	sp->cf.retry_ms = now_ms() + CF_RETRY_MS;
	spool_batch_free(b);
	free(seqs);
}
