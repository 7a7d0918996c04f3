/*
 * util: allocation wrappers, clocks, thread names and scheduler slices. Any
 * thread.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "log.h"
#include "util.h"

/* Bytes of the well-formed UTF-8 character at s (n available), or 0. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	size_t need;
	unsigned char lo = 0x80, hi = 0xbf; /* the range of the second byte */

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0; /* overlong */
		else if (c == 0xed)
			hi = 0x9f; /* surrogates */
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90; /* overlong */
		else if (c == 0xf4)
			hi = 0x8f; /* past U+10FFFF */
	} else
		return 0;
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	return need;
}

char *put_int64(char *p, int64_t v)
{
	uint64_t u = v < 0 ? -(uint64_t)v : (uint64_t)v;
	char digits[INT64_DEC_MAX];
	size_t n = 0;

	if (v < 0)
		*p++ = '-';
	do {
		digits[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	while (n)
		*p++ = digits[--n];
	return p;
}

size_t utf8_clean(char *dst, size_t dstlen, const void *src, size_t len)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	const unsigned char *s = src;
	size_t i = 0, n = 0;

	if (dstlen == 0)
		return 0;
	while (i < len) {
		size_t clen = utf8_char_len(s + i, len - i);
		const char *out = (const char *)s + i;
		size_t olen = clen;

		if (clen == 0) {
			out = replacement;
			olen = 3;
			clen = 1;
		} else if (clen == 1 && (s[i] < 0x20 || s[i] == 0x7f)) {
			out = "?";
		}
		if (olen >= dstlen - n)
			break;
		memcpy(dst + n, out, olen);
		n += olen;
		i += clen;
	}
	dst[n] = '\0';
	return n;
}

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

struct timespec clock_now(clockid_t id)
{
	struct timespec ts;

	if (clock_gettime(id, &ts) < 0)
		fatal("clock_gettime of clock %d", (int)id);
	return ts;
}

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts = clock_now(id);

	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

int64_t coarse_ms(void) { return clock_ms(CLOCK_MONOTONIC_COARSE); }

int64_t wall_ms(void) { return clock_ms(CLOCK_REALTIME); }

void thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

/*
 * sched_setattr(2)'s argument as the kernel defines it, in its first form
 * (SCHED_ATTR_SIZE_VER0). glibc 2.36 has no wrapper, and the kernel's
 * <linux/sched/types.h> and <linux/sched.h> clash with <sched.h>.
 */
struct sched_attr_v0 {
	uint32_t size;
	uint32_t sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime; /* SCHED_OTHER, SCHED_BATCH: the slice in ns (Linux 6.12) */
	uint64_t sched_deadline;
	uint64_t sched_period;
};
_Static_assert(sizeof(struct sched_attr_v0) == 48, "SCHED_ATTR_SIZE_VER0");

#define ACKD_SCHED_FLAG_RESET_ON_FORK 0x01

void thread_slice(const char *name, int64_t us)
{
	static __thread bool asked;
	struct sched_attr_v0 a = { .size = sizeof(a) };

	if (asked)
		return;
	asked = true;
	if (us <= 0)
		return;
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) < 0) {
		log_debug("%s: scheduler slice: sched_getattr: %s", name, strerror(errno));
		return;
	}
	if (a.sched_policy != SCHED_OTHER && a.sched_policy != SCHED_BATCH) {
		log_debug("%s: scheduler slice: policy %u is neither SCHED_OTHER nor SCHED_BATCH, "
		    "left alone", name, a.sched_policy);
		return;
	}
	/* Linux 6.12 and later report a fair thread's slice; before, 0 and no use for one. */
	if (a.sched_runtime == 0) {
		log_debug("%s: scheduler slice: the kernel keeps its own", name);
		return;
	}
	/*
	 * The policy and nice value stay. Threads started later get the default
	 * slice, as those the main thread starts do (the keys file's compaction,
	 * which the writer starts; the main thread of a producer the Kafka loop
	 * rebuilds, whose broker threads ask for themselves). The kernel resets
	 * a negative nice value with it, though, so at one they inherit both
	 * instead.
	 */
	a.size = sizeof(a);
	a.sched_flags = a.sched_nice < 0 ? 0 : ACKD_SCHED_FLAG_RESET_ON_FORK;
	a.sched_runtime = (uint64_t)us * 1000;
	if (syscall(SYS_sched_setattr, 0, &a, 0) < 0) {
		log_debug("%s: scheduler slice: sched_setattr: %s", name, strerror(errno));
		return;
	}
	/* The kernel keeps the slice within 100 us and 100 ms: log what it holds. */
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) < 0) {
		log_debug("%s: scheduler slice: sched_getattr: %s", name, strerror(errno));
		return;
	}
	log_debug("%s: scheduler slice %llu us", name, (unsigned long long)(a.sched_runtime / 1000));
}

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
