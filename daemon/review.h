/*
 * review.h -- the monthly review of a partition's customers (review.c):
 * each month once, in order, in pages of bounded size, each page one
 * watched transaction (txn.h); and months with no orders carried at once
 * when reviewing them would change nothing.
 */
#ifndef TIERD_REVIEW_H
#define TIERD_REVIEW_H

#include "apply.h"

#include <stddef.h>
#include <stdint.h>

/* The review of `month` for every customer of the partition: pages of
 * customers, each one MULTI/EXEC with their new states, the tier-change
 * events and the cursor; the last page sets meta.reviewed.  Reviewing a
 * month already reviewed does nothing, so a crash can neither skip nor
 * repeat one.  APPLY_* as apply_batch. */
int review_month(apply_ctx_t *a, apply_part_t *p, int32_t month, char *errstr, size_t errstr_size);

/* Reviews every month not yet reviewed up to and including `to`, oldest
 * first.  Months with no orders cost a bounded number of reviews however
 * many there are: once W + 1 reviews in a row were steady over months
 * with no orders, the remaining ones would decide nothing new, so the
 * partition moves to `to` at once, carrying the tier months forward and
 * leaving no month key outside the kept range. */
int review_through(apply_ctx_t *a, apply_part_t *p, int32_t to, char *errstr, size_t errstr_size);

#endif
