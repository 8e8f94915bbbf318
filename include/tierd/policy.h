/*
 * policy.h -- the tier policy: what a policy file says, and the pure
 * decision engine that applies it to one customer at a time.
 *
 * This header is a contract (the rules are docs/behaviour.md).  The engine takes
 * structs and fills structs: it never talks to Kafka or Redis, never reads
 * the clock and keeps no globals, so every rule can be tested on its own.
 * The only I/O is policy_load(), which reads the policy file once.
 *
 * How a caller drives it (one customer, one partition owner):
 *   - after applying each order:   policy_on_order()     (first order placement,
 *                                                          immediate upgrades)
 *                                  policy_quota_check()  (quota events)
 *   - when month M is closed:      policy_review()
 *   - when the profile changes:    policy_on_profile()   (override, compliance)
 *   - for the live score:          policy_score()
 *   - for the event's code:        policy_classification()
 * Every decision carries the next policy_state_t to store; a tier-change
 * event is due exactly when decision.changed is true.
 *
 * Numbers.  Quantities, amounts, caps and floors are integers (units, minor
 * currency units).  Scores are kept as an integer number of hundredths
 * ("_c" fields): comparing a score with a tier's min_score never suffers
 * floating drift.  Ratios from the policy file (0.9, 0.3) are kept as
 * integer millionths ("_ppm") and every comparison with them is exact
 * integer arithmetic.  Months are int32: year * 12 + (month - 1).
 */
#ifndef TIERD_POLICY_H
#define TIERD_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define POLICY_TIERS_MAX 16
#define POLICY_COMPONENTS_MAX 16
#define POLICY_STEPS_MAX 16
#define POLICY_WINDOW_MAX 24
#define POLICY_HOLIDAYS_MAX 64
#define POLICY_NAME_MAX 63      /* policy name, version, time zone, tier and holiday names */
#define POLICY_EXPLAIN_MAX 1024 /* decision.explain, NUL included; longer text is cut */
#define POLICY_PPM 1000000      /* denominator of every _ppm ratio */
#define POLICY_CODE_MAX 6       /* classification code: 4 characters, 'L', NUL */

/* ------------------------------------------------------------------ */
/* Customer profile                                                    */

/* Retail formats; the value is the letter of the classification code. */
typedef enum {
    POLICY_FORMAT_GROCERY = 'Z',
    POLICY_FORMAT_CONVENIENCE = 'B',
    POLICY_FORMAT_SUPERMARKET = 'C',
    POLICY_FORMAT_MALL = 'S',
    POLICY_FORMAT_TOBACCO_LIQUOR = 'Y',
    POLICY_FORMAT_HOSPITALITY = 'F',
    POLICY_FORMAT_OTHER = 'Q',
} policy_format_t;

/* Markets; the value is the digit of the classification code. */
typedef enum { POLICY_MARKET_URBAN = '1', POLICY_MARKET_RURAL = '2' } policy_market_t;

/* Compliance grades, best first: letters compare in order ('A' < 'D'). */
typedef enum {
    POLICY_GRADE_NONE = 0, /* in policy_month_t: no record for the month */
    POLICY_GRADE_A = 'A',
    POLICY_GRADE_B = 'B',
    POLICY_GRADE_C = 'C',
    POLICY_GRADE_D = 'D',
} policy_grade_t;

typedef struct policy_profile {
    policy_format_t format;
    policy_market_t market;
    bool chain;
    policy_grade_t grade; /* the grade now */
    double cooperation;   /* 0.0-1.0, clamped by the engine */
    double growth;        /* 0.0-1.0, clamped by the engine */
    bool has_override;
    int32_t tier_override; /* meaningful when has_override */
} policy_profile_t;

/* ------------------------------------------------------------------ */
/* The policy (what policy_load() fills)                               */

typedef enum {
    POLICY_METRIC_QTY_AVG,      /* sum qty / W */
    POLICY_METRIC_AMOUNT_AVG,   /* sum amount / W */
    POLICY_METRIC_AVG_PRICE,    /* sum amount / sum qty, 0 when sum qty = 0 */
    POLICY_METRIC_SKUS_AVG,     /* sum skus / W */
    POLICY_METRIC_ORDERS,       /* sum orders */
    POLICY_METRIC_STABILITY,    /* max(0, (mean - (max - min)) / mean) of monthly qty */
    POLICY_METRIC_QTY_TOTAL,    /* sum qty (abc-volume counts totals, not averages) */
    POLICY_METRIC_AMOUNT_TOTAL, /* sum amount */
    POLICY_METRIC__COUNT
} policy_metric_t;

