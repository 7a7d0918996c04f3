/*
 * webhook_sign: Standard Webhooks signatures, webhook ids and header
 * encoding, pure functions without I/O.
 *
 * SHA-256 follows FIPS 180-4 and HMAC follows RFC 2104; both live here so
 * ackd needs no crypto library for the one hash it uses. The hash runs
 * incrementally (a context fed in pieces), which lets the signature cover
 * "{id}.{timestamp}.{body}" and the webhook-id cover the message coordinates
 * without copying them into one buffer.
 *
 * Base64 decoding accepts exactly what conf.c's secret check accepts
 * (padding optional), so every secret that passes conf_load() signs.
 *
 * Threads: any; no shared state.
 */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base64.h"
#include "webhook_sign.h"

/* --- URLs for the log ------------------------------------------------------ */

void webhook_url_redact(const char *url, char *out, size_t outlen)
{
	const char *scheme_end = strstr(url, "://");
	const char *auth, *auth_end, *at, *end;

	if (outlen == 0)
		return;
	if (!scheme_end || scheme_end == url) {
		/* Without an authority nothing says where credentials end. */
		snprintf(out, outlen, "%s", strpbrk(url, "@?#") ? "(not a URL)" : url);
		return;
	}
	auth = scheme_end + 3;
	auth_end = auth + strcspn(auth, "/?#");
	/* The last '@' of the authority ends the userinfo (a password may hold '@'). */
	at = NULL;
	for (const char *p = auth; p < auth_end; p++)
		if (*p == '@')
			at = p;
	if (at)
		auth = at + 1;
	end = auth_end + strcspn(auth_end, "?#");
	snprintf(out, outlen, "%.*s://%.*s%.*s%s", (int)(scheme_end - url), url,
	    (int)(auth_end - auth), auth, (int)(end - auth_end), auth_end,
	    *end == '?' ? "?(query hidden)" : "");
}

/* --- SHA-256 ---------------------------------------------------------------- */

#define SHA256_BLOCK 64


static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5,
	0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
	0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
	0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3,
	0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5,
	0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, unsigned n) { return x >> n | x << (32 - n); }

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void put_be32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (24 - 8 * i));
}

