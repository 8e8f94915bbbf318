/*
 * test_decode_profile.c -- decode.c's CustomerProfile path: records
 * decoded from avro-c encodings and from hostile bytes.
 *
 * Malformed profiles are spliced from avro-c encodings of single values (a
 * record is the concatenation of its fields);
 * test_profile_splice_matches_writer proves the spliced form of a valid
 * profile is byte-identical to avro_value_write's.  Every decode gets a
 * heap buffer of exactly the record's length so ASan sees a read past it.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <avro.h>

#include "decode.h"
#include "tbuf.h"
#include "tierd/policy.h"

extern const char tierd_schema_customer_profile[];

#define DECIDED_AT 1743465600123LL

static struct {
    decoder_t *dec;
    avro_schema_t cp_schema;
    avro_value_iface_t *cp_iface;
} g;

static int group_setup(void **state) {
    char err[512];

    (void)state;
    g.dec = decode_new(err, sizeof(err));
    if (g.dec == NULL) {
        fprintf(stderr, "decode_new: %s\n", err);
        return -1;
    }
    if (avro_schema_from_json_length(tierd_schema_customer_profile,
                                     strlen(tierd_schema_customer_profile), &g.cp_schema) != 0)
        return -1;
    g.cp_iface = avro_generic_class_from_schema(g.cp_schema);
    return g.cp_iface != NULL ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    decode_destroy(g.dec);
    avro_value_iface_decref(g.cp_iface);
    avro_schema_decref(g.cp_schema);
    return 0;
}

/* The field `name` of a record value, which must have it. */
static avro_value_t field(avro_value_t *rec, const char *name) {
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0) fail_msg("no field %s", name);
    return f;
}

typedef struct tprof {
    const char *id;
    size_t id_len; /* 0: strlen */
    int64_t format, market;
    uint8_t chain;
    int64_t grade;
    double cooperation, growth;
    int64_t branch; /* tier_override: 0 null, 1 int */
    int64_t override;
    int64_t updated_at;
} tprof_t;

static tprof_t default_prof(void) {
    return (tprof_t){
        .id = "C-42",
        .format = 2 /* SUPERMARKET */,
        .market = 1 /* RURAL */,
        .chain = 1,
        .grade = 1 /* B */,
        .cooperation = 0.75,
        .growth = 0.25,
        .branch = 1,
        .override = 4,
        .updated_at = DECIDED_AT,
    };
}

/* The profile, field by field. */
static void tb_prof(tbuf_t *t, const tprof_t *p) {
    tb_string(t, p->id, p->id_len > 0 ? p->id_len : strlen(p->id));
    tb_long(t, p->format);
    tb_long(t, p->market);
    tb_raw(t, &p->chain, 1);
    tb_long(t, p->grade);
    tb_double(t, p->cooperation);
    tb_double(t, p->growth);
    tb_long(t, p->branch);
    if (p->branch == 1) tb_long(t, p->override);
    tb_long(t, p->updated_at);
}

typedef struct got {
    order_err_t err;
    char customer_id[ORDER_ID_MAX + 1];
    policy_profile_t prof;
    int64_t updated_at;
    char errstr[256];
} got_t;

/* Decodes a heap copy of exactly n bytes.  out and updated_at start as a
 * sentinel so a refusal that writes them is caught. */
static got_t decode_n(const uint8_t *bytes, size_t n, const char *key) {
    got_t r;
    uint8_t *copy = malloc(n > 0 ? n : 1);

    assert_non_null(copy);
    memcpy(copy, bytes, n);
    memset(&r, 0x5a, sizeof(r));
    r.err = decode_profile(g.dec, copy, n, key, key != NULL ? strlen(key) : 0, r.customer_id,
                           &r.prof, &r.updated_at, r.errstr, sizeof(r.errstr));
    free(copy);
    assert_true(r.err >= ORDER_OK && r.err < ORDER_ERR__COUNT);
    if (r.err != ORDER_OK) {
        policy_profile_t sentinel;
        memset(&sentinel, 0x5a, sizeof(sentinel));
        assert_memory_equal(&r.prof, &sentinel, sizeof(sentinel));
        assert_true(strlen(r.errstr) > 0);
    }
    return r;
}

