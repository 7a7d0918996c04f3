/*
 * producer: the kafka loop.
 *
 * Design. The spool is the queue; this module only keeps a window of it in
 * librdkafka's memory. One thread owns the librdkafka handle and loops:
 *
 *   1. fill the window: records to produce again (timed out earlier) first,
 *      then new ones read from the spool in sequence order;
 *   2. serve delivery reports (rd_kafka_poll): success acknowledges the record
 *      in the spool, a permanent rejection moves it to failed/, a timeout
 *      queues it to be produced again;
 *      Kafka refuses a whole record batch when it is too large or holds a bad
 *      record, so such a rejection is only believed for a record produced
 *      alone: the others are produced again one at a time (produce_suspect);
 *   3. answer waiting publish requests whose records all have a verdict, or
 *      whose deadline passed;
 *   4. sleep in poll(2) on a pipe that the spool's commit hook, librdkafka's
 *      queue and producer_stop() write to.
 *
 * A fatal error (the idempotent producer's, when Kafka's sequence numbers can
 * no longer be trusted) destroys the producer, builds a new one and reads the
 * spool again from its oldest unacknowledged record: nothing is lost, and only
 * records that Kafka had written without our seeing the ack are duplicated.
 *
 * Threads: everything here runs on the kafka loop except producer_wait(),
 * producer_kick() and producer_stats(), which any thread may call. Waiters are
 * shared with request threads under p->lock; counters are atomics.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <librdkafka/rdkafka.h>

#include "health.h"
#include "log.h"
#include "metrics.h"
#include "idem.h"
#include "producer.h"
#include "reconcile.h"
#include "spool.h"
#include "util.h"

/* The window: what librdkafka holds in memory at most. */
#define WINDOW_RECORDS 50000
#define WINDOW_BYTES (32u << 20)
#define IDLE_WAKE_MS 100
#define ORPHANS 4096 /* verdicts kept for waiters that register late */
#define MAX_QUIET_MS 30000 /* a rebuild, or a flush at stop, may take a while */
#define LINGER_MAX_RECORDS 10000 /* so many unsent records go at once */

/* A partition librdkafka does not know (partition_may_exist()). */
#define NEWPART_TOPICS 16          /* topics remembered at once */
#define NEWPART_ASK_MS 1000        /* Kafka asked at most so often per topic */
#define NEWPART_ASK_TIMEOUT_MS 500
#define NEWPART_SILENT_ASK_MS 5000 /* while Kafka does not answer: asked so often */
#define NEWPART_SILENT_TIMEOUT_MS 3000 /* and given so long from the first silence on */
#define NEWPART_GRACE_MS 10000     /* Kafka's "no such partition" believed after this long */
#define NEWPART_FORGET_MS 2000     /* an episode ends when refusals stop this long */

struct waiter_slot {
	uint64_t first_seq;
	uint64_t end_seq; /* first_seq + n */
	struct producer_waiter *w; /* NULL once answered */
};

/*
 * A verdict that came before its waiter: the spool hands records to the
 * producer as soon as they are durable, possibly before the request that
 * wrote them has registered. Indexed by seq % ORPHANS.
 */
struct orphan {
	uint64_t seq; /* 0: empty (sequences start at 1) */
	struct producer_result r;
};

struct seq_stack {
	uint64_t *v;
	size_t n, cap;
};

/* A topic some of whose records librdkafka refused for an unknown partition. */
struct newpart {
	char topic[256];  /* "": a free entry */
	int64_t last;     /* the latest refusal */
	int64_t asked;    /* when Kafka was last asked; 0: not yet in this episode */
	int timeout_ms;   /* what a question waits: longer once one went unanswered */
	bool silent;      /* the last question went unanswered */
	int partitions;   /* Kafka's last answer; -1: none yet */
	int64_t no_since; /* since when that answer has refused a record; 0: not yet */
};

struct producer {
	struct health_loop health;
	const struct conf *conf;
	struct spool *sp;
	struct idem *idem; /* told each delivery; NULL: none */
	rd_kafka_t *rk;
	rd_kafka_queue_t *mainq;
	pthread_t thread;
	struct wakeup wake;
	atomic_bool stopping;
	int flush_ms;

	/* Kafka loop only. */
	uint64_t cursor;          /* next spool sequence to read */
	size_t in_flight;
	size_t in_flight_bytes;
	struct spool_rec *held;   /* read, refused by a full librdkafka queue */
	struct seq_stack again;   /* timed out: produce once more */
	struct seq_stack suspects; /* in a batch Kafka refused: produce again alone */
	struct seq_stack refile;  /* rejected, spool_fail() out of memory: file again */
	struct seq_stack refile_err; /* and the rejection, one per refile entry */
	bool solo;                /* one suspect is in flight, alone */
	uint64_t solo_seq;
	bool fatal;               /* set by the error callback */
	int64_t linger_since;     /* when unsent records nobody waits for were first seen; 0: none */
	bool rebuilding;          /* ignore delivery reports of the old handle */
	struct newpart newpart[NEWPART_TOPICS];

	/* Waiters, sorted by first_seq; answered ones are tombstones. */
	pthread_mutex_t lock;
	struct waiter_slot *slots;
	size_t overlapping; /* live slots whose waiter may overlap another's (w->overlaps) */
	size_t head, tail, cap;
	bool closed; /* stopping: producer_wait answers at once */
	struct orphan orphans[ORPHANS];

