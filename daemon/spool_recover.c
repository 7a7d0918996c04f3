/*
 * spool_recover: recovery at spool_open().
 *
 * Recovery (spool_open). Sealed segments are trusted by their footer; the
 * last, unsealed segment is read in full with its payload CRCs. A damaged
 * region followed by a valid record is skipped and its sequences are marked
 * lost (counted, logged); damage with no valid record after it is a torn
 * tail and is cut off. Sealed segments' payloads are checked lazily by
 * spool_next(), which handles damage the same way. Unknown files are
 * ignored with a warning, unfinished temp files and orphan .ack files
 * removed, a partial last .ack entry dropped.
 *
 * Threads: the opening thread, before the writer thread starts.
 */
#include "config.h"

#include <dirent.h>
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

struct lost_range {
	uint64_t from, to;
};

/*
 * Scan an unsealed segment. The last one (full) has its payload CRCs checked,
 * its torn tail cut and damaged ranges returned in *lost; others only have
 * their headers read, damage being left to the reader.
 */
static int scan_segment(struct spool *sp, struct seg *seg, uint64_t size, uint64_t seq_limit,
    bool full, struct lost_range **lost, size_t *nlost)
{
	struct iter it = { 0 };
	struct it_item item;
	enum it_res r;
	uint64_t good_end = SPOOL_SEG_HDR_SIZE, last_seq = 0;
	size_t npending = 0, cap = 0;
	/*
	 * The newest segment: where the first record of a keyed batch whose
	 * KEY record has not followed yet starts (0: none), and what was known
	 * before it. A keyed batch is one group write ending with its KEY
	 * record; without that record the write never completed, and its
	 * records are cut with the torn tail, so a key and its records are
	 * durable together or not at all.
	 */
	uint64_t keyed_off = 0, keyed_last_seq = 0, keyed_nrecs = 0;
	int64_t keyed_min_ts = 0;
	size_t keyed_nlost = 0;

	*lost = NULL;
	*nlost = 0;
	it_init(&it, seg->fd, SPOOL_SEG_HDR_SIZE, size, seg->first_seq, seq_limit);
	while ((r = it_next(&it, &item)) != IT_END) {
		bool bad = r == IT_DAMAGE || (full && !it_payload_ok(&item));
		if (bad && !full)
			continue;
		if (bad) {
			if (*nlost == cap) {
				struct lost_range *nl;
				cap = cap ? cap * 2 : 8;
				if (!(nl = realloc(*lost, cap * sizeof(*nl))))
					goto fail;
				*lost = nl;
			}
			(*lost)[*nlost].from = r == IT_DAMAGE ? item.lost_from : item.h.seq;
			(*lost)[*nlost].to = r == IT_DAMAGE ? item.lost_to : item.h.seq + 1;
			(*nlost)++;
			npending++;
			if (r == IT_DAMAGE)
				log_warnx("spool: %s: segment %" PRIu64 ": %s at offset %" PRIu64, sp->dir,
				    seg->first_seq, spool_rec_status_str(item.why), item.off);
			else
				log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64
				    ": bad payload crc at offset %" PRIu64,
				    sp->dir, seg->first_seq, item.h.seq, item.off);
			continue;
		}
		/* A valid record: the damage before it was in the middle, not a tail. */
		npending = 0;
		if (full && (item.h.type == SPOOL_REC_KEY || !(item.h.flags & SPOOL_REC_F_KEYED))) {
			keyed_off = 0; /* the batch ended: with its key, or damaged in the middle */
		} else if (full && (item.h.flags & SPOOL_REC_F_KEYED) && keyed_off == 0) {
			keyed_off = item.off;
			keyed_last_seq = last_seq;
			keyed_nrecs = seg->nrecs;
			keyed_min_ts = seg->min_ts;
			keyed_nlost = *nlost;
		}
		last_seq = item.h.seq;
		good_end = item.off + item.len;
		/* The peek is unchecked: a payload too short for it is left to the reader. */
		if (item.h.payload_len >= 8 && (seg->nrecs == 0 ||
		    spool_rec_peek_timestamp(item.rec) < seg->min_ts))
			seg->min_ts = spool_rec_peek_timestamp(item.rec);
		seg->nrecs++;
	}
	if (it.io_errno) {
		errno = it.io_errno;
		goto fail;
	}
	*nlost -= npending; /* damage at the very end is the torn tail */
	if (full && keyed_off) {
		log_warnx("spool: %s: segment %" PRIu64 ": a batch with an Idempotency-Key at offset %"
		    PRIu64 " lacks its key record: cut with the torn tail",
		    sp->dir, seg->first_seq, keyed_off);
		good_end = keyed_off;
		last_seq = keyed_last_seq;
		seg->nrecs = keyed_nrecs;
		seg->min_ts = keyed_min_ts;
		if (*nlost > keyed_nlost)
			*nlost = keyed_nlost;
	}
	seg->data_end = good_end;
	seg->end_seq = last_seq ? last_seq + 1 : seg->first_seq;
	if (full && good_end < size) {
		/*
		 * Zeros that end the file hold no record: a spare segment's unused
		 * space (spool_spare.c), or a write whose size reached the disk
		 * and its data not. They go with the cut, not counted as torn.
		 */
		uint64_t zeros_from;
		if (spool_zero_tail(seg->fd, good_end, size, &zeros_from) < 0)
			zeros_from = size; /* unread: counted torn, as before spares */
		if (zeros_from > good_end)
			log_warnx("spool: %s: segment %" PRIu64 ": torn tail of %" PRIu64
			    " bytes at offset %" PRIu64 " cut off",
			    sp->dir, seg->first_seq, zeros_from - good_end, good_end);
		if (size > zeros_from)
			log_info("spool: %s: segment %" PRIu64 ": %" PRIu64 " zero bytes after offset %"
			    PRIu64 " (unused space) cut off",
			    sp->dir, seg->first_seq, size - zeros_from, zeros_from);
		if (spool_io.ftruncate(seg->fd, (off_t)good_end) < 0 || spool_io.fdatasync(seg->fd) < 0)
			goto fail;
		sp->torn_bytes += zeros_from - good_end;
		size = good_end;
	}
	seg->file_bytes = size;
	it_fini(&it);
	return 0;
