/*
 * test_policy.c -- the decision engine against docs/behaviour.md, on the
 * shipped presets: metrics, score, every review rule and its boundaries,
 * the order and profile triggers, quota events, classification codes.
 * Policy file errors are in test_policy_load.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tierd/policy.h"

#ifndef TIERD_SOURCE_DIR
#error "TIERD_SOURCE_DIR must point at the source tree (for config/policies)"
#endif

typedef struct presets {
    policy_t supply; /* supply-tiers: caps 50 100 200 400 700 1000 1500 2000 */
    policy_t abcd;
    policy_t abc;
} presets_t;

static presets_t g_presets; /* loaded once by group_setup, read-only after */

static int load_preset(const char *name, policy_t *p) {
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/config/policies/%s.yaml", TIERD_SOURCE_DIR, name);
    if (policy_load(path, p, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int group_setup(void **state) {
    if (load_preset("supply-tiers", &g_presets.supply) != 0 ||
        load_preset("abcd-score", &g_presets.abcd) != 0 ||
        load_preset("abc-volume", &g_presets.abc) != 0)
        return -1;
    *state = &g_presets;
    return 0;
}

#define APR_2025 (2025 * 12 + 3)
#define ST(state) (&((presets_t *)*(state))->supply)

/* n months ending with `last`, oldest first: qty[i], grade grades[i] (or A),
 * tier in effect `tier`; nothing else. */
static void fill(policy_month_t *w, size_t n, int32_t last, const int64_t *qty, const char *grades,
                 int32_t tier) {
    for (size_t i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].month = last - (int32_t)(n - 1 - i);
        w[i].qty = qty ? qty[i] : 0;
        w[i].grade = grades ? (policy_grade_t)grades[i] : POLICY_GRADE_A;
        w[i].tier_in_effect = tier;
    }
}

/* Make every month earn full price and range points (avg_price 50000,
 * 40 SKUs), so the score is decided by qty and the profile. */
static void rich(policy_month_t *w, size_t n) {
    for (size_t i = 0; i < n; i++) {
        w[i].amount = w[i].qty * 50000;
        w[i].skus = 40;
        w[i].orders = 3;
    }
}

static policy_customer_t customer(const policy_t *p, int32_t tier, int32_t first_month,
                                  bool evaluated, const policy_month_t *w) {
    policy_customer_t c;
    memset(&c, 0, sizeof(c));
    c.state.tier = tier;
    c.state.first_month = first_month;
    c.state.evaluated = evaluated;
    c.profile = p->profile_default;
    c.window = w;
    c.nwindow = (size_t)p->window;
    return c;
}

static void review_ok(const policy_t *p, const policy_customer_t *c, int32_t month,
                      policy_decision_t *d) {
    char err[256] = "";
    int rc = policy_review(p, c, month, d, err, sizeof(err));
    if (rc != 0) fail_msg("policy_review: %s", err);
    /* policy_review_decide: the same decision; the text only with a change. */
    policy_decision_t *q = calloc(1, sizeof(*q));
    assert_non_null(q);
    assert_int_equal(policy_review_decide(p, c, month, q, err, sizeof(err)), 0);
    if (!q->changed) {
        assert_string_equal(q->explain, "");
        memcpy(q->explain, d->explain, sizeof(q->explain));
    }
    assert_memory_equal(q, d, sizeof(*d));
    free(q);
}

/* ------------------------------------------------------------------ */
/* Presets, metrics, score                                             */

static void test_presets_load(void **state) {
    presets_t *ps = *state;
    assert_string_equal(ps->supply.name, "supply-tiers");
    assert_string_equal(ps->supply.version, "1");
    assert_int_equal(ps->supply.window, 3);
    assert_int_equal(ps->supply.ntiers, 8);
    assert_true(ps->supply.has_caps);
    assert_int_equal(ps->supply.tiers[0].floor, 0);
    assert_int_equal(ps->supply.tiers[3].floor, 200); /* = cap of tier 3 */
    assert_int_equal(ps->supply.tiers[7].cap, 2000);
    assert_int_equal(ps->supply.tiers[7].min_score_c, 8000);
    assert_int_equal(ps->supply.hard_cap['C' - 'A'], 5000);
    assert_int_equal(ps->supply.hard_cap['Q' - 'A'], 2000);
    assert_int_equal(ps->supply.compliance_cap[2], 2);
    assert_int_equal(ps->supply.compliance_cap[3], 1);

    assert_string_equal(ps->abcd.name, "abcd-score");
    assert_int_equal(ps->abcd.window, 6);
    assert_int_equal(ps->abcd.ntiers, 4);
    assert_false(ps->abcd.has_caps);
    assert_string_equal(ps->abcd.tiers[3].name, "A");
    assert_int_equal(ps->abcd.tiers[3].min_score_c, 9100);
    assert_string_equal(ps->abcd.tiers[0].name, "D");

    assert_string_equal(ps->abc.name, "abc-volume");
    assert_int_equal(ps->abc.ntiers, 3);
    assert_true(ps->abc.upgrade_on_order);
    assert_string_equal(ps->abc.tiers[2].name, "A");
    assert_string_equal(ps->abc.version, "1");
}

static void test_metrics_missing_months_are_zero(void **state) {
    (void)state;
    policy_month_t w[3];
    int64_t q[3] = {0, 0, 300};
    policy_metrics_t m;
    fill(w, 3, APR_2025, q, NULL, 2);
    w[2].amount = 600000;
    w[2].skus = 9;
    w[2].orders = 2;
    policy_metrics(w, 3, &m);
    assert_true(m.qty_avg == 100.0); /* 300 / 3, not / 1 */
    assert_true(m.amount_avg == 200000.0);
    assert_true(m.avg_price == 2000.0); /* 600000 / 300 */
    assert_true(m.skus_avg == 3.0);
    assert_int_equal(m.orders, 2);
    assert_true(m.stability == 0.0); /* mean 100 - range 300 < 0 -> 0 */

    fill(w, 3, APR_2025, NULL, NULL, 2);
    policy_metrics(w, 3, &m);
    assert_true(m.avg_price == 0.0); /* no qty: 0, not NaN */
    assert_true(m.stability == 0.0); /* mean 0: 0 */
}

static void test_score_hand_computed(void **state) {
    const policy_t *p = ST(state);
    /*
     * qty 900, 1000, 1100      -> qty_avg 1000, 45 * 1000/2000            = 22.50
     * amount 63 000 000 in all -> avg_price 21000, 15 * 16000/45000       =  5.333...
     * skus 10, 20, 30          -> skus_avg 20, 15 * 20/40                 =  7.50
     * cooperation 0.8          -> 15 * 0.8                                 = 12.00
     * growth 0.5               -> 10 * 0.5                                 =  5.00
     *                                                               total = 52.333... -> 52.33
     * T* = 5 (min_score 50 <= 52.33 < 60).  stability = (1000 - 200) / 1000 = 0.8.
     */
    policy_month_t w[3];
    int64_t q[3] = {900, 1000, 1100};
    fill(w, 3, APR_2025, q, NULL, 3);
    w[0].amount = 18900000;
    w[1].amount = 21000000;
    w[2].amount = 23100000;
    w[0].skus = 10;
    w[1].skus = 20;
    w[2].skus = 30;
    policy_profile_t prof = p->profile_default;
    prof.cooperation = 0.8;
    prof.growth = 0.5;
    policy_score_t s;
    char err[128];
    assert_int_equal(policy_score(p, &prof, w, 3, &s, err, sizeof(err)), 0);
    assert_int_equal(s.score_c, 5233);
    assert_int_equal(s.target_tier, 5);
    assert_int_equal(s.ncomponents, 5);
    assert_true(s.components[0].points == 22.5);
    assert_true(s.components[0].lo == 0.0 && s.components[0].hi == 2000.0);
    assert_string_equal(s.components[1].source, "avg_price");
    assert_true(s.components[1].value == 21000.0);
    assert_true(s.components[2].points == 7.5);
    assert_true(s.components[3].points == 12.0);
    assert_true(s.components[4].points == 5.0);
    assert_true(s.metrics.stability > 0.7999999 && s.metrics.stability < 0.8000001);

    /* a window of the wrong size is refused, not guessed at */
    assert_int_equal(policy_score(p, &prof, w, 2, &s, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "wants 3"));
}

static void test_score_rounds_half_up(void **state) {
    const policy_t *p = ST(state);
    /*
     * qty 40, 50, 52 -> qty_avg 142/3, 45 * (142/3)/2000 = 1.065 exactly;
     * default cooperation 0.6 * 15 = 9, growth 0.6 * 10 = 6; no price, no SKUs.
     * 16.065 half-up is 16.07 -- in binary the sum is 16.06499999..., which a
     * plain floor(x * 100 + 0.5) would turn into 16.06.
     */
    policy_month_t w[3];
    int64_t q[3] = {40, 50, 52};
    fill(w, 3, APR_2025, q, NULL, 1);
    policy_score_t s;
    char err[128];
    assert_int_equal(policy_score(p, &p->profile_default, w, 3, &s, err, sizeof(err)), 0);
    assert_int_equal(s.score_c, 1607);
    assert_int_equal(s.target_tier, 1);
}

static void test_target_tier_at_min_score(void **state) {
    const policy_t *p = ST(state);
    assert_int_equal(policy_target_tier(p, 0), 1);
    assert_int_equal(policy_target_tier(p, 1999), 1);
    assert_int_equal(policy_target_tier(p, 2000), 2); /* exactly min_score earns the tier */
    assert_int_equal(policy_target_tier(p, 7999), 7);
    assert_int_equal(policy_target_tier(p, 8000), 8);
    assert_int_equal(policy_target_tier(p, 10000), 8);
}

static void test_steps_component(void **state) {
    const policy_t *p = &((presets_t *)*state)->abc;
    policy_month_t w[12];
    fill(w, 12, APR_2025, NULL, NULL, 1);
    policy_score_t s;
    char err[128];
    /* 3 orders, 100 000 units: orders below the first step (0), qty at the first (10) */
    w[0].orders = 3;
    w[0].qty = 100000;
    assert_int_equal(policy_score(p, &p->profile_default, w, 12, &s, err, sizeof(err)), 0);
    assert_int_equal(s.components[0].step, -1);
    assert_int_equal(s.components[1].step, 0);
    assert_true(s.components[1].step_at == 10000.0);
    assert_int_equal(s.score_c, 1000);
    assert_int_equal(s.target_tier, 1); /* C: one condition alone is not B */
    /* 6 orders but under 10 000 units: 15 + 0, still C */
    w[0].orders = 6;
    w[0].qty = 9999;
    assert_int_equal(policy_score(p, &p->profile_default, w, 12, &s, err, sizeof(err)), 0);
    assert_int_equal(s.target_tier, 1);
    /* 6 orders, exactly 100 000 units (not more): 15 + 10 = 25, B */
    w[0].qty = 100000;
    assert_int_equal(policy_score(p, &p->profile_default, w, 12, &s, err, sizeof(err)), 0);
    assert_int_equal(s.target_tier, 2);
    /* 6 orders, 100 001 units: 15 + 15 = 30, A */
    w[0].qty = 100001;
    assert_int_equal(policy_score(p, &p->profile_default, w, 12, &s, err, sizeof(err)), 0);
    assert_int_equal(s.target_tier, 3);
}

/* ------------------------------------------------------------------ */
/* New customers                                                       */

static void test_new_customer_then_initial_evaluation(void **state) {
    const policy_t *p = ST(state);
    const int32_t first = APR_2025;
    policy_month_t w[3];
    policy_decision_t d;
    char err[128];

    /* first order, mid-April: tier 2, NEW_CUSTOMER, no previous tier */
    int64_t q1[3] = {0, 0, 120};
    fill(w, 3, first, q1, NULL, 0);
    policy_customer_t c = customer(p, 0, 0, false, w);
    assert_int_equal(policy_on_order(p, &c, first, &d, err, sizeof(err)), 0);
    assert_int_equal(d.prev_tier, 0);
    assert_int_equal(d.new_tier, 2);
    assert_true(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_NEW_CUSTOMER);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER);
    assert_int_equal(d.next.first_month, first);
    assert_false(d.next.evaluated);
    policy_state_t st = d.next;

    /* a second order in the same month changes nothing */
    c.state = st;
    assert_int_equal(policy_on_order(p, &c, first, &d, err, sizeof(err)), 0);
    assert_false(d.changed);

    /* reviews of months 1 and 2 hold tier 2 whatever the score */
    int64_t big[3] = {0, 0, 2000};
    fill(w, 3, first, big, NULL, 2);
    rich(w, 3);
    c.state = st;
    review_ok(p, &c, first, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_false(d.changed);
    assert_int_equal(d.new_tier, 2);
    assert_true(d.score.target_tier > 2);

    int64_t q2[3] = {0, 2000, 2000};
    fill(w, 3, first + 1, q2, NULL, 2);
    rich(w, 3);
    review_ok(p, &c, first + 1, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_false(d.changed);
    assert_false(d.next.evaluated);

    /* the review of month 3 is the first evaluation:
     * qty_avg 300 -> 6.75, avg_price 20000 -> 5, skus 20 -> 7.5,
     * cooperation and growth 0.6 -> 9 + 6; 34.25 -> T* = 3 */
    int64_t q3[3] = {300, 300, 300};
    fill(w, 3, first + 2, q3, NULL, 2);
    for (int i = 0; i < 3; i++) {
        w[i].amount = 300 * 20000;
        w[i].skus = 20;
    }
    review_ok(p, &c, first + 2, &d);
    assert_int_equal(d.score.score_c, 3425);
    assert_int_equal(d.rule, POLICY_RULE_INITIAL_EVALUATION);
    assert_int_equal(d.reason, POLICY_REASON_INITIAL_EVALUATION);
    assert_int_equal(d.prev_tier, 2);
    assert_int_equal(d.new_tier, 3);
    assert_true(d.changed);
    assert_true(d.next.evaluated);

    /* afterwards the hysteresis rules apply: T* 3 = T 3, nothing moves */
    c.state = d.next;
    fill(w, 3, first + 3, q3, NULL, 3);
    for (int i = 0; i < 3; i++) {
        w[i].amount = 300 * 20000;
        w[i].skus = 20;
    }
    review_ok(p, &c, first + 3, &d);
    assert_int_equal(d.rule, POLICY_RULE_HOLD);
    assert_false(d.changed);
}

static void test_initial_evaluation_same_tier_publishes_nothing(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {10, 10, 10}; /* score 15.23 with the defaults: T* = 1 ... */
    fill(w, 3, APR_2025, q, NULL, 2);
    policy_customer_t c = customer(p, 2, APR_2025 - 2, false, w);
    c.profile.cooperation = 1.0; /* ... 15 + 6 + 0.23 = 21.23: T* = 2 */
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_INITIAL_EVALUATION);
    assert_int_equal(d.new_tier, 2);
    assert_false(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_NONE);
    assert_true(d.next.evaluated);
}

static void test_never_ordered_is_not_reviewed(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    fill(w, 3, APR_2025, NULL, NULL, 0);
    policy_customer_t c = customer(p, 0, 0, false, w);
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_NONE);
    assert_false(d.changed);
    assert_int_equal(d.next.tier, 0);
}

static void test_review_refuses_a_wrong_window(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    char err[256];
    fill(w, 3, APR_2025, NULL, NULL, 3);
    policy_customer_t c = customer(p, 3, APR_2025 - 10, true, w);
    assert_int_equal(policy_review(p, &c, APR_2025 + 1, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "expected 2025-03"));
    c.nwindow = 2;
    assert_int_equal(policy_review(p, &c, APR_2025, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "2 months"));
}

/* ------------------------------------------------------------------ */
/* Upgrade                                                             */

/* Tier 3 (cap 200, 90 % = 180), score 59.28 with cooperation and growth
 * at 1.0: qty_avg 190 -> 4.28, price 15, range 15, profile 25; T* = 5. */
static policy_customer_t upgrade_case(const policy_t *p, policy_month_t *w, const int64_t *q,
                                      const char *grades) {
    fill(w, 3, APR_2025, q, grades, 3);
    rich(w, 3);
    policy_customer_t c = customer(p, 3, APR_2025 - 12, true, w);
    c.profile.cooperation = 1.0;
    c.profile.growth = 1.0;
    return c;
}

static void test_upgrade_one_tier_at_exactly_90_percent(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {180, 190, 200}; /* 180 is exactly 90 % of 200 */
    policy_customer_t c = upgrade_case(p, w, q, "ABA");
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.score.target_tier, 5);
    assert_int_equal(d.rule, POLICY_RULE_UPGRADE);
    assert_int_equal(d.reason, POLICY_REASON_UPGRADE);
    assert_int_equal(d.prev_tier, 3);
    assert_int_equal(d.new_tier, 4); /* one step, though T* is 5 */
    assert_true(d.changed);
    assert_int_equal(d.upgrade_blocked, 0);
    assert_int_equal(d.nmonths, 3);
    assert_int_equal(d.months[0].upgrade_qty, 180);
    assert_true(d.months[0].qty_ok);
    assert_true(d.months[1].grade_ok); /* B is good enough */
}

