/*
 * spool: the on-disk queue between the publish API and Kafka.
 *
 * A directory of append-only segment files. Request threads encode records
 * and hand them to one writer thread, which writes everything queued with one
 * write and one fdatasync (group commit), then calls each batch's done
 * callback. The producer thread reads committed records in sequence order,
 * acknowledges them as Kafka does, and the spool deletes a segment once all
 * of its records are acknowledged. Memory holds no backlog: records are read
 * back from the files.
 *
 * Threads: spool_submit() from any thread; spool_next(), spool_get(),
 * spool_ack(), spool_fail() from the producer thread; spool_stats() from any.
 */
#ifndef ACKD_SPOOL_H
#define ACKD_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "conf.h"
#include "spool_rec.h"

/* As in util.h: a status result that must not be ignored. */
#ifndef MUST_USE
#define MUST_USE __attribute__((warn_unused_result))
#endif

struct spool;
struct spool_batch;

struct spool_opts {
	const char *dir;
	enum conf_fsync fsync;
	int64_t fsync_interval_ms;
	uint64_t max_bytes;     /* refuse (SPOOL_EFULL) beyond this */
	uint64_t segment_bytes; /* 0: 64 MiB, or max_bytes / 8 when less (64 KiB at least) */
	int64_t maint_every_ms; /* spool_next()/spool_ack() maintain this often; 0: 100 ms */
	/*
	 * Keep a zero-filled spare segment ready (spool_spare.c): the writer
	 * then overwrites allocated blocks, and a group's fdatasync has no file
	 * size to commit.
	 */
	bool prealloc;
	int64_t slice_us; /* the writer thread's scheduler slice (thread_slice()) */
	/*
	 * Called by spool_open() for every intact KEY record of every segment,
	 * in sequence order, before the writer starts (the opening thread);
	 * seq is the KEY record's own sequence, its records precede it. NULL:
	 * keys are not loaded (they are still skipped, never produced).
	 */
	void (*on_key)(void *arg, uint64_t seq, const struct spool_key *k);
	void *on_key_arg;
	/*
	 * Called by spool_open() with the ackd-id of every intact record in
	 * failed/, before the writer starts (the opening thread), in no
	 * particular order with on_key (arg: on_key_arg). NULL: not read.
	 */
	void (*on_failed)(void *arg, const char *id, size_t id_len);
	/*
	 * Called by spool_open() with the sequence and ackd-id of every intact,
	 * unacknowledged copy (a record copy-forward moved, spool_copy.c) of a
	 * segment whose KEY records are read (on_key set), before the writer
	 * starts (arg: on_key_arg): a key names its records by their original
	 * sequences. NULL: not reported.
	 */
	void (*on_copy)(void *arg, uint64_t seq, const char *id, size_t id_len);
	/*
	 * Called by spool_open() for every unexpired KEY_ACK record of the keys
	 * file (spool_ack_keyed()), before the writer starts (arg: on_key_arg).
	 */
	void (*on_key_ack)(void *arg, const struct spool_key_ack *a);
	/*
	 * How long a KEY record is kept once its segment is deleted: its
	 * unexpired KEY records are appended to the keys file first (and
	 * on_key gets them at the next open). 0: no keys file. Not 0:
	 * spool_open() reads the keys file (and cuts a torn tail) even
	 * without on_key and on_key_ack, since keys may be appended to it.
	 * SPOOL_KEY_TTL_ALL: every KEY record is kept, for a tool that does
	 * not know ackd's TTL (ackd's next open drops the expired ones).
	 */
	int64_t key_ttl_ms;
};

#define SPOOL_KEY_TTL_ALL (INT64_MAX / 4) /* no overflow in now - ttl */

/* Why a submit failed; http.c maps these to 507 / 503. */
enum spool_err {
	SPOOL_OK = 0,
	SPOOL_EFULL,   /* max_bytes or the file system is full (ENOSPC) */
	SPOOL_EIO,     /* the write or fsync failed; nothing of the batch is kept */
	SPOOL_ECLOSED, /* shutting down */
};

