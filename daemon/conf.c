/*
 * conf: ackd.conf, read once into a validated, immutable struct conf.
 *
 * One table, keys[] below, describes every key: its path, type, default,
 * bounds, valid values, help text, and where its value is stored. Loading
 * follows the table in three steps:
 *
 *   1. defaults: each key of a scope (the file, one subscription, one auth
 *      token) gets its default, converted like a value read from the file;
 *   2. walk: libconfig's tree is walked group by group; each setting is
 *      looked up in the table (an unknown one gets a "did you mean"),
 *      type-checked, range-checked, passed to the key's check function and
 *      stored at the key's offset;
 *   3. across keys: required keys, duplicate names, url or unix_socket.
 *
 * No error stops the load. Each becomes "file:line: message"; the list is
 * sorted by line at the end, so a user fixes the file top to bottom.
 *
 * libconfig 1.5 reads an integer above 2147483647 written without the L
 * suffix as its low 32 bits, silently. scan_big_ints() reads the file text
 * first and reports such numbers, so a 5 GB spool.max_bytes is never 705 MB.
 *
 * Runs on the main thread, at start-up and on SIGHUP; it keeps no state.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <libconfig.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "base64.h"
#include "conf.h"
#include "log.h"
#include "webhook_sign.h"

enum scope_id { SCOPE_MAIN, SCOPE_SUB, SCOPE_TOKEN };

#define KEY_REQUIRED 0x1 /* no default: the file must set it */
#define KEY_DERIVED 0x2  /* default computed from other keys, after the walk */

struct loader;
struct scope;

/* Check one string value; on error fill msg and return -1. */
typedef int (*check_fn)(struct loader *ld, const char *value, char *msg, size_t msglen);

/* After one element of a list of groups is loaded: checks across its keys. */
typedef void (*finish_fn)(struct loader *ld, struct scope *sc, const config_setting_t *list,
    unsigned index);

struct key {
	struct conf_key doc;
	enum scope_id scope; /* the struct the value is stored in */
	size_t off;          /* offset of the value in that struct */
	int flags;
	check_fn check;

	/* CONF_T_GROUPS: the array, its count, and its elements. */
	size_t count_off;
	size_t elem_size;
	enum scope_id elem_scope;
	finish_fn finish;
};

struct err {
	int other_file; /* 0 for the file given, 1 for an @include */
	char *file;
	unsigned line;
	size_t seq;
	char *text; /* "file:line: message" */
};

struct loader {
	const char *path; /* the file given to conf_load() */
	struct err *errs;
	size_t nerrs;
	size_t errcap;
	int oom;
	rd_kafka_conf_t *rk_producer; /* kafka.producer entries are tried here */
	rd_kafka_conf_t *rk_consumer; /* and kafka.consumer entries here */
	unsigned big_lines[32];       /* lines scan_big_ints() reported */
	size_t nbig;
};

static int check_hostport(struct loader *, const char *, char *, size_t);
static int check_unix_path(struct loader *, const char *, char *, size_t);
static int check_nonempty(struct loader *, const char *, char *, size_t);
static int check_producer_prop(struct loader *, const char *, char *, size_t);
static int check_consumer_prop(struct loader *, const char *, char *, size_t);
static int check_glob(struct loader *, const char *, char *, size_t);
static int check_sub_name(struct loader *, const char *, char *, size_t);
static int check_topic(struct loader *, const char *, char *, size_t);
static int check_topic_or_empty(struct loader *, const char *, char *, size_t);
static int check_url(struct loader *, const char *, char *, size_t);
static int check_secret(struct loader *, const char *, char *, size_t);
static int check_header(struct loader *, const char *, char *, size_t);
static int check_url_or_empty(struct loader *, const char *, char *, size_t);
static int check_file_or_empty(struct loader *, const char *, char *, size_t);
static void sub_finish(struct loader *, struct scope *, const config_setting_t *, unsigned);
static void token_finish(struct loader *, struct scope *, const config_setting_t *, unsigned);

static const char *const fsync_choices[] = { "always", "interval", "never", NULL };
static const char *const ack_choices[] = { "kafka", "spool", NULL };
static const char *const level_choices[] = { "error", "warn", "info", "debug", NULL };
static const char *const ordering_choices[] = { "partition", "key", "none", NULL };
static const char *const exhausted_choices[] = { "block", "drop", NULL };
static const char *const start_choices[] = { "earliest", "latest", NULL };
static const char *const concurrency_choices[] = { "fixed", "adaptive", NULL };
static const char *const http_client_choices[] = { "auto", "libcurl", NULL };

/* The stored enums are written through an int. */
_Static_assert(sizeof(enum conf_fsync) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_ack) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_ordering) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_exhausted) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_start) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_concurrency) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_http_client) == sizeof(int), "enum size");

#define MAIN(field) .scope = SCOPE_MAIN, .off = offsetof(struct conf, field)
#define SUB(field) .scope = SCOPE_SUB, .off = offsetof(struct conf_sub, field)
#define TOKEN(field) .scope = SCOPE_TOKEN, .off = offsetof(struct conf_token, field)
#define MS_MAX INT64_C(86400000) /* one day */

