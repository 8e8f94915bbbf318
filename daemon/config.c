/*
 * config.c -- table-driven configuration.
 *
 * Order of precedence: built-in default < YAML file < environment.  The
 * environment name of a key is TIERD_ + the key upper-cased with dots as
 * underscores (redis.port -> TIERD_REDIS_PORT).  librdkafka properties are
 * TIERD_KAFKA_ + the property with dots as underscores
 * (TIERD_KAFKA_SASL_PASSWORD -> kafka sasl.password): librdkafka names have
 * no underscores, so the mapping is exact.
 *
 * Unknown keys, a key set twice and bad values are refused with the file
 * and line; a TIERD_* variable that names no key is refused with its name
 * (config_env_others[] lists the few that are not keys and are allowed).
 * A wrong kafka.* property is refused later, when librdkafka sees it, with
 * the same "where" string.
 *
 * Secrets may also come from systemd credentials (LoadCredential=): when
 * $CREDENTIALS_DIRECTORY holds a file named in config_credentials[], it
 * fills that key, but only when neither the file nor the environment set
 * it.  A secret is never copied into an error message: only its path is.
 */
#include "config.h"

#include "metrics.h"

#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yaml.h>

extern char **environ;

/* CT_LIST: a string that a YAML list may also give, its items joined
 * with commas (the environment gives it comma-separated). */
typedef enum { CT_STRING, CT_INT, CT_SECRET, CT_LIST } config_type_t;

typedef struct config_key {
    const char *name;
    config_type_t type;
    size_t offset;
    const char *def; /* NULL: unset */
    int64_t min, max;
    config_applies_t applies; /* at SIGHUP, or only at the next start */
    const char *doc;
} config_key_t;

/* RELOAD: config_reload moves the new value into the running
 * configuration, and whoever uses it reads it from there (or do_reload
 * derives it again).  RESTART: the value was used once, at start, to
 * connect, subscribe, name or size something; a new one waits. */
#define RELOAD CONFIG_APPLIES_RELOAD
#define RESTART CONFIG_APPLIES_RESTART
#define KEY(n, t, f, d, lo, hi, when, doc)                                                         \
    { n, t, offsetof(config_t, f), d, lo, hi, when, doc }

