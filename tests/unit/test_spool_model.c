/*
 * test_spool_model: seeded random sequences of spool operations checked step
 * by step against a small reference model of what the spool must hold.
 *
 * Each seed draws a spool (segment size, fsync always or never, zero-filled
 * spare segments or not) and a sequence of steps: submit batches of random
 * sizes (several at once: group commit), next, out-of-order ack, fail, get,
 * maintain (ack files, deletion, copy-forward), rewind as a producer rebuild does, close and reopen, a kill
 * (the seam freezes: whatever was written stays, nothing more is), and a
 * power loss (a random crash state of the recorded trace, crashfs.h). The
 * model knows, per message, whether it is committed and unacknowledged (the
 * spool must hand it out once per run, or per rewind), acknowledged (never
 * again in this run; after a kill only if its ack was not yet flushed by
 * spool_maintain() or close; after a power loss it may come back), failed
 * (also in failed/ for good), or maybe there (fsync = never and a power
 * loss: it may come back once, or be gone). Every record handed out must be
 * a message that was submitted, field by field, under a sequence the spool
 * wrote it with (its own, or a copy-forward copy's), and appear at most once
 * per run (or rewind); more often only when a copy of it was written before
 * the spool was last opened (a crash or close between the copy and the
 * deletion of the original leaves both, and both are records from then on).
 * A drain step reads until nothing new comes for a while and checks that
 * every committed, unacknowledged message came out.
 *
 * Reproducible by seed: a failure prints the seed, the step and the last
 * steps of the seed (records handed out, acks, copies written);
 * ACKD_MODEL_SEED=s runs one seed, ACKD_MODEL_VERBOSE=1 prints all its steps.
 * ACKD_MODEL_SEEDS=N runs N seeds (default 1000), ACKD_MODEL_STEPS=N steps
 * per seed (default 150). Thread timing (the writer thread, maintenance
 * every 100 ms inside spool_next()) can still vary between runs of a seed.
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
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

#define MAX_MSGS 4096
#define MAX_OUT 4096
#define DRAIN_QUIET_ROUNDS 2
#define DRAIN_MAX_MS 2000

enum mstate {
	M_NONE,   /* not submitted, or its batch failed */
	M_LIVE,   /* committed, not acknowledged: must come out once per run */
	M_MAYBE,  /* may be in the spool or not: at most once per run */
	M_ACKED,  /* acknowledged (or failed) in this run: never again in it */
	M_GONE,   /* was maybe, a drain did not find it: never again, short of a power loss */
};

struct mmsg {
	enum mstate st;
	uint64_t seq;      /* its own sequence */
	bool ack_flushed;  /* M_ACKED: spool_maintain() or close ran since the ack */
	bool failed;       /* spool_fail() succeeded: in failed/ */
	bool copied;       /* a copy-forward copy of it was written */
	bool copied_before_open; /* before the spool was last opened: both may be there */
	int runs_out;      /* handed out in this run */
	uint64_t acked[4]; /* sequences acknowledged (several records after a copy and a restart) */
	bool acked_flushed[4]; /* that entry was flushed by spool_maintain() or close: a kill keeps it */
	bool acked_synced[4];  /* that entry was synced by a close: a power loss keeps it */
	int nacked;
	bool gone_synced;  /* M_GONE, and a close synced the ack files since: stays gone */
	/* Idempotency-Keys: the batch first..first+kcount-1 ended with a KEY record. */
	uint32_t kfirst;
	uint8_t kcount;      /* 0: no key */
	bool key_loaded;     /* of a batch's first message: the last open read its KEY record */
	bool committed_now;  /* committed since the spool was last opened */
};

struct out {
	uint64_t seq;
	uint32_t n;
};

struct model {
	uint64_t seed, rng;
	int step;
	const char *op;
	bool verbose;
	FILE *log; /* every step, printed when the seed fails (or with ACKD_MODEL_VERBOSE) */
	char *logbuf;
	size_t loglen;
	char base[64], dir[96];
	int gen;
	struct spool_opts o;
	struct spool *sp;
	uint64_t cursor;
	uint32_t next_n;
	struct mmsg m[MAX_MSGS];
	struct out out[MAX_OUT];
	size_t nout;
	/* Records written whole, from the trace. */
	struct oracle_wrec *w;
	size_t nw, wcap, indexed;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int pending;
	bool failed;
	char why[512];
	/* Counts for the summary. */
	long steps, handed, crashes, powerloss, spares;
};

