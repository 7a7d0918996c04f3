/*
 * test_offsets: the committable offset under out-of-order completion,
 * checked step by step against a plain reference model.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "offsets.h"

static void test_empty(void **state)
{
	struct offsets *o = offsets_new(42);

	(void)state;
	assert_int_equal(offsets_committable(o), 42);
	assert_int_equal(offsets_pending(o), 0);
	assert_int_equal(offsets_done(o, 42), -1);
	assert_int_equal(offsets_done(o, 41), -1);
	assert_int_equal(offsets_committable(o), 42);
	offsets_free(o);
	offsets_free(NULL);
}

static void test_in_order(void **state)
{
	struct offsets *o = offsets_new(0);

	(void)state;
	for (int64_t i = 0; i < 1000; i++) {
		assert_int_equal(offsets_add(o, i), 0);
		assert_int_equal(offsets_committable(o), i);
		assert_int_equal(offsets_pending(o), 1);
		assert_int_equal(offsets_done(o, i), 0);
		assert_int_equal(offsets_committable(o), i + 1);
		assert_int_equal(offsets_pending(o), 0);
	}
	offsets_free(o);
}

static void test_reverse(void **state)
{
	struct offsets *o = offsets_new(100);

	(void)state;
	for (int64_t i = 100; i < 1100; i++)
		assert_int_equal(offsets_add(o, i), 0);
	assert_int_equal(offsets_pending(o), 1000);
	for (int64_t i = 1099; i > 100; i--) {
		assert_int_equal(offsets_done(o, i), 0);
		assert_int_equal(offsets_committable(o), 100);
	}
	assert_int_equal(offsets_pending(o), 1);
	assert_int_equal(offsets_done(o, 100), 0);
	assert_int_equal(offsets_committable(o), 1100);
	assert_int_equal(offsets_pending(o), 0);
	offsets_free(o);
}

/* Compacted topics: offsets skip, and the skipped ones never hold anything back. */
static void test_gaps(void **state)
{
	struct offsets *o = offsets_new(0);

	(void)state;
	assert_int_equal(offsets_add(o, 5), 0);
	assert_int_equal(offsets_committable(o), 5);
	assert_int_equal(offsets_add(o, 9), 0);
	assert_int_equal(offsets_done(o, 5), 0);
	assert_int_equal(offsets_committable(o), 9);
	assert_int_equal(offsets_done(o, 9), 0);
	assert_int_equal(offsets_committable(o), 10);

	/* Out of order across a gap of a billion. */
	assert_int_equal(offsets_add(o, 20), 0);
	assert_int_equal(offsets_add(o, 1000000020), 0);
	assert_int_equal(offsets_add(o, 1000000021), 0);
	assert_int_equal(offsets_done(o, 1000000020), 0);
	assert_int_equal(offsets_committable(o), 20);
	assert_int_equal(offsets_done(o, 20), 0);
	assert_int_equal(offsets_committable(o), 1000000021);
	assert_int_equal(offsets_done(o, 1000000021), 0);
	assert_int_equal(offsets_committable(o), 1000000022);
	offsets_free(o);
}

static void test_misuse(void **state)
{
	struct offsets *o = offsets_new(10);

	(void)state;
	/* Below start, repeated, or decreasing adds change nothing. */
	assert_int_equal(offsets_add(o, 9), -1);
	assert_int_equal(offsets_add(o, 12), 0);
	assert_int_equal(offsets_add(o, 12), -1);
	assert_int_equal(offsets_add(o, 11), -1);
	assert_int_equal(offsets_add(o, INT64_MAX), -1);
	assert_int_equal(offsets_add(o, 15), 0);
	assert_int_equal(offsets_pending(o), 2);
	assert_int_equal(offsets_committable(o), 12);

	/* Unknown offsets: below start, in a gap, beyond the last add. */
	assert_int_equal(offsets_done(o, 10), -1);
	assert_int_equal(offsets_done(o, 13), -1);
	assert_int_equal(offsets_done(o, 16), -1);
	assert_int_equal(offsets_done(o, -1), -1);
	assert_int_equal(offsets_pending(o), 2);

	/* Done twice: the second is refused, both ahead of and at the head. */
	assert_int_equal(offsets_done(o, 15), 0);
	assert_int_equal(offsets_done(o, 15), -1);
	assert_int_equal(offsets_pending(o), 1);
	assert_int_equal(offsets_committable(o), 12);
	assert_int_equal(offsets_done(o, 12), 0);
	assert_int_equal(offsets_done(o, 12), -1);
	assert_int_equal(offsets_pending(o), 0);
	assert_int_equal(offsets_committable(o), 16);
	offsets_free(o);
}