	atomic_uint_fast64_t delivered, failed, requeued, possible_dups, rebuilds;
	atomic_uint_fast64_t in_flight_pub;
	atomic_int brokers_up;
	/*
	 * While the loop keeps records back (linger_left()): the spool end at
	 * which a commit wakes it again; a new waiter wakes it at once. 0: not
	 * lingering, every commit wakes it.
	 */
	atomic_uint_fast64_t linger_wake_seq;
};

/* --- waiters ------------------------------------------------------------ */

static void trim_head(struct producer *p);

/* Verdicts that arrived before s registered. Caller holds p->lock. */
static void adopt_orphans(struct producer *p, struct waiter_slot *s)
{
	for (uint64_t seq = s->first_seq; seq < s->end_seq; seq++) {
		struct orphan *o = &p->orphans[seq % ORPHANS];
		if (o->seq != seq)
			continue;
		s->w->results[seq - s->first_seq] = o->r;
		s->w->pending--;
		o->seq = 0;
	}
}

void producer_wait(struct producer *p, struct producer_waiter *w)
{
	struct waiter_slot *s;
	size_t i;

	w->pending = w->n;
	pthread_mutex_lock(&p->lock);
	if (p->closed) {
		pthread_mutex_unlock(&p->lock);
		w->done(w);
		return;
	}
	if (p->tail == p->cap) {
		/* Squeeze out tombstones, then grow if still full. */
		size_t live = 0;
		for (i = p->head; i < p->tail; i++)
			if (p->slots[i].w)
				p->slots[live++] = p->slots[i];
		p->head = 0;
		p->tail = live;
		if (p->tail == p->cap) {
			size_t cap = p->cap ? p->cap * 2 : 1024;
			p->slots = xrealloc(p->slots, cap * sizeof(*p->slots));
			p->cap = cap;
		}
	}
	/* Batches commit in sequence order, so this is nearly always the end. */
	i = p->tail;
	while (i > p->head && p->slots[i - 1].first_seq > w->first_seq)
		i--;
	memmove(&p->slots[i + 1], &p->slots[i], (p->tail - i) * sizeof(*p->slots));
	s = &p->slots[i];
	s->first_seq = w->first_seq;
	s->end_seq = w->first_seq + w->n;
	s->w = w;
	p->tail++;
	p->overlapping += w->overlaps;
	adopt_orphans(p, s);
	if (w->pending == 0) {
		p->overlapping -= w->overlaps;
		s->w = NULL;
		trim_head(p);
		pthread_mutex_unlock(&p->lock);
		w->done(w);
		return;
	}
	pthread_mutex_unlock(&p->lock);
	if (atomic_load(&p->linger_wake_seq))
		wakeup_signal(&p->wake); /* its records go now */
}

/* Whether a request (or a dead letter) waits for Kafka. */
static bool anyone_waits(struct producer *p)
{
	bool waits;

	pthread_mutex_lock(&p->lock);
	waits = p->head < p->tail; /* trim_head() leaves head on a live slot */
	pthread_mutex_unlock(&p->lock);
	return waits;
}

/* The slot holding seq, or NULL. Caller holds p->lock. */
static struct waiter_slot *find_slot(struct producer *p, uint64_t seq)
{
	size_t lo = p->head, hi = p->tail;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (p->slots[mid].end_seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < p->tail && p->slots[lo].first_seq <= seq && p->slots[lo].w)
		return &p->slots[lo];
	return NULL;
}

static void trim_head(struct producer *p)
{
	while (p->head < p->tail && p->slots[p->head].w == NULL)
		p->head++;
	if (p->head == p->tail)
		p->head = p->tail = 0;
}

/*
 * Fill r for slot s's waiter; true when that was its last pending verdict
 * (then the slot is emptied and the caller calls done). Caller holds p->lock.
 */
static bool fill_slot(struct producer *p, struct waiter_slot *s, uint64_t seq,
    const struct producer_result *res)
{
	struct producer_result *r = &s->w->results[seq - s->first_seq];

	if (r->outcome != PRODUCER_PENDING)
		return false;
	*r = *res;
	if (--s->w->pending > 0)
		return false;
	p->overlapping -= s->w->overlaps;
	s->w = NULL;
	return true;
}

static void set_result(struct producer *p, uint64_t seq, enum producer_outcome outcome,
    int32_t partition, int64_t offset, rd_kafka_resp_err_t err)
{
	const struct producer_result res = { .outcome = outcome, .partition = partition,
		.offset = offset, .kafka_err = err, .error = err ? rd_kafka_err2str(err) : NULL };
	struct producer_waiter *done[16];
	struct waiter_slot *s;
	size_t ndone;
	bool more;

	do {
		ndone = 0;
		more = false;
		pthread_mutex_lock(&p->lock);
		if (p->overlapping) {
			/*
			 * An Idempotency-Key replay waits for records another waiter
			 * (its first request) may wait for too: the ranges overlap and
			 * are no longer sorted by their ends, so every live slot is
			 * looked at (a few thousand at most, only while a replay waits).
			 */
			bool found = false;
			for (size_t i = p->head; i < p->tail && !more; i++) {
				s = &p->slots[i];
				if (!s->w || seq < s->first_seq || seq >= s->end_seq)
					continue;
				found = true;
				if (ndone == sizeof(done) / sizeof(done[0]))
					more = true; /* answer these first, then look again */
				else if (s->w->results[seq - s->first_seq].outcome == PRODUCER_PENDING) {
					struct producer_waiter *w = s->w;
					if (fill_slot(p, s, seq, &res))
						done[ndone++] = w;
				}
			}
			if (!found)
				p->orphans[seq % ORPHANS] = (struct orphan){ seq, res };
		} else if ((s = find_slot(p, seq))) {
			struct producer_waiter *w = s->w;
			if (fill_slot(p, s, seq, &res))
				done[ndone++] = w;
		} else {
			p->orphans[seq % ORPHANS] = (struct orphan){ seq, res };
		}
		trim_head(p);
		pthread_mutex_unlock(&p->lock);
		for (size_t k = 0; k < ndone; k++)
			done[k]->done(done[k]);
	} while (more);
}

