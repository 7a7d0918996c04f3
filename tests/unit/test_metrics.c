/*
 * test_metrics: the Prometheus text as a scraper reads it (every line
 * parsed, HELP and TYPE for every family, exact values, cumulative buckets,
 * escaped labels), exact sums under concurrent recording, and the shape of
 * the status document.
 */
#include "config.h"

#include <ctype.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "idem.h"
#include "metrics.h"
#include "producer.h"
#include "spool.h"

/* --- a small parser of the text format ------------------------------------ */

#define MAX_FAMILIES 128

struct fam {
	char name[128];
	char type[16];
	bool help;
	bool has_samples;
	bool samples_done; /* another family's sample came after this one's */
};

struct parsed {
	struct fam f[MAX_FAMILIES];
	size_t n;
	size_t samples;
};

static struct fam *fam_find(struct parsed *p, const char *name)
{
	for (size_t i = 0; i < p->n; i++)
		if (strcmp(p->f[i].name, name) == 0)
			return &p->f[i];
	return NULL;
}

static struct fam *fam_get(struct parsed *p, const char *name)
{
	struct fam *f = fam_find(p, name);

	if (f)
		return f;
	assert_true(p->n < MAX_FAMILIES);
	f = &p->f[p->n++];
	memset(f, 0, sizeof(*f));
	assert_true(strlen(name) < sizeof(f->name));
	strcpy(f->name, name);
	return f;
}

static bool name_char(char c, bool first)
{
	return isalpha((unsigned char)c) || c == '_' || c == ':' ||
	    (!first && isdigit((unsigned char)c));
}

/* Length of a metric or label name at s, 0 if none. */
static size_t name_len(const char *s)
{
	size_t n = 0;

	while (name_char(s[n], n == 0))
		n++;
	return n;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);

	return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The family a sample belongs to: histograms name theirs without the suffix. */
static struct fam *sample_family(struct parsed *p, const char *name)
{
	static const char *const sfx[] = { "_bucket", "_sum", "_count" };
	struct fam *f = fam_find(p, name);

	if (f && f->type[0])
		return f;
	for (size_t i = 0; i < 3; i++) {
		char base[128];

		if (!ends_with(name, sfx[i]))
			continue;
		snprintf(base, sizeof(base), "%.*s", (int)(strlen(name) - strlen(sfx[i])), name);
		f = fam_find(p, base);
		if (f && strcmp(f->type, "histogram") == 0)
			return f;
	}
	return NULL;
}

/* Parse a label set at *s (after '{'), up to and past '}'. */
static void parse_labels(const char **s, bool *has_le)
{
	const char *q = *s;

	*has_le = false;
	while (*q != '}') {
		size_t n = name_len(q);

		assert_true(n > 0);
		if (n == 2 && strncmp(q, "le", 2) == 0)
			*has_le = true;
		q += n;
		assert_int_equal(*q++, '=');
		assert_int_equal(*q++, '"');
		while (*q != '"') {
			assert_true(*q != '\0' && *q != '\n');
			if (*q == '\\') {
				q++;
				assert_true(*q == '\\' || *q == '"' || *q == 'n');
			}
			q++;
		}
		q++;
		if (*q == ',')
			q++;
		else
			assert_int_equal(*q, '}');
	}
	*s = q + 1;
}

static void parse_value(const char *v)
{
	char *end;

	if (strcmp(v, "+Inf") == 0 || strcmp(v, "-Inf") == 0 || strcmp(v, "NaN") == 0)
		return;
	assert_true(*v != '\0');
	strtod(v, &end);
	assert_true(*end == '\0');
}

/*
 * Check every line of text: "# HELP name text", "# TYPE name type", or
 * "name{labels} value"; each sample after its family's HELP and TYPE, each
 * family's samples together, every name prefixed ackd_, histogram buckets
 * with an le label.
 */
