/*
 * publish: publish requests validated and turned into spool messages.
 *
 * Pure logic: http.c hands in the path topic, the query values, the request
 * headers and the body; publish returns a struct publish_req whose messages
 * are ready for spool_append(), or -1 with a message for a 400 (413 for a
 * batch over the record limit). The only system call is getrandom(2), once,
 * to seed the ids. Runs on whichever libmicrohttpd thread handles the request;
 * the id generator is the only shared state and has its own mutex.
 *
 * Ownership: a publish_req carries an arena, a list of malloc'd blocks that
 * holds the messages, their headers and their ids. The payload bytes are not
 * copied there (the spool batch copies them once, when it encodes): a
 * single message's value points into the request body, which the caller
 * keeps until publish_req_free(), and so do the unescaped strings of a
 * batch of the plain shape (plain_batch()); any other batch keeps its parsed
 * JSON document, whose strings the messages point into, and
 * publish_req_free() releases it with the arena.
 *
 * Ids are ULIDs (Crockford base32 of 48 bits of milliseconds and 80 bits of
 * "randomness"). The 80 bits are random once per process and then counted up
 * by one for every id, and the millisecond part never goes backwards, so ids
 * sort by creation and never repeat within a process, even many in one
 * millisecond or when the wall clock steps back.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "log.h"
#include "publish.h"
#include "util.h"

#define TOPIC_MAX_LEN 249
#define KAFKA_HDR_PREFIX "kafka-header-"

/* --- arena ---------------------------------------------------------------- */

/*
 * Small allocations share blocks of ARENA_BLOCK bytes; anything over a
 * quarter of that (a large value) gets a block of its own, so a 1 MiB body
 * costs one malloc of its size and the current block stays in use.
 */
#define ARENA_BLOCK 16384

struct arena_block {
	struct arena_block *next;
	size_t used;
	size_t cap;
	unsigned char data[];
};

/* The public struct first, so a struct publish_req * is a struct req *. */
struct req {
	struct publish_req pub;
	struct arena_block *blocks; /* the head is the one small allocations use */
	json_t *root;               /* a batch: the document its strings point into */
};

static struct arena_block *block_new(size_t cap)
{
	struct arena_block *b;

	if (cap > SIZE_MAX - sizeof(*b))
		return NULL;
	b = malloc(sizeof(*b) + cap);
	if (b == NULL)
		return NULL;
	b->next = NULL;
	b->used = 0;
	b->cap = cap;
	return b;
}

/* size bytes aligned to align (a power of two), or NULL when out of memory. */
static void *arena_alloc(struct req *q, size_t size, size_t align)
{
	struct arena_block *b = q->blocks;
	size_t pad = 0;

	if (b != NULL)
		pad = -(uintptr_t)(b->data + b->used) & (align - 1);
	if (b == NULL || pad + size > b->cap - b->used) {
		if (size > SIZE_MAX - align)
			return NULL;
		if (size > ARENA_BLOCK / 4 && b != NULL) {
			/* A block of its own, behind the head. */
			struct arena_block *big = block_new(size + align);
			if (big == NULL)
				return NULL;
			big->next = b->next;
			b->next = big;
			b = big;
		} else {
			b = block_new(size + align > ARENA_BLOCK ? size + align : ARENA_BLOCK);
			if (b == NULL)
				return NULL;
			b->next = q->blocks;
			q->blocks = b;
		}
		pad = -(uintptr_t)(b->data + b->used) & (align - 1);
	}
	b->used += pad;
	void *p = b->data + b->used;
	b->used += size;
	return p;
}

/* An array of n elements of size each, aligned for any type. */
static void *arena_array(struct req *q, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		return NULL;
	return arena_alloc(q, n * size, _Alignof(max_align_t));
}

/* A copy of len bytes plus a NUL, so copies are also C strings. */
static char *arena_dup(struct req *q, const char *s, size_t len)
{
	char *p;

	if (len == SIZE_MAX)
		return NULL;
	p = arena_alloc(q, len + 1, 1);
	if (p == NULL)
		return NULL;
	if (len > 0)
		memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

static struct req *req_new(void)
{
	return calloc(1, sizeof(struct req));
}

static void req_free(struct req *q)
{
	if (q == NULL)
		return;
	while (q->blocks != NULL) {
		struct arena_block *next = q->blocks->next;
		free(q->blocks);
		q->blocks = next;
	}
	json_decref(q->root);
	free(q);
}

void publish_req_free(struct publish_req *r)
{
	req_free((struct req *)r);
}

static void nomem(char *err, size_t errlen)
{
	snprintf(err, errlen, "out of memory");
}

/* msgs, ids and the shared topic copy for n messages. */
static int req_alloc_msgs(struct req *q, size_t n, const char *topic, size_t topic_len,
    const char **topic_copy)
{
	q->pub.msgs = arena_array(q, n, sizeof(*q->pub.msgs));
	q->pub.ids = arena_array(q, n, sizeof(*q->pub.ids));
	*topic_copy = arena_dup(q, topic, topic_len);
	if (q->pub.msgs == NULL || q->pub.ids == NULL || *topic_copy == NULL)
		return -1;
	memset(q->pub.msgs, 0, n * sizeof(*q->pub.msgs));
	q->pub.n = n;
	return 0;
}

/* --- topics, partitions, ack ------------------------------------------------ */

int publish_topic_valid(const char *topic, size_t len)
{
	if (topic == NULL || len == 0 || len > TOPIC_MAX_LEN)
		return 0;
	if ((len == 1 && topic[0] == '.') || (len == 2 && topic[0] == '.' && topic[1] == '.'))
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)topic[i];
		int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '_' || c == '-';
		if (!ok)
			return 0;
	}
	return 1;
}

int publish_topic_allowed(const struct conf_strlist *patterns, const char *topic)
{
	if (patterns == NULL || patterns->n == 0)
		return 1;
	for (size_t i = 0; i < patterns->n; i++) {
		if (fnmatch(patterns->v[i], topic, 0) == 0)
			return 1;
	}
	return 0;
}

int publish_parse_partition(const char *s, int32_t *out)
{
	int64_t v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > INT32_MAX)
			return -1;
	}
	*out = (int32_t)v;
	return 0;
}

int publish_parse_ack(const char *s, enum conf_ack *out)
{
	if (s == NULL)
		return -1;
	if (strcmp(s, "kafka") == 0) {
		*out = CONF_ACK_KAFKA;
		return 0;
	}
	if (strcmp(s, "spool") == 0) {
		*out = CONF_ACK_SPOOL;
		return 0;
	}
	return -1;
}

/* --- ids -------------------------------------------------------------------- */

static const char crockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

static pthread_mutex_t id_lock = PTHREAD_MUTEX_INITIALIZER;
static int id_seeded;
static uint64_t id_ms;      /* the last id's milliseconds, 48 bits */
static uint16_t id_rand_hi; /* the last id's 80-bit counter: hi:lo */
static uint64_t id_rand_lo;

