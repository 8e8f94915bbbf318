/* Configuration: defaults, file, environment precedence, and refusals
 * that name the file and line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"

static char path[64];

static void write_file(const char *text) {
    strcpy(path, "/tmp/tierd-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static int teardown(void **state) {
    (void)state;
    unlink(path);
    unsetenv("TIERD_REDIS_PORT");
    unsetenv("TIERD_KAFKA_SASL_USERNAME");
    unsetenv("TIERD_KAFKA_BOOTSTRAP_SERVERS");
    unsetenv("TIERD_REDIS_PASSWORD");
    unsetenv("CREDENTIALS_DIRECTORY");
    return 0;
}

static void test_file_then_env(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    write_file("kafka:\n  bootstrap.servers: \"k:9092\"\n  group.id: g\n"
               "redis:\n  port: 7000\n  db: 2\ntime_zone: Asia/Shanghai\n"
               "window_months: 6\n");
    setenv("TIERD_REDIS_PORT", "7001", 1);
    setenv("TIERD_KAFKA_SASL_USERNAME", "svc", 1);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.redis_port, 7001); /* environment wins */
    assert_int_equal(c.redis_db, 2);
    assert_int_equal(c.window_months, 6);
    assert_string_equal(c.time_zone, "Asia/Shanghai");
    assert_string_equal(config_kafka_get(&c, "bootstrap.servers"), "k:9092");
    assert_string_equal(config_kafka_get(&c, "group.id"), "g");
    assert_string_equal(config_kafka_get(&c, "sasl.username"), "svc");
    assert_string_equal(c.currency, "CNY"); /* default */
    config_free(&c);
}

/* redis.cluster: a YAML list, joined with commas; the environment gives
 * the same comma-separated. */
static void test_cluster_list(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    write_file("kafka:\n  bootstrap.servers: \"k:9092\"\n"
               "redis:\n  cluster:\n    - \"redis-a:6379\"\n    - redis-b:6379\n"
               "    - \"[::1]:7000\"\n  port: 7000\n");
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_string_equal(c.redis_cluster, "redis-a:6379,redis-b:6379,[::1]:7000");
    assert_int_equal(c.redis_port, 7000); /* a key after the list still counts */
    config_free(&c);
    setenv("TIERD_REDIS_CLUSTER", "x:1,y:2", 1);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_string_equal(c.redis_cluster, "x:1,y:2");
    config_free(&c);
    unsetenv("TIERD_REDIS_CLUSTER");
    unlink(path);
}

static void expect_refusal(const char *text, const char *needle) {
    config_t c;
    char err[512] = "";
    write_file(text);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
    if (!strstr(err, needle)) fail_msg("error \"%s\" lacks \"%s\"", err, needle);
    config_free(&c);
    unlink(path);
}

static void test_refusals_name_file_and_line(void **state) {
    (void)state;
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  prot: 1\n",
                   ":4: unknown key \"redis.prot\"");
    expect_refusal("kafka:\n  bootstrap.servers: k\nwindow_months: 0\n",
                   ":3: window_months: 0 is outside 1..24");
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  port: many\n",
                   ":4: redis.port: \"many\" is not a whole number");
    expect_refusal("kafka:\n  bootstrap.servers: k\ncurrency: yuan\n",
                   ":3: currency: \"yuan\" is not an ISO 4217 code");
    expect_refusal("kafka:\n  bootstrap.servers: k\nlog_level: loud\n",
                   ":3: log_level: \"loud\" is not error, warn, info or debug");
    expect_refusal("kafka:\n  bootstrap.servers: k\ntopics:\n  orders: a\n  profiles: a\n",
                   ":5: topics.profiles: \"a\" is topics.orders's too");
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  host: \"\"\n",
                   ":4: redis.host: must not be empty");
    expect_refusal("kafka:\n  bootstrap.servers: k\nhttp:\n  listen: localhost:80\n",
                   ":4: http.listen: metrics: listen address \"localhost:80\"");
    expect_refusal("kafka: [a, b]\n", ":1: a list is used only by redis.cluster");
    expect_refusal("kafka:\n  bootstrap.servers: k:1\nredis:\n  cluster:\n    - a:1\n    - [b]\n",
                   "redis.cluster: the list holds host:port strings only");
    expect_refusal("kafka:\n  bootstrap.servers: k:1\nredis:\n  cluster: [\"a:1,b:2\"]\n",
                   "an item is empty, holds a comma");
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis: {port: 1\n", "YAML error");
    expect_refusal("redis:\n  port: 1\n", "kafka.bootstrap.servers is required");
}