typedef enum { POLICY_FIELD_COOPERATION, POLICY_FIELD_GROWTH, POLICY_FIELD__COUNT } policy_field_t;

typedef enum {
    POLICY_COMP_LINEAR,  /* points * clamp((v - lo) / (hi - lo), 0, 1) */
    POLICY_COMP_STEPS,   /* points of the highest threshold <= v, 0 below all */
    POLICY_COMP_PROFILE, /* points * profile field */
} policy_comp_kind_t;

typedef struct policy_step {
    double at;        /* threshold; strictly increasing within a component */
    int32_t points_c; /* hundredths */
} policy_step_t;

typedef struct policy_component {
    policy_comp_kind_t kind;
    policy_metric_t metric; /* LINEAR, STEPS */
    policy_field_t field;   /* PROFILE */
    double lo, hi;          /* LINEAR, lo < hi */
    int32_t points_c;       /* LINEAR, PROFILE: full points; STEPS: the largest step's */
    policy_step_t steps[POLICY_STEPS_MAX];
    uint32_t nsteps;
} policy_component_t;

typedef struct policy_tier {
    char name[POLICY_NAME_MAX + 1]; /* "" when the policy gives none */
    int32_t min_score_c;            /* tier 1: 0; strictly increasing */
    int64_t floor;                  /* = cap of the tier below; tier 1: 0 */
    int64_t cap;                    /* units per month; 0 when the policy has no caps */
} policy_tier_t;

typedef enum {
    POLICY_UPGRADE_HYSTERESIS, /* to T+1 when T* > T and every window month met the grade and cap ratio */
    POLICY_UPGRADE_SCORE, /* straight to T* when T* > T */
    POLICY_UPGRADE_NEVER,
} policy_upgrade_rule_t;

typedef enum {
    POLICY_DOWNGRADE_FLOOR, /* every window month below the floor: tier whose floor <= qty_avg */
    POLICY_DOWNGRADE_SCORE, /* straight to T* when T* < T */
    POLICY_DOWNGRADE_NEVER,
} policy_downgrade_rule_t;

typedef struct policy_holiday {
    char name[POLICY_NAME_MAX + 1];
    int32_t from_date, to_date;   /* yyyymmdd, inclusive, in the policy's time zone */
    int32_t from_month, to_month; /* the months they fall in */
} policy_holiday_t;

#define POLICY_NO_HARD_CAP INT64_MAX

typedef struct policy {
    char name[POLICY_NAME_MAX + 1];
    char version[POLICY_NAME_MAX + 1];
    char time_zone[POLICY_NAME_MAX + 1]; /* IANA name, stored unchecked; default "UTC" */
    int32_t window;                      /* W, 1..POLICY_WINDOW_MAX */

    policy_tier_t tiers[POLICY_TIERS_MAX]; /* tiers[k - 1] is tier k */
    int32_t ntiers;
    bool has_caps; /* all tiers have caps, or none has */

    policy_component_t components[POLICY_COMPONENTS_MAX];
    uint32_t ncomponents;

    int32_t new_customer_months; /* >= 1; reviews with fewer months since the first order hold */
    int32_t new_customer_tier;

    policy_upgrade_rule_t upgrade;
    int64_t upgrade_cap_ratio_ppm;         /* hysteresis: qty >= ratio * cap in each month */
    policy_grade_t upgrade_grade_at_least; /* hysteresis: grade this or better in each month */
    bool upgrade_on_order;                 /* an order that lifts T* above T moves to T* at once */
    policy_downgrade_rule_t downgrade;

    int32_t compliance_cap[4]; /* index grade - 'A'; highest tier allowed, 0 = no cap */

    int64_t warning_ratio_ppm; /* quota WARNING at ratio * effective cap */
    int64_t holiday_flex_ppm;  /* effective cap = cap + floor(cap * flex) in a holiday month */
    int64_t hard_cap_default;  /* POLICY_NO_HARD_CAP when none */
    int64_t hard_cap['Z' - 'A' + 1]; /* index format - 'A'; only format letters used */

    policy_holiday_t holidays[POLICY_HOLIDAYS_MAX];
    uint32_t nholidays;

    policy_profile_t profile_default; /* used for customers without a profile */
} policy_t;