static void parse_exposition(const char *text, struct parsed *p)
{
	const char *line = text;
	struct fam *last = NULL;

	memset(p, 0, sizeof(*p));
	assert_true(text[strlen(text) - 1] == '\n');
	while (*line) {
		const char *nl = strchr(line, '\n');
		char buf[1024], name[128];
		size_t len, n;

		assert_non_null(nl);
		len = (size_t)(nl - line);
		assert_true(len > 0 && len < sizeof(buf));
		memcpy(buf, line, len);
		buf[len] = '\0';
		line = nl + 1;

		if (strncmp(buf, "# HELP ", 7) == 0 || strncmp(buf, "# TYPE ", 7) == 0) {
			bool help = buf[2] == 'H';
			struct fam *f;

			n = name_len(buf + 7);
			assert_true(n > 0 && n < sizeof(name) && buf[7 + n] == ' ');
			snprintf(name, sizeof(name), "%.*s", (int)n, buf + 7);
			assert_true(strncmp(name, "ackd_", 5) == 0);
			f = fam_get(p, name);
			if (help) {
				assert_false(f->help);
				assert_true(strlen(buf + 8 + n) > 0);
				f->help = true;
			} else {
				const char *t = buf + 8 + n;
				assert_true(f->type[0] == '\0');
				assert_true(strcmp(t, "counter") == 0 || strcmp(t, "gauge") == 0 ||
				    strcmp(t, "histogram") == 0);
				strcpy(f->type, t);
			}
			continue;
		}
		assert_true(buf[0] != '#');

		{
			const char *q = buf;
			bool has_le = false;
			struct fam *f;

			n = name_len(q);
			assert_true(n > 0 && n < sizeof(name));
			snprintf(name, sizeof(name), "%.*s", (int)n, q);
			q += n;
			if (*q == '{') {
				q++;
				parse_labels(&q, &has_le);
			}
			assert_int_equal(*q++, ' ');
			parse_value(q);

			f = sample_family(p, name);
			if (!f)
				fail_msg("sample %s has no TYPE before it", name);
			assert_true(f->help);
			assert_false(f->samples_done);
			if (last && last != f)
				last->samples_done = true;
			last = f;
			f->has_samples = true;
			if (strcmp(f->type, "counter") == 0)
				assert_true(ends_with(name, "_total"));
			if (strcmp(f->type, "histogram") == 0)
				assert_true(has_le == ends_with(name, "_bucket"));
			p->samples++;
		}
	}
	/* Every family declared has HELP, TYPE and samples. */
	for (size_t i = 0; i < p->n; i++) {
		assert_true(p->f[i].help);
		assert_true(p->f[i].type[0] != '\0');
		assert_true(p->f[i].has_samples);
	}
}

/* --- helpers ----------------------------------------------------------------- */

/* The text has exactly this line. */
static bool has_line(const char *text, const char *want)
{
	size_t n = strlen(want);
	const char *s = text;

	while ((s = strstr(s, want)) != NULL) {
		if ((s == text || s[-1] == '\n') && s[n] == '\n')
			return true;
		s++;
	}
	return false;
}

static void assert_line(const char *text, const char *want)
{
	if (!has_line(text, want))
		fail_msg("missing line: %s\n--- in:\n%s", want, text);
}

/* The value of the sample whose line starts with "series ". */
static uint64_t value_of(const char *text, const char *series)
{
	char want[512];
	const char *s;

	snprintf(want, sizeof(want), "\n%s ", series);
	s = strstr(text, want);
	if (!s)
		fail_msg("no series %s", series);
	return strtoull(s + strlen(want), NULL, 10);
}

/* ms as the exposition writes seconds: exact, no trailing zeros. */
static const char *ms_str(uint64_t ms, char *buf, size_t size)
{
	if (ms % 1000 == 0)
		snprintf(buf, size, "%" PRIu64, ms / 1000);
	else if (ms % 100 == 0)
		snprintf(buf, size, "%" PRIu64 ".%01" PRIu64, ms / 1000, ms % 1000 / 100);
	else if (ms % 10 == 0)
		snprintf(buf, size, "%" PRIu64 ".%02" PRIu64, ms / 1000, ms % 1000 / 10);
	else
		snprintf(buf, size, "%" PRIu64 ".%03" PRIu64, ms / 1000, ms % 1000);
	return buf;
}

static char *render(const struct metrics_sources *src)
{
	size_t len = 0;
	char *text = metrics_render(src, &len);

	assert_non_null(text);
	assert_int_equal(strlen(text), len);
	return text;
}

