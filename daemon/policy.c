/*
 * policy.c -- the decision engine: metrics, score, monthly review, the
 * order and profile triggers, quota events and the classification code.
 *
 * It owns the rules of docs/behaviour.md and nothing else: callers hand
 * it a customer's stored state, profile and window and store what it
 * returns.  It must never do I/O, read the clock or keep state between
 * calls; two calls with the same inputs give the same decision.
 *
 * Exactness: scores are compared as integer hundredths, ratios as integer
 * millionths (see policy.h).  Floating point is used only for the metric
 * averages and the points they earn, and rounded once, half-up, into the
 * score.
 */
#include "tierd/policy.h"

#include "decimal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* __int128 keeps "qty * 10^6 >= ratio * cap" exact for any int64 inputs. */
__extension__ typedef __int128 i128;

/* ------------------------------------------------------------------ */
/* Names                                                               */

static const char *const reason_names[POLICY_REASON__COUNT] = {
    "NONE", "NEW_CUSTOMER", "INITIAL_EVALUATION", "UPGRADE", "DOWNGRADE", "COMPLIANCE", "OVERRIDE",
};

static const char *const rule_names[POLICY_RULE__COUNT] = {
    "NONE",       "NEW_CUSTOMER",    "NEW_CUSTOMER_HOLD", "INITIAL_EVALUATION",
    "UPGRADE",    "UPGRADE_BLOCKED", "DOWNGRADE",         "HOLD",
    "COMPLIANCE", "OVERRIDE",        "OVERRIDE_REPEATED", "OVERRIDE_INVALID",
};

static const char *const quota_names[POLICY_QUOTA__COUNT] = {
    "WARNING",
    "REACHED",
    "EXCEEDED",
    "HARD_CAP_EXCEEDED",
};

static const char *const metric_names[POLICY_METRIC__COUNT] = {
    "qty_avg", "amount_avg", "avg_price", "skus_avg",
    "orders",  "stability",  "qty_total", "amount_total",
};

static const char *const field_names[POLICY_FIELD__COUNT] = {"cooperation", "growth"};

const char *policy_reason_name(policy_reason_t r) {
    return (unsigned)r < POLICY_REASON__COUNT ? reason_names[r] : "UNKNOWN";
}

const char *policy_rule_name(policy_rule_t r) {
    return (unsigned)r < POLICY_RULE__COUNT ? rule_names[r] : "UNKNOWN";
}

const char *policy_quota_kind_name(policy_quota_kind_t k) {
    return (unsigned)k < POLICY_QUOTA__COUNT ? quota_names[k] : "UNKNOWN";
}

const char *policy_metric_name(policy_metric_t m) {
    return (unsigned)m < POLICY_METRIC__COUNT ? metric_names[m] : "unknown";
}

const char *policy_field_name(policy_field_t f) {
    return (unsigned)f < POLICY_FIELD__COUNT ? field_names[f] : "unknown";
}

const char *policy_format_name(policy_format_t f) {
    switch (f) {
    case POLICY_FORMAT_GROCERY: return "GROCERY";
    case POLICY_FORMAT_CONVENIENCE: return "CONVENIENCE";
    case POLICY_FORMAT_SUPERMARKET: return "SUPERMARKET";
    case POLICY_FORMAT_MALL: return "MALL";
    case POLICY_FORMAT_TOBACCO_LIQUOR: return "TOBACCO_LIQUOR";
    case POLICY_FORMAT_HOSPITALITY: return "HOSPITALITY";
    case POLICY_FORMAT_OTHER: return "OTHER";
    }
    return NULL;
}

const char *policy_month_text(int32_t month, char *buf, size_t size) {
    /* the year rounded toward minus infinity; defined for every int32 */
    int32_t year = month >= 0 ? month / 12 : -(int32_t)((-(int64_t)month + 11) / 12);
    int mon = (int)((int64_t)month - (int64_t)year * 12 + 1);
    if (year >= 0 && year <= 9999 && size >= 8) {
        /* "%04d-%02d" without printf: events and texts write one each */
        buf[0] = (char)('0' + year / 1000);
        buf[1] = (char)('0' + year / 100 % 10);
        buf[2] = (char)('0' + year / 10 % 10);
        buf[3] = (char)('0' + year % 10);
        buf[4] = '-';
        buf[5] = (char)('0' + mon / 10);
        buf[6] = (char)('0' + mon % 10);
        buf[7] = '\0';
    } else {
        snprintf(buf, size, "%04d-%02d", (int)year, mon);
    }
    return buf;
}