static bool env_on(const char *name)
{
	const char *v = getenv(name);
	return v && *v && strcmp(v, "0") != 0;
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);
	return v && *v ? strtol(v, NULL, 0) : def;
}

static int64_t wall_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rnd(struct model *md, uint64_t n) { return n ? crashfs_rand(&md->rng) % n : 0; }

static void bad(struct model *md, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bad(struct model *md, const char *fmt, ...)
{
	va_list ap;

	if (md->failed)
		return;
	md->failed = true;
	va_start(ap, fmt);
	vsnprintf(md->why, sizeof(md->why), fmt, ap);
	va_end(ap);
}

/* --- the spool under test ------------------------------------------------------------ */

struct batch {
	struct model *md;
	uint32_t first_n;
	size_t count;
};

static void batch_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct batch *b = arg;
	struct model *md = b->md;

	pthread_mutex_lock(&md->mu);
	for (size_t i = 0; i < b->count && err == SPOOL_OK; i++) {
		struct mmsg *m = &md->m[b->first_n + i];
		m->st = M_LIVE;
		m->seq = first_seq + i;
		m->committed_now = true;
	}
	md->pending--;
	pthread_cond_signal(&md->cv);
	pthread_mutex_unlock(&md->mu);
	free(b);
}

static void index_writes(struct model *md);

/*
 * spool_open(): a KEY record read back. Its batch's records must all have
 * been committed (a key never comes back for records that never were).
 */
static void on_key(void *arg, uint64_t seq, const struct spool_key *k)
{
	struct model *md = arg;
	char name[32];
	unsigned first, count;

	snprintf(name, sizeof(name), "%.*s", (int)(k->key_len < 31 ? k->key_len : 31), k->key);
	if (sscanf(name, "k%u-%u", &first, &count) != 2 || first + count > md->next_n ||
	    md->m[first].kcount != count || k->nrecs != count) {
		bad(md, "key record %" PRIu64 " (%s) is no key the model wrote", seq, name);
		return;
	}
	for (unsigned i = first; i < first + count; i++)
		if (md->m[i].st == M_NONE)
			bad(md, "key %s came back, but its message %u was never committed", name, i);
	md->m[first].key_loaded = true;
}

static void open_spool(struct model *md)
{
	char err[256] = "";

	index_writes(md);
	for (uint32_t i = 0; i < md->next_n; i++) {
		md->m[i].copied_before_open = md->m[i].copied;
		md->m[i].key_loaded = false;
		md->m[i].committed_now = false;
	}
	md->o.dir = md->dir;
	md->o.on_key = on_key;
	md->o.on_key_arg = md;
	if (spool_open(&md->o, &md->sp, err, sizeof(err)) < 0) {
		bad(md, "spool_open: %s", err);
		md->sp = NULL;
	}
	md->cursor = 0;
	md->nout = 0;
	for (uint32_t i = 0; i < md->next_n; i++)
		md->m[i].runs_out = 0;
	/*
	 * With fsync = always, every committed key came back: from the segment
	 * of its records, or from the keys file once that segment was deleted
	 * (acknowledged, or its records copied forward).
	 */
	for (uint32_t i = 0; md->sp && md->o.fsync == CONF_FSYNC_ALWAYS && i < md->next_n; i++) {
		const struct mmsg *m = &md->m[i];
		if (m->kcount && m->st != M_NONE && !md->m[m->kfirst].key_loaded)
			bad(md, "message %u was committed, its key k%u-%u did not come back", i,
			    m->kfirst, m->kcount);
	}
}

/* Index the records written since the last call (copies among them). */
static void index_writes(struct model *md)
{
	size_t n = crashfs_nops(), from = md->nw;

	oracle_index(md->indexed, n, &md->w, &md->nw, &md->wcap);
	md->indexed = n;
	for (size_t i = from; i < md->nw; i++) {
		if (md->w[i].copy && md->w[i].n < MAX_MSGS)
			md->m[md->w[i].n].copied = true;
		if (md->w[i].copy)
			fprintf(md->log, "  written: copy of message %u as sequence %" PRIu64 "\n",
			    md->w[i].n, md->w[i].seq);
	}
}

