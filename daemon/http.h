/*
 * http: the publish API and health endpoints, on a TCP address and a Unix
 * socket, served by libmicrohttpd.
 */
#ifndef ACKD_HTTP_H
#define ACKD_HTTP_H

#include <stddef.h>

#include "conf.h"

struct http;
struct spool;
struct producer;
struct topics;

/* Everything a request needs; borrowed, must outlive the http server. */
struct idem;

struct http_deps {
	const struct conf *conf;
	struct spool *spool;
	struct producer *producer;
	struct topics *topics;
	struct idem *idem; /* the Idempotency-Key table; NULL: http_start() makes an empty one */
};

/*
 * Bind the listeners of conf->listen (a stale Unix socket file is replaced, a
 * live one is an error) and start serving.
 */
int http_start(const struct http_deps *deps, struct http **out, char *err, size_t errlen);

/* Stop accepting connections; requests from now on get 503. */
void http_quiesce(struct http *h);

/* Wait up to timeout_ms for suspended requests to be answered. */
void http_drain(struct http *h, int timeout_ms);

/* Stop the servers and remove the Unix socket file. NULL ok. */
void http_stop(struct http *h);

#endif
