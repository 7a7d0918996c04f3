/*
 * topics: a metadata cache with one thread of its own.
 *
 * Design. Lookups are a hash-free linear cache: a sidecar publishes to a
 * handful of topics, so a small array under a mutex is the simplest thing
 * that is fast enough. A topic Kafka says exists stays known (its partition
 * count is refreshed every REFRESH_MS); known topics are bounded by the
 * cluster. A missing one is asked again after MISSING_TTL_MS, so a topic
 * created later is soon accepted; any publisher can name unknown topics, so
 * at most TOPICS_MAX_UNKNOWN of them are kept and the least recently used
 * one makes room for the next (the cache never stops caching). The handle
 * never lets a metadata request create a topic (allow.auto.create.topics is
 * false whatever kafka.producer says), so probing a name leaves the cluster
 * as it was even on brokers with auto.create.topics.enable=true. Queries are
 * served by the topics thread with a metadata-only librdkafka handle of its
 * own, so a slow or unreachable Kafka never blocks a request thread or the
 * producer's loop. When a topic is first seen, its replication factor and
 * min.insync.replicas are checked and a warning is logged once if acks=all
 * cannot protect it (replication factor < 3 or min.insync.replicas < 2).
 *
 * When Kafka refuses the login (SASL authentication or the TLS handshake
 * fails), librdkafka's error events say so; they are read after each failed
 * metadata call, and until a metadata call succeeds again lookups answer
 * TOPIC_UNREACHABLE at once, so a publish with ack=spool does not wait for
 * a metadata call that cannot succeed, and /readyz gives the reason.
 *
 * Threads: topics_lookup() and topics_query() from request threads; the rest
 * on the topics thread.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>

#include "health.h"
#include "log.h"
#include "topics.h"
#include "util.h"

#define QUERY_TIMEOUT_MS 3000
#define MISSING_TTL_MS 2000
#define UNREACHABLE_TTL_MS 5000
#define POLL_SLICE_MS 100
#define METADATA_FIRST_MS 500 /* then QUERY_TIMEOUT_MS: see metadata() */
#define PROBE_MS 5000 /* how often the cluster is asked for its brokers */
#define MAX_QUIET_MS 30000 /* a few metadata calls of QUERY_TIMEOUT_MS in a row */
#define REFRESH_MS 60000

struct topic {
	char *name;
	enum topic_state state;
	int partitions;
	int64_t checked_ms;
	uint64_t used;        /* cache clock at the last lookup or answer: LRU */
	bool checked_safety;
	bool rechecking;      /* asked again (topic_cache_recheck()), no answer yet */
};

/* The cache proper: no lock, no I/O (topics.h). */
struct topic_cache {
	struct topic *v;
	size_t n, cap;
	size_t unknown;       /* entries not TOPIC_EXISTS */
	size_t max_unknown;
	uint64_t clock;
};

struct query {
	struct query *next;
	char *topic;
	topics_cb *cb;
	void *arg;
};

struct topics {
	struct health_loop health;
	rd_kafka_t *rk;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	struct query *queries; /* FIFO by appending at the tail */
	struct query **queries_tail;
	struct topic_cache *cache;
	atomic_llong reached_ms; /* last successful metadata answer */
	atomic_llong unreachable_until_ms; /* a query timed out: do not wait until then */
	atomic_int brokers;                /* in the last metadata answer */
	atomic_bool refused;               /* Kafka refused the login since the last answer */
	char refusal[512];                 /* librdkafka's reason; under lock */
};

/* --- the cache -------------------------------------------------------------- */

struct topic_cache *topic_cache_new(size_t max_unknown)
{
	struct topic_cache *c = xcalloc(1, sizeof(*c));

	c->max_unknown = max_unknown ? max_unknown : 1;
	return c;
}

void topic_cache_free(struct topic_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i].name);
	free(c->v);
	free(c);
}

static struct topic *find(struct topic_cache *c, const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->v[i].name, name) == 0)
			return &c->v[i];
	return NULL;
}

/* Drop the least recently used entry that is not a known topic. */
static void evict_unknown(struct topic_cache *c)
{
	size_t victim = c->n;

	for (size_t i = 0; i < c->n; i++)
		if (c->v[i].state != TOPIC_EXISTS &&
		    (victim == c->n || c->v[i].used < c->v[victim].used))
			victim = i;
	if (victim == c->n)
		return;
	free(c->v[victim].name);
	c->v[victim] = c->v[--c->n];
	c->unknown--;
}

