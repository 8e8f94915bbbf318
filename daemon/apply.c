/*
 * apply.c -- see apply.h for the contract: the context's life, and a
 * partition's records applied in order, each batch cut where the months
 * it closes must be reviewed first.  The batch itself is batch.c, the
 * review review.c, the transaction both run in txn.c.
 */
#include "apply.h"

#include "batch.h"
#include "review.h"
#include "state.h"
#include "txn.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void apply_init(apply_ctx_t *a) {
    memset(a, 0, sizeof(*a));
}

void apply_settle(apply_ctx_t *a) {
    if (a->store) store_settle(a->store);
}

int apply_in_flight(const apply_ctx_t *a, int32_t partition) {
    return a->flight.active && a->flight.partition == partition;
}

void apply_stats_add(apply_stats_t *to, const apply_stats_t *from) {
    to->applied += from->applied;
    to->duplicates += from->duplicates;
    to->redelivered += from->redelivered;
    to->dead += from->dead;
    to->batches += from->batches;
    to->fenced += from->fenced;
    to->return_excess_units += from->return_excess_units;
    to->reviews += from->reviews;
    to->profiles += from->profiles;
    for (size_t i = 0; i < sizeof(to->dead_by_reason) / sizeof(to->dead_by_reason[0]); i++)
        to->dead_by_reason[i] += from->dead_by_reason[i];
    to->tier_events += from->tier_events;
    to->quota_events += from->quota_events;
    for (size_t i = 0; i < POLICY_QUOTA__COUNT; i++) to->quota_by_kind[i] += from->quota_by_kind[i];
    to->review_seconds += from->review_seconds;
    to->state_corrupt += from->state_corrupt;
    to->review_pages += from->review_pages;
}

int apply_corrupt(apply_ctx_t *a, const char *ckey, const char *id, size_t idlen, const char *why,
                  int count, char *errstr, size_t errstr_size) {
    if (count) a->stats.state_corrupt++;
    snprintf(errstr, errstr_size, "%s field %.*s: state does not parse (%s)", ckey, (int)idlen, id,
             why);
    return APPLY_CORRUPT;
}

void apply_release(apply_ctx_t *a) {
    batch_work_free(a->work);
    a->work = NULL;
    strmap_free(&a->cust, NULL);
    free(a->orders);
    a->orders = NULL;
    a->orders_cap = 0;
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

int apply_prev_fp(const apply_msg_t *last, int64_t held, uint64_t *fp) {
    if (held > last->offset + 1) return 0;
    *fp = state_order_fp(last->value, last->value_len);
    return 1;
}

/* apply_skip's transaction: nothing to read but the meta. */
typedef struct skip {
    apply_ctx_t *a;
    apply_part_t *p;
    int input;
    int64_t to;
    int keep; /* only markers and aborted records passed: the hash stays */
    int kept; /* decided: the hash stays, of the record at `at` */
    int64_t at;
    char mkey[256], off[24], upd[24], fp[48];
} skip_t;

static int skip_plan(void *ctx, txn_read_t *r, char *errstr, size_t errstr_size) {
    (void)ctx, (void)r, (void)errstr, (void)errstr_size;
    return APPLY_OK;
}

static int skip_decide(void *ctx, const store_meta_t *now, redisReply **replies, store_tx_t *tx,
                       char *errstr, size_t errstr_size) {
    skip_t *k = ctx;
    (void)replies;
    store_meta_t cur = *now; /* read only: a view of its input's fields */
    store_input_t n = store_meta_input(&cur, k->input);
    int64_t held = *n.offset;
    if (held != *store_meta_input(&k->p->meta, k->input).offset)
        return TXN_AGAIN; /* our last commit landed though its reply was lost */
    k->kept = 0;
    if (held >= k->to) return APPLY_OK; /* a batch went past it: only the format is written */
    const char *off = n.offset_field, *hash = n.fp_field;
    snprintf(k->off, sizeof(k->off), "%" PRId64, k->to);
    snprintf(k->upd, sizeof(k->upd), "%lld", (long long)time(NULL));
    if (k->keep && held > 0 && *n.has_fp) {
        k->kept = 1;
        k->at = *n.at >= 0 ? *n.at : held - 1;
        snprintf(k->fp, sizeof(k->fp), "%" PRIu64 "@%" PRId64, *n.fp, k->at);
    }
    /* Without the kept hash, its two arguments are left off the end, and
     * the hash goes. */
    int rc = store_tx_addv(tx, k->kept ? 10 : 8, "HSET", (size_t)4, k->mkey, strlen(k->mkey), off,
                           strlen(off), k->off, strlen(k->off), "owner", (size_t)5, k->a->owner,
                           strlen(k->a->owner), "updated_at", (size_t)10, k->upd, strlen(k->upd),
                           hash, strlen(hash), k->fp, strlen(k->fp)) ||
             (!k->kept && store_tx_addv(tx, 3, "HDEL", (size_t)4, k->mkey, strlen(k->mkey), hash,
                                        strlen(hash)));
    if (rc != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return APPLY_RETRY;
    }
    return APPLY_OK;
}

static void skip_committed(void *ctx, apply_stats_t *st) {
    skip_t *k = ctx;
    store_input_t m = store_meta_input(&k->p->meta, k->input);
    (void)st;
    if (*m.offset >= k->to) return;
    *m.offset = k->to;
    *m.has_fp = k->kept;
    *m.at = k->kept ? k->at : -1;
}

static const txn_ops_t skip_ops = {skip_plan, skip_decide, skip_committed, FAULT_COMMIT, 0};

int apply_skip(apply_ctx_t *a, apply_part_t *p, int input, int64_t to, int keep_check, char *errstr,
               size_t errstr_size) {
    skip_t k = {a, p, input, to, keep_check, 0, -1, "", "", "", ""};
    if (*store_meta_input(&p->meta, input).offset >= to) return APPLY_OK;
    store_key(a->store, p->topic, p->partition, "meta", k.mkey, sizeof(k.mkey));
    return txn_run(a, p, &skip_ops, &k, errstr, errstr_size);
}
