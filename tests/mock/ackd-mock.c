/*
 * ackd-mock: librdkafka's mock Kafka cluster, driven over stdin, for the
 * integration tests' fault injection (tests/integration/mock.py).
 *
 * Usage: ackd-mock [BROKERS]   (default 3 brokers)
 *
 * Prints the cluster's bootstrap servers as the first stdout line, then reads
 * one command per stdin line and answers each with one line, "ok" or
 * "error <text>":
 *
 *   topic NAME PARTITIONS RF              create a topic
 *   down BROKER / up BROKER               take a broker's listener down / up
 *   leader TOPIC PARTITION BROKER         move a partition's leader
 *   rtt BROKER MS                         delay a broker's responses
 *   errors APIKEY ERR [ERR...]            fail the next requests of that type
 *   broker_errors BROKER APIKEY ERR...    the same, on one broker only
 *   topic_error TOPIC ERR                 topic error in metadata (NO_ERROR clears)
 *   clear APIKEY                          drop the cluster's pending errors
 *   quit                                  exit 0 (so does end of input)
 *
 * APIKEY is a number or a request name (Produce, Metadata, ...). ERR is a
 * librdkafka error name with or without the RD_KAFKA_RESP_ERR_ prefix
 * (NOT_ENOUGH_REPLICAS, REQUEST_TIMED_OUT, _TRANSPORT, ...) or a number.
 *
 * The main thread reads commands; the mock cluster runs in librdkafka's own
 * threads, owned by the rd_kafka_t handle created here.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_ARGS 64

static const struct {
	const char *name;
	int16_t key;
} api_keys[] = {
	{ "Produce", 0 },
	{ "Fetch", 1 },
	{ "ListOffsets", 2 },
	{ "Metadata", 3 },
	{ "OffsetCommit", 8 },
	{ "OffsetFetch", 9 },
	{ "FindCoordinator", 10 },
	{ "JoinGroup", 11 },
	{ "Heartbeat", 12 },
	{ "LeaveGroup", 13 },
	{ "SyncGroup", 14 },
	{ "DescribeGroups", 15 },
	{ "ListGroups", 16 },
	{ "ApiVersions", 18 },
	{ "CreateTopics", 19 },
	{ "InitProducerId", 22 },
	{ "AddPartitionsToTxn", 24 },
	{ "AddOffsetsToTxn", 25 },
	{ "EndTxn", 26 },
	{ "TxnOffsetCommit", 28 },
	{ "DescribeConfigs", 32 },
	{ "OffsetForLeaderEpoch", 23 },
};

static int
parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int
parse_api_key(const char *s, int16_t *out)
{
	long v;
	size_t i;

	for (i = 0; i < sizeof(api_keys) / sizeof(api_keys[0]); i++) {
		if (strcasecmp(s, api_keys[i].name) == 0) {
			*out = api_keys[i].key;
			return 0;
		}
	}
	if (parse_long(s, 0, INT16_MAX, &v) == -1)
		return -1;
	*out = (int16_t)v;
	return 0;
}

static int
parse_err(const char *s, rd_kafka_resp_err_t *out)
{
	const struct rd_kafka_err_desc *descs;
	size_t n, i;
	long v;

	if (strncmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
		s += 18;
	rd_kafka_get_err_descs(&descs, &n);
	for (i = 0; i < n; i++) {
		if (descs[i].name != NULL && strcasecmp(s, descs[i].name) == 0) {
			*out = descs[i].code;
			return 0;
		}
	}
	if (parse_long(s, INT_MIN, INT_MAX, &v) == -1)
		return -1;
	*out = (rd_kafka_resp_err_t)v;
	return 0;
}

static int
parse_broker(const char *s, int32_t *out)
{
	long v;

	if (parse_long(s, 0, INT32_MAX, &v) == -1)
		return -1;
	*out = (int32_t)v;
	return 0;
}

static void
reply_err(rd_kafka_resp_err_t err)
{
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		printf("ok\n");
	else
		printf("error %s: %s\n", rd_kafka_err2name(err), rd_kafka_err2str(err));
}

static int
parse_errs(char **argv, int argc, rd_kafka_resp_err_t *errs, const char **bad)
{
	int i;

	for (i = 0; i < argc; i++) {
		if (parse_err(argv[i], &errs[i]) == -1) {
			*bad = argv[i];
			return -1;
		}
	}
	return 0;
}

static void
cmd_topic(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	long parts, rf;

	if (argc != 4 || parse_long(argv[2], 1, 100000, &parts) == -1 ||
	    parse_long(argv[3], 1, 1000, &rf) == -1) {
		printf("error usage: topic NAME PARTITIONS RF\n");
		return;
	}
	reply_err(rd_kafka_mock_topic_create(mc, argv[1], (int)parts, (int)rf));
}

static void
cmd_updown(rd_kafka_mock_cluster_t *mc, char **argv, int argc, int up)
{
	int32_t broker;

	if (argc != 2 || parse_broker(argv[1], &broker) == -1) {
		printf("error usage: %s BROKER\n", argv[0]);
		return;
	}
	reply_err(up ? rd_kafka_mock_broker_set_up(mc, broker) :
		       rd_kafka_mock_broker_set_down(mc, broker));
}

static void
cmd_leader(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	long part;
	int32_t broker;

	if (argc != 4 || parse_long(argv[2], 0, INT32_MAX, &part) == -1 ||
	    parse_broker(argv[3], &broker) == -1) {
		printf("error usage: leader TOPIC PARTITION BROKER\n");
		return;
	}
	reply_err(rd_kafka_mock_partition_set_leader(mc, argv[1], (int32_t)part, broker));
}

static void
cmd_rtt(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	int32_t broker;
	long ms;

	if (argc != 3 || parse_broker(argv[1], &broker) == -1 ||
	    parse_long(argv[2], 0, INT_MAX, &ms) == -1) {
		printf("error usage: rtt BROKER MS\n");
		return;
	}
	reply_err(rd_kafka_mock_broker_set_rtt(mc, broker, (int)ms));
}

static void
cmd_errors(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	rd_kafka_resp_err_t errs[MAX_ARGS];
	const char *bad = NULL;
	int16_t key;

	if (argc < 3 || parse_api_key(argv[1], &key) == -1) {
		printf("error usage: errors APIKEY ERR [ERR...]\n");
		return;
	}
	if (parse_errs(argv + 2, argc - 2, errs, &bad) == -1) {
		printf("error unknown error name %s\n", bad);
		return;
	}
	rd_kafka_mock_push_request_errors_array(mc, key, (size_t)(argc - 2), errs);
	printf("ok\n");
}

static void
cmd_broker_errors(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	rd_kafka_resp_err_t errs[MAX_ARGS], err;
	const char *bad = NULL;
	int32_t broker;
	int16_t key;
	int i;

	if (argc < 4 || parse_broker(argv[1], &broker) == -1 ||
	    parse_api_key(argv[2], &key) == -1) {
		printf("error usage: broker_errors BROKER APIKEY ERR [ERR...]\n");
		return;
	}
	if (parse_errs(argv + 3, argc - 3, errs, &bad) == -1) {
		printf("error unknown error name %s\n", bad);
		return;
	}
	/* One push per error keeps the order and avoids a variadic array. */
	for (i = 0; i < argc - 3; i++) {
		err = rd_kafka_mock_broker_push_request_error_rtts(mc, broker, key, 1,
		    errs[i], 0);
		if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
			reply_err(err);
			return;
		}
	}
	printf("ok\n");
}

