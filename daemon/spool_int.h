/*
 * spool_int: the spool's shared structure, for the spool_*.c files only.
 *
 * Threads. spool_submit() from any thread; the writer thread owns the active
 * segment's file offset and next_seq; spool_next/get/ack/fail/maintain from
 * the producer thread only, which alone deletes segments; spool_stats() from
 * any thread. sp->mu guards the queue, the segment list and every segment
 * field marked below.
 *
 * In short, who owns what:
 *   request threads   build a struct spool_batch; spool_submit() queues it
 *                     under sp->mu.
 *   writer thread     the active segment's file offset, sp->next_seq,
 *                     sp->next_gen, sp->cut_pending; it grows the active segment (end_seq,
 *                     data_end, file_bytes, nrecs, min_ts) under sp->mu
 *                     and links a new active segment under sp->mu.
 *   producer thread   everything under "Producer thread only" below, the
 *                     .ack buffers and checkpoints of every segment; it
 *                     alone deletes segments, so a struct seg it found
 *                     stays valid without the lock.
 *   sp->mu            the queue, the segment list, the counters, the
 *                     bitmaps and every segment field marked "Under sp->mu".
 */
#ifndef ACKD_SPOOL_INT_H
#define ACKD_SPOOL_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "health.h"
#include "spool.h"
#include "util.h"

#define SEG_DEFAULT_BYTES (64ull << 20)
#define SEG_MIN_BYTES (64ull << 10)
#define READ_BLOCK (256u << 10)
#define DISK_MARGIN (16ull << 20)   /* free space kept beyond a batch */
#define STATVFS_EVERY_MS 100
#define MAINT_EVERY_MS 100       /* spool_opts.maint_every_ms when 0 */
#define ACK_BUF_ENTRIES 256
#define CP_EVERY 64                 /* reader checkpoint spacing, in records */
#define CF_KEEP_NEWEST 4            /* segments never copied forward */
#define CF_LIVE_PERCENT 10
#define CF_RETRY_MS 10000
#define SPOOL_IDLE_BEAT_MS 1000
#define WERR_RECENT_MS 10000       /* /readyz remembers a failed write this long */
#define SPOOL_MAX_QUIET_MS 20000    /* a write and fsync stuck this long is a hung disk */
#define ERR_LOG_EVERY_MS 10000
#define GROUP_MAX_BYTES (8ull << 20) /* one pwritev + fdatasync at most */
#define TRIM_STEP (4ull << 20)      /* a deleted segment shrinks by this per maintenance pass */
#define FAIL_RETRY_MIN_MS 1000    /* a failed/ write is tried again after this, doubling */
#define FAIL_RETRY_MAX_MS 60000
#define TRIM_MAX 2                  /* deleted segments shrinking at once; more are unlinked */

#ifndef HAVE_FDATASYNC
#define fdatasync fsync
#endif

struct spool_batch {
	unsigned char *buf; /* encoded records, back to back */
	size_t len;
	size_t cap;
	size_t count;
	int64_t min_ts;
	bool has_key; /* ends with a KEY record */
};

struct sub {
	struct sub *next;
	struct spool_batch *b;
	spool_done_fn *done;
	void *arg;
	uint64_t first_seq;
};

struct cp {
	uint64_t seq;
	uint64_t off;
};

struct seg {
	struct seg *next;
	uint64_t first_seq;
	uint64_t gen; /* creation order: segments created after it = active's gen - gen */
	int fd;
	/* Under sp->mu; the writer grows the active segment. */
	uint64_t end_seq;    /* one past the last committed sequence */
	uint64_t data_end;   /* committed record bytes end here */
	uint64_t file_bytes; /* size on disk, footer included */
	/*
	 * The writer's: the file was a zero-filled spare of this many bytes, so
	 * zeros lie past data_end up to here; 0: the file ends at file_bytes.
	 */
	uint64_t zero_end;
	bool spare_asked; /* the writer's: spare_want() asked for the next segment's spare */
	uint64_t *acked;     /* bitmap over [first_seq, end_seq) */
	size_t acked_words;
	uint64_t nacked;
	uint64_t nrecs;
	int64_t min_ts;
	bool sealed;
	bool has_keys; /* it may hold KEY records: keys_save() reads it before it goes */
	/* Producer thread only. */
	int ack_fd;
	size_t ack_n;
	unsigned char ack_buf[ACK_BUF_ENTRIES * SPOOL_ACK_ENTRY_SIZE];
	struct cp *cps;
	size_t ncps;
	size_t cps_cap;
};

