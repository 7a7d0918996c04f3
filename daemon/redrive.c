/*
 * redrive: a subscription's dead letters back to their source topics.
 *
 * Design. One redrive is one thread with a librdkafka consumer of its own in
 * the group "<subscription group>.redrive". It takes the partitions of the
 * dead-letter topic by assignment (no group membership, so it never
 * rebalances the subscription), starts each at the group's committed offset
 * (the first dead letter not yet redriven) and stops at the end the topic
 * had when the redrive began, so dead letters that the redriven messages
 * cause again wait for the next redrive. It reads REDRIVE_BATCH dead letters
 * at a time and writes their republished copies to the spool as one batch
 * (one fsync); only when the spool says they are durable does it commit the
 * position after them. A crash in between republishes them again at the
 * next redrive (at least once), never skips one.
 *
 * A republished message is the dead letter's key, value and headers less
 * ackd-dlq-* (its ackd-id too, so the endpoint sees the same webhook-id),
 * plus ackd-redrive-count, to the topic its ackd-dlq-source-topic header
 * names, through the spool like a published message. A record without that
 * header is not a dead letter ackd wrote: it is skipped and counted.
 *
 * Threads: its own ("ackd-redrive"); the spool writer only signals it. The
 * command is answered from this thread.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "control.h"
#include "log.h"
#include "publish.h"
#include "redrive.h"
#include "spool.h"
#include "util.h"

#define REDRIVE_BATCH 200       /* dead letters per spool batch and commit */
#define REDRIVE_TIMEOUT_MS 10000 /* Kafka's answers */
#define REDRIVE_IDLE_MS 30000   /* no dead letter arrived although some are left */
#define REDRIVE_POLL_MS 100
#define COORD_RETRY_MS 200

struct redrive {
	const struct conf *conf;
	const struct conf_sub *cs;
	struct spool *sp;
	struct control_cmd *cmd;
	char *group; /* "<subscription group>.redrive" */
	pthread_t thread;
	atomic_bool stop, ended;

	/* The spool's answer to the batch out. */
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool answered;
	enum spool_err serr;
};

/* One partition of the dead-letter topic. */
struct dpart {
	int32_t id;
	int64_t next;      /* the first dead letter not yet taken */
	int64_t committed; /* the group's position */
	int64_t end;       /* the topic's end when the redrive began */
};

int redrive_headers(const struct spool_hdr *hdrs, size_t nhdrs, struct spool_hdr *out_hdrs,
    size_t *out_n, char *topic_buf, size_t topic_buflen, char *count_buf, size_t count_buflen,
    bool *has_id)
{
	unsigned long long count = 0;
	bool topic = false;
	size_t n = 0;

	*has_id = false;
	for (size_t i = 0; i < nhdrs; i++) {
		const struct spool_hdr *h = &hdrs[i];
		if (spool_hdr_is(h, SPOOL_HDR_DLQ_SOURCE_TOPIC) && h->value && h->value_len > 0 &&
		    h->value_len < topic_buflen && publish_topic_valid(h->value, h->value_len)) {
			memcpy(topic_buf, h->value, h->value_len);
			topic_buf[h->value_len] = '\0';
			topic = true;
		}
		if (spool_hdr_is(h, SPOOL_HDR_REDRIVE_COUNT)) {
			count = 0;
			for (size_t j = 0; h->value && j < h->value_len && j < 18; j++) {
				if (h->value[j] < '0' || h->value[j] > '9')
					break;
				count = count * 10 + (unsigned)(h->value[j] - '0');
			}
			continue;
		}
		if (h->name_len >= strlen(SPOOL_HDR_DLQ_PREFIX) &&
		    memcmp(h->name, SPOOL_HDR_DLQ_PREFIX, strlen(SPOOL_HDR_DLQ_PREFIX)) == 0)
			continue;
		if (spool_hdr_is(h, SPOOL_HDR_ID))
			*has_id = true;
		out_hdrs[n++] = *h;
	}
	if (!topic)
		return -1;
	snprintf(count_buf, count_buflen, "%llu", count + 1);
	out_hdrs[n++] = (struct spool_hdr){ .name = SPOOL_HDR_REDRIVE_COUNT,
		.name_len = strlen(SPOOL_HDR_REDRIVE_COUNT), .value = count_buf,
		.value_len = strlen(count_buf) };
	*out_n = n;
	return 0;
}

