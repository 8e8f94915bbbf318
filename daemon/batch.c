/*
 * batch.c -- an order batch in four stages, each with one owner:
 *
 *   plan    decode, validate, month and order fingerprint of every record
 *           (once: pure); then, against the partition's month, lateness
 *           and the cut before an order that closes months still to review;
 *   read    the state and profile of exactly the customers the batch
 *           touches, in one watched round trip (txn.c), sent in parts
 *           while plan still decodes (batch_stream);
 *   decide  pure C, in offset order: dedupe, sums, scores, quota and tier
 *           decisions, giving new customer states and events;
 *   write   one MULTI/EXEC: the states, the outbox entry, the offset
 *           (txn.c), after the refused records are durable.
 *
 * Invariants:
 *  - decisions are made in offset order, as if records were applied one by
 *    one, so a batch of any size gives the same state as single records;
 *  - the partition's month only moves forward (event time), and an order
 *    older than the window of the month at its turn is LATE;
 *  - an order id is looked up in every kept month of its customer before
 *    it counts (dedupe inside the window, by fingerprint: state.h);
 *  - nothing is written unless the dead-letter sink has made every refused
 *    record durable first;
 *  - states, decided events (outbox) and the offset are written in one
 *    MULTI/EXEC.
 */
#include "batch.h"

#include "arena.h"
#include "log.h"
#include "month.h"
#include "outbox.h"
#include "profile_text.h"
#include "state.h"
#include "txn.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* One customer the batch touches. */
typedef struct bcust {
    customer_t dc;      /* the decision view: id, tier state, profile */
    state_customer_t s; /* months and fingerprints */
    int dirty;
    int32_t score_month; /* the live score is still to compute at this month; -1 none */
} bcust_t;

/* The batch's working memory, kept in the apply context between batches:
 * grown to the largest batch seen, sized by what a batch touches. */
struct batch_work {
    size_t ncap;
    int32_t *omonth;
    uint64_t *ofp;
    uint32_t *ocust; /* record -> customer index */
    uint32_t *oskus; /* record -> where its SKU fingerprints start in skus */
    uint32_t *onskus;
    uint32_t *skus; /* the SALEs' SKU fingerprints, sorted and distinct per order */
    size_t nskus, skucap;
    order_err_t *verdict;
    apply_msg_t **dead;
    bcust_t **cs; /* customers: cs[0..ncs) in use, the rest kept for reuse */
    size_t ncs, cscap;
    const char **ids; /* cs[i]'s id, for the reads */
    size_t *idlens;
    const char **argv; /* HSET c id blob ... */
    size_t *argvlen;
    size_t argcap;
    arena_t blobs; /* encoded states of one attempt */
};

typedef struct batch {
    apply_ctx_t *a;
    apply_part_t *p;
    struct batch_work *w;
    apply_msg_t *msgs;
    size_t n, n_eff, ndead;
    int32_t review_to, final_month;
    int64_t now_ms; /* the clock validation judges placed_at by */
    int64_t next_offset;
    int decisions;
    outbox_t outbox;
    char ckey[256], pkey[256], mkey[256], off[32], mon[16], upd[32], pfp[24];
    uint64_t prev_fp; /* of the record before next_offset, when has_prev_fp */
    int has_prev_fp;
} batch_t;

static int grow(void *pv, size_t have, size_t want, size_t elem) {
    void **p = pv;
    void *n = realloc(*p, want * elem);
    if (!n) return -1;
    memset((char *)n + have * elem, 0, (want - have) * elem);
    *p = n;
    return 0;
}

static struct batch_work *work_get(apply_ctx_t *a, size_t n) {
    struct batch_work *w = a->work;
    if (!w && !(w = a->work = calloc(1, sizeof(*w)))) return NULL;
    if (n > w->ncap) {
        if (grow(&w->omonth, w->ncap, n, sizeof(*w->omonth)) ||
            grow(&w->ofp, w->ncap, n, sizeof(*w->ofp)) ||
            grow(&w->ocust, w->ncap, n, sizeof(*w->ocust)) ||
            grow(&w->oskus, w->ncap, n, sizeof(*w->oskus)) ||
            grow(&w->onskus, w->ncap, n, sizeof(*w->onskus)) ||
            grow(&w->verdict, w->ncap, n, sizeof(*w->verdict)) ||
            grow(&w->dead, w->ncap, n, sizeof(*w->dead)))
            return NULL;
        w->ncap = n;
    }
    if (a->orders_cap < n) {
        if (grow(&a->orders, a->orders_cap, n, sizeof(*a->orders))) return NULL;
        a->orders_cap = n;
    }
    return w;
}

