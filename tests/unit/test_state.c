/* One customer's compact state: encoding, corruption, and the arithmetic
 * that must agree with agg_apply.  realloc is wrapped so a test can make
 * it fail and check that nothing changed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <stdio.h>

#include "agg.h"
#include "month.h"
#include "state.h"

/* ------------------------------------------------------------------ */
/* realloc that fails on demand                                        */

void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);
static int realloc_fails; /* nonzero: every realloc returns NULL */

void *__wrap_realloc(void *p, size_t n) {
    if (realloc_fails) return NULL;
    return __real_realloc(p, n);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* xorshift64*: deterministic, seeded per test. */
static uint64_t rng_state;

static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717u;
}

static uint64_t below(uint64_t n) {
    return n ? rnd() % n : 0;
}

static int u32_cmp(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* n random distinct sorted SKU fingerprints straight into the month. */
static void fill_skus(state_month_t *m, uint32_t n) {
    uint32_t k = 0;
    if (n > m->capskus) {
        m->skus = realloc(m->skus, n * sizeof(*m->skus));
        assert_non_null(m->skus);
        m->capskus = n;
    }
    for (uint32_t i = 0; i < n; i++) m->skus[i] = (uint32_t)rnd();
    if (n > 1) qsort(m->skus, n, sizeof(*m->skus), u32_cmp);
    for (uint32_t i = 0; i < n; i++)
        if (k == 0 || m->skus[k - 1] != m->skus[i]) m->skus[k++] = m->skus[i];
    m->nskus = k;
    m->agg.skus = k;
}

/* A value that is sometimes small, sometimes near the top of its range. */
static int64_t any_nonneg(void) {
    switch (below(4)) {
    case 0: return (int64_t)below(128);
    case 1: return (int64_t)below(1u << 20);
    case 2: return INT64_MAX - (int64_t)below(3);
    default: return (int64_t)(rnd() >> 1);
    }
}

static const policy_grade_t grades[] = {POLICY_GRADE_NONE, POLICY_GRADE_A, POLICY_GRADE_B,
                                        POLICY_GRADE_C, POLICY_GRADE_D};
static const char scales[] = {'X', '1', '2', '3'};

static void random_customer(state_customer_t *c, uint32_t max_months, uint32_t max_skus,
                            uint32_t max_fps) {
    int32_t m;
    state_reset(c);
    c->st.tier = (int32_t)below(POLICY_TIERS_MAX + 1);
    c->st.first_month = (int32_t)(MONTH_MIN + (int64_t)below((uint64_t)MONTH_MAX - MONTH_MIN + 1));
    c->st.evaluated = below(2);
    c->st.has_override = below(2);
    c->st.override_tier = (int32_t)below(POLICY_TIERS_MAX + 1);
    c->seq = below(2) ? (int64_t)below(100) : any_nonneg();
    c->live_score_c = (int32_t)below(STATE_SCORE_MAX + 2) - 1;
    c->scale = scales[below(4)];

    uint32_t n = (uint32_t)below(max_months + 1);
    /* Months start anywhere, even at the ends of the representable range. */
    switch (below(3)) {
    case 0: m = MONTH_MIN; break;
    case 1: m = policy_month_of(2026, 1) - (int32_t)below(100); break;
    default: m = MONTH_MAX - (int32_t)n * 3; break;
    }
    for (uint32_t i = 0; i < n; i++) {
        state_month_t *sm = state_month(c, m, 1);
        assert_non_null(sm);
        sm->agg.qty = any_nonneg();
        sm->agg.amount = any_nonneg();
        sm->agg.orders = any_nonneg();
        sm->tier = (int32_t)below(POLICY_TIERS_MAX + 1);
        sm->grade = grades[below(5)];
        sm->qmask = (uint32_t)below(1u << POLICY_QUOTA__COUNT);
        fill_skus(sm, (uint32_t)below(max_skus + 1));
        uint32_t nf = (uint32_t)below(max_fps + 1);
        for (uint32_t j = 0; j < nf; j++) assert_int_not_equal(state_add_fp(sm, rnd()), -1);
        m += 1 + (int32_t)below(3);
    }
    assert_int_equal(state_check(c, NULL, 0), 0);
}

static void assert_same(const state_customer_t *a, const state_customer_t *b) {
    assert_int_equal(a->st.tier, b->st.tier);
    assert_int_equal(a->st.first_month, b->st.first_month);
    assert_int_equal(a->st.evaluated, b->st.evaluated);
    assert_int_equal(a->st.has_override, b->st.has_override);
    assert_int_equal(a->st.override_tier, b->st.override_tier);
    assert_int_equal(a->seq, b->seq);
    assert_int_equal(a->live_score_c, b->live_score_c);
    assert_int_equal(a->scale, b->scale);
    assert_int_equal(a->nmonths, b->nmonths);
    for (uint32_t i = 0; i < a->nmonths; i++) {
        const state_month_t *x = &a->months[i], *y = &b->months[i];
        assert_int_equal(x->month, y->month);
        assert_memory_equal(&x->agg, &y->agg, sizeof(x->agg));
        assert_int_equal(x->tier, y->tier);
        assert_int_equal(x->grade, y->grade);
        assert_int_equal(x->qmask, y->qmask);
        assert_int_equal(x->nskus, y->nskus);
        assert_int_equal(x->nfps, y->nfps);
        if (x->nskus) assert_memory_equal(x->skus, y->skus, x->nskus * sizeof(*x->skus));
        if (x->nfps) assert_memory_equal(x->fps, y->fps, x->nfps * sizeof(*x->fps));
    }
}

/* Encodes c into a fresh buffer; *len gets its size.  A guard byte past
 * the end checks that encode writes exactly what encoded_size said; the
 * one-pass encoding into an arena (what the writers use) must give the
 * same bytes within the bound, and give the rest of the bound back. */
static uint8_t *encode(const state_customer_t *c, size_t *len) {
    size_t n = state_encoded_size(c), m = 0;
    uint8_t *buf = malloc(n + 1);
    assert_non_null(buf);
    buf[n] = 0xa5;
    assert_int_equal(state_encode(c, buf), n);
    assert_int_equal(buf[n], 0xa5);
    assert_true(state_encoded_bound(c) >= n);
    arena_t a = {0};
    const uint8_t *in = state_encode_in(c, &a, &m);
    assert_non_null(in);
    assert_int_equal(m, n);
    assert_memory_equal(in, buf, n);
    uint8_t *next = arena_alloc(&a, 1); /* right after the shrunk blob */
    assert_true(next >= in + n && next < in + n + 64);
    arena_free(&a);
    *len = n;
    return buf;
}

/* Rewrites the last four bytes as the checksum of the rest, so a change
 * reaches the structural checks instead of stopping at the checksum. */
static void reseal(uint8_t *buf, size_t len) {
    uint32_t crc = state_checksum(buf, len - 4);
    for (int i = 0; i < 4; i++) buf[len - 4 + i] = (uint8_t)(crc >> (8 * i));
}

/* The lazy decode's verdict held to the full one's, which refused with
 * err: refused with the same message; or, where the full decode refused
 * a format-4 SKU set's codes (which the lazy decode steps over), refused
 * by then or when the sets are decoded, the set's message either way. */
static void lazy_refused(state_customer_t *l, int lrc, const char *lerr, const char *err) {
    if (!strstr(err, "SKU fingerprints of month")) {
        assert_int_equal(lrc, -1);
        assert_string_equal(lerr, err);
    } else if (lrc == 0) {
        char uerr[256] = "";
        int urc = 0;
        for (uint32_t i = 0; i < l->nmonths && urc == 0; i++)
            urc = state_unpack(l, l->months[i].month, uerr, sizeof(uerr));
        assert_int_equal(urc, -1);
        assert_string_equal(uerr, err);
    }
    if (lrc != 0) assert_int_equal(l->nmonths, 0); /* left reset */
}

/* Decodes; when that succeeds the bytes must be exactly what encode
 * writes for the result (one encoding per value; an older format's value
 * encodes to one that decodes the same).  The lazy decode must agree:
 * the same verdict and message (lazy_refused), and, left in the bytes,
 * the same bytes when encoded. */
static int decode_canonical(state_customer_t *d, const uint8_t *buf, size_t len) {
    char err[256] = "", lerr[256] = "";
    state_customer_t l;
    state_init(&l);
    int lrc = state_decode_lazy(&l, buf, len, lerr, sizeof(lerr));
    if (state_decode(d, buf, len, err, sizeof(err)) != 0) {
        assert_true(err[0] != '\0');
        assert_int_equal(d->nmonths, 0); /* left reset */
        lazy_refused(&l, lrc, lerr, err);
        state_free(&l);
        return -1;
    }
    assert_int_equal(lrc, 0);
    size_t n, ln;
    uint8_t *again = encode(d, &n), *lazy = encode(&l, &ln);
    assert_int_equal(state_check(d, NULL, 0), 0);
    assert_int_equal(state_check(&l, NULL, 0), 0);
    assert_int_equal(ln, n);
    assert_memory_equal(lazy, again, n);
    if (buf[0] == STATE_FORMAT) {
        assert_int_equal(n, len);
        assert_memory_equal(again, buf, len);
    } else {
        state_customer_t e;
        state_init(&e);
        assert_int_equal(state_decode(&e, again, n, NULL, 0), 0);
        assert_same(d, &e);
        state_free(&e);
    }
    free(again);
    free(lazy);
    state_free(&l);
    return 0;
}

static order_t mk_order(order_kind_t kind, int64_t qty, int64_t amount, uint32_t nlines) {
    order_t o;
    memset(&o, 0, sizeof(o));
    o.kind = kind;
    o.qty = qty;
    o.amount = amount;
    o.nlines = nlines;
    o.lines_cap = nlines;
    o.lines = calloc(nlines ? nlines : 1, sizeof(*o.lines));
    assert_non_null(o.lines);
    return o;
}

static void set_sku(order_t *o, uint32_t i, const char *sku) {
    size_t n = strlen(sku);
    assert_true(n <= ORDER_SKU_MAX);
    memcpy(o->lines[i].sku, sku, n + 1);
    o->lines[i].sku_len = (uint8_t)n;
}

/* ------------------------------------------------------------------ */
/* Hashes                                                              */

static void test_checksum_and_fingerprints(void **state) {
    (void)state;
    /* the standard CRC-32C check value */
    assert_int_equal(state_checksum("123456789", 9), 0xe3069283u);
    assert_int_equal(state_checksum("", 0), 0);
    /* deterministic, and different for near-identical ids */
    assert_true(state_order_fp("o-1", 3) == state_order_fp("o-1", 3));
    assert_true(state_order_fp("o-1", 3) != state_order_fp("o-2", 3));
    assert_true(state_order_fp("o-1", 3) != state_order_fp("o-1\0", 4));
    assert_true(state_sku_fp("A", 1) != state_sku_fp("B", 1));
    assert_true(state_sku_fp("A", 1) == (uint32_t)(state_order_fp("A", 1) >> 32));
    /* well mixed: one flipped input bit flips about half the output */
    int total = 0;
    for (int i = 0; i < 1000; i++) {
        char a[16], b[16];
        int n = snprintf(a, sizeof(a), "order-%d", i);
        memcpy(b, a, (size_t)n);
        b[n - 1] ^= 1;
        total += __builtin_popcountll(state_order_fp(a, (size_t)n) ^ state_order_fp(b, (size_t)n));
    }
    assert_in_range(total / 1000, 28, 36);
}

/* ------------------------------------------------------------------ */
/* Life cycle and months                                               */

static void test_init_reset_free(void **state) {
    (void)state;
    state_customer_t c;
    state_init(&c);
    assert_int_equal(c.st.tier, 0);
    assert_int_equal(c.live_score_c, -1);
    assert_int_equal(c.scale, 'X');
    assert_int_equal(c.nmonths, 0);

    state_month_t *m = state_month(&c, 100, 1);
    assert_int_equal(state_add_fp(m, 7), 1);
    uint64_t *mem = m->fps;
    c.st.tier = 3;
    c.seq = 9;
    c.live_score_c = 5000;
    c.scale = '2';
    state_reset(&c);
    assert_int_equal(c.st.tier, 0);
    assert_int_equal(c.seq, 0);
    assert_int_equal(c.live_score_c, -1);
    assert_int_equal(c.scale, 'X');
    assert_int_equal(c.nmonths, 0);
    assert_false(state_seen(&c, 7));
    /* the memory stays for the next customer */
    m = state_month(&c, 200, 1);
    assert_ptr_equal(m->fps, mem);
    assert_int_equal(m->nfps, 0);
    assert_int_equal(m->tier, 0);
    assert_int_equal(m->grade, POLICY_GRADE_NONE);
    state_free(&c);
    assert_null(c.months);
    state_free(&c); /* twice is fine */
    state_free(NULL);
}

static void test_month_insertion_order_and_limit(void **state) {
    (void)state;
    state_customer_t c;
    state_init(&c);
    rng_state = 0x5eed0001;
    int32_t base = policy_month_of(2026, 1);
    /* a shuffled set of distinct months */
    int32_t order[STATE_MONTHS_MAX];
    for (int i = 0; i < STATE_MONTHS_MAX; i++) order[i] = base + 2 * i;
    for (int i = STATE_MONTHS_MAX - 1; i > 0; i--) {
        int j = (int)below((uint64_t)i + 1);
        int32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int i = 0; i < STATE_MONTHS_MAX; i++) {
        assert_null(state_month(&c, order[i], 0));
        state_month_t *m = state_month(&c, order[i], 1);
        assert_non_null(m);
        assert_int_equal(m->month, order[i]);
        m->agg.qty = order[i]; /* a mark to find it by later */
        assert_int_equal(state_add_fp(m, (uint64_t)order[i]), 1);
        assert_int_equal(c.nmonths, (uint32_t)i + 1);
        for (uint32_t k = 1; k < c.nmonths; k++)
            assert_true(c.months[k - 1].month < c.months[k].month);
    }
    /* full: a new month is refused, existing ones are still found */
    assert_null(state_month(&c, base + 1, 1));
    assert_null(state_month(&c, base - 1, 1));
    assert_null(state_month(&c, base + 1000, 1));
    assert_int_equal(c.nmonths, STATE_MONTHS_MAX);
    for (int i = 0; i < STATE_MONTHS_MAX; i++) {
        state_month_t *m = state_month(&c, order[i], 1);
        assert_non_null(m);
        assert_int_equal(m->agg.qty, order[i]);
        assert_true(state_seen(&c, (uint64_t)order[i]));
        assert_ptr_equal(state_month(&c, order[i], 0), m);
    }
    assert_int_equal(state_check(&c, NULL, 0), 0);
    state_free(&c);
}

static void test_drop_before(void **state) {
    (void)state;
    state_customer_t c;
    state_init(&c);
    for (int32_t m = 10; m < 20; m++) {
        state_month_t *sm = state_month(&c, m, 1);
        assert_int_equal(state_add_fp(sm, (uint64_t)m * 1000), 1);
    }
    state_drop_before(&c, 5); /* nothing before */
    assert_int_equal(c.nmonths, 10);
    state_drop_before(&c, 15);
    assert_int_equal(c.nmonths, 5);
    for (uint32_t i = 0; i < c.nmonths; i++) assert_int_equal(c.months[i].month, 15 + (int32_t)i);
    assert_false(state_seen(&c, 14000));
    assert_true(state_seen(&c, 15000));
    assert_true(state_seen(&c, 19000));
    /* the dropped months' arrays are spares: a new month reuses one */
    state_month_t *sm = state_month(&c, 30, 1);
    assert_non_null(sm->fps);
    assert_int_equal(sm->nfps, 0);
    assert_int_equal(state_check(&c, NULL, 0), 0);
    /* between two months, and past all of them */
    state_drop_before(&c, 17);
    assert_int_equal(c.nmonths, 4);
    assert_int_equal(c.months[0].month, 17);
    state_drop_before(&c, 31);
    assert_int_equal(c.nmonths, 0);
    /* every slot still owns distinct memory: no pointer shared twice */
    for (uint32_t i = 0; i < c.capmonths; i++)
        for (uint32_t j = i + 1; j < c.capmonths; j++)
            if (c.months[i].fps) assert_ptr_not_equal(c.months[i].fps, c.months[j].fps);
    state_free(&c); /* ASan reports a leak or double free here */
}

static void test_seen_and_add_fp(void **state) {
    (void)state;
    state_customer_t c;
    state_init(&c);
    state_month_t *a = state_month(&c, 500, 1);
    assert_int_equal(state_add_fp(a, 30), 1);
    assert_int_equal(state_add_fp(a, 10), 1);
    assert_int_equal(state_add_fp(a, 20), 1);
    assert_int_equal(state_add_fp(a, 10), 0);
    assert_int_equal(state_add_fp(a, UINT64_MAX), 1);
    assert_int_equal(state_add_fp(a, 0), 1);
    assert_int_equal(a->nfps, 5);
    for (uint32_t i = 1; i < a->nfps; i++) assert_true(a->fps[i - 1] < a->fps[i]);
    state_month_t *b = state_month(&c, 499, 1); /* moves a */
    assert_int_equal(state_add_fp(b, 40), 1);
    assert_true(state_seen(&c, 0));
    assert_true(state_seen(&c, 30));
    assert_true(state_seen(&c, 40));
    assert_true(state_seen(&c, UINT64_MAX));
    assert_false(state_seen(&c, 25));
    assert_false(state_seen(&c, 41));
    state_drop_before(&c, 500);
    assert_false(state_seen(&c, 40));
    assert_true(state_seen(&c, 30));

    /* out of memory: -1 and nothing changed (capacity is exactly used) */
    a = state_month(&c, 500, 0);
    while (a->nfps < a->capfps) assert_int_equal(state_add_fp(a, 1000 + a->nfps), 1);
    uint32_t n = a->nfps;
    realloc_fails = 1;
    assert_int_equal(state_add_fp(a, 5), -1);
    assert_int_equal(state_add_fp(a, 20), 0); /* no memory needed */
    realloc_fails = 0;
    assert_int_equal(a->nfps, n);
    assert_false(state_seen(&c, 5));
    state_free(&c);
}

static void test_window_zero_fill(void **state) {
    (void)state;
    state_customer_t c;
    state_init(&c);
    int32_t jan = policy_month_of(2026, 1);
    state_month_t *m = state_month(&c, jan, 1);
    m->agg = (agg_month_t){10, 1000, 2, 0};
    m->tier = 2;
    m->grade = POLICY_GRADE_B;
    m = state_month(&c, jan + 2, 1);
    m->agg = (agg_month_t){5, 500, 1, 0};
    m->tier = 3;
    state_month(&c, jan - 5, 1)->agg.qty = 99; /* before the window */
    state_month(&c, jan + 9, 1)->agg.qty = 77; /* after it */

    policy_month_t w[6];
    memset(w, 0x7f, sizeof(w));
    state_window(&c, jan + 3, 6, w);
    for (int i = 0; i < 6; i++) assert_int_equal(w[i].month, jan - 2 + i);
    for (int i = 0; i < 6; i++) {
        if (i == 2 || i == 4) continue;
        assert_int_equal(w[i].qty, 0);
        assert_int_equal(w[i].amount, 0);
        assert_int_equal(w[i].orders, 0);
        assert_int_equal(w[i].skus, 0);
        assert_int_equal(w[i].tier_in_effect, 0);
        assert_int_equal(w[i].grade, POLICY_GRADE_NONE);
    }
    assert_int_equal(w[2].qty, 10);
    assert_int_equal(w[2].amount, 1000);
    assert_int_equal(w[2].orders, 2);
    assert_int_equal(w[2].tier_in_effect, 2);
    assert_int_equal(w[2].grade, POLICY_GRADE_B);
    assert_int_equal(w[4].qty, 5);
    assert_int_equal(w[4].tier_in_effect, 3);
    assert_int_equal(w[4].grade, POLICY_GRADE_NONE);

    /* a window of one, and of none (nothing written) */
    state_window(&c, jan + 9, 1, w);
    assert_int_equal(w[0].qty, 77);
    w[0].qty = 12345;
    state_window(&c, jan, 0, w);
    assert_int_equal(w[0].qty, 12345);
    /* an empty customer: all zeros */
    state_customer_t e;
    state_init(&e);
    state_window(&e, jan, 3, w);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(w[i].month, jan - 2 + i);
        assert_int_equal(w[i].qty, 0);
    }
    state_free(&c);
}

