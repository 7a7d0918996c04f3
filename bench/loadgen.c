/*
 * loadgen: a small HTTP/1.1 load generator for bench/publish.
 *
 * Design. One thread, one epoll set, N keep-alive connections over TCP or a
 * Unix socket, at most one request in flight per connection (no pipelining).
 *
 *   closed loop (-r 0)  every connection sends its next request as soon as the
 *                       answer to the previous one arrived: a fixed
 *                       concurrency; latency runs from send to the last byte
 *                       of the answer.
 *   open loop (-r RATE) request i is due at start + i / RATE, whatever the
 *                       server does. A due request goes out on the first idle
 *                       connection; when none is idle it waits, and its
 *                       latency still runs from the time it was due. A slow
 *                       server therefore shows up in the latency instead of
 *                       slowing the schedule down (no coordinated omission).
 *
 * Timing is CLOCK_MONOTONIC in nanoseconds; the open-loop schedule sleeps in
 * epoll_pwait2() with a nanosecond timeout. Latencies go into a log-linear
 * histogram (128 linear sub-buckets per power of two, under 0.8% error, the
 * layout HdrHistogram uses), so percentiles cost no memory per request.
 *
 * The run is bounded: -w seconds of warm-up (not counted), -d seconds
 * measured, then up to 5 s for answers still in flight (not counted); or with
 * -n, until n answers were counted, never longer than -T seconds.
 *
 * With -K PREFIX every request carries its own Idempotency-Key header,
 * PREFIX-<16 hex digits of a counter>: each connection then sends from its
 * own copy of the request, whose key is rewritten in place before each send.
 *
 * Output: one line of JSON on stdout (requests, errors by kind, requests/s,
 * records/s, latency percentiles in microseconds). With -S MS:FILE every
 * counted answer slower than MS milliseconds is also written to FILE, one line
 * each: when the request was sent (or due), in seconds since the epoch, and
 * its latency in milliseconds, to line the tail up with other processes' logs;
 * open loop, then how much of that latency passed before it was sent: the ms
 * it waited for a connection to come free (all were waiting for answers: the
 * server's time), and the ms the sender itself was late with a connection
 * free (this process was not running: the machine's time, not the server's).
 * An answer is seen only when this process runs, so the first also holds any
 * time an answer lay unread before a connection counted as free.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HIST_BUCKETS ((64 - SUB_BITS) * SUB)
#define DRAIN_NS (5 * 1000000000LL)
#define MAX_EVENTS 256

/* --- histogram ------------------------------------------------------------ */

struct hist {
	uint64_t count[HIST_BUCKETS];
	uint64_t n, max;
	double sum;
};

static unsigned bucket_of(uint64_t v)
{
	unsigned msb, e;

	if (v < 2 * SUB)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	e = msb - SUB_BITS;
	return e * SUB + (unsigned)(v >> e);
}

/* The middle of bucket b's value range. */
static double bucket_value(unsigned b)
{
	unsigned e;
	uint64_t m;

	if (b < 2 * SUB)
		return b;
	e = b / SUB - 1;
	m = b - e * SUB;
	return ((double)(m << e) + (double)(((m + 1) << e) - 1)) / 2.0;
}

static void hist_add(struct hist *h, uint64_t v)
{
	h->count[bucket_of(v)]++;
	h->n++;
	h->sum += (double)v;
	if (v > h->max)
		h->max = v;
}

static double hist_pct(const struct hist *h, double pct)
{
	uint64_t rank, seen = 0;

	if (h->n == 0)
		return 0;
	rank = (uint64_t)ceil(pct / 100.0 * (double)h->n);
	if (rank < 1)
		rank = 1;
	for (unsigned b = 0; b < HIST_BUCKETS; b++) {
		seen += h->count[b];
		if (seen >= rank) {
			double v = bucket_value(b);
			return v > (double)h->max ? (double)h->max : v;
		}
	}
	return (double)h->max;
}

/* --- options -------------------------------------------------------------- */

