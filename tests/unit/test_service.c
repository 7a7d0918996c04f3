/*
 * test_service: the notify messages as a service manager receives them (on
 * a datagram socket this test binds, by path and abstract name, with the
 * sender's credentials), the watchdog interval from its environment, and
 * socket activation with real listening sockets passed as descriptors 3, 4,
 * ... to this process.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <cmocka.h>

#include "service.h"

/* --- a service manager's notify socket ---------------------------------- */

struct manager {
	char dir[64];
	char path[96];
	int fd;
};

static int manager_setup(void **state)
{
	struct manager *m = calloc(1, sizeof(*m));
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int one = 1;

	assert_non_null(m);
	snprintf(m->dir, sizeof(m->dir), "/tmp/ackd-svc.XXXXXX");
	assert_non_null(mkdtemp(m->dir));
	snprintf(m->path, sizeof(m->path), "%s/notify", m->dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", m->path);
	m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(m->fd >= 0);
	assert_int_equal(bind(m->fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	/* As systemd does: the kernel then attaches the sender's credentials. */
	assert_int_equal(setsockopt(m->fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", m->path, 1), 0);
	*state = m;
	return 0;
}

static int manager_teardown(void **state)
{
	struct manager *m = *state;

	unsetenv("NOTIFY_SOCKET");
	close(m->fd);
	unlink(m->path);
	rmdir(m->dir);
	free(m);
	return 0;
}

/* The next datagram on fd (waiting up to a second), NUL-terminated; the sender's pid. */
static void receive(int fd, char *buf, size_t buflen, pid_t *sender)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(struct ucred))];
	} control;
	struct iovec iov = { .iov_base = buf, .iov_len = buflen - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &control,
		.msg_controllen = sizeof(control) };
	struct timeval tv = { .tv_sec = 1 };
	ssize_t n;

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	n = recvmsg(fd, &mh, 0);
	assert_true(n >= 0);
	assert_false(mh.msg_flags & MSG_TRUNC);
	buf[n] = '\0';
	if (sender) {
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
		struct ucred cred;

		assert_non_null(c);
		assert_int_equal(c->cmsg_level, SOL_SOCKET);
		assert_int_equal(c->cmsg_type, SCM_CREDENTIALS);
		memcpy(&cred, CMSG_DATA(c), sizeof(cred));
		*sender = cred.pid;
	}
}

static void expect_message(int fd, const char *want)
{
	char buf[2048];

	receive(fd, buf, sizeof(buf), NULL);
	assert_string_equal(buf, want);
}

/* Nothing more arrived. */
static void expect_nothing(int fd)
{
	char buf[16];

	assert_int_equal(recv(fd, buf, sizeof(buf), MSG_DONTWAIT), -1);
	assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void test_ready_status_stopping_watchdog(void **state)
{
	struct manager *m = *state;
	char buf[2048];
	pid_t sender = 0;

	assert_int_equal(service_ready("spool recovered, 3 records"), 0);
	receive(m->fd, buf, sizeof(buf), &sender);
	assert_string_equal(buf, "READY=1\nSTATUS=spool recovered, 3 records");
	assert_int_equal(sender, getpid());

	assert_int_equal(service_ready(NULL), 0);
	expect_message(m->fd, "READY=1");
	assert_int_equal(service_status("kafka %s, %d brokers up", "reachable", 3), 0);
	expect_message(m->fd, "STATUS=kafka reachable, 3 brokers up");
	assert_int_equal(service_watchdog_ping(), 0);
	expect_message(m->fd, "WATCHDOG=1");
	assert_int_equal(service_stopping(), 0);
	expect_message(m->fd, "STOPPING=1");
	expect_nothing(m->fd);
}

/* A newline in a status would smuggle in another assignment. */
static void test_status_is_one_line(void **state)
{
	struct manager *m = *state;

	assert_int_equal(service_status("a\nREADY=1\r\nb"), 0);
	expect_message(m->fd, "STATUS=a READY=1  b");
	assert_int_equal(service_ready("x\nSTOPPING=1"), 0);
	expect_message(m->fd, "READY=1\nSTATUS=x STOPPING=1");
}

/* A long status is cut, never sent in pieces. */
static void test_long_status_is_truncated(void **state)
{
	struct manager *m = *state;
	char buf[4096], big[3000];

	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(service_status("%s", big), 0);
	receive(m->fd, buf, sizeof(buf), NULL);
	assert_memory_equal(buf, "STATUS=xxx", 10);
	assert_true(strlen(buf) < 1024);
	expect_nothing(m->fd);
}

static uint64_t monotonic_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void test_reload_sequence(void **state)
{
	struct manager *m = *state;
	char buf[256];
	const char *prefix = "RELOADING=1\nMONOTONIC_USEC=";
	uint64_t before, after, stamp;
	char *end;

	before = monotonic_usec();
	assert_int_equal(service_reloading(), 0);
	after = monotonic_usec();
	receive(m->fd, buf, sizeof(buf), NULL);
	assert_memory_equal(buf, prefix, strlen(prefix));
	errno = 0;
	stamp = strtoull(buf + strlen(prefix), &end, 10);
	assert_int_equal(errno, 0);
	assert_int_equal(*end, '\0');
	assert_true(stamp >= before && stamp <= after);

	assert_int_equal(service_ready("reloaded"), 0);
	expect_message(m->fd, "READY=1\nSTATUS=reloaded");
}

static void test_abstract_socket(void **state)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char name[64], env[70];
	socklen_t len;
	int fd;

	(void)state;
	snprintf(name, sizeof(name), "ackd-test-notify-%ld", (long)getpid());
	memcpy(sun.sun_path + 1, name, strlen(name));
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, len), 0);
	snprintf(env, sizeof(env), "@%s", name);
	assert_int_equal(setenv("NOTIFY_SOCKET", env, 1), 0);

	assert_int_equal(service_ready("abstract"), 0);
	expect_message(fd, "READY=1\nSTATUS=abstract");

	unsetenv("NOTIFY_SOCKET");
	close(fd);
}

