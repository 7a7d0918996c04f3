/*
 * producer: the one librdkafka producer, fed from the spool.
 *
 * One thread (the "kafka loop") reads committed records from the spool, keeps
 * a bounded window of them in flight, serves delivery reports, acknowledges
 * records in the spool, moves permanently rejected ones to failed/, and tells
 * waiting publish requests how their records ended. The spool is the queue:
 * after a crash, a fatal producer error or a timeout, records are simply read
 * from the spool again.
 */
#ifndef ACKD_PRODUCER_H
#define ACKD_PRODUCER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#ifndef MUST_USE /* as in util.h, which this header does not pull in */
#define MUST_USE __attribute__((warn_unused_result))
#endif

struct spool;
struct idem;
struct producer;

enum producer_outcome {
	PRODUCER_PENDING = 0, /* no answer from Kafka yet */
	PRODUCER_DELIVERED,
	PRODUCER_FAILED, /* rejected permanently; filed into failed/, or deleted if unfiled */
};

struct producer_result {
	enum producer_outcome outcome;
	int32_t partition;
	int64_t offset;
	int kafka_err;     /* rd_kafka_resp_err_t, when FAILED */
	const char *error; /* static string from librdkafka, when FAILED */
};

/*
 * A publish request waiting for Kafka's verdict on the records
 * [first_seq, first_seq + n). The caller owns the struct and results[n]
 * (zeroed); the kafka loop fills results[] and calls done() exactly once, when
 * every record has a verdict or at deadline_ms (CLOCK_MONOTONIC), whichever
 * comes first. After done() the producer never touches the waiter again.
 * done() runs on the kafka loop and must not block.
 */
struct producer_waiter {
	uint64_t first_seq;
	size_t n;
	int64_t deadline_ms;
	struct producer_result *results;
	void (*done)(struct producer_waiter *w);
	void *arg;
	/*
	 * Another waiter may wait for some of the same records (an
	 * Idempotency-Key replay while its first request still waits); both
	 * get the verdicts. false for every other waiter.
	 */
	bool overlaps;
	size_t pending; /* private */
};

/*
 * Create the producer (librdkafka properties from conf->kafka.producer on top
 * of ackd's: acks=all, idempotence, murmur2_random) and start the kafka loop.
 * conf, sp and idem (the Idempotency-Key table, told every delivery; NULL:
 * none) are borrowed and must outlive the producer.
 */
MUST_USE int producer_start(const struct conf *conf, struct spool *sp, struct idem *idem,
    struct producer **out, char *err, size_t errlen);

/*
 * Stop taking new records, answer every waiter, wait up to flush_ms for
 * Kafka's acks of what is in flight, destroy the producer. Unacknowledged
 * records stay in the spool. NULL is a no-op.
 */
void producer_stop(struct producer *p, int flush_ms);

/* Register w (any thread). Calls done() at once when the producer is stopping. */
void producer_wait(struct producer *p, struct producer_waiter *w);

/* Wake the kafka loop: new records were committed to the spool (any thread). */
void producer_kick(struct producer *p);

struct producer_stats {
	uint64_t in_flight;
	uint64_t delivered;
	uint64_t failed;
	uint64_t requeued;          /* timed out and produced again */
	uint64_t possible_duplicates; /* requeued with POSSIBLY_PERSISTED */
	uint64_t rebuilds;          /* producer rebuilt after a fatal error */
	int brokers_up;
};
void producer_stats(struct producer *p, struct producer_stats *out);

#endif
