/*
 * topics: the metadata cache. Any publisher can name unknown topics; the
 * cache must keep caching (LRU among unknown names) and never forget a
 * topic that exists.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "topics.h"

static void name_of(char *buf, size_t len, const char *prefix, int i)
{
	snprintf(buf, len, "%s-%d", prefix, i);
}

/* Far more unknown names than the bound: the newest are cached, known topics stay. */
static void test_unknown_names_are_evicted_lru(void **state)
{
	struct topic_cache *c = topic_cache_new(TOPICS_MAX_UNKNOWN);
	char name[64];
	size_t unknown;
	int parts = 0;

	(void)state;
	for (int i = 0; i < 10; i++) {
		name_of(name, sizeof(name), "known", i);
		assert_int_equal(topic_cache_put(c, name, TOPIC_EXISTS, 3, 0), 1);
	}
	for (int i = 0; i < 3 * TOPICS_MAX_UNKNOWN; i++) {
		name_of(name, sizeof(name), "junk", i);
		assert_int_equal(topic_cache_put(c, name, TOPIC_MISSING, 0, 0), 0);
	}
	assert_int_equal(topic_cache_size(c, &unknown), 10 + TOPICS_MAX_UNKNOWN);
	assert_int_equal(unknown, TOPICS_MAX_UNKNOWN);
	for (int i = 0; i < 10; i++) {
		name_of(name, sizeof(name), "known", i);
		assert_int_equal(topic_cache_get(c, name, 1, &parts), TOPIC_EXISTS);
		assert_int_equal(parts, 3);
	}
	/* The newest unknown names are cached; the oldest were evicted. */
	name_of(name, sizeof(name), "junk", 3 * TOPICS_MAX_UNKNOWN - 1);
	assert_int_equal(topic_cache_get(c, name, 1, &parts), TOPIC_MISSING);
	name_of(name, sizeof(name), "junk", 0);
	assert_int_equal(topic_cache_get(c, name, 1, &parts), TOPIC_UNKNOWN);

	/* A topic created after the flood is still cached (it used to be refused). */
	assert_int_equal(topic_cache_put(c, "late", TOPIC_EXISTS, 1, 0), 1);
	assert_int_equal(topic_cache_get(c, "late", 1, &parts), TOPIC_EXISTS);
	topic_cache_free(c);
}

/* Least recently used, not least recently added: a name in use stays. */
static void test_lookup_keeps_a_name(void **state)
{
	struct topic_cache *c = topic_cache_new(4);
	int parts;

	(void)state;
	topic_cache_put(c, "a", TOPIC_MISSING, 0, 0);
	topic_cache_put(c, "b", TOPIC_MISSING, 0, 0);
	topic_cache_put(c, "c", TOPIC_MISSING, 0, 0);
	topic_cache_put(c, "d", TOPIC_MISSING, 0, 0);
	assert_int_equal(topic_cache_get(c, "a", 1, &parts), TOPIC_MISSING);
	topic_cache_put(c, "e", TOPIC_MISSING, 0, 0); /* evicts b, not a */
	assert_int_equal(topic_cache_get(c, "a", 1, &parts), TOPIC_MISSING);
	assert_int_equal(topic_cache_get(c, "b", 1, &parts), TOPIC_UNKNOWN);
	assert_int_equal(topic_cache_get(c, "e", 1, &parts), TOPIC_MISSING);
	topic_cache_free(c);
}

/* States move both ways; the unknown count follows; no answer changes nothing. */
static void test_states(void **state)
{
	struct topic_cache *c = topic_cache_new(2);
	size_t unknown;
	int parts;

	(void)state;
	assert_int_equal(topic_cache_put(c, "t", TOPIC_MISSING, 0, 0), 0);
	assert_int_equal(topic_cache_put(c, "t", TOPIC_EXISTS, 2, 0), 1);
	assert_int_equal(topic_cache_put(c, "t", TOPIC_EXISTS, 4, 0), 0); /* warned once */
	topic_cache_size(c, &unknown);
	assert_int_equal(unknown, 0);
	assert_int_equal(topic_cache_put(c, "t", TOPIC_UNREACHABLE, 0, 0), 0);
	assert_int_equal(topic_cache_get(c, "t", 1, &parts), TOPIC_EXISTS);
	assert_int_equal(parts, 4);
	/* Deleted: unknown again, and asked again once the missing TTL passed. */
	topic_cache_put(c, "t", TOPIC_MISSING, 0, 0);
	topic_cache_size(c, &unknown);
	assert_int_equal(unknown, 1);
	assert_int_equal(topic_cache_get(c, "t", 1, &parts), TOPIC_MISSING);
	assert_int_equal(topic_cache_get(c, "t", 60000, &parts), TOPIC_UNKNOWN);
	/* Known topics count against no bound; unknown ones stay at 2. */
	for (int i = 0; i < 50; i++) {
		char name[32];
		snprintf(name, sizeof(name), "k%d", i);
		topic_cache_put(c, name, TOPIC_EXISTS, 1, 0);
		snprintf(name, sizeof(name), "u%d", i);
		topic_cache_put(c, name, TOPIC_MISSING, 0, 0);
	}
	assert_int_equal(topic_cache_size(c, &unknown), 52);
	assert_int_equal(unknown, 2);
	topic_cache_free(c);
}

/*
 * A known topic is asked about again at most once per TOPICS_RECHECK_MS (a
 * request names a partition beyond its count); names that are not known
 * topics never are (they have their own missing TTL).
 */
static void test_recheck_is_rate_limited(void **state)
{
	struct topic_cache *c = topic_cache_new(4);
	int parts;

	(void)state;
	assert_false(topic_cache_recheck(c, "nobody", 5000));
	topic_cache_put(c, "gone", TOPIC_MISSING, 0, 1000);
	assert_false(topic_cache_recheck(c, "gone", 5000));
	topic_cache_put(c, "t", TOPIC_EXISTS, 2, 1000);
	assert_false(topic_cache_recheck(c, "t", 1000 + TOPICS_RECHECK_MS - 1));
	assert_true(topic_cache_recheck(c, "t", 1000 + TOPICS_RECHECK_MS));
	/* One question at a time, however long Kafka takes to answer. */
	assert_false(topic_cache_recheck(c, "t", 1000 + 5 * TOPICS_RECHECK_MS));
	/* No answer (Kafka unreachable) ends it too; then it counts from the claim. */
	topic_cache_put(c, "t", TOPIC_UNREACHABLE, 0, 1000 + TOPICS_RECHECK_MS + 1);
	assert_false(topic_cache_recheck(c, "t", 1000 + 2 * TOPICS_RECHECK_MS - 1));
	assert_true(topic_cache_recheck(c, "t", 1000 + 2 * TOPICS_RECHECK_MS));
	/* Kafka's answer (partitions added) is what the cache then holds. */
	topic_cache_put(c, "t", TOPIC_EXISTS, 3, 1000 + 2 * TOPICS_RECHECK_MS + 5);
	assert_int_equal(topic_cache_get(c, "t", 1000 + 2 * TOPICS_RECHECK_MS + 6, &parts),
	    TOPIC_EXISTS);
	assert_int_equal(parts, 3);
	assert_false(topic_cache_recheck(c, "t", 1000 + 3 * TOPICS_RECHECK_MS));
	topic_cache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unknown_names_are_evicted_lru),
		cmocka_unit_test(test_lookup_keeps_a_name),
		cmocka_unit_test(test_states),
		cmocka_unit_test(test_recheck_is_rate_limited),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
