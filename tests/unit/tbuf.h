/*
 * tbuf.h -- byte buffers the unit tests append avro-c encodings to.
 *
 * The decoder tests build malformed records by splicing encodings of
 * single values (a record is the concatenation of its fields), so these
 * helpers are shared by test_decode.c and test_events.c.  Failures are
 * cmocka assertions.
 */
#ifndef TIERD_TEST_TBUF_H
#define TIERD_TEST_TBUF_H

#include <stddef.h>
#include <stdint.h>

#include <avro.h>

/* Room for any record the tests build, up to a few thousand order lines. */
#define TB_CAP (64 * 1024)

typedef struct tbuf {
    uint8_t *b; /* owned, TB_CAP bytes */
    size_t n;   /* bytes appended so far */
} tbuf_t;

tbuf_t tb_new(void);
void tb_free(tbuf_t *t);

/* Appends the avro-c binary encoding of value v. */
void tb_value(tbuf_t *t, avro_value_t *v);
void tb_long(tbuf_t *t, int64_t x);
void tb_double(tbuf_t *t, double x);
/* len bytes of s, which may hold NULs. */
void tb_string(tbuf_t *t, const char *s, size_t len);
void tb_raw(tbuf_t *t, const void *p, size_t len);
/* The Confluent wire-format header: 0x00, then the schema id big-endian. */
void tb_confluent(tbuf_t *t, uint32_t schema_id);

#endif
