/*
 * show.c -- `tierctl show` and `tierctl explain`: read one
 * customer's state from Redis (read only: no WATCH, no write), judge it
 * with the policy engine exactly as the next review would, and print.
 *
 * The customer's partition is found by asking every partition's state
 * hash (one pipelined HGET each, which also reads the state): tierctl does
 * not guess the producer's partitioner.  A state is one value (state.h);
 * one that does not decode is reported, never shown as a new customer.
 */
#include "tierctl.h"

#include "customer.h"
#include "events.h"
#include "month.h"
#include "profile_text.h"
#include "state.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char tierctl_help_show[] =
    "usage: tierctl [-c FILE] show [--events N] CUSTOMER\n"
    "\n"
    "The customer's partition, tier, live score with each component, profile,\n"
    "classification, the window's months (qty, amount, orders, skus, tier in\n"
    "effect, grade, quota kinds fired), this month's quota use, the events still\n"
    "in the outbox, and the customer's last N events on the tier-changes and\n"
    "quota-events topics (default 5; 0 skips Kafka).\n";

const char tierctl_help_explain[] =
    "usage: tierctl [-c FILE] explain CUSTOMER\n"
    "\n"
    "Why the customer has its tier, in the policy's rules and thresholds, what\n"
    "the review of the open month would decide if the month closed now, and\n"
    "what would move the tier: the quantities an upgrade needs month by month,\n"
    "the review that would downgrade it and what prevents that.\n";

/* Everything tierctl knows about one customer. */
typedef struct view {
    const char *id;
    int32_t partition;
    store_meta_t meta;
    state_customer_t s; /* the stored state: decision state and months */
    customer_t c;       /* the decision view of s, and the profile */
    int32_t month;      /* last window month: the partition's current month */
    policy_month_t win[POLICY_WINDOW_MAX];
    uint32_t qmask[POLICY_WINDOW_MAX];
    long long outbox; /* entries waiting */
} view_t;

/* Reads the customer's state from every partition in one round trip (an
 * HGET of each state hash, with each meta) and decodes the one that has
 * it.  TC_OK, TC_NOT_FOUND, or TC_FAIL with err: Redis failed, the
 * partition holds another state format, or the state does not decode --
 * never taken for a new customer. */
static int find_state(tierctl_t *t, view_t *v, char *err, size_t errn) {
    int32_t n = tierctl_partitions(t->store, &t->conf, err, errn);
    store_tx_t tx = {0};
    redisReply **r = NULL;
    int rc = TC_FAIL;
    char why[512] = "";
    if (n < 0) return TC_FAIL;
    v->partition = -1;
    r = calloc((size_t)n * 2 + 1, sizeof(*r));
    for (int32_t p = 0; r && p < n; p++) {
        char key[512];
        store_key(t->store, t->conf.topic_orders, p, "c", key, sizeof(key));
        const char *argv[3] = {"HGET", key, v->id};
        if (tierctl_cmd(&tx, 3, argv) != 0 || tierctl_meta_cmd(&tx, t->store, &t->conf, p) != 0)
            break;
    }
    if (!r || tx.ncmds != (size_t)n * 2) {
        snprintf(err, errn, "out of memory");
        goto out;
    }
    if (tierctl_query(t->store, &tx, r, err, errn) != TC_OK) goto out;
    for (int32_t p = 0; p < n && v->partition < 0; p++) {
        store_meta_t m;
        if (store_meta_parse(r[2 * p + 1], &m) < 0) {
            snprintf(err, errn, "redis: unexpected reply to HMGET of a meta");
            goto out;
        }
        /* The customer's state there, and a meta that says no state. */
        m.orphan = r[2 * p]->type == REDIS_REPLY_STRING && !m.bad[0] && store_meta_empty(&m);
        /* A partition in another format might keep the customer elsewhere
         * than its state hash: "not found" is then not known. */
        if (!why[0] && tierctl_format_check(&t->conf, p, &m, why, sizeof(why)) != 0 &&
            r[2 * p]->type == REDIS_REPLY_STRING)
            break;
        if (r[2 * p]->type == REDIS_REPLY_STRING) {
            v->partition = p;
            v->meta = m;
        }
    }
    if (v->partition < 0) {
        if (why[0]) snprintf(err, errn, "%s", why);
        rc = why[0] ? TC_FAIL : TC_NOT_FOUND;
        goto out;
    }
    why[0] = '\0';
    const redisReply *sv = r[2 * v->partition];
    if (state_decode(&v->s, sv->str, sv->len, why, sizeof(why)) != 0) {
        char key[512];
        store_key(t->store, t->conf.topic_orders, v->partition, "c", key, sizeof(key));
        snprintf(err, errn,
                 "%s field %s: the customer's state does not decode (%s); `tierctl rebuild "
                 "--partition %d` rebuilds the partition from the topics",
                 key, v->id, why, (int)v->partition);
        goto out;
    }
    customer_load(&v->c, &v->s);
    rc = TC_OK;
out:
    for (size_t i = 0; r && i < tx.ncmds; i++)
        if (r[i]) freeReplyObject(r[i]);
    store_tx_free(&tx);
    free(r);
    return rc;
}

