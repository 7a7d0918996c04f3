/*
 * webhook: one libcurl multi handle per subscription, driven by the
 * subscription's own epoll set.
 *
 * Design. Every message is one transfer on an easy handle taken from the
 * subscription's free list; the multi handle keeps connections alive between
 * them, so a steady stream of messages reuses a few connections. A handle is
 * set up once (URL, socket path, timeouts, callbacks, its header list) and
 * only its body changes per message; after its transfer it goes back to the
 * free list, not to curl_easy_cleanup(). The header block is written with
 * memcpy into the request's own buffer and handed to libcurl as three list
 * entries that point into it (libcurl copies each entry into the request):
 * Content-Type alone, so that libcurl neither adds its own nor sends a blank
 * one; everything else as one entry of CRLF-separated lines; and "Expect:",
 * so that larger bodies get no "100-continue" round trip. The URL is parsed
 * once per subscription (CURLOPT_CURLU), and when no proxy variable is set in
 * the environment the handles say so once, so that libcurl does neither for
 * every transfer.
 *
 * Sockets and timers come from libcurl's socket and timer callbacks into an
 * epoll set, together with the caller's wake-up fd; webhook_poll() waits on
 * it and hands libcurl only the sockets that are ready
 * (curl_multi_socket_action), instead of rebuilding a poll set of every
 * transfer each turn.
 *
 * Redirects are not followed (a 3xx is an answer, and docs/webhooks.md says to retry
 * it). The body is the message value, sent from the Kafka message's own
 * buffer without a copy. The answer's body is read and thrown away; only the
 * status and Retry-After matter.
 *
 * Batches (webhook_send_batch()). The body is the JSON that webhook_batch.c
 * writes into the request's own buffer, reused from batch to batch; the
 * headers are the webhook-* ones, ackd-attempt and the static and auth
 * ones, without the per-message ackd-* lines (those are in the body). The
 * answer's body is kept (up to WEBHOOK_ANSWER_MAX bytes) for a 207's
 * per-message results.
 *
 * Outbound auth. The static headers are formatted once, in webhook_new(),
 * and copied into every request's block. tls.ca_file, cert_file and key_file
 * go to every handle (libcurl's CAINFO, SSLCERT, SSLKEY). With oauth2 the
 * token comes from oauth2.c before each request; a 401 to a request makes
 * oauth2.c forget the token it was sent with, so the retry (a 401 is retried,
 * see docs/webhooks.md) fetches a new one.
 *
 * The lean client. For an endpoint that needs no DNS, TLS or proxy (an
 * http:// URL to an IP literal or localhost, or unix_socket; see
 * h1_endpoint_new()) and unless the subscription says http_client =
 * "libcurl", webhook_h1.c sends the requests instead of libcurl, on the same
 * epoll set: no multi handle, no easy handles. The header block is the same
 * buffer, built by the same code; the lean client sends the request line and
 * Host (made once per subscription), the Content-Type line, the rest of the
 * block, Content-Length and the body as iovecs of one sendmsg(), which is
 * what libcurl writes apart from its own Accept line. Its epoll events carry
 * a connection pointer, and NULL for the wake-up fd.
 *
 * Threads: all of it on the subscription's thread.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <curl/curl.h>

#include "backoff.h"
#include "log.h"
#include "oauth2.h"
#include "util.h"
#include "webhook.h"
#include "webhook_batch.h"
#include "webhook_h1.h"
#include "webhook_sign.h"

#define MAX_EVENTS 128

struct request;

struct webhook {
	const struct conf_sub *cs;
	CURLM *multi;
	CURLU *url;  /* parsed once, every handle points at it; NULL: CURLOPT_URL */
	int epfd;
	int extra_fd;        /* the caller's wake-up fd in epfd; -1 none yet */
	int64_t timer_at;    /* now_ms() when libcurl wants its timeout; -1 none */
	bool no_proxy_env;   /* no proxy variable set: tell the handles so */
	size_t in_flight;
	struct request *requests; /* in flight, for webhook_free() */
	struct request *idle;     /* set up, not in use (singly linked by next) */
	unsigned char *fds;       /* by fd: what epfd holds (FD_NONE...) */
	size_t nfds;
	char *static_hdrs;        /* "\r\nName: value" for each of cs->headers */
	struct oauth2 *oauth2;    /* NULL without oauth2.token_url */
	/* The lean client instead of libcurl (then multi is NULL). */
	struct h1_endpoint *ep;
	struct h1_client *h1;
};