/* ------------------------------------------------------------------ */
/* Per-customer inputs and state                                       */

/* One month of a customer's aggregates (docs/behaviour.md), as the aggregate
 * module keeps it.  A month without orders is all zeros except `month`. */
typedef struct policy_month {
    int32_t month;          /* year * 12 + (month - 1) */
    int64_t qty, amount;    /* >= 0 */
    int64_t orders, skus;   /* SALE orders, distinct SKUs */
    int32_t tier_in_effect; /* 0 = not recorded: the engine assumes the current tier */
    policy_grade_t grade;   /* worst grade in effect; NONE = not recorded: the profile's grade */
} policy_month_t;

/* What the caller stores per customer between calls.  Zeroed = a customer
 * that never ordered.  Decisions return the next value in decision.next. */
typedef struct policy_state {
    int32_t tier;        /* current tier, 0 = none yet */
    int32_t first_month; /* month of the first order (valid when tier > 0) */
    bool evaluated;      /* past INITIAL_EVALUATION; an override never sets it */
    bool has_override;   /* the override in force (last one applied): a republished
                            * one is ignored, and a new customer is held on it */
    int32_t override_tier;
} policy_state_t;

/* Everything the engine needs about one customer at one moment. */
typedef struct policy_customer {
    policy_state_t state;
    policy_profile_t profile;     /* or policy->profile_default when it has none */
    const policy_month_t *window; /* W months ending with the month in question, oldest first */
    size_t nwindow;               /* must equal policy->window */
} policy_customer_t;

/* ------------------------------------------------------------------ */
/* Results                                                             */

typedef struct policy_metrics {
    double qty_avg, amount_avg, avg_price, skus_avg, stability;
    int64_t orders;
    int64_t qty_total, amount_total, skus_total;
    int64_t qty_min, qty_max; /* over the W months */
} policy_metrics_t;

typedef struct policy_component_result {
    policy_comp_kind_t kind;
    const char *source; /* metric or profile field name */
    double value;       /* the metric or field value compared */
    double points;      /* what it earned, unrounded */
    double max_points;
    double lo, hi;  /* LINEAR: the range compared against */
    int32_t step;   /* STEPS: index of the step reached, -1 below all */
    double step_at; /* STEPS: its threshold (when step >= 0) */
} policy_component_result_t;

typedef struct policy_score {
    policy_metrics_t metrics;
    policy_component_result_t components[POLICY_COMPONENTS_MAX];
    uint32_t ncomponents;
    int32_t score_c;     /* sum of points, rounded half-up to hundredths, in [0, 10000] */
    int32_t target_tier; /* T*: highest tier with min_score <= score */
} policy_score_t;

/* The tier-change reasons that travel in events.  Stable strings. */
typedef enum {
    POLICY_REASON_NONE = 0, /* no change */
    POLICY_REASON_NEW_CUSTOMER,
    POLICY_REASON_INITIAL_EVALUATION,
    POLICY_REASON_UPGRADE,
    POLICY_REASON_DOWNGRADE,
    POLICY_REASON_COMPLIANCE,
    POLICY_REASON_OVERRIDE,
    POLICY_REASON__COUNT
} policy_reason_t;

/* What the engine did -- also when nothing changed. */
typedef enum {
    POLICY_RULE_NONE = 0,           /* nothing to decide (never ordered, rule disabled) */
    POLICY_RULE_NEW_CUSTOMER,       /* first order: placed on the new-customer tier */
    POLICY_RULE_NEW_CUSTOMER_HOLD,  /* review inside the new-customer period */
    POLICY_RULE_INITIAL_EVALUATION, /* first review after it: T* */
    POLICY_RULE_UPGRADE,
    POLICY_RULE_UPGRADE_BLOCKED, /* T* > T but a month failed: see upgrade_blocked, months[] */
    POLICY_RULE_DOWNGRADE,
    POLICY_RULE_HOLD,       /* no rule moved the tier */
    POLICY_RULE_COMPLIANCE, /* the grade capped the tier */
    POLICY_RULE_OVERRIDE,
    POLICY_RULE_OVERRIDE_REPEATED, /* same override republished: nothing */
    POLICY_RULE_OVERRIDE_INVALID,  /* override outside 1..N: ignored */
    POLICY_RULE__COUNT
} policy_rule_t;

