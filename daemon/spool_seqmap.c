/*
 * spool_seqmap: a small open-addressing map from sequence to sequence, for
 * copy-forward (original -> copy and back). Producer thread only.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "spool_int.h"
#include "util.h"

static size_t seqmap_slot(uint64_t key, size_t cap)
{
	return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 17) & (cap - 1);
}

bool seqmap_get(const struct seqmap *m, uint64_t key, uint64_t *val)
{
	if (!m->cap)
		return false;
	for (size_t i = seqmap_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == MAP_EMPTY)
			return false;
		if (m->k[i] == key) {
			*val = m->v[i];
			return true;
		}
	}
}

void seqmap_put_nogrow(struct seqmap *m, uint64_t key, uint64_t val)
{
	size_t tomb = SIZE_MAX;

	for (size_t i = seqmap_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == key) {
			m->v[i] = val;
			return;
		}
		if (m->k[i] == MAP_TOMB && tomb == SIZE_MAX)
			tomb = i;
		if (m->k[i] == MAP_EMPTY) {
			if (tomb == SIZE_MAX) {
				tomb = i;
				m->used++;
			}
			m->k[tomb] = key;
			m->v[tomb] = val;
			return;
		}
	}
}

/* Room for n more puts without growing; 0 or -1 (ENOMEM). */
int seqmap_reserve(struct seqmap *m, size_t n)
{
	struct seqmap nm = { 0 };
	size_t live = 0;

	if ((m->used + n) * 2 <= m->cap)
		return 0;
	for (size_t i = 0; i < m->cap; i++)
		live += m->k[i] != MAP_EMPTY && m->k[i] != MAP_TOMB;
	nm.cap = 64;
	while ((live + n) * 2 > nm.cap)
		nm.cap *= 2;
	nm.k = calloc(nm.cap, sizeof(*nm.k));
	nm.v = calloc(nm.cap, sizeof(*nm.v));
	if (!nm.k || !nm.v) {
		free(nm.k);
		free(nm.v);
		return -1;
	}
	for (size_t i = 0; i < m->cap; i++)
		if (m->k[i] != MAP_EMPTY && m->k[i] != MAP_TOMB)
			seqmap_put_nogrow(&nm, m->k[i], m->v[i]);
	free(m->k);
	free(m->v);
	*m = nm;
	return 0;
}

void seqmap_del(struct seqmap *m, uint64_t key)
{
	if (!m->cap)
		return;
	for (size_t i = seqmap_slot(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->k[i] == MAP_EMPTY)
			return;
		if (m->k[i] == key) {
			m->k[i] = MAP_TOMB;
			return;
		}
	}
}

void seqmap_fini(struct seqmap *m)
{
	free(m->k);
	free(m->v);
	memset(m, 0, sizeof(*m));
}