/* Answer waiters whose deadline passed (all of them when all is set). */
/*
 * Answer waiters whose deadline passed (all of them when all is set); returns
 * the nearest deadline left, -1 for none. Deadlines do not follow the
 * sequence (a dead letter waits longer than a publish), so every live waiter
 * is looked at; they are the requests open right now, a few thousand at most.
 */
static int64_t expire_waiters(struct producer *p, int64_t now, bool all)
{
	struct producer_waiter *expired[64];
	int64_t next;
	size_t n;

	do {
		n = 0;
		next = -1;
		pthread_mutex_lock(&p->lock);
		for (size_t i = p->head; i < p->tail; i++) {
			struct producer_waiter *w = p->slots[i].w;
			if (!w)
				continue;
			if (all || w->deadline_ms <= now) {
				if (n == sizeof(expired) / sizeof(expired[0]))
					break; /* answer these first, then look again */
				expired[n++] = w;
				p->overlapping -= w->overlaps;
				p->slots[i].w = NULL;
			} else if (next < 0 || w->deadline_ms < next) {
				next = w->deadline_ms;
			}
		}
		trim_head(p);
		pthread_mutex_unlock(&p->lock);
		for (size_t k = 0; k < n; k++)
			expired[k]->done(expired[k]);
	} while (n == sizeof(expired) / sizeof(expired[0]));
	return next;
}

/* --- librdkafka callbacks (run inside rd_kafka_poll on the kafka loop) --- */

/* Errors after which producing the record again cannot succeed. */
static bool is_permanent(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
	case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
	case RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION:
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
	case RD_KAFKA_RESP_ERR_POLICY_VIOLATION:
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
	case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
		return true;
	default:
		return false;
	}
}

/*
 * Errors Kafka gives a whole record batch for one record in it (too large,
 * invalid record or timestamp): the batch's other records may be fine.
 */
static bool is_batch_rejection(rd_kafka_resp_err_t err)
{
	switch (err) {
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_INVALID_RECORD:
	case RD_KAFKA_RESP_ERR_INVALID_TIMESTAMP:
		return true;
	default:
		return false;
	}
}

static void push_seq(struct seq_stack *s, uint64_t seq)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = seq;
}

/*
 * File a record refused for good (by Kafka, by librdkafka, or unsent by
 * produce()) into failed/ (now, or by the spool's own retry). An unfiled
 * dead letter (spool_batch_set_unfiled()) is deleted instead: an earlier
 * dead letter of its message is kept (filed, or still in the spool), the
 * message stays uncommitted, and the consumer, told below, tries the
 * endpoint again; each retry filing another copy grew failed/ without end.
 * topic: for the log, or NULL. False when the spool had no memory for it:
 * nothing was done and the caller keeps the record for refile_due().
 */
static bool file_rejected(struct producer *p, uint64_t seq, const char *topic,
    rd_kafka_resp_err_t err)
{
	const char *reason = rd_kafka_err2str(err);
	enum spool_fail_rc rc = spool_fail(p->sp, seq, reason);

	if (rc == SPOOL_FAIL_NOMEM)
		return false;
	atomic_fetch_add(&p->failed, 1);
	metrics_produce_error(METRICS_PRODUCE_REJECTED);
	/*
	 * reason is librdkafka's text for err: "Broker: ..." is one of Kafka's
	 * codes, though librdkafka refuses a record over message.max.bytes
	 * itself with one, and produce() files a topic name no topic can have
	 * unsent with another (after a warning).
	 */
	if (rc == SPOOL_FAIL_DELETED)
		log_warnx("producer: dead letter %llu%s%s rejected permanently (%s); deleted, not "
		    "filed: an earlier one of the same message is kept", (unsigned long long)seq,
		    topic ? " to " : "", topic ? topic : "", reason);
	else
		log_warnx("producer: record %llu%s%s rejected permanently (%s); %s",
		    (unsigned long long)seq, topic ? " to " : "", topic ? topic : "", reason,
		    rc == SPOOL_FAIL_FILED ? "moved to failed/" :
		    "kept in the spool until failed/ can take it");
	if (p->idem)
		idem_failed(p->idem, seq, err); /* before the answer: a replay never gets a 2xx */
	set_result(p, seq, PRODUCER_FAILED, -1, -1, err);
	return true;
}

/* A record refused for good: filed (or deleted), or kept for refile_due(). */
static void reject(struct producer *p, uint64_t seq, const char *topic, rd_kafka_resp_err_t err)
{
	if (file_rejected(p, seq, topic, err))
		return;
	log_warnx("producer: record %llu%s%s rejected (%s) and cannot be filed now (out of "
	    "memory); keeping it in the spool, trying again", (unsigned long long)seq,
	    topic ? " to " : "", topic ? topic : "", rd_kafka_err2str(err));
	push_seq(&p->refile, seq);
	push_seq(&p->refile_err, (uint64_t)(int64_t)err);
}

