/*
 * webhook_sign: what a webhook request carries that is pure computation:
 * Standard Webhooks signatures (HMAC-SHA256), the webhook-id of a message,
 * percent-encoding of header values. No I/O.
 */
#ifndef ACKD_WEBHOOK_SIGN_H
#define ACKD_WEBHOOK_SIGN_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#define SHA256_LEN 32
#define WEBHOOK_ID_MAX 64  /* "msg_" + 32 hex digits, or an ackd-id */
#define WEBHOOK_KEY_MAX 64 /* longest decoded secret, as conf.c allows */

/* SHA-256 (FIPS 180-4) of len bytes. */
void sha256(const void *data, size_t len, unsigned char out[SHA256_LEN]);

/* The same, fed in pieces: init, update for each piece, final. */
struct sha256_ctx {
	uint32_t h[8];
	uint64_t total; /* bytes hashed so far */
	unsigned char buf[64];
	size_t buflen;
};
void sha256_init(struct sha256_ctx *c);
void sha256_update(struct sha256_ctx *c, const void *data, size_t len);
void sha256_final(struct sha256_ctx *c, unsigned char out[SHA256_LEN]);

/*
 * HMAC-SHA256 (RFC 2104) of the concatenation of nparts byte strings
 * parts[i] of lens[i] bytes, so callers need not copy them together.
 */
void hmac_sha256(const void *key, size_t keylen, const void *const parts[], const size_t lens[],
    size_t nparts, unsigned char out[SHA256_LEN]);

/*
 * "whsec_" + base64 into key (room for WEBHOOK_KEY_MAX bytes) and *keylen.
 * 0, or -1 when malformed, empty or longer than WEBHOOK_KEY_MAX bytes.
 */
int webhook_secret_decode(const char *secret, unsigned char *key, size_t *keylen);

/*
 * The webhook-signature header value: "v1,<base64>" for each secret,
 * space-separated, signing "{id}.{timestamp}.{body}". Returns the length
 * written (NUL-terminated), or 0 when there is no secret, a secret is
 * malformed (conf_load() rejects those) or out is too small (90 bytes per
 * secret suffice).
 */
size_t webhook_sign(const struct conf_strlist *secrets, const char *id, int64_t timestamp,
    const void *body, size_t body_len, char *out, size_t outlen);

/* "msg_" + the first 32 hex digits of SHA-256 of "{topic}/{partition}/{offset}". */
void webhook_id_from_coords(const char *topic, int32_t partition, int64_t offset,
    char out[WEBHOOK_ID_MAX]);

/*
 * Percent-encode bytes for a header value: unreserved characters
 * (A-Z a-z 0-9 - . _ ~) stay, everything else becomes %XX (upper-case hex).
 * Returns the length needed without the NUL; writes, NUL-terminated, only
 * when that fits in outlen (so out = NULL, outlen = 0 asks for the size).
 */
size_t pct_encode(const void *in, size_t len, char *out, size_t outlen);

/*
 * url as it may be logged: scheme, host, port and path, without userinfo
 * ("user:password@"), query and fragment, which may hold credentials. The
 * one form in which any URL reaches a log. NUL-terminated, cut to outlen;
 * a string that is not scheme://... stays as it is unless it holds '@', '?'
 * or '#' (then "(not a URL)").
 */
void webhook_url_redact(const char *url, char *out, size_t outlen);

#endif
