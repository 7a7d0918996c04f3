/*
 * http: routes, request state, and the one table from errors to statuses.
 *
 * Design. libmicrohttpd runs the listeners with its own threads; a handler
 * never blocks. A publish request goes through these states:
 *
 *   BODY    the body arrives (a Content-Length over the limit is refused
 *           before a byte of it is read; a chunked body over it is dropped
 *           as it comes and refused at the end);
 *   WAIT    the connection is suspended while another thread works for it:
 *           the topics thread (is the topic known to Kafka?), the spool
 *           writer (is it durable?), the kafka loop (did Kafka ack it?);
 *   ANSWER  that thread stored the answer and resumed the connection; the
 *           handler runs again and queues it.
 *
 * Kafka REST Proxy's produce paths (v2 /topics/{t}, v3
 * /v3/clusters/{c}/topics/{t}/records) take the same states: publish turns
 * their bodies into the records of a native batch, and only the answer and
 * the error bodies take REST Proxy's shapes.
 *
 * A Control API request (/v1/subscriptions/{name}/...) waits the same way
 * for the subscription's thread, which carries out its command and answers
 * (control.h, consumer_control()).
 *
 * A request object is touched by one thread at a time: the thread that holds
 * it hands it on (topics_query, spool_submit, producer_wait) and does not
 * touch it again; the last one resumes the connection.
 *
 * Hostile clients. Nothing a client sends is trusted: every answer that
 * quotes it goes through utf8_clean(), and an answer that cannot be built is
 * a 500 with a fixed body, never an exit. Resources are bounded:
 *
 *   memory   a body buffer grows as bytes arrive (never from Content-Length),
 *            within limits.max_body_bytes, and all bodies held together
 *            within limits.max_inflight_body_bytes (the budget): a request
 *            that would go beyond it reads on but keeps nothing, and gets 503
 *            with Retry-After. Its share of the budget is held until its
 *            answer, as the parsed records hold as many bytes;
 *   time     a connection has limits.header_timeout_ms from its start (or
 *            its previous request's end) to the end of the headers, and
 *            limits.body_timeout_ms from there to the end of the body; bytes
 *            that trickle in do not renew either. libmicrohttpd has only an
 *            idle timeout, so struct conn keeps each connection's deadline
 *            and the sweeper thread shuts down the socket of one that passed
 *            it (libmicrohttpd then closes it as if the client had);
 *   count    limits.max_connections over both listeners (503 for requests
 *            beyond it, except /healthz and /readyz), and
 *            limits.max_connections_per_address on a TCP listener that is
 *            not on loopback, enforced by libmicrohttpd when it is handed a
 *            connection (on loopback every client is 127.0.0.1 or ::1: a cap
 *            per address would be a second max_connections).
 *
 * Two servers per listener. ackd accepts a listener's connections itself
 * (the acceptor thread, "http-accept") and hands each to one of two
 * libmicrohttpd servers. Every single publish is suspended until its record
 * is durable and then resumed. libmicrohttpd's epoll loop takes a suspended
 * socket out of its epoll set, puts it back after the resume and reads it
 * once more for nothing: 6.6 system calls per publish. Its poll loop only
 * leaves the socket out of its next poll(): 3.7 calls, and about a fifth
 * more publishes per second. But poll() costs time for every socket it
 * watches, idle ones too: with 64 busy and 64 idle connections it is only
 * as fast as epoll, with 256 idle ones slower (docs/performance.md, "Two
 * servers per listener"). So a listener on a Unix socket or on loopback
 * hands a new connection to a poll server ("fast") while that holds fewer
 * than FAST_CONNS, and to an epoll server ("wide") otherwise. A TCP listener
 * reachable from other hosts has only the wide server: libmicrohttpd caps
 * connections per address per server. A listener holds at most
 * max_connections + CONNECTION_HEADROOM over both; at that count the
 * acceptor stops accepting and new connections wait in the listen backlog,
 * as with libmicrohttpd's own accept.
 *
 * Threads: libmicrohttpd's (handlers, completion, connection notices), the
 * callbacks named above, which only fill the answer and resume, the
 * acceptors, which only accept and hand over, and the sweeper
 * ("http-sweep"), which only reads deadlines and calls shutdown(2).
 */
#include "config.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <microhttpd.h>

#include "control.h"
#include "http.h"
#include "idem.h"
#include "log.h"
#include "producer.h"
#include "metrics.h"
#include "publish.h"
#include "service.h"
#include "spool.h"
#include "status.h"
#include "topics.h"
#include "util.h"
#include "webhook_sign.h"

#define MAX_REQUEST_HEADERS 100
#define MAX_QUERY_ARGS 100
/* libmicrohttpd's list entry for one header field or query argument, at most. */
#define MHD_ENTRY_BYTES 64
/* A request head's bytes beyond its target and fields as check_fields() counts them. */
#define HEAD_SLACK (4 * MAX_REQUEST_HEADERS + 64)
#define CONNECTION_HEADROOM 64 /* accepted beyond max_connections, to answer 503 */
#define FAST_CONNS 128          /* a local listener's connections on its poll server */
#define SERVER_THREADS 2        /* libmicrohttpd threads per server */
#define RETRY_AFTER_S 1
#define INTERNAL_BODY \
	"{\"error\":{\"code\":\"internal\",\"message\":\"ackd could not build the answer; " \
	"nothing was published\"}}"

/* --- the one table from errors to HTTP statuses -------------------------- */

enum http_err {
	ERR_BAD_REQUEST,
	ERR_UNAUTHORIZED,
	ERR_FORBIDDEN,
	ERR_NOT_FOUND,
	ERR_UNKNOWN_TOPIC,
	ERR_METHOD_NOT_ALLOWED,
	ERR_PAYLOAD_TOO_LARGE,
	ERR_UNSUPPORTED_MEDIA_TYPE,
	ERR_KEY_IN_USE,
	ERR_KEY_REUSED,
	ERR_UNAVAILABLE,
	ERR_SPOOL_FULL,
	ERR_URI_TOO_LONG,
	ERR_HEADERS_TOO_LARGE,
	ERR_TOO_MANY_CONNECTIONS,
	ERR_INTERNAL,
};

/*
 * rp_code: the error_code of a REST Proxy v2 answer where REST Proxy has its
 * own (40401 topic not found); 0 means the status, as REST Proxy's generic
 * errors have. REST Proxy v3 answers always carry the status.
 */
static const struct {
	unsigned status;
	const char *code;
	bool retry_after;
	int rp_code;
} errors[] = {
	[ERR_BAD_REQUEST] = { 400, "bad_request", false },
	[ERR_UNAUTHORIZED] = { 401, "unauthorized", false },
	[ERR_FORBIDDEN] = { 403, "forbidden", false },
	[ERR_NOT_FOUND] = { 404, "not_found", false },
	[ERR_UNKNOWN_TOPIC] = { 404, "unknown_topic", false, 40401 },
	[ERR_METHOD_NOT_ALLOWED] = { 405, "method_not_allowed", false },
	[ERR_PAYLOAD_TOO_LARGE] = { 413, "payload_too_large", false },
	[ERR_UNSUPPORTED_MEDIA_TYPE] = { 415, "unsupported_media_type", false },
	[ERR_KEY_IN_USE] = { 409, "idempotency_key_in_use", true },
	[ERR_KEY_REUSED] = { 422, "idempotency_key_reused", false },
	[ERR_UNAVAILABLE] = { 503, "unavailable", true },
	[ERR_SPOOL_FULL] = { 507, "spool_full", true },
	[ERR_URI_TOO_LONG] = { 414, "uri_too_long", false },
	[ERR_HEADERS_TOO_LARGE] = { 431, "header_fields_too_large", false },
	[ERR_TOO_MANY_CONNECTIONS] = { 503, "unavailable", true },
	[ERR_INTERNAL] = { 500, "internal", false },
};

/* What a single message Kafka rejected answers (a batch says it per record). */
static enum http_err kafka_rejection(int kafka_err)
{
	switch (kafka_err) {
	case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
	case RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC:
		return ERR_UNKNOWN_TOPIC;
	case RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE:
	case RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE:
		return ERR_PAYLOAD_TOO_LARGE;
	case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
		return ERR_FORBIDDEN;
	default:
		return ERR_BAD_REQUEST;
	}
}

/* --- request state ------------------------------------------------------- */

/* ROUTE_V2 and ROUTE_V3: Kafka REST Proxy's produce paths, for its clients. */
enum route { ROUTE_NONE, ROUTE_OPS, ROUTE_PUBLISH, ROUTE_BATCH, ROUTE_V2, ROUTE_V3,
	     ROUTE_CONTROL };

/* The shape of error bodies: ackd's, or REST Proxy's {"error_code":…,"message":…}. */
enum err_shape { SHAPE_NATIVE, SHAPE_RP_V2, SHAPE_RP_V3 };
/*
 * ST_VERDICT: the records' fate is known (durable, or Kafka's verdicts are
 * in); the request thread builds the answer. Threads that resume a request
 * only store what they learned: a batch's answer is a thousand JSON objects,
 * and the spool writer and the kafka loop have better things to do.
 */
enum req_state { ST_NEW, ST_BODY, ST_WAIT, ST_TOPIC_CHECKED, ST_VERDICT, ST_ANSWER };

struct answer {
	unsigned status;
	char *body; /* malloc'ed; JSON unless content_type says otherwise */
	const char *content_type;
	const char *allow;
	bool retry_after;
	bool www_authenticate;
	bool close; /* close the connection after the answer */
	enum err_shape shape;
	bool replayed; /* Idempotent-Replayed: true */
};

struct http;

struct req {
	struct http *h;
	struct MHD_Connection *conn;
	enum route route;
	enum req_state state;

	char topic[256];
	enum conf_ack ack;
	int32_t partition;
	char cluster_id[256];                 /* ROUTE_V3: as the path named it */
	enum publish_rp_format rp_format;     /* ROUTE_V2 */
	struct publish_rp_v3_types rp_types;  /* ROUTE_V3 */

	struct conn *c; /* the connection's, borrowed; NULL if libmicrohttpd had none */
	bool bad_path;  /* the raw path holds or escapes a control character */
	bool escaped_slash; /* the raw path holds %2F: a '/' inside one of its names */
	const char *raw_uri; /* the request target in libmicrohttpd's buffer */
	size_t raw_uri_len;  /* its length up to the first NUL, as first seen */
	char *body;     /* grows as bytes arrive; pub points into it: freed with pub */
	size_t len, cap;
	uint64_t declared; /* Content-Length, when sent and within limits; else 0 */
	size_t reserved;   /* bytes of the body budget held until the answer */
	bool too_large;    /* over limits.max_body_bytes: read on, keep nothing */
	bool over_budget;  /* over limits.max_inflight_body_bytes: the same, 503 */

	enum topic_state topic_state;
	bool rechecked;    /* Kafka was asked again about a partition beyond the cached count */
	struct publish_req *pub;
	struct producer_waiter waiter;
	struct producer_result *results;

	/* Idempotency-Key: NULL key for a request without one (see idem_gate()). */
	const char *idem_key;     /* the header's value, in libmicrohttpd's buffer */
	char idem_scope[40];      /* "tcp", "unix" or "token:" and 16 hex digits */
	unsigned char idem_hash[SPOOL_KEY_HASH_LEN];
	struct idem_entry *idem_entry; /* reserved until the spool commits or fails */
	char *idem_ids;           /* the records' ids, back to back, for the KEY record */
	struct producer_result *replay_wait; /* a replay's waiter's results */
	uint64_t *replay_seqs;    /* per record: the sequence waited for, 0 when not */

