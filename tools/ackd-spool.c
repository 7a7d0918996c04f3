/*
 * ackd-spool: inspect and repair a spool directory offline (ackd-spool(8)).
 *
 *   stat DIR                  segments, backlog, failed/, whether ackd runs
 *   verify DIR                check every byte ackd would read; exit 1 on damage
 *   dump DIR [--all|--failed|--keys] records (or Idempotency-Keys) as JSON lines
 *   reinject DIR              move failed/ records back into the spool
 *
 * stat, verify and dump go through the read-only reader of daemon/spool_ro.c
 * (spool_ro_open() and its iterator) and never change a file, so they may
 * run beside a running ackd. reinject opens the spool as ackd does
 * (spool_open(), which takes the lock), appends the failed records as new
 * records through the writer with fsync=always, and only once they are
 * durable removes their failed/ files. One thread, plus the spool's writer
 * during reinject.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "spool.h"
#include "base64.h"

#define EXIT_DAMAGE 1
#define EXIT_USAGE 2
#define REINJECT_BATCH_BYTES (4u << 20)

static const char *progname = "ackd-spool";

static void usage(FILE *out)
{
	fprintf(out,
	    "usage: %s stat DIR\n"
	    "       %s verify DIR\n"
	    "       %s dump DIR [--all | --failed | --keys]\n"
	    "       %s reinject DIR\n",
	    progname, progname, progname, progname);
}

static void warnx_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void warnx_(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int open_ro(const char *dir, struct spool_ro **ro)
{
	char err[512];

	if (spool_ro_open(dir, ro, err, sizeof(err)) < 0) {
		warnx_("%s", err);
		return -1;
	}
	return 0;
}

static void fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	char day[32];

	if (!gmtime_r(&t, &tm) || !strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm)) {
		snprintf(buf, len, "%" PRId64, ms);
		return;
	}
	snprintf(buf, len, "%s.%03dZ", day, (int)(ms % 1000));
}

/* The last header when it is the reason spool_fail() appended, else NULL. */
static const struct spool_hdr *reason_hdr(const struct spool_msg *m)
{
	const struct spool_hdr *h;

	if (m->nhdrs == 0)
		return NULL;
	h = &m->hdrs[m->nhdrs - 1];
	if (!spool_hdr_is(h, SPOOL_HDR_FAILED_REASON))
		return NULL;
	return h;
}

/* --- stat ------------------------------------------------------------------------ */

struct seg_stat {
	uint64_t records, acked, first, last;
	int64_t oldest_ms; /* of the unacknowledged, 0 none */
	uint64_t damaged;  /* damaged regions seen */
};

/* A sealed segment by its footer (as ackd does); others by their record headers. */
static int seg_stat(struct spool_ro *ro, const struct spool_ro_file *f, struct seg_stat *st)
{
	struct spool_ro_iter *it;
	struct spool_ro_item item;
	int rc;

	memset(st, 0, sizeof(*st));
	if (f->sealed) {
		st->records = f->seal.nrecs;
		st->acked = f->nacks;
		if (f->seal.end_seq > f->seal.first_seq) {
			st->first = f->seal.first_seq;
			st->last = f->seal.end_seq - 1;
		}
		if (st->acked < f->seal.end_seq - f->seal.first_seq)
			st->oldest_ms = f->seal.min_ts;
		return 0;
	}
	if (spool_ro_iter_new(ro, f, 1, &it) < 0)
		return -1;
	while ((rc = spool_ro_iter_next(it, &item)) > 0) {
		if (item.kind == SPOOL_RO_DAMAGE) {
			st->damaged++;
			continue;
		}
		if (item.kind != SPOOL_RO_RECORD || item.type != SPOOL_REC_MSG)
			continue;
		if (st->records++ == 0)
			st->first = item.seq;
		st->last = item.seq;
		if (item.acked)
			st->acked++;
		else if (st->oldest_ms == 0 || item.timestamp_ms < st->oldest_ms)
			st->oldest_ms = item.timestamp_ms;
	}
	spool_ro_iter_free(it);
	return rc;
}

