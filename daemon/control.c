/*
 * control: Control API commands, their bodies, and the pause files.
 *
 * Design. A request thread parses the body into a struct control_cmd
 * (nothing here trusts the body: every field is checked and a bad one is
 * named in the error) and hands the command to the subscription's thread
 * (consumer_control()), which carries it out between its loop turns and
 * answers through control_answer(). The pause files are the only I/O here;
 * they are written by the subscription's thread when it pauses or resumes,
 * and read when it starts.
 *
 * Threads: the parsers run on libmicrohttpd's threads; the rest on the
 * subscription's thread (or the one stopping it, for commands it answers
 * with 503).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "util.h"

#define PAUSED_DIR "paused"

struct control_cmd *control_cmd_new(enum control_op op)
{
	struct control_cmd *cmd = xcalloc(1, sizeof(*cmd));

	cmd->op = op;
	return cmd;
}

void control_cmd_free(struct control_cmd *cmd)
{
	if (!cmd)
		return;
	for (size_t i = 0; i < cmd->noffsets; i++)
		free(cmd->offsets[i].topic);
	free(cmd->offsets);
	json_decref(cmd->answer);
	free(cmd);
}

/* An integer of j, or -1 when it is none (jansson reads big numbers as reals). */
static int get_int(const json_t *j, int64_t min, int64_t max, int64_t *out)
{
	json_int_t v;

	if (!json_is_integer(j))
		return -1;
	v = json_integer_value(j);
	if (v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static json_t *load(const char *body, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &jerr);

	if (!root) {
		snprintf(err, errlen, "the body is not JSON: %s", jerr.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		snprintf(err, errlen, "the body must be a JSON object");
		json_decref(root);
		return NULL;
	}
	return root;
}

static int parse_offsets(const json_t *arr, struct control_cmd *cmd, char *err, size_t errlen)
{
	size_t n = json_array_size(arr);

	if (!json_is_array(arr) || n == 0) {
		snprintf(err, errlen, "offsets: must be a non-empty array");
		return -1;
	}
	cmd->offsets = xcalloc(n, sizeof(*cmd->offsets));
	for (size_t i = 0; i < n; i++) {
		const json_t *e = json_array_get(arr, i), *t;
		struct control_offset *o = &cmd->offsets[i];
		const char *key;
		json_t *v;
		int64_t part;

		if (!json_is_object(e)) {
			snprintf(err, errlen, "offsets[%zu]: must be an object", i);
			return -1;
		}
		json_object_foreach((json_t *)e, key, v) {
			if (strcmp(key, "topic") && strcmp(key, "partition") && strcmp(key, "offset")) {
				snprintf(err, errlen, "offsets[%zu].%.64s: unknown field", i, key);
				return -1;
			}
		}
		t = json_object_get(e, "topic");
		if (!json_is_string(t) || json_string_length(t) == 0 || json_string_length(t) > 249) {
			snprintf(err, errlen, "offsets[%zu].topic: must be a topic name", i);
			return -1;
		}
		if (get_int(json_object_get(e, "partition"), 0, INT32_MAX, &part) < 0) {
			snprintf(err, errlen, "offsets[%zu].partition: must be an integer from 0 to %d",
			    i, INT32_MAX);
			return -1;
		}
		if (get_int(json_object_get(e, "offset"), 0, INT64_MAX, &o->offset) < 0) {
			snprintf(err, errlen, "offsets[%zu].offset: must be an integer, 0 or more", i);
			return -1;
		}
		o->topic = xstrdup(json_string_value(t));
		o->partition = (int32_t)part;
		cmd->noffsets++;
		for (size_t j = 0; j < i; j++) {
			if (cmd->offsets[j].partition == o->partition &&
			    strcmp(cmd->offsets[j].topic, o->topic) == 0) {
				snprintf(err, errlen, "offsets[%zu]: names the partition of offsets[%zu] "
				    "again", i, j);
				return -1;
			}
		}
	}
	return 0;
}

int control_parse_seek(const char *body, size_t len, struct control_cmd *cmd, char *err,
    size_t errlen)
{
	json_t *root = load(body, len, err, errlen), *v;
	const char *key;
	int forms = 0;

	if (!root)
		return -1;
	json_object_foreach(root, key, v) {
		if (strcmp(key, "to") && strcmp(key, "timestamp_ms") && strcmp(key, "offsets")) {
			snprintf(err, errlen, "%.64s: unknown field (to, timestamp_ms or offsets)", key);
			goto fail;
		}
		forms++;
	}
	if (forms != 1) {
		snprintf(err, errlen, "give exactly one of to, timestamp_ms or offsets");
		goto fail;
	}
	if ((v = json_object_get(root, "to"))) {
		const char *s = json_string_value(v);
		if (s && strcmp(s, "earliest") == 0)
			cmd->to = SEEK_EARLIEST;
		else if (s && strcmp(s, "latest") == 0)
			cmd->to = SEEK_LATEST;
		else {
			snprintf(err, errlen, "to: must be \"earliest\" or \"latest\"");
			goto fail;
		}
	} else if ((v = json_object_get(root, "timestamp_ms"))) {
		cmd->to = SEEK_TIMESTAMP;
		if (get_int(v, 0, INT64_MAX, &cmd->timestamp_ms) < 0) {
			snprintf(err, errlen, "timestamp_ms: must be an integer, 0 or more "
			    "(milliseconds since the epoch)");
			goto fail;
		}
	} else {
		cmd->to = SEEK_OFFSETS;
		if (parse_offsets(json_object_get(root, "offsets"), cmd, err, errlen) < 0)
			goto fail;
	}
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	return -1;
}

int control_parse_redrive(const char *body, size_t len, struct control_cmd *cmd, char *err,
    size_t errlen)
{
	json_t *root, *v;
	const char *key;

	cmd->max = 0;
	if (len == 0)
		return 0;
	root = load(body, len, err, errlen);
	if (!root)
		return -1;
	json_object_foreach(root, key, v) {
		if (strcmp(key, "max")) {
			snprintf(err, errlen, "%.64s: unknown field (only max)", key);
			goto fail;
		}
		if (get_int(v, 1, INT64_MAX, &cmd->max) < 0) {
			snprintf(err, errlen, "max: must be an integer, 1 or more");
			goto fail;
		}
	}
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	return -1;
}

void control_answer(struct control_cmd *cmd, unsigned status, json_t *answer)
{
	json_decref(cmd->answer);
	cmd->status = status;
	cmd->answer = answer;
	cmd->done(cmd);
}

void control_fail(struct control_cmd *cmd, unsigned status, const char *code, const char *fmt,
    ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	control_answer(cmd, status, json_pack("{s:{s:s,s:s}}", "error", "code", code, "message",
	    msg));
}

/* --- pause files ----------------------------------------------------------- */

static int fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return -1;
	rc = fsync(fd);
	if (close(fd) < 0)
		rc = -1;
	return rc;
}

int control_pause_save(const char *spool_dir, const char *name, char *err, size_t errlen)
{
	char dir[4096], tmp[4400], path[4400], text[512];
	int fd = -1, n;

	snprintf(dir, sizeof(dir), "%s/%s", spool_dir, PAUSED_DIR);
	snprintf(path, sizeof(path), "%s/%s.json", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	if (mkdir(dir, 0700) == 0) {
		/* The new directory must survive a power loss with the file in it. */
		if (fsync_path(spool_dir) < 0) {
			snprintf(err, errlen, "fsync %s: %s", spool_dir, strerror(errno));
			return -1;
		}
	} else if (errno != EEXIST) {
		snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	n = snprintf(text, sizeof(text), "{\"subscription\":\"%s\",\"paused_at_ms\":%lld}\n", name,
	    (long long)wall_ms());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "open %s: %s", tmp, strerror(errno));
		return -1;
	}
	errno = 0;
	if (write(fd, text, (size_t)n) != n || fsync(fd) < 0) {
		snprintf(err, errlen, "write %s: %s", tmp, errno ? strerror(errno) : "short write");
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		snprintf(err, errlen, "close %s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (fsync_path(dir) < 0) {
		snprintf(err, errlen, "fsync %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}

int control_pause_remove(const char *spool_dir, const char *name, char *err, size_t errlen)
{
	char dir[4096], path[4400];

	snprintf(dir, sizeof(dir), "%s/%s", spool_dir, PAUSED_DIR);
	snprintf(path, sizeof(path), "%s/%s.json", dir, name);
	if (unlink(path) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "unlink %s: %s", path, strerror(errno));
		return -1;
	}
	if (fsync_path(dir) < 0) {
		snprintf(err, errlen, "fsync %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

bool control_pause_saved(const char *spool_dir, const char *name)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/%s/%s.json", spool_dir, PAUSED_DIR, name);
	return access(path, F_OK) == 0;
}
