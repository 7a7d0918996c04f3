/*
 * spool_ack: acknowledgements. spool_ack() and damage set a bit in the
 * segment's bitmap and buffer the sequence for its .ack file, which
 * ack_flush() appends to without fsync (a lost acknowledgement can only
 * cause a duplicate). ack_load() reads a .ack file back at open.
 *
 * Threads: the producer thread (ack_load(): the opening thread, before the
 * writer starts).
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

/* Append the buffered acknowledgements to seg's .ack file, without fsync. */
void ack_flush(struct spool *sp, struct seg *seg)
{
	char name[64];

	if (seg->ack_n == 0)
		return;
	if (seg->ack_fd < 0) {
		seg_name(name, sizeof(name), seg->first_seq, "ack");
		seg->ack_fd = spool_io.openat(sp->dir_fd, name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	}
	/*
	 * A lost acknowledgement only makes the record be produced again; a
	 * partial entry would shift every later one off the entry grid, so a
	 * failed write is cut back to where it started.
	 */
	if (seg->ack_fd >= 0) {
		off_t before = lseek(seg->ack_fd, 0, SEEK_END);
		if (spool_write_all(seg->ack_fd, seg->ack_buf, seg->ack_n * SPOOL_ACK_ENTRY_SIZE) < 0) {
			if (before >= 0 && spool_io.ftruncate(seg->ack_fd, before) < 0)
				log_warn("spool: %s: cannot truncate the acknowledgements of segment %"
				    PRIu64, sp->dir, seg->first_seq);
			if (spool_log_due(&sp->ackerr_log_ms))
				log_warn("spool: %s: cannot write acknowledgements of segment %" PRIu64,
				    sp->dir, seg->first_seq);
		}
	} else if (spool_log_due(&sp->ackerr_log_ms)) {
		log_warn("spool: %s: cannot open the acknowledgements of segment %" PRIu64, sp->dir,
		    seg->first_seq);
	}
	seg->ack_n = 0;
}

/*
 * Mark seq of seg acknowledged: by Kafka, or lost to damage (counted). Returns
 * whether it was live. Producer thread.
 */
bool ack_mark(struct spool *sp, struct seg *seg, uint64_t seq, bool lost)
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
uint64_t ack_mark_lost(struct spool *sp, struct seg *seg, uint64_t from, uint64_t to)
{
	uint64_t n = 0;

	for (uint64_t s = from; s < to; s++)
		n += ack_mark(sp, seg, s, true);
	return n;
}

int ack_file_read(int fd, uint64_t size, void (*each)(void *arg, uint64_t seq), void *arg,
    uint64_t *bad)
{
	unsigned char buf[SPOOL_ACK_ENTRY_SIZE * 1024];
	uint64_t whole = size / SPOOL_ACK_ENTRY_SIZE * SPOOL_ACK_ENTRY_SIZE, off = 0;

	while (off < whole) {
		size_t got, want = whole - off < sizeof(buf) ? (size_t)(whole - off) : sizeof(buf);
		if (spool_pread_all(fd, buf, want, off, &got) < 0)
			return -1;
		if (got < SPOOL_ACK_ENTRY_SIZE)
			break; /* shorter than it was: read what is there */
		for (size_t i = 0; i + SPOOL_ACK_ENTRY_SIZE <= got; i += SPOOL_ACK_ENTRY_SIZE) {
			uint64_t seq;
			if (spool_ack_entry_parse(buf + i, &seq) < 0)
				(*bad)++;
			else
				each(arg, seq);
		}
		off += got / SPOOL_ACK_ENTRY_SIZE * SPOOL_ACK_ENTRY_SIZE;
	}
	return 0;
}

static void ack_set_bit(void *arg, uint64_t seq)
{
	struct seg *seg = arg;

	if (seq >= seg->first_seq && seq < seg->end_seq && !seg_is_acked(seg, seq))
		seg_set_acked(seg, seq);
}

/* Read seg's .ack file into its bitmap; drop a partial last entry. */
void ack_load(struct spool *sp, struct seg *seg)
{
	char name[64];
	struct stat st;
	uint64_t whole, bad = 0;
	int fd;

	seg_name(name, sizeof(name), seg->first_seq, "ack");
	fd = spool_io.openat(sp->dir_fd, name, O_RDWR | O_APPEND | O_CLOEXEC, 0);
	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("spool: %s: cannot open %s", sp->dir, name);
		return;
	}
	if (fstat(fd, &st) < 0) {
		log_warn("spool: %s: %s", sp->dir, name);
		spool_io.close(fd);
		return;
	}
	whole = (uint64_t)st.st_size / SPOOL_ACK_ENTRY_SIZE * SPOOL_ACK_ENTRY_SIZE;
	if (whole != (uint64_t)st.st_size) {
		log_warnx("spool: %s: %s ends with a partial entry, ignoring it", sp->dir, name);
		if (spool_io.ftruncate(fd, (off_t)whole) < 0)
			log_warn("spool: %s: cannot truncate %s", sp->dir, name);
	}
	if (ack_file_read(fd, whole, ack_set_bit, seg, &bad) < 0)
		log_warn("spool: %s: reading %s", sp->dir, name);
	if (bad)
		log_warnx("spool: %s: %s: %" PRIu64 " damaged entries ignored", sp->dir, name, bad);
	seg->ack_fd = fd;
}
