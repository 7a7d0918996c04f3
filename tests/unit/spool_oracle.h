/*
 * spool_oracle: what the crash explorer and the model test know about the
 * records they write, shared by both.
 *
 * Message n is a pure function of n (topic, key, ackd-id header, value of a
 * length drawn from n, timestamp), so a record read back is checked field by
 * field against the message its value names. Messages with n >= ORACLE_EVIL
 * carry, inside their value, a complete valid encoded record of another
 * topic with sequence 2^40: recovery must never hand that one out.
 *
 * The written-records index lists every record the spool wrote whole, with
 * its sequence, by reading the records back out of the writes a crashfs
 * trace holds (a group write starts on a record boundary).
 *
 * Threads: the test's.
 */
#ifndef ACKD_TEST_SPOOL_ORACLE_H
#define ACKD_TEST_SPOOL_ORACLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "spool.h"

#define ORACLE_EVIL 1000000u
#define ORACLE_EVIL_SEQ (UINT64_C(1) << 40)

/* Add message n to b; 0 or -1. */
int oracle_add(struct spool_batch *b, uint32_t n);

/*
 * Which message m is: 0 and *n when every field is exactly message n's, else
 * -1 with why.
 */
int oracle_check(const struct spool_msg *m, uint32_t *n, char *why, size_t len);
/* The same for a failed/ record: message n with the reason header added. */
int oracle_check_as(const struct spool_msg *m, bool failed, uint32_t *n, char *why, size_t len);

struct oracle_wrec {
	uint64_t seq;
	uint32_t n;
	bool copy; /* SPOOL_REC_F_COPY */
	size_t op; /* index of the trace op that wrote it */
};

/* Records written whole by trace ops [from, to), appended to *v. */
void oracle_index(size_t from, size_t to, struct oracle_wrec **v, size_t *nv, size_t *cap);

#endif
