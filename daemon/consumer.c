/*
 * consumer: one webhook subscription, on a thread of its own.
 *
 * Design. The thread owns a librdkafka consumer (the cooperative-sticky
 * assignor, so a rebalance moves only the partitions that change owner) and
 * a libcurl multi handle, and loops:
 *
 *   1. take fetched messages into per-partition queues, in offset order,
 *      each copied out of librdkafka's fetch buffer (struct msg). Each
 *      partition's messages come from a librdkafka queue of its own (not
 *      forwarded to the consumer queue). Once a partition's queue holds
 *      PART_WINDOW messages or PART_WINDOW_BYTES, nothing more is taken
 *      from it until it is down to a quarter; meanwhile librdkafka fetches
 *      ahead up to queued.max.messages.kbytes and waits, so memory stays
 *      bounded whatever the endpoint does. The partition is not paused for
 *      that: librdkafka does not wake its fetcher when a partition is
 *      resumed, and with every partition paused the resumed one waited up
 *      to a second (docs/performance.md, "a resumed partition waited for
 *      librdkafka's fetcher");
 *   2. dispatch what the ordering allows: "partition", the head of each
 *      partition, one at a time; "key", the first waiting message of each key
 *      of a partition; "none", any waiting message; never more than the
 *      concurrency window allows (max_in_flight, or the adaptive window) nor
 *      faster than rate_limit (pace.c), never to an endpoint inside a
 *      Retry-After. With batch.max_messages > 1 the same rules pick batches
 *      instead (dispatch_batches()): consecutive messages of one partition,
 *      or any with "none"; a batch is one request in the window, each of
 *      its messages a token of rate_limit. A batch answered with a retry
 *      waits whole (struct batch) and goes again as it was; after a 207 or
 *      a poison answer its messages go on alone;
 *   3. act on each answer by the table in docs/webhooks.md: delivered, retried after a
 *      backoff, written to the dead-letter topic, or the subscription paused
 *      (410);
 *   4. every COMMIT_INTERVAL_MS, store per partition the offset below which
 *      every message completed (offsets.c), for librdkafka's auto-commit;
 *   5. sleep in curl_multi_poll() on the connections and a wake-up pipe that
 *      the consumer queue and dead-letter acks write to.
 *
 * A message completes when the endpoint answered 2xx, or when its
 * dead-letter copy went through the spool and the producer and Kafka
 * acknowledged it, or when on_exhausted = "drop" lets it go. Nothing else
 * moves an offset. When partitions are revoked, and at stop, the thread waits
 * (up to the subscription's timeout) for their requests in flight, commits
 * synchronously what completed, and only then lets them go; the partitions it
 * keeps go on being delivered meanwhile. A request still out on a partition
 * that left is orphaned: its answer is dropped, and the partition's next
 * owner delivers the message again.
 *
 * Control API commands (control.c) are queued under c->lock by request
 * threads and carried out between loop turns: a pause stops dispatch and
 * fetching and is answered once the requests out completed and were
 * committed; a seek drops what its partitions hold (a request out becomes an
 * orphan, a dead letter out finds a new generation: neither can commit over
 * the new position), seeks librdkafka and commits; a redrive runs on a
 * thread of its own (redrive.c), which consumer_stop() ends and joins.
 *
 * Threads: everything on the subscription's thread, except the dead-letter
 * callbacks (spool writer, kafka loop), which only queue the finished job
 * under c->lock and wake the thread. A job holds a reference on the
 * consumer, so a subscription stopped while a dead letter is pending is
 * freed when the job comes back.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "backoff.h"
#include "consumer.h"
#include "control.h"
#include "health.h"
#include "log.h"
#include "metrics.h"
#include "offsets.h"
#include "pace.h"
#include "producer.h"
#include "redrive.h"
#include "spool.h"
#include "util.h"
#include "webhook.h"
#include "webhook_batch.h"
#include "webhook_sign.h"

#define PART_WINDOW 2500       /* fetched, unfinished messages per partition */
#define PART_WINDOW_BYTES (2u << 20) /* of struct msg, copies included */
#define COMMIT_INTERVAL_MS 1000
#define COMMIT_INTERVAL "1000" /* COMMIT_INTERVAL_MS, for librdkafka */
#define IDLE_WAKE_MS 100
#define POLL_BATCH 10000       /* messages taken per loop turn at most */
#define DLQ_ACK_TIMEOUT_MS 60000
#define SEND_RETRY_MS 1000     /* libcurl could not start a request */
#define MAX_QUIET_MS 60000     /* a revoke may wait a whole timeout_ms for requests */
#define COMMITTED_TIMEOUT_MS 5000
#define WATERMARK_EVERY_MS 5000 /* paused or full partitions: ask Kafka for their end */
#define WATERMARK_TIMEOUT_MS 200
#define WATERMARK_BUDGET_MS 500 /* per snapshot, so a slow Kafka never holds deliveries */

enum msg_state {
	M_WAITING,   /* to be sent */
	M_IN_FLIGHT, /* a request is out */
	M_BACKOFF,   /* to be sent again at not_before */
	M_DLQ,       /* being written to the dead-letter topic */
	M_DONE,
};

struct part;

/*
 * A fetched message. Its record is copied out of librdkafka's fetch buffer
 * and the librdkafka message destroyed when it is taken: a fetch response
 * is freed only with the last message that points into it, so one message
 * held for a retry would otherwise keep a whole response (up to 1 MiB) and
 * librdkafka's per-message state alive.
 */
struct msg {
	struct part *part;    /* NULL: orphaned, its partition left with the request out */
	enum msg_state state;
	int attempts;
	uint64_t epoch;       /* the partition's epoch when it was fetched */
	bool counted;         /* in the partition's offsets: its completion moves the commit */
	int64_t not_before;
	struct timespec sent; /* when the request went out, for its latency */
	int64_t sent_ms;      /* the same, for pace */
	bool window_full;     /* the request filled the concurrency window */
	char id[WEBHOOK_ID_MAX];
	struct batch *batch;  /* the batch it is out in, or waits in to be retried whole */
	bool solo;            /* its batch got a poison answer: sent in a batch of its own */
	bool dlq_kept;        /* a dead letter of it was spooled, not delivered: kept there or filed */
	int64_t taken_ms;     /* when it was fetched: batch.max_wait_ms counts from here */
	size_t bytes;         /* key, value and headers: what batch.max_bytes counts */
	size_t size;          /* the whole allocation: what PART_WINDOW_BYTES counts */
	int32_t partition;
	int64_t offset;
	int64_t timestamp_ms; /* -1: the record has none */
	const void *key;      /* NULL: no key */
	size_t key_len;
	const void *value;    /* NULL: a tombstone */
	size_t value_len;
	size_t nhdrs;
	struct webhook_hdr hdrs[]; /* then the bytes of key, value and headers */
};

/*
 * A batch request (batch.max_messages > 1): the messages it carries, in
 * order. It lives while the request is out and, after an answer that
 * retries it whole, until it is sent again; every member's batch points
 * here meanwhile, and all members share one state (M_IN_FLIGHT or
 * M_BACKOFF).
 */
struct batch {
	struct batch *prev, *next; /* c->batches */
	struct msg **m;
	size_t n;
	char id[WEBHOOK_ID_MAX];
	bool id_stale;        /* members left (batch_forget(), on_batch_answer()): the
	                       * id is computed again when it is next sent */
	struct timespec sent;
	int64_t sent_ms;
	bool window_full;
};

/* Messages that dispatch gathers into the next batch. */
struct gather {
	struct msg **m;
	size_t n, cap;
	size_t bytes;
	int64_t oldest; /* the earliest taken_ms among them */
};

struct part {
	char *topic;
	int32_t partition;
	uint64_t gen;         /* tells a dead-letter job its partition is gone */
	uint64_t epoch;       /* bumped when the log went back or was cut, so records at
	                       * a repeated offset are told apart */
	struct msg **q;       /* ring of fetched messages, offset order */
	size_t head, len, cap;
	size_t bytes;         /* of the messages queued (struct msg size) */
	struct offsets *off;  /* NULL until the first message */
	int64_t committed;    /* the group's committed offset (at assignment, then ours), -1 none */
	int64_t low, high;    /* watermarks last known, -1 unknown */
	int64_t wm_next_ms;   /* when to ask Kafka for them again */
	size_t busy;          /* requests and dead-letter writes out */
	rd_kafka_queue_t *fetchq; /* librdkafka's queue of its fetched messages */
	bool paused;          /* paused in librdkafka: the subscription is held */
	bool full;            /* its window is full: nothing more is taken */
	bool stopped;         /* counted in paused_parts: paused or full */
	bool leaving;         /* being revoked: nothing more is sent */
	bool went_below;      /* its log went back: commit explicitly (see commit()) */
	bool went_back;       /* warned that the log went back below what completed */
};

struct dlq_job {
	struct producer_waiter w;
	struct producer_result res;
	struct consumer *c;
	char topic[256];
	int32_t partition;
	int64_t offset;
	uint64_t gen;
	uint64_t epoch;
	char why[96];         /* the spool's refusal, when it refused */
	struct dlq_job *next;
};

struct consumer {
	struct health_loop health;
	struct metrics_sub *metrics;
	const struct conf *conf;
	const struct conf_sub *cs;
	struct spool *sp;
	struct producer *prod;
	rd_kafka_t *rk;
	rd_kafka_queue_t *queue;
	struct webhook *wh;
	pthread_t thread;
	struct wakeup wake;
	atomic_bool stopping;

	/* Subscription thread only. */
	struct part **parts;
	size_t nparts;
	struct msg **orphans; /* requests out for partitions that left */
	size_t norphans;
	struct part *last; /* the partition of the last message, a cache */
	uint64_t next_gen;
	size_t in_flight;   /* webhook requests */
	int64_t hold_until; /* Retry-After: nothing to the endpoint before this */
	int64_t next_wake;  /* earliest backoff that ends, found by dispatch */
	bool refill;        /* a full window got room: take from librdkafka before sleeping */
	size_t take_from;   /* the partition poll_kafka() starts with, in turn */
	struct pace pace;   /* rate_limit and the concurrency window */
	int64_t next_commit;
	atomic_bool gone;   /* the endpoint answered 410 (read by scrapes and /v1/subscriptions) */
	atomic_bool op_paused; /* an operator paused it (POST .../pause; a pause file) */
	struct control_cmd *pausing; /* pauses answered once requests out finish */
	struct redrive *redrive;     /* the last one started, NULL: none */
	bool revoking;
	bool commit_failed;
	uint32_t rnd;
	size_t rr;          /* round-robin start among partitions */
	struct keyset {
		const struct msg **v;
		size_t cap;
	} keys;             /* ordering = key: keys seen in one pass */
	struct batch *batches;    /* out, or waiting to be retried whole */
	struct gather gather;     /* dispatch's next batch */
	struct webhook_msg *wms;  /* a batch's messages as webhook.c takes them */
	size_t wms_cap;
	struct webhook_hdr *hdrs; /* msg_new()'s scratch: a fetched message's headers */
	size_t hdrs_cap;

	/* Shared with the dead-letter callbacks, and the lag snapshot with scrapes. */
	pthread_mutex_t lock;
	struct dlq_job *finished;
	int refs; /* the thread, plus each job out */
	struct consumer_lag *lag; /* taken at each commit */
	size_t nlag;
	struct control_cmd *cmds, **cmds_tail; /* Control API commands to carry out */

	atomic_uint_fast64_t delivered, retries, dead_lettered, dropped, retrying;
	atomic_uint_fast64_t dlq_errors, send_errors;
	atomic_uint_fast64_t stat_in_flight, assigned, paused_parts, stat_window;
};

static uint32_t next_rand(struct consumer *c)
{
	/* xorshift32: jitter needs spread, not secrecy. */
	c->rnd ^= c->rnd << 13;
	c->rnd ^= c->rnd >> 17;
	c->rnd ^= c->rnd << 5;
	return c->rnd;
}