static int cmd_stat(const char *dir)
{
	const struct spool_ro_file *segs, *failed;
	struct spool_ro *ro;
	size_t nsegs, nfailed;
	uint64_t unacked = 0, bytes = 0, nfailed_recs = 0;
	int64_t oldest = 0;
	int in_use, lock_errno, rc = 0;
	char when[64];

	if (open_ro(dir, &ro) < 0)
		return EXIT_USAGE;
	in_use = spool_ro_in_use(ro);
	lock_errno = errno;
	printf("spool: %s\n", dir);
	if (in_use == 1)
		printf("lock: in use by a running ackd (reading only; figures may change meanwhile)\n");
	else if (in_use == 0)
		printf("lock: free (no ackd runs on this spool)\n");
	else
		printf("lock: unknown (%s/lock: %s)\n", dir, strerror(lock_errno));

	nsegs = spool_ro_segments(ro, &segs);
	for (size_t i = 0; i < nsegs; i++) {
		const struct spool_ro_file *f = &segs[i];
		const char *state = f->sealed ? "sealed" : i + 1 == nsegs ? "active" : "unsealed";
		struct seg_stat st;

		if (seg_stat(ro, f, &st) < 0) {
			warnx_("%s/%s: %s", dir, f->name, strerror(errno));
			rc = EXIT_DAMAGE;
			continue;
		}
		printf("segment %s: ", f->name);
		if (st.records || f->sealed)
			printf("seq %" PRIu64 "-%" PRIu64, st.first, st.last);
		else
			printf("seq none");
		printf(" %s records %" PRIu64 " acked %" PRIu64 " bytes %" PRIu64, state, st.records,
		    st.acked, f->bytes);
		if (st.damaged)
			printf(" damaged %" PRIu64 " (see verify)", st.damaged);
		printf("\n");
		unacked += st.records > st.acked ? st.records - st.acked : 0;
		bytes += f->bytes;
		if (st.oldest_ms && (oldest == 0 || st.oldest_ms < oldest))
			oldest = st.oldest_ms;
	}
	printf("segments: %zu\n", nsegs);
	printf("unacked records: %" PRIu64 "\n", unacked);
	printf("bytes: %" PRIu64 "\n", bytes);
	if (oldest) {
		fmt_time(oldest, when, sizeof(when));
		printf("oldest accept time: %s (%" PRId64 ")\n", when, oldest);
	} else {
		printf("oldest accept time: none\n");
	}

	nfailed = spool_ro_failed(ro, &failed);
	for (size_t i = 0; i < nfailed; i++) {
		struct spool_ro_iter *it;
		struct spool_ro_item item;
		int r;

		if (spool_ro_iter_new(ro, &failed[i], 1, &it) < 0) {
			warnx_("%s/%s: %s", dir, failed[i].name, strerror(errno));
			rc = EXIT_DAMAGE;
			continue;
		}
		while ((r = spool_ro_iter_next(it, &item)) > 0)
			nfailed_recs += item.kind == SPOOL_RO_RECORD;
		if (r < 0) {
			warnx_("%s/%s: %s", dir, failed[i].name, strerror(errno));
			rc = EXIT_DAMAGE;
		}
		spool_ro_iter_free(it);
	}
	printf("failed records: %" PRIu64 " in %zu files\n", nfailed_recs, nfailed);
	spool_ro_free(ro);
	return rc;
}

/* --- verify ------------------------------------------------------------------------ */

struct verify {
	const char *dir;
	uint64_t problems;
	uint64_t notes;
};