/* Once per round: file the rejected records the spool could not take yet. */
static void refile_due(struct producer *p)
{
	while (p->refile.n > 0) {
		uint64_t seq = p->refile.v[p->refile.n - 1];
		rd_kafka_resp_err_t err = (rd_kafka_resp_err_t)(int64_t)p->refile_err.v[p->refile.n - 1];
		if (!file_rejected(p, seq, NULL, err))
			return;
		p->refile.n--;
		p->refile_err.n--;
	}
}

/* A record's sequence is its librdkafka opaque; configure refuses smaller pointers. */
_Static_assert(sizeof(uintptr_t) >= sizeof(uint64_t), "a spool sequence fits a pointer");

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
	struct producer *p = opaque;
	uint64_t seq = (uint64_t)(uintptr_t)m->_private;
	bool alone = p->solo && p->solo_seq == seq;

	(void)rk;
	p->in_flight--;
	p->in_flight_bytes -= m->len + m->key_len;
	if (p->rebuilding)
		return;
	if (alone)
		p->solo = false;
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		/* From accept (the record's CreateTime) to ack; else from produce() on. */
		rd_kafka_timestamp_type_t tstype;
		int64_t accepted = rd_kafka_message_timestamp(m, &tstype);
		if (tstype == RD_KAFKA_TIMESTAMP_CREATE_TIME && accepted > 0) {
			metrics_produce_ack((double)(wall_ms() - accepted) / 1000.0);
		} else {
			int64_t produced_us = rd_kafka_message_latency(m);
			if (produced_us >= 0)
				metrics_produce_ack((double)produced_us / 1e6);
		}
		char id[SPOOL_KEY_ID_LEN];
		if (p->idem && idem_delivered_id(p->idem, seq, m->partition, m->offset, id))
			/* Keyed: a restart must not produce it again, and keeps its offset. */
			spool_ack_keyed(p->sp, seq, id, m->partition, m->offset);
		else
			spool_ack(p->sp, seq);
		atomic_fetch_add(&p->delivered, 1);
		atomic_store(&p->brokers_up, 1);
		set_result(p, seq, PRODUCER_DELIVERED, m->partition, m->offset, 0);
		return;
	}
	if (is_batch_rejection(m->err) && !alone) {
		log_debug("producer: record %llu to %s was in a batch kafka refused (%s); "
		    "producing it again alone", (unsigned long long)seq,
		    rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
		push_seq(&p->suspects, seq);
		return;
	}
	if (m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
		/*
		 * Partitioned when the topic's metadata arrived, which did not have
		 * the record's partition: produce() decides, with Kafka asked again
		 * (partition_may_exist()).
		 */
		push_seq(&p->again, seq);
		return;
	}
	if (is_permanent(m->err)) {
		reject(p, seq, rd_kafka_topic_name(m->rkt), m->err);
		return;
	}
	/* Timed out, or lost with a fatal error: produce it again from the spool. */
	if (rd_kafka_message_status(m) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED)
		atomic_fetch_add(&p->possible_dups, 1);
	atomic_fetch_add(&p->requeued, 1);
	metrics_produce_error(METRICS_PRODUCE_TIMEOUT);
	log_debug("producer: record %llu to %s not acknowledged (%s); producing it again",
	    (unsigned long long)seq, rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
	push_seq(&p->again, seq);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct producer *p = opaque;
	char why[512];

	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		rd_kafka_fatal_error(rk, why, sizeof(why));
		log_warnx("kafka: fatal producer error: %s", why);
		metrics_produce_error(METRICS_PRODUCE_FATAL);
		p->fatal = true;
		return;
	}
	if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN)
		atomic_store(&p->brokers_up, 0);
	log_warnx("kafka: %s", reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	enum log_level l = level <= 3 ? LOG_LVL_ERR : level <= 4 ? LOG_LVL_WARN :
	    level <= 6 ? LOG_LVL_INFO : LOG_LVL_DEBUG;

	(void)rk;
	/* librdkafka's notices are chatty; they go to debug. */
	if (l == LOG_LVL_INFO)
		l = LOG_LVL_DEBUG;
	log_msg(l, "kafka: %s: %s", fac, buf);
}

/* --- the librdkafka handle ------------------------------------------------ */

static MUST_USE int set(rd_kafka_conf_t *kc, const char *name, const char *value, char *err,
    size_t errlen)
{
	if (rd_kafka_conf_set(kc, name, value, err, errlen) != RD_KAFKA_CONF_OK)
		return -1;
	return 0;
}

/*
 * librdkafka's message.max.bytes for ackd's producer: above any record the
 * spool holds (SPOOL_REC_MAX_PAYLOAD; Kafka's framing of one is at most a
 * few dozen bytes more). librdkafka refuses a larger record itself, before
 * sending it, with Kafka's "Message size too large": at its default of
 * 1,000,000 that filed to failed/ records Kafka never saw and might have
 * taken. Whether a record fits is the topic's max.message.bytes to say;
 * requests stay within batch.size.
 */
#define MAX_MESSAGE_BYTES (SPOOL_REC_MAX_PAYLOAD + 1024u)

/*
 * librdkafka's socket callback, opening the socket as its own does
 * (close-on-exec). The producer's broker threads send the produce requests
 * and read Kafka's acknowledgements, on an ack=kafka answer's path: each
 * asks here, as it opens its first connection, for the slice ackd's own
 * threads there ask for (publish.slice_us, thread_slice()). An
 * on_thread_start interceptor would ask at the thread's start, but
 * librdkafka before 2.13 frees a conf's interceptors twice when
 * rd_kafka_new() fails, which a rebuild can meet.
 */
