/*
 * conf: ackd.conf, read once into a validated, immutable struct conf.
 *
 * Every key is described by one table in conf.c (name, type, default, bounds,
 * help); the parser, the validator and ackd.conf(5) follow that table.
 * Errors are collected, not stopped at: conf_load() reports every one as
 * "file:line: message".
 */
#ifndef ACKD_CONF_H
#define ACKD_CONF_H

#include <stddef.h>
#include <stdint.h>

enum conf_fsync { CONF_FSYNC_ALWAYS, CONF_FSYNC_INTERVAL, CONF_FSYNC_NEVER };
enum conf_ack { CONF_ACK_KAFKA, CONF_ACK_SPOOL };
enum conf_ordering { CONF_ORDER_PARTITION, CONF_ORDER_KEY, CONF_ORDER_NONE };
enum conf_exhausted { CONF_EXHAUSTED_BLOCK, CONF_EXHAUSTED_DROP };
enum conf_start { CONF_START_EARLIEST, CONF_START_LATEST };
enum conf_concurrency { CONF_CONCURRENCY_FIXED, CONF_CONCURRENCY_ADAPTIVE };
enum conf_http_client { CONF_HTTP_CLIENT_AUTO, CONF_HTTP_CLIENT_LIBCURL };

struct conf_strlist {
	char **v;
	size_t n;
};

struct conf_token {
	char *token;
	struct conf_strlist topics; /* glob patterns; empty: every topic */
	int admin;                  /* may use the Control API (/v1/subscriptions) */
};

struct conf_retry {
	int64_t initial_ms;
	int64_t max_ms;
	int64_t max_attempts; /* 0: unlimited */
	int64_t max_retry_after_ms;
};

/* A subscription's TLS settings; each "" when unset. */
struct conf_tls {
	char *ca_file;   /* CA certificates to trust for https */
	char *cert_file; /* client certificate (PEM), for mutual TLS */
	char *key_file;  /* its private key (PEM) */
};

/* Several messages a request (docs/webhooks.md, "Batches"); max_messages 1: one. */
struct conf_batch {
	int64_t max_messages;
	int64_t max_bytes;   /* of the messages' keys, values and headers */
	int64_t max_wait_ms; /* to fill a batch */
};

/* OAuth 2.0 client credentials; token_url "" when unused. */
struct conf_oauth2 {
	char *token_url;
	char *client_id;
	char *client_secret;
	char *scope; /* "" sends none */
};

struct conf_sub {
	char *name;
	struct conf_strlist topics;
	char *group;
	char *url;
	char *unix_socket; /* "" when unset */
	struct conf_strlist secrets; /* "whsec_..." as written */
	int64_t timeout_ms;
	enum conf_ordering ordering;
	int64_t max_in_flight;
	struct conf_retry retry;
	char *dead_letter_topic; /* "" when unset */
	enum conf_exhausted on_exhausted;
	enum conf_start start;
	enum conf_concurrency concurrency;
	int64_t rate_limit; /* messages a second; 0: no cap */
	struct conf_batch batch;
	struct conf_strlist headers; /* static request headers, "Name=value" */
	struct conf_tls tls;
	struct conf_oauth2 oauth2;
	enum conf_http_client http_client;
};

struct conf {
	char *path; /* the file read, or "(defaults)" */

	struct {
		char *http;       /* "host:port", "" disables */
		char *unix_path;  /* "" disables */
		unsigned unix_mode;
		char *unix_group; /* "" keeps the process group */
	} listen;

	struct {
		int64_t max_body_bytes;
		int64_t max_batch_records;
		int64_t max_header_bytes;
		int64_t max_url_bytes;
		int64_t max_connections;
		int64_t max_connections_per_address;
		int64_t max_inflight_body_bytes;
		int64_t header_timeout_ms;
		int64_t body_timeout_ms;
	} limits;

	struct {
		char *brokers;
		struct conf_strlist producer; /* "name=value" */
		struct conf_strlist consumer;
	} kafka;

	struct {
		char *dir;
		enum conf_fsync fsync;
		int64_t fsync_interval_ms;
		int64_t max_bytes;
		int prealloc; /* write segments over zeros written ahead */
	} spool;