void batch_work_free(struct batch_work *w) {
    if (!w) return;
    for (size_t i = 0; i < w->cscap; i++) {
        if (!w->cs[i]) continue;
        state_free(&w->cs[i]->s);
        free(w->cs[i]);
    }
    free(w->cs);
    free(w->omonth);
    free(w->ofp);
    free(w->ocust);
    free(w->oskus);
    free(w->onskus);
    free(w->skus);
    free(w->verdict);
    free(w->dead);
    free(w->ids);
    free(w->idlens);
    free(w->argv);
    free(w->argvlen);
    arena_free(&w->blobs);
    free(w);
}

/* The customer of id, added on first sight.  -1 when out of memory. */
static int64_t cust_index(apply_ctx_t *a, struct batch_work *w, const char *id, size_t len) {
    int created;
    strmap_slot_t *slot = strmap_put(&a->cust, id, len, &created);
    if (!slot) return -1;
    if (!created) return (int64_t)(uintptr_t)slot->value - 1;
    if (w->ncs == w->cscap) {
        size_t cap = w->cscap ? w->cscap * 2 : 64;
        if (grow(&w->cs, w->cscap, cap, sizeof(*w->cs)) ||
            grow(&w->ids, w->cscap, cap, sizeof(*w->ids)) ||
            grow(&w->idlens, w->cscap, cap, sizeof(*w->idlens)))
            return -1;
        w->cscap = cap;
    }
    if (!w->cs[w->ncs]) {
        if (!(w->cs[w->ncs] = calloc(1, sizeof(bcust_t)))) return -1;
        state_init(&w->cs[w->ncs]->s);
    }
    bcust_t *c = w->cs[w->ncs];
    memset(&c->dc, 0, sizeof(c->dc));
    memcpy(c->dc.id, id, len);
    c->dc.id[len] = '\0';
    c->dc.len = len;
    w->ids[w->ncs] = slot->key; /* the map's copy lives as long as the entry */
    w->idlens[w->ncs] = slot->len;
    slot->value = (void *)(uintptr_t)(w->ncs + 1);
    return (int64_t)w->ncs++;
}

static void set_dead(apply_msg_t *m, order_err_t err, const char *reason) {
    m->state = MSG_DEAD;
    m->verdict = err;
    snprintf(m->reason, sizeof(m->reason), "%s", reason);
}

/* Keeps what deciding needs of a valid order: its fields without the
 * lines, and the fingerprints of its SKUs (a SALE's). */
static int keep_order(apply_ctx_t *a, struct batch_work *w, size_t i, const order_t *o) {
    size_t need = w->nskus + (o->kind == ORDER_SALE ? o->nlines : 0);
    if (need > w->skucap) {
        size_t cap = w->skucap ? w->skucap : 4096;
        while (cap < need) cap *= 2;
        if (grow(&w->skus, w->skucap, cap, sizeof(*w->skus))) return -1;
        w->skucap = cap;
    }
    w->oskus[i] = (uint32_t)w->nskus;
    w->onskus[i] = o->kind == ORDER_SALE ? (uint32_t)state_order_skus(o, &w->skus[w->nskus]) : 0;
    w->nskus += w->onskus[i];
    order_t *kept = &a->orders[i];
    *kept = *o;
    kept->lines = NULL; /* the lines stay with the decoder's order */
    kept->nlines = kept->lines_cap = 0;
    return 0;
}

/* Records decoded between two parts of the batch's read: Redis reads the
 * states of the customers seen so far while the next are decoded. */
#define PART_RECORDS 1024

/* The read of customers [from, from + n): their states, and their
 * profiles when deciding. */
static void read_customers(batch_t *b, txn_read_t *r, size_t from, size_t n) {
    r->keys[r->nkeys] = b->ckey;
    r->fields[r->nkeys] = b->w->ids + from;
    r->flens[r->nkeys] = b->w->idlens + from;
    r->nfields[r->nkeys++] = n;
    if (b->decisions) {
        r->keys[r->nkeys] = b->pkey;
        r->fields[r->nkeys] = b->w->ids + from;
        r->flens[r->nkeys] = b->w->idlens + from;
        r->nfields[r->nkeys++] = n;
    }
}

