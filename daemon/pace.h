/*
 * pace: how fast one subscription may send. A token bucket for rate_limit
 * (messages a second) and a concurrency window: max_in_flight when
 * concurrency = "fixed", found by AIMD when "adaptive". Pure logic: the
 * caller passes the time and what the endpoint answered.
 */
#ifndef ACKD_PACE_H
#define ACKD_PACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What an answer says about the endpoint's load. */
enum pace_signal {
	PACE_OK,       /* 2xx */
	PACE_OVERLOAD, /* 429, 503, a timeout */
	PACE_OTHER,    /* anything else: says nothing about load */
};

/* Plain data, owned by the caller; all fields private to pace.c. */
struct pace {
	double rate;        /* tokens a second; 0: no cap */
	double burst;       /* most tokens kept */
	double tokens;
	int64_t refilled_ms;
	bool adaptive;
	double max;         /* max_in_flight */
	double window;
	double ssthresh;    /* below it the window doubles per round trip */
	double base_ms;     /* latency of 2xx answers, smoothed; < 0 unknown */
	int64_t cut_ms;     /* the last decrease; -1 none */
};

void pace_init(struct pace *p, int64_t rate_limit, bool adaptive, int64_t max_in_flight,
    int64_t now_ms);

/* Requests that may be in flight now: 1 to max_in_flight. */
size_t pace_window(const struct pace *p);

/* 0 when a message may be sent at now_ms, else how many ms until it may. */
int64_t pace_wait_ms(struct pace *p, int64_t now_ms);

/* A message is sent at now_ms: takes its token. */
void pace_sent(struct pace *p, int64_t now_ms);

/*
 * A batch of n messages is sent at now_ms (after pace_wait_ms() said 0):
 * takes n tokens, going into debt when it holds fewer, so that the next
 * request waits until the debt is paid and the rate holds on average.
 */
void pace_sent_n(struct pace *p, int64_t now_ms, size_t n);

/*
 * The answer to a request sent at sent_ms came at now_ms. full: the window
 * was full when it was sent (only then does a 2xx grow it).
 */
void pace_answer(struct pace *p, int64_t sent_ms, int64_t now_ms, enum pace_signal sig,
    bool full);

/* The signal of an HTTP status (0: no answer) and whether the request timed out. */
enum pace_signal pace_signal_of(long status, bool timed_out);

#endif
