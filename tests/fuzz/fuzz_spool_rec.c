/*
 * fuzz_spool_rec: the record codec of daemon/spool_rec.h on arbitrary bytes.
 *
 * The first input byte chooses: bit 0 repairs the CRCs of every record found
 * (fuzz_repair_segment()) so the payload parser is reached, bit 1 treats the
 * rest as a segment (header first) rather than bare records. The rest is
 * walked as a buffer of records, as a reader does: at each offset the header
 * is parsed and the record decoded; a whole valid record is stepped over, any
 * other byte skipped. The oracle, for every record decoded:
 *   - its pointers lie inside the record, its lengths add up;
 *   - encoding the decoded message again (same type, flags, sequence) gives
 *     exactly the bytes read, so a reader and the writer agree;
 *   - a decode with too little room for the headers says how many there are
 *     and fills the first ones the same;
 * and the segment header, footer and ack entry parsers never read past what
 * they were given and agree with their encoders. crc32c() equals the table
 * version on every input. Sanitizers catch the rest.
 *
 * Built with libFuzzer by scripts/fuzz; otherwise fuzz_replay.c's main()
 * replays tests/fuzz/corpus/spool_rec under make check.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "spool_rec.h"

#define T "fuzz_spool_rec"
#define FEW_HDRS 2

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const void *p, size_t len, const uint8_t *rec, size_t reclen)
{
	const uint8_t *q = p;
	return q >= rec && len <= reclen && q - rec <= (ptrdiff_t)(reclen - len);
}

/* Decode the record at buf (len bytes left); returns its size when valid, else 0. */
static size_t check_record(const uint8_t *buf, size_t len)
{
	struct spool_hdr few[FEW_HDRS], *all = NULL;
	struct spool_rec_hdr h, h2;
	struct spool_msg m, m2;
	enum spool_rec_status st, st2;
	size_t reclen, enclen, ret = 0;
	uint8_t *enc = NULL;

	st = spool_rec_parse_hdr(buf, len, &h);
	if (st == SPOOL_REC_OK || (st == SPOOL_REC_SHORT && len >= SPOOL_REC_HDR_SIZE))
		fuzz_check(h.payload_len <= SPOOL_REC_MAX_PAYLOAD || st != SPOOL_REC_OK, T,
		    "payload length over the maximum accepted");
	if (st != SPOOL_REC_OK)
		return 0;
	reclen = SPOOL_REC_HDR_SIZE + (size_t)h.payload_len;
	fuzz_check(reclen <= len, T, "record longer than the buffer accepted");
	if (h.type == SPOOL_REC_SEAL && h.payload_len == SPOOL_SEAL_PAYLOAD) {
		struct spool_seal s;
		uint8_t again[SPOOL_SEAL_SIZE];
		if (spool_seal_parse(buf, &s) == 0) {
			spool_seal_encode(again, &s);
			spool_rec_set_flags(again, h.flags);
			spool_rec_set_seq(again, h.seq);
			fuzz_check(!memcmp(again, buf, SPOOL_SEAL_SIZE), T, "footer does not encode back");
			fuzz_check(s.end_seq >= s.first_seq && s.end_seq == h.seq, T, "footer range");
		}
	}

	st = spool_rec_decode(buf, len, &h2, &m, few, FEW_HDRS);
	fuzz_check(h2.seq == h.seq && h2.payload_len == h.payload_len, T, "header differs on decode");
	if (st != SPOOL_REC_OK)
		return reclen; /* a whole record, but not a message: step over it */
	fuzz_check(h.type == SPOOL_REC_MSG || h.type == SPOOL_REC_FAILED, T, "decoded a non-message");
	fuzz_check(m.topic != NULL && inside(m.topic, m.topic_len, buf, reclen), T, "topic");
	fuzz_check(m.value != NULL && inside(m.value, m.value_len, buf, reclen), T, "value");
	fuzz_check(m.key == NULL || inside(m.key, m.key_len, buf, reclen), T, "key");
	fuzz_check(m.nhdrs <= h.payload_len / 6, T, "header count");

	/* Every header, with room for all of them. */
	all = malloc((m.nhdrs ? m.nhdrs : 1) * sizeof(*all));
	if (all == NULL)
		goto out;
	st2 = spool_rec_decode(buf, len, NULL, &m2, all, m.nhdrs);
	fuzz_check(st2 == SPOOL_REC_OK && m2.nhdrs == m.nhdrs, T, "second decode differs");
	for (size_t i = 0; i < m.nhdrs; i++) {
		fuzz_check(inside(all[i].name, all[i].name_len, buf, reclen), T, "header name");
		fuzz_check(all[i].value == NULL || inside(all[i].value, all[i].value_len, buf, reclen),
		    T, "header value");
		if (i < FEW_HDRS)
			fuzz_check(few[i].name == all[i].name && few[i].name_len == all[i].name_len &&
				       few[i].value == all[i].value && few[i].value_len == all[i].value_len,
			    T, "headers differ with less room");
	}
	fuzz_check(spool_rec_peek_timestamp(buf) == m2.timestamp_ms, T, "peeked timestamp");

	/* The writer's encoding of what was read is what was read. */
	fuzz_check(spool_rec_size(&m2) == reclen, T, "encoded size differs from the record");
	enc = fuzz_encode(&m2, h.seq, h.type, h.flags, &enclen);
	if (enc == NULL)
		goto out;
	fuzz_check(enclen == reclen && !memcmp(enc, buf, reclen), T, "record does not encode back");
	ret = reclen;
out:
	free(enc);
	free(all);
	return ret ? ret : reclen;
}

