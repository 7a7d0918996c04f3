/*
 * spool_oracle: messages derived from a number, checked field by field, and
 * the index of records a crashfs trace wrote (see spool_oracle.h).
 *
 * Threads: the test's.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crashfs.h"
#include "spool_oracle.h"

#define EVIL_PAD_FRONT 700
#define EVIL_PAD_BACK 1800

struct tmsg {
	char topic[8];
	char key[24];
	char id[24];
	unsigned char *value;
	size_t value_len;
	struct spool_hdr hdr;
	struct spool_msg m;
};

static uint32_t mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

/* Mostly small values, some spanning several 512-byte sectors. */
static size_t value_len(uint32_t n)
{
	uint32_t h = mix(n);

	switch (h % 10) {
	case 0:
		return 700 + h / 10 % 1000;
	case 1:
	case 2:
		return 200 + h / 10 % 500;
	default:
		return 8 + h / 10 % 200;
	}
}

/* The record embedded in an evil message's value: another topic, sequence 2^40. */
static size_t evil_inner(unsigned char *buf)
{
	static const char v[] = "forged";
	struct spool_hdr h = { "ackd-id", 7, "forged", 6 };
	struct spool_msg m = { .topic = "evil", .topic_len = 4, .partition = 0, .key = NULL,
		.value = v, .value_len = sizeof(v) - 1, .hdrs = &h, .nhdrs = 1,
		.timestamp_ms = 1700000000000 };
	size_t len = spool_rec_size(&m);

	if (buf) {
		spool_rec_encode(&m, buf);
		spool_rec_set_seq(buf, ORACLE_EVIL_SEQ);
	}
	return len;
}

static int tmsg_make(struct tmsg *t, uint32_t n)
{
	size_t prefix;

	memset(t, 0, sizeof(*t));
	snprintf(t->topic, sizeof(t->topic), "t%u", n % 3);
	snprintf(t->key, sizeof(t->key), "k%u", n);
	snprintf(t->id, sizeof(t->id), "id-%u", n);
	if (n >= ORACLE_EVIL)
		t->value_len = EVIL_PAD_FRONT + evil_inner(NULL) + EVIL_PAD_BACK;
	else
		t->value_len = value_len(n);
	t->value = malloc(t->value_len + 32);
	if (!t->value)
		return -1;
	prefix = (size_t)snprintf((char *)t->value, 32, "m%u:", n);
	if (t->value_len < prefix)
		t->value_len = prefix;
	for (size_t i = prefix; i < t->value_len; i++)
		t->value[i] = (unsigned char)('a' + (n * 7 + i * 13) % 26);
	if (n >= ORACLE_EVIL)
		evil_inner(t->value + EVIL_PAD_FRONT);
	t->hdr = (struct spool_hdr){ "ackd-id", 7, t->id, strlen(t->id) };
	t->m = (struct spool_msg){
		.topic = t->topic,
		.topic_len = strlen(t->topic),
		.partition = (int32_t)(n % 4) - 1,
		.key = n % 5 ? t->key : NULL,
		.key_len = n % 5 ? strlen(t->key) : 0,
		.value = (const char *)t->value,
		.value_len = t->value_len,
		.hdrs = &t->hdr,
		.nhdrs = 1,
		.timestamp_ms = 1700000000000 + n,
	};
	return 0;
}

int oracle_add(struct spool_batch *b, uint32_t n)
{
	struct tmsg t;
	int rc;

	if (tmsg_make(&t, n) < 0)
		return -1;
	rc = spool_batch_add(b, &t.m);
	free(t.value);
	return rc;
}

