/*
 * test_events.c -- the event codec: TierChange and QuotaEvent records read
 * back by avro-c's generic reader, and the outbox's bytes independent of
 * the wall clock.  (The CustomerProfile records tierd consumes are
 * decode.c's: test_decode_profile.c.)
 *
 * Tier changes carry decisions made by the real policy engine on the
 * shipped supply-tiers preset, so the event is tested on what the daemon
 * will really publish.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <avro.h>

#include "outbox.h"
#include "events.h"
#include "month.h"
#include "tbuf.h"
#include "tierd/policy.h"

#include <sys/time.h>
#include <time.h>

#ifndef TIERD_SOURCE_DIR
#error "TIERD_SOURCE_DIR must point at the source tree (for config/policies)"
#endif

extern const char tierd_schema_tier_change[];
extern const char tierd_schema_quota_event[];

#define APR_2025 (2025 * 12 + 3)
#define DECIDED_AT 1743465600123LL

static struct {
    policy_t policy; /* supply-tiers */
    events_t *ev;
    avro_schema_t tc_schema, q_schema;
    avro_value_iface_t *tc_iface, *q_iface;
} g;

static int parse(const char *json, avro_schema_t *s, avro_value_iface_t **iface) {
    if (avro_schema_from_json_length(json, strlen(json), s) != 0) return -1;
    *iface = avro_generic_class_from_schema(*s);
    return *iface != NULL ? 0 : -1;
}

static int group_setup(void **state) {
    char path[512], err[512];

    (void)state;
    snprintf(path, sizeof(path), "%s/config/policies/supply-tiers.yaml", TIERD_SOURCE_DIR);
    if (policy_load(path, &g.policy, err, sizeof(err)) != 0) {
        fprintf(stderr, "policy_load: %s\n", err);
        return -1;
    }
    g.ev = events_new(err, sizeof(err));
    if (g.ev == NULL) {
        fprintf(stderr, "events_new: %s\n", err);
        return -1;
    }
    return parse(tierd_schema_tier_change, &g.tc_schema, &g.tc_iface) ||
           parse(tierd_schema_quota_event, &g.q_schema, &g.q_iface);
}

