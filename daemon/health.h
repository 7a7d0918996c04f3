/*
 * health: are the daemon's loops turning?
 *
 * Each long-running loop (spool writer, kafka loop, topics thread, each
 * subscription) embeds a struct health_loop, registers it, and beats once per
 * turn; a loop that sleeps wakes at least every max_quiet_ms / 2 to beat.
 * GET /healthz and the systemd watchdog ask health_check(): a loop that has
 * not beaten for max_quiet_ms is stuck (a hung disk, a deadlock), and the
 * service manager should restart ackd rather than let it sit.
 */
#ifndef ACKD_HEALTH_H
#define ACKD_HEALTH_H

#include <stddef.h>
#include <stdint.h>

struct health_loop {
	const char *name;     /* borrowed, static or outliving the registration */
	int64_t max_quiet_ms;
	_Atomic int64_t last_ms;
	struct health_loop *next;
};

/* Any thread. The loop beats at registration. */
void health_register(struct health_loop *l, const char *name, int64_t max_quiet_ms);
void health_unregister(struct health_loop *l);

/* The loop's own thread, once per turn: one relaxed atomic store. */
void health_beat(struct health_loop *l);

/* 0 when every loop beat in time; -1 with the stuck loops' names in stale. */
int health_check(char *stale, size_t len);

#endif
