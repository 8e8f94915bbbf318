/*
 * events.c -- Avro bytes of tierd's own topics: TierChange and QuotaEvent
 * out, CustomerProfile in.
 *
 * Owns: the three parsed schemas, a value class and one reusable value per
 * schema, one memory reader, and the tables that map our enums to the
 * schemas' enum symbols.  All built once by events_new().
 *
 * Encoding trusts nothing the caller cannot get wrong by accident: a
 * decision without a change, a month with no YYYY-MM form, an id too long
 * for its buffer are refused rather than published, because a subscriber
 * cannot take an event back.
 *
 * Decoding follows decode.c's rule: libavro allocates whatever a string
 * claims and accepts any enum or union index, so profile_prescan() first
 * walks the CustomerProfile encoding, checking every length and index
 * against the bytes present, and libavro only ever reads a buffer known to
 * hold exactly one well-formed record.  The pre-scan mirrors
 * schemas/customer_profile.avsc field by field; events_new() refuses a
 * schema of another shape, so the two cannot drift apart silently.
 *
 * Must never: publish a record its own schema would not read back, or
 * crash, hang or allocate an attacker-chosen amount on any input bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <avro.h>

#include "events.h"

#include "avroscan.h"
#include "errstr.h"
#include "utf8.h"
#include "validate.h"

/* Generated from schemas/ at build time. */
extern const char tierd_schema_tier_change[];
extern const char tierd_schema_quota_event[];
extern const char tierd_schema_customer_profile[];

/* Field positions, as in the schemas (checked by events_new). */
enum {
    TC_EVENT_ID, TC_CUSTOMER_ID, TC_SEQUENCE, TC_PREVIOUS_TIER, TC_NEW_TIER, TC_REASON, TC_RULE,
    TC_EXPLAIN, TC_REVIEW_MONTH, TC_SCORE, TC_TARGET_TIER, TC_COMPONENTS, TC_WINDOW,
    TC_UPGRADE_BLOCKED_BY, TC_CLASSIFICATION, TC_POLICY_NAME, TC_POLICY_VERSION, TC_DECIDED_AT,
    TC__COUNT
};
enum { SC_KIND, SC_SOURCE, SC_VALUE, SC_POINTS, SC_MAX_POINTS, SC_LO, SC_HI, SC__COUNT };
enum {
    WM_MONTH, WM_QTY, WM_AMOUNT, WM_ORDERS, WM_SKUS, WM_TIER_IN_EFFECT, WM_GRADE, WM_FLOOR,
    WM_CAP, WM_UPGRADE_QTY, WM_GRADE_OK, WM_QTY_OK, WM_BELOW_FLOOR, WM__COUNT
};
enum {
    QE_EVENT_ID, QE_CUSTOMER_ID, QE_MONTH, QE_TIER, QE_KIND, QE_CAP, QE_EFFECTIVE_CAP,
    QE_HARD_CAP, QE_CONSUMED, QE_ORDER_ID, QE_PLACED_AT, QE_POLICY_NAME, QE_POLICY_VERSION,
    QE__COUNT
};
enum {
    CP_CUSTOMER_ID, CP_FORMAT, CP_MARKET, CP_CHAIN, CP_GRADE, CP_COOPERATION, CP_GROWTH,
    CP_TIER_OVERRIDE, CP_UPDATED_AT, CP__COUNT
};

/* Confluent wire format: magic 0x00, then a big-endian 4-byte schema id. */
#define EVENTS_CONFLUENT_HEADER 5

/* Room for "<customer_id>:tier:<int64>" and "<customer_id>:<YYYY-MM>:<KIND>". */
#define EVENTS_ID_MAX (ORDER_ID_MAX + 64)

/* "YYYY-MM" needs four year digits. */
#define EVENTS_MONTH_LIMIT (10000 * 12)

#define EVENTS_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Enum symbols a profile may carry; more than any schema of ours has. */
#define EVENTS_SYMBOLS_MAX 16

struct events {
    avro_schema_t tc_schema;           /* owned */
    avro_schema_t quota_schema;        /* owned */
    avro_schema_t profile_schema;      /* owned */
    avro_value_iface_t *tc_iface;      /* owned */
    avro_value_iface_t *quota_iface;   /* owned */
    avro_value_iface_t *profile_iface; /* owned */
    avro_value_t tc_value;             /* owned when tc_live */
    avro_value_t quota_value;          /* owned when quota_live */
    avro_value_t profile_value;        /* owned when profile_live */
    bool tc_live, quota_live, profile_live;
    avro_reader_t reader;              /* owned; pointed at each profile in turn */

