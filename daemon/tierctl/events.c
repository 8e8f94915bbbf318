/*
 * events.c -- tierctl events: the records of tier-changes and
 * quota-events, decoded, one JSON object a line, for the teams downstream
 * of tierd.  See docs/tierctl.md, section "tierctl events".
 *
 * Decoding is schema resolution (codec.h, codec_resolved): the bytes are
 * read with a writer schema and printed as tierctl's reader schema.  With
 * a schema registry configured (schema_registry.url), a record framed
 * with a schema id (tierd frames every event then) is read with the
 * writer schema the registry gives for that id, fetched once per id.
 * Otherwise nothing in a record says which schema wrote it, so
 * the writer schema is ASSUMED to be the one this tierctl was built with
 * (schemas/<name>.avsc, embedded), and the reader schema is the same text.
 * What that buys: a tierd whose schema only appended symbols to an enum
 * (a newer reason or quota kind) still decodes, the symbol shown as "#N"
 * with a note on stderr; a writer with fields the reader lacks would be
 * skipped field by field once a writer schema other than the built-in one
 * is known.  What it cannot: bytes from a tierd whose fields differ from
 * the built-in schema do not decode (an error line, exit 1).
 *
 * Reads Kafka with tierd's own kafka.* configuration (tierctl_kafka), by
 * assignment: no group, no commits.  Never writes.
 */
#include "tierctl.h"

#include "codec.h"
#include "errstr.h"
#include "registry.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Generated from schemas/ at build time (tierdcore): the schemas tierd
 * writes its events with, so also the writer schema tierctl assumes. */
extern const char tierd_schema_tier_change[];
extern const char tierd_schema_quota_event[];

const char tierctl_help_events[] =
    "usage: tierctl events [-e] [--customer C] [--kind tier_change|quota] [--topic T]\n"
    "                      [--reason R] [--from TIME] [--to TIME]\n"
    "\n"
    "Reads tier-changes and quota-events (the configured topics) from their\n"
    "beginning and prints each event as one JSON object a line: \"topic\",\n"
    "\"partition\", \"offset\", \"header_event_id\" (the tierd.event_id header, null\n"
    "when absent), then every field of the event in schema order.  Enums are\n"
    "their symbols; a timestamp X_at is an ISO 8601 UTC string with milliseconds,\n"
    "followed by X_at_ms, the raw epoch milliseconds.  Without -e it follows the\n"
    "topics until interrupted.\n"
    "\n"
    "  -e, --exit          exit at the end of the topics (each partition's end\n"
    "                      when tierctl reaches it), like kcat -e\n"
    "  --customer C        only customer C's events\n"
    "  --kind K            tier_change (tier-changes) or quota (quota-events)\n"
    "  --topic T           the same, by topic name\n"
    "  --reason R          a tier change's reason or a quota event's kind, e.g.\n"
    "                      UPGRADE, INITIAL_EVALUATION, WARNING, EXCEEDED\n"
    "  --from TIME         events at or after TIME; --to TIME: before TIME.  The\n"
    "                      time is the event's own: decided_at of a tier change,\n"
    "                      placed_at of a quota event (never the Kafka timestamp)\n"
    "\n"
    "Decoded by Avro schema resolution: with schema_registry.url configured, a\n"
    "record framed with a schema id is read with the registry's schema for it;\n"
    "otherwise the writer schema is assumed to be the one this tierctl was built\n"
    "with.  An enum symbol it does not know prints as \"#N\" (N its index as\n"
    "written), with a note on stderr.\n"
    "A record that does not decode prints {\"topic\",\"partition\",\"offset\",\"error\"}.\n"
    "Exit status: 0 done (or interrupted while following), 1 Kafka failed or a\n"
    "record did not decode, 2 usage.\n";

enum { EV_TIER, EV_QUOTA, EV__COUNT };

