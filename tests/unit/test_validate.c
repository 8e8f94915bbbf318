/*
 * test_validate.c -- each Order rule alone, their order, and the arithmetic
 * at the 64-bit boundary.  Orders are built directly as order_t: the
 * validator is pure and never sees bytes.  Also the UTF-8 check the rules
 * rely on, against a table and against a second, decoding implementation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "utf8.h"
#include "validate.h"

#define NOW_MS 1700000000000LL
#define DAY_MS 86400000LL

static const validate_rules_t rules = {"EUR", DAY_MS, VALIDATE_MIN_PLACED_AT_MS_DEFAULT};

static void set_str(char *dst, uint8_t *len, const char *s) {
    size_t n = strlen(s);
    memcpy(dst, s, n + 1);
    *len = (uint8_t)n;
}

/* A valid order of n lines: line i has quantity i+1 and price 100. */
static order_t make_order(uint32_t n) {
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

static order_err_t run(order_t *o, const char *key) {
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

static void expect(order_t *o, const char *key, order_err_t want) {
    order_err_t got = run(o, key);
    if (got != want) fail_msg("want %s, got %s", order_reason_code(want), order_reason_code(got));
}

/* ------------------------------------------------------------------------ */

static void test_valid(void **state) {
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

static void test_empty_id(void **state) {
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

static void test_bad_id(void **state) {
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

static void test_key_mismatch(void **state) {
    order_t o = make_order(1);

    (void)state;
    expect(&o, "C-2", ORDER_ERR_KEY_MISMATCH);
    expect(&o, "C-10", ORDER_ERR_KEY_MISMATCH); /* a longer key with the same prefix */
    expect(&o, "C-", ORDER_ERR_KEY_MISMATCH);
    expect(&o, "C-1", ORDER_OK);
    order_reset(&o);
}

static void test_no_lines(void **state) {
    order_t o = make_order(0);

    (void)state;
    expect(&o, NULL, ORDER_ERR_NO_LINES);
    order_reset(&o);
}

static void test_too_many_lines(void **state) {
    order_t o = make_order(ORDER_LINES_MAX + 1);

    (void)state;
    expect(&o, NULL, ORDER_ERR_TOO_MANY_LINES);
    o.nlines = ORDER_LINES_MAX;
    expect(&o, NULL, ORDER_OK);
    order_reset(&o);
}

static void test_bad_sku(void **state) {
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

static void test_bad_quantity(void **state) {
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

static void test_negative_price(void **state) {
    order_t o = make_order(2);

    (void)state;
    o.lines[0].unit_price = -1;
    expect(&o, NULL, ORDER_ERR_NEGATIVE_PRICE);
    o.lines[0].unit_price = INT64_MIN;
    expect(&o, NULL, ORDER_ERR_NEGATIVE_PRICE);
    order_reset(&o);
}

static void test_overflow(void **state) {
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

static void test_bad_currency(void **state) {
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

static void test_future(void **state) {
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
    /* Far in the past is not this rule's business (BAD_PLACED_AT's and
     * LATE's): with no minimum at all, INT64_MIN passes. */
    r.min_placed_at_ms = INT64_MIN;
    o.placed_at_ms = INT64_MIN;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)), ORDER_OK);
    order_reset(&o);
}

static void test_bad_placed_at(void **state) {
    char errstr[512];
    order_t o = make_order(1);
    validate_rules_t r = rules;

    (void)state;
    /* The default minimum is 2000-01-01T00:00:00Z, inclusive. */
    o.placed_at_ms = 946684800000LL;
    expect(&o, NULL, ORDER_OK);
    o.placed_at_ms = 946684800000LL - 1;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_PLACED_AT);
    assert_string_equal(errstr, "placed_at 946684799999 ms (1999-12-31T23:59:59.999Z) is "
                                "earlier than the minimum 946684800000 ms "
                                "(2000-01-01T00:00:00.000Z); check the producer's clock and "
                                "how it fills placed_at");
    o.placed_at_ms = 0;
    expect(&o, NULL, ORDER_ERR_BAD_PLACED_AT);
    o.placed_at_ms = INT64_MIN;
    expect(&o, NULL, ORDER_ERR_BAD_PLACED_AT);

    /* Rules left at zero refuse only what is before 1970. */
    r.min_placed_at_ms = 0;
    o.placed_at_ms = 0;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)), ORDER_OK);
    o.placed_at_ms = 1;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)), ORDER_OK);
    o.placed_at_ms = -1;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_PLACED_AT);
    assert_non_null(strstr(errstr, "(1969-12-31T23:59:59.999Z)"));
    o.placed_at_ms = INT64_MIN;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_PLACED_AT);

    /* The upper end is still FUTURE's. */
    o.placed_at_ms = INT64_MAX;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)),
                     ORDER_ERR_FUTURE);
    /* A minimum above now + skew (a misconfiguration) is reported as
     * BAD_PLACED_AT, the first of the two. */
    r.min_placed_at_ms = INT64_MAX;
    o.placed_at_ms = NOW_MS + 2 * DAY_MS;
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &r, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_PLACED_AT);
    order_reset(&o);
}

