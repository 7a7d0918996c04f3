/*
 * idem: the Idempotency-Key table of the publish API (see idem.h).
 *
 * Layout. Entries are in a chained hash table by (scope, topic, key) and on
 * one list in the order they were made, oldest first: expiry (TTL) and the
 * key-count bound both forget from its head. An entry is one allocation:
 * the struct, its records (id, sequence, Kafka's partition and offset) and
 * the three strings. Records Kafka has not acknowledged yet are also in a
 * small open-addressing map from spool sequence to entry, so a delivery
 * report finds its key without a scan; the map is empty, and
 * idem_delivered() takes no lock, while no keyed record is pending.
 *
 * Memory per key: the entry (struct idem_entry, 128 bytes on x86-64, plus
 * 56 bytes per record and the scope, topic and key strings with their NULs,
 * in one malloc), a hash bucket (8 bytes, the table at most twice the keys),
 * and 16 bytes per record in the pending map while Kafka has not
 * acknowledged it (the map at most half full, and it does not shrink).
 * Measured with a million single-publish keys of 36 characters (a UUID) on
 * a 10-character topic, scope "unix": 281 bytes of heap per key (glibc), so
 * the default publish.idempotency_max_keys of 1,000,000 can hold about
 * 280 MB.
 *
 * Threads: any; t->mu guards everything but t->npending's lock-free read.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "idem.h"
#include "webhook_sign.h"

#define MIN_BUCKETS 1024

enum entry_state { E_WRITING, E_DURABLE };

struct idem_entry {
	struct idem_entry *hnext;        /* hash chain */
	struct idem_entry *older, *newer; /* the age list */
	uint64_t h;                      /* hash of scope, topic, key */
	int64_t created_ms;
	enum entry_state state;
	unsigned char req[SPOOL_KEY_HASH_LEN];
	size_t nrecs;
	size_t npending;                 /* records in the pending map */
	struct idem_rec *recs;           /* points into the same allocation */
	char *scope, *topic, *key;       /* likewise */
};

struct pend {
	uint64_t seq; /* 0: empty */
	struct idem_entry *e;
};

struct idem {
	pthread_mutex_t mu;
	int64_t ttl_ms;
	size_t max_keys;
	struct idem_entry **buckets;
	size_t nbuckets;
	size_t nkeys;
	size_t bytes;
	struct idem_entry *oldest, *newest;
	struct pend *pend; /* open addressing, linear probing, power-of-two size */
	size_t pend_cap;
	atomic_size_t npending;
	/* At start only: ackd-ids of the records in failed/ (idem_load_failed()). */
	char (*failed_ids)[SPOOL_KEY_ID_LEN];
	size_t nfailed, failed_cap;
	/* At start only: the copies' ackd-ids and sequences (idem_load_copy()). */
	struct copy { char id[SPOOL_KEY_ID_LEN]; uint64_t seq; } *copies;
	size_t ncopies, copies_cap;
	/* At start only: Kafka's acknowledgements from the keys file (idem_load_ack()). */
	struct ack { char id[SPOOL_KEY_ID_LEN]; int32_t partition; int64_t offset; } *acks;
	size_t nacks, acks_cap;
};

/* FNV-1a over the three strings with their NULs. */
static uint64_t key_hash(const char *scope, const char *topic, const char *key)
{
	const char *parts[3] = { scope, topic, key };
	uint64_t h = 0xcbf29ce484222325ull;

	for (int i = 0; i < 3; i++) {
		const unsigned char *p = (const unsigned char *)parts[i];
		do {
			h ^= *p;
			h *= 0x100000001b3ull;
		} while (*p++);
	}
	return h;
}

static uint64_t seq_slot(uint64_t seq, size_t cap)
{
	return (seq * 0x9e3779b97f4a7c15ull) >> 17 & (cap - 1);
}

struct idem *idem_new(int64_t ttl_ms, size_t max_keys)
{
	struct idem *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->ttl_ms = ttl_ms;
	t->max_keys = max_keys ? max_keys : 1;
	t->nbuckets = MIN_BUCKETS;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets || pthread_mutex_init(&t->mu, NULL) != 0) {
		free(t->buckets);
		free(t);
		return NULL;
	}
	atomic_init(&t->npending, 0);
	return t;
}

