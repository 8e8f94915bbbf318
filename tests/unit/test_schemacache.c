/*
 * test_schemacache.c -- framed records read by their writer schema, with
 * no registry server: the fetch function is a table of writer schemas by
 * id.  Records are written by libavro from each writer schema, so the
 * bytes come from an encoder this project did not write.
 *
 * Proves: tierd's own schema takes the direct path; the evolutions Avro
 * allows resolve (a field added with a default, fields reordered, a field
 * tierd does not need removed... int promoted to long, a union in the
 * writer, an enum with a new symbol, mapped to the reader's default where
 * it has one); what does not resolve is INCOMPATIBLE_SCHEMA with the
 * reason; an unknown id is UNKNOWN_SCHEMA; a fetch with no answer is
 * INTERNAL (retry) and is not cached; the cache is bounded (least
 * recently used out).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <avro.h>

#include "decode.h"
#include "schemacache.h"

extern const char tierd_schema_order[];
extern const char tierd_schema_customer_profile[];

/* Writer schemas by id.  Order v2: a defaulted field added, currency
 * moved up, quantity an int.  v3: v2's added field removed again, a new
 * kind symbol, currency a union. */
#define V2                                                                                         \
    "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"tierd\",\"fields\":["                 \
    "{\"name\":\"order_id\",\"type\":\"string\"},"                                                 \
    "{\"name\":\"currency\",\"type\":\"string\"},"                                                 \
    "{\"name\":\"customer_id\",\"type\":\"string\"},"                                              \
    "{\"name\":\"placed_at\",\"type\":\"long\"},"                                                  \
    "{\"name\":\"kind\",\"type\":{\"type\":\"enum\",\"name\":\"OrderKind\","                       \
    "\"symbols\":[\"SALE\",\"RETURN\"]}},"                                                         \
    "{\"name\":\"lines\",\"type\":{\"type\":\"array\",\"items\":{\"type\":\"record\","             \
    "\"name\":\"OrderLine\",\"fields\":[{\"name\":\"sku\",\"type\":\"string\"},"                   \
    "{\"name\":\"quantity\",\"type\":\"int\"},{\"name\":\"unit_price\",\"type\":\"long\"}]}}},"    \
    "{\"name\":\"channel\",\"type\":[\"null\",\"string\"],\"default\":null}]}"
#define V3                                                                                         \
    "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"tierd\",\"fields\":["                 \
    "{\"name\":\"order_id\",\"type\":\"string\"},"                                                 \
    "{\"name\":\"customer_id\",\"type\":\"string\"},"                                              \
    "{\"name\":\"placed_at\",\"type\":\"long\"},"                                                  \
    "{\"name\":\"kind\",\"type\":{\"type\":\"enum\",\"name\":\"OrderKind\","                       \
    "\"symbols\":[\"SALE\",\"RETURN\",\"EXCHANGE\"]}},"                                            \
    "{\"name\":\"lines\",\"type\":{\"type\":\"array\",\"items\":{\"type\":\"record\","             \
    "\"name\":\"OrderLine\",\"fields\":[{\"name\":\"sku\",\"type\":\"string\"},"                   \
    "{\"name\":\"quantity\",\"type\":\"long\"},{\"name\":\"unit_price\",\"type\":\"long\"}]}}},"   \
    "{\"name\":\"currency\",\"type\":[\"string\",\"null\"]}]}"
/* customer_id a long: not readable as tierd's string. */
#define BAD                                                                                        \
    "{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"tierd\",\"fields\":["                 \
    "{\"name\":\"order_id\",\"type\":\"string\"},{\"name\":\"customer_id\",\"type\":\"long\"}]}"
