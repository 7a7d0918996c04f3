/*
 * spool_rec: the record codec and CRC32C, pure functions without I/O.
 *
 * A record is a 28-byte header (magic, version, type, payload length,
 * sequence, payload CRC, header CRC) and a payload holding one message.
 * Request threads encode (and CRC) their records before they queue them, so
 * the single writer thread only stamps the sequence and the 24-byte header
 * CRC. docs/spool-format.md is the reference for every byte here; all
 * integers are little-endian.
 *
 * CRC32C uses the SSE4.2 crc32 instruction when the CPU has it (checked once
 * at run time), else slicing-by-8 tables built on first use. Both give the
 * same values; the unit tests run the table path explicitly as well.
 *
 * Threads: any; the only shared state is the CRC table, built under
 * pthread_once.
 */
#include "config.h"

#include <pthread.h>
#include <string.h>

#include "spool_rec.h"

/* --- little-endian fields ------------------------------------------------- */

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

/* --- CRC32C ----------------------------------------------------------------- */

#define CRC32C_POLY 0x82f63b78u /* reflected Castagnoli polynomial */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_have_sse42;

static void crc_init(void)
{
	for (uint32_t n = 0; n < 256; n++) {
		uint32_t c = n;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][n] = c;
	}
	for (uint32_t n = 0; n < 256; n++)
		for (int t = 1; t < 8; t++)
			crc_table[t][n] = (crc_table[t - 1][n] >> 8) ^ crc_table[0][crc_table[t - 1][n] & 0xff];
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	crc_have_sse42 = __builtin_cpu_supports("sse4.2");
#endif
}

/* Slicing-by-8: eight table look-ups per 8 input bytes. crc is pre-inverted. */
static uint32_t crc_sw(uint32_t crc, const unsigned char *p, size_t len)
{
	while (len && ((uintptr_t)p & 7)) {
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
		len--;
	}
	while (len >= 8) {
		uint32_t lo = get32(p) ^ crc;
		uint32_t hi = get32(p + 4);
		crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
		    crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
		    crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff] ^
		    crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc;
}

#if defined(__x86_64__)
#include <nmmintrin.h>

__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const unsigned char *p,
    size_t len)
{
	uint64_t c = crc;

	while (len && ((uintptr_t)p & 7)) {
		c = _mm_crc32_u8((uint32_t)c, *p++);
		len--;
	}
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = _mm_crc32_u64(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	crc = ~crc;
#if defined(__x86_64__)
	if (crc_have_sse42)
		return ~crc_hw(crc, buf, len);
#endif
	return ~crc_sw(crc, buf, len);
}

uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
	pthread_once(&crc_once, crc_init);
	return ~crc_sw(~crc, buf, len);
}

/* --- records ---------------------------------------------------------------- */

/*
 * Header: magic u32 @0, version u8 @4, type u8 @5, flags u16 @6,
 * payload_len u32 @8, seq u64 @12, payload_crc u32 @20, hdr_crc u32 @24
 * (CRC32C of bytes 0..23).
 */
#define OFF_MAGIC 0
#define OFF_VERSION 4
#define OFF_TYPE 5
#define OFF_FLAGS 6
#define OFF_LEN 8
#define OFF_SEQ 12
#define OFF_PCRC 20
#define OFF_HCRC 24

#define LEN_NULL 0xffffffffu

size_t spool_rec_size(const struct spool_msg *m)
{
	uint64_t n = 8 + 4 + 2 + 4 + 4 + 4; /* ts, partition, topic_len, key_len, nhdrs, value_len */

	if (m->topic_len > SPOOL_REC_MAX_TOPIC || m->value_len >= LEN_NULL ||
	    (m->key && m->key_len >= LEN_NULL))
		return 0;
	n += m->topic_len + (m->key ? m->key_len : 0) + m->value_len;
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct spool_hdr *h = &m->hdrs[i];
		if (h->name_len > 0xffff || (h->value && h->value_len >= LEN_NULL))
			return 0;
		n += 2 + h->name_len + 4 + (h->value ? h->value_len : 0);
	}
	if (n > SPOOL_REC_MAX_PAYLOAD)
		return 0;
	return SPOOL_REC_HDR_SIZE + (size_t)n;
}