/* What err means, for a log line ("the spool is full"). */
const char *spool_err_text(enum spool_err err);

/*
 * Open dir (created if missing), take its lock (a second ackd on the same
 * spool fails here), recover, start the writer thread. Recovery truncates a
 * torn tail, skips damaged records (counted and logged) and costs time in
 * proportion to the record count of the last segment, not the payload bytes.
 */
MUST_USE int spool_open(const struct spool_opts *opts, struct spool **out, char *err,
    size_t errlen);

/*
 * Refuse new batches (SPOOL_ECLOSED) and wait up to timeout_ms until the
 * writer has written, and called back, everything queued: after it, no done
 * callback runs until spool_close(). 0, or -1 when the writer did not finish
 * in time (a hung disk). Any thread but the writer.
 */
MUST_USE int spool_quiesce(struct spool *sp, int timeout_ms);

/* Stop the writer (failing queued batches with SPOOL_ECLOSED), close. NULL ok. */
void spool_close(struct spool *sp);

/* A batch of encoded records, built by a request thread. */
struct spool_batch *spool_batch_new(size_t nrecords_hint);
MUST_USE int spool_batch_add(struct spool_batch *b, const struct spool_msg *m);
/*
 * End the batch with the Idempotency-Key of every record added so far
 * (k->nrecs must equal their count): a KEY record written in the same group
 * write, so the key is durable exactly when the records are. Nothing may be
 * added after it. 0, or -1 when k does not fit or out of memory.
 */
MUST_USE int spool_batch_add_key(struct spool_batch *b, const struct spool_key *k);

/*
 * Mark every record added so far as a dead letter of a message an earlier
 * dead letter of which is kept (filed into failed/, or still in the spool):
 * should Kafka refuse it for good, the producer deletes it instead of filing
 * another copy (the message itself stays uncommitted in its source topic).
 * Restarts and copy-forward keep the mark.
 */
void spool_batch_set_unfiled(struct spool_batch *b);
size_t spool_batch_count(const struct spool_batch *b);
void spool_batch_free(struct spool_batch *b);

/*
 * Called once per submitted batch, from the writer thread, after the records
 * are durable per spool.fsync (err == SPOOL_OK, first_seq is the sequence of
 * the batch's first record, the rest follow consecutively) or failed (err set,
 * nothing of the batch is in the spool). Must not block.
 */
typedef void spool_done_fn(void *arg, enum spool_err err, uint64_t first_seq);

/*
 * Queue b (takes ownership) for the writer. Returns SPOOL_OK, or refuses at
 * once (b freed, done not called) with SPOOL_EFULL when max_bytes or the file
 * system's free space (less a 16 MiB margin) would be exceeded,
 * SPOOL_ECLOSED when closing, SPOOL_EIO when out of memory.
 */
MUST_USE enum spool_err spool_submit(struct spool *sp, struct spool_batch *b, spool_done_fn *done,
    void *arg);

/*
 * Whether a publish would be taken now (for /readyz): 0, or -1 with the
 * reason (a recent write error, spool.max_bytes reached, the disk full).
 * Any thread.
 */
MUST_USE int spool_writable(struct spool *sp, char *why, size_t len);

/* Called from the writer thread after each commit; wakes the producer. */
void spool_set_commit_hook(struct spool *sp, void (*fn)(void *arg), void *arg);

/* The sequence the next committed record gets: every record below it is durable. Any thread. */
uint64_t spool_end_seq(struct spool *sp);

/* A record read back from the spool. Free with spool_rec_free(). */
struct spool_rec {
	uint64_t seq;
	bool unfiled; /* written after spool_batch_set_unfiled(): never filed into failed/ */
	struct spool_msg msg; /* points into the record's own buffer */
};

/*
 * The next committed, unacknowledged record with sequence >= *cursor.
 * Returns 1 and *out (advancing *cursor past it), 0 when there is none yet
 * (*cursor may still advance past acknowledged records). A damaged record is
 * counted, logged and skipped (acknowledged as lost to damage), never
 * returned. Each record is handed out once per run: from then on it is the
 * producer's until spool_ack() or spool_fail(), and spool_get() reads it
 * again by the same sequence even after copy-forward moved it (spool_copy.c).
 */
