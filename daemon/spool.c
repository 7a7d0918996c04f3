/*
 * spool: the on-disk queue between the publish API and Kafka.
 *
 * Files in the spool directory:
 *   lock                   flock()ed while an ackd owns the directory
 *   seg-<first seq>.spool  a segment: header, records, and when sealed a footer
 *   seg-<first seq>.ack    acknowledged sequences of that segment, appended
 *   failed/failed-<first seq>.log  records Kafka rejected, with the reason
 * docs/spool-format.md describes the bytes.
 *
 * Writing (group commit). Request threads encode and CRC their records into a
 * struct spool_batch and queue it with spool_submit(), which refuses at once
 * when max_bytes or the file system's free space would be exceeded. One
 * writer thread takes everything queued, stamps consecutive sequence numbers,
 * writes it with pwritev at the end of the active segment, calls fdatasync
 * once (fsync=always), then each batch's done callback, then the commit hook.
 * With fsync=interval the callbacks follow the write and fdatasync runs every
 * fsync_interval_ms; with never it does not run. A failed write or sync
 * truncates the segment back to its size before the group and fails every
 * batch of the group (ENOSPC: SPOOL_EFULL, else SPOOL_EIO); sequences are
 * reused, so a segment's sequences stay contiguous. When the active segment
 * has grown past segment_bytes, the writer creates the next one (temp file,
 * header, fsync, rename, fsync the directory) and then seals the old one
 * with a footer saying its sequence range, so opening it later reads 68
 * bytes instead of its records.
 *
 * Reading and acknowledging. Memory holds no backlog: spool_next() reads the
 * records back from the files in 256 KiB blocks, up to the committed end.
 * Each segment keeps a bitmap of acknowledged sequences; spool_ack() sets a
 * bit and buffers the sequence for the segment's .ack file, which
 * maintenance appends to without fsync (a lost acknowledgement can only
 * cause a duplicate). A segment whose records are all acknowledged, and
 * which is not the active one, is deleted with its .ack file; one over
 * TRIM_STEP is renamed to its temp name instead and shrunk a step per
 * maintenance pass before the unlink (trim_step()). Every 64th
 * record the reader notes its offset, so spool_get() finds a record by
 * sequence without reading the segment from its start.
 *
 * Copy-forward. One record stuck in retry must not pin a 64 MiB segment. A
 * segment that is not among the newest four, whose records were all handed
 * out by spool_next() and of which fewer than 10% are unacknowledged, has
 * its live records copied (flagged SPOOL_REC_F_COPY, with new sequences)
 * into the active segment through the writer. Once that commit is durable,
 * maintenance maps each original sequence to its copy (fwd) and back (rev),
 * acknowledges copies whose original was acknowledged meanwhile, and deletes
 * the old segment. The producer keeps using the sequence it was given:
 * spool_ack(), spool_fail() and spool_get() follow fwd. spool_next() never
 * hands out a copy made in this run (its original was handed out already);
 * after a restart the maps are gone and copies are ordinary records. A crash
 * between the copy and the deletion leaves both: a duplicate, never a loss.
 *
 * Recovery (spool_open). Sealed segments are trusted by their footer; the
 * last, unsealed segment is read in full with its payload CRCs. A damaged
 * region followed by a valid record is skipped and its sequences are marked
 * lost (counted, logged); damage with no valid record after it is a torn
 * tail and is cut off. Sealed segments' payloads are checked lazily by
 * spool_next(), which handles damage the same way. Unknown files are
 * ignored with a warning, unfinished temp files and orphan .ack files
 * removed, a partial last .ack entry dropped.
 *
 * Threads. spool_submit() from any thread; the writer thread owns the active
 * segment's file offset and next_seq; spool_next/get/ack/fail/maintain from
 * the producer thread only, which alone deletes segments; spool_stats() from
 * any thread. sp->mu guards the queue, the segment list and every segment
 * field marked below.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "health.h"
#include "log.h"
#include "metrics.h"
#include "spool.h"

#define SEG_DEFAULT_BYTES (64ull << 20)
#define SEG_MIN_BYTES (64ull << 10)
#define READ_BLOCK (256u << 10)
#define DISK_MARGIN (16ull << 20)   /* free space kept beyond a batch */
#define STATVFS_EVERY_MS 100
#define MAINT_EVERY_MS 100
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
#define TRIM_MAX 2                  /* deleted segments shrinking at once; more are unlinked */

#ifndef HAVE_FDATASYNC
#define fdatasync fsync
#endif

static ssize_t sys_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	return pwritev(fd, iov, iovcnt, off);
}

static int sys_fdatasync(int fd) { return fdatasync(fd); }

static int sys_ftruncate(int fd, off_t len) { return ftruncate(fd, len); }

struct spool_io spool_io = { sys_pwritev, sys_fdatasync, sys_ftruncate };

/* --- types ------------------------------------------------------------------ */

struct spool_batch {
	unsigned char *buf; /* encoded records, back to back */
	size_t len;
	size_t cap;
	size_t count;
	int64_t min_ts;
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
	uint64_t *acked;     /* bitmap over [first_seq, end_seq) */
	size_t acked_words;
	uint64_t nacked;
	uint64_t nrecs;
	int64_t min_ts;
	bool sealed;
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
	uint64_t max_bytes;
	uint64_t segment_bytes;

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
	size_t ntrims;
	int64_t maint_ms;
	int64_t ackerr_log_ms;
};

/* --- small helpers ----------------------------------------------------------- */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True at most once per ERR_LOG_EVERY_MS for the given clock. */
static bool log_due(int64_t *last)
{
	int64_t now = mono_ms();

	if (*last && now - *last < ERR_LOG_EVERY_MS)
		return false;
	*last = now;
	return true;
}

static void seg_name(char *buf, size_t len, uint64_t first, const char *ext)
{
	snprintf(buf, len, "seg-%020" PRIu64 ".%s", first, ext);
}