static bool written_as(const struct model *md, uint64_t seq, uint32_t n)
{
	for (size_t i = md->nw; i-- > 0;)
		if (md->w[i].seq == seq)
			return md->w[i].n == n; /* the latest write of seq (reused after a power loss) */
	return false;
}

static bool acked_seq(const struct mmsg *m, uint64_t seq)
{
	for (int i = 0; i < m->nacked; i++)
		if (m->acked[i] == seq)
			return true;
	return false;
}

static void note_ack(struct mmsg *m, uint64_t seq)
{
	m->st = M_ACKED;
	m->ack_flushed = false;
	if (m->nacked < 4) {
		m->acked_flushed[m->nacked] = false;
		m->acked_synced[m->nacked] = false;
		m->acked[m->nacked++] = seq;
	}
}

/* One record from spool_next(): check it against the model and hold it. */
static void take(struct model *md, struct spool_rec *r)
{
	uint32_t n;
	struct mmsg *m;
	char why[160];

	md->handed++;
	if (oracle_check(&r->msg, &n, why, sizeof(why)) < 0 || n >= md->next_n) {
		bad(md, "sequence %" PRIu64 " is not a submitted message: %s", r->seq, why);
		return;
	}
	m = &md->m[n];
	index_writes(md);
	fprintf(md->log, "  next: message %u as sequence %" PRIu64 "%s\n", n, r->seq,
		    r->seq != m->seq ? " (a copy)" : "");
	if (!written_as(md, r->seq, n))
		bad(md, "message %u handed out as sequence %" PRIu64 ", never written with it", n, r->seq);
	else if (m->st == M_NONE || m->st == M_GONE)
		bad(md, "message %u (state %d) handed out as sequence %" PRIu64 ": it is not in the spool",
		    n, m->st, r->seq);
	else if (m->st == M_ACKED && (!m->copied_before_open || acked_seq(m, r->seq)))
		bad(md, "message %u handed out again as sequence %" PRIu64 " after its acknowledgement%s",
		    n, r->seq, m->ack_flushed ? " was flushed" : "");
	else if (m->runs_out > 0 && !m->copied_before_open)
		bad(md, "message %u handed out twice in one run (sequence %" PRIu64 ")", n, r->seq);
	else if (m->kcount && !m->committed_now &&
	    md->o.fsync == CONF_FSYNC_ALWAYS && !md->m[m->kfirst].key_loaded)
		bad(md, "message %u of a keyed batch handed out without its key k%u-%u", n, m->kfirst,
		    m->kcount);
	if (md->failed)
		return;
	if (m->st == M_MAYBE || m->st == M_ACKED) /* M_ACKED: its other record */
		m->st = M_LIVE;
	m->runs_out++;
	if (md->nout < MAX_OUT)
		md->out[md->nout++] = (struct out){ r->seq, n };
}

static int do_next(struct model *md, int max)
{
	struct spool_rec *r;
	int got = 0;

	while (got < max && !md->failed && spool_next(md->sp, &md->cursor, &r) == 1) {
		take(md, r);
		spool_rec_free(r);
		got++;
	}
	return got;
}

static void do_submit(struct model *md)
{
	int nb = 1 + (int)rnd(md, 3);

	for (int i = 0; i < nb; i++) {
		size_t count = 1 + rnd(md, 6);
		struct batch *b = calloc(1, sizeof(*b));
		struct spool_batch *sb = spool_batch_new(count);
		if (!b || !sb || md->next_n + count >= MAX_MSGS) {
			free(b);
			spool_batch_free(sb);
			return;
		}
		b->md = md;
		b->first_n = md->next_n;
		b->count = count;
		for (size_t j = 0; j < count; j++)
			assert_int_equal(oracle_add(sb, md->next_n++), 0);
		if (rnd(md, 3) == 0) {
			/* An Idempotency-Key for the batch, in the same write. */
			char key[32], ids[6 * SPOOL_KEY_ID_LEN];
			struct spool_key k = { .timestamp_ms = wall_now_ms(), .nrecs = (uint32_t)count,
				.scope = "tcp", .scope_len = 3, .topic = "t", .topic_len = 1, .ids = ids };
			snprintf(key, sizeof(key), "k%u-%zu", b->first_n, count);
			memset(ids, '7', sizeof(ids)); /* Crockford base32, as ackd-ids are */
			k.key = key;
			k.key_len = strlen(key);
			assert_int_equal(spool_batch_add_key(sb, &k), 0);
			for (size_t j = 0; j < count; j++) {
				md->m[b->first_n + j].kfirst = b->first_n;
				md->m[b->first_n + j].kcount = (uint8_t)count;
			}
		}
		pthread_mutex_lock(&md->mu);
		md->pending++;
		pthread_mutex_unlock(&md->mu);
		if (spool_submit(md->sp, sb, batch_done, b) != SPOOL_OK) {
			pthread_mutex_lock(&md->mu);
			md->pending--;
			pthread_mutex_unlock(&md->mu);
			free(b);
		}
	}
	pthread_mutex_lock(&md->mu);
	while (md->pending)
		pthread_cond_wait(&md->cv, &md->mu);
	pthread_mutex_unlock(&md->mu);
}

