/*
 * reconcile: the start-up check of keyed records against Kafka (see
 * reconcile.c for why and its bounds).
 */
#ifndef ACKD_RECONCILE_H
#define ACKD_RECONCILE_H

#include <stdatomic.h>

#include "conf.h"
#include "idem.h"
#include "spool.h"

/*
 * Look for the keyed records the spool holds unacknowledged in Kafka, by
 * their ackd-id; each one found is acknowledged (spool_ack_keyed()) and its
 * key learns its partition and offset (idem_delivered()). Returns when
 * every topic was read, given up (logged, counted), or *stop is set. Calls
 * tick(arg) at least every 100 ms meanwhile. The kafka loop, before it
 * sends anything.
 */
void reconcile_run(const struct conf *conf, struct spool *sp, struct idem *idem,
    void (*tick)(void *arg), void *arg, const atomic_bool *stop);

#endif