#define POLICY_BLOCKED_GRADE 0x1u /* some window month had a grade worse than allowed */
#define POLICY_BLOCKED_QTY 0x2u   /* some window month had qty < ratio * cap */

/* One window month as the review judged it. */
typedef struct policy_month_check {
    int32_t month;
    int32_t tier_in_effect; /* after defaulting */
    policy_grade_t grade;   /* after defaulting */
    int64_t qty, floor, cap;
    int64_t upgrade_qty; /* least qty meeting the cap ratio: ceil(ratio * cap) */
    bool grade_ok;       /* upgrade: grade good enough */
    bool qty_ok;         /* upgrade: qty >= upgrade_qty */
    bool below_floor;    /* downgrade: qty < floor */
} policy_month_check_t;

typedef struct policy_decision {
    int32_t prev_tier; /* 0 = none (the first placement) */
    int32_t new_tier;
    bool changed;           /* publish a tier change */
    policy_reason_t reason; /* why new_tier, NONE when !changed */
    policy_rule_t rule;     /* what the engine did */
    int32_t month;          /* month reviewed or of the order; 0 for profile updates */

    bool has_score; /* score, months: filled by review and on_order */
    policy_score_t score;
    policy_month_check_t months[POLICY_WINDOW_MAX];
    uint32_t nmonths;
    unsigned upgrade_blocked; /* POLICY_BLOCKED_* */
    int32_t compliance_cap;   /* the cap applied, 0 = none */

    policy_state_t next; /* store this */
    char explain[POLICY_EXPLAIN_MAX];
} policy_decision_t;

/* Quota kinds, in publishing order; bit (1u << kind) in a fired mask. */
typedef enum {
    POLICY_QUOTA_WARNING = 0,
    POLICY_QUOTA_REACHED,
    POLICY_QUOTA_EXCEEDED,
    POLICY_QUOTA_HARD_CAP_EXCEEDED,
    POLICY_QUOTA__COUNT
} policy_quota_kind_t;

typedef struct policy_quota_limits {
    int64_t cap;           /* cap of the tier in effect */
    int64_t effective_cap; /* cap + floor(cap * holiday_flex) in a holiday month, else cap */
    int64_t warning_at;    /* ceil(warning_ratio * effective_cap) */
    int64_t hard_cap;      /* the format's, POLICY_NO_HARD_CAP when none */
} policy_quota_limits_t;

/* ------------------------------------------------------------------ */
/* Loading                                                             */

/* Reads and validates a policy file.  On error returns -1 and writes
 * "FILE:LINE: reason" into errstr; *out is then unspecified. */
int policy_load(const char *path, policy_t *out, char *errstr, size_t errstr_size);

/* Same, from memory; `name` stands for FILE in messages. */
int policy_parse(const char *buf, size_t len, const char *name, policy_t *out, char *errstr,
                 size_t errstr_size);

/* ------------------------------------------------------------------ */
/* Engine                                                              */

/* The window metrics (docs/behaviour.md) over n months (n >= 1; missing months are
 * zero-filled by the caller). */
void policy_metrics(const policy_month_t *window, size_t n, policy_metrics_t *out);

/* Metrics, every component's points and the score over the customer's
 * window, and T*.  -1 with errstr when nwindow != policy->window. */
int policy_score(const policy_t *p, const policy_profile_t *profile, const policy_month_t *window,
                 size_t nwindow, policy_score_t *out, char *errstr, size_t errstr_size);

/* Highest tier whose min_score <= score_c (hundredths). */
int32_t policy_target_tier(const policy_t *p, int32_t score_c);

/* The monthly review of `month` (docs/behaviour.md): new-customer hold,
 * INITIAL_EVALUATION, upgrade, downgrade, compliance cap.  A customer is
 * new while fewer than new_customer_months lie between its first order
 * month and `month` (both counted), override or not: it is held on its
 * placement tier (the override in force, else new_customer_tier, under
 * the grade's cap), and the first review after that is the
 * INITIAL_EVALUATION.  The window must end with `month` and be
 * consecutive; -1 with errstr otherwise. */
int policy_review(const policy_t *p, const policy_customer_t *c, int32_t month,
                  policy_decision_t *out, char *errstr, size_t errstr_size);
/* The same decision, but out->explain is left empty unless out->changed:
 * for callers that only publish the text of a change (most reviews change
 * nothing, and the text costs more than the decision). */
