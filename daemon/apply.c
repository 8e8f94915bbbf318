/*
 * apply.c -- see apply.h for the contract.
 *
 * Invariants:
 *  - decisions are made in offset order, as if records were applied one by
 *    one, so a batch of any size gives the same state as single records;
 *  - the partition's month only moves forward (event time), and an order
 *    older than the window of the month at its turn is LATE;
 *  - before the first order of a later month is applied, the months it
 *    closes are reviewed (the batch is cut there, reviewed, then resumed);
 *  - an order id is looked up in every kept month of the partition before
 *    it counts (dedupe inside the window);
 *  - nothing is written unless the dead-letter sink has made every refused
 *    record durable first;
 *  - aggregates, decision state, decided events (outbox) and the offset are
 *    written in one MULTI/EXEC.
 */
#include "apply.h"

#include "agg.h"
#include "arena.h"
#include "decimal.h"
#include "log.h"
#include "month.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct cm_entry {
    int32_t month;
    /* "a:<c>", "s:<c>", "t:<c>", "q:<c>" */
    char afield[ORDER_ID_MAX + 3], sfield[ORDER_ID_MAX + 3], tfield[ORDER_ID_MAX + 3],
        qfield[ORDER_ID_MAX + 3];
    size_t flen;                   /* all four have the same length */
    size_t req, idx;               /* its four replies: request req, fields idx..idx+3 */
    agg_month_t agg;
    agg_skuset_t skus;
    int32_t tier;         /* tier in effect when the month began, 0 = not recorded */
    policy_grade_t grade; /* worst grade in effect during the month */
    uint32_t qmask;       /* quota kinds fired */
    int dirty, dirty_t, dirty_q;
} cm_entry_t;

/* One HMGET (and later one HSET) per key. */
typedef struct month_req {
    int32_t month; /* INT32_MIN for the customer-state and profile hashes */
    char key[256];
    const char **f; /* borrowed strings */
    size_t *flen;
    size_t nf, capf;
    const char **w; /* field, value, field, value ... */
    size_t *wlen;
    size_t nw, capw;
} month_req_t;

static int push(const char ***v, size_t **lens, size_t *n, size_t *cap, const char *s,
                size_t len) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 64;
        const char **nv = realloc(*v, c * sizeof(**v));
        if (!nv) return -1;
        *v = nv;
        size_t *nl = realloc(*lens, c * sizeof(**lens));
        if (!nl) return -1;
        *lens = nl;
        *cap = c;
    }
    (*v)[*n] = s;
    (*lens)[*n] = len;
    (*n)++;
    return 0;
}

/* apply_run's working memory, kept between batches: grown, never shrunk,
 * so a steady stream of batches does not allocate it again and again. */
typedef struct apply_work {
    size_t ncap; /* the per-record arrays hold this many */
    int32_t *omonth;
    char **ofield; /* dedupe fields, in strs */
    size_t *olen, *orank;
    order_err_t *dverdict; /* decode/validate verdict, kept across attempts */
    apply_msg_t **dead;
    struct cm_entry **owin; /* record i's window entries: owin[i * W .. i * W + W) */
    size_t owincap;
    size_t reqcap;  /* the per-request arrays hold this many */
    month_req_t *reqs; /* f, flen, w, wlen keep their memory too */
    redisReply **replies;
    char **delkeys;
    size_t *ofirst;
    /* round trip 1's arguments */
    char **rkeys;
    const char ***rfields;
    size_t **rflens, *rnf;
    redisReply **rtmp;
    arena_t strs; /* the batch's dedupe fields, formatted values, customers */
    /* Customer-month entries: cm holds the first ncm; the rest wait for
     * reuse with their SKU sets' memory. */
    cm_entry_t **cms;
    size_t ncm, cmcap;
} apply_work_t;

static int grow_array(void *pv, size_t have, size_t want, size_t elem) {
    void **p = pv;
    void *n = realloc(*p, want * elem);
    if (!n) return -1;
    memset((char *)n + have * elem, 0, (want - have) * elem);
    *p = n;
    return 0;
}

/* Makes room for n records and maxreq requests. */
static int work_reserve(apply_ctx_t *a, size_t n, size_t maxreq) {
    apply_work_t *w = a->work;
    if (!w && !(w = a->work = calloc(1, sizeof(*w)))) return -1;
    if (n > w->ncap) {
        if (grow_array(&w->omonth, w->ncap, n, sizeof(*w->omonth)) ||
            grow_array(&w->ofield, w->ncap, n, sizeof(*w->ofield)) ||
            grow_array(&w->olen, w->ncap, n, sizeof(*w->olen)) ||
            grow_array(&w->orank, w->ncap, n, sizeof(*w->orank)) ||
            grow_array(&w->dverdict, w->ncap, n, sizeof(*w->dverdict)) ||
            grow_array(&w->dead, w->ncap, n, sizeof(*w->dead)))
            return -1;
        w->ncap = n;
    }
    if (n * (size_t)a->window > w->owincap) {
        if (grow_array(&w->owin, w->owincap, n * (size_t)a->window, sizeof(*w->owin)))
            return -1;
        w->owincap = n * (size_t)a->window;
    }
    if (maxreq + 1 > w->reqcap) {
        size_t c = maxreq + 1;
        if (grow_array(&w->reqs, w->reqcap, c, sizeof(*w->reqs)) ||
            grow_array(&w->replies, w->reqcap, c, sizeof(*w->replies)) ||
            grow_array(&w->delkeys, w->reqcap, c, sizeof(*w->delkeys)) ||
            grow_array(&w->ofirst, w->reqcap, c, sizeof(*w->ofirst)) ||
            grow_array(&w->rkeys, w->reqcap, c, sizeof(*w->rkeys)) ||
            grow_array(&w->rfields, w->reqcap, c, sizeof(*w->rfields)) ||
            grow_array(&w->rflens, w->reqcap, c, sizeof(*w->rflens)) ||
            grow_array(&w->rnf, w->reqcap, c, sizeof(*w->rnf)) ||
            grow_array(&w->rtmp, w->reqcap, c, sizeof(*w->rtmp)))
            return -1;
        w->reqcap = c;
    }
    return 0;
}