/* --- against a reference model ------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(2685821657736338717);
}

enum ref_state { REF_PENDING, REF_DONE };

/* Every added offset in order, with its state; the answer by a linear scan. */
struct ref {
	int64_t start;
	int64_t *offs;
	enum ref_state *st;
	size_t n;
	size_t pending;
};

static int64_t ref_committable(const struct ref *r)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->st[i] == REF_PENDING)
			return r->offs[i];
	return r->n > 0 ? r->offs[r->n - 1] + 1 : r->start;
}

static void check(const struct offsets *o, const struct ref *r)
{
	assert_int_equal(offsets_committable(o), ref_committable(r));
	assert_int_equal(offsets_pending(o), r->pending);
}

/* n offsets from start, mostly consecutive, sometimes skipping a few or very many. */
static int64_t *make_offsets(int64_t start, size_t n)
{
	int64_t *offs = malloc(n * sizeof(*offs));
	int64_t next = start;

	assert_non_null(offs);
	for (size_t i = 0; i < n; i++) {
		uint64_t x = rng() % 100;

		if (x >= 90)
			next += (int64_t)(x - 88);
		else if (x == 0)
			next += 1000000000;
		offs[i] = next++;
	}
	return offs;
}

static void shuffle(size_t *a, size_t n)
{
	for (size_t i = n; i > 1; i--) {
		size_t j = (size_t)(rng() % i), t = a[i - 1];

		a[i - 1] = a[j];
		a[j] = t;
	}
}

#define N 10000

/* Add all N, then complete them in a random order. */
static void run_add_all_then_done(uint64_t seed)
{
	struct ref r = { .start = 7 };
	struct offsets *o = offsets_new(r.start);
	size_t *order = malloc(N * sizeof(*order));

	rng_state = seed;
	r.offs = make_offsets(r.start + (int64_t)(rng() % 3), N);
	r.st = malloc(N * sizeof(*r.st));
	assert_non_null(order);
	assert_non_null(r.st);
	check(o, &r);
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(offsets_add(o, r.offs[i]), 0);
		r.st[r.n++] = REF_PENDING;
		r.pending++;
		check(o, &r);
		order[i] = i;
	}
	shuffle(order, N);
	for (size_t k = 0; k < N; k++) {
		size_t i = order[k];

		assert_int_equal(offsets_done(o, r.offs[i]), 0);
		r.st[i] = REF_DONE;
		r.pending--;
		check(o, &r);
		/* Again: refused, nothing changes. */
		if (k % 7 == 0) {
			assert_int_equal(offsets_done(o, r.offs[i]), -1);
			check(o, &r);
		}
	}
	assert_int_equal(offsets_committable(o), r.offs[N - 1] + 1);
	offsets_free(o);
	free(order);
	free(r.offs);
	free(r.st);
}

/*
 * Adds and completions interleaved at random, so the ring wraps and grows
 * with its head anywhere; now and then an offset that is not pending.
 */
static void run_interleaved(uint64_t seed)
{
	struct ref r = { .start = 0 };
	struct offsets *o = offsets_new(r.start);
	size_t *pend = malloc(N * sizeof(*pend)); /* indexes of pending offsets */
	size_t npend = 0;

	rng_state = seed;
	r.offs = make_offsets(r.start, N);
	r.st = malloc(N * sizeof(*r.st));
	assert_non_null(pend);
	assert_non_null(r.st);
	while (r.n < N || npend > 0) {
		uint64_t x = rng() % 100;

		/* Lean toward adding early, so many are pending at once. */
		if (r.n < N && (npend == 0 || x < (r.n < N / 2 ? 70u : 40u))) {
			assert_int_equal(offsets_add(o, r.offs[r.n]), 0);
			pend[npend++] = r.n;
			r.st[r.n++] = REF_PENDING;
			r.pending++;
		} else if (x < 95) {
			size_t k = (size_t)(rng() % npend), i = pend[k];

			assert_int_equal(offsets_done(o, r.offs[i]), 0);
			pend[k] = pend[--npend];
			r.st[i] = REF_DONE;
			r.pending--;
		} else if (r.n > 0) {
			/* A completed offset, or one in a gap: refused. */
			size_t i = (size_t)(rng() % r.n);

			if (r.st[i] == REF_DONE)
				assert_int_equal(offsets_done(o, r.offs[i]), -1);
			if (i + 1 < r.n && r.offs[i + 1] > r.offs[i] + 1)
				assert_int_equal(offsets_done(o, r.offs[i] + 1), -1);
			assert_int_equal(offsets_done(o, r.offs[r.n - 1] + 1), -1);
		}
		check(o, &r);
	}
	assert_int_equal(offsets_committable(o), r.offs[N - 1] + 1);
	offsets_free(o);
	free(pend);
	free(r.offs);
	free(r.st);
}