/* Profile and outbox length in one round trip. */
static int read_head(tierctl_t *t, view_t *v, char *err, size_t errn) {
    char pkey[512], obox[512];
    const char *hget[3] = {"HGET", pkey, v->id}, *xlen[2] = {"XLEN", obox};
    store_tx_t tx = {0};
    redisReply *r[2] = {NULL};
    int rc = TC_FAIL;
    store_key(t->store, t->conf.topic_orders, v->partition, "p", pkey, sizeof(pkey));
    store_key(t->store, t->conf.topic_orders, v->partition, "outbox", obox, sizeof(obox));
    if (tierctl_cmd(&tx, 3, hget) != 0 || tierctl_cmd(&tx, 2, xlen) != 0) {
        snprintf(err, errn, "out of memory");
        goto out;
    }
    if (tierctl_query(t->store, &tx, r, err, errn) != TC_OK) goto out;
    v->c.has_profile =
        r[0]->type == REDIS_REPLY_STRING &&
        profile_text_parse(&v->c.profile, &v->c.profile_updated_at, r[0]->str, r[0]->len) == 0;
    v->outbox = r[1]->integer;
    rc = TC_OK;
out:
    for (int i = 0; i < 2; i++)
        if (r[i]) freeReplyObject(r[i]);
    store_tx_free(&tx);
    return rc;
}

/* The W months ending with the partition's month, oldest first, as the
 * policy engine sees them (months the state lacks are zeros). */
static void fill_window(tierctl_t *t, view_t *v) {
    const int32_t W = t->policy.window;
    v->month = v->meta.month >= 0 ? v->meta.month : month_of_ms(&t->zone, store_now_ms());
    state_window(&v->s, v->month, W, v->win);
    for (int32_t i = 0; i < W; i++) {
        const state_month_t *m = state_month(&v->s, v->win[i].month, 0);
        v->qmask[i] = m ? m->qmask : 0;
    }
}

static int load_view(tierctl_t *t, const char *id, view_t *v) {
    char err[1024] = "";
    state_free(&v->s);
    memset(v, 0, sizeof(*v));
    state_init(&v->s);
    v->id = id;
    int rc = find_state(t, v, err, sizeof(err));
    if (rc == TC_NOT_FOUND) {
        fprintf(stderr, "tierctl: customer %s not found: no partition of %s knows it\n", id,
                t->conf.topic_orders);
        return TC_NOT_FOUND;
    }
    if (rc != TC_OK || read_head(t, v, err, sizeof(err)) != TC_OK) {
        fprintf(stderr, "tierctl: %s\n", err);
        return TC_FAIL;
    }
    fill_window(t, v);
    return TC_OK;
}

static const policy_profile_t *profile_of(const tierctl_t *t, const view_t *v) {
    return customer_profile(&v->c, &t->policy);
}

static const char *month_text(int32_t m, char *buf, size_t n) {
    return m < 0 ? "none" : policy_month_text(m, buf, n);
}

/* ------------------------------------------------------------------ */
/* show                                                                */