static int group_teardown(void **state) {
    (void)state;
    events_destroy(g.ev);
    avro_value_iface_decref(g.tc_iface);
    avro_value_iface_decref(g.q_iface);
    avro_schema_decref(g.tc_schema);
    avro_schema_decref(g.q_schema);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Reading events back with avro-c's generic reader                    */

/* Reads buf as one record; re-encoding it must take exactly len bytes, so
 * nothing was left unread. */
static void read_back(avro_value_iface_t *iface, const char *buf, size_t len, avro_value_t *v) {
    avro_reader_t r = avro_reader_memory(buf, (int64_t)len);
    size_t size = 0;

    assert_non_null(r);
    assert_int_equal(avro_generic_value_new(iface, v), 0);
    assert_int_equal(avro_value_read(r, v), 0);
    avro_reader_free(r);
    assert_int_equal(avro_value_sizeof(v, &size), 0);
    assert_int_equal(size, len);
}

static avro_value_t field(avro_value_t *rec, const char *name) {
    avro_value_t f;
    if (avro_value_get_by_name(rec, name, &f, NULL) != 0) fail_msg("no field %s", name);
    return f;
}

static const char *get_str(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    const char *s = NULL;
    size_t n = 0;
    assert_int_equal(avro_value_get_string(&f, &s, &n), 0);
    return s;
}

static int64_t get_long(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    int64_t x = 0;
    assert_int_equal(avro_value_get_long(&f, &x), 0);
    return x;
}

static int32_t get_int(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    int32_t x = 0;
    assert_int_equal(avro_value_get_int(&f, &x), 0);
    return x;
}

static double get_double(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    double x = 0;
    assert_int_equal(avro_value_get_double(&f, &x), 0);
    return x;
}

static int get_bool(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    int x = 0;
    assert_int_equal(avro_value_get_boolean(&f, &x), 0);
    return x;
}

static const char *get_enum(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    int x = -1;
    assert_int_equal(avro_value_get_enum(&f, &x), 0);
    return avro_schema_enum_get(avro_value_get_schema(&f), x);
}

/* A ["null", T] field: false when null, else the branch in *b. */
static int get_opt(avro_value_t *rec, const char *name, avro_value_t *b) {
    avro_value_t f = field(rec, name);
    int disc = -1;
    assert_int_equal(avro_value_get_discriminant(&f, &disc), 0);
    assert_int_equal(avro_value_get_current_branch(&f, b), 0);
    assert_true(disc == 0 || disc == 1);
    return disc;
}

static size_t get_count(avro_value_t *rec, const char *name) {
    avro_value_t f = field(rec, name);
    size_t n = 0;
    assert_int_equal(avro_value_get_size(&f, &n), 0);
    return n;
}

static avro_value_t get_item(avro_value_t *rec, const char *name, size_t i) {
    avro_value_t f = field(rec, name), item;
    assert_int_equal(avro_value_get_by_index(&f, i, &item, NULL), 0);
    return item;
}

/* ------------------------------------------------------------------ */
/* Tier changes                                                        */

/* The direct encoding and libavro's give the same bytes (and the same
 * event id), or refuse alike. */
static int encode_both(const events_tier_change_t *tc, char **buf, size_t *len) {
    char err[256] = "", lerr[256] = "", id[160] = "", lid[160] = "", *lbuf = NULL;
    size_t llen = 0;
    int rc = events_encode_tier_change(g.ev, tc, buf, len, id, sizeof(id), err, sizeof(err));
    int lrc = events_encode_tier_change_libavro(g.ev, tc, &lbuf, &llen, lid, sizeof(lid), lerr,
                                                sizeof(lerr));
    assert_int_equal(rc, lrc);
    if (rc != 0) {
        assert_null(*buf);
        assert_null(lbuf);
        return rc;
    }
    assert_string_equal(id, lid);
    assert_int_equal(*len, llen);
    assert_memory_equal(*buf, lbuf, llen);
    free(lbuf);
    return 0;
}

static void encode_tc(const events_tier_change_t *tc, avro_value_t *v, char *event_id,
                      size_t event_id_size) {
    char err[256] = "", *buf = NULL;
    size_t len = 0;

    if (events_encode_tier_change(g.ev, tc, &buf, &len, event_id, event_id_size, err,
                                  sizeof(err)) != 0)
        fail_msg("events_encode_tier_change: %s", err);
    assert_non_null(buf);
    read_back(g.tc_iface, buf, len, v);
    free(buf);
    assert_int_equal(encode_both(tc, &buf, &len), 0);
    free(buf);
}

/* xorshift64*: deterministic random decisions. */
static uint64_t rng = 0x5eed0e7e;
static uint64_t rnd(void) {
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717u;
}

/* A value near zero, near a varint's byte boundary, or anywhere. */
static int64_t any_i64(void) {
    switch (rnd() % 4) {
    case 0: return (int64_t)(rnd() % 300) - 150;
    case 1: { /* a power of two, either sign */
        int64_t v = (int64_t)(UINT64_C(1) << (rnd() % 63));
        return rnd() % 2 ? v : -v;
    }
    case 2: return rnd() % 2 ? INT64_MAX : INT64_MIN;
    default: return (int64_t)rnd();
    }
}

static double any_double(void) {
    static const double odd[] = {0.0, -0.0, 1e308, -1e-308, 0.1, 45.0, 2.5e-5};
    return rnd() % 3 ? odd[rnd() % (sizeof(odd) / sizeof(odd[0]))] : (double)any_i64() / 7.0;
}

/* Random decisions of every shape, as the engine never makes them (any
 * reason with any rule, numbers at the ends of their ranges, explain texts
 * up to the longest): both encodings agree on each. */
static void test_tc_direct_agrees_with_libavro(void **state) {
    static const char *const sources[] = {"qty_avg", "", "a_rather_long_metric_name_x", NULL};
    static policy_decision_t d;
    policy_month_t w[POLICY_WINDOW_MAX];
    char cls[POLICY_CODE_MAX] = "ZX1AL", cust[ORDER_ID_MAX + 1];
    (void)state;
    for (int it = 0; it < 3000; it++) {
        memset(&d, 0, sizeof(d));
        d.prev_tier = (int32_t)(rnd() % 10) - 1;
        d.new_tier = (int32_t)any_i64();
        d.changed = true;
        d.reason = (policy_reason_t)(1 + rnd() % (POLICY_REASON__COUNT - 1));
        d.rule = (policy_rule_t)(rnd() % POLICY_RULE__COUNT);
        size_t ex = rnd() % 4 == 0 ? POLICY_EXPLAIN_MAX - 1 : rnd() % 200;
        for (size_t i = 0; i < ex; i++) d.explain[i] = (char)(' ' + rnd() % 95);
        d.has_score = rnd() % 2;
        d.score.score_c = (int32_t)(rnd() % 10001);
        d.score.target_tier = (int32_t)any_i64();
        d.score.ncomponents = (uint32_t)(rnd() % (POLICY_COMPONENTS_MAX + 1));
        for (uint32_t i = 0; i < d.score.ncomponents; i++) {
            policy_component_result_t *c = &d.score.components[i];
            c->kind = (policy_comp_kind_t)(rnd() % 3);
            c->source = sources[rnd() % 4];
            c->value = any_double();
            c->points = any_double();
            c->max_points = any_double();
            c->lo = any_double();
            c->hi = any_double();
        }
        d.nmonths = (uint32_t)(rnd() % (POLICY_WINDOW_MAX + 1));
        size_t nw = 0;
        for (uint32_t i = 0; i < d.nmonths; i++) {
            policy_month_check_t *m = &d.months[i];
            m->month = APR_2025 - (int32_t)(rnd() % 2000);
            m->tier_in_effect = (int32_t)any_i64();
            m->grade = (policy_grade_t)("\0ABCD"[rnd() % 5]);
            m->qty = any_i64();
            m->floor = any_i64();
            m->cap = any_i64();
            m->upgrade_qty = any_i64();
            m->grade_ok = rnd() % 2;
            m->qty_ok = rnd() % 2;
            m->below_floor = rnd() % 2;
            if (rnd() % 3) { /* the window has it, or not */
                memset(&w[nw], 0, sizeof(w[nw]));
                w[nw].month = m->month;
                w[nw].amount = any_i64();
                w[nw].orders = any_i64();
                w[nw].skus = any_i64();
                nw++;
            }
        }
        d.upgrade_blocked = (unsigned)(rnd() % 4);
        size_t cl = 1 + rnd() % (rnd() % 8 ? 12 : ORDER_ID_MAX);
        for (size_t i = 0; i < cl; i++) cust[i] = (char)('A' + rnd() % 26);
        cust[cl] = '\0';
        events_tier_change_t tc = {
            .customer_id = cust,
            .sequence = 1 + (int64_t)(rnd() % (rnd() % 2 ? 5 : INT64_MAX)),
            .decision = &d,
            .window = nw ? w : NULL,
            .nwindow = nw,
            .month = rnd() % 4 ? APR_2025 - (int32_t)(rnd() % 500) : -1,
            .classification = cls,
            .policy = &g.policy,
            .decided_at_ms = any_i64(),
        };
        char *buf = NULL;
        size_t len = 0;
        if (encode_both(&tc, &buf, &len) == 0) free(buf);
    }
}

/* Three months ending April 2025 on tier 2, a customer first seen in
 * February: the April review is its INITIAL_EVALUATION. */
static void review_window(policy_month_t w[3]) {
    static const int64_t qty[3] = {300, 320, 340};
    for (int i = 0; i < 3; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].month = APR_2025 - 2 + i;
        w[i].qty = qty[i];
        w[i].amount = qty[i] * 20000;
        w[i].orders = 4 + i;
        w[i].skus = 25 + i;
        w[i].tier_in_effect = 2;
        w[i].grade = POLICY_GRADE_A;
    }
}

