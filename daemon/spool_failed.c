/*
 * spool_failed: failed/: spool_fail() copies a record Kafka rejected, with
 * the reason, into failed/failed-<first seq>.log, then acknowledges it (an
 * unfiled dead letter it only acknowledges).
 * failed_repair() cuts the torn tails of those logs at open.
 *
 * Threads: the producer thread only (failed_repair(): the opening thread,
 * before the writer starts).
 */
#include "config.h"

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

/* "failed-<20 digits>.log" -> first sequence. */
bool failed_parse_name(const char *name, uint64_t *first)
{
	char seg[64];

	if (strncmp(name, "failed-", 7) != 0 || strlen(name) != 7 + 20 + 4 ||
	    strcmp(name + 27, ".log") != 0)
		return false;
	snprintf(seg, sizeof(seg), "seg-%.20s.spool", name + 7);
	return seg_parse_name(seg, "spool", first);
}

/* Cut failed/failed-<first>.log to size and make it durable. 0, or -1 (errno). */
static int failed_cut(struct spool *sp, uint64_t first, uint64_t size)
{
	char name[96];
	int fd, rc = 0;

	snprintf(name, sizeof(name), "failed/failed-%020" PRIu64 ".log", first);
	fd = spool_io.openat(sp->dir_fd, name, O_WRONLY | O_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (spool_io.ftruncate(fd, (off_t)size) < 0 || spool_io.fdatasync(fd) < 0)
		rc = -1;
	{
		int saved = errno;
		spool_io.close(fd);
		errno = saved;
	}
	return rc;
}

/*
 * Append one FAILED record to failed/failed-<first>.log and make it
 * durable. A new log gets its header and its directory entry made durable
 * before the record goes in. A failed append is cut back, so the next one
 * starts at a record boundary; when even the cut fails, nothing is
 * appended to failed/ until it succeeds (bytes after a torn record would
 * lie inside it, and readers never look inside a record).
 */
static int failed_append(struct spool *sp, uint64_t first, const unsigned char *rec, size_t len)
{
	char name[96];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	struct stat st;
	int fd;

	if (sp->fcut_pending) {
		if (failed_cut(sp, sp->fcut_first, sp->fcut_size) < 0)
			return -1;
		sp->fcut_pending = false;
	}
	snprintf(name, sizeof(name), "failed/failed-%020" PRIu64 ".log", first);
	fd = spool_io.openat(sp->dir_fd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (st.st_size == 0) {
		sp->failed_dir_dirty = true;
		spool_seg_hdr_encode(hdr, first, wall_ms());
		if (spool_write_all(fd, hdr, sizeof(hdr)) < 0 || spool_io.fdatasync(fd) < 0)
			goto cut;
		st.st_size = sizeof(hdr);
	}
	if (sp->failed_dir_dirty) {
		int dfd = spool_io.openat(sp->dir_fd, "failed", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
		if (dfd < 0)
			goto fail;
		if (spool_io.fsync(dfd) < 0) {
			int saved = errno;
			spool_io.close(dfd);
			errno = saved;
			goto fail;
		}
		spool_io.close(dfd);
		sp->failed_dir_dirty = false;
	}
	if (spool_write_all(fd, rec, len) < 0 || spool_io.fdatasync(fd) < 0)
		goto cut;
	spool_io.close(fd);
	return 0;
cut:
	/* No partial record stays: the retry appends to a clean end. */
	{
		int saved = errno;
		if (spool_io.ftruncate(fd, st.st_size) < 0) {
			log_warn("spool: %s: cannot truncate %s", sp->dir, name);
			sp->fcut_pending = true;
			sp->fcut_first = first;
			sp->fcut_size = (uint64_t)st.st_size;
		}
		errno = saved;
	}
fail:
	{
		int saved = errno;
		spool_io.close(fd);
		errno = saved;
	}
	return -1;
}

/* Hand the ackd-id of the failed record item to sp->on_failed. */
static void failed_report(struct spool *sp, const struct it_item *item)
{
	struct spool_hdr few[8], *hdrs = few;
	struct spool_msg m;

	if (spool_rec_decode(item->rec, item->len, NULL, &m, few, 8) != SPOOL_REC_OK)
		return;
	if (m.nhdrs > 8) {
		if (!(hdrs = calloc(m.nhdrs, sizeof(*hdrs))))
			goto fail;
		if (spool_rec_decode(item->rec, item->len, NULL, &m, hdrs, m.nhdrs) != SPOOL_REC_OK)
			goto out;
	}
	for (size_t i = 0; i < m.nhdrs; i++) {
		if (spool_hdr_is(&hdrs[i], SPOOL_HDR_ID)) {
			sp->on_failed(sp->on_key_arg, hdrs[i].value, hdrs[i].value_len);
			break;
		}
	}
	goto out;
fail:
	log_warnx("spool: %s: out of memory reading failed record %" PRIu64 "; its "
	    "Idempotency-Key may answer 202", sp->dir, item->h.seq);
out:
	if (hdrs != few)
		free(hdrs);
}

/* Cut the torn tail of one failed/ log (see failed_repair()), report its records' ids. */
static int failed_repair_one(struct spool *sp, const char *file, char *err, size_t errlen)
{
	char name[300];
	struct iter it = { 0 };
	struct it_item item;
	struct stat st;
	uint64_t size, keep;
	int fd, rc = -1;

	snprintf(name, sizeof(name), "failed/%s", file);
	fd = spool_io.openat(sp->dir_fd, name, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "spool %s: open %s: %s", sp->dir, name, strerror(errno));
		goto out;
	}
	size = (uint64_t)st.st_size;
	keep = size;
	if (size < SPOOL_SEG_HDR_SIZE) {
		keep = 0; /* its header never reached the disk whole */
	} else {
		it_init(&it, fd, SPOOL_SEG_HDR_SIZE, size, 0, 0);
		for (;;) {
			it.next_seq = 0; /* records fail, and are appended, in any order */
			enum it_res r = it_next(&it, &item);
			if (r == IT_END)
				break;
			if (r == IT_DAMAGE && !item.resynced)
				keep = item.off; /* damage up to the end: the torn tail */
			if (r == IT_REC && sp->on_failed && item.h.type == SPOOL_REC_FAILED)
				failed_report(sp, &item);
		}
		if (it.io_errno) {
			snprintf(err, errlen, "spool %s: read %s: %s", sp->dir, name,
			    strerror(it.io_errno));
			goto out;
		}
	}
	if (keep < size) {
		log_warnx("spool: %s: %s: torn tail of %" PRIu64 " bytes at offset %" PRIu64 " cut off",
		    sp->dir, name, size - keep, keep);
		if (spool_io.ftruncate(fd, (off_t)keep) < 0 || spool_io.fdatasync(fd) < 0) {
			snprintf(err, errlen, "spool %s: cannot cut the torn tail of %s: %s", sp->dir,
			    name, strerror(errno));
			goto out;
		}
		sp->torn_bytes += size - keep;
	}
	rc = 0;
out:
	it_fini(&it);
	if (fd >= 0)
		spool_io.close(fd);
	return rc;
}

/*
 * At open, before anything is appended: cut the torn tail of every failed/
 * log (a crash in the middle of an append), so appends start at a record
 * boundary and ackd-spool reinject takes every whole record. The bytes cut
 * count in torn_bytes. Damage followed by whole records stays (counted by
 * ackd-spool verify). 0, or -1 with err.
 */
struct repair {
	struct spool *sp;
	char *err;
	size_t errlen;
};

static int repair_one(void *arg, const char *name, enum spool_name_kind kind, uint64_t first)
{
	struct repair *r = arg;

	(void)first;
	if (kind != SPOOL_NAME_FAILED)
		return 0;
	return failed_repair_one(r->sp, name, r->err, r->errlen);
}

int failed_repair(struct spool *sp, char *err, size_t errlen)
{
	struct repair r = { sp, err, errlen };

	err[0] = 0;
	if (spool_list(sp->dir_fd, "failed", repair_one, &r) < 0) {
		if (!err[0])
			snprintf(err, errlen, "spool %s: cannot list failed/: %s", sp->dir,
			    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * The reason header for m, cut to what fits: a record's payload may not
 * exceed SPOOL_REC_MAX_PAYLOAD, and a message close to it must not become
 * unwritable for its reason. Returns false when not even an empty reason
 * header fits (the record then goes without one, flagged).
 */
static bool reason_fit(const struct spool_msg *m, const char *reason, struct spool_hdr *h)
{
	size_t base = spool_rec_size(m), len = strlen(reason);
	size_t room, overhead = 2 + strlen(SPOOL_HDR_FAILED_REASON) + 4;

	h->name = SPOOL_HDR_FAILED_REASON;
	h->name_len = strlen(SPOOL_HDR_FAILED_REASON);
	h->value = reason;
	if (base == 0 || base - SPOOL_REC_HDR_SIZE + overhead > SPOOL_REC_MAX_PAYLOAD)
		return false;
	room = SPOOL_REC_MAX_PAYLOAD - (base - SPOOL_REC_HDR_SIZE) - overhead;
	if (len > 4096)
		len = 4096;
	h->value_len = len < room ? len : room;
	return true;
}

/*
 * Write record seq, as handed out, to failed/ with reason and acknowledge
 * it, or only acknowledge it when it is an unfiled dead letter.
 * SPOOL_FAIL_FILED when done, or when the record is gone (acknowledged,
 * lost to damage); SPOOL_FAIL_DELETED for an unfiled one; SPOOL_FAIL_LATER
 * when it could not be read or failed/ could not take it (it stays in the
 * spool).
 */
static enum spool_fail_rc fail_write(struct spool *sp, uint64_t seq, const char *reason)
{
	struct spool_rec *r = NULL;
	struct spool_hdr *hdrs = NULL;
	struct spool_msg m;
	unsigned char *buf = NULL;
	uint64_t cur;
	struct seg *seg = reader_resolve(sp, seq, &cur);
	uint16_t flags = 0;
	size_t len;
	int rc;

	if (!seg)
		return SPOOL_FAIL_FILED; /* acknowledged already */
	rc = reader_read_one(sp, seg, cur, &r);
	if (rc == 0)
		return SPOOL_FAIL_FILED; /* lost to damage (acknowledged) */
	if (rc < 0)
		return SPOOL_FAIL_LATER; /* read it again later */
	if (r->unfiled) {
		spool_rec_free(r);
		spool_ack(sp, seq);
		return SPOOL_FAIL_DELETED;
	}
	m = r->msg;
	hdrs = calloc(m.nhdrs + 1, sizeof(*hdrs));
	if (!hdrs)
		goto fail;
	if (m.nhdrs)
		memcpy(hdrs, m.hdrs, m.nhdrs * sizeof(*hdrs));
	if (reason_fit(&m, reason, &hdrs[m.nhdrs])) {
		m.hdrs = hdrs;
		m.nhdrs++;
	} else {
		flags = SPOOL_REC_F_NO_REASON;
	}
	len = spool_rec_size(&m);
	if (len == 0 || !(buf = malloc(len)))
		goto fail;
	spool_rec_encode_type(&m, SPOOL_REC_FAILED, buf);
	if (flags)
		spool_rec_set_flags(buf, flags);
	/*
	 * Filed with the sequence it has in seg (a copy's, after copy-forward),
	 * so it lies in the range of the log's name, as ackd-spool verify checks.
	 */
	spool_rec_set_seq(buf, cur);
	if (failed_append(sp, seg->first_seq, buf, len) < 0)
		goto fail;
	pthread_mutex_lock(&sp->mu);
	sp->failed++;
	pthread_mutex_unlock(&sp->mu);
	log_warnx("spool: %s: record %" PRIu64 " (topic %.*s) moved to failed/: %s%s", sp->dir, seq,
	    (int)r->msg.topic_len, r->msg.topic, reason,
	    flags ? " (no room for the reason in the record)" : "");
	free(buf);
	free(hdrs);
	spool_rec_free(r);
	spool_ack(sp, seq);
	return SPOOL_FAIL_FILED;
fail:
	free(buf);
	free(hdrs);
	spool_rec_free(r);
	return SPOOL_FAIL_LATER;
}

static int64_t retry_delay_ms(int attempts)
{
	int64_t d = FAIL_RETRY_MIN_MS;

	while (--attempts > 0 && d < FAIL_RETRY_MAX_MS)
		d *= 2;
	return d < FAIL_RETRY_MAX_MS ? d : FAIL_RETRY_MAX_MS;
}

/*
 * The retry entry is allocated before the record is tried, so a record
 * failed/ cannot take is always taken over for retry: an allocation failure
 * can only come first, with nothing done.
 */
enum spool_fail_rc spool_fail(struct spool *sp, uint64_t seq, const char *reason)
{
	struct fail_retry *f;
	enum spool_fail_rc rc;
	char *copy;

	for (size_t i = 0; i < sp->nfretry; i++)
		if (sp->fretry[i].seq == seq)
			return SPOOL_FAIL_LATER; /* already waiting for failed/ */
	if (sp->nfretry == sp->fretry_cap) {
		size_t cap = sp->fretry_cap ? sp->fretry_cap * 2 : 16;
		struct fail_retry *nv = realloc(sp->fretry, cap * sizeof(*nv));
		if (!nv)
			return SPOOL_FAIL_NOMEM;
		sp->fretry = nv;
		sp->fretry_cap = cap;
	}
	if (!(copy = strdup(reason)))
		return SPOOL_FAIL_NOMEM;
	rc = fail_write(sp, seq, reason);
	if (rc != SPOOL_FAIL_LATER) {
		free(copy);
		return rc;
	}
	f = &sp->fretry[sp->nfretry++];
	f->reason = copy;
	f->seq = seq;
	f->attempts = 1;
	f->due_ms = now_ms() + retry_delay_ms(1);
	log_warn("spool: %s: cannot write record %" PRIu64 " to failed/ now, trying again in %d s",
	    sp->dir, seq, FAIL_RETRY_MIN_MS / 1000);
	return SPOOL_FAIL_LATER;
}

/* Maintenance: write the rejected records whose retry is due. Producer thread. */
void failed_retry_due(struct spool *sp)
{
	int64_t now = now_ms();

	if (sp->fretry_busy)
		return; /* fail_write() -> spool_ack() -> maintenance: not again */
	sp->fretry_busy = true;
	for (size_t i = 0; i < sp->nfretry;) {
		struct fail_retry *f = &sp->fretry[i];
		if (f->due_ms > now) {
			i++;
			continue;
		}
		enum spool_fail_rc rc = fail_write(sp, f->seq, f->reason);
		if (rc != SPOOL_FAIL_LATER) {
			if (rc == SPOOL_FAIL_DELETED)
				log_warnx("spool: %s: dead letter %" PRIu64 " deleted, not filed: an "
				    "earlier one of the same message is kept", sp->dir, f->seq);
			free(f->reason);
			sp->fretry[i] = sp->fretry[--sp->nfretry];
			continue;
		}
		f->attempts++;
		f->due_ms = now + retry_delay_ms(f->attempts);
		if (spool_log_due(&sp->ackerr_log_ms))
			log_warn("spool: %s: cannot write record %" PRIu64 " to failed/ (attempt %d), "
			    "trying again in %" PRId64 " s",
			    sp->dir, f->seq, f->attempts, retry_delay_ms(f->attempts) / 1000);
		i++;
	}
	sp->fretry_busy = false;
}

void failed_fini(struct spool *sp)
{
	for (size_t i = 0; i < sp->nfretry; i++)
		free(sp->fretry[i].reason);
	free(sp->fretry);
	sp->fretry = NULL;
	sp->nfretry = sp->fretry_cap = 0;
}