static const struct key keys[] = {
	{ .doc = { "listen", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "The publish API's listeners; both serve the same API." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "listen.http", CONF_T_STRING, "127.0.0.1:8470", 0, 0, NULL,
		  "TCP listener as host:port, an IPv6 host in brackets. Empty disables it." },
	    MAIN(listen.http), .check = check_hostport },
	{ .doc = { "listen.unix", CONF_T_STRING, "/run/ackd/ackd.sock", 0, 0, NULL,
		  "Unix socket listener, a path of at most 107 bytes. Empty disables it." },
	    MAIN(listen.unix_path), .check = check_unix_path },
	{ .doc = { "listen.unix_mode", CONF_T_MODE, "0660", 0, 07777, NULL,
		  "Permissions of the Unix socket, octal digits in a string." },
	    MAIN(listen.unix_mode) },
	{ .doc = { "listen.unix_group", CONF_T_STRING, "", 0, 0, NULL,
		  "Group owning the Unix socket. Empty keeps ackd's group." },
	    MAIN(listen.unix_group) },

	{ .doc = { "limits", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "Request size limits and the resources a client may hold." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "limits.max_body_bytes", CONF_T_INT, "1048576", 1, INT64_C(1073741824), NULL,
		  "Largest request body; a larger one is refused with 413." },
	    MAIN(limits.max_body_bytes) },
	{ .doc = { "limits.max_batch_records", CONF_T_INT, "10000", 1, 1000000, NULL,
		  "Most records in one batch request; more are refused with 413." },
	    MAIN(limits.max_batch_records) },
	{ .doc = { "limits.max_header_bytes", CONF_T_INT, "16384", 1024, 1048576, NULL,
		  "Largest total of request header names and values, and at most 100 "
		  "headers; more is refused with 431." },
	    MAIN(limits.max_header_bytes) },
	{ .doc = { "limits.max_url_bytes", CONF_T_INT, "8192", 256, 65536, NULL,
		  "Longest request target (path and query); a longer one is refused with 414." },
	    MAIN(limits.max_url_bytes) },
	{ .doc = { "limits.max_connections", CONF_T_INT, "10000", 1, 1000000, NULL,
		  "Most open connections, both listeners together; a request on a "
		  "connection beyond them is refused with 503 (/healthz and /readyz "
		  "are still answered)." },
	    MAIN(limits.max_connections) },
	{ .doc = { "limits.max_connections_per_address", CONF_T_INT, "1024", 1, 1000000, NULL,
		  "Most open connections from one client address on listen.http when "
		  "it is not a loopback address; more are closed as they are accepted." },
	    MAIN(limits.max_connections_per_address) },
	{ .doc = { "limits.max_inflight_body_bytes", CONF_T_INT, "67108864", 1048576,
		  INT64_C(68719476736), NULL,
		  "Request bodies held in memory by all requests together, from the "
		  "first byte read until the answer; a request that would go beyond it "
		  "is refused with 503 and Retry-After. At least limits.max_body_bytes." },
	    MAIN(limits.max_inflight_body_bytes) },
	{ .doc = { "limits.header_timeout_ms", CONF_T_INT, "10000", 100, 3600000, NULL,
		  "Time from a connection's start, or the end of its previous request, "
		  "to the end of the next request's headers; bytes arriving slowly do "
		  "not extend it. The connection is closed when it passes." },
	    MAIN(limits.header_timeout_ms) },
	{ .doc = { "limits.body_timeout_ms", CONF_T_INT, "60000", 100, 3600000, NULL,
		  "Time from the end of a request's headers to the end of its body; "
		  "bytes arriving slowly do not extend it. The connection is closed "
		  "when it passes." },
	    MAIN(limits.body_timeout_ms) },

	{ .doc = { "kafka", CONF_T_GROUP, NULL, 0, 0, NULL, "The Kafka cluster." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "kafka.brokers", CONF_T_STRING, NULL, 0, 0, NULL,
		  "Bootstrap brokers, host:port separated by commas. Required." },
	    MAIN(kafka.brokers), .flags = KEY_REQUIRED, .check = check_nonempty },
	{ .doc = { "kafka.producer", CONF_T_STRLIST, "", 0, 0, NULL,
		  "librdkafka producer properties, \"name=value\", applied after ackd's own; "
		  "acks and enable.idempotence cannot be weakened." },
	    MAIN(kafka.producer), .check = check_producer_prop },
	{ .doc = { "kafka.consumer", CONF_T_STRLIST, "", 0, 0, NULL,
		  "librdkafka consumer properties, \"name=value\", applied after ackd's own; "
		  "enable.auto.commit and enable.auto.offset.store cannot be turned on." },
	    MAIN(kafka.consumer), .check = check_consumer_prop },

	{ .doc = { "spool", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "The local spool that holds messages until Kafka acknowledged them." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "spool.dir", CONF_T_STRING, LOCALSTATEDIR "/lib/ackd", 0, 0, NULL,
		  "Directory of the spool segments." },
	    MAIN(spool.dir), .check = check_nonempty },
	{ .doc = { "spool.fsync", CONF_T_ENUM, "always", 0, 0, fsync_choices,
		  "always: fsync before any 2xx; interval: every fsync_interval_ms; never. "
		  "Only always keeps published messages across power loss." },
	    MAIN(spool.fsync) },
	{ .doc = { "spool.fsync_interval_ms", CONF_T_INT, "1000", 1, 3600000, NULL,
		  "Time between two fsyncs with fsync = \"interval\"." },
	    MAIN(spool.fsync_interval_ms) },
	{ .doc = { "spool.max_bytes", CONF_T_INT, "1073741824", 1048576,
		  INT64_C(1125899906842624), NULL,
		  "Spool size at which new messages are refused with 507." },
	    MAIN(spool.max_bytes) },
	{ .doc = { "spool.prealloc", CONF_T_BOOL, "true", 0, 0, NULL,
		  "When true a thread writes the next segment's zeros ahead, and records "
		  "overwrite them: a group commit's fdatasync then has no file size to "
		  "commit. Disk use grows by up to two segments beyond max_bytes." },
	    MAIN(spool.prealloc) },

	{ .doc = { "publish", CONF_T_GROUP, NULL, 0, 0, NULL, "The publish API." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "publish.ack", CONF_T_ENUM, "kafka", 0, 0, ack_choices,
		  "Default of ?ack=: answer after Kafka's acks=all (kafka) or once "
		  "the message is in the spool (spool)." },
	    MAIN(publish.ack) },
	{ .doc = { "publish.ack_timeout_ms", CONF_T_INT, "10000", 1, 3600000, NULL,
		  "With ack=kafka, how long to wait for Kafka before answering 202." },
	    MAIN(publish.ack_timeout_ms) },
	{ .doc = { "publish.spool_linger_ms", CONF_T_INT, "10", 0, 10000, NULL,
		  "How long records that no request waits for (ack=spool) may stay in the "
		  "spool before they are produced, so that they go to Kafka in fewer, "
		  "larger requests. 0: produced at once." },
	    MAIN(publish.spool_linger_ms) },
	{ .doc = { "publish.slice_us", CONF_T_INT, "100", 0, 100000, NULL,
		  "Scheduler slice asked for the threads on an answer's path (the HTTP "
		  "threads, the spool writer, the Kafka loop, the producer's librdkafka "
		  "broker threads): on a busy machine they wait "
		  "less for a CPU. Linux 6.12 and later; 0: the kernel's default." },
	    MAIN(publish.slice_us) },
	{ .doc = { "publish.idempotency_ttl_s", CONF_T_INT, "86400", 1, 31536000, NULL,
		  "How long an Idempotency-Key is remembered after its first request." },
	    MAIN(publish.idempotency_ttl_s) },
	{ .doc = { "publish.idempotency_max_keys", CONF_T_INT, "1000000", 1, 100000000, NULL,
		  "Idempotency-Keys remembered at most; beyond it the oldest are forgotten." },
	    MAIN(publish.idempotency_max_keys) },
	{ .doc = { "publish.topics", CONF_T_STRLIST, "", 0, 0, NULL,
		  "Glob patterns (* ? [...]) of the topics that may be published to. "
		  "Empty: every topic." },
	    MAIN(publish.topics), .check = check_glob },

	{ .doc = { "auth", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "Bearer tokens for the publish API (and the operations endpoints)." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "auth.tokens", CONF_T_GROUPS, "", 0, 0, NULL,
		  "Each a group of token, topics and admin. When set, publishing needs "
		  "Authorization: Bearer with one of them. Empty: no authentication." },
	    MAIN(auth.tokens), .count_off = offsetof(struct conf, auth.ntokens),
	    .elem_size = sizeof(struct conf_token), .elem_scope = SCOPE_TOKEN,
	    .finish = token_finish },
	{ .doc = { "auth.tokens.token", CONF_T_STRING, NULL, 0, 0, NULL,
		  "The secret token. Required, unique." },
	    TOKEN(token), .flags = KEY_REQUIRED, .check = check_nonempty },
	{ .doc = { "auth.tokens.topics", CONF_T_STRLIST, "", 0, 0, NULL,
		  "Glob patterns of the topics this token may publish to, within "
		  "publish.topics. Empty: every topic." },
	    TOKEN(topics), .check = check_glob },
	{ .doc = { "auth.tokens.admin", CONF_T_BOOL, "false", 0, 0, NULL,
		  "When true the token may use the Control API (/v1/subscriptions: list, "
		  "pause, resume, seek, redrive). Only admin tokens may." },
	    TOKEN(admin) },
	{ .doc = { "auth.protect_ops", CONF_T_BOOL, "false", 0, 0, NULL,
		  "When true and auth.tokens is set, /metrics and /v1/status need a "
		  "token too (any of them). /healthz and /readyz stay open." },
	    MAIN(auth.protect_ops) },

	{ .doc = { "log", CONF_T_GROUP, NULL, 0, 0, NULL, "Logging; reloaded on SIGHUP." },
	    .scope = SCOPE_MAIN },
	{ .doc = { "log.level", CONF_T_STRING, "info", 0, 0, level_choices,
		  "Least severe level logged. The -d flag forces debug." },
	    MAIN(log.level) },

	{ .doc = { "subscriptions", CONF_T_GROUPS, "", 0, 0, NULL,
		  "Webhook subscriptions, each a group; reloaded on SIGHUP." },
	    MAIN(subs), .count_off = offsetof(struct conf, nsubs),
	    .elem_size = sizeof(struct conf_sub), .elem_scope = SCOPE_SUB, .finish = sub_finish },
	{ .doc = { "subscriptions.name", CONF_T_STRING, NULL, 0, 0, NULL,
		  "Unique name, 1-200 of a-z A-Z 0-9 . _ -, used in logs and metrics. Required." },
	    SUB(name), .flags = KEY_REQUIRED, .check = check_sub_name },
	{ .doc = { "subscriptions.topics", CONF_T_STRLIST, NULL, 1, 0, NULL,
		  "Topics to consume, at least one. Required." },
	    SUB(topics), .flags = KEY_REQUIRED, .check = check_topic },
	{ .doc = { "subscriptions.group", CONF_T_STRING, NULL, 0, 0, NULL,
		  "Kafka consumer group. Default: \"ackd-\" followed by the name." },
	    SUB(group), .flags = KEY_DERIVED, .check = check_nonempty },
	{ .doc = { "subscriptions.url", CONF_T_STRING, "", 0, 0, NULL,
		  "Webhook URL, http:// or https://. Needed unless unix_socket is set." },
	    SUB(url), .check = check_url },
	{ .doc = { "subscriptions.unix_socket", CONF_T_STRING, "", 0, 0, NULL,
		  "Unix socket to send the webhook over instead of TCP; url then gives "
		  "the path and Host." },
	    SUB(unix_socket), .check = check_unix_path },
	{ .doc = { "subscriptions.secrets", CONF_T_STRLIST, "", 0, 0, NULL,
		  "Standard Webhooks signing secrets, \"whsec_\" and base64 of 24 to 64 bytes; "
		  "one signature per secret. Empty: unsigned." },
	    SUB(secrets), .check = check_secret },
	{ .doc = { "subscriptions.timeout_ms", CONF_T_INT, "15000", 1, 3600000, NULL,
		  "Time allowed for one webhook attempt." },
	    SUB(timeout_ms) },
	{ .doc = { "subscriptions.ordering", CONF_T_ENUM, "partition", 0, 0, ordering_choices,
		  "partition: one message in flight per partition; key: one per key; "
		  "none: up to max_in_flight." },
	    SUB(ordering) },
	{ .doc = { "subscriptions.max_in_flight", CONF_T_INT, "64", 1, 10000, NULL,
		  "Most webhook requests in flight at once for this subscription." },
	    SUB(max_in_flight) },
	{ .doc = { "subscriptions.retry", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "Backoff between attempts: initial_ms * 2^(attempt-1), at most max_ms, "
		  "with 20% jitter." },
	    .scope = SCOPE_SUB },
	{ .doc = { "subscriptions.retry.initial_ms", CONF_T_INT, "500", 1, MS_MAX, NULL,
		  "Delay before the second attempt; at most max_ms." },
	    SUB(retry.initial_ms) },
	{ .doc = { "subscriptions.retry.max_ms", CONF_T_INT, "60000", 1, MS_MAX, NULL,
		  "Longest delay between attempts." },
	    SUB(retry.max_ms) },
	{ .doc = { "subscriptions.retry.max_attempts", CONF_T_INT, "10", 0, 1000000, NULL,
		  "Attempts before a message goes to the dead-letter topic. 0: unlimited." },
	    SUB(retry.max_attempts) },
	{ .doc = { "subscriptions.retry.max_retry_after_ms", CONF_T_INT, "300000", 0, MS_MAX,
		  NULL, "Cap on a webhook's Retry-After." },
	    SUB(retry.max_retry_after_ms) },
	{ .doc = { "subscriptions.dead_letter_topic", CONF_T_STRING, "", 0, 0, NULL,
		  "Topic for poison and exhausted messages, not one of topics. "
		  "Empty: none, see on_exhausted." },
	    SUB(dead_letter_topic), .check = check_topic_or_empty },
	{ .doc = { "subscriptions.on_exhausted", CONF_T_ENUM, "block", 0, 0, exhausted_choices,
		  "Without a dead_letter_topic: block the partition and keep retrying, "
		  "or drop the message." },
	    SUB(on_exhausted) },
	{ .doc = { "subscriptions.start", CONF_T_ENUM, "earliest", 0, 0, start_choices,
		  "Where a consumer group without a committed offset starts." },
	    SUB(start) },
	{ .doc = { "subscriptions.concurrency", CONF_T_ENUM, "fixed", 0, 0, concurrency_choices,
		  "fixed: up to max_in_flight requests at once; adaptive: a window found by "
		  "AIMD, at most max_in_flight." },
	    SUB(concurrency) },
	{ .doc = { "subscriptions.rate_limit", CONF_T_INT, "0", 0, 1000000, NULL,
		  "Most messages sent a second (token bucket). 0: no cap." },
	    SUB(rate_limit) },
	{ .doc = { "subscriptions.http_client", CONF_T_ENUM, "auto", 0, 0, http_client_choices,
		  "auto: ackd's own HTTP/1.1 client for an http:// url to an IP address or "
		  "localhost (no proxy) and for unix_socket, libcurl for the rest; libcurl: "
		  "libcurl always." },
	    SUB(http_client) },
	{ .doc = { "subscriptions.batch", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "Several messages a request, as a JSON body; see docs/webhooks.md." },
	    .scope = SCOPE_SUB },
	{ .doc = { "subscriptions.batch.max_messages", CONF_T_INT, "1", 1, 10000, NULL,
		  "Most messages in one request. 1: one message a request, its value "
		  "as the body." },
	    SUB(batch.max_messages) },
	{ .doc = { "subscriptions.batch.max_bytes", CONF_T_INT, "1048576", 1, 67108864, NULL,
		  "Most bytes of keys, values and headers in one request; a larger "
		  "message goes alone." },
	    SUB(batch.max_bytes) },
	{ .doc = { "subscriptions.batch.max_wait_ms", CONF_T_INT, "20", 0, 60000, NULL,
		  "Longest wait for more messages to fill a batch." },
	    SUB(batch.max_wait_ms) },
	{ .doc = { "subscriptions.headers", CONF_T_STRLIST, "", 0, 0, NULL,
		  "Static request headers, \"Name=value\"; values are never logged. Not a "
		  "header ackd sets itself." },
	    SUB(headers), .check = check_header },
	{ .doc = { "subscriptions.tls", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "TLS for an https url: the CA to trust and a client certificate." },
	    .scope = SCOPE_SUB },
	{ .doc = { "subscriptions.tls.ca_file", CONF_T_STRING, "", 0, 0, NULL,
		  "PEM file of CA certificates to trust. Empty: the system's." },
	    SUB(tls.ca_file), .check = check_file_or_empty },
	{ .doc = { "subscriptions.tls.cert_file", CONF_T_STRING, "", 0, 0, NULL,
		  "PEM client certificate for mutual TLS; needs key_file." },
	    SUB(tls.cert_file), .check = check_file_or_empty },
	{ .doc = { "subscriptions.tls.key_file", CONF_T_STRING, "", 0, 0, NULL,
		  "PEM private key of cert_file." },
	    SUB(tls.key_file), .check = check_file_or_empty },
	{ .doc = { "subscriptions.oauth2", CONF_T_GROUP, NULL, 0, 0, NULL,
		  "OAuth 2.0 client credentials: the token is sent as Authorization: Bearer." },
	    .scope = SCOPE_SUB },
	{ .doc = { "subscriptions.oauth2.token_url", CONF_T_STRING, "", 0, 0, NULL,
		  "Token endpoint, http:// or https://. Empty: no OAuth 2.0." },
	    SUB(oauth2.token_url), .check = check_url_or_empty },
	{ .doc = { "subscriptions.oauth2.client_id", CONF_T_STRING, "", 0, 0, NULL,
		  "Client identifier; required with token_url." },
	    SUB(oauth2.client_id) },
	{ .doc = { "subscriptions.oauth2.client_secret", CONF_T_STRING, "", 0, 0, NULL,
		  "Client secret; required with token_url; never logged." },
	    SUB(oauth2.client_secret) },
	{ .doc = { "subscriptions.oauth2.scope", CONF_T_STRING, "", 0, 0, NULL,
		  "Space-separated scopes to ask for. Empty: none." },
	    SUB(oauth2.scope) },
};