static const struct metrics_sources empty_src = { .kafka_reachable = -1 };

static int reset(void **state)
{
	(void)state;
	metrics_reset();
	return 0;
}

/* --- tests ------------------------------------------------------------------- */

static void test_events_exact(void **state)
{
	char *text;
	char want[256];
	struct parsed p;

	(void)state;
	metrics_publish_request(200);
	metrics_publish_request(200);
	metrics_publish_request(507);
	metrics_publish_request(422);
	metrics_publish_request(418);
	metrics_publish_request(0);
	metrics_publish_records(3);
	metrics_publish_records(40);
	metrics_produce_error(METRICS_PRODUCE_QUEUE_FULL);
	metrics_produce_error(METRICS_PRODUCE_REJECTED);
	metrics_produce_error(METRICS_PRODUCE_REJECTED);
	metrics_produce_error(METRICS_PRODUCE_NERRORS); /* ignored */
	metrics_idem_check_found(3);
	metrics_idem_check_unverified(1);
	metrics_idem_check_unverified(1);

	text = render(&empty_src);
	parse_exposition(text, &p);
	assert_line(text, "# HELP ackd_publish_requests_total "
			  "Publish requests answered, by HTTP status.");
	assert_line(text, "# TYPE ackd_publish_requests_total counter");
	assert_line(text, "ackd_publish_requests_total{status=\"200\"} 2");
	assert_line(text, "ackd_publish_requests_total{status=\"202\"} 0");
	assert_line(text, "ackd_publish_requests_total{status=\"507\"} 1");
	assert_line(text, "ackd_publish_requests_total{status=\"422\"} 1");
	assert_line(text, "ackd_publish_requests_total{status=\"409\"} 0");
	assert_line(text, "ackd_publish_requests_total{status=\"other\"} 2");
	assert_line(text, "ackd_publish_records_total 43");
	assert_line(text, "ackd_idempotency_check_found_total 3");
	assert_line(text, "ackd_idempotency_check_unverified_total 2");
	assert_line(text, "ackd_produce_errors_total{reason=\"timeout\"} 0");
	assert_line(text, "ackd_produce_errors_total{reason=\"rejected\"} 2");
	assert_line(text, "ackd_produce_errors_total{reason=\"fatal\"} 0");
	assert_line(text, "ackd_produce_errors_total{reason=\"queue_full\"} 1");
	snprintf(want, sizeof(want), "ackd_build_info{version=\"%s\",librdkafka=\"%s\"} 1",
	    PACKAGE_VERSION, rd_kafka_version_str());
	assert_line(text, want);
	/* No sources: no spool, producer or subscription families. */
	assert_null(strstr(text, "ackd_spool_records"));
	assert_null(strstr(text, "ackd_produce_in_flight"));
	assert_null(strstr(text, "ackd_idempotency_keys"));
	assert_null(strstr(text, "ackd_kafka_reachable"));
	assert_null(strstr(text, "subscription="));
	free(text);

	metrics_reset();
	text = render(&empty_src);
	assert_line(text, "ackd_publish_requests_total{status=\"200\"} 0");
	assert_line(text, "ackd_publish_records_total 0");
	assert_line(text, "ackd_produce_latency_seconds_count 0");
	free(text);
}