static void test_upgrade_blocked_by_grade_in_one_month(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {200, 200, 200};
    policy_customer_t c = upgrade_case(p, w, q, "ACA");
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_UPGRADE_BLOCKED);
    assert_false(d.changed);
    assert_int_equal(d.new_tier, 3);
    assert_int_equal(d.upgrade_blocked, POLICY_BLOCKED_GRADE);
    assert_true(d.months[0].grade_ok);
    assert_false(d.months[1].grade_ok);
    assert_true(d.months[2].grade_ok);
    assert_true(d.months[1].qty_ok);
    assert_non_null(strstr(d.explain, "upgrade blocked by grade"));
}

static void test_upgrade_blocked_by_qty_in_one_month(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {200, 179, 200}; /* 179 < 180 */
    policy_customer_t c = upgrade_case(p, w, q, "AAA");
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.score.target_tier, 5);
    assert_int_equal(d.rule, POLICY_RULE_UPGRADE_BLOCKED);
    assert_false(d.changed);
    assert_int_equal(d.upgrade_blocked, POLICY_BLOCKED_QTY);
    assert_true(d.months[0].qty_ok);
    assert_false(d.months[1].qty_ok);
    assert_true(d.months[2].qty_ok);
    assert_non_null(strstr(d.explain, "upgrade blocked by quantity"));
}

