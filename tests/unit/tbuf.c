/*
 * tbuf.c -- see tbuf.h.  Every encoding comes from avro-c itself, so a
 * mistake in our reading of the Avro spec cannot hide in a test encoder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tbuf.h"

tbuf_t tb_new(void) {
    tbuf_t t = {calloc(1, TB_CAP), 0};
    assert_non_null(t.b);
    return t;
}

void tb_free(tbuf_t *t) {
    free(t->b);
    t->b = NULL;
}

void tb_value(tbuf_t *t, avro_value_t *v) {
    avro_writer_t w = avro_writer_memory((const char *)t->b + t->n, (int64_t)(TB_CAP - t->n));
    assert_non_null(w);
    assert_int_equal(avro_value_write(w, v), 0);
    t->n += (size_t)avro_writer_tell(w);
    avro_writer_free(w);
}

void tb_long(tbuf_t *t, int64_t x) {
    avro_value_t v;
    assert_int_equal(avro_generic_long_new(&v, x), 0);
    tb_value(t, &v);
    avro_value_decref(&v);
}

void tb_double(tbuf_t *t, double x) {
    avro_value_t v;
    assert_int_equal(avro_generic_double_new(&v, x), 0);
    tb_value(t, &v);
    avro_value_decref(&v);
}

void tb_string(tbuf_t *t, const char *s, size_t len) {
    avro_value_t v;
    char *tmp = malloc(len + 1); /* avro-c wants the size with the NUL */
    assert_non_null(tmp);
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    assert_int_equal(avro_generic_string_new_length(&v, tmp, len + 1), 0);
    tb_value(t, &v);
    avro_value_decref(&v);
    free(tmp);
}

void tb_raw(tbuf_t *t, const void *p, size_t len) {
    assert_true(t->n + len <= TB_CAP);
    memcpy(t->b + t->n, p, len);
    t->n += len;
}

void tb_confluent(tbuf_t *t, uint32_t schema_id) {
    uint8_t h[5] = {0x00, (uint8_t)(schema_id >> 24), (uint8_t)(schema_id >> 16),
                    (uint8_t)(schema_id >> 8), (uint8_t)schema_id};
    tb_raw(t, h, sizeof(h));
}