enum topic_state topic_cache_get(struct topic_cache *c, const char *name, int64_t now,
    int *partitions)
{
	struct topic *e = find(c, name);

	if (!e)
		return TOPIC_UNKNOWN;
	e->used = ++c->clock;
	*partitions = e->partitions;
	if (e->state == TOPIC_EXISTS ||
	    (e->state == TOPIC_MISSING && now - e->checked_ms < MISSING_TTL_MS))
		return e->state;
	return TOPIC_UNKNOWN;
}

bool topic_cache_recheck(struct topic_cache *c, const char *name, int64_t now)
{
	struct topic *e = find(c, name);

	if (!e || e->state != TOPIC_EXISTS || e->rechecking ||
	    now - e->checked_ms < TOPICS_RECHECK_MS)
		return false;
	e->checked_ms = now;
	e->rechecking = true;
	return true;
}

int topic_cache_put(struct topic_cache *c, const char *name, enum topic_state st,
    int partitions, int64_t now)
{
	struct topic *e = find(c, name);
	int first_seen = 0;

	if (e)
		e->rechecking = false; /* answered, or not: it may be asked again */
	if (st != TOPIC_EXISTS && st != TOPIC_MISSING)
		return 0; /* no answer: nothing learnt */
	if (!e) {
		if (st != TOPIC_EXISTS && c->unknown >= c->max_unknown)
			evict_unknown(c);
		if (c->n == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 16;
			c->v = xrealloc(c->v, c->cap * sizeof(*c->v));
		}
		e = &c->v[c->n++];
		memset(e, 0, sizeof(*e));
		e->name = xstrdup(name);
		e->state = TOPIC_MISSING; /* counted as unknown until it exists */
		c->unknown++;
	}
	if (e->state != TOPIC_EXISTS && st == TOPIC_EXISTS)
		c->unknown--;
	else if (e->state == TOPIC_EXISTS && st != TOPIC_EXISTS)
		c->unknown++;
	e->state = st;
	e->partitions = partitions;
	e->checked_ms = now;
	e->used = ++c->clock;
	if (st == TOPIC_EXISTS && !e->checked_safety) {
		e->checked_safety = true;
		first_seen = 1;
	}
	/* A topic deleted since: unknown again, and bounded with the rest. */
	if (c->unknown > c->max_unknown)
		evict_unknown(c);
	return first_seen;
}

size_t topic_cache_size(const struct topic_cache *c, size_t *unknown)
{
	if (unknown)
		*unknown = c->unknown;
	return c->n;
}

size_t topic_cache_known(const struct topic_cache *c, char (*names)[256], size_t max)
{
	size_t k = 0;

	for (size_t i = 0; i < c->n && k < max; i++)
		if (c->v[i].state == TOPIC_EXISTS)
			snprintf(names[k++], sizeof(names[0]), "%s", c->v[i].name);
	return k;
}

/* --- lookups and queries -------------------------------------------------- */

enum topic_state topics_lookup(struct topics *t, const char *topic, int *partitions)
{
	enum topic_state st;
	int64_t now = now_ms();

	pthread_mutex_lock(&t->lock);
	st = topic_cache_get(t->cache, topic, now, partitions);
	pthread_mutex_unlock(&t->lock);
	if (st == TOPIC_UNKNOWN &&
	    (now < atomic_load(&t->unreachable_until_ms) || atomic_load(&t->refused)))
		st = TOPIC_UNREACHABLE;
	return st;
}

void topics_query(struct topics *t, const char *topic, topics_cb *cb, void *arg)
{
	struct query *q = xcalloc(1, sizeof(*q));

	q->topic = xstrdup(topic);
	q->cb = cb;
	q->arg = arg;
	pthread_mutex_lock(&t->lock);
	if (t->stopping) {
		pthread_mutex_unlock(&t->lock);
		free(q->topic);
		free(q);
		cb(arg, TOPIC_UNKNOWN, 0);
		return;
	}
	*t->queries_tail = q;
	t->queries_tail = &q->next;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
}

bool topics_recheck(struct topics *t, const char *topic)
{
	int64_t now = now_ms();
	bool due;

	/* Kafka did not answer lately: asking would only wait, and queue up. */
	if (now < atomic_load(&t->unreachable_until_ms) || atomic_load(&t->refused))
		return false;
	pthread_mutex_lock(&t->lock);
	due = topic_cache_recheck(t->cache, topic, now);
	pthread_mutex_unlock(&t->lock);
	return due;
}