static void test_histogram(void **state)
{
	/* le bounds of ackd_produce_latency_seconds, as rendered. */
	static const char *const le[] = { "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
		"0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf" };
	const double obs[] = { 0.0005, 0.001, 0.001, 0.003, 0.25, 0.7, 4.0, 100.0, -1.0 };
	char series[128], *text;
	uint64_t prev = 0;
	struct parsed p;

	(void)state;
	for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
		metrics_produce_ack(obs[i]);
	metrics_fsync(0.002);

	text = render(&empty_src);
	parse_exposition(text, &p);
	assert_line(text, "# TYPE ackd_produce_latency_seconds histogram");
	/* A value on a bound counts in that bucket (le is "less or equal"). */
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"0.001\"} 4");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"0.0025\"} 4");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"0.005\"} 5");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"0.25\"} 6");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"1\"} 7");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"5\"} 8");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"60\"} 8");
	assert_line(text, "ackd_produce_latency_seconds_bucket{le=\"+Inf\"} 9");
	assert_line(text, "ackd_produce_latency_seconds_count 9");
	/* 0.0005 + 2 * 0.001 + 0.003 + 0.25 + 0.7 + 4 + 100, and -1 counts as 0 */
	assert_line(text, "ackd_produce_latency_seconds_sum 104.9555");
	for (size_t i = 0; i < sizeof(le) / sizeof(le[0]); i++) {
		uint64_t v;

		snprintf(series, sizeof(series), "ackd_produce_latency_seconds_bucket{le=\"%s\"}",
		    le[i]);
		v = value_of(text, series);
		assert_true(v >= prev);
		prev = v;
	}
	assert_int_equal(prev, value_of(text, "ackd_produce_latency_seconds_count"));

	assert_line(text, "ackd_spool_fsync_seconds_bucket{le=\"0.001\"} 0");
	assert_line(text, "ackd_spool_fsync_seconds_bucket{le=\"0.0025\"} 1");
	assert_line(text, "ackd_spool_fsync_seconds_bucket{le=\"+Inf\"} 1");
	assert_line(text, "ackd_spool_fsync_seconds_sum 0.002");
	assert_line(text, "ackd_spool_fsync_seconds_count 1");
	free(text);
}

static const struct metrics_lag lag_a[] = {
	{ "orders", 0, 7 },
	{ "orders", 1, -1 }, /* unknown: left out */
	{ "orders", 2, 0 },
};

static void fill_sources(struct metrics_sources *src, struct spool_stats *sp,
    struct producer_stats *pr, struct metrics_sub_source *subs, struct metrics_sub *events)
{
	*sp = (struct spool_stats){ .records = 5, .bytes = 4096, .oldest_ms = 1700000000000,
		.segments = 2, .damaged = 1, .failed = 3, .commits = 11, .write_errors = 0,
		.torn_bytes = 17, .max_bytes = 1073741824 };
	*pr = (struct producer_stats){ .in_flight = 4, .delivered = 100, .failed = 3, .requeued = 2,
		.possible_duplicates = 1, .rebuilds = 0, .brokers_up = 1 };
	subs[0] = (struct metrics_sub_source){ .name = "a\"b\\c\nd",
		.stats = { .delivered = 9, .retries = 4, .dead_lettered = 2, .dropped = 1,
		    .in_flight = 3, .retrying = 1, .assigned = 3, .paused_partitions = 1,
		    .concurrency_limit = 5, .rate_limit = 200 },
		.events = events, .lag = lag_a, .nlag = 3 };
	subs[1] = (struct metrics_sub_source){ .name = "billing",
		.stats = { .assigned = 0, .paused_gone = 1, .paused_operator = 1 } };
	*src = (struct metrics_sources){ .wall_ms = 1700000002500, .spool = sp, .producer = pr,
		.kafka_reachable = 1, .subs = subs, .nsubs = 2 };
}