static void print_score(const tierctl_t *t, const view_t *v) {
    policy_score_t s;
    char err[256], b1[32], b2[32];
    printf("live score:  %s (stored after the customer's latest order)\n",
           tierctl_score_text(v->c.live_score_c, b1, sizeof(b1)));
    if (policy_score(&t->policy, profile_of(t, v), v->win, (size_t)t->policy.window, &s, err,
                     sizeof(err)) != 0)
        return;
    char b3[32];
    printf("score over the window ending %s: %s, target tier %s\n",
           month_text(v->month, b1, sizeof(b1)), tierctl_score_text(s.score_c, b2, sizeof(b2)),
           policy_tier_label(&t->policy, s.target_tier, b3, sizeof(b3)));
    for (uint32_t i = 0; i < s.ncomponents; i++) {
        const policy_component_result_t *c = &s.components[i];
        printf("  %-12s %12.2f  %6.2f of %6.2f points", c->source, c->value, c->points,
               c->max_points);
        if (c->kind == POLICY_COMP_LINEAR) printf("  (linear %g..%g)", c->lo, c->hi);
        if (c->kind == POLICY_COMP_STEPS && c->step >= 0) printf("  (step at %g)", c->step_at);
        if (c->kind == POLICY_COMP_PROFILE) printf("  (profile field)");
        printf("\n");
    }
}

static void print_profile(const tierctl_t *t, const view_t *v) {
    const policy_profile_t *p = profile_of(t, v);
    char code[POLICY_CODE_MAX];
    const char *fmt = policy_format_name(p->format);
    policy_classification(p, !v->c.st.evaluated, v->c.scale, code);
    printf("profile:     %s%s, %s, %s, grade %c, cooperation %.2f, growth %.2f",
           v->c.has_profile ? "" : "policy default: ", fmt ? fmt : "?",
           p->market == POLICY_MARKET_RURAL ? "RURAL" : "URBAN", p->chain ? "chain" : "no chain",
           (char)p->grade, p->cooperation, p->growth);
    if (p->has_override) printf(", tier_override %d", (int)p->tier_override);
    printf("\nclassification: %s\n", code);
}

static void print_window(const tierctl_t *t, const view_t *v) {
    char b[32];
    printf("window (%d months; partition month %s, last reviewed %s):\n", (int)t->policy.window,
           month_text(v->meta.month, b, 16), month_text(v->meta.reviewed, b + 16, 16));
    printf("  %-8s %10s %14s %7s %5s %5s %5s  %s\n", "month", "qty", "amount", "orders", "skus",
           "tier", "grade", "quota fired");
    for (int32_t i = 0; i < t->policy.window; i++) {
        const policy_month_t *m = &v->win[i];
        printf("  %-8s %10" PRId64 " %14" PRId64 " %7" PRId64 " %5" PRId64 " %5d %5c  ",
               policy_month_text(m->month, b, sizeof(b)), m->qty, m->amount, m->orders, m->skus,
               (int)m->tier_in_effect, m->grade ? (char)m->grade : '-');
        int any = 0;
        for (int k = 0; k < POLICY_QUOTA__COUNT; k++)
            if (v->qmask[i] & policy_quota_bit((policy_quota_kind_t)k))
                printf("%s%s", any++ ? "," : "", policy_quota_kind_name((policy_quota_kind_t)k));
        printf("%s\n", any ? "" : "-");
    }
}

static void print_quota(const tierctl_t *t, const view_t *v) {
    const int32_t W = t->policy.window;
    const policy_month_t *m = &v->win[W - 1];
    int32_t tier = m->tier_in_effect ? m->tier_in_effect : v->c.st.tier;
    policy_quota_limits_t lim;
    char b[32];
    if (!t->policy.has_caps || tier < 1) {
        printf("quota:       the policy has no caps\n");
        return;
    }
    policy_quota_limits(&t->policy, tier, profile_of(t, v)->format,
                        policy_holiday_month(&t->policy, m->month), &lim);
    printf("quota %s:  consumed %" PRId64 " of cap %" PRId64 " (tier %d",
           policy_month_text(m->month, b, sizeof(b)), m->qty, lim.cap, (int)tier);
    if (lim.effective_cap != lim.cap) printf(", holiday: effective %" PRId64, lim.effective_cap);
    printf("), %.1f %%; WARNING at %" PRId64,
           lim.effective_cap ? 100.0 * (double)m->qty / (double)lim.effective_cap : 0.0,
           lim.warning_at);
    if (lim.hard_cap != POLICY_NO_HARD_CAP) printf(", hard cap %" PRId64, lim.hard_cap);
    printf("\n");
}

