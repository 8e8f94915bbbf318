/*
 * review.c -- the monthly review of one partition (SPEC section 8).
 *
 * One watched read of every customer's state and profile, a second of
 * their window months, the policy engine per customer, then one MULTI/EXEC
 * with the new states, the tier-change events (outbox), the tier each
 * customer begins the next month with, and meta.reviewed.  A review of a
 * month already reviewed does nothing: a crash can neither skip nor repeat
 * one.
 *
 * The scale digit of the classification code ranks a customer by its
 * window purchases among the customers of the same format *in this
 * partition*.  Customers are spread over partitions by a hash of their id,
 * so each partition is a random sample of the whole and the digit is an
 * estimate of the global one; exact within the partition.
 */
#include "apply.h"

#include "agg.h"
#include "log.h"
#include "month.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct rcust {
    decide_customer_t c;
    policy_month_t win[POLICY_WINDOW_MAX];
    int64_t total; /* window qty, for the ranking */
} rcust_t;

static const rcust_t *sort_base;
static int by_format_then_total(const void *x, const void *y) {
    const rcust_t *a = &sort_base[*(const size_t *)x], *b = &sort_base[*(const size_t *)y];
    char fa = a->c.has_profile ? (char)a->c.profile.format : 0;
    char fb = b->c.has_profile ? (char)b->c.profile.format : 0;
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->total != b->total) return a->total > b->total ? -1 : 1;
    return strcmp(a->c.id, b->c.id);
}

