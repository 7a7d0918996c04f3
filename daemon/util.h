/*
 * util: the few helpers every module wants: allocation that cannot fail
 * (ackd treats out-of-memory as fatal), clocks, thread names and scheduler
 * slices.
 */
#ifndef ACKD_UTIL_H
#define ACKD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*
 * A return value that must not be ignored: on the publish path a dropped
 * error is a 2xx for a message that was never written.
 */
#ifndef MUST_USE
#define MUST_USE __attribute__((warn_unused_result))
#endif

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/*
 * Client bytes made safe to show: src[0..len) copied into dst as valid UTF-8
 * with no control characters, always NUL-terminated. Each byte that does not
 * start a well-formed UTF-8 character (overlong forms, surrogates and code
 * points past U+10FFFF included) becomes U+FFFD; a control character
 * (U+0000-U+001F, U+007F) becomes '?'. Only whole characters are written, so
 * a cut at dstlen never splits one. Returns the bytes written, without the
 * NUL. Every answer or log line that quotes a client goes through this.
 */
size_t utf8_clean(char *dst, size_t dstlen, const void *src, size_t len);

/* The longest decimal int64: "-9223372036854775808". */
#define INT64_DEC_MAX 20

/* v in decimal at p, no NUL: at most INT64_DEC_MAX bytes. Returns the end. */
char *put_int64(char *p, int64_t v);

/*
 * The clock's time. Linux's clocks that ackd reads do not fail; one that did
 * would make every timeout and timestamp wrong, so it ends ackd (exit 1,
 * logged).
 */
struct timespec clock_now(clockid_t id);

/* CLOCK_MONOTONIC and CLOCK_REALTIME in milliseconds. */
int64_t now_ms(void);
int64_t wall_ms(void);

/*
 * CLOCK_MONOTONIC_COARSE in milliseconds: the last timer tick's time (a few
 * ms behind now_ms()), read without the clock source, for a cadence checked
 * per record. Compare it only with itself.
 */
int64_t coarse_ms(void);

/* Name the calling thread (shown by top -H, gdb). */
void thread_name(const char *name);

/*
 * Ask the scheduler for a slice of us microseconds for the calling thread
 * (publish.slice_us): sched_setattr(2) with the thread's policy and nice
 * value kept and sched_runtime set. Linux 6.12 and later (EEVDF) take it
 * as the thread's request, kept within 100 to 100,000 us: a thread with a
 * short one is picked sooner when it wakes on a busy machine, and is
 * preempted sooner, for the same share of the CPU. Threads it starts later
 * get the default slice, unless its nice value is negative. Best effort: an
 * older kernel, a seccomp filter that refuses the call, or a policy other
 * than SCHED_OTHER and SCHED_BATCH leave the thread as it is, logged at
 * debug with name. Only a thread's first call does anything, so a thread
 * started by a library (libmicrohttpd's, librdkafka's) may call it on each
 * callback. us <= 0: nothing is done, then or later.
 */
void thread_slice(const char *name, int64_t us);

/*
 * A self-pipe: any thread (or librdkafka, through rd_kafka_queue_io_event_
 * enable on wr) wakes a loop that sleeps in poll or epoll on rd.
 */
struct wakeup {
	int rd, wr;
};
int wakeup_open(struct wakeup *w); /* 0, or -1 with errno */
void wakeup_signal(const struct wakeup *w);
void wakeup_drain(const struct wakeup *w);
void wakeup_close(struct wakeup *w); /* a closed or never opened one is fine */

#endif