static void review(const policy_month_t *w, policy_decision_t *d) {
    policy_customer_t c = {
        .state = {.tier = 2, .first_month = APR_2025 - 2, .evaluated = false},
        .profile = g.policy.profile_default,
        .window = w,
        .nwindow = 3,
    };
    char err[256];
    if (policy_review(&g.policy, &c, APR_2025, d, err, sizeof(err)) != 0)
        fail_msg("policy_review: %s", err);
}

static void test_tc_first_placement(void **state) {
    policy_profile_t prof = g.policy.profile_default;
    policy_decision_t d;
    char cls[POLICY_CODE_MAX], id[128];
    avro_value_t v, b;

    (void)state;
    policy_first_order(&g.policy, &prof, APR_2025, &d);
    assert_true(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_NEW_CUSTOMER);
    policy_classification(&prof, true, 'X', cls);

    events_tier_change_t tc = {
        .customer_id = "C-42",
        .sequence = 1,
        .decision = &d,
        .month = APR_2025,
        .classification = cls,
        .policy = &g.policy,
        .decided_at_ms = DECIDED_AT,
    };
    encode_tc(&tc, &v, id, sizeof(id));

    assert_string_equal(id, "C-42:tier:1");
    assert_string_equal(get_str(&v, "event_id"), "C-42:tier:1");
    assert_string_equal(get_str(&v, "customer_id"), "C-42");
    assert_int_equal(get_long(&v, "sequence"), 1);
    assert_int_equal(get_opt(&v, "previous_tier", &b), 0); /* null the first time */
    assert_int_equal(get_int(&v, "new_tier"), g.policy.new_customer_tier);
    assert_string_equal(get_enum(&v, "reason"), "NEW_CUSTOMER");
    assert_string_equal(get_str(&v, "rule"), "NEW_CUSTOMER");
    assert_string_equal(get_str(&v, "explain"), d.explain);
    assert_true(strlen(d.explain) > 0);
    assert_int_equal(get_opt(&v, "review_month", &b), 1);
    {
        const char *s = NULL;
        size_t n = 0;
        assert_int_equal(avro_value_get_string(&b, &s, &n), 0);
        assert_string_equal(s, "2025-04");
    }
    assert_int_equal(get_opt(&v, "score", &b), d.has_score ? 1 : 0);
    assert_int_equal(get_opt(&v, "target_tier", &b), d.has_score ? 1 : 0);
    assert_int_equal(get_count(&v, "components"), d.has_score ? d.score.ncomponents : 0);
    assert_int_equal(get_count(&v, "window"), d.nmonths);
    assert_int_equal(get_count(&v, "upgrade_blocked_by"), 0);
    assert_string_equal(get_str(&v, "classification"), cls);
    assert_string_equal(get_str(&v, "classification"), "QX11");
    assert_string_equal(get_str(&v, "policy_name"), "supply-tiers");
    assert_string_equal(get_str(&v, "policy_version"), "1");
    assert_int_equal(get_long(&v, "decided_at"), DECIDED_AT);
    avro_value_decref(&v);
}

