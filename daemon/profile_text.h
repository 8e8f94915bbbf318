/*
 * profile_text.h -- a customer's profile as the partition's p hash holds
 * it (store.h): "format market chain grade cooperation growth has_override
 * override_tier updated_at", space-separated so an operator can read it
 * with redis-cli; doubles as %.17g, so they round-trip exactly.
 *
 * Written by the profiles join (profiles.c), read by every transaction
 * that decides (batch.c, review.c) and by tierctl.  Pure: no I/O.  The
 * Avro form a profile arrives in is decode.h's business.
 */
#ifndef TIERD_PROFILE_TEXT_H
#define TIERD_PROFILE_TEXT_H

#include "tierd/policy.h"

#include <stddef.h>
#include <stdint.h>

/* 0 and *p, *updated_at filled; -1 for text that is not such a profile. */
int profile_text_parse(policy_profile_t *p, int64_t *updated_at, const char *s, size_t len);
/* snprintf's answer: the length of the text (cut when it reaches size). */
int profile_text_format(const policy_profile_t *p, int64_t updated_at, char *buf, size_t size);

#endif
