/*
 * profiles.c -- the customer-profiles join (SPEC section 4).
 *
 * The compacted topic is co-partitioned with orders: partition P of
 * profiles belongs to whoever owns partition P of orders, and its offset
 * lives in the same meta hash (poffset).  A batch of profile records is
 * applied in one MULTI/EXEC: the profile (a tombstone deletes it), an
 * override or a lowered grade decided at once (tier-change events in the
 * outbox), the worst grade of the partition's current month, and poffset.
 * Profiles are joined in processing time: a profile applies from the
 * moment tierd reads it.
 */
#include "apply.h"

#include "log.h"
#include "month.h"
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
} pmsg_t;

/* profiles_once's answer when Redis moved under it: decide again. */
enum { PROFILES_AGAIN = 1 };

static int profiles_once(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n,
                         int64_t now_ms, char *errstr, size_t errstr_size) {
    int rc = APPLY_RETRY;
    pmsg_t *pm = NULL;
    apply_msg_t **dead = NULL;
    size_t ndead = 0;
    strmap_t cust = {0};
    const char **cf = NULL, **tf = NULL;
    size_t *cfl = NULL, *tfl = NULL, ncf = 0;
    char **owned = NULL;
    size_t nowned = 0;
    redisReply *rep[3] = {NULL, NULL, NULL};
    store_tx_t tx = {0};
    store_meta_t now;
    decide_ctx_t d;
    char ckey[256], pkey[256], tkey[256], mkey[256];
    memset(&d, 0, sizeof(d));

    if (n == 0 || !a->policy) return APPLY_OK;
    pm = calloc(n, sizeof(*pm));
    dead = calloc(n, sizeof(*dead));
    cf = calloc(n, sizeof(*cf));
    tf = calloc(n, sizeof(*tf));
    cfl = calloc(n, sizeof(*cfl));
    tfl = calloc(n, sizeof(*tfl));
    owned = calloc(n, sizeof(*owned));
    if (!pm || !dead || !cf || !tf || !cfl || !tfl || !owned) goto oom;

    /* Decode, refuse the bad ones, collect the customers. */
    for (size_t i = 0; i < n; i++) {
        apply_msg_t *m = &msgs[i];
        m->state = MSG_NEW;
        m->verdict = ORDER_OK;
        if (p->meta.poffset >= 0 && m->offset < p->meta.poffset) {
            m->state = MSG_REDELIVERED;
            continue;
        }
        if (m->value == NULL) { /* tombstone: the key names the customer */
            /* It becomes a Redis key and a map key: the rules of every
             * customer id (EMPTY_ID, BAD_ID, BAD_UTF8). */
            char why[200] = "";
            order_err_t e = validate_id("tombstone key", m->key, m->key_len, why, sizeof(why));
            if (e != ORDER_OK) {
                m->state = MSG_DEAD;
                m->verdict = e;
                snprintf(m->reason, sizeof(m->reason),
                         "%.180s; a tombstone needs the customer id as key", why);
                dead[ndead++] = m;
                continue;
            }
            memcpy(pm[i].id, m->key, m->key_len);
            pm[i].len = m->key_len;
            pm[i].tombstone = 1;
        } else {
            char why[200] = "";
            order_err_t e = events_decode_profile(a->events, m->value, m->value_len, m->key,
                                                  m->key_len, pm[i].id, &pm[i].prof,
                                                  &pm[i].updated_at, why, sizeof(why));
            if (e == ORDER_ERR_INTERNAL) {
                snprintf(errstr, errstr_size, "decoding profile at offset %" PRId64 ": %s",
                         m->offset, why);
                goto out;
            }
            if (e != ORDER_OK) {
                m->state = MSG_DEAD;
                m->verdict = e;
                snprintf(m->reason, sizeof(m->reason), "%s", why[0] ? why : order_reason_code(e));
                dead[ndead++] = m;
                continue;
            }
            pm[i].len = strlen(pm[i].id);
        }
        int created;
        strmap_slot_t *slot = strmap_put(&cust, pm[i].id, pm[i].len, &created);
        if (!slot) goto oom;
        if (!created) continue;
        decide_customer_t *c = calloc(1, sizeof(*c));
        char *t = malloc(pm[i].len + 3);
        if (!c || !t) {
            free(c);
            free(t);
            goto oom;
        }
        slot->value = c;
        memcpy(c->id, pm[i].id, pm[i].len + 1);
        c->len = pm[i].len;
        c->batch_index = ncf;
        c->scale = 'X';
        snprintf(t, pm[i].len + 3, "t:%s", pm[i].id);
        owned[nowned++] = t;
        cf[ncf] = slot->key;
        cfl[ncf] = slot->len;
        tf[ncf] = t;
        tfl[ncf] = pm[i].len + 2;
        ncf++;
    }

    store_key(a->store, p->topic, p->partition, "c", ckey, sizeof(ckey));
    store_key(a->store, p->topic, p->partition, "p", pkey, sizeof(pkey));
    store_key(a->store, p->topic, p->partition, "meta", mkey, sizeof(mkey));
    /* The grade lowered now counts for the partition's current month. */
    int32_t cur = p->meta.month;
    store_month_key(a->store, p->topic, p->partition, cur >= 0 ? cur : 0, tkey, sizeof(tkey));
    if (ncf > 0) {
        char *keys[3] = {ckey, pkey, tkey};
        const char **f[3] = {cf, cf, tf};
        size_t *fl[3] = {cfl, cfl, tfl}, nf[3] = {ncf, ncf, ncf};
        if (store_read(a->store, p->topic, p->partition, &now, cur >= 0 ? 3 : 2, keys, f, fl, nf,
                       rep, errstr, errstr_size) != STORE_OK)
            goto out;
    } else {
        if (store_read(a->store, p->topic, p->partition, &now, 0, NULL, NULL, NULL, NULL, rep,
                       errstr, errstr_size) != STORE_OK)
            goto out;
    }
    if (now.epoch != p->meta.epoch || now.poffset != p->meta.poffset || now.month != cur) {
        store_unwatch(a->store);
        int verdict = apply_meta_verdict(p, &now);
        if (verdict == APPLY_FENCED) {
            snprintf(errstr, errstr_size, "%s [%d]: profiles refused: another instance owns it",
                     a->profile_topic, (int)p->partition);
            rc = APPLY_FENCED;
        } else if (verdict == APPLY_REWIND) {
            snprintf(errstr, errstr_size, "%s [%d]: Redis lost writes", a->profile_topic,
                     (int)p->partition);
            rc = APPLY_REWIND;
        } else {
            p->meta = now; /* a lost reply, or the month moved: decide again */
            p->outbox_dirty = 1; /* what a lost commit decided waits in the outbox */
            rc = PROFILES_AGAIN;
        }
        goto out;
    }
    apply_decide_ctx(a, p, now_ms, &d);
    for (size_t j = 0; j < ncf; j++) {
        decide_customer_t *c = strmap_get(&cust, cf[j], cfl[j])->value;
        redisReply *rs = rep[0]->element[j], *rp = rep[1]->element[j];
        if (rs->type == REDIS_REPLY_STRING) decide_state_parse(c, rs->str, rs->len);
        if (rp->type == REDIS_REPLY_STRING &&
            decide_profile_parse(&c->profile, &c->profile_updated_at, rp->str, rp->len) == 0)
            c->has_profile = 1;
    }

    /* Decide in offset order. */
    int32_t *mtier = calloc(ncf + 1, sizeof(*mtier));
    policy_grade_t *mgrade = calloc(ncf + 1, sizeof(*mgrade));
    int *mdirty = calloc(ncf + 1, sizeof(*mdirty));
    if (!mtier || !mgrade || !mdirty) {
        free(mtier), free(mgrade), free(mdirty);
        goto oom;
    }
    for (size_t j = 0; j < ncf && cur >= 0; j++)
        if (rep[2]->element[j]->type == REDIS_REPLY_STRING)
            decide_month_parse(&mtier[j], &mgrade[j], rep[2]->element[j]->str,
                               rep[2]->element[j]->len);
    int failed = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        if (msgs[i].state != MSG_NEW) continue;
        decide_customer_t *c = strmap_get(&cust, pm[i].id, pm[i].len)->value;
        size_t j = c->batch_index;
        const policy_profile_t *newp = pm[i].tombstone ? &a->policy->profile_default : &pm[i].prof;
        char buf[200];
        int l;
        if (pm[i].tombstone) {
            failed |= store_tx_addv(&tx, 3, "HDEL", (size_t)4, pkey, strlen(pkey), c->id, c->len);
            c->has_profile = 0;
        } else {
            l = decide_profile_format(newp, pm[i].updated_at, buf, sizeof(buf));
            failed |= store_tx_addv(&tx, 4, "HSET", (size_t)4, pkey, strlen(pkey), c->id, c->len,
                                    buf, (size_t)l);
            c->profile = *newp;
            c->profile_updated_at = pm[i].updated_at;
            c->has_profile = 1;
        }
        msgs[i].state = MSG_APPLIED;
        if (c->st.tier <= 0) continue; /* never ordered: the first order reads the profile */
        if (cur >= 0 && newp->grade > mgrade[j]) {
            if (mtier[j] == 0) mtier[j] = c->st.tier;
            mgrade[j] = newp->grade;
            mdirty[j] = 1;
        }
        policy_decision_t dec;
        policy_on_profile(a->policy, &c->st, newp, &dec);
        /* decided at the profile's updated_at (a tombstone: the deleted one's) */
        if (decide_tier_change(&d, &tx, c, &dec, NULL, 0, -1, c->profile_updated_at, errstr,
                               errstr_size) != 0) {
            failed = 2;
            break;
        }
    }
    for (size_t j = 0; j < ncf && !failed; j++) {
        decide_customer_t *c = strmap_get(&cust, cf[j], cfl[j])->value;
        char buf[160];
        int l;
        if (c->dirty) {
            l = decide_state_format(c, buf, sizeof(buf));
            failed |= store_tx_addv(&tx, 4, "HSET", (size_t)4, ckey, strlen(ckey), c->id, c->len,
                                    buf, (size_t)l);
        }
        if (mdirty[j]) {
            l = decide_month_format(mtier[j], mgrade[j], buf, sizeof(buf));
            failed |= store_tx_addv(&tx, 4, "HSET", (size_t)4, tkey, strlen(tkey), tf[j], tfl[j],
                                    buf, (size_t)l);
        }
    }
    free(mtier), free(mgrade), free(mdirty);
    if (failed == 2) goto out_unwatch;
    if (failed) goto oom;
    if (ndead > 0) {
        apply_part_t pp = *p;
        pp.topic = a->profile_topic; /* the dead letters name their own source */
        if (a->dead(a->dead_opaque, &pp, dead, ndead, errstr, errstr_size) != 0) goto out_unwatch;
    }
    {
        char off[32];
        int64_t next = msgs[n - 1].offset + 1;
        if (p->meta.poffset > next) next = p->meta.poffset;
        snprintf(off, sizeof(off), "%" PRId64, next);
        if (decide_flush_outbox(&d, &tx) != 0 ||
            store_tx_addv(&tx, 4, "HSET", (size_t)4, mkey, strlen(mkey), "poffset", (size_t)7,
                          off, strlen(off)) != 0)
            goto oom;
        int src = store_exec(a->store, &tx, errstr, errstr_size);
        if (src == STORE_FENCED) {
            snprintf(errstr, errstr_size, "%s [%d]: profiles refused: another instance took it",
                     a->profile_topic, (int)p->partition);
            rc = APPLY_FENCED;
            goto out;
        }
        if (src != STORE_OK) goto out;
        p->meta.poffset = next;
        if (d.tier_events) p->outbox_dirty = 1;
        a->stats.tier_events += d.tier_events;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].state == MSG_APPLIED) a->stats.profiles++;
        if (msgs[i].state == MSG_DEAD) {
            a->stats.dead++;
            a->stats.dead_by_reason[msgs[i].verdict]++;
        }
    }
    rc = APPLY_OK;
    goto out;

oom:
    snprintf(errstr, errstr_size, "out of memory");
out_unwatch:
    store_unwatch(a->store);
out:
    for (int i = 0; i < 3; i++)
        if (rep[i]) freeReplyObject(rep[i]);
    for (size_t i = 0; i < nowned; i++) free(owned[i]);
    strmap_free(&cust, free);
    store_tx_free(&tx);
    decide_ctx_free(&d);
    free(owned);
    free(cf);
    free(tf);
    free(cfl);
    free(tfl);
    free(dead);
    free(pm);
    return rc;
}

int apply_profiles(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n,
                   int64_t now_ms, char *errstr, size_t errstr_size) {
    for (int attempt = 0; attempt < 3; attempt++) {
        int rc = profiles_once(a, p, msgs, n, now_ms, errstr, errstr_size);
        if (rc != PROFILES_AGAIN) return rc;
    }
    snprintf(errstr, errstr_size, "%s [%d]: partition state kept changing under the profiles",
             a->profile_topic, (int)p->partition);
    return APPLY_RETRY;
}