static void test_tc_review(void **state) {
    policy_month_t w[3];
    policy_decision_t d;
    char id[128];
    avro_value_t v, b, item;
    int32_t x;
    double score;

    (void)state;
    review_window(w);
    review(w, &d);
    assert_true(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_INITIAL_EVALUATION);
    assert_true(d.has_score);
    assert_int_equal(d.nmonths, 3);

    events_tier_change_t tc = {
        .customer_id = "C-42",
        .sequence = 2,
        .decision = &d,
        .window = w,
        .nwindow = 3,
        .month = APR_2025,
        .classification = "Q211",
        .policy = &g.policy,
        .decided_at_ms = DECIDED_AT,
    };
    encode_tc(&tc, &v, id, sizeof(id));

    assert_string_equal(id, "C-42:tier:2");
    assert_int_equal(get_opt(&v, "previous_tier", &b), 1);
    assert_int_equal(avro_value_get_int(&b, &x), 0);
    assert_int_equal(x, 2);
    assert_int_equal(get_int(&v, "new_tier"), d.new_tier);
    assert_string_equal(get_enum(&v, "reason"), "INITIAL_EVALUATION");
    assert_string_equal(get_str(&v, "rule"), policy_rule_name(d.rule));
    assert_int_equal(get_opt(&v, "score", &b), 1);
    assert_int_equal(avro_value_get_double(&b, &score), 0);
    assert_true(score == d.score.score_c / 100.0);
    assert_true(score > 0 && score <= 100);
    assert_int_equal(get_opt(&v, "target_tier", &b), 1);
    assert_int_equal(avro_value_get_int(&b, &x), 0);
    assert_int_equal(x, d.score.target_tier);

    /* supply-tiers: 3 linear, 2 profile components. */
    assert_int_equal(get_count(&v, "components"), 5);
    item = get_item(&v, "components", 0);
    assert_string_equal(get_str(&item, "kind"), "linear");
    assert_string_equal(get_str(&item, "source"), "qty_avg");
    assert_true(get_double(&item, "value") == 320.0);
    assert_true(get_double(&item, "points") == d.score.components[0].points);
    assert_true(get_double(&item, "max_points") == 45.0);
    assert_true(get_double(&item, "lo") == 0.0);
    assert_true(get_double(&item, "hi") == 2000.0);
    item = get_item(&v, "components", 3);
    assert_string_equal(get_str(&item, "kind"), "profile");
    assert_string_equal(get_str(&item, "source"), "cooperation");
    assert_true(get_double(&item, "lo") == 0.0 && get_double(&item, "hi") == 0.0);

    assert_int_equal(get_count(&v, "window"), 3);
    for (size_t i = 0; i < 3; i++) {
        static const char *const months[] = {"2025-02", "2025-03", "2025-04"};
        item = get_item(&v, "window", i);
        assert_string_equal(get_str(&item, "month"), months[i]);
        assert_int_equal(get_long(&item, "qty"), w[i].qty);
        assert_int_equal(get_long(&item, "amount"), w[i].amount);
        assert_int_equal(get_long(&item, "orders"), w[i].orders);
        assert_int_equal(get_long(&item, "skus"), w[i].skus);
        assert_int_equal(get_int(&item, "tier_in_effect"), 2);
        assert_string_equal(get_str(&item, "grade"), "A");
        assert_int_equal(get_long(&item, "floor"), d.months[i].floor);
        assert_int_equal(get_long(&item, "cap"), 100);
        assert_int_equal(get_long(&item, "upgrade_qty"), 90);
        assert_int_equal(get_bool(&item, "grade_ok"), d.months[i].grade_ok);
        assert_int_equal(get_bool(&item, "qty_ok"), d.months[i].qty_ok);
        assert_int_equal(get_bool(&item, "below_floor"), d.months[i].below_floor);
    }
    assert_string_equal(get_str(&v, "classification"), "Q211");
    assert_int_equal(get_long(&v, "decided_at"), DECIDED_AT);
    avro_value_decref(&v);

    /* The same codec again, with only the last two months' aggregates at
     * hand and upgrade blocks set: the reused value keeps nothing of the
     * previous event (arrays do not grow), a missing month gives zeros. */
    d.upgrade_blocked = POLICY_BLOCKED_GRADE | POLICY_BLOCKED_QTY;
    tc.window = w + 1;
    tc.nwindow = 2;
    tc.sequence = 3;
    encode_tc(&tc, &v, NULL, 0);
    assert_string_equal(get_str(&v, "event_id"), "C-42:tier:3");
    assert_int_equal(get_count(&v, "components"), 5);
    assert_int_equal(get_count(&v, "window"), 3);
    item = get_item(&v, "window", 0);
    assert_string_equal(get_str(&item, "month"), "2025-02");
    assert_int_equal(get_long(&item, "qty"), 300); /* from the check, not the window */
    assert_int_equal(get_long(&item, "amount"), 0);
    assert_int_equal(get_long(&item, "orders"), 0);
    item = get_item(&v, "window", 2);
    assert_int_equal(get_long(&item, "amount"), w[2].amount);
    assert_int_equal(get_count(&v, "upgrade_blocked_by"), 2);
    item = get_item(&v, "upgrade_blocked_by", 0);
    {
        const char *s = NULL;
        size_t n = 0;
        assert_int_equal(avro_value_get_string(&item, &s, &n), 0);
        assert_string_equal(s, "GRADE");
        item = get_item(&v, "upgrade_blocked_by", 1);
        assert_int_equal(avro_value_get_string(&item, &s, &n), 0);
        assert_string_equal(s, "QTY");
    }
    avro_value_decref(&v);
}

