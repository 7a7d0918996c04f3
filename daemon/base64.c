/*
 * base64: one encoder and one decoder for the whole daemon; the decoder's
 * mode says how forgiving it is. Pure, any thread.
 */
#include "config.h"

#include <stdint.h>

#include "base64.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t base64_encode(const void *in, size_t len, char *out, size_t outlen)
{
	const unsigned char *p = in;
	size_t need = (len + 2) / 3 * 4, o = 0;

	if (out == NULL || need >= outlen)
		return need;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		out[o++] = alphabet[v >> 18];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < len ? alphabet[v & 63] : '=';
	}
	out[o] = '\0';
	return need;
}

/* The 6-bit value of a character, -1 outside the standard alphabet. */
static int value_of(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *in, size_t len, enum base64_mode mode, unsigned char *out,
    size_t outcap, size_t *outlen)
{
	size_t pad = 0, n = 0;
	uint32_t acc = 0;
	int bits = 0;

	if (mode == BASE64_STRICT && len % 4 != 0)
		return -1;
	while (len > 0 && in[len - 1] == '=' && pad < 2) {
		len--;
		pad++;
	}
	/* A lone character in the last group carries no whole byte. */
	if (len % 4 == 1 || (pad > 0 && (len + pad) % 4 != 0))
		return -1;
	if (out && len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0) > outcap)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = value_of((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6 | (uint32_t)v) & 0xffffff;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (out)
				out[n] = (unsigned char)(acc >> bits);
			n++;
		}
	}
	/* The bits left over past the last byte must be zero to be canonical. */
	if (mode == BASE64_STRICT && (acc & ((1u << bits) - 1)) != 0)
		return -1;
	*outlen = n;
	return 0;
}
