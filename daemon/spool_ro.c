/*
 * spool_ro: offline reading, for ackd-spool(8).
 *
 * Read-only: files are opened O_RDONLY, the lock is only tried, nothing is
 * created, truncated or appended. The same iterator and record checks as
 * the daemon's reader, so the tool sees damage exactly where ackd would.
 *
 * Threads: one thread (the tool's).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

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
	unsigned char *keybuf; /* the last KEY record's bytes, item->key points into them */
};

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
	if (spool_pread_all(fd, hdr, sizeof(hdr), 0, &got) < 0)
		goto fail;
	f->hdr_ok = got == sizeof(hdr) && spool_seg_hdr_parse(hdr, got, &first) == 0 &&
	    first == f->first_seq;
	if (segment && f->bytes >= SPOOL_SEG_HDR_SIZE + SPOOL_SEAL_SIZE) {
		if (spool_pread_all(fd, foot, sizeof(foot), f->bytes - SPOOL_SEAL_SIZE, &got) < 0)
			goto fail;
		/* The conditions of seg_load(). */
		f->sealed = got == sizeof(foot) && spool_seal_parse(foot, &f->seal) == 0 &&
		    f->seal.first_seq == f->first_seq &&
		    f->seal.data_end == f->bytes - SPOOL_SEAL_SIZE &&
		    (!f->seq_limit || f->seal.end_seq <= f->seq_limit) && seg_seal_plausible(&f->seal);
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

struct ro_acks {
	struct spool_ro_file *f;
	uint64_t limit;
	uint64_t *v;
	size_t n, cap;
	int nomem;
};

static void ro_ack_entry(void *arg, uint64_t seq)
{
	struct ro_acks *a = arg;

	if (seq < a->f->first_seq || seq >= a->limit)
		a->f->ack_stray++;
	else if (!a->nomem && spool_push_u64(&a->v, &a->n, &a->cap, seq) < 0)
		a->nomem = 1;
}

/* Read seg's .ack file with ack_load()'s reader, without dropping anything. */
static int ro_load_acks(struct spool_ro *ro, struct spool_ro_file *f, uint64_t **out)
{
	struct ro_acks a = { .f = f };
	char name[64];
	struct stat st;
	size_t j = 0;
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
	a.limit = f->sealed ? f->seal.end_seq : f->seq_limit ? f->seq_limit : UINT64_MAX;
	if (ack_file_read(fd, (uint64_t)st.st_size, ro_ack_entry, &a, &f->ack_bad) < 0)
		goto fail;
	if (a.nomem) {
		errno = ENOMEM;
		goto fail;
	}
	close(fd);
	if (a.n) {
		qsort(a.v, a.n, sizeof(*a.v), spool_cmp_u64);
		for (size_t i = 0; i < a.n; i++)
			if (j == 0 || a.v[i] != a.v[j - 1])
				a.v[j++] = a.v[i];
	}
	f->acks = a.v;
	f->nacks = j;
	*out = a.v;
	return 0;
fail:
	{
		int saved = errno;
		free(a.v);
		close(fd);
		errno = saved;
	}
	return -1;
}

struct ro_listing {
	struct spool_ro *ro;
	const char *sub;
	size_t scap, fcap, ocap, nacks, acap;
	uint64_t *acks;
};

static int ro_list_one(void *arg, const char *n, enum spool_name_kind kind, uint64_t first)
{
	struct ro_listing *l = arg;
	struct spool_ro *ro = l->ro;
	char path[300];

	if (l->sub) {
		snprintf(path, sizeof(path), "%s/%s", l->sub, n);
		n = path;
	}
	switch (kind) {
	case SPOOL_NAME_SEG:
		return ro_add_file(&ro->segs, &ro->nsegs, &l->scap, n, first);
	case SPOOL_NAME_FAILED:
		return ro_add_file(&ro->failed, &ro->nfailed, &l->fcap, n, first);
	case SPOOL_NAME_ACK:
		return spool_push_u64(&l->acks, &l->nacks, &l->acap, first);
	case SPOOL_NAME_TEMP:
		return ro_add_other(ro, &l->ocap, n, SPOOL_RO_TEMP);
	case SPOOL_NAME_OTHER:
		break;
	}
	return ro_add_other(ro, &l->ocap, n, SPOOL_RO_UNKNOWN);
}

/* List dir and failed/ as recovery does; segments and failed/ logs sorted by first sequence. */
static int ro_list(struct spool_ro *ro, const char *sub, char *err, size_t errlen)
{
	struct ro_listing l = { .ro = ro, .sub = sub, .ocap = ro->nothers };

	errno = 0;
	if (spool_list(ro->dir_fd, sub, ro_list_one, &l) < 0) {
		free(l.acks);
		if (sub && errno == ENOENT)
			return 0; /* no failed/ yet */
		if (errno == ENOMEM || errno == 0)
			snprintf(err, errlen, "%s: out of memory", ro->dir);
		else
			snprintf(err, errlen, "%s%s%s: cannot list: %s", ro->dir, sub ? "/" : "",
			    sub ? sub : "", strerror(errno));
		return -1;
	}
	/* .ack files without their segment. */
	for (size_t i = 0; i < l.nacks; i++) {
		bool found = false;
		char name[64];
		for (size_t j = 0; j < ro->nsegs && !found; j++)
			found = ro->segs[j].first_seq == l.acks[i];
		seg_name(name, sizeof(name), l.acks[i], "ack");
		if (!found && ro_add_other(ro, &l.ocap, name, SPOOL_RO_ORPHAN_ACK) < 0) {
			snprintf(err, errlen, "%s: out of memory", ro->dir);
			free(l.acks);
			return -1;
		}
	}
	free(l.acks);
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
	return seg->nacks &&
	    bsearch(&seq, seg->acks, seg->nacks, sizeof(*seg->acks), spool_cmp_u64) != NULL;
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
	/* By identity: ro->failed is NULL with no log, and NULL + 0 is undefined. */
	for (size_t i = 0; i < ro->nfailed && !ri->failed_log; i++)
		ri->failed_log = f == &ro->failed[i];
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
	item->len = spool_rec_total(p); /* its header CRC held: the writer's length */
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
	free(ri->keybuf);
	ri->keybuf = NULL;
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
		/*
		 * Zeros that end the newest segment: a spare's unused end. In an
		 * older one they stand where records were (fsync = never and a
		 * power loss): damage. A read that fails (the file cut by a stopping
		 * ackd) leaves it damage too.
		 */
		uint64_t zeros_from = ii.resync_off;
		if (!ri->failed_log && !ii.resynced && ri->f->seq_limit == 0 &&
		    spool_zero_tail(ri->it.fd, ii.off, ii.resync_off, &zeros_from) < 0)
			zeros_from = ii.resync_off;
		item->kind = zeros_from == ii.off ? SPOOL_RO_UNUSED : SPOOL_RO_DAMAGE;
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
	if (!it_payload_ok(&ii)) {
		item->kind = SPOOL_RO_DAMAGE;
		item->why = SPOOL_REC_BAD_PAYLOAD_CRC;
		item->resynced = 1;
		item->lost_from = ii.h.seq;
		item->lost_to = ii.h.seq + 1;
		return 1;
	}
	if (ii.h.type == SPOOL_REC_KEY && !ri->failed_log) {
		enum spool_rec_status st;
		if (!(ri->keybuf = malloc(ii.len))) {
			errno = ENOMEM;
			return -1;
		}
		memcpy(ri->keybuf, ii.rec, ii.len);
		st = spool_key_decode(ri->keybuf, ii.len, NULL, &item->key);
		if (st != SPOOL_REC_OK) {
			item->kind = SPOOL_RO_DAMAGE;
			item->why = st;
			item->resynced = 1;
			item->lost_from = ii.h.seq;
			item->lost_to = ii.h.seq + 1;
		}
		return 1;
	}
	{
		enum spool_rec_status st;
		ri->rec = it_rec_copy(&ii, &st);
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
	free(ri->keybuf);
	if (ri->it.fd >= 0)
		close(ri->it.fd);
	it_fini(&ri->it);
	free(ri);
}
