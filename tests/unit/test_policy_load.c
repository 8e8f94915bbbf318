/*
 * test_policy_load.c -- a wrong policy file is refused with FILE:LINE: reason.
 *
 * Each case takes a small valid policy, changes one line, writes it to a
 * temp dir and loads it; the line expected is the line of the change, found
 * in the text itself so the cases do not depend on counting by hand.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tierd/policy.h"

static const char base[] = "name: t\n"
                           "version: \"1\"\n"
                           "window_months: 3\n"
                           "new_customer:\n"
                           "  months: 3\n"
                           "  tier: 2\n"
                           "upgrade:\n"
                           "  rule: hysteresis\n"
                           "  cap_ratio: 0.9\n"
                           "quota:\n"
                           "  warning_ratio: 0.9\n"
                           "holidays:\n"
                           "  - { name: h, from: 2025-01-20, to: 2025-02-12 }\n"
                           "score:\n"
                           "  - { kind: linear, metric: qty_avg, lo: 0, hi: 2000, points: 45 }\n"
                           "  - { kind: steps, metric: orders, steps: [ { at: 4, points: 10 } ] }\n"
                           "  - { kind: profile, field: cooperation, points: 15 }\n"
                           "tiers:\n"
                           "  - { tier: 1, min_score: 0, cap: 50 }\n"
                           "  - { tier: 2, min_score: 20, cap: 100 }\n"
                           "  - { tier: 3, min_score: 30, cap: 200 }\n";

typedef struct tmp {
    char dir[64];
    char path[128];
} tmp_t;

static int setup(void **state) {
    tmp_t *t = calloc(1, sizeof(*t));
    if (t == NULL) return -1;
    snprintf(t->dir, sizeof(t->dir), "/tmp/tierd-policy-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        free(t);
        return -1;
    }
    snprintf(t->path, sizeof(t->path), "%s/policy.yaml", t->dir);
    *state = t;
    return 0;
}

static int teardown(void **state) {
    tmp_t *t = *state;
    unlink(t->path);
    rmdir(t->dir);
    free(t);
    return 0;
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* 1-based line on which `needle` starts in `text`. */
static int line_at(const char *text, const char *needle) {
    const char *at = strstr(text, needle);
    assert_non_null(at);
    int line = 1;
    for (const char *c = text; c < at; c++) line += *c == '\n';
    return line;
}

static void subst(const char *text, const char *old, const char *new, char *out, size_t size) {
    const char *at = strstr(text, old);
    assert_non_null(at);
    int n = snprintf(out, size, "%.*s%s%s", (int)(at - text), text, new, at + strlen(old));
    assert_true(n > 0 && (size_t)n < size);
}

typedef struct bad {
    const char *old, *new; /* one change to base */
    const char *at;        /* where the error is, in the changed text */
    const char *reason;    /* part of the message */
} bad_t;