static got_t decode_prof(const tprof_t *p, const char *key) {
    tbuf_t t = tb_new();
    got_t r;

    tb_prof(&t, p);
    r = decode_n(t.b, t.n, key);
    tb_free(&t);
    return r;
}

static void expect_refused(const tprof_t *p, const char *key, order_err_t want) {
    got_t r = decode_prof(p, key);
    if (r.err != want)
        fail_msg("got %s (%s), want %s", order_reason_code(r.err), r.errstr,
                 order_reason_code(want));
}

static void test_profile_splice_matches_writer(void **state) {
    tprof_t p = default_prof();
    tbuf_t spliced = tb_new(), whole = tb_new();
    avro_value_t v, f, b;

    (void)state;
    tb_prof(&spliced, &p);
    assert_int_equal(avro_generic_value_new(g.cp_iface, &v), 0);
    f = field(&v, "customer_id");
    assert_int_equal(avro_value_set_string(&f, "C-42"), 0);
    f = field(&v, "format");
    assert_int_equal(avro_value_set_enum(&f, 2), 0);
    f = field(&v, "market");
    assert_int_equal(avro_value_set_enum(&f, 1), 0);
    f = field(&v, "chain");
    assert_int_equal(avro_value_set_boolean(&f, 1), 0);
    f = field(&v, "compliance_grade");
    assert_int_equal(avro_value_set_enum(&f, 1), 0);
    f = field(&v, "cooperation");
    assert_int_equal(avro_value_set_double(&f, 0.75), 0);
    f = field(&v, "growth");
    assert_int_equal(avro_value_set_double(&f, 0.25), 0);
    f = field(&v, "tier_override");
    assert_int_equal(avro_value_set_branch(&f, 1, &b), 0);
    assert_int_equal(avro_value_set_int(&b, 4), 0);
    f = field(&v, "updated_at");
    assert_int_equal(avro_value_set_long(&f, DECIDED_AT), 0);
    tb_value(&whole, &v);
    avro_value_decref(&v);

    assert_int_equal(spliced.n, whole.n);
    assert_memory_equal(spliced.b, whole.b, whole.n);
    tb_free(&spliced);
    tb_free(&whole);
}

static void test_profile_valid(void **state) {
    static const char letters[] = {'Z', 'B', 'C', 'S', 'Y', 'F', 'Q'};
    tprof_t p = default_prof();
    tbuf_t t = tb_new();
    got_t r;

    (void)state;
    r = decode_prof(&p, "C-42");
    assert_int_equal(r.err, ORDER_OK);
    assert_string_equal(r.customer_id, "C-42");
    assert_int_equal(r.prof.format, POLICY_FORMAT_SUPERMARKET);
    assert_int_equal(r.prof.market, POLICY_MARKET_RURAL);
    assert_true(r.prof.chain);
    assert_int_equal(r.prof.grade, POLICY_GRADE_B);
    assert_true(r.prof.cooperation == 0.75);
    assert_true(r.prof.growth == 0.25);
    assert_true(r.prof.has_override);
    assert_int_equal(r.prof.tier_override, 4);
    assert_int_equal(r.updated_at, DECIDED_AT);

    /* Confluent framing, any schema id; the same fields come out. */
    tb_confluent(&t, 7);
    tb_prof(&t, &p);
    r = decode_n(t.b, t.n, "C-42");
    assert_int_equal(r.err, ORDER_OK);
    assert_string_equal(r.customer_id, "C-42");
    assert_int_equal(r.prof.tier_override, 4);
    assert_int_equal(r.updated_at, DECIDED_AT);

    /* No key, an empty key: nothing to compare. */
    assert_int_equal(decode_prof(&p, NULL).err, ORDER_OK);
    assert_int_equal(decode_prof(&p, "").err, ORDER_OK);

    /* Null override; the edges of every range. */
    p.branch = 0;
    p.chain = 0;
    p.cooperation = 0.0;
    p.growth = 1.0;
    r = decode_prof(&p, NULL);
    assert_int_equal(r.err, ORDER_OK);
    assert_false(r.prof.has_override);
    assert_false(r.prof.chain);
    p.branch = 1;
    p.override = POLICY_TIERS_MAX;
    assert_int_equal(decode_prof(&p, NULL).err, ORDER_OK);
    p.override = 1;
    assert_int_equal(decode_prof(&p, NULL).err, ORDER_OK);
    p.id = "0123456789012345678901234567890123456789012345678901234567890123"; /* 64 */
    assert_int_equal(decode_prof(&p, NULL).err, ORDER_OK);

    /* Every symbol maps to its letter. */
    p = default_prof();
    for (int i = 0; i < 7; i++) {
        p.format = i;
        r = decode_prof(&p, NULL);
        assert_int_equal(r.err, ORDER_OK);
        assert_int_equal(r.prof.format, letters[i]);
    }
    for (int i = 0; i < 4; i++) {
        p.grade = i;
        r = decode_prof(&p, NULL);
        assert_int_equal(r.err, ORDER_OK);
        assert_int_equal(r.prof.grade, 'A' + i);
    }
    p.market = 0;
    assert_int_equal(decode_prof(&p, NULL).prof.market, POLICY_MARKET_URBAN);
    tb_free(&t);
}