static void test_random_permutations(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 3; seed++)
		run_add_all_then_done(seed * UINT64_C(0x9e3779b97f4a7c15));
}

static void test_random_interleaved(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 3; seed++)
		run_interleaved(seed * UINT64_C(0xbf58476d1ce4e5b9));
}

/* n messages from 0 added, the first done ones completed. */
static struct offsets *fetched(int64_t n, int64_t done)
{
	struct offsets *o = offsets_new(0);

	for (int64_t i = 0; i < n; i++)
		assert_int_equal(offsets_add(o, i), 0);
	for (int64_t i = 0; i < done; i++)
		assert_int_equal(offsets_done(o, i), 0);
	return o;
}

/* The log was cut at 80 while 60-99 were pending: 60-79 still hold the commit. */
static void test_truncate(void **state)
{
	struct offsets *o = fetched(101, 60);

	(void)state;
	assert_int_equal(offsets_done(o, 90), 0);
	assert_int_equal(offsets_committable(o), 60);
	assert_int_equal(offsets_pending(o), 40);

	assert_int_equal(offsets_truncate(o, 80), 0);
	assert_int_equal(offsets_committable(o), 60);
	assert_int_equal(offsets_next(o), 80);
	assert_int_equal(offsets_pending(o), 20);
	/* What was added at 80 or later no longer is. */
	assert_int_equal(offsets_done(o, 80), -1);
	assert_int_equal(offsets_done(o, 99), -1);
	assert_int_equal(offsets_add(o, 79), -1);
	assert_int_equal(offsets_add(o, 80), 0);
	assert_int_equal(offsets_add(o, 81), 0);
	for (int64_t i = 79; i >= 61; i--) {
		assert_int_equal(offsets_done(o, i), 0);
		assert_int_equal(offsets_committable(o), 60);
	}
	assert_int_equal(offsets_done(o, 60), 0);
	assert_int_equal(offsets_committable(o), 80);
	assert_int_equal(offsets_done(o, 81), 0);
	assert_int_equal(offsets_done(o, 80), 0);
	assert_int_equal(offsets_committable(o), 82);
	assert_int_equal(offsets_pending(o), 0);
	offsets_free(o);
}