MUST_USE int spool_next(struct spool *sp, uint64_t *cursor, struct spool_rec **out);

/*
 * The producer was rebuilt and holds nothing: every unacknowledged record,
 * copies made in this run included, is to be handed out again from cursor 0.
 */
void spool_rewind(struct spool *sp);

/*
 * Read one record again by sequence (a retry). 1 found; 0 gone (acknowledged,
 * failed, or lost to damage); -1 not readable now (I/O error, out of
 * memory): the record stays live, call again later.
 */
MUST_USE int spool_get(struct spool *sp, uint64_t seq, struct spool_rec **out);
void spool_rec_free(struct spool_rec *r);

/*
 * Whether seq is a record in the spool that Kafka has not acknowledged yet
 * (1), or not (0: acknowledged, failed, lost, or never written). Any thread.
 */
int spool_seq_live(struct spool *sp, uint64_t seq);

/* Kafka acknowledged seq: it may be deleted. */
void spool_ack(struct spool *sp, uint64_t seq);

/*
 * The same, with the acknowledgement written to the .ack file at once rather
 * than at the next maintenance (still without fsync): a kill -9 then cannot
 * make the record be produced again. For records with an Idempotency-Key,
 * whose client was promised one copy.
 */
void spool_ack_now(struct spool *sp, uint64_t seq);

/*
 * spool_ack_now() for a keyed record (ackd-id id, SPOOL_KEY_ID_LEN bytes)
 * that Kafka stored at partition, offset: that is also appended to the keys
 * file (a KEY_ACK record, without fsync), so that its key answers with them
 * after a restart. Without a keys file (key_ttl_ms 0) it is spool_ack_now().
 */
void spool_ack_keyed(struct spool *sp, uint64_t seq, const char *id, int32_t partition,
    int64_t offset);

/*
 * Producer thread, housekeeping: write buffered acknowledgements to the .ack
 * files, delete segments whose records are all acknowledged, copy the live
 * records of old, almost empty segments forward. spool_next() and
 * spool_ack() run it themselves every 100 ms (spool_opts.maint_every_ms),
 * and delete finished segments at once after the writer moved to a new
 * segment; call it when idle.
 */
void spool_maintain(struct spool *sp);

/*
 * Kafka rejected seq permanently: copy it with reason into failed/, then
 * acknowledge it. When failed/ cannot be written (ENOSPC, EIO) the record
 * stays in the spool and maintenance writes it later, after 1 s, doubling
 * to 60 s between tries, until it succeeds (or the record is acknowledged
 * meanwhile; a restart forgets the retry, and the record is produced
 * again). The reason is cut to what fits in a record; a message that
 * leaves no room for it goes without one (flag SPOOL_REC_F_NO_REASON).
 * A dead letter written after spool_batch_set_unfiled() is not filed: an
 * earlier one of its message is kept, so it is only acknowledged. Returns:
 */
enum spool_fail_rc {
	/*
	 * Out of memory, nothing done: the record stays live and the caller
	 * must call again later (nothing else hands it out before a restart).
	 */
	SPOOL_FAIL_NOMEM = -1,
	SPOOL_FAIL_FILED = 0,   /* written to failed/, or the record was gone already */
	/*
	 * Taken over for retry: it could not be read or filed now. The retry
	 * files it, or deletes it when it turns out to be an unfiled dead letter.
	 */
	SPOOL_FAIL_LATER = 1,
	SPOOL_FAIL_DELETED = 2, /* an unfiled dead letter: acknowledged, not filed */
};
MUST_USE enum spool_fail_rc spool_fail(struct spool *sp, uint64_t seq, const char *reason);