void idem_free(struct idem *t)
{
	if (!t)
		return;
	while (t->oldest) {
		struct idem_entry *e = t->oldest;
		t->oldest = e->newer;
		free(e);
	}
	free(t->buckets);
	free(t->pend);
	free(t->failed_ids);
	free(t->copies);
	free(t->acks);
	pthread_mutex_destroy(&t->mu);
	free(t);
}

int idem_key_valid(const char *s)
{
	size_t n = 0;

	if (!s)
		return 0;
	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x20 || (unsigned char)s[n] > 0x7e || n >= IDEM_KEY_MAX)
			return 0;
	return n > 0;
}

static void hash_u32(struct sha256_ctx *c, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
		(unsigned char)(v >> 8), (unsigned char)v };
	sha256_update(c, b, 4);
}

/* A length-prefixed byte string; 0xffffffff: absent (distinct from empty). */
static void hash_bytes(struct sha256_ctx *c, const char *p, size_t len)
{
	hash_u32(c, p ? (uint32_t)len : UINT32_MAX);
	if (p && len)
		sha256_update(c, p, len);
}

void idem_request_hash(const struct spool_msg *msgs, size_t n,
    unsigned char out[SPOOL_KEY_HASH_LEN])
{
	struct sha256_ctx c;

	sha256_init(&c);
	hash_u32(&c, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		const struct spool_msg *m = &msgs[i];
		uint32_t nh = 0;
		for (size_t j = 0; j < m->nhdrs; j++)
			nh += !spool_hdr_is(&m->hdrs[j], SPOOL_HDR_ID);
		hash_u32(&c, (uint32_t)m->partition);
		hash_bytes(&c, m->key, m->key_len);
		hash_u32(&c, nh);
		for (size_t j = 0; j < m->nhdrs; j++) {
			const struct spool_hdr *h = &m->hdrs[j];
			if (spool_hdr_is(h, SPOOL_HDR_ID))
				continue;
			hash_bytes(&c, h->name, h->name_len);
			hash_bytes(&c, h->value, h->value_len);
		}
		hash_bytes(&c, m->value, m->value_len);
	}
	sha256_final(&c, out);
}

void idem_replay_free(struct idem_replay *r)
{
	if (!r)
		return;
	free(r->recs);
	r->recs = NULL;
	r->n = 0;
}

/* --- the pending map: sequence -> entry ----------------------------------- */

static int pend_grow(struct idem *t)
{
	size_t cap = t->pend_cap ? t->pend_cap * 2 : 1024;
	struct pend *np = calloc(cap, sizeof(*np));

	if (!np)
		return -1;
	for (size_t i = 0; i < t->pend_cap; i++) {
		if (!t->pend[i].seq)
			continue;
		size_t j = seq_slot(t->pend[i].seq, cap);
		while (np[j].seq)
			j = (j + 1) & (cap - 1);
		np[j] = t->pend[i];
	}
	free(t->pend);
	t->pend = np;
	t->pend_cap = cap;
	return 0;
}

static int pend_put(struct idem *t, uint64_t seq, struct idem_entry *e)
{
	size_t n = atomic_load(&t->npending);

	if ((n + 1) * 2 > t->pend_cap && pend_grow(t) < 0)
		return -1;
	size_t j = seq_slot(seq, t->pend_cap);
	while (t->pend[j].seq && t->pend[j].seq != seq)
		j = (j + 1) & (t->pend_cap - 1);
	if (t->pend[j].seq == seq) {
		t->pend[j].e->npending--; /* a newer key names the sequence (after a reuse) */
	} else {
		t->pend[j].seq = seq;
		atomic_store(&t->npending, n + 1);
	}
	t->pend[j].e = e;
	e->npending++;
	return 0;
}

