/*
 * profiles.c -- the customer-profiles join.
 *
 * The compacted topic is co-partitioned with orders: partition P of
 * profiles belongs to whoever owns partition P of orders, and its offset
 * lives in the same meta hash (poffset).  A batch of profile records is
 * one transaction (txn.c): the profile (a tombstone deletes it), an
 * override or a lowered grade decided at once (tier-change events in the
 * outbox), the worst grade of the partition's current month in each
 * customer's state, and poffset.  Profiles are joined in processing time:
 * a profile applies from the moment tierd reads it.  Profiles are decoded
 * by decode.c; this file never decodes Avro itself.
 */
#include "profiles.h"

#include "arena.h"
#include "log.h"
#include "month.h"
#include "outbox.h"
#include "profile_text.h"
#include "state.h"
#include "txn.h"
#include "validate.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pmsg {
    char id[ORDER_ID_MAX + 1];
    size_t len;
    int tombstone;
    policy_profile_t prof;
    int64_t updated_at;
    order_err_t verdict; /* decoding's, kept across attempts */
    size_t cust;         /* its customer's index */
} pmsg_t;

typedef struct pcust {
    customer_t dc;
    state_customer_t s;
    int month_dirty;
} pcust_t;

typedef struct pbatch {
    apply_ctx_t *a;
    apply_part_t *p;
    apply_msg_t *msgs;
    size_t n, ndead, ncs;
    pmsg_t *pm;
    apply_msg_t **dead;
    pcust_t *cs;
    const char **ids;
    size_t *idlens;
    strmap_t byid;
    outbox_t outbox;
    arena_t blobs;
    int64_t next;
    uint64_t prev; /* state_order_fp of the value before next, when has_prev */
    int has_prev;
    char ckey[256], pkey[256], mkey[256], off[32], pfp[24];
} pbatch_t;

/* Decodes a record once: a tombstone's key, or the profile. */
static int decode_one(pbatch_t *b, size_t i, char *errstr, size_t errstr_size) {
    apply_msg_t *m = &b->msgs[i];
    pmsg_t *pm = &b->pm[i];
    char why[200] = "";
    if (m->value == NULL) { /* tombstone: the key names the customer */
        /* It becomes a Redis field and a map key: the rules of every
         * customer id (EMPTY_ID, BAD_ID, BAD_UTF8). */
        pm->verdict = validate_id("tombstone key", m->key, m->key_len, why, sizeof(why));
        if (pm->verdict != ORDER_OK) {
            snprintf(m->reason, sizeof(m->reason),
                     "%.180s; a tombstone needs the customer id as key", why);
            return 0;
        }
        memcpy(pm->id, m->key, m->key_len);
        pm->len = m->key_len;
        pm->tombstone = 1;
        return 0;
    }
    pm->verdict = decode_profile(b->a->decoder, m->value, m->value_len, m->key, m->key_len, pm->id,
                                 &pm->prof, &pm->updated_at, why, sizeof(why));
    if (pm->verdict == ORDER_ERR_INTERNAL) {
        snprintf(errstr, errstr_size, "decoding profile at offset %" PRId64 ": %s", m->offset, why);
        return -1;
    }
    if (pm->verdict != ORDER_OK)
        snprintf(m->reason, sizeof(m->reason), "%s", why[0] ? why : order_reason_code(pm->verdict));
    else
        pm->len = strlen(pm->id);
    return 0;
}

static int prepare(pbatch_t *b, char *errstr, size_t errstr_size) {
    b->pm = calloc(b->n, sizeof(*b->pm));
    b->dead = calloc(b->n, sizeof(*b->dead));
    b->cs = calloc(b->n, sizeof(*b->cs));
    b->ids = calloc(b->n, sizeof(*b->ids));
    b->idlens = calloc(b->n, sizeof(*b->idlens));
    if (!b->pm || !b->dead || !b->cs || !b->ids || !b->idlens) goto oom;
    for (size_t i = 0; i < b->n; i++) {
        if (decode_one(b, i, errstr, errstr_size) != 0) return APPLY_RETRY;
        if (b->pm[i].verdict != ORDER_OK) continue;
        int created;
        strmap_slot_t *slot = strmap_put(&b->byid, b->pm[i].id, b->pm[i].len, &created);
        if (!slot) goto oom;
        if (created) {
            pcust_t *c = &b->cs[b->ncs];
            state_init(&c->s);
            memcpy(c->dc.id, b->pm[i].id, b->pm[i].len + 1);
            c->dc.len = b->pm[i].len;
            b->ids[b->ncs] = slot->key;
            b->idlens[b->ncs] = slot->len;
            slot->value = (void *)(uintptr_t)(++b->ncs);
        }
        b->pm[i].cust = (uintptr_t)slot->value - 1;
    }
    return APPLY_OK;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return APPLY_RETRY;
}