static void problem(struct verify *v, const char *file, int64_t off, const char *kind,
    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void problem(struct verify *v, const char *file, int64_t off, const char *kind,
    const char *fmt, ...)
{
	va_list ap;

	if (off >= 0)
		printf("%s: offset %" PRId64 ": %s: ", file, off, kind);
	else
		printf("%s: %s: ", file, kind);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	v->problems++;
}

static void note(struct verify *v, const char *file, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct verify *v, const char *file, const char *fmt, ...)
{
	va_list ap;

	printf("%s: note: ", file);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	v->notes++;
}

static const char *status_kind(enum spool_rec_status st)
{
	switch (st) {
	case SPOOL_REC_OK:
		return "ok";
	case SPOOL_REC_SHORT:
		return "truncated-record";
	case SPOOL_REC_BAD_MAGIC:
		return "bad-magic";
	case SPOOL_REC_BAD_HDR_CRC:
		return "bad-header-crc";
	case SPOOL_REC_BAD_VERSION:
		return "bad-version";
	case SPOOL_REC_BAD_PAYLOAD_CRC:
		return "bad-payload-crc";
	case SPOOL_REC_BAD_PAYLOAD:
		return "bad-payload";
	case SPOOL_REC_BAD_SEQ:
		return "bad-sequence";
	}
	return "damaged";
}

static void report_damage(struct verify *v, const struct spool_ro_file *f,
    const struct spool_ro_item *item, bool newest_unsealed, bool failed_log)
{
	char lost[96] = "";

	if (!failed_log && item->lost_to > item->lost_from)
		snprintf(lost, sizeof(lost), ", sequences %" PRIu64 "-%" PRIu64 " lost",
		    item->lost_from, item->lost_to - 1);
	else if (!failed_log && item->lost_from && !item->resynced && !newest_unsealed)
		snprintf(lost, sizeof(lost), ", sequences from %" PRIu64 " lost", item->lost_from);
	if (item->why == SPOOL_REC_BAD_PAYLOAD_CRC || item->why == SPOOL_REC_BAD_PAYLOAD)
		problem(v, f->name, (int64_t)item->off, status_kind(item->why),
		    "%s of record %" PRIu64 " (%" PRIu64 " bytes)%s",
		    spool_rec_status_str(item->why), item->seq, item->len, lost);
	else if (!item->resynced && newest_unsealed)
		problem(v, f->name, (int64_t)item->off, "torn-tail",
		    "%s, %" PRIu64 " bytes to the end of the file (ackd cuts them at start-up)%s",
		    spool_rec_status_str(item->why), item->len, lost);
	else
		problem(v, f->name, (int64_t)item->off, status_kind(item->why),
		    "%s, %" PRIu64 " bytes skipped%s%s", spool_rec_status_str(item->why), item->len,
		    item->resynced ? "" : " to the end of the file", lost);
}

/*
 * Every record of f with payload CRCs; segments also have their sequence
 * order and footer checked. *end_seq: one past the last sequence seen.
 */
static void verify_file(struct verify *v, struct spool_ro *ro, const struct spool_ro_file *f,
    bool failed_log, bool newest, uint64_t *end_seq)
{
	struct spool_ro_iter *it;
	struct spool_ro_item item;
	uint64_t expect = f->first_seq, nrecs = 0, damaged = 0;
	int64_t min_ts = 0;
	bool footer = false;
	int rc;

	*end_seq = f->first_seq;
	if (!f->hdr_ok)
		problem(v, f->name, 0, "bad-segment-header",
		    "the file header is damaged or names another sequence (ackd goes by the file name)");
	if (spool_ro_iter_new(ro, f, 0, &it) < 0) {
		problem(v, f->name, -1, "read-error", "%s", strerror(errno));
		return;
	}
	while ((rc = spool_ro_iter_next(it, &item)) > 0) {
		switch (item.kind) {
		case SPOOL_RO_DAMAGE:
			damaged++;
			report_damage(v, f, &item, newest && !f->sealed, failed_log);
			if (item.lost_to)
				expect = item.lost_to;
			break;
		case SPOOL_RO_RECORD: {
			const struct spool_msg *m = item.rec ? &item.rec->msg : NULL;
			uint8_t want = failed_log ? SPOOL_REC_FAILED : SPOOL_REC_MSG;

			if (item.type == SPOOL_REC_KEY && !failed_log) {
				/* An Idempotency-Key: its records precede it in this segment. */
				want = SPOOL_REC_KEY;
				if (item.seq - f->first_seq < item.key.nrecs)
					problem(v, f->name, (int64_t)item.off, "bad-key",
					    "key record %" PRIu64 " names %" PRIu32
					    " records, more than the segment holds before it",
					    item.seq, item.key.nrecs);
			}
			if (item.type != want)
				problem(v, f->name, (int64_t)item.off, "wrong-type",
				    "record %" PRIu64 " has type %u, expected %u", item.seq, item.type, want);
			if (failed_log) {
				if (item.seq < f->first_seq)
					problem(v, f->name, (int64_t)item.off, "bad-sequence",
					    "record %" PRIu64 " is below the file's first sequence",
					    item.seq);
				if (!reason_hdr(m) && !(item.flags & SPOOL_REC_F_NO_REASON))
					problem(v, f->name, (int64_t)item.off, "missing-reason",
					    "record %" PRIu64 " has no " SPOOL_HDR_FAILED_REASON " header",
					    item.seq);
				break;
			}
			if (item.seq > expect)
				problem(v, f->name, (int64_t)item.off, "sequence-gap",
				    "sequences %" PRIu64 "-%" PRIu64 " missing before record %" PRIu64,
				    expect, item.seq - 1, item.seq);
			expect = item.seq + 1;
			*end_seq = expect;
			if (nrecs++ == 0 || item.timestamp_ms < min_ts)
				min_ts = item.timestamp_ms;
			break;
		}
		case SPOOL_RO_FOOTER:
			footer = true;
			if (failed_log) {
				problem(v, f->name, (int64_t)item.off, "wrong-type",
				    "a footer in a failed/ log");
			} else if (!item.seal_ok) {
				problem(v, f->name, (int64_t)item.off, "bad-footer",
				    "the footer is damaged (ackd reads the segment in full instead)");
			} else if (damaged == 0 &&
			    (item.seal.end_seq != expect || item.seal.nrecs != nrecs ||
				(nrecs && item.seal.min_ts != min_ts))) {
				problem(v, f->name, (int64_t)item.off, "footer-mismatch",
				    "the footer says sequences %" PRIu64 "-%" PRIu64 ", %" PRIu64
				    " records, oldest %" PRId64 "; the records are %" PRIu64 "-%" PRIu64
				    ", %" PRIu64 ", oldest %" PRId64,
				    item.seal.first_seq, item.seal.end_seq - 1, item.seal.nrecs,
				    item.seal.min_ts, f->first_seq, expect - 1, nrecs, min_ts);
			}
			if (item.seal_ok && item.seal.end_seq > *end_seq)
				*end_seq = item.seal.end_seq;
			break;
		case SPOOL_RO_TRAILING:
			problem(v, f->name, (int64_t)item.off, "trailing-bytes",
			    "%" PRIu64 " bytes after the footer", item.len);
			break;
		case SPOOL_RO_UNUSED:
			note(v, f->name, "%" PRIu64 " zero bytes after the records at offset %" PRIu64
			    " (unused space of a preallocated segment; ackd cuts them at start-up)",
			    item.len, item.off);
			break;
		}
	}
	if (rc < 0)
		problem(v, f->name, -1, "read-error", "%s", strerror(errno));
	if (!failed_log && !footer && !newest)
		note(v, f->name, "no footer although newer segments exist (sealing failed; "
		    "ackd reads its record headers at start-up)");
	spool_ro_iter_free(it);
}

static void verify_acks(struct verify *v, const struct spool_ro_file *f)
{
	char name[64];

	if (!f->has_ack)
		return;
	snprintf(name, sizeof(name), "%.24s.ack", f->name);
	if (f->ack_partial)
		problem(v, name, (int64_t)(f->ack_bytes - f->ack_partial), "ack-partial-entry",
		    "the last entry has %" PRIu64 " of %d bytes (ackd drops it at start-up)",
		    f->ack_partial, SPOOL_ACK_ENTRY_SIZE);
	if (f->ack_bad)
		problem(v, name, -1, "ack-bad-crc", "%" PRIu64 " entries fail their CRC (ackd ignores them)",
		    f->ack_bad);
	if (f->ack_stray)
		problem(v, name, -1, "ack-out-of-range",
		    "%" PRIu64 " entries name sequences outside the segment", f->ack_stray);
}

static int cmd_verify(const char *dir)
{
	const struct spool_ro_file *segs, *failed;
	const struct spool_ro_other *others;
	struct verify v = { .dir = dir };
	struct spool_ro *ro;
	size_t nsegs, nfailed, nothers;
	uint64_t prev_end = 0;

	if (open_ro(dir, &ro) < 0)
		return EXIT_USAGE;
	if (spool_ro_in_use(ro) == 1)
		printf("%s: note: in use by a running ackd; its newest record may be mid-write\n", dir);
	nsegs = spool_ro_segments(ro, &segs);
	for (size_t i = 0; i < nsegs; i++) {
		uint64_t end;

		if (prev_end && segs[i].first_seq > prev_end)
			note(&v, segs[i].name, "sequences %" PRIu64 "-%" PRIu64
			    " are in no segment (deleted once acknowledged)",
			    prev_end, segs[i].first_seq - 1);
		verify_file(&v, ro, &segs[i], false, i + 1 == nsegs, &end);
		verify_acks(&v, &segs[i]);
		prev_end = end;
	}
	nfailed = spool_ro_failed(ro, &failed);
	for (size_t i = 0; i < nfailed; i++) {
		uint64_t end;
		verify_file(&v, ro, &failed[i], true, false, &end);
	}
	nothers = spool_ro_others(ro, &others);
	for (size_t i = 0; i < nothers; i++) {
		const char *what = others[i].kind == SPOOL_RO_ORPHAN_ACK ?
		    "acknowledgements of a deleted segment (ackd removes the file)" :
		    others[i].kind == SPOOL_RO_TEMP ? "an unfinished segment (ackd removes it)" :
		    "not a spool file (ackd ignores it)";
		note(&v, others[i].name, "%s", what);
	}
	spool_ro_free(ro);
	if (v.problems) {
		printf("%s: damaged: %" PRIu64 " problems in %zu segments and %zu failed/ logs\n", dir,
		    v.problems, nsegs, nfailed);
		return EXIT_DAMAGE;
	}
	printf("%s: clean: %zu segments and %zu failed/ logs verified\n", dir, nsegs, nfailed);
	return 0;
}

/* --- dump ------------------------------------------------------------------------ */

/* field = the bytes as a string when they are UTF-8, else field_b64 = base64. */
static int set_bytes(json_t *o, const char *field, const char *p, size_t n)
{
	json_t *s;
	char name[64];
	char *b64;
	size_t blen;

	if (!p)
		return json_object_set_new(o, field, json_null());
	if ((s = json_stringn(n ? p : "", n)))
		return json_object_set_new(o, field, s);
	blen = base64_encode(p, n, NULL, 0);
	if (!(b64 = malloc(blen + 1)))
		return -1;
	base64_encode(p, n, b64, blen + 1);
	snprintf(name, sizeof(name), "%s_b64", field);
	s = json_stringn(b64, blen);
	free(b64);
	return s ? json_object_set_new(o, name, s) : -1;
}

static int print_record(uint64_t seq, const struct spool_msg *m, bool failed, int acked)
{
	const struct spool_hdr *reason = failed ? reason_hdr(m) : NULL;
	size_t nh = reason ? m->nhdrs - 1 : m->nhdrs;
	json_t *o = json_object(), *hdrs = json_array();
	char *line = NULL;
	int rc = -1;

	if (!o || !hdrs)
		goto out;
	if (json_object_set_new(o, "seq", json_integer((json_int_t)seq)) < 0 ||
	    set_bytes(o, "topic", m->topic, m->topic_len) < 0 ||
	    json_object_set_new(o, "partition",
		m->partition < 0 ? json_null() : json_integer(m->partition)) < 0 ||
	    set_bytes(o, "key", m->key, m->key_len) < 0 ||
	    set_bytes(o, "value", m->value ? m->value : "", m->value_len) < 0)
		goto out;
	for (size_t i = 0; i < nh; i++) {
		json_t *h = json_object();
		if (!h || json_array_append_new(hdrs, h) < 0 ||
		    set_bytes(h, "name", m->hdrs[i].name, m->hdrs[i].name_len) < 0 ||
		    set_bytes(h, "value", m->hdrs[i].value, m->hdrs[i].value_len) < 0)
			goto out;
	}
	if (json_object_set(o, "headers", hdrs) < 0 ||
	    json_object_set_new(o, "timestamp", json_integer(m->timestamp_ms)) < 0)
		goto out;
	if (failed && reason && set_bytes(o, "reason", reason->value, reason->value_len) < 0)
		goto out;
	if (!failed && json_object_set_new(o, "acked", json_boolean(acked)) < 0)
		goto out;
	if (!(line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)))
		goto out;
	rc = puts(line) < 0 ? -1 : 0;
out:
	free(line);
	json_decref(hdrs);
	json_decref(o);
	return rc;
}