static struct pend *pend_find(struct idem *t, uint64_t seq)
{
	if (!t->pend_cap)
		return NULL;
	for (size_t j = seq_slot(seq, t->pend_cap); t->pend[j].seq; j = (j + 1) & (t->pend_cap - 1))
		if (t->pend[j].seq == seq)
			return &t->pend[j];
	return NULL;
}

/* Remove slot p, shifting back the entries after it (no tombstones). */
static void pend_del(struct idem *t, struct pend *p)
{
	size_t i = (size_t)(p - t->pend), mask = t->pend_cap - 1;

	p->e->npending--;
	t->pend[i].seq = 0;
	for (size_t j = (i + 1) & mask; t->pend[j].seq; j = (j + 1) & mask) {
		size_t home = seq_slot(t->pend[j].seq, t->pend_cap);
		/* Move j to the hole when its home is not within (i, j]. */
		if ((j > i && (home <= i || home > j)) || (j < i && home <= i && home > j)) {
			t->pend[i] = t->pend[j];
			t->pend[j].seq = 0;
			i = j;
		}
	}
	atomic_fetch_sub(&t->npending, 1);
}

/* --- entries ---------------------------------------------------------------- */

static struct idem_entry **bucket(struct idem *t, uint64_t h)
{
	return &t->buckets[h & (t->nbuckets - 1)];
}

static struct idem_entry *lookup(struct idem *t, uint64_t h, const char *scope,
    const char *topic, const char *key)
{
	for (struct idem_entry *e = *bucket(t, h); e; e = e->hnext)
		if (e->h == h && strcmp(e->key, key) == 0 && strcmp(e->topic, topic) == 0 &&
		    strcmp(e->scope, scope) == 0)
			return e;
	return NULL;
}

static size_t entry_bytes(const struct idem_entry *e)
{
	return sizeof(*e) + e->nrecs * sizeof(struct idem_rec) + strlen(e->scope) +
	    strlen(e->topic) + strlen(e->key) + 3 + sizeof(struct idem_entry *);
}

static void unlink_entry(struct idem *t, struct idem_entry *e)
{
	struct idem_entry **pp = bucket(t, e->h);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older)
		e->older->newer = e->newer;
	else
		t->oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		t->newest = e->older;
	for (size_t i = 0; e->npending && i < e->nrecs; i++) {
		struct pend *p = pend_find(t, e->recs[i].seq);
		if (p && p->e == e)
			pend_del(t, p);
	}
	t->nkeys--;
	t->bytes -= entry_bytes(e);
	free(e);
}

/* Double the buckets when the keys outnumber them; stays as is when out of memory. */
static void maybe_rehash(struct idem *t)
{
	size_t n = t->nbuckets * 2;
	struct idem_entry **nb;

	if (t->nkeys <= t->nbuckets || !(nb = calloc(n, sizeof(*nb))))
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		while (t->buckets[i]) {
			struct idem_entry *e = t->buckets[i];
			t->buckets[i] = e->hnext;
			e->hnext = nb[e->h & (n - 1)];
			nb[e->h & (n - 1)] = e;
		}
	}
	free(t->buckets);
	t->buckets = nb;
	t->bytes += (n - t->nbuckets) * sizeof(*nb);
	t->nbuckets = n;
}

/*
 * Forget expired keys and, beyond max_keys - room, the oldest. A key still
 * being written is never forgotten: its request holds it.
 */
static void forget_old(struct idem *t, int64_t now_ms, size_t room)
{
	struct idem_entry *e = t->oldest;

	while (e) {
		struct idem_entry *next = e->newer;
		bool expired = now_ms - e->created_ms >= t->ttl_ms;
		if (!expired && t->nkeys + room <= t->max_keys)
			break;
		if (e->state == E_DURABLE)
			unlink_entry(t, e);
		e = next;
	}
}