/* The customers first seen since the last part (*sent on), as the next
 * part of the read. */
static void send_part(batch_t *b, txn_stream_t *st, size_t *sent) {
    txn_read_t r;
    if (b->w->ncs == *sent) return;
    memset(&r, 0, sizeof(r));
    read_customers(b, &r, *sent, b->w->ncs - *sent);
    txn_stream_part(st, &r);
    *sent = b->w->ncs;
}

/* Stage 1a, once per batch: decode, validate, month, fingerprints,
 * customer.  Pure: independent of the partition's state.  Every record is
 * decoded into the same order; what deciding needs of it is kept.  Every
 * PART_RECORDS records the new customers go to st, to be read. */
static int plan_records(batch_t *b, txn_stream_t *st, char *errstr, size_t errstr_size) {
    apply_ctx_t *a = b->a;
    struct batch_work *w = b->w;
    order_t *o = &a->decoded;
    size_t sent = 0;
    strmap_clear(&a->cust, NULL);
    w->ncs = 0;
    w->nskus = 0;
    for (size_t i = 0; i < b->n; i++) {
        if (i && i % PART_RECORDS == 0) send_part(b, st, &sent);
        apply_msg_t *m = &b->msgs[i];
        char why[200];
        why[0] = '\0'; /* not the whole array: this runs for every record */
        order_err_t e = decode_order(a->decoder, m->value, m->value_len, o, why, sizeof(why));
        if (e == ORDER_OK)
            e = validate_order(o, m->key, m->key_len, b->now_ms, &a->rules, why, sizeof(why));
        w->verdict[i] = e;
        m->reason[0] = '\0';
        if (e == ORDER_ERR_INTERNAL) {
            /* Out of memory is not the record's fault: never dead-letter it. */
            snprintf(errstr, errstr_size, "decoding offset %" PRId64 ": %s", m->offset, why);
            return APPLY_RETRY;
        }
        if (e != ORDER_OK) {
            snprintf(m->reason, sizeof(m->reason), "%s", why[0] ? why : order_reason_code(e));
            continue;
        }
        w->omonth[i] = month_of_ms(&a->zone, o->placed_at_ms);
        w->ofp[i] = state_order_fp(o->order_id, o->order_id_len);
        int64_t ci = cust_index(a, w, o->customer_id, o->customer_id_len);
        if (ci < 0 || keep_order(a, w, i, o) != 0) {
            snprintf(errstr, errstr_size, "out of memory");
            return APPLY_RETRY;
        }
        w->ocust[i] = (uint32_t)ci;
    }
    send_part(b, st, &sent);
    return APPLY_OK;
}

/* Stage 1b, per attempt: lateness depends only on the sequence of months,
 * so it is settled before reading.  The first order of a later month ends
 * the batch when months it closes still need their review. */
static void plan_cut(batch_t *b) {
    const apply_part_t *p = b->p;
    const int32_t W = b->a->window;
    struct batch_work *w = b->w;
    int32_t cur = p->meta.month;
    b->n_eff = b->n;
    b->review_to = -1;
    for (size_t i = 0; i < b->n; i++) {
        apply_msg_t *m = &b->msgs[i];
        m->state = MSG_NEW;
        m->verdict = ORDER_OK;
        if (p->meta.offset >= 0 && m->offset < p->meta.offset) {
            m->state = MSG_REDELIVERED; /* already applied, or already dead-lettered */
            continue;
        }
        if (w->verdict[i] != ORDER_OK) {
            m->state = MSG_DEAD;
            m->verdict = w->verdict[i];
            continue;
        }
        if (cur >= 0 && w->omonth[i] < cur - W + 1) {
            char om[16], lo[16], hi[16], why[200];
            snprintf(why, sizeof(why),
                     "placed_at falls in %s, before this partition's window %s..%s",
                     policy_month_text(w->omonth[i], om, sizeof(om)),
                     policy_month_text(cur - W + 1, lo, sizeof(lo)),
                     policy_month_text(cur, hi, sizeof(hi)));
            set_dead(m, ORDER_ERR_LATE, why);
            continue;
        }
        if (b->decisions && cur >= 0 && w->omonth[i] > cur && w->omonth[i] - 1 > p->meta.reviewed) {
            b->n_eff = i;
            b->review_to = w->omonth[i] - 1;
            break;
        }
        if (w->omonth[i] > cur) cur = w->omonth[i];
    }
    b->final_month = cur;
}