	char sub[256];            /* ROUTE_CONTROL: the subscription named */
	struct control_cmd *cmd;  /* ROUTE_CONTROL: its command */

	struct answer answer;
};

/*
 * One open connection (libmicrohttpd's socket context), on the list of its
 * server while it is open. deadline_ms is when the sweeper shuts it down
 * (0: never); the thread running the connection sets it, the sweeper reads it.
 */
struct conn {
	struct conn *prev, *next; /* under http.conns_mu */
	int fd;
	atomic_int_fast64_t deadline_ms;
	/*
	 * The request on_uri() made last, until handle() or completed() sees
	 * it. libmicrohttpd 0.9.75 can give up on a request between the two
	 * (a target with more arguments than its block holds), close the
	 * connection and never hand it back; the connection's end frees it.
	 */
	struct req *unhandled;
};

/* One libmicrohttpd server of a listener (see "Two servers per listener"). */
struct server {
	struct http *h;
	struct MHD_Daemon *mhd;
	int limit;       /* connections it may hold */
	atomic_int open; /* handed over by the acceptor, not yet closed */
};

struct listener {
	int fd;                /* the listening socket, -1 once closed */
	int wake;              /* eventfd: the acceptor stops when it is written */
	pthread_t acceptor;
	bool acceptor_running;
	struct server fast;    /* poll; mhd is NULL on a listener open to other hosts */
	struct server wide;    /* epoll */
	int64_t accept_warned_ms;
};

struct http {
	struct http_deps deps;
	struct idem *own_idem; /* made by http_start() when deps.idem was NULL */
	struct listener tcp, unix_;
	char *unix_path;
	atomic_bool closing;
	atomic_int suspended;
	atomic_int connections; /* handed to libmicrohttpd, not yet closed; both listeners */
	atomic_size_t inflight; /* bytes of the body budget held */

	pthread_mutex_t conns_mu;
	struct conn *conns;
	pthread_t sweeper;
	bool sweeper_running;
	bool sweeper_stop; /* under conns_mu */
	pthread_cond_t sweeper_cond;
};

/* Idempotency-Key, defined below. */
static int idem_header(struct req *r);
static int idem_gate(struct req *r);
static int idem_add_key(struct req *r, struct spool_batch *b);
static void idem_spooled(struct req *r, enum spool_err err, uint64_t first_seq);

/* --- answers ------------------------------------------------------------- */

/* A 500 with a fixed body, for an answer that could not be built. */
static void set_internal(struct answer *a)
{
	free(a->body);
	*a = (struct answer){ .status = 500, .body = xstrdup(INTERNAL_BODY) };
}

/*
 * The answer's body from j (its reference is taken; NULL is fine). Failing to
 * encode (out of memory, or bytes jansson refuses) is never fatal: the
 * answer becomes a 500 and the reason is logged.
 */
static void set_body(struct answer *a, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;

	json_decref(j);
	if (!s) {
		log_warnx("http: cannot encode a %u answer; answering 500", a->status);
		set_internal(a);
		return;
	}
	free(a->body);
	a->body = s;
}

static void set_error(struct answer *a, enum http_err e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The message may quote the client: it is cut and cleaned by utf8_clean(). */
static void set_error(struct answer *a, enum http_err e, const char *fmt, ...)
{
	char raw[1024], msg[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	utf8_clean(msg, sizeof(msg), raw, n < 0 ? 0 : strnlen(raw, sizeof(raw)));
	a->status = errors[e].status;
	a->retry_after = errors[e].retry_after;
	a->www_authenticate = e == ERR_UNAUTHORIZED;
	a->close = e == ERR_TOO_MANY_CONNECTIONS;
	switch (a->shape) {
	case SHAPE_RP_V2:
		set_body(a, json_pack("{s:i,s:s}", "error_code",
		    errors[e].rp_code ? errors[e].rp_code : (int)errors[e].status, "message", msg));
		break;
	case SHAPE_RP_V3:
		set_body(a, json_pack("{s:i,s:s}", "error_code", (int)errors[e].status, "message",
		    msg));
		break;
	case SHAPE_NATIVE:
		set_body(a, json_pack("{s:{s:s,s:s}}", "error", "code", errors[e].code, "message",
		    msg));
		break;
	}
}

static enum MHD_Result queue_answer(struct MHD_Connection *conn, struct answer *a)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *body = a->body;

	a->body = NULL;
	resp = MHD_create_response_from_buffer(strlen(body), body, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE,
	    a->content_type ? a->content_type : "application/json");
	if (a->allow)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, a->allow);
	if (a->retry_after) {
		char secs[16];
		snprintf(secs, sizeof(secs), "%d", RETRY_AFTER_S);
		MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs);
	}
	if (a->www_authenticate)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (a->close)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
	if (a->replayed)
		MHD_add_response_header(resp, "Idempotent-Replayed", "true");
	ret = MHD_queue_response(conn, a->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

static void suspend(struct req *r)
{
	r->state = ST_WAIT;
	atomic_fetch_add(&r->h->suspended, 1);
	MHD_suspend_connection(r->conn);
}

/* Called by whichever thread finished the request's work. */
static void resume(struct req *r, enum req_state next)
{
	struct http *h = r->h;

	r->state = next;
	MHD_resume_connection(r->conn);
	atomic_fetch_sub(&h->suspended, 1);
}

/*
 * Answers to native publishes are printed directly, without jansson's
 * objects and allocations (a batch of 1,000 records has 1,000 entries):
 * ids are Crockford base32 and topics were checked against [a-zA-Z0-9._-],
 * so neither needs escaping; the only other text is librdkafka's error
 * string, which put_ascii() escapes.
 */
static char *put(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

#define PUT(p, lit) put((p), (lit), sizeof(lit) - 1)

/* s as the inside of a JSON string: at most 6 bytes for each of s's. */
static char *put_ascii(char *p, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			p += sprintf(p, "\\u%04x", c);
		} else {
			*p++ = c < 0x80 ? (char)c : '?'; /* librdkafka's texts are ASCII */
		}
	}
	return p;
}

/* The longest entry without its id, topic and error text. */
#define RESULT_FIXED sizeof("{\"id\":\"\",\"status\":\"delivered\",\"topic\":\"\"," \
    "\"partition\":-2147483648,\"offset\":-9223372036854775808}")

static const char *result_error(const struct producer_result *res)
{
	return res->error ? res->error : "rejected permanently";
}

/* The bytes put_result() may write for record i. */
static size_t result_room(const struct req *r, size_t i)
{
	const struct producer_result *res = r->results ? &r->results[i] : NULL;
	size_t room = RESULT_FIXED + PUBLISH_ID_LEN + strlen(r->topic);

	if (res && res->outcome == PRODUCER_FAILED)
		room += 6 * strlen(result_error(res));
	return room;
}

/* One record's entry, the single answer or an element of "results", at p. */
static char *put_result(char *p, const struct req *r, size_t i)
{
	const struct producer_result *res = r->results ? &r->results[i] : NULL;

	p = PUT(p, "{\"id\":\"");
	p = put(p, r->pub->ids[i], strnlen(r->pub->ids[i], PUBLISH_ID_LEN));
	if (res && res->outcome == PRODUCER_DELIVERED)
		p = PUT(p, "\",\"status\":\"delivered\",\"topic\":\"");
	else if (res && res->outcome == PRODUCER_FAILED)
		p = PUT(p, "\",\"status\":\"failed\",\"topic\":\"");
	else
		p = PUT(p, "\",\"status\":\"spooled\",\"topic\":\"");
	p = put(p, r->topic, strlen(r->topic));
	if (res && res->outcome == PRODUCER_DELIVERED) {
		p = PUT(p, "\",\"partition\":");
		p = put_int64(p, res->partition);
		p = PUT(p, ",\"offset\":");
		p = put_int64(p, res->offset);
		return PUT(p, "}");
	}
	if (res && res->outcome == PRODUCER_FAILED) {
		p = PUT(p, "\",\"error\":\"");
		p = put_ascii(p, result_error(res));
	}
	return PUT(p, "\"}");
}

/* A single publish's answer. */
static char *single_json(const struct req *r)
{
	char *body = xmalloc(result_room(r, 0) + 1);

	*put_result(body, r, 0) = '\0';
	return body;
}

/* A batch's answer: {"results":[...]}, an entry for every record, in order. */
static char *batch_json(const struct req *r)
{
	size_t room = sizeof("{\"results\":[]}");
	char *body, *p;

	for (size_t i = 0; i < r->pub->n; i++)
		room += result_room(r, i) + 1;
	p = body = xmalloc(room);
	p = PUT(p, "{\"results\":[");
	for (size_t i = 0; i < r->pub->n; i++) {
		if (i > 0)
			*p++ = ',';
		p = put_result(p, r, i);
	}
	p = PUT(p, "]}");
	*p = '\0';
	return body;
}

/*
 * REST Proxy v2's answer: one offsets entry per record, in order. Delivered:
 * its partition and offset. Durable and not yet acknowledged (ack=spool, or
 * publish.ack_timeout_ms passed): partition and offset null, and the answer
 * is 202. Failed at Kafka for good: partition and offset null, REST Proxy's
 * error_code (40301 not authorized, else 50002 Kafka error) and the reason;
 * as with REST Proxy, such entries do not change the status.
 */
static void set_rp_v2_answer(struct req *r)
{
	size_t pending = 0;
	json_t *offsets = json_array();

	for (size_t i = 0; offsets && i < r->pub->n; i++) {
		const struct producer_result *res = r->results ? &r->results[i] : NULL;
		json_t *e;

		if (res && res->outcome == PRODUCER_DELIVERED) {
			e = json_pack("{s:i,s:I,s:n,s:n}", "partition", (int)res->partition, "offset",
			    (json_int_t)res->offset, "error_code", "error");
		} else if (res && res->outcome == PRODUCER_FAILED) {
			int code = res->kafka_err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ?
			    40301 : 50002;
			e = json_pack("{s:n,s:n,s:i,s:s}", "partition", "offset", "error_code", code,
			    "error", result_error(res));
		} else {
			e = json_pack("{s:n,s:n,s:n,s:n}", "partition", "offset", "error_code",
			    "error");
			pending++;
		}
		if (json_array_append_new(offsets, e) < 0) {
			json_decref(offsets);
			offsets = NULL;
		}
	}
	r->answer.status = pending ? 202 : 200;
	set_body(&r->answer, offsets ? json_pack("{s:o,s:n,s:n}", "offsets", offsets,
	    "key_schema_id", "value_schema_id") : NULL);
}

/* ms since the epoch as RFC 3339 in UTC, milliseconds only when not zero. */
static void rfc3339(int64_t ms, char *buf, size_t len)
{
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&secs, &tm);
	n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
	if (ms % 1000)
		snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
	else
		snprintf(buf + n, len - n, "Z");
}

/*
 * REST Proxy v3's answer for its one record: 200 with the partition and
 * offset once Kafka acknowledged it, 202 with both null while it is durable
 * and not yet acknowledged; a record Kafka refused for good gets the error a
 * native single publish gets, in the v3 shape.
 */