static unsigned char *put_bytes(unsigned char *p, const void *src, size_t len)
{
	if (len)
		memcpy(p, src, len);
	return p + len;
}

size_t spool_rec_encode_type(const struct spool_msg *m, enum spool_rec_type type, void *buf)
{
	unsigned char *rec = buf;
	unsigned char *p = rec + SPOOL_REC_HDR_SIZE;
	size_t payload_len;

	put64(p, (uint64_t)m->timestamp_ms);
	put32(p + 8, (uint32_t)m->partition);
	put16(p + 12, (uint16_t)m->topic_len);
	p = put_bytes(p + 14, m->topic, m->topic_len);
	put32(p, m->key ? (uint32_t)m->key_len : LEN_NULL);
	p = m->key ? put_bytes(p + 4, m->key, m->key_len) : p + 4;
	put32(p, (uint32_t)m->nhdrs);
	p += 4;
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct spool_hdr *h = &m->hdrs[i];
		put16(p, (uint16_t)h->name_len);
		p = put_bytes(p + 2, h->name, h->name_len);
		put32(p, h->value ? (uint32_t)h->value_len : LEN_NULL);
		p = h->value ? put_bytes(p + 4, h->value, h->value_len) : p + 4;
	}
	put32(p, (uint32_t)m->value_len);
	p = put_bytes(p + 4, m->value, m->value_len);

	payload_len = (size_t)(p - rec) - SPOOL_REC_HDR_SIZE;
	put32(rec + OFF_MAGIC, SPOOL_REC_MAGIC);
	rec[OFF_VERSION] = SPOOL_REC_VERSION;
	rec[OFF_TYPE] = (unsigned char)type;
	put16(rec + OFF_FLAGS, 0);
	put32(rec + OFF_LEN, (uint32_t)payload_len);
	put32(rec + OFF_PCRC, crc32c(0, rec + SPOOL_REC_HDR_SIZE, payload_len));
	spool_rec_set_seq(rec, 0);
	return (size_t)(p - rec);
}

size_t spool_rec_encode(const struct spool_msg *m, void *buf)
{
	return spool_rec_encode_type(m, SPOOL_REC_MSG, buf);
}

void spool_rec_set_seq(void *rec, uint64_t seq)
{
	unsigned char *p = rec;

	put64(p + OFF_SEQ, seq);
	put32(p + OFF_HCRC, crc32c(0, p, OFF_HCRC));
}

void spool_rec_set_flags(void *rec, uint16_t flags) { put16((unsigned char *)rec + OFF_FLAGS, flags); }
uint16_t spool_rec_flags(const void *rec) { return get16((const unsigned char *)rec + OFF_FLAGS); }

int64_t spool_rec_peek_timestamp(const void *rec)
{
	return (int64_t)get64((const unsigned char *)rec + SPOOL_REC_HDR_SIZE);
}

enum spool_rec_status spool_rec_parse_hdr(const void *buf, size_t len, struct spool_rec_hdr *out)
{
	const unsigned char *p = buf;

	if (len < SPOOL_REC_HDR_SIZE)
		return SPOOL_REC_SHORT;
	if (get32(p + OFF_MAGIC) != SPOOL_REC_MAGIC)
		return SPOOL_REC_BAD_MAGIC;
	if (get32(p + OFF_HCRC) != crc32c(0, p, OFF_HCRC))
		return SPOOL_REC_BAD_HDR_CRC;
	out->version = p[OFF_VERSION];
	out->type = p[OFF_TYPE];
	out->flags = get16(p + OFF_FLAGS);
	out->payload_len = get32(p + OFF_LEN);
	out->seq = get64(p + OFF_SEQ);
	out->payload_crc = get32(p + OFF_PCRC);
	/* Readers of version N read every version <= N; see docs/spool-format.md. */
	if (out->version == 0 || out->version > SPOOL_REC_VERSION)
		return SPOOL_REC_BAD_VERSION;
	if (out->payload_len > SPOOL_REC_MAX_PAYLOAD)
		return SPOOL_REC_BAD_PAYLOAD;
	if (len - SPOOL_REC_HDR_SIZE < out->payload_len)
		return SPOOL_REC_SHORT;
	return SPOOL_REC_OK;
}

