/*
 * review.h -- the paged monthly review (review.c).  apply_review itself
 * is declared in apply.h with the other partition writers.
 */
#ifndef TIERD_REVIEW_H
#define TIERD_REVIEW_H

#include "apply.h"

/* Carries the partition from `from` (reviewed, its last W + 1 reviews
 * steady over months with no orders) to `to` (to >= from + 2): every
 * customer's empty months move forward, so the states equal what reviews
 * of from + 1 .. to would have written, and meta.reviewed says `to`. */
int review_carry(apply_ctx_t *a, apply_part_t *p, int32_t from, int32_t to, char *errstr,
                 size_t errstr_size);

#endif