	struct {
		enum conf_ack ack;
		int64_t ack_timeout_ms;
		int64_t spool_linger_ms; /* keep records no one waits for back so long */
		int64_t slice_us; /* scheduler slice of the answer's threads; 0: default */
		struct conf_strlist topics; /* glob patterns; empty: every topic */
		int64_t idempotency_ttl_s;
		int64_t idempotency_max_keys;
	} publish;

	struct {
		struct conf_token *tokens;
		size_t ntokens;
		int protect_ops; /* /metrics and /v1/status need a token too */
	} auth;

	struct {
		char *level; /* "error", "warn", "info", "debug" */
	} log;

	struct conf_sub *subs;
	size_t nsubs;
};

/* Error messages collected while loading, each "file:line: message". */
struct conf_errors {
	char **v;
	size_t n;
};

/*
 * Read and validate path. errs is emptied first. On success returns 0 and
 * *out (free with conf_free()). On failure returns -1, *out is NULL and errs
 * holds every problem found, sorted by line (free with conf_errors_fini()).
 */
int conf_load(const char *path, struct conf **out, struct conf_errors *errs);

/*
 * A configuration of defaults only, brokers from the argument (--dev).
 * NULL when out of memory; free with conf_free().
 */
struct conf *conf_defaults(const char *brokers);

/* Both are no-ops on NULL. */
void conf_free(struct conf *conf);
void conf_errors_fini(struct conf_errors *errs);

/*
 * The key table, for documentation and its tests. A key inside a list of
 * groups is named by the list: "subscriptions.retry.max_ms" is max_ms in the
 * retry group of every subscription.
 */
enum conf_type {
	CONF_T_GROUP,   /* a group of keys: listen = { ... }; */
	CONF_T_GROUPS,  /* a list of groups: subscriptions = ( { ... }, { ... } ); */
	CONF_T_STRING,
	CONF_T_INT,     /* 64-bit; above 2147483647 libconfig needs the L suffix */
	CONF_T_ENUM,    /* a string, one of choices */
	CONF_T_MODE,    /* a string of octal digits: "0660" */
	CONF_T_STRLIST, /* [ "a", "b" ] */
	CONF_T_BOOL,    /* true or false, stored as an int 1 or 0 */
};

struct conf_key {
	const char *path;
	enum conf_type type;
	const char *def;            /* the default as written in the file; NULL: none */
	int64_t min, max;           /* CONF_T_INT: bounds; CONF_T_STRLIST: min entries */
	const char *const *choices; /* NULL-terminated valid values, or NULL */
	const char *help;
};

/* The i-th key of the table (borrowed, static), NULL past the last one. */
const struct conf_key *conf_key_get(size_t i);

/* "string", "integer", "group", ...: the type as ackd.conf(5) names it. */
const char *conf_type_name(enum conf_type type);

/* 1 when every key of the two subscriptions is equal (reload keeps it running). */
int conf_sub_equal(const struct conf_sub *a, const struct conf_sub *b);

/*
 * Call fn with the path of every key outside subscriptions whose value
 * differs between a and b ("spool.dir", "auth.tokens", ...).
 */
void conf_diff(const struct conf *a, const struct conf *b,
    void (*fn)(const char *path, void *arg), void *arg);

/*
 * Whether the value of librdkafka property name is a secret, never logged:
 * sasl.*, ssl.*key*, *password*, *passwd*, *secret*, *token*.
 */
int conf_prop_is_secret(const char *name);

/* Replace, in text, the value of every secret property of props by "(hidden)". */
void conf_hide_secrets(char *text, size_t textlen, const struct conf_strlist *props);

/*
 * Apply a "name=value" list to a librdkafka configuration object (borrowed),
 * as kcat -X does. On error fills err with librdkafka's text (a secret
 * property's value hidden) and returns -1.
 */
struct rd_kafka_conf_s;
int conf_apply_rdkafka(struct rd_kafka_conf_s *rk_conf, const struct conf_strlist *props,
    char *err, size_t errlen);

#endif