/* One KEY record as a JSON line: the key, its scope and topic, its records. */
static int print_key(uint64_t seq, const struct spool_key *k)
{
	json_t *o = json_object(), *ids = json_array();
	char hash[2 * SPOOL_KEY_HASH_LEN + 1], *line = NULL;
	int rc = -1;

	for (size_t i = 0; i < SPOOL_KEY_HASH_LEN; i++)
		snprintf(hash + 2 * i, 3, "%02x", k->hash[i]);
	if (!o || !ids)
		goto out;
	for (uint32_t i = 0; i < k->nrecs; i++)
		if (json_array_append_new(ids, json_stringn(k->ids + (size_t)i * SPOOL_KEY_ID_LEN,
		        SPOOL_KEY_ID_LEN)) < 0)
			goto out;
	if (json_object_set_new(o, "seq", json_integer((json_int_t)seq)) < 0 ||
	    set_bytes(o, "idempotency_key", k->key, k->key_len) < 0 ||
	    set_bytes(o, "scope", k->scope, k->scope_len) < 0 ||
	    set_bytes(o, "topic", k->topic, k->topic_len) < 0 ||
	    json_object_set_new(o, "first_seq", json_integer((json_int_t)(seq - k->nrecs))) < 0 ||
	    json_object_set(o, "ids", ids) < 0 ||
	    json_object_set_new(o, "request_sha256", json_string(hash)) < 0 ||
	    json_object_set_new(o, "timestamp", json_integer(k->timestamp_ms)) < 0)
		goto out;
	if (!(line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER)))
		goto out;
	rc = puts(line) < 0 ? -1 : 0;
