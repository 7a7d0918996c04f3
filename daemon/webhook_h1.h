/*
 * webhook_h1: a small HTTP/1.1 keep-alive client for webhook endpoints that
 * need no DNS, TLS or proxy: http:// to an IP literal or localhost, or a Unix
 * socket. webhook.c uses it behind its own API for those endpoints and
 * libcurl for every other one (docs/webhooks.md, "The HTTP client").
 *
 * Two parts: the answer parser, a pure function over bytes (unit-tested and
 * fuzzed on its own), and the client, which keeps connections, sends
 * requests with sendmsg() and feeds the answers to the parser, on the
 * caller's epoll set. Nothing blocks; one thread.
 */
#ifndef ACKD_WEBHOOK_H1_H
#define ACKD_WEBHOOK_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>

#ifndef MUST_USE
#define MUST_USE __attribute__((warn_unused_result))
#endif

/* --- the answer parser ------------------------------------------------------- */

/* Most bytes of a status line and its header block, and of a chunked trailer. */
#define H1_HEADER_MAX (64 * 1024)
/* Most bytes of a chunk-size line (with its extensions). */
#define H1_CHUNK_LINE_MAX 4096

enum h1_state {
	H1_STATUS,      /* before the status line */
	H1_HEADERS,     /* in the header block */
	H1_BODY,        /* Content-Length bytes to go */
	H1_CHUNK_SIZE,  /* before a chunk-size line */
	H1_CHUNK_DATA,  /* in a chunk */
	H1_CHUNK_END,   /* the CRLF after a chunk */
	H1_TRAILERS,    /* after the last chunk */
	H1_UNTIL_CLOSE, /* the body ends when the connection does */
	H1_DONE,        /* the answer is complete */
	H1_ERROR,       /* not an answer: error says why */
};

/* Where body bytes go: the parser passes them on as they come. */
typedef void h1_body_fn(void *arg, const char *p, size_t n);

struct h1_parser {
	enum h1_state state;
	long status;         /* of the final answer (1xx ones are skipped) */
	int minor;           /* HTTP/1.minor of the status line */
	bool close;          /* the connection ends with this answer */
	bool chunked;        /* Transfer-Encoding ends in chunked */
	bool te;             /* a Transfer-Encoding was sent */
	bool conn_close;     /* Connection: close */
	bool conn_keep;      /* Connection: keep-alive */
	int64_t length;      /* Content-Length; -1 without one */
	uint64_t left;       /* bytes left of the body or of the chunk */
	size_t block;        /* bytes of the header block (or trailer) so far */
	char retry_after[64]; /* Retry-After's value, trimmed; "" without one */
	const char *error;   /* H1_ERROR: why (a static text) */
};

void h1_parser_init(struct h1_parser *p);

/*
 * Feed len bytes of an answer. Returns how many of them were used: all of
 * them, or fewer when the answer ended (state H1_DONE; the rest belongs to
 * no answer), the input ended in the middle of a line (feed the rest again,
 * with more after it), or on an error (state H1_ERROR). Body bytes go to
 * body(arg, ...) when body is not NULL.
 */
size_t h1_parse(struct h1_parser *p, const char *buf, size_t len, h1_body_fn *body, void *arg);

/*
 * The connection ended after what was fed. 0 when that completes the answer
 * (a body delimited by the close), else -1 with state H1_ERROR.
 */
int h1_parse_eof(struct h1_parser *p);

/* --- the endpoint ------------------------------------------------------------- */

struct h1_endpoint {
	char *head;             /* "POST {path?query} HTTP/1.1\r\nHost: {host}\r\n" */
	size_t head_len;
	int naddr;              /* addresses to try in turn (localhost: IPv4, IPv6) */
	struct sockaddr_storage addr[2];
	socklen_t addr_len[2];
	char where[2][128];     /* each, for error texts: "127.0.0.1 port 80", a path */
};

/*
 * The endpoint of url (and unix_socket, "" for TCP) when the lean client can
 * reach it: http:// with a host that is an IP literal or localhost, no user
 * or password in the URL, no proxy (proxy_env: a proxy variable is set; only
 * TCP cares), a path and query that can stand on a request line as they are.
 * NULL otherwise, with why.
 */
struct h1_endpoint *h1_endpoint_new(const char *url, const char *unix_socket, bool proxy_env,
    char *why, size_t whylen);
void h1_endpoint_free(struct h1_endpoint *ep);

/* --- the client --------------------------------------------------------------- */

struct h1_client;
struct h1_conn;

#define H1_IOV 6

/* One request, owned by the caller; the client only points at it in flight. */
struct h1_req {
	struct h1_req *prev, *next; /* in flight, oldest first; then the done list */
	struct h1_conn *conn;
	struct iovec iov[H1_IOV];   /* what h1_start() sends, in order */
	int niov;
	size_t total;               /* bytes of all of iov */
	size_t sent;                /* of total, on the current connection */
	int64_t started, deadline;  /* now_ms() */
	bool retried;               /* sent once more on a new connection already */
	h1_body_fn *body;           /* the answer's body bytes; NULL: thrown away */
	void *body_arg;
	/* the outcome, when it is on the done list */
	long status;                /* 0: no answer */
	bool timed_out;
	const char *error;          /* status 0: why */
	char retry_after[64];       /* as the parser's */
	char errbuf[256];
};

/*
 * A client for ep (borrowed) on epfd, whose events for it carry a struct
 * h1_conn pointer (hand them to h1_event()). keep: most idle connections
 * kept; timeout_ms: per request from h1_start(), connecting included.
 */
struct h1_client *h1_client_new(const struct h1_endpoint *ep, int epfd, size_t keep,
    int64_t timeout_ms);
/* Closes every connection; requests in flight are forgotten (the caller owns them). */
void h1_client_free(struct h1_client *c);

/*
 * Send the request that iov[0..niov) holds (total bytes, which must stay put
 * until it is done). Never fails here: a request that cannot be sent comes
 * back from h1_take_done() with status 0 and an error.
 */
void h1_start(struct h1_client *c, struct h1_req *r);

/* An event from epfd whose data.ptr is conn. */
void h1_event(struct h1_client *c, struct h1_conn *conn, uint32_t events);

/* Requests whose time is up end now (timed_out); connections waiting to retry a connect do. */
void h1_tick(struct h1_client *c, int64_t now);

/* now_ms() when h1_tick() has something to do; now when a request is done; -1 never. */
int64_t h1_next_wake(const struct h1_client *c, int64_t now);

/* The oldest finished request, off the client; NULL when none. */
struct h1_req *h1_take_done(struct h1_client *c);

/* Frees connections closed since the last call (after a batch of events). */
void h1_reap(struct h1_client *c);

/* Connections open (busy and idle), for tests. */
size_t h1_conns(const struct h1_client *c);

#endif
