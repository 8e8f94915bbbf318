/*
 * decode.c -- bytes off the wire to an order_t.
 *
 * Owns: the parsed Order schema, its libavro value class, one value and one
 * memory reader, all built once in decode_new() and reused for every record.
 *
 * Must never: crash, hang or allocate an attacker-chosen amount of memory,
 * whatever the bytes are.  libavro trusts the lengths it reads -- it
 * allocates a string's claimed length before checking that the bytes are
 * there, leaks that buffer when they are not, and accepts any enum index --
 * so every record is first walked by decode_prescan(), which knows the
 * Order encoding and checks each length, count and index against the bytes
 * actually present.  libavro only ever sees a buffer that is known to hold
 * exactly one well-formed Order.  The pre-scan therefore mirrors
 * schemas/order.avsc field by field; decode_new() refuses a schema whose
 * shape differs, so the two cannot drift apart silently.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "decode.h"

#include "avroscan.h"
#include "errstr.h"

/* Generated from schemas/order.avsc at build time. */
extern const char tierd_schema_order[];

/* Field positions in the Order record and in OrderLine, as in the schema. */
enum { F_ORDER_ID, F_CUSTOMER_ID, F_PLACED_AT, F_KIND, F_LINES, F_CURRENCY, F__COUNT };
enum { L_SKU, L_QUANTITY, L_UNIT_PRICE, L__COUNT };

/* The smallest OrderLine encoding: an empty sku (1 length byte) and two
 * one-byte longs.  Bounds how many items a block can honestly claim. */
#define DECODE_LINE_MIN_BYTES 3

/* Confluent wire format: magic 0x00, then the schema id, big-endian. */
#define DECODE_CONFLUENT_HEADER 5

struct decoder {
    avro_schema_t schema;      /* owned */
    avro_value_iface_t *iface; /* owned */
    avro_value_t value;        /* owned when value_live */
    int value_live;
    avro_reader_t reader;      /* owned; pointed at each record in turn */
    int64_t last_schema_id;    /* -1: last record had no Confluent framing */
};

static const avroscan_field_t order_fields[F__COUNT] = {
    [F_ORDER_ID] = {"order_id", AVRO_STRING, false},
    [F_CUSTOMER_ID] = {"customer_id", AVRO_STRING, false},
    [F_PLACED_AT] = {"placed_at", AVRO_INT64, false},
    [F_KIND] = {"kind", AVRO_ENUM, false},
    [F_LINES] = {"lines", AVRO_ARRAY, false},
    [F_CURRENCY] = {"currency", AVRO_STRING, false},
};

static const avroscan_field_t line_fields[L__COUNT] = {
    [L_SKU] = {"sku", AVRO_STRING, false},
    [L_QUANTITY] = {"quantity", AVRO_INT64, false},
    [L_UNIT_PRICE] = {"unit_price", AVRO_INT64, false},
};

/* Named in the message when the schema's shape is not the expected one. */
#define DECODE_WALKER "the decoder's pre-scan"

/* -------------------------------------------------------------------------
 * Schema shape check: the pre-scan below hard-codes this layout.
 */

static int decode_check_schema(avro_schema_t schema, char *errstr, size_t errstr_size)
{
    avro_schema_t kind, items;

    if (avroscan_check_record(schema, "Order", order_fields, F__COUNT, DECODE_WALKER, errstr,
                              errstr_size) != 0)
        return -1;

    /* The wire carries the enum index; order_kind_t values must match it. */
    kind = avro_schema_record_field_get_by_index(schema, F_KIND);
    if (avro_schema_enum_number_of_symbols(kind) != 2 ||
        strcmp(avro_schema_enum_get(kind, ORDER_SALE), "SALE") != 0 ||
        strcmp(avro_schema_enum_get(kind, ORDER_RETURN), "RETURN") != 0) {
        errstr_fmt(errstr, errstr_size, "schema: kind must be the enum [SALE, RETURN]");
        return -1;
    }

    items = avro_schema_array_items(avro_schema_record_field_get_by_index(schema, F_LINES));
    return avroscan_check_record(items, "OrderLine", line_fields, L__COUNT, DECODE_WALKER, errstr,
                                 errstr_size);
}