static void set_rp_v3_answer(struct req *r)
{
	const struct producer_result *res = r->results;
	const struct spool_msg *m = &r->pub->msgs[0];
	bool delivered = res && res->outcome == PRODUCER_DELIVERED;
	json_t *key, *value, *partition, *offset;
	char ts[64];

	if (res && res->outcome == PRODUCER_FAILED) {
		set_error(&r->answer, kafka_rejection(res->kafka_err),
		    "the record was rejected permanently: %s; it was moved to the spool's failed/ "
		    "area",
		    res->error);
		return;
	}
	rfc3339(m->timestamp_ms, ts, sizeof(ts));
	key = r->rp_types.key ? json_pack("{s:s,s:I}", "type", r->rp_types.key, "size",
	    (json_int_t)m->key_len) : json_null();
	value = json_pack("{s:s,s:I}", "type", r->rp_types.value, "size", (json_int_t)m->value_len);
	partition = delivered ? json_integer(res->partition) : json_null();
	offset = delivered ? json_integer(res->offset) : json_null();
	r->answer.status = delivered ? 200 : 202;
	set_body(&r->answer, json_pack("{s:i,s:s,s:s,s:o,s:o,s:s,s:o,s:o}", "error_code",
	    (int)r->answer.status, "cluster_id", r->cluster_id, "topic_name", r->topic,
	    "partition_id", partition, "offset", offset, "timestamp", ts, "key", key, "value",
	    value));
}

/* The answer once the records are durable and Kafka said what it said. */
static void set_publish_answer(struct req *r)
{
	size_t delivered = 0, failed = 0;

	if (r->route == ROUTE_V2) {
		set_rp_v2_answer(r);
		return;
	}
	if (r->route == ROUTE_V3) {
		set_rp_v3_answer(r);
		return;
	}

	for (size_t i = 0; r->results && i < r->pub->n; i++) {
		delivered += r->results[i].outcome == PRODUCER_DELIVERED;
		failed += r->results[i].outcome == PRODUCER_FAILED;
	}
	if (r->route == ROUTE_PUBLISH) {
		if (failed) {
			set_error(&r->answer, kafka_rejection(r->results[0].kafka_err),
			    "the message was rejected permanently: %s; it was moved to the spool's "
			    "failed/ area",
			    r->results[0].error);
			return;
		}
		r->answer.status = delivered ? 200 : 202;
		r->answer.body = single_json(r);
		return;
	}
	r->answer.status = failed ? 207 : delivered == r->pub->n ? 200 : 202;
	r->answer.body = batch_json(r);
}

/* Kafka loop: every record has a verdict, or the deadline passed. */
static void on_kafka_done(struct producer_waiter *w)
{
	struct req *r = w->arg;

	resume(r, ST_VERDICT);
}

/* Spool writer: the batch is durable (or failed). */
static void on_spooled(void *arg, enum spool_err err, uint64_t first_seq)
{
	struct req *r = arg;

	idem_spooled(r, err, first_seq);
	switch (err) {
	case SPOOL_OK:
		break;
	case SPOOL_EFULL:
		set_error(&r->answer, ERR_SPOOL_FULL, "the spool is full; retry later");
		resume(r, ST_ANSWER);
		return;
	case SPOOL_EIO:
		set_error(&r->answer, ERR_UNAVAILABLE, "the spool cannot be written; retry later");
		resume(r, ST_ANSWER);
		return;
	case SPOOL_ECLOSED:
		set_error(&r->answer, ERR_UNAVAILABLE, "ackd is shutting down");
		resume(r, ST_ANSWER);
		return;
	}
	metrics_publish_records(r->pub->n);
	if (r->ack == CONF_ACK_SPOOL) {
		resume(r, ST_VERDICT);
		return;
	}
	r->waiter.first_seq = first_seq;
	r->waiter.n = r->pub->n;
	r->waiter.deadline_ms = now_ms() + r->h->deps.conf->publish.ack_timeout_ms;
	r->waiter.results = r->results;
	r->waiter.done = on_kafka_done;
	r->waiter.arg = r;
	/* From here the kafka loop owns r. */
	producer_wait(r->h->deps.producer, &r->waiter);
}

/* Topics thread: Kafka said whether the topic exists. */
static void on_topic(void *arg, enum topic_state st, int partitions)
{
	struct req *r = arg;

	(void)partitions;
	/* Asked again (advance()) without an answer: the cached count stands. */
	if (r->rechecked && st != TOPIC_EXISTS && st != TOPIC_MISSING)
		st = TOPIC_EXISTS;
	r->topic_state = st;
	resume(r, ST_TOPIC_CHECKED);
}

/* --- request parsing ----------------------------------------------------- */

struct hdr_list {
	struct publish_http_hdr v[MAX_REQUEST_HEADERS]; /* begin() refused more */
	size_t n;
};

static enum MHD_Result collect_header(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct hdr_list *l = cls;

	(void)kind;
	if (l->n == MAX_REQUEST_HEADERS)
		return MHD_NO;
	l->v[l->n].name = key;
	l->v[l->n].value = value ? value : "";
	l->n++;
	return MHD_YES;
}

static bool token_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;

	/* Constant time in the length of the configured token. */
	for (size_t i = 0; i < lb; i++)
		diff |= (unsigned char)(b[i] ^ (i < la ? a[i] : 0));
	return diff == 0;
}

/* The configured token the request's Authorization: Bearer names, or NULL. */
static const struct conf_token *request_token(struct req *r)
{
	const struct conf *conf = r->h->deps.conf;
	const struct conf_token *match = NULL;
	const char *auth;

	auth = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
		/* Compare against every token, so timing tells nothing. */
		for (size_t i = 0; i < conf->auth.ntokens; i++)
			if (token_equal(auth + 7, conf->auth.tokens[i].token) && !match)
				match = &conf->auth.tokens[i];
	}
	return match;
}

/* 401/403 from auth.tokens and publish.topics; 0 when allowed. */
static int check_access(struct req *r)
{
	const struct conf *conf = r->h->deps.conf;
	const struct conf_token *match;

	if (conf->auth.ntokens > 0) {
		match = request_token(r);
		if (!match) {
			set_error(&r->answer, ERR_UNAUTHORIZED,
			    "a valid Authorization: Bearer token is required");
			return -1;
		}
		if (!publish_topic_allowed(&match->topics, r->topic)) {
			set_error(&r->answer, ERR_FORBIDDEN, "this token may not publish to topic %s",
			    r->topic);
			return -1;
		}
	}
	if (!publish_topic_allowed(&conf->publish.topics, r->topic)) {
		set_error(&r->answer, ERR_FORBIDDEN, "publishing to topic %s is not allowed",
		    r->topic);
		return -1;
	}
	return 0;
}

/* --- Idempotency-Key ------------------------------------------------------ */

/*
 * A request with an Idempotency-Key (docs/http-api.md) takes these
 * steps on top of the ordinary ones; a request without one takes none of
 * them and costs one header lookup:
 *
 *   idem_header()   with the headers: a key that is not 1-255 printable
 *                   ASCII characters is a 400; the scope is noted (the
 *                   token, as a hash: never the secret; else the listener);
 *   idem_gate()     after every other check, before the spool: the key is
 *                   looked up with a SHA-256 of what the request publishes.
 *                   Unknown: reserved, and the request goes on. Known for
 *                   the same request: the first request's answer (its ids,
 *                   the current status) with Idempotent-Replayed: true, and
 *                   nothing is written. Known for another request: 422.
 *                   Still being written: 409 with Retry-After;
 *   idem_add_key()  a KEY record ends the spool batch: durable in the same
 *                   write as the records;
 *   idem_spooled()  the spool writer's verdict: committed (from now on the
 *                   key is answered with replays) or failed (the key is
 *                   forgotten: a non-2xx does not use it up).
 *
 * A replay answers a record Kafka rejected as the first request would be
 * answered now ("failed" in a batch's 207, a single publish's 4xx), never
 * 2xx; a key whose records Kafka all rejected is forgotten by the producer
 * (idem_failed()), and at start by idem_load_done() from failed/.
 */

static const char HEX[] = "0123456789abcdef";

static int idem_header(struct req *r)
{
	const struct conf_token *tok;
	const union MHD_ConnectionInfo *info;

	r->idem_key = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Idempotency-Key");
	if (!r->idem_key)
		return 0;
	if (!idem_key_valid(r->idem_key)) {
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "Idempotency-Key must be 1-%d printable ASCII characters", IDEM_KEY_MAX);
		return -1;
	}
	if (r->h->deps.conf->auth.ntokens > 0 && (tok = request_token(r))) {
		unsigned char d[SHA256_LEN];
		sha256(tok->token, strlen(tok->token), d);
		memcpy(r->idem_scope, "token:", 6);
		for (int i = 0; i < 8; i++) {
			r->idem_scope[6 + 2 * i] = HEX[d[i] >> 4];
			r->idem_scope[7 + 2 * i] = HEX[d[i] & 15];
		}
		r->idem_scope[22] = '\0';
	} else {
		/* The listener, by the family of the connection's own address. */
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		info = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		ss.ss_family = AF_UNSPEC;
		if (!info || getsockname(info->connect_fd, (struct sockaddr *)&ss, &sl) < 0)
			ss.ss_family = AF_UNSPEC;
		snprintf(r->idem_scope, sizeof(r->idem_scope), "%s",
		    ss.ss_family == AF_UNIX ? "unix" : "tcp");
	}
	return 0;
}

/*
 * Kafka loop: the replay's records that were still in the spool have their
 * verdicts, or the deadline passed. The waiter covers the sequences
 * w->first_seq .. + w->n; record i waited for replay_seqs[i] among them.
 */
static void on_replay_kafka_done(struct producer_waiter *w)
{
	struct req *r = w->arg;

	for (size_t i = 0; i < r->pub->n; i++) {
		uint64_t seq = r->replay_seqs[i];
		if (seq && seq - w->first_seq < w->n &&
		    r->replay_wait[seq - w->first_seq].outcome != PRODUCER_PENDING)
			r->results[i] = r->replay_wait[seq - w->first_seq]; /* delivered or failed */
	}
	resume(r, ST_VERDICT);
}