struct opts {
	const char *addr;
	const char *method;
	const char *path;
	const char *body_file;
	const char *content_type;
	long body_size;
	int conns;
	double rate;
	double duration;
	double warmup;
	long max_requests;
	double timeout;
	long records_per_request;
	const char *idem_prefix; /* -K: a unique Idempotency-Key per request */
	double slow_ms;          /* -S: answers slower than this go to slow_file */
	const char *slow_path;
};

static void usage(FILE *f)
{
	fprintf(f,
	    "usage: loadgen -u ADDR [options]\n"
	    "  -u ADDR   host:port, or unix:/path/to.sock\n"
	    "  -c N      connections (default 64)\n"
	    "  -r RATE   open loop at RATE requests/s (default 0: closed loop)\n"
	    "  -d SECS   measured duration (default 10)\n"
	    "  -w SECS   warm-up before measuring (default 2)\n"
	    "  -n N      stop after N counted answers instead of after -d\n"
	    "  -T SECS   hard limit on the whole run (default warm-up + duration + 30)\n"
	    "  -m METHOD (default POST)\n"
	    "  -p PATH   request target (default /)\n"
	    "  -b FILE   request body from FILE\n"
	    "  -s BYTES  request body of BYTES printable bytes (default 0)\n"
	    "  -t TYPE   Content-Type header\n"
	    "  -k N      records per request, for records/s (default 1)\n"
	    "  -K PREFIX a unique Idempotency-Key header per request: PREFIX-<counter>\n"
	    "  -S MS:FILE write every answer slower than MS milliseconds to FILE\n"
	    "            (sent or due, seconds since the epoch; latency in ms; open loop:\n"
	    "            ms waited for a free connection, ms the sender was late)\n");
}

static double parse_num(const char *s, const char *what)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < 0) {
		fprintf(stderr, "loadgen: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	int c;

	*o = (struct opts){ .method = "POST", .path = "/", .conns = 64, .duration = 10,
		.warmup = 2, .records_per_request = 1 };
	while ((c = getopt(argc, argv, "u:c:r:d:w:n:T:m:p:b:s:t:k:K:S:h")) != -1) {
		switch (c) {
		case 'u': o->addr = optarg; break;
		case 'c': o->conns = (int)parse_num(optarg, "connections"); break;
		case 'r': o->rate = parse_num(optarg, "rate"); break;
		case 'd': o->duration = parse_num(optarg, "duration"); break;
		case 'w': o->warmup = parse_num(optarg, "warm-up"); break;
		case 'n': o->max_requests = (long)parse_num(optarg, "request count"); break;
		case 'T': o->timeout = parse_num(optarg, "timeout"); break;
		case 'm': o->method = optarg; break;
		case 'p': o->path = optarg; break;
		case 'b': o->body_file = optarg; break;
		case 's': o->body_size = (long)parse_num(optarg, "body size"); break;
		case 't': o->content_type = optarg; break;
		case 'k': o->records_per_request = (long)parse_num(optarg, "records"); break;
		case 'K': o->idem_prefix = optarg; break;
		case 'S': {
			char *colon = strchr(optarg, ':');
			if (!colon || colon[1] == '\0') {
				fprintf(stderr, "loadgen: -S wants MS:FILE: %s\n", optarg);
				exit(2);
			}
			*colon = '\0';
			o->slow_ms = parse_num(optarg, "slow threshold");
			if (!isfinite(o->slow_ms)) {
				fprintf(stderr, "loadgen: bad slow threshold: %s\n", optarg);
				exit(2);
			}
			o->slow_path = colon + 1;
			break;
		}
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); exit(2);
		}
	}
	if (!o->addr || optind < argc || o->conns < 1) {
		usage(stderr);
		exit(2);
	}
	if (o->timeout <= 0)
		o->timeout = o->warmup + o->duration + 30;
}

/* --- time ----------------------------------------------------------------- */

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* --- connections ---------------------------------------------------------- */

