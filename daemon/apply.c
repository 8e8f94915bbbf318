/*
 * apply.c -- see apply.h for the contract: the context's life, and a
 * partition's records applied in order, each batch cut where the months
 * it closes must be reviewed first.  The batch itself is batch.c, the
 * review review.c, the transaction both run in txn.c.
 */
#include "apply.h"

#include "batch.h"
#include "review.h"

#include <stdlib.h>
#include <string.h>

void apply_init(apply_ctx_t *a) {
    memset(a, 0, sizeof(*a));
}

void apply_free(apply_ctx_t *a) {
    if (!a) return;
    order_reset(&a->decoded);
    free(a->orders);
    strmap_free(&a->cust, NULL);
    batch_work_free(a->work);
    memset(a, 0, sizeof(*a));
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
        rc = review_through(a, p, review_to, errstr, errstr_size);
        if (rc != APPLY_OK) return rc;
    }
    return APPLY_OK;
}
