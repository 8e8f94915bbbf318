/*
 * test_decode.c -- the Order decoder against well-formed and hostile bytes.
 *
 * Test inputs are encoded by avro-c itself from the embedded schema, so a
 * mistake in our reading of the Avro spec cannot hide in a hand-written
 * encoder.  Malformed inputs are built by splicing avro-c encodings of single
 * values (a long, a string, one OrderLine): an Avro record is the
 * concatenation of its fields, and test_splice_matches_writer proves the
 * spliced form of a valid order is byte-identical to avro_value_write's.
 *
 * Every decode is given a heap buffer of exactly the record's length, so
 * AddressSanitizer catches a read one byte past the end, and goes through
 * both decoding paths (dec_both): the direct one the daemon uses and the
 * libavro one it replaced, which must agree on the verdict, the reason and
 * every field, for every input here and every fuzzed mutant.
 */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <avro.h>

#include "decode.h"
#include "month.h"
#include "tbuf.h"
#include "validate.h"

extern const char tierd_schema_order[];

typedef struct tline {
    const char *sku;
    size_t sku_len; /* 0: strlen(sku) */
    int64_t qty;
    int64_t price;
} tline_t;

typedef struct torder {
    const char *order_id;
    size_t order_id_len; /* 0: strlen */
    const char *customer_id;
    size_t customer_id_len;
    int64_t placed_at;
    int kind;
    const tline_t *lines;
    size_t nlines;
    const char *currency;
} torder_t;

/* Encoding state shared by the tests: the schema and value classes, made
 * once, as the decoder does. */
static struct {
    avro_schema_t schema;
    avro_value_iface_t *iface;      /* Order */
    avro_value_iface_t *line_iface; /* OrderLine */
} enc;

static const tline_t default_lines[] = {
    {"SKU-1", 0, 3, 1250},
    {"SKU-2", 0, 1, 99},
};

static torder_t default_order(void) {
    torder_t t = {
        .order_id = "O-1001",
        .customer_id = "C-42",
        .placed_at = 1700000000000LL,
        .kind = ORDER_SALE,
        .lines = default_lines,
        .nlines = 2,
        .currency = "EUR",
    };
    return t;
}

static int enc_setup(void **state) {
    (void)state;
    if (avro_schema_from_json_length(tierd_schema_order, strlen(tierd_schema_order), &enc.schema) !=
        0)
        return -1;
    enc.iface = avro_generic_class_from_schema(enc.schema);
    enc.line_iface = avro_generic_class_from_schema(
        avro_schema_array_items(avro_schema_record_field_get(enc.schema, "lines")));
    return enc.iface != NULL && enc.line_iface != NULL ? 0 : -1;
}

static int enc_teardown(void **state) {
    (void)state;
    avro_value_iface_decref(enc.line_iface);
    avro_value_iface_decref(enc.iface);
    avro_schema_decref(enc.schema);
    return 0;
}

static size_t slen(const char *s, size_t len) {
    return len > 0 ? len : strlen(s);
}

static void fill_line(avro_value_t *line, const tline_t *l) {
    avro_value_t f;
    size_t n = slen(l->sku, l->sku_len);
    char *tmp = malloc(n + 1);

    assert_non_null(tmp);
    memcpy(tmp, l->sku, n);
    tmp[n] = '\0';
    assert_int_equal(avro_value_get_by_name(line, "sku", &f, NULL), 0);
    assert_int_equal(avro_value_set_string_len(&f, tmp, n + 1), 0);
    assert_int_equal(avro_value_get_by_name(line, "quantity", &f, NULL), 0);
    assert_int_equal(avro_value_set_long(&f, l->qty), 0);
    assert_int_equal(avro_value_get_by_name(line, "unit_price", &f, NULL), 0);
    assert_int_equal(avro_value_set_long(&f, l->price), 0);
    free(tmp);
}

static void tb_line(tbuf_t *t, const tline_t *l) {
    avro_value_t v;
    assert_int_equal(avro_generic_value_new(enc.line_iface, &v), 0);
    fill_line(&v, l);
    tb_value(t, &v);
    avro_value_decref(&v);
}

static void set_str(avro_value_t *rec, const char *field, const char *s, size_t len) {
    avro_value_t f;
    char *tmp = malloc(len + 1);
    assert_non_null(tmp);
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    assert_int_equal(avro_value_get_by_name(rec, field, &f, NULL), 0);
    assert_int_equal(avro_value_set_string_len(&f, tmp, len + 1), 0);
    free(tmp);
}

/* The whole order through avro-c's own writer. */
static void tb_order(tbuf_t *t, const torder_t *o) {
    avro_value_t rec, f, lines, line;
    size_t i;

    assert_int_equal(avro_generic_value_new(enc.iface, &rec), 0);
    set_str(&rec, "order_id", o->order_id, slen(o->order_id, o->order_id_len));
    set_str(&rec, "customer_id", o->customer_id, slen(o->customer_id, o->customer_id_len));
    assert_int_equal(avro_value_get_by_name(&rec, "placed_at", &f, NULL), 0);
    assert_int_equal(avro_value_set_long(&f, o->placed_at), 0);
    assert_int_equal(avro_value_get_by_name(&rec, "kind", &f, NULL), 0);
    assert_int_equal(avro_value_set_enum(&f, o->kind), 0);
    assert_int_equal(avro_value_get_by_name(&rec, "lines", &lines, NULL), 0);
    for (i = 0; i < o->nlines; i++) {
        assert_int_equal(avro_value_append(&lines, &line, NULL), 0);
        fill_line(&line, &o->lines[i]);
    }
    set_str(&rec, "currency", o->currency, strlen(o->currency));
    tb_value(t, &rec);
    avro_value_decref(&rec);
}

/* The fields before `lines`, spliced. */
static void tb_head(tbuf_t *t, const torder_t *o) {
    tb_string(t, o->order_id, slen(o->order_id, o->order_id_len));
    tb_string(t, o->customer_id, slen(o->customer_id, o->customer_id_len));
    tb_long(t, o->placed_at);
    tb_long(t, o->kind); /* an enum is its index as a long */
}

/* A decoder, or a test failure that says why not. */
static decoder_t *new_decoder(void) {
    char errstr[256] = "";
    decoder_t *d = decode_new(errstr, sizeof(errstr));
    if (d == NULL) fail_msg("decode_new: %s", errstr);
    return d;
}

