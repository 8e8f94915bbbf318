/*
 * decode.c -- bytes off the wire: an order_t from each record of the
 * orders topic, a customer profile from each record of customer-profiles.
 * The input side of tierd's Avro (events.c is the output side; codec.c
 * holds the libavro plumbing both use).
 *
 * Owns: the parsed Order schema, and for the reference path only (tests)
 * its libavro value, built on that path's first call and reused for every
 * record; the parsed CustomerProfile schema with its reusable value, and
 * the tables that map the profile's enum symbols to policy.h's values.
 *
 * Must never: crash, hang or allocate an attacker-chosen amount of memory,
 * whatever the bytes are.  A record is first read by decode_fast() in one
 * pass, which makes every check below and gives up, saying nothing, on
 * anything it does not accept.  Otherwise it is walked by decode_prescan(),
 * which knows the Order encoding and checks each length, count and index
 * against the bytes actually present; every refusal of a malformed record
 * (NOT_AVRO, TOO_MANY_LINES) and its wording comes from there.  Then
 * decode_direct() walks the same, now proven, bytes a second time and fills
 * the order_t straight from them, allocating nothing but the order's line
 * buffer.  Both walks mirror schemas/order.avsc field by field;
 * decode_new() refuses a schema whose shape differs, so they cannot drift
 * apart from it silently.
 *
 * The previous path, libavro generic values filled from the same proven
 * bytes, stays as decode_order_libavro(): the tests run both on every input
 * and require the same verdict, order and reason.  libavro trusts the
 * lengths it reads (it allocates a string's claimed length before checking
 * that the bytes are there, leaks that buffer when they are not, and
 * accepts any enum index), so it too only ever sees a pre-scanned record.
 *
 * A CustomerProfile follows the same rule: profile_prescan() walks it and
 * bounds every length and index first; then libavro reads the proven
 * bytes and profile_copy() judges the fields (the id by validate_id's
 * rules, ratios, the override's range).  decode_new() refuses a profile
 * schema whose shape, or any of whose enum symbols, this code does not
 * know.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "decode.h"

#include "avroscan.h"
#include "codec.h"
#include "errstr.h"
#include "schemacache.h"
#include "utf8.h"
#include "validate.h"

/* Generated from schemas/ at build time. */
extern const char tierd_schema_order[];
extern const char tierd_schema_customer_profile[];

/* Field positions in the Order record and in OrderLine, as in the schema. */
enum { F_ORDER_ID, F_CUSTOMER_ID, F_PLACED_AT, F_KIND, F_LINES, F_CURRENCY, F__COUNT };
enum { L_SKU, L_QUANTITY, L_UNIT_PRICE, L__COUNT };
enum {
    CP_CUSTOMER_ID,
    CP_FORMAT,
    CP_MARKET,
    CP_CHAIN,
    CP_GRADE,
    CP_COOPERATION,
    CP_GROWTH,
    CP_TIER_OVERRIDE,
    CP_UPDATED_AT,
    CP__COUNT
};

/* The smallest OrderLine encoding: an empty sku (1 length byte) and two
 * one-byte longs.  Bounds how many items a block can honestly claim. */
#define DECODE_LINE_MIN_BYTES 3

/* Enum symbols a profile may carry; more than any schema of ours has. */
#define DECODE_SYMBOLS_MAX 16

#define DECODE_NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct decoder {
    /* The Order; its value and reader are decode_order_libavro()'s only,
     * built on its first call. */
    codec_record_t order;
    codec_record_t profile; /* the CustomerProfile, value built at start */
    int64_t last_schema_id; /* -1: last record had no Confluent framing */

    /* With a schema registry (decode_use_registry): each framed record's
     * writer schema, judged against the Order or the CustomerProfile. */
    int registry;
    schemacache_t order_writers;
    schemacache_t profile_writers;

    /* Profile enums by wire index. */
    policy_format_t formats[DECODE_SYMBOLS_MAX];
    int nformats;
    policy_market_t markets[DECODE_SYMBOLS_MAX];
    int nmarkets;
    policy_grade_t grades[DECODE_SYMBOLS_MAX];
    int ngrades;
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

static const avroscan_field_t cp_fields[CP__COUNT] = {
    [CP_CUSTOMER_ID] = {"customer_id", AVRO_STRING, false},
    [CP_FORMAT] = {"format", AVRO_ENUM, false},
    [CP_MARKET] = {"market", AVRO_ENUM, false},
    [CP_CHAIN] = {"chain", AVRO_BOOLEAN, false},
    [CP_GRADE] = {"compliance_grade", AVRO_ENUM, false},
    [CP_COOPERATION] = {"cooperation", AVRO_DOUBLE, false},
    [CP_GROWTH] = {"growth", AVRO_DOUBLE, false},
    [CP_TIER_OVERRIDE] = {"tier_override", AVRO_INT32, true},
    [CP_UPDATED_AT] = {"updated_at", AVRO_INT64, false},
};

/* Named in the message when the schema's shape is not the expected one. */
#define DECODE_WALKER "the Order decoder"

/* -------------------------------------------------------------------------
 * Schema shape check: the pre-scan and the direct walk below hard-code this
 * layout.
 */

