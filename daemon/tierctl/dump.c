/*
 * dump.c -- `tierctl dump`: every partition's meta and every
 * customer's state as JSON lines, a format other programs read (docs/tierctl.md,
 * "tierctl dump"), so it must outlive layout changes: it is written from
 * the decoded state (state.h), never from the bytes in Redis.
 *
 * Memory does not grow with the values of a partition, only with its ids:
 * the ids are collected with HSCAN (a page at a time), sorted and made
 * unique -- HSCAN may return a field twice, and a page-wise dedupe misses
 * repeats across pages -- then the states are read with HMGET, a page at a
 * time.  So each customer is printed exactly once, in the byte order of
 * ids, and two dumps of the same state are the same bytes.
 *
 * Read only: no WATCH, no write.  A partition in another state format is
 * refused and a state that does not decode is reported, each as an error
 * line, and the dump goes on with the rest and exits 1 at the end.
 */
#include "tierctl.h"

#include "arena.h"
#include "month.h"
#include "state.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char tierctl_help_dump[] =
    "usage: tierctl [-c FILE] dump [--partition N] [--customer C]\n"
    "\n"
    "Prints the state of every partition of the orders topic (or of partition N)\n"
    "and of every customer in it (or of customer C only), one JSON object a line:\n"
    "a partition line, then its customers in the byte order of their ids, each\n"
    "followed by its months, oldest first:\n"
    "\n" TIERCTL_DUMP_FORMAT "\n"
    "amount is in minor units.  orders counts the SALE orders of the month,\n"
    "applied every order counted in it (SALE or RETURN); a month with applied 0\n"
    "holds only the tier it began with.  A month's tier is the tier in effect\n"
    "when it began, its grade the worst compliance grade during it.  null where\n"
    "nothing is recorded (tier null: not placed yet).\n"
    "\n"
    "An error line names a partition in another state format, or one whose meta\n"
    "is gone while its customer states stay (no \"customer\"), or a customer\n"
    "whose state does not decode; the dump goes on with the rest and exits 1.\n"
    "With --customer, only the partitions holding the customer\n"
    "are printed (exit 3 when none does).  Read while tierd runs, a dump is not\n"
    "a snapshot, but each customer's lines come from one stored state.\n";

/* "YYYY-MM" (policy_month_text's form), or null for -1 (none). */
static void out_month(out_t *o, int32_t m) {
    if (m < 0) {
        out_s(o, "null");
        return;
    }
    char b[24];
    policy_month_text(m, b, sizeof(b));
    out_str(o, b, strlen(b));
}

/* Hundredths as the shortest exact decimal: 4270 -> 42.7, 4200 -> 42. */
static void out_score(out_t *o, int32_t c) {
    char b[24];
    int n;
    if (c < 0) {
        out_s(o, "null");
        return;
    }
    if (c % 100 == 0)
        n = snprintf(b, sizeof(b), "%d", (int)(c / 100));
    else if (c % 10 == 0)
        n = snprintf(b, sizeof(b), "%d.%d", (int)(c / 100), (int)(c % 100 / 10));
    else
        n = snprintf(b, sizeof(b), "%d.%02d", (int)(c / 100), (int)(c % 100));
    out_raw(o, b, (size_t)n);
}

/* "type" and "partition", the start of every line. */
static void out_head(out_t *o, const char *type, int32_t p) {
    out_s(o, "{\"type\":\"");
    out_s(o, type);
    out_s(o, "\",\"partition\":");
    out_i64(o, p);
}

/* ------------------------------------------------------------------ */

typedef struct idref {
    const char *id; /* in the dump's arena */
    uint32_t len;
} idref_t;

typedef struct dump {
    tierctl_t t;
    out_t out;
    int32_t partition;    /* --partition, -1 every one */
    const char *customer; /* --customer, NULL every one */
    state_customer_t s;   /* reused for every customer */
    arena_t ids;          /* one partition's ids */
    idref_t *v;
    size_t n, cap;
    int64_t errors, found;
    char ckey[512];
} dump_t;

static void print_partition(dump_t *d, int32_t p, const store_meta_t *m) {
    out_t *o = &d->out;
    out_head(o, "partition", p);
    out_s(o, ",\"offset\":");
    if (m->offset >= 0)
        out_i64(o, m->offset);
    else
        out_s(o, "null");
    out_s(o, ",\"month\":");
    out_month(o, m->month);
    out_s(o, ",\"reviewed\":");
    out_month(o, m->reviewed);
    out_s(o, ",\"epoch\":");
    if (m->epoch > 0)
        out_i64(o, m->epoch);
    else
        out_s(o, "null");
    out_s(o, "}\n");
}