fail:
	it_fini(&it);
	return -1;
}

/*
 * Load one segment file. last: the newest, scanned fully and appended to
 * later. seq_limit: the next segment's first sequence (0: none). *out NULL
 * when the file holds no records and was removed.
 */
static int seg_load(struct spool *sp, uint64_t first, uint64_t seq_limit, bool last,
    struct seg **out, char *err, size_t errlen)
{
	char name[64];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE], foot[SPOOL_SEAL_SIZE];
	struct lost_range *lost = NULL;
	size_t nlost = 0, got;
	struct spool_seal seal;
	struct seg *seg = NULL;
	struct stat st;
	uint64_t hdr_first, size;
	int fd;

	*out = NULL;
	seg_name(name, sizeof(name), first, "spool");
	fd = spool_io.openat(sp->dir_fd, name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "spool %s: open %s: %s", sp->dir, name, strerror(errno));
		goto fail;
	}
	size = (uint64_t)st.st_size;
	if (size < SPOOL_SEG_HDR_SIZE) {
		log_warnx("spool: %s: %s is too short to hold a segment, removing it", sp->dir, name);
		spool_io.close(fd);
		spool_io.unlinkat(sp->dir_fd, name, 0);
		return 0;
	}
	if (spool_pread_all(fd, hdr, sizeof(hdr), 0, &got) < 0 || got != sizeof(hdr)) {
		snprintf(err, errlen, "spool %s: read %s: %s", sp->dir, name, strerror(errno));
		goto fail;
	}
	if (spool_seg_hdr_parse(hdr, sizeof(hdr), &hdr_first) < 0 || hdr_first != first)
		log_warnx("spool: %s: %s: damaged segment header, going by the file name", sp->dir, name);
	if (!(seg = seg_new(first))) {
		snprintf(err, errlen, "spool %s: out of memory", sp->dir);
		goto fail;
	}
	seg->fd = fd;
	fd = -1;

	if (size >= SPOOL_SEG_HDR_SIZE + SPOOL_SEAL_SIZE &&
	    spool_pread_all(seg->fd, foot, sizeof(foot), size - SPOOL_SEAL_SIZE, &got) == 0 &&
	    got == sizeof(foot) && spool_seal_parse(foot, &seal) == 0 && seal.first_seq == first &&
	    seal.data_end == size - SPOOL_SEAL_SIZE && (!seq_limit || seal.end_seq <= seq_limit) &&
	    seg_seal_plausible(&seal)) {
		seg->sealed = true;
		seg->end_seq = seal.end_seq;
		seg->data_end = seal.data_end;
		seg->file_bytes = size;
		seg->nrecs = seal.nrecs;
		seg->min_ts = seal.min_ts;
	} else if (scan_segment(sp, seg, size, seq_limit, last, &lost, &nlost) < 0) {
		snprintf(err, errlen, "spool %s: recovering %s: %s", sp->dir, name, strerror(errno));
		goto fail;
	}
	if (seg_reserve(seg, seg->end_seq + 1) < 0) {
		snprintf(err, errlen, "spool %s: out of memory", sp->dir);
		goto fail;
	}
	ack_load(sp, seg);
	pthread_mutex_lock(&sp->mu);
	sp->live += seg_live(seg);
	pthread_mutex_unlock(&sp->mu);
	for (size_t i = 0; i < nlost; i++) {
		uint64_t to = lost[i].to ? lost[i].to : seg->end_seq;
		ack_mark_lost(sp, seg, lost[i].from, to);
	}
	free(lost);
	*out = seg;
	return 0;
