/*
 * spool_rec: the bytes of one spool record, encoded and decoded.
 *
 * Pure functions, no I/O: the spool, the offline tool, the unit tests and the
 * fuzzer all reach the codec here. docs/spool-format.md describes the layout
 * and the version-bump rule.
 */
#ifndef ACKD_SPOOL_REC_H
#define ACKD_SPOOL_REC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* As in util.h: a status result that must not be ignored. */
#ifndef MUST_USE
#define MUST_USE __attribute__((warn_unused_result))
#endif

/*
 * CRC32C (Castagnoli). Start with crc = 0; feed the previous result to
 * continue over more bytes. Uses SSE4.2 when the CPU has it, else
 * slicing-by-8 tables. crc32c(0, "123456789", 9) == 0xE3069283.
 */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The table path alone, whatever the CPU: for tests comparing the two. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

struct spool_hdr {
	const char *name; /* borrowed; not NUL-terminated necessarily */
	size_t name_len;
	const char *value; /* NULL: a header without value (Kafka allows it) */
	size_t value_len;
};

/*
 * The Kafka headers ackd itself sets on records. Kafka header names are
 * bytes: ackd matches its own exactly, case and length, with spool_hdr_is().
 */
#define SPOOL_HDR_ID "ackd-id"                       /* every record ackd publishes */
#define SPOOL_HDR_FAILED_REASON "ackd-failed-reason" /* a failed record's reason */
#define SPOOL_HDR_REDRIVE_COUNT "ackd-redrive-count" /* times a dead letter was redriven */
/* A dead letter's: a redrive drops every header under the prefix. */
#define SPOOL_HDR_DLQ_PREFIX "ackd-dlq-"
#define SPOOL_HDR_DLQ_REASON "ackd-dlq-reason"
#define SPOOL_HDR_DLQ_STATUS "ackd-dlq-status"
#define SPOOL_HDR_DLQ_ATTEMPTS "ackd-dlq-attempts"
#define SPOOL_HDR_DLQ_SOURCE_TOPIC "ackd-dlq-source-topic"
#define SPOOL_HDR_DLQ_SOURCE_PARTITION "ackd-dlq-source-partition"
#define SPOOL_HDR_DLQ_SOURCE_OFFSET "ackd-dlq-source-offset"

/* Whether h is named name (NUL-terminated): the same bytes, case included. */
static inline bool spool_hdr_is(const struct spool_hdr *h, const char *name)
{
	size_t len = strlen(name);

	return h->name_len == len && memcmp(h->name, name, len) == 0;
}

/* One message as the publish path sees it. All pointers are borrowed. */
struct spool_msg {
	const char *topic;
	size_t topic_len;
	int32_t partition; /* -1: the partitioner chooses */
	const char *key;   /* NULL: no key (distinct from an empty key) */
	size_t key_len;
	const char *value; /* never NULL for a message; may be empty */
	size_t value_len;
	const struct spool_hdr *hdrs; /* includes "ackd-id" */
	size_t nhdrs;
	int64_t timestamp_ms; /* when ackd accepted it */
};

#define SPOOL_REC_MAGIC 0x52534b41u /* "AKSR" in file byte order */
#define SPOOL_REC_VERSION 1
#define SPOOL_REC_HDR_SIZE 28
#define SPOOL_REC_MAX_PAYLOAD (64u * 1024 * 1024)
#define SPOOL_REC_MAX_TOPIC 0xffffu

/* The type byte of a record. */
enum spool_rec_type {
	SPOOL_REC_MSG = 1,    /* a message waiting for Kafka */
	SPOOL_REC_SEAL = 2,   /* the footer of a sealed segment */
	SPOOL_REC_FAILED = 3, /* a message Kafka rejected, in failed/ */
	SPOOL_REC_KEY = 4,    /* an Idempotency-Key, after the records it names */
	SPOOL_REC_KEY_ACK = 5, /* the keys file: Kafka's partition and offset of a keyed record */
};

/*
 * Bytes spool_rec_encode() needs for m, header included; 0 when m cannot be
 * encoded (a field longer than its length field, or a payload over
 * SPOOL_REC_MAX_PAYLOAD).
 */
