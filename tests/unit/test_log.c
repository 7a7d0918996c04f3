/*
 * log: what a log line may never hold. Lines go to stderr, which the test
 * points at a temporary file and reads back.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Run fn with stderr captured; returns what it wrote (free it). */
static char *captured(void (*fn)(void))
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	char *text;
	long n;

	assert_non_null(f);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fileno(f), STDERR_FILENO), STDERR_FILENO);
	fn();
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	n = ftell(f);
	assert_true(n >= 0);
	text = calloc(1, (size_t)n + 1);
	rewind(f);
	assert_int_equal(fread(text, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return text;
}

static void log_some(void)
{
	log_warnx("sasl.password=hunter2-pw; again hunter2-pw.");
	log_info("url http://u:pw-in-url@h/?token=tok-0123 and short abc");
	log_debug("not at this level: hunter2-pw");
}

static void long_line(void)
{
	char big[5000];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big + 4060, "hunter2-pw", 10);
	log_warnx("%s", big);
}

static void test_hidden_values_never_reach_a_line(void **state)
{
	char *text;

	(void)state;
	log_set_level(LOG_LVL_INFO);
	log_hide("hunter2-pw");
	log_hide("pw-in-url");
	log_hide("tok-0123");
	log_hide("abc"); /* too short: ignored, or every "abc" would go */
	log_hide("hunter2-pw");
	text = captured(log_some);
	assert_string_equal(text,
	    "ackd: warn: sasl.password=(hidden); again (hidden).\n"
	    "ackd: info: url http://u:(hidden)@h/?token=(hidden) and short abc\n");
	free(text);

	/* Near the end of the longest line: cut rather than kept. */
	text = captured(long_line);
	assert_null(strstr(text, "hunter2"));
	assert_true(strlen(text) <= 4096);
	assert_int_equal(text[strlen(text) - 1], '\n');
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hidden_values_never_reach_a_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