/* A key twice is refused at the second, whatever the nesting: libyaml
 * would hand both over and the last would win in silence. */
static void test_duplicate_keys(void **state) {
    (void)state;
    expect_refusal("kafka:\n  bootstrap.servers: k\ncurrency: CNY\ncurrency: USD\n",
                   ":4: \"currency\" is set twice (first at line 3)");
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  port: 1\n  db: 2\n  port: 2\n",
                   ":6: \"redis.port\" is set twice (first at line 4)");
    expect_refusal("kafka:\n  bootstrap.servers: k\n  bootstrap.servers: j\n",
                   ":3: \"kafka.bootstrap.servers\" is set twice (first at line 2)");
    /* a whole section twice: the first would be dropped, not merged */
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  host: a\nredis:\n  port: 2\n",
                   ":5: \"redis\" is set twice (first at line 3)");
    /* a dotted key and a nested one name the same key */
    expect_refusal("redis.port: 1\nkafka:\n  bootstrap.servers: k\nredis:\n  port: 2\n",
                   ":5: \"redis.port\" is set twice (first at line 1)");
    expect_refusal("kafka:\n  bootstrap.servers: k\ntopics: {orders: a, orders: b}\n",
                   ":3: \"topics.orders\" is set twice (first at line 3)");

    /* the same leaf name under different sections is two keys */
    config_t c;
    char err[512] = "";
    write_file("kafka:\n  bootstrap.servers: k\nbatch:\n  max_ms: 5\nredis:\n  port: 7\n"
               "topics:\n  orders: o\n");
    if (config_load(&c, path, err, sizeof(err)) != 0) fail_msg("refused: %s", err);
    assert_int_equal(c.batch_max_ms, 5);
    config_free(&c);
}

static void expect_env_refusal(const char *var, const char *value, const char *needle) {
    config_t c;
    char err[512] = "";
    setenv(var, value, 1);
    assert_int_equal(config_load(&c, NULL, err, sizeof(err)), -1);
    unsetenv(var);
    if (!strstr(err, needle)) fail_msg("error \"%s\" lacks \"%s\"", err, needle);
    config_free(&c);
}

/* TIERD_* names no key: refused by name, with the nearest key when one is
 * close; the variables of tierd's tools and tests are not keys but pass. */
static void test_unknown_environment(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    setenv("TIERD_KAFKA_BOOTSTRAP_SERVERS", "k:1", 1);
    expect_env_refusal("TIERD_REDIS_HOTS", "r",
                       "environment TIERD_REDIS_HOTS: no such key; did you mean TIERD_REDIS_HOST?");
    expect_env_refusal("TIERD_NOTHING_LIKE_IT", "1",
                       "environment TIERD_NOTHING_LIKE_IT: no such key (");
    expect_env_refusal("TIERD_KAFKA_", "1",
                       "environment TIERD_KAFKA_: names no librdkafka property");
    /* bad values of the environment name their variable too */
    expect_env_refusal("TIERD_CURRENCY", "usd", "environment TIERD_CURRENCY: currency:");
    expect_env_refusal("TIERD_LOG_LEVEL", "chatty", "environment TIERD_LOG_LEVEL: log_level:");

    static const char *const allowed[] = {
        "TIERD_CONFIG",
        "TIERD_BIN",
        "TIERD_FAULT_COMMIT_STALL_FILE",
        "TIERD_FAULT_REVIEW_STALL_FILE",
        "TIERD_FAULT_PUBLISH_STALL_FILE",
        "TIERD_TEST_REDIS_PORT",
        "TIERD_FUZZ_ITERS",
        "TIERD_KEEP_RUN_DIR",
        "TIERD_REDIS_APPENDFSYNC",
        "TIERD_CACHE",
        "TIERD_SERVICES_TIMEOUT",
        "TIERD_SERVICES_STOP_TIMEOUT",
    };
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) setenv(allowed[i], "x", 1);
    setenv("TIERD_KAFKA_CLIENT_ID", "me", 1);
    int rc = config_load(&c, NULL, err, sizeof(err));
    for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++) unsetenv(allowed[i]);
    unsetenv("TIERD_KAFKA_CLIENT_ID");
    if (rc != 0) fail_msg("refused: %s", err);
    assert_string_equal(config_kafka_get(&c, "client.id"), "me");
    config_free(&c);
}