static int open_socket(int domain, int type, int protocol, void *opaque)
{
	const struct producer *p = opaque;

	thread_slice("kafka broker thread", p->conf->publish.slice_us);
	return socket(domain, type | SOCK_CLOEXEC, protocol);
}

static rd_kafka_t *new_handle(struct producer *p, char *err, size_t errlen)
{
	rd_kafka_conf_t *kc = rd_kafka_conf_new();
	char max_bytes[16];
	rd_kafka_t *rk;

	snprintf(max_bytes, sizeof(max_bytes), "%u", MAX_MESSAGE_BYTES);

	if (set(kc, "bootstrap.servers", p->conf->kafka.brokers, err, errlen) < 0 ||
	    set(kc, "enable.idempotence", "true", err, errlen) < 0 ||
	    set(kc, "acks", "all", err, errlen) < 0 ||
	    /*
	     * No linger, at most two requests in flight per broker: a record
	     * goes out at once when the connection is idle, and while two
	     * requests are out the records wait in librdkafka's queues, so
	     * requests grow with the load. (librdkafka sleeps its linger in
	     * whole milliseconds: linger.ms=0.5 cost every ack=kafka publish
	     * over 1 ms, four times its round trip alone.)
	     */
	    set(kc, "linger.ms", "0", err, errlen) < 0 ||
	    set(kc, "max.in.flight.requests.per.connection", "2", err, errlen) < 0 ||
	    set(kc, "batch.num.messages", "10000", err, errlen) < 0 ||
	    set(kc, "queue.buffering.max.messages", "200000", err, errlen) < 0 ||
	    set(kc, "partitioner", "murmur2_random", err, errlen) < 0 ||
	    /*
	     * Records without a key go to one partition of their topic; the
	     * first such record more than 5 ms after the last pick picks again
	     * at random (maybe the same one), and so does one whose partition
	     * has no leader. The Java client's sticky partitioner does much the
	     * same, switching when a batch is full. librdkafka ties this to
	     * linger.ms (twice it), so with no linger each such record went to
	     * a partition picked at random, and a burst became one small request
	     * per partition (librdkafka puts one partition in each produce
	     * request).
	     */
	    set(kc, "sticky.partitioning.linger.ms", "5", err, errlen) < 0 ||
	    set(kc, "message.max.bytes", max_bytes, err, errlen) < 0 ||
	    set(kc, "log.queue", "false", err, errlen) < 0 ||
	    /* A topic is created by its owner, never by a record naming it. */
	    set(kc, "allow.auto.create.topics", "false", err, errlen) < 0 ||
	    /* librdkafka 2.8.0 waits up to 1 s in rd_kafka_destroy() for a last
	     * push of client metrics (KIP-714); ackd has metrics of its own. */
	    set(kc, "enable.metrics.push", "false", err, errlen) < 0 ||
	    conf_apply_rdkafka(kc, &p->conf->kafka.producer, err, errlen) < 0) {
		rd_kafka_conf_destroy(kc);
		return NULL;
	}
	rd_kafka_conf_set_opaque(kc, p);
	rd_kafka_conf_set_dr_msg_cb(kc, on_delivery);
	rd_kafka_conf_set_error_cb(kc, on_error);
	rd_kafka_conf_set_log_cb(kc, on_log);
	rd_kafka_conf_set_socket_cb(kc, open_socket);
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, errlen);
	if (!rk) {
		rd_kafka_conf_destroy(kc);
		return NULL;
	}
	p->mainq = rd_kafka_queue_get_main(rk);
	rd_kafka_queue_io_event_enable(p->mainq, p->wake.wr, "q", 1);
	return rk;
}

static void destroy_handle(struct producer *p)
{
	if (!p->rk)
		return;
	rd_kafka_queue_io_event_enable(p->mainq, -1, NULL, 0);
	rd_kafka_queue_destroy(p->mainq);
	rd_kafka_destroy(p->rk);
	p->rk = NULL;
	p->mainq = NULL;
}

/* Throw the handle away and read the spool again from its oldest record. */
static void rebuild(struct producer *p)
{
	char err[512];

	atomic_fetch_add(&p->rebuilds, 1);
	log_warnx("producer: rebuilding the producer; unacknowledged records are produced again "
	    "from the spool");
	p->rebuilding = true;
	rd_kafka_purge(p->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
	rd_kafka_poll(p->rk, 0);
	destroy_handle(p);
	p->rebuilding = false;
	p->fatal = false;
	p->in_flight = 0;
	p->in_flight_bytes = 0;
	p->again.n = 0;
	p->suspects.n = 0;
	p->refile.n = 0; /* produced again from the spool, rejected again */
	p->refile_err.n = 0;
	p->solo = false;
	spool_rec_free(p->held);
	p->held = NULL;
	p->cursor = 0;
	spool_rewind(p->sp);
	while (!(p->rk = new_handle(p, err, sizeof(err)))) {
		/* The configuration was accepted before; this is a resource problem. */
		log_errx("producer: cannot create a new producer: %s; retrying in 1s", err);
		health_beat(&p->health);
		sleep(1);
	}
}

/* --- producing ------------------------------------------------------------- */

enum produce_res { PRODUCED, QUEUE_FULL, REJECTED, FATAL };

/*
 * Kafka's partition count of topic, asked now and given timeout_ms; the
 * answer also updates the handle's metadata. 0 when the topic does not exist
 * (or ackd may not see it), -1 when Kafka did not answer.
 */
static int partitions_now(struct producer *p, const char *topic, int timeout_ms)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	int n = -1;

	if (!rkt)
		return -1;
	err = rd_kafka_metadata(p->rk, 0, rkt, &md, timeout_ms);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
		switch (md->topics[0].err) {
		case RD_KAFKA_RESP_ERR_NO_ERROR:
			n = md->topics[0].partition_cnt;
			break;
		case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
		case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
			n = 0;
			break;
		default:
			break; /* a leader election, say: no answer yet */
		}
	}
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}