/* A bounds-checked reader over the payload. */
struct cur {
	const unsigned char *p;
	size_t left;
	int bad;
};

static const unsigned char *take(struct cur *c, size_t n)
{
	const unsigned char *p = c->p;

	if (c->bad || c->left < n) {
		c->bad = 1;
		return NULL;
	}
	c->p += n;
	c->left -= n;
	return p;
}

static uint16_t take16(struct cur *c)
{
	const unsigned char *p = take(c, 2);
	return p ? get16(p) : 0;
}

static uint32_t take32(struct cur *c)
{
	const unsigned char *p = take(c, 4);
	return p ? get32(p) : 0;
}

static uint64_t take64(struct cur *c)
{
	const unsigned char *p = take(c, 8);
	return p ? get64(p) : 0;
}

/* A length-prefixed byte string whose length LEN_NULL means "absent". */
static void take_nullable(struct cur *c, const char **ptr, size_t *len)
{
	uint32_t n = take32(c);

	*ptr = NULL;
	*len = 0;
	if (c->bad || n == LEN_NULL)
		return;
	*ptr = (const char *)take(c, n);
	*len = *ptr ? n : 0;
}

enum spool_rec_status spool_rec_decode(const void *buf, size_t len, struct spool_rec_hdr *h,
    struct spool_msg *m, struct spool_hdr *hdrs, size_t max_hdrs)
{
	struct spool_rec_hdr local;
	enum spool_rec_status st;
	struct cur c;
	uint32_t n;

	if (!h)
		h = &local;
	st = spool_rec_parse_hdr(buf, len, h);
	if (st != SPOOL_REC_OK)
		return st;
	c.p = (const unsigned char *)buf + SPOOL_REC_HDR_SIZE;
	c.left = h->payload_len;
	c.bad = 0;
	if (crc32c(0, c.p, c.left) != h->payload_crc)
		return SPOOL_REC_BAD_PAYLOAD_CRC;
	if (h->type != SPOOL_REC_MSG && h->type != SPOOL_REC_FAILED)
		return SPOOL_REC_BAD_PAYLOAD;

	memset(m, 0, sizeof(*m));
	m->timestamp_ms = (int64_t)take64(&c);
	m->partition = (int32_t)take32(&c);
	m->topic_len = take16(&c);
	m->topic = (const char *)take(&c, m->topic_len);
	take_nullable(&c, &m->key, &m->key_len);
	n = take32(&c);
	/* Each header takes at least 6 bytes: a count beyond that is damage. */
	if (c.bad || n > c.left / 6)
		return SPOOL_REC_BAD_PAYLOAD;
	m->nhdrs = n;
	m->hdrs = hdrs;
	for (uint32_t i = 0; i < n; i++) {
		struct spool_hdr tmp;
		struct spool_hdr *out = i < max_hdrs ? &hdrs[i] : &tmp;
		out->name_len = take16(&c);
		out->name = (const char *)take(&c, out->name_len);
		take_nullable(&c, &out->value, &out->value_len);
	}
	m->value_len = take32(&c);
	m->value = (const char *)take(&c, m->value_len);
	if (c.bad || c.left != 0 || !m->topic)
		return SPOOL_REC_BAD_PAYLOAD;
	return SPOOL_REC_OK;
}

/*
 * KEY payload: accept time i64, hash[32], nrecs u32, scope, topic and key
 * (each u16 length and bytes), then nrecs ids of SPOOL_KEY_ID_LEN bytes.
 */
