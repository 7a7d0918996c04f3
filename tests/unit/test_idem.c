/*
 * test_idem: the Idempotency-Key table: new, replay, in use, reused, abort,
 * TTL, the key-count bound, load from the spool, delivery reports, records
 * Kafka rejected (running and from failed/ at start), the
 * request hash, key validity; and the KEY record's codec.
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

#include "idem.h"
#include "spool_rec.h"

#define T0 1700000000000ll
#define ID_A "01HZZZZZZZZZZZZZZZZZZZZZZA"
#define ID_B "01HZZZZZZZZZZZZZZZZZZZZZZB"

/* calloc: the fail_calloc_in-th call from now fails (0: none), via -Wl,--wrap=calloc. */
void *__real_calloc(size_t n, size_t size);
void *__wrap_calloc(size_t n, size_t size);
static int fail_calloc_in;

void *__wrap_calloc(size_t n, size_t size)
{
	if (fail_calloc_in > 0 && --fail_calloc_in == 0)
		return NULL;
	return __real_calloc(n, size);
}

static void hash_of(const char *value, unsigned char out[SPOOL_KEY_HASH_LEN])
{
	struct spool_hdr h = { "ackd-id", 7, ID_A, 26 };
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = -1, .value = value,
		.value_len = strlen(value), .hdrs = &h, .nhdrs = 1 };
	idem_request_hash(&m, 1, out);
}

static void test_key_valid(void **state)
{
	char long_key[300];

	(void)state;
	assert_true(idem_key_valid("a"));
	assert_true(idem_key_valid("8e03978e-40d5-43e8-bc93-6894a57f9324"));
	assert_true(idem_key_valid(" ~"));
	assert_false(idem_key_valid(""));
	assert_false(idem_key_valid(NULL));
	assert_false(idem_key_valid("tab\there"));
	assert_false(idem_key_valid("caf\xc3\xa9"));
	memset(long_key, 'k', sizeof(long_key));
	long_key[255] = '\0';
	assert_true(idem_key_valid(long_key));
	long_key[255] = 'k';
	long_key[256] = '\0';
	assert_false(idem_key_valid(long_key));
}

static void test_request_hash(void **state)
{
	unsigned char a[32], b[32], c[32];
	struct spool_hdr h1 = { "ackd-id", 7, ID_A, 26 }, h2 = { "ackd-id", 7, ID_B, 26 };
	struct spool_msg m = { .topic = "t", .topic_len = 1, .partition = -1, .value = "v",
		.value_len = 1, .hdrs = &h1, .nhdrs = 1 };

	(void)state;
	idem_request_hash(&m, 1, a);
	m.hdrs = &h2; /* another ackd-id: the same request */
	idem_request_hash(&m, 1, b);
	assert_memory_equal(a, b, 32);
	m.key = "";
	m.key_len = 0; /* an empty key differs from no key */
	idem_request_hash(&m, 1, c);
	assert_memory_not_equal(a, c, 32);
	m.key = NULL;
	m.partition = 0;
	idem_request_hash(&m, 1, c);
	assert_memory_not_equal(a, c, 32);
	m.partition = -1;
	m.value = "w";
	idem_request_hash(&m, 1, c);
	assert_memory_not_equal(a, c, 32);
}

