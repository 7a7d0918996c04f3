/*
 * fuzz_spool_ack: the .ack file reader, with one segment and any .ack file.
 *
 * Input: byte 0 shapes the segment the target writes with the real encoder
 * (bits 0-4: first sequence 1 + 7 * n; bit 5: sealed with a footer, an empty
 * next segment after it; bit 6: the first sequence is 2^32 further), byte 1
 * its record count (1 + byte % 48). The rest is the .ack file: raw bytes when
 * bit 7 of byte 0 is clear; else 3-byte operations (op, u16 value) that write
 * an intact entry for first + value, one for an arbitrary sequence, a
 * damaged entry, or value % 12 stray bytes, so the fuzzer spends its time on
 * the reader's decisions rather than on CRCs.
 *
 * The oracle, from an independent reading of the .ack file (an entry counts
 * when its CRC holds and its sequence is in the segment, or offline from the
 * first sequence on for the newest segment, whose end is not known; a
 * partial last entry is ignored):
 *   - spool_ro: the segment's ack list, bad, stray and partial counts equal it;
 *   - spool_open: spool_next() hands out exactly the segment's records it
 *     does not name, once each, in order;
 *   - acknowledging those, closing and opening again hands out nothing.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "spool.h"

#define T "fuzz_spool_ack"
#define MAX_RECS 48

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	return 0;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* The segment: header, nrecs records, a footer when sealed. A new buffer. */
static uint8_t *make_segment(uint64_t first, size_t nrecs, int sealed, size_t *len)
{
	uint8_t *buf = NULL, *nb;
	size_t n = SPOOL_SEG_HDR_SIZE;
	int64_t min_ts = 0;

	buf = malloc(n);
	if (buf == NULL)
		return NULL;
	spool_seg_hdr_encode(buf, first, 1700000000000);
	for (size_t i = 0; i < nrecs; i++) {
		char value[32];
		struct spool_hdr h = { "ackd-id", 7, value, 0 };
		struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = -1, .value = value,
			.hdrs = &h, .nhdrs = 1, .timestamp_ms = 1700000000000 + (int64_t)i };
		size_t rl;
		m.value_len = h.value_len = (size_t)snprintf(value, sizeof(value), "v%zu", i);
		rl = spool_rec_size(&m);
		nb = realloc(buf, n + rl);
		if (nb == NULL)
			goto fail;
		buf = nb;
		spool_rec_encode(&m, buf + n);
		spool_rec_set_seq(buf + n, first + i);
		n += rl;
		if (i == 0)
			min_ts = m.timestamp_ms;
	}
	if (sealed) {
		struct spool_seal s = { first, first + nrecs, nrecs, n, min_ts };
		nb = realloc(buf, n + SPOOL_SEAL_SIZE);
		if (nb == NULL)
			goto fail;
		buf = nb;
		spool_seal_encode(buf + n, &s);
		n += SPOOL_SEAL_SIZE;
	}
	*len = n;
	return buf;
fail:
	free(buf);
	return NULL;
}

