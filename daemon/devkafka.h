/*
 * devkafka: the embedded Kafka of --dev, librdkafka's mock cluster.
 *
 * Three brokers in this process, topics created on first use, nothing kept:
 * a real protocol peer for trying ackd without a Kafka install. Not for
 * production: it keeps everything in memory and loses it at exit.
 */
#ifndef ACKD_DEVKAFKA_H
#define ACKD_DEVKAFKA_H

#include <stddef.h>

struct devkafka;

int devkafka_start(int brokers, struct devkafka **out, char *err, size_t errlen);
const char *devkafka_bootstrap(const struct devkafka *dk);
void devkafka_stop(struct devkafka *dk); /* NULL ok */

#endif
