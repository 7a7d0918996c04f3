/*
 * webhook_h1: the lean HTTP/1.1 client (see webhook_h1.h).
 *
 * The parser works on whole lines for the status line, header lines,
 * chunk-size lines and trailers, and hands body bytes straight on; a line
 * that has not fully arrived is left to the caller, who feeds it again with
 * what follows. So the parser keeps nothing but a few numbers and flags, and
 * the connection's read buffer is the only copy of an answer's bytes. The
 * header block is bounded (H1_HEADER_MAX): a peer that sends more never
 * makes the buffer grow beyond twice that (it doubles, and an unfinished
 * line is refused once it is longer than the bound).
 *
 * The client. One request per connection at a time, no pipelining. A
 * connection is registered in the caller's epoll set once, for EPOLLIN and
 * EPOLLRDHUP, level-triggered, and stays so while busy and while idle: an
 * idle one that becomes readable was closed by the peer (or sent bytes
 * nobody asked for) and is closed. The caller may start a request before
 * the next poll shows that, so an idle connection is also peeked at
 * (recv(MSG_PEEK)) before it carries one: anything waiting on it, bytes or
 * the peer's close, retires it, or those bytes would be read as the new
 * request's answer. EPOLLOUT is added only while a connect
 * is in progress or the socket's send buffer is full. A request goes out
 * with one sendmsg() of its iovecs (request line and Host, the header
 * block, Content-Length, the body from the caller's buffer); the answer is
 * read with one read() per readiness.
 *
 * A request sent on a connection that had carried an answer before, which
 * fails before any byte of its answer arrived (EPIPE, ECONNRESET, EOF), is
 * sent once more on a new connection, as libcurl does: the peer most likely
 * closed the idle connection just as the request went out. An answer
 * that arrives while the request is still being sent (a 413 before the
 * whole body) is read before anything more is sent: it is the request's
 * answer, and the connection is not kept.
 *
 * Requests are kept in the order they started; since every one has the
 * same timeout, that is also the order of their deadlines, so the first is
 * the next to time out. A Unix socket whose listen queue is full refuses a
 * non-blocking connect with EAGAIN; the connect is tried again a few
 * milliseconds later until the request's time is up.
 *
 * Connections closed while a batch of epoll events is being handled are
 * freed only by h1_reap(), so that a later event of the same batch never
 * points at freed memory.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <curl/curl.h>

#include "util.h"
#include "webhook_h1.h"

/* --- the answer parser ------------------------------------------------------- */

void h1_parser_init(struct h1_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->state = H1_STATUS;
	p->length = -1;
}

static size_t fail(struct h1_parser *p, const char *why, size_t used)
{
	p->state = H1_ERROR;
	p->error = why;
	return used;
}

/* Per answer (a 1xx one is followed by another): what the headers set. */
static void answer_reset(struct h1_parser *p)
{
	p->chunked = p->te = p->conn_close = p->conn_keep = false;
	p->length = -1;
	p->retry_after[0] = '\0';
	p->block = 0;
}

/* "HTTP/1.x NNN" then the end of the line or a space and a reason. */
static bool status_line(struct h1_parser *p, const char *s, size_t n)
{
	long code = 0;

	if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)s[7]) || s[8] != ' ')
		return false;
	for (size_t i = 9; i < 12; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		code = code * 10 + (s[i] - '0');
	}
	if (code < 100 || (n > 12 && s[12] != ' '))
		return false;
	p->minor = s[7] - '0';
	p->status = code;
	return true;
}

