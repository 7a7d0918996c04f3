/*
 * backoff: when to try a webhook again, and what an answer means.
 * Pure functions, no I/O, no clocks (callers pass the time in).
 */
#ifndef ACKD_BACKOFF_H
#define ACKD_BACKOFF_H

#include <stdint.h>

#include "conf.h"

/*
 * The delay before attempt number attempt + 1, after attempt failed
 * (attempt >= 1; less counts as 1): initial_ms * 2^(attempt-1), capped at
 * max_ms, times a jitter factor in [0.8, 1.2] taken from rnd (uniform 32
 * random bits: 0 gives 0.8, UINT32_MAX gives 1.2). Any attempt is safe from
 * overflow.
 */
int64_t backoff_delay_ms(const struct conf_retry *r, int attempt, uint32_t rnd);

/*
 * A Retry-After header value, delta-seconds or an HTTP-date (RFC 9110:
 * IMF-fixdate, and the obsolete RFC 850 and asctime forms), as a delay from
 * now_wall_ms, capped at cap_ms and never negative (a date in the past is
 * 0). Surrounding whitespace, CR and LF are ignored. Returns 0 and
 * *delay_ms, or -1 when the value is not one of those forms.
 */
int retry_after_parse(const char *value, int64_t now_wall_ms, int64_t cap_ms, int64_t *delay_ms);

enum webhook_verdict {
	VERDICT_DELIVERED, /* 2xx: the offset may be committed */
	VERDICT_POISON,    /* to the dead-letter topic now */
	VERDICT_RETRY,     /* try again after a backoff */
	VERDICT_PAUSE,     /* 410: pause the subscription until reload */
};

/* The answer table of docs/webhooks.md; status 0 means no answer (timeout, connection error). */
enum webhook_verdict webhook_verdict(long status);

const char *webhook_verdict_str(enum webhook_verdict v);

#endif