static void id_seed(void)
{
	unsigned char buf[10];
	size_t got = 0;

	while (got < sizeof(buf)) {
		ssize_t n = getrandom(buf + got, sizeof(buf) - got, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got < sizeof(buf)) {
		/*
		 * Uniqueness within the process comes from the counter; the seed
		 * only keeps processes apart. Without getrandom, the time and pid
		 * still do that well enough to keep running.
		 */
		struct timespec ts;
		log_warn("getrandom for the id seed failed, seeding from time and pid");
		ts = clock_now(CLOCK_MONOTONIC);
		uint64_t mix = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15u ^ (uint64_t)ts.tv_sec ^
		    (uint64_t)getpid() << 32;
		memcpy(buf, &mix, sizeof(mix));
		buf[8] = (unsigned char)(mix >> 13);
		buf[9] = (unsigned char)(mix >> 29);
	}
	id_rand_hi = (uint16_t)(buf[0] << 8 | buf[1]);
	id_rand_lo = 0;
	for (int i = 2; i < 10; i++)
		id_rand_lo = id_rand_lo << 8 | buf[i];
	id_seeded = 1;
}

/* The 5 bits of the 80-bit hi:lo whose lowest bit is bit `shift`. */
static unsigned rand_bits5(uint16_t hi, uint64_t lo, unsigned shift)
{
	if (shift >= 64)
		return (unsigned)(hi >> (shift - 64)) & 31;
	if (shift + 5 <= 64)
		return (unsigned)(lo >> shift) & 31;
	return (unsigned)((lo >> shift) | ((uint64_t)hi << (64 - shift))) & 31;
}

void publish_id_new_at(int64_t now_ms, char out[PUBLISH_ID_LEN + 1])
{
	uint64_t ms, lo;
	uint16_t hi;

	if (now_ms < 0)
		now_ms = 0;
	pthread_mutex_lock(&id_lock);
	if (!id_seeded)
		id_seed();
	if ((uint64_t)now_ms > id_ms)
		id_ms = (uint64_t)now_ms & 0xffffffffffffu;
	if (++id_rand_lo == 0 && ++id_rand_hi == 0)
		id_ms++; /* the counter wrapped: move on to the next millisecond */
	ms = id_ms;
	hi = id_rand_hi;
	lo = id_rand_lo;
	pthread_mutex_unlock(&id_lock);

	/* 48 bits of time in 10 characters (the first carries 3), 80 in 16. */
	for (int i = 0; i < 10; i++)
		out[i] = crockford[(ms >> (45 - 5 * i)) & 31];
	for (int i = 0; i < 16; i++)
		out[10 + i] = crockford[rand_bits5(hi, lo, (unsigned)(75 - 5 * i))];
	out[PUBLISH_ID_LEN] = '\0';
}

int64_t publish_id_time_ms(const char *id, size_t len)
{
	uint64_t ms = 0;

	if (len < 10)
		return -1;
	for (int i = 0; i < 10; i++) {
		const char *c = memchr(crockford, id[i], 32);
		if (c == NULL || (i == 0 && c - crockford > 7))
			return -1;
		ms = ms << 5 | (uint64_t)(c - crockford);
	}
	return (int64_t)ms;
}

void publish_id_new(char out[PUBLISH_ID_LEN + 1])
{
	struct timespec ts;

	ts = clock_now(CLOCK_REALTIME);
	publish_id_new_at((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, out);
}

/* --- messages ----------------------------------------------------------------- */

/*
 * A field name for an error message: at most 64 bytes of valid UTF-8 (never
 * a character cut in half), quotes and backslashes shown as '?'.
 */
static void name_for_err(char *dst, size_t dstlen, const char *s, size_t len)
{
	size_t n = utf8_clean(dst, dstlen < 65 ? dstlen : 65, s, len);

	for (size_t i = 0; i < n; i++)
		if (dst[i] == '"' || dst[i] == '\\')
			dst[i] = '?';
}


/*
 * A Kafka header name a client sent: 1-PUBLISH_MAX_HDR_NAME bytes of valid
 * UTF-8 without control characters. They travel on as webhook request
 * headers and into logs, where CR, LF or NUL would do harm. NULL when fine,
 * else the reason.
 */
static const char *hdr_name_problem(const char *name, size_t len)
{
	char clean[PUBLISH_MAX_HDR_NAME + 1];

	if (len == 0)
		return "empty header name";
	if (len > PUBLISH_MAX_HDR_NAME)
		return "header name longer than " PUBLISH_MAX_HDR_NAME_TEXT " bytes";
	if (utf8_clean(clean, sizeof(clean), name, len) != len || memcmp(clean, name, len) != 0)
		return "header name is not UTF-8 text without control characters";
	return NULL;
}

/*
 * Whether message i fits in one spool record (SPOOL_REC_MAX_PAYLOAD with its
 * topic, key and headers): the spool cannot take a larger one, and finding
 * that out only when the batch is written would answer 2xx for it.
 */
static int msg_fits(const struct spool_msg *m)
{
	return spool_rec_size(m) != 0;
}

/* Fill message i's common fields and its id; hdrs[nhdrs] becomes "ackd-id". */
static void msg_finish(struct req *q, size_t i, const char *topic, size_t topic_len,
    struct spool_hdr *hdrs, size_t nhdrs, int64_t now_ms)
{
	struct spool_msg *m = &q->pub.msgs[i];

	publish_id_new(q->pub.ids[i]);
	hdrs[nhdrs].name = SPOOL_HDR_ID;
	hdrs[nhdrs].name_len = strlen(SPOOL_HDR_ID);
	hdrs[nhdrs].value = q->pub.ids[i];
	hdrs[nhdrs].value_len = PUBLISH_ID_LEN;
	m->topic = topic;
	m->topic_len = topic_len;
	m->hdrs = hdrs;
	m->nhdrs = nhdrs + 1;
	m->timestamp_ms = now_ms;
}

static int is_id_hdr(const char *name, size_t len)
{
	return len == strlen(SPOOL_HDR_ID) && strncasecmp(name, SPOOL_HDR_ID, len) == 0;
}

int publish_single(const char *topic, const char *key, size_t key_len, int32_t partition,
    const struct publish_http_hdr *hdrs, size_t nhdrs, const char *body, size_t body_len,
    int64_t now_ms, struct publish_req **out, int *too_large, char *err, size_t errlen)
{
	const size_t prefix_len = strlen(KAFKA_HDR_PREFIX);
	struct req *q = NULL;
	struct spool_msg *m;
	struct spool_hdr *kh;
	const char *topic_copy;
	size_t nkh = 0;

	*out = NULL;
	*too_large = 0;
	/* What a failed allocation leaves; every other failure overwrites it. */
	nomem(err, errlen);
	if (topic == NULL || !publish_topic_valid(topic, strlen(topic))) {
		snprintf(err, errlen, "invalid topic name");
		goto fail;
	}
	if (partition < -1) {
		snprintf(err, errlen, "partition %d out of range", (int)partition);
		goto fail;
	}
	q = req_new();
	if (q == NULL || req_alloc_msgs(q, 1, topic, strlen(topic), &topic_copy) < 0)
		goto fail;
	m = &q->pub.msgs[0];
	/* At most one Kafka header per request header, plus "ackd-id". */
	kh = arena_array(q, nhdrs + 1, sizeof(*kh));
	if (kh == NULL)
		goto fail;

	for (size_t i = 0; i < nhdrs; i++) {
		const char *name = hdrs[i].name;
		const char *value = hdrs[i].value != NULL ? hdrs[i].value : "";
		char *kname;
		size_t kname_len;

		if (name == NULL)
			continue;
		if (strcasecmp(name, "content-type") == 0) {
			kname = arena_dup(q, "content-type", strlen("content-type"));
			kname_len = strlen("content-type");
		} else if (strncasecmp(name, KAFKA_HDR_PREFIX, prefix_len) == 0) {
			const char *problem;
			char shown[80];

			kname_len = strlen(name) - prefix_len;
			name_for_err(shown, sizeof(shown), name, strlen(name));
			if (kname_len == 0) {
				snprintf(err, errlen, "header %s: empty kafka header name", shown);
				goto fail;
			}
			problem = hdr_name_problem(name + prefix_len, kname_len);
			if (problem != NULL) {
				snprintf(err, errlen, "header %s: %s", shown, problem);
				goto fail;
			}
			if (is_id_hdr(name + prefix_len, kname_len)) {
				snprintf(err, errlen, "header %s: ackd-id is set by ackd", shown);
				goto fail;
			}
			kname = arena_dup(q, name + prefix_len, kname_len);
			if (kname != NULL) {
				for (size_t j = 0; j < kname_len; j++)
					kname[j] = (char)tolower((unsigned char)kname[j]);
			}
		} else {
			continue;
		}
		kh[nkh].name = kname;
		kh[nkh].name_len = kname_len;
		kh[nkh].value = arena_dup(q, value, strlen(value));
		kh[nkh].value_len = strlen(value);
		if (kh[nkh].name == NULL || kh[nkh].value == NULL)
			goto fail;
		nkh++;
	}

	m->partition = partition;
	if (key != NULL) {
		m->key = arena_dup(q, key, key_len);
		m->key_len = key_len;
		if (m->key == NULL)
			goto fail;
	}
	m->value = body != NULL ? body : ""; /* borrowed: the caller keeps the body */
	m->value_len = body_len;
	msg_finish(q, 0, topic_copy, strlen(topic), kh, nkh, now_ms);
	if (!msg_fits(m)) {
		snprintf(err, errlen, "the message with its key and headers is larger than a spool "
		    "record can hold (%u bytes)", SPOOL_REC_MAX_PAYLOAD);
		*too_large = 1;
		goto fail;
	}
	*out = &q->pub;
	return 0;

fail:
	req_free(q);
	return -1;
}

/* --- batch ------------------------------------------------------------------- */

/*
 * The fewest %g digits (at most 17) that give the real back exactly, for
 * every real in v. jansson prints reals with 17 digits unless told, which
 * turns 0.1 into 0.10000000000000001; with this precision 0.1 stays 0.1 and
 * no value changes.
 */
static int real_precision(const json_t *v)
{
	int prec = 1;

	if (json_is_real(v)) {
		double d = json_real_value(v);
		char buf[32];
		for (prec = 1; prec < 17; prec++) {
			snprintf(buf, sizeof(buf), "%.*g", prec, d);
			if (strtod(buf, NULL) == d)
				break;
		}
	} else if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) {
			int p = real_precision(e);
			if (p > prec)
				prec = p;
		}
	} else if (json_is_object(v)) {
		const char *k;
		json_t *e;
		json_object_foreach((json_t *)v, k, e) {
			int p = real_precision(e);
			if (p > prec)
				prec = p;
		}
	}
	return prec;
}

