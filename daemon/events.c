/*
 * events.c -- Avro bytes of tierd's own topics: TierChange and QuotaEvent
 * out (the output side of tierd's Avro; decode.c is the input side), and
 * a TierChange read back for tierctl.
 *
 * Owns: the two codec records (codec.h: parsed schema, value, reader) and
 * the tables that map our enums to the schemas' enum symbols.  All built
 * once by events_new().
 *
 * Encoding trusts nothing the caller cannot get wrong by accident: a
 * decision without a change, a month with no YYYY-MM form, an id too long
 * for its buffer are refused rather than published, because a subscriber
 * cannot take an event back.
 *
 * Reading a TierChange back (events_read_tier_change) is for tierctl,
 * which reads what a tierd published; libavro reads those bytes as they
 * come, without a pre-scan: they are not a daemon's input.
 *
 * Must never: publish a record its own schema would not read back.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "events.h"

#include "avroscan.h"
#include "codec.h"
#include "errstr.h"

/* Generated from schemas/ at build time. */
extern const char tierd_schema_tier_change[];
extern const char tierd_schema_quota_event[];

/* Field positions, as in the schemas (checked by events_new). */
enum {
    TC_EVENT_ID,
    TC_CUSTOMER_ID,
    TC_SEQUENCE,
    TC_PREVIOUS_TIER,
    TC_NEW_TIER,
    TC_REASON,
    TC_RULE,
    TC_EXPLAIN,
    TC_REVIEW_MONTH,
    TC_SCORE,
    TC_TARGET_TIER,
    TC_COMPONENTS,
    TC_WINDOW,
    TC_UPGRADE_BLOCKED_BY,
    TC_CLASSIFICATION,
    TC_POLICY_NAME,
    TC_POLICY_VERSION,
    TC_DECIDED_AT,
    TC__COUNT
};
enum { SC_KIND, SC_SOURCE, SC_VALUE, SC_POINTS, SC_MAX_POINTS, SC_LO, SC_HI, SC__COUNT };
enum {
    WM_MONTH,
    WM_QTY,
    WM_AMOUNT,
    WM_ORDERS,
    WM_SKUS,
    WM_TIER_IN_EFFECT,
    WM_GRADE,
    WM_FLOOR,
    WM_CAP,
    WM_UPGRADE_QTY,
    WM_GRADE_OK,
    WM_QTY_OK,
    WM_BELOW_FLOOR,
    WM__COUNT
};
enum {
    QE_EVENT_ID,
    QE_CUSTOMER_ID,
    QE_MONTH,
    QE_TIER,
    QE_KIND,
    QE_CAP,
    QE_EFFECTIVE_CAP,
    QE_HARD_CAP,
    QE_CONSUMED,
    QE_ORDER_ID,
    QE_PLACED_AT,
    QE_POLICY_NAME,
    QE_POLICY_VERSION,
    QE__COUNT
};
/* Room for "<customer_id>:tier:<int64>" and "<customer_id>:<YYYY-MM>:<KIND>". */
#define EVENTS_ID_MAX (ORDER_ID_MAX + 64)

/* "YYYY-MM" needs four year digits. */
#define EVENTS_MONTH_LIMIT (10000 * 12)

struct events {
    codec_record_t tc;    /* TierChange */
    codec_record_t quota; /* QuotaEvent */

    /* Wire index of each symbol, looked up by name so the enums of
     * policy.h need not be in the schemas' order.  -1: not sent. */
    int reason_index[POLICY_REASON__COUNT];
    int quota_index[POLICY_QUOTA__COUNT];
};

/* -------------------------------------------------------------------------
 * Schema shape: the encoders address fields by position, so the layout is
 * checked once, here.
 */

static const avroscan_field_t tc_fields[TC__COUNT] = {
    [TC_EVENT_ID] = {"event_id", AVRO_STRING, false},
    [TC_CUSTOMER_ID] = {"customer_id", AVRO_STRING, false},
    [TC_SEQUENCE] = {"sequence", AVRO_INT64, false},
    [TC_PREVIOUS_TIER] = {"previous_tier", AVRO_INT32, true},
    [TC_NEW_TIER] = {"new_tier", AVRO_INT32, false},
    [TC_REASON] = {"reason", AVRO_ENUM, false},
    [TC_RULE] = {"rule", AVRO_STRING, false},
    [TC_EXPLAIN] = {"explain", AVRO_STRING, false},
    [TC_REVIEW_MONTH] = {"review_month", AVRO_STRING, true},
    [TC_SCORE] = {"score", AVRO_DOUBLE, true},
    [TC_TARGET_TIER] = {"target_tier", AVRO_INT32, true},
    [TC_COMPONENTS] = {"components", AVRO_ARRAY, false},
    [TC_WINDOW] = {"window", AVRO_ARRAY, false},
    [TC_UPGRADE_BLOCKED_BY] = {"upgrade_blocked_by", AVRO_ARRAY, false},
    [TC_CLASSIFICATION] = {"classification", AVRO_STRING, false},
    [TC_POLICY_NAME] = {"policy_name", AVRO_STRING, false},
    [TC_POLICY_VERSION] = {"policy_version", AVRO_STRING, false},
    [TC_DECIDED_AT] = {"decided_at", AVRO_INT64, false},
};

