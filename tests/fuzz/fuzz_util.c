/*
 * fuzz_util: scratch directories, the spool directory description, CRC
 * repair and the record oracle shared by the fuzz targets (fuzz_util.h).
 * One thread.
 */
#define _GNU_SOURCE /* memmem */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_util.h"
#include "log.h"

void fuzz_check(int ok, const char *target, const char *what)
{
	if (!ok) {
		fprintf(stderr, "%s: broken: %s\n", target, what);
		abort();
	}
}

void fuzz_quiet(void)
{
	log_set_level(LOG_LVL_ERR);
}

int fuzz_tmpdir(char *path, size_t len)
{
	struct stat st;
	const char *base = getenv("TMPDIR");

	if (stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) && access("/dev/shm", W_OK) == 0)
		base = "/dev/shm";
	else if (base == NULL || base[0] == '\0')
		base = "/tmp";
	if ((size_t)snprintf(path, len, "%s/ackd-fuzz-XXXXXX", base) >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return mkdtemp(path) ? 0 : -1;
}

int fuzz_rmrf(const char *path)
{
	struct dirent *de;
	struct stat st;
	int rc = 0;
	DIR *d;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -1;
	if (!S_ISDIR(st.st_mode))
		return unlink(path);
	d = opendir(path);
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		char sub[4096];
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		if (fuzz_rmrf(sub) < 0)
			rc = -1;
	}
	closedir(d);
	if (rmdir(path) < 0)
		rc = -1;
	return rc;
}

int fuzz_write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[4096];
	const char *p = data;
	int fd;

	if (!strncmp(name, "failed/", 7)) {
		snprintf(path, sizeof(path), "%s/failed", dir);
		if (mkdir(path, 0750) < 0 && errno != EEXIST)
			return -1;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			close(fd);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return close(fd);
}

int fuzz_read_file(const char *path, uint8_t **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long n;

	if (f == NULL)
		return -1;
	if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
		goto fail;
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n)
		goto fail;
	fclose(f);
	*data = buf;
	*len = (size_t)n;
	return 0;
fail:
	free(buf);
	fclose(f);
	return -1;
}

/* --- little-endian fields and CRC repair ------------------------------------ */

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

/*
 * Segment header CRC, then each record from offset 40 on: at a record magic,
 * the payload CRC (when the payload is all there) and the header CRC; the
 * walk goes on after a whole record, else a byte further.
 */
void fuzz_repair_segment(uint8_t *buf, size_t len)
{
	size_t off = SPOOL_SEG_HDR_SIZE;

	if (len >= SPOOL_SEG_HDR_SIZE && !memcmp(buf, SPOOL_SEG_MAGIC, 8))
		put32(buf + 32, crc32c(0, buf, 32));
	else
		off = 0;
	while (off + SPOOL_REC_HDR_SIZE <= len) {
		uint8_t *r = buf + off;
		uint32_t plen;

		if (get32(r) != SPOOL_REC_MAGIC) {
			off++;
			continue;
		}
		plen = get32(r + 8);
		if (plen <= len - off - SPOOL_REC_HDR_SIZE)
			put32(r + 20, crc32c(0, r + SPOOL_REC_HDR_SIZE, plen));
		put32(r + 24, crc32c(0, r, 24));
		if (plen <= len - off - SPOOL_REC_HDR_SIZE)
			off += SPOOL_REC_HDR_SIZE + plen;
		else
			off++;
	}
}

void fuzz_repair_acks(uint8_t *buf, size_t len)
{
	for (size_t off = 0; off + SPOOL_ACK_ENTRY_SIZE <= len; off += SPOOL_ACK_ENTRY_SIZE)
		spool_ack_entry_encode(buf + off, get64(buf + off));
}

/* --- the directory description ---------------------------------------------- */

/* Names ackd must skip, refuse or clean up, chosen by FUZZ_F_JUNK's seq. */
static const char *const junk_names[] = {
	"junk",
	"seg-1.spool",                   /* too few digits */
	"seg-0000000000000000000x.spool", /* not a number */
	"seg-00000000000000000001.spoo",
	"seg-00000000000000000001.ack.tmp",
	"seg-18446744073709551615.spool", /* the largest sequence */
	"seg-99999999999999999999.spool", /* over 64 bits */
	".seg-.tmp",
	"failed/junk",
	"failed/failed-1.log",
	"failed/failed-00000000000000000001.log.tmp",
	"failed/seg-00000000000000000001.spool",
};
#define NJUNK (sizeof(junk_names) / sizeof(junk_names[0]))