struct request {
	struct request *prev, *next;
	CURL *easy;
	void *tag;
	char *buf; /* the header block: Content-Type line, NUL, the rest, NUL */
	size_t len, cap;
	size_t rest; /* where the rest starts in buf */
	struct curl_slist hdr[3]; /* point into buf, and "Expect:" */
	char retry_after[64];
	char error[CURL_ERROR_SIZE];
	const struct conf_sub *cs;
	uint64_t token_gen; /* of the oauth2 token it was sent with */
	bool batch;         /* a batch request: keep the answer's body */
	struct wbuf body;   /* a batch's JSON body */
	struct wbuf answer; /* a batch's answer body, NUL-terminated */
	struct h1_req h1;   /* the lean client's part */
	char clen[48];      /* its "\r\nContent-Length: N\r\n\r\n" */
};

/* --- sockets and timers ------------------------------------------------------- */

/*
 * What epfd holds for fd: nothing, a socket libcurl watches, or one it stopped
 * watching. libcurl stops watching a connection whenever it goes back to the
 * connection cache and starts again with the next request on it, so the
 * socket stays in epfd in between (one epoll_ctl per request instead of two)
 * and leaves it when an event arrives that libcurl no longer wants.
 */
enum { FD_NONE, FD_CURL, FD_IDLE };

static int fd_state(const struct webhook *wh, int fd)
{
	return (size_t)fd < wh->nfds ? wh->fds[fd] : FD_NONE;
}

static void fd_set_state(struct webhook *wh, int fd, int state)
{
	if ((size_t)fd >= wh->nfds) {
		size_t n = wh->nfds ? wh->nfds : 64;
		while (n <= (size_t)fd)
			n *= 2;
		wh->fds = xrealloc(wh->fds, n);
		memset(wh->fds + wh->nfds, FD_NONE, n - wh->nfds);
		wh->nfds = n;
	}
	wh->fds[fd] = (unsigned char)state;
}

static int on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct webhook *wh = userp;
	struct epoll_event ev = { .events = 0, .data.fd = s };

	(void)easy;
	(void)socketp;
	if (what == CURL_POLL_REMOVE) {
		if (fd_state(wh, s) == FD_CURL)
			fd_set_state(wh, s, FD_IDLE);
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev.events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		ev.events |= EPOLLOUT;
	/*
	 * A socket we think is in epfd may have been closed and its number
	 * reused (then MOD fails with ENOENT), and one we think is not may
	 * still be there (ADD fails with EEXIST).
	 */
	if (fd_state(wh, s) != FD_NONE) {
		if (epoll_ctl(wh->epfd, EPOLL_CTL_MOD, s, &ev) < 0 &&
		    (errno != ENOENT || epoll_ctl(wh->epfd, EPOLL_CTL_ADD, s, &ev) < 0))
			return -1;
	} else if (epoll_ctl(wh->epfd, EPOLL_CTL_ADD, s, &ev) < 0 &&
	    (errno != EEXIST || epoll_ctl(wh->epfd, EPOLL_CTL_MOD, s, &ev) < 0)) {
		return -1;
	}
	fd_set_state(wh, s, FD_CURL);
	return 0;
}

static int on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct webhook *wh = userp;

	(void)multi;
	wh->timer_at = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	return 0;
}

/* --- handles ------------------------------------------------------------------ */

static bool proxy_env_set(void)
{
	/* What libcurl would read for an http:// or https:// URL. */
	static const char *const vars[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
		"HTTPS_PROXY", "all_proxy", "ALL_PROXY" };

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		const char *v = getenv(vars[i]);
		if (v && *v)
			return true;
	}
	return false;
}

/* "\r\nName: value" for each "Name=value" (conf.c checked them). */
static char *static_headers(const struct conf_strlist *l)
{
	size_t len = 0, at = 0;
	char *s;

	for (size_t i = 0; i < l->n; i++)
		len += strlen(l->v[i]) + 3;
	s = xmalloc(len + 1);
	for (size_t i = 0; i < l->n; i++) {
		const char *eq = strchr(l->v[i], '=');
		at += (size_t)sprintf(s + at, "\r\n%.*s: %s", (int)(eq - l->v[i]), l->v[i], eq + 1);
	}
	s[at] = '\0';
	return s;
}

