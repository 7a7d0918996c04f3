/*
 * fuzz_conf: conf_load() on arbitrary configuration text.
 *
 * The input is written to ackd.conf in a scratch directory and loaded. Any
 * text must give either a configuration (no errors, every string set, each
 * subscription equal to itself, conf_diff() against the defaults walks it)
 * or -1 with at least one error, each "file:line: message" with a non-empty
 * message. Inputs naming @include or a librdkafka plugin are skipped: they
 * would read files or load libraries beyond the scratch file, which is not
 * what this target is about. Sanitizers catch the rest.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "fuzz_util.h"

#define T "fuzz_conf"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static char dir[256];
static char path[300];

static void cleanup(void)
{
	if (dir[0] != '\0')
		(void)fuzz_rmrf(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_quiet();
	if (fuzz_tmpdir(dir, sizeof(dir)) < 0) {
		perror(T ": scratch directory");
		abort();
	}
	snprintf(path, sizeof(path), "%s/ackd.conf", dir);
	atexit(cleanup);
	return 0;
}

/* Whether text names s, ignoring case. */
static int names(const uint8_t *text, size_t len, const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i + n <= len; i++)
		if (!strncasecmp((const char *)text + i, s, n))
			return 1;
	return 0;
}

static void count_key(const char *key, void *arg)
{
	fuzz_check(key != NULL && key[0] != '\0', T, "conf_diff names an empty key");
	(*(size_t *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct conf_errors errs = { NULL, 0 };
	struct conf *c = NULL, *def;
	size_t ndiff = 0;
	int rc;

	if (dir[0] == '\0')
		LLVMFuzzerInitialize(NULL, NULL);
	if (names(data, size, "@include") || names(data, size, "plugin"))
		return 0;
	fuzz_check(fuzz_write_file(dir, "ackd.conf", data, size) == 0, T, "cannot write the file");
	rc = conf_load(path, &c, &errs);
	if (rc != 0) {
		fuzz_check(rc == -1 && c == NULL, T, "failure with a configuration");
		fuzz_check(errs.n > 0, T, "failure without an error");
		for (size_t i = 0; i < errs.n; i++)
			fuzz_check(errs.v[i] != NULL && strstr(errs.v[i], ": ") != NULL &&
				       strstr(errs.v[i], ": ")[2] != '\0',
			    T, "error not \"file:line: message\"");
		conf_errors_fini(&errs);
		return 0;
	}
	fuzz_check(c != NULL && errs.n == 0, T, "success with errors or without a configuration");
	fuzz_check(c->path && c->listen.http && c->listen.unix_path && c->listen.unix_group &&
		       c->kafka.brokers && c->spool.dir && c->log.level,
	    T, "a string left unset");
	fuzz_check(c->kafka.brokers[0] != '\0', T, "loaded without brokers");
	for (size_t i = 0; i < c->nsubs; i++) {
		const struct conf_sub *s = &c->subs[i];
		fuzz_check(s->name && s->group && s->url && s->unix_socket && s->dead_letter_topic, T,
		    "a subscription string left unset");
		fuzz_check(conf_sub_equal(s, s), T, "subscription not equal to itself");
	}
	for (size_t i = 0; i < c->auth.ntokens; i++)
		fuzz_check(c->auth.tokens[i].token != NULL, T, "token left unset");
	def = conf_defaults(c->kafka.brokers);
	fuzz_check(def != NULL, T, "conf_defaults failed");
	conf_diff(c, def, count_key, &ndiff);
	ndiff = 0;
	conf_diff(c, c, count_key, &ndiff);
	fuzz_check(ndiff == 0, T, "a configuration differs from itself");
	conf_free(def);
	conf_free(c);
	return 0;
}