static void test_truncate_edges(void **state)
{
	struct offsets *o = fetched(101, 60);

	(void)state;
	/* Below the committable offset (a reset's case) or past next: refused. */
	assert_int_equal(offsets_truncate(o, 59), -1);
	assert_int_equal(offsets_truncate(o, 0), -1);
	assert_int_equal(offsets_truncate(o, 102), -1);
	assert_int_equal(offsets_committable(o), 60);
	assert_int_equal(offsets_next(o), 101);
	assert_int_equal(offsets_pending(o), 41);
	/* At next: nothing to drop. */
	assert_int_equal(offsets_truncate(o, 101), 0);
	assert_int_equal(offsets_next(o), 101);
	assert_int_equal(offsets_pending(o), 41);
	assert_int_equal(offsets_done(o, 100), 0);
	/* At the committable offset: everything pending goes. */
	assert_int_equal(offsets_truncate(o, 60), 0);
	assert_int_equal(offsets_committable(o), 60);
	assert_int_equal(offsets_next(o), 60);
	assert_int_equal(offsets_pending(o), 0);
	assert_int_equal(offsets_done(o, 60), -1);
	offsets_free(o);

	/* Nothing added: the committable offset is next, and only next is allowed. */
	o = offsets_new(42);
	assert_int_equal(offsets_truncate(o, 41), -1);
	assert_int_equal(offsets_truncate(o, 43), -1);
	assert_int_equal(offsets_truncate(o, 42), 0);
	assert_int_equal(offsets_committable(o), 42);
	offsets_free(o);

	/* A wrapped ring, cut inside a gap. */
	o = offsets_new(0);
	for (int64_t i = 0; i < 100; i++)
		assert_int_equal(offsets_add(o, i), 0);
	for (int64_t i = 0; i < 90; i++)
		assert_int_equal(offsets_done(o, i), 0);
	for (int64_t i = 200; i < 300; i += 2)
		assert_int_equal(offsets_add(o, i), 0);
	assert_int_equal(offsets_truncate(o, 251), 0);
	assert_int_equal(offsets_pending(o), 10 + 26);
	assert_int_equal(offsets_done(o, 252), -1);
	assert_int_equal(offsets_add(o, 251), 0);
	for (int64_t i = 90; i < 100; i++)
		assert_int_equal(offsets_done(o, i), 0);
	assert_int_equal(offsets_committable(o), 200);
	for (int64_t i = 200; i <= 250; i += 2)
		assert_int_equal(offsets_done(o, i), 0);
	assert_int_equal(offsets_committable(o), 251);
	offsets_free(o);
}

/*
 * Adds, completions and cuts at random against the reference model; after a
 * cut the model's next offset is where the cut was, not one past its last.
 */
static int64_t ref_committable_cut(const struct ref *r, int64_t next)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->st[i] == REF_PENDING)
			return r->offs[i];
	return next;
}

static void run_with_truncations(uint64_t seed)
{
	struct ref r = { .start = 0 };
	struct offsets *o = offsets_new(0);
	int64_t next = 0;
	int cuts = 0;

	rng_state = seed;
	r.offs = malloc(N * sizeof(*r.offs));
	r.st = malloc(N * sizeof(*r.st));
	assert_non_null(r.offs);
	assert_non_null(r.st);
	for (int step = 0; step < 4 * N; step++) {
		uint64_t x = rng() % 100;

		if (x < 55 && r.n < N) {
			int64_t at = next + (int64_t)(rng() % 3);

			assert_int_equal(offsets_add(o, at), 0);
			r.offs[r.n] = at;
			r.st[r.n++] = REF_PENDING;
			r.pending++;
			next = at + 1;
		} else if (x < 98 && r.n > 0) {
			size_t i = (size_t)(rng() % r.n);

			assert_int_equal(offsets_done(o, r.offs[i]), r.st[i] == REF_PENDING ? 0 : -1);
			if (r.st[i] == REF_PENDING)
				r.pending--;
			r.st[i] = REF_DONE;
		} else {
			/* Below the committable offset: refused; from it up to next: cut. */
			int64_t from = ref_committable_cut(&r, next);
			int64_t at = from + (int64_t)(rng() % (uint64_t)(next - from + 1));

			if (from > 0)
				assert_int_equal(offsets_truncate(o, from - 1), -1);
			assert_int_equal(offsets_truncate(o, at), 0);
			while (r.n > 0 && r.offs[r.n - 1] >= at)
				if (r.st[--r.n] == REF_PENDING)
					r.pending--;
			next = at;
			cuts++;
		}
		assert_int_equal(offsets_committable(o), ref_committable_cut(&r, next));
		assert_int_equal(offsets_pending(o), r.pending);
		assert_int_equal(offsets_next(o), next);
	}
	assert_true(cuts > 100);
	offsets_free(o);
	free(r.offs);
	free(r.st);
}

static void test_random_truncations(void **state)
{
	(void)state;
	for (uint64_t seed = 1; seed <= 3; seed++)
		run_with_truncations(seed * UINT64_C(0x94d049bb133111eb));
}

/*
 * The decision on a fetched record, in the case that lost messages: 0-100
 * fetched, below 60 completed, 60-100 pending, and the log now has another
 * record at 80. 60-79 must still hold the commit back.
 */