struct webhook *webhook_new(const struct conf_sub *cs, char *err, size_t errlen)
{
	struct webhook *wh = xcalloc(1, sizeof(*wh));

	wh->cs = cs;
	wh->extra_fd = -1;
	wh->timer_at = -1;
	wh->no_proxy_env = !proxy_env_set();
	wh->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (wh->epfd < 0) {
		snprintf(err, errlen, "cannot create an epoll set: %s", strerror(errno));
		free(wh);
		return NULL;
	}
	if (cs->http_client == CONF_HTTP_CLIENT_AUTO) {
		char why[128];
		wh->ep = h1_endpoint_new(cs->url, cs->unix_socket, !wh->no_proxy_env, why,
		    sizeof(why));
		if (!wh->ep)
			log_debug("webhook %s: libcurl sends its requests (%s)", cs->name, why);
	}
	if (cs->oauth2.token_url[0] && !(wh->oauth2 = oauth2_new(cs))) {
		snprintf(err, errlen, "out of memory");
		webhook_free(wh);
		return NULL;
	}
	wh->static_hdrs = static_headers(&cs->headers);
	if (wh->ep) {
		/* Keep as many connections alive as may be busy at once. */
		wh->h1 = h1_client_new(wh->ep, wh->epfd, (size_t)cs->max_in_flight, cs->timeout_ms);
		log_debug("webhook %s: ackd's own HTTP/1.1 client sends its requests", cs->name);
		return wh;
	}
	wh->multi = curl_multi_init();
	if (!wh->multi) {
		snprintf(err, errlen, "cannot create a libcurl multi handle");
		webhook_free(wh);
		return NULL;
	}
	/*
	 * Parsed here once, with the flags libcurl uses for CURLOPT_URL, instead
	 * of for every transfer. A URL it rejects is left to CURLOPT_URL, so
	 * that every request fails with libcurl's reason, as before.
	 */
	wh->url = curl_url();
	if (wh->url && curl_url_set(wh->url, CURLUPART_URL, cs->url[0] ? cs->url : "http://localhost/",
	    CURLU_GUESS_SCHEME | CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
		curl_url_cleanup(wh->url);
		wh->url = NULL;
	}
	/* Keep as many connections alive as may be busy at once. */
	curl_multi_setopt(wh->multi, CURLMOPT_MAXCONNECTS, (long)cs->max_in_flight);
	curl_multi_setopt(wh->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(wh->multi, CURLMOPT_SOCKETDATA, wh);
	curl_multi_setopt(wh->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(wh->multi, CURLMOPT_TIMERDATA, wh);
	return wh;
}

static void request_destroy(struct request *req)
{
	curl_easy_cleanup(req->easy);
	free(req->buf);
	free(req->body.p);
	free(req->answer.p);
	free(req);
}

/* Onto the in-flight list; request_detach() undoes it. */
static void request_attach(struct webhook *wh, struct request *req)
{
	req->prev = NULL;
	req->next = wh->requests;
	if (wh->requests)
		wh->requests->prev = req;
	wh->requests = req;
	wh->in_flight++;
}

/* Off the in-flight list and out of the multi handle. */
static void request_detach(struct webhook *wh, struct request *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		wh->requests = req->next;
	if (req->next)
		req->next->prev = req->prev;
	if (req->easy)
		curl_multi_remove_handle(wh->multi, req->easy);
	wh->in_flight--;
}

void webhook_free(struct webhook *wh)
{
	if (!wh)
		return;
	h1_client_free(wh->h1); /* before the requests its connections point at */
	h1_endpoint_free(wh->ep);
	while (wh->requests) {
		struct request *req = wh->requests;
		request_detach(wh, req);
		request_destroy(req);
	}
	while (wh->idle) {
		struct request *req = wh->idle;
		wh->idle = req->next;
		request_destroy(req);
	}
	if (wh->multi)
		curl_multi_cleanup(wh->multi);
	curl_url_cleanup(wh->url);
	close(wh->epfd);
	free(wh->fds);
	free(wh->static_hdrs);
	oauth2_free(wh->oauth2);
	free(wh);
}

/* A batch's answer body, kept up to WEBHOOK_ANSWER_MAX bytes (both clients). */
static void keep_answer(void *arg, const char *ptr, size_t len)
{
	struct request *req = arg;
	size_t keep = len;

	if (keep > WEBHOOK_ANSWER_MAX - req->answer.len)
		keep = WEBHOOK_ANSWER_MAX - req->answer.len;
	if (keep > 0 || !req->answer.p) {
		if (req->answer.len + keep + 1 > req->answer.cap) {
			size_t cap = req->answer.cap ? req->answer.cap : 1024;
			while (req->answer.len + keep + 1 > cap)
				cap *= 2;
			req->answer.p = xrealloc(req->answer.p, cap);
			req->answer.cap = cap;
		}
		memcpy(req->answer.p + req->answer.len, ptr, keep);
		req->answer.len += keep;
		req->answer.p[req->answer.len] = '\0';
	}
}

/* The answer's body: thrown away, except a batch's. */
static size_t read_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct request *req = userdata;
	size_t len = size * nmemb;

	if (req->batch)
		keep_answer(req, ptr, len);
	return len;
}

static size_t read_header(char *line, size_t size, size_t nitems, void *userdata)
{
	struct request *req = userdata;
	size_t len = size * nitems;
	const char *name = "retry-after:";
	size_t nlen = strlen(name);

	if (len > nlen && strncasecmp(line, name, nlen) == 0) {
		const char *v = line + nlen;
		size_t vlen = len - nlen;
		while (vlen > 0 && (*v == ' ' || *v == '\t')) {
			v++;
			vlen--;
		}
		while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
			vlen--;
		snprintf(req->retry_after, sizeof(req->retry_after), "%.*s", (int)vlen, v);
	}
	return len;
}

/* A handle with everything set that stays the same from message to message. */
static struct request *request_new(struct webhook *wh)
{
	const struct conf_sub *cs = wh->cs;
	struct request *req = xcalloc(1, sizeof(*req));
	CURL *e;

	req->cs = cs;
	req->cap = 1024;
	req->buf = xmalloc(req->cap);
	if (wh->h1)
		return req;
	e = curl_easy_init();
	if (!e) {
		free(req->buf);
		free(req);
		return NULL;
	}
	req->easy = e;
	req->hdr[0].next = &req->hdr[1];
	req->hdr[1].next = &req->hdr[2];
	req->hdr[2].data = (char *)"Expect:";
	req->hdr[2].next = NULL;
	if (wh->url)
		curl_easy_setopt(e, CURLOPT_CURLU, wh->url);
	else
		curl_easy_setopt(e, CURLOPT_URL, cs->url[0] ? cs->url : "http://localhost/");
	if (cs->unix_socket[0])
		curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, cs->unix_socket);
	if (wh->no_proxy_env) {
		curl_easy_setopt(e, CURLOPT_PROXY, "");
		curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	}
	if (cs->tls.ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, cs->tls.ca_file);
	if (cs->tls.cert_file[0]) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, cs->tls.cert_file);
		curl_easy_setopt(e, CURLOPT_SSLKEY, cs->tls.key_file);
	}
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->hdr);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cs->timeout_ms);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, read_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	return req;
}