typedef struct evtopic {
    const char *kind;   /* --kind: "tier_change", "quota" */
    const char *name;   /* the configured topic */
    const char *schema; /* the embedded schema text */
    const char *what;   /* the record's name, for messages */
    const char *reason; /* the field --reason matches */
    const char *when;   /* the field --from/--to match */
    int selected;
    codec_resolved_t codec; /* writer: the built-in schema; reader: the same */
    /* With a registry: a codec per writer schema id seen, reader built-in. */
    struct {
        int64_t id;
        codec_resolved_t codec;
    } ids[16];
    size_t nids;
    codec_resolved_t *cur; /* the codec of the record being shown */
    int32_t partitions;
    unsigned char *at_end; /* per partition: its end was reached (-e) */
} evtopic_t;

typedef struct evs {
    tierctl_t t;
    out_t out;
    evtopic_t tp[EV__COUNT];
    int exit_at_end;
    const char *customer, *reason, *kind, *topic;
    int64_t from, to; /* [from, to) in epoch ms */
    int32_t pending;  /* partitions whose end is not reached yet */
    int64_t errors;
    char noted[8][64]; /* enum symbols already noted on stderr */
    size_t nnoted;
    registry_t *reg; /* owned; NULL: no schema_registry.url */
} evs_t;

/* ------------------------------------------------------------------ */
/* Values                                                              */

/* "2026-03-01T08:00:00.250Z" */
static void out_time(out_t *o, int64_t ms) {
    char b[48];
    int64_t s = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    time_t t = (time_t)s;
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        out_s(o, "null");
        return;
    }
    size_t n = strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(b + n, sizeof(b) - n, ".%03dZ", (int)(ms - s * 1000));
    out_str(o, b, strlen(b));
}

/* The shortest decimal that reads back as d (42.7, not 42.700000000000003);
 * null for NaN and infinities, which JSON has no numbers for. */
static void out_double(out_t *o, double d) {
    char b[40];
    if (!isfinite(d)) {
        out_s(o, "null");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, sizeof(b), "%.*g", prec, d);
        if (strtod(b, NULL) == d) break;
    }
    out_s(o, b);
}

/* Says once per symbol that the reader's enum lacks it. */
static void note_symbol(evs_t *e, const evtopic_t *tp, const char *field, const char *shown) {
    char key[64];
    snprintf(key, sizeof(key), "%s.%s", field, shown);
    for (size_t i = 0; i < e->nnoted; i++)
        if (strcmp(e->noted[i], key) == 0) return;
    if (e->nnoted < sizeof(e->noted) / sizeof(e->noted[0]))
        snprintf(e->noted[e->nnoted++], sizeof(e->noted[0]), "%s", key);
    fprintf(stderr,
            "tierctl: events: note: %s %s is %s that this tierctl's %s schema does not know "
            "(written by a newer tierd?); printed as \"%s\"\n",
            tp->what, field, shown[0] == '#' ? "an enum index" : "a symbol", tp->what, shown);
}

/* An enum as its symbol; "#N" when no schema names index N. */
static const char *enum_text(evs_t *e, evtopic_t *tp, const avro_value_t *v, const char *field,
                             char *buf, size_t size) {
    const char *sym = NULL;
    int idx = 0;
    codec_symbol_t kind;
    if (codec_resolved_enum(tp->cur, v, &sym, &idx, &kind) != 0) return NULL;
    if (kind == CODEC_SYMBOL_UNKNOWN) {
        snprintf(buf, size, "#%d", idx);
        sym = buf;
    }
    if (kind != CODEC_SYMBOL_KNOWN) note_symbol(e, tp, field, sym);
    return sym;
}

/* A field whose name ends in "_at" and holds a long is a timestamp-millis:
 * tierd's schemas name every such field so (libavro keeps no logicalType). */
static int is_time(const char *name, const avro_value_t *v) {
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, "_at") == 0 && avro_value_get_type(v) == AVRO_INT64;
}