/* config_where says where each key got its value. */
static void test_where(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    write_file("kafka:\n  bootstrap.servers: k\nredis:\n  port: 7000\ntime_zone: UTC\n");
    setenv("TIERD_REDIS_PORT", "7001", 1);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    char want[128];
    snprintf(want, sizeof(want), "%s:5", path);
    assert_string_equal(config_where(&c, "time_zone"), want);
    assert_string_equal(config_where(&c, "redis.port"), "environment TIERD_REDIS_PORT");
    assert_string_equal(config_where(&c, "currency"), "default");
    assert_string_equal(config_where(&c, "no.such.key"), "default");
    config_free(&c);
}

/* The placed_at floor and the shutdown deadline: defaults, bounds, the
 * environment. */
static void test_min_placed_at_and_shutdown_timeout(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    write_file("kafka:\n  bootstrap.servers: k\n");
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_int_equal(c.min_placed_at_s, 946684800); /* 2000-01-01T00:00:00Z */
    assert_int_equal(c.shutdown_timeout_ms, 20000);
    config_free(&c);
    unlink(path);

    write_file("kafka:\n  bootstrap.servers: k\nmin_placed_at_s: 0\nshutdown_timeout_ms: 1000\n");
    setenv("TIERD_SHUTDOWN_TIMEOUT_MS", "600000", 1);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    unsetenv("TIERD_SHUTDOWN_TIMEOUT_MS");
    assert_int_equal(c.min_placed_at_s, 0);
    assert_int_equal(c.shutdown_timeout_ms, 600000);
    config_free(&c);
    unlink(path);

    expect_refusal("kafka:\n  bootstrap.servers: k\nmin_placed_at_s: -1\n",
                   ":3: min_placed_at_s: -1 is outside 0..4102444800");
    expect_refusal("kafka:\n  bootstrap.servers: k\nmin_placed_at_s: 4102444801\n",
                   ":3: min_placed_at_s: 4102444801 is outside 0..4102444800");
    /* in bounds but after now: every order would be refused */
    expect_refusal("kafka:\n  bootstrap.servers: k\nmin_placed_at_s: 4102444800\n",
                   ":3: min_placed_at_s: 4102444800 is in the future");
    expect_refusal("kafka:\n  bootstrap.servers: k\nshutdown_timeout_ms: 999\n",
                   ":3: shutdown_timeout_ms: 999 is outside 1000..600000");
    expect_refusal("kafka:\n  bootstrap.servers: k\nshutdown_timeout_ms: 600001\n",
                   ":3: shutdown_timeout_ms: 600001 is outside 1000..600000");
}

static void test_no_file_env_only(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    setenv("TIERD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1", 1);
    assert_int_equal(config_load(&c, NULL, err, sizeof(err)), 0);
    assert_string_equal(config_kafka_get(&c, "bootstrap.servers"), "127.0.0.1:1");
    assert_int_equal(c.redis_port, 6379);
    config_free(&c);
}

/* A systemd credentials directory: $CREDENTIALS_DIRECTORY/<name>. */
static char creddir[64];

static void cred_write(const char *name, const char *text) {
    char p[128];
    snprintf(p, sizeof(p), "%s/%s", creddir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    fclose(f);
}

static int cred_setup(void **state) {
    (void)state;
    strcpy(creddir, "/tmp/tierd-test-creds-XXXXXX");
    assert_non_null(mkdtemp(creddir));
    setenv("CREDENTIALS_DIRECTORY", creddir, 1);
    return 0;
}

static int cred_teardown(void **state) {
    static const char *names[] = {"redis-password", "kafka-sasl-password", "kafka-ssl-key-password",
                                  "other-password"};
    char p[128];
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", creddir, names[i]);
        if (unlink(p) != 0) rmdir(p); /* one test makes a directory of one */
    }
    rmdir(creddir);
    return teardown(state);
}

