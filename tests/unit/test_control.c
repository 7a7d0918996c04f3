/*
 * test_control: the Control API's request bodies (every form of a seek and
 * each way a body can be wrong, named by its field), the pause files, and
 * the headers a redriven dead letter is republished with.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "control.h"
#include "redrive.h"
#include "spool.h"

static int seek(const char *body, struct control_cmd **out, char *err, size_t errlen)
{
	*out = control_cmd_new(CONTROL_SEEK);
	return control_parse_seek(body, strlen(body), *out, err, errlen);
}

static void test_seek_forms(void **state)
{
	struct control_cmd *cmd;
	char err[256];

	(void)state;
	assert_int_equal(seek("{\"to\":\"earliest\"}", &cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->to, SEEK_EARLIEST);
	control_cmd_free(cmd);
	assert_int_equal(seek("{\"to\":\"latest\"}", &cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->to, SEEK_LATEST);
	control_cmd_free(cmd);
	assert_int_equal(seek("{\"timestamp_ms\":1733240000000}", &cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->to, SEEK_TIMESTAMP);
	assert_int_equal(cmd->timestamp_ms, 1733240000000);
	control_cmd_free(cmd);
	assert_int_equal(seek("{\"offsets\":[{\"topic\":\"a\",\"partition\":0,\"offset\":5},"
	    "{\"topic\":\"a\",\"partition\":2147483647,\"offset\":0}]}", &cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->to, SEEK_OFFSETS);
	assert_int_equal(cmd->noffsets, 2);
	assert_string_equal(cmd->offsets[0].topic, "a");
	assert_int_equal(cmd->offsets[0].offset, 5);
	assert_int_equal(cmd->offsets[1].partition, 2147483647);
	control_cmd_free(cmd);
}

static void test_seek_errors_name_the_field(void **state)
{
	static const struct {
		const char *body, *starts;
	} cases[] = {
		{ "", "the body is not JSON" },
		{ "[1]", "the body must be a JSON object" },
		{ "{}", "give exactly one" },
		{ "{\"to\":\"latest\",\"timestamp_ms\":1}", "give exactly one" },
		{ "{\"to\":\"middle\"}", "to:" },
		{ "{\"to\":1}", "to:" },
		{ "{\"timestamp_ms\":-1}", "timestamp_ms:" },
		{ "{\"timestamp_ms\":1.5}", "timestamp_ms:" },
		{ "{\"timestamp_ms\":\"now\"}", "timestamp_ms:" },
		{ "{\"offsets\":[]}", "offsets:" },
		{ "{\"offsets\":{}}", "offsets:" },
		{ "{\"offsets\":[1]}", "offsets[0]:" },
		{ "{\"offsets\":[{\"partition\":0,\"offset\":0}]}", "offsets[0].topic:" },
		{ "{\"offsets\":[{\"topic\":\"\",\"partition\":0,\"offset\":0}]}", "offsets[0].topic:" },
		{ "{\"offsets\":[{\"topic\":\"a\",\"partition\":-1,\"offset\":0}]}",
		    "offsets[0].partition:" },
		{ "{\"offsets\":[{\"topic\":\"a\",\"partition\":2147483648,\"offset\":0}]}",
		    "offsets[0].partition:" },
		{ "{\"offsets\":[{\"topic\":\"a\",\"partition\":0,\"offset\":-2}]}",
		    "offsets[0].offset:" },
		{ "{\"offsets\":[{\"topic\":\"a\",\"partition\":0,\"offset\":0,\"x\":1}]}",
		    "offsets[0].x:" },
		{ "{\"offsets\":[{\"topic\":\"a\",\"partition\":0,\"offset\":0},"
		    "{\"topic\":\"a\",\"partition\":0,\"offset\":1}]}", "offsets[1]:" },
		{ "{\"when\":1}", "when:" },
		{ "{\"to\":\"latest\",\"to\":\"earliest\"}", "the body is not JSON" },
	};
	struct control_cmd *cmd;
	char err[256];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		if (seek(cases[i].body, &cmd, err, sizeof(err)) == 0)
			fail_msg("accepted: %s", cases[i].body);
		if (strncmp(err, cases[i].starts, strlen(cases[i].starts)) != 0)
			fail_msg("%s: error \"%s\" does not start with \"%s\"", cases[i].body, err,
			    cases[i].starts);
		control_cmd_free(cmd);
	}
}

static void test_redrive_body(void **state)
{
	struct control_cmd *cmd = control_cmd_new(CONTROL_REDRIVE);
	char err[256];

	(void)state;
	assert_int_equal(control_parse_redrive("", 0, cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->max, 0);
	assert_int_equal(control_parse_redrive("{}", 2, cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->max, 0);
	assert_int_equal(control_parse_redrive("{\"max\":7}", 9, cmd, err, sizeof(err)), 0);
	assert_int_equal(cmd->max, 7);
	assert_int_equal(control_parse_redrive("{\"max\":0}", 9, cmd, err, sizeof(err)), -1);
	assert_true(strncmp(err, "max:", 4) == 0);
	assert_int_equal(control_parse_redrive("{\"most\":1}", 10, cmd, err, sizeof(err)), -1);
	assert_true(strncmp(err, "most:", 5) == 0);
	assert_int_equal(control_parse_redrive("nope", 4, cmd, err, sizeof(err)), -1);
	control_cmd_free(cmd);
}

static void test_pause_files(void **state)
{
	char dir[] = "/tmp/test_control.XXXXXX", path[256], err[256];
	struct stat st;

	(void)state;
	assert_non_null(mkdtemp(dir));
	assert_false(control_pause_saved(dir, "orders"));
	assert_int_equal(control_pause_save(dir, "orders", err, sizeof(err)), 0);
	assert_true(control_pause_saved(dir, "orders"));
	assert_false(control_pause_saved(dir, "billing"));
	/* Saving again is fine; no temporary file is left behind. */
	assert_int_equal(control_pause_save(dir, "orders", err, sizeof(err)), 0);
	snprintf(path, sizeof(path), "%s/paused/.orders.tmp", dir);
	assert_int_equal(stat(path, &st), -1);
	assert_int_equal(control_pause_remove(dir, "orders", err, sizeof(err)), 0);
	assert_false(control_pause_saved(dir, "orders"));
	assert_int_equal(control_pause_remove(dir, "orders", err, sizeof(err)), 0);
	/* A spool directory that cannot hold the file: an error, not a pause. */
	snprintf(path, sizeof(path), "%s/nothere/deeper", dir);
	assert_int_equal(control_pause_save(path, "orders", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "mkdir"));
	snprintf(path, sizeof(path), "%s/paused", dir);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rmdir(dir), 0);
}