#define NKEYS (sizeof(keys) / sizeof(keys[0]))

/* One group being loaded into one struct: the file, a subscription, a token. */
struct scope {
	enum scope_id id;
	void *base;            /* struct conf, struct conf_sub or struct conf_token */
	const char *keypath;   /* table path of the scope: "", "subscriptions" */
	const char *shown;     /* as errors name it: "", "subscriptions[2]" */
	const char *file;      /* where the scope starts */
	unsigned line;
	unsigned seen[NKEYS];  /* line of each key found in the file, 0: absent */
};

/* --- the table ----------------------------------------------------------- */

const struct conf_key *conf_key_get(size_t i) { return i < NKEYS ? &keys[i].doc : NULL; }

const char *conf_type_name(enum conf_type type)
{
	switch (type) {
	case CONF_T_GROUP: return "group";
	case CONF_T_GROUPS: return "list of groups";
	case CONF_T_STRING: return "string";
	case CONF_T_INT: return "integer";
	case CONF_T_ENUM: return "string";
	case CONF_T_MODE: return "string";
	case CONF_T_STRLIST: return "list of strings";
	case CONF_T_BOOL: return "boolean";
	}
	return "?";
}

static const struct key *key_find(const char *path)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].doc.path, path) == 0)
			return &keys[i];
	return NULL;
}

static void *field(void *base, const struct key *k) { return (char *)base + k->off; }

/* The part of path after keypath and its dot. */
static const char *rel_path(const char *path, const char *keypath)
{
	size_t n = strlen(keypath);
	return n == 0 ? path : path + n + 1;
}

static const char *last_name(const char *path)
{
	const char *dot = strrchr(path, '.');
	return dot ? dot + 1 : path;
}

/* Is path directly inside the group keypath ("" for the file)? */
static int is_child(const char *path, const char *keypath)
{
	size_t n = strlen(keypath);
	if (n > 0 && (strncmp(path, keypath, n) != 0 || path[n] != '.'))
		return 0;
	return strchr(path + (n ? n + 1 : 0), '.') == NULL;
}

static void join(char *buf, size_t len, const char *prefix, const char *name)
{
	if (prefix[0] == '\0')
		snprintf(buf, len, "%s", name);
	else
		snprintf(buf, len, "%s.%s", prefix, name);
}

/* --- errors -------------------------------------------------------------- */

static char *ld_strdup(struct loader *ld, const char *s)
{
	char *p = strdup(s);
	if (!p)
		ld->oom = 1;
	return p;
}