static int pb_plan(void *ctx, txn_read_t *r, char *errstr, size_t errstr_size) {
    pbatch_t *b = ctx;
    (void)errstr, (void)errstr_size;
    if (b->ncs == 0) return APPLY_OK;
    r->keys[0] = b->ckey;
    r->keys[1] = b->pkey;
    r->fields[0] = r->fields[1] = b->ids;
    r->flens[0] = r->flens[1] = b->idlens;
    r->nfields[0] = r->nfields[1] = b->ncs;
    r->nkeys = 2;
    return APPLY_OK;
}

static int load(pbatch_t *b, redisReply **rep, char *errstr, size_t errstr_size) {
    for (size_t j = 0; j < b->ncs; j++) {
        pcust_t *c = &b->cs[j];
        redisReply *rs = rep[0]->element[j], *rp = rep[1]->element[j];
        char why[200], id[ORDER_ID_MAX + 1];
        size_t len = c->dc.len;
        memcpy(id, c->dc.id, len + 1);
        memset(&c->dc, 0, sizeof(c->dc));
        memcpy(c->dc.id, id, len + 1);
        c->dc.len = len;
        c->month_dirty = 0;
        state_reset(&c->s);
        if (rs->type == REDIS_REPLY_STRING &&
            state_decode(&c->s, rs->str, rs->len, why, sizeof(why)) != 0)
            return apply_corrupt(b->a, b->ckey, id, len, why, 1, errstr, errstr_size);
        customer_load(&c->dc, &c->s);
        if (rp->type == REDIS_REPLY_STRING &&
            profile_text_parse(&c->dc.profile, &c->dc.profile_updated_at, rp->str, rp->len) == 0)
            c->dc.has_profile = 1;
    }
    return APPLY_OK;
}

/* One record, in offset order: the profile stored, and what it decides. */
static int apply_one(pbatch_t *b, store_tx_t *tx, size_t i, char *errstr, size_t errstr_size) {
    const pmsg_t *pm = &b->pm[i];
    pcust_t *c = &b->cs[pm->cust];
    const policy_t *pol = b->a->policy;
    const policy_profile_t *newp = pm->tombstone ? &pol->profile_default : &pm->prof;
    const int32_t cur = b->p->meta.month;
    char *buf = arena_alloc(&b->blobs, 200);
    if (!buf) goto oom;
    if (pm->tombstone) {
        if (store_tx_addv(tx, 3, "HDEL", (size_t)4, b->pkey, strlen(b->pkey), c->dc.id,
                          c->dc.len) != 0)
            goto oom;
        c->dc.has_profile = 0;
    } else {
        int l = profile_text_format(newp, pm->updated_at, buf, 200);
        if (store_tx_addv(tx, 4, "HSET", (size_t)4, b->pkey, strlen(b->pkey), c->dc.id, c->dc.len,
                          buf, (size_t)l) != 0)
            goto oom;
        c->dc.profile = *newp;
        c->dc.profile_updated_at = pm->updated_at;
        c->dc.has_profile = 1;
    }
    b->msgs[i].state = MSG_APPLIED;
    if (c->dc.st.tier <= 0) return 0; /* never ordered: the first order reads the profile */
    if (cur >= 0) {
        /* The grade lowered now counts for the partition's current month. */
        state_drop_before(&c->s, cur - b->a->window);
        state_month_t *sm = state_month(&c->s, cur, 1);
        if (!sm) goto oom;
        if (newp->grade > sm->grade) {
            if (sm->tier == 0) sm->tier = c->dc.st.tier;
            sm->grade = newp->grade;
            c->month_dirty = 1;
        }
    }
    policy_decision_t dec;
    policy_on_profile(pol, &c->dc.st, newp, &dec);
    /* decided at the profile's updated_at (a tombstone: the deleted one's) */
    return outbox_tier_change(&b->outbox, tx, &c->dc, &dec, NULL, 0, -1, c->dc.profile_updated_at,
                              errstr, errstr_size);
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return -1;
}

static int write_states(pbatch_t *b, store_tx_t *tx) {
    for (size_t j = 0; j < b->ncs; j++) {
        pcust_t *c = &b->cs[j];
        if (!c->dc.dirty && !c->month_dirty) continue;
        customer_store(&c->dc, &c->s);
        size_t len;
        const uint8_t *blob = state_encode_in(&c->s, &b->blobs, &len);
        if (!blob) return -1;
        if (store_tx_addv(tx, 4, "HSET", (size_t)4, b->ckey, strlen(b->ckey), c->dc.id, c->dc.len,
                          (const char *)blob, len) != 0)
            return -1;
    }
    return 0;
}

