/*
 * replay.c -- `tierctl backtest` and `tierctl rebuild`: orders and
 * profiles read back from Kafka and pushed through tierd's own apply,
 * review and profile code, partition by partition.
 *
 * Order of replay.  tierd joins profiles in processing time; a replay can
 * only approximate that with the records' Kafka timestamps: within a
 * partition, a profile is applied before the first order whose timestamp
 * is later than its own (ties: the profile first, as tierd joins the
 * profiles that exist before it applies orders).  The clock the pipeline
 * sees (the FUTURE rule, the time of decision) is the timestamp of the
 * batch's last record, so a replay decides as tierd did when it kept up.
 *
 * A lane is one keyspace fed by the replay.  backtest runs two lanes over
 * the same records, both in scratch keyspaces (key prefix
 * "tierctl-backtest-<pid>-<ms>-{configured,candidate}", deleted at the
 * end; hash tags {tierd-bt.<pid>-<ms>-<lane>.<P>}, so that on a cluster a
 * scratch partition has a slot of its own, never the live partition's,
 * and each of its transactions stays on one node): the configured policy
 * and the candidate, so the matrix compares
 * like with like.  rebuild runs one lane in the live keyspace, after
 * claiming the partition (epoch bump, lease) and clearing what is left of
 * it.  Neither publishes anything: dead letters are counted, decided events
 * are counted and dropped from the lane's outbox.
 */
#include "tierctl.h"

#include "apply.h"
#include "decode.h"
#include "events.h"
#include "month.h"
#include "policyconf.h"
#include "profiles.h"
#include "review.h"
#include "state.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char tierctl_help_backtest[] =
    "usage: tierctl [-c FILE] backtest --policy FILE [--from TIME] [--to TIME] [--keep]\n"
    "\n"
    "Replays the orders (and profiles) of every partition from FROM to TO into\n"
    "two scratch keyspaces, one under the configured policy and one under the\n"
    "candidate FILE, and prints the from/to tier matrix (configured tier per row,\n"
    "candidate tier per column), tier changes by reason and quota events by kind.\n"
    "Months that end by TO are reviewed.  Publishes nothing and touches no live\n"
    "key; the scratch keys are deleted unless --keep.  FROM defaults to the\n"
    "start of the topic, TO to now.  Progress goes to stderr.\n";

const char tierctl_help_rebuild[] =
    "usage: tierctl [-c FILE] rebuild (--partition N | --all) [--from TIME]\n"
    "\n"
    "Rebuilds the Redis state of orders partition N (or of every partition)\n"
    "from Kafka: clears what is left of it, replays its profiles and its orders\n"
    "(from FROM, default the start of the topic) in timestamp order through\n"
    "tierd's own code, and leaves the offsets at the end, where tierd resumes.\n"
    "Decided events are not published again.  Refuses, with exit status 4 and\n"
    "before touching anything, while a live tierd holds a partition's lease.\n";

/* ------------------------------------------------------------------ */
/* Records and lanes                                                   */

typedef struct rec {
    int64_t offset, ts;
    char *key, *val; /* owned */
    size_t klen, vlen;
} rec_t;

typedef struct recs {
    rec_t *v;
    size_t n, cap;
} recs_t;

static void recs_clear(recs_t *r) {
    for (size_t i = 0; i < r->n; i++) free(r->v[i].key), free(r->v[i].val);
    r->n = 0;
}

static void recs_free(recs_t *r) {
    recs_clear(r);
    free(r->v);
    memset(r, 0, sizeof(*r));
}

static char *dup_bytes(const void *p, size_t n) {
    char *c = malloc(n + 1);
    if (c && n) memcpy(c, p, n);
    if (c) c[n] = '\0';
    return c;
}

/* Copies a Kafka record into r; -1 out of memory. */
static int recs_push(recs_t *r, const rd_kafka_message_t *m) {
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        rec_t *v = realloc(r->v, cap * sizeof(*v));
        if (!v) return -1;
        r->v = v;
        r->cap = cap;
    }
    rec_t *e = &r->v[r->n];
    e->offset = m->offset;
    e->ts = rd_kafka_message_timestamp(m, NULL);
    e->klen = m->key ? m->key_len : 0;
    e->vlen = m->len;
    e->key = dup_bytes(m->key, e->klen);
    e->val = dup_bytes(m->payload, e->vlen);
    if (!e->key || !e->val) {
        free(e->key), free(e->val);
        return -1;
    }
    r->n++;
    return 0;
}

typedef struct tally {
    int64_t tier_by_reason[POLICY_REASON__COUNT];
    int64_t quota_by_kind[POLICY_QUOTA__COUNT];
    int64_t dead;
} tally_t;

typedef struct lane {
    const char *label;
    config_t conf; /* shallow copy of the tool's, own key_prefix; never freed */
    const policy_t *policy;
    store_t *store;   /* owned */
    decoder_t *dec;   /* owned */
    events_t *events; /* owned */
    apply_ctx_t apply;
    apply_part_t part;
    tally_t tally;
} lane_t;

static int dead_sink(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                     char *errstr, size_t errstr_size) {
    (void)p, (void)dead, (void)errstr, (void)errstr_size;
    ((lane_t *)opaque)->tally.dead += (int64_t)n; /* counted, never published */
    return 0;
}

static void lane_close(lane_t *l) {
    apply_free(&l->apply);
    events_destroy(l->events);
    decode_destroy(l->dec);
    store_destroy(l->store);
    l->events = NULL, l->dec = NULL, l->store = NULL;
}

