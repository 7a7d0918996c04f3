/*
 * metrics: event counters and histograms, the Prometheus text exposition and
 * the status document.
 *
 * Design. Every event is one or two relaxed atomic additions on fixed
 * arrays: counters with a small fixed label set (an index, not a string
 * lookup), and histograms with fixed bucket bounds in nanoseconds. A
 * histogram keeps one non-cumulative count per bucket and the sum as integer
 * nanoseconds, so recording never needs a CAS loop; the exposition adds the
 * buckets up, and _count is the +Inf bucket as read, so the two always agree
 * even while other threads record. The sum in a uint64_t wraps after 584
 * years of observed time.
 *
 * Every number has one source: gauges and the counters a module's *_stats
 * already keeps (spool, producer, consumers) are never counted a second time
 * here; the caller reads them into struct metrics_sources at scrape time.
 *
 * Threads: recording from any thread (request threads, the spool writer, the
 * kafka loop, subscription threads); rendering from any thread.
 */
#include "config.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "idem.h"
#include "log.h"
#include "metrics.h"
#include "producer.h"
#include "spool.h"
#include "util.h"

#define NS_PER_S UINT64_C(1000000000)
#define MAX_OBSERVATION_NS (NS_PER_S * 1000000000) /* one observation: ~31 years at most */
#define HIST_MAX_BOUNDS 16

/* --- histograms ------------------------------------------------------------ */

struct buckets {
	size_t n;
	uint64_t le_ns[HIST_MAX_BOUNDS]; /* ascending; +Inf is implied */
};

/* accept to Kafka ack: spool commit, then broker round trips. */
static const struct buckets produce_buckets = { 15,
	{ 1000000, 2500000, 5000000, 10000000, 25000000, 50000000, 100000000, 250000000,
	    500000000, NS_PER_S, 2500000000, 5 * NS_PER_S, 10 * NS_PER_S, 30 * NS_PER_S,
	    60 * NS_PER_S } };

/* one fdatasync: from a disk cache hit to a stalled device. */
static const struct buckets fsync_buckets = { 14,
	{ 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 25000000, 50000000,
	    100000000, 250000000, 500000000, NS_PER_S, 2500000000 } };

/* one webhook request: up to the longest timeouts a subscription allows. */
static const struct buckets webhook_buckets = { 13,
	{ 5000000, 10000000, 25000000, 50000000, 100000000, 250000000, 500000000, NS_PER_S,
	    2500000000, 5 * NS_PER_S, 10 * NS_PER_S, 30 * NS_PER_S, 60 * NS_PER_S } };

