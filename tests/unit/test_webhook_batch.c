/*
 * Unit tests for webhook_batch.c: UTF-8 validation, the JSON body of a batch
 * request byte for byte, and its webhook-id (docs/webhooks.md, "Batches").
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

#include "webhook_batch.h"

#define U8(s) utf8_valid((s), sizeof(s) - 1)

static void test_utf8(void **state)
{
	(void)state;
	assert_true(U8(""));
	assert_true(U8("plain ascii \x01\x7f"));
	assert_true(U8("\xc3\xa9"));             /* é */
	assert_true(U8("\xe2\x9c\x93"));         /* ✓ */
	assert_true(U8("\xf0\x9f\x98\x80"));     /* U+1F600 */
	assert_true(U8("\xf4\x8f\xbf\xbf"));     /* U+10FFFF */
	assert_false(U8("\xff"));
	assert_false(U8("\xc3\x28"));            /* bad continuation */
	assert_false(U8("\xc0\xaf"));            /* overlong */
	assert_false(U8("\xe0\x80\xaf"));        /* overlong */
	assert_false(U8("\xed\xa0\x80"));        /* a surrogate */
	assert_false(U8("\xf4\x90\x80\x80"));    /* above U+10FFFF */
	assert_false(U8("\xe2\x9c"));            /* cut short */
	assert_false(U8("ok\x80"));
}

static void test_body(void **state)
{
	struct webhook_hdr h0[] = {
		{ "content-type", "text/plain", 10 },
		{ "bin", "\xff\x00", 2 },
		{ "content-type", "again", 5 },
		{ "none", NULL, 0 },
	};
	struct webhook_msg ms[] = {
		{ .topic = "orders", .partition = 0, .offset = 41, .key = "k1", .key_len = 2,
		  .value = "te\"xt\\\n\x01", .value_len = 8, .hdrs = h0, .nhdrs = 4,
		  .timestamp_ms = 1733240000000, .id = "id1" },
		{ .topic = "orders", .partition = 2, .offset = 7, .key = NULL, .key_len = 0,
		  .value = "\x00\xff", .value_len = 2, .hdrs = NULL, .nhdrs = 0,
		  .timestamp_ms = -1, .id = "msg_x" },
		{ .topic = "orders", .partition = 2, .offset = 8, .key = "\xc3\x28", .key_len = 2,
		  .value = NULL, .value_len = 0, .hdrs = NULL, .nhdrs = 0,
		  .timestamp_ms = 0, .id = "msg_y" },
	};
	struct wbuf b = { NULL, 0, 0 };
	const char *want =
	    "{\"messages\":["
	    "{\"id\":\"id1\",\"topic\":\"orders\",\"partition\":0,\"offset\":41,"
	    "\"timestamp\":1733240000000,\"key\":\"k1\",\"value\":\"te\\\"xt\\\\\\n\\u0001\","
	    "\"headers\":{\"content-type\":\"text/plain\",\"none\":null},"
	    "\"headers_b64\":{\"bin\":\"/wA=\"}},"
	    "{\"id\":\"msg_x\",\"topic\":\"orders\",\"partition\":2,\"offset\":7,"
	    "\"timestamp\":null,\"key\":null,\"value_b64\":\"AP8=\",\"headers\":{}},"
	    "{\"id\":\"msg_y\",\"topic\":\"orders\",\"partition\":2,\"offset\":8,"
	    "\"timestamp\":0,\"key_b64\":\"wyg=\",\"value\":\"\",\"headers\":{}}"
	    "]}";

	(void)state;
	webhook_batch_body(&b, ms, 3);
	assert_int_equal(b.len, strlen(want));
	assert_memory_equal(b.p, want, b.len);
	/* Reused: the second body replaces the first. */
	webhook_batch_body(&b, ms + 1, 1);
	assert_int_equal(b.len, strlen("{\"messages\":[{\"id\":\"msg_x\",\"topic\":\"orders\","
	    "\"partition\":2,\"offset\":7,\"timestamp\":null,\"key\":null,\"value_b64\":\"AP8=\","
	    "\"headers\":{}}]}"));
	free(b.p);
}

static void test_id(void **state)
{
	struct webhook_msg ms[] = {
		{ .topic = "orders", .partition = 0, .offset = 41, .id = "a" },
		{ .topic = "orders", .partition = 2, .offset = 7, .id = "b" },
	};
	char id[WEBHOOK_ID_MAX];

	(void)state;
	/* python3: "batch_" + sha256(b"orders/0/41\norders/2/7\n").hexdigest()[:32] */
	webhook_batch_id(ms, 2, id);
	assert_string_equal(id, "batch_0f3248e39ea63e7b3328c368f7dc2110");
	/* The order is part of it. */
	struct webhook_msg rev[] = { ms[1], ms[0] };
	char id2[WEBHOOK_ID_MAX];
	webhook_batch_id(rev, 2, id2);
	assert_string_not_equal(id, id2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_utf8),
		cmocka_unit_test(test_body),
		cmocka_unit_test(test_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
