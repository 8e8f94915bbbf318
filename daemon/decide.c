/*
 * decide.c -- see decide.h.  Text forms are space-separated so an
 * operator can read them with redis-cli; doubles use %.17g so they
 * round-trip exactly.
 */
#include "decide.h"

#include "month.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int copy_text(char *buf, size_t bufsize, const char *s, size_t len) {
    if (len == 0 || len >= bufsize) return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return 0;
}

int decide_profile_parse(policy_profile_t *p, int64_t *updated_at, const char *s, size_t len) {
    char buf[256], fmt, mkt, grade;
    int chain, has_ovr, ovr;
    double coop, growth;
    long long upd;
    if (copy_text(buf, sizeof(buf), s, len) != 0) return -1;
    if (sscanf(buf, "%c %c %d %c %lf %lf %d %d %lld", &fmt, &mkt, &chain, &grade, &coop, &growth,
               &has_ovr, &ovr, &upd) != 9)
        return -1;
    p->format = (policy_format_t)fmt;
    p->market = (policy_market_t)mkt;
    p->chain = chain != 0;
    p->grade = (policy_grade_t)grade;
    p->cooperation = coop;
    p->growth = growth;
    p->has_override = has_ovr != 0;
    p->tier_override = ovr;
    *updated_at = upd;
    return 0;
}

int decide_profile_format(const policy_profile_t *p, int64_t updated_at, char *buf, size_t size) {
    return snprintf(buf, size, "%c %c %d %c %.17g %.17g %d %d %" PRId64, (char)p->format,
                    (char)p->market, p->chain ? 1 : 0, (char)p->grade, p->cooperation, p->growth,
                    p->has_override ? 1 : 0, (int)p->tier_override, updated_at);
}

const policy_profile_t *decide_profile(const decide_ctx_t *d, const decide_customer_t *c) {
    return c->has_profile ? &c->profile : &d->policy->profile_default;
}

int decide_args_push(decide_args_t *a, const char *s, size_t len) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        char **v = realloc(a->v, cap * sizeof(*v));
        if (!v) return -1;
        a->v = v;
        size_t *l = realloc(a->len, cap * sizeof(*l));
        if (!l) return -1;
        a->len = l;
        a->cap = cap;
    }
    char *c = malloc(len + 1);
    if (!c) return -1;
    memcpy(c, s, len);
    c[len] = '\0';
    a->v[a->n] = c;
    a->len[a->n++] = len;
    return 0;
}

void decide_args_free(decide_args_t *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n; i++) free(a->v[i]);
    free(a->v);
    free(a->len);
    memset(a, 0, sizeof(*a));
}

/* Events per outbox entry at most: a transaction that decides more (a
 * batch of new customers, a review page) writes several entries, so the
 * publisher reads the outbox in pieces of bounded size. */
#define OUTBOX_ENTRY_EVENTS 256

/* Adds the entry being filled to tx (its strings stay in d->outbox). */
static int outbox_close(decide_ctx_t *d, store_tx_t *tx) {
    decide_args_t *o = &d->outbox;
    size_t from = d->entry_from;
    if (d->entry_events == 0) return 0;
    d->entry_from = o->n;
    d->entry_events = 0;
    return store_tx_add(tx, (int)(o->n - from), (const char **)o->v + from, o->len + from);
}

static int outbox_add(decide_ctx_t *d, store_tx_t *tx, const char *topic, const char *key,
                      size_t keylen, const char *id, const char *value, size_t vlen) {
    decide_args_t *o = &d->outbox;
    if (d->entry_events == OUTBOX_ENTRY_EVENTS && outbox_close(d, tx) != 0) return -1;
    if (d->entry_events == 0 && (decide_args_push(o, "XADD", 4) ||
                                 decide_args_push(o, d->outbox_key, strlen(d->outbox_key)) ||
                                 decide_args_push(o, "*", 1)))
        return -1;
    d->entry_events++;
    return decide_args_push(o, "t", 1) || decide_args_push(o, topic, strlen(topic)) ||
           decide_args_push(o, "k", 1) || decide_args_push(o, key, keylen) ||
           decide_args_push(o, "i", 1) || decide_args_push(o, id, strlen(id)) ||
           decide_args_push(o, "v", 1) || decide_args_push(o, value, vlen);
}

int decide_flush_outbox(decide_ctx_t *d, store_tx_t *tx) { return outbox_close(d, tx); }

void decide_ctx_free(decide_ctx_t *d) {
    if (!d) return;
    decide_args_free(&d->outbox);
    d->entry_from = d->entry_events = 0;
}

int64_t decide_review_at(const month_zone_t *z, int32_t month) {
    return month_start_ms(z, month + 1);
}

int decide_tier_change(decide_ctx_t *d, store_tx_t *tx, decide_customer_t *c,
                       const policy_decision_t *dec, const policy_month_t *window,
                       size_t nwindow, int32_t month, int64_t decided_at_ms, char *errstr,
                       size_t errstr_size) {
    if (memcmp(&c->st, &dec->next, sizeof(c->st)) != 0) c->dirty = 1;
    if (!dec->changed) {
        c->st = dec->next;
        return 0;
    }
    char code[POLICY_CODE_MAX], id[160], *value = NULL;
    size_t vlen = 0;
    policy_classification(decide_profile(d, c), !dec->next.evaluated,
                          c->scale >= '1' && c->scale <= '3' ? c->scale : '2', code);
    events_tier_change_t tc = {
        .customer_id = c->id,
        .sequence = c->seq + 1,
        .decision = dec,
        .window = window,
        .nwindow = nwindow,
        .month = month,
        .classification = code,
        .policy = d->policy,
        .decided_at_ms = decided_at_ms,
    };
    if (events_encode_tier_change(d->events, &tc, &value, &vlen, id, sizeof(id), errstr,
                                  errstr_size) != 0)
        return -1;
    int rc = outbox_add(d, tx, d->tier_topic, c->id, c->len, id, value, vlen);
    free(value);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    c->seq++;
    c->st = dec->next;
    c->dirty = 1;
    d->tier_events++;
    return 0;
}

int decide_quota(decide_ctx_t *d, store_tx_t *tx, const decide_customer_t *c, int32_t month,
                 int32_t tier, policy_quota_kind_t kind, const policy_quota_limits_t *lim,
                 int64_t consumed, const char *order_id, int64_t placed_at_ms, char *errstr,
                 size_t errstr_size) {
    char id[160], *value = NULL;
    size_t vlen = 0;
    events_quota_t q = {
        .customer_id = c->id,
        .month = month,
        .tier = tier,
        .kind = kind,
        .limits = lim,
        .consumed = consumed,
        .order_id = order_id,
        .placed_at_ms = placed_at_ms,
        .policy = d->policy,
    };
    if (events_encode_quota(d->events, &q, &value, &vlen, id, sizeof(id), errstr, errstr_size) !=
        0)
        return -1;
    int rc = outbox_add(d, tx, d->quota_topic, c->id, c->len, id, value, vlen);
    free(value);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    d->quota_events++;
    return 0;
}