/* ---------------------------------------------------------------- UTF-8 */

/* A second implementation that decodes the code point and then judges it,
 * instead of utf8.c's table of allowed second bytes.  Returns the length of
 * the sequence at s, or 0 when it is not well-formed. */
static size_t ref_utf8_seq(const uint8_t *s, size_t n) {
    uint32_t cp, min;
    size_t len, k;

    if (s[0] < 0x80) return 1;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2, cp = s[0] & 0x1fu, min = 0x80;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3, cp = s[0] & 0x0fu, min = 0x800;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4, cp = s[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[k] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

static size_t ref_utf8_invalid_at(const uint8_t *s, size_t n) {
    size_t i = 0, len;

    while (i < n) {
        if ((len = ref_utf8_seq(s + i, n - i)) == 0) return i;
        i += len;
    }
    return n;
}

#define U8(lit, at)                                                                                \
    { lit, sizeof(lit) - 1, at }
#define U8_OK(lit)                                                                                 \
    { lit, sizeof(lit) - 1, sizeof(lit) - 1 }

static void test_utf8_table(void **state) {
    static const struct {
        const char *s;
        size_t n, at; /* at == n: valid */
    } cases[] = {
        U8_OK(""),
        U8_OK("C-42"),
        U8_OK("\x00"), /* NUL is UTF-8; BAD_ID refuses it */
        U8_OK("\x7f"),
        U8_OK("\xc2\x80"), /* U+0080, the first 2-byte */
        U8_OK("\xdf\xbf"), /* U+07FF */
        U8_OK("Zo\xc3\xab"),
        U8_OK("\xe0\xa0\x80"),             /* U+0800, the first 3-byte */
        U8_OK("\xed\x9f\xbf"),             /* U+D7FF, just below surrogates */
        U8_OK("\xee\x80\x80"),             /* U+E000, just above */
        U8_OK("\xef\xbb\xbf"),             /* U+FEFF, a BOM is a character */
        U8_OK("\xef\xbf\xbf"),             /* U+FFFF */
        U8_OK("\xe4\xb8\xad\xe6\x96\x87"), /* two CJK characters */
        U8_OK("\xf0\x90\x80\x80"),         /* U+10000, the first 4-byte */
        U8_OK("\xf0\x9f\x98\x80"),         /* an emoji */
        U8_OK("\xf4\x8f\xbf\xbf"),         /* U+10FFFF, the last */
        U8("\x80", 0),                     /* a lone continuation byte */
        U8("ab\xbf", 2),
        U8("\xc0\x80", 0),                 /* overlong NUL */
        U8("\xc1\xbf", 0),                 /* overlong U+007F */
        U8("\xe0\x80\x80", 0),             /* overlong 3-byte */
        U8("\xe0\x9f\xbf", 0),             /* overlong U+07FF */
        U8("\xf0\x80\x80\x80", 0),         /* overlong 4-byte */
        U8("\xf0\x8f\xbf\xbf", 0),         /* overlong U+FFFF */
        U8("\xed\xa0\x80", 0),             /* U+D800, a surrogate */
        U8("\xed\xbf\xbf", 0),             /* U+DFFF */
        U8("\xed\xa0\xbd\xed\xb8\x80", 0), /* a CESU-8 surrogate pair */
        U8("\xf4\x90\x80\x80", 0),         /* U+110000 */
        U8("\xf5\x80\x80\x80", 0),
        U8("\xf7\xbf\xbf\xbf", 0),
        U8("\xf8\x88\x80\x80\x80", 0), /* old 5-byte form */
        U8("\xfe", 0),
        U8("\xff", 0),
        U8("\xc3", 0), /* truncated by the end */
        U8("ab\xe4\xb8", 2),
        U8("\xf0\x9f\x98", 0),
        U8("\xc3\x28", 0), /* a non-continuation inside */
        U8("\xe4\x28\xad", 0),
        U8("\xe4\xb8\x28", 0),
        U8("\xf0\x9f\x98\x28", 0),
        U8("\xc3\xa9\xc3", 2), /* a good character, then a cut one */
        U8("ok\xc3\xa9\xff", 4),
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = utf8_invalid_at(cases[i].s, cases[i].n);
        if (got != cases[i].at) fail_msg("case %zu: invalid at %zu, want %zu", i, got, cases[i].at);
        assert_int_equal(utf8_valid(cases[i].s, cases[i].n), cases[i].at == cases[i].n);
        assert_int_equal(ref_utf8_invalid_at((const uint8_t *)cases[i].s, cases[i].n), cases[i].at);
    }
    /* n bounds the scan: a valid pair cut by n is truncated. */
    assert_int_equal(utf8_invalid_at("\xc3\xa9", 1), 0);
    assert_true(utf8_valid(NULL, 0));
}

/* Every string of one and two bytes, every three-byte string that starts
 * with a multi-byte lead, and four-byte strings at each edge of the
 * continuation range: the two implementations agree. */
static void test_utf8_exhaustive(void **state) {
    static const uint8_t edge[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff};
    uint8_t b[4];
    unsigned x, y, z, w;

    (void)state;
    for (x = 0; x < 256; x++) {
        b[0] = (uint8_t)x;
        assert_int_equal(utf8_invalid_at((char *)b, 1), ref_utf8_invalid_at(b, 1));
        for (y = 0; y < 256; y++) {
            b[1] = (uint8_t)y;
            assert_int_equal(utf8_invalid_at((char *)b, 2), ref_utf8_invalid_at(b, 2));
        }
    }
    for (x = 0xc0; x < 256; x++)
        for (y = 0; y < 256; y++)
            for (z = 0; z < 256; z++) {
                b[0] = (uint8_t)x, b[1] = (uint8_t)y, b[2] = (uint8_t)z;
                if (utf8_invalid_at((char *)b, 3) != ref_utf8_invalid_at(b, 3))
                    fail_msg("%02x %02x %02x", x, y, z);
            }
    for (x = 0xf0; x < 256; x++)
        for (y = 0; y < 256; y++)
            for (z = 0; z < sizeof(edge); z++)
                for (w = 0; w < sizeof(edge); w++) {
                    b[0] = (uint8_t)x, b[1] = (uint8_t)y, b[2] = edge[z], b[3] = edge[w];
                    if (utf8_invalid_at((char *)b, 4) != ref_utf8_invalid_at(b, 4))
                        fail_msg("%02x %02x %02x %02x", x, y, edge[z], edge[w]);
                }
    /* Longer strings, where whole ASCII words are skipped at once: runs of
     * ASCII of every length around lead and continuation bytes, at every
     * alignment. */
    uint8_t s[48];
    uint64_t rng = 0x5eed0u;
    for (int it = 0; it < 300000; it++) {
        size_t n = (size_t)(it % 41);
        for (size_t i = 0; i < n; i++) {
            rng = rng * 6364136223846793005u + 1442695040888963407u;
            unsigned r = (unsigned)(rng >> 33);
            s[i] = r % 8 ? (uint8_t)(0x20 + r / 8 % 0x5f) : (uint8_t)(0x80 + r / 8 % 0x80);
        }
        if (utf8_invalid_at((char *)s, n) != ref_utf8_invalid_at(s, n))
            fail_msg("string %d of %zu bytes", it, n);
    }
}

static void test_bad_utf8(void **state) {
    char errstr[512];
    order_t o = make_order(2);

    (void)state;
    /* Each string that reaches an event or a Redis key. */
    set_str(o.order_id, &o.order_id_len, "O-\xc3");
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_UTF8);
    assert_string_equal(errstr, "order_id \"O-\\xc3\" is not valid UTF-8 at byte 3 (0xc3); "
                                "strings must be UTF-8");
    set_str(o.order_id, &o.order_id_len, "O-1");

    set_str(o.customer_id, &o.customer_id_len, "C-\xed\xa0\x80");
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    set_str(o.customer_id, &o.customer_id_len, "C-\xc0\xaf"); /* overlong '/' */
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    set_str(o.customer_id, &o.customer_id_len, "C-1");

    expect(&o, "C-\xff", ORDER_ERR_BAD_UTF8); /* the record key */
    assert_int_equal(validate_order(&o, "C-\xff", 3, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_UTF8);
    assert_non_null(strstr(errstr, "record key"));

    set_str(o.lines[1].sku, &o.lines[1].sku_len, "SKU-\xf4\x90\x80\x80");
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_UTF8);
    assert_non_null(strstr(errstr, "line 2: sku "));
    set_str(o.lines[1].sku, &o.lines[1].sku_len, "SKU-\xe2\x82\xac"); /* a euro sign */
    expect(&o, NULL, ORDER_OK);

    memcpy(o.currency, "E\xa4R", 4);
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    memcpy(o.currency, "\xe2\x82\xac", 4); /* valid UTF-8, still not "EUR" */
    expect(&o, NULL, ORDER_ERR_BAD_CURRENCY);
    memcpy(o.currency, "EUR", 4);

    /* Valid UTF-8 everywhere, up to the longest id. */
    set_str(o.customer_id, &o.customer_id_len,
            "\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"
            "\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"
            "\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad\xe4\xb8\xad"
            "\xe4\xb8\xad\xe4\xb8\xad\xf0\x9f\x98\x80"); /* 20 * 3 + 4 = 64 bytes */
    assert_int_equal(o.customer_id_len, ORDER_ID_MAX);
    expect(&o, o.customer_id, ORDER_OK);
    order_reset(&o);
}

/* BAD_UTF8 sits where each string is judged: after that string's own
 * rules, before the rules that compare it with something else. */
static void test_bad_utf8_order(void **state) {
    order_t o = make_order(2);

    (void)state;
    set_str(o.order_id, &o.order_id_len, "O-\xff\x01"); /* both: control wins */
    expect(&o, NULL, ORDER_ERR_BAD_ID);
    set_str(o.order_id, &o.order_id_len, "O-\xff");
    set_str(o.customer_id, &o.customer_id_len, "C\x01"); /* order_id is judged first */
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    set_str(o.order_id, &o.order_id_len, "O-1");
    expect(&o, NULL, ORDER_ERR_BAD_ID);
    set_str(o.customer_id, &o.customer_id_len, "");
    expect(&o, NULL, ORDER_ERR_EMPTY_ID); /* emptiness before everything */
    set_str(o.customer_id, &o.customer_id_len, "C-1");

    /* A key that is not UTF-8 is BAD_UTF8, not KEY_MISMATCH; but the ids
     * come first. */
    expect(&o, "C-\x80", ORDER_ERR_BAD_UTF8);
    set_str(o.order_id, &o.order_id_len, "O\n");
    expect(&o, "C-\x80", ORDER_ERR_BAD_ID);
    set_str(o.order_id, &o.order_id_len, "O-1");
    o.nlines = 0;
    expect(&o, "C-\x80", ORDER_ERR_BAD_UTF8); /* before NO_LINES */
    o.nlines = 2;

    /* Per line: BAD_SKU's rules, then BAD_UTF8, then the numbers. */
    set_str(o.lines[0].sku, &o.lines[0].sku_len, "S\x01\xff");
    expect(&o, NULL, ORDER_ERR_BAD_SKU);
    set_str(o.lines[0].sku, &o.lines[0].sku_len, "S\xff");
    o.lines[0].quantity = 0;
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    o.lines[0].quantity = 1;
    o.lines[1].quantity = -1; /* a later line's quantity comes after */
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    set_str(o.lines[0].sku, &o.lines[0].sku_len, "S-0");
    expect(&o, NULL, ORDER_ERR_BAD_QUANTITY);
    o.lines[1].quantity = 1;

    /* The currency's encoding after the sums, before the comparison, and
     * before placed_at. */
    memcpy(o.currency, "\xc3\xa9", 3);
    o.placed_at_ms = 0;
    expect(&o, NULL, ORDER_ERR_BAD_CURRENCY);
    memcpy(o.currency, "\xc3\xc3", 3);
    expect(&o, NULL, ORDER_ERR_BAD_UTF8);
    o.lines[0].quantity = INT64_MAX;
    o.lines[1].quantity = INT64_MAX;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);
    order_reset(&o);
}