static const avroscan_field_t sc_fields[SC__COUNT] = {
    [SC_KIND] = {"kind", AVRO_STRING, false},
    [SC_SOURCE] = {"source", AVRO_STRING, false},
    [SC_VALUE] = {"value", AVRO_DOUBLE, false},
    [SC_POINTS] = {"points", AVRO_DOUBLE, false},
    [SC_MAX_POINTS] = {"max_points", AVRO_DOUBLE, false},
    [SC_LO] = {"lo", AVRO_DOUBLE, false},
    [SC_HI] = {"hi", AVRO_DOUBLE, false},
};

static const avroscan_field_t wm_fields[WM__COUNT] = {
    [WM_MONTH] = {"month", AVRO_STRING, false},
    [WM_QTY] = {"qty", AVRO_INT64, false},
    [WM_AMOUNT] = {"amount", AVRO_INT64, false},
    [WM_ORDERS] = {"orders", AVRO_INT64, false},
    [WM_SKUS] = {"skus", AVRO_INT64, false},
    [WM_TIER_IN_EFFECT] = {"tier_in_effect", AVRO_INT32, false},
    [WM_GRADE] = {"grade", AVRO_STRING, false},
    [WM_FLOOR] = {"floor", AVRO_INT64, false},
    [WM_CAP] = {"cap", AVRO_INT64, false},
    [WM_UPGRADE_QTY] = {"upgrade_qty", AVRO_INT64, false},
    [WM_GRADE_OK] = {"grade_ok", AVRO_BOOLEAN, false},
    [WM_QTY_OK] = {"qty_ok", AVRO_BOOLEAN, false},
    [WM_BELOW_FLOOR] = {"below_floor", AVRO_BOOLEAN, false},
};

static const avroscan_field_t qe_fields[QE__COUNT] = {
    [QE_EVENT_ID] = {"event_id", AVRO_STRING, false},
    [QE_CUSTOMER_ID] = {"customer_id", AVRO_STRING, false},
    [QE_MONTH] = {"month", AVRO_STRING, false},
    [QE_TIER] = {"tier", AVRO_INT32, false},
    [QE_KIND] = {"kind", AVRO_ENUM, false},
    [QE_CAP] = {"cap", AVRO_INT64, false},
    [QE_EFFECTIVE_CAP] = {"effective_cap", AVRO_INT64, false},
    [QE_HARD_CAP] = {"hard_cap", AVRO_INT64, true},
    [QE_CONSUMED] = {"consumed", AVRO_INT64, false},
    [QE_ORDER_ID] = {"order_id", AVRO_STRING, false},
    [QE_PLACED_AT] = {"placed_at", AVRO_INT64, false},
    [QE_POLICY_NAME] = {"policy_name", AVRO_STRING, false},
    [QE_POLICY_VERSION] = {"policy_version", AVRO_STRING, false},
};

/* avroscan_check_record(), naming this codec in the message. */
static int events_check_record(avro_schema_t rec, const char *what, const avroscan_field_t *want,
                               size_t nwant, char *errstr, size_t errstr_size) {
    return avroscan_check_record(rec, what, want, nwant, "the event codec", errstr, errstr_size);
}

/* The schema of field `index` of record `rec`, its array items. */
static avro_schema_t events_items(avro_schema_t rec, int index) {
    return avro_schema_array_items(avro_schema_record_field_get_by_index(rec, index));
}

/* Looks up every name of ours among the enum's symbols.  first..count-1
 * must all exist (first = 1 skips a NONE that never travels). */
static int events_map_names(avro_schema_t enm, const char *what, const char *(*name_of)(int),
                            int first, int count, int *index, char *errstr, size_t errstr_size) {
    int i;

    for (i = 0; i < count; i++) index[i] = -1;
    for (i = first; i < count; i++) {
        index[i] = avro_schema_enum_get_by_name(enm, name_of(i));
        if (index[i] < 0) {
            errstr_fmt(errstr, errstr_size, "schema: enum %s has no symbol %s", what, name_of(i));
            return -1;
        }
    }
    return 0;
}

static const char *events_reason_name(int r) {
    return policy_reason_name((policy_reason_t)r);
}
static const char *events_kind_name(int k) {
    return policy_quota_kind_name((policy_quota_kind_t)k);
}