/* Prints buf as hex, to reproduce a failure from the test's output. */
static void print_hex(const char *what, const void *buf, size_t len) {
    const uint8_t *p = buf;
    size_t i;

    print_message("    %s (%zu bytes):", what, len);
    for (i = 0; i < len; i++) print_message("%s%02x", i % 32 == 0 ? "\n     " : " ", p[i]);
    print_message("\n");
}

/* The part of an order the decoder writes; "" when a and b agree on it.
 * Lines past nlines are not compared: no caller may read them. */
static const char *order_differs(const order_t *a, const order_t *b) {
    uint32_t i;

    if (memcmp(a->order_id, b->order_id, sizeof(a->order_id)) != 0 ||
        a->order_id_len != b->order_id_len)
        return "order_id";
    if (memcmp(a->customer_id, b->customer_id, sizeof(a->customer_id)) != 0 ||
        a->customer_id_len != b->customer_id_len)
        return "customer_id";
    if (a->placed_at_ms != b->placed_at_ms) return "placed_at_ms";
    if (a->kind != b->kind) return "kind";
    if (memcmp(a->currency, b->currency, sizeof(a->currency)) != 0) return "currency";
    if (a->nlines != b->nlines || a->lines_cap != b->lines_cap) return "nlines or lines_cap";
    if (a->qty != b->qty || a->amount != b->amount) return "qty or amount";
    for (i = 0; i < a->nlines; i++) {
        const order_line_t *x = &a->lines[i], *y = &b->lines[i];

        if (x->sku_len != y->sku_len || memcmp(x->sku, y->sku, x->sku_len + 1u) != 0 ||
            x->quantity != y->quantity || x->unit_price != y->unit_price)
            return "a line";
    }
    return "";
}

/*
 * Decodes buf through both paths -- decode_order_libavro() first, then
 * decode_order() into *o -- and fails unless they agree on the verdict, the
 * errstr, the schema id and every field of the order, partial decodes of a
 * refused record included.  The libavro path decodes into a copy of *o as
 * it was, with a line buffer of the same capacity, so that line-buffer
 * growth is compared too; the old lines are not copied, as only lines the
 * call wrote (below nlines) are compared.  Then decode_order() decodes it
 * again into the same *o, whose line buffer has grown by now: a valid
 * record takes the one pass (decode_fast) this time, and must come out
 * the same.  Returns the verdict.
 */
static order_err_t dec_both(decoder_t *d, const void *buf, size_t len, order_t *o, char *errstr,
                            size_t errstr_size) {
    order_t ref = *o;
    char *ref_errstr = errstr_size > 0 ? malloc(errstr_size) : NULL;
    size_t line_bytes = (size_t)o->lines_cap * sizeof(*o->lines);
    order_err_t want, got;
    int64_t want_id;
    const char *differs;

    if (errstr_size > 0) assert_non_null(ref_errstr);
    ref.lines = NULL;
    if (line_bytes > 0) {
        ref.lines = malloc(line_bytes);
        assert_non_null(ref.lines);
    }
    want = decode_order_libavro(d, buf, len, &ref, errstr != NULL ? ref_errstr : NULL, errstr_size);
    want_id = decode_last_schema_id(d);
    got = decode_order(d, buf, len, o, errstr, errstr_size);

    for (int again = 0; again < 2; again++) {
        if (again) got = decode_order(d, buf, len, o, errstr, errstr_size);
        differs = order_differs(&ref, o);
        if (got != want || decode_last_schema_id(d) != want_id || differs[0] != '\0' ||
            (errstr != NULL && errstr_size > 0 && strcmp(errstr, ref_errstr) != 0)) {
            print_hex("input", buf, len);
            fail_msg("the paths disagree%s: libavro %s (%s) schema id %" PRId64
                     ", direct %s (%s) schema id %" PRId64 "; %s differs",
                     again ? " (decoded again into the same order)" : "", order_reason_code(want),
                     ref_errstr != NULL ? ref_errstr : "", want_id, order_reason_code(got),
                     errstr != NULL ? errstr : "", decode_last_schema_id(d),
                     differs[0] != '\0' ? differs : "nothing else");
        }
    }
    order_reset(&ref);
    free(ref_errstr);
    return got;
}

/* Decodes from a heap copy of exactly len bytes, through both paths. */
static order_err_t dec(decoder_t *d, const void *buf, size_t len, order_t *o, char *errstr,
                       size_t errstr_size) {
    void *copy = malloc(len > 0 ? len : 1);
    order_err_t err;

    assert_non_null(copy);
    if (len > 0) memcpy(copy, buf, len);
    err = dec_both(d, len > 0 ? copy : NULL, len, o, errstr, errstr_size);
    free(copy);
    return err;
}

/* Expects err for buf and a non-empty explanation. */
static void expect_err(const tbuf_t *t, order_err_t want) {
    char errstr[256];
    order_t o = {0};
    decoder_t *d = new_decoder();
    order_err_t got;

    assert_non_null(d);
    got = dec(d, t->b, t->n, &o, errstr, sizeof(errstr));
    if (got != want)
        fail_msg("want %s, got %s (%s)", order_reason_code(want), order_reason_code(got), errstr);
    assert_true(errstr[0] != '\0');
    print_message("    %-14s %s\n", order_reason_code(got), errstr);
    order_reset(&o);
    decode_destroy(d);
}

/* ------------------------------------------------------------------------ */

static void test_new_destroy(void **state) {
    char errstr[256];
    decoder_t *d;

    (void)state;
    decode_destroy(NULL);
    assert_int_equal(decode_last_schema_id(NULL), -1);
    d = decode_new(errstr, sizeof(errstr));
    if (d == NULL) fail_msg("decode_new: %s", errstr);
    assert_int_equal(decode_last_schema_id(d), -1);
    decode_destroy(d);
    /* No errstr buffer is allowed. */
    d = decode_new(NULL, 0);
    assert_non_null(d);
    decode_destroy(d);
}

static void test_splice_matches_writer(void **state) {
    torder_t o = default_order();
    tbuf_t a = tb_new(), b = tb_new();
    size_t i;

    (void)state;
    tb_order(&a, &o);
    tb_head(&b, &o);
    tb_long(&b, (int64_t)o.nlines);
    for (i = 0; i < o.nlines; i++) tb_line(&b, &o.lines[i]);
    tb_long(&b, 0);
    tb_string(&b, o.currency, strlen(o.currency));
    assert_int_equal(a.n, b.n);
    assert_memory_equal(a.b, b.b, a.n);
    tb_free(&a);
    tb_free(&b);
}