/* -------------------------------------------------------------------------
 * Life cycle.
 */

decoder_t *decode_new(char *errstr, size_t errstr_size)
{
    decoder_t *d = NULL; /* owned here until returned */
    decoder_t *ret = NULL;
    static const char empty[1] = "";

    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory creating the order decoder");
        goto out;
    }
    d->last_schema_id = -1;

    if (avro_schema_from_json_length(tierd_schema_order, strlen(tierd_schema_order),
                                     &d->schema) != 0) {
        errstr_fmt(errstr, errstr_size, "cannot parse the embedded Order schema: %s",
                   avro_strerror());
        goto out;
    }
    if (decode_check_schema(d->schema, errstr, errstr_size) != 0)
        goto out;

    d->iface = avro_generic_class_from_schema(d->schema);
    if (d->iface == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot build a value class for the Order schema: %s",
                   avro_strerror());
        goto out;
    }
    if (avro_generic_value_new(d->iface, &d->value) != 0) {
        errstr_fmt(errstr, errstr_size, "cannot allocate the Order value: %s", avro_strerror());
        goto out;
    }
    d->value_live = 1;

    /* Pointed at each record by avro_reader_memory_set_source(). */
    d->reader = avro_reader_memory(empty, 0);
    if (d->reader == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot allocate the Avro memory reader: %s",
                   avro_strerror());
        goto out;
    }

    ret = d;
    d = NULL; /* now owned by the caller */
out:
    decode_destroy(d);
    return ret;
}

void decode_destroy(decoder_t *d)
{
    if (d == NULL)
        return;
    if (d->reader != NULL)
        avro_reader_free(d->reader);
    if (d->value_live)
        avro_value_decref(&d->value);
    if (d->iface != NULL)
        avro_value_iface_decref(d->iface);
    if (d->schema != NULL)
        avro_schema_decref(d->schema);
    free(d);
}

int64_t decode_last_schema_id(const decoder_t *d)
{
    return d == NULL ? -1 : d->last_schema_id;
}

/* -------------------------------------------------------------------------
 * Pre-scan: walk the Order encoding without allocating anything.
 *
 * Invariant on success: [buf, end) holds exactly one Order whose every
 * string length fits in the bytes present, whose kind index is 0 or 1, whose
 * array blocks are consistent (negative counts carry a byte size that matches
 * the items) and hold at most ORDER_LINES_MAX items in total.  libavro can
 * then read it without failing half-way, which is where it leaks.
 */

static order_err_t scan_lines(avroscan_t *s)
{
    uint64_t total = 0;

    for (;;) {
        int64_t count, size = -1;
        size_t at = avroscan_at(s);
        const uint8_t *items;
        int64_t i;

        if (avroscan_varint(s, "the lines block count", 64, &count) != 0)
            return ORDER_ERR_NOT_AVRO;
        if (count == 0)
            return ORDER_OK;
        if (count < 0) {
            /* A negative count is followed by the block's size in bytes
             * (lets readers skip it).  -INT64_MIN does not exist. */
            if (count == INT64_MIN) {
                errstr_fmt(s->errstr, s->errstr_size,
                           "lines block count at byte %zu is out of range", at);
                return ORDER_ERR_NOT_AVRO;
            }
            count = -count;
            if (avroscan_varint(s, "the lines block size", 64, &size) != 0)
                return ORDER_ERR_NOT_AVRO;
            if (size < 0 || (uint64_t)size > avroscan_left(s)) {
                errstr_fmt(s->errstr, s->errstr_size,
                           "lines block at byte %zu claims %" PRId64 " bytes but %zu remain",
                           at, size, avroscan_left(s));
                return ORDER_ERR_NOT_AVRO;
            }
        }
        /* A count the remaining bytes cannot possibly hold is corruption,
         * not a big order: check that before the line limit. */
        if ((uint64_t)count > avroscan_left(s) / DECODE_LINE_MIN_BYTES) {
            errstr_fmt(s->errstr, s->errstr_size,
                       "lines block at byte %zu claims %" PRId64
                       " lines but only %zu bytes remain",
                       at, count, avroscan_left(s));
            return ORDER_ERR_NOT_AVRO;
        }
        total += (uint64_t)count; /* count <= buffer size: cannot wrap */
        if (total > ORDER_LINES_MAX) {
            errstr_fmt(s->errstr, s->errstr_size,
                       "the order has more than %d lines (at least %" PRIu64 ")",
                       ORDER_LINES_MAX, total);
            return ORDER_ERR_TOO_MANY_LINES;
        }

        items = s->p;
        for (i = 0; i < count; i++) {
            int64_t ignored;

            if (avroscan_string(s, "a line's sku") != 0 ||
                avroscan_varint(s, "a line's quantity", 64, &ignored) != 0 ||
                avroscan_varint(s, "a line's unit_price", 64, &ignored) != 0)
                return ORDER_ERR_NOT_AVRO;
        }
        if (size >= 0 && (uint64_t)size != (uint64_t)(s->p - items)) {
            errstr_fmt(s->errstr, s->errstr_size,
                       "lines block at byte %zu claims %" PRId64 " bytes but its %" PRId64
                       " lines take %zu",
                       at, size, count, (size_t)(s->p - items));
            return ORDER_ERR_NOT_AVRO;
        }
    }
}

