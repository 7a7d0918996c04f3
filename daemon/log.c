/*
 * log: lines to stderr, "ackd[pid]: level: message", one write(2) each so
 * lines from different threads never interleave. journald adds the time when
 * ackd runs as a service; a terminal gets a timestamp prefix.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static volatile enum log_level cur_level = LOG_LVL_INFO;

#define HIDE_MAX 512
#define HIDE_MIN_LEN 6

static pthread_mutex_t hide_lock = PTHREAD_MUTEX_INITIALIZER;
static char *hidden[HIDE_MAX];
static atomic_size_t nhidden;

static const char *const level_names[] = {
	[LOG_LVL_ERR] = "error",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

void log_set_level(enum log_level level) { cur_level = level; }

enum log_level log_get_level(void) { return cur_level; }

int log_level_parse(const char *name, enum log_level *out)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

void log_hide(const char *secret)
{
	size_t n;

	if (strlen(secret) < HIDE_MIN_LEN)
		return;
	pthread_mutex_lock(&hide_lock);
	n = atomic_load(&nhidden);
	for (size_t i = 0; i < n; i++)
		if (strcmp(hidden[i], secret) == 0)
			goto out;
	if (n < HIDE_MAX && (hidden[n] = strdup(secret)) != NULL)
		atomic_store(&nhidden, n + 1);
out:
	pthread_mutex_unlock(&hide_lock);
}

/* Replace every registered secret in line[0..*len) (room for size bytes). */
static void scrub(char *line, size_t *len, size_t size)
{
	static const char mark[] = "(hidden)";
	const size_t mlen = sizeof(mark) - 1;

	line[*len] = '\0';
	pthread_mutex_lock(&hide_lock);
	for (size_t i = 0; i < atomic_load(&nhidden); i++) {
		size_t slen = strlen(hidden[i]);
		char *p = line;

		while ((p = strstr(p, hidden[i])) != NULL) {
			size_t at = (size_t)(p - line), tail = *len - at - slen;

			if (at + mlen + tail >= size) /* no room: cut rather than keep it */
				tail = at + mlen < size ? size - 1 - at - mlen : 0;
			if (at + mlen >= size) {
				*len = at;
				break;
			}
			memmove(p + mlen, p + slen, tail);
			memcpy(p, mark, mlen);
			*len = at + mlen + tail;
			line[*len] = '\0';
			p += mlen;
		}
	}
	pthread_mutex_unlock(&hide_lock);
}

static void emit(enum log_level level, int errnum, const char *fmt, va_list ap)
{
	char line[4096];
	size_t len = 0;
	int n;

	if (level > cur_level)
		return;
	n = snprintf(line, sizeof(line), "ackd: %s: ", level_names[level]);
	len = (size_t)n;
	n = vsnprintf(line + len, sizeof(line) - len, fmt, ap);
	if (n > 0)
		len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;
	if (errnum && len < sizeof(line) - 1) {
		n = snprintf(line + len, sizeof(line) - len, ": %s", strerror(errnum));
		if (n > 0)
			len += (size_t)n < sizeof(line) - len ? (size_t)n : sizeof(line) - len - 1;
	}
	if (len >= sizeof(line) - 1)
		len = sizeof(line) - 2;
	if (atomic_load(&nhidden) > 0)
		scrub(line, &len, sizeof(line) - 1);
	line[len++] = '\n';
	/* A short write to stderr has nowhere to be reported. */
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

/* The escaped width of byte c. */
static size_t escaped_width(unsigned char c)
{
	return c == '\\' ? 2 : c >= 0x20 && c < 0x7f ? 1 : 4;
}

char *log_escape(const void *s, size_t len, char *out, size_t outlen)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = s;
	size_t need = 0, n = 0, room;

	if (outlen == 0)
		return out;
	for (size_t i = 0; i < len; i++)
		need += escaped_width(p[i]);
	/* Cut: keep room for "..." (when outlen allows) and the NUL. */
	room = need < outlen ? outlen - 1 : outlen >= 4 ? outlen - 4 : 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		size_t w = escaped_width(c);

		if (n + w > room)
			break;
		if (w == 1) {
			out[n] = (char)c;
		} else if (w == 2) {
			out[n] = out[n + 1] = '\\';
		} else {
			out[n] = '\\';
			out[n + 1] = 'x';
			out[n + 2] = hex[c >> 4];
			out[n + 3] = hex[c & 15];
		}
		n += w;
	}
	if (need >= outlen && outlen >= 4) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
	return out;
}

void log_vmsg(enum log_level level, const char *fmt, va_list ap) { emit(level, 0, fmt, ap); }

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(level, 0, fmt, ap);
	va_end(ap);
}

#define LOG_FN(fn, level, with_errno)                                                      \
	void fn(const char *fmt, ...)                                                      \
	{                                                                                  \
		int saved = errno;                                                         \
		va_list ap;                                                                \
		va_start(ap, fmt);                                                         \
		emit(level, with_errno ? saved : 0, fmt, ap);                              \
		va_end(ap);                                                                \
		errno = saved;                                                             \
	}

LOG_FN(log_err, LOG_LVL_ERR, 1)
LOG_FN(log_errx, LOG_LVL_ERR, 0)
LOG_FN(log_warn, LOG_LVL_WARN, 1)
LOG_FN(log_warnx, LOG_LVL_WARN, 0)
LOG_FN(log_info, LOG_LVL_INFO, 0)
LOG_FN(log_debug, LOG_LVL_DEBUG, 0)

/*
 * _exit(), not exit(): fatal() runs on whichever thread found the fault,
 * while the others go on. exit() would run the libraries' exit handlers
 * (OpenSSL frees its global state) under threads still using them, and
 * flush stdio streams another thread may hold. The line is out already
 * (write(2), no buffer), and the spool needs nothing at exit: what it
 * answered for is on disk. A fuzzing build aborts instead, so that the
 * fuzzer keeps the input that led here (it learns of an exit through its
 * own exit handler).
 */
static _Noreturn void die(void)
{
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
	abort();
#else
	_exit(1);
#endif
}

void fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	emit(LOG_LVL_ERR, saved, fmt, ap);
	va_end(ap);
	die();
}

void fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	emit(LOG_LVL_ERR, 0, fmt, ap);
	va_end(ap);
	die();
}