/* --- the batch out ------------------------------------------------------------ */

static void on_spooled(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct redrive *r = arg;

	(void)first_seq;
	pthread_mutex_lock(&r->mu);
	r->serr = err;
	r->answered = true;
	pthread_cond_signal(&r->cond);
	pthread_mutex_unlock(&r->mu);
}

/* Write b (taken) and wait until it is durable: 0, or -1 with err. */
static int spool_durable(struct redrive *r, struct spool_batch *b, char *err, size_t errlen)
{
	enum spool_err serr;

	r->answered = false;
	serr = spool_submit(r->sp, b, on_spooled, r);
	if (serr == SPOOL_OK) {
		/* The writer answers every batch, also when it closes. */
		pthread_mutex_lock(&r->mu);
		while (!r->answered)
			pthread_cond_wait(&r->cond, &r->mu);
		serr = r->serr;
		pthread_mutex_unlock(&r->mu);
	}
	if (serr != SPOOL_OK) {
		snprintf(err, errlen, "the republished messages were not written: %s",
		    spool_err_text(serr));
		return -1;
	}
	return 0;
}

/* --- reading the dead-letter topic ----------------------------------------------- */

/*
 * A group's coordinator that moves or is still loading the group's offsets
 * (NOT_COORDINATOR the first time a group is used) answers again soon.
 */
static bool coordinator_busy(rd_kafka_resp_err_t err)
{
	return err == RD_KAFKA_RESP_ERR_NOT_COORDINATOR ||
	    err == RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS ||
	    err == RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE ||
	    err == RD_KAFKA_RESP_ERR__WAIT_COORD;
}

/* rd_kafka_committed(), or rd_kafka_commit() when commit: again while the coordinator is busy. */
static rd_kafka_resp_err_t group_call(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *l,
    bool commit)
{
	int64_t deadline = now_ms() + REDRIVE_TIMEOUT_MS;
	rd_kafka_resp_err_t err;

	for (;;) {
		err = commit ? rd_kafka_commit(rk, l, 0) : rd_kafka_committed(rk, l,
		    REDRIVE_TIMEOUT_MS);
		if (!coordinator_busy(err) || now_ms() >= deadline)
			return err;
		usleep(COORD_RETRY_MS * 1000);
	}
}

static rd_kafka_t *new_consumer(struct redrive *r, char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = rd_kafka_conf_new();
	rd_kafka_t *rk;
	const char *settings[][2] = {
		{ "bootstrap.servers", r->conf->kafka.brokers },
		{ "group.id", r->group },
		{ "client.id", "ackd-redrive" },
		{ "enable.auto.commit", "false" }, /* committed after the spool's fsync */
		{ "enable.auto.offset.store", "false" },
		{ "enable.partition.eof", "false" },
		{ "auto.offset.reset", "earliest" },
		{ "log.queue", "false" },
		{ "enable.metrics.push", "false" },
	};

	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++)
		if (rd_kafka_conf_set(kc, settings[i][0], settings[i][1], err, errlen) !=
		    RD_KAFKA_CONF_OK)
			goto fail;
	/* kafka.consumer carries the TLS and SASL settings; ours above come first. */
	if (conf_apply_rdkafka(kc, &r->conf->kafka.consumer, err, errlen) < 0)
		goto fail;
	if (rd_kafka_conf_set(kc, "enable.auto.commit", "false", err, errlen) != RD_KAFKA_CONF_OK)
		goto fail;
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, errlen);
	if (!rk)
		goto fail;
	rd_kafka_poll_set_consumer(rk);
	return rk;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

/*
 * The dead-letter topic's partitions with where the redrive starts and
 * stops; *n 0 when the topic does not exist (nothing was dead-lettered).
 */
