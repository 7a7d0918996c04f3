/*
 * crashfs: the recording seam and the crash-state builder (see crashfs.h).
 *
 * Recording keeps a namespace (directory inode, name) -> inode mirroring the
 * real directory, and a table fd -> inode, so every write lands on an inode
 * however the file was renamed or unlinked since. Replay never touches the
 * recorded directory: it recomputes names and contents from the snapshot
 * and the trace, in memory, and writes the result to a fresh directory.
 *
 * Threads: the seam wrappers run on any thread under one lock (held across
 * the real call, so the trace order is the order the calls took effect);
 * everything else on the test's thread.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crashfs.h"
#include "spool.h"

#define SECTOR 512u
#define MAX_FD 4096
#define RANDOM_PER_K 8       /* random combinations per point; LONG_RANDOM_PER_K in long runs */
#define LONG_RANDOM_PER_K 32

struct inode {
	bool is_dir;
	unsigned char *init; /* snapshot contents (durable) */
	size_t init_len;
};

struct entry {
	int dir;
	int ino;
	char name[64];
};

struct names {
	struct entry *v;
	size_t n, cap;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t gate_cv;
	bool recording;
	bool frozen;
	bool held; /* pwritev waits until released */
	bool drop_syncs; /* a self-test: syncs happen but are not recorded */
	char root[256];
	struct spool_io real;
	struct inode *inodes;
	size_t ninodes, inodes_cap;
	struct names init_names; /* at the snapshot */
	struct names names;      /* now, while recording */
	int fd_ino[MAX_FD];
	struct crashfs_op *ops;
	size_t nops, ops_cap;
	uint64_t *seen; /* open-addressed set of state hashes */
	size_t seen_cap, seen_n;
} cf = { .mu = PTHREAD_MUTEX_INITIALIZER, .gate_cv = PTHREAD_COND_INITIALIZER };

uint64_t crashfs_rand(uint64_t *s)
{
	uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545f4914f6cdd1dull;
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q) {
		fprintf(stderr, "crashfs: out of memory\n");
		abort();
	}
	return q;
}

/* --- namespace ------------------------------------------------------------ */

static struct entry *ns_find(struct names *ns, int dir, const char *name)
{
	for (size_t i = 0; i < ns->n; i++)
		if (ns->v[i].dir == dir && strcmp(ns->v[i].name, name) == 0)
			return &ns->v[i];
	return NULL;
}

static void ns_set(struct names *ns, int dir, const char *name, int ino)
{
	struct entry *e = ns_find(ns, dir, name);

	if (!e) {
		if (ns->n == ns->cap) {
			ns->cap = ns->cap ? ns->cap * 2 : 32;
			ns->v = xrealloc(ns->v, ns->cap * sizeof(*ns->v));
		}
		e = &ns->v[ns->n++];
		e->dir = dir;
		snprintf(e->name, sizeof(e->name), "%s", name);
	}
	e->ino = ino;
}

static void ns_del(struct names *ns, int dir, const char *name)
{
	struct entry *e = ns_find(ns, dir, name);

	if (e)
		*e = ns->v[--ns->n];
}

static void ns_copy(struct names *to, const struct names *from)
{
	if (to->cap < from->n) {
		to->cap = from->n;
		to->v = xrealloc(to->v, to->cap * sizeof(*to->v));
	}
	if (from->n)
		memcpy(to->v, from->v, from->n * sizeof(*from->v));
	to->n = from->n;
}

/* The name of ino now, as "name" or "dir/name", or "" when it has none. */
static void ns_path(const struct names *ns, int ino, char *buf, size_t len)
{
	buf[0] = 0;
	for (size_t i = 0; i < ns->n; i++) {
		if (ns->v[i].ino != ino)
			continue;
		if (ns->v[i].dir == 0) {
			snprintf(buf, len, "%s", ns->v[i].name);
			return;
		}
		for (size_t j = 0; j < ns->n; j++)
			if (ns->v[j].ino == ns->v[i].dir && ns->v[j].dir == 0) {
				size_t a = strlen(ns->v[j].name), b = strlen(ns->v[i].name);
				if (a + 1 + b < len) {
					memcpy(buf, ns->v[j].name, a);
					buf[a] = '/';
					memcpy(buf + a + 1, ns->v[i].name, b + 1);
				}
				return;
			}
	}
}

static int inode_new(bool is_dir)
{
	if (cf.ninodes == cf.inodes_cap) {
		cf.inodes_cap = cf.inodes_cap ? cf.inodes_cap * 2 : 64;
		cf.inodes = xrealloc(cf.inodes, cf.inodes_cap * sizeof(*cf.inodes));
	}
	cf.inodes[cf.ninodes] = (struct inode){ .is_dir = is_dir };
	return (int)cf.ninodes++;
}

