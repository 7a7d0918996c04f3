/*
 * spool_keys: the keys file, where Idempotency-Keys outlive their segment.
 *
 * A KEY record lives in the segment of its records (spool_batch_add_key()).
 * Before a segment that holds any is deleted (all its records acknowledged,
 * or copied forward), keys_save() appends its KEY records that have not
 * expired (spool_opts.key_ttl_ms) to the file `keys` in the spool directory,
 * unchanged, and fdatasyncs it; only then does the segment go. At open,
 * keys_load() hands the file's unexpired records to spool_opts.on_key
 * before the segments' own, cuts a torn tail, and compacts the file when
 * most of it expired: the live records are written to `keys.tmp`,
 * fdatasynced, renamed over `keys`, and the directory fsynced, so a crash
 * leaves either file whole. keys_save() also syncs the directory on a
 * run's first save and until that sync, or the one after the file's
 * creation or a compaction's rename, has succeeded: a key is durable only
 * once its file's name is.
 * keys_save() starts the same compaction, on a thread of its own (struct
 * keys_job), when the file has grown to twice what the last compaction
 * left (and 1 MiB at least) and its oldest record expired: a rewrite that
 * would drop nothing is not done, and one that failed is not tried again
 * for a minute.
 *
 * The file: a segment header (first sequence 0), then KEY records in the
 * order their segments were deleted, each with its sequence in the spool,
 * and KEY_ACK records: Kafka's partition and offset of a keyed record,
 * appended without fsync when Kafka acknowledges it (keys_append_ack()), so
 * that a replay after a restart answers 200 with them. Both expire alike.
 * docs/spool-format.md.
 *
 * Threads: the opening thread (keys_load()), then the producer thread,
 * which alone deletes segments (keys_save()) and installs a compaction
 * (keys_job_poll()); a compaction's thread only reads `keys` below the
 * offset it was given and writes `keys.tmp`.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

#define KEYS_NAME "keys"
#define KEYS_TMP "keys.tmp"
#define KEYS_COMPACT_MIN (1u << 20)
/*
 * A failed compaction (ENOSPC, EIO) is not tried again for this long: each
 * try reads the whole file, and the next KEY_ACK append, a few microseconds
 * later, would try again.
 */
#define KEYS_COMPACT_RETRY_MS 60000
/* A compaction writes the live records in pieces of this size: its memory is bounded. */
#define KEYS_COPY_CHUNK (1u << 20)

struct kbuf {
	unsigned char *p;
	size_t len, cap;
};

