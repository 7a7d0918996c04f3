/*
 * test_conf: conf.c against the files in tests/fixtures/conf/, the example
 * config/ackd.conf and the man page docs/ackd.conf.5.
 *
 * Each error case asserts the exact lines a user would see from "ackd -n":
 * "file:line: message", all of them, in order.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>

#include "conf.h"

#define CONF_DIR FIXTURES "/conf/"
#define EXAMPLE FIXTURES "/../../config/ackd.conf"
#define MAN_PAGE FIXTURES "/../../docs/ackd.conf.5"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long len;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	assert_true(len >= 0);
	rewind(f);
	buf = malloc((size_t)len + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
	buf[len] = '\0';
	fclose(f);
	return buf;
}

static struct conf *load_ok(const char *path)
{
	struct conf *conf = NULL;
	struct conf_errors errs;

	if (conf_load(path, &conf, &errs) != 0) {
		for (size_t i = 0; i < errs.n; i++)
			print_error("%s\n", errs.v[i]);
		fail_msg("%s did not load", path);
	}
	assert_int_equal(errs.n, 0);
	assert_non_null(conf);
	return conf;
}

/*
 * Load a fixture that must fail and compare every error with want[], each
 * written as "line: message" after the file's path.
 */
static void expect_errors_at(const char *path, const char *const *want, size_t n)
{
	struct conf *conf = (struct conf *)&conf; /* must be reset to NULL */
	struct conf_errors errs;
	int same = 1;

	assert_int_equal(conf_load(path, &conf, &errs), -1);
	assert_null(conf);
	for (size_t i = 0; i < n && i < errs.n; i++) {
		char expected[1024];
		snprintf(expected, sizeof(expected), "%s:%s", path, want[i]);
		same &= strcmp(errs.v[i], expected) == 0;
	}
	if (!same || errs.n != n) {
		for (size_t i = 0; i < errs.n; i++)
			print_error("got: %s\n", errs.v[i]);
	}
	for (size_t i = 0; i < n && i < errs.n; i++) {
		char expected[1024];
		snprintf(expected, sizeof(expected), "%s:%s", path, want[i]);
		assert_string_equal(errs.v[i], expected);
	}
	assert_int_equal(errs.n, n);
	conf_errors_fini(&errs);
}

#define expect_errors(name, ...)                                                           \
	do {                                                                               \
		static const char *const want_[] = { __VA_ARGS__ };                        \
		expect_errors_at(CONF_DIR name, want_, sizeof(want_) / sizeof(want_[0]));  \
	} while (0)

/* --- valid files ---------------------------------------------------------- */

