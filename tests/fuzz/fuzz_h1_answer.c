/*
 * fuzz_h1_answer: the lean webhook client's answer parser (webhook_h1.c)
 * on arbitrary bytes from the peer.
 *
 * The first byte picks where the input is cut into two reads (and whether
 * the connection ends after it); the rest is the answer. The input is fed
 * whole, in the two pieces, and byte by byte, each time as the client feeds
 * it (what a call leaves unused comes again in front of the next read). The
 * oracle: all three give the same outcome (state, status, framing, body,
 * Retry-After, bytes used); a finished answer used no more than it was
 * given and its status is 100-999; an error has a reason; the body never
 * holds more bytes than the input; and the connection's read buffer (the
 * bytes left unused in the middle of a line) never exceeds the header bound.
 *
 * With libFuzzer:
 *   clang -g -fsanitize=fuzzer,address,undefined \
 *     -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -Idaemon -I<build dir> \
 *     tests/fuzz/fuzz_h1_answer.c daemon/webhook_h1.c daemon/util.c daemon/log.c -lcurl
 * Otherwise main() replays files and directories given as arguments (the
 * corpus tests/fuzz/corpus/h1_answer when none are), which is how
 * `make check` runs it with gcc.
 */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook_h1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what)
{
	if (!ok) {
		fprintf(stderr, "fuzz_h1_answer: broken: %s\n", what);
		abort();
	}
}

struct outcome {
	struct h1_parser p;
	size_t used, body_len;
	uint64_t body_sum;
	size_t most_left; /* most bytes left unused at once */
};

static void body_to(void *arg, const char *p, size_t n)
{
	struct outcome *o = arg;

	o->body_len += n;
	for (size_t i = 0; i < n; i++)
		o->body_sum = o->body_sum * 31 + (unsigned char)p[i];
}

/* Feed in at the given read boundaries (each the end of one read). */
static void feed(struct outcome *o, const char *in, size_t len, size_t step, size_t cut, int eof)
{
	size_t have = 0;

	memset(o, 0, sizeof(*o));
	h1_parser_init(&o->p);
	while (have < len) {
		size_t end = step ? have + step : (cut > have ? cut : len);
		if (end > len)
			end = len;
		have = end;
		o->used += h1_parse(&o->p, in + o->used, have - o->used, body_to, o);
		if (o->p.state == H1_DONE || o->p.state == H1_ERROR)
			break;
		check(o->used <= have, "used more than given");
		if (have - o->used > o->most_left)
			o->most_left = have - o->used;
	}
	if (eof && o->p.state != H1_DONE && o->p.state != H1_ERROR)
		(void)h1_parse_eof(&o->p);
}

static void same(const struct outcome *a, const struct outcome *b)
{
	check(a->p.state == b->p.state, "state differs by split");
	check(a->p.status == b->p.status, "status differs by split");
	check(a->p.close == b->p.close, "close differs by split");
	check(a->used == b->used, "bytes used differ by split");
	check(a->body_len == b->body_len && a->body_sum == b->body_sum, "body differs by split");
	check(strcmp(a->p.retry_after, b->p.retry_after) == 0, "Retry-After differs by split");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct outcome whole, two, bytes;
	const char *in = (const char *)data + 1;
	size_t len, cut;
	int eof;

	if (size < 1)
		return 0;
	len = size - 1;
	eof = data[0] & 1;
	cut = len ? (size_t)(data[0] >> 1) * len / 128 : 0;
	feed(&whole, in, len, 0, len, eof);
	feed(&two, in, len, 0, cut, eof);
	feed(&bytes, in, len, 1, 0, eof);
	same(&whole, &two);
	same(&whole, &bytes);
	check(whole.used <= len, "used more than the input");
	check(whole.body_len <= len, "body larger than the input");
	check(bytes.most_left <= H1_HEADER_MAX, "read buffer beyond the header bound");
	switch (whole.p.state) {
	case H1_DONE:
		check(whole.p.status >= 100 && whole.p.status <= 999, "status out of range");
		check(whole.p.status >= 200, "an interim answer taken as the answer");
		break;
	case H1_ERROR:
		check(whole.p.error && whole.p.error[0], "error without a reason");
		break;
	default:
		check(!eof, "still open after the end of the connection");
		break;
	}
	return 0;
}