size_t spool_key_size(const struct spool_key *k)
{
	uint64_t n = 8 + SPOOL_KEY_HASH_LEN + 4 + 2 + 2 + 2;

	if (k->scope_len > SPOOL_KEY_MAX_STR || k->topic_len > SPOOL_KEY_MAX_STR ||
	    k->key_len > SPOOL_KEY_MAX_STR || k->nrecs == 0)
		return 0;
	n += k->scope_len + k->topic_len + k->key_len + (uint64_t)k->nrecs * SPOOL_KEY_ID_LEN;
	if (n > SPOOL_REC_MAX_PAYLOAD)
		return 0;
	return SPOOL_REC_HDR_SIZE + (size_t)n;
}

size_t spool_key_encode(const struct spool_key *k, void *buf)
{
	unsigned char *rec = buf;
	unsigned char *p = rec + SPOOL_REC_HDR_SIZE;
	size_t payload_len;

	put64(p, (uint64_t)k->timestamp_ms);
	p = put_bytes(p + 8, k->hash, SPOOL_KEY_HASH_LEN);
	put32(p, k->nrecs);
	put16(p + 4, (uint16_t)k->scope_len);
	p = put_bytes(p + 6, k->scope, k->scope_len);
	put16(p, (uint16_t)k->topic_len);
	p = put_bytes(p + 2, k->topic, k->topic_len);
	put16(p, (uint16_t)k->key_len);
	p = put_bytes(p + 2, k->key, k->key_len);
	p = put_bytes(p, k->ids, (size_t)k->nrecs * SPOOL_KEY_ID_LEN);

	payload_len = (size_t)(p - rec) - SPOOL_REC_HDR_SIZE;
	put32(rec + OFF_MAGIC, SPOOL_REC_MAGIC);
	rec[OFF_VERSION] = SPOOL_REC_VERSION;
	rec[OFF_TYPE] = SPOOL_REC_KEY;
	put16(rec + OFF_FLAGS, 0);
	put32(rec + OFF_LEN, (uint32_t)payload_len);
	put32(rec + OFF_PCRC, crc32c(0, rec + SPOOL_REC_HDR_SIZE, payload_len));
	spool_rec_set_seq(rec, 0);
	return (size_t)(p - rec);
}

/*
 * Ids are ackd-ids, Crockford base32 (publish.c): the answers that replay a
 * key print them without escaping, so anything else is damage.
 */
static bool ids_ok(const char *ids, size_t len)
{
	static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

	for (size_t i = 0; i < len; i++)
		if (ids[i] == '\0' || !strchr(alphabet, ids[i]))
			return false;
	return true;
}

enum spool_rec_status spool_key_decode(const void *buf, size_t len, struct spool_rec_hdr *h,
    struct spool_key *k)
{
	struct spool_rec_hdr local;
	enum spool_rec_status st;
	const unsigned char *hash;
	struct cur c;

	if (!h)
		h = &local;
	st = spool_rec_parse_hdr(buf, len, h);
	if (st != SPOOL_REC_OK)
		return st;
	c.p = (const unsigned char *)buf + SPOOL_REC_HDR_SIZE;
	c.left = h->payload_len;
	c.bad = 0;
	if (crc32c(0, c.p, c.left) != h->payload_crc)
		return SPOOL_REC_BAD_PAYLOAD_CRC;
	if (h->type != SPOOL_REC_KEY)
		return SPOOL_REC_BAD_PAYLOAD;
	memset(k, 0, sizeof(*k));
	k->timestamp_ms = (int64_t)take64(&c);
	hash = take(&c, SPOOL_KEY_HASH_LEN);
	if (hash)
		memcpy(k->hash, hash, SPOOL_KEY_HASH_LEN);
	k->nrecs = take32(&c);
	k->scope_len = take16(&c);
	k->scope = (const char *)take(&c, k->scope_len);
	k->topic_len = take16(&c);
	k->topic = (const char *)take(&c, k->topic_len);
	k->key_len = take16(&c);
	k->key = (const char *)take(&c, k->key_len);
	/* The ids are exactly what is left: a count that disagrees is damage. */
	if (c.bad || k->nrecs == 0 || c.left / SPOOL_KEY_ID_LEN != k->nrecs ||
	    c.left % SPOOL_KEY_ID_LEN != 0 || !k->scope || !k->topic || !k->key)
		return SPOOL_REC_BAD_PAYLOAD;
	k->ids = (const char *)take(&c, c.left);
	if (!ids_ok(k->ids, (size_t)k->nrecs * SPOOL_KEY_ID_LEN))
		return SPOOL_REC_BAD_PAYLOAD;
	/* A record takes at least a header: more records than that is damage. */
	if ((uint64_t)k->nrecs > h->seq)
		return SPOOL_REC_BAD_PAYLOAD;
	return SPOOL_REC_OK;
}