const char *policy_tier_label(const policy_t *p, int32_t tier, char *buf, size_t size) {
    if (tier >= 1 && tier <= p->ntiers && p->tiers[tier - 1].name[0] != '\0')
        snprintf(buf, size, "%d (%s)", (int)tier, p->tiers[tier - 1].name);
    else if (tier <= 0)
        snprintf(buf, size, "none");
    else
        snprintf(buf, size, "%d", (int)tier);
    return buf;
}

/* ------------------------------------------------------------------ */
/* Explanations: a bounded appender; text past the end is dropped.     */
/* With buf NULL (size 0) nothing is written: decisions no event       */
/* carries skip the text.                                              */

typedef struct explain {
    char *buf;
    size_t size, len;
} explain_t;

__attribute__((format(printf, 2, 3))) static void say_fmt(explain_t *e, const char *fmt, ...) {
    if (e->len + 1 >= e->size) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->buf + e->len, e->size - e->len, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    e->len += (size_t)n;
    if (e->len >= e->size) e->len = e->size - 1;
}

/* say() evaluates its arguments (tier labels, month texts) only when the
 * text is wanted: a review's first, silent pass over every customer
 * formats nothing. */
#define say(e, ...)                                                                                \
    do {                                                                                           \
        if ((e)->size) say_fmt((e), __VA_ARGS__);                                                  \
    } while (0)

/* ------------------------------------------------------------------ */
/* Metrics and score                                                   */

static int64_t sat_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r)) return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

void policy_metrics(const policy_month_t *w, size_t n, policy_metrics_t *out) {
    memset(out, 0, sizeof(*out));
    if (n == 0) return;
    out->qty_min = INT64_MAX;
    out->qty_max = INT64_MIN;
    for (size_t i = 0; i < n; i++) {
        out->qty_total = sat_add(out->qty_total, w[i].qty);
        out->amount_total = sat_add(out->amount_total, w[i].amount);
        out->skus_total = sat_add(out->skus_total, w[i].skus);
        out->orders = sat_add(out->orders, w[i].orders);
        if (w[i].qty < out->qty_min) out->qty_min = w[i].qty;
        if (w[i].qty > out->qty_max) out->qty_max = w[i].qty;
    }
    double dn = (double)n;
    out->qty_avg = (double)out->qty_total / dn;
    out->amount_avg = (double)out->amount_total / dn;
    out->skus_avg = (double)out->skus_total / dn;
    out->avg_price = out->qty_total > 0 ? (double)out->amount_total / (double)out->qty_total : 0.0;
    /* (mean - (max - min)) / mean == (total - n * (max - min)) / total */
    if (out->qty_total > 0) {
        double s = ((double)out->qty_total - dn * (double)(out->qty_max - out->qty_min)) /
                   (double)out->qty_total;
        out->stability = s > 0.0 ? s : 0.0;
    }
}

static double metric_value(const policy_metrics_t *m, policy_metric_t k) {
    switch (k) {
    case POLICY_METRIC_QTY_AVG: return m->qty_avg;
    case POLICY_METRIC_AMOUNT_AVG: return m->amount_avg;
    case POLICY_METRIC_AVG_PRICE: return m->avg_price;
    case POLICY_METRIC_SKUS_AVG: return m->skus_avg;
    case POLICY_METRIC_ORDERS: return (double)m->orders;
    case POLICY_METRIC_STABILITY: return m->stability;
    case POLICY_METRIC_QTY_TOTAL: return (double)m->qty_total;
    case POLICY_METRIC_AMOUNT_TOTAL: return (double)m->amount_total;
    case POLICY_METRIC__COUNT: break;
    }
    return 0.0;
}

static double unit_clamp(double v) {
    if (!(v > 0.0)) /* also NaN */
        return 0.0;
    return v < 1.0 ? v : 1.0;
}

static double field_value(const policy_profile_t *prof, policy_field_t f) {
    return unit_clamp(f == POLICY_FIELD_COOPERATION ? prof->cooperation : prof->growth);
}

