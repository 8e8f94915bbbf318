/*
 * review.c -- the monthly review of one partition, in bounded pages.
 *
 * Pass 1 reads every customer's state page by page (HSCAN), without
 * holding anything: the window purchases rank each customer within its
 * format for the classification's scale digit, which must see the whole
 * partition.  Pass 2 reviews the customers in the byte order of their ids,
 * REVIEW_PAGE at a time, each page one watched transaction (txn.c) with
 * the new states, the tier-change events and the cursor in meta
 * (rv_month, rv_after: the last customer done).  A crash resumes at the
 * cursor: every customer is reviewed once, every event decided once.  The
 * last page sets meta.reviewed and clears the cursor.  Orders of later
 * months wait for the review (batch.c cuts there), so the states pass 1
 * ranked are the states pass 2 decides on.
 *
 * The scale digit ranks a customer by its window purchases among the
 * customers of the same format *in this partition*.  Customers are spread
 * over partitions by a hash of their id, so each partition is a random
 * sample of the whole and the digit is an estimate of the global one.
 *
 * The same pages also carry a partition across months with no orders at
 * once (review_carry), once reviews there have stopped changing anything.
 */
#include "review.h"

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

#define REVIEW_PAGE 1000

/* One customer of the partition, as pass 1 saw it. */
typedef struct rentry {
    const char *id; /* in the review's arena */
    uint32_t len;
    char fmt; /* profile format, 0 without a profile */
    char scale;
    int64_t total; /* window purchases */
    uint64_t pre;  /* the id's first 8 bytes, big-endian, 0-padded: see by_id */
} rentry_t;

/* An id's first 8 bytes as a number that orders as they do. */
static uint64_t id_prefix(const char *id, size_t len) {
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++) v = v << 8 | (i < len ? (uint8_t)id[i] : 0);
    return v;
}

/* One customer's values as a page decides on them: its state and (in a
 * review) its profile; NULL where Redis holds none. */
typedef struct pval {
    const char *c, *p;
    size_t clen, plen;
} pval_t;

typedef struct review {
    apply_ctx_t *a;
    apply_part_t *p;
    int32_t month;      /* the month reviewed; for a carry, the last reviewed */
    int32_t carry_to;   /* -1: a review; else carry [month+1 .. carry_to] */
    int64_t decided_at; /* a review's events' time: the month's end (outbox_review_at) */
    rentry_t *e;        /* every customer, in the byte order of ids */
    size_t n, cap;
    arena_t ids;
    size_t lo, hi;  /* the page */
    const char **f; /* the page's ids, as fields */
    size_t *fl;
    pval_t *v; /* the page's values (REVIEW_PAGE) */
    /* The next page, read with this one (page_plan): its range, ids and
     * values, the values copied into `ahead` (the store's replies last
     * only until its next read).  nlo == nhi: none. */
    size_t nlo, nhi;
    const char **nf;
    size_t *nfl;
    pval_t *nv;
    arena_t ahead;
    /* The next page decided while Redis executes this page's EXEC
     * (speculate): its writes, used if meta is then what this page left. */
    store_tx_t spec; /* no commands: none (a page always writes its cursor) */
    customer_t *dc;  /* REVIEW_PAGE each */
    state_customer_t *s;
    outbox_t outbox;
    arena_t blobs;
    arena_t scan; /* one HSCAN step's reply */
    const char **argv;
    size_t *argvlen;
    int steady, resumed;
    uint64_t tier_events, pages;
    char ckey[256], pkey[256], mkey[256], rv[16], after[ORDER_ID_MAX + 1];
} review_t;

/* An entry to look an id up by (find, resume_at). */
static rentry_t key_of(const char *id, size_t len) {
    rentry_t k = {id, (uint32_t)len, 0, 0, 0, id_prefix(id, len)};
    return k;
}