static void test_upgrade_needs_a_higher_score(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {200, 200, 200};
    policy_customer_t c = upgrade_case(p, w, q, "AAA");
    c.profile.cooperation = 0.0; /* 4.5 + 15 + 15 + 0 + 0 = 34.5: T* = 3 = T */
    c.profile.growth = 0.0;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.score.target_tier, 3);
    assert_int_equal(d.rule, POLICY_RULE_HOLD);
    assert_false(d.changed);
}

static void test_upgrade_uses_tier_in_effect_each_month(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    /* tier 2 in February (cap 100: 90 is enough), tier 3 after */
    int64_t q[3] = {90, 180, 180};
    policy_customer_t c = upgrade_case(p, w, q, "AAA");
    w[0].tier_in_effect = 2;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.months[0].cap, 100);
    assert_int_equal(d.rule, POLICY_RULE_UPGRADE);
    assert_int_equal(d.new_tier, 4);
}

/* ------------------------------------------------------------------ */
/* Downgrade                                                           */

static void test_downgrade_to_the_tier_holding_the_average(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    /* tier 4 (floor 200); all months below; average 449/3 = 149.67 ->
     * highest floor <= 149.67 is 100, tier 3 */
    int64_t q[3] = {150, 199, 100};
    fill(w, 3, APR_2025, q, NULL, 4);
    policy_customer_t c = customer(p, 4, APR_2025 - 12, true, w);
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_DOWNGRADE);
    assert_int_equal(d.reason, POLICY_REASON_DOWNGRADE);
    assert_int_equal(d.new_tier, 3);
    assert_true(d.changed);
    for (int i = 0; i < 3; i++) assert_true(d.months[i].below_floor);
}