static void unref(struct consumer *c)
{
	bool last;

	pthread_mutex_lock(&c->lock);
	last = --c->refs == 0;
	pthread_mutex_unlock(&c->lock);
	if (!last)
		return;
	while (c->finished) {
		struct dlq_job *next = c->finished->next;
		free(c->finished);
		c->finished = next;
	}
	free(c->parts); /* emptied by the revoke of rd_kafka_destroy() */
	wakeup_close(&c->wake);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

/* --- partitions and their queues ------------------------------------------ */

static struct msg *q_at(const struct part *p, size_t i) { return p->q[(p->head + i) % p->cap]; }

static void q_push(struct part *p, struct msg *m)
{
	if (p->len == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		struct msg **q = xcalloc(cap, sizeof(*q));
		for (size_t i = 0; i < p->len; i++)
			q[i] = q_at(p, i);
		free(p->q);
		p->q = q;
		p->cap = cap;
		p->head = 0;
	}
	p->q[(p->head + p->len) % p->cap] = m;
	p->len++;
}

/* Every state change goes through here, so the retrying count stays true. */
static void set_state(struct consumer *c, struct msg *m, enum msg_state st)
{
	if (m->state == M_BACKOFF && st != M_BACKOFF)
		atomic_fetch_sub(&c->retrying, 1);
	else if (m->state != M_BACKOFF && st == M_BACKOFF)
		atomic_fetch_add(&c->retrying, 1);
	m->state = st;
}

static void msg_free(struct msg *m) { free(m); }

static struct part *find_part(struct consumer *c, const char *topic, int32_t partition)
{
	if (c->last && c->last->partition == partition && strcmp(c->last->topic, topic) == 0)
		return c->last;
	for (size_t i = 0; i < c->nparts; i++) {
		struct part *p = c->parts[i];
		if (p->partition == partition && strcmp(p->topic, topic) == 0)
			return c->last = p;
	}
	return NULL;
}

/* paused_parts counts the partitions whose messages are not taken. */
static void count_stopped(struct consumer *c, struct part *p)
{
	bool stopped = p->paused || p->full;

	if (stopped == p->stopped)
		return;
	p->stopped = stopped;
	if (stopped)
		atomic_fetch_add(&c->paused_parts, 1);
	else
		atomic_fetch_sub(&c->paused_parts, 1);
}

/* Whether p's window is full: nothing more is taken until it is down to a quarter. */
static bool part_full(const struct part *p)
{
	return p->len >= PART_WINDOW || p->bytes >= PART_WINDOW_BYTES;
}

static void set_paused(struct consumer *c, struct part *p, bool pause)
{
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t err;

	if (p->paused == pause)
		return;
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
	err = pause ? rd_kafka_pause_partitions(c->rk, l) : rd_kafka_resume_partitions(c->rk, l);
	if (!err)
		err = l->elems[0].err;
	rd_kafka_topic_partition_list_destroy(l);
	if (err) {
		/* Tried again at the next trim or fetch; nothing is lost meanwhile. */
		log_warnx("subscription %s: cannot %s %s [%d]: %s", c->cs->name,
		    pause ? "pause" : "resume", p->topic, (int)p->partition, rd_kafka_err2str(err));
		return;
	}
	p->paused = pause;
	count_stopped(c, p);
}

/* Whether the subscription is paused: by an operator, or by a 410. */
static bool held(struct consumer *c) { return c->gone || atomic_load(&c->op_paused); }

/* Drop finished messages from the head: room for more; resume it unless held. */
static void trim(struct consumer *c, struct part *p)
{
	while (p->len > 0 && q_at(p, 0)->state == M_DONE) {
		p->bytes -= q_at(p, 0)->size;
		msg_free(q_at(p, 0));
		p->head = (p->head + 1) % p->cap;
		p->len--;
	}
	if (p->full && p->len < PART_WINDOW / 4 && p->bytes < PART_WINDOW_BYTES / 4) {
		/* librdkafka signals only a queue that was empty: look again. */
		p->full = false;
		c->refill = true;
		count_stopped(c, p);
	}
	if (p->paused && !held(c))
		set_paused(c, p, false);
}

/* --- batches ---------------------------------------------------------------- */

/* m as webhook.c takes it; borrowed from m. */
static void msg_wm(const struct msg *m, struct webhook_msg *wm)
{
	*wm = (struct webhook_msg){
		.topic = m->part->topic,
		.partition = m->partition,
		.offset = m->offset,
		.key = m->key,
		.key_len = m->key_len,
		.value = m->value,
		.value_len = m->value_len,
		.hdrs = m->hdrs,
		.nhdrs = m->nhdrs,
		.timestamp_ms = m->timestamp_ms,
		.id = m->id,
		.attempt = m->attempts + 1,
	};
}

/* b's members in c->wms, for webhook.c. */
static struct webhook_msg *batch_wms(struct consumer *c, const struct batch *b)
{
	if (b->n > c->wms_cap) {
		c->wms_cap = b->n;
		c->wms = xrealloc(c->wms, c->wms_cap * sizeof(*c->wms));
	}
	for (size_t i = 0; i < b->n; i++)
		msg_wm(b->m[i], &c->wms[i]);
	return c->wms;
}

static struct batch *batch_new(struct consumer *c, struct msg *const *m, size_t n)
{
	struct batch *b = xcalloc(1, sizeof(*b));

	b->m = xmalloc(n * sizeof(*b->m));
	memcpy(b->m, m, n * sizeof(*b->m));
	b->n = n;
	for (size_t i = 0; i < n; i++)
		m[i]->batch = b;
	webhook_batch_id(batch_wms(c, b), n, b->id);
	b->next = c->batches;
	if (c->batches)
		c->batches->prev = b;
	c->batches = b;
	return b;
}

/* Off c->batches; its members are on their own again (b->m[] stays readable). */
static void batch_detach(struct consumer *c, struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->m[i]->batch == b)
			b->m[i]->batch = NULL;
	if (b->prev)
		b->prev->next = b->next;
	else
		c->batches = b->next;
	if (b->next)
		b->next->prev = b->prev;
}

static void batch_free(struct consumer *c, struct batch *b)
{
	batch_detach(c, b);
	free(b->m);
	free(b);
}

/*
 * m, waiting in a batch to be retried, is about to be freed (its partition
 * left): the batch goes on without it, under the id of what it now holds
 * (computed when it is sent: a revoke may take its members one by one).
 */
static void batch_forget(struct consumer *c, struct msg *m)
{
	struct batch *b = m->batch;
	size_t kept = 0;

	for (size_t i = 0; i < b->n; i++)
		if (b->m[i] != m)
			b->m[kept++] = b->m[i];
	b->n = kept;
	m->batch = NULL;
	if (kept == 0)
		batch_free(c, b);
	else
		b->id_stale = true;
}

/*
 * Empty p's queue: its requests still out become orphans (on_answer drops
 * their answers, so their completions cannot commit), the rest are freed,
 * leaving any batch they wait in.
 */
static void part_drop_queue(struct consumer *c, struct part *p)
{
	for (size_t i = 0; i < p->len; i++) {
		struct msg *m = q_at(p, i);
		if (m->state == M_IN_FLIGHT) {
			m->part = NULL;
			c->orphans = xrealloc(c->orphans, (c->norphans + 1) * sizeof(*c->orphans));
			c->orphans[c->norphans++] = m;
			continue;
		}
		if (m->batch)
			batch_forget(c, m);
		set_state(c, m, M_DONE);
		msg_free(m);
	}
}

/* Free a partition (it left). */
static void part_free(struct consumer *c, struct part *p)
{
	/*
	 * Back to the consumer queue, as librdkafka has it: what it fetched
	 * ahead, and fetches until the unassignment stops it, is dropped there
	 * (outdated, or of a partition ackd does not hold) instead of staying
	 * in a queue nobody reads.
	 */
	rd_kafka_queue_io_event_enable(p->fetchq, -1, NULL, 0);
	rd_kafka_queue_forward(p->fetchq, c->queue);
	rd_kafka_queue_destroy(p->fetchq);
	part_drop_queue(c, p);
	offsets_free(p->off);
	free(p->q);
	free(p->topic);
	free(p);
}

/* --- committing -------------------------------------------------------------- */

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	struct consumer *c = opaque;

	(void)rk;
	(void)offsets;
	if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
		log_warnx("subscription %s: offset commit failed: %s; will commit again",
		    c->cs->name, rd_kafka_err2str(err));
		c->commit_failed = true;
	}
}

/*
 * Lag per partition: Kafka's high watermark (as the last fetch saw it) less
 * what we committed. Published under c->lock for scrapes on other threads.
 */
static void watermarks(struct consumer *c, struct part *p, int64_t budget_end)
{
	int64_t low, high, now = now_ms();

	/*
	 * What the fetcher last saw, unless it may no longer fetch the
	 * partition: paused, or full (librdkafka's queue of it fills up too).
	 */
	if (!p->paused && !p->full &&
	    rd_kafka_get_watermark_offsets(c->rk, p->topic, p->partition, &low, &high) ==
	    RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0) {
		p->low = low;
		p->high = high;
		return;
	}
	if (now < p->wm_next_ms || now >= budget_end)
		return;
	p->wm_next_ms = now + WATERMARK_EVERY_MS;
	if (rd_kafka_query_watermark_offsets(c->rk, p->topic, p->partition, &low, &high,
	        WATERMARK_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		p->low = low;
		p->high = high;
	}
}

static void snapshot_lag(struct consumer *c)
{
	struct consumer_lag *rows = xcalloc(c->nparts + 1, sizeof(*rows));
	int64_t budget_end = now_ms() + WATERMARK_BUDGET_MS;

	for (size_t i = 0; i < c->nparts; i++) {
		struct part *p = c->parts[i];
		int64_t from;

		watermarks(c, p, budget_end);
		/* A group with no committed offset starts where start says. */
		from = p->committed >= 0 ? p->committed :
		    c->cs->start == CONF_START_EARLIEST ? p->low : p->high;
		snprintf(rows[i].topic, sizeof(rows[i].topic), "%s", p->topic);
		rows[i].partition = p->partition;
		rows[i].lag = p->high >= 0 && from >= 0 ? (p->high > from ? p->high - from : 0) : -1;
		rows[i].committed = p->committed;
	}
	pthread_mutex_lock(&c->lock);
	free(c->lag);
	c->lag = rows;
	c->nlag = c->nparts;
	pthread_mutex_unlock(&c->lock);
}

size_t consumer_lag(struct consumer *c, struct consumer_lag *out, size_t max)
{
	size_t n;

	pthread_mutex_lock(&c->lock);
	n = c->nlag < max ? c->nlag : max;
	if (n > 0) /* no snapshot yet: c->lag is NULL */
		memcpy(out, c->lag, n * sizeof(*out));
	pthread_mutex_unlock(&c->lock);
	return n;
}

struct metrics_sub *consumer_metrics(struct consumer *c) { return c->metrics; }

/*
 * Store, per partition, the offset below which everything completed;
 * librdkafka's auto-commit timer sends what is stored (every
 * COMMIT_INTERVAL_MS, and never while the group rebalances: a commit that
 * reaches the coordinator after the group's generation moved on fails with
 * ILLEGAL_GENERATION, and librdkafka then drops the whole assignment as
 * lost). sync commits at once and waits: on revoke and at stop.
 */
static void commit(struct consumer *c, bool sync)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)c->nparts);
	rd_kafka_topic_partition_list_t *below = rd_kafka_topic_partition_list_new(1);
	/* An async commit may have failed unseen: a synchronous one sends all. */
	bool force = c->commit_failed || sync;
	rd_kafka_resp_err_t err;

	c->commit_failed = false;
	for (size_t i = 0; i < c->nparts; i++) {
		struct part *p = c->parts[i];
		int64_t o = p->off ? offsets_committable(p->off) : -1;
		if (o < 0 || (o <= p->committed && !force))
			continue;
		rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset = o;
		/*
		 * librdkafka's timer commits a stored offset only above the one it
		 * last committed; after the log went back (topic recreated) the
		 * new, lower offsets must be committed explicitly.
		 */
		if (p->went_below && !sync)
			rd_kafka_topic_partition_list_add(below, p->topic, p->partition)->offset = o;
		p->committed = o;
	}
	if (l->cnt > 0) {
		err = rd_kafka_offsets_store(c->rk, l);
		if (!err && sync)
			err = rd_kafka_commit(c->rk, l, 0);
		else if (!err && below->cnt > 0)
			err = rd_kafka_commit(c->rk, below, 1);
		if (err) {
			log_warnx("subscription %s: offset %s failed: %s; will send them again",
			    c->cs->name, sync ? "commit" : "store", rd_kafka_err2str(err));
			c->commit_failed = true;
		} else {
			/* Sent explicitly: later commits may be the timer's again. */
			for (size_t i = 0; i < c->nparts; i++) {
				struct part *p = c->parts[i];
				if (p->went_below && (sync || rd_kafka_topic_partition_list_find(
				    below, p->topic, p->partition)))
					p->went_below = false;
			}
		}
	}
	rd_kafka_topic_partition_list_destroy(below);
	rd_kafka_topic_partition_list_destroy(l);
	snapshot_lag(c);
}

