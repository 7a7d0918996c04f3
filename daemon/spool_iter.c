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
	/*
	 * A segment holds messages, Idempotency-Keys (and its footer). Any
	 * other record, such as a FAILED one of a failed/ log, is damage:
	 * handing it out would produce its bytes, reason header and all, to
	 * Kafka. It is reported as a payload that is not a message.
	 */
	if (it->base_seq && h->type != SPOOL_REC_MSG && h->type != SPOOL_REC_KEY)
		return SPOOL_REC_BAD_PAYLOAD;
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
 * Does the segment agree with a record resumed at o (sequence seq) after
 * damage? Walk on to the end of the records: each record must follow the
 * one before with the next sequence, and after damage (bytes that frame no
 * record, scanned byte by byte) the next valid header must have a higher
 * sequence that the skipped bytes can hold. A header inside a damaged
 * record's payload fails this: the real records after that payload carry
 * the sequences that follow the last good record, lower than or equal to
 * anything a fake could claim that the scan accepts. Offsets visited before
 * a contradiction are added to *bad (the same walk would fail from them);
 * false with it->io_errno set on a read error.
 */
static bool it_resync_ok(struct iter *it, uint64_t o, const struct spool_rec_hdr *h0,
    struct seqmap *bad)
{
	struct spool_rec_hdr h;
	const unsigned char *p;
	uint64_t last = h0->seq, pos = o + SPOOL_REC_HDR_SIZE + h0->payload_len, gap = 0;
	uint64_t *seen = NULL;
	size_t n = 0, cap = 0;
	bool ok = false, framed;
	uint64_t dummy;

	if (seqmap_get(bad, o, &dummy))
		return false;
	if (spool_push_u64(&seen, &n, &cap, o) < 0) {
		it->io_errno = ENOMEM;
		return false;
	}
	for (;;) {
		enum spool_rec_status st;
		if (pos + SPOOL_REC_HDR_SIZE > it->end) {
			ok = true; /* the records end */
			break;
		}
		if (seqmap_get(bad, pos, &dummy))
			break;
		st = it_rec_at(it, pos, &h, &p, &framed);
		if (it->io_errno)
			goto out;
		if (!framed) {
			/* Damage: find the next valid header; only an 'A' can begin one. */
			size_t avail = it_fill(it, pos, SPOOL_REC_HDR_SIZE, &p);
			const unsigned char *a = avail > 1 ? memchr(p + 1, 'A', avail - 1) : NULL;
			if (it->io_errno)
				goto out;
			if (!gap)
				gap = pos;
			pos += a ? (uint64_t)(a - p) : avail > 1 ? avail : 1;
			continue;
		}
		if (st == SPOOL_REC_SHORT) {
			ok = true; /* a torn tail: the records end */
			break;
		}
		if (st == SPOOL_REC_OK && h.type == SPOOL_REC_SEAL) {
			ok = true;
			break;
		}
		if (st == SPOOL_REC_BAD_SEQ || (st == SPOOL_REC_OK && (gap ?
		    h.seq <= last || h.seq - last - 1 > (pos - gap) / SPOOL_REC_HDR_SIZE :
		    h.seq != last + 1)))
			break; /* contradicts the resumed record */
		if (gap && st != SPOOL_REC_OK) {
			pos++; /* scanning: only a valid header frames bytes */
			continue;
		}
		if (spool_push_u64(&seen, &n, &cap, pos) < 0) {
			it->io_errno = ENOMEM;
			goto out;
		}
		if (st == SPOOL_REC_OK) {
			last = h.seq;
			gap = 0;
		} else {
			gap = pos; /* skipped whole; its sequence is not known */
		}
		pos += SPOOL_REC_HDR_SIZE + h.payload_len;
	}
	if (!ok && seqmap_reserve(bad, n) == 0)
		for (size_t i = 0; i < n; i++)
			seqmap_put_nogrow(bad, seen[i], 1);
out:
	free(seen);
	return ok;
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
 *
 * A record whose own header is damaged has no such protection: the scan
 * walks into its payload. In a segment (base_seq set) a header found there
 * is believed only when its sequence can follow the last good record across
 * the skipped bytes and the rest of the segment agrees with it
 * (it_resync_ok()); otherwise its bytes are scanned on, so one forged
 * header can neither become a record out of order nor make the records
 * after it look out of sequence. failed/ logs (records in any order) keep
 * the plain scan.
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
	struct seqmap bad = { 0 };
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
			/* Skip to the next 'A' in what is buffered (the loop's o++ lands on it). */
			const unsigned char *a = memchr(p + 1, 'A', avail - 1);
			o += (a ? (uint64_t)(a - p) : avail) - 1;
			framed = false;
			continue;
		}
		st = it_rec_at(it, o, &h, &p, &framed);
		if (it->io_errno)
			break;
		if (it->base_seq && st == SPOOL_REC_OK && h.type != SPOOL_REC_SEAL &&
		    (h.seq - it->next_seq > (o - item->off) / SPOOL_REC_HDR_SIZE ||
		    !it_resync_ok(it, o, &h, &bad))) {
			if (it->io_errno)
				break;
			framed = false; /* not believed: its bytes are scanned on */
			continue;
		}
		if (it->base_seq && st != SPOOL_REC_OK)
			framed = false; /* only a believed header frames bytes here */
		if (st == SPOOL_REC_OK) {
			seqmap_fini(&bad);
			item->resynced = true;
			item->resync_off = o;
			item->lost_to = h.type == SPOOL_REC_SEAL ? 0 : h.seq;
			it->off = o;
			return IT_DAMAGE;
		}
	}
	seqmap_fini(&bad);
	item->resync_off = it->end;
	it->off = it->end;
	return IT_DAMAGE;
}

bool it_payload_ok(const struct it_item *item)
{
	return crc32c(0, item->rec + SPOOL_REC_HDR_SIZE, item->h.payload_len) == item->h.payload_crc;
}

void batch_run_init(struct batch_run *b)
{
	b->from = UINT64_MAX;
	b->expect = 0;
}

bool batch_run_note(struct batch_run *b, enum it_res r, const struct it_item *item)
{
	if (r != IT_REC || ((item->h.flags & SPOOL_REC_F_KEYED) && !it_payload_ok(item))) {
		b->from = UINT64_MAX;
		return false;
	}
	if (b->from == UINT64_MAX || item->h.seq != b->expect)
		b->from = item->h.seq;
	b->expect = item->h.seq + 1;
	return true;
}

bool batch_run_key_whole(const struct batch_run *b, const struct it_item *item)
{
	struct spool_key k;

	/* from <= the key record's own sequence: it was noted last. */
	return spool_key_decode(item->rec, item->len, NULL, &k) == SPOOL_REC_OK &&
	    item->h.seq - b->from >= k.nrecs;
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
			r->unfiled = (item->h.flags & SPOOL_REC_F_UNFILED) != 0;
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