static void test_full(void **state)
{
	struct conf *c = load_ok(CONF_DIR "full.conf");
	const struct conf_sub *s;

	(void)state;
	assert_string_equal(c->path, CONF_DIR "full.conf");
	assert_string_equal(c->listen.http, "[::1]:9470");
	assert_string_equal(c->listen.unix_path, "/tmp/ackd-test.sock");
	assert_int_equal(c->listen.unix_mode, 0600);
	assert_string_equal(c->listen.unix_group, "kafka");
	assert_int_equal(c->limits.max_body_bytes, 2097152);
	assert_int_equal(c->limits.max_batch_records, 500);
	assert_int_equal(c->limits.max_header_bytes, 4096);
	assert_int_equal(c->limits.max_url_bytes, 1024);
	assert_int_equal(c->limits.max_connections, 64);
	assert_string_equal(c->kafka.brokers, "k1:9092,k2:9092");
	assert_int_equal(c->kafka.producer.n, 3);
	assert_string_equal(c->kafka.producer.v[0], "compression.codec=zstd");
	assert_string_equal(c->kafka.producer.v[1], "linger.ms=5");
	assert_string_equal(c->kafka.producer.v[2], "acks=-1");
	assert_int_equal(c->kafka.consumer.n, 1);
	assert_string_equal(c->kafka.consumer.v[0], "session.timeout.ms=30000");
	assert_string_equal(c->spool.dir, "/srv/ackd/spool");
	assert_int_equal(c->spool.fsync, CONF_FSYNC_INTERVAL);
	assert_int_equal(c->spool.fsync_interval_ms, 250);
	assert_true(c->spool.max_bytes == INT64_C(10737418240));
	assert_int_equal(c->spool.prealloc, 0);
	assert_int_equal(c->publish.ack, CONF_ACK_SPOOL);
	assert_int_equal(c->publish.ack_timeout_ms, 2500);
	assert_int_equal(c->publish.topics.n, 3);
	assert_string_equal(c->publish.topics.v[0], "orders");
	assert_string_equal(c->publish.topics.v[1], "audit.*");
	assert_string_equal(c->publish.topics.v[2], "log-[ab]?");
	assert_int_equal(c->auth.ntokens, 2);
	assert_string_equal(c->auth.tokens[0].token, "t0k3n-one");
	assert_int_equal(c->auth.tokens[0].topics.n, 1);
	assert_string_equal(c->auth.tokens[0].topics.v[0], "orders");
	assert_string_equal(c->auth.tokens[1].token, "t0k3n-two");
	assert_int_equal(c->auth.tokens[1].topics.n, 0);
	assert_string_equal(c->log.level, "debug");

	assert_int_equal(c->nsubs, 2);
	s = &c->subs[0];
	assert_string_equal(s->name, "orders");
	assert_int_equal(s->topics.n, 2);
	assert_string_equal(s->topics.v[0], "orders");
	assert_string_equal(s->topics.v[1], "orders.v2");
	assert_string_equal(s->group, "orders-webhook");
	assert_string_equal(s->url, "https://hooks.example.com/kafka");
	assert_string_equal(s->unix_socket, "");
	assert_int_equal(s->secrets.n, 2);
	assert_string_equal(s->secrets.v[0], "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
	assert_int_equal(s->timeout_ms, 5000);
	assert_int_equal(s->ordering, CONF_ORDER_KEY);
	assert_int_equal(s->max_in_flight, 8);
	assert_int_equal(s->retry.initial_ms, 100);
	assert_int_equal(s->retry.max_ms, 2000);
	assert_int_equal(s->retry.max_attempts, 0);
	assert_int_equal(s->retry.max_retry_after_ms, 60000);
	assert_string_equal(s->dead_letter_topic, "orders.dlq");
	assert_int_equal(s->on_exhausted, CONF_EXHAUSTED_DROP);
	assert_int_equal(s->start, CONF_START_LATEST);
	assert_int_equal(s->http_client, CONF_HTTP_CLIENT_LIBCURL);

	/* The second subscription takes every default. */
	s = &c->subs[1];
	assert_string_equal(s->name, "audit");
	assert_string_equal(s->group, "ackd-audit");
	assert_string_equal(s->url, "");
	assert_string_equal(s->unix_socket, "/run/app/hook.sock");
	assert_int_equal(s->secrets.n, 0);
	assert_int_equal(s->timeout_ms, 15000);
	assert_int_equal(s->ordering, CONF_ORDER_PARTITION);
	assert_int_equal(s->max_in_flight, 64);
	assert_int_equal(s->retry.initial_ms, 500);
	assert_int_equal(s->retry.max_ms, 60000);
	assert_int_equal(s->retry.max_attempts, 10);
	assert_int_equal(s->retry.max_retry_after_ms, 300000);
	assert_string_equal(s->dead_letter_topic, "");
	assert_int_equal(s->on_exhausted, CONF_EXHAUSTED_BLOCK);
	assert_int_equal(s->start, CONF_START_EARLIEST);
	assert_int_equal(s->http_client, CONF_HTTP_CLIENT_AUTO);
	conf_free(c);
}

static void assert_main_defaults(const struct conf *c)
{
	assert_string_equal(c->listen.http, "127.0.0.1:8470");
	assert_string_equal(c->listen.unix_path, "/run/ackd/ackd.sock");
	assert_int_equal(c->listen.unix_mode, 0660);
	assert_string_equal(c->listen.unix_group, "");
	assert_int_equal(c->limits.max_body_bytes, 1048576);
	assert_int_equal(c->limits.max_batch_records, 10000);
	assert_int_equal(c->limits.max_header_bytes, 16384);
	assert_int_equal(c->limits.max_url_bytes, 8192);
	assert_int_equal(c->limits.max_connections, 10000);
	assert_int_equal(c->kafka.producer.n, 0);
	assert_int_equal(c->kafka.consumer.n, 0);
	assert_string_equal(c->spool.dir, LOCALSTATEDIR "/lib/ackd");
	assert_int_equal(c->spool.fsync, CONF_FSYNC_ALWAYS);
	assert_int_equal(c->spool.fsync_interval_ms, 1000);
	assert_int_equal(c->spool.max_bytes, 1073741824);
	assert_int_equal(c->spool.prealloc, 1);
	assert_int_equal(c->publish.ack, CONF_ACK_KAFKA);
	assert_int_equal(c->publish.ack_timeout_ms, 10000);
	assert_int_equal(c->publish.spool_linger_ms, 10);
	assert_int_equal(c->publish.slice_us, 100);
	assert_int_equal(c->publish.idempotency_ttl_s, 86400);
	assert_int_equal(c->publish.idempotency_max_keys, 1000000);
	assert_int_equal(c->publish.topics.n, 0);
	assert_int_equal(c->auth.ntokens, 0);
	assert_int_equal(c->auth.protect_ops, 0);
	assert_int_equal(c->limits.max_connections_per_address, 1024);
	assert_int_equal(c->limits.max_inflight_body_bytes, 67108864);
	assert_int_equal(c->limits.header_timeout_ms, 10000);
	assert_int_equal(c->limits.body_timeout_ms, 60000);
	assert_string_equal(c->log.level, "info");
	assert_int_equal(c->nsubs, 0);
}

static void test_defaults_applied(void **state)
{
	struct conf *c = load_ok(CONF_DIR "minimal.conf");

	(void)state;
	assert_string_equal(c->kafka.brokers, "localhost:9092");
	assert_main_defaults(c);
	conf_free(c);
}

static void test_conf_defaults(void **state)
{
	struct conf *c = conf_defaults("127.0.0.1:39092");

	(void)state;
	assert_non_null(c);
	assert_string_equal(c->path, "(defaults)");
	assert_string_equal(c->kafka.brokers, "127.0.0.1:39092");
	assert_main_defaults(c);
	conf_free(c);
	conf_free(NULL);
	conf_errors_fini(NULL);
}

static void test_example_loads(void **state)
{
	struct conf *c = load_ok(EXAMPLE);

	(void)state;
	assert_string_equal(c->kafka.brokers, "localhost:9092");
	assert_int_equal(c->kafka.producer.n, 1);
	assert_string_equal(c->kafka.producer.v[0], "compression.codec=lz4");
	assert_string_equal(c->spool.dir, "/var/lib/ackd");
	assert_int_equal(c->nsubs, 0);
	assert_int_equal(c->auth.ntokens, 0);
	conf_free(c);
}

/* The example's "#|" lines, uncommented, must load too. */
static void test_example_commented_part_loads(void **state)
{
	char *text = slurp(EXAMPLE);
	char path[] = "/tmp/test_conf.XXXXXX";
	int fd = mkstemp(path);
	FILE *f;
	struct conf *c;

	(void)state;
	assert_true(fd >= 0);
	f = fdopen(fd, "w");
	assert_non_null(f);
	for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
		char *p = line + strspn(line, " ");
		fprintf(f, "%s\n", strncmp(p, "#|", 2) == 0 ? p + 2 : line);
	}
	fclose(f);
	free(text);

	c = load_ok(path);
	unlink(path);
	assert_int_equal(c->auth.ntokens, 2);
	assert_int_equal(c->auth.tokens[0].topics.n, 2);
	assert_false(c->auth.tokens[0].admin);
	assert_true(c->auth.tokens[1].admin);
	assert_int_equal(c->nsubs, 1);
	assert_string_equal(c->subs[0].name, "orders");
	assert_string_equal(c->subs[0].group, "ackd-orders");
	assert_string_equal(c->subs[0].url, "http://127.0.0.1:9000/kafka");
	assert_int_equal(c->subs[0].secrets.n, 1);
	assert_string_equal(c->subs[0].dead_letter_topic, "orders.dlq");
	assert_int_equal(c->subs[0].retry.max_retry_after_ms, 300000);
	conf_free(c);
}