static void test_downgrade_several_tiers(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {10, 20, 30}; /* average 20 < 50, the floor of tier 2 */
    fill(w, 3, APR_2025, q, NULL, 5);
    policy_customer_t c = customer(p, 5, APR_2025 - 12, true, w);
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.new_tier, 1);
    assert_int_equal(d.reason, POLICY_REASON_DOWNGRADE);
}

static void test_qty_exactly_at_floor_is_not_below(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {150, 200, 100}; /* 200 = floor of tier 4 */
    fill(w, 3, APR_2025, q, NULL, 4);
    policy_customer_t c = customer(p, 4, APR_2025 - 12, true, w);
    review_ok(p, &c, APR_2025, &d);
    assert_false(d.months[1].below_floor);
    assert_int_equal(d.rule, POLICY_RULE_HOLD);
    assert_false(d.changed);
}

static void test_unrecorded_months_use_the_current_tier(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    /* three months without orders and without records: tier 4 assumed */
    fill(w, 3, APR_2025, NULL, NULL, 0);
    for (int i = 0; i < 3; i++) w[i].grade = POLICY_GRADE_NONE;
    policy_customer_t c = customer(p, 4, APR_2025 - 12, true, w);
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.months[0].tier_in_effect, 4);
    assert_int_equal(d.months[0].grade, POLICY_GRADE_A);
    assert_int_equal(d.new_tier, 1);
    assert_int_equal(d.reason, POLICY_REASON_DOWNGRADE);
}

static void test_below_floor_but_average_fits_current_tier(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    /* on tier 5 (floor 400) until this month, now tier 3; 300 a month is
     * below 400 but the average holds tier 4 >= 3: no downgrade */
    int64_t q[3] = {300, 300, 300};
    fill(w, 3, APR_2025, q, NULL, 5);
    policy_customer_t c = customer(p, 3, APR_2025 - 12, true, w);
    review_ok(p, &c, APR_2025, &d);
    assert_false(d.changed);
    assert_int_equal(d.rule, POLICY_RULE_HOLD);
}

static void test_tier_the_policy_no_longer_has(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {2000, 2000, 2000};
    fill(w, 3, APR_2025, q, NULL, 8);
    /* stored under an older 9-tier version of the policy */
    policy_customer_t c = customer(p, 9, APR_2025 - 12, true, w);
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.new_tier, 8);
    assert_true(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_DOWNGRADE);
}

/* ------------------------------------------------------------------ */
/* Compliance and override                                             */

static void test_compliance_caps_at_review(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {500, 500, 500};
    fill(w, 3, APR_2025, q, NULL, 5);
    policy_customer_t c = customer(p, 5, APR_2025 - 12, true, w);

    c.profile.grade = POLICY_GRADE_C;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.new_tier, 2);
    assert_int_equal(d.reason, POLICY_REASON_COMPLIANCE);
    assert_int_equal(d.rule, POLICY_RULE_COMPLIANCE);
    assert_int_equal(d.compliance_cap, 2);

    c.profile.grade = POLICY_GRADE_D;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.new_tier, 1);
    assert_int_equal(d.reason, POLICY_REASON_COMPLIANCE);

    /* grade A now, but a D was in effect during the month: still capped */
    c.profile.grade = POLICY_GRADE_A;
    w[2].grade = POLICY_GRADE_D;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.new_tier, 1);

    /* grade B: no cap */
    w[2].grade = POLICY_GRADE_B;
    review_ok(p, &c, APR_2025, &d);
    assert_false(d.changed);
    assert_int_equal(d.compliance_cap, 0);
}

static void test_compliance_at_once_when_grade_lowered(void **state) {
    const policy_t *p = ST(state);
    policy_state_t st = {.tier = 4, .first_month = APR_2025 - 12, .evaluated = true};
    policy_profile_t prof = p->profile_default;
    policy_decision_t d;

    prof.grade = POLICY_GRADE_C;
    policy_on_profile(p, &st, &prof, &d);
    assert_int_equal(d.new_tier, 2);
    assert_int_equal(d.reason, POLICY_REASON_COMPLIANCE);
    assert_true(d.changed);

    prof.grade = POLICY_GRADE_D;
    policy_apply_compliance(p, &st, POLICY_GRADE_D, &d);
    assert_int_equal(d.new_tier, 1);
    assert_int_equal(d.reason, POLICY_REASON_COMPLIANCE);

    /* already at or below the cap: nothing */
    st.tier = 2;
    policy_apply_compliance(p, &st, POLICY_GRADE_C, &d);
    assert_false(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_NONE);
    assert_int_equal(policy_grade_cap(p, POLICY_GRADE_A), 8);
    assert_int_equal(policy_grade_cap(p, POLICY_GRADE_D), 1);
}

static void test_override_and_republished_override(void **state) {
    const policy_t *p = ST(state);
    policy_state_t st = {.tier = 3, .first_month = APR_2025 - 12, .evaluated = true};
    policy_profile_t prof = p->profile_default;
    policy_decision_t d;

    prof.has_override = true;
    prof.tier_override = 6;
    policy_on_profile(p, &st, &prof, &d);
    assert_int_equal(d.rule, POLICY_RULE_OVERRIDE);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);
    assert_int_equal(d.prev_tier, 3);
    assert_int_equal(d.new_tier, 6);
    assert_true(d.changed);
    assert_true(d.next.has_override);
    assert_int_equal(d.next.override_tier, 6);
    st = d.next;

    /* the same override again (compacted topic re-read, other field edited) */
    policy_on_profile(p, &st, &prof, &d);
    assert_int_equal(d.rule, POLICY_RULE_OVERRIDE_REPEATED);
    assert_false(d.changed);

    /* a review moved the customer down; republishing still does nothing */
    st.tier = 5;
    policy_on_profile(p, &st, &prof, &d);
    assert_false(d.changed);
    assert_int_equal(d.new_tier, 5);

    /* override removed: tier stays; set again to 6: applied again */
    prof.has_override = false;
    policy_on_profile(p, &st, &prof, &d);
    assert_false(d.changed);
    assert_false(d.next.has_override);
    st = d.next;
    prof.has_override = true;
    policy_on_profile(p, &st, &prof, &d);
    assert_int_equal(d.new_tier, 6);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);

    /* outside 1..8: ignored */
    policy_apply_override(p, &st, true, 9, &d);
    assert_int_equal(d.rule, POLICY_RULE_OVERRIDE_INVALID);
    assert_false(d.changed);
}