enum conn_state { C_IDLE, C_SENDING, C_RECEIVING };

struct conn {
	int fd;
	enum conn_state state;
	size_t wpos;
	char *rbuf;
	size_t rlen, rcap;
	size_t hdr_len;   /* 0 until the header block is complete */
	size_t body_len;
	int status;
	bool close_after;
	int64_t start_ns; /* sent, or due (open loop) */
	int64_t wait_ns;  /* open loop: from due to sent, no connection free */
	int64_t late_ns;  /* open loop: from due to sent, a connection free */
	bool out_armed;
	char *req; /* -K: this connection's copy of the request */
};

struct target {
	bool is_unix;
	struct sockaddr_storage sa;
	socklen_t salen;
};

struct run {
	struct opts o;
	struct target t;
	char *req;
	size_t req_len;
	size_t key_off; /* -K: where the 16 hex digits of the key's counter are */
	uint64_t keys;  /* -K: keys handed out */
	struct conn *c;
	int *idle;
	int nidle;
	int ep;

	int64_t t0, measure_from, measure_until, hard_until;
	bool sending;
	uint64_t next_due; /* open loop: index of the next request */
	uint64_t sent;

	struct hist h;
	uint64_t ok, status_4xx, status_5xx, status_other, conn_errors;
	uint64_t by_status[600];
	long counted;
	int64_t first_count_ns, last_count_ns;
	int64_t max_lag_ns; /* open loop: how late the sender ever was */
	FILE *slow;         /* -S */
	int64_t wall_minus_mono_ns;
};

static void resolve(const char *addr, struct target *t)
{
	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&t->sa;
		const char *path = addr + 5;
		if (strlen(path) >= sizeof(sun->sun_path)) {
			fprintf(stderr, "loadgen: unix path too long: %s\n", path);
			exit(2);
		}
		t->is_unix = true;
		sun->sun_family = AF_UNIX;
		strcpy(sun->sun_path, path);
		t->salen = sizeof(*sun);
		return;
	}
	const char *colon = strrchr(addr, ':');
	char host[256];
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res;
	int rc;

	if (!colon) {
		fprintf(stderr, "loadgen: expected host:port or unix:/path, got %s\n", addr);
		exit(2);
	}
	snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc) {
		fprintf(stderr, "loadgen: %s: %s\n", addr, gai_strerror(rc));
		exit(2);
	}
	memcpy(&t->sa, res->ai_addr, res->ai_addrlen);
	t->salen = res->ai_addrlen;
	freeaddrinfo(res);
}