/* The .ack file from the input: raw, or built from operations. A new buffer. */
static uint8_t *make_acks(const uint8_t *in, size_t inlen, int ops, uint64_t first, size_t *len)
{
	uint8_t *buf;
	size_t n = 0;

	if (!ops) {
		buf = malloc(inlen ? inlen : 1);
		if (buf && inlen)
			memcpy(buf, in, inlen);
		*len = inlen;
		return buf;
	}
	buf = malloc(inlen / 3 * SPOOL_ACK_ENTRY_SIZE + 1);
	if (buf == NULL)
		return NULL;
	for (size_t i = 0; i + 3 <= inlen; i += 3) {
		uint16_t v = (uint16_t)(in[i + 1] | in[i + 2] << 8);
		switch (in[i] % 4) {
		case 0: /* an intact entry for first + v (in the segment when v is small) */
			spool_ack_entry_encode(buf + n, first + v % 64);
			n += SPOOL_ACK_ENTRY_SIZE;
			break;
		case 1: /* an intact entry for any sequence */
			spool_ack_entry_encode(buf + n, (uint64_t)v << (in[i] >> 2 & 63));
			n += SPOOL_ACK_ENTRY_SIZE;
			break;
		case 2: /* a damaged entry */
			spool_ack_entry_encode(buf + n, first + v % 64);
			buf[n + 8 + v % 4] ^= (uint8_t)(1 + (v >> 8));
			n += SPOOL_ACK_ENTRY_SIZE;
			break;
		default: /* stray bytes: every later entry is misaligned */
			memset(buf + n, in[i + 1], v % SPOOL_ACK_ENTRY_SIZE);
			n += v % SPOOL_ACK_ENTRY_SIZE;
			break;
		}
	}
	*len = n;
	return buf;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct spool_opts o = { .fsync = CONF_FSYNC_NEVER, .max_bytes = 1ull << 30 };
	uint8_t *seg = NULL, *acks = NULL, *nextseg = NULL;
	uint64_t first, end, ro_limit, bad = 0, stray = 0, *expect;
	size_t seglen = 0, acklen = 0, nrecs, nexpect = 0, nuniq = 0;
	int acked[MAX_RECS] = { 0 }, sealed;
	struct spool *sp = NULL;
	struct spool_ro *ro = NULL;
	char dir[256], name[64], err[512];

	if (size < 2)
		return 0;
	first = 1 + 7 * (uint64_t)(data[0] & 31) + (data[0] & 64 ? 1ull << 32 : 0);
	sealed = !!(data[0] & 32);
	nrecs = 1 + data[1] % MAX_RECS;
	end = first + nrecs;
	seg = make_segment(first, nrecs, sealed, &seglen);
	acks = make_acks(data + 2, size - 2, !!(data[0] & 128), first, &acklen);
	expect = malloc((acklen / SPOOL_ACK_ENTRY_SIZE + 1) * sizeof(*expect));
	fuzz_check(seg != NULL && acks != NULL && expect != NULL, T, "out of memory");

	/*
	 * The independent reading. Offline, the newest segment has no known end
	 * (ackd may be appending), so it lists every intact entry from first on.
	 */
	ro_limit = sealed ? end : UINT64_MAX;
	for (size_t off = 0; off + SPOOL_ACK_ENTRY_SIZE <= acklen; off += SPOOL_ACK_ENTRY_SIZE) {
		uint64_t seq = le64(acks + off);
		uint32_t crc = (uint32_t)(le64(acks + off + 4) >> 32);
		if (crc != crc32c(0, acks + off, 8)) {
			bad++;
		} else if (seq < first || seq >= ro_limit) {
			stray++;
		} else {
			if (seq < end)
				acked[seq - first] = 1;
			expect[nexpect++] = seq;
		}
	}
	qsort(expect, nexpect, sizeof(*expect), cmp_u64);
	for (size_t i = 0; i < nexpect; i++)
		if (nuniq == 0 || expect[i] != expect[nuniq - 1])
			expect[nuniq++] = expect[i];

	if (fuzz_tmpdir(dir, sizeof(dir)) < 0) {
		perror(T ": scratch directory");
		abort();
	}
	snprintf(name, sizeof(name), "seg-%020" PRIu64 ".spool", first);
	fuzz_check(fuzz_write_file(dir, name, seg, seglen) == 0, T, "cannot write the segment");
	snprintf(name, sizeof(name), "seg-%020" PRIu64 ".ack", first);
	fuzz_check(fuzz_write_file(dir, name, acks, acklen) == 0, T, "cannot write the .ack file");
	if (sealed) {
		size_t l;
		nextseg = make_segment(end, 0, 0, &l);
		fuzz_check(nextseg != NULL, T, "out of memory");
		snprintf(name, sizeof(name), "seg-%020" PRIu64 ".spool", end);
		fuzz_check(fuzz_write_file(dir, name, nextseg, l) == 0, T, "cannot write the segment");
	}

	/* Offline. */
	fuzz_check(spool_ro_open(dir, &ro, err, sizeof(err)) == 0, T, "spool_ro_open failed");
	{
		const struct spool_ro_file *segs;
		size_t ns = spool_ro_segments(ro, &segs);
		const struct spool_ro_file *f = &segs[0];
		fuzz_check(ns == 1u + sealed && f->first_seq == first && f->has_ack, T, "offline listing");
		fuzz_check(f->nacks == nuniq && (nuniq == 0 || !memcmp(f->acks, expect, nuniq * 8)),
		    T, "offline ack list differs");
		fuzz_check(f->ack_bad == bad, T, "offline count of damaged entries differs");
		fuzz_check(f->ack_stray == stray, T, "offline count of stray entries differs");
		fuzz_check(f->ack_partial == acklen % SPOOL_ACK_ENTRY_SIZE, T, "offline partial entry");
		for (size_t i = 0; i < nrecs; i++)
			fuzz_check(spool_ro_acked(f, first + i) == acked[i], T, "spool_ro_acked differs");
	}
	spool_ro_free(ro);

	/* Recovery: exactly the records not acknowledged, in order. */
	o.dir = dir;
	if (spool_open(&o, &sp, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s: %s\n", T, err);
		fuzz_check(0, T, "spool_open failed on a sound segment");
	}
	{
		struct spool_rec *r;
		uint64_t cursor = 0;
		size_t i = 0;
		while (spool_next(sp, &cursor, &r) == 1) {
			while (i < nrecs && acked[i])
				i++;
			fuzz_check(i < nrecs && r->seq == first + i, T,
			    "handed out a record the .ack file names, or skipped one it does not");
			i++;
			spool_ack(sp, r->seq);
			spool_rec_free(r);
		}
		while (i < nrecs && acked[i])
			i++;
		fuzz_check(i == nrecs, T, "a record the .ack file does not name was not handed out");
	}
	spool_close(sp);
	sp = NULL;
	fuzz_check(spool_open(&o, &sp, err, sizeof(err)) == 0, T, "reopen failed");
	{
		struct spool_rec *r;
		uint64_t cursor = 0;
		fuzz_check(spool_next(sp, &cursor, &r) == 0, T, "an acknowledged record came back");
	}
	spool_close(sp);

	fuzz_check(fuzz_rmrf(dir) == 0, T, "cannot remove the scratch directory");
	free(seg);
	free(acks);
	free(nextseg);
	free(expect);
	return 0;
}