int policy_review_decide(const policy_t *p, const policy_customer_t *c, int32_t month,
                         policy_decision_t *out, char *errstr, size_t errstr_size);

/* After an order of `month` was applied (window ends with `month`): the
 * first order of any kind, SALE or RETURN, places the customer
 * (NEW_CUSTOMER, or OVERRIDE/COMPLIANCE when the profile says so) and
 * makes `month` its first order month; policies with upgrade_on_order
 * move to T* at once when it is above the tier, once the customer is no
 * longer new.  -1 with errstr on a bad window. */
int policy_on_order(const policy_t *p, const policy_customer_t *c, int32_t month,
                    policy_decision_t *out, char *errstr, size_t errstr_size);

/* The first order of a customer, placed in `month`: the new-customer tier,
 * then the profile's override and compliance cap. */
void policy_first_order(const policy_t *p, const policy_profile_t *profile, int32_t month,
                        policy_decision_t *out);

/* A profile was published (or deleted: pass policy->profile_default):
 * a changed override is applied at once, then the grade's cap. */
void policy_on_profile(const policy_t *p, const policy_state_t *st, const policy_profile_t *profile,
                       policy_decision_t *out);

/* The override alone: has_override false clears the remembered one. */
void policy_apply_override(const policy_t *p, const policy_state_t *st, bool has_override,
                           int32_t tier, policy_decision_t *out);

/* The compliance cap alone, for a grade that was just lowered. */
void policy_apply_compliance(const policy_t *p, const policy_state_t *st, policy_grade_t grade,
                             policy_decision_t *out);

/* Highest tier a grade allows: compliance cap, or ntiers when uncapped. */
int32_t policy_grade_cap(const policy_t *p, policy_grade_t grade);

/* Quota limits of `tier` (1..N) for a customer of `format`. */
void policy_quota_limits(const policy_t *p, int32_t tier, policy_format_t format,
                         bool holiday_month, policy_quota_limits_t *out);

/* Quota kinds that fire on an order taking the month's consumed qty from
 * `before` to `after`: kinds whose bit is not in fired_mask and whose
 * threshold `after` has reached, in publishing order, only when after >
 * before (returns fire nothing and clear nothing).  Returns how many were
 * written to out; OR their bits into the stored mask. */
size_t policy_quota_check(const policy_t *p, int32_t tier, policy_format_t format,
                          bool holiday_month, int64_t before, int64_t after, uint32_t fired_mask,
                          policy_quota_kind_t out[POLICY_QUOTA__COUNT]);

/* True when `month` overlaps a holiday period of the policy. */
bool policy_holiday_month(const policy_t *p, int32_t month);

/* Scale digit from the customer's rank by purchases within its format
 * (1 = largest) among `count`: '1' top 20 %, '3' bottom 20 %, '2' between.
 * Exact: with r = rank - 1, '1' when 5r < count, '3' when 5r >= 4 count. */
char policy_scale(int64_t rank, int64_t count);

/* Classification code: format letter, scale ('X' while the customer is
 * not yet evaluated), market digit, compliance digit (A/B lawful '1', C/D
 * '2'), 'L' for a chain.  out has POLICY_CODE_MAX bytes. */
void policy_classification(const policy_profile_t *profile, bool is_new, char scale,
                           char out[POLICY_CODE_MAX]);

/* ------------------------------------------------------------------ */
/* Names and helpers                                                   */

const char *policy_reason_name(policy_reason_t r);         /* "UPGRADE" ... */
const char *policy_rule_name(policy_rule_t r);             /* "UPGRADE_BLOCKED" ... */
const char *policy_quota_kind_name(policy_quota_kind_t k); /* "WARNING" ... */
const char *policy_metric_name(policy_metric_t m);         /* "qty_avg" ... */
const char *policy_field_name(policy_field_t f);           /* "cooperation" ... */
const char *policy_format_name(policy_format_t f);         /* "GROCERY" ..., NULL if unknown */

/* The tier's name from the policy, or its number as text; buf >= 16 bytes. */
const char *policy_tier_label(const policy_t *p, int32_t tier, char *buf, size_t size);

static inline int32_t policy_month_of(int year, int mon) {
    return year * 12 + (mon - 1);
}
static inline uint32_t policy_quota_bit(policy_quota_kind_t k) {
    return 1u << (unsigned)k;
}

/* "2025-03"; buf >= 32 bytes for any month value. */
const char *policy_month_text(int32_t month, char *buf, size_t size);

#endif