static int idem_gate(struct req *r)
{
	struct idem *t = r->h->deps.idem;
	struct idem_replay rp;
	uint64_t lo = UINT64_MAX, hi = 0;

	idem_request_hash(r->pub->msgs, r->pub->n, r->idem_hash);
	switch (idem_begin(t, r->idem_scope, r->topic, r->idem_key, r->idem_hash, wall_ms(),
	    &r->idem_entry, &rp)) {
	case IDEM_NEW:
		return 0;
	case IDEM_IN_USE:
		set_error(&r->answer, ERR_KEY_IN_USE,
		    "a request with this Idempotency-Key is being written; retry later");
		r->state = ST_ANSWER;
		return -1;
	case IDEM_REUSED:
		set_error(&r->answer, ERR_KEY_REUSED,
		    "this Idempotency-Key was used for a different request to topic %s", r->topic);
		r->state = ST_ANSWER;
		return -1;
	case IDEM_NOMEM:
		set_error(&r->answer, ERR_UNAVAILABLE, "out of memory; retry later");
		r->state = ST_ANSWER;
		return -1;
	case IDEM_REPLAY:
		break;
	}
	/* The same request: the same number of records, answered with the first one's ids. */
	r->answer.replayed = true;
	r->results = xcalloc(r->pub->n, sizeof(*r->results));
	r->replay_seqs = xcalloc(r->pub->n, sizeof(*r->replay_seqs));
	for (size_t i = 0; i < r->pub->n && i < rp.n; i++) {
		const struct idem_rec *x = &rp.recs[i];
		memcpy(r->pub->ids[i], x->id, sizeof(r->pub->ids[i]));
		if (x->delivered) {
			r->results[i] = (struct producer_result){ .outcome = PRODUCER_DELIVERED,
				.partition = x->partition, .offset = x->offset };
		} else if (x->failed) {
			/* In failed/: the answer the first request would get now. */
			r->results[i] = (struct producer_result){ .outcome = PRODUCER_FAILED,
				.partition = -1, .offset = -1, .kafka_err = x->kafka_err,
				.error = x->kafka_err ? rd_kafka_err2str(x->kafka_err) :
				    "rejected before ackd restarted" };
		} else if (r->ack == CONF_ACK_KAFKA && spool_seq_live(r->h->deps.spool, x->seq)) {
			/* Still in the spool: wait for Kafka, as the first request did. */
			r->replay_seqs[i] = x->seq;
			lo = x->seq < lo ? x->seq : lo;
			hi = x->seq > hi ? x->seq : hi;
		}
		/* Else acknowledged before a restart: 202, nothing known. */
	}
	idem_replay_free(&rp);
	if (lo > hi) {
		r->state = ST_VERDICT; /* nothing to wait for */
		return -1;
	}
	r->replay_wait = xcalloc((size_t)(hi - lo + 1), sizeof(*r->replay_wait));
	r->waiter.first_seq = lo;
	r->waiter.n = (size_t)(hi - lo + 1);
	r->waiter.deadline_ms = now_ms() + r->h->deps.conf->publish.ack_timeout_ms;
	r->waiter.results = r->replay_wait;
	r->waiter.done = on_replay_kafka_done;
	r->waiter.arg = r;
	r->waiter.overlaps = true; /* the first request may still wait for them too */
	suspend(r);
	producer_wait(r->h->deps.producer, &r->waiter);
	return 1;
}

static int idem_add_key(struct req *r, struct spool_batch *b)
{
	struct spool_key k = {
		/* Now, not the records' timestamp: a REST Proxy v3 record carries its client's. */
		.timestamp_ms = wall_ms(),
		.nrecs = (uint32_t)r->pub->n,
		.scope = r->idem_scope,
		.scope_len = strlen(r->idem_scope),
		.topic = r->topic,
		.topic_len = strlen(r->topic),
		.key = r->idem_key,
		.key_len = strlen(r->idem_key),
	};

	memcpy(k.hash, r->idem_hash, sizeof(k.hash));
	r->idem_ids = xcalloc(r->pub->n, SPOOL_KEY_ID_LEN);
	for (size_t i = 0; i < r->pub->n; i++)
		memcpy(r->idem_ids + i * SPOOL_KEY_ID_LEN, r->pub->ids[i], SPOOL_KEY_ID_LEN);
	k.ids = r->idem_ids;
	if (spool_batch_add_key(b, &k) < 0) {
		log_warnx("http: the Idempotency-Key of a request to %s cannot be added to its "
		    "spool batch; nothing of the request is written", r->topic);
		return -1;
	}
	return 0;
}

/* The spool writer's verdict (or a refusal before it): the key is kept or forgotten. */
static void idem_spooled(struct req *r, enum spool_err err, uint64_t first_seq)
{
	if (!r->idem_entry)
		return;
	if (err == SPOOL_OK)
		idem_commit(r->h->deps.idem, r->idem_entry, r->idem_ids, r->pub->n, first_seq);
	else
		idem_abort(r->h->deps.idem, r->idem_entry);
	r->idem_entry = NULL;
}

static bool is_json(const char *ctype)
{
	size_t n = strlen("application/json");

	return ctype && strncasecmp(ctype, "application/json", n) == 0 &&
	    (ctype[n] == '\0' || ctype[n] == ';' || ctype[n] == ' ');
}

/* --- operations endpoints --------------------------------------------------- */

static void get_healthz(struct answer *a)
{
	char why[256];

	if (status_alive(why, sizeof(why)) == 0) {
		a->status = 200;
		a->body = xstrdup("{\"status\":\"ok\"}");
		return;
	}
	a->status = 503;
	set_body(a, json_pack("{s:s,s:s}", "status", "stuck", "reason", why));
}

static void get_readyz(struct answer *a)
{
	json_t *reasons;

	if (status_ready(&reasons) == 0) {
		json_decref(reasons);
		a->status = 200;
		a->body = xstrdup("{\"status\":\"ready\"}");
		return;
	}
	a->status = 503;
	a->retry_after = true;
	set_body(a, json_pack("{s:s,s:o}", "status", "not_ready", "reasons", reasons));
}

static bool stopping(struct answer *a)
{
	if (!status_is_stopping())
		return false;
	set_error(a, ERR_UNAVAILABLE, "ackd is shutting down");
	return true;
}

static void get_metrics(struct answer *a)
{
	size_t len;

	if (stopping(a))
		return;
	a->status = 200;
	a->body = status_metrics(&len);
	a->content_type = "text/plain; version=0.0.4; charset=utf-8";
}

static void get_status(struct answer *a)
{
	if (stopping(a))
		return;
	a->status = 200;
	set_body(a, status_json());
}

/*
 * The operations endpoints. Probes are answered whatever the connection
 * count (a full server must still say it is alive); the others need a token
 * when auth.protect_ops is set.
 */
static const struct {
	const char *path;
	void (*get)(struct answer *a);
	bool probe;
} ops[] = {
	{ "/healthz", get_healthz, true },
	{ "/readyz", get_readyz, true },
	{ "/metrics", get_metrics, false },
	{ "/v1/status", get_status, false },
};

struct size_count {
	size_t bytes, count;
};

static enum MHD_Result count_value(void *cls, enum MHD_ValueKind kind, const char *key,
    const char *value)
{
	struct size_count *sc = cls;

	(void)kind;
	sc->bytes += strlen(key) + (value ? strlen(value) : 0) + 2;
	sc->count++;
	return MHD_YES;
}

/* limits.max_connections: -1 with the answer set. */
static int check_connections(struct req *r)
{
	const struct conf *conf = r->h->deps.conf;

	if (atomic_load(&r->h->connections) > conf->limits.max_connections) {
		set_error(&r->answer, ERR_TOO_MANY_CONNECTIONS,
		    "more than limits.max_connections (%lld) connections are open; retry later",
		    (long long)conf->limits.max_connections);
		return -1;
	}
	return 0;
}

/* The Cookie header's length: libmicrohttpd keeps a copy of it to parse. */
static size_t cookie_header_len(struct req *r)
{
	const char *cookie;
	size_t len;

	if (MHD_lookup_connection_value_n(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_COOKIE,
	    strlen(MHD_HTTP_HEADER_COOKIE), &cookie, &len) != MHD_YES)
		return 0;
	return len;
}

/*
 * limits.max_header_bytes and MAX_REQUEST_HEADERS. libmicrohttpd keeps an
 * entry for each cookie as for each field, and a copy of the Cookie header
 * to parse it, in the same block (start_server()): cookies count as fields,
 * the Cookie header's bytes twice. -1 with the answer set.
 */
static int check_fields(struct req *r, size_t cookie_len)
{
	const struct conf *conf = r->h->deps.conf;
	struct size_count f = { 0, 0 };
	int cookies;

	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_value, &f);
	cookies = MHD_get_connection_values(r->conn, MHD_COOKIE_KIND, NULL, NULL);
	if (cookies > 0)
		f.count += (size_t)cookies;
	f.bytes += cookie_len;
	if (f.count > MAX_REQUEST_HEADERS || (int64_t)f.bytes > conf->limits.max_header_bytes) {
		set_error(&r->answer, ERR_HEADERS_TOO_LARGE,
		    "request headers over the limit: at most %d headers (cookies included) and "
		    "limits.max_header_bytes (%lld bytes)",
		    MAX_REQUEST_HEADERS, (long long)conf->limits.max_header_bytes);
		return -1;
	}
	return 0;
}

/*
 * limits.max_url_bytes, max_header_bytes, and the counts of header fields
 * and query arguments: -1 with the answer set. A request within them leaves
 * room in libmicrohttpd's connection block for its answer (start_server()).
 * The target is measured as sent, where a percent-escape takes three bytes,
 * and decoded (an argument without '=' counts the one it lacks).
 */
static int check_limits(struct req *r, const char *url)
{
	const struct conf *conf = r->h->deps.conf;
	const union MHD_ConnectionInfo *info;
	struct size_count query = { 0, 0 };
	size_t cookie_len = cookie_header_len(r), head;

	MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, count_value, &query);
	if ((int64_t)r->raw_uri_len > conf->limits.max_url_bytes ||
	    (int64_t)(strlen(url) + query.bytes) > conf->limits.max_url_bytes) {
		set_error(&r->answer, ERR_URI_TOO_LONG,
		    "the request target is longer than limits.max_url_bytes (%lld bytes)",
		    (long long)conf->limits.max_url_bytes);
		return -1;
	}
	if (query.count > MAX_QUERY_ARGS) {
		set_error(&r->answer, ERR_URI_TOO_LONG,
		    "the request target has more than %d query arguments", MAX_QUERY_ARGS);
		return -1;
	}
	if (check_fields(r, cookie_len) < 0)
		return -1;
	/*
	 * The head as received, with the copy of its Cookie header: whitespace
	 * and folded lines take room too.
	 */
	info = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
	if (!info)
		return 0;
	head = info->header_size + cookie_len;
	if ((int64_t)head > conf->limits.max_url_bytes + conf->limits.max_header_bytes + HEAD_SLACK) {
		set_error(&r->answer, ERR_HEADERS_TOO_LARGE,
		    "the request head is %zu bytes, more than limits.max_url_bytes and "
		    "limits.max_header_bytes allow", head);
		return -1;
	}
	return 0;
}

/*
 * Trailer fields after a chunked body: refused, whatever they hold. ackd has
 * no use for them, and libmicrohttpd keeps them, whitespace and all, in the
 * block it then builds the answer in. -1 with the answer set.
 */
static int check_trailers(struct req *r)
{
	if (MHD_get_connection_values(r->conn, MHD_FOOTER_KIND, NULL, NULL) <= 0)
		return 0;
	set_error(&r->answer, ERR_HEADERS_TOO_LARGE,
	    "trailer fields after a chunked body are not accepted");
	return -1;
}

static enum MHD_Result count_content_length(void *cls, enum MHD_ValueKind kind,
    const char *key, const char *value)
{
	int *n = cls;

	(void)kind;
	(void)value;
	*n += strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0;
	return MHD_YES;
}

/*
 * More than one Content-Length: libmicrohttpd reads the body by the first and
 * would take the rest as the next request. Where the body ends is not known,
 * so the answer goes out at once and the connection is closed.
 */
static bool content_length_repeated(struct req *r)
{
	int n = 0;

	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, count_content_length, &n);
	return n > 1;
}

/*
 * Whether the Content-Length header is over limits.max_body_bytes: compared
 * as the unsigned number it is (digits only; too many digits is over). Within
 * the limit it is kept in r->declared, which only caps how far the buffer
 * grows ahead of the bytes: nothing is allocated from it.
 */