struct hist {
	atomic_uint_fast64_t count[HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative */
	atomic_uint_fast64_t sum_ns;
};

static uint64_t seconds_to_ns(double s)
{
	if (!(s > 0)) /* negative (a clock step) or NaN */
		return 0;
	if (s >= (double)MAX_OBSERVATION_NS / (double)NS_PER_S)
		return MAX_OBSERVATION_NS;
	return (uint64_t)(s * (double)NS_PER_S + 0.5);
}

static void hist_observe(struct hist *h, const struct buckets *b, double seconds)
{
	uint64_t ns = seconds_to_ns(seconds);
	size_t i = 0;

	while (i < b->n && ns > b->le_ns[i])
		i++;
	atomic_fetch_add_explicit(&h->count[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
}

static void hist_reset(struct hist *h)
{
	for (size_t i = 0; i < HIST_MAX_BOUNDS + 1; i++)
		atomic_store_explicit(&h->count[i], 0, memory_order_relaxed);
	atomic_store_explicit(&h->sum_ns, 0, memory_order_relaxed);
}

/* --- process-wide events --------------------------------------------------- */

static const unsigned publish_codes[] = { 200, 202, 207, 400, 401, 403, 404, 405, 409, 413,
	415, 422, 500, 503, 507 };
#define NPUBLISH_CODES (sizeof(publish_codes) / sizeof(publish_codes[0]))

static const char *const produce_error_names[METRICS_PRODUCE_NERRORS] = {
	[METRICS_PRODUCE_TIMEOUT] = "timeout",
	[METRICS_PRODUCE_REJECTED] = "rejected",
	[METRICS_PRODUCE_FATAL] = "fatal",
	[METRICS_PRODUCE_QUEUE_FULL] = "queue_full",
};

static struct {
	atomic_uint_fast64_t publish_requests[NPUBLISH_CODES + 1]; /* last: "other" */
	atomic_uint_fast64_t publish_records;
	atomic_uint_fast64_t produce_errors[METRICS_PRODUCE_NERRORS];
	atomic_uint_fast64_t idem_check_found, idem_check_unverified;
	struct hist produce_latency;
	struct hist fsync;
} ev;

static void inc(atomic_uint_fast64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static uint64_t get(const atomic_uint_fast64_t *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

void metrics_publish_request(unsigned http_status)
{
	size_t i = 0;

	while (i < NPUBLISH_CODES && publish_codes[i] != http_status)
		i++;
	inc(&ev.publish_requests[i], 1);
}

void metrics_publish_records(size_t n)
{
	inc(&ev.publish_records, n);
}

void metrics_produce_ack(double latency_s)
{
	hist_observe(&ev.produce_latency, &produce_buckets, latency_s);
}

void metrics_produce_error(enum metrics_produce_error reason)
{
	if ((unsigned)reason < METRICS_PRODUCE_NERRORS)
		inc(&ev.produce_errors[reason], 1);
}

void metrics_idem_check_found(uint64_t n)
{
	inc(&ev.idem_check_found, n);
}

void metrics_idem_check_unverified(uint64_t n)
{
	inc(&ev.idem_check_unverified, n);
}

void metrics_fsync(double seconds)
{
	hist_observe(&ev.fsync, &fsync_buckets, seconds);
}

void metrics_reset(void)
{
	for (size_t i = 0; i < NPUBLISH_CODES + 1; i++)
		atomic_store_explicit(&ev.publish_requests[i], 0, memory_order_relaxed);
	atomic_store_explicit(&ev.publish_records, 0, memory_order_relaxed);
	for (size_t i = 0; i < METRICS_PRODUCE_NERRORS; i++)
		atomic_store_explicit(&ev.produce_errors[i], 0, memory_order_relaxed);
	atomic_store_explicit(&ev.idem_check_found, 0, memory_order_relaxed);
	atomic_store_explicit(&ev.idem_check_unverified, 0, memory_order_relaxed);
	hist_reset(&ev.produce_latency);
	hist_reset(&ev.fsync);
}

/* --- per-subscription events ----------------------------------------------- */

enum webhook_class { WH_2XX, WH_3XX, WH_4XX, WH_5XX, WH_ERROR, WH_OTHER, WH_NCLASSES };

static const char *const webhook_class_names[WH_NCLASSES] = { "2xx", "3xx", "4xx", "5xx",
	"error", "other" };

struct metrics_sub {
	atomic_uint_fast64_t requests[WH_NCLASSES];
	struct hist latency;
};

struct metrics_sub *metrics_sub_new(void)
{
	struct metrics_sub *ms = xmalloc(sizeof(*ms));

	for (size_t i = 0; i < WH_NCLASSES; i++)
		atomic_init(&ms->requests[i], 0);
	for (size_t i = 0; i < HIST_MAX_BOUNDS + 1; i++)
		atomic_init(&ms->latency.count[i], 0);
	atomic_init(&ms->latency.sum_ns, 0);
	return ms;
}

void metrics_sub_free(struct metrics_sub *ms)
{
	free(ms);
}

void metrics_webhook_request(struct metrics_sub *ms, long status, double seconds)
{
	enum webhook_class c;

	if (status == 0)
		c = WH_ERROR;
	else if (status >= 200 && status < 600)
		c = (enum webhook_class)(status / 100 - 2);
	else
		c = WH_OTHER;
	inc(&ms->requests[c], 1);
	hist_observe(&ms->latency, &webhook_buckets, seconds);
}

/* --- text exposition ------------------------------------------------------- */

struct buf {
	char *p;
	size_t len, cap;
};

static void reserve(struct buf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return;
	while (b->len + more + 1 > b->cap)
		b->cap = b->cap ? b->cap * 2 : 8192;
	b->p = xrealloc(b->p, b->cap);
}

static void put(struct buf *b, const char *s, size_t n)
{
	reserve(b, n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bprintf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		fatalx("metrics: cannot format a sample");
	reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

/* A label value, escaped as the text format asks: \\, \" and \n. */
static void put_escaped(struct buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			put(b, "\\\\", 2);
		else if (*s == '"')
			put(b, "\\\"", 2);
		else if (*s == '\n')
			put(b, "\\n", 2);
		else
			put(b, s, 1);
	}
}

/* Exact decimal seconds of ns, without trailing zeros: 5000000 -> "0.005". */
static void fmt_seconds(char *dst, size_t size, uint64_t ns)
{
	int n = snprintf(dst, size, "%" PRIu64 ".%09" PRIu64, ns / NS_PER_S, ns % NS_PER_S);

	if (n < 0 || (size_t)n >= size)
		fatalx("metrics: cannot format %" PRIu64 " ns", ns);
	while (dst[n - 1] == '0')
		dst[--n] = '\0';
	if (dst[n - 1] == '.')
		dst[n - 1] = '\0';
}

static void put_seconds(struct buf *b, uint64_t ns)
{
	char s[48];

	fmt_seconds(s, sizeof(s), ns);
	puts_(b, s);
}

static void family(struct buf *b, const char *name, const char *type, const char *help)
{
	bprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

struct label {
	const char *name, *value;
};

/* name{l1="v1",...} without the value; no braces without labels. */
static void series(struct buf *b, const char *name, const char *suffix, const struct label *l,
    size_t nl)
{
	puts_(b, name);
	puts_(b, suffix);
	if (nl == 0) {
		put(b, " ", 1);
		return;
	}
	put(b, "{", 1);
	for (size_t i = 0; i < nl; i++) {
		if (i)
			put(b, ",", 1);
		bprintf(b, "%s=\"", l[i].name);
		put_escaped(b, l[i].value);
		put(b, "\"", 1);
	}
	put(b, "} ", 2);
}

static void sample_u64(struct buf *b, const char *name, const struct label *l, size_t nl,
    uint64_t v)
{
	series(b, name, "", l, nl);
	bprintf(b, "%" PRIu64 "\n", v);
}

static void sample_i64(struct buf *b, const char *name, const struct label *l, size_t nl,
    int64_t v)
{
	series(b, name, "", l, nl);
	bprintf(b, "%" PRId64 "\n", v);
}

/* A gauge or counter with no labels, HELP and TYPE included. */
static void scalar(struct buf *b, const char *name, const char *type, const char *help,
    uint64_t v)
{
	family(b, name, type, help);
	sample_u64(b, name, NULL, 0, v);
}

/*
 * One histogram's series: labels l (room for one more, the le label, at
 * l[nl]), cumulative buckets, +Inf, _sum, _count.
 */
static void hist_series(struct buf *b, const char *name, const struct hist *h,
    const struct buckets *bk, struct label *l, size_t nl)
{
	uint64_t cum = 0, sum = get(&h->sum_ns);
	char le[48];

	for (size_t i = 0; i <= bk->n; i++) {
		cum += get(&h->count[i]);
		if (i < bk->n)
			fmt_seconds(le, sizeof(le), bk->le_ns[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		l[nl] = (struct label){ "le", le };
		series(b, name, "_bucket", l, nl + 1);
		bprintf(b, "%" PRIu64 "\n", cum);
	}
	series(b, name, "_sum", l, nl);
	put_seconds(b, sum);
	put(b, "\n", 1);
	series(b, name, "_count", l, nl);
	bprintf(b, "%" PRIu64 "\n", cum);
}

static void render_events(struct buf *b)
{
	struct label l[2];

	family(b, "ackd_publish_requests_total", "counter",
	    "Publish requests answered, by HTTP status.");
	for (size_t i = 0; i <= NPUBLISH_CODES; i++) {
		char code[16];

		if (i < NPUBLISH_CODES)
			snprintf(code, sizeof(code), "%u", publish_codes[i]);
		else
			snprintf(code, sizeof(code), "other");
		l[0] = (struct label){ "status", code };
		sample_u64(b, "ackd_publish_requests_total", l, 1, get(&ev.publish_requests[i]));
	}
	scalar(b, "ackd_publish_records_total", "counter",
	    "Records accepted by publish requests.", get(&ev.publish_records));

	family(b, "ackd_produce_latency_seconds", "histogram",
	    "Time from a record's acceptance to Kafka's acknowledgement.");
	hist_series(b, "ackd_produce_latency_seconds", &ev.produce_latency, &produce_buckets, l, 0);

	family(b, "ackd_produce_errors_total", "counter",
	    "Producer errors, by reason.");
	for (size_t i = 0; i < METRICS_PRODUCE_NERRORS; i++) {
		l[0] = (struct label){ "reason", produce_error_names[i] };
		sample_u64(b, "ackd_produce_errors_total", l, 1, get(&ev.produce_errors[i]));
	}
	scalar(b, "ackd_idempotency_check_found_total", "counter",
	    "Keyed records the start-up check found in Kafka (acknowledged, not sent again).",
	    get(&ev.idem_check_found));
	scalar(b, "ackd_idempotency_check_unverified_total", "counter",
	    "Keyed records sent without the start-up check (topic unreadable or gone, "
	    "check over its bound).", get(&ev.idem_check_unverified));

	family(b, "ackd_spool_fsync_seconds", "histogram",
	    "Duration of the spool's group-commit fdatasync calls.");
	hist_series(b, "ackd_spool_fsync_seconds", &ev.fsync, &fsync_buckets, l, 0);
}

static int64_t oldest_age_ms(const struct metrics_sources *src)
{
	int64_t age;

	if (!src->spool || src->spool->oldest_ms <= 0)
		return 0;
	age = src->wall_ms - src->spool->oldest_ms;
	return age > 0 ? age : 0;
}

static void render_spool(struct buf *b, const struct metrics_sources *src)
{
	const struct spool_stats *s = src->spool;
	int64_t age = oldest_age_ms(src);

	if (!s)
		return;
	scalar(b, "ackd_spool_records", "gauge",
	    "Records in the spool not yet acknowledged by Kafka.", s->records);
	scalar(b, "ackd_spool_bytes", "gauge", "Bytes of the spool's segment files on disk.",
	    s->bytes);
	scalar(b, "ackd_spool_max_bytes", "gauge",
	    "spool.max_bytes: publishing answers 507 once ackd_spool_bytes reaches it; 0: no limit.",
	    s->max_bytes);
	family(b, "ackd_spool_oldest_age_seconds", "gauge",
	    "Age of the oldest record not yet acknowledged by Kafka; 0 when there is none.");
	bprintf(b, "ackd_spool_oldest_age_seconds %" PRId64 ".%03" PRId64 "\n", age / 1000,
	    age % 1000);
	scalar(b, "ackd_spool_segments", "gauge", "Segment files in the spool.", s->segments);
	scalar(b, "ackd_spool_damaged_records_total", "counter",
	    "Records skipped because they were damaged on disk.", s->damaged);
	scalar(b, "ackd_spool_failed_records_total", "counter",
	    "Records Kafka rejected permanently, moved to failed/.", s->failed);
	scalar(b, "ackd_spool_commits_total", "counter", "Group commits written and synced.",
	    s->commits);
	scalar(b, "ackd_spool_write_errors_total", "counter",
	    "Group commits whose write or sync failed.", s->write_errors);
	scalar(b, "ackd_spool_torn_bytes", "gauge",
	    "Bytes cut from the last segment's torn tail when the spool was opened.",
	    s->torn_bytes);
}

static void render_idem(struct buf *b, const struct metrics_sources *src)
{
	const struct idem_stats *s = src->idem;

	if (!s)
		return;
	scalar(b, "ackd_idempotency_keys", "gauge",
	    "Idempotency-Keys remembered (publish.idempotency_ttl_s, publish.idempotency_max_keys).",
	    s->keys);
	scalar(b, "ackd_idempotency_bytes", "gauge",
	    "Heap the remembered Idempotency-Keys take, with their index.", s->bytes);
}

static void render_producer(struct buf *b, const struct metrics_sources *src)
{
	const struct producer_stats *p = src->producer;

	if (src->kafka_reachable >= 0)
		scalar(b, "ackd_kafka_reachable", "gauge",
		    "1 when Kafka answered a metadata request recently.",
		    src->kafka_reachable ? 1 : 0);
	if (!p)
		return;
	scalar(b, "ackd_kafka_brokers_up", "gauge",
	    "Brokers in Kafka's last metadata answer (probed every 5 s); 0 when it did not answer.",
	    p->brokers_up > 0 ? (uint64_t)p->brokers_up : 0);
	scalar(b, "ackd_produce_in_flight", "gauge", "Records produced and awaiting Kafka's ack.",
	    p->in_flight);
	scalar(b, "ackd_produce_delivered_total", "counter", "Records Kafka acknowledged.",
	    p->delivered);
	scalar(b, "ackd_produce_failed_total", "counter", "Records Kafka rejected permanently.",
	    p->failed);
	scalar(b, "ackd_produce_requeued_total", "counter",
	    "Records produced again after a timeout or a fatal error.", p->requeued);
	scalar(b, "ackd_produce_possible_duplicates_total", "counter",
	    "Records produced again that Kafka may already have stored.", p->possible_duplicates);
	scalar(b, "ackd_producer_rebuilds_total", "counter",
	    "Producers rebuilt after a fatal error.", p->rebuilds);
}

/* Which consumer_stats field a per-subscription family shows. */
enum sub_field {
	F_IN_FLIGHT,
	F_RETRYING,
	F_DELIVERED,
	F_RETRIES,
	F_DEAD_LETTERED,
	F_DROPPED,
	F_DLQ_ERRORS,
	F_SEND_ERRORS,
	F_ASSIGNED,
	F_PAUSED_PARTS,
	F_PAUSED,
	F_CONCURRENCY_LIMIT,
};

static const struct {
	enum sub_field field;
	const char *name, *type, *help;
} sub_families[] = {
	{ F_IN_FLIGHT, "ackd_webhook_in_flight", "gauge", "Webhook requests in flight." },
	{ F_RETRYING, "ackd_webhook_retrying", "gauge",
	    "Messages waiting to be sent again after a failed request." },
	{ F_DELIVERED, "ackd_webhook_delivered_total", "counter",
	    "Messages the endpoint answered with 2xx." },
	{ F_RETRIES, "ackd_webhook_retries_total", "counter", "Webhook requests scheduled again." },
	{ F_DEAD_LETTERED, "ackd_webhook_dead_lettered_total", "counter",
	    "Messages written to the dead-letter topic." },
	{ F_DROPPED, "ackd_webhook_dropped_total", "counter",
	    "Messages dropped after their retries were exhausted (on_exhausted = drop)." },
	{ F_DLQ_ERRORS, "ackd_webhook_dead_letter_errors_total", "counter",
	    "Dead letters not written (not encodable, spool or Kafka refused); the message "
	    "stays uncommitted and is retried." },
	{ F_SEND_ERRORS, "ackd_webhook_send_errors_total", "counter",
	    "Requests that could not be started (signing failed, libcurl); retried." },
	{ F_ASSIGNED, "ackd_consumer_assigned_partitions", "gauge",
	    "Partitions assigned to the subscription's consumer." },
	{ F_PAUSED_PARTS, "ackd_consumer_paused_partitions", "gauge",
	    "Assigned partitions paused: their window is full, or the endpoint answered 410." },
	{ F_PAUSED, "ackd_subscription_paused", "gauge",
	    "1 while the subscription is paused: by an operator (POST /v1/subscriptions/"
	    "{name}/pause) or because the endpoint answered 410." },
	{ F_CONCURRENCY_LIMIT, "ackd_webhook_concurrency_limit", "gauge",
	    "Webhook requests allowed in flight now: max_in_flight, or the adaptive window." },
};

static uint64_t sub_value(const struct consumer_stats *s, enum sub_field f)
{
	switch (f) {
	case F_IN_FLIGHT:
		return s->in_flight;
	case F_RETRYING:
		return s->retrying;
	case F_DELIVERED:
		return s->delivered;
	case F_RETRIES:
		return s->retries;
	case F_DEAD_LETTERED:
		return s->dead_lettered;
	case F_DROPPED:
		return s->dropped;
	case F_DLQ_ERRORS:
		return s->dead_letter_errors;
	case F_SEND_ERRORS:
		return s->send_errors;
	case F_ASSIGNED:
		return s->assigned;
	case F_PAUSED_PARTS:
		return s->paused_partitions;
	case F_PAUSED:
		return s->paused_gone || s->paused_operator ? 1 : 0;
	case F_CONCURRENCY_LIMIT:
		return s->concurrency_limit;
	}
	return 0;
}

static bool any_events(const struct metrics_sources *src)
{
	for (size_t i = 0; i < src->nsubs; i++)
		if (src->subs[i].events)
			return true;
	return false;
}

static bool any_lag(const struct metrics_sources *src)
{
	for (size_t i = 0; i < src->nsubs; i++)
		for (size_t j = 0; j < src->subs[i].nlag; j++)
			if (src->subs[i].lag[j].lag >= 0)
				return true;
	return false;
}

static void render_subs(struct buf *b, const struct metrics_sources *src)
{
	struct label l[4];

	if (src->nsubs == 0)
		return;
	for (size_t f = 0; f < sizeof(sub_families) / sizeof(sub_families[0]); f++) {
		family(b, sub_families[f].name, sub_families[f].type, sub_families[f].help);
		for (size_t i = 0; i < src->nsubs; i++) {
			l[0] = (struct label){ "subscription", src->subs[i].name };
			sample_u64(b, sub_families[f].name, l, 1,
			    sub_value(&src->subs[i].stats, sub_families[f].field));
		}
	}

	if (any_events(src)) {
		family(b, "ackd_webhook_requests_total", "counter",
		    "Webhook requests finished, by HTTP status class; \"error\" had no answer.");
		for (size_t i = 0; i < src->nsubs; i++) {
			const struct metrics_sub *ms = src->subs[i].events;

			if (!ms)
				continue;
			l[0] = (struct label){ "subscription", src->subs[i].name };
			for (size_t c = 0; c < WH_NCLASSES; c++) {
				l[1] = (struct label){ "status", webhook_class_names[c] };
				sample_u64(b, "ackd_webhook_requests_total", l, 2,
				    get(&ms->requests[c]));
			}
		}
		family(b, "ackd_webhook_latency_seconds", "histogram",
		    "Time from sending a webhook request to its answer.");
		for (size_t i = 0; i < src->nsubs; i++) {
			if (!src->subs[i].events)
				continue;
			l[0] = (struct label){ "subscription", src->subs[i].name };
			hist_series(b, "ackd_webhook_latency_seconds",
			    &src->subs[i].events->latency, &webhook_buckets, l, 1);
		}
	}

	if (any_lag(src)) {
		family(b, "ackd_consumer_lag", "gauge",
		    "Messages between the committed offset and the high watermark, per partition.");
		for (size_t i = 0; i < src->nsubs; i++) {
			for (size_t j = 0; j < src->subs[i].nlag; j++) {
				const struct metrics_lag *g = &src->subs[i].lag[j];
				char part[16];

				if (g->lag < 0)
					continue;
				snprintf(part, sizeof(part), "%" PRId32, g->partition);
				l[0] = (struct label){ "subscription", src->subs[i].name };
				l[1] = (struct label){ "topic", g->topic };
				l[2] = (struct label){ "partition", part };
				sample_i64(b, "ackd_consumer_lag", l, 3, g->lag);
			}
		}
	}
}

static void render_process(struct buf *b, const struct metrics_sources *src)
{
	const struct metrics_process *p = src->process;
	int64_t start = p && p->start_ms > 0 ? p->start_ms : 0;

	if (!p)
		return;
	family(b, "ackd_start_time_seconds", "gauge",
	    "When this ackd process started serving, in seconds since the Unix epoch.");
	bprintf(b, "ackd_start_time_seconds %" PRId64 ".%03" PRId64 "\n", start / 1000,
	    start % 1000);
	scalar(b, "ackd_ready", "gauge", "1 when GET /readyz answers 200.", p->ready ? 1 : 0);
	scalar(b, "ackd_healthy", "gauge",
	    "1 when every loop turned in time (GET /healthz answers 200, the watchdog is pinged).",
	    p->healthy ? 1 : 0);
}

char *metrics_render(const struct metrics_sources *src, size_t *len)
{
	struct buf b = { 0 };
	struct label l[2] = { { "version", PACKAGE_VERSION },
		{ "librdkafka", rd_kafka_version_str() } };

	reserve(&b, 0);
	b.p[0] = '\0';
	family(&b, "ackd_build_info", "gauge",
	    "Always 1; the labels name ackd's version and the librdkafka it runs on.");
	sample_u64(&b, "ackd_build_info", l, 2, 1);
	render_process(&b, src);
	render_events(&b);
	render_spool(&b, src);
	render_idem(&b, src);
	render_producer(&b, src);
	render_subs(&b, src);
	if (len)
		*len = b.len;
	return b.p;
}

/* --- status document ------------------------------------------------------- */

static json_t *need(json_t *j)
{
	if (!j)
		fatalx("out of memory building the status document");
	return j;
}

static json_t *jint(uint64_t v)
{
	return need(json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v));
}

static const char *producer_state(const struct metrics_sources *src)
{
	if (src->producer_rebuilding)
		return "rebuilding";
	return src->producer->brokers_up > 0 ? "ok" : "disconnected";
}

static json_t *status_spool(const struct metrics_sources *src)
{
	const struct spool_stats *s = src->spool;

	if (!s)
		return need(json_null());
	return need(json_pack("{s:o,s:o,s:f,s:o,s:o,s:o}", "records", jint(s->records), "bytes",
	    jint(s->bytes), "oldest_age_seconds", (double)oldest_age_ms(src) / 1000.0, "segments",
	    jint(s->segments), "damaged", jint(s->damaged), "failed", jint(s->failed)));
}

static json_t *status_kafka(const struct metrics_sources *src)
{
	const struct producer_stats *p = src->producer;
	json_t *k = need(json_object());

	json_object_set_new(k, "reachable", need(src->kafka_reachable < 0 ? json_null() :
	    json_boolean(src->kafka_reachable)));
	if (!p) {
		json_object_set_new(k, "brokers_up", need(json_null()));
		json_object_set_new(k, "producer", need(json_null()));
		return k;
	}
	json_object_set_new(k, "brokers_up", need(json_integer(p->brokers_up)));
	json_object_set_new(k, "producer",
	    need(json_pack("{s:s,s:o,s:o,s:o}", "state", producer_state(src), "in_flight",
		jint(p->in_flight), "delivered", jint(p->delivered), "failed", jint(p->failed))));
	return k;
}

static json_t *status_sub(const struct metrics_sub_source *s)
{
	const struct consumer_stats *c = &s->stats;
	uint64_t lag = 0;
	bool known = false;

	for (size_t j = 0; j < s->nlag; j++) {
		if (s->lag[j].lag >= 0) {
			lag += (uint64_t)s->lag[j].lag;
			known = true;
		}
	}
	json_t *why = need(json_array());

	if (c->paused_operator)
		json_array_append_new(why, need(json_string("operator")));
	if (c->paused_gone)
		json_array_append_new(why, need(json_string("endpoint_gone")));
	return need(json_pack("{s:s,s:o,s:o,s:o,s:o,s:o,s:o,s:b,s:o,s:o,s:o}", "name", s->name,
	    "assigned_partitions", jint(c->assigned), "lag", known ? jint(lag) : need(json_null()),
	    "in_flight", jint(c->in_flight), "retrying", jint(c->retrying), "dead_lettered",
	    jint(c->dead_lettered), "delivered", jint(c->delivered), "paused",
	    c->paused_gone != 0 || c->paused_operator != 0, "paused_by", why, "concurrency_limit",
	    jint(c->concurrency_limit), "rate_limit", jint(c->rate_limit)));
}

json_t *metrics_status_json(const struct metrics_sources *src)
{
	json_t *subs = need(json_array());

	for (size_t i = 0; i < src->nsubs; i++)
		json_array_append_new(subs, status_sub(&src->subs[i]));
	return need(json_pack("{s:s,s:s,s:o,s:o,s:o}", "version", PACKAGE_VERSION, "librdkafka",
	    rd_kafka_version_str(), "spool", status_spool(src), "kafka", status_kafka(src),
	    "subscriptions", subs));
}
