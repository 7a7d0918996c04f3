/*
 * fuzz_publish_batch: publish_batch() on arbitrary bodies.
 *
 * Any input must give either a batch whose every message is well formed (a
 * value, the topic, an ackd-id header equal to its id, ids increasing) or -1
 * with a non-empty error; anything else aborts. Sanitizers catch the rest.
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct publish_req *r = NULL;
	int too_many = -1;
	char err[256];

	err[0] = '\0';
	if (publish_batch("fuzz", (const char *)data, size, FUZZ_MAX_RECORDS, 1, &r, &too_many, err,
		sizeof(err)) != 0) {
		check(r == NULL, "result on failure");
		check(err[0] != '\0', "empty error message");
		check(too_many == 0 || too_many == 1, "too_many not set");
		return 0;
	}
	check(r != NULL && r->n >= 1 && r->n <= FUZZ_MAX_RECORDS, "record count");
	check(too_many == 0, "too_many on success");
	for (size_t i = 0; i < r->n; i++) {
		const struct spool_msg *m = &r->msgs[i];
		const struct spool_hdr *id = &m->hdrs[m->nhdrs - 1];

		check(m->value != NULL, "value");
		check(m->topic_len == 4 && memcmp(m->topic, "fuzz", 4) == 0, "topic");
		check(m->partition >= -1, "partition");
		check(m->timestamp_ms == 1, "timestamp");
		check(m->nhdrs >= 1 && id->name_len == 7 && memcmp(id->name, "ackd-id", 7) == 0,
		    "ackd-id header");
		check(id->value_len == PUBLISH_ID_LEN &&
			  memcmp(id->value, r->ids[i], PUBLISH_ID_LEN) == 0,
		    "ackd-id value");
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
	return 0;
}
