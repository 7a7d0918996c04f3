/*
 * test_spool_crash: the crash-state explorer. Each workload runs the real
 * spool (fsync = always) on a directory under /dev/shm with crashfs recording
 * every file-system call; then, for every point k of the trace, each disk
 * state a power loss there could leave (crashfs.h, docs/durability.md) is
 * written to a directory, recovered with spool_open() and read to the end
 * with spool_next(), and checked against what the workload knows:
 *
 *   - recovery opens, within 2 s and 64 MiB of heap;
 *   - every record whose done callback reported success before k is handed
 *     out, unless it was acknowledged before k, or moved to failed/ (then it
 *     is in a failed/ log);
 *   - every record handed out is, field by field, a message that was
 *     submitted, under a sequence the spool wrote that message with (an
 *     original or a copy-forward copy), whole, before k;
 *   - sequences ascend, and a message comes out twice only when a copy of it
 *     was written before k (copy-forward: a duplicate, never a loss).
 *
 * Environment: ACKD_CRASH_LONG=1 explores more states per point (every tear
 * point, one op left out of a prefix, random combinations);
 * ACKD_CRASH_WORKLOAD=name and ACKD_CRASH_K=k narrow a run to one workload
 * or one point; ACKD_CRASH_TRACE=1 prints the trace up to a violation. The
 * first violating state of each workload is kept under
 * /tmp/ackd-crash-<workload>-<k>.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "crashfs.h"
#include "log.h"
#include "spool.h"
#include "spool_oracle.h"

#define MAX_MSGS 512
#define OPEN_MAX_MS 2000
#define OPEN_MAX_HEAP (64u << 20)
#define REPORT_MAX 8

/* What the workload knows about message n (the index is n % ORACLE_EVIL). */
struct msg {
	bool used;
	uint32_t n;
	uint64_t seq;     /* from the done callback */
	size_t commit_op; /* ops recorded when the callback reported success; SIZE_MAX never */
	size_t ack_op;    /* ops recorded before spool_ack(); SIZE_MAX never */
	size_t fail_op;   /* ops recorded before spool_fail(); SIZE_MAX never */
	int kb;           /* its keyed batch (index into wl.kbs), or -1 */
};

/* A batch written with an Idempotency-Key ("k<first n>-<count>"). */
#define MAX_KBS 256
struct kbatch {
	uint32_t first_n;
	size_t count;
	bool loaded; /* the state being checked: recovery handed its KEY record to on_key */
};

struct wl {
	const char *name;
	char base[64], rec[96], state[96];
	struct spool_opts o;
	struct spool *sp;
	uint32_t next_n;
	struct msg msgs[MAX_MSGS];
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending;
	struct kbatch kbs[MAX_KBS];
	size_t nkbs;
	long keys_loaded; /* over all states checked */
	/* Exploration. */
	struct oracle_wrec *w;
	size_t nw, wcap;
	size_t npre; /* w[0..npre): records on disk before the trace began */
	long states, violations;
	bool kept;
	bool quiet; /* the self-test: count violations, print none */
	bool nested; /* one of several explorations: no summary line of its own */
};

static bool env_on(const char *name)
{
	const char *v = getenv(name);
	return v && *v && strcmp(v, "0") != 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct msg *msg_of(struct wl *w, uint32_t n)
{
	struct msg *m = &w->msgs[(n % ORACLE_EVIL) % MAX_MSGS];
	return m->used && m->n == n ? m : NULL;
}

/* --- driving the spool while recording -------------------------------------------- */

struct batch {
	struct wl *w;
	uint32_t first_n;
	size_t count;
};

static void batch_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct batch *b = arg;
	struct wl *w = b->w;
	size_t ops = crashfs_nops();

	pthread_mutex_lock(&w->mu);
	for (size_t i = 0; i < b->count; i++) {
		struct msg *m = msg_of(w, b->first_n + (uint32_t)i);
		if (err == SPOOL_OK) {
			m->seq = first_seq + i;
			m->commit_op = ops;
		}
	}
	w->pending--;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	free(b);
}

/* The id a keyed batch's KEY record names for message n. */
static void key_id(uint32_t n, char out[SPOOL_KEY_ID_LEN + 1])
{
	snprintf(out, SPOOL_KEY_ID_LEN + 1, "%026u", n);
}