/* A profile whose RetailFormat gained a symbol. */
#define PROFILE_NEW_FORMAT                                                                         \
    "{\"type\":\"record\",\"name\":\"CustomerProfile\",\"namespace\":\"tierd\",\"fields\":["       \
    "{\"name\":\"customer_id\",\"type\":\"string\"},"                                              \
    "{\"name\":\"format\",\"type\":{\"type\":\"enum\",\"name\":\"RetailFormat\",\"symbols\":"      \
    "[\"GROCERY\",\"CONVENIENCE\",\"SUPERMARKET\",\"MALL\",\"TOBACCO_LIQUOR\",\"HOSPITALITY\","    \
    "\"OTHER\",\"KIOSK\"]}},"                                                                      \
    "{\"name\":\"market\",\"type\":{\"type\":\"enum\",\"name\":\"Market\","                        \
    "\"symbols\":[\"URBAN\",\"RURAL\"]}},"                                                         \
    "{\"name\":\"chain\",\"type\":\"boolean\"},"                                                   \
    "{\"name\":\"compliance_grade\",\"type\":{\"type\":\"enum\",\"name\":\"ComplianceGrade\","     \
    "\"symbols\":[\"A\",\"B\",\"C\",\"D\",\"E\"]}},"                                               \
    "{\"name\":\"cooperation\",\"type\":\"double\"},{\"name\":\"growth\",\"type\":\"double\"},"    \
    "{\"name\":\"tier_override\",\"type\":[\"null\",\"int\"],\"default\":null},"                   \
    "{\"name\":\"updated_at\",\"type\":\"long\"}]}"

enum { ID_V1 = 1, ID_V2 = 2, ID_V3 = 3, ID_BAD = 4, ID_PROFILE = 5, ID_PROFILE_NEW = 6 };

static int fetches;
static int unavailable;

static int fetch(void *ctx, int64_t id, char **json, char *errstr, size_t errstr_size) {
    const char *s = NULL;

    (void)ctx;
    fetches++;
    if (unavailable) {
        snprintf(errstr, errstr_size, "registry down");
        return -1;
    }
    switch (id) {
    case ID_V1: s = tierd_schema_order; break;
    case ID_V2: s = V2; break;
    case ID_V3: s = V3; break;
    case ID_BAD: s = BAD; break;
    case ID_PROFILE: s = tierd_schema_customer_profile; break;
    case ID_PROFILE_NEW: s = PROFILE_NEW_FORMAT; break;
    default: snprintf(errstr, errstr_size, "schema id %d unknown", (int)id); return 1;
    }
    *json = strdup(s);
    return 0;
}

/* A framed record written by libavro from `schema`: the Order's fields by
 * name (those the schema has), kind by symbol. */
typedef struct rec {
    uint8_t buf[1024];
    size_t len;
} rec_t;

static void set_str(avro_value_t *r, const char *name, const char *v) {
    avro_value_t f, b;
    avro_schema_t s;

    if (avro_value_get_by_name(r, name, &f, NULL) != 0) return;
    s = avro_value_get_schema(&f);
    if (is_avro_union(s)) {
        assert_int_equal(avro_value_set_branch(&f, 0, &b), 0);
        f = b;
    }
    assert_int_equal(avro_value_set_string(&f, v), 0);
}

static void set_num(avro_value_t *r, const char *name, int64_t v) {
    avro_value_t f;

    if (avro_value_get_by_name(r, name, &f, NULL) != 0) return;
    if (is_avro_int32(avro_value_get_schema(&f)))
        assert_int_equal(avro_value_set_int(&f, (int32_t)v), 0);
    else
        assert_int_equal(avro_value_set_long(&f, v), 0);
}

static void set_sym(avro_value_t *r, const char *name, const char *sym) {
    avro_value_t f;

    assert_int_equal(avro_value_get_by_name(r, name, &f, NULL), 0);
    assert_int_equal(
        avro_value_set_enum(&f, avro_schema_enum_get_by_name(avro_value_get_schema(&f), sym)), 0);
}