/* --- completion, retries, dead letters --------------------------------------- */

static void complete(struct consumer *c, struct msg *m)
{
	struct part *p = m->part;

	set_state(c, m, M_DONE);
	/* A message the log lost since (went back, was cut) no longer counts. */
	if (m->counted && offsets_done(p->off, m->offset) < 0)
		log_warnx("subscription %s: %s [%d] offset %lld completed but was not pending; "
		    "not counted", c->cs->name, p->topic, (int)p->partition,
		    (long long)m->offset);
	trim(c, p);
}

static void retry_later(struct consumer *c, struct msg *m, int64_t delay_ms)
{
	set_state(c, m, M_BACKOFF);
	m->not_before = now_ms() + delay_ms;
	atomic_fetch_add(&c->retries, 1);
}

static void dlq_finished(struct consumer *c, struct dlq_job *job)
{
	pthread_mutex_lock(&c->lock);
	job->next = c->finished;
	c->finished = job;
	pthread_mutex_unlock(&c->lock);
	wakeup_signal(&c->wake);
	unref(c);
}

/* Kafka loop: the dead letter has a verdict, or its wait ended. */
static void dlq_acked(struct producer_waiter *w)
{
	struct dlq_job *job = w->arg;

	dlq_finished(job->c, job);
}

/* Spool writer: the dead letter is durable (or not). */
static void dlq_spooled(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct dlq_job *job = arg;

	if (err != SPOOL_OK) {
		snprintf(job->why, sizeof(job->why), "%s", spool_err_text(err));
		dlq_finished(job->c, job);
		return;
	}
	job->w.first_seq = first_seq;
	job->w.n = 1;
	job->w.deadline_ms = now_ms() + DLQ_ACK_TIMEOUT_MS;
	job->w.results = &job->res;
	job->w.done = dlq_acked;
	job->w.arg = job;
	producer_wait(job->c->prod, &job->w);
}

/*
 * Queue m's dead letter: 0, or -1 with err filled when it cannot be written
 * (it cannot be encoded as one record, or the spool refused it at once);
 * the message then stays unfinished and its offset uncommitted.
 */
static MUST_USE int dead_letter(struct consumer *c, struct msg *m, const char *reason,
    long status, char *err, size_t errlen)
{
	const struct conf_sub *cs = c->cs;
	struct spool_hdr *hdrs = xcalloc(m->nhdrs + 6, sizeof(*hdrs));
	char st[16], att[16], part[16], off[24];
	const char *names[6] = { SPOOL_HDR_DLQ_REASON, SPOOL_HDR_DLQ_STATUS,
		SPOOL_HDR_DLQ_ATTEMPTS, SPOOL_HDR_DLQ_SOURCE_TOPIC, SPOOL_HDR_DLQ_SOURCE_PARTITION,
		SPOOL_HDR_DLQ_SOURCE_OFFSET };
	const char *values[6];
	struct dlq_job *job = NULL;
	struct spool_batch *b = spool_batch_new(1);
	enum spool_err serr;
	size_t n = 0;

	if (!b) {
		snprintf(err, errlen, "out of memory for its batch");
		goto fail;
	}
	snprintf(st, sizeof(st), "%ld", status);
	snprintf(att, sizeof(att), "%d", m->attempts);
	snprintf(part, sizeof(part), "%d", (int)m->partition);
	snprintf(off, sizeof(off), "%lld", (long long)m->offset);
	values[0] = reason;
	values[1] = st;
	values[2] = att;
	values[3] = m->part->topic;
	values[4] = part;
	values[5] = off;
	for (size_t i = 0; i < m->nhdrs; i++, n++) {
		hdrs[n].name = m->hdrs[i].name;
		hdrs[n].name_len = strlen(m->hdrs[i].name);
		hdrs[n].value = m->hdrs[i].value ? m->hdrs[i].value : "";
		hdrs[n].value_len = m->hdrs[i].value ? m->hdrs[i].value_len : 0;
	}
	for (size_t i = 0; i < 6; i++, n++) {
		hdrs[n].name = names[i];
		hdrs[n].name_len = strlen(names[i]);
		hdrs[n].value = values[i];
		hdrs[n].value_len = strlen(values[i]);
	}
	struct spool_msg sm = {
		.topic = cs->dead_letter_topic,
		.topic_len = strlen(cs->dead_letter_topic),
		.partition = -1,
		.key = m->key,
		.key_len = m->key_len,
		.value = m->value ? m->value : "",
		.value_len = m->value_len,
		.hdrs = hdrs,
		.nhdrs = n,
		.timestamp_ms = wall_ms(),
	};
	/*
	 * A record the spool cannot hold (a header name over 65,535 bytes, a
	 * value near 64 MiB): never submit the batch without it, or its empty
	 * batch's sequence would belong to the next record written and that
	 * record's ack would complete this message.
	 */
	if (spool_batch_add(b, &sm) < 0 || spool_batch_count(b) != 1) {
		snprintf(err, errlen, "it cannot be encoded as one spool record (a header name "
		    "over 65535 bytes or a record over the spool's limit)");
		goto fail;
	}
	if (m->dlq_kept)
		spool_batch_set_unfiled(b); /* refused for good, it is not filed again */
	free(hdrs);
	hdrs = NULL;

	job = xcalloc(1, sizeof(*job));
	job->c = c;
	snprintf(job->topic, sizeof(job->topic), "%s", m->part->topic);
	job->partition = m->partition;
	job->offset = m->offset;
	job->gen = m->part->gen;
	job->epoch = m->epoch;
	pthread_mutex_lock(&c->lock);
	c->refs++;
	pthread_mutex_unlock(&c->lock);
	set_state(c, m, M_DLQ);
	m->part->busy++;
	log_warnx("subscription %s: %s [%d] offset %lld: %s (status %ld, %d attempts); "
	    "writing it to %s", cs->name, m->part->topic, (int)m->partition,
	    (long long)m->offset, reason, status, m->attempts, cs->dead_letter_topic);
	serr = spool_submit(c->sp, b, dlq_spooled, job);
	if (serr != SPOOL_OK) {
		/* Refused at once (b freed): comes back as not written. */
		snprintf(job->why, sizeof(job->why), "%s", spool_err_text(serr));
		dlq_finished(c, job);
	}
	return 0;
fail:
	free(hdrs);
	spool_batch_free(b);
	return -1;
}

/* A message that the endpoint will not take, or that used up its attempts. */
static void give_up(struct consumer *c, struct msg *m, const char *reason, long status)
{
	const struct conf_sub *cs = c->cs;

	if (cs->dead_letter_topic[0]) {
		char err[160];

		if (dead_letter(c, m, reason, status, err, sizeof(err)) == 0)
			return;
		/* Never commit it without its dead letter: it blocks and is retried. */
		atomic_fetch_add(&c->dlq_errors, 1);
		log_warnx("subscription %s: %s [%d] offset %lld: %s (status %ld), but it cannot "
		    "be written to %s: %s; not committed, tried again in %lld ms", cs->name,
		    m->part->topic, (int)m->partition, (long long)m->offset, reason,
		    status, cs->dead_letter_topic, err, (long long)cs->retry.max_ms);
		retry_later(c, m, cs->retry.max_ms);
		return;
	}
	if (cs->on_exhausted == CONF_EXHAUSTED_DROP) {
		log_warnx("subscription %s: %s [%d] offset %lld: %s (status %ld); dropped as "
		    "on_exhausted = drop says", cs->name, m->part->topic, (int)m->partition,
		    (long long)m->offset, reason, status);
		atomic_fetch_add(&c->dropped, 1);
		complete(c, m);
		return;
	}
	log_warnx("subscription %s: %s [%d] offset %lld: %s (status %ld) and no "
	    "dead_letter_topic; it blocks the partition and is retried every %lld ms",
	    cs->name, m->part->topic, (int)m->partition, (long long)m->offset, reason,
	    status, (long long)cs->retry.max_ms);
	retry_later(c, m, cs->retry.max_ms);
}

/* Dead-letter jobs that came back from the spool and the kafka loop. */
static void take_finished(struct consumer *c)
{
	struct dlq_job *job, *next;

	pthread_mutex_lock(&c->lock);
	job = c->finished;
	c->finished = NULL;
	pthread_mutex_unlock(&c->lock);
	for (; job; job = next) {
		struct part *p = find_part(c, job->topic, job->partition);
		struct msg *m = NULL;

		next = job->next;
		for (size_t i = 0; p && p->gen == job->gen && i < p->len; i++) {
			struct msg *q = q_at(p, i);

			if (q->offset == job->offset && q->epoch == job->epoch) {
				m = q;
				break;
			}
		}
		if (m && m->state == M_DLQ) {
			p->busy--;
			if (job->res.outcome == PRODUCER_DELIVERED) {
				atomic_fetch_add(&c->dead_lettered, 1);
				complete(c, m);
			} else {
				/*
				 * Spooled, then refused for good (filed) or not answered in
				 * time (still in the spool, to be delivered or filed): the
				 * next dead letters of m need not be filed as well.
				 */
				if (!job->why[0])
					m->dlq_kept = true;
				atomic_fetch_add(&c->dlq_errors, 1);
				log_warnx("subscription %s: dead letter of %s [%d] offset %lld not "
				    "%s (%s); not committed, trying the endpoint again in %lld ms",
				    c->cs->name, job->topic, (int)job->partition, (long long)job->offset,
				    job->why[0] ? "written to the spool" : "acknowledged by kafka",
				    job->why[0] ? job->why :
				    job->res.error ? job->res.error : "no answer in time",
				    (long long)c->cs->retry.max_ms);
				retry_later(c, m, c->cs->retry.max_ms);
			}
		}
		free(job);
	}
}

static void pause_all(struct consumer *c)
{
	for (size_t i = 0; i < c->nparts; i++)
		set_paused(c, c->parts[i], true);
}

/* A message whose partition left, off the orphans list and freed. */
static void forget_orphan(struct consumer *c, struct msg *m)
{
	for (size_t i = 0; i < c->norphans; i++) {
		if (c->orphans[i] == m) {
			c->orphans[i] = c->orphans[--c->norphans];
			break;
		}
	}
	msg_free(m);
}

/* The answer to a request whose partition left: the next owner delivers it. */
static void drop_orphan(struct consumer *c, struct msg *m)
{
	c->in_flight--;
	forget_orphan(c, m);
}

/* Every request was aborted (the webhook handle was rebuilt): forget the orphans. */
static void free_orphans(struct consumer *c)
{
	for (size_t i = 0; i < c->norphans; i++)
		msg_free(c->orphans[i]);
	free(c->orphans);
	c->orphans = NULL;
	c->norphans = 0;
}

/*
 * What status (0: no answer, error saying why) does to m, whose attempt is
 * already counted: the table in docs/webhooks.md.
 */
static void settle(struct consumer *c, struct msg *m, long status, const char *error)
{
	const struct conf_sub *cs = c->cs;

	switch (webhook_verdict(status)) {
	case VERDICT_DELIVERED:
		atomic_fetch_add(&c->delivered, 1);
		complete(c, m);
		return;
	case VERDICT_PAUSE:
		if (!c->gone)
			log_warnx("subscription %s: the endpoint answered 410 Gone; paused until "
			    "reload, nothing more is sent or committed", cs->name);
		c->gone = true;
		m->attempts--;
		set_state(c, m, M_WAITING);
		pause_all(c);
		return;
	case VERDICT_POISON:
		give_up(c, m, "rejected", status);
		return;
	case VERDICT_RETRY:
		break;
	}
	if (cs->retry.max_attempts > 0 && m->attempts >= cs->retry.max_attempts) {
		give_up(c, m, "retries exhausted", status);
		return;
	}
	if (status == 0)
		log_debug("subscription %s: %s [%d] offset %lld attempt %d: %s", cs->name,
		    m->part->topic, (int)m->partition, (long long)m->offset, m->attempts,
		    error ? error : "no answer");
	else
		log_debug("subscription %s: %s [%d] offset %lld attempt %d: status %ld", cs->name,
		    m->part->topic, (int)m->partition, (long long)m->offset, m->attempts,
		    status);
	retry_later(c, m, backoff_delay_ms(&cs->retry, m->attempts, next_rand(c)));
}