static void test_sources(void **state)
{
	struct spool_stats sp;
	struct producer_stats pr;
	struct idem_stats keys = { .keys = 3, .bytes = 9001 };
	struct metrics_sub_source subs[2];
	struct metrics_sources src;
	struct metrics_sub *ev = metrics_sub_new();
	struct parsed p;
	char *text;

	(void)state;
	metrics_webhook_request(ev, 200, 0.01);
	metrics_webhook_request(ev, 204, 0.02);
	metrics_webhook_request(ev, 503, 0.2);
	metrics_webhook_request(ev, 0, 30.0);
	metrics_webhook_request(ev, 999, 0.001);
	fill_sources(&src, &sp, &pr, subs, ev);
	src.idem = &keys;
	text = render(&src);
	parse_exposition(text, &p);

	assert_line(text, "# TYPE ackd_idempotency_keys gauge");
	assert_line(text, "ackd_idempotency_keys 3");
	assert_line(text, "# TYPE ackd_idempotency_bytes gauge");
	assert_line(text, "ackd_idempotency_bytes 9001");
	assert_line(text, "# HELP ackd_spool_records "
			  "Records in the spool not yet acknowledged by Kafka.");
	assert_line(text, "# TYPE ackd_spool_records gauge");
	assert_line(text, "ackd_spool_records 5");
	assert_line(text, "ackd_spool_bytes 4096");
	assert_line(text, "ackd_spool_max_bytes 1073741824");
	assert_line(text, "ackd_spool_oldest_age_seconds 2.500");
	assert_line(text, "ackd_spool_segments 2");
	assert_line(text, "ackd_spool_damaged_records_total 1");
	assert_line(text, "ackd_spool_failed_records_total 3");
	assert_line(text, "ackd_spool_commits_total 11");
	assert_line(text, "ackd_spool_write_errors_total 0");
	assert_line(text, "ackd_spool_torn_bytes 17");
	assert_line(text, "ackd_kafka_reachable 1");
	assert_line(text, "ackd_kafka_brokers_up 1");
	assert_line(text, "ackd_produce_in_flight 4");
	assert_line(text, "ackd_produce_delivered_total 100");
	assert_line(text, "ackd_produce_failed_total 3");
	assert_line(text, "ackd_produce_requeued_total 2");
	assert_line(text, "ackd_produce_possible_duplicates_total 1");
	assert_line(text, "ackd_producer_rebuilds_total 0");

	/* Label values escaped: backslash, double quote, newline. */
#define A "subscription=\"a\\\"b\\\\c\\nd\""
	assert_line(text, "ackd_webhook_in_flight{" A "} 3");
	assert_line(text, "ackd_webhook_retrying{" A "} 1");
	assert_line(text, "ackd_webhook_delivered_total{" A "} 9");
	assert_line(text, "ackd_webhook_retries_total{" A "} 4");
	assert_line(text, "ackd_webhook_dead_lettered_total{" A "} 2");
	assert_line(text, "ackd_webhook_dropped_total{" A "} 1");
	assert_line(text, "ackd_consumer_assigned_partitions{" A "} 3");
	assert_line(text, "ackd_consumer_paused_partitions{" A "} 1");
	assert_line(text, "ackd_subscription_paused{" A "} 0");
	assert_line(text, "ackd_webhook_concurrency_limit{" A "} 5");
	assert_line(text, "ackd_subscription_paused{subscription=\"billing\"} 1");
	assert_line(text, "ackd_webhook_requests_total{" A ",status=\"2xx\"} 2");
	assert_line(text, "ackd_webhook_requests_total{" A ",status=\"3xx\"} 0");
	assert_line(text, "ackd_webhook_requests_total{" A ",status=\"5xx\"} 1");
	assert_line(text, "ackd_webhook_requests_total{" A ",status=\"error\"} 1");
	assert_line(text, "ackd_webhook_requests_total{" A ",status=\"other\"} 1");
	assert_line(text, "ackd_webhook_latency_seconds_bucket{" A ",le=\"0.005\"} 1");
	assert_line(text, "ackd_webhook_latency_seconds_bucket{" A ",le=\"0.01\"} 2");
	assert_line(text, "ackd_webhook_latency_seconds_bucket{" A ",le=\"0.25\"} 4");
	assert_line(text, "ackd_webhook_latency_seconds_bucket{" A ",le=\"30\"} 5");
	assert_line(text, "ackd_webhook_latency_seconds_bucket{" A ",le=\"+Inf\"} 5");
	assert_line(text, "ackd_webhook_latency_seconds_sum{" A "} 30.231");
	assert_line(text, "ackd_webhook_latency_seconds_count{" A "} 5");
	assert_line(text, "ackd_consumer_lag{" A ",topic=\"orders\",partition=\"0\"} 7");
	assert_line(text, "ackd_consumer_lag{" A ",topic=\"orders\",partition=\"2\"} 0");
	assert_null(strstr(text, "partition=\"1\""));
	/* A subscription without an events handle has no request series. */
	assert_null(strstr(text, "ackd_webhook_requests_total{subscription=\"billing\""));
	assert_null(strstr(text, "ackd_webhook_latency_seconds_count{subscription=\"billing\""));
#undef A

	/* Every family the sources feed is present, each with HELP and TYPE. */
	{
		static const char *const families[] = { "ackd_build_info",
			"ackd_publish_requests_total", "ackd_publish_records_total",
			"ackd_produce_latency_seconds", "ackd_produce_errors_total",
			"ackd_idempotency_check_found_total", "ackd_idempotency_check_unverified_total",
			"ackd_spool_fsync_seconds", "ackd_spool_records", "ackd_spool_bytes", "ackd_spool_max_bytes",
			"ackd_spool_oldest_age_seconds", "ackd_spool_segments",
			"ackd_spool_damaged_records_total", "ackd_spool_failed_records_total",
			"ackd_spool_commits_total", "ackd_spool_write_errors_total",
			"ackd_spool_torn_bytes", "ackd_idempotency_keys", "ackd_idempotency_bytes",
			"ackd_kafka_reachable", "ackd_kafka_brokers_up",
			"ackd_produce_in_flight", "ackd_produce_delivered_total",
			"ackd_produce_failed_total", "ackd_produce_requeued_total",
			"ackd_produce_possible_duplicates_total", "ackd_producer_rebuilds_total",
			"ackd_webhook_in_flight", "ackd_webhook_retrying",
			"ackd_webhook_delivered_total", "ackd_webhook_retries_total",
			"ackd_webhook_dead_lettered_total", "ackd_webhook_dropped_total",
			"ackd_webhook_dead_letter_errors_total", "ackd_webhook_send_errors_total",
			"ackd_consumer_assigned_partitions", "ackd_consumer_paused_partitions",
			"ackd_subscription_paused", "ackd_webhook_concurrency_limit",
			"ackd_webhook_requests_total",
			"ackd_webhook_latency_seconds", "ackd_consumer_lag" };
		size_t nf = sizeof(families) / sizeof(families[0]);

		assert_int_equal(p.n, nf);
		for (size_t i = 0; i < nf; i++) {
			struct fam *f = fam_find(&p, families[i]);

			if (!f)
				fail_msg("family %s missing", families[i]);
			assert_true(f->help && f->type[0]);
		}
	}
	free(text);

	/* No oldest record: age 0; a wall clock behind the record: age 0, not negative. */
	sp.oldest_ms = 0;
	text = render(&src);
	assert_line(text, "ackd_spool_oldest_age_seconds 0.000");
	free(text);
	sp.oldest_ms = src.wall_ms + 5000;
	text = render(&src);
	assert_line(text, "ackd_spool_oldest_age_seconds 0.000");
	free(text);

	metrics_sub_free(ev);
	metrics_sub_free(NULL);
}

