/*
 * util: allocation wrappers, clocks and thread names. Any thread.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		fatalx("out of memory allocating %zu bytes", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		fatalx("out of memory allocating %zu x %zu bytes", n, size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q)
		fatalx("out of memory allocating %zu bytes", n);
	return q;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
	char *d = xmalloc(n + 1);

	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

int64_t wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

void thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

int wakeup_open(struct wakeup *w)
{
	int fds[2];

	w->rd = w->wr = -1;
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	w->rd = fds[0];
	w->wr = fds[1];
	return 0;
}

void wakeup_signal(const struct wakeup *w)
{
	char c = 'w';

	/* A full pipe already means "wake up". */
	if (write(w->wr, &c, 1) < 0 && errno != EAGAIN)
		log_warn("wake-up pipe");
}

void wakeup_drain(const struct wakeup *w)
{
	char buf[256];

	while (read(w->rd, buf, sizeof(buf)) > 0)
		continue;
}

void wakeup_close(struct wakeup *w)
{
	if (w->rd >= 0)
		close(w->rd);
	if (w->wr >= 0)
		close(w->wr);
	w->rd = w->wr = -1;
}
