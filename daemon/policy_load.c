/*
 * policy_load.c -- reads a policy file (YAML) into a policy_t.
 *
 * It owns the file format and every check a policy must pass; the engine
 * (policy.c) trusts what it gets from here.  A wrong file is refused as a
 * whole with "FILE:LINE: reason", so an operator can fix it before the
 * daemon starts.  It must never keep anything between calls: a policy is
 * built aside and copied out only when all of it is valid, so a reload
 * that fails leaves the running policy alone.
 *
 * Every key a section accepts is listed in one table (type, where it
 * lands, bounds, a line of doc); the parser, the "expected ..." hints of
 * the error messages and the bounds checks come from those tables.
 */
#include "tierd/policy.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define POLICY_FILE_MAX (1 << 20) /* bytes; a policy is a page of text */

_Static_assert(sizeof(policy_upgrade_rule_t) == sizeof(int), "enums are stored through int");
_Static_assert(sizeof(policy_grade_t) == sizeof(int), "enums are stored through int");

typedef struct ld {
    yaml_document_t *doc;
    const char *file;
    char *errstr;
    size_t errstr_size;
    policy_t *p;
    /* lines for the checks made once the whole file is read; 0 = not given */
    int line_root[16]; /* of each root key, by root_keys index */
    int line_new_tier;
    int line_compliance[4];
    int32_t score_points_c; /* sum of the components' full points */
} ld_t;

static int line_of(const yaml_node_t *n) {
    return (int)n->start_mark.line + 1;
}

__attribute__((format(printf, 3, 4))) static int fail(ld_t *l, int line, const char *fmt, ...) {
    int n = snprintf(l->errstr, l->errstr_size, "%s:%d: ", l->file, line);
    if (n >= 0 && (size_t)n < l->errstr_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(l->errstr + n, l->errstr_size - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* ------------------------------------------------------------------ */
/* Scalars                                                             */

typedef enum {
    T_TEXT,    /* char[POLICY_NAME_MAX + 1] */
    T_ANY,     /* any scalar, ignored (description) */
    T_I32,     /* integer into int32_t */
    T_I64,     /* integer into int64_t */
    T_C32,     /* decimal, 2 places, into int32_t hundredths */
    T_PPM,     /* decimal, 6 places, into int64_t millionths */
    T_DOUBLE,  /* decimal, 6 places, into double */
    T_BOOL,    /* true / false */
    T_ENUM,    /* one of names[], its index into an int-sized enum */
    T_GRADE,   /* A B C D into policy_grade_t */
    T_FORMAT,  /* GROCERY ... OTHER into policy_format_t */
    T_MARKET,  /* URBAN / RURAL into policy_market_t */
    T_METRIC,  /* qty_avg ... into policy_metric_t */
    T_FIELD,   /* cooperation / growth into policy_field_t */
    T_DATE,    /* YYYY-MM-DD into int32_t yyyymmdd */
    T_SECTION, /* a nested mapping or sequence: fn(dst) */
} ld_type_t;

typedef int (*ld_fn)(ld_t *l, const yaml_node_t *v, void *dst);

typedef struct ld_key {
    const char *key;
    ld_type_t type;
    size_t off;       /* where the value lands in the section's struct */
    int64_t min, max; /* bounds, in stored units (hundredths, millionths) */
    bool required;
    ld_fn fn;                 /* T_SECTION */
    const char *const *names; /* T_ENUM, NULL-terminated */
    const char *doc;
} ld_key_t;

#define KEY(k, t, s, f, lo, hi, req, d)                                                            \
    { k, t, offsetof(s, f), lo, hi, req, NULL, NULL, d }
#define SECTION(k, fn, req, d)                                                                     \
    { k, T_SECTION, 0, 0, 0, req, fn, NULL, d }
#define ENUM(k, s, f, names, d)                                                                    \
    { k, T_ENUM, offsetof(s, f), 0, 0, false, NULL, names, d }

/* value * 10^places from "-12.5", "2_000", "0.9"; digits past `places`
 * must be zeros.  0 ok, -1 not a number, -2 too many decimals, -3 too big. */
static int parse_fixed(const char *s, int places, int64_t *out) {
    bool neg = false, digits = false;
    int64_t v = 0;
    int frac = 0;
    if (*s == '-' || *s == '+') neg = *s++ == '-';
    bool in_frac = false;
    for (; *s; s++) {
        if (*s == '_' && digits && s[1] >= '0' && s[1] <= '9') continue;
        if (*s == '.' && !in_frac && places >= 0) {
            in_frac = true;
            continue;
        }
        if (*s < '0' || *s > '9') return -1;
        digits = true;
        if (in_frac && frac == places) {
            if (*s != '0') return -2;
            continue;
        }
        if (in_frac) frac++;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v)) return -3;
    }
    if (!digits) return -1;
    for (; frac < places; frac++)
        if (__builtin_mul_overflow(v, 10, &v)) return -3;
    *out = neg ? -v : v;
    return 0;
}

/* "12.5" from 1250 at 2 places, trailing zeros dropped. */
static const char *fixed_text(int64_t v, int places, char *buf, size_t size) {
    int64_t scale = 1;
    for (int i = 0; i < places; i++) scale *= 10;
    uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    int n =
        snprintf(buf, size, "%s%llu", v < 0 ? "-" : "", (unsigned long long)(a / (uint64_t)scale));
    uint64_t f = a % (uint64_t)scale;
    if (f != 0 && n > 0 && (size_t)n < size) {
        snprintf(buf + n, size - (size_t)n, ".%0*llu", places, (unsigned long long)f);
        for (char *e = buf + strlen(buf) - 1; *e == '0'; e--) *e = '\0';
    }
    return buf;
}

static int places_of(ld_type_t t) {
    switch (t) {
    case T_C32: return 2;
    case T_PPM:
    case T_DOUBLE: return 6;
    default: return 0;
    }
}

static int days_in(int y, int m) {
    static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : d[m - 1];
}

static int parse_date(const char *s, int32_t *out) {
    int y, m, d, n = 0;
    if (strlen(s) != 10 || sscanf(s, "%4d-%2d-%2d%n", &y, &m, &d, &n) != 3 || n != 10 ||
        s[4] != '-' || s[7] != '-' || y < 1970 || y > 9999 || m < 1 || m > 12 || d < 1 ||
        d > days_in(y, m))
        return -1;
    *out = y * 10000 + m * 100 + d;
    return 0;
}

static const char *const grade_names[] = {"A", "B", "C", "D", NULL};
static const char *const format_names[] = {"GROCERY",        "CONVENIENCE", "SUPERMARKET", "MALL",
                                           "TOBACCO_LIQUOR", "HOSPITALITY", "OTHER",       NULL};
static const policy_format_t format_values[] = {
    POLICY_FORMAT_GROCERY, POLICY_FORMAT_CONVENIENCE,    POLICY_FORMAT_SUPERMARKET,
    POLICY_FORMAT_MALL,    POLICY_FORMAT_TOBACCO_LIQUOR, POLICY_FORMAT_HOSPITALITY,
    POLICY_FORMAT_OTHER,
};
static const char *const market_names[] = {"URBAN", "RURAL", NULL};
static const char *const upgrade_names[] = {"hysteresis", "score", "never", NULL};
static const char *const downgrade_names[] = {"floor", "score", "never", NULL};
static const char *const kind_names[] = {"linear", "steps", "profile", NULL};

static int name_index(const char *const *names, const char *s) {
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0) return i;
    return -1;
}