static void test_new_commit_replay(void **state)
{
	struct idem *t = idem_new(86400000, 100);
	struct idem_entry *e, *e2;
	struct idem_replay rp;
	unsigned char h[32], other[32];

	(void)state;
	hash_of("one", h);
	hash_of("two", other);
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0, &e, &rp), IDEM_NEW);
	assert_non_null(e);
	/* While the first is written: in use, whatever the request. */
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0, &e2, &rp), IDEM_IN_USE);
	assert_int_equal(idem_begin(t, "unix", "t", "k1", other, T0, &e2, &rp), IDEM_REUSED);
	idem_commit(t, e, ID_A, 1, 41);
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0 + 5, &e2, &rp), IDEM_REPLAY);
	assert_int_equal(rp.n, 1);
	assert_string_equal(rp.recs[0].id, ID_A);
	assert_int_equal(rp.recs[0].seq, 41);
	assert_false(rp.recs[0].delivered);
	idem_replay_free(&rp);
	/* Kafka acknowledged it: the replay carries partition and offset. */
	idem_delivered(t, 41, 3, 1041);
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0 + 6, &e2, &rp), IDEM_REPLAY);
	assert_true(rp.recs[0].delivered);
	assert_int_equal(rp.recs[0].partition, 3);
	assert_int_equal(rp.recs[0].offset, 1041);
	idem_replay_free(&rp);
	/* A different request with the key: 422; on another topic or scope it is another key. */
	assert_int_equal(idem_begin(t, "unix", "t", "k1", other, T0, &e2, &rp), IDEM_REUSED);
	assert_int_equal(idem_begin(t, "unix", "t2", "k1", other, T0, &e2, &rp), IDEM_NEW);
	idem_abort(t, e2);
	assert_int_equal(idem_begin(t, "tcp", "t", "k1", other, T0, &e2, &rp), IDEM_NEW);
	idem_abort(t, e2);
	idem_free(t);
}

static void test_abort_frees_key(void **state)
{
	struct idem *t = idem_new(86400000, 100);
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char h[32], other[32];
	struct idem_stats st;

	(void)state;
	hash_of("one", h);
	hash_of("two", other);
	assert_int_equal(idem_begin(t, "unix", "t", "k", h, T0, &e, &rp), IDEM_NEW);
	idem_abort(t, e);
	idem_stats(t, &st);
	assert_int_equal(st.keys, 0);
	/* A first request that failed did not use up its key, even for another request. */
	assert_int_equal(idem_begin(t, "unix", "t", "k", other, T0, &e, &rp), IDEM_NEW);
	idem_commit(t, e, ID_B, 1, 7);
	assert_int_equal(idem_begin(t, "unix", "t", "k", other, T0, &e, &rp), IDEM_REPLAY);
	assert_string_equal(rp.recs[0].id, ID_B);
	idem_replay_free(&rp);
	idem_free(t);
}

static void test_ttl(void **state)
{
	struct idem *t = idem_new(1000, 100);
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char h[32], other[32];

	(void)state;
	hash_of("one", h);
	hash_of("two", other);
	assert_int_equal(idem_begin(t, "unix", "t", "k", h, T0, &e, &rp), IDEM_NEW);
	idem_commit(t, e, ID_A, 1, 1);
	assert_int_equal(idem_begin(t, "unix", "t", "k", other, T0 + 999, &e, &rp), IDEM_REUSED);
	/* Expired: the key is free again. */
	assert_int_equal(idem_begin(t, "unix", "t", "k", other, T0 + 1000, &e, &rp), IDEM_NEW);
	idem_commit(t, e, ID_B, 1, 2);
	idem_free(t);
}

static void test_max_keys_oldest_first(void **state)
{
	struct idem *t = idem_new(86400000, 3);
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char h[32];
	struct idem_stats st;
	char key[16];

	(void)state;
	hash_of("one", h);
	for (int i = 0; i < 5; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(idem_begin(t, "unix", "t", key, h, T0 + i, &e, &rp), IDEM_NEW);
		idem_commit(t, e, ID_A, 1, (uint64_t)i + 1);
	}
	idem_stats(t, &st);
	assert_int_equal(st.keys, 3);
	assert_true(st.bytes > 0);
	/* k0 and k1 were forgotten; k2..k4 are remembered. */
	assert_int_equal(idem_begin(t, "unix", "t", "k4", h, T0 + 9, &e, &rp), IDEM_REPLAY);
	idem_replay_free(&rp);
	assert_int_equal(idem_begin(t, "unix", "t", "k2", h, T0 + 9, &e, &rp), IDEM_REPLAY);
	idem_replay_free(&rp);
	assert_int_equal(idem_begin(t, "unix", "t", "k0", h, T0 + 9, &e, &rp), IDEM_NEW);
	idem_abort(t, e);
	idem_free(t);
}