int apply_review(apply_ctx_t *a, apply_part_t *p, int32_t month, int64_t now_ms, char *errstr,
                 size_t errstr_size) {
    int rc = APPLY_RETRY;
    const int32_t W = a->window;
    char ckey[256], pkey[256], mkeys[POLICY_WINDOW_MAX + 1][256];
    redisReply *r1[2] = {NULL, NULL}, *r2[POLICY_WINDOW_MAX + 1] = {NULL};
    rcust_t *cs = NULL;
    size_t ncs = 0, *order = NULL;
    const char **fields = NULL;
    size_t *flens = NULL;
    char **owned = NULL;
    size_t nowned = 0;
    store_tx_t tx = {0};
    strmap_t byid = {0};
    store_meta_t now;
    decide_ctx_t d;
    decide_args_t cset = {0}, tset = {0}; /* HSET c ..., HSET m:<next> t:... */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    char ym[16];
    memset(&d, 0, sizeof(d));

    if (!a->policy) return APPLY_OK;
    snprintf(ym, sizeof(ym), "%06d", month_yyyymm(month));
    store_key(a->store, p->topic, p->partition, "c", ckey, sizeof(ckey));
    store_key(a->store, p->topic, p->partition, "p", pkey, sizeof(pkey));

    /* Round trip 1: every customer's state and profile. */
    {
        char *keys[2] = {ckey, pkey};
        const char **f[2] = {NULL, NULL};
        size_t *fl[2] = {NULL, NULL}, nf[2] = {0, 0};
        if (store_read(a->store, p->topic, p->partition, &now, 2, keys, f, fl, nf, r1, errstr,
                       errstr_size) != STORE_OK)
            goto out;
    }
    rc = apply_meta_verdict(p, &now);
    if (rc != APPLY_OK) {
        store_unwatch(a->store);
        snprintf(errstr, errstr_size, "%s [%d]: review of %s refused: %s", p->topic,
                 (int)p->partition, ym,
                 rc == APPLY_FENCED ? "another instance owns it"
                                    : "Redis lost writes (older epoch or offsets)");
        goto out;
    }
    rc = APPLY_RETRY;
    p->review_steady = 0;
    if (now.reviewed >= month) { /* done before a crash, or by the previous owner */
        store_unwatch(a->store);
        p->meta.reviewed = now.reviewed;
        p->outbox_dirty = 1; /* its events may still wait */
        rc = APPLY_OK;
        goto out;
    }
    if (r1[0]->type != REDIS_REPLY_ARRAY || r1[1]->type != REDIS_REPLY_ARRAY) {
        store_unwatch(a->store);
        snprintf(errstr, errstr_size, "redis: unexpected reply reading %s", ckey);
        goto out;
    }
    ncs = r1[0]->elements / 2;
    cs = calloc(ncs + 1, sizeof(*cs));
    order = calloc(ncs + 1, sizeof(*order));
    fields = calloc(2 * ncs + 1, sizeof(*fields));
    flens = calloc(2 * ncs + 1, sizeof(*flens));
    owned = calloc(2 * ncs + 1, sizeof(*owned));
    if (!cs || !order || !fields || !flens || !owned) goto oom;
    for (size_t i = 0; i < ncs; i++) {
        redisReply *k = r1[0]->element[2 * i], *v = r1[0]->element[2 * i + 1];
        decide_customer_t *c = &cs[i].c;
        if (k->len > ORDER_ID_MAX) continue;
        memcpy(c->id, k->str, k->len);
        c->len = k->len;
        c->scale = 'X';
        if (decide_state_parse(c, v->str, v->len) != 0)
            log_warn("review", "customer %s: unreadable state \"%.60s\"", c->id, v->str);
        order[i] = i;
        int created;
        strmap_slot_t *slot = strmap_put(&byid, c->id, c->len, &created);
        if (!slot) goto oom;
        slot->value = c;
    }
    for (size_t j = 0; j + 1 < r1[1]->elements; j += 2) {
        redisReply *k = r1[1]->element[j], *v = r1[1]->element[j + 1];
        strmap_slot_t *slot = strmap_get(&byid, k->str, k->len);
        decide_customer_t *c = slot ? slot->value : NULL;
        if (c && decide_profile_parse(&c->profile, &c->profile_updated_at, v->str, v->len) == 0)
            c->has_profile = 1;
    }

    /* Round trip 2: a: and t: of each window month, and t: of the next. */
    for (size_t i = 0; i < ncs; i++) {
        char *fa = malloc(cs[i].c.len + 3), *ft = malloc(cs[i].c.len + 3);
        if (!fa || !ft) {
            free(fa);
            free(ft);
            goto oom;
        }
        snprintf(fa, cs[i].c.len + 3, "a:%s", cs[i].c.id);
        snprintf(ft, cs[i].c.len + 3, "t:%s", cs[i].c.id);
        owned[nowned++] = fa;
        owned[nowned++] = ft;
        fields[2 * i] = fa;
        fields[2 * i + 1] = ft;
        flens[2 * i] = flens[2 * i + 1] = cs[i].c.len + 2;
    }
    if (ncs > 0) {
        char *keys[POLICY_WINDOW_MAX];
        const char **f[POLICY_WINDOW_MAX];
        size_t *fl[POLICY_WINDOW_MAX], nf[POLICY_WINDOW_MAX];
        store_meta_t again;
        for (int32_t k = 0; k < W; k++) {
            store_month_key(a->store, p->topic, p->partition, month - W + 1 + k, mkeys[k],
                            sizeof(mkeys[k]));
            keys[k] = mkeys[k];
            f[k] = fields;
            fl[k] = flens;
            nf[k] = 2 * ncs;
        }
        if (store_read(a->store, p->topic, p->partition, &again, (size_t)W, keys, f, fl, nf, r2,
                       errstr, errstr_size) != STORE_OK)
            goto out;
        for (int32_t k = 0; k < W; k++)
            if (!r2[k] || r2[k]->type != REDIS_REPLY_ARRAY || r2[k]->elements != 2 * ncs) {
                store_unwatch(a->store);
                snprintf(errstr, errstr_size, "redis: unexpected reply reading %s", mkeys[k]);
                goto out;
            }
    }
    store_month_key(a->store, p->topic, p->partition, month + 1, mkeys[W], sizeof(mkeys[W]));
    for (size_t i = 0; i < ncs; i++) {
        for (int32_t k = 0; k < W; k++) {
            policy_month_t *w = &cs[i].win[k];
            redisReply *ra = r2[k]->element[2 * i], *rt = r2[k]->element[2 * i + 1];
            w->month = month - W + 1 + k;
            if (ra->type == REDIS_REPLY_STRING) {
                agg_month_t am;
                if (agg_parse(&am, ra->str, ra->len) != 0) {
                    store_unwatch(a->store); /* the same refusal as apply's */
                    snprintf(errstr, errstr_size,
                             "redis: %s holds \"%.40s\" for a customer, not an aggregate",
                             mkeys[k], ra->str);
                    goto out;
                }
                w->qty = am.qty;
                w->amount = am.amount;
                w->orders = am.orders;
                w->skus = am.skus;
            }
            if (rt->type == REDIS_REPLY_STRING)
                decide_month_parse(&w->tier_in_effect, &w->grade, rt->str, rt->len);
            cs[i].total += w->qty;
        }
    }

    /* Scale digits: rank within format, by window purchases. */
    sort_base = cs;
    qsort(order, ncs, sizeof(*order), by_format_then_total);
    for (size_t i = 0; i < ncs;) {
        size_t j = i;
        char f = cs[order[i]].c.has_profile ? (char)cs[order[i]].c.profile.format : 0;
        while (j < ncs && (cs[order[j]].c.has_profile ? (char)cs[order[j]].c.profile.format : 0) == f)
            j++;
        for (size_t k = i; k < j; k++)
            cs[order[k]].c.scale = policy_scale((int64_t)(k - i + 1), (int64_t)(j - i));
        i = j;
    }

    /* Decide every customer.  The review is steady when it changed no
     * customer's state and none is still new: over months with no orders,
     * every later review would then decide the same (see
     * apply_review_through). */
    apply_decide_ctx(a, p, now_ms, &d);
    int steady = 1;
    const int64_t decided_at = decide_review_at(month); /* never the clock: decide.h */
    for (size_t i = 0; i < ncs; i++) {
        decide_customer_t *c = &cs[i].c;
        const policy_profile_t *prof = decide_profile(&d, c);
        policy_customer_t pc = {c->st, *prof, cs[i].win, (size_t)W};
        policy_decision_t dec;
        char buf[160], before[160];
        int l, lb;
        if (c->st.tier <= 0) continue;
        lb = decide_state_format(c, before, sizeof(before));
        if (policy_review_decide(a->policy, &pc, month, &dec, errstr, errstr_size) != 0)
            goto out_unwatch;
        if (decide_tier_change(&d, &tx, c, &dec, cs[i].win, (size_t)W, month,
                               decided_at, errstr, errstr_size) != 0)
            goto out_unwatch;
        l = decide_state_format(c, buf, sizeof(buf));
        if (!c->st.evaluated || l != lb || memcmp(buf, before, (size_t)l) != 0) steady = 0;
        if ((cset.n == 0 && (decide_args_push(&cset, "HSET", 4) ||
                             decide_args_push(&cset, ckey, strlen(ckey)))) ||
            decide_args_push(&cset, c->id, c->len) || decide_args_push(&cset, buf, (size_t)l))
            goto oom;
        /* The tier the next month begins with, and its grade so far. */
        l = decide_month_format(c->st.tier, prof->grade, buf, sizeof(buf));
        if ((tset.n == 0 && (decide_args_push(&tset, "HSET", 4) ||
                             decide_args_push(&tset, mkeys[W], strlen(mkeys[W])))) ||
            decide_args_push(&tset, fields[2 * i + 1], flens[2 * i + 1]) ||
            decide_args_push(&tset, buf, (size_t)l))
            goto oom;
    }
    if ((cset.n && store_tx_add(&tx, (int)cset.n, (const char **)cset.v, cset.len) != 0) ||
        (tset.n && store_tx_add(&tx, (int)tset.n, (const char **)tset.v, tset.len) != 0) ||
        decide_flush_outbox(&d, &tx) != 0)
        goto oom;
    {
        char mkey[256], old[256];
        store_key(a->store, p->topic, p->partition, "meta", mkey, sizeof(mkey));
        /* The month that leaves the kept range [month + 1 - W, month + 1]:
         * a late order for it is refused, so nothing reads it again. */
        store_month_key(a->store, p->topic, p->partition, month - W, old, sizeof(old));
        if (store_tx_addv(&tx, 4, "HSET", (size_t)4, mkey, strlen(mkey), "reviewed", (size_t)8, ym,
                          strlen(ym)) != 0 ||
            store_tx_addv(&tx, 2, "DEL", (size_t)3, old, strlen(old)) != 0)
            goto oom;
    }
    if (a->fault_review_stall_file) {
        struct timespec ts = {0, 100000000};
        FILE *f;
        for (int i = 0; i < 1200 && (f = fopen(a->fault_review_stall_file, "r")) != NULL; i++) {
            fclose(f);
            if (i == 0)
                log_warn("review", "fault injection: review of %s stalled before EXEC", ym);
            nanosleep(&ts, NULL);
        }
    }
    int src = store_exec(a->store, &tx, errstr, errstr_size);
    if (src == STORE_FENCED) {
        snprintf(errstr, errstr_size, "%s [%d]: review of %s refused: another instance owns it",
                 p->topic, (int)p->partition, ym);
        a->stats.fenced++;
        rc = APPLY_FENCED;
        goto out;
    }
    if (src != STORE_OK) goto out;
    p->meta.reviewed = month;
    p->review_steady = steady && d.tier_events == 0;
    if (d.tier_events) p->outbox_dirty = 1;
    a->stats.tier_events += d.tier_events;
    a->stats.reviews++;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    a->stats.review_seconds +=
        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    log_info("review", "%s [%d]: reviewed %.4s-%.2s: %zu customers, %" PRIu64 " tier changes",
             p->topic, (int)p->partition, ym, ym + 4, ncs, d.tier_events);
    rc = APPLY_OK;
    goto out;

oom:
    snprintf(errstr, errstr_size, "out of memory");
out_unwatch:
    store_unwatch(a->store);
out:
    for (int i = 0; i < 2; i++)
        if (r1[i]) freeReplyObject(r1[i]);
    for (int32_t k = 0; k <= W && k <= POLICY_WINDOW_MAX; k++)
        if (r2[k]) freeReplyObject(r2[k]);
    for (size_t i = 0; i < nowned; i++) free(owned[i]);
    strmap_free(&byid, NULL);
    store_tx_free(&tx);
    decide_ctx_free(&d);
    decide_args_free(&cset);
    decide_args_free(&tset);
    free(owned);
    free(fields);
    free(flens);
    free(order);
    free(cs);
    return rc;
}