/* v as compact JSON text with reals as short as they go (malloc'd), or NULL. */
static char *json_text(const json_t *v)
{
	return json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(real_precision(v)));
}

static int key_is(const char *k, size_t klen, const char *name)
{
	return klen == strlen(name) && memcmp(k, name, klen) == 0;
}

/* A string field (borrowed from the document) or a base64 one (decoded into the arena). */
static int field_bytes(struct req *q, size_t idx, const char *field, const json_t *v, int b64,
    const char **out, size_t *out_len, char *err, size_t errlen)
{
	const char *s = json_string_value(v);
	size_t len = json_string_length(v);

	if (s == NULL) {
		snprintf(err, errlen, "records[%zu].%s: not a string", idx, field);
		return -1;
	}
	if (!b64) {
		*out = s;
		*out_len = len;
	} else {
		unsigned char *buf = arena_alloc(q, len / 4 * 3 + 1, 1);
		if (buf != NULL && base64_decode(s, len, BASE64_STRICT, buf, len / 4 * 3, out_len) < 0) {
			snprintf(err, errlen, "records[%zu].%s: invalid base64", idx, field);
			return -1;
		}
		*out = (const char *)buf;
	}
	if (*out == NULL) {
		nomem(err, errlen);
		return -1;
	}
	return 0;
}

static int batch_headers(struct req *q, size_t idx, const json_t *obj, struct spool_hdr **out,
    size_t *nout, char *err, size_t errlen)
{
	struct spool_hdr *hdrs;
	const char *name;
	size_t name_len;
	json_t *v;
	size_t n = 0;
	char shown[80];

	if (obj != NULL && json_object_size(obj) > PUBLISH_MAX_HEADERS) {
		snprintf(err, errlen, "records[%zu].headers: %zu headers, more than %d", idx,
		    json_object_size(obj), PUBLISH_MAX_HEADERS);
		return -1;
	}
	/* One more for "ackd-id". */
	hdrs = arena_array(q, (obj != NULL ? json_object_size(obj) : 0) + 1, sizeof(*hdrs));
	if (hdrs == NULL) {
		nomem(err, errlen);
		return -1;
	}
	if (obj != NULL) {
		json_object_keylen_foreach((json_t *)obj, name, name_len, v) {
			name_for_err(shown, sizeof(shown), name, name_len);
			if (name_len == 0) {
				snprintf(err, errlen, "records[%zu].headers: empty header name", idx);
				return -1;
			}
			if (memchr(name, '\0', name_len) != NULL) {
				snprintf(err, errlen, "records[%zu].headers.%s: nul byte in header name",
				    idx, shown);
				return -1;
			}
			if (hdr_name_problem(name, name_len) != NULL) {
				snprintf(err, errlen, "records[%zu].headers.%s: %s", idx, shown,
				    hdr_name_problem(name, name_len));
				return -1;
			}
			if (is_id_hdr(name, name_len)) {
				snprintf(err, errlen, "records[%zu].headers.%s: ackd-id is set by ackd",
				    idx, shown);
				return -1;
			}
			if (!json_is_string(v)) {
				snprintf(err, errlen, "records[%zu].headers.%s: not a string", idx,
				    shown);
				return -1;
			}
			hdrs[n].name = name; /* borrowed from the document */
			hdrs[n].name_len = name_len;
			hdrs[n].value = json_string_value(v);
			hdrs[n].value_len = json_string_length(v);
			n++;
		}
	}
	*out = hdrs;
	*nout = n;
	return 0;
}

/* Record idx of the batch into msgs[idx]; *too_large for a 413. */
static int batch_record(struct req *q, size_t idx, const json_t *rec, const char *topic,
    size_t topic_len, int64_t now_ms, int *too_large, char *err, size_t errlen)
{
	struct spool_msg *m = &q->pub.msgs[idx];
	json_t *value = NULL, *value_b64 = NULL, *key = NULL, *key_b64 = NULL;
	json_t *headers = NULL, *partition = NULL;
	struct spool_hdr *hdrs;
	size_t nhdrs;
	const char *k;
	size_t klen;
	json_t *v;

	if (!json_is_object(rec)) {
		snprintf(err, errlen, "records[%zu]: not an object", idx);
		return -1;
	}
	json_object_keylen_foreach((json_t *)rec, k, klen, v) {
		if (key_is(k, klen, "value"))
			value = v;
		else if (key_is(k, klen, "value_b64"))
			value_b64 = v;
		else if (key_is(k, klen, "key"))
			key = v;
		else if (key_is(k, klen, "key_b64"))
			key_b64 = v;
		else if (key_is(k, klen, "headers"))
			headers = v;
		else if (key_is(k, klen, "partition"))
			partition = v;
		else {
			char shown[80];
			name_for_err(shown, sizeof(shown), k, klen);
			snprintf(err, errlen, "records[%zu]: unknown field \"%s\"", idx, shown);
			return -1;
		}
	}

	if (value != NULL && value_b64 != NULL) {
		snprintf(err, errlen, "records[%zu]: both value and value_b64", idx);
		return -1;
	}
	if (value == NULL && value_b64 == NULL) {
		snprintf(err, errlen, "records[%zu]: missing value or value_b64", idx);
		return -1;
	}
	if (key != NULL && key_b64 != NULL) {
		snprintf(err, errlen, "records[%zu]: both key and key_b64", idx);
		return -1;
	}

	if (value_b64 != NULL) {
		if (field_bytes(q, idx, "value_b64", value_b64, 1, &m->value, &m->value_len, err,
			errlen) < 0)
			return -1;
	} else if (json_is_string(value)) {
		if (field_bytes(q, idx, "value", value, 0, &m->value, &m->value_len, err, errlen) < 0)
			return -1;
	} else {
		char *text = json_text(value);
		if (text != NULL) {
			m->value_len = strlen(text);
			m->value = arena_dup(q, text, m->value_len);
			free(text);
		}
		if (m->value == NULL) {
			nomem(err, errlen);
			return -1;
		}
	}

	if (key != NULL &&
	    field_bytes(q, idx, "key", key, 0, &m->key, &m->key_len, err, errlen) < 0)
		return -1;
	if (key_b64 != NULL &&
	    field_bytes(q, idx, "key_b64", key_b64, 1, &m->key, &m->key_len, err, errlen) < 0)
		return -1;

	m->partition = -1;
	if (partition != NULL) {
		json_int_t p = json_is_integer(partition) ? json_integer_value(partition) : -1;
		if (p < 0 || p > INT32_MAX) {
			snprintf(err, errlen, "records[%zu].partition: not an integer in 0..%d", idx,
			    INT32_MAX);
			return -1;
		}
		m->partition = (int32_t)p;
	}

	if (headers != NULL && !json_is_object(headers)) {
		snprintf(err, errlen, "records[%zu].headers: not an object", idx);
		return -1;
	}
	if (batch_headers(q, idx, headers, &hdrs, &nhdrs, err, errlen) < 0)
		return -1;
	msg_finish(q, idx, topic, topic_len, hdrs, nhdrs, now_ms);
	if (!msg_fits(m)) {
		snprintf(err, errlen, "records[%zu]: larger with its key and headers than a spool "
		    "record can hold (%u bytes)", idx, SPOOL_REC_MAX_PAYLOAD);
		*too_large = 1;
		return -1;
	}
	return 0;
}

/* --- batches of the plain shape, parsed without jansson ---------------------- */

/*
 * Most batches are plain: {"records":[...]} whose records hold a "value" or
 * "value_b64" string, perhaps a "key" or "key_b64" string, a "partition"
 * integer and a "headers" object of strings, each field once. plain_batch()
 * reads exactly that shape in one pass without building a document:
 * jansson's objects cost about 2 us a record, more than the rest of a batch's
 * way to the spool. Strings without escapes are borrowed from the body,
 * which the caller keeps until publish_req_free(); escaped ones are decoded
 * into the arena.
 *
 * Anything else gives up: another field or type, a duplicate field or
 * header, a limit, a malformed or non-UTF-8 byte. The general parser then
 * reads the body again and decides, so its messages and errors are the only
 * ones a client sees. Where the plain parser answers, its messages equal the
 * general parser's (tests/fuzz/fuzz_publish_batch.c checks both on every
 * input).
 */
struct plain {
	const char *p, *end;
	struct req *q;
};