/* A buffered sequential reader over one segment's records. */
struct iter {
	int fd;
	uint64_t off;       /* the next record */
	uint64_t end;       /* records end here */
	uint64_t next_seq;  /* the next record's sequence is at least this */
	uint64_t seq_limit; /* and below this; 0: no bound */
	/*
	 * A record at offset o has a sequence of at most base_seq + (o -
	 * base_off) / SPOOL_REC_HDR_SIZE (a segment's sequences are consecutive);
	 * base_seq 0: no such bound (failed/ logs).
	 */
	uint64_t base_seq;
	uint64_t base_off;
	unsigned char *buf;
	size_t cap;
	uint64_t buf_off;
	size_t buf_len;
	int io_errno;
};

enum it_res { IT_END, IT_REC, IT_DAMAGE };

struct it_item {
	struct spool_rec_hdr h;
	const unsigned char *rec; /* IT_REC: the record, valid until the next call */
	size_t len;
	uint64_t off;
	/* IT_DAMAGE: bytes [off, resync_off) skipped, sequences [lost_from, lost_to) */
	enum spool_rec_status why;
	uint64_t resync_off;
	bool resynced;
	uint64_t lost_from;
	uint64_t lost_to; /* 0 when not resynced: up to the segment's end */
};

/* seq -> seq, open addressing; keys are never 0 or UINT64_MAX. */
struct seqmap {
	uint64_t *k;
	uint64_t *v;
	size_t cap;
	size_t used; /* live entries plus tombstones */
};
#define MAP_EMPTY 0
#define MAP_TOMB UINT64_MAX

/* A rejected record that failed/ could not take: written again at due_ms. */
struct fail_retry {
	uint64_t seq;
	char *reason;
	int attempts;
	int64_t due_ms;
};

/* A deleted segment, renamed to its temp name, shrinking step by step. */
struct trim {
	int fd;
	uint64_t first_seq;
	uint64_t size;
};

struct copy {
	struct seg *seg; /* being copied forward; NULL when none */
	uint64_t *seqs;  /* its live sequences, in the order submitted */
	size_t n;
	int64_t retry_ms;
	/*
	 * spool_rewind() ran while the copy was under way: the rebuilt producer
	 * reads the originals again, so the copies are surplus (cf_apply()
	 * acknowledges them and keeps the originals).
	 */
	bool abandoned;
	/* Set by the writer's callback, under sp->mu. */
	bool done;
	enum spool_err err;
	uint64_t first_seq;
};

struct spool {
	struct health_loop health; /* the writer's */
	char *dir;
	int dir_fd;
	int lock_fd;
	enum conf_fsync fsync;
	int64_t fsync_interval_ms;
	int64_t slice_us; /* the writer thread's scheduler slice, 0: the default */
	uint64_t max_bytes;
	uint64_t segment_bytes;
	void (*on_key)(void *arg, uint64_t seq, const struct spool_key *k); /* at open only */
	void (*on_failed)(void *arg, const char *id, size_t id_len);        /* likewise */
	void (*on_copy)(void *arg, uint64_t seq, const char *id, size_t id_len); /* likewise */
	void (*on_key_ack)(void *arg, const struct spool_key_ack *a);           /* likewise */
	void *on_key_arg;
	int64_t key_ttl_ms; /* 0: no keys file */
	/* The keys file (spool_keys.c): the opening thread, then the producer thread. */
	int keys_fd;
	uint64_t keys_bytes;
	uint64_t keys_compacted; /* its size after the last compaction or open */
	int64_t keys_oldest_ms;  /* the earliest timestamp of its records; INT64_MAX: none */
	int64_t keys_compact_retry_ms; /* after a failed compaction: none before this (now_ms()) */
	bool keys_cut_pending; /* a failed append could not be cut back to keys_bytes */
	bool keys_dir_pending; /* `keys` opened, created or renamed over; the directory not synced since */
	struct keys_job *keys_job; /* a compaction running on its own thread, or NULL */

