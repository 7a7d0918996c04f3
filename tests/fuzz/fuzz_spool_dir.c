/*
 * fuzz_spool_dir: spool recovery from arbitrary directory contents.
 *
 * The input describes a spool directory file by file (fuzz_util.h: segments,
 * .ack files, failed/ logs, temp files, the lock file, junk names; each
 * optionally with its CRCs repaired so mutations get past the checksums).
 * The target writes it to a scratch directory and then:
 *   1. reads it offline: spool_ro_open() and every file's records through
 *      spool_ro_iter_next(), with and without payloads; each record returned
 *      must encode back to exactly the bytes at its offset in its file;
 *   2. recovers it: spool_open(), then spool_next() through everything, each
 *      record read again with spool_get() and acknowledged (the first one
 *      moved to failed/ with spool_fail() instead); each record handed out
 *      must be byte for byte a record of an input segment (valid CRCs, no
 *      neighbour's bytes, nothing from inside the torn record at the end of
 *      the newest segment), sequences ascend and none comes twice;
 *   3. appends one batch after recovery and must get it back whole with the
 *      sequence the writer reported;
 *   4. closes, opens again: everything was acknowledged or moved to failed/,
 *      so nothing may be handed out a second time.
 * Sanitizers catch memory errors; libFuzzer's -rss_limit_mb, -malloc_limit_mb
 * and -timeout bound memory and time (scripts/fuzz sets them).
 *
 * Replay binary options: --pack DIR (a spool directory to stdout, in the
 * input format) and --seed OUTDIR (spools written by the real writer, packed
 * into OUTDIR as corpus seeds).
 */
#include "config.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "spool.h"

#define T "fuzz_spool_dir"
#define MAX_RECORDS 100000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

/* The batch appended after recovery. */
static const struct spool_hdr new_hdr = { "ackd-id", 7, "fuzz-new", 8 };
static const struct spool_msg new_msg = {
	.topic = "fuzz", .topic_len = 4, .partition = -1, .key = NULL, .value = "after recovery",
	.value_len = 14, .hdrs = &new_hdr, .nhdrs = 1, .timestamp_ms = 1700000000000,
};

struct done {
	int called;
	enum spool_err err;
	uint64_t first_seq;
};

static void on_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct done *d = arg;

	d->err = err;
	d->first_seq = first_seq;
	__atomic_store_n(&d->called, 1, __ATOMIC_RELEASE);
}

static int same_msg(const struct spool_msg *a, const struct spool_msg *b)
{
	size_t la, lb;
	uint8_t *ea = fuzz_encode(a, 0, SPOOL_REC_MSG, 0, &la);
	uint8_t *eb = fuzz_encode(b, 0, SPOOL_REC_MSG, 0, &lb);
	int same = ea && eb && la == lb && !memcmp(ea, eb, la);

	free(ea);
	free(eb);
	return same;
}

/* 1: offline reading, checked against the input's bytes. */
static void check_ro(const char *dir, const struct fuzz_dir *d)
{
	const struct spool_ro_file *lists[2];
	size_t counts[2];
	const struct spool_ro_other *others;
	struct spool_ro *ro;
	char err[512];

	if (spool_ro_open(dir, &ro, err, sizeof(err)) < 0) {
		fuzz_check(err[0] != '\0', T, "spool_ro_open failed without a reason");
		return;
	}
	counts[0] = spool_ro_segments(ro, &lists[0]);
	counts[1] = spool_ro_failed(ro, &lists[1]);
	(void)spool_ro_others(ro, &others);
	fuzz_check(spool_ro_in_use(ro) <= 1, T, "spool_ro_in_use answered neither -1, 0 nor 1");
	for (int l = 0; l < 2; l++) {
		for (size_t i = 0; i < counts[l]; i++) {
			const struct spool_ro_file *f = &lists[l][i];
			const struct fuzz_file *in = fuzz_dir_find(d, f->name);

			fuzz_check(in != NULL && f->bytes == in->len, T, "offline listing differs from the files");
			for (size_t a = 1; a < f->nacks; a++)
				fuzz_check(f->acks[a - 1] < f->acks[a], T, "ack list not sorted and unique");
			for (int headers_only = 0; headers_only < 2; headers_only++) {
				struct spool_ro_iter *it;
				struct spool_ro_item item;
				uint64_t last_end = 0;
				int r, n = 0;

				if (spool_ro_iter_new(ro, f, headers_only, &it) < 0)
					continue;
				while ((r = spool_ro_iter_next(it, &item)) > 0 && n++ < MAX_RECORDS) {
					fuzz_check(item.off >= last_end && item.off + item.len <= f->bytes, T,
					    "offline item outside its file or going back");
					last_end = item.off + item.len;
					if (item.kind != SPOOL_RO_RECORD || item.rec == NULL)
						continue;
					size_t n2;
					uint8_t *enc = fuzz_encode(&item.rec->msg, item.seq, item.type, item.flags, &n2);
					fuzz_check(enc != NULL && n2 == item.len &&
						       !memcmp(enc, in->data + item.off, n2),
					    T, "offline record differs from the bytes at its offset");
					free(enc);
				}
				fuzz_check(n <= MAX_RECORDS, T, "offline iterator does not end");
				spool_ro_iter_free(it);
			}
		}
	}
	spool_ro_free(ro);
}

