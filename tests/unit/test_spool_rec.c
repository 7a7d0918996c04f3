/*
 * test_spool_rec: the record codec and CRC32C, without I/O.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "spool_rec.h"

static void test_crc32c_vectors(void **state)
{
	unsigned char zeros[32] = { 0 }, ones[32], inc[32];
	char big[1000];

	(void)state;
	for (int i = 0; i < 32; i++) {
		ones[i] = 0xff;
		inc[i] = (unsigned char)i;
	}
	assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(crc32c_sw(0, "123456789", 9), 0xE3069283u);
	assert_int_equal(crc32c(0, "", 0), 0);
	/* RFC 3720, B.4 */
	assert_int_equal(crc32c(0, zeros, 32), 0x8A9136AAu);
	assert_int_equal(crc32c(0, ones, 32), 0x62A8AB43u);
	assert_int_equal(crc32c(0, inc, 32), 0x46DD794Eu);
	assert_int_equal(crc32c_sw(0, inc, 32), 0x46DD794Eu);

	/* Continuing over pieces equals one pass, for every split and alignment. */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	uint32_t whole = crc32c_sw(0, big, sizeof(big));
	assert_int_equal(crc32c(0, big, sizeof(big)), whole);
	for (size_t split = 0; split <= 17; split++) {
		assert_int_equal(crc32c(crc32c(0, big, split), big + split, sizeof(big) - split), whole);
		assert_int_equal(crc32c_sw(crc32c_sw(0, big + split, 100), big + split + 100, 33),
		    crc32c(0, big + split, 133));
	}
}

static struct spool_msg sample(struct spool_hdr *hdrs, size_t nhdrs)
{
	struct spool_msg m = {
		.topic = "orders",
		.topic_len = 6,
		.partition = 7,
		.key = "key-1",
		.key_len = 5,
		.value = "the value\0with a nul",
		.value_len = 20,
		.hdrs = hdrs,
		.nhdrs = nhdrs,
		.timestamp_ms = 1700000000123,
	};
	return m;
}

static unsigned char *encode(const struct spool_msg *m, size_t *len)
{
	unsigned char *buf;

	*len = spool_rec_size(m);
	assert_true(*len > SPOOL_REC_HDR_SIZE);
	buf = malloc(*len);
	assert_non_null(buf);
	assert_int_equal(spool_rec_encode(m, buf), *len);
	return buf;
}

static void test_round_trip(void **state)
{
	struct spool_hdr hdrs[2] = {
		{ "ackd-id", 7, "abc123", 6 },
		{ "content-type", 12, "text/plain", 10 },
	};
	struct spool_msg m = sample(hdrs, 2), d;
	struct spool_hdr out[4];
	struct spool_rec_hdr h;
	size_t len;
	unsigned char *buf = encode(&m, &len);

	(void)state;
	spool_rec_set_seq(buf, 424242);
	assert_int_equal(spool_rec_decode(buf, len, &h, &d, out, 4), SPOOL_REC_OK);
	assert_int_equal(h.seq, 424242);
	assert_int_equal(h.type, SPOOL_REC_MSG);
	assert_int_equal(h.version, SPOOL_REC_VERSION);
	assert_int_equal(h.payload_len, len - SPOOL_REC_HDR_SIZE);
	assert_int_equal(d.topic_len, 6);
	assert_memory_equal(d.topic, "orders", 6);
	assert_int_equal(d.partition, 7);
	assert_int_equal(d.key_len, 5);
	assert_memory_equal(d.key, "key-1", 5);
	assert_int_equal(d.value_len, 20);
	assert_memory_equal(d.value, "the value\0with a nul", 20);
	assert_int_equal(d.timestamp_ms, 1700000000123);
	assert_int_equal(spool_rec_peek_timestamp(buf), 1700000000123);
	assert_int_equal(d.nhdrs, 2);
	assert_memory_equal(out[0].name, "ackd-id", 7);
	assert_memory_equal(out[0].value, "abc123", 6);
	assert_int_equal(out[1].value_len, 10);
	assert_memory_equal(out[1].value, "text/plain", 10);
	free(buf);
}

static void test_null_vs_empty_key(void **state)
{
	struct spool_msg m = sample(NULL, 0), d;
	struct spool_hdr out[1];
	unsigned char *buf;
	size_t len;

	(void)state;
	m.key = NULL;
	m.key_len = 0;
	buf = encode(&m, &len);
	assert_int_equal(spool_rec_decode(buf, len, NULL, &d, out, 1), SPOOL_REC_OK);
	assert_null(d.key);
	assert_int_equal(d.key_len, 0);
	free(buf);

	m.key = "";
	buf = encode(&m, &len);
	assert_int_equal(spool_rec_decode(buf, len, NULL, &d, out, 1), SPOOL_REC_OK);
	assert_non_null(d.key);
	assert_int_equal(d.key_len, 0);
	free(buf);

	/* An empty value and a header without value. */
	struct spool_hdr h = { "flag", 4, NULL, 0 };
	m = sample(&h, 1);
	m.value = "";
	m.value_len = 0;
	buf = encode(&m, &len);
	assert_int_equal(spool_rec_decode(buf, len, NULL, &d, out, 1), SPOOL_REC_OK);
	assert_int_equal(d.value_len, 0);
	assert_null(out[0].value);
	assert_memory_equal(out[0].name, "flag", 4);
	free(buf);
}