static void test_profile_bad_ids(void **state) {
    tprof_t p = default_prof();
    tbuf_t t = tb_new();
    got_t r;

    (void)state;
    p.id = "";
    expect_refused(&p, NULL, ORDER_ERR_EMPTY_ID);
    tb_confluent(&t, 1);
    tb_prof(&t, &p);
    r = decode_n(t.b, t.n, NULL);
    assert_int_equal(r.err, ORDER_ERR_EMPTY_ID);
    assert_string_equal(r.customer_id, "");

    p.id = "C\x01-42";
    expect_refused(&p, NULL, ORDER_ERR_BAD_ID);
    p.id = "C-42\x7f";
    expect_refused(&p, NULL, ORDER_ERR_BAD_ID);
    p.id = "C-\0-42";
    p.id_len = 5;
    expect_refused(&p, NULL, ORDER_ERR_BAD_ID);
    p.id_len = 0;
    p.id = "01234567890123456789012345678901234567890123456789012345678901234"; /* 65 */
    expect_refused(&p, NULL, ORDER_ERR_BAD_ID);
    /* It becomes a Redis key: well-formed UTF-8 only, as in an order. */
    p.id = "C-\xed\xa0\x80"; /* a surrogate */
    expect_refused(&p, NULL, ORDER_ERR_BAD_UTF8);
    p.id = "C-\xc3";
    expect_refused(&p, NULL, ORDER_ERR_BAD_UTF8);
    p.id = "C-\xc3\xa9";
    r = decode_prof(&p, "C-\xc3\xa9");
    assert_int_equal(r.err, ORDER_OK);
    assert_string_equal(r.customer_id, "C-\xc3\xa9");

    /* The key is compared byte for byte; the id is still handed back. */
    p = default_prof();
    r = decode_prof(&p, "C-43");
    assert_int_equal(r.err, ORDER_ERR_KEY_MISMATCH);
    assert_string_equal(r.customer_id, "C-42");
    expect_refused(&p, "C-42 ", ORDER_ERR_KEY_MISMATCH);
    expect_refused(&p, "C-4", ORDER_ERR_KEY_MISMATCH);
    /* A key that is not UTF-8 says so rather than "mismatch". */
    r = decode_prof(&p, "C-42\xff");
    assert_int_equal(r.err, ORDER_ERR_BAD_UTF8);
    assert_string_equal(r.customer_id, "C-42");
    tb_free(&t);
}

static void test_profile_bad_fields(void **state) {
    tprof_t p;

    (void)state;
    p = default_prof();
    p.cooperation = 1.5;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p.cooperation = -0.01;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p = default_prof();
    p.growth = NAN;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p.growth = INFINITY;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p = default_prof();
    p.override = 0;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p.override = POLICY_TIERS_MAX + 1;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p.override = -3;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
    p.override = INT32_MAX;
    expect_refused(&p, NULL, ORDER_ERR_BAD_FIELD);
}

