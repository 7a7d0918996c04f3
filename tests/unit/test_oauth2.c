/*
 * oauth2: the token endpoint's answer and when a token is replaced. The
 * fetch itself is tested end to end in tests/integration/test_webhook_auth.py.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "oauth2.h"

static int parse(const char *body, char **tok, int64_t *exp)
{
	char err[256];
	return oauth2_parse(body, strlen(body), tok, exp, err, sizeof(err));
}

static void test_parse_answer(void **state)
{
	char *tok;
	int64_t exp;

	(void)state;
	assert_int_equal(parse("{\"access_token\":\"abc.DEF-1\",\"token_type\":\"Bearer\","
	    "\"expires_in\":3600}", &tok, &exp), 0);
	assert_string_equal(tok, "abc.DEF-1");
	assert_int_equal(exp, 3600);
	free(tok);
	/* token_type in any case; expires_in may be missing, or a real */
	assert_int_equal(parse("{\"access_token\":\"t\",\"token_type\":\"bearer\"}", &tok, &exp), 0);
	assert_int_equal(exp, -1);
	free(tok);
	assert_int_equal(parse("{\"access_token\":\"t\",\"expires_in\":59.5}", &tok, &exp), 0);
	assert_int_equal(exp, 59);
	free(tok);
}

static void test_parse_refuses(void **state)
{
	static const char *const bad[] = {
		"", "[]", "not json", "{}", "{\"access_token\":\"\"}", "{\"access_token\":7}",
		"{\"access_token\":\"a b\"}",              /* cannot stand in a header */
		"{\"access_token\":\"a\\r\\nX: 1\"}",      /* header injection */
		"{\"access_token\":\"a\",\"token_type\":\"mac\"}",
		"{\"access_token\":\"a\",\"expires_in\":\"soon\"}",
		"{\"access_token\":\"a\",\"expires_in\":-5}",
	};
	char *tok;
	int64_t exp;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(bad[i], &tok, &exp), -1);
		assert_null(tok);
	}
}

static void test_refresh_at(void **state)
{
	(void)state;
	/* a tenth of the lifetime early, at least 5 s, at most 60 s */
	assert_int_equal(oauth2_refresh_at(1000000, 300), 1000000 + 300000 - 30000);
	assert_int_equal(oauth2_refresh_at(1000000, 3600), 1000000 + 3600000 - 60000);
	assert_int_equal(oauth2_refresh_at(1000000, 20), 1000000 + 20000 - 5000);
	/* shorter than the margin: already due, fetched for every use */
	assert_true(oauth2_refresh_at(1000000, 2) <= 1000000);
	assert_int_equal(oauth2_refresh_at(1000000, -1), INT64_MAX);
	assert_int_equal(oauth2_refresh_at(1000000, INT64_MAX / 10), INT64_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_answer),
		cmocka_unit_test(test_parse_refuses),
		cmocka_unit_test(test_refresh_at),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
