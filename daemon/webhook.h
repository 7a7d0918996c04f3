/*
 * webhook: HTTP requests to one subscription's endpoint, sent by ackd's own
 * HTTP/1.1 client (webhook_h1.h) when the endpoint needs no DNS, TLS or proxy,
 * else by libcurl's multi interface. The caller (the subscription's thread) starts requests,
 * polls, and collects finished ones; nothing here blocks except
 * webhook_poll(), which is the thread's one place to sleep.
 */
#ifndef ACKD_WEBHOOK_H
#define ACKD_WEBHOOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#ifndef MUST_USE /* as in util.h, which this header does not pull in */
#define MUST_USE __attribute__((warn_unused_result))
#endif

struct webhook;

/* One Kafka header of the message, borrowed. */
struct webhook_hdr {
	const char *name;
	const void *value; /* NULL: a header without a value */
	size_t value_len;
};

/* What one POST carries; all borrowed until the request finishes. */
struct webhook_msg {
	const char *topic;
	int32_t partition;
	int64_t offset;
	const void *key; /* NULL: no key */
	size_t key_len;
	const void *value;
	size_t value_len;
	const struct webhook_hdr *hdrs;
	size_t nhdrs;
	int64_t timestamp_ms; /* the record's time; -1 if none */
	const char *id;       /* webhook-id */
	int attempt;          /* 1 on the first try */
};

/* How a request ended. */
struct webhook_answer {
	long status;            /* HTTP status, 0 when there was no answer */
	int64_t retry_after_ms; /* from Retry-After, capped; -1 without one */
	const char *error;      /* the client's reason when status is 0 */
	bool timed_out;         /* no answer within timeout_ms */
	const char *body;       /* a batch request's answer body (NUL-terminated, at
	                         * most WEBHOOK_ANSWER_MAX bytes kept), else NULL */
	size_t body_len;
};

#define WEBHOOK_ANSWER_MAX (1u << 20)

/* The endpoint of cs (borrowed; must outlive the webhook). */
struct webhook *webhook_new(const struct conf_sub *cs, char *err, size_t errlen);
void webhook_free(struct webhook *wh); /* NULL ok; aborts requests in flight */

/*
 * Start a POST of m; tag comes back with its answer. 0, or -1 with err (the
 * signature cannot be computed: nothing is sent unsigned; libcurl refused).
 */
MUST_USE int webhook_send(struct webhook *wh, const struct webhook_msg *m, void *tag, char *err,
    size_t errlen);

/*
 * Start a POST of the n messages of ms as one batch (docs/webhooks.md,
 * "Batches"): a JSON body built from them (so they need not outlive the
 * call), webhook-id id, ackd-attempt attempt. tag comes back with its
 * answer, whose body is kept for a 207. 0, or -1 with err as webhook_send().
 */
MUST_USE int webhook_send_batch(struct webhook *wh, const struct webhook_msg *ms, size_t n,
    const char *id, int attempt, void *tag, char *err, size_t errlen);

/*
 * Sleep until a request makes progress, extra_fd is readable, or timeout_ms
 * passes; then make progress. extra_fd is the thread's wake-up pipe.
 */
void webhook_poll(struct webhook *wh, int extra_fd, int timeout_ms);

/* Hand each finished request to done(arg, tag, answer); returns how many. */
typedef void webhook_done_fn(void *arg, void *tag, const struct webhook_answer *a);
size_t webhook_collect(struct webhook *wh, webhook_done_fn *done, void *arg);

size_t webhook_in_flight(const struct webhook *wh);

#endif
