/*
 * apply.c -- see apply.h for the contract.  The batch itself is batch.c;
 * this file holds what batches, reviews and profiles share.
 */
#include "apply.h"

#include "batch.h"
#include "log.h"
#include "month.h"
#include "review.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void apply_init(apply_ctx_t *a) { memset(a, 0, sizeof(*a)); }

void apply_free(apply_ctx_t *a) {
    if (!a) return;
    for (size_t i = 0; i < a->orders_cap; i++) order_reset(&a->orders[i]);
    free(a->orders);
    strmap_free(&a->cust, NULL);
    batch_work_free(a->work);
    memset(a, 0, sizeof(*a));
}

int apply_meta_verdict(const apply_part_t *p, const store_meta_t *now) {
    if (now->epoch > p->meta.epoch) return APPLY_FENCED; /* whatever the offsets say */
    if (now->epoch < p->meta.epoch || now->offset < p->meta.offset ||
        now->poffset < p->meta.poffset)
        return APPLY_REWIND;
    return APPLY_OK;
}

int apply_review_through(apply_ctx_t *a, apply_part_t *p, int32_t to, int64_t now_ms,
                         char *errstr, size_t errstr_size) {
    const int32_t W = a->window;
    int steady_run = 0, rc;
    if (!a->policy) return APPLY_OK; /* aggregates only: nothing to review */
    for (;;) {
        /* A carry a crash interrupted: its cursor names a month two or
         * more past the last reviewed one. */
        if (p->meta.reviewed >= 0 && p->meta.rv_month > p->meta.reviewed + 1) {
            if ((rc = review_carry(a, p, p->meta.reviewed, p->meta.rv_month, errstr,
                                   errstr_size)) != APPLY_OK)
                return rc;
            steady_run = 0;
            continue;
        }
        int32_t m = p->meta.reviewed >= 0 ? p->meta.reviewed + 1 : p->meta.month;
        if (m > to) return APPLY_OK;
        if ((rc = apply_review(a, p, m, now_ms, errstr, errstr_size)) != APPLY_OK) return rc;
        if (p->meta.reviewed < m) { /* cannot happen; never loop on it */
            snprintf(errstr, errstr_size, "review of month %d did not advance", (int)m);
            return APPLY_RETRY;
        }
        steady_run = p->review_steady && p->meta.reviewed == m ? steady_run + 1 : 0;
        /* Months after meta.month (the last month with an applied order)
         * have none, so from m >= meta.month + W on, every window is
         * empty: a run of W + 1 steady reviews is a fixed point, and the
         * months up to `to` are carried at once. */
        if (m + 1 < to && m >= p->meta.month + W && steady_run > W) {
            if ((rc = review_carry(a, p, m, to, errstr, errstr_size)) != APPLY_OK) return rc;
            steady_run = 0;
        }
    }
}

int apply_batch(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, int64_t now_ms,
                char *errstr, size_t errstr_size) {
    size_t done = 0;
    while (done < n) {
        size_t used = 0;
        int32_t review_to = -1;
        int rc = batch_apply(a, p, msgs + done, n - done, now_ms, &used, &review_to, errstr,
                             errstr_size);
        if (rc != APPLY_OK) return rc;
        done += used;
        if (review_to < 0) continue;
        /* Months the next order closes, oldest first. */
        rc = apply_review_through(a, p, review_to, now_ms, errstr, errstr_size);
        if (rc != APPLY_OK) return rc;
    }
    return APPLY_OK;
}