int topics_kafka_reachable(struct topics *t)
{
	long long reached = atomic_load(&t->reached_ms);

	return reached > 0 && now_ms() - reached < 3 * PROBE_MS;
}

int topics_kafka_refused(struct topics *t, char *why, size_t len)
{
	if (!atomic_load(&t->refused))
		return 0;
	pthread_mutex_lock(&t->lock);
	snprintf(why, len, "%s", t->refusal);
	pthread_mutex_unlock(&t->lock);
	return 1;
}

/* --- the topics thread ---------------------------------------------------- */

static bool stopping(struct topics *t)
{
	bool s;

	pthread_mutex_lock(&t->lock);
	s = t->stopping;
	pthread_mutex_unlock(&t->lock);
	return s;
}

/* Kafka answered: a refused login is over. */
static void answered(struct topics *t)
{
	atomic_store(&t->reached_ms, now_ms());
	if (atomic_exchange(&t->refused, false))
		log_info("kafka accepts the login again");
}

/*
 * rd_kafka_metadata(), first for METADATA_FIRST_MS, then, unless Kafka
 * refused the login meanwhile, once more for QUERY_TIMEOUT_MS (a slow Kafka
 * still gets its full time). In between librdkafka's error events are read:
 * the error callback runs only from rd_kafka_poll().
 */
static rd_kafka_resp_err_t metadata(struct topics *t, rd_kafka_topic_t *rkt,
    const struct rd_kafka_metadata **md)
{
	rd_kafka_resp_err_t err = rd_kafka_metadata(t->rk, 0, rkt, md, METADATA_FIRST_MS);

	rd_kafka_poll(t->rk, 0);
	if (err != RD_KAFKA_RESP_ERR__TIMED_OUT || atomic_load(&t->refused) || stopping(t))
		return err;
	err = rd_kafka_metadata(t->rk, 0, rkt, md, QUERY_TIMEOUT_MS);
	rd_kafka_poll(t->rk, 0);
	return err;
}

/*
 * Whether an error event says Kafka refused the login. A failed SASL login
 * and a failed TLS handshake on ackd's side have codes of their own; a
 * broker that rejects ackd's client certificate ends the TLS session with an
 * alert, which librdkafka reports as a receive failure with OpenSSL's words.
 */
static bool login_refused(int err, const char *reason)
{
	return err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR__SSL ||
	    (err == RD_KAFKA_RESP_ERR__TRANSPORT && strstr(reason, "SSL routines") &&
	        strstr(reason, "alert"));
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	struct topics *t = opaque;

	(void)rk;
	if (!login_refused(err, reason))
		return;
	pthread_mutex_lock(&t->lock);
	snprintf(t->refusal, sizeof(t->refusal), "%s", reason);
	pthread_mutex_unlock(&t->lock);
	if (!atomic_exchange(&t->refused, true))
		log_errx("kafka refused the login: %s; publishes are spooled, and ackd "
		    "retries until Kafka accepts it (check the kafka.producer and "
		    "kafka.consumer security settings)", reason);
}

/* min.insync.replicas of topic, or -1 when Kafka does not say. */
static int min_insync(struct topics *t, const char *topic)
{
	rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
	rd_kafka_queue_t *q = rd_kafka_queue_new(t->rk);
	rd_kafka_event_t *ev = NULL;
	int value = -1;

	rd_kafka_DescribeConfigs(t->rk, &res, 1, NULL, q);
	/* In slices, so that stopping does not wait for a slow answer. */
	for (int waited = 0; waited < QUERY_TIMEOUT_MS; waited += POLL_SLICE_MS) {
		ev = rd_kafka_queue_poll(q, POLL_SLICE_MS);
		if (ev || stopping(t))
			break;
	}
	if (ev && !rd_kafka_event_error(ev)) {
		const rd_kafka_DescribeConfigs_result_t *r = rd_kafka_event_DescribeConfigs_result(ev);
		size_t nres, nent;
		const rd_kafka_ConfigResource_t **rs =
		    r ? rd_kafka_DescribeConfigs_result_resources(r, &nres) : NULL;
		if (rs && nres == 1 && !rd_kafka_ConfigResource_error(rs[0])) {
			const rd_kafka_ConfigEntry_t **ents = rd_kafka_ConfigResource_configs(rs[0], &nent);
			for (size_t i = 0; i < nent; i++) {
				const char *v = rd_kafka_ConfigEntry_value(ents[i]);
				if (strcmp(rd_kafka_ConfigEntry_name(ents[i]), "min.insync.replicas") == 0 && v)
					value = atoi(v);
			}
		}
	}
	if (ev)
		rd_kafka_event_destroy(ev);
	rd_kafka_queue_destroy(q);
	rd_kafka_ConfigResource_destroy(res);
	return value;
}