/*
 * topic's entry: its episode, or a new one when its refusals stopped for
 * NEWPART_FORGET_MS, in place of the least recently refused entry if needed.
 */
static struct newpart *newpart_of(struct producer *p, const char *topic, int64_t now)
{
	struct newpart *e = &p->newpart[0];

	for (size_t i = 0; i < NEWPART_TOPICS; i++) {
		struct newpart *c = &p->newpart[i];
		if (c->topic[0] && strcmp(c->topic, topic) == 0) {
			if (now - c->last <= NEWPART_FORGET_MS)
				return c;
			e = c;
			break;
		}
		if (c->last < e->last)
			e = c;
	}
	snprintf(e->topic, sizeof(e->topic), "%s", topic);
	e->last = now;
	e->asked = 0;
	e->timeout_ms = NEWPART_ASK_TIMEOUT_MS;
	e->silent = false;
	e->partitions = -1;
	e->no_since = 0;
	return e;
}

/* Ask Kafka about e's topic when due, and say what changed. */
static void newpart_ask(struct producer *p, struct newpart *e, int32_t partition, int64_t now)
{
	int n;

	if (e->asked != 0 && now - e->asked < (e->silent ? NEWPART_SILENT_ASK_MS : NEWPART_ASK_MS))
		return;
	e->asked = now;
	n = partitions_now(p, e->topic, e->timeout_ms);
	if (n < 0) {
		if (!e->silent)
			log_warnx("producer: topic %s: partition %d is not in the producer's metadata, "
			    "and Kafka did not answer within %d ms; holding the record, asking again "
			    "every %d s", e->topic, (int)partition, e->timeout_ms,
			    NEWPART_SILENT_ASK_MS / 1000);
		e->silent = true;
		e->timeout_ms = NEWPART_SILENT_TIMEOUT_MS; /* for the rest of the episode */
		return;
	}
	e->silent = false;
	if (n == e->partitions)
		return; /* said already */
	e->partitions = n;
	e->no_since = 0; /* news: the grace starts again */
	if (partition < n)
		log_warnx("producer: topic %s: partition %d is not in the producer's metadata; "
		    "Kafka says the topic has %d partitions: producing the record again",
		    e->topic, (int)partition, n);
	else
		log_warnx("producer: topic %s: Kafka says the topic has %d partitions, so none "
		    "numbered %d; records for it are refused once it has said so for %d s",
		    e->topic, n, (int)partition, NEWPART_GRACE_MS / 1000);
}

/*
 * librdkafka refused a record for a partition its metadata of the topic does
 * not have. Partitions can be added, and the handle refreshes its metadata
 * only every few minutes (topic.metadata.refresh.interval.ms), while
 * publishing asks Kafka again about a partition beyond its cache's count: a
 * record accepted for a new partition must not be filed into failed/. So
 * Kafka is asked (at most once a second per topic; the answer updates the
 * handle). Whether to hold the record and produce it again: yes until Kafka
 * has answered, while it has the partition (librdkafka then takes it), and
 * while its last question went unanswered; no once Kafka's answers have said
 * for NEWPART_GRACE_MS that the topic has no such partition (its brokers
 * learn of new partitions one by one).
 */
static bool partition_may_exist(struct producer *p, const char *topic, int32_t partition)
{
	struct newpart *e;
	int64_t now;

	if (partition < 0)
		return false; /* the partitioner's pick: not a partition added since */
	e = newpart_of(p, topic, now_ms());
	newpart_ask(p, e, partition, now_ms());
	now = now_ms(); /* the question may have waited */
	e->last = now;
	if (e->partitions < 0 || partition < e->partitions || e->silent)
		return true;
	if (e->no_since == 0)
		e->no_since = now;
	return now - e->no_since < NEWPART_GRACE_MS;
}