/* A profile change: no month (review_month null), no score, no window. */
static void test_tc_profile_override(void **state) {
    policy_profile_t prof = g.policy.profile_default;
    policy_state_t st = {.tier = 3, .first_month = APR_2025 - 5, .evaluated = true};
    policy_decision_t d;
    avro_value_t v, b;
    int32_t x;

    (void)state;
    prof.has_override = true;
    prof.tier_override = 5;
    policy_on_profile(&g.policy, &st, &prof, &d);
    assert_true(d.changed);
    assert_int_equal(d.reason, POLICY_REASON_OVERRIDE);

    events_tier_change_t tc = {
        .customer_id = "C-7",
        .sequence = 9,
        .decision = &d,
        .month = -1,
        .classification = "Q111",
        .policy = &g.policy,
        .decided_at_ms = 5,
    };
    encode_tc(&tc, &v, NULL, 0);
    assert_string_equal(get_enum(&v, "reason"), "OVERRIDE");
    assert_int_equal(get_opt(&v, "previous_tier", &b), 1);
    assert_int_equal(avro_value_get_int(&b, &x), 0);
    assert_int_equal(x, 3);
    assert_int_equal(get_int(&v, "new_tier"), 5);
    assert_int_equal(get_opt(&v, "review_month", &b), 0);
    assert_int_equal(get_opt(&v, "score", &b), 0);
    assert_int_equal(get_opt(&v, "target_tier", &b), 0);
    assert_int_equal(get_count(&v, "components"), 0);
    assert_int_equal(get_count(&v, "window"), 0);
    avro_value_decref(&v);
}

static void expect_tc_refused(const events_tier_change_t *tc, size_t id_size, const char *why) {
    char err[256] = "", id[128] = "untouched", *buf = (char *)"sentinel";
    size_t len = 7;

    assert_int_equal(events_encode_tier_change(g.ev, tc, &buf, &len, id, id_size, err, sizeof(err)),
                     -1);
    assert_null(buf);
    if (strstr(err, why) == NULL) fail_msg("errstr \"%s\" does not mention \"%s\"", err, why);
}

static void test_tc_refusals(void **state) {
    policy_month_t w[3];
    policy_decision_t d, none;
    events_tier_change_t tc, bad;
    policy_customer_t c;
    char err[256];

    (void)state;
    review_window(w);
    review(w, &d);
    tc = (events_tier_change_t){
        .customer_id = "C-42",
        .sequence = 2,
        .decision = &d,
        .window = w,
        .nwindow = 3,
        .month = APR_2025,
        .classification = "Q211",
        .policy = &g.policy,
    };

    /* A review that holds the tier is not an event. */
    c = (policy_customer_t){
        .state = {.tier = 2, .first_month = APR_2025 - 1},
        .profile = g.policy.profile_default,
        .window = w,
        .nwindow = 3,
    };
    assert_int_equal(policy_review(&g.policy, &c, APR_2025, &none, err, sizeof(err)), 0);
    assert_int_equal(none.reason, POLICY_REASON_NONE);
    bad = tc;
    bad.decision = &none;
    expect_tc_refused(&bad, 128, "only for changes");

    bad = tc;
    bad.sequence = 0;
    expect_tc_refused(&bad, 128, "sequence");
    bad = tc;
    bad.customer_id = "";
    expect_tc_refused(&bad, 128, "customer_id");
    bad = tc;
    bad.classification = NULL;
    expect_tc_refused(&bad, 128, "classification");
    bad = tc;
    bad.month = -2;
    expect_tc_refused(&bad, 128, "YYYY-MM");
    bad = tc;
    bad.window = NULL;
    expect_tc_refused(&bad, 128, "window");
    /* "C-42:tier:2" is 11 bytes: a 11-byte buffer cannot take its NUL. */
    expect_tc_refused(&tc, 11, "cannot hold");

    assert_int_equal(events_encode_tier_change(NULL, &tc, NULL, NULL, NULL, 0, NULL, 0), -1);
}

/* ------------------------------------------------------------------ */
/* Determinism: the same decision, another wall clock, the same bytes   */

