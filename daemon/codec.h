/*
 * codec.h -- the libavro side of tierd's Avro, written once for every
 * record type tierd reads or writes: the parsed schema, its value class,
 * one reusable value and one memory reader, built once and reused for
 * every record (libavro's allocations stay out of the per-record path);
 * one record read from a buffer, one written into a buffer of exactly its
 * size; the Confluent wire-format header.
 *
 * Its users: decode.c (the Order and CustomerProfile records tierd
 * consumes), events.c (the TierChange and QuotaEvent records it publishes,
 * and reads back for tierctl).  What a record means, field by field, is
 * theirs; this file knows no schema.
 *
 * Must never be handed bytes nobody checked: libavro allocates whatever
 * length a string claims before it looks whether the bytes are there, and
 * accepts any enum or union index.  Bytes off the wire reach codec_read
 * only after an avroscan pre-scan accepted them (avroscan.h).
 *
 * Named codec, not avro: daemon/ is on the include path of the core and
 * of its in-tree users, where a daemon/avro.h would hide libavro's own
 * <avro.h>.
 */
#ifndef TIERD_CODEC_H
#define TIERD_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <avro.h>

/* One record type.  Start from a zeroed one; codec_record_free accepts a
 * zeroed or half-built one.  Not thread-safe: the value is reused. */
typedef struct codec_record {
    const char *what;          /* the record's name, for messages: "Order", "TierChange" */
    avro_schema_t schema;      /* owned */
    avro_value_iface_t *iface; /* owned; NULL until codec_record_value */
    avro_value_t value;        /* owned when live: the reusable value */
    bool live;
    avro_reader_t reader; /* owned; pointed at each record in turn */
} codec_record_t;

/* Parses the schema text json of the record named `what` (a string that
 * must outlive r).  0, or -1 with errstr. */
int codec_record_parse(codec_record_t *r, const char *json, const char *what, char *errstr,
                       size_t errstr_size);

/* Builds the value class, the reusable value and the reader, when they
 * are not built yet (so it may be called before every use).  0, or -1
 * with errstr (out of memory). */
int codec_record_value(codec_record_t *r, char *errstr, size_t errstr_size);

void codec_record_free(codec_record_t *r);

/* Reads exactly one record from [buf, buf + len) into r->value (reset
 * first).  0, or libavro's error code (ENOMEM when memory ran out) with
 * errstr.  codec_record_value must have succeeded. */
int codec_read(codec_record_t *r, const void *buf, size_t len, char *errstr, size_t errstr_size);

/* Serialises r->value into a malloc'd buffer of exactly its size: 0, *out
 * (the caller frees it) and *len set; or -1 with errstr, *out untouched. */
int codec_write(codec_record_t *r, char **out, size_t *len, char *errstr, size_t errstr_size);

/* A record read by Avro schema resolution: bytes written with the
 * `writer` schema are pre-scanned against it (avroscan_value), read into a
 * value of that schema, and `value` shows them as the `reader` schema
 * (libavro's resolved reader): fields matched by name, the writer's extra
 * fields skipped, int/long/float promoted.  libavro does not do all of the
 * specification: a reader field the writer lacks is refused at
 * codec_resolved_new even when it has a default, and an enum read through
 * `value` gives the WRITER's index, which codec_resolved_enum names.
 * Start from a zeroed one; codec_resolved_free accepts a zeroed or
 * half-built one.  Not thread-safe: the values are reused. */
typedef struct codec_resolved {
    const char *what;           /* the record's name, for messages */
    avro_schema_t writer;       /* owned reference */
    avro_schema_t reader;       /* owned reference */
    avro_value_iface_t *wiface; /* owned: the writer's generic class */
    avro_value_iface_t *riface; /* owned: the resolved reader class */
    avro_value_t wvalue;        /* owned when live: what the bytes are read into */
    avro_value_t value;         /* owned when live: wvalue as the reader schema */
    bool live;
    avro_reader_t in;         /* owned; pointed at each record in turn */
    avro_schema_t wenums[16]; /* the writer's named enums, borrowed from writer */
    size_t nwenums;
} codec_resolved_t;

/* Builds the resolution of writer into reader (taking a reference to
 * each).  0, or -1 with errstr naming what does not resolve. */
int codec_resolved_new(codec_resolved_t *r, avro_schema_t writer, avro_schema_t reader,
                       const char *what, char *errstr, size_t errstr_size);

/* Reads exactly one record from [buf, buf + len): pre-scanned first, so
 * bytes nobody checked are safe here.  0, or -1 with errstr. */
int codec_resolved_read(codec_resolved_t *r, const void *buf, size_t len, char *errstr,
                        size_t errstr_size);

/* What an enum read through r->value is. */
typedef enum codec_symbol {
    CODEC_SYMBOL_KNOWN,       /* a symbol of the reader's enum: *symbol */
    CODEC_SYMBOL_WRITER_ONLY, /* the writer's symbol *symbol, which the reader lacks */
    CODEC_SYMBOL_UNKNOWN,     /* an index past the writer's symbols: *symbol NULL */
} codec_symbol_t;

/* Names the enum v (a value of r->value, its schema the reader's enum).
 * *index is the index as written.  -1 when v is not an enum. */
int codec_resolved_enum(const codec_resolved_t *r, const avro_value_t *v, const char **symbol,
                        int *index, codec_symbol_t *kind);

void codec_resolved_free(codec_resolved_t *r);

/* The Confluent wire format: magic byte 0x00, a big-endian 4-byte schema
 * id, then the Avro binary. */
#define CODEC_CONFLUENT_HEADER 5

/* The schema id when buf starts as the Confluent wire format would (0x00
 * and room for the id), else -1.  Only a start: the bytes may still be
 * plain Avro that happens to begin with 0x00; the caller's pre-scan
 * decides (decode.c). */
int64_t codec_confluent_id(const void *buf, size_t len);

#endif