static int events_check_schemas(events_t *e, char *errstr, size_t errstr_size) {
    avro_schema_t blocked;

    if (events_check_record(e->tc.schema, "TierChange", tc_fields, TC__COUNT, errstr,
                            errstr_size) != 0 ||
        events_check_record(events_items(e->tc.schema, TC_COMPONENTS), "ScoreComponent", sc_fields,
                            SC__COUNT, errstr, errstr_size) != 0 ||
        events_check_record(events_items(e->tc.schema, TC_WINDOW), "WindowMonth", wm_fields,
                            WM__COUNT, errstr, errstr_size) != 0)
        return -1;
    blocked = events_items(e->tc.schema, TC_UPGRADE_BLOCKED_BY);
    if (blocked == NULL || avro_typeof(blocked) != AVRO_STRING) {
        errstr_fmt(errstr, errstr_size, "schema: upgrade_blocked_by must be an array of strings");
        return -1;
    }
    if (events_map_names(avro_schema_record_field_get_by_index(e->tc.schema, TC_REASON),
                         "TierChangeReason", events_reason_name, POLICY_REASON_NONE + 1,
                         POLICY_REASON__COUNT, e->reason_index, errstr, errstr_size) != 0)
        return -1;

    if (events_check_record(e->quota.schema, "QuotaEvent", qe_fields, QE__COUNT, errstr,
                            errstr_size) != 0 ||
        events_map_names(avro_schema_record_field_get_by_index(e->quota.schema, QE_KIND),
                         "QuotaKind", events_kind_name, 0, POLICY_QUOTA__COUNT, e->quota_index,
                         errstr, errstr_size) != 0)
        return -1;
    return 0;
}

/* -------------------------------------------------------------------------
 * Life cycle.
 */

events_t *events_new(char *errstr, size_t errstr_size) {
    events_t *e = NULL; /* owned here until returned */
    events_t *ret = NULL;

    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory creating the event codec");
        goto out;
    }
    if (codec_record_parse(&e->tc, tierd_schema_tier_change, "TierChange", errstr, errstr_size) !=
            0 ||
        codec_record_parse(&e->quota, tierd_schema_quota_event, "QuotaEvent", errstr,
                           errstr_size) != 0)
        goto out;
    if (events_check_schemas(e, errstr, errstr_size) != 0) goto out;
    if (codec_record_value(&e->tc, errstr, errstr_size) != 0 ||
        codec_record_value(&e->quota, errstr, errstr_size) != 0)
        goto out;

    ret = e;
    e = NULL; /* now owned by the caller */
out:
    events_destroy(e);
    return ret;
}

void events_destroy(events_t *e) {
    if (e == NULL) return;
    codec_record_free(&e->quota);
    codec_record_free(&e->tc);
    free(e);
}

/* -------------------------------------------------------------------------
 * Setting fields.  Each returns libavro's 0 / non-zero so a record can be
 * filled in one chain of ||; the caller reports avro_strerror() once.
 */

static int put_string(avro_value_t *rec, size_t index, const char *s) {
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_string(&f, s);
}

static int put_long(avro_value_t *rec, size_t index, int64_t x) {
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_long(&f, x);
}

static int put_int(avro_value_t *rec, size_t index, int32_t x) {
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_int(&f, x);
}

static int put_double(avro_value_t *rec, size_t index, double x) {
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_double(&f, x);
}

static int put_bool(avro_value_t *rec, size_t index, bool x) {
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_boolean(&f, x);
}

static int put_enum(avro_value_t *rec, size_t index, int symbol) {
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_enum(&f, symbol);
}

/* ["null", T]: selects a branch and hands it back to be set (has) or sets
 * null (!has; *branch is then unused). */
static int put_branch(avro_value_t *rec, size_t index, bool has, avro_value_t *branch) {
    avro_value_t f;

    if (avro_value_get_by_index(rec, index, &f, NULL) != 0) return -1;
    if (!has) return avro_value_set_branch(&f, 0, branch) || avro_value_set_null(branch);
    return avro_value_set_branch(&f, 1, branch);
}

static int put_opt_int(avro_value_t *rec, size_t index, bool has, int32_t x) {
    avro_value_t b;
    return put_branch(rec, index, has, &b) || (has && avro_value_set_int(&b, x));
}

static int put_opt_long(avro_value_t *rec, size_t index, bool has, int64_t x) {
    avro_value_t b;
    return put_branch(rec, index, has, &b) || (has && avro_value_set_long(&b, x));
}

static int put_opt_double(avro_value_t *rec, size_t index, bool has, double x) {
    avro_value_t b;
    return put_branch(rec, index, has, &b) || (has && avro_value_set_double(&b, x));
}

static int put_opt_string(avro_value_t *rec, size_t index, const char *s) {
    avro_value_t b;
    return put_branch(rec, index, s != NULL, &b) || (s != NULL && avro_value_set_string(&b, s));
}

/* "YYYY-MM" into buf (>= 32 bytes); -1 for a month that has no such form. */
static int events_month_text(int32_t month, char *buf, size_t size) {
    if (month < 0 || month >= EVENTS_MONTH_LIMIT) return -1;
    policy_month_text(month, buf, size);
    return 0;
}

static int events_check_id(const char *what, const char *id, char *errstr, size_t errstr_size) {
    size_t n;

    if (id == NULL || (n = strlen(id)) == 0 || n > ORDER_ID_MAX) {
        errstr_fmt(errstr, errstr_size, "%s must be 1 to %d bytes", what, ORDER_ID_MAX);
        return -1;
    }
    return 0;
}