static struct crashfs_op *op_new(enum crashfs_op_type type)
{
	struct crashfs_op *op;

	if (cf.nops == cf.ops_cap) {
		cf.ops_cap = cf.ops_cap ? cf.ops_cap * 2 : 1024;
		cf.ops = xrealloc(cf.ops, cf.ops_cap * sizeof(*cf.ops));
	}
	op = &cf.ops[cf.nops++];
	memset(op, 0, sizeof(*op));
	op->type = type;
	op->ino = -1;
	op->dir = -1;
	return op;
}

/*
 * Resolve dirfd + path to (parent directory inode, last component). -1 when
 * the path is outside the recorded root.
 */
static int resolve(int dirfd, const char *path, const char **last)
{
	int dir;
	size_t rl = strlen(cf.root);
	const char *p = path, *slash;

	if (dirfd == AT_FDCWD || path[0] == '/') {
		if (strncmp(path, cf.root, rl) != 0 || (path[rl] != '/' && path[rl] != 0))
			return -1;
		p = path + rl;
		while (*p == '/')
			p++;
		dir = 0;
	} else {
		if (dirfd < 0 || dirfd >= MAX_FD || cf.fd_ino[dirfd] < 0)
			return -1;
		dir = cf.fd_ino[dirfd];
	}
	while ((slash = strchr(p, '/'))) {
		char comp[64];
		struct entry *e;
		size_t n = (size_t)(slash - p);
		if (n >= sizeof(comp))
			return -1;
		memcpy(comp, p, n);
		comp[n] = 0;
		if (!(e = ns_find(&cf.names, dir, comp)))
			return -1;
		dir = e->ino;
		p = slash + 1;
	}
	*last = p;
	return dir;
}

static void fd_map(int fd, int ino)
{
	if (fd >= 0 && fd < MAX_FD)
		cf.fd_ino[fd] = ino;
}

static int fd_ino(int fd) { return fd >= 0 && fd < MAX_FD ? cf.fd_ino[fd] : -1; }

/* --- the recording seam ------------------------------------------------------ */

static int frozen_fail(void)
{
	errno = EIO;
	return -1;
}

static int rec_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	const char *name = NULL;
	struct entry *e = NULL;
	int fd, dir, ino;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen && (flags & (O_CREAT | O_TRUNC))) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	dir = resolve(dirfd, path, &name);
	if (dir >= 0 && *name)
		e = ns_find(&cf.names, dir, name);
	fd = cf.real.openat(dirfd, path, flags, mode);
	if (fd < 0 || dir < 0) {
		pthread_mutex_unlock(&cf.mu);
		return fd;
	}
	if (!*name) {
		ino = dir; /* the root itself */
	} else if (e) {
		ino = e->ino;
		if ((flags & O_TRUNC) && !cf.frozen) {
			struct crashfs_op *op = op_new(CFS_TRUNC);
			op->ino = ino;
			op->len = 0;
		}
	} else {
		struct crashfs_op *op;
		ino = inode_new((flags & O_DIRECTORY) != 0);
		ns_set(&cf.names, dir, name, ino);
		op = op_new(CFS_CREATE);
		op->dir = dir;
		op->ino = ino;
		snprintf(op->name, sizeof(op->name), "%s", name);
	}
	fd_map(fd, ino);
	pthread_mutex_unlock(&cf.mu);
	return fd;
}

static int rec_close(int fd)
{
	int rc;

	pthread_mutex_lock(&cf.mu);
	fd_map(fd, -1);
	rc = cf.real.close(fd);
	pthread_mutex_unlock(&cf.mu);
	return rc;
}

static void record_write(int ino, uint64_t off, const struct iovec *iov, int iovcnt, size_t n)
{
	struct crashfs_op *op = op_new(CFS_WRITE);
	size_t done = 0;

	op->ino = ino;
	op->off = off;
	op->len = n;
	op->data = xrealloc(NULL, n);
	for (int i = 0; i < iovcnt && done < n; i++) {
		size_t take = iov[i].iov_len < n - done ? iov[i].iov_len : n - done;
		memcpy(op->data + done, iov[i].iov_base, take);
		done += take;
	}
	ns_path(&cf.names, ino, op->path, sizeof(op->path));
}

