/*
 * spool_failed: failed/: spool_fail() copies a record Kafka rejected, with
 * the reason, into failed/failed-<first seq>.log, then acknowledges it.
 *
 * Threads: the producer thread only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

/* Append one FAILED record to failed/failed-<first>.log and fsync it. */
static int failed_append(struct spool *sp, uint64_t first, const unsigned char *rec, size_t len)
{
	char name[96];
	unsigned char hdr[SPOOL_SEG_HDR_SIZE];
	struct stat st;
	int fd;

	snprintf(name, sizeof(name), "failed/failed-%020" PRIu64 ".log", first);
	fd = spool_io.openat(sp->dir_fd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0)
		goto fail;
	if (st.st_size == 0) {
		spool_seg_hdr_encode(hdr, first, wall_ms());
		if (spool_write_all(fd, hdr, sizeof(hdr)) < 0)
			goto fail;
	}
	if (spool_write_all(fd, rec, len) < 0 || spool_io.fdatasync(fd) < 0) {
		/* No partial record stays: the retry appends to a clean end. */
		if (spool_io.ftruncate(fd, st.st_size) < 0)
			log_warn("spool: %s: cannot truncate %s", sp->dir, name);
		goto fail;
	}
	spool_io.close(fd);
	if (st.st_size == 0) {
		int dfd = spool_io.openat(sp->dir_fd, "failed", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
		if (dfd >= 0) {
			if (spool_io.fsync(dfd) < 0)
				log_warn("spool: %s: fsync of failed/", sp->dir);
			spool_io.close(dfd);
		}
	}
	return 0;
fail:
	spool_io.close(fd);
	return -1;
}

int spool_fail(struct spool *sp, uint64_t seq, const char *reason)
{
	struct spool_rec *r = NULL;
	struct spool_hdr *hdrs = NULL;
	struct spool_msg m;
	unsigned char *buf = NULL;
	uint64_t cur;
	struct seg *seg = reader_resolve(sp, seq, &cur);
	size_t len;

	if (!seg || reader_read_one(sp, seg, cur, &r) == 0)
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