static void test_many_keys_and_deliveries(void **state)
{
	struct idem *t = idem_new(86400000, 100000);
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char h[32];
	char key[32], ids[3 * SPOOL_KEY_ID_LEN];

	(void)state;
	hash_of("x", h);
	memcpy(ids, ID_A ID_B ID_A, sizeof(ids));
	for (int i = 0; i < 20000; i++) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(idem_begin(t, "unix", "t", key, h, T0, &e, &rp), IDEM_NEW);
		idem_commit(t, e, ids, 3, 1 + 4 * (uint64_t)i);
	}
	/* Deliveries out of order, every other record. */
	for (int i = 19999; i >= 0; i--)
		for (int j = 0; j < 3; j += 2)
			idem_delivered(t, 1 + 4 * (uint64_t)i + (uint64_t)j, j, i);
	for (int i = 0; i < 20000; i += 997) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(idem_begin(t, "unix", "t", key, h, T0, &e, &rp), IDEM_REPLAY);
		assert_int_equal(rp.n, 3);
		assert_true(rp.recs[0].delivered);
		assert_int_equal(rp.recs[0].offset, i);
		assert_false(rp.recs[1].delivered);
		assert_true(rp.recs[2].delivered);
		assert_int_equal(rp.recs[2].partition, 2);
		assert_int_equal(rp.recs[2].seq, 3 + 4 * (uint64_t)i);
		idem_replay_free(&rp);
	}
	/* The rest, found after all those removals from the pending map. */
	for (int i = 0; i < 20000; i++)
		idem_delivered(t, 2 + 4 * (uint64_t)i, 1, -i);
	for (int i = 0; i < 20000; i += 13) {
		snprintf(key, sizeof(key), "key-%d", i);
		assert_int_equal(idem_begin(t, "unix", "t", key, h, T0, &e, &rp), IDEM_REPLAY);
		assert_true(rp.recs[1].delivered);
		assert_int_equal(rp.recs[1].offset, -i);
		idem_replay_free(&rp);
	}
	idem_free(t);
}

static void test_load(void **state)
{
	struct idem *t = idem_new(1000, 100);
	struct spool_key k = { .timestamp_ms = T0, .nrecs = 2, .scope = "unix", .scope_len = 4,
		.topic = "t", .topic_len = 1, .key = "k", .key_len = 1, .ids = ID_A ID_B };
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char other[32];

	(void)state;
	hash_of("zzz", other);
	memset(k.hash, 7, sizeof(k.hash));
	idem_load(t, 12, &k, T0 + 10);
	k.key = "old";
	k.key_len = 3;
	k.timestamp_ms = T0 - 2000; /* expired before the restart: not loaded */
	idem_load(t, 20, &k, T0 + 10);
	assert_int_equal(idem_begin(t, "unix", "t", "k", k.hash, T0 + 20, &e, &rp), IDEM_REPLAY);
	assert_int_equal(rp.n, 2);
	assert_int_equal(rp.recs[0].seq, 10);
	assert_int_equal(rp.recs[1].seq, 11);
	assert_memory_equal(rp.recs[1].id, ID_B, 26);
	idem_replay_free(&rp);
	assert_int_equal(idem_begin(t, "unix", "t", "k", other, T0 + 20, &e, &rp), IDEM_REUSED);
	assert_int_equal(idem_begin(t, "unix", "t", "old", other, T0 + 20, &e, &rp), IDEM_NEW);
	idem_abort(t, e);
	idem_free(t);
}

/*
 * At start: Kafka's offsets from the keys file (idem_load_ack()) mark a
 * key's records delivered; a record copied forward (idem_load_copy())
 * follows its copy's sequence; idem_pending() lists what still waits.
 */