static void work_free(apply_work_t *w) {
    if (!w) return;
    for (size_t k = 0; k < w->reqcap; k++) {
        free(w->reqs[k].f);
        free(w->reqs[k].flen);
        free(w->reqs[k].w);
        free(w->reqs[k].wlen);
    }
    free(w->omonth);
    free(w->ofield);
    free(w->olen);
    free(w->orank);
    free(w->dverdict);
    free(w->dead);
    free(w->owin);
    free(w->reqs);
    free(w->replies);
    free(w->delkeys);
    free(w->ofirst);
    free(w->rkeys);
    free(w->rfields);
    free(w->rflens);
    free(w->rnf);
    free(w->rtmp);
    arena_free(&w->strs);
    for (size_t i = 0; i < w->cmcap; i++) {
        agg_skuset_free(&w->cms[i]->skus);
        free(w->cms[i]);
    }
    free(w->cms);
    free(w);
}

void apply_init(apply_ctx_t *a) { memset(a, 0, sizeof(*a)); }

void apply_free(apply_ctx_t *a) {
    if (!a) return;
    for (size_t i = 0; i < a->orders_cap; i++) order_reset(&a->orders[i]);
    free(a->orders);
    strmap_free(&a->cm, NULL);   /* entries: a->work */
    strmap_free(&a->seen, NULL);
    strmap_free(&a->cust, NULL); /* customers: a->work->strs */
    work_free(a->work);
    memset(a, 0, sizeof(*a));
}

void apply_decide_ctx(apply_ctx_t *a, const apply_part_t *p, int64_t now_ms, decide_ctx_t *d) {
    memset(d, 0, sizeof(*d));
    d->policy = a->policy;
    d->events = a->events;
    d->tier_topic = a->tier_topic;
    d->quota_topic = a->quota_topic;
    (void)now_ms; /* events are decided from their inputs, never the clock (decide.h) */
    store_key(a->store, p->topic, p->partition, "outbox", d->outbox_key, sizeof(d->outbox_key));
}

static void set_dead(apply_msg_t *m, order_err_t err, const char *reason) {
    m->state = MSG_DEAD;
    m->verdict = err;
    snprintf(m->reason, sizeof(m->reason), "%s", reason);
}

static month_req_t *req_for(month_req_t *reqs, size_t *nreq, size_t max, int32_t month) {
    for (size_t i = 0; i < *nreq; i++)
        if (reqs[i].month == month) return &reqs[i];
    if (*nreq == max) return NULL;
    month_req_t *r = &reqs[(*nreq)++];
    r->month = month; /* f and w keep their memory from earlier batches */
    r->key[0] = '\0';
    r->nf = r->nw = 0;
    return r;
}

static void ym(int32_t m, char *buf, size_t n) {
    int v = month_yyyymm(m);
    snprintf(buf, n, "%04d-%02d", v / 100, v % 100);
}

/* A zeroed entry, reused from an earlier batch when there is one. */
static cm_entry_t *cm_new(apply_work_t *w) {
    if (w->ncm == w->cmcap) {
        size_t cap = w->cmcap ? w->cmcap * 2 : 256;
        cm_entry_t **v = realloc(w->cms, cap * sizeof(*v));
        if (!v) return NULL;
        w->cms = v;
        for (; w->cmcap < cap; w->cmcap++)
            if (!(w->cms[w->cmcap] = calloc(1, sizeof(cm_entry_t)))) return NULL;
    }
    cm_entry_t *e = w->cms[w->ncm++];
    agg_skuset_t skus = e->skus;
    agg_skuset_clear(&skus);
    memset(e, 0, sizeof(*e));
    e->skus = skus;
    return e;
}

/* The customer-month entry, created (and its fields requested) on first use. */
static cm_entry_t *cm_get(apply_ctx_t *a, month_req_t *reqs, size_t *nreq, size_t maxreq,
                          int32_t month, const char *cust, size_t clen, int *oom) {
    /* The key only lives in the map: the month's bytes, then the customer. */
    char ck[sizeof(month) + ORDER_ID_MAX];
    int created;
    memcpy(ck, &month, sizeof(month));
    memcpy(ck + sizeof(month), cust, clen);
    strmap_slot_t *slot = strmap_put(&a->cm, ck, sizeof(month) + clen, &created);
    *oom = 0;
    if (!slot) goto oom;
    if (!created) return slot->value;
    cm_entry_t *e = cm_new(a->work);
    if (!e) goto oom;
    slot->value = e;
    e->month = month;
    e->flen = clen + 2;
    memcpy(e->afield, "a:", 2);
    memcpy(e->afield + 2, cust, clen + 1);
    memcpy(e->sfield, e->afield, e->flen + 1);
    memcpy(e->tfield, e->afield, e->flen + 1);
    memcpy(e->qfield, e->afield, e->flen + 1);
    e->sfield[0] = 's';
    e->tfield[0] = 't';
    e->qfield[0] = 'q';
    month_req_t *r = req_for(reqs, nreq, maxreq, month);
    if (!r) return NULL; /* too many months: caller reports */
    e->req = (size_t)(r - reqs);
    e->idx = r->nf;
    if (push(&r->f, &r->flen, &r->nf, &r->capf, e->afield, e->flen) ||
        push(&r->f, &r->flen, &r->nf, &r->capf, e->sfield, e->flen) ||
        push(&r->f, &r->flen, &r->nf, &r->capf, e->tfield, e->flen) ||
        push(&r->f, &r->flen, &r->nf, &r->capf, e->qfield, e->flen))
        goto oom;
    return e;
oom:
    *oom = 1;
    return NULL;
}