static void frame(rec_t *out, uint32_t id, avro_value_t *v) {
    avro_writer_t w = avro_writer_memory((char *)out->buf + 5, sizeof(out->buf) - 5);

    assert_int_equal(avro_value_write(w, v), 0);
    out->len = 5 + (size_t)avro_writer_tell(w);
    avro_writer_free(w);
    out->buf[0] = 0;
    out->buf[1] = (uint8_t)(id >> 24);
    out->buf[2] = (uint8_t)(id >> 16);
    out->buf[3] = (uint8_t)(id >> 8);
    out->buf[4] = (uint8_t)id;
}

static void order_rec(rec_t *out, uint32_t id, const char *schema_json, const char *kind) {
    avro_schema_t s;
    avro_value_iface_t *iface;
    avro_value_t v, lines, line;

    assert_int_equal(avro_schema_from_json_length(schema_json, strlen(schema_json), &s), 0);
    iface = avro_generic_class_from_schema(s);
    assert_int_equal(avro_generic_value_new(iface, &v), 0);
    set_str(&v, "order_id", "O-1");
    set_str(&v, "customer_id", "C-1");
    set_num(&v, "placed_at", 1700000000000);
    set_str(&v, "currency", "CNY");
    set_sym(&v, "kind", kind);
    if (avro_value_get_by_name(&v, "channel", &line, NULL) == 0) { /* v2's ["null", "string"] */
        avro_value_t b;
        assert_int_equal(avro_value_set_branch(&line, 1, &b), 0);
        assert_int_equal(avro_value_set_string(&b, "web"), 0);
    }
    if (avro_value_get_by_name(&v, "lines", &lines, NULL) == 0) {
        assert_int_equal(avro_value_append(&lines, &line, NULL), 0);
        set_str(&line, "sku", "SKU-9");
        set_num(&line, "quantity", 7);
        set_num(&line, "unit_price", 250);
    }
    frame(out, id, &v);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(s);
}

static decoder_t *new_decoder(size_t cache) {
    char err[256];
    decoder_t *d = decode_new(err, sizeof(err));

    assert_non_null(d);
    assert_int_equal(decode_use_registry(d, fetch, NULL, cache, err, sizeof(err)), 0);
    fetches = 0;
    unavailable = 0;
    return d;
}

static void expect_order(decoder_t *d, const rec_t *r, order_kind_t kind) {
    order_t o = {0};
    char err[256];

    assert_int_equal(decode_order(d, r->buf, r->len, &o, err, sizeof(err)), ORDER_OK);
    assert_string_equal(o.order_id, "O-1");
    assert_string_equal(o.customer_id, "C-1");
    assert_string_equal(o.currency, "CNY");
    assert_int_equal(o.placed_at_ms, 1700000000000);
    assert_int_equal(o.kind, kind);
    assert_int_equal(o.nlines, 1);
    assert_string_equal(o.lines[0].sku, "SKU-9");
    assert_int_equal(o.lines[0].quantity, 7);
    assert_int_equal(o.lines[0].unit_price, 250);
    order_reset(&o);
}

static order_err_t refusal(decoder_t *d, const rec_t *r, char *err, size_t err_size) {
    order_t o = {0};
    order_err_t e = decode_order(d, r->buf, r->len, &o, err, err_size);

    order_reset(&o);
    return e;
}

static void test_own_schema_direct(void **state) {
    decoder_t *d = new_decoder(10);
    rec_t r;

    (void)state;
    order_rec(&r, ID_V1, tierd_schema_order, "RETURN");
    expect_order(d, &r, ORDER_RETURN);
    expect_order(d, &r, ORDER_RETURN);
    assert_int_equal(fetches, 1); /* fetched once, then cached */
    assert_int_equal(decode_last_schema_id(d), ID_V1);
    decode_destroy(d);
}