static void
cmd_topic_error(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	rd_kafka_resp_err_t err;

	if (argc != 3 || parse_err(argv[2], &err) == -1) {
		printf("error usage: topic_error TOPIC ERR\n");
		return;
	}
	rd_kafka_mock_topic_set_error(mc, argv[1], err);
	printf("ok\n");
}

static void
cmd_clear(rd_kafka_mock_cluster_t *mc, char **argv, int argc)
{
	int16_t key;

	if (argc != 2 || parse_api_key(argv[1], &key) == -1) {
		printf("error usage: clear APIKEY\n");
		return;
	}
	rd_kafka_mock_clear_request_errors(mc, key);
	printf("ok\n");
}

/* Split line in place on blanks; returns the word count. */
static int
split(char *line, char **argv, int max)
{
	int argc = 0;
	char *tok, *save = NULL;

	for (tok = strtok_r(line, " \t\r\n", &save); tok != NULL && argc < max;
	     tok = strtok_r(NULL, " \t\r\n", &save))
		argv[argc++] = tok;
	return tok == NULL ? argc : -1;
}

/* Runs one command line; returns 1 on quit, else 0. */
static int
run_command(rd_kafka_mock_cluster_t *mc, char *line)
{
	char *argv[MAX_ARGS];
	int argc;

	argc = split(line, argv, MAX_ARGS);
	if (argc == -1) {
		printf("error too many words\n");
		return 0;
	}
	if (argc == 0) {
		printf("error empty command\n");
		return 0;
	}
	if (strcmp(argv[0], "quit") == 0) {
		printf("ok\n");
		return 1;
	}
	if (strcmp(argv[0], "topic") == 0)
		cmd_topic(mc, argv, argc);
	else if (strcmp(argv[0], "down") == 0)
		cmd_updown(mc, argv, argc, 0);
	else if (strcmp(argv[0], "up") == 0)
		cmd_updown(mc, argv, argc, 1);
	else if (strcmp(argv[0], "leader") == 0)
		cmd_leader(mc, argv, argc);
	else if (strcmp(argv[0], "rtt") == 0)
		cmd_rtt(mc, argv, argc);
	else if (strcmp(argv[0], "errors") == 0)
		cmd_errors(mc, argv, argc);
	else if (strcmp(argv[0], "broker_errors") == 0)
		cmd_broker_errors(mc, argv, argc);
	else if (strcmp(argv[0], "topic_error") == 0)
		cmd_topic_error(mc, argv, argc);
	else if (strcmp(argv[0], "clear") == 0)
		cmd_clear(mc, argv, argc);
	else
		printf("error unknown command %s\n", argv[0]);
	return 0;
}

