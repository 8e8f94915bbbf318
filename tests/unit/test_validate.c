/*
 * test_validate.c -- each Order rule alone, their order, and the arithmetic
 * at the 64-bit boundary.  Orders are built directly as order_t: the
 * validator is pure and never sees bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

#define NOW_MS 1700000000000LL
#define DAY_MS 86400000LL

static const validate_rules_t rules = {"EUR", DAY_MS};

static void set_str(char *dst, uint8_t *len, const char *s)
{
    size_t n = strlen(s);
    memcpy(dst, s, n + 1);
    *len = (uint8_t)n;
}

/* A valid order of n lines: line i has quantity i+1 and price 100. */
static order_t make_order(uint32_t n)
{
    order_t o;
    uint32_t i;

    memset(&o, 0, sizeof(o));
    set_str(o.order_id, &o.order_id_len, "O-1");
    set_str(o.customer_id, &o.customer_id_len, "C-1");
    o.placed_at_ms = NOW_MS - 1000;
    o.kind = ORDER_SALE;
    memcpy(o.currency, "EUR", 4);
    o.lines = calloc(n > 0 ? n : 1, sizeof(*o.lines));
    assert_non_null(o.lines);
    o.lines_cap = n > 0 ? n : 1;
    o.nlines = n;
    for (i = 0; i < n; i++) {
        snprintf(o.lines[i].sku, sizeof(o.lines[i].sku), "SKU-%u", (unsigned)i);
        o.lines[i].sku_len = (uint8_t)strlen(o.lines[i].sku);
        o.lines[i].quantity = (int64_t)i + 1;
        o.lines[i].unit_price = 100;
    }
    return o;
}

static order_err_t run(order_t *o, const char *key)
{
    char errstr[512];
    order_err_t err;

    memset(errstr, 'X', sizeof(errstr)); /* stale text must not pass for a message */
    err = validate_order(o, key, key != NULL ? strlen(key) : 0, NOW_MS, &rules, errstr,
                         sizeof(errstr));
    if (err == ORDER_OK)
        assert_string_equal(errstr, "");
    else
        assert_true(errstr[0] != '\0' && errstr[0] != 'X');
    print_message("    %-14s %s\n", order_reason_code(err), errstr);
    return err;
}

static void expect(order_t *o, const char *key, order_err_t want)
{
    order_err_t got = run(o, key);
    if (got != want)
        fail_msg("want %s, got %s", order_reason_code(want), order_reason_code(got));
}

/* ------------------------------------------------------------------------ */

static void test_valid(void **state)
{
    order_t o = make_order(3);

    (void)state;
    expect(&o, "C-1", ORDER_OK);
    assert_int_equal(o.qty, 1 + 2 + 3);
    assert_int_equal(o.amount, (1 + 2 + 3) * 100);

    /* No key, an empty key and a RETURN are all fine; sums stay positive. */
    o.kind = ORDER_RETURN;
    expect(&o, NULL, ORDER_OK);
    expect(&o, "", ORDER_OK);
    assert_int_equal(o.qty, 6);

    /* Price 0 (a free sample) is allowed. */
    o.lines[0].unit_price = 0;
    expect(&o, NULL, ORDER_OK);
    assert_int_equal(o.amount, 500);
    order_reset(&o);
}

static void test_empty_id(void **state)
{
    order_t o = make_order(1);

    (void)state;
    o.order_id[0] = '\0';
    o.order_id_len = 0;
    expect(&o, NULL, ORDER_ERR_EMPTY_ID);
    set_str(o.order_id, &o.order_id_len, "O-1");
    o.customer_id[0] = '\0';
    o.customer_id_len = 0;
    expect(&o, NULL, ORDER_ERR_EMPTY_ID);
    order_reset(&o);
}

static void test_bad_id(void **state)
{
    static const char *const bad[] = {"O\x01", "tab\there", "del\x7f", "nl\n"};
    order_t o = make_order(1);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set_str(o.order_id, &o.order_id_len, bad[i]);
        expect(&o, NULL, ORDER_ERR_BAD_ID);
    }
    set_str(o.order_id, &o.order_id_len, "O-1");
    set_str(o.customer_id, &o.customer_id_len, "C\x1f");
    expect(&o, NULL, ORDER_ERR_BAD_ID);

    /* UTF-8 is not a control character. */
    set_str(o.customer_id, &o.customer_id_len, "C-\xc3\xa9");
    expect(&o, NULL, ORDER_OK);

    /* A length over the limit, from an order_t not made by the decoder. */
    o.customer_id_len = ORDER_ID_MAX + 1;
    expect(&o, NULL, ORDER_ERR_BAD_ID);
    order_reset(&o);
}