static const config_key_t config_keys[] = {
    KEY("topics.orders", CT_STRING, topic_orders, "orders", 0, 0, RESTART,
        "Topic of Order events (Avro), key = customer id"),
    KEY("topics.dead_letter", CT_STRING, topic_dead_letter, "dead-letter", 0, 0, RESTART,
        "Topic that receives every refused record with its reason in headers"),
    KEY("topics.profiles", CT_STRING, topic_profiles, "customer-profiles", 0, 0, RESTART,
        "Compacted topic of customer profiles (Avro), co-partitioned with orders"),
    KEY("topics.tier_changes", CT_STRING, topic_tier_changes, "tier-changes", 0, 0, RESTART,
        "Topic tier-change events are published to"),
    KEY("topics.quota_events", CT_STRING, topic_quota_events, "quota-events", 0, 0, RESTART,
        "Topic quota events are published to"),
    KEY("policy", CT_STRING, policy_path, NULL, 0, 0, RELOAD,
        "Policy file (config/policies/*.yaml); default: the built-in supply-tiers"),
    KEY("idle_close_after_s", CT_INT, idle_close_after_s, "3600", 1, 31622400, RELOAD,
        "A partition idle this long reviews its month once the month has ended"),
    KEY("redis.cluster", CT_LIST, redis_cluster, NULL, 0, 0, RESTART,
        "Redis Cluster seed nodes, a list of host:port; when set, tierd routes each partition "
        "to its slot's master, and redis.host, port, unix_socket and db are not used"),
    KEY("redis.host", CT_STRING, redis_host, "127.0.0.1", 0, 0, RESTART, "Redis host"),
    KEY("redis.port", CT_INT, redis_port, "6379", 1, 65535, RESTART, "Redis port"),
    KEY("redis.unix_socket", CT_STRING, redis_unix_socket, NULL, 0, 0, RESTART,
        "Redis unix socket path; when set, host and port are not used"),
    KEY("redis.user", CT_STRING, redis_user, NULL, 0, 0, RESTART,
        "Redis ACL user (AUTH user password)"),
    KEY("redis.password", CT_SECRET, redis_password, NULL, 0, 0, RESTART,
        "Redis password; prefer redis.password_file or the environment"),
    KEY("redis.password_file", CT_STRING, redis_password_file, NULL, 0, 0, RESTART,
        "File holding the Redis password (e.g. a systemd credential)"),
    KEY("redis.db", CT_INT, redis_db, "0", 0, 1024, RESTART, "Redis database number"),
    KEY("redis.timeout_ms", CT_INT, redis_timeout_ms, "5000", 100, 600000, RESTART,
        "Connect and command timeout on the Redis socket; TCP keepalive is on"),
    KEY("redis.key_prefix", CT_STRING, key_prefix, "tierd", 0, 0, RESTART,
        "Prefix of every Redis key tierd writes"),
    KEY("schema_registry.url", CT_STRING, registry_url, NULL, 0, 0, RESTART,
        "Base URL of a Confluent-compatible schema registry (http://host:8081, or Apicurio's "
        "http://host:8080/apis/ccompat/v7); unset: schema ids are not looked up and events "
        "are not framed"),
    KEY("schema_registry.user", CT_STRING, registry_user, NULL, 0, 0, RESTART,
        "Schema registry basic-auth user"),
    KEY("schema_registry.password", CT_SECRET, registry_password, NULL, 0, 0, RESTART,
        "Schema registry basic-auth password; prefer schema_registry.password_file or the "
        "environment"),
    KEY("schema_registry.password_file", CT_STRING, registry_password_file, NULL, 0, 0, RESTART,
        "File holding the schema registry password (e.g. a systemd credential)"),
    KEY("schema_registry.ca_file", CT_STRING, registry_ca_file, NULL, 0, 0, RESTART,
        "PEM file of the CAs an https registry's certificate is checked against; default: "
        "the system's"),
    KEY("schema_registry.timeout_ms", CT_INT, registry_timeout_ms, "2000", 100, 60000, RESTART,
        "Longest one registry request may take; a registry slower than this pauses the "
        "partition and retries, it never refuses the record"),
    KEY("schema_registry.cache_size", CT_INT, registry_cache_size, "1000", 1, 100000, RESTART,
        "Writer schemas kept by id (the least recently used goes first)"),
    KEY("time_zone", CT_STRING, time_zone, "UTC", 0, 0, RESTART,
        "IANA time zone whose calendar months bucket the orders"),
    KEY("currency", CT_STRING, currency, "CNY", 0, 0, RESTART,
        "ISO 4217 code every order must carry"),
    KEY("window_months", CT_INT, window_months, "3", 1, 24, RESTART,
        "Months in the rolling window (W); the policy must say the same"),
    KEY("max_future_skew_s", CT_INT, max_future_skew_s, "86400", 0, 31622400, RELOAD,
        "How far ahead of the wall clock placed_at may be, in seconds"),
    /* 2000-01-01T00:00:00Z .. 2100-01-01T00:00:00Z */
    KEY("min_placed_at_s", CT_INT, min_placed_at_s, "946684800", 0, 4102444800, RELOAD,
        "Orders placed before this instant (epoch seconds; 2000-01-01T00:00:00Z by default) "
        "are refused as BAD_PLACED_AT; a value after now is refused at start"),
    KEY("batch.max_orders", CT_INT, batch_max_orders, "8000", 1, 1000000, RELOAD,
        "Records held in batches over all partitions; at this many every batch is applied"),
    KEY("batch.max_ms", CT_INT, batch_max_ms, "100", 1, 60000, RELOAD,
        "Longest a record waits in a batch before it is applied"),
    KEY("shutdown_timeout_ms", CT_INT, shutdown_timeout_ms, "20000", 1000, 600000, RELOAD,
        "On SIGTERM, tierd exits within this long; work still retrying is abandoned "
        "uncommitted and read again at the next start. Keep it below systemd's "
        "TimeoutStopSec (90 s in systemd/tierd.service), which kills tierd after that"),
    KEY("http.listen", CT_STRING, http_listen, "127.0.0.1:9464", 0, 0, RESTART,
        "Numeric host:port or [v6]:port of /metrics, /healthz and /readyz; port 0 picks a "
        "free one; \"\" turns the server off"),
    KEY("log_level", CT_STRING, log_level, "info", 0, 0, RELOAD,
        "Least severe log line written: error, warn, info or debug"),
    KEY("instance_id", CT_STRING, instance_id, NULL, 0, 0, RESTART,
        "Name of this instance in Redis (a partition's owner) and logs; default: hostname-pid"),
};
#define NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* systemd credentials tierd looks for in $CREDENTIALS_DIRECTORY.  The unit
 * loads each one optionally (LoadCredential=NAME, searched in
 * /etc/credstore/), so a missing file is not an error. */
static const struct config_credential {
    const char *name; /* file name in $CREDENTIALS_DIRECTORY */
    const char *key;  /* a CT_SECRET key (its _file key beside it), or kafka.<property> */
} config_credentials[] = {
    {"redis-password", "redis.password"},
    {"schema-registry-password", "schema_registry.password"},
    {"kafka-sasl-password", "kafka.sasl.password"},
    {"kafka-ssl-key-password", "kafka.ssl.key.password"},
};
#define NCREDENTIALS (sizeof(config_credentials) / sizeof(config_credentials[0]))

/* TIERD_* variables that are not keys but are read by tierd or set around
 * it by its own tools and tests; any other TIERD_* is refused (load_env).
 * tests/integration/test_cli.sh finds the TIERD_* names the repository's
 * scripts, tests and images read or set (as $NAME, NAME=, a quoted name or
 * getenv's argument) and fails when tierd refuses one of them. */
typedef struct config_env_other {
    const char *name, *what;
} config_env_other_t;

