/*
 * config.h -- tierd's configuration: one YAML file, every key overridable
 * by an environment variable, kafka.* passed to librdkafka untouched.
 *
 * The table in config.c is the single source of truth: parsing, defaults,
 * bounds, whether a key changes at reload, `tierd --help-config` and the
 * reference in docs/configuration.md all come from it.
 */
#ifndef TIERD_CONFIG_H
#define TIERD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* When a new value of a key takes effect.  Every key of the table says
 * which (0 is no answer, and test_config refuses it). */
typedef enum config_applies {
    CONFIG_APPLIES_UNSET = 0,
    CONFIG_APPLIES_RELOAD,  /* at SIGHUP, between batches */
    CONFIG_APPLIES_RESTART, /* at the next start; a SIGHUP logs the change */
} config_applies_t;

typedef struct config_kv {
    char *name; /* librdkafka property, e.g. "bootstrap.servers" */
    char *value;
    char *where; /* "file:line" or "env TIERD_KAFKA_..." for error messages */
} config_kv_t;

typedef struct config {
    /* kafka.* pass-through, in file order, env overrides last */
    config_kv_t *kafka;
    size_t nkafka;

    char *topic_orders;
    char *topic_dead_letter;
    char *topic_profiles;
    char *topic_tier_changes;
    char *topic_quota_events;
    char *policy_path; /* NULL: the built-in supply-tiers policy */
    int64_t idle_close_after_s;

    char *redis_cluster; /* seed nodes, "host:port,host:port"; NULL: a single node */
    char *redis_host;
    int64_t redis_port;
    char *redis_unix_socket;
    char *redis_user;
    char *redis_password; /* secret: never logged */
    char *redis_password_file;
    int64_t redis_db;
    int64_t redis_timeout_ms;
    char *key_prefix;

    /* The schema registry (registry.h); url NULL: none. */
    char *registry_url;
    char *registry_user;
    char *registry_password; /* secret: never logged */
    char *registry_password_file;
    char *registry_ca_file;
    int64_t registry_timeout_ms;
    int64_t registry_cache_size;

    char *time_zone;
    char *currency;
    int64_t window_months;
    int64_t max_future_skew_s;
    int64_t min_placed_at_s; /* orders placed earlier are BAD_PLACED_AT */

    int64_t batch_max_orders;
    int64_t batch_max_ms;
    int64_t shutdown_timeout_ms; /* SIGTERM to exit, at most */

    char *http_listen; /* "" disables the HTTP server */
    char *log_level;
    char *instance_id;

    /* Where each key of the table got its value ("file:line",
     * "environment TIERD_...", "credential ..."): read it through
     * config_where. */
    char **wheres;
} config_t;

/* Loads defaults, then the file (may be NULL: defaults and env only), then
 * the environment, then fills the secrets still unset from systemd
 * credentials in $CREDENTIALS_DIRECTORY.  On error returns -1 and errstr
 * says "file:line: why" (never a secret). */
int config_load(config_t *c, const char *path, char *errstr, size_t errstr_size);
void config_free(config_t *c);
/* Prints the reference table (key, env name, default, when a change
 * applies, description): `tierd --help-config`, and through
 * scripts/config-reference the table in docs/configuration.md. */
void config_print_reference(void);
/* SIGHUP, once fresh has loaded and is valid: moves into running the
 * value (and its "where") of every key marked CONFIG_APPLIES_RELOAD, and
 * calls restart_changed(key, opaque) for every key marked
 * CONFIG_APPLIES_RESTART whose value in fresh differs from running's
 * ("kafka.*" once for any kafka property); those keep running's value.
 * Nothing is allocated: values are swapped, so fresh holds the old ones
 * and config_free(fresh) releases them. */
void config_reload(config_t *running, config_t *fresh,
                   void (*restart_changed)(const char *key, void *opaque), void *opaque);
/* The i-th key of the table (NULL past the last) and when a change of it
 * applies (CONFIG_APPLIES_UNSET for a name that is no key): for tests. */
const char *config_key_name(size_t i);
config_applies_t config_key_applies(const char *key);
/* Where key (a table key such as "time_zone") got its value: "file:line",
 * "environment TIERD_TIME_ZONE", "credential NAME" or "default".  For
 * refusals made after config_load (e.g. of the time zone), so they name
 * the place to fix as config_load's own do. */
const char *config_where(const config_t *c, const char *key);
/* Looks up a kafka.* value, NULL if unset. */
const char *config_kafka_get(const config_t *c, const char *name);

#endif