/* ------------------------------------------------------------------ */
/* Arithmetic                                                          */

/* Random SALEs and RETURNs applied to agg and to state give the same
 * sums, order counts, excess and distinct-SKU counts. */
static void test_apply_agrees_with_agg(void **state) {
    (void)state;
    enum { POOL = 300 };
    char names[POOL][24];
    uint32_t fps[POOL];
    rng_state = 0x5eed0002;
    for (int i = 0; i < POOL; i++) {
        snprintf(names[i], sizeof(names[i]), "SKU-%d-%d", i, i * 7919);
        fps[i] = state_sku_fp(names[i], strlen(names[i]));
    }
    /* the comparison below assumes no 32-bit collision in the pool */
    qsort(fps, POOL, sizeof(fps[0]), u32_cmp);
    for (int i = 1; i < POOL; i++) assert_true(fps[i - 1] != fps[i]);

    for (int round = 0; round < 200; round++) {
        agg_month_t am = {0};
        agg_skuset_t as = {0};
        state_month_t sm;
        memset(&sm, 0, sizeof(sm));
        int norders = 1 + (int)below(40);
        for (int k = 0; k < norders; k++) {
            order_kind_t kind = below(4) == 0 ? ORDER_RETURN : ORDER_SALE;
            /* sometimes more lines than the stack buffer holds */
            uint32_t nl = 1 + (uint32_t)(below(10) == 0 ? below(200) : below(12));
            order_t o = mk_order(kind, 0, 0, nl);
            for (uint32_t l = 0; l < nl; l++) {
                /* repeats within an order, and a small pool so months repeat SKUs */
                set_sku(&o, l, names[below(round % 2 ? 40 : POOL)]);
                o.lines[l].quantity = 1 + (int64_t)below(50);
                o.lines[l].unit_price = (int64_t)below(10000);
                o.qty += o.lines[l].quantity;
                o.amount += o.lines[l].quantity * o.lines[l].unit_price;
            }
            int64_t ea = -1, es = -1;
            assert_int_equal(agg_apply(&am, &as, &o, &ea), ORDER_OK);
            assert_int_equal(state_apply(&sm, &o, &es), ORDER_OK);
            assert_int_equal(ea, es);
            assert_int_equal(am.qty, sm.agg.qty);
            assert_int_equal(am.amount, sm.agg.amount);
            assert_int_equal(am.orders, sm.agg.orders);
            assert_int_equal(am.skus, sm.agg.skus);
            assert_int_equal(sm.agg.skus, sm.nskus);
            for (uint32_t j = 1; j < sm.nskus; j++) assert_true(sm.skus[j - 1] < sm.skus[j]);
            order_reset(&o);
        }
        agg_skuset_free(&as);
        free(sm.skus);
        free(sm.fps);
    }
}