/* What any answer says to pace, the metrics and Retry-After. */
static void count_answer(struct consumer *c, const struct webhook_answer *a,
    const struct timespec *sent, int64_t sent_ms, bool window_full, int64_t now)
{
	struct timespec end;

	end = clock_now(CLOCK_MONOTONIC);
	metrics_webhook_request(c->metrics, a->status, (double)(end.tv_sec - sent->tv_sec) +
	    (double)(end.tv_nsec - sent->tv_nsec) / 1e9);
	c->in_flight--;
	pace_answer(&c->pace, sent_ms, now, pace_signal_of(a->status, a->timed_out), window_full);
	atomic_store(&c->stat_window, pace_window(&c->pace));
	/*
	 * now is whole milliseconds, rounded down: one more keeps the next
	 * request from leaving up to a millisecond before Retry-After ends.
	 */
	if (a->retry_after_ms >= 0 && now + a->retry_after_ms + 1 > c->hold_until)
		c->hold_until = now + a->retry_after_ms + 1;
}

/* libcurl: the endpoint answered (or did not) a one-message request. */
static void on_msg_answer(struct consumer *c, struct msg *m, const struct webhook_answer *a)
{
	if (!m->part) {
		drop_orphan(c, m);
		return;
	}
	count_answer(c, a, &m->sent, m->sent_ms, m->window_full, now_ms());
	m->part->busy--;
	m->attempts++;
	settle(c, m, a->status, a->error);
}

/*
 * A 207's {"results":[{"id":…,"status":…}, …]}: each member's own status,
 * 0 for a member without one (not delivered: retried).
 */
static void batch_results(struct consumer *c, struct batch *b, const struct webhook_answer *a)
{
	json_error_t jerr;
	json_t *root = json_loadb(a->body, a->body_len, 0, &jerr);
	json_t *results = json_object_get(root, "results");
	size_t nres = json_is_array(results) ? json_array_size(results) : 0;
	size_t missing = 0;

	if (nres == 0)
		log_warnx("subscription %s: batch %s: a 207 without a list of results%s%s; "
		    "its %zu messages are retried", c->cs->name, b->id, root ? "" : ": ",
		    root ? "" : jerr.text, b->n);
	for (size_t i = 0; i < b->n; i++) {
		struct msg *m = b->m[i];
		long status = 0;

		for (size_t j = 0; j < nres; j++) {
			json_t *r = json_array_get(results, j);
			const char *id = json_string_value(json_object_get(r, "id"));
			json_t *st = json_object_get(r, "status");
			if (id && strcmp(id, m->id) == 0 && json_is_integer(st)) {
				status = (long)json_integer_value(st);
				break;
			}
		}
		missing += status == 0;
		settle(c, m, status, "no result for it in the 207");
	}
	if (missing > 0 && nres > 0)
		log_warnx("subscription %s: batch %s: the 207 gives no status for %zu of its %zu "
		    "messages; those are retried", c->cs->name, b->id, missing, b->n);
	json_decref(root);
}

/* libcurl: the endpoint answered (or did not) a batch request. */
static void on_batch_answer(struct consumer *c, struct batch *b, const struct webhook_answer *a)
{
	const struct conf_sub *cs = c->cs;
	int64_t now = now_ms();
	size_t kept = 0;
	int attempts = 0;

	count_answer(c, a, &b->sent, b->sent_ms, b->window_full, now);
	/* Members whose partition left are the next owner's to deliver. */
	for (size_t i = 0; i < b->n; i++) {
		struct msg *m = b->m[i];
		if (!m->part) {
			m->batch = NULL;
			forget_orphan(c, m);
			continue;
		}
		m->part->busy--;
		m->attempts++;
		if (m->attempts > attempts)
			attempts = m->attempts;
		b->m[kept++] = m;
	}
	/* A retry of what is left goes under the id of what it then holds. */
	if (kept < b->n)
		b->id_stale = true;
	b->n = kept;
	if (kept == 0) {
		batch_free(c, b);
		return;
	}
	if (a->status == 207) {
		batch_detach(c, b);
		batch_results(c, b, a);
		goto done;
	}
	switch (webhook_verdict(a->status)) {
	case VERDICT_DELIVERED:
	case VERDICT_PAUSE:
		batch_detach(c, b);
		for (size_t i = 0; i < b->n; i++)
			settle(c, b->m[i], a->status, a->error);
		goto done;
	case VERDICT_POISON:
		batch_detach(c, b);
		if (b->n == 1) {
			settle(c, b->m[0], a->status, a->error);
			goto done;
		}
		log_warnx("subscription %s: batch %s of %zu messages rejected (status %ld); "
		    "sending them one by one", cs->name, b->id, b->n, a->status);
		for (size_t i = 0; i < b->n; i++) {
			b->m[i]->solo = true;
			set_state(c, b->m[i], M_WAITING);
		}
		goto done;
	case VERDICT_RETRY:
		break;
	}
	/*
	 * A batch may hold messages retried before (after a 207) next to fresh
	 * ones: only those that used up their own attempts give up; the others
	 * wait for their retry alone and are gathered again.
	 */
	if (cs->retry.max_attempts > 0 && attempts >= cs->retry.max_attempts) {
		batch_detach(c, b);
		for (size_t i = 0; i < b->n; i++) {
			struct msg *m = b->m[i];
			if (m->attempts >= cs->retry.max_attempts) {
				give_up(c, m, "retries exhausted", a->status);
				continue;
			}
			int64_t delay = backoff_delay_ms(&cs->retry, m->attempts, next_rand(c));
			retry_later(c, m, delay);
		}
		goto done;
	}
	if (a->status == 0)
		log_debug("subscription %s: batch %s attempt %d: %s", cs->name, b->id, attempts,
		    a->error ? a->error : "no answer");
	else
		log_debug("subscription %s: batch %s attempt %d: status %ld", cs->name, b->id,
		    attempts, a->status);
	/* Retried whole: every member waits as long, and b keeps them together. */
	{
		int64_t delay = backoff_delay_ms(&cs->retry, attempts, next_rand(c));
		for (size_t i = 0; i < b->n; i++) {
			retry_later(c, b->m[i], delay);
			b->m[i]->not_before = now + delay;
		}
	}
	return;
done:
	free(b->m);
	free(b);
}

/* libcurl: the endpoint answered (or did not). */
static void on_answer(void *arg, void *tag, const struct webhook_answer *a)
{
	struct consumer *c = arg;

	if (c->cs->batch.max_messages > 1)
		on_batch_answer(c, tag, a);
	else
		on_msg_answer(c, tag, a);
}

/* --- dispatch ------------------------------------------------------------------ */

static bool ready(struct consumer *c, const struct msg *m, int64_t now)
{
	if (m->state == M_WAITING)
		return true;
	if (m->state != M_BACKOFF)
		return false;
	if (m->not_before <= now)
		return true;
	if (c->next_wake < 0 || m->not_before < c->next_wake)
		c->next_wake = m->not_before;
	return false;
}

static void send_msg(struct consumer *c, struct msg *m)
{
	struct webhook_msg wm;
	char err[128];

	msg_wm(m, &wm);
	if (webhook_send(c->wh, &wm, m, err, sizeof(err)) < 0) {
		atomic_fetch_add(&c->send_errors, 1);
		log_warnx("subscription %s: %s [%d] offset %lld: %s; not sent, trying again in "
		    "%d ms", c->cs->name, m->part->topic, (int)m->partition, (long long)m->offset,
		    err, SEND_RETRY_MS);
		set_state(c, m, M_BACKOFF);
		m->not_before = now_ms() + SEND_RETRY_MS;
		return;
	}
	set_state(c, m, M_IN_FLIGHT);
	m->sent = clock_now(CLOCK_MONOTONIC);
	m->sent_ms = now_ms();
	m->window_full = c->in_flight + 1 >= pace_window(&c->pace);
	pace_sent(&c->pace, m->sent_ms);
	m->part->busy++;
	c->in_flight++;
}

/* Send b, a new batch or one to be retried whole; on failure it waits SEND_RETRY_MS. */
static void send_batch(struct consumer *c, struct batch *b)
{
	struct webhook_msg *wms = batch_wms(c, b);
	int attempt = 0;
	char err[128];

	if (b->id_stale) {
		webhook_batch_id(wms, b->n, b->id);
		b->id_stale = false;
	}
	for (size_t i = 0; i < b->n; i++)
		if (wms[i].attempt > attempt)
			attempt = wms[i].attempt;
	if (webhook_send_batch(c->wh, wms, b->n, b->id, attempt, b, err, sizeof(err)) < 0) {
		atomic_fetch_add(&c->send_errors, 1);
		log_warnx("subscription %s: batch %s of %zu messages: %s; not sent, trying again "
		    "in %d ms", c->cs->name, b->id, b->n, err, SEND_RETRY_MS);
		for (size_t i = 0; i < b->n; i++) {
			set_state(c, b->m[i], M_BACKOFF);
			b->m[i]->not_before = now_ms() + SEND_RETRY_MS;
		}
		return;
	}
	for (size_t i = 0; i < b->n; i++) {
		set_state(c, b->m[i], M_IN_FLIGHT);
		b->m[i]->part->busy++;
	}
	b->sent = clock_now(CLOCK_MONOTONIC);
	b->sent_ms = now_ms();
	b->window_full = c->in_flight + 1 >= pace_window(&c->pace);
	pace_sent_n(&c->pace, b->sent_ms, b->n);
	c->in_flight++;
}

/* Keys seen in this pass over one partition: a small open-addressing set. */
static uint64_t key_hash(const void *k, size_t n)
{
	const unsigned char *p = k;
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 1099511628211ull;
	return h;
}

/* Empty, with room for the keys of n messages. */
static void keyset_reset(struct keyset *ks, size_t n)
{
	size_t cap = 16;

	while (cap < 2 * n)
		cap *= 2;
	if (cap > ks->cap) {
		free(ks->v);
		ks->v = xcalloc(cap, sizeof(*ks->v));
		ks->cap = cap;
	} else {
		memset(ks->v, 0, ks->cap * sizeof(*ks->v));
	}
}

/* Adds the key of m; returns false when it was already there. */
static bool keyset_add(struct keyset *ks, const struct msg *m)
{
	size_t i = key_hash(m->key, m->key_len) & (ks->cap - 1);

	for (;; i = (i + 1) & (ks->cap - 1)) {
		const struct msg *o = ks->v[i];
		if (!o) {
			ks->v[i] = m;
			return true;
		}
		if (o->key_len == m->key_len && memcmp(o->key, m->key, m->key_len) == 0)
			return false;
	}
}

/*
 * Whether pace lets one more request out now: the concurrency window has
 * room and rate_limit has a token (else the loop wakes when it will).
 */
static bool may_send(struct consumer *c, int64_t now)
{
	int64_t wait;

	if (c->in_flight >= pace_window(&c->pace))
		return false;
	wait = pace_wait_ms(&c->pace, now);
	if (wait == 0)
		return true;
	if (c->next_wake < 0 || now + wait < c->next_wake)
		c->next_wake = now + wait;
	return false;
}

static void dispatch_partition(struct consumer *c, struct part *p, int64_t now,
    struct keyset *ks)
{
	enum conf_ordering ordering = c->cs->ordering;

	if (ordering == CONF_ORDER_PARTITION) {
		if (p->busy == 0 && p->len > 0 && ready(c, q_at(p, 0), now) && may_send(c, now))
			send_msg(c, q_at(p, 0));
		return;
	}
	if (ordering == CONF_ORDER_KEY)
		keyset_reset(ks, p->len);
	for (size_t i = 0; i < p->len && may_send(c, now); i++) {
		struct msg *m = q_at(p, i);
		if (m->state == M_DONE)
			continue;
		/* In key order, an earlier unfinished message of the same key goes first. */
		if (ordering == CONF_ORDER_KEY && m->key && !keyset_add(ks, m))
			continue;
		if (ready(c, m, now))
			send_msg(c, m);
	}
}

