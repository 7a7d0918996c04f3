/*
 * test_webhook_sign: SHA-256, HMAC-SHA256, base64, Standard Webhooks
 * signatures, webhook ids and percent-encoding, against published vectors.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base64.h"
#include "log.h"
#include "webhook_sign.h"

static void hex(const unsigned char *d, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void assert_sha256(const void *data, size_t len, const char *want)
{
	unsigned char d[SHA256_LEN];
	char got[2 * SHA256_LEN + 1];

	sha256(data, len, d);
	hex(d, sizeof(d), got);
	assert_string_equal(got, want);
}

static void assert_hmac(const void *key, size_t keylen, const char *msg, const char *want)
{
	unsigned char d[SHA256_LEN];
	char got[2 * SHA256_LEN + 1];
	size_t len = strlen(msg);

	/* Every split of the message into two parts gives the same MAC. */
	for (size_t split = 0; split <= len; split++) {
		const void *parts[2] = { msg, msg + split };
		const size_t lens[2] = { split, len - split };

		hmac_sha256(key, keylen, parts, lens, 2, d);
		hex(d, sizeof(d), got);
		assert_string_equal(got, want);
	}
}

/* FIPS 180-4 examples (NIST CSRC "SHA256.pdf" and the long-message vector). */
static void test_sha256_vectors(void **state)
{
	char *million = malloc(1000000);

	(void)state;
	assert_sha256("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	assert_sha256("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	assert_sha256("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	assert_non_null(million);
	memset(million, 'a', 1000000);
	assert_sha256(million, 1000000,
	    "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million);
}

/* Lengths around the padding boundary: the length field fits in the last block, or not. */
static void test_sha256_block_edges(void **state)
{
	static const struct {
		size_t len;
		const char *want;
	} v[] = {
		{ 55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318" },
		{ 56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a" },
		{ 57, "f13b2d724659eb3bf47f2dd6af1accc87b81f09f59f2b75e5c0bed6589dfe8c6" },
		{ 63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34" },
		{ 64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb" },
		{ 65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0" },
		{ 119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb" },
		{ 120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c" },
		{ 127, "c57e9278af78fa3cab38667bef4ce29d783787a2f731d4e12200270f0c32320a" },
		{ 128, "6836cf13bac400e9105071cd6af47084dfacad4e5e302c94bfed24e013afb73e" },
	};
	char a[128];

	(void)state;
	memset(a, 'a', sizeof(a));
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		assert_sha256(a, v[i].len, v[i].want);
}

/* RFC 4231 test cases 1, 2 and 6 (a key longer than the block is hashed first). */
static void test_hmac_rfc4231(void **state)
{
	unsigned char k1[20], k6[131];

	(void)state;
	memset(k1, 0x0b, sizeof(k1));
	assert_hmac(k1, sizeof(k1), "Hi There",
	    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	assert_hmac("Jefe", 4, "what do ya want for nothing?",
	    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	memset(k6, 0xaa, sizeof(k6));
	assert_hmac(k6, sizeof(k6), "Test Using Larger Than Block-Size Key - Hash Key First",
	    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* RFC 4648 section 10, both ways, and what decoding refuses. */
static void test_base64(void **state)
{
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
		"Zm9vYmFy" };
	unsigned char bytes[16], all[256];
	char text[400];
	size_t n;

	(void)state;
	for (size_t i = 0; i < 7; i++) {
		size_t plen = strlen(plain[i]), clen = strlen(coded[i]);

		assert_int_equal(base64_encode(plain[i], plen, NULL, 0), clen);
		assert_int_equal(base64_encode(plain[i], plen, text, sizeof(text)), clen);
		assert_string_equal(text, coded[i]);
		assert_int_equal(base64_decode(coded[i], clen, BASE64_LENIENT, bytes, sizeof(bytes), &n), 0);
		assert_int_equal(n, strlen(plain[i]));
		assert_memory_equal(bytes, plain[i], n);
	}

	/* Every byte value round-trips; "+" and "/" appear. */
	for (int i = 0; i < 256; i++)
		all[i] = (unsigned char)i;
	assert_int_equal(base64_encode(all, sizeof(all), text, sizeof(text)), 344);
	assert_non_null(strchr(text, '+'));
	assert_non_null(strchr(text, '/'));
	{
		unsigned char back[256];

		assert_int_equal(base64_decode(text, 344, BASE64_LENIENT, back, sizeof(back), &n), 0);
		assert_int_equal(n, 256);
		assert_memory_equal(back, all, 256);
	}

	/* Exactly the room for the text and its NUL is enough; one less writes nothing. */
	memset(text, 'x', sizeof(text));
	assert_int_equal(base64_encode("foo", 3, text, 4), 4);
	assert_int_equal(text[0], 'x');
	assert_int_equal(base64_encode("foo", 3, text, 5), 4);
	assert_string_equal(text, "Zm9v");

	/* Padding may be left out, but when present it must be right. */
	assert_int_equal(base64_decode("Zg", 2, BASE64_LENIENT, bytes, sizeof(bytes), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(base64_decode("Zm8", 3, BASE64_LENIENT, bytes, sizeof(bytes), &n), 0);
	assert_int_equal(n, 2);
	assert_int_equal(base64_decode("Zg=", 3, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Zm8==", 5, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Z", 1, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Zm9vY", 5, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Zm9v\n", 5, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	/* URL alphabet */
	assert_int_equal(base64_decode("Zm-v", 4, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Z=9v", 4, BASE64_LENIENT, bytes, sizeof(bytes), &n), -1);
	/* Output room is checked before writing. */
	assert_int_equal(base64_decode("Zm9vYmFy", 8, BASE64_LENIENT, bytes, 5, &n), -1);
	assert_int_equal(base64_decode("Zm9vYmFy", 8, BASE64_LENIENT, bytes, 6, &n), 0);

	/* Strict: padded, unused bits zero, so each byte string has one spelling. */
	assert_int_equal(base64_decode("Zg==", 4, BASE64_STRICT, bytes, sizeof(bytes), &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(base64_decode("Zg", 2, BASE64_STRICT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Zh==", 4, BASE64_STRICT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("Zh==", 4, BASE64_LENIENT, bytes, sizeof(bytes), &n), 0);
	assert_int_equal(base64_decode("AAF=", 4, BASE64_STRICT, bytes, sizeof(bytes), &n), -1);
	assert_int_equal(base64_decode("AAE=", 4, BASE64_STRICT, bytes, sizeof(bytes), &n), 0);
	assert_int_equal(n, 2);
	/* No output buffer: check and measure only. */
	assert_int_equal(base64_decode("Zm9vYmFy", 8, BASE64_STRICT, NULL, 0, &n), 0);
	assert_int_equal(n, 6);
}

static const char vector_secret[] = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

static void test_secret_decode(void **state)
{
	unsigned char key[WEBHOOK_KEY_MAX];
	char long_secret[128];
	size_t n;

	(void)state;
	assert_int_equal(webhook_secret_decode(vector_secret, key, &n), 0);
	assert_int_equal(n, 24);
	assert_int_equal(key[0], 0x31);
	assert_int_equal(key[23], 0xb0);

	assert_int_equal(webhook_secret_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &n), -1);
	assert_int_equal(webhook_secret_decode("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, &n),
	    -1);
	assert_int_equal(webhook_secret_decode("whsec_", key, &n), -1);
	assert_int_equal(webhook_secret_decode("whsec_not base64!", key, &n), -1);

	/* 64 bytes fit (88 characters with padding); 66 bytes do not. */
	strcpy(long_secret, "whsec_");
	memset(long_secret + 6, 'A', 86);
	strcpy(long_secret + 92, "==");
	assert_int_equal(webhook_secret_decode(long_secret, key, &n), 0);
	assert_int_equal(n, 64);
	memset(long_secret + 6, 'A', 88);
	long_secret[94] = '\0';
	assert_int_equal(webhook_secret_decode(long_secret, key, &n), -1);
}

static const char vector_body[] = "{\"test\": 2432232314}";

/* The Standard Webhooks specification's example. */
static void test_sign_standard_vector(void **state)
{
	char *v[] = { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
	struct conf_strlist secrets = { v, 1 };
	const char *want = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
	char out[90];

	(void)state;
	assert_int_equal(webhook_sign(&secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
			     vector_body, strlen(vector_body), out, sizeof(out)),
	    strlen(want));
	assert_string_equal(out, want);

	/* Room for the text and its NUL, and one byte less. */
	assert_int_equal(webhook_sign(&secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
			     vector_body, strlen(vector_body), out, strlen(want) + 1),
	    strlen(want));
	assert_int_equal(webhook_sign(&secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
			     vector_body, strlen(vector_body), out, strlen(want)),
	    0);

	/* Another timestamp, id or body signs differently. */
	webhook_sign(&secrets, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, vector_body,
	    strlen(vector_body), out, sizeof(out));
	assert_string_not_equal(out, want);
}

/* Rotation: one entry per secret, space-separated, each verifiable on its own. */
static void test_sign_two_secrets(void **state)
{
	char *v[] = { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		"whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=" };
	struct conf_strlist two = { v, 2 }, none = { NULL, 0 };
	const char *id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
	size_t blen = strlen(vector_body), len;
	char out[180], *space;

	(void)state;
	len = webhook_sign(&two, id, 1614265330, vector_body, blen, out, sizeof(out));
	assert_int_equal(len, strlen(out));
	space = strchr(out, ' ');
	assert_non_null(space);
	assert_null(strchr(space + 1, ' '));
	*space = '\0';
	assert_string_equal(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");

	/* The second entry is the HMAC under the second key, as a verifier computes it. */
	{
		unsigned char key[WEBHOOK_KEY_MAX], mac[SHA256_LEN];
		char ts[] = "1614265330", want[64];
		const void *parts[] = { id, ".", ts, ".", vector_body };
		const size_t lens[] = { strlen(id), 1, strlen(ts), 1, strlen(vector_body) };
		size_t keylen;

		assert_int_equal(webhook_secret_decode(v[1], key, &keylen), 0);
		assert_int_equal(keylen, 32);
		hmac_sha256(key, keylen, parts, lens, 5, mac);
		strcpy(want, "v1,");
		base64_encode(mac, sizeof(mac), want + 3, sizeof(want) - 3);
		assert_string_equal(space + 1, want);
	}

	/* Two entries need 96 bytes with the NUL; 95 is too few. */
	assert_int_equal(webhook_sign(&two, id, 1614265330, vector_body, blen, out, 96), 95);
	assert_int_equal(webhook_sign(&two, id, 1614265330, vector_body, blen, out, 95), 0);

	/* No secrets: nothing to sign. A malformed secret signs nothing at all. */
	assert_int_equal(webhook_sign(&none, id, 1, "", 0, out, sizeof(out)), 0);
	v[1] = "whsec_***";
	assert_int_equal(webhook_sign(&two, id, 1, "", 0, out, sizeof(out)), 0);
}

static void test_id_from_coords(void **state)
{
	char id[WEBHOOK_ID_MAX], other[WEBHOOK_ID_MAX];

	(void)state;
	/* hex(SHA-256("orders/2/1041"))[:32] */
	webhook_id_from_coords("orders", 2, 1041, id);
	assert_string_equal(id, "msg_a6bf7b4a3b25cfc19380240040c214b7");
	assert_int_equal(strlen(id), 36);

	/* Stable, and different for each coordinate. */
	webhook_id_from_coords("orders", 2, 1041, other);
	assert_string_equal(id, other);
	webhook_id_from_coords("orders", 2, 1042, other);
	assert_string_not_equal(id, other);
	webhook_id_from_coords("orders", 3, 1041, other);
	assert_string_not_equal(id, other);
	webhook_id_from_coords("orderz", 2, 1041, other);
	assert_string_not_equal(id, other);
	webhook_id_from_coords("t", INT32_MAX, INT64_MAX, other);
	assert_int_equal(strlen(other), 36);
}

static void test_pct_encode(void **state)
{
	const unsigned char bytes[] = {
		0x00, 0xff, ' ', '%', 'a', 'Z', '9', '-', '.', '_', '~', '/',
	};
	const char *utf8 = "caf\xc3\xa9 \xe2\x82\xac";
	char out[64];

	(void)state;
	assert_int_equal(pct_encode(bytes, sizeof(bytes), out, sizeof(out)), 22);
	assert_string_equal(out, "%00%FF%20%25aZ9-._~%2F");
	assert_int_equal(pct_encode(utf8, strlen(utf8), out, sizeof(out)), 21);
	assert_string_equal(out, "caf%C3%A9%20%E2%82%AC");
	assert_int_equal(pct_encode("", 0, out, sizeof(out)), 0);
	assert_string_equal(out, "");

	/* Size query, then exactly enough room; one byte less writes nothing. */
	assert_int_equal(pct_encode(bytes, sizeof(bytes), NULL, 0), 22);
	memset(out, 'x', sizeof(out));
	assert_int_equal(pct_encode(bytes, sizeof(bytes), out, 22), 22);
	assert_int_equal(out[0], 'x');
	assert_int_equal(pct_encode(bytes, sizeof(bytes), out, 23), 22);
	assert_string_equal(out, "%00%FF%20%25aZ9-._~%2F");
}

/* Every URL in a log: no userinfo, no query, no fragment. */
static void test_url_redact(void **state)
{
	static const char *const cases[][2] = {
		{ "https://user:pw@example.com:8443/hook?token=abc#f",
		    "https://example.com:8443/hook?(query hidden)" },
		{ "http://u:p@ss@h/x", "http://h/x" },
		{ "http://h:80", "http://h:80" },
		{ "http://h/a/b", "http://h/a/b" },
		{ "http://h?t=1", "http://h?(query hidden)" },
		{ "http://h/#frag", "http://h/" },
		{ "http://user@h/", "http://h/" },
		{ "mailto:ops@example.com", "(not a URL)" },
		{ "h:1/x?t", "(not a URL)" },
		{ "localhost:9000/hook", "localhost:9000/hook" },
		{ "", "" },
	};
	char out[128], small[12];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		webhook_url_redact(cases[i][0], out, sizeof(out));
		assert_string_equal(out, cases[i][1]);
	}
	webhook_url_redact("http://user:secret@hostname.example/", small, sizeof(small));
	assert_null(strstr(small, "secret"));
	assert_int_equal(strlen(small), sizeof(small) - 1);
}

/* Header names from Kafka reach the log as one line of printable ASCII. */
static void test_log_escape(void **state)
{
	char out[64], tiny[8];

	(void)state;
	assert_string_equal(log_escape("a\r\nset-cookie: x", 16, out, sizeof(out)),
	    "a\\x0d\\x0aset-cookie: x");
	assert_string_equal(log_escape("t\tb\\\x7f\xc3\xa9", 7, out, sizeof(out)),
	    "t\\x09b\\\\\\x7f\\xc3\\xa9");
	assert_string_equal(log_escape("nul\0x", 5, out, sizeof(out)), "nul\\x00x");
	assert_string_equal(log_escape("", 0, out, sizeof(out)), "");
	/* Cut to fit, marked. */
	assert_string_equal(log_escape("abcdefghij", 10, tiny, sizeof(tiny)), "abcd...");
	assert_string_equal(log_escape("abcdefg", 7, tiny, sizeof(tiny)), "abcdefg");
	assert_string_equal(log_escape("\n\n\n", 3, tiny, sizeof(tiny)), "\\x0a...");
	for (size_t len = 0; len < 40; len++) {
		char in[40];
		memset(in, '\n', sizeof(in));
		log_escape(in, len, tiny, sizeof(tiny));
		assert_true(strlen(tiny) < sizeof(tiny));
		assert_null(strchr(tiny, '\n'));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_url_redact),
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_sha256_block_edges),
		cmocka_unit_test(test_hmac_rfc4231),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_secret_decode),
		cmocka_unit_test(test_sign_standard_vector),
		cmocka_unit_test(test_sign_two_secrets),
		cmocka_unit_test(test_id_from_coords),
		cmocka_unit_test(test_pct_encode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