static void test_key_mismatch(void **state)
{
    order_t o = make_order(1);

    (void)state;
    expect(&o, "C-2", ORDER_ERR_KEY_MISMATCH);
    expect(&o, "C-10", ORDER_ERR_KEY_MISMATCH); /* a longer key with the same prefix */
    expect(&o, "C-", ORDER_ERR_KEY_MISMATCH);
    expect(&o, "C-1", ORDER_OK);
    order_reset(&o);
}

static void test_no_lines(void **state)
{
    order_t o = make_order(0);

    (void)state;
    expect(&o, NULL, ORDER_ERR_NO_LINES);
    order_reset(&o);
}

static void test_too_many_lines(void **state)
{
    order_t o = make_order(ORDER_LINES_MAX + 1);

    (void)state;
    expect(&o, NULL, ORDER_ERR_TOO_MANY_LINES);
    o.nlines = ORDER_LINES_MAX;
    expect(&o, NULL, ORDER_OK);
    order_reset(&o);
}

static void test_bad_sku(void **state)
{
    order_t o = make_order(3);

    (void)state;
    o.lines[1].sku[0] = '\0';
    o.lines[1].sku_len = 0;
    expect(&o, NULL, ORDER_ERR_BAD_SKU);
    set_str(o.lines[1].sku, &o.lines[1].sku_len, "SKU\x02");
    expect(&o, NULL, ORDER_ERR_BAD_SKU);
    set_str(o.lines[1].sku, &o.lines[1].sku_len, "SKU-1");
    o.lines[2].sku_len = ORDER_SKU_MAX + 1;
    expect(&o, NULL, ORDER_ERR_BAD_SKU);
    order_reset(&o);
}

static void test_bad_quantity(void **state)
{
    char errstr[256];
    order_t o = make_order(3);

    (void)state;
    o.lines[2].quantity = -2;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_QUANTITY);
    /* The message names the line (1-based) and the value. */
    assert_string_equal(errstr, "line 3: quantity -2 must be > 0");
    o.lines[2].quantity = 0;
    expect(&o, NULL, ORDER_ERR_BAD_QUANTITY);
    o.lines[2].quantity = INT64_MIN;
    expect(&o, NULL, ORDER_ERR_BAD_QUANTITY);
    order_reset(&o);
}

static void test_negative_price(void **state)
{
    order_t o = make_order(2);

    (void)state;
    o.lines[0].unit_price = -1;
    expect(&o, NULL, ORDER_ERR_NEGATIVE_PRICE);
    o.lines[0].unit_price = INT64_MIN;
    expect(&o, NULL, ORDER_ERR_NEGATIVE_PRICE);
    order_reset(&o);
}

static void test_overflow(void **state)
{
    order_t o = make_order(2);

    (void)state;
    /* quantity * unit_price: INT64_MAX itself fits, one more does not. */
    o.nlines = 1;
    o.lines[0].quantity = INT64_MAX;
    o.lines[0].unit_price = 1;
    expect(&o, NULL, ORDER_OK);
    assert_int_equal(o.qty, INT64_MAX);
    assert_int_equal(o.amount, INT64_MAX);
    o.lines[0].unit_price = 2;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);
    o.lines[0].quantity = 3037000500LL; /* its square is just above INT64_MAX */
    o.lines[0].unit_price = 3037000500LL;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);
    o.lines[0].unit_price = 3037000499LL;
    expect(&o, NULL, ORDER_OK);

    /* Sum of quantities: INT64_MAX - 1 + 1 fits, + 2 does not (price 0
     * keeps the amount out of it). */
    o.nlines = 2;
    o.lines[0].quantity = INT64_MAX - 1;
    o.lines[0].unit_price = 0;
    o.lines[1].quantity = 1;
    o.lines[1].unit_price = 0;
    expect(&o, NULL, ORDER_OK);
    assert_int_equal(o.qty, INT64_MAX);
    assert_int_equal(o.amount, 0);
    o.lines[1].quantity = 2;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);

    /* Sum of amounts: each line fits, the total does not. */
    o.lines[0].quantity = 1;
    o.lines[0].unit_price = INT64_MAX;
    o.lines[1].quantity = 1;
    o.lines[1].unit_price = 0;
    expect(&o, NULL, ORDER_OK);
    assert_int_equal(o.amount, INT64_MAX);
    o.lines[1].unit_price = 1;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);
    order_reset(&o);
}

static void test_bad_currency(void **state)
{
    static const char *const bad[] = {"USD", "eur", "", "EU"};
    order_t o = make_order(1);
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(o.currency, bad[i], strlen(bad[i]) + 1);
        expect(&o, NULL, ORDER_ERR_BAD_CURRENCY);
    }
    order_reset(&o);
}