static void component_eval(const policy_component_t *c, const policy_metrics_t *m,
                           const policy_profile_t *prof, policy_component_result_t *r) {
    memset(r, 0, sizeof(*r));
    r->kind = c->kind;
    r->step = -1;
    r->max_points = c->points_c / 100.0;
    switch (c->kind) {
    case POLICY_COMP_LINEAR:
        r->source = policy_metric_name(c->metric);
        r->value = metric_value(m, c->metric);
        r->lo = c->lo;
        r->hi = c->hi;
        r->points = r->max_points * unit_clamp((r->value - c->lo) / (c->hi - c->lo));
        break;
    case POLICY_COMP_STEPS:
        r->source = policy_metric_name(c->metric);
        r->value = metric_value(m, c->metric);
        for (uint32_t i = 0; i < c->nsteps && c->steps[i].at <= r->value; i++) {
            r->step = (int32_t)i;
            r->step_at = c->steps[i].at;
            r->points = c->steps[i].points_c / 100.0;
        }
        break;
    case POLICY_COMP_PROFILE:
        r->source = policy_field_name(c->field);
        r->value = field_value(prof, c->field);
        r->points = r->max_points * r->value;
        break;
    }
}

/* Half-up to hundredths.  The points are sums of products of decimals, so
 * a total meant to be exactly x.xx5 may come out a hair below it in
 * binary (16.005 is 16.00499999...); the 1e-6 hundredth of slack rounds
 * those up as a person computing by hand would. */
static int32_t round_hundredths(double x) {
    if (!(x > 0.0)) return 0;
    if (x >= 100.0) return 10000;
    return (int32_t)floor(x * 100.0 + 0.5 + 1e-6);
}

int32_t policy_target_tier(const policy_t *p, int32_t score_c) {
    for (int32_t k = p->ntiers; k > 1; k--)
        if (score_c >= p->tiers[k - 1].min_score_c) return k;
    return 1;
}

static int check_window_size(const policy_t *p, const policy_month_t *w, size_t n, char *errstr,
                             size_t errstr_size) {
    if (w != NULL && n == (size_t)p->window) return 0;
    snprintf(errstr, errstr_size, "window has %zu months, policy %s wants %d", w ? n : 0, p->name,
             (int)p->window);
    return -1;
}

/* W consecutive months ending with `month`, oldest first. */
static int check_window(const policy_t *p, const policy_month_t *w, size_t n, int32_t month,
                        char *errstr, size_t errstr_size) {
    char a[32], b[32], c[32];
    if (check_window_size(p, w, n, errstr, errstr_size) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        int32_t want = month - (int32_t)(n - 1 - i);
        if (w[i].month != want) {
            snprintf(errstr, errstr_size,
                     "window month %zu is %s, expected %s (oldest first, ending %s)", i,
                     policy_month_text(w[i].month, a, sizeof(a)),
                     policy_month_text(want, b, sizeof(b)), policy_month_text(month, c, sizeof(c)));
            return -1;
        }
    }
    return 0;
}

static void score_window(const policy_t *p, const policy_profile_t *prof, const policy_month_t *w,
                         size_t n, policy_score_t *out) {
    memset(out, 0, sizeof(*out));
    policy_metrics(w, n, &out->metrics);
    double sum = 0.0;
    for (uint32_t i = 0; i < p->ncomponents; i++) {
        component_eval(&p->components[i], &out->metrics, prof, &out->components[i]);
        sum += out->components[i].points;
    }
    out->ncomponents = p->ncomponents;
    out->score_c = round_hundredths(sum);
    out->target_tier = policy_target_tier(p, out->score_c);
}

int policy_score(const policy_t *p, const policy_profile_t *profile, const policy_month_t *window,
                 size_t nwindow, policy_score_t *out, char *errstr, size_t errstr_size) {
    if (check_window_size(p, window, nwindow, errstr, errstr_size) != 0) return -1;
    score_window(p, profile, window, nwindow, out);
    return 0;
}

/* Appends n bytes of s, cut at the end of the buffer as say() cuts. */
static void put(explain_t *e, const char *s, size_t n) {
    if (e->len + 1 >= e->size) return;
    if (n > e->size - 1 - e->len) n = e->size - 1 - e->len;
    memcpy(e->buf + e->len, s, n);
    e->len += n;
    e->buf[e->len] = '\0';
}

static void put_str(explain_t *e, const char *s) {
    put(e, s, strlen(s));
}

/* v as "%.2f", or as "%.0f" when whole is set and v is a whole number
 * below 1e15 (1500, 149.67, 0.8).  decimal.h writes the same bytes as
 * printf without its cost: one event's text holds a dozen numbers, and a
 * review writes one per tier change. */
static void put_num(explain_t *e, double v, int whole) {
    char t[DECIMAL_MAX + 8];
    size_t n = whole ? decimal_whole(t, v) : 0;
    if (!n) n = decimal_fixed2(t, v);
    if (n)
        put(e, t, n);
    else
        say(e, "%.2f", v);
}

