/*
 * profiles.h -- the customer-profiles join (profiles.c).
 */
#ifndef TIERD_PROFILES_H
#define TIERD_PROFILES_H

#include "apply.h"

#include <stddef.h>

/* Applies a batch of customer-profiles records of partition p: each
 * profile stored (a tombstone deletes it), an override or a lowered grade
 * decided at once, the events to the outbox, the profiles offset moved,
 * in one MULTI/EXEC.  Refused records go to a->dead first.  APPLY_* as
 * apply_batch. */
int profiles_apply(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, char *errstr,
                   size_t errstr_size);

#endif
