/*
 * http_baseline: the HTTP ceiling for bench/publish.
 *
 * A libmicrohttpd server with the settings of ackd's servers (daemon/http.c:
 * MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO, a
 * thread pool of 2, the same connection limit and timeout, a listen socket
 * made by us with a backlog of 4096; ackd's poll-loop server answers no
 * faster bare, docs/performance.md) that answers every
 * request with 202 and a small JSON body shaped like ackd's "spooled" answer,
 * and does nothing else: the request body is read and dropped. What ackd
 * reaches on the same machine, divided by what this reaches, is the share of
 * the HTTP layer's ceiling that ackd keeps.
 *
 * Threads: libmicrohttpd's pool; the main thread waits for SIGTERM/SIGINT.
 *
 * usage: http_baseline [-l host:port] [-u /path/to.sock]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <microhttpd.h>

#define CONNECTION_LIMIT 10000

/* The size and shape of ackd's 202 answer to a single publish. */
static const char answer[] =
    "{\"id\":\"01JDX3Q4M8V6R2T9K7W5Y1Z0AB\",\"status\":\"spooled\",\"topic\":\"bench\"}";

static char marker;

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	(void)cls;
	(void)url;
	(void)method;
	(void)version;
	(void)upload_data;
	if (*con_cls == NULL) {
		*con_cls = &marker;
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	resp = MHD_create_response_from_buffer(sizeof(answer) - 1, (void *)answer,
	    MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
	ret = MHD_queue_response(conn, 202, resp);
	MHD_destroy_response(resp);
	return ret;
}

static int listen_tcp(const char *addr)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	const char *colon = strrchr(addr, ':');
	char host[256];
	int fd, one = 1;

	if (!colon) {
		fprintf(stderr, "http_baseline: expected host:port, got %s\n", addr);
		return -1;
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	if (getaddrinfo(host, colon + 1, &hints, &res) != 0) {
		fprintf(stderr, "http_baseline: cannot resolve %s\n", addr);
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "http_baseline: listen %s: %s\n", addr, strerror(errno));
		freeaddrinfo(res);
		return -1;
	}
	freeaddrinfo(res);
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "http_baseline: path too long: %s\n", path);
		return -1;
	}
	strcpy(sun.sun_path, path);
	unlink(path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 4096) < 0) {
		fprintf(stderr, "http_baseline: listen %s: %s\n", path, strerror(errno));
		return -1;
	}
	return fd;
}

static struct MHD_Daemon *serve(int fd)
{
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME |
	    MHD_USE_ERROR_LOG | MHD_USE_TURBO;

	return MHD_start_daemon(flags, 0, NULL, NULL, handle, NULL,
	    MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)2,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
	    MHD_OPTION_END);
}

int main(int argc, char **argv)
{
	struct MHD_Daemon *d[2] = { NULL, NULL };
	const char *tcp = NULL, *unix_path = NULL;
	sigset_t sigs;
	int c, sig, fd;

	while ((c = getopt(argc, argv, "l:u:")) != -1) {
		switch (c) {
		case 'l': tcp = optarg; break;
		case 'u': unix_path = optarg; break;
		default:
			fprintf(stderr, "usage: http_baseline [-l host:port] [-u /path/to.sock]\n");
			return 2;
		}
	}
	if (!tcp && !unix_path) {
		fprintf(stderr, "usage: http_baseline [-l host:port] [-u /path/to.sock]\n");
		return 2;
	}
	/* Block the stop signals before libmicrohttpd starts its threads. */
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);

	if (tcp) {
		if ((fd = listen_tcp(tcp)) < 0 || !(d[0] = serve(fd))) {
			fprintf(stderr, "http_baseline: cannot serve %s\n", tcp);
			return 1;
		}
	}
	if (unix_path) {
		if ((fd = listen_unix(unix_path)) < 0 || !(d[1] = serve(fd))) {
			fprintf(stderr, "http_baseline: cannot serve %s\n", unix_path);
			return 1;
		}
	}
	fprintf(stderr, "http_baseline: listening%s%s%s%s\n", tcp ? " on " : "", tcp ? tcp : "",
	    unix_path ? " on " : "", unix_path ? unix_path : "");
	while (sigwait(&sigs, &sig) != 0)
		continue;
	for (int i = 0; i < 2; i++)
		if (d[i])
			MHD_stop_daemon(d[i]);
	if (unix_path)
		unlink(unix_path);
	return 0;
}
