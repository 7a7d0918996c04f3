/*
 * pace: rate limit and concurrency window of one subscription.
 *
 * Rate. A token bucket of rate_limit tokens a second holding at most a
 * tenth of a second's worth (at least one), so that over any second no
 * more than about 1.1 × rate_limit messages go out, and never a burst after
 * an idle spell. It starts with one token.
 *
 * Window (concurrency = "adaptive"), AIMD as TCP does it: starting at one,
 * the window doubles per round trip (+1 per 2xx) until the first sign of
 * overload, then grows by one per round trip (+1/window per 2xx). A 429, a
 * 503, a timeout, or a latency jump (an answer over twice the smoothed
 * latency of 2xx answers plus 50 ms) halves it, at most once per round
 * trip: answers to requests sent before the last decrease are ignored, as
 * they were sent under the old window. A 2xx grows the window only when the
 * window was full as the request went out, so a quiet subscription does not
 * creep up to max_in_flight without ever having tested it. The window stays
 * between 1 and max_in_flight. With concurrency = "fixed" it is
 * max_in_flight.
 *
 * Threads: the subscription's thread owns its struct pace.
 */
#include "config.h"

#include "pace.h"

/* Whole part of a non-negative x (no libm for two calls). */
#define WHOLE(x) ((double)(int64_t)(x))

#define JUMP_FACTOR 2.0
#define JUMP_SLACK_MS 50.0
#define BASE_WEIGHT 0.1 /* of each new 2xx latency in base_ms */

void pace_init(struct pace *p, int64_t rate_limit, bool adaptive, int64_t max_in_flight,
    int64_t now_ms)
{
	p->rate = rate_limit > 0 ? (double)rate_limit : 0;
	p->burst = p->rate / 10 > 1 ? p->rate / 10 : 1;
	p->tokens = 1;
	p->refilled_ms = now_ms;
	p->adaptive = adaptive;
	p->max = max_in_flight > 0 ? (double)max_in_flight : 1;
	p->window = adaptive ? 1 : p->max;
	p->ssthresh = p->max;
	p->base_ms = -1;
	p->cut_ms = -1;
}

size_t pace_window(const struct pace *p)
{
	double w = WHOLE(p->window);

	return w < 1 ? 1 : w > p->max ? (size_t)p->max : (size_t)w;
}

static void refill(struct pace *p, int64_t now_ms)
{
	if (now_ms <= p->refilled_ms)
		return;
	p->tokens += p->rate * (double)(now_ms - p->refilled_ms) / 1000;
	if (p->tokens > p->burst)
		p->tokens = p->burst;
	p->refilled_ms = now_ms;
}

int64_t pace_wait_ms(struct pace *p, int64_t now_ms)
{
	double ms;

	if (p->rate <= 0)
		return 0;
	refill(p, now_ms);
	if (p->tokens >= 1)
		return 0;
	ms = (1 - p->tokens) * 1000 / p->rate;
	return ms - WHOLE(ms) > 1e-6 ? (int64_t)ms + 1 : (int64_t)ms; /* rounded up */
}

void pace_sent(struct pace *p, int64_t now_ms)
{
	if (p->rate <= 0)
		return;
	refill(p, now_ms);
	p->tokens -= 1; /* may go below 0 only if the caller did not wait */
}

void pace_sent_n(struct pace *p, int64_t now_ms, size_t n)
{
	if (p->rate <= 0)
		return;
	refill(p, now_ms);
	p->tokens -= (double)n;
}

enum pace_signal pace_signal_of(long status, bool timed_out)
{
	if (status >= 200 && status < 300)
		return PACE_OK;
	if (status == 429 || status == 503 || (status == 0 && timed_out))
		return PACE_OVERLOAD;
	return PACE_OTHER;
}

void pace_answer(struct pace *p, int64_t sent_ms, int64_t now_ms, enum pace_signal sig,
    bool full)
{
	double latency = (double)(now_ms - sent_ms);

	if (!p->adaptive || sig == PACE_OTHER)
		return;
	if (sig == PACE_OK && p->base_ms >= 0 &&
	    latency > JUMP_FACTOR * p->base_ms + JUMP_SLACK_MS)
		sig = PACE_OVERLOAD; /* a latency jump: the endpoint is queueing */
	if (sig == PACE_OVERLOAD) {
		if (p->cut_ms >= 0 && sent_ms < p->cut_ms)
			return; /* sent under the window already cut */
		p->window = WHOLE(p->window) / 2;
		if (p->window < 1)
			p->window = 1;
		p->ssthresh = p->window;
		p->cut_ms = now_ms;
		return;
	}
	p->base_ms = p->base_ms < 0 ? latency :
				      (1 - BASE_WEIGHT) * p->base_ms + BASE_WEIGHT * latency;
	if (!full)
		return;
	p->window += p->window < p->ssthresh ? 1 : 1 / WHOLE(p->window);
	if (p->window > p->max)
		p->window = p->max;
}