static int decode_check_schema(avro_schema_t schema, char *errstr, size_t errstr_size) {
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

/* Builds wire index -> our value for one profile enum: every symbol must
 * be one we know (a new symbol needs code, not a guess). */
static int decode_map_symbols(avro_schema_t enm, const char *what, const char *const *names,
                              const int *values, size_t nnames, int *out, int *nout, char *errstr,
                              size_t errstr_size) {
    int n = avro_schema_enum_number_of_symbols(enm), i;

    if (n <= 0 || n > DECODE_SYMBOLS_MAX) {
        errstr_fmt(errstr, errstr_size, "schema: enum %s has %d symbols", what, n);
        return -1;
    }
    for (i = 0; i < n; i++) {
        const char *sym = avro_schema_enum_get(enm, i);
        size_t k;

        for (k = 0; k < nnames; k++)
            if (sym != NULL && strcmp(sym, names[k]) == 0) break;
        if (k == nnames) {
            errstr_fmt(errstr, errstr_size, "schema: enum %s has symbol %s, unknown to tierd", what,
                       sym != NULL ? sym : "(null)");
            return -1;
        }
        out[i] = values[k];
    }
    *nout = n;
    return 0;
}

static int decode_map_profile(decoder_t *d, char *errstr, size_t errstr_size) {
    static const int format_values[] = {
        POLICY_FORMAT_GROCERY, POLICY_FORMAT_CONVENIENCE,    POLICY_FORMAT_SUPERMARKET,
        POLICY_FORMAT_MALL,    POLICY_FORMAT_TOBACCO_LIQUOR, POLICY_FORMAT_HOSPITALITY,
        POLICY_FORMAT_OTHER,
    };
    static const char *const market_names[] = {"URBAN", "RURAL"};
    static const int market_values[] = {POLICY_MARKET_URBAN, POLICY_MARKET_RURAL};
    static const char *const grade_names[] = {"A", "B", "C", "D"};
    static const int grade_values[] = {POLICY_GRADE_A, POLICY_GRADE_B, POLICY_GRADE_C,
                                       POLICY_GRADE_D};
    const char *format_names[DECODE_NELEM(format_values)];
    int tmp[DECODE_SYMBOLS_MAX], i;
    avro_schema_t s = d->profile.schema;

    for (i = 0; i < (int)DECODE_NELEM(format_values); i++)
        format_names[i] = policy_format_name((policy_format_t)format_values[i]);

    if (decode_map_symbols(avro_schema_record_field_get_by_index(s, CP_FORMAT), "RetailFormat",
                           format_names, format_values, DECODE_NELEM(format_values), tmp,
                           &d->nformats, errstr, errstr_size) != 0)
        return -1;
    for (i = 0; i < d->nformats; i++) d->formats[i] = (policy_format_t)tmp[i];

    if (decode_map_symbols(avro_schema_record_field_get_by_index(s, CP_MARKET), "Market",
                           market_names, market_values, DECODE_NELEM(market_values), tmp,
                           &d->nmarkets, errstr, errstr_size) != 0)
        return -1;
    for (i = 0; i < d->nmarkets; i++) d->markets[i] = (policy_market_t)tmp[i];

    if (decode_map_symbols(avro_schema_record_field_get_by_index(s, CP_GRADE), "ComplianceGrade",
                           grade_names, grade_values, DECODE_NELEM(grade_values), tmp, &d->ngrades,
                           errstr, errstr_size) != 0)
        return -1;
    for (i = 0; i < d->ngrades; i++) d->grades[i] = (policy_grade_t)tmp[i];
    return 0;
}

/* The profile pre-scan and profile_copy() hard-code this layout, and the
 * enums are read through the tables built here. */
static int decode_check_profile(decoder_t *d, char *errstr, size_t errstr_size) {
    if (avroscan_check_record(d->profile.schema, "CustomerProfile", cp_fields, CP__COUNT,
                              "the profile decoder", errstr, errstr_size) != 0)
        return -1;
    return decode_map_profile(d, errstr, errstr_size);
}

/* -------------------------------------------------------------------------
 * Life cycle.
 */

decoder_t *decode_new(char *errstr, size_t errstr_size) {
    decoder_t *d = NULL; /* owned here until returned */
    decoder_t *ret = NULL;

    d = calloc(1, sizeof(*d));
    if (d == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory creating the order decoder");
        goto out;
    }
    d->last_schema_id = -1;

    if (codec_record_parse(&d->order, tierd_schema_order, "Order", errstr, errstr_size) != 0 ||
        decode_check_schema(d->order.schema, errstr, errstr_size) != 0)
        goto out;
    if (codec_record_parse(&d->profile, tierd_schema_customer_profile, "CustomerProfile", errstr,
                           errstr_size) != 0 ||
        decode_check_profile(d, errstr, errstr_size) != 0 ||
        codec_record_value(&d->profile, errstr, errstr_size) != 0)
        goto out;

    ret = d;
    d = NULL; /* now owned by the caller */
out:
    decode_destroy(d);
    return ret;
}

void decode_destroy(decoder_t *d) {
    if (d == NULL) return;
    schemacache_free(&d->profile_writers);
    schemacache_free(&d->order_writers);
    codec_record_free(&d->profile);
    codec_record_free(&d->order);
    free(d);
}

int decode_use_registry(decoder_t *d, schemacache_fetch_fn fetch, void *ctx, size_t cache_size,
                        char *errstr, size_t errstr_size) {
    if (schemacache_init(&d->order_writers, "Order", d->order.schema, tierd_schema_order,
                         cache_size, fetch, ctx, errstr, errstr_size) != 0 ||
        schemacache_init(&d->profile_writers, "CustomerProfile", d->profile.schema,
                         tierd_schema_customer_profile, cache_size, fetch, ctx, errstr,
                         errstr_size) != 0)
        return -1;
    d->registry = 1;
    return 0;
}

int64_t decode_last_schema_id(const decoder_t *d) {
    return d == NULL ? -1 : d->last_schema_id;
}

/* -------------------------------------------------------------------------
 * Pre-scan: walk the Order encoding without allocating anything.
 *
 * Invariant on success: [buf, end) holds exactly one Order whose every
 * string length fits in the bytes present, whose kind index is 0 or 1, whose
 * array blocks are consistent (negative counts carry a byte size that matches
 * the items) and hold *nlines <= ORDER_LINES_MAX items in total.  Either
 * path can then read it without failing half-way (libavro leaks when it
 * does), and the line buffer can be sized before the lines are read.
 */

static order_err_t scan_lines(avroscan_t *s, uint32_t *nlines) {
    uint64_t total = 0;

    for (;;) {
        int64_t count, size = -1;
        size_t at = avroscan_at(s);
        const uint8_t *items;
        int64_t i;

        if (avroscan_varint(s, "the lines block count", 64, &count) != 0) return ORDER_ERR_NOT_AVRO;
        if (count == 0) {
            *nlines = (uint32_t)total; /* <= ORDER_LINES_MAX */
            return ORDER_OK;
        }
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
                           "lines block at byte %zu claims %" PRId64 " bytes but %zu remain", at,
                           size, avroscan_left(s));
                return ORDER_ERR_NOT_AVRO;
            }
        }
        /* A count the remaining bytes cannot possibly hold is corruption,
         * not a big order: check that before the line limit. */
        if ((uint64_t)count > avroscan_left(s) / DECODE_LINE_MIN_BYTES) {
            errstr_fmt(s->errstr, s->errstr_size,
                       "lines block at byte %zu claims %" PRId64 " lines but only %zu bytes remain",
                       at, count, avroscan_left(s));
            return ORDER_ERR_NOT_AVRO;
        }
        total += (uint64_t)count; /* count <= buffer size: cannot wrap */
        if (total > ORDER_LINES_MAX) {
            errstr_fmt(s->errstr, s->errstr_size,
                       "the order has more than %d lines (at least %" PRIu64 ")", ORDER_LINES_MAX,
                       total);
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
                                  uint32_t *nlines, char *errstr, size_t errstr_size) {
    avroscan_t s = {start, payload, payload + len, errstr, errstr_size, AVROSCAN_LONGER};
    int64_t v;
    size_t at;
    order_err_t err;

    if (avroscan_string(&s, "order_id") != 0 || avroscan_string(&s, "customer_id") != 0 ||
        avroscan_varint(&s, "placed_at", 64, &v) != 0)
        return ORDER_ERR_NOT_AVRO;

    at = avroscan_at(&s);
    if (avroscan_varint(&s, "kind", 64, &v) != 0) return ORDER_ERR_NOT_AVRO;
    if (v != ORDER_SALE && v != ORDER_RETURN) {
        errstr_fmt(errstr, errstr_size,
                   "kind at byte %zu is enum index %" PRId64 "; only 0 (SALE) and 1 (RETURN) "
                   "exist",
                   at, v);
        return ORDER_ERR_NOT_AVRO;
    }

    err = scan_lines(&s, nlines);
    if (err != ORDER_OK) return err;

    if (avroscan_string(&s, "currency") != 0 || avroscan_end(&s, "Order") != 0)
        return ORDER_ERR_NOT_AVRO;
    return ORDER_OK;
}

