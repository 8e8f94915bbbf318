/*
 * agg.c -- aggregate arithmetic.  Invariant: after agg_apply returns an
 * error, nothing it was given has changed.
 */
#include "agg.h"

#include <stdlib.h>
#include <string.h>

static int sku_cmp(const agg_skuset_t *s, size_t i, const char *sku, size_t len) {
    const agg_sku_t *e = &s->v[i];
    int c = memcmp(s->names + e->off, sku, e->len < len ? e->len : len);
    if (c == 0) c = e->len < len ? -1 : (e->len > len ? 1 : 0);
    return c;
}

/* Index of the first element >= key. */
static size_t skuset_find(const agg_skuset_t *s, const char *sku, size_t len, int *found) {
    size_t lo = 0, hi = s->n;
    *found = 0;
    /* Stored sets are parsed in sorted order: try the end first. */
    if (s->n > 0 && sku_cmp(s, s->n - 1, sku, len) < 0) return s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = sku_cmp(s, mid, sku, len);
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int agg_skuset_add(agg_skuset_t *s, const char *sku, size_t len) {
    int found;
    size_t at = skuset_find(s, sku, len, &found);

    if (found) return 0;
    if (len > UINT32_MAX || s->used + len > UINT32_MAX) return -1;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        agg_sku_t *v = realloc(s->v, cap * sizeof(*v));
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    if (!s->names || s->used + len > s->names_cap) {
        size_t cap = s->names_cap ? s->names_cap * 2 : 256;
        while (cap < s->used + len) cap *= 2;
        char *names = realloc(s->names, cap);
        if (!names) return -1;
        s->names = names;
        s->names_cap = cap;
    }
    memcpy(s->names + s->used, sku, len);
    memmove(&s->v[at + 1], &s->v[at], (s->n - at) * sizeof(*s->v));
    s->v[at].off = (uint32_t)s->used;
    s->v[at].len = (uint32_t)len;
    s->used += len;
    s->n++;
    return 1;
}

void agg_skuset_free(agg_skuset_t *s) {
    if (!s) return;
    free(s->v);
    free(s->names);
    memset(s, 0, sizeof(*s));
}

order_err_t agg_apply(agg_month_t *m, agg_skuset_t *skus, const order_t *o, int64_t *excess) {
    *excess = 0;
    if (o->kind == ORDER_RETURN) {
        int64_t q = m->qty - o->qty, a = m->amount - o->amount;
        /* Both operands are >= 0, so these differences cannot overflow. */
        if (q < 0) {
            *excess = -q;
            q = 0;
        }
        m->qty = q;
        m->amount = a < 0 ? 0 : a;
        return ORDER_OK;
    }
    int64_t q, a, n, newskus = 0;
    if (__builtin_add_overflow(m->qty, o->qty, &q) ||
        __builtin_add_overflow(m->amount, o->amount, &a) ||
        __builtin_add_overflow(m->orders, 1, &n))
        return ORDER_ERR_OVERFLOW;
    for (uint32_t i = 0; i < o->nlines; i++) {
        int r = agg_skuset_add(skus, o->lines[i].sku, o->lines[i].sku_len);
        if (r > 0) newskus++;
        /* Out of memory here would leave a SKU uncounted; the daemon cannot
         * go on meaningfully without memory, so abort rather than lie. */
        if (r < 0) abort();
    }
    m->qty = q;
    m->amount = a;
    m->orders = n;
    m->skus = (int64_t)skus->n;
    (void)newskus;
    return ORDER_OK;
}