/* One record as read; its headers are in the arena with room for "ackd-id". */
struct plain_rec {
	const char *value, *key;
	size_t value_len, key_len;
	int32_t partition;
	struct spool_hdr *hdrs;
	size_t nhdrs;
};

static void plain_ws(struct plain *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

/* Steps over c, the next byte after blanks; false when it is another. */
static bool plain_char(struct plain *s, char c)
{
	plain_ws(s);
	if (s->p == s->end || *s->p != c)
		return false;
	s->p++;
	return true;
}

/*
 * The length of the UTF-8 character at p (n bytes there), 0 when it is not
 * one jansson takes: no overlong form, surrogate or code point past U+10FFFF.
 */
static size_t utf8_char_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xBF;
	size_t len;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		len = 2;
	else if (p[0] >= 0xE0 && p[0] <= 0xEF)
		len = 3;
	else if (p[0] >= 0xF0 && p[0] <= 0xF4)
		len = 4;
	else
		return 0;
	if (p[0] == 0xE0)
		lo = 0xA0; /* overlong */
	else if (p[0] == 0xED)
		hi = 0x9F; /* surrogates */
	else if (p[0] == 0xF0)
		lo = 0x90; /* overlong */
	else if (p[0] == 0xF4)
		hi = 0x8F; /* past U+10FFFF */
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < len; i++)
		if ((p[i] & 0xC0) != 0x80)
			return 0;
	return len;
}

/* The four hex digits at p (end bounds them) as a number, -1 when they are not. */
static int32_t hex4(const char *p, const char *end)
{
	int32_t v = 0;

	if (end - p < 4)
		return -1;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 :
		    c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

static char *put_utf8(char *o, uint32_t cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xC0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xE0 | cp >> 12);
		*o++ = (char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (char)(0x80 | (cp & 0x3F));
	} else {
		*o++ = (char)(0xF0 | cp >> 18);
		*o++ = (char)(0x80 | (cp >> 12 & 0x3F));
		*o++ = (char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (char)(0x80 | (cp & 0x3F));
	}
	return o;
}

/*
 * The string between p and end (quotes excluded) with its escapes decoded
 * into the arena; never longer than its text. False for a bad escape or a
 * lone surrogate.
 */
static bool plain_unescape(struct req *q, const char *p, const char *end, const char **out,
    size_t *len)
{
	char *buf = arena_alloc(q, (size_t)(end - p) + 1, 1), *o = buf;

	if (buf == NULL)
		return false;
	while (p < end) {
		int32_t cp, low;

		if (*p != '\\') {
			*o++ = *p++;
			continue;
		}
		p++;
		switch (*p++) {
		case '"':  *o++ = '"'; break;
		case '\\': *o++ = '\\'; break;
		case '/':  *o++ = '/'; break;
		case 'b':  *o++ = '\b'; break;
		case 'f':  *o++ = '\f'; break;
		case 'n':  *o++ = '\n'; break;
		case 'r':  *o++ = '\r'; break;
		case 't':  *o++ = '\t'; break;
		case 'u':
			if ((cp = hex4(p, end)) < 0)
				return false;
			p += 4;
			if (cp >= 0xDC00 && cp <= 0xDFFF)
				return false;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
					return false;
				low = hex4(p + 2, end);
				if (low < 0xDC00 || low > 0xDFFF)
					return false;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
				p += 6;
			}
			o = put_utf8(o, (uint32_t)cp);
			break;
		default:
			return false;
		}
	}
	*out = buf;
	*len = (size_t)(o - buf);
	return true;
}

/*
 * Whether the 8 bytes in w are all printable ASCII other than '"' and '\\',
 * the bytes a string's text is mostly made of: eight at a time instead of
 * one. Each term is the "has a byte less than n" test of Bit Twiddling Hacks,
 * exact about whether any byte matches once no byte is 0x80 or above.
 */
static bool plain8(uint64_t w)
{
	const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
	uint64_t quote = w ^ (ones * '"'), backslash = w ^ (ones * '\\');

	return ((w & highs) |                       /* 0x80 and above */
	    ((w - ones * 0x20) & ~w & highs) |      /* below 0x20 */
	    ((quote - ones) & ~quote & highs) |     /* a quote */
	    ((backslash - ones) & ~backslash & highs)) == 0;
}

/* A string: its bytes in *out and *len. */
static bool plain_string(struct plain *s, const char **out, size_t *len)
{
	const char *start, *p;
	bool escaped = false;

	if (!plain_char(s, '"'))
		return false;
	start = p = s->p;
	while (p < s->end && *p != '"') {
		unsigned char c = (unsigned char)*p;
		uint64_t w;
		size_t n;

		if (s->end - p >= 8 && (memcpy(&w, p, 8), plain8(w))) {
			p += 8;
		} else if (c == '\\') {
			escaped = true;
			p += s->end - p >= 2 ? 2 : 1; /* the escape is checked when decoded */
		} else if (c < 0x20) {
			return false;
		} else if ((n = utf8_char_len((const unsigned char *)p, (size_t)(s->end - p))) > 0) {
			p += n;
		} else {
			return false;
		}
	}
	if (p >= s->end)
		return false;
	s->p = p + 1;
	if (escaped)
		return plain_unescape(s->q, start, p, out, len);
	*out = start;
	*len = (size_t)(p - start);
	return true;
}

/* A base64 string, decoded into the arena. */
static bool plain_base64(struct plain *s, const char **out, size_t *len)
{
	const char *text;
	size_t text_len;
	unsigned char *buf;

	if (!plain_string(s, &text, &text_len))
		return false;
	buf = arena_alloc(s->q, text_len / 4 * 3 + 1, 1);
	if (buf == NULL ||
	    base64_decode(text, text_len, BASE64_STRICT, buf, text_len / 4 * 3, len) < 0)
		return false;
	*out = (const char *)buf;
	return true;
}

/* A partition: an integer in 0..INT32_MAX written as JSON writes it. */
static bool plain_partition(struct plain *s, int32_t *out)
{
	const char *start;
	int64_t v = 0;

	plain_ws(s);
	start = s->p;
	while (s->p < s->end && *s->p >= '0' && *s->p <= '9' && s->p - start < 11)
		v = v * 10 + (*s->p++ - '0');
	if (s->p == start || (*start == '0' && s->p - start > 1) || v > INT32_MAX)
		return false;
	if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E' ||
	    (*s->p >= '0' && *s->p <= '9')))
		return false; /* a real, or more digits than fit */
	*out = (int32_t)v;
	return true;
}

/* A headers object, in its order, into the arena with room for "ackd-id" after. */
static bool plain_headers(struct plain *s, struct plain_rec *r)
{
	struct spool_hdr h[PUBLISH_MAX_HEADERS];
	size_t n = 0;

	if (!plain_char(s, '{'))
		return false;
	if (!plain_char(s, '}')) {
		do {
			struct spool_hdr *e = &h[n];
			if (n == PUBLISH_MAX_HEADERS || !plain_string(s, &e->name, &e->name_len) ||
			    !plain_char(s, ':') || !plain_string(s, &e->value, &e->value_len))
				return false;
			if (hdr_name_problem(e->name, e->name_len) != NULL ||
			    is_id_hdr(e->name, e->name_len))
				return false;
			for (size_t i = 0; i < n; i++)
				if (h[i].name_len == e->name_len &&
				    memcmp(h[i].name, e->name, e->name_len) == 0)
					return false; /* jansson keeps the last one */
			n++;
		} while (plain_char(s, ','));
		if (!plain_char(s, '}'))
			return false;
	}
	r->hdrs = arena_array(s->q, n + 1, sizeof(*r->hdrs));
	if (r->hdrs == NULL)
		return false;
	memcpy(r->hdrs, h, n * sizeof(*h));
	r->nhdrs = n;
	return true;
}

enum { F_VALUE = 1, F_VALUE_B64 = 2, F_KEY = 4, F_KEY_B64 = 8, F_PARTITION = 16, F_HEADERS = 32 };

static unsigned plain_field(const char *name, size_t len)
{
	static const struct { const char *name; unsigned bit; } fields[] = {
		{ "value", F_VALUE }, { "value_b64", F_VALUE_B64 }, { "key", F_KEY },
		{ "key_b64", F_KEY_B64 }, { "partition", F_PARTITION }, { "headers", F_HEADERS },
	};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (key_is(name, len, fields[i].name))
			return fields[i].bit;
	return 0;
}

