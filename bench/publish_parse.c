/*
 * publish_parse: the CPU cost of turning publish requests into spool
 * messages (daemon/publish.c), in one thread, without HTTP, spool or Kafka.
 *
 * Rows, each the fastest of 9 runs (the least disturbed by other processes on
 * a shared machine):
 *   single              publish_single() of a 256-byte value
 *   single, no trace    the same, then publish_trace() with two other
 *                       headers, as http.c calls it for every request
 *   single + trace      the same, then publish_trace() with a traceparent
 *                       and a tracestate header
 *   batch native 1000   publish_batch() of 1,000 JSON-object values (read by
 *                       the general parser, jansson)
 *   batch native str    publish_batch() of 1,000 string values of 256 bytes,
 *                       bench/publish's batch (read by the plain parser)
 *   same, general       the same body through publish_batch_general()
 *   batch v2 json 1000  publish_rp_v2() (json) of the same 1,000 records
 *   batch v2 bin 1000   publish_rp_v2() (binary) of 1,000 base64 values
 *   batch native b64    publish_batch() of the same 1,000 as value_b64 (the
 *                       plain parser)
 *   v3 single           publish_rp_v3() of one JSON record with a header
 *
 * Prints ns per request and per record. Build and run from the repository
 * (after ./configure in build/):
 *   cc -O2 -Idaemon -Ibuild bench/publish_parse.c daemon/publish.c \
 *     daemon/log.c daemon/util.c daemon/base64.c daemon/spool_rec.c \
 *     -ljansson -lpthread -o /tmp/publish_parse && /tmp/publish_parse
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "publish.h"

#define RUNS 9
#define RECORDS 1000

static char *batch_body(const char *fmt)
{
	size_t cap = 64 + (size_t)RECORDS * 512, len = 0;
	char *b = malloc(cap);

	if (b == NULL)
		abort();
	len += (size_t)snprintf(b + len, cap - len, "{\"records\":[");
	for (int i = 0; i < RECORDS; i++)
		len += (size_t)snprintf(b + len, cap - len, fmt, i, i == RECORDS - 1 ? "" : ",");
	snprintf(b + len, cap - len, "]}");
	return b;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

enum kind { SINGLE, SINGLE_NO_TRACE, SINGLE_TRACE, NATIVE, NATIVE_GENERAL, V2_JSON, V2_BIN,
	NATIVE_B64, V3 };

static int one(enum kind k, const char *body)
{
	static const struct publish_http_hdr trace[] = {
		{ "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" },
		{ "tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7" },
	};
	static const struct publish_http_hdr other[] = { { "Host", "localhost" },
		{ "Content-Length", "256" } };
	struct publish_rp_v3_types types;
	struct publish_req *r = NULL;
	int big = 0, unsupported = 0, rc = -1;
	char err[256];

	switch (k) {
	case SINGLE:
		rc = publish_single("bench", NULL, 0, -1, other, 2, body, 256, 1, &r, &big, err,
		    sizeof(err));
		break;
	case SINGLE_NO_TRACE:
	case SINGLE_TRACE:
		rc = publish_single("bench", NULL, 0, -1, k == SINGLE_TRACE ? trace : other, 2, body,
		    256, 1, &r, &big, err, sizeof(err));
		if (rc == 0)
			rc = publish_trace(r, k == SINGLE_TRACE ? trace : other, 2, &big, err,
			    sizeof(err));
		break;
	case NATIVE:
	case NATIVE_B64:
		rc = publish_batch("bench", body, strlen(body), RECORDS, 1, &r, &big, err, sizeof(err));
		break;
	case NATIVE_GENERAL:
		rc = publish_batch_general("bench", body, strlen(body), RECORDS, 1, &r, &big, err,
		    sizeof(err));
		break;
	case V2_JSON:
	case V2_BIN:
		rc = publish_rp_v2("bench", k == V2_JSON ? PUBLISH_RP_JSON : PUBLISH_RP_BINARY, body,
		    strlen(body), RECORDS, 1, &r, &big, err, sizeof(err));
		break;
	case V3:
		rc = publish_rp_v3("bench", body, strlen(body), 1, &r, &types, &big, &unsupported, err,
		    sizeof(err));
		break;
	}
	if (rc != 0) {
		fprintf(stderr, "publish_parse: %s\n", err);
		exit(1);
	}
	publish_req_free(r);
	return 0;
}

static void row(const char *name, enum kind k, const char *body, int iters, int records)
{
	double t[RUNS];

	for (int run = 0; run < RUNS; run++) {
		double start = now_ns();
		for (int i = 0; i < iters; i++)
			one(k, body);
		t[run] = (now_ns() - start) / iters;
	}
	qsort(t, RUNS, sizeof(t[0]), cmp);
	printf("%-20s %12.0f ns/request %9.0f ns/record\n", name, t[0],
	    t[0] / records);
}

int main(void)
{
	char value[257];
	char *native = batch_body("{\"key\":\"k%d\",\"value\":{\"n\":1,\"s\":\"abcdefghij\"}}%s");
	char *v2json = batch_body("{\"key\":\"k%d\",\"value\":{\"n\":1,\"s\":\"abcdefghij\"}}%s");
	char *v2bin = batch_body("{\"key\":\"azE=\",\"value\":\"eyJuIjoxLCJzIjoiYWJjZGVmZ2hpaiJ9\","
				 "\"partition\":%d}%s");
	char *b64 = batch_body("{\"key_b64\":\"azE=\",\"value_b64\":"
			       "\"eyJuIjoxLCJzIjoiYWJjZGVmZ2hpaiJ9\",\"partition\":%d}%s");
	char *str = batch_body("{\"value\":\"%0256d\"}%s");
	const char *v3 = "{\"headers\":[{\"name\":\"h\",\"value\":\"AAE=\"}],\"key\":{\"type\":"
			 "\"STRING\",\"data\":\"k1\"},\"value\":{\"type\":\"JSON\",\"data\":{\"n\":1,"
			 "\"s\":\"abcdefghij\"}}}";

	memset(value, 'x', 256);
	value[256] = '\0';
	row("single", SINGLE, value, 200000, 1);
	row("single, no trace", SINGLE_NO_TRACE, value, 200000, 1);
	row("single + trace", SINGLE_TRACE, value, 200000, 1);
	row("batch native 1000", NATIVE, native, 200, RECORDS);
	row("batch native str", NATIVE, str, 200, RECORDS);
	row("same, general", NATIVE_GENERAL, str, 200, RECORDS);
	row("batch v2 json 1000", V2_JSON, v2json, 200, RECORDS);
	row("batch native b64", NATIVE_B64, b64, 200, RECORDS);
	row("batch v2 bin 1000", V2_BIN, v2bin, 200, RECORDS);
	row("v3 single", V3, v3, 50000, 1);
	free(native);
	free(v2json);
	free(v2bin);
	free(b64);
	free(str);
	return 0;
}