static void test_profile_not_avro(void **state) {
    tprof_t p;
    tbuf_t t = tb_new();
    got_t r;

    (void)state;
    /* Every enum and union index one past the end, and negative. */
    p = default_prof();
    p.format = 7;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    p.format = -1;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    p = default_prof();
    p.market = 2;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    p = default_prof();
    p.grade = 4;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    p = default_prof();
    p.branch = 2;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    p.branch = -1;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    p = default_prof();
    p.chain = 2;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);
    /* An int that does not fit 32 bits. */
    p = default_prof();
    p.override = (int64_t)INT32_MAX + 1;
    expect_refused(&p, NULL, ORDER_ERR_NOT_AVRO);

    /* A string claiming more than the record, up to INT64_MAX: refused
     * before anything is allocated. */
    tb_long(&t, (int64_t)1 << 40);
    tb_raw(&t, "C-42", 4);
    r = decode_n(t.b, t.n, NULL);
    assert_int_equal(r.err, ORDER_ERR_NOT_AVRO);
    t.n = 0;
    tb_long(&t, INT64_MAX);
    r = decode_n(t.b, t.n, NULL);
    assert_int_equal(r.err, ORDER_ERR_NOT_AVRO);
    t.n = 0;
    tb_long(&t, -4);
    tb_raw(&t, "C-42", 4);
    assert_int_equal(decode_n(t.b, t.n, NULL).err, ORDER_ERR_NOT_AVRO);

    /* A varint of 11 bytes. */
    t.n = 0;
    p = default_prof();
    p.updated_at = 0;
    tb_prof(&t, &p);
    t.n--; /* drop updated_at's single byte */
    {
        static const uint8_t wide[11] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                         0xff, 0xff, 0xff, 0xff, 0x01};
        tb_raw(&t, wide, sizeof(wide));
    }
    assert_int_equal(decode_n(t.b, t.n, NULL).err, ORDER_ERR_NOT_AVRO);

    /* Trailing bytes, plain and framed. */
    t.n = 0;
    tb_prof(&t, &p);
    tb_raw(&t, "\0", 1);
    assert_int_equal(decode_n(t.b, t.n, NULL).err, ORDER_ERR_NOT_AVRO);
    t.n = 0;
    tb_confluent(&t, 1);
    tb_prof(&t, &p);
    tb_raw(&t, "\x02", 1);
    assert_int_equal(decode_n(t.b, t.n, NULL).err, ORDER_ERR_NOT_AVRO);

    /* Nothing at all. */
    assert_int_equal(decode_n(t.b, 0, NULL).err, ORDER_ERR_NOT_AVRO);
    assert_int_equal(decode_profile(g.dec, NULL, 0, NULL, 0, r.customer_id, &r.prof, NULL, NULL, 0),
                     ORDER_ERR_NOT_AVRO);
    assert_int_equal(decode_profile(NULL, t.b, t.n, NULL, 0, r.customer_id, &r.prof, NULL, NULL, 0),
                     ORDER_ERR_INTERNAL);
    tb_free(&t);
}

/* Every proper prefix of a valid record, plain and framed, is refused. */
static void test_profile_truncated(void **state) {
    tprof_t p = default_prof();
    tbuf_t plain = tb_new(), framed = tb_new();
    size_t i;

    (void)state;
    tb_prof(&plain, &p);
    tb_confluent(&framed, 1);
    tb_prof(&framed, &p);
    assert_int_equal(decode_n(plain.b, plain.n, NULL).err, ORDER_OK);
    assert_int_equal(decode_n(framed.b, framed.n, NULL).err, ORDER_OK);
    for (i = 0; i < plain.n; i++) {
        got_t r = decode_n(plain.b, i, NULL);
        if (r.err != ORDER_ERR_NOT_AVRO)
            fail_msg("plain cut at %zu: %s", i, order_reason_code(r.err));
    }
    for (i = 0; i < framed.n; i++) {
        got_t r = decode_n(framed.b, i, NULL);
        if (r.err != ORDER_ERR_NOT_AVRO)
            fail_msg("framed cut at %zu: %s", i, order_reason_code(r.err));
    }
    tb_free(&plain);
    tb_free(&framed);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_profile_splice_matches_writer),
        cmocka_unit_test(test_profile_valid),
        cmocka_unit_test(test_profile_bad_ids),
        cmocka_unit_test(test_profile_bad_fields),
        cmocka_unit_test(test_profile_not_avro),
        cmocka_unit_test(test_profile_truncated),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
