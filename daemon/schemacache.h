/*
 * schemacache.h -- writer schemas by schema id, each judged once against
 * one reader schema (tierd's Order, or its CustomerProfile) and kept in a
 * bounded cache, least recently used out first.
 *
 * Private to the daemon (decode.c is its user).  The verdict for an id is
 * one of: the writer IS the reader (same parsing canonical form: the
 * decoder's own fast path reads it), the writer resolves to the reader
 * (a codec_resolved_t, built once and reused for every record), the
 * registry does not know the id, or the writer does not resolve (with the
 * reason).  A registry that did not answer leaves nothing in the cache:
 * the next record asks again.
 *
 * Knows no HTTP: the writer schema's text comes from a fetch function
 * (registry_schema_by_id in the daemon, a table in the unit tests).
 */
#ifndef TIERD_SCHEMACACHE_H
#define TIERD_SCHEMACACHE_H

#include <stddef.h>
#include <stdint.h>

#include <avro.h>

#include "codec.h"

/* Fetches the writer schema of id: 0 and *json (malloc'd; the cache frees
 * it), 1 when the registry does not know the id, -1 when it did not
 * answer; errstr says why for 1 and -1. */
typedef int (*schemacache_fetch_fn)(void *ctx, int64_t id, char **json, char *errstr,
                                    size_t errstr_size);

typedef enum schemacache_kind {
    SCHEMACACHE_OWN,          /* the writer is the reader */
    SCHEMACACHE_RESOLVED,     /* read through res */
    SCHEMACACHE_UNKNOWN,      /* the registry does not know the id */
    SCHEMACACHE_INCOMPATIBLE, /* the writer does not resolve: reason */
} schemacache_kind_t;

typedef struct schemacache_entry {
    int64_t id; /* -1: a free slot */
    schemacache_kind_t kind;
    codec_resolved_t res; /* SCHEMACACHE_RESOLVED: owned */
    char reason[240];     /* UNKNOWN, INCOMPATIBLE */
    uint64_t used;        /* the cache's clock at the last use */
} schemacache_entry_t;

/* An enum of the reader's with a default symbol (Avro 1.9+ "default" on
 * an enum; libavro parses the schema but drops it, so it is read here). */
typedef struct schemacache_enum_default {
    char name[64];   /* the enum's name, without namespace */
    char symbol[64]; /* its default */
} schemacache_enum_default_t;

#define SCHEMACACHE_DEFAULTS_MAX 8

typedef struct schemacache {
    const char *what;     /* "Order", "CustomerProfile": for messages */
    avro_schema_t reader; /* owned reference */
    schemacache_enum_default_t defaults[SCHEMACACHE_DEFAULTS_MAX];
    size_t ndefaults;
    schemacache_entry_t *slots; /* owned: cap of them */
    size_t cap;
    size_t last; /* the slot of the last hit: most streams use one id */
    uint64_t clock;
    schemacache_fetch_fn fetch;
    void *fetch_ctx;
} schemacache_t;

/* Keeps up to cap verdicts for reader (whose JSON text reader_json gives
 * the enums' defaults).  0, or -1 with errstr. */
int schemacache_init(schemacache_t *c, const char *what, avro_schema_t reader,
                     const char *reader_json, size_t cap, schemacache_fetch_fn fetch,
                     void *fetch_ctx, char *errstr, size_t errstr_size);

/* Accepts a zeroed or half-built one. */
void schemacache_free(schemacache_t *c);

/* The verdict for id: from the cache, else fetched, judged and cached.
 * NULL when the registry did not answer (errstr says why): not the
 * record's fault.  The entry is valid until the next call. */
schemacache_entry_t *schemacache_get(schemacache_t *c, int64_t id, char *errstr,
                                     size_t errstr_size);

/* The reader's index of an enum read through e->res (v is a value of
 * e->res.value whose schema is the reader's enum): the writer's symbol
 * by name, else the reader enum's default.  -1 with errstr when the
 * reader has neither (the record holds what tierd cannot read). */
int schemacache_enum(const schemacache_t *c, const schemacache_entry_t *e, const avro_value_t *v,
                     const char *field, char *errstr, size_t errstr_size);

/* Judges writer_json against the reader without a registry: the verdict
 * schemacache_get would cache (used by the unit tests and by
 * schemacache_get itself).  0, or -1 when memory ran out. */
int schemacache_judge(const schemacache_t *c, const char *writer_json, schemacache_entry_t *e);

#endif
