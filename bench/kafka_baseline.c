/*
 * kafka_baseline: the Kafka ceiling for bench/publish.
 *
 * A direct librdkafka producer with the settings ackd's producer uses
 * (daemon/producer.c: acks=all, enable.idempotence=true, linger.ms=0,
 * max.in.flight.requests.per.connection=2, batch.num.messages=10000,
 * queue.buffering.max.messages=200000, the murmur2_random partitioner,
 * sticky.partitioning.linger.ms=5),
 * producing messages of the size the benchmark publishes through ackd, each
 * with a 26-character "ackd-id" header as ackd adds, no key, to the same
 * broker and topic. Messages are produced as fast
 * as librdkafka's queue takes them for -d seconds, then flushed; the rate is
 * delivered messages divided by the time from the first produce to the end of
 * the flush. A short warm-up (metadata, producer id, connections) comes first
 * and is not counted.
 *
 * With -r RATE it produces at that fixed rate instead (open loop, each
 * message at its due time) and reports each message's latency from its due
 * time to its delivery report, as the load generator measures a fixed-rate
 * row: the Kafka-side floor of an ack=kafka answer at that rate.
 *
 * With -C PARTITIONS it only creates the topic (replication factor 1; an
 * existing topic is fine) and waits until every partition has a leader: the
 * benchmark's broker comes without Kafka's command-line tools.
 *
 * Threads: the main thread produces and serves delivery reports.
 *
 * usage: kafka_baseline -b BROKERS -t TOPIC [-s BYTES] [-d SECS] [-r RATE] [-X name=value]...
 *        kafka_baseline -b BROKERS -t TOPIC -C PARTITIONS
 * Output: one line of JSON on stdout.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#define WARMUP_MESSAGES 2000
#define FLUSH_MS 60000
#define MAX_PROPS 32
#define ID_LEN 26
#define ADMIN_TIMEOUT_MS 30000

static uint64_t delivered, failed;
static rd_kafka_resp_err_t first_error;
/* -r: each measured message's latency in µs, from its due time to its report. */
static uint32_t *lat_us;
static size_t nlat, lat_cap;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double now_s(void)
{
	return (double)now_ns() / 1e9;
}

/* A message's opaque is its due time in ns (-r; a 64-bit uintptr_t), or 0: not measured. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	uint64_t due = (uint64_t)(uintptr_t)m->_private;

	(void)rk;
	(void)opaque;
	if (m->err) {
		if (!failed)
			first_error = m->err;
		failed++;
		return;
	}
	delivered++;
	if (due && nlat < lat_cap) {
		uint64_t us = (now_ns() - due) / 1000;
		lat_us[nlat++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

static uint32_t pctl(double q)
{
	size_t i = (size_t)(q * (double)nlat);

	return nlat ? lat_us[i < nlat ? i : nlat - 1] : 0;
}

static void set(rd_kafka_conf_t *kc, const char *name, const char *value)
{
	char err[512];

	if (rd_kafka_conf_set(kc, name, value, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "kafka_baseline: %s=%s: %s\n", name, value, err);
		exit(2);
	}
}

/* A distinct id per message, as long as ackd's (a ULID's 26 characters). */
static void make_id(char *id, uint64_t n)
{
	static const char digits[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

	for (int i = ID_LEN - 1; i >= 0; i--) {
		id[i] = digits[n & 31];
		n >>= 5;
	}
}

static int produce_one(rd_kafka_t *rk, const char *topic, const char *value, size_t size,
    uint64_t n, uint64_t due_ns)
{
	char id[ID_LEN];
	rd_kafka_resp_err_t err;

	make_id(id, n);
	for (;;) {
		err = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic),
		    RD_KAFKA_V_VALUE((void *)value, size), RD_KAFKA_V_HEADER("ackd-id", id, ID_LEN),
		    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
		    RD_KAFKA_V_OPAQUE((void *)(uintptr_t)due_ns), RD_KAFKA_V_END);
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
			break;
		rd_kafka_poll(rk, 1);
	}
	if (err) {
		fprintf(stderr, "kafka_baseline: produce: %s\n", rd_kafka_err2str(err));
		return -1;
	}
	return 0;
}