/* --- the header block ----------------------------------------------------------- */

static char *reserve(struct request *req, size_t n)
{
	if (req->len + n > req->cap) {
		while (req->len + n > req->cap)
			req->cap *= 2;
		req->buf = xrealloc(req->buf, req->cap);
	}
	return req->buf + req->len;
}

static void put(struct request *req, const void *s, size_t n)
{
	memcpy(reserve(req, n), s, n);
	req->len += n;
}

static void put_str(struct request *req, const char *s) { put(req, s, strlen(s)); }

#define PUT_LIT(req, lit) put((req), (lit), sizeof(lit) - 1)

static void put_int(struct request *req, int64_t v)
{
	char tmp[INT64_DEC_MAX];

	put(req, tmp, (size_t)(put_int64(tmp, v) - tmp));
}

/* Kafka header names are bytes; an HTTP field name is a token. */
static bool is_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	return true;
}

/* "\r\n{name}: {percent-encoded v}"; an empty value is sent empty. */
static void put_pct(struct request *req, const char *prefix, size_t plen, const char *name,
    const void *v, size_t len)
{
	size_t cap = 3 * len + 1; /* every byte encoded, and the NUL */

	PUT_LIT(req, "\r\n");
	put(req, prefix, plen);
	put_str(req, name);
	if (len == 0) {
		PUT_LIT(req, ":");
		return;
	}
	PUT_LIT(req, ": ");
	req->len += pct_encode(v, len, reserve(req, cap), cap);
}

