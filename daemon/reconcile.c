/*
 * reconcile: the start-up check of keyed records against Kafka.
 *
 * Why. A keyed record (one an Idempotency-Key names) was promised one copy.
 * Its acknowledgement is written to the .ack file as soon as Kafka's
 * delivery report comes (spool_ack_keyed()), but a kill -9 between Kafka's
 * write and that line leaves a record Kafka holds and the spool calls
 * unacknowledged: produced again, it would be a second copy. So before the
 * producer sends anything recovered, the keyed records still unacknowledged
 * are looked for in Kafka by their ackd-id header; one found there is
 * acknowledged as a delivery report would (spool_ack_keyed(),
 * idem_delivered() with the partition and offset found) and is not
 * produced again.
 *
 * How. Per topic: the partitions (the record's explicit partition, or all
 * of them), a start offset per partition from rd_kafka_offsets_for_times()
 * at the oldest such record's time less SKEW_MS, and
 * the high watermark when the check starts. A record's time is the earlier
 * of its timestamp and its accept time (the first ten characters of its
 * ackd-id): ackd produces with the timestamp as CreateTime, which is the
 * accept time unless a REST Proxy v3 request gave one, maybe in the past; a
 * LogAppendTime topic stamps the broker's time, later than the accept time
 * unless the broker's clock is behind ours: SKEW_MS allows for that. The
 * lookup returns the first offset whose timestamp is at or after the time
 * asked for, so it is never past the record. And
 * the high watermark when the check starts. [start, high watermark) is
 * read with a legacy (group-less) consumer: no group, no commits, reading
 * uncommitted (another producer's open transaction must not hide ackd's
 * records), with kafka.producer's settings and kafka.consumer's on top (a
 * publish-only ackd has its credentials in the first only). A record
 * Kafka acknowledged is below the high watermark (acks=all: it is the
 * committed end), so reading to it is enough. Pending records are sorted by
 * topic and ackd-id; each message read is one binary search.
 *
 * Bounds. No keyed record pending: nothing happens (no Kafka connection).
 * Kafka unreachable: the check waits and tries again every RETRY_MS, for as
 * long as it takes, logging every LOG_EVERY_MS: sending before looking is
 * exactly the duplicate. A topic that no longer exists or that the
 * credentials may not read, or a topic still being read BOUND_MS after
 * Kafka first answered about it (each topic has its own bound), a spool
 * record that cannot be read, or a reader that cannot be created: a
 * warning names the topic and the count, the
 * records count in ackd_idempotency_check_unverified_total, and they are
 * sent (a second copy with the same ackd-id is then possible: promise 3).
 *
 * Threads: the kafka loop, before it sends anything; tick() keeps its
 * heartbeat and its waiters' deadlines while the check waits.
 */
#include "config.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "idem.h"
#include "log.h"
#include "metrics.h"
#include "publish.h"
#include "reconcile.h"
#include "spool.h"
#include "util.h"

#define SKEW_MS 60000      /* the broker's clock may be this far behind ours */
#define BOUND_MS 120000    /* reading, from the first answer of Kafka on */
#define RETRY_MS 1000
#define LOG_EVERY_MS 10000
#define CALL_MS 5000       /* one metadata or offsets call */
#define TICK_MS 100        /* the kafka loop's heartbeat while reading */
#define TRIES 10           /* of one spool read, or of creating the reader */

struct pending {
	uint64_t seq;
	char topic[256];
	int32_t partition;  /* -1: any */
	int64_t timestamp_ms; /* the earlier of its timestamp and its accept time */
	char id[SPOOL_KEY_ID_LEN];
	bool found;
};

struct part {
	int32_t id;
	int64_t next, end;  /* offsets still to read: [next, end) */
	bool started;
};

struct check {
	const struct conf *conf;
	struct spool *sp;
	struct idem *idem;
	void (*tick)(void *arg);
	void *arg;
	const atomic_bool *stop;
	rd_kafka_t *rk;
	int64_t bound_at;   /* per topic: 0 until Kafka first answered about it */
	int64_t next_log;
	size_t found, unverified;
};

