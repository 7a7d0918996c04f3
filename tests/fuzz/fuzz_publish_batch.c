/*
 * fuzz_publish_batch: every parser of a publish body on arbitrary bodies:
 * publish_batch(), publish_rp_v2() in each embedded format and
 * publish_rp_v3(), each result then given the trace context by
 * publish_trace().
 *
 * Any input must give either a batch whose every message is well formed (a
 * value, the topic, an ackd-id header equal to its id, ids increasing, the
 * trace context headers once) or -1 with a non-empty error; anything else
 * aborts. Sanitizers catch the rest.
 *
 * publish_batch() reads plain batches with a parser of its own and gives
 * anything else to the general (jansson) one; publish_batch_general() always
 * uses the general one. Both must give the same outcome: the same error, or
 * messages equal in every byte but their ids.
 *
 * With libFuzzer:
 *   clang -g -fsanitize=fuzzer,address,undefined \
 *     -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -Idaemon -I<build dir> \
 *     tests/fuzz/fuzz_publish_batch.c daemon/publish.c daemon/log.c daemon/util.c \
 *     daemon/base64.c daemon/spool_rec.c -ljansson
 * Otherwise main() replays files and directories given as arguments (the
 * corpus tests/fuzz/corpus/publish_batch when none are), which is how
 * `make check` runs it with gcc.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publish.h"

#define FUZZ_MAX_RECORDS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_publish_batch: broken: %s\n", what);
		abort();
	}
}

#define TRACEPARENT "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static size_t hdr_count(const struct spool_msg *m, const char *name)
{
	size_t n = 0;

	for (size_t h = 0; h < m->nhdrs; h++)
		n += spool_hdr_is(&m->hdrs[h], name);
	return n;
}

/* The outcome of one parser: rc and r as it returned them. */
static void check_req(int rc, struct publish_req *r, int too_large, const char *err,
    int fixed_ts)
{
	static const struct publish_http_hdr trace[] = { { "traceparent", TRACEPARENT },
		{ "tracestate", "a=1" } };
	char terr[256];
	int big = -1;

	if (rc != 0) {
		check(r == NULL, "result on failure");
		check(err[0] != '\0', "empty error message");
		check(too_large == 0 || too_large == 1, "too_large not set");
		return;
	}
	check(r != NULL && r->n >= 1 && r->n <= FUZZ_MAX_RECORDS, "record count");
	check(too_large == 0, "too_large on success");
	terr[0] = '\0';
	if (publish_trace(r, trace, 2, &big, terr, sizeof(terr)) != 0)
		check(terr[0] != '\0' && big == 1, "trace context refused without a reason");
	for (size_t i = 0; i < r->n; i++) {
		const struct spool_msg *m = &r->msgs[i];

		check(m->value != NULL, "value");
		check(m->topic_len == 4 && memcmp(m->topic, "fuzz", 4) == 0, "topic");
		check(m->partition >= -1, "partition");
		check(!fixed_ts || m->timestamp_ms == 1, "timestamp");
		check(m->timestamp_ms >= 0, "timestamp before 1970");
		check(hdr_count(m, "ackd-id") == 1, "ackd-id header");
		check(hdr_count(m, "traceparent") <= 1 && hdr_count(m, "tracestate") <= 1,
		    "trace context headers");
		for (size_t h = 0; h < m->nhdrs; h++) {
			const struct spool_hdr *id = &m->hdrs[h];
			if (spool_hdr_is(id, "ackd-id"))
				check(id->value_len == PUBLISH_ID_LEN &&
					  memcmp(id->value, r->ids[i], PUBLISH_ID_LEN) == 0,
				    "ackd-id value");
		}
		check(i == 0 || strcmp(r->ids[i - 1], r->ids[i]) < 0, "ids increasing");
		/* Touch every byte so the sanitizers see each pointer is sound. */
		volatile unsigned sum = 0;
		for (size_t j = 0; j < m->value_len; j++)
			sum += (unsigned char)m->value[j];
		for (size_t j = 0; m->key != NULL && j < m->key_len; j++)
			sum += (unsigned char)m->key[j];
		for (size_t h = 0; h < m->nhdrs; h++) {
			check(m->hdrs[h].name != NULL && m->hdrs[h].value != NULL, "header");
			for (size_t j = 0; j < m->hdrs[h].name_len; j++)
				sum += (unsigned char)m->hdrs[h].name[j];
			for (size_t j = 0; j < m->hdrs[h].value_len; j++)
				sum += (unsigned char)m->hdrs[h].value[j];
		}
		(void)sum;
	}
	publish_req_free(r);
}