static void print_head(const tierctl_t *t, const view_t *v) {
    char b[32], b2[32];
    const policy_state_t *st = &v->c.st;
    printf("customer:    %s (partition %d of %s)\n", v->id, (int)v->partition,
           t->conf.topic_orders);
    printf("policy:      %s version %s\n", t->policy.name, t->policy.version);
    printf("tier:        %s; %" PRId64 " tier changes so far; first order month %s; %s\n",
           policy_tier_label(&t->policy, st->tier, b, sizeof(b)), v->c.seq,
           month_text(st->tier ? st->first_month : -1, b2, sizeof(b2)),
           st->evaluated ? "evaluated" : "new customer (not evaluated yet)");
    if (st->has_override) printf("override:    tier %d (from the profile)\n", st->override_tier);
}

/* The customer's last events on one topic, read from the tail of every
 * partition (the producer's partitioner is not assumed). */
typedef struct tail {
    const char *id;
    events_t *events; /* reads the tier changes back */
    int tier_topic;
    struct ev {
        int64_t ts;
        size_t seq;     /* read order */
        char text[256]; /* time, and an event id of up to 159 bytes */
    } * evs;
    size_t n, cap;
} tail_t;

static int on_event(void *opaque, rd_kafka_message_t *m) {
    tail_t *t = opaque;
    const void *hv = NULL;
    size_t hl = 0;
    rd_kafka_headers_t *hdrs = NULL;
    char id[160] = "?", ts[32], err[128];
    if (!m->key || m->key_len != strlen(t->id) || memcmp(m->key, t->id, m->key_len) != 0) return 0;
    if (rd_kafka_message_headers(m, &hdrs) == 0 &&
        rd_kafka_header_get_last(hdrs, "tierd.event_id", &hv, &hl) == 0 && hl < sizeof(id))
        snprintf(id, sizeof(id), "%.*s", (int)hl, (const char *)hv);
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct ev *e = realloc(t->evs, cap * sizeof(*e));
        if (!e) return 1;
        t->evs = e;
        t->cap = cap;
    }
    struct ev *e = &t->evs[t->n];
    e->seq = t->n++;
    e->ts = rd_kafka_message_timestamp(m, NULL);
    tierctl_time_text(e->ts, ts, sizeof(ts));
    events_tier_change_info_t tc;
    if (t->tier_topic &&
        events_read_tier_change(t->events, m->payload, m->len, &tc, err, sizeof(err)) == 0)
        snprintf(e->text, sizeof(e->text), "%s  tier %d -> %d  %s%s%s", ts, (int)tc.previous_tier,
                 (int)tc.new_tier, tc.reason, tc.review_month[0] ? " review " : "",
                 tc.review_month);
    else
        snprintf(e->text, sizeof(e->text), "%s  quota %s", ts, id);
    return 0;
}

static int read_tail(rd_kafka_t *rk, const char *topic, tail_t *tl, volatile sig_atomic_t *stop,
                     char *err, size_t errn) {
    int32_t n = tierctl_topic_partitions(rk, topic, err, errn);
    for (int32_t p = 0; p < n; p++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000) != 0) {
            snprintf(err, errn, "kafka: watermarks of %s [%d]", topic, (int)p);
            return -1;
        }
        int64_t from = hi - 2000 > lo ? hi - 2000 : lo; /* the recent tail only */
        if (tierctl_read(rk, topic, p, from, hi, on_event, tl, stop, err, errn) != 0) return -1;
    }
    return n < 0 ? -1 : 0;
}

/* By timestamp; records of equal time keep the order they were read in
 * (offset order: the order tierd decided them). */