static void explain_score(const policy_t *p, const policy_score_t *s, explain_t *e) {
    char t[64];
    if (!e->buf) return;
    say(e, "score %d.%02d (", (int)(s->score_c / 100), (int)(s->score_c % 100));
    for (uint32_t i = 0; i < s->ncomponents; i++) {
        const policy_component_result_t *r = &s->components[i];
        if (i) put(e, "; ", 2);
        put_str(e, r->source);
        put(e, " ", 1);
        put_num(e, r->value, 1);
        put(e, ": ", 2);
        put_num(e, r->points, 0);
        put(e, "/", 1);
        put_num(e, r->max_points, 1);
        if (r->kind == POLICY_COMP_LINEAR) {
            put_str(e, " over ");
            put_num(e, r->lo, 1);
            put(e, "..", 2);
            put_num(e, r->hi, 1);
        } else if (r->kind == POLICY_COMP_STEPS && r->step >= 0) {
            put_str(e, " at >= ");
            put_num(e, r->step_at, 1);
        } else if (r->kind == POLICY_COMP_STEPS) {
            put_str(e, " below every step");
        }
    }
    say(e, ") -> T* %s", policy_tier_label(p, s->target_tier, t, sizeof(t)));
}

/* ------------------------------------------------------------------ */
/* Decisions                                                           */

int32_t policy_grade_cap(const policy_t *p, policy_grade_t grade) {
    if (grade >= POLICY_GRADE_A && grade <= POLICY_GRADE_D) {
        int32_t cap = p->compliance_cap[grade - POLICY_GRADE_A];
        if (cap > 0 && cap < p->ntiers) return cap;
    }
    return p->ntiers;
}

static void decision_init(policy_decision_t *d, const policy_state_t *st, int32_t month) {
    memset(d, 0, sizeof(*d));
    d->prev_tier = st->tier;
    d->new_tier = st->tier;
    d->month = month;
    d->next = *st;
}

/* A tier move in progress: the working tier and why it is there. */
typedef struct move {
    int32_t tier;
    policy_reason_t why;
} move_t;

static void decision_finish(policy_decision_t *d, const move_t *mv) {
    d->new_tier = mv->tier;
    d->next.tier = mv->tier;
    d->changed = d->new_tier != d->prev_tier;
    d->reason = d->changed ? mv->why : POLICY_REASON_NONE;
}

static void step_compliance(const policy_t *p, policy_grade_t grade, move_t *mv,
                            policy_decision_t *d, explain_t *e) {
    int32_t cap = policy_grade_cap(p, grade);
    if (cap >= p->ntiers) return;
    d->compliance_cap = cap;
    if (mv->tier > cap) {
        char a[64];
        say(e, "; grade %c allows at most tier %s", (char)grade,
            policy_tier_label(p, cap, a, sizeof(a)));
        mv->tier = cap;
        mv->why = POLICY_REASON_COMPLIANCE;
        d->rule = POLICY_RULE_COMPLIANCE;
    }
}

static void step_override(const policy_t *p, bool has, int32_t tier, move_t *mv,
                          policy_decision_t *d, explain_t *e) {
    char a[64];
    if (!has) {
        if (d->next.has_override) say(e, "; override cleared, tier stays");
        d->next.has_override = false;
        d->next.override_tier = 0;
        return;
    }
    if (d->next.has_override && d->next.override_tier == tier) {
        say(e, "; override %d republished: nothing to do", (int)tier);
        d->rule = POLICY_RULE_OVERRIDE_REPEATED;
        return;
    }
    if (tier < 1 || tier > p->ntiers) {
        say(e, "; override %d ignored: tiers are 1..%d", (int)tier, (int)p->ntiers);
        d->rule = POLICY_RULE_OVERRIDE_INVALID;
        return;
    }
    say(e, "; override sets tier %s", policy_tier_label(p, tier, a, sizeof(a)));
    /* The override moves the tier, not the calendar: a new customer stays
     * new, is held on the override, and is first scored when its period
     * ends (docs/behaviour.md, "Placement and reviews"). */
    d->next.has_override = true;
    d->next.override_tier = tier;
    mv->tier = tier;
    mv->why = POLICY_REASON_OVERRIDE;
    d->rule = POLICY_RULE_OVERRIDE;
}