static void file_name(char *buf, size_t len, int kind, uint64_t seq)
{
	switch (kind) {
	case FUZZ_F_SEG:
		snprintf(buf, len, "seg-%020" PRIu64 ".spool", seq);
		break;
	case FUZZ_F_ACK:
		snprintf(buf, len, "seg-%020" PRIu64 ".ack", seq);
		break;
	case FUZZ_F_FAILED:
		snprintf(buf, len, "failed/failed-%020" PRIu64 ".log", seq);
		break;
	case FUZZ_F_TEMP:
		snprintf(buf, len, ".seg-%020" PRIu64 ".tmp", seq);
		break;
	case FUZZ_F_LOCK:
		snprintf(buf, len, "lock");
		break;
	default:
		snprintf(buf, len, "%s", junk_names[seq % NJUNK]);
		break;
	}
}

void fuzz_dir_parse(struct fuzz_dir *d, const uint8_t *data, size_t size)
{
	size_t off = 0;

	memset(d, 0, sizeof(*d));
	while (off < size && d->n < FUZZ_MAX_FILES) {
		uint8_t kind = data[off++];
		struct fuzz_file *f = NULL;
		uint64_t seq = 0;
		uint32_t len = 0;
		char name[96];
		int k = kind & 7;

		if (k > FUZZ_F_LOCK)
			k = FUZZ_F_SEG;
		if (kind & FUZZ_F_SEQ64) {
			uint8_t b[8] = { 0 };
			size_t take = size - off < 8 ? size - off : 8;
			memcpy(b, data + off, take);
			off += take;
			seq = get64(b);
		} else if (off < size) {
			seq = data[off++];
		}
		if (size - off >= 4) {
			len = get32(data + off);
			off += 4;
		} else {
			off = size;
		}
		if (len > size - off)
			len = (uint32_t)(size - off);
		file_name(name, sizeof(name), k, seq);
		for (size_t i = 0; i < d->n; i++)
			if (!strcmp(d->f[i].name, name))
				f = &d->f[i];
		if (f == NULL)
			f = &d->f[d->n++];
		free(f->buf);
		memset(f, 0, sizeof(*f));
		snprintf(f->name, sizeof(f->name), "%s", name);
		f->kind = k;
		f->data = data + off;
		f->len = len;
		if ((kind & FUZZ_F_REPAIR) && len > 0 && (f->buf = malloc(len)) != NULL) {
			memcpy(f->buf, data + off, len);
			if (k == FUZZ_F_ACK)
				fuzz_repair_acks(f->buf, len);
			else
				fuzz_repair_segment(f->buf, len);
			f->data = f->buf;
		}
		off += len;
	}
}

void fuzz_dir_fini(struct fuzz_dir *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->f[i].buf);
	d->n = 0;
}

int fuzz_dir_write(const struct fuzz_dir *d, const char *dir)
{
	for (size_t i = 0; i < d->n; i++)
		if (fuzz_write_file(dir, d->f[i].name, d->f[i].data, d->f[i].len) < 0)
			return -1;
	return 0;
}

const struct fuzz_file *fuzz_dir_find(const struct fuzz_dir *d, const char *name)
{
	for (size_t i = 0; i < d->n; i++)
		if (!strcmp(d->f[i].name, name))
			return &d->f[i];
	return NULL;
}

/* Kind and sequence of a spool file name as fuzz_dir_parse() would write it; -1 for others. */
static int classify(const char *name, uint64_t *seq)
{
	static const struct {
		const char *pre, *suf;
		int kind;
	} pats[] = {
		{ "seg-", ".spool", FUZZ_F_SEG },
		{ "seg-", ".ack", FUZZ_F_ACK },
		{ "failed/failed-", ".log", FUZZ_F_FAILED },
		{ ".seg-", ".tmp", FUZZ_F_TEMP },
	};

	if (!strcmp(name, "lock"))
		return FUZZ_F_LOCK;
	for (size_t i = 0; i < sizeof(pats) / sizeof(pats[0]); i++) {
		size_t pl = strlen(pats[i].pre), sl = strlen(pats[i].suf);
		char digits[21];
		if (strlen(name) != pl + 20 + sl || strncmp(name, pats[i].pre, pl) != 0 ||
		    strcmp(name + pl + 20, pats[i].suf) != 0)
			continue;
		memcpy(digits, name + pl, 20);
		digits[20] = '\0';
		if (strspn(digits, "0123456789") != 20)
			continue;
		*seq = strtoull(digits, NULL, 10);
		return pats[i].kind;
	}
	return -1;
}