/* A connected, non-blocking socket, or -1. Loopback connects at once. */
static int dial(const struct target *t)
{
	int fd = socket(t->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		return -1;
	if (connect(fd, (const struct sockaddr *)&t->sa, t->salen) < 0) {
		close(fd);
		return -1;
	}
	if (!t->is_unix)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static void conn_open(struct run *r, int i)
{
	struct conn *c = &r->c[i];
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };

	c->fd = dial(&r->t);
	for (int tries = 0; c->fd < 0 && tries < 50; tries++) {
		usleep(20000);
		c->fd = dial(&r->t);
	}
	if (c->fd < 0) {
		fprintf(stderr, "loadgen: cannot connect to %s: %s\n", r->o.addr, strerror(errno));
		exit(1);
	}
	c->state = C_IDLE;
	c->out_armed = false;
	c->rlen = c->hdr_len = 0;
	if (epoll_ctl(r->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) {
		perror("loadgen: epoll_ctl");
		exit(1);
	}
}

static void arm_out(struct run *r, int i, bool on)
{
	struct conn *c = &r->c[i];
	struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0), .data.u32 = (uint32_t)i };

	if (c->out_armed == on)
		return;
	c->out_armed = on;
	epoll_ctl(r->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/*
 * The connection failed or the server closed it: count, reconnect, and put it
 * on the idle list (the main loop sends on it again). Not for idle ones.
 */
static void conn_reset(struct run *r, int i, bool error)
{
	struct conn *c = &r->c[i];

	if (error)
		r->conn_errors++;
	epoll_ctl(r->ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	conn_open(r, i);
	r->idle[r->nidle++] = i;
}

static void conn_write(struct run *r, int i)
{
	struct conn *c = &r->c[i];

	while (c->wpos < r->req_len) {
		const char *req = c->req ? c->req : r->req;
		ssize_t n = send(c->fd, req + c->wpos, r->req_len - c->wpos, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				arm_out(r, i, true);
				return;
			}
			conn_reset(r, i, true);
			return;
		}
		c->wpos += (size_t)n;
	}
	arm_out(r, i, false);
	c->state = C_RECEIVING;
}

static void conn_send(struct run *r, int i, int64_t start_ns)
{
	struct conn *c = &r->c[i];

	c->state = C_SENDING;
	c->wpos = 0;
	if (r->o.idem_prefix) {
		char hex[17];
		if (!c->req) {
			c->req = malloc(r->req_len);
			if (!c->req) {
				fprintf(stderr, "loadgen: out of memory\n");
				exit(2);
			}
			memcpy(c->req, r->req, r->req_len);
		}
		snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)r->keys++);
		memcpy(c->req + r->key_off, hex, 16);
	}
	c->rlen = c->hdr_len = 0;
	c->start_ns = start_ns;
	c->wait_ns = c->late_ns = 0;
	r->sent++;
	conn_write(r, i);
}

/* Header block complete in c->rbuf[0..hdr_len): status, length, keep-alive. */
static int parse_head(struct conn *c)
{
	const char *p = c->rbuf, *end = c->rbuf + c->hdr_len;
	bool have_len = false;

	if (c->hdr_len < 12 || strncmp(p, "HTTP/1.", 7) != 0)
		return -1;
	c->status = atoi(p + 9);
	c->close_after = p[7] == '0';
	c->body_len = 0;
	while ((p = memchr(p, '\n', (size_t)(end - p))) && ++p < end) {
		if (strncasecmp(p, "content-length:", 15) == 0) {
			c->body_len = strtoul(p + 15, NULL, 10);
			have_len = true;
		} else if (strncasecmp(p, "connection:", 11) == 0) {
			const char *v = p + 11;
			while (*v == ' ')
				v++;
			if (strncasecmp(v, "close", 5) == 0)
				c->close_after = true;
			else if (strncasecmp(v, "keep-alive", 10) == 0)
				c->close_after = false;
		} else if (strncasecmp(p, "transfer-encoding:", 18) == 0) {
			return -1; /* the servers measured here answer with a length */
		}
	}
	return have_len ? 0 : -1;
}

static void count_answer(struct run *r, struct conn *c, int64_t t)
{
	bool in_window;

	if (r->o.max_requests > 0)
		in_window = t >= r->measure_from && r->counted < r->o.max_requests;
	else
		in_window = t >= r->measure_from && t <= r->measure_until;
	if (!in_window)
		return;
	if (r->counted == 0)
		r->first_count_ns = t;
	r->counted++;
	r->last_count_ns = t;
	hist_add(&r->h, (uint64_t)(t - c->start_ns));
	if (r->slow && t - c->start_ns > (int64_t)(r->o.slow_ms * 1e6)) {
		int64_t wall = c->start_ns + r->wall_minus_mono_ns;
		fprintf(r->slow, "%lld.%06lld %.3f", (long long)(wall / 1000000000),
		    (long long)(wall % 1000000000 / 1000), (double)(t - c->start_ns) / 1e6);
		if (r->o.rate > 0)
			fprintf(r->slow, " %.3f %.3f", (double)c->wait_ns / 1e6, (double)c->late_ns / 1e6);
		fputc('\n', r->slow);
	}
	if (c->status >= 200 && c->status < 300)
		r->ok++;
	else if (c->status >= 400 && c->status < 500)
		r->status_4xx++;
	else if (c->status >= 500 && c->status < 600)
		r->status_5xx++;
	else
		r->status_other++;
	if (c->status > 0 && c->status < 600)
		r->by_status[c->status]++;
}

