/*
 * idem: the Idempotency-Key table of the publish API.
 *
 * Remembers, for publish.idempotency_ttl_s and at most
 * publish.idempotency_max_keys keys (oldest forgotten first), which request a
 * key (scope, topic, key string) was first used for, by a SHA-256 of what the
 * request publishes, and what its records became: their ackd-ids, their spool
 * sequences, and Kafka's partition and offset once it acknowledged them. The
 * key itself is made durable by the spool (a KEY record in the same group
 * write as its records, docs/spool-format.md); this table is what ackd
 * believes in memory, filled from the spool at start and by requests after.
 *
 * Threads: any (libmicrohttpd's request threads, the spool writer's done
 * callbacks, the kafka loop's delivery reports); one mutex guards the table.
 * Requests without a key never call it; idem_delivered() returns without the
 * lock while no keyed record waits for Kafka.
 */
#ifndef ACKD_IDEM_H
#define ACKD_IDEM_H

#include <stddef.h>
#include <stdint.h>

#include "spool_rec.h"

#ifndef MUST_USE
#define MUST_USE __attribute__((warn_unused_result))
#endif

#define IDEM_KEY_MAX 255 /* characters of an Idempotency-Key header */

struct idem;
struct idem_entry;

/*
 * A new table: keys live ttl_ms from their first request's accept time, at
 * most max_keys of them. NULL when out of memory.
 */
struct idem *idem_new(int64_t ttl_ms, size_t max_keys);
void idem_free(struct idem *t);

/* 1 when s is a valid Idempotency-Key: 1-255 printable ASCII characters (0x20-0x7e). */
int idem_key_valid(const char *s);

/* SHA-256 of what the n messages publish: partition, key, headers but ackd-id, value. */
void idem_request_hash(const struct spool_msg *msgs, size_t n,
    unsigned char out[SPOOL_KEY_HASH_LEN]);

/* What a key's first request became, copied out for a replay. */
struct idem_rec {
	char id[SPOOL_KEY_ID_LEN + 1];
	uint64_t seq;
	int delivered;      /* Kafka acknowledged it: partition and offset are known */
	int failed;         /* Kafka rejected it for good: it is in failed/ */
	int kafka_err;      /* rd_kafka_resp_err_t when failed; 0: unknown (before a restart) */
	int32_t partition;
	int64_t offset;
};
struct idem_replay {
	size_t n;
	struct idem_rec *recs; /* malloc'ed; free with idem_replay_free() */
};
void idem_replay_free(struct idem_replay *r);

enum idem_begin {
	IDEM_NEW,     /* unknown key: reserved for this request (*entry) */
	IDEM_REPLAY,  /* the same request was written: *replay filled */
	IDEM_IN_USE,  /* the first request with this key is still being written */
	IDEM_REUSED,  /* the key was used for a different request */
	IDEM_NOMEM,
};

/*
 * Look the key up at now_ms (wall clock, ms), forgetting expired keys first.
 * IDEM_NEW reserves it for the caller, who must end the reservation with
 * idem_commit() or idem_abort().
 */
MUST_USE enum idem_begin idem_begin(struct idem *t, const char *scope, const char *topic,
    const char *key, const unsigned char hash[SPOOL_KEY_HASH_LEN], int64_t now_ms,
    struct idem_entry **entry, struct idem_replay *replay);

/*
 * The reserved key's records are durable: n records with these ids (n *
 * SPOOL_KEY_ID_LEN bytes), sequences first_seq .. first_seq + n - 1. From
 * here the key is answered with replays.
 */
void idem_commit(struct idem *t, struct idem_entry *e, const char *ids, size_t n,
    uint64_t first_seq);

/* The request failed (non-2xx): the key is forgotten, as if never used. */
void idem_abort(struct idem *t, struct idem_entry *e);


/*
 * A key read back from the spool at start; seq is its KEY record's sequence.
 * Ignored when it expired by now_ms.
 */
void idem_load(struct idem *t, uint64_t seq, const struct spool_key *k, int64_t now_ms);

/*
 * Kafka acknowledged spool sequence seq (any record; most are no key's).
 * 1 when it was a keyed record waiting for this, else 0.
 */
int idem_delivered(struct idem *t, uint64_t seq, int32_t partition, int64_t offset);
/* The same; when it returns 1, id (SPOOL_KEY_ID_LEN bytes) is the record's ackd-id. */
int idem_delivered_id(struct idem *t, uint64_t seq, int32_t partition, int64_t offset,
    char *id);

/*
 * Kafka rejected spool sequence seq for good (it went to failed/). A keyed
 * record is marked failed, with Kafka's error; a key all of whose records
 * failed is forgotten, since nothing of its request reached Kafka: a retry
 * with it is a new request (its first answer was a non-2xx, or a 2xx that
 * only said "spooled"). 1 when it was a keyed record waiting, else 0.
 */
int idem_failed(struct idem *t, uint64_t seq, int kafka_err);

/*
 * At start, in any order with idem_load(): the record with this ackd-id is
 * in failed/. 0, or -1 when out of memory (that record is not marked).
 */
MUST_USE int idem_load_failed(struct idem *t, const char *id, size_t id_len);

/*
 * At start, in any order with idem_load(): Kafka acknowledged the record
 * with this ackd-id at partition, offset before the restart (a KEY_ACK
 * record of the keys file). 0, or -1 when out of memory (its key answers
 * 202 for it).
 */
MUST_USE int idem_load_ack(struct idem *t, const char *id, int32_t partition, int64_t offset);

/*
 * At start, in any order with idem_load(): the record with this ackd-id is
 * a copy (copy-forward gave it a new sequence, seq). 0, or -1 when out of
 * memory (its key keeps the old sequence and answers 202 for it).
 */
MUST_USE int idem_load_copy(struct idem *t, uint64_t seq, const char *id, size_t id_len);

/*
 * At start, after every idem_load(), idem_load_failed() and
 * idem_load_copy() and idem_load_ack(): loaded records found in failed/ are marked failed, and
 * keys all of whose records are there are forgotten, as idem_failed() does
 * while running; records that were copied follow their copy's sequence;
 * records Kafka acknowledged get their partition and offset back.
 */
void idem_load_done(struct idem *t);

/*
 * The spool sequences of the keyed records Kafka has not acknowledged in
 * this run (loaded at start or written since), for the start-up check
 * (reconcile.c): *seqs malloc'ed, *n of them, in no order. 0, or -1 when out
 * of memory.
 */
MUST_USE int idem_pending(struct idem *t, uint64_t **seqs, size_t *n);

struct idem_stats {
	size_t keys;
	size_t bytes; /* memory the keys take */
};
void idem_stats(struct idem *t, struct idem_stats *out);

#endif