/* An entry with room for nrecs records, linked nowhere yet; NULL when out of memory. */
static struct idem_entry *entry_alloc(uint64_t h, const char *scope, size_t slen,
    const char *topic, size_t tlen, const char *key, size_t klen, size_t nrecs, int64_t created)
{
	size_t size = sizeof(struct idem_entry) + nrecs * sizeof(struct idem_rec) + slen + tlen +
	    klen + 3;
	struct idem_entry *e = calloc(1, size);
	char *s;

	if (!e)
		return NULL;
	e->h = h;
	e->created_ms = created;
	e->nrecs = nrecs;
	e->recs = (struct idem_rec *)(e + 1);
	s = (char *)(e->recs + nrecs);
	e->scope = memcpy(s, scope, slen);
	s[slen] = '\0';
	s += slen + 1;
	e->topic = memcpy(s, topic, tlen);
	s[tlen] = '\0';
	s += tlen + 1;
	e->key = memcpy(s, key, klen);
	s[klen] = '\0';
	return e;
}

/* Link e into its hash chain and at the newest end of the age list. */
static void link_entry(struct idem *t, struct idem_entry *e)
{
	e->hnext = *bucket(t, e->h);
	*bucket(t, e->h) = e;
	e->older = t->newest;
	e->newer = NULL;
	if (t->newest)
		t->newest->newer = e;
	else
		t->oldest = e;
	t->newest = e;
	t->nkeys++;
	t->bytes += entry_bytes(e);
	maybe_rehash(t);
}

/* Put n in old's place (hash chain, age list) and free old, which has no pending records. */
static void replace_entry(struct idem *t, struct idem_entry *old, struct idem_entry *n)
{
	struct idem_entry **pp = bucket(t, old->h);

	while (*pp != old)
		pp = &(*pp)->hnext;
	*pp = n;
	n->hnext = old->hnext;
	n->older = old->older;
	n->newer = old->newer;
	if (n->older)
		n->older->newer = n;
	else
		t->oldest = n;
	if (n->newer)
		n->newer->older = n;
	else
		t->newest = n;
	t->bytes += entry_bytes(n) - entry_bytes(old);
	free(old);
}

enum idem_begin idem_begin(struct idem *t, const char *scope, const char *topic, const char *key,
    const unsigned char hash[SPOOL_KEY_HASH_LEN], int64_t now_ms, struct idem_entry **entry,
    struct idem_replay *replay)
{
	uint64_t h = key_hash(scope, topic, key);
	struct idem_entry *e;
	enum idem_begin res;

	*entry = NULL;
	replay->n = 0;
	replay->recs = NULL;
	pthread_mutex_lock(&t->mu);
	forget_old(t, now_ms, 0);
	e = lookup(t, h, scope, topic, key);
	if (!e) {
		forget_old(t, now_ms, 1);
		e = entry_alloc(h, scope, strlen(scope), topic, strlen(topic), key, strlen(key), 0,
		    now_ms);
		if (!e) {
			res = IDEM_NOMEM;
			goto out;
		}
		link_entry(t, e);
		e->state = E_WRITING;
		memcpy(e->req, hash, SPOOL_KEY_HASH_LEN);
		*entry = e;
		res = IDEM_NEW;
	} else if (memcmp(e->req, hash, SPOOL_KEY_HASH_LEN) != 0) {
		res = IDEM_REUSED;
	} else if (e->state == E_WRITING) {
		res = IDEM_IN_USE;
	} else if (!(replay->recs = malloc(e->nrecs * sizeof(*replay->recs)))) {
		res = IDEM_NOMEM;
	} else {
		memcpy(replay->recs, e->recs, e->nrecs * sizeof(*replay->recs));
		replay->n = e->nrecs;
		res = IDEM_REPLAY;
	}
out:
	pthread_mutex_unlock(&t->mu);
	return res;
}