static ssize_t rec_pwritev(int fd, const struct iovec *iov, int iovcnt, off_t off)
{
	ssize_t n;
	int ino;

	pthread_mutex_lock(&cf.mu);
	while (cf.held)
		pthread_cond_wait(&cf.gate_cv, &cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	n = cf.real.pwritev(fd, iov, iovcnt, off);
	if (n > 0 && (ino = fd_ino(fd)) >= 0)
		record_write(ino, (uint64_t)off, iov, iovcnt, (size_t)n);
	pthread_mutex_unlock(&cf.mu);
	return n;
}

static ssize_t rec_write(int fd, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };
	struct stat st;
	ssize_t n;
	int ino;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	n = cf.real.write(fd, buf, len);
	/* O_APPEND: the bytes went to the end, wherever that was. */
	if (n > 0 && (ino = fd_ino(fd)) >= 0 && fstat(fd, &st) == 0)
		record_write(ino, (uint64_t)st.st_size - (uint64_t)n, &iov, 1, (size_t)n);
	pthread_mutex_unlock(&cf.mu);
	return n;
}

static int rec_sync(int fd, int (*real)(int))
{
	int rc, ino;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	rc = real(fd);
	if (rc == 0 && !cf.drop_syncs && (ino = fd_ino(fd)) >= 0) {
		struct crashfs_op *op = op_new(cf.inodes[ino].is_dir ? CFS_DIRSYNC : CFS_SYNC);
		if (cf.inodes[ino].is_dir)
			op->dir = ino;
		else
			op->ino = ino;
	}
	pthread_mutex_unlock(&cf.mu);
	return rc;
}

static int rec_fsync(int fd) { return rec_sync(fd, cf.real.fsync); }
static int rec_fdatasync(int fd) { return rec_sync(fd, cf.real.fdatasync); }

static int rec_ftruncate(int fd, off_t len)
{
	int rc, ino;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	rc = cf.real.ftruncate(fd, len);
	if (rc == 0 && (ino = fd_ino(fd)) >= 0) {
		struct crashfs_op *op = op_new(CFS_TRUNC);
		op->ino = ino;
		op->len = (uint64_t)len;
	}
	pthread_mutex_unlock(&cf.mu);
	return rc;
}

static int rec_renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	const char *oname = NULL, *nname = NULL;
	int rc, odir, ndir;
	struct entry *e;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	odir = resolve(olddirfd, oldpath, &oname);
	ndir = resolve(newdirfd, newpath, &nname);
	rc = cf.real.renameat(olddirfd, oldpath, newdirfd, newpath);
	if (rc == 0 && odir >= 0 && odir == ndir && (e = ns_find(&cf.names, odir, oname))) {
		struct crashfs_op *op = op_new(CFS_RENAME);
		int ino = e->ino;
		op->dir = odir;
		op->ino = ino;
		snprintf(op->name, sizeof(op->name), "%s", oname);
		snprintf(op->name2, sizeof(op->name2), "%s", nname);
		ns_del(&cf.names, odir, oname);
		ns_set(&cf.names, ndir, nname, ino);
	} else if (rc == 0 && odir >= 0) {
		fprintf(stderr, "crashfs: rename across directories is not modelled: %s -> %s\n",
		    oldpath, newpath);
		abort();
	}
	pthread_mutex_unlock(&cf.mu);
	return rc;
}

static int rec_unlinkat(int dirfd, const char *path, int flags)
{
	const char *name = NULL;
	int rc, dir;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	dir = resolve(dirfd, path, &name);
	rc = cf.real.unlinkat(dirfd, path, flags);
	if (rc == 0 && dir >= 0 && ns_find(&cf.names, dir, name)) {
		struct crashfs_op *op = op_new(CFS_UNLINK);
		op->dir = dir;
		op->ino = ns_find(&cf.names, dir, name)->ino;
		snprintf(op->name, sizeof(op->name), "%s", name);
		ns_del(&cf.names, dir, name);
	}
	pthread_mutex_unlock(&cf.mu);
	return rc;
}

static int rec_mkdirat(int dirfd, const char *path, mode_t mode)
{
	const char *name = NULL;
	int rc, dir;

	pthread_mutex_lock(&cf.mu);
	if (cf.frozen) {
		pthread_mutex_unlock(&cf.mu);
		return frozen_fail();
	}
	dir = resolve(dirfd, path, &name);
	rc = cf.real.mkdirat(dirfd, path, mode);
	if (rc == 0 && dir >= 0 && *name) {
		struct crashfs_op *op = op_new(CFS_MKDIR);
		int ino = inode_new(true);
		op->dir = dir;
		op->ino = ino;
		snprintf(op->name, sizeof(op->name), "%s", name);
		ns_set(&cf.names, dir, name, ino);
	}
	pthread_mutex_unlock(&cf.mu);
	return rc;
}