    /* Wire index of each symbol, looked up by name so the enums of
     * policy.h need not be in the schemas' order.  -1: not sent. */
    int reason_index[POLICY_REASON__COUNT];
    int quota_index[POLICY_QUOTA__COUNT];

    /* Profile enums by wire index. */
    policy_format_t formats[EVENTS_SYMBOLS_MAX];
    int nformats;
    policy_market_t markets[EVENTS_SYMBOLS_MAX];
    int nmarkets;
    policy_grade_t grades[EVENTS_SYMBOLS_MAX];
    int ngrades;
};

/* -------------------------------------------------------------------------
 * Schema shape: the encoders address fields by position and the pre-scan
 * hard-codes the profile layout, so both are checked once, here.
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

static const avroscan_field_t cp_fields[CP__COUNT] = {
    [CP_CUSTOMER_ID] = {"customer_id", AVRO_STRING, false},
    [CP_FORMAT] = {"format", AVRO_ENUM, false},
    [CP_MARKET] = {"market", AVRO_ENUM, false},
    [CP_CHAIN] = {"chain", AVRO_BOOLEAN, false},
    [CP_GRADE] = {"compliance_grade", AVRO_ENUM, false},
    [CP_COOPERATION] = {"cooperation", AVRO_DOUBLE, false},
    [CP_GROWTH] = {"growth", AVRO_DOUBLE, false},
    [CP_TIER_OVERRIDE] = {"tier_override", AVRO_INT32, true},
    [CP_UPDATED_AT] = {"updated_at", AVRO_INT64, false},
};

/* avroscan_check_record(), naming this codec in the message. */
static int events_check_record(avro_schema_t rec, const char *what,
                               const avroscan_field_t *want, size_t nwant, char *errstr,
                               size_t errstr_size)
{
    return avroscan_check_record(rec, what, want, nwant, "the event codec", errstr, errstr_size);
}

/* The schema of field `index` of record `rec`, its array items. */
static avro_schema_t events_items(avro_schema_t rec, int index)
{
    return avro_schema_array_items(avro_schema_record_field_get_by_index(rec, index));
}

/* Looks up every name of ours among the enum's symbols.  first..count-1
 * must all exist (first = 1 skips a NONE that never travels). */
static int events_map_names(avro_schema_t enm, const char *what, const char *(*name_of)(int),
                            int first, int count, int *index, char *errstr, size_t errstr_size)
{
    int i;

    for (i = 0; i < count; i++)
        index[i] = -1;
    for (i = first; i < count; i++) {
        index[i] = avro_schema_enum_get_by_name(enm, name_of(i));
        if (index[i] < 0) {
            errstr_fmt(errstr, errstr_size, "schema: enum %s has no symbol %s", what,
                       name_of(i));
            return -1;
        }
    }
    return 0;
}

static const char *events_reason_name(int r) { return policy_reason_name((policy_reason_t)r); }
static const char *events_kind_name(int k)
{
    return policy_quota_kind_name((policy_quota_kind_t)k);
}

/* Builds wire index -> our value for one profile enum: every symbol must
 * be one we know (a new symbol needs code, not a guess). */
static int events_map_symbols(avro_schema_t enm, const char *what, const char *const *names,
                              const int *values, size_t nnames, int *out, int *nout,
                              char *errstr, size_t errstr_size)
{
    int n = avro_schema_enum_number_of_symbols(enm), i;

    if (n <= 0 || n > EVENTS_SYMBOLS_MAX) {
        errstr_fmt(errstr, errstr_size, "schema: enum %s has %d symbols", what, n);
        return -1;
    }
    for (i = 0; i < n; i++) {
        const char *sym = avro_schema_enum_get(enm, i);
        size_t k;

        for (k = 0; k < nnames; k++)
            if (sym != NULL && strcmp(sym, names[k]) == 0)
                break;
        if (k == nnames) {
            errstr_fmt(errstr, errstr_size, "schema: enum %s has symbol %s, unknown to tierd",
                       what, sym != NULL ? sym : "(null)");
            return -1;
        }
        out[i] = values[k];
    }
    *nout = n;
    return 0;
}

