/*
 * test_month.c -- month arithmetic at the ends of its types.
 *
 * Every function in month.h must be defined for every input: these tests
 * feed INT64_MIN/MAX instants and INT32_MIN/MAX months, and are meant to be
 * run under UBSan (build with -DTIERD_SANITIZE=ON), where an overflow aborts.
 * The expected months of far instants were worked out independently
 * (whole 400-year Gregorian cycles of 146097 days folded into 2000..8000).
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "month.h"

#define YEAR1_MS (-62135596800000LL) /* 0001-01-01T00:00:00Z */
#define Y10000_MS 253402300800000LL  /* 10000-01-01T00:00:00Z */
#define NEG_2_62 (-4611686018427387904LL)

/* The zone the test runs in: one at a time, as month.h requires. */
static month_zone_t zone;

static void set_zone(const char *name) {
    char err[256];

    if (month_zone_init(&zone, name, err, sizeof(err)) != 0) fail_msg("%s", err);
}

/* m holds ms: its start is at or before ms and the next month's after. */
static void assert_holds(int32_t m, int64_t ms) {
    int64_t start, next;

    assert_int_equal(month_start_ms_checked(&zone, m, &start), 0);
    assert_int_equal(month_start_ms_checked(&zone, m + 1, &next), 0);
    assert_true(start <= ms);
    assert_true(ms < next);
}

static void test_epoch_and_calendar_ends(void **state) {
    struct {
        int64_t ms;
        int yyyymm;
    } cases[] = {
        {0, 197001},
        {-1, 196912},
        {YEAR1_MS, 101},
        {YEAR1_MS - 1, 12}, /* December of year 0 */
        {Y10000_MS - 1, 999912},
        {Y10000_MS, 1000001},
        {946684800000LL, 200001}, /* 2000-01-01T00:00:00Z */
        {1793462400000LL, 202610},
    };
    size_t i;
    int32_t m;
    int v;

    (void)state;
    set_zone("UTC");
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_int_equal(month_of_ms_checked(&zone, cases[i].ms, &m), 0);
        assert_int_equal(month_of_ms(&zone, cases[i].ms), m);
        assert_int_equal(month_yyyymm(m), cases[i].yyyymm);
        assert_int_equal(month_yyyymm_checked(m, &v), 0);
        assert_int_equal(v, cases[i].yyyymm);
        assert_int_equal(month_from_yyyymm(cases[i].yyyymm), m);
        assert_holds(m, cases[i].ms);
    }
    assert_int_equal(month_of_ms(&zone, 0), 1970 * 12);
    assert_int_equal(month_start_ms(&zone, 1970 * 12), 0);
    assert_int_equal(month_start_ms(&zone, 12), YEAR1_MS);
    assert_int_equal(month_start_ms(&zone, 10000 * 12), Y10000_MS);
    assert_int_equal(month_start_ms(&zone, 0), -62167219200000LL); /* 0000-01-01T00:00:00Z */
}

/* Instants whose month does not fit: refused by the checked form, clamped
 * by the plain one, and they must not poison the cache. */
static void test_extreme_instants(void **state) {
    const int64_t far[] = {INT64_MIN, INT64_MIN + 1,   NEG_2_62,
                           INT64_MAX, INT64_MAX - 999, -NEG_2_62};
    size_t i;
    int32_t m = 12345;

    (void)state;
    set_zone("UTC");
    for (i = 0; i < sizeof(far) / sizeof(far[0]); i++) {
        m = 12345;
        assert_int_equal(month_of_ms_checked(&zone, far[i], &m), -1);
        assert_int_equal(m, 12345); /* untouched */
        assert_int_equal(month_of_ms(&zone, far[i]), far[i] < 0 ? MONTH_MIN : MONTH_MAX);
        /* the plain result stays usable: its YYYYMM and neighbours exist */
        assert_true(month_yyyymm(month_of_ms(&zone, far[i])) != 0);
        (void)month_start_ms(&zone, month_of_ms(&zone, far[i]) + 1);
        assert_int_equal(month_of_ms(&zone, 0), 1970 * 12);
    }
}

/* The last instants that still have a month, and the first that do not. */
static void test_representable_edges(void **state) {
    int64_t lo, hi;
    int32_t m;

    (void)state;
    set_zone("UTC");
    assert_int_equal(month_start_ms_checked(&zone, MONTH_MIN, &lo), 0);
    assert_int_equal(month_start_ms_checked(&zone, MONTH_MAX + 1, &hi), 0);
    assert_true(lo < YEAR1_MS);
    assert_true(hi > Y10000_MS);

    assert_int_equal(month_of_ms_checked(&zone, lo, &m), 0);
    assert_int_equal(m, MONTH_MIN);
    assert_int_equal(month_of_ms_checked(&zone, lo - 1, &m), -1);
    assert_int_equal(month_of_ms(&zone, lo - 1), MONTH_MIN);
    assert_int_equal(month_of_ms_checked(&zone, hi - 1, &m), 0);
    assert_int_equal(m, MONTH_MAX);
    assert_int_equal(month_of_ms_checked(&zone, hi, &m), -1);
    assert_int_equal(month_of_ms(&zone, hi), MONTH_MAX);

    assert_int_equal(month_yyyymm(MONTH_MIN), -2147483599);
    assert_int_equal(month_yyyymm(MONTH_MAX), 2147483612);
    assert_int_equal(month_from_yyyymm(-2147483599), MONTH_MIN);
    assert_int_equal(month_from_yyyymm(2147483612), MONTH_MAX);
}