/* --- start, stop ------------------------------------------------------------------- */

static int read_file(int dirfd, const char *name, unsigned char **buf, size_t *len)
{
	struct stat st;
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0 || fstat(fd, &st) < 0)
		goto fail;
	*buf = xrealloc(NULL, (size_t)st.st_size);
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, *buf + got, (size_t)st.st_size - got, (off_t)got);
		if (n <= 0)
			goto fail;
		got += (size_t)n;
	}
	*len = got;
	close(fd);
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Add the files of directory path (inode dir) to the snapshot; depth 1 recurses once. */
static int snapshot_dir(const char *path, int dir, int depth)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int rc = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) && rc == 0) {
		char sub[512];
		struct stat st;
		int ino;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if (lstat(sub, &st) < 0) {
			rc = -1;
			break;
		}
		ino = inode_new(S_ISDIR(st.st_mode));
		ns_set(&cf.names, dir, de->d_name, ino);
		if (S_ISDIR(st.st_mode))
			rc = depth > 0 ? snapshot_dir(sub, ino, depth - 1) : -1;
		else
			rc = read_file(dirfd(d), de->d_name, &cf.inodes[ino].init,
			    &cf.inodes[ino].init_len);
	}
	closedir(d);
	return rc;
}

void crashfs_reset(void)
{
	for (size_t i = 0; i < cf.nops; i++)
		free(cf.ops[i].data);
	for (size_t i = 0; i < cf.ninodes; i++)
		free(cf.inodes[i].init);
	free(cf.ops);
	free(cf.inodes);
	free(cf.names.v);
	free(cf.init_names.v);
	free(cf.seen);
	cf.ops = NULL;
	cf.nops = cf.ops_cap = 0;
	cf.inodes = NULL;
	cf.ninodes = cf.inodes_cap = 0;
	memset(&cf.names, 0, sizeof(cf.names));
	memset(&cf.init_names, 0, sizeof(cf.init_names));
	cf.seen = NULL;
	cf.seen_cap = cf.seen_n = 0;
}

int crashfs_start(const char *root, char *err, size_t errlen)
{
	crashfs_reset();
	snprintf(cf.root, sizeof(cf.root), "%s", root);
	for (int i = 0; i < MAX_FD; i++)
		cf.fd_ino[i] = -1;
	inode_new(true); /* 0: the root */
	if (snapshot_dir(root, 0, 1) < 0) {
		snprintf(err, errlen, "crashfs: cannot snapshot %s: %s", root, strerror(errno));
		return -1;
	}
	ns_copy(&cf.init_names, &cf.names);
	if (!cf.recording) {
		cf.real = spool_io;
		spool_io = (struct spool_io){
			.openat = rec_openat,
			.close = rec_close,
			.pwritev = rec_pwritev,
			.write = rec_write,
			.fsync = rec_fsync,
			.fdatasync = rec_fdatasync,
			.ftruncate = rec_ftruncate,
			.renameat = rec_renameat,
			.unlinkat = rec_unlinkat,
			.mkdirat = rec_mkdirat,
		};
		cf.recording = true;
	}
	cf.frozen = false;
	return 0;
}

void crashfs_stop(void)
{
	if (cf.recording)
		spool_io = cf.real;
	cf.recording = false;
	cf.frozen = false;
}

void crashfs_freeze(int on)
{
	pthread_mutex_lock(&cf.mu);
	cf.frozen = on != 0;
	pthread_mutex_unlock(&cf.mu);
}

void crashfs_drop_syncs(int on)
{
	pthread_mutex_lock(&cf.mu);
	cf.drop_syncs = on != 0;
	pthread_mutex_unlock(&cf.mu);
}

void crashfs_hold(int on)
{
	pthread_mutex_lock(&cf.mu);
	cf.held = on != 0;
	pthread_cond_broadcast(&cf.gate_cv);
	pthread_mutex_unlock(&cf.mu);
}

size_t crashfs_nops(void)
{
	size_t n;

	pthread_mutex_lock(&cf.mu);
	n = cf.nops;
	pthread_mutex_unlock(&cf.mu);
	return n;
}

/*
 * A copy, taken under the lock: the spool's writer thread may be appending
 * to the trace meanwhile, and an append can move the whole array.
 */
bool crashfs_op(size_t i, struct crashfs_op *out)
{
	bool ok;

	pthread_mutex_lock(&cf.mu);
	ok = i < cf.nops;
	if (ok)
		*out = cf.ops[i];
	pthread_mutex_unlock(&cf.mu);
	return ok;
}

/* --- replay ------------------------------------------------------------------------ */