/* Copies the event id out; a cut id would make two events one for dedupe. */
static int events_give_id(const char *id, char *event_id, size_t event_id_size, char *errstr,
                          size_t errstr_size) {
    size_t n = strlen(id);

    if (event_id == NULL) return 0;
    if (n >= event_id_size) {
        errstr_fmt(errstr, errstr_size,
                   "event_id buffer of %zu bytes cannot hold the "
                   "%zu-byte id %s",
                   event_id_size, n, id);
        return -1;
    }
    memcpy(event_id, id, n + 1);
    return 0;
}

/* -------------------------------------------------------------------------
 * TierChange.
 */

static const char *events_comp_kind(policy_comp_kind_t k) {
    switch (k) {
    case POLICY_COMP_LINEAR: return "linear";
    case POLICY_COMP_STEPS: return "steps";
    case POLICY_COMP_PROFILE: return "profile";
    }
    return NULL;
}

/* Everything a caller can get wrong, before any field is set. */
static int tc_check(const events_tier_change_t *tc, char *errstr, size_t errstr_size) {
    const policy_decision_t *d;
    char m[32];
    uint32_t i;

    if (tc == NULL || tc->decision == NULL || tc->policy == NULL || tc->classification == NULL) {
        errstr_fmt(errstr, errstr_size,
                   "a tier change needs a decision, a policy and a classification");
        return -1;
    }
    if (events_check_id("customer_id", tc->customer_id, errstr, errstr_size) != 0) return -1;
    d = tc->decision;
    if (d->reason <= POLICY_REASON_NONE || d->reason >= POLICY_REASON__COUNT) {
        errstr_fmt(errstr, errstr_size,
                   "tier change for %s has reason %s; events are published only for changes",
                   tc->customer_id, policy_reason_name(d->reason));
        return -1;
    }
    if (tc->sequence < 1) {
        errstr_fmt(errstr, errstr_size, "tier change sequence %" PRId64 " for %s; they start at 1",
                   tc->sequence, tc->customer_id);
        return -1;
    }
    if (tc->month != -1 && events_month_text(tc->month, m, sizeof(m)) != 0) {
        errstr_fmt(errstr, errstr_size, "month %" PRId32 " has no YYYY-MM form", tc->month);
        return -1;
    }
    if (tc->window == NULL && tc->nwindow > 0) {
        errstr_fmt(errstr, errstr_size, "nwindow is %zu but window is NULL", tc->nwindow);
        return -1;
    }
    if (d->nmonths > POLICY_WINDOW_MAX ||
        (d->has_score && d->score.ncomponents > POLICY_COMPONENTS_MAX)) {
        errstr_fmt(errstr, errstr_size,
                   "decision has %" PRIu32 " months and %" PRIu32
                   " components; at most %d and %d exist",
                   d->nmonths, d->score.ncomponents, POLICY_WINDOW_MAX, POLICY_COMPONENTS_MAX);
        return -1;
    }
    for (i = 0; i < d->nmonths; i++) {
        if (events_month_text(d->months[i].month, m, sizeof(m)) != 0) {
            errstr_fmt(errstr, errstr_size, "window month %" PRId32 " has no YYYY-MM form",
                       d->months[i].month);
            return -1;
        }
    }
    for (i = 0; d->has_score && i < d->score.ncomponents; i++) {
        if (events_comp_kind(d->score.components[i].kind) == NULL) {
            errstr_fmt(errstr, errstr_size, "score component %" PRIu32 " has unknown kind %d",
                       i + 1, (int)d->score.components[i].kind);
            return -1;
        }
    }
    return 0;
}

static int tc_put_component(avro_value_t *arr, const policy_component_result_t *c) {
    avro_value_t item;
    bool linear = c->kind == POLICY_COMP_LINEAR;

    return avro_value_append(arr, &item, NULL) ||
           put_string(&item, SC_KIND, events_comp_kind(c->kind)) ||
           put_string(&item, SC_SOURCE, c->source != NULL ? c->source : "") ||
           put_double(&item, SC_VALUE, c->value) || put_double(&item, SC_POINTS, c->points) ||
           put_double(&item, SC_MAX_POINTS, c->max_points) ||
           put_double(&item, SC_LO, linear ? c->lo : 0.0) ||
           put_double(&item, SC_HI, linear ? c->hi : 0.0);
}

/* One checked month, with the aggregates of the same month from the
 * caller's window (zeros when the window does not have it). */
