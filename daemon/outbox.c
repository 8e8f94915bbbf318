/*
 * outbox.c -- see outbox.h.  Owns the XADD arguments of one transaction's
 * entries; the events' bytes come from events.c, the stream's key from
 * store.c.
 */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Appends an argument: a copy of s in the outbox's arena when copy is set,
 * else s itself (constants, and strings that outlive the transaction). */
static int args_push(outbox_args_t *a, const char *s, size_t len, int copy) {
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        const char **v = realloc(a->v, cap * sizeof(*v));
        if (!v) return -1;
        a->v = v;
        size_t *l = realloc(a->len, cap * sizeof(*l));
        if (!l) return -1;
        a->len = l;
        a->cap = cap;
    }
    if (copy && !(s = arena_strndup(&a->strs, s, len))) return -1;
    a->v[a->n] = s;
    a->len[a->n++] = len;
    return 0;
}

static void args_free(outbox_args_t *a) {
    free(a->v);
    free(a->len);
    arena_free(&a->strs);
    memset(a, 0, sizeof(*a));
}

void outbox_open(outbox_t *o, const apply_ctx_t *a, const apply_part_t *p) {
    memset(o, 0, sizeof(*o));
    o->policy = a->policy;
    o->events = a->events;
    o->zone = &a->zone;
    o->tier_topic = a->tier_topic;
    o->quota_topic = a->quota_topic;
    store_key(a->store, p->topic, p->partition, "outbox", o->key, sizeof(o->key));
}

/* Adds the entry being filled to tx (its strings stay in o->args). */
static int entry_close(outbox_t *o, store_tx_t *tx) {
    outbox_args_t *a = &o->args;
    size_t from = o->entry_from;
    if (o->entry_events == 0) return 0;
    o->entry_from = a->n;
    o->entry_events = 0;
    return store_tx_add(tx, (int)(a->n - from), a->v + from, a->len + from);
}

static int entry_add(outbox_t *o, store_tx_t *tx, const char *topic, const char *key, size_t keylen,
                     const char *id, const char *value, size_t vlen) {
    outbox_args_t *a = &o->args;
    if (o->entry_events == OUTBOX_ENTRY_EVENTS && entry_close(o, tx) != 0) return -1;
    /* The key lives in o, the topic in the configuration: both outlive
     * the transaction. */
    if (o->entry_events == 0 &&
        (args_push(a, "XADD", 4, 0) || args_push(a, o->key, strlen(o->key), 0) ||
         args_push(a, "*", 1, 0)))
        return -1;
    o->entry_events++;
    return args_push(a, "t", 1, 0) || args_push(a, topic, strlen(topic), 0) ||
           args_push(a, "k", 1, 0) || args_push(a, key, keylen, 1) || args_push(a, "i", 1, 0) ||
           args_push(a, id, strlen(id), 1) || args_push(a, "v", 1, 0) ||
           args_push(a, value, vlen, 1);
}

int outbox_flush(outbox_t *o, store_tx_t *tx) {
    return entry_close(o, tx);
}

void outbox_free(outbox_t *o) {
    if (!o) return;
    args_free(&o->args);
    o->entry_from = o->entry_events = 0;
}

int64_t outbox_review_at(const month_zone_t *z, int32_t month) {
    return month_start_ms(z, month + 1);
}

int outbox_tier_change(outbox_t *o, store_tx_t *tx, customer_t *c, const policy_decision_t *dec,
                       const policy_month_t *window, size_t nwindow, int32_t month,
                       int64_t decided_at_ms, char *errstr, size_t errstr_size) {
    if (memcmp(&c->st, &dec->next, sizeof(c->st)) != 0) c->dirty = 1;
    if (!dec->changed) {
        c->st = dec->next;
        return 0;
    }
    char code[POLICY_CODE_MAX], id[160], *value = NULL;
    size_t vlen = 0;
    policy_classification(customer_profile(c, o->policy), !dec->next.evaluated,
                          c->scale >= '1' && c->scale <= '3' ? c->scale : '2', code);
    events_tier_change_t tc = {
        .customer_id = c->id,
        .sequence = c->seq + 1,
        .decision = dec,
        .window = window,
        .nwindow = nwindow,
        .month = month,
        .classification = code,
        .policy = o->policy,
        .decided_at_ms = decided_at_ms,
    };
    if (events_encode_tier_change(o->events, &tc, &value, &vlen, id, sizeof(id), errstr,
                                  errstr_size) != 0)
        return -1;
    int rc = entry_add(o, tx, o->tier_topic, c->id, c->len, id, value, vlen);
    free(value);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    c->seq++;
    c->st = dec->next;
    c->dirty = 1;
    o->tier_events++;
    return 0;
}

int outbox_quota(outbox_t *o, store_tx_t *tx, const customer_t *c, int32_t month, int32_t tier,
                 policy_quota_kind_t kind, const policy_quota_limits_t *lim, int64_t consumed,
                 const char *order_id, int64_t placed_at_ms, char *errstr, size_t errstr_size) {
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
        .policy = o->policy,
    };
    if (events_encode_quota(o->events, &q, &value, &vlen, id, sizeof(id), errstr, errstr_size) != 0)
        return -1;
    int rc = entry_add(o, tx, o->quota_topic, c->id, c->len, id, value, vlen);
    free(value);
    if (rc != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    o->quota_events++;
    o->quota_by_kind[kind]++;
    return 0;
}