static void check_fixed(const uint8_t *buf, size_t len)
{
	uint64_t seq;

	if (spool_seg_hdr_parse(buf, len, &seq) == 0) {
		uint8_t again[SPOOL_SEG_HDR_SIZE];
		int64_t created = 0;
		memcpy(&created, buf + 24, sizeof(created)); /* little-endian hosts only */
		spool_seg_hdr_encode(again, seq, created);
		fuzz_check(!memcmp(again, buf, 8) && !memcmp(again + 16, buf + 16, 8), T,
		    "segment header does not encode back");
	}
	if (len >= SPOOL_ACK_ENTRY_SIZE && spool_ack_entry_parse(buf, &seq) == 0) {
		uint8_t again[SPOOL_ACK_ENTRY_SIZE];
		spool_ack_entry_encode(again, seq);
		fuzz_check(!memcmp(again, buf, SPOOL_ACK_ENTRY_SIZE), T, "ack entry does not encode back");
	}
	if (len >= SPOOL_SEAL_SIZE) {
		struct spool_seal s, s2;
		if (spool_seal_parse(buf, &s) == 0) {
			uint8_t again[SPOOL_SEAL_SIZE];
			spool_seal_encode(again, &s);
			fuzz_check(spool_seal_parse(again, &s2) == 0 && !memcmp(&s, &s2, sizeof(s)), T,
			    "footer does not parse back");
			/*
			 * Readers ignore flag bits (docs/spool-format.md) and the
			 * writer sets none: the bytes come back when none is set.
			 */
			if (buf[6] == 0 && buf[7] == 0)
				fuzz_check(!memcmp(again, buf, SPOOL_SEAL_SIZE), T,
				    "footer does not encode back");
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf;
	size_t off = 0, len;
	uint64_t seq;

	if (size == 0)
		return 0;
	len = size - 1;
	buf = malloc(len ? len : 1);
	if (buf == NULL)
		return 0;
	memcpy(buf, data + 1, len);
	if (data[0] & 1)
		fuzz_repair_segment(buf, len);
	fuzz_check(crc32c(0, buf, len) == crc32c_sw(0, buf, len), T, "crc32c differs from tables");
	if ((data[0] & 2) && spool_seg_hdr_parse(buf, len, &seq) == 0)
		off = SPOOL_SEG_HDR_SIZE;
	while (off < len) {
		size_t n;
		check_fixed(buf + off, len - off);
		n = check_record(buf + off, len - off);
		off += n ? n : 1;
	}
	free(buf);
	return 0;
}