static int tc_put_month(avro_value_t *arr, const policy_month_check_t *c,
                        const policy_month_t *window, size_t nwindow) {
    static const policy_month_t none;
    const policy_month_t *agg = &none;
    char m[32], grade[2] = "";
    avro_value_t item;
    size_t i;

    for (i = 0; i < nwindow; i++) {
        if (window[i].month == c->month) {
            agg = &window[i];
            break;
        }
    }
    if (c->grade >= POLICY_GRADE_A && c->grade <= POLICY_GRADE_D) grade[0] = (char)c->grade;
    events_month_text(c->month, m, sizeof(m)); /* tc_check proved it has one */

    return avro_value_append(arr, &item, NULL) || put_string(&item, WM_MONTH, m) ||
           put_long(&item, WM_QTY, c->qty) || put_long(&item, WM_AMOUNT, agg->amount) ||
           put_long(&item, WM_ORDERS, agg->orders) || put_long(&item, WM_SKUS, agg->skus) ||
           put_int(&item, WM_TIER_IN_EFFECT, c->tier_in_effect) ||
           put_string(&item, WM_GRADE, grade) || put_long(&item, WM_FLOOR, c->floor) ||
           put_long(&item, WM_CAP, c->cap) || put_long(&item, WM_UPGRADE_QTY, c->upgrade_qty) ||
           put_bool(&item, WM_GRADE_OK, c->grade_ok) || put_bool(&item, WM_QTY_OK, c->qty_ok) ||
           put_bool(&item, WM_BELOW_FLOOR, c->below_floor);
}

static int tc_put_arrays(avro_value_t *rec, const events_tier_change_t *tc) {
    const policy_decision_t *d = tc->decision;
    avro_value_t arr, item;
    uint32_t i;

    if (avro_value_get_by_index(rec, TC_COMPONENTS, &arr, NULL) != 0) return -1;
    for (i = 0; d->has_score && i < d->score.ncomponents; i++)
        if (tc_put_component(&arr, &d->score.components[i]) != 0) return -1;

    if (avro_value_get_by_index(rec, TC_WINDOW, &arr, NULL) != 0) return -1;
    for (i = 0; i < d->nmonths; i++)
        if (tc_put_month(&arr, &d->months[i], tc->window, tc->nwindow) != 0) return -1;

    if (avro_value_get_by_index(rec, TC_UPGRADE_BLOCKED_BY, &arr, NULL) != 0) return -1;
    if ((d->upgrade_blocked & POLICY_BLOCKED_GRADE) &&
        (avro_value_append(&arr, &item, NULL) || avro_value_set_string(&item, "GRADE")))
        return -1;
    if ((d->upgrade_blocked & POLICY_BLOCKED_QTY) &&
        (avro_value_append(&arr, &item, NULL) || avro_value_set_string(&item, "QTY")))
        return -1;
    return 0;
}

/* The checks and the event id both encodings begin with; the review
 * month's text into month (when there is one). */
static int tc_begin(events_t *e, const events_tier_change_t *tc, char **out, size_t *len, char *id,
                    char *month, char *event_id, size_t event_id_size, char *errstr,
                    size_t errstr_size) {
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    if (out != NULL) *out = NULL;
    if (e == NULL || out == NULL || len == NULL) {
        errstr_fmt(errstr, errstr_size, "events_encode_tier_change needs a codec and outputs");
        return -1;
    }
    if (tc_check(tc, errstr, errstr_size) != 0) return -1;
    snprintf(id, EVENTS_ID_MAX, "%s:tier:%" PRId64, tc->customer_id, tc->sequence);
    if (events_give_id(id, event_id, event_id_size, errstr, errstr_size) != 0) return -1;
    if (tc->month != -1) events_month_text(tc->month, month, 32);
    return 0;
}

int events_encode_tier_change_libavro(events_t *e, const events_tier_change_t *tc, char **out,
                                      size_t *len, char *event_id, size_t event_id_size,
                                      char *errstr, size_t errstr_size) {
    const policy_decision_t *d;
    avro_value_t *rec;
    char id[EVENTS_ID_MAX], month[32];

    if (tc_begin(e, tc, out, len, id, month, event_id, event_id_size, errstr, errstr_size) != 0)
        return -1;
    d = tc->decision;
    rec = &e->tc.value;
    if (avro_value_reset(rec) != 0 || put_string(rec, TC_EVENT_ID, id) ||
        put_string(rec, TC_CUSTOMER_ID, tc->customer_id) ||
        put_long(rec, TC_SEQUENCE, tc->sequence) ||
        put_opt_int(rec, TC_PREVIOUS_TIER, d->prev_tier > 0, d->prev_tier) ||
        put_int(rec, TC_NEW_TIER, d->new_tier) ||
        put_enum(rec, TC_REASON, e->reason_index[d->reason]) ||
        put_string(rec, TC_RULE, policy_rule_name(d->rule)) ||
        put_string(rec, TC_EXPLAIN, d->explain) ||
        put_opt_string(rec, TC_REVIEW_MONTH, tc->month != -1 ? month : NULL) ||
        put_opt_double(rec, TC_SCORE, d->has_score, d->score.score_c / 100.0) ||
        put_opt_int(rec, TC_TARGET_TIER, d->has_score, d->score.target_tier) ||
        tc_put_arrays(rec, tc) || put_string(rec, TC_CLASSIFICATION, tc->classification) ||
        put_string(rec, TC_POLICY_NAME, tc->policy->name) ||
        put_string(rec, TC_POLICY_VERSION, tc->policy->version) ||
        put_long(rec, TC_DECIDED_AT, tc->decided_at_ms)) {
        errstr_fmt(errstr, errstr_size, "cannot fill the TierChange %s: %s", id, avro_strerror());
        return -1;
    }
    return codec_write(&e->tc, out, len, errstr, errstr_size);
}