size_t spool_key_ack_encode(const struct spool_key_ack *a, uint64_t seq, void *buf)
{
	unsigned char *rec = buf;
	unsigned char *p = rec + SPOOL_REC_HDR_SIZE;

	put64(p, (uint64_t)a->timestamp_ms);
	p = put_bytes(p + 8, a->id, SPOOL_KEY_ID_LEN);
	put32(p, (uint32_t)a->partition);
	put64(p + 4, (uint64_t)a->offset);
	put32(rec + OFF_MAGIC, SPOOL_REC_MAGIC);
	rec[OFF_VERSION] = SPOOL_REC_VERSION;
	rec[OFF_TYPE] = SPOOL_REC_KEY_ACK;
	put16(rec + OFF_FLAGS, 0);
	put32(rec + OFF_LEN, SPOOL_KEY_ACK_PAYLOAD);
	put32(rec + OFF_PCRC, crc32c(0, rec + SPOOL_REC_HDR_SIZE, SPOOL_KEY_ACK_PAYLOAD));
	spool_rec_set_seq(rec, seq);
	return SPOOL_KEY_ACK_SIZE;
}

enum spool_rec_status spool_key_ack_decode(const void *buf, size_t len, struct spool_rec_hdr *h,
    struct spool_key_ack *a)
{
	struct spool_rec_hdr local;
	enum spool_rec_status st;
	const unsigned char *p = (const unsigned char *)buf + SPOOL_REC_HDR_SIZE;

	if (!h)
		h = &local;
	st = spool_rec_parse_hdr(buf, len, h);
	if (st != SPOOL_REC_OK)
		return st;
	if (crc32c(0, p, h->payload_len) != h->payload_crc)
		return SPOOL_REC_BAD_PAYLOAD_CRC;
	if (h->type != SPOOL_REC_KEY_ACK || h->payload_len != SPOOL_KEY_ACK_PAYLOAD)
		return SPOOL_REC_BAD_PAYLOAD;
	a->timestamp_ms = (int64_t)get64(p);
	memcpy(a->id, p + 8, SPOOL_KEY_ID_LEN);
	a->partition = (int32_t)get32(p + 8 + SPOOL_KEY_ID_LEN);
	a->offset = (int64_t)get64(p + 12 + SPOOL_KEY_ID_LEN);
	return SPOOL_REC_OK;
}

const char *spool_rec_status_str(enum spool_rec_status st)
{
	switch (st) {
	case SPOOL_REC_OK:
		return "ok";
	case SPOOL_REC_SHORT:
		return "truncated record";
	case SPOOL_REC_BAD_MAGIC:
		return "bad magic";
	case SPOOL_REC_BAD_HDR_CRC:
		return "bad header crc";
	case SPOOL_REC_BAD_VERSION:
		return "unknown record version";
	case SPOOL_REC_BAD_PAYLOAD_CRC:
		return "bad payload crc";
	case SPOOL_REC_BAD_PAYLOAD:
		return "malformed payload";
	case SPOOL_REC_BAD_SEQ:
		return "sequence out of place";
	}
	return "unknown status";
}