static void err_at(struct loader *ld, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void err_at(struct loader *ld, const char *file, unsigned line, const char *fmt, ...)
{
	char msg[1024];
	char *text = NULL;
	va_list ap;
	int n;

	if (!file)
		file = ld->path;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		n = asprintf(&text, "%s:%u: %s", file, line, msg);
	else
		n = asprintf(&text, "%s: %s", file, msg);
	if (n < 0)
		goto fail;
	if (ld->nerrs == ld->errcap) {
		size_t cap = ld->errcap ? ld->errcap * 2 : 16;
		struct err *v = realloc(ld->errs, cap * sizeof(*v));
		if (!v)
			goto fail;
		ld->errs = v;
		ld->errcap = cap;
	}
	ld->errs[ld->nerrs].file = ld_strdup(ld, file);
	if (!ld->errs[ld->nerrs].file)
		goto fail;
	ld->errs[ld->nerrs].other_file = strcmp(file, ld->path) != 0;
	ld->errs[ld->nerrs].line = line;
	ld->errs[ld->nerrs].seq = ld->nerrs;
	ld->errs[ld->nerrs].text = text;
	ld->nerrs++;
	return;
fail:
	free(text);
	ld->oom = 1;
}

#define err_s(ld, s, ...) \
	err_at((ld), config_setting_source_file(s), config_setting_source_line(s), __VA_ARGS__)

/* The file given first, then @include files; each by line, then found order. */
static int err_cmp(const void *a, const void *b)
{
	const struct err *x = a, *y = b;
	int c;

	if (x->other_file != y->other_file)
		return x->other_file - y->other_file;
	c = strcmp(x->file, y->file);
	if (c != 0)
		return c;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort the collected errors into errs, which takes their text. */
static void errs_move(struct loader *ld, struct conf_errors *errs)
{
	qsort(ld->errs, ld->nerrs, sizeof(*ld->errs), err_cmp);
	if (ld->oom)
		err_at(ld, NULL, 0, "out of memory");
	errs->v = calloc(ld->nerrs ? ld->nerrs : 1, sizeof(char *));
	for (size_t i = 0; i < ld->nerrs; i++) {
		if (errs->v) {
			errs->v[errs->n++] = ld->errs[i].text;
		} else {
			free(ld->errs[i].text);
		}
		free(ld->errs[i].file);
	}
	free(ld->errs);
	ld->errs = NULL;
	ld->nerrs = 0;
}

void conf_errors_fini(struct conf_errors *errs)
{
	if (!errs)
		return;
	for (size_t i = 0; i < errs->n; i++)
		free(errs->v[i]);
	free(errs->v);
	errs->v = NULL;
	errs->n = 0;
}

/* --- checks of single values --------------------------------------------- */

static int is_topic_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '.' || c == '_' || c == '-';
}

/* Kafka's rule: 1-249 of [a-zA-Z0-9._-], not "." or "..". */
static int topic_valid(const char *what, const char *t, size_t maxlen, char *msg, size_t msglen)
{
	size_t len = strlen(t);

	if (len == 0) {
		snprintf(msg, msglen, "%s must not be empty", what);
		return -1;
	}
	if (len > maxlen) {
		snprintf(msg, msglen, "%s \"%.40s...\" is longer than %zu characters", what, t,
		    maxlen);
		return -1;
	}
	if (strcmp(t, ".") == 0 || strcmp(t, "..") == 0) {
		snprintf(msg, msglen, "%s \"%s\" is not allowed", what, t);
		return -1;
	}
	for (const char *p = t; *p; p++) {
		if (!is_topic_char((unsigned char)*p)) {
			snprintf(msg, msglen,
			    "%s \"%s\" has '%c': only a-z, A-Z, 0-9, '.', '_' and '-' are allowed",
			    what, t, *p);
			return -1;
		}
	}
	return 0;
}

static int check_topic(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	(void)ld;
	return topic_valid("topic name", v, 249, msg, msglen);
}

static int check_topic_or_empty(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	return v[0] == '\0' ? 0 : check_topic(ld, v, msg, msglen);
}

static int check_sub_name(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	(void)ld;
	return topic_valid("name", v, 200, msg, msglen);
}

static int check_glob(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	int in_class = 0;

	(void)ld;
	if (v[0] == '\0') {
		snprintf(msg, msglen, "topic pattern must not be empty");
		return -1;
	}
	for (const char *p = v; *p; p++) {
		if (*p == '[') {
			in_class = 1;
		} else if (*p == ']' && in_class) {
			in_class = 0;
		} else if (!(is_topic_char((unsigned char)*p) || *p == '*' || *p == '?' ||
			       (*p == '!' && p > v && p[-1] == '[' && in_class))) {
			snprintf(msg, msglen,
			    "topic pattern \"%s\" has '%c': only topic characters and * ? [ ] "
			    "are allowed",
			    v, *p);
			return -1;
		}
	}
	if (in_class) {
		snprintf(msg, msglen, "topic pattern \"%s\" has '[' without ']'", v);
		return -1;
	}
	return 0;
}

static int check_nonempty(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	(void)ld;
	if (v[0] != '\0')
		return 0;
	snprintf(msg, msglen, "must not be empty");
	return -1;
}

/* "host:port" with a port of 1-65535; an IPv6 host in brackets. */
static int check_hostport(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	const char *colon = strrchr(v, ':');
	const char *host_end = colon;
	char *end;
	long port;

	(void)ld;
	if (v[0] == '\0')
		return 0;
	if (!colon || colon == v)
		goto bad;
	if (v[0] == '[') {
		if (colon[-1] != ']' || colon - v < 3)
			goto bad;
	} else {
		for (const char *p = v; p < host_end; p++)
			if (*p == ':' || *p == '[' || *p == ']')
				goto bad;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno || port < 1 ||
	    port > 65535)
		goto bad;
	return 0;
bad:
	snprintf(msg, msglen, "\"%s\" is not host:port with a port of 1-65535", v);
	return -1;
}

static int check_unix_path(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	struct sockaddr_un sa;

	(void)ld;
	if (strlen(v) < sizeof(sa.sun_path))
		return 0;
	snprintf(msg, msglen, "socket path is longer than %zu bytes", sizeof(sa.sun_path) - 1);
	return -1;
}

static int check_url(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	const char *host;

	(void)ld;
	if (v[0] == '\0')
		return 0;
	if (strncmp(v, "http://", 7) == 0)
		host = v + 7;
	else if (strncmp(v, "https://", 8) == 0)
		host = v + 8;
	else
		host = NULL;
	if (host && *host != '\0' && *host != '/' && *host != ':' && !strpbrk(v, " \t\r\n"))
		return 0;
	{
		char shown[256];

		webhook_url_redact(v, shown, sizeof(shown));
		snprintf(msg, msglen, "\"%s\" is not an http:// or https:// URL with a host", shown);
	}
	return -1;
}

static int check_secret(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	size_t n;

	(void)ld;
	if (strncmp(v, "whsec_", 6) != 0) {
		snprintf(msg, msglen, "secret does not start with \"whsec_\"");
		return -1;
	}
	if (base64_decode(v + 6, strlen(v + 6), BASE64_LENIENT, NULL, 0, &n) < 0) {
		snprintf(msg, msglen, "secret after \"whsec_\" is not base64");
		return -1;
	}
	if (n < 24 || n > 64) {
		snprintf(msg, msglen, "secret decodes to %ld bytes, not 24 to 64", n);
		return -1;
	}
	return 0;
}

/*
 * Headers ackd writes itself, which a static header must not replace or
 * duplicate (ackd-* as a prefix). Authorization is refused in sub_finish()
 * only when oauth2 sets it.
 */
static const char *const own_headers[] = { "content-type", "content-length", "host", "expect",
	"transfer-encoding", "connection", "te", "upgrade", "user-agent", "webhook-id",
	"webhook-timestamp", "webhook-signature", "traceparent", "tracestate", NULL };

/* "Name=value": name an HTTP token that ackd does not set, value one line. */
static int check_header(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	const char *eq = strchr(v, '=');
	size_t nlen = eq ? (size_t)(eq - v) : 0;
	char name[128];

	(void)ld;
	/* The value is a secret: messages name the header, never the value. */
	if (!eq || nlen == 0) {
		snprintf(msg, msglen, "a header is \"Name=value\"");
		return -1;
	}
	if (nlen >= sizeof(name)) {
		snprintf(msg, msglen, "header name longer than %zu bytes", sizeof(name) - 1);
		return -1;
	}
	memcpy(name, v, nlen);
	name[nlen] = '\0';
	for (size_t i = 0; i < nlen; i++) {
		unsigned char c = (unsigned char)name[i];
		if (!isalnum(c) && !strchr("!#$%&'*+-.^_`|~", c)) {
			char shown[160];
			snprintf(msg, msglen, "\"%s\" is not a valid header name",
			    log_escape(name, nlen, shown, sizeof(shown)));
			return -1;
		}
	}
	for (size_t i = 0; own_headers[i]; i++) {
		if (strcasecmp(name, own_headers[i]) == 0) {
			snprintf(msg, msglen, "header %s is set by ackd itself", name);
			return -1;
		}
	}
	if (strncasecmp(name, "ackd-", 5) == 0) {
		snprintf(msg, msglen, "header %s: ackd-* headers are set by ackd itself", name);
		return -1;
	}
	for (const char *p = eq + 1; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c < 0x20 && c != '\t') || c == 0x7f) {
			snprintf(msg, msglen, "header %s: the value holds a control character", name);
			return -1;
		}
	}
	return 0;
}

static int check_url_or_empty(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	return v[0] ? check_url(ld, v, msg, msglen) : 0;
}

static int check_file_or_empty(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	FILE *f;

	(void)ld;
	if (v[0] == '\0')
		return 0;
	f = fopen(v, "r");
	if (!f) {
		snprintf(msg, msglen, "cannot read %s: %s", v, strerror(errno));
		return -1;
	}
	fclose(f);
	return 0;
}

static void trim_end(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '.'))
		s[--n] = '\0';
}

/* Split "name=value" into name and value; -1 when it is not that. */
static int prop_split(const char *prop, char *name, size_t namelen, const char **value)
{
	const char *eq = strchr(prop, '=');

	if (!eq || eq == prop || (size_t)(eq - prop) >= namelen)
		return -1;
	memcpy(name, prop, (size_t)(eq - prop));
	name[eq - prop] = '\0';
	*value = eq + 1;
	return 0;
}

/*
 * Whether a librdkafka property's value is a secret that must never reach a
 * log: sasl.*, ssl.*key*, and anything naming a password, secret or token.
 */
int conf_prop_is_secret(const char *name)
{
	char lower[256];
	size_t n = 0;

	for (; name[n] && n < sizeof(lower) - 1; n++)
		lower[n] = (char)tolower((unsigned char)name[n]);
	lower[n] = '\0';
	return strncmp(lower, "sasl.", 5) == 0 ||
	    (strncmp(lower, "ssl.", 4) == 0 && strstr(lower, "key")) ||
	    strstr(lower, "password") || strstr(lower, "passwd") || strstr(lower, "secret") ||
	    strstr(lower, "token");
}

/* Every occurrence of secret in text becomes "(hidden)", in place. */
static void hide(char *text, size_t textlen, const char *secret)
{
	static const char mark[] = "(hidden)";
	size_t slen = strlen(secret), mlen = sizeof(mark) - 1;
	char *p;

	if (slen == 0)
		return;
	while ((p = strstr(text, secret)) != NULL) {
		size_t tail = strlen(p + slen) + 1;

		if ((size_t)(p - text) + mlen + tail > textlen) {
			*p = '\0'; /* no room: cut there rather than keep the secret */
			return;
		}
		memmove(p + mlen, p + slen, tail);
		memcpy(p, mark, mlen);
	}
}

/*
 * "name=value" as an error message may show it: the value only when it is
 * not a secret and librdkafka knows the name (a mistyped secret's name may
 * not look like one).
 */
static void prop_shown(const char *name, const char *value, int known, char *out,
    size_t outlen)
{
	if (known && !conf_prop_is_secret(name))
		snprintf(out, outlen, "%s=%s", name, value);
	else
		snprintf(out, outlen, "%s=(hidden)", name);
}

/*
 * librdkafka's refusal of name=value, for a message: its words, with the
 * value hidden where it is a secret.
 */
static void prop_refusal(const char *name, const char *value, rd_kafka_conf_res_t res,
    char *rkerr, size_t rkerrlen, char *out, size_t outlen)
{
	char shown[300];
	int known = res != RD_KAFKA_CONF_UNKNOWN;

	trim_end(rkerr);
	if (!known || conf_prop_is_secret(name))
		hide(rkerr, rkerrlen, value);
	prop_shown(name, value, known, shown, sizeof(shown));
	snprintf(out, outlen, "\"%s\": %s", shown, rkerr);
}

void conf_hide_secrets(char *text, size_t textlen, const struct conf_strlist *props)
{
	for (size_t i = 0; i < props->n; i++) {
		char name[256];
		const char *value;

		if (prop_split(props->v[i], name, sizeof(name), &value) == 0 &&
		    conf_prop_is_secret(name))
			hide(text, textlen, value);
	}
}

