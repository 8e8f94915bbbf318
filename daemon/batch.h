/*
 * batch.h -- one order batch of one partition, in four stages (batch.c).
 */
#ifndef TIERD_BATCH_H
#define TIERD_BATCH_H

#include "apply.h"

struct batch_work;

/* Applies msgs[0..*used): all of them, unless an order closes months that
 * still need their review, in which case *review_to is the last month to
 * review before msgs[*used] (and *used may be 0).  APPLY_* as apply_batch. */
int batch_apply(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, int64_t now_ms,
                size_t *used, int32_t *review_to, char *errstr, size_t errstr_size);
void batch_work_free(struct batch_work *w);

#endif