static void join(const char *const *names, int n, char *buf, size_t size) {
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; (n < 0 || i < n) && names[i] && len + 1 < size; i++) {
        int w = snprintf(buf + len, size - len, "%s%s", i ? ", " : "", names[i]);
        if (w < 0) break;
        len += (size_t)w;
    }
}

static int bad_name(ld_t *l, const yaml_node_t *v, const char *key, const char *what,
                    const char *const *names, int n) {
    char list[256];
    join(names, n, list, sizeof(list));
    return fail(l, line_of(v), "unknown %s '%s' for %s (expected one of: %s)", what,
                (const char *)v->data.scalar.value, key, list);
}

static int ld_scalar(ld_t *l, const ld_key_t *k, const yaml_node_t *v, void *dst) {
    char *at = (char *)dst + k->off;
    char a[32], b[32];
    if (v->type != YAML_SCALAR_NODE)
        return fail(l, line_of(v), "%s must be a single value, not a list or mapping", k->key);
    const char *s = (const char *)v->data.scalar.value;
    bool plain = v->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    if (v->data.scalar.length == 0 || (plain && (strcmp(s, "~") == 0 || strcmp(s, "null") == 0)))
        return fail(l, line_of(v), "%s has no value", k->key);
    if (strlen(s) != v->data.scalar.length)
        return fail(l, line_of(v), "%s contains a NUL byte", k->key);

    switch (k->type) {
    case T_ANY: return 0;
    case T_TEXT:
        if (v->data.scalar.length > POLICY_NAME_MAX)
            return fail(l, line_of(v), "%s is longer than %d bytes", k->key, POLICY_NAME_MAX);
        memcpy(at, s, v->data.scalar.length + 1);
        return 0;
    case T_BOOL:
        if (strcmp(s, "true") != 0 && strcmp(s, "false") != 0)
            return fail(l, line_of(v), "%s must be true or false, not '%s'", k->key, s);
        *(bool *)at = s[0] == 't';
        return 0;
    case T_DATE: {
        int32_t d;
        if (parse_date(s, &d) != 0)
            return fail(l, line_of(v), "%s '%s' is not a date (YYYY-MM-DD)", k->key, s);
        *(int32_t *)at = d;
        return 0;
    }
    case T_ENUM:
    case T_GRADE:
    case T_FORMAT:
    case T_MARKET: {
        const char *const *names = k->type == T_GRADE    ? grade_names
                                   : k->type == T_FORMAT ? format_names
                                   : k->type == T_MARKET ? market_names
                                                         : k->names;
        int i = name_index(names, s);
        if (i < 0) return bad_name(l, v, k->key, k->type == T_GRADE ? "grade" : "value", names, -1);
        int val = k->type == T_GRADE    ? 'A' + i
                  : k->type == T_FORMAT ? (int)format_values[i]
                  : k->type == T_MARKET ? (int)POLICY_MARKET_URBAN + i
                                        : i;
        memcpy(at, &val, sizeof(int));
        return 0;
    }
    case T_METRIC:
    case T_FIELD: {
        bool metric = k->type == T_METRIC;
        const char *names[POLICY_METRIC__COUNT + 1];
        int n = metric ? POLICY_METRIC__COUNT : POLICY_FIELD__COUNT;
        for (int i = 0; i < n; i++)
            names[i] = metric ? policy_metric_name((policy_metric_t)i)
                              : policy_field_name((policy_field_t)i);
        names[n] = NULL;
        int i = name_index(names, s);
        if (i < 0) return bad_name(l, v, k->key, metric ? "metric" : "profile field", names, n);
        memcpy(at, &i, sizeof(int));
        return 0;
    }
    case T_I32:
    case T_I64:
    case T_C32:
    case T_PPM:
    case T_DOUBLE: {
        int places = places_of(k->type);
        int64_t x;
        int rc = parse_fixed(s, places, &x);
        if (rc == -2 && places == 0)
            return fail(l, line_of(v), "%s %s must be a whole number", k->key, s);
        if (rc == -2)
            return fail(l, line_of(v), "%s %s has more than %d decimals", k->key, s, places);
        if (rc != 0)
            return fail(l, line_of(v), "%s '%s' is not a number%s", k->key, s,
                        rc == -3 ? " that fits in 64 bits" : "");
        if (x < k->min && k->min == 0)
            return fail(l, line_of(v), "%s %s must not be negative", k->key, s);
        if (x < k->min || x > k->max)
            return fail(l, line_of(v), "%s %s is out of range (%s to %s)", k->key, s,
                        fixed_text(k->min, places, a, sizeof(a)),
                        fixed_text(k->max, places, b, sizeof(b)));
        if (k->type == T_I32 || k->type == T_C32)
            *(int32_t *)at = (int32_t)x;
        else if (k->type == T_DOUBLE)
            *(double *)at = (double)x / POLICY_PPM;
        else
            *(int64_t *)at = x;
        return 0;
    }
    case T_SECTION: break;
    }
    return fail(l, line_of(v), "%s: internal error, unknown key type", k->key);
}