/* An override does not shorten the new-customer period (docs/behaviour.md,
 * "Placement and reviews").  A customer overridden at its first order stays
 * on the override at the reviews of its first two months, however little
 * it buys, and is first scored (INITIAL_EVALUATION) at the review of its
 * third month. */
static void test_override_keeps_new_customer_period(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    char err[128];

    /* first order in April, the profile says override 5 */
    int64_t q1[3] = {0, 0, 10};
    fill(w, 3, APR_2025, q1, NULL, 0);
    policy_customer_t c = customer(p, 0, 0, false, w);
    c.profile.has_override = true;
    c.profile.tier_override = 5;
    assert_int_equal(policy_on_order(p, &c, APR_2025, &d, err, sizeof(err)), 0);
    assert_int_equal(d.prev_tier, 0);
    assert_int_equal(d.new_tier, 5);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);
    assert_int_equal(d.next.first_month, APR_2025);
    assert_false(d.next.evaluated);
    c.state = d.next;

    /* April: Feb and Mar were before the customer existed (no tier
     * recorded); 10 units.  Still new: held on 5, nothing judged. */
    w[2].tier_in_effect = 5;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_false(d.changed);
    assert_int_equal(d.new_tier, 5);
    assert_int_equal(d.score.target_tier, 1);
    assert_false(d.next.evaluated);

    /* May: still new */
    int64_t q2[3] = {0, 10, 10};
    fill(w, 3, APR_2025 + 1, q2, NULL, 5);
    w[0].tier_in_effect = 0;
    review_ok(p, &c, APR_2025 + 1, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_false(d.changed);
    assert_int_equal(d.new_tier, 5);

    /* June, the third month: the first evaluation.  10 units a month at
     * price 0 with default ratings: 0.23 + 9 + 6 = 15.23, T* = 1. */
    int64_t q3[3] = {10, 10, 10};
    fill(w, 3, APR_2025 + 2, q3, NULL, 5);
    review_ok(p, &c, APR_2025 + 2, &d);
    assert_int_equal(d.score.score_c, 1523);
    assert_int_equal(d.rule, POLICY_RULE_INITIAL_EVALUATION);
    assert_int_equal(d.reason, POLICY_REASON_INITIAL_EVALUATION);
    assert_int_equal(d.prev_tier, 5);
    assert_int_equal(d.new_tier, 1);
    assert_true(d.next.evaluated);
    assert_true(d.next.has_override); /* remembered: republishing does nothing */
}

/* The same under grade C: the placement (override 5) is capped to 2 at the
 * first order and at every review of the period. */
static void test_override_under_grade_c_held_at_cap(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    char err[128];

    int64_t q1[3] = {0, 0, 10};
    fill(w, 3, APR_2025, q1, "CCC", 0);
    policy_customer_t c = customer(p, 0, 0, false, w);
    c.profile.has_override = true;
    c.profile.tier_override = 5;
    c.profile.grade = POLICY_GRADE_C;
    assert_int_equal(policy_on_order(p, &c, APR_2025, &d, err, sizeof(err)), 0);
    assert_int_equal(d.new_tier, 2);
    assert_int_equal(d.reason, POLICY_REASON_COMPLIANCE);
    assert_false(d.next.evaluated);
    c.state = d.next;

    for (int32_t m = APR_2025; m < APR_2025 + 2; m++) {
        int64_t q[3] = {0, 10, 10};
        fill(w, 3, m, q, "CCC", 2);
        review_ok(p, &c, m, &d);
        assert_false(d.changed);
        assert_int_equal(d.new_tier, 2);
        assert_int_equal(d.compliance_cap, 2);
        assert_false(d.next.evaluated);
    }

    int64_t q3[3] = {10, 10, 10};
    fill(w, 3, APR_2025 + 2, q3, "CCC", 2);
    review_ok(p, &c, APR_2025 + 2, &d);
    assert_int_equal(d.rule, POLICY_RULE_INITIAL_EVALUATION);
    assert_int_equal(d.new_tier, 1);
    assert_true(d.next.evaluated);

    /* the grade is lifted to A inside the period: the review puts the
     * customer back on its placement, the override */
    policy_state_t st = {
        .tier = 2, .first_month = APR_2025, .has_override = true, .override_tier = 5};
    fill(w, 3, APR_2025 + 1, q3, NULL, 2);
    c.state = st;
    c.profile.grade = POLICY_GRADE_A;
    review_ok(p, &c, APR_2025 + 1, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_int_equal(d.new_tier, 5);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);
}

/* Overrides set or cleared inside the period, and states written by the
 * old rule (an override marked the customer evaluated at once). */
static void test_override_inside_new_customer_period(void **state) {
    const policy_t *p = ST(state);
    policy_month_t w[3];
    policy_decision_t d;
    int64_t q[3] = {0, 10, 10};

    /* placed on 2 in April, overridden to 6 in May: at once, and held */
    policy_state_t st = {.tier = 2, .first_month = APR_2025};
    policy_apply_override(p, &st, true, 6, &d);
    assert_int_equal(d.new_tier, 6);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);
    assert_false(d.next.evaluated);
    fill(w, 3, APR_2025 + 1, q, NULL, 2);
    policy_customer_t c = customer(p, 6, APR_2025, false, w);
    c.state = d.next;
    review_ok(p, &c, APR_2025 + 1, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_false(d.changed);
    assert_int_equal(d.new_tier, 6);

    /* the override cleared: the tier stays at once ... */
    st = c.state;
    policy_apply_override(p, &st, false, 0, &d);
    assert_false(d.changed);
    assert_false(d.next.has_override);
    /* ... and the next review of the period puts it back on tier 2 */
    c.state = d.next;
    review_ok(p, &c, APR_2025 + 1, &d);
    assert_int_equal(d.new_tier, 2);
    assert_int_equal(d.reason, POLICY_REASON_NEW_CUSTOMER);

    /* a stored state the old rule marked evaluated in its first month is
     * new again: held, then evaluated at the end of the period */
    policy_state_t old = {.tier = 5,
                          .first_month = APR_2025,
                          .evaluated = true,
                          .has_override = true,
                          .override_tier = 5};
    int64_t q1[3] = {0, 0, 10};
    fill(w, 3, APR_2025, q1, NULL, 0);
    c.state = old;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_NEW_CUSTOMER_HOLD);
    assert_false(d.changed);
    assert_false(d.next.evaluated);
    int64_t q3[3] = {10, 10, 10};
    fill(w, 3, APR_2025 + 2, q3, NULL, 5);
    c.state = d.next;
    review_ok(p, &c, APR_2025 + 2, &d);
    assert_int_equal(d.rule, POLICY_RULE_INITIAL_EVALUATION);
    assert_int_equal(d.new_tier, 1);
}