/* owner: written into meta by the lane's commits.  tag: the hash tag's
 * head for scratch keys (store_set_tag), NULL for the live keys. */
static int lane_open(lane_t *l, const tierctl_t *t, const policy_t *p, char *prefix,
                     const char *tag, const char *owner, char *err, size_t errn) {
    l->conf = t->conf;
    l->conf.key_prefix = prefix;
    l->policy = p;
    l->store = store_new(&l->conf, err, errn);
    if (l->store && tag && store_set_tag(l->store, tag) != 0) {
        snprintf(err, errn, "scratch hash tag %s refused", tag);
        return -1;
    }
    if (!l->store || store_connect(l->store, err, errn) != STORE_OK) return -1;
    l->dec = decode_new(err, errn);
    l->events = l->dec ? events_new(err, errn) : NULL;
    if (!l->events) return -1;
    apply_init(&l->apply);
    apply_ctx_t *a = &l->apply;
    a->store = l->store;
    a->decoder = l->dec;
    snprintf(a->rules.currency, sizeof(a->rules.currency), "%s", t->conf.currency);
    a->rules.max_future_skew_ms = t->conf.max_future_skew_s * 1000;
    a->rules.min_placed_at_ms = t->conf.min_placed_at_s * 1000;
    a->window = p->window;
    a->zone = t->zone;
    a->owner = owner;
    a->policy = p;
    a->events = l->events;
    a->tier_topic = t->conf.topic_tier_changes;
    a->quota_topic = t->conf.topic_quota_events;
    a->profile_topic = t->conf.topic_profiles;
    a->dead = dead_sink;
    a->dead_opaque = l;
    a->idle_close_after_ms = t->conf.idle_close_after_s * 1000;
    return 0;
}

/* ------------------------------------------------------------------ */
/* The lane's outbox: counted, then dropped                            */

static void count_event(lane_t *l, const redisReply *t, const redisReply *i, const redisReply *v) {
    char err[128];
    events_tier_change_info_t tc;
    if (strcmp(t->str, l->conf.topic_quota_events) == 0) {
        const char *kind = strrchr(i->str, ':');
        for (int k = 0; kind && k < POLICY_QUOTA__COUNT; k++)
            if (strcmp(kind + 1, policy_quota_kind_name((policy_quota_kind_t)k)) == 0)
                l->tally.quota_by_kind[k]++;
        return;
    }
    /* The lane's encoder reads its own events back (not while encoding). */
    if (events_read_tier_change(l->events, v->str, v->len, &tc, err, sizeof(err)) != 0) return;
    for (int r = 1; r < POLICY_REASON__COUNT; r++)
        if (strcmp(tc.reason, policy_reason_name((policy_reason_t)r)) == 0)
            l->tally.tier_by_reason[r]++;
}

static int drain_outbox(lane_t *l, char *err, size_t errn) {
    char key[512];
    store_tx_t tx = {0};
    redisReply *r[2] = {NULL, NULL};
    store_key(l->store, l->conf.topic_orders, l->part.partition, "outbox", key, sizeof(key));
    const char *range[4] = {"XRANGE", key, "-", "+"}, *del[2] = {"DEL", key};
    int rc = tierctl_cmd(&tx, 4, range) || tierctl_cmd(&tx, 2, del)
                 ? TC_FAIL
                 : tierctl_query(l->store, &tx, r, err, errn);
    store_tx_free(&tx);
    if (rc != TC_OK) return -1;
    /* An entry holds one transaction's events: t, k, i, v per event. */
    for (size_t e = 0; e < r[0]->elements; e++) {
        const redisReply *f = r[0]->element[e]->element[1];
        for (size_t j = 0; j + 7 < f->elements; j += 8)
            count_event(l, f->element[j + 1], f->element[j + 5], f->element[j + 7]);
    }
    freeReplyObject(r[0]);
    freeReplyObject(r[1]);
    return 0;
}

/* ------------------------------------------------------------------ */
/* One partition's replay                                              */

typedef struct replay {
    lane_t *lanes[2];
    int nlanes;
    int32_t partition;
    recs_t profs;          /* the partition's profiles, oldest first */
    size_t pnext;          /* next profile to apply */
    recs_t batch;          /* orders waiting */
    int64_t done, total;   /* orders read, orders in the range */
    int64_t last_progress; /* wall ms of the last progress line */
    const char *what;      /* "backtest" or "rebuild" */
    volatile sig_atomic_t *stop;
    int lease;        /* rebuild: renew lane 0's lease on the partition */
    int64_t lease_at; /* wall ms of the last renewal */
    char err[1024];
    int failed;
} replay_t;

static int64_t batch_now(const recs_t *r) {
    int64_t ts = r->n ? r->v[r->n - 1].ts : -1;
    return ts > 0 ? ts : store_now_ms();
}

static apply_msg_t *to_msgs(const recs_t *r, size_t from, size_t n) {
    apply_msg_t *m = calloc(n ? n : 1, sizeof(*m));
    for (size_t i = 0; m && i < n; i++) {
        const rec_t *e = &r->v[from + i];
        m[i].offset = e->offset;
        m[i].key = e->key;
        m[i].key_len = e->klen;
        m[i].value = e->val;
        m[i].value_len = e->vlen;
    }
    return m;
}

static const char *apply_why(int rc) {
    switch (rc) {
    case APPLY_FENCED: return "another owner took the partition (a tierd claimed it)";
    case APPLY_REWIND: return "Redis went back in time under the replay";
    default: return "Redis failed";
    }
}

