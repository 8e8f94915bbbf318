/*
 * seek.c -- `tierctl seek`: moves the offset tierd holds for one orders
 * partition (or its customer-profiles partition), the state kept.  The
 * repair for a topic deleted and made again, which tierd finds as an
 * offset past the topic's end and does not read past on its own
 * (consumer.c, out_of_range).  Like rebuild it claims the partition first
 * (an epoch bump fences any older owner) and refuses while a live tierd
 * holds the lease.
 */
#include "tierctl.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char tierctl_help_seek[] =
    "usage: tierctl [-c FILE] seek --partition N (--offset O | --beginning) [--profiles]\n"
    "\n"
    "Moves the offset tierd holds for orders partition N (with --profiles, for\n"
    "its customer-profiles partition) to O, or to the partition's first offset;\n"
    "the state stays as it is, and tierd reads the topic from there when it next\n"
    "takes the partition.  The repair for a topic deleted and made again: tierd\n"
    "then says the offset it holds lies past the topic's end, and waits.  Orders\n"
    "read again that the state already counted are duplicates (within the\n"
    "window).  O must lie between the partition's first offset and its end.\n"
    "Refuses, with exit status 4 and before touching anything, while a live\n"
    "tierd holds the partition's lease.\n";

typedef struct seek_opts {
    int32_t partition;
    int64_t offset; /* -1: --beginning */
    int given, profiles;
} seek_opts_t;

/* TC_OK, TC_USAGE, or -1 after --help. */
static int seek_args(int argc, char **argv, seek_opts_t *o) {
    static const struct option lo[] = {{"partition", required_argument, NULL, 'n'},
                                       {"offset", required_argument, NULL, 'o'},
                                       {"beginning", no_argument, NULL, 'b'},
                                       {"profiles", no_argument, NULL, 'p'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    int opt;
    memset(o, 0, sizeof(*o));
    o->partition = -1;
    while ((opt = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        char *end = NULL;
        switch (opt) {
        case 'n':
            if (tierctl_partition_arg(optarg, &o->partition) != 0) goto bad;
            break;
        case 'o':
            o->offset = strtoll(optarg, &end, 10);
            if (!*optarg || *end || o->offset < 0) goto bad;
            o->given++;
            break;
        case 'b':
            o->offset = -1;
            o->given++;
            break;
        case 'p': o->profiles = 1; break;
        case 'h': fputs(tierctl_help_seek, stdout); return -1;
        default: goto bad;
        }
    }
    if (optind == argc && o->partition >= 0 && o->given == 1) return TC_OK;
bad:
    fputs(tierctl_help_seek, stderr);
    return TC_USAGE;
}

/* The claim, then the offset and the lease given back, under the claim's
 * epoch. */
static int seek_write(tierctl_t *t, const seek_opts_t *o, int64_t to, char *err, size_t errn) {
    char meta[512], off[32], host[256] = "host", owner[300];
    store_meta_t m;
    store_tx_t tx = {0};
    gethostname(host, sizeof(host) - 1);
    snprintf(owner, sizeof(owner), "tierctl-seek-%s-%d", host, (int)getpid());
    if (store_claim(t->store, t->conf.topic_orders, o->partition, owner, &m, err, errn) != STORE_OK)
        return TC_FAIL;
    store_key(t->store, t->conf.topic_orders, o->partition, "meta", meta, sizeof(meta));
    snprintf(off, sizeof(off), "%" PRId64, to);
    const char *hset[4] = {"HSET", meta, o->profiles ? "poffset" : "offset", off};
    /* The record before the new offset is not known: nothing to check. */
    const char *hdel[4] = {"HDEL", meta, "lease", o->profiles ? "prev_pfp" : "prev_fp"};
    int rc = tierctl_cmd(&tx, 4, hset) || tierctl_cmd(&tx, 4, hdel) ||
                     tierctl_fenced_exec(t, o->partition, m.epoch, &tx, err, errn) != 0
                 ? TC_FAIL
                 : TC_OK;
    store_tx_free(&tx);
    return rc;
}

static int seek_run(tierctl_t *t, const seek_opts_t *o) {
    char err[1024] = "";
    const char *topic = o->profiles ? t->conf.topic_profiles : t->conf.topic_orders;
    int64_t lo = -1, hi = -1, to = o->offset;
    store_meta_t m;
    rd_kafka_t *rk = tierctl_kafka(&t->conf, err, sizeof(err));
    int rc = rk ? TC_OK : TC_FAIL;
    if (rc == TC_OK) {
        rd_kafka_resp_err_t e =
            rd_kafka_query_watermark_offsets(rk, topic, o->partition, &lo, &hi, 10000);
        if (e) {
            snprintf(err, sizeof(err), "%s [%d]: %s", topic, (int)o->partition,
                     rd_kafka_err2str(e));
            rc = TC_FAIL;
        }
    }
    if (rc == TC_OK && to < 0) to = lo;
    if (rc == TC_OK && (to < lo || to > hi)) {
        snprintf(err, sizeof(err), "%s [%d] holds offsets %" PRId64 " to %" PRId64 " (its end)",
                 topic, (int)o->partition, lo, hi);
        rc = TC_USAGE;
    }
    int has =
        rc == TC_OK ? tierctl_meta(t->store, &t->conf, o->partition, &m, err, sizeof(err)) : 0;
    if (rc == TC_OK && has <= 0) {
        if (has == 0)
            snprintf(err, sizeof(err), "%s [%d] has no state: tierd reads it from the start",
                     t->conf.topic_orders, (int)o->partition);
        rc = has == 0 ? TC_USAGE : TC_FAIL;
    }
    if (rc == TC_OK) rc = tierctl_check_lease(t, o->partition, err, sizeof(err));
    if (rc == TC_OK) rc = seek_write(t, o, to, err, sizeof(err));
    if (rc == TC_OK)
        printf("%s [%d]: offset %" PRId64 " -> %" PRId64 " (the topic holds %" PRId64 " to %" PRId64
               "); tierd reads from there when it next takes the partition\n",
               topic, (int)o->partition, o->profiles ? m.poffset : m.offset, to, lo, hi);
    else
        fprintf(stderr, "tierctl: seek: %s\n", err);
    if (rk) rd_kafka_destroy(rk);
    return rc;
}

int tierctl_seek(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop) {
    seek_opts_t o;
    int rc = seek_args(argc, argv, &o);
    if (rc != TC_OK) return rc < 0 ? TC_OK : rc;
    tierctl_t *t = tierctl_calloc(sizeof(*t)); /* owned; the policy: large */
    if (!t) return TC_FAIL;
    t->stop = stop;
    rc = tierctl_open(t, conf_path, 1);
    if (rc == TC_OK) rc = seek_run(t, &o);
    tierctl_close(t);
    free(t);
    return rc;
}