static void test_many_headers(void **state)
{
	enum { N = 300 };
	struct spool_hdr *hdrs = calloc(N, sizeof(*hdrs)), *out = calloc(N, sizeof(*out));
	char (*names)[16] = calloc(N, 16), (*vals)[16] = calloc(N, 16);
	struct spool_msg m, d;
	unsigned char *buf;
	size_t len;

	(void)state;
	for (int i = 0; i < N; i++) {
		hdrs[i].name_len = (size_t)snprintf(names[i], 16, "h-%d", i);
		hdrs[i].name = names[i];
		hdrs[i].value_len = (size_t)snprintf(vals[i], 16, "v%d", i * 3);
		hdrs[i].value = vals[i];
	}
	m = sample(hdrs, N);
	buf = encode(&m, &len);
	/* Too little room: the real count comes back, the first ones filled. */
	assert_int_equal(spool_rec_decode(buf, len, NULL, &d, out, 10), SPOOL_REC_OK);
	assert_int_equal(d.nhdrs, N);
	assert_memory_equal(out[9].name, "h-9", 3);
	assert_int_equal(spool_rec_decode(buf, len, NULL, &d, out, N), SPOOL_REC_OK);
	for (int i = 0; i < N; i++) {
		assert_int_equal(out[i].name_len, hdrs[i].name_len);
		assert_memory_equal(out[i].name, names[i], hdrs[i].name_len);
		assert_memory_equal(out[i].value, vals[i], hdrs[i].value_len);
	}
	free(buf);
	free(hdrs);
	free(out);
	free(names);
	free(vals);
}

static void test_damage_detected(void **state)
{
	struct spool_hdr hdr = { "ackd-id", 7, "x", 1 };
	struct spool_msg m = sample(&hdr, 1), d;
	struct spool_hdr out[2];
	struct spool_rec_hdr h;
	unsigned char *buf;
	size_t len;

	(void)state;
	buf = encode(&m, &len);
	spool_rec_set_seq(buf, 5);

	/* Every single-byte change is caught, by one check or another. */
	for (size_t i = 0; i < len; i++) {
		buf[i] ^= 0x01;
		assert_int_not_equal(spool_rec_decode(buf, len, &h, &d, out, 2), SPOOL_REC_OK);
		buf[i] ^= 0x01;
	}
	buf[0] ^= 0xff;
	assert_int_equal(spool_rec_parse_hdr(buf, len, &h), SPOOL_REC_BAD_MAGIC);
	buf[0] ^= 0xff;
	buf[14] ^= 0x01; /* the sequence */
	assert_int_equal(spool_rec_parse_hdr(buf, len, &h), SPOOL_REC_BAD_HDR_CRC);
	buf[14] ^= 0x01;
	buf[len - 1] ^= 0x01;
	assert_int_equal(spool_rec_decode(buf, len, &h, &d, out, 2), SPOOL_REC_BAD_PAYLOAD_CRC);
	buf[len - 1] ^= 0x01;

	/* Short buffers: a torn tail. */
	assert_int_equal(spool_rec_parse_hdr(buf, 10, &h), SPOOL_REC_SHORT);
	assert_int_equal(spool_rec_parse_hdr(buf, len - 1, &h), SPOOL_REC_SHORT);
	assert_int_equal(h.payload_len, len - SPOOL_REC_HDR_SIZE); /* header was read */
	assert_int_equal(spool_rec_decode(buf, len - 1, &h, &d, out, 2), SPOOL_REC_SHORT);

	/* A later version is refused (readers read versions <= their own). */
	buf[4] = SPOOL_REC_VERSION + 1;
	spool_rec_set_seq(buf, 5);
	assert_int_equal(spool_rec_parse_hdr(buf, len, &h), SPOOL_REC_BAD_VERSION);
	free(buf);
	assert_string_equal(spool_rec_status_str(SPOOL_REC_BAD_PAYLOAD_CRC), "bad payload crc");
}

static void test_malformed_payload(void **state)
{
	struct spool_msg m = sample(NULL, 0), d;
	unsigned char *buf;
	size_t len;
	uint32_t crc;

	(void)state;
	buf = encode(&m, &len);
	/* Claim 1000 headers inside a valid CRC: must not parse. */
	size_t nh_off = SPOOL_REC_HDR_SIZE + 8 + 4 + 2 + 6 + 4 + 5;
	buf[nh_off] = 0xe8;
	buf[nh_off + 1] = 0x03;
	crc = crc32c(0, buf + SPOOL_REC_HDR_SIZE, len - SPOOL_REC_HDR_SIZE);
	for (int i = 0; i < 4; i++)
		buf[20 + i] = (unsigned char)(crc >> (8 * i));
	spool_rec_set_seq(buf, 1);
	assert_int_equal(spool_rec_decode(buf, len, NULL, &d, NULL, 0), SPOOL_REC_BAD_PAYLOAD);
	free(buf);

	/* Fields too long for their length fields are refused at encode. */
	m = sample(NULL, 0);
	m.topic_len = 70000;
	assert_int_equal(spool_rec_size(&m), 0);
}