static int pb_decide(void *ctx, const store_meta_t *now, redisReply **rep, store_tx_t *tx,
                     char *errstr, size_t errstr_size) {
    pbatch_t *b = ctx;
    apply_part_t *p = b->p;
    int rc;
    if (now->poffset != p->meta.poffset || now->month != p->meta.month)
        return TXN_AGAIN; /* a lost reply, or the month moved: decide again */
    arena_reset(&b->blobs);
    outbox_free(&b->outbox);
    outbox_open(&b->outbox, b->a, p);
    if (b->ncs > 0 && (rc = load(b, rep, errstr, errstr_size)) != APPLY_OK) return rc;
    b->ndead = 0;
    for (size_t i = 0; i < b->n; i++) {
        apply_msg_t *m = &b->msgs[i];
        m->state = MSG_NEW;
        m->verdict = ORDER_OK;
        if (p->meta.poffset >= 0 && m->offset < p->meta.poffset) {
            m->state = MSG_REDELIVERED;
        } else if (b->pm[i].verdict != ORDER_OK) {
            m->state = MSG_DEAD;
            m->verdict = b->pm[i].verdict;
            b->dead[b->ndead++] = m;
        } else if (apply_one(b, tx, i, errstr, errstr_size) != 0) {
            return APPLY_RETRY;
        }
    }
    if (b->ndead > 0) {
        apply_part_t pp = *p;
        pp.topic = b->a->profile_topic; /* the dead letters name their own source */
        if (b->a->dead(b->a->dead_opaque, &pp, b->dead, b->ndead, errstr, errstr_size) != 0)
            return APPLY_RETRY;
    }
    const apply_msg_t *last = &b->msgs[b->n - 1];
    b->next = last->offset + 1;
    b->prev = 0;
    b->has_prev = apply_prev_fp(last, p->meta.poffset, &b->prev);
    if (p->meta.poffset > b->next) b->next = p->meta.poffset;
    snprintf(b->off, sizeof(b->off), "%" PRId64, b->next);
    snprintf(b->pfp, sizeof(b->pfp), "%" PRIu64, b->prev);
    if (write_states(b, tx) != 0 || outbox_flush(&b->outbox, tx) != 0 ||
        store_tx_addv(tx, b->has_prev ? 6 : 4, "HSET", (size_t)4, b->mkey, strlen(b->mkey),
                      "poffset", (size_t)7, b->off, strlen(b->off), "prev_pfp", (size_t)8, b->pfp,
                      strlen(b->pfp)) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return APPLY_RETRY;
    }
    return APPLY_OK;
}

static void pb_committed(void *ctx, apply_stats_t *tally) {
    pbatch_t *b = ctx;
    b->p->meta.poffset = b->next;
    if (b->has_prev) {
        b->p->meta.prev_pfp = b->prev;
        b->p->meta.has_prev_pfp = 1;
        b->p->meta.pprev_at = -1; /* the record before the offset */
    }
    if (b->outbox.tier_events) b->p->outbox_dirty = 1;
    tally->tier_events += b->outbox.tier_events;
    for (size_t i = 0; i < b->n; i++) {
        if (b->msgs[i].state == MSG_APPLIED) tally->profiles++;
        if (b->msgs[i].state == MSG_DEAD) {
            tally->dead++;
            tally->dead_by_reason[b->msgs[i].verdict]++;
        }
    }
}

static const txn_ops_t profile_ops = {pb_plan, pb_decide, pb_committed, FAULT_COMMIT, 0};

int profiles_apply(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, char *errstr,
                   size_t errstr_size) {
    pbatch_t b;
    int rc;
    if (n == 0 || !a->policy) return APPLY_OK;
    memset(&b, 0, sizeof(b));
    b.a = a;
    b.p = p;
    b.msgs = msgs;
    b.n = n;
    store_key(a->store, p->topic, p->partition, "c", b.ckey, sizeof(b.ckey));
    store_key(a->store, p->topic, p->partition, "p", b.pkey, sizeof(b.pkey));
    store_key(a->store, p->topic, p->partition, "meta", b.mkey, sizeof(b.mkey));
    rc = prepare(&b, errstr, errstr_size);
    if (rc == APPLY_OK) rc = txn_run(a, p, &profile_ops, &b, errstr, errstr_size);
    for (size_t j = 0; b.cs && j < b.ncs; j++) state_free(&b.cs[j].s);
    strmap_free(&b.byid, NULL);
    arena_free(&b.blobs);
    outbox_free(&b.outbox);
    free(b.pm);
    free(b.dead);
    free(b.cs);
    free(b.ids);
    free(b.idlens);
    return rc;
}