/* The wall clock as the code under test sees it: the link replaces libc's
 * time, clock_gettime and gettimeofday with these (--wrap, see
 * CMakeLists.txt).  While fake_now_s is set they return it and count the
 * reads; otherwise they pass through. */
static time_t fake_now_s;
static unsigned clock_reads;

time_t __real_time(time_t *t);
time_t __wrap_time(time_t *t);
int __real_clock_gettime(clockid_t id, struct timespec *ts);
int __wrap_clock_gettime(clockid_t id, struct timespec *ts);
int __real_gettimeofday(struct timeval *tv, void *tz);
int __wrap_gettimeofday(struct timeval *tv, void *tz);

time_t __wrap_time(time_t *t) {
    if (fake_now_s == 0) return __real_time(t);
    clock_reads++;
    if (t != NULL) *t = fake_now_s;
    return fake_now_s;
}

int __wrap_clock_gettime(clockid_t id, struct timespec *ts) {
    if (fake_now_s == 0) return __real_clock_gettime(id, ts);
    clock_reads++;
    ts->tv_sec = fake_now_s;
    ts->tv_nsec = 0;
    return 0;
}

int __wrap_gettimeofday(struct timeval *tv, void *tz) {
    if (fake_now_s == 0) return __real_gettimeofday(tv, tz);
    clock_reads++;
    tv->tv_sec = fake_now_s;
    tv->tv_usec = 0;
    return 0;
}

/* The event's bytes as outbox.c puts them in the outbox, decided with the
 * wall clock at now_s.  The outbox entry is XADD key * t topic k key i id
 * v value: the value is argument 10.  *len gets its length; free() it. */
typedef enum { BY_TIER_CHANGE, BY_QUOTA } decided_kind_t;

typedef struct decided_input {
    decided_kind_t kind;
    const policy_decision_t *dec; /* BY_TIER_CHANGE */
    const policy_month_t *window;
    size_t nwindow;
    int32_t month;
    int64_t decided_at_ms;
    policy_quota_kind_t quota; /* BY_QUOTA */
    int64_t placed_at_ms;
} decided_input_t;

static char *decided_bytes(const decided_input_t *in, time_t now_s, size_t *len) {
    outbox_t d;
    customer_t c;
    store_tx_t tx = {0};
    policy_quota_limits_t lim;
    char err[256] = "", *out;
    int rc;

    memset(&d, 0, sizeof(d));
    d.policy = &g.policy;
    d.events = g.ev;
    d.tier_topic = "tier-changes";
    d.quota_topic = "quota-events";
    snprintf(d.key, sizeof(d.key), "tierd:{orders.3}:outbox");
    memset(&c, 0, sizeof(c));
    snprintf(c.id, sizeof(c.id), "C-42");
    c.len = 4;
    c.seq = 6;
    c.scale = '2';

    fake_now_s = now_s;
    clock_reads = 0;
    if (in->kind == BY_TIER_CHANGE) {
        rc = outbox_tier_change(&d, &tx, &c, in->dec, in->window, in->nwindow, in->month,
                                in->decided_at_ms, err, sizeof(err));
    } else {
        policy_quota_limits(&g.policy, 3, POLICY_FORMAT_OTHER, false, &lim);
        rc = outbox_quota(&d, &tx, &c, in->month, 3, in->quota, &lim, 190, "O-77", in->placed_at_ms,
                          err, sizeof(err));
    }
    fake_now_s = 0;
    if (rc != 0) fail_msg("deciding: %s", err);
    assert_int_equal(clock_reads, 0); /* decide never asks the clock */
    assert_int_equal(d.args.n, 11);
    out = malloc(d.args.len[10]);
    assert_non_null(out);
    memcpy(out, d.args.v[10], d.args.len[10]);
    *len = d.args.len[10];
    outbox_free(&d);
    store_tx_free(&tx);
    return out;
}

/* Decides `in` at two wall clocks a year apart: byte-identical events. */
static void assert_same_bytes(const decided_input_t *in, avro_value_iface_t *iface,
                              const char *time_field, int64_t want_ms) {
    size_t n1 = 0, n2 = 0;
    char *b1 = decided_bytes(in, 1700000000, &n1);
    char *b2 = decided_bytes(in, 1700000000 + 366 * 86400, &n2);
    avro_value_t v;

    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    read_back(iface, b1, n1, &v);
    assert_int_equal(get_long(&v, time_field), want_ms);
    avro_value_decref(&v);
    free(b1);
    free(b2);
}

