/*
 * service: what ackd tells its service manager, and the listening sockets the
 * service manager hands it (systemd's notify and socket-activation protocols,
 * sd_notify(3) and sd_listen_fds(3)).
 *
 * Outside a service manager (no NOTIFY_SOCKET, no LISTEN_FDS) every call is a
 * cheap no-op, so callers never ask whether they run under systemd.
 */
#ifndef ACKD_SERVICE_H
#define ACKD_SERVICE_H

#include <stdint.h>

/* --- notifications ------------------------------------------------------ */

/*
 * Each sends one datagram to $NOTIFY_SOCKET (a path, or an abstract socket
 * when it starts with '@') and returns 0, or 0 without sending when
 * NOTIFY_SOCKET is unset. -1 when it could not be sent; the first failure is
 * logged as a warning, later ones at debug level. Safe from any thread.
 */

/* "READY=1", plus "STATUS=status" unless status is NULL. Also ends a reload. */
int service_ready(const char *status);

/* "STATUS=..." (a newline in the text becomes a space). */
int service_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "STOPPING=1": shutdown has begun. */
int service_stopping(void);

/*
 * "RELOADING=1" and "MONOTONIC_USEC=" now: a reload has begun; end it with
 * service_ready(). (systemd 253's Type=notify-reload needs the timestamp;
 * older managers ignore it.)
 */
int service_reloading(void);

/* "WATCHDOG=1": the daemon's loops are alive. */
int service_watchdog_ping(void);

/*
 * How often to call service_watchdog_ping(): half of $WATCHDOG_USEC in
 * milliseconds (at least 1), or 0 when the watchdog is off: WATCHDOG_USEC
 * unset, 0 or malformed, or WATCHDOG_PID set to another process's pid.
 */
int64_t service_watchdog_interval_ms(void);

/* --- socket activation -------------------------------------------------- */

/*
 * These four run on the main thread before other threads start (they use
 * unsetenv(3) and unlocked module state).
 *
 * service_listen_fds_init() reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES
 * once, removes them from the environment, marks the passed descriptors
 * (3, 4, ...) close-on-exec and keeps them. It returns how many were passed
 * to this process; malformed variables are logged and count as none.
 */
int service_listen_fds_init(void);

/*
 * A passed listening stream socket bound to hostport ("host:port" or
 * "[v6]:port", host resolved as http.c does, so numeric hosts never touch a
 * resolver; addresses and ports compared, IPv4-mapped IPv6 as IPv4), or -1.
 * The caller takes ownership: it is no longer the module's to close.
 */
int service_take_tcp_fd(const char *hostport);

/*
 * A passed listening stream socket bound to the Unix path (the same string,
 * or the same file name in the same directory after symlinks, such as
 * /var/run and /run), or -1. The caller takes ownership. The service manager
 * created the socket file: the caller must not chmod, chown or unlink it.
 */
int service_take_unix_fd(const char *path);

/*
 * Log every passed socket nobody took (its address and name), close it and
 * forget them all. Call once the listeners are up.
 */
void service_unused_fds_warn(void);

#endif