static order_err_t decode_prescan(const uint8_t *start, const uint8_t *payload, size_t len,
                                  char *errstr, size_t errstr_size)
{
    avroscan_t s = {start, payload, payload + len, errstr, errstr_size, AVROSCAN_LONGER};
    int64_t v;
    size_t at;
    order_err_t err;

    if (avroscan_string(&s, "order_id") != 0 || avroscan_string(&s, "customer_id") != 0 ||
        avroscan_varint(&s, "placed_at", 64, &v) != 0)
        return ORDER_ERR_NOT_AVRO;

    at = avroscan_at(&s);
    if (avroscan_varint(&s, "kind", 64, &v) != 0)
        return ORDER_ERR_NOT_AVRO;
    if (v != ORDER_SALE && v != ORDER_RETURN) {
        errstr_fmt(errstr, errstr_size,
                   "kind at byte %zu is enum index %" PRId64 "; only 0 (SALE) and 1 (RETURN) "
                   "exist",
                   at, v);
        return ORDER_ERR_NOT_AVRO;
    }

    err = scan_lines(&s);
    if (err != ORDER_OK)
        return err;

    if (avroscan_string(&s, "currency") != 0 || avroscan_end(&s, "Order") != 0)
        return ORDER_ERR_NOT_AVRO;
    return ORDER_OK;
}

/* -------------------------------------------------------------------------
 * Copy out of the libavro value.
 */

/* Copies an Avro string into a fixed, NUL-terminated field.  libavro's size
 * counts the terminating NUL.  Too long is refused, never truncated: a
 * truncated id would silently merge two customers. */
static int decode_copy_str(avro_value_t *v, char *dst, size_t cap, size_t *len_out)
{
    const char *str = NULL;
    size_t size = 0, len;

    if (avro_value_get_string(v, &str, &size) != 0)
        return -1;
    len = size > 0 ? size - 1 : 0;
    *len_out = len;
    if (len > cap)
        return 1;
    if (len > 0)
        memcpy(dst, str, len);
    dst[len] = '\0';
    return 0;
}

static int decode_get_long(avro_value_t *rec, int index, int64_t *out)
{
    avro_value_t f;

    if (avro_value_get_by_index(rec, (size_t)index, &f, NULL) != 0)
        return -1;
    return avro_value_get_long(&f, out) != 0 ? -1 : 0;
}

