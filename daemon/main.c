/*
 * main: command line, start-up and shutdown order.
 *
 * Start-up: configuration, the spool (recovered before anything listens), the
 * topics cache, the producer (which replays what the spool holds), the
 * listeners, then the subscriptions. Shutdown reverses it so that nothing
 * accepted is dropped: stop accepting, let subscriptions finish their
 * requests and commit what completed, answer waiting requests, give Kafka a
 * bounded time to ack what is in flight, close the spool. Whatever Kafka did
 * not ack stays in the spool for the next start.
 *
 * Threads: the main thread only waits for signals. Every other thread is
 * started with SIGTERM, SIGINT and SIGHUP blocked, so sigwait() here is the
 * one place they arrive.
 */
#include "config.h"

#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <librdkafka/rdkafka.h>

#include "conf.h"
#include "consumer.h"
#include "devkafka.h"
#include "health.h"
#include "http.h"
#include "idem.h"
#include "log.h"
#include "producer.h"
#include "service.h"
#include "spool.h"
#include "status.h"
#include "topics.h"
#include "util.h"

#define DEFAULT_CONF SYSCONFDIR "/ackd/ackd.conf"
#define FLUSH_MS 5000
#define DRAIN_MS 2000
#define QUIESCE_MS 10000
#define STATUS_EVERY_MS 5000

struct options {
	const char *conf_path;
	bool check_only;
	bool debug;
	bool dev;
};

static void usage(FILE *f)
{
	fprintf(f, "usage: ackd [-c FILE] [-n] [-d] [--dev] [-V]\n"
		   "  -c FILE  configuration file (default %s)\n"
		   "  -n       check the configuration and exit\n"
		   "  -d       log at debug level\n"
		   "  --dev    embedded Kafka and a temporary spool, for trying ackd\n"
		   "  -V       print the version and exit\n",
	    DEFAULT_CONF);
}

static void parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "dev", no_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:ndVh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->conf_path = optarg;
			break;
		case 'n':
			o->check_only = true;
			break;
		case 'd':
			o->debug = true;
			break;
		case 'D':
			o->dev = true;
			break;
		case 'V':
			printf("ackd %s (librdkafka %s)\n", PACKAGE_VERSION, rd_kafka_version_str());
			exit(0);
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(1);
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ackd: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		exit(1);
	}
}

static struct conf *load_or_exit(const char *path)
{
	struct conf_errors errs = { 0 };
	struct conf *conf;

	if (conf_load(path, &conf, &errs) == 0)
		return conf;
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "%s\n", errs.v[i]);
	fprintf(stderr, "ackd: %zu error%s in %s\n", errs.n, errs.n == 1 ? "" : "s", path);
	conf_errors_fini(&errs);
	exit(1);
}