static const config_env_other_t config_env_others[] = {
    {"TIERD_CONFIG", "docker/entrypoint: the configuration file"},
    {"TIERD_FAULT_COMMIT_STALL_FILE", "fault injection, builds with TIERD_TEST_HOOKS only"},
    {"TIERD_FAULT_REVIEW_STALL_FILE", "fault injection, builds with TIERD_TEST_HOOKS only"},
    {"TIERD_FAULT_PUBLISH_STALL_FILE", "fault injection, builds with TIERD_TEST_HOOKS only"},
    {"TIERD_FAULT_OUT_OF_RANGE_FILE", "fault injection, builds with TIERD_TEST_HOOKS only"},
    {"TIERD_FAULT_SEEK_FAIL_FILE", "fault injection, builds with TIERD_TEST_HOOKS only"},
    {"TIERD_BIN", "tests: the tierd binary under test"},
    {"TIERD_TEST_REDIS_PORT", "tests/integration/with-redis"},
    {"TIERD_FUZZ_ITERS", "tests/unit/test_decode.c"},
    {"TIERD_KEEP_RUN_DIR", "tests/integration/harness.py"},
    {"TIERD_HOSTILE_SKIP", "tests/integration/test_hostile.py"},
    {"TIERD_REDIS_APPENDFSYNC", "scripts/services (the test Redis)"},
    {"TIERD_REDIS_AOF_REWRITE_MIN", "scripts/services (the test Redis)"},
    {"TIERD_CACHE", "scripts/setup and scripts/services"},
    {"TIERD_SERVICES_TIMEOUT", "scripts/services"},
    {"TIERD_SERVICES_STOP_TIMEOUT", "scripts/services"},
    {"TIERD_SERVICES_KAFKA_PROXY_PORT", "scripts/services (network-fault tests)"},
    {"TIERD_SERVICES_KAFKA_SASL_SSL", "scripts/services (the security test)"},
    {"TIERD_SERVICES_REDIS_CLUSTER", "scripts/services (a Redis Cluster)"},
    {"TIERD_SERVICES_REDIS_PASSWORD", "scripts/services (Redis ACL users)"},
    {"TIERD_SERVICES_ASK_SECONDS", "scripts/services (the cluster test's slot move)"},
    {"TIERD_SERVICES_CLUSTER_NODE_TIMEOUT", "scripts/services (a Redis Cluster)"},
    {"TIERD_DEBIAN_MIRROR", "scripts/setup (the image's packages)"},
    {"TIERD_DEBIAN_SECURITY_MIRROR", "scripts/setup (the image's packages)"},
    {"TIERD_PYTHONPATH", "scripts/registry/env.sh (the registry test's Python client)"},
    {"TIERD_DELETE_RECORDS_BIN", "tests/integration (the offsets test)"},
    {"TIERD_SEEK_POSITION_BIN", "tests/integration (the transactional test)"},
};
#define NENV_OTHERS (sizeof(config_env_others) / sizeof(config_env_others[0]))

/* Secrets longer than this are refused rather than cut. */
#define SECRET_MAX 4096

static char **str_field(config_t *c, const config_key_t *k) {
    return (char **)((char *)c + k->offset);
}
static int64_t *int_field(config_t *c, const config_key_t *k) {
    return (int64_t *)((char *)c + k->offset);
}

/* Remembers where key k got its value, for config_where. */
static int set_where(config_t *c, const config_key_t *k, const char *where) {
    char *w = strdup(where);
    if (!w) return -1;
    free(c->wheres[k - config_keys]);
    c->wheres[k - config_keys] = w;
    return 0;
}

static int set_value(config_t *c, const config_key_t *k, const char *value, const char *where,
                     char *errstr, size_t errstr_size) {
    if (set_where(c, k, where) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (k->type == CT_INT) {
        char *end = NULL;
        long long v;
        errno = 0;
        v = strtoll(value, &end, 10);
        if (errno || end == value || *end != '\0') {
            snprintf(errstr, errstr_size, "%s: %s: \"%s\" is not a whole number", where, k->name,
                     value);
            return -1;
        }
        if (v < k->min || v > k->max) {
            snprintf(errstr, errstr_size, "%s: %s: %lld is outside %lld..%lld", where, k->name, v,
                     (long long)k->min, (long long)k->max);
            return -1;
        }
        *int_field(c, k) = v;
        return 0;
    }
    char *dup = strdup(value);
    if (!dup) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    free(*str_field(c, k));
    *str_field(c, k) = dup;
    return 0;
}

static const config_key_t *find_key(const char *name) {
    for (size_t i = 0; i < NKEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0) return &config_keys[i];
    return NULL;
}

const char *config_where(const config_t *c, const char *key) {
    const config_key_t *k = find_key(key);
    const char *w = k && c->wheres ? c->wheres[k - config_keys] : NULL;
    return w ? w : "default";
}

static int kafka_set(config_t *c, const char *name, const char *value, const char *where) {
    for (size_t i = 0; i < c->nkafka; i++) {
        if (strcmp(c->kafka[i].name, name) == 0) {
            char *v = strdup(value), *w = strdup(where);
            if (!v || !w) {
                free(v);
                free(w);
                return -1;
            }
            free(c->kafka[i].value);
            free(c->kafka[i].where);
            c->kafka[i].value = v;
            c->kafka[i].where = w;
            return 0;
        }
    }
    config_kv_t *n = realloc(c->kafka, (c->nkafka + 1) * sizeof(*n));
    if (!n) return -1;
    c->kafka = n;
    n[c->nkafka].name = strdup(name);
    n[c->nkafka].value = strdup(value);
    n[c->nkafka].where = strdup(where);
    if (!n[c->nkafka].name || !n[c->nkafka].value || !n[c->nkafka].where) {
        free(n[c->nkafka].name);
        free(n[c->nkafka].value);
        free(n[c->nkafka].where);
        return -1;
    }
    c->nkafka++;
    return 0;
}

const char *config_kafka_get(const config_t *c, const char *name) {
    for (size_t i = 0; i < c->nkafka; i++)
        if (strcmp(c->kafka[i].name, name) == 0) return c->kafka[i].value;
    return NULL;
}

/* The keys of depth 0..depth joined with dots. */
static void join_keys(char keypath[][256], int depth, char *full, size_t n) {
    full[0] = '\0';
    for (int i = 0; i <= depth; i++) {
        if (i) strncat(full, ".", n - strlen(full) - 1);
        strncat(full, keypath[i], n - strlen(full) - 1);
    }
}

/* The dotted paths of the keys a file has set so far, with their lines.
 * YAML forbids a key twice in one mapping but libyaml does not check, and
 * the last one would win in silence; "redis.port" at the top and "port"
 * under "redis:" are one key too.  So every path may appear once. */
typedef struct seen_keys {
    struct {
        char *path; /* owned */
        size_t line;
    } * v;
    size_t n, cap;
} seen_keys_t;

/* 0 and path recorded; 1 when it was seen before (*first_line set);
 * -1 out of memory. */
static int seen_add(seen_keys_t *s, const char *path, size_t line, size_t *first_line) {
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i].path, path) == 0) {
            *first_line = s->v[i].line;
            return 1;
        }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        void *v = realloc(s->v, cap * sizeof(*s->v));
        if (!v) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n].path = strdup(path);
    if (!s->v[s->n].path) return -1;
    s->v[s->n++].line = line;
    return 0;
}