static void next_request(struct run *r, int i, int64_t t);

static void conn_read(struct run *r, int i)
{
	struct conn *c = &r->c[i];

	for (;;) {
		if (c->rcap - c->rlen < 4096) {
			c->rcap = c->rcap ? c->rcap * 2 : 16384;
			c->rbuf = realloc(c->rbuf, c->rcap + 1);
			if (!c->rbuf) {
				fprintf(stderr, "loadgen: out of memory\n");
				exit(1);
			}
		}
		ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			conn_reset(r, i, true);
			return;
		}
		if (n < 0)
			return;
		c->rlen += (size_t)n;
		c->rbuf[c->rlen] = '\0';
		if (c->state != C_RECEIVING && c->state != C_SENDING) {
			conn_reset(r, i, true); /* bytes nobody asked for */
			return;
		}
		if (c->hdr_len == 0) {
			char *e = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
			if (!e)
				continue;
			c->hdr_len = (size_t)(e - c->rbuf) + 4;
			if (parse_head(c) < 0) {
				conn_reset(r, i, true);
				return;
			}
		}
		if (c->rlen < c->hdr_len + c->body_len)
			continue;

		int64_t t = now_ns();
		count_answer(r, c, t);
		if (c->close_after || c->state == C_SENDING) {
			/* Answered before the whole request went out, or not keep-alive. */
			conn_reset(r, i, false);
			return;
		}
		c->state = C_IDLE;
		next_request(r, i, t);
		return;
	}
}

static bool finished_counting(const struct run *r)
{
	return r->o.max_requests > 0 && r->counted >= r->o.max_requests;
}

static int64_t due_ns(const struct run *r, uint64_t k)
{
	return r->t0 + (int64_t)((double)k * 1e9 / r->o.rate);
}

/* Connection i is idle at time t: send again (closed loop) or park it. */
static void next_request(struct run *r, int i, int64_t t)
{
	if (r->sending && !finished_counting(r)) {
		if (r->o.rate <= 0) {
			conn_send(r, i, t);
			return;
		}
		if (due_ns(r, r->next_due) <= t) {
			int64_t due = due_ns(r, r->next_due++);
			if (t - due > r->max_lag_ns && due >= r->measure_from)
				r->max_lag_ns = t - due;
			conn_send(r, i, due);
			/* With another connection idle, the sender was late, not the server. */
			if (r->nidle > 0)
				r->c[i].late_ns = t - due;
			else
				r->c[i].wait_ns = t - due;
			return;
		}
	}
	r->idle[r->nidle++] = i;
}

/* Open loop: send everything that is due on idle connections. */
static void send_due(struct run *r, int64_t t)
{
	while (r->sending && r->nidle > 0 && due_ns(r, r->next_due) <= t && !finished_counting(r)) {
		int i = r->idle[--r->nidle];
		int64_t due = due_ns(r, r->next_due++);
		if (t - due > r->max_lag_ns && due >= r->measure_from)
			r->max_lag_ns = t - due;
		conn_send(r, i, due);
		r->c[i].late_ns = t - due;
	}
}

/* Closed loop: connections that came back from a reconnect send again. */
static void send_idle(struct run *r, int64_t t)
{
	while (r->sending && r->nidle > 0 && !finished_counting(r))
		conn_send(r, r->idle[--r->nidle], t);
}

static bool any_in_flight(const struct run *r)
{
	return r->nidle < r->o.conns;
}

