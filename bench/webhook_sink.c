/*
 * webhook_sink: the webhook endpoint for bench/webhook.
 *
 * Design. One thread, one epoll set (level-triggered), any number of HTTP/1.1
 * keep-alive connections, pipelined requests answered in order. Every POST
 * (any path) is answered "200 OK" with Content-Length: 0 as soon as its body
 * is complete; the body is looked at only to count the messages of a batch
 * (a body that starts {"messages":[ holds one message per {"id": in it,
 * which cannot occur inside a JSON string; any other body is one message).
 * For each POST the sink counts it
 * and records the CLOCK_MONOTONIC time at which its last byte was read,
 * together with its webhook-id header, so that the script can compute
 * publish-to-webhook latency on the same clock (Python's time.monotonic_ns()
 * reads the same clock).
 *
 * Control requests (GET, not counted):
 *   GET /stats        {"requests":N,"messages":M,"bytes":B,"first_ns":T0,"last_ns":T1,
 *                      "marker_ns":TM,"conns":C,"max_conns":M}
 *                     first_ns/last_ns: arrival of the first and last POST
 *                     since the last reset; marker_ns: arrival of the POST
 *                     whose webhook-id is the marker (0: not yet)
 *   GET /reset        forget counts, records and the marker
 *   GET /marker/ID    set the marker to ID (and clear marker_ns)
 *   GET /dump         write the records since the last reset to the -o file,
 *                     one "webhook-id monotonic_ns" line each; answers
 *                     {"records":N}
 *
 * A request with Transfer-Encoding (chunked bodies) gets 411 and the
 * connection is closed: libcurl, wrk and bench/loadgen all send
 * Content-Length.
 *
 * usage: webhook_sink [-l host:port] [-o records-file]
 *   -l  address to listen on (default 127.0.0.1:0); the port actually bound
 *       is printed on stdout as "port N" once the socket listens
 *   -o  where GET /dump writes (default: none, /dump answers 500)
 * SIGTERM or SIGINT ends it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define READ_CHUNK 65536
#define MAX_HEADER 65536         /* a request head larger than this is refused */
#define MAX_BODY (64 << 20)
#define ID_MAX 64

static const char ok_answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";

struct conn {
	int fd;
	char *in;            /* bytes read, not yet consumed */
	size_t in_len, in_cap;
	size_t scanned;      /* where the search for the end of the head resumes */
	char *out;           /* answer bytes not yet written */
	size_t out_off, out_len, out_cap;
	bool want_out;       /* EPOLLOUT is armed */
	bool close_after;    /* close once out is written */
};

struct record {
	uint64_t ns;
	uint8_t id_len;
	char id[ID_MAX];
};