static bool same(const void *a, size_t alen, const void *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

int oracle_check(const struct spool_msg *m, uint32_t *n, char *why, size_t len)
{
	return oracle_check_as(m, false, n, why, len);
}

int oracle_check_as(const struct spool_msg *m, bool failed, uint32_t *n, char *why, size_t len)
{
	char head[24];
	unsigned long v;
	struct tmsg t;
	size_t hl = m->value_len < sizeof(head) - 1 ? m->value_len : sizeof(head) - 1;
	int rc = -1;

	memcpy(head, m->value, hl);
	head[hl] = 0;
	if (sscanf(head, "m%lu:", &v) != 1 || v > UINT32_MAX) {
		snprintf(why, len, "value \"%.12s\" names no message (topic %.*s)", head,
		    (int)(m->topic_len < 16 ? m->topic_len : 16), m->topic);
		return -1;
	}
	*n = (uint32_t)v;
	if (tmsg_make(&t, *n) < 0) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	if (!same(m->topic, m->topic_len, t.m.topic, t.m.topic_len))
		snprintf(why, len, "message %u: topic differs", *n);
	else if (m->partition != t.m.partition)
		snprintf(why, len, "message %u: partition differs", *n);
	else if ((m->key == NULL) != (t.m.key == NULL) || !same(m->key, m->key_len, t.m.key, t.m.key_len))
		snprintf(why, len, "message %u: key differs", *n);
	else if (!same(m->value, m->value_len, t.m.value, t.m.value_len))
		snprintf(why, len, "message %u: value differs", *n);
	else if (m->nhdrs != 1u + failed || !spool_hdr_is(&m->hdrs[0], "ackd-id") ||
	    !same(m->hdrs[0].value, m->hdrs[0].value_len, t.id, strlen(t.id)))
		snprintf(why, len, "message %u: headers differ", *n);
	else if (failed && !spool_hdr_is(&m->hdrs[1], SPOOL_HDR_FAILED_REASON))
		snprintf(why, len, "message %u: no %s header", *n, SPOOL_HDR_FAILED_REASON);
	else if (m->timestamp_ms != t.m.timestamp_ms)
		snprintf(why, len, "message %u: timestamp differs", *n);
	else
		rc = 0;
	free(t.value);
	return rc;
}

static bool is_segment(const char *path)
{
	size_t l = strlen(path);

	return (strncmp(path, "seg-", 4) == 0 && l > 6 && strcmp(path + l - 6, ".spool") == 0) ||
	    (strncmp(path, ".seg-", 5) == 0 && l > 4 && strcmp(path + l - 4, ".tmp") == 0);
}

void oracle_index(size_t from, size_t to, struct oracle_wrec **v, size_t *nv, size_t *cap)
{
	struct spool_hdr hdrs[8];

	for (size_t i = from; i < to; i++) {
		struct crashfs_op opc, *op = &opc;
		size_t off = 0;

		if (!crashfs_op(i, op) || op->type != CFS_WRITE || !is_segment(op->path))
			continue;
		while (op->len - off >= SPOOL_REC_HDR_SIZE) {
			struct spool_rec_hdr h;
			struct spool_msg m;
			uint32_t n;
			char why[128];
			const unsigned char *p = op->data + off;
			if (spool_rec_parse_hdr(p, op->len - off, &h) != SPOOL_REC_OK)
				break;
			off += SPOOL_REC_HDR_SIZE + h.payload_len;
			if (h.type != SPOOL_REC_MSG)
				continue;
			if (spool_rec_decode(p, SPOOL_REC_HDR_SIZE + h.payload_len, NULL, &m, hdrs, 8) !=
			        SPOOL_REC_OK ||
			    oracle_check(&m, &n, why, sizeof(why)) < 0)
				continue; /* not one of ours: found as a violation when handed out */
			if (*nv == *cap) {
				*cap = *cap ? *cap * 2 : 1024;
				*v = realloc(*v, *cap * sizeof(**v));
				if (!*v)
					abort();
			}
			(*v)[(*nv)++] = (struct oracle_wrec){ h.seq, n, (h.flags & SPOOL_REC_F_COPY) != 0, i };
		}
	}
}
