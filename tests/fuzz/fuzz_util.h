/*
 * fuzz_util: what the spool and configuration fuzz targets share.
 *
 * Scratch directories (on /dev/shm when it exists, so a target's fsyncs cost
 * nothing), the structure-aware description of a spool directory that
 * fuzz_spool_dir reads, CRC repair so mutated records still reach the code
 * behind the checksums, and the oracle that a record handed out by the spool
 * is byte for byte one that was in its files. One thread.
 */
#ifndef ACKD_FUZZ_UTIL_H
#define ACKD_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "spool.h"

/* A broken invariant: print it and abort, so libFuzzer keeps the input. */
void fuzz_check(int ok, const char *target, const char *what);

/*
 * Options (argv[1] starting with "--") of a target's replay binary; a target
 * defines it when it has any (seed writers, packers).
 */
int fuzz_tool(int argc, char **argv) __attribute__((weak));

/* Silence the daemon's warnings: damaged input is the point here. */
void fuzz_quiet(void);

/* A new empty directory; path gets its name. 0, or -1 (errno). */
int fuzz_tmpdir(char *path, size_t len);
/* Remove path and everything below it. 0, or -1. */
int fuzz_rmrf(const char *path);
/* Create dir/name (and its parent failed/ when named) holding data. 0, or -1. */
int fuzz_write_file(const char *dir, const char *name, const void *data, size_t len);
/* Read a whole file into a new buffer (free it). 0, or -1. */
int fuzz_read_file(const char *path, uint8_t **data, size_t *len);

/*
 * A spool directory as fuzz_spool_dir's input describes it: a sequence of
 * files, each
 *   kind   u8   bits 0-2: FUZZ_F_* below; 0x08: repair the CRCs of the
 *               content (segment header, records, footer, ack entries);
 *               0x10: the sequence is a u64, else a u8
 *   seq    u8 or u64 (little endian): the first sequence in the file's name,
 *               or for FUZZ_F_JUNK which odd name to use
 *   len    u32 (little endian); cut to what the input has left
 *   data   len bytes
 * at most FUZZ_MAX_FILES of them; a later file of the same name replaces an
 * earlier one.
 */
enum fuzz_file_kind {
	FUZZ_F_SEG = 0,    /* seg-<seq>.spool */
	FUZZ_F_ACK = 1,    /* seg-<seq>.ack */
	FUZZ_F_FAILED = 2, /* failed/failed-<seq>.log */
	FUZZ_F_TEMP = 3,   /* .seg-<seq>.tmp */
	FUZZ_F_JUNK = 4,   /* a name ackd must ignore or refuse (see fuzz_util.c) */
	FUZZ_F_LOCK = 5,   /* the lock file, with content */
};
#define FUZZ_F_REPAIR 0x08
#define FUZZ_F_SEQ64 0x10
#define FUZZ_MAX_FILES 16

struct fuzz_file {
	char name[96]; /* relative to the spool directory */
	int kind;
	const uint8_t *data; /* borrowed from the input, or repaired copy in buf */
	size_t len;
	uint8_t *buf;
};

struct fuzz_dir {
	struct fuzz_file f[FUZZ_MAX_FILES];
	size_t n;
};

/* Parse data into d (names unique, later wins). Always succeeds; free with fuzz_dir_fini(). */
void fuzz_dir_parse(struct fuzz_dir *d, const uint8_t *data, size_t size);
void fuzz_dir_fini(struct fuzz_dir *d);
/* Write d's files into the empty directory dir. 0, or -1. */
int fuzz_dir_write(const struct fuzz_dir *d, const char *dir);
/* The file of d named name, or NULL. */
const struct fuzz_file *fuzz_dir_find(const struct fuzz_dir *d, const char *name);
/*
 * Describe the spool directory dir in fuzz_dir_parse()'s format (files over
 * 1 MiB are cut). Returns a new buffer and *len, or NULL.
 */
uint8_t *fuzz_dir_pack(const char *dir, size_t *len);

/* Repair the CRCs of a segment or failed/ log, and of .ack entries, in place. */
void fuzz_repair_segment(uint8_t *buf, size_t len);
void fuzz_repair_acks(uint8_t *buf, size_t len);

/*
 * The bytes a record with r's message, seq and type would have on disk, with
 * flags: a new buffer of *len bytes, or NULL when r cannot be encoded.
 */
uint8_t *fuzz_encode(const struct spool_msg *m, uint64_t seq, int type, uint16_t flags,
    size_t *len);

/*
 * Whether r occurs whole in hay as a MSG record with its sequence, whatever
 * its flags, with both CRCs holding.
 */
int fuzz_rec_in(const struct spool_rec *r, const uint8_t *hay, size_t haylen);

#endif