/* By topic, then ackd-id: a topic's records are a run, looked up by id. */
static int by_topic_id(const void *a, const void *b)
{
	const struct pending *x = a, *y = b;
	int c = strcmp(x->topic, y->topic);
	return c ? c : memcmp(x->id, y->id, SPOOL_KEY_ID_LEN);
}

static int id_vs_pending(const void *id, const void *p)
{
	return memcmp(id, ((const struct pending *)p)->id, SPOOL_KEY_ID_LEN);
}

/* Wait ms, ticking; false when stopping. */
static bool pause_ms(struct check *c, int ms)
{
	int64_t until = now_ms() + ms;

	while (!atomic_load(c->stop)) {
		int64_t left = until - now_ms();
		c->tick(c->arg);
		if (left <= 0)
			return true;
		usleep((useconds_t)(left < 100 ? left : 100) * 1000);
	}
	return false;
}

static bool over_bound(struct check *c)
{
	return c->bound_at && now_ms() >= c->bound_at;
}

/* The records of pend[0..n) (one topic) are sent unverified. */
static void give_up(struct check *c, struct pending *pend, size_t n, const char *why)
{
	size_t left = 0;

	for (size_t i = 0; i < n; i++)
		left += !pend[i].found;
	if (!left)
		return;
	log_warnx("idempotency check: topic %s: %s; its %zu unacknowledged keyed records are "
	    "sent without it (a second copy with the same ackd-id is possible)", pend[0].topic,
	    why, left);
	metrics_idem_check_unverified(left);
	c->unverified += left;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	log_msg(level <= 3 ? LOG_LVL_WARN : LOG_LVL_DEBUG, "idempotency check: kafka: %s: %s",
	    fac, buf);
}

/* An integer property of kc into *out: 0, or -1 with err filled. */
static int conf_number(rd_kafka_conf_t *kc, const char *name, long long *out, char *err,
    size_t errlen)
{
	char v[32];
	size_t len = sizeof(v);

	if (rd_kafka_conf_get(kc, name, v, &len) != RD_KAFKA_CONF_OK) {
		snprintf(err, errlen, "cannot read %s", name);
		return -1;
	}
	*out = strtoll(v, NULL, 10);
	return 0;
}

/* Set an integer property of kc: 0, or -1 with err filled. */
static int conf_set_number(rd_kafka_conf_t *kc, const char *name, long long v, char *err,
    size_t errlen)
{
	char s[32];

	snprintf(s, sizeof(s), "%lld", v);
	return rd_kafka_conf_set(kc, name, s, err, errlen) == RD_KAFKA_CONF_OK ? 0 : -1;
}

/*
 * librdkafka refuses a consumer whose sizes, where set, disagree:
 * message.max.bytes above fetch.max.bytes, or receive.message.max.bytes
 * below fetch.max.bytes + 512. The reader takes both lists, and
 * kafka.producer may set the first and the last for producing, kafka.consumer
 * the middle one for subscriptions. The reader sends small requests and
 * fetches a little at a time: it lowers fetch.max.bytes to fit
 * receive.message.max.bytes, then message.max.bytes to fit fetch.max.bytes.
 */
static int fit_sizes(rd_kafka_conf_t *kc, char *err, size_t errlen)
{
	long long msg, fetch, recv;

	if (conf_number(kc, "message.max.bytes", &msg, err, errlen) < 0 ||
	    conf_number(kc, "fetch.max.bytes", &fetch, err, errlen) < 0 ||
	    conf_number(kc, "receive.message.max.bytes", &recv, err, errlen) < 0)
		return -1;
	if (fetch > recv - 512) {
		fetch = recv - 512;
		if (conf_set_number(kc, "fetch.max.bytes", fetch, err, errlen) < 0)
			return -1;
	}
	if (msg > fetch && conf_set_number(kc, "message.max.bytes", fetch, err, errlen) < 0)
		return -1;
	return 0;
}