static void test_segment_header_seal_ack(void **state)
{
	unsigned char hdr[SPOOL_SEG_HDR_SIZE], seal[SPOOL_SEAL_SIZE], ack[SPOOL_ACK_ENTRY_SIZE];
	struct spool_seal s = { 100, 200, 100, 123456, 1700000000000 }, t;
	uint64_t first, seq;

	(void)state;
	spool_seg_hdr_encode(hdr, 100, 1700000000000);
	assert_int_equal(spool_seg_hdr_parse(hdr, sizeof(hdr), &first), 0);
	assert_int_equal(first, 100);
	assert_memory_equal(hdr, "ACKDSPL\n", 8);
	hdr[17] ^= 1;
	assert_int_equal(spool_seg_hdr_parse(hdr, sizeof(hdr), &first), -1);

	spool_seal_encode(seal, &s);
	assert_int_equal(spool_seal_parse(seal, &t), 0);
	assert_int_equal(t.first_seq, 100);
	assert_int_equal(t.end_seq, 200);
	assert_int_equal(t.nrecs, 100);
	assert_int_equal(t.data_end, 123456);
	assert_int_equal(t.min_ts, 1700000000000);
	seal[SPOOL_REC_HDR_SIZE + 3] ^= 1;
	assert_int_equal(spool_seal_parse(seal, &t), -1);

	spool_ack_entry_encode(ack, 987654321);
	assert_int_equal(spool_ack_entry_parse(ack, &seq), 0);
	assert_int_equal(seq, 987654321);
	ack[2] ^= 4;
	assert_int_equal(spool_ack_entry_parse(ack, &seq), -1);
}

static void test_hdr_is(void **state)
{
	/* Borrowed names end where name_len says, not at a NUL. */
	static const char buf[] = "ackd-idackd-redrive-count!";
	struct spool_hdr id = { buf, 7, "x", 1 }, count = { buf + 7, 18, NULL, 0 };

	(void)state;
	assert_true(spool_hdr_is(&id, SPOOL_HDR_ID));
	assert_true(spool_hdr_is(&count, SPOOL_HDR_REDRIVE_COUNT));
	assert_false(spool_hdr_is(&id, SPOOL_HDR_REDRIVE_COUNT));
	assert_false(spool_hdr_is(&count, SPOOL_HDR_ID));
	/* Exact length: neither a prefix nor a longer name matches. */
	id.name_len = 6;
	assert_false(spool_hdr_is(&id, SPOOL_HDR_ID));
	id.name_len = 8;
	assert_false(spool_hdr_is(&id, SPOOL_HDR_ID));
	/* Exact case: Kafka header names are bytes. */
	id = (struct spool_hdr){ "ACKD-ID", 7, "x", 1 };
	assert_false(spool_hdr_is(&id, SPOOL_HDR_ID));
	id = (struct spool_hdr){ "ackd-iD", 7, "x", 1 };
	assert_false(spool_hdr_is(&id, SPOOL_HDR_ID));

	/* The names are on the wire: consumers and older spools rely on them. */
	assert_string_equal(SPOOL_HDR_ID, "ackd-id");
	assert_string_equal(SPOOL_HDR_FAILED_REASON, "ackd-failed-reason");
	assert_string_equal(SPOOL_HDR_REDRIVE_COUNT, "ackd-redrive-count");
	assert_string_equal(SPOOL_HDR_DLQ_PREFIX, "ackd-dlq-");
	assert_string_equal(SPOOL_HDR_DLQ_REASON, "ackd-dlq-reason");
	assert_string_equal(SPOOL_HDR_DLQ_STATUS, "ackd-dlq-status");
	assert_string_equal(SPOOL_HDR_DLQ_ATTEMPTS, "ackd-dlq-attempts");
	assert_string_equal(SPOOL_HDR_DLQ_SOURCE_TOPIC, "ackd-dlq-source-topic");
	assert_string_equal(SPOOL_HDR_DLQ_SOURCE_PARTITION, "ackd-dlq-source-partition");
	assert_string_equal(SPOOL_HDR_DLQ_SOURCE_OFFSET, "ackd-dlq-source-offset");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_crc32c_vectors),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_null_vs_empty_key),
		cmocka_unit_test(test_many_headers),
		cmocka_unit_test(test_damage_detected),
		cmocka_unit_test(test_malformed_payload),
		cmocka_unit_test(test_segment_header_seal_ack),
		cmocka_unit_test(test_hdr_is),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