/* The process gauges: rendered only with their source, each value as given. */
static void test_process(void **state)
{
	struct metrics_process proc = { .start_ms = 1700000000123, .ready = true,
		.healthy = true };
	struct metrics_sources src = { .kafka_reachable = -1, .process = &proc };
	struct parsed p;
	char *text;

	(void)state;
	text = render(&empty_src);
	assert_null(strstr(text, "ackd_ready"));
	assert_null(strstr(text, "ackd_healthy"));
	assert_null(strstr(text, "ackd_start_time_seconds"));
	free(text);

	text = render(&src);
	parse_exposition(text, &p);
	assert_line(text, "# TYPE ackd_start_time_seconds gauge");
	assert_line(text, "ackd_start_time_seconds 1700000000.123");
	assert_line(text, "# TYPE ackd_ready gauge");
	assert_line(text, "ackd_ready 1");
	assert_line(text, "# TYPE ackd_healthy gauge");
	assert_line(text, "ackd_healthy 1");
	free(text);

	proc.ready = false;
	proc.healthy = false;
	proc.start_ms = 1700000000005;
	text = render(&src);
	parse_exposition(text, &p);
	assert_line(text, "ackd_start_time_seconds 1700000000.005");
	assert_line(text, "ackd_ready 0");
	assert_line(text, "ackd_healthy 0");
	free(text);
}

/* --- concurrency ------------------------------------------------------------- */

#define THREADS 8
#define ROUNDS 20000