struct spool_stats {
	uint64_t records;      /* unacknowledged */
	uint64_t bytes;        /* on disk, all segments */
	int64_t oldest_ms;     /* accept time of the oldest unacknowledged, 0 if none */
	uint64_t segments;
	uint64_t damaged;      /* records skipped for damage since start */
	uint64_t failed;       /* records moved to failed/ since start */
	uint64_t commits;      /* group commits (fsyncs) since start */
	uint64_t write_errors; /* failed group writes or syncs since start */
	uint64_t torn_bytes;   /* cut at open: the last segment's and failed/ logs' torn tails */
	uint64_t max_bytes;    /* spool.max_bytes, the limit bytes is held to; 0: none */
	uint64_t spares_used;  /* segments begun in a zero-filled spare since start (prealloc) */
	bool spare_ready;      /* a spare waits for the next segment (prealloc) */
	bool spare_wanted;     /* the writer asked for one, not ready yet (prealloc) */
};
void spool_stats(struct spool *sp, struct spool_stats *out);

/*
 * Offline reading, for ackd-spool(8). A spool directory opened without
 * taking its lock and without changing a byte: no recovery, no truncation,
 * no acknowledgements written. The listing (files and their sizes) is taken
 * at spool_ro_open(); each file is read up to the size it had then, so a
 * running ackd may append meanwhile (its newest record may then look torn)
 * or delete a segment (spool_ro_iter_new() fails with ENOENT). One thread.
 */
struct spool_ro;
struct spool_ro_iter;

/* A segment file, or a failed/ log (same header, records, no footer). */
struct spool_ro_file {
	char name[64];        /* relative to the spool directory */
	uint64_t first_seq;   /* from the file name */
	uint64_t bytes;       /* the size at spool_ro_open() */
	uint64_t seq_limit;   /* segments: the next segment's first sequence, 0 for the newest */
	int hdr_ok;           /* the segment header is valid and names first_seq */
	int sealed;           /* segments: a valid footer ends the file (seal) */
	struct spool_seal seal;
	/* Segments: the .ack file. */
	int has_ack;
	uint64_t ack_bytes;   /* its size */
	const uint64_t *acks; /* acknowledged sequences within the segment, sorted, unique */
	size_t nacks;
	uint64_t ack_bad;     /* entries whose CRC fails */
	uint64_t ack_stray;   /* intact entries for sequences outside the segment */
	uint64_t ack_partial; /* bytes of a partial last entry, 0 when none */
};

/* Files in the directory that are neither segments, their .ack files nor failed/ logs. */
enum spool_ro_other_kind {
	SPOOL_RO_ORPHAN_ACK, /* the .ack file of a deleted segment (ackd removes it) */
	SPOOL_RO_TEMP,       /* a segment being created (ackd removes it) */
	SPOOL_RO_UNKNOWN,    /* anything else (ackd ignores it) */
};
struct spool_ro_other {
	char name[256];
	enum spool_ro_other_kind kind;
};

/*
 * List dir read-only and load the .ack files. Returns 0 and *out (free with
 * spool_ro_free()), or -1 with err filled (no such directory, not a spool,
 * unreadable).
 */
MUST_USE int spool_ro_open(const char *dir, struct spool_ro **out, char *err, size_t errlen);
void spool_ro_free(struct spool_ro *ro);

/*
 * Whether an ackd holds the spool's lock, tried without blocking (and
 * released at once, so a starting ackd is never kept out): 1 in use, 0 not,
 * -1 when the lock file cannot be opened for reading (errno).
 */
MUST_USE int spool_ro_in_use(const struct spool_ro *ro);

/* The segments and the failed/ logs in sequence order, other files; borrowed. */
size_t spool_ro_segments(const struct spool_ro *ro, const struct spool_ro_file **files);
size_t spool_ro_failed(const struct spool_ro *ro, const struct spool_ro_file **files);
size_t spool_ro_others(const struct spool_ro *ro, const struct spool_ro_other **others);

/* Whether seg's .ack file lists seq. */
int spool_ro_acked(const struct spool_ro_file *seg, uint64_t seq);