/* End sb (messages first_n..first_n+count-1) with its KEY record, and note the batch. */
static void add_key(struct wl *w, struct spool_batch *sb, uint32_t first_n, size_t count)
{
	char key[32], ids[8 * SPOOL_KEY_ID_LEN + 1];
	struct timespec now;
	struct spool_key k = { .nrecs = (uint32_t)count,
		.scope = "unix", .scope_len = 4, .topic = "t", .topic_len = 1 };

	assert_true(count <= 8 && w->nkbs < MAX_KBS);
	clock_gettime(CLOCK_REALTIME, &now); /* unexpired: the keys file keeps it */
	k.timestamp_ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
	snprintf(key, sizeof(key), "k%u-%zu", first_n, count);
	for (size_t i = 0; i < count; i++)
		key_id(first_n + (uint32_t)i, ids + i * SPOOL_KEY_ID_LEN);
	k.key = key;
	k.key_len = strlen(key);
	k.ids = ids;
	memset(k.hash, 0x5a, sizeof(k.hash));
	assert_int_equal(spool_batch_add_key(sb, &k), 0);
	for (size_t i = 0; i < count; i++)
		msg_of(w, first_n + (uint32_t)i)->kb = (int)w->nkbs;
	w->kbs[w->nkbs++] = (struct kbatch){ first_n, count, false };
}

static void submit_keyed(struct wl *w, int nb, const int *sizes, bool evil_last, unsigned keyed);

/* Submit nb batches of sizes[i] messages at once (one group commit or more), wait for all. */
static void submit(struct wl *w, int nb, const int *sizes, bool evil_last)
{
	submit_keyed(w, nb, sizes, evil_last, 0);
}