/* --- the table and its documentation -------------------------------------- */

static void test_key_table(void **state)
{
	const struct conf_key *k;
	size_t i;

	(void)state;
	for (i = 0; (k = conf_key_get(i)) != NULL; i++) {
		assert_non_null(k->help);
		assert_true(strlen(k->help) > 10);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(conf_key_get(j)->path, k->path);
		if (k->type == CONF_T_INT) {
			long long def;
			assert_non_null(k->def);
			def = strtoll(k->def, NULL, 10);
			assert_true(k->min <= def && def <= k->max);
		}
		if (k->choices && k->def) {
			int found = 0;
			for (size_t j = 0; k->choices[j]; j++)
				found |= strcmp(k->choices[j], k->def) == 0;
			assert_true(found);
		}
	}
	assert_int_equal(i, 76);
	assert_string_equal(conf_type_name(CONF_T_STRLIST), "list of strings");
}

/*
 * ackd.conf(5) documents every key as ".It Cm path", with its default where
 * it has a fixed one; the example file names every key.
 */
static void test_docs_cover_every_key(void **state)
{
	char *man = slurp(MAN_PAGE);
	char *example = slurp(EXAMPLE);
	const struct conf_key *k;

	(void)state;
	for (size_t i = 0; (k = conf_key_get(i)) != NULL; i++) {
		char item[256];
		char assign[128], top[128];
		const char *at, *next, *name;

		snprintf(item, sizeof(item), "\n.It Cm %s\n", k->path);
		at = strstr(man, item);
		if (!at) {
			fail_msg("%s is not documented in ackd.conf.5", k->path);
			return;
		}
		next = strstr(at + 1, "\n.It ");
		if (!next)
			next = at + strlen(at);
		/* spool.dir's default depends on the build's localstatedir. */
		if (k->def && k->def[0] != '\0' && strcmp(k->path, "spool.dir") != 0) {
			char *found = strstr(at, k->def);
			if (!found || found > next)
				fail_msg("default %s of %s is not in its ackd.conf.5 entry", k->def,
				    k->path);
		}

		name = strrchr(k->path, '.') ? strrchr(k->path, '.') + 1 : k->path;
		snprintf(assign, sizeof(assign), " %s = ", name);
		snprintf(top, sizeof(top), "\n%s = ", name);
		if (!strstr(example, assign) && !strstr(example, top))
			fail_msg("%s is not in config/ackd.conf", k->path);
	}
	free(man);
	free(example);
}