/* What a read-only iterator found. */
enum spool_ro_kind {
	SPOOL_RO_RECORD,   /* an intact record */
	SPOOL_RO_DAMAGE,   /* bytes that hold no valid record (why) */
	SPOOL_RO_FOOTER,   /* a seal record; the records end here */
	SPOOL_RO_TRAILING, /* bytes after a footer */
	/*
	 * The newest segment: zero bytes from here to the end of the file,
	 * after the records: the unused end of a segment begun in a spare, or a
	 * write whose size reached the disk and its data not (ackd cuts them
	 * at start-up; they hold no record).
	 */
	SPOOL_RO_UNUSED,
};

struct spool_ro_item {
	enum spool_ro_kind kind;
	uint64_t off; /* file offset */
	uint64_t len; /* bytes of the record, the damage, the footer, the trailing or unused bytes */
	/* SPOOL_RO_RECORD, and SPOOL_RO_DAMAGE when the header was intact. */
	uint64_t seq;
	uint8_t type; /* enum spool_rec_type */
	uint16_t flags;
	int acked;    /* segments: listed in the .ack file */
	int64_t timestamp_ms;
	/* SPOOL_RO_RECORD unless headers_only: decoded, borrowed until the next call. */
	const struct spool_rec *rec; /* a MSG or FAILED record; NULL for a KEY record */
	struct spool_key key;        /* a KEY record: its pointers borrowed likewise */
	/* SPOOL_RO_DAMAGE */
	enum spool_rec_status why;
	int resynced;       /* a valid record follows; else the damage runs to the end */
	uint64_t lost_from; /* segments: sequences [lost_from, lost_to) not found; */
	uint64_t lost_to;   /* lost_to 0: up to wherever the segment ends */
	/* SPOOL_RO_FOOTER */
	int seal_ok;        /* valid, for this segment, and ending where the records end */
	struct spool_seal seal;
};

/*
 * Iterate over the records of f, one of ro's files. headers_only: check the
 * record headers only (no payload CRC, no decoding; rec stays NULL), as
 * ackd's recovery does for all but the newest segment. A failed/ log's
 * records may come in any sequence order; a segment's must ascend below
 * seq_limit. Returns 0 and *out (free with spool_ro_iter_free()), or -1
 * with errno (ENOENT: deleted since spool_ro_open()).
 */
MUST_USE int spool_ro_iter_new(struct spool_ro *ro, const struct spool_ro_file *f, int headers_only,
    struct spool_ro_iter **out);
/* 1 and *item, 0 at the end, -1 on a read error (errno). */
MUST_USE int spool_ro_iter_next(struct spool_ro_iter *it, struct spool_ro_item *item);
void spool_ro_iter_free(struct spool_ro_iter *it);

/*
 * The I/O seam: every call of the daemon's spool that changes the file system
 * goes through it (reads do not). Tests replace entries to inject ENOSPC and
 * EIO, or to record the operations and build the states a power loss could
 * leave. openat() also opens directories (O_DIRECTORY) and, with AT_FDCWD,
 * the spool directory itself; fsync() of a directory descriptor makes its
 * entries durable.
 */
struct spool_io {
	int (*openat)(int dirfd, const char *path, int flags, mode_t mode);
	int (*close)(int fd);
	ssize_t (*pwritev)(int fd, const struct iovec *iov, int iovcnt, off_t off);
	ssize_t (*write)(int fd, const void *buf, size_t len); /* appends (O_APPEND) */
	int (*fsync)(int fd);
	int (*fdatasync)(int fd);
	int (*ftruncate)(int fd, off_t len);
	int (*renameat)(int olddirfd, const char *oldpath, int newdirfd, const char *newpath);
	int (*unlinkat)(int dirfd, const char *path, int flags);
	int (*mkdirat)(int dirfd, const char *path, mode_t mode);
};
extern struct spool_io spool_io;

/*
 * The reads of the spool's files (daemon and ackd-spool) go through here, so
 * tests can inject read errors; not part of struct spool_io, whose calls the
 * crash recorder replays (reads change nothing). pread(2) by default.
 */
extern ssize_t (*spool_pread)(int fd, void *buf, size_t len, off_t off);

#endif