static bool plain_record(struct plain *s, struct plain_rec *r)
{
	unsigned seen = 0;

	*r = (struct plain_rec){ .partition = -1 };
	if (!plain_char(s, '{'))
		return false;
	do {
		const char *name;
		size_t len;
		unsigned f;
		bool ok = false;

		if (!plain_string(s, &name, &len) || !plain_char(s, ':'))
			return false;
		f = plain_field(name, len);
		if (f == 0 || (seen & f))
			return false;
		seen |= f;
		switch (f) {
		case F_VALUE:     ok = plain_string(s, &r->value, &r->value_len); break;
		case F_VALUE_B64: ok = plain_base64(s, &r->value, &r->value_len); break;
		case F_KEY:       ok = plain_string(s, &r->key, &r->key_len); break;
		case F_KEY_B64:   ok = plain_base64(s, &r->key, &r->key_len); break;
		case F_PARTITION: ok = plain_partition(s, &r->partition); break;
		case F_HEADERS:   ok = plain_headers(s, r); break;
		}
		if (!ok)
			return false;
	} while (plain_char(s, ','));
	if (!plain_char(s, '}'))
		return false;
	if (!(seen & (F_VALUE | F_VALUE_B64)) || (seen & F_VALUE && seen & F_VALUE_B64) ||
	    (seen & F_KEY && seen & F_KEY_B64))
		return false;
	if (!(seen & F_HEADERS))
		r->hdrs = arena_array(s->q, 1, sizeof(*r->hdrs));
	return r->hdrs != NULL;
}

/* The records of a plain batch, malloc'd; NULL to give up. */
static struct plain_rec *plain_records(struct plain *s, int64_t max_records, size_t *n)
{
	struct plain_rec *recs = NULL;
	size_t cap = 0;
	const char *name;
	size_t len;

	*n = 0;
	if (!plain_char(s, '{') || !plain_string(s, &name, &len) || !key_is(name, len, "records") ||
	    !plain_char(s, ':') || !plain_char(s, '['))
		return NULL;
	do {
		if ((int64_t)*n == max_records)
			goto give_up;
		if (*n == cap) {
			struct plain_rec *more = reallocarray(recs, cap ? cap * 2 : 64, sizeof(*recs));
			if (more == NULL)
				goto give_up;
			recs = more;
			cap = cap ? cap * 2 : 64;
		}
		if (!plain_record(s, &recs[*n]))
			goto give_up;
		(*n)++;
	} while (plain_char(s, ','));
	if (!plain_char(s, ']') || !plain_char(s, '}'))
		goto give_up;
	plain_ws(s);
	if (s->p == s->end)
		return recs;
give_up:
	free(recs);
	return NULL;
}

/* A plain batch as messages in *out: true, or false for the general parser. */
static bool plain_batch(const char *topic, const char *body, size_t body_len,
    int64_t max_records, int64_t now_ms, struct publish_req **out)
{
	struct req *q = req_new();
	struct plain s = { .p = body, .end = body + body_len, .q = q };
	struct plain_rec *recs = NULL;
	const char *topic_copy;
	size_t n;

	if (q == NULL || body == NULL || (recs = plain_records(&s, max_records, &n)) == NULL ||
	    req_alloc_msgs(q, n, topic, strlen(topic), &topic_copy) < 0)
		goto give_up;
	for (size_t i = 0; i < n; i++) {
		struct spool_msg *m = &q->pub.msgs[i];
		m->value = recs[i].value;
		m->value_len = recs[i].value_len;
		m->key = recs[i].key;
		m->key_len = recs[i].key_len;
		m->partition = recs[i].partition;
		msg_finish(q, i, topic_copy, strlen(topic), recs[i].hdrs, recs[i].nhdrs, now_ms);
		if (!msg_fits(m))
			goto give_up;
	}
	free(recs);
	*out = &q->pub;
	return true;
give_up:
	free(recs);
	req_free(q);
	return false;
}

/* The body's JSON document, or NULL with err saying where it is malformed. */
static json_t *body_json(const char *body, size_t body_len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root;

	/*
	 * JSON_ALLOW_NUL: a string may carry "\u0000", so lengths are used
	 * throughout. JSON_DECODE_ANY: a body of 42 gets the caller's error rather
	 * than the parser's.
	 */
	root = json_loadb(body != NULL ? body : "", body_len, JSON_ALLOW_NUL | JSON_DECODE_ANY,
	    &jerr);
	if (root == NULL)
		snprintf(err, errlen, "malformed json at line %d column %d: %s", jerr.line,
		    jerr.column, jerr.text);
	return root;
}

/* The records array of a batch: there, an array, not empty, within max_records (else 413). */
static int records_check(const json_t *records, int64_t max_records, int *too_large, char *err,
    size_t errlen)
{
	size_t n;

	if (records == NULL) {
		snprintf(err, errlen, "records: missing");
		return -1;
	}
	if (!json_is_array(records)) {
		snprintf(err, errlen, "records: not an array");
		return -1;
	}
	n = json_array_size(records);
	if (n == 0) {
		snprintf(err, errlen, "records: empty array");
		return -1;
	}
	if ((int64_t)n > max_records) {
		snprintf(err, errlen, "records: %zu records, over the limit of %lld", n,
		    (long long)max_records);
		*too_large = 1;
		return -1;
	}
	return 0;
}

/*
 * The messages of records, a non-empty array of native batch records inside
 * doc; takes doc (the messages point into it) whatever the outcome.
 */
static int batch_build(const char *topic, json_t *doc, const json_t *records, int64_t now_ms,
    struct publish_req **out, int *too_large, char *err, size_t errlen)
{
	size_t n = json_array_size(records);
	const char *topic_copy;
	struct req *q;

	q = req_new();
	if (q == NULL || req_alloc_msgs(q, n, topic, strlen(topic), &topic_copy) < 0) {
		nomem(err, errlen);
		goto fail;
	}
	for (size_t i = 0; i < n; i++) {
		if (batch_record(q, i, json_array_get(records, i), topic_copy, strlen(topic), now_ms,
			too_large, err, errlen) < 0)
			goto fail;
	}
	q->root = doc;
	*out = &q->pub;
	return 0;

fail:
	json_decref(doc);
	req_free(q);
	return -1;
}

static int batch_parse(const char *topic, const char *body, size_t body_len,
    int64_t max_records, int64_t now_ms, bool try_plain, struct publish_req **out,
    int *too_large, char *err, size_t errlen)
{
	json_t *root = NULL;
	json_t *records = NULL;
	const char *k;
	size_t klen;
	json_t *v;

	*out = NULL;
	*too_large = 0;
	if (topic == NULL || !publish_topic_valid(topic, strlen(topic))) {
		snprintf(err, errlen, "invalid topic name");
		goto fail;
	}
	if (try_plain && plain_batch(topic, body, body_len, max_records, now_ms, out))
		return 0;
	root = body_json(body, body_len, err, errlen);
	if (root == NULL)
		goto fail;
	if (!json_is_object(root)) {
		snprintf(err, errlen, "body is not a json object with a records array");
		goto fail;
	}
	json_object_keylen_foreach(root, k, klen, v) {
		if (key_is(k, klen, "records")) {
			records = v;
		} else {
			char shown[80];
			name_for_err(shown, sizeof(shown), k, klen);
			snprintf(err, errlen, "unknown field \"%s\"", shown);
			goto fail;
		}
	}
	if (records_check(records, max_records, too_large, err, errlen) < 0)
		goto fail;

	return batch_build(topic, root, records, now_ms, out, too_large, err, errlen);

fail:
	json_decref(root);
	return -1;
}

int publish_batch(const char *topic, const char *body, size_t body_len, int64_t max_records,
    int64_t now_ms, struct publish_req **out, int *too_large, char *err, size_t errlen)
{
	return batch_parse(topic, body, body_len, max_records, now_ms, true, out, too_large, err,
	    errlen);
}

int publish_batch_general(const char *topic, const char *body, size_t body_len,
    int64_t max_records, int64_t now_ms, struct publish_req **out, int *too_large, char *err,
    size_t errlen)
{
	return batch_parse(topic, body, body_len, max_records, now_ms, false, out, too_large, err,
	    errlen);
}

/* --- Kafka REST Proxy v2 and v3 ---------------------------------------------- */

/*
 * A REST Proxy request becomes a document of native batch records
 * ({"value"|"value_b64", "key"|"key_b64", "partition", "headers"}) that
 * batch_build() turns into messages: the same checks, limits and spool
 * records as a native batch. What the native form cannot say is checked here
 * first, under the REST Proxy's own field names: base64 of binary data,
 * header lists, partition_id, timestamps, schema registry formats.
 */

static const char *const schema_formats[] = { "avro", "protobuf", "jsonschema" };

/* o[name] = v, taking v; -1 when out of memory (v NULL included). */
static int put(json_t *o, const char *name, json_t *v)
{
	return json_object_set_new(o, name, v);
}

/* Whether v is a string of padded base64 (RFC 4648), checked without decoding. */
static int is_b64(const json_t *v)
{
	size_t n;

	return json_is_string(v) &&
	    base64_decode(json_string_value(v), json_string_length(v), BASE64_STRICT, NULL, 0,
	        &n) == 0;
}