static void first_order(const policy_t *p, const policy_profile_t *prof, int32_t month, move_t *mv,
                        policy_decision_t *d, explain_t *e) {
    char a[64], m[32];
    d->next.first_month = month;
    d->next.evaluated = false;
    d->next.has_override = false;
    d->next.override_tier = 0;
    mv->tier = p->new_customer_tier;
    mv->why = POLICY_REASON_NEW_CUSTOMER;
    d->rule = POLICY_RULE_NEW_CUSTOMER;
    say(e, "first order in %s: new customer on tier %s", policy_month_text(month, m, sizeof(m)),
        policy_tier_label(p, mv->tier, a, sizeof(a)));
    if (prof->has_override) step_override(p, true, prof->tier_override, mv, d, e);
    step_compliance(p, prof->grade, mv, d, e);
}

void policy_first_order(const policy_t *p, const policy_profile_t *profile, int32_t month,
                        policy_decision_t *out) {
    policy_state_t none = {0};
    decision_init(out, &none, month);
    explain_t e = {out->explain, sizeof(out->explain), 0};
    move_t mv = {0, POLICY_REASON_NONE};
    first_order(p, profile, month, &mv, out, &e);
    decision_finish(out, &mv);
}

/* True while month is inside the customer's new-customer period: fewer
 * than new_customer_months from its first order month to month, both
 * counted.  The calendar alone decides; `evaluated` only says whether the
 * INITIAL_EVALUATION after it has been made. */
static bool is_new(const policy_t *p, const policy_state_t *st, int32_t month) {
    return month - st->first_month + 1 < p->new_customer_months;
}

/* The tier a new customer is held on (docs/behaviour.md): the override in
 * force, else the policy's new-customer tier.  The caller applies the
 * compliance cap after it. */
static void step_placement(const policy_t *p, const policy_state_t *st, move_t *mv, explain_t *e) {
    char a[64];
    if (st->has_override && st->override_tier >= 1) {
        mv->tier = st->override_tier < p->ntiers ? st->override_tier : p->ntiers;
        mv->why = POLICY_REASON_OVERRIDE;
        say(e, "override %s", policy_tier_label(p, mv->tier, a, sizeof(a)));
    } else {
        mv->tier = p->new_customer_tier;
        mv->why = POLICY_REASON_NEW_CUSTOMER;
        say(e, "tier %s", policy_tier_label(p, mv->tier, a, sizeof(a)));
    }
}

static int32_t effective_tier(const policy_t *p, int32_t tier, int32_t current) {
    if (tier <= 0) tier = current;
    if (tier > p->ntiers) tier = p->ntiers;
    return tier < 1 ? 1 : tier;
}

static int64_t ceil_ppm(int64_t v, int64_t ppm) {
    i128 x = (i128)v * ppm;
    i128 q = (x + POLICY_PPM - 1) / POLICY_PPM;
    return q > INT64_MAX ? INT64_MAX : (int64_t)q;
}

static void judge_months(const policy_t *p, const policy_customer_t *c, int32_t current,
                         policy_decision_t *d) {
    for (size_t i = 0; i < c->nwindow; i++) {
        const policy_month_t *w = &c->window[i];
        policy_month_check_t *k = &d->months[i];
        k->month = w->month;
        k->tier_in_effect = effective_tier(p, w->tier_in_effect, current);
        k->grade = w->grade != POLICY_GRADE_NONE ? w->grade : c->profile.grade;
        k->qty = w->qty;
        k->floor = p->tiers[k->tier_in_effect - 1].floor;
        k->cap = p->tiers[k->tier_in_effect - 1].cap;
        k->upgrade_qty = ceil_ppm(k->cap, p->upgrade_cap_ratio_ppm);
        k->grade_ok = k->grade <= p->upgrade_grade_at_least;
        k->qty_ok = p->has_caps && k->qty >= k->upgrade_qty;
        k->below_floor = p->has_caps && k->qty < k->floor;
    }
    d->nmonths = (uint32_t)c->nwindow;
}

static void explain_months(const policy_decision_t *d, bool upgrade, explain_t *e) {
    char m[32];
    if (!e->buf) return;
    for (uint32_t i = 0; i < d->nmonths; i++) {
        const policy_month_check_t *k = &d->months[i];
        say(e, "%s%s tier %d qty %lld", i ? "; " : " (", policy_month_text(k->month, m, sizeof(m)),
            (int)k->tier_in_effect, (long long)k->qty);
        if (upgrade)
            say(e, " %s %lld, grade %c%s", k->qty_ok ? ">=" : "<", (long long)k->upgrade_qty,
                (char)k->grade, k->grade_ok ? "" : " too low");
        else
            say(e, " %s floor %lld", k->below_floor ? "<" : ">=", (long long)k->floor);
    }
    say(e, ")");
}

/* The tier an evaluated customer moves to, by the upgrade and downgrade
 * rules; blocked upgrades are recorded in d. */