static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool name_is(const char *s, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Whether the comma-separated list v holds token tok; last: the last element is it. */
static bool list_has(const char *v, size_t n, const char *tok, bool last)
{
	bool found = false;
	size_t i = 0;

	while (i < n) {
		size_t a, b;
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		if (i == n)
			break;
		a = i;
		while (i < n && v[i] != ',')
			i++;
		b = i;
		while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
			b--;
		found = name_is(v + a, b - a, tok) ? true : (last ? false : found);
	}
	return found;
}

/* One header line (without its line end); false when it is malformed. */
static bool header_line(struct h1_parser *p, const char *s, size_t n)
{
	size_t nl = 0;
	const char *v;
	size_t vn;

	while (nl < n && is_tchar((unsigned char)s[nl]))
		nl++;
	/* No name, a space before the colon, or a folded line (obs-fold). */
	if (nl == 0 || nl == n || s[nl] != ':')
		return false;
	v = s + nl + 1;
	vn = n - nl - 1;
	while (vn > 0 && (*v == ' ' || *v == '\t')) {
		v++;
		vn--;
	}
	while (vn > 0 && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
		vn--;
	switch (tolower((unsigned char)s[0])) {
	case 'c':
		if (name_is(s, nl, "content-length")) {
			int64_t len = 0;
			if (vn == 0 || vn > 18)
				return false;
			for (size_t i = 0; i < vn; i++) {
				if (!isdigit((unsigned char)v[i]))
					return false;
				len = len * 10 + (v[i] - '0');
			}
			/* Two different lengths: which one frames the body? */
			if (p->length >= 0 && p->length != len)
				return false;
			p->length = len;
		} else if (name_is(s, nl, "connection")) {
			p->conn_close |= list_has(v, vn, "close", false);
			p->conn_keep |= list_has(v, vn, "keep-alive", false);
		}
		break;
	case 't':
		if (name_is(s, nl, "transfer-encoding")) {
			p->te = true;
			p->chunked = list_has(v, vn, "chunked", true);
		}
		break;
	case 'r':
		if (name_is(s, nl, "retry-after"))
			snprintf(p->retry_after, sizeof(p->retry_after), "%.*s", (int)vn, v);
		break;
	}
	return true;
}

/* The header block ended: how the body is framed (RFC 9112, 6.3). */
static void headers_done(struct h1_parser *p)
{
	if (p->minor == 0)
		p->close = !p->conn_keep || p->conn_close;
	else
		p->close = p->conn_close;
	p->block = 0;
	if (p->status == 204 || p->status == 304) {
		p->state = H1_DONE;
	} else if (p->te) {
		/*
		 * A length next to a transfer coding, or a transfer coding in an
		 * HTTP/1.0 answer, is not to be trusted for reuse (RFC 9112, 6.1).
		 */
		if (p->length >= 0 || p->minor == 0)
			p->close = true;
		if (p->chunked) {
			p->state = H1_CHUNK_SIZE;
		} else {
			p->state = H1_UNTIL_CLOSE;
			p->close = true;
		}
	} else if (p->length >= 0) {
		p->left = (uint64_t)p->length;
		p->state = p->left ? H1_BODY : H1_DONE;
	} else {
		p->state = H1_UNTIL_CLOSE;
		p->close = true;
	}
}

/* A chunk-size line: hex digits, then nothing, or extensions after ';'. */
static bool chunk_size(struct h1_parser *p, const char *s, size_t n)
{
	uint64_t size = 0;
	size_t i = 0;

	for (; i < n && isxdigit((unsigned char)s[i]); i++) {
		if (size >> 56)
			return false; /* far beyond anything a webhook answers */
		size = size * 16 + (uint64_t)(isdigit((unsigned char)s[i]) ? s[i] - '0' :
		    tolower((unsigned char)s[i]) - 'a' + 10);
	}
	if (i == 0)
		return false;
	while (i < n && (s[i] == ' ' || s[i] == '\t'))
		i++;
	if (i < n && s[i] != ';')
		return false;
	p->left = size;
	p->block = 0;
	p->state = size ? H1_CHUNK_DATA : H1_TRAILERS;
	return true;
}

/* Body bytes: as many of the n at s as the framing allows. */
static size_t body_bytes(struct h1_parser *p, const char *s, size_t n, h1_body_fn *body,
    void *arg)
{
	size_t take = n;

	if (p->state != H1_UNTIL_CLOSE && take > p->left)
		take = (size_t)p->left;
	if (take && body)
		body(arg, s, take);
	if (p->state == H1_UNTIL_CLOSE)
		return take;
	p->left -= take;
	if (p->left == 0)
		p->state = p->state == H1_BODY ? H1_DONE : H1_CHUNK_END;
	return take;
}

size_t h1_parse(struct h1_parser *p, const char *buf, size_t len, h1_body_fn *body, void *arg)
{
	size_t at = 0;

	while (at < len) {
		const char *s = buf + at, *nl;
		size_t n, linelen, max;

		switch (p->state) {
		case H1_BODY:
		case H1_CHUNK_DATA:
		case H1_UNTIL_CLOSE:
			at += body_bytes(p, s, len - at, body, arg);
			continue;
		case H1_DONE:
		case H1_ERROR:
			return at;
		default:
			break;
		}
		max = p->state == H1_CHUNK_SIZE || p->state == H1_CHUNK_END ? H1_CHUNK_LINE_MAX :
		    H1_HEADER_MAX - p->block;
		nl = memchr(s, '\n', len - at);
		if (!nl) {
			if (len - at > max)
				return fail(p, p->state == H1_HEADERS || p->state == H1_STATUS ?
				    "the answer's header block is too large" :
				    "a chunked answer has too long a line", at);
			return at; /* the rest of the line has yet to come */
		}
		linelen = (size_t)(nl - s) + 1;
		if (linelen > max)
			return fail(p, p->state == H1_HEADERS || p->state == H1_STATUS ?
			    "the answer's header block is too large" :
			    "a chunked answer has too long a line", at);
		n = linelen - 1;
		if (n > 0 && s[n - 1] == '\r')
			n--;
		at += linelen;
		switch (p->state) {
		case H1_STATUS:
			if (!status_line(p, s, n))
				return fail(p, "not an HTTP/1.x answer (bad status line)", at);
			p->block = linelen;
			p->state = H1_HEADERS;
			break;
		case H1_HEADERS:
			p->block += linelen;
			if (n == 0) {
				if (p->status == 101)
					/* What follows is another protocol's bytes, not an answer. */
					return fail(p, "the endpoint switched protocols (101), which ackd "
					    "never asks for", at);
				if (p->status < 200) {
					/* 1xx: an interim answer; the real one follows. */
					answer_reset(p);
					p->state = H1_STATUS;
				} else {
					headers_done(p);
				}
			} else if (!header_line(p, s, n)) {
				return fail(p, "the answer has a malformed header line", at);
			}
			break;
		case H1_CHUNK_SIZE:
			if (!chunk_size(p, s, n))
				return fail(p, "the answer has a bad chunk size", at);
			break;
		case H1_CHUNK_END:
			if (n != 0)
				return fail(p, "the answer's chunk is longer than its size", at);
			p->state = H1_CHUNK_SIZE;
			break;
		case H1_TRAILERS:
			p->block += linelen;
			if (n == 0)
				p->state = H1_DONE;
			break;
		default:
			break;
		}
	}
	return at;
}

int h1_parse_eof(struct h1_parser *p)
{
	switch (p->state) {
	case H1_UNTIL_CLOSE:
		p->state = H1_DONE;
		return 0;
	case H1_DONE:
		return 0;
	case H1_ERROR:
		return -1;
	case H1_STATUS:
		if (p->block == 0 && p->status == 0) {
			fail(p, "Empty reply from server", 0);
			return -1;
		}
		break;
	default:
		break;
	}
	fail(p, "the connection closed before the answer was complete", 0);
	return -1;
}

/* --- the endpoint ------------------------------------------------------------- */

/* Printable ASCII without spaces: bytes that can stand on a request line. */
static bool plain(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static void set_inet(struct h1_endpoint *ep, int i, int family, const char *ip, unsigned port)
{
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ep->addr[i];
		a->sin_family = AF_INET;
		a->sin_port = htons((uint16_t)port);
		(void)inet_pton(AF_INET, ip, &a->sin_addr); /* checked by the caller */
		ep->addr_len[i] = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ep->addr[i];
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		(void)inet_pton(AF_INET6, ip, &a->sin6_addr);
		ep->addr_len[i] = sizeof(*a);
	}
	snprintf(ep->where[i], sizeof(ep->where[i]), "%s port %u", ip, port);
}

struct url_parts {
	char *scheme, *host, *port, *path, *query, *user, *password, *zone;
};

static void parts_free(struct url_parts *u)
{
	curl_free(u->scheme);
	curl_free(u->host);
	curl_free(u->port);
	curl_free(u->path);
	curl_free(u->query);
	curl_free(u->user);
	curl_free(u->password);
	curl_free(u->zone);
}

/* The parts as libcurl reads the URL (the same flags as webhook.c's). */
static bool url_split(const char *url, struct url_parts *u)
{
	CURLU *h = curl_url();
	bool ok;

	memset(u, 0, sizeof(*u));
	if (!h)
		return false;
	ok = curl_url_set(h, CURLUPART_URL, url, CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) ==
	    CURLUE_OK && curl_url_get(h, CURLUPART_SCHEME, &u->scheme, 0) == CURLUE_OK &&
	    curl_url_get(h, CURLUPART_HOST, &u->host, 0) == CURLUE_OK;
	if (ok) {
		(void)curl_url_get(h, CURLUPART_PORT, &u->port, 0); /* none: the default */
		(void)curl_url_get(h, CURLUPART_PATH, &u->path, 0);
		(void)curl_url_get(h, CURLUPART_QUERY, &u->query, 0);
		(void)curl_url_get(h, CURLUPART_USER, &u->user, 0);
		(void)curl_url_get(h, CURLUPART_PASSWORD, &u->password, 0);
		(void)curl_url_get(h, CURLUPART_ZONEID, &u->zone, 0);
	}
	curl_url_cleanup(h);
	return ok;
}

/* The addresses of host (no DNS); false when it needs a lookup. */
static bool endpoint_addrs(struct h1_endpoint *ep, const char *host, unsigned port)
{
	char ip[INET6_ADDRSTRLEN + 2];
	struct in6_addr a6;
	struct in_addr a4;
	size_t n = strlen(host);

	if (strcasecmp(host, "localhost") == 0) {
		set_inet(ep, 0, AF_INET, "127.0.0.1", port);
		set_inet(ep, 1, AF_INET6, "::1", port);
		ep->naddr = 2;
		return true;
	}
	if (inet_pton(AF_INET, host, &a4) == 1) {
		set_inet(ep, 0, AF_INET, host, port);
		ep->naddr = 1;
		return true;
	}
	if (n >= 2 && n < sizeof(ip) && host[0] == '[' && host[n - 1] == ']') {
		memcpy(ip, host + 1, n - 2);
		ip[n - 2] = '\0';
		if (inet_pton(AF_INET6, ip, &a6) == 1) {
			set_inet(ep, 0, AF_INET6, ip, port);
			ep->naddr = 1;
			return true;
		}
	}
	return false;
}

struct h1_endpoint *h1_endpoint_new(const char *url, const char *unix_socket, bool proxy_env,
    char *why, size_t whylen)
{
	struct h1_endpoint *ep = NULL;
	struct url_parts u;
	unsigned port = 80;
	const char *path;
	size_t cap;
	int n;

	if (!url[0])
		url = "http://localhost/";
	if (!url_split(url, &u)) {
		snprintf(why, whylen, "the url does not parse");
		goto out;
	}
	if (strcmp(u.scheme, "http") != 0) {
		snprintf(why, whylen, "not an http:// url");
		goto out;
	}
	if (u.user || u.password || u.zone) {
		snprintf(why, whylen, "the url has a user, password or zone id");
		goto out;
	}
	path = u.path && u.path[0] ? u.path : "/";
	if (!plain(u.host) || !plain(path) || (u.query && !plain(u.query))) {
		snprintf(why, whylen, "the url has bytes to encode");
		goto out;
	}
	if (u.port) {
		char *end;
		unsigned long v = strtoul(u.port, &end, 10);
		if (*end || v == 0 || v > 65535) {
			snprintf(why, whylen, "the url has a bad port");
			goto out;
		}
		port = (unsigned)v;
	}
	ep = xcalloc(1, sizeof(*ep));
	if (unix_socket[0]) {
		struct sockaddr_un *a = (struct sockaddr_un *)&ep->addr[0];
		if (strlen(unix_socket) >= sizeof(a->sun_path)) {
			snprintf(why, whylen, "the unix socket path is too long");
			goto fail;
		}
		a->sun_family = AF_UNIX;
		strcpy(a->sun_path, unix_socket);
		ep->addr_len[0] = sizeof(*a);
		ep->naddr = 1;
		snprintf(ep->where[0], sizeof(ep->where[0]), "%s", unix_socket);
	} else if (proxy_env) {
		snprintf(why, whylen, "a proxy variable is set");
		goto fail;
	} else if (!endpoint_addrs(ep, u.host, port)) {
		snprintf(why, whylen, "the host is a name to look up");
		goto fail;
	}
	cap = 64 + strlen(path) + (u.query ? strlen(u.query) : 0) + strlen(u.host);
	ep->head = xmalloc(cap);
	if (port != 80)
		n = snprintf(ep->head, cap, "POST %s%s%s HTTP/1.1\r\nHost: %s:%u\r\n", path,
		    u.query ? "?" : "", u.query ? u.query : "", u.host, port);
	else
		n = snprintf(ep->head, cap, "POST %s%s%s HTTP/1.1\r\nHost: %s\r\n", path,
		    u.query ? "?" : "", u.query ? u.query : "", u.host);
	ep->head_len = (size_t)n;
	goto out;
fail:
	h1_endpoint_free(ep);
	ep = NULL;
out:
	parts_free(&u);
	return ep;
}

void h1_endpoint_free(struct h1_endpoint *ep)
{
	if (!ep)
		return;
	free(ep->head);
	free(ep);
}

/* --- the client --------------------------------------------------------------- */

#define RBUF_MIN 4096
#define CONNECT_RETRY_MS 5 /* a Unix socket's full listen queue */

enum conn_state { C_CONNECTING, C_WAITING, C_SENDING, C_READING, C_IDLE, C_CLOSED };

struct h1_conn {
	struct h1_conn *next; /* on the idle, all or dead list */
	struct h1_conn *all_prev, *all_next;
	int fd;
	int addr;             /* which of the endpoint's addresses */
	enum conn_state state;
	uint32_t events;      /* what epfd watches; 0: not in it */
	bool reused;          /* an answer came over it before */
	bool early;           /* its answer came before all of the request went out */
	size_t got;           /* bytes of the current answer */
	int64_t retry_at;     /* C_WAITING: when to connect again */
	struct h1_req *req;
	struct h1_parser p;
	char *rbuf;
	size_t rlen, rcap;
};

struct h1_client {
	const struct h1_endpoint *ep;
	int epfd;
	size_t keep;
	int64_t timeout_ms;
	struct h1_conn *all;       /* every open connection */
	struct h1_conn *idle;      /* open, no request (LIFO: the warmest first) */
	struct h1_conn *dead;      /* closed, to free in h1_reap() */
	size_t nconns, nidle, nwaiting;
	struct h1_req *first, *last;      /* in flight, by start (and deadline) */
	struct h1_req *done, *done_last;  /* finished, not yet taken */
};

struct h1_client *h1_client_new(const struct h1_endpoint *ep, int epfd, size_t keep,
    int64_t timeout_ms)
{
	struct h1_client *c = xcalloc(1, sizeof(*c));

	c->ep = ep;
	c->epfd = epfd;
	c->keep = keep;
	c->timeout_ms = timeout_ms;
	return c;
}

static void conn_free(struct h1_conn *conn)
{
	free(conn->rbuf);
	free(conn);
}

/* Closed now, freed by h1_reap(); its request (if any) is the caller's business. */
static void conn_close(struct h1_client *c, struct h1_conn *conn)
{
	if (conn->state == C_CLOSED)
		return;
	if (conn->state == C_IDLE) {
		struct h1_conn **pp = &c->idle;
		while (*pp != conn)
			pp = &(*pp)->next;
		*pp = conn->next;
		c->nidle--;
	}
	if (conn->state == C_WAITING)
		c->nwaiting--;
	if (conn->fd >= 0) {
		if (conn->events)
			(void)epoll_ctl(c->epfd, EPOLL_CTL_DEL, conn->fd, NULL);
		close(conn->fd);
		conn->fd = -1;
	}
	if (conn->all_prev)
		conn->all_prev->all_next = conn->all_next;
	else
		c->all = conn->all_next;
	if (conn->all_next)
		conn->all_next->all_prev = conn->all_prev;
	c->nconns--;
	conn->state = C_CLOSED;
	if (conn->req)
		conn->req->conn = NULL;
	conn->req = NULL;
	conn->next = c->dead;
	c->dead = conn;
}

void h1_reap(struct h1_client *c)
{
	while (c->dead) {
		struct h1_conn *conn = c->dead;
		c->dead = conn->next;
		conn_free(conn);
	}
}

void h1_client_free(struct h1_client *c)
{
	if (!c)
		return;
	while (c->all)
		conn_close(c, c->all);
	h1_reap(c);
	free(c);
}

size_t h1_conns(const struct h1_client *c) { return c->nconns; }

/* Watch conn for events (EPOLLIN | EPOLLRDHUP, and EPOLLOUT when asked). 0, or -1 errno. */
static int conn_watch(struct h1_client *c, struct h1_conn *conn, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = conn };

	if (conn->events == events)
		return 0;
	if (epoll_ctl(c->epfd, conn->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, conn->fd, &ev) < 0)
		return -1;
	conn->events = events;
	return 0;
}

/* --- finishing requests --- */

static void req_unlink(struct h1_client *c, struct h1_req *r)
{
	if (r->prev)
		r->prev->next = r->next;
	else
		c->first = r->next;
	if (r->next)
		r->next->prev = r->prev;
	else
		c->last = r->prev;
	r->prev = r->next = NULL;
}

/* r is done: off the in-flight list, onto the done list; its connection is let go. */
static void req_done(struct h1_client *c, struct h1_req *r)
{
	req_unlink(c, r);
	if (r->conn)
		r->conn->req = NULL;
	r->conn = NULL;
	if (c->done_last)
		c->done_last->next = r;
	else
		c->done = r;
	c->done_last = r;
}

/* r failed with status 0 and the error fmt says; its connection is closed. */
static void req_fail(struct h1_client *c, struct h1_req *r, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void req_fail(struct h1_client *c, struct h1_req *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->errbuf, sizeof(r->errbuf), fmt, ap);
	va_end(ap);
	r->status = 0;
	r->error = r->errbuf;
	if (r->conn)
		conn_close(c, r->conn);
	req_done(c, r);
}

struct h1_req *h1_take_done(struct h1_client *c)
{
	struct h1_req *r = c->done;

	if (r) {
		c->done = r->next;
		if (!c->done)
			c->done_last = NULL;
		r->next = NULL;
	}
	return r;
}

/* --- connecting and sending --- */

/* recv(MSG_PEEK) of one byte: > 0 bytes wait, 0 the peer closed, -1 errno. */
static ssize_t peek(int fd)
{
	char b;
	ssize_t n;

	do
		n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n;
}

/*
 * An idle connection can carry a request only when nothing waits on it:
 * bytes nobody asked for (the rest of an answer that ended exactly where a
 * read did, or a late one) would be read as the new request's answer, and
 * the peer's close would cost a retry. epoll says so only at the next poll,
 * and the caller may start requests before that.
 */
static bool conn_fit(struct h1_conn *conn)
{
	return peek(conn->fd) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

static void conn_send(struct h1_client *c, struct h1_conn *conn);
static void conn_open(struct h1_client *c, struct h1_req *r, int addr);

/* connect() on conn's fd; the request goes on from its outcome. */
static void conn_connect(struct h1_client *c, struct h1_conn *conn)
{
	const struct h1_endpoint *ep = c->ep;
	int a = conn->addr;

	if (connect(conn->fd, (const struct sockaddr *)&ep->addr[a], ep->addr_len[a]) == 0) {
		conn->state = C_SENDING;
		conn_send(c, conn);
		return;
	}
	if (errno == EINPROGRESS) {
		conn->state = C_CONNECTING;
		if (conn_watch(c, conn, EPOLLOUT | EPOLLIN | EPOLLRDHUP) < 0)
			req_fail(c, conn->req, "cannot watch a socket: %s", strerror(errno));
		return;
	}
	if (errno == EAGAIN && ep->addr[a].ss_family == AF_UNIX) {
		/* The listen queue is full: try again shortly (a new socket). */
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			req_fail(c, conn->req, "cannot create a socket: %s", strerror(errno));
			return;
		}
		if (conn->events)
			(void)epoll_ctl(c->epfd, EPOLL_CTL_DEL, conn->fd, NULL);
		conn->events = 0;
		close(conn->fd);
		conn->fd = fd;
		conn->state = C_WAITING;
		conn->retry_at = now_ms() + CONNECT_RETRY_MS;
		c->nwaiting++;
		return;
	}
	{
		int e = errno;
		struct h1_req *r = conn->req;
		if (a + 1 < ep->naddr) {
			conn_close(c, conn);
			conn_open(c, r, a + 1);
			return;
		}
		req_fail(c, r, "Failed to connect to %s: %s", ep->where[a], strerror(e));
	}
}

/* A new connection for r to the endpoint's address addr. */
static void conn_open(struct h1_client *c, struct h1_req *r, int addr)
{
	const struct h1_endpoint *ep = c->ep;
	int family = ep->addr[addr].ss_family;
	struct h1_conn *conn;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0) {
		req_fail(c, r, "cannot create a socket: %s", strerror(errno));
		return;
	}
	if (family != AF_UNIX) {
		int one = 1;
		/* As libcurl does: a request is one write, nothing to wait for. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	conn = xcalloc(1, sizeof(*conn));
	conn->fd = fd;
	conn->addr = addr;
	conn->req = r;
	r->conn = conn;
	r->sent = 0;
	h1_parser_init(&conn->p);
	conn->all_next = c->all;
	if (c->all)
		c->all->all_prev = conn;
	c->all = conn;
	c->nconns++;
	conn_connect(c, conn);
}

/*
 * Whether a request that failed on conn with nothing of its answer read
 * goes out once more, on a new connection: conn had carried an answer
 * before (so it was most likely closed while idle) and r was not retried yet.
 */
static bool retry_fresh(struct h1_client *c, struct h1_conn *conn)
{
	struct h1_req *r = conn->req;

	if (!conn->reused || conn->got > 0 || r->retried)
		return false;
	r->retried = true;
	conn_close(c, conn);
	conn_open(c, r, 0);
	return true;
}

/* Send what is left of conn's request. */
static void conn_send(struct h1_client *c, struct h1_conn *conn)
{
	struct h1_req *r = conn->req;
	struct iovec iov[H1_IOV];
	struct msghdr mh = { .msg_iov = iov };
	size_t skip = r->sent;
	ssize_t n;
	int k = 0;

	for (int i = 0; i < r->niov; i++) {
		if (skip >= r->iov[i].iov_len) {
			skip -= r->iov[i].iov_len;
			continue;
		}
		iov[k].iov_base = (char *)r->iov[i].iov_base + skip;
		iov[k].iov_len = r->iov[i].iov_len - skip;
		skip = 0;
		k++;
	}
	mh.msg_iovlen = (size_t)k;
	do
		n = sendmsg(conn->fd, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		int e = errno;
		if (e == EAGAIN) {
			n = 0;
		} else {
			if ((e == EPIPE || e == ECONNRESET) && (conn->got > 0 || peek(conn->fd) > 0)) {
				/* The peer answered and stopped reading: the answer is what counts. */
				conn->early = true;
				conn->state = C_READING;
				if (conn_watch(c, conn, EPOLLIN | EPOLLRDHUP) < 0)
					req_fail(c, r, "cannot watch a socket: %s", strerror(errno));
				return;
			}
			if ((e == EPIPE || e == ECONNRESET) && retry_fresh(c, conn))
				return;
			req_fail(c, r, "Send failure: %s", strerror(e));
			return;
		}
	}
	r->sent += (size_t)n;
	if (r->sent < r->total) {
		conn->state = C_SENDING;
		if (conn_watch(c, conn, EPOLLIN | EPOLLOUT | EPOLLRDHUP) < 0)
			req_fail(c, r, "cannot watch a socket: %s", strerror(errno));
		return;
	}
	conn->state = C_READING;
	if (conn_watch(c, conn, EPOLLIN | EPOLLRDHUP) < 0)
		req_fail(c, r, "cannot watch a socket: %s", strerror(errno));
}

void h1_start(struct h1_client *c, struct h1_req *r)
{
	struct h1_conn *conn = c->idle;

	r->started = now_ms();
	r->deadline = r->started + c->timeout_ms;
	r->sent = 0;
	r->retried = false;
	r->status = 0;
	r->timed_out = false;
	r->error = NULL;
	r->retry_after[0] = '\0';
	r->conn = NULL;
	r->total = 0;
	for (int i = 0; i < r->niov; i++)
		r->total += r->iov[i].iov_len;
	r->next = NULL;
	r->prev = c->last;
	if (c->last)
		c->last->next = r;
	else
		c->first = r;
	c->last = r;
	while (conn && !conn_fit(conn)) {
		conn_close(c, conn); /* freed by h1_reap() */
		conn = c->idle;
	}
	if (!conn) {
		conn_open(c, r, 0);
		return;
	}
	c->idle = conn->next;
	c->nidle--;
	conn->next = NULL;
	conn->req = r;
	conn->got = 0;
	conn->early = false;
	conn->state = C_SENDING;
	h1_parser_init(&conn->p);
	r->conn = conn;
	conn_send(c, conn);
}

/* --- answers --- */

static void answer_body(void *arg, const char *p, size_t n)
{
	struct h1_req *r = arg;

	if (r->body)
		r->body(r->body_arg, p, n);
}

/*
 * conn's request has its answer: done, and conn idle, or closed when the
 * answer says so, bytes followed it (extra), the request was not all sent
 * (an early answer) or enough connections are idle.
 */
static void conn_answered(struct h1_client *c, struct h1_conn *conn, bool extra)
{
	struct h1_req *r = conn->req;
	bool sent = conn->state == C_READING && !conn->early;

	r->status = conn->p.status;
	memcpy(r->retry_after, conn->p.retry_after, sizeof(r->retry_after));
	req_done(c, r);
	if (conn->p.close || extra || !sent || c->nidle >= c->keep) {
		conn_close(c, conn);
		return;
	}
	conn->state = C_IDLE;
	conn->reused = true;
	conn->rlen = 0;
	conn->next = c->idle;
	c->idle = conn;
	c->nidle++;
}

/* The end of the connection (EOF or an error e) while conn's request waits. */
static void conn_ended(struct h1_client *c, struct h1_conn *conn, int e)
{
	struct h1_req *r = conn->req;
	bool partial;

	if (retry_fresh(c, conn))
		return;
	if (e) {
		req_fail(c, r, "Recv failure: %s", strerror(e));
		return;
	}
	/* Part of a status line is no empty reply, though the parser saw no line. */
	partial = conn->p.state == H1_STATUS && conn->got > 0;
	if (h1_parse_eof(&conn->p) == 0) {
		conn_answered(c, conn, false);
		return;
	}
	req_fail(c, r, "%s", partial ? "the connection closed before the answer was complete" :
	    conn->p.error);
}

static void conn_read(struct h1_client *c, struct h1_conn *conn)
{
	struct h1_req *r = conn->req;
	size_t used;
	ssize_t n;

	if (conn->rlen == conn->rcap) {
		conn->rcap = conn->rcap ? conn->rcap * 2 : RBUF_MIN;
		conn->rbuf = xrealloc(conn->rbuf, conn->rcap);
	}
	do
		n = read(conn->fd, conn->rbuf + conn->rlen, conn->rcap - conn->rlen);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno != EAGAIN)
			conn_ended(c, conn, errno);
		return;
	}
	if (n == 0) {
		conn_ended(c, conn, 0);
		return;
	}
	if (conn->state == C_SENDING)
		conn->early = true;
	conn->got += (size_t)n;
	conn->rlen += (size_t)n;
	used = h1_parse(&conn->p, conn->rbuf, conn->rlen, answer_body, r);
	if (conn->p.state == H1_ERROR) {
		req_fail(c, r, "%s", conn->p.error);
		return;
	}
	if (conn->p.state == H1_DONE) {
		/* Bytes after the answer belong to no request: do not reuse. */
		conn_answered(c, conn, used < conn->rlen);
		return;
	}
	memmove(conn->rbuf, conn->rbuf + used, conn->rlen - used);
	conn->rlen -= used;
}