/* v as a JSON string holding its compact JSON text, or NULL. */
static json_t *as_text(const json_t *v)
{
	char *text = json_text(v);
	json_t *s = text != NULL ? json_string(text) : NULL;

	free(text);
	return s;
}

static int unknown_field(const char *where, const char *k, size_t klen, char *err, size_t errlen)
{
	char shown[80];

	name_for_err(shown, sizeof(shown), k, klen);
	snprintf(err, errlen, "%s%sunknown field \"%s\"", where, where[0] ? ": " : "", shown);
	return -1;
}

int publish_rp_v2_format(const char *ctype, enum publish_rp_format *out, char *err,
    size_t errlen)
{
	static const char prefix[] = "application/vnd.kafka.";
	static const char suffix[] = ".v2+json";
	const char *f, *end;
	size_t flen;

	if (ctype == NULL)
		goto other;
	end = ctype + strcspn(ctype, "; \t");
	if ((size_t)(end - ctype) <= strlen(prefix) + strlen(suffix) ||
	    strncasecmp(ctype, prefix, strlen(prefix)) != 0 ||
	    strncasecmp(end - strlen(suffix), suffix, strlen(suffix)) != 0)
		goto other;
	f = ctype + strlen(prefix);
	flen = (size_t)(end - strlen(suffix) - f);
	if (flen == 4 && strncasecmp(f, "json", 4) == 0) {
		*out = PUBLISH_RP_JSON;
		return 0;
	}
	if (flen == 6 && strncasecmp(f, "binary", 6) == 0) {
		*out = PUBLISH_RP_BINARY;
		return 0;
	}
	if (flen == 4 && strncasecmp(f, "text", 4) == 0) {
		*out = PUBLISH_RP_TEXT;
		return 0;
	}
	for (size_t i = 0; i < sizeof(schema_formats) / sizeof(schema_formats[0]); i++) {
		if (flen == strlen(schema_formats[i]) &&
		    strncasecmp(f, schema_formats[i], flen) == 0) {
			snprintf(err, errlen, "the %s embedded format needs a schema registry, which "
			    "ackd does not have; use json or binary", schema_formats[i]);
			return -1;
		}
	}
other:
	snprintf(err, errlen, "a REST Proxy v2 produce request takes Content-Type "
	    "application/vnd.kafka.json.v2+json, application/vnd.kafka.binary.v2+json or "
	    "application/vnd.kafka.text.v2+json");
	return -1;
}

/*
 * A REST Proxy header list, [{"<name_field>":"n","value":"<base64>"}], as a
 * native headers object of the decoded bytes; where names the list in
 * messages. *out stays NULL for an absent or null list.
 */
static int rp_headers(const json_t *list, const char *name_field, const char *where,
    json_t **out, char *err, size_t errlen)
{
	json_t *obj = NULL;
	unsigned char *buf = NULL;
	size_t i;
	json_t *h;

	*out = NULL;
	if (list == NULL || json_is_null(list))
		return 0;
	if (!json_is_array(list)) {
		snprintf(err, errlen, "%s: not an array", where);
		return -1;
	}
	if (json_array_size(list) > PUBLISH_MAX_HEADERS) {
		snprintf(err, errlen, "%s: %zu headers, more than %d", where, json_array_size(list),
		    PUBLISH_MAX_HEADERS);
		return -1;
	}
	obj = json_object();
	if (obj == NULL)
		goto nomem;
	json_array_foreach(list, i, h) {
		const json_t *name = NULL, *value = NULL;
		const char *k, *nm, *problem;
		size_t klen, nlen, vlen = 0;
		char shown[80];
		json_t *v, *hv;

		if (!json_is_object(h)) {
			snprintf(err, errlen, "%s[%zu]: not an object", where, i);
			goto fail;
		}
		json_object_keylen_foreach(h, k, klen, v) {
			if (key_is(k, klen, name_field)) {
				name = v;
			} else if (key_is(k, klen, "value")) {
				value = v;
			} else {
				char at[96];
				snprintf(at, sizeof(at), "%s[%zu]", where, i);
				unknown_field(at, k, klen, err, errlen);
				goto fail;
			}
		}
		if (!json_is_string(name)) {
			snprintf(err, errlen, "%s[%zu].%s: missing or not a string", where, i,
			    name_field);
			goto fail;
		}
		nm = json_string_value(name);
		nlen = json_string_length(name);
		name_for_err(shown, sizeof(shown), nm, nlen);
		problem = hdr_name_problem(nm, nlen);
		if (problem == NULL && is_id_hdr(nm, nlen))
			problem = "ackd-id is set by ackd";
		if (problem == NULL && json_object_getn(obj, nm, nlen) != NULL)
			problem = "given twice; ackd keeps one value per header name";
		if (problem != NULL) {
			snprintf(err, errlen, "%s[%zu] \"%s\": %s", where, i, shown, problem);
			goto fail;
		}
		if (value != NULL && !json_is_null(value) && !is_b64(value)) {
			snprintf(err, errlen, "%s[%zu].value: not a base64 string", where, i);
			goto fail;
		}
		if (value != NULL && !json_is_null(value)) {
			size_t tlen = json_string_length(value);
			buf = malloc(tlen / 4 * 3 + 1);
			if (buf == NULL || base64_decode(json_string_value(value), tlen, BASE64_STRICT,
			    buf, tlen / 4 * 3, &vlen) < 0)
				goto nomem;
		}
		/* Header values are bytes: no UTF-8 check. */
		hv = json_stringn_nocheck(buf != NULL ? (const char *)buf : "", vlen);
		free(buf);
		buf = NULL;
		if (json_object_setn_new(obj, nm, nlen, hv) < 0)
			goto nomem;
	}
	*out = obj;
	return 0;

nomem:
	nomem(err, errlen);
fail:
	free(buf);
	json_decref(obj);
	return -1;
}

/* Record idx of a v2 body as a native batch record, or NULL with err. */
static json_t *v2_record(const json_t *rec, size_t idx, enum publish_rp_format fmt, char *err,
    size_t errlen)
{
	const json_t *key = NULL, *value = NULL, *partition = NULL, *headers = NULL;
	json_t *nat = NULL, *hobj;
	const char *k;
	size_t klen;
	json_t *v;
	char where[48];

	snprintf(where, sizeof(where), "records[%zu]", idx);
	if (!json_is_object(rec)) {
		snprintf(err, errlen, "%s: not an object", where);
		return NULL;
	}
	json_object_keylen_foreach((json_t *)rec, k, klen, v) {
		if (key_is(k, klen, "key"))
			key = v;
		else if (key_is(k, klen, "value"))
			value = v;
		else if (key_is(k, klen, "partition"))
			partition = v;
		else if (key_is(k, klen, "headers"))
			headers = v;
		else {
			unknown_field(where, k, klen, err, errlen);
			return NULL;
		}
	}
	if (value == NULL || json_is_null(value)) {
		snprintf(err, errlen, "%s.value: missing or null; ackd does not publish null values "
		    "(tombstones)", where);
		return NULL;
	}
	if (key != NULL && json_is_null(key))
		key = NULL; /* null: no key */
	if (fmt == PUBLISH_RP_BINARY && !is_b64(value)) {
		snprintf(err, errlen, "%s.value: not a base64 string", where);
		return NULL;
	}
	if (fmt == PUBLISH_RP_BINARY && key != NULL && !is_b64(key)) {
		snprintf(err, errlen, "%s.key: not a base64 string", where);
		return NULL;
	}
	if (fmt == PUBLISH_RP_TEXT && (!json_is_string(value) || (key && !json_is_string(key)))) {
		snprintf(err, errlen, "%s.%s: not a string", where, json_is_string(value) ?
		    "key" : "value");
		return NULL;
	}
	nat = json_object();
	if (nat == NULL)
		goto nomem;
	switch (fmt) {
	case PUBLISH_RP_JSON:
		/* Every value, strings too, as its JSON text: what a JSON consumer parses. */
		if (put(nat, "value", as_text(value)) < 0 ||
		    (key != NULL && put(nat, "key", as_text(key)) < 0))
			goto nomem;
		break;
	case PUBLISH_RP_BINARY:
		if (put(nat, "value_b64", json_incref((json_t *)value)) < 0 ||
		    (key != NULL && put(nat, "key_b64", json_incref((json_t *)key)) < 0))
			goto nomem;
		break;
	case PUBLISH_RP_TEXT:
		if (put(nat, "value", json_incref((json_t *)value)) < 0 ||
		    (key != NULL && put(nat, "key", json_incref((json_t *)key)) < 0))
			goto nomem;
		break;
	}
	if (partition != NULL && !json_is_null(partition) &&
	    put(nat, "partition", json_incref((json_t *)partition)) < 0)
		goto nomem;
	/* The Strimzi bridge's headers: [{"key":"h","value":"<base64>"}]. */
	snprintf(where, sizeof(where), "records[%zu].headers", idx);
	if (rp_headers(headers, "key", where, &hobj, err, errlen) < 0)
		goto fail;
	if (hobj != NULL && put(nat, "headers", hobj) < 0)
		goto nomem;
	return nat;

nomem:
	nomem(err, errlen);
fail:
	json_decref(nat);
	return NULL;
}