static struct {
	uint64_t requests, messages, bytes, first_ns, last_ns, marker_ns;
	struct record *rec;
	size_t nrec, rec_cap;
	char marker[ID_MAX];
	size_t marker_len;
	long conns, max_conns;
	const char *dump_path;
	int epfd;
} g;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what)
{
	fprintf(stderr, "webhook_sink: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n);

	if (!q) {
		fprintf(stderr, "webhook_sink: out of memory\n");
		exit(1);
	}
	return q;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* --- connections ------------------------------------------------------------ */

static void conn_close(struct conn *c)
{
	epoll_ctl(g.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c->in);
	free(c->out);
	free(c);
	g.conns--;
}

static void out_append(struct conn *c, const char *p, size_t n)
{
	if (c->out_off > 0 && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		while (cap < c->out_len + n)
			cap *= 2;
		c->out = xrealloc(c->out, cap);
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, p, n);
	c->out_len += n;
}

static void set_want_out(struct conn *c, bool want)
{
	struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c };

	if (c->want_out == want)
		return;
	if (epoll_ctl(g.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl");
	c->want_out = want;
}

/*
 * Write what is pending (the rest waits for EPOLLOUT); false when the
 * connection is to be closed now: a write error, or all written and
 * close_after set.
 */
static bool flush_out(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				set_want_out(c, true);
				return true;
			}
			return false;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	set_want_out(c, false);
	return !c->close_after;
}

/* --- requests ------------------------------------------------------------------ */

static void answer_json(struct conn *c, int status, const char *body)
{
	char head[256];
	int n = snprintf(head, sizeof(head),
	    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
	    status, status == 200 ? "OK" : status == 404 ? "Not Found" : "Error", strlen(body));

	out_append(c, head, (size_t)n);
	out_append(c, body, strlen(body));
}

/* Messages in a POST body: those of a batch, else 1. */
static uint64_t messages_in(const char *body, size_t len)
{
	static const char batch[] = "{\"messages\":[", id[] = "{\"id\":";
	uint64_t n = 0;
	const char *p = body, *end = body + len;

	if (len < sizeof(batch) - 1 || memcmp(body, batch, sizeof(batch) - 1) != 0)
		return 1;
	while ((p = memmem(p, (size_t)(end - p), id, sizeof(id) - 1)) != NULL) {
		n++;
		p += sizeof(id) - 1;
	}
	return n;
}

static void record_post(const char *id, size_t id_len, const char *body, size_t body_len)
{
	uint64_t now = mono_ns();
	struct record *r;

	if (g.requests == 0)
		g.first_ns = now;
	g.last_ns = now;
	g.requests++;
	g.messages += messages_in(body, body_len);
	g.bytes += body_len;
	if (g.marker_len && id_len == g.marker_len && memcmp(id, g.marker, id_len) == 0)
		g.marker_ns = now;
	if (g.nrec == g.rec_cap) {
		g.rec_cap = g.rec_cap ? g.rec_cap * 2 : 65536;
		g.rec = xrealloc(g.rec, g.rec_cap * sizeof(*g.rec));
	}
	r = &g.rec[g.nrec++];
	r->ns = now;
	if (id_len >= ID_MAX)
		id_len = ID_MAX - 1;
	r->id_len = (uint8_t)id_len;
	memcpy(r->id, id, id_len);
}

static void control(struct conn *c, const char *target, size_t tlen)
{
	char buf[512];

	if (tlen == 6 && memcmp(target, "/stats", 6) == 0) {
		snprintf(buf, sizeof(buf),
		    "{\"requests\":%llu,\"messages\":%llu,\"bytes\":%llu,\"first_ns\":%llu,"
		    "\"last_ns\":%llu,\"marker_ns\":%llu,\"conns\":%ld,\"max_conns\":%ld}",
		    (unsigned long long)g.requests, (unsigned long long)g.messages,
		    (unsigned long long)g.bytes,
		    (unsigned long long)g.first_ns, (unsigned long long)g.last_ns,
		    (unsigned long long)g.marker_ns, g.conns, g.max_conns);
		answer_json(c, 200, buf);
	} else if (tlen == 6 && memcmp(target, "/reset", 6) == 0) {
		g.requests = g.messages = g.bytes = g.first_ns = g.last_ns = g.marker_ns = 0;
		g.nrec = 0;
		g.marker_len = 0;
		g.max_conns = g.conns;
		answer_json(c, 200, "{}");
	} else if (tlen > 8 && tlen - 8 < ID_MAX && memcmp(target, "/marker/", 8) == 0) {
		g.marker_len = tlen - 8;
		memcpy(g.marker, target + 8, g.marker_len);
		g.marker_ns = 0;
		answer_json(c, 200, "{}");
	} else if (tlen == 5 && memcmp(target, "/dump", 5) == 0) {
		FILE *f = g.dump_path ? fopen(g.dump_path, "w") : NULL;
		if (!f) {
			answer_json(c, 500, "{\"error\":\"no -o file, or it cannot be written\"}");
			return;
		}
		for (size_t i = 0; i < g.nrec; i++)
			fprintf(f, "%.*s %llu\n", (int)g.rec[i].id_len, g.rec[i].id,
			    (unsigned long long)g.rec[i].ns);
		if (fclose(f) != 0) {
			answer_json(c, 500, "{\"error\":\"writing the records failed\"}");
			return;
		}
		snprintf(buf, sizeof(buf), "{\"records\":%zu}", g.nrec);
		answer_json(c, 200, buf);
	} else {
		answer_json(c, 404, "{\"error\":\"not found\"}");
	}
}

static bool name_is(const char *line, size_t name_len, const char *name)
{
	return strlen(name) == name_len && strncasecmp(line, name, name_len) == 0;
}

/*
 * Consume every complete request in c->in and queue its answer. Returns
 * false when the connection must be closed now (malformed input).
 */
static bool handle_input(struct conn *c)
{
	size_t pos = 0;

	for (;;) {
		const char *base = c->in + pos;
		size_t avail = c->in_len - pos;
		size_t from = c->scanned > 3 ? c->scanned - 3 : 0;
		const char *end, *p, *line_end, *sp1, *sp2;
		const char *id = NULL;
		size_t id_len = 0, head_len, body_len = 0;
		bool is_post, chunked = false, conn_close_hdr = false, http10;

		if (avail == 0 || from >= avail)
			break;
		end = memmem(base + from, avail - from, "\r\n\r\n", 4);
		if (!end) {
			c->scanned = avail;
			if (avail > MAX_HEADER)
				return false;
			break;
		}
		head_len = (size_t)(end - base) + 4;

		/* Request line: METHOD SP target SP version. */
		line_end = memchr(base, '\r', head_len);
		sp1 = memchr(base, ' ', (size_t)(line_end - base));
		sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(line_end - sp1 - 1)) : NULL;
		if (!sp1 || !sp2)
			return false;
		is_post = sp1 - base == 4 && memcmp(base, "POST", 4) == 0;
		http10 = line_end - sp2 - 1 == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0;

		for (p = line_end + 2; p < end;) {
			const char *le = memmem(p, (size_t)(end + 2 - p), "\r\n", 2);
			const char *colon = memchr(p, ':', (size_t)(le - p));
			if (colon) {
				size_t nlen = (size_t)(colon - p);
				const char *v = colon + 1;
				size_t vlen;
				while (v < le && (*v == ' ' || *v == '\t'))
					v++;
				vlen = (size_t)(le - v);
				while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
					vlen--;
				if (name_is(p, nlen, "content-length")) {
					body_len = 0;
					for (size_t i = 0; i < vlen; i++) {
						if (v[i] < '0' || v[i] > '9')
							return false;
						body_len = body_len * 10 + (size_t)(v[i] - '0');
						if (body_len > MAX_BODY)
							return false;
					}
				} else if (name_is(p, nlen, "webhook-id")) {
					id = v;
					id_len = vlen;
				} else if (name_is(p, nlen, "transfer-encoding")) {
					chunked = true;
				} else if (name_is(p, nlen, "connection")) {
					conn_close_hdr = vlen == 5 && strncasecmp(v, "close", 5) == 0;
				}
			}
			p = le + 2;
		}
		if (chunked) {
			static const char no[] = "HTTP/1.1 411 Length Required\r\n"
			    "Content-Length: 0\r\nConnection: close\r\n\r\n";
			out_append(c, no, sizeof(no) - 1);
			c->close_after = true;
			pos = c->in_len;
			break;
		}
		if (avail < head_len + body_len) {
			c->scanned = head_len - 4; /* the head is complete: found again at once */
			break;
		}
		if (is_post) {
			record_post(id ? id : "", id_len, c->in + pos + head_len, body_len);
			out_append(c, ok_answer, sizeof(ok_answer) - 1);
		} else {
			control(c, sp1 + 1, (size_t)(sp2 - sp1 - 1));
		}
		pos += head_len + body_len;
		c->scanned = 0;
		if (conn_close_hdr || http10) {
			c->close_after = true;
			pos = c->in_len;
			break;
		}
	}
	if (pos > 0) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
	return true;
}

/* Readable: read all there is, answer what is complete. */
static bool on_readable(struct conn *c)
{
	for (;;) {
		size_t room;
		ssize_t n;

		if (c->in_cap - c->in_len < READ_CHUNK / 2) {
			c->in_cap = c->in_cap ? c->in_cap * 2 : READ_CHUNK;
			c->in = xrealloc(c->in, c->in_cap);
		}
		room = c->in_cap - c->in_len;
		n = recv(c->fd, c->in + c->in_len, room, 0);
		if (n == 0)
			return false;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return false;
		}
		c->in_len += (size_t)n;
		if ((size_t)n < room)
			break; /* short read: the socket is drained */
	}
	if (!handle_input(c))
		return false;
	return flush_out(c);
}

