/*
 * spool_rec: the bytes of one spool record, encoded and decoded.
 *
 * Pure functions, no I/O: the spool, the offline tool, the unit tests and the
 * fuzzer all reach the codec here. docs/spool-format.md describes the layout
 * and the version-bump rule.
 */
#ifndef ACKD_SPOOL_REC_H
#define ACKD_SPOOL_REC_H

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

struct spool_hdr {
	const char *name; /* borrowed; not NUL-terminated necessarily */
	size_t name_len;
	const char *value;
	size_t value_len;
};

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

#define SPOOL_REC_HDR_SIZE 28

/* Bytes spool_rec_encode() needs for m, header included. */
size_t spool_rec_size(const struct spool_msg *m);

/*
 * Encode m into buf (spool_rec_size(m) bytes) with sequence 0 and the payload
 * CRC filled; spool_rec_set_seq() fills the sequence and header CRC once the
 * writer knows the order. Returns the bytes written.
 */
size_t spool_rec_encode(const struct spool_msg *m, void *buf);
void spool_rec_set_seq(void *rec, uint64_t seq);

enum spool_rec_status {
	SPOOL_REC_OK = 0,
	SPOOL_REC_SHORT,       /* fewer bytes than the record claims: torn tail */
	SPOOL_REC_BAD_MAGIC,
	SPOOL_REC_BAD_HDR_CRC,
	SPOOL_REC_BAD_VERSION,
	SPOOL_REC_BAD_PAYLOAD_CRC,
	SPOOL_REC_BAD_PAYLOAD, /* CRC fine, fields do not parse */
};

struct spool_rec_hdr {
	uint8_t version;
	uint8_t type;
	uint32_t payload_len;
	uint64_t seq;
};

/* Check and parse the fixed header of the record at buf (len bytes available). */
enum spool_rec_status spool_rec_parse_hdr(const void *buf, size_t len, struct spool_rec_hdr *out);

/*
 * Check the payload CRC and decode the record at buf into m (pointers into
 * buf, headers into hdrs[max_hdrs]; *nhdrs_total gets the real count).
 */
enum spool_rec_status spool_rec_decode(const void *buf, size_t len, struct spool_rec_hdr *h,
    struct spool_msg *m, struct spool_hdr *hdrs, size_t max_hdrs);

const char *spool_rec_status_str(enum spool_rec_status st);

#endif