/* The id rules profiles share with orders. */
static void test_validate_id(void **state) {
    char errstr[256];

    (void)state;
    assert_int_equal(validate_id("key", "", 0, errstr, sizeof(errstr)), ORDER_ERR_EMPTY_ID);
    assert_string_equal(errstr, "key is empty");
    assert_int_equal(validate_id("key", NULL, 0, errstr, sizeof(errstr)), ORDER_ERR_EMPTY_ID);
    assert_int_equal(validate_id("key", "C-1", 3, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(validate_id("key", "C\0001", 3, errstr, sizeof(errstr)), ORDER_ERR_BAD_ID);
    assert_int_equal(validate_id("key", "C\x7f", 2, errstr, sizeof(errstr)), ORDER_ERR_BAD_ID);
    assert_int_equal(validate_id("key", "C\xe2\x82", 3, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_UTF8);
    assert_string_equal(errstr, "key \"C\\xe2\\x82\" is not valid UTF-8 at byte 2 (0xe2); "
                                "strings must be UTF-8");
    assert_int_equal(validate_id("key", "C\xe2\x82\xac", 4, NULL, 0), ORDER_OK);
    assert_int_equal(validate_id("key",
                                 "0123456789012345678901234567890123456789012345678901234567890123"
                                 "4",
                                 ORDER_ID_MAX + 1, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_ID);
}

/* When several rules fail, the first in the documented order wins. */
static void test_rule_order(void **state) {
    order_t o = make_order(2);

    (void)state;
    o.placed_at_ms = INT64_MAX;   /* FUTURE */
    memcpy(o.currency, "USD", 4); /* BAD_CURRENCY */
    expect(&o, NULL, ORDER_ERR_BAD_CURRENCY);
    o.lines[0].quantity = INT64_MAX; /* OVERFLOW of the sum */
    o.lines[1].quantity = INT64_MAX;
    expect(&o, NULL, ORDER_ERR_OVERFLOW);
    o.lines[1].unit_price = -1; /* a later line's bad price beats overflow */
    expect(&o, NULL, ORDER_ERR_NEGATIVE_PRICE);
    o.lines[1].quantity = 0; /* quantity before price on the same line */
    expect(&o, NULL, ORDER_ERR_BAD_QUANTITY);
    o.lines[1].sku_len = 0; /* sku before quantity */
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

static void test_quoting(void **state) {
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

static void test_null_args(void **state) {
    char errstr[256];
    order_t o = make_order(1);

    (void)state;
    assert_int_equal(validate_order(NULL, NULL, 0, NOW_MS, &rules, errstr, sizeof(errstr)),
                     ORDER_ERR_INTERNAL);
    assert_int_equal(validate_order(&o, NULL, 0, NOW_MS, NULL, errstr, sizeof(errstr)),
                     ORDER_ERR_INTERNAL);
    order_reset(&o);
}

static void test_reason_codes(void **state) {
    static const char *const want[ORDER_ERR__COUNT] = {
        "OK",        "NOT_AVRO",       "EMPTY_ID", "BAD_ID",         "KEY_MISMATCH",
        "NO_LINES",  "TOO_MANY_LINES", "BAD_SKU",  "BAD_QUANTITY",   "NEGATIVE_PRICE",
        "OVERFLOW",  "BAD_CURRENCY",   "FUTURE",   "LATE",           "INTERNAL",
        "BAD_FIELD", "BAD_PLACED_AT",  "BAD_UTF8", "UNKNOWN_SCHEMA", "INCOMPATIBLE_SCHEMA",
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),           cmocka_unit_test(test_empty_id),
        cmocka_unit_test(test_bad_id),          cmocka_unit_test(test_key_mismatch),
        cmocka_unit_test(test_no_lines),        cmocka_unit_test(test_too_many_lines),
        cmocka_unit_test(test_bad_sku),         cmocka_unit_test(test_bad_quantity),
        cmocka_unit_test(test_negative_price),  cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_bad_currency),    cmocka_unit_test(test_future),
        cmocka_unit_test(test_bad_placed_at),   cmocka_unit_test(test_utf8_table),
        cmocka_unit_test(test_utf8_exhaustive), cmocka_unit_test(test_bad_utf8),
        cmocka_unit_test(test_bad_utf8_order),  cmocka_unit_test(test_validate_id),
        cmocka_unit_test(test_rule_order),      cmocka_unit_test(test_quoting),
        cmocka_unit_test(test_null_args),       cmocka_unit_test(test_reason_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