static void assert_month_equal(const state_month_t *a, const state_month_t *b) {
    assert_memory_equal(&a->agg, &b->agg, sizeof(a->agg));
    assert_int_equal(a->nskus, b->nskus);
    assert_int_equal(a->capskus, b->capskus);
    assert_ptr_equal(a->skus, b->skus);
    if (a->nskus) assert_memory_equal(a->skus, b->skus, a->nskus * sizeof(*a->skus));
}

static void test_apply_errors_change_nothing(void **state) {
    (void)state;
    state_month_t m, before;
    uint32_t saved[64];
    int64_t excess;
    memset(&m, 0, sizeof(m));

    order_t o = mk_order(ORDER_SALE, 10, 100, 2);
    set_sku(&o, 0, "A");
    set_sku(&o, 1, "B");
    assert_int_equal(state_apply(&m, &o, &excess), ORDER_OK);
    set_sku(&o, 0, "C");
    set_sku(&o, 1, "D");

    /* overflow of qty, of amount, of the order count */
    const agg_month_t edge[] = {
        {INT64_MAX - 5, 100, 1, 2}, {10, INT64_MAX - 50, 1, 2}, {10, 100, INT64_MAX, 2}};
    for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) {
        m.agg = edge[i];
        before = m;
        memcpy(saved, m.skus, m.nskus * sizeof(*m.skus));
        excess = 42;
        assert_int_equal(state_apply(&m, &o, &excess), ORDER_ERR_OVERFLOW);
        assert_int_equal(excess, 0);
        assert_month_equal(&m, &before);
        assert_memory_equal(saved, m.skus, m.nskus * sizeof(*m.skus));
    }

    /* out of memory while growing the SKU set: ORDER_ERR_INTERNAL, nothing
     * changed.  Fill the set to its capacity first. */
    m.agg = (agg_month_t){10, 100, 1, (int64_t)m.nskus};
    for (int i = 0; m.nskus < m.capskus; i++) {
        char name[16];
        snprintf(name, sizeof(name), "fill-%d", i);
        set_sku(&o, 0, name);
        set_sku(&o, 1, name);
        assert_int_equal(state_apply(&m, &o, &excess), ORDER_OK);
    }
    set_sku(&o, 0, "new-1");
    set_sku(&o, 1, "new-2");
    before = m;
    memcpy(saved, m.skus, m.nskus * sizeof(*m.skus));
    realloc_fails = 1;
    assert_int_equal(state_apply(&m, &o, &excess), ORDER_ERR_INTERNAL);
    realloc_fails = 0;
    assert_month_equal(&m, &before);
    assert_memory_equal(saved, m.skus, m.nskus * sizeof(*m.skus));
    /* and it works once memory is back */
    assert_int_equal(state_apply(&m, &o, &excess), ORDER_OK);
    assert_int_equal(m.nskus, before.nskus + 2);

    /* a RETURN below zero floors and reports the excess */
    order_t r = mk_order(ORDER_RETURN, 1000, 100000, 1);
    set_sku(&r, 0, "A");
    int64_t orders = m.agg.orders, skus = m.agg.skus;
    assert_int_equal(state_apply(&m, &r, &excess), ORDER_OK);
    assert_int_equal(m.agg.qty, 0);
    assert_int_equal(m.agg.amount, 0);
    assert_int_equal(excess, 1000 - before.agg.qty - 10);
    assert_int_equal(m.agg.orders, orders);
    assert_int_equal(m.agg.skus, skus);

    order_reset(&o);
    order_reset(&r);
    free(m.skus);
}