/* Stage 2: what the batch reads -- its customers' states and profiles. */
static int batch_plan(void *ctx, txn_read_t *r, char *errstr, size_t errstr_size) {
    batch_t *b = ctx;
    (void)errstr, (void)errstr_size;
    plan_cut(b);
    if (b->w->ncs > 0) read_customers(b, r, 0, b->w->ncs); /* else refused or redelivered only */
    return APPLY_OK;
}

/* Stages 1 and 2 together, before the first attempt: the records planned
 * while Redis reads the customers seen so far.  Nothing to write when
 * the first record waits for a review. */
static int batch_stream(void *ctx, txn_stream_t *st, char *errstr, size_t errstr_size) {
    batch_t *b = ctx;
    int rc = plan_records(b, st, errstr, errstr_size);
    if (rc != APPLY_OK) return rc;
    plan_cut(b);
    return b->n_eff == 0 ? TXN_SKIP : APPLY_OK;
}

/* Loads every customer's state and profile from the replies. */
static int load_customers(batch_t *b, redisReply **replies, char *errstr, size_t errstr_size) {
    struct batch_work *w = b->w;
    for (int k = 0; w->ncs && k < 1 + b->decisions; k++)
        if (!replies[k] || replies[k]->elements != w->ncs) { /* never, but never read past it */
            snprintf(errstr, errstr_size, "%s: %zu replies read for %zu customers",
                     k ? b->pkey : b->ckey, replies[k] ? replies[k]->elements : 0, w->ncs);
            return APPLY_RETRY;
        }
    for (size_t j = 0; j < w->ncs; j++) {
        bcust_t *c = w->cs[j];
        redisReply *rs = replies[0]->element[j];
        char why[200];
        state_reset(&c->s);
        c->dirty = 0;
        c->score_month = -1;
        if (rs->type == REDIS_REPLY_STRING &&
            state_decode_lazy(&c->s, rs->str, rs->len, why, sizeof(why)) != 0)
            return apply_corrupt(b->a, b->ckey, c->dc.id, c->dc.len, why, 1, errstr, errstr_size);
        customer_load(&c->dc, &c->s);
        c->dc.has_profile = 0;
        c->dc.dirty = 0;
        if (b->decisions) {
            redisReply *rp = replies[1]->element[j];
            if (rp->type == REDIS_REPLY_STRING &&
                profile_text_parse(&c->dc.profile, &c->dc.profile_updated_at, rp->str, rp->len) ==
                    0)
                c->dc.has_profile = 1;
        }
    }
    return APPLY_OK;
}

/* The sets of every month an order will change, decoded and checked
 * before anything is decided: a set that does not parse stops the batch
 * as a corrupt state, not half-way through its orders. */
static int unpack_months(batch_t *b, char *errstr, size_t errstr_size) {
    struct batch_work *w = b->w;
    for (size_t i = 0; i < b->n_eff; i++) {
        if (b->msgs[i].state != MSG_NEW) continue;
        bcust_t *c = w->cs[w->ocust[i]];
        char why[200];
        int rc = state_unpack(&c->s, w->omonth[i], why, sizeof(why));
        if (rc == -1)
            return apply_corrupt(b->a, b->ckey, c->dc.id, c->dc.len, why, 1, errstr, errstr_size);
        if (rc < 0) {
            snprintf(errstr, errstr_size, "out of memory");
            return APPLY_RETRY;
        }
    }
    return APPLY_OK;
}