/*
 * Hand every secret of a loaded configuration to log_hide(), so that no log
 * line can carry one whatever wrote it (librdkafka's debug output included):
 * secret property values (less names that are identities, not secrets),
 * tokens, signing secrets, and a URL's userinfo and query.
 */
static void hide_in_logs(const struct conf *conf)
{
	const struct conf_strlist *lists[] = { &conf->kafka.producer, &conf->kafka.consumer };

	for (size_t l = 0; l < 2; l++) {
		for (size_t i = 0; i < lists[l]->n; i++) {
			char name[256];
			const char *value;

			if (prop_split(lists[l]->v[i], name, sizeof(name), &value) == 0 &&
			    conf_prop_is_secret(name) && !strstr(name, "username") &&
			    !strstr(name, "mechanism") && !strstr(name, "location") &&
			    !strstr(name, "kerberos"))
				log_hide(value);
		}
	}
	for (size_t i = 0; i < conf->auth.ntokens; i++)
		log_hide(conf->auth.tokens[i].token);
	for (size_t s = 0; s < conf->nsubs; s++) {
		const struct conf_sub *sub = &conf->subs[s];
		const char *auth = strstr(sub->url, "://"), *end, *at = NULL, *q;
		char part[1024];

		for (size_t i = 0; i < sub->secrets.n; i++) {
			log_hide(sub->secrets.v[i]);
			log_hide(sub->secrets.v[i] + strlen("whsec_"));
		}
		for (size_t i = 0; i < sub->headers.n; i++)
			log_hide(strchr(sub->headers.v[i], '=') + 1);
		if (sub->oauth2.client_secret && sub->oauth2.client_secret[0])
			log_hide(sub->oauth2.client_secret);
		if (!auth)
			continue;
		auth += 3;
		end = auth + strcspn(auth, "/?#");
		for (const char *p = auth; p < end; p++)
			if (*p == '@')
				at = p;
		if (at) { /* user:password, and the password alone */
			const char *colon = memchr(auth, ':', (size_t)(at - auth));
			snprintf(part, sizeof(part), "%.*s", (int)(at - auth), auth);
			log_hide(part);
			if (colon) {
				snprintf(part, sizeof(part), "%.*s", (int)(at - colon - 1), colon + 1);
				log_hide(part);
			}
		}
		q = strchr(end, '?');
		if (q) { /* the query, and each of its values */
			snprintf(part, sizeof(part), "%.*s", (int)strcspn(q + 1, "#"), q + 1);
			log_hide(part);
			for (char *tok = part, *next; tok && *tok; tok = next) {
				char *eq;
				next = strchr(tok, '&');
				if (next)
					*next++ = '\0';
				if ((eq = strchr(tok, '=')) != NULL)
					log_hide(eq + 1);
			}
		}
	}
}

static int rk_get_is(rd_kafka_conf_t *rk, const char *name, const char *want)
{
	char buf[64];
	size_t len = sizeof(buf);

	if (rd_kafka_conf_get(rk, name, buf, &len) != RD_KAFKA_CONF_OK)
		return 0;
	return strcmp(buf, want) == 0;
}

/* What ackd sets and a user property must not undo. */
static int rk_set_floor(rd_kafka_conf_t *rk, int consumer)
{
	char e[256];

	if (rd_kafka_conf_set(rk, "acks", "all", e, sizeof(e)) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(rk, "enable.idempotence", "true", e, sizeof(e)) != RD_KAFKA_CONF_OK)
		return -1;
	if (consumer &&
	    (rd_kafka_conf_set(rk, "enable.auto.commit", "false", e, sizeof(e)) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(rk, "enable.auto.offset.store", "false", e, sizeof(e)) !=
	        RD_KAFKA_CONF_OK))
		return -1;
	return 0;
}

/*
 * Try one property on rk, which holds ackd's floor and the entries before it;
 * librdkafka reports the canonical value, whatever alias or spelling was used.
 */
static int check_prop(rd_kafka_conf_t *rk, const char *prop, int consumer, char *msg,
    size_t msglen)
{
	char name[256];
	char rkerr[512];
	char shown[300];
	const char *value;
	rd_kafka_conf_res_t res;

	if (prop_split(prop, name, sizeof(name), &value) < 0) {
		/* Shown only when it cannot be a value: a secret may be pasted alone. */
		if (prop[0] == '=')
			snprintf(msg, msglen, "\"=(hidden)\" is not name=value");
		else if (strchr(prop, '=') || conf_prop_is_secret(prop) || strlen(prop) > 64)
			snprintf(msg, msglen,
			    "a property is not name=value (or its name is too long)");
		else
			snprintf(msg, msglen, "\"%s\" is not name=value", prop);
		return -1;
	}
	if (!rk)
		return 0;
	res = rd_kafka_conf_set(rk, name, value, rkerr, sizeof(rkerr));
	if (res != RD_KAFKA_CONF_OK) {
		prop_refusal(name, value, res, rkerr, sizeof(rkerr), msg, msglen);
		return -1;
	}
	prop_shown(name, value, 1, shown, sizeof(shown));
	if (!rk_get_is(rk, "acks", "-1")) {
		snprintf(msg, msglen, "\"%s\" would weaken delivery: ackd requires acks=all", shown);
		goto weak;
	}
	if (!rk_get_is(rk, "enable.idempotence", "true")) {
		snprintf(msg, msglen,
		    "\"%s\" would weaken delivery: ackd requires enable.idempotence=true", shown);
		goto weak;
	}
	/* The consumer stores and commits offsets itself, after delivery only. */
	if (consumer && !rk_get_is(rk, "enable.auto.offset.store", "false")) {
		snprintf(msg, msglen, "\"%s\" would commit offsets before delivery: ackd requires "
		    "enable.auto.offset.store=false", shown);
		goto weak;
	}
	if (consumer && !rk_get_is(rk, "enable.auto.commit", "false")) {
		snprintf(msg, msglen, "\"%s\" would commit offsets before delivery: ackd requires "
		    "enable.auto.commit=false", shown);
		goto weak;
	}
	return 0;
weak:
	rk_set_floor(rk, consumer);
	return -1;
}

static int check_producer_prop(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	return check_prop(ld->rk_producer, v, 0, msg, msglen);
}

static int check_consumer_prop(struct loader *ld, const char *v, char *msg, size_t msglen)
{
	return check_prop(ld->rk_consumer, v, 1, msg, msglen);
}

int conf_apply_rdkafka(struct rd_kafka_conf_s *rk_conf, const struct conf_strlist *props,
    char *err, size_t errlen)
{
	for (size_t i = 0; i < props->n; i++) {
		char name[256];
		char rkerr[512];
		const char *value;
		rd_kafka_conf_res_t res;

		if (prop_split(props->v[i], name, sizeof(name), &value) < 0) {
			snprintf(err, errlen, "a property is not name=value");
			return -1;
		}
		res = rd_kafka_conf_set(rk_conf, name, value, rkerr, sizeof(rkerr));
		if (res != RD_KAFKA_CONF_OK) {
			prop_refusal(name, value, res, rkerr, sizeof(rkerr), err, errlen);
			return -1;
		}
	}
	return 0;
}

/* --- storing values ------------------------------------------------------ */

static int choice_index(const char *const *choices, const char *v)
{
	for (int i = 0; choices[i]; i++)
		if (strcmp(choices[i], v) == 0)
			return i;
	return -1;
}

/* "a, b or c" */
static void choices_text(const char *const *choices, char *buf, size_t len)
{
	size_t n = 0;
	int count = 0;

	buf[0] = '\0';
	while (choices[count])
		count++;
	for (int i = 0; i < count && n < len; i++) {
		const char *sep = i == 0 ? "" : i == count - 1 ? " or " : ", ";
		int w = snprintf(buf + n, len - n, "%s%s", sep, choices[i]);
		if (w < 0)
			break;
		n += (size_t)w;
	}
}

/* 1-4 octal digits, at most 07777. */
static int parse_mode(const char *v, unsigned *out)
{
	unsigned m = 0;
	size_t len = strlen(v);

	if (len == 0 || len > 4)
		return -1;
	for (const char *p = v; *p; p++) {
		if (*p < '0' || *p > '7')
			return -1;
		m = m * 8 + (unsigned)(*p - '0');
	}
	if (m > 07777)
		return -1;
	*out = m;
	return 0;
}

/*
 * Convert a string value (from the file, or a key's default) and store it.
 * On error fill msg and return -1.
 */
static int store_text(struct loader *ld, const struct key *k, void *base, const char *v,
    char *msg, size_t msglen)
{
	char valid[128];
	int idx;

	if (k->doc.choices && choice_index(k->doc.choices, v) < 0) {
		choices_text(k->doc.choices, valid, sizeof(valid));
		snprintf(msg, msglen, "invalid value \"%s\" (expected %s)", v, valid);
		return -1;
	}
	if (k->check && k->check(ld, v, msg, msglen) < 0)
		return -1;

	switch (k->doc.type) {
	case CONF_T_STRING: {
		char **dst = field(base, k);
		char *copy = ld_strdup(ld, v);
		if (!copy)
			return 0; /* reported once, as out of memory */
		free(*dst);
		*dst = copy;
		return 0;
	}
	case CONF_T_ENUM:
		idx = choice_index(k->doc.choices, v);
		*(int *)field(base, k) = idx;
		return 0;
	case CONF_T_MODE:
		if (parse_mode(v, field(base, k)) < 0) {
			snprintf(msg, msglen, "\"%s\" is not an octal mode such as \"0660\"", v);
			return -1;
		}
		return 0;
	case CONF_T_INT:
		*(int64_t *)field(base, k) = strtoll(v, NULL, 10);
		return 0;
	case CONF_T_BOOL:
		*(int *)field(base, k) = strcmp(v, "true") == 0;
		return 0;
	case CONF_T_GROUP:
	case CONF_T_GROUPS:
	case CONF_T_STRLIST:
		break;
	}
	snprintf(msg, msglen, "not a single value");
	return -1;
}

