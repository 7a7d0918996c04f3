/*
 * status: what GET /metrics, /v1/status, /readyz and /healthz read.
 *
 * A snapshot of every module's statistics, taken at request time, and the
 * list of running subscriptions, which main.c replaces at reload.
 */
#ifndef ACKD_STATUS_H
#define ACKD_STATUS_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

struct spool;
struct producer;
struct topics;
struct idem;
struct consumer;

/* The modules to read (borrowed; they outlive every request). */
void status_init(struct spool *sp, struct producer *prod, struct topics *topics, struct idem *idem);

/*
 * SIGTERM arrived: /readyz answers 503 from now on, and /metrics and
 * /v1/status too (the modules they read are being stopped).
 */
void status_stopping(void);
bool status_is_stopping(void);

/*
 * Hold off scrapes while the subscriptions change, then name the running
 * ones (borrowed array, replaced by the next call).
 */
void status_lock_subs(void);
void status_set_subs(struct consumer *const *subs, size_t n);
void status_unlock_subs(void);

/*
 * The Control API: hand cmd to the running subscription called name (0), or
 * -1 when there is none (cmd stays the caller's).
 */
struct control_cmd;
int status_control(const char *name, struct control_cmd *cmd);

/* GET /v1/subscriptions: {"subscriptions":[…]}; json_decref(). */
json_t *status_subscriptions(void);

/* Prometheus text; free(). */
char *status_metrics(size_t *len);

/* The /v1/status document; json_decref(). */
json_t *status_json(void);

/* /readyz: 0 when ready, else -1 and *reasons (a JSON array; json_decref()). */
int status_ready(json_t **reasons);

/* /healthz: 0 while every loop turns, else -1 and the stuck ones in why. */
int status_alive(char *why, size_t len);

#endif
