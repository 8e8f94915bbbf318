/*
 * apply.c -- see apply.h for the contract.
 *
 * Invariants:
 *  - decisions are made in offset order, as if records were applied one by
 *    one, so a batch of any size gives the same state as single records;
 *  - the partition's month only moves forward (event time), and an order
 *    older than the window of the month at its turn is LATE;
 *  - an order id is looked up in every kept month of the partition before
 *    it counts (dedupe inside the window);
 *  - nothing is written unless the dead-letter sink has made every refused
 *    record durable first.
 */
#include "apply.h"

#include "agg.h"
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
    char *afield, *sfield; /* "a:<customer>", "s:<customer>" */
    size_t alen, slen;
    size_t req, aidx, sidx; /* where its reply sits */
    agg_month_t agg;
    agg_skuset_t skus;
    int dirty;
} cm_entry_t;

static void cm_free(void *v) {
    cm_entry_t *e = v;
    if (!e) return;
    free(e->afield);
    free(e->sfield);
    agg_skuset_free(&e->skus);
    free(e);
}

/* One HMGET (and later one HSET) per month key. */
typedef struct month_req {
    int32_t month;
    char key[256];
    const char **f; /* borrowed strings */
    size_t *flen;
    size_t nf, capf;
    /* writes */
    const char **w;
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

void apply_init(apply_ctx_t *a) { memset(a, 0, sizeof(*a)); }

void apply_free(apply_ctx_t *a) {
    if (!a) return;
    for (size_t i = 0; i < a->orders_cap; i++) order_reset(&a->orders[i]);
    free(a->orders);
    strmap_free(&a->cm, cm_free);
    strmap_free(&a->seen, NULL);
    memset(a, 0, sizeof(*a));
}

static void set_dead(apply_msg_t *m, order_err_t err, const char *reason) {
    /* LATE and OVERFLOW depend on state; decode verdicts are set directly. */
    m->state = MSG_DEAD;
    m->verdict = err;
    snprintf(m->reason, sizeof(m->reason), "%s", reason);
}

static month_req_t *req_for(month_req_t *reqs, size_t *nreq, size_t max, int32_t month) {
    for (size_t i = 0; i < *nreq; i++)
        if (reqs[i].month == month) return &reqs[i];
    if (*nreq == max) return NULL;
    memset(&reqs[*nreq], 0, sizeof(reqs[*nreq]));
    reqs[*nreq].month = month;
    return &reqs[(*nreq)++];
}

static void ym(int32_t m, char *buf, size_t n) {
    int v = month_yyyymm(m);
    snprintf(buf, n, "%04d-%02d", v / 100, v % 100);
}


int apply_batch(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, int64_t now_ms,
                char *errstr, size_t errstr_size) {
    int rc = APPLY_RETRY;
    int32_t *omonth = NULL;
    char **ofield = NULL;
    size_t *olen = NULL;
    /* One request per month: the kept ranges before and after the batch
     * (2 x (W + 1)) plus at most one per record. */
    const size_t maxreq = n + 2 * ((size_t)a->window + 1);
    month_req_t *reqs = NULL;
    size_t nreq = 0, *ofirst = NULL, *orank = NULL;
    redisReply **replies = NULL;
    char **delkeys = NULL;
    order_err_t *dverdict = NULL; /* decode/validate verdict, kept across attempts */
    apply_msg_t **dead = NULL;
    store_hset_t *sets = NULL;
    char **formatted = NULL; /* values built for the write, freed at out */
    size_t nformatted = 0;
    size_t ndel = 0;
    const int32_t W = a->window;
    int attempts = 0;

    if (n == 0) return APPLY_OK;
    if (a->orders_cap < n) {
        order_t *o = realloc(a->orders, n * sizeof(*o));
        if (!o) goto oom;
        memset(o + a->orders_cap, 0, (n - a->orders_cap) * sizeof(*o));
        a->orders = o;
        a->orders_cap = n;
    }
    omonth = calloc(n, sizeof(*omonth));
    ofield = calloc(n, sizeof(*ofield));
    olen = calloc(n, sizeof(*olen));
    dead = calloc(n, sizeof(*dead));
    formatted = calloc(2 * n + 1, sizeof(*formatted));
    reqs = calloc(maxreq, sizeof(*reqs));
    replies = calloc(maxreq, sizeof(*replies));
    delkeys = calloc(maxreq, sizeof(*delkeys));
    ofirst = calloc(maxreq, sizeof(*ofirst));
    orank = calloc(n, sizeof(*orank));
    dverdict = calloc(n, sizeof(*dverdict));
    if (!omonth || !ofield || !olen || !dead || !formatted || !reqs || !replies || !delkeys ||
        !ofirst || !orank || !dverdict)
        goto oom;

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
        /* Dedupe field: the customer's length makes it unambiguous. */
        char buf[2 * ORDER_ID_MAX + 16];
        int l = snprintf(buf, sizeof(buf), "o:%u:%s%s", (unsigned)o->customer_id_len,
                         o->customer_id, o->order_id);
        ofield[i] = strdup(buf);
        olen[i] = (size_t)l;
        if (!ofield[i]) goto oom;
    }

again:
    if (++attempts > 3) {
        snprintf(errstr, errstr_size, "partition state kept changing under the batch");
        goto out;
    }
    for (size_t i = 0; i < nreq; i++) {
        free(reqs[i].f);
        free(reqs[i].flen);
        free(reqs[i].w);
        free(reqs[i].wlen);
        if (replies[i]) freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
    nreq = 0;
    strmap_clear(&a->cm, cm_free);
    strmap_clear(&a->seen, NULL);

    /* Lateness depends only on the sequence of months, so it is settled
     * before reading: it decides which month keys the batch needs. */
    int32_t cur = p->meta.month, first = -1;
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
            char om[16], lo[16], hi[16];
            ym(omonth[i], om, sizeof(om));
            ym(cur - W + 1, lo, sizeof(lo));
            ym(cur, hi, sizeof(hi));
            char why[200];
            snprintf(why, sizeof(why),
                     "placed_at falls in %s, before this partition's window %s..%s", om, lo,
                     hi);
            set_dead(m, ORDER_ERR_LATE, why);
            continue;
        }
        if (first < 0) first = omonth[i];
        if (omonth[i] > cur) cur = omonth[i];
        any = 1;
    }
    const int32_t final_month = cur;

    /* Which month keys to read: every kept month at the end of the batch,
     * every kept month at its start, and every month an order lands in. */
    if (any) {
        for (int32_t mo = final_month - W; mo <= final_month; mo++)
            if (!req_for(reqs, &nreq, maxreq, mo)) goto too_many;
        if (p->meta.month >= 0)
            for (int32_t mo = p->meta.month - W; mo <= p->meta.month; mo++)
                if (!req_for(reqs, &nreq, maxreq, mo)) goto too_many;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].state != MSG_NEW) continue;
        const order_t *o = &a->orders[i];
        char ck[ORDER_ID_MAX + 16];
        int created;
        int l = snprintf(ck, sizeof(ck), "%d:%s", (int)omonth[i], o->customer_id);
        strmap_slot_t *slot = strmap_put(&a->cm, ck, (size_t)l, &created);
        if (!slot) goto oom;
        if (!created) continue;
        cm_entry_t *e = calloc(1, sizeof(*e));
        if (!e) goto oom;
        slot->value = e;
        e->month = omonth[i];
        e->alen = (size_t)o->customer_id_len + 2;
        e->slen = e->alen;
        e->afield = malloc(e->alen + 1);
        e->sfield = malloc(e->slen + 1);
        if (!e->afield || !e->sfield) goto oom;
        snprintf(e->afield, e->alen + 1, "a:%s", o->customer_id);
        snprintf(e->sfield, e->slen + 1, "s:%s", o->customer_id);
        month_req_t *r = req_for(reqs, &nreq, maxreq, omonth[i]);
        if (!r) goto too_many;
        e->req = (size_t)(r - reqs);
        e->aidx = r->nf;
        if (push(&r->f, &r->flen, &r->nf, &r->capf, e->afield, e->alen)) goto oom;
        e->sidx = r->nf;
        if (push(&r->f, &r->flen, &r->nf, &r->capf, e->sfield, e->slen)) goto oom;
    }
    /* Order ids go into every month request, in the same order, so the
     * reply of order i in request k sits at ofirst[k] + orank[i]. */
    size_t rank = 0;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].state == MSG_NEW) orank[i] = rank++;
    for (size_t k = 0; k < nreq; k++) {
        ofirst[k] = reqs[k].nf;
        store_month_key(a->store, p->topic, p->partition, reqs[k].month, reqs[k].key,
                        sizeof(reqs[k].key));
        for (size_t i = 0; i < n; i++)
            if (msgs[i].state == MSG_NEW &&
                push(&reqs[k].f, &reqs[k].flen, &reqs[k].nf, &reqs[k].capf, ofield[i], olen[i]))
                goto oom;
    }

    /* Round trip 1: watched read. */
    {
        char **keys = calloc(nreq + 1, sizeof(*keys));
        const char ***fields = calloc(nreq + 1, sizeof(*fields));
        size_t **flens = calloc(nreq + 1, sizeof(*flens)), *nf = calloc(nreq + 1, sizeof(*nf));
        store_meta_t now;
        int src;
        if (!keys || !fields || !flens || !nf) {
            free(keys), free(fields), free(flens), free(nf);
            goto oom;
        }
        for (size_t k = 0; k < nreq; k++) {
            keys[k] = reqs[k].key;
            fields[k] = reqs[k].f;
            flens[k] = reqs[k].flen;
            nf[k] = reqs[k].nf;
        }
        src = store_read(a->store, p->topic, p->partition, &now, nreq, keys, fields, flens, nf,
                         replies, errstr, errstr_size);
        free(keys), free(fields), free(flens), free(nf);
        if (src != STORE_OK) goto out;
        if (now.epoch < p->meta.epoch || (now.offset < p->meta.offset)) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size,
                     "%s [%d]: Redis holds epoch %" PRId64 " offset %" PRId64
                     ", older than ours (%" PRId64 ", %" PRId64 "): it lost writes",
                     p->topic, (int)p->partition, now.epoch, now.offset, p->meta.epoch,
                     p->meta.offset);
            rc = APPLY_REWIND;
            goto out;
        }
        if (now.epoch != p->meta.epoch) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size,
                     "%s [%d]: epoch is %" PRId64 ", ours %" PRId64 ": another instance owns it",
                     p->topic, (int)p->partition, now.epoch, p->meta.epoch);
            a->stats.fenced++;
            rc = APPLY_FENCED;
            goto out;
        }
        if (now.offset != p->meta.offset || now.month != p->meta.month) {
            /* Our last commit landed though its reply was lost, or the
             * cache is stale: decide again from what Redis holds. */
            store_unwatch(a->store);
            log_info("apply", "%s [%d]: stored offset %" PRId64 " (cached %" PRId64 "): re-deciding",
                     p->topic, (int)p->partition, now.offset, p->meta.offset);
            p->meta.offset = now.offset;
            p->meta.month = now.month;
            goto again;
        }
    }
    for (size_t k = 0; k < nreq; k++)
        if (!replies[k] || replies[k]->type != REDIS_REPLY_ARRAY ||
            replies[k]->elements != reqs[k].nf) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size, "redis: unexpected reply reading %s", reqs[k].key);
            goto out;
        }

    /* Load the customer-months read. */
    for (size_t s = 0; s < a->cm.cap; s++) {
        cm_entry_t *e = a->cm.slots[s].key ? a->cm.slots[s].value : NULL;
        if (!e) continue;
        redisReply *ra = replies[e->req]->element[e->aidx];
        redisReply *rs = replies[e->req]->element[e->sidx];
        if (ra->type == REDIS_REPLY_STRING && agg_parse(&e->agg, ra->str, ra->len) != 0) {
            store_unwatch(a->store);
            snprintf(errstr, errstr_size, "redis: %s field %s holds \"%.40s\", not an aggregate",
                     reqs[e->req].key, e->afield, ra->str);
            goto out;
        }
        if (rs->type == REDIS_REPLY_STRING && agg_skuset_parse(&e->skus, rs->str, rs->len) != 0)
            goto oom;
    }

    /* Decide, in offset order. */
    size_t ndead = 0;
    for (size_t i = 0; i < n; i++) {
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
                if (replies[k]->element[ofirst[k] + orank[i]]->type == REDIS_REPLY_STRING)
                    seen->value = (void *)1;
        }
        if (seen->value) {
            m->state = MSG_DUPLICATE;
            continue;
        }
        const order_t *o = &a->orders[i];
        char ck[ORDER_ID_MAX + 16];
        int l = snprintf(ck, sizeof(ck), "%d:%s", (int)omonth[i], o->customer_id);
        cm_entry_t *e = strmap_get(&a->cm, ck, (size_t)l)->value;
        int64_t excess = 0;
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
    }

    /* Refused records must be durable before the offset moves past them. */
    if (ndead > 0 && a->dead(a->dead_opaque, p, dead, ndead, errstr, errstr_size) != 0) {
        store_unwatch(a->store);
        goto out;
    }

    /* Round trip 2: the writes, the offset, the dropped months. */
    for (size_t s = 0; s < a->cm.cap; s++) {
        cm_entry_t *e = a->cm.slots[s].key ? a->cm.slots[s].value : NULL;
        if (!e || !e->dirty) continue;
        month_req_t *r = &reqs[e->req];
        char buf[128], *skus;
        size_t slen;
        int l = agg_format(&e->agg, buf, sizeof(buf));
        formatted[nformatted] = strdup(buf);
        if (!formatted[nformatted]) goto oom;
        if (push(&r->w, &r->wlen, &r->nw, &r->capw, e->afield, e->alen) ||
            push(&r->w, &r->wlen, &r->nw, &r->capw, formatted[nformatted++], (size_t)l))
            goto oom;
        skus = agg_skuset_format(&e->skus, &slen);
        if (!skus) goto oom;
        formatted[nformatted++] = skus;
        if (slen > 0 && (push(&r->w, &r->wlen, &r->nw, &r->capw, e->sfield, e->slen) ||
                         push(&r->w, &r->wlen, &r->nw, &r->capw, skus, slen)))
            goto oom;
    }
    sets = calloc(nreq ? nreq : 1, sizeof(*sets));
    if (!sets) goto oom;
    for (size_t k = 0; k < nreq; k++) {
        memcpy(sets[k].key, reqs[k].key, sizeof(sets[k].key));
        sets[k].argv = reqs[k].w;
        sets[k].argvlen = reqs[k].wlen;
        sets[k].nargs = reqs[k].nw;
        /* Months that left the kept range [final - W, final] are dropped:
         * memory does not grow with time. */
        if (final_month >= 0 && reqs[k].month < final_month - W) delkeys[ndel++] = reqs[k].key;
    }
    if (a->fault_stall_file) {
        struct stat st;
        for (int i = 0; i < 1200 && stat(a->fault_stall_file, &st) == 0; i++) {
            struct timespec ts = {0, 100000000};
            nanosleep(&ts, NULL);
        }
    }
    int64_t next = msgs[n - 1].offset + 1;
    if (p->meta.offset > next) next = p->meta.offset; /* all redelivered */
    int src = store_commit(a->store, p->topic, p->partition, a->owner, sets, nreq, next,
                           final_month, delkeys, ndel, errstr, errstr_size);
    if (src == STORE_FENCED) {
        snprintf(errstr, errstr_size, "%s [%d]: commit refused: another instance took the partition",
                 p->topic, (int)p->partition);
        a->stats.fenced++;
        rc = APPLY_FENCED;
        goto out;
    }
    if (src != STORE_OK) goto out;

    p->meta.offset = next;
    p->meta.month = final_month;
    a->stats.batches++;
    for (size_t i = 0; i < n; i++) {
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
    (void)first;
    rc = APPLY_OK;
    goto out;

too_many:
    store_unwatch(a->store);
    snprintf(errstr, errstr_size, "batch touches more than %zu months", maxreq);
    goto out;
oom:
    snprintf(errstr, errstr_size, "out of memory");
out:
    for (size_t k = 0; reqs && k < nreq; k++) {
        free(reqs[k].f);
        free(reqs[k].flen);
        free(reqs[k].w);
        free(reqs[k].wlen);
        if (replies[k]) freeReplyObject(replies[k]);
    }
    free(reqs);
    free(replies);
    free(delkeys);
    free(ofirst);
    free(orank);
    free(dverdict);
    if (ofield)
        for (size_t i = 0; i < n; i++) free(ofield[i]);
    if (formatted)
        for (size_t i = 0; i < nformatted; i++) free(formatted[i]);
    free(formatted);
    free(sets);
    free(ofield);
    free(olen);
    free(omonth);
    free(dead);
    return rc;
}