static void barrier_done(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct model *md = arg;

	(void)err;
	(void)first_seq;
	pthread_mutex_lock(&md->mu);
	md->pending--;
	pthread_cond_signal(&md->cv);
	pthread_mutex_unlock(&md->mu);
}

/*
 * Wait until the writer has committed everything queued before now (a
 * copy-forward's batch): an empty batch goes through the queue behind it.
 * Keeps a seed's steps in the same order from run to run.
 */
static void barrier(struct model *md)
{
	struct spool_batch *b = spool_batch_new(1);

	assert_non_null(b);
	pthread_mutex_lock(&md->mu);
	md->pending++;
	pthread_mutex_unlock(&md->mu);
	if (spool_submit(md->sp, b, barrier_done, md) != SPOOL_OK) {
		pthread_mutex_lock(&md->mu);
		md->pending--;
		pthread_mutex_unlock(&md->mu);
		bad(md, "an empty batch was refused");
		return;
	}
	pthread_mutex_lock(&md->mu);
	while (md->pending)
		pthread_cond_wait(&md->cv, &md->mu);
	pthread_mutex_unlock(&md->mu);
}

static struct out pick_out(struct model *md)
{
	size_t i = rnd(md, md->nout);
	struct out o = md->out[i];

	md->out[i] = md->out[--md->nout];
	return o;
}

static void do_ack(struct model *md)
{
	int k = 1 + (int)rnd(md, 8);

	while (k-- > 0 && md->nout) {
		struct out o = pick_out(md);
		fprintf(md->log, "  ack: message %u as sequence %" PRIu64 "\n", o.n, o.seq);
		spool_ack(md->sp, o.seq);
		note_ack(&md->m[o.n], o.seq);
	}
}

static void do_fail(struct model *md)
{
	struct out o;

	if (!md->nout)
		return;
	o = pick_out(md);
	if (spool_fail(md->sp, o.seq, "rejected by the model") == SPOOL_FAIL_NOMEM) {
		bad(md, "spool_fail of message %u (sequence %" PRIu64 ") failed", o.n, o.seq);
		return;
	}
	note_ack(&md->m[o.n], o.seq);
	md->m[o.n].failed = true;
}

static void do_get(struct model *md)
{
	struct spool_rec *r;
	struct out o;
	uint32_t n;
	char why[160];

	if (!md->nout)
		return;
	o = md->out[rnd(md, md->nout)];
	if (spool_get(md->sp, o.seq, &r) != 1) {
		bad(md, "spool_get(%" PRIu64 ") of held message %u found nothing", o.seq, o.n);
		return;
	}
	if (r->seq != o.seq)
		bad(md, "spool_get(%" PRIu64 ") answered sequence %" PRIu64, o.seq, r->seq);
	else if (oracle_check(&r->msg, &n, why, sizeof(why)) < 0 || n != o.n)
		bad(md, "spool_get(%" PRIu64 ") of message %u: %s", o.seq, o.n, why);
	spool_rec_free(r);
}

static void acks_flushed(struct model *md)
{
	for (uint32_t i = 0; i < md->next_n; i++) {
		if (md->m[i].st == M_ACKED)
			md->m[i].ack_flushed = true;
		for (int j = 0; j < md->m[i].nacked; j++)
			md->m[i].acked_flushed[j] = true;
	}
}

