/*
 * test_backoff: backoff delays and their bounds, Retry-After in every form
 * RFC 9110 allows, and the verdict on every HTTP status.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "backoff.h"

#define DAY_MS INT64_C(86400000)

/* initial * 2^(attempt-1) capped at max, computed without shifts that could overflow. */
static int64_t expected_base(const struct conf_retry *r, int attempt)
{
	int64_t b = r->initial_ms < r->max_ms ? r->initial_ms : r->max_ms;

	for (int i = 1; i < attempt; i++) {
		if (b >= r->max_ms)
			break;
		b = b * 2 < r->max_ms ? b * 2 : r->max_ms;
	}
	return b;
}

static void check_bounds(const struct conf_retry *r)
{
	const uint32_t rnds[] = { 0, UINT32_MAX, UINT32_C(1) << 31, 12345, 0xdeadbeef };
	int64_t prev[5] = { 0 };

	for (int attempt = 1; attempt <= 1000; attempt++) {
		int64_t b = expected_base(r, attempt);

		for (size_t k = 0; k < 5; k++) {
			int64_t d = backoff_delay_ms(r, attempt, rnds[k]);

			/* round(0.8 b) <= d <= round(1.2 b), not below the last attempt. */
			assert_true(d >= (b * 8 + 5) / 10);
			assert_true(d <= (b * 12 + 5) / 10);
			assert_true(d >= prev[k]);
			prev[k] = d;
		}
		/* The ends of the jitter range are reached exactly; the middle is the base. */
		assert_int_equal(backoff_delay_ms(r, attempt, 0), (b * 8 + 5) / 10);
		assert_int_equal(backoff_delay_ms(r, attempt, UINT32_MAX), (b * 12 + 5) / 10);
		assert_true(llabs(backoff_delay_ms(r, attempt, UINT32_C(1) << 31) - b) <= 1);
	}
}

static void test_backoff_delay(void **state)
{
	struct conf_retry dflt = { .initial_ms = 500, .max_ms = 60000 };
	struct conf_retry tiny = { .initial_ms = 1, .max_ms = DAY_MS };
	struct conf_retry flat = { .initial_ms = DAY_MS, .max_ms = DAY_MS };
	struct conf_retry inverted = { .initial_ms = 1000, .max_ms = 500 };
	struct conf_retry one = { .initial_ms = 1, .max_ms = 1 };

	(void)state;
	check_bounds(&dflt);
	check_bounds(&tiny);
	check_bounds(&flat);
	check_bounds(&inverted);
	check_bounds(&one);

	/* The documented sequence: 500, 1000, 2000, ... up to the cap. */
	assert_int_equal(backoff_delay_ms(&dflt, 1, UINT32_C(1) << 31), 500);
	assert_int_equal(backoff_delay_ms(&dflt, 2, UINT32_C(1) << 31), 1000);
	assert_int_equal(backoff_delay_ms(&dflt, 3, UINT32_C(1) << 31), 2000);
	assert_int_equal(backoff_delay_ms(&dflt, 7, UINT32_C(1) << 31), 32000);
	assert_int_equal(backoff_delay_ms(&dflt, 8, UINT32_C(1) << 31), 60000);
	assert_int_equal(backoff_delay_ms(&dflt, 8, 0), 48000);
	assert_int_equal(backoff_delay_ms(&dflt, 8, UINT32_MAX), 72000);

	/* Attempt numbers below 1 count as 1; huge ones stay at the cap. */
	assert_int_equal(backoff_delay_ms(&dflt, 0, 0), 400);
	assert_int_equal(backoff_delay_ms(&dflt, -7, 0), 400);
	assert_int_equal(backoff_delay_ms(&dflt, INT32_MAX, UINT32_MAX), 72000);
	assert_int_equal(backoff_delay_ms(&tiny, INT32_MAX, 0), DAY_MS * 8 / 10);
	assert_int_equal(backoff_delay_ms(&one, 1, 0), 1);
}

static int64_t parse_ok(const char *v, int64_t now, int64_t cap)
{
	int64_t d = -12345;

	if (retry_after_parse(v, now, cap, &d) != 0)
		fail_msg("\"%s\" was rejected", v);
	assert_true(d >= 0);
	return d;
}

static void assert_rejected(const char *v)
{
	int64_t d = -12345;

	if (retry_after_parse(v, 1445412480000, 300000, &d) != -1)
		fail_msg("\"%s\" was accepted", v);
	assert_int_equal(d, -12345);
}

