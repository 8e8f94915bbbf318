/*
 * config.h -- tierd's configuration: one YAML file, every key overridable
 * by an environment variable, kafka.* passed to librdkafka untouched.
 *
 * The table in config.c is the single source of truth: parsing, defaults,
 * bounds, `tierd --help-config` and the README's reference all come from it.
 */
#ifndef TIERD_CONFIG_H
#define TIERD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct config_kv {
    char *name;  /* librdkafka property, e.g. "bootstrap.servers" */
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

    char *redis_host;
    int64_t redis_port;
    char *redis_unix_socket;
    char *redis_user;
    char *redis_password; /* secret: never logged */
    char *redis_password_file;
    int64_t redis_db;
    int64_t redis_timeout_ms;
    char *key_prefix;

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
/* Prints the reference table (key, env name, default, description). */
void config_print_reference(void);
/* Where key (a table key such as "time_zone") got its value: "file:line",
 * "environment TIERD_TIME_ZONE", "credential NAME" or "default".  For
 * refusals made after config_load (e.g. of the time zone), so they name
 * the place to fix as config_load's own do. */
const char *config_where(const config_t *c, const char *key);
/* Looks up a kafka.* value, NULL if unset. */
const char *config_kafka_get(const config_t *c, const char *name);

#endif