static void do_maintain(struct model *md)
{
	spool_maintain(md->sp);
	acks_flushed(md);
	barrier(md);
}

static void do_rewind(struct model *md);

/*
 * A producer rebuild while maintenance copies a segment forward: after the
 * copies were committed (not yet applied), or while their commit is pending.
 */
static void do_maintain_rewind(struct model *md)
{
	if (rnd(md, 2)) {
		fprintf(md->log, "  maintain, wait for the writer, rewind\n");
		spool_maintain(md->sp);
		barrier(md);
		do_rewind(md);
	} else {
		fprintf(md->log, "  hold the writer, maintain, rewind, release\n");
		crashfs_hold(1);
		spool_maintain(md->sp);
		do_rewind(md);
		crashfs_hold(0);
		barrier(md);
	}
	acks_flushed(md);
}

static void do_rewind(struct model *md)
{
	spool_rewind(md->sp);
	md->cursor = 0;
	md->nout = 0;
	for (uint32_t i = 0; i < md->next_n; i++)
		md->m[i].runs_out = 0;
}

static void close_spool(struct model *md)
{
	struct spool_stats st;

	spool_stats(md->sp, &st);
	md->spares += (long)st.spares_used;
	spool_close(md->sp);
}

static void do_reopen(struct model *md)
{
	close_spool(md);
	acks_flushed(md); /* close writes and syncs them */
	for (uint32_t i = 0; i < md->next_n; i++) {
		for (int j = 0; j < md->m[i].nacked; j++)
			md->m[i].acked_synced[j] = true;
		if (md->m[i].st == M_GONE)
			md->m[i].gone_synced = true;
	}
	open_spool(md);
}

/* After a crash, what may come back. */
static void after_crash(struct model *md, bool power)
{
	for (uint32_t i = 0; i < md->next_n; i++) {
		struct mmsg *m = &md->m[i];
		int k = 0;

		/* Forget only the acknowledgements this crash may have lost. */
		for (int j = 0; j < m->nacked; j++) {
			if (power ? !m->acked_synced[j] : !m->acked_flushed[j])
				continue;
			m->acked[k] = m->acked[j];
			m->acked_flushed[k] = m->acked_flushed[j];
			m->acked_synced[k++] = m->acked_synced[j];
		}
		m->nacked = k;
		if (m->st == M_ACKED && (power || !m->ack_flushed))
			m->st = M_MAYBE;
		else if (m->st == M_GONE && power && !m->gone_synced)
			m->st = M_MAYBE; /* the unsynced ack entry that hid it may be lost */
		else if (m->st == M_LIVE && power && md->o.fsync != CONF_FSYNC_ALWAYS)
			m->st = M_MAYBE;
	}
}

/* kill -9: the process stops; its writes so far stay, nothing else happens. */
static void do_kill(struct model *md)
{
	crashfs_freeze(1);
	close_spool(md);
	crashfs_freeze(0);
	md->crashes++;
	after_crash(md, false);
	open_spool(md);
}

/* Power loss: a random state the disk could hold, recovered in a new directory. */
static void do_power(struct model *md)
{
	char err[256], desc[1024], dir[96];

	crashfs_freeze(1);
	close_spool(md);
	crashfs_freeze(0);
	index_writes(md);
	snprintf(dir, sizeof(dir), "%s/s%d", md->base, ++md->gen);
	/* Its own random numbers: the steps stay the same however the writer grouped the trace. */
	uint64_t rng = md->seed * 0xbf58476d1ce4e5b9ull + (uint64_t)md->gen;
	if (crashfs_materialize_random(crashfs_nops(), &rng, dir, desc, sizeof(desc)) < 0) {
		bad(md, "cannot write a crash state to %s", dir);
		return;
	}
	fprintf(md->log, "  power loss state: %s\n", desc);
	crashfs_stop();
	crashfs_rmtree(md->dir);
	snprintf(md->dir, sizeof(md->dir), "%s", dir);
	if (crashfs_start(md->dir, err, sizeof(err)) < 0) {
		bad(md, "%s", err);
		return;
	}
	md->indexed = 0;
	md->powerloss++;
	after_crash(md, true);
	open_spool(md);
}