static int out_value(evs_t *e, evtopic_t *tp, const avro_value_t *v, const char *field, int depth);

static int out_fields(evs_t *e, evtopic_t *tp, const avro_value_t *v, int depth, int first) {
    size_t n = 0;
    if (avro_value_get_size(v, &n) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        avro_value_t f;
        const char *name = NULL;
        if (avro_value_get_by_index(v, i, &f, &name) != 0 || !name) return -1;
        if (!first || i > 0) out_raw(&e->out, ",", 1);
        out_str(&e->out, name, strlen(name));
        out_raw(&e->out, ":", 1);
        if (is_time(name, &f)) {
            int64_t ms = 0;
            if (avro_value_get_long(&f, &ms) != 0) return -1;
            out_time(&e->out, ms);
            out_raw(&e->out, ",", 1);
            out_raw(&e->out, "\"", 1);
            out_s(&e->out, name);
            out_s(&e->out, "_ms\":");
            out_i64(&e->out, ms);
        } else if (out_value(e, tp, &f, name, depth + 1) != 0) {
            return -1;
        }
    }
    return 0;
}

static int out_value(evs_t *e, evtopic_t *tp, const avro_value_t *v, const char *field, int depth) {
    out_t *o = &e->out;
    const char *s = NULL;
    const void *bytes = NULL;
    size_t n = 0;
    int32_t i32;
    int64_t i64;
    double d;
    float f;
    int b;
    avro_value_t c;
    char sym[24];

    if (depth > 32) return -1;
    switch (avro_value_get_type(v)) {
    case AVRO_STRING:
        if (avro_value_get_string(v, &s, &n) != 0) return -1;
        out_str(o, s, n ? n - 1 : 0); /* n counts the NUL */
        return 0;
    case AVRO_BYTES:
        if (avro_value_get_bytes(v, &bytes, &n) != 0) return -1;
        out_str(o, bytes, n);
        return 0;
    case AVRO_FIXED:
        if (avro_value_get_fixed(v, &bytes, &n) != 0) return -1;
        out_str(o, bytes, n);
        return 0;
    case AVRO_INT32:
        if (avro_value_get_int(v, &i32) != 0) return -1;
        out_i64(o, i32);
        return 0;
    case AVRO_INT64:
        if (avro_value_get_long(v, &i64) != 0) return -1;
        out_i64(o, i64);
        return 0;
    case AVRO_FLOAT:
        if (avro_value_get_float(v, &f) != 0) return -1;
        out_double(o, f);
        return 0;
    case AVRO_DOUBLE:
        if (avro_value_get_double(v, &d) != 0) return -1;
        out_double(o, d);
        return 0;
    case AVRO_BOOLEAN:
        if (avro_value_get_boolean(v, &b) != 0) return -1;
        out_s(o, b ? "true" : "false");
        return 0;
    case AVRO_NULL: out_s(o, "null"); return 0;
    case AVRO_ENUM:
        if (!(s = enum_text(e, tp, v, field, sym, sizeof(sym)))) return -1;
        out_str(o, s, strlen(s));
        return 0;
    case AVRO_UNION:
        if (avro_value_get_current_branch(v, &c) != 0) return -1;
        return out_value(e, tp, &c, field, depth + 1);
    case AVRO_RECORD:
        out_raw(o, "{", 1);
        if (out_fields(e, tp, v, depth, 1) != 0) return -1;
        out_raw(o, "}", 1);
        return 0;
    case AVRO_ARRAY:
        if (avro_value_get_size(v, &n) != 0) return -1;
        out_raw(o, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) out_raw(o, ",", 1);
            if (avro_value_get_by_index(v, i, &c, NULL) != 0 ||
                out_value(e, tp, &c, field, depth + 1) != 0)
                return -1;
        }
        out_raw(o, "]", 1);
        return 0;
    case AVRO_MAP:
        if (avro_value_get_size(v, &n) != 0) return -1;
        out_raw(o, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) out_raw(o, ",", 1);
            if (avro_value_get_by_index(v, i, &c, &s) != 0) return -1;
            out_str(o, s, strlen(s));
            out_raw(o, ":", 1);
            if (out_value(e, tp, &c, field, depth + 1) != 0) return -1;
        }
        out_raw(o, "}", 1);
        return 0;
    default: return -1;
    }
}

