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
 * keeps until publish_req_free(); a batch keeps its parsed JSON document,
 * whose strings the messages point into, and publish_req_free() releases it
 * with the arena.
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
#define ID_HDR "ackd-id"
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
		clock_gettime(CLOCK_MONOTONIC, &ts);
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

void publish_id_new(char out[PUBLISH_ID_LEN + 1])
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
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
	hdrs[nhdrs].name = ID_HDR;
	hdrs[nhdrs].name_len = strlen(ID_HDR);
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
	return len == strlen(ID_HDR) && strncasecmp(name, ID_HDR, len) == 0;
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
		size_t flags = JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(real_precision(value));
		char *text = json_dumps(value, flags);
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

int publish_batch(const char *topic, const char *body, size_t body_len, int64_t max_records,
    int64_t now_ms, struct publish_req **out, int *too_large, char *err, size_t errlen)
{
	struct req *q = NULL;
	json_t *root = NULL;
	json_t *records = NULL;
	json_error_t jerr;
	const char *topic_copy;
	const char *k;
	size_t klen;
	json_t *v;
	size_t n;

	*out = NULL;
	*too_large = 0;
	if (topic == NULL || !publish_topic_valid(topic, strlen(topic))) {
		snprintf(err, errlen, "invalid topic name");
		goto fail;
	}
	/*
	 * JSON_ALLOW_NUL: a string may carry "\u0000", so lengths are used
	 * throughout. JSON_DECODE_ANY: a body of 42 gets the error below rather
	 * than the parser's.
	 */
	root = json_loadb(body != NULL ? body : "", body_len, JSON_ALLOW_NUL | JSON_DECODE_ANY,
	    &jerr);
	if (root == NULL) {
		snprintf(err, errlen, "malformed json at line %d column %d: %s", jerr.line,
		    jerr.column, jerr.text);
		goto fail;
	}
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
	if (records == NULL) {
		snprintf(err, errlen, "records: missing");
		goto fail;
	}
	if (!json_is_array(records)) {
		snprintf(err, errlen, "records: not an array");
		goto fail;
	}
	n = json_array_size(records);
	if (n == 0) {
		snprintf(err, errlen, "records: empty array");
		goto fail;
	}
	if ((int64_t)n > max_records) {
		snprintf(err, errlen, "records: %zu records, over the limit of %lld", n,
		    (long long)max_records);
		*too_large = 1;
		goto fail;
	}

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
	q->root = root; /* the messages point into it */
	*out = &q->pub;
	return 0;

fail:
	json_decref(root);
	req_free(q);
	return -1;
}