static void step_hysteresis(const policy_t *p, int32_t target, move_t *mv, policy_decision_t *d,
                            explain_t *e) {
    char a[64];
    int32_t t = mv->tier;
    if (target > t && p->upgrade != POLICY_UPGRADE_NEVER) {
        if (p->upgrade == POLICY_UPGRADE_SCORE) {
            say(e, "; upgrade to %s", policy_tier_label(p, target, a, sizeof(a)));
            mv->tier = target;
            mv->why = POLICY_REASON_UPGRADE;
            d->rule = POLICY_RULE_UPGRADE;
            return;
        }
        for (uint32_t i = 0; i < d->nmonths; i++) {
            if (!d->months[i].grade_ok) d->upgrade_blocked |= POLICY_BLOCKED_GRADE;
            if (!d->months[i].qty_ok) d->upgrade_blocked |= POLICY_BLOCKED_QTY;
        }
        if (d->upgrade_blocked == 0) {
            say(e, "; upgrade to %s, every month met it",
                policy_tier_label(p, t + 1, a, sizeof(a)));
            explain_months(d, true, e);
            mv->tier = t + 1;
            mv->why = POLICY_REASON_UPGRADE;
            d->rule = POLICY_RULE_UPGRADE;
            return;
        }
        say(e, "; upgrade blocked by %s%s%s",
            (d->upgrade_blocked & POLICY_BLOCKED_GRADE) ? "grade" : "",
            d->upgrade_blocked == (POLICY_BLOCKED_GRADE | POLICY_BLOCKED_QTY) ? " and " : "",
            (d->upgrade_blocked & POLICY_BLOCKED_QTY) ? "quantity" : "");
        explain_months(d, true, e);
        d->rule = POLICY_RULE_UPGRADE_BLOCKED;
    }

    int32_t down = t;
    if (p->downgrade == POLICY_DOWNGRADE_SCORE) {
        down = target;
    } else if (p->downgrade == POLICY_DOWNGRADE_FLOOR) {
        bool all_below = d->nmonths > 0;
        for (uint32_t i = 0; i < d->nmonths; i++) all_below = all_below && d->months[i].below_floor;
        if (all_below) {
            /* highest tier whose floor <= qty_avg, i.e. floor * W <= total */
            const policy_metrics_t *m = &d->score.metrics;
            down = 1;
            for (int32_t k = p->ntiers; k > 1; k--) {
                i128 need = (i128)p->tiers[k - 1].floor * p->window;
                if (need <= m->qty_total) {
                    down = k;
                    break;
                }
            }
            if (down >= t) {
                say(e, "; every month below the floor, but qty_avg %.2f still fits tier %s",
                    m->qty_avg, policy_tier_label(p, down, a, sizeof(a)));
                explain_months(d, false, e);
            }
        }
    }
    if (down < t) {
        say(e, "; downgrade to %s", policy_tier_label(p, down, a, sizeof(a)));
        if (p->downgrade == POLICY_DOWNGRADE_FLOOR) explain_months(d, false, e);
        mv->tier = down;
        mv->why = POLICY_REASON_DOWNGRADE;
        d->rule = POLICY_RULE_DOWNGRADE;
    } else if (d->rule != POLICY_RULE_UPGRADE_BLOCKED) {
        say(e, "; no rule moves the tier");
        d->rule = POLICY_RULE_HOLD;
    }
}

/* The grade the compliance cap looks at: the worse of the grade now and
 * the worst grade in effect during the month (a D in mid-month counts). */
static policy_grade_t grade_now(const policy_customer_t *c) {
    policy_grade_t g = c->profile.grade;
    policy_grade_t last = c->window[c->nwindow - 1].grade;
    return last > g ? last : g;
}

