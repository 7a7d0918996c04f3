/*
 * devkafka: a mock cluster needs a librdkafka handle to live in; this module
 * owns both. librdkafka runs the brokers on threads of its own.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "devkafka.h"
#include "log.h"
#include "util.h"

struct devkafka {
	rd_kafka_t *rk;
	rd_kafka_mock_cluster_t *mc;
};

int devkafka_start(int brokers, struct devkafka **out, char *err, size_t errlen)
{
	struct devkafka *dk = xcalloc(1, sizeof(*dk));
	rd_kafka_conf_t *kc = rd_kafka_conf_new();

	/* The handle only hosts the cluster; it never connects anywhere. */
	if (rd_kafka_conf_set(kc, "log_level", "3", err, errlen) != RD_KAFKA_CONF_OK) {
		rd_kafka_conf_destroy(kc);
		goto fail;
	}
	dk->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, errlen);
	if (!dk->rk) {
		rd_kafka_conf_destroy(kc);
		goto fail;
	}
	dk->mc = rd_kafka_mock_cluster_new(dk->rk, brokers);
	if (!dk->mc) {
		snprintf(err, errlen, "cannot create the mock cluster");
		goto fail;
	}
	*out = dk;
	return 0;
fail:
	if (dk->rk)
		rd_kafka_destroy(dk->rk);
	free(dk);
	return -1;
}

const char *devkafka_bootstrap(const struct devkafka *dk)
{
	return rd_kafka_mock_cluster_bootstraps(dk->mc);
}

void devkafka_stop(struct devkafka *dk)
{
	if (!dk)
		return;
	rd_kafka_mock_cluster_destroy(dk->mc);
	rd_kafka_destroy(dk->rk);
	free(dk);
}