/* Read until nothing new comes; every live message must have come out in this run. */
static void do_drain(struct model *md)
{
	int quiet = 0;
	int64_t end = now_ms() + DRAIN_MAX_MS;

	while (!md->failed && quiet < DRAIN_QUIET_ROUNDS && now_ms() < end) {
		int got = do_next(md, 1 << 30);
		spool_maintain(md->sp);
		acks_flushed(md);
		barrier(md);
		got += do_next(md, 1 << 30);
		quiet = got ? 0 : quiet + 1;
	}
	for (uint32_t i = 0; i < md->next_n && !md->failed; i++) {
		struct mmsg *m = &md->m[i];
		if (m->st == M_LIVE && m->runs_out == 0)
			bad(md, "message %u (sequence %" PRIu64 ") committed and not acknowledged, "
			    "not handed out by a full read", i, m->seq);
		else if (m->st == M_MAYBE && m->runs_out == 0) {
			m->st = M_GONE;
			m->gone_synced = false;
		}
	}
}

/* The end of a seed: acknowledge everything, reopen, nothing may come back; failed/ holds the failed. */
static void finish(struct model *md)
{
	struct spool_ro *ro = NULL;
	const struct spool_ro_file *files;
	bool *in_failed = calloc(MAX_MSGS, sizeof(bool));
	char err[256];
	size_t nf;

	assert_non_null(in_failed);
	md->op = "final drain";
	do_drain(md);
	md->op = "final ack";
	while (md->nout && !md->failed) {
		struct out o = md->out[--md->nout];
		spool_ack(md->sp, o.seq);
		note_ack(&md->m[o.n], o.seq);
	}
	if (!md->failed) {
		md->op = "final reopen";
		do_reopen(md);
		do_drain(md);
	}
	if (md->sp)
		close_spool(md);
	md->sp = NULL;
	if (md->failed)
		goto out;
	md->op = "failed/";
	if (spool_ro_open(md->dir, &ro, err, sizeof(err)) < 0) {
		bad(md, "spool_ro_open: %s", err);
		goto out;
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
			if (oracle_check_as(&item.rec->msg, true, &n, why, sizeof(why)) < 0 || n >= MAX_MSGS)
				bad(md, "failed/ holds a record that was not submitted: %s", why);
			else
				in_failed[n] = true;
		}
		spool_ro_iter_free(it);
	}
	spool_ro_free(ro);
	for (uint32_t i = 0; i < md->next_n; i++)
		if (md->m[i].failed && !in_failed[i])
			bad(md, "message %u was moved to failed/ and is not there", i);
out:
	free(in_failed);
}

/* The last max lines of the step log. */
static void print_log(const struct model *md, size_t max)
{
	size_t lines = 0, i = md->loglen;

	while (i > 0 && lines <= max)
		if (md->logbuf[--i] == '\n')
			lines++;
	if (lines > max)
		i++;
	fprintf(stderr, "seed %" PRIu64 ", the last steps:\n%.*s", md->seed, (int)(md->loglen - i),
	    md->logbuf + i);
}

/* --- one seed -------------------------------------------------------------------------- */