/* --- one case per error class -------------------------------------------- */

static void test_err_unreadable(void **state)
{
	static const char *const none[] = { " cannot read: No such file or directory" };
	static const char *const dir[] = { " cannot read: Is a directory" };

	(void)state;
	expect_errors_at(CONF_DIR "does-not-exist.conf", none, 1);
	expect_errors_at(FIXTURES "/conf", dir, 1);
}

static void test_err_syntax(void **state)
{
	(void)state;
	/* libconfig stops at the first syntax error; nothing after it is checked. */
	expect_errors("syntax.conf", "4: syntax error");
}

static void test_err_unknown_key(void **state)
{
	(void)state;
	expect_errors("unknown.conf",
	    "3: unknown key 'spool.fsnyc', did you mean 'spool.fsync'?",
	    "4: unknown key 'spool.colour'",
	    "6: unknown key 'fsync_interval_ms', did you mean 'spool.fsync_interval_ms'?",
	    "9: unknown key 'subscriptions[0].retry.max_attemps', did you mean "
	    "'subscriptions[0].retry.max_attempts'?");
}

static void test_err_type(void **state)
{
	(void)state;
	expect_errors("types.conf",
	    "1: kafka.producer: expected a list of strings [ ... ], got a string",
	    "2: limits.max_body_bytes: expected an integer, got a string",
	    "2: limits.max_batch_records: expected an integer, got a float",
	    "3: listen.unix_mode: expected a string of octal digits such as \"0660\", got an "
	    "integer",
	    "4: spool: expected a group { ... }, got a string",
	    "5: publish.topics[0]: expected a string, got an integer",
	    "5: publish.topics[1]: expected a string, got an integer");
}