static void test_retry_after_seconds(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("0", 0, 300000), 0);
	assert_int_equal(parse_ok("120", 0, 300000), 120000);
	assert_int_equal(parse_ok("300", 0, 300000), 300000);
	assert_int_equal(parse_ok("301", 0, 300000), 300000);
	assert_int_equal(parse_ok("007", 0, 300000), 7000);
	assert_int_equal(parse_ok("9223372036854775807", 0, 300000), 300000);
	assert_int_equal(parse_ok("99999999999999999999999999999999999999999999999999", 0, 300000),
	    300000);
	assert_int_equal(parse_ok("5", 0, 0), 0);
	assert_int_equal(parse_ok("1", 0, 1500), 1000);
	assert_int_equal(parse_ok("2", 0, 1500), 1500);
	assert_int_equal(parse_ok("9223372036854775807", 0, INT64_MAX), INT64_MAX);

	/* The field value excludes surrounding whitespace; a header callback may leave CRLF. */
	assert_int_equal(parse_ok(" 5", 0, 300000), 5000);
	assert_int_equal(parse_ok("5 \t", 0, 300000), 5000);
	assert_int_equal(parse_ok("5\r\n", 0, 300000), 5000);

	/* delay-seconds = 1*DIGIT: no sign, fraction, exponent or inner space. */
	assert_rejected("-1");
	assert_rejected("+1");
	assert_rejected("1.5");
	assert_rejected("1e3");
	assert_rejected("5 5");
	assert_rejected("0x10");
	assert_rejected("abc");
	assert_rejected("");
	assert_rejected("   ");
	assert_rejected("\r\n");
}

static void test_retry_after_dates(void **state)
{
	const int64_t t = INT64_C(1445412480000); /* Wed, 21 Oct 2015 07:28:00 GMT */
	const int64_t big = INT64_MAX;

	(void)state;
	/* The three forms of RFC 9110 section 5.6.7, one minute ahead. */
	assert_int_equal(parse_ok("Wed, 21 Oct 2015 07:28:00 GMT", t - 60000, big), 60000);
	assert_int_equal(parse_ok("Wednesday, 21-Oct-15 07:28:00 GMT", t - 60000, big), 60000);
	assert_int_equal(parse_ok("Wed Oct 21 07:28:00 2015", t - 60000, big), 60000);
	assert_int_equal(parse_ok("Sun Nov  6 08:49:37 1994", INT64_C(784111777000) - 1000, big),
	    1000);
	assert_int_equal(parse_ok("Sun, 06 Nov 1994 08:49:37 GMT", INT64_C(784111777000) - 1, big),
	    1);
	assert_int_equal(parse_ok(" Wed, 21 Oct 2015 07:28:00 GMT\r\n", t - 1, big), 1);

	/* Now or in the past: no wait. Far ahead: the cap. */
	assert_int_equal(parse_ok("Wed, 21 Oct 2015 07:28:00 GMT", t, big), 0);
	assert_int_equal(parse_ok("Wed, 21 Oct 2015 07:28:00 GMT", t + 1, big), 0);
	assert_int_equal(parse_ok("Thu, 01 Jan 1970 00:00:00 GMT", t, big), 0);
	assert_int_equal(parse_ok("Wed, 21 Oct 2015 07:28:00 GMT", t - 3600000, 300000), 300000);
	assert_int_equal(parse_ok("Fri, 31 Dec 9999 23:59:59 GMT", t, 300000), 300000);

	/* A two-digit year more than 50 years ahead is the past century (now: 2025-01-01). */
	{
		const int64_t y2025 = INT64_C(1735689600000), y2075 = INT64_C(3313526400000);

		assert_int_equal(parse_ok("Tuesday, 01-Jan-75 00:00:00 GMT", y2025, big),
		    y2075 - y2025);
		assert_int_equal(parse_ok("Wednesday, 01-Jan-76 00:00:00 GMT", y2025, big), 0);
		assert_int_equal(parse_ok("Sunday, 06-Nov-94 08:49:37 GMT", y2025, big), 0);
	}

	/* Calendar edges: leap days, a leap second. */
	assert_int_equal(parse_ok("Mon, 29 Feb 2016 00:00:00 GMT", INT64_C(1456704000000) - 5, big),
	    5);
	assert_int_equal(parse_ok("Tue, 29 Feb 2000 00:00:00 GMT", INT64_C(951782400000) - 5, big),
	    5);
	assert_int_equal(parse_ok("Sat, 31 Dec 2016 23:59:60 GMT", INT64_C(1483228800000) - 5, big),
	    5);
	assert_rejected("Mon, 29 Feb 2100 00:00:00 GMT");
	assert_rejected("Sun, 29 Feb 2015 00:00:00 GMT");
	assert_rejected("Wed, 31 Feb 2015 07:28:00 GMT");
	assert_rejected("Wed, 00 Oct 2015 07:28:00 GMT");
	assert_rejected("Wed, 32 Oct 2015 07:28:00 GMT");
	assert_rejected("Wed, 21 Oct 2015 24:00:00 GMT");
	assert_rejected("Wed, 21 Oct 2015 07:60:00 GMT");
	assert_rejected("Wed, 21 Oct 2015 07:28:61 GMT");

	/* Not one of the forms: case, zone, spacing, trailing text, truncation. */
	assert_rejected("wed, 21 oct 2015 07:28:00 gmt");
	assert_rejected("Wed, 21 Oct 2015 07:28:00 UTC");
	assert_rejected("Wed, 21 Oct 2015 07:28:00 +0000");
	assert_rejected("Wed, 21 Oct 2015 07:28:00");
	assert_rejected("Wed, 21 Oct 2015 07:28:00 GMT x");
	assert_rejected("Wed, 21 Oct 2015  07:28:00 GMT");
	assert_rejected("Wed, 1 Oct 2015 07:28:00 GMT");
	assert_rejected("Wed, 21 Oct 15 07:28:00 GMT");
	assert_rejected("Wed, 21 Okt 2015 07:28:00 GMT");
	assert_rejected("Xyz, 21 Oct 2015 07:28:00 GMT");
	assert_rejected("Wednesday, 21-Oct-2015 07:28:00 GMT");
	assert_rejected("Wed, 21-Oct-15 07:28:00 GMT");
	assert_rejected("Wed Oct 21 07:28:00 15");
	assert_rejected("Wed Oct 6 07:28:00 2015");
	assert_rejected("Wed Oct 21 7:28:00 2015");
	assert_rejected("2015-10-21T07:28:00Z");
	assert_rejected("Wed, 21 Oct 2015 07:28:00 GMT Wed, 21 Oct 2015 07:28:00 GMT");
}

