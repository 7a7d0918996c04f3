/*
 * publish: validation of publish requests, turning them into spool messages.
 *
 * Pure logic, no I/O: http.c hands in what the request carried (path topic,
 * query values, headers, body) and gets back messages ready for the spool, or
 * a 400-class error with a message that names the problem. Unit tests and the
 * fuzzer call these directly.
 */
#ifndef ACKD_PUBLISH_H
#define ACKD_PUBLISH_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"
#include "spool_rec.h"
#include "util.h"

#define PUBLISH_ID_LEN 26 /* characters of an ackd-id, without the NUL */

/* A Kafka header name: 1-255 bytes of UTF-8 text, no control characters. */
#define PUBLISH_MAX_HDR_NAME 255
#define PUBLISH_MAX_HDR_NAME_TEXT "255"
/* Kafka headers of one batch record, besides ackd-id. */
#define PUBLISH_MAX_HEADERS 100

/* Kafka's rule: 1-249 of [a-zA-Z0-9._-], not "." or "..". */
int publish_topic_valid(const char *topic, size_t len);

/* 1 when topic matches one of the glob patterns (fnmatch), or the list is empty. */
int publish_topic_allowed(const struct conf_strlist *patterns, const char *topic);

/* "0".."2147483647" into *out; -1 for anything else. */
MUST_USE int publish_parse_partition(const char *s, int32_t *out);

/* "kafka" or "spool"; -1 for anything else. */
MUST_USE int publish_parse_ack(const char *s, enum conf_ack *out);

/*
 * A new ackd-id: 26 characters of Crockford base32 (a ULID): 48 bits of
 * milliseconds, then 80 bits that are random at start and counted up within
 * the process, so ids sort by creation and never repeat. Thread-safe.
 */
void publish_id_new(char out[PUBLISH_ID_LEN + 1]);

/*
 * publish_id_new() with the clock passed in (ms since the epoch) rather than
 * read from CLOCK_REALTIME: the seam for tests of a clock that stands still or
 * steps back. Shares publish_id_new()'s state.
 */
void publish_id_new_at(int64_t now_ms, char out[PUBLISH_ID_LEN + 1]);

/*
 * The milliseconds an ackd-id of len characters carries in its first ten
 * (when ackd accepted the record, by the clock of the ackd that made it);
 * -1 when they are not Crockford base32.
 */
int64_t publish_id_time_ms(const char *id, size_t len);

/*
 * The messages of one request, with all the storage they point to. The ids
 * are in ids[i], and each message's hdrs include "ackd-id".
 */
struct publish_req {
	struct spool_msg *msgs;
	size_t n;
	char (*ids)[PUBLISH_ID_LEN + 1];
	/* private storage follows in publish.c */
};
/* Frees the request and everything its messages point to; NULL is a no-op. */
void publish_req_free(struct publish_req *r);

/* One request header (name as sent, value), borrowed. */
struct publish_http_hdr {
	const char *name;
	const char *value;
};

/*
 * A single message: body is the value byte for byte; key may be NULL;
 * partition -1 for the partitioner; http headers are scanned for
 * Content-Type (stored as "content-type") and Kafka-Header-{name} (stored
 * as {name} lower-cased, a name checked as PUBLISH_MAX_HDR_NAME says). The
 * value points into body, which the caller keeps until publish_req_free();
 * the other inputs are copied. Returns 0 and *out (free with
 * publish_req_free()), or -1 with err filled and *too_large set when the
 * message is larger than one spool record can hold (413 rather than 400).
 */
MUST_USE int publish_single(const char *topic, const char *key, size_t key_len, int32_t partition,
    const struct publish_http_hdr *hdrs, size_t nhdrs, const char *body, size_t body_len,
    int64_t now_ms, struct publish_req **out, int *too_large, char *err, size_t errlen);

/*
 * A JSON batch ({"records":[...]}, docs/http-api.md). The whole batch is
 * validated before anything is returned, so every message returned fits in a
 * spool record; an error names the record index. Header names are checked as
 * for publish_single(), at most PUBLISH_MAX_HEADERS per record. Values, keys
 * and headers may point into body, which the caller keeps until
 * publish_req_free(). Returns 0 and *out (free with publish_req_free()), or
 * -1 with err filled and *too_large set when the batch has more than
 * max_records records or a record is larger than a spool record can hold
 * (413 rather than 400).
 */