static void seen_free(seen_keys_t *s) {
    for (size_t i = 0; i < s->n; i++) free(s->v[i].path);
    free(s->v);
}

/* Reads the items of a YAML list (after its start) up to its end, and
 * sets k to them joined with commas.  Items are scalars. */
static int load_list(yaml_parser_t *parser, config_t *c, const config_key_t *k, const char *where,
                     char *errstr, size_t errstr_size) {
    char joined[4096];
    size_t n = 0;
    joined[0] = '\0';
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(parser, &ev)) {
            snprintf(errstr, errstr_size, "%s: YAML error: %s", where,
                     parser->problem ? parser->problem : "unknown");
            return -1;
        }
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        if (ev.type != YAML_SCALAR_EVENT) {
            yaml_event_delete(&ev);
            snprintf(errstr, errstr_size, "%s: %s: the list holds host:port strings only", where,
                     k->name);
            return -1;
        }
        const char *v = (const char *)ev.data.scalar.value;
        if (!*v || strchr(v, ',') || n + strlen(v) + 2 > sizeof(joined)) {
            yaml_event_delete(&ev);
            snprintf(errstr, errstr_size,
                     "%s: %s: an item is empty, holds a comma, or the list "
                     "is too long",
                     where, k->name);
            return -1;
        }
        n += (size_t)snprintf(joined + n, sizeof(joined) - n, "%s%s", n ? "," : "", v);
        yaml_event_delete(&ev);
    }
    return set_value(c, k, joined, where, errstr, errstr_size);
}

/* Walks the YAML document: nested mappings of scalars only.  The path of
 * keys is joined with dots; anything under "kafka" is a librdkafka
 * property, everything else must be in the table. */