/* Builds the W-month window ending with `month` from the customer's
 * entries of those months (current values), oldest first. */
static void window_of(apply_ctx_t *a, cm_entry_t *const *ents, int32_t month, policy_month_t *w) {
    for (int32_t i = 0; i < a->window; i++) {
        int32_t m = month - a->window + 1 + i;
        cm_entry_t *e = ents[i];
        memset(&w[i], 0, sizeof(w[i]));
        w[i].month = m;
        if (!e) continue;
        w[i].qty = e->agg.qty;
        w[i].amount = e->agg.amount;
        w[i].orders = e->agg.orders;
        w[i].skus = e->agg.skus;
        w[i].tier_in_effect = e->tier;
        w[i].grade = e->grade;
    }
}

static int oom_out(char *errstr, size_t errstr_size) {
    snprintf(errstr, errstr_size, "out of memory");
    return APPLY_RETRY;
}

int apply_meta_verdict(const apply_part_t *p, const store_meta_t *now) {
    if (now->epoch > p->meta.epoch) return APPLY_FENCED; /* whatever the offsets say */
    if (now->epoch < p->meta.epoch || now->offset < p->meta.offset ||
        now->poffset < p->meta.poffset)
        return APPLY_REWIND;
    return APPLY_OK;
}

/* Applies msgs[0..*used) -- all of them unless a review is due first, in
 * which case *review_to is the last month to review before msgs[*used]. */