static rd_kafka_t *new_reader(const struct conf *conf, char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = rd_kafka_conf_new();
	rd_kafka_t *rk;
	const char *settings[][2] = {
		{ "bootstrap.servers", conf->kafka.brokers },
		{ "client.id", "ackd-idempotency-check" },
		{ "enable.partition.eof", "true" },
		{ "log.queue", "false" },
		{ "enable.metrics.push", "false" },
		{ "allow.auto.create.topics", "false" },
	};
	const char *forced[][2] = {
		{ "isolation.level", "read_uncommitted" },
		{ "enable.auto.commit", "false" },
		{ "enable.auto.offset.store", "false" },
		{ "enable.partition.eof", "true" },
		{ "allow.auto.create.topics", "false" },
	};

	/* No group.id: the legacy consumer API, no group joined, nothing committed. */
	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		if (rd_kafka_conf_set(kc, settings[i][0], settings[i][1], err, errlen) !=
		    RD_KAFKA_CONF_OK)
			goto fail;
	/*
	 * The producer's TLS and SASL settings reach the topics the records
	 * were published to (a publish-only ackd has no others); kafka.consumer
	 * on top, as for subscriptions. Then what this reader must be whatever
	 * the lists say: ackd's records are never in a transaction, and a
	 * read_committed reader stops at another producer's open one.
	 */
	if (conf_apply_rdkafka(kc, &conf->kafka.producer, err, errlen) < 0 ||
	    conf_apply_rdkafka(kc, &conf->kafka.consumer, err, errlen) < 0 ||
	    fit_sizes(kc, err, errlen) < 0)
		goto fail;
	for (size_t i = 0; i < sizeof(forced) / sizeof(forced[0]); i++)
		if (rd_kafka_conf_set(kc, forced[i][0], forced[i][1], err, errlen) !=
		    RD_KAFKA_CONF_OK)
			goto fail;
	rd_kafka_conf_set_log_cb(kc, on_log);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, errlen);
	if (!rk)
		goto fail;
	return rk;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

static bool transient(rd_kafka_resp_err_t e)
{
	return e == RD_KAFKA_RESP_ERR__TRANSPORT || e == RD_KAFKA_RESP_ERR__TIMED_OUT ||
	    e == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || e == RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE ||
	    e == RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION ||
	    e == RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT || e == RD_KAFKA_RESP_ERR__WAIT_COORD ||
	    e == RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH || e == RD_KAFKA_RESP_ERR__RESOLVE ||
	    e == RD_KAFKA_RESP_ERR__IN_PROGRESS || e == RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE;
}

/* A Kafka call failed for now: log now and then, wait, tell whether to try again. */
static bool retry(struct check *c, const char *topic, size_t n, rd_kafka_resp_err_t e)
{
	if (now_ms() >= c->next_log) {
		log_warnx("idempotency check: topic %s: %s; %zu recovered keyed records wait for "
		    "the check before they are sent; retrying", topic, rd_kafka_err2str(e), n);
		c->next_log = now_ms() + LOG_EVERY_MS;
	}
	return !over_bound(c) && pause_ms(c, RETRY_MS);
}

/*
 * The partitions of pend's topic to read; 0 and *parts (malloc'ed), or -1
 * when the topic is given up (logged) or stopping.
 */