static int load_file(config_t *c, const char *path, char *errstr, size_t errstr_size) {
    FILE *f = NULL;
    yaml_parser_t parser;
    yaml_event_t ev;
    int parser_ok = 0, rc = -1, done = 0;
    char keypath[8][256]; /* mapping nesting, 8 levels is plenty */
    int depth = -1;       /* index of innermost open mapping */
    int expect_key[8];
    char where[600];
    char full[1024];
    seen_keys_t seen = {0};

    f = fopen(path, "r");
    if (!f) {
        snprintf(errstr, errstr_size, "%s: cannot open: %s", path, strerror(errno));
        goto out;
    }
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errstr, errstr_size, "%s: cannot initialise the YAML parser", path);
        goto out;
    }
    parser_ok = 1;
    yaml_parser_set_input_file(&parser, f);

    while (!done) {
        if (!yaml_parser_parse(&parser, &ev)) {
            snprintf(errstr, errstr_size, "%s:%zu: YAML error: %s", path,
                     parser.problem_mark.line + 1, parser.problem ? parser.problem : "unknown");
            goto out;
        }
        snprintf(where, sizeof(where), "%s:%zu", path, ev.start_mark.line + 1);
        switch (ev.type) {
        case YAML_STREAM_END_EVENT: done = 1; break;
        case YAML_MAPPING_START_EVENT:
            if (depth >= 0 && expect_key[depth]) {
                snprintf(errstr, errstr_size, "%s: a mapping cannot be a key", where);
                yaml_event_delete(&ev);
                goto out;
            }
            if (depth + 1 >= 8) {
                snprintf(errstr, errstr_size, "%s: nested too deeply", where);
                yaml_event_delete(&ev);
                goto out;
            }
            if (depth >= 0) expect_key[depth] = 1; /* value consumed */
            depth++;
            expect_key[depth] = 1;
            break;
        case YAML_MAPPING_END_EVENT: depth--; break;
        case YAML_SEQUENCE_START_EVENT: {
            const config_key_t *k = NULL;
            if (depth >= 0 && !expect_key[depth]) {
                join_keys(keypath, depth, full, sizeof(full));
                k = find_key(full);
            }
            if (!k || k->type != CT_LIST) {
                snprintf(errstr, errstr_size, "%s: a list is used only by redis.cluster", where);
                yaml_event_delete(&ev);
                goto out;
            }
            yaml_event_delete(&ev);
            expect_key[depth] = 1;
            if (load_list(&parser, c, k, where, errstr, errstr_size) != 0) goto out;
            continue;
        }
        case YAML_ALIAS_EVENT:
            snprintf(errstr, errstr_size, "%s: aliases are not supported", where);
            yaml_event_delete(&ev);
            goto out;
        case YAML_SCALAR_EVENT: {
            const char *s = (const char *)ev.data.scalar.value;
            if (depth < 0) {
                snprintf(errstr, errstr_size, "%s: the file must be a mapping of keys", where);
                yaml_event_delete(&ev);
                goto out;
            }
            if (expect_key[depth]) {
                size_t first = 0;
                snprintf(keypath[depth], sizeof(keypath[depth]), "%s", s);
                expect_key[depth] = 0;
                join_keys(keypath, depth, full, sizeof(full));
                int dup = seen_add(&seen, full, ev.start_mark.line + 1, &first);
                if (dup != 0) {
                    if (dup < 0)
                        snprintf(errstr, errstr_size, "out of memory");
                    else
                        snprintf(errstr, errstr_size,
                                 "%s: \"%s\" is set twice (first at line %zu); keep one", where,
                                 full, first);
                    yaml_event_delete(&ev);
                    goto out;
                }
                break;
            }
            expect_key[depth] = 1;
            join_keys(keypath, depth, full, sizeof(full));
            if (strncmp(full, "kafka.", 6) == 0) {
                if (kafka_set(c, full + 6, s, where) != 0) {
                    snprintf(errstr, errstr_size, "out of memory");
                    yaml_event_delete(&ev);
                    goto out;
                }
                break;
            }
            const config_key_t *k = find_key(full);
            if (!k) {
                snprintf(errstr, errstr_size,
                         "%s: unknown key \"%s\" (tierd --help-config lists the keys)", where,
                         full);
                yaml_event_delete(&ev);
                goto out;
            }
            if (set_value(c, k, s, where, errstr, errstr_size) != 0) {
                yaml_event_delete(&ev);
                goto out;
            }
            break;
        }
        default: break;
        }
        yaml_event_delete(&ev);
    }
    rc = 0;
out:
    seen_free(&seen);
    if (parser_ok) yaml_parser_delete(&parser);
    if (f) fclose(f);
    return rc;
}

static void env_name(const char *key, char *out, size_t n) {
    size_t j = (size_t)snprintf(out, n, "TIERD_");
    for (const char *p = key; *p && j + 1 < n; p++)
        out[j++] = *p == '.' ? '_' : (char)toupper((unsigned char)*p);
    out[j] = '\0';
}

/* Levenshtein distance of two short strings, to suggest a key for a
 * misspelt variable; strings longer than 127 count as far apart. */
static size_t edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b), row[128], prev;
    if (la >= 128 || lb >= 128) return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++) row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        prev = row[0]; /* row[j - 1] of the previous line */
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t del = row[j] + 1, ins = row[j - 1] + 1;
            size_t sub = prev + (a[i - 1] != b[j - 1]);
            prev = row[j];
            row[j] = del < ins ? (del < sub ? del : sub) : (ins < sub ? ins : sub);
        }
    }
    return row[lb];
}

static const config_env_other_t *find_env_other(const char *name, size_t n) {
    for (size_t i = 0; i < NENV_OTHERS; i++)
        if (strlen(config_env_others[i].name) == n &&
            strncmp(config_env_others[i].name, name, n) == 0)
            return &config_env_others[i];
    return NULL;
}

/* A TIERD_* variable that is no key, no kafka property and none of
 * config_env_others[] is a typo (TIERD_REDIS_HOTS) or a key that does
 * not exist: refused, as an unknown key in the file is. */
static int refuse_env(const char *var, size_t n, char *errstr, size_t errstr_size) {
    char name[128], env[128], best[128] = "";
    size_t best_d = 3; /* suggest only close names */
    snprintf(name, sizeof(name), "%.*s", (int)n, var);
    for (size_t i = 0; i < NKEYS; i++) {
        env_name(config_keys[i].name, env, sizeof(env));
        size_t d = edit_distance(name, env);
        if (d < best_d) {
            best_d = d;
            snprintf(best, sizeof(best), "%s", env);
        }
    }
    snprintf(errstr, errstr_size,
             "environment %s: no such key%s%s%s (tierd --help-config lists the TIERD_* "
             "variables)",
             name, best[0] ? "; did you mean " : "", best, best[0] ? "?" : "");
    return -1;
}