static const bad_t cases[] = {
    {"window_months: 3", "windw_months: 3", "windw_months",
     "unknown key 'windw_months' in the policy"},
    {"{ tier: 1, min_score: 0, cap: 50 }", "{ tier: 1, min_score: 0, capp: 50 }", "{ tier: 1",
     "unknown key 'capp' in tier"},
    {"  - { tier: 3, min_score: 30", "  - { tier: 4, min_score: 30", "  - { tier: 4",
     "expected tier 3 here, found tier 4"},
    {"  - { tier: 2, min_score: 20, cap: 100 }\n", "", "  - { tier: 3", "expected tier 2 here"},
    {"{ tier: 3, min_score: 30,", "{ tier: 3, min_score: 20,", "{ tier: 3",
     "min_score 20 must be above 20 of tier 2"},
    {"min_score: 30, cap: 200", "min_score: 30, cap: 100", "{ tier: 3",
     "cap 100 must be above 100 of tier 2"},
    {"{ tier: 1, min_score: 0,", "{ tier: 1, min_score: 5,", "{ tier: 1",
     "tier 1 must have min_score 0"},
    {"{ tier: 2, min_score: 20, cap: 100 }", "{ tier: 2, min_score: 20, floor: 40, cap: 100 }",
     "{ tier: 2", "floor 40 must equal 50"},
    {"{ tier: 2, min_score: 20, cap: 100 }", "{ tier: 2, min_score: 20 }", "{ tier: 2",
     "give every tier a cap, or none"},
    {"kind: linear,", "kind: quadratic,", "{ kind: quadratic",
     "unknown component kind 'quadratic'"},
    {"metric: qty_avg", "metric: qty_average", "{ kind: linear", "unknown metric 'qty_average'"},
    {"field: cooperation", "field: loyalty", "{ kind: profile", "unknown profile field 'loyalty'"},
    {"lo: 0, hi: 2000", "lo: 2000, hi: 2000", "{ kind: linear", "lo 2000 must be below hi 2000"},
    {"field: cooperation, points: 15", "field: cooperation, points: -15", "{ kind: profile",
     "points -15 must not be negative"},
    {"hi: 2000, points: 45", "hi: 2000, points: 80", "score:\n",
     "score components add up to 105 points, more than 100"},
    {"{ at: 4, points: 10 } ]", "{ at: 4, points: 10 }, { at: 4, points: 12 } ]", "{ kind: steps",
     "step at 4 must be above the previous one"},
    {"cap: 200 }", "cap: lots }", "{ tier: 3", "cap 'lots' is not a number"},
    {"cap_ratio: 0.9", "cap_ratio: 0.9000001", "cap_ratio",
     "cap_ratio 0.9000001 has more than 6 decimals"},
    {"cap_ratio: 0.9", "cap_ratio: 1.5", "cap_ratio",
     "cap_ratio 1.5 is out of range (0.000001 to 1)"},
    {"  months: 3", "  months: 2.5", "  months", "months 2.5 must be a whole number"},
    {"window_months: 3", "window_months: 30", "window_months",
     "window_months 30 is out of range (1 to 24)"},
    {"  tier: 2\n", "  tier: 5\n", "  tier: 5", "new_customer tier 5 is above the highest tier 3"},
    {"  rule: hysteresis", "  rule: sideways", "  rule", "unknown value 'sideways' for rule"},
    {"  cap_ratio: 0.9", "  cap_ratio: 0.9\n  grade_at_least: E", "  grade_at_least",
     "unknown grade 'E'"},
    {"from: 2025-01-20", "from: 2025-02-30", "  - { name: h", "from '2025-02-30' is not a date"},
    {"from: 2025-01-20, to: 2025-02-12", "from: 2025-03-01, to: 2025-02-12", "  - { name: h",
     "holiday h ends (20250212) before it starts (20250301)"},
    {"window_months: 3", "window_months: 3\nwindow_months: 4", "window_months: 4",
     "duplicate key 'window_months'"},
    {"name: t\n", "", "version", "the policy has no 'name'"},
    {"  tier: 2\n", "\ttier: 2\n", "\ttier", "YAML syntax"},
    {"holidays:\n  - { name: h, from: 2025-01-20, to: 2025-02-12 }\n", "holidays: soon\n",
     "holidays", "holidays must be a list"},
    {"  - { tier: 1, min_score: 0, cap: 50 }\n  - { tier: 2, min_score: 20, cap: 100 }\n"
     "  - { tier: 3, min_score: 30, cap: 200 }\n",
     "  - { tier: 1, min_score: 0 }\n  - { tier: 2, min_score: 20 }\n", "upgrade:",
     "upgrade rule hysteresis compares purchases with tier caps, but the tiers have none"},
};