static void test_first_order_with_override_and_grade(void **state) {
    const policy_t *p = ST(state);
    policy_profile_t prof = p->profile_default;
    policy_decision_t d;
    prof.has_override = true;
    prof.tier_override = 7;
    policy_first_order(p, &prof, APR_2025, &d);
    assert_int_equal(d.new_tier, 7);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);
    assert_true(d.next.has_override);

    prof.has_override = false;
    prof.grade = POLICY_GRADE_D;
    policy_first_order(p, &prof, APR_2025, &d);
    assert_int_equal(d.new_tier, 1);
    assert_int_equal(d.reason, POLICY_REASON_COMPLIANCE);
    assert_int_equal(d.prev_tier, 0);
}

/* ------------------------------------------------------------------ */
/* Quota                                                               */

static size_t check(const policy_t *p, int32_t tier, policy_format_t f, bool holiday,
                    int64_t before, int64_t after, uint32_t *mask,
                    policy_quota_kind_t out[POLICY_QUOTA__COUNT]) {
    size_t n = policy_quota_check(p, tier, f, holiday, before, after, *mask, out);
    for (size_t i = 0; i < n; i++) *mask |= policy_quota_bit(out[i]);
    return n;
}

static void test_quota_each_kind_once(void **state) {
    const policy_t *p = ST(state);
    policy_quota_kind_t k[POLICY_QUOTA__COUNT];
    uint32_t mask = 0;
    const policy_format_t q = POLICY_FORMAT_OTHER;
    /* tier 3: cap 200, warning at 180 */
    assert_int_equal(check(p, 3, q, false, 0, 179, &mask, k), 0);
    assert_int_equal(check(p, 3, q, false, 179, 180, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_WARNING);
    assert_int_equal(check(p, 3, q, false, 180, 199, &mask, k), 0);
    assert_int_equal(check(p, 3, q, false, 199, 200, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_REACHED);
    assert_int_equal(check(p, 3, q, false, 200, 201, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_EXCEEDED);
    /* a return takes it back under everything: nothing fires, nothing clears */
    assert_int_equal(check(p, 3, q, false, 201, 10, &mask, k), 0);
    assert_int_equal(mask, 0x7u);
    /* ... and crossing again fires nothing */
    assert_int_equal(check(p, 3, q, false, 10, 250, &mask, k), 0);
    /* hard cap 2000 for OTHER, whatever the tier */
    assert_int_equal(check(p, 3, q, false, 250, 2000, &mask, k), 0);
    assert_int_equal(check(p, 3, q, false, 2000, 2001, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_HARD_CAP_EXCEEDED);
    assert_int_equal(check(p, 3, q, false, 1000, 3000, &mask, k), 0);
}

static void test_quota_one_order_crosses_all_in_order(void **state) {
    const policy_t *p = ST(state);
    policy_quota_kind_t k[POLICY_QUOTA__COUNT];
    uint32_t mask = 0;
    assert_int_equal(check(p, 3, POLICY_FORMAT_GROCERY, false, 100, 2500, &mask, k), 4);
    assert_int_equal(k[0], POLICY_QUOTA_WARNING);
    assert_int_equal(k[1], POLICY_QUOTA_REACHED);
    assert_int_equal(k[2], POLICY_QUOTA_EXCEEDED);
    assert_int_equal(k[3], POLICY_QUOTA_HARD_CAP_EXCEEDED);
    assert_string_equal(policy_quota_kind_name(k[3]), "HARD_CAP_EXCEEDED");

    /* exactly at the cap in one step: WARNING and REACHED, not EXCEEDED */
    mask = 0;
    assert_int_equal(check(p, 3, POLICY_FORMAT_GROCERY, false, 0, 200, &mask, k), 2);
    assert_int_equal(k[1], POLICY_QUOTA_REACHED);
}

static void test_quota_holiday_month(void **state) {
    const policy_t *p = ST(state);
    policy_quota_kind_t k[POLICY_QUOTA__COUNT];
    policy_quota_limits_t l;
    uint32_t mask = 0;

    assert_true(policy_holiday_month(p, policy_month_of(2025, 1))); /* from Jan 20 */
    assert_true(policy_holiday_month(p, policy_month_of(2025, 2))); /* to Feb 12 */
    assert_false(policy_holiday_month(p, policy_month_of(2025, 3)));
    assert_true(policy_holiday_month(p, policy_month_of(2025, 10)));

    /* tier 3 in a holiday month: 200 + 30 % = 260, warning at 234 */
    policy_quota_limits(p, 3, POLICY_FORMAT_OTHER, true, &l);
    assert_int_equal(l.cap, 200);
    assert_int_equal(l.effective_cap, 260);
    assert_int_equal(l.warning_at, 234);
    assert_int_equal(check(p, 3, POLICY_FORMAT_OTHER, true, 0, 233, &mask, k), 0);
    assert_int_equal(check(p, 3, POLICY_FORMAT_OTHER, true, 233, 234, &mask, k), 1);
    assert_int_equal(check(p, 3, POLICY_FORMAT_OTHER, true, 234, 259, &mask, k), 0);
    assert_int_equal(check(p, 3, POLICY_FORMAT_OTHER, true, 259, 260, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_REACHED);
    assert_int_equal(check(p, 3, POLICY_FORMAT_OTHER, true, 260, 261, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_EXCEEDED);

    /* tier 1: 50 + 15 = 65; 0.9 * 65 = 58.5, so 59 is the first to reach it */
    policy_quota_limits(p, 1, POLICY_FORMAT_OTHER, true, &l);
    assert_int_equal(l.effective_cap, 65);
    assert_int_equal(l.warning_at, 59);
    mask = 0;
    assert_int_equal(check(p, 1, POLICY_FORMAT_OTHER, true, 0, 58, &mask, k), 0);
    assert_int_equal(check(p, 1, POLICY_FORMAT_OTHER, true, 58, 59, &mask, k), 1);

    /* supermarkets and malls have a 5000 ceiling */
    policy_quota_limits(p, 8, POLICY_FORMAT_SUPERMARKET, true, &l);
    assert_int_equal(l.effective_cap, 2600);
    assert_int_equal(l.hard_cap, 5000);
    mask = 0;
    assert_int_equal(check(p, 8, POLICY_FORMAT_MALL, true, 0, 5000, &mask, k), 3);
    assert_int_equal(check(p, 8, POLICY_FORMAT_MALL, true, 5000, 5001, &mask, k), 1);
    assert_int_equal(k[0], POLICY_QUOTA_HARD_CAP_EXCEEDED);
}

static void test_quota_without_caps(void **state) {
    const policy_t *p = &((presets_t *)*state)->abcd;
    policy_quota_kind_t k[POLICY_QUOTA__COUNT];
    assert_int_equal(policy_quota_check(p, 2, POLICY_FORMAT_OTHER, false, 0, 1000000, 0, k), 0);
}

/* ------------------------------------------------------------------ */
/* Classification                                                      */

static void test_classification_code(void **state) {
    (void)state;
    char code[POLICY_CODE_MAX];
    policy_profile_t prof = {.format = POLICY_FORMAT_SUPERMARKET,
                             .market = POLICY_MARKET_URBAN,
                             .chain = true,
                             .grade = POLICY_GRADE_B};
    policy_classification(&prof, false, policy_scale(1, 10), code);
    assert_string_equal(code, "C111L");

    prof = (policy_profile_t){
        .format = POLICY_FORMAT_GROCERY, .market = POLICY_MARKET_RURAL, .grade = POLICY_GRADE_A};
    policy_classification(&prof, true, '1', code);
    assert_string_equal(code, "ZX21");

    prof = (policy_profile_t){.format = POLICY_FORMAT_TOBACCO_LIQUOR,
                              .market = POLICY_MARKET_RURAL,
                              .grade = POLICY_GRADE_D};
    policy_classification(&prof, false, policy_scale(10, 10), code);
    assert_string_equal(code, "Y322");
    prof.grade = POLICY_GRADE_C;
    policy_classification(&prof, false, policy_scale(5, 10), code);
    assert_string_equal(code, "Y222");

    /* 20 / 60 / 20 of the format's customers */
    assert_int_equal(policy_scale(1, 10), '1');
    assert_int_equal(policy_scale(2, 10), '1');
    assert_int_equal(policy_scale(3, 10), '2');
    assert_int_equal(policy_scale(8, 10), '2');
    assert_int_equal(policy_scale(9, 10), '3');
    assert_int_equal(policy_scale(1, 1), '1');
    assert_int_equal(policy_scale(1, 5), '1');
    assert_int_equal(policy_scale(2, 5), '2');
    assert_int_equal(policy_scale(5, 5), '3');
}

/* ------------------------------------------------------------------ */
/* Presets abc-volume and abcd-score                                   */

static void test_abc_volume_upgrades_on_order(void **state) {
    const policy_t *p = &((presets_t *)*state)->abc;
    policy_month_t w[12];
    policy_decision_t d;
    char err[128];

    /* first order: placed on C */
    fill(w, 12, APR_2025, NULL, NULL, 0);
    w[11].orders = 1;
    w[11].qty = 500;
    policy_customer_t c = customer(p, 0, 0, false, w);
    assert_int_equal(policy_on_order(p, &c, APR_2025, &d, err, sizeof(err)), 0);
    assert_int_equal(d.new_tier, 1);
    assert_int_equal(d.reason, POLICY_REASON_NEW_CUSTOMER);
    c.state = d.next;

    /* the 4th order brings 10 000 units: B at once, on that order */
    w[11].orders = 4;
    w[11].qty = 10000;
    assert_int_equal(policy_on_order(p, &c, APR_2025, &d, err, sizeof(err)), 0);
    assert_int_equal(d.rule, POLICY_RULE_UPGRADE);
    assert_int_equal(d.reason, POLICY_REASON_UPGRADE);
    assert_int_equal(d.new_tier, 2);
    c.state = d.next;

    /* the 6th order passes 100 000 units: A */
    w[11].orders = 6;
    w[11].qty = 100001;
    assert_int_equal(policy_on_order(p, &c, APR_2025, &d, err, sizeof(err)), 0);
    assert_int_equal(d.new_tier, 3);
    c.state = d.next;

    /* a return does not downgrade on the order ... */
    w[11].qty = 5000;
    assert_int_equal(policy_on_order(p, &c, APR_2025, &d, err, sizeof(err)), 0);
    assert_false(d.changed);

    /* ... the review does: 6 orders, 5 000 units -> 15 + 0, C */
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.rule, POLICY_RULE_DOWNGRADE);
    assert_int_equal(d.new_tier, 1);
    char label[32];
    assert_string_equal(policy_tier_label(p, d.new_tier, label, sizeof(label)), "1 (C)");
}

static void test_abcd_score_regrades_monthly(void **state) {
    const policy_t *p = &((presets_t *)*state)->abcd;
    policy_month_t w[6];
    policy_decision_t d;
    int64_t q[6] = {5000, 5000, 5000, 5000, 5000, 5000};
    fill(w, 6, APR_2025, q, NULL, 0);
    for (int i = 0; i < 6; i++) {
        w[i].amount = 10000000; /* 100 000.00 a month: the top customer */
        w[i].skus = 50;
    }
    /* 20 + 10 + 10 (stable) + 10 + 23 * 1.0 + 27 * 0.8 = 94.6: A */
    policy_customer_t c = customer(p, 2, APR_2025 - 12, true, w);
    c.profile.cooperation = 1.0;
    c.profile.growth = 0.8;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.score.score_c, 9460);
    assert_int_equal(d.new_tier, 4);
    assert_int_equal(d.reason, POLICY_REASON_UPGRADE);
    assert_string_equal(p->tiers[d.new_tier - 1].name, "A");

    /* growth 0.2: 78.4, C; straight down from A */
    c.state = d.next;
    c.profile.growth = 0.2;
    review_ok(p, &c, APR_2025, &d);
    assert_int_equal(d.score.score_c, 7840);
    assert_int_equal(d.new_tier, 2);
    assert_int_equal(d.reason, POLICY_REASON_DOWNGRADE);

    /* a grade C does not cap this policy */
    c.state = d.next;
    c.profile.grade = POLICY_GRADE_D;
    review_ok(p, &c, APR_2025, &d);
    assert_false(d.changed);
}

static void test_names(void **state) {
    (void)state;
    assert_string_equal(policy_reason_name(POLICY_REASON_INITIAL_EVALUATION), "INITIAL_EVALUATION");
    assert_string_equal(policy_reason_name(POLICY_REASON_OVERRIDE), "OVERRIDE");
    assert_string_equal(policy_rule_name(POLICY_RULE_UPGRADE_BLOCKED), "UPGRADE_BLOCKED");
    assert_string_equal(policy_metric_name(POLICY_METRIC_QTY_TOTAL), "qty_total");
    assert_string_equal(policy_format_name(POLICY_FORMAT_TOBACCO_LIQUOR), "TOBACCO_LIQUOR");
    char m[32];
    assert_string_equal(policy_month_text(policy_month_of(2025, 12), m, sizeof(m)), "2025-12");
    /* Written without printf for years 0..9999; printf's bytes for every
     * month, those past either end included. */
    for (int32_t mo = -30; mo < 12 * 10001 + 30; mo++) {
        char want[32];
        int32_t y = mo >= 0 ? mo / 12 : (mo - 11) / 12;
        snprintf(want, sizeof(want), "%04d-%02d", (int)y, (int)(mo - y * 12 + 1));
        assert_string_equal(policy_month_text(mo, m, sizeof(m)), want);
    }
    assert_string_equal(policy_month_text(INT32_MAX, m, sizeof(m)), "178956970-08");
    assert_string_equal(policy_month_text(INT32_MIN, m, sizeof(m)), "-178956971-05");
    assert_string_equal(policy_month_text(policy_month_of(2026, 1), m, 6), "2026-");
}

/* The score's text, as printf would write it ("%.2f", and "%.0f" for whole
 * numbers): policy.c writes the numbers without printf (decimal.h), and
 * must write the same bytes, over every preset and many windows. */
static const char *old_num(double v, char *buf, size_t size) {
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, size, "%.0f", v);
    else
        snprintf(buf, size, "%.2f", v);
    return buf;
}

static void test_explain_score_text(void **state) {
    presets_t *ps = *state;
    const policy_t *pols[] = {&ps->supply, &ps->abcd, &ps->abc};
    uint64_t x = 0x5eed5eed5eedu;
    int checked = 0;
    for (size_t k = 0; k < sizeof(pols) / sizeof(pols[0]); k++) {
        const policy_t *p = pols[k];
        for (int it = 0; it < 3000; it++) {
            policy_month_t w[POLICY_WINDOW_MAX];
            fill(w, (size_t)p->window, APR_2025, NULL, NULL, 2);
            for (int32_t i = 0; i < p->window; i++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                w[i].qty = (int64_t)(x % 5000);
                w[i].amount = w[i].qty * (int64_t)(x % 90000);
                w[i].skus = (int64_t)(x % 60);
                w[i].orders = (int64_t)(x % 40);
            }
            policy_customer_t c = customer(p, 2, APR_2025 - 6, true, w);
            policy_decision_t d;
            char err[256];
            assert_int_equal(policy_review(p, &c, APR_2025, &d, err, sizeof(err)), 0);
            if (!d.has_score) continue;
            char want[POLICY_EXPLAIN_MAX], a[64], b[64], t[64];
            const policy_score_t *sc = &d.score;
            size_t n = (size_t)snprintf(want, sizeof(want), "score %d.%02d (",
                                        (int)(sc->score_c / 100), (int)(sc->score_c % 100));
            for (uint32_t i = 0; i < sc->ncomponents && n < sizeof(want); i++) {
                const policy_component_result_t *r = &sc->components[i];
                n += (size_t)snprintf(want + n, sizeof(want) - n, "%s%s %s: %.2f/%s", i ? "; " : "",
                                      r->source, old_num(r->value, a, sizeof(a)), r->points,
                                      old_num(r->max_points, b, sizeof(b)));
                if (n >= sizeof(want)) break;
                if (r->kind == POLICY_COMP_LINEAR)
                    n += (size_t)snprintf(want + n, sizeof(want) - n, " over %s..%s",
                                          old_num(r->lo, a, sizeof(a)),
                                          old_num(r->hi, b, sizeof(b)));
                else if (r->kind == POLICY_COMP_STEPS && r->step >= 0)
                    n += (size_t)snprintf(want + n, sizeof(want) - n, " at >= %s",
                                          old_num(r->step_at, a, sizeof(a)));
                else if (r->kind == POLICY_COMP_STEPS)
                    n += (size_t)snprintf(want + n, sizeof(want) - n, " below every step");
            }
            if (n >= sizeof(want)) continue; /* the text was cut: compared no further */
            snprintf(want + n, sizeof(want) - n, ") -> T* %s",
                     policy_tier_label(p, sc->target_tier, t, sizeof(t)));
            if (!strstr(d.explain, want)) fail_msg("explain \"%s\" lacks \"%s\"", d.explain, want);
            checked++;
        }
    }
    assert_true(checked > 1000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets_load),
        cmocka_unit_test(test_explain_score_text),
        cmocka_unit_test(test_metrics_missing_months_are_zero),
        cmocka_unit_test(test_score_hand_computed),
        cmocka_unit_test(test_score_rounds_half_up),
        cmocka_unit_test(test_target_tier_at_min_score),
        cmocka_unit_test(test_steps_component),
        cmocka_unit_test(test_new_customer_then_initial_evaluation),
        cmocka_unit_test(test_initial_evaluation_same_tier_publishes_nothing),
        cmocka_unit_test(test_never_ordered_is_not_reviewed),
        cmocka_unit_test(test_review_refuses_a_wrong_window),
        cmocka_unit_test(test_upgrade_one_tier_at_exactly_90_percent),
        cmocka_unit_test(test_upgrade_blocked_by_grade_in_one_month),
        cmocka_unit_test(test_upgrade_blocked_by_qty_in_one_month),
        cmocka_unit_test(test_upgrade_needs_a_higher_score),
        cmocka_unit_test(test_upgrade_uses_tier_in_effect_each_month),
        cmocka_unit_test(test_downgrade_to_the_tier_holding_the_average),
        cmocka_unit_test(test_downgrade_several_tiers),
        cmocka_unit_test(test_qty_exactly_at_floor_is_not_below),
        cmocka_unit_test(test_unrecorded_months_use_the_current_tier),
        cmocka_unit_test(test_below_floor_but_average_fits_current_tier),
        cmocka_unit_test(test_tier_the_policy_no_longer_has),
        cmocka_unit_test(test_compliance_caps_at_review),
        cmocka_unit_test(test_compliance_at_once_when_grade_lowered),
        cmocka_unit_test(test_override_and_republished_override),
        cmocka_unit_test(test_override_keeps_new_customer_period),
        cmocka_unit_test(test_override_under_grade_c_held_at_cap),
        cmocka_unit_test(test_override_inside_new_customer_period),
        cmocka_unit_test(test_first_order_with_override_and_grade),
        cmocka_unit_test(test_quota_each_kind_once),
        cmocka_unit_test(test_quota_one_order_crosses_all_in_order),
        cmocka_unit_test(test_quota_holiday_month),
        cmocka_unit_test(test_quota_without_caps),
        cmocka_unit_test(test_classification_code),
        cmocka_unit_test(test_abc_volume_upgrades_on_order),
        cmocka_unit_test(test_abcd_score_regrades_monthly),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