static int review(const policy_t *p, const policy_customer_t *c, int32_t month,
                  policy_decision_t *out, bool explain, char *errstr, size_t errstr_size) {
    char a[64], m[32] = "";
    decision_init(out, &c->state, month);
    if (check_window(p, c->window, c->nwindow, month, errstr, errstr_size) != 0) return -1;
    explain_t e = {explain ? out->explain : NULL, explain ? sizeof(out->explain) : 0, 0};
    const policy_state_t *st = &c->state;
    score_window(p, &c->profile, c->window, c->nwindow, &out->score);
    out->has_score = true;

    if (explain) policy_month_text(month, m, sizeof(m));
    say(&e, "review %s: ", m);
    if (st->tier <= 0 || month < st->first_month) {
        say(&e, "no order yet, nothing to review");
        out->rule = POLICY_RULE_NONE;
        return 0;
    }
    /* a stored tier the (edited) policy no longer has: its top tier, a downgrade */
    int32_t current = st->tier > p->ntiers ? p->ntiers : st->tier;
    move_t mv = {current, current < st->tier ? POLICY_REASON_DOWNGRADE : POLICY_REASON_NONE};
    judge_months(p, c, current, out);
    explain_score(p, &out->score, &e);
    say(&e, "; tier %s", policy_tier_label(p, st->tier, a, sizeof(a)));
    if (current < st->tier) say(&e, " (the policy's tiers end at %d)", (int)p->ntiers);

    int32_t since = month - st->first_month + 1;
    if (is_new(p, st, month)) {
        /* Back on the placement tier, whatever moved it meanwhile.  A state
         * marked evaluated this early was ended by an override under the
         * old rule: it is new again, and evaluated when its period ends. */
        say(&e, "; new customer, month %d of %d: ", (int)since, (int)p->new_customer_months);
        step_placement(p, st, &mv, &e);
        out->rule = POLICY_RULE_NEW_CUSTOMER_HOLD;
        out->next.evaluated = false;
    } else if (!st->evaluated) {
        say(&e, "; initial evaluation after %d months", (int)since);
        mv.tier = out->score.target_tier;
        mv.why = POLICY_REASON_INITIAL_EVALUATION;
        out->rule = POLICY_RULE_INITIAL_EVALUATION;
        out->next.evaluated = true;
    } else {
        step_hysteresis(p, out->score.target_tier, &mv, out, &e);
    }
    step_compliance(p, grade_now(c), &mv, out, &e);
    decision_finish(out, &mv);
    return 0;
}

int policy_review(const policy_t *p, const policy_customer_t *c, int32_t month,
                  policy_decision_t *out, char *errstr, size_t errstr_size) {
    return review(p, c, month, out, true, errstr, errstr_size);
}

int policy_review_decide(const policy_t *p, const policy_customer_t *c, int32_t month,
                         policy_decision_t *out, char *errstr, size_t errstr_size) {
    if (review(p, c, month, out, false, errstr, errstr_size) != 0) return -1;
    if (!out->changed) return 0;
    /* The engine is pure: the same decision again, now with its text. */
    return review(p, c, month, out, true, errstr, errstr_size);
}

int policy_on_order(const policy_t *p, const policy_customer_t *c, int32_t month,
                    policy_decision_t *out, char *errstr, size_t errstr_size) {
    char a[64];
    decision_init(out, &c->state, month);
    if (check_window(p, c->window, c->nwindow, month, errstr, errstr_size) != 0) return -1;
    explain_t e = {out->explain, sizeof(out->explain), 0};
    score_window(p, &c->profile, c->window, c->nwindow, &out->score);
    out->has_score = true;

    move_t mv = {c->state.tier, POLICY_REASON_NONE};
    if (c->state.tier <= 0) first_order(p, &c->profile, month, &mv, out, &e);
    if (!p->upgrade_on_order) goto done;

    if (is_new(p, &out->next, month)) goto done;
    if (out->score.target_tier > mv.tier) {
        if (e.len) say(&e, "; ");
        say(&e, "order lifts ");
        explain_score(p, &out->score, &e);
        say(&e, ": upgrade to %s at once",
            policy_tier_label(p, out->score.target_tier, a, sizeof(a)));
        mv.tier = out->score.target_tier;
        mv.why = POLICY_REASON_UPGRADE;
        out->rule = POLICY_RULE_UPGRADE;
        out->next.evaluated = true;
        step_compliance(p, grade_now(c), &mv, out, &e);
    }
done:
    decision_finish(out, &mv);
    return 0;
}

void policy_on_profile(const policy_t *p, const policy_state_t *st, const policy_profile_t *profile,
                       policy_decision_t *out) {
    decision_init(out, st, 0);
    explain_t e = {out->explain, sizeof(out->explain), 0};
    say(&e, "profile update");
    if (st->tier <= 0) {
        /* no placement yet: the first order reads the profile */
        say(&e, ": no order yet, nothing to change");
        return;
    }
    move_t mv = {st->tier, POLICY_REASON_NONE};
    step_override(p, profile->has_override, profile->tier_override, &mv, out, &e);
    step_compliance(p, profile->grade, &mv, out, &e);
    decision_finish(out, &mv);
}