/*
 * A unit is what persists independently: the data ops of one file, or the
 * entry ops of one directory. ops[] indexes the trace; the first ndur are
 * durable at k (an fsync followed them), the rest are volatile.
 */
struct unit {
	bool is_dir;
	int id; /* inode */
	size_t *ops;
	size_t n, cap, ndur;
};

/* How much of a unit's volatile ops a state keeps. */
struct choice {
	size_t keep;      /* volatile ops applied, in order */
	size_t tear;      /* 0, or sectors of the last kept write that persisted */
	bool zero_tail;   /* torn: the size still covers the whole write */
	long omit;        /* -1, or a kept volatile op (not the last) left out */
};

struct plan {
	struct unit *u;
	size_t nu;
	int *unit_of_ino; /* data unit index by inode, -1 */
	int *unit_of_dir; /* entry unit index by directory inode, -1 */
};

static void unit_push(struct unit *u, size_t i)
{
	if (u->n == u->cap) {
		u->cap = u->cap ? u->cap * 2 : 16;
		u->ops = xrealloc(u->ops, u->cap * sizeof(*u->ops));
	}
	u->ops[u->n++] = i;
}

static int plan_unit(struct plan *p, int **map, bool is_dir, int id)
{
	if ((*map)[id] < 0) {
		p->u = xrealloc(p->u, (p->nu + 1) * sizeof(*p->u));
		p->u[p->nu] = (struct unit){ .is_dir = is_dir, .id = id };
		(*map)[id] = (int)p->nu++;
	}
	return (*map)[id];
}

static void plan_build(struct plan *p, size_t k)
{
	memset(p, 0, sizeof(*p));
	p->unit_of_ino = xrealloc(NULL, cf.ninodes * sizeof(int));
	p->unit_of_dir = xrealloc(NULL, cf.ninodes * sizeof(int));
	for (size_t i = 0; i < cf.ninodes; i++)
		p->unit_of_ino[i] = p->unit_of_dir[i] = -1;
	for (size_t i = 0; i < k && i < cf.nops; i++) {
		const struct crashfs_op *op = &cf.ops[i];
		bool data = op->type == CFS_WRITE || op->type == CFS_TRUNC || op->type == CFS_SYNC;
		int ui = data ? plan_unit(p, &p->unit_of_ino, false, op->ino)
			      : plan_unit(p, &p->unit_of_dir, true, op->dir);
		struct unit *u = &p->u[ui];
		if (op->type == CFS_SYNC || op->type == CFS_DIRSYNC)
			u->ndur = u->n;
		else
			unit_push(u, i);
	}
}

static void plan_free(struct plan *p)
{
	for (size_t i = 0; i < p->nu; i++)
		free(p->u[i].ops);
	free(p->u);
	free(p->unit_of_ino);
	free(p->unit_of_dir);
}

/* Sectors a write touches. */
static size_t write_sectors(const struct crashfs_op *op)
{
	uint64_t first = op->off / SECTOR, last = (op->off + op->len - 1) / SECTOR;

	return op->len ? (size_t)(last - first + 1) : 0;
}

/* Bytes of a write that persist when only its first t sectors do. */
static size_t torn_bytes(const struct crashfs_op *op, size_t t)
{
	uint64_t end = (op->off / SECTOR + t) * SECTOR;

	return end - op->off < op->len ? (size_t)(end - op->off) : (size_t)op->len;
}

/* Whether op index j of unit u is applied under choice c. */
static bool applied(const struct unit *u, const struct choice *c, size_t j)
{
	if (j < u->ndur)
		return true;
	j -= u->ndur;
	return j < c->keep && (long)j != c->omit;
}

struct buf {
	unsigned char *p;
	size_t len, cap;
};

static void buf_resize(struct buf *b, size_t len)
{
	if (len > b->cap) {
		b->cap = len * 2;
		b->p = xrealloc(b->p, b->cap);
	}
	if (len > b->len)
		memset(b->p + b->len, 0, len - b->len);
	b->len = len;
}

/* Contents of every inode and the names, under the choices. */
struct image {
	struct buf *files; /* by inode */
	struct names names;
};