static void test_decided_events_ignore_the_wall_clock(void **state) {
    policy_month_t w[3];
    policy_decision_t d;
    policy_profile_t prof = g.policy.profile_default;
    policy_state_t st = {.tier = 3, .first_month = APR_2025 - 5, .evaluated = true};
    char err[128];
    month_zone_t z;
    /* 2025-04-17T09:30:00.250+08:00, an order's placed_at */
    const int64_t placed_at = 1744853400250LL;
    /* 2025-05-01T00:00:00+08:00: the April review closes April there */
    const int64_t may_shanghai = 1746028800000LL;

    (void)state;
    assert_int_equal(month_zone_init(&z, "Asia/Shanghai", err, sizeof(err)), 0);

    /* a review of April: decided at the first instant of May in the zone */
    review_window(w);
    review(w, &d);
    assert_true(d.changed);
    assert_int_equal(outbox_review_at(&z, APR_2025), may_shanghai);
    decided_input_t in = {.kind = BY_TIER_CHANGE,
                          .dec = &d,
                          .window = w,
                          .nwindow = 3,
                          .month = APR_2025,
                          .decided_at_ms = outbox_review_at(&z, APR_2025)};
    assert_same_bytes(&in, g.tc_iface, "decided_at", may_shanghai);

    /* a placement by an order: decided at the order's placed_at */
    policy_first_order(&g.policy, &prof, APR_2025, &d);
    in = (decided_input_t){
        .kind = BY_TIER_CHANGE, .dec = &d, .month = APR_2025, .decided_at_ms = placed_at};
    assert_same_bytes(&in, g.tc_iface, "decided_at", placed_at);

    /* an override: decided at the profile's updated_at */
    prof.has_override = true;
    prof.tier_override = 6;
    policy_on_profile(&g.policy, &st, &prof, &d);
    assert_true(d.changed);
    in = (decided_input_t){
        .kind = BY_TIER_CHANGE, .dec = &d, .month = -1, .decided_at_ms = placed_at - 3600000};
    assert_same_bytes(&in, g.tc_iface, "decided_at", placed_at - 3600000);

    /* a quota event: its only time is the crossing order's placed_at */
    in = (decided_input_t){.kind = BY_QUOTA,
                           .month = APR_2025,
                           .quota = POLICY_QUOTA_WARNING,
                           .placed_at_ms = placed_at};
    assert_same_bytes(&in, g.q_iface, "placed_at", placed_at);

    assert_int_equal(month_zone_init(&z, "UTC", err, sizeof(err)), 0);
}

/* ------------------------------------------------------------------ */
/* Quota events                                                        */

/* The direct quota encoding and libavro's give the same bytes and id, or
 * refuse alike. */
static int encode_quota_both(const events_quota_t *q, char **buf, size_t *len, char *id,
                             size_t id_size) {
    char err[256] = "", lerr[256] = "", lid[160] = "", *lbuf = NULL;
    size_t llen = 0;
    int rc = events_encode_quota(g.ev, q, buf, len, id, id_size, err, sizeof(err));
    int lrc = events_encode_quota_libavro(g.ev, q, &lbuf, &llen, id ? lid : NULL,
                                          id ? (id_size < sizeof(lid) ? id_size : sizeof(lid)) : 0,
                                          lerr, sizeof(lerr));
    assert_int_equal(rc, lrc);
    if (rc != 0) {
        assert_null(*buf);
        assert_null(lbuf);
        assert_string_equal(err, lerr);
        return rc;
    }
    if (id) assert_string_equal(id, lid);
    assert_int_equal(*len, llen);
    assert_memory_equal(*buf, lbuf, llen);
    free(lbuf);
    return 0;
}

/* Random quota events, numbers at the ends of their ranges, ids up to the
 * longest: both encodings agree on each. */
static void test_quota_direct_agrees_with_libavro(void **state) {
    policy_quota_limits_t lim;
    char cust[ORDER_ID_MAX + 1], oid[ORDER_ID_MAX + 1], id[ORDER_ID_MAX + 64];
    (void)state;
    for (int it = 0; it < 3000; it++) {
        size_t cl = 1 + rnd() % (rnd() % 8 ? 12 : ORDER_ID_MAX);
        size_t ol = rnd() % 50 ? 1 + rnd() % (rnd() % 8 ? 20 : ORDER_ID_MAX) : 0;
        for (size_t i = 0; i < cl; i++) cust[i] = (char)('!' + rnd() % 94);
        for (size_t i = 0; i < ol; i++) oid[i] = (char)('!' + rnd() % 94);
        cust[cl] = oid[ol] = '\0';
        lim.cap = any_i64();
        lim.effective_cap = any_i64();
        lim.hard_cap = rnd() % 3 ? any_i64() : POLICY_NO_HARD_CAP;
        events_quota_t q = {
            .customer_id = cust,
            .month = rnd() % 50 ? APR_2025 - (int32_t)(rnd() % 2000) : (int32_t)any_i64(),
            .tier = (int32_t)any_i64(),
            .kind = (policy_quota_kind_t)(rnd() % (POLICY_QUOTA__COUNT + 1)),
            .limits = &lim,
            .consumed = any_i64(),
            .order_id = oid,
            .placed_at_ms = any_i64(),
            .policy = &g.policy,
        };
        char *buf = NULL;
        size_t len = 0;
        if (encode_quota_both(&q, &buf, &len, rnd() % 2 ? id : NULL, sizeof(id)) == 0) free(buf);
    }
}

