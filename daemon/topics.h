/*
 * topics: what Kafka says about the topics that publish requests name.
 *
 * A cache in front of Kafka's metadata, so publish can answer 404
 * unknown_topic and reject a partition that does not exist, and so ackd warns
 * once per topic about settings under which acks=all can still lose data.
 */
#ifndef ACKD_TOPICS_H
#define ACKD_TOPICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/*
 * Whether to ask Kafka about a known topic again (topics_query()) because a
 * request names a partition beyond its cached count: partitions can be added,
 * and the cache refreshes known topics only every minute. At most once per
 * TOPICS_RECHECK_MS per topic, none while the last is unanswered (unless
 * another answer about the topic, the minute's refresh, came meanwhile),
 * and none while Kafka does not answer, so a client naming a partition that
 * does not exist cannot make ackd ask Kafka once per request, nor queue
 * questions up.
 */
bool topics_recheck(struct topics *t, const char *topic);

/* Kafka answered a metadata request in the last 15 s (for /readyz). */
int topics_kafka_reachable(struct topics *t);

/*
 * 1 when Kafka refused the login (SASL or TLS) since its last metadata answer,
 * with librdkafka's reason in why; else 0.
 */
int topics_kafka_refused(struct topics *t, char *why, size_t len);

/* Brokers in Kafka's last metadata answer, 0 when it did not answer. */
int topics_brokers(struct topics *t);

/*
 * The cache behind topics_lookup(), without lock or I/O (the topics module
 * holds its lock around every call; tests use it directly). Known topics
 * stay; at most max_unknown names that are not known topics are kept, the
 * least recently used making room for the next.
 */
#define TOPICS_MAX_UNKNOWN 4096
struct topic_cache;
struct topic_cache *topic_cache_new(size_t max_unknown);
void topic_cache_free(struct topic_cache *c); /* NULL ok */
/* The cached state (TOPIC_UNKNOWN: ask Kafka); marks the name used. */
enum topic_state topic_cache_get(struct topic_cache *c, const char *name, int64_t now,
    int *partitions);
/*
 * Whether a known topic may be asked about again before REFRESH_MS (a request
 * names a partition beyond its cached count, and partitions can be added):
 * true at most once per TOPICS_RECHECK_MS per topic, and not while the last
 * such question is unanswered (topic_cache_put() with any answer ends it);
 * false for a name that is not a known topic.
 */
#define TOPICS_RECHECK_MS 1000
bool topic_cache_recheck(struct topic_cache *c, const char *name, int64_t now);
/* Kafka's answer (EXISTS or MISSING; others are ignored). 1 the first time it exists. */
int topic_cache_put(struct topic_cache *c, const char *name, enum topic_state st,
    int partitions, int64_t now);
/* Entries, and how many are not known topics. */
size_t topic_cache_size(const struct topic_cache *c, size_t *unknown);
/* Copy up to max names of known topics. */
size_t topic_cache_known(const struct topic_cache *c, char (*names)[256], size_t max);

#endif
