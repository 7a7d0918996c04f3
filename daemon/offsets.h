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

#include <stdbool.h>
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

/*
 * The partition's log was cut at offset (an unclean leader election, or an
 * offset reset into what was fetched): forget the messages added at offset
 * or later, and track again from offset. Messages below it stay as they
 * were, pending ones still hold the commit back. -1 if offset is below
 * offsets_committable() (that is offsets_reset()'s case) or above
 * offsets_next(); nothing changes then.
 */
MUST_USE int offsets_truncate(struct offsets *o, int64_t offset);

/* What a fetched record at offset means for the partition's tracking. */
enum offsets_fetch {
	OFFSETS_NEW,      /* at or past offsets_next(): offsets_add() takes it */
	OFFSETS_REFETCH,  /* the record already added there, fetched again */
	OFFSETS_TRUNCATE, /* another record at an offset added, at or above the
	                   * committable one: offsets_truncate() there */
	OFFSETS_RESET,    /* below the committable offset: offsets_reset() there */
};

/*
 * Decide what a record fetched at offset is. same_record says whether it
 * is the very record added at that offset (the caller compares them); it
 * only counts for offsets from offsets_committable() up to offsets_next().
 */
enum offsets_fetch offsets_classify(const struct offsets *o, int64_t offset,
    bool same_record);

/* The offset to commit: every added message below it completed. */
int64_t offsets_committable(const struct offsets *o);

/* One past the last offset added; start before any add. */
int64_t offsets_next(const struct offsets *o);

/* Added and not yet completed. */
size_t offsets_pending(const struct offsets *o);

#endif