static bool content_length_over(struct req *r)
{
	uint64_t max = (uint64_t)r->h->deps.conf->limits.max_body_bytes, n = 0;
	const char *v;

	v = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (!v)
		return false;
	for (; *v >= '0' && *v <= '9'; v++) {
		n = n * 10 + (uint64_t)(*v - '0');
		if (n > max)
			return true;
	}
	/* libmicrohttpd refuses anything else itself; it is no size to go by. */
	r->declared = *v == '\0' ? n : 0;
	return false;
}

/* A repeated or too large Content-Length: -1 with the answer set (400 or 413). */
static int check_content_length(struct req *r)
{
	if (content_length_repeated(r)) {
		set_error(&r->answer, ERR_BAD_REQUEST, "more than one Content-Length header");
		r->answer.close = true;
		return -1;
	}
	if (content_length_over(r)) {
		set_error(&r->answer, ERR_PAYLOAD_TOO_LARGE,
		    "the body is larger than limits.max_body_bytes (%lld bytes)",
		    (long long)r->h->deps.conf->limits.max_body_bytes);
		return -1;
	}
	return 0;
}

/* --- the Control API --------------------------------------------------------- */

/* With auth.tokens set, the Control API needs an admin token: -1 with the answer set. */
static int check_admin(struct req *r)
{
	const struct conf_token *t;

	if (r->h->deps.conf->auth.ntokens == 0)
		return 0;
	t = request_token(r);
	if (!t) {
		set_error(&r->answer, ERR_UNAUTHORIZED,
		    "a valid Authorization: Bearer token is required");
		return -1;
	}
	if (!t->admin) {
		set_error(&r->answer, ERR_FORBIDDEN,
		    "the control API needs a token with admin = true");
		return -1;
	}
	return 0;
}

static const struct {
	const char *action;
	enum control_op op;
} control_actions[] = {
	{ "pause", CONTROL_PAUSE },
	{ "resume", CONTROL_RESUME },
	{ "seek", CONTROL_SEEK },
	{ "redrive", CONTROL_REDRIVE },
};

/*
 * GET /v1/subscriptions is answered at once; POST /v1/subscriptions/{name}/
 * {action} reads its body first. 0 to read the body, -1 with the answer set.
 */
static int begin_control(struct req *r, const char *url, const char *method)
{
	const char *name = url + strlen("/v1/subscriptions/"), *slash, *action;
	size_t i, n = sizeof(control_actions) / sizeof(control_actions[0]);

	r->route = ROUTE_CONTROL;
	if (strcmp(url, "/v1/subscriptions") == 0) {
		if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
			set_error(&r->answer, ERR_METHOD_NOT_ALLOWED, "use GET");
			r->answer.allow = "GET, HEAD";
			return -1;
		}
		if (check_admin(r) < 0 || stopping(&r->answer))
			return -1;
		r->answer.status = 200;
		set_body(&r->answer, status_subscriptions());
		return -1;
	}
	slash = strchr(name, '/');
	action = slash ? slash + 1 : "";
	for (i = 0; i < n && strcmp(action, control_actions[i].action) != 0; i++)
		;
	if (!slash || slash == name || (size_t)(slash - name) >= sizeof(r->sub) || i == n) {
		set_error(&r->answer, ERR_NOT_FOUND, "no such path: %s (POST /v1/subscriptions/"
		    "{name}/pause, resume, seek or redrive)", url);
		return -1;
	}
	if (strcmp(method, "POST") != 0) {
		set_error(&r->answer, ERR_METHOD_NOT_ALLOWED, "use POST");
		r->answer.allow = "POST";
		return -1;
	}
	if (check_admin(r) < 0)
		return -1;
	memcpy(r->sub, name, (size_t)(slash - name));
	r->sub[slash - name] = '\0';
	if (check_content_length(r) < 0)
		return -1;
	r->cmd = control_cmd_new(control_actions[i].op);
	return 0;
}

/* The subscription's thread answered (or the one that stopped it). */
static void control_done(struct control_cmd *cmd)
{
	struct req *r = cmd->arg;

	r->answer.status = cmd->status;
	set_body(&r->answer, cmd->answer);
	cmd->answer = NULL;
	resume(r, ST_ANSWER);
}

/* The body is in: parse it and hand the command to its subscription. */
static void control_advance(struct req *r)
{
	struct control_cmd *cmd = r->cmd;
	char err[512];
	int rc = 0;

	r->state = ST_ANSWER;
	if (cmd->op == CONTROL_SEEK)
		rc = control_parse_seek(r->body, r->len, cmd, err, sizeof(err));
	else if (cmd->op == CONTROL_REDRIVE)
		rc = control_parse_redrive(r->body, r->len, cmd, err, sizeof(err));
	if (rc < 0) {
		set_error(&r->answer, ERR_BAD_REQUEST, "%s", err);
		return;
	}
	cmd->done = control_done;
	cmd->arg = r;
	suspend(r);
	if (status_control(r->sub, cmd) < 0) {
		set_error(&r->answer, ERR_NOT_FOUND, "no subscription named %s", r->sub);
		resume(r, ST_ANSWER);
	}
}

/*
 * The publish route of url and where its topic is in it: /v1/topics/{t},
 * /v1/topics/{t}/records, REST Proxy's /topics/{t} (v2) and
 * /v3/clusters/{c}/topics/{t}/records (v3, any cluster id). -1 with a 404
 * for any other path.
 */
static int route_publish(struct req *r, const char *url, const char **topic, size_t *tlen)
{
	const char *rest, *slash;

	if (strncmp(url, "/v1/topics/", strlen("/v1/topics/")) == 0) {
		rest = url + strlen("/v1/topics/");
		slash = strchr(rest, '/');
		if (slash && strcmp(slash, "/records") != 0)
			goto none;
		r->route = slash ? ROUTE_BATCH : ROUTE_PUBLISH;
	} else if (strncmp(url, "/topics/", strlen("/topics/")) == 0) {
		rest = url + strlen("/topics/");
		slash = strchr(rest, '/');
		if (slash)
			goto none; /* /topics/{t}/partitions/{p} is not served */
		r->route = ROUTE_V2;
	} else if (strncmp(url, "/v3/clusters/", strlen("/v3/clusters/")) == 0) {
		const char *c = url + strlen("/v3/clusters/");
		size_t clen;
		char clean[sizeof(r->cluster_id)];

		slash = strchr(c, '/');
		if (!slash || slash == c || strncmp(slash, "/topics/", strlen("/topics/")) != 0)
			goto none;
		clen = (size_t)(slash - c);
		if (clen >= sizeof(r->cluster_id) ||
		    utf8_clean(clean, sizeof(clean), c, clen) != clen || memcmp(clean, c, clen)) {
			set_error(&r->answer, ERR_BAD_REQUEST,
			    "cluster_id: 1-255 bytes of UTF-8 text expected");
			return -1;
		}
		memcpy(r->cluster_id, c, clen);
		r->cluster_id[clen] = '\0';
		rest = slash + strlen("/topics/");
		slash = strchr(rest, '/');
		if (!slash || strcmp(slash, "/records") != 0)
			goto none;
		r->route = ROUTE_V3;
	} else {
		goto none;
	}
	*topic = rest;
	*tlen = slash ? (size_t)(slash - rest) : strlen(rest);
	return 0;
none:
	set_error(&r->answer, ERR_NOT_FOUND, "no such path: %s", url);
	return -1;
}

/* Content-Type of the body: what the route takes; -1 with a 415 set. */
static int check_media_type(struct req *r)
{
	const char *ctype = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
	    MHD_HTTP_HEADER_CONTENT_TYPE);
	char err[256];

	switch (r->route) {
	case ROUTE_BATCH:
		if (is_json(ctype))
			return 0;
		set_error(&r->answer, ERR_UNSUPPORTED_MEDIA_TYPE,
		    "a batch must be sent as Content-Type: application/json");
		return -1;
	case ROUTE_V3:
		if (is_json(ctype))
			return 0;
		set_error(&r->answer, ERR_UNSUPPORTED_MEDIA_TYPE,
		    "a REST Proxy v3 produce request takes Content-Type: application/json");
		return -1;
	case ROUTE_V2:
		if (publish_rp_v2_format(ctype, &r->rp_format, err, sizeof(err)) == 0)
			return 0;
		set_error(&r->answer, ERR_UNSUPPORTED_MEDIA_TYPE, "%s", err);
		return -1;
	default:
		return 0;
	}
}

/*
 * Route the request and check everything known before the body: method,
 * topic, access, query, size, media type. 0 to read the body, -1 with the
 * answer set.
 */
static int begin(struct req *r, const char *url, const char *method)
{
	const struct conf *conf = r->h->deps.conf;
	const char *rest, *v;
	size_t tlen;

	/* REST Proxy's clients get its error shape from the first error on. */
	if (strncmp(url, "/topics/", strlen("/topics/")) == 0) {
		r->answer.shape = SHAPE_RP_V2;
		r->answer.content_type = "application/vnd.kafka.v2+json";
	} else if (strncmp(url, "/v3/", strlen("/v3/")) == 0) {
		r->answer.shape = SHAPE_RP_V3;
	}
	if (check_limits(r, url) < 0)
		return -1;
	if (r->bad_path) {
		set_error(&r->answer, ERR_BAD_REQUEST, "the path holds a control character");
		return -1;
	}
	/*
	 * libmicrohttpd unescapes the path before ackd routes it, so
	 * /v1/topics/orders%2Frecords would be a batch to orders. No name in
	 * ackd's paths (topic, subscription, cluster id) may hold a '/'.
	 */
	if (r->escaped_slash) {
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "the path holds an escaped '/' (%%2F); no name in a path may contain '/'");
		return -1;
	}

	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (strcmp(url, ops[i].path) != 0)
			continue;
		r->route = ROUTE_OPS;
		if (!ops[i].probe && check_connections(r) < 0)
			return -1;
		if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
			set_error(&r->answer, ERR_METHOD_NOT_ALLOWED, "use GET");
			r->answer.allow = "GET, HEAD";
			return -1;
		}
		if (!ops[i].probe && conf->auth.protect_ops && !request_token(r)) {
			set_error(&r->answer, ERR_UNAUTHORIZED,
			    "a valid Authorization: Bearer token is required (auth.protect_ops)");
			return -1;
		}
		ops[i].get(&r->answer);
		return -1;
	}
	if (check_connections(r) < 0)
		return -1;
	if (strcmp(url, "/v1/subscriptions") == 0 || strncmp(url, "/v1/subscriptions/", 18) == 0)
		return begin_control(r, url, method);
	if (route_publish(r, url, &rest, &tlen) < 0)
		return -1;
	if (strcmp(method, "POST") != 0) {
		set_error(&r->answer, ERR_METHOD_NOT_ALLOWED, "use POST");
		r->answer.allow = "POST";
		return -1;
	}
	if (!publish_topic_valid(rest, tlen)) {
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "invalid topic name: 1-249 characters of [a-zA-Z0-9._-], not . or ..");
		return -1;
	}
	memcpy(r->topic, rest, tlen);
	r->topic[tlen] = '\0';
	if (check_access(r) < 0)
		return -1;
	if (idem_header(r) < 0)
		return -1;

	r->ack = conf->publish.ack;
	v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "ack");
	if (v && publish_parse_ack(v, &r->ack) < 0) {
		set_error(&r->answer, ERR_BAD_REQUEST, "ack must be kafka or spool");
		return -1;
	}
	r->partition = -1;
	v = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "partition");
	if (v && publish_parse_partition(v, &r->partition) < 0) {
		set_error(&r->answer, ERR_BAD_REQUEST, "partition must be an integer from 0 to %d",
		    INT32_MAX);
		return -1;
	}
	if (r->route != ROUTE_PUBLISH && (r->partition >= 0 ||
	    MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "key"))) {
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "key and partition of a batch are set per record");
		return -1;
	}
	if (check_content_length(r) < 0)
		return -1;
	return check_media_type(r);
}