static void strlist_free(struct conf_strlist *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

/* Set every key of the scope that has a default to it. */
static void apply_defaults(struct loader *ld, enum scope_id scope, void *base)
{
	char msg[256];

	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		if (k->scope != scope || !k->doc.def || (k->flags & KEY_DERIVED))
			continue;
		if (k->doc.type == CONF_T_GROUP || k->doc.type == CONF_T_GROUPS ||
		    k->doc.type == CONF_T_STRLIST)
			continue; /* empty, as calloc left them */
		if (store_text(ld, k, base, k->doc.def, msg, sizeof(msg)) < 0)
			err_at(ld, NULL, 0, "default of %s: %s", k->doc.path, msg);
	}
}

/* Free what the table says base holds. */
static void free_scope(enum scope_id scope, void *base)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		if (k->scope != scope)
			continue;
		if (k->doc.type == CONF_T_STRING) {
			free(*(char **)field(base, k));
		} else if (k->doc.type == CONF_T_STRLIST) {
			strlist_free(field(base, k));
		} else if (k->doc.type == CONF_T_GROUPS) {
			char *arr = *(char **)field(base, k);
			size_t n = *(size_t *)((char *)base + k->count_off);
			for (size_t j = 0; arr && j < n; j++)
				free_scope(k->elem_scope, arr + j * k->elem_size);
			free(arr);
		}
	}
}

void conf_free(struct conf *conf)
{
	if (!conf)
		return;
	free_scope(SCOPE_MAIN, conf);
	free(conf->path);
	free(conf);
}

/* --- walking the file ---------------------------------------------------- */

static const char *setting_type_name(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_GROUP: return "a group";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a float";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array";
	case CONFIG_TYPE_LIST: return "a list";
	}
	return "nothing";
}

static const char *expected_name(enum conf_type t)
{
	switch (t) {
	case CONF_T_GROUP: return "a group { ... }";
	case CONF_T_GROUPS: return "a list of groups ( { ... } )";
	case CONF_T_STRING: return "a string";
	case CONF_T_INT: return "an integer";
	case CONF_T_ENUM: return "a string";
	case CONF_T_MODE: return "a string of octal digits such as \"0660\"";
	case CONF_T_STRLIST: return "a list of strings [ ... ]";
	case CONF_T_BOOL: return "true or false";
	}
	return "?";
}

static void err_type(struct loader *ld, const config_setting_t *s, const struct key *k,
    const char *shown)
{
	err_s(ld, s, "%s: expected %s, got %s", shown, expected_name(k->doc.type),
	    setting_type_name(s));
}

/* Levenshtein distance, or a large number for names too long to bother. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	size_t row[64];

	if (la >= 64 || lb >= 64)
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];
		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j];
			size_t best = diag + (a[i - 1] != b[j - 1]);
			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			row[j] = best;
			diag = up;
		}
	}
	return row[lb];
}

/*
 * An unknown key: suggest the nearest key of the same group, or else a key
 * of that name elsewhere in the scope ("fsync" at the top: "spool.fsync").
 */
static void err_unknown(struct loader *ld, const struct scope *sc, const config_setting_t *s,
    const char *keypath, const char *shown_group, const char *shown)
{
	const char *name = config_setting_name(s);
	const struct key *best = NULL;
	size_t best_d = SIZE_MAX;
	char suggestion[256];

	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		size_t d;
		if (k->scope != sc->id || !is_child(k->doc.path, keypath))
			continue;
		d = edit_distance(name, last_name(k->doc.path));
		if (d < best_d) {
			best_d = d;
			best = k;
		}
	}
	if (best && best_d <= 2 && best_d < strlen(name)) {
		join(suggestion, sizeof(suggestion), shown_group, last_name(best->doc.path));
		err_s(ld, s, "unknown key '%s', did you mean '%s'?", shown, suggestion);
		return;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		if (k->scope != sc->id || strcmp(last_name(k->doc.path), name) != 0 ||
		    !strchr(rel_path(k->doc.path, sc->keypath), '.'))
			continue;
		join(suggestion, sizeof(suggestion), sc->shown, rel_path(k->doc.path, sc->keypath));
		err_s(ld, s, "unknown key '%s', did you mean '%s'?", shown, suggestion);
		return;
	}
	err_s(ld, s, "unknown key '%s'", shown);
}

static void load_group(struct loader *ld, struct scope *sc, const config_setting_t *grp,
    const char *keypath, const char *shown);

static void load_strlist(struct loader *ld, struct scope *sc, const struct key *k,
    const config_setting_t *s, const char *shown)
{
	struct conf_strlist *l = field(sc->base, k);
	int n;

	if (!config_setting_is_array(s) && !config_setting_is_list(s)) {
		err_type(ld, s, k, shown);
		return;
	}
	n = config_setting_length(s);
	if (n < k->doc.min) {
		err_s(ld, s, "%s: needs at least %lld %s", shown, (long long)k->doc.min,
		    k->doc.min == 1 ? "entry" : "entries");
		return;
	}
	strlist_free(l);
	l->v = calloc(n > 0 ? (size_t)n : 1, sizeof(char *));
	if (!l->v) {
		ld->oom = 1;
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char msg[768];
		const char *v;

		if (config_setting_type(e) != CONFIG_TYPE_STRING) {
			err_s(ld, e, "%s[%d]: expected a string, got %s", shown, i,
			    setting_type_name(e));
			continue;
		}
		v = config_setting_get_string(e);
		if (k->check && k->check(ld, v, msg, sizeof(msg)) < 0) {
			err_s(ld, e, "%s: %s", shown, msg);
			continue;
		}
		l->v[l->n] = ld_strdup(ld, v);
		if (l->v[l->n])
			l->n++;
	}
}

static void load_groups(struct loader *ld, struct scope *sc, const struct key *k,
    const config_setting_t *s, const char *shown)
{
	char **arr = field(sc->base, k);
	size_t *count = (size_t *)((char *)sc->base + k->count_off);
	unsigned n;

	if (!config_setting_is_list(s) &&
	    !(config_setting_is_array(s) && config_setting_length(s) == 0)) {
		err_type(ld, s, k, shown);
		return;
	}
	n = (unsigned)config_setting_length(s);
	*arr = calloc(n > 0 ? n : 1, k->elem_size);
	if (!*arr) {
		ld->oom = 1;
		return;
	}
	*count = n;
	for (unsigned i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, i);
		char shown_i[256];
		struct scope esc = {
			.id = k->elem_scope,
			.base = *arr + i * k->elem_size,
			.keypath = k->doc.path,
			.shown = shown_i,
			.file = config_setting_source_file(e),
			.line = config_setting_source_line(e),
		};

		snprintf(shown_i, sizeof(shown_i), "%.200s[%u]", shown, i);
		if (!config_setting_is_group(e)) {
			err_s(ld, e, "%s: expected a group { ... }, got %s", shown_i,
			    setting_type_name(e));
			continue;
		}
		apply_defaults(ld, esc.id, esc.base);
		load_group(ld, &esc, e, k->doc.path, shown_i);
		k->finish(ld, &esc, s, i);
	}
}

static void load_setting(struct loader *ld, struct scope *sc, const struct key *k,
    const config_setting_t *s, const char *shown)
{
	char msg[768];

	switch (k->doc.type) {
	case CONF_T_GROUP:
		if (!config_setting_is_group(s))
			err_type(ld, s, k, shown);
		else
			load_group(ld, sc, s, k->doc.path, shown);
		return;
	case CONF_T_GROUPS:
		load_groups(ld, sc, k, s, shown);
		return;
	case CONF_T_STRLIST:
		load_strlist(ld, sc, k, s, shown);
		return;
	case CONF_T_INT: {
		long long v;
		if (config_setting_type(s) != CONFIG_TYPE_INT &&
		    config_setting_type(s) != CONFIG_TYPE_INT64) {
			err_type(ld, s, k, shown);
			return;
		}
		v = config_setting_get_int64(s);
		for (size_t i = 0; i < ld->nbig; i++)
			if (ld->big_lines[i] == config_setting_source_line(s))
				return; /* its value is libconfig's wrong reading */
		if (v < k->doc.min || v > k->doc.max) {
			err_s(ld, s, "%s: %lld is out of range %lld..%lld", shown, v,
			    (long long)k->doc.min, (long long)k->doc.max);
			return;
		}
		*(int64_t *)field(sc->base, k) = v;
		return;
	}
	case CONF_T_BOOL:
		if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
			err_type(ld, s, k, shown);
			return;
		}
		*(int *)field(sc->base, k) = config_setting_get_bool(s) != 0;
		return;
	case CONF_T_STRING:
	case CONF_T_ENUM:
	case CONF_T_MODE:
		if (config_setting_type(s) != CONFIG_TYPE_STRING) {
			err_type(ld, s, k, shown);
			return;
		}
		if (store_text(ld, k, sc->base, config_setting_get_string(s), msg,
			sizeof(msg)) < 0)
			err_s(ld, s, "%s: %s", shown, msg);
		return;
	}
}

static void load_group(struct loader *ld, struct scope *sc, const config_setting_t *grp,
    const char *keypath, const char *shown)
{
	int n = config_setting_length(grp);

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(grp, (unsigned)i);
		const char *name = config_setting_name(s);
		const struct key *k;
		char path[256];
		char shown_s[256];

		join(path, sizeof(path), keypath, name);
		join(shown_s, sizeof(shown_s), shown, name);
		k = key_find(path);
		if (!k || k->scope != sc->id) {
			err_unknown(ld, sc, s, keypath, shown, shown_s);
			continue;
		}
		sc->seen[k - keys] = config_setting_source_line(s);
		load_setting(ld, sc, k, s, shown_s);
	}
}

