/*
 * webhook_h1: the answer parser on whole answers and on every way of
 * splitting them (each split point, and byte by byte), the choice of
 * endpoint, and the client against a peer in this process (Unix and TCP
 * sockets): the bytes it sends, keep-alive, the one retry on a new
 * connection, timeouts and refused connections.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "util.h"
#include "webhook_h1.h"

/* --- the parser -------------------------------------------------------------- */

struct outcome {
	enum h1_state state;
	long status;
	bool close;
	char body[256];
	size_t body_len;
	char retry_after[64];
	const char *error;
	size_t used; /* of the whole input */
};

static void body_to(void *arg, const char *p, size_t n)
{
	struct outcome *o = arg;

	assert_true(o->body_len + n < sizeof(o->body));
	memcpy(o->body + o->body_len, p, n);
	o->body_len += n;
}

/*
 * Feed in to a parser in pieces (cuts: the offsets where a new read
 * begins), as the client does: what a call leaves unused comes again in
 * front of the next piece. eof: the connection ends after the input.
 */
static struct outcome feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, bool eof)
{
	struct outcome o = { 0 };
	struct h1_parser p;
	size_t have = 0, at = 0; /* bytes arrived; of them used */

	h1_parser_init(&p);
	for (size_t i = 0; i <= ncuts; i++) {
		size_t end = i < ncuts ? cuts[i] : len;
		have = end;
		at += h1_parse(&p, in + at, have - at, body_to, &o);
		if (p.state == H1_DONE || p.state == H1_ERROR)
			break;
	}
	if (eof && p.state != H1_DONE && p.state != H1_ERROR && have == len)
		(void)h1_parse_eof(&p);
	o.state = p.state;
	o.status = p.status;
	o.close = p.close;
	memcpy(o.retry_after, p.retry_after, sizeof(o.retry_after));
	o.error = p.state == H1_ERROR ? p.error : NULL;
	o.used = at;
	return o;
}

static void same(const struct outcome *a, const struct outcome *b, const char *in, size_t cut)
{
	if (a->state != b->state || a->status != b->status || a->close != b->close ||
	    a->body_len != b->body_len || memcmp(a->body, b->body, a->body_len) != 0 ||
	    strcmp(a->retry_after, b->retry_after) != 0 || a->used != b->used)
		fail_msg("split at %zu gives another outcome for %s", cut, in);
}

/* The outcome of in, checked to be the same for every split (the error text aside). */
static struct outcome parse_all(const char *in, bool eof)
{
	size_t len = strlen(in);
	struct outcome whole = feed(in, len, NULL, 0, eof), o;
	size_t *cuts = malloc((len + 1) * sizeof(*cuts));

	assert_non_null(cuts);
	for (size_t k = 1; k < len; k++) {
		o = feed(in, len, &k, 1, eof);
		same(&whole, &o, in, k);
	}
	for (size_t k = 0; k + 1 < len; k++)
		cuts[k] = k + 1;
	if (len > 1) {
		o = feed(in, len, cuts, len - 1, eof);
		same(&whole, &o, in, 0);
	}
	free(cuts);
	return whole;
}