static void image_build(const struct plan *p, const struct choice *ch, struct image *img)
{
	size_t *pos = calloc(p->nu, sizeof(*pos)); /* next op index within each unit */

	if (!pos)
		abort();
	img->files = calloc(cf.ninodes, sizeof(*img->files));
	if (!img->files)
		abort();
	memset(&img->names, 0, sizeof(img->names));
	ns_copy(&img->names, &cf.init_names);
	for (size_t i = 0; i < cf.ninodes; i++) {
		buf_resize(&img->files[i], cf.inodes[i].init_len);
		if (cf.inodes[i].init_len)
			memcpy(img->files[i].p, cf.inodes[i].init, cf.inodes[i].init_len);
	}
	for (size_t ui = 0; ui < p->nu; ui++) {
		const struct unit *u = &p->u[ui];
		const struct choice *c = &ch[ui];
		for (size_t j = 0; j < u->n; j++) {
			const struct crashfs_op *op = &cf.ops[u->ops[j]];
			struct buf *f;
			size_t len;
			if (!applied(u, c, j))
				continue;
			switch (op->type) {
			case CFS_WRITE:
				f = &img->files[op->ino];
				len = (size_t)op->len;
				if (c->tear && j == u->ndur + c->keep - 1)
					len = torn_bytes(op, c->tear);
				if (op->off + len > f->len)
					buf_resize(f, (size_t)op->off + len);
				memcpy(f->p + op->off, op->data, len);
				if (len < op->len && c->zero_tail && op->off + op->len > f->len)
					buf_resize(f, (size_t)(op->off + op->len));
				break;
			case CFS_TRUNC:
				buf_resize(&img->files[op->ino], (size_t)op->len);
				img->files[op->ino].len = (size_t)op->len;
				break;
			case CFS_CREATE:
			case CFS_MKDIR:
				ns_set(&img->names, op->dir, op->name, op->ino);
				break;
			case CFS_RENAME:
				ns_del(&img->names, op->dir, op->name2);
				ns_del(&img->names, op->dir, op->name);
				ns_set(&img->names, op->dir, op->name2, op->ino);
				break;
			case CFS_UNLINK:
				ns_del(&img->names, op->dir, op->name);
				break;
			default:
				break;
			}
		}
	}
	free(pos);
}

static void image_free(struct image *img)
{
	for (size_t i = 0; i < cf.ninodes; i++)
		free(img->files[i].p);
	free(img->files);
	free(img->names.v);
}

static int cmp_entry(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->dir != y->dir)
		return x->dir < y->dir ? -1 : 1;
	return strcmp(x->name, y->name);
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 0x100000001b3ull;
	return h;
}

/* A hash of what recovery would see: names reachable from the root and contents. */
static uint64_t image_hash(struct image *img)
{
	uint64_t h = 0xcbf29ce484222325ull;

	if (img->names.n > 1)
		qsort(img->names.v, img->names.n, sizeof(*img->names.v), cmp_entry);
	for (size_t i = 0; i < img->names.n; i++) {
		const struct entry *e = &img->names.v[i];
		const struct buf *f = &img->files[e->ino];
		h = fnv(h, &e->dir, sizeof(e->dir));
		h = fnv(h, e->name, strlen(e->name) + 1);
		h = fnv(h, &f->len, sizeof(f->len));
		if (!cf.inodes[e->ino].is_dir)
			h = fnv(h, f->p, f->len);
	}
	return h ? h : 1;
}

/* Whether h was seen before; records it. */
static bool seen_before(uint64_t h)
{
	if ((cf.seen_n + 1) * 2 > cf.seen_cap) {
		size_t ncap = cf.seen_cap ? cf.seen_cap * 2 : 4096;
		uint64_t *nv = calloc(ncap, sizeof(*nv));
		if (!nv)
			abort();
		for (size_t i = 0; i < cf.seen_cap; i++) {
			if (!cf.seen[i])
				continue;
			size_t j = (size_t)(cf.seen[i] % ncap);
			while (nv[j])
				j = (j + 1) % ncap;
			nv[j] = cf.seen[i];
		}
		free(cf.seen);
		cf.seen = nv;
		cf.seen_cap = ncap;
	}
	for (size_t j = (size_t)(h % cf.seen_cap);; j = (j + 1) % cf.seen_cap) {
		if (cf.seen[j] == h)
			return true;
		if (!cf.seen[j]) {
			cf.seen[j] = h;
			cf.seen_n++;
			return false;
		}
	}
}

void crashfs_rmtree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char sub[512];
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
		if (lstat(sub, &st) == 0 && S_ISDIR(st.st_mode))
			crashfs_rmtree(sub);
		else
			unlink(sub);
	}
	closedir(d);
	rmdir(dir);
}

