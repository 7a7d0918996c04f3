/*
 * crashfs: records the spool's file-system calls through struct spool_io and
 * builds the directory states a power loss could leave after any of them.
 *
 * Record: crashfs_start() snapshots a directory (its contents count as
 * durable) and replaces spool_io with wrappers that call the real system and
 * log each mutating call with its data: writes and truncates by inode (fds
 * and names are tracked through openat, renameat and unlinkat), fsync and
 * fdatasync of files, fsync of directories, creates, mkdirs, renames and
 * unlinks by directory. Reads are not recorded (they do not pass the seam).
 *
 * Replay: a crash after the first k operations leaves, under the persistence
 * model in docs/durability.md ("Crash-state exploration"):
 *   - a file's data ops up to its last fsync/fdatasync before k; of the
 *     later ones any prefix (and, in long runs, that prefix less one op),
 *     the last one possibly torn after a 512-byte sector, with or without
 *     the file size covering the rest of it (zeros where nothing was);
 *   - a directory's entry ops (create, mkdir, rename, unlink) up to its last
 *     fsync before k, then any prefix of the later ones; a rename is atomic.
 * Files and directories choose independently. crashfs_explore() enumerates
 * a bounded set of such states for one k, skips states already seen (by a
 * hash of names and contents), writes each to a real directory and calls
 * back; crashfs_materialize_random() writes one random state.
 *
 * Threads: the recording wrappers take one lock, so any thread may call the
 * seam; the other functions from one thread while nothing is being recorded.
 */
#ifndef ACKD_TEST_CRASHFS_H
#define ACKD_TEST_CRASHFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum crashfs_op_type {
	CFS_WRITE,   /* ino: len bytes at off */
	CFS_TRUNC,   /* ino: to len bytes */
	CFS_SYNC,    /* ino: fsync or fdatasync of a file */
	CFS_DIRSYNC, /* dir: fsync of a directory */
	CFS_CREATE,  /* dir: name -> ino, a new empty file */
	CFS_MKDIR,   /* dir: name -> ino, a new directory */
	CFS_RENAME,  /* dir: name -> name2 (replacing name2) */
	CFS_UNLINK,  /* dir: name removed */
};

struct crashfs_op {
	enum crashfs_op_type type;
	int ino;
	int dir;
	char name[64];
	char name2[64];
	char path[96]; /* CFS_WRITE: the file's name when written, "" if unlinked */
	uint64_t off;
	uint64_t len;
	unsigned char *data; /* CFS_WRITE */
};

/*
 * Snapshot root (a directory, and its subdirectories one level down) as the
 * durable starting state, drop any earlier trace, install the recording
 * seam. 0, or -1 with err.
 */
int crashfs_start(const char *root, char *err, size_t errlen);
/* Put the real seam back; the trace stays for replay. */
void crashfs_stop(void);
/* Free the trace and the seen-state set. */
void crashfs_reset(void);

/*
 * On: every mutating call fails with EIO and nothing is recorded, as if the
 * process had been killed: what it wrote so far stays in the files.
 */
void crashfs_freeze(int on);

/*
 * On: pwritev() waits (the writer thread stops before its next group) until
 * it is turned off again; lets a test act while a commit is pending.
 */
void crashfs_hold(int on);

/*
 * On: fsync and fdatasync still run but are not recorded, as if the code
 * under test never called them; the explorer's self-test expects losses.
 */
void crashfs_drop_syncs(int on);

/*
 * Operations recorded so far, and a copy of the i-th of them (false when
 * there is none); both safe while another thread records. The copy's data
 * stays valid until crashfs_reset().
 */
size_t crashfs_nops(void);
bool crashfs_op(size_t i, struct crashfs_op *out);

/* One crash state, written to dir; desc says which choices made it. */
typedef void crashfs_visit_fn(void *arg, size_t k, const char *dir, const char *desc);

/*
 * Write each not yet seen state of a crash after k operations to dir (which
 * is emptied first) and call visit. long_run: more choices (one op left out
 * of a prefix, every tear point, random combinations). Returns how many
 * states were visited, or -1 when dir cannot be written.
 */
long crashfs_explore(size_t k, int long_run, uint64_t seed, const char *dir,
    crashfs_visit_fn *visit, void *arg);

/*
 * Write one random crash state after k operations to dir: each file and
 * directory keeps none of its unsynced ops a quarter of the time, all of
 * them a quarter, else a random prefix (the last write torn half the time).
 * 0 or -1.
 */
int crashfs_materialize_random(size_t k, uint64_t *rng, const char *dir, char *desc,
    size_t desclen);

/* Print the trace up to k operations to stderr (for a failure report). */
void crashfs_dump(size_t k);

/* Remove dir and everything under it (two levels). */
void crashfs_rmtree(const char *dir);

/* xorshift64*: the tests' seeded random numbers. */
uint64_t crashfs_rand(uint64_t *state);

#endif
