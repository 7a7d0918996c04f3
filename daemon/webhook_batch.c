/*
 * webhook_batch: the JSON body and the webhook-id of a batch request.
 *
 * Design. The body is written by hand into one growable buffer, reused
 * from request to request by the caller: no JSON library, no tree, one
 * pass over each key and value (a UTF-8 check, then either JSON string
 * escaping or base64). Each message is
 *
 *   {"id":"…","topic":"…","partition":0,"offset":41,"timestamp":1733240000000,
 *    "key":"k1","value":"text","headers":{"content-type":"text/plain"}}
 *
 * with "key_b64" / "value_b64" in place of "key" / "value" when the bytes
 * are not valid UTF-8, "key":null without a key, "timestamp":null when
 * Kafka has none. Headers go in "headers" when their value is UTF-8 (null
 * for a header without a value) and in "headers_b64" otherwise; a name that
 * repeats keeps its first value, and a name that is not UTF-8 is left out.
 *
 * Threads: any; no shared state.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "util.h"
#include "webhook_batch.h"

static char *reserve(struct wbuf *b, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (b->len + n > cap)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	return b->p + b->len;
}

static void put(struct wbuf *b, const void *s, size_t n)
{
	if (n == 0)
		return;
	memcpy(reserve(b, n), s, n);
	b->len += n;
}

#define PUT_LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_int(struct wbuf *b, int64_t v)
{
	char tmp[INT64_DEC_MAX];

	put(b, tmp, (size_t)(put_int64(tmp, v) - tmp));
}

bool utf8_valid(const void *s, size_t n)
{
	const unsigned char *p = s, *end = p + n;

	while (p < end) {
		unsigned char c = *p;
		size_t len;
		uint32_t cp, min;

		if (c < 0x80) {
			p++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
			min = 0x80;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
			min = 0x800;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
			min = 0x10000;
		} else {
			return false;
		}
		if ((size_t)(end - p) < len)
			return false;
		for (size_t i = 1; i < len; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (p[i] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		p += len;
	}
	return true;
}

/* A JSON string of n bytes of valid UTF-8, quotes included. */
static void put_json_str(struct wbuf *b, const void *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = s;
	size_t run = 0; /* bytes before i that need no escape, not yet written */

	PUT_LIT(b, "\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = p[i];
		char esc[6];
		size_t elen = 2;

		if (c >= 0x20 && c != '"' && c != '\\') {
			run++;
			continue;
		}
		put(b, p + i - run, run);
		run = 0;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		default:
			memcpy(esc + 1, "u00", 3);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			elen = 6;
		}
		put(b, esc, elen);
	}
	put(b, p + n - run, run);
	PUT_LIT(b, "\"");
}

static void put_b64(struct wbuf *b, const void *s, size_t n)
{
	size_t need = base64_encode(s, n, NULL, 0);

	PUT_LIT(b, "\"");
	b->len += base64_encode(s, n, reserve(b, need + 1), need + 1);
	PUT_LIT(b, "\"");
}

/* ,"name":"text" or ,"name_b64":"base64"; null when s is NULL. */
static void put_bytes_field(struct wbuf *b, const char *name, const void *s, size_t n)
{
	bool text = s == NULL || utf8_valid(s, n);

	PUT_LIT(b, ",\"");
	put(b, name, strlen(name));
	if (!text)
		PUT_LIT(b, "_b64");
	PUT_LIT(b, "\":");
	if (!s)
		PUT_LIT(b, "null");
	else if (text)
		put_json_str(b, s, n);
	else
		put_b64(b, s, n);
}

/* Whether header i's name came earlier in the list (then it is left out). */
static bool repeated(const struct webhook_msg *m, size_t i)
{
	for (size_t j = 0; j < i; j++)
		if (strcmp(m->hdrs[j].name, m->hdrs[i].name) == 0)
			return true;
	return false;
}

/* The headers whose values are text (b64 false) or not (b64 true), as an object. */
static void put_headers(struct wbuf *b, const struct webhook_msg *m, bool b64)
{
	bool first = true;

	PUT_LIT(b, "{");
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct webhook_hdr *h = &m->hdrs[i];
		bool text = !h->value || utf8_valid(h->value, h->value_len);

		if (text == b64 || !utf8_valid(h->name, strlen(h->name)) || repeated(m, i))
			continue;
		if (!first)
			PUT_LIT(b, ",");
		first = false;
		put_json_str(b, h->name, strlen(h->name));
		PUT_LIT(b, ":");
		if (!h->value)
			PUT_LIT(b, "null");
		else if (text)
			put_json_str(b, h->value, h->value_len);
		else
			put_b64(b, h->value, h->value_len);
	}
	PUT_LIT(b, "}");
}

static bool any_b64_header(const struct webhook_msg *m)
{
	for (size_t i = 0; i < m->nhdrs; i++) {
		const struct webhook_hdr *h = &m->hdrs[i];
		if (h->value && !utf8_valid(h->value, h->value_len) &&
		    utf8_valid(h->name, strlen(h->name)) && !repeated(m, i))
			return true;
	}
	return false;
}

void webhook_batch_body(struct wbuf *b, const struct webhook_msg *ms, size_t n)
{
	b->len = 0;
	PUT_LIT(b, "{\"messages\":[");
	for (size_t i = 0; i < n; i++) {
		const struct webhook_msg *m = &ms[i];

		if (i > 0)
			PUT_LIT(b, ",");
		PUT_LIT(b, "{\"id\":");
		put_json_str(b, m->id, strlen(m->id));
		PUT_LIT(b, ",\"topic\":");
		put_json_str(b, m->topic, strlen(m->topic));
		PUT_LIT(b, ",\"partition\":");
		put_int(b, m->partition);
		PUT_LIT(b, ",\"offset\":");
		put_int(b, m->offset);
		PUT_LIT(b, ",\"timestamp\":");
		if (m->timestamp_ms >= 0)
			put_int(b, m->timestamp_ms);
		else
			PUT_LIT(b, "null");
		put_bytes_field(b, "key", m->key, m->key_len);
		/* An empty value may come as NULL: it is an empty string, not null. */
		put_bytes_field(b, "value", m->value_len ? m->value : "", m->value_len);
		PUT_LIT(b, ",\"headers\":");
		put_headers(b, m, false);
		if (any_b64_header(m)) {
			PUT_LIT(b, ",\"headers_b64\":");
			put_headers(b, m, true);
		}
		PUT_LIT(b, "}");
	}
	PUT_LIT(b, "]}");
}

void webhook_batch_id(const struct webhook_msg *ms, size_t n, char out[WEBHOOK_ID_MAX])
{
	static const char hex[] = "0123456789abcdef";
	struct wbuf list = { NULL, 0, 0 };
	unsigned char digest[SHA256_LEN];
	char line[64];

	for (size_t i = 0; i < n; i++) {
		int len = snprintf(line, sizeof(line), "/%d/%lld\n", (int)ms[i].partition,
		    (long long)ms[i].offset);
		put(&list, ms[i].topic, strlen(ms[i].topic));
		put(&list, line, (size_t)len);
	}
	sha256(list.p ? list.p : "", list.len, digest);
	free(list.p);
	memcpy(out, "batch_", 6);
	for (size_t i = 0; i < 16; i++) {
		out[6 + 2 * i] = hex[digest[i] >> 4];
		out[6 + 2 * i + 1] = hex[digest[i] & 15];
	}
	out[38] = '\0';
}