/* Write the entries of directory inode dir under path. */
static int image_write_dir(const struct image *img, int dir, const char *path)
{
	if (mkdir(path, 0750) < 0 && errno != EEXIST)
		return -1;
	for (size_t i = 0; i < img->names.n; i++) {
		const struct entry *e = &img->names.v[i];
		char sub[512];
		if (e->dir != dir)
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->name);
		if (cf.inodes[e->ino].is_dir) {
			if (image_write_dir(img, e->ino, sub) < 0)
				return -1;
			continue;
		}
		const struct buf *f = &img->files[e->ino];
		int fd = open(sub, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
		size_t done = 0;
		if (fd < 0)
			return -1;
		while (done < f->len) {
			ssize_t n = write(fd, f->p + done, f->len - done);
			if (n <= 0) {
				close(fd);
				return -1;
			}
			done += (size_t)n;
		}
		close(fd);
	}
	return 0;
}

static int image_write(const struct image *img, const char *dir)
{
	crashfs_rmtree(dir);
	return image_write_dir(img, 0, dir);
}

static void describe(const struct plan *p, const struct choice *ch, char *desc, size_t len)
{
	size_t used = 0;

	desc[0] = 0;
	for (size_t i = 0; i < p->nu && used + 1 < len; i++) {
		const struct unit *u = &p->u[i];
		const struct choice *c = &ch[i];
		size_t nvol = u->n - u->ndur;
		int w;
		if (nvol == 0)
			continue;
		w = snprintf(desc + used, len - used, "%s%s %d: %zu/%zu", used ? "; " : "",
		    u->is_dir ? "dir" : "file", u->id, c->keep, nvol);
		if (w > 0 && c->tear)
			w += snprintf(desc + used + (size_t)w, len - used - (size_t)w, " torn@%zu%s",
			    c->tear, c->zero_tail ? "+zeros" : "");
		if (w > 0 && c->omit >= 0)
			w += snprintf(desc + used + (size_t)w, len - used - (size_t)w, " omit %ld", c->omit);
		if (w < 0)
			break;
		used += (size_t)w;
		if (used >= len)
			used = len - 1;
	}
}

struct explore {
	size_t k;
	const char *dir;
	crashfs_visit_fn *visit;
	void *arg;
	long visited;
	int err;
};

static void try_state(struct explore *ex, const struct plan *p, const struct choice *ch)
{
	struct image img;
	char desc[1024];

	image_build(p, ch, &img);
	if (!seen_before(image_hash(&img))) {
		if (image_write(&img, ex->dir) < 0) {
			ex->err = -1;
		} else {
			describe(p, ch, desc, sizeof(desc));
			ex->visit(ex->arg, ex->k, ex->dir, desc);
			ex->visited++;
		}
	}
	image_free(&img);
}

static void set_all(const struct plan *p, struct choice *ch, bool max)
{
	for (size_t i = 0; i < p->nu; i++)
		ch[i] = (struct choice){ .keep = max ? p->u[i].n - p->u[i].ndur : 0, .omit = -1 };
}

/* Tear points of a write tried: bounded, or every sector in a long run. */
static size_t tear_points(size_t ns, bool long_run, size_t *pts)
{
	size_t n = 0;

	if (ns < 2)
		return 0;
	if (long_run) {
		for (size_t t = 1; t < ns && n < 64; t++)
			pts[n++] = t;
		return n;
	}
	pts[n++] = 1;
	if (ns / 2 > 1)
		pts[n++] = ns / 2;
	if (ns - 1 > ns / 2)
		pts[n++] = ns - 1;
	return n;
}

/* Every state where unit ui takes choice c and the others all the least or all the most. */
static void try_unit(struct explore *ex, const struct plan *p, struct choice *ch, size_t ui,
    struct choice c)
{
	for (int max = 0; max < 2; max++) {
		set_all(p, ch, max);
		ch[ui] = c;
		try_state(ex, p, ch);
	}
}