void idem_commit(struct idem *t, struct idem_entry *e, const char *ids, size_t n,
    uint64_t first_seq)
{
	struct idem_entry *d = entry_alloc(e->h, e->scope, strlen(e->scope), e->topic,
	    strlen(e->topic), e->key, strlen(e->key), n, e->created_ms);

	pthread_mutex_lock(&t->mu);
	if (!d) {
		/* Out of memory: the records are durable, their key is not remembered here. */
		unlink_entry(t, e);
		pthread_mutex_unlock(&t->mu);
		return;
	}
	memcpy(d->req, e->req, SPOOL_KEY_HASH_LEN);
	replace_entry(t, e, d);
	for (size_t i = 0; i < n; i++) {
		memcpy(d->recs[i].id, ids + i * SPOOL_KEY_ID_LEN, SPOOL_KEY_ID_LEN);
		d->recs[i].id[SPOOL_KEY_ID_LEN] = '\0';
		d->recs[i].seq = first_seq + i;
	}
	/* Every record has its id and sequence before any insert can fail. */
	for (size_t i = 0; i < n; i++)
		if (pend_put(t, first_seq + i, d) < 0)
			break; /* out of memory: these records' offsets will not be known */
	d->state = E_DURABLE;
	pthread_mutex_unlock(&t->mu);
}

void idem_abort(struct idem *t, struct idem_entry *e)
{
	pthread_mutex_lock(&t->mu);
	unlink_entry(t, e);
	pthread_mutex_unlock(&t->mu);
}

void idem_load(struct idem *t, uint64_t seq, const struct spool_key *k, int64_t now_ms)
{
	char scope[SPOOL_KEY_MAX_STR + 1], topic[SPOOL_KEY_MAX_STR + 1], key[SPOOL_KEY_MAX_STR + 1];
	struct idem_entry *e;
	uint64_t h;

	memcpy(scope, k->scope, k->scope_len);
	scope[k->scope_len] = '\0';
	memcpy(topic, k->topic, k->topic_len);
	topic[k->topic_len] = '\0';
	memcpy(key, k->key, k->key_len);
	key[k->key_len] = '\0';
	h = key_hash(scope, topic, key);
	if (now_ms - k->timestamp_ms >= t->ttl_ms)
		return; /* expired */
	pthread_mutex_lock(&t->mu);
	/*
	 * The same key twice (the keys file and its segment after a crash
	 * between the two, or a key used again after it was forgotten): the
	 * later KEY record wins.
	 */
	if ((e = lookup(t, h, scope, topic, key))) {
		if (e->nrecs && e->recs[e->nrecs - 1].seq + 1 >= seq) {
			pthread_mutex_unlock(&t->mu);
			return;
		}
		unlink_entry(t, e);
	}
	forget_old(t, now_ms, 1);
	e = entry_alloc(h, scope, k->scope_len, topic, k->topic_len, key, k->key_len, k->nrecs,
	    k->timestamp_ms);
	if (e) {
		link_entry(t, e);
		memcpy(e->req, k->hash, SPOOL_KEY_HASH_LEN);
		e->state = E_DURABLE;
		for (size_t i = 0; i < k->nrecs; i++) {
			memcpy(e->recs[i].id, k->ids + i * SPOOL_KEY_ID_LEN, SPOOL_KEY_ID_LEN);
			e->recs[i].seq = seq - k->nrecs + i;
		}
		/* Every record has its id and sequence before any insert can fail. */
		for (size_t i = 0; i < k->nrecs; i++)
			if (pend_put(t, e->recs[i].seq, e) < 0)
				break; /* out of memory: these records' offsets will not be known */
	}
	pthread_mutex_unlock(&t->mu);
}

int idem_delivered(struct idem *t, uint64_t seq, int32_t partition, int64_t offset)
{
	return idem_delivered_id(t, seq, partition, offset, NULL);
}

int idem_delivered_id(struct idem *t, uint64_t seq, int32_t partition, int64_t offset,
    char *id)
{
	struct pend *p;
	int found = 0;

	if (atomic_load_explicit(&t->npending, memory_order_relaxed) == 0)
		return 0;
	pthread_mutex_lock(&t->mu);
	if ((p = pend_find(t, seq))) {
		struct idem_entry *e = p->e;
		for (size_t i = 0; i < e->nrecs; i++) {
			if (e->recs[i].seq != seq)
				continue;
			e->recs[i].delivered = 1;
			e->recs[i].partition = partition;
			e->recs[i].offset = offset;
			if (id)
				memcpy(id, e->recs[i].id, SPOOL_KEY_ID_LEN);
		}
		pend_del(t, p);
		found = 1;
	}
	pthread_mutex_unlock(&t->mu);
	return found;
}

