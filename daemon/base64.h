/*
 * base64: standard base64 (RFC 4648 section 4). Pure functions.
 */
#ifndef ACKD_BASE64_H
#define ACKD_BASE64_H

#include <stddef.h>

enum base64_mode {
	BASE64_LENIENT, /* "=" padding may be left out (webhook secrets) */
	BASE64_STRICT,  /* padded, unused bits zero: one spelling per byte string */
};

/*
 * Encode with padding. Returns the length of the text without the NUL;
 * writes it, NUL-terminated, only when that fits in outlen (so out = NULL,
 * outlen = 0 asks for the size).
 */
size_t base64_encode(const void *in, size_t len, char *out, size_t outlen);

/*
 * Decode len characters into out (room for outcap bytes; out = NULL only
 * checks and measures). 0 and *outlen, or -1 when malformed for mode or
 * when the bytes do not fit.
 */
int base64_decode(const char *in, size_t len, enum base64_mode mode, unsigned char *out,
    size_t outcap, size_t *outlen);

#endif