out:
	free(line);
	json_decref(ids);
	json_decref(o);
	return rc;
}

static int dump_file(struct spool_ro *ro, const struct spool_ro_file *f, bool failed, bool all,
    bool keys)
{
	struct spool_ro_iter *it;
	struct spool_ro_item item;
	int rc, skipped = 0;

	if (spool_ro_iter_new(ro, f, 0, &it) < 0) {
		warnx_("%s: %s", f->name, strerror(errno));
		return -1;
	}
	while ((rc = spool_ro_iter_next(it, &item)) > 0) {
		if (item.kind == SPOOL_RO_DAMAGE) {
			warnx_("%s: offset %" PRIu64 ": %s, %" PRIu64 " bytes skipped (see verify)",
			    f->name, item.off, spool_rec_status_str(item.why), item.len);
			skipped++;
			continue;
		}
		if (keys) {
			if (item.kind == SPOOL_RO_RECORD && item.type == SPOOL_REC_KEY &&
			    print_key(item.seq, &item.key) < 0) {
				warnx_("writing key record %" PRIu64 ": %s", item.seq, strerror(errno));
				spool_ro_iter_free(it);
				return -1;
			}
			continue;
		}
		if (item.kind != SPOOL_RO_RECORD || (!failed && item.type != SPOOL_REC_MSG))
			continue;
		if (!failed && !all && item.acked)
			continue;
		if (print_record(item.seq, &item.rec->msg, failed, item.acked) < 0) {
			warnx_("writing record %" PRIu64 ": %s", item.seq, strerror(errno));
			spool_ro_iter_free(it);
			return -1;
		}
	}
	if (rc < 0)
		warnx_("%s: %s", f->name, strerror(errno));
	spool_ro_iter_free(it);
	return rc < 0 ? -1 : 0;
}