/* The quota kinds an order crosses, as events. */
static int decide_quotas(batch_t *b, store_tx_t *tx, bcust_t *c, state_month_t *sm,
                         const policy_profile_t *prof, const order_t *o, int32_t month,
                         int64_t before, char *errstr, size_t errstr_size) {
    const policy_t *pol = b->a->policy;
    policy_quota_kind_t kinds[POLICY_QUOTA__COUNT];
    int holiday = policy_holiday_month(pol, month);
    size_t nk = policy_quota_check(pol, sm->tier, prof->format, holiday, before, sm->agg.qty,
                                   sm->qmask, kinds);
    if (nk == 0) return 0;
    policy_quota_limits_t lim;
    policy_quota_limits(pol, sm->tier, prof->format, holiday, &lim);
    for (size_t k = 0; k < nk; k++) {
        if (outbox_quota(&b->outbox, tx, &c->dc, month, sm->tier, kinds[k], &lim, sm->agg.qty,
                         o->order_id, o->placed_at_ms, errstr, errstr_size) != 0)
            return -1;
        sm->qmask |= 1u << kinds[k];
    }
    return 0;
}

/* Decides for the customer of an order that now counts: placement (or an
 * upgrade on the order), the live score, the month's tier and grade, and
 * the quota. */
static int decide_order(batch_t *b, store_tx_t *tx, bcust_t *c, state_month_t *sm, const order_t *o,
                        int32_t month, int64_t before, char *errstr, size_t errstr_size) {
    const policy_t *pol = b->a->policy;
    const int32_t W = b->a->window;
    const policy_profile_t *prof = customer_profile(&c->dc, b->a->policy);
    policy_month_t win[POLICY_WINDOW_MAX];
    policy_decision_t dec;
    int32_t live = -1;
    dec.changed = false;
    dec.prev_tier = c->dc.st.tier;
    dec.reason = POLICY_REASON_NONE;
    if (sm->grade == POLICY_GRADE_NONE || prof->grade > sm->grade)
        sm->grade = prof->grade; /* worst grade in effect during the month */
    c->score_month = -1;
    if (c->dc.st.tier <= 0 || pol->upgrade_on_order) {
        /* A first order -- SALE or RETURN -- places the customer; some
         * policies also upgrade on the order that qualifies. */
        state_window(&c->s, month, W, win);
        policy_customer_t pc = {c->dc.st, *prof, win, (size_t)W};
        if (policy_on_order(pol, &pc, month, &dec, errstr, errstr_size) != 0 ||
            outbox_tier_change(&b->outbox, tx, &c->dc, &dec, win, (size_t)W, month, o->placed_at_ms,
                               errstr, errstr_size) != 0)
            return -1;
        live = dec.score.score_c;
    } else {
        /* Only the live score, which only its last order's is kept:
         * scored once, before the state is written (live_score). */
        c->score_month = month;
    }
    if (live >= 0) c->dc.live_score_c = live; /* operators see it between reviews */
    if (c->dc.st.tier <= 0) return 0;
    if (sm->tier == 0) {
        /* The tier the month began with: the current one, or for the
         * customer's first month the tier it was just placed on. */
        sm->tier = dec.changed && dec.prev_tier > 0 && dec.reason != POLICY_REASON_NEW_CUSTOMER
                       ? dec.prev_tier
                       : c->dc.st.tier;
    }
    if (o->kind != ORDER_SALE) return 0;
    return decide_quotas(b, tx, c, sm, prof, o, month, before, errstr, errstr_size);
}