/* -------------------------------------------------------------------------
 * Filling the order: shared by both paths, so their results and their words
 * cannot differ.
 */

/* Stores len bytes into a fixed, NUL-terminated field of cap bytes (plus
 * the NUL).  Too long is refused, never truncated: a truncated id would
 * silently merge two customers.  Returns 1 then, dst untouched. */
static int decode_store_str(char *dst, size_t cap, const void *src, size_t len) {
    if (len > cap) return 1;
    if (len > 0) memcpy(dst, src, len);
    dst[len] = '\0';
    return 0;
}

/* The refusal of a string too long for its field.  `line` is 0-based. */
static order_err_t decode_too_long(int field, size_t line, size_t len, char *errstr,
                                   size_t errstr_size) {
    switch (field) {
    case F_ORDER_ID:
        errstr_fmt(errstr, errstr_size, "order_id is %zu bytes; at most %d are allowed", len,
                   ORDER_ID_MAX);
        return ORDER_ERR_BAD_ID;
    case F_CUSTOMER_ID:
        errstr_fmt(errstr, errstr_size, "customer_id is %zu bytes; at most %d are allowed", len,
                   ORDER_ID_MAX);
        return ORDER_ERR_BAD_ID;
    case F_LINES:
        errstr_fmt(errstr, errstr_size, "line %zu: sku is %zu bytes; at most %d are allowed",
                   line + 1, len, ORDER_SKU_MAX);
        return ORDER_ERR_BAD_SKU;
    default:
        /* Longer than any ISO 4217 code, so it cannot be the configured one. */
        errstr_fmt(errstr, errstr_size, "currency is %zu bytes; an ISO 4217 code has %d letters",
                   len, ORDER_CURRENCY_MAX);
        return ORDER_ERR_BAD_CURRENCY;
    }
}

/* Room for n <= ORDER_LINES_MAX lines (the pre-scan saw to the bound). */
static order_err_t decode_grow_lines(order_t *o, size_t n, char *errstr, size_t errstr_size) {
    size_t cap = o->lines_cap > 0 ? o->lines_cap : 16;
    size_t bytes;
    order_line_t *lines;

    if (n <= o->lines_cap) return ORDER_OK;
    while (cap < n) cap *= 2;
    if (cap > ORDER_LINES_MAX) cap = ORDER_LINES_MAX;
    if (__builtin_mul_overflow(cap, sizeof(*lines), &bytes) ||
        (lines = realloc(o->lines, bytes)) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory for %zu order lines", n);
        return ORDER_ERR_INTERNAL;
    }
    o->lines = lines;
    o->lines_cap = (uint32_t)cap;
    return ORDER_OK;
}

/* -------------------------------------------------------------------------
 * The direct path: a second walk over the bytes the pre-scan accepted.
 *
 * It reads exactly what the pre-scan read, in the same order, so it has no
 * malformed input of its own to judge.  It still checks every bound: a
 * failed check means the two walks disagree (a bug), answered with
 * ORDER_ERR_INTERNAL, never with a read past the end.  It fills the fields
 * in the order decode_copy() does and stops at the same too-long string, so
 * a refused order is left in the same partial state on both paths.
 */

typedef struct direct {
    const uint8_t *p; /* next byte */
    const uint8_t *end;
} direct_t;

/* A zigzag long of at most 10 bytes, the tenth 0 or 1, as the pre-scan
 * allows (decode_fast relies on refusing what it refuses). */
static inline int direct_long(direct_t *w, int64_t *out) {
    uint64_t v = 0;
    unsigned shift;

    if (w->p != w->end && *w->p < 0x80) { /* one byte: lengths, counts, small numbers */
        v = *w->p++;
        *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
        return 0;
    }
    for (shift = 0; shift < 64; shift += 7) {
        uint8_t b;

        if (w->p == w->end) return -1;
        b = *w->p++;
        if (shift == 63 && b > 1) return -1;
        v |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
            return 0;
        }
    }
    return -1;
}

/* A string's bytes, left in place: *s points into the record. */
static inline int direct_string(direct_t *w, const uint8_t **s, size_t *len) {
    int64_t n;

    if (direct_long(w, &n) != 0 || n < 0 || (uint64_t)n > (size_t)(w->end - w->p)) return -1;
    *s = w->p;
    *len = (size_t)n;
    w->p += n;
    return 0;
}

/* Fills o from [payload, payload + len), which decode_prescan() accepted
 * with nlines lines.  start is the whole Kafka value, for the offset. */
