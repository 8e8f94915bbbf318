/*
 * schemacache.c -- writer schemas by id, judged once against the reader
 * (schemacache.h).
 *
 * Owns the slots and every verdict in them (a resolved reader is built
 * once per id and reused for each record).  The slots are a plain array:
 * a hit on the last id used costs one comparison, any other a scan of at
 * most schema_registry.cache_size ids, and a miss means a registry round
 * trip anyway.  The least recently used verdict goes when the array is
 * full.
 *
 * Must never: cache "the registry did not answer" (that would turn an
 * outage into refused records), or trust a writer schema's text (it is
 * parsed by libavro, bounded by the registry client's body limit, and
 * every record read through it is pre-scanned against it: codec.h).
 */
#include "schemacache.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "errstr.h"

/* Collects the enums with a "default" under node (any JSON value of the
 * schema), depth-bounded like every schema walk. */
static void collect_defaults(schemacache_t *c, json_t *node, int depth) {
    const char *key, *type, *name, *def;
    json_t *v;
    size_t i;

    if (depth > 64) return;
    if (json_is_array(node)) {
        json_array_foreach(node, i, v) collect_defaults(c, v, depth + 1);
        return;
    }
    if (!json_is_object(node)) return;
    type = json_string_value(json_object_get(node, "type"));
    name = json_string_value(json_object_get(node, "name"));
    def = json_string_value(json_object_get(node, "default"));
    if (type && strcmp(type, "enum") == 0 && name && def &&
        c->ndefaults < SCHEMACACHE_DEFAULTS_MAX) {
        const char *dot = strrchr(name, '.');
        schemacache_enum_default_t *d = &c->defaults[c->ndefaults++];

        snprintf(d->name, sizeof(d->name), "%s", dot ? dot + 1 : name);
        snprintf(d->symbol, sizeof(d->symbol), "%s", def);
    }
    json_object_foreach(node, key, v) collect_defaults(c, v, depth + 1);
}

int schemacache_init(schemacache_t *c, const char *what, avro_schema_t reader,
                     const char *reader_json, size_t cap, schemacache_fetch_fn fetch,
                     void *fetch_ctx, char *errstr, size_t errstr_size) {
    json_t *root;

    memset(c, 0, sizeof(*c));
    c->what = what;
    c->fetch = fetch;
    c->fetch_ctx = fetch_ctx;
    if (cap == 0) cap = 1;
    if ((c->slots = calloc(cap, sizeof(*c->slots))) == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory for %zu cached schemas", cap);
        return -1;
    }
    c->cap = cap;
    for (size_t i = 0; i < cap; i++) c->slots[i].id = -1;
    c->reader = avro_schema_incref(reader);
    if ((root = json_loads(reader_json, 0, NULL)) == NULL) {
        errstr_fmt(errstr, errstr_size, "the %s schema is not JSON", what);
        return -1;
    }
    collect_defaults(c, root, 0);
    json_decref(root);
    return 0;
}

static void entry_clear(schemacache_entry_t *e) {
    codec_resolved_free(&e->res);
    memset(e, 0, sizeof(*e));
    e->id = -1;
}

void schemacache_free(schemacache_t *c) {
    if (c == NULL) return;
    for (size_t i = 0; c->slots != NULL && i < c->cap; i++) entry_clear(&c->slots[i]);
    free(c->slots);
    if (c->reader != NULL) avro_schema_decref(c->reader);
    memset(c, 0, sizeof(*c));
}

int schemacache_judge(const schemacache_t *c, const char *writer_json, schemacache_entry_t *e) {
    avro_schema_t writer = NULL; /* owned */
    char why[200] = "";

    if (avro_schema_from_json_length(writer_json, strlen(writer_json), &writer) != 0) {
        e->kind = SCHEMACACHE_INCOMPATIBLE;
        snprintf(e->reason, sizeof(e->reason),
                 "writer schema id %" PRId64 " does not parse: %.150s", e->id, avro_strerror());
        return 0;
    }
    if (avro_schema_equal(writer, c->reader)) {
        /* The same parsing canonical form: names, types, fields, symbols;
         * docs, logical types and defaults aside. */
        e->kind = SCHEMACACHE_OWN;
    } else if (codec_resolved_new(&e->res, writer, c->reader, c->what, why, sizeof(why)) == 0) {
        e->kind = SCHEMACACHE_RESOLVED;
    } else {
        codec_resolved_free(&e->res);
        e->kind = SCHEMACACHE_INCOMPATIBLE;
        snprintf(e->reason, sizeof(e->reason), "writer schema id %" PRId64 ": %.200s", e->id, why);
    }
    avro_schema_decref(writer);
    return 0;
}

/* The slot for a new verdict: a free one, else the least recently used,
 * cleared. */
static schemacache_entry_t *slot_for(schemacache_t *c) {
    size_t victim = 0;

    for (size_t i = 0; i < c->cap; i++) {
        if (c->slots[i].id < 0) {
            victim = i;
            break;
        }
        if (c->slots[i].used < c->slots[victim].used) victim = i;
    }
    entry_clear(&c->slots[victim]);
    c->last = victim;
    return &c->slots[victim];
}

schemacache_entry_t *schemacache_get(schemacache_t *c, int64_t id, char *errstr,
                                     size_t errstr_size) {
    schemacache_entry_t *e;
    char *json = NULL; /* owned */
    char why[240] = "";
    int rc;

    if (c->slots[c->last].id == id) {
        c->slots[c->last].used = ++c->clock;
        return &c->slots[c->last];
    }
    for (size_t i = 0; i < c->cap; i++)
        if (c->slots[i].id == id) {
            c->last = i;
            c->slots[i].used = ++c->clock;
            return &c->slots[i];
        }

    rc = c->fetch(c->fetch_ctx, id, &json, why, sizeof(why));
    if (rc < 0) {
        errstr_fmt(errstr, errstr_size, "%s", why);
        free(json);
        return NULL; /* not cached: the next record asks again */
    }
    e = slot_for(c);
    e->id = id;
    e->used = ++c->clock;
    if (rc > 0) {
        e->kind = SCHEMACACHE_UNKNOWN;
        snprintf(e->reason, sizeof(e->reason), "%s", why[0] ? why : "schema id unknown");
    } else {
        schemacache_judge(c, json, e);
    }
    free(json);
    return e;
}

int schemacache_enum(const schemacache_t *c, const schemacache_entry_t *e, const avro_value_t *v,
                     const char *field, char *errstr, size_t errstr_size) {
    avro_schema_t rs = avro_value_get_schema(v);
    const char *symbol = NULL;
    codec_symbol_t kind;
    int index = -1, r;

    if (codec_resolved_enum(&e->res, v, &symbol, &index, &kind) != 0) {
        errstr_fmt(errstr, errstr_size, "%s is not an enum", field);
        return -1;
    }
    if (kind == CODEC_SYMBOL_KNOWN) return avro_schema_enum_get_by_name(rs, symbol);
    for (size_t i = 0; i < c->ndefaults; i++)
        if (strcmp(c->defaults[i].name, avro_schema_name(rs)) == 0 &&
            (r = avro_schema_enum_get_by_name(rs, c->defaults[i].symbol)) >= 0)
            return r;
    if (kind == CODEC_SYMBOL_WRITER_ONLY)
        errstr_fmt(errstr, errstr_size,
                   "%s is %.64s (writer schema id %" PRId64 "), a symbol tierd's %s lacks, and "
                   "it has no default",
                   field, symbol, e->id, avro_schema_name(rs));
    else
        errstr_fmt(errstr, errstr_size, "%s has enum index %d, past the writer's symbols", field,
                   index);
    return -1;
}
