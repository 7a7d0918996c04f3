/*
 * status: gathers a metrics_sources snapshot from the modules' *_stats()
 * and hands it to metrics.c to render.
 *
 * Threads: request threads call the getters; main.c changes the list of
 * subscriptions under status_lock_subs(), so a scrape never reads a
 * subscription that is being stopped.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "health.h"
#include "idem.h"
#include "metrics.h"
#include "producer.h"
#include "spool.h"
#include "status.h"
#include "topics.h"
#include "util.h"

#define MAX_LAG_ROWS 4096

static struct spool *spool;
static struct producer *producer;
static struct topics *topics;
static struct idem *idem;
static int64_t start_ms;

static atomic_bool stopping;
static pthread_mutex_t subs_lock = PTHREAD_MUTEX_INITIALIZER;
static struct consumer *const *subs;
static size_t nsubs;

void status_init(struct spool *sp, struct producer *prod, struct topics *t, struct idem *keys)
{
	spool = sp;
	producer = prod;
	topics = t;
	idem = keys;
	start_ms = wall_ms();
}

void status_stopping(void) { atomic_store(&stopping, true); }

void status_lock_subs(void) { pthread_mutex_lock(&subs_lock); }

void status_set_subs(struct consumer *const *list, size_t n)
{
	subs = list;
	nsubs = n;
}

void status_unlock_subs(void) { pthread_mutex_unlock(&subs_lock); }

/* Everything a snapshot holds; the sources point into it. */
struct snapshot {
	struct spool_stats spool;
	struct producer_stats producer;
	struct idem_stats idem;
	struct metrics_sub_source *subs;
	struct consumer_lag *lag;
	struct metrics_lag *mlag;
	struct metrics_process process;
	struct metrics_sources src;
};

/* Take a snapshot; caller holds subs_lock until done with it. */
static void take(struct snapshot *s)
{
	size_t nlag = 0;
	json_t *reasons;
	char why[256];

	memset(s, 0, sizeof(*s));
	spool_stats(spool, &s->spool);
	producer_stats(producer, &s->producer);
	s->producer.brokers_up = topics_brokers(topics);
	s->subs = xcalloc(nsubs + 1, sizeof(*s->subs));
	s->lag = xcalloc(MAX_LAG_ROWS, sizeof(*s->lag));
	s->mlag = xcalloc(MAX_LAG_ROWS, sizeof(*s->mlag));
	for (size_t i = 0; i < nsubs; i++) {
		struct metrics_sub_source *ss = &s->subs[s->src.nsubs];
		size_t n;

		if (!subs[i])
			continue; /* failed to start at reload */
		s->src.nsubs++;
		n = consumer_lag(subs[i], s->lag + nlag, MAX_LAG_ROWS - nlag);

		ss->name = consumer_name(subs[i]);
		consumer_stats(subs[i], &ss->stats);
		ss->events = consumer_metrics(subs[i]);
		ss->lag = s->mlag + nlag;
		ss->nlag = n;
		for (size_t j = 0; j < n; j++) {
			s->mlag[nlag + j].topic = s->lag[nlag + j].topic;
			s->mlag[nlag + j].partition = s->lag[nlag + j].partition;
			s->mlag[nlag + j].lag = s->lag[nlag + j].lag;
		}
		nlag += n;
	}
	s->src.wall_ms = wall_ms();
	s->process.start_ms = start_ms;
	s->process.ready = status_ready(&reasons) == 0;
	json_decref(reasons);
	s->process.healthy = status_alive(why, sizeof(why)) == 0;
	s->src.process = &s->process;
	s->src.spool = &s->spool;
	s->src.producer = &s->producer;
	if (idem) {
		idem_stats(idem, &s->idem);
		s->src.idem = &s->idem;
	}
	s->src.kafka_reachable = topics_kafka_reachable(topics);
	s->src.subs = s->subs;
}

static void release(struct snapshot *s)
{
	free(s->subs);
	free(s->lag);
	free(s->mlag);
}

bool status_is_stopping(void) { return atomic_load(&stopping); }

int status_control(const char *name, struct control_cmd *cmd)
{
	int rc = -1;

	/* Under the lock: a subscription stopped at reload answers what it was given. */
	pthread_mutex_lock(&subs_lock);
	for (size_t i = 0; i < nsubs; i++) {
		if (subs[i] && strcmp(consumer_name(subs[i]), name) == 0) {
			consumer_control(subs[i], cmd);
			rc = 0;
			break;
		}
	}
	pthread_mutex_unlock(&subs_lock);
	return rc;
}

json_t *status_subscriptions(void)
{
	json_t *list = json_array();

	pthread_mutex_lock(&subs_lock);
	for (size_t i = 0; i < nsubs; i++)
		if (subs[i])
			json_array_append_new(list, consumer_describe(subs[i]));
	pthread_mutex_unlock(&subs_lock);
	return json_pack("{s:o}", "subscriptions", list);
}

char *status_metrics(size_t *len)
{
	struct snapshot s;
	char *text;

	pthread_mutex_lock(&subs_lock);
	take(&s);
	text = metrics_render(&s.src, len);
	pthread_mutex_unlock(&subs_lock);
	release(&s);
	return text;
}

json_t *status_json(void)
{
	struct snapshot s;
	json_t *doc;

	pthread_mutex_lock(&subs_lock);
	take(&s);
	doc = metrics_status_json(&s.src);
	pthread_mutex_unlock(&subs_lock);
	release(&s);
	return doc;
}

int status_ready(json_t **reasons)
{
	char why[512];

	*reasons = json_array();
	if (atomic_load(&stopping)) {
		/* The modules below are being stopped: do not read them. */
		json_array_append_new(*reasons, json_string("ackd is shutting down"));
		return -1;
	}
	if (spool_writable(spool, why, sizeof(why)) < 0)
		json_array_append_new(*reasons, json_string(why));
	if (topics_kafka_refused(topics, why, sizeof(why)))
		json_array_append_new(*reasons, json_sprintf("kafka refused the login: %s", why));
	else if (!topics_kafka_reachable(topics))
		json_array_append_new(*reasons,
		    json_string("kafka did not answer a metadata request in the last 15 s"));
	if (status_alive(why, sizeof(why)) < 0)
		json_array_append_new(*reasons, json_string(why));
	return json_array_size(*reasons) ? -1 : 0;
}

int status_alive(char *why, size_t len)
{
	char stale[200];

	if (health_check(stale, sizeof(stale)) == 0)
		return 0;
	snprintf(why, len, "loops not turning: %s", stale);
	return -1;
}
