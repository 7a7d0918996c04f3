/*
 * service: systemd's notify and socket-activation protocols, without
 * libsystemd.
 *
 * Design. Both protocols are small and documented as stable interfaces
 * (sd_notify(3), sd_listen_fds(3), systemd's "Interface Portability and
 * Stability" promise):
 *
 *   notify  one AF_UNIX datagram of "KEY=value" lines to $NOTIFY_SOCKET, a
 *           filesystem path or, with a leading '@', an abstract name. The
 *           manager learns the sender from SCM_CREDENTIALS, which the kernel
 *           attaches by itself because the receiver set SO_PASSCRED.
 *   listen  descriptors 3 .. 3+$LISTEN_FDS-1, for the process whose pid is
 *           $LISTEN_PID, named by the colon-separated $LISTEN_FDNAMES.
 *
 * Implementing them here (about what libsystemd's own versions do for these
 * cases) gives one code path in every build: the unit tests exercise exactly
 * what ships, ackd does not link libsystemd and its dependencies, and a
 * build without systemd's headers still works under systemd.
 *
 * A passed socket is matched to a listener by the address it is bound to,
 * not by its name or position: the configuration stays the one truth about
 * where ackd listens, and a socket unit that disagrees with it is reported
 * instead of silently served.
 *
 * Threads: notifications are sent from any thread (a socket per message, no
 * shared state but a flag). The socket-activation calls run on the main
 * thread during start-up.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "service.h"
#include "util.h"

#define LISTEN_FDS_START 3
#define MSG_MAX 1024

/* --- notifications ------------------------------------------------------ */

static atomic_bool notify_warned;

static void notify_failed(const char *what, const char *sock, int err)
{
	errno = err;
	if (!atomic_exchange(&notify_warned, true))
		log_warn("service: %s NOTIFY_SOCKET %s", what, sock);
	else
		log_debug("service: %s NOTIFY_SOCKET %s: %s", what, sock, strerror(err));
}

static int notify(const char *msg)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t n, len = strlen(msg);
	socklen_t salen;
	ssize_t sent;
	int fd;

	if (!sock || !sock[0])
		return 0;
	n = strlen(sock);
	if ((sock[0] != '/' && sock[0] != '@') || n >= sizeof(sun.sun_path)) {
		notify_failed("cannot use", sock, EAFNOSUPPORT);
		return -1;
	}
	memcpy(sun.sun_path, sock, n);
	if (sock[0] == '@')
		sun.sun_path[0] = '\0'; /* abstract: the length ends the name */
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);

	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		notify_failed("socket for", sock, errno);
		return -1;
	}
	do
		sent = sendto(fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&sun, salen);
	while (sent < 0 && errno == EINTR);
	if (sent < 0 || (size_t)sent != len) {
		notify_failed("cannot send to", sock, sent < 0 ? errno : EMSGSIZE);
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

/* A STATUS= value is one line: a newline would start another assignment. */
static void one_line(char *s)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '\r')
			*s = ' ';
}

int service_ready(const char *status)
{
	char msg[MSG_MAX];

	if (!status)
		return notify("READY=1");
	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
	one_line(msg + strlen("READY=1\n"));
	return notify(msg);
}

int service_status(const char *fmt, ...)
{
	char msg[MSG_MAX] = "STATUS=";
	size_t off = strlen(msg);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg + off, sizeof(msg) - off, fmt, ap);
	va_end(ap);
	one_line(msg + off);
	return notify(msg);
}

int service_stopping(void)
{
	return notify("STOPPING=1");
}

int service_reloading(void)
{
	char msg[64];
	struct timespec ts;

	ts = clock_now(CLOCK_MONOTONIC);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
	    (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u);
	return notify(msg);
}

int service_watchdog_ping(void)
{
	return notify("WATCHDOG=1");
}

/* A decimal number without sign, spaces or trailing text. */
static int parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

int64_t service_watchdog_interval_ms(void)
{
	const char *usec_s = getenv("WATCHDOG_USEC");
	const char *pid_s = getenv("WATCHDOG_PID");
	uint64_t usec, pid, ms;

	if (!usec_s)
		return 0;
	if (parse_u64(usec_s, &usec) < 0) {
		log_warnx("service: WATCHDOG_USEC=%s is not a number; watchdog off", usec_s);
		return 0;
	}
	if (pid_s) {
		if (parse_u64(pid_s, &pid) < 0) {
			log_warnx("service: WATCHDOG_PID=%s is not a pid; watchdog off", pid_s);
			return 0;
		}
		if (pid != (uint64_t)getpid())
			return 0; /* meant for another process */
	}
	if (usec == 0)
		return 0;
	ms = usec / 2000u;
	return ms > 0 ? (int64_t)ms : 1;
}