static int cmd_dump(const char *dir, bool all, bool failed, bool keys)
{
	const struct spool_ro_file *files;
	struct spool_ro *ro;
	size_t n;
	int rc = 0;

	if (open_ro(dir, &ro) < 0)
		return EXIT_USAGE;
	n = failed ? spool_ro_failed(ro, &files) : spool_ro_segments(ro, &files);
	for (size_t i = 0; i < n; i++)
		if (dump_file(ro, &files[i], failed, all, keys) < 0)
			rc = EXIT_DAMAGE;
	spool_ro_free(ro);
	if (fflush(stdout) != 0) {
		warnx_("stdout: %s", strerror(errno));
		rc = EXIT_DAMAGE;
	}
	return rc;
}

/* --- reinject ------------------------------------------------------------------------ */

/* The batches of one failed/ file, waited for together. */
struct wait {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	size_t pending;
	enum spool_err err;
};

static void batch_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct wait *w = arg;

	(void)first_seq;
	pthread_mutex_lock(&w->mu);
	if (err != SPOOL_OK && w->err == SPOOL_OK)
		w->err = err;
	w->pending--;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mu);
}

static const char *spool_err_str(enum spool_err err)
{
	switch (err) {
	case SPOOL_OK:
		return "ok";
	case SPOOL_EFULL:
		return "the spool or its file system is full";
	case SPOOL_EIO:
		return "write error";
	case SPOOL_ECLOSED:
		return "the spool closed";
	}
	return "unknown error";
}

static int submit_batch(struct spool *sp, struct spool_batch **b, struct wait *w)
{
	enum spool_err err;

	if (!*b || spool_batch_count(*b) == 0)
		return 0;
	pthread_mutex_lock(&w->mu);
	w->pending++;
	pthread_mutex_unlock(&w->mu);
	err = spool_submit(sp, *b, batch_done, w);
	*b = NULL;
	if (err != SPOOL_OK) {
		pthread_mutex_lock(&w->mu);
		w->pending--;
		if (w->err == SPOOL_OK)
			w->err = err;
		pthread_mutex_unlock(&w->mu);
		return -1;
	}
	return 0;
}

struct held {
	uint64_t seq;
	struct spool_rec *rec;
};

