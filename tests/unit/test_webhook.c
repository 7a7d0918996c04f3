/*
 * webhook: what a request is never sent without. Drives webhook_send()
 * with libcurl but no endpoint: nothing here waits for an answer.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "conf.h"
#include "webhook.h"

static struct conf_sub sub_with(char **secrets, size_t nsecrets)
{
	static char name[] = "s", url[] = "http://127.0.0.1:9/hook", none[] = "";
	struct conf_sub cs = {
		.name = name,
		.url = url,
		.unix_socket = none,
		.secrets = { secrets, nsecrets },
		.timeout_ms = 1000,
		.max_in_flight = 4,
		.dead_letter_topic = none,
		.tls = { none, none, none },
		.oauth2 = { none, none, none, none },
	};
	return cs;
}

static const struct webhook_msg msg = {
	.topic = "t", .partition = 0, .offset = 7, .value = "v", .value_len = 1,
	.timestamp_ms = -1, .id = "msg_1", .attempt = 1,
};

/* A signature that cannot be computed: the request is not sent at all. */
static void test_signing_fails_closed(void **state)
{
	char *bad[] = { "whsec_%%%%not-base64%%%%" };
	struct conf_sub cs = sub_with(bad, 1);
	char err[128] = "";
	struct webhook *wh = webhook_new(&cs, err, sizeof(err));

	(void)state;
	assert_non_null(wh);
	assert_int_equal(webhook_send(wh, &msg, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "signature"));
	assert_int_equal(webhook_in_flight(wh), 0);
	/* The handle went back to the free list: a second try fails the same way. */
	assert_int_equal(webhook_send(wh, &msg, NULL, err, sizeof(err)), -1);
	assert_int_equal(webhook_in_flight(wh), 0);
	webhook_free(wh);
}

/* The same subscription with a good secret does send. */
static void test_signed_request_starts(void **state)
{
	char *good[] = { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
	struct conf_sub cs = sub_with(good, 1);
	char err[128] = "";
	struct webhook *wh = webhook_new(&cs, err, sizeof(err));

	(void)state;
	assert_non_null(wh);
	assert_int_equal(webhook_send(wh, &msg, NULL, err, sizeof(err)), 0);
	assert_int_equal(webhook_in_flight(wh), 1);
	webhook_free(wh);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signing_fails_closed),
		cmocka_unit_test(test_signed_request_starts),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