static void check_default(const order_t *o) {
    assert_string_equal(o->order_id, "O-1001");
    assert_int_equal(o->order_id_len, 6);
    assert_string_equal(o->customer_id, "C-42");
    assert_int_equal(o->customer_id_len, 4);
    assert_int_equal(o->placed_at_ms, 1700000000000LL);
    assert_int_equal(o->kind, ORDER_SALE);
    assert_string_equal(o->currency, "EUR");
    assert_int_equal(o->nlines, 2);
    assert_string_equal(o->lines[0].sku, "SKU-1");
    assert_int_equal(o->lines[0].sku_len, 5);
    assert_int_equal(o->lines[0].quantity, 3);
    assert_int_equal(o->lines[0].unit_price, 1250);
    assert_string_equal(o->lines[1].sku, "SKU-2");
    assert_int_equal(o->lines[1].quantity, 1);
    assert_int_equal(o->lines[1].unit_price, 99);
}

static void test_plain(void **state) {
    char errstr[256];
    torder_t t = default_order();
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();

    (void)state;
    assert_non_null(d);
    tb_order(&b, &t);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_string_equal(errstr, "");
    check_default(&o);
    assert_int_equal(decode_last_schema_id(d), -1);

    /* RETURN is enum index 1. */
    t.kind = ORDER_RETURN;
    b.n = 0;
    tb_order(&b, &t);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.kind, ORDER_RETURN);

    /* An empty order_id makes a plain record start with 0x00, like the
     * Confluent magic byte: it still decodes (as plain Avro), so that
     * validation can refuse it as EMPTY_ID, the reason a producer can act on. */
    t.order_id = "";
    b.n = 0;
    tb_order(&b, &t);
    assert_int_equal(((uint8_t *)b.b)[0], 0x00);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.order_id_len, 0);
    assert_int_equal(decode_last_schema_id(d), -1);

    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
}

static void test_confluent(void **state) {
    static const uint32_t ids[] = {0, 1, 66051, 0xffffffffu};
    char errstr[256];
    torder_t t = default_order();
    order_t o = {0};
    decoder_t *d = new_decoder();
    size_t i;

    (void)state;
    assert_non_null(d);
    for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        tbuf_t b = tb_new();
        tb_confluent(&b, ids[i]);
        tb_order(&b, &t);
        assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
        check_default(&o);
        assert_int_equal(decode_last_schema_id(d), (int64_t)ids[i]);
        tb_free(&b);
    }
    order_reset(&o);
    decode_destroy(d);
}

static tline_t *make_lines(size_t n, char (*skus)[16]) {
    tline_t *l = calloc(n, sizeof(*l));
    size_t i;

    assert_non_null(l);
    for (i = 0; i < n; i++) {
        snprintf(skus[i], 16, "SKU-%u", (unsigned)(i % 100000000u)); /* n <= 1001 */
        l[i].sku = skus[i];
        l[i].qty = (int64_t)i + 1;
        l[i].price = (int64_t)i * 100;
    }
    return l;
}

static void test_many_lines(void **state) {
    char errstr[256];
    char(*skus)[16] = calloc(ORDER_LINES_MAX, 16);
    tline_t *lines = make_lines(ORDER_LINES_MAX, skus);
    torder_t t = default_order();
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();

    (void)state;
    t.lines = lines;
    t.nlines = ORDER_LINES_MAX;
    tb_order(&b, &t);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.nlines, ORDER_LINES_MAX);
    assert_true(o.lines_cap >= ORDER_LINES_MAX);
    assert_string_equal(o.lines[999].sku, "SKU-999");
    assert_int_equal(o.lines[999].quantity, 1000);
    assert_int_equal(o.lines[999].unit_price, 99900);
    assert_string_equal(o.currency, "EUR");

    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
    free(lines);
    free(skus);
}

static void truncate_all(const tbuf_t *b) {
    char errstr[256];
    order_t o = {0};
    decoder_t *d = new_decoder();
    size_t cut;

    assert_non_null(d);
    for (cut = 0; cut < b->n; cut++) {
        order_err_t err = dec(d, b->b, cut, &o, errstr, sizeof(errstr));
        if (err != ORDER_ERR_NOT_AVRO)
            fail_msg("cut at %zu of %zu: got %s (%s)", cut, b->n, order_reason_code(err), errstr);
        assert_true(errstr[0] != '\0');
    }
    /* The decoder is still good afterwards. */
    assert_int_equal(dec(d, b->b, b->n, &o, errstr, sizeof(errstr)), ORDER_OK);
    order_reset(&o);
    decode_destroy(d);
}

static void test_truncated(void **state) {
    torder_t t = default_order();
    tbuf_t plain = tb_new(), framed = tb_new();

    (void)state;
    tb_order(&plain, &t);
    tb_confluent(&framed, 7);
    tb_order(&framed, &t);
    truncate_all(&plain);
    truncate_all(&framed);
    tb_free(&plain);
    tb_free(&framed);
}

static void test_trailing(void **state) {
    torder_t t = default_order();
    tbuf_t b = tb_new();

    (void)state;
    tb_order(&b, &t);
    tb_raw(&b, "\0", 1);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    b.n = 0;
    tb_confluent(&b, 1);
    tb_order(&b, &t);
    tb_order(&b, &t); /* two records in one value */
    expect_err(&b, ORDER_ERR_NOT_AVRO);
    tb_free(&b);
}

static void test_empty(void **state) {
    char errstr[256];
    order_t o = {0};
    decoder_t *d = new_decoder();
    static const uint8_t zeros[5] = {0};

    (void)state;
    assert_int_equal(dec_both(d, NULL, 0, &o, errstr, sizeof(errstr)), ORDER_ERR_NOT_AVRO);
    assert_true(errstr[0] != '\0');
    assert_int_equal(dec_both(d, zeros, 0, &o, errstr, sizeof(errstr)), ORDER_ERR_NOT_AVRO);
    /* 0x00 alone: too short for framing, a plain record cut short. */
    assert_int_equal(dec(d, zeros, 1, &o, errstr, sizeof(errstr)), ORDER_ERR_NOT_AVRO);
    /* A Confluent header and nothing after it. */
    assert_int_equal(dec(d, zeros, 5, &o, errstr, sizeof(errstr)), ORDER_ERR_NOT_AVRO);
    assert_int_equal(decode_last_schema_id(d), 0);
    /* No errstr buffer at all must not crash either. */
    assert_int_equal(dec_both(d, NULL, 0, &o, NULL, 0), ORDER_ERR_NOT_AVRO);
    order_reset(&o);
    decode_destroy(d);
}