static void test_without_manager(void **state)
{
	(void)state;
	unsetenv("NOTIFY_SOCKET");
	assert_int_equal(service_ready("x"), 0);
	assert_int_equal(service_watchdog_ping(), 0);
	assert_int_equal(setenv("NOTIFY_SOCKET", "", 1), 0);
	assert_int_equal(service_stopping(), 0);
	unsetenv("NOTIFY_SOCKET");
}

static void test_broken_notify_socket(void **state)
{
	(void)state;
	/* Neither a path nor an abstract name. */
	assert_int_equal(setenv("NOTIFY_SOCKET", "vsock:2:1234", 1), 0);
	assert_int_equal(service_ready(NULL), -1);
	/* Nobody listening there (the first failure warns, the second does not). */
	assert_int_equal(setenv("NOTIFY_SOCKET", "/nonexistent/ackd/notify", 1), 0);
	assert_int_equal(service_watchdog_ping(), -1);
	assert_int_equal(service_watchdog_ping(), -1);
	unsetenv("NOTIFY_SOCKET");
}

/* --- the watchdog interval ---------------------------------------------- */

static int64_t interval_with(const char *usec, const char *pid)
{
	if (usec)
		setenv("WATCHDOG_USEC", usec, 1);
	else
		unsetenv("WATCHDOG_USEC");
	if (pid)
		setenv("WATCHDOG_PID", pid, 1);
	else
		unsetenv("WATCHDOG_PID");
	return service_watchdog_interval_ms();
}

static void test_watchdog_interval(void **state)
{
	char self[32], other[32];

	(void)state;
	snprintf(self, sizeof(self), "%ld", (long)getpid());
	snprintf(other, sizeof(other), "%ld", (long)getpid() + 1);

	assert_int_equal(interval_with(NULL, NULL), 0);
	assert_int_equal(interval_with("2000000", NULL), 1000);
	assert_int_equal(interval_with("30000000", NULL), 15000);
	assert_int_equal(interval_with("2000000", self), 1000);
	assert_int_equal(interval_with("2000000", other), 0);
	assert_int_equal(interval_with("2000000", "init"), 0);
	assert_int_equal(interval_with("2000000", ""), 0);
	assert_int_equal(interval_with("0", NULL), 0);
	assert_int_equal(interval_with("1", NULL), 1);
	assert_int_equal(interval_with("3999", NULL), 1);
	assert_int_equal(interval_with("4000", NULL), 2);
	assert_int_equal(interval_with("18446744073709551615", NULL),
	    (int64_t)(UINT64_MAX / 2000u));
	assert_int_equal(interval_with("18446744073709551616", NULL), 0);
	assert_int_equal(interval_with("", NULL), 0);
	assert_int_equal(interval_with("-2000000", NULL), 0);
	assert_int_equal(interval_with(" 2000000", NULL), 0);
	assert_int_equal(interval_with("2000000s", NULL), 0);
	assert_int_equal(interval_with("30s", NULL), 0);
	assert_int_equal(interval_with(NULL, self), 0);
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

/* --- socket activation -------------------------------------------------- */

#define MAXPASS 8

struct passing {
	char dir[64];
	char unix_path[128];
	int n;
	int fds[MAXPASS]; /* as passed: 3, 4, ... */
};

static int tcp_listener(int family, const char *addr, uint16_t *port, int do_listen)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &in->sin_addr), 1);
		len = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, addr, &in6->sin6_addr), 1);
		len = sizeof(*in6);
	}
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
	if (do_listen)
		assert_int_equal(listen(fd, 16), 0);
	len = sizeof(ss);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	*port = ntohs(family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					: ((struct sockaddr_in6 *)&ss)->sin6_port);
	return fd;
}

