/*
 * avroscan.c -- the bounded Avro scanner and the schema shape check; see
 * avroscan.h.
 *
 * Owns nothing.  Must never read outside [p, end), allocate, or call
 * libavro on the bytes: it runs before libavro precisely because libavro
 * cannot be trusted with them.  The messages land in dead-letter headers,
 * so their wording is kept stable.
 */
#include <inttypes.h>
#include <string.h>

#include "avroscan.h"

#include "errstr.h"

static int avroscan_truncated(avroscan_t *s, const char *what) {
    errstr_fmt(s->errstr, s->errstr_size, "truncated: the record ends at byte %zu inside %s",
               avroscan_at(s), what);
    return -1;
}

int avroscan_varint(avroscan_t *s, const char *what, int bits, int64_t *out) {
    if (s->p != s->end && *s->p < 0x80) { /* most are one byte: small numbers, lengths */
        uint64_t v = *s->p++;
        *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
        return 0;
    }
    const int nbytes = bits == 32 ? 5 : 10;
    const uint8_t last_max = bits == 32 ? 0x0f : 0x01;
    size_t at = avroscan_at(s);
    uint64_t v = 0;
    int i;

    for (i = 0; i < nbytes; i++) {
        uint8_t b;

        if (s->p == s->end) return avroscan_truncated(s, what);
        b = *s->p++;
        if (i == nbytes - 1 && b > last_max) break;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = (int64_t)((v >> 1) ^ (0 - (v & 1)));
            return 0;
        }
    }
    errstr_fmt(s->errstr, s->errstr_size, "%s at byte %zu is a varint %s than %d bits", what, at,
               s->wording == AVROSCAN_LONGER ? "longer" : "wider", bits);
    return -1;
}

int avroscan_string(avroscan_t *s, const char *what) {
    size_t at = avroscan_at(s);
    int64_t n;

    if (avroscan_varint(s, what, 64, &n) != 0) return -1;
    if (n < 0 || (uint64_t)n > avroscan_left(s)) {
        errstr_fmt(s->errstr, s->errstr_size,
                   "%s at byte %zu claims %" PRId64 " bytes but %zu remain", what, at, n,
                   avroscan_left(s));
        return -1;
    }
    s->p += n;
    return 0;
}

int avroscan_index(avroscan_t *s, const char *what, int bits, int count) {
    size_t at = avroscan_at(s);
    int64_t v;

    if (avroscan_varint(s, what, bits, &v) != 0) return -1;
    if (v < 0 || v >= count) {
        errstr_fmt(s->errstr, s->errstr_size,
                   "%s at byte %zu is index %" PRId64 "; only 0 to %d exist", what, at, v,
                   count - 1);
        return -1;
    }
    return (int)v;
}

int avroscan_bytes(avroscan_t *s, const char *what, size_t n) {
    if (avroscan_left(s) < n) return avroscan_truncated(s, what);
    s->p += n;
    return 0;
}

int avroscan_boolean(avroscan_t *s, const char *what) {
    if (s->p == s->end) return avroscan_truncated(s, what);
    if (*s->p > 1) {
        errstr_fmt(s->errstr, s->errstr_size, "%s at byte %zu is 0x%02x; a boolean is 0 or 1", what,
                   avroscan_at(s), (unsigned)*s->p);
        return -1;
    }
    s->p++;
    return 0;
}

int avroscan_end(avroscan_t *s, const char *record) {
    if (s->p == s->end) return 0;
    errstr_fmt(s->errstr, s->errstr_size, "%zu trailing bytes after the %s record ends at byte %zu",
               avroscan_left(s), record, avroscan_at(s));
    return -1;
}

/* The blocks of an array or map: a count (negative: its absolute value,
 * then the block's size in bytes), items, ..., a zero count. */
static int avroscan_blocks(avroscan_t *s, avro_schema_t items, bool map, const char *what,
                           int depth) {
    for (;;) {
        size_t at = avroscan_at(s);
        int64_t n, size;

        if (avroscan_varint(s, what, 64, &n) != 0) return -1;
        if (n == 0) return 0;
        if (n < 0) {
            if (avroscan_varint(s, what, 64, &size) != 0) return -1;
            n = n == INT64_MIN ? INT64_MAX : -n;
        }
        if ((uint64_t)n > avroscan_left(s)) {
            errstr_fmt(s->errstr, s->errstr_size,
                       "%s at byte %zu claims %" PRId64 " items but %zu bytes remain", what, at, n,
                       avroscan_left(s));
            return -1;
        }
        for (int64_t i = 0; i < n; i++)
            if ((map && avroscan_string(s, what) != 0) ||
                avroscan_value(s, items, what, depth + 1) != 0)
                return -1;
    }
}