static void test_garbage(void **state) {
    static const char *const texts[] = {
        "hello world", "{\"order_id\":\"O-1\",\"customer_id\":\"C-1\"}",
        "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        "Obj\x01", /* an Avro container file header */
    };
    tbuf_t b = tb_new();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        b.n = 0;
        tb_raw(&b, texts[i], strlen(texts[i]));
        expect_err(&b, ORDER_ERR_NOT_AVRO);
    }
    tb_free(&b);
}

static void test_varint_too_long(void **state) {
    /* Hand-written on purpose: avro-c cannot produce an invalid varint. */
    static const uint8_t eleven[] = {0x81, 0x81, 0x81, 0x81, 0x81, 0x81,
                                     0x81, 0x81, 0x81, 0x81, 0x01};
    static const uint8_t tenth_too_big[] = {0x81, 0x81, 0x81, 0x81, 0x81,
                                            0x81, 0x81, 0x81, 0x81, 0x02};
    torder_t t = default_order();
    tbuf_t b = tb_new();

    (void)state;
    tb_string(&b, t.order_id, strlen(t.order_id));
    tb_string(&b, t.customer_id, strlen(t.customer_id));
    tb_raw(&b, eleven, sizeof(eleven)); /* placed_at */
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    b.n = 0;
    tb_string(&b, t.order_id, strlen(t.order_id));
    tb_string(&b, t.customer_id, strlen(t.customer_id));
    tb_raw(&b, tenth_too_big, sizeof(tenth_too_big));
    expect_err(&b, ORDER_ERR_NOT_AVRO);
    tb_free(&b);
}

/* The tail after the head: the default lines and currency. */
static void tb_tail(tbuf_t *b, const torder_t *t) {
    size_t i;
    tb_long(b, (int64_t)t->nlines);
    for (i = 0; i < t->nlines; i++) tb_line(b, &t->lines[i]);
    tb_long(b, 0);
    tb_string(b, t->currency, strlen(t->currency));
}

static void test_huge_string_length(void **state) {
    torder_t t = default_order();
    tbuf_t b = tb_new();

    (void)state;
    /* order_id claims 2^40 bytes, followed by a normal record. */
    tb_long(&b, INT64_C(1) << 40);
    tb_raw(&b, "O-1", 3);
    tb_string(&b, t.customer_id, strlen(t.customer_id));
    tb_long(&b, t.placed_at);
    tb_long(&b, t.kind);
    tb_tail(&b, &t);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    /* A negative length. */
    b.n = 0;
    tb_long(&b, -1);
    tb_raw(&b, "xx", 2);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    /* The largest length there is, on a line's sku. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, 1);
    tb_long(&b, INT64_MAX);
    tb_raw(&b, "SKU", 3);
    tb_long(&b, 1);
    tb_long(&b, 1);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_NOT_AVRO);
    tb_free(&b);
}

static void test_huge_block_count(void **state) {
    torder_t t = default_order();
    tbuf_t b = tb_new();

    (void)state;
    tb_head(&b, &t);
    tb_long(&b, 1000000000);
    tb_line(&b, &t.lines[0]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    /* Same claim as a negative count with a plausible byte size. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, -1000000000);
    tb_long(&b, 8);
    tb_line(&b, &t.lines[0]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_NOT_AVRO);
    tb_free(&b);
}

static size_t line_size(const tline_t *l) {
    tbuf_t x = tb_new();
    size_t n;
    tb_line(&x, l);
    n = x.n;
    tb_free(&x);
    return n;
}

static void test_negative_blocks(void **state) {
    static const tline_t more[] = {{"SKU-3", 0, 7, 5}};
    char errstr[256];
    torder_t t = default_order();
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();
    size_t two = line_size(&t.lines[0]) + line_size(&t.lines[1]);

    (void)state;
    /* Valid: block of -2 with its byte size, block of -1, then 0. */
    tb_head(&b, &t);
    tb_long(&b, -2);
    tb_long(&b, (int64_t)two);
    tb_line(&b, &t.lines[0]);
    tb_line(&b, &t.lines[1]);
    tb_long(&b, -1);
    tb_long(&b, (int64_t)line_size(&more[0]));
    tb_line(&b, &more[0]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.nlines, 3);
    assert_string_equal(o.lines[2].sku, "SKU-3");
    assert_int_equal(o.lines[2].quantity, 7);

    /* Several positive blocks are valid too. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, 1);
    tb_line(&b, &t.lines[0]);
    tb_long(&b, 2);
    tb_line(&b, &t.lines[1]);
    tb_line(&b, &more[0]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.nlines, 3);

    /* A byte size that does not match the items. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, -2);
    tb_long(&b, (int64_t)two - 1);
    tb_line(&b, &t.lines[0]);
    tb_line(&b, &t.lines[1]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    /* A negative byte size. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, -1);
    tb_long(&b, -5);
    tb_line(&b, &t.lines[0]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    /* INT64_MIN has no positive counterpart. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, INT64_MIN);
    tb_long(&b, 8);
    tb_line(&b, &t.lines[0]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_NOT_AVRO);

    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
}

static void test_enum_out_of_range(void **state) {
    static const int64_t bad[] = {2, -1, 100, INT64_MAX};
    torder_t t = default_order();
    tbuf_t b = tb_new();
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b.n = 0;
        tb_string(&b, t.order_id, strlen(t.order_id));
        tb_string(&b, t.customer_id, strlen(t.customer_id));
        tb_long(&b, t.placed_at);
        tb_long(&b, bad[i]);
        tb_tail(&b, &t);
        expect_err(&b, ORDER_ERR_NOT_AVRO);
    }
    tb_free(&b);
}

static void test_too_many_lines(void **state) {
    char(*skus)[16] = calloc(ORDER_LINES_MAX + 1, 16);
    tline_t *lines = make_lines(ORDER_LINES_MAX + 1, skus);
    torder_t t = default_order();
    tbuf_t b = tb_new();
    size_t i;

    (void)state;
    t.lines = lines;
    t.nlines = ORDER_LINES_MAX + 1;
    tb_order(&b, &t);
    expect_err(&b, ORDER_ERR_TOO_MANY_LINES);

    /* 1000 + 1 in two blocks: the limit is on the total. */
    b.n = 0;
    tb_head(&b, &t);
    tb_long(&b, ORDER_LINES_MAX);
    for (i = 0; i < ORDER_LINES_MAX; i++) tb_line(&b, &lines[i]);
    tb_long(&b, 1);
    tb_line(&b, &lines[ORDER_LINES_MAX]);
    tb_long(&b, 0);
    tb_string(&b, "EUR", 3);
    expect_err(&b, ORDER_ERR_TOO_MANY_LINES);

    tb_free(&b);
    free(lines);
    free(skus);
}