static int apply_run(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n,
                     int64_t now_ms, size_t *used, int32_t *review_to, char *errstr,
                     size_t errstr_size) {
    int rc = APPLY_RETRY;
    const int decisions = a->policy != NULL;
    /* One request per month: the kept ranges before and after the batch,
     * each record's window, plus the state and profile hashes. */
    const size_t maxreq = n * (size_t)a->window + 2 * ((size_t)a->window + 1) + 2;
    size_t nreq = 0, ndel = 0;
    store_tx_t tx = {0};
    decide_ctx_t dctx;
    memset(&dctx, 0, sizeof(dctx));
    const int32_t W = a->window;
    int attempts = 0, oom = 0;
    month_req_t *creq = NULL, *preq = NULL;

    *used = 0;
    *review_to = -1;
    if (n == 0) return APPLY_OK;
    if (a->orders_cap < n) {
        order_t *o = realloc(a->orders, n * sizeof(*o));
        if (!o) return oom_out(errstr, errstr_size);
        memset(o + a->orders_cap, 0, (n - a->orders_cap) * sizeof(*o));
        a->orders = o;
        a->orders_cap = n;
    }
    if (work_reserve(a, n, maxreq) != 0) return oom_out(errstr, errstr_size);
    apply_work_t *w = a->work;
    int32_t *omonth = w->omonth;
    char **ofield = w->ofield;
    size_t *olen = w->olen, *ofirst = w->ofirst, *orank = w->orank;
    order_err_t *dverdict = w->dverdict;
    apply_msg_t **dead = w->dead;
    month_req_t *reqs = w->reqs;
    redisReply **replies = w->replies;
    char **delkeys = w->delkeys;
    arena_reset(&w->strs); /* the previous batch's strings */

    /* Decode and validate: pure, independent of state. */
    for (size_t i = 0; i < n; i++) {
        apply_msg_t *m = &msgs[i];
        order_t *o = &a->orders[i];
        char why[200] = "";
        m->state = MSG_NEW;
        m->verdict = ORDER_OK;
        m->reason[0] = '\0';
        order_err_t e = decode_order(a->decoder, m->value, m->value_len, o, why, sizeof(why));
        if (e == ORDER_OK)
            e = validate_order(o, m->key, m->key_len, now_ms, &a->rules, why, sizeof(why));
        dverdict[i] = e;
        if (e == ORDER_ERR_INTERNAL) {
            /* Out of memory is not the record's fault: never dead-letter it. */
            snprintf(errstr, errstr_size, "decoding offset %" PRId64 ": %s", m->offset, why);
            goto out;
        }
        if (e != ORDER_OK) {
            snprintf(m->reason, sizeof(m->reason), "%s", why[0] ? why : order_reason_code(e));
            continue;
        }
        omonth[i] = month_of_ms(o->placed_at_ms);
        /* Dedupe field "o:<len>:<customer><order_id>": the customer's
         * length makes it unambiguous. */
        char buf[2 * ORDER_ID_MAX + DECIMAL_MAX + 4];
        size_t l = 2;
        memcpy(buf, "o:", 2);
        l += decimal_u64(buf + l, (unsigned)o->customer_id_len);
        buf[l++] = ':';
        memcpy(buf + l, o->customer_id, o->customer_id_len);
        l += o->customer_id_len;
        memcpy(buf + l, o->order_id, o->order_id_len);
        l += o->order_id_len;
        ofield[i] = arena_strndup(&w->strs, buf, l);
        olen[i] = l;
        if (!ofield[i]) goto oom;
    }

again:
    if (++attempts > 3) {
        snprintf(errstr, errstr_size, "partition state kept changing under the batch");
        goto out;
    }
    for (size_t i = 0; i < nreq; i++) {
        if (replies[i]) freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
    nreq = 0;
    creq = preq = NULL;
    strmap_clear(&a->cm, NULL);
    w->ncm = 0;
    strmap_clear(&a->seen, NULL);
    strmap_clear(&a->cust, NULL);
    store_tx_free(&tx);
    decide_ctx_free(&dctx);
    ndel = 0;

    /* Lateness depends only on the sequence of months, so it is settled
     * before reading: it decides which month keys the batch needs.  The
     * first order of a later month ends the run when months it closes
     * still need their review. */
    int32_t cur = p->meta.month;
    size_t n_eff = n;
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        apply_msg_t *m = &msgs[i];
        m->state = MSG_NEW;
        m->verdict = ORDER_OK;
        if (p->meta.offset >= 0 && m->offset < p->meta.offset) {
            m->state = MSG_REDELIVERED; /* already applied, or already dead-lettered */
            continue;
        }
        if (dverdict[i] != ORDER_OK) {
            m->state = MSG_DEAD;
            m->verdict = dverdict[i];
            continue;
        }
        if (cur >= 0 && omonth[i] < cur - W + 1) {
            char om[16], lo[16], hi[16], why[200];
            ym(omonth[i], om, sizeof(om));
            ym(cur - W + 1, lo, sizeof(lo));
            ym(cur, hi, sizeof(hi));
            snprintf(why, sizeof(why),
                     "placed_at falls in %s, before this partition's window %s..%s", om, lo,
                     hi);
            set_dead(m, ORDER_ERR_LATE, why);
            continue;
        }
        if (decisions && cur >= 0 && omonth[i] > cur && omonth[i] - 1 > p->meta.reviewed) {
            n_eff = i;
            *review_to = omonth[i] - 1;
            break;
        }
        if (omonth[i] > cur) cur = omonth[i];
        any = 1;
    }
    const int32_t final_month = cur;
    if (n_eff == 0) {
        rc = APPLY_OK; /* the review comes first */
        goto out;
    }

    /* Which month keys to read: every kept month at the end of the run,
     * every kept month at its start, every month an order lands in and
     * the window months before it. */
    if (any) {
        for (int32_t mo = final_month - W; mo <= final_month; mo++)
            if (!req_for(reqs, &nreq, maxreq, mo)) goto too_many;
        if (p->meta.month >= 0)
            for (int32_t mo = p->meta.month - W; mo <= p->meta.month; mo++)
                if (!req_for(reqs, &nreq, maxreq, mo)) goto too_many;
    }
    if (decisions) {
        creq = req_for(reqs, &nreq, maxreq, INT32_MIN);
        preq = req_for(reqs, &nreq, maxreq, INT32_MIN + 1);
        store_key(a->store, p->topic, p->partition, "c", creq->key, sizeof(creq->key));
        store_key(a->store, p->topic, p->partition, "p", preq->key, sizeof(preq->key));
    }
    for (size_t i = 0; i < n_eff; i++) {
        if (msgs[i].state != MSG_NEW) continue;
        const order_t *o = &a->orders[i];
        int32_t lo = decisions ? omonth[i] - W + 1 : omonth[i];
        for (int32_t mo = lo; mo <= omonth[i]; mo++) {
            cm_entry_t *e = cm_get(a, reqs, &nreq, maxreq, mo, o->customer_id,
                                   o->customer_id_len, &oom);
            if (oom) goto oom;
            if (!e) goto too_many;
            w->owin[i * (size_t)W + (size_t)(mo - (omonth[i] - W + 1))] = e;
        }
        if (!decisions) continue;
        int created;
        strmap_slot_t *slot = strmap_put(&a->cust, o->customer_id, o->customer_id_len, &created);
        if (!slot) goto oom;
        if (!created) continue;
        decide_customer_t *c = arena_alloc(&w->strs, sizeof(*c));
        if (!c) goto oom;
        memset(c, 0, sizeof(*c));
        slot->value = c;
        memcpy(c->id, o->customer_id, o->customer_id_len + 1);
        c->len = o->customer_id_len;
        c->live_score_c = -1;
        c->scale = 'X';
        /* The field names are the map's own key strings: they live as
         * long as the map entry. */
        if (push(&creq->f, &creq->flen, &creq->nf, &creq->capf, slot->key, slot->len) ||
            push(&preq->f, &preq->flen, &preq->nf, &preq->capf, slot->key, slot->len))
            goto oom;
    }
    /* Order ids go into every month request, in the same order, so the
     * reply of order i in request k sits at ofirst[k] + orank[i]. */
    size_t rank = 0;
    for (size_t i = 0; i < n_eff; i++)
        if (msgs[i].state == MSG_NEW) orank[i] = rank++;
    for (size_t k = 0; k < nreq; k++) {
        ofirst[k] = reqs[k].nf;
        if (reqs[k].month <= INT32_MIN + 1) continue;
        store_month_key(a->store, p->topic, p->partition, reqs[k].month, reqs[k].key,
                        sizeof(reqs[k].key));
        for (size_t i = 0; i < n_eff; i++)
            if (msgs[i].state == MSG_NEW &&
                push(&reqs[k].f, &reqs[k].flen, &reqs[k].nf, &reqs[k].capf, ofield[i], olen[i]))
                goto oom;
    }

    /* Round trip 1: watched read. */
    {
        char **keys = w->rkeys;
        const char ***fields = w->rfields;
        size_t **flens = w->rflens, *nf = w->rnf;
        store_meta_t now;
        int src;
        size_t nk = 0;
        for (size_t k = 0; k < nreq; k++) {
            if (reqs[k].nf == 0) continue; /* nothing to ask (and 0 would mean HGETALL) */
            keys[nk] = reqs[k].key;
            fields[nk] = reqs[k].f;
            flens[nk] = reqs[k].flen;
            nf[nk] = reqs[k].nf;
            nk++;
        }
        redisReply **tmp = w->rtmp;
        memset(tmp, 0, (nk + 1) * sizeof(*tmp));
        src = store_read(a->store, p->topic, p->partition, &now, nk, keys, fields, flens, nf,
                         tmp, errstr, errstr_size);
        nk = 0;
        for (size_t k = 0; k < nreq; k++)
            if (reqs[k].nf) replies[k] = tmp[nk++];
        if (src != STORE_OK) goto out;
        int verdict = apply_meta_verdict(p, &now);
        if (verdict == APPLY_REWIND) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size,
                     "%s [%d]: Redis holds epoch %" PRId64 " offset %" PRId64
                     ", older than ours (%" PRId64 ", %" PRId64 "): it lost writes",
                     p->topic, (int)p->partition, now.epoch, now.offset, p->meta.epoch,
                     p->meta.offset);
            rc = APPLY_REWIND;
            goto out;
        }
        if (verdict == APPLY_FENCED) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size,
                     "%s [%d]: epoch is %" PRId64 ", ours %" PRId64 ": another instance owns it",
                     p->topic, (int)p->partition, now.epoch, p->meta.epoch);
            a->stats.fenced++;
            rc = APPLY_FENCED;
            goto out;
        }
        if (now.offset != p->meta.offset || now.month != p->meta.month ||
            now.reviewed != p->meta.reviewed) {
            /* Our last commit landed though its reply was lost, or the
             * cache is stale: decide again from what Redis holds. */
            store_unwatch(a->store);
            log_info("apply", "%s [%d]: stored offset %" PRId64 " (cached %" PRId64 "): re-deciding",
                     p->topic, (int)p->partition, now.offset, p->meta.offset);
            p->meta = now;
            p->outbox_dirty = 1; /* what that commit decided waits in the outbox */
            goto again;
        }
    }
    for (size_t k = 0; k < nreq; k++)
        if (reqs[k].nf && (!replies[k] || replies[k]->type != REDIS_REPLY_ARRAY ||
                           replies[k]->elements != reqs[k].nf)) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size, "redis: unexpected reply reading %s", reqs[k].key);
            goto out;
        }

    /* Load what was read. */
    for (size_t s = 0; s < a->cm.cap; s++) {
        cm_entry_t *e = a->cm.slots[s].key ? a->cm.slots[s].value : NULL;
        if (!e) continue;
        redisReply **el = replies[e->req]->element + e->idx;
        if (el[0]->type == REDIS_REPLY_STRING && agg_parse(&e->agg, el[0]->str, el[0]->len) != 0) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size, "redis: %s field %s holds \"%.40s\", not an aggregate",
                     reqs[e->req].key, e->afield, el[0]->str);
            goto out;
        }
        if (el[1]->type == REDIS_REPLY_STRING &&
            agg_skuset_parse(&e->skus, el[1]->str, el[1]->len) != 0)
            goto oom;
        if (el[2]->type == REDIS_REPLY_STRING)
            decide_month_parse(&e->tier, &e->grade, el[2]->str, el[2]->len);
        if (el[3]->type == REDIS_REPLY_STRING) e->qmask = (uint32_t)strtoul(el[3]->str, NULL, 10);
    }
    if (decisions) {
        for (size_t j = 0; j < creq->nf; j++) {
            strmap_slot_t *slot = strmap_get(&a->cust, creq->f[j], creq->flen[j]);
            decide_customer_t *c = slot->value;
            redisReply *rs = replies[creq - reqs]->element[j];
            redisReply *rp = replies[preq - reqs]->element[j];
            if (rs->type == REDIS_REPLY_STRING && decide_state_parse(c, rs->str, rs->len) != 0)
                log_warn("apply", "customer %s: unreadable state \"%.60s\"; starting afresh", c->id,
                         rs->str);
            if (rp->type == REDIS_REPLY_STRING &&
                decide_profile_parse(&c->profile, &c->profile_updated_at, rp->str, rp->len) == 0)
                c->has_profile = 1;
        }
        apply_decide_ctx(a, p, now_ms, &dctx);
    }

    /* Decide, in offset order. */
    size_t ndead = 0;
    for (size_t i = 0; i < n_eff; i++) {
        apply_msg_t *m = &msgs[i];
        if (m->state == MSG_DEAD) {
            dead[ndead++] = m;
            continue;
        }
        if (m->state != MSG_NEW) continue;
        int created;
        strmap_slot_t *seen = strmap_put(&a->seen, ofield[i], olen[i], &created);
        if (!seen) goto oom;
        if (created) {
            for (size_t k = 0; k < nreq && !seen->value; k++)
                if (reqs[k].month > INT32_MIN + 1 &&
                    replies[k]->element[ofirst[k] + orank[i]]->type == REDIS_REPLY_STRING)
                    seen->value = (void *)1;
        }
        if (seen->value) {
            m->state = MSG_DUPLICATE;
            continue;
        }
        const order_t *o = &a->orders[i];
        cm_entry_t *const *ents = &w->owin[i * (size_t)W];
        cm_entry_t *e = ents[W - 1]; /* the order's month */
        int64_t excess = 0, before = e->agg.qty;
        if (agg_apply(&e->agg, &e->skus, o, &excess) != ORDER_OK) {
            char why[200];
            snprintf(why, sizeof(why),
                     "adding %" PRId64 " units / %" PRId64 " amount overflows the month total",
                     o->qty, o->amount);
            set_dead(m, ORDER_ERR_OVERFLOW, why);
            dead[ndead++] = m;
            continue;
        }
        e->dirty = 1;
        seen->value = (void *)2;
        m->state = MSG_APPLIED;
        a->stats.return_excess_units += (uint64_t)excess;
        month_req_t *r = &reqs[e->req];
        if (push(&r->w, &r->wlen, &r->nw, &r->capw, ofield[i], olen[i]) ||
            push(&r->w, &r->wlen, &r->nw, &r->capw, "1", 1))
            goto oom;
        if (!decisions) continue;

        /* Decide for this customer, now that the order counts. */
        decide_customer_t *c = strmap_get(&a->cust, o->customer_id, o->customer_id_len)->value;
        const policy_profile_t *prof = decide_profile(&dctx, c);
        policy_month_t win[POLICY_WINDOW_MAX];
        policy_decision_t dec;
        dec.changed = false;
        dec.prev_tier = c->st.tier;
        dec.reason = POLICY_REASON_NONE;
        if (e->grade == POLICY_GRADE_NONE || prof->grade > e->grade) {
            e->grade = prof->grade; /* worst grade in effect during the month */
            e->dirty_t = 1;
        }
        window_of(a, ents, omonth[i], win);
        policy_customer_t pc = {c->st, *prof, win, (size_t)W};
        int32_t live = -1;
        if (c->st.tier <= 0 || a->policy->upgrade_on_order) {
            /* A decision is possible only on a first order -- SALE or
             * RETURN: either places the customer (SPEC 8 rule 1) -- or for
             * policies that upgrade on the order that qualifies. */
            if (policy_on_order(a->policy, &pc, omonth[i], &dec, errstr, errstr_size) != 0)
                goto out_unwatch;
            if (decide_tier_change(&dctx, &tx, c, &dec, win, (size_t)W, omonth[i],
                                   o->placed_at_ms, errstr, errstr_size) != 0)
                goto out_unwatch;
            live = dec.score.score_c;
        } else if (c->st.tier > 0) {
            policy_score_t sc;
            if (policy_score(a->policy, prof, win, (size_t)W, &sc, errstr, errstr_size) == 0)
                live = sc.score_c;
        }
        /* The live score, so operators see it between reviews. */
        if (live >= 0 && live != c->live_score_c) {
            c->live_score_c = live;
            c->dirty = 1;
        }
        if (c->st.tier <= 0) continue;
        if (e->tier == 0) {
            /* The tier the month began with: the current one, or for the
             * customer's first month the tier it was just placed on. */
            e->tier = dec.changed && dec.prev_tier > 0 && dec.reason != POLICY_REASON_NEW_CUSTOMER
                          ? dec.prev_tier
                          : c->st.tier;
            e->dirty_t = 1;
        }
        if (o->kind != ORDER_SALE) continue;
        policy_quota_kind_t kinds[POLICY_QUOTA__COUNT];
        int holiday = policy_holiday_month(a->policy, omonth[i]);
        size_t nk = policy_quota_check(a->policy, e->tier, prof->format, holiday, before,
                                       e->agg.qty, e->qmask, kinds);
        if (nk) {
            policy_quota_limits_t lim;
            policy_quota_limits(a->policy, e->tier, prof->format, holiday, &lim);
            for (size_t k = 0; k < nk; k++) {
                if (decide_quota(&dctx, &tx, c, omonth[i], e->tier, kinds[k], &lim, e->agg.qty,
                                 o->order_id, o->placed_at_ms, errstr, errstr_size) != 0)
                    goto out_unwatch;
                e->qmask |= 1u << kinds[k];
            }
            e->dirty_q = 1;
        }
    }

    /* Refused records must be durable before the offset moves past them. */
    if (ndead > 0 && a->dead(a->dead_opaque, p, dead, ndead, errstr, errstr_size) != 0)
        goto out_unwatch;

    /* Round trip 2: the writes, the offset, the dropped months. */
    for (size_t s = 0; s < a->cm.cap; s++) {
        cm_entry_t *e = a->cm.slots[s].key ? a->cm.slots[s].value : NULL;
        if (!e || !(e->dirty || e->dirty_t || e->dirty_q)) continue;
        month_req_t *r = &reqs[e->req];
        char buf[128];
        const char *v;
        if (e->dirty) {
            char *skus;
            size_t slen;
            int l = agg_format(&e->agg, buf, sizeof(buf));
            if (!(v = arena_strndup(&w->strs, buf, (size_t)l)) ||
                push(&r->w, &r->wlen, &r->nw, &r->capw, e->afield, e->flen) ||
                push(&r->w, &r->wlen, &r->nw, &r->capw, v, (size_t)l))
                goto oom;
            slen = agg_skuset_text_len(&e->skus);
            if (!(skus = arena_alloc(&w->strs, slen + 1))) goto oom;
            agg_skuset_write(&e->skus, skus);
            if (slen > 0 && (push(&r->w, &r->wlen, &r->nw, &r->capw, e->sfield, e->flen) ||
                             push(&r->w, &r->wlen, &r->nw, &r->capw, skus, slen)))
                goto oom;
        }
        if (e->dirty_t) {
            int l = decide_month_format(e->tier, e->grade, buf, sizeof(buf));
            if (!(v = arena_strndup(&w->strs, buf, (size_t)l)) ||
                push(&r->w, &r->wlen, &r->nw, &r->capw, e->tfield, e->flen) ||
                push(&r->w, &r->wlen, &r->nw, &r->capw, v, (size_t)l))
                goto oom;
        }
        if (e->dirty_q) {
            int l = (int)decimal_u64(buf, e->qmask);
            if (!(v = arena_strndup(&w->strs, buf, (size_t)l)) ||
                push(&r->w, &r->wlen, &r->nw, &r->capw, e->qfield, e->flen) ||
                push(&r->w, &r->wlen, &r->nw, &r->capw, v, (size_t)l))
                goto oom;
        }
    }
    if (decisions) {
        for (size_t s = 0; s < a->cust.cap; s++) {
            decide_customer_t *c = a->cust.slots[s].key ? a->cust.slots[s].value : NULL;
            char buf[160];
            const char *v;
            if (!c || !c->dirty) continue;
            int l = decide_state_format(c, buf, sizeof(buf));
            if (!(v = arena_strndup(&w->strs, buf, (size_t)l)) ||
                push(&creq->w, &creq->wlen, &creq->nw, &creq->capw, a->cust.slots[s].key,
                     a->cust.slots[s].len) ||
                push(&creq->w, &creq->wlen, &creq->nw, &creq->capw, v, (size_t)l))
                goto oom;
        }
    }
    /* The tx: the outbox entry, the HSETs, the meta, the dropped months. */
    if (decisions && decide_flush_outbox(&dctx, &tx) != 0) goto oom;
    for (size_t k = 0; k < nreq; k++) {
        if (reqs[k].nw > 0) {
            const char **argv = malloc((reqs[k].nw + 2) * sizeof(*argv));
            size_t *argvlen = malloc((reqs[k].nw + 2) * sizeof(*argvlen));
            int bad = !argv || !argvlen;
            if (!bad) {
                argv[0] = "HSET";
                argvlen[0] = 4;
                argv[1] = reqs[k].key;
                argvlen[1] = strlen(reqs[k].key);
                memcpy(argv + 2, reqs[k].w, reqs[k].nw * sizeof(*argv));
                memcpy(argvlen + 2, reqs[k].wlen, reqs[k].nw * sizeof(*argvlen));
                bad = store_tx_add(&tx, (int)reqs[k].nw + 2, argv, argvlen) != 0;
            }
            free(argv);
            free(argvlen);
            if (bad) goto oom;
        }
        /* Months that left the kept range [final - W, final] are dropped:
         * memory does not grow with time. */
        if (reqs[k].month > INT32_MIN + 1 && final_month >= 0 && reqs[k].month < final_month - W)
            delkeys[ndel++] = reqs[k].key;
    }
    {
        char mkey[256], off[32], mon[16], now[32];
        int64_t next = msgs[n_eff - 1].offset + 1;
        if (p->meta.offset > next) next = p->meta.offset; /* all redelivered */
        store_key(a->store, p->topic, p->partition, "meta", mkey, sizeof(mkey));
        snprintf(off, sizeof(off), "%" PRId64, next);
        snprintf(mon, sizeof(mon), "%06d", final_month >= 0 ? month_yyyymm(final_month) : 0);
        snprintf(now, sizeof(now), "%lld", (long long)time(NULL));
        if (store_tx_addv(&tx, 10, "HSET", (size_t)4, mkey, strlen(mkey), "offset", (size_t)6, off,
                          strlen(off), "month", (size_t)5, mon, strlen(mon), "owner", (size_t)5,
                          a->owner, strlen(a->owner), "updated_at", (size_t)10, now,
                          strlen(now)) != 0)
            goto oom;
        if (ndel) {
            const char **argv = malloc((ndel + 1) * sizeof(*argv));
            if (!argv) goto oom;
            argv[0] = "DEL";
            for (size_t i = 0; i < ndel; i++) argv[i + 1] = delkeys[i];
            int bad = store_tx_add(&tx, (int)ndel + 1, argv, NULL) != 0;
            free(argv);
            if (bad) goto oom;
        }
        if (a->fault_stall_file) {
            struct stat st;
            for (int i = 0; i < 1200 && stat(a->fault_stall_file, &st) == 0; i++) {
                struct timespec ts = {0, 100000000};
                nanosleep(&ts, NULL);
            }
        }
        int src = store_exec(a->store, &tx, errstr, errstr_size);
        if (src == STORE_FENCED) {
            snprintf(errstr, errstr_size,
                     "%s [%d]: commit refused: another instance took the partition", p->topic,
                     (int)p->partition);
            a->stats.fenced++;
            rc = APPLY_FENCED;
            goto out;
        }
        if (src != STORE_OK) goto out;
        p->meta.offset = next;
        p->meta.month = final_month;
        if (decisions && dctx.tier_events + dctx.quota_events > 0) p->outbox_dirty = 1;
        if (decisions) {
            a->stats.tier_events += dctx.tier_events;
            a->stats.quota_events += dctx.quota_events;
        }
    }

    a->stats.batches++;
    for (size_t i = 0; i < n_eff; i++) {
        switch (msgs[i].state) {
        case MSG_APPLIED: a->stats.applied++; break;
        case MSG_DUPLICATE: a->stats.duplicates++; break;
        case MSG_REDELIVERED: a->stats.redelivered++; break;
        case MSG_DEAD:
            a->stats.dead++;
            a->stats.dead_by_reason[msgs[i].verdict]++;
            break;
        default: break;
        }
    }
    *used = n_eff;
    rc = APPLY_OK;
    goto out;