/* ------------------------------------------------------------------ */
/* Encoding                                                            */

/* A customer with 3 months of 7 orders and 10 distinct SKUs each, with
 * realistic sums: the typical value the store keeps. */
static void typical_customer(state_customer_t *c) {
    state_reset(c);
    c->st.tier = 3;
    c->st.first_month = policy_month_of(2025, 4);
    c->st.evaluated = true;
    c->seq = 4;
    c->live_score_c = 7125;
    c->scale = '2';
    for (int mo = 0; mo < 3; mo++) {
        state_month_t *m = state_month(c, policy_month_of(2026, 9 + mo), 1);
        m->tier = 3;
        m->grade = POLICY_GRADE_B;
        for (int k = 0; k < 7; k++) {
            order_t o = mk_order(ORDER_SALE, 0, 0, 3);
            char id[32], sku[16];
            for (uint32_t l = 0; l < 3; l++) {
                snprintf(sku, sizeof(sku), "SKU-%05d", (k * 3 + (int)l) % 10 + mo * 100);
                set_sku(&o, l, sku);
                o.lines[l].quantity = 24;
                o.lines[l].unit_price = 18950; /* 189.50 */
                o.qty += 24;
                o.amount += 24 * 18950;
            }
            int64_t excess;
            assert_int_equal(state_apply(m, &o, &excess), ORDER_OK);
            int n = snprintf(id, sizeof(id), "ORD-2026-%02d-%06d", 9 + mo, 100000 + k);
            assert_int_equal(state_add_fp(m, state_order_fp(id, (size_t)n)), 1);
            order_reset(&o);
        }
        assert_int_equal(m->nskus, 10);
        assert_int_equal(m->nfps, 7);
        m->qmask = policy_quota_bit(POLICY_QUOTA_WARNING);
    }
}

static void test_round_trip_random(void **state) {
    (void)state;
    state_customer_t c, d;
    state_init(&c);
    state_init(&d); /* reused: decode must not depend on a clean target */
    rng_state = 0x5eed0003;
    for (int it = 0; it < 3000; it++) {
        size_t len;
        random_customer(&c, STATE_MONTHS_MAX, it % 10 == 0 ? 300 : 12, it % 10 == 1 ? 200 : 10);
        uint8_t *buf = encode(&c, &len);
        char err[256] = "";
        assert_int_equal(state_decode(&d, buf, len, err, sizeof(err)), 0);
        assert_same(&c, &d);
        assert_int_equal(decode_canonical(&d, buf, len), 0);
        free(buf);
    }
    /* the empty customer: format, 6 one-byte fields, checksum */
    state_reset(&c);
    size_t len;
    uint8_t *buf = encode(&c, &len);
    assert_int_equal(len, 1 + 6 + 4);
    assert_int_equal(buf[0], STATE_FORMAT);
    assert_int_equal(state_decode(&d, buf, len, NULL, 0), 0);
    assert_same(&c, &d);
    free(buf);
    state_free(&c);
    state_free(&d);
}

/* A value decoded lazily, then changed the way a batch and a review change
 * one (orders into a month, a month dropped, a month begun), ends as the
 * same bytes as the fully decoded value changed the same way; state_seen
 * agrees before and after; and a month whose sets cannot be decoded for
 * want of memory is left as it was. */