static MUST_USE enum produce_res produce(struct producer *p, const struct spool_rec *r)
{
	const struct spool_msg *m = &r->msg;
	rd_kafka_headers_t *hdrs;
	char topic[256];
	rd_kafka_resp_err_t err;

	if (m->topic_len == 0 || m->topic_len >= sizeof(topic) ||
	    memchr(m->topic, '\0', m->topic_len)) {
		/*
		 * No topic has such a name (empty, 256 bytes or more, or a NUL, at
		 * which librdkafka would cut it and send the record to another
		 * topic). Publishing checks names, so only a spool written by hand
		 * holds one; Kafka would refuse it as invalid, and so does ackd.
		 */
		log_warnx("producer: record %llu names no possible topic (%zu bytes%s); not sent",
		    (unsigned long long)r->seq, m->topic_len,
		    m->topic_len && memchr(m->topic, '\0', m->topic_len) ? ", a NUL in them" : "");
		reject(p, r->seq, NULL, RD_KAFKA_RESP_ERR_TOPIC_EXCEPTION); /* no name */
		return REJECTED;
	}
	memcpy(topic, m->topic, m->topic_len);
	topic[m->topic_len] = '\0';
	hdrs = rd_kafka_headers_new(m->nhdrs);
	for (size_t i = 0; i < m->nhdrs; i++) {
		err = rd_kafka_header_add(hdrs, m->hdrs[i].name, (ssize_t)m->hdrs[i].name_len,
		    m->hdrs[i].value, (ssize_t)m->hdrs[i].value_len);
		if (err) {
			/* Only a read-only list refuses: never send the record without it. */
			log_warnx("producer: record %llu: cannot add header %zu: %s; holding it",
			    (unsigned long long)r->seq, i, rd_kafka_err2str(err));
			rd_kafka_headers_destroy(hdrs);
			return QUEUE_FULL;
		}
	}

	err = rd_kafka_producev(p->rk,
	    RD_KAFKA_V_TOPIC(topic),
	    RD_KAFKA_V_PARTITION(m->partition < 0 ? RD_KAFKA_PARTITION_UA : m->partition),
	    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
	    RD_KAFKA_V_KEY(m->key, m->key ? m->key_len : 0),
	    RD_KAFKA_V_VALUE((void *)m->value, m->value_len),
	    RD_KAFKA_V_TIMESTAMP(m->timestamp_ms),
	    RD_KAFKA_V_HEADERS(hdrs),
	    RD_KAFKA_V_OPAQUE((void *)(uintptr_t)r->seq),
	    RD_KAFKA_V_END);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
		p->in_flight++;
		p->in_flight_bytes += m->value_len + m->key_len;
		return PRODUCED;
	}
	rd_kafka_headers_destroy(hdrs);
	if (err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION &&
	    partition_may_exist(p, topic, m->partition))
		return QUEUE_FULL; /* held, and produced again in a few ms */
	if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
		metrics_produce_error(METRICS_PRODUCE_QUEUE_FULL);
		return QUEUE_FULL;
	}
	if (err == RD_KAFKA_RESP_ERR__FATAL) {
		p->fatal = true;
		return FATAL;
	}
	if (is_permanent(err)) {
		reject(p, r->seq, topic, err);
		return REJECTED;
	}
	/* Anything else is transient: keep the record for the next round. */
	log_debug("producer: record %llu to %s: %s; holding it", (unsigned long long)r->seq, topic,
	    rd_kafka_err2str(err));
	return QUEUE_FULL;
}

static struct spool_rec *next_record(struct producer *p)
{
	struct spool_rec *r = p->held;

	if (r) {
		p->held = NULL;
		return r;
	}
	while (p->again.n > 0) {
		uint64_t seq = p->again.v[p->again.n - 1];
		int rc = spool_get(p->sp, seq, &r);
		if (rc < 0)
			return NULL; /* not readable now: keep it, try again next round */
		p->again.n--;
		if (rc == 1)
			return r;
	}
	if (spool_next(p->sp, &p->cursor, &r) == 1)
		return r;
	return NULL;
}

/*
 * A record of a batch Kafka refused, produced again with nothing else in
 * librdkafka's queue, so that it travels in a batch of its own and Kafka's
 * verdict is about this record alone. Nothing else is produced meanwhile.
 */
static void produce_suspect(struct producer *p)
{
	struct spool_rec *r = NULL;

	while (!p->solo && p->in_flight == 0 && !p->fatal && p->suspects.n > 0) {
		uint64_t seq = p->suspects.v[p->suspects.n - 1];
		int rc = spool_get(p->sp, seq, &r);
		if (rc < 0)
			return; /* not readable now: keep it, try again next round */
		if (rc == 0) {
			p->suspects.n--; /* acknowledged or failed meanwhile */
			continue;
		}
		switch (produce(p, r)) {
		case PRODUCED:
			p->suspects.n--;
			p->solo = true;
			p->solo_seq = seq;
			break;
		case REJECTED:
			p->suspects.n--;
			break;
		case QUEUE_FULL:
		case FATAL:
			break;
		}
		spool_rec_free(r);
		return;
	}
}

/* Returns true when it produced everything there was to read. */
static bool fill_window(struct producer *p)
{
	refile_due(p);
	if (p->solo || p->suspects.n > 0) {
		produce_suspect(p);
		return false;
	}
	while (!p->fatal && p->in_flight < WINDOW_RECORDS && p->in_flight_bytes < WINDOW_BYTES) {
		struct spool_rec *r = next_record(p);
		if (!r)
			return true;
		switch (produce(p, r)) {
		case PRODUCED:
		case REJECTED:
			spool_rec_free(r);
			break;
		case QUEUE_FULL:
		case FATAL:
			p->held = r;
			return false;
		}
	}
	return false;
}

/*
 * Milliseconds to keep the spool's newest records back before producing them,
 * so that records published with ack=spool go to Kafka in fewer, larger
 * requests (publish.spool_linger_ms); 0: produce now. Nothing is kept back
 * while anyone waits for Kafka's answer, while records are due again, or
 * once LINGER_MAX_RECORDS are unsent. Kafka loop.
 */
static int linger_left(struct producer *p, int64_t now)
{
	int64_t linger = p->conf->publish.spool_linger_ms, left;
	uint64_t end = spool_end_seq(p->sp);

	atomic_store(&p->linger_wake_seq, 0);
	if (end <= p->cursor) {
		p->linger_since = 0; /* all produced: the next record starts a linger */
		return 0;
	}
	/* Kept from the first unsent record until a fill produces all there is
	 * (kafka_loop()): what a full window leaves is due at once. */
	if (p->linger_since == 0)
		p->linger_since = now;
	left = p->linger_since + linger - now;
	if (left <= 0 || p->held || p->again.n > 0 || p->suspects.n > 0 || p->fatal ||
	    end - p->cursor >= LINGER_MAX_RECORDS || anyone_waits(p))
		return 0;
	atomic_store(&p->linger_wake_seq, p->cursor + LINGER_MAX_RECORDS);
	/* A waiter that registers from here on wakes the loop; one before, this sees. */
	if (anyone_waits(p)) {
		atomic_store(&p->linger_wake_seq, 0);
		return 0;
	}
	return (int)left;
}