/* A rebuild holds the partition's lease while it replays (store_lease). */
static int renew_lease(replay_t *x) {
    lane_t *l = x->lanes[0];
    int64_t now = store_now_ms();
    if (!x->lease || now - x->lease_at < STORE_LEASE_RENEW_MS) return 0;
    x->lease_at = now;
    if (store_lease(l->store, l->conf.topic_orders, x->partition, l->part.meta.epoch,
                    now + STORE_LEASE_MS, NULL, x->err, sizeof(x->err)) == STORE_OK)
        return 0;
    x->failed = 1;
    return -1;
}

/* Feeds msgs to every lane; profiles when `profiles`. */
static int feed(replay_t *x, apply_msg_t *msgs, size_t n, int profiles, int64_t now) {
    if (renew_lease(x) != 0) return -1;
    for (int i = 0; i < x->nlanes && !x->failed; i++) {
        lane_t *l = x->lanes[i];
        char why[512] = "";
        int rc = profiles ? profiles_apply(&l->apply, &l->part, msgs, n, why, sizeof(why))
                          : apply_batch(&l->apply, &l->part, msgs, n, now, why, sizeof(why));
        if (rc != APPLY_OK) {
            snprintf(x->err, sizeof(x->err), "%s [%d]: %s: %s", l->conf.topic_orders,
                     (int)x->partition, apply_why(rc), why);
            x->failed = 1;
        } else if (drain_outbox(l, x->err, sizeof(x->err)) != 0) {
            x->failed = 1;
        }
    }
    return x->failed ? -1 : 0;
}

/* Profiles whose timestamp is at or before `ts` (all when ts < 0). */
static int feed_profiles(replay_t *x, int64_t ts) {
    size_t from = x->pnext, n = 0;
    while (from + n < x->profs.n && (ts < 0 || x->profs.v[from + n].ts <= ts)) n++;
    if (n == 0) return 0;
    apply_msg_t *m = to_msgs(&x->profs, from, n);
    int64_t now = x->profs.v[from + n - 1].ts > 0 ? x->profs.v[from + n - 1].ts : store_now_ms();
    int rc = m ? feed(x, m, n, 1, now) : -1;
    free(m);
    x->pnext += n;
    return rc;
}

static void progress(replay_t *x, int force) {
    int64_t now = store_now_ms();
    if (!force && now - x->last_progress < 2000) return;
    x->last_progress = now;
    fprintf(stderr, "tierctl: %s: partition %d: %" PRId64 " of %" PRId64 " orders (%.0f %%)\n",
            x->what, (int)x->partition, x->done, x->total,
            x->total ? 100.0 * (double)x->done / (double)x->total : 100.0);
}

static int flush_orders(replay_t *x) {
    if (x->batch.n == 0) return 0;
    apply_msg_t *m = to_msgs(&x->batch, 0, x->batch.n);
    int rc = m ? feed(x, m, x->batch.n, 0, batch_now(&x->batch)) : -1;
    if (!m) snprintf(x->err, sizeof(x->err), "out of memory");
    free(m);
    x->done += (int64_t)x->batch.n;
    recs_clear(&x->batch);
    progress(x, 0);
    return rc;
}

static int on_profile(void *opaque, rd_kafka_message_t *m) {
    replay_t *x = opaque;
    if (recs_push(&x->profs, m) == 0) return 0;
    snprintf(x->err, sizeof(x->err), "out of memory");
    return x->failed = 1;
}

static int on_order(void *opaque, rd_kafka_message_t *m) {
    replay_t *x = opaque;
    int64_t ts = rd_kafka_message_timestamp(m, NULL);
    /* A profile older than this order goes in first: cut the batch. */
    if (x->pnext < x->profs.n && x->profs.v[x->pnext].ts <= ts &&
        (flush_orders(x) != 0 || feed_profiles(x, ts) != 0))
        return 1;
    if (recs_push(&x->batch, m) != 0) {
        snprintf(x->err, sizeof(x->err), "out of memory");
        return x->failed = 1;
    }
    if (x->batch.n >= 5000 && flush_orders(x) != 0) return 1;
    return 0;
}

/* The range of one topic partition to replay: [from, to). */
typedef struct range {
    int64_t from, to;
} range_t;

static int replay_partition(replay_t *x, rd_kafka_t *rk, const config_t *c, range_t orders,
                            range_t profiles) {
    x->total = orders.to - orders.from;
    x->last_progress = store_now_ms();
    if (tierctl_read(rk, c->topic_profiles, x->partition, profiles.from, profiles.to, on_profile, x,
                     x->stop, x->err, sizeof(x->err)) != 0 ||
        x->failed)
        return -1;
    if (tierctl_read(rk, c->topic_orders, x->partition, orders.from, orders.to, on_order, x,
                     x->stop, x->err, sizeof(x->err)) != 0 ||
        x->failed)
        return -1;
    if (flush_orders(x) != 0 || feed_profiles(x, -1) != 0) return -1;
    progress(x, 1);
    return 0;
}

static void replay_reset(replay_t *x, int32_t partition) {
    recs_clear(&x->profs);
    recs_clear(&x->batch);
    x->pnext = 0;
    x->done = 0;
    x->partition = partition;
    for (int i = 0; i < x->nlanes; i++) {
        lane_t *l = x->lanes[i];
        memset(&l->part, 0, sizeof(l->part));
        l->part.topic = l->conf.topic_orders;
        l->part.partition = partition;
        l->part.meta.offset = -1;
        l->part.meta.month = -1;
        l->part.meta.reviewed = -1;
        l->part.meta.poffset = -1;
        l->part.meta.rv_month = -1; /* no paged review under way */
    }
}

