/*
 * topics: what Kafka says about the topics that publish requests name.
 *
 * A cache in front of Kafka's metadata, so publish can answer 404
 * unknown_topic and reject a partition that does not exist, and so ackd warns
 * once per topic about settings under which acks=all can still lose data.
 */
#ifndef ACKD_TOPICS_H
#define ACKD_TOPICS_H

#include "conf.h"

struct topics;

enum topic_state {
	TOPIC_UNKNOWN = 0, /* not asked yet, or Kafka did not answer */
	TOPIC_EXISTS,
	TOPIC_MISSING,     /* Kafka said it does not exist */
	TOPIC_UNREACHABLE, /* Kafka did not answer lately: do not wait for it */
};

int topics_start(const struct conf *conf, struct topics **out, char *err, size_t errlen);
void topics_stop(struct topics *t); /* NULL ok; answers pending queries UNKNOWN */

/*
 * The cached state of topic and its partition count (any thread, no I/O).
 * TOPIC_UNKNOWN means ask with topics_query(); TOPIC_UNREACHABLE means a
 * query went unanswered in the last few seconds, so asking would only wait.
 */
enum topic_state topics_lookup(struct topics *t, const char *topic, int *partitions);

/*
 * Ask Kafka about topic; cb runs once, on the topics thread, with the answer
 * (TOPIC_UNREACHABLE when Kafka did not answer in time, TOPIC_UNKNOWN when
 * ackd is stopping). cb must not block.
 */
typedef void topics_cb(void *arg, enum topic_state st, int partitions);
void topics_query(struct topics *t, const char *topic, topics_cb *cb, void *arg);

/* Kafka answered a metadata request in the last 15 s (for /readyz). */
int topics_kafka_reachable(struct topics *t);

/*
 * 1 when Kafka refused the login (SASL or TLS) since its last metadata answer,
 * with librdkafka's reason in why; else 0.
 */
int topics_kafka_refused(struct topics *t, char *why, size_t len);

/* Brokers in Kafka's last metadata answer, 0 when it did not answer. */
int topics_brokers(struct topics *t);

#endif