static order_err_t decode_direct(const uint8_t *start, const uint8_t *payload, size_t len,
                                 uint32_t nlines, order_t *o, char *errstr, size_t errstr_size) {
    direct_t w = {payload, payload + len};
    const uint8_t *s;
    size_t n, i = 0;
    int64_t kind, count, size;
    order_err_t err;

    if (direct_string(&w, &s, &n) != 0) goto disagree;
    if (decode_store_str(o->order_id, ORDER_ID_MAX, s, n) != 0)
        return decode_too_long(F_ORDER_ID, 0, n, errstr, errstr_size);
    o->order_id_len = (uint8_t)n;

    if (direct_string(&w, &s, &n) != 0) goto disagree;
    if (decode_store_str(o->customer_id, ORDER_ID_MAX, s, n) != 0)
        return decode_too_long(F_CUSTOMER_ID, 0, n, errstr, errstr_size);
    o->customer_id_len = (uint8_t)n;

    if (direct_long(&w, &o->placed_at_ms) != 0 || direct_long(&w, &kind) != 0) goto disagree;
    o->kind = kind == ORDER_RETURN ? ORDER_RETURN : ORDER_SALE; /* pre-scan: 0 or 1 */

    err = decode_grow_lines(o, nlines, errstr, errstr_size);
    if (err != ORDER_OK) return err;
    for (;;) {
        if (direct_long(&w, &count) != 0) goto disagree;
        if (count == 0) break;
        if (count < 0) {
            /* The block's byte size follows; the pre-scan checked it. */
            if (count == INT64_MIN || direct_long(&w, &size) != 0) goto disagree;
            count = -count;
        }
        if ((uint64_t)count > nlines - i) goto disagree;
        for (; count > 0; count--, i++) {
            order_line_t *l = &o->lines[i];

            if (direct_string(&w, &s, &n) != 0) goto disagree;
            if (decode_store_str(l->sku, ORDER_SKU_MAX, s, n) != 0)
                return decode_too_long(F_LINES, i, n, errstr, errstr_size);
            l->sku_len = (uint8_t)n;
            if (direct_long(&w, &l->quantity) != 0 || direct_long(&w, &l->unit_price) != 0)
                goto disagree;
            o->nlines = (uint32_t)(i + 1); /* only complete lines are counted */
        }
    }
    if (i != nlines) goto disagree;

    if (direct_string(&w, &s, &n) != 0) goto disagree;
    if (decode_store_str(o->currency, ORDER_CURRENCY_MAX, s, n) != 0)
        return decode_too_long(F_CURRENCY, 0, n, errstr, errstr_size);
    if (w.p != w.end) goto disagree;
    return ORDER_OK;

disagree:
    errstr_fmt(errstr, errstr_size,
               "the direct decoder and the pre-scan disagree at byte %zu of an Order",
               (size_t)(w.p - start));
    return ORDER_ERR_INTERNAL;
}

/* -------------------------------------------------------------------------
 * The one pass: a valid Order read once.
 *
 * Most records are valid, and for them the pre-scan's walk only confirms
 * what decode_direct() then reads again.  decode_fast() reads the record
 * once, filling o, and makes every check the pre-scan makes (it is at
 * least as strict: a 64-bit varint of at most 10 bytes, the tenth 0 or 1;
 * the kind 0 or 1; each string's length within the bytes left; a
 * negative block count's size within them and equal to its items' bytes;
 * a block's count within the bytes left at DECODE_LINE_MIN_BYTES a line;
 * at most ORDER_LINES_MAX lines; nothing after the currency), and also
 * gives up on a string too long for its field or more lines than o's
 * buffer holds (it allocates nothing: the two passes grow the buffer, by
 * what the pre-scan counted, and the next record finds it grown).
 * Giving up says nothing about the record: the caller then takes the
 * two-pass path, whose verdict and words are the record's, exactly as
 * before.  So a record it accepts is one the pre-scan accepts and
 * decode_direct() fills the same way; test_decode holds both to libavro.
 */

/* A string stored into a field of cap bytes; -1 when it does not fit. */
static inline int fast_string(direct_t *w, char *dst, size_t cap, size_t *len) {
    const uint8_t *s;

    return direct_string(w, &s, len) != 0 || decode_store_str(dst, cap, s, *len) != 0 ? -1 : 0;
}

/* One block of lines, count > 0 of them from line *i on (size: the
 * block's byte size, -1 when it gave none). */
static int fast_block(direct_t *w, int64_t count, int64_t size, order_t *o, size_t *i) {
    const uint8_t *items = w->p;
    size_t n;

    if ((uint64_t)count > (size_t)(w->end - w->p) / DECODE_LINE_MIN_BYTES ||
        (uint64_t)count > ORDER_LINES_MAX - *i || (uint64_t)count > o->lines_cap - *i)
        return -1;
    for (; count > 0; count--, (*i)++) {
        order_line_t *l = &o->lines[*i];

        if (fast_string(w, l->sku, ORDER_SKU_MAX, &n) != 0 || direct_long(w, &l->quantity) != 0 ||
            direct_long(w, &l->unit_price) != 0)
            return -1;
        l->sku_len = (uint8_t)n;
    }
    return size < 0 || (uint64_t)size == (size_t)(w->p - items) ? 0 : -1;
}

/* 0 with o filled, or -1: take the two-pass path. */
static int decode_fast(const uint8_t *payload, size_t len, order_t *o) {
    direct_t w = {payload, payload + len};
    size_t n, i = 0;
    int64_t kind, count, size;

    if (fast_string(&w, o->order_id, ORDER_ID_MAX, &n) != 0) return -1;
    o->order_id_len = (uint8_t)n;
    if (fast_string(&w, o->customer_id, ORDER_ID_MAX, &n) != 0) return -1;
    o->customer_id_len = (uint8_t)n;
    if (direct_long(&w, &o->placed_at_ms) != 0 || direct_long(&w, &kind) != 0 ||
        (kind != ORDER_SALE && kind != ORDER_RETURN))
        return -1;
    o->kind = (order_kind_t)kind;
    for (;;) {
        size = -1;
        if (direct_long(&w, &count) != 0) return -1;
        if (count == 0) break;
        if (count < 0) {
            if (count == INT64_MIN || direct_long(&w, &size) != 0 || size < 0 ||
                (uint64_t)size > (size_t)(w.end - w.p))
                return -1;
            count = -count;
        }
        if (fast_block(&w, count, size, o, &i) != 0) return -1;
    }
    o->nlines = (uint32_t)i;
    if (fast_string(&w, o->currency, ORDER_CURRENCY_MAX, &n) != 0) return -1;
    return w.p == w.end ? 0 : -1;
}