static int events_map_profile(events_t *e, char *errstr, size_t errstr_size)
{
    static const int format_values[] = {
        POLICY_FORMAT_GROCERY, POLICY_FORMAT_CONVENIENCE, POLICY_FORMAT_SUPERMARKET,
        POLICY_FORMAT_MALL,    POLICY_FORMAT_TOBACCO_LIQUOR, POLICY_FORMAT_HOSPITALITY,
        POLICY_FORMAT_OTHER,
    };
    static const char *const market_names[] = {"URBAN", "RURAL"};
    static const int market_values[] = {POLICY_MARKET_URBAN, POLICY_MARKET_RURAL};
    static const char *const grade_names[] = {"A", "B", "C", "D"};
    static const int grade_values[] = {POLICY_GRADE_A, POLICY_GRADE_B, POLICY_GRADE_C,
                                       POLICY_GRADE_D};
    const char *format_names[EVENTS_NELEM(format_values)];
    int tmp[EVENTS_SYMBOLS_MAX], i;
    avro_schema_t s = e->profile_schema;

    for (i = 0; i < (int)EVENTS_NELEM(format_values); i++)
        format_names[i] = policy_format_name((policy_format_t)format_values[i]);

    if (events_map_symbols(avro_schema_record_field_get_by_index(s, CP_FORMAT), "RetailFormat",
                           format_names, format_values, EVENTS_NELEM(format_values), tmp,
                           &e->nformats, errstr, errstr_size) != 0)
        return -1;
    for (i = 0; i < e->nformats; i++)
        e->formats[i] = (policy_format_t)tmp[i];

    if (events_map_symbols(avro_schema_record_field_get_by_index(s, CP_MARKET), "Market",
                           market_names, market_values, EVENTS_NELEM(market_values), tmp,
                           &e->nmarkets, errstr, errstr_size) != 0)
        return -1;
    for (i = 0; i < e->nmarkets; i++)
        e->markets[i] = (policy_market_t)tmp[i];

    if (events_map_symbols(avro_schema_record_field_get_by_index(s, CP_GRADE), "ComplianceGrade",
                           grade_names, grade_values, EVENTS_NELEM(grade_values), tmp,
                           &e->ngrades, errstr, errstr_size) != 0)
        return -1;
    for (i = 0; i < e->ngrades; i++)
        e->grades[i] = (policy_grade_t)tmp[i];
    return 0;
}

static int events_check_schemas(events_t *e, char *errstr, size_t errstr_size)
{
    avro_schema_t blocked;

    if (events_check_record(e->tc_schema, "TierChange", tc_fields, TC__COUNT, errstr,
                            errstr_size) != 0 ||
        events_check_record(events_items(e->tc_schema, TC_COMPONENTS), "ScoreComponent",
                            sc_fields, SC__COUNT, errstr, errstr_size) != 0 ||
        events_check_record(events_items(e->tc_schema, TC_WINDOW), "WindowMonth", wm_fields,
                            WM__COUNT, errstr, errstr_size) != 0)
        return -1;
    blocked = events_items(e->tc_schema, TC_UPGRADE_BLOCKED_BY);
    if (blocked == NULL || avro_typeof(blocked) != AVRO_STRING) {
        errstr_fmt(errstr, errstr_size, "schema: upgrade_blocked_by must be an array of strings");
        return -1;
    }
    if (events_map_names(avro_schema_record_field_get_by_index(e->tc_schema, TC_REASON),
                         "TierChangeReason", events_reason_name, POLICY_REASON_NONE + 1,
                         POLICY_REASON__COUNT, e->reason_index, errstr, errstr_size) != 0)
        return -1;

    if (events_check_record(e->quota_schema, "QuotaEvent", qe_fields, QE__COUNT, errstr,
                            errstr_size) != 0 ||
        events_map_names(avro_schema_record_field_get_by_index(e->quota_schema, QE_KIND),
                         "QuotaKind", events_kind_name, 0, POLICY_QUOTA__COUNT, e->quota_index,
                         errstr, errstr_size) != 0)
        return -1;

    if (events_check_record(e->profile_schema, "CustomerProfile", cp_fields, CP__COUNT, errstr,
                            errstr_size) != 0)
        return -1;
    return events_map_profile(e, errstr, errstr_size);
}

/* -------------------------------------------------------------------------
 * Life cycle.
 */

/* Parses one embedded schema and makes its class and reusable value. */
static int events_load(const char *json, const char *what, avro_schema_t *schema,
                       char *errstr, size_t errstr_size)
{
    if (avro_schema_from_json_length(json, strlen(json), schema) != 0) {
        *schema = NULL;
        errstr_fmt(errstr, errstr_size, "cannot parse the embedded %s schema: %s", what,
                   avro_strerror());
        return -1;
    }
    return 0;
}

static int events_value(avro_schema_t schema, const char *what, avro_value_iface_t **iface,
                        avro_value_t *value, bool *live, char *errstr, size_t errstr_size)
{
    *iface = avro_generic_class_from_schema(schema);
    if (*iface == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot build a value class for %s: %s", what,
                   avro_strerror());
        return -1;
    }
    if (avro_generic_value_new(*iface, value) != 0) {
        errstr_fmt(errstr, errstr_size, "cannot allocate a %s value: %s", what,
                   avro_strerror());
        return -1;
    }
    *live = true;
    return 0;
}