/* --- dispatch of batches (batch.max_messages > 1) ------------------------------ */

/*
 * Send what was gathered as one batch. wait: it may still grow (nothing
 * keeps the next message out of it but its not having arrived), so it
 * waits until its oldest message has waited batch.max_wait_ms, unless it
 * is full. Either way the gather is empty afterwards.
 */
static void gather_flush(struct consumer *c, struct gather *g, int64_t now, bool wait)
{
	const struct conf_batch *cb = &c->cs->batch;
	size_t n = g->n, bytes = g->bytes;

	g->n = 0;
	g->bytes = 0;
	if (n == 0)
		return;
	if (wait && n < (size_t)cb->max_messages && bytes < (size_t)cb->max_bytes &&
	    now < g->oldest + cb->max_wait_ms) {
		if (c->next_wake < 0 || g->oldest + cb->max_wait_ms < c->next_wake)
			c->next_wake = g->oldest + cb->max_wait_ms;
		return;
	}
	if (!may_send(c, now))
		return;
	send_batch(c, batch_new(c, g->m, n));
}

/* Whether m fits in the gather's batch (a message alone always does). */
static bool gather_fits(const struct consumer *c, const struct gather *g, const struct msg *m)
{
	return g->n == 0 || g->bytes + m->bytes <= (size_t)c->cs->batch.max_bytes;
}

/* Add m (ready, in no batch, not solo, fitting); a batch that is full goes. */
static void gather_add(struct consumer *c, struct gather *g, struct msg *m, int64_t now)
{
	const struct conf_batch *cb = &c->cs->batch;

	if (g->n == g->cap) {
		g->cap = g->cap ? 2 * g->cap : 64;
		g->m = xrealloc(g->m, g->cap * sizeof(*g->m));
	}
	if (g->n == 0 || m->taken_ms < g->oldest)
		g->oldest = m->taken_ms;
	g->m[g->n++] = m;
	g->bytes += m->bytes;
	if (g->n >= (size_t)cb->max_messages || g->bytes >= (size_t)cb->max_bytes)
		gather_flush(c, g, now, false);
}

/* m alone, as a batch of one: after a poison answer to the batch it was in. */
static void send_solo(struct consumer *c, struct msg *m, int64_t now)
{
	if (may_send(c, now))
		send_batch(c, batch_new(c, &m, 1));
}

/*
 * ordering = partition: one batch of the partition out at a time, of the
 * consecutive messages from its head; a batch waiting to be retried whole,
 * or a message sent alone, goes as it is.
 */
static void batch_partition(struct consumer *c, struct part *p, int64_t now)
{
	struct gather *g = &c->gather;
	struct msg *head;

	if (p->busy > 0 || p->len == 0 || !ready(c, (head = q_at(p, 0)), now))
		return;
	if (head->batch) {
		if (may_send(c, now))
			send_batch(c, head->batch);
		return;
	}
	if (head->solo) {
		send_solo(c, head, now);
		return;
	}
	for (size_t i = 0; i < p->len; i++) {
		struct msg *m = q_at(p, i);
		if (m->state == M_DONE)
			continue; /* delivered after a 207 while an earlier one retries */
		if (!ready(c, m, now) || m->batch || m->solo || !gather_fits(c, g, m)) {
			gather_flush(c, g, now, false);
			return;
		}
		gather_add(c, g, m, now);
		if (g->n == 0)
			return; /* it filled and went */
	}
	gather_flush(c, g, now, true);
}

/*
 * ordering = key: runs of consecutive messages of the partition, each the
 * first unfinished one of its key; a key met again ends the run.
 */
static void batch_keyed(struct consumer *c, struct part *p, int64_t now)
{
	struct gather *g = &c->gather;

	keyset_reset(&c->keys, p->len);
	for (size_t i = 0; i < p->len; i++) {
		struct msg *m = q_at(p, i);
		bool first, r;

		if (m->state == M_DONE)
			continue;
		first = !m->key || keyset_add(&c->keys, m);
		r = first && ready(c, m, now);
		if (!r || m->batch || m->solo) {
			gather_flush(c, g, now, false);
			if (r && m->batch && may_send(c, now))
				send_batch(c, m->batch);
			else if (r && m->solo)
				send_solo(c, m, now);
			continue;
		}
		if (!gather_fits(c, g, m))
			gather_flush(c, g, now, false);
		gather_add(c, g, m, now);
	}
	gather_flush(c, g, now, true);
}

/* ordering = none: any ready messages of any partitions. */
static void batch_any(struct consumer *c, int64_t now)
{
	struct gather *g = &c->gather;

	for (size_t k = 0; k < c->nparts && may_send(c, now); k++) {
		struct part *p = c->parts[(c->rr + k) % c->nparts];
		if (p->leaving)
			continue;
		for (size_t i = 0; i < p->len; i++) {
			struct msg *m = q_at(p, i);
			if (m->state == M_DONE || !ready(c, m, now))
				continue;
			if (m->batch) {
				if (may_send(c, now))
					send_batch(c, m->batch);
			} else if (m->solo) {
				send_solo(c, m, now);
			} else {
				if (!gather_fits(c, g, m))
					gather_flush(c, g, now, false);
				gather_add(c, g, m, now);
			}
		}
	}
	gather_flush(c, g, now, true);
}

static void dispatch_batches(struct consumer *c, int64_t now)
{
	enum conf_ordering ordering = c->cs->ordering;

	if (ordering == CONF_ORDER_NONE) {
		batch_any(c, now);
		return;
	}
	for (size_t k = 0; k < c->nparts && may_send(c, now); k++) {
		struct part *p = c->parts[(c->rr + k) % c->nparts];
		if (p->leaving)
			continue;
		if (ordering == CONF_ORDER_PARTITION)
			batch_partition(c, p, now);
		else
			batch_keyed(c, p, now);
	}
}

static void dispatch(struct consumer *c, int64_t now)
{
	c->next_wake = -1;
	if (held(c) || c->revoking || c->nparts == 0 || atomic_load(&c->stopping))
		return;
	if (now < c->hold_until) {
		c->next_wake = c->hold_until;
		return;
	}
	if (c->cs->batch.max_messages > 1) {
		dispatch_batches(c, now);
		c->rr++;
		return;
	}
	for (size_t k = 0; k < c->nparts && may_send(c, now); k++) {
		struct part *p = c->parts[(c->rr + k) % c->nparts];
		if (!p->leaving)
			dispatch_partition(c, p, now, &c->keys);
	}
	c->rr++;
}

/* --- taking messages from Kafka ----------------------------------------------- */

/*
 * An ackd-id header becomes the webhook-id, sent as a header line and signed:
 * only ids of plain characters qualify (any producer can write this header);
 * others get the id computed from the message's coordinates.
 */
static bool id_usable(const void *value, size_t size)
{
	const unsigned char *v = value;

	if (!v || size == 0 || size >= WEBHOOK_ID_MAX)
		return false;
	for (size_t i = 0; i < size; i++)
		if (!isalnum(v[i]) && v[i] != '_' && v[i] != '-' && v[i] != '.')
			return false;
	return true;
}

/* rkm's timestamp in ms, or -1 when the record has none. */
static int64_t msg_timestamp(const rd_kafka_message_t *rkm)
{
	rd_kafka_timestamp_type_t tstype;
	int64_t ts = rd_kafka_message_timestamp(rkm, &tstype);

	return tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
}

/*
 * A message holding its own copy of rkm's record, laid out after it: the
 * header table, then the key, the value, and each header's name (with its
 * NUL) and value. Headers librdkafka cannot parse are left out, as before
 * the copy.
 */
static struct msg *msg_new(struct consumer *c, const rd_kafka_message_t *rkm)
{
	rd_kafka_headers_t *kh;
	size_t n = 0, size = rkm->key_len + rkm->len;
	struct msg *m;
	char *at;

	if (rd_kafka_message_headers(rkm, &kh) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		size_t cnt = rd_kafka_header_cnt(kh);
		if (cnt > c->hdrs_cap) {
			c->hdrs_cap = cnt;
			c->hdrs = xrealloc(c->hdrs, cnt * sizeof(*c->hdrs));
		}
		for (; n < cnt; n++) {
			struct webhook_hdr *h = &c->hdrs[n];
			if (rd_kafka_header_get_all(kh, n, &h->name, &h->value, &h->value_len))
				break;
			size += strlen(h->name) + 1 + h->value_len;
		}
	}
	size += sizeof(*m) + n * sizeof(m->hdrs[0]);
	m = xmalloc(size);
	memset(m, 0, sizeof(*m) + n * sizeof(m->hdrs[0])); /* the bytes after are all written */
	m->size = size;
	m->partition = rkm->partition;
	m->offset = rkm->offset;
	m->timestamp_ms = msg_timestamp(rkm);
	at = (char *)&m->hdrs[n];
	if (rkm->key) {
		m->key = memcpy(at, rkm->key, rkm->key_len);
		m->key_len = rkm->key_len;
		at += rkm->key_len;
	}
	if (rkm->payload) {
		m->value = memcpy(at, rkm->payload, rkm->len);
		m->value_len = rkm->len;
		at += rkm->len;
	}
	m->bytes = m->key_len + m->value_len;
	for (size_t i = 0; i < n; i++) {
		const struct webhook_hdr *from = &c->hdrs[i];
		struct webhook_hdr *h = &m->hdrs[i];
		size_t nlen = strlen(from->name) + 1;

		h->name = memcpy(at, from->name, nlen);
		at += nlen;
		if (from->value) {
			h->value = memcpy(at, from->value, from->value_len);
			h->value_len = from->value_len;
			at += from->value_len;
		}
		m->bytes += nlen - 1 + h->value_len;
		if (strcmp(h->name, SPOOL_HDR_ID) == 0 && id_usable(h->value, h->value_len))
			snprintf(m->id, sizeof(m->id), "%.*s", (int)h->value_len, (const char *)h->value);
	}
	m->nhdrs = n;
	return m;
}

/* Whether a and b hold the same n bytes (either NULL only when n is 0). */
static bool same_bytes(const void *a, const void *b, size_t n)
{
	return n == 0 || memcmp(a, b, n) == 0;
}

/*
 * Whether rkm, at an offset already taken and still counted, is that same
 * record fetched again (after a pause) rather than another log's record at
 * a reused offset. Every counted offset at or above the committable point
 * is still queued, so a refetch finds its twin. Key and value are compared
 * byte for byte: a recreated topic can repeat lengths and timestamps (fixed
 * size records, one millisecond), and a record taken for its twin would be
 * dropped and its offset committed when the twin completes.
 */
static bool fetched_again(const struct part *p, const rd_kafka_message_t *rkm)
{
	for (size_t i = p->len; i-- > 0;) {
		const struct msg *t = q_at(p, i);

		if (!t->counted || t->offset != rkm->offset)
			continue;
		return t->value_len == rkm->len && t->key_len == rkm->key_len &&
		    (t->key == NULL) == (rkm->key == NULL) &&
		    same_bytes(t->key, rkm->key, rkm->key_len) &&
		    (t->value == NULL) == (rkm->payload == NULL) &&
		    same_bytes(t->value, rkm->payload, rkm->len) &&
		    t->timestamp_ms == msg_timestamp(rkm);
	}
	return false;
}

/* The queued messages at offset or above no longer count: the log lost them. */
static void uncount_from(struct part *p, int64_t offset)
{
	for (size_t i = 0; i < p->len; i++)
		if (q_at(p, i)->offset >= offset)
			q_at(p, i)->counted = false;
}

/*
 * offsets_add() refused rkm: an offset below where the partition was
 * fetched up to (or one it cannot track). 0 when the log itself changed
 * and the tracking was set right for rkm, which it then took; -1 when rkm
 * is not to be taken: a record already taken.
 *
 * The log changes when the topic is recreated, when an unclean leader
 * election truncates it, or when a fetch out of range is reset into what
 * was fetched. Below every pending message (offsets_committable()) the
 * partition is tracked afresh and the next commit writes the new, lower
 * position. At or above it the messages below rkm are still in the log and
 * keep holding the commit back until they complete; only those at rkm or
 * later, which the log no longer has, stop counting (they still finish).
 */