/* -------------------------------------------------------------------------
 * The libavro path (decode_order_libavro): copy out of the generic value.
 */

/* Copies an Avro string into a fixed field.  libavro's size counts the
 * terminating NUL.  Returns -1 when libavro fails, else decode_store_str's
 * answer. */
static int decode_copy_str(avro_value_t *v, char *dst, size_t cap, size_t *len_out) {
    const char *str = NULL;
    size_t size = 0;

    if (avro_value_get_string(v, &str, &size) != 0) return -1;
    *len_out = size > 0 ? size - 1 : 0;
    return decode_store_str(dst, cap, str, *len_out);
}

static int decode_get_long(avro_value_t *rec, int index, int64_t *out) {
    avro_value_t f;

    if (avro_value_get_by_index(rec, (size_t)index, &f, NULL) != 0) return -1;
    return avro_value_get_long(&f, out) != 0 ? -1 : 0;
}

/* Returns ORDER_OK, a field-length error, or ORDER_ERR_INTERNAL when libavro
 * disagrees with the pre-scan (a bug) or memory runs out. */
static order_err_t decode_copy(const schemacache_t *sc, const schemacache_entry_t *e,
                               avro_value_t *rec, order_t *o, char *errstr, size_t errstr_size) {
    avro_value_t f, lines, line;
    size_t len, n, i;
    int kind, rc;
    order_err_t err;

    if (avro_value_get_by_index(rec, F_ORDER_ID, &f, NULL) != 0 ||
        (rc = decode_copy_str(&f, o->order_id, ORDER_ID_MAX, &len)) < 0)
        goto libavro;
    if (rc > 0) return decode_too_long(F_ORDER_ID, 0, len, errstr, errstr_size);
    o->order_id_len = (uint8_t)len;

    if (avro_value_get_by_index(rec, F_CUSTOMER_ID, &f, NULL) != 0 ||
        (rc = decode_copy_str(&f, o->customer_id, ORDER_ID_MAX, &len)) < 0)
        goto libavro;
    if (rc > 0) return decode_too_long(F_CUSTOMER_ID, 0, len, errstr, errstr_size);
    o->customer_id_len = (uint8_t)len;

    if (decode_get_long(rec, F_PLACED_AT, &o->placed_at_ms) != 0) goto libavro;

    if (avro_value_get_by_index(rec, F_KIND, &f, NULL) != 0 || avro_value_get_enum(&f, &kind) != 0)
        goto libavro;
    /* Read by resolution, an enum holds the writer's index: by name. */
    if (e != NULL && (kind = schemacache_enum(sc, e, &f, "kind", errstr, errstr_size)) < 0)
        return ORDER_ERR_INCOMPATIBLE_SCHEMA;
    o->kind = kind == ORDER_RETURN ? ORDER_RETURN : ORDER_SALE; /* pre-scan: 0 or 1 */

    if (avro_value_get_by_index(rec, F_LINES, &lines, NULL) != 0 ||
        avro_value_get_size(&lines, &n) != 0)
        goto libavro;
    if (n > ORDER_LINES_MAX && e != NULL) {
        /* Read by resolution, only the writer's pre-scan bounded it. */
        errstr_fmt(errstr, errstr_size, "the order has more than %d lines (%zu)", ORDER_LINES_MAX,
                   n);
        return ORDER_ERR_TOO_MANY_LINES;
    }
    if (n > ORDER_LINES_MAX) {
        /* The pre-scan bounds it; libavro disagreeing is a bug. */
        errstr_fmt(errstr, errstr_size,
                   "libavro read %zu lines after the pre-scan allowed "
                   "at most %d",
                   n, ORDER_LINES_MAX);
        return ORDER_ERR_INTERNAL;
    }
    err = decode_grow_lines(o, n, errstr, errstr_size);
    if (err != ORDER_OK) return err;
    for (i = 0; i < n; i++) {
        order_line_t *l = &o->lines[i];

        if (avro_value_get_by_index(&lines, i, &line, NULL) != 0 ||
            avro_value_get_by_index(&line, L_SKU, &f, NULL) != 0 ||
            (rc = decode_copy_str(&f, l->sku, ORDER_SKU_MAX, &len)) < 0)
            goto libavro;
        if (rc > 0) return decode_too_long(F_LINES, i, len, errstr, errstr_size);
        l->sku_len = (uint8_t)len;
        if (decode_get_long(&line, L_QUANTITY, &l->quantity) != 0 ||
            decode_get_long(&line, L_UNIT_PRICE, &l->unit_price) != 0)
            goto libavro;
        o->nlines = (uint32_t)(i + 1); /* only complete lines are counted */
    }

    if (avro_value_get_by_index(rec, F_CURRENCY, &f, NULL) != 0 ||
        (rc = decode_copy_str(&f, o->currency, ORDER_CURRENCY_MAX, &len)) < 0)
        goto libavro;
    if (rc > 0) return decode_too_long(F_CURRENCY, 0, len, errstr, errstr_size);
    return ORDER_OK;

libavro:
    errstr_fmt(errstr, errstr_size, "libavro could not hand back a decoded field: %s",
               avro_strerror());
    return ORDER_ERR_INTERNAL;
}

/* -------------------------------------------------------------------------
 * Framing, for every record type this file decodes.
 */

/* A pre-scan of one record type: ORDER_OK when [payload, payload + len)
 * holds exactly one such record (start is the whole Kafka value, for the
 * offsets in messages; out is the scan's own result). */
typedef order_err_t (*decode_scan_fn)(const decoder_t *d, const uint8_t *start,
                                      const uint8_t *payload, size_t len, void *out, char *errstr,
                                      size_t errstr_size);