static void replace(char **field, const char *value)
{
	free(*field);
	*field = xstrdup(value);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void print_dev_help(const struct conf *conf, const char *bootstrap)
{
	const char *http = conf->listen.http;

	printf("ackd --dev: embedded Kafka at %s (3 brokers, in memory, nothing kept)\n"
	       "spool: %s (removed at exit)\n\n", bootstrap, conf->spool.dir);
	if (http[0]) {
		printf("try:\n"
		       "  curl -sS -X POST --data 'hello' 'http://%s/v1/topics/demo?key=k1'\n"
		       "  curl -sS -X POST -H 'Content-Type: application/json' \\\n"
		       "    --data '{\"records\":[{\"key\":\"k1\",\"value\":{\"n\":1}},{\"value\":\"two\"}]}' \\\n"
		       "    http://%s/v1/topics/demo/records\n"
		       "  curl -sS -X POST --data 'no wait' 'http://%s/v1/topics/demo?ack=spool'\n"
		       "  curl -sS http://%s/healthz\n", http, http, http, http);
	}
	if (conf->listen.unix_path[0])
		printf("  curl -sS --unix-socket %s -X POST --data 'hi' http://ackd/v1/topics/demo\n",
		    conf->listen.unix_path);
	printf("\n");
	fflush(stdout);
}

/* Many waiting clients need many descriptors: take what the hard limit allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("setrlimit RLIMIT_NOFILE");
	}
}

static void apply_log_level(const struct conf *conf, bool debug)
{
	enum log_level level = LOG_LVL_INFO;

	if (debug)
		level = LOG_LVL_DEBUG;
	else if (log_level_parse(conf->log.level, &level) < 0)
		level = LOG_LVL_INFO;
	log_set_level(level);
}

/* What runs, for reload and shutdown. */
struct daemon {
	struct conf *conf;    /* the start-up configuration: Kafka, spool, listeners */
	struct conf **loaded; /* every configuration read; subscriptions borrow from them */
	size_t nloaded;
	struct consumer **subs;
	const struct conf_sub **sub_confs;
	size_t nsubs;
	struct spool *sp;
	struct producer *prod;
};

static void keep_conf(struct daemon *d, struct conf *conf)
{
	d->loaded = xrealloc(d->loaded, (d->nloaded + 1) * sizeof(*d->loaded));
	d->loaded[d->nloaded++] = conf;
}

static struct consumer *start_sub(struct daemon *d, const struct conf_sub *cs)
{
	struct consumer *c;
	char err[512];

	/* Kafka settings come from the start-up configuration: they need a restart. */
	if (consumer_start(d->conf, cs, d->sp, d->prod, &c, err, sizeof(err)) < 0) {
		log_warnx("subscription %s: %s", cs->name, err);
		return NULL;
	}
	return c;
}

static void start_subs(struct daemon *d)
{
	status_lock_subs();
	d->nsubs = d->conf->nsubs;
	d->subs = xcalloc(d->nsubs + 1, sizeof(*d->subs));
	d->sub_confs = xcalloc(d->nsubs + 1, sizeof(*d->sub_confs));
	for (size_t i = 0; i < d->nsubs; i++) {
		d->sub_confs[i] = &d->conf->subs[i];
		d->subs[i] = start_sub(d, d->sub_confs[i]);
		if (!d->subs[i])
			fatalx("subscription %s could not start", d->sub_confs[i]->name);
	}
	status_set_subs(d->subs, d->nsubs);
	status_unlock_subs();
}

static void stop_subs(struct daemon *d)
{
	status_lock_subs();
	status_set_subs(NULL, 0);
	for (size_t i = 0; i < d->nsubs; i++)
		consumer_stop(d->subs[i]);
	free(d->subs);
	free(d->sub_confs);
	d->subs = NULL;
	d->sub_confs = NULL;
	d->nsubs = 0;
	status_unlock_subs();
}

/* A running subscription that reload may leave alone. */
static bool keeps_running(struct consumer *c, const struct conf_sub *old,
    const struct conf_sub *next)
{
	struct consumer_stats st;

	if (!c || !conf_sub_equal(old, next))
		return false;
	consumer_stats(c, &st);
	return !st.paused_gone; /* a 410 pauses a subscription until reload */
}

/*
 * Subscriptions of next replace the running ones: unchanged ones keep
 * running, removed and changed ones stop, added and changed ones start.
 */
static void reload_subs(struct daemon *d, const struct conf *next)
{
	struct consumer **subs = xcalloc(next->nsubs + 1, sizeof(*subs));
	const struct conf_sub **confs = xcalloc(next->nsubs + 1, sizeof(*confs));

	/* Scrapes wait until the list is whole again (stops take a timeout at most). */
	status_lock_subs();

	for (size_t i = 0; i < d->nsubs; i++) {
		const struct conf_sub *old = d->sub_confs[i];
		size_t j;
		for (j = 0; j < next->nsubs; j++)
			if (strcmp(next->subs[j].name, old->name) == 0)
				break;
		if (j < next->nsubs && keeps_running(d->subs[i], old, &next->subs[j])) {
			subs[j] = d->subs[i];
			confs[j] = old;
			continue;
		}
		log_info("reload: subscription %s %s", old->name,
		    j < next->nsubs ? "changed or paused: restarting it" : "removed: stopping it");
		consumer_stop(d->subs[i]);
	}
	for (size_t j = 0; j < next->nsubs; j++) {
		if (confs[j])
			continue;
		confs[j] = &next->subs[j];
		subs[j] = start_sub(d, confs[j]);
		log_info("reload: subscription %s %s", confs[j]->name,
		    subs[j] ? "started" : "could not start; fix it and reload again");
	}
	free(d->subs);
	free(d->sub_confs);
	d->subs = subs;
	d->sub_confs = confs;
	d->nsubs = next->nsubs;
	status_set_subs(d->subs, d->nsubs);
	status_unlock_subs();
}

static void name_restart_key(const char *path, void *arg)
{
	(void)arg;
	if (strcmp(path, "subscriptions") == 0 || strncmp(path, "log", 3) == 0)
		return;
	log_warnx("reload: %s changed; it takes effect after a restart", path);
}

/* SIGHUP: subscriptions and the log level; other keys need a restart. */
static void reload(struct daemon *d, const char *path, bool debug)
{
	struct conf_errors errs = { 0 };
	struct conf *next;

	if (!path) {
		log_info("reload: no configuration file; nothing to reload");
		return;
	}
	if (conf_load(path, &next, &errs) < 0) {
		for (size_t i = 0; i < errs.n; i++)
			log_warnx("reload: %s", errs.v[i]);
		log_warnx("reload: %s has errors; keeping the running configuration", path);
		conf_errors_fini(&errs);
		return;
	}
	keep_conf(d, next);
	apply_log_level(next, debug);
	conf_diff(d->conf, next, name_restart_key, NULL);
	reload_subs(d, next);
	log_info("reload: done (%zu subscriptions, log level %s)", d->nsubs,
	    debug ? "debug" : next->log.level);
}

/*
 * Wait for SIGTERM, SIGINT or SIGHUP. Meanwhile, every tick: tell systemd the
 * spool's depth (STATUS=), and under a watchdog ping it, but only while every
 * loop of the daemon still turns: a stuck loop stops the pings and systemd
 * restarts ackd. The tick is half WatchdogSec, or STATUS_EVERY_MS without one.
 */
static int wait_signal(const sigset_t *sigs, struct spool *sp)
{
	int64_t watchdog = service_watchdog_interval_ms();
	int64_t every = watchdog ? watchdog : STATUS_EVERY_MS;
	static int64_t next_tick;
	char stale[256];

	for (;;) {
		int64_t now = now_ms(), left;
		struct spool_stats st;
		struct timespec ts;
		int sig;

		if (now >= next_tick) {
			spool_stats(sp, &st);
			service_status("running; spool: %llu records, %llu bytes",
			    (unsigned long long)st.records, (unsigned long long)st.bytes);
			if (watchdog && health_check(stale, sizeof(stale)) == 0)
				service_watchdog_ping();
			else if (watchdog)
				log_warnx("watchdog: not pinging systemd, stuck: %s", stale);
			next_tick = now + every;
		}
		left = next_tick - now_ms();
		if (left < 0)
			left = 0;
		ts.tv_sec = left / 1000;
		ts.tv_nsec = (left % 1000) * 1000000;
		sig = sigtimedwait(sigs, NULL, &ts);
		if (sig > 0)
			return sig;
	}
}

/* spool_open(): a key read back from the spool goes into the table. */
static void load_key(void *arg, uint64_t seq, const struct spool_key *k)
{
	idem_load(arg, seq, k, wall_ms());
}

/* spool_open(): a record in failed/; its key must not answer 2xx for it. */
static void load_failed(void *arg, const char *id, size_t id_len)
{
	if (idem_load_failed(arg, id, id_len) < 0)
		log_warnx("out of memory noting failed record %.*s; a replay of its "
		    "Idempotency-Key may answer 202 for it", (int)id_len, id);
}

/* spool_open(): a record copy-forward moved; its key must follow the copy. */
static void load_copy(void *arg, uint64_t seq, const char *id, size_t id_len)
{
	if (idem_load_copy(arg, seq, id, id_len) < 0)
		log_warnx("out of memory noting copied record %.*s; a replay of its "
		    "Idempotency-Key may answer 202 for it", (int)id_len, id);
}

/* spool_open(): Kafka's partition and offset of a keyed record, from before the restart. */
static void load_key_ack(void *arg, const struct spool_key_ack *a)
{
	if (idem_load_ack(arg, a->id, a->partition, a->offset) < 0)
		log_warnx("out of memory noting the offset of record %.*s; a replay of its "
		    "Idempotency-Key may answer 202 for it", SPOOL_KEY_ID_LEN, a->id);
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct conf *conf;
	struct devkafka *dk = NULL;
	struct spool *sp = NULL;
	struct topics *topics = NULL;
	struct producer *prod = NULL;
	struct http *http = NULL;
	struct idem *idem = NULL;
	struct daemon d = { 0 };
	char err[512], devdir[] = "/tmp/ackd-dev.XXXXXX";
	sigset_t sigs;
	int sig;

	parse_args(argc, argv, &o);
	if (o.check_only) {
		const char *path = o.conf_path ? o.conf_path : DEFAULT_CONF;
		conf_free(load_or_exit(path));
		printf("%s: configuration is valid\n", path);
		return 0;
	}

	/* Before any thread starts: this reads and unsets LISTEN_FDS. */
	service_listen_fds_init();
	if (o.dev) {
		if (devkafka_start(3, &dk, err, sizeof(err)) < 0)
			fatalx("--dev: %s", err);
		if (!mkdtemp(devdir))
			fatal("--dev: mkdtemp %s", devdir);
		conf = o.conf_path ? load_or_exit(o.conf_path) : conf_defaults(devkafka_bootstrap(dk));
		replace(&conf->kafka.brokers, devkafka_bootstrap(dk));
		replace(&conf->spool.dir, devdir);
		if (conf->listen.unix_path[0]) {
			char sock[sizeof(devdir) + 16];
			snprintf(sock, sizeof(sock), "%s/ackd.sock", devdir);
			replace(&conf->listen.unix_path, sock);
		}
	} else {
		conf = load_or_exit(o.conf_path ? o.conf_path : DEFAULT_CONF);
	}
	apply_log_level(conf, o.debug);
	if (conf->spool.fsync != CONF_FSYNC_ALWAYS)
		log_warnx("spool.fsync is %s: a power loss can lose messages that got a 2xx; "
		    "only \"always\" keeps that promise",
		    conf->spool.fsync == CONF_FSYNC_INTERVAL ? "interval" : "never");

	raise_fd_limit();
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx("cannot initialise libcurl");
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	idem = idem_new(conf->publish.idempotency_ttl_s * 1000,
	    (size_t)conf->publish.idempotency_max_keys);
	if (!idem)
		fatalx("out of memory for the Idempotency-Key table");
	struct spool_opts so = {
		.dir = conf->spool.dir,
		.fsync = conf->spool.fsync,
		.fsync_interval_ms = conf->spool.fsync_interval_ms,
		.max_bytes = (uint64_t)conf->spool.max_bytes,
		.prealloc = conf->spool.prealloc,
		.slice_us = conf->publish.slice_us,
		.on_key = load_key,
		.on_key_arg = idem,
		.on_failed = load_failed,
		.on_copy = load_copy,
		.on_key_ack = load_key_ack,
		.key_ttl_ms = conf->publish.idempotency_ttl_s * 1000,
	};
	if (spool_open(&so, &sp, err, sizeof(err)) < 0)
		fatalx("spool: %s", err);
	idem_load_done(idem); /* before the producer and the API start */
	if (topics_start(conf, &topics, err, sizeof(err)) < 0)
		fatalx("kafka: %s", err);
	if (producer_start(conf, sp, idem, &prod, err, sizeof(err)) < 0)
		fatalx("kafka: %s", err);
	status_init(sp, prod, topics, idem);
	struct http_deps deps = { .conf = conf, .spool = sp, .producer = prod, .topics = topics,
		.idem = idem };
	if (http_start(&deps, &http, err, sizeof(err)) < 0)
		fatalx("%s", err);
	service_unused_fds_warn();
	d.conf = conf;
	d.sp = sp;
	d.prod = prod;
	start_subs(&d);

	log_info("ackd %s started: kafka %s, spool %s", PACKAGE_VERSION, conf->kafka.brokers,
	    conf->spool.dir);
	if (o.dev)
		print_dev_help(conf, devkafka_bootstrap(dk));

	service_ready("running");
	while ((sig = wait_signal(&sigs, sp)) != SIGTERM && sig != SIGINT) {
		service_reloading();
		reload(&d, o.conf_path, o.debug);
		service_ready("running");
	}
	log_info("received %s, stopping", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	service_stopping();
	status_stopping();

	/*
	 * Each step leaves no callback into what the next one frees: requests
	 * stop entering the pipeline; subscriptions finish (their dead letters
	 * use the spool and the producer); the spool writer answers everything
	 * queued; the producer answers its waiters; the topics thread answers its
	 * queries; then no request is suspended and the servers can stop.
	 */
	http_quiesce(http);
	log_debug("shutdown: listeners closed");
	stop_subs(&d);
	log_debug("shutdown: subscriptions stopped");
	if (spool_quiesce(sp, QUIESCE_MS) < 0)
		log_warnx("shutdown: the spool writer did not finish within %d ms", QUIESCE_MS);
	log_debug("shutdown: spool writer idle");
	producer_stop(prod, FLUSH_MS);
	log_debug("shutdown: producer flushed and stopped");
	topics_stop(topics);
	log_debug("shutdown: topics stopped");
	http_drain(http, DRAIN_MS);
	http_stop(http);
	log_debug("shutdown: http stopped");
	spool_close(sp);
	log_debug("shutdown: spool closed");
	idem_free(idem);
	if (dk) {
		devkafka_stop(dk);
		nftw(devdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	}
	for (size_t i = 0; i < d.nloaded; i++)
		conf_free(d.loaded[i]);
	free(d.loaded);
	conf_free(conf);
	curl_global_cleanup();
	log_info("stopped");
	return 0;
}