static int kbuf_add(struct kbuf *b, const void *p, size_t n)
{
	if (n > b->cap - b->len) {
		size_t cap = b->cap ? b->cap : 4096;
		unsigned char *np;
		while (cap - b->len < n)
			cap *= 2;
		if (!(np = realloc(b->p, cap)))
			return -1;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}

/*
 * Walk the KEY records of fd's bytes [SPOOL_SEG_HDR_SIZE, size): each(arg,
 * item) for every intact one (in a segment, first_seq not 0: with its whole
 * batch, struct batch_run), until it returns false. *good_end: where the
 * last intact record of any type ends (meaningless after a stop). 0, or -1
 * with errno.
 */
static int keys_walk(int fd, uint64_t size, uint64_t first_seq, uint64_t end_seq,
    bool (*each)(void *arg, const struct it_item *item), void *arg, uint64_t *good_end)
{
	struct iter it = { 0 };
	struct it_item item;
	struct batch_run run;
	enum it_res r;

	*good_end = SPOOL_SEG_HDR_SIZE;
	batch_run_init(&run);
	it_init(&it, fd, SPOOL_SEG_HDR_SIZE, size, first_seq, end_seq);
	for (;;) {
		if (!first_seq)
			it.next_seq = 0; /* the keys file: records in any sequence order */
		if ((r = it_next(&it, &item)) == IT_END)
			break;
		if (first_seq && !batch_run_note(&run, r, &item))
			continue;
		if (r != IT_REC)
			continue;
		if (!it_payload_ok(&item))
			continue;
		*good_end = item.off + item.len;
		/* A segment's key without its whole batch is not saved (load_keys() forgot it). */
		if (first_seq && item.h.type == SPOOL_REC_KEY && !batch_run_key_whole(&run, &item))
			continue;
		if ((item.h.type == SPOOL_REC_KEY || item.h.type == SPOOL_REC_KEY_ACK) &&
		    !each(arg, &item))
			break;
	}
	it_fini(&it);
	if (it.io_errno) {
		errno = it.io_errno;
		return -1;
	}
	return 0;
}

struct collect {
	struct spool *sp;
	struct kbuf *b;
	int64_t now;
	int err;
	uint64_t live, dead; /* bytes */
	int64_t oldest;      /* the earliest timestamp of any record walked */
	int64_t oldest_live; /* and of the live ones */
	bool load;           /* hand each live one to on_key */
};

/* Walks on while nothing failed. */
static bool collect_one(void *arg, const struct it_item *item)
{
	struct collect *c = arg;
	struct spool_key k;
	struct spool_key_ack a;
	bool is_key = item->h.type == SPOOL_REC_KEY;
	int64_t ts;

	if (c->err)
		return false;
	/*
	 * Its CRCs passed, but a record that does not decode (a payload too
	 * short for its timestamp, say) is damage: not loaded, not kept.
	 */
	if (is_key ? spool_key_decode(item->rec, item->len, NULL, &k) != SPOOL_REC_OK :
	    spool_key_ack_decode(item->rec, item->len, NULL, &a) != SPOOL_REC_OK) {
		c->dead += item->len;
		return true;
	}
	ts = is_key ? k.timestamp_ms : a.timestamp_ms;
	if (ts < c->oldest)
		c->oldest = ts;
	/* Not now - ts, which overflows for a timestamp near INT64_MIN. */
	if (ts <= c->now - c->sp->key_ttl_ms) { /* expired */
		c->dead += item->len;
		return true;
	}
	c->live += item->len;
	if (ts < c->oldest_live)
		c->oldest_live = ts;
	if (c->load && is_key && c->sp->on_key)
		c->sp->on_key(c->sp->on_key_arg, item->h.seq, &k);
	if (c->load && !is_key && c->sp->on_key_ack)
		c->sp->on_key_ack(c->sp->on_key_arg, &a);
	if (c->b && kbuf_add(c->b, item->rec, item->len) < 0)
		c->err = ENOMEM;
	return c->err == 0;
}

/* Close and remove keys.tmp; errno is kept. */
static void keys_tmp_drop(struct spool *sp, int fd)
{
	int saved = errno;

	spool_io.close(fd);
	spool_io.unlinkat(sp->dir_fd, KEYS_TMP, 0);
	errno = saved;
}

/* keys.tmp, created empty but for its header: its fd, or -1 with errno. */
static int keys_tmp_create(struct spool *sp)
{
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	int fd;

	spool_seg_hdr_encode(hdr, 0, wall_ms());
	/* Read and write: it becomes keys_fd, which the next compaction reads. */
	fd = spool_io.openat(sp->dir_fd, KEYS_TMP, O_RDWR | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC,
	    0640);
	if (fd < 0)
		return -1;
	if (spool_write_all(fd, hdr, sizeof(hdr)) < 0) {
		keys_tmp_drop(sp, fd);
		return -1;
	}
	return fd;
}

/*
 * Sync the directory when `keys` was opened, created or renamed over since
 * this last synced it: a synced append is durable only once the file's
 * name is.
 * 0, or -1 with errno (still pending: the next keys_save() tries again).
 */
static int keys_dir_sync(struct spool *sp)
{
	if (!sp->keys_dir_pending)
		return 0;
	if (spool_io.fsync(sp->dir_fd) < 0)
		return -1;
	sp->keys_dir_pending = false;
	return 0;
}

/*
 * Sync keys.tmp (fd, bytes long with its header), rename it over keys, sync
 * the directory; it is keys_fd from then on. oldest: its records' earliest
 * timestamp (INT64_MAX: none). 0 once renamed, even when the directory did
 * not sync (warned; the next keys_save() tries again); -1 with errno when it
 * did not take over: fd is closed and keys.tmp removed.
 */
static int keys_tmp_install(struct spool *sp, int fd, uint64_t bytes, int64_t oldest)
{
	if (spool_io.fdatasync(fd) < 0 ||
	    spool_io.renameat(sp->dir_fd, KEYS_TMP, sp->dir_fd, KEYS_NAME) < 0) {
		keys_tmp_drop(sp, fd);
		return -1;
	}
	/*
	 * `keys` is the new file now, whatever the directory's sync says: the
	 * old fd names an unlinked inode, and appends to it would be lost.
	 */
	if (sp->keys_fd >= 0)
		spool_io.close(sp->keys_fd);
	sp->keys_fd = fd;
	sp->keys_bytes = bytes;
	sp->keys_compacted = sp->keys_bytes;
	sp->keys_oldest_ms = oldest;
	sp->keys_cut_pending = false; /* a new file: the old one's torn bytes are gone */
	sp->keys_dir_pending = true;
	if (keys_dir_sync(sp) < 0 && keys_dir_sync(sp) < 0)
		log_warn("spool: %s: cannot sync the directory after renaming %s over %s; the "
		    "next save of keys tries again", sp->dir, KEYS_TMP, KEYS_NAME);
	return 0;
}

/* A compaction's walk: collect, and write what was collected a chunk at a time. */
struct compact {
	struct collect c;
	int fd;              /* keys.tmp */
	atomic_bool *stop;   /* when set, give up (ECANCELED); may be NULL */
};

static bool compact_one(void *arg, const struct it_item *item)
{
	struct compact *k = arg;
	struct kbuf *b = k->c.b;

	if (k->stop && atomic_load_explicit(k->stop, memory_order_relaxed))
		k->c.err = ECANCELED;
	if (!collect_one(&k->c, item))
		return false;
	if (b->len < KEYS_COPY_CHUNK)
		return true;
	if (spool_write_all(k->fd, b->p, b->len) < 0)
		k->c.err = errno;
	b->len = 0;
	return k->c.err == 0;
}

/*
 * The live records of src_fd's [header, upto) to k->fd, flushed. 0, or -1
 * with errno.
 */
static int compact_walk(struct compact *k, int src_fd, uint64_t upto)
{
	uint64_t good_end;

	if (keys_walk(src_fd, upto, 0, 0, compact_one, k, &good_end) < 0)
		return -1;
	if (k->c.err) {
		errno = k->c.err;
		return -1;
	}
	if (spool_write_all(k->fd, k->c.b->p, k->c.b->len) < 0)
		return -1;
	k->c.b->len = 0;
	return 0;
}

static void log_compacted(struct spool *sp, const struct collect *c)
{
	log_info("spool: %s: keys file compacted: %" PRIu64 " bytes of live keys, %" PRIu64
	    " expired dropped", sp->dir, c->live, c->dead);
}

/*
 * Rewrite the file with its unexpired records only, through keys.tmp
 * (keys_tmp_install()), on this thread: at open. 0, or -1 with errno.
 */
static int keys_compact(struct spool *sp, int64_t now)
{
	struct kbuf b = { 0 };
	struct compact k = { .c = { .sp = sp, .b = &b, .now = now, .oldest = INT64_MAX,
		.oldest_live = INT64_MAX } };
	int rc;

	if ((k.fd = keys_tmp_create(sp)) < 0)
		return -1;
	rc = compact_walk(&k, sp->keys_fd, sp->keys_bytes);
	free(b.p);
	if (rc < 0) {
		keys_tmp_drop(sp, k.fd);
		return -1;
	}
	/* Every live record was written: the file is its header and their bytes. */
	if (keys_tmp_install(sp, k.fd, SPOOL_SEG_HDR_SIZE + k.c.live, k.c.oldest_live) < 0)
		return -1;
	log_compacted(sp, &k.c);
	return 0;
}

/*
 * A compaction while the spool runs, on a thread of its own, so that the
 * producer thread goes on appending (and producing) meanwhile. The thread
 * copies the live records of the file's first `upto` bytes to keys.tmp and
 * fdatasyncs it; back on the producer thread, keys_job_poll() copies every
 * byte appended since then (all of it live: newer than the expiry), and
 * installs the new file; keys_job_cancel() gives a running one up. The old
 * file is never written below `upto` (appends only go after keys_bytes, and
 * a failed one is cut back to it), and keys_fd is replaced only by the
 * install, after the thread was joined.
 */
struct keys_job {
	pthread_t thread;
	int src_fd;          /* keys_fd when it started */
	uint64_t upto;       /* the bytes of it the thread copies */
	int64_t tail_oldest; /* the earliest timestamp appended since; producer thread */
	struct kbuf b;
	struct compact k;    /* the thread's, until joined */
	int err;             /* its errno; 0: the walk succeeded */
	atomic_bool stop;    /* keys_fini(): give up */
	atomic_bool done;    /* the thread has ended */
};

/* The thread: the walk, and the sync of what it wrote (the bulk of the file). */
static void *keys_job_run(void *arg)
{
	struct keys_job *j = arg;

	thread_name("ackd-keys");
	j->err = compact_walk(&j->k, j->src_fd, j->upto) < 0 || spool_io.fdatasync(j->k.fd) < 0 ?
	    errno : 0;
	atomic_store_explicit(&j->done, true, memory_order_release);
	return NULL;
}

static void keys_compact_failed(struct spool *sp)
{
	sp->keys_compact_retry_ms = now_ms() + KEYS_COMPACT_RETRY_MS;
	/* Before the rename (keys_tmp_install()): the old file stays, whole. */
	log_warn("spool: %s: compacting %s failed; tried again in %d s at the earliest", sp->dir,
	    KEYS_NAME, KEYS_COMPACT_RETRY_MS / 1000);
}

static void keys_job_start(struct spool *sp, int64_t now)
{
	struct keys_job *j = calloc(1, sizeof(*j));

	if (!j || (j->k.fd = keys_tmp_create(sp)) < 0) {
		free(j);
		keys_compact_failed(sp);
		return;
	}
	j->src_fd = sp->keys_fd;
	j->upto = sp->keys_bytes;
	j->tail_oldest = INT64_MAX;
	j->k.c = (struct collect){ .sp = sp, .b = &j->b, .now = now, .oldest = INT64_MAX,
		.oldest_live = INT64_MAX };
	j->k.stop = &j->stop;
	if ((errno = pthread_create(&j->thread, NULL, keys_job_run, j)) != 0) {
		keys_tmp_drop(sp, j->k.fd);
		free(j);
		keys_compact_failed(sp);
		return;
	}
	sp->keys_job = j;
}

/* Copy keys_fd's [from, keys_bytes) to fd. 0, or -1 with errno. */
static int keys_copy_tail(struct spool *sp, int fd, uint64_t from)
{
	unsigned char *buf = malloc(KEYS_COPY_CHUNK);
	size_t want, got;

	if (!buf)
		return -1;
	for (; from < sp->keys_bytes; from += got) {
		want = sp->keys_bytes - from < KEYS_COPY_CHUNK ? (size_t)(sp->keys_bytes - from) :
		    KEYS_COPY_CHUNK;
		if (spool_pread_all(sp->keys_fd, buf, want, from, &got) < 0)
			goto fail;
		if (got != want) {
			errno = EIO; /* shorter than keys_bytes says */
			goto fail;
		}
		if (spool_write_all(fd, buf, got) < 0)
			goto fail;
	}
	free(buf);
	return 0;
fail:
	free(buf);
	return -1;
}

static void keys_job_free(struct keys_job *j)
{
	free(j->b.p);
	free(j);
}

/*
 * Install a compaction whose thread has ended: copy what was appended
 * since it started, then keys_tmp_install(), whose fdatasync now covers
 * that tail only. Nothing while it runs. Producer thread.
 */
void keys_job_poll(struct spool *sp)
{
	struct keys_job *j = sp->keys_job;
	uint64_t tail;

	if (!j || !atomic_load_explicit(&j->done, memory_order_acquire))
		return;
	pthread_join(j->thread, NULL);
	sp->keys_job = NULL;
	tail = sp->keys_bytes - j->upto;
	if (j->err) {
		errno = j->err;
		keys_tmp_drop(sp, j->k.fd);
	} else if (keys_copy_tail(sp, j->k.fd, j->upto) < 0) {
		keys_tmp_drop(sp, j->k.fd);
		j->err = errno ? errno : EIO;
	} else if (keys_tmp_install(sp, j->k.fd, SPOOL_SEG_HDR_SIZE + j->k.c.live + tail,
	               j->tail_oldest < j->k.c.oldest_live ? j->tail_oldest : j->k.c.oldest_live) < 0) {
		j->err = errno ? errno : EIO;
	} else {
		log_compacted(sp, &j->k.c);
	}
	if (j->err)
		keys_compact_failed(sp);
	keys_job_free(j);
}

/*
 * Give a running compaction up: the thread stops at its next record, and
 * keys.tmp goes; `keys` stays as it is. errno is kept.
 */
static void keys_job_cancel(struct spool *sp)
{
	struct keys_job *j = sp->keys_job;
	int saved = errno;

	if (!j)
		return;
	atomic_store(&j->stop, true);
	pthread_join(j->thread, NULL);
	sp->keys_job = NULL;
	keys_tmp_drop(sp, j->k.fd);
	keys_job_free(j);
	errno = saved;
}

/* Compact; when that fails, keys_compact_due() waits KEYS_COMPACT_RETRY_MS. */
static void keys_compact_or_wait(struct spool *sp, int64_t now)
{
	if (keys_compact(sp, now) < 0)
		keys_compact_failed(sp);
}

int keys_load(struct spool *sp, char *err, size_t errlen)
{
	struct collect c = { .sp = sp, .now = wall_ms(), .oldest = INT64_MAX,
		.oldest_live = INT64_MAX, .load = true };
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	uint64_t good_end, first;
	struct stat st;
	size_t got;
	int fd;

	sp->keys_fd = -1;
	sp->keys_oldest_ms = INT64_MAX;
	if (spool_io.unlinkat(sp->dir_fd, KEYS_TMP, 0) == 0)
		log_info("spool: %s: removed an unfinished %s", sp->dir, KEYS_TMP);
	fd = spool_io.openat(sp->dir_fd, KEYS_NAME, O_RDWR | O_APPEND | O_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "spool %s: open %s: %s", sp->dir, KEYS_NAME, strerror(errno));
		return -1;
	}
	sp->keys_fd = fd;
	/* An earlier run may have failed to sync its name: the first save does. */
	sp->keys_dir_pending = true;
	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "spool %s: stat %s: %s", sp->dir, KEYS_NAME, strerror(errno));
		return -1;
	}
	sp->keys_bytes = (uint64_t)st.st_size;
	if (spool_pread_all(fd, hdr, sizeof(hdr), 0, &got) < 0 || got != sizeof(hdr) ||
	    spool_seg_hdr_parse(hdr, sizeof(hdr), &first) < 0) {
		/*
		 * Its creation never completed (even 0 bytes: a crash between
		 * the create and the header's write) or the header is damaged:
		 * nothing to believe, and a fresh header before anything is
		 * appended, or the next open would discard the appends too.
		 */
		log_warnx("spool: %s: %s has no valid header; its %" PRIu64 " bytes are forgotten",
		    sp->dir, KEYS_NAME, sp->keys_bytes);
		if ((fd = keys_tmp_create(sp)) < 0 ||
		    keys_tmp_install(sp, fd, SPOOL_SEG_HDR_SIZE, INT64_MAX) < 0) {
			snprintf(err, errlen, "spool %s: rewrite %s: %s", sp->dir, KEYS_NAME,
			    strerror(errno));
			return -1;
		}
		return 0;
	} else if (!sp->on_key && !sp->on_key_ack && sp->key_ttl_ms <= 0) {
		return 0; /* keys are neither read nor appended: the file stays as it is */
	} else if (keys_walk(fd, sp->keys_bytes, 0, 0, collect_one, &c, &good_end) < 0) {
		snprintf(err, errlen, "spool %s: read %s: %s", sp->dir, KEYS_NAME, strerror(errno));
		return -1;
	}
	if (good_end < sp->keys_bytes) {
		/* A torn append (or a torn creation): cut, as a segment's torn tail. */
		log_warnx("spool: %s: %s: torn tail of %" PRIu64 " bytes cut off", sp->dir, KEYS_NAME,
		    sp->keys_bytes - good_end);
		if (spool_io.ftruncate(fd, (off_t)good_end) < 0 || spool_io.fdatasync(fd) < 0) {
			snprintf(err, errlen, "spool %s: cut %s: %s", sp->dir, KEYS_NAME, strerror(errno));
			return -1;
		}
		sp->torn_bytes += sp->keys_bytes - good_end;
		sp->keys_bytes = good_end;
	}
	sp->keys_compacted = sp->keys_bytes;
	sp->keys_oldest_ms = c.oldest;
	if (c.dead > c.live && sp->key_ttl_ms > 0)
		keys_compact_or_wait(sp, c.now);
	return 0;
}