static int log_changed(struct consumer *c, struct part *p, rd_kafka_message_t *rkm)
{
	int64_t from = offsets_committable(p->off), next = offsets_next(p->off);
	enum offsets_fetch what = offsets_classify(p->off, rkm->offset,
	    rkm->offset < next && fetched_again(p, rkm));

	if (what == OFFSETS_REFETCH)
		return -1;
	if (what == OFFSETS_NEW) {
		/* Only INT64_MAX: no offset after it to commit. Never reached in practice. */
		log_warnx("subscription %s: %s [%d] offset %lld cannot be tracked; not delivered "
		    "and not committed", c->cs->name, p->topic, (int)p->partition,
		    (long long)rkm->offset);
		return -1;
	}
	log_warnx("subscription %s: %s [%d] went back to offset %lld (completed up to %lld, "
	    "fetched up to %lld; topic recreated or truncated?); delivering from there",
	    c->cs->name, p->topic, (int)p->partition, (long long)rkm->offset, (long long)from,
	    (long long)next);
	p->epoch++;
	if (what == OFFSETS_TRUNCATE) {
		uncount_from(p, rkm->offset);
		if (offsets_truncate(p->off, rkm->offset) < 0)
			fatalx("offsets: cannot cut at %lld (committable %lld, next %lld)",
			    (long long)rkm->offset, (long long)from, (long long)next);
	} else {
		uncount_from(p, INT64_MIN);
		offsets_reset(p->off, rkm->offset);
		p->committed = -1;
		p->went_below = true;
	}
	if (offsets_add(p->off, rkm->offset) < 0)
		fatalx("offsets: %lld refused after the log went back", (long long)rkm->offset);
	return 0;
}

static void take_message(struct consumer *c, rd_kafka_message_t *rkm)
{
	const char *topic = rd_kafka_topic_name(rkm->rkt);
	struct part *p = find_part(c, topic, rkm->partition);
	struct msg *m;

	if (!p) {
		/* Fetched just before a revoke; the next owner delivers it. */
		rd_kafka_message_destroy(rkm);
		return;
	}
	if (!p->off)
		p->off = offsets_new(rkm->offset);
	if (offsets_add(p->off, rkm->offset) < 0 && log_changed(c, p, rkm) < 0) {
		/* Already taken (fetched again after a pause): nothing new. */
		rd_kafka_message_destroy(rkm);
		return;
	}
	m = msg_new(c, rkm);
	rd_kafka_message_destroy(rkm);
	m->part = p;
	m->epoch = p->epoch;
	m->counted = true;
	m->state = M_WAITING;
	m->taken_ms = now_ms();
	if (!m->id[0])
		webhook_id_from_coords(p->topic, m->partition, m->offset, m->id);
	q_push(p, m);
	p->bytes += m->size;
	if (part_full(p)) {
		p->full = true;
		count_stopped(c, p);
	}
}

/* A message, or NULL; an error other than a partition's end is logged. */
static bool take_one(struct consumer *c, rd_kafka_message_t *rkm)
{
	if (!rkm)
		return false;
	if (rkm->err) {
		if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
			log_warnx("subscription %s: %s", c->cs->name, rd_kafka_message_errstr(rkm));
		rd_kafka_message_destroy(rkm);
		return true;
	}
	take_message(c, rkm);
	return true;
}

static void poll_kafka(struct consumer *c)
{
	int n = 0;

	c->refill = false;
	/* Rebalances and errors (a rebalance may add or free partitions). */
	while (n < POLL_BATCH && take_one(c, rd_kafka_consumer_poll(c->rk, 0)))
		n++;
	/* Each partition's messages while its window has room, from another first each time. */
	for (size_t i = 0; i < c->nparts && n < POLL_BATCH; i++) {
		struct part *p = c->parts[(c->take_from + i) % c->nparts];
		while (!p->full && n < POLL_BATCH &&
		    take_one(c, rd_kafka_consume_queue(p->fetchq, 0)))
			n++;
	}
	c->take_from++;
}

/* --- rebalance ------------------------------------------------------------------ */

/*
 * Drive requests until the leaving partitions have nothing out, or the
 * deadline; the others go on being dispatched meanwhile.
 */
static void wait_in_flight(struct consumer *c, int64_t deadline)
{
	for (;;) {
		bool busy = false;
		for (size_t i = 0; i < c->nparts; i++)
			busy |= c->parts[i]->leaving && c->parts[i]->busy > 0;
		if (!busy || now_ms() >= deadline)
			return;
		dispatch(c, now_ms());
		webhook_poll(c->wh, c->wake.rd, 50);
		wakeup_drain(&c->wake);
		webhook_collect(c->wh, on_answer, c);
		take_finished(c);
	}
}

/*
 * Let the partitions in l go (all of them when l is NULL): wait for their
 * requests, commit what completed (not when the assignment was lost: another
 * member owns them already), forget the rest.
 */
static void release(struct consumer *c, const rd_kafka_topic_partition_list_t *l, bool lost,
    const char *why)
{
	char err[256];
	size_t kept = 0, out = 0;
	bool all = true;

	for (size_t i = 0; i < c->nparts; i++) {
		struct part *p = c->parts[i];
		p->leaving = !l || rd_kafka_topic_partition_list_find(l, p->topic, p->partition);
		all &= p->leaving;
	}
	c->revoking = all;
	if (!lost) {
		/*
		 * Only when every partition leaves (shutdown, an eager rebalance) are
		 * the requests out waited for. A cooperative revoke of some does not
		 * wait: nothing is fetched while this callback runs, so the
		 * partitions that stay would stop with the slowest request of those
		 * that leave. Their answers are dropped (orphans) and the partitions'
		 * next owner delivers those messages again.
		 */
		if (all)
			wait_in_flight(c, now_ms() + c->cs->timeout_ms);
		commit(c, true);
	}
	for (size_t i = 0; i < c->nparts; i++)
		if (c->parts[i]->leaving)
			out += c->parts[i]->busy;
	if (all && webhook_in_flight(c->wh) > 0) {
		log_warnx("subscription %s: %zu requests still out at %s; their messages will be "
		    "delivered again", c->cs->name, webhook_in_flight(c->wh), why);
		webhook_free(c->wh);
		c->wh = webhook_new(c->cs, err, sizeof(err));
		if (!c->wh)
			fatalx("subscription %s: %s", c->cs->name, err);
		c->in_flight = 0;
		while (c->batches)
			batch_free(c, c->batches);
		free_orphans(c);
		for (size_t i = 0; i < c->nparts; i++)
			for (size_t j = 0; j < c->parts[i]->len; j++)
				if (q_at(c->parts[i], j)->state == M_IN_FLIGHT)
					set_state(c, q_at(c->parts[i], j), M_WAITING);
	} else if (out > 0) {
		log_warnx("subscription %s: %zu requests or dead letters still out at %s on "
		    "partitions that leave; their messages will be delivered again by the "
		    "partitions' next owner", c->cs->name, out, why);
	}
	for (size_t i = 0; i < c->nparts; i++) {
		struct part *p = c->parts[i];
		if (!p->leaving) {
			c->parts[kept++] = p;
			continue;
		}
		if (p->stopped)
			atomic_fetch_sub(&c->paused_parts, 1);
		part_free(c, p);
	}
	c->nparts = kept;
	c->last = NULL;
	c->rr = 0;
	atomic_store(&c->assigned, kept);
	c->revoking = false;
}

/* Take newly assigned partitions (all of them with an eager assignor). */
static void add_parts(struct consumer *c, rd_kafka_t *rk,
    const rd_kafka_topic_partition_list_t *parts)
{
	/* The group's committed offsets: where lag counts from. */
	rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);

	if (rd_kafka_committed(rk, committed, COMMITTED_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
		log_warnx("subscription %s: cannot read the group's committed offsets; lag "
		    "is reported once messages are committed", c->cs->name);
	c->parts = xrealloc(c->parts, (c->nparts + (size_t)parts->cnt + 1) * sizeof(*c->parts));
	for (int i = 0; i < parts->cnt; i++) {
		struct part *p = xcalloc(1, sizeof(*p));
		p->topic = xstrdup(parts->elems[i].topic);
		p->partition = parts->elems[i].partition;
		p->gen = ++c->next_gen;
		p->committed = committed->elems[i].offset >= 0 ? committed->elems[i].offset : -1;
		p->low = p->high = -1;
		/*
		 * Its own queue, before the assignment starts the fetcher: a
		 * queue the application forwarded stays so (librdkafka would
		 * forward it to the consumer queue otherwise).
		 */
		p->fetchq = rd_kafka_queue_get_partition(rk, p->topic, p->partition);
		if (!p->fetchq)
			fatalx("subscription %s: librdkafka has no queue for %s [%d]", c->cs->name,
			    p->topic, (int)p->partition);
		rd_kafka_queue_forward(p->fetchq, NULL);
		rd_kafka_queue_io_event_enable(p->fetchq, c->wake.wr, "c", 1);
		c->parts[c->nparts++] = p;
	}
	rd_kafka_topic_partition_list_destroy(committed);
	atomic_store(&c->assigned, c->nparts);
}

static void check_error(struct consumer *c, rd_kafka_error_t *error, const char *what)
{
	if (!error)
		return;
	log_warnx("subscription %s: %s: %s", c->cs->name, what, rd_kafka_error_string(error));
	rd_kafka_error_destroy(error);
}

/*
 * With the cooperative protocol, parts holds only the partitions that are
 * added or revoked, and the rest keep being delivered; with an eager one (a
 * kafka.consumer partition.assignment.strategy of range or roundrobin) it
 * holds all of them.
 */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
    rd_kafka_topic_partition_list_t *parts, void *opaque)
{
	struct consumer *c = opaque;
	rd_kafka_resp_err_t kerr;
	bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
	size_t before = c->nparts;

	if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
		add_parts(c, rk, parts);
		log_info("subscription %s: assigned %d partitions (%zu in all)", c->cs->name,
		    parts->cnt, c->nparts);
		/* librdkafka keeps an application's pause across revoke and assign
		 * (2.8.0 still does): a partition paused before it left, and now
		 * back, would never be fetched. */
		rd_kafka_resume_partitions(rk, parts);
		if (cooperative)
			check_error(c, rd_kafka_incremental_assign(rk, parts), "incremental assign");
		else if ((kerr = rd_kafka_assign(rk, parts)))
			log_warnx("subscription %s: cannot take the assigned partitions: %s",
			    c->cs->name, rd_kafka_err2str(kerr));
		if (held(c))
			pause_all(c);
		return;
	}
	release(c, parts, rd_kafka_assignment_lost(rk), "revoke");
	log_info("subscription %s: partitions revoked: %zu of %zu (%zu kept)", c->cs->name,
	    before - c->nparts, before, c->nparts);
	if (cooperative)
		check_error(c, rd_kafka_incremental_unassign(rk, parts), "incremental unassign");
	else if ((kerr = rd_kafka_assign(rk, NULL)))
		log_warnx("subscription %s: cannot let the revoked partitions go: %s", c->cs->name,
		    rd_kafka_err2str(kerr));
}

/* --- the Control API -------------------------------------------------------------- */

#define SEEK_TIMEOUT_MS 5000

void consumer_control(struct consumer *c, struct control_cmd *cmd)
{
	cmd->next = NULL;
	pthread_mutex_lock(&c->lock);
	*c->cmds_tail = cmd;
	c->cmds_tail = &cmd->next;
	pthread_mutex_unlock(&c->lock);
	wakeup_signal(&c->wake);
}

/* Why the subscription is paused: ["operator"], ["endpoint_gone"], both, or []. */
static json_t *paused_by(struct consumer *c)
{
	json_t *why = json_array();

	if (atomic_load(&c->op_paused))
		json_array_append_new(why, json_string("operator"));
	if (c->gone)
		json_array_append_new(why, json_string("endpoint_gone"));
	return why;
}

static json_t *null_or_int(int64_t v) { return v >= 0 ? json_integer(v) : json_null(); }

