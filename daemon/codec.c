/*
 * codec.c -- see codec.h.  Owns the libavro objects of each codec_record_t
 * it builds; the memory reader reads the caller's buffer in place.
 */
#include "codec.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int64_t codec_confluent_id(const void *buf, size_t len) {
    const uint8_t *b = buf;

    if (b == NULL || len < CODEC_CONFLUENT_HEADER || b[0] != 0x00) return -1;
    return (int64_t)(((uint32_t)b[1] << 24) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 8) |
                     (uint32_t)b[4]);
}