int avroscan_value(avroscan_t *s, avro_schema_t sc, const char *what, int depth) {
    int64_t v;
    int i;

    if (depth > AVROSCAN_DEPTH_MAX) {
        errstr_fmt(s->errstr, s->errstr_size, "%s at byte %zu is nested deeper than %d levels",
                   what, avroscan_at(s), AVROSCAN_DEPTH_MAX);
        return -1;
    }
    switch (avro_typeof(sc)) {
    case AVRO_STRING:
    case AVRO_BYTES: return avroscan_string(s, what);
    case AVRO_INT32: return avroscan_varint(s, what, 32, &v);
    case AVRO_INT64: return avroscan_varint(s, what, 64, &v);
    case AVRO_FLOAT: return avroscan_bytes(s, what, 4);
    case AVRO_DOUBLE: return avroscan_bytes(s, what, 8);
    case AVRO_BOOLEAN: return avroscan_boolean(s, what);
    case AVRO_NULL: return 0;
    case AVRO_FIXED: return avroscan_bytes(s, what, (size_t)avro_schema_fixed_size(sc));
    case AVRO_ENUM: {
        size_t at = avroscan_at(s);
        if (avroscan_varint(s, what, 32, &v) != 0) return -1;
        if (v >= 0) return 0;
        errstr_fmt(s->errstr, s->errstr_size, "%s at byte %zu is enum index %" PRId64, what, at, v);
        return -1;
    }
    case AVRO_RECORD:
        for (i = 0; i < (int)avro_schema_record_size(sc); i++)
            if (avroscan_value(s, avro_schema_record_field_get_by_index(sc, i),
                               avro_schema_record_field_name(sc, i), depth + 1) != 0)
                return -1;
        return 0;
    case AVRO_UNION:
        i = avroscan_index(s, what, 32, (int)avro_schema_union_size(sc));
        if (i < 0) return -1;
        return avroscan_value(s, avro_schema_union_branch(sc, i), what, depth + 1);
    case AVRO_ARRAY: return avroscan_blocks(s, avro_schema_array_items(sc), false, what, depth);
    case AVRO_MAP: return avroscan_blocks(s, avro_schema_map_values(sc), true, what, depth);
    case AVRO_LINK: return avroscan_value(s, avro_schema_link_target(sc), what, depth + 1);
    }
    errstr_fmt(s->errstr, s->errstr_size, "%s has an Avro type this scanner does not know", what);
    return -1;
}

/* -------------------------------------------------------------------------
 * Schema shape.
 */

static const char *avroscan_type_name(avro_type_t t) {
    switch (t) {
    case AVRO_STRING: return "string";
    case AVRO_INT32: return "int";
    case AVRO_INT64: return "long";
    case AVRO_DOUBLE: return "double";
    case AVRO_BOOLEAN: return "boolean";
    case AVRO_ENUM: return "enum";
    case AVRO_ARRAY: return "array";
    default: return "other";
    }
}

static bool avroscan_type_is(avro_schema_t s, const avroscan_field_t *want) {
    avro_schema_t b0, b1;

    if (s == NULL) return false;
    if (!want->nullable) return avro_typeof(s) == want->type;
    if (avro_typeof(s) != AVRO_UNION || avro_schema_union_size(s) != 2) return false;
    b0 = avro_schema_union_branch(s, 0);
    b1 = avro_schema_union_branch(s, 1);
    return b0 != NULL && b1 != NULL && avro_typeof(b0) == AVRO_NULL &&
           avro_typeof(b1) == want->type;
}

int avroscan_check_record(avro_schema_t rec, const char *what, const avroscan_field_t *want,
                          size_t nwant, const char *walker, char *errstr, size_t errstr_size) {
    size_t i;

    if (rec == NULL || !is_avro_record(rec) || avro_schema_record_size(rec) != nwant) {
        errstr_fmt(errstr, errstr_size, "schema: %s must be a record of %zu fields", what, nwant);
        return -1;
    }
    for (i = 0; i < nwant; i++) {
        const char *name = avro_schema_record_field_name(rec, (int)i);

        if (name == NULL || strcmp(name, want[i].name) != 0 ||
            !avroscan_type_is(avro_schema_record_field_get_by_index(rec, (int)i), &want[i])) {
            errstr_fmt(errstr, errstr_size,
                       "schema: field %zu of %s must be \"%s\" (%s%s%s); %s was written for "
                       "that layout",
                       i, what, want[i].name, want[i].nullable ? "[\"null\", " : "",
                       avroscan_type_name(want[i].type), want[i].nullable ? "]" : "", walker);
            return -1;
        }
    }
    return 0;
}
