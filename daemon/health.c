/*
 * health: a list of registered loops under a mutex (registration is rare),
 * each with an atomic time of its last beat (beats are frequent and free of
 * locks). Any thread.
 */
#include "config.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "health.h"
#include "util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct health_loop *loops;

void health_register(struct health_loop *l, const char *name, int64_t max_quiet_ms)
{
	l->name = name;
	l->max_quiet_ms = max_quiet_ms;
	atomic_store(&l->last_ms, now_ms());
	pthread_mutex_lock(&lock);
	l->next = loops;
	loops = l;
	pthread_mutex_unlock(&lock);
}

void health_unregister(struct health_loop *l)
{
	pthread_mutex_lock(&lock);
	for (struct health_loop **p = &loops; *p; p = &(*p)->next) {
		if (*p == l) {
			*p = l->next;
			break;
		}
	}
	pthread_mutex_unlock(&lock);
}

void health_beat(struct health_loop *l)
{
	atomic_store_explicit(&l->last_ms, now_ms(), memory_order_relaxed);
}

int health_check(char *stale, size_t len)
{
	int64_t now = now_ms();
	size_t used = 0;
	int rc = 0;

	if (len)
		stale[0] = '\0';
	pthread_mutex_lock(&lock);
	for (struct health_loop *l = loops; l; l = l->next) {
		int64_t quiet = now - atomic_load_explicit(&l->last_ms, memory_order_relaxed);
		if (quiet <= l->max_quiet_ms)
			continue;
		rc = -1;
		if (used < len) {
			int n = snprintf(stale + used, len - used, "%s%s (quiet %lld ms)",
			    used ? ", " : "", l->name, (long long)quiet);
			if (n > 0)
				used += (size_t)n;
		}
	}
	pthread_mutex_unlock(&lock);
	return rc;
}