/* Take n bytes of limits.max_inflight_body_bytes; false when they are not there. */
static bool budget_take(struct http *h, size_t n)
{
	size_t budget = (size_t)h->deps.conf->limits.max_inflight_body_bytes;
	size_t cur = atomic_load(&h->inflight);

	do {
		if (n > budget - cur)
			return false;
	} while (!atomic_compare_exchange_weak(&h->inflight, &cur, cur + n));
	return true;
}

static void budget_give(struct http *h, size_t n)
{
	atomic_fetch_sub(&h->inflight, n);
}

/* Drop what the body holds and keep reading without keeping. */
static void drop_body(struct req *r)
{
	free(r->body);
	r->body = NULL;
	r->len = r->cap = 0;
	budget_give(r->h, r->reserved);
	r->reserved = 0;
}

/*
 * Append bytes that arrived. The buffer doubles from 4 KiB up to what the
 * bytes need, never past limits.max_body_bytes nor past a Content-Length
 * (which may be a lie, so the bytes decide), and every byte of it is taken
 * from the budget first.
 */
static void take_body(struct req *r, const char *data, size_t size)
{
	size_t max = (size_t)r->h->deps.conf->limits.max_body_bytes;
	size_t want;
	char *nb;

	if (r->too_large || r->over_budget)
		return;
	if (size > max - r->len) {
		r->too_large = true;
		drop_body(r);
		return;
	}
	if (size > r->cap - r->len) {
		want = r->cap ? r->cap : 4096;
		while (want < r->len + size)
			want = want > max / 2 ? max : want * 2;
		if (r->declared >= r->len + size && want > r->declared)
			want = (size_t)r->declared;
		if (!budget_take(r->h, want - r->cap)) {
			r->over_budget = true;
			drop_body(r);
			return;
		}
		nb = realloc(r->body, want);
		if (!nb) {
			budget_give(r->h, want - r->cap);
			log_warnx("http: out of memory for a request body of %zu bytes", want);
			r->over_budget = true;
			drop_body(r);
			return;
		}
		r->reserved += want - r->cap;
		r->body = nb;
		r->cap = want;
	}
	memcpy(r->body + r->len, data, size);
	r->len += size;
}

/* The body of a route other than the single message into messages. */
static int parse_body(struct req *r, int *too_large, int *unsupported, char *err,
    size_t errlen)
{
	const struct conf *conf = r->h->deps.conf;
	const char *body = r->body ? r->body : "";

	switch (r->route) {
	case ROUTE_BATCH:
		return publish_batch(r->topic, body, r->len, conf->limits.max_batch_records,
		    wall_ms(), &r->pub, too_large, err, errlen);
	case ROUTE_V2:
		return publish_rp_v2(r->topic, r->rp_format, body, r->len,
		    conf->limits.max_batch_records, wall_ms(), &r->pub, too_large, err, errlen);
	default:
		return publish_rp_v3(r->topic, body, r->len, wall_ms(), &r->pub, &r->rp_types,
		    too_large, unsupported, err, errlen);
	}
}

/* Turn the request into messages, with its trace context; -1 with the answer set. */
static int parse(struct req *r)
{
	struct hdr_list hdrs; /* only v[0..n) is read: no need to clear all of v */
	char err[512];
	int too_large = 0, unsupported = 0, rc;

	hdrs.n = 0;
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_header, &hdrs);
	if (r->route == ROUTE_PUBLISH) {
		const char *key = NULL;
		size_t key_len = 0;

		if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, "key", 3, &key,
		        &key_len) == MHD_YES && !key)
			key = "";
		rc = publish_single(r->topic, key, key_len, r->partition, hdrs.v, hdrs.n,
		    r->body ? r->body : "", r->len, wall_ms(), &r->pub, &too_large, err,
		    sizeof(err));
	} else {
		rc = parse_body(r, &too_large, &unsupported, err, sizeof(err));
	}
	if (rc < 0) {
		set_error(&r->answer, unsupported ? ERR_UNSUPPORTED_MEDIA_TYPE :
		    too_large ? ERR_PAYLOAD_TOO_LARGE : ERR_BAD_REQUEST, "%s", err);
		return -1;
	}
	if (publish_trace(r->pub, hdrs.v, hdrs.n, &too_large, err, sizeof(err)) < 0) {
		set_error(&r->answer, too_large ? ERR_PAYLOAD_TOO_LARGE : ERR_INTERNAL, "%s", err);
		return -1;
	}
	return 0;
}

/* The first record that names a partition of partitions or beyond; -1: none. */
static ssize_t beyond_partitions(const struct req *r, int partitions)
{
	for (size_t i = 0; i < r->pub->n; i++)
		if (r->pub->msgs[i].partition >= partitions)
			return (ssize_t)i;
	return -1;
}

/* Refuse the request: its record i names a partition the topic does not have. */
static void refuse_partition(struct req *r, size_t i, int partitions)
{
	int32_t p = r->pub->msgs[i].partition;

	if (r->route == ROUTE_BATCH || r->route == ROUTE_V2)
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "records[%zu].partition: topic %s has %d partitions", i, r->topic, partitions);
	else if (r->route == ROUTE_V3)
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "partition_id %d: topic %s has %d partitions", p, r->topic, partitions);
	else
		set_error(&r->answer, ERR_BAD_REQUEST,
		    "partition %d: topic %s has %d partitions", p, r->topic, partitions);
}

/*
 * Hand the records to the spool writer; the connection is suspended. Every
 * record goes into the batch or none is submitted: publish checked that each
 * fits, so a failure here is out of memory or a bug, answered 500.
 */
static void submit(struct req *r)
{
	struct spool_batch *b = spool_batch_new(r->pub->n);
	enum spool_err err;

	for (size_t i = 0; b && i < r->pub->n; i++) {
		if (spool_batch_add(b, &r->pub->msgs[i]) < 0) {
			log_warnx("http: record %zu of %zu for topic %s cannot be added to a spool "
			    "batch; nothing of the request is written", i, r->pub->n, r->topic);
			spool_batch_free(b);
			b = NULL;
		}
	}
	if (b && r->idem_entry && idem_add_key(r, b) < 0) {
		spool_batch_free(b);
		b = NULL;
	}
	if (!b) {
		idem_spooled(r, SPOOL_EIO, 0);
		set_internal(&r->answer);
		r->state = ST_ANSWER;
		return;
	}
	if (r->ack == CONF_ACK_KAFKA)
		r->results = xcalloc(r->pub->n, sizeof(*r->results));
	suspend(r);
	err = spool_submit(r->h->deps.spool, b, on_spooled, r);
	if (err == SPOOL_OK)
		return; /* the writer owns r now */
	idem_spooled(r, err, 0);
	if (err == SPOOL_EFULL)
		set_error(&r->answer, ERR_SPOOL_FULL, "the spool is full; retry later");
	else
		set_error(&r->answer, ERR_UNAVAILABLE, "ackd is shutting down");
	resume(r, ST_ANSWER);
}

/* The body is complete, or the topic check came back: go on as far as we can. */
static void advance(struct req *r)
{
	int partitions = 0;
	ssize_t beyond;

	/* First: once ackd stops, the topics cache and the spool may be gone. */
	if (atomic_load(&r->h->closing)) {
		set_error(&r->answer, ERR_UNAVAILABLE, "ackd is shutting down");
		r->state = ST_ANSWER;
		return;
	}
	if (r->state == ST_BODY) {
		if (check_trailers(r) < 0) {
			r->state = ST_ANSWER;
			return;
		}
		if (r->too_large) {
			set_error(&r->answer, ERR_PAYLOAD_TOO_LARGE,
			    "the body is larger than limits.max_body_bytes (%lld bytes)",
			    (long long)r->h->deps.conf->limits.max_body_bytes);
			r->state = ST_ANSWER;
			return;
		}
		if (r->over_budget) {
			set_error(&r->answer, ERR_UNAVAILABLE,
			    "request bodies in memory are at limits.max_inflight_body_bytes "
			    "(%lld bytes); retry later",
			    (long long)r->h->deps.conf->limits.max_inflight_body_bytes);
			r->state = ST_ANSWER;
			return;
		}
		if (r->route == ROUTE_CONTROL) {
			control_advance(r);
			return;
		}
		if (parse(r) < 0) {
			r->state = ST_ANSWER;
			return;
		}
		/*
		 * A single message's value points into the body (the spool batch
		 * copies it once), so the body, and its budget share, stay until
		 * the answer.
		 */
		r->topic_state = topics_lookup(r->h->deps.topics, r->topic, &partitions);
		if (r->topic_state == TOPIC_UNKNOWN) {
			suspend(r);
			topics_query(r->h->deps.topics, r->topic, on_topic, r);
			return;
		}
	} else {
		topics_lookup(r->h->deps.topics, r->topic, &partitions);
	}
	/* ST_TOPIC_CHECKED, or known from the cache. An unreachable Kafka is no reason
	 * to refuse: the spool keeps the records until it is back (and a topic that
	 * does not exist then ends in failed/). */
	if (r->topic_state == TOPIC_MISSING) {
		set_error(&r->answer, ERR_UNKNOWN_TOPIC, "topic %s does not exist in kafka",
		    r->topic);
		r->state = ST_ANSWER;
		return;
	}
	beyond = r->topic_state == TOPIC_EXISTS ? beyond_partitions(r, partitions) : -1;
	/*
	 * Partitions can be added, and the cache refreshes known topics only
	 * every minute: before refusing a partition beyond its count, Kafka is
	 * asked once more (at most once a second per topic).
	 */
	if (beyond >= 0 && !r->rechecked && topics_recheck(r->h->deps.topics, r->topic)) {
		r->rechecked = true;
		suspend(r);
		topics_query(r->h->deps.topics, r->topic, on_topic, r);
		return;
	}
	if (beyond >= 0) {
		refuse_partition(r, (size_t)beyond, partitions);
		r->state = ST_ANSWER;
		return;
	}
	if (r->idem_key && idem_gate(r) != 0)
		return; /* answered, or a replay waits for Kafka */
	submit(r);
}

/*
 * An answer decided from the headers alone goes out at once only when no body
 * is on its way that we would read: the client waits for 100 Continue, or its
 * Content-Length is over the limit. Otherwise the body is read and dropped
 * first: answering early makes libmicrohttpd stop reading, and a client still
 * writing its body then fails with EPIPE (at once on a Unix socket) instead
 * of reading the answer.
 */
static bool answer_before_body(struct req *r)
{
	if (MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT))
		return true;
	return content_length_repeated(r) || content_length_over(r);
}

/* Queue the request's answer, counting publish answers by status. */
static enum MHD_Result answer(struct req *r)
{
	if (r->route == ROUTE_PUBLISH || r->route == ROUTE_BATCH || r->route == ROUTE_V2 ||
	    r->route == ROUTE_V3)
		metrics_publish_request(r->answer.status);
	return queue_answer(r->conn, &r->answer);
}