/* Append one file's entry to the buffer *out (of *len bytes). 0, or -1. */
static int pack_one(uint8_t **out, size_t *len, const char *dir, const char *name)
{
	char path[4096];
	uint8_t *data = NULL, *nb;
	size_t dlen = 0, need;
	uint64_t seq = 0;
	int kind = classify(name, &seq);
	uint8_t *p;

	if (kind < 0) {
		kind = FUZZ_F_JUNK;
		seq = 0;
		for (size_t i = 0; i < NJUNK; i++)
			if (!strcmp(junk_names[i], name))
				seq = i;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (fuzz_read_file(path, &data, &dlen) < 0)
		return -1;
	if (dlen > (1u << 20))
		dlen = 1u << 20;
	need = *len + 1 + 8 + 4 + dlen;
	nb = realloc(*out, need);
	if (nb == NULL) {
		free(data);
		return -1;
	}
	*out = nb;
	p = nb + *len;
	if (seq > 0xff) {
		*p++ = (uint8_t)(kind | FUZZ_F_SEQ64);
		put64(p, seq);
		p += 8;
	} else {
		*p++ = (uint8_t)kind;
		*p++ = (uint8_t)seq;
	}
	put32(p, (uint32_t)dlen);
	p += 4;
	memcpy(p, data, dlen);
	p += dlen;
	*len = (size_t)(p - nb);
	free(data);
	return 0;
}

static int pack_dir(uint8_t **out, size_t *len, const char *dir, const char *sub)
{
	char path[4096];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	snprintf(path, sizeof(path), "%s%s%s", dir, sub[0] ? "/" : "", sub);
	d = opendir(path);
	if (d == NULL)
		return sub[0] && errno == ENOENT ? 0 : -1;
	while (rc == 0 && (de = readdir(d)) != NULL) {
		char name[512];
		struct stat st;
		if (de->d_name[0] == '.' && (!de->d_name[1] || !strcmp(de->d_name, "..")))
			continue;
		snprintf(name, sizeof(name), "%s%s%s", sub, sub[0] ? "/" : "", de->d_name);
		snprintf(path, sizeof(path), "%s/%s", dir, name);
		if (stat(path, &st) < 0 || !S_ISREG(st.st_mode))
			continue;
		rc = pack_one(out, len, dir, name);
	}
	closedir(d);
	return rc;
}

uint8_t *fuzz_dir_pack(const char *dir, size_t *len)
{
	uint8_t *out = NULL;

	*len = 0;
	if (pack_dir(&out, len, dir, "") < 0 || pack_dir(&out, len, dir, "failed") < 0) {
		free(out);
		return NULL;
	}
	if (out == NULL)
		out = malloc(1);
	return out;
}

/* --- the record oracle ------------------------------------------------------ */

uint8_t *fuzz_encode(const struct spool_msg *m, uint64_t seq, int type, uint16_t flags,
    size_t *len)
{
	size_t n = spool_rec_size(m);
	uint8_t *buf;

	if (n == 0 || (buf = malloc(n)) == NULL)
		return NULL;
	*len = spool_rec_encode_type(m, (enum spool_rec_type)type, buf);
	spool_rec_set_flags(buf, flags);
	spool_rec_set_seq(buf, seq);
	return buf;
}

int fuzz_rec_in(const struct spool_rec *r, const uint8_t *hay, size_t haylen)
{
	size_t n;
	uint8_t *enc = fuzz_encode(&r->msg, r->seq, SPOOL_REC_MSG, 0, &n);
	const uint8_t *p = hay, *end = hay + haylen;
	int found = 0;

	if (enc == NULL)
		return 0;
	/*
	 * The payload, then the header before it: equal but for the flags
	 * (bytes 6-7, which readers do not interpret beyond the copy flag) and
	 * the header CRC (24-27), which must hold for the bytes found.
	 */
	while (!found && p < end) {
		const uint8_t *pl = memmem(p, (size_t)(end - p), enc + SPOOL_REC_HDR_SIZE,
		    n - SPOOL_REC_HDR_SIZE);
		const uint8_t *h;
		if (pl == NULL)
			break;
		h = pl - SPOOL_REC_HDR_SIZE;
		found = pl - hay >= SPOOL_REC_HDR_SIZE && !memcmp(h, enc, 6) &&
		    !memcmp(h + 8, enc + 8, 16) && get32(h + 24) == crc32c(0, h, 24);
		p = pl + 1;
	}
	free(enc);
	return found;
}
