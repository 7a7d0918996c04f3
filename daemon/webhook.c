/*
 * webhook: one libcurl multi handle per subscription.
 *
 * Design. Every message is one easy handle with its own header list; the
 * multi handle keeps connections alive between them, so a steady stream of
 * messages reuses a few connections. Redirects are not followed (a 3xx is an
 * answer, and DESIGN.md says to retry it). The body is the message value,
 * sent from the Kafka message's own buffer without a copy. The answer's body
 * is read and thrown away; only the status and Retry-After matter.
 *
 * Threads: all of it on the subscription's thread.
 */
#include "config.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "backoff.h"
#include "log.h"
#include "util.h"
#include "webhook.h"
#include "webhook_sign.h"

struct request;

struct webhook {
	const struct conf_sub *cs;
	CURLM *multi;
	size_t in_flight;
	struct request *requests; /* in flight, for webhook_free() */
};

struct request {
	struct request *prev, *next;
	CURL *easy;
	void *tag;
	struct curl_slist *headers;
	char retry_after[64];
	char error[CURL_ERROR_SIZE];
	const struct conf_sub *cs;
};

struct webhook *webhook_new(const struct conf_sub *cs, char *err, size_t errlen)
{
	struct webhook *wh = xcalloc(1, sizeof(*wh));

	wh->cs = cs;
	wh->multi = curl_multi_init();
	if (!wh->multi) {
		snprintf(err, errlen, "cannot create a libcurl multi handle");
		free(wh);
		return NULL;
	}
	/* Keep as many connections alive as may be busy at once. */
	curl_multi_setopt(wh->multi, CURLMOPT_MAXCONNECTS, (long)cs->max_in_flight);
	return wh;
}

static void request_free(struct webhook *wh, struct request *req)
{
	if (req->prev)
		req->prev->next = req->next;
	else
		wh->requests = req->next;
	if (req->next)
		req->next->prev = req->prev;
	curl_multi_remove_handle(wh->multi, req->easy);
	curl_easy_cleanup(req->easy);
	curl_slist_free_all(req->headers);
	free(req);
	wh->in_flight--;
}

void webhook_free(struct webhook *wh)
{
	if (!wh)
		return;
	while (wh->requests)
		request_free(wh, wh->requests);
	curl_multi_cleanup(wh->multi);
	free(wh);
}

/* --- building a request ----------------------------------------------------- */

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	(void)ptr;
	(void)userdata;
	return size * nmemb;
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