static int load_env(config_t *c, char *errstr, size_t errstr_size) {
    char name[128], where[160];
    for (size_t i = 0; i < NKEYS; i++) {
        env_name(config_keys[i].name, name, sizeof(name));
        const char *v = getenv(name);
        if (!v) continue;
        snprintf(where, sizeof(where), "environment %s", name);
        if (set_value(c, &config_keys[i], v, where, errstr, errstr_size) != 0) return -1;
    }
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, "TIERD_", 6) != 0) continue;
        const char *eq = strchr(*e, '=');
        size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
        if (strncmp(*e, "TIERD_KAFKA_", 12) != 0) {
            int known = find_env_other(*e, n) != NULL;
            for (size_t i = 0; !known && i < NKEYS; i++) {
                env_name(config_keys[i].name, name, sizeof(name));
                known = strlen(name) == n && strncmp(name, *e, n) == 0;
            }
            if (!known) return refuse_env(*e, n, errstr, errstr_size);
            continue; /* read above, or not ours to read */
        }
        char prop[256];
        size_t plen = n - 12;
        if (!eq || plen == 0 || plen >= sizeof(prop)) {
            snprintf(errstr, errstr_size, "environment %.*s: names no librdkafka property",
                     (int)(n < 200 ? n : 200), *e);
            return -1;
        }
        for (size_t i = 0; i < plen; i++) {
            char ch = (*e)[12 + i];
            prop[i] = ch == '_' ? '.' : (char)tolower((unsigned char)ch);
        }
        prop[plen] = '\0';
        snprintf(where, sizeof(where), "environment %.*s", (int)n, *e);
        if (kafka_set(c, prop, eq + 1, where) != 0) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
    }
    return 0;
}

/* Reads the secret in the file at path: its first line, without the line
 * end.  Returns 0 and sets *out (caller frees), 1 when the file does not
 * exist and missing_ok, or -1 with errstr naming what and path (never the
 * contents).  The buffer is wiped before it goes out of scope. */
