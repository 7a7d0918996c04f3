/*
 * webhook: what a request is never sent without (webhook_send() with no
 * endpoint: nothing waits for an answer), and the request both clients send
 * to a peer in this process over a Unix socket, byte for byte, with the
 * answer they report.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "conf.h"
#include "webhook.h"

static struct conf_sub sub_with(char **secrets, size_t nsecrets)
{
	static char name[] = "s", url[] = "http://127.0.0.1:9/hook", none[] = "";
	struct conf_sub cs = {
		.name = name,
		.url = url,
		.unix_socket = none,
		.secrets = { secrets, nsecrets },
		.timeout_ms = 1000,
		.max_in_flight = 4,
		.dead_letter_topic = none,
		.tls = { none, none, none },
		.oauth2 = { none, none, none, none },
	};
	return cs;
}

static const struct webhook_msg msg = {
	.topic = "t", .partition = 0, .offset = 7, .value = "v", .value_len = 1,
	.timestamp_ms = -1, .id = "msg_1", .attempt = 1,
};

/* A signature that cannot be computed: the request is not sent at all. */
static void test_signing_fails_closed(void **state)
{
	char *bad[] = { "whsec_%%%%not-base64%%%%" };
	struct conf_sub cs = sub_with(bad, 1);
	char err[128] = "";
	struct webhook *wh = webhook_new(&cs, err, sizeof(err));

	(void)state;
	assert_non_null(wh);
	assert_int_equal(webhook_send(wh, &msg, NULL, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "signature"));
	assert_int_equal(webhook_in_flight(wh), 0);
	/* The handle went back to the free list: a second try fails the same way. */
	assert_int_equal(webhook_send(wh, &msg, NULL, err, sizeof(err)), -1);
	assert_int_equal(webhook_in_flight(wh), 0);
	webhook_free(wh);
}