static int decode_grow_lines(order_t *o, size_t n)
{
    size_t cap = o->lines_cap > 0 ? o->lines_cap : 16;
    size_t bytes;
    order_line_t *lines;

    if (n <= o->lines_cap)
        return 0;
    while (cap < n)
        cap *= 2;
    if (cap > ORDER_LINES_MAX)
        cap = ORDER_LINES_MAX; /* n <= ORDER_LINES_MAX, the pre-scan saw to it */
    if (__builtin_mul_overflow(cap, sizeof(*lines), &bytes))
        return -1;
    lines = realloc(o->lines, bytes);
    if (lines == NULL)
        return -1;
    o->lines = lines;
    o->lines_cap = (uint32_t)cap;
    return 0;
}

/* Returns ORDER_OK, a field-length error, or ORDER_ERR_INTERNAL when libavro
 * disagrees with the pre-scan (a bug) or memory runs out. */
static order_err_t decode_copy(avro_value_t *rec, order_t *o, char *errstr, size_t errstr_size)
{
    avro_value_t f, lines, line;
    size_t len, n, i;
    int kind, rc;

    if (avro_value_get_by_index(rec, F_ORDER_ID, &f, NULL) != 0 ||
        (rc = decode_copy_str(&f, o->order_id, ORDER_ID_MAX, &len)) < 0)
        goto libavro;
    if (rc > 0) {
        errstr_fmt(errstr, errstr_size, "order_id is %zu bytes; at most %d are allowed", len,
                   ORDER_ID_MAX);
        return ORDER_ERR_BAD_ID;
    }
    o->order_id_len = (uint8_t)len;

    if (avro_value_get_by_index(rec, F_CUSTOMER_ID, &f, NULL) != 0 ||
        (rc = decode_copy_str(&f, o->customer_id, ORDER_ID_MAX, &len)) < 0)
        goto libavro;
    if (rc > 0) {
        errstr_fmt(errstr, errstr_size, "customer_id is %zu bytes; at most %d are allowed",
                   len, ORDER_ID_MAX);
        return ORDER_ERR_BAD_ID;
    }
    o->customer_id_len = (uint8_t)len;

    if (decode_get_long(rec, F_PLACED_AT, &o->placed_at_ms) != 0)
        goto libavro;

    if (avro_value_get_by_index(rec, F_KIND, &f, NULL) != 0 || avro_value_get_enum(&f, &kind) != 0)
        goto libavro;
    o->kind = kind == ORDER_RETURN ? ORDER_RETURN : ORDER_SALE; /* pre-scan: 0 or 1 */

    if (avro_value_get_by_index(rec, F_LINES, &lines, NULL) != 0 ||
        avro_value_get_size(&lines, &n) != 0)
        goto libavro;
    if (n > ORDER_LINES_MAX) {
        /* The pre-scan bounds it; libavro disagreeing is a bug. */
        errstr_fmt(errstr, errstr_size, "libavro read %zu lines after the pre-scan allowed "
                   "at most %d", n, ORDER_LINES_MAX);
        return ORDER_ERR_INTERNAL;
    }
    if (decode_grow_lines(o, n) != 0) {
        errstr_fmt(errstr, errstr_size, "out of memory for %zu order lines", n);
        return ORDER_ERR_INTERNAL;
    }
    for (i = 0; i < n; i++) {
        order_line_t *l = &o->lines[i];

        if (avro_value_get_by_index(&lines, i, &line, NULL) != 0 ||
            avro_value_get_by_index(&line, L_SKU, &f, NULL) != 0 ||
            (rc = decode_copy_str(&f, l->sku, ORDER_SKU_MAX, &len)) < 0)
            goto libavro;
        if (rc > 0) {
            errstr_fmt(errstr, errstr_size, "line %zu: sku is %zu bytes; at most %d are allowed",
                       i + 1, len, ORDER_SKU_MAX);
            return ORDER_ERR_BAD_SKU;
        }
        l->sku_len = (uint8_t)len;
        if (decode_get_long(&line, L_QUANTITY, &l->quantity) != 0 ||
            decode_get_long(&line, L_UNIT_PRICE, &l->unit_price) != 0)
            goto libavro;
        o->nlines = (uint32_t)(i + 1); /* only complete lines are counted */
    }

    if (avro_value_get_by_index(rec, F_CURRENCY, &f, NULL) != 0 ||
        (rc = decode_copy_str(&f, o->currency, ORDER_CURRENCY_MAX, &len)) < 0)
        goto libavro;
    if (rc > 0) {
        /* Longer than any ISO 4217 code, so it cannot be the configured one. */
        errstr_fmt(errstr, errstr_size,
                   "currency is %zu bytes; an ISO 4217 code has %d letters", len,
                   ORDER_CURRENCY_MAX);
        return ORDER_ERR_BAD_CURRENCY;
    }
    return ORDER_OK;

libavro:
    errstr_fmt(errstr, errstr_size, "libavro could not hand back a decoded field: %s",
               avro_strerror());
    return ORDER_ERR_INTERNAL;
}

