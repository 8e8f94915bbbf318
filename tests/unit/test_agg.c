/* Aggregate arithmetic and month bucketing (docs/behaviour.md,
 * "Aggregates"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>

#include "agg.h"
#include "decimal.h"
#include "month.h"

static order_t mk(order_kind_t kind, int64_t qty, int64_t amount, const char *sku1,
                  const char *sku2) {
    order_t o;
    memset(&o, 0, sizeof(o));
    o.kind = kind;
    o.qty = qty;
    o.amount = amount;
    o.lines = calloc(2, sizeof(*o.lines));
    o.nlines = sku2 ? 2 : 1;
    strcpy(o.lines[0].sku, sku1);
    o.lines[0].sku_len = (uint8_t)strlen(sku1);
    if (sku2) {
        strcpy(o.lines[1].sku, sku2);
        o.lines[1].sku_len = (uint8_t)strlen(sku2);
    }
    return o;
}

static void test_sale_then_return_floors_at_zero(void **state) {
    (void)state;
    agg_month_t m = {0};
    agg_skuset_t s = {0};
    int64_t excess;
    order_t sale = mk(ORDER_SALE, 10, 1000, "A", "B");
    order_t ret = mk(ORDER_RETURN, 25, 3000, "A", NULL);

    assert_int_equal(agg_apply(&m, &s, &sale, &excess), ORDER_OK);
    assert_int_equal(m.qty, 10);
    assert_int_equal(m.amount, 1000);
    assert_int_equal(m.orders, 1);
    assert_int_equal(m.skus, 2);
    assert_int_equal(excess, 0);

    assert_int_equal(agg_apply(&m, &s, &ret, &excess), ORDER_OK);
    assert_int_equal(m.qty, 0); /* never below zero */
    assert_int_equal(m.amount, 0);
    assert_int_equal(excess, 15);  /* counted, not carried */
    assert_int_equal(m.orders, 1); /* a return is not an order */
    assert_int_equal(m.skus, 2);   /* nor does it remove SKUs */

    order_reset(&sale);
    order_reset(&ret);
    agg_skuset_free(&s);
}

static void test_distinct_skus_counted_once(void **state) {
    (void)state;
    agg_month_t m = {0};
    agg_skuset_t s = {0};
    int64_t excess;
    order_t a = mk(ORDER_SALE, 1, 1, "X", "Y");
    order_t b = mk(ORDER_SALE, 1, 1, "Y", "Z");
    assert_int_equal(agg_apply(&m, &s, &a, &excess), ORDER_OK);
    assert_int_equal(agg_apply(&m, &s, &b, &excess), ORDER_OK);
    assert_int_equal(m.skus, 3);
    assert_int_equal(m.orders, 2);
    order_reset(&a);
    order_reset(&b);
    agg_skuset_free(&s);
}

static void test_overflow_changes_nothing(void **state) {
    (void)state;
    agg_month_t m = {INT64_MAX - 5, 100, 1, 1};
    agg_skuset_t s = {0};
    int64_t excess;
    order_t o = mk(ORDER_SALE, 6, 1, "NEW", NULL);
    assert_int_equal(agg_apply(&m, &s, &o, &excess), ORDER_ERR_OVERFLOW);
    assert_int_equal(m.qty, INT64_MAX - 5);
    assert_int_equal(m.amount, 100);
    assert_int_equal(m.orders, 1);
    assert_int_equal(s.n, 0); /* the SKU was not added either */
    order_reset(&o);
    o = mk(ORDER_SALE, 5, 1, "NEW", NULL);
    assert_int_equal(agg_apply(&m, &s, &o, &excess), ORDER_OK);
    assert_int_equal(m.qty, INT64_MAX);
    order_reset(&o);
    agg_skuset_free(&s);
}