MUST_USE size_t spool_rec_size(const struct spool_msg *m);

/*
 * Encode m into buf (spool_rec_size(m) bytes) as a record of type with
 * sequence 0 and the payload CRC filled; spool_rec_set_seq() fills the
 * sequence and header CRC once the writer knows the order. Returns the bytes
 * written. spool_rec_encode() is spool_rec_encode_type(m, SPOOL_REC_MSG, buf).
 */
size_t spool_rec_encode(const struct spool_msg *m, void *buf);
size_t spool_rec_encode_type(const struct spool_msg *m, enum spool_rec_type type, void *buf);
void spool_rec_set_seq(void *rec, uint64_t seq);
/* Set the flags of an encoded record; the header CRC follows at spool_rec_set_seq(). */
void spool_rec_set_flags(void *rec, uint16_t flags);
uint16_t spool_rec_flags(const void *rec);

/* The accept time of an encoded record (its payload's first field), unchecked. */
int64_t spool_rec_peek_timestamp(const void *rec);

enum spool_rec_status {
	SPOOL_REC_OK = 0,
	SPOOL_REC_SHORT,       /* fewer bytes than the record claims: torn tail */
	SPOOL_REC_BAD_MAGIC,
	SPOOL_REC_BAD_HDR_CRC,
	SPOOL_REC_BAD_VERSION,
	SPOOL_REC_BAD_PAYLOAD_CRC,
	SPOOL_REC_BAD_PAYLOAD, /* CRC fine, fields do not parse */
	SPOOL_REC_BAD_SEQ,     /* intact, but its sequence does not belong here */
};

/* Header flag: the record is a copy made by copy-forward (see spool_copy.c). */
#define SPOOL_REC_F_COPY 0x0001u
/*
 * Header flag of a FAILED record: the message left no room for the
 * ackd-failed-reason header within SPOOL_REC_MAX_PAYLOAD, so it has none.
 */
#define SPOOL_REC_F_NO_REASON 0x0002u
/*
 * Header flag of a MSG record: it belongs to a batch that ends with a KEY
 * record. Recovery cuts such records from the newest segment's tail when
 * their KEY record is not there: the batch was never durable whole.
 */
#define SPOOL_REC_F_KEYED 0x0004u
/*
 * Header flag of a MSG record: a dead letter not to be filed into failed/,
 * an earlier one of its message being kept (see spool_batch_set_unfiled()).
 * Copy-forward keeps it.
 */
#define SPOOL_REC_F_UNFILED 0x0008u


struct spool_rec_hdr {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint32_t payload_len;
	uint64_t seq;
	uint32_t payload_crc;
};

/*
 * Check and parse the fixed header of the record at buf (len bytes
 * available). SPOOL_REC_SHORT when len < SPOOL_REC_HDR_SIZE or, with a valid
 * header, len < the whole record; in that second case *out is filled, so a
 * reader learns how many bytes to fetch.
 */
MUST_USE enum spool_rec_status spool_rec_parse_hdr(const void *buf, size_t len,
    struct spool_rec_hdr *out);

/*
 * Parse the header, check the payload CRC and decode the MSG or FAILED
 * record at buf into m. m's pointers point into buf; its headers go to
 * hdrs[max_hdrs] and m->nhdrs gets the real count: when it is larger than
 * max_hdrs only the first max_hdrs were filled, call again with more room.
 * h may be NULL.
 */
MUST_USE enum spool_rec_status spool_rec_decode(const void *buf, size_t len,
    struct spool_rec_hdr *h, struct spool_msg *m, struct spool_hdr *hdrs, size_t max_hdrs);

const char *spool_rec_status_str(enum spool_rec_status st);

/*
 * A KEY record: the Idempotency-Key of the nrecs records that precede it in
 * the same segment (sequences seq - nrecs .. seq - 1), written in the same
 * group write. All pointers are borrowed.
 */