static int plan(struct redrive *r, rd_kafka_t *rk, struct dpart **out, size_t *n, char *err,
    size_t errlen)
{
	const char *topic = r->cs->dead_letter_topic;
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_topic_partition_list_t *l = NULL;
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	rd_kafka_resp_err_t kerr;
	struct dpart *parts = NULL;
	int cnt;

	*out = NULL;
	*n = 0;
	if (!rkt) {
		snprintf(err, errlen, "%s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	kerr = rd_kafka_metadata(rk, 0, rkt, &md, REDRIVE_TIMEOUT_MS);
	rd_kafka_topic_destroy(rkt);
	if (kerr) {
		snprintf(err, errlen, "cannot read the partitions of %s: %s", topic,
		    rd_kafka_err2str(kerr));
		return -1;
	}
	if (md->topic_cnt != 1 || md->topics[0].err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
		rd_kafka_metadata_destroy(md);
		return 0;
	}
	if (md->topics[0].err) {
		snprintf(err, errlen, "cannot read the partitions of %s: %s", topic,
		    rd_kafka_err2str(md->topics[0].err));
		goto fail;
	}
	cnt = md->topics[0].partition_cnt;
	parts = xcalloc((size_t)cnt + 1, sizeof(*parts));
	l = rd_kafka_topic_partition_list_new(cnt);
	for (int i = 0; i < cnt; i++) {
		parts[i].id = md->topics[0].partitions[i].id;
		rd_kafka_topic_partition_list_add(l, topic, parts[i].id);
	}
	kerr = group_call(rk, l, false);
	if (kerr) {
		snprintf(err, errlen, "cannot read where the last redrive stopped (group %s): %s",
		    r->group, rd_kafka_err2str(kerr));
		goto fail;
	}
	for (int i = 0; i < cnt; i++) {
		int64_t low, high;
		kerr = rd_kafka_query_watermark_offsets(rk, topic, parts[i].id, &low, &high,
		    REDRIVE_TIMEOUT_MS);
		if (kerr) {
			snprintf(err, errlen, "cannot read the offsets of %s [%d]: %s", topic,
			    (int)parts[i].id, rd_kafka_err2str(kerr));
			goto fail;
		}
		parts[i].committed = l->elems[i].offset >= 0 ? l->elems[i].offset : -1;
		/* Dead letters the topic's retention removed are gone: start at the log's. */
		parts[i].next = parts[i].committed > low ? parts[i].committed : low;
		parts[i].end = high;
	}
	rd_kafka_topic_partition_list_destroy(l);
	rd_kafka_metadata_destroy(md);
	*out = parts;
	*n = (size_t)cnt;
	return 0;
fail:
	if (l)
		rd_kafka_topic_partition_list_destroy(l);
	rd_kafka_metadata_destroy(md);
	free(parts);
	return -1;
}

static struct dpart *find(struct dpart *parts, size_t n, int32_t id)
{
	for (size_t i = 0; i < n; i++)
		if (parts[i].id == id)
			return &parts[i];
	return NULL;
}

static bool all_taken(const struct dpart *parts, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (parts[i].next < parts[i].end)
			return false;
	return true;
}

/*
 * Add the republished copy of dead letter m to b. 1 added, 0 skipped (no
 * source topic, or it cannot be a spool record), counted by the caller.
 */
static int republish(struct redrive *r, const rd_kafka_message_t *m, struct spool_batch *b)
{
	rd_kafka_headers_t *kh = NULL;
	struct spool_hdr *in = NULL, *out = NULL;
	size_t nin = 0, nout = 0, cnt = 0;
	char topic[256], count[24], id[PUBLISH_ID_LEN + 1];
	bool has_id;
	int added = 0;

	if (rd_kafka_message_headers(m, &kh) == RD_KAFKA_RESP_ERR_NO_ERROR)
		cnt = rd_kafka_header_cnt(kh);
	in = xcalloc(cnt + 1, sizeof(*in));
	out = xcalloc(cnt + 3, sizeof(*out));
	for (size_t i = 0; i < cnt; i++) {
		const char *name;
		const void *value;
		size_t size;
		if (rd_kafka_header_get_all(kh, i, &name, &value, &size))
			break;
		in[nin++] = (struct spool_hdr){ .name = name, .name_len = strlen(name),
			.value = value, .value_len = value ? size : 0 };
	}
	if (redrive_headers(in, nin, out, &nout, topic, sizeof(topic), count, sizeof(count),
	        &has_id) < 0) {
		log_warnx("redrive %s: %s [%d] offset %lld has no usable %s header; skipped",
		    r->cs->name, r->cs->dead_letter_topic, (int)m->partition, (long long)m->offset,
		    SPOOL_HDR_DLQ_SOURCE_TOPIC);
		goto done;
	}
	if (!has_id) {
		publish_id_new(id);
		out[nout++] = (struct spool_hdr){ .name = SPOOL_HDR_ID,
			.name_len = strlen(SPOOL_HDR_ID), .value = id, .value_len = strlen(id) };
	}
	struct spool_msg sm = {
		.topic = topic,
		.topic_len = strlen(topic),
		.partition = -1,
		.key = m->key,
		.key_len = m->key_len,
		.value = m->payload ? m->payload : "",
		.value_len = m->len,
		.hdrs = out,
		.nhdrs = nout,
		.timestamp_ms = wall_ms(),
	};
	if (spool_batch_add(b, &sm) < 0) {
		log_warnx("redrive %s: %s [%d] offset %lld cannot be a spool record; skipped",
		    r->cs->name, r->cs->dead_letter_topic, (int)m->partition, (long long)m->offset);
		goto done;
	}
	added = 1;
done:
	free(in);
	free(out);
	return added;
}

/* Commit every partition whose position moved: 0, or -1 with err. */
static int commit_positions(struct redrive *r, rd_kafka_t *rk, struct dpart *parts, size_t n,
    char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n);
	rd_kafka_resp_err_t kerr = RD_KAFKA_RESP_ERR_NO_ERROR;

	for (size_t i = 0; i < n; i++)
		if (parts[i].next > parts[i].committed)
			rd_kafka_topic_partition_list_add(l, r->cs->dead_letter_topic, parts[i].id)
			    ->offset = parts[i].next;
	if (l->cnt > 0)
		kerr = group_call(rk, l, true);
	rd_kafka_topic_partition_list_destroy(l);
	if (kerr) {
		snprintf(err, errlen, "the republished messages are durable but the redrive "
		    "position could not be committed (%s); the next redrive republishes them "
		    "again", rd_kafka_err2str(kerr));
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if (parts[i].next > parts[i].committed)
			parts[i].committed = parts[i].next;
	return 0;
}

struct tally {
	uint64_t redriven, skipped;
	bool stopped;
};

static int run(struct redrive *r, rd_kafka_t *rk, struct tally *t, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *assign;
	struct dpart *parts;
	size_t n;
	int64_t max = r->cmd->max;
	int rc = -1;

	if (plan(r, rk, &parts, &n, err, errlen) < 0)
		return -1;
	assign = rd_kafka_topic_partition_list_new((int)n + 1);
	for (size_t i = 0; i < n; i++)
		if (parts[i].next < parts[i].end)
			rd_kafka_topic_partition_list_add(assign, r->cs->dead_letter_topic,
			    parts[i].id)->offset = parts[i].next;
	if (assign->cnt > 0 && rd_kafka_assign(rk, assign) != RD_KAFKA_RESP_ERR_NO_ERROR) {
		snprintf(err, errlen, "cannot read %s", r->cs->dead_letter_topic);
		goto done;
	}
	while (!all_taken(parts, n) && (max == 0 || (int64_t)t->redriven < max)) {
		struct spool_batch *b = spool_batch_new(REDRIVE_BATCH);
		int64_t idle_until = now_ms() + REDRIVE_IDLE_MS;
		size_t taken = 0, added = 0;

		if (!b) {
			snprintf(err, errlen, "out of memory for a spool batch");
			goto done;
		}
		while (taken < REDRIVE_BATCH && !all_taken(parts, n) &&
		    (max == 0 || (int64_t)(t->redriven + added) < max)) {
			rd_kafka_message_t *m;
			struct dpart *p;

			if (atomic_load(&r->stop)) {
				t->stopped = true;
				break;
			}
			m = rd_kafka_consumer_poll(rk, taken > 0 ? 0 : REDRIVE_POLL_MS);
			if (!m) {
				if (taken > 0)
					break; /* write what we have */
				if (now_ms() >= idle_until) {
					snprintf(err, errlen, "no dead letter arrived from %s for %d s",
					    r->cs->dead_letter_topic, REDRIVE_IDLE_MS / 1000);
					spool_batch_free(b);
					goto done;
				}
				continue;
			}
			p = m->err ? NULL : find(parts, n, m->partition);
			if (m->err)
				log_warnx("redrive %s: %s", r->cs->name, rd_kafka_message_errstr(m));
			else if (p && m->offset >= p->next && m->offset < p->end) {
				if (republish(r, m, b))
					added++;
				else
					t->skipped++;
				p->next = m->offset + 1;
				taken++;
			}
			rd_kafka_message_destroy(m);
		}
		if (added > 0 && spool_durable(r, b, err, errlen) < 0)
			goto done; /* position not committed: redriven again next time */
		if (added == 0)
			spool_batch_free(b);
		t->redriven += added;
		if (commit_positions(r, rk, parts, n, err, errlen) < 0)
			goto done;
		if (t->stopped)
			break;
	}
	rc = 0;
done:
	rd_kafka_topic_partition_list_destroy(assign);
	free(parts);
	return rc;
}

static void *redrive_main(void *arg)
{
	struct redrive *r = arg;
	struct tally t = { 0, 0, false };
	char err[512] = "";
	rd_kafka_t *rk;
	int rc = -1;

	thread_name("ackd-redrive");
	rk = new_consumer(r, err, sizeof(err));
	if (rk) {
		rc = run(r, rk, &t, err, sizeof(err));
		rd_kafka_consumer_close(rk);
		rd_kafka_destroy(rk);
	}
	if (rc == 0) {
		log_info("redrive %s: %llu dead letters of %s republished%s, %llu skipped",
		    r->cs->name, (unsigned long long)t.redriven, r->cs->dead_letter_topic,
		    t.stopped ? " (stopped early)" : "", (unsigned long long)t.skipped);
		control_answer(r->cmd, 200, json_pack("{s:s,s:s,s:s,s:I,s:I,s:b}", "subscription",
		    r->cs->name, "dead_letter_topic", r->cs->dead_letter_topic, "group", r->group,
		    "redriven", (json_int_t)t.redriven, "skipped", (json_int_t)t.skipped,
		    "stopped", t.stopped));
	} else {
		log_warnx("redrive %s: %s (%llu republished before that)", r->cs->name, err,
		    (unsigned long long)t.redriven);
		control_fail(r->cmd, 503, "unavailable", "%s; %llu dead letters were republished "
		    "before that and their position committed", err,
		    (unsigned long long)t.redriven);
	}
	atomic_store(&r->ended, true);
	return NULL;
}

int redrive_start(const struct conf *conf, const struct conf_sub *cs, struct spool *sp,
    struct control_cmd *cmd, struct redrive **out, char *err, size_t errlen)
{
	struct redrive *r = xcalloc(1, sizeof(*r));

	r->conf = conf;
	r->cs = cs;
	r->sp = sp;
	r->cmd = cmd;
	r->group = xmalloc(strlen(cs->group) + sizeof(".redrive"));
	sprintf(r->group, "%s.redrive", cs->group);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	if (pthread_create(&r->thread, NULL, redrive_main, r) != 0) {
		snprintf(err, errlen, "cannot start the redrive thread");
		pthread_cond_destroy(&r->cond);
		pthread_mutex_destroy(&r->mu);
		free(r->group);
		free(r);
		return -1;
	}
	*out = r;
	return 0;
}

bool redrive_ended(struct redrive *r) { return atomic_load(&r->ended); }

void redrive_stop(struct redrive *r)
{
	if (!r)
		return;
	atomic_store(&r->stop, true);
	pthread_join(r->thread, NULL);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r->group);
	free(r);
}