static void *hammer(void *arg)
{
	struct metrics_sub *ev = arg;

	for (int i = 0; i < ROUNDS; i++) {
		metrics_publish_request(i % 2 ? 200 : 503);
		metrics_publish_records(3);
		metrics_produce_ack(i % 3 ? 0.001 : 2.0);
		metrics_produce_error(METRICS_PRODUCE_TIMEOUT);
		metrics_fsync(0.0005);
		metrics_webhook_request(ev, 200, 0.125);
	}
	return NULL;
}

static void test_concurrent(void **state)
{
	struct metrics_sub *ev = metrics_sub_new();
	struct metrics_sub_source sub = { .name = "s", .events = ev };
	struct metrics_sources src = { .kafka_reachable = -1, .subs = &sub, .nsubs = 1 };
	pthread_t t[THREADS];
	const uint64_t total = (uint64_t)THREADS * ROUNDS;
	uint64_t slow = 0;
	char *text, want[128], num[32];
	struct parsed p;

	(void)state;
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, hammer, ev), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	for (int i = 0; i < ROUNDS; i++)
		slow += i % 3 ? 0 : 1;
	slow *= THREADS;

	text = render(&src);
	parse_exposition(text, &p);
	assert_int_equal(value_of(text, "ackd_publish_requests_total{status=\"200\"}"), total / 2);
	assert_int_equal(value_of(text, "ackd_publish_requests_total{status=\"503\"}"), total / 2);
	assert_int_equal(value_of(text, "ackd_publish_records_total"), total * 3);
	assert_int_equal(value_of(text, "ackd_produce_latency_seconds_count"), total);
	assert_int_equal(value_of(text, "ackd_produce_latency_seconds_bucket{le=\"0.001\"}"),
	    total - slow);
	assert_int_equal(value_of(text, "ackd_produce_latency_seconds_bucket{le=\"2.5\"}"), total);
	/* The sum is exact: integer nanoseconds, no lost updates. */
	snprintf(want, sizeof(want), "ackd_produce_latency_seconds_sum %s",
	    ms_str((total - slow) + 2000 * slow, num, sizeof(num)));
	assert_line(text, want);
	assert_int_equal(value_of(text, "ackd_produce_errors_total{reason=\"timeout\"}"), total);
	assert_int_equal(value_of(text, "ackd_spool_fsync_seconds_count"), total);
	snprintf(want, sizeof(want), "ackd_spool_fsync_seconds_sum %s",
	    ms_str(total / 2, num, sizeof(num)));
	assert_line(text, want);
	assert_int_equal(value_of(text,
	    "ackd_webhook_requests_total{subscription=\"s\",status=\"2xx\"}"), total);
	assert_int_equal(value_of(text,
	    "ackd_webhook_latency_seconds_count{subscription=\"s\"}"), total);
	snprintf(want, sizeof(want),
	    "ackd_webhook_latency_seconds_sum{subscription=\"s\"} %s",
	    ms_str(total * 125, num, sizeof(num)));
	assert_line(text, want);
	free(text);
	metrics_sub_free(ev);
}

/* Scrapes while other threads record: every scrape parses, buckets never shrink. */
struct scrape_arg {
	struct metrics_sub *ev;
	atomic_int stop;
};

static void *record_until_stopped(void *arg)
{
	struct scrape_arg *a = arg;

	while (!atomic_load(&a->stop)) {
		metrics_produce_ack(0.003);
		metrics_webhook_request(a->ev, 500, 1.0);
	}
	return NULL;
}

static void test_scrape_while_recording(void **state)
{
	struct scrape_arg a = { .ev = metrics_sub_new() };
	struct metrics_sub_source sub = { .name = "s", .events = a.ev };
	struct metrics_sources src = { .kafka_reachable = -1, .subs = &sub, .nsubs = 1 };
	pthread_t t[2];
	uint64_t last = 0;

	(void)state;
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&t[i], NULL, record_until_stopped, &a), 0);
	for (int i = 0; i < 50; i++) {
		char *text = render(&src);
		struct parsed p;
		uint64_t b1, b2, count;

		parse_exposition(text, &p);
		b1 = value_of(text, "ackd_produce_latency_seconds_bucket{le=\"0.0025\"}");
		b2 = value_of(text, "ackd_produce_latency_seconds_bucket{le=\"0.005\"}");
		count = value_of(text, "ackd_produce_latency_seconds_count");
		assert_int_equal(b1, 0);
		assert_true(b2 <= count);
		assert_int_equal(value_of(text, "ackd_produce_latency_seconds_bucket{le=\"+Inf\"}"),
		    count);
		assert_true(count >= last);
		last = count;
		free(text);
	}
	atomic_store(&a.stop, 1);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(t[i], NULL), 0);
	metrics_sub_free(a.ev);
}