/* Walks one mapping against its key table.  lines[i] (optional) gets the
 * line of key i when present; *seen (optional) the bit set of keys given. */
static int ld_map(ld_t *l, const yaml_node_t *map, const char *what, const ld_key_t *keys,
                  size_t nkeys, void *dst, int *lines, uint32_t *seen_out) {
    uint32_t seen = 0;
    if (map->type != YAML_MAPPING_NODE)
        return fail(l, line_of(map), "%s must be a mapping of key: value", what);
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        yaml_node_t *k = yaml_document_get_node(l->doc, pr->key);
        yaml_node_t *v = yaml_document_get_node(l->doc, pr->value);
        if (k == NULL || v == NULL || k->type != YAML_SCALAR_NODE)
            return fail(l, k ? line_of(k) : line_of(map), "a key in %s is not a plain word", what);
        const char *ks = (const char *)k->data.scalar.value;
        size_t i = 0;
        while (i < nkeys && strcmp(keys[i].key, ks) != 0) i++;
        if (i == nkeys) {
            const char *names[33];
            size_t n = nkeys < 32 ? nkeys : 32;
            for (size_t j = 0; j < n; j++) names[j] = keys[j].key;
            names[n] = NULL;
            char list[512];
            join(names, -1, list, sizeof(list));
            return fail(l, line_of(k), "unknown key '%s' in %s (expected: %s)", ks, what, list);
        }
        if (seen & (1u << i)) return fail(l, line_of(k), "duplicate key '%s' in %s", ks, what);
        seen |= 1u << i;
        if (lines) lines[i] = line_of(k);
        int rc = keys[i].type == T_SECTION ? keys[i].fn(l, v, dst) : ld_scalar(l, &keys[i], v, dst);
        if (rc != 0) return -1;
    }
    for (size_t i = 0; i < nkeys; i++)
        if (keys[i].required && !(seen & (1u << i)))
            return fail(l, line_of(map), "%s has no '%s' (%s)", what, keys[i].key, keys[i].doc);
    if (seen_out) *seen_out = seen;
    return 0;
}