#define H(n, v) { n, sizeof(n) - 1, v, v ? sizeof(v) - 1 : 0 }

static void test_redrive_headers(void **state)
{
	const struct spool_hdr in[] = {
		H("content-type", "text/plain"),
		H("ackd-id", "01JD0000000000000000000000"),
		H("ackd-dlq-reason", "rejected"),
		H("ackd-dlq-source-topic", "orders"),
		H("ackd-dlq-source-partition", "2"),
		H("ackd-redrive-count", "4"),
		H("empty", NULL),
	};
	struct spool_hdr out[9];
	char topic[256], count[24];
	size_t n = 0;
	bool has_id;

	(void)state;
	assert_int_equal(redrive_headers(in, 7, out, &n, topic, sizeof(topic), count,
	    sizeof(count), &has_id), 0);
	assert_string_equal(topic, "orders");
	assert_true(has_id);
	assert_int_equal(n, 4); /* content-type, ackd-id, empty, ackd-redrive-count */
	assert_memory_equal(out[0].name, "content-type", 12);
	assert_memory_equal(out[1].name, "ackd-id", 7);
	assert_memory_equal(out[2].name, "empty", 5);
	assert_null(out[2].value);
	assert_memory_equal(out[3].name, "ackd-redrive-count", 18);
	assert_int_equal(out[3].value_len, 1);
	assert_memory_equal(out[3].value, "5", 1);

	/* A first redrive counts 1; no ackd-id is reported as such. */
	assert_int_equal(redrive_headers(in + 2, 3, out, &n, topic, sizeof(topic), count,
	    sizeof(count), &has_id), 0);
	assert_false(has_id);
	assert_int_equal(n, 1);
	assert_string_equal(count, "1");

	/* No source topic, or one that is no topic name: not a dead letter to redrive. */
	assert_int_equal(redrive_headers(in, 3, out, &n, topic, sizeof(topic), count,
	    sizeof(count), &has_id), -1);
	const struct spool_hdr bad[] = { H("ackd-dlq-source-topic", "a/b") };
	assert_int_equal(redrive_headers(bad, 1, out, &n, topic, sizeof(topic), count,
	    sizeof(count), &has_id), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seek_forms),
		cmocka_unit_test(test_seek_errors_name_the_field),
		cmocka_unit_test(test_redrive_body),
		cmocka_unit_test(test_pause_files),
		cmocka_unit_test(test_redrive_headers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