/*
 * Where the newest segment's torn tail starts: walking its records from the
 * header on, the offset of a record whose header is intact but whose bytes
 * run past the end of the file. Recovery cuts the file there and must not
 * look inside that record (docs/spool-format.md). len when the walk meets
 * anything else first (damage is another rule) or the file ends cleanly.
 */
static size_t torn_tail(const struct fuzz_file *f)
{
	uint64_t first;
	size_t off = SPOOL_SEG_HDR_SIZE;

	if (spool_seg_hdr_parse(f->data, f->len, &first) < 0)
		return f->len;
	while (off + SPOOL_REC_HDR_SIZE <= f->len) {
		struct spool_rec_hdr h;
		enum spool_rec_status st = spool_rec_parse_hdr(f->data + off, f->len - off, &h);
		if (st == SPOOL_REC_SHORT)
			return off;
		if (st != SPOOL_REC_OK)
			break;
		off += SPOOL_REC_HDR_SIZE + h.payload_len;
	}
	return f->len;
}

/*
 * The bytes handed-out records must come from: the input's segment files,
 * concatenated with a gap, the newest one without its torn tail.
 */
static uint8_t *segment_bytes(const struct fuzz_dir *d, size_t *len)
{
	const struct fuzz_file *newest = NULL;
	uint8_t *all = NULL, *nb;
	size_t n = 0;

	/* Names of one kind differ only in their 20 digits: the largest sorts last. */
	for (size_t i = 0; i < d->n; i++)
		if (d->f[i].kind == FUZZ_F_SEG && (!newest || strcmp(d->f[i].name, newest->name) > 0))
			newest = &d->f[i];
	for (size_t i = 0; i < d->n; i++) {
		size_t flen = d->f[i].len;
		if (d->f[i].kind != FUZZ_F_SEG)
			continue;
		if (&d->f[i] == newest)
			flen = torn_tail(newest);
		nb = realloc(all, n + flen + 1);
		if (nb == NULL) {
			free(all);
			return NULL;
		}
		all = nb;
		memcpy(all + n, d->f[i].data, flen);
		n += flen;
		all[n++] = 0;
	}
	*len = n;
	return all ? all : calloc(1, 1);
}

/* The record a spool_fail() left live because failed/ could not take it; 0: none. */
static uint64_t kept_seq;

/* Hand out everything from *cursor on; returns the number of records. */
static size_t drain(struct spool *sp, uint64_t *cursor, const uint8_t *hay, size_t haylen,
    const struct done *appended, int *fail_one, int *seen_new)
{
	struct spool_rec *r;
	uint64_t last = 0;
	size_t n = 0;
	int have_last = 0;

	while (n < MAX_RECORDS && spool_next(sp, cursor, &r) == 1) {
		struct spool_rec *again = NULL;

		n++;
		fuzz_check(!have_last || r->seq > last, T, "sequences handed out do not ascend");
		fuzz_check(*cursor > r->seq, T, "cursor not past the record handed out");
		last = r->seq;
		have_last = 1;
		if (appended && appended->called && appended->err == SPOOL_OK &&
		    r->seq == appended->first_seq) {
			fuzz_check(same_msg(&r->msg, &new_msg), T, "appended record comes back different");
			*seen_new = 1;
		} else if (!fuzz_rec_in(r, hay, haylen)) {
			fprintf(stderr, "%s: record %" PRIu64 " (topic %zu bytes, value %zu bytes, %zu headers)\n",
			    T, r->seq, r->msg.topic_len, r->msg.value_len, r->msg.nhdrs);
			fuzz_check(0, T, "record handed out is not a whole record of the input");
		}
		if (spool_get(sp, r->seq, &again) == 1) {
			fuzz_check(again->seq == r->seq && same_msg(&again->msg, &r->msg), T,
			    "spool_get returns another record");
			spool_rec_free(again);
		}
		if (*fail_one) {
			enum spool_fail_rc rc = spool_fail(sp, r->seq, "fuzz");

			*fail_one = 0;
			if (rc == SPOOL_FAIL_NOMEM)
				spool_ack(sp, r->seq);
			else if (rc == SPOOL_FAIL_LATER)
				kept_seq = r->seq; /* failed/ cannot take it now: it stays live */
		} else {
			spool_ack(sp, r->seq);
		}
		spool_rec_free(r);
	}
	fuzz_check(n < MAX_RECORDS, T, "spool_next does not end");
	return n;
}