static void test_long_strings(void **state) {
    char s65[66], errstr[256];
    torder_t t = default_order();
    tline_t l = {0};
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();

    (void)state;
    memset(s65, 'x', 65);
    s65[65] = '\0';

    /* 64 bytes fit exactly. */
    t.order_id = s65;
    t.order_id_len = 64;
    t.customer_id = s65;
    t.customer_id_len = 64;
    l.sku = s65;
    l.sku_len = 64;
    l.qty = 1;
    t.lines = &l;
    t.nlines = 1;
    tb_order(&b, &t);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.order_id_len, 64);
    assert_int_equal(strlen(o.order_id), 64);
    assert_int_equal(o.lines[0].sku_len, 64);

    t.order_id_len = 65;
    b.n = 0;
    tb_order(&b, &t);
    expect_err(&b, ORDER_ERR_BAD_ID);

    t.order_id_len = 64;
    t.customer_id_len = 65;
    b.n = 0;
    tb_order(&b, &t);
    expect_err(&b, ORDER_ERR_BAD_ID);

    t.customer_id_len = 64;
    l.sku_len = 65;
    b.n = 0;
    tb_order(&b, &t);
    expect_err(&b, ORDER_ERR_BAD_SKU);

    l.sku_len = 64;
    t.currency = "EURO";
    b.n = 0;
    tb_order(&b, &t);
    expect_err(&b, ORDER_ERR_BAD_CURRENCY);

    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
}

/* Avro strings may hold NUL bytes; the lengths survive and validation
 * refuses them, rather than the id being cut at the NUL. */
static void test_embedded_nul(void **state) {
    char errstr[256];
    torder_t t = default_order();
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();
    validate_rules_t r = {"EUR", 86400000};

    (void)state;
    t.customer_id = "C\0-42";
    t.customer_id_len = 5;
    tb_order(&b, &t);
    assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
    assert_int_equal(o.customer_id_len, 5);
    assert_memory_equal(o.customer_id, "C\0-42", 5);
    assert_int_equal(validate_order(&o, NULL, 0, 1700000000000LL, &r, errstr, sizeof(errstr)),
                     ORDER_ERR_BAD_ID);
    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
}

/* Avro says strings are UTF-8 but neither libavro nor the decoder checks:
 * the bytes arrive intact and validation refuses them as BAD_UTF8. */
static void test_invalid_utf8(void **state) {
    static const tline_t bad_sku[] = {{"SKU-\xed\xa0\x80", 0, 1, 1}};
    char errstr[256];
    torder_t t;
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();
    const validate_rules_t r = {"EUR", 86400000, VALIDATE_MIN_PLACED_AT_MS_DEFAULT};
    size_t i;
    struct {
        const char *order_id, *customer_id, *currency;
        const tline_t *lines;
    } cases[] = {
        {"O-\xc0\xaf", NULL, NULL, NULL},         /* overlong '/' */
        {NULL, "C-\xf4\x90\x80\x80", NULL, NULL}, /* past U+10FFFF */
        {NULL, NULL, "E\xffR", NULL},
        {NULL, NULL, NULL, bad_sku},
    };

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        t = default_order();
        if (cases[i].order_id != NULL) t.order_id = cases[i].order_id;
        if (cases[i].customer_id != NULL) t.customer_id = cases[i].customer_id;
        if (cases[i].currency != NULL) t.currency = cases[i].currency;
        if (cases[i].lines != NULL) {
            t.lines = cases[i].lines;
            t.nlines = 1;
        }
        b.n = 0;
        tb_order(&b, &t);
        assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
        assert_memory_equal(o.order_id, t.order_id, strlen(t.order_id));
        assert_memory_equal(o.customer_id, t.customer_id, strlen(t.customer_id));
        assert_int_equal(validate_order(&o, NULL, 0, 1700000000000LL, &r, errstr, sizeof(errstr)),
                         ORDER_ERR_BAD_UTF8);
    }
    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
}

/* placed_at is any Avro long: its extremes decode, validation puts them
 * outside [min_placed_at, now + skew], and month bucketing of them is
 * defined (run under UBSan, the former int arithmetic aborted here). */
static void test_placed_at_extremes(void **state) {
    static const int64_t at[] = {INT64_MIN, -4611686018427387904LL, -1,
                                 0,         946684800000LL - 1,     INT64_MAX};
    char errstr[256];
    torder_t t = default_order();
    tbuf_t b = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();
    const validate_rules_t r = {"EUR", 86400000, VALIDATE_MIN_PLACED_AT_MS_DEFAULT};
    month_zone_t z;
    int32_t m;
    size_t i;

    (void)state;
    assert_int_equal(month_zone_init(&z, "UTC", errstr, sizeof(errstr)), 0);
    for (i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        t.placed_at = at[i];
        b.n = 0;
        tb_order(&b, &t);
        assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
        assert_int_equal(o.placed_at_ms, at[i]);
        assert_int_equal(validate_order(&o, NULL, 0, 1700000000000LL, &r, errstr, sizeof(errstr)),
                         at[i] == INT64_MAX ? ORDER_ERR_FUTURE : ORDER_ERR_BAD_PLACED_AT);
        m = month_of_ms(&z, o.placed_at_ms);
        assert_true(m >= MONTH_MIN && m <= MONTH_MAX);
        (void)month_yyyymm(m);
        (void)month_start_ms(&z, m + 1);
    }
    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
}