int
main(int argc, char **argv)
{
	char errstr[512], line[4096], num[16];
	rd_kafka_conf_t *conf;
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
	long brokers = 3;
	int quit = 0;

	if (argc > 2 || (argc == 2 && parse_long(argv[1], 1, 64, &brokers) == -1)) {
		fprintf(stderr, "usage: ackd-mock [BROKERS]   (1-64, default 3)\n");
		return 2;
	}

	/* test.mock.num.brokers makes this handle own the cluster and use it
	 * as its bootstrap, which keeps librdkafka from warning. */
	snprintf(num, sizeof(num), "%ld", brokers);
	conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "test.mock.num.brokers", num, errstr, sizeof(errstr)) !=
	    RD_KAFKA_CONF_OK) {
		fprintf(stderr, "ackd-mock: %s\n", errstr);
		rd_kafka_conf_destroy(conf);
		return 1;
	}
	rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
	if (rk == NULL) {
		fprintf(stderr, "ackd-mock: rd_kafka_new: %s\n", errstr);
		rd_kafka_conf_destroy(conf);
		return 1;
	}
	mc = rd_kafka_handle_mock_cluster(rk);
	if (mc == NULL) {
		fprintf(stderr, "ackd-mock: librdkafka created no mock cluster\n");
		rd_kafka_destroy(rk);
		return 1;
	}

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("%s\n", rd_kafka_mock_cluster_bootstraps(mc));

	while (!quit && fgets(line, sizeof(line), stdin) != NULL) {
		if (strchr(line, '\n') == NULL && !feof(stdin)) {
			int c;

			while ((c = getchar()) != EOF && c != '\n')
				;
			printf("error line too long\n");
			continue;
		}
		quit = run_command(mc, line);
	}

	rd_kafka_destroy(rk); /* destroys the cluster it owns */
	return 0;
}