/* -------------------------------------------------------------------------
 * Entry point.
 */

order_err_t decode_order(decoder_t *d, const void *buf, size_t len, order_t *out,
                         char *errstr, size_t errstr_size)
{
    const uint8_t *start = buf;
    const uint8_t *payload = buf;
    size_t payload_len = len;
    order_line_t *keep_lines;
    uint32_t keep_cap;
    order_err_t err;
    int rc;

    if (errstr != NULL && errstr_size > 0)
        errstr[0] = '\0';
    if (d == NULL || out == NULL) {
        errstr_fmt(errstr, errstr_size, "decode_order called without a decoder or an order");
        return ORDER_ERR_INTERNAL;
    }
    d->last_schema_id = -1;

    /* Start from a clean order but keep the line buffer for reuse. */
    keep_lines = out->lines;
    keep_cap = out->lines_cap;
    memset(out, 0, sizeof(*out));
    out->lines = keep_lines;
    out->lines_cap = keep_cap;

    if (buf == NULL || len == 0) {
        errstr_fmt(errstr, errstr_size, "empty record value; an Order is never empty");
        return ORDER_ERR_NOT_AVRO;
    }

    /*
     * Framing.  A plain Order starts with the zigzag length of order_id, and
     * a first byte of 0x00 means an empty order_id -- invalid anyway.  So a
     * leading 0x00 with room for the 4-byte schema id is first read as the
     * Confluent wire format; when those bytes are not an Order, the whole
     * record is tried as plain Avro, so a plain Order with an empty
     * order_id is refused as EMPTY_ID (by validation), the reason a
     * producer can act on.  There is no schema registry here, so the id is
     * reported, not checked: the pre-scan is what proves the bytes are an
     * Order.
     */
    if (start[0] == 0x00 && len >= DECODE_CONFLUENT_HEADER) {
        d->last_schema_id = (int64_t)(((uint32_t)start[1] << 24) | ((uint32_t)start[2] << 16) |
                                      ((uint32_t)start[3] << 8) | (uint32_t)start[4]);
        payload += DECODE_CONFLUENT_HEADER;
        payload_len -= DECODE_CONFLUENT_HEADER;
    }
    if (payload_len > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "record of %zu bytes is too large to decode", len);
        return ORDER_ERR_NOT_AVRO;
    }

    err = decode_prescan(start, payload, payload_len, errstr, errstr_size);
    if (err != ORDER_OK && payload != start &&
        decode_prescan(start, start, len, NULL, 0) == ORDER_OK) {
        d->last_schema_id = -1; /* plain Avro after all */
        payload = start;
        payload_len = len;
        err = ORDER_OK;
        if (errstr != NULL && errstr_size > 0)
            errstr[0] = '\0';
    }
    if (err != ORDER_OK)
        return err;

    avro_reader_memory_set_source(d->reader, (const char *)payload, (int64_t)payload_len);
    rc = avro_value_read(d->reader, &d->value);
    if (rc != 0) {
        /* After a clean pre-scan only a failed allocation should get here. */
        errstr_fmt(errstr, errstr_size, "libavro cannot read the Order: %s", avro_strerror());
        return rc == ENOMEM ? ORDER_ERR_INTERNAL : ORDER_ERR_NOT_AVRO;
    }
    return decode_copy(&d->value, out, errstr, errstr_size);
}