json_t *consumer_describe(struct consumer *c)
{
	const struct conf_sub *cs = c->cs;
	json_t *parts = json_array(), *topics = json_array();
	bool paused = atomic_load(&c->op_paused) || c->gone;

	for (size_t i = 0; i < cs->topics.n; i++)
		json_array_append_new(topics, json_string(cs->topics.v[i]));
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->nlag; i++)
		json_array_append_new(parts, json_pack("{s:s,s:i,s:o,s:o}", "topic", c->lag[i].topic,
		    "partition", (int)c->lag[i].partition, "committed",
		    null_or_int(c->lag[i].committed), "lag", null_or_int(c->lag[i].lag)));
	pthread_mutex_unlock(&c->lock);
	return json_pack("{s:s,s:s,s:o,s:s,s:o,s:o,s:I,s:I,s:I,s:s?}", "name", cs->name, "group",
	    cs->group, "topics", topics, "state", paused ? "paused" : "running", "paused_by",
	    paused_by(c), "partitions", parts, "in_flight",
	    (json_int_t)atomic_load(&c->stat_in_flight), "window",
	    (json_int_t)atomic_load(&c->stat_window), "rate_limit", (json_int_t)cs->rate_limit,
	    "dead_letter_topic", cs->dead_letter_topic[0] ? cs->dead_letter_topic : NULL);
}

/* What pause and resume answer: the state as it is now. */
static json_t *state_answer(struct consumer *c)
{
	return json_pack("{s:s,s:s,s:o,s:I}", "subscription", c->cs->name, "state",
	    held(c) ? "paused" : "running", "paused_by", paused_by(c), "in_flight",
	    (json_int_t)c->in_flight);
}

/* Requests or dead letters still out, whose completion a pause waits for. */
static bool anything_out(struct consumer *c)
{
	if (c->in_flight > 0)
		return true;
	for (size_t i = 0; i < c->nparts; i++)
		if (c->parts[i]->busy > 0)
			return true;
	return false;
}

/*
 * Answer the pauses whose requests finished (committed first), or whose
 * wait (timeout_ms) ran out; all of them at stop.
 */
static void finish_pauses(struct consumer *c, bool all)
{
	struct control_cmd **pp = &c->pausing, *cmd;
	bool out, committed = false;
	int64_t now = now_ms();

	if (!c->pausing)
		return;
	out = anything_out(c);
	while ((cmd = *pp)) {
		if (out && !all && now < cmd->deadline_ms) {
			pp = &cmd->next;
			continue;
		}
		*pp = cmd->next;
		if (!committed && !all) {
			commit(c, true);
			committed = true;
		}
		control_answer(cmd, 200, state_answer(c));
	}
}

static void do_pause(struct consumer *c, struct control_cmd *cmd)
{
	char err[512];

	if (!atomic_load(&c->op_paused)) {
		if (control_pause_save(c->conf->spool.dir, c->cs->name, err, sizeof(err)) < 0) {
			log_warnx("subscription %s: pause refused: %s", c->cs->name, err);
			control_fail(cmd, 503, "unavailable", "the pause cannot be kept in the spool "
			    "directory (%s); not paused", err);
			return;
		}
		atomic_store(&c->op_paused, true);
		pause_all(c);
		log_info("subscription %s: paused by the control API (%zu requests in flight "
		    "finish first); kept across restarts until resumed", c->cs->name, c->in_flight);
	}
	cmd->deadline_ms = now_ms() + c->cs->timeout_ms;
	cmd->next = c->pausing;
	c->pausing = cmd;
	finish_pauses(c, false);
}

static void do_resume(struct consumer *c, struct control_cmd *cmd)
{
	char err[512];
	bool was = held(c);

	if (control_pause_remove(c->conf->spool.dir, c->cs->name, err, sizeof(err)) < 0) {
		log_warnx("subscription %s: resume refused: %s", c->cs->name, err);
		control_fail(cmd, 503, "unavailable", "the pause file cannot be removed (%s); "
		    "still paused", err);
		return;
	}
	atomic_store(&c->op_paused, false);
	c->gone = false;
	for (size_t i = 0; i < c->nparts; i++)
		trim(c, c->parts[i]); /* resumes fetching where the window has room */
	if (was)
		log_info("subscription %s: resumed by the control API", c->cs->name);
	control_answer(cmd, 200, state_answer(c));
}

static bool sub_topic(const struct conf_sub *cs, const char *topic)
{
	for (size_t i = 0; i < cs->topics.n; i++)
		if (strcmp(cs->topics.v[i], topic) == 0)
			return true;
	return false;
}

/* Every partition of the subscription's topics, from Kafka's metadata. */
static rd_kafka_topic_partition_list_t *all_partitions(struct consumer *c, char *err,
    size_t errlen)
{
	rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);

	for (size_t i = 0; i < c->cs->topics.n; i++) {
		const char *topic = c->cs->topics.v[i];
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(c->rk, topic, NULL);
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_resp_err_t kerr;

		if (!rkt) {
			snprintf(err, errlen, "%s: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
			goto fail;
		}
		kerr = rd_kafka_metadata(c->rk, 0, rkt, &md, SEEK_TIMEOUT_MS);
		rd_kafka_topic_destroy(rkt);
		if (!kerr && (md->topic_cnt != 1 || md->topics[0].err))
			kerr = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
		if (kerr) {
			snprintf(err, errlen, "cannot read the partitions of %s: %s", topic,
			    rd_kafka_err2str(kerr));
			if (md)
				rd_kafka_metadata_destroy(md);
			goto fail;
		}
		for (int j = 0; j < md->topics[0].partition_cnt; j++)
			rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[j].id);
		rd_kafka_metadata_destroy(md);
	}
	return l;
fail:
	rd_kafka_topic_partition_list_destroy(l);
	return NULL;
}

/* Where a seek moves topic [partition]: 0 and *out, or -1 with err. */
static int seek_target(struct consumer *c, const struct control_cmd *cmd, const char *topic,
    int32_t partition, int64_t given, int64_t *out, char *err, size_t errlen)
{
	rd_kafka_topic_partition_list_t *l;
	rd_kafka_resp_err_t kerr;
	int64_t low, high, o;

	kerr = rd_kafka_query_watermark_offsets(c->rk, topic, partition, &low, &high,
	    SEEK_TIMEOUT_MS);
	if (kerr) {
		snprintf(err, errlen, "%s [%d]: cannot read its offsets: %s", topic, (int)partition,
		    rd_kafka_err2str(kerr));
		return -1;
	}
	switch (cmd->to) {
	case SEEK_EARLIEST:
		*out = low;
		return 0;
	case SEEK_LATEST:
		*out = high;
		return 0;
	case SEEK_OFFSETS:
		/* Out of the log, the fetcher would reset to start: keep inside it. */
		*out = given < low ? low : given > high ? high : given;
		return 0;
	case SEEK_TIMESTAMP:
		break;
	}
	l = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(l, topic, partition)->offset = cmd->timestamp_ms;
	kerr = rd_kafka_offsets_for_times(c->rk, l, SEEK_TIMEOUT_MS);
	if (!kerr)
		kerr = l->elems[0].err;
	o = l->elems[0].offset;
	rd_kafka_topic_partition_list_destroy(l);
	if (kerr) {
		snprintf(err, errlen, "%s [%d]: cannot find the offset of time %lld: %s", topic,
		    (int)partition, (long long)cmd->timestamp_ms, rd_kafka_err2str(kerr));
		return -1;
	}
	*out = o >= 0 ? o : high; /* no record at or after the time: the end */
	return 0;
}

/*
 * Start p afresh at offset: what is queued is dropped, a request still out
 * becomes an orphan (its answer is dropped, so its completion cannot commit
 * over the new position) and a dead letter still out finds a new generation
 * (take_finished() ignores it).
 */
static void part_restart(struct consumer *c, struct part *p, int64_t offset)
{
	part_drop_queue(c, p);
	p->head = p->len = 0;
	p->bytes = 0;
	p->busy = 0;
	offsets_free(p->off);
	p->off = NULL;
	p->gen = ++c->next_gen;
	p->epoch++;
	p->committed = offset;
	p->went_below = p->went_back = false;
}

static void do_seek(struct consumer *c, struct control_cmd *cmd)
{
	const struct conf_sub *cs = c->cs;
	rd_kafka_topic_partition_list_t *all = NULL, *mv = rd_kafka_topic_partition_list_new(8);
	json_t *rows = json_array();
	rd_kafka_error_t *kerror;
	rd_kafka_resp_err_t kerr;
	char err[512];

	if (cmd->to == SEEK_OFFSETS) {
		all = rd_kafka_topic_partition_list_new((int)cmd->noffsets);
		for (size_t i = 0; i < cmd->noffsets; i++) {
			const struct control_offset *o = &cmd->offsets[i];
			if (!sub_topic(cs, o->topic)) {
				control_fail(cmd, 400, "bad_request", "offsets[%zu].topic: %s is not a "
				    "topic of subscription %s", i, o->topic, cs->name);
				goto done;
			}
			rd_kafka_topic_partition_list_add(all, o->topic, o->partition)->offset =
			    o->offset;
		}
	} else if (!(all = all_partitions(c, err, sizeof(err)))) {
		control_fail(cmd, 503, "unavailable", "%s; nothing moved", err);
		goto done;
	}
	/* Every target first: a seek that cannot finish moves nothing. */
	for (int i = 0; i < all->cnt; i++) {
		const rd_kafka_topic_partition_t *e = &all->elems[i];
		struct part *p = find_part(c, e->topic, e->partition);
		int64_t to;

		if (!p || p->leaving) {
			json_array_append_new(rows, json_pack("{s:s,s:i,s:b,s:n}", "topic", e->topic,
			    "partition", (int)e->partition, "moved", 0, "offset"));
			continue;
		}
		if (seek_target(c, cmd, e->topic, e->partition, e->offset, &to, err,
		        sizeof(err)) < 0) {
			control_fail(cmd, 503, "unavailable", "%s; nothing moved", err);
			goto done;
		}
		rd_kafka_topic_partition_list_add(mv, e->topic, e->partition)->offset = to;
		json_array_append_new(rows, json_pack("{s:s,s:i,s:b,s:I}", "topic", e->topic,
		    "partition", (int)e->partition, "moved", 1, "offset", (json_int_t)to));
	}
	if (mv->cnt > 0) {
		/*
		 * librdkafka first (it drops what it fetched from the old position),
		 * then ours: a partition it did not move keeps its queue and
		 * offsets, so no message is skipped by a seek that failed.
		 */
		kerror = rd_kafka_seek_partitions(c->rk, mv, SEEK_TIMEOUT_MS);
		if (kerror) {
			control_fail(cmd, 503, "unavailable", "seek failed: %s; nothing moved",
			    rd_kafka_error_string(kerror));
			rd_kafka_error_destroy(kerror);
			goto done;
		}
		int failed = -1;
		for (int i = 0; i < mv->cnt; i++) {
			struct part *p = find_part(c, mv->elems[i].topic, mv->elems[i].partition);
			if (mv->elems[i].err) {
				if (failed < 0)
					failed = i;
				continue;
			}
			part_restart(c, p, mv->elems[i].offset);
			/* Until the commit below is done, commit() sends it explicitly. */
			p->went_below = true;
			log_info("subscription %s: %s [%d] moved to offset %lld by the control API",
			    cs->name, p->topic, (int)p->partition, (long long)mv->elems[i].offset);
		}
		if (failed >= 0) {
			control_fail(cmd, 503, "unavailable", "seek of %s [%d] failed: %s; it did "
			    "not move, the others did: seek again",
			    mv->elems[failed].topic, (int)mv->elems[failed].partition,
			    rd_kafka_err2str(mv->elems[failed].err));
			goto done;
		}
		kerr = rd_kafka_offsets_store(c->rk, mv);
		if (!kerr)
			kerr = rd_kafka_commit(c->rk, mv, 0);
		if (kerr) {
			c->commit_failed = true;
			log_warnx("subscription %s: seek moved the partitions but the commit "
			    "failed: %s", cs->name, rd_kafka_err2str(kerr));
			control_fail(cmd, 503, "unavailable", "the partitions moved but the commit "
			    "failed (%s); seek again", rd_kafka_err2str(kerr));
			goto done;
		}
		for (int i = 0; i < mv->cnt; i++)
			find_part(c, mv->elems[i].topic, mv->elems[i].partition)->went_below = false;
	}
	snapshot_lag(c);
	control_answer(cmd, 200, json_pack("{s:s,s:o}", "subscription", cs->name, "partitions",
	    rows));
	rows = NULL;
done:
	for (size_t i = 0; i < c->nparts; i++)
		trim(c, c->parts[i]); /* one that was full and moved takes again, also on failure */
	json_decref(rows);
	if (all)
		rd_kafka_topic_partition_list_destroy(all);
	rd_kafka_topic_partition_list_destroy(mv);
}