static bool run_seed(uint64_t seed, int steps, bool verbose, struct model *md)
{
	static const uint64_t seg_sizes[] = { 2048, 4096, 8192 };
	char err[256];

	memset(md, 0, sizeof(*md));
	pthread_mutex_init(&md->mu, NULL);
	pthread_cond_init(&md->cv, NULL);
	md->seed = seed;
	md->rng = seed * 0x9e3779b97f4a7c15ull + 1;
	md->verbose = verbose;
	md->log = open_memstream(&md->logbuf, &md->loglen);
	assert_non_null(md->log);
	snprintf(md->base, sizeof(md->base), "/dev/shm/ackd-model.XXXXXX");
	if (!mkdtemp(md->base)) {
		snprintf(md->base, sizeof(md->base), "/tmp/ackd-model.XXXXXX");
		assert_non_null(mkdtemp(md->base));
	}
	snprintf(md->dir, sizeof(md->dir), "%s/s0", md->base);
	assert_int_equal(mkdir(md->dir, 0750), 0);
	md->o = (struct spool_opts){
		.fsync = rnd(md, 2) ? CONF_FSYNC_ALWAYS : CONF_FSYNC_NEVER,
		.fsync_interval_ms = 1000,
		.segment_bytes = seg_sizes[rnd(md, 3)],
		.key_ttl_ms = 86400000,
	};
	md->o.prealloc = rnd(md, 2); /* drawn last: the other draws stay as they were per seed */
	if (crashfs_start(md->dir, err, sizeof(err)) < 0)
		fail_msg("%s", err);
	md->op = "open";
	open_spool(md);
	for (md->step = 0; md->step < steps && !md->failed && md->sp; md->step++) {
		uint64_t r = rnd(md, 100);
		md->steps++;
		if (r < 26) {
			md->op = "submit";
			do_submit(md);
		} else if (r < 48) {
			md->op = "next";
			do_next(md, 1 + (int)rnd(md, 12));
		} else if (r < 68) {
			md->op = "ack";
			do_ack(md);
		} else if (r < 71) {
			md->op = "fail";
			do_fail(md);
		} else if (r < 75) {
			md->op = "get";
			do_get(md);
		} else if (r < 84) {
			md->op = "maintain";
			do_maintain(md);
		} else if (r < 86) {
			md->op = "rewind";
			do_rewind(md);
		} else if (r < 88) {
			md->op = "maintain+rewind";
			do_maintain_rewind(md);
		} else if (r < 90) {
			md->op = "reopen";
			do_reopen(md);
		} else if (r < 93) {
			md->op = "kill";
			do_kill(md);
		} else if (r < 96) {
			md->op = "power loss";
			do_power(md);
		} else {
			md->op = "drain";
			do_drain(md);
		}
		fprintf(md->log, "step %d: %s (held %zu, cursor %" PRIu64 ")\n", md->step, md->op,
		    md->nout, md->cursor);
	}
	if (!md->failed && md->sp)
		finish(md);
	else if (md->sp)
		close_spool(md);
	fclose(md->log);
	if (md->failed || verbose)
		print_log(md, verbose ? SIZE_MAX : 60);
	free(md->logbuf);
	if (md->failed)
		fprintf(stderr, "MODEL VIOLATION seed=%" PRIu64 " step=%d op=%s (fsync %s, segment %" PRIu64
		    " bytes%s): %s\n  rerun: ACKD_MODEL_SEED=%" PRIu64 " ACKD_MODEL_VERBOSE=1 %s\n",
		    seed, md->step, md->op, md->o.fsync == CONF_FSYNC_ALWAYS ? "always" : "never",
		    md->o.segment_bytes, md->o.prealloc ? ", prealloc" : "", md->why, seed, "tests/unit/test_spool_model");
	crashfs_stop();
	crashfs_reset();
	crashfs_rmtree(md->base);
	free(md->w);
	pthread_mutex_destroy(&md->mu);
	pthread_cond_destroy(&md->cv);
	return !md->failed;
}

static void test_model(void **state)
{
	struct model *md = calloc(1, sizeof(*md));
	long nseeds = env_long("ACKD_MODEL_SEEDS", 1000), steps = env_long("ACKD_MODEL_STEPS", 150);
	long first = env_long("ACKD_MODEL_FIRST", 1), failures = 0;
	long steps_run = 0, handed = 0, crashes = 0, powerloss = 0, spares = 0;
	const char *one = getenv("ACKD_MODEL_SEED");
	int64_t t0 = now_ms();

	(void)state;
	assert_non_null(md);
	if (one && *one) {
		first = strtol(one, NULL, 0);
		nseeds = 1;
	}
	for (long s = first; s < first + nseeds; s++) {
		if (!run_seed((uint64_t)s, (int)steps, env_on("ACKD_MODEL_VERBOSE"), md))
			failures++;
		steps_run += md->steps;
		handed += md->handed;
		crashes += md->crashes;
		powerloss += md->powerloss;
		spares += md->spares;
	}
	printf("model test: %ld seeds (%ld..%ld), %ld steps, %ld records handed out, %ld kills, "
	       "%ld power losses, %ld segments begun in a spare, %ld failing seeds, %.1f s\n",
	    nseeds, first, first + nseeds - 1, steps_run, handed, crashes, powerloss, spares,
	    failures, (double)(now_ms() - t0) / 1000.0);
	free(md);
	if (failures)
		fail_msg("%ld seeds failed", failures);
	if (nseeds >= 100 && spares == 0)
		fail_msg("no segment was begun in a spare: prealloc went untested");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model),
	};

	log_set_level(LOG_LVL_ERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