static void test_load_acks_and_copies(void **state)
{
	struct idem *t = idem_new(86400000, 100);
	struct spool_key k = { .timestamp_ms = T0, .nrecs = 2, .scope = "unix", .scope_len = 4,
		.topic = "t", .topic_len = 1, .key = "kb", .key_len = 2, .ids = ID_A ID_B };
	struct idem_entry *e;
	struct idem_replay rp;
	uint64_t *seqs;
	size_t n;

	(void)state;
	memset(k.hash, 3, sizeof(k.hash));
	idem_load(t, 12, &k, T0 + 10); /* records 10 and 11 */
	assert_int_equal(idem_load_ack(t, ID_A, 2, 41), 0);
	assert_int_equal(idem_load_copy(t, 30, ID_B, 26), 0);
	assert_int_equal(idem_load_copy(t, 50, ID_B, 26), 0); /* the newest copy wins */
	assert_int_equal(idem_load_copy(t, 60, "not-an-id", 9), 0);
	idem_load_done(t);
	assert_int_equal(idem_pending(t, &seqs, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(seqs[0], 50);
	free(seqs);
	assert_int_equal(idem_begin(t, "unix", "t", "kb", k.hash, T0 + 20, &e, &rp), IDEM_REPLAY);
	assert_true(rp.recs[0].delivered);
	assert_int_equal(rp.recs[0].partition, 2);
	assert_int_equal(rp.recs[0].offset, 41);
	assert_false(rp.recs[1].delivered);
	assert_int_equal(rp.recs[1].seq, 50);
	idem_replay_free(&rp);
	/* The original sequence is no one's now; the copy's is. */
	assert_int_equal(idem_delivered(t, 11, 0, 1), 0);
	char id[26];
	assert_int_equal(idem_delivered_id(t, 50, 1, 9, id), 1);
	assert_memory_equal(id, ID_B, 26);
	assert_int_equal(idem_pending(t, &seqs, &n), 0);
	assert_int_equal(n, 0);
	assert_null(seqs);
	idem_free(t);
}

/*
 * A record Kafka acknowledged (its offset in the keys file) whose copy is
 * still unacknowledged (a kill -9 before the copy's acknowledgement was
 * flushed): the copy is the key's pending record, so that the start-up
 * check looks for it in Kafka instead of letting it be produced again.
 */
static void test_load_delivered_record_with_a_live_copy(void **state)
{
	struct idem *t = idem_new(86400000, 100);
	struct spool_key k = { .timestamp_ms = T0, .nrecs = 1, .scope = "unix", .scope_len = 4,
		.topic = "t", .topic_len = 1, .key = "kc", .key_len = 2, .ids = ID_A };
	uint64_t *seqs;
	size_t n;

	(void)state;
	memset(k.hash, 4, sizeof(k.hash));
	idem_load(t, 11, &k, T0 + 10); /* record 10 */
	assert_int_equal(idem_load_ack(t, ID_A, 2, 41), 0);
	assert_int_equal(idem_load_copy(t, 30, ID_A, 26), 0);
	idem_load_done(t);
	assert_int_equal(idem_pending(t, &seqs, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(seqs[0], 30);
	free(seqs);
	idem_free(t);
}

/*
 * Kafka rejects records for good: a key keeps its delivered ones and
 * answers the rejected one as failed; a key all of whose records were
 * rejected is forgotten (a retry is a new request). The same from failed/
 * at start (idem_load_failed(), idem_load_done()).
 */
static void test_failed_records(void **state)
{
	struct idem *t = idem_new(86400000, 100);
	struct spool_key k = { .timestamp_ms = T0, .nrecs = 2, .scope = "unix", .scope_len = 4,
		.topic = "t", .topic_len = 1, .key = "kb", .key_len = 2, .ids = ID_A ID_B };
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char h[32], hb[32];

	(void)state;
	hash_of("one", h);
	memset(hb, 9, sizeof(hb));
	/* Running: a batch of two, one delivered, one rejected. */
	assert_int_equal(idem_begin(t, "unix", "t", "kb", hb, T0, &e, &rp), IDEM_NEW);
	idem_commit(t, e, ID_A ID_B, 2, 41);
	assert_int_equal(idem_delivered(t, 41, 0, 7), 1);
	assert_int_equal(idem_failed(t, 42, 10), 1);
	assert_int_equal(idem_failed(t, 99, 10), 0); /* no key's */
	assert_int_equal(idem_begin(t, "unix", "t", "kb", hb, T0 + 1, &e, &rp), IDEM_REPLAY);
	assert_true(rp.recs[0].delivered && !rp.recs[0].failed);
	assert_true(rp.recs[1].failed && !rp.recs[1].delivered);
	assert_int_equal(rp.recs[1].kafka_err, 10);
	idem_replay_free(&rp);
	/* A single message rejected: its key is free again. */
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0, &e, &rp), IDEM_NEW);
	idem_commit(t, e, ID_A, 1, 50);
	assert_int_equal(idem_failed(t, 50, 10), 1);
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0 + 1, &e, &rp), IDEM_NEW);
	idem_abort(t, e);
	idem_free(t);

	/* At start: the same keys read back, their records' ids found in failed/. */
	t = idem_new(86400000, 100);
	memcpy(k.hash, hb, sizeof(hb));
	idem_load(t, 43, &k, T0 + 10);
	k.key = "k1";
	k.key_len = 2;
	k.nrecs = 1;
	k.ids = ID_B;
	memcpy(k.hash, h, sizeof(h));
	idem_load(t, 51, &k, T0 + 10);
	assert_int_equal(idem_load_failed(t, ID_B, 26), 0);
	assert_int_equal(idem_load_failed(t, "not-an-id", 9), 0);
	idem_load_done(t);
	assert_int_equal(idem_begin(t, "unix", "t", "kb", hb, T0 + 20, &e, &rp), IDEM_REPLAY);
	assert_false(rp.recs[0].failed);
	assert_true(rp.recs[1].failed);
	assert_int_equal(rp.recs[1].kafka_err, 0);
	idem_replay_free(&rp);
	assert_int_equal(idem_begin(t, "unix", "t", "k1", h, T0 + 20, &e, &rp), IDEM_NEW);
	idem_abort(t, e);
	/* The failed record left the pending map: a late report finds nothing. */
	assert_int_equal(idem_delivered(t, 42, 0, 1), 0);
	idem_free(t);
}