static int read_secret(const char *what, const char *path, int missing_ok, char **out, char *errstr,
                       size_t errstr_size) {
    char buf[SECRET_MAX + 1];
    size_t n = 0;
    int rc = -1;
    FILE *f = fopen(path, "r");

    *out = NULL;
    if (!f) {
        if (errno == ENOENT && missing_ok) return 1;
        snprintf(errstr, errstr_size, "%s: cannot open %s: %s", what, path, strerror(errno));
        return -1;
    }
    n = fread(buf, 1, sizeof(buf), f);
    if (ferror(f)) {
        snprintf(errstr, errstr_size, "%s: cannot read %s", what, path);
        goto out;
    }
    if (n > SECRET_MAX) {
        snprintf(errstr, errstr_size, "%s: %s is longer than %d bytes", what, path, SECRET_MAX);
        goto out;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (buf[0] == '\0') {
        snprintf(errstr, errstr_size, "%s: %s is empty", what, path);
        goto out;
    }
    *out = strdup(buf);
    if (!*out) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    rc = 0;
out:
    memset(buf, 0, sizeof(buf));
    fclose(f);
    return rc;
}

/* The value of a string key of the table, by name. */
static char *str_by_name(config_t *c, const char *name) {
    return *str_field(c, find_key(name));
}

/* Fills the secrets still unset from $CREDENTIALS_DIRECTORY.  A secret key
 * (redis.password) counts as set when its _file key (redis.password_file)
 * is: that file is the explicit choice. */
static int load_credentials(config_t *c, char *errstr, size_t errstr_size) {
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    char path[4096], what[128];

    if (!dir || !*dir) return 0;
    for (size_t i = 0; i < NCREDENTIALS; i++) {
        const struct config_credential *cr = &config_credentials[i];
        const char *prop = strncmp(cr->key, "kafka.", 6) == 0 ? cr->key + 6 : NULL;
        char *secret = NULL, file_key[64];
        int rc;

        snprintf(file_key, sizeof(file_key), "%s_file", cr->key);
        if (prop ? config_kafka_get(c, prop) != NULL
                 : str_by_name(c, cr->key) != NULL || str_by_name(c, file_key) != NULL)
            continue; /* set explicitly */
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, cr->name) >= sizeof(path)) {
            snprintf(errstr, errstr_size, "CREDENTIALS_DIRECTORY is too long");
            return -1;
        }
        snprintf(what, sizeof(what), "credential %s (%s)", cr->name, cr->key);
        rc = read_secret(what, path, 1, &secret, errstr, errstr_size);
        if (rc < 0) return -1;
        if (rc > 0) continue; /* not provided */
        if (prop) {
            char where[4200];
            snprintf(where, sizeof(where), "credential %s", path);
            rc = kafka_set(c, prop, secret, where);
            memset(secret, 0, strlen(secret));
            free(secret);
            if (rc != 0) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
            }
        } else {
            *str_field(c, find_key(cr->key)) = secret; /* now owned by c */
            snprintf(what, sizeof(what), "credential %s", cr->name);
            if (set_where(c, find_key(cr->key), what) != 0) {
                snprintf(errstr, errstr_size, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

/* A secret key and its _file key: one of them at most; the file is read
 * here, so a missing or unreadable one stops tierd at start. */
static int validate_secret_file(config_t *c, const char *key, char *errstr, size_t errstr_size) {
    char file_key[64], what[700];
    char **secret = str_field(c, find_key(key));
    const char *path;

    snprintf(file_key, sizeof(file_key), "%s_file", key);
    path = str_by_name(c, file_key);
    if (*secret && path) {
        snprintf(errstr, errstr_size, "%s: %s: %s is set too (%s); set one of them",
                 config_where(c, file_key), file_key, key, config_where(c, key));
        return -1;
    }
    if (!path) return 0;
    snprintf(what, sizeof(what), "%s: %s", config_where(c, file_key), file_key);
    return read_secret(what, path, 0, secret, errstr, errstr_size);
}

/* The registry's URL is http(s)://...; a user or password needs the URL. */
static int validate_registry(config_t *c, char *errstr, size_t errstr_size) {
    const char *url = c->registry_url;

    if (!url) {
        const char *keys[] = {"schema_registry.user", "schema_registry.password",
                              "schema_registry.ca_file"};
        for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
            if (str_by_name(c, keys[i])) {
                snprintf(errstr, errstr_size, "%s: %s: set, but schema_registry.url is not",
                         config_where(c, keys[i]), keys[i]);
                return -1;
            }
        return 0;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(errstr, errstr_size,
                 "%s: schema_registry.url: \"%s\" is not an http:// or https:// URL",
                 config_where(c, "schema_registry.url"), url);
        return -1;
    }
    const char *auth = strstr(url, "://") + 3;
    if (memchr(auth, '@', strcspn(auth, "/")) != NULL) {
        snprintf(errstr, errstr_size,
                 "%s: schema_registry.url: credentials in the URL would end up in logs; use "
                 "schema_registry.user and schema_registry.password",
                 config_where(c, "schema_registry.url"));
        return -1;
    }
    if (c->registry_password && !c->registry_user) {
        snprintf(errstr, errstr_size,
                 "%s: schema_registry.password: set, but schema_registry.user is not",
                 config_where(c, "schema_registry.password"));
        return -1;
    }
    return 0;
}

/* Checks that need more than one key, or more than a type and bounds. */
static int validate(config_t *c, char *errstr, size_t errstr_size) {
    const char *cur = c->currency;
    if (strlen(cur) != 3 || !isupper((unsigned char)cur[0]) || !isupper((unsigned char)cur[1]) ||
        !isupper((unsigned char)cur[2])) {
        snprintf(errstr, errstr_size,
                 "%s: currency: \"%s\" is not an ISO 4217 code (three capitals)",
                 config_where(c, "currency"), cur);
        return -1;
    }
    if (log_level_parse(c->log_level) < 0) {
        snprintf(errstr, errstr_size, "%s: log_level: \"%s\" is not error, warn, info or debug",
                 config_where(c, "log_level"), c->log_level);
        return -1;
    }
    const char *names[] = {c->topic_orders, c->topic_dead_letter, c->topic_profiles,
                           c->topic_tier_changes, c->topic_quota_events};
    const char *keys[] = {"topics.orders", "topics.dead_letter", "topics.profiles",
                          "topics.tier_changes", "topics.quota_events"};
    for (size_t i = 0; i < 5; i++) {
        if (*names[i] == '\0') {
            snprintf(errstr, errstr_size, "%s: %s: topic names must not be empty",
                     config_where(c, keys[i]), keys[i]);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(names[i], names[j]) == 0) {
                snprintf(errstr, errstr_size, "%s: %s: \"%s\" is %s's too; each topic has one job",
                         config_where(c, keys[i]), keys[i], names[i], keys[j]);
                return -1;
            }
    }
    /* Set but empty is a mistake, not "unset": it would fail later, at
     * run time, with a less clear message (or retry forever). */
    const struct {
        const char *key, *value;
    } nonempty[] = {
        {"redis.host", c->redis_host},       {"redis.unix_socket", c->redis_unix_socket},
        {"policy", c->policy_path},          {"instance_id", c->instance_id},
        {"redis.key_prefix", c->key_prefix}, {"time_zone", c->time_zone}};
    for (size_t i = 0; i < sizeof(nonempty) / sizeof(nonempty[0]); i++)
        if (nonempty[i].value && *nonempty[i].value == '\0') {
            snprintf(errstr, errstr_size, "%s: %s: must not be empty when set",
                     config_where(c, nonempty[i].key), nonempty[i].key);
            return -1;
        }
    /* A floor in the future refuses every order as it arrives. */
    time_t now = time(NULL);
    if (c->min_placed_at_s > (int64_t)now) {
        snprintf(errstr, errstr_size,
                 "%s: min_placed_at_s: %lld is in the future (now is %lld): every order "
                 "would be refused",
                 config_where(c, "min_placed_at_s"), (long long)c->min_placed_at_s, (long long)now);
        return -1;
    }
    if (*c->http_listen) {
        char why[400];
        if (metrics_check_listen(c->http_listen, why, sizeof(why)) != 0) {
            snprintf(errstr, errstr_size, "%s: http.listen: %s", config_where(c, "http.listen"),
                     why);
            return -1;
        }
    }
    if (validate_secret_file(c, "redis.password", errstr, errstr_size) != 0 ||
        validate_secret_file(c, "schema_registry.password", errstr, errstr_size) != 0)
        return -1;
    if (validate_registry(c, errstr, errstr_size) != 0) return -1;
    if (!config_kafka_get(c, "bootstrap.servers")) {
        snprintf(errstr, errstr_size,
                 "kafka.bootstrap.servers is required (or TIERD_KAFKA_BOOTSTRAP_SERVERS)");
        return -1;
    }
    return 0;
}

int config_load(config_t *c, const char *path, char *errstr, size_t errstr_size) {
    memset(c, 0, sizeof(*c));
    c->wheres = calloc(NKEYS, sizeof(*c->wheres));
    if (!c->wheres) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < NKEYS; i++)
        if (config_keys[i].def &&
            set_value(c, &config_keys[i], config_keys[i].def, "default", errstr, errstr_size) != 0)
            return -1;
    if (kafka_set(c, "group.id", "tierd", "default") != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    if (path && load_file(c, path, errstr, errstr_size) != 0) return -1;
    if (load_env(c, errstr, errstr_size) != 0) return -1;
    if (load_credentials(c, errstr, errstr_size) != 0) return -1;
    return validate(c, errstr, errstr_size);
}

void config_free(config_t *c) {
    if (!c) return;
    for (size_t i = 0; i < NKEYS; i++) {
        if (c->wheres) free(c->wheres[i]);
        if (config_keys[i].type == CT_INT) continue;
        char **p = str_field(c, &config_keys[i]);
        if (*p && config_keys[i].type == CT_SECRET) memset(*p, 0, strlen(*p));
        free(*p);
        *p = NULL;
    }
    for (size_t i = 0; i < c->nkafka; i++) {
        if (strstr(c->kafka[i].name, "password") || strstr(c->kafka[i].name, "secret"))
            memset(c->kafka[i].value, 0, strlen(c->kafka[i].value));
        free(c->kafka[i].name);
        free(c->kafka[i].value);
        free(c->kafka[i].where);
    }
    free(c->kafka);
    free(c->wheres);
    memset(c, 0, sizeof(*c));
}

/* Strings equal, NULL (unset) equal only to NULL. */
static int same_string(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int same_value(config_t *a, config_t *b, const config_key_t *k) {
    if (k->type == CT_INT) return *int_field(a, k) == *int_field(b, k);
    return same_string(*str_field(a, k), *str_field(b, k));
}

static int same_kafka(const config_t *a, const config_t *b) {
    if (a->nkafka != b->nkafka) return 0;
    for (size_t i = 0; i < a->nkafka; i++)
        if (!same_string(a->kafka[i].name, b->kafka[i].name) ||
            !same_string(a->kafka[i].value, b->kafka[i].value))
            return 0;
    return 1;
}

void config_reload(config_t *running, config_t *fresh,
                   void (*restart_changed)(const char *key, void *opaque), void *opaque) {
    if (!same_kafka(running, fresh)) restart_changed("kafka.*", opaque);
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key_t *k = &config_keys[i];
        if (k->applies != CONFIG_APPLIES_RELOAD) {
            if (!same_value(running, fresh, k)) restart_changed(k->name, opaque);
            continue;
        }
        if (k->type == CT_INT) {
            *int_field(running, k) = *int_field(fresh, k);
        } else {
            char *v = *str_field(running, k);
            *str_field(running, k) = *str_field(fresh, k);
            *str_field(fresh, k) = v; /* the old value, freed with fresh */
        }
        char *w = running->wheres[i];
        running->wheres[i] = fresh->wheres[i];
        fresh->wheres[i] = w;
    }
}

const char *config_key_name(size_t i) {
    return i < NKEYS ? config_keys[i].name : NULL;
}

config_applies_t config_key_applies(const char *key) {
    const config_key_t *k = find_key(key);
    return k ? k->applies : CONFIG_APPLIES_UNSET;
}

static const char *applies_name(config_applies_t a) {
    return a == CONFIG_APPLIES_RELOAD ? "reload" : a == CONFIG_APPLIES_RESTART ? "restart" : "?";
}

void config_print_reference(void) {
    char env[128];
    printf("%-22s %-30s %-17s %-8s %s\n", "key", "environment", "default", "applies", "meaning");
    for (size_t i = 0; i < NKEYS; i++) {
        const config_key_t *k = &config_keys[i];
        env_name(k->name, env, sizeof(env));
        printf("%-22s %-30s %-17s %-8s %s\n", k->name, env, k->def ? k->def : "-",
               applies_name(k->applies), k->doc);
    }
    printf("%-22s %-30s %-17s %-8s %s\n", "kafka.<property>", "TIERD_KAFKA_<PROPERTY>", "-",
           applies_name(CONFIG_APPLIES_RESTART),
           "Any librdkafka property, passed through (group.id defaults to tierd)");
    printf("\napplies: reload = a SIGHUP applies a new value between batches; restart = a new "
           "value waits for the next start, and a SIGHUP logs that it changed.\n");
    printf("\nCredentials in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) fill these keys "
           "when unset:\n");
    for (size_t i = 0; i < NCREDENTIALS; i++)
        printf("  %-24s -> %s\n", config_credentials[i].name, config_credentials[i].key);
    printf("\nOther TIERD_* variables are refused, except these, which are not keys:\n");
    for (size_t i = 0; i < NENV_OTHERS; i++)
        printf("  %-30s %s\n", config_env_others[i].name, config_env_others[i].what);
}
