/*
 * fuzz_http_request: whole HTTP requests into ackd's real server.
 *
 * The first input starts what ackd's main() starts, minus subscriptions: an
 * embedded Kafka (librdkafka's mock cluster, as --dev), a spool in a
 * temporary directory, the topics cache, the producer, and http_start() on a
 * Unix socket. Each input is sent as it is on a new connection to that socket
 * (request line, headers, body, chunked framing, pipelined requests: all of
 * it comes from the input), the sending side is shut down, and everything
 * the server answers is read until it closes the connection.
 *
 * The oracle: ackd does not crash or exit (a fatal() aborts in a fuzzing
 * build, which libFuzzer reports as a crash), the sanitizers stay quiet,
 * every answer is an HTTP/1.x status line and every JSON body ackd sends
 * parses as JSON (so no client byte reached an answer unescaped), and every
 * 256 inputs, and after the last, /healthz on a fresh connection answers
 * 200.
 *
 * With libFuzzer, from the top of the tree after a configure in build/
 * (every module but main.c, with ASan and UBSan):
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined \
 *     -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION -DLOCALSTATEDIR=\"/var\" -Idaemon -Ibuild \
 *     tests/fuzz/fuzz_http_request.c $(find daemon -name '*.c' ! -name main.c) \
 *     -lmicrohttpd -lrdkafka -lconfig -ljansson -lcurl -lpthread -o fuzz_http_request
 *   cp -r tests/fuzz/corpus/http_request corpus
 *   ./fuzz_http_request -max_len=16384 -timeout=60 -rss_limit_mb=2048 -detect_leaks=0 corpus
 * -detect_leaks=0: libFuzzer checks for leaks between two inputs, while the
 * spool writer, the producer and librdkafka's threads still hold what they
 * allocate for the last one; the replay checks leaks once, at exit, after a
 * clean stop (an ASan build of make check).
 * Otherwise main() replays files and directories given as arguments (the
 * corpus tests/fuzz/corpus/http_request when none are), which is how
 * `make check` runs it with gcc.
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf.h"
#include "devkafka.h"
#include "http.h"
#include "log.h"
#include "producer.h"
#include "spool.h"
#include "status.h"
#include "topics.h"
#include "util.h"

#define IO_TIMEOUT_MS 30000  /* an answer slower than this is a hang */
#define MAX_ANSWER (1 << 20) /* answers kept for the checks */
#define HEALTH_EVERY 256

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct {
	struct devkafka *dk;
	struct conf *conf;
	struct spool *sp;
	struct topics *topics;
	struct producer *prod;
	struct http *http;
	char dir[64];
	char sock[128];
	unsigned long inputs;
} fz;

static void broken(const char *what)
{
	fprintf(stderr, "fuzz_http_request: broken: %s\n", what);
	abort();
}

static void replace(char **field, const char *value)
{
	free(*field);
	*field = xstrdup(value);
}

/* Everything ackd runs for a request, once per process. */
static void start(void)
{
	char err[512];
	struct spool_opts so = { 0 };
	struct http_deps deps;

	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_LVL_ERR);
	snprintf(fz.dir, sizeof(fz.dir), "/tmp/fuzz-http.XXXXXX");
	if (!mkdtemp(fz.dir))
		broken("mkdtemp");
	if (devkafka_start(1, &fz.dk, err, sizeof(err)) < 0)
		broken(err);
	fz.conf = conf_defaults(devkafka_bootstrap(fz.dk));
	if (!fz.conf)
		broken("conf_defaults");
	snprintf(fz.sock, sizeof(fz.sock), "%s/ackd.sock", fz.dir);
	replace(&fz.conf->listen.http, "");
	replace(&fz.conf->listen.unix_path, fz.sock);
	replace(&fz.conf->spool.dir, fz.dir);
	/* Small limits, so inputs of a few KiB reach every refusal. */
	fz.conf->spool.fsync = CONF_FSYNC_NEVER;
	fz.conf->publish.ack = CONF_ACK_SPOOL;
	fz.conf->publish.ack_timeout_ms = 500;
	/* One topic gets through to the spool; asking Kafka about any other
	 * name the fuzzer makes up would only wait on metadata. */
	fz.conf->publish.topics.v = xcalloc(1, sizeof(char *));
	fz.conf->publish.topics.v[0] = xstrdup("fuzz");
	fz.conf->publish.topics.n = 1;
	fz.conf->limits.max_body_bytes = 8192;
	fz.conf->limits.max_batch_records = 16;
	fz.conf->limits.max_header_bytes = 2048;
	fz.conf->limits.max_url_bytes = 512;
	fz.conf->limits.max_inflight_body_bytes = 1 << 20;
	fz.conf->limits.header_timeout_ms = 2000;
	fz.conf->limits.body_timeout_ms = 2000;

	so.dir = fz.conf->spool.dir;
	so.fsync = fz.conf->spool.fsync;
	so.fsync_interval_ms = fz.conf->spool.fsync_interval_ms;
	so.max_bytes = (uint64_t)fz.conf->spool.max_bytes;
	if (spool_open(&so, &fz.sp, err, sizeof(err)) < 0 ||
	    topics_start(fz.conf, &fz.topics, err, sizeof(err)) < 0 ||
	    producer_start(fz.conf, fz.sp, NULL, &fz.prod, err, sizeof(err)) < 0)
		broken(err);
	status_init(fz.sp, fz.prod, fz.topics, NULL);
	deps = (struct http_deps){ .conf = fz.conf, .spool = fz.sp, .producer = fz.prod,
		.topics = fz.topics };
	if (http_start(&deps, &fz.http, err, sizeof(err)) < 0)
		broken(err);
}