/* Applies record i: dedupe, sums, then the decisions it triggers. */
static int decide_record(batch_t *b, store_tx_t *tx, size_t i, char *errstr, size_t errstr_size) {
    struct batch_work *w = b->w;
    apply_msg_t *m = &b->msgs[i];
    const order_t *o = &b->a->orders[i];
    const int32_t W = b->a->window, month = w->omonth[i];
    bcust_t *c = w->cs[w->ocust[i]];
    if (state_seen(&c->s, w->ofp[i])) {
        m->state = MSG_DUPLICATE;
        return 0;
    }
    /* Months before the order's kept range are never read again. */
    state_drop_before(&c->s, month - W);
    state_month_t *sm = state_month(&c->s, month, 1);
    if (!sm) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    int64_t excess = 0, before = sm->agg.qty;
    order_err_t e = state_apply_skus(sm, o, &w->skus[w->oskus[i]], w->onskus[i], &excess);
    if (e == ORDER_ERR_INTERNAL) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (e != ORDER_OK) {
        char why[200];
        snprintf(why, sizeof(why),
                 "adding %" PRId64 " units / %" PRId64 " amount overflows the month total", o->qty,
                 o->amount);
        set_dead(m, ORDER_ERR_OVERFLOW, why);
        w->dead[b->ndead++] = m;
        return 0;
    }
    if (state_add_fp(sm, w->ofp[i]) < 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    c->dirty = 1;
    m->state = MSG_APPLIED;
    b->a->stats.return_excess_units += (uint64_t)excess;
    if (!b->decisions) return 0;
    return decide_order(b, tx, c, sm, o, month, before, errstr, errstr_size);
}

/* The live score over the window of the customer's last order in the
 * batch: its state now is its state right after that order. */
static void live_score(batch_t *b, bcust_t *c) {
    const int32_t W = b->a->window;
    policy_month_t win[POLICY_WINDOW_MAX];
    policy_score_t sc;
    char why[200];
    state_window(&c->s, c->score_month, W, win);
    if (policy_score(b->a->policy, customer_profile(&c->dc, b->a->policy), win, (size_t)W, &sc, why,
                     sizeof(why)) == 0)
        c->dc.live_score_c = sc.score_c;
    c->score_month = -1;
}

/* Stage 4's arguments: every changed state, encoded. */
static int write_states(batch_t *b, store_tx_t *tx) {
    struct batch_work *w = b->w;
    const int32_t W = b->a->window;
    size_t n = 2;
    if (2 + 2 * w->ncs > w->argcap) {
        size_t cap = 2 + 2 * w->ncs;
        if (grow(&w->argv, w->argcap, cap, sizeof(*w->argv)) ||
            grow(&w->argvlen, w->argcap, cap, sizeof(*w->argvlen)))
            return -1;
        w->argcap = cap;
    }
    w->argv[0] = "HSET";
    w->argvlen[0] = 4;
    w->argv[1] = b->ckey;
    w->argvlen[1] = strlen(b->ckey);
    for (size_t j = 0; j < w->ncs; j++) {
        bcust_t *c = w->cs[j];
        if (!c->dirty && !c->dc.dirty) continue;
        if (c->score_month >= 0) live_score(b, c);
        state_drop_before(&c->s, b->final_month - W);
        customer_store(&c->dc, &c->s);
        size_t len;
        const uint8_t *blob = state_encode_in(&c->s, &w->blobs, &len);
        if (!blob) return -1;
        w->argv[n] = w->ids[j];
        w->argvlen[n++] = w->idlens[j];
        w->argv[n] = (const char *)blob;
        w->argvlen[n++] = len;
    }
    return n > 2 ? store_tx_add(tx, (int)n, w->argv, w->argvlen) : 0;
}

static int write_meta(batch_t *b, store_tx_t *tx) {
    const apply_part_t *p = b->p;
    const apply_msg_t *last = &b->msgs[b->n_eff - 1];
    int64_t next = last->offset + 1;
    b->prev_fp = 0;
    b->has_prev_fp = apply_prev_fp(last, p->meta.offset, &b->prev_fp);
    if (p->meta.offset > next) next = p->meta.offset; /* all redelivered */
    b->next_offset = next;
    snprintf(b->off, sizeof(b->off), "%" PRId64, next);
    snprintf(b->mon, sizeof(b->mon), "%06d",
             b->final_month >= 0 ? month_yyyymm(b->final_month) : 0);
    snprintf(b->upd, sizeof(b->upd), "%lld", (long long)time(NULL));
    snprintf(b->pfp, sizeof(b->pfp), "%" PRIu64, b->prev_fp);
    /* Without prev_fp, its two arguments are left off the end. */
    return store_tx_addv(tx, b->has_prev_fp ? 12 : 10, "HSET", (size_t)4, b->mkey, strlen(b->mkey),
                         "offset", (size_t)6, b->off, strlen(b->off), "month", (size_t)5, b->mon,
                         strlen(b->mon), "owner", (size_t)5, b->a->owner, strlen(b->a->owner),
                         "updated_at", (size_t)10, b->upd, strlen(b->upd), "prev_fp", (size_t)7,
                         b->pfp, strlen(b->pfp));
}

/* Stages 3 and 4 (txn.c calls it with what stage 2 read). */
static int batch_decide(void *ctx, const store_meta_t *now, redisReply **replies, store_tx_t *tx,
                        char *errstr, size_t errstr_size) {
    batch_t *b = ctx;
    apply_part_t *p = b->p;
    int rc;
    if (now->offset != p->meta.offset || now->month != p->meta.month ||
        now->reviewed != p->meta.reviewed)
        return TXN_AGAIN;               /* our last commit landed though its reply was lost */
    if (b->n_eff == 0) return APPLY_OK; /* a review comes first */
    arena_reset(&b->w->blobs);
    outbox_free(&b->outbox);
    outbox_open(&b->outbox, b->a, p);
    if (b->w->ncs > 0 && ((rc = load_customers(b, replies, errstr, errstr_size)) != APPLY_OK ||
                          (rc = unpack_months(b, errstr, errstr_size)) != APPLY_OK))
        return rc;
    b->ndead = 0;
    for (size_t i = 0; i < b->n_eff; i++) {
        apply_msg_t *m = &b->msgs[i];
        if (m->state == MSG_DEAD) {
            b->w->dead[b->ndead++] = m;
            continue;
        }
        if (m->state != MSG_NEW) continue;
        if (decide_record(b, tx, i, errstr, errstr_size) != 0) return APPLY_RETRY;
    }
    /* Refused records must be durable before the offset moves past them. */
    if (b->ndead > 0 &&
        b->a->dead(b->a->dead_opaque, p, b->w->dead, b->ndead, errstr, errstr_size) != 0)
        return APPLY_RETRY;
    if ((b->decisions && outbox_flush(&b->outbox, tx) != 0) || write_states(b, tx) != 0 ||
        write_meta(b, tx) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return APPLY_RETRY;
    }
    return APPLY_OK;
}

static void batch_committed(void *ctx, apply_stats_t *st) {
    batch_t *b = ctx;
    if (b->n_eff == 0) return;
    b->p->meta.offset = b->next_offset;
    b->p->meta.month = b->final_month;
    if (b->has_prev_fp) {
        b->p->meta.prev_fp = b->prev_fp;
        b->p->meta.has_prev_fp = 1;
        b->p->meta.prev_at = -1; /* the record before the offset */
    }
    if (b->decisions) {
        if (b->outbox.tier_events + b->outbox.quota_events > 0) b->p->outbox_dirty = 1;
        st->tier_events += b->outbox.tier_events;
        st->quota_events += b->outbox.quota_events;
        for (size_t k = 0; k < POLICY_QUOTA__COUNT; k++)
            st->quota_by_kind[k] += b->outbox.quota_by_kind[k];
    }
    st->batches++;
    for (size_t i = 0; i < b->n_eff; i++) {
        switch (b->msgs[i].state) {
        case MSG_APPLIED: st->applied++; break;
        case MSG_DUPLICATE: st->duplicates++; break;
        case MSG_REDELIVERED: st->redelivered++; break;
        case MSG_DEAD:
            st->dead++;
            st->dead_by_reason[b->msgs[i].verdict]++;
            break;
        default: break;
        }
    }
}

/* A batch's commit may be confirmed later (txn.h): the next batch is
 * decoded while Redis executes it. */
static const txn_ops_t batch_ops = {batch_plan, batch_decide, batch_committed, FAULT_COMMIT,
                                    1,          batch_stream};

int batch_apply(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, int64_t now_ms,
                size_t *used, int32_t *review_to, char *errstr, size_t errstr_size) {
    batch_t b;
    int rc;
    memset(&b, 0, sizeof(b));
    *used = 0;
    *review_to = -1;
    if (n == 0) return APPLY_OK;
    b.a = a;
    b.p = p;
    b.msgs = msgs;
    b.n = n;
    b.decisions = a->policy != NULL;
    b.now_ms = now_ms;
    if (!(b.w = work_get(a, n))) {
        snprintf(errstr, errstr_size, "out of memory");
        return APPLY_RETRY;
    }
    store_key(a->store, p->topic, p->partition, "c", b.ckey, sizeof(b.ckey));
    store_key(a->store, p->topic, p->partition, "p", b.pkey, sizeof(b.pkey));
    store_key(a->store, p->topic, p->partition, "meta", b.mkey, sizeof(b.mkey));
    /* n_eff 0: the review comes first (batch_stream). */
    rc = txn_run(a, p, &batch_ops, &b, errstr, errstr_size);
    outbox_free(&b.outbox);
    if (rc != APPLY_OK) return rc;
    *used = b.n_eff;
    *review_to = b.review_to;
    return APPLY_OK;
}