static int unix_listener(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(listen(fd, 16), 0);
	return fd;
}

/* Move fds[0..n) to 3, 4, ... as a service manager passes them, without
 * clobbering one another on the way, and without close-on-exec. */
static void pass(struct passing *p, const int *fds, int n, const char *names, pid_t pid)
{
	int high[MAXPASS];
	char buf[32];

	assert_true(n <= MAXPASS);
	for (int i = 0; i < n; i++) {
		high[i] = fcntl(fds[i], F_DUPFD, 100);
		assert_true(high[i] >= 100);
		close(fds[i]);
	}
	for (int i = 0; i < n; i++) {
		assert_int_equal(dup2(high[i], 3 + i), 3 + i);
		close(high[i]);
		p->fds[i] = 3 + i;
	}
	p->n = n;
	snprintf(buf, sizeof(buf), "%d", n);
	setenv("LISTEN_FDS", buf, 1);
	snprintf(buf, sizeof(buf), "%ld", (long)pid);
	setenv("LISTEN_PID", buf, 1);
	if (names)
		setenv("LISTEN_FDNAMES", names, 1);
	else
		unsetenv("LISTEN_FDNAMES");
}

static int passing_setup(void **state)
{
	struct passing *p = calloc(1, sizeof(*p));

	assert_non_null(p);
	snprintf(p->dir, sizeof(p->dir), "/tmp/ackd-svc.XXXXXX");
	assert_non_null(mkdtemp(p->dir));
	snprintf(p->unix_path, sizeof(p->unix_path), "%s/ackd.sock", p->dir);
	*state = p;
	return 0;
}

static int passing_teardown(void **state)
{
	struct passing *p = *state;
	char link[160];

	service_unused_fds_warn();
	for (int i = 0; i < p->n; i++)
		close(p->fds[i]);
	unlink(p->unix_path);
	snprintf(link, sizeof(link), "%s/link", p->dir);
	unlink(link);
	rmdir(p->dir);
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDNAMES");
	free(p);
	return 0;
}

static int is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void test_listen_fds_matched_by_address(void **state)
{
	struct passing *p = *state;
	uint16_t port_a, port_b, port_c;
	int fds[3], other;
	char addr[64];

	fds[0] = tcp_listener(AF_INET, "127.0.0.1", &port_a, 1);
	fds[1] = unix_listener(p->unix_path);
	fds[2] = tcp_listener(AF_INET, "127.0.0.1", &port_b, 1);
	pass(p, fds, 3, "ackd.socket:ackd.socket:extra", getpid());
	/* Close-on-exec is off, as a service manager passes them. */
	for (int i = 0; i < 3; i++)
		assert_false(fcntl(3 + i, F_GETFD) & FD_CLOEXEC);

	assert_int_equal(service_listen_fds_init(), 3);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDNAMES"));
	for (int i = 0; i < 3; i++)
		assert_true(fcntl(3 + i, F_GETFD) & FD_CLOEXEC);

	/* A port nobody passed, and the right port on another address. */
	other = tcp_listener(AF_INET, "127.0.0.1", &port_c, 0);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port_c);
	assert_int_equal(service_take_tcp_fd(addr), -1);
	close(other);
	snprintf(addr, sizeof(addr), "0.0.0.0:%u", (unsigned)port_a);
	assert_int_equal(service_take_tcp_fd(addr), -1);
	snprintf(addr, sizeof(addr), "127.0.0.2:%u", (unsigned)port_a);
	assert_int_equal(service_take_tcp_fd(addr), -1);
	assert_int_equal(service_take_unix_fd("/tmp/ackd-nowhere.sock"), -1);
	assert_int_equal(service_take_unix_fd(""), -1);
	assert_int_equal(service_take_tcp_fd("nonsense"), -1);
	assert_int_equal(service_take_tcp_fd(":8470"), -1);

	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port_a);
	assert_int_equal(service_take_tcp_fd(addr), 3);
	assert_int_equal(service_take_tcp_fd(addr), -1); /* taken once */
	assert_int_equal(service_take_unix_fd(p->unix_path), 4);
	assert_int_equal(service_take_unix_fd(p->unix_path), -1);

	/* Nobody took 5: warned about and closed; the taken ones stay open. */
	service_unused_fds_warn();
	assert_false(is_open(5));
	assert_true(is_open(3));
	assert_true(is_open(4));
	p->n = 2;
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port_b);
	assert_int_equal(service_take_tcp_fd(addr), -1);
}