static void print_error(dump_t *d, int32_t p, const char *id, size_t len, const char *why) {
    out_t *o = &d->out;
    out_head(o, "error", p);
    if (id) {
        out_s(o, ",\"customer\":");
        out_str(o, id, len);
    }
    out_s(o, ",\"error\":");
    out_str(o, why, strlen(why));
    out_s(o, "}\n");
    d->errors++;
}

static void print_months(dump_t *d, int32_t p, const char *id, size_t len) {
    out_t *o = &d->out;
    for (uint32_t i = 0; i < d->s.nmonths; i++) {
        const state_month_t *m = &d->s.months[i];
        out_head(o, "month", p);
        out_s(o, ",\"customer\":");
        out_str(o, id, len);
        out_s(o, ",\"month\":");
        out_month(o, m->month);
        out_s(o, ",\"qty\":");
        out_i64(o, m->agg.qty);
        out_s(o, ",\"amount\":");
        out_i64(o, m->agg.amount);
        out_s(o, ",\"orders\":");
        out_i64(o, m->agg.orders);
        out_s(o, ",\"skus\":");
        out_i64(o, (int64_t)m->nskus);
        out_s(o, ",\"tier\":");
        if (m->tier > 0)
            out_i64(o, m->tier);
        else
            out_s(o, "null");
        out_s(o, ",\"grade\":");
        if (m->grade != POLICY_GRADE_NONE) {
            char g = (char)m->grade;
            out_str(o, &g, 1);
        } else {
            out_s(o, "null");
        }
        out_s(o, ",\"applied\":");
        out_i64(o, (int64_t)m->nfps);
        out_s(o, "}\n");
    }
}

/* One customer's lines, or its error line. */
static void print_customer(dump_t *d, int32_t p, const char *id, size_t len, const char *val,
                           size_t vlen) {
    out_t *o = &d->out;
    char why[256], err[1024];
    if (state_decode(&d->s, val, vlen, why, sizeof(why)) != 0) {
        snprintf(err, sizeof(err),
                 "%s: the state does not decode (%s); `tierctl rebuild "
                 "--partition %d` rebuilds the partition from the topics",
                 d->ckey, why, (int)p);
        print_error(d, p, id, len, err);
        return;
    }
    const policy_state_t *st = &d->s.st;
    out_head(o, "customer", p);
    out_s(o, ",\"customer\":");
    out_str(o, id, len);
    out_s(o, ",\"tier\":");
    if (st->tier > 0)
        out_i64(o, st->tier);
    else
        out_s(o, "null");
    out_s(o, ",\"sequence\":");
    out_i64(o, d->s.seq);
    out_s(o, ",\"first_month\":");
    out_month(o, st->tier > 0 ? st->first_month : -1);
    out_s(o, st->evaluated ? ",\"evaluated\":true" : ",\"evaluated\":false");
    out_s(o, ",\"live_score\":");
    out_score(o, d->s.live_score_c);
    out_s(o, "}\n");
    print_months(d, p, id, len);
}

/* ------------------------------------------------------------------ */
/* Every customer of a partition: ids first, then the states by page    */

static int collect_id(void *opaque, const redisReply *k, const redisReply *v) {
    dump_t *d = opaque;
    (void)v;
    if (k->type != REDIS_REPLY_STRING) return 0;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        idref_t *nv = realloc(d->v, cap * sizeof(*nv));
        if (!nv) return -1;
        d->v = nv;
        d->cap = cap;
    }
    if (!(d->v[d->n].id = arena_strndup(&d->ids, k->str, k->len))) return -1;
    d->v[d->n++].len = (uint32_t)k->len;
    return 0;
}