static void test_err_range(void **state)
{
	(void)state;
	expect_errors("range.conf",
	    "2: limits.max_body_bytes: 0 is out of range 1..1073741824",
	    "3: spool.max_bytes: 1024 is out of range 1048576..1125899906842624",
	    "6: subscriptions[0].max_in_flight: 10001 is out of range 1..10000",
	    "7: subscriptions[0].retry.max_attempts: -1 is out of range 0..1000000",
	    "7: subscriptions[0].retry.initial_ms: 5000 is above retry.max_ms (1000)");
}

static void test_err_big_int(void **state)
{
	(void)state;
	expect_errors("bigint.conf",
	    "3: integer 5000000000 needs the L suffix (5000000000L): without it libconfig "
	    "keeps only 32 bits");
}

static void test_err_enum(void **state)
{
	(void)state;
	expect_errors("enum.conf",
	    "2: spool.fsync: invalid value \"sometimes\" (expected always, interval or never)",
	    "3: publish.ack: invalid value \"broker\" (expected kafka or spool)",
	    "4: log.level: invalid value \"verbose\" (expected error, warn, info or debug)",
	    "7: subscriptions[0].ordering: invalid value \"random\" (expected partition, key or "
	    "none)",
	    "7: subscriptions[0].on_exhausted: invalid value \"skip\" (expected block or drop)",
	    "7: subscriptions[0].start: invalid value \"middle\" (expected earliest or latest)",
	    "8: subscriptions[0].http_client: invalid value \"curl\" (expected auto or libcurl)");
}

static void test_err_listen(void **state)
{
	(void)state;
	expect_errors("listen.conf",
	    "3: listen.http: \"localhost\" is not host:port with a port of 1-65535",
	    "4: listen.unix: socket path is longer than 107 bytes",
	    "5: listen.unix_mode: \"0999\" is not an octal mode such as \"0660\"");
}

static void test_err_client_refused(void **state)
{
	(void)state;
	expect_errors("client_refused.conf",
	    "3: kafka.producer: librdkafka refuses these properties: Unsupported SASL mechanism: "
	    "(hidden)");
}

/* No error message carries the value of a secret property or URL credentials. */
static void test_err_secret_values_hidden(void **state)
{
	(void)state;
	expect_errors("secret_props.conf",
	    "3: kafka.producer: \"sasl.passwrd=(hidden)\": No such configuration property: "
	    "\"sasl.passwrd\"",
	    "4: kafka.producer: \"ssl.keystore.pasword=(hidden)\": No such configuration property: "
	    "\"ssl.keystore.pasword\"",
	    "5: kafka.producer: \"passwd.typo=(hidden)\": No such configuration property: "
	    "\"passwd.typo\"",
	    "6: kafka.consumer: \"enable.auto.offset.store=true\" would commit offsets before "
	    "delivery: ackd requires enable.auto.offset.store=false",
	    "7: kafka.consumer: \"enable.auto.commit=true\" would commit offsets before delivery: "
	    "ackd requires enable.auto.commit=false",
	    "8: kafka.consumer: \"sasl.kerberos.min.time.before.relogin=(hidden)\": Invalid value "
	    "for configuration property \"sasl.kerberos.min.time.before.relogin\"",
	    "9: kafka.consumer: \"=(hidden)\" is not name=value",
	    "13: subscriptions[1].url: \"ftp://example.com/x\" is not an http:// or https:// URL "
	    "with a host");
	expect_errors("secret_client.conf",
	    "3: kafka.producer: librdkafka refuses these properties: Unsupported SASL mechanism: "
	    "(hidden)");
}

