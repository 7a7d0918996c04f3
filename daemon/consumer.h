/*
 * consumer: webhook subscriptions. Each subscription consumes its topics in
 * its consumer group and POSTs every message to its endpoint, committing an
 * offset only after the endpoint answered 2xx or the message was written to
 * the dead-letter topic and Kafka acknowledged that.
 */
#ifndef ACKD_CONSUMER_H
#define ACKD_CONSUMER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "conf.h"
#include "metrics.h"

#ifndef MUST_USE /* as in util.h, which this header does not pull in */
#define MUST_USE __attribute__((warn_unused_result))
#endif

struct consumer;
struct spool;
struct producer;

/*
 * Start the subscription cs: its consumer and its thread. conf, cs, sp and
 * prod are borrowed and must outlive the consumer (dead letters go through
 * the spool and the producer like published messages).
 */
MUST_USE int consumer_start(const struct conf *conf, const struct conf_sub *cs, struct spool *sp,
    struct producer *prod, struct consumer **out, char *err, size_t errlen);

/*
 * Stop dispatching, wait up to the subscription's timeout for requests in
 * flight, commit what completed, leave the group. NULL ok.
 */
void consumer_stop(struct consumer *c);

const char *consumer_name(const struct consumer *c);

/* struct consumer_stats: metrics.h, which reads it at scrape time. */
void consumer_stats(struct consumer *c, struct consumer_stats *out);

/* Lag of one assigned partition: high watermark less the committed offset. */
struct consumer_lag {
	char topic[256];
	int32_t partition;
	int64_t lag; /* -1: not known yet */
	int64_t committed; /* the group's committed offset as ackd knows it, -1: none */
};

/* Copy up to max rows of the latest lag snapshot (any thread); returns the count. */
size_t consumer_lag(struct consumer *c, struct consumer_lag *out, size_t max);

/*
 * Hand a Control API command to the subscription's thread (any thread;
 * takes cmd until its done callback runs, on that thread or, when the
 * subscription stops first, on the one stopping it).
 */
struct control_cmd;
void consumer_control(struct consumer *c, struct control_cmd *cmd);

/* GET /v1/subscriptions: the subscription's state (json_decref()). Any thread. */
json_t *consumer_describe(struct consumer *c);

/* The subscription's request metrics (borrowed; lives as long as c). */
struct metrics_sub;
struct metrics_sub *consumer_metrics(struct consumer *c);

#endif