/* ------------------------------------------------------------------ */
/* Option parsing shared by both commands                              */

typedef struct opts {
    const char *policy;
    int64_t from, to;
    int keep, all;
    int32_t partition;
} opts_t;

static int parse_opts(int argc, char **argv, const char *help, opts_t *o) {
    static const struct option lo[] = {{"policy", required_argument, NULL, 'p'},
                                       {"from", required_argument, NULL, 'f'},
                                       {"to", required_argument, NULL, 't'},
                                       {"keep", no_argument, NULL, 'k'},
                                       {"partition", required_argument, NULL, 'n'},
                                       {"all", no_argument, NULL, 'a'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    char err[512];
    int opt;
    memset(o, 0, sizeof(*o));
    o->partition = -1;
    while ((opt = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        switch (opt) {
        case 'p': o->policy = optarg; break;
        case 'k': o->keep = 1; break;
        case 'a': o->all = 1; break;
        case 'h': fputs(help, stdout); return -1;
        case 'n':
            if (tierctl_partition_arg(optarg, &o->partition) != 0) goto bad;
            break;
        case 'f':
        case 't':
            if (tierctl_parse_time(optarg, opt == 'f' ? &o->from : &o->to, err, sizeof(err)) != 0) {
                fprintf(stderr, "tierctl: %s\n", err);
                return TC_USAGE;
            }
            break;
        default: goto bad;
        }
    }
    if (optind == argc) return TC_OK;
bad:
    fputs(help, stderr);
    return TC_USAGE;
}

/* ------------------------------------------------------------------ */
/* backtest                                                            */

typedef struct matrix {
    int64_t n[POLICY_TIERS_MAX + 1][POLICY_TIERS_MAX + 1]; /* [configured][candidate], 0 none */
    int64_t customers, up, down;
} matrix_t;

/* Collects the tier of every customer of a lane's state hash. */
typedef struct tiers {
    strmap_t *map;      /* id -> int32_t* (malloc'd) */
    state_customer_t s; /* reused for every state */
    const char *key;
    char err[512]; /* the first state that did not decode */
} tiers_t;

static int see_tier(void *opaque, const redisReply *k, const redisReply *v) {
    tiers_t *t = opaque;
    int created;
    char why[200];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) return 0;
    strmap_slot_t *slot = strmap_put(t->map, k->str, k->len, &created);
    if (!slot) return -1;
    if (!created) return 0; /* HSCAN returned it again */
    int32_t *tier = malloc(sizeof(*tier));
    if (!tier) return -1;
    *tier = 0;
    slot->value = tier;
    if (state_decode(&t->s, v->str, v->len, why, sizeof(why)) == 0)
        *tier = t->s.st.tier;
    else if (!t->err[0])
        snprintf(t->err, sizeof(t->err), "%s field %.*s: the state does not decode (%s)", t->key,
                 (int)k->len, k->str, why);
    return 0;
}

/* The tier of every customer in a lane's state hash, into map (values:
 * int32_t*), a page at a time.  A state that does not decode fails the
 * backtest: it is never counted as a customer not placed. */
static int read_tiers(lane_t *l, strmap_t *map, volatile sig_atomic_t *stop, char *err,
                      size_t errn) {
    char key[512];
    tiers_t t = {.map = map, .key = key};
    int rc;
    state_init(&t.s);
    store_key(l->store, l->conf.topic_orders, l->part.partition, "c", key, sizeof(key));
    rc = tierctl_hscan(l->store, key, see_tier, &t, stop, err, errn);
    if (rc == 0 && t.err[0]) {
        snprintf(err, errn, "%s", t.err);
        rc = -1;
    }
    state_free(&t.s);
    return rc;
}

static void matrix_add(matrix_t *mx, int32_t from, int32_t to) {
    if (from < 0 || from > POLICY_TIERS_MAX || to < 0 || to > POLICY_TIERS_MAX) return;
    mx->n[from][to]++;
    mx->customers++;
    if (from && to && to > from) mx->up++;
    if (from && to && to < from) mx->down++;
}

static int tally_matrix(lane_t *base, lane_t *cand, matrix_t *mx, volatile sig_atomic_t *stop,
                        char *err, size_t errn) {
    strmap_t a = {0}, b = {0};
    int rc = -1;
    if (read_tiers(base, &a, stop, err, errn) != 0 || read_tiers(cand, &b, stop, err, errn) != 0)
        goto out;
    for (size_t i = 0; i < b.cap; i++) {
        const strmap_slot_t *s = &b.slots[i], *o;
        if (!s->key) continue;
        o = strmap_get(&a, s->key, s->len);
        matrix_add(mx, o ? *(int32_t *)o->value : 0, *(int32_t *)s->value);
    }
    for (size_t i = 0; i < a.cap; i++)
        if (a.slots[i].key && !strmap_get(&b, a.slots[i].key, a.slots[i].len))
            matrix_add(mx, *(int32_t *)a.slots[i].value, 0);
    rc = 0;
out:
    strmap_free(&a, free);
    strmap_free(&b, free);
    return rc;
}

/* Months that ended by `to` and were not reviewed yet. */
static int close_months(replay_t *x, int64_t to) {
    for (int i = 0; i < x->nlanes; i++) {
        lane_t *l = x->lanes[i];
        store_meta_t *m = &l->part.meta;
        char why[512] = "";
        if (m->month < 0) continue;
        int32_t from = m->reviewed >= 0 && m->reviewed < m->month ? m->reviewed + 1 : m->month;
        for (int32_t mo = from; mo <= m->month && month_start_ms(&l->apply.zone, mo + 1) <= to;
             mo++) {
            if (m->reviewed >= mo) continue;
            if (review_month(&l->apply, &l->part, mo, why, sizeof(why)) != APPLY_OK) {
                snprintf(x->err, sizeof(x->err), "review: %s", why);
                return -1;
            }
        }
        if (drain_outbox(l, x->err, sizeof(x->err)) != 0) return -1;
    }
    return 0;
}

/* Keys listed by store_scan, as UNLINK commands. */
static int add_unlink(void *opaque, const char *k, size_t len) {
    return store_tx_addv(opaque, 2, "UNLINK", (size_t)6, k, len);
}

/* Deletes every key under prefix (SCAN + UNLINK). */
static int delete_prefix(store_t *s, const char *prefix, char *err, size_t errn) {
    char pattern[300];
    store_tx_t tx = {0};
    snprintf(pattern, sizeof(pattern), "%s:*", prefix);
    int rc = store_scan(s, pattern, add_unlink, &tx, err, errn) == STORE_OK ? TC_OK : TC_FAIL;
    if (rc == TC_OK && tx.ncmds) {
        redisReply **dr = calloc(tx.ncmds, sizeof(*dr));
        rc = dr ? tierctl_query(s, &tx, dr, err, errn) : TC_FAIL;
        for (size_t i = 0; dr && rc == TC_OK && i < tx.ncmds; i++) freeReplyObject(dr[i]);
        free(dr);
    }
    store_tx_free(&tx);
    return rc == TC_OK ? 0 : -1;
}

static void print_matrix(const policy_t *a, const policy_t *b, const matrix_t *mx) {
    char lb[32];
    printf("\ntier matrix: one row per tier under %s %s (configured), one column per tier\n"
           "under %s %s (candidate); \"-\" = not placed\n",
           a->name, a->version, b->name, b->version);
    printf("%10s", "");
    for (int32_t j = 0; j <= b->ntiers; j++)
        printf(" %8s", j ? policy_tier_label(b, j, lb, sizeof(lb)) : "-");
    printf(" %8s\n", "total");
    for (int32_t i = 0; i <= a->ntiers; i++) {
        int64_t row = 0;
        printf("%10s", i ? policy_tier_label(a, i, lb, sizeof(lb)) : "-");
        for (int32_t j = 0; j <= b->ntiers; j++) {
            printf(" %8" PRId64, mx->n[i][j]);
            row += mx->n[i][j];
        }
        printf(" %8" PRId64 "\n", row);
    }
    printf("customers: %" PRId64 "; higher tier under the candidate: %" PRId64 ", lower: %" PRId64
           "\n",
           mx->customers, mx->up, mx->down);
}

static void print_tallies(const lane_t *a, const lane_t *b) {
    printf("\n%-22s %12s %12s\n", "tier changes", "configured", "candidate");
    for (int r = 1; r < POLICY_REASON__COUNT; r++)
        printf("  %-20s %12" PRId64 " %12" PRId64 "\n", policy_reason_name((policy_reason_t)r),
               a->tally.tier_by_reason[r], b->tally.tier_by_reason[r]);
    printf("%-22s %12s %12s\n", "quota events", "configured", "candidate");
    for (int k = 0; k < POLICY_QUOTA__COUNT; k++)
        printf("  %-20s %12" PRId64 " %12" PRId64 "\n",
               policy_quota_kind_name((policy_quota_kind_t)k), a->tally.quota_by_kind[k],
               b->tally.quota_by_kind[k]);
    printf("%-22s %12" PRId64 " %12" PRId64 "\n", "refused records", a->tally.dead, b->tally.dead);
}

typedef struct backtest {
    tierctl_t t;
    policy_t cand;
    lane_t lanes[2];
    replay_t x;
    matrix_t mx;
    char scratch[2][128];
    char tag[2][128];
} backtest_t;

static int backtest_partition(backtest_t *b, rd_kafka_t *rk, int32_t p, const opts_t *o,
                              int64_t to) {
    const config_t *c = &b->t.conf;
    range_t ord, prof;
    replay_reset(&b->x, p);
    ord.from = tierctl_offset_at(rk, c->topic_orders, p, o->from, b->x.err, sizeof(b->x.err));
    ord.to = ord.from < 0
                 ? -1
                 : tierctl_offset_at(rk, c->topic_orders, p, to, b->x.err, sizeof(b->x.err));
    prof.from = ord.to < 0
                    ? -1
                    : tierctl_offset_at(rk, c->topic_profiles, p, 0, b->x.err, sizeof(b->x.err));
    prof.to = prof.from < 0
                  ? -1
                  : tierctl_offset_at(rk, c->topic_profiles, p, to, b->x.err, sizeof(b->x.err));
    if (prof.to < 0 || replay_partition(&b->x, rk, c, ord, prof) != 0 ||
        close_months(&b->x, to) != 0 ||
        tally_matrix(&b->lanes[0], &b->lanes[1], &b->mx, b->x.stop, b->x.err, sizeof(b->x.err)) !=
            0)
        return -1;
    return 0;
}

static int backtest_run(backtest_t *b, const opts_t *o) {
    char err[1024] = "";
    int64_t to = o->to > 0 ? o->to : store_now_ms();
    rd_kafka_t *rk = tierctl_kafka(&b->t.conf, err, sizeof(err));
    int32_t n = rk ? tierctl_topic_partitions(rk, b->t.conf.topic_orders, err, sizeof(err)) : -1;
    int rc = n < 0 ? TC_FAIL : TC_OK;
    for (int32_t p = 0; rc == TC_OK && p < n; p++)
        if (backtest_partition(b, rk, p, o, to) != 0) {
            snprintf(err, sizeof(err), "%s", b->x.err);
            rc = TC_FAIL;
        }
    if (rk) rd_kafka_destroy(rk);
    if (rc != TC_OK) {
        fprintf(stderr, "tierctl: backtest: %s\n", err);
        return rc;
    }
    char t1[32], t2[32];
    printf("backtest of %s %s against %s %s, orders from %s to %s, %d partitions\n", b->cand.name,
           b->cand.version, b->t.policy.name, b->t.policy.version,
           o->from > 0 ? tierctl_time_text(o->from, t1, sizeof(t1)) : "the start",
           tierctl_time_text(to, t2, sizeof(t2)), (int)n);
    print_matrix(&b->t.policy, &b->cand, &b->mx);
    print_tallies(&b->lanes[0], &b->lanes[1]);
    return TC_OK;
}

int tierctl_backtest(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    backtest_t *b = NULL; /* owned; two policies and two lanes: large */
    char err[1024] = "", owner[64];
    opts_t o;
    int rc = parse_opts(argc, argv, tierctl_help_backtest, &o);
    if (rc != TC_OK) return rc < 0 ? TC_OK : rc;
    if (!o.policy || o.partition >= 0 || o.all) {
        fputs(tierctl_help_backtest, stderr);
        return TC_USAGE;
    }
    if (!(b = tierctl_calloc(sizeof(*b)))) return TC_FAIL;
    b->t.stop = stop;
    rc = tierctl_open(&b->t, conf_path, 0);
    if (rc != TC_OK) goto out;
    if (policyconf_load_file(o.policy, &b->t.conf, &b->cand, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierctl: policy refused: %s\n", err);
        rc = TC_USAGE;
        goto out;
    }
    snprintf(owner, sizeof(owner), "tierctl-backtest-%d", (int)getpid());
    int64_t run = store_now_ms();
    snprintf(b->scratch[0], 128, "%s-%" PRId64 "-configured", owner, run);
    snprintf(b->scratch[1], 128, "%s-%" PRId64 "-candidate", owner, run);
    /* Scratch keys "<scratch>:{tierd-bt.<pid>-<ms>-<lane>.<P>}:...": slots
     * of their own, one per lane and partition. */
    snprintf(b->tag[0], 128, "tierd-bt.%d-%" PRId64 "-configured", (int)getpid(), run);
    snprintf(b->tag[1], 128, "tierd-bt.%d-%" PRId64 "-candidate", (int)getpid(), run);
    b->x.what = "backtest";
    b->x.stop = stop;
    b->x.nlanes = 2;
    for (int i = 0; i < 2 && rc == TC_OK; i++) {
        b->x.lanes[i] = &b->lanes[i];
        if (lane_open(&b->lanes[i], &b->t, i ? &b->cand : &b->t.policy, b->scratch[i], b->tag[i],
                      owner, err, sizeof(err)) != 0) {
            fprintf(stderr, "tierctl: %s\n", err);
            rc = TC_FAIL;
        }
    }
    if (rc == TC_OK) rc = backtest_run(b, &o);
    for (int i = 0; i < 2 && b->lanes[i].store; i++) {
        if (o.keep)
            fprintf(stderr, "tierctl: kept the scratch keys %s:*\n", b->scratch[i]);
        else if (delete_prefix(b->lanes[i].store, b->scratch[i], err, sizeof(err)) != 0)
            fprintf(stderr, "tierctl: scratch keys %s:* not deleted: %s\n", b->scratch[i], err);
    }
out:
    for (int i = 0; i < 2; i++) lane_close(&b->lanes[i]);
    recs_free(&b->x.profs);
    recs_free(&b->x.batch);
    tierctl_close(&b->t);
    free(b);
    return rc;
}

/* ------------------------------------------------------------------ */
/* rebuild                                                             */

typedef struct rebuild {
    tierctl_t t;
    lane_t lane;
    replay_t x;
    char owner[300];
} rebuild_t;

typedef struct state_keys {
    const char *head, *meta;
    store_tx_t *del;
} state_keys_t;

static int state_key(void *opaque, const char *k, size_t len) {
    state_keys_t *sk = opaque;
    size_t hl = strlen(sk->head);
    if (len < hl || memcmp(k, sk->head, hl) != 0) return 0;
    if (len == strlen(sk->meta) && memcmp(k, sk->meta, len) == 0) return 0;
    /* UNLINK: a partition's state hash can be large; Redis frees it in
     * the background instead of inside the transaction. */
    return store_tx_addv(sk->del, 2, "UNLINK", (size_t)6, k, len);
}

/* The partition's keys other than meta: whatever layout wrote them. */
static int state_keys(rebuild_t *r, int32_t p, store_tx_t *del, char *err, size_t errn) {
    char pattern[600], meta[512], head[512];
    store_key(r->t.store, r->t.conf.topic_orders, p, "", head, sizeof(head));
    store_key(r->t.store, r->t.conf.topic_orders, p, "meta", meta, sizeof(meta));
    /* Only the exact head counts: glob characters in it are escaped by
     * comparing the prefix again in state_key. */
    snprintf(pattern, sizeof(pattern), "*%d}:*", (int)p);
    state_keys_t sk = {head, meta, del};
    return store_scan(r->t.store, pattern, state_key, &sk, err, errn) == STORE_OK ? 0 : -1;
}

/* An epoch that does not parse (a hand edit) cannot be counted up: a
 * claim's HINCRBY fails on it, and the partition would stay refused.  It
 * becomes the time in milliseconds, above any epoch claims count to, so
 * whichever owner it had is fenced. */
static int repair_epoch(rebuild_t *r, int32_t p, char *err, size_t errn) {
    char meta[512], now[32];
    store_tx_t tx = {0};
    store_meta_t m;
    if (store_read(r->t.store, r->t.conf.topic_orders, p, &m, 0, NULL, NULL, NULL, NULL, NULL, err,
                   errn) != STORE_OK)
        return -1;
    if (strncmp(m.bad, "epoch ", 6) != 0) return store_unwatch(r->t.store) == STORE_OK ? 0 : -1;
    store_key(r->t.store, r->t.conf.topic_orders, p, "meta", meta, sizeof(meta));
    snprintf(now, sizeof(now), "%" PRId64, store_now_ms());
    const char *hset[4] = {"HSET", meta, "epoch", now};
    int rc = tierctl_cmd(&tx, 4, hset) == 0 && store_exec(r->t.store, &tx, err, errn) == STORE_OK
                 ? 0
                 : -1;
    store_tx_free(&tx);
    if (rc == 0) fprintf(stderr, "tierctl: %s: field %s replaced by %s\n", meta, m.bad, now);
    return rc;
}

/* Claims p and clears what is left of its state (epoch kept, bumped). */
static int rebuild_begin(rebuild_t *r, int32_t p, char *err, size_t errn) {
    char meta[512], obox[512], kept[512];
    store_tx_t tx = {0};
    store_meta_t m;
    int rc = -1;
    if (repair_epoch(r, p, err, errn) != 0 ||
        store_claim(r->t.store, r->t.conf.topic_orders, p, r->owner, &m, err, errn) != STORE_OK)
        return -1;
    replay_reset(&r->x, p);
    r->lane.part.meta.epoch = m.epoch;
    r->x.lease_at = store_now_ms(); /* the claim took the lease */
    store_key(r->t.store, r->t.conf.topic_orders, p, "meta", meta, sizeof(meta));
    store_key(r->t.store, r->t.conf.topic_orders, p, "outbox", obox, sizeof(obox));
    store_key(r->t.store, r->t.conf.topic_orders, p, "outbox-kept", kept, sizeof(kept));
    /* Events decided before the rebuild and not yet published stay: the
     * outbox waits aside while the replay decides (and discards) its own. */
    const char *copy[5] = {"COPY", obox, kept, "REPLACE", NULL};
    /* Every field that describes the state, the state format and a paged
     * review's cursor included (a stale cursor would make the replay's
     * first review skip customers); epoch, owner and lease stay. */
    const char *hdel[12] = {"HDEL",   meta,       "offset",   "month",      "reviewed", "poffset",
                            "format", "rv_month", "rv_after", "updated_at", "prev_fp",  "prev_pfp"};
    if (tierctl_cmd(&tx, 4, copy) == 0 && state_keys(r, p, &tx, err, errn) == 0 &&
        tierctl_cmd(&tx, 12, hdel) == 0)
        rc = tierctl_fenced_exec(&r->t, p, r->lane.part.meta.epoch, &tx, err, errn);
    store_tx_free(&tx);
    return rc;
}

/* Offsets at the ends replayed (also when the range held nothing to
 * apply; a topic partition that never had a record gets no offset, as
 * with tierd), the replay's events dropped (published before), the outbox
 * of before the rebuild put back, the lease given back. */
static int rebuild_end(rebuild_t *r, int32_t p, range_t ord, range_t prof, char *err, size_t errn) {
    char meta[512], obox[512], kept[512], off[32], poff[32], fmt[16];
    store_tx_t tx = {0};
    int rc = 0;
    store_key(r->t.store, r->t.conf.topic_orders, p, "meta", meta, sizeof(meta));
    store_key(r->t.store, r->t.conf.topic_orders, p, "outbox", obox, sizeof(obox));
    store_key(r->t.store, r->t.conf.topic_orders, p, "outbox-kept", kept, sizeof(kept));
    snprintf(off, sizeof(off), "%" PRId64, ord.to);
    snprintf(poff, sizeof(poff), "%" PRId64, prof.to);
    snprintf(fmt, sizeof(fmt), "%d", STATE_FORMAT);
    const char *hoff[4] = {"HSET", meta, "offset", off};
    const char *hpoff[4] = {"HSET", meta, "poffset", poff};
    /* The format too when nothing was replayed: the offsets then describe
     * an empty state of this format. */
    const char *hfmt[4] = {"HSET", meta, "format", fmt};
    const char *hdel[3] = {"HDEL", meta, "lease"}, *del[2] = {"DEL", obox};
    const char *back[5] = {"COPY", kept, obox, "REPLACE", NULL}, *delk[2] = {"DEL", kept};
    if (ord.to > 0) rc |= tierctl_cmd(&tx, 4, hoff);
    if (prof.to > 0) rc |= tierctl_cmd(&tx, 4, hpoff);
    rc = rc || tierctl_cmd(&tx, 4, hfmt) || tierctl_cmd(&tx, 3, hdel) || tierctl_cmd(&tx, 2, del) ||
                 tierctl_cmd(&tx, 4, back) || tierctl_cmd(&tx, 2, delk)
             ? -1
             : tierctl_fenced_exec(&r->t, p, r->lane.part.meta.epoch, &tx, err, errn);
    store_tx_free(&tx);
    return rc;
}

static int rebuild_partition(rebuild_t *r, rd_kafka_t *rk, int32_t p, const opts_t *o) {
    const config_t *c = &r->t.conf;
    char *err = r->x.err;
    size_t errn = sizeof(r->x.err);
    range_t ord = {-1, -1}, prof = {-1, -1};
    store_meta_t m;
    /* Only what tierd had applied is rebuilt: the records after its stored
     * offsets are left to tierd, which applies them and publishes what
     * they decide (the replay's own events are not published). */
    m.offset = m.poffset = -1;
    if (tierctl_meta(r->t.store, c, p, &m, err, errn) < 0) return -1;
    ord.from = tierctl_offset_at(rk, c->topic_orders, p, o->from, err, errn);
    if (ord.from >= 0) ord.to = tierctl_offset_at(rk, c->topic_orders, p, INT64_MAX, err, errn);
    if (ord.to >= 0 && m.offset >= 0 && m.offset < ord.to) ord.to = m.offset;
    if (ord.to >= 0) prof.from = tierctl_offset_at(rk, c->topic_profiles, p, 0, err, errn);
    if (prof.from >= 0) prof.to = tierctl_offset_at(rk, c->topic_profiles, p, INT64_MAX, err, errn);
    if (prof.to >= 0 && m.poffset >= 0 && m.poffset < prof.to) prof.to = m.poffset;
    if (prof.to < 0 || rebuild_begin(r, p, err, errn) != 0 ||
        replay_partition(&r->x, rk, c, ord, prof) != 0 ||
        rebuild_end(r, p, ord, prof, err, errn) != 0)
        return -1;
    printf("rebuilt %s [%d]: orders %" PRId64 "..%" PRId64 ", profiles %" PRId64 "..%" PRId64
           "; month %d, reviewed %d, %" PRId64 " records refused (not published again)\n",
           c->topic_orders, (int)p, ord.from, ord.to, prof.from, prof.to,
           r->lane.part.meta.month >= 0 ? month_yyyymm(r->lane.part.meta.month) : 0,
           r->lane.part.meta.reviewed >= 0 ? month_yyyymm(r->lane.part.meta.reviewed) : 0,
           r->lane.tally.dead);
    return 0;
}

static int rebuild_run(rebuild_t *r, const opts_t *o) {
    char err[1024] = "";
    rd_kafka_t *rk = tierctl_kafka(&r->t.conf, err, sizeof(err));
    int32_t n = rk ? tierctl_topic_partitions(rk, r->t.conf.topic_orders, err, sizeof(err)) : -1;
    int32_t first = o->all ? 0 : o->partition, last = o->all ? n - 1 : o->partition;
    int rc = n < 0 ? TC_FAIL : TC_OK;
    if (rc == TC_OK && last >= n) {
        snprintf(err, sizeof(err), "%s has %d partitions", r->t.conf.topic_orders, (int)n);
        rc = TC_USAGE;
    }
    /* Every partition is checked before any is touched. */
    for (int32_t p = first; rc == TC_OK && p <= last; p++)
        rc = tierctl_check_lease(&r->t, p, err, sizeof(err));
    for (int32_t p = first; rc == TC_OK && p <= last; p++)
        if (rebuild_partition(r, rk, p, o) != 0) {
            snprintf(err, sizeof(err), "%s", r->x.err);
            rc = TC_FAIL;
        }
    if (rc != TC_OK) fprintf(stderr, "tierctl: rebuild: %s\n", err);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

int tierctl_rebuild(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    rebuild_t *r = NULL; /* owned; the policy and a lane: large */
    char err[1024] = "", host[256] = "host";
    opts_t o;
    int rc = parse_opts(argc, argv, tierctl_help_rebuild, &o);
    if (rc != TC_OK) return rc < 0 ? TC_OK : rc;
    if (o.all == (o.partition >= 0) || o.policy || o.to || o.keep) {
        fputs(tierctl_help_rebuild, stderr);
        return TC_USAGE;
    }
    if (!(r = tierctl_calloc(sizeof(*r)))) return TC_FAIL;
    r->t.stop = stop;
    rc = tierctl_open(&r->t, conf_path, 1);
    gethostname(host, sizeof(host) - 1);
    snprintf(r->owner, sizeof(r->owner), "tierctl-rebuild-%s-%d", host, (int)getpid());
    r->x.what = "rebuild";
    r->x.stop = stop;
    r->x.nlanes = 1;
    r->x.lease = 1;
    r->x.lanes[0] = &r->lane;
    if (rc == TC_OK && lane_open(&r->lane, &r->t, &r->t.policy, r->t.conf.key_prefix, NULL,
                                 r->owner, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierctl: %s\n", err);
        rc = TC_FAIL;
    }
    if (rc == TC_OK) rc = rebuild_run(r, &o);
    lane_close(&r->lane);
    recs_free(&r->x.profs);
    recs_free(&r->x.batch);
    tierctl_close(&r->t);
    free(r);
    return rc;
}
