/*
 * spool_iter: a buffered sequential reader over one segment's records
 * (256 KiB blocks), which checks each record header and its sequence
 * bounds, and reports damage and the offset where valid records resume.
 * The daemon's reader, recovery and ackd-spool(8) all use it, so the tool
 * sees damage exactly where ackd would.
 *
 * Threads: an iterator belongs to one thread (the producer's rd and aux,
 * the opening thread's recovery scan, the tool).
 */
#include "config.h"

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

void it_init(struct iter *it, int fd, uint64_t off, uint64_t end, uint64_t next_seq,
    uint64_t seq_limit)
{
	it->fd = fd;
	it->off = off;
	it->end = end;
	it->next_seq = next_seq;
	it->seq_limit = seq_limit;
	it->base_seq = next_seq;
	it->base_off = off;
	it->buf_off = 0;
	it->buf_len = 0;
	it->io_errno = 0;
}

void it_fini(struct iter *it)
{
	free(it->buf);
	it->buf = NULL;
	it->cap = 0;
}

/*
 * Make bytes from off readable in it->buf, at least need of them unless the
 * records end first. Returns how many are available at *p (0 on I/O error,
 * it->io_errno set).
 */
size_t it_fill(struct iter *it, uint64_t off, size_t need, const unsigned char **p)
{
	uint64_t limit = off < it->end ? it->end - off : 0;
	size_t want, got;

	if (need > limit)
		need = (size_t)limit;
	if (off >= it->buf_off && off + need <= it->buf_off + it->buf_len) {
		uint64_t avail = it->buf_off + it->buf_len - off;
		*p = it->buf + (off - it->buf_off);
		return (size_t)(avail < limit ? avail : limit);
	}
	want = need > READ_BLOCK ? need : READ_BLOCK;
	if (want > limit)
		want = (size_t)limit;
	if (want > it->cap) {
		unsigned char *nb = realloc(it->buf, want);
		if (!nb) {
			it->io_errno = ENOMEM;
			return 0;
		}
		it->buf = nb;
		it->cap = want;
	}
	it->buf_len = 0;
	if (spool_pread_all(it->fd, it->buf, want, off, &got) < 0) {
		it->io_errno = errno;
		return 0;
	}
	it->buf_off = off;
	it->buf_len = got;
	*p = it->buf;
	return got;
}

/*
 * Check the record at off: header, sequence bounds, length within the end.
 * *framed: its magic and header CRC hold, so h says where it ends (even when
 * it is SHORT, out of sequence or of an unknown version): its bytes belong
 * to it and are never read as records of their own.
 */
static enum spool_rec_status it_rec_at(struct iter *it, uint64_t off, struct spool_rec_hdr *h,
    const unsigned char **p, bool *framed)
{
	enum spool_rec_status st;
	size_t avail = it_fill(it, off, SPOOL_REC_HDR_SIZE, p);

	*framed = false;
	if (avail < SPOOL_REC_HDR_SIZE)
		return SPOOL_REC_SHORT;
	st = spool_rec_parse_hdr(*p, avail, h);
	if (st == SPOOL_REC_BAD_MAGIC || st == SPOOL_REC_BAD_HDR_CRC)
		return st;
	*framed = true;
	if (st == SPOOL_REC_SHORT) {
		if (off + SPOOL_REC_HDR_SIZE + h->payload_len > it->end)
			return SPOOL_REC_SHORT;
		avail = it_fill(it, off, SPOOL_REC_HDR_SIZE + h->payload_len, p);
		st = spool_rec_parse_hdr(*p, avail, h);
	}
	if (st != SPOOL_REC_OK)
		return st;
	if (h->type == SPOOL_REC_SEAL)
		return SPOOL_REC_OK;
	if (h->seq < it->next_seq || (it->seq_limit && h->seq >= it->seq_limit))
		return SPOOL_REC_BAD_SEQ;
	/*
	 * A segment's sequences are consecutive and each record takes at least
	 * a header: a sequence beyond that is damage, never a bitmap to size.
	 */
	if (it->base_seq && h->seq - it->base_seq > (off - it->base_off) / SPOOL_REC_HDR_SIZE)
		return SPOOL_REC_BAD_SEQ;
	return SPOOL_REC_OK;
}

/*
 * The next record (payload CRC not checked: the caller decides), or the
 * damage before the next valid record, or the end (records end, or a footer).
 *
 * Damage: a record whose header CRC holds is skipped whole (it is out of
 * sequence, of an unknown version, or its payload is damaged); one whose
 * bytes run past the end is the torn tail, and the damage runs to the end.
 * Only bytes that lie in no such record are scanned, byte by byte, for the
 * next valid header. So no bytes inside a record whose header was written
 * whole can pass for a record of their own.
 */