/* The same subscription with a good secret does send. */
static void test_signed_request_starts(void **state)
{
	char *good[] = { "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
	struct conf_sub cs = sub_with(good, 1);
	char err[128] = "";
	struct webhook *wh = webhook_new(&cs, err, sizeof(err));

	(void)state;
	assert_non_null(wh);
	assert_int_equal(webhook_send(wh, &msg, NULL, err, sizeof(err)), 0);
	assert_int_equal(webhook_in_flight(wh), 1);
	webhook_free(wh);
}

/* --- the request on the wire --- */

static struct webhook_answer got_answer;
static int got_tag;

static void on_done(void *arg, void *tag, const struct webhook_answer *a)
{
	(void)arg;
	got_tag = *(int *)tag;
	got_answer = *a;
	/* Copied out: the strings live only during the call. */
	got_answer.error = a->error ? strdup(a->error) : NULL;
}

/* Drive wh until the peer on lfd has read one whole request into buf; its length. */
static size_t peer_take(struct webhook *wh, int lfd, int *fd, char *buf, size_t cap)
{
	size_t len = 0;

	*fd = -1;
	for (int i = 0; i < 500; i++) {
		const char *end, *cl;
		ssize_t n;

		webhook_poll(wh, -1, 10);
		if (*fd < 0) {
			*fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
			if (*fd < 0)
				continue;
		}
		n = read(*fd, buf + len, cap - 1 - len);
		if (n <= 0)
			continue;
		len += (size_t)n;
		buf[len] = '\0';
		end = strstr(buf, "\r\n\r\n");
		cl = strstr(buf, "Content-Length: ");
		if (end && cl && len >= (size_t)(end + 4 - buf) + strtoul(cl + 16, NULL, 10))
			return len;
	}
	fail_msg("no whole request arrived");
	return 0;
}

/* Drive wh until its request is done. */
static void collect_one(struct webhook *wh)
{
	for (int i = 0; i < 500; i++) {
		webhook_poll(wh, -1, 10);
		if (webhook_collect(wh, on_done, NULL) == 1)
			return;
	}
	fail_msg("no answer collected");
}

/* Drop the line that starts with prefix (and its CRLF) from s. */
static void drop_line(char *s, const char *prefix)
{
	char *at = strstr(s, prefix), *end;

	assert_non_null(at);
	end = strstr(at, "\r\n");
	assert_non_null(end);
	memmove(at, end + 2, strlen(end + 2) + 1);
}

/*
 * One message through each client to the same peer: the same request
 * apart from libcurl's Accept line (and the timestamp of the attempt), and
 * the same answer reported.
 */
static void test_both_clients_send_the_same_request(void **state)
{
	static const struct webhook_hdr hdrs[] = {
		{ "content-type", "text/plain; charset=utf-8", 25 },
		{ "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 55 },
		{ "bin", "\x01\xff", 2 },
	};
	const struct webhook_msg m = {
		.topic = "orders", .partition = 3, .offset = 42, .key = "k 1", .key_len = 3,
		.value = "{\"a\":1}", .value_len = 7, .hdrs = hdrs, .nhdrs = 3,
		.timestamp_ms = 1733240000000, .id = "msg_1", .attempt = 2,
	};
	static const char answer[] = "HTTP/1.1 503 Busy\r\nRetry-After: 2\r\n"
	    "Content-Length: 4\r\n\r\nbusy";
	static char url[] = "http://app/hook?x=1";
	char *static_hdrs[] = { "X-Api-Key=abc" };
	char path[108], req[2][4096];
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int lfd, fd, tag = 7;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/ackd-webhook-test-%d.sock", (int)getpid());
	unlink(path);
	strcpy(a.sun_path, path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	for (int i = 0; i < 2; i++) {
		struct conf_sub cs = sub_with(NULL, 0);
		char err[128] = "";
		struct webhook *wh;
		char *ts;

		cs.url = url;
		cs.unix_socket = path;
		cs.headers = (struct conf_strlist){ static_hdrs, 1 };
		cs.retry.max_retry_after_ms = 10000;
		cs.http_client = i == 0 ? CONF_HTTP_CLIENT_AUTO : CONF_HTTP_CLIENT_LIBCURL;
		wh = webhook_new(&cs, err, sizeof(err));
		assert_non_null(wh);
		assert_int_equal(webhook_send(wh, &m, &tag, err, sizeof(err)), 0);
		peer_take(wh, lfd, &fd, req[i], sizeof(req[i]));
		assert_int_equal(write(fd, answer, strlen(answer)), (ssize_t)strlen(answer));
		got_tag = 0;
		collect_one(wh);
		assert_int_equal(got_tag, 7);
		if (got_answer.status != 503)
			fail_msg("client %d: %ld %s", i, got_answer.status, got_answer.error);
		assert_null(got_answer.error);
		assert_false(got_answer.timed_out);
		assert_int_equal(got_answer.retry_after_ms, 2000);
		assert_int_equal(webhook_in_flight(wh), 0);
		close(fd);
		webhook_free(wh);
		/* The attempt's time may differ by a second. */
		ts = strstr(req[i], "webhook-timestamp: ");
		assert_non_null(ts);
		memset(ts + 19, '0', 10);
	}
	drop_line(req[1], "Accept: */*\r\n");
	assert_string_equal(req[0], req[1]);
	assert_non_null(strstr(req[0], "POST /hook?x=1 HTTP/1.1\r\nHost: app\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\nwebhook-timestamp: "));
	assert_non_null(strstr(req[0], "\r\nackd-key: k%201\r\n"));
	assert_non_null(strstr(req[0], "\r\nX-Api-Key: abc\r\nUser-Agent: ackd/"));
	assert_non_null(strstr(req[0], "\r\nContent-Length: 7\r\n\r\n{\"a\":1}"));
	close(lfd);
	unlink(path);
}

/* Nothing listens: no answer, with the reason. */
static void test_refused_connection_is_no_answer(void **state)
{
	struct conf_sub cs = sub_with(NULL, 0);
	char err[128] = "";
	struct webhook *wh;
	int tag = 1;

	(void)state;
	for (int i = 0; i < 2; i++) {
		cs.http_client = i == 0 ? CONF_HTTP_CLIENT_AUTO : CONF_HTTP_CLIENT_LIBCURL;
		wh = webhook_new(&cs, err, sizeof(err));
		assert_non_null(wh);
		assert_int_equal(webhook_send(wh, &msg, &tag, err, sizeof(err)), 0);
		collect_one(wh);
		assert_int_equal(got_answer.status, 0);
		assert_false(got_answer.timed_out);
		assert_non_null(got_answer.error);
		assert_non_null(strstr(got_answer.error, "127.0.0.1 port 9"));
		free((char *)got_answer.error);
		webhook_free(wh);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signing_fails_closed),
		cmocka_unit_test(test_signed_request_starts),
		cmocka_unit_test(test_both_clients_send_the_same_request),
		cmocka_unit_test(test_refused_connection_is_no_answer),
	};
	int rc;

	curl_global_init(CURL_GLOBAL_DEFAULT);
	rc = cmocka_run_group_tests(tests, NULL, NULL);
	curl_global_cleanup();
	return rc;
}