	/* The spare segment (spool_spare.c); under mu. */
	bool prealloc;
	pthread_t spare_thread;
	bool spare_running;
	pthread_cond_t spare_wake;
	int spare_fd; /* a zero-filled, synced .seg-spare.tmp ready to take; -1: none */
	bool spare_wanted; /* the writer asked for one (spare_want()) and none is ready yet */
	/*
	 * Not under mu: the active segment's data_end at which the writer wakes
	 * the spare thread, waiting for the records to go further before it
	 * writes more zeros; UINT64_MAX: it is not waiting.
	 */
	atomic_uint_fast64_t spare_resume_at;
	uint64_t spares_used;

	pthread_mutex_t mu;
	pthread_cond_t wake;
	pthread_cond_t idle;  /* the writer finished a group; see spool_quiesce() */
	bool refusing;        /* spool_quiesce(): new batches get SPOOL_ECLOSED */
	bool writing;         /* the writer has a group out of the queue */
	pthread_t writer;
	bool writer_running;
	bool stopping;
	struct sub *q_head;
	struct sub **q_tail;
	uint64_t q_bytes; /* queued or being written */
	struct seg *segs; /* by first_seq; the last is the active one */
	struct seg *active;
	uint64_t next_seq; /* the writer's after open */
	uint64_t next_gen; /* the writer's after open */
	/*
	 * The writer's: a refused group's cut-back failed, so bytes that are no
	 * record lie past the active segment's data_end. Nothing is appended
	 * (and the segment is not sealed) until a cut to data_end succeeds.
	 */
	bool cut_pending;
	/*
	 * Segments the writer rolled past. A segment whose records were all
	 * acknowledged while it was active is deleted by the first maintenance
	 * call after the roll, not up to an interval later: a burst of
	 * acknowledged batches would otherwise fill spool.max_bytes with
	 * finished segments.
	 */
	atomic_uint_fast64_t rolls;
	uint64_t nsegs;
	uint64_t live;
	uint64_t bytes;
	uint64_t damaged, failed, commits, write_errors, torn_bytes;
	uint64_t disk_free;
	int64_t disk_checked_ms;
	int64_t last_werr_ms; /* when a write or fsync last failed, 0 never */
	void (*hook)(void *arg);
	void *hook_arg;
	int64_t werr_log_ms;

	/* Producer thread only. */
	uint64_t run_first_seq; /* copies at or above this were made in this run */
	uint64_t read_pos;      /* spool_next() has passed every sequence below */
	struct seg *rd_seg;
	struct iter rd;
	struct iter aux;        /* spool_get, spool_fail, copy-forward */
	struct seqmap fwd, rev;
	struct copy cf;
	struct trim trims[TRIM_MAX];
	/*
	 * A failed append to failed/ whose cut-back failed: that log must be
	 * cut to fcut_size before anything is appended after it.
	 */
	bool fcut_pending;
	uint64_t fcut_first;
	uint64_t fcut_size;
	bool failed_dir_dirty; /* a failed/ log was created; failed/ not yet fsynced */
	struct fail_retry *fretry; /* rejected records failed/ could not take yet */
	size_t nfretry, fretry_cap;
	bool fretry_busy;
	size_t ntrims;
	int64_t maint_ms;       /* coarse_ms() at the last maintenance by time */
	int64_t maint_every_ms;
	uint_fast64_t rolls_swept; /* rolls as of the last sweep */
	int64_t ackerr_log_ms;
};

static inline bool seg_is_acked(const struct seg *seg, uint64_t seq)
{
	uint64_t i = seq - seg->first_seq;
	return seg->acked[i / 64] >> (i % 64) & 1;
}

static inline void seg_set_acked(struct seg *seg, uint64_t seq)
{
	uint64_t i = seq - seg->first_seq;
	seg->acked[i / 64] |= 1ull << (i % 64);
	seg->nacked++;
}

static inline uint64_t seg_live(const struct seg *seg)
{
	return seg->end_seq - seg->first_seq - seg->nacked;
}

/* spool_io.c */
bool spool_log_due(int64_t *last);
MUST_USE int spool_pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got);
MUST_USE int spool_pwritev_all(int fd, struct iovec *iov, size_t n, uint64_t off);
int spool_timed_fdatasync(int fd);
MUST_USE int spool_write_all(int fd, const void *buf, size_t len);
/*
 * *from: where the run of zero bytes that ends a file of size bytes starts,
 * no lower than start (size when the last byte is not zero). 0, or -1 on a
 * read error.
 */
