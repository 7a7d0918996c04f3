/*
 * webhook_batch: what a batch request carries that is pure computation: its
 * JSON body ({"messages":[...]}) and its webhook-id. No I/O; see
 * docs/webhooks.md, "Batches", for the format.
 */
#ifndef ACKD_WEBHOOK_BATCH_H
#define ACKD_WEBHOOK_BATCH_H

#include <stdbool.h>
#include <stddef.h>

#include "webhook.h"
#include "webhook_sign.h"

/* A growable byte buffer; {NULL, 0, 0} is an empty one. */
struct wbuf {
	char *p;
	size_t len, cap;
};

/* Whether n bytes are well-formed UTF-8 (RFC 3629: no overlongs, no surrogates). */
bool utf8_valid(const void *s, size_t n);

/*
 * "batch_" + the first 32 hex digits of SHA-256 over
 * "{topic}/{partition}/{offset}\n" of each message, in order.
 */
void webhook_batch_id(const struct webhook_msg *ms, size_t n, char out[WEBHOOK_ID_MAX]);

/* Replace b's contents with the JSON body of the n messages. */
void webhook_batch_body(struct wbuf *b, const struct webhook_msg *ms, size_t n);

#endif