/*
 * The same record written directly: Avro's binary encoding of the layout
 * events_check_schemas proved the compiled-in schema has (longs and ints
 * as zigzag varints, strings as a length and the bytes, doubles as eight
 * little-endian bytes, a union as its branch's index then the value, an
 * array as one block of its items then 0, as libavro writes them).  Where
 * every customer is new, libavro's generic values cost 15 % of tierd's CPU
 * (a placement event each); test_events holds the two encodings to the
 * same bytes.
 */
typedef struct aw {
    uint8_t *p;
} aw_t;

static void aw_long(aw_t *w, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
    while (z >= 0x80) {
        *w->p++ = (uint8_t)(z | 0x80);
        z >>= 7;
    }
    *w->p++ = (uint8_t)z;
}

static void aw_bytes(aw_t *w, const char *s, size_t n) {
    aw_long(w, (int64_t)n);
    memcpy(w->p, s, n);
    w->p += n;
}

static void aw_str(aw_t *w, const char *s) {
    aw_bytes(w, s, strlen(s));
}

static void aw_double(aw_t *w, double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof(u));
    for (int i = 0; i < 8; i++) *w->p++ = (uint8_t)(u >> (8 * i));
}

/* A writer into a new buffer of bound bytes, handed to *out; NULL p when
 * out of memory (errstr says so, naming what). */
static aw_t aw_open(size_t bound, const char *what, char **out, char *errstr, size_t errstr_size) {
    aw_t w = {malloc(bound)};
    if (w.p == NULL)
        errstr_fmt(errstr, errstr_size, "out of memory for a %s of %zu bytes", what, bound);
    *out = (char *)w.p;
    return w;
}

/* An array's items counted: one block, or none; the items and a 0 follow. */
static void aw_count(aw_t *w, uint32_t n) {
    if (n) aw_long(w, n);
}

static void tc_write_month(aw_t *w, const policy_month_check_t *c, const policy_month_t *window,
                           size_t nwindow) {
    static const policy_month_t none;
    const policy_month_t *agg = &none;
    char m[32], grade[2] = "";
    for (size_t i = 0; i < nwindow; i++) {
        if (window[i].month == c->month) {
            agg = &window[i];
            break;
        }
    }
    if (c->grade >= POLICY_GRADE_A && c->grade <= POLICY_GRADE_D) grade[0] = (char)c->grade;
    events_month_text(c->month, m, sizeof(m)); /* tc_check proved it has one */
    aw_str(w, m);
    aw_long(w, c->qty);
    aw_long(w, agg->amount);
    aw_long(w, agg->orders);
    aw_long(w, agg->skus);
    aw_long(w, c->tier_in_effect);
    aw_str(w, grade);
    aw_long(w, c->floor);
    aw_long(w, c->cap);
    aw_long(w, c->upgrade_qty);
    *w->p++ = c->grade_ok ? 1 : 0;
    *w->p++ = c->qty_ok ? 1 : 0;
    *w->p++ = c->below_floor ? 1 : 0;
}

/* The most bytes tc_write writes for these strings and counts: a varint
 * takes at most 10 bytes, a double 8, a month's text 31. */
static size_t tc_bound(const events_tier_change_t *tc, const char *id, const char *rule) {
    const policy_decision_t *d = tc->decision;
    size_t n = 32 * 10 + strlen(id) + strlen(tc->customer_id) + strlen(rule) + strlen(d->explain) +
               32 + strlen(tc->classification) + strlen(tc->policy->name) +
               strlen(tc->policy->version) + 2 * (10 + 5);
    for (uint32_t i = 0; d->has_score && i < d->score.ncomponents; i++) {
        const policy_component_result_t *c = &d->score.components[i];
        n += 2 * 10 + 5 * 8 + strlen(events_comp_kind(c->kind)) +
             (c->source != NULL ? strlen(c->source) : 0);
    }
    return n + (size_t)d->nmonths * (13 * 10 + 31);
}