static void test_prop_is_secret(void **state)
{
	static const char *const secret[] = { "sasl.password", "SASL.USERNAME", "sasl.passwrd",
		"ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
		"ssl.keystore.location.key", "sasl.oauthbearer.client.secret", "my.token",
		"x.passwd" };
	static const char *const plain[] = { "linger.ms", "ssl.ca.location",
		"ssl.certificate.location", "security.protocol", "client.id", "acks" };

	(void)state;
	for (size_t i = 0; i < sizeof(secret) / sizeof(secret[0]); i++)
		if (!conf_prop_is_secret(secret[i]))
			fail_msg("%s is not taken for a secret", secret[i]);
	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
		if (conf_prop_is_secret(plain[i]))
			fail_msg("%s is taken for a secret", plain[i]);
}

static void test_err_exposed_without_tokens(void **state)
{
	struct conf *conf;

	(void)state;
	expect_errors("exposed.conf",
	    "2: listen.http: \"0.0.0.0:8470\" is not a loopback address; set auth.tokens before "
	    "exposing the publish API beyond this host");
	conf = load_ok(CONF_DIR "exposed_ok.conf");
	assert_int_equal(conf->auth.ntokens, 1);
	conf_free(conf);
}

static void test_limits_and_protect_ops(void **state)
{
	struct conf *conf;

	(void)state;
	expect_errors("limits_auth.conf",
	    "5: limits.max_inflight_body_bytes: 2097152 is less than limits.max_body_bytes "
	    "(4194304)",
	    "7: auth.protect_ops: true needs auth.tokens, or nobody can read /metrics and "
	    "/v1/status");
	expect_errors("protect_ops_type.conf",
	    "3: auth.protect_ops: expected true or false, got a string");
	conf = load_ok(CONF_DIR "protect_ops_ok.conf");
	assert_int_equal(conf->auth.protect_ops, 1);
	assert_int_equal(conf->limits.max_connections_per_address, 8);
	assert_int_equal(conf->limits.max_inflight_body_bytes, 2097152);
	assert_int_equal(conf->limits.header_timeout_ms, 500);
	assert_int_equal(conf->limits.body_timeout_ms, 1500);
	assert_string_equal(conf_type_name(CONF_T_BOOL), "boolean");
	conf_free(conf);
}

static void collect_path(const char *path, void *arg)
{
	char *buf = arg;

	strcat(buf, path);
	strcat(buf, " ");
}

static void test_reload_compare(void **state)
{
	struct conf *a = load_ok(CONF_DIR "reload_a.conf");
	struct conf *b = load_ok(CONF_DIR "reload_b.conf");
	char changed[512] = "";

	(void)state;
	assert_true(conf_sub_equal(&a->subs[0], &b->subs[0]));
	assert_false(conf_sub_equal(&a->subs[1], &b->subs[1]));
	assert_true(conf_sub_equal(&a->subs[1], &a->subs[1]));
	conf_diff(a, b, collect_path, changed);
	assert_string_equal(changed, "spool.dir log.level subscriptions ");
	changed[0] = '\0';
	conf_diff(a, a, collect_path, changed);
	assert_string_equal(changed, "");
	conf_free(a);
	conf_free(b);
}