/* While the start-up check waits: the heartbeat, and waiters whose deadline passed. */
static void check_tick(void *arg)
{
	struct producer *p = arg;

	health_beat(&p->health);
	expire_waiters(p, now_ms(), false);
	if (p->rk)
		rd_kafka_poll(p->rk, 0);
}

static void *kafka_loop(void *arg)
{
	struct producer *p = arg;
	struct pollfd pfd = { .fd = p->wake.rd, .events = POLLIN };
	bool checked;

	thread_name("ackd-kafka");
	thread_slice("ackd-kafka", p->conf->publish.slice_us);
	/* Keyed records Kafka may hold already are looked for before anything is sent. */
	reconcile_run(p->conf, p->sp, p->idem, check_tick, p, &p->stopping);
	/* A stop may have cut the check short: then nothing recovered may go. */
	checked = !atomic_load(&p->stopping);
	while (!atomic_load(&p->stopping)) {
		int64_t now, deadline;
		int timeout = IDLE_WAKE_MS, linger;

		health_beat(&p->health);
		linger = linger_left(p, now_ms());
		if (linger == 0 && fill_window(p))
			p->linger_since = 0; /* all produced: the next record starts a linger */
		rd_kafka_poll(p->rk, 0);
		if (p->fatal)
			rebuild(p);
		now = now_ms();
		deadline = expire_waiters(p, now, false);
		if (deadline >= 0 && deadline - now < timeout)
			timeout = deadline - now < 0 ? 0 : (int)(deadline - now);
		if (linger > 0 && linger < timeout)
			timeout = linger;
		if (linger > 0 && (p->again.n > 0 || p->suspects.n > 0))
			timeout = 0; /* due again (delivery reports just now): no linger */
		if (p->held && timeout > 5)
			timeout = 5; /* librdkafka's queue was full: look again soon */
		atomic_store(&p->in_flight_pub, p->in_flight);
		if (poll(&pfd, 1, timeout) > 0)
			wakeup_drain(&p->wake);
	}

	/* Stopping: answer everyone, then give Kafka flush_ms to ack what it has. */
	pthread_mutex_lock(&p->lock);
	p->closed = true;
	pthread_mutex_unlock(&p->lock);
	expire_waiters(p, 0, true);
	if (checked && !p->fatal)
		(void)fill_window(p); /* what was kept back for publish.spool_linger_ms */
	if (p->in_flight > 0) {
		log_info("producer: waiting up to %d ms for %zu records in flight", p->flush_ms,
		    p->in_flight);
		rd_kafka_flush(p->rk, p->flush_ms);
		rd_kafka_poll(p->rk, 0);
	}
	if (p->in_flight > 0)
		log_warnx("producer: %zu records not acknowledged at stop; they stay in the spool",
		    p->in_flight);
	return NULL;
}

static void commit_hook(void *arg)
{
	struct producer *p = arg;
	uint64_t wake_at = atomic_load(&p->linger_wake_seq);

	/* Lingering, the loop wakes by itself when the time is up. */
	if (wake_at == 0 || spool_end_seq(p->sp) >= wake_at)
		wakeup_signal(&p->wake);
}

int producer_start(const struct conf *conf, struct spool *sp, struct idem *idem,
    struct producer **out, char *err, size_t errlen)
{
	struct producer *p = xcalloc(1, sizeof(*p));

	p->conf = conf;
	p->sp = sp;
	p->idem = idem;
	pthread_mutex_init(&p->lock, NULL);
	if (wakeup_open(&p->wake) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		goto fail;
	}
	p->rk = new_handle(p, err, errlen);
	if (!p->rk)
		goto fail;
	spool_set_commit_hook(sp, commit_hook, p);
	health_register(&p->health, "kafka loop", MAX_QUIET_MS);
	if (pthread_create(&p->thread, NULL, kafka_loop, p) != 0) {
		snprintf(err, errlen, "cannot start the kafka loop thread");
		health_unregister(&p->health);
		spool_set_commit_hook(sp, NULL, NULL);
		goto fail;
	}
	*out = p;
	return 0;
fail:
	destroy_handle(p);
	wakeup_close(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
	return -1;
}

void producer_stop(struct producer *p, int flush_ms)
{
	if (!p)
		return;
	p->flush_ms = flush_ms;
	atomic_store(&p->stopping, true);
	wakeup_signal(&p->wake);
	pthread_join(p->thread, NULL);
	health_unregister(&p->health);
	spool_set_commit_hook(p->sp, NULL, NULL);
	destroy_handle(p);
	spool_rec_free(p->held);
	free(p->again.v);
	free(p->suspects.v);
	free(p->refile.v);
	free(p->refile_err.v);
	free(p->slots);
	wakeup_close(&p->wake);
	pthread_mutex_destroy(&p->lock);
	free(p);
}

void producer_kick(struct producer *p) { wakeup_signal(&p->wake); }

void producer_stats(struct producer *p, struct producer_stats *out)
{
	out->in_flight = atomic_load(&p->in_flight_pub);
	out->delivered = atomic_load(&p->delivered);
	out->failed = atomic_load(&p->failed);
	out->requeued = atomic_load(&p->requeued);
	out->possible_duplicates = atomic_load(&p->possible_dups);
	out->rebuilds = atomic_load(&p->rebuilds);
	out->brokers_up = atomic_load(&p->brokers_up);
}
