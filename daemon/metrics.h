/*
 * metrics: counters and histograms recorded as events happen, and the
 * Prometheus text (GET /metrics) and status JSON (GET /v1/status) built from
 * them plus the modules' own statistics at scrape time.
 *
 * Recording is lock-free (relaxed C11 atomics, no allocation) and safe from
 * any thread; process-wide events need no handle, per-subscription events
 * go through the subscription's struct metrics_sub. Rendering reads a
 * struct metrics_sources that the caller fills from spool_stats(),
 * producer_stats(), consumer_stats() and topics_kafka_reachable(); this
 * module calls none of them.
 */
#ifndef ACKD_METRICS_H
#define ACKD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * The modules that record events include this header, so it includes none
 * of theirs: the statistics read at scrape time are declared here
 * (consumer_stats) or only pointed to.
 */
struct spool_stats;    /* spool.h */
struct producer_stats; /* producer.h */
struct idem_stats;     /* idem.h */

/* One subscription's counters, filled by consumer_stats() (consumer.h). */
struct consumer_stats {
	uint64_t delivered;
	uint64_t retries;
	uint64_t dead_lettered;
	uint64_t dropped;
	uint64_t dead_letter_errors; /* dead letters not written: the message stays and retries */
	uint64_t send_errors;        /* requests not started (signing failed, libcurl): retried */
	uint64_t in_flight;
	uint64_t retrying;
	uint64_t assigned;
	uint64_t paused_partitions;
	int paused_gone; /* 410: paused until reload or resume */
	int paused_operator; /* paused through the Control API, until resumed */
	uint64_t concurrency_limit; /* requests allowed in flight now (pace window) */
	uint64_t rate_limit;        /* messages a second; 0: no cap */
};

/* --- events -------------------------------------------------------------- */

/*
 * A publish request was answered with http_status (ackd_publish_requests_total
 * {status="200"}; codes ackd does not answer with count as status="other").
 */
void metrics_publish_request(unsigned http_status);

/* n records were accepted by one publish request (ackd_publish_records_total). */
void metrics_publish_records(size_t n);

/*
 * Kafka acknowledged a record latency_s seconds after the spool accepted it
 * (ackd_produce_latency_seconds; its _count is the number of acks).
 */
void metrics_produce_ack(double latency_s);

enum metrics_produce_error {
	METRICS_PRODUCE_TIMEOUT,    /* not acknowledged in time; produced again */
	METRICS_PRODUCE_REJECTED,   /* rejected permanently; moved to failed/ */
	METRICS_PRODUCE_FATAL,      /* fatal producer error; producer rebuilt */
	METRICS_PRODUCE_QUEUE_FULL, /* librdkafka's queue was full */
	METRICS_PRODUCE_NERRORS
};

/* ackd_produce_errors_total{reason=...}. An out-of-range reason is ignored. */
void metrics_produce_error(enum metrics_produce_error reason);

/*
 * The start-up check of keyed records (reconcile.c) found n of them in Kafka
 * (ackd_idempotency_check_found_total), or sent n unverified
 * (ackd_idempotency_check_unverified_total).
 */
void metrics_idem_check_found(uint64_t n);
void metrics_idem_check_unverified(uint64_t n);

/* One group commit's fdatasync took seconds (ackd_spool_fsync_seconds). */
void metrics_fsync(double seconds);

/* One subscription's webhook events. */
struct metrics_sub;

/* Free with metrics_sub_free(). Never NULL (out of memory is fatal). */
struct metrics_sub *metrics_sub_new(void);
void metrics_sub_free(struct metrics_sub *ms); /* NULL ok */

/*
 * A webhook request ended: status is the HTTP status, 0 when there was no
 * answer (connection error, timeout); seconds from send to answer.
 * ackd_webhook_requests_total{subscription,status="2xx"|"3xx"|"4xx"|"5xx"|
 * "error"|"other"} and ackd_webhook_latency_seconds{subscription}.
 */
void metrics_webhook_request(struct metrics_sub *ms, long status, double seconds);

/* Zero every process-wide event counter and histogram (tests). */
void metrics_reset(void);

/* --- sources read at scrape time ----------------------------------------- */

/* The lag of one assigned partition: high watermark minus committed offset. */
struct metrics_lag {
	const char *topic; /* borrowed */
	int32_t partition;
	int64_t lag;       /* messages; < 0 when unknown (the row is left out) */
};

/* One subscription; everything borrowed for the call. */
struct metrics_sub_source {
	const char *name;
	struct consumer_stats stats;      /* from consumer_stats() */
	const struct metrics_sub *events; /* NULL: no request metrics for it */
	const struct metrics_lag *lag;    /* nlag rows */
	size_t nlag;
};

/* The daemon as a whole, as /readyz, /healthz and the start-up see it. */
struct metrics_process {
	int64_t start_ms; /* when this process started serving, CLOCK_REALTIME ms */
	bool ready;       /* /readyz would answer 200 */
	bool healthy;     /* every loop turned in time (/healthz 200; the watchdog pings) */
};

/* What a scrape reads; everything borrowed for the call. */
struct metrics_sources {
	int64_t wall_ms;                       /* now, CLOCK_REALTIME ms (wall_ms()) */
	const struct metrics_process *process; /* NULL: no ready/healthy/start metrics */
	const struct spool_stats *spool;       /* NULL: no spool metrics */
	const struct producer_stats *producer; /* NULL: no producer metrics */
	const struct idem_stats *idem;         /* NULL: no Idempotency-Key metrics */
	bool producer_rebuilding;              /* status JSON: state "rebuilding" */
	int kafka_reachable;                   /* topics_kafka_reachable(); -1: unknown */
	const struct metrics_sub_source *subs;
	size_t nsubs;
};

/*
 * The Prometheus text exposition (version 0.0.4) of the events and of src:
 * a NUL-terminated string, its length in *len. Free with free(). Any thread.
 */
char *metrics_render(const struct metrics_sources *src, size_t *len);

/* The GET /v1/status document (docs/operations.md, "Monitoring"). Free with json_decref(). */
json_t *metrics_status_json(const struct metrics_sources *src);

#endif