/* month_start_ms for every kind of int32 month, including those past the
 * representable range: defined, and never decreasing. */
static void test_start_of_any_month(void **state) {
    const int32_t ms[] = {
        INT32_MIN, INT32_MIN + 1, MONTH_MIN - 1, MONTH_MIN,     -13,      -12, -1, 0, 1, 11, 12,
        23640,     MONTH_MAX,     MONTH_MAX + 1, INT32_MAX - 1, INT32_MAX};
    int64_t prev = INT64_MIN, t;
    size_t i;
    const char *zones[] = {"UTC", "Asia/Shanghai", "America/New_York"};
    size_t z;

    (void)state;
    for (z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        set_zone(zones[z]);
        prev = INT64_MIN;
        for (i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
            t = month_start_ms(&zone, ms[i]);
            assert_true(t >= prev);
            prev = t;
        }
        /* the ends of int32 still fall inside int64 milliseconds */
        assert_int_equal(month_start_ms_checked(&zone, INT32_MIN, &t), 0);
        assert_int_equal(month_start_ms_checked(&zone, INT32_MAX, &t), 0);
    }
}

static void test_yyyymm_any_month(void **state) {
    const int32_t out_of_range[] = {INT32_MIN, INT32_MIN + 1, MONTH_MIN - 1, MONTH_MAX + 1,
                                    INT32_MAX};
    size_t i;
    int32_t m;
    int v;

    (void)state;
    assert_int_equal(month_yyyymm(0), 1);      /* January of year 0 */
    assert_int_equal(month_yyyymm(-1), -88);   /* December of year -1 */
    assert_int_equal(month_yyyymm(-12), -99);  /* January of year -1 */
    assert_int_equal(month_yyyymm(-13), -188); /* December of year -2 */
    assert_int_equal(month_yyyymm(2026 * 12 + 10), 202611);
    for (i = 0; i < sizeof(out_of_range) / sizeof(out_of_range[0]); i++) {
        v = 7;
        assert_int_equal(month_yyyymm_checked(out_of_range[i], &v), -1);
        assert_int_equal(v, 7);
        assert_int_equal(month_yyyymm(out_of_range[i]),
                         out_of_range[i] < 0 ? -2147483599 : 2147483612);
    }
    /* a sweep across the representable range round-trips */
    for (m = MONTH_MIN; m <= MONTH_MAX - 9973; m += 9973) {
        assert_int_equal(month_yyyymm_checked(m, &v), 0);
        assert_int_equal(month_from_yyyymm(v), m);
    }
    for (m = -300; m <= 300; m++) assert_int_equal(month_from_yyyymm(month_yyyymm(m)), m);
}

static void test_from_yyyymm_any_int(void **state) {
    const int bad[] = {0, 202600, 202613, 202699, -100, -87, INT_MIN, INT_MAX, 99};
    size_t i;
    int32_t m = 5;

    (void)state;
    assert_int_equal(month_from_yyyymm_checked(202611, &m), 0);
    assert_int_equal(m, 2026 * 12 + 10);
    assert_int_equal(month_from_yyyymm_checked(-88, &m), 0);
    assert_int_equal(m, -1);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        m = 5;
        assert_int_equal(month_from_yyyymm_checked(bad[i], &m), -1);
        assert_int_equal(m, 5);
    }
    /* the plain form counts the two digits from January */
    assert_int_equal(month_from_yyyymm(202613), 2027 * 12);
    assert_int_equal(month_from_yyyymm(202600), 2025 * 12 + 11);
    assert_int_equal(month_from_yyyymm(0), -1);
    /* and stays in int32 at both ends of int */
    assert_int_equal(month_from_yyyymm(INT_MAX), 21474836 * 12 + 47 - 1);
    assert_int_equal(month_from_yyyymm(INT_MIN), -21474837 * 12 + 52 - 1);
}

/* In zones with offsets (and local mean time before 1900), the far ends
 * still bucket consistently. */
static void test_zones_far_instants(void **state) {
    const char *zones[] = {"Asia/Shanghai", "America/New_York"};
    const int64_t ms[] = {YEAR1_MS,       -1, 0, Y10000_MS - 1, 253402300799999LL + 86400000LL,
                          1793462400000LL};
    size_t z, i;
    int32_t m;

    (void)state;
    for (z = 0; z < sizeof(zones) / sizeof(zones[0]); z++) {
        set_zone(zones[z]);
        for (i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
            assert_int_equal(month_of_ms_checked(&zone, ms[i], &m), 0);
            assert_holds(m, ms[i]);
        }
        assert_int_equal(month_of_ms(&zone, INT64_MIN), MONTH_MIN);
        assert_int_equal(month_of_ms(&zone, INT64_MAX), MONTH_MAX);
        assert_int_equal(month_of_ms(&zone, NEG_2_62), MONTH_MIN);
    }
    set_zone("UTC");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_epoch_and_calendar_ends), cmocka_unit_test(test_extreme_instants),
        cmocka_unit_test(test_representable_edges),     cmocka_unit_test(test_start_of_any_month),
        cmocka_unit_test(test_yyyymm_any_month),        cmocka_unit_test(test_from_yyyymm_any_int),
        cmocka_unit_test(test_zones_far_instants),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