static int plan(struct check *c, struct pending *pend, size_t n, struct part **parts,
    size_t *nparts)
{
	const char *topic = pend[0].topic;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *l = NULL;
	rd_kafka_resp_err_t e;
	int64_t oldest = INT64_MAX, from;
	bool any = false;
	struct part *v = NULL;
	size_t k = 0;
	char why[300];

	for (size_t i = 0; i < n; i++) {
		any |= pend[i].partition < 0;
		if (pend[i].timestamp_ms < oldest)
			oldest = pend[i].timestamp_ms;
	}
	/* Kafka reads a negative time as "latest" or "earliest": the epoch instead. */
	from = oldest > SKEW_MS ? oldest - SKEW_MS : 0;
	for (;;) {
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, topic, NULL);
		if (!rkt) {
			snprintf(why, sizeof(why), "%s", rd_kafka_err2str(rd_kafka_last_error()));
			goto give_up;
		}
		e = rd_kafka_metadata(c->rk, 0, rkt, &md, CALL_MS);
		rd_kafka_topic_destroy(rkt);
		if (!e && md->topic_cnt == 1 && transient(md->topics[0].err))
			e = md->topics[0].err;
		if (!e)
			break;
		if (md)
			rd_kafka_metadata_destroy(md);
		md = NULL;
		if (!retry(c, topic, n, e)) {
			if (atomic_load(c->stop))
				goto stop;
			snprintf(why, sizeof(why), "no metadata within the bound (%s)",
			    rd_kafka_err2str(e));
			goto give_up;
		}
	}
	if (!c->bound_at)
		c->bound_at = now_ms() + BOUND_MS;
	if (md->topic_cnt != 1 || md->topics[0].err) {
		e = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
		snprintf(why, sizeof(why), "cannot read it (%s)", rd_kafka_err2str(e));
		goto give_up;
	}
	v = xcalloc((size_t)md->topics[0].partition_cnt + 1, sizeof(*v));
	l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
	for (int i = 0; i < md->topics[0].partition_cnt; i++) {
		int32_t id = md->topics[0].partitions[i].id;
		bool want = any;
		for (size_t j = 0; j < n && !want; j++)
			want = pend[j].partition == id;
		if (!want)
			continue;
		v[k++].id = id;
		rd_kafka_topic_partition_list_add(l, topic, id)->offset = from;
	}
	rd_kafka_metadata_destroy(md);
	md = NULL;
	/* The high watermark first: what is read is what Kafka held when the check began. */
	for (size_t i = 0; i < k; i++) {
		int64_t low;
		while ((e = rd_kafka_query_watermark_offsets(c->rk, topic, v[i].id, &low, &v[i].end,
		    CALL_MS)))
			if (!transient(e) || !retry(c, topic, n, e)) {
				snprintf(why, sizeof(why), "cannot read the offsets of partition %d (%s)",
				    (int)v[i].id, rd_kafka_err2str(e));
				goto give_up;
			}
	}
	for (;;) {
		e = rd_kafka_offsets_for_times(c->rk, l, CALL_MS);
		for (int i = 0; !e && i < l->cnt; i++)
			e = l->elems[i].err;
		if (!e)
			break;
		if (!transient(e) || !retry(c, topic, n, e)) {
			snprintf(why, sizeof(why), "cannot look up offsets by time (%s)",
			    rd_kafka_err2str(e));
			goto give_up;
		}
		for (int i = 0; i < l->cnt; i++) {
			l->elems[i].offset = from;
			l->elems[i].err = 0;
		}
	}
	for (int i = 0; i < l->cnt; i++) {
		for (size_t j = 0; j < k; j++) {
			if (v[j].id != l->elems[i].partition)
				continue;
			/* -1: nothing at or after that time: nothing to read. */
			v[j].next = l->elems[i].offset >= 0 ? l->elems[i].offset : v[j].end;
		}
	}
	rd_kafka_topic_partition_list_destroy(l);
	*parts = v;
	*nparts = k;
	return 0;
give_up:
	give_up(c, pend, n, why);
stop:
	if (md)
		rd_kafka_metadata_destroy(md);
	if (l)
		rd_kafka_topic_partition_list_destroy(l);
	free(v);
	return -1;
}

/* m's ackd-id against pend's ids (sorted): a match is that record's acknowledgement. */
static size_t match(struct check *c, struct pending *pend, size_t n, const rd_kafka_message_t *m)
{
	rd_kafka_headers_t *h;
	const void *val;
	size_t size;
	struct pending *p;

	if (rd_kafka_message_headers(m, &h) ||
	    rd_kafka_header_get_last(h, SPOOL_HDR_ID, &val, &size) || size != SPOOL_KEY_ID_LEN)
		return 0;
	p = bsearch(val, pend, n, sizeof(*pend), id_vs_pending);
	if (!p || p->found)
		return 0;
	p->found = true;
	idem_delivered(c->idem, p->seq, m->partition, m->offset);
	spool_ack_keyed(c->sp, p->seq, p->id, m->partition, m->offset);
	log_info("idempotency check: record %" PRIu64 " (%.*s) is in Kafka at %s [%d] "
	    "offset %" PRId64 "; it is not sent again", p->seq, SPOOL_KEY_ID_LEN, p->id,
	    p->topic, (int)m->partition, (int64_t)m->offset);
	c->found++;
	metrics_idem_check_found(1);
	return 1;
}