/* IPv6, IPv4-mapped IPv6 as IPv4, a Unix path through a symlinked directory. */
static void test_listen_fds_address_forms(void **state)
{
	struct passing *p = *state;
	uint16_t port4, port6;
	int fds[3];
	char addr[64], link[160], via_link[200];

	fds[0] = tcp_listener(AF_INET6, "::1", &port6, 1);
	fds[1] = tcp_listener(AF_INET, "127.0.0.1", &port4, 1);
	fds[2] = unix_listener(p->unix_path);
	pass(p, fds, 3, NULL, getpid());
	assert_int_equal(service_listen_fds_init(), 3);

	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port6);
	assert_int_equal(service_take_tcp_fd(addr), -1);
	snprintf(addr, sizeof(addr), "[::1]:%u", (unsigned)port6);
	assert_int_equal(service_take_tcp_fd(addr), 3);
	snprintf(addr, sizeof(addr), "[::ffff:127.0.0.1]:%u", (unsigned)port4);
	assert_int_equal(service_take_tcp_fd(addr), 4);

	snprintf(link, sizeof(link), "%s/link", p->dir);
	assert_int_equal(symlink(p->dir, link), 0);
	snprintf(via_link, sizeof(via_link), "%s/other.sock", link);
	assert_int_equal(service_take_unix_fd(via_link), -1);
	snprintf(via_link, sizeof(via_link), "%s/ackd.sock", link);
	assert_int_equal(service_take_unix_fd(via_link), 5);
}

/* Only listening stream sockets are listeners. */
static void test_listen_fds_not_listening(void **state)
{
	struct passing *p = *state;
	uint16_t port;
	int fds[1];
	char addr[64];

	fds[0] = tcp_listener(AF_INET, "127.0.0.1", &port, 0);
	pass(p, fds, 1, "ackd.socket", getpid());
	assert_int_equal(service_listen_fds_init(), 1);
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port);
	assert_int_equal(service_take_tcp_fd(addr), -1);
}

/* LISTEN_PID names another process: not ours, but still removed. */
static void test_listen_fds_for_another_process(void **state)
{
	struct passing *p = *state;
	uint16_t port;
	int fds[1];
	char addr[64];

	fds[0] = tcp_listener(AF_INET, "127.0.0.1", &port, 1);
	pass(p, fds, 1, "ackd.socket", getpid() + 1);
	assert_int_equal(service_listen_fds_init(), 0);
	assert_null(getenv("LISTEN_FDS"));
	assert_null(getenv("LISTEN_PID"));
	assert_null(getenv("LISTEN_FDNAMES"));
	snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)port);
	assert_int_equal(service_take_tcp_fd(addr), -1);
	/* Not ours to close either. */
	service_unused_fds_warn();
	assert_true(is_open(3));
}

static void test_listen_fds_malformed(void **state)
{
	(void)state;
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_PID");
	assert_int_equal(service_listen_fds_init(), 0);

	setenv("LISTEN_PID", "not-a-pid", 1);
	setenv("LISTEN_FDS", "1", 1);
	assert_int_equal(service_listen_fds_init(), 0);
	assert_null(getenv("LISTEN_PID"));

	char pid[32];
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "many", 1);
	assert_int_equal(service_listen_fds_init(), 0);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "99999999999", 1);
	assert_int_equal(service_listen_fds_init(), 0);
	setenv("LISTEN_PID", pid, 1);
	setenv("LISTEN_FDS", "0", 1);
	assert_int_equal(service_listen_fds_init(), 0);
	assert_int_equal(service_take_tcp_fd("127.0.0.1:8470"), -1);
	service_unused_fds_warn();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ready_status_stopping_watchdog,
		    manager_setup, manager_teardown),
		cmocka_unit_test_setup_teardown(test_status_is_one_line, manager_setup,
		    manager_teardown),
		cmocka_unit_test_setup_teardown(test_long_status_is_truncated, manager_setup,
		    manager_teardown),
		cmocka_unit_test_setup_teardown(test_reload_sequence, manager_setup,
		    manager_teardown),
		cmocka_unit_test(test_abstract_socket),
		cmocka_unit_test(test_without_manager),
		cmocka_unit_test(test_broken_notify_socket),
		cmocka_unit_test(test_watchdog_interval),
		cmocka_unit_test_setup_teardown(test_listen_fds_matched_by_address,
		    passing_setup, passing_teardown),
		cmocka_unit_test_setup_teardown(test_listen_fds_address_forms, passing_setup,
		    passing_teardown),
		cmocka_unit_test_setup_teardown(test_listen_fds_not_listening, passing_setup,
		    passing_teardown),
		cmocka_unit_test_setup_teardown(test_listen_fds_for_another_process,
		    passing_setup, passing_teardown),
		cmocka_unit_test(test_listen_fds_malformed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