static void test_future(void **state)
{
    char errstr[256];
    order_t o = make_order(1);
    validate_rules_t r = rules;

    (void)state;
    o.placed_at_ms = NOW_MS + DAY_MS; /* exactly at the limit: allowed */
    expect(&o, NULL, ORDER_OK);
    o.placed_at_ms = NOW_MS + DAY_MS + 1;
    expect(&o, NULL, ORDER_ERR_FUTURE);
    o.placed_at_ms = INT64_MAX;
    expect(&o, NULL, ORDER_ERR_FUTURE);

    /* now + skew past INT64_MAX: nothing is in the future, no wrap-around. */
    r.max_future_skew_ms = INT64_MAX;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)), ORDER_OK);
    /* A skew of 0 and an order a millisecond ahead. */
    r.max_future_skew_ms = 0;
    o.placed_at_ms = NOW_MS + 1;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)),
                     ORDER_ERR_FUTURE);
    assert_true(errstr[0] != '\0');
    /* Far in the past is not this rule's business (LATE is decided later). */
    o.placed_at_ms = INT64_MIN;
    expect(&o, NULL, ORDER_OK);
    order_reset(&o);
}

/* When several rules fail, the first in the documented order wins. */
static void test_rule_order(void **state)
{
    order_t o = make_order(2);

    (void)state;
    o.placed_at_ms = INT64_MAX;             /* FUTURE */
    memcpy(o.currency, "USD", 4);           /* BAD_CURRENCY */
    expect(&o, NULL, ORDER_ERR_BAD_CURRENCY);
    o.lines[0].quantity = INT64_MAX;        /* OVERFLOW of the sum */
    o.lines[1].quantity = INT64_MAX;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);
    o.lines[1].unit_price = -1;             /* a later line's bad price beats overflow */
    expect(&o, NULL, ORDER_ERR_NEGATIVE_PRICE);
    o.lines[1].quantity = 0;                /* quantity before price on the same line */
    expect(&o, NULL, ORDER_ERR_BAD_QUANTITY);
    o.lines[1].sku_len = 0;                 /* sku before quantity */
    expect(&o, NULL, ORDER_ERR_BAD_SKU);
    expect(&o, "C-2", ORDER_ERR_KEY_MISMATCH);
    set_str(o.order_id, &o.order_id_len, "O\x01");
    expect(&o, "C-2", ORDER_ERR_BAD_ID);
    o.customer_id_len = 0;
    expect(&o, "C-2", ORDER_ERR_EMPTY_ID);

    order_reset(&o);
    o = make_order(0);
    expect(&o, "C-2", ORDER_ERR_KEY_MISMATCH); /* before NO_LINES */
    order_reset(&o);
}

static void test_quoting(void **state)
{
    char errstr[512];
    order_t o = make_order(1);

    (void)state;
    /* Non-printable bytes are escaped, so the header stays readable. */
    memcpy(o.order_id, "A\x01\"\\", 5);
    o.order_id_len = 4;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_ID);
    assert_non_null(strstr(errstr, "\"A\\x01\\x22\\x5c\""));

    /* A tiny errstr is truncated, never overrun; none at all is fine. */
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, errstr, 8), ORDER_ERR_BAD_ID);
    assert_int_equal(strlen(errstr), 7);
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, NULL, 0), ORDER_ERR_BAD_ID);
    order_reset(&o);
}

static void test_null_args(void **state)
{
    char errstr[256];
    order_t o = make_order(1);

    (void)state;
    assert_int_equal(validate_order(NULL, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_INTERNAL);
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, NULL, errstr, sizeof(errstr)),
                     ORDER_ERR_INTERNAL);
    order_reset(&o);
}

static void test_reason_codes(void **state)
{
    static const char *const want[ORDER_ERR__COUNT] = {
        "OK",       "NOT_AVRO",       "EMPTY_ID",    "BAD_ID",  "KEY_MISMATCH",
        "NO_LINES", "TOO_MANY_LINES", "BAD_SKU",     "BAD_QUANTITY",
        "NEGATIVE_PRICE", "OVERFLOW", "BAD_CURRENCY", "FUTURE", "LATE", "INTERNAL",
        "BAD_FIELD",
    };
    int i;

    (void)state;
    for (i = 0; i < ORDER_ERR__COUNT; i++) {
        assert_non_null(want[i]);
        assert_string_equal(order_reason_code((order_err_t)i), want[i]);
    }
    assert_string_equal(order_reason_code(ORDER_ERR__COUNT), "UNKNOWN");
    assert_string_equal(order_reason_code((order_err_t)-1), "UNKNOWN");
    order_reset(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_empty_id),
        cmocka_unit_test(test_bad_id),
        cmocka_unit_test(test_key_mismatch),
        cmocka_unit_test(test_no_lines),
        cmocka_unit_test(test_too_many_lines),
        cmocka_unit_test(test_bad_sku),
        cmocka_unit_test(test_bad_quantity),
        cmocka_unit_test(test_negative_price),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_bad_currency),
        cmocka_unit_test(test_future),
        cmocka_unit_test(test_rule_order),
        cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_null_args),
        cmocka_unit_test(test_reason_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