events_t *events_new(char *errstr, size_t errstr_size)
{
    static const char empty[1] = "";
    events_t *e = NULL; /* owned here until returned */
    events_t *ret = NULL;

    e = calloc(1, sizeof(*e));
    if (e == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory creating the event codec");
        goto out;
    }
    if (events_load(tierd_schema_tier_change, "TierChange", &e->tc_schema, errstr,
                    errstr_size) != 0 ||
        events_load(tierd_schema_quota_event, "QuotaEvent", &e->quota_schema, errstr,
                    errstr_size) != 0 ||
        events_load(tierd_schema_customer_profile, "CustomerProfile", &e->profile_schema, errstr,
                    errstr_size) != 0)
        goto out;
    if (events_check_schemas(e, errstr, errstr_size) != 0)
        goto out;
    if (events_value(e->tc_schema, "TierChange", &e->tc_iface, &e->tc_value, &e->tc_live,
                     errstr, errstr_size) != 0 ||
        events_value(e->quota_schema, "QuotaEvent", &e->quota_iface, &e->quota_value,
                     &e->quota_live, errstr, errstr_size) != 0 ||
        events_value(e->profile_schema, "CustomerProfile", &e->profile_iface, &e->profile_value,
                     &e->profile_live, errstr, errstr_size) != 0)
        goto out;

    /* Pointed at each record by avro_reader_memory_set_source(). */
    e->reader = avro_reader_memory(empty, 0);
    if (e->reader == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot allocate the Avro memory reader: %s",
                   avro_strerror());
        goto out;
    }

    ret = e;
    e = NULL; /* now owned by the caller */
out:
    events_destroy(e);
    return ret;
}

void events_destroy(events_t *e)
{
    if (e == NULL)
        return;
    if (e->reader != NULL)
        avro_reader_free(e->reader);
    if (e->profile_live)
        avro_value_decref(&e->profile_value);
    if (e->quota_live)
        avro_value_decref(&e->quota_value);
    if (e->tc_live)
        avro_value_decref(&e->tc_value);
    if (e->profile_iface != NULL)
        avro_value_iface_decref(e->profile_iface);
    if (e->quota_iface != NULL)
        avro_value_iface_decref(e->quota_iface);
    if (e->tc_iface != NULL)
        avro_value_iface_decref(e->tc_iface);
    if (e->profile_schema != NULL)
        avro_schema_decref(e->profile_schema);
    if (e->quota_schema != NULL)
        avro_schema_decref(e->quota_schema);
    if (e->tc_schema != NULL)
        avro_schema_decref(e->tc_schema);
    free(e);
}

/* -------------------------------------------------------------------------
 * Setting fields.  Each returns libavro's 0 / non-zero so a record can be
 * filled in one chain of ||; the caller reports avro_strerror() once.
 */

static int put_string(avro_value_t *rec, size_t index, const char *s)
{
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_string(&f, s);
}

static int put_long(avro_value_t *rec, size_t index, int64_t x)
{
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_long(&f, x);
}

static int put_int(avro_value_t *rec, size_t index, int32_t x)
{
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_int(&f, x);
}

static int put_double(avro_value_t *rec, size_t index, double x)
{
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_double(&f, x);
}

static int put_bool(avro_value_t *rec, size_t index, bool x)
{
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_boolean(&f, x);
}

static int put_enum(avro_value_t *rec, size_t index, int symbol)
{
    avro_value_t f;
    return avro_value_get_by_index(rec, index, &f, NULL) || avro_value_set_enum(&f, symbol);
}

/* ["null", T]: selects a branch and hands it back to be set (has) or sets
 * null (!has; *branch is then unused). */
static int put_branch(avro_value_t *rec, size_t index, bool has, avro_value_t *branch)
{
    avro_value_t f;

    if (avro_value_get_by_index(rec, index, &f, NULL) != 0)
        return -1;
    if (!has)
        return avro_value_set_branch(&f, 0, branch) || avro_value_set_null(branch);
    return avro_value_set_branch(&f, 1, branch);
}

static int put_opt_int(avro_value_t *rec, size_t index, bool has, int32_t x)
{
    avro_value_t b;
    return put_branch(rec, index, has, &b) || (has && avro_value_set_int(&b, x));
}

static int put_opt_long(avro_value_t *rec, size_t index, bool has, int64_t x)
{
    avro_value_t b;
    return put_branch(rec, index, has, &b) || (has && avro_value_set_long(&b, x));
}

static int put_opt_double(avro_value_t *rec, size_t index, bool has, double x)
{
    avro_value_t b;
    return put_branch(rec, index, has, &b) || (has && avro_value_set_double(&b, x));
}