/* Read pend's topic; the records found there are acknowledged. */
static void check_topic(struct check *c, struct pending *pend, size_t n)
{
	const char *topic = pend[0].topic;
	struct part *parts = NULL;
	size_t nparts = 0, open = 0, found = 0, reading = 0;
	rd_kafka_topic_t *rkt = NULL;
	rd_kafka_queue_t *q = NULL;
	int64_t total = 0, next_tick = 0;

	c->bound_at = 0; /* every topic has its own bound */
	if (plan(c, pend, n, &parts, &nparts) < 0)
		return;
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].next < parts[i].end) {
			reading++;
			total += parts[i].end - parts[i].next;
		}
	log_info("idempotency check: topic %s: %zu unacknowledged keyed records; reading %" PRId64
	    " messages of %zu partitions", topic, n, total, reading);
	if (!reading)
		goto out;
	rkt = rd_kafka_topic_new(c->rk, topic, NULL);
	q = rd_kafka_queue_new(c->rk);
	if (!rkt || !q) {
		give_up(c, pend, n, "cannot set up the reader");
		goto out;
	}
	for (size_t i = 0; i < nparts; i++) {
		if (parts[i].next >= parts[i].end)
			continue;
		if (rd_kafka_consume_start_queue(rkt, parts[i].id, parts[i].next, q) < 0) {
			give_up(c, pend, n, rd_kafka_err2str(rd_kafka_last_error()));
			goto out;
		}
		parts[i].started = true;
		open++;
	}
	while (open && found < n) {
		rd_kafka_message_t *m;
		if (atomic_load(c->stop))
			goto out;
		if (over_bound(c)) {
			give_up(c, pend, n, "the check took longer than its bound (120 s)");
			goto out;
		}
		if (now_ms() >= next_tick) {
			c->tick(c->arg);
			next_tick = now_ms() + TICK_MS;
		}
		if (!(m = rd_kafka_consume_queue(q, TICK_MS)))
			continue;
		for (size_t i = 0; i < nparts; i++) {
			struct part *p = &parts[i];
			if (p->id != m->partition || !p->started || p->next >= p->end)
				continue;
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
				/* Below the high watermark yet at the end: records went away. */
				p->next = p->end;
			} else if (m->err) {
				if (!transient(m->err) && now_ms() >= c->next_log) {
					log_warnx("idempotency check: %s [%d]: %s", topic, (int)p->id,
					    rd_kafka_err2str(m->err));
					c->next_log = now_ms() + LOG_EVERY_MS;
				}
				break;
			} else {
				found += match(c, pend, n, m);
				p->next = m->offset + 1;
			}
			if (p->next >= p->end)
				open--;
			break;
		}
		rd_kafka_message_destroy(m);
	}
	if (!open || found == n)
		log_info("idempotency check: topic %s: %zu of %zu found in Kafka", topic, found, n);
out:
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].started)
			rd_kafka_consume_stop(rkt, parts[i].id);
	if (q)
		rd_kafka_queue_destroy(q);
	if (rkt)
		rd_kafka_topic_destroy(rkt);
	free(parts);
}