static void test_lazy_agrees(void **state) {
    (void)state;
    state_customer_t c, d, l;
    state_init(&c);
    state_init(&d);
    state_init(&l);
    rng_state = 0x5eed000b;
    for (int it = 0; it < 2000; it++) {
        size_t len;
        random_customer(&c, STATE_MONTHS_MAX, it % 10 == 0 ? 300 : 12, it % 10 == 1 ? 200 : 10);
        uint8_t *buf = encode(&c, &len);
        assert_int_equal(state_decode(&d, buf, len, NULL, 0), 0);
        assert_int_equal(state_decode_lazy(&l, buf, len, NULL, 0), 0);
        for (uint32_t i = 0; i < l.nmonths; i++) {
            assert_non_null(l.months[i].raw);
            assert_int_equal(l.months[i].nskus, d.months[i].nskus);
            assert_int_equal(l.months[i].nfps, d.months[i].nfps);
            assert_int_equal(l.months[i].agg.skus, d.months[i].agg.skus);
            for (uint32_t j = 0; j < d.months[i].nfps; j++) {
                uint64_t fp = d.months[i].fps[j];
                assert_true(state_seen(&l, fp));
                assert_int_equal(state_seen(&l, fp + 1), state_seen(&d, fp + 1));
                assert_int_equal(state_seen(&l, fp - 1), state_seen(&d, fp - 1));
            }
        }
        uint64_t probe = rnd();
        assert_int_equal(state_seen(&l, probe), state_seen(&d, probe));

        /* the same changes to both */
        int32_t at = l.nmonths ? l.months[below(l.nmonths)].month : policy_month_of(2026, 1);
        if (below(4) == 0) at += 1 + (int32_t)below(3); /* sometimes a month not there */
        if (below(3) == 0 && l.nmonths > 1) {
            state_drop_before(&d, l.months[1].month);
            state_drop_before(&l, l.months[1].month);
        }
        state_month_t *md = state_month(&d, at, 1), *ml = state_month(&l, at, 1);
        if (md) {
            assert_non_null(ml);
            uint32_t k = (uint32_t)below(4);
            order_t o = mk_order(below(5) ? ORDER_SALE : ORDER_RETURN, 3, 300, k);
            for (uint32_t j = 0; j < k; j++) {
                char sku[24];
                snprintf(sku, sizeof(sku), "S%llu", (unsigned long long)below(50));
                set_sku(&o, j, sku);
            }
            int64_t e1, e2;
            assert_int_equal(state_apply(md, &o, &e1), state_apply(ml, &o, &e2));
            assert_int_equal(e1, e2);
            uint64_t fp = rnd();
            assert_int_equal(state_add_fp(md, fp), state_add_fp(ml, fp));
            assert_null(ml->raw);
            assert_true(state_seen(&l, fp));
            order_reset(&o);
        } else {
            assert_null(ml);
        }
        size_t n1, n2;
        uint8_t *e1 = encode(&d, &n1), *e2 = encode(&l, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(e1, e2, n1);
        assert_int_equal(state_check(&l, NULL, 0), 0);
        free(e1);
        free(e2);
        free(buf);
    }

    /* out of memory while a month's sets are decoded for a change */
    typical_customer(&c);
    size_t len;
    uint8_t *buf = encode(&c, &len);
    state_free(&l); /* no arrays to reuse */
    state_init(&l);
    assert_int_equal(state_decode_lazy(&l, buf, len, NULL, 0), 0);
    state_month_t *m = &l.months[1], before = *m;
    order_t o = mk_order(ORDER_SALE, 1, 1, 1);
    set_sku(&o, 0, "NEW");
    int64_t excess;
    realloc_fails = 1;
    assert_int_equal(state_apply(m, &o, &excess), ORDER_ERR_INTERNAL);
    assert_int_equal(state_add_fp(m, 12345), -1);
    realloc_fails = 0;
    assert_memory_equal(m, &before, sizeof(before));
    size_t n;
    uint8_t *again = encode(&l, &n);
    assert_int_equal(n, len);
    assert_memory_equal(again, buf, len);
    free(again);
    assert_int_equal(state_apply(m, &o, &excess), ORDER_OK);
    assert_null(m->raw);
    assert_int_equal(m->nskus, 11);
    order_reset(&o);
    free(buf);
    state_free(&c);
    state_free(&d);
    state_free(&l);
}

/* Every single-byte change and every truncation of a valid encoding is
 * refused; with the checksum resealed, the structure still never reads
 * out of bounds, and whatever it accepts is canonical. */
static void corrupt_all(const uint8_t *good, size_t len, state_customer_t *d) {
    uint8_t *b = malloc(len + 1);
    assert_non_null(b);
    for (size_t i = 0; i < len; i++) {
        for (int x = 1; x < 256; x++) {
            memcpy(b, good, len);
            b[i] ^= (uint8_t)x;
            assert_int_equal(state_decode(d, b, len, NULL, 0), -1);
            if (i < len - 4) {
                reseal(b, len);
                (void)decode_canonical(d, b, len);
            }
        }
    }
    for (size_t n = 0; n < len; n++) {
        /* copied into a buffer of exactly n bytes so ASan sees any overread */
        uint8_t *t = malloc(n ? n : 1);
        assert_non_null(t);
        memcpy(t, good, n);
        assert_int_equal(state_decode(d, t, n, NULL, 0), -1);
        if (n >= 5) {
            /* a payload cut short, with a valid checksum of its own */
            memcpy(t, good, n - 4);
            reseal(t, n);
            assert_int_equal(state_decode(d, t, n, NULL, 0), -1);
        }
        free(t);
    }
    /* one byte too many, before the checksum */
    memcpy(b, good, len - 4);
    b[len - 4] = 0;
    reseal(b, len + 1);
    char err[256];
    assert_int_equal(state_decode(d, b, len + 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "trailing"));
    free(b);
}

static void test_corruption_refused(void **state) {
    (void)state;
    state_customer_t c, d;
    state_init(&c);
    state_init(&d);
    rng_state = 0x5eed0004;
    for (int it = 0; it < 8; it++) {
        size_t len;
        random_customer(&c, it == 0 ? 0 : 4, 4, 3);
        uint8_t *buf = encode(&c, &len);
        corrupt_all(buf, len, &d);
        free(buf);
    }
    typical_customer(&c);
    size_t len;
    uint8_t *buf = encode(&c, &len);
    corrupt_all(buf, len, &d);
    free(buf);
    state_free(&c);
    state_free(&d);
}

/* Random bytes with a valid checksum: never a crash, only canonical
 * values accepted. */
static void test_garbage_with_checksum(void **state) {
    (void)state;
    state_customer_t d, d3;
    state_init(&d);
    state_init(&d3);
    rng_state = 0x5eed0005;
    for (int it = 0; it < 20000; it++) {
        size_t len = 5 + (size_t)below(80);
        uint8_t *b = malloc(len);
        assert_non_null(b);
        for (size_t i = 0; i < len; i++)
            b[i] = (uint8_t)(below(3) == 0 ? below(4) : rnd()); /* small varints are likelier */
        b[0] = STATE_FORMAT;
        reseal(b, len);
        (void)decode_canonical(&d, b, len);
        /* The same bytes as format 2 (read for the upgrade): never a
         * crash nor an overread (ASan), and what it accepts passes
         * state_check and survives the trip through format 3. */
        b[0] = STATE_FORMAT_OLDEST;
        reseal(b, len);
        char err[256] = "";
        if (state_decode(&d, b, len, err, sizeof(err)) == 0) {
            size_t n3;
            uint8_t *e = encode(&d, &n3);
            assert_int_equal(state_check(&d, err, sizeof(err)), 0);
            assert_int_equal(state_decode(&d3, e, n3, NULL, 0), 0);
            assert_same(&d, &d3);
            free(e);
        } else {
            assert_true(err[0] != '\0');
        }
        free(b);
    }
    state_free(&d);
    state_free(&d3);
}

/* Invalid structs encode into bytes decode refuses, each with a message
 * naming the problem. */
static void test_decode_refusals(void **state) {
    (void)state;
    state_customer_t c, d;
    char err[256];
    size_t len;
    uint8_t *buf;
    state_init(&c);
    state_init(&d);

    struct {
        const char *want; /* in the message */
    } cases[] = {
        {"format"},        {"tier"},
        {"override tier"}, {"live score"},
        {"scale"},         {"order fingerprints"}, /* not distinct: a gap below 0, past the top */
        {"grade"},         {"quota mask"},
        {"qty"},           {"SKU fingerprints"},
        {"month gap"},     {"month count"},
        {"first month"},   {"sequence"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        state_reset(&c);
        c.st.tier = 2;
        state_month_t *m0 = state_month(&c, 1000, 1);
        state_month_t *m1 = state_month(&c, 1001, 1);
        assert_int_equal(state_add_fp(m1, 1), 1);
        assert_int_equal(state_add_fp(m1, 2), 1);
        m0 = &c.months[0];
        m1 = &c.months[1];
        switch (k) {
        case 1: c.st.tier = POLICY_TIERS_MAX + 1; break;
        case 2: c.st.override_tier = -1; break;
        case 3: c.live_score_c = STATE_SCORE_MAX + 1; break;
        case 4: c.scale = 'Y'; break;
        case 5: m1->fps[0] = 2; break; /* not distinct */
        case 6: m0->grade = (policy_grade_t)'E'; break;
        case 7: m1->qmask = 1u << POLICY_QUOTA__COUNT; break;
        case 8: m0->agg.qty = -1; break;
        case 9:
            /* SKUs out of order */
            m0->skus = realloc(m0->skus, 2 * sizeof(*m0->skus));
            m0->capskus = 2;
            m0->skus[0] = 9;
            m0->skus[1] = 3;
            m0->nskus = 2;
            m0->agg.skus = 2;
            break;
        case 10: m1->month = 1000; break; /* equal months: a gap of -1 */
        case 11:
            /* more months than allowed: a 27th spelt by hand below */
            break;
        case 12: c.st.first_month = MONTH_MAX + 1; break;
        case 13: c.seq = -1; break;
        }
        if (k != 0 && k != 11) assert_int_equal(state_check(&c, NULL, 0), -1);
        buf = encode(&c, &len);
        if (k == 0) {
            buf[0] = 1;
            reseal(buf, len);
        }
        if (k == 11) {
            /* nmonths is the 6th byte: [format mark tier seq score] */
            assert_int_equal(buf[5], 2);
            buf[5] = STATE_MONTHS_MAX + 1;
            reseal(buf, len);
        }
        err[0] = '\0';
        assert_int_equal(state_decode(&d, buf, len, err, sizeof(err)), -1);
        if (!strstr(err, cases[k].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", k, err, cases[k].want);
        free(buf);
    }

    /* a varint with a redundant zero byte (0x80 0x00 for 0) */
    uint8_t nc[] = {STATE_FORMAT, 0x80, 0x00, 0, 0, 0, 0, 1, 'X', 0, 0, 0, 0, 0};
    reseal(nc, sizeof(nc));
    assert_int_equal(state_decode(&d, nc, sizeof(nc), err, sizeof(err)), -1);
    assert_non_null(strstr(err, "redundant"));
    /* a count of fingerprints larger than the bytes left: refused before allocating */
    state_reset(&c);
    state_month(&c, 5, 1);
    buf = encode(&c, &len);
    /* the month's bytes: month qty amount orders mark nskus nfps; then
     * first_month */
    assert_int_equal(buf[len - 4 - 2], 0); /* nfps */
    size_t big_len = len - 6 + 9 + 1 + 4;
    uint8_t *big = malloc(big_len);
    memcpy(big, buf, len - 6);
    /* nfps = 2^62 as a varint: nine bytes */
    for (int i = 0; i < 8; i++) big[len - 6 + i] = 0x80;
    big[len - 6 + 8] = 0x40;
    big[len - 6 + 9] = buf[len - 4 - 1];
    reseal(big, big_len);
    assert_int_equal(state_decode(&d, big, big_len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bytes left"));
    free(big);
    /* the checksum names itself */
    buf[len - 1] ^= 1;
    assert_int_equal(state_decode(&d, buf, len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "checksum"));
    free(buf);

    /* out of memory while decoding: -1, c left reset */
    state_reset(&c);
    state_add_fp(state_month(&c, 5, 1), 1);
    buf = encode(&c, &len);
    state_customer_t fresh;
    state_init(&fresh);
    realloc_fails = 1;
    assert_int_equal(state_decode(&fresh, buf, len, err, sizeof(err)), -1);
    realloc_fails = 0;
    assert_non_null(strstr(err, "out of memory"));
    assert_int_equal(fresh.nmonths, 0);
    assert_int_equal(state_decode(&fresh, buf, len, err, sizeof(err)), 0);
    free(buf);
    state_free(&fresh);
    state_free(&c);
    state_free(&d);
}

/* The Rice-coded sets at their edges: the smallest and largest values,
 * runs of neighbours, one value (k = W - 1), many; and a spare bit set in
 * a set's last byte is refused. */
/* An array of n elements of `size` bytes, copied from v into *arr. */
static void set_array(void **arr, uint32_t *cap, uint32_t *count, const void *v, uint32_t n,
                      size_t size) {
    *arr = realloc(*arr, (n ? n : 1) * size);
    assert_non_null(*arr);
    *cap = n;
    if (n) memcpy(*arr, v, n * size);
    *count = n;
}

static void test_rice_edges(void **state) {
    (void)state;
    state_customer_t c, d;
    state_init(&c);
    state_init(&d);
    const uint64_t f1[] = {UINT64_MAX}, f2[] = {0, UINT64_MAX}, f3[] = {0, 1, 2, 3},
                   f4[] = {UINT64_MAX - 2, UINT64_MAX - 1, UINT64_MAX}, f5[] = {0};
    const uint32_t s1[] = {UINT32_MAX}, s2[] = {0, UINT32_MAX}, s3[] = {5, 6, 7, 8, 9}, s4[] = {0};
    const struct {
        const uint64_t *f;
        uint32_t nf;
        const uint32_t *s;
        uint32_t ns;
    } cases[] = {{f1, 1, s1, 1}, {f2, 2, s2, 2}, {f3, 4, s3, 5}, {f4, 3, s4, 1}, {f5, 1, NULL, 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        state_reset(&c);
        state_month_t *m = state_month(&c, 24300, 1);
        set_array((void **)&m->fps, &m->capfps, &m->nfps, cases[i].f, cases[i].nf, 8);
        set_array((void **)&m->skus, &m->capskus, &m->nskus, cases[i].s, cases[i].ns, 4);
        m->agg.skus = cases[i].ns;
        assert_int_equal(state_check(&c, NULL, 0), 0);
        size_t len;
        uint8_t *buf = encode(&c, &len);
        assert_int_equal(state_decode(&d, buf, len, NULL, 0), 0);
        assert_same(&c, &d);
        free(buf);
    }
    /* {0} alone: k = 31, so a 0 bit and 31 low bits, four bytes, all 0 */
    state_reset(&c);
    c.st.first_month = 24300; /* a one-byte first_month */
    state_month_t *m = state_month(&c, 24300, 1);
    set_array((void **)&m->skus, &m->capskus, &m->nskus, s4, 1, 4);
    m->agg.skus = 1;
    size_t len;
    uint8_t *buf = encode(&c, &len);
    /* ... mark, nskus = 1, its length 4, four zero bytes, nfps = 0,
     * first_month, checksum */
    assert_int_equal(buf[len - 4 - 1 - 1 - 4 - 2], 1);
    assert_int_equal(buf[len - 4 - 1 - 1 - 4 - 1], 4);
    for (int i = 0; i < 4; i++) assert_int_equal(buf[len - 4 - 1 - 1 - 4 + i], 0);
    /* its last spare bit: there are none (32 bits), so take a set of two,
     * k = 30: 2 x 31 bits and 2 spare bits in the eighth byte */
    free(buf);
    const uint32_t two[] = {1, 2};
    set_array((void **)&m->skus, &m->capskus, &m->nskus, two, 2, 4);
    m->agg.skus = 2;
    buf = encode(&c, &len);
    size_t last = len - 4 - 1 - 1 - 1; /* before nfps and first_month */
    assert_int_equal(buf[last] >> 6, 0);
    buf[last] |= 0x80;
    reseal(buf, len);
    char err[256];
    assert_int_equal(state_decode(&d, buf, len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not 0"));
    /* the lazy decode steps over the set; decoding it refuses it alike,
     * and leaves the month as it was */
    state_customer_t l;
    state_init(&l);
    char lerr[256] = "";
    assert_int_equal(state_decode_lazy(&l, buf, len, NULL, 0), 0);
    assert_int_equal(state_unpack(&l, 24300, lerr, sizeof(lerr)), -1);
    assert_string_equal(lerr, err);
    assert_non_null(l.months[0].raw); /* still in the bytes, counts as they were */
    assert_int_equal(l.months[0].nskus, 2);
    assert_int_equal(l.months[0].nfps, 0);
    size_t n;
    uint8_t *again = encode(&l, &n);
    assert_int_equal(n, len);
    assert_memory_equal(again, buf, len);
    free(again);
    assert_int_equal(state_unpack(&l, 24301, NULL, 0), 0); /* no such month */
    free(buf);

    /* its stored length: one more than the set takes (a zero byte
     * after it), and one the set's count cannot take */
    buf = encode(&c, &len);
    size_t at = len - 4 - 1 - 1 - 8 - 1; /* the length: 8 */
    assert_int_equal(buf[at], 8);
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, at + 1 + 8);
    longer[at] = 9;
    longer[at + 1 + 8] = 0;
    memcpy(longer + at + 1 + 8 + 1, buf + at + 1 + 8, len - (at + 1 + 8));
    reseal(longer, len + 1);
    assert_int_equal(state_decode(&d, longer, len + 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "take 8 bytes, not the 9 stored"));
    assert_int_equal(state_decode_lazy(&l, longer, len + 1, NULL, 0), 0);
    assert_int_equal(state_unpack(&l, 24300, lerr, sizeof(lerr)), -1);
    assert_string_equal(lerr, err);
    free(longer);
    buf[at] = 7; /* 2 x 31 bits need 8 */
    reseal(buf, len);
    assert_int_equal(state_decode(&d, buf, len, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "claim 7 bytes"));
    assert_int_equal(state_decode_lazy(&l, buf, len, lerr, sizeof(lerr)), -1);
    assert_string_equal(lerr, err);
    state_free(&l);
    free(buf);
    /* many: 5,000 SKUs (k = 19) and 3,000 orders */
    random_customer(&c, 1, 5000, 3000);
    buf = encode(&c, &len);
    assert_int_equal(state_decode(&d, buf, len, NULL, 0), 0);
    assert_same(&c, &d);
    free(buf);
    state_free(&c);
    state_free(&d);
}

/* Format 2 (fixed-width fingerprints, tier/grade/qmask apart, first_month
 * in the header) is still read, and written back as format 4. */
static size_t put_v(uint8_t *b, uint64_t v) {
    size_t n = 0;
    for (; v >= 0x80; v >>= 7) b[n++] = (uint8_t)(v | 0x80);
    b[n++] = (uint8_t)v;
    return n;
}

static void test_format2_read(void **state) {
    (void)state;
    uint8_t b[128];
    size_t n = 0;
    b[n++] = 2;                   /* format */
    n += put_v(b + n, 1);         /* flags: evaluated */
    n += put_v(b + n, 3);         /* tier */
    n += put_v(b + n, 24300 * 2); /* first_month 24300, zigzag */
    n += put_v(b + n, 0);         /* override tier */
    n += put_v(b + n, 4);         /* seq */
    n += put_v(b + n, 7125 * 2);  /* live score */
    b[n++] = '2';                 /* scale */
    n += put_v(b + n, 1);         /* one month */
    n += put_v(b + n, 24310 * 2); /* month */
    n += put_v(b + n, 12);        /* qty */
    n += put_v(b + n, 35000);     /* amount */
    n += put_v(b + n, 3);         /* orders */
    n += put_v(b + n, 3);         /* tier */
    n += put_v(b + n, 2);         /* grade B */
    n += put_v(b + n, 1);         /* qmask */
    n += put_v(b + n, 2);         /* two SKUs */
    const uint32_t sk[] = {0x01020304, 0xa0b0c0d0};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) b[n++] = (uint8_t)(sk[i] >> (8 * j));
    n += put_v(b + n, 1); /* one order */
    const uint64_t fp = 0x1122334455667788u;
    for (int j = 0; j < 8; j++) b[n++] = (uint8_t)(fp >> (8 * j));
    n += 4;
    reseal(b, n);

    state_customer_t d, e;
    state_init(&d);
    state_init(&e);
    char err[256] = "";
    assert_int_equal(state_decode(&d, b, n, err, sizeof(err)), 0);
    assert_int_equal(d.st.tier, 3);
    assert_int_equal(d.st.first_month, 24300);
    assert_true(d.st.evaluated);
    assert_int_equal(d.seq, 4);
    assert_int_equal(d.live_score_c, 7125);
    assert_int_equal(d.scale, '2');
    assert_int_equal(d.nmonths, 1);
    assert_int_equal(d.months[0].month, 24310);
    assert_int_equal(d.months[0].agg.qty, 12);
    assert_int_equal(d.months[0].agg.amount, 35000);
    assert_int_equal(d.months[0].agg.orders, 3);
    assert_int_equal(d.months[0].agg.skus, 2);
    assert_int_equal(d.months[0].tier, 3);
    assert_int_equal(d.months[0].grade, POLICY_GRADE_B);
    assert_int_equal(d.months[0].qmask, 1);
    assert_int_equal(d.months[0].skus[1], 0xa0b0c0d0);
    assert_int_equal(d.months[0].nfps, 1);
    assert_true(d.months[0].fps[0] == fp);
    /* written back as format 4, the same customer, fewer bytes */
    size_t len;
    uint8_t *buf = encode(&d, &len);
    assert_int_equal(buf[0], STATE_FORMAT);
    assert_true(len < n);
    assert_int_equal(state_decode(&e, buf, len, NULL, 0), 0);
    assert_same(&d, &e);
    free(buf);
    /* every one-byte change of it, resealed: never an overread (ASan);
     * what is still accepted passes state_check and survives the trip
     * through format 4, and some changes (a sum's digits) are accepted */
    int accepted = 0;
    uint8_t m[128];
    for (size_t i = 1; i + 4 < n; i++) {
        for (int x = 1; x < 256; x++) {
            memcpy(m, b, n);
            m[i] ^= (uint8_t)x;
            reseal(m, n);
            if (state_decode(&d, m, n, err, sizeof(err)) != 0) continue;
            assert_int_equal(state_check(&d, err, sizeof(err)), 0);
            buf = encode(&d, &len);
            assert_int_equal(state_decode(&e, buf, len, NULL, 0), 0);
            assert_same(&d, &e);
            free(buf);
            accepted++;
        }
    }
    assert_true(accepted > 0);
    /* a format-2 value is held to format 2's rules: SKUs out of order */
    b[n - 4 - 8 - 1 - 8 + 3] = 0xff; /* the first SKU's high byte: above the second */
    reseal(b, n);
    assert_int_equal(state_decode(&d, b, n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "not strictly ascending"));
    /* and formats 1 and 5 are refused by name */
    b[0] = 5;
    reseal(b, n);
    assert_int_equal(state_decode(&d, b, n, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "format 5"));
    assert_non_null(strstr(err, "formats 2 to 4"));
    state_free(&d);
    state_free(&e);
}

/* One varint of b at *i, copied to out at *o when out is not NULL. */
static uint64_t copy_uv(const uint8_t *b, size_t *i, uint8_t *out, size_t *o) {
    uint64_t v = 0;
    for (unsigned shift = 0;; shift += 7) {
        uint8_t x = b[(*i)++];
        if (out) out[(*o)++] = x;
        v |= (uint64_t)(x & 0x7f) << shift;
        if (!(x & 0x80)) return v;
    }
}

/* A format-4 value rewritten as format 3 (the release before): the same
 * bytes without each month's SKU set length, format byte 3, resealed.
 * Walked here by hand, apart from state.c. */
static uint8_t *to_format3(const uint8_t *b, size_t len, size_t *out_len) {
    uint8_t *out = malloc(len);
    assert_non_null(out);
    size_t i = 1, o = 1;
    assert_int_equal(b[0], 4);
    out[0] = 3;
    for (int k = 0; k < 4; k++) copy_uv(b, &i, out, &o); /* mark tier seq score */
    uint64_t nmonths = copy_uv(b, &i, out, &o);
    for (uint64_t m = 0; m < nmonths; m++) {
        for (int k = 0; k < 6; k++) copy_uv(b, &i, out, &o); /* month .. mark, nskus */
        size_t size = (size_t)copy_uv(b, &i, NULL, NULL);
        memcpy(out + o, b + i, size);
        i += size, o += size;
        size_t nfps = (size_t)copy_uv(b, &i, out, &o);
        memcpy(out + o, b + i, 8 * nfps);
        i += 8 * nfps, o += 8 * nfps;
    }
    copy_uv(b, &i, out, &o); /* first_month */
    assert_int_equal(i, len - 4);
    o += 4;
    reseal(out, o);
    *out_len = o;
    return out;
}

/* Format 3 (no SKU set lengths) is still read, fully and lazily, and
 * written back as format 4 byte for byte as the same customer encodes;
 * its corruptions are refused as format 4's are. */
static void test_format3_read(void **state) {
    (void)state;
    state_customer_t c, d, l;
    state_init(&c);
    state_init(&d);
    state_init(&l);
    rng_state = 0x5eed000c;
    for (int it = 0; it < 500; it++) {
        size_t len, len3, n;
        random_customer(&c, it % 5 == 0 ? 0 : STATE_MONTHS_MAX, it % 10 == 0 ? 300 : 12, 10);
        uint8_t *buf = encode(&c, &len);
        uint8_t *v3 = to_format3(buf, len, &len3);
        assert_true(len3 + c.nmonths <= len); /* a length takes a byte or more */
        assert_int_equal(state_decode(&d, v3, len3, NULL, 0), 0);
        assert_same(&c, &d);
        uint8_t *again = encode(&d, &n);
        assert_int_equal(n, len);
        assert_memory_equal(again, buf, len);
        free(again);
        assert_int_equal(state_decode_lazy(&l, v3, len3, NULL, 0), 0);
        for (uint32_t i = 0; i < l.nmonths; i++) assert_non_null(l.months[i].raw);
        again = encode(&l, &n); /* the sets copied as they were, with their lengths */
        assert_int_equal(n, len);
        assert_memory_equal(again, buf, len);
        free(again);
        (void)decode_canonical(&d, v3, len3);
        free(v3);
        free(buf);
    }
    typical_customer(&c);
    size_t len, len3;
    uint8_t *buf = encode(&c, &len), *v3 = to_format3(buf, len, &len3);
    corrupt_all(v3, len3, &d);
    free(v3);
    free(buf);
    state_free(&c);
    state_free(&d);
    state_free(&l);
}

/* Its value must stay small: the store keeps one per customer, and every
 * batch rewrites the ones it touched. */
static void test_size_bound(void **state) {
    (void)state;
    state_customer_t c;
    state_init(&c);
    typical_customer(&c);
    size_t len = state_encoded_size(&c);
    /* header 7 (the live score takes 2); first month 107 (month 3, qty 2,
     * amount 4, four one-byte fields, 10 SKUs Rice-coded in about 37, 7 x
     * 8); the others 105 (the month is a one-byte gap); first_month 1;
     * checksum 4: 329 (format 2: 345) */
    print_message("3 months x 7 orders x 10 SKUs: %zu bytes\n", len);
    assert_true(len <= 335);
    char text[512];
    int n = state_describe(&c, text, sizeof(text));
    assert_int_equal(n, (int)strlen(text));
    assert_string_equal(text, "tier=3 first=2025-04 evaluated=1 override=0 seq=4 score=71.25 "
                              "scale=2 months=2026-09,2026-10,2026-11");
    state_free(&c);
}

static void test_describe(void **state) {
    (void)state;
    state_customer_t c;
    char small[12], buf[128];
    state_init(&c);
    int n = state_describe(&c, buf, sizeof(buf));
    assert_string_equal(buf, "tier=0 first=none evaluated=0 override=0 seq=0 score=none "
                             "scale=X months=");
    assert_int_equal(n, (int)strlen(buf));
    assert_int_equal(state_describe(&c, small, sizeof(small)), n);
    assert_string_equal(small, "tier=0 firs");
    c.st.tier = 1;
    c.st.first_month = MONTH_MIN;
    c.st.has_override = true;
    c.st.override_tier = 4;
    state_month(&c, INT32_MIN, 1);
    state_month(&c, INT32_MAX, 1);
    char big[256];
    state_describe(&c, big, sizeof(big));
    assert_non_null(strstr(big, "override=4"));
    assert_non_null(strstr(big, "first=-21474836-01"));
    state_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checksum_and_fingerprints),
        cmocka_unit_test(test_init_reset_free),
        cmocka_unit_test(test_month_insertion_order_and_limit),
        cmocka_unit_test(test_drop_before),
        cmocka_unit_test(test_seen_and_add_fp),
        cmocka_unit_test(test_window_zero_fill),
        cmocka_unit_test(test_apply_agrees_with_agg),
        cmocka_unit_test(test_apply_errors_change_nothing),
        cmocka_unit_test(test_round_trip_random),
        cmocka_unit_test(test_lazy_agrees),
        cmocka_unit_test(test_corruption_refused),
        cmocka_unit_test(test_garbage_with_checksum),
        cmocka_unit_test(test_decode_refusals),
        cmocka_unit_test(test_rice_edges),
        cmocka_unit_test(test_format2_read),
        cmocka_unit_test(test_format3_read),
        cmocka_unit_test(test_size_bound),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