/* --- segment header, footer, ack entries ----------------------------------- */

/*
 * Segment header: magic[8] @0, version u32 @8, flags u32 @12 (0),
 * first_seq u64 @16, created_ms i64 @24, crc u32 @32 (CRC32C of 0..31),
 * reserved u32 @36 (0).
 */
void spool_seg_hdr_encode(void *buf, uint64_t first_seq, int64_t created_ms)
{
	unsigned char *p = buf;

	memcpy(p, SPOOL_SEG_MAGIC, 8);
	put32(p + 8, SPOOL_SEG_VERSION);
	put32(p + 12, 0);
	put64(p + 16, first_seq);
	put64(p + 24, (uint64_t)created_ms);
	put32(p + 32, crc32c(0, p, 32));
	put32(p + 36, 0);
}

int spool_seg_hdr_parse(const void *buf, size_t len, uint64_t *first_seq)
{
	const unsigned char *p = buf;

	if (len < SPOOL_SEG_HDR_SIZE || memcmp(p, SPOOL_SEG_MAGIC, 8) != 0)
		return -1;
	if (get32(p + 32) != crc32c(0, p, 32))
		return -1;
	if (get32(p + 8) == 0 || get32(p + 8) > SPOOL_SEG_VERSION)
		return -1;
	*first_seq = get64(p + 16);
	return 0;
}

/* Seal payload: first_seq, end_seq, nrecs, data_end (u64), min_ts (i64). */
void spool_seal_encode(void *buf, const struct spool_seal *s)
{
	unsigned char *rec = buf;
	unsigned char *p = rec + SPOOL_REC_HDR_SIZE;

	put64(p, s->first_seq);
	put64(p + 8, s->end_seq);
	put64(p + 16, s->nrecs);
	put64(p + 24, s->data_end);
	put64(p + 32, (uint64_t)s->min_ts);
	put32(rec + OFF_MAGIC, SPOOL_REC_MAGIC);
	rec[OFF_VERSION] = SPOOL_REC_VERSION;
	rec[OFF_TYPE] = SPOOL_REC_SEAL;
	put16(rec + OFF_FLAGS, 0);
	put32(rec + OFF_LEN, SPOOL_SEAL_PAYLOAD);
	put32(rec + OFF_PCRC, crc32c(0, p, SPOOL_SEAL_PAYLOAD));
	spool_rec_set_seq(rec, s->end_seq);
}

int spool_seal_parse(const void *buf, struct spool_seal *out)
{
	const unsigned char *p = (const unsigned char *)buf + SPOOL_REC_HDR_SIZE;
	struct spool_rec_hdr h;

	if (spool_rec_parse_hdr(buf, SPOOL_SEAL_SIZE, &h) != SPOOL_REC_OK)
		return -1;
	if (h.type != SPOOL_REC_SEAL || h.payload_len != SPOOL_SEAL_PAYLOAD ||
	    crc32c(0, p, SPOOL_SEAL_PAYLOAD) != h.payload_crc)
		return -1;
	out->first_seq = get64(p);
	out->end_seq = get64(p + 8);
	out->nrecs = get64(p + 16);
	out->data_end = get64(p + 24);
	out->min_ts = (int64_t)get64(p + 32);
	if (out->end_seq < out->first_seq || out->end_seq != h.seq)
		return -1;
	return 0;
}

/* Ack entry: seq u64 @0, crc u32 @8 (CRC32C of bytes 0..7). */
void spool_ack_entry_encode(void *buf, uint64_t seq)
{
	unsigned char *p = buf;

	put64(p, seq);
	put32(p + 8, crc32c(0, p, 8));
}

int spool_ack_entry_parse(const void *buf, uint64_t *seq)
{
	const unsigned char *p = buf;

	if (get32(p + 8) != crc32c(0, p, 8))
		return -1;
	*seq = get64(p);
	return 0;
}