static void test_quota(void **state) {
    policy_quota_limits_t lim;
    char id[128], err[256], *buf = NULL;
    size_t len = 0;
    avro_value_t v, b;
    int64_t x;

    (void)state;
    policy_quota_limits(&g.policy, 3, POLICY_FORMAT_OTHER, true, &lim);
    assert_int_equal(lim.cap, 200);
    assert_int_equal(lim.effective_cap, 260); /* holiday month: +30 % */
    assert_int_equal(lim.hard_cap, 2000);

    events_quota_t q = {
        .customer_id = "C-42",
        .month = APR_2025,
        .tier = 3,
        .kind = POLICY_QUOTA_WARNING,
        .limits = &lim,
        .consumed = 240,
        .order_id = "O-1001",
        .placed_at_ms = DECIDED_AT,
        .policy = &g.policy,
    };
    if (events_encode_quota(g.ev, &q, &buf, &len, id, sizeof(id), err, sizeof(err)) != 0)
        fail_msg("events_encode_quota: %s", err);
    free(buf);
    assert_int_equal(encode_quota_both(&q, &buf, &len, id, sizeof(id)), 0);
    assert_string_equal(id, "C-42:2025-04:WARNING");
    read_back(g.q_iface, buf, len, &v);
    free(buf);
    assert_string_equal(get_str(&v, "event_id"), "C-42:2025-04:WARNING");
    assert_string_equal(get_str(&v, "customer_id"), "C-42");
    assert_string_equal(get_str(&v, "month"), "2025-04");
    assert_int_equal(get_int(&v, "tier"), 3);
    assert_string_equal(get_enum(&v, "kind"), "WARNING");
    assert_int_equal(get_long(&v, "cap"), 200);
    assert_int_equal(get_long(&v, "effective_cap"), 260);
    assert_int_equal(get_opt(&v, "hard_cap", &b), 1);
    assert_int_equal(avro_value_get_long(&b, &x), 0);
    assert_int_equal(x, 2000);
    assert_int_equal(get_long(&v, "consumed"), 240);
    assert_string_equal(get_str(&v, "order_id"), "O-1001");
    assert_int_equal(get_long(&v, "placed_at"), DECIDED_AT);
    assert_string_equal(get_str(&v, "policy_name"), "supply-tiers");
    assert_string_equal(get_str(&v, "policy_version"), "1");
    avro_value_decref(&v);

    /* No hard cap for the format: null, not INT64_MAX. */
    lim.hard_cap = POLICY_NO_HARD_CAP;
    q.kind = POLICY_QUOTA_EXCEEDED;
    q.month = 2026 * 12 + 11;
    if (events_encode_quota(g.ev, &q, &buf, &len, id, sizeof(id), err, sizeof(err)) != 0)
        fail_msg("events_encode_quota: %s", err);
    free(buf);
    assert_int_equal(encode_quota_both(&q, &buf, &len, id, sizeof(id)), 0);
    assert_string_equal(id, "C-42:2026-12:EXCEEDED");
    read_back(g.q_iface, buf, len, &v);
    free(buf);
    assert_string_equal(get_enum(&v, "kind"), "EXCEEDED");
    assert_string_equal(get_str(&v, "month"), "2026-12");
    assert_int_equal(get_opt(&v, "hard_cap", &b), 0);
    avro_value_decref(&v);

    /* Every kind has its symbol. */
    for (int k = 0; k < POLICY_QUOTA__COUNT; k++) {
        q.kind = (policy_quota_kind_t)k;
        assert_int_equal(encode_quota_both(&q, &buf, &len, NULL, 0), 0);
        read_back(g.q_iface, buf, len, &v);
        free(buf);
        assert_string_equal(get_enum(&v, "kind"), policy_quota_kind_name(q.kind));
        avro_value_decref(&v);
    }

    /* Refusals. */
    q.kind = POLICY_QUOTA__COUNT;
    assert_int_equal(encode_quota_both(&q, &buf, &len, NULL, 0), -1);
    assert_null(buf);
    q.kind = POLICY_QUOTA_REACHED;
    q.order_id = "";
    assert_int_equal(encode_quota_both(&q, &buf, &len, NULL, 0), -1);
    q.order_id = "O-1";
    q.month = -1;
    assert_int_equal(encode_quota_both(&q, &buf, &len, NULL, 0), -1);
    q.month = APR_2025;
    assert_int_equal(encode_quota_both(&q, &buf, &len, id, 10), -1);
    assert_null(buf);
}

static void test_destroy_null(void **state) {
    (void)state;
    events_destroy(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tc_first_placement),
        cmocka_unit_test(test_tc_review),
        cmocka_unit_test(test_tc_profile_override),
        cmocka_unit_test(test_tc_refusals),
        cmocka_unit_test(test_tc_direct_agrees_with_libavro),
        cmocka_unit_test(test_decided_events_ignore_the_wall_clock),
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_quota_direct_agrees_with_libavro),
        cmocka_unit_test(test_destroy_null),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