/* --- setup and report ----------------------------------------------------- */

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *buf;

	if (!f || fstat(fileno(f), &st) < 0) {
		fprintf(stderr, "loadgen: %s: %s\n", path, strerror(errno));
		exit(2);
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf || fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
		fprintf(stderr, "loadgen: cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	*len = (size_t)st.st_size;
	return buf;
}

static void build_request(struct run *r)
{
	const struct opts *o = &r->o;
	char *body, head[2048];
	size_t blen = 0;
	int hlen;

	if (o->body_file) {
		body = read_file(o->body_file, &blen);
	} else {
		blen = (size_t)o->body_size;
		body = malloc(blen + 1);
		for (size_t i = 0; i < blen; i++)
			body[i] = (char)('a' + i % 26);
	}
	char key[300] = "";
	if (o->idem_prefix)
		snprintf(key, sizeof(key), "Idempotency-Key: %.200s-%016d\r\n", o->idem_prefix, 0);
	hlen = snprintf(head, sizeof(head),
	    "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ackd-loadgen\r\n%s%s%s%sContent-Length: %zu\r\n\r\n",
	    o->method, o->path, r->t.is_unix ? "localhost" : o->addr,
	    o->content_type ? "Content-Type: " : "", o->content_type ? o->content_type : "",
	    o->content_type ? "\r\n" : "", key, blen);
	if (hlen < 0 || (size_t)hlen >= sizeof(head)) {
		fprintf(stderr, "loadgen: request line too long\n");
		exit(2);
	}
	if (o->idem_prefix)
		r->key_off = (size_t)(strstr(head, "Idempotency-Key: ") - head) + strlen(key) - 18;
	r->req_len = (size_t)hlen + blen;
	r->req = malloc(r->req_len);
	memcpy(r->req, head, (size_t)hlen);
	memcpy(r->req + hlen, body, blen);
	free(body);
}

static void report(const struct run *r, bool timed_out)
{
	double secs;
	char statuses[1024] = "";
	size_t off = 0;

	if (r->o.max_requests > 0)
		secs = r->counted > 0 ? (double)(r->last_count_ns - r->measure_from) / 1e9 : 0;
	else
		secs = (double)(r->measure_until - r->measure_from) / 1e9;
	for (int s = 0; s < 600; s++)
		if (r->by_status[s] && off < sizeof(statuses) - 32)
			off += (size_t)snprintf(statuses + off, sizeof(statuses) - off, "%s\"%d\":%llu",
			    off ? "," : "", s, (unsigned long long)r->by_status[s]);
	printf("{\"mode\":\"%s\",\"conns\":%d,\"rate_target\":%.1f,\"seconds\":%.3f,"
	       "\"requests\":%ld,\"ok\":%llu,\"status_4xx\":%llu,\"status_5xx\":%llu,"
	       "\"status_other\":%llu,\"conn_errors\":%llu,\"statuses\":{%s},"
	       "\"rps\":%.1f,\"ok_rps\":%.1f,\"records_per_s\":%.1f,\"timed_out\":%s,"
	       "\"max_send_lag_us\":%.1f,"
	       "\"lat_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
	       "\"max\":%.1f}}\n",
	    r->o.rate > 0 ? "open" : "closed", r->o.conns, r->o.rate, secs, r->counted,
	    (unsigned long long)r->ok, (unsigned long long)r->status_4xx,
	    (unsigned long long)r->status_5xx, (unsigned long long)r->status_other,
	    (unsigned long long)r->conn_errors, statuses,
	    secs > 0 ? (double)r->counted / secs : 0, secs > 0 ? (double)r->ok / secs : 0,
	    secs > 0 ? (double)r->ok * (double)r->o.records_per_request / secs : 0,
	    timed_out ? "true" : "false", (double)r->max_lag_ns / 1e3,
	    r->h.n ? r->h.sum / (double)r->h.n / 1e3 : 0, hist_pct(&r->h, 50) / 1e3,
	    hist_pct(&r->h, 90) / 1e3, hist_pct(&r->h, 99) / 1e3, hist_pct(&r->h, 99.9) / 1e3,
	    (double)r->h.max / 1e3);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static struct run run;
	struct run *r = &run;
	struct epoll_event evs[MAX_EVENTS];
	bool timed_out = false;

	signal(SIGPIPE, SIG_IGN);
	parse_opts(argc, argv, &r->o);
	resolve(r->o.addr, &r->t);
	build_request(r);
	r->ep = epoll_create1(EPOLL_CLOEXEC);
	r->c = calloc((size_t)r->o.conns, sizeof(*r->c));
	r->idle = calloc((size_t)r->o.conns, sizeof(*r->idle));
	if (r->ep < 0 || !r->c || !r->idle) {
		perror("loadgen");
		return 1;
	}
	for (int i = 0; i < r->o.conns; i++) {
		conn_open(r, i);
		r->idle[r->nidle++] = i;
	}

	if (r->o.slow_path) {
		struct timespec wall;
		r->slow = fopen(r->o.slow_path, "w");
		if (!r->slow) {
			perror(r->o.slow_path);
			return 1;
		}
		clock_gettime(CLOCK_REALTIME, &wall);
		r->wall_minus_mono_ns = wall.tv_sec * 1000000000LL + wall.tv_nsec - now_ns();
	}
	r->t0 = now_ns();
	r->measure_from = r->t0 + (int64_t)(r->o.warmup * 1e9);
	r->measure_until = r->o.max_requests > 0 ? INT64_MAX
	                                         : r->measure_from + (int64_t)(r->o.duration * 1e9);
	r->hard_until = r->t0 + (int64_t)(r->o.timeout * 1e9);
	r->sending = true;

	int64_t stop_at = INT64_MAX; /* when sending stopped: drain deadline */
	for (;;) {
		int64_t t = now_ns(), wait_ns;
		struct timespec ts;

		if (r->sending && (t >= r->measure_until || finished_counting(r))) {
			r->sending = false;
			stop_at = t + DRAIN_NS;
		}
		if (t >= r->hard_until) {
			timed_out = true;
			break;
		}
		if (!r->sending && (!any_in_flight(r) || t >= stop_at))
			break;
		if (r->o.rate > 0)
			send_due(r, t);
		else
			send_idle(r, t);

		wait_ns = 100000000; /* look at the clock at least every 100 ms */
		if (r->o.rate > 0 && r->sending && r->nidle > 0) {
			int64_t d = due_ns(r, r->next_due) - now_ns();
			if (d < wait_ns)
				wait_ns = d > 0 ? d : 0;
		}
		ts.tv_sec = wait_ns / 1000000000;
		ts.tv_nsec = wait_ns % 1000000000;
		int n = epoll_pwait2(r->ep, evs, MAX_EVENTS, &ts, NULL);
		if (n < 0 && errno != EINTR) {
			perror("loadgen: epoll_pwait2");
			return 1;
		}
		/* What fell due while this process waited goes on the idle connections
		 * first, its lateness booked as the sender's (late_ns). */
		if (r->o.rate > 0)
			send_due(r, now_ns());
		for (int k = 0; k < n; k++) {
			int i = (int)evs[k].data.u32;
			struct conn *c = &r->c[i];
			if ((evs[k].events & EPOLLOUT) && c->state == C_SENDING)
				conn_write(r, i);
			if (evs[k].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
				if (c->state == C_IDLE) {
					/* The server closed an idle keep-alive connection. */
					int at = -1;
					for (int j = 0; j < r->nidle; j++)
						if (r->idle[j] == i)
							at = j;
					if (at >= 0)
						r->idle[at] = r->idle[--r->nidle];
					conn_reset(r, i, false);
				} else {
					conn_read(r, i);
				}
			}
		}
	}
	report(r, timed_out);
	if (r->slow) {
		bool lost = ferror(r->slow); /* a write that failed before the close */
		int rc = fclose(r->slow);
		if (rc != 0 || lost) {
			fprintf(stderr, "loadgen: cannot write %s%s%s\n", r->o.slow_path,
			    rc != 0 ? ": " : "", rc != 0 ? strerror(errno) : "");
			return 1;
		}
	}
	return timed_out ? 3 : 0;
}