#define SPOOL_KEY_HASH_LEN 32 /* SHA-256 */
#define SPOOL_KEY_ID_LEN 26   /* one ackd-id */
#define SPOOL_KEY_MAX_STR 0xffffu
struct spool_key {
	int64_t timestamp_ms; /* when ackd accepted the request */
	unsigned char hash[SPOOL_KEY_HASH_LEN]; /* of the request (docs/spool-format.md) */
	uint32_t nrecs;
	const char *scope; /* token or listener */
	size_t scope_len;
	const char *topic;
	size_t topic_len;
	const char *key;   /* the Idempotency-Key header */
	size_t key_len;
	const char *ids;   /* nrecs * SPOOL_KEY_ID_LEN bytes: the records' ackd-ids */
};

/* Bytes spool_key_encode() needs, header included; 0 when k does not fit a record. */
MUST_USE size_t spool_key_size(const struct spool_key *k);
/* Encode k as a KEY record with sequence 0 (see spool_rec_set_seq()); returns the bytes. */
size_t spool_key_encode(const struct spool_key *k, void *buf);
/*
 * Parse the header, check the payload CRC and decode the KEY record at buf
 * into k, whose pointers point into buf. h may be NULL.
 */
MUST_USE enum spool_rec_status spool_key_decode(const void *buf, size_t len,
    struct spool_rec_hdr *h, struct spool_key *k);

/*
 * A KEY_ACK record of the keys file: Kafka acknowledged the keyed record with
 * this ackd-id at partition, offset. Its sequence is the record's own (for
 * reading; records are matched by id, which a copy-forward keeps).
 */
struct spool_key_ack {
	int64_t timestamp_ms; /* when Kafka acknowledged it: the key's TTL applies */
	char id[SPOOL_KEY_ID_LEN];
	int32_t partition;
	int64_t offset;
};
#define SPOOL_KEY_ACK_PAYLOAD (8 + SPOOL_KEY_ID_LEN + 4 + 8)
#define SPOOL_KEY_ACK_SIZE (SPOOL_REC_HDR_SIZE + SPOOL_KEY_ACK_PAYLOAD)
/* Encode a as a KEY_ACK record with sequence seq; returns SPOOL_KEY_ACK_SIZE. */
size_t spool_key_ack_encode(const struct spool_key_ack *a, uint64_t seq, void *buf);
/* Parse and check the KEY_ACK record at buf into a. h may be NULL. */
MUST_USE enum spool_rec_status spool_key_ack_decode(const void *buf, size_t len,
    struct spool_rec_hdr *h, struct spool_key_ack *a);

/*
 * The segment file header: every segment (and failed/ log) starts with it.
 */
#define SPOOL_SEG_MAGIC "ACKDSPL\n"
#define SPOOL_SEG_VERSION 1
#define SPOOL_SEG_HDR_SIZE 40

void spool_seg_hdr_encode(void *buf, uint64_t first_seq, int64_t created_ms);
/* 0 and *first_seq when buf holds a valid segment header, else -1. */
MUST_USE int spool_seg_hdr_parse(const void *buf, size_t len, uint64_t *first_seq);

/*
 * The footer of a sealed segment: a SEAL record whose payload says what the
 * segment holds, so opening a sealed segment does not read its records.
 */
struct spool_seal {
	uint64_t first_seq; /* the segment's first sequence */
	uint64_t end_seq;   /* one past its last */
	uint64_t nrecs;     /* records written to it */
	uint64_t data_end;  /* file offset where the records end (the footer starts) */
	int64_t min_ts;     /* the oldest accept time among its records, 0 if none */
};
#define SPOOL_SEAL_PAYLOAD 40
#define SPOOL_SEAL_SIZE (SPOOL_REC_HDR_SIZE + SPOOL_SEAL_PAYLOAD)

void spool_seal_encode(void *buf, const struct spool_seal *s);
/* 0 when buf (SPOOL_SEAL_SIZE bytes) is a valid footer, else -1. */
MUST_USE int spool_seal_parse(const void *buf, struct spool_seal *out);

/* One entry of a segment's .ack file: an acknowledged sequence. */
#define SPOOL_ACK_ENTRY_SIZE 12
void spool_ack_entry_encode(void *buf, uint64_t seq);
/* 0 and *seq when the entry is intact, else -1. */
MUST_USE int spool_ack_entry_parse(const void *buf, uint64_t *seq);

#endif