static void test_err_topic_names(void **state)
{
	(void)state;
	expect_errors("topics.conf",
	    "2: publish.topics: topic pattern \"bad topic\" has ' ': only topic characters and "
	    "* ? [ ] are allowed",
	    "2: publish.topics: topic pattern \"open[\" has '[' without ']'",
	    "5: subscriptions[0].topics: topic name \"..\" is not allowed",
	    "5: subscriptions[0].topics: topic name \"a/b\" has '/': only a-z, A-Z, 0-9, '.', "
	    "'_' and '-' are allowed",
	    "5: subscriptions[0].topics: topic name must not be empty",
	    "7: subscriptions[0].dead_letter_topic: topic name \"dlq!\" has '!': only a-z, A-Z, "
	    "0-9, '.', '_' and '-' are allowed",
	    "8: subscriptions[1].dead_letter_topic: \"b\" is also one of the topics consumed");
}

static void test_err_duplicates(void **state)
{
	(void)state;
	expect_errors("dup_sub.conf",
	    "5: subscriptions[2].name: duplicate subscription name \"orders\" (first at line 3)",
	    "7: auth.tokens[1].token: duplicate token (first at line 7)");
}

/* headers ackd sets, broken headers, tls and oauth2 half set; no value shown */
static void test_err_outbound_auth(void **state)
{
	(void)state;
	expect_errors("outbound_auth.conf",
	    "4: subscriptions[0].headers: header Content-Type is set by ackd itself",
	    "4: subscriptions[0].headers: header ackd-topic: ackd-* headers are set by ackd itself",
	    "5: subscriptions[0].headers: \"Bad Name\" is not a valid header name",
	    "5: subscriptions[0].headers: a header is \"Name=value\"",
	    "5: subscriptions[0].headers: header X-Split: the value holds a control character",
	    "5: subscriptions[0].headers: header Traceparent is set by ackd itself",
	    "7: subscriptions[1].tls.ca_file: cannot read /nonexistent/ca.pem: No such file or "
	    "directory",
	    "7: subscriptions[1].tls.cert_file: cert_file and key_file go together",
	    "9: subscriptions[2].headers: Authorization is set by oauth2; not both",
	    "10: subscriptions[2].oauth2: needs client_secret with token_url",
	    "12: subscriptions[3].oauth2: needs token_url");
}

static void test_err_endpoint(void **state)
{
	(void)state;
	expect_errors("endpoint.conf",
	    "3: subscriptions[0]: needs url or unix_socket",
	    "4: subscriptions[1].url: \"ftp://h/\" is not an http:// or https:// URL with a host",
	    "5: subscriptions[2].url: \"http:///path\" is not an http:// or https:// URL with a "
	    "host");
}

static void test_err_secret(void **state)
{
	(void)state;
	expect_errors("secret.conf",
	    "4: subscriptions[0].secrets: secret does not start with \"whsec_\"",
	    "5: subscriptions[0].secrets: secret after \"whsec_\" is not base64",
	    "6: subscriptions[0].secrets: secret decodes to 5 bytes, not 24 to 64");
}

static void test_err_missing_brokers(void **state)
{
	(void)state;
	expect_errors("no_brokers.conf", "2: missing required key 'kafka.brokers'");
}

static void test_err_rdkafka(void **state)
{
	(void)state;
	expect_errors("rdkafka.conf",
	    "3: kafka.producer: \"linger.ms\" is not name=value",
	    "4: kafka.producer: \"no.such.property=(hidden)\": No such configuration property: "
	    "\"no.such.property\"",
	    "5: kafka.producer: \"batch.size=-5\": Configuration property \"batch.size\" value -5 "
	    "is outside allowed range 1..2147483647",
	    "6: kafka.producer: \"acks=1\" would weaken delivery: ackd requires acks=all",
	    "7: kafka.producer: \"request.required.acks=0\" would weaken delivery: ackd requires "
	    "acks=all",
	    "8: kafka.producer: \"enable.idempotence=false\" would weaken delivery: ackd requires "
	    "enable.idempotence=true",
	    "10: kafka.consumer: \"=(hidden)\" is not name=value",
	    "10: kafka.consumer: \"session.timeout.ms=banana\": Invalid value for configuration "
	    "property \"session.timeout.ms\"");
}