static int cmp_held(const void *a, const void *b)
{
	const struct held *x = a, *y = b;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The records of one failed/ log, or -1 when it is damaged or unreadable. */
static int read_failed(struct spool_ro *ro, const char *dir, const struct spool_ro_file *f,
    struct held **out, size_t *nout)
{
	struct spool_ro_iter *it = NULL;
	struct spool_ro_item item;
	struct held *v = NULL;
	size_t n = 0, cap = 0;
	int rc = -1, r;

	*out = NULL;
	*nout = 0;
	if (spool_ro_iter_new(ro, f, 0, &it) < 0) {
		warnx_("%s/%s: %s, file kept", dir, f->name, strerror(errno));
		return -1;
	}
	while ((r = spool_ro_iter_next(it, &item)) > 0) {
		const struct spool_msg *m;
		struct spool_rec *copy;
		size_t len, hbytes;

		if (item.kind != SPOOL_RO_RECORD) {
			warnx_("%s/%s: offset %" PRIu64 ": damaged, file kept (run verify)", dir, f->name,
			    item.off);
			goto out;
		}
		/* A copy of our own, since item.rec lasts until the next record only. */
		m = &item.rec->msg;
		len = spool_rec_size(m);
		hbytes = m->nhdrs * sizeof(struct spool_hdr);
		if (len == 0 || !(copy = malloc(sizeof(*copy) + hbytes + len)))
			goto nomem;
		{
			struct spool_hdr *hdrs = (struct spool_hdr *)(copy + 1);
			unsigned char *raw = (unsigned char *)hdrs + hbytes;
			spool_rec_encode(m, raw);
			spool_rec_set_seq(raw, item.seq);
			if (spool_rec_decode(raw, len, NULL, &copy->msg, hdrs, m->nhdrs) != SPOOL_REC_OK) {
				free(copy);
				warnx_("%s/%s: record %" PRIu64 " does not encode again, file kept", dir,
				    f->name, item.seq);
				goto out;
			}
		}
		copy->seq = item.seq;
		copy->unfiled = false; /* filed: never an unfiled dead letter */
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct held *nv = realloc(v, nc * sizeof(*nv));
			if (!nv) {
				free(copy);
				goto nomem;
			}
			v = nv;
			cap = nc;
		}
		v[n].seq = item.seq;
		v[n++].rec = copy;
	}
	if (r < 0) {
		warnx_("%s/%s: %s, file kept", dir, f->name, strerror(errno));
		goto out;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_held); /* back in their original order */
	*out = v;
	*nout = n;
	v = NULL;
	n = 0;
	rc = 0;
	goto out;
nomem:
	warnx_("out of memory");
out:
	for (size_t i = 0; i < n; i++)
		spool_rec_free(v[i].rec);
	free(v);
	spool_ro_iter_free(it);
	return rc;
}

/*
 * Append the records of f to the spool as new messages, without the reason
 * header, and wait until they are durable. 0, or -1 (nothing of f removed).
 */
static int reinject_file(struct spool *sp, struct spool_ro *ro, const char *dir,
    const struct spool_ro_file *f, uint64_t *count)
{
	struct wait w = { .err = SPOOL_OK };
	struct spool_batch *b = NULL;
	struct held *recs;
	size_t n, bytes = 0;
	int rc = 0;

	if (read_failed(ro, dir, f, &recs, &n) < 0)
		return -1;
	pthread_mutex_init(&w.mu, NULL);
	pthread_cond_init(&w.cond, NULL);
	for (size_t i = 0; i < n && rc == 0; i++) {
		struct spool_msg m = recs[i].rec->msg;
		size_t len;

		if (reason_hdr(&m))
			m.nhdrs--;
		len = spool_rec_size(&m);
		if (b && bytes + len > REINJECT_BATCH_BYTES) {
			rc = submit_batch(sp, &b, &w);
			bytes = 0;
		}
		if (rc == 0 && !b && !(b = spool_batch_new(64)))
			rc = -1;
		if (rc == 0 && spool_batch_add(b, &m) < 0)
			rc = -1;
		bytes += len;
	}
	if (rc == 0)
		rc = submit_batch(sp, &b, &w);
	spool_batch_free(b);
	pthread_mutex_lock(&w.mu);
	while (w.pending)
		pthread_cond_wait(&w.cond, &w.mu);
	pthread_mutex_unlock(&w.mu);
	if (rc == 0 && w.err != SPOOL_OK)
		rc = -1;
	if (rc < 0)
		warnx_("%s/%s: %s; file kept (records written before the error may be produced twice "
		    "after another reinject)", dir, f->name,
		    w.err != SPOOL_OK ? spool_err_str(w.err) : "out of memory");
	else
		*count += n;
	for (size_t i = 0; i < n; i++)
		spool_rec_free(recs[i].rec);
	free(recs);
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.mu);
	return rc;
}