too_many:
    store_unwatch(a->store);
    snprintf(errstr, errstr_size, "batch touches more than %zu months", maxreq);
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out_unwatch:
    store_unwatch(a->store);
out:
    for (size_t k = 0; k < nreq; k++) {
        if (replies[k]) freeReplyObject(replies[k]);
        replies[k] = NULL;
    }
    store_tx_free(&tx);
    decide_ctx_free(&dctx);
    return rc;
}

/* Moves the review from `from` (reviewed, steady) to `to` in one
 * transaction: the kept months [from + 1 - W, from + 1], which hold only
 * the tier each customer began them with, become [to + 1 - W, to + 1]
 * (copied newest first, since the two ranges may overlap), the others are
 * deleted, and meta.reviewed says `to`. */
static int review_skip(apply_ctx_t *a, apply_part_t *p, int32_t from, int32_t to, char *errstr,
                       size_t errstr_size) {
    const int32_t W = a->window, d = to - from;
    char src[256], dst[256], mkey[256], rv[16];
    store_meta_t now;
    store_tx_t tx = {0};
    int rc = APPLY_RETRY;
    if (store_read(a->store, p->topic, p->partition, &now, 0, NULL, NULL, NULL, NULL, NULL,
                   errstr, errstr_size) != STORE_OK)
        return APPLY_RETRY;
    rc = apply_meta_verdict(p, &now);
    if (rc != APPLY_OK || now.reviewed != from) {
        store_unwatch(a->store);
        if (rc == APPLY_OK) { /* someone moved it: read again next time */
            p->meta = now;
            rc = APPLY_OK;
        } else {
            snprintf(errstr, errstr_size, "%s [%d]: review refused: %s", p->topic,
                     (int)p->partition,
                     rc == APPLY_FENCED ? "another instance owns it" : "Redis lost writes");
        }
        return rc;
    }
    rc = APPLY_RETRY;
    for (int32_t m = from + 1; m >= from + 1 - W; m--) {
        store_month_key(a->store, p->topic, p->partition, m, src, sizeof(src));
        store_month_key(a->store, p->topic, p->partition, m + d, dst, sizeof(dst));
        if (store_tx_addv(&tx, 4, "COPY", (size_t)4, src, strlen(src), dst, strlen(dst),
                          "REPLACE", (size_t)7) != 0)
            goto oom;
        if (m < to + 1 - W &&
            store_tx_addv(&tx, 2, "DEL", (size_t)3, src, strlen(src)) != 0)
            goto oom;
    }
    store_key(a->store, p->topic, p->partition, "meta", mkey, sizeof(mkey));
    snprintf(rv, sizeof(rv), "%06d", month_yyyymm(to));
    if (store_tx_addv(&tx, 4, "HSET", (size_t)4, mkey, strlen(mkey), "reviewed", (size_t)8, rv,
                      strlen(rv)) != 0)
        goto oom;
    int src_rc = store_exec(a->store, &tx, errstr, errstr_size);
    if (src_rc == STORE_FENCED) {
        snprintf(errstr, errstr_size, "%s [%d]: review refused: another instance owns it",
                 p->topic, (int)p->partition);
        rc = APPLY_FENCED;
    } else if (src_rc == STORE_OK) {
        char f[16], t[16];
        ym(from + 1, f, sizeof(f));
        ym(to, t, sizeof(t));
        log_info("review", "%s [%d]: %s..%s had no orders and the last %d reviews changed "
                 "nothing: reviewed through %s at once", p->topic, (int)p->partition, f, t,
                 (int)W + 1, t);
        p->meta.reviewed = to;
        rc = APPLY_OK;
    }
    store_tx_free(&tx);
    return rc;
oom:
    store_unwatch(a->store);
    store_tx_free(&tx);
    snprintf(errstr, errstr_size, "out of memory");
    return APPLY_RETRY;
}