/* Report required keys the scope lacks, at the nearest group that is there. */
static void check_required(struct loader *ld, const struct scope *sc)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		const char *rel = rel_path(k->doc.path, sc->keypath);
		unsigned line = sc->line;
		char shown[256];

		if (k->scope != sc->id || !(k->flags & KEY_REQUIRED) || sc->seen[i])
			continue;
		for (size_t j = 0; j < NKEYS; j++) {
			size_t len = strlen(keys[j].doc.path);
			if (keys[j].scope == sc->id && sc->seen[j] && keys[j].doc.type == CONF_T_GROUP &&
			    strncmp(k->doc.path, keys[j].doc.path, len) == 0 &&
			    k->doc.path[len] == '.')
				line = sc->seen[j];
		}
		join(shown, sizeof(shown), sc->shown, rel);
		err_at(ld, sc->file, line, "missing required key '%s'", shown);
	}
}

static const config_setting_t *member_at(const config_setting_t *list, unsigned index,
    const char *path)
{
	const config_setting_t *e = config_setting_get_elem(list, index);
	return e ? config_setting_lookup((config_setting_t *)e, path) : NULL;
}

static int empty(const char *s) { return !s || s[0] == '\0'; }

/* An error at the line of key of subscription index, else at the subscription's. */
static void err_member(struct loader *ld, struct scope *sc, const config_setting_t *list,
    unsigned index, const char *key, const char *what)
{
	const config_setting_t *s = member_at(list, index, key);

	err_at(ld, s ? config_setting_source_file(s) : sc->file,
	    s ? config_setting_source_line(s) : sc->line, "%s.%s: %s", sc->shown, key, what);
}

/* headers, tls and oauth2 across their keys. */
static void sub_finish_auth(struct loader *ld, struct scope *sc, const config_setting_t *list,
    unsigned index)
{
	struct conf_sub *sub = sc->base;
	const struct conf_oauth2 *o = &sub->oauth2;

	if (empty(sub->tls.cert_file) != empty(sub->tls.key_file))
		err_member(ld, sc, list, index, empty(sub->tls.cert_file) ? "tls.key_file" :
		    "tls.cert_file", "cert_file and key_file go together");
	if (empty(o->token_url)) {
		if (!empty(o->client_id) || !empty(o->client_secret) || !empty(o->scope))
			err_member(ld, sc, list, index, "oauth2", "needs token_url");
		return;
	}
	if (empty(o->client_id))
		err_member(ld, sc, list, index, "oauth2", "needs client_id with token_url");
	if (empty(o->client_secret))
		err_member(ld, sc, list, index, "oauth2", "needs client_secret with token_url");
	for (size_t i = 0; i < sub->headers.n; i++) {
		if (strncasecmp(sub->headers.v[i], "authorization=", 14) == 0)
			err_member(ld, sc, list, index, "headers",
			    "Authorization is set by oauth2; not both");
	}
}

static void sub_finish(struct loader *ld, struct scope *sc, const config_setting_t *list,
    unsigned index)
{
	struct conf_sub *sub = sc->base;
	struct conf_sub *subs = (struct conf_sub *)sub - index;
	const config_setting_t *s;

	check_required(ld, sc);
	if (!sub->group && sub->name && asprintf(&sub->group, "ackd-%s", sub->name) < 0) {
		sub->group = NULL;
		ld->oom = 1;
	}
	/* A url that was written but invalid is reported already. */
	s = member_at(list, index, "url");
	if (empty(sub->url) && empty(sub->unix_socket) &&
	    !(s && config_setting_type(s) == CONFIG_TYPE_STRING &&
		!empty(config_setting_get_string(s))))
		err_at(ld, sc->file, sc->line, "%s: needs url or unix_socket", sc->shown);

	if (sub->retry.initial_ms > sub->retry.max_ms) {
		s = member_at(list, index, "retry.initial_ms");
		err_at(ld, s ? config_setting_source_file(s) : sc->file,
		    s ? config_setting_source_line(s) : sc->line,
		    "%s.retry.initial_ms: %lld is above retry.max_ms (%lld)", sc->shown,
		    (long long)sub->retry.initial_ms, (long long)sub->retry.max_ms);
	}
	for (size_t i = 0; !empty(sub->dead_letter_topic) && i < sub->topics.n; i++) {
		if (strcmp(sub->topics.v[i], sub->dead_letter_topic) != 0)
			continue;
		s = member_at(list, index, "dead_letter_topic");
		err_s(ld, s, "%s.dead_letter_topic: \"%s\" is also one of the topics consumed",
		    sc->shown, sub->dead_letter_topic);
	}
	sub_finish_auth(ld, sc, list, index);
	for (unsigned j = 0; sub->name && j < index; j++) {
		const config_setting_t *first;
		if (!subs[j].name || strcmp(subs[j].name, sub->name) != 0)
			continue;
		s = member_at(list, index, "name");
		first = member_at(list, j, "name");
		err_s(ld, s, "%s.name: duplicate subscription name \"%s\" (first at line %u)",
		    sc->shown, sub->name, first ? config_setting_source_line(first) : 0);
		break;
	}
}

static void token_finish(struct loader *ld, struct scope *sc, const config_setting_t *list,
    unsigned index)
{
	struct conf_token *tok = sc->base;
	struct conf_token *toks = tok - index;

	check_required(ld, sc);
	for (unsigned j = 0; tok->token && j < index; j++) {
		if (!toks[j].token || strcmp(toks[j].token, tok->token) != 0)
			continue;
		/* The token is a secret: name its line, never its value. */
		const config_setting_t *s = member_at(list, index, "token");
		const config_setting_t *first = member_at(list, j, "token");
		err_s(ld, s, "%s.token: duplicate token (first at line %u)", sc->shown,
		    first ? config_setting_source_line(first) : 0);
		break;
	}
}

/*
 * Report decimal integers above 32 bits without the L suffix: libconfig 1.5
 * keeps only their low 32 bits. Skips comments and strings.
 */
static void scan_big_ints(struct loader *ld, const char *text)
{
	unsigned line = 1;
	const char *p = text;

	while (*p) {
		if (*p == '\n') {
			line++;
			p++;
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			while (*p && *p != '\n')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			for (p += 2; *p && !(p[0] == '*' && p[1] == '/'); p++)
				if (*p == '\n')
					line++;
			if (*p)
				p += 2;
		} else if (*p == '"') {
			for (p++; *p && *p != '"' && *p != '\n'; p++)
				if (*p == '\\' && p[1])
					p++;
			if (*p == '"')
				p++;
		} else if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
		    *p == '*' || *p == '@') {
			while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			    (*p >= '0' && *p <= '9') || *p == '_' || *p == '*' || *p == '-' ||
			    *p == '@')
				p++;
		} else if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
			for (p += 2; (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
			    (*p >= 'A' && *p <= 'F');
			     p++)
				;
		} else if ((*p >= '0' && *p <= '9') ||
		    ((*p == '-' || *p == '+') && p[1] >= '0' && p[1] <= '9')) {
			const char *start = p;
			long long v;

			p++;
			while (*p >= '0' && *p <= '9')
				p++;
			if (*p == '.' || *p == 'e' || *p == 'E') {
				while ((*p >= '0' && *p <= '9') || *p == '.' || *p == 'e' ||
				    *p == 'E' || *p == '-' || *p == '+')
					p++;
				continue;
			}
			if (*p == 'L') {
				p++;
				if (*p == 'L')
					p++;
				continue;
			}
			errno = 0;
			v = strtoll(start, NULL, 10);
			if (errno != ERANGE && v >= INT_MIN && v <= INT_MAX)
				continue;
			err_at(ld, NULL, line,
			    "integer %.*s needs the L suffix (%.*sL): without it libconfig "
			    "keeps only 32 bits",
			    (int)(p - start), start, (int)(p - start), start);
			if (ld->nbig < sizeof(ld->big_lines) / sizeof(ld->big_lines[0]))
				ld->big_lines[ld->nbig++] = line;
		} else {
			p++;
		}
	}
}

/* 1 for a host that only this machine can reach: 127.0.0.0/8, ::1, localhost. */
static int host_is_loopback(const char *hostport)
{
	char host[256];
	const char *colon = strrchr(hostport, ':');
	size_t len = colon ? (size_t)(colon - hostport) : strlen(hostport);
	struct in_addr a4;
	struct in6_addr a6;

	if (hostport[0] == '[' && len >= 2) {
		hostport++;
		len -= 2;
	}
	if (len >= sizeof(host))
		return 0;
	memcpy(host, hostport, len);
	host[len] = '\0';
	if (strcmp(host, "localhost") == 0)
		return 1;
	if (inet_pton(AF_INET, host, &a4) == 1)
		return (ntohl(a4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &a6) == 1)
		return IN6_IS_ADDR_LOOPBACK(&a6);
	return 0;
}

/*
 * Some values librdkafka checks only when a client is made (an unsupported
 * SASL mechanism, say): make one from each property list, without brokers,
 * and report its refusal at the list's line.
 */
static void quiet(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
	/* A probe client's notices (no brokers set, ...) are not the user's concern. */
	(void)rk;
	(void)level;
	(void)fac;
	(void)buf;
}

