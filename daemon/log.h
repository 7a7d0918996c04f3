/*
 * log: one logging path for ackd and librdkafka, to stderr.
 *
 * Messages are lower case, name identifiers, have no trailing period.
 * log_warn() and log_err() append ": strerror(errno)"; the x variants do not.
 * Safe from any thread; each line is written with a single write(2).
 */
#ifndef ACKD_LOG_H
#define ACKD_LOG_H

#include <stdarg.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *name, enum log_level *out);

void log_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vmsg(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/*
 * Never write secret (a password, token or key from the configuration) in a
 * log line: every line, librdkafka's included, has it replaced by "(hidden)".
 * A second line of defence behind code that never logs secrets in the
 * first place. Copied; kept for the process's life; strings shorter than 6
 * bytes are ignored (they would mangle ordinary words), as are more than 512.
 * Any thread.
 */
void log_hide(const char *secret);

/*
 * Bytes from outside (Kafka header names, keys) as one safe log token:
 * printable ASCII stays, a backslash becomes "\\", every other byte (CR, LF,
 * other control bytes, DEL, non-ASCII) becomes "\xNN", so no input can
 * start a line of its own or hide in the terminal. Cut with "..." to fit
 * outlen (at least 4); always NUL-terminated. Returns out.
 */
char *log_escape(const void *s, size_t len, char *out, size_t outlen);

/*
 * Log and _exit(1), without exit handlers (abort() in a fuzzing build). At
 * start-up, for a broken invariant, and where nothing can go on: out of
 * memory, a failing clock, no webhook client for a subscription.
 */
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif
