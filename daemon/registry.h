/*
 * registry.h -- a client of a Confluent-compatible schema registry (the
 * REST API Confluent Schema Registry, Apicurio's ccompat/v7 and others
 * serve): a writer schema by its id, and an event schema registered (or
 * found) under a subject.
 *
 * Private to the daemon and tierctl.  Speaks HTTP through libcurl, one
 * request at a time, each bounded by the configured timeout: a registry
 * that is down or slow costs the caller at most that long, and is told
 * apart from an answer ("no such id") so the caller can retry instead of
 * refusing a record.  Knows nothing of Avro: schemas go in and out as
 * JSON text.  Not thread-safe: one per thread.
 *
 * Never logs or returns the password; an error message names the URL
 * (without credentials) and the registry's own message.
 */
#ifndef TIERD_REGISTRY_H
#define TIERD_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

typedef struct registry registry_t;

typedef struct registry_conf {
    const char *url;      /* base URL, e.g. http://host:8081 (no trailing path needed) */
    const char *user;     /* NULL: no basic auth */
    const char *password; /* with user */
    const char *ca_file;  /* NULL: the system's CAs */
    long timeout_ms;      /* each request, connecting included */
} registry_conf_t;

typedef enum registry_rc {
    REGISTRY_OK,
    REGISTRY_NOT_FOUND,   /* the registry answered: no such id or subject */
    REGISTRY_REFUSED,     /* the registry answered no (e.g. 409: incompatible) */
    REGISTRY_UNAVAILABLE, /* no answer in time, a 5xx, or an answer not understood */
} registry_rc_t;

/* Copies what it needs from conf.  NULL with errstr when libcurl cannot
 * start. */
registry_t *registry_new(const registry_conf_t *conf, char *errstr, size_t errstr_size);

/* Accepts NULL. */
void registry_destroy(registry_t *r);

/* GET /schemas/ids/{id}: the schema's JSON text in *schema (malloc'd, the
 * caller frees it).  REGISTRY_NOT_FOUND for an id it does not know. */
registry_rc_t registry_schema_by_id(registry_t *r, int64_t id, char **schema, char *errstr,
                                    size_t errstr_size);

/* POST /subjects/{subject}/versions: registers the schema under the
 * subject (the registry answers with the existing id when it is there
 * already) and sets *id.  REGISTRY_REFUSED with the registry's message when
 * it refuses (409: incompatible with the subject's earlier versions; 422:
 * not a valid schema). */
registry_rc_t registry_register(registry_t *r, const char *subject, const char *schema, int64_t *id,
                                char *errstr, size_t errstr_size);

/* registry_schema_by_id in the shape of schemacache_fetch_fn (ctx is the
 * registry_t): 0 and *json, 1 for an id the registry does not know, -1
 * when it did not answer. */
int registry_fetch(void *ctx, int64_t id, char **json, char *errstr, size_t errstr_size);

#endif