static void test_reuse(void **state) {
    char errstr[256];
    char(*skus)[16] = calloc(64, 16);
    tline_t *lines = make_lines(64, skus);
    torder_t t = default_order();
    order_t o = {0};
    decoder_t *d = new_decoder();
    tbuf_t b = tb_new();
    char id[32];
    int i;

    (void)state;
    t.lines = lines;
    for (i = 0; i < 5000; i++) {
        snprintf(id, sizeof(id), "O-%d", i);
        t.order_id = id;
        t.nlines = (size_t)(i % 64) + (i % 7 == 0 ? 0 : 1);
        t.kind = i % 2;
        b.n = 0;
        if (i % 3 == 0) tb_confluent(&b, (uint32_t)i);
        tb_order(&b, &t);
        if (i % 5 == 0) b.n--; /* every fifth record is cut short */
        if (i % 5 == 0) {
            assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_ERR_NOT_AVRO);
            continue;
        }
        assert_int_equal(dec(d, b.b, b.n, &o, errstr, sizeof(errstr)), ORDER_OK);
        assert_string_equal(o.order_id, id);
        assert_int_equal(o.nlines, t.nlines);
        assert_int_equal((int)o.kind, t.kind);
        assert_int_equal(decode_last_schema_id(d), i % 3 == 0 ? i : -1);
        if (t.nlines > 0) assert_int_equal(o.lines[t.nlines - 1].quantity, (int64_t)t.nlines);
    }
    assert_true(o.lines_cap <= ORDER_LINES_MAX);
    order_reset(&o);
    decode_destroy(d);
    tb_free(&b);
    free(lines);
    free(skus);
}

/* A deterministic PRNG: the same mutations on every machine. */
static uint64_t fuzz_state = 0x9e3779b97f4a7c15ULL;

static uint32_t fuzz_next(void) {
    fuzz_state ^= fuzz_state << 13;
    fuzz_state ^= fuzz_state >> 7;
    fuzz_state ^= fuzz_state << 17;
    return (uint32_t)(fuzz_state >> 16);
}

/* TIERD_FUZZ_ITERS in the environment runs the fuzz loops longer than the
 * default. */
static long fuzz_iters(void) {
    const char *env = getenv("TIERD_FUZZ_ITERS");
    return env != NULL ? strtol(env, NULL, 10) : 20000;
}

/* Random mutations of valid records: the decoder must answer, not crash. */
static void test_fuzz(void **state) {
    static const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0xfe, 0x81};
    static const tline_t more[] = {{"SKU-3", 0, 7, 5}};
    char errstr[256];
    torder_t t = default_order();
    tbuf_t seeds[3] = {tb_new(), tb_new(), tb_new()}, m = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();
    validate_rules_t r = {"EUR", 86400000};
    long iters = fuzz_iters();
    long iter, ok = 0;
    size_t i;

    (void)state;
    tb_order(&seeds[0], &t);
    tb_confluent(&seeds[1], 3);
    tb_order(&seeds[1], &t);
    /* Negative block counts with byte sizes, then a positive block. */
    tb_head(&seeds[2], &t);
    tb_long(&seeds[2], -2);
    tb_long(&seeds[2], (int64_t)(line_size(&t.lines[0]) + line_size(&t.lines[1])));
    for (i = 0; i < t.nlines; i++) tb_line(&seeds[2], &t.lines[i]);
    tb_long(&seeds[2], 1);
    tb_line(&seeds[2], &more[0]);
    tb_long(&seeds[2], 0);
    tb_string(&seeds[2], "EUR", 3);

    for (iter = 0; iter < iters; iter++) {
        const tbuf_t *seed = &seeds[iter % 3];
        int k, nmut = 1 + (int)(fuzz_next() % 4);
        order_err_t err;

        memcpy(m.b, seed->b, seed->n);
        m.n = seed->n;
        for (k = 0; k < nmut; k++) {
            size_t at = m.n > 0 ? fuzz_next() % m.n : 0;
            switch (fuzz_next() % 5) {
            case 0: /* flip a bit */
                if (m.n > 0) m.b[at] ^= (uint8_t)(1u << (fuzz_next() % 8));
                break;
            case 1: /* an interesting byte */
                if (m.n > 0) m.b[at] = interesting[fuzz_next() % sizeof(interesting)];
                break;
            case 2: /* insert a random byte */
                if (m.n + 1 < TB_CAP) {
                    memmove(m.b + at + 1, m.b + at, m.n - at);
                    m.b[at] = (uint8_t)fuzz_next();
                    m.n++;
                }
                break;
            case 3: /* delete a byte */
                if (m.n > 0) {
                    memmove(m.b + at, m.b + at + 1, m.n - at - 1);
                    m.n--;
                }
                break;
            default: /* truncate */ m.n = at; break;
            }
        }
        err = dec(d, m.b, m.n, &o, errstr, sizeof(errstr));
        assert_true(err >= ORDER_OK && err < ORDER_ERR__COUNT);
        assert_true(err != ORDER_ERR_INTERNAL);
        if (err == ORDER_OK) {
            ok++;
            assert_true(o.nlines <= ORDER_LINES_MAX);
            err = validate_order(&o, NULL, 0, 1700000000000LL, &r, errstr, sizeof(errstr));
            assert_true(err >= ORDER_OK && err < ORDER_ERR__COUNT);
        } else {
            assert_true(errstr[0] != '\0');
        }
    }
    /* Some mutations (a changed quantity digit) stay valid Avro; if none
     * did, the loop would only be exercising the pre-scan. */
    print_message("    %ld of %ld mutants decoded\n", ok, iters);
    assert_true(iters == 0 || ok > 0);
    order_reset(&o);
    decode_destroy(d);
    for (i = 0; i < 3; i++) tb_free(&seeds[i]);
    tb_free(&m);
}

/* -------------------------------------------------------------------------
 * Differential fuzz: the direct path against the libavro path (dec_both
 * compares them) on mutants of seeds that reach every verdict the decoder
 * gives, not only OK and NOT_AVRO.
 */

#define FZ_BOUNDS 48 /* field starts remembered per seed */

typedef struct fz_seed {
    tbuf_t b;
    size_t bounds[FZ_BOUNDS]; /* where a varint (a length, a count, a long) starts */
    size_t nbounds;
} fz_seed_t;

static void fz_mark(fz_seed_t *s) {
    if (s->nbounds < FZ_BOUNDS) s->bounds[s->nbounds++] = s->b.n;
}

/* A spliced Order: framed when schema_id >= 0; lines in blocks of `block`
 * items (0: one block), with byte sizes (negative counts) when sized.
 * Marks the head's fields, the first lines' fields, every block header,
 * the end marker and the currency. */