/* "seg-<20 digits>.<ext>" -> first sequence. */
static bool parse_seg_name(const char *name, const char *ext, uint64_t *first)
{
	size_t elen = strlen(ext);
	uint64_t v = 0;

	if (strlen(name) != 4 + 20 + 1 + elen || strncmp(name, "seg-", 4) != 0 || name[24] != '.' ||
	    strcmp(name + 25, ext) != 0)
		return false;
	for (int i = 4; i < 24; i++) {
		if (name[i] < '0' || name[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*first = v;
	return v > 0;
}

static size_t rec_total(const unsigned char *rec)
{
	uint32_t len = (uint32_t)rec[8] | (uint32_t)rec[9] << 8 | (uint32_t)rec[10] << 16 |
	    (uint32_t)rec[11] << 24;
	return SPOOL_REC_HDR_SIZE + len;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*got = done;
	return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* pwritev through the seam, IOV_MAX at a time, resuming short writes. */
static int pwritev_all(int fd, struct iovec *iov, size_t n, uint64_t off)
{
	for (;;) {
		while (n > 0 && iov->iov_len == 0) {
			iov++;
			n--;
		}
		if (n == 0)
			return 0;
		ssize_t w = spool_io.pwritev(fd, iov, n > IOV_MAX ? IOV_MAX : (int)n, (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		if (w == 0) {
			errno = EIO;
			return -1;
		}
		off += (uint64_t)w;
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
}

/* --- seqmap ------------------------------------------------------------------ */

static size_t map_slot(uint64_t key, size_t cap)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

static bool map_get(const struct seqmap *m, uint64_t key, uint64_t *val)
{
	if (!m->cap)
		return false;
	for (size_t i = map_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == MAP_EMPTY)
			return false;
		if (m->k[i] == key) {
			*val = m->v[i];
			return true;
		}
	}
}

static void map_put_nogrow(struct seqmap *m, uint64_t key, uint64_t val)
{
	size_t tomb = SIZE_MAX;

	for (size_t i = map_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == key) {
			m->v[i] = val;
			return;
		}
		if (m->k[i] == MAP_TOMB && tomb == SIZE_MAX)
			tomb = i;
		if (m->k[i] == MAP_EMPTY) {
			if (tomb == SIZE_MAX) {
				tomb = i;
				m->used++;
			}
			m->k[tomb] = key;
			m->v[tomb] = val;
			return;
		}
	}
}

/* Room for n more puts without growing; 0 or -1 (ENOMEM). */
static int map_reserve(struct seqmap *m, size_t n)
{
	struct seqmap nm = { 0 };
	size_t live = 0;

	if ((m->used + n) * 2 <= m->cap)
		return 0;
	for (size_t i = 0; i < m->cap; i++)
		live += m->k[i] != MAP_EMPTY && m->k[i] != MAP_TOMB;
	nm.cap = 64;
	while ((live + n) * 2 > nm.cap)
		nm.cap *= 2;
	nm.k = calloc(nm.cap, sizeof(*nm.k));
	nm.v = calloc(nm.cap, sizeof(*nm.v));
	if (!nm.k || !nm.v) {
		free(nm.k);
		free(nm.v);
		return -1;
	}
	for (size_t i = 0; i < m->cap; i++)
		if (m->k[i] != MAP_EMPTY && m->k[i] != MAP_TOMB)
			map_put_nogrow(&nm, m->k[i], m->v[i]);
	free(m->k);
	free(m->v);
	*m = nm;
	return 0;
}

static void map_del(struct seqmap *m, uint64_t key)
{
	if (!m->cap)
		return;
	for (size_t i = map_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == MAP_EMPTY)
			return;
		if (m->k[i] == key) {
			m->k[i] = MAP_TOMB;
			return;
		}
	}
}

static void map_fini(struct seqmap *m)
{
	free(m->k);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

/* --- segments ---------------------------------------------------------------- */

static struct seg *seg_new(uint64_t first)
{
	struct seg *seg = calloc(1, sizeof(*seg));

	if (!seg)
		return NULL;
	seg->first_seq = first;
	seg->end_seq = first;
	seg->fd = -1;
	seg->ack_fd = -1;
	return seg;
}

static void seg_free(struct seg *seg)
{
	if (!seg)
		return;
	if (seg->fd >= 0)
		close(seg->fd);
	if (seg->ack_fd >= 0)
		close(seg->ack_fd);
	free(seg->acked);
	free(seg->cps);
	free(seg);
}

/* Bitmap room for sequences below end; 0 or -1 (ENOMEM). Under sp->mu. */
static int seg_reserve(struct seg *seg, uint64_t end)
{
	size_t need = (size_t)((end - seg->first_seq + 63) / 64);
	size_t words = seg->acked_words ? seg->acked_words : 16;
	uint64_t *a;

	if (need <= seg->acked_words)
		return 0;
	while (words < need)
		words *= 2;
	a = realloc(seg->acked, words * sizeof(*a));
	if (!a)
		return -1;
	memset(a + seg->acked_words, 0, (words - seg->acked_words) * sizeof(*a));
	seg->acked = a;
	seg->acked_words = words;
	return 0;
}

static bool seg_is_acked(const struct seg *seg, uint64_t seq)
{
	uint64_t i = seq - seg->first_seq;
	return seg->acked[i / 64] >> (i % 64) & 1;
}

static void seg_set_acked(struct seg *seg, uint64_t seq)
{
	uint64_t i = seq - seg->first_seq;
	seg->acked[i / 64] |= 1ull << (i % 64);
	seg->nacked++;
}

static uint64_t seg_live(const struct seg *seg) { return seg->end_seq - seg->first_seq - seg->nacked; }

/* The segment holding seq (committed), or NULL. Producer thread. */
static struct seg *find_seg(struct spool *sp, uint64_t seq)
{
	struct seg *seg;

	pthread_mutex_lock(&sp->mu);
	for (seg = sp->segs; seg; seg = seg->next) {
		if (seq < seg->first_seq) {
			seg = NULL;
			break;
		}
		if (seq < seg->end_seq)
			break;
	}
	pthread_mutex_unlock(&sp->mu);
	return seg;
}

/* Append the buffered acknowledgements to seg's .ack file, without fsync. */
static void ack_flush(struct spool *sp, struct seg *seg)
{
	char name[64];

	if (seg->ack_n == 0)
		return;
	if (seg->ack_fd < 0) {
		seg_name(name, sizeof(name), seg->first_seq, "ack");
		seg->ack_fd = openat(sp->dir_fd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	}
	/*
	 * A lost acknowledgement only makes the record be produced again; a
	 * partial entry would shift every later one off the entry grid, so a
	 * failed write is cut back to where it started.
	 */
	if (seg->ack_fd >= 0) {
		off_t before = lseek(seg->ack_fd, 0, SEEK_END);
		if (write_all(seg->ack_fd, seg->ack_buf, seg->ack_n * SPOOL_ACK_ENTRY_SIZE) < 0) {
			if (before >= 0 && ftruncate(seg->ack_fd, before) < 0)
				log_warn("spool: %s: cannot truncate the acknowledgements of segment %"
				    PRIu64, sp->dir, seg->first_seq);
			if (log_due(&sp->ackerr_log_ms))
				log_warn("spool: %s: cannot write acknowledgements of segment %" PRIu64,
				    sp->dir, seg->first_seq);
		}
	} else if (log_due(&sp->ackerr_log_ms)) {
		log_warn("spool: %s: cannot open the acknowledgements of segment %" PRIu64, sp->dir,
		    seg->first_seq);
	}
	seg->ack_n = 0;
}

/*
 * Mark seq of seg acknowledged: by Kafka, or lost to damage (counted). Returns
 * whether it was live. Producer thread.
 */
static bool ack_mark(struct spool *sp, struct seg *seg, uint64_t seq, bool lost)
{
	bool was_live = false;

	pthread_mutex_lock(&sp->mu);
	if (seq >= seg->first_seq && seq < seg->end_seq && !seg_is_acked(seg, seq)) {
		seg_set_acked(seg, seq);
		sp->live--;
		if (lost)
			sp->damaged++;
		was_live = true;
	}
	pthread_mutex_unlock(&sp->mu);
	if (!was_live)
		return false;
	spool_ack_entry_encode(seg->ack_buf + seg->ack_n * SPOOL_ACK_ENTRY_SIZE, seq);
	if (++seg->ack_n == ACK_BUF_ENTRIES)
		ack_flush(sp, seg);
	return true;
}

/* Mark [from, to) of seg lost to damage; returns how many were live. */
static uint64_t mark_lost(struct spool *sp, struct seg *seg, uint64_t from, uint64_t to)
{
	uint64_t n = 0;

	for (uint64_t s = from; s < to; s++)
		n += ack_mark(sp, seg, s, true);
	return n;
}

static void reader_forget(struct spool *sp, struct seg *seg);

/* Delete a segment and its .ack file. Producer thread; not the active one. */
static void seg_delete(struct spool *sp, struct seg *seg)
{
	struct seg **pp;
	char name[64], tmp[64];
	uint64_t size;

	pthread_mutex_lock(&sp->mu);
	for (pp = &sp->segs; *pp && *pp != seg; pp = &(*pp)->next)
		;
	*pp = seg->next;
	sp->nsegs--;
	sp->bytes -= seg->file_bytes;
	sp->live -= seg_live(seg);
	size = seg->file_bytes;
	pthread_mutex_unlock(&sp->mu);

	reader_forget(sp, seg);
	seg_name(name, sizeof(name), seg->first_seq, "spool");
	snprintf(tmp, sizeof(tmp), ".seg-%020" PRIu64 ".tmp", seg->first_seq);
	if (size > TRIM_STEP && sp->ntrims < TRIM_MAX &&
	    renameat(sp->dir_fd, name, sp->dir_fd, tmp) == 0) {
		/* Gone from the spool; trim_step() frees its blocks a step at a time. */
		sp->trims[sp->ntrims++] = (struct trim){ seg->fd, seg->first_seq, size };
		seg->fd = -1;
	} else if (unlinkat(sp->dir_fd, name, 0) < 0)
		log_warn("spool: %s: cannot delete %s", sp->dir, name);
	seg_name(name, sizeof(name), seg->first_seq, "ack");
	if (unlinkat(sp->dir_fd, name, 0) < 0 && errno != ENOENT)
		log_warn("spool: %s: cannot delete %s", sp->dir, name);
	if (fsync(sp->dir_fd) < 0)
		log_warn("spool: %s: fsync of the directory", sp->dir);
	log_debug("spool: %s: deleted segment %" PRIu64, sp->dir, seg->first_seq);
	seg_free(seg);
}

/*
 * Shrink the oldest deleted segment by TRIM_STEP; unlink it once empty.
 * Unlinking 64 MiB at once (blocks freed, discarded on a file system mounted
 * with discard) stalled the writer's next fdatasync by 15-40 ms; 4 MiB per
 * maintenance pass does not show. A crash leaves the temp file, which
 * spool_open() removes like any unfinished segment. Producer thread.
 */
static void trim_step(struct spool *sp, bool all)
{
	char tmp[64];

	while (sp->ntrims > 0) {
		struct trim *t = &sp->trims[0];
		t->size = t->size > TRIM_STEP ? t->size - TRIM_STEP : 0;
		if (!all && t->size > 0 && ftruncate(t->fd, (off_t)t->size) == 0)
			return;
		/* The last step, or truncation failed: the unlink frees the rest. */
		close(t->fd);
		snprintf(tmp, sizeof(tmp), ".seg-%020" PRIu64 ".tmp", t->first_seq);
		if (unlinkat(sp->dir_fd, tmp, 0) < 0)
			log_warn("spool: %s: cannot delete %s", sp->dir, tmp);
		memmove(sp->trims, sp->trims + 1, --sp->ntrims * sizeof(*sp->trims));
		if (!all)
			return;
	}
}

/* Delete seg if every record is acknowledged and nothing still needs it. */
static void maybe_delete(struct spool *sp, struct seg *seg)
{
	bool done;

	pthread_mutex_lock(&sp->mu);
	done = seg != sp->active && seg != sp->cf.seg && seg_live(seg) == 0;
	pthread_mutex_unlock(&sp->mu);
	if (done)
		seg_delete(sp, seg);
}

/* --- reading records ----------------------------------------------------------- */

static void it_init(struct iter *it, int fd, uint64_t off, uint64_t end, uint64_t next_seq,
    uint64_t seq_limit)
{
	it->fd = fd;
	it->off = off;
	it->end = end;
	it->next_seq = next_seq;
	it->seq_limit = seq_limit;
	it->buf_off = 0;
	it->buf_len = 0;
	it->io_errno = 0;
}

static void it_fini(struct iter *it)
{
	free(it->buf);
	it->buf = NULL;
	it->cap = 0;
}

/*
 * Make bytes from off readable in it->buf, at least need of them unless the
 * records end first. Returns how many are available at *p (0 on I/O error,
 * it->io_errno set).
 */
static size_t it_fill(struct iter *it, uint64_t off, size_t need, const unsigned char **p)
{
	uint64_t limit = off < it->end ? it->end - off : 0;
	size_t want, got;

	if (need > limit)
		need = (size_t)limit;
	if (off >= it->buf_off && off + need <= it->buf_off + it->buf_len) {
		uint64_t avail = it->buf_off + it->buf_len - off;
		*p = it->buf + (off - it->buf_off);
		return (size_t)(avail < limit ? avail : limit);
	}
	want = need > READ_BLOCK ? need : READ_BLOCK;
	if (want > limit)
		want = (size_t)limit;
	if (want > it->cap) {
		unsigned char *nb = realloc(it->buf, want);
		if (!nb) {
			it->io_errno = ENOMEM;
			return 0;
		}
		it->buf = nb;
		it->cap = want;
	}
	it->buf_len = 0;
	if (pread_all(it->fd, it->buf, want, off, &got) < 0) {
		it->io_errno = errno;
		return 0;
	}
	it->buf_off = off;
	it->buf_len = got;
	*p = it->buf;
	return got;
}

/* Check the record at off: header, sequence bounds, length within the end. */
static enum spool_rec_status it_rec_at(struct iter *it, uint64_t off, struct spool_rec_hdr *h,
    const unsigned char **p)
{
	enum spool_rec_status st;
	size_t avail = it_fill(it, off, SPOOL_REC_HDR_SIZE, p);

	if (avail < SPOOL_REC_HDR_SIZE)
		return SPOOL_REC_SHORT;
	st = spool_rec_parse_hdr(*p, avail, h);
	if (st == SPOOL_REC_SHORT) {
		if (off + SPOOL_REC_HDR_SIZE + h->payload_len > it->end)
			return SPOOL_REC_SHORT;
		avail = it_fill(it, off, SPOOL_REC_HDR_SIZE + h->payload_len, p);
		st = spool_rec_parse_hdr(*p, avail, h);
	}
	if (st != SPOOL_REC_OK)
		return st;
	if (h->type == SPOOL_REC_SEAL)
		return SPOOL_REC_OK;
	if (h->seq < it->next_seq || (it->seq_limit && h->seq >= it->seq_limit))
		return SPOOL_REC_BAD_SEQ;
	return SPOOL_REC_OK;
}

/*
 * The next record (payload CRC not checked: the caller decides), or the
 * damage before the next valid record, or the end (records end, or a footer).
 */
static enum it_res it_next(struct iter *it, struct it_item *item)
{
	const unsigned char *p;
	enum spool_rec_status st;

	if (it->off >= it->end || it->io_errno)
		return IT_END;
	st = it_rec_at(it, it->off, &item->h, &p);
	if (it->io_errno)
		return IT_END;
	if (st == SPOOL_REC_OK) {
		if (item->h.type == SPOOL_REC_SEAL) {
			it->end = it->off;
			return IT_END;
		}
		item->rec = p;
		item->len = SPOOL_REC_HDR_SIZE + item->h.payload_len;
		item->off = it->off;
		it->off += item->len;
		it->next_seq = item->h.seq + 1;
		return IT_REC;
	}

	/* Damage: scan forward for the magic and a valid header. */
	item->why = st;
	item->off = it->off;
	item->lost_from = it->next_seq;
	item->lost_to = 0;
	item->resynced = false;
	for (uint64_t o = it->off + 1; o + SPOOL_REC_HDR_SIZE <= it->end; o++) {
		struct spool_rec_hdr h;
		size_t avail = it_fill(it, o, SPOOL_REC_HDR_SIZE, &p);
		if (avail < SPOOL_REC_HDR_SIZE)
			break;
		if (memcmp(p, "AKSR", 4) != 0)
			continue;
		if (it_rec_at(it, o, &h, &p) == SPOOL_REC_OK) {
			item->resynced = true;
			item->resync_off = o;
			item->lost_to = h.type == SPOOL_REC_SEAL ? 0 : h.seq;
			it->off = o;
			return IT_DAMAGE;
		}
	}
	item->resync_off = it->end;
	it->off = it->end;
	return IT_DAMAGE;
}

static bool payload_ok(const struct it_item *item)
{
	return crc32c(0, item->rec + SPOOL_REC_HDR_SIZE, item->h.payload_len) == item->h.payload_crc;
}

static void log_damage(struct spool *sp, struct seg *seg, const struct it_item *item, uint64_t lost)
{
	log_warnx("spool: %s: segment %" PRIu64 ": %s at offset %" PRIu64 ", skipped %" PRIu64
	    " bytes, %" PRIu64 " records lost",
	    sp->dir, seg->first_seq, spool_rec_status_str(item->why), item->off,
	    item->resync_off - item->off, lost);
}

/* A decoded copy of the record at item, or NULL when its payload is damaged. */
static struct spool_rec *rec_from(const struct it_item *item, enum spool_rec_status *st)
{
	size_t nh = 16;

	for (;;) {
		size_t hdr_bytes = nh * sizeof(struct spool_hdr);
		struct spool_rec *r = malloc(sizeof(*r) + hdr_bytes + item->len);
		struct spool_hdr *hdrs;
		unsigned char *raw;

		if (!r) {
			*st = SPOOL_REC_OK;
			return NULL;
		}
		hdrs = (struct spool_hdr *)(r + 1);
		raw = (unsigned char *)hdrs + hdr_bytes;
		memcpy(raw, item->rec, item->len);
		*st = spool_rec_decode(raw, item->len, NULL, &r->msg, hdrs, nh);
		if (*st != SPOOL_REC_OK) {
			free(r);
			return NULL;
		}
		if (r->msg.nhdrs <= nh) {
			r->seq = item->h.seq;
			return r;
		}
		nh = r->msg.nhdrs;
		free(r);
	}
}

static void cp_note(struct seg *seg, uint64_t seq, uint64_t off)
{
	uint64_t last = seg->ncps ? seg->cps[seg->ncps - 1].seq : seg->first_seq;

	if (seq < last + CP_EVERY)
		return;
	if (seg->ncps == seg->cps_cap) {
		size_t cap = seg->cps_cap ? seg->cps_cap * 2 : 64;
		struct cp *n = realloc(seg->cps, cap * sizeof(*n));
		if (!n)
			return;
		seg->cps = n;
		seg->cps_cap = cap;
	}
	seg->cps[seg->ncps].seq = seq;
	seg->cps[seg->ncps].off = off;
	seg->ncps++;
}

/* Position it on seg at the last checkpoint at or before seq. */
static void it_seek(struct iter *it, struct seg *seg, uint64_t seq, uint64_t end, uint64_t end_seq)
{
	uint64_t off = SPOOL_SEG_HDR_SIZE, from = seg->first_seq;
	size_t lo = 0, hi = seg->ncps;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (seg->cps[mid].seq <= seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo > 0) {
		off = seg->cps[lo - 1].off;
		from = seg->cps[lo - 1].seq;
	}
	it_init(it, seg->fd, off, end, from, end_seq);
}

static void reader_forget(struct spool *sp, struct seg *seg)
{
	if (sp->rd_seg == seg)
		sp->rd_seg = NULL;
}

static void seg_snapshot(struct spool *sp, struct seg *seg, uint64_t *end, uint64_t *end_seq,
    bool *active)
{
	pthread_mutex_lock(&sp->mu);
	*end = seg->data_end;
	*end_seq = seg->end_seq;
	if (active)
		*active = seg == sp->active;
	pthread_mutex_unlock(&sp->mu);
}

static bool is_acked(struct spool *sp, struct seg *seg, uint64_t seq)
{
	bool acked;

	pthread_mutex_lock(&sp->mu);
	acked = seq >= seg->end_seq || seg_is_acked(seg, seq);
	pthread_mutex_unlock(&sp->mu);
	return acked;
}

/*
 * Read the live record cur_seq of seg with the aux iterator. 1 and *out, or 0
 * when it is gone or damaged (then marked lost).
 */
static int read_one(struct spool *sp, struct seg *seg, uint64_t cur_seq, struct spool_rec **out)
{
	uint64_t end, end_seq;
	struct it_item item;
	enum it_res r;

	*out = NULL;
	seg_snapshot(sp, seg, &end, &end_seq, NULL);
	it_seek(&sp->aux, seg, cur_seq, end, end_seq);
	while ((r = it_next(&sp->aux, &item)) != IT_END) {
		if (r == IT_DAMAGE) {
			uint64_t to = item.lost_to ? item.lost_to : end_seq;
			if (item.lost_from <= cur_seq && cur_seq < to) {
				log_damage(sp, seg, &item, mark_lost(sp, seg, item.lost_from, to));
				return 0;
			}
			continue;
		}
		if (item.h.seq < cur_seq)
			continue;
		if (item.h.seq > cur_seq)
			break;
		enum spool_rec_status st;
		*out = rec_from(&item, &st);
		if (*out)
			return 1;
		if (st != SPOOL_REC_OK) {
			log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64 ": %s, record lost",
			    sp->dir, seg->first_seq, cur_seq, spool_rec_status_str(st));
			ack_mark(sp, seg, cur_seq, true);
		}
		return 0;
	}
	if (sp->aux.io_errno)
		log_warnx("spool: %s: segment %" PRIu64 ": read: %s", sp->dir, seg->first_seq,
		    strerror(sp->aux.io_errno));
	return 0;
}

static void maintain(struct spool *sp, bool force);

void spool_rewind(struct spool *sp)
{
	pthread_mutex_lock(&sp->mu);
	/* Copies made so far stand for records nobody holds any more. */
	sp->run_first_seq = sp->next_seq;
	pthread_mutex_unlock(&sp->mu);
	sp->read_pos = 0; /* nothing is handed out: no segment may be copied forward yet */
	sp->rd_seg = NULL;
	/* No producer holds an original any more: copies are records of their own. */
	map_fini(&sp->fwd);
	map_fini(&sp->rev);
}

int spool_next(struct spool *sp, uint64_t *cursor, struct spool_rec **out)
{
	*out = NULL;
	maintain(sp, false);
	for (;;) {
		uint64_t want = *cursor, end, end_seq;
		struct seg *seg;
		struct it_item item;
		enum it_res r;
		bool active;

		pthread_mutex_lock(&sp->mu);
		for (seg = sp->segs; seg && seg->end_seq <= want; seg = seg->next)
			;
		pthread_mutex_unlock(&sp->mu);
		if (!seg)
			return 0;
		seg_snapshot(sp, seg, &end, &end_seq, &active);
		if (want < seg->first_seq)
			want = seg->first_seq;
		if (sp->rd_seg != seg || sp->rd.next_seq > want) {
			it_seek(&sp->rd, seg, want, end, end_seq);
			sp->rd_seg = seg;
		}
		sp->rd.end = end;
		sp->rd.seq_limit = end_seq;

		while ((r = it_next(&sp->rd, &item)) != IT_END) {
			enum spool_rec_status st;
			uint64_t s;

			if (r == IT_DAMAGE) {
				uint64_t to = item.lost_to ? item.lost_to : end_seq;
				uint64_t lost = mark_lost(sp, seg, item.lost_from, to);
				if (lost) /* else found and counted at open already */
					log_damage(sp, seg, &item, lost);
				continue;
			}
			s = item.h.seq;
			cp_note(seg, s, item.off);
			if (s < want || is_acked(sp, seg, s))
				continue;
			if ((item.h.flags & SPOOL_REC_F_COPY) && s >= sp->run_first_seq)
				continue; /* its original was handed out in this run */
			*out = rec_from(&item, &st);
			if (!*out && st == SPOOL_REC_OK) {
				/* Out of memory: read this record again next time. */
				sp->rd_seg = NULL;
				return 0;
			}
			if (!*out) {
				log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64
				    ": %s, record lost",
				    sp->dir, seg->first_seq, s, spool_rec_status_str(st));
				ack_mark(sp, seg, s, true);
				continue;
			}
			*cursor = s + 1;
			if (*cursor > sp->read_pos)
				sp->read_pos = *cursor;
			return 1;
		}
		if (sp->rd.io_errno) {
			if (log_due(&sp->ackerr_log_ms))
				log_warnx("spool: %s: segment %" PRIu64 ": read: %s", sp->dir,
				    seg->first_seq, strerror(sp->rd.io_errno));
			sp->rd_seg = NULL;
			return 0;
		}
		if (active) {
			if (sp->rd.next_seq > *cursor)
				*cursor = sp->rd.next_seq;
			if (*cursor > sp->read_pos)
				sp->read_pos = *cursor;
			return 0;
		}
		/* A finished segment whose records ended early: the rest was damaged. */
		if (sp->rd.next_seq < end_seq) {
			uint64_t n = mark_lost(sp, seg, sp->rd.next_seq, end_seq);
			if (n)
				log_warnx("spool: %s: segment %" PRIu64 ": records %" PRIu64 "..%" PRIu64
				    " missing, %" PRIu64 " lost",
				    sp->dir, seg->first_seq, sp->rd.next_seq, end_seq - 1, n);
		}
		*cursor = end_seq;
		if (*cursor > sp->read_pos)
			sp->read_pos = *cursor;
	}
}

/* Where the record handed out as seq lives now (copy-forward may have moved it). */
static struct seg *resolve(struct spool *sp, uint64_t seq, uint64_t *cur)
{
	struct seg *seg = find_seg(sp, seq);

	*cur = seq;
	if (!seg && map_get(&sp->fwd, seq, cur))
		seg = find_seg(sp, *cur);
	if (seg && is_acked(sp, seg, *cur))
		return NULL;
	return seg;
}

int spool_get(struct spool *sp, uint64_t seq, struct spool_rec **out)
{
	uint64_t cur;
	struct seg *seg = resolve(sp, seq, &cur);

	*out = NULL;
	if (!seg || read_one(sp, seg, cur, out) == 0)
		return 0;
	(*out)->seq = seq;
	return 1;
}

void spool_rec_free(struct spool_rec *r) { free(r); }

void spool_ack(struct spool *sp, uint64_t seq)
{
	struct seg *seg = find_seg(sp, seq);
	uint64_t cur;

	if (!seg && map_get(&sp->fwd, seq, &cur)) {
		map_del(&sp->fwd, seq);
		map_del(&sp->rev, cur);
		seg = find_seg(sp, cur);
		seq = cur;
	}
	if (seg) {
		ack_mark(sp, seg, seq, false);
		maybe_delete(sp, seg);
	}
	maintain(sp, false);
}

/* --- failed/ ---------------------------------------------------------------- */

/* Append one FAILED record to failed/failed-<first>.log and fsync it. */
static int failed_append(struct spool *sp, uint64_t first, const unsigned char *rec, size_t len)
{
	char name[96];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	struct stat st;
	int fd;

	snprintf(name, sizeof(name), "failed/failed-%020" PRIu64 ".log", first);
	fd = openat(sp->dir_fd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (st.st_size == 0) {
		spool_seg_hdr_encode(hdr, first, wall_ms());
		if (write_all(fd, hdr, sizeof(hdr)) < 0)
			goto fail;
	}
	if (write_all(fd, rec, len) < 0 || spool_io.fdatasync(fd) < 0) {
		/* No partial record stays: the retry appends to a clean end. */
		if (ftruncate(fd, st.st_size) < 0)
			log_warn("spool: %s: cannot truncate %s", sp->dir, name);
		goto fail;
	}
	close(fd);
	if (st.st_size == 0) {
		int dfd = openat(sp->dir_fd, "failed", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			if (fsync(dfd) < 0)
				log_warn("spool: %s: fsync of failed/", sp->dir);
			close(dfd);
		}
	}
	return 0;
fail:
	close(fd);
	return -1;
}

int spool_fail(struct spool *sp, uint64_t seq, const char *reason)
{
	struct spool_rec *r = NULL;
	struct spool_hdr *hdrs = NULL;
	struct spool_msg m;
	unsigned char *buf = NULL;
	uint64_t cur;
	struct seg *seg = resolve(sp, seq, &cur);
	size_t len;

	if (!seg || read_one(sp, seg, cur, &r) == 0)
		return 0; /* acknowledged or lost to damage already */
	m = r->msg;
	hdrs = calloc(m.nhdrs + 1, sizeof(*hdrs));
	if (!hdrs)
		goto fail;
	if (m.nhdrs)
		memcpy(hdrs, m.hdrs, m.nhdrs * sizeof(*hdrs));
	hdrs[m.nhdrs].name = SPOOL_REC_REASON_HDR;
	hdrs[m.nhdrs].name_len = strlen(SPOOL_REC_REASON_HDR);
	hdrs[m.nhdrs].value = reason;
	hdrs[m.nhdrs].value_len = strlen(reason) > 4096 ? 4096 : strlen(reason);
	m.hdrs = hdrs;
	m.nhdrs++;
	len = spool_rec_size(&m);
	if (len == 0 || !(buf = malloc(len)))
		goto fail;
	spool_rec_encode_type(&m, SPOOL_REC_FAILED, buf);
	spool_rec_set_seq(buf, seq);
	if (failed_append(sp, seg->first_seq, buf, len) < 0) {
		log_warn("spool: %s: cannot write record %" PRIu64 " to failed/", sp->dir, seq);
		goto fail;
	}
	pthread_mutex_lock(&sp->mu);
	sp->failed++;
	pthread_mutex_unlock(&sp->mu);
	log_warnx("spool: %s: record %" PRIu64 " (topic %.*s) moved to failed/: %s", sp->dir, seq,
	    (int)r->msg.topic_len, r->msg.topic, reason);
	free(buf);
	free(hdrs);
	spool_rec_free(r);
	spool_ack(sp, seq);
	return 0;
fail:
	free(buf);
	free(hdrs);
	spool_rec_free(r);
	return -1;
}

/* --- batches and submission -------------------------------------------------- */

struct spool_batch *spool_batch_new(size_t nrecords_hint)
{
	struct spool_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	b->cap = nrecords_hint ? nrecords_hint * 256 : 1024;
	b->buf = malloc(b->cap);
	if (!b->buf) {
		free(b);
		return NULL;
	}
	return b;
}

static int batch_reserve(struct spool_batch *b, size_t n)
{
	size_t cap = b->cap;
	unsigned char *nb;

	if (b->len + n <= b->cap)
		return 0;
	while (cap < b->len + n)
		cap *= 2;
	nb = realloc(b->buf, cap);
	if (!nb)
		return -1;
	b->buf = nb;
	b->cap = cap;
	return 0;
}

static void batch_note(struct spool_batch *b, const unsigned char *rec)
{
	int64_t ts = spool_rec_peek_timestamp(rec);

	if (b->count == 0 || ts < b->min_ts)
		b->min_ts = ts;
	b->count++;
}

int spool_batch_add(struct spool_batch *b, const struct spool_msg *m)
{
	size_t len = spool_rec_size(m);

	if (len == 0 || batch_reserve(b, len) < 0)
		return -1;
	spool_rec_encode(m, b->buf + b->len);
	batch_note(b, b->buf + b->len);
	b->len += len;
	return 0;
}

/* Add an already encoded record (copy-forward), marked as a copy. */
static int batch_add_copy(struct spool_batch *b, const unsigned char *rec, size_t len)
{
	if (batch_reserve(b, len) < 0)
		return -1;
	memcpy(b->buf + b->len, rec, len);
	spool_rec_set_flags(b->buf + b->len, SPOOL_REC_F_COPY);
	batch_note(b, b->buf + b->len);
	b->len += len;
	return 0;
}

size_t spool_batch_count(const struct spool_batch *b) { return b->count; }

void spool_batch_free(struct spool_batch *b)
{
	if (!b)
		return;
	free(b->buf);
	free(b);
}

/* Free space of the spool's file system, refreshed every 100 ms. Under sp->mu. */
static uint64_t disk_free(struct spool *sp)
{
	int64_t now = mono_ms();
	struct statvfs vfs;

	if (sp->disk_checked_ms && now - sp->disk_checked_ms < STATVFS_EVERY_MS)
		return sp->disk_free;
	sp->disk_checked_ms = now;
	if (fstatvfs(sp->dir_fd, &vfs) == 0)
		sp->disk_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	else
		sp->disk_free = UINT64_MAX; /* unknown: let the write tell */
	return sp->disk_free;
}

static enum spool_err submit(struct spool *sp, struct spool_batch *b, spool_done_fn *done, void *arg,
    bool check_space)
{
	struct sub *s = calloc(1, sizeof(*s));
	enum spool_err err = SPOOL_OK;

	pthread_mutex_lock(&sp->mu);
	if (!s)
		err = SPOOL_EIO;
	else if (sp->stopping || sp->refusing)
		err = SPOOL_ECLOSED;
	else if (check_space && sp->max_bytes && sp->bytes + sp->q_bytes + b->len > sp->max_bytes)
		err = SPOOL_EFULL;
	else if (check_space && disk_free(sp) < sp->q_bytes + b->len + DISK_MARGIN)
		err = SPOOL_EFULL;
	if (err == SPOOL_OK) {
		s->b = b;
		s->done = done;
		s->arg = arg;
		*sp->q_tail = s;
		sp->q_tail = &s->next;
		sp->q_bytes += b->len;
		pthread_cond_signal(&sp->wake);
	}
	pthread_mutex_unlock(&sp->mu);
	if (err != SPOOL_OK) {
		free(s);
		spool_batch_free(b);
	}
	return err;
}

int spool_writable(struct spool *sp, char *why, size_t len)
{
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	if (sp->last_werr_ms && mono_ms() - sp->last_werr_ms < WERR_RECENT_MS) {
		snprintf(why, len, "a spool write failed in the last %d s", WERR_RECENT_MS / 1000);
		rc = -1;
	} else if (sp->max_bytes && sp->bytes + sp->q_bytes >= sp->max_bytes) {
		snprintf(why, len, "the spool is full (spool.max_bytes)");
		rc = -1;
	} else if (disk_free(sp) < sp->q_bytes + DISK_MARGIN) {
		snprintf(why, len, "the spool's file system is full");
		rc = -1;
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

enum spool_err spool_submit(struct spool *sp, struct spool_batch *b, spool_done_fn *done, void *arg)
{
	return submit(sp, b, done, arg, true);
}

void spool_set_commit_hook(struct spool *sp, void (*fn)(void *arg), void *arg)
{
	pthread_mutex_lock(&sp->mu);
	sp->hook = fn;
	sp->hook_arg = arg;
	pthread_mutex_unlock(&sp->mu);
}

/* --- the writer thread ------------------------------------------------------- */

/* Create segment first: temp file, header, fsync, rename, fsync the directory. */
static int seg_create(struct spool *sp, uint64_t first, struct seg **out)
{
	char tmp[64], name[64];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	struct iovec iov = { hdr, sizeof(hdr) };
	struct seg *seg = NULL;
	int fd;

	*out = NULL;
	snprintf(tmp, sizeof(tmp), ".seg-%020" PRIu64 ".tmp", first);
	seg_name(name, sizeof(name), first, "spool");
	fd = openat(sp->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	seg = seg_new(first);
	if (!seg || seg_reserve(seg, first + 1) < 0)
		goto fail;
	spool_seg_hdr_encode(hdr, first, wall_ms());
	if (pwritev_all(fd, &iov, 1, 0) < 0 || spool_io.fdatasync(fd) < 0)
		goto fail;
	if (renameat(sp->dir_fd, tmp, sp->dir_fd, name) < 0)
		goto fail;
	if (fsync(sp->dir_fd) < 0) {
		/*
		 * The writer keeps appending to the old segment; an empty segment
		 * left under its final name would end the old one early at the
		 * next open, and its later records would be lost. Take it back.
		 */
		int saved = errno;
		unlinkat(sp->dir_fd, name, 0);
		if (fsync(sp->dir_fd) < 0)
			log_warn("spool: %s: fsync of the directory", sp->dir);
		errno = saved;
		goto fail;
	}
	seg->fd = fd;
	seg->gen = sp->next_gen++;
	seg->data_end = SPOOL_SEG_HDR_SIZE;
	seg->file_bytes = SPOOL_SEG_HDR_SIZE;
	*out = seg;
	return 0;
fail:
	{
		int saved = errno;
		seg_free(seg);
		close(fd);
		unlinkat(sp->dir_fd, tmp, 0);
		errno = saved;
	}
	return -1;
}

/* Append the footer to a finished segment; on failure it stays unsealed. */
static void seg_seal(struct spool *sp, struct seg *seg)
{
	unsigned char buf[SPOOL_SEAL_SIZE];
	struct iovec iov = { buf, sizeof(buf) };
	struct spool_seal s;

	pthread_mutex_lock(&sp->mu);
	s.first_seq = seg->first_seq;
	s.end_seq = seg->end_seq;
	s.nrecs = seg->nrecs;
	s.data_end = seg->data_end;
	s.min_ts = seg->min_ts;
	pthread_mutex_unlock(&sp->mu);
	spool_seal_encode(buf, &s);
	if (pwritev_all(seg->fd, &iov, 1, s.data_end) < 0 ||
	    (sp->fsync != CONF_FSYNC_NEVER && spool_io.fdatasync(seg->fd) < 0)) {
		if (log_due(&sp->werr_log_ms))
			log_warn("spool: %s: cannot seal segment %" PRIu64, sp->dir, seg->first_seq);
		if (spool_io.ftruncate(seg->fd, (off_t)s.data_end) < 0)
			log_warn("spool: %s: cannot truncate segment %" PRIu64, sp->dir, seg->first_seq);
		return;
	}
	pthread_mutex_lock(&sp->mu);
	seg->sealed = true;
	seg->file_bytes += SPOOL_SEAL_SIZE;
	sp->bytes += SPOOL_SEAL_SIZE;
	pthread_mutex_unlock(&sp->mu);
}

static void maybe_roll(struct spool *sp)
{
	struct seg *old = sp->active, *seg;

	if (old->data_end < sp->segment_bytes || old->end_seq == old->first_seq)
		return;
	if (seg_create(sp, sp->next_seq, &seg) < 0) {
		if (log_due(&sp->werr_log_ms))
			log_warn("spool: %s: cannot create segment %" PRIu64, sp->dir, sp->next_seq);
		return; /* keep appending to the old one */
	}
	seg_seal(sp, old);
	pthread_mutex_lock(&sp->mu);
	old->next = seg;
	sp->active = seg;
	sp->nsegs++;
	sp->bytes += seg->file_bytes;
	pthread_mutex_unlock(&sp->mu);
}

/* Tell each batch how it ended, then wake the producer. */
static void finish_group(struct spool *sp, struct sub *list, enum spool_err err)
{
	void (*hook)(void *);
	void *hook_arg;

	while (list) {
		struct sub *next = list->next;
		if (list->done)
			list->done(list->arg, err, err == SPOOL_OK ? list->first_seq : 0);
		spool_batch_free(list->b);
		free(list);
		list = next;
	}
	pthread_mutex_lock(&sp->mu);
	hook = sp->hook;
	hook_arg = sp->hook_arg;
	pthread_mutex_unlock(&sp->mu);
	if (err == SPOOL_OK && hook)
		hook(hook_arg);
}

/*
 * 64 MiB, or an eighth of spool.max_bytes when that is less: only whole
 * segments are deleted, so a spool must hold several of them to drain.
 */
static uint64_t default_segment_bytes(const struct spool_opts *opts)
{
	uint64_t eighth = opts->max_bytes / 8;

	if (opts->max_bytes == 0 || eighth >= SEG_DEFAULT_BYTES)
		return SEG_DEFAULT_BYTES;
	return eighth > SEG_MIN_BYTES ? eighth : SEG_MIN_BYTES;
}

/*
 * A footer whose CRC holds can still be nonsense (written by something else):
 * no more records than fit between header and footer, no sequence near the
 * top of the range (the bitmap is sized by it). Else the segment is scanned.
 */
static bool seal_plausible(const struct spool_seal *s)
{
	return s->end_seq >= s->first_seq && s->end_seq < (UINT64_C(1) << 62) &&
	    s->data_end >= SPOOL_SEG_HDR_SIZE &&
	    s->end_seq - s->first_seq <= (s->data_end - SPOOL_SEG_HDR_SIZE) / SPOOL_REC_HDR_SIZE;
}

/* fdatasync through the seam, its time in ackd_spool_fsync_seconds. */
static int timed_fdatasync(int fd)
{
	struct timespec t0, t1;
	int rc;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = spool_io.fdatasync(fd);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	metrics_fsync((double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return rc;
}

/* Write one group; returns 0 when it was written. Writer thread. */
static int commit_group(struct spool *sp, struct sub *list)
{
	struct seg *seg;
	struct iovec *iov = NULL;
	size_t niov = 0, i = 0;
	uint64_t off0, seq, nrecs = 0, bytes = 0;
	int64_t min_ts = 0;
	enum spool_err err;
	int rc;

	maybe_roll(sp);
	seg = sp->active;
	off0 = seg->data_end;
	seq = sp->next_seq;
	for (struct sub *s = list; s; s = s->next) {
		struct spool_batch *b = s->b;
		s->first_seq = seq;
		for (size_t o = 0; o < b->len; o += rec_total(b->buf + o))
			spool_rec_set_seq(b->buf + o, seq++);
		if (b->count && (nrecs == 0 || b->min_ts < min_ts))
			min_ts = b->min_ts;
		nrecs += b->count;
		bytes += b->len;
		niov++;
	}
	iov = calloc(niov ? niov : 1, sizeof(*iov));
	pthread_mutex_lock(&sp->mu);
	rc = iov ? seg_reserve(seg, seq) : -1;
	pthread_mutex_unlock(&sp->mu);
	if (rc < 0) {
		errno = ENOMEM;
		err = SPOOL_EIO;
		goto fail;
	}
	for (struct sub *s = list; s; s = s->next) {
		iov[i].iov_base = s->b->buf;
		iov[i++].iov_len = s->b->len;
	}
	if (pwritev_all(seg->fd, iov, niov, off0) < 0) {
		err = errno == ENOSPC || errno == EDQUOT ? SPOOL_EFULL : SPOOL_EIO;
		goto fail;
	}
	if (sp->fsync == CONF_FSYNC_ALWAYS && bytes && timed_fdatasync(seg->fd) < 0) {
		err = SPOOL_EIO;
		goto fail;
	}
	free(iov);

	pthread_mutex_lock(&sp->mu);
	if (nrecs && (seg->nrecs == 0 || min_ts < seg->min_ts))
		seg->min_ts = min_ts;
	seg->end_seq = seq;
	seg->data_end += bytes;
	seg->file_bytes += bytes;
	seg->nrecs += nrecs;
	sp->next_seq = seq;
	sp->live += nrecs;
	sp->bytes += bytes;
	sp->q_bytes -= bytes;
	sp->commits++;
	pthread_mutex_unlock(&sp->mu);
	finish_group(sp, list, SPOOL_OK);
	return 0;

fail:
	{
		int saved = errno;
		bool show = log_due(&sp->werr_log_ms);
		errno = saved;
		if (show)
			log_warn("spool: %s: writing %" PRIu64 " records to segment %" PRIu64
			    " failed, refused",
			    sp->dir, nrecs, seg->first_seq);
	}
	free(iov);
	/* Never leave a partial record: cut back to the size before the group. */
	if (spool_io.ftruncate(seg->fd, (off_t)off0) < 0)
		log_warn("spool: %s: cannot truncate segment %" PRIu64 " back to %" PRIu64, sp->dir,
		    seg->first_seq, off0);
	pthread_mutex_lock(&sp->mu);
	sp->write_errors++;
	sp->last_werr_ms = mono_ms();
	sp->q_bytes -= bytes;
	sp->disk_checked_ms = 0;
	pthread_mutex_unlock(&sp->mu);
	finish_group(sp, list, err);
	return -1;
}

static void sync_active(struct spool *sp)
{
	if (timed_fdatasync(sp->active->fd) < 0) {
		if (log_due(&sp->werr_log_ms))
			log_warn("spool: %s: fdatasync of segment %" PRIu64, sp->dir, sp->active->first_seq);
		pthread_mutex_lock(&sp->mu);
		sp->write_errors++;
		sp->last_werr_ms = mono_ms();
		pthread_mutex_unlock(&sp->mu);
	}
}

/*
 * Take the queued batches for one group: all of them, unless they hold more
 * than a segment's worth (or GROUP_MAX_BYTES), so segments keep near their
 * size. At least one batch. Under sp->mu.
 */
static struct sub *take_group(struct spool *sp)
{
	uint64_t limit = sp->segment_bytes < GROUP_MAX_BYTES ? sp->segment_bytes : GROUP_MAX_BYTES;
	struct sub *list = sp->q_head, **tail = &sp->q_head;
	uint64_t bytes = 0;

	while (*tail && (bytes == 0 || bytes + (*tail)->b->len <= limit)) {
		bytes += (*tail)->b->len;
		tail = &(*tail)->next;
	}
	sp->q_head = *tail;
	*tail = NULL;
	if (!sp->q_head)
		sp->q_tail = &sp->q_head;
	return list;
}

static void *writer_main(void *arg)
{
	struct spool *sp = arg;
	bool interval = sp->fsync == CONF_FSYNC_INTERVAL, dirty = false;
	int64_t last_sync = mono_ms();

	pthread_mutex_lock(&sp->mu);
	while (!sp->stopping) {
		struct sub *list = sp->q_head;

		health_beat(&sp->health);
		if (!list) {
			if (!dirty) {
				/* Idle: wake now and then to show the loop is alive. */
				int64_t due = mono_ms() + SPOOL_IDLE_BEAT_MS;
				struct timespec ts = { .tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000 };
				pthread_cond_timedwait(&sp->wake, &sp->mu, &ts);
				continue;
			}
			int64_t due = last_sync + sp->fsync_interval_ms;
			if (mono_ms() < due) {
				struct timespec ts = { .tv_sec = due / 1000, .tv_nsec = (due % 1000) * 1000000 };
				pthread_cond_timedwait(&sp->wake, &sp->mu, &ts);
				continue;
			}
		}
		list = take_group(sp);
		sp->writing = true;
		pthread_mutex_unlock(&sp->mu);

		if (list && commit_group(sp, list) == 0 && interval)
			dirty = true;
		if (dirty && mono_ms() >= last_sync + sp->fsync_interval_ms) {
			sync_active(sp);
			dirty = false;
			last_sync = mono_ms();
		}
		pthread_mutex_lock(&sp->mu);
		sp->writing = false;
		pthread_cond_broadcast(&sp->idle);
	}
	pthread_mutex_unlock(&sp->mu);
	if (dirty)
		sync_active(sp);
	return NULL;
}

/* --- maintenance: acks, deletion, copy-forward (producer thread) ------------------ */

static void cf_reset(struct spool *sp)
{
	free(sp->cf.seqs);
	sp->cf.seqs = NULL;
	sp->cf.n = 0;
	pthread_mutex_lock(&sp->mu);
	sp->cf.seg = NULL;
	sp->cf.done = false;
	pthread_mutex_unlock(&sp->mu);
}

static void cf_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct spool *sp = arg;

	pthread_mutex_lock(&sp->mu);
	sp->cf.done = true;
	sp->cf.err = err;
	sp->cf.first_seq = first_seq;
	pthread_mutex_unlock(&sp->mu);
}

/* The copies are durable: point the originals at them, drop the old segment. */
/* Keep the originals of a copy-forward: the copies are surplus, acknowledged. */
static void cf_drop_copies(struct spool *sp, const char *why)
{
	struct seg *seg;

	log_warnx("spool: %s: %s, keeping segment %" PRIu64, sp->dir, why, sp->cf.seg->first_seq);
	for (size_t i = 0; i < sp->cf.n; i++)
		if ((seg = find_seg(sp, sp->cf.first_seq + i)))
			ack_mark(sp, seg, sp->cf.first_seq + i, false);
	sp->cf.retry_ms = mono_ms() + CF_RETRY_MS;
	cf_reset(sp);
}

static void cf_apply(struct spool *sp)
{
	struct seg *old = sp->cf.seg, *seg;
	uint64_t first = sp->cf.first_seq;
	size_t n = sp->cf.n, moved = 0;

	if (sp->cf.err != SPOOL_OK) {
		log_warnx("spool: %s: copying segment %" PRIu64 " forward failed, retrying later",
		    sp->dir, old->first_seq);
		sp->cf.retry_ms = mono_ms() + CF_RETRY_MS;
		cf_reset(sp);
		maybe_delete(sp, old);
		return;
	}
	/*
	 * With spool.fsync interval or never the copies may still be in the page
	 * cache: they must be on disk before the originals are deleted.
	 */
	seg = find_seg(sp, first);
	if (sp->fsync != CONF_FSYNC_ALWAYS && (!seg || timed_fdatasync(seg->fd) < 0)) {
		cf_drop_copies(sp, "cannot make the copies durable");
		return;
	}
	if (map_reserve(&sp->fwd, n) < 0 || map_reserve(&sp->rev, n) < 0) {
		cf_drop_copies(sp, "out of memory mapping copied records");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t o = sp->cf.seqs[i], copy = first + i, orig;
		if (is_acked(sp, old, o)) {
			if ((seg = find_seg(sp, copy)))
				ack_mark(sp, seg, copy, false);
			continue;
		}
		if (map_get(&sp->rev, o, &orig))
			map_del(&sp->rev, o);
		else
			orig = o;
		map_put_nogrow(&sp->fwd, orig, copy);
		map_put_nogrow(&sp->rev, copy, orig);
		pthread_mutex_lock(&sp->mu);
		seg_set_acked(old, o);
		sp->live--;
		pthread_mutex_unlock(&sp->mu);
		moved++;
	}
	log_info("spool: %s: copied %zu live records of segment %" PRIu64 " forward, deleting it",
	    sp->dir, moved, old->first_seq);
	cf_reset(sp);
	seg_delete(sp, old);
}

/*
 * Pick an old (CF_KEEP_NEWEST segments were created after it), almost empty
 * segment whose records were all handed out.
 */
static struct seg *cf_candidate(struct spool *sp)
{
	struct seg *seg, *pick = NULL;

	pthread_mutex_lock(&sp->mu);
	for (seg = sp->segs; seg && seg->gen + CF_KEEP_NEWEST <= sp->active->gen; seg = seg->next) {
		uint64_t total = seg->end_seq - seg->first_seq, live = seg_live(seg);
		if (seg->end_seq > sp->read_pos)
			break;
		if (live > 0 && live * 100 < total * CF_LIVE_PERCENT) {
			pick = seg;
			break;
		}
	}
	pthread_mutex_unlock(&sp->mu);
	return pick;
}

static void cf_start(struct spool *sp)
{
	struct seg *seg;
	struct spool_batch *b = NULL;
	uint64_t end, end_seq, *seqs = NULL;
	struct it_item item;
	enum it_res r;
	size_t n = 0, cap;

	if (sp->cf.seg || mono_ms() < sp->cf.retry_ms || !(seg = cf_candidate(sp)))
		return;
	seg_snapshot(sp, seg, &end, &end_seq, NULL);
	cap = (size_t)seg_live(seg);
	b = spool_batch_new(cap);
	seqs = calloc(cap, sizeof(*seqs));
	if (!b || !seqs)
		goto fail;
	it_init(&sp->aux, seg->fd, SPOOL_SEG_HDR_SIZE, end, seg->first_seq, end_seq);
	while ((r = it_next(&sp->aux, &item)) != IT_END) {
		if (r == IT_DAMAGE) {
			uint64_t to = item.lost_to ? item.lost_to : end_seq;
			log_damage(sp, seg, &item, mark_lost(sp, seg, item.lost_from, to));
			continue;
		}
		if (is_acked(sp, seg, item.h.seq))
			continue;
		if (!payload_ok(&item)) {
			log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64 ": bad payload crc, record lost",
			    sp->dir, seg->first_seq, item.h.seq);
			ack_mark(sp, seg, item.h.seq, true);
			continue;
		}
		if (n == cap || batch_add_copy(b, item.rec, item.len) < 0)
			goto fail;
		seqs[n++] = item.h.seq;
	}
	if (sp->aux.io_errno)
		goto fail;
	if (n == 0) {
		spool_batch_free(b);
		free(seqs);
		maybe_delete(sp, seg);
		return;
	}
	sp->cf.seqs = seqs;
	sp->cf.n = n;
	pthread_mutex_lock(&sp->mu);
	sp->cf.seg = seg;
	sp->cf.done = false;
	pthread_mutex_unlock(&sp->mu);
	if (submit(sp, b, cf_done, sp, false) != SPOOL_OK) {
		cf_reset(sp);
		return;
	}
	log_debug("spool: %s: copying %zu live records of segment %" PRIu64 " forward", sp->dir, n,
	    seg->first_seq);
	return;
fail:
	log_warnx("spool: %s: cannot copy segment %" PRIu64 " forward, retrying later", sp->dir,
	    seg->first_seq);
	sp->cf.retry_ms = mono_ms() + CF_RETRY_MS;
	spool_batch_free(b);
	free(seqs);
}

static void maintain(struct spool *sp, bool force)
{
	int64_t now;
	bool done = false;

	if (sp->cf.seg) {
		pthread_mutex_lock(&sp->mu);
		done = sp->cf.done;
		pthread_mutex_unlock(&sp->mu);
		if (done)
			cf_apply(sp);
	}
	now = mono_ms();
	if (!force && now - sp->maint_ms < MAINT_EVERY_MS)
		return;
	sp->maint_ms = now;
	trim_step(sp, false);

	/*
	 * Not under sp->mu: a write can wait for the file system, and spool_submit()
	 * on the request threads and the writer's commit take that lock. Only this
	 * thread deletes segments, so seg stays valid between the steps; the lock
	 * is held only to read the link the writer may be setting.
	 */
	pthread_mutex_lock(&sp->mu);
	for (struct seg *seg = sp->segs, *next; seg; seg = next) {
		pthread_mutex_unlock(&sp->mu);
		ack_flush(sp, seg);
		pthread_mutex_lock(&sp->mu);
		next = seg->next;
	}
	pthread_mutex_unlock(&sp->mu);

	for (;;) {
		struct seg *seg;
		pthread_mutex_lock(&sp->mu);
		for (seg = sp->segs; seg; seg = seg->next)
			if (seg != sp->active && seg != sp->cf.seg && seg_live(seg) == 0)
				break;
		pthread_mutex_unlock(&sp->mu);
		if (!seg)
			break;
		seg_delete(sp, seg);
	}
	cf_start(sp);
}

void spool_maintain(struct spool *sp) { maintain(sp, true); }

/* --- stats ---------------------------------------------------------------------- */

void spool_stats(struct spool *sp, struct spool_stats *out)
{
	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&sp->mu);
	out->records = sp->live;
	out->bytes = sp->bytes;
	out->segments = sp->nsegs;
	out->damaged = sp->damaged;
	out->failed = sp->failed;
	out->commits = sp->commits;
	out->write_errors = sp->write_errors;
	out->torn_bytes = sp->torn_bytes;
	out->max_bytes = sp->max_bytes;
	for (struct seg *seg = sp->segs; seg; seg = seg->next)
		if (seg_live(seg) && seg->nrecs && (out->oldest_ms == 0 || seg->min_ts < out->oldest_ms))
			out->oldest_ms = seg->min_ts;
	pthread_mutex_unlock(&sp->mu);
}

/* --- open and recovery ------------------------------------------------------------ */

struct lost_range {
	uint64_t from, to;
};

/* Read seg's .ack file into its bitmap; drop a partial last entry. */
static void load_acks(struct spool *sp, struct seg *seg)
{
	char name[64];
	unsigned char buf[SPOOL_ACK_ENTRY_SIZE * 4096];
	struct stat st;
	uint64_t off = 0, whole, bad = 0;
	int fd;

	seg_name(name, sizeof(name), seg->first_seq, "ack");
	fd = openat(sp->dir_fd, name, O_RDWR | O_APPEND | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("spool: %s: cannot open %s", sp->dir, name);
		return;
	}
	if (fstat(fd, &st) < 0) {
		log_warn("spool: %s: %s", sp->dir, name);
		close(fd);
		return;
	}
	whole = (uint64_t)st.st_size / SPOOL_ACK_ENTRY_SIZE * SPOOL_ACK_ENTRY_SIZE;
	if (whole != (uint64_t)st.st_size) {
		log_warnx("spool: %s: %s ends with a partial entry, ignoring it", sp->dir, name);
		if (ftruncate(fd, (off_t)whole) < 0)
			log_warn("spool: %s: cannot truncate %s", sp->dir, name);
	}
	while (off < whole) {
		size_t got;
		size_t want = whole - off < sizeof(buf) ? (size_t)(whole - off) : sizeof(buf);
		if (pread_all(fd, buf, want, off, &got) < 0 || got < want) {
			log_warn("spool: %s: reading %s", sp->dir, name);
			break;
		}
		for (size_t i = 0; i + SPOOL_ACK_ENTRY_SIZE <= got; i += SPOOL_ACK_ENTRY_SIZE) {
			uint64_t seq;
			if (spool_ack_entry_parse(buf + i, &seq) < 0) {
				bad++;
				continue;
			}
			if (seq >= seg->first_seq && seq < seg->end_seq && !seg_is_acked(seg, seq))
				seg_set_acked(seg, seq);
		}
		off += got;
	}
	if (bad)
		log_warnx("spool: %s: %s: %" PRIu64 " damaged entries ignored", sp->dir, name, bad);
	seg->ack_fd = fd;
}

/*
 * Scan an unsealed segment. The last one (full) has its payload CRCs checked,
 * its torn tail cut and damaged ranges returned in *lost; others only have
 * their headers read, damage being left to the reader.
 */
static int scan_segment(struct spool *sp, struct seg *seg, uint64_t size, uint64_t seq_limit,
    bool full, struct lost_range **lost, size_t *nlost)
{
	struct iter it = { 0 };
	struct it_item item;
	enum it_res r;
	uint64_t good_end = SPOOL_SEG_HDR_SIZE, last_seq = 0;
	size_t npending = 0, cap = 0;

	*lost = NULL;
	*nlost = 0;
	it_init(&it, seg->fd, SPOOL_SEG_HDR_SIZE, size, seg->first_seq, seq_limit);
	while ((r = it_next(&it, &item)) != IT_END) {
		bool bad = r == IT_DAMAGE || (full && !payload_ok(&item));
		if (bad && !full)
			continue;
		if (bad) {
			if (*nlost == cap) {
				struct lost_range *nl;
				cap = cap ? cap * 2 : 8;
				if (!(nl = realloc(*lost, cap * sizeof(*nl))))
					goto fail;
				*lost = nl;
			}
			(*lost)[*nlost].from = r == IT_DAMAGE ? item.lost_from : item.h.seq;
			(*lost)[*nlost].to = r == IT_DAMAGE ? item.lost_to : item.h.seq + 1;
			(*nlost)++;
			npending++;
			if (r == IT_DAMAGE)
				log_warnx("spool: %s: segment %" PRIu64 ": %s at offset %" PRIu64, sp->dir,
				    seg->first_seq, spool_rec_status_str(item.why), item.off);
			else
				log_warnx("spool: %s: segment %" PRIu64 ": record %" PRIu64
				    ": bad payload crc at offset %" PRIu64,
				    sp->dir, seg->first_seq, item.h.seq, item.off);
			continue;
		}
		/* A valid record: the damage before it was in the middle, not a tail. */
		npending = 0;
		last_seq = item.h.seq;
		good_end = item.off + item.len;
		if (seg->nrecs == 0 || spool_rec_peek_timestamp(item.rec) < seg->min_ts)
			seg->min_ts = spool_rec_peek_timestamp(item.rec);
		seg->nrecs++;
	}
	if (it.io_errno) {
		errno = it.io_errno;
		goto fail;
	}
	*nlost -= npending; /* damage at the very end is the torn tail */
	seg->data_end = good_end;
	seg->end_seq = last_seq ? last_seq + 1 : seg->first_seq;
	if (full && good_end < size) {
		log_warnx("spool: %s: segment %" PRIu64 ": torn tail of %" PRIu64
		    " bytes at offset %" PRIu64 " cut off",
		    sp->dir, seg->first_seq, size - good_end, good_end);
		if (spool_io.ftruncate(seg->fd, (off_t)good_end) < 0 || spool_io.fdatasync(seg->fd) < 0)
			goto fail;
		sp->torn_bytes += size - good_end;
		size = good_end;
	}
	seg->file_bytes = size;
	it_fini(&it);
	return 0;
fail:
	it_fini(&it);
	return -1;
}

/*
 * Load one segment file. last: the newest, scanned fully and appended to
 * later. seq_limit: the next segment's first sequence (0: none). *out NULL
 * when the file holds no records and was removed.
 */
static int seg_load(struct spool *sp, uint64_t first, uint64_t seq_limit, bool last,
    struct seg **out, char *err, size_t errlen)
{
	char name[64];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE], foot[SPOOL_SEAL_SIZE];
	struct lost_range *lost = NULL;
	size_t nlost = 0, got;
	struct spool_seal seal;
	struct seg *seg = NULL;
	struct stat st;
	uint64_t hdr_first, size;
	int fd;

	*out = NULL;
	seg_name(name, sizeof(name), first, "spool");
	fd = openat(sp->dir_fd, name, O_RDWR | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "spool %s: open %s: %s", sp->dir, name, strerror(errno));
		goto fail;
	}
	size = (uint64_t)st.st_size;
	if (size < SPOOL_SEG_HDR_SIZE) {
		log_warnx("spool: %s: %s is too short to hold a segment, removing it", sp->dir, name);
		close(fd);
		unlinkat(sp->dir_fd, name, 0);
		return 0;
	}
	if (pread_all(fd, hdr, sizeof(hdr), 0, &got) < 0 || got != sizeof(hdr)) {
		snprintf(err, errlen, "spool %s: read %s: %s", sp->dir, name, strerror(errno));
		goto fail;
	}
	if (spool_seg_hdr_parse(hdr, sizeof(hdr), &hdr_first) < 0 || hdr_first != first)
		log_warnx("spool: %s: %s: damaged segment header, going by the file name", sp->dir, name);
	if (!(seg = seg_new(first))) {
		snprintf(err, errlen, "spool %s: out of memory", sp->dir);
		goto fail;
	}
	seg->fd = fd;
	fd = -1;

	if (size >= SPOOL_SEG_HDR_SIZE + SPOOL_SEAL_SIZE &&
	    pread_all(seg->fd, foot, sizeof(foot), size - SPOOL_SEAL_SIZE, &got) == 0 &&
	    got == sizeof(foot) && spool_seal_parse(foot, &seal) == 0 && seal.first_seq == first &&
	    seal.data_end == size - SPOOL_SEAL_SIZE && (!seq_limit || seal.end_seq <= seq_limit) &&
	    seal_plausible(&seal)) {
		seg->sealed = true;
		seg->end_seq = seal.end_seq;
		seg->data_end = seal.data_end;
		seg->file_bytes = size;
		seg->nrecs = seal.nrecs;
		seg->min_ts = seal.min_ts;
	} else if (scan_segment(sp, seg, size, seq_limit, last, &lost, &nlost) < 0) {
		snprintf(err, errlen, "spool %s: recovering %s: %s", sp->dir, name, strerror(errno));
		goto fail;
	}
	if (seg_reserve(seg, seg->end_seq + 1) < 0) {
		snprintf(err, errlen, "spool %s: out of memory", sp->dir);
		goto fail;
	}
	load_acks(sp, seg);
	pthread_mutex_lock(&sp->mu);
	sp->live += seg_live(seg);
	pthread_mutex_unlock(&sp->mu);
	for (size_t i = 0; i < nlost; i++) {
		uint64_t to = lost[i].to ? lost[i].to : seg->end_seq;
		mark_lost(sp, seg, lost[i].from, to);
	}
	free(lost);
	*out = seg;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	free(lost);
	seg_free(seg);
	return -1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int push_u64(uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		uint64_t *nv = realloc(*v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = x;
	return 0;
}

/* List the directory: segments and ack files sorted, junk reported. */
static int list_dir(struct spool *sp, uint64_t **segs, size_t *nsegs, uint64_t **acks,
    size_t *nacks, char *err, size_t errlen)
{
	size_t scap = 0, acap = 0;
	struct dirent *de;
	int dfd = dup(sp->dir_fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;

	if (!d) {
		snprintf(err, errlen, "spool %s: cannot list: %s", sp->dir, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		uint64_t first;
		int rc = 0;

		if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "lock") || !strcmp(n, "failed"))
			continue;
		if (parse_seg_name(n, "spool", &first))
			rc = push_u64(segs, nsegs, &scap, first);
		else if (parse_seg_name(n, "ack", &first))
			rc = push_u64(acks, nacks, &acap, first);
		else if (!strncmp(n, ".seg-", 5) && strlen(n) > 9 && !strcmp(n + strlen(n) - 4, ".tmp")) {
			log_info("spool: %s: removing unfinished segment %s", sp->dir, n);
			unlinkat(sp->dir_fd, n, 0);
		} else
			log_warnx("spool: %s: ignoring unknown file %s", sp->dir, n);
		if (rc < 0) {
			snprintf(err, errlen, "spool %s: out of memory", sp->dir);
			closedir(d);
			return -1;
		}
	}
	closedir(d);
	if (*nsegs)
		qsort(*segs, *nsegs, sizeof(**segs), cmp_u64);
	return 0;
}

static int recover(struct spool *sp, char *err, size_t errlen)
{
	uint64_t *firsts = NULL, *acks = NULL;
	size_t nfirsts = 0, nacks = 0;
	struct seg **tail = &sp->segs, *seg, *last = NULL;
	int rc = -1;

	if (list_dir(sp, &firsts, &nfirsts, &acks, &nacks, err, errlen) < 0)
		goto out;
	for (size_t i = 0; i < nfirsts; i++) {
		uint64_t limit = i + 1 < nfirsts ? firsts[i + 1] : 0;
		if (seg_load(sp, firsts[i], limit, i + 1 == nfirsts, &seg, err, errlen) < 0)
			goto out;
		if (!seg)
			continue;
		seg->gen = sp->next_gen++;
		*tail = seg;
		tail = &seg->next;
		sp->nsegs++;
		sp->bytes += seg->file_bytes;
		last = seg;
		if (seg->end_seq > sp->next_seq)
			sp->next_seq = seg->end_seq;
	}
	for (size_t i = 0; i < nacks; i++) {
		char name[64];
		for (seg = sp->segs; seg && seg->first_seq != acks[i]; seg = seg->next)
			;
		if (seg)
			continue;
		seg_name(name, sizeof(name), acks[i], "ack");
		log_info("spool: %s: removing %s of a deleted segment", sp->dir, name);
		unlinkat(sp->dir_fd, name, 0);
	}
	if (sp->next_seq == 0)
		sp->next_seq = 1;
	/*
	 * Records of the last run are not appended to: its .ack file may name
	 * sequences whose records did not reach the disk (a torn tail, a power
	 * loss with spool.fsync interval), and new records must not inherit
	 * those acknowledgements. An empty segment is reused, without its .ack
	 * file: whatever that names did not reach the disk.
	 */
	if (last && !last->sealed && last->end_seq == last->first_seq) {
		char name[64];
		seg_name(name, sizeof(name), last->first_seq, "ack");
		if (unlinkat(sp->dir_fd, name, 0) == 0 && fsync(sp->dir_fd) < 0)
			log_warn("spool: %s: fsync of the directory", sp->dir);
		sp->active = last;
	} else {
		if (seg_create(sp, sp->next_seq, &seg) < 0) {
			snprintf(err, errlen, "spool %s: cannot create a segment: %s", sp->dir,
			    strerror(errno));
			goto out;
		}
		*tail = seg;
		sp->nsegs++;
		sp->bytes += seg->file_bytes;
		sp->active = seg;
	}
	rc = 0;
out:
	free(firsts);
	free(acks);
	return rc;
}

static void spool_free(struct spool *sp)
{
	struct seg *seg;

	while ((seg = sp->segs)) {
		sp->segs = seg->next;
		seg_free(seg);
	}
	it_fini(&sp->rd);
	it_fini(&sp->aux);
	map_fini(&sp->fwd);
	map_fini(&sp->rev);
	free(sp->cf.seqs);
	for (size_t i = 0; i < sp->ntrims; i++)
		close(sp->trims[i].fd); /* the temp files go at the next open */
	if (sp->dir_fd >= 0)
		close(sp->dir_fd);
	if (sp->lock_fd >= 0)
		close(sp->lock_fd);
	pthread_cond_destroy(&sp->wake);
	pthread_cond_destroy(&sp->idle);
	pthread_mutex_destroy(&sp->mu);
	free(sp->dir);
	free(sp);
}

int spool_open(const struct spool_opts *opts, struct spool **out, char *err, size_t errlen)
{
	struct spool *sp = calloc(1, sizeof(*sp));
	pthread_condattr_t ca;
	struct spool_stats st;

	*out = NULL;
	if (!sp || !(sp->dir = strdup(opts->dir))) {
		free(sp);
		snprintf(err, errlen, "spool %s: out of memory", opts->dir);
		return -1;
	}
	sp->dir_fd = -1;
	sp->lock_fd = -1;
	sp->fsync = opts->fsync;
	sp->fsync_interval_ms = opts->fsync_interval_ms > 0 ? opts->fsync_interval_ms : 1000;
	sp->max_bytes = opts->max_bytes;
	sp->segment_bytes = opts->segment_bytes ? opts->segment_bytes : default_segment_bytes(opts);
	sp->q_tail = &sp->q_head;
	pthread_mutex_init(&sp->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&sp->wake, &ca);
	pthread_cond_init(&sp->idle, &ca);
	pthread_condattr_destroy(&ca);

	if (mkdir(sp->dir, 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "spool %s: cannot create: %s", sp->dir, strerror(errno));
		goto fail;
	}
	sp->dir_fd = open(sp->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sp->dir_fd < 0) {
		snprintf(err, errlen, "spool %s: cannot open: %s", sp->dir, strerror(errno));
		goto fail;
	}
	sp->lock_fd = openat(sp->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0640);
	if (sp->lock_fd < 0) {
		snprintf(err, errlen, "spool %s: cannot open lock file: %s", sp->dir, strerror(errno));
		goto fail;
	}
	if (flock(sp->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			snprintf(err, errlen, "spool %s is in use by another ackd (%s/lock is locked)",
			    sp->dir, sp->dir);
		else
			snprintf(err, errlen, "spool %s: cannot lock: %s", sp->dir, strerror(errno));
		goto fail;
	}
	if (mkdirat(sp->dir_fd, "failed", 0750) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "spool %s: cannot create failed/: %s", sp->dir, strerror(errno));
		goto fail;
	}
	if (recover(sp, err, errlen) < 0)
		goto fail;
	sp->run_first_seq = sp->next_seq;
	maintain(sp, true); /* flush acks for damage found, delete finished segments */

	health_register(&sp->health, "spool writer", SPOOL_MAX_QUIET_MS);
	if (pthread_create(&sp->writer, NULL, writer_main, sp) != 0) {
		health_unregister(&sp->health);
		snprintf(err, errlen, "spool %s: cannot start the writer thread", sp->dir);
		goto fail;
	}
	sp->writer_running = true;
	spool_stats(sp, &st);
	log_info("spool: %s: %" PRIu64 " records waiting in %" PRIu64 " segments (%" PRIu64
	    " damaged, %" PRIu64 " torn bytes cut)",
	    sp->dir, st.records, st.segments, st.damaged, st.torn_bytes);
	*out = sp;
	return 0;
fail:
	spool_free(sp);
	return -1;
}

int spool_quiesce(struct spool *sp, int timeout_ms)
{
	int64_t deadline = mono_ms() + timeout_ms;
	int rc = 0;

	pthread_mutex_lock(&sp->mu);
	sp->refusing = true;
	while ((sp->q_head || sp->writing) && rc == 0) {
		struct timespec ts = { .tv_sec = deadline / 1000,
			.tv_nsec = (deadline % 1000) * 1000000 };
		if (pthread_cond_timedwait(&sp->idle, &sp->mu, &ts) == ETIMEDOUT)
			rc = -1;
	}
	pthread_mutex_unlock(&sp->mu);
	return rc;
}

void spool_close(struct spool *sp)
{
	struct sub *list;

	if (!sp)
		return;
	pthread_mutex_lock(&sp->mu);
	sp->stopping = true;
	pthread_cond_signal(&sp->wake);
	pthread_mutex_unlock(&sp->mu);
	if (sp->writer_running) {
		pthread_join(sp->writer, NULL);
		health_unregister(&sp->health);
	}

	pthread_mutex_lock(&sp->mu);
	list = sp->q_head;
	sp->q_head = NULL;
	sp->q_tail = &sp->q_head;
	pthread_mutex_unlock(&sp->mu);
	while (list) {
		struct sub *next = list->next;
		if (list->done)
			list->done(list->arg, SPOOL_ECLOSED, 0);
		spool_batch_free(list->b);
		free(list);
		list = next;
	}
	if (sp->cf.seg && sp->cf.done && sp->cf.err == SPOOL_OK)
		cf_apply(sp);

	trim_step(sp, true);
	for (struct seg *seg = sp->segs; seg; seg = seg->next) {
		ack_flush(sp, seg);
		if (seg->ack_fd >= 0 && fdatasync(seg->ack_fd) < 0)
			log_warn("spool: %s: fdatasync of acknowledgements of segment %" PRIu64, sp->dir,
			    seg->first_seq);
	}
	spool_free(sp);
}

/* --- offline reading (ackd-spool) ---------------------------------------------------
 *
 * Read-only: files are opened O_RDONLY, the lock is only tried, nothing is
 * created, truncated or appended. The same iterator and record checks as
 * the daemon's reader, so the tool sees damage exactly where ackd would.
 */

struct spool_ro {
	char *dir;
	int dir_fd;
	struct spool_ro_file *segs;
	size_t nsegs;
	struct spool_ro_file *failed;
	size_t nfailed;
	struct spool_ro_other *others;
	size_t nothers;
	uint64_t **ack_bufs; /* the acks arrays of segs, owned */
};

struct spool_ro_iter {
	const struct spool_ro_file *f;
	bool failed_log;
	bool headers_only;
	bool footer_seen;
	struct iter it;
	struct spool_rec *rec;
};

/* "failed-<20 digits>.log" -> first sequence. */
static bool parse_failed_name(const char *name, uint64_t *first)
{
	char seg[64];

	if (strncmp(name, "failed-", 7) != 0 || strlen(name) != 7 + 20 + 4 ||
	    strcmp(name + 27, ".log") != 0)
		return false;
	snprintf(seg, sizeof(seg), "seg-%.20s.spool", name + 7);
	return parse_seg_name(seg, "spool", first);
}

static int ro_add_file(struct spool_ro_file **v, size_t *n, size_t *cap, const char *name,
    uint64_t first)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		struct spool_ro_file *nv = realloc(*v, nc * sizeof(*nv));
		if (!nv)
			return -1;
		*v = nv;
		*cap = nc;
	}
	memset(&(*v)[*n], 0, sizeof(**v));
	snprintf((*v)[*n].name, sizeof((*v)[*n].name), "%s", name);
	(*v)[*n].first_seq = first;
	(*n)++;
	return 0;
}

static int ro_add_other(struct spool_ro *ro, size_t *cap, const char *name,
    enum spool_ro_other_kind kind)
{
	if (ro->nothers == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct spool_ro_other *nv = realloc(ro->others, nc * sizeof(*nv));
		if (!nv)
			return -1;
		ro->others = nv;
		*cap = nc;
	}
	snprintf(ro->others[ro->nothers].name, sizeof(ro->others[ro->nothers].name), "%s", name);
	ro->others[ro->nothers].kind = kind;
	ro->nothers++;
	return 0;
}

static int cmp_ro_file(const void *a, const void *b)
{
	const struct spool_ro_file *x = a, *y = b;
	return x->first_seq < y->first_seq ? -1 : x->first_seq > y->first_seq;
}

/* Size, header and (segments) footer of f; -1 with errno when unreadable. */
static int ro_probe(struct spool_ro *ro, struct spool_ro_file *f, bool segment)
{
	unsigned char hdr[SPOOL_SEG_HDR_SIZE], foot[SPOOL_SEAL_SIZE];
	uint64_t first;
	struct stat st;
	size_t got;
	int fd = openat(ro->dir_fd, f->name, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		goto fail;
	f->bytes = (uint64_t)st.st_size;
	if (pread_all(fd, hdr, sizeof(hdr), 0, &got) < 0)
		goto fail;
	f->hdr_ok = got == sizeof(hdr) && spool_seg_hdr_parse(hdr, got, &first) == 0 &&
	    first == f->first_seq;
	if (segment && f->bytes >= SPOOL_SEG_HDR_SIZE + SPOOL_SEAL_SIZE) {
		if (pread_all(fd, foot, sizeof(foot), f->bytes - SPOOL_SEAL_SIZE, &got) < 0)
			goto fail;
		/* The conditions of seg_load(). */
		f->sealed = got == sizeof(foot) && spool_seal_parse(foot, &f->seal) == 0 &&
		    f->seal.first_seq == f->first_seq &&
		    f->seal.data_end == f->bytes - SPOOL_SEAL_SIZE &&
		    (!f->seq_limit || f->seal.end_seq <= f->seq_limit) && seal_plausible(&f->seal);
	}
	close(fd);
	return 0;
fail:
	if (fd >= 0) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return -1;
}

/* Read seg's .ack file, as load_acks() does, without dropping anything. */
static int ro_load_acks(struct spool_ro *ro, struct spool_ro_file *f, uint64_t **out)
{
	unsigned char buf[SPOOL_ACK_ENTRY_SIZE * 1024];
	uint64_t *v = NULL, off = 0, limit;
	size_t n = 0, cap = 0, got, j = 0;
	char name[64];
	struct stat st;
	int fd;

	*out = NULL;
	seg_name(name, sizeof(name), f->first_seq, "ack");
	fd = openat(ro->dir_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &st) < 0)
		goto fail;
	f->has_ack = 1;
	f->ack_bytes = (uint64_t)st.st_size;
	f->ack_partial = (uint64_t)st.st_size % SPOOL_ACK_ENTRY_SIZE;
	limit = f->sealed ? f->seal.end_seq : f->seq_limit ? f->seq_limit : UINT64_MAX;
	while (off + SPOOL_ACK_ENTRY_SIZE <= (uint64_t)st.st_size) {
		uint64_t left = (uint64_t)st.st_size - f->ack_partial - off;
		size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		if (pread_all(fd, buf, want, off, &got) < 0)
			goto fail;
		if (got < SPOOL_ACK_ENTRY_SIZE)
			break;
		for (size_t i = 0; i + SPOOL_ACK_ENTRY_SIZE <= got; i += SPOOL_ACK_ENTRY_SIZE) {
			uint64_t seq;
			if (spool_ack_entry_parse(buf + i, &seq) < 0)
				f->ack_bad++;
			else if (seq < f->first_seq || seq >= limit)
				f->ack_stray++;
			else if (push_u64(&v, &n, &cap, seq) < 0)
				goto fail;
		}
		off += got / SPOOL_ACK_ENTRY_SIZE * SPOOL_ACK_ENTRY_SIZE;
	}
	close(fd);
	if (n) {
		qsort(v, n, sizeof(*v), cmp_u64);
		for (size_t i = 0; i < n; i++)
			if (j == 0 || v[i] != v[j - 1])
				v[j++] = v[i];
	}
	f->acks = v;
	f->nacks = j;
	*out = v;
	return 0;
fail:
	{
		int saved = errno;
		free(v);
		close(fd);
		errno = saved;
	}
	return -1;
}

/* List dir and failed/; segments and failed/ logs sorted by first sequence. */
static int ro_list(struct spool_ro *ro, const char *sub, char *err, size_t errlen)
{
	size_t scap = 0, fcap = 0, ocap = ro->nothers, nacks = 0, acap = 0;
	uint64_t *acks = NULL;
	struct dirent *de;
	int dfd = sub ? openat(ro->dir_fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : dup(ro->dir_fd);
	DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;

	if (!d) {
		if (dfd >= 0)
			close(dfd);
		if (sub && errno == ENOENT)
			return 0; /* no failed/ yet */
		snprintf(err, errlen, "%s%s%s: cannot list: %s", ro->dir, sub ? "/" : "", sub ? sub : "",
		    strerror(errno));
		return -1;
	}
	rewinddir(d);
	while ((de = readdir(d))) {
		const char *n = de->d_name;
		char path[300];
		uint64_t first;
		int rc = 0;

		if (!strcmp(n, ".") || !strcmp(n, ".."))
			continue;
		if (sub) {
			snprintf(path, sizeof(path), "%s/%s", sub, n);
			if (parse_failed_name(n, &first))
				rc = ro_add_file(&ro->failed, &ro->nfailed, &fcap, path, first);
			else
				rc = ro_add_other(ro, &ocap, path, SPOOL_RO_UNKNOWN);
		} else if (!strcmp(n, "lock") || !strcmp(n, "failed")) {
			continue;
		} else if (parse_seg_name(n, "spool", &first)) {
			rc = ro_add_file(&ro->segs, &ro->nsegs, &scap, n, first);
		} else if (parse_seg_name(n, "ack", &first)) {
			rc = push_u64(&acks, &nacks, &acap, first);
		} else if (!strncmp(n, ".seg-", 5) && strlen(n) > 9 && !strcmp(n + strlen(n) - 4, ".tmp")) {
			rc = ro_add_other(ro, &ocap, n, SPOOL_RO_TEMP);
		} else {
			rc = ro_add_other(ro, &ocap, n, SPOOL_RO_UNKNOWN);
		}
		if (rc < 0) {
			snprintf(err, errlen, "%s: out of memory", ro->dir);
			closedir(d);
			free(acks);
			return -1;
		}
	}
	closedir(d);
	/* .ack files without their segment. */
	for (size_t i = 0; i < nacks; i++) {
		bool found = false;
		char name[64];
		for (size_t j = 0; j < ro->nsegs && !found; j++)
			found = ro->segs[j].first_seq == acks[i];
		seg_name(name, sizeof(name), acks[i], "ack");
		if (!found && ro_add_other(ro, &ocap, name, SPOOL_RO_ORPHAN_ACK) < 0) {
			snprintf(err, errlen, "%s: out of memory", ro->dir);
			free(acks);
			return -1;
		}
	}
	free(acks);
	if (sub && ro->nfailed)
		qsort(ro->failed, ro->nfailed, sizeof(*ro->failed), cmp_ro_file);
	if (!sub && ro->nsegs)
		qsort(ro->segs, ro->nsegs, sizeof(*ro->segs), cmp_ro_file);
	return 0;
}

int spool_ro_open(const char *dir, struct spool_ro **out, char *err, size_t errlen)
{
	struct spool_ro *ro = calloc(1, sizeof(*ro));

	*out = NULL;
	if (!ro || !(ro->dir = strdup(dir))) {
		free(ro);
		snprintf(err, errlen, "%s: out of memory", dir);
		return -1;
	}
	ro->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ro->dir_fd < 0) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		goto fail;
	}
	if (ro_list(ro, NULL, err, errlen) < 0 || ro_list(ro, "failed", err, errlen) < 0)
		goto fail;
	if (ro->nsegs && !(ro->ack_bufs = calloc(ro->nsegs, sizeof(*ro->ack_bufs)))) {
		snprintf(err, errlen, "%s: out of memory", dir);
		goto fail;
	}
	for (size_t i = 0; i < ro->nsegs; i++) {
		struct spool_ro_file *f = &ro->segs[i];
		f->seq_limit = i + 1 < ro->nsegs ? ro->segs[i + 1].first_seq : 0;
		if (ro_probe(ro, f, true) < 0 || ro_load_acks(ro, f, &ro->ack_bufs[i]) < 0) {
			snprintf(err, errlen, "%s/%s: %s", dir, f->name, strerror(errno));
			goto fail;
		}
	}
	for (size_t i = 0; i < ro->nfailed; i++) {
		if (ro_probe(ro, &ro->failed[i], false) < 0) {
			snprintf(err, errlen, "%s/%s: %s", dir, ro->failed[i].name, strerror(errno));
			goto fail;
		}
	}
	*out = ro;
	return 0;
fail:
	spool_ro_free(ro);
	return -1;
}

void spool_ro_free(struct spool_ro *ro)
{
	if (!ro)
		return;
	for (size_t i = 0; ro->ack_bufs && i < ro->nsegs; i++)
		free(ro->ack_bufs[i]);
	free(ro->ack_bufs);
	free(ro->segs);
	free(ro->failed);
	free(ro->others);
	if (ro->dir_fd >= 0)
		close(ro->dir_fd);
	free(ro->dir);
	free(ro);
}

int spool_ro_in_use(const struct spool_ro *ro)
{
	int fd = openat(ro->dir_fd, "lock", O_RDONLY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1; /* ackd creates it before it locks it */
	if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK)
			rc = 1;
		else
			rc = -1;
	} else {
		flock(fd, LOCK_UN);
	}
	{
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return rc;
}

size_t spool_ro_segments(const struct spool_ro *ro, const struct spool_ro_file **files)
{
	*files = ro->segs;
	return ro->nsegs;
}

size_t spool_ro_failed(const struct spool_ro *ro, const struct spool_ro_file **files)
{
	*files = ro->failed;
	return ro->nfailed;
}

size_t spool_ro_others(const struct spool_ro *ro, const struct spool_ro_other **others)
{
	*others = ro->others;
	return ro->nothers;
}

int spool_ro_acked(const struct spool_ro_file *seg, uint64_t seq)
{
	return seg->nacks && bsearch(&seq, seg->acks, seg->nacks, sizeof(*seg->acks), cmp_u64) != NULL;
}

int spool_ro_iter_new(struct spool_ro *ro, const struct spool_ro_file *f, int headers_only,
    struct spool_ro_iter **out)
{
	struct spool_ro_iter *ri = calloc(1, sizeof(*ri));
	int fd;

	*out = NULL;
	if (!ri) {
		errno = ENOMEM;
		return -1;
	}
	fd = openat(ro->dir_fd, f->name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(ri);
		return -1;
	}
	ri->f = f;
	ri->failed_log = f >= ro->failed && f < ro->failed + ro->nfailed;
	ri->headers_only = headers_only;
	it_init(&ri->it, fd, SPOOL_SEG_HDR_SIZE, f->bytes, ri->failed_log ? 0 : f->first_seq,
	    ri->failed_log ? 0 : f->seq_limit);
	*out = ri;
	return 0;
}

/* The records ended at a seal record (at it.end): report it as the footer. */
static int ro_footer(struct spool_ro_iter *ri, struct spool_ro_item *item)
{
	const unsigned char *p;
	uint64_t off = ri->it.end;
	size_t avail;

	ri->footer_seen = true;
	ri->it.end = ri->f->bytes;
	avail = it_fill(&ri->it, off, SPOOL_SEAL_SIZE, &p);
	if (ri->it.io_errno || avail < SPOOL_REC_HDR_SIZE) {
		errno = ri->it.io_errno ? ri->it.io_errno : EIO;
		return -1;
	}
	item->kind = SPOOL_RO_FOOTER;
	item->off = off;
	item->len = rec_total(p); /* its header CRC held: the writer's length */
	if (item->len > ri->f->bytes - off)
		item->len = ri->f->bytes - off;
	item->seal_ok = avail >= SPOOL_SEAL_SIZE && item->len == SPOOL_SEAL_SIZE &&
	    spool_seal_parse(p, &item->seal) == 0 && item->seal.first_seq == ri->f->first_seq &&
	    item->seal.data_end == off;
	ri->it.off = off + item->len; /* anything from here on is trailing */
	return 1;
}

int spool_ro_iter_next(struct spool_ro_iter *ri, struct spool_ro_item *item)
{
	struct it_item ii;
	enum it_res r;

	spool_rec_free(ri->rec);
	ri->rec = NULL;
	memset(item, 0, sizeof(*item));
	if (ri->footer_seen) {
		if (ri->it.off >= ri->f->bytes)
			return 0;
		item->kind = SPOOL_RO_TRAILING;
		item->off = ri->it.off;
		item->len = ri->f->bytes - ri->it.off;
		ri->it.off = ri->f->bytes;
		return 1;
	}
	if (ri->failed_log)
		ri->it.next_seq = 0; /* records fail, and are appended, in any order */
	r = it_next(&ri->it, &ii);
	if (ri->it.io_errno) {
		errno = ri->it.io_errno;
		return -1;
	}
	if (r == IT_END) {
		if (ri->it.end < ri->f->bytes)
			return ro_footer(ri, item);
		return 0;
	}
	if (r == IT_DAMAGE) {
		item->kind = SPOOL_RO_DAMAGE;
		item->off = ii.off;
		item->len = ii.resync_off - ii.off;
		item->why = ii.why;
		item->resynced = ii.resynced;
		if (!ri->failed_log) {
			item->lost_from = ii.lost_from;
			item->lost_to = ii.lost_to;
		}
		return 1;
	}
	item->off = ii.off;
	item->len = ii.len;
	item->seq = ii.h.seq;
	item->type = ii.h.type;
	item->flags = ii.h.flags;
	item->timestamp_ms = ii.h.payload_len >= 8 ? spool_rec_peek_timestamp(ii.rec) : 0;
	item->acked = !ri->failed_log && spool_ro_acked(ri->f, ii.h.seq);
	item->kind = SPOOL_RO_RECORD;
	if (ri->headers_only)
		return 1;
	if (!payload_ok(&ii)) {
		item->kind = SPOOL_RO_DAMAGE;
		item->why = SPOOL_REC_BAD_PAYLOAD_CRC;
		item->resynced = 1;
		item->lost_from = ii.h.seq;
		item->lost_to = ii.h.seq + 1;
		return 1;
	}
	{
		enum spool_rec_status st;
		ri->rec = rec_from(&ii, &st);
		if (!ri->rec && st == SPOOL_REC_OK) {
			errno = ENOMEM;
			return -1;
		}
		if (!ri->rec) {
			item->kind = SPOOL_RO_DAMAGE;
			item->why = st;
			item->resynced = 1;
			item->lost_from = ii.h.seq;
			item->lost_to = ii.h.seq + 1;
			return 1;
		}
	}
	item->rec = ri->rec;
	return 1;
}

void spool_ro_iter_free(struct spool_ro_iter *ri)
{
	if (!ri)
		return;
	spool_rec_free(ri->rec);
	if (ri->it.fd >= 0)
		close(ri->it.fd);
	it_fini(&ri->it);
	free(ri);
}