/* Byte order of the ids.  The prefixes decide most comparisons without
 * touching the ids (a review sorts every customer of the partition): two
 * that differ do at a byte the ids differ at, or where the shorter ends
 * (padding 0 sorts below any byte but a 0, and a 0 there ties). */
static int by_id(const void *x, const void *y) {
    const rentry_t *a = x, *b = y;
    if (a->pre != b->pre) return a->pre < b->pre ? -1 : 1;
    int c = memcmp(a->id, b->id, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int by_format_then_total(const void *x, const void *y) {
    const rentry_t *a = *(const rentry_t *const *)x, *b = *(const rentry_t *const *)y;
    if (a->fmt != b->fmt) return a->fmt < b->fmt ? -1 : 1;
    if (a->total != b->total) return a->total > b->total ? -1 : 1;
    return by_id(a, b);
}

static rentry_t *add_entry(review_t *r, const char *id, size_t len) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 1024;
        rentry_t *e = realloc(r->e, cap * sizeof(*e));
        if (!e) return NULL;
        r->e = e;
        r->cap = cap;
    }
    rentry_t *e = &r->e[r->n];
    memset(e, 0, sizeof(*e));
    if (!(e->id = arena_strndup(&r->ids, id, len))) return NULL;
    e->len = (uint32_t)len;
    e->pre = id_prefix(id, len);
    r->n++;
    return e;
}

/* One HSCAN step of key: *cursor moves on (0 at the end); fn sees each
 * field and value. */
static int scan_step(review_t *r, const char *key, char *cursor, size_t csize,
                     int (*fn)(review_t *, redisReply *, redisReply *, char *, size_t),
                     char *errstr, size_t errstr_size) {
    store_tx_t tx = {0};
    redisReply *rep = NULL;
    int rc = APPLY_RETRY;
    if (store_tx_addv(&tx, 5, "HSCAN", (size_t)5, key, strlen(key), cursor, strlen(cursor), "COUNT",
                      (size_t)5, "1000", (size_t)4) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    arena_reset(&r->scan); /* the step before's reply */
    if (store_pipeline_in(r->a->store, &tx, &rep, &r->scan, errstr, errstr_size) != STORE_OK)
        goto out;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_ARRAY) {
        snprintf(errstr, errstr_size, "redis: unexpected HSCAN reply for %s", key);
        goto out;
    }
    snprintf(cursor, csize, "%s", rep->element[0]->str);
    redisReply *kv = rep->element[1];
    for (size_t i = 0; i + 1 < kv->elements; i += 2)
        if ((rc = fn(r, kv->element[i], kv->element[i + 1], errstr, errstr_size)) != APPLY_OK)
            goto out;
    rc = APPLY_OK;
out:
    store_tx_free(&tx);
    return rc;
}

static int scan_all(review_t *r, const char *key,
                    int (*fn)(review_t *, redisReply *, redisReply *, char *, size_t), char *errstr,
                    size_t errstr_size) {
    char cursor[32] = "0";
    do {
        int rc = scan_step(r, key, cursor, sizeof(cursor), fn, errstr, errstr_size);
        if (rc != APPLY_OK) return rc;
    } while (strcmp(cursor, "0") != 0);
    return APPLY_OK;
}

/* Pass 1, customers: each id and its total (HSCAN may repeat an id: the
 * copies go when the entries are sorted). */
static int see_customer(review_t *r, redisReply *k, redisReply *v, char *errstr,
                        size_t errstr_size) {
    if (k->type != REDIS_REPLY_STRING || k->len > ORDER_ID_MAX) return APPLY_OK;
    rentry_t *e = add_entry(r, k->str, k->len);
    if (!e) {
        snprintf(errstr, errstr_size, "out of memory");
        return APPLY_RETRY;
    }
    if (r->carry_to >= 0) return APPLY_OK; /* no ranking for a carry */
    char why[200];
    if (state_decode_lazy(&r->s[0], v->str, v->len, why, sizeof(why)) != 0)
        return apply_corrupt(r->a, r->ckey, k->str, k->len, why, 1, errstr, errstr_size);
    policy_month_t w[POLICY_WINDOW_MAX];
    state_window(&r->s[0], r->month, r->a->window, w);
    for (int32_t i = 0; i < r->a->window; i++) e->total += w[i].qty;
    return APPLY_OK;
}