fail:
	if (fd >= 0)
		spool_io.close(fd);
	free(lost);
	seg_free(seg);
	return -1;
}

int spool_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int spool_push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		uint64_t *nv = realloc(*v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = x;
	return 0;
}

struct listing {
	struct spool *sp;
	uint64_t *segs, *acks;
	size_t nsegs, nacks, scap, acap;
};

static int list_one(void *arg, const char *name, enum spool_name_kind kind, uint64_t first)
{
	struct listing *l = arg;
	struct spool *sp = l->sp;

	switch (kind) {
	case SPOOL_NAME_SEG:
		return spool_push_u64(&l->segs, &l->nsegs, &l->scap, first);
	case SPOOL_NAME_ACK:
		return spool_push_u64(&l->acks, &l->nacks, &l->acap, first);
	case SPOOL_NAME_TEMP:
		log_info("spool: %s: removing unfinished segment %s", sp->dir, name);
		spool_io.unlinkat(sp->dir_fd, name, 0);
		return 0;
	case SPOOL_NAME_FAILED:
	case SPOOL_NAME_OTHER:
		break;
	}
	log_warnx("spool: %s: ignoring unknown file %s", sp->dir, name);
	return 0;
}

/* List the directory: segments and ack files sorted, junk reported. */
static int list_dir(struct spool *sp, uint64_t **segs, size_t *nsegs, uint64_t **acks,
    size_t *nacks, char *err, size_t errlen)
{
	struct listing l = { .sp = sp };

	if (spool_list(sp->dir_fd, NULL, list_one, &l) < 0) {
		snprintf(err, errlen, "spool %s: cannot list: %s", sp->dir, strerror(errno));
		free(l.segs);
		free(l.acks);
		return -1;
	}
	if (l.nsegs)
		qsort(l.segs, l.nsegs, sizeof(*l.segs), spool_cmp_u64);
	*segs = l.segs;
	*nsegs = l.nsegs;
	*acks = l.acks;
	*nacks = l.nacks;
	return 0;
}

/*
 * Remove segment files too short to hold a header before anything depends
 * on the listing: which segment is the newest (scanned in full, its torn
 * tail cut, reused when empty) and each one's sequence limit are decided by
 * the segments that remain. Otherwise an empty file after the real newest
 * segment leaves that one scanned by headers only, its torn tail on disk,
 * and a new record written in front of old bytes that come back later.
 */