/*
 * A header value that can stand on a request line as it is: printable, not
 * blank (libcurl drops a blank one, and then sends no Content-Type), at most
 * max bytes.
 */
static bool usable_value(const char *v, size_t len, size_t max)
{
	bool visible = false;

	if (!v || len == 0 || len > max)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c < 0x20 && c != '\t')
			return false;
		if (c == 0x7f)
			return false;
		visible |= c != ' ' && c != '\t';
	}
	return visible;
}

/*
 * W3C Trace Context: the message's traceparent and tracestate Kafka headers
 * (the first of each name) as request headers of the same names, as they
 * are, so that a trace runs from the publisher to the receiver. A value that
 * cannot stand on a request line is left out (it still goes as
 * ackd-header-*, percent-encoded). 512 is what W3C asks a tracestate to be
 * kept to.
 */
static void put_trace(struct request *req, const struct webhook_msg *m)
{
	static const char *const names[] = { "traceparent", "tracestate" };

	for (size_t n = 0; n < 2; n++) {
		for (size_t i = 0; i < m->nhdrs; i++) {
			const struct webhook_hdr *h = &m->hdrs[i];
			if (strcmp(h->name, names[n]) != 0)
				continue;
			if (usable_value(h->value, h->value_len, 512)) {
				PUT_LIT(req, "\r\n");
				put_str(req, names[n]);
				PUT_LIT(req, ": ");
				put(req, h->value, h->value_len);
			}
			break;
		}
	}
}

/*
 * The headers every request ends with (the subscription's static ones, the
 * OAuth token, User-Agent); then the list points at the buffer, which may
 * have moved while it grew (rest: where the second header line starts).
 */
static void put_common_tail(struct request *req, const char *static_hdrs, const char *bearer,
    size_t rest)
{
	put_str(req, static_hdrs);
	if (bearer) {
		PUT_LIT(req, "\r\nAuthorization: Bearer ");
		put_str(req, bearer);
	}
	PUT_LIT(req, "\r\nUser-Agent: ackd/" PACKAGE_VERSION);
	put(req, "", 1);
	req->rest = rest;
	req->hdr[0].data = req->buf;
	req->hdr[1].data = req->buf + rest;
}

/* The request's headers; -1 with err when they cannot be built (signing failed). */
static MUST_USE int build_headers(struct request *req, const struct webhook_msg *m,
    const char *static_hdrs, const char *bearer, char *err, size_t errlen)
{
	const struct conf_sub *cs = req->cs;
	const char *ctype = "application/octet-stream";
	size_t ctype_len = strlen(ctype);
	int64_t now_s = wall_ms() / 1000;
	size_t rest;

	req->len = 0;
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct webhook_hdr *h = &m->hdrs[i];
		if (strcasecmp(h->name, "content-type") == 0 &&
		    usable_value(h->value, h->value_len, 255)) {
			ctype = (const char *)h->value;
			ctype_len = h->value_len;
		}
	}
	PUT_LIT(req, "Content-Type: ");
	put(req, ctype, ctype_len);
	put(req, "", 1);
	rest = req->len;
	/* Never blank, so libcurl sends the whole entry. */
	PUT_LIT(req, "webhook-timestamp: ");
	put_int(req, now_s);
	PUT_LIT(req, "\r\nwebhook-id: ");
	put_str(req, m->id);
	if (cs->secrets.n > 0) {
		size_t cap = 96 * cs->secrets.n + 1;
		size_t at = req->len;
		size_t n;
		PUT_LIT(req, "\r\nwebhook-signature: ");
		/* An empty Kafka value may come as NULL; memcpy wants a pointer. */
		n = webhook_sign(&cs->secrets, m->id, now_s, m->value_len ? m->value : "",
		    m->value_len, reserve(req, cap), cap);
		/* Fail closed: a subscription with secrets never sends unsigned. */
		if (n == 0) {
			req->len = at;
			snprintf(err, errlen, "the webhook-signature cannot be computed");
			return -1;
		}
		req->len += n;
	}
	PUT_LIT(req, "\r\nackd-topic: ");
	put_str(req, m->topic);
	PUT_LIT(req, "\r\nackd-partition: ");
	put_int(req, m->partition);
	PUT_LIT(req, "\r\nackd-offset: ");
	put_int(req, m->offset);
	if (m->key)
		put_pct(req, "", 0, "ackd-key", m->key, m->key_len);
	PUT_LIT(req, "\r\nackd-attempt: ");
	put_int(req, m->attempt);
	if (m->timestamp_ms >= 0) {
		PUT_LIT(req, "\r\nackd-timestamp: ");
		put_int(req, m->timestamp_ms);
	}
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct webhook_hdr *h = &m->hdrs[i];
		if (!is_token(h->name) || strlen(h->name) > 256) {
			char name[160];

			log_debug("webhook %s: kafka header \"%s\" is not an http field name; "
			    "not sent", cs->name, log_escape(h->name, strlen(h->name), name, sizeof(name)));
			continue;
		}
		put_pct(req, "ackd-header-", sizeof("ackd-header-") - 1, h->name,
		    h->value ? h->value : "", h->value ? h->value_len : 0);
	}
	put_trace(req, m);
	put_common_tail(req, static_hdrs, bearer, rest);
	return 0;
}

