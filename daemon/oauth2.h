/*
 * oauth2: an OAuth 2.0 client-credentials access token for one subscription
 * (RFC 6749 section 4.4), fetched when needed and cached until shortly
 * before it expires.
 */
#ifndef ACKD_OAUTH2_H
#define ACKD_OAUTH2_H

#include <stddef.h>
#include <stdint.h>

#include "conf.h"

#ifndef MUST_USE
#define MUST_USE __attribute__((warn_unused_result))
#endif

struct oauth2;

/* For cs->oauth2 (borrowed; must outlive it). NULL only when out of memory. */
struct oauth2 *oauth2_new(const struct conf_sub *cs);
void oauth2_free(struct oauth2 *o); /* NULL ok */

/*
 * The access token to send now (borrowed, valid until the next call), and its
 * generation for oauth2_reject(). Fetches a new one first when there is none,
 * it expires soon, or the last one was rejected: that request blocks the
 * caller for at most the subscription's timeout_ms. After a failed fetch the
 * next is tried no sooner than a second later. -1 with err (never holding
 * the secret or a token).
 */
MUST_USE int oauth2_token(struct oauth2 *o, int64_t now, const char **token, uint64_t *gen,
    char *err, size_t errlen);

/* A request sent with the token of generation gen got 401: fetch anew. */
void oauth2_reject(struct oauth2 *o, uint64_t gen);

/* Token fetches so far, successful or not (for tests and metrics). */
uint64_t oauth2_fetches(const struct oauth2 *o);

/*
 * Pure: the token endpoint's JSON answer. On 0 *token is the access_token
 * (free with free()) and *expires_in its lifetime in seconds, -1 when the
 * answer gives none. -1 with err.
 */
MUST_USE int oauth2_parse(const char *body, size_t len, char **token, int64_t *expires_in,
    char *err, size_t errlen);

/*
 * Pure: when a token got at now_ms with lifetime expires_in seconds (-1:
 * unknown) is to be replaced: a tenth of its life before expiry, at least
 * 5 s and at most 60 s before; INT64_MAX when it never expires.
 */
int64_t oauth2_refresh_at(int64_t now_ms, int64_t expires_in);

#endif