static void drop_short_segments(struct spool *sp, uint64_t *firsts, size_t *n)
{
	size_t kept = 0;

	for (size_t i = 0; i < *n; i++) {
		char name[64];
		struct stat st;

		seg_name(name, sizeof(name), firsts[i], "spool");
		if (fstatat(sp->dir_fd, name, &st, 0) == 0 && (uint64_t)st.st_size < SPOOL_SEG_HDR_SIZE) {
			log_warnx("spool: %s: %s is too short to hold a segment, removing it", sp->dir,
			    name);
			if (spool_io.unlinkat(sp->dir_fd, name, 0) == 0)
				continue;
			log_warn("spool: %s: cannot remove %s", sp->dir, name);
		}
		firsts[kept++] = firsts[i];
	}
	*n = kept;
}

/* Hand the sequence and ackd-id of copy item to sp->on_copy. */
static void copy_report(struct spool *sp, const struct it_item *item)
{
	struct spool_hdr few[8], *hdrs = few;
	struct spool_msg m;

	if (spool_rec_decode(item->rec, item->len, NULL, &m, few, 8) != SPOOL_REC_OK)
		return; /* damaged: left to the reader */
	if (m.nhdrs > 8) {
		if (!(hdrs = calloc(m.nhdrs, sizeof(*hdrs)))) {
			log_warnx("spool: %s: out of memory reading copied record %" PRIu64 "; its "
			    "Idempotency-Key may answer 202", sp->dir, item->h.seq);
			return;
		}
		if (spool_rec_decode(item->rec, item->len, NULL, &m, hdrs, m.nhdrs) != SPOOL_REC_OK)
			goto out;
	}
	/*
	 * A redriven dead letter carries its original's ackd-id, but no key
	 * names it: it must not take over the key of the original (which Kafka
	 * holds), or the start-up check would take the original for it.
	 */
	const struct spool_hdr *id = NULL;
	for (size_t i = 0; i < m.nhdrs; i++) {
		if (spool_hdr_is(&hdrs[i], SPOOL_HDR_REDRIVE_COUNT))
			goto out;
		if (spool_hdr_is(&hdrs[i], SPOOL_HDR_ID) && !id)
			id = &hdrs[i];
	}
	if (id)
		sp->on_copy(sp->on_key_arg, item->h.seq, id->value, id->value_len);
out:
	if (hdrs != few)
		free(hdrs);
}

/*
 * Hand every intact KEY record of seg to sp->on_key, and its unacknowledged
 * copies to sp->on_copy. Reads the whole segment (headers, and the payloads
 * of KEY records, keyed messages and copies): the cost of keys that survive
 * a restart. Damage is left to the reader, as for any record.
 *
 * A key is handed over only with its whole batch (struct batch_run):
 * loaded, a key that survived records of its batch would answer for
 * messages that are gone; forgotten, the client's retry writes them again.
 */
static int load_keys(struct spool *sp, struct seg *seg)
{
	struct iter it = { 0 };
	struct it_item item;
	enum it_res r;
	struct batch_run run;

	batch_run_init(&run);
	it_init(&it, seg->fd, SPOOL_SEG_HDR_SIZE, seg->data_end, seg->first_seq, seg->end_seq);
	while ((r = it_next(&it, &item)) != IT_END) {
		struct spool_key k;
		if (!batch_run_note(&run, r, &item))
			continue;
		if (item.h.type == SPOOL_REC_MSG && sp->on_copy &&
		    (item.h.flags & SPOOL_REC_F_COPY) && !seg_is_acked(seg, item.h.seq)) {
			copy_report(sp, &item);
			continue;
		}
		if (item.h.type != SPOOL_REC_KEY)
			continue;
		seg->has_keys = true;
		if (spool_key_decode(item.rec, item.len, NULL, &k) != SPOOL_REC_OK ||
		    item.h.seq - seg->first_seq < k.nrecs) {
			log_warnx("spool: %s: segment %" PRIu64 ": key record %" PRIu64
			    " is damaged, its Idempotency-Key is forgotten",
			    sp->dir, seg->first_seq, item.h.seq);
			continue;
		}
		if (!batch_run_key_whole(&run, &item)) {
			log_warnx("spool: %s: segment %" PRIu64 ": a record of key record %" PRIu64
			    "'s batch is damaged or missing, its Idempotency-Key is forgotten",
			    sp->dir, seg->first_seq, item.h.seq);
			continue;
		}
		sp->on_key(sp->on_key_arg, item.h.seq, &k);
	}
	if (it.io_errno) {
		errno = it.io_errno;
		it_fini(&it);
		return -1;
	}
	it_fini(&it);
	return 0;
}