long crashfs_explore(size_t k, int long_run, uint64_t seed, const char *dir,
    crashfs_visit_fn *visit, void *arg)
{
	struct explore ex = { k, dir, visit, arg, 0, 0 };
	struct plan p;
	struct choice *ch;
	size_t pts[64];

	plan_build(&p, k);
	ch = calloc(p.nu ? p.nu : 1, sizeof(*ch));
	if (!ch)
		abort();
	set_all(&p, ch, false);
	try_state(&ex, &p, ch);
	set_all(&p, ch, true);
	try_state(&ex, &p, ch);
	for (size_t ui = 0; ui < p.nu; ui++) {
		const struct unit *u = &p.u[ui];
		size_t nvol = u->n - u->ndur;
		for (size_t keep = 1; keep <= nvol; keep++) {
			const struct crashfs_op *last = &cf.ops[u->ops[u->ndur + keep - 1]];
			try_unit(&ex, &p, ch, ui, (struct choice){ .keep = keep, .omit = -1 });
			if (u->is_dir || last->type != CFS_WRITE)
				continue;
			size_t n = tear_points(write_sectors(last), long_run, pts);
			for (size_t t = 0; t < n; t++)
				for (int z = 0; z < 2; z++)
					try_unit(&ex, &p, ch, ui, (struct choice){ .keep = keep,
					    .tear = pts[t], .zero_tail = z, .omit = -1 });
			if (!long_run)
				continue;
			for (size_t o = 0; o + 1 < keep; o++)
				try_unit(&ex, &p, ch, ui,
				    (struct choice){ .keep = keep, .omit = (long)o });
		}
	}
	{
		uint64_t rng = seed ^ (k * 0x9e3779b97f4a7c15ull);
		for (int r = 0; r < (long_run ? LONG_RANDOM_PER_K : RANDOM_PER_K); r++) {
			for (size_t ui = 0; ui < p.nu; ui++) {
				const struct unit *u = &p.u[ui];
				size_t nvol = u->n - u->ndur;
				ch[ui] = (struct choice){ .keep = (size_t)(crashfs_rand(&rng) % (nvol + 1)),
					.omit = -1 };
				if (ch[ui].keep && !u->is_dir) {
					const struct crashfs_op *last = &cf.ops[u->ops[u->ndur + ch[ui].keep - 1]];
					size_t ns = last->type == CFS_WRITE ? write_sectors(last) : 0;
					if (ns > 1 && crashfs_rand(&rng) % 2) {
						ch[ui].tear = 1 + (size_t)(crashfs_rand(&rng) % (ns - 1));
						ch[ui].zero_tail = crashfs_rand(&rng) % 2;
					}
				}
			}
			try_state(&ex, &p, ch);
		}
	}
	free(ch);
	plan_free(&p);
	return ex.err < 0 ? -1 : ex.visited;
}

int crashfs_materialize_random(size_t k, uint64_t *rng, const char *dir, char *desc,
    size_t desclen)
{
	struct plan p;
	struct choice *ch;
	struct image img;
	int rc;

	plan_build(&p, k);
	ch = calloc(p.nu ? p.nu : 1, sizeof(*ch));
	if (!ch)
		abort();
	for (size_t ui = 0; ui < p.nu; ui++) {
		const struct unit *u = &p.u[ui];
		size_t nvol = u->n - u->ndur;
		uint64_t r = crashfs_rand(rng) % 4;
		/* The extremes (nothing unsynced kept, everything kept) a quarter of the time each. */
		size_t keep = r == 0 ? 0 : r == 1 ? nvol : (size_t)(crashfs_rand(rng) % (nvol + 1));
		ch[ui] = (struct choice){ .keep = keep, .omit = -1 };
		if (ch[ui].keep && !u->is_dir) {
			const struct crashfs_op *last = &cf.ops[u->ops[u->ndur + ch[ui].keep - 1]];
			size_t ns = last->type == CFS_WRITE ? write_sectors(last) : 0;
			if (ns > 1 && crashfs_rand(rng) % 2) {
				ch[ui].tear = 1 + (size_t)(crashfs_rand(rng) % (ns - 1));
				ch[ui].zero_tail = crashfs_rand(rng) % 2;
			}
		}
	}
	image_build(&p, ch, &img);
	describe(&p, ch, desc, desclen);
	rc = image_write(&img, dir);
	image_free(&img);
	free(ch);
	plan_free(&p);
	return rc;
}

void crashfs_dump(size_t k)
{
	static const char *names[] = { "write", "trunc", "sync", "dirsync", "create", "mkdir",
		"rename", "unlink" };

	for (size_t i = 0; i < k && i < cf.nops; i++) {
		const struct crashfs_op *op = &cf.ops[i];
		fprintf(stderr, "  %5zu %-7s", i, names[op->type]);
		switch (op->type) {
		case CFS_WRITE:
			fprintf(stderr, " file %d (%s) off %" PRIu64 " len %" PRIu64 "\n", op->ino,
			    op->path, op->off, op->len);
			break;
		case CFS_TRUNC:
			fprintf(stderr, " file %d to %" PRIu64 "\n", op->ino, op->len);
			break;
		case CFS_SYNC:
			fprintf(stderr, " file %d\n", op->ino);
			break;
		case CFS_DIRSYNC:
			fprintf(stderr, " dir %d\n", op->dir);
			break;
		case CFS_RENAME:
			fprintf(stderr, " dir %d: %s -> %s (file %d)\n", op->dir, op->name, op->name2,
			    op->ino);
			break;
		default:
			fprintf(stderr, " dir %d: %s (file %d)\n", op->dir, op->name, op->ino);
			break;
		}
	}
}