static void check_safety(struct topics *t, const char *topic, int replicas)
{
	int mir = min_insync(t, topic);

	if (replicas < 3)
		log_warnx("topic %s: replication factor %d; with fewer than 3 replicas a broker "
		    "failure can lose acknowledged messages", topic, replicas);
	if (mir >= 0 && mir < 2)
		log_warnx("topic %s: min.insync.replicas=%d; acks=all then waits for a single "
		    "replica, so one broker failure can lose acknowledged messages", topic, mir);
}

static enum topic_state ask_kafka(struct topics *t, const char *topic, int *partitions,
    int *replicas)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(t->rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	enum topic_state st = TOPIC_UNREACHABLE;
	rd_kafka_resp_err_t err;

	err = metadata(t, rkt, &md);
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR && md->topic_cnt == 1) {
		const struct rd_kafka_metadata_topic *mt = &md->topics[0];
		answered(t);
		if (mt->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
			st = TOPIC_MISSING;
		} else if (mt->err == RD_KAFKA_RESP_ERR_NO_ERROR && mt->partition_cnt > 0) {
			st = TOPIC_EXISTS;
			*partitions = mt->partition_cnt;
			*replicas = mt->partitions[0].replica_cnt;
		}
	} else if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
		log_debug("topics: metadata for %s: %s", topic, rd_kafka_err2str(err));
		atomic_store(&t->unreachable_until_ms, now_ms() + UNREACHABLE_TTL_MS);
	}
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return st;
}

static void remember(struct topics *t, const char *topic, enum topic_state st, int partitions,
    bool *first_seen)
{
	pthread_mutex_lock(&t->lock);
	*first_seen = topic_cache_put(t->cache, topic, st, partitions, now_ms()) == 1;
	pthread_mutex_unlock(&t->lock);
}

static void serve(struct topics *t, struct query *q)
{
	int partitions = 0, replicas = 0;
	enum topic_state st;
	bool first_seen;

	/* Asking while Kafka refuses the login would only wait QUERY_TIMEOUT_MS. */
	if (atomic_load(&t->refused)) {
		remember(t, q->topic, TOPIC_UNREACHABLE, 0, &first_seen); /* a recheck ends */
		q->cb(q->arg, TOPIC_UNREACHABLE, 0);
		return;
	}
	st = ask_kafka(t, q->topic, &partitions, &replicas);

	remember(t, q->topic, st, partitions, &first_seen);
	q->cb(q->arg, st, partitions);
	if (first_seen)
		check_safety(t, q->topic, replicas);
}

/* Ask the cluster for its brokers: keeps reachability known without traffic. */
static void probe(struct topics *t)
{
	const struct rd_kafka_metadata *md = NULL;

	if (metadata(t, NULL, &md) == RD_KAFKA_RESP_ERR_NO_ERROR) {
		answered(t);
		atomic_store(&t->brokers, md->broker_cnt);
	} else {
		atomic_store(&t->brokers, 0);
	}
	if (md)
		rd_kafka_metadata_destroy(md);
}

int topics_brokers(struct topics *t) { return atomic_load(&t->brokers); }

/*
 * Refresh the partition counts of known topics (partitions can be added);
 * unknown ones are asked again when a request names them.
 */
static void refresh(struct topics *t)
{
	char (*names)[256];
	size_t n, cap;

	pthread_mutex_lock(&t->lock);
	cap = topic_cache_size(t->cache, NULL);
	names = xcalloc(cap ? cap : 1, sizeof(*names));
	n = topic_cache_known(t->cache, names, cap);
	pthread_mutex_unlock(&t->lock);
	for (size_t i = 0; i < n && !stopping(t); i++) {
		int partitions = 0, replicas = 0;
		enum topic_state st;
		bool first_seen;

		health_beat(&t->health);
		st = ask_kafka(t, names[i], &partitions, &replicas);
		remember(t, names[i], st, partitions, &first_seen);
	}
	free(names);
}

