/*
 * offsets: the committable offset of one partition whose messages complete
 * out of order.
 *
 * Design: a ring of slots, one per added message still at or after the
 * oldest uncompleted one, in offset order; each slot holds its offset and
 * whether it completed. Adding appends at the tail. Completing finds the
 * slot by binary search (the ring is sorted) and marks it; when the head
 * completes, the head advances over every completed slot behind it. The
 * committable offset is then the head's offset, or one past the last added
 * offset when the ring is empty.
 *
 * A bitmap indexed by offset would be smaller per message, but the offsets
 * of a compacted topic can skip millions at once and the bitmap would have
 * to span the gap; the ring's size follows the messages in flight, not the
 * offsets between them. It doubles when full and never shrinks: its peak is
 * bounded by what the consumer holds in flight.
 *
 * Cost: add O(1) amortized, done O(log n) plus the slots the head passes
 * (each passed once), truncate O(log n) plus the slots it drops,
 * committable and pending O(1).
 *
 * Threads: none of its own; thread-compatible (one thread per instance, or
 * the caller's lock).
 */
#include "config.h"

#include <stdbool.h>
#include <stdlib.h>

#include "offsets.h"
#include "util.h"

#define RING_MIN 64

struct slot {
	int64_t offset;
	bool done;
};

struct offsets {
	struct slot *ring; /* cap slots, a power of two */
	size_t cap;
	size_t head;       /* index of the oldest slot */
	size_t len;        /* slots in use, from head */
	size_t pending;    /* slots not done */
	int64_t next;      /* one past the last added offset; start before any add */
};

static struct slot *slot_at(const struct offsets *o, size_t i)
{
	return &o->ring[(o->head + i) & (o->cap - 1)];
}

struct offsets *offsets_new(int64_t start)
{
	struct offsets *o = xcalloc(1, sizeof(*o));

	o->cap = RING_MIN;
	o->ring = xcalloc(o->cap, sizeof(*o->ring));
	o->next = start;
	return o;
}

void offsets_free(struct offsets *o)
{
	if (o == NULL)
		return;
	free(o->ring);
	free(o);
}

/* Double the ring, moving the slots to the front of the new one in order. */
static void grow(struct offsets *o)
{
	size_t cap = o->cap * 2;
	struct slot *ring = xcalloc(cap, sizeof(*ring));

	for (size_t i = 0; i < o->len; i++)
		ring[i] = *slot_at(o, i);
	free(o->ring);
	o->ring = ring;
	o->cap = cap;
	o->head = 0;
}

int offsets_add(struct offsets *o, int64_t offset)
{
	/* next is one past the last add; INT64_MAX would leave no room for it. */
	if (offset < o->next || offset == INT64_MAX)
		return -1;
	if (o->len == o->cap)
		grow(o);
	*slot_at(o, o->len) = (struct slot){ .offset = offset, .done = false };
	o->len++;
	o->pending++;
	o->next = offset + 1;
	return 0;
}

/* The index of the first slot whose offset is >= offset; len if none. */
static size_t lower_bound(const struct offsets *o, int64_t offset)
{
	size_t lo = 0, hi = o->len;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (slot_at(o, mid)->offset < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int offsets_done(struct offsets *o, int64_t offset)
{
	size_t lo = lower_bound(o, offset);

	if (lo == o->len || slot_at(o, lo)->offset != offset || slot_at(o, lo)->done)
		return -1;

	slot_at(o, lo)->done = true;
	o->pending--;
	while (o->len > 0 && slot_at(o, 0)->done) {
		o->head = (o->head + 1) & (o->cap - 1);
		o->len--;
	}
	return 0;
}

void offsets_reset(struct offsets *o, int64_t start)
{
	o->head = 0;
	o->len = 0;
	o->pending = 0;
	o->next = start;
}

int offsets_truncate(struct offsets *o, int64_t offset)
{
	size_t keep;

	if (offset < offsets_committable(o) || offset > o->next)
		return -1;
	/* The head is pending, and at or below offset: only the tail goes. */
	keep = lower_bound(o, offset);
	for (size_t i = keep; i < o->len; i++)
		if (!slot_at(o, i)->done)
			o->pending--;
	o->len = keep;
	o->next = offset;
	return 0;
}

enum offsets_fetch offsets_classify(const struct offsets *o, int64_t offset,
    bool same_record)
{
	if (offset >= o->next)
		return OFFSETS_NEW;
	/*
	 * Below every pending message the log went back under what completed
	 * (recreated, or truncated below it): start again. At or above it, the
	 * messages below offset are still in the log and must still hold the
	 * commit back: cut there, so only what the log lost is forgotten.
	 */
	if (offset < offsets_committable(o))
		return OFFSETS_RESET;
	return same_record ? OFFSETS_REFETCH : OFFSETS_TRUNCATE;
}

int64_t offsets_committable(const struct offsets *o)
{
	return o->len > 0 ? slot_at(o, 0)->offset : o->next;
}

int64_t offsets_next(const struct offsets *o) { return o->next; }

size_t offsets_pending(const struct offsets *o) { return o->pending; }