/*
 * Out of memory for the pending map while a key is committed or loaded:
 * its records still have their ids and sequences (only their offsets will
 * not be known), so a replay answers with the right ids.
 */
static void test_commit_and_load_out_of_memory(void **state)
{
	struct idem *t = idem_new(86400000, 100);
	struct spool_key k = { .timestamp_ms = T0, .nrecs = 2, .scope = "unix", .scope_len = 4,
		.topic = "t", .topic_len = 1, .key = "kl", .key_len = 2, .ids = ID_A ID_B };
	struct idem_entry *e;
	struct idem_replay rp;
	unsigned char h[32];

	(void)state;
	hash_of("one", h);
	assert_int_equal(idem_begin(t, "unix", "t", "kc", h, T0, &e, &rp), IDEM_NEW);
	fail_calloc_in = 2; /* the entry's calloc succeeds, the pending map's fails */
	idem_commit(t, e, ID_A ID_B, 2, 41);
	fail_calloc_in = 0;
	assert_int_equal(idem_begin(t, "unix", "t", "kc", h, T0 + 1, &e, &rp), IDEM_REPLAY);
	assert_int_equal(rp.n, 2);
	assert_string_equal(rp.recs[0].id, ID_A);
	assert_string_equal(rp.recs[1].id, ID_B);
	assert_int_equal(rp.recs[0].seq, 41);
	assert_int_equal(rp.recs[1].seq, 42);
	idem_replay_free(&rp);
	idem_free(t);

	t = idem_new(86400000, 100);
	memset(k.hash, 7, sizeof(k.hash));
	fail_calloc_in = 2;
	idem_load(t, 12, &k, T0 + 10);
	fail_calloc_in = 0;
	assert_int_equal(idem_begin(t, "unix", "t", "kl", k.hash, T0 + 20, &e, &rp), IDEM_REPLAY);
	assert_int_equal(rp.n, 2);
	assert_memory_equal(rp.recs[0].id, ID_A, 26);
	assert_memory_equal(rp.recs[1].id, ID_B, 26);
	assert_int_equal(rp.recs[0].seq, 10);
	assert_int_equal(rp.recs[1].seq, 11);
	idem_replay_free(&rp);
	idem_free(t);
}