/*
 * Finds the record in a Kafka value of len > 0 bytes and pre-scans it.  A
 * plain record starts with the zigzag length of its first string (an id),
 * and a first byte of 0x00 means an empty id -- refused anyway.  So a
 * leading 0x00 with room for the 4-byte schema id is first read as the
 * Confluent wire format; when those bytes are not a record, the whole
 * value is tried as plain Avro, so a plain record with an empty id is
 * refused as EMPTY_ID (by validation), the reason a producer can act on.
 * There is no schema registry here, so the id is reported
 * (decode_last_schema_id), not checked: the pre-scan is what proves the
 * bytes are the record.  On ORDER_OK the record is [*payload_out,
 * *payload_out + *payload_len_out).
 */
static order_err_t decode_unframe(decoder_t *d, const uint8_t *start, size_t len,
                                  decode_scan_fn scan, void *scan_out, const uint8_t **payload_out,
                                  size_t *payload_len_out, char *errstr, size_t errstr_size) {
    const uint8_t *payload = start;
    size_t payload_len = len;
    order_err_t err;

    d->last_schema_id = codec_confluent_id(start, len);
    if (d->last_schema_id >= 0) {
        payload += CODEC_CONFLUENT_HEADER;
        payload_len -= CODEC_CONFLUENT_HEADER;
    }
    if (payload_len > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "record of %zu bytes is too large to decode", len);
        return ORDER_ERR_NOT_AVRO;
    }

    err = scan(d, start, payload, payload_len, scan_out, errstr, errstr_size);
    if (err != ORDER_OK && payload != start &&
        scan(d, start, start, len, scan_out, NULL, 0) == ORDER_OK) {
        d->last_schema_id = -1; /* plain Avro after all */
        payload = start;
        payload_len = len;
        err = ORDER_OK;
        if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    }
    *payload_out = payload;
    *payload_len_out = payload_len;
    return err;
}

/* -------------------------------------------------------------------------
 * Orders: entry points.
 */

static order_err_t scan_order(const decoder_t *d, const uint8_t *start, const uint8_t *payload,
                              size_t len, void *nlines, char *errstr, size_t errstr_size) {
    (void)d;
    return decode_prescan(start, payload, len, nlines, errstr, errstr_size);
}

/* A clean order, its line buffer kept for reuse. */
static void decode_clear(order_t *out) {
    order_line_t *keep_lines = out->lines;
    uint32_t keep_cap = out->lines_cap;
    memset(out, 0, sizeof(*out));
    out->lines = keep_lines;
    out->lines_cap = keep_cap;
}

/* What both paths do before reading any field: clear *out (keeping its line
 * buffer), recognise the framing and pre-scan.  On ORDER_OK the Order is
 * [*payload, *payload + *payload_len) with *nlines lines. */
static order_err_t decode_frame(decoder_t *d, const void *buf, size_t len, order_t *out,
                                const uint8_t **payload_out, size_t *payload_len_out,
                                uint32_t *nlines, char *errstr, size_t errstr_size) {
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    if (d == NULL || out == NULL) {
        errstr_fmt(errstr, errstr_size, "decode_order called without a decoder or an order");
        return ORDER_ERR_INTERNAL;
    }
    d->last_schema_id = -1;
    decode_clear(out);

    if (buf == NULL || len == 0) {
        errstr_fmt(errstr, errstr_size, "empty record value; an Order is never empty");
        return ORDER_ERR_NOT_AVRO;
    }
    return decode_unframe(d, buf, len, scan_order, nlines, payload_out, payload_len_out, errstr,
                          errstr_size);
}

/* The writer schema's verdict for a framed record, registry in use: NULL
 * when the registry did not answer (errstr says so; not the record's
 * fault), else the entry, whose kind the caller acts on; UNKNOWN and
 * INCOMPATIBLE have their reason copied into errstr. */
static schemacache_entry_t *decode_writer(decoder_t *d, schemacache_t *sc, const void *buf,
                                          size_t len, char *errstr, size_t errstr_size) {
    schemacache_entry_t *e;

    d->last_schema_id = codec_confluent_id(buf, len);
    e = schemacache_get(sc, d->last_schema_id, errstr, errstr_size);
    if (e != NULL && (e->kind == SCHEMACACHE_UNKNOWN || e->kind == SCHEMACACHE_INCOMPATIBLE))
        errstr_fmt(errstr, errstr_size, "%s", e->reason);
    return e;
}

/* An Order framed with a schema id, a registry in use: the direct path
 * when the writer is tierd's own schema, else Avro schema resolution. */
static order_err_t decode_order_registry(decoder_t *d, const uint8_t *buf, size_t len, order_t *out,
                                         char *errstr, size_t errstr_size) {
    const uint8_t *payload = buf + CODEC_CONFLUENT_HEADER;
    size_t payload_len = len - CODEC_CONFLUENT_HEADER;
    uint32_t nlines = 0;
    schemacache_entry_t *e;
    order_err_t err;

    if ((e = decode_writer(d, &d->order_writers, buf, len, errstr, errstr_size)) == NULL)
        return ORDER_ERR_INTERNAL;
    switch (e->kind) {
    case SCHEMACACHE_OWN:
        if (decode_fast(payload, payload_len, out) == 0) return ORDER_OK;
        decode_clear(out);
        err = decode_prescan(buf, payload, payload_len, &nlines, errstr, errstr_size);
        if (err != ORDER_OK) return err;
        return decode_direct(buf, payload, payload_len, nlines, out, errstr, errstr_size);
    case SCHEMACACHE_RESOLVED:
        if (codec_resolved_read(&e->res, payload, payload_len, errstr, errstr_size) != 0)
            return ORDER_ERR_NOT_AVRO;
        return decode_copy(&d->order_writers, e, &e->res.value, out, errstr, errstr_size);
    case SCHEMACACHE_UNKNOWN: return ORDER_ERR_UNKNOWN_SCHEMA;
    default: return ORDER_ERR_INCOMPATIBLE_SCHEMA;
    }
}

