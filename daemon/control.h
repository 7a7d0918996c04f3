/*
 * control: the Control API's requests (pause, resume, seek, redrive of a
 * subscription) as commands that a subscription's thread carries out, the
 * parsing of their bodies, and the pause files that keep an operator's pause
 * across restarts.
 */
#ifndef ACKD_CONTROL_H
#define ACKD_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#ifndef MUST_USE /* as in util.h */
#define MUST_USE __attribute__((warn_unused_result))
#endif

enum control_op {
	CONTROL_PAUSE,
	CONTROL_RESUME,
	CONTROL_SEEK,
	CONTROL_REDRIVE,
};

enum control_seek_to {
	SEEK_EARLIEST,
	SEEK_LATEST,
	SEEK_TIMESTAMP,
	SEEK_OFFSETS,
};

struct control_offset {
	char *topic;
	int32_t partition;
	int64_t offset;
};

struct control_cmd;

/*
 * Called once with the command's answer in status and answer (taken by the
 * callee), on the thread that carried it out. Must not block.
 */
typedef void control_done_fn(struct control_cmd *cmd);

struct control_cmd {
	enum control_op op;
	enum control_seek_to to;        /* CONTROL_SEEK */
	int64_t timestamp_ms;           /* SEEK_TIMESTAMP */
	struct control_offset *offsets; /* SEEK_OFFSETS */
	size_t noffsets;
	int64_t max;                    /* CONTROL_REDRIVE: most to redrive, 0 all */

	unsigned status;                /* the answer, filled by control_answer() */
	json_t *answer;
	control_done_fn *done;
	void *arg;
	int64_t deadline_ms;            /* CONTROL_PAUSE: when to stop waiting for requests */
	struct control_cmd *next;       /* on a subscription's queue */
};

/* A command for op; free with control_cmd_free(). */
struct control_cmd *control_cmd_new(enum control_op op);
void control_cmd_free(struct control_cmd *cmd); /* NULL ok */

/*
 * The body of a seek: {"to":"earliest"|"latest"}, {"timestamp_ms":T} or
 * {"offsets":[{"topic":…,"partition":…,"offset":…}, …]}. 0, or -1 with err
 * naming the field that is wrong.
 */
MUST_USE int control_parse_seek(const char *body, size_t len, struct control_cmd *cmd,
    char *err, size_t errlen);

/* The body of a redrive: empty, {} or {"max":N} with N >= 1. */
MUST_USE int control_parse_redrive(const char *body, size_t len, struct control_cmd *cmd,
    char *err, size_t errlen);

/*
 * Fill the answer (answer's reference taken) and call done. Any thread; the
 * command belongs to its requester again afterwards.
 */
void control_answer(struct control_cmd *cmd, unsigned status, json_t *answer);

/* An error answer {"error":{"code":…,"message":…}}. */
void control_fail(struct control_cmd *cmd, unsigned status, const char *code, const char *fmt,
    ...) __attribute__((format(printf, 4, 5)));

/*
 * Pause files: <spool dir>/paused/<subscription>.json, written to a
 * temporary file, fsynced, renamed and the directory fsynced, so a pause
 * that was answered survives a crash and a power loss.
 *
 * control_pause_save: 0, or -1 with err. control_pause_remove: the same
 * (no file is fine). control_pause_saved: whether the file is there.
 */
MUST_USE int control_pause_save(const char *spool_dir, const char *name, char *err,
    size_t errlen);
MUST_USE int control_pause_remove(const char *spool_dir, const char *name, char *err,
    size_t errlen);
bool control_pause_saved(const char *spool_dir, const char *name);

#endif