static int cmd_reinject(const char *dir)
{
	const struct spool_ro_file *files;
	/*
	 * Opening deletes the segments Kafka acknowledged in full: their
	 * Idempotency-Keys go to the keys file first, as ackd would keep them.
	 */
	struct spool_opts opts = { .dir = dir, .fsync = CONF_FSYNC_ALWAYS,
		.key_ttl_ms = SPOOL_KEY_TTL_ALL };
	struct spool_ro *ro;
	struct spool *sp = NULL;
	uint64_t count = 0;
	size_t n, done = 0;
	int rc = 0, dfd;
	char err[512];

	if (open_ro(dir, &ro) < 0)
		return EXIT_USAGE;
	if (spool_ro_in_use(ro) == 1) {
		warnx_("%s is in use by a running ackd (%s/lock is locked): stop ackd first, "
		    "reinject needs the spool to itself", dir, dir);
		spool_ro_free(ro);
		return EXIT_DAMAGE;
	}
	n = spool_ro_failed(ro, &files);
	if (n == 0) {
		printf("reinjected 0 records: %s/failed/ holds none\n", dir);
		spool_ro_free(ro);
		return 0;
	}
	/* Takes the lock: a daemon starting meanwhile is refused, and so are we. */
	if (spool_open(&opts, &sp, err, sizeof(err)) < 0) {
		warnx_("%s", err);
		spool_ro_free(ro);
		return EXIT_DAMAGE;
	}
	/* Recovery cut the torn tails of failed/ logs: list them again. */
	spool_ro_free(ro);
	if (open_ro(dir, &ro) < 0) {
		spool_close(sp);
		return EXIT_DAMAGE;
	}
	n = spool_ro_failed(ro, &files);
	for (size_t i = 0; i < n; i++) {
		if (reinject_file(sp, ro, dir, &files[i], &count) < 0) {
			rc = EXIT_DAMAGE;
			continue;
		}
		/* Durable in the spool (fsync=always): only now may the file go. */
		{
			char path[4096];
			struct stat st;
			snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
			/* A daemon stopping before we took the lock may have appended. */
			if (stat(path, &st) == 0 && (uint64_t)st.st_size != files[i].bytes) {
				warnx_("%s: grew while it was read; kept (its records read so far are "
				    "in the spool now: run reinject again for the rest, expect "
				    "duplicates of those)", path);
				rc = EXIT_DAMAGE;
				continue;
			}
			if (unlink(path) < 0) {
				warnx_("%s: cannot remove: %s (its records are in the spool now; remove it "
				    "before ackd-spool reinject runs again)", path, strerror(errno));
				rc = EXIT_DAMAGE;
				continue;
			}
		}
		done++;
	}
	{
		char path[4096];
		snprintf(path, sizeof(path), "%s/failed", dir);
		dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) < 0) {
			warnx_("%s: fsync: %s", path, strerror(errno));
			rc = EXIT_DAMAGE;
		}
		if (dfd >= 0)
			close(dfd);
	}
	spool_close(sp);
	spool_ro_free(ro);
	printf("reinjected %" PRIu64 " records from %zu of %zu failed/ files\n", count, done, n);
	return rc;
}

int main(int argc, char **argv)
{
	const char *cmd, *dir;
	bool all = false, failed = false, keys = false;

	if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc < 3) {
		usage(stderr);
		return EXIT_USAGE;
	}
	cmd = argv[1];
	dir = argv[2];
	log_set_level(LOG_LVL_WARN);
	for (int i = 3; i < argc; i++) {
		if (!strcmp(cmd, "dump") && !strcmp(argv[i], "--all")) {
			all = true;
		} else if (!strcmp(cmd, "dump") && !strcmp(argv[i], "--failed")) {
			failed = true;
		} else if (!strcmp(cmd, "dump") && !strcmp(argv[i], "--keys")) {
			keys = true;
		} else {
			warnx_("%s: unexpected argument %s", cmd, argv[i]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (all + failed + keys > 1) {
		warnx_("dump: --all, --failed and --keys exclude each other");
		return EXIT_USAGE;
	}
	if (!strcmp(cmd, "stat"))
		return cmd_stat(dir);
	if (!strcmp(cmd, "verify"))
		return cmd_verify(dir);
	if (!strcmp(cmd, "dump"))
		return cmd_dump(dir, all, failed, keys);
	if (!strcmp(cmd, "reinject"))
		return cmd_reinject(dir);
	warnx_("unknown command %s", cmd);
	usage(stderr);
	return EXIT_USAGE;
}