/* ------------------------------------------------------------------ */
/* Records                                                             */

static void out_head(out_t *o, const rd_kafka_message_t *m, const evtopic_t *tp) {
    out_s(o, "{\"topic\":");
    out_str(o, tp->name, strlen(tp->name));
    out_s(o, ",\"partition\":");
    out_i64(o, m->partition);
    out_s(o, ",\"offset\":");
    out_i64(o, m->offset);
}

/* The filters on the decoded event: 1 printed, 0 not selected. */
static int selected(evs_t *e, evtopic_t *tp) {
    avro_value_t *rec = &tp->cur->value, f;
    const char *s = NULL;
    size_t n = 0;
    int64_t when = 0;
    char sym[24];

    if (e->customer) {
        if (avro_value_get_by_name(rec, "customer_id", &f, NULL) != 0 ||
            avro_value_get_string(&f, &s, &n) != 0 || strcmp(s, e->customer) != 0)
            return 0;
    }
    if (e->reason) {
        if (avro_value_get_by_name(rec, tp->reason, &f, NULL) != 0 ||
            !(s = enum_text(e, tp, &f, tp->reason, sym, sizeof(sym))) || strcmp(s, e->reason) != 0)
            return 0;
    }
    if (e->from != INT64_MIN || e->to != INT64_MAX) {
        if (avro_value_get_by_name(rec, tp->when, &f, NULL) != 0 ||
            avro_value_get_long(&f, &when) != 0 || when < e->from || when >= e->to)
            return 0;
    }
    return 1;
}

/* The codec for a record framed with schema id `id`: built from the
 * registry's writer schema the first time the id is seen.  NULL with err
 * when the registry does not answer or know it, or it does not resolve. */
static codec_resolved_t *id_codec(evs_t *e, evtopic_t *tp, int64_t id, char *err, size_t errn) {
    char *json = NULL; /* owned */
    avro_schema_t w = NULL, r = NULL;
    codec_resolved_t *c;
    size_t i;

    for (i = 0; i < tp->nids; i++)
        if (tp->ids[i].id == id) return &tp->ids[i].codec;
    if (tp->nids == sizeof(tp->ids) / sizeof(tp->ids[0])) {
        errstr_fmt(err, errn, "more than %zu schema ids on %s", tp->nids, tp->name);
        return NULL;
    }
    if (registry_schema_by_id(e->reg, id, &json, err, errn) != REGISTRY_OK) return NULL;
    c = &tp->ids[tp->nids].codec;
    if (avro_schema_from_json_length(json, strlen(json), &w) != 0 ||
        avro_schema_from_json_length(tp->schema, strlen(tp->schema), &r) != 0) {
        errstr_fmt(err, errn, "writer schema id %" PRId64 " does not parse: %s", id,
                   avro_strerror());
        c = NULL;
    } else if (codec_resolved_new(c, w, r, tp->what, err, errn) != 0) {
        codec_resolved_free(c);
        c = NULL;
    } else {
        tp->ids[tp->nids++].id = id;
    }
    if (w) avro_schema_decref(w);
    if (r) avro_schema_decref(r);
    free(json);
    return c;
}