static void test_evolutions_resolve(void **state) {
    decoder_t *d = new_decoder(10);
    rec_t r;
    char err[256];

    (void)state;
    order_rec(&r, ID_V2, V2, "SALE");
    expect_order(d, &r, ORDER_SALE);
    order_rec(&r, ID_V3, V3, "RETURN");
    expect_order(d, &r, ORDER_RETURN);
    /* A symbol tierd's OrderKind lacks, and it has no default. */
    order_rec(&r, ID_V3, V3, "EXCHANGE");
    assert_int_equal(refusal(d, &r, err, sizeof(err)), ORDER_ERR_INCOMPATIBLE_SCHEMA);
    assert_non_null(strstr(err, "EXCHANGE"));
    /* v1 and v3 interleaved, each from the cache. */
    order_rec(&r, ID_V1, tierd_schema_order, "SALE");
    expect_order(d, &r, ORDER_SALE);
    order_rec(&r, ID_V3, V3, "SALE");
    expect_order(d, &r, ORDER_SALE);
    assert_int_equal(fetches, 3);
    decode_destroy(d);
}

static void test_incompatible_and_unknown(void **state) {
    decoder_t *d = new_decoder(10);
    rec_t r;
    char err[256];

    (void)state;
    order_rec(&r, ID_V1, tierd_schema_order, "SALE");
    r.buf[4] = ID_BAD;
    assert_int_equal(refusal(d, &r, err, sizeof(err)), ORDER_ERR_INCOMPATIBLE_SCHEMA);
    assert_non_null(strstr(err, "writer schema id 4"));
    r.buf[4] = 99;
    assert_int_equal(refusal(d, &r, err, sizeof(err)), ORDER_ERR_UNKNOWN_SCHEMA);
    assert_non_null(strstr(err, "99"));
    assert_int_equal(refusal(d, &r, err, sizeof(err)), ORDER_ERR_UNKNOWN_SCHEMA);
    assert_int_equal(fetches, 2);
    decode_destroy(d);
}

static void test_registry_down_is_not_cached(void **state) {
    decoder_t *d = new_decoder(10);
    rec_t r;
    char err[256];

    (void)state;
    order_rec(&r, ID_V2, V2, "SALE");
    unavailable = 1;
    assert_int_equal(refusal(d, &r, err, sizeof(err)), ORDER_ERR_INTERNAL);
    assert_string_equal(err, "registry down");
    assert_int_equal(refusal(d, &r, err, sizeof(err)), ORDER_ERR_INTERNAL);
    unavailable = 0;
    expect_order(d, &r, ORDER_SALE);
    assert_int_equal(fetches, 3);
    decode_destroy(d);
}

static void test_cache_is_bounded(void **state) {
    decoder_t *d = new_decoder(2);
    rec_t r1, r2, r3;

    (void)state;
    order_rec(&r1, ID_V1, tierd_schema_order, "SALE");
    order_rec(&r2, ID_V2, V2, "SALE");
    order_rec(&r3, ID_V3, V3, "SALE");
    expect_order(d, &r1, ORDER_SALE);
    expect_order(d, &r2, ORDER_SALE);
    expect_order(d, &r1, ORDER_SALE); /* v2 is now the least recently used */
    expect_order(d, &r3, ORDER_SALE); /* evicts v2 */
    assert_int_equal(fetches, 3);
    expect_order(d, &r1, ORDER_SALE);
    assert_int_equal(fetches, 3);
    expect_order(d, &r2, ORDER_SALE);
    assert_int_equal(fetches, 4);
    decode_destroy(d);
}

