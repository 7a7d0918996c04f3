/*
 * pace: the token bucket and the AIMD window, driven with made-up times and
 * answers, including a simulated endpoint that takes at most K at once.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "pace.h"

static void test_fixed_window_is_max_in_flight(void **state)
{
	struct pace p;

	(void)state;
	pace_init(&p, 0, false, 64, 0);
	assert_int_equal(pace_window(&p), 64);
	pace_answer(&p, 0, 10, PACE_OVERLOAD, true);
	pace_answer(&p, 0, 10, pace_signal_of(0, true), true);
	assert_int_equal(pace_window(&p), 64);
	assert_int_equal(pace_wait_ms(&p, 0), 0); /* no rate limit */
}

static void test_signals(void **state)
{
	(void)state;
	assert_int_equal(pace_signal_of(200, false), PACE_OK);
	assert_int_equal(pace_signal_of(204, false), PACE_OK);
	assert_int_equal(pace_signal_of(429, false), PACE_OVERLOAD);
	assert_int_equal(pace_signal_of(503, false), PACE_OVERLOAD);
	assert_int_equal(pace_signal_of(0, true), PACE_OVERLOAD);   /* timeout */
	assert_int_equal(pace_signal_of(0, false), PACE_OTHER);     /* connection refused */
	assert_int_equal(pace_signal_of(500, false), PACE_OTHER);
	assert_int_equal(pace_signal_of(400, false), PACE_OTHER);
	assert_int_equal(pace_signal_of(401, false), PACE_OTHER);
}

static void test_adaptive_grows_and_halves(void **state)
{
	struct pace p;
	int64_t t = 0;

	(void)state;
	pace_init(&p, 0, true, 100, 0);
	assert_int_equal(pace_window(&p), 1);
	/* slow start: +1 per 2xx while full */
	for (int i = 0; i < 15; i++, t += 10)
		pace_answer(&p, t, t + 10, PACE_OK, true);
	assert_int_equal(pace_window(&p), 16);
	/* not full: no growth */
	pace_answer(&p, t, t + 10, PACE_OK, false);
	assert_int_equal(pace_window(&p), 16);
	/* a 429 halves it */
	t += 10;
	pace_answer(&p, t, t + 10, PACE_OVERLOAD, true);
	assert_int_equal(pace_window(&p), 8);
	/* answers to requests sent before that cut change nothing more */
	pace_answer(&p, t, t + 12, PACE_OVERLOAD, true);
	pace_answer(&p, t + 5, t + 12, PACE_OVERLOAD, true);
	assert_int_equal(pace_window(&p), 8);
	/* after the cut: +1 per round trip, that is per window of 2xx */
	t += 20;
	for (int i = 0; i < 8; i++, t += 10)
		pace_answer(&p, t, t + 10, PACE_OK, true);
	assert_int_equal(pace_window(&p), 9);
	/* never below 1 */
	for (int i = 0; i < 10; i++, t += 10)
		pace_answer(&p, t + 5, t + 10, PACE_OVERLOAD, true);
	assert_int_equal(pace_window(&p), 1);
}

static void test_adaptive_capped_by_max_in_flight(void **state)
{
	struct pace p;

	(void)state;
	pace_init(&p, 0, true, 4, 0);
	for (int64_t t = 0; t < 1000; t += 10)
		pace_answer(&p, t, t + 10, PACE_OK, true);
	assert_int_equal(pace_window(&p), 4);
}

static void test_latency_jump_halves(void **state)
{
	struct pace p;
	int64_t t = 0;

	(void)state;
	pace_init(&p, 0, true, 100, 0);
	for (int i = 0; i < 19; i++, t += 20)
		pace_answer(&p, t, t + 20, PACE_OK, true);
	assert_int_equal(pace_window(&p), 20);
	/* 20 ms before; 80 ms is within 2 x 20 + 50 */
	pace_answer(&p, t, t + 80, PACE_OK, false);
	assert_int_equal(pace_window(&p), 20);
	t += 100;
	/* 300 ms is a jump */
	pace_answer(&p, t, t + 300, PACE_OK, true);
	assert_int_equal(pace_window(&p), 10);
}

