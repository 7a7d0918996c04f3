/*
 * oauth2: the client-credentials grant for a subscription's webhook.
 *
 * Design. The token is fetched on demand from webhook_send(), by a blocking
 * libcurl easy request bounded by the subscription's timeout_ms: a fetch is
 * rare (once per token lifetime, or after a 401), and delivery cannot go on
 * without a token anyway. The client authenticates with HTTP Basic, its id
 * and secret form-urlencoded first (RFC 6749 section 2.3.1); the body is
 * grant_type=client_credentials and the scope when one is set. The token is
 * kept until a tenth of its lifetime before it expires (5 to 60 s early), or
 * until a request sent with it is answered 401. Each token gets a generation
 * number, so that a 401 to a request sent with an older token does not throw
 * away a newer one. After a failed fetch the next waits a second, so that a
 * token endpoint that is down does not get one request per message.
 *
 * tls.ca_file is trusted for the token endpoint as for the webhook. Neither
 * the secret nor a token is ever put in an error message; conf.c registers
 * the secret with log_hide() as well.
 *
 * Threads: the subscription's thread; oauth2_parse() and oauth2_refresh_at()
 * are pure.
 */
#include "config.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "oauth2.h"
#include "util.h"

#define RETRY_FAILED_MS 1000
#define MAX_ANSWER_BYTES 65536

struct oauth2 {
	const struct conf_sub *cs;
	char *token;        /* NULL: none yet, or rejected */
	uint64_t gen;       /* of token */
	int64_t refresh_at; /* now_ms() when token is to be replaced */
	int64_t retry_at;   /* no fetch before this after a failure */
	uint64_t fetches;
};

struct answer {
	char *buf;
	size_t len;
	bool too_big;
};

struct oauth2 *oauth2_new(const struct conf_sub *cs)
{
	struct oauth2 *o = calloc(1, sizeof(*o));

	if (o)
		o->cs = cs;
	return o;
}

void oauth2_free(struct oauth2 *o)
{
	if (!o)
		return;
	free(o->token);
	free(o);
}

uint64_t oauth2_fetches(const struct oauth2 *o) { return o->fetches; }

int64_t oauth2_refresh_at(int64_t now_ms, int64_t expires_in)
{
	int64_t early;

	if (expires_in < 0)
		return INT64_MAX;
	if (expires_in > INT64_MAX / 1000 - now_ms / 1000 - 1)
		return INT64_MAX;
	early = expires_in * 100; /* a tenth, in ms */
	if (early < 5000)
		early = 5000;
	if (early > 60000)
		early = 60000;
	return now_ms + expires_in * 1000 - early;
}

int oauth2_parse(const char *body, size_t len, char **token, int64_t *expires_in, char *err,
    size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *tok, *exp, *type;

	*token = NULL;
	*expires_in = -1;
	if (!root || !json_is_object(root)) {
		snprintf(err, errlen, "the token endpoint's answer is not a JSON object");
		goto fail;
	}
	tok = json_object_get(root, "access_token");
	if (!json_is_string(tok) || json_string_length(tok) == 0) {
		snprintf(err, errlen, "the token endpoint's answer has no access_token");
		goto fail;
	}
	/* RFC 6750: a bearer token is b64token; anything else cannot go in a header. */
	for (const char *p = json_string_value(tok); *p; p++) {
		if (*p <= ' ' || *p >= 0x7f) {
			snprintf(err, errlen, "the access_token holds a character a header cannot");
			goto fail;
		}
	}
	type = json_object_get(root, "token_type");
	if (type && (!json_is_string(type) || strcasecmp(json_string_value(type), "bearer") != 0)) {
		snprintf(err, errlen, "the token_type is not Bearer");
		goto fail;
	}
	exp = json_object_get(root, "expires_in");
	if (json_is_integer(exp) && json_integer_value(exp) >= 0)
		*expires_in = json_integer_value(exp);
	else if (json_is_real(exp) && json_real_value(exp) >= 0 && json_real_value(exp) < 1e12)
		*expires_in = (int64_t)json_real_value(exp);
	else if (exp && !json_is_null(exp)) {
		snprintf(err, errlen, "the expires_in is not a number of seconds");
		goto fail;
	}
	*token = xstrdup(json_string_value(tok));
	json_decref(root);
	return 0;
fail:
	json_decref(root);
	return -1;
}