/* Every partition of topic has a leader: 1; not yet: 0. */
static int topic_ready(rd_kafka_t *rk, const char *name, int partitions)
{
	const struct rd_kafka_metadata *md;
	rd_kafka_topic_t *t = rd_kafka_topic_new(rk, name, NULL);
	int ready = 0;

	if (rd_kafka_metadata(rk, 0, t, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR &&
		    md->topics[0].partition_cnt == partitions) {
			ready = 1;
			for (int i = 0; i < partitions; i++)
				if (md->topics[0].partitions[i].leader < 0 ||
				    md->topics[0].partitions[i].err)
					ready = 0;
		}
		rd_kafka_metadata_destroy(md);
	}
	rd_kafka_topic_destroy(t);
	return ready;
}

static int create_topic(rd_kafka_t *rk, const char *name, int partitions)
{
	rd_kafka_NewTopic_t *nt;
	rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
	rd_kafka_event_t *ev;
	const rd_kafka_CreateTopics_result_t *res;
	const rd_kafka_topic_result_t **tr;
	size_t ntr;
	char err[512];
	double deadline = now_s() + ADMIN_TIMEOUT_MS / 1000.0;
	int rc = -1;

	nt = rd_kafka_NewTopic_new(name, partitions, 1, err, sizeof(err));
	if (!nt) {
		fprintf(stderr, "kafka_baseline: topic %s: %s\n", name, err);
		return -1;
	}
	rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
	ev = rd_kafka_queue_poll(q, ADMIN_TIMEOUT_MS);
	res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
	if (!res) {
		fprintf(stderr, "kafka_baseline: create topic %s: %s\n", name,
		    ev ? rd_kafka_event_error_string(ev) : "timed out");
		goto done;
	}
	tr = rd_kafka_CreateTopics_result_topics(res, &ntr);
	if (ntr == 1 && rd_kafka_topic_result_error(tr[0]) &&
	    rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
		fprintf(stderr, "kafka_baseline: create topic %s: %s\n", name,
		    rd_kafka_topic_result_error_string(tr[0]));
		goto done;
	}
	while (!topic_ready(rk, name, partitions)) {
		if (now_s() > deadline) {
			fprintf(stderr, "kafka_baseline: topic %s has no leaders yet\n", name);
			goto done;
		}
		usleep(100000);
	}
	printf("{\"topic\":\"%s\",\"partitions\":%d}\n", name, partitions);
	rc = 0;
done:
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_NewTopic_destroy(nt);
	rd_kafka_queue_destroy(q);
	return rc;
}