static void check_clients(struct loader *ld, const config_t *cfg, const struct conf *conf)
{
	static const struct {
		const char *path;
		rd_kafka_type_t type;
	} lists[] = {
		{ "kafka.producer", RD_KAFKA_PRODUCER },
		{ "kafka.consumer", RD_KAFKA_CONSUMER },
	};

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
		rd_kafka_conf_t *kc = rd_kafka_conf_dup(i == 0 ? ld->rk_producer : ld->rk_consumer);
		const config_setting_t *s = config_lookup(cfg, lists[i].path);
		char msg[512];
		rd_kafka_t *rk;

		if (!kc) {
			ld->oom = 1;
			return;
		}
		rd_kafka_conf_set_log_cb(kc, quiet);
		rk = rd_kafka_new(lists[i].type, kc, msg, sizeof(msg));
		if (rk) {
			rd_kafka_destroy(rk); /* it owned kc */
			continue;
		}
		rd_kafka_conf_destroy(kc);
		/* librdkafka's words may quote a value (a SASL mechanism, a key). */
		conf_hide_secrets(msg, sizeof(msg), i == 0 ? &conf->kafka.producer :
		    &conf->kafka.consumer);
		if (!s)
			s = config_lookup(cfg, "kafka");
		err_s(ld, s, "%s: librdkafka refuses these properties: %s", lists[i].path, msg);
	}
}

/* Secure by default: the publish API leaves this host only behind tokens. */
static void check_exposure(struct loader *ld, const config_t *cfg, const struct conf *conf)
{
	const config_setting_t *s;

	if (empty(conf->listen.http) || conf->auth.ntokens > 0 ||
	    host_is_loopback(conf->listen.http))
		return;
	s = config_lookup(cfg, "listen.http");
	err_s(ld, s, "listen.http: \"%s\" is not a loopback address; set auth.tokens before "
	    "exposing the publish API beyond this host", conf->listen.http);
}

/* A body of limits.max_body_bytes must fit in the budget of all bodies. */
static void check_body_budget(struct loader *ld, const config_t *cfg, const struct conf *conf)
{
	if (conf->limits.max_inflight_body_bytes >= conf->limits.max_body_bytes)
		return;
	const config_setting_t *s = config_lookup(cfg, "limits.max_inflight_body_bytes");

	/* One of the two is in the file: the defaults agree. */
	if (!s)
		s = config_lookup(cfg, "limits.max_body_bytes");
	if (!s)
		return;
	err_s(ld, s,
	    "limits.max_inflight_body_bytes: %lld is less than limits.max_body_bytes (%lld)",
	    (long long)conf->limits.max_inflight_body_bytes,
	    (long long)conf->limits.max_body_bytes);
}

/* Protecting the operations endpoints needs a token to protect them with. */
static void check_protect_ops(struct loader *ld, const config_t *cfg, const struct conf *conf)
{
	const config_setting_t *s = config_lookup(cfg, "auth.protect_ops");

	if (!conf->auth.protect_ops || conf->auth.ntokens > 0 || !s)
		return;
	err_s(ld, s,
	    "auth.protect_ops: true needs auth.tokens, or nobody can read /metrics and /v1/status");
}

/* Read the whole file; -1 with errno set when it cannot be read. */
static int read_text(const char *path, char **out)
{
	FILE *f = NULL;
	struct stat st;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int saved;

	f = fopen(path, "r");
	if (!f)
		goto fail;
	if (fstat(fileno(f), &st) < 0)
		goto fail;
	if (S_ISDIR(st.st_mode)) {
		errno = EISDIR;
		goto fail;
	}
	for (;;) {
		size_t n;
		if (cap - len < 4096) {
			char *nbuf = realloc(buf, cap + 65536);
			if (!nbuf)
				goto fail;
			buf = nbuf;
			cap += 65536;
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		errno = EIO;
		goto fail;
	}
	buf[len] = '\0';
	fclose(f);
	*out = buf;
	return 0;
fail:
	saved = errno;
	free(buf);
	if (f)
		fclose(f);
	errno = saved;
	return -1;
}

static void loader_fini(struct loader *ld)
{
	for (size_t i = 0; i < ld->nerrs; i++) {
		free(ld->errs[i].file);
		free(ld->errs[i].text);
	}
	free(ld->errs);
	if (ld->rk_producer)
		rd_kafka_conf_destroy(ld->rk_producer);
	if (ld->rk_consumer)
		rd_kafka_conf_destroy(ld->rk_consumer);
}

int conf_load(const char *path, struct conf **out, struct conf_errors *errs)
{
	struct loader ld = { .path = path };
	struct scope main_scope = {
		.id = SCOPE_MAIN,
		.keypath = "",
		.shown = "",
		.file = path,
		.line = 1,
	};
	struct conf_errors discard = { NULL, 0 };
	struct conf *conf = NULL;
	config_t cfg;
	char *text = NULL;
	char *dir = NULL;
	char *slash;

	*out = NULL;
	if (!errs)
		errs = &discard;
	errs->v = NULL;
	errs->n = 0;
	config_init(&cfg);

	if (read_text(path, &text) < 0) {
		err_at(&ld, NULL, 0, "cannot read: %s", strerror(errno));
		goto fail;
	}
	scan_big_ints(&ld, text);

	/* @include "x.conf" is relative to the file's directory. */
	dir = ld_strdup(&ld, path);
	if (!dir)
		goto fail;
	slash = strrchr(dir, '/');
	if (slash == dir)
		config_set_include_dir(&cfg, "/");
	else if (slash) {
		*slash = '\0';
		config_set_include_dir(&cfg, dir);
	}
	if (!config_read_file(&cfg, path)) {
		if (config_error_type(&cfg) == CONFIG_ERR_FILE_IO)
			err_at(&ld, config_error_file(&cfg), 0, "cannot read: %s",
			    config_error_text(&cfg));
		else
			err_at(&ld, config_error_file(&cfg), (unsigned)config_error_line(&cfg),
			    "%s", config_error_text(&cfg));
		goto fail;
	}

	conf = calloc(1, sizeof(*conf));
	ld.rk_producer = rd_kafka_conf_new();
	ld.rk_consumer = rd_kafka_conf_new();
	if (!conf || rk_set_floor(ld.rk_producer, 0) < 0 ||
	    rk_set_floor(ld.rk_consumer, 1) < 0) {
		ld.oom = 1;
		goto fail;
	}
	conf->path = ld_strdup(&ld, path);
	main_scope.base = conf;
	apply_defaults(&ld, SCOPE_MAIN, conf);
	load_group(&ld, &main_scope, config_root_setting(&cfg), "", "");
	check_required(&ld, &main_scope);
	check_exposure(&ld, &cfg, conf);
	check_body_budget(&ld, &cfg, conf);
	check_protect_ops(&ld, &cfg, conf);
	if (ld.nerrs == 0 && !ld.oom)
		check_clients(&ld, &cfg, conf);
	if (ld.nerrs > 0 || ld.oom)
		goto fail;

	hide_in_logs(conf);
	*out = conf;
	conf = NULL;
fail:
	if (*out == NULL)
		errs_move(&ld, errs);
	conf_errors_fini(&discard);
	conf_free(conf);
	free(dir);
	free(text);
	config_destroy(&cfg);
	loader_fini(&ld);
	return *out ? 0 : -1;
}

struct conf *conf_defaults(const char *brokers)
{
	struct loader ld = { .path = "(defaults)" };
	struct conf *conf = calloc(1, sizeof(*conf));

	if (!conf)
		goto fail;
	conf->path = ld_strdup(&ld, "(defaults)");
	conf->kafka.brokers = ld_strdup(&ld, brokers ? brokers : "");
	apply_defaults(&ld, SCOPE_MAIN, conf);
	if (ld.oom || ld.nerrs > 0)
		goto fail;
	loader_fini(&ld);
	return conf;
fail:
	loader_fini(&ld);
	conf_free(conf);
	return NULL;
}

/* --- comparing two configurations (reload) ---------------------------------- */

static int str_equal(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static int strlist_equal(const struct conf_strlist *a, const struct conf_strlist *b)
{
	if (a->n != b->n)
		return 0;
	for (size_t i = 0; i < a->n; i++)
		if (strcmp(a->v[i], b->v[i]) != 0)
			return 0;
	return 1;
}

static int scope_equal(enum scope_id scope, const void *a, const void *b);

static int key_equal(const struct key *k, const void *a, const void *b)
{
	const void *fa = (const char *)a + k->off, *fb = (const char *)b + k->off;

	switch (k->doc.type) {
	case CONF_T_GROUP:
		return 1; /* its keys are compared one by one */
	case CONF_T_STRING:
		return str_equal(*(char *const *)fa, *(char *const *)fb);
	case CONF_T_INT:
		return *(const int64_t *)fa == *(const int64_t *)fb;
	case CONF_T_ENUM:
	case CONF_T_BOOL:
		return *(const int *)fa == *(const int *)fb;
	case CONF_T_MODE:
		return *(const unsigned *)fa == *(const unsigned *)fb;
	case CONF_T_STRLIST:
		return strlist_equal(fa, fb);
	case CONF_T_GROUPS: {
		size_t na = *(const size_t *)((const char *)a + k->count_off);
		size_t nb = *(const size_t *)((const char *)b + k->count_off);
		const char *ea = *(const char *const *)fa, *eb = *(const char *const *)fb;
		if (na != nb)
			return 0;
		for (size_t i = 0; i < na; i++)
			if (!scope_equal(k->elem_scope, ea + i * k->elem_size, eb + i * k->elem_size))
				return 0;
		return 1;
	}
	}
	return 0;
}

static int scope_equal(enum scope_id scope, const void *a, const void *b)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].scope == scope && !key_equal(&keys[i], a, b))
			return 0;
	return 1;
}

int conf_sub_equal(const struct conf_sub *a, const struct conf_sub *b)
{
	return scope_equal(SCOPE_SUB, a, b);
}

void conf_diff(const struct conf *a, const struct conf *b,
    void (*fn)(const char *path, void *arg), void *arg)
{
	for (size_t i = 0; i < NKEYS; i++)
		if (keys[i].scope == SCOPE_MAIN && !key_equal(&keys[i], a, b))
			fn(keys[i].doc.path, arg);
}