static struct curl_slist *add_header(struct curl_slist *list, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct curl_slist *add_header(struct curl_slist *list, const char *fmt, ...)
{
	struct curl_slist *next;
	va_list ap;
	char *line;

	/* Sized to fit: a percent-encoded key or header may be long. */
	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		fatalx("out of memory building webhook headers");
	va_end(ap);
	next = curl_slist_append(list, line);
	free(line);
	if (!next)
		fatalx("out of memory building webhook headers");
	return next;
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

static struct curl_slist *pct_header(struct curl_slist *list, const char *name, const void *v,
    size_t len)
{
	size_t need = pct_encode(v, len, NULL, 0);
	char *enc = xmalloc(need + 1);

	pct_encode(v, len, enc, need + 1);
	/* libcurl drops "name:" without a value; "name;" sends it empty. */
	if (need == 0)
		list = add_header(list, "%s;", name);
	else
		list = add_header(list, "%s: %s", name, enc);
	free(enc);
	return list;
}

static struct curl_slist *build_headers(const struct conf_sub *cs, const struct webhook_msg *m)
{
	struct curl_slist *h = NULL;
	const char *ctype = "application/octet-stream";
	char ctype_buf[256];
	int64_t now_s = wall_ms() / 1000;

	for (size_t i = 0; i < m->nhdrs; i++) {
		if (strcasecmp(m->hdrs[i].name, "content-type") == 0 && m->hdrs[i].value &&
		    m->hdrs[i].value_len > 0 && m->hdrs[i].value_len < sizeof(ctype_buf) &&
		    !memchr(m->hdrs[i].value, '\n', m->hdrs[i].value_len) &&
		    !memchr(m->hdrs[i].value, '\r', m->hdrs[i].value_len)) {
			snprintf(ctype_buf, sizeof(ctype_buf), "%.*s", (int)m->hdrs[i].value_len,
			    (const char *)m->hdrs[i].value);
			ctype = ctype_buf;
		}
	}
	h = add_header(h, "Content-Type: %s", ctype);
	h = add_header(h, "webhook-id: %s", m->id);
	h = add_header(h, "webhook-timestamp: %lld", (long long)now_s);
	if (cs->secrets.n > 0) {
		size_t cap = 96 * cs->secrets.n + 1;
		char *sig = xmalloc(cap);
		if (webhook_sign(&cs->secrets, m->id, now_s, m->value, m->value_len, sig, cap) > 0)
			h = add_header(h, "webhook-signature: %s", sig);
		free(sig);
	}
	h = add_header(h, "ackd-topic: %s", m->topic);
	h = add_header(h, "ackd-partition: %d", (int)m->partition);
	h = add_header(h, "ackd-offset: %lld", (long long)m->offset);
	if (m->key)
		h = pct_header(h, "ackd-key", m->key, m->key_len);
	h = add_header(h, "ackd-attempt: %d", m->attempt);
	if (m->timestamp_ms >= 0)
		h = add_header(h, "ackd-timestamp: %lld", (long long)m->timestamp_ms);
	for (size_t i = 0; i < m->nhdrs; i++) {
		char name[300];
		if (!is_token(m->hdrs[i].name) || strlen(m->hdrs[i].name) > 256) {
			log_debug("webhook %s: kafka header %s is not an http field name; not sent",
			    cs->name, m->hdrs[i].name);
			continue;
		}
		snprintf(name, sizeof(name), "ackd-header-%s", m->hdrs[i].name);
		h = pct_header(h, name, m->hdrs[i].value ? m->hdrs[i].value : "",
		    m->hdrs[i].value ? m->hdrs[i].value_len : 0);
	}
	h = add_header(h, "User-Agent: ackd/%s", PACKAGE_VERSION);
	/* No "Expect: 100-continue" round trip for larger bodies. */
	h = add_header(h, "Expect:");
	return h;
}

int webhook_send(struct webhook *wh, const struct webhook_msg *m, void *tag)
{
	const struct conf_sub *cs = wh->cs;
	struct request *req = xcalloc(1, sizeof(*req));
	CURL *e = curl_easy_init();

	if (!e) {
		free(req);
		return -1;
	}
	req->easy = e;
	req->tag = tag;
	req->cs = cs;
	req->headers = build_headers(cs, m);
	curl_easy_setopt(e, CURLOPT_URL, cs->url[0] ? cs->url : "http://localhost/");
	if (cs->unix_socket[0])
		curl_easy_setopt(e, CURLOPT_UNIX_SOCKET_PATH, cs->unix_socket);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, m->value_len ? m->value : "");
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)m->value_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)cs->timeout_ms);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	if (curl_multi_add_handle(wh->multi, e) != CURLM_OK) {
		curl_slist_free_all(req->headers);
		curl_easy_cleanup(e);
		free(req);
		return -1;
	}
	req->next = wh->requests;
	if (wh->requests)
		wh->requests->prev = req;
	wh->requests = req;
	wh->in_flight++;
	return 0;
}

void webhook_poll(struct webhook *wh, int extra_fd, int timeout_ms)
{
	struct curl_waitfd wake = { .fd = extra_fd, .events = CURL_WAIT_POLLIN };
	int running;

	curl_multi_poll(wh->multi, &wake, extra_fd >= 0 ? 1 : 0, timeout_ms, NULL);
	curl_multi_perform(wh->multi, &running);
}

size_t webhook_collect(struct webhook *wh, webhook_done_fn *done, void *arg)
{
	size_t n = 0;
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(wh->multi, &left))) {
		struct webhook_answer a = { .status = 0, .retry_after_ms = -1, .error = NULL };
		struct request *req;
		CURL *e = msg->easy_handle;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&req);
		if (msg->data.result == CURLE_OK)
			curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &a.status);
		else
			a.error = req->error[0] ? req->error : curl_easy_strerror(msg->data.result);
		if (req->retry_after[0] &&
		    retry_after_parse(req->retry_after, wall_ms(), req->cs->retry.max_retry_after_ms,
		        &a.retry_after_ms) < 0)
			a.retry_after_ms = -1;
		done(arg, req->tag, &a);
		request_free(wh, req);
		n++;
	}
	return n;
}

size_t webhook_in_flight(const struct webhook *wh) { return wh->in_flight; }