static void test_base_policy_loads(void **state) {
    tmp_t *t = *state;
    policy_t p;
    char err[512] = "";
    write_file(t->path, base);
    if (policy_load(t->path, &p, err, sizeof(err)) != 0) fail_msg("base policy refused: %s", err);
    assert_int_equal(p.ntiers, 3);
    assert_int_equal(p.ncomponents, 3);
    assert_int_equal(p.components[1].points_c, 1000);
    assert_int_equal(p.nholidays, 1);
    /* defaults for what the file leaves out */
    assert_string_equal(p.time_zone, "UTC");
    assert_int_equal(p.holiday_flex_ppm, 300000);
    assert_int_equal(p.compliance_cap[2], 2);
    assert_true(p.hard_cap_default == POLICY_NO_HARD_CAP);
    assert_true(p.profile_default.cooperation == 0.6);
}

static void test_each_error_names_file_line_reason(void **state) {
    tmp_t *t = *state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const bad_t *c = &cases[i];
        char text[4096], want[256], err[512] = "";
        policy_t p;
        subst(base, c->old, c->new, text, sizeof(text));
        write_file(t->path, text);
        if (policy_load(t->path, &p, err, sizeof(err)) == 0)
            fail_msg("case %zu (%s -> %s) was accepted", i, c->old, c->new);
        snprintf(want, sizeof(want), "%s:%d: ", t->path, line_at(text, c->at));
        if (strncmp(err, want, strlen(want)) != 0 || strstr(err, c->reason) == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s...%s...\"", i, err, want, c->reason);
    }
}

static void test_missing_file(void **state) {
    tmp_t *t = *state;
    policy_t p;
    char path[200], err[512];
    snprintf(path, sizeof(path), "%s/none.yaml", t->dir);
    assert_int_equal(policy_load(path, &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "none.yaml:0: cannot open"));
}

static void test_empty_file(void **state) {
    tmp_t *t = *state;
    policy_t p;
    char err[512];
    write_file(t->path, "# nothing here\n");
    assert_int_equal(policy_load(t->path, &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, ":1: the policy file is empty"));
}

static void test_failed_load_leaves_policy_alone(void **state) {
    (void)state;
    policy_t p;
    char err[512];
    assert_int_equal(policy_parse(base, strlen(base), "base", &p, err, sizeof(err)), 0);
    policy_t before = p;
    char text[4096];
    subst(base, "cap: 200 }", "cap: 20 }", text, sizeof(text));
    assert_int_equal(policy_parse(text, strlen(text), "reload", &p, err, sizeof(err)), -1);
    assert_memory_equal(&before, &p, sizeof(p));
    assert_non_null(strstr(err, "reload:21: "));
}

static void test_names_and_numbers(void **state) {
    (void)state;
    policy_t p;
    char err[512], text[4096];
    /* tier names, underscores in numbers, hard caps falling back to default */
    subst(base,
          "  - { tier: 1, min_score: 0, cap: 50 }\n  - { tier: 2, min_score: 20, cap: 100 }\n"
          "  - { tier: 3, min_score: 30, cap: 200 }\n",
          "  - { tier: 1, name: C, min_score: 0, cap: 50 }\n"
          "  - { tier: 2, name: B, min_score: 20.5, floor: 50, cap: 1_000 }\n"
          "  - { tier: 3, name: B, min_score: 30, cap: 2_000 }\n",
          text, sizeof(text));
    assert_int_equal(policy_parse(text, strlen(text), "n", &p, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "name 'B' is already tier 2"));

    subst(base, "quota:\n", "quota:\n  hard_caps: { default: 2_000, MALL: 5000 }\n", text,
          sizeof(text));
    if (policy_parse(text, strlen(text), "n", &p, err, sizeof(err)) != 0) fail_msg("%s", err);
    assert_int_equal(p.hard_cap['S' - 'A'], 5000);
    assert_int_equal(p.hard_cap['Z' - 'A'], 2000);
    assert_int_equal(p.hard_cap_default, 2000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_base_policy_loads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_each_error_names_file_line_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file, setup, teardown),
        cmocka_unit_test(test_failed_load_leaves_policy_alone),
        cmocka_unit_test(test_names_and_numbers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