/* Send req on a new connection, half-close, read the answer into buf until EOF. */
static size_t exchange(const void *req, size_t len, char *buf, size_t cap)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *p = req;
	size_t sent = 0, got = 0;
	int fd;

	memcpy(sun.sun_path, fz.sock, strlen(fz.sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		broken("cannot connect to ackd");
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (sent < len)
			pfd.events |= POLLOUT;
		if (poll(&pfd, 1, IO_TIMEOUT_MS) == 0)
			broken("ackd did not answer or close within the timeout");
		if (sent < len && (pfd.revents & (POLLOUT | POLLERR | POLLHUP))) {
			n = send(fd, p + sent, len - sent, MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR)
				sent = len; /* ackd closed early: what it answered is still there */
			else if (n > 0)
				sent += (size_t)n;
			if (sent == len)
				shutdown(fd, SHUT_WR);
		}
		if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
			char tmp[16384];
			n = recv(fd, tmp, sizeof(tmp), 0);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
				break;
			if (n > 0 && got < cap) {
				size_t keep = (size_t)n < cap - got ? (size_t)n : cap - got;
				memcpy(buf + got, tmp, keep);
				got += keep;
			}
		}
	}
	close(fd);
	return got;
}

/* Each answer in buf: a status line, and a JSON body that parses. */
static void check_answers(const char *buf, size_t len)
{
	size_t at = 0;

	while (at < len) {
		const char *start = buf + at, *end;
		const char *cl, *ct;
		size_t head, body = 0;

		if (len - at < 12 || memcmp(start, "HTTP/1.", 7) != 0)
			broken("an answer without an HTTP/1.x status line");
		end = memmem(start, len - at, "\r\n\r\n", 4);
		if (!end)
			return; /* cut by MAX_ANSWER */
		head = (size_t)(end - start) + 4;
		cl = memmem(start, head, "\r\nContent-Length: ", 18);
		if (cl)
			body = strtoul(cl + 18, NULL, 10);
		if (body > len - at - head)
			return; /* cut by MAX_ANSWER, or a HEAD answer: nothing more to see */
		if (len - at - head - body > 0 &&
		    (len - at - head - body < 7 || memcmp(start + head + body, "HTTP/1.", 7) != 0))
			return; /* a HEAD answer (no body) before another: lengths say nothing */
		ct = memmem(start, head, "\r\nContent-Type: application/json", 32);
		if (ct && body > 0) {
			json_error_t jerr;
			json_t *j = json_loadb(start + head, body, 0, &jerr);
			if (!j) {
				fprintf(stderr, "%.*s\n", (int)(head + body), start);
				broken("a JSON answer that does not parse");
			}
			json_decref(j);
		}
		at += head + body;
	}
}

static void check_healthz(void)
{
	static const char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	char buf[4096];
	size_t n = exchange(req, sizeof(req) - 1, buf, sizeof(buf));

	if (n < 12 || memcmp(buf, "HTTP/1.1 200", 12) != 0)
		broken("/healthz does not answer 200");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char *buf;
	size_t n;

	if (!fz.http) {
		start();
		buf = xmalloc(MAX_ANSWER);
	}
	n = exchange(data, size, buf, MAX_ANSWER);
	check_answers(buf, n);
	if (++fz.inputs % HEALTH_EVERY == 0)
		check_healthz();
	return 0;
}

#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#include <ftw.h>
#include <sys/stat.h>

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Stop it all in main()'s order, so a replay also checks a clean shutdown. */
static void stop(void)
{
	http_quiesce(fz.http);
	if (spool_quiesce(fz.sp, 5000) < 0)
		fprintf(stderr, "fuzz_http_request: the spool writer did not finish in 5 s\n");
	producer_stop(fz.prod, 1000);
	topics_stop(fz.topics);
	http_drain(fz.http, 2000);
	http_stop(fz.http);
	spool_close(fz.sp);
	devkafka_stop(fz.dk);
	conf_free(fz.conf);
	nftw(fz.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}


/* fuzz_replay.c calls this after the corpus: the server must still answer, then stop cleanly. */
void fuzz_replay_done(void);
void fuzz_replay_done(void)
{
	check_healthz();
	stop();
	printf("fuzz_http_request: /healthz answered after every input; stopped cleanly\n");
}
#endif
