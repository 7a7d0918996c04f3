/*
 * redrive: publish a subscription's dead letters back to their source topics
 * (POST /v1/subscriptions/{name}/redrive), on a thread of its own.
 */
#ifndef ACKD_REDRIVE_H
#define ACKD_REDRIVE_H

#include <stdbool.h>
#include <stddef.h>

#include "conf.h"

#ifndef MUST_USE /* as in util.h */
#define MUST_USE __attribute__((warn_unused_result))
#endif

struct redrive;
struct spool;
struct control_cmd;

/*
 * Start redriving cs's dead_letter_topic from where the group
 * "<cs->group>.redrive" stopped, at most cmd->max dead letters (0: all there
 * are now). conf, cs and sp are borrowed and must outlive the redrive; cmd is
 * answered (control_answer()) from the redrive's thread when it ends.
 * 0, or -1 with err (cmd not answered).
 */
MUST_USE int redrive_start(const struct conf *conf, const struct conf_sub *cs, struct spool *sp,
    struct control_cmd *cmd, struct redrive **out, char *err, size_t errlen);

/* Whether it ended (its command answered): redrive_stop() then returns at once. */
bool redrive_ended(struct redrive *r);

/*
 * Ask it to end after the dead letters it holds are durable and their
 * position committed, wait for that, and free it. NULL ok.
 */
void redrive_stop(struct redrive *r);

/*
 * The record that republishes a dead letter: its headers less ackd-dlq-* and
 * ackd-redrive-count, plus ackd-redrive-count (the old count + 1). Pure, for
 * the unit tests. *topic points into hdrs (the ackd-dlq-source-topic value,
 * NUL-terminated into topic_buf); -1 when the dead letter has no usable
 * source topic. out_hdrs must have room for nhdrs + 2 entries; count_buf
 * holds the new count's text.
 */
struct spool_hdr;
MUST_USE int redrive_headers(const struct spool_hdr *hdrs, size_t nhdrs, struct spool_hdr *out_hdrs,
    size_t *out_n, char *topic_buf, size_t topic_buflen, char *count_buf, size_t count_buflen,
    bool *has_id);

#endif