static void tc_write(events_t *e, aw_t *w, const events_tier_change_t *tc, const char *id,
                     const char *rule, const char *month) {
    const policy_decision_t *d = tc->decision;
    aw_str(w, id);
    aw_str(w, tc->customer_id);
    aw_long(w, tc->sequence);
    aw_long(w, d->prev_tier > 0); /* ["null", "int"] */
    if (d->prev_tier > 0) aw_long(w, d->prev_tier);
    aw_long(w, d->new_tier);
    aw_long(w, e->reason_index[d->reason]);
    aw_str(w, rule);
    aw_str(w, d->explain);
    aw_long(w, month != NULL);
    if (month != NULL) aw_str(w, month);
    aw_long(w, d->has_score);
    if (d->has_score) aw_double(w, d->score.score_c / 100.0);
    aw_long(w, d->has_score);
    if (d->has_score) aw_long(w, d->score.target_tier);
    uint32_t nc = d->has_score ? d->score.ncomponents : 0;
    aw_count(w, nc);
    for (uint32_t i = 0; i < nc; i++) {
        const policy_component_result_t *c = &d->score.components[i];
        bool linear = c->kind == POLICY_COMP_LINEAR;
        aw_str(w, events_comp_kind(c->kind));
        aw_str(w, c->source != NULL ? c->source : "");
        aw_double(w, c->value);
        aw_double(w, c->points);
        aw_double(w, c->max_points);
        aw_double(w, linear ? c->lo : 0.0);
        aw_double(w, linear ? c->hi : 0.0);
    }
    aw_long(w, 0);
    aw_count(w, d->nmonths);
    for (uint32_t i = 0; i < d->nmonths; i++)
        tc_write_month(w, &d->months[i], tc->window, tc->nwindow);
    aw_long(w, 0);
    uint32_t nb = ((d->upgrade_blocked & POLICY_BLOCKED_GRADE) != 0) +
                  ((d->upgrade_blocked & POLICY_BLOCKED_QTY) != 0);
    aw_count(w, nb);
    if (d->upgrade_blocked & POLICY_BLOCKED_GRADE) aw_str(w, "GRADE");
    if (d->upgrade_blocked & POLICY_BLOCKED_QTY) aw_str(w, "QTY");
    aw_long(w, 0);
    aw_str(w, tc->classification);
    aw_str(w, tc->policy->name);
    aw_str(w, tc->policy->version);
    aw_long(w, tc->decided_at_ms);
}

int events_encode_tier_change(events_t *e, const events_tier_change_t *tc, char **out, size_t *len,
                              char *event_id, size_t event_id_size, char *errstr,
                              size_t errstr_size) {
    char id[EVENTS_ID_MAX], month[32];
    if (tc_begin(e, tc, out, len, id, month, event_id, event_id_size, errstr, errstr_size) != 0)
        return -1;
    if (e->reason_index[tc->decision->reason] < 0) {
        errstr_fmt(errstr, errstr_size,
                   "cannot fill the TierChange %s: reason %s is not in the schema", id,
                   policy_reason_name(tc->decision->reason));
        return -1;
    }
    const char *rule = policy_rule_name(tc->decision->rule);
    aw_t w = aw_open(tc_bound(tc, id, rule), "TierChange", out, errstr, errstr_size);
    if (w.p == NULL) return -1;
    tc_write(e, &w, tc, id, rule, tc->month != -1 ? month : NULL);
    *len = (size_t)(w.p - (uint8_t *)*out);
    return 0;
}

/* -------------------------------------------------------------------------
 * QuotaEvent.
 */

/* The checks and names both encodings share: id and month filled. */
static int qe_begin(const events_t *e, const events_quota_t *q, char **out, size_t *len, char *id,
                    char *month, char *event_id, size_t event_id_size, char *errstr,
                    size_t errstr_size) {
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    if (out != NULL) *out = NULL;
    if (e == NULL || out == NULL || len == NULL || q == NULL || q->limits == NULL ||
        q->policy == NULL) {
        errstr_fmt(errstr, errstr_size,
                   "events_encode_quota needs a codec, an event with "
                   "limits and a policy, and outputs");
        return -1;
    }
    if (events_check_id("customer_id", q->customer_id, errstr, errstr_size) != 0 ||
        events_check_id("order_id", q->order_id, errstr, errstr_size) != 0)
        return -1;
    if ((unsigned)q->kind >= POLICY_QUOTA__COUNT) {
        errstr_fmt(errstr, errstr_size, "quota kind %d does not exist", (int)q->kind);
        return -1;
    }
    if (events_month_text(q->month, month, 32) != 0) {
        errstr_fmt(errstr, errstr_size, "month %" PRId32 " has no YYYY-MM form", q->month);
        return -1;
    }
    snprintf(id, EVENTS_ID_MAX, "%s:%s:%s", q->customer_id, month, policy_quota_kind_name(q->kind));
    return events_give_id(id, event_id, event_id_size, errstr, errstr_size);
}