static int by_id(const void *x, const void *y) {
    const idref_t *a = x, *b = y;
    int c = memcmp(a->id, b->id, a->len < b->len ? a->len : b->len);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

#define DUMP_PAGE 1000

/* The HMGET of the states of ids [lo, hi).  Borrowed: the ids live in
 * the arena until the partition is done. */
static int page_cmd(dump_t *d, size_t lo, size_t hi, store_tx_t *tx) {
    const char *argv[2 + DUMP_PAGE];
    size_t argvlen[2 + DUMP_PAGE];
    argv[0] = "HMGET";
    argvlen[0] = 5;
    argv[1] = d->ckey;
    argvlen[1] = strlen(d->ckey);
    for (size_t i = lo; i < hi; i++) {
        argv[2 + i - lo] = d->v[i].id;
        argvlen[2 + i - lo] = d->v[i].len;
    }
    return store_tx_add(tx, (int)(2 + hi - lo), argv, argvlen);
}

/* Prints the states r holds of ids [lo, hi).  Frees r. */
static int page_print(dump_t *d, int32_t p, size_t lo, size_t hi, redisReply *r, char *err,
                      size_t errn) {
    int rc = -1;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errn, "redis: HMGET: %s", r->str);
        goto out;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != hi - lo) {
        snprintf(err, errn, "redis: unexpected reply to HMGET %s", d->ckey);
        goto out;
    }
    for (size_t i = lo; i < hi; i++) {
        const redisReply *v = r->element[i - lo];
        if (v->type != REDIS_REPLY_STRING) continue; /* deleted since the scan */
        print_customer(d, p, d->v[i].id, d->v[i].len, v->str, v->len);
    }
    rc = 0;
out:
    freeReplyObject(r);
    return rc;
}

/* Sends the HMGET of page [lo, hi) without waiting for its reply. */
static int page_send(dump_t *d, size_t lo, size_t hi, char *err, size_t errn) {
    store_tx_t tx = {0};
    int rc = -1;
    if (page_cmd(d, lo, hi, &tx) != 0)
        snprintf(err, errn, "out of memory");
    else if (store_pipeline_send(d->t.store, &tx, err, errn) == STORE_OK)
        rc = 0;
    store_tx_free(&tx);
    return rc;
}

/* Reads and prints the reply page_send asked for. */
static int page_recv(dump_t *d, int32_t p, size_t lo, size_t hi, char *err, size_t errn) {
    redisReply *r = NULL;
    if (store_pipeline_recv(d->t.store, 1, &r, err, errn) != STORE_OK) return -1;
    return page_print(d, p, lo, hi, r, err, errn);
}

/* Reads and prints page [lo, hi) in one round trip. */
static int page_query(dump_t *d, int32_t p, size_t lo, size_t hi, char *err, size_t errn) {
    store_tx_t tx = {0};
    redisReply *r = NULL;
    int rc = -1;
    if (page_cmd(d, lo, hi, &tx) != 0)
        snprintf(err, errn, "out of memory");
    else if (tierctl_query(d->t.store, &tx, &r, err, errn) == TC_OK)
        rc = page_print(d, p, lo, hi, r, err, errn);
    store_tx_free(&tx);
    return rc;
}

/* The pages in order.  On one Redis the next page's HMGET is sent before
 * this page is printed, so Redis reads the next states while tierctl
 * decodes these; a cluster (whose store routes each call) reads one page
 * a round trip. */
static int dump_pages(dump_t *d, int32_t p, char *err, size_t errn) {
    const int ahead = !store_cluster(d->t.store);
    if (ahead && d->n > 0 && page_send(d, 0, d->n < DUMP_PAGE ? d->n : DUMP_PAGE, err, errn))
        return -1;
    for (size_t lo = 0; lo < d->n; lo += DUMP_PAGE) {
        size_t hi = lo + DUMP_PAGE < d->n ? lo + DUMP_PAGE : d->n;
        size_t next_hi = hi + DUMP_PAGE < d->n ? hi + DUMP_PAGE : d->n;
        int rc;
        if (ahead) {
            if (hi < d->n && page_send(d, hi, next_hi, err, errn) != 0) return -1;
            rc = page_recv(d, p, lo, hi, err, errn);
        } else {
            rc = page_query(d, p, lo, hi, err, errn);
        }
        /* Each early return ends the whole dump (tierctl_dump), so a page
         * sent ahead is never taken for another call's reply. */
        if (rc != 0) return -1;
        if (d->out.failed) return 0;
        if (*d->t.stop) {
            snprintf(err, errn, "interrupted");
            return -1;
        }
    }
    return 0;
}

static int dump_all(dump_t *d, int32_t p, char *err, size_t errn) {
    size_t u = 0;
    arena_reset(&d->ids);
    d->n = 0;
    if (tierctl_hscan(d->t.store, d->ckey, collect_id, d, d->t.stop, err, errn) != 0) return -1;
    qsort(d->v, d->n, sizeof(*d->v), by_id);
    for (size_t i = 0; i < d->n; i++) /* HSCAN's repeats, now adjacent */
        if (u == 0 || by_id(&d->v[u - 1], &d->v[i]) != 0) d->v[u++] = d->v[i];
    d->n = u;
    return dump_pages(d, p, err, errn);
}