/* --- listening ------------------------------------------------------------------- */

static int listen_on(const char *addr)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res;
	const char *colon = strrchr(addr, ':');
	char host[256];
	int fd, one = 1, err;

	if (!colon || (size_t)(colon - addr) >= sizeof(host)) {
		fprintf(stderr, "webhook_sink: expected host:port, got %s\n", addr);
		exit(2);
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	err = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res);
	if (err) {
		fprintf(stderr, "webhook_sink: %s: %s\n", addr, gai_strerror(err));
		exit(2);
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		die("socket");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0)
		die("bind");
	freeaddrinfo(res);
	if (listen(fd, 4096) < 0)
		die("listen");
	return fd;
}

static int bound_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		die("getsockname");
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void accept_all(int lfd)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;
		struct conn *c;
		struct epoll_event ev;

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				fprintf(stderr, "webhook_sink: accept: %s\n", strerror(errno));
			return;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c = calloc(1, sizeof(*c));
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		ev.events = EPOLLIN;
		ev.data.ptr = c;
		if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
			close(fd);
			free(c);
			continue;
		}
		if (++g.conns > g.max_conns)
			g.max_conns = g.conns;
	}
}

int main(int argc, char **argv)
{
	const char *addr = "127.0.0.1:0";
	struct epoll_event evs[MAX_EVENTS], lev;
	struct sigaction sa = { .sa_handler = on_signal };
	int lfd, opt;
	static int listen_tag;

	while ((opt = getopt(argc, argv, "l:o:h")) != -1) {
		switch (opt) {
		case 'l': addr = optarg; break;
		case 'o': g.dump_path = optarg; break;
		default:
			fprintf(stderr, "usage: webhook_sink [-l host:port] [-o records-file]\n");
			return opt == 'h' ? 0 : 2;
		}
	}
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = listen_on(addr);
	g.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (g.epfd < 0)
		die("epoll_create1");
	lev.events = EPOLLIN;
	lev.data.ptr = &listen_tag;
	if (epoll_ctl(g.epfd, EPOLL_CTL_ADD, lfd, &lev) < 0)
		die("epoll_ctl");
	printf("port %d\n", bound_port(lfd));
	fflush(stdout);

	while (!stop) {
		int n = epoll_wait(g.epfd, evs, MAX_EVENTS, 500);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("epoll_wait");
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			bool keep = true;

			if (evs[i].data.ptr == &listen_tag) {
				accept_all(lfd);
				continue;
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				keep = on_readable(c);
			else if (evs[i].events & EPOLLOUT)
				keep = flush_out(c);
			if (!keep)
				conn_close(c);
		}
	}
	close(lfd);
	close(g.epfd);
	free(g.rec);
	return 0;
}