int main(int argc, char **argv)
{
	const char *brokers = NULL, *topic = NULL, *props[MAX_PROPS];
	size_t nprops = 0, size = 256;
	double duration = 10, rate = 0, t0, t_end, t_done;
	rd_kafka_conf_t *kc;
	rd_kafka_t *rk;
	char err[512], *value;
	uint64_t n = 0, warm_delivered;
	int c, create_partitions = 0;

	while ((c = getopt(argc, argv, "b:t:s:d:r:X:C:")) != -1) {
		switch (c) {
		case 'C': create_partitions = atoi(optarg); break;
		case 'b': brokers = optarg; break;
		case 't': topic = optarg; break;
		case 's': size = strtoul(optarg, NULL, 10); break;
		case 'd': duration = strtod(optarg, NULL); break;
		case 'r': rate = strtod(optarg, NULL); break;
		case 'X':
			if (nprops == MAX_PROPS || !strchr(optarg, '=')) {
				fprintf(stderr, "kafka_baseline: -X name=value, at most %d\n", MAX_PROPS);
				return 2;
			}
			props[nprops++] = optarg;
			break;
		default:
			fprintf(stderr, "usage: kafka_baseline -b BROKERS -t TOPIC [-s BYTES] [-d SECS] "
			    "[-r RATE] [-X name=value]...\n");
			return 2;
		}
	}
	if (!brokers || !topic || duration <= 0 || rate < 0 || (rate > 0 && rate * duration < 1)) {
		fprintf(stderr, "usage: kafka_baseline -b BROKERS -t TOPIC [-s BYTES] [-d SECS] "
		    "[-r RATE] [-X name=value]...\n");
		return 2;
	}

	kc = rd_kafka_conf_new();
	set(kc, "bootstrap.servers", brokers);
	set(kc, "acks", "all");
	set(kc, "enable.idempotence", "true");
	set(kc, "linger.ms", "0");
	set(kc, "max.in.flight.requests.per.connection", "2");
	set(kc, "batch.num.messages", "10000");
	set(kc, "queue.buffering.max.messages", "200000");
	set(kc, "partitioner", "murmur2_random");
	set(kc, "sticky.partitioning.linger.ms", "5");
	for (size_t i = 0; i < nprops; i++) {
		char name[256];
		const char *eq = strchr(props[i], '=');
		snprintf(name, sizeof(name), "%.*s", (int)(eq - props[i]), props[i]);
		set(kc, name, eq + 1);
	}
	rd_kafka_conf_set_dr_msg_cb(kc, on_delivery);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof(err));
	if (!rk) {
		fprintf(stderr, "kafka_baseline: %s\n", err);
		return 1;
	}
	if (create_partitions > 0) {
		int rc = create_topic(rk, topic, create_partitions);
		rd_kafka_destroy(rk);
		return rc < 0 ? 1 : 0;
	}
	value = malloc(size ? size : 1);
	for (size_t i = 0; i < size; i++)
		value[i] = (char)('a' + i % 26);

	for (; n < WARMUP_MESSAGES; n++)
		if (produce_one(rk, topic, value, size, n, 0) < 0)
			return 1;
	if (rd_kafka_flush(rk, FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR || failed) {
		fprintf(stderr, "kafka_baseline: warm-up failed: %s\n",
		    failed ? rd_kafka_err2str(first_error) : "flush timed out");
		return 1;
	}
	warm_delivered = delivered;

	t0 = now_s();
	t_end = t0 + duration;
	if (rate > 0) {
		uint64_t start = now_ns(), count = (uint64_t)(rate * duration);
		lat_cap = count;
		lat_us = malloc(count * sizeof(*lat_us));
		if (!lat_us) {
			fprintf(stderr, "kafka_baseline: out of memory\n");
			return 1;
		}
		for (uint64_t i = 0; i < count; i++, n++) {
			uint64_t due = start + (uint64_t)((double)i * 1e9 / rate), now;
			while ((now = now_ns()) < due) {
				struct timespec ts = { (time_t)((due - now) / 1000000000u),
						       (long)((due - now) % 1000000000u) };
				rd_kafka_poll(rk, 0);
				nanosleep(&ts, NULL);
			}
			if (produce_one(rk, topic, value, size, n, due) < 0)
				return 1;
			rd_kafka_poll(rk, 0);
		}
	} else {
		for (;;) {
			for (int k = 0; k < 1000; k++, n++)
				if (produce_one(rk, topic, value, size, n, 0) < 0)
					return 1;
			rd_kafka_poll(rk, 0);
			if (now_s() >= t_end)
				break;
		}
	}
	if (rd_kafka_flush(rk, FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		fprintf(stderr, "kafka_baseline: flush timed out\n");
		return 1;
	}
	t_done = now_s();
	if (nlat)
		qsort(lat_us, nlat, sizeof(*lat_us), cmp_u32);
	printf("{\"rate_target\":%.1f,\"lat_us\":{\"p50\":%u,\"p99\":%u,\"p999\":%u,\"max\":%u},",
	    rate, pctl(0.5), pctl(0.99), pctl(0.999), nlat ? lat_us[nlat - 1] : 0);
	printf("\"messages\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"msgs_per_s\":%.1f,"
	       "\"mb_per_s\":%.2f,\"size\":%zu}\n",
	    (unsigned long long)(delivered - warm_delivered), (unsigned long long)failed,
	    t_done - t0, (double)(delivered - warm_delivered) / (t_done - t0),
	    (double)(delivered - warm_delivered) * (double)size / (t_done - t0) / 1e6, size);
	rd_kafka_destroy(rk);
	free(value);
	free(lat_us);
	return failed ? 1 : 0;
}