/* The unacknowledged keyed records, read back from the spool. */
static int collect(struct check *c, struct pending **out, size_t *nout)
{
	uint64_t *seqs;
	size_t n, k = 0;
	struct pending *v;

	*out = NULL;
	*nout = 0;
	if (idem_pending(c->idem, &seqs, &n) < 0)
		return -1;
	if (!n)
		return 0;
	if (!(v = calloc(n, sizeof(*v)))) {
		free(seqs);
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		struct spool_rec *r = NULL;
		const struct spool_msg *m;
		int rc, tries = 0;
		if (!spool_seq_live(c->sp, seqs[i]))
			continue; /* acknowledged before the restart */
		while ((rc = spool_get(c->sp, seqs[i], &r)) < 0 && ++tries < TRIES)
			if (!pause_ms(c, RETRY_MS))
				break;
		if (rc < 0) {
			log_warnx("idempotency check: cannot read keyed record %" PRIu64 " from the "
			    "spool; it is sent without the check (a second copy with the same "
			    "ackd-id is possible)", seqs[i]);
			metrics_idem_check_unverified(1);
			c->unverified++;
		}
		if (rc != 1)
			continue;
		m = &r->msg;
		for (size_t j = 0; j < m->nhdrs; j++) {
			if (!spool_hdr_is(&m->hdrs[j], SPOOL_HDR_ID) ||
			    m->hdrs[j].value_len != SPOOL_KEY_ID_LEN)
				continue;
			struct pending *p = &v[k++];
			p->seq = r->seq;
			snprintf(p->topic, sizeof(p->topic), "%.*s", (int)m->topic_len, m->topic);
			p->partition = m->partition;
			p->timestamp_ms = m->timestamp_ms;
			int64_t accepted = publish_id_time_ms(m->hdrs[j].value, SPOOL_KEY_ID_LEN);
			if (accepted >= 0 && accepted < p->timestamp_ms)
				p->timestamp_ms = accepted;
			memcpy(p->id, m->hdrs[j].value, SPOOL_KEY_ID_LEN);
			break;
		}
		spool_rec_free(r);
	}
	free(seqs);
	if (!k) {
		free(v);
		return 0;
	}
	qsort(v, k, sizeof(*v), by_topic_id);
	*out = v;
	*nout = k;
	return 0;
}

void reconcile_run(const struct conf *conf, struct spool *sp, struct idem *idem,
    void (*tick)(void *arg), void *arg, const atomic_bool *stop)
{
	struct check c = { .conf = conf, .sp = sp, .idem = idem, .tick = tick, .arg = arg,
		.stop = stop };
	struct pending *pend;
	size_t n, ntopics = 0;
	char err[512];

	if (!idem)
		return;
	if (collect(&c, &pend, &n) < 0) {
		log_warnx("idempotency check: out of memory listing the keyed records; they are "
		    "sent without it (a second copy with the same ackd-id is possible)");
		return;
	}
	if (!n)
		return;
	for (size_t i = 0; i < n; i++)
		ntopics += i == 0 || strcmp(pend[i].topic, pend[i - 1].topic) != 0;
	log_info("idempotency check: %zu recovered keyed records of %zu topics are not "
	    "acknowledged; looking for them in Kafka before sending anything recovered", n,
	    ntopics);
	for (int tries = 1; !(c.rk = new_reader(conf, err, sizeof(err))); tries++) {
		if (tries == TRIES) {
			log_warnx("idempotency check: cannot create a Kafka reader: %s; the %zu "
			    "records are sent without the check (a second copy with the same "
			    "ackd-id is possible)", err, n);
			metrics_idem_check_unverified(n);
			goto out;
		}
		log_errx("idempotency check: cannot create a Kafka reader: %s; retrying in 1s", err);
		if (!pause_ms(&c, RETRY_MS))
			goto out;
	}
	for (size_t i = 0; i < n && !atomic_load(stop);) {
		size_t j = i + 1;
		while (j < n && strcmp(pend[j].topic, pend[i].topic) == 0)
			j++;
		check_topic(&c, pend + i, j - i);
		i = j;
	}
	if (atomic_load(stop))
		log_info("idempotency check interrupted by the stop: %zu of %zu keyed records "
		    "found in Kafka (acknowledged now); the rest stay in the spool", c.found, n);
	else
		log_info("idempotency check done: %zu of %zu keyed records found in Kafka "
		    "(acknowledged now), %zu unverified, %zu to send", c.found, n, c.unverified,
		    n - c.found);
	rd_kafka_destroy(c.rk);
out:
	free(pend);
}