/* The entry of id in the sorted entries, or NULL. */
static rentry_t *find(review_t *r, const char *id, size_t len) {
    rentry_t key = key_of(id, len);
    return bsearch(&key, r->e, r->n, sizeof(*r->e), by_id);
}

/* Pass 1, profiles: the format each ranking groups by. */
static int see_profile(review_t *r, redisReply *k, redisReply *v, char *errstr,
                       size_t errstr_size) {
    (void)errstr, (void)errstr_size;
    rentry_t *e = find(r, k->str, k->len);
    policy_profile_t prof;
    int64_t upd;
    if (e && profile_text_parse(&prof, &upd, v->str, v->len) == 0) e->fmt = (char)prof.format;
    return APPLY_OK;
}

/* Sorts the entries by id and drops the copies HSCAN returned. */
static void sort_unique(review_t *r) {
    size_t k = 0;
    qsort(r->e, r->n, sizeof(*r->e), by_id);
    for (size_t i = 0; i < r->n; i++)
        if (k == 0 || by_id(&r->e[k - 1], &r->e[i]) != 0) r->e[k++] = r->e[i];
    r->n = k;
}

/* Scale digits: rank within format, by window purchases. */
static int rank(review_t *r) {
    rentry_t **order = malloc((r->n + 1) * sizeof(*order));
    if (!order) return -1;
    for (size_t i = 0; i < r->n; i++) order[i] = &r->e[i];
    qsort(order, r->n, sizeof(*order), by_format_then_total);
    for (size_t i = 0; i < r->n;) {
        size_t j = i;
        while (j < r->n && order[j]->fmt == order[i]->fmt) j++;
        for (size_t k = i; k < j; k++)
            order[k]->scale = policy_scale((int64_t)(k - i + 1), (int64_t)(j - i));
        i = j;
    }
    free(order);
    return 0;
}

static int pass1(review_t *r, char *errstr, size_t errstr_size) {
    int rc;
    if ((rc = scan_all(r, r->ckey, see_customer, errstr, errstr_size)) != APPLY_OK) return rc;
    sort_unique(r);
    if (r->carry_to < 0) {
        if ((rc = scan_all(r, r->pkey, see_profile, errstr, errstr_size)) != APPLY_OK) return rc;
        if (rank(r) != 0) {
            snprintf(errstr, errstr_size, "out of memory");
            return APPLY_RETRY;
        }
    }
    return APPLY_OK;
}

/* The month the cursor names: the month reviewed, or a carry's target
 * (a carry always spans two months or more, so the two cannot be taken
 * for each other: see review_through). */
static int32_t cursor_month(const review_t *r) {
    return r->carry_to >= 0 ? r->carry_to : r->month;
}