static size_t keep_answer(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct answer *a = userdata;
	size_t n = size * nmemb;

	if (a->len + n > MAX_ANSWER_BYTES) {
		a->too_big = true;
		return 0; /* libcurl stops with CURLE_WRITE_ERROR */
	}
	a->buf = xrealloc(a->buf, a->len + n + 1);
	memcpy(a->buf + a->len, ptr, n);
	a->len += n;
	a->buf[a->len] = '\0';
	return n;
}

/* POST the grant; on 0 o->token is the new token. */
static int fetch(struct oauth2 *o, int64_t now, char *err, size_t errlen)
{
	const struct conf_oauth2 *c = &o->cs->oauth2;
	struct answer a = { NULL, 0, false };
	CURL *e = curl_easy_init();
	char *id = NULL, *secret = NULL, *scope = NULL, *userpwd = NULL, *body = NULL;
	struct curl_slist *hdrs = NULL;
	char cerr[CURL_ERROR_SIZE] = "";
	CURLcode rc;
	long status = 0;
	char *token;
	int64_t expires_in;

	o->fetches++;
	if (!e) {
		snprintf(err, errlen, "cannot create a libcurl handle");
		goto fail;
	}
	id = curl_easy_escape(e, c->client_id, 0);
	secret = curl_easy_escape(e, c->client_secret, 0);
	scope = curl_easy_escape(e, c->scope, 0);
	if (!id || !secret || !scope) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	/* Both pointers are undefined after a failed asprintf(). */
	if (asprintf(&userpwd, "%s:%s", id, secret) < 0)
		userpwd = NULL;
	if (asprintf(&body, "grant_type=client_credentials%s%s", c->scope[0] ? "&scope=" : "",
	    c->scope[0] ? scope : "") < 0)
		body = NULL;
	if (!userpwd || !body) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(e, CURLOPT_URL, c->token_url);
	curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
	curl_easy_setopt(e, CURLOPT_USERPWD, userpwd);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->cs->timeout_ms);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "ackd/" PACKAGE_VERSION);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, keep_answer);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &a);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
	if (o->cs->tls.ca_file[0])
		curl_easy_setopt(e, CURLOPT_CAINFO, o->cs->tls.ca_file);
	rc = curl_easy_perform(e);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "token request failed: %s",
		    a.too_big ? "answer too large" : cerr[0] ? cerr : curl_easy_strerror(rc));
		goto fail;
	}
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	if (status != 200) {
		snprintf(err, errlen, "token endpoint answered %ld", status);
		goto fail;
	}
	if (oauth2_parse(a.buf ? a.buf : "", a.len, &token, &expires_in, err, errlen) < 0)
		goto fail;
	free(o->token);
	o->token = token;
	o->gen++;
	o->refresh_at = oauth2_refresh_at(now, expires_in);
	o->retry_at = 0;
	curl_slist_free_all(hdrs);
	free(body);
	free(userpwd);
	curl_free(id);
	curl_free(secret);
	curl_free(scope);
	free(a.buf);
	curl_easy_cleanup(e);
	return 0;
fail:
	o->retry_at = now + RETRY_FAILED_MS;
	curl_slist_free_all(hdrs);
	free(body);
	free(userpwd);
	curl_free(id);
	curl_free(secret);
	curl_free(scope);
	free(a.buf);
	curl_easy_cleanup(e);
	return -1;
}

int oauth2_token(struct oauth2 *o, int64_t now, const char **token, uint64_t *gen, char *err,
    size_t errlen)
{
	if (!o->token || now >= o->refresh_at) {
		if (now < o->retry_at) {
			snprintf(err, errlen, "no oauth2 token: the last token request failed");
			return -1;
		}
		if (fetch(o, now, err, errlen) < 0)
			return -1;
	}
	*token = o->token;
	*gen = o->gen;
	return 0;
}

void oauth2_reject(struct oauth2 *o, uint64_t gen)
{
	if (gen != o->gen || !o->token)
		return;
	free(o->token);
	o->token = NULL;
	o->retry_at = 0;
}