static void profile_rec(rec_t *out, uint32_t id, const char *schema_json, const char *format,
                        const char *grade) {
    avro_schema_t s;
    avro_value_iface_t *iface;
    avro_value_t v, f, b;

    assert_int_equal(avro_schema_from_json_length(schema_json, strlen(schema_json), &s), 0);
    iface = avro_generic_class_from_schema(s);
    assert_int_equal(avro_generic_value_new(iface, &v), 0);
    set_str(&v, "customer_id", "C-1");
    set_sym(&v, "format", format);
    set_sym(&v, "market", "RURAL");
    set_sym(&v, "compliance_grade", grade);
    assert_int_equal(avro_value_get_by_name(&v, "chain", &f, NULL), 0);
    assert_int_equal(avro_value_set_boolean(&f, 1), 0);
    assert_int_equal(avro_value_get_by_name(&v, "cooperation", &f, NULL), 0);
    assert_int_equal(avro_value_set_double(&f, 0.5), 0);
    assert_int_equal(avro_value_get_by_name(&v, "growth", &f, NULL), 0);
    assert_int_equal(avro_value_set_double(&f, 0.25), 0);
    assert_int_equal(avro_value_get_by_name(&v, "tier_override", &f, NULL), 0);
    assert_int_equal(avro_value_set_branch(&f, 1, &b), 0);
    assert_int_equal(avro_value_set_int(&b, 2), 0);
    set_num(&v, "updated_at", 1700000000000);
    frame(out, id, &v);
    avro_value_decref(&v);
    avro_value_iface_decref(iface);
    avro_schema_decref(s);
}

static void test_profile_enum_default(void **state) {
    decoder_t *d = new_decoder(10);
    rec_t r;
    policy_profile_t p;
    char id[ORDER_ID_MAX + 1], err[256];
    int64_t at = 0;

    (void)state;
    profile_rec(&r, ID_PROFILE, tierd_schema_customer_profile, "MALL", "B");
    assert_int_equal(decode_profile(d, r.buf, r.len, "C-1", 3, id, &p, &at, err, sizeof(err)),
                     ORDER_OK);
    assert_int_equal(p.format, POLICY_FORMAT_MALL);
    assert_int_equal(p.grade, POLICY_GRADE_B);
    /* KIOSK is new: RetailFormat's default, OTHER, is read. */
    profile_rec(&r, ID_PROFILE_NEW, PROFILE_NEW_FORMAT, "KIOSK", "C");
    assert_int_equal(decode_profile(d, r.buf, r.len, "C-1", 3, id, &p, &at, err, sizeof(err)),
                     ORDER_OK);
    assert_string_equal(id, "C-1");
    assert_int_equal(p.format, POLICY_FORMAT_OTHER);
    assert_int_equal(p.market, POLICY_MARKET_RURAL);
    assert_int_equal(p.grade, POLICY_GRADE_C);
    assert_true(p.chain);
    assert_true(p.has_override);
    assert_int_equal(p.tier_override, 2);
    assert_int_equal(at, 1700000000000);
    /* E is new too, and ComplianceGrade has no default. */
    profile_rec(&r, ID_PROFILE_NEW, PROFILE_NEW_FORMAT, "GROCERY", "E");
    assert_int_equal(decode_profile(d, r.buf, r.len, "C-1", 3, id, &p, &at, err, sizeof(err)),
                     ORDER_ERR_INCOMPATIBLE_SCHEMA);
    assert_non_null(strstr(err, "compliance_grade is E"));
    decode_destroy(d);
}

/* Plain records (no framing) are read as before, registry or not. */
static void test_plain_unchanged(void **state) {
    decoder_t *d = new_decoder(10);
    rec_t r;
    order_t o = {0};
    char err[256];

    (void)state;
    order_rec(&r, ID_V1, tierd_schema_order, "SALE");
    assert_int_equal(decode_order(d, r.buf + 5, r.len - 5, &o, err, sizeof(err)), ORDER_OK);
    assert_int_equal(decode_last_schema_id(d), -1);
    assert_int_equal(fetches, 0);
    order_reset(&o);
    decode_destroy(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_own_schema_direct),
        cmocka_unit_test(test_evolutions_resolve),
        cmocka_unit_test(test_incompatible_and_unknown),
        cmocka_unit_test(test_registry_down_is_not_cached),
        cmocka_unit_test(test_cache_is_bounded),
        cmocka_unit_test(test_profile_enum_default),
        cmocka_unit_test(test_plain_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
