/* Configuration: defaults, file, environment precedence, and refusals
 * that name the file and line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  prot: 1\n", ":4: unknown key \"redis.prot\"");
    expect_refusal("kafka:\n  bootstrap.servers: k\nwindow_months: 0\n", ":3: window_months: 0 is outside 1..24");
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis:\n  port: many\n", ":4: redis.port: \"many\" is not a whole number");
    expect_refusal("kafka:\n  bootstrap.servers: k\ncurrency: yuan\n", "currency");
    expect_refusal("kafka:\n  bootstrap.servers: k\nlog_level: loud\n", "log_level");
    expect_refusal("kafka: [a, b]\n", ":1: lists are not used");
    expect_refusal("kafka:\n  bootstrap.servers: k\nredis: {port: 1\n", "YAML error");
    expect_refusal("redis:\n  port: 1\n", "kafka.bootstrap.servers is required");
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_file_then_env, teardown),
        cmocka_unit_test_teardown(test_refusals_name_file_and_line, teardown),
        cmocka_unit_test_teardown(test_no_file_env_only, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