static int by_time(const void *a, const void *b) {
    const struct ev *x = a, *y = b;
    if (x->ts != y->ts) return x->ts < y->ts ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* The last `want` events of the customer on one topic. */
static int print_topic(tierctl_t *t, rd_kafka_t *rk, tail_t *tl, const char *topic, int want,
                       char *err, size_t errn) {
    tl->n = 0;
    if (read_tail(rk, topic, tl, t->stop, err, errn) != 0) return -1;
    qsort(tl->evs, tl->n, sizeof(*tl->evs), by_time);
    printf("last events on %s:%s\n", topic, tl->n ? "" : " none in the recent tail");
    for (size_t i = tl->n > (size_t)want ? tl->n - (size_t)want : 0; i < tl->n; i++)
        printf("  %s\n", tl->evs[i].text);
    return 0;
}

static void print_events(tierctl_t *t, const view_t *v, int want) {
    char err[512] = "";
    tail_t tl = {.id = v->id};
    rd_kafka_t *rk = tierctl_kafka(&t->conf, err, sizeof(err));
    tl.events = rk ? events_new(err, sizeof(err)) : NULL;
    int ok = tl.events != NULL;
    tl.tier_topic = 1;
    ok = ok && print_topic(t, rk, &tl, t->conf.topic_tier_changes, want, err, sizeof(err)) == 0;
    tl.tier_topic = 0;
    ok = ok && print_topic(t, rk, &tl, t->conf.topic_quota_events, want, err, sizeof(err)) == 0;
    if (!ok) fprintf(stderr, "tierctl: last events not read: %s\n", err);
    free(tl.evs);
    events_destroy(tl.events);
    if (rk) rd_kafka_destroy(rk);
}

/* Options of show/explain: [--events N] CUSTOMER. */
static int customer_args(int argc, char **argv, const char *help, int *events, const char **id) {
    static const struct option opts[] = {{"events", required_argument, NULL, 'e'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        if (opt == 'h') {
            fputs(help, stdout);
            return -1;
        }
        if (opt == 'e' && events && strspn(optarg, "0123456789") == strlen(optarg) && *optarg &&
            strlen(optarg) < 6) {
            *events = atoi(optarg);
            continue;
        }
        fputs(help, stderr);
        return TC_USAGE;
    }
    if (optind != argc - 1 || argv[optind][0] == '\0') {
        fputs(help, stderr);
        return TC_USAGE;
    }
    *id = argv[optind];
    return TC_OK;
}

/* What show and explain hold while they run: the policy (in t), the view
 * and a decision are large, so they live on the heap, with one owner. */
typedef struct session {
    tierctl_t t;
    view_t v;
    policy_decision_t next; /* explain: the open month's review, were it now */
} session_t;

/* Allocates the session into *out (NULL when memory ran out), opens
 * tierctl on it and reads the customer `id`.  TC_* as load_view. */
static int session_open(const char *conf_path, volatile sig_atomic_t *stop, const char *id,
                        session_t **out) {
    session_t *s = tierctl_calloc(sizeof(*s));
    int rc;
    *out = s;
    if (!s) return TC_FAIL;
    s->t.stop = stop;
    rc = tierctl_open(&s->t, conf_path, 1);
    return rc == TC_OK ? load_view(&s->t, id, &s->v) : rc;
}

/* Accepts NULL. */
static void session_close(session_t *s) {
    if (!s) return;
    state_free(&s->v.s);
    tierctl_close(&s->t);
    free(s);
}

int tierctl_show(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    session_t *s = NULL; /* owned */
    const char *id = NULL;
    int events = 5;
    int rc = customer_args(argc, argv, tierctl_help_show, &events, &id);
    if (rc != TC_OK) return rc < 0 ? TC_OK : rc;
    rc = session_open(conf_path, stop, id, &s);
    if (rc == TC_OK) {
        tierctl_t *t = &s->t;
        const view_t *v = &s->v;
        print_head(t, v);
        print_score(t, v);
        print_profile(t, v);
        print_window(t, v);
        print_quota(t, v);
        printf("outbox:      %lld entries of partition %d wait for Kafka\n", v->outbox,
               (int)v->partition);
        if (events > 0) print_events(t, v, events);
    }
    session_close(s);
    return rc;
}

/* ------------------------------------------------------------------ */
/* explain                                                             */

static void explain_new(const tierctl_t *t, const view_t *v) {
    const policy_t *p = &t->policy;
    int32_t eval = v->c.st.first_month + p->new_customer_months - 1; /* first review that scores */
    char b[32], b2[32];
    printf("why:  new customer since %s: placed on tier %d (NEW_CUSTOMER); reviews hold it\n"
           "      there until the customer has ordered for %d months (first month included)\n",
           month_text(v->c.st.first_month, b, sizeof(b)), (int)p->new_customer_tier,
           (int)p->new_customer_months);
    printf("next: the review of %s (on %s) places it on the tier its score reaches\n"
           "      (INITIAL_EVALUATION), then the grade's cap applies\n",
           month_text(eval, b, sizeof(b)),
           tierctl_time_text(month_start_ms(&t->zone, eval + 1), b2, sizeof(b2)));
}

static void print_checks(const tierctl_t *t, const policy_decision_t *d) {
    char b[32];
    if (d->nmonths == 0) return;
    printf("  %-8s %4s %5s %10s %8s %8s %10s  %s\n", "month", "tier", "grade", "qty", "floor",
           "cap", "upgrade_at", "judged");
    for (uint32_t i = 0; i < d->nmonths; i++) {
        const policy_month_check_t *m = &d->months[i];
        printf("  %-8s %4d %5c %10" PRId64 " %8" PRId64 " %8" PRId64 " %10" PRId64 "  %s%s%s\n",
               policy_month_text(m->month, b, sizeof(b)), (int)m->tier_in_effect, (char)m->grade,
               m->qty, m->floor, m->cap, m->upgrade_qty, m->grade_ok ? "grade ok" : "grade too low",
               m->qty_ok ? ", qty meets upgrade" : ", qty below upgrade",
               m->below_floor ? ", below floor" : "");
    }
    (void)t;
}

/* Hysteresis upgrade: every window month must pass; the last failing one
 * says how many more months are needed. */
static void next_upgrade(const tierctl_t *t, const view_t *v, const policy_decision_t *d,
                         int32_t target) {
    const policy_t *p = &t->policy;
    int32_t T = v->c.st.tier, fail = -1;
    char b[32], b2[32];
    for (uint32_t i = 0; i < d->nmonths; i++)
        if (!d->months[i].grade_ok || !d->months[i].qty_ok) fail = d->months[i].month;
    if (target <= T) {
        printf("upgrade: needs a score of %.2f for tier %d (now %.2f, target %d), and then\n",
               p->tiers[T].min_score_c / 100.0, (int)T + 1, d->score.score_c / 100.0, (int)target);
    }
    int32_t review = fail < 0 ? v->month : fail + p->window;
    printf("upgrade: %.0f %% of the cap of the tier in effect and grade %c or better in each\n"
           "         of %d consecutive months; the earliest review that can upgrade is %s\n"
           "         (on %s)",
           p->upgrade_cap_ratio_ppm / 10000.0, (char)p->upgrade_grade_at_least, (int)p->window,
           month_text(review, b, sizeof(b)),
           tierctl_time_text(month_start_ms(&t->zone, review + 1), b2, sizeof(b2)));
    if (fail >= 0)
        printf(": %s failed, so each month from %s to %s must pass", month_text(fail, b, 16),
               month_text(fail + 1, b + 16, 16), month_text(review, b2, sizeof(b2)));
    printf("\n");
}

static int32_t floor_tier(const policy_t *p, double qty_avg) {
    int32_t k = 1;
    for (int32_t i = 1; i <= p->ntiers; i++)
        if ((double)p->tiers[i - 1].floor <= qty_avg) k = i;
    return k;
}

static void next_downgrade(const tierctl_t *t, const view_t *v, const policy_decision_t *d) {
    const policy_t *p = &t->policy;
    int32_t met = -1;
    char b[32], b2[32];
    for (uint32_t i = 0; i < d->nmonths; i++)
        if (!d->months[i].below_floor) met = d->months[i].month;
    const policy_month_check_t *cur = &d->months[d->nmonths - 1];
    if (met < 0) {
        int32_t to = floor_tier(p, d->score.metrics.qty_avg);
        printf("downgrade: on %s (the review of %s) to tier %d, unless %s reaches the floor\n"
               "           %" PRId64 " (now %" PRId64 "): every window month is below its floor\n",
               tierctl_time_text(month_start_ms(&t->zone, v->month + 1), b2, sizeof(b2)),
               month_text(v->month, b, sizeof(b)), (int)to, month_text(v->month, b, sizeof(b)),
               cur->floor, cur->qty);
        if (to >= v->c.st.tier)
            printf("           (the window average %.1f still fits the tier: it stays)\n",
                   d->score.metrics.qty_avg);
        return;
    }
    printf("downgrade: not before the review of %s (on %s): %s met its floor; it takes\n"
           "           %d consecutive months below the floor\n",
           month_text(met + p->window, b, sizeof(b)),
           tierctl_time_text(month_start_ms(&t->zone, met + p->window + 1), b2, sizeof(b2)),
           month_text(met, b + 16, 16), (int)p->window);
}

static void next_moves(const tierctl_t *t, const view_t *v, const policy_decision_t *d) {
    const policy_t *p = &t->policy;
    int32_t T = v->c.st.tier, cap = policy_grade_cap(p, profile_of(t, v)->grade);
    if (T >= p->ntiers)
        printf("upgrade: none, tier %d is the top tier\n", (int)T);
    else if (cap <= T)
        printf("upgrade: none while the grade is %c (it caps the tier at %d)\n",
               (char)profile_of(t, v)->grade, (int)cap);
    else if (p->upgrade == POLICY_UPGRADE_HYSTERESIS)
        next_upgrade(t, v, d, d->score.target_tier);
    else if (p->upgrade == POLICY_UPGRADE_SCORE)
        printf("upgrade: %s the score reaches %.2f (now %.2f)\n",
               p->upgrade_on_order ? "at once, on the order with which" : "at a review, when",
               p->tiers[T].min_score_c / 100.0, d->score.score_c / 100.0);
    else
        printf("upgrade: the policy never upgrades\n");
    if (T <= 1)
        printf("downgrade: none, tier 1 is the lowest\n");
    else if (p->downgrade == POLICY_DOWNGRADE_FLOOR && p->has_caps)
        next_downgrade(t, v, d);
    else if (p->downgrade == POLICY_DOWNGRADE_SCORE)
        printf("downgrade: at a review, when the score falls below %.2f (now %.2f)\n",
               p->tiers[T - 1].min_score_c / 100.0, d->score.score_c / 100.0);
    else
        printf("downgrade: the policy never downgrades\n");
    if (profile_of(t, v)->grade >= POLICY_GRADE_C)
        printf("compliance: grade %c caps the tier at %d\n", (char)profile_of(t, v)->grade,
               (int)cap);
}

/* d: room for the decision (large: the caller's). */
static void explain_rules(const tierctl_t *t, const view_t *v, policy_decision_t *d) {
    policy_customer_t in = {.state = v->c.st,
                            .profile = *profile_of(t, v),
                            .window = v->win,
                            .nwindow = (size_t)t->policy.window};
    char err[256], b[32];
    if (policy_review(&t->policy, &in, v->month, d, err, sizeof(err)) != 0) {
        printf("(no review possible: %s)\n", err);
        return;
    }
    printf("if %s closed now: %s -> tier %d (%s)\n  %s\n", month_text(v->month, b, sizeof(b)),
           policy_rule_name(d->rule), (int)d->new_tier,
           d->changed ? policy_reason_name(d->reason) : "no change", d->explain);
    print_checks(t, d);
    if (v->c.st.evaluated && !v->c.st.has_override) next_moves(t, v, d);
}

int tierctl_explain(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    session_t *s = NULL; /* owned */
    const char *id = NULL;
    char b[32];
    int rc = customer_args(argc, argv, tierctl_help_explain, NULL, &id);
    if (rc != TC_OK) return rc < 0 ? TC_OK : rc;
    rc = session_open(conf_path, stop, id, &s);
    if (rc == TC_OK) {
        const tierctl_t *t = &s->t;
        const view_t *v = &s->v;
        print_head(t, v);
        if (v->c.st.has_override)
            printf("why:  the profile's override set tier %d (OVERRIDE); reviews continue "
                   "from there\n",
                   (int)v->c.st.override_tier);
        else if (!v->c.st.evaluated)
            explain_new(t, v);
        else
            printf("why:  tier %s, decided by the reviews up to %s\n",
                   policy_tier_label(&t->policy, v->c.st.tier, b, sizeof(b)),
                   month_text(v->meta.reviewed, b + 16, 16));
        explain_rules(t, v, &s->next);
    }
    session_close(s);
    return rc;
}