static int ld_seq(ld_t *l, const yaml_node_t *seq, const char *what, size_t max,
                  int (*item)(ld_t *, const yaml_node_t *, size_t, void *), void *dst) {
    if (seq->type != YAML_SEQUENCE_NODE)
        return fail(l, line_of(seq), "%s must be a list (lines starting with '- ')", what);
    size_t n = (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    if (n > max)
        return fail(l, line_of(seq), "%s has %zu entries, at most %zu are allowed", what, n, max);
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *it = yaml_document_get_node(l->doc, seq->data.sequence.items.start[i]);
        if (it == NULL || item(l, it, i, dst) != 0) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Sections                                                            */

static const ld_key_t new_customer_keys[] = {
    KEY("months", T_I32, policy_t, new_customer_months, 1, 120, false,
        "reviews of months fewer than this after the first order hold the tier"),
    KEY("tier", T_I32, policy_t, new_customer_tier, 1, POLICY_TIERS_MAX, false,
        "tier given at the first order and held through the period"),
};

static int sec_new_customer(ld_t *l, const yaml_node_t *v, void *dst) {
    int lines[2] = {0};
    if (ld_map(l, v, "new_customer", new_customer_keys, 2, dst, lines, NULL) != 0) return -1;
    l->line_new_tier = lines[1] ? lines[1] : line_of(v);
    return 0;
}

static const ld_key_t upgrade_keys[] = {
    ENUM("rule", policy_t, upgrade, upgrade_names, "hysteresis | score | never"),
    KEY("cap_ratio", T_PPM, policy_t, upgrade_cap_ratio_ppm, 1, POLICY_PPM, false,
        "hysteresis: share of the cap to buy in every window month"),
    KEY("grade_at_least", T_GRADE, policy_t, upgrade_grade_at_least, 0, 0, false,
        "hysteresis: worst grade allowed in every window month"),
    KEY("on_order", T_BOOL, policy_t, upgrade_on_order, 0, 0, false,
        "an order that lifts T* above the tier upgrades at once"),
};

static int sec_upgrade(ld_t *l, const yaml_node_t *v, void *dst) {
    return ld_map(l, v, "upgrade", upgrade_keys, 4, dst, NULL, NULL);
}

static const ld_key_t downgrade_keys[] = {
    ENUM("rule", policy_t, downgrade, downgrade_names, "floor | score | never"),
};

static int sec_downgrade(ld_t *l, const yaml_node_t *v, void *dst) {
    return ld_map(l, v, "downgrade", downgrade_keys, 1, dst, NULL, NULL);
}

static const ld_key_t compliance_keys[] = {
    KEY("A", T_I32, policy_t, compliance_cap[0], 1, POLICY_TIERS_MAX, false,
        "highest tier for grade A"),
    KEY("B", T_I32, policy_t, compliance_cap[1], 1, POLICY_TIERS_MAX, false,
        "highest tier for grade B"),
    KEY("C", T_I32, policy_t, compliance_cap[2], 1, POLICY_TIERS_MAX, false,
        "highest tier for grade C"),
    KEY("D", T_I32, policy_t, compliance_cap[3], 1, POLICY_TIERS_MAX, false,
        "highest tier for grade D"),
};

static int sec_compliance(ld_t *l, const yaml_node_t *v, void *dst) {
    policy_t *p = dst;
    /* the section replaces the built-in caps: grades it leaves out are uncapped */
    memset(p->compliance_cap, 0, sizeof(p->compliance_cap));
    if (v->type == YAML_MAPPING_NODE && v->data.mapping.pairs.start == v->data.mapping.pairs.top)
        return 0;
    return ld_map(l, v, "compliance", compliance_keys, 4, dst, l->line_compliance, NULL);
}

#define HARD_CAP(name, letter)                                                                     \
    {                                                                                              \
        name, T_I64, offsetof(policy_t, hard_cap[(letter) - 'A']), 1, INT64_MAX - 1, false, NULL,  \
            NULL, "monthly ceiling for this format"                                                \
    }

static const ld_key_t hard_cap_keys[] = {
    KEY("default", T_I64, policy_t, hard_cap_default, 1, INT64_MAX - 1, false,
        "monthly ceiling for formats not listed"),
    HARD_CAP("GROCERY", 'Z'),
    HARD_CAP("CONVENIENCE", 'B'),
    HARD_CAP("SUPERMARKET", 'C'),
    HARD_CAP("MALL", 'S'),
    HARD_CAP("TOBACCO_LIQUOR", 'Y'),
    HARD_CAP("HOSPITALITY", 'F'),
    HARD_CAP("OTHER", 'Q'),
};

static int sec_hard_caps(ld_t *l, const yaml_node_t *v, void *dst) {
    policy_t *p = dst;
    uint32_t seen = 0;
    if (ld_map(l, v, "quota.hard_caps", hard_cap_keys, 8, dst, NULL, &seen) != 0) return -1;
    /* formats not listed take the default */
    for (size_t i = 1; i < 8; i++)
        if (!(seen & (1u << i))) p->hard_cap[format_values[i - 1] - 'A'] = p->hard_cap_default;
    return 0;
}

static const ld_key_t quota_keys[] = {
    KEY("warning_ratio", T_PPM, policy_t, warning_ratio_ppm, 1, POLICY_PPM, false,
        "WARNING when consumed reaches this share of the effective cap"),
    KEY("holiday_flex", T_PPM, policy_t, holiday_flex_ppm, 0, 10 * (int64_t)POLICY_PPM, false,
        "extra share of the cap in a holiday month"),
    SECTION("hard_caps", sec_hard_caps, false, "monthly ceiling per format"),
};

static int sec_quota(ld_t *l, const yaml_node_t *v, void *dst) {
    return ld_map(l, v, "quota", quota_keys, 3, dst, NULL, NULL);
}

static const ld_key_t holiday_keys[] = {
    KEY("name", T_TEXT, policy_holiday_t, name, 0, 0, false, "what the period is"),
    KEY("from", T_DATE, policy_holiday_t, from_date, 0, 0, true, "first day, YYYY-MM-DD"),
    KEY("to", T_DATE, policy_holiday_t, to_date, 0, 0, true, "last day, YYYY-MM-DD"),
};

static int32_t date_month(int32_t d) {
    return (d / 10000) * 12 + (d / 100 % 100 - 1);
}

static int holiday_item(ld_t *l, const yaml_node_t *v, size_t i, void *dst) {
    policy_t *p = dst;
    policy_holiday_t *h = &p->holidays[i];
    memset(h, 0, sizeof(*h));
    if (ld_map(l, v, "holiday", holiday_keys, 3, h, NULL, NULL) != 0) return -1;
    if (h->from_date > h->to_date)
        return fail(l, line_of(v), "holiday %s ends (%d) before it starts (%d)", h->name,
                    (int)h->to_date, (int)h->from_date);
    h->from_month = date_month(h->from_date);
    h->to_month = date_month(h->to_date);
    p->nholidays = (uint32_t)i + 1;
    return 0;
}

static int sec_holidays(ld_t *l, const yaml_node_t *v, void *dst) {
    ((policy_t *)dst)->nholidays = 0;
    return ld_seq(l, v, "holidays", POLICY_HOLIDAYS_MAX, holiday_item, dst);
}

static const ld_key_t profile_keys[] = {
    KEY("format", T_FORMAT, policy_profile_t, format, 0, 0, false, "GROCERY ... OTHER"),
    KEY("market", T_MARKET, policy_profile_t, market, 0, 0, false, "URBAN or RURAL"),
    KEY("chain", T_BOOL, policy_profile_t, chain, 0, 0, false, "part of a chain"),
    KEY("grade", T_GRADE, policy_profile_t, grade, 0, 0, false, "compliance grade A-D"),
    KEY("cooperation", T_DOUBLE, policy_profile_t, cooperation, 0, POLICY_PPM, false, "0.0-1.0"),
    KEY("growth", T_DOUBLE, policy_profile_t, growth, 0, POLICY_PPM, false, "0.0-1.0"),
};

static int sec_profile_defaults(ld_t *l, const yaml_node_t *v, void *dst) {
    return ld_map(l, v, "profile_defaults", profile_keys, 6, &((policy_t *)dst)->profile_default,
                  NULL, NULL);
}

/* Score components: the `kind` decides which keys the entry may have. */
#define DEC_MAX ((int64_t)1000000000 * POLICY_PPM) /* |lo|, |hi|, thresholds <= 1e9 */

static const ld_key_t linear_keys[] = {
    KEY("kind", T_ANY, policy_component_t, kind, 0, 0, true, "linear"),
    KEY("metric", T_METRIC, policy_component_t, metric, 0, 0, true, "what is measured"),
    KEY("lo", T_DOUBLE, policy_component_t, lo, -DEC_MAX, DEC_MAX, true, "value earning 0 points"),
    KEY("hi", T_DOUBLE, policy_component_t, hi, -DEC_MAX, DEC_MAX, true,
        "value earning full points"),
    KEY("points", T_C32, policy_component_t, points_c, 0, 10000, true, "full points"),
};

static int steps_item(ld_t *l, const yaml_node_t *v, size_t i, void *dst);

static int sec_steps(ld_t *l, const yaml_node_t *v, void *dst) {
    policy_component_t *c = dst;
    c->nsteps = 0;
    if (ld_seq(l, v, "steps", POLICY_STEPS_MAX, steps_item, dst) != 0) return -1;
    if (c->nsteps == 0) return fail(l, line_of(v), "steps needs at least one {at, points} entry");
    return 0;
}

static const ld_key_t steps_keys[] = {
    KEY("kind", T_ANY, policy_component_t, kind, 0, 0, true, "steps"),
    KEY("metric", T_METRIC, policy_component_t, metric, 0, 0, true, "what is measured"),
    SECTION("steps", sec_steps, true, "list of {at, points}, at increasing"),
};

static const ld_key_t step_keys[] = {
    KEY("at", T_DOUBLE, policy_step_t, at, -DEC_MAX, DEC_MAX, true,
        "threshold reached when value >= at"),
    KEY("points", T_C32, policy_step_t, points_c, 0, 10000, true, "points from this threshold on"),
};

static int steps_item(ld_t *l, const yaml_node_t *v, size_t i, void *dst) {
    policy_component_t *c = dst;
    policy_step_t *s = &c->steps[i];
    if (ld_map(l, v, "step", step_keys, 2, s, NULL, NULL) != 0) return -1;
    if (i > 0 && !(s->at > c->steps[i - 1].at))
        return fail(l, line_of(v),
                    "step at %g must be above the previous one (%g): thresholds increase", s->at,
                    c->steps[i - 1].at);
    if (s->points_c > c->points_c) c->points_c = s->points_c;
    c->nsteps = (uint32_t)i + 1;
    return 0;
}

static const ld_key_t profile_comp_keys[] = {
    KEY("kind", T_ANY, policy_component_t, kind, 0, 0, true, "profile"),
    KEY("field", T_FIELD, policy_component_t, field, 0, 0, true, "cooperation or growth"),
    KEY("points", T_C32, policy_component_t, points_c, 0, 10000, true, "points at field = 1.0"),
};

static int component_item(ld_t *l, const yaml_node_t *v, size_t i, void *dst) {
    policy_t *p = dst;
    policy_component_t *c = &p->components[i];
    char what[48];
    memset(c, 0, sizeof(*c));
    if (v->type != YAML_MAPPING_NODE)
        return fail(l, line_of(v), "score component %zu must be a mapping with a kind", i + 1);
    const yaml_node_t *kind = NULL;
    for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top; pr++) {
        yaml_node_t *k = yaml_document_get_node(l->doc, pr->key);
        if (k && k->type == YAML_SCALAR_NODE &&
            strcmp((const char *)k->data.scalar.value, "kind") == 0)
            kind = yaml_document_get_node(l->doc, pr->value);
    }
    if (kind == NULL)
        return fail(l, line_of(v), "score component %zu has no kind (linear, steps or profile)",
                    i + 1);
    int k = kind->type == YAML_SCALAR_NODE
                ? name_index(kind_names, (const char *)kind->data.scalar.value)
                : -1;
    if (k < 0) {
        if (kind->type != YAML_SCALAR_NODE)
            return fail(l, line_of(kind), "kind must be linear, steps or profile");
        return bad_name(l, kind, "kind", "component kind", kind_names, -1);
    }
    c->kind = (policy_comp_kind_t)k;
    snprintf(what, sizeof(what), "%s component", kind_names[k]);
    int rc = c->kind == POLICY_COMP_LINEAR ? ld_map(l, v, what, linear_keys, 5, c, NULL, NULL)
             : c->kind == POLICY_COMP_STEPS
                 ? ld_map(l, v, what, steps_keys, 3, c, NULL, NULL)
                 : ld_map(l, v, what, profile_comp_keys, 3, c, NULL, NULL);
    if (rc != 0) return -1;
    if (c->kind == POLICY_COMP_LINEAR && !(c->lo < c->hi))
        return fail(l, line_of(v), "linear %s: lo %g must be below hi %g",
                    policy_metric_name(c->metric), c->lo, c->hi);
    l->score_points_c += c->points_c;
    p->ncomponents = (uint32_t)i + 1;
    return 0;
}

static int sec_score(ld_t *l, const yaml_node_t *v, void *dst) {
    policy_t *p = dst;
    l->score_points_c = 0;
    p->ncomponents = 0;
    if (ld_seq(l, v, "score", POLICY_COMPONENTS_MAX, component_item, dst) != 0) return -1;
    if (p->ncomponents == 0) return fail(l, line_of(v), "score needs at least one component");
    return 0;
}

/* A tier as written; checked against its neighbours once read. */
typedef struct tier_in {
    int32_t tier;
    policy_tier_t t;
} tier_in_t;

enum { TK_TIER, TK_NAME, TK_MIN_SCORE, TK_FLOOR, TK_CAP };
static const ld_key_t tier_keys[] = {
    [TK_TIER] =
        KEY("tier", T_I32, tier_in_t, tier, 1, POLICY_TIERS_MAX, true, "its number, 1, 2, 3 ..."),
    [TK_NAME] = KEY("name", T_TEXT, tier_in_t, t.name, 0, 0, false, "a label such as A"),
    [TK_MIN_SCORE] = KEY("min_score", T_C32, tier_in_t, t.min_score_c, 0, 10000, true,
                         "lowest score that earns the tier"),
    [TK_FLOOR] = KEY("floor", T_I64, tier_in_t, t.floor, 0, INT64_MAX - 1, false,
                     "units/month, must equal the cap of the tier below"),
    [TK_CAP] = KEY("cap", T_I64, tier_in_t, t.cap, 1, INT64_MAX - 1, false,
                   "units/month supplied at most"),
};

static int tier_item(ld_t *l, const yaml_node_t *v, size_t i, void *dst) {
    policy_t *p = dst;
    tier_in_t in;
    uint32_t seen = 0;
    char a[32], b[32];
    memset(&in, 0, sizeof(in));
    if (ld_map(l, v, "tier", tier_keys, 5, &in, NULL, &seen) != 0) return -1;
    int32_t want = (int32_t)i + 1;
    if (in.tier != want)
        return fail(l, line_of(v),
                    "expected tier %d here, found tier %d: tiers are listed 1, 2, 3 ... in order, "
                    "none missing",
                    (int)want, (int)in.tier);
    bool has_cap = (seen & (1u << TK_CAP)) != 0;
    if (i == 0) {
        p->has_caps = has_cap;
        if (in.t.min_score_c != 0)
            return fail(l, line_of(v), "tier 1 must have min_score 0, so every score has a tier");
    } else {
        const policy_tier_t *below = &p->tiers[i - 1];
        if (has_cap != p->has_caps)
            return fail(l, line_of(v), "tier %d %s: give every tier a cap, or none", (int)want,
                        has_cap ? "has a cap but tier 1 has none"
                                : "has no cap but tier 1 has one");
        if (in.t.min_score_c <= below->min_score_c)
            return fail(l, line_of(v), "tier %d: min_score %s must be above %s of tier %d",
                        (int)want, fixed_text(in.t.min_score_c, 2, a, sizeof(a)),
                        fixed_text(below->min_score_c, 2, b, sizeof(b)), (int)i);
        if (has_cap && in.t.cap <= below->cap)
            return fail(l, line_of(v), "tier %d: cap %lld must be above %lld of tier %d", (int)want,
                        (long long)in.t.cap, (long long)below->cap, (int)i);
    }
    int64_t floor = i == 0 || !has_cap ? 0 : p->tiers[i - 1].cap;
    if ((seen & (1u << TK_FLOOR)) && !has_cap)
        return fail(l, line_of(v), "tier %d: a floor needs caps (floors follow from the caps)",
                    (int)want);
    if ((seen & (1u << TK_FLOOR)) && in.t.floor != floor)
        return fail(l, line_of(v),
                    "tier %d: floor %lld must equal %lld%s: intervals are contiguous", (int)want,
                    (long long)in.t.floor, (long long)floor,
                    i == 0 ? " (tier 1 starts at 0)" : ", the cap of the tier below");
    in.t.floor = floor;
    for (size_t j = 0; j < i && in.t.name[0]; j++)
        if (strcmp(p->tiers[j].name, in.t.name) == 0)
            return fail(l, line_of(v), "tier %d: name '%s' is already tier %zu", (int)want,
                        in.t.name, j + 1);
    p->tiers[i] = in.t;
    p->ntiers = want;
    return 0;
}

static int sec_tiers(ld_t *l, const yaml_node_t *v, void *dst) {
    policy_t *p = dst;
    p->ntiers = 0;
    if (ld_seq(l, v, "tiers", POLICY_TIERS_MAX, tier_item, dst) != 0) return -1;
    if (p->ntiers == 0) return fail(l, line_of(v), "tiers needs at least one tier");
    return 0;
}

enum {
    RK_NAME,
    RK_VERSION,
    RK_DESCRIPTION,
    RK_TIME_ZONE,
    RK_WINDOW,
    RK_NEW_CUSTOMER,
    RK_UPGRADE,
    RK_DOWNGRADE,
    RK_COMPLIANCE,
    RK_QUOTA,
    RK_HOLIDAYS,
    RK_PROFILE_DEFAULTS,
    RK_SCORE,
    RK_TIERS,
    RK__COUNT
};
static const ld_key_t root_keys[RK__COUNT] = {
    KEY("name", T_TEXT, policy_t, name, 0, 0, true, "the policy's name, e.g. supply-tiers"),
    KEY("version", T_TEXT, policy_t, version, 0, 0, true,
        "bumped on every edit; travels in events"),
    KEY("description", T_ANY, policy_t, name, 0, 0, false, "free text for people"),
    KEY("time_zone", T_TEXT, policy_t, time_zone, 0, 0, false, "IANA zone months are cut in (UTC)"),
    KEY("window_months", T_I32, policy_t, window, 1, POLICY_WINDOW_MAX, false,
        "W, months scored (3)"),
    SECTION("new_customer", sec_new_customer, false, "months and tier of the new-customer period"),
    SECTION("upgrade", sec_upgrade, false, "how a customer moves up"),
    SECTION("downgrade", sec_downgrade, false, "how a customer moves down"),
    SECTION("compliance", sec_compliance, false, "grade -> highest tier allowed"),
    SECTION("quota", sec_quota, false, "warning ratio, holiday flex, hard caps"),
    SECTION("holidays", sec_holidays, false, "periods with holiday flex"),
    SECTION("profile_defaults", sec_profile_defaults, false, "profile of customers without one"),
    SECTION("score", sec_score, true, "list of score components"),
    SECTION("tiers", sec_tiers, true, "list of tiers, 1 first"),
};

/* The built-in values are supply-tiers' (docs/behaviour.md); a file states what
 * differs. */
static void defaults(policy_t *p) {
    memset(p, 0, sizeof(*p));
    snprintf(p->time_zone, sizeof(p->time_zone), "UTC");
    p->window = 3;
    p->new_customer_months = 3;
    p->new_customer_tier = 2;
    p->upgrade = POLICY_UPGRADE_HYSTERESIS;
    p->upgrade_cap_ratio_ppm = 900000;
    p->upgrade_grade_at_least = POLICY_GRADE_B;
    p->downgrade = POLICY_DOWNGRADE_FLOOR;
    p->compliance_cap[POLICY_GRADE_C - 'A'] = 2;
    p->compliance_cap[POLICY_GRADE_D - 'A'] = 1;
    p->warning_ratio_ppm = 900000;
    p->holiday_flex_ppm = 300000;
    p->hard_cap_default = POLICY_NO_HARD_CAP;
    for (size_t i = 0; i < sizeof(p->hard_cap) / sizeof(p->hard_cap[0]); i++)
        p->hard_cap[i] = POLICY_NO_HARD_CAP;
    p->profile_default = (policy_profile_t){
        .format = POLICY_FORMAT_OTHER,
        .market = POLICY_MARKET_URBAN,
        .chain = false,
        .grade = POLICY_GRADE_A,
        .cooperation = 0.6,
        .growth = 0.6,
    };
}

/* Checks that need the whole file; a default that clashes with the file
 * is reported at the line that made it clash (usually `tiers`). */
static int cross_check(ld_t *l) {
    policy_t *p = l->p;
    const int *root = l->line_root;
    int tiers = root[RK_TIERS];
    if (l->score_points_c > 10000) {
        char a[32];
        return fail(l, root[RK_SCORE], "score components add up to %s points, more than 100",
                    fixed_text(l->score_points_c, 2, a, sizeof(a)));
    }
    if (p->new_customer_tier > p->ntiers)
        return fail(l, l->line_new_tier ? l->line_new_tier : tiers,
                    "new_customer tier %d is above the highest tier %d", (int)p->new_customer_tier,
                    (int)p->ntiers);
    for (int g = 0; g < 4; g++)
        if (p->compliance_cap[g] > p->ntiers)
            return fail(l, l->line_compliance[g] ? l->line_compliance[g] : tiers,
                        "compliance cap %d for grade %c is above the highest tier %d",
                        (int)p->compliance_cap[g], 'A' + g, (int)p->ntiers);
    if (!p->has_caps && p->upgrade == POLICY_UPGRADE_HYSTERESIS)
        return fail(
            l, root[RK_UPGRADE] ? root[RK_UPGRADE] : tiers,
            "upgrade rule hysteresis compares purchases with tier caps, but the tiers have none");
    if (!p->has_caps && p->downgrade == POLICY_DOWNGRADE_FLOOR)
        return fail(
            l, root[RK_DOWNGRADE] ? root[RK_DOWNGRADE] : tiers,
            "downgrade rule floor compares purchases with tier floors, but the tiers have no caps");
    return 0;
}

int policy_parse(const char *buf, size_t len, const char *name, policy_t *out, char *errstr,
                 size_t errstr_size) {
    int rc = -1;
    yaml_parser_t parser;
    yaml_document_t doc;
    bool parser_ok = false, doc_ok = false;
    policy_t *p = malloc(sizeof(*p)); /* built aside, copied to *out on success; owned here */
    ld_t l = {.doc = &doc, .file = name, .errstr = errstr, .errstr_size = errstr_size, .p = p};

    if (p == NULL) {
        snprintf(errstr, errstr_size, "%s: out of memory", name);
        goto out;
    }
    defaults(p);
    if (!yaml_parser_initialize(&parser)) {
        snprintf(errstr, errstr_size, "%s: cannot start the YAML parser", name);
        goto out;
    }
    parser_ok = true;
    yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
    if (!yaml_parser_load(&parser, &doc)) {
        fail(&l, (int)parser.problem_mark.line + 1, "YAML syntax: %s%s%s",
             parser.problem ? parser.problem : "unreadable", parser.context ? " " : "",
             parser.context ? parser.context : "");
        goto out;
    }
    doc_ok = true;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL) {
        fail(&l, 1, "the policy file is empty");
        goto out;
    }
    if (ld_map(&l, root, "the policy", root_keys, RK__COUNT, p, l.line_root, NULL) != 0) goto out;
    if (cross_check(&l) != 0) goto out;
    *out = *p;
    rc = 0;
out:
    if (doc_ok) yaml_document_delete(&doc);
    if (parser_ok) yaml_parser_delete(&parser);
    free(p);
    return rc;
}

int policy_load(const char *path, policy_t *out, char *errstr, size_t errstr_size) {
    int rc = -1;
    FILE *f = NULL;
    char *buf = NULL; /* the whole file; owned here */
    size_t len = 0;

    f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(errstr, errstr_size, "%s:0: cannot open: %s", path, strerror(errno));
        goto out;
    }
    buf = malloc(POLICY_FILE_MAX + 1);
    if (buf == NULL) {
        snprintf(errstr, errstr_size, "%s:0: out of memory", path);
        goto out;
    }
    len = fread(buf, 1, POLICY_FILE_MAX + 1, f);
    if (ferror(f)) {
        snprintf(errstr, errstr_size, "%s:0: cannot read: %s", path, strerror(errno));
        goto out;
    }
    if (len > POLICY_FILE_MAX) {
        snprintf(errstr, errstr_size, "%s:0: larger than %d bytes; is this a policy file?", path,
                 POLICY_FILE_MAX);
        goto out;
    }
    rc = policy_parse(buf, len, path, out, errstr, errstr_size);
out:
    free(buf);
    if (f) fclose(f);
    return rc;
}