static void fz_build(fz_seed_t *s, const torder_t *t, int64_t schema_id, size_t block, bool sized) {
    size_t i, j, n;

    s->b = tb_new();
    s->nbounds = 0;
    if (schema_id >= 0) tb_confluent(&s->b, (uint32_t)schema_id);
    fz_mark(s);
    tb_string(&s->b, t->order_id, slen(t->order_id, t->order_id_len));
    fz_mark(s);
    tb_string(&s->b, t->customer_id, slen(t->customer_id, t->customer_id_len));
    fz_mark(s);
    tb_long(&s->b, t->placed_at);
    fz_mark(s);
    tb_long(&s->b, t->kind);
    for (i = 0; i < t->nlines; i += n) {
        n = block == 0 || t->nlines - i < block ? t->nlines - i : block;
        fz_mark(s);
        if (sized) {
            size_t bytes = 0;

            for (j = i; j < i + n; j++) bytes += line_size(&t->lines[j]);
            tb_long(&s->b, -(int64_t)n);
            fz_mark(s);
            tb_long(&s->b, (int64_t)bytes);
        } else {
            tb_long(&s->b, (int64_t)n);
        }
        for (j = i; j < i + n; j++) {
            const tline_t *l = &t->lines[j];
            bool mark = j < 3;

            /* An OrderLine is its three fields, concatenated. */
            if (mark) fz_mark(s);
            tb_string(&s->b, l->sku, slen(l->sku, l->sku_len));
            if (mark) fz_mark(s);
            tb_long(&s->b, l->qty);
            if (mark) fz_mark(s);
            tb_long(&s->b, l->price);
        }
    }
    fz_mark(s);
    tb_long(&s->b, 0);
    fz_mark(s);
    tb_string(&s->b, t->currency, strlen(t->currency));
}

/* A value worth writing where a length, count or long was. */
static int64_t fz_value(size_t n) {
    static const int64_t picks[] = {
        0,
        1,
        -1,
        2,
        3,
        4,
        63,
        64,
        65,
        66,
        127,
        128,
        999,
        1000,
        1001,
        -999,
        -1000,
        -1001,
        INT64_C(1) << 31,
        INT64_C(1) << 40,
        -(INT64_C(1) << 40),
        INT64_MAX,
        INT64_MAX - 1,
        INT64_MIN,
        INT64_MIN + 1,
    };
    uint64_t r;

    switch (fuzz_next() % 4) {
    case 0: return (int64_t)(fuzz_next() % 16) - 4;
    case 1: return picks[fuzz_next() % (sizeof(picks) / sizeof(picks[0]))];
    case 2: /* about what is left of the record */
        return (int64_t)n + (int64_t)(fuzz_next() % 5) - 2;
    default:
        r = ((uint64_t)fuzz_next() << 32) | fuzz_next();
        return (int64_t)(r >> (fuzz_next() % 64));
    }
}

/* Writes v as a zigzag varint into out (room for 16 bytes): mostly the
 * canonical form, sometimes padded with zero continuation bytes (possibly
 * past 10 bytes), sometimes a 10th byte too big for 64 bits. */
static size_t fz_varint(uint8_t *out, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (0 - ((uint64_t)v >> 63));
    size_t n = 0;
    unsigned pad = 0, form = fuzz_next() % 8;

    if (form == 0) {
        for (n = 0; n < 9; n++) out[n] = 0x80 | (uint8_t)(fuzz_next() & 0x7f);
        out[n++] = (uint8_t)(2 + fuzz_next() % 126);
        return n;
    }
    if (form == 1) pad = 1 + fuzz_next() % 4;
    do {
        uint8_t b = (uint8_t)(z & 0x7f);

        z >>= 7;
        out[n++] = (uint8_t)(b | (z != 0 ? 0x80 : 0));
    } while (z != 0);
    for (; pad > 0 && n < 16; pad--) {
        out[n - 1] |= 0x80;
        out[n++] = 0x00;
    }
    return n;
}

/* Replaces m->b[at, at + del) with ins[0, nins); does nothing when that
 * does not fit.  ins must not point into m. */
static void fz_splice(tbuf_t *m, size_t at, size_t del, const uint8_t *ins, size_t nins) {
    if (at > m->n || del > m->n - at || m->n - del + nins > TB_CAP) return;
    memmove(m->b + at + nins, m->b + at + del, m->n - at - del);
    if (nins > 0) memcpy(m->b + at, ins, nins);
    m->n = m->n - del + nins;
}

/* The length of the varint at m->b[at], as a reader would take it. */
static size_t fz_varint_len(const tbuf_t *m, size_t at) {
    size_t j = at;

    while (j < m->n && (m->b[j] & 0x80) != 0 && j - at < 10) j++;
    return j < m->n ? j - at + 1 : j - at;
}

static void fz_mutate(tbuf_t *m, const fz_seed_t *seed) {
    static const uint8_t interesting[] = {0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0xfe, 0x81};
    uint8_t tmp[32];
    size_t at = m->n > 0 ? fuzz_next() % m->n : 0;
    size_t n;

    switch (fuzz_next() % 12) {
    case 0:
    case 1: /* flip a bit */
        if (m->n > 0) m->b[at] ^= (uint8_t)(1u << (fuzz_next() % 8));
        break;
    case 2: /* an interesting byte */
        if (m->n > 0) m->b[at] = interesting[fuzz_next() % sizeof(interesting)];
        break;
    case 3: /* insert a random byte */
        tmp[0] = (uint8_t)fuzz_next();
        fz_splice(m, at, 0, tmp, 1);
        break;
    case 4: /* delete a byte */
        if (m->n > 0) fz_splice(m, at, 1, NULL, 0);
        break;
    case 5: /* truncate */ m->n = at; break;
    case 6:
    case 7: /* a field's varint (a length, a count, a long) replaced */
        if (seed->nbounds > 0) {
            at = seed->bounds[fuzz_next() % seed->nbounds];
            if (at <= m->n) {
                n = fz_varint(tmp, fz_value(m->n - at));
                fz_splice(m, at, fz_varint_len(m, at), tmp, n);
            }
        }
        break;
    case 8: /* a varint inserted anywhere */
        n = fz_varint(tmp, fz_value(m->n - at));
        fz_splice(m, at, 0, tmp, n);
        break;
    case 9: /* a run of bytes removed */
        n = 1 + fuzz_next() % 16;
        fz_splice(m, at, n < m->n - at ? n : m->n - at, NULL, 0);
        break;
    case 10: /* a run of bytes repeated elsewhere */
        n = 1 + fuzz_next() % sizeof(tmp);
        if (n > m->n - at) n = m->n - at;
        memcpy(tmp, m->b + at, n);
        fz_splice(m, m->n > 0 ? fuzz_next() % (m->n + 1) : 0, 0, tmp, n);
        break;
    default: /* the Confluent header taken off, or put on */
        if (m->n >= 5 && m->b[0] == 0x00 && fuzz_next() % 2 == 0) {
            fz_splice(m, 0, 5, NULL, 0);
        } else {
            uint32_t id = fuzz_next();

            tmp[0] = 0x00;
            tmp[1] = (uint8_t)(id >> 24);
            tmp[2] = (uint8_t)(id >> 16);
            tmp[3] = (uint8_t)(id >> 8);
            tmp[4] = (uint8_t)id;
            fz_splice(m, 0, 0, tmp, 5);
        }
        break;
    }
}