/* --- status document --------------------------------------------------------- */

static void test_status_json(void **state)
{
	struct spool_stats sp;
	struct producer_stats pr;
	struct metrics_sub_source subs[2];
	struct metrics_sources src;
	json_t *j, *o, *s;
	char *dump;

	(void)state;
	fill_sources(&src, &sp, &pr, subs, NULL);
	j = metrics_status_json(&src);
	assert_non_null(j);
	/* The versions: ackd's and the librdkafka it runs on (not the headers'). */
	assert_string_equal(json_string_value(json_object_get(j, "version")), PACKAGE_VERSION);
	assert_string_equal(json_string_value(json_object_get(j, "librdkafka")),
	    rd_kafka_version_str());
	json_object_del(j, "version");
	json_object_del(j, "librdkafka");
	dump = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(dump,
	    "{\"kafka\":{\"brokers_up\":1,\"producer\":{\"delivered\":100,\"failed\":3,"
	    "\"in_flight\":4,\"state\":\"ok\"},\"reachable\":true},"
	    "\"spool\":{\"bytes\":4096,\"damaged\":1,\"failed\":3,\"oldest_age_seconds\":2.5,"
	    "\"records\":5,\"segments\":2},"
	    "\"subscriptions\":[{\"assigned_partitions\":3,\"concurrency_limit\":5,"
	    "\"dead_lettered\":2,\"delivered\":9,"
	    "\"in_flight\":3,\"lag\":7,\"name\":\"a\\\"b\\\\c\\nd\",\"paused\":false,"
	    "\"paused_by\":[],\"rate_limit\":200,\"retrying\":1},"
	    "{\"assigned_partitions\":0,\"concurrency_limit\":0,\"dead_lettered\":0,"
	    "\"delivered\":0,\"in_flight\":0,"
	    "\"lag\":null,\"name\":\"billing\",\"paused\":true,"
	    "\"paused_by\":[\"operator\",\"endpoint_gone\"],\"rate_limit\":0,"
	    "\"retrying\":0}]}");
	free(dump);
	json_decref(j);

	/* Producer states. */
	src.producer_rebuilding = true;
	j = metrics_status_json(&src);
	o = json_object_get(json_object_get(json_object_get(j, "kafka"), "producer"), "state");
	assert_string_equal(json_string_value(o), "rebuilding");
	json_decref(j);
	src.producer_rebuilding = false;
	pr.brokers_up = 0;
	j = metrics_status_json(&src);
	o = json_object_get(json_object_get(j, "kafka"), "producer");
	assert_string_equal(json_string_value(json_object_get(o, "state")), "disconnected");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "kafka"),
	    "brokers_up")), 0);
	json_decref(j);

	/* Nothing running: the same keys, null values, no subscriptions. */
	j = metrics_status_json(&empty_src);
	assert_true(json_is_null(json_object_get(j, "spool")));
	s = json_object_get(j, "kafka");
	assert_true(json_is_object(s));
	assert_true(json_is_null(json_object_get(s, "reachable")));
	assert_true(json_is_null(json_object_get(s, "brokers_up")));
	assert_true(json_is_null(json_object_get(s, "producer")));
	assert_true(json_is_array(json_object_get(j, "subscriptions")));
	assert_int_equal(json_array_size(json_object_get(j, "subscriptions")), 0);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_events_exact, reset),
		cmocka_unit_test_setup(test_histogram, reset),
		cmocka_unit_test_setup(test_sources, reset),
		cmocka_unit_test_setup(test_process, reset),
		cmocka_unit_test_setup(test_concurrent, reset),
		cmocka_unit_test_setup(test_scrape_while_recording, reset),
		cmocka_unit_test_setup(test_status_json, reset),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
