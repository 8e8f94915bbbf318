/*
 * avroscan.h -- walks Avro binary without allocating, and checks that a
 * parsed schema has the layout such a walk was written for.
 *
 * Private to the daemon.  libavro trusts what it reads: it allocates a
 * string's claimed length before checking the bytes are there (and leaks
 * it when they are not) and accepts any enum or union index.  So decode.c
 * pre-scans each record it consumes (orders, profiles) with an avroscan_t,
 * bounding every length, index and varint against the bytes actually
 * present, and only then lets libavro (codec.h) read it; events.c checks
 * its schemas' shape with avroscan_check_record().  A pre-scan mirrors one .avsc field by field;
 * avroscan_check_record() refuses, at start, a schema of another shape so
 * the two cannot drift apart silently.
 *
 * The scan functions return 0 (or the index read) on success, -1 with one
 * sentence in the scanner's errstr otherwise: the field's name and its
 * byte offset from the start of the Kafka value, framing included.
 */
#ifndef TIERD_AVROSCAN_H
#define TIERD_AVROSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <avro.h>

/* How a varint too wide for its type is worded.  The Order and the
 * CustomerProfile pre-scans were written apart and say it differently;
 * both texts are kept, as operators may match on dead-letter reasons. */
typedef enum avroscan_wording {
    AVROSCAN_WIDER,  /* "<what> at byte N is a varint wider than 32 bits" */
    AVROSCAN_LONGER, /* "<what> at byte N is a varint longer than 64 bits" */
} avroscan_wording_t;

typedef struct avroscan {
    const uint8_t *start; /* the whole Kafka value, for offsets in messages */
    const uint8_t *p;     /* next byte to read */
    const uint8_t *end;
    char *errstr; /* caller-owned; NULL: no message wanted */
    size_t errstr_size;
    avroscan_wording_t wording;
} avroscan_t;

/* Bytes not yet read. */
static inline size_t avroscan_left(const avroscan_t *s) {
    return (size_t)(s->end - s->p);
}
/* Offset of the next byte in the Kafka value, as messages report it. */
static inline size_t avroscan_at(const avroscan_t *s) {
    return (size_t)(s->p - s->start);
}

/* A zigzag varint of `bits` (32: Avro int, 64: long).  Its last possible
 * byte may carry only the bits that remain: more is an error, never a wrap. */
int avroscan_varint(avroscan_t *s, const char *what, int bits, int64_t *out);

/* A string or bytes: a long length, then that many bytes, all present. */
int avroscan_string(avroscan_t *s, const char *what);

/* An index into `count` choices (enum symbols, union branches), read as a
 * varint of `bits`.  Returns the index, or -1. */
int avroscan_index(avroscan_t *s, const char *what, int bits, int count);

/* n raw bytes (a double is 8). */
int avroscan_bytes(avroscan_t *s, const char *what, size_t n);

/* One byte, 0 or 1. */
int avroscan_boolean(avroscan_t *s, const char *what);

/* The record named `record` must end exactly at the end of the buffer. */
int avroscan_end(avroscan_t *s, const char *record);

/* One value of any schema, walked by the schema itself rather than by a
 * hand-written mirror: for readers of records whose schema they hold but
 * did not write a walker for (tierctl events).  Every length, count and
 * union index is bounded as above; an array or map may not claim more
 * items than bytes remain.  An enum index is only required to be >= 0:
 * a newer writer may have added symbols, and libavro stores any index
 * (the reader decides how to show one it does not know).  Nesting deeper
 * than AVROSCAN_DEPTH_MAX (a recursive schema) is refused. */
#define AVROSCAN_DEPTH_MAX 32
int avroscan_value(avroscan_t *s, avro_schema_t schema, const char *what, int depth);

/* One field a walker expects, in schema order. */
typedef struct avroscan_field {
    const char *name;
    avro_type_t type;
    bool nullable; /* ["null", type] */
} avroscan_field_t;

/* 0 when rec is a record of exactly nwant fields named and typed as in
 * want; -1 with errstr otherwise.  `what` names the record and `walker`
 * the code that depends on its layout, both for the message. */
int avroscan_check_record(avro_schema_t rec, const char *what, const avroscan_field_t *want,
                          size_t nwant, const char *walker, char *errstr, size_t errstr_size);

#endif