static int put_opt_string(avro_value_t *rec, size_t index, const char *s)
{
    avro_value_t b;
    return put_branch(rec, index, s != NULL, &b) || (s != NULL && avro_value_set_string(&b, s));
}

/* Serialises a filled value into a malloc'd buffer of exactly its size. */
static int events_write(avro_value_t *v, const char *what, char **out, size_t *len,
                        char *errstr, size_t errstr_size)
{
    avro_writer_t w = NULL; /* owned */
    char *buf = NULL;       /* owned until handed to *out */
    size_t size = 0;
    int ret = -1;

    if (avro_value_sizeof(v, &size) != 0 || size == 0 || size > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "cannot size the %s record: %s", what,
                   avro_strerror());
        goto out;
    }
    buf = malloc(size);
    if (buf == NULL) {
        errstr_fmt(errstr, errstr_size, "out of memory for a %zu-byte %s record", size, what);
        goto out;
    }
    w = avro_writer_memory(buf, (int64_t)size);
    if (w == NULL) {
        errstr_fmt(errstr, errstr_size, "cannot allocate an Avro writer: %s", avro_strerror());
        goto out;
    }
    if (avro_value_write(w, v) != 0 || avro_writer_tell(w) != (int64_t)size) {
        errstr_fmt(errstr, errstr_size, "cannot write the %s record: %s", what,
                   avro_strerror());
        goto out;
    }
    *out = buf;
    *len = size;
    buf = NULL; /* now owned by the caller */
    ret = 0;
out:
    if (w != NULL)
        avro_writer_free(w);
    free(buf);
    return ret;
}

/* "YYYY-MM" into buf (>= 32 bytes); -1 for a month that has no such form. */
static int events_month_text(int32_t month, char *buf, size_t size)
{
    if (month < 0 || month >= EVENTS_MONTH_LIMIT)
        return -1;
    policy_month_text(month, buf, size);
    return 0;
}

static int events_check_id(const char *what, const char *id, char *errstr, size_t errstr_size)
{
    size_t n;

    if (id == NULL || (n = strlen(id)) == 0 || n > ORDER_ID_MAX) {
        errstr_fmt(errstr, errstr_size, "%s must be 1 to %d bytes", what, ORDER_ID_MAX);
        return -1;
    }
    return 0;
}

/* Copies the event id out; a cut id would make two events one for dedupe. */
static int events_give_id(const char *id, char *event_id, size_t event_id_size, char *errstr,
                          size_t errstr_size)
{
    size_t n = strlen(id);

    if (event_id == NULL)
        return 0;
    if (n >= event_id_size) {
        errstr_fmt(errstr, errstr_size, "event_id buffer of %zu bytes cannot hold the "
                   "%zu-byte id %s", event_id_size, n, id);
        return -1;
    }
    memcpy(event_id, id, n + 1);
    return 0;
}

/* -------------------------------------------------------------------------
 * TierChange.
 */

static const char *events_comp_kind(policy_comp_kind_t k)
{
    switch (k) {
    case POLICY_COMP_LINEAR: return "linear";
    case POLICY_COMP_STEPS: return "steps";
    case POLICY_COMP_PROFILE: return "profile";
    }
    return NULL;
}