order_err_t decode_order(decoder_t *d, const void *buf, size_t len, order_t *out, char *errstr,
                         size_t errstr_size) {
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    uint32_t nlines = 0;
    order_err_t err;

    if (d != NULL && d->registry && out != NULL && codec_confluent_id(buf, len) >= 0) {
        decode_frame(d, NULL, 0, out, &payload, &payload_len, &nlines, NULL, 0); /* clears out */
        if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
        return decode_order_registry(d, buf, len, out, errstr, errstr_size);
    }
    if (d != NULL && out != NULL && buf != NULL && len > 0) {
        /* A framed record whose payload is an Order is read as framed,
         * as decode_unframe() would; anything else takes the two passes. */
        int64_t id = codec_confluent_id(buf, len);
        size_t skip = id >= 0 ? CODEC_CONFLUENT_HEADER : 0;
        decode_clear(out);
        if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
        if (decode_fast((const uint8_t *)buf + skip, len - skip, out) == 0) {
            d->last_schema_id = id;
            return ORDER_OK;
        }
    }
    err = decode_frame(d, buf, len, out, &payload, &payload_len, &nlines, errstr, errstr_size);
    if (err != ORDER_OK) return err;
    return decode_direct(buf, payload, payload_len, nlines, out, errstr, errstr_size);
}

order_err_t decode_order_libavro(decoder_t *d, const void *buf, size_t len, order_t *out,
                                 char *errstr, size_t errstr_size) {
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    uint32_t nlines = 0;
    order_err_t err;
    int rc;

    err = decode_frame(d, buf, len, out, &payload, &payload_len, &nlines, errstr, errstr_size);
    if (err != ORDER_OK) return err;
    if (codec_record_value(&d->order, errstr, errstr_size) != 0) return ORDER_ERR_INTERNAL;
    rc = codec_read(&d->order, payload, payload_len, errstr, errstr_size);
    if (rc != 0) /* after a clean pre-scan only a failed allocation gets here */
        return rc == ENOMEM ? ORDER_ERR_INTERNAL : ORDER_ERR_NOT_AVRO;
    return decode_copy(NULL, NULL, &d->order.value, out, errstr, errstr_size);
}

/* -------------------------------------------------------------------------
 * CustomerProfile pre-scan: walk the encoding without allocating.
 *
 * Invariant on success: [p, end) holds exactly one CustomerProfile whose
 * customer_id length fits in the bytes present, whose enum indexes name
 * existing symbols, whose boolean is 0 or 1, whose union index is 0 or 1
 * and whose int and longs are canonical-length varints.
 */

static int profile_prescan(const decoder_t *d, const uint8_t *start, const uint8_t *payload,
                           size_t len, char *errstr, size_t errstr_size) {
    avroscan_t s = {start, payload, payload + len, errstr, errstr_size, AVROSCAN_WIDER};
    int64_t v;
    int branch;

    if (avroscan_string(&s, "customer_id") != 0 ||
        avroscan_index(&s, "format", 32, d->nformats) < 0 ||
        avroscan_index(&s, "market", 32, d->nmarkets) < 0 || avroscan_boolean(&s, "chain") != 0 ||
        avroscan_index(&s, "compliance_grade", 32, d->ngrades) < 0 ||
        avroscan_bytes(&s, "cooperation", 8) != 0 || avroscan_bytes(&s, "growth", 8) != 0)
        return -1;
    branch = avroscan_index(&s, "the tier_override union", 64, 2);
    if (branch < 0 || (branch == 1 && avroscan_varint(&s, "tier_override", 32, &v) != 0) ||
        avroscan_varint(&s, "updated_at", 64, &v) != 0)
        return -1;
    return avroscan_end(&s, "CustomerProfile");
}

static order_err_t scan_profile(const decoder_t *d, const uint8_t *start, const uint8_t *payload,
                                size_t len, void *unused, char *errstr, size_t errstr_size) {
    (void)unused;
    return profile_prescan(d, start, payload, len, errstr, errstr_size) == 0 ? ORDER_OK
                                                                             : ORDER_ERR_NOT_AVRO;
}

/* -------------------------------------------------------------------------
 * CustomerProfile: copy out of the libavro value and judge it.
 */

static int get_field(avro_value_t *rec, size_t index, avro_value_t *f) {
    return avro_value_get_by_index(rec, index, f, NULL);
}

/* A ratio the account manager typed: finite and in [0, 1]. */
static order_err_t profile_ratio(const char *what, double x, char *errstr, size_t errstr_size) {
    if (!isfinite(x) || x < 0.0 || x > 1.0) {
        errstr_fmt(errstr, errstr_size, "%s is %g; it must be between 0.0 and 1.0", what, x);
        return ORDER_ERR_BAD_FIELD;
    }
    return ORDER_OK;
}

/* Read by resolution, a profile enum holds the writer's index: the
 * reader's, by name or the enum's default. */
static order_err_t profile_enums(const decoder_t *d, const schemacache_entry_t *e,
                                 avro_value_t *rec, int *format, int *market, int *grade,
                                 char *errstr, size_t errstr_size) {
    const struct {
        int index;
        const char *name;
        int *out;
    } en[] = {{CP_FORMAT, "format", format},
              {CP_MARKET, "market", market},
              {CP_GRADE, "compliance_grade", grade}};
    avro_value_t f;

    for (size_t i = 0; i < DECODE_NELEM(en); i++) {
        if (get_field(rec, (size_t)en[i].index, &f) != 0) return ORDER_ERR_INTERNAL;
        *en[i].out = schemacache_enum(&d->profile_writers, e, &f, en[i].name, errstr, errstr_size);
        if (*en[i].out < 0) return ORDER_ERR_INCOMPATIBLE_SCHEMA;
    }
    return ORDER_OK;
}