/* 2-4: recovery, an append, a clean close and a second recovery. */
static void check_recovery(const char *dir, const struct fuzz_dir *d)
{
	struct spool_opts o = { .dir = dir, .fsync = CONF_FSYNC_NEVER, .max_bytes = 1ull << 30 };
	struct spool *sp = NULL;
	struct spool_batch *b;
	struct spool_stats st;
	struct done appended = { 0 };
	uint64_t cursor = 0;
	uint8_t *hay;
	size_t haylen = 0;
	int fail_one = 1, seen_new = 0;
	char err[512];

	kept_seq = 0;
	hay = segment_bytes(d, &haylen);
	if (hay == NULL)
		return;
	err[0] = '\0';
	if (spool_open(&o, &sp, err, sizeof(err)) < 0) {
		fuzz_check(err[0] != '\0', T, "spool_open failed without a reason");
		free(hay);
		return;
	}
	drain(sp, &cursor, hay, haylen, NULL, &fail_one, &seen_new);

	b = spool_batch_new(1);
	fuzz_check(b != NULL && spool_batch_add(b, &new_msg) == 0, T, "cannot build a batch");
	if (spool_submit(sp, b, on_done, &appended) == SPOOL_OK) {
		fuzz_check(spool_quiesce(sp, 10000) == 0, T, "writer did not finish a batch");
		fuzz_check(__atomic_load_n(&appended.called, __ATOMIC_ACQUIRE), T,
		    "batch not called back after quiesce");
		drain(sp, &cursor, hay, haylen, &appended, &fail_one, &seen_new);
		if (appended.err == SPOOL_OK && !seen_new)
			fprintf(stderr, "%s: appended as %" PRIu64 ", cursor now %" PRIu64 "\n", T,
			    appended.first_seq, cursor);
		fuzz_check(appended.err != SPOOL_OK || seen_new, T, "appended record not handed out");
	}
	spool_maintain(sp);
	spool_stats(sp, &st);
	spool_close(sp);

	/* Everything was acknowledged or failed: a second run hands out nothing. */
	sp = NULL;
	if (spool_open(&o, &sp, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: reopen: %s\n", T, err);
		fuzz_check(0, T, "a spool that opened does not open again after a clean close");
	}
	cursor = 0;
	{
		struct spool_rec *r;
		while (spool_next(sp, &cursor, &r) == 1) {
			/* A record that failed/ could not take is kept, and comes back. */
			if (r->seq != kept_seq) {
				fprintf(stderr, "%s: record %" PRIu64 " handed out again\n", T, r->seq);
				fuzz_check(0, T, "an acknowledged record is handed out again after a clean close");
			}
			spool_rec_free(r);
		}
	}
	spool_close(sp);
	free(hay);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_dir d;
	char dir[256];

	if (fuzz_tmpdir(dir, sizeof(dir)) < 0) {
		perror(T ": scratch directory");
		abort();
	}
	fuzz_dir_parse(&d, data, size);
	if (fuzz_dir_write(&d, dir) == 0) {
		check_ro(dir, &d);
		check_recovery(dir, &d);
	}
	fuzz_dir_fini(&d);
	if (fuzz_rmrf(dir) < 0) {
		perror(T ": removing the scratch directory");
		abort();
	}
	return 0;
}

/* --- seeds ------------------------------------------------------------------ */

/* Write n records through the real writer; 0 or -1. */
static int seed_write(struct spool *sp, int n, size_t value_len, int variant)
{
	for (int i = 0; i < n; i++) {
		char key[32], id[32];
		char *value = malloc(value_len + 1);
		struct spool_hdr hdrs[2] = { { "ackd-id", 7, id, 0 }, { "nil", 3, NULL, 0 } };
		struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = i % 3 - 1,
			.timestamp_ms = 1700000000000 + i, .hdrs = hdrs, .nhdrs = variant ? 2 : 1 };
		struct done dn = { 0 };
		struct spool_batch *b;

		if (value == NULL)
			return -1;
		memset(value, 'a' + i % 26, value_len);
		snprintf(key, sizeof(key), "k%d", i);
		hdrs[0].value_len = (size_t)snprintf(id, sizeof(id), "id-%d", i);
		m.key = variant && i % 2 ? NULL : key;
		m.key_len = m.key ? strlen(key) : 0;
		m.value = value;
		m.value_len = variant && i % 5 == 0 ? 0 : value_len;
		b = spool_batch_new(1);
		if (b == NULL || spool_batch_add(b, &m) < 0 || spool_submit(sp, b, on_done, &dn) != SPOOL_OK) {
			free(value);
			return -1;
		}
		while (!__atomic_load_n(&dn.called, __ATOMIC_ACQUIRE))
			usleep(100);
		free(value);
		if (dn.err != SPOOL_OK)
			return -1;
	}
	return 0;
}