/* Shanghai is UTC+8 all year: 2026-10-31T16:00:00Z is November 1st there. */
static void test_month_boundary_non_utc(void **state) {
    (void)state;
    char err[256];
    month_zone_t z;
    const int64_t nov1_cst = 1793462400000LL; /* 2026-10-31T16:00:00Z */
    assert_int_equal(month_zone_init(&z, "Asia/Shanghai", err, sizeof(err)), 0);
    assert_int_equal(month_yyyymm(month_of_ms(&z, nov1_cst - 1)), 202610);
    assert_int_equal(month_yyyymm(month_of_ms(&z, nov1_cst)), 202611);
    assert_int_equal(month_start_ms(&z, month_of_ms(&z, nov1_cst)), nov1_cst);
    /* the same instants in UTC are both October */
    assert_int_equal(month_zone_init(&z, "UTC", err, sizeof(err)), 0);
    assert_int_equal(month_yyyymm(month_of_ms(&z, nov1_cst)), 202610);
    /* New York changes offset inside the month: the boundary still holds */
    assert_int_equal(month_zone_init(&z, "America/New_York", err, sizeof(err)), 0);
    int32_t m = month_from_yyyymm(202611);
    assert_int_equal(month_of_ms(&z, month_start_ms(&z, m)), m);
    assert_int_equal(month_of_ms(&z, month_start_ms(&z, m) - 1), m - 1);
    assert_int_equal(month_start_ms(&z, m), 1793505600000LL); /* 2026-11-01T04:00:00Z (EDT) */
}

static void test_month_refuses_unknown_zone(void **state) {
    (void)state;
    char err[256] = "";
    month_zone_t z;
    assert_int_equal(month_zone_init(&z, "Mars/Olympus_Mons", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "Mars/Olympus_Mons"));
    assert_int_equal(month_zone_init(&z, "../etc/passwd", err, sizeof(err)), -1);
}

/* decimal.h writes what printf would. */
static void test_decimal_matches_printf(void **state) {
    (void)state;
    const int64_t v[] = {0,
                         1,
                         -1,
                         9,
                         10,
                         99,
                         100,
                         -100,
                         123456789,
                         INT32_MAX,
                         INT32_MIN,
                         INT64_MAX,
                         INT64_MIN,
                         INT64_MAX - 1,
                         INT64_MIN + 1};
    char got[DECIMAL_MAX + 1], want[32];
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n = decimal_i64(got, v[i]);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%" PRId64, v[i]);
        assert_string_equal(got, want);
        n = decimal_u64(got, (uint64_t)v[i]);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%" PRIu64, (uint64_t)v[i]);
        assert_string_equal(got, want);
    }
}

/* decimal_fixed2 and decimal_whole write what "%.2f" and "%.0f" would:
 * ties (x.xx5 exactly representable), values near them, negatives and
 * -0, random doubles of every magnitude below 1e15. */
static void test_decimal_doubles_match_printf(void **state) {
    (void)state;
    char got[64], want[64];
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 2000000; i++) {
        double v;
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        switch (i % 6) {
        case 0: v = (double)(int64_t)(x % 2000001) / 1000.0 - 1000.0; break; /* 3 decimals */
        case 1: v = ((double)(x % 100000) + 0.5) / 100.0; break;             /* ties */
        case 2: v = (double)(x % 1000000) / 8.0; break;                      /* exact ties */
        case 3: v = ldexp((double)(x >> 11), (int)(x % 60) - 64); break;     /* all sizes */
        case 4: v = -((double)(x % 1000000) / 100.0); break;
        default: v = (double)(x % 1000000000000000u) / (double)(1 + x % 1000); break;
        }
        size_t n = decimal_fixed2(got, v);
        assert_true(n > 0);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%.2f", v);
        if (strcmp(got, want) != 0) fail_msg("%.17g: got %s, printf %s", v, got, want);
        double w = floor(v);
        n = decimal_whole(got, w);
        assert_true(n > 0);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%.0f", w);
        assert_string_equal(got, want);
    }
    const double edge[] = {0.0,
                           -0.0,
                           -0.001,
                           0.005,
                           0.015,
                           0.125,
                           0.375,
                           2.675,
                           1e15 - 0.25,
                           999999999999999.0,
                           -999999999999999.0};
    for (size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++) {
        size_t n = decimal_fixed2(got, edge[i]);
        got[n] = '\0';
        snprintf(want, sizeof(want), "%.2f", edge[i]);
        assert_string_equal(got, want);
    }
    assert_int_equal(decimal_whole(got, -0.0), 2);
    assert_memory_equal(got, "-0", 2);
    /* beyond the range: left to printf */
    assert_int_equal(decimal_fixed2(got, 1e15), 0);
    assert_int_equal(decimal_fixed2(got, NAN), 0);
    assert_int_equal(decimal_whole(got, 0.5), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimal_doubles_match_printf),
        cmocka_unit_test(test_sale_then_return_floors_at_zero),
        cmocka_unit_test(test_distinct_skus_counted_once),
        cmocka_unit_test(test_overflow_changes_nothing),
        cmocka_unit_test(test_decimal_matches_printf),
        cmocka_unit_test(test_month_boundary_non_utc),
        cmocka_unit_test(test_month_refuses_unknown_zone),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