MUST_USE int spool_zero_tail(int fd, uint64_t start, uint64_t size, uint64_t *from);

/* spool_spare.c */
void spare_start(struct spool *sp);
void spare_stop(struct spool *sp);
/*
 * The writer's, after each group: ask for the next segment's spare at the
 * first group of seg, and wake the spare thread when seg's records reached
 * where it waits (spare_resume_at).
 */
void spare_want(struct spool *sp, struct seg *seg);
/*
 * The writer's: rename the ready spare to name and return its descriptor,
 * with *zero_end its size; -1 when none is ready.
 */
int spare_take(struct spool *sp, const char *name, uint64_t *zero_end);

/* spool_seqmap.c */
void seqmap_del(struct seqmap *m, uint64_t key);
void seqmap_fini(struct seqmap *m);
bool seqmap_get(const struct seqmap *m, uint64_t key, uint64_t *val);
void seqmap_put_nogrow(struct seqmap *m, uint64_t key, uint64_t val);
MUST_USE int seqmap_reserve(struct seqmap *m, size_t n);

/* spool_seg.c */
struct seg *seg_find(struct spool *sp, uint64_t seq);
bool seg_acked(struct spool *sp, struct seg *seg, uint64_t seq);
void seg_maybe_delete(struct spool *sp, struct seg *seg);
/*
 * Sequences stay below SPOOL_SEQ_MAX: a file named with a first sequence at
 * or above it is no segment (ignored as an unknown file), so recovery never
 * continues near 2^64, where a committed record could take a sequence the
 * reader's cursor cannot pass. Records stay within their segment's first
 * sequence plus its size in headers, far below 2^64.
 */
#define SPOOL_SEQ_MAX (UINT64_C(1) << 62)
bool seg_parse_name(const char *name, const char *ext, uint64_t *first);
size_t spool_rec_total(const unsigned char *rec);
bool seg_seal_plausible(const struct spool_seal *s);
MUST_USE int seg_create(struct spool *sp, uint64_t first, struct seg **out);
void seg_delete(struct spool *sp, struct seg *seg);
void seg_free(struct seg *seg);
void seg_name(char *buf, size_t len, uint64_t first, const char *ext);
struct seg *seg_new(uint64_t first);
MUST_USE int seg_reserve(struct seg *seg, uint64_t end);
void seg_seal(struct spool *sp, struct seg *seg);
void seg_snapshot(struct spool *sp, struct seg *seg, uint64_t *end, uint64_t *end_seq,
    bool *active);
void trim_step(struct spool *sp, bool all);

/*
 * The directory listing the daemon's recovery and ackd-spool's reader
 * share. spool_name_kind() classifies a name of the spool directory (or of
 * failed/: in_failed) and gives the first sequence it names; -1 for the
 * names that are no part of the listing (".", "..", lock, failed).
 * spool_list() calls each for every entry of dir_fd (sub NULL) or of
 * dir_fd/sub, and stops at the first -1 each returns; 0, or -1 with errno
 * (ENOENT: no such sub). Nothing is changed.
 */
enum spool_name_kind {
	SPOOL_NAME_SEG,    /* seg-<first>.spool */
	SPOOL_NAME_ACK,    /* seg-<first>.ack */
	SPOOL_NAME_TEMP,   /* .seg-<first>.tmp: being created, or a deleted one shrinking */
	SPOOL_NAME_FAILED, /* failed/failed-<first>.log */
	SPOOL_NAME_OTHER,  /* anything else */
};
typedef int spool_list_fn(void *arg, const char *name, enum spool_name_kind kind, uint64_t first);
int spool_name_kind(const char *name, bool in_failed, uint64_t *first);
MUST_USE int spool_list(int dir_fd, const char *sub, spool_list_fn *each, void *arg);

/* spool_ack.c */
void ack_flush(struct spool *sp, struct seg *seg);
bool ack_mark(struct spool *sp, struct seg *seg, uint64_t seq, bool lost);
void ack_load(struct spool *sp, struct seg *seg);
/*
 * Read the whole entries of an .ack file of size bytes: each(arg, seq) for
 * every intact entry; *bad counts those whose CRC fails. A partial last
 * entry is not read. 0, or -1 with errno. ack_load() and ackd-spool's
 * reader both use it.
 */