/*
 * An idle handle (or a new one) for tag, with the oauth2 token to send in
 * *bearer; NULL with err when there is no token or no handle.
 */
static struct request *request_take(struct webhook *wh, void *tag, const char **bearer,
    char *err, size_t errlen)
{
	struct request *req;
	uint64_t gen = 0;

	*bearer = NULL;
	if (wh->oauth2 && oauth2_token(wh->oauth2, now_ms(), bearer, &gen, err, errlen) < 0)
		return NULL;
	req = wh->idle;
	if (req)
		wh->idle = req->next;
	else if (!(req = request_new(wh))) {
		snprintf(err, errlen, "libcurl cannot create a handle");
		return NULL;
	}
	req->tag = tag;
	req->token_gen = gen;
	req->batch = false;
	req->answer.len = 0;
	req->retry_after[0] = '\0';
	req->error[0] = '\0';
	return req;
}

/* Back to the idle list, unsent. */
static void request_untake(struct webhook *wh, struct request *req)
{
	req->next = wh->idle;
	wh->idle = req;
}

/*
 * The lean client's request: the request line and Host, the header block as
 * libcurl would send it (Content-Type, then the rest), Content-Length, the
 * body from where it is.
 */
static void request_start_h1(struct webhook *wh, struct request *req, const void *body,
    size_t len)
{
	struct h1_req *r = &req->h1;
	char *p = req->clen;

	memcpy(p, "\r\nContent-Length: ", 18);
	p = put_int64(p + 18, (int64_t)len);
	memcpy(p, "\r\n\r\n", 4);
	p += 4;
	r->iov[0] = (struct iovec){ (void *)wh->ep->head, wh->ep->head_len };
	r->iov[1] = (struct iovec){ req->buf, req->rest - 1 };
	r->iov[2] = (struct iovec){ (void *)"\r\n", 2 };
	r->iov[3] = (struct iovec){ req->buf + req->rest, req->len - 1 - req->rest };
	r->iov[4] = (struct iovec){ req->clen, (size_t)(p - req->clen) };
	r->iov[5] = (struct iovec){ (void *)body, len };
	r->niov = len ? 6 : 5;
	r->body = req->batch ? keep_answer : NULL;
	r->body_arg = req;
	h1_start(wh->h1, r);
}

/* POST len bytes of body (which must live until the answer); 0, or -1 with err. */
static MUST_USE int request_start(struct webhook *wh, struct request *req, const void *body,
    size_t len, char *err, size_t errlen)
{
	if (wh->h1) {
		request_attach(wh, req);
		request_start_h1(wh, req, body, len);
		return 0;
	}
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	curl_easy_setopt(req->easy, CURLOPT_POSTFIELDS, len ? body : "");
	if (curl_multi_add_handle(wh->multi, req->easy) != CURLM_OK) {
		request_destroy(req);
		snprintf(err, errlen, "libcurl cannot start the request");
		return -1;
	}
	request_attach(wh, req);
	return 0;
}