static order_err_t profile_copy(const decoder_t *d, const schemacache_entry_t *e, avro_value_t *rec,
                                const void *key, size_t key_len, char customer_id[ORDER_ID_MAX + 1],
                                policy_profile_t *out, int64_t *updated_at_ms, char *errstr,
                                size_t errstr_size) {
    policy_profile_t p;
    avro_value_t f, b;
    const char *str = NULL;
    size_t size = 0, n;
    int format, market, grade, chain, disc;
    int32_t override = 0;
    int64_t updated;
    order_err_t err;

    memset(&p, 0, sizeof(p));
    if (get_field(rec, CP_CUSTOMER_ID, &f) != 0 || avro_value_get_string(&f, &str, &size) != 0)
        goto libavro;
    n = size > 0 ? size - 1 : 0; /* libavro counts the NUL */
    /* The same rules as an order's customer_id: it becomes a Redis key. */
    if ((err = validate_id("customer_id", str, n, errstr, errstr_size)) != ORDER_OK) return err;
    memcpy(customer_id, str, n);
    customer_id[n] = '\0';
    if (key != NULL && key_len > 0 && !utf8_valid(key, key_len)) {
        errstr_fmt(errstr, errstr_size,
                   "record key (%zu bytes) is not valid UTF-8 at byte %zu; keys must be the "
                   "customer_id",
                   key_len, utf8_invalid_at(key, key_len) + 1);
        return ORDER_ERR_BAD_UTF8;
    }
    if (key != NULL && key_len > 0 && (key_len != n || memcmp(key, str, n) != 0)) {
        errstr_fmt(errstr, errstr_size, "record key (%zu bytes) is not the customer_id %s", key_len,
                   customer_id);
        return ORDER_ERR_KEY_MISMATCH;
    }

    if (get_field(rec, CP_FORMAT, &f) != 0 || avro_value_get_enum(&f, &format) != 0 ||
        get_field(rec, CP_MARKET, &f) != 0 || avro_value_get_enum(&f, &market) != 0 ||
        get_field(rec, CP_CHAIN, &f) != 0 || avro_value_get_boolean(&f, &chain) != 0 ||
        get_field(rec, CP_GRADE, &f) != 0 || avro_value_get_enum(&f, &grade) != 0 ||
        get_field(rec, CP_COOPERATION, &f) != 0 || avro_value_get_double(&f, &p.cooperation) != 0 ||
        get_field(rec, CP_GROWTH, &f) != 0 || avro_value_get_double(&f, &p.growth) != 0 ||
        get_field(rec, CP_TIER_OVERRIDE, &f) != 0 || avro_value_get_discriminant(&f, &disc) != 0 ||
        avro_value_get_current_branch(&f, &b) != 0 ||
        (disc == 1 && avro_value_get_int(&b, &override) != 0) ||
        get_field(rec, CP_UPDATED_AT, &f) != 0 || avro_value_get_long(&f, &updated) != 0)
        goto libavro;
    if (e != NULL &&
        (err = profile_enums(d, e, rec, &format, &market, &grade, errstr, errstr_size)) != ORDER_OK)
        return err;
    if (format < 0 || format >= d->nformats || market < 0 || market >= d->nmarkets || grade < 0 ||
        grade >= d->ngrades || disc < 0 || disc > 1) {
        errstr_fmt(errstr, errstr_size,
                   "libavro read an enum or union index the pre-scan "
                   "refused");
        return ORDER_ERR_INTERNAL;
    }

    if ((err = profile_ratio("cooperation", p.cooperation, errstr, errstr_size)) != ORDER_OK ||
        (err = profile_ratio("growth", p.growth, errstr, errstr_size)) != ORDER_OK)
        return err;
    if (disc == 1 && (override < 1 || override > POLICY_TIERS_MAX)) {
        errstr_fmt(errstr, errstr_size, "tier_override is %" PRId32 "; it must be null or 1 to %d",
                   override, POLICY_TIERS_MAX);
        return ORDER_ERR_BAD_FIELD;
    }

    p.format = d->formats[format];
    p.market = d->markets[market];
    p.chain = chain != 0;
    p.grade = d->grades[grade];
    p.has_override = disc == 1;
    p.tier_override = disc == 1 ? override : 0;
    *out = p;
    if (updated_at_ms != NULL) *updated_at_ms = updated;
    return ORDER_OK;

libavro:
    errstr_fmt(errstr, errstr_size, "libavro could not hand back a decoded field: %s",
               avro_strerror());
    return ORDER_ERR_INTERNAL;
}

order_err_t decode_profile(decoder_t *d, const void *buf, size_t len, const void *key,
                           size_t key_len, char customer_id[ORDER_ID_MAX + 1],
                           policy_profile_t *out, int64_t *updated_at_ms, char *errstr,
                           size_t errstr_size) {
    const uint8_t *payload = NULL;
    size_t payload_len = 0;
    order_err_t err;
    int rc;

    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    if (d == NULL || customer_id == NULL || out == NULL) {
        errstr_fmt(errstr, errstr_size,
                   "decode_profile called without a decoder, an id buffer or a profile");
        return ORDER_ERR_INTERNAL;
    }
    customer_id[0] = '\0';
    if (buf == NULL || len == 0) {
        errstr_fmt(errstr, errstr_size,
                   "empty record value; a CustomerProfile is never empty "
                   "(tombstones are handled before decoding)");
        return ORDER_ERR_NOT_AVRO;
    }
    if (d->registry && codec_confluent_id(buf, len) >= 0) {
        schemacache_entry_t *e =
            decode_writer(d, &d->profile_writers, buf, len, errstr, errstr_size);

        if (e == NULL) return ORDER_ERR_INTERNAL;
        if (e->kind == SCHEMACACHE_UNKNOWN) return ORDER_ERR_UNKNOWN_SCHEMA;
        if (e->kind == SCHEMACACHE_INCOMPATIBLE) return ORDER_ERR_INCOMPATIBLE_SCHEMA;
        payload = (const uint8_t *)buf + CODEC_CONFLUENT_HEADER;
        payload_len = len - CODEC_CONFLUENT_HEADER;
        if (e->kind == SCHEMACACHE_RESOLVED) {
            if (codec_resolved_read(&e->res, payload, payload_len, errstr, errstr_size) != 0)
                return ORDER_ERR_NOT_AVRO;
            return profile_copy(d, e, &e->res.value, key, key_len, customer_id, out, updated_at_ms,
                                errstr, errstr_size);
        }
        err = scan_profile(d, buf, payload, payload_len, NULL, errstr, errstr_size);
    } else {
        err = decode_unframe(d, buf, len, scan_profile, NULL, &payload, &payload_len, errstr,
                             errstr_size);
    }
    if (err != ORDER_OK) return err;
    rc = codec_read(&d->profile, payload, payload_len, errstr, errstr_size);
    if (rc != 0) /* after a clean pre-scan only a failed allocation gets here */
        return rc == ENOMEM ? ORDER_ERR_INTERNAL : ORDER_ERR_NOT_AVRO;
    return profile_copy(d, NULL, &d->profile.value, key, key_len, customer_id, out, updated_at_ms,
                        errstr, errstr_size);
}