/* The same; batch i ends with a KEY record when bit i of keyed is set. */
static void submit_keyed(struct wl *w, int nb, const int *sizes, bool evil_last, unsigned keyed)
{
	for (int i = 0; i < nb; i++) {
		struct batch *b = calloc(1, sizeof(*b));
		struct spool_batch *sb = spool_batch_new((size_t)sizes[i]);
		assert_non_null(b);
		assert_non_null(sb);
		b->w = w;
		b->first_n = w->next_n;
		b->count = (size_t)sizes[i];
		for (int j = 0; j < sizes[i]; j++) {
			uint32_t n = w->next_n++;
			if (evil_last && i == nb - 1 && j == sizes[i] - 1) {
				n = ORACLE_EVIL + n;
				b->first_n = n - (uint32_t)j; /* a batch holding only it */
				assert_int_equal(sizes[i], 1);
			}
			assert_true(n % ORACLE_EVIL < MAX_MSGS);
			w->msgs[(n % ORACLE_EVIL) % MAX_MSGS] = (struct msg){ true, n, 0, SIZE_MAX,
				SIZE_MAX, SIZE_MAX, -1 };
			assert_int_equal(oracle_add(sb, n), 0);
		}
		if (keyed >> i & 1)
			add_key(w, sb, b->first_n, b->count);
		pthread_mutex_lock(&w->mu);
		w->pending++;
		pthread_mutex_unlock(&w->mu);
		assert_int_equal(spool_submit(w->sp, sb, batch_done, b), SPOOL_OK);
	}
	pthread_mutex_lock(&w->mu);
	while (w->pending)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

static void w_open(struct wl *w)
{
	char err[256] = "";

	if (spool_open(&w->o, &w->sp, err, sizeof(err)) < 0)
		fail_msg("%s: spool_open: %s", w->name, err);
}

static void w_close(struct wl *w)
{
	spool_close(w->sp);
	w->sp = NULL;
}

/* Hand out everything: the sequences and message numbers, in order. */
static size_t w_drain(struct wl *w, uint64_t *seqs, uint32_t *ns, size_t max)
{
	uint64_t cursor = 0;
	struct spool_rec *r;
	size_t n = 0;

	while (spool_next(w->sp, &cursor, &r) == 1) {
		char why[160];
		assert_true(n < max);
		seqs[n] = r->seq;
		if (oracle_check(&r->msg, &ns[n], why, sizeof(why)) < 0)
			fail_msg("%s: while recording: %s", w->name, why);
		n++;
		spool_rec_free(r);
	}
	return n;
}

static void w_ack(struct wl *w, uint64_t seq, uint32_t n)
{
	struct msg *m = msg_of(w, n);

	m->ack_op = crashfs_nops();
	spool_ack(w->sp, seq);
}

static void w_fail(struct wl *w, uint64_t seq, uint32_t n)
{
	struct msg *m = msg_of(w, n);

	m->fail_op = crashfs_nops();
	assert_int_equal(spool_fail(w->sp, seq, "rejected by the test"), SPOOL_FAIL_FILED);
}

static void w_setup(struct wl *w, const char *name, uint64_t segment_bytes)
{
	char err[256];

	memset(w, 0, sizeof(*w));
	w->name = name;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	snprintf(w->base, sizeof(w->base), "/dev/shm/ackd-crash.XXXXXX");
	if (!mkdtemp(w->base)) {
		snprintf(w->base, sizeof(w->base), "/tmp/ackd-crash.XXXXXX");
		assert_non_null(mkdtemp(w->base));
	}
	snprintf(w->rec, sizeof(w->rec), "%s/rec", w->base);
	snprintf(w->state, sizeof(w->state), "%s/state", w->base);
	assert_int_equal(mkdir(w->rec, 0750), 0);
	w->o = (struct spool_opts){ .dir = w->rec, .fsync = CONF_FSYNC_ALWAYS, .fsync_interval_ms = 50,
		.segment_bytes = segment_bytes };
	if (crashfs_start(w->rec, err, sizeof(err)) < 0)
		fail_msg("%s", err);
}

/* --- checking one state --------------------------------------------------------------- */

static void violation(struct wl *w, size_t k, const char *desc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void violation(struct wl *w, size_t k, const char *desc, const char *fmt, ...)
{
	va_list ap;

	w->violations++;
	if (w->quiet || w->violations > REPORT_MAX)
		return;
	fprintf(stderr, "VIOLATION workload=%s k=%zu state=[%s]: ", w->name, k, desc);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* Keep the first violating state for a look (its recovered form). */
static void keep_state(struct wl *w, size_t k)
{
	char cmd[512];

	if (w->kept || w->quiet)
		return;
	w->kept = true;
	snprintf(cmd, sizeof(cmd), "rm -rf /tmp/ackd-crash-%s-%zu && cp -a %s /tmp/ackd-crash-%s-%zu",
	    w->name, k, w->state, w->name, k);
	if (system(cmd) == 0)
		fprintf(stderr, "  state kept in /tmp/ackd-crash-%s-%zu\n", w->name, k);
	if (env_on("ACKD_CRASH_TRACE"))
		crashfs_dump(k);
}

static bool written_as(const struct wl *w, uint64_t seq, uint32_t n, size_t k)
{
	for (size_t i = 0; i < w->nw; i++)
		if (w->w[i].seq == seq && w->w[i].n == n && (i < w->npre || w->w[i].op < k))
			return true;
	return false;
}

static bool copy_written(const struct wl *w, uint32_t n, size_t k)
{
	for (size_t i = 0; i < w->nw; i++)
		if (w->w[i].n == n && w->w[i].copy && (i < w->npre || w->w[i].op < k))
			return true;
	return false;
}

/* Messages in the failed/ logs of dir, counted into failed[]. */
static void read_failed(struct wl *w, size_t k, const char *desc, int *failed)
{
	struct spool_ro *ro = NULL;
	const struct spool_ro_file *files;
	char err[256];
	size_t nf;

	if (spool_ro_open(w->state, &ro, err, sizeof(err)) < 0) {
		violation(w, k, desc, "after recovery the spool cannot be read: %s", err);
		return;
	}
	nf = spool_ro_failed(ro, &files);
	for (size_t i = 0; i < nf; i++) {
		struct spool_ro_iter *it;
		struct spool_ro_item item;
		if (spool_ro_iter_new(ro, &files[i], 0, &it) < 0)
			continue;
		while (spool_ro_iter_next(it, &item) == 1) {
			uint32_t n;
			char why[160];
			if (item.kind != SPOOL_RO_RECORD)
				continue;
			if (oracle_check_as(&item.rec->msg, true, &n, why, sizeof(why)) < 0)
				violation(w, k, desc, "failed/ holds a record that was not submitted: %s", why);
			else if (n % ORACLE_EVIL < MAX_MSGS)
				failed[n % ORACLE_EVIL]++;
		}
		spool_ro_iter_free(it);
	}
	spool_ro_free(ro);
}

/* spool_open() of a state: a KEY record it read back. */
static void on_key_seen(void *arg, uint64_t seq, const struct spool_key *key)
{
	struct wl *w = arg;
	char name[32];

	(void)seq;
	for (size_t i = 0; i < w->nkbs; i++) {
		struct kbatch *kb = &w->kbs[i];
		char id[SPOOL_KEY_ID_LEN + 1];
		snprintf(name, sizeof(name), "k%u-%zu", kb->first_n, kb->count);
		if (key->key_len != strlen(name) || memcmp(key->key, name, key->key_len) != 0)
			continue;
		if (key->nrecs != kb->count)
			return; /* not believed: checked as missing below */
		for (size_t j = 0; j < kb->count; j++) {
			key_id(kb->first_n + (uint32_t)j, id);
			if (memcmp(key->ids + j * SPOOL_KEY_ID_LEN, id, SPOOL_KEY_ID_LEN) != 0)
				return;
		}
		kb->loaded = true;
		w->keys_loaded++;
		return;
	}
}

/*
 * The keys of a state: a KEY record comes back exactly when its batch's
 * records do. Every message of a loaded key is handed out (or was
 * acknowledged before k, or failed); every handed-out message of a keyed
 * batch has its key; a keyed batch committed before k has its key, in its
 * segment or, once that was deleted, in the keys file.
 */
static void check_keys(struct wl *w, size_t k, const char *desc, const int *seen,
    const int *failed)
{
	for (size_t i = 0; i < w->nkbs; i++) {
		const struct kbatch *kb = &w->kbs[i];
		bool committed = true, live = false;
		for (size_t j = 0; j < kb->count; j++) {
			const struct msg *m = msg_of(w, kb->first_n + (uint32_t)j);
			uint32_t idx = (kb->first_n + (uint32_t)j) % ORACLE_EVIL;
			committed &= m->commit_op <= k;
			live |= m->ack_op > k && failed[idx] == 0;
			if (kb->loaded && seen[idx] == 0 && m->ack_op > k && failed[idx] == 0)
				violation(w, k, desc, "key k%u-%zu came back without its message %u",
				    kb->first_n, kb->count, m->n);
			if (!kb->loaded && seen[idx] > 0)
				violation(w, k, desc, "message %u came back without its key k%u-%zu", m->n,
				    kb->first_n, kb->count);
		}
		/* Acknowledged or not: once its segment goes, the keys file has it. */
		(void)live;
		if (committed && !kb->loaded)
			violation(w, k, desc, "key k%u-%zu, committed, lost", kb->first_n, kb->count);
	}
}

static void check_state(void *arg, size_t k, const char *dir, const char *desc)
{
	struct wl *w = arg;
	struct spool_opts o = w->o;
	struct spool *sp = NULL;
	struct spool_rec *r;
	char err[256] = "";
	int seen[MAX_MSGS] = { 0 }, failed[MAX_MSGS] = { 0 };
	uint64_t cursor = 0, last = 0;
	struct mallinfo2 m0, m1;
	int64_t t0 = now_ms();
	long before = w->violations;

	w->states++;
	o.dir = dir;
	for (size_t i = 0; i < w->nkbs; i++)
		w->kbs[i].loaded = false;
	if (w->nkbs) {
		o.on_key = on_key_seen;
		o.on_key_arg = w;
	}
	m0 = mallinfo2();
	if (spool_open(&o, &sp, err, sizeof(err)) < 0) {
		violation(w, k, desc, "recovery failed: %s", err);
		keep_state(w, k);
		return;
	}
	m1 = mallinfo2();
	if (m1.uordblks + m1.hblkhd > m0.uordblks + m0.hblkhd + OPEN_MAX_HEAP)
		violation(w, k, desc, "recovery holds %zu MiB of heap",
		    (m1.uordblks + m1.hblkhd - m0.uordblks - m0.hblkhd) >> 20);
	for (int round = 0; round < 2; round++) {
		while (spool_next(sp, &cursor, &r) == 1) {
			uint32_t n;
			char why[160];
			if (r->seq <= last)
				violation(w, k, desc, "sequence %" PRIu64 " handed out after %" PRIu64, r->seq,
				    last);
			last = r->seq;
			if (oracle_check(&r->msg, &n, why, sizeof(why)) < 0)
				violation(w, k, desc, "sequence %" PRIu64 " is not a submitted message: %s",
				    r->seq, why);
			else if (!written_as(w, r->seq, n, k))
				violation(w, k, desc, "message %u handed out as sequence %" PRIu64
				    ", which was never written with it", n, r->seq);
			else
				seen[n % ORACLE_EVIL]++;
			spool_rec_free(r);
		}
		spool_maintain(sp);
	}
	spool_close(sp);
	if (now_ms() - t0 > OPEN_MAX_MS)
		violation(w, k, desc, "recovery and reading took %" PRId64 " ms", now_ms() - t0);
	read_failed(w, k, desc, failed);

	for (uint32_t i = 0; i < MAX_MSGS; i++) {
		const struct msg *m = &w->msgs[i];
		if (!m->used)
			continue;
		if (m->commit_op <= k && seen[i] == 0 && m->ack_op > k && failed[i] == 0)
			violation(w, k, desc, "message %u (sequence %" PRIu64 ", committed at op %zu) lost",
			    m->n, m->seq, m->commit_op);
		if (seen[i] > 1 && !copy_written(w, m->n, k))
			violation(w, k, desc, "message %u handed out %d times without a copy", m->n,
			    seen[i]);
	}
	check_keys(w, k, desc, seen, failed);
	if (w->violations > before)
		keep_state(w, k);
}

/* Explore every point of the recorded trace. */
static void explore(struct wl *w)
{
	bool long_run = env_on("ACKD_CRASH_LONG");
	const char *only_k = getenv("ACKD_CRASH_K");
	size_t nops = crashfs_nops(), from = 0, to = nops;
	int64_t t0 = now_ms();

	crashfs_stop();
	w->nw = w->npre;
	oracle_index(0, nops, &w->w, &w->nw, &w->wcap);
	if (only_k && *only_k) {
		from = (size_t)strtoull(only_k, NULL, 10);
		to = from;
	}
	for (size_t k = from; k <= to && k <= nops; k++)
		if (crashfs_explore(k, long_run, 0x5eed + k, w->state, check_state, w) < 0)
			fail_msg("%s: cannot write states to %s", w->name, w->state);
	if (w->nested)
		return;
	printf("crash explorer: workload %s: %zu operations, %ld states checked, %ld violations, "
	       "%.1f s%s\n",
	    w->name, nops, w->states, w->violations, (double)(now_ms() - t0) / 1000.0,
	    long_run ? " (long)" : "");
	fflush(stdout);
}

static void finish(struct wl *w)
{
	long v = w->violations;

	crashfs_stop();
	crashfs_reset();
	crashfs_rmtree(w->base);
	free(w->w);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
	if (v)
		fail_msg("%s: %ld violations", w->name, v);
}

static bool selected(const char *name)
{
	const char *only = getenv("ACKD_CRASH_WORKLOAD");
	return !only || !*only || strcmp(only, name) == 0;
}

/* --- workloads -------------------------------------------------------------------------- */

/* Several batches queued together, committed by one write and one fdatasync or a few. */
static void wl_group(void **state)
{
	struct wl *w = *state;
	static const int sizes[][3] = { { 1, 2, 3 }, { 4, 1, 1 }, { 2, 2, 2 }, { 1, 5, 1 }, { 3, 1, 2 } };

	w_setup(w, "group", 0);
	w_open(w);
	for (size_t i = 0; i < 16 * sizeof(sizes) / sizeof(sizes[0]); i++)
		submit(w, 3, sizes[i % (sizeof(sizes) / sizeof(sizes[0]))], false);
	w_close(w);
	explore(w);
	finish(w);
}

/* Segment rolls, out-of-order acks, ack files, deletion, close and reopen. */
static void wl_roll(void **state)
{
	struct wl *w = *state;
	uint64_t seqs[MAX_MSGS];
	uint32_t ns[MAX_MSGS];
	size_t n;
	int three[] = { 3 }, two[] = { 2 };

	w_setup(w, "roll", 2048);
	w_open(w);
	for (int i = 0; i < 60; i++)
		submit(w, 1, three, false);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	for (size_t i = n * 2 / 3; i-- > 0;) /* backwards: out of order */
		if (i % 5 != 2)
			w_ack(w, seqs[i], ns[i]);
	spool_maintain(w->sp);
	for (int i = 0; i < 10; i++)
		submit(w, 1, two, false);
	w_close(w);
	w_open(w);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	for (size_t i = 0; i < n; i += 2)
		w_ack(w, seqs[i], ns[i]);
	spool_maintain(w->sp);
	submit(w, 1, two, false);
	w_close(w);
	explore(w);
	finish(w);
}

static off_t size_of(const char *dir, const char *name)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return stat(path, &st) < 0 ? -1 : st.st_size;
}

/* Copy-forward of an old segment's stragglers, an ack and a fail through the copy. */
static void wl_copy(void **state)
{
	struct wl *w = *state;
	uint64_t seqs[MAX_MSGS], first_end = 0;
	uint32_t ns[MAX_MSGS];
	size_t n, keep[2] = { 0, 0 }, nkeep = 0;
	int four[] = { 4 };

	w_setup(w, "copy", 8192);
	w_open(w);
	for (int i = 0; i < 48; i++)
		submit(w, 1, four, false);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	/* The first segment: records below the first record of the second one. */
	for (size_t i = 0; i < n && !first_end; i++)
		if (size_of(w->rec, "seg-00000000000000000001.spool") >= 0 && seqs[i] > 1) {
			char name[64];
			snprintf(name, sizeof(name), "seg-%020" PRIu64 ".spool", seqs[i]);
			if (size_of(w->rec, name) >= 0)
				first_end = seqs[i];
		}
	assert_true(first_end > 3);
	for (size_t i = 0; i < n; i++) {
		if (seqs[i] < first_end && nkeep < 2 && (seqs[i] == 1 || seqs[i] == first_end - 1))
			keep[nkeep++] = i;
		else
			w_ack(w, seqs[i], ns[i]);
	}
	assert_int_equal(nkeep, 2);
	spool_maintain(w->sp); /* starts the copy */
	for (int64_t end = now_ms() + 5000;
	     size_of(w->rec, "seg-00000000000000000001.spool") >= 0 && now_ms() < end;) {
		spool_maintain(w->sp);
		usleep(1000);
	}
	assert_true(size_of(w->rec, "seg-00000000000000000001.spool") < 0);
	w_ack(w, seqs[keep[0]], ns[keep[0]]); /* through the copy's sequence */
	w_fail(w, seqs[keep[1]], ns[keep[1]]);
	spool_maintain(w->sp);
	w_close(w);
	w_open(w);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	w_close(w);
	explore(w);
	finish(w);
}

/* failed/, a producer rebuild (rewind) and reading again, reopen. */
static void wl_fail_rewind(void **state)
{
	struct wl *w = *state;
	uint64_t seqs[MAX_MSGS];
	uint32_t ns[MAX_MSGS];
	size_t n;
	int sizes[] = { 2, 3 };

	w_setup(w, "fail-rewind", 2048);
	w_open(w);
	for (int i = 0; i < 30; i++)
		submit(w, 2, sizes, false);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	assert_true(n > 6);
	w_fail(w, seqs[1], ns[1]);
	w_fail(w, seqs[n - 2], ns[n - 2]);
	spool_rewind(w->sp);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	for (size_t i = 0; i + 1 < n; i++)
		w_ack(w, seqs[i], ns[i]);
	spool_maintain(w->sp);
	w_close(w);
	w_open(w);
	submit(w, 1, sizes, false);
	w_close(w);
	explore(w);
	finish(w);
}

/*
 * A message whose value holds a complete valid record (topic "evil",
 * sequence 2^40), written last and torn by the crash: recovery must cut the
 * torn record, never hand out the one inside it (issue 8, defect 3).
 */
static void wl_torn_embedded(void **state)
{
	struct wl *w = *state;
	int sizes[] = { 2, 1 }, one[] = { 1 };

	w_setup(w, "torn-embedded", 0);
	w_open(w);
	submit(w, 1, sizes, false);
	submit(w, 1, one, true);
	w_close(w);
	explore(w);
	finish(w);
}

/*
 * The explorer must be able to fail: the same group commits recorded as if
 * the spool never called fdatasync must show committed records lost.
 */
static void selftest_no_fsync(void **state)
{
	struct wl *w = *state;
	int sizes[] = { 1, 2, 3 };

	w_setup(w, "selftest-no-fsync", 0);
	w->quiet = true;
	crashfs_drop_syncs(1);
	w_open(w);
	for (int i = 0; i < 4; i++)
		submit(w, 3, sizes, false);
	w_close(w);
	crashfs_drop_syncs(0);
	explore(w);
	assert_true(w->violations > 0);
	w->violations = 0;
	finish(w);
}

/* --- crashes during recovery ------------------------------------------------------------ */

#define DAMAGED_MAX 12

struct collect {
	struct wl *w;
	int n;
};

/* Keep a copy of each torn state (crashfs_explore's visitor). */
static void collect_torn(void *arg, size_t k, const char *dir, const char *desc)
{
	struct collect *c = arg;
	char cmd[512];

	(void)k;
	if (c->n >= DAMAGED_MAX || !strstr(desc, "torn"))
		return;
	snprintf(cmd, sizeof(cmd), "cp -a %s %s/damaged-%d", dir, c->w->base, c->n);
	assert_int_equal(system(cmd), 0);
	c->n++;
}

/*
 * What a damaged spool holds, read by a recovery of a copy: those messages
 * count as committed from the start, under the sequences they have there.
 */
static void baseline(struct wl *w, const char *damaged)
{
	char cmd[512], copy[128], err[256];
	struct spool_opts o = w->o;
	struct spool *sp;
	struct spool_rec *r;
	uint64_t cursor = 0;

	for (uint32_t i = 0; i < MAX_MSGS; i++)
		w->msgs[i].used = false;
	w->nw = w->npre = 0;
	snprintf(copy, sizeof(copy), "%s/baseline", w->base);
	snprintf(cmd, sizeof(cmd), "rm -rf %s && cp -a %s %s", copy, damaged, copy);
	assert_int_equal(system(cmd), 0);
	o.dir = copy;
	if (spool_open(&o, &sp, err, sizeof(err)) < 0)
		fail_msg("%s: recovering %s: %s", w->name, damaged, err);
	while (spool_next(sp, &cursor, &r) == 1) {
		uint32_t n;
		char why[160];
		if (oracle_check(&r->msg, &n, why, sizeof(why)) < 0)
			fail_msg("%s: %s: %s", w->name, damaged, why);
		w->msgs[n % MAX_MSGS] = (struct msg){ true, n, r->seq, 0, SIZE_MAX, SIZE_MAX, -1 };
		if (w->nw == w->wcap) {
			w->wcap = w->wcap ? w->wcap * 2 : 256;
			w->w = realloc(w->w, w->wcap * sizeof(*w->w));
			assert_non_null(w->w);
		}
		w->w[w->nw++] = (struct oracle_wrec){ r->seq, n, false, 0 };
		spool_rec_free(r);
	}
	spool_close(sp);
	w->npre = w->nw;
}

/*
 * Power loss in the middle of group commits leaves torn tails; recovery
 * cuts them (truncate, fdatasync), creates a segment, and the spool goes on.
 * Each torn state is recovered while recording, used (read, acks, a batch,
 * maintenance, close), and every crash state of that trace is checked: a
 * crash during recovery, or after it, loses nothing and invents nothing.
 */
static void wl_recover_torn(void **state)
{
	struct wl *w = *state;
	struct collect c = { w, 0 };
	static const int sizes[] = { 2, 3, 2 };
	int two[] = { 2 };
	size_t nops, marks[4], nmarks = 0;
	long states = 0, violations = 0;
	char err[256];

	w_setup(w, "recover-torn", 4096);
	w_open(w);
	for (int i = 0; i < 12; i++)
		submit(w, 3, sizes, false);
	w_close(w);
	crashfs_stop();
	/* Points just after the last group writes, before their fdatasync. */
	nops = crashfs_nops();
	for (size_t i = nops; i-- > 0 && nmarks < 4;) {
		struct crashfs_op op;
		assert_true(crashfs_op(i, &op));
		if (op.type == CFS_WRITE && op.len > 512 && strncmp(op.path, "seg-", 4) == 0)
			marks[nmarks++] = i + 1;
	}
	for (size_t i = 0; i < nmarks; i++)
		assert_true(crashfs_explore(marks[i], 0, 1, w->state, collect_torn, &c) >= 0);
	assert_true(c.n > 0);

	for (int d = 0; d < c.n; d++) {
		char damaged[128], rec[128], cmd[512];
		uint64_t seqs[MAX_MSGS];
		uint32_t ns[MAX_MSGS];
		size_t n;

		snprintf(damaged, sizeof(damaged), "%s/damaged-%d", w->base, d);
		baseline(w, damaged);
		snprintf(rec, sizeof(rec), "%s/rec-%d", w->base, d);
		snprintf(cmd, sizeof(cmd), "cp -a %s %s", damaged, rec);
		assert_int_equal(system(cmd), 0);
		w->o.dir = rec;
		if (crashfs_start(rec, err, sizeof(err)) < 0)
			fail_msg("%s", err);
		w_open(w);
		n = w_drain(w, seqs, ns, MAX_MSGS);
		for (size_t i = 0; i < n; i += 3)
			w_ack(w, seqs[i], ns[i]);
		spool_maintain(w->sp);
		submit(w, 1, two, false);
		w_close(w);
		w->states = w->violations = 0;
		w->nested = true;
		explore(w);
		states += w->states;
		violations += w->violations;
	}
	printf("crash explorer: workload recover-torn: %d torn states recovered, %ld states checked, "
	       "%ld violations\n", c.n, states, violations);
	fflush(stdout);
	w->violations = violations;
	finish(w);
}

/*
 * Idempotency-Keys: group commits mixing batches with and without a KEY
 * record, 2 KiB segments (rolls, seals), out-of-order acks, deletion of
 * finished segments, close, reopen, more keyed batches.
 */
static void wl_keys(void **state)
{
	struct wl *w = *state;
	uint64_t seqs[MAX_MSGS];
	uint32_t ns[MAX_MSGS];
	static const int sizes[][3] = { { 1, 2, 3 }, { 4, 1, 1 }, { 2, 2, 2 }, { 1, 3, 1 } };
	size_t n;

	w_setup(w, "keys", 2048);
	w->o.key_ttl_ms = 86400000;
	w_open(w);
	for (unsigned i = 0; i < 24; i++)
		submit_keyed(w, 3, sizes[i % 4], false, (i % 7) + 1);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	for (size_t i = n / 2; i-- > 0;) /* backwards: out of order */
		if (i % 4 != 1)
			w_ack(w, seqs[i], ns[i]);
	spool_maintain(w->sp);
	w_close(w);
	w_open(w);
	for (unsigned i = 0; i < 8; i++)
		submit_keyed(w, 3, sizes[i % 4], false, 5);
	n = w_drain(w, seqs, ns, MAX_MSGS);
	for (size_t i = 0; i < n; i += 3)
		w_ack(w, seqs[i], ns[i]);
	spool_maintain(w->sp);
	w_close(w);
	explore(w);
	if (!w->keys_loaded)
		fail_msg("keys: no state loaded a key: the check checked nothing");
	finish(w);
}

/* When the writer asked for a spare, wait until it is ready, so that the roll finds it. */
static void wait_spare(struct wl *w)
{
	struct spool_stats st;

	for (int64_t end = now_ms() + 10000;; usleep(1000)) {
		spool_stats(w->sp, &st);
		if (!st.spare_wanted)
			return;
		if (now_ms() > end)
			fail_msg("%s: no spare segment after 10 s", w->name);
	}
}

/*
 * prealloc: segments begun in zero-filled spares, records written over the
 * zeros (a crash leaves zeros after the last record, or a record torn
 * among them), messages whose values hold forged records, keyed batches,
 * acks, close and reopen.
 */
static void wl_spare(void **state)
{
	struct wl *w = *state;
	uint64_t seqs[MAX_MSGS];
	uint32_t ns[MAX_MSGS];
	static const int sizes[][3] = { { 1, 2, 1 }, { 3, 1, 1 }, { 1, 1, 1 } };
	struct spool_stats st;
	size_t n;

	w_setup(w, "spare", 2048);
	w->o.prealloc = true;
	w->o.key_ttl_ms = 86400000;
	w_open(w);
	for (unsigned i = 0; i < 30; i++) {
		wait_spare(w);
		submit_keyed(w, 3, sizes[i % 3], i % 4 == 3, i % 5 == 0 ? 2 : 0);
	}
	n = w_drain(w, seqs, ns, MAX_MSGS);
	for (size_t i = n / 2; i-- > 0;)
		if (i % 3 != 1)
			w_ack(w, seqs[i], ns[i]);
	spool_maintain(w->sp);
	spool_stats(w->sp, &st);
	if (st.spares_used < 3)
		fail_msg("spare: %" PRIu64 " segments begun in a spare: the workload tests nothing",
		    st.spares_used);
	w_close(w);
	w_open(w);
	for (unsigned i = 0; i < 8; i++) {
		wait_spare(w);
		submit(w, 3, sizes[i % 3], i % 4 == 1);
	}
	w_close(w);
	explore(w);
	finish(w);
}

struct workload {
	const char *name;
	void (*fn)(void **state);
};

static const struct workload workloads[] = {
	{ "group", wl_group },
	{ "roll", wl_roll },
	{ "copy", wl_copy },
	{ "fail-rewind", wl_fail_rewind },
	{ "torn-embedded", wl_torn_embedded },
	{ "recover-torn", wl_recover_torn },
	{ "keys", wl_keys },
	{ "spare", wl_spare },
	{ "selftest-no-fsync", selftest_no_fsync },
};

static int wl_alloc(void **state)
{
	*state = calloc(1, sizeof(struct wl));
	return *state ? 0 : -1;
}

/* Also after a failed assertion: nothing is left under /dev/shm. */
static int wl_free(void **state)
{
	struct wl *w = *state;

	crashfs_stop();
	crashfs_reset();
	if (w->base[0])
		crashfs_rmtree(w->base);
	free(w);
	return 0;
}

int main(void)
{
	struct CMUnitTest tests[sizeof(workloads) / sizeof(workloads[0])];
	size_t n = 0;

	log_set_level(LOG_LVL_ERR);
	for (size_t i = 0; i < sizeof(workloads) / sizeof(workloads[0]); i++) {
		const struct workload *wl = &workloads[i];
		if (!selected(wl->name))
			continue;
		tests[n++] = (struct CMUnitTest){ wl->name, wl->fn, wl_alloc, wl_free, NULL };
	}
	return _cmocka_run_group_tests("spool_crash", tests, n, NULL, NULL);
}