static void test_err_five_mistakes(void **state)
{
	(void)state;
	expect_errors("five.conf",
	    "4: unknown key 'listen.unix_mdoe', did you mean 'listen.unix_mode'?",
	    "8: kafka.producer: \"acks=1\" would weaken delivery: ackd requires acks=all",
	    "10: spool.fsync: invalid value \"sometimes\" (expected always, interval or never)",
	    "11: limits.max_batch_records: 0 is out of range 1..1000000",
	    "15: subscriptions[0].url: \"(not a URL)\" is not an http:// or https:// "
	    "URL with a host");
}

/* --- conf_apply_rdkafka --------------------------------------------------- */

static void test_apply_rdkafka(void **state)
{
	char *ok_v[] = { "linger.ms=7", "client.id=a=b" };
	char *bad_v[] = { "linger.ms=3", "no.such=1" };
	struct conf_strlist ok = { ok_v, 2 }, bad = { bad_v, 2 };
	rd_kafka_conf_t *rk = rd_kafka_conf_new();
	char err[512], buf[64];
	size_t len = sizeof(buf);

	(void)state;
	assert_int_equal(conf_apply_rdkafka(rk, &ok, err, sizeof(err)), 0);
	assert_int_equal(rd_kafka_conf_get(rk, "linger.ms", buf, &len), RD_KAFKA_CONF_OK);
	assert_string_equal(buf, "7");
	len = sizeof(buf);
	assert_int_equal(rd_kafka_conf_get(rk, "client.id", buf, &len), RD_KAFKA_CONF_OK);
	assert_string_equal(buf, "a=b");

	assert_int_equal(conf_apply_rdkafka(rk, &bad, err, sizeof(err)), -1);
	assert_string_equal(err,
	    "\"no.such=(hidden)\": No such configuration property: \"no.such\"");
	{
		char *v[] = { "sasl.mechanism=hunter2hunter2" };
		struct conf_strlist secret = { v, 1 };

		assert_int_equal(conf_apply_rdkafka(rk, &secret, err, sizeof(err)), 0);
		conf_hide_secrets(err, sizeof(err), &secret);
		strcpy(err, "Unsupported SASL mechanism: hunter2hunter2, hunter2hunter2!");
		conf_hide_secrets(err, sizeof(err), &secret);
		assert_string_equal(err, "Unsupported SASL mechanism: (hidden), (hidden)!");
	}
	rd_kafka_conf_destroy(rk);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_defaults_applied),
		cmocka_unit_test(test_conf_defaults),
		cmocka_unit_test(test_example_loads),
		cmocka_unit_test(test_example_commented_part_loads),
		cmocka_unit_test(test_key_table),
		cmocka_unit_test(test_docs_cover_every_key),
		cmocka_unit_test(test_err_unreadable),
		cmocka_unit_test(test_err_syntax),
		cmocka_unit_test(test_err_unknown_key),
		cmocka_unit_test(test_err_type),
		cmocka_unit_test(test_err_range),
		cmocka_unit_test(test_err_big_int),
		cmocka_unit_test(test_err_enum),
		cmocka_unit_test(test_err_listen),
		cmocka_unit_test(test_err_exposed_without_tokens),
		cmocka_unit_test(test_limits_and_protect_ops),
		cmocka_unit_test(test_err_client_refused),
		cmocka_unit_test(test_err_secret_values_hidden),
		cmocka_unit_test(test_prop_is_secret),
		cmocka_unit_test(test_reload_compare),
		cmocka_unit_test(test_err_topic_names),
		cmocka_unit_test(test_err_duplicates),
		cmocka_unit_test(test_err_outbound_auth),
		cmocka_unit_test(test_err_endpoint),
		cmocka_unit_test(test_err_secret),
		cmocka_unit_test(test_err_missing_brokers),
		cmocka_unit_test(test_err_rdkafka),
		cmocka_unit_test(test_err_five_mistakes),
		cmocka_unit_test(test_apply_rdkafka),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