int publish_rp_v2(const char *topic, enum publish_rp_format fmt, const char *body,
    size_t body_len, int64_t max_records, int64_t now_ms, struct publish_req **out,
    int *too_large, char *err, size_t errlen)
{
	json_t *root = NULL, *natives = NULL;
	const json_t *records = NULL;
	const char *k;
	size_t klen, i;
	json_t *v;

	*out = NULL;
	*too_large = 0;
	if (topic == NULL || !publish_topic_valid(topic, strlen(topic))) {
		snprintf(err, errlen, "invalid topic name");
		goto fail;
	}
	root = body_json(body, body_len, err, errlen);
	if (root == NULL)
		goto fail;
	if (!json_is_object(root)) {
		snprintf(err, errlen, "body is not a json object with a records array");
		goto fail;
	}
	json_object_keylen_foreach(root, k, klen, v) {
		if (key_is(k, klen, "records")) {
			records = v;
		} else if (key_is(k, klen, "key_schema") || key_is(k, klen, "value_schema") ||
		    key_is(k, klen, "key_schema_id") || key_is(k, klen, "value_schema_id")) {
			if (!json_is_null(v)) {
				char shown[80];
				name_for_err(shown, sizeof(shown), k, klen);
				snprintf(err, errlen, "%s: schemas need a schema registry, which ackd "
				    "does not have", shown);
				goto fail;
			}
		} else {
			unknown_field("", k, klen, err, errlen);
			goto fail;
		}
	}
	if (records_check(records, max_records, too_large, err, errlen) < 0)
		goto fail;
	natives = json_array();
	if (natives == NULL) {
		nomem(err, errlen);
		goto fail;
	}
	json_array_foreach(records, i, v) {
		json_t *nat = v2_record(v, i, fmt, err, errlen);
		if (nat == NULL)
			goto fail;
		if (json_array_append_new(natives, nat) < 0) {
			nomem(err, errlen);
			goto fail;
		}
	}
	json_decref(root);
	return batch_build(topic, natives, natives, now_ms, out, too_large, err, errlen);

fail:
	json_decref(natives);
	json_decref(root);
	return -1;
}

/* Days from 1970-01-01 to y-m-d of the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* n digits at s as a number; -1 when one is not a digit. */
static int digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

int publish_parse_rfc3339(const char *s, size_t len, int64_t *out_ms)
{
	static const int mdays[] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	int y, mo, d, h, mi, sec, ms = 0, off = 0;
	size_t i = 19;
	int64_t t;

	/* YYYY-MM-DDTHH:MM:SS, then [.fraction], then Z or +HH:MM / -HH:MM */
	if (len < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
	    s[13] != ':' || s[16] != ':')
		return -1;
	y = digits(s, 4);
	mo = digits(s + 5, 2);
	d = digits(s + 8, 2);
	h = digits(s + 11, 2);
	mi = digits(s + 14, 2);
	sec = digits(s + 17, 2);
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h < 0 || h > 23 ||
	    mi < 0 || mi > 59 || sec < 0 || sec > 60)
		return -1;
	if (mo == 2 && d == 29 && !(y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)))
		return -1;
	if (s[i] == '.') {
		int scale = 100;
		if (++i >= len || s[i] < '0' || s[i] > '9')
			return -1;
		for (; i < len && s[i] >= '0' && s[i] <= '9'; i++, scale /= 10)
			ms += (s[i] - '0') * scale; /* digits past milliseconds add 0 */
	}
	if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
		i++;
	} else if (i + 6 == len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
		int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
		if (oh < 0 || oh > 23 || om < 0 || om > 59)
			return -1;
		off = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
		i += 6;
	} else {
		return -1;
	}
	if (i != len)
		return -1;
	if (sec == 60)
		sec = 59; /* a leap second: Kafka timestamps have none */
	t = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60 + sec - (int64_t)off * 60;
	if (t < 0)
		return -1;
	*out_ms = t * 1000 + ms;
	return 0;
}

/*
 * The key or value of a v3 record, {"type":"BINARY|JSON|STRING","data":…},
 * into nat; *type gets the type's name, or stays NULL for an absent or null
 * part (or null data). *unsupported for a schema registry format (415).
 */
static int v3_data(const json_t *d, int is_key, json_t *nat, const char **type,
    int *unsupported, char *err, size_t errlen)
{
	const char *field = is_key ? "key" : "value";
	const json_t *type_v = NULL, *data = NULL;
	int schema = 0;
	const char *k, *t;
	size_t klen;
	json_t *v, *text;
	char shown[80];

	*type = NULL;
	if (d == NULL || json_is_null(d))
		return 0;
	if (!json_is_object(d)) {
		snprintf(err, errlen, "%s: not an object", field);
		return -1;
	}
	json_object_keylen_foreach((json_t *)d, k, klen, v) {
		if (key_is(k, klen, "type"))
			type_v = v;
		else if (key_is(k, klen, "data"))
			data = v;
		else if (key_is(k, klen, "subject") || key_is(k, klen, "subject_name_strategy") ||
		    key_is(k, klen, "schema_id") || key_is(k, klen, "schema_version") ||
		    key_is(k, klen, "schema"))
			schema |= !json_is_null(v);
		else
			return unknown_field(field, k, klen, err, errlen);
	}
	t = json_string_value(type_v);
	if (t != NULL) {
		name_for_err(shown, sizeof(shown), t, json_string_length(type_v));
		for (size_t i = 0; i < sizeof(schema_formats) / sizeof(schema_formats[0]); i++) {
			if (strcasecmp(t, schema_formats[i]) == 0) {
				snprintf(err, errlen, "%s.type: %s needs a schema registry, which ackd "
				    "does not have; use BINARY, JSON or STRING", field, shown);
				*unsupported = 1;
				return -1;
			}
		}
	}
	if (type_v == NULL || json_is_null(type_v) || schema) {
		snprintf(err, errlen, "%s: a schema (no type, or subject or schema fields) needs a "
		    "schema registry, which ackd does not have; use type BINARY, JSON or STRING",
		    field);
		*unsupported = 1;
		return -1;
	}
	if (t == NULL) {
		snprintf(err, errlen, "%s.type: not a string", field);
		return -1;
	}
	if (strcmp(t, "BINARY") != 0 && strcmp(t, "JSON") != 0 && strcmp(t, "STRING") != 0) {
		snprintf(err, errlen, "%s.type: \"%s\" is not BINARY, JSON or STRING", field, shown);
		return -1;
	}
	if (data == NULL || json_is_null(data)) {
		if (is_key)
			return 0; /* no key */
		snprintf(err, errlen, "value.data: missing or null; ackd does not publish null "
		    "values (tombstones)");
		return -1;
	}
	if (strcmp(t, "BINARY") == 0) {
		if (!is_b64(data)) {
			snprintf(err, errlen, "%s.data: not a base64 string", field);
			return -1;
		}
		if (put(nat, is_key ? "key_b64" : "value_b64", json_incref((json_t *)data)) < 0)
			goto nomem;
		*type = "BINARY";
	} else if (strcmp(t, "STRING") == 0) {
		if (!json_is_string(data)) {
			snprintf(err, errlen, "%s.data: not a string", field);
			return -1;
		}
		if (put(nat, field, json_incref((json_t *)data)) < 0)
			goto nomem;
		*type = "STRING";
	} else {
		text = as_text(data);
		if (put(nat, field, text) < 0)
			goto nomem;
		*type = "JSON";
	}
	return 0;

nomem:
	nomem(err, errlen);
	return -1;
}