/* Everything a caller can get wrong, before any field is set. */
static int tc_check(const events_tier_change_t *tc, char *errstr, size_t errstr_size)
{
    const policy_decision_t *d;
    char m[32];
    uint32_t i;

    if (tc == NULL || tc->decision == NULL || tc->policy == NULL || tc->classification == NULL) {
        errstr_fmt(errstr, errstr_size,
                   "a tier change needs a decision, a policy and a classification");
        return -1;
    }
    if (events_check_id("customer_id", tc->customer_id, errstr, errstr_size) != 0)
        return -1;
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
        errstr_fmt(errstr, errstr_size, "decision has %" PRIu32 " months and %" PRIu32
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

static int tc_put_component(avro_value_t *arr, const policy_component_result_t *c)
{
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
                        const policy_month_t *window, size_t nwindow)
{
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
    if (c->grade >= POLICY_GRADE_A && c->grade <= POLICY_GRADE_D)
        grade[0] = (char)c->grade;
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

static int tc_put_arrays(avro_value_t *rec, const events_tier_change_t *tc)
{
    const policy_decision_t *d = tc->decision;
    avro_value_t arr, item;
    uint32_t i;

    if (avro_value_get_by_index(rec, TC_COMPONENTS, &arr, NULL) != 0)
        return -1;
    for (i = 0; d->has_score && i < d->score.ncomponents; i++)
        if (tc_put_component(&arr, &d->score.components[i]) != 0)
            return -1;

    if (avro_value_get_by_index(rec, TC_WINDOW, &arr, NULL) != 0)
        return -1;
    for (i = 0; i < d->nmonths; i++)
        if (tc_put_month(&arr, &d->months[i], tc->window, tc->nwindow) != 0)
            return -1;

    if (avro_value_get_by_index(rec, TC_UPGRADE_BLOCKED_BY, &arr, NULL) != 0)
        return -1;
    if ((d->upgrade_blocked & POLICY_BLOCKED_GRADE) &&
        (avro_value_append(&arr, &item, NULL) || avro_value_set_string(&item, "GRADE")))
        return -1;
    if ((d->upgrade_blocked & POLICY_BLOCKED_QTY) &&
        (avro_value_append(&arr, &item, NULL) || avro_value_set_string(&item, "QTY")))
        return -1;
    return 0;
}

int events_encode_tier_change(events_t *e, const events_tier_change_t *tc, char **out,
                              size_t *len, char *event_id, size_t event_id_size, char *errstr,
                              size_t errstr_size)
{
    const policy_decision_t *d;
    avro_value_t *rec;
    char id[EVENTS_ID_MAX], month[32];

    if (errstr != NULL && errstr_size > 0)
        errstr[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (e == NULL || out == NULL || len == NULL) {
        errstr_fmt(errstr, errstr_size, "events_encode_tier_change needs a codec and outputs");
        return -1;
    }
    if (tc_check(tc, errstr, errstr_size) != 0)
        return -1;
    d = tc->decision;
    snprintf(id, sizeof(id), "%s:tier:%" PRId64, tc->customer_id, tc->sequence);
    if (events_give_id(id, event_id, event_id_size, errstr, errstr_size) != 0)
        return -1;
    if (tc->month != -1)
        events_month_text(tc->month, month, sizeof(month));

    rec = &e->tc_value;
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
        errstr_fmt(errstr, errstr_size, "cannot fill the TierChange %s: %s", id,
                   avro_strerror());
        return -1;
    }
    return events_write(rec, "TierChange", out, len, errstr, errstr_size);
}

/* -------------------------------------------------------------------------
 * QuotaEvent.
 */

int events_encode_quota(events_t *e, const events_quota_t *q, char **out, size_t *len,
                        char *event_id, size_t event_id_size, char *errstr, size_t errstr_size)
{
    const policy_quota_limits_t *l;
    avro_value_t *rec;
    char id[EVENTS_ID_MAX], month[32];
    const char *kind;

    if (errstr != NULL && errstr_size > 0)
        errstr[0] = '\0';
    if (out != NULL)
        *out = NULL;
    if (e == NULL || out == NULL || len == NULL || q == NULL || q->limits == NULL ||
        q->policy == NULL) {
        errstr_fmt(errstr, errstr_size, "events_encode_quota needs a codec, an event with "
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
    if (events_month_text(q->month, month, sizeof(month)) != 0) {
        errstr_fmt(errstr, errstr_size, "month %" PRId32 " has no YYYY-MM form", q->month);
        return -1;
    }
    l = q->limits;
    kind = policy_quota_kind_name(q->kind);
    snprintf(id, sizeof(id), "%s:%s:%s", q->customer_id, month, kind);
    if (events_give_id(id, event_id, event_id_size, errstr, errstr_size) != 0)
        return -1;

    rec = &e->quota_value;
    if (avro_value_reset(rec) != 0 || put_string(rec, QE_EVENT_ID, id) ||
        put_string(rec, QE_CUSTOMER_ID, q->customer_id) || put_string(rec, QE_MONTH, month) ||
        put_int(rec, QE_TIER, q->tier) || put_enum(rec, QE_KIND, e->quota_index[q->kind]) ||
        put_long(rec, QE_CAP, l->cap) || put_long(rec, QE_EFFECTIVE_CAP, l->effective_cap) ||
        put_opt_long(rec, QE_HARD_CAP, l->hard_cap != POLICY_NO_HARD_CAP, l->hard_cap) ||
        put_long(rec, QE_CONSUMED, q->consumed) || put_string(rec, QE_ORDER_ID, q->order_id) ||
        put_long(rec, QE_PLACED_AT, q->placed_at_ms) ||
        put_string(rec, QE_POLICY_NAME, q->policy->name) ||
        put_string(rec, QE_POLICY_VERSION, q->policy->version)) {
        errstr_fmt(errstr, errstr_size, "cannot fill the QuotaEvent %s: %s", id,
                   avro_strerror());
        return -1;
    }
    return events_write(rec, "QuotaEvent", out, len, errstr, errstr_size);
}

/* -------------------------------------------------------------------------
 * CustomerProfile pre-scan: walk the encoding without allocating.
 *
 * Invariant on success: [p, end) holds exactly one CustomerProfile whose
 * customer_id length fits in the bytes present, whose enum indexes name
 * existing symbols, whose boolean is 0 or 1, whose union index is 0 or 1
 * and whose int and longs are canonical-length varints.
 */

static int profile_prescan(const events_t *e, const uint8_t *start, const uint8_t *payload,
                           size_t len, char *errstr, size_t errstr_size)
{
    avroscan_t s = {start, payload, payload + len, errstr, errstr_size, AVROSCAN_WIDER};
    int64_t v;
    int branch;

    if (avroscan_string(&s, "customer_id") != 0 ||
        avroscan_index(&s, "format", 32, e->nformats) < 0 ||
        avroscan_index(&s, "market", 32, e->nmarkets) < 0 ||
        avroscan_boolean(&s, "chain") != 0 ||
        avroscan_index(&s, "compliance_grade", 32, e->ngrades) < 0 ||
        avroscan_bytes(&s, "cooperation", 8) != 0 || avroscan_bytes(&s, "growth", 8) != 0)
        return -1;
    branch = avroscan_index(&s, "the tier_override union", 64, 2);
    if (branch < 0 || (branch == 1 && avroscan_varint(&s, "tier_override", 32, &v) != 0) ||
        avroscan_varint(&s, "updated_at", 64, &v) != 0)
        return -1;
    return avroscan_end(&s, "CustomerProfile");
}

/* -------------------------------------------------------------------------
 * CustomerProfile: copy out of the libavro value and judge it.
 */

static int get_field(avro_value_t *rec, size_t index, avro_value_t *f)
{
    return avro_value_get_by_index(rec, index, f, NULL);
}

/* A ratio the account manager typed: finite and in [0, 1]. */
static order_err_t profile_ratio(const char *what, double x, char *errstr, size_t errstr_size)
{
    if (!isfinite(x) || x < 0.0 || x > 1.0) {
        errstr_fmt(errstr, errstr_size, "%s is %g; it must be between 0.0 and 1.0", what, x);
        return ORDER_ERR_BAD_FIELD;
    }
    return ORDER_OK;
}

static order_err_t profile_copy(events_t *e, avro_value_t *rec, const void *key, size_t key_len,
                                char customer_id[ORDER_ID_MAX + 1], policy_profile_t *out,
                                int64_t *updated_at_ms, char *errstr, size_t errstr_size)
{
    policy_profile_t p;
    avro_value_t f, b;
    const char *str = NULL;
    size_t size = 0, n;
    int format, market, grade, chain, disc;
    int32_t override = 0;
    int64_t updated;
    order_err_t err;

    memset(&p, 0, sizeof(p));
    if (get_field(rec, CP_CUSTOMER_ID, &f) != 0 || avro_value_get_string(&f, &str, &size) != 0)
        goto libavro;
    n = size > 0 ? size - 1 : 0; /* libavro counts the NUL */
    /* The same rules as an order's customer_id: it becomes a Redis key. */
    if ((err = validate_id("customer_id", str, n, errstr, errstr_size)) != ORDER_OK)
        return err;
    memcpy(customer_id, str, n);
    customer_id[n] = '\0';
    if (key != NULL && key_len > 0 && !utf8_valid(key, key_len)) {
        errstr_fmt(errstr, errstr_size,
                   "record key (%zu bytes) is not valid UTF-8 at byte %zu; keys must be the "
                   "customer_id",
                   key_len, utf8_invalid_at(key, key_len) + 1);
        return ORDER_ERR_BAD_UTF8;
    }
    if (key != NULL && key_len > 0 && (key_len != n || memcmp(key, str, n) != 0)) {
        errstr_fmt(errstr, errstr_size, "record key (%zu bytes) is not the customer_id %s",
                   key_len, customer_id);
        return ORDER_ERR_KEY_MISMATCH;
    }

    if (get_field(rec, CP_FORMAT, &f) != 0 || avro_value_get_enum(&f, &format) != 0 ||
        get_field(rec, CP_MARKET, &f) != 0 || avro_value_get_enum(&f, &market) != 0 ||
        get_field(rec, CP_CHAIN, &f) != 0 || avro_value_get_boolean(&f, &chain) != 0 ||
        get_field(rec, CP_GRADE, &f) != 0 || avro_value_get_enum(&f, &grade) != 0 ||
        get_field(rec, CP_COOPERATION, &f) != 0 ||
        avro_value_get_double(&f, &p.cooperation) != 0 ||
        get_field(rec, CP_GROWTH, &f) != 0 || avro_value_get_double(&f, &p.growth) != 0 ||
        get_field(rec, CP_TIER_OVERRIDE, &f) != 0 ||
        avro_value_get_discriminant(&f, &disc) != 0 ||
        avro_value_get_current_branch(&f, &b) != 0 ||
        (disc == 1 && avro_value_get_int(&b, &override) != 0) ||
        get_field(rec, CP_UPDATED_AT, &f) != 0 || avro_value_get_long(&f, &updated) != 0)
        goto libavro;
    if (format < 0 || format >= e->nformats || market < 0 || market >= e->nmarkets ||
        grade < 0 || grade >= e->ngrades || disc < 0 || disc > 1) {
        errstr_fmt(errstr, errstr_size, "libavro read an enum or union index the pre-scan "
                   "refused");
        return ORDER_ERR_INTERNAL;
    }

    if ((err = profile_ratio("cooperation", p.cooperation, errstr, errstr_size)) != ORDER_OK ||
        (err = profile_ratio("growth", p.growth, errstr, errstr_size)) != ORDER_OK)
        return err;
    if (disc == 1 && (override < 1 || override > POLICY_TIERS_MAX)) {
        errstr_fmt(errstr, errstr_size,
                   "tier_override is %" PRId32 "; it must be null or 1 to %d", override,
                   POLICY_TIERS_MAX);
        return ORDER_ERR_BAD_FIELD;
    }

    p.format = e->formats[format];
    p.market = e->markets[market];
    p.chain = chain != 0;
    p.grade = e->grades[grade];
    p.has_override = disc == 1;
    p.tier_override = disc == 1 ? override : 0;
    *out = p;
    if (updated_at_ms != NULL)
        *updated_at_ms = updated;
    return ORDER_OK;

libavro:
    errstr_fmt(errstr, errstr_size, "libavro could not hand back a decoded field: %s",
               avro_strerror());
    return ORDER_ERR_INTERNAL;
}

order_err_t events_decode_profile(events_t *e, const void *buf, size_t len, const void *key,
                                  size_t key_len, char customer_id[ORDER_ID_MAX + 1],
                                  policy_profile_t *out, int64_t *updated_at_ms, char *errstr,
                                  size_t errstr_size)
{
    const uint8_t *start = buf;
    const uint8_t *payload = buf;
    size_t payload_len = len;
    int rc;

    if (errstr != NULL && errstr_size > 0)
        errstr[0] = '\0';
    if (e == NULL || customer_id == NULL || out == NULL) {
        errstr_fmt(errstr, errstr_size,
                   "events_decode_profile called without a codec, an id buffer or a profile");
        return ORDER_ERR_INTERNAL;
    }
    customer_id[0] = '\0';
    if (buf == NULL || len == 0) {
        errstr_fmt(errstr, errstr_size, "empty record value; a CustomerProfile is never empty "
                   "(tombstones are handled before decoding)");
        return ORDER_ERR_NOT_AVRO;
    }
    if (len > (size_t)INT64_MAX) {
        errstr_fmt(errstr, errstr_size, "record of %zu bytes is too large to decode", len);
        return ORDER_ERR_NOT_AVRO;
    }

    /*
     * Framing, as in decode.c: a plain profile starts with the length of
     * customer_id, so a leading 0x00 (an empty id, refused anyway) with room
     * for a schema id is first read as the Confluent wire format.  When
     * those bytes are not a profile, the whole value is tried as plain Avro,
     * so an empty customer_id is refused as EMPTY_ID, which a producer can
     * act on.  The schema id itself is not checked: no registry here.
     */
    if (start[0] == 0x00 && len >= EVENTS_CONFLUENT_HEADER) {
        payload += EVENTS_CONFLUENT_HEADER;
        payload_len -= EVENTS_CONFLUENT_HEADER;
    }
    rc = profile_prescan(e, start, payload, payload_len, errstr, errstr_size);
    if (rc != 0 && payload != start && profile_prescan(e, start, start, len, NULL, 0) == 0) {
        payload = start;
        payload_len = len;
        rc = 0;
        if (errstr != NULL && errstr_size > 0)
            errstr[0] = '\0';
    }
    if (rc != 0)
        return ORDER_ERR_NOT_AVRO;

    avro_reader_memory_set_source(e->reader, (const char *)payload, (int64_t)payload_len);
    rc = avro_value_read(e->reader, &e->profile_value);
    if (rc != 0) {
        /* After a clean pre-scan only a failed allocation should get here. */
        errstr_fmt(errstr, errstr_size, "libavro cannot read the CustomerProfile: %s",
                   avro_strerror());
        return rc == ENOMEM ? ORDER_ERR_INTERNAL : ORDER_ERR_NOT_AVRO;
    }
    return profile_copy(e, &e->profile_value, key, key_len, customer_id, out, updated_at_ms,
                        errstr, errstr_size);
}