int events_encode_quota_libavro(events_t *e, const events_quota_t *q, char **out, size_t *len,
                                char *event_id, size_t event_id_size, char *errstr,
                                size_t errstr_size) {
    char id[EVENTS_ID_MAX], month[32];
    if (qe_begin(e, q, out, len, id, month, event_id, event_id_size, errstr, errstr_size) != 0)
        return -1;
    const policy_quota_limits_t *l = q->limits;
    avro_value_t *rec = &e->quota.value;
    if (avro_value_reset(rec) != 0 || put_string(rec, QE_EVENT_ID, id) ||
        put_string(rec, QE_CUSTOMER_ID, q->customer_id) || put_string(rec, QE_MONTH, month) ||
        put_int(rec, QE_TIER, q->tier) || put_enum(rec, QE_KIND, e->quota_index[q->kind]) ||
        put_long(rec, QE_CAP, l->cap) || put_long(rec, QE_EFFECTIVE_CAP, l->effective_cap) ||
        put_opt_long(rec, QE_HARD_CAP, l->hard_cap != POLICY_NO_HARD_CAP, l->hard_cap) ||
        put_long(rec, QE_CONSUMED, q->consumed) || put_string(rec, QE_ORDER_ID, q->order_id) ||
        put_long(rec, QE_PLACED_AT, q->placed_at_ms) ||
        put_string(rec, QE_POLICY_NAME, q->policy->name) ||
        put_string(rec, QE_POLICY_VERSION, q->policy->version)) {
        errstr_fmt(errstr, errstr_size, "cannot fill the QuotaEvent %s: %s", id, avro_strerror());
        return -1;
    }
    return codec_write(&e->quota, out, len, errstr, errstr_size);
}

/* Written directly, as the TierChange is: one allocation, no generic
 * values (a quota event can follow every order of a busy month). */
int events_encode_quota(events_t *e, const events_quota_t *q, char **out, size_t *len,
                        char *event_id, size_t event_id_size, char *errstr, size_t errstr_size) {
    char id[EVENTS_ID_MAX], month[32];
    if (qe_begin(e, q, out, len, id, month, event_id, event_id_size, errstr, errstr_size) != 0)
        return -1;
    const policy_quota_limits_t *l = q->limits;
    size_t bound = 8 * 10 + strlen(id) + strlen(q->customer_id) + 32 + strlen(q->order_id) +
                   strlen(q->policy->name) + strlen(q->policy->version) + 6 * 10;
    aw_t w = aw_open(bound, "QuotaEvent", out, errstr, errstr_size);
    if (w.p == NULL) return -1;
    aw_str(&w, id);
    aw_str(&w, q->customer_id);
    aw_str(&w, month);
    aw_long(&w, q->tier);
    aw_long(&w, e->quota_index[q->kind]);
    aw_long(&w, l->cap);
    aw_long(&w, l->effective_cap);
    aw_long(&w, l->hard_cap != POLICY_NO_HARD_CAP); /* ["null", "long"] */
    if (l->hard_cap != POLICY_NO_HARD_CAP) aw_long(&w, l->hard_cap);
    aw_long(&w, q->consumed);
    aw_str(&w, q->order_id);
    aw_long(&w, q->placed_at_ms);
    aw_str(&w, q->policy->name);
    aw_str(&w, q->policy->version);
    *len = (size_t)(w.p - (uint8_t *)*out);
    return 0;
}

/* -------------------------------------------------------------------------
 * TierChange, read back.
 */

/* The int inside a ["null", "int"] union; 0 for null. */
static int get_opt_int(avro_value_t *rec, size_t index, int32_t *out) {
    avro_value_t f, b;
    int disc = 0;

    *out = 0;
    if (avro_value_get_by_index(rec, index, &f, NULL) != 0 ||
        avro_value_get_discriminant(&f, &disc) != 0)
        return -1;
    if (disc == 0) return 0;
    return avro_value_get_current_branch(&f, &b) || avro_value_get_int(&b, out);
}

int events_read_tier_change(events_t *e, const void *buf, size_t len,
                            events_tier_change_info_t *out, char *errstr, size_t errstr_size) {
    avro_value_t *rec = &e->tc.value;
    avro_value_t f, b;
    const char *name, *s = NULL;
    size_t sl = 0;
    int sym = 0, disc = 0;

    memset(out, 0, sizeof(*out));
    if (codec_read(&e->tc, buf, len, NULL, 0) != 0 ||
        get_opt_int(rec, TC_PREVIOUS_TIER, &out->previous_tier) != 0 ||
        avro_value_get_by_index(rec, TC_NEW_TIER, &f, NULL) != 0 ||
        avro_value_get_int(&f, &out->new_tier) != 0 ||
        avro_value_get_by_index(rec, TC_SEQUENCE, &f, NULL) != 0 ||
        avro_value_get_long(&f, &out->sequence) != 0 ||
        avro_value_get_by_index(rec, TC_REASON, &f, NULL) != 0 ||
        avro_value_get_enum(&f, &sym) != 0)
        goto bad;
    name = avro_schema_enum_get(avro_value_get_schema(&f), sym);
    snprintf(out->reason, sizeof(out->reason), "%s", name ? name : "?");
    if (avro_value_get_by_index(rec, TC_REVIEW_MONTH, &f, NULL) != 0 ||
        avro_value_get_discriminant(&f, &disc) != 0)
        goto bad;
    if (disc == 1) {
        if (avro_value_get_current_branch(&f, &b) != 0 || avro_value_get_string(&b, &s, &sl) != 0)
            goto bad;
        snprintf(out->review_month, sizeof(out->review_month), "%s", s);
    }
    return 0;
bad:
    errstr_fmt(errstr, errstr_size, "not a TierChange: %s", avro_strerror());
    return -1;
}