static void test_content_length(void **state)
{
	struct outcome o;

	(void)state;
	o = parse_all("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.status, 200);
	assert_false(o.close);
	assert_int_equal(o.body_len, 0);

	o = parse_all("HTTP/1.1 207 Multi-Status\r\ncontent-length:  5 \r\nX-A: b\r\n\r\nhello",
	    false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.status, 207);
	assert_int_equal(o.body_len, 5);
	assert_memory_equal(o.body, "hello", 5);

	/* A reason is optional; bare LF line ends are read as CRLF. */
	o = parse_all("HTTP/1.1 404\nContent-Length: 2\n\nno", false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.status, 404);
	assert_int_equal(o.body_len, 2);

	/* Connection: close on HTTP/1.1; the same length twice is one length. */
	o = parse_all("HTTP/1.1 500 Oops\r\nConnection: Close\r\nContent-Length: 1\r\n"
	    "Content-Length: 1\r\n\r\nx", false);
	assert_int_equal(o.state, H1_DONE);
	assert_true(o.close);

	/* Bytes after the answer are not used. */
	o = parse_all("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiEXTRA", false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.used, strlen("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"));
}

static void test_retry_after(void **state)
{
	struct outcome o;

	(void)state;
	o = parse_all("HTTP/1.1 429 Too Many\r\nRetry-After:\t 120 \r\nContent-Length: 0\r\n\r\n",
	    false);
	assert_int_equal(o.status, 429);
	assert_string_equal(o.retry_after, "120");
	o = parse_all("HTTP/1.1 503 x\r\nretry-after: Wed, 21 Oct 2015 07:28:00 GMT\r\n"
	    "Content-Length: 0\r\n\r\n", false);
	assert_string_equal(o.retry_after, "Wed, 21 Oct 2015 07:28:00 GMT");
}

static void test_chunked(void **state)
{
	struct outcome o;

	(void)state;
	o = parse_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5;name=value\r\nhello\r\nA \r\n, chunked!\r\n0\r\nX-Trailer: 1\r\n\r\n", false);
	assert_int_equal(o.state, H1_DONE);
	assert_false(o.close);
	assert_int_equal(o.body_len, 15);
	assert_memory_equal(o.body, "hello, chunked!", 15);

	/* Without trailers, and with a Content-Length that chunked overrides. */
	o = parse_all("HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: gzip, chunked\r\n"
	    "\r\n3\r\nabc\r\n0\r\n\r\n", false);
	assert_int_equal(o.state, H1_DONE);
	assert_true(o.close); /* both framings: not reused */
	assert_memory_equal(o.body, "abc", 3);

	/* HTTP/1.0 with a transfer coding: read, but the connection is not kept. */
	o = parse_all("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n"
	    "\r\n3\r\nabc\r\n0\r\n\r\n", false);
	assert_int_equal(o.state, H1_DONE);
	assert_true(o.close);
	assert_memory_equal(o.body, "abc", 3);

	o = parse_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", false);
	assert_int_equal(o.state, H1_ERROR);
	o = parse_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n", false);
	assert_int_equal(o.state, H1_ERROR);
	/* Cut short by the close. */
	o = parse_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", true);
	assert_int_equal(o.state, H1_ERROR);
}

static void test_until_close(void **state)
{
	struct outcome o;

	(void)state;
	o = parse_all("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nthe whole rest", true);
	assert_int_equal(o.state, H1_DONE);
	assert_true(o.close);
	assert_int_equal(o.body_len, 14);
	/* Not over before the close. */
	o = parse_all("HTTP/1.0 200 OK\r\n\r\nmore to come", false);
	assert_int_equal(o.state, H1_UNTIL_CLOSE);
	/* HTTP/1.0 with keep-alive and a length: reusable. */
	o = parse_all("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
	    false);
	assert_int_equal(o.state, H1_DONE);
	assert_false(o.close);
	/* HTTP/1.0 that says both: closed after it. */
	o = parse_all("HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n"
	    "\r\nok", false);
	assert_int_equal(o.state, H1_DONE);
	assert_true(o.close);
	/* HTTP/1.0 without keep-alive: closed after it. */
	o = parse_all("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
	assert_true(o.close);
	/* A transfer coding other than chunked: until the close. */
	o = parse_all("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz", true);
	assert_int_equal(o.state, H1_DONE);
	assert_true(o.close);
	assert_int_equal(o.body_len, 3);
}

static void test_no_body(void **state)
{
	struct outcome o;

	(void)state;
	o = parse_all("HTTP/1.1 204 No Content\r\n\r\n", false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.status, 204);
	assert_false(o.close);
	o = parse_all("HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false);
	assert_int_equal(o.state, H1_DONE);
	/* Redirects are answers. */
	o = parse_all("HTTP/1.1 302 Found\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n",
	    false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.status, 302);
}

static void test_interim_answers(void **state)
{
	struct outcome o;

	(void)state;
	o = parse_all("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\nRetry-After: 9\r\n\r\n"
	    "HTTP/1.1 503 Busy\r\nContent-Length: 3\r\n\r\nbad", false);
	assert_int_equal(o.state, H1_DONE);
	assert_int_equal(o.status, 503);
	assert_string_equal(o.retry_after, ""); /* the interim answer's is not the answer's */
	assert_memory_equal(o.body, "bad", 3);
	/* Only an interim answer, then the close: no answer. */
	o = parse_all("HTTP/1.1 100 Continue\r\n\r\n", true);
	assert_int_equal(o.state, H1_ERROR);
	/* A protocol switch nobody asked for: what follows is no answer, whatever it reads. */
	o = parse_all("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n"
	    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
	assert_int_equal(o.state, H1_ERROR);
	assert_int_equal(o.status, 101);
}

static void test_bad_status_lines(void **state)
{
	static const char *const bad[] = {
		"HTTP/2 200 OK\r\n\r\n", "HTTP/1.1 20 OK\r\n\r\n", "HTTP/1.1 2000 OK\r\n\r\n",
		"http/1.1 200 OK\r\n\r\n", "garbage\r\n\r\n", "HTTP/1.1 200OK\r\n\r\n",
		"\r\nHTTP/1.1 200 OK\r\n\r\n", "HTTP/1.1 099 Low\r\n\r\n", "HTTP/1.x 200 OK\r\n\r\n",
		"HTTP/1.1  200 OK\r\n\r\n", "ICY 200 OK\r\n\r\n", "SSH-2.0-OpenSSH_9.2\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct outcome o = parse_all(bad[i], true);
		if (o.state != H1_ERROR)
			fail_msg("%s taken as an answer", bad[i]);
		assert_int_equal(o.status, 0);
		assert_non_null(o.error);
	}
}

static void test_bad_headers(void **state)
{
	static const char *const bad[] = {
		"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
		"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
		"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 0x10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", /* cut short by the close */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct outcome o = parse_all(bad[i], true);
		if (o.state != H1_ERROR)
			fail_msg("%s taken as an answer", bad[i]);
	}
}

static void test_empty_reply(void **state)
{
	struct h1_parser p;

	(void)state;
	h1_parser_init(&p);
	assert_int_equal(h1_parse_eof(&p), -1);
	assert_string_equal(p.error, "Empty reply from server");
}

/* The header block is bounded, whether in many lines or one without an end. */
static void test_huge_headers(void **state)
{
	size_t max = H1_HEADER_MAX + 100;
	char *in = malloc(max + 64);
	struct h1_parser p;
	size_t at = 0, used;

	(void)state;
	assert_non_null(in);
	at += (size_t)sprintf(in, "HTTP/1.1 200 OK\r\n");
	while (at < max)
		at += (size_t)sprintf(in + at, "X-Filler: %050d\r\n", 0);
	at += (size_t)sprintf(in + at, "\r\n");
	h1_parser_init(&p);
	(void)h1_parse(&p, in, at, NULL, NULL);
	assert_int_equal(p.state, H1_ERROR);

	/* Just below the bound is fine. */
	at = (size_t)sprintf(in, "HTTP/1.1 200 OK\r\n");
	while (at < H1_HEADER_MAX - 200)
		at += (size_t)sprintf(in + at, "X-Filler: %050d\r\n", 0);
	at += (size_t)sprintf(in + at, "Content-Length: 0\r\n\r\n");
	h1_parser_init(&p);
	used = h1_parse(&p, in, at, NULL, NULL);
	assert_int_equal(p.state, H1_DONE);
	assert_int_equal(used, at);

	/* One line with no end in sight: refused before it ends. */
	memset(in, 'a', max);
	memcpy(in, "HTTP/1.1 200 OK\r\nX: ", 20);
	h1_parser_init(&p);
	used = h1_parse(&p, in, max, NULL, NULL);
	assert_int_equal(p.state, H1_ERROR);
	free(in);
}

/* --- the endpoint ------------------------------------------------------------- */

static void test_endpoint_choice(void **state)
{
	struct h1_endpoint *ep;
	char why[128];

	(void)state;
	ep = h1_endpoint_new("http://127.0.0.1:8080/hook/a?x=1&y=2", "", false, why, sizeof(why));
	assert_non_null(ep);
	assert_string_equal(ep->head, "POST /hook/a?x=1&y=2 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n");
	assert_int_equal(ep->head_len, strlen(ep->head));
	assert_int_equal(ep->naddr, 1);
	assert_string_equal(ep->where[0], "127.0.0.1 port 8080");
	h1_endpoint_free(ep);

	ep = h1_endpoint_new("http://localhost:80", "", false, why, sizeof(why));
	assert_non_null(ep);
	assert_string_equal(ep->head, "POST / HTTP/1.1\r\nHost: localhost\r\n");
	assert_int_equal(ep->naddr, 2);
	assert_int_equal(ep->addr[0].ss_family, AF_INET);
	assert_int_equal(ep->addr[1].ss_family, AF_INET6);
	h1_endpoint_free(ep);

	ep = h1_endpoint_new("http://[::1]:9000/h", "", false, why, sizeof(why));
	assert_non_null(ep);
	assert_string_equal(ep->head, "POST /h HTTP/1.1\r\nHost: [::1]:9000\r\n");
	h1_endpoint_free(ep);

	/* A Unix socket: the url gives the path and Host; proxies do not matter. */
	ep = h1_endpoint_new("", "/run/app/hook.sock", true, why, sizeof(why));
	assert_non_null(ep);
	assert_string_equal(ep->head, "POST / HTTP/1.1\r\nHost: localhost\r\n");
	assert_int_equal(ep->addr[0].ss_family, AF_UNIX);
	h1_endpoint_free(ep);
	ep = h1_endpoint_new("http://app/kafka", "/run/app/hook.sock", false, why, sizeof(why));
	assert_non_null(ep);
	assert_string_equal(ep->head, "POST /kafka HTTP/1.1\r\nHost: app\r\n");
	h1_endpoint_free(ep);

	/* libcurl's: TLS, names to look up, proxies, credentials in the URL. */
	assert_null(h1_endpoint_new("https://127.0.0.1/", "", false, why, sizeof(why)));
	assert_null(h1_endpoint_new("https://app/", "/run/app/hook.sock", false, why, sizeof(why)));
	assert_null(h1_endpoint_new("http://hooks.example.com/", "", false, why, sizeof(why)));
	assert_null(h1_endpoint_new("http://127.0.0.1/", "", true, why, sizeof(why)));
	assert_null(h1_endpoint_new("http://u:p@127.0.0.1/", "", false, why, sizeof(why)));
	assert_null(h1_endpoint_new("http://127.0.0.1/a b", "", false, why, sizeof(why)));
}

/* --- the client against a peer here -------------------------------------------- */

struct rig {
	int lfd;                /* the peer's listening socket */
	int epfd;
	struct h1_endpoint *ep;
	struct h1_client *c;
	char path[108];
};

static void rig_open(struct rig *g, bool tcp, int64_t timeout_ms)
{
	char url[64], why[128];

	memset(g, 0, sizeof(*g));
	if (tcp) {
		struct sockaddr_in a = { .sin_family = AF_INET };
		socklen_t len = sizeof(a);
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		g->lfd = socket(AF_INET, SOCK_STREAM, 0);
		assert_true(g->lfd >= 0);
		assert_int_equal(bind(g->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
		assert_int_equal(getsockname(g->lfd, (struct sockaddr *)&a, &len), 0);
		snprintf(url, sizeof(url), "http://127.0.0.1:%u/hook?q=1", ntohs(a.sin_port));
		g->ep = h1_endpoint_new(url, "", false, why, sizeof(why));
	} else {
		struct sockaddr_un a = { .sun_family = AF_UNIX };
		snprintf(g->path, sizeof(g->path), "/tmp/ackd-h1-test-%d.sock", (int)getpid());
		unlink(g->path);
		strcpy(a.sun_path, g->path);
		g->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		assert_true(g->lfd >= 0);
		assert_int_equal(bind(g->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
		g->ep = h1_endpoint_new("http://app/hook", g->path, false, why, sizeof(why));
	}
	assert_non_null(g->ep);
	assert_int_equal(listen(g->lfd, 16), 0);
	assert_int_equal(fcntl(g->lfd, F_SETFL, O_NONBLOCK), 0);
	g->epfd = epoll_create1(EPOLL_CLOEXEC);
	assert_true(g->epfd >= 0);
	g->c = h1_client_new(g->ep, g->epfd, 4, timeout_ms);
}

static void rig_close(struct rig *g)
{
	h1_client_free(g->c);
	h1_endpoint_free(g->ep);
	close(g->epfd);
	if (g->lfd >= 0)
		close(g->lfd);
	if (g->path[0])
		unlink(g->path);
}

/* One turn of the client's loop, waiting at most ms. */
static void step(struct rig *g, int ms)
{
	struct epoll_event evs[8];
	int64_t now = now_ms(), at = h1_next_wake(g->c, now);
	int n;

	if (at >= 0 && at - now < ms)
		ms = at > now ? (int)(at - now) : 0;
	n = epoll_wait(g->epfd, evs, 8, ms);
	for (int i = 0; i < n; i++)
		h1_event(g->c, evs[i].data.ptr, evs[i].events);
	h1_tick(g->c, now_ms());
	h1_reap(g->c);
}

/* Run the client until a request is done (or ms pass); it, or NULL. */
static struct h1_req *pump(struct rig *g, int ms)
{
	int64_t end = now_ms() + ms;
	struct h1_req *r;

	while (!(r = h1_take_done(g->c)) && now_ms() < end)
		step(g, (int)(end - now_ms()));
	return r;
}

/* The peer accepts the client's next connection, running the client meanwhile. */
static int peer_accept(struct rig *g)
{
	for (int i = 0; i < 200; i++) {
		int fd = accept4(g->lfd, NULL, NULL, SOCK_NONBLOCK);
		if (fd >= 0)
			return fd;
		assert_true(errno == EAGAIN);
		step(g, 10);
	}
	fail_msg("the client did not connect");
	return -1;
}

/*
 * The peer reads one whole request (headers and Content-Length body) into
 * buf, running the client meanwhile.
 */
static size_t peer_read(struct rig *g, int fd, char *buf, size_t cap)
{
	size_t len = 0;

	for (int i = 0; i < 1000; i++) {
		const char *end, *cl;
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EAGAIN) {
			step(g, 10);
			continue;
		}
		assert_true(n > 0);
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		if (!end)
			continue;
		cl = strstr(buf, "Content-Length: ");
		assert_non_null(cl);
		if (len >= (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10))
			return len;
	}
	fail_msg("no whole request arrived");
	return 0;
}

static void peer_write(int fd, const char *s)
{
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
}

/* A request as webhook.c lays it out: the endpoint's head first. */
static void req_set(struct rig *g, struct h1_req *r, const char *hdrs, const char *clen,
    const char *body)
{
	memset(r, 0, sizeof(*r));
	r->iov[0] = (struct iovec){ g->ep->head, g->ep->head_len };
	r->iov[1] = (struct iovec){ (void *)hdrs, strlen(hdrs) };
	r->iov[2] = (struct iovec){ (void *)clen, strlen(clen) };
	r->iov[3] = (struct iovec){ (void *)body, strlen(body) };
	r->niov = 4;
}

#define HDRS "Content-Type: text/plain"
#define CLEN "\r\nContent-Length: 5\r\n\r\n"

static void test_client_keeps_alive(void **state)
{
	static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	struct rig g;
	struct h1_req r, *done;
	char buf[1024];
	int fd;

	(void)state;
	rig_open(&g, false, 5000);
	req_set(&g, &r, HDRS, CLEN, "hello");
	h1_start(g.c, &r);
	(void)pump(&g, 0);
	fd = peer_accept(&g);
	assert_true(fd >= 0);
	peer_read(&g, fd, buf, sizeof(buf));
	assert_string_equal(buf, "POST /hook HTTP/1.1\r\nHost: app\r\n" HDRS CLEN "hello");
	peer_write(fd, answer);
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 200);
	assert_null(r.error);

	/* The second request reuses the connection. */
	req_set(&g, &r, HDRS, CLEN, "again");
	h1_start(g.c, &r);
	peer_read(&g, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "again"));
	peer_write(fd, "HTTP/1.1 503 Busy\r\nRetry-After: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "4\r\nbusy\r\n0\r\n\r\n");
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 503);
	assert_string_equal(r.retry_after, "3");
	assert_int_equal(h1_conns(g.c), 1);

	/* The peer closes the idle connection: the client lets it go. */
	close(fd);
	(void)pump(&g, 100);
	assert_int_equal(h1_conns(g.c), 0);
	rig_close(&g);
}

/*
 * A request sent on a kept connection that the peer had closed in the
 * meantime goes out once more on a new one; one sent on a new connection
 * that ends without an answer does not.
 */
static void test_client_retries_on_a_new_connection(void **state)
{
	static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	struct rig g;
	struct h1_req r, *done;
	char buf[1024];
	int fd, fd2;

	(void)state;
	rig_open(&g, true, 5000);
	req_set(&g, &r, HDRS, CLEN, "first");
	h1_start(g.c, &r);
	fd = peer_accept(&g);
	assert_true(fd >= 0);
	peer_read(&g, fd, buf, sizeof(buf));
	assert_non_null(strstr(buf, "POST /hook?q=1 HTTP/1.1\r\nHost: 127.0.0.1:"));
	peer_write(fd, answer);
	assert_ptr_equal(pump(&g, 2000), &r);
	assert_int_equal(r.status, 200);

	/*
	 * Closed by the peer before the client noticed (no pump in between):
	 * seen before the request goes out, which takes a new connection.
	 */
	close(fd);
	req_set(&g, &r, HDRS, CLEN, "secnd");
	h1_start(g.c, &r);
	fd2 = peer_accept(&g);
	assert_true(fd2 >= 0);
	peer_read(&g, fd2, buf, sizeof(buf));
	assert_non_null(strstr(buf, "secnd"));
	peer_write(fd2, answer);
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 200);
	assert_false(r.retried);

	/* Closed once the request came, without a byte of answer: sent once more. */
	req_set(&g, &r, HDRS, CLEN, "again");
	h1_start(g.c, &r);
	peer_read(&g, fd2, buf, sizeof(buf));
	assert_non_null(strstr(buf, "again"));
	close(fd2);
	fd2 = peer_accept(&g);
	assert_true(fd2 >= 0);
	peer_read(&g, fd2, buf, sizeof(buf));
	assert_non_null(strstr(buf, "again"));
	peer_write(fd2, answer);
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 200);
	assert_true(r.retried);

	/* A new connection closed without an answer: no answer, no retry. */
	close(fd2);
	(void)pump(&g, 50); /* the idle one goes */
	req_set(&g, &r, HDRS, CLEN, "third");
	h1_start(g.c, &r);
	fd = peer_accept(&g);
	assert_true(fd >= 0);
	peer_read(&g, fd, buf, sizeof(buf));
	close(fd);
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 0);
	assert_false(r.retried);
	assert_string_equal(r.error, "Empty reply from server");
	rig_close(&g);
}

/*
 * Bytes after an answer on a kept connection are no answer to the next
 * request, also when the answer ended exactly where a read of the client's
 * 4096-byte buffer did (so that no extra byte was seen with it).
 */
static void test_client_stale_bytes(void **state)
{
	static const char stray[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	char head[128], *answer, buf[1024];
	struct rig g;
	struct h1_req r, *done;
	size_t hl, total = 4096;
	int fd, fd2;

	(void)state;
	answer = malloc(total + sizeof(stray));
	assert_non_null(answer);
	for (size_t body = total - 60;; body++) {
		hl = (size_t)snprintf(head, sizeof(head),
		    "HTTP/1.1 500 Internal\r\nContent-Length: %zu\r\n\r\n", body);
		if (hl + body == total)
			break;
	}
	memcpy(answer, head, hl);
	memset(answer + hl, 'x', total - hl);
	memcpy(answer + total, stray, sizeof(stray)); /* and its NUL */

	rig_open(&g, false, 2000);
	req_set(&g, &r, HDRS, CLEN, "first");
	h1_start(g.c, &r);
	fd = peer_accept(&g);
	peer_read(&g, fd, buf, sizeof(buf));
	peer_write(fd, answer); /* the 500 and the stray 200 in one write */
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 500);

	req_set(&g, &r, HDRS, CLEN, "secnd");
	h1_start(g.c, &r);
	fd2 = peer_accept(&g); /* the kept connection is not used */
	peer_read(&g, fd2, buf, sizeof(buf));
	assert_non_null(strstr(buf, "secnd"));
	peer_write(fd2, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n");
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 503);
	close(fd);
	close(fd2);
	free(answer);
	rig_close(&g);
}

/*
 * An answer that comes before the whole request went out (a 413 after the
 * first kilobyte of a large body, the peer then closing) is the request's
 * answer: not a failed send that goes out once more.
 */
static void test_client_early_answer(void **state)
{
	static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	static const char clen[] = "\r\nContent-Length: 4194304\r\n\r\n";
	size_t big = 4u << 20;
	char *body = malloc(big), buf[2048];
	struct rig g;
	struct h1_req r, *done;
	int fd;

	(void)state;
	assert_non_null(body);
	memset(body, 'b', big);
	rig_open(&g, false, 5000);
	req_set(&g, &r, HDRS, CLEN, "first"); /* so that the connection is a kept one */
	h1_start(g.c, &r);
	fd = peer_accept(&g);
	peer_read(&g, fd, buf, sizeof(buf));
	peer_write(fd, answer);
	assert_ptr_equal(pump(&g, 2000), &r);

	memset(&r, 0, sizeof(r));
	r.iov[0] = (struct iovec){ g.ep->head, g.ep->head_len };
	r.iov[1] = (struct iovec){ (void *)HDRS, strlen(HDRS) };
	r.iov[2] = (struct iovec){ (void *)clen, strlen(clen) };
	r.iov[3] = (struct iovec){ body, big };
	r.niov = 4;
	h1_start(g.c, &r);
	assert_true(read(fd, buf, sizeof(buf)) > 0); /* a little of it */
	peer_write(fd, "HTTP/1.1 413 Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
	close(fd);
	done = pump(&g, 3000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 413);
	assert_false(r.retried);
	assert_int_equal(accept4(g.lfd, NULL, NULL, SOCK_NONBLOCK), -1); /* no second connection */
	free(body);
	rig_close(&g);
}

static void test_client_times_out(void **state)
{
	struct rig g;
	struct h1_req r, *done;
	int64_t t0 = now_ms();

	(void)state;
	rig_open(&g, false, 200);
	req_set(&g, &r, HDRS, CLEN, "hello");
	h1_start(g.c, &r);
	done = pump(&g, 3000); /* the peer never accepts nor answers */
	assert_ptr_equal(done, &r);
	assert_true(now_ms() - t0 >= 200);
	assert_int_equal(r.status, 0);
	assert_true(r.timed_out);
	assert_non_null(strstr(r.error, "timed out after"));
	assert_int_equal(h1_conns(g.c), 0);
	rig_close(&g);
}

static void test_client_bad_answer(void **state)
{
	struct rig g;
	struct h1_req r, *done;
	char buf[1024];
	int fd;

	(void)state;
	rig_open(&g, false, 5000);
	req_set(&g, &r, HDRS, CLEN, "hello");
	h1_start(g.c, &r);
	fd = peer_accept(&g);
	peer_read(&g, fd, buf, sizeof(buf));
	peer_write(fd, "HTTP/1.1 OK 200\r\n\r\n");
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 0);
	assert_false(r.timed_out);
	assert_non_null(strstr(r.error, "bad status line"));
	assert_int_equal(h1_conns(g.c), 0);
	close(fd);
	rig_close(&g);
}

static void test_client_refused(void **state)
{
	struct rig g;
	struct h1_req r, *done;

	(void)state;
	rig_open(&g, true, 5000);
	close(g.lfd); /* nobody listens on the port now */
	g.lfd = -1;
	req_set(&g, &r, HDRS, CLEN, "hello");
	h1_start(g.c, &r);
	done = pump(&g, 2000);
	assert_ptr_equal(done, &r);
	assert_int_equal(r.status, 0);
	assert_false(r.timed_out);
	assert_non_null(strstr(r.error, "Failed to connect to 127.0.0.1 port "));
	assert_non_null(strstr(r.error, "Connection refused"));
	rig_close(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_content_length),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_chunked),
		cmocka_unit_test(test_until_close),
		cmocka_unit_test(test_no_body),
		cmocka_unit_test(test_interim_answers),
		cmocka_unit_test(test_bad_status_lines),
		cmocka_unit_test(test_bad_headers),
		cmocka_unit_test(test_empty_reply),
		cmocka_unit_test(test_huge_headers),
		cmocka_unit_test(test_endpoint_choice),
		cmocka_unit_test(test_client_keeps_alive),
		cmocka_unit_test(test_client_retries_on_a_new_connection),
		cmocka_unit_test(test_client_stale_bytes),
		cmocka_unit_test(test_client_early_answer),
		cmocka_unit_test(test_client_times_out),
		cmocka_unit_test(test_client_bad_answer),
		cmocka_unit_test(test_client_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