/* Credentials fill the secrets nobody set; a missing one is fine. */
static void test_credentials_fill_unset_secrets(void **state) {
    (void)state;
    config_t c;
    char err[512] = "";
    cred_write("redis-password", "r-secret\n");
    cred_write("kafka-sasl-password", "k-secret");
    cred_write("other-password", "ignored");
    write_file("kafka:\n  bootstrap.servers: k:9092\n");
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_string_equal(c.redis_password, "r-secret"); /* without the newline */
    assert_string_equal(config_kafka_get(&c, "sasl.password"), "k-secret");
    assert_null(config_kafka_get(&c, "ssl.key.password")); /* not provided */
    config_free(&c);

    /* Without CREDENTIALS_DIRECTORY the same files mean nothing. */
    unsetenv("CREDENTIALS_DIRECTORY");
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_null(c.redis_password);
    assert_null(config_kafka_get(&c, "sasl.password"));
    config_free(&c);
}

/* A secret set in the file, the environment or by password_file wins. */
static void test_credentials_never_override(void **state) {
    (void)state;
    config_t c;
    char err[512] = "", pwfile[128];
    cred_write("redis-password", "r-credential");
    cred_write("kafka-sasl-password", "k-credential");
    cred_write("kafka-ssl-key-password", "t-credential");
    write_file("kafka:\n  bootstrap.servers: k:9092\n  sasl.password: k-file\n");
    setenv("TIERD_REDIS_PASSWORD", "r-env", 1);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_string_equal(c.redis_password, "r-env");
    assert_string_equal(config_kafka_get(&c, "sasl.password"), "k-file");
    assert_string_equal(config_kafka_get(&c, "ssl.key.password"), "t-credential");
    config_free(&c);
    unsetenv("TIERD_REDIS_PASSWORD");
    unlink(path);

    /* redis.password_file is an explicit choice too. */
    snprintf(pwfile, sizeof(pwfile), "%s/other-password", creddir);
    cred_write("other-password", "r-pwfile\r\n");
    char text[256];
    snprintf(text, sizeof(text),
             "kafka:\n  bootstrap.servers: k:9092\nredis:\n  password_file: %s\n", pwfile);
    write_file(text);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), 0);
    assert_string_equal(c.redis_password, "r-pwfile");
    config_free(&c);
}

/* A credential that is there but unusable is refused, naming the file and
 * never its contents. */
static void test_credentials_refusals(void **state) {
    (void)state;
    config_t c;
    char err[512] = "", big[5000];
    write_file("kafka:\n  bootstrap.servers: k:9092\n");

    cred_write("kafka-sasl-password", "\n");
    assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
    if (!strstr(err, "kafka-sasl-password") || !strstr(err, "is empty"))
        fail_msg("unexpected error \"%s\"", err);
    config_free(&c);

    memset(big, 'h', sizeof(big) - 1);
    memcpy(big, "hunter2", 7);
    big[sizeof(big) - 1] = '\0';
    cred_write("kafka-sasl-password", big);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
    if (!strstr(err, "longer than 4096 bytes")) fail_msg("unexpected error \"%s\"", err);
    if (strstr(err, "hunter2")) fail_msg("the secret leaked into \"%s\"", err);
    config_free(&c);

    char dirpath[128];
    snprintf(dirpath, sizeof(dirpath), "%s/redis-password", creddir);
    assert_int_equal(mkdir(dirpath, 0700), 0);
    assert_int_equal(config_load(&c, path, err, sizeof(err)), -1);
    if (!strstr(err, "credential redis-password")) fail_msg("unexpected error \"%s\"", err);
    config_free(&c);
}

/* ---- reload: each key's flag against what config_reload does ---------- */