int webhook_send(struct webhook *wh, const struct webhook_msg *m, void *tag, char *err,
    size_t errlen)
{
	const char *bearer;
	struct request *req = request_take(wh, tag, &bearer, err, errlen);

	if (!req)
		return -1;
	if (build_headers(req, m, wh->static_hdrs, bearer, err, errlen) < 0) {
		request_untake(wh, req);
		return -1;
	}
	return request_start(wh, req, m->value, m->value_len, err, errlen);
}

/* A batch request's headers: its body is req->body; -1 with err when signing failed. */
static MUST_USE int build_batch_headers(struct request *req, const char *id, int attempt,
    const char *static_hdrs, const char *bearer, char *err, size_t errlen)
{
	const struct conf_sub *cs = req->cs;
	int64_t now_s = wall_ms() / 1000;
	size_t rest;

	req->len = 0;
	PUT_LIT(req, "Content-Type: application/json");
	put(req, "", 1);
	rest = req->len;
	PUT_LIT(req, "webhook-timestamp: ");
	put_int(req, now_s);
	PUT_LIT(req, "\r\nwebhook-id: ");
	put_str(req, id);
	if (cs->secrets.n > 0) {
		size_t cap = 96 * cs->secrets.n + 1;
		size_t n;
		PUT_LIT(req, "\r\nwebhook-signature: ");
		n = webhook_sign(&cs->secrets, id, now_s, req->body.len ? req->body.p : "",
		    req->body.len, reserve(req, cap), cap);
		if (n == 0) { /* fail closed, as for one message */
			snprintf(err, errlen, "the webhook-signature cannot be computed");
			return -1;
		}
		req->len += n;
	}
	PUT_LIT(req, "\r\nackd-attempt: ");
	put_int(req, attempt);
	put_common_tail(req, static_hdrs, bearer, rest);
	return 0;
}

int webhook_send_batch(struct webhook *wh, const struct webhook_msg *ms, size_t n,
    const char *id, int attempt, void *tag, char *err, size_t errlen)
{
	const char *bearer;
	struct request *req = request_take(wh, tag, &bearer, err, errlen);

	if (!req)
		return -1;
	req->batch = true;
	webhook_batch_body(&req->body, ms, n);
	if (build_batch_headers(req, id, attempt, wh->static_hdrs, bearer, err, errlen) < 0) {
		request_untake(wh, req);
		return -1;
	}
	return request_start(wh, req, req->body.p, req->body.len, err, errlen);
}

/* --- driving them --------------------------------------------------------------- */

/*
 * The caller's wake-up fd in epfd. Its events carry the fd for libcurl's
 * loop (which tells sockets by fd) and NULL for the lean client's (whose
 * events carry a connection).
 */
static void watch_wakeup(struct webhook *wh, int extra_fd)
{
	struct epoll_event ev = { .events = EPOLLIN };

	if (extra_fd == wh->extra_fd)
		return;
	if (wh->h1)
		ev.data.ptr = NULL;
	else
		ev.data.fd = extra_fd;
	if (wh->extra_fd >= 0)
		epoll_ctl(wh->epfd, EPOLL_CTL_DEL, wh->extra_fd, NULL);
	if (extra_fd >= 0 && epoll_ctl(wh->epfd, EPOLL_CTL_ADD, extra_fd, &ev) < 0)
		log_warn("webhook %s: cannot watch the wake-up fd", wh->cs->name);
	wh->extra_fd = extra_fd;
}

/* webhook_poll() for the lean client: its events carry a connection, or NULL (extra_fd). */
static void poll_h1(struct webhook *wh, int extra_fd, int timeout_ms)
{
	struct epoll_event evs[MAX_EVENTS];
	int n, wait = timeout_ms;
	int64_t now = now_ms(), at;

	watch_wakeup(wh, extra_fd);
	at = h1_next_wake(wh->h1, now);
	if (at >= 0) {
		int64_t left = at > now ? at - now : 0;
		if (wait < 0 || left < wait)
			wait = (int)left;
	}
	n = epoll_wait(wh->epfd, evs, MAX_EVENTS, wait);
	for (int i = 0; i < n; i++)
		if (evs[i].data.ptr) /* NULL: the wake-up fd; the caller drains it */
			h1_event(wh->h1, evs[i].data.ptr, evs[i].events);
	h1_tick(wh->h1, now_ms());
	h1_reap(wh->h1);
}