static void test_key_record_codec(void **state)
{
	unsigned char buf[512];
	struct spool_key k = { .timestamp_ms = T0, .nrecs = 2, .scope = "unix", .scope_len = 4,
		.topic = "orders", .topic_len = 6, .key = "abc", .key_len = 3, .ids = ID_A ID_B },
			  d;
	struct spool_rec_hdr h;
	size_t n = spool_key_size(&k);

	(void)state;
	memset(k.hash, 0xab, sizeof(k.hash));
	assert_true(n > 0 && n <= sizeof(buf));
	assert_int_equal(spool_key_encode(&k, buf), n);
	spool_rec_set_seq(buf, 99);
	assert_int_equal(spool_key_decode(buf, n, &h, &d), SPOOL_REC_OK);
	assert_int_equal(h.type, SPOOL_REC_KEY);
	assert_int_equal(h.seq, 99);
	assert_int_equal(d.nrecs, 2);
	assert_int_equal(d.timestamp_ms, T0);
	assert_memory_equal(d.hash, k.hash, 32);
	assert_memory_equal(d.scope, "unix", 4);
	assert_memory_equal(d.topic, "orders", 6);
	assert_memory_equal(d.key, "abc", 3);
	assert_memory_equal(d.ids, ID_A ID_B, 52);
	/* A KEY record is no message, and more records than sequences before it is damage. */
	{
		struct spool_msg m;
		struct spool_hdr hd[4];
		assert_int_equal(spool_rec_decode(buf, n, NULL, &m, hd, 4), SPOOL_REC_BAD_PAYLOAD);
	}
	spool_rec_set_seq(buf, 1);
	assert_int_equal(spool_key_decode(buf, n, NULL, &d), SPOOL_REC_BAD_PAYLOAD);
	/*
	 * Ids that are no ackd-ids (replayed answers print them as they are) are
	 * damage, even under a good CRC: a quote, a NUL, a lowercase letter.
	 */
	{
		static const char bad[] = { '"', '\0', 'a', 'I', '\\' };
		for (size_t i = 0; i < sizeof(bad); i++) {
			char ids[53];
			struct spool_key kb = k;
			unsigned char b2[512];
			size_t n2;
			memcpy(ids, ID_A ID_B, sizeof(ids));
			ids[26 + 7] = bad[i];
			kb.ids = ids;
			n2 = spool_key_encode(&kb, b2);
			spool_rec_set_seq(b2, 99);
			assert_int_equal(spool_key_decode(b2, n2, NULL, &d), SPOOL_REC_BAD_PAYLOAD);
		}
	}
	/* A flipped payload byte fails the CRC. */
	spool_rec_set_seq(buf, 99);
	buf[n - 1] ^= 1;
	assert_int_equal(spool_key_decode(buf, n, NULL, &d), SPOOL_REC_BAD_PAYLOAD_CRC);
	k.nrecs = 0;
	assert_int_equal(spool_key_size(&k), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_valid),
		cmocka_unit_test(test_request_hash),
		cmocka_unit_test(test_new_commit_replay),
		cmocka_unit_test(test_abort_frees_key),
		cmocka_unit_test(test_ttl),
		cmocka_unit_test(test_max_keys_oldest_first),
		cmocka_unit_test(test_many_keys_and_deliveries),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_load_acks_and_copies),
		cmocka_unit_test(test_load_delivered_record_with_a_live_copy),
		cmocka_unit_test(test_failed_records),
		cmocka_unit_test(test_commit_and_load_out_of_memory),
		cmocka_unit_test(test_key_record_codec),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