/* For every key of the table: a line that gives it a valid value other
 * than its default, the field it lands in, and when tierd can use a new
 * value, said here a second time, from what the running daemon does with
 * it: RELOAD when the consumer reads it from the running configuration
 * (batch.*, shutdown_timeout_ms) or do_reload derives it again (the
 * policy, log_level, the validation rules, the idle rule); RESTART when it
 * was used once at start (connections, subscriptions, names, the month
 * calendar, the window the stored states are cut to).  A key added to the
 * table without a case here fails, and so does a flag changed in the
 * table alone: change both, and do_reload with them. */
static const struct reload_case {
    const char *key, *yaml;
    size_t offset;
    int is_int;
    config_applies_t applies;
} reload_cases[] = {
#define RC(k, y, f, i, a)                                                                          \
    { k, y, offsetof(config_t, f), i, CONFIG_APPLIES_##a }
    RC("topics.orders", "topics:\n  orders: o2\n", topic_orders, 0, RESTART),
    RC("topics.dead_letter", "topics:\n  dead_letter: d2\n", topic_dead_letter, 0, RESTART),
    RC("topics.profiles", "topics:\n  profiles: p2\n", topic_profiles, 0, RESTART),
    RC("topics.tier_changes", "topics:\n  tier_changes: t2\n", topic_tier_changes, 0, RESTART),
    RC("topics.quota_events", "topics:\n  quota_events: q2\n", topic_quota_events, 0, RESTART),
    RC("policy", "policy: /etc/tierd/other.yaml\n", policy_path, 0, RELOAD),
    RC("idle_close_after_s", "idle_close_after_s: 60\n", idle_close_after_s, 1, RELOAD),
    RC("redis.cluster", "redis:\n  cluster: [\"r1:7000\", \"r2:7000\"]\n", redis_cluster, 0,
       RESTART),
    RC("redis.host", "redis:\n  host: 10.0.0.2\n", redis_host, 0, RESTART),
    RC("redis.port", "redis:\n  port: 6380\n", redis_port, 1, RESTART),
    RC("redis.unix_socket", "redis:\n  unix_socket: /run/r.sock\n", redis_unix_socket, 0, RESTART),
    RC("redis.user", "redis:\n  user: tierd\n", redis_user, 0, RESTART),
    RC("redis.password", "redis:\n  password: pw2\n", redis_password, 0, RESTART),
    RC("redis.password_file", NULL, redis_password_file, 0, RESTART), /* written by the test */
    RC("redis.db", "redis:\n  db: 3\n", redis_db, 1, RESTART),
    RC("redis.timeout_ms", "redis:\n  timeout_ms: 900\n", redis_timeout_ms, 1, RESTART),
    RC("redis.key_prefix", "redis:\n  key_prefix: t2\n", key_prefix, 0, RESTART),
#define SR "schema_registry:\n  url: http://r:8081\n"
    RC("schema_registry.url", SR, registry_url, 0, RESTART),
    RC("schema_registry.user", SR "  user: u\n", registry_user, 0, RESTART),
    RC("schema_registry.password", SR "  user: u\n  password: p\n", registry_password, 0, RESTART),
    /* %s: the password file the test writes */
    RC("schema_registry.password_file", SR "  user: u\n  password_file: %s\n",
       registry_password_file, 0, RESTART),
    RC("schema_registry.ca_file", SR "  ca_file: /etc/ssl/ca.pem\n", registry_ca_file, 0, RESTART),
    RC("schema_registry.timeout_ms", SR "  timeout_ms: 300\n", registry_timeout_ms, 1, RESTART),
    RC("schema_registry.cache_size", SR "  cache_size: 5\n", registry_cache_size, 1, RESTART),
#undef SR
    RC("time_zone", "time_zone: Asia/Shanghai\n", time_zone, 0, RESTART),
    RC("currency", "currency: USD\n", currency, 0, RESTART),
    RC("window_months", "window_months: 6\n", window_months, 1, RESTART),
    RC("max_future_skew_s", "max_future_skew_s: 60\n", max_future_skew_s, 1, RELOAD),
    RC("min_placed_at_s", "min_placed_at_s: 0\n", min_placed_at_s, 1, RELOAD),
    RC("batch.max_orders", "batch:\n  max_orders: 7\n", batch_max_orders, 1, RELOAD),
    RC("batch.max_ms", "batch:\n  max_ms: 9\n", batch_max_ms, 1, RELOAD),
    RC("shutdown_timeout_ms", "shutdown_timeout_ms: 5000\n", shutdown_timeout_ms, 1, RELOAD),
    RC("http.listen", "http:\n  listen: 127.0.0.1:0\n", http_listen, 0, RESTART),
    RC("log_level", "log_level: debug\n", log_level, 0, RELOAD),
    RC("instance_id", "instance_id: other\n", instance_id, 0, RESTART),
#undef RC
};

/* The keys config_reload reported as waiting for a restart, joined. */
typedef struct reported {
    char keys[512];
} reported_t;

static void report(const char *key, void *opaque) {
    reported_t *r = opaque;
    strncat(r->keys, key, sizeof(r->keys) - strlen(r->keys) - 2);
    strcat(r->keys, " ");
}

static int reported_has(const reported_t *r, const char *key) {
    size_t n = strlen(key);
    for (const char *p = r->keys; (p = strstr(p, key)) != NULL; p += n)
        if ((p == r->keys || p[-1] == ' ') && p[n] == ' ') return 1;
    return 0;
}

static int field_equal(config_t *a, config_t *b, const struct reload_case *rc) {
    if (rc->is_int)
        return *(int64_t *)((char *)a + rc->offset) == *(int64_t *)((char *)b + rc->offset);
    const char *x = *(char **)((char *)a + rc->offset), *y = *(char **)((char *)b + rc->offset);
    return (!x && !y) || (x && y && strcmp(x, y) == 0);
}

static void load_text(config_t *c, char *file, size_t file_size, const char *text) {
    char err[512] = "";
    snprintf(file, file_size, "/tmp/tierd-test-reload-XXXXXX");
    int fd = mkstemp(file);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    if (config_load(c, file, err, sizeof(err)) != 0) fail_msg("%s refused: %s", text, err);
}

/* Every key has a flag, the one reload_cases[] expects; a changed key
 * marked reload is moved into the running configuration (value and
 * where) and not reported; one marked restart is reported and keeps its
 * running value.  do_reload in main.c calls config_reload, then derives
 * what it needs from the running values. */
static void test_reload_follows_the_table(void **state) {
    (void)state;
    static const char base[] = "kafka:\n  bootstrap.servers: k:9092\n";
    char pwfile[64] = "/tmp/tierd-test-pw-XXXXXX", text[512];
    int fd = mkstemp(pwfile);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "pw3\n", 4), 4);
    close(fd);

    size_t nkeys = 0;
    for (const char *key; (key = config_key_name(nkeys)) != NULL; nkeys++) {
        const struct reload_case *rc = NULL;
        for (size_t j = 0; j < sizeof(reload_cases) / sizeof(reload_cases[0]); j++)
            if (strcmp(reload_cases[j].key, key) == 0) rc = &reload_cases[j];
        if (!rc) fail_msg("%s: no case in reload_cases[]: add one", key);
        config_applies_t applies = config_key_applies(key);
        if (applies != CONFIG_APPLIES_RELOAD && applies != CONFIG_APPLIES_RESTART)
            fail_msg("%s: the table does not say whether it changes at reload", key);
        if (applies != rc->applies)
            fail_msg("%s: the table says %s, tierd can use a new value %s", key,
                     applies == CONFIG_APPLIES_RELOAD ? "reload" : "restart",
                     rc->applies == CONFIG_APPLIES_RELOAD ? "at once" : "only at a restart");

        config_t running, fresh, want;
        char f1[64], f2[64], f3[64];
        reported_t rep = {""};
        const char *at = rc->yaml ? strstr(rc->yaml, "%s") : NULL;
        if (at)
            snprintf(text, sizeof(text), "%s%.*s%s%s", base, (int)(at - rc->yaml), rc->yaml, pwfile,
                     at + 2);
        else if (rc->yaml)
            snprintf(text, sizeof(text), "%s%s", base, rc->yaml);
        else
            snprintf(text, sizeof(text), "%sredis:\n  password_file: %s\n", base, pwfile);
        load_text(&running, f1, sizeof(f1), base);
        load_text(&fresh, f2, sizeof(f2), text);
        load_text(&want, f3, sizeof(f3), text);
        if (field_equal(&running, &want, rc)) fail_msg("%s: the case changes nothing", key);

        config_reload(&running, &fresh, report, &rep);
        if (applies == CONFIG_APPLIES_RELOAD) {
            if (rep.keys[0]) fail_msg("%s (reload): reported \"%s\"", key, rep.keys);
            if (!field_equal(&running, &want, rc)) fail_msg("%s (reload): not moved", key);
            if (strncmp(config_where(&running, key), f2, strlen(f2)) != 0)
                fail_msg("%s (reload): where is %s", key, config_where(&running, key));
        } else {
            if (!reported_has(&rep, key)) fail_msg("%s (restart): not reported", key);
            if (field_equal(&running, &want, rc)) fail_msg("%s (restart): applied now", key);
        }
        for (size_t j = 0; j < sizeof(reload_cases) / sizeof(reload_cases[0]); j++)
            if (reported_has(&rep, reload_cases[j].key) &&
                config_key_applies(reload_cases[j].key) != CONFIG_APPLIES_RESTART)
                fail_msg("%s: reported %s, which changes at reload", key, reload_cases[j].key);
        config_free(&running);
        config_free(&fresh);
        config_free(&want);
        unlink(f1);
        unlink(f2);
        unlink(f3);
    }
    assert_int_equal(nkeys, sizeof(reload_cases) / sizeof(reload_cases[0]));
    assert_int_equal(config_key_applies("no.such.key"), CONFIG_APPLIES_UNSET);
    unlink(pwfile);
}

