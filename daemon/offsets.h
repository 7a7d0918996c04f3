/*
 * offsets: which offset of a partition may be committed, when messages
 * complete out of order. Pure data structure, no I/O, one thread.
 *
 * Messages are added in offset order as they are fetched (offsets may skip,
 * as in compacted topics); each completes once. The committable offset is
 * one past the highest offset below which every added message completed:
 * what Kafka's commit means ("the next offset to read").
 */
#ifndef ACKD_OFFSETS_H
#define ACKD_OFFSETS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

struct offsets;

/*
 * Tracking starts at start (the fetch position), which is the committable
 * offset while nothing has been added. Never NULL (out of memory is fatal, as with
 * xmalloc()); free with offsets_free().
 */
struct offsets *offsets_new(int64_t start);
void offsets_free(struct offsets *o); /* NULL ok */

/*
 * A message at offset was fetched. Offsets must increase, starting at start
 * or later; -1 if not (nothing changes).
 */
MUST_USE int offsets_add(struct offsets *o, int64_t offset);

/*
 * The message at offset completed (delivered or dead-lettered). -1 when no
 * message at offset is pending: never added, or already done.
 */
MUST_USE int offsets_done(struct offsets *o, int64_t offset);

/*
 * The partition's log went back (recreated, truncated): forget every message
 * added and start tracking again at start, as offsets_new() does. Messages
 * added before are no longer pending (offsets_done() refuses them).
 */
void offsets_reset(struct offsets *o, int64_t start);

/* The offset to commit: every added message below it completed. */
int64_t offsets_committable(const struct offsets *o);

/* One past the last offset added; start before any add. */
int64_t offsets_next(const struct offsets *o);

/* Added and not yet completed. */
size_t offsets_pending(const struct offsets *o);

#endif