enum it_res it_next(struct iter *it, struct it_item *item)
{
	const unsigned char *p;
	enum spool_rec_status st;
	struct spool_rec_hdr h;
	bool framed;
	uint64_t o;

	if (it->off >= it->end || it->io_errno)
		return IT_END;
	st = it_rec_at(it, it->off, &item->h, &p, &framed);
	if (it->io_errno)
		return IT_END;
	if (st == SPOOL_REC_OK) {
		if (item->h.type == SPOOL_REC_SEAL) {
			it->end = it->off;
			return IT_END;
		}
		item->rec = p;
		item->len = SPOOL_REC_HDR_SIZE + item->h.payload_len;
		item->off = it->off;
		it->off += item->len;
		it->next_seq = item->h.seq + 1;
		return IT_REC;
	}

	item->why = st;
	item->off = it->off;
	item->lost_from = it->next_seq;
	item->lost_to = 0;
	item->resynced = false;
	h = item->h;
	for (o = it->off;;) {
		size_t avail;
		if (!framed) {
			o++;
		} else if (o + SPOOL_REC_HDR_SIZE <= it->end &&
		    it->end - o - SPOOL_REC_HDR_SIZE >= h.payload_len) {
			o += SPOOL_REC_HDR_SIZE + h.payload_len;
		} else {
			break; /* runs past the end: the torn tail */
		}
		if (o + SPOOL_REC_HDR_SIZE > it->end)
			break;
		avail = it_fill(it, o, SPOOL_REC_HDR_SIZE, &p);
		if (avail < SPOOL_REC_HDR_SIZE)
			break;
		if (memcmp(p, "AKSR", 4) != 0) {
			framed = false;
			continue;
		}
		if (it_rec_at(it, o, &h, &p, &framed) == SPOOL_REC_OK) {
			item->resynced = true;
			item->resync_off = o;
			item->lost_to = h.type == SPOOL_REC_SEAL ? 0 : h.seq;
			it->off = o;
			return IT_DAMAGE;
		}
	}
	item->resync_off = it->end;
	it->off = it->end;
	return IT_DAMAGE;
}

bool it_payload_ok(const struct it_item *item)
{
	return crc32c(0, item->rec + SPOOL_REC_HDR_SIZE, item->h.payload_len) == item->h.payload_crc;
}

/* A decoded copy of the record at item, or NULL when its payload is damaged. */
struct spool_rec *it_rec_copy(const struct it_item *item, enum spool_rec_status *st)
{
	size_t nh = 16;

	for (;;) {
		size_t hdr_bytes = nh * sizeof(struct spool_hdr);
		struct spool_rec *r = malloc(sizeof(*r) + hdr_bytes + item->len);
		struct spool_hdr *hdrs;
		unsigned char *raw;

		if (!r) {
			*st = SPOOL_REC_OK;
			return NULL;
		}
		hdrs = (struct spool_hdr *)(r + 1);
		raw = (unsigned char *)hdrs + hdr_bytes;
		memcpy(raw, item->rec, item->len);
		*st = spool_rec_decode(raw, item->len, NULL, &r->msg, hdrs, nh);
		if (*st != SPOOL_REC_OK) {
			free(r);
			return NULL;
		}
		if (r->msg.nhdrs <= nh) {
			r->seq = item->h.seq;
			return r;
		}
		nh = r->msg.nhdrs;
		free(r);
	}
}

void seg_cp_note(struct seg *seg, uint64_t seq, uint64_t off)
{
	uint64_t last = seg->ncps ? seg->cps[seg->ncps - 1].seq : seg->first_seq;

	if (seq < last + CP_EVERY)
		return;
	if (seg->ncps == seg->cps_cap) {
		size_t cap = seg->cps_cap ? seg->cps_cap * 2 : 64;
		struct cp *n = realloc(seg->cps, cap * sizeof(*n));
		if (!n)
			return;
		seg->cps = n;
		seg->cps_cap = cap;
	}
	seg->cps[seg->ncps].seq = seq;
	seg->cps[seg->ncps].off = off;
	seg->ncps++;
}

/* Position it on seg at the last checkpoint at or before seq. */
void it_seek(struct iter *it, struct seg *seg, uint64_t seq, uint64_t end, uint64_t end_seq)
{
	uint64_t off = SPOOL_SEG_HDR_SIZE, from = seg->first_seq;
	size_t lo = 0, hi = seg->ncps;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (seg->cps[mid].seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0) {
		off = seg->cps[lo - 1].off;
		from = seg->cps[lo - 1].seq;
	}
	it_init(it, seg->fd, off, end, from, end_seq);
}