/* --- socket activation -------------------------------------------------- */

struct passed {
	int fd; /* -1 once taken */
	char *name;
};

static struct passed *passed;
static size_t npassed;

static void forget(void)
{
	for (size_t i = 0; i < npassed; i++)
		free(passed[i].name);
	free(passed);
	passed = NULL;
	npassed = 0;
}

static int listen_fds(void)
{
	const char *pid_s = getenv("LISTEN_PID");
	const char *n_s = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	uint64_t pid, n;

	if (!pid_s || !n_s)
		return 0;
	if (parse_u64(pid_s, &pid) < 0) {
		log_warnx("service: LISTEN_PID=%s is not a pid; ignoring passed sockets", pid_s);
		return 0;
	}
	if (pid != (uint64_t)getpid())
		return 0; /* meant for another process */
	/* Passed descriptors fit under the limit they were passed with. */
	if (parse_u64(n_s, &n) < 0 || n > (uint64_t)sysconf(_SC_OPEN_MAX)) {
		log_warnx("service: LISTEN_FDS=%s is not a count; ignoring passed sockets", n_s);
		return 0;
	}
	passed = xcalloc(n ? n : 1, sizeof(*passed));
	for (uint64_t i = 0; i < n; i++) {
		int fd = LISTEN_FDS_START + (int)i;
		int flags = fcntl(fd, F_GETFD);

		if (flags < 0) {
			log_warn("service: passed descriptor %d", fd);
			continue;
		}
		if (!(flags & FD_CLOEXEC) && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
			log_warn("service: close-on-exec on passed descriptor %d", fd);
		passed[npassed].fd = fd;
		passed[npassed].name = NULL;
		if (names) {
			const char *end = strchr(names, ':');
			size_t len = end ? (size_t)(end - names) : strlen(names);

			if (len > 0)
				passed[npassed].name = xstrndup(names, len);
			names = end ? end + 1 : NULL;
		}
		npassed++;
	}
	return (int)npassed;
}

int service_listen_fds_init(void)
{
	int n;

	forget();
	n = listen_fds();
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (n > 0)
		log_debug("service: %d socket%s passed by the service manager", n,
		    n == 1 ? "" : "s");
	return n;
}

/* A listening stream socket, and what it is bound to. */
static bool bound_listener(int fd, struct sockaddr_storage *ss, socklen_t *len)
{
	int type = 0, acc = 0;
	socklen_t tl = sizeof(type), al = sizeof(acc);

	*len = sizeof(*ss);
	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_STREAM)
		return false;
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) < 0 || !acc)
		return false;
	return getsockname(fd, (struct sockaddr *)ss, len) == 0;
}

/* An IP address in a comparable form: IPv4-mapped IPv6 becomes IPv4. */
struct ip {
	int family;
	unsigned char addr[16];
	uint16_t port;
	uint32_t scope;
};

static bool to_ip(const struct sockaddr *sa, struct ip *ip)
{
	memset(ip, 0, sizeof(*ip));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		ip->family = AF_INET;
		memcpy(ip->addr, &in->sin_addr, 4);
		ip->port = ntohs(in->sin_port);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		ip->port = ntohs(in6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			ip->family = AF_INET;
			memcpy(ip->addr, &in6->sin6_addr.s6_addr[12], 4);
			return true;
		}
		ip->family = AF_INET6;
		memcpy(ip->addr, &in6->sin6_addr, 16);
		ip->scope = in6->sin6_scope_id;
		return true;
	}
	return false;
}

static bool same_ip(const struct ip *a, const struct ip *b)
{
	return a->family == b->family && a->port == b->port && a->scope == b->scope &&
	    memcmp(a->addr, b->addr, sizeof(a->addr)) == 0;
}

/* "host:port" or "[v6]:port", resolved as http.c's listen_tcp() does. */
static struct addrinfo *resolve(const char *hostport)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	const char *colon = strrchr(hostport, ':');
	char host[256];

	if (!colon || colon == hostport || colon[1] == '\0')
		return NULL;
	if (hostport[0] == '[' && colon[-1] == ']')
		snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport - 2), hostport + 1);
	else
		snprintf(host, sizeof(host), "%.*s", (int)(colon - hostport), hostport);
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0)
		return NULL;
	return res;
}

static const char *name_of(const struct passed *p)
{
	return p->name ? p->name : "unnamed";
}