/* Customer C in partition p: 1 printed, 0 not there, -1 with err. */
static int dump_one(dump_t *d, int32_t p, const store_meta_t *m, char *err, size_t errn) {
    store_tx_t tx = {0};
    redisReply *r = NULL;
    const char *argv[3] = {"HGET", d->ckey, d->customer};
    int rc = -1;
    if (tierctl_cmd(&tx, 3, argv) != 0) {
        snprintf(err, errn, "out of memory");
        goto out;
    }
    if (tierctl_query(d->t.store, &tx, &r, err, errn) != TC_OK) goto out;
    rc = r->type == REDIS_REPLY_STRING;
    if (rc) {
        print_partition(d, p, m);
        print_customer(d, p, d->customer, strlen(d->customer), r->str, r->len);
    }
out:
    if (r) freeReplyObject(r);
    store_tx_free(&tx);
    return rc;
}

static int dump_partition(dump_t *d, int32_t p, char *err, size_t errn) {
    store_meta_t m;
    char why[512];
    int has = tierctl_meta(d->t.store, &d->t.conf, p, &m, err, errn);
    if (has < 0) return -1;
    /* Every partition up to the highest with state is asked; one without
     * any is printed only when asked for by number.  Customer states with
     * no meta to say what they cover (m.orphan) are refused below. */
    if (has == 0 && !m.orphan && d->partition < 0) return 0;
    store_key(d->t.store, d->t.conf.topic_orders, p, "c", d->ckey, sizeof(d->ckey));
    if (tierctl_format_check(&d->t.conf, p, &m, why, sizeof(why)) != 0) {
        fprintf(stderr, "tierctl: dump: %s\n", why);
        print_error(d, p, NULL, 0, why);
        return 0;
    }
    if (d->customer) {
        int found = dump_one(d, p, &m, err, errn);
        if (found > 0) d->found++;
        return found < 0 ? -1 : 0;
    }
    print_partition(d, p, &m);
    return dump_all(d, p, err, errn);
}

static int dump_args(int argc, char **argv, dump_t *d) {
    static const struct option lo[] = {{"partition", required_argument, NULL, 'n'},
                                       {"customer", required_argument, NULL, 'C'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int opt;
    d->partition = -1;
    while ((opt = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        switch (opt) {
        case 'h': fputs(tierctl_help_dump, stdout); return -1;
        case 'n':
            if (tierctl_partition_arg(optarg, &d->partition) != 0) goto bad;
            break;
        case 'C':
            if (!*optarg) goto bad;
            d->customer = optarg;
            break;
        default: goto bad;
        }
    }
    if (optind == argc) return TC_OK;
bad:
    fputs(tierctl_help_dump, stderr);
    return TC_USAGE;
}

int tierctl_dump(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    dump_t *d = tierctl_calloc(sizeof(*d)); /* owned; the policy, the buffer: large */
    char err[1024] = "";
    int rc;
    if (!d) return TC_FAIL;
    state_init(&d->s);
    rc = dump_args(argc, argv, d);
    if (rc != TC_OK) {
        rc = rc < 0 ? TC_OK : rc; /* -1: --help */
        goto out;
    }
    d->t.stop = stop;
    rc = tierctl_open(&d->t, conf_path, 1);
    if (rc != TC_OK) goto out;
    int32_t n = d->partition >= 0 ? d->partition + 1
                                  : tierctl_partitions(d->t.store, &d->t.conf, err, sizeof(err));
    for (int32_t p = d->partition >= 0 ? d->partition : 0; n >= 0 && p < n; p++) {
        if (dump_partition(d, p, err, sizeof(err)) != 0) {
            n = -1;
            break;
        }
        if (d->out.failed) break;
    }
    out_flush(&d->out);
    if (fflush(stdout) != 0) d->out.failed = 1;
    if (n < 0) {
        fprintf(stderr, "tierctl: dump: %s\n", err);
        rc = TC_FAIL;
    } else if (d->out.failed) {
        fprintf(stderr, "tierctl: dump: writing the output failed\n");
        rc = TC_FAIL;
    } else if (d->errors > 0) {
        fprintf(stderr,
                "tierctl: dump: %" PRId64 " error lines (partitions refused or states "
                "that do not decode)\n",
                d->errors);
        rc = TC_FAIL;
    } else if (d->customer && d->found == 0) {
        fprintf(stderr, "tierctl: customer %s not found: no partition of %s knows it\n",
                d->customer, d->t.conf.topic_orders);
        rc = TC_NOT_FOUND;
    }
out:
    state_free(&d->s);
    arena_free(&d->ids);
    free(d->v);
    tierctl_close(&d->t);
    free(d);
    return rc;
}