/*
 * Every day from 1970 to 2100 at a varying time: the parser agrees with
 * gmtime_r() on the instant. Names come from our own tables, so the
 * process locale plays no part.
 */
static void test_retry_after_calendar(void **state)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul",
		"Aug", "Sep", "Oct", "Nov", "Dec" };

	(void)state;
	for (int64_t s = 0; s < INT64_C(4102444800); s += 86400 + 3797) {
		time_t tt = (time_t)s;
		struct tm tm;
		char imf[40], asc[40];

		assert_non_null(gmtime_r(&tt, &tm));
		snprintf(imf, sizeof(imf), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday],
		    tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
		    tm.tm_sec);
		snprintf(asc, sizeof(asc), "%s %s %2d %02d:%02d:%02d %04d", days[tm.tm_wday],
		    months[tm.tm_mon], tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		    tm.tm_year + 1900);
		assert_int_equal(parse_ok(imf, 0, INT64_MAX), s * 1000);
		assert_int_equal(parse_ok(asc, 0, INT64_MAX), s * 1000);
	}
}

struct verdict_row {
	long first, last;
	enum webhook_verdict v;
};

/* The answer table of docs/webhooks.md, broad ranges first; later rows override earlier ones. */
static const struct verdict_row verdict_table[] = {
	{ 100, 199, VERDICT_RETRY },
	{ 200, 299, VERDICT_DELIVERED },
	{ 300, 399, VERDICT_RETRY },
	{ 400, 499, VERDICT_POISON },
	{ 401, 401, VERDICT_RETRY },
	{ 403, 403, VERDICT_RETRY },
	{ 404, 404, VERDICT_RETRY },
	{ 408, 408, VERDICT_RETRY },
	{ 410, 410, VERDICT_PAUSE },
	{ 425, 425, VERDICT_RETRY },
	{ 429, 429, VERDICT_RETRY },
	{ 500, 599, VERDICT_RETRY },
};

static void test_verdict_every_status(void **state)
{
	enum webhook_verdict want[600] = { VERDICT_RETRY };

	(void)state;
	for (size_t r = 0; r < sizeof(verdict_table) / sizeof(verdict_table[0]); r++)
		for (long s = verdict_table[r].first; s <= verdict_table[r].last; s++)
			want[s] = verdict_table[r].v;
	for (long s = 100; s <= 599; s++)
		if (webhook_verdict(s) != want[s])
			fail_msg("status %ld: %s, want %s", s,
			    webhook_verdict_str(webhook_verdict(s)), webhook_verdict_str(want[s]));

	/* The rows docs/webhooks.md names, spelled out. */
	assert_int_equal(webhook_verdict(200), VERDICT_DELIVERED);
	assert_int_equal(webhook_verdict(204), VERDICT_DELIVERED);
	assert_int_equal(webhook_verdict(400), VERDICT_POISON);
	assert_int_equal(webhook_verdict(413), VERDICT_POISON);
	assert_int_equal(webhook_verdict(415), VERDICT_POISON);
	assert_int_equal(webhook_verdict(422), VERDICT_POISON);
	assert_int_equal(webhook_verdict(429), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(503), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(301), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(410), VERDICT_PAUSE);

	/* No answer, and numbers outside 100-599. */
	assert_int_equal(webhook_verdict(0), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(-1), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(99), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(600), VERDICT_RETRY);
	assert_int_equal(webhook_verdict(999), VERDICT_RETRY);

	assert_string_equal(webhook_verdict_str(VERDICT_DELIVERED), "delivered");
	assert_string_equal(webhook_verdict_str(VERDICT_POISON), "poison");
	assert_string_equal(webhook_verdict_str(VERDICT_RETRY), "retry");
	assert_string_equal(webhook_verdict_str(VERDICT_PAUSE), "pause");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_backoff_delay),
		cmocka_unit_test(test_retry_after_seconds),
		cmocka_unit_test(test_retry_after_dates),
		cmocka_unit_test(test_retry_after_calendar),
		cmocka_unit_test(test_verdict_every_status),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