int idem_pending(struct idem *t, uint64_t **seqs, size_t *n)
{
	uint64_t *v = NULL;
	size_t k = 0;
	int rc = 0;

	*seqs = NULL;
	*n = 0;
	if (atomic_load_explicit(&t->npending, memory_order_relaxed) == 0)
		return 0;
	pthread_mutex_lock(&t->mu);
	if (t->npending && !(v = malloc(t->npending * sizeof(*v)))) {
		rc = -1;
		goto out;
	}
	for (size_t i = 0; i < t->pend_cap; i++)
		if (t->pend[i].seq)
			v[k++] = t->pend[i].seq;
	*seqs = v;
	*n = k;
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

void idem_stats(struct idem *t, struct idem_stats *out)
{
	pthread_mutex_lock(&t->mu);
	out->keys = t->nkeys;
	out->bytes = t->bytes + t->nbuckets * sizeof(*t->buckets) +
	    t->pend_cap * sizeof(*t->pend);
	pthread_mutex_unlock(&t->mu);
}

/* True when every record of e failed: nothing of its request reached Kafka. */
static bool all_failed(const struct idem_entry *e)
{
	for (size_t i = 0; i < e->nrecs; i++)
		if (!e->recs[i].failed)
			return false;
	return e->nrecs > 0;
}

int idem_failed(struct idem *t, uint64_t seq, int kafka_err)
{
	struct pend *p;
	int found = 0;

	if (atomic_load_explicit(&t->npending, memory_order_relaxed) == 0)
		return 0;
	pthread_mutex_lock(&t->mu);
	if ((p = pend_find(t, seq))) {
		struct idem_entry *e = p->e;
		for (size_t i = 0; i < e->nrecs; i++) {
			if (e->recs[i].seq != seq)
				continue;
			e->recs[i].failed = 1;
			e->recs[i].kafka_err = kafka_err;
		}
		pend_del(t, p);
		if (all_failed(e))
			unlink_entry(t, e);
		found = 1;
	}
	pthread_mutex_unlock(&t->mu);
	return found;
}

int idem_load_failed(struct idem *t, const char *id, size_t id_len)
{
	int rc = 0;

	if (id_len != SPOOL_KEY_ID_LEN)
		return 0; /* not an ackd-id any key names */
	pthread_mutex_lock(&t->mu);
	if (t->nfailed == t->failed_cap) {
		size_t cap = t->failed_cap ? t->failed_cap * 2 : 256;
		void *np = realloc(t->failed_ids, cap * sizeof(*t->failed_ids));
		if (!np) {
			rc = -1;
			goto out;
		}
		t->failed_ids = np;
		t->failed_cap = cap;
	}
	memcpy(t->failed_ids[t->nfailed++], id, SPOOL_KEY_ID_LEN);
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

int idem_load_copy(struct idem *t, uint64_t seq, const char *id, size_t id_len)
{
	int rc = 0;

	if (id_len != SPOOL_KEY_ID_LEN)
		return 0; /* not an ackd-id any key names */
	pthread_mutex_lock(&t->mu);
	if (t->ncopies == t->copies_cap) {
		size_t cap = t->copies_cap ? t->copies_cap * 2 : 256;
		void *np = realloc(t->copies, cap * sizeof(*t->copies));
		if (!np) {
			rc = -1;
			goto out;
		}
		t->copies = np;
		t->copies_cap = cap;
	}
	memcpy(t->copies[t->ncopies].id, id, SPOOL_KEY_ID_LEN);
	t->copies[t->ncopies++].seq = seq;
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

int idem_load_ack(struct idem *t, const char *id, int32_t partition, int64_t offset)
{
	int rc = 0;

	pthread_mutex_lock(&t->mu);
	if (t->nacks == t->acks_cap) {
		size_t cap = t->acks_cap ? t->acks_cap * 2 : 256;
		void *np = realloc(t->acks, cap * sizeof(*t->acks));
		if (!np) {
			rc = -1;
			goto out;
		}
		t->acks = np;
		t->acks_cap = cap;
	}
	memcpy(t->acks[t->nacks].id, id, SPOOL_KEY_ID_LEN);
	t->acks[t->nacks].partition = partition;
	t->acks[t->nacks++].offset = offset;
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

static int id_cmp(const void *a, const void *b)
{
	return memcmp(a, b, SPOOL_KEY_ID_LEN);
}

/* Loaded records Kafka acknowledged before the restart: delivered, with their offsets. */
static void apply_acks(struct idem *t)
{
	qsort(t->acks, t->nacks, sizeof(*t->acks), id_cmp);
	for (struct idem_entry *e = t->oldest; e; e = e->newer) {
		for (size_t i = 0; i < e->nrecs; i++) {
			struct ack *a = bsearch(e->recs[i].id, t->acks, t->nacks, sizeof(*t->acks),
			    id_cmp);
			struct pend *p;
			if (!a)
				continue;
			e->recs[i].delivered = 1;
			e->recs[i].partition = a->partition;
			e->recs[i].offset = a->offset;
			if ((p = pend_find(t, e->recs[i].seq)) && p->e == e)
				pend_del(t, p);
		}
	}
	free(t->acks);
	t->acks = NULL;
	t->nacks = t->acks_cap = 0;
}

/* By id, then sequence: the last of equal ids is the newest copy. */
static int copy_cmp(const void *a, const void *b)
{
	const struct copy *x = a, *y = b;
	int c = memcmp(x->id, y->id, SPOOL_KEY_ID_LEN);
	return c ? c : x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Loaded records that were copied forward: their key follows the copy. Also
 * a record whose offset is known: a kill -9 can leave its copy
 * unacknowledged (the copy's acknowledgement not yet flushed when the old
 * segment went), and as the key's pending record the copy is looked for in
 * Kafka at start rather than produced again.
 */
static void follow_copies(struct idem *t)
{
	qsort(t->copies, t->ncopies, sizeof(*t->copies), copy_cmp);
	for (struct idem_entry *e = t->oldest; e; e = e->newer) {
		for (size_t i = 0; i < e->nrecs; i++) {
			struct copy *c = bsearch(e->recs[i].id, t->copies, t->ncopies,
			    sizeof(*t->copies), id_cmp);
			struct pend *p;
			if (!c || e->recs[i].failed)
				continue;
			while (c + 1 < t->copies + t->ncopies && !id_cmp(c + 1, e->recs[i].id))
				c++;
			if (c->seq == e->recs[i].seq)
				continue;
			if ((p = pend_find(t, e->recs[i].seq)) && p->e == e)
				pend_del(t, p);
			e->recs[i].seq = c->seq;
			if (pend_put(t, c->seq, e) < 0)
				break; /* out of memory: these records' offsets will not be known */
		}
	}
	free(t->copies);
	t->copies = NULL;
	t->ncopies = t->copies_cap = 0;
}

void idem_load_done(struct idem *t)
{
	struct idem_entry *e, *next;

	pthread_mutex_lock(&t->mu);
	if (t->nacks)
		apply_acks(t);
	if (t->ncopies)
		follow_copies(t);
	if (t->nfailed)
		qsort(t->failed_ids, t->nfailed, sizeof(*t->failed_ids), id_cmp);
	for (e = t->oldest; t->nfailed && e; e = next) {
		next = e->newer;
		for (size_t i = 0; i < e->nrecs; i++) {
			struct pend *p;
			if (!bsearch(e->recs[i].id, t->failed_ids, t->nfailed,
			        sizeof(*t->failed_ids), id_cmp))
				continue;
			e->recs[i].failed = 1;
			e->recs[i].kafka_err = 0;
			if ((p = pend_find(t, e->recs[i].seq)) && p->e == e)
				pend_del(t, p);
		}
		if (all_failed(e))
			unlink_entry(t, e);
	}
	free(t->failed_ids);
	t->failed_ids = NULL;
	t->nfailed = t->failed_cap = 0;
	pthread_mutex_unlock(&t->mu);
}