/*
 * An endpoint that takes at most K requests at once and answers 429 to the
 * rest, one round trip (10 ms) per request: ackd keeps its window full.
 * Once settled the window stays between K/2 and K+1, and 429s are rare.
 */
static void test_settles_near_endpoint_limit(void **state)
{
	enum { K = 8, ROUNDS = 400 };
	struct pace p;
	long answers = 0, rejected = 0, sum = 0, rounds = 0;

	(void)state;
	pace_init(&p, 0, true, 64, 0);
	for (int r = 0; r < ROUNDS; r++) {
		int64_t sent = r * 10;
		size_t w = pace_window(&p);

		for (size_t i = 0; i < w; i++) {
			bool over = i >= K;
			pace_answer(&p, sent, sent + 10, over ? PACE_OVERLOAD : PACE_OK, true);
			if (r >= ROUNDS / 2) {
				answers++;
				rejected += over;
			}
		}
		if (r >= ROUNDS / 2) {
			assert_in_range(w, K / 2, K + 1);
			sum += (long)w;
			rounds++;
		}
	}
	assert_in_range(sum / rounds, K / 2, K);
	assert_true(rejected * 20 < answers); /* under 5% */
}

static void test_token_bucket_rate(void **state)
{
	struct pace p;
	int sent = 0;

	(void)state;
	pace_init(&p, 100, false, 64, 0);
	/* a caller that sends whenever allowed, for 5 s in 1 ms steps */
	for (int64_t t = 0; t < 5000; t++) {
		while (pace_wait_ms(&p, t) == 0) {
			pace_sent(&p, t);
			sent++;
		}
	}
	assert_in_range(sent, 495, 511);
	/* after an idle spell: a tenth of a second's worth at once, no more */
	sent = 0;
	while (pace_wait_ms(&p, 60000) == 0) {
		pace_sent(&p, 60000);
		sent++;
	}
	assert_int_equal(sent, 10);
	/* and the wait for the next token: 10 ms at 100/s */
	assert_int_equal(pace_wait_ms(&p, 60000), 10);
	assert_int_equal(pace_wait_ms(&p, 60004), 6);
}

static void test_slow_rate(void **state)
{
	struct pace p;

	(void)state;
	pace_init(&p, 1, false, 64, 0);
	assert_int_equal(pace_wait_ms(&p, 0), 0);
	pace_sent(&p, 0);
	assert_int_equal(pace_wait_ms(&p, 0), 1000);
	assert_int_equal(pace_wait_ms(&p, 999), 1);
	assert_int_equal(pace_wait_ms(&p, 1000), 0);
}

static void test_batches_take_a_token_per_message(void **state)
{
	struct pace p;
	int messages = 0, requests = 0;

	(void)state;
	pace_init(&p, 100, false, 64, 0);
	/* batches of 25, bigger than the bucket (10): the rate still holds */
	for (int64_t t = 0; t < 5000; t++) {
		while (pace_wait_ms(&p, t) == 0) {
			pace_sent_n(&p, t, 25);
			messages += 25;
			requests++;
		}
	}
	assert_in_range(messages, 475, 525);
	assert_int_equal(messages, 25 * requests);
	/* after one batch of 25 from a full bucket: 15 in debt, 16 tokens to go */
	pace_init(&p, 100, false, 64, 0);
	assert_int_equal(pace_wait_ms(&p, 10000), 0);
	pace_sent_n(&p, 10000, 25);
	assert_int_equal(pace_wait_ms(&p, 10000), 160);
	/* no rate_limit: never waits */
	pace_init(&p, 0, false, 64, 0);
	pace_sent_n(&p, 0, 1000);
	assert_int_equal(pace_wait_ms(&p, 0), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixed_window_is_max_in_flight),
		cmocka_unit_test(test_signals),
		cmocka_unit_test(test_adaptive_grows_and_halves),
		cmocka_unit_test(test_adaptive_capped_by_max_in_flight),
		cmocka_unit_test(test_latency_jump_halves),
		cmocka_unit_test(test_settles_near_endpoint_limit),
		cmocka_unit_test(test_token_bucket_rate),
		cmocka_unit_test(test_slow_rate),
		cmocka_unit_test(test_batches_take_a_token_per_message),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