/* One redrive at a time per subscription; it answers cmd itself when it ends. */
static void do_redrive(struct consumer *c, struct control_cmd *cmd)
{
	char err[256];

	if (!c->cs->dead_letter_topic[0]) {
		control_fail(cmd, 409, "conflict", "subscription %s has no dead_letter_topic",
		    c->cs->name);
		return;
	}
	if (c->redrive && !redrive_ended(c->redrive)) {
		control_fail(cmd, 409, "conflict", "a redrive of subscription %s is running; "
		    "try again when it has answered", c->cs->name);
		return;
	}
	redrive_stop(c->redrive); /* ended: only joins */
	c->redrive = NULL;
	if (redrive_start(c->conf, c->cs, c->sp, cmd, &c->redrive, err, sizeof(err)) < 0) {
		control_fail(cmd, 503, "unavailable", "%s", err);
		return;
	}
	log_info("subscription %s: redriving %s (at most %lld)", c->cs->name,
	    c->cs->dead_letter_topic, (long long)cmd->max);
}

/* The commands the Control API queued, in order. */
static void run_controls(struct consumer *c)
{
	struct control_cmd *cmd, *next;

	pthread_mutex_lock(&c->lock);
	cmd = c->cmds;
	c->cmds = NULL;
	c->cmds_tail = &c->cmds;
	pthread_mutex_unlock(&c->lock);
	for (; cmd; cmd = next) {
		next = cmd->next;
		switch (cmd->op) {
		case CONTROL_PAUSE:
			do_pause(c, cmd);
			break;
		case CONTROL_RESUME:
			do_resume(c, cmd);
			break;
		case CONTROL_SEEK:
			do_seek(c, cmd);
			break;
		case CONTROL_REDRIVE:
			do_redrive(c, cmd);
			break;
		}
	}
	finish_pauses(c, false);
}

/* At stop: what is still queued is not carried out. */
static void refuse_controls(struct consumer *c)
{
	struct control_cmd *cmd, *next;

	finish_pauses(c, true);
	pthread_mutex_lock(&c->lock);
	cmd = c->cmds;
	c->cmds = NULL;
	c->cmds_tail = &c->cmds;
	pthread_mutex_unlock(&c->lock);
	for (; cmd; cmd = next) {
		next = cmd->next;
		control_fail(cmd, 503, "unavailable", "subscription %s is stopping or restarting; "
		    "try again", c->cs->name);
	}
}

/* --- the thread ------------------------------------------------------------------ */

static void *consumer_loop(void *arg)
{
	struct consumer *c = arg;
	char name[16];

	snprintf(name, sizeof(name), "ackd-%.10s", c->cs->name);
	thread_name(name);
	c->next_commit = now_ms() + COMMIT_INTERVAL_MS;
	while (!atomic_load(&c->stopping)) {
		int64_t now;
		int timeout = IDLE_WAKE_MS;

		health_beat(&c->health);
		poll_kafka(c);
		take_finished(c);
		run_controls(c);
		now = now_ms();
		dispatch(c, now);
		if (c->next_wake >= 0 && c->next_wake - now < timeout)
			timeout = c->next_wake <= now ? 0 : (int)(c->next_wake - now);
		if (c->refill)
			timeout = 0;
		atomic_store(&c->stat_in_flight, c->in_flight);
		webhook_poll(c->wh, c->wake.rd, timeout);
		wakeup_drain(&c->wake);
		webhook_collect(c->wh, on_answer, c);
		if (now_ms() >= c->next_commit) {
			commit(c, false);
			c->next_commit = now_ms() + COMMIT_INTERVAL_MS;
		}
	}
	release(c, NULL, false, "stop");
	refuse_controls(c);
	rd_kafka_consumer_close(c->rk);
	return NULL;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	log_msg(level <= 3 ? LOG_LVL_ERR : level <= 4 ? LOG_LVL_WARN : LOG_LVL_DEBUG,
	    "kafka consumer: %s: %s", fac, buf);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct consumer *c = opaque;

	(void)rk;
	(void)err;
	log_warnx("subscription %s: kafka: %s", c->cs->name, reason);
}

static rd_kafka_t *new_consumer(struct consumer *c, char *err, size_t errlen)
{
	const struct conf_sub *cs = c->cs;
	rd_kafka_conf_t *kc = rd_kafka_conf_new();
	rd_kafka_t *rk;
	const char *settings[][2] = {
		{ "bootstrap.servers", c->conf->kafka.brokers },
		{ "group.id", cs->group },
		{ "client.id", "ackd" },
		{ "enable.auto.commit", "true" }, /* what commit() stored; see there */
		{ "auto.commit.interval.ms", COMMIT_INTERVAL },
		{ "enable.auto.offset.store", "false" },
		{ "enable.partition.eof", "false" },
		{ "auto.offset.reset", cs->start == CONF_START_LATEST ? "latest" : "earliest" },
		{ "partition.assignment.strategy", "cooperative-sticky" },
		/* Prefetch per partition (each has its own queue, see
		 * add_parts()). With 256 KiB each and windows of PART_WINDOW,
		 * bench/webhook's drains of 16 partitions peaked at 77-87 MiB;
		 * 1 MiB each, with windows twice as deep, took them to 122-131
		 * MiB (docs/performance.md, "a resumed partition waited for
		 * librdkafka's fetcher"). */
		{ "queued.max.messages.kbytes", "256" },
		/* That bound counts values only, so empty or small ones are held
		 * to a count too. A count limit once stalled every partition:
		 * that was when all their queues were forwarded to one and it
		 * was compared with that one's length. */
		{ "queued.min.messages", "2000" },
		/* Over that bound, librdkafka waits fetch.queue.backoff.ms (1000 by
		 * default) before it fetches again; batches empty the queue in a few
		 * ms, and a second's wait then idles the endpoint (docs/performance.md,
		 * "Batched delivery"). */
		{ "fetch.queue.backoff.ms", "20" },
		/* librdkafka has one fetch out per broker. When the partitions in
		 * it are all caught up, the broker holds it fetch.wait.max.ms (500
		 * by default), and a partition that was paused or over that bound
		 * and now has data waits behind it: a 0.5 s pause between two
		 * POSTs in about a quarter of bench/webhook's batched drains. */
		{ "fetch.wait.max.ms", "100" },
		{ "log.queue", "false" },
		{ "enable.metrics.push", "false" }, /* see producer.c */
	};

	for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
		if (rd_kafka_conf_set(kc, settings[i][0], settings[i][1], err, errlen) !=
		    RD_KAFKA_CONF_OK)
			goto fail;
	}
	if (conf_apply_rdkafka(kc, &c->conf->kafka.consumer, err, errlen) < 0)
		goto fail;
	rd_kafka_conf_set_opaque(kc, c);
	rd_kafka_conf_set_rebalance_cb(kc, on_rebalance);
	rd_kafka_conf_set_offset_commit_cb(kc, on_commit);
	rd_kafka_conf_set_error_cb(kc, on_error);
	rd_kafka_conf_set_log_cb(kc, on_log);
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, errlen);
	if (!rk)
		goto fail;
	return rk;
fail:
	rd_kafka_conf_destroy(kc);
	return NULL;
}

int consumer_start(const struct conf *conf, const struct conf_sub *cs, struct spool *sp,
    struct producer *prod, struct consumer **out, char *err, size_t errlen)
{
	struct consumer *c = xcalloc(1, sizeof(*c));
	rd_kafka_topic_partition_list_t *topics = NULL;
	rd_kafka_resp_err_t kerr;
	char url[512];

	c->conf = conf;
	c->cs = cs;
	c->sp = sp;
	c->prod = prod;
	c->refs = 1;
	c->cmds_tail = &c->cmds;
	atomic_store(&c->op_paused, control_pause_saved(conf->spool.dir, cs->name));
	c->rnd = (uint32_t)wall_ms() | 1;
	pthread_mutex_init(&c->lock, NULL);
	if (wakeup_open(&c->wake) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	c->wh = webhook_new(cs, err, errlen);
	if (!c->wh)
		goto fail;
	pace_init(&c->pace, cs->rate_limit, cs->concurrency == CONF_CONCURRENCY_ADAPTIVE,
	    cs->max_in_flight, now_ms());
	atomic_store(&c->stat_window, pace_window(&c->pace));
	c->rk = new_consumer(c, err, errlen);
	if (!c->rk)
		goto fail;
	rd_kafka_poll_set_consumer(c->rk);
	c->queue = rd_kafka_queue_get_consumer(c->rk);
	rd_kafka_queue_io_event_enable(c->queue, c->wake.wr, "c", 1);
	topics = rd_kafka_topic_partition_list_new((int)cs->topics.n);
	for (size_t i = 0; i < cs->topics.n; i++)
		rd_kafka_topic_partition_list_add(topics, cs->topics.v[i], RD_KAFKA_PARTITION_UA);
	kerr = rd_kafka_subscribe(c->rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (kerr) {
		snprintf(err, errlen, "subscribe: %s", rd_kafka_err2str(kerr));
		goto fail;
	}
	c->metrics = metrics_sub_new();
	health_register(&c->health, cs->name, MAX_QUIET_MS);
	if (pthread_create(&c->thread, NULL, consumer_loop, c) != 0) {
		health_unregister(&c->health);
		metrics_sub_free(c->metrics);
		snprintf(err, errlen, "cannot start the subscription thread");
		goto fail;
	}
	webhook_url_redact(cs->url[0] ? cs->url : "http://localhost/", url, sizeof(url));
	log_info("subscription %s: consuming %zu topics in group %s for %s%s", cs->name,
	    cs->topics.n, cs->group, url, cs->unix_socket[0] ? " over a unix socket" : "");
	if (atomic_load(&c->op_paused))
		log_info("subscription %s: paused by an operator (a pause file in %s/paused); "
		    "POST /v1/subscriptions/%s/resume to deliver again", cs->name, conf->spool.dir,
		    cs->name);
	*out = c;
	return 0;
fail:
	if (c->queue)
		rd_kafka_queue_destroy(c->queue);
	if (c->rk)
		rd_kafka_destroy(c->rk);
	webhook_free(c->wh);
	wakeup_close(&c->wake);
	pthread_mutex_destroy(&c->lock);
	free(c);
	return -1;
}

void consumer_stop(struct consumer *c)
{
	if (!c)
		return;
	atomic_store(&c->stopping, true);
	wakeup_signal(&c->wake);
	pthread_join(c->thread, NULL);
	refuse_controls(c); /* queued after the thread's last look */
	redrive_stop(c->redrive); /* its dead letters in hand become durable and committed */
	c->redrive = NULL;
	health_unregister(&c->health);
	rd_kafka_queue_io_event_enable(c->queue, -1, NULL, 0);
	rd_kafka_queue_destroy(c->queue);
	rd_kafka_destroy(c->rk);
	webhook_free(c->wh);
	free_orphans(c);
	free(c->keys.v);
	free(c->gather.m);
	free(c->wms);
	free(c->hdrs);
	metrics_sub_free(c->metrics);
	free(c->lag);
	c->lag = NULL;
	c->nlag = 0;
	/* Dead letters still out hold references; the last one frees c. */
	unref(c);
}

const char *consumer_name(const struct consumer *c) { return c->cs->name; }

void consumer_stats(struct consumer *c, struct consumer_stats *out)
{
	out->delivered = atomic_load(&c->delivered);
	out->retries = atomic_load(&c->retries);
	out->dead_lettered = atomic_load(&c->dead_lettered);
	out->dropped = atomic_load(&c->dropped);
	out->dead_letter_errors = atomic_load(&c->dlq_errors);
	out->send_errors = atomic_load(&c->send_errors);
	out->in_flight = atomic_load(&c->stat_in_flight);
	out->retrying = atomic_load(&c->retrying);
	out->assigned = atomic_load(&c->assigned);
	out->paused_partitions = atomic_load(&c->paused_parts);
	out->paused_gone = c->gone;
	out->paused_operator = atomic_load(&c->op_paused);
	out->concurrency_limit = atomic_load(&c->stat_window);
	out->rate_limit = (uint64_t)c->cs->rate_limit;
}