/* --- connections and their deadlines -------------------------------------- */

/* When the sweeper closes the connection: ms from now, or 0 for never. */
static void conn_deadline(struct conn *c, int64_t ms)
{
	if (c)
		atomic_store(&c->deadline_ms, ms ? now_ms() + ms : 0);
}

static void req_free(struct http *h, struct req *r)
{
	if (r->c && r->c->unhandled == r)
		r->c->unhandled = NULL;
	budget_give(h, r->reserved);
	publish_req_free(r->pub);
	control_cmd_free(r->cmd);
	free(r->results);
	free(r->idem_ids);
	free(r->replay_wait);
	free(r->replay_seqs);
	free(r->body);
	free(r->answer.body);
	free(r);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
    enum MHD_ConnectionNotificationCode toe)
{
	struct server *srv = cls;
	struct http *h = srv->h;
	const union MHD_ConnectionInfo *info;
	struct conn *c;

	if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
		info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		c = xcalloc(1, sizeof(*c));
		c->fd = info ? info->connect_fd : -1;
		conn_deadline(c, h->deps.conf->limits.header_timeout_ms);
		pthread_mutex_lock(&h->conns_mu);
		c->next = h->conns;
		if (h->conns)
			h->conns->prev = c;
		h->conns = c;
		pthread_mutex_unlock(&h->conns_mu);
		*socket_context = c;
		return;
	}
	atomic_fetch_sub(&h->connections, 1);
	atomic_fetch_sub(&srv->open, 1);
	c = *socket_context;
	if (!c)
		return;
	/* libmicrohttpd closes the socket after this: the sweeper must be done with it. */
	pthread_mutex_lock(&h->conns_mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		h->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	pthread_mutex_unlock(&h->conns_mu);
	if (c->unhandled)
		req_free(h, c->unhandled);
	free(c);
	*socket_context = NULL;
}

/* Shut down the sockets of connections past their deadline. */
static void *sweeper_main(void *arg)
{
	struct http *h = arg;
	const struct conf *conf = h->deps.conf;
	int64_t tick = conf->limits.header_timeout_ms < conf->limits.body_timeout_ms ?
	    conf->limits.header_timeout_ms : conf->limits.body_timeout_ms;
	struct timespec ts;

	thread_name("http-sweep");
	tick = tick / 10 < 10 ? 10 : tick / 10 > 250 ? 250 : tick / 10;
	pthread_mutex_lock(&h->conns_mu);
	while (!h->sweeper_stop) {
		int64_t now = now_ms();
		size_t closed = 0;

		for (struct conn *c = h->conns; c; c = c->next) {
			int64_t d = atomic_load(&c->deadline_ms);
			if (d == 0 || now < d || c->fd < 0)
				continue;
			atomic_store(&c->deadline_ms, 0);
			shutdown(c->fd, SHUT_RDWR);
			closed++;
		}
		if (closed)
			log_debug("http: closed %zu connections past limits.header_timeout_ms or "
			    "limits.body_timeout_ms", closed);
		ts = clock_now(CLOCK_MONOTONIC);
		ts.tv_nsec += (long)(tick % 1000) * 1000000;
		ts.tv_sec += tick / 1000 + ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&h->sweeper_cond, &h->conns_mu, &ts);
	}
	pthread_mutex_unlock(&h->conns_mu);
	return NULL;
}

/*
 * A raw NUL in the request target ("POST /v1/topics/demo<NUL>evil HTTP/1.1")
 * ends the string libmicrohttpd hands over, so on_uri() saw only "demo".
 * libmicrohttpd 0.9.x parses the request line in place: the target runs from
 * the pointer on_uri() got to the space before the version, which it
 * overwrote with a NUL, and the version follows. When that NUL is not where
 * on_uri()'s string ended, the target held another one. Any other layout
 * (no version, another libmicrohttpd) tells nothing and passes.
 */
static bool target_has_nul(const struct req *r, const char *version)
{
	const char *sep;

	if (!r->raw_uri || !version || !version[0] || version <= r->raw_uri + r->raw_uri_len)
		return false;
	sep = version - 1;
	if (*sep != '\0' || (size_t)(sep - r->raw_uri) > 1u << 20)
		return false;
	return sep != r->raw_uri + r->raw_uri_len;
}

/*
 * libmicrohttpd's URI log callback: the first call of a request, with the
 * request target as sent (before unescaping, which turns %00 into an end of
 * string: /v1/topics/demo%00evil would publish to demo). The request object
 * starts here; its pointer is the handler's *con_cls.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct http *h = cls;
	struct req *r = xcalloc(1, sizeof(*r));
	const union MHD_ConnectionInfo *info;

	r->h = h;
	r->conn = conn;
	r->state = ST_NEW;
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	r->c = info ? info->socket_context : NULL;
	if (r->c) {
		/* A kept-alive connection's next request comes after completed(). */
		assert(!r->c->unhandled);
		r->c->unhandled = r;
	}
	r->raw_uri = uri;
	r->raw_uri_len = uri ? strlen(uri) : 0;
	for (const char *p = uri; p && *p && *p != '?'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x20 || c == 0x7f)
			r->bad_path = true;
		if (c == '%' && isxdigit((unsigned char)p[1]) && isxdigit((unsigned char)p[2])) {
			char hex[3] = { p[1], p[2], '\0' };
			unsigned long v = strtoul(hex, NULL, 16);
			if (v < 0x20 || v == 0x7f)
				r->bad_path = true;
			if (v == '/')
				r->escaped_slash = true;
		}
	}
	return r;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
    const char *method, const char *version, const char *upload_data,
    size_t *upload_data_size, void **con_cls)
{
	struct http *h = cls;
	struct req *r = *con_cls;
	/* libmicrohttpd starts its threads with no hook to run there. */
	thread_slice("http", h->deps.conf->publish.slice_us);
	if (!r) /* libmicrohttpd calls on_uri first; this is only a safety net */
		r = *con_cls = on_uri(h, NULL, conn);
	if (r->state == ST_NEW) {
		if (r->c && r->c->unhandled == r)
			r->c->unhandled = NULL;
		if (target_has_nul(r, version))
			r->bad_path = true;
		/* The headers are in: from here the body has its own deadline. */
		conn_deadline(r->c, h->deps.conf->limits.body_timeout_ms);
		r->state = ST_BODY;
		if (begin(r, url, method) == 0 && atomic_load(&h->closing))
			set_error(&r->answer, ERR_UNAVAILABLE, "ackd is shutting down");
		if (r->answer.body) {
			r->state = ST_ANSWER;
			if (answer_before_body(r)) {
				conn_deadline(r->c, 0);
				return answer(r);
			}
		}
		return MHD_YES;
	}
	if (*upload_data_size > 0) {
		if (r->state == ST_BODY)
			take_body(r, upload_data, *upload_data_size);
		*upload_data_size = 0;
		return MHD_YES;
	}
	/* The whole request is in; what remains is ackd's work and the answer. */
	conn_deadline(r->c, 0);
	if (r->state == ST_BODY || r->state == ST_TOPIC_CHECKED)
		advance(r);
	if (r->state == ST_VERDICT) {
		set_publish_answer(r);
		r->state = ST_ANSWER;
	}
	if (r->state == ST_ANSWER)
		return answer(r);
	return MHD_YES; /* suspended */
}

static void completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct http *h = cls;
	struct req *r = *con_cls;

	(void)conn;
	(void)toe;
	if (!r)
		return;
	/* A kept-alive connection has header_timeout_ms for its next request. */
	conn_deadline(r->c, h->deps.conf->limits.header_timeout_ms);
	req_free(h, r);
	*con_cls = NULL;
}

/*
 * libmicrohttpd's messages, at most MHD_LOG_BURST in MHD_LOG_WINDOW_MS (a
 * flood of bad requests must not become a flood of log lines), cleaned like
 * anything else that may quote a client.
 */
#define MHD_LOG_BURST 20
#define MHD_LOG_WINDOW_MS 10000

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static int64_t window_start;
	static unsigned logged, dropped;
	char raw[512], line[512];
	unsigned was_dropped = 0;
	size_t n;
	bool show;

	(void)cls;
	vsnprintf(raw, sizeof(raw), fmt, ap);
	/*
	 * libmicrohttpd 0.9.75 sets TCP_NODELAY and TCP_CORK on each connection
	 * it is handed, whatever its family, and says so when they fail. On a
	 * Unix socket they fail with EOPNOTSUPP, on every connection: nothing
	 * is wrong, and the lines would use up the burst that real messages
	 * need. (On TCP these options do not fail that way.)
	 */
	if (strncmp(raw, "Setting TCP_", 12) == 0 && strstr(raw, strerror(EOPNOTSUPP)))
		return;
	pthread_mutex_lock(&mu);
	if (now_ms() - window_start >= MHD_LOG_WINDOW_MS) {
		window_start = now_ms();
		was_dropped = dropped;
		logged = dropped = 0;
	}
	show = logged < MHD_LOG_BURST;
	if (show)
		logged++;
	else
		dropped++;
	pthread_mutex_unlock(&mu);
	if (was_dropped)
		log_warnx("http: %u more messages of libmicrohttpd not logged", was_dropped);
	if (!show)
		return;
	n = utf8_clean(line, sizeof(line), raw, strlen(raw));
	while (n > 0 && (line[n - 1] == '?' || line[n - 1] == '.'))
		line[--n] = '\0';
	log_warnx("http: %s", line);
}

/* --- listeners ------------------------------------------------------------ */

static int cond_init_monotonic(pthread_cond_t *cond)
{
	pthread_condattr_t attr;
	int rc;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	rc = pthread_cond_init(cond, &attr);
	pthread_condattr_destroy(&attr);
	return rc;
}

/* "host:port" or "[v6]:port" to a listening socket. */
static int listen_tcp(const char *addr, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
		.ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char host[256];
	const char *colon = strrchr(addr, ':');
	const char *port;
	int fd = -1, one = 1, rc;

	if (!colon || colon == addr || colon[1] == '\0') {
		snprintf(err, errlen, "listen.http %s: expected host:port", addr);
		return -1;
	}
	port = colon + 1;
	if (addr[0] == '[' && colon[-1] == ']')
		snprintf(host, sizeof(host), "%.*s", (int)(colon - addr - 2), addr + 1);
	else
		snprintf(host, sizeof(host), "%.*s", (int)(colon - addr), addr);
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, errlen, "listen.http %s: %s", addr, gai_strerror(rc));
		return -1;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
		snprintf(err, errlen, "listen.http %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return fd;
}