MUST_USE int publish_batch(const char *topic, const char *body, size_t body_len,
    int64_t max_records, int64_t now_ms, struct publish_req **out, int *too_large, char *err,
    size_t errlen);

/*
 * publish_batch() with every body read by the general (jansson) parser,
 * never by the one for the plain shape: for tests that compare the two.
 */
MUST_USE int publish_batch_general(const char *topic, const char *body, size_t body_len,
    int64_t max_records, int64_t now_ms, struct publish_req **out, int *too_large, char *err,
    size_t errlen);

/* --- Kafka REST Proxy compatibility (docs/http-api.md) ---------------------- */

/* The embedded format of a v2 produce request. */
enum publish_rp_format {
	PUBLISH_RP_JSON,   /* key and value any JSON, sent as their compact JSON text */
	PUBLISH_RP_BINARY, /* key and value base64 */
	PUBLISH_RP_TEXT,   /* key and value strings, sent as their UTF-8 (Strimzi bridge) */
};

/*
 * The format of a v2 Content-Type (application/vnd.kafka.{json,binary,text}.v2+json,
 * parameters ignored). -1 with err for a 415: a schema registry format
 * (avro, protobuf, jsonschema) is named in err.
 */
MUST_USE int publish_rp_v2_format(const char *ctype, enum publish_rp_format *out, char *err,
    size_t errlen);

/*
 * A v2 produce body, {"records":[{"key":…,"value":…,"partition":…}]} (and the
 * Strimzi bridge's "headers":[{"key":"h","value":"<base64>"}]), turned into
 * the messages a native batch with the same content would give; errors and
 * *too_large as publish_batch(). A null key is no key; a null value is
 * refused (ackd publishes no tombstones).
 */
MUST_USE int publish_rp_v2(const char *topic, enum publish_rp_format fmt, const char *body,
    size_t body_len, int64_t max_records, int64_t now_ms, struct publish_req **out,
    int *too_large, char *err, size_t errlen);

/* The types a v3 record's key and value had: "BINARY", "JSON", "STRING", or NULL (none). */
struct publish_rp_v3_types {
	const char *key;
	const char *value;
};

/*
 * A v3 produce body, one record: {"partition_id":…,"headers":[{"name":"h",
 * "value":"<base64>"}],"key":{"type":…,"data":…},"value":{…},"timestamp":…}.
 * BINARY data is base64, STRING a string sent as its UTF-8, JSON any JSON sent
 * as its compact text; timestamp (RFC 3339) becomes the message timestamp,
 * else now_ms. Errors and *too_large as publish_batch(); *unsupported for a
 * schema registry format (415).
 */
MUST_USE int publish_rp_v3(const char *topic, const char *body, size_t body_len, int64_t now_ms,
    struct publish_req **out, struct publish_rp_v3_types *types, int *too_large,
    int *unsupported, char *err, size_t errlen);

/* An RFC 3339 date-time from 1970 on, in ms since the epoch; -1 for anything else. */
MUST_USE int publish_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);

/* --- W3C trace context ------------------------------------------------------ */

/*
 * Whether s is a traceparent of W3C Trace Context: version 00 exactly
 * "00-<32 hex>-<16 hex>-<2 hex>", lower-case hex, ids not all zero; a later
 * version (not ff) may carry more after a "-".
 */
int publish_traceparent_valid(const char *s, size_t len);

/*
 * The request's trace context onto every message of r: one valid
 * traceparent header becomes the Kafka header "traceparent", and the
 * tracestate headers (joined with commas) "tracestate" when they are a valid
 * list of at most 512 bytes. A missing, repeated or malformed traceparent
 * adds nothing (nor its tracestate): the request is still published. A
 * message that already has a traceparent header keeps its own. 0, or -1 with
 * err (out of memory, or *too_large when a message no longer fits a spool
 * record).
 */
MUST_USE int publish_trace(struct publish_req *r, const struct publish_http_hdr *hdrs,
    size_t nhdrs, int *too_large, char *err, size_t errlen);

#endif