static void *topics_loop(void *arg)
{
	struct topics *t = arg;
	int64_t next_refresh = now_ms() + REFRESH_MS, next_probe = 0;

	thread_name("ackd-topics");
	pthread_mutex_lock(&t->lock);
	while (!t->stopping) {
		struct query *q = t->queries;
		health_beat(&t->health);
		if (!q) {
			struct timespec ts;
			ts = clock_now(CLOCK_REALTIME);
			ts.tv_sec += 1;
			if (now_ms() >= next_probe) {
				pthread_mutex_unlock(&t->lock);
				probe(t);
				next_probe = now_ms() + PROBE_MS;
				pthread_mutex_lock(&t->lock);
				continue;
			}
			pthread_cond_timedwait(&t->cond, &t->lock, &ts);
			if (now_ms() >= next_refresh) {
				pthread_mutex_unlock(&t->lock);
				refresh(t);
				next_refresh = now_ms() + REFRESH_MS;
				pthread_mutex_lock(&t->lock);
			}
			continue;
		}
		t->queries = q->next;
		if (!t->queries)
			t->queries_tail = &t->queries;
		pthread_mutex_unlock(&t->lock);
		serve(t, q);
		free(q->topic);
		free(q);
		pthread_mutex_lock(&t->lock);
	}
	pthread_mutex_unlock(&t->lock);
	return NULL;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	(void)rk;
	log_msg(level <= 3 ? LOG_LVL_WARN : LOG_LVL_DEBUG, "kafka metadata: %s: %s", fac, buf);
}

int topics_start(const struct conf *conf, struct topics **out, char *err, size_t errlen)
{
	struct topics *t = xcalloc(1, sizeof(*t));
	rd_kafka_conf_t *kc = rd_kafka_conf_new();

	pthread_mutex_init(&t->lock, NULL);
	pthread_cond_init(&t->cond, NULL);
	t->queries_tail = &t->queries;
	t->cache = topic_cache_new(TOPICS_MAX_UNKNOWN);
	/*
	 * Asking about a topic must never create it: set after the user's list.
	 * No client metrics (KIP-714): librdkafka 2.8.0 waits up to 1 s in
	 * rd_kafka_destroy() for their last push.
	 */
	if (rd_kafka_conf_set(kc, "bootstrap.servers", conf->kafka.brokers, err, errlen) !=
	        RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(kc, "enable.metrics.push", "false", err, errlen) !=
	        RD_KAFKA_CONF_OK ||
	    conf_apply_rdkafka(kc, &conf->kafka.producer, err, errlen) < 0 ||
	    rd_kafka_conf_set(kc, "allow.auto.create.topics", "false", err, errlen) !=
	        RD_KAFKA_CONF_OK) {
		rd_kafka_conf_destroy(kc);
		goto fail;
	}
	rd_kafka_conf_set_log_cb(kc, on_log);
	rd_kafka_conf_set_error_cb(kc, on_error);
	rd_kafka_conf_set_opaque(kc, t);
	t->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, errlen);
	if (!t->rk) {
		rd_kafka_conf_destroy(kc);
		goto fail;
	}
	health_register(&t->health, "topics", MAX_QUIET_MS);
	if (pthread_create(&t->thread, NULL, topics_loop, t) != 0) {
		health_unregister(&t->health);
		snprintf(err, errlen, "cannot start the topics thread");
		goto fail;
	}
	*out = t;
	return 0;
fail:
	if (t->rk)
		rd_kafka_destroy(t->rk);
	topic_cache_free(t->cache);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
	return -1;
}

void topics_stop(struct topics *t)
{
	struct query *q, *next;

	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	t->stopping = true;
	q = t->queries;
	t->queries = NULL;
	t->queries_tail = &t->queries;
	pthread_cond_signal(&t->cond);
	pthread_mutex_unlock(&t->lock);
	for (; q; q = next) {
		next = q->next;
		q->cb(q->arg, TOPIC_UNKNOWN, 0);
		free(q->topic);
		free(q);
	}
	pthread_join(t->thread, NULL);
	health_unregister(&t->health);
	rd_kafka_destroy(t->rk);
	topic_cache_free(t->cache);
	pthread_cond_destroy(&t->cond);
	pthread_mutex_destroy(&t->lock);
	free(t);
}