int apply_review_through(apply_ctx_t *a, apply_part_t *p, int32_t to, int64_t now_ms,
                         char *errstr, size_t errstr_size) {
    const int32_t W = a->window;
    int steady_run = 0;
    if (!a->policy) return APPLY_OK; /* aggregates only: nothing to review */
    for (;;) {
        int32_t m = p->meta.reviewed >= 0 ? p->meta.reviewed + 1 : p->meta.month;
        if (m > to) return APPLY_OK;
        int rc = apply_review(a, p, m, now_ms, errstr, errstr_size);
        if (rc != APPLY_OK) return rc;
        if (p->meta.reviewed < m) { /* cannot happen; never loop on it */
            snprintf(errstr, errstr_size, "review of month %d did not advance", (int)m);
            return APPLY_RETRY;
        }
        steady_run = p->review_steady && p->meta.reviewed == m ? steady_run + 1 : 0;
        /* Months after meta.month (the last month with an applied order)
         * have none, so from m >= meta.month + W on, every window is
         * empty: a run of W + 1 steady reviews is a fixed point. */
        if (m < to && m >= p->meta.month + W && steady_run > W) {
            rc = review_skip(a, p, m, to, errstr, errstr_size);
            if (rc != APPLY_OK || p->meta.reviewed >= to) return rc;
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
        int rc = apply_run(a, p, msgs + done, n - done, now_ms, &used, &review_to, errstr,
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