/* Hand out every record; acknowledge those where ack(i), fail those where fail(i). */
static void seed_consume(struct spool *sp, int every_ack, int every_fail)
{
	struct spool_rec *r;
	uint64_t cursor = 0;

	for (int i = 0; spool_next(sp, &cursor, &r) == 1; i++) {
		if (every_fail && i % every_fail == 0) {
			if (spool_fail(sp, r->seq, "seed") == SPOOL_FAIL_NOMEM)
				fprintf(stderr, "%s: spool_fail failed\n", T);
		} else if (every_ack && i % every_ack == 0) {
			spool_ack(sp, r->seq);
		}
		spool_rec_free(r);
	}
	spool_maintain(sp);
}

static int seed_one(const char *outdir, const char *name, int n, size_t value_len, int variant,
    int every_ack, int every_fail, int reopen)
{
	struct spool_opts o = { .fsync = CONF_FSYNC_NEVER, .max_bytes = 512 << 10 };
	struct spool *sp = NULL;
	char dir[256], err[512];
	uint8_t *packed;
	size_t len;
	int rc = -1;

	if (fuzz_tmpdir(dir, sizeof(dir)) < 0)
		return -1;
	o.dir = dir;
	if (spool_open(&o, &sp, err, sizeof(err)) < 0 || seed_write(sp, n, value_len, variant) < 0)
		goto out;
	seed_consume(sp, every_ack, every_fail);
	spool_close(sp);
	sp = NULL;
	if (reopen) {
		if (spool_open(&o, &sp, err, sizeof(err)) < 0 || seed_write(sp, 2, 10, variant) < 0)
			goto out;
		spool_close(sp);
		sp = NULL;
	}
	packed = fuzz_dir_pack(dir, &len);
	if (packed == NULL)
		goto out;
	rc = fuzz_write_file(outdir, name, packed, len);
	free(packed);
out:
	if (rc < 0)
		fprintf(stderr, "%s: seed %s: %s\n", T, name, sp == NULL ? err : "write failed");
	spool_close(sp);
	fuzz_rmrf(dir);
	return rc;
}

int fuzz_tool(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--pack")) {
		size_t len;
		uint8_t *packed = fuzz_dir_pack(argv[2], &len);
		if (packed == NULL || fwrite(packed, 1, len, stdout) != len) {
			perror(argv[2]);
			return 1;
		}
		free(packed);
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--seed")) {
		const char *o = argv[2];
		fuzz_quiet();
		/* max_bytes 512 KiB makes 64 KiB segments: 40 records of 2 KiB roll once. */
		if (seed_one(o, "seed-writer-3", 3, 16, 0, 0, 0, 0) < 0 ||
		    seed_one(o, "seed-writer-acks", 8, 16, 1, 2, 0, 0) < 0 ||
		    seed_one(o, "seed-writer-failed", 6, 16, 1, 0, 3, 0) < 0 ||
		    seed_one(o, "seed-writer-reopen", 4, 16, 0, 1, 0, 1) < 0 ||
		    seed_one(o, "seed-writer-roll", 40, 2048, 1, 3, 0, 0) < 0)
			return 1;
		return 0;
	}
	fprintf(stderr, "usage: %s [--pack DIR | --seed OUTDIR | FILE|DIR...]\n", T);
	return 2;
}