/* An idle connection became readable: the peer closed it, or talks out of turn. */
static void idle_event(struct h1_client *c, struct h1_conn *conn)
{
	conn_close(c, conn);
}

/* A connect in progress finished. */
static void connected(struct h1_client *c, struct h1_conn *conn)
{
	int e = 0;
	socklen_t len = sizeof(e);

	if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &e, &len) < 0)
		e = errno;
	if (e == 0) {
		conn->state = C_SENDING;
		conn_send(c, conn);
		return;
	}
	if (conn->addr + 1 < c->ep->naddr) {
		struct h1_req *r = conn->req;
		int next = conn->addr + 1;
		conn_close(c, conn);
		conn_open(c, r, next);
		return;
	}
	req_fail(c, conn->req, "Failed to connect to %s: %s", c->ep->where[conn->addr], strerror(e));
}

void h1_event(struct h1_client *c, struct h1_conn *conn, uint32_t events)
{
	switch (conn->state) {
	case C_CONNECTING:
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			connected(c, conn);
		break;
	case C_SENDING:
		/*
		 * An early answer (say, 413 before the whole body) is read first:
		 * it is the request's answer, and the peer may have stopped
		 * reading, so that sending on would fail and send it all again.
		 */
		if (events & EPOLLIN)
			conn_read(c, conn);
		if (conn->state == C_SENDING && (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
			conn_send(c, conn);
		break;
	case C_READING:
		conn_read(c, conn);
		break;
	case C_IDLE:
		idle_event(c, conn);
		break;
	case C_WAITING:
	case C_CLOSED:
		break;
	}
}

/* --- time --- */

void h1_tick(struct h1_client *c, int64_t now)
{
	while (c->first && c->first->deadline <= now) {
		struct h1_req *r = c->first;
		struct h1_conn *conn = r->conn;
		int64_t took = now - r->started;

		r->timed_out = true;
		if (!conn || conn->state == C_CONNECTING || conn->state == C_WAITING)
			req_fail(c, r, "Connection timed out after %lld milliseconds", (long long)took);
		else
			req_fail(c, r, "Operation timed out after %lld milliseconds with %zu bytes "
			    "received", (long long)took, conn->got);
	}
	if (c->nwaiting == 0)
		return;
	for (struct h1_conn *conn = c->all, *next; conn; conn = next) {
		/* Kept before: conn may be closed by the connect (it stays in memory). */
		next = conn->all_next;
		if (conn->state != C_WAITING || conn->retry_at > now)
			continue;
		c->nwaiting--;
		conn->state = C_CONNECTING;
		conn_connect(c, conn);
	}
}

int64_t h1_next_wake(const struct h1_client *c, int64_t now)
{
	int64_t at = -1;

	if (c->done)
		return now;
	if (c->first)
		at = c->first->deadline;
	if (c->nwaiting > 0) {
		for (const struct h1_conn *conn = c->all; conn; conn = conn->all_next)
			if (conn->state == C_WAITING && (at < 0 || conn->retry_at < at))
				at = conn->retry_at;
	}
	return at;
}