static int take(size_t i, const char *what, const char *where)
{
	int fd = passed[i].fd;

	passed[i].fd = -1;
	log_info("service: %s %s on socket %d (%s) from the service manager", what, where, fd,
	    name_of(&passed[i]));
	return fd;
}

int service_take_tcp_fd(const char *hostport)
{
	struct addrinfo *res, *ai;
	int fd = -1;

	if (npassed == 0 || !(res = resolve(hostport)))
		return -1;
	for (size_t i = 0; i < npassed && fd < 0; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		struct ip bound, want;

		if (passed[i].fd < 0 || !bound_listener(passed[i].fd, &ss, &len) ||
		    !to_ip((struct sockaddr *)&ss, &bound))
			continue;
		for (ai = res; ai; ai = ai->ai_next) {
			if (to_ip(ai->ai_addr, &want) && same_ip(&bound, &want)) {
				fd = take(i, "listen.http", hostport);
				break;
			}
		}
	}
	freeaddrinfo(res);
	return fd;
}

/* The directory part of path ("." when it has none) and its file name. */
static void split_path(const char *path, char *dir, size_t dirlen, const char **base)
{
	const char *slash = strrchr(path, '/');

	if (!slash) {
		snprintf(dir, dirlen, ".");
		*base = path;
	} else if (slash == path) {
		snprintf(dir, dirlen, "/");
		*base = slash + 1;
	} else {
		snprintf(dir, dirlen, "%.*s", (int)(slash - path), path);
		*base = slash + 1;
	}
}

/* The same string, or the same name in the same directory after symlinks. */
static bool same_unix_path(const char *a, const char *b)
{
	char da[PATH_MAX], db[PATH_MAX], ra[PATH_MAX], rb[PATH_MAX];
	const char *ba, *bb;

	if (strcmp(a, b) == 0)
		return true;
	split_path(a, da, sizeof(da), &ba);
	split_path(b, db, sizeof(db), &bb);
	if (strcmp(ba, bb) != 0 || !realpath(da, ra) || !realpath(db, rb))
		return false;
	return strcmp(ra, rb) == 0;
}

/* The filesystem path a Unix socket is bound to, or false (unbound, abstract). */
static bool unix_path_of(const struct sockaddr_storage *ss, socklen_t len, char *out,
    size_t outlen)
{
	const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
	size_t n;

	if (ss->ss_family != AF_UNIX || len <= offsetof(struct sockaddr_un, sun_path) ||
	    sun->sun_path[0] == '\0')
		return false;
	n = strnlen(sun->sun_path, len - offsetof(struct sockaddr_un, sun_path));
	if (n >= outlen)
		return false;
	memcpy(out, sun->sun_path, n);
	out[n] = '\0';
	return true;
}

int service_take_unix_fd(const char *path)
{
	if (!path[0])
		return -1;
	for (size_t i = 0; i < npassed; i++) {
		struct sockaddr_storage ss;
		socklen_t len;
		char bound[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];

		if (passed[i].fd < 0 || !bound_listener(passed[i].fd, &ss, &len) ||
		    !unix_path_of(&ss, len, bound, sizeof(bound)))
			continue;
		if (same_unix_path(bound, path))
			return take(i, "listen.unix", path);
	}
	return -1;
}

/* What a passed socket is, for the warning. */
static void describe(int fd, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[NI_MAXHOST], port[NI_MAXSERV];
	int type = 0, acc = 0;
	socklen_t tl = sizeof(type), al = sizeof(acc);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0) {
		snprintf(out, outlen, "not a socket");
		return;
	}
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
	getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al);
	if (ss.ss_family == AF_UNIX) {
		char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];

		if (unix_path_of(&ss, len, path, sizeof(path)))
			snprintf(out, outlen, "unix %s", path);
		else
			snprintf(out, outlen, "unix, abstract or unbound");
	} else if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
	    getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
		NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
		snprintf(out, outlen, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
	} else {
		snprintf(out, outlen, "address family %d", ss.ss_family);
	}
	if (type != SOCK_STREAM || !acc) {
		size_t n = strlen(out);
		snprintf(out + n, outlen - n, ", not a listening stream socket");
	}
}

void service_unused_fds_warn(void)
{
	for (size_t i = 0; i < npassed; i++) {
		char what[160];

		if (passed[i].fd < 0)
			continue;
		describe(passed[i].fd, what, sizeof(what));
		log_warnx("service: socket %d (%s, %s) from the service manager matches neither "
			  "listen.http nor listen.unix; closing it",
		    passed[i].fd, name_of(&passed[i]), what);
		close(passed[i].fd);
		passed[i].fd = -1;
	}
	forget();
}