void policy_apply_override(const policy_t *p, const policy_state_t *st, bool has_override,
                           int32_t tier, policy_decision_t *out) {
    decision_init(out, st, 0);
    explain_t e = {out->explain, sizeof(out->explain), 0};
    say(&e, "override");
    if (st->tier <= 0) {
        say(&e, ": no order yet, nothing to change");
        return;
    }
    move_t mv = {st->tier, POLICY_REASON_NONE};
    step_override(p, has_override, tier, &mv, out, &e);
    decision_finish(out, &mv);
}

void policy_apply_compliance(const policy_t *p, const policy_state_t *st, policy_grade_t grade,
                             policy_decision_t *out) {
    decision_init(out, st, 0);
    explain_t e = {out->explain, sizeof(out->explain), 0};
    say(&e, "compliance grade %c", (char)grade);
    if (st->tier <= 0) return;
    move_t mv = {st->tier, POLICY_REASON_NONE};
    step_compliance(p, grade, &mv, out, &e);
    decision_finish(out, &mv);
}

/* ------------------------------------------------------------------ */
/* Quota                                                               */

static int64_t hard_cap_for(const policy_t *p, policy_format_t format) {
    if (format >= 'A' && format <= 'Z' && policy_format_name(format) != NULL)
        return p->hard_cap[format - 'A'];
    return p->hard_cap_default;
}

void policy_quota_limits(const policy_t *p, int32_t tier, policy_format_t format,
                         bool holiday_month, policy_quota_limits_t *out) {
    memset(out, 0, sizeof(*out));
    if (p->has_caps && tier >= 1 && tier <= p->ntiers) out->cap = p->tiers[tier - 1].cap;
    out->effective_cap = out->cap;
    if (holiday_month) {
        /* floor: a holiday lets supply exceed the cap by *at most* the flex */
        i128 extra = (i128)out->cap * p->holiday_flex_ppm / POLICY_PPM;
        i128 eff = out->cap + extra;
        out->effective_cap = eff > INT64_MAX ? INT64_MAX : (int64_t)eff;
    }
    out->warning_at = ceil_ppm(out->effective_cap, p->warning_ratio_ppm);
    out->hard_cap = hard_cap_for(p, format);
}

size_t policy_quota_check(const policy_t *p, int32_t tier, policy_format_t format,
                          bool holiday_month, int64_t before, int64_t after, uint32_t fired_mask,
                          policy_quota_kind_t out[POLICY_QUOTA__COUNT]) {
    size_t n = 0;
    if (after <= before || tier < 1) return 0;
    policy_quota_limits_t l;
    policy_quota_limits(p, tier, format, holiday_month, &l);
    bool reached[POLICY_QUOTA__COUNT] = {
        [POLICY_QUOTA_WARNING] = l.cap > 0 && after >= l.warning_at,
        [POLICY_QUOTA_REACHED] = l.cap > 0 && after >= l.effective_cap,
        [POLICY_QUOTA_EXCEEDED] = l.cap > 0 && after > l.effective_cap,
        [POLICY_QUOTA_HARD_CAP_EXCEEDED] = l.hard_cap != POLICY_NO_HARD_CAP && after > l.hard_cap,
    };
    for (int k = 0; k < POLICY_QUOTA__COUNT; k++)
        if (reached[k] && !(fired_mask & policy_quota_bit((policy_quota_kind_t)k)))
            out[n++] = (policy_quota_kind_t)k;
    return n;
}

bool policy_holiday_month(const policy_t *p, int32_t month) {
    for (uint32_t i = 0; i < p->nholidays; i++)
        if (p->holidays[i].from_month <= month && month <= p->holidays[i].to_month) return true;
    return false;
}

/* ------------------------------------------------------------------ */
/* Classification code (docs/behaviour.md, "Outputs")                 */

char policy_scale(int64_t rank, int64_t count) {
    if (count <= 0 || rank < 1 || rank > count) return '2';
    i128 r5 = (i128)(rank - 1) * 5;
    if (r5 < count) return '1';
    if (r5 >= (i128)count * 4) return '3';
    return '2';
}

void policy_classification(const policy_profile_t *profile, bool is_new, char scale,
                           char out[POLICY_CODE_MAX]) {
    size_t n = 0;
    out[n++] =
        policy_format_name(profile->format) ? (char)profile->format : (char)POLICY_FORMAT_OTHER;
    out[n++] = is_new ? 'X' : (scale >= '1' && scale <= '3' ? scale : '2');
    out[n++] = profile->market == POLICY_MARKET_RURAL ? '2' : '1';
    out[n++] = profile->grade >= POLICY_GRADE_C ? '2' : '1';
    if (profile->chain) out[n++] = 'L';
    out[n] = '\0';
}
