/*
 * codec.c -- see codec.h.  Owns the libavro objects of each codec_record_t
 * it builds; the memory reader reads the caller's buffer in place.
 */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "avroscan.h"
#include "errstr.h"

int codec_record_parse(codec_record_t *r, const char *json, const char *what, char *errstr,
                       size_t errstr_size) {
    r->what = what;
    if (avro_schema_from_json_length(json, strlen(json), &r->schema) != 0) {
        r->schema = NULL;
        errstr_fmt(errstr, errstr_size, "cannot parse the embedded %s schema: %s", what,
                   avro_strerror());
        return -1;
    }
    return 0;
}

int codec_record_value(codec_record_t *r, char *errstr, size_t errstr_size) {
    static const char empty[1] = "";

    if (r->iface == NULL) {
        r->iface = avro_generic_class_from_schema(r->schema);
        if (r->iface == NULL) {
            errstr_fmt(errstr, errstr_size, "cannot build a value class for the %s schema: %s",
                       r->what, avro_strerror());
            return -1;
        }
    }
    if (!r->live) {
        if (avro_generic_value_new(r->iface, &r->value) != 0) {
            errstr_fmt(errstr, errstr_size, "cannot allocate a %s value: %s", r->what,
                       avro_strerror());
            return -1;
        }
        r->live = true;
    }
    if (r->reader == NULL) {
        /* Pointed at each record by avro_reader_memory_set_source(). */
        r->reader = avro_reader_memory(empty, 0);
        if (r->reader == NULL) {
            errstr_fmt(errstr, errstr_size, "cannot allocate the Avro memory reader: %s",
                       avro_strerror());
            return -1;
        }
    }
    return 0;
}

void codec_record_free(codec_record_t *r) {
    if (r == NULL) return;
    if (r->reader != NULL) avro_reader_free(r->reader);
    if (r->live) avro_value_decref(&r->value);
    if (r->iface != NULL) avro_value_iface_decref(r->iface);
    if (r->schema != NULL) avro_schema_decref(r->schema);
    memset(r, 0, sizeof(*r));
}

int codec_read(codec_record_t *r, const void *buf, size_t len, char *errstr, size_t errstr_size) {
    int rc;

    if (len > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "record of %zu bytes is too large to decode", len);
        return EINVAL;
    }
    avro_value_reset(&r->value);
    avro_reader_memory_set_source(r->reader, (const char *)buf, (int64_t)len);
    rc = avro_value_read(r->reader, &r->value);
    if (rc != 0)
        errstr_fmt(errstr, errstr_size, "libavro cannot read the %s: %s", r->what, avro_strerror());
    return rc;
}

int codec_write(codec_record_t *r, char **out, size_t *len, char *errstr, size_t errstr_size) {
    avro_writer_t w = NULL; /* owned */
    char *buf = NULL;       /* owned until handed to *out */
    size_t size = 0;
    int ret = -1;

    if (avro_value_sizeof(&r->value, &size) != 0 || size == 0 || size > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "cannot size the %s record: %s", r->what, avro_strerror());
        goto out;
    }
    buf = malloc(size);
    if (buf == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory for a %zu-byte %s record", size, r->what);
        goto out;
    }
    w = avro_writer_memory(buf, (int64_t)size);
    if (w == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot allocate an Avro writer: %s", avro_strerror());
        goto out;
    }
    if (avro_value_write(w, &r->value) != 0 || avro_writer_tell(w) != (int64_t)size) {
        errstr_fmt(errstr, errstr_size, "cannot write the %s record: %s", r->what, avro_strerror());
        goto out;
    }
    *out = buf;
    *len = size;
    buf = NULL; /* now owned by the caller */
    ret = 0;
out:
    if (w != NULL) avro_writer_free(w);
    free(buf);
    return ret;
}

/* Collects the named enums of s (a writer schema) into r->wenums, so an
 * index read through the resolved reader can be named by the writer's
 * symbols.  Named types are walked once: a link is not followed. */
static void collect_enums(codec_resolved_t *r, avro_schema_t s, int depth) {
    size_t i;

    if (depth > AVROSCAN_DEPTH_MAX) return;
    switch (avro_typeof(s)) {
    case AVRO_ENUM:
        if (r->nwenums < sizeof(r->wenums) / sizeof(r->wenums[0])) r->wenums[r->nwenums++] = s;
        break;
    case AVRO_RECORD:
        for (i = 0; i < avro_schema_record_size(s); i++)
            collect_enums(r, avro_schema_record_field_get_by_index(s, (int)i), depth + 1);
        break;
    case AVRO_UNION:
        for (i = 0; i < avro_schema_union_size(s); i++)
            collect_enums(r, avro_schema_union_branch(s, (int)i), depth + 1);
        break;
    case AVRO_ARRAY: collect_enums(r, avro_schema_array_items(s), depth + 1); break;
    case AVRO_MAP: collect_enums(r, avro_schema_map_values(s), depth + 1); break;
    default: break;
    }
}