/* A Unix socket at path; a stale file is replaced, a live socket is an error. */
static int listen_unix(const struct conf *conf, char *err, size_t errlen)
{
	const char *path = conf->listen.unix_path;
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "listen.unix %s: path too long", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "listen.unix %s: exists and is not a socket", path);
			return -1;
		}
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0) {
			close(fd);
			snprintf(err, errlen, "listen.unix %s: another process is listening there",
			    path);
			return -1;
		}
		if (fd >= 0)
			close(fd);
		log_info("http: replacing stale socket %s", path);
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
		snprintf(err, errlen, "listen.unix %s: %s", path, strerror(errno));
		goto fail;
	}
	if (chmod(path, conf->listen.unix_mode) < 0) {
		snprintf(err, errlen, "listen.unix %s: chmod: %s", path, strerror(errno));
		goto fail;
	}
	if (conf->listen.unix_group[0]) {
		struct group *g = getgrnam(conf->listen.unix_group);
		if (!g || chown(path, (uid_t)-1, g->gr_gid) < 0) {
			snprintf(err, errlen, "listen.unix %s: group %s: %s", path,
			    conf->listen.unix_group, g ? strerror(errno) : "no such group");
			goto fail;
		}
	}
	if (listen(fd, 4096) < 0) {
		snprintf(err, errlen, "listen.unix %s: %s", path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	return -1;
}

/* Whether the TCP socket fd is bound to a loopback address (127/8, ::1). */
static bool bound_to_loopback(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return false;
	if (ss.ss_family == AF_INET)
		return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss.ss_family == AF_INET6) {
		const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/*
 * The server to hand the next connection to: the fast one while it has room.
 * NULL while the listener holds max_connections + CONNECTION_HEADROOM, the
 * wide server's limit, over both.
 */
static struct server *next_server(struct listener *l)
{
	int fast = atomic_load(&l->fast.open);

	if (fast + atomic_load(&l->wide.open) >= l->wide.limit)
		return NULL;
	return l->fast.mhd && fast < l->fast.limit ? &l->fast : &l->wide;
}

/* Logs with errno, at most every 10 s per listener. */
static void warn_accept(struct listener *l, const char *what)
{
	int64_t now = now_ms();

	if (now - l->accept_warned_ms >= 10000) {
		log_warn("%s", what);
		l->accept_warned_ms = now;
	}
}

/* Accept one connection and hand it to srv; false when the acceptor should pause. */
static bool accept_one(struct listener *l, struct server *srv)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0) {
		if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM)
			return true; /* EAGAIN, or a client that left before we took it */
		warn_accept(l, "http: cannot accept a connection");
		return false; /* out of descriptors or memory: the backlog holds them */
	}
	/*
	 * Counted open before the hand-over: the request that comes first on it
	 * must see itself and every connection accepted before it, whether or not
	 * libmicrohttpd's threads have taken them yet (the 503 beyond
	 * max_connections), and the next choice of server must see it.
	 * on_connection() takes both back when it closes; on failure
	 * libmicrohttpd closed it at once (the address's cap, or out of memory).
	 *
	 * So the counts are never too low, and libmicrohttpd's own limit is never
	 * reached. They stay one too high for each connection libmicrohttpd takes
	 * but then fails to set up (out of memory for its buffers), which it
	 * closes without announcing; after max_connections + 64 such failures the
	 * listener would stop accepting. Guessing from time which hand-overs were
	 * lost would count too low while one of its threads is stalled, so it is
	 * not done.
	 */
	atomic_fetch_add(&srv->h->connections, 1);
	atomic_fetch_add(&srv->open, 1);
	if (MHD_add_connection(srv->mhd, fd, (struct sockaddr *)&ss, len) != MHD_YES) {
		atomic_fetch_sub(&srv->open, 1);
		atomic_fetch_sub(&srv->h->connections, 1);
	}
	return true;
}

static void *acceptor_main(void *arg)
{
	struct listener *l = arg;
	struct pollfd p[2] = { { .fd = l->fd }, { .fd = l->wake, .events = POLLIN } };

	thread_name("http-accept");
	for (;;) {
		/* While the listener is full, look again for room every 10 ms. */
		struct server *srv = next_server(l);
		bool pause = false;

		p[0].events = srv ? POLLIN : 0;
		if (poll(p, 2, srv ? -1 : 10) < 0) {
			if (errno == EINTR)
				continue;
			warn_accept(l, "http: cannot wait for connections");
			pause = true;
		} else if (p[1].revents) {
			return NULL;
		} else if (srv && (p[0].revents & POLLIN)) {
			pause = !accept_one(l, srv);
		} else if (p[0].revents) {
			errno = EIO;
			warn_accept(l, "http: the listening socket reports an error");
			pause = true;
		}
		if (pause) /* out of descriptors or memory: wait, but wake to stop */
			poll(&p[1], 1, 100);
	}
}

static struct MHD_Daemon *start_server(struct http *h, struct server *srv, unsigned loop,
    unsigned limit, unsigned per_address)
{
	const struct conf *conf = h->deps.conf;
	unsigned flags = loop | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC |
	    MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
	/*
	 * Room for a request at check_limits()'s limits: its target and fields
	 * (with the copy of a Cookie header, counted in max_header_bytes), and
	 * 32 KiB for the rest: an entry for each field, cookie and query
	 * argument, the head's line ends, and the answer's head, which
	 * libmicrohttpd builds here after ackd has handled the request.
	 */
	size_t pool = (size_t)(conf->limits.max_header_bytes + conf->limits.max_url_bytes) +
	    (32u << 10);
	_Static_assert((MAX_REQUEST_HEADERS + MAX_QUERY_ARGS) * MHD_ENTRY_BYTES + HEAD_SLACK <
	    (16u << 10), "the entries and line ends leave half of the 32 KiB to answer");

	srv->h = h;
	srv->limit = (int)limit;
	atomic_init(&srv->open, 0);
	/*
	 * ackd's count is the only cap. libmicrohttpd splits its limit between its
	 * threads and checks it again when a thread takes a handed-over connection,
	 * against a count that lags ours: with its limit at ours it could refuse a
	 * connection ackd counted (closing it unanswered, never announced; 0.9.75
	 * also keeps a lock held on that path), so each of its threads gets room
	 * for all that ackd lets the server hold.
	 */
	srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, handle, h,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, h,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)SERVER_THREADS,
	    MHD_OPTION_CONNECTION_LIMIT, limit * SERVER_THREADS,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, per_address,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
	    MHD_OPTION_URI_LOG_CALLBACK, on_uri, h,
	    /* Idle keep-alive and slow readers; the sweeper bounds the request phases. */
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
	    MHD_OPTION_NOTIFY_COMPLETED, completed, h,
	    MHD_OPTION_END);
	return srv->mhd;
}

static int serve(struct http *h, struct listener *l, int fd, bool tcp, char *err,
    size_t errlen, const char *what)
{
	const struct conf *conf = h->deps.conf;
	bool local = !tcp || bound_to_loopback(fd);
	unsigned per_address = local ? 0u : (unsigned)conf->limits.max_connections_per_address;
	int fl;

	l->fd = fd;
	l->wake = eventfd(0, EFD_CLOEXEC);
	fl = fcntl(fd, F_GETFL);
	if (l->wake < 0 || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    !start_server(h, &l->wide, MHD_USE_EPOLL_INTERNAL_THREAD,
	    (unsigned)(conf->limits.max_connections + CONNECTION_HEADROOM), per_address) ||
	    (local && !start_server(h, &l->fast, MHD_USE_POLL_INTERNAL_THREAD, FAST_CONNS, 0))) {
		snprintf(err, errlen, "cannot start the http server on %s", what);
		return -1; /* http_stop() closes what was opened */
	}
	if (pthread_create(&l->acceptor, NULL, acceptor_main, l) != 0) {
		snprintf(err, errlen, "cannot start the http acceptor thread for %s", what);
		return -1;
	}
	l->acceptor_running = true;
	log_info("http: listening on %s", what);
	return 0;
}

int http_start(const struct http_deps *deps, struct http **out, char *err, size_t errlen)
{
	struct http *h = xcalloc(1, sizeof(*h));
	const struct conf *conf = deps->conf;
	int fd;

	h->deps = *deps;
	if (!h->deps.idem) {
		h->own_idem = idem_new(conf->publish.idempotency_ttl_s * 1000,
		    (size_t)conf->publish.idempotency_max_keys);
		if (!h->own_idem) {
			snprintf(err, errlen, "out of memory for the Idempotency-Key table");
			free(h);
			return -1;
		}
		h->deps.idem = h->own_idem;
	}
	h->tcp.fd = h->unix_.fd = h->tcp.wake = h->unix_.wake = -1;
	pthread_mutex_init(&h->conns_mu, NULL);
	if (cond_init_monotonic(&h->sweeper_cond) != 0 ||
	    pthread_create(&h->sweeper, NULL, sweeper_main, h) != 0) {
		snprintf(err, errlen, "cannot start the http sweeper thread");
		goto fail;
	}
	h->sweeper_running = true;
	/* A socket handed over by systemd (ackd.socket) comes first. */
	if (conf->listen.http[0]) {
		fd = service_take_tcp_fd(conf->listen.http);
		if (fd < 0)
			fd = listen_tcp(conf->listen.http, err, errlen);
		if (fd < 0 || serve(h, &h->tcp, fd, true, err, errlen, conf->listen.http) < 0)
			goto fail;
	}
	if (conf->listen.unix_path[0]) {
		/* An inherited socket file belongs to systemd: not ours to unlink. */
		fd = service_take_unix_fd(conf->listen.unix_path);
		if (fd < 0) {
			fd = listen_unix(conf, err, errlen);
			if (fd < 0)
				goto fail;
			h->unix_path = xstrdup(conf->listen.unix_path);
		}
		if (serve(h, &h->unix_, fd, false, err, errlen, conf->listen.unix_path) < 0)
			goto fail;
	}
	*out = h;
	return 0;
fail:
	http_stop(h);
	return -1;
}

/*
 * Stop accepting on l: ackd's copy of the listening socket is closed (new
 * connections are refused, or wait for the next ackd when systemd holds the
 * socket); open ones keep being served.
 */
static void stop_accepting(struct listener *l)
{
	uint64_t one = 1;

	if (l->acceptor_running) {
		if (write(l->wake, &one, sizeof(one)) != (ssize_t)sizeof(one))
			log_err("http: cannot stop the acceptor"); /* an eventfd write cannot fail */
		pthread_join(l->acceptor, NULL);
		l->acceptor_running = false;
	}
	if (l->fd >= 0) {
		close(l->fd);
		l->fd = -1;
	}
}

void http_quiesce(struct http *h)
{
	atomic_store(&h->closing, true);
	stop_accepting(&h->tcp);
	stop_accepting(&h->unix_);
}

void http_drain(struct http *h, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (atomic_load(&h->suspended) > 0 && now_ms() < deadline)
		usleep(10000);
}

void http_stop(struct http *h)
{
	struct listener *ls[] = { &h->tcp, &h->unix_ };

	if (!h)
		return;
	if (h->sweeper_running) {
		pthread_mutex_lock(&h->conns_mu);
		h->sweeper_stop = true;
		pthread_cond_signal(&h->sweeper_cond);
		pthread_mutex_unlock(&h->conns_mu);
		pthread_join(h->sweeper, NULL);
	}
	for (size_t i = 0; i < 2; i++) {
		stop_accepting(ls[i]);
		if (ls[i]->fast.mhd)
			MHD_stop_daemon(ls[i]->fast.mhd);
		if (ls[i]->wide.mhd)
			MHD_stop_daemon(ls[i]->wide.mhd);
		if (ls[i]->wake >= 0)
			close(ls[i]->wake);
	}
	if (h->unix_path) {
		unlink(h->unix_path);
		free(h->unix_path);
	}
	if (h->sweeper_running)
		pthread_cond_destroy(&h->sweeper_cond);
	pthread_mutex_destroy(&h->conns_mu);
	idem_free(h->own_idem);
	free(h);
}