static void on_record(evs_t *e, evtopic_t *tp, rd_kafka_message_t *m) {
    out_t *o = &e->out;
    char err[512];
    const void *hv = NULL;
    size_t hl = 0;
    rd_kafka_headers_t *hdrs = NULL;
    const char *p = m->payload;
    size_t n = m->len;
    int64_t id = e->reg ? codec_confluent_id(p, n) : -1;

    tp->cur = &tp->codec;
    if (p && id >= 0) {
        tp->cur = id_codec(e, tp, id, err, sizeof(err));
        p += CODEC_CONFLUENT_HEADER;
        n -= CODEC_CONFLUENT_HEADER;
    }
    if (!p || !tp->cur || codec_resolved_read(tp->cur, p, n, err, sizeof(err)) != 0) {
        if (!m->payload) snprintf(err, sizeof(err), "no value (a tombstone)");
        /* With --customer, only the customer's records (tierd keys by it). */
        if (e->customer && (!m->key || m->key_len != strlen(e->customer) ||
                            memcmp(m->key, e->customer, m->key_len) != 0))
            return;
        out_head(o, m, tp);
        out_s(o, ",\"error\":");
        out_str(o, err, strlen(err));
        out_s(o, "}\n");
        e->errors++;
        return;
    }
    if (!selected(e, tp)) return;
    /* Room for the whole line as a rule, so a line that cannot be shown
     * is taken back rather than left half written. */
    if (o->n > sizeof(o->buf) / 2) out_flush(o);
    size_t mark = o->n;
    out_head(o, m, tp);
    out_s(o, ",\"header_event_id\":");
    if (rd_kafka_message_headers(m, &hdrs) == 0 &&
        rd_kafka_header_get_last(hdrs, "tierd.event_id", &hv, &hl) == 0 && hv)
        out_str(o, hv, hl);
    else
        out_s(o, "null");
    if (out_fields(e, tp, &tp->cur->value, 0, 0) == 0) {
        out_s(o, "}\n");
        return;
    }
    /* libavro failed on a value it had just read: not expected. */
    if (o->n >= mark)
        o->n = mark;
    else
        out_s(o, "\n"); /* a line longer than the buffer went out in pieces */
    snprintf(err, sizeof(err), "libavro cannot show the %s: %s", tp->what, avro_strerror());
    out_head(o, m, tp);
    out_s(o, ",\"error\":");
    out_str(o, err, strlen(err));
    out_s(o, "}\n");
    e->errors++;
}

/* ------------------------------------------------------------------ */
/* The consumer                                                        */

static int assign_all(evs_t *e, rd_kafka_t *rk, char *err, size_t errn) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (int k = 0; k < EV__COUNT; k++) {
        evtopic_t *tp = &e->tp[k];
        if (!tp->selected) continue;
        tp->partitions = tierctl_topic_partitions(rk, tp->name, err, errn);
        if (tp->partitions < 0) goto fail;
        tp->at_end = calloc((size_t)tp->partitions + 1, 1);
        if (!tp->at_end) {
            snprintf(err, errn, "out of memory");
            goto fail;
        }
        for (int32_t p = 0; p < tp->partitions; p++)
            rd_kafka_topic_partition_list_add(l, tp->name, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        e->pending += tp->partitions;
    }
    rd_kafka_resp_err_t rc = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (rc) {
        snprintf(err, errn, "kafka: assign: %s", rd_kafka_err2str(rc));
        return -1;
    }
    return 0;
fail:
    rd_kafka_topic_partition_list_destroy(l);
    return -1;
}

/* The selected topic m came from; NULL for another, or for an error that
 * names none (a consumer's error event has no topic). */
static evtopic_t *topic_of(evs_t *e, const rd_kafka_message_t *m) {
    if (!m->rkt) return NULL;
    const char *name = rd_kafka_topic_name(m->rkt);
    for (int k = 0; k < EV__COUNT; k++)
        if (e->tp[k].selected && strcmp(e->tp[k].name, name) == 0) return &e->tp[k];
    return NULL;
}

/* Out to the reader now, through stdio too (a pipe is fully buffered). */
static void flush_now(evs_t *e) {
    out_flush(&e->out);
    if (fflush(stdout) != 0) e->out.failed = 1;
}