static int same_bytes(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* The plain parser against the general one on the same body. */
static void check_same_as_general(const char *body, size_t size)
{
	struct publish_req *a = NULL, *b = NULL;
	int a_big = -1, b_big = -1, a_rc, b_rc;
	char a_err[256] = "", b_err[256] = "";

	a_rc = publish_batch("fuzz", body, size, FUZZ_MAX_RECORDS, 1, &a, &a_big, a_err,
	    sizeof(a_err));
	b_rc = publish_batch_general("fuzz", body, size, FUZZ_MAX_RECORDS, 1, &b, &b_big, b_err,
	    sizeof(b_err));
	check(a_rc == b_rc, "plain and general parsers disagree on the outcome");
	if (a_rc != 0) {
		check(a_big == b_big && strcmp(a_err, b_err) == 0, "different errors");
		return;
	}
	check(a->n == b->n, "different record counts");
	for (size_t i = 0; i < a->n; i++) {
		const struct spool_msg *x = &a->msgs[i], *y = &b->msgs[i];

		check(same_bytes(x->value, x->value_len, y->value, y->value_len), "value");
		check((x->key == NULL) == (y->key == NULL) &&
			  (x->key == NULL || same_bytes(x->key, x->key_len, y->key, y->key_len)),
		    "key");
		check(x->partition == y->partition, "partition");
		check(x->timestamp_ms == y->timestamp_ms, "timestamp");
		check(x->nhdrs == y->nhdrs, "header count");
		for (size_t h = 0; h < x->nhdrs; h++) {
			const struct spool_hdr *hx = &x->hdrs[h], *hy = &y->hdrs[h];
			check(same_bytes(hx->name, hx->name_len, hy->name, hy->name_len),
			    "header name");
			check(spool_hdr_is(hx, "ackd-id") ||
				  same_bytes(hx->value, hx->value_len, hy->value, hy->value_len),
			    "header value");
		}
	}
	publish_req_free(a);
	publish_req_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum publish_rp_format formats[] = { PUBLISH_RP_JSON, PUBLISH_RP_BINARY,
		PUBLISH_RP_TEXT };
	const char *body = (const char *)data;
	struct publish_rp_v3_types types;
	struct publish_req *r = NULL;
	int too_large = -1, unsupported = -1, rc;
	char err[256];

	err[0] = '\0';
	rc = publish_batch("fuzz", body, size, FUZZ_MAX_RECORDS, 1, &r, &too_large, err,
	    sizeof(err));
	check_req(rc, r, too_large, err, 1);
	check_same_as_general(body, size);
	for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
		r = NULL;
		too_large = -1;
		err[0] = '\0';
		rc = publish_rp_v2("fuzz", formats[f], body, size, FUZZ_MAX_RECORDS, 1, &r,
		    &too_large, err, sizeof(err));
		check_req(rc, r, too_large, err, 1);
	}
	r = NULL;
	too_large = -1;
	err[0] = '\0';
	rc = publish_rp_v3("fuzz", body, size, 1, &r, &types, &too_large, &unsupported, err,
	    sizeof(err));
	check(unsupported == 0 || (rc != 0 && unsupported == 1), "unsupported");
	check(rc != 0 || types.value != NULL, "v3 value type");
	check_req(rc, r, too_large, err, 0);
	return 0;
}