MUST_USE int ack_file_read(int fd, uint64_t size, void (*each)(void *arg, uint64_t seq), void *arg,
    uint64_t *bad);
uint64_t ack_mark_lost(struct spool *sp, struct seg *seg, uint64_t from, uint64_t to);

/* spool_iter.c */
void seg_cp_note(struct seg *seg, uint64_t seq, uint64_t off);
size_t it_fill(struct iter *it, uint64_t off, size_t need, const unsigned char **p);
void it_fini(struct iter *it);
void it_init(struct iter *it, int fd, uint64_t off, uint64_t end, uint64_t next_seq,
    uint64_t seq_limit);
enum it_res it_next(struct iter *it, struct it_item *item);
void it_seek(struct iter *it, struct seg *seg, uint64_t seq, uint64_t end, uint64_t end_seq);
bool it_payload_ok(const struct it_item *item);
struct spool_rec *it_rec_copy(const struct it_item *item, enum spool_rec_status *st);
/*
 * Whether a segment's Idempotency-Key records have their whole batch: a key
 * record at sequence S naming n records is whole when S - n .. S - 1 came
 * out of it_next() intact (keyed messages with their payload CRC) and in
 * sequence, no damage among them. A write over a spare's zeros that a power
 * loss cut short can keep a key record and lose a record of its batch
 * (spool_spare.c); such a key is neither loaded nor saved to the keys file,
 * or a retry would be answered for a message that is gone.
 */
struct batch_run {
	uint64_t from;   /* records [from, expect) came whole; UINT64_MAX: none since damage */
	uint64_t expect;
};
void batch_run_init(struct batch_run *b);
/* Note what it_next() returned; false when it is damage (the run broken). */
bool batch_run_note(struct batch_run *b, enum it_res r, const struct it_item *item);
/* A noted, intact KEY record: whether its key decodes and its batch is whole. */
bool batch_run_key_whole(const struct batch_run *b, const struct it_item *item);

/* spool_reader.c */
void spool_log_damage(struct spool *sp, struct seg *seg, const struct it_item *item, uint64_t lost);
MUST_USE int reader_read_one(struct spool *sp, struct seg *seg, uint64_t cur_seq,
    struct spool_rec **out);
void reader_forget(struct spool *sp, struct seg *seg);
struct seg *reader_resolve(struct spool *sp, uint64_t seq, uint64_t *cur);

/* spool_failed.c */
bool failed_parse_name(const char *name, uint64_t *first);
MUST_USE int failed_repair(struct spool *sp, char *err, size_t errlen);
void failed_retry_due(struct spool *sp);
void failed_fini(struct spool *sp);

/* spool_writer.c */
MUST_USE int batch_add_copy(struct spool_batch *b, const unsigned char *rec, size_t len);
MUST_USE enum spool_err spool_submit_batch(struct spool *sp, struct spool_batch *b,
    spool_done_fn *done, void *arg, bool check_space);
void *spool_writer_main(void *arg);

/* spool_keys.c */
MUST_USE int keys_load(struct spool *sp, char *err, size_t errlen);
/* Append seg's unexpired KEY records to the keys file and sync it; 0, or -1 with errno. */
MUST_USE int keys_save(struct spool *sp, struct seg *seg);
/* Append a KEY_ACK record (without fsync). 0, or -1 with errno; nothing when no keys are kept. */
MUST_USE int keys_append_ack(struct spool *sp, uint64_t seq, const char *id, int32_t partition,
    int64_t offset);
/* Install a compaction whose thread has ended; nothing while it runs. */
void keys_job_poll(struct spool *sp);
void keys_fini(struct spool *sp);

/* spool_copy.c */
void cf_apply(struct spool *sp);
void cf_start(struct spool *sp);

/* spool_recover.c */
int spool_cmp_u64(const void *a, const void *b);
MUST_USE int spool_push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x);
MUST_USE int spool_recover(struct spool *sp, char *err, size_t errlen);

/* spool.c */
void spool_maint(struct spool *sp, bool force);

#endif