/*
 * Append b to the file (created with its header when missing), then
 * fdatasync when sync; oldest: the earliest timestamp of its records. 0, or
 * -1 with errno: nothing of b stays.
 */
static int keys_append_once(struct spool *sp, const void *p, size_t len, int64_t oldest, bool sync)
{
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	uint64_t before;

	if (sp->keys_fd < 0) {
		sp->keys_fd = spool_io.openat(sp->dir_fd, KEYS_NAME,
		    O_RDWR | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		if (sp->keys_fd < 0)
			return -1;
		spool_seg_hdr_encode(hdr, 0, wall_ms());
		if (spool_write_all(sp->keys_fd, hdr, sizeof(hdr)) < 0) {
			int saved = errno;
			spool_io.close(sp->keys_fd);
			sp->keys_fd = -1;
			spool_io.unlinkat(sp->dir_fd, KEYS_NAME, 0);
			errno = saved;
			return -1;
		}
		sp->keys_bytes = sizeof(hdr);
		sp->keys_compacted = sp->keys_bytes;
		sp->keys_oldest_ms = INT64_MAX;
		sp->keys_dir_pending = true;
	}
	before = sp->keys_bytes;
	if (sp->keys_cut_pending) {
		/* Bytes of a failed append lie after keys_bytes: nothing goes after them. */
		if (spool_io.ftruncate(sp->keys_fd, (off_t)before) < 0 ||
		    spool_io.fdatasync(sp->keys_fd) < 0)
			return -1;
		sp->keys_cut_pending = false;
	}
	if (spool_write_all(sp->keys_fd, p, len) < 0 ||
	    (sync && spool_io.fdatasync(sp->keys_fd) < 0)) {
		int saved = errno;
		if (spool_io.ftruncate(sp->keys_fd, (off_t)before) < 0) {
			/*
			 * A torn record whose header holds would swallow the records
			 * appended after it: no append until the cut succeeds.
			 */
			log_warn("spool: %s: cannot cut back %s; no keys are appended until it is",
			    sp->dir, KEYS_NAME);
			sp->keys_cut_pending = true;
		}
		errno = saved;
		return -1;
	}
	sp->keys_bytes += len;
	if (oldest < sp->keys_oldest_ms)
		sp->keys_oldest_ms = oldest;
	if (sp->keys_job && oldest < sp->keys_job->tail_oldest)
		sp->keys_job->tail_oldest = oldest;
	return 0;
}

/*
 * Append, fdatasynced with sync. A running compaction's keys.tmp may be what
 * filled the disk: when the append fails with one running, it is given up
 * and the append tried once more. 0, or -1 with errno.
 */
static int keys_append(struct spool *sp, const void *p, size_t len, int64_t oldest, bool sync)
{
	if (keys_append_once(sp, p, len, oldest, sync) == 0)
		return 0;
	if (!sp->keys_job)
		return -1;
	log_warn("spool: %s: appending to %s failed during a compaction; the compaction is given "
	    "up (tried again in %d s at the earliest) and the append tried once more", sp->dir,
	    KEYS_NAME, KEYS_COMPACT_RETRY_MS / 1000);
	keys_job_cancel(sp);
	sp->keys_compact_retry_ms = now_ms() + KEYS_COMPACT_RETRY_MS;
	return keys_append_once(sp, p, len, oldest, sync);
}

/*
 * Compact when the file has grown to twice what the last compaction left
 * and a rewrite would drop something: its oldest record expired.
 */
static void keys_compact_due(struct spool *sp, int64_t now)
{
	keys_job_poll(sp);
	if (sp->keys_job || sp->keys_bytes <= KEYS_COMPACT_MIN ||
	    sp->keys_bytes <= 2 * sp->keys_compacted ||
	    sp->keys_oldest_ms > now - sp->key_ttl_ms || /* INT64_MAX (none) too */
	    now_ms() < sp->keys_compact_retry_ms)
		return;
	keys_job_start(sp, now);
}

int keys_save(struct spool *sp, struct seg *seg)
{
	struct kbuf b = { 0 };
	struct collect c = { .sp = sp, .b = &b, .now = wall_ms(), .oldest = INT64_MAX,
		.oldest_live = INT64_MAX };
	uint64_t good_end;

	if (!seg->has_keys || sp->key_ttl_ms <= 0)
		return 0;
	if (keys_walk(seg->fd, seg->data_end, seg->first_seq, seg->end_seq, collect_one, &c,
	        &good_end) < 0 || c.err) {
		if (c.err)
			errno = c.err;
		free(b.p);
		return -1;
	}
	if (b.len == 0) {
		free(b.p);
		return 0;
	}
	if (keys_append(sp, b.p, b.len, c.oldest_live, true) < 0) {
		free(b.p);
		return -1;
	}
	free(b.p);
	if (keys_dir_sync(sp) < 0)
		/* In the file, which ackd goes on using: only a crash could lose them. */
		log_warn("spool: %s: cannot sync the directory of %s; the Idempotency-Keys of "
		    "segment %" PRIu64 " are in it but would not survive a crash before a later "
		    "sync succeeds", sp->dir, KEYS_NAME, seg->first_seq);
	keys_compact_due(sp, c.now);
	return 0;
}

int keys_append_ack(struct spool *sp, uint64_t seq, const char *id, int32_t partition,
    int64_t offset)
{
	unsigned char rec[SPOOL_KEY_ACK_SIZE];
	struct spool_key_ack a = { .timestamp_ms = wall_ms(), .partition = partition,
		.offset = offset };

	if (sp->key_ttl_ms <= 0)
		return 0;
	memcpy(a.id, id, SPOOL_KEY_ID_LEN);
	spool_key_ack_encode(&a, seq, rec);
	/* Without fsync, as an .ack entry: a lost one only makes a replay answer 202. */
	if (keys_append(sp, rec, sizeof(rec), a.timestamp_ms, false) < 0)
		return -1;
	keys_compact_due(sp, a.timestamp_ms);
	return 0;
}

void keys_fini(struct spool *sp)
{
	keys_job_poll(sp); /* one that is done is installed, */
	keys_job_cancel(sp); /* one still running given up */
	if (sp->keys_fd >= 0)
		spool_io.close(sp->keys_fd);
	sp->keys_fd = -1;
}