static void test_fuzz_paths(void **state) {
    enum { NSEEDS = 12 };
    static const tline_t more[] = {{"SKU-3", 0, 7, 5}};
    static const tline_t three[] = {{"SKU-1", 0, 3, 1250}, {"SKU-2", 0, 1, 99}, {"SKU-3", 0, 7, 5}};
    static const size_t errstr_sizes[] = {256, 256, 256, 40, 1};
    char errstr[256], s65[66];
    char(*skus)[16] = calloc(ORDER_LINES_MAX + 1, 16);
    tline_t *many = make_lines(40, skus);
    tline_t *tiny = calloc(ORDER_LINES_MAX + 1, sizeof(*tiny));
    tline_t long_sku[3];
    tline_t two_more[3];
    fz_seed_t seeds[NSEEDS];
    torder_t t;
    tbuf_t m = tb_new();
    order_t o = {0};
    decoder_t *d = new_decoder();
    long iters = fuzz_iters(), iter, verdicts[ORDER_ERR__COUNT] = {0};
    size_t i;

    (void)state;
    assert_non_null(tiny);
    memset(s65, 'x', 65);
    s65[65] = '\0';
    for (i = 0; i <= ORDER_LINES_MAX; i++) tiny[i].sku = ""; /* the smallest line: 3 bytes */
    memcpy(long_sku, three, sizeof(three));
    long_sku[1].sku = s65;
    long_sku[1].sku_len = 65;
    memcpy(two_more, default_lines, sizeof(default_lines));
    two_more[2] = more[0];

    t = default_order();
    fz_build(&seeds[0], &t, -1, 0, false);
    fz_build(&seeds[1], &t, 3, 0, false);
    t.lines = two_more; /* a sized block of 2, then a plain block of 1 */
    t.nlines = 3;
    fz_build(&seeds[2], &t, -1, 2, true);
    t = default_order();
    t.kind = ORDER_RETURN; /* 40 lines: the line buffer grows past 16 and 32 */
    t.lines = many;
    t.nlines = 40;
    fz_build(&seeds[3], &t, 66051, 7, true);
    t = default_order(); /* every string at its bound */
    t.order_id = s65;
    t.order_id_len = 64;
    t.customer_id = s65;
    t.customer_id_len = 64;
    long_sku[1].sku_len = 64;
    t.lines = long_sku;
    t.nlines = 3;
    fz_build(&seeds[4], &t, -1, 0, false);
    long_sku[1].sku_len = 65;
    t.order_id_len = 65; /* BAD_ID, BAD_ID, BAD_SKU (on line 2), BAD_CURRENCY */
    fz_build(&seeds[5], &t, -1, 0, false);
    t.order_id_len = 64;
    t.customer_id_len = 65;
    fz_build(&seeds[6], &t, 7, 0, false);
    t.customer_id_len = 64;
    fz_build(&seeds[7], &t, -1, 0, false);
    t = default_order();
    t.currency = "EURO";
    fz_build(&seeds[8], &t, -1, 0, false);
    t = default_order(); /* starts with 0x00: framed first, then plain */
    t.order_id = "";
    fz_build(&seeds[9], &t, -1, 0, false);
    t = default_order(); /* the most lines allowed, then one more */
    t.lines = tiny;
    t.nlines = ORDER_LINES_MAX;
    fz_build(&seeds[10], &t, -1, 0, false);
    t.nlines = ORDER_LINES_MAX + 1;
    fz_build(&seeds[11], &t, 5, 500, false);

    fuzz_state = 0x2545f4914f6cdd1dULL; /* not left to the test before this one */
    for (iter = 0; iter < iters; iter++) {
        const fz_seed_t *seed = &seeds[iter % NSEEDS];
        int k, nmut = (int)(fuzz_next() % 4); /* 0: the seed itself */
        order_err_t err;

        memcpy(m.b, seed->b.b, seed->b.n);
        m.n = seed->b.n;
        for (k = 0; k < nmut; k++) fz_mutate(&m, seed);
        err = dec(d, m.b, m.n, &o, errstr, errstr_sizes[iter % 5]);
        assert_true(err >= ORDER_OK && err < ORDER_ERR__COUNT);
        if (err == ORDER_ERR_INTERNAL) {
            print_hex("input", m.b, m.n);
            fail_msg("INTERNAL for a record: %s", errstr);
        }
        verdicts[err]++;
    }
    print_message("    %ld mutants:", iters);
    for (i = 0; i < ORDER_ERR__COUNT; i++)
        if (verdicts[i] > 0)
            print_message(" %s %ld", order_reason_code((order_err_t)i), verdicts[i]);
    print_message("\n");
    /* Every verdict the decoder gives was reached (the seeds alone reach
     * them in the first dozen iterations). */
    if (iters >= 1000) {
        assert_true(verdicts[ORDER_OK] > 0);
        assert_true(verdicts[ORDER_ERR_NOT_AVRO] > 0);
        assert_true(verdicts[ORDER_ERR_TOO_MANY_LINES] > 0);
        assert_true(verdicts[ORDER_ERR_BAD_ID] > 0);
        assert_true(verdicts[ORDER_ERR_BAD_SKU] > 0);
        assert_true(verdicts[ORDER_ERR_BAD_CURRENCY] > 0);
    }
    order_reset(&o);
    decode_destroy(d);
    for (i = 0; i < NSEEDS; i++) tb_free(&seeds[i].b);
    tb_free(&m);
    free(tiny);
    free(many);
    free(skus);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_splice_matches_writer),
        cmocka_unit_test(test_plain),
        cmocka_unit_test(test_confluent),
        cmocka_unit_test(test_many_lines),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_trailing),
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_varint_too_long),
        cmocka_unit_test(test_huge_string_length),
        cmocka_unit_test(test_huge_block_count),
        cmocka_unit_test(test_negative_blocks),
        cmocka_unit_test(test_enum_out_of_range),
        cmocka_unit_test(test_too_many_lines),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_placed_at_extremes),
        cmocka_unit_test(test_reuse),
        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_fuzz_paths),
    };
    return cmocka_run_group_tests(tests, enc_setup, enc_teardown);
}