int spool_recover(struct spool *sp, char *err, size_t errlen)
{
	uint64_t *firsts = NULL, *acks = NULL;
	size_t nfirsts = 0, nacks = 0;
	struct seg **tail = &sp->segs, *seg, *last = NULL;
	int rc = -1;

	if (list_dir(sp, &firsts, &nfirsts, &acks, &nacks, err, errlen) < 0)
		goto out;
	drop_short_segments(sp, firsts, &nfirsts);
	for (size_t i = 0; i < nfirsts; i++) {
		uint64_t limit = i + 1 < nfirsts ? firsts[i + 1] : 0;
		if (seg_load(sp, firsts[i], limit, i + 1 == nfirsts, &seg, err, errlen) < 0)
			goto out;
		if (!seg)
			continue;
		seg->gen = sp->next_gen++;
		*tail = seg;
		tail = &seg->next;
		sp->nsegs++;
		sp->bytes += seg->file_bytes;
		last = seg;
		if (seg->end_seq > sp->next_seq)
			sp->next_seq = seg->end_seq;
	}
	for (size_t i = 0; i < nacks; i++) {
		char name[64];
		for (seg = sp->segs; seg && seg->first_seq != acks[i]; seg = seg->next)
			;
		if (seg)
			continue;
		seg_name(name, sizeof(name), acks[i], "ack");
		log_info("spool: %s: removing %s of a deleted segment", sp->dir, name);
		spool_io.unlinkat(sp->dir_fd, name, 0);
	}
	if (sp->next_seq == 0)
		sp->next_seq = 1;
	/* The keys of deleted segments first: a segment's own are newer. */
	if (keys_load(sp, err, errlen) < 0)
		goto out;
	for (seg = sp->segs; seg; seg = seg->next)
		seg->has_keys = !sp->on_key; /* unknown unless read: keys_save() reads it */
	for (seg = sp->segs; sp->on_key && seg; seg = seg->next) {
		if (load_keys(sp, seg) < 0) {
			snprintf(err, errlen, "spool %s: reading the keys of segment %" PRIu64 ": %s",
			    sp->dir, seg->first_seq, strerror(errno));
			goto out;
		}
	}
	/*
	 * Records of the last run are not appended to: its .ack file may name
	 * sequences whose records did not reach the disk (a torn tail, a power
	 * loss with spool.fsync interval), and new records must not inherit
	 * those acknowledgements. An empty segment is reused, without its .ack
	 * file: whatever that names did not reach the disk. The descriptor
	 * ack_load() opened goes with it (acknowledgements written to an
	 * unlinked file would be lost), and the removal must be durable before
	 * a new record can take a sequence the old file names.
	 */
	if (last && !last->sealed && last->end_seq == last->first_seq) {
		char name[64];
		seg_name(name, sizeof(name), last->first_seq, "ack");
		if (last->ack_fd >= 0) {
			spool_io.close(last->ack_fd);
			last->ack_fd = -1;
		}
		if (spool_io.unlinkat(sp->dir_fd, name, 0) == 0) {
			if (spool_io.fsync(sp->dir_fd) < 0) {
				snprintf(err, errlen, "spool %s: fsync of the directory: %s", sp->dir,
				    strerror(errno));
				goto out;
			}
		} else if (errno != ENOENT) {
			snprintf(err, errlen, "spool %s: cannot remove %s: %s", sp->dir, name,
			    strerror(errno));
			goto out;
		}
		sp->active = last;
	} else {
		if (seg_create(sp, sp->next_seq, &seg) < 0) {
			snprintf(err, errlen, "spool %s: cannot create a segment: %s", sp->dir,
			    strerror(errno));
			goto out;
		}
		*tail = seg;
		sp->nsegs++;
		sp->bytes += seg->file_bytes;
		sp->active = seg;
	}
	rc = 0;
out:
	free(firsts);
	free(acks);
	return rc;
}