void webhook_poll(struct webhook *wh, int extra_fd, int timeout_ms)
{
	struct epoll_event evs[MAX_EVENTS];
	int running, n, wait = timeout_ms;

	if (wh->h1) {
		poll_h1(wh, extra_fd, timeout_ms);
		return;
	}
	watch_wakeup(wh, extra_fd);
	if (wh->timer_at >= 0) {
		int64_t left = wh->timer_at - now_ms();
		if (left < 0)
			left = 0;
		if (wait < 0 || left < wait)
			wait = (int)left;
	}
	n = epoll_wait(wh->epfd, evs, MAX_EVENTS, wait);
	for (int i = 0; i < n; i++) {
		int fd = evs[i].data.fd, mask = 0;
		if (fd == extra_fd)
			continue; /* the caller drains it */
		if (fd_state(wh, fd) != FD_CURL) {
			/* An idle connection: closed by the peer, most likely. */
			epoll_ctl(wh->epfd, EPOLL_CTL_DEL, fd, NULL);
			fd_set_state(wh, fd, FD_NONE);
			continue;
		}
		if (evs[i].events & EPOLLIN)
			mask |= CURL_CSELECT_IN;
		if (evs[i].events & EPOLLOUT)
			mask |= CURL_CSELECT_OUT;
		if (evs[i].events & (EPOLLERR | EPOLLHUP))
			mask |= CURL_CSELECT_ERR;
		curl_multi_socket_action(wh->multi, fd, mask, &running);
	}
	if (wh->timer_at >= 0 && now_ms() >= wh->timer_at) {
		wh->timer_at = -1;
		curl_multi_socket_action(wh->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	}
}

/* The answer to req, as both clients report it; then req is off the list and idle. */
static void finish(struct webhook *wh, struct request *req, struct webhook_answer *a,
    webhook_done_fn *done, void *arg)
{
	if (req->batch) {
		a->body = req->answer.p ? req->answer.p : "";
		a->body_len = req->answer.len;
	}
	if (req->retry_after[0] &&
	    retry_after_parse(req->retry_after, wall_ms(), req->cs->retry.max_retry_after_ms,
	        &a->retry_after_ms) < 0)
		a->retry_after_ms = -1;
	if (a->status == 401 && wh->oauth2)
		oauth2_reject(wh->oauth2, req->token_gen);
	request_detach(wh, req);
	done(arg, req->tag, a);
	req->next = wh->idle;
	wh->idle = req;
}

static size_t collect_h1(struct webhook *wh, webhook_done_fn *done, void *arg)
{
	struct h1_req *r;
	size_t n = 0;

	while ((r = h1_take_done(wh->h1))) {
		struct request *req = (struct request *)((char *)r - offsetof(struct request, h1));
		struct webhook_answer a = { .status = r->status, .retry_after_ms = -1,
			.error = r->status ? NULL : r->error, .timed_out = r->timed_out,
			.body = NULL, .body_len = 0 };

		memcpy(req->retry_after, r->retry_after, sizeof(req->retry_after));
		finish(wh, req, &a, done, arg);
		n++;
	}
	return n;
}

size_t webhook_collect(struct webhook *wh, webhook_done_fn *done, void *arg)
{
	size_t n = 0;
	CURLMsg *msg;
	int left;

	if (wh->h1)
		return collect_h1(wh, done, arg);

	while ((msg = curl_multi_info_read(wh->multi, &left))) {
		struct webhook_answer a = { .status = 0, .retry_after_ms = -1, .error = NULL,
			.timed_out = false, .body = NULL, .body_len = 0 };
		struct request *req;
		CURL *e = msg->easy_handle;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&req);
		if (msg->data.result == CURLE_OK)
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &a.status);
		else
			a.error = req->error[0] ? req->error : curl_easy_strerror(msg->data.result);
		a.timed_out = msg->data.result == CURLE_OPERATION_TIMEDOUT;
		finish(wh, req, &a, done, arg);
		n++;
	}
	return n;
}

size_t webhook_in_flight(const struct webhook *wh) { return wh->in_flight; }