int publish_rp_v3(const char *topic, const char *body, size_t body_len, int64_t now_ms,
    struct publish_req **out, struct publish_rp_v3_types *types, int *too_large,
    int *unsupported, char *err, size_t errlen)
{
	const json_t *key = NULL, *value = NULL, *partition = NULL, *headers = NULL, *ts = NULL;
	json_t *root = NULL, *nat = NULL, *natives = NULL, *hobj;
	int64_t ts_ms = now_ms;
	const char *k;
	size_t klen;
	json_t *v;

	*out = NULL;
	*too_large = 0;
	*unsupported = 0;
	types->key = types->value = NULL;
	if (topic == NULL || !publish_topic_valid(topic, strlen(topic))) {
		snprintf(err, errlen, "invalid topic name");
		goto fail;
	}
	root = body_json(body, body_len, err, errlen);
	if (root == NULL)
		goto fail;
	if (!json_is_object(root)) {
		snprintf(err, errlen, "body is not a json object (one record)");
		goto fail;
	}
	json_object_keylen_foreach(root, k, klen, v) {
		if (key_is(k, klen, "key"))
			key = v;
		else if (key_is(k, klen, "value"))
			value = v;
		else if (key_is(k, klen, "partition_id"))
			partition = v;
		else if (key_is(k, klen, "headers"))
			headers = v;
		else if (key_is(k, klen, "timestamp"))
			ts = v;
		else {
			unknown_field("", k, klen, err, errlen);
			goto fail;
		}
	}
	nat = json_object();
	if (nat == NULL) {
		nomem(err, errlen);
		goto fail;
	}
	if (v3_data(key, 1, nat, &types->key, unsupported, err, errlen) < 0 ||
	    v3_data(value, 0, nat, &types->value, unsupported, err, errlen) < 0)
		goto fail;
	if (types->value == NULL) {
		snprintf(err, errlen, "value: missing or null; ackd does not publish null values "
		    "(tombstones)");
		goto fail;
	}
	if (partition != NULL && !json_is_null(partition)) {
		json_int_t p = json_is_integer(partition) ? json_integer_value(partition) : -1;
		if (p < 0 || p > INT32_MAX) {
			snprintf(err, errlen, "partition_id: not an integer in 0..%d", INT32_MAX);
			goto fail;
		}
		if (put(nat, "partition", json_incref((json_t *)partition)) < 0) {
			nomem(err, errlen);
			goto fail;
		}
	}
	if (rp_headers(headers, "name", "headers", &hobj, err, errlen) < 0)
		goto fail;
	if (hobj != NULL && put(nat, "headers", hobj) < 0) {
		nomem(err, errlen);
		goto fail;
	}
	if (ts != NULL && !json_is_null(ts) &&
	    (!json_is_string(ts) || publish_parse_rfc3339(json_string_value(ts),
	        json_string_length(ts), &ts_ms) < 0)) {
		snprintf(err, errlen, "timestamp: not an RFC 3339 date-time from 1970 on");
		goto fail;
	}
	natives = json_array();
	if (natives == NULL) {
		nomem(err, errlen);
		goto fail;
	}
	v = nat;
	nat = NULL; /* json_array_append_new() takes it, also when it fails */
	if (json_array_append_new(natives, v) < 0) {
		nomem(err, errlen);
		goto fail;
	}
	json_decref(root);
	return batch_build(topic, natives, natives, ts_ms, out, too_large, err, errlen);

fail:
	json_decref(nat);
	json_decref(natives);
	json_decref(root);
	return -1;
}

/* --- W3C trace context --------------------------------------------------------- */

#define TRACESTATE_MAX 512       /* bytes kept, the least W3C asks vendors to pass on */
#define TRACESTATE_MAX_MEMBERS 32

static int lower_hex(const char *s, size_t n, int *all_zero)
{
	*all_zero = 1;
	for (size_t i = 0; i < n; i++) {
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
		if (s[i] != '0')
			*all_zero = 0;
	}
	return 1;
}

int publish_traceparent_valid(const char *s, size_t len)
{
	int zero;

	/* version "-" trace-id "-" parent-id "-" flags: 2, 32, 16, 2 lower-case hex. */
	if (s == NULL || len < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-')
		return 0;
	if (!lower_hex(s, 2, &zero) || (s[0] == 'f' && s[1] == 'f'))
		return 0;
	if (!lower_hex(s + 3, 32, &zero) || zero)
		return 0;
	if (!lower_hex(s + 36, 16, &zero) || zero)
		return 0;
	if (!lower_hex(s + 53, 2, &zero))
		return 0;
	if (s[0] == '0' && s[1] == '0')
		return len == 55;
	/* A later version may add fields after a "-"; they are kept as sent. */
	if (len == 55)
		return 1;
	if (s[55] != '-')
		return 0;
	for (size_t i = 56; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

/*
 * A tracestate list within what ackd keeps: printable ASCII, at most
 * TRACESTATE_MAX bytes and TRACESTATE_MAX_MEMBERS members, each member empty
 * or key=value with a key and a value.
 */
static int tracestate_valid(const char *s, size_t len)
{
	size_t members = 0, i = 0;

	if (len > TRACESTATE_MAX)
		return 0;
	for (size_t j = 0; j < len; j++)
		if (s[j] < 0x20 || s[j] > 0x7e)
			return 0;
	while (i <= len) {
		size_t end = i;
		while (end < len && s[end] != ',')
			end++;
		size_t a = i, b = end;
		while (a < b && (s[a] == ' ' || s[a] == '\t'))
			a++;
		while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
			b--;
		if (a < b) {
			const char *eq = memchr(s + a, '=', b - a);
			if (eq == NULL || eq == s + a || eq == s + b - 1)
				return 0;
			if (++members > TRACESTATE_MAX_MEMBERS)
				return 0;
		}
		i = end + 1;
	}
	return 1;
}

static int msg_has_hdr(const struct spool_msg *m, const char *name)
{
	for (size_t i = 0; i < m->nhdrs; i++)
		if (m->hdrs[i].name_len == strlen(name) &&
		    strncasecmp(m->hdrs[i].name, name, m->hdrs[i].name_len) == 0)
			return 1;
	return 0;
}

int publish_trace(struct publish_req *r, const struct publish_http_hdr *hdrs, size_t nhdrs,
    int *too_large, char *err, size_t errlen)
{
	struct req *q = (struct req *)r;
	const char *tp = NULL, *tp_copy, *ts_copy = NULL;
	char ts[TRACESTATE_MAX + 1];
	size_t ntp = 0, tslen = 0;
	int ts_ok = 1;

	*too_large = 0;
	for (size_t i = 0; i < nhdrs; i++) {
		const char *value = hdrs[i].value != NULL ? hdrs[i].value : "";
		size_t vlen = strlen(value);
		if (hdrs[i].name == NULL)
			continue;
		if (strcasecmp(hdrs[i].name, "traceparent") == 0) {
			ntp++;
			tp = value;
		} else if (strcasecmp(hdrs[i].name, "tracestate") == 0 && vlen > 0) {
			/* Several tracestate headers are one list (RFC 9110 5.3). */
			if (tslen + (tslen > 0) + vlen > TRACESTATE_MAX) {
				ts_ok = 0;
				continue;
			}
			if (tslen > 0)
				ts[tslen++] = ',';
			memcpy(ts + tslen, value, vlen);
			tslen += vlen;
		}
	}
	/* No traceparent, two of them, or a malformed one: no trace to go on. */
	if (ntp != 1 || !publish_traceparent_valid(tp, strlen(tp)))
		return 0;
	ts_ok = ts_ok && tslen > 0 && tracestate_valid(ts, tslen);
	tp_copy = arena_dup(q, tp, strlen(tp));
	if (ts_ok)
		ts_copy = arena_dup(q, ts, tslen);
	if (tp_copy == NULL || (ts_ok && ts_copy == NULL))
		goto nomem;

	for (size_t i = 0; i < r->n; i++) {
		struct spool_msg *m = &r->msgs[i];
		struct spool_hdr *nh;
		size_t n = m->nhdrs;
		int add_ts;

		/* A record's own trace context wins over the request's. */
		if (msg_has_hdr(m, "traceparent"))
			continue;
		add_ts = ts_copy != NULL && !msg_has_hdr(m, "tracestate");
		nh = arena_array(q, n + 1 + (size_t)add_ts, sizeof(*nh));
		if (nh == NULL)
			goto nomem;
		memcpy(nh, m->hdrs, n * sizeof(*nh));
		nh[n].name = "traceparent";
		nh[n].name_len = strlen("traceparent");
		nh[n].value = tp_copy;
		nh[n].value_len = strlen(tp_copy);
		if (add_ts) {
			nh[n + 1].name = "tracestate";
			nh[n + 1].name_len = strlen("tracestate");
			nh[n + 1].value = ts_copy;
			nh[n + 1].value_len = tslen;
		}
		m->hdrs = nh;
		m->nhdrs = n + 1 + (size_t)add_ts;
		if (!msg_fits(m)) {
			snprintf(err, errlen, "records[%zu]: larger with its key, headers and trace "
			    "context than a spool record can hold (%u bytes)", i, SPOOL_REC_MAX_PAYLOAD);
			*too_large = 1;
			return -1;
		}
	}
	return 0;

nomem:
	nomem(err, errlen);
	return -1;
}