/* The first customer after the cursor meta holds for this month. */
static size_t resume_at(const review_t *r, const store_meta_t *m) {
    if (m->rv_month != cursor_month(r) || !m->rv_after[0]) return 0;
    rentry_t key = key_of(m->rv_after, strlen(m->rv_after));
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (by_id(&r->e[mid], &key) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Asks for the states (and, in a review, the profiles) of ids[0..n). */
static void add_reads(const review_t *r, txn_read_t *t, const char **ids, size_t *lens, size_t n) {
    if (n == 0) return;
    t->keys[t->nkeys] = (char *)r->ckey;
    t->fields[t->nkeys] = ids;
    t->flens[t->nkeys] = lens;
    t->nfields[t->nkeys++] = n;
    if (r->carry_to < 0) {
        t->keys[t->nkeys] = (char *)r->pkey;
        t->fields[t->nkeys] = ids;
        t->flens[t->nkeys] = lens;
        t->nfields[t->nkeys++] = n;
    }
}

/* Reads the page at the cursor, unless it was decided ahead (r->spec:
 * then only meta is needed for it), and the page after it. */
static int page_plan(void *ctx, txn_read_t *t, char *errstr, size_t errstr_size) {
    review_t *r = ctx;
    (void)errstr, (void)errstr_size;
    if (!r->spec.ncmds) {
        r->lo = resume_at(r, &r->p->meta);
        r->hi = r->lo + REVIEW_PAGE < r->n ? r->lo + REVIEW_PAGE : r->n;
        for (size_t i = r->lo; i < r->hi; i++) {
            r->f[i - r->lo] = r->e[i].id;
            r->fl[i - r->lo] = r->e[i].len;
        }
        add_reads(r, t, r->f, r->fl, r->hi - r->lo);
    }
    r->nlo = r->hi;
    r->nhi = r->nlo + REVIEW_PAGE < r->n ? r->nlo + REVIEW_PAGE : r->n;
    for (size_t i = r->nlo; i < r->nhi; i++) {
        r->nf[i - r->nlo] = r->e[i].id;
        r->nfl[i - r->nlo] = r->e[i].len;
    }
    add_reads(r, t, r->nf, r->nfl, r->nhi - r->nlo);
    return APPLY_OK;
}

/* The values of n customers from the replies at rep[0] (and rep[1] in a
 * review), pointing into them. */
static void values_of(const review_t *r, redisReply **rep, size_t n, pval_t *v) {
    for (size_t i = 0; i < n; i++) {
        const redisReply *c = rep[0]->element[i];
        const redisReply *pr = r->carry_to < 0 ? rep[1]->element[i] : NULL;
        v[i].c = c->type == REDIS_REPLY_STRING ? c->str : NULL;
        v[i].clen = v[i].c ? c->len : 0;
        v[i].p = pr && pr->type == REDIS_REPLY_STRING ? pr->str : NULL;
        v[i].plen = v[i].p ? pr->len : 0;
    }
}

static const char *copy_in(arena_t *a, const char *p, size_t n) {
    char *c = arena_alloc(a, n ? n : 1);
    if (c) memcpy(c, p, n);
    return c;
}

/* Keeps the next page's values past the store's next read; none on a
 * failure (that page is then read when its turn comes). */
static void keep_ahead(review_t *r, redisReply **rep) {
    size_t n = r->nhi - r->nlo;
    arena_reset(&r->ahead);
    values_of(r, rep, n, r->nv);
    for (size_t i = 0; i < n; i++) {
        if (r->nv[i].c && !(r->nv[i].c = copy_in(&r->ahead, r->nv[i].c, r->nv[i].clen))) goto none;
        if (r->nv[i].p && !(r->nv[i].p = copy_in(&r->ahead, r->nv[i].p, r->nv[i].plen))) goto none;
    }
    return;
none:
    r->nhi = r->nlo;
}

/* Moves a steady customer's empty months forward by d, keeping the kept
 * range of the month after `to`. */
static void carry(review_t *r, state_customer_t *s) {
    const int32_t W = r->a->window, d = r->carry_to - r->month;
    state_drop_before(s, r->month + 1 - W);
    for (uint32_t k = 0; k < s->nmonths; k++) s->months[k].month += d;
    state_drop_before(s, r->carry_to + 1 - W);
}

/* The customer's state as the review's steadiness sees it: what it
 * writes back (state.h), less the months.  first_month counts only once
 * the customer is placed, and a scale never set reads as 'X'. */
static int same_state(const customer_t *a, const customer_t *b) {
    return a->st.tier == b->st.tier &&
           (a->st.tier > 0 ? a->st.first_month : 0) == (b->st.tier > 0 ? b->st.first_month : 0) &&
           a->st.evaluated == b->st.evaluated && a->st.has_override == b->st.has_override &&
           a->st.override_tier == b->st.override_tier && a->seq == b->seq &&
           a->live_score_c == b->live_score_c &&
           (a->scale ? a->scale : 'X') == (b->scale ? b->scale : 'X');
}

/* Reviews one customer: the decision, the next month's tier and grade. */
static int review_one(review_t *r, store_tx_t *tx, size_t i, customer_t *c, state_customer_t *s,
                      char *errstr, size_t errstr_size) {
    const int32_t W = r->a->window;
    const policy_profile_t *prof = customer_profile(c, r->a->policy);
    policy_month_t win[POLICY_WINDOW_MAX];
    policy_decision_t dec;
    const customer_t before = *c;
    state_window(s, r->month, W, win);
    c->scale = r->e[i].scale;
    policy_customer_t pc = {c->st, *prof, win, (size_t)W};
    if (policy_review_decide(r->a->policy, &pc, r->month, &dec, errstr, errstr_size) != 0 ||
        outbox_tier_change(&r->outbox, tx, c, &dec, win, (size_t)W, r->month, r->decided_at, errstr,
                           errstr_size) != 0)
        return -1;
    if (!c->st.evaluated || !same_state(&before, c)) r->steady = 0;
    /* The tier the next month begins with, and its grade so far. */
    state_drop_before(s, r->month + 1 - W);
    state_month_t *sm = state_month(s, r->month + 1, 1);
    if (!sm) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    sm->tier = c->st.tier;
    sm->grade = prof->grade;
    return 0;
}

static int page_meta(review_t *r, store_tx_t *tx) {
    if (r->hi == r->n) { /* the last page: the month is done */
        int32_t done = r->carry_to >= 0 ? r->carry_to : r->month;
        snprintf(r->rv, sizeof(r->rv), "%06d", month_yyyymm(done));
        return store_tx_addv(tx, 4, "HSET", (size_t)4, r->mkey, strlen(r->mkey), "reviewed",
                             (size_t)8, r->rv, strlen(r->rv)) ||
               store_tx_addv(tx, 4, "HDEL", (size_t)4, r->mkey, strlen(r->mkey), "rv_month",
                             (size_t)8, "rv_after", (size_t)8);
    }
    snprintf(r->rv, sizeof(r->rv), "%06d", month_yyyymm(cursor_month(r)));
    snprintf(r->after, sizeof(r->after), "%s", r->e[r->hi - 1].id);
    return store_tx_addv(tx, 6, "HSET", (size_t)4, r->mkey, strlen(r->mkey), "rv_month", (size_t)8,
                         r->rv, strlen(r->rv), "rv_after", (size_t)8, r->after, strlen(r->after));
}

/* Decides the page r->lo..r->hi on the values v and adds its writes to
 * tx.  quiet: a state that does not parse is only refused (a page decided
 * ahead is decided again when its turn comes, and that counts it). */
static int decide_page(review_t *r, const pval_t *v, store_tx_t *tx, int quiet, char *errstr,
                       size_t errstr_size) {
    size_t n = 2;
    arena_reset(&r->blobs);
    outbox_free(&r->outbox);
    outbox_open(&r->outbox, r->a, r->p);
    r->argv[0] = "HSET";
    r->argvlen[0] = 4;
    r->argv[1] = r->ckey;
    r->argvlen[1] = strlen(r->ckey);
    for (size_t i = r->lo; i < r->hi; i++) {
        customer_t *c = &r->dc[i - r->lo];
        state_customer_t *s = &r->s[i - r->lo];
        const pval_t *cv = &v[i - r->lo];
        char why[200];
        state_reset(s);
        if (!cv->c) continue; /* gone: nothing to review */
        if (state_decode_lazy(s, cv->c, cv->clen, why, sizeof(why)) != 0)
            return apply_corrupt(r->a, r->ckey, r->e[i].id, r->e[i].len, why, !quiet, errstr,
                                 errstr_size);
        memset(c, 0, sizeof(*c));
        memcpy(c->id, r->e[i].id, r->e[i].len);
        c->len = r->e[i].len;
        customer_load(c, s);
        if (r->carry_to >= 0) {
            carry(r, s);
        } else {
            if (cv->p &&
                profile_text_parse(&c->profile, &c->profile_updated_at, cv->p, cv->plen) == 0)
                c->has_profile = 1;
            if (c->st.tier <= 0) continue;
            if (review_one(r, tx, i, c, s, errstr, errstr_size) != 0) return APPLY_RETRY;
            customer_store(c, s);
        }
        size_t len;
        const uint8_t *blob = state_encode_in(s, &r->blobs, &len);
        if (!blob) goto oom;
        r->argv[n] = r->e[i].id;
        r->argvlen[n++] = r->e[i].len;
        r->argv[n] = (const char *)blob;
        r->argvlen[n++] = len;
    }
    if ((n > 2 && store_tx_add(tx, (int)n, r->argv, r->argvlen) != 0) ||
        outbox_flush(&r->outbox, tx) != 0 || page_meta(r, tx) != 0)
        goto oom;
    return APPLY_OK;
oom:
    snprintf(errstr, errstr_size, "out of memory");
    return APPLY_RETRY;
}

static void drop_spec(review_t *r) {
    store_tx_free(&r->spec);
    memset(&r->spec, 0, sizeof(r->spec));
}

static int page_decide(void *ctx, const store_meta_t *now, redisReply **rep, store_tx_t *tx,
                       char *errstr, size_t errstr_size) {
    review_t *r = ctx;
    if (now->reviewed != r->p->meta.reviewed || now->rv_month != r->p->meta.rv_month ||
        strcmp(now->rv_after, r->p->meta.rv_after) != 0) {
        drop_spec(r);
        return TXN_AGAIN; /* a page landed though its reply was lost */
    }
    size_t k = 0; /* the replies: the page's (unless decided ahead), then the next page's */
    if (r->spec.ncmds) {
        /* Meta is what the page before left (the epoch by txn.c, the
         * cursor above), and every other writer of the partition's states
         * moves the epoch, an offset or the cursor: the values read ahead
         * are the states Redis holds now. */
        if (now->offset != r->p->meta.offset || now->poffset != r->p->meta.poffset) {
            drop_spec(r);
            return TXN_AGAIN;
        }
        *tx = r->spec; /* moved: the transaction owns it now */
        memset(&r->spec, 0, sizeof(r->spec));
    } else {
        values_of(r, rep, r->hi - r->lo, r->v);
        int rc = decide_page(r, r->v, tx, 0, errstr, errstr_size);
        if (rc != APPLY_OK) return rc;
        if (r->hi > r->lo) k = r->carry_to < 0 ? 2 : 1;
    }
    if (r->nhi > r->nlo) keep_ahead(r, rep + k);
    return APPLY_OK;
}

/* Decides the next page on the values read ahead while Redis executes
 * this page's EXEC (sent ahead: txn_ops_t.later), into r->spec. */
static void speculate(review_t *r) {
    char why[300];
    if (r->hi == r->n || r->nlo != r->hi || r->nhi == r->nlo) return;
    int steady = r->steady;
    pval_t *t = r->v;
    r->v = r->nv; /* the next page's values become the page's */
    r->nv = t;
    r->lo = r->nlo;
    r->hi = r->nhi;
    r->nlo = r->nhi = r->hi;
    if (decide_page(r, r->v, &r->spec, 1, why, sizeof(why)) == APPLY_OK) return;
    drop_spec(r); /* decided again, and reported, at its turn */
    r->steady = steady;
}

static void page_committed(void *ctx, apply_stats_t *tally) {
    review_t *r = ctx;
    apply_part_t *p = r->p;
    if (r->hi == r->n) {
        p->meta.reviewed = r->carry_to >= 0 ? r->carry_to : r->month;
        p->meta.rv_month = -1;
        p->meta.rv_after[0] = '\0';
    } else {
        p->meta.rv_month = cursor_month(r);
        snprintf(p->meta.rv_after, sizeof(p->meta.rv_after), "%s", r->after);
    }
    if (r->outbox.tier_events) p->outbox_dirty = 1;
    r->tier_events += r->outbox.tier_events;
    tally->tier_events += r->outbox.tier_events;
    tally->review_pages++;
    r->pages++;
    speculate(r);
}

/* Each page's EXEC is sent ahead: the next page is decided meanwhile. */
static const txn_ops_t page_ops = {page_plan, page_decide, page_committed, FAULT_REVIEW, 1};

static void review_free(review_t *r) {
    for (size_t i = 0; r->s && i < REVIEW_PAGE; i++) state_free(&r->s[i]);
    free(r->s);
    free(r->dc);
    free(r->e);
    free(r->f);
    free(r->fl);
    free(r->nf);
    free(r->nfl);
    free(r->v);
    free(r->nv);
    arena_free(&r->ahead);
    drop_spec(r);
    free(r->argv);
    free(r->argvlen);
    arena_free(&r->ids);
    arena_free(&r->blobs);
    arena_free(&r->scan);
    outbox_free(&r->outbox);
}

static int review_run(review_t *r, char *errstr, size_t errstr_size) {
    apply_part_t *p = r->p;
    int rc = APPLY_RETRY;
    apply_release(r->a); /* the batches' memory, before pass 1 takes its own */
    r->dc = calloc(REVIEW_PAGE, sizeof(*r->dc));
    r->s = calloc(REVIEW_PAGE, sizeof(*r->s));
    r->f = calloc(REVIEW_PAGE, sizeof(*r->f));
    r->fl = calloc(REVIEW_PAGE, sizeof(*r->fl));
    r->nf = calloc(REVIEW_PAGE, sizeof(*r->nf));
    r->nfl = calloc(REVIEW_PAGE, sizeof(*r->nfl));
    r->v = calloc(REVIEW_PAGE, sizeof(*r->v));
    r->nv = calloc(REVIEW_PAGE, sizeof(*r->nv));
    r->argv = calloc(2 + 2 * REVIEW_PAGE, sizeof(*r->argv));
    r->argvlen = calloc(2 + 2 * REVIEW_PAGE, sizeof(*r->argvlen));
    if (!r->dc || !r->s || !r->f || !r->fl || !r->nf || !r->nfl || !r->v || !r->nv || !r->argv ||
        !r->argvlen) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < REVIEW_PAGE; i++) state_init(&r->s[i]);
    store_key(r->a->store, p->topic, p->partition, "c", r->ckey, sizeof(r->ckey));
    store_key(r->a->store, p->topic, p->partition, "p", r->pkey, sizeof(r->pkey));
    store_key(r->a->store, p->topic, p->partition, "meta", r->mkey, sizeof(r->mkey));
    if ((rc = pass1(r, errstr, errstr_size)) != APPLY_OK) goto out;
    r->steady = 1;
    r->resumed = p->meta.rv_month == cursor_month(r) && p->meta.rv_after[0];
    do {
        rc = txn_run(r->a, p, &page_ops, r, errstr, errstr_size);
    } while (rc == APPLY_OK && p->meta.reviewed < (r->carry_to >= 0 ? r->carry_to : r->month));
out:
    review_free(r);
    return rc;
}

int review_month(apply_ctx_t *a, apply_part_t *p, int32_t month, char *errstr, size_t errstr_size) {
    review_t r;
    struct timespec t0, t1;
    char ym[16];
    p->review_steady = 0;
    if (!a->policy || p->meta.reviewed >= month) return APPLY_OK;
    memset(&r, 0, sizeof(r));
    r.a = a;
    r.p = p;
    r.month = month;
    r.carry_to = -1;
    r.decided_at = outbox_review_at(&a->zone, month); /* mktime: once, not per customer */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = review_run(&r, errstr, errstr_size);
    if (rc != APPLY_OK) return rc;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    a->stats.reviews++;
    a->stats.review_seconds +=
        (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    p->review_steady = r.steady && !r.resumed && r.tier_events == 0;
    snprintf(ym, sizeof(ym), "%06d", month_yyyymm(month));
    log_info("review",
             "%s [%d]: reviewed %.4s-%.2s: %zu customers in %" PRIu64 " pages, %" PRIu64
             " tier changes",
             p->topic, (int)p->partition, ym, ym + 4, r.n, r.pages, r.tier_events);
    return APPLY_OK;
}

/* Carries the partition from `from` (reviewed, its last W + 1 reviews
 * steady over months with no orders) to `to` (to >= from + 2): every
 * customer's empty months move forward, so the states equal what reviews
 * of from + 1 .. to would have written, and meta.reviewed says `to`. */
static int review_carry(apply_ctx_t *a, apply_part_t *p, int32_t from, int32_t to, char *errstr,
                        size_t errstr_size) {
    review_t r;
    char f[16], t[16];
    if (p->meta.reviewed != from) return APPLY_OK;
    memset(&r, 0, sizeof(r));
    r.a = a;
    r.p = p;
    r.month = from;
    r.carry_to = to;
    int rc = review_run(&r, errstr, errstr_size);
    if (rc != APPLY_OK) return rc;
    snprintf(f, sizeof(f), "%06d", month_yyyymm(from + 1));
    snprintf(t, sizeof(t), "%06d", month_yyyymm(to));
    log_info("review",
             "%s [%d]: %.4s-%.2s..%.4s-%.2s had no orders and the last %d reviews "
             "changed nothing: reviewed through %.4s-%.2s at once",
             p->topic, (int)p->partition, f, f + 4, t, t + 4, (int)a->window + 1, t, t + 4);
    return APPLY_OK;
}

int review_through(apply_ctx_t *a, apply_part_t *p, int32_t to, char *errstr, size_t errstr_size) {
    const int32_t W = a->window;
    int steady_run = 0, rc;
    if (!a->policy) return APPLY_OK; /* aggregates only: nothing to review */
    for (;;) {
        /* A carry a crash interrupted: its cursor names a month two or
         * more past the last reviewed one. */
        if (p->meta.reviewed >= 0 && p->meta.rv_month > p->meta.reviewed + 1) {
            if ((rc = review_carry(a, p, p->meta.reviewed, p->meta.rv_month, errstr,
                                   errstr_size)) != APPLY_OK)
                return rc;
            steady_run = 0;
            continue;
        }
        int32_t m = p->meta.reviewed >= 0 ? p->meta.reviewed + 1 : p->meta.month;
        if (m > to) return APPLY_OK;
        if ((rc = review_month(a, p, m, errstr, errstr_size)) != APPLY_OK) return rc;
        if (p->meta.reviewed < m) { /* cannot happen; never loop on it */
            snprintf(errstr, errstr_size, "review of month %d did not advance", (int)m);
            return APPLY_RETRY;
        }
        steady_run = p->review_steady && p->meta.reviewed == m ? steady_run + 1 : 0;
        /* Months after meta.month (the last month with an applied order)
         * have none, so from m >= meta.month + W on, every window is
         * empty: a run of W + 1 steady reviews is a fixed point, and the
         * months up to `to` are carried at once. */
        if (m + 1 < to && m >= p->meta.month + W && steady_run > W) {
            if ((rc = review_carry(a, p, m, to, errstr, errstr_size)) != APPLY_OK) return rc;
            steady_run = 0;
        }
    }
}