/* One 64-byte block into the state (FIPS 180-4 section 6.2.2). */
static void sha256_block(uint32_t h[8], const unsigned char *p)
{
	uint32_t w[64], a, b, c, d, e, f, g, hh;

	for (int t = 0; t < 16; t++)
		w[t] = get_be32(p + 4 * t);
	for (int t = 16; t < 64; t++) {
		uint32_t s0 = ror(w[t - 15], 7) ^ ror(w[t - 15], 18) ^ (w[t - 15] >> 3);
		uint32_t s1 = ror(w[t - 2], 17) ^ ror(w[t - 2], 19) ^ (w[t - 2] >> 10);
		w[t] = w[t - 16] + s0 + w[t - 7] + s1;
	}

	a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
	for (int t = 0; t < 64; t++) {
		uint32_t S1 = ror(e, 6) ^ ror(e, 11) ^ ror(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = hh + S1 + ch + K[t] + w[t];
		uint32_t S0 = ror(a, 2) ^ ror(a, 13) ^ ror(a, 22);
		uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
		uint32_t t2 = S0 + maj;

		hh = g, g = f, f = e, e = d + t1;
		d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d;
	h[4] += e, h[5] += f, h[6] += g, h[7] += hh;
}

void sha256_init(struct sha256_ctx *c)
{
	static const uint32_t iv[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};

	memcpy(c->h, iv, sizeof(iv));
	c->total = 0;
	c->buflen = 0;
}

void sha256_update(struct sha256_ctx *c, const void *data, size_t len)
{
	const unsigned char *p = data;

	c->total += len;
	if (c->buflen > 0) {
		size_t n = SHA256_BLOCK - c->buflen;

		if (n > len)
			n = len;
		memcpy(c->buf + c->buflen, p, n);
		c->buflen += n;
		p += n;
		len -= n;
		if (c->buflen < SHA256_BLOCK)
			return;
		sha256_block(c->h, c->buf);
		c->buflen = 0;
	}
	for (; len >= SHA256_BLOCK; p += SHA256_BLOCK, len -= SHA256_BLOCK)
		sha256_block(c->h, p);
	memcpy(c->buf, p, len);
	c->buflen = len;
}

/* Padding: 0x80, zeros, then the message length in bits, big-endian. */
void sha256_final(struct sha256_ctx *c, unsigned char out[SHA256_LEN])
{
	uint64_t bits = c->total * 8;

	c->buf[c->buflen++] = 0x80;
	if (c->buflen > SHA256_BLOCK - 8) {
		memset(c->buf + c->buflen, 0, SHA256_BLOCK - c->buflen);
		sha256_block(c->h, c->buf);
		c->buflen = 0;
	}
	memset(c->buf + c->buflen, 0, SHA256_BLOCK - 8 - c->buflen);
	put_be32(c->buf + 56, (uint32_t)(bits >> 32));
	put_be32(c->buf + 60, (uint32_t)bits);
	sha256_block(c->h, c->buf);
	for (int i = 0; i < 8; i++)
		put_be32(out + 4 * i, c->h[i]);
}

void sha256(const void *data, size_t len, unsigned char out[SHA256_LEN])
{
	struct sha256_ctx c;

	sha256_init(&c);
	sha256_update(&c, data, len);
	sha256_final(&c, out);
}

/* --- HMAC-SHA256 -------------------------------------------------------------- */

void hmac_sha256(const void *key, size_t keylen, const void *const parts[], const size_t lens[],
    size_t nparts, unsigned char out[SHA256_LEN])
{
	unsigned char k[SHA256_BLOCK] = { 0 }, pad[SHA256_BLOCK], inner[SHA256_LEN];
	struct sha256_ctx c;

	/* A key longer than a block is replaced by its hash; shorter ones are zero-filled. */
	if (keylen > SHA256_BLOCK)
		sha256(key, keylen, k);
	else if (keylen > 0)
		memcpy(k, key, keylen);

	for (int i = 0; i < SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x36;
	sha256_init(&c);
	sha256_update(&c, pad, sizeof(pad));
	for (size_t i = 0; i < nparts; i++)
		sha256_update(&c, parts[i], lens[i]);
	sha256_final(&c, inner);

	for (int i = 0; i < SHA256_BLOCK; i++)
		pad[i] = k[i] ^ 0x5c;
	sha256_init(&c);
	sha256_update(&c, pad, sizeof(pad));
	sha256_update(&c, inner, sizeof(inner));
	sha256_final(&c, out);
}

/* --- signatures ----------------------------------------------------------------- */

#define SECRET_PREFIX "whsec_"

int webhook_secret_decode(const char *secret, unsigned char *key, size_t *keylen)
{
	size_t plen = strlen(SECRET_PREFIX);

	if (strncmp(secret, SECRET_PREFIX, plen) != 0)
		return -1;
	if (base64_decode(secret + plen, strlen(secret + plen), BASE64_LENIENT, key,
	        WEBHOOK_KEY_MAX, keylen) < 0)
		return -1;
	return *keylen > 0 ? 0 : -1;
}

size_t webhook_sign(const struct conf_strlist *secrets, const char *id, int64_t timestamp,
    const void *body, size_t body_len, char *out, size_t outlen)
{
	char ts[24];
	const void *parts[5];
	size_t lens[5], o = 0;

	if (secrets == NULL || secrets->n == 0)
		return 0;
	snprintf(ts, sizeof(ts), "%" PRId64, timestamp);
	parts[0] = id, lens[0] = strlen(id);
	parts[1] = ".", lens[1] = 1;
	parts[2] = ts, lens[2] = strlen(ts);
	parts[3] = ".", lens[3] = 1;
	parts[4] = body, lens[4] = body_len;

	for (size_t i = 0; i < secrets->n; i++) {
		unsigned char key[WEBHOOK_KEY_MAX], mac[SHA256_LEN];
		size_t keylen;
		const char *lead = i == 0 ? "v1," : " v1,";
		size_t leadlen = strlen(lead);

		if (webhook_secret_decode(secrets->v[i], key, &keylen) < 0)
			return 0;
		hmac_sha256(key, keylen, parts, lens, 5, mac);
		if (o + leadlen >= outlen)
			return 0;
		memcpy(out + o, lead, leadlen);
		o += leadlen;
		if (base64_encode(mac, sizeof(mac), out + o, outlen - o) >= outlen - o)
			return 0;
		o += strlen(out + o);
	}
	return o;
}

/* --- webhook-id and header values ------------------------------------------------ */

static const char hex_digits[] = "0123456789abcdef";

void webhook_id_from_coords(const char *topic, int32_t partition, int64_t offset,
    char out[WEBHOOK_ID_MAX])
{
	unsigned char digest[SHA256_LEN];
	char coords[48];
	struct sha256_ctx c;
	size_t o;

	snprintf(coords, sizeof(coords), "/%" PRId32 "/%" PRId64, partition, offset);
	sha256_init(&c);
	sha256_update(&c, topic, strlen(topic));
	sha256_update(&c, coords, strlen(coords));
	sha256_final(&c, digest);

	memcpy(out, "msg_", 4);
	o = 4;
	for (int i = 0; i < 16; i++) {
		out[o++] = hex_digits[digest[i] >> 4];
		out[o++] = hex_digits[digest[i] & 15];
	}
	out[o] = '\0';
}

static int unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	    c == '-' || c == '.' || c == '_' || c == '~';
}

size_t pct_encode(const void *in, size_t len, char *out, size_t outlen)
{
	static const char upper_hex[] = "0123456789ABCDEF";
	const unsigned char *p = in;
	size_t need = 0, o = 0;

	for (size_t i = 0; i < len; i++)
		need += unreserved(p[i]) ? 1 : 3;
	if (out == NULL || need >= outlen)
		return need;
	for (size_t i = 0; i < len; i++) {
		if (unreserved(p[i])) {
			out[o++] = (char)p[i];
		} else {
			out[o++] = '%';
			out[o++] = upper_hex[p[i] >> 4];
			out[o++] = upper_hex[p[i] & 15];
		}
	}
	out[o] = '\0';
	return need;
}