/* 0 at the end (-e) or when stopped, -1 with err. */
static int consume(evs_t *e, rd_kafka_t *rk, char *err, size_t errn) {
    int idle = 0;
    if (e->exit_at_end && e->pending == 0) return 0;
    while (!*e->t.stop && !e->out.failed) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m) {
            flush_now(e); /* following: show what came, now */
            if (e->exit_at_end && ++idle >= 120) {
                snprintf(err, errn, "kafka: nothing read for 60 s before the end of the topics");
                return -1;
            }
            continue;
        }
        idle = 0;
        evtopic_t *tp = topic_of(e, m);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (tp && m->partition >= 0 && m->partition < tp->partitions &&
                !tp->at_end[m->partition]) {
                tp->at_end[m->partition] = 1;
                e->pending--;
            }
            rd_kafka_message_destroy(m);
            flush_now(e);
            if (e->exit_at_end && e->pending == 0) return 0;
            continue;
        }
        if (m->err) {
            snprintf(err, errn, "kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            return -1;
        }
        if (tp) on_record(e, tp, m);
        rd_kafka_message_destroy(m);
    }
    return 0;
}

/* ------------------------------------------------------------------ */

static int events_args(int argc, char **argv, evs_t *e) {
    static const struct option lo[] = {{"exit", no_argument, NULL, 'e'},
                                       {"customer", required_argument, NULL, 'C'},
                                       {"kind", required_argument, NULL, 'k'},
                                       {"topic", required_argument, NULL, 'T'},
                                       {"reason", required_argument, NULL, 'r'},
                                       {"from", required_argument, NULL, 'f'},
                                       {"to", required_argument, NULL, 't'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    char err[512];
    int opt;
    e->from = INT64_MIN;
    e->to = INT64_MAX;
    while ((opt = getopt_long(argc, argv, "+eh", lo, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(tierctl_help_events, stdout); return -1;
        case 'e': e->exit_at_end = 1; break;
        case 'C':
            if (!*optarg) goto bad;
            e->customer = optarg;
            break;
        case 'k':
            if (strcmp(optarg, "tier_change") != 0 && strcmp(optarg, "quota") != 0) goto bad;
            e->kind = optarg;
            break;
        case 'T':
            if (!*optarg) goto bad;
            e->topic = optarg;
            break;
        case 'r':
            if (!*optarg) goto bad;
            e->reason = optarg;
            break;
        case 'f':
        case 't':
            if (tierctl_parse_time(optarg, opt == 'f' ? &e->from : &e->to, err, sizeof(err)) != 0) {
                fprintf(stderr, "tierctl: events: %s\n", err);
                return TC_USAGE;
            }
            break;
        default: goto bad;
        }
    }
    if (optind == argc) return TC_OK;
bad:
    fputs(tierctl_help_events, stderr);
    return TC_USAGE;
}

/* Which topics: --kind and --topic must agree when both are given. */
static int pick_topics(evs_t *e) {
    const config_t *c = &e->t.conf;
    evtopic_t *tc = &e->tp[EV_TIER], *qe = &e->tp[EV_QUOTA];
    *tc = (evtopic_t){"tier_change", c->topic_tier_changes, tierd_schema_tier_change, "TierChange",
                      "reason",      "decided_at"};
    *qe = (evtopic_t){
        "quota",    c->topic_quota_events, tierd_schema_quota_event, "QuotaEvent", "kind",
        "placed_at"};
    for (int k = 0; k < EV__COUNT; k++) {
        evtopic_t *tp = &e->tp[k];
        tp->selected = (!e->kind || strcmp(e->kind, tp->kind) == 0) &&
                       (!e->topic || strcmp(e->topic, tp->name) == 0);
    }
    if (tc->selected || qe->selected) return TC_OK;
    if (e->topic && !(strcmp(e->topic, tc->name) == 0 || strcmp(e->topic, qe->name) == 0))
        fprintf(stderr, "tierctl: events: --topic %s is neither %s nor %s\n", e->topic, tc->name,
                qe->name);
    else
        fprintf(stderr, "tierctl: events: --kind %s and --topic %s select nothing\n", e->kind,
                e->topic);
    return TC_USAGE;
}

static int build_codecs(evs_t *e, char *err, size_t errn) {
    for (int k = 0; k < EV__COUNT; k++) {
        evtopic_t *tp = &e->tp[k];
        avro_schema_t w = NULL, r = NULL;
        int rc = -1;
        if (!tp->selected) continue;
        /* Two parses of one text: the writer as assumed, the reader as built. */
        if (avro_schema_from_json_length(tp->schema, strlen(tp->schema), &w) != 0 ||
            avro_schema_from_json_length(tp->schema, strlen(tp->schema), &r) != 0)
            errstr_fmt(err, errn, "cannot parse the embedded %s schema: %s", tp->what,
                       avro_strerror());
        else
            rc = codec_resolved_new(&tp->codec, w, r, tp->what, err, errn);
        if (w) avro_schema_decref(w);
        if (r) avro_schema_decref(r);
        if (rc != 0) return -1;
    }
    return 0;
}

int tierctl_events(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    evs_t *e = tierctl_calloc(sizeof(*e)); /* owned; the policy, the buffer: large */
    rd_kafka_t *rk = NULL;
    char err[1024] = "";
    int rc;
    if (!e) return TC_FAIL;
    rc = events_args(argc, argv, e);
    if (rc != TC_OK) {
        rc = rc < 0 ? TC_OK : rc; /* -1: --help */
        goto out;
    }
    e->t.stop = stop;
    rc = tierctl_open(&e->t, conf_path, 0);
    if (rc != TC_OK) goto out;
    rc = pick_topics(e);
    if (rc != TC_OK) goto out;
    rc = TC_FAIL;
    if (build_codecs(e, err, sizeof(err)) != 0) goto fail;
    if (e->t.conf.registry_url) {
        registry_conf_t rconf = {e->t.conf.registry_url, e->t.conf.registry_user,
                                 e->t.conf.registry_password, e->t.conf.registry_ca_file,
                                 (long)e->t.conf.registry_timeout_ms};
        if (!(e->reg = registry_new(&rconf, err, sizeof(err)))) goto fail;
    }
    if (!(rk = tierctl_kafka(&e->t.conf, err, sizeof(err)))) goto fail;
    if (assign_all(e, rk, err, sizeof(err)) != 0 || consume(e, rk, err, sizeof(err)) != 0)
        goto fail;
    out_flush(&e->out);
    if (fflush(stdout) != 0) e->out.failed = 1;
    if (e->out.failed) {
        fprintf(stderr, "tierctl: events: writing the output failed\n");
    } else if (e->exit_at_end && *stop) {
        fprintf(stderr, "tierctl: events: interrupted before the end of the topics\n");
    } else if (e->errors > 0) {
        fprintf(stderr, "tierctl: events: %" PRId64 " records did not decode (error lines)\n",
                e->errors);
    } else {
        rc = TC_OK;
    }
    goto out;
fail:
    out_flush(&e->out);
    fflush(stdout);
    fprintf(stderr, "tierctl: events: %s\n", err);
out:
    if (rk) {
        rd_kafka_assign(rk, NULL);
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    for (int k = 0; k < EV__COUNT; k++) {
        codec_resolved_free(&e->tp[k].codec);
        for (size_t i = 0; i < e->tp[k].nids; i++) codec_resolved_free(&e->tp[k].ids[i].codec);
        free(e->tp[k].at_end);
    }
    registry_destroy(e->reg);
    tierctl_close(&e->t);
    free(e);
    return rc;
}