/* kafka.* waits for a restart; a reload that changes nothing says nothing. */
static void test_reload_kafka_and_nothing(void **state) {
    (void)state;
    config_t running, fresh;
    char f1[64], f2[64];
    reported_t rep = {""};
    load_text(&running, f1, sizeof(f1), "kafka:\n  bootstrap.servers: k:9092\n");
    load_text(&fresh, f2, sizeof(f2), "kafka:\n  bootstrap.servers: k:9092\n");
    config_reload(&running, &fresh, report, &rep);
    assert_string_equal(rep.keys, "");
    config_free(&fresh);
    unlink(f2);

    load_text(&fresh, f2, sizeof(f2), "kafka:\n  bootstrap.servers: k:9093\n");
    config_reload(&running, &fresh, report, &rep);
    assert_string_equal(rep.keys, "kafka.* ");
    assert_string_equal(config_kafka_get(&running, "bootstrap.servers"), "k:9092");
    config_free(&running);
    config_free(&fresh);
    unlink(f1);
    unlink(f2);
}

/* The tests set the TIERD_* variables they need; any from the calling
 * shell would change what config_load sees (an unknown one is refused). */
static void clear_tierd_environment(void) {
    extern char **environ;
    for (;;) {
        char **e = environ;
        while (*e && strncmp(*e, "TIERD_", 6) != 0) e++;
        if (!*e) return;
        char *name = strndup(*e, strcspn(*e, "="));
        assert_non_null(name);
        assert_int_equal(unsetenv(name), 0);
        free(name);
    }
}

int main(void) {
    clear_tierd_environment();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_file_then_env, teardown),
        cmocka_unit_test_teardown(test_cluster_list, teardown),
        cmocka_unit_test_teardown(test_refusals_name_file_and_line, teardown),
        cmocka_unit_test_teardown(test_duplicate_keys, teardown),
        cmocka_unit_test_teardown(test_unknown_environment, teardown),
        cmocka_unit_test_teardown(test_where, teardown),
        cmocka_unit_test_teardown(test_min_placed_at_and_shutdown_timeout, teardown),
        cmocka_unit_test_teardown(test_no_file_env_only, teardown),
        cmocka_unit_test_setup_teardown(test_credentials_fill_unset_secrets, cred_setup,
                                        cred_teardown),
        cmocka_unit_test_setup_teardown(test_credentials_never_override, cred_setup, cred_teardown),
        cmocka_unit_test_setup_teardown(test_credentials_refusals, cred_setup, cred_teardown),
        cmocka_unit_test_teardown(test_reload_follows_the_table, teardown),
        cmocka_unit_test_teardown(test_reload_kafka_and_nothing, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