static void test_classify(void **state)
{
	struct offsets *o = fetched(101, 60);

	(void)state;
	/* At or past next: new, whatever the caller found. */
	assert_int_equal(offsets_classify(o, 101, false), OFFSETS_NEW);
	assert_int_equal(offsets_classify(o, 101, true), OFFSETS_NEW);
	assert_int_equal(offsets_classify(o, 5000, false), OFFSETS_NEW);
	/* From the committable offset up to next: the same record, or a cut log. */
	assert_int_equal(offsets_classify(o, 60, true), OFFSETS_REFETCH);
	assert_int_equal(offsets_classify(o, 80, true), OFFSETS_REFETCH);
	assert_int_equal(offsets_classify(o, 100, true), OFFSETS_REFETCH);
	assert_int_equal(offsets_classify(o, 60, false), OFFSETS_TRUNCATE);
	assert_int_equal(offsets_classify(o, 80, false), OFFSETS_TRUNCATE);
	assert_int_equal(offsets_classify(o, 100, false), OFFSETS_TRUNCATE);
	/* Below what completed: the log went back under everything. */
	assert_int_equal(offsets_classify(o, 59, false), OFFSETS_RESET);
	assert_int_equal(offsets_classify(o, 59, true), OFFSETS_RESET);
	assert_int_equal(offsets_classify(o, 0, false), OFFSETS_RESET);

	/* Acting on it: the commit stays at 60 until 60-79 complete. */
	assert_int_equal(offsets_truncate(o, 80), 0);
	assert_int_equal(offsets_add(o, 80), 0);
	assert_int_equal(offsets_done(o, 80), 0);
	assert_int_equal(offsets_committable(o), 60);
	for (int64_t i = 60; i < 80; i++)
		assert_int_equal(offsets_done(o, i), 0);
	assert_int_equal(offsets_committable(o), 81);
	offsets_free(o);

	/* Nothing added yet. */
	o = offsets_new(42);
	assert_int_equal(offsets_classify(o, 42, false), OFFSETS_NEW);
	assert_int_equal(offsets_classify(o, 41, true), OFFSETS_RESET);
	offsets_free(o);
}

/* The log went back (topic recreated): tracking starts again below where it was. */
static void test_reset(void **state)
{
	struct offsets *o = offsets_new(100);

	(void)state;
	for (int64_t i = 100; i < 105; i++)
		assert_int_equal(offsets_add(o, i), 0);
	assert_int_equal(offsets_done(o, 100), 0);
	assert_int_equal(offsets_done(o, 102), 0);
	assert_int_equal(offsets_committable(o), 101);
	/* Below what was added: refused until reset. */
	assert_int_equal(offsets_add(o, 0), -1);

	offsets_reset(o, 0);
	assert_int_equal(offsets_committable(o), 0);
	assert_int_equal(offsets_pending(o), 0);
	/* What was pending before the reset no longer is. */
	assert_int_equal(offsets_done(o, 101), -1);
	assert_int_equal(offsets_add(o, 0), 0);
	assert_int_equal(offsets_add(o, 1), 0);
	assert_int_equal(offsets_add(o, 101), 0);
	assert_int_equal(offsets_committable(o), 0);
	assert_int_equal(offsets_done(o, 1), 0);
	assert_int_equal(offsets_done(o, 0), 0);
	assert_int_equal(offsets_committable(o), 101);
	assert_int_equal(offsets_done(o, 101), 0);
	assert_int_equal(offsets_committable(o), 102);
	assert_int_equal(offsets_pending(o), 0);

	/* A reset with a full, wrapped ring. */
	for (int64_t i = 200; i < 400; i++)
		assert_int_equal(offsets_add(o, i), 0);
	for (int64_t i = 200; i < 350; i++)
		assert_int_equal(offsets_done(o, i), 0);
	offsets_reset(o, 5);
	for (int64_t i = 5; i < 300; i++)
		assert_int_equal(offsets_add(o, i), 0);
	assert_int_equal(offsets_pending(o), 295);
	assert_int_equal(offsets_committable(o), 5);
	offsets_free(o);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_in_order),
		cmocka_unit_test(test_reverse),
		cmocka_unit_test(test_gaps),
		cmocka_unit_test(test_misuse),
		cmocka_unit_test(test_random_permutations),
		cmocka_unit_test(test_random_interleaved),
		cmocka_unit_test(test_reset),
		cmocka_unit_test(test_truncate),
		cmocka_unit_test(test_truncate_edges),
		cmocka_unit_test(test_random_truncations),
		cmocka_unit_test(test_classify),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