int codec_resolved_new(codec_resolved_t *r, avro_schema_t writer, avro_schema_t reader,
                       const char *what, char *errstr, size_t errstr_size) {
    static const char empty[1] = "";

    r->what = what;
    r->writer = avro_schema_incref(writer);
    r->reader = avro_schema_incref(reader);
    r->wiface = avro_generic_class_from_schema(writer);
    if (r->wiface == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot build a value class for the %s schema: %s", what,
                   avro_strerror());
        return -1;
    }
    r->riface = avro_resolved_reader_new(writer, reader);
    if (r->riface == NULL) {
        errstr_fmt(errstr, errstr_size, "the %s writer schema does not resolve to the reader's: %s",
                   what, avro_strerror());
        return -1;
    }
    if (avro_generic_value_new(r->wiface, &r->wvalue) != 0) {
        errstr_fmt(errstr, errstr_size, "cannot allocate a %s value: %s", what, avro_strerror());
        return -1;
    }
    if (avro_resolved_reader_new_value(r->riface, &r->value) != 0) {
        avro_value_decref(&r->wvalue);
        errstr_fmt(errstr, errstr_size, "cannot allocate a %s value: %s", what, avro_strerror());
        return -1;
    }
    r->live = true;
    avro_resolved_reader_set_source(&r->value, &r->wvalue);
    r->in = avro_reader_memory(empty, 0);
    if (r->in == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot allocate the Avro memory reader: %s",
                   avro_strerror());
        return -1;
    }
    collect_enums(r, writer, 0);
    return 0;
}

int codec_resolved_read(codec_resolved_t *r, const void *buf, size_t len, char *errstr,
                        size_t errstr_size) {
    avroscan_t s = {buf, buf, (const uint8_t *)buf + len, errstr, errstr_size, AVROSCAN_LONGER};

    if (len > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "record of %zu bytes is too large to decode", len);
        return -1;
    }
    if (avroscan_value(&s, r->writer, r->what, 0) != 0 || avroscan_end(&s, r->what) != 0) return -1;
    avro_value_reset(&r->wvalue);
    avro_reader_memory_set_source(r->in, (const char *)buf, (int64_t)len);
    if (avro_value_read(r->in, &r->wvalue) != 0) {
        errstr_fmt(errstr, errstr_size, "libavro cannot read the %s: %s", r->what, avro_strerror());
        return -1;
    }
    return 0;
}

int codec_resolved_enum(const codec_resolved_t *r, const avro_value_t *v, const char **symbol,
                        int *index, codec_symbol_t *kind) {
    avro_schema_t rs = avro_value_get_schema(v), ws = NULL;
    const char *name;

    if (rs == NULL || !is_avro_enum(rs) || avro_value_get_enum(v, index) != 0) return -1;
    name = avro_schema_name(rs);
    for (size_t i = 0; i < r->nwenums && !ws; i++)
        if (strcmp(avro_schema_name(r->wenums[i]), name) == 0) ws = r->wenums[i];
    /* libavro resolves enums by name only (same name, any symbols) */
    *symbol = ws && *index >= 0 && *index < avro_schema_enum_number_of_symbols(ws)
                  ? avro_schema_enum_get(ws, *index)
                  : NULL;
    if (*symbol == NULL)
        *kind = CODEC_SYMBOL_UNKNOWN;
    else if (avro_schema_enum_get_by_name(rs, *symbol) < 0)
        *kind = CODEC_SYMBOL_WRITER_ONLY;
    else
        *kind = CODEC_SYMBOL_KNOWN;
    return 0;
}

void codec_resolved_free(codec_resolved_t *r) {
    if (r == NULL) return;
    if (r->in != NULL) avro_reader_free(r->in);
    if (r->live) {
        avro_value_decref(&r->value);
        avro_value_decref(&r->wvalue);
    }
    if (r->riface != NULL) avro_value_iface_decref(r->riface);
    if (r->wiface != NULL) avro_value_iface_decref(r->wiface);
    if (r->reader != NULL) avro_schema_decref(r->reader);
    if (r->writer != NULL) avro_schema_decref(r->writer);
    memset(r, 0, sizeof(*r));
}

int64_t codec_confluent_id(const void *buf, size_t len) {
    const uint8_t *b = buf;

    if (b == NULL || len < CODEC_CONFLUENT_HEADER || b[0] != 0x00) return -1;
    return (int64_t)(((uint32_t)b[1] << 24) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 8) |
                     (uint32_t)b[4]);
}
