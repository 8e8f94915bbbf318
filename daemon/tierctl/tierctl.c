/*
 * tierctl.c -- the command line of tierctl, and what its commands share:
 * opening the configuration, policy and Redis exactly as tierd does,
 * finding the partitions that have state, reading times, reading Kafka by
 * hand.  See tierctl.h for the split into files,
 * docs/tierctl.md for the operator's view.
 */
#include "tierctl.h"

#include "kafkaconf.h"
#include "log.h"
#include "month.h"
#include "policyconf.h"
#include "state.h"
#include "txn.h"
#include "utf8.h"

#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef TIERD_VERSION
#define TIERD_VERSION "0.1.0"
#endif

/* Process-wide because a signal handler has no argument to reach it
 * through; the commands receive its address. */
static volatile sig_atomic_t stop_flag;

static void on_signal(int sig) {
    if (sig == SIGINT && stop_flag) _exit(130); /* second Ctrl-C: now */
    stop_flag = 1;
}

static const char help_main[] =
    "usage: tierctl [-c FILE] [-v] COMMAND [ARGS]\n"
    "\n"
    "The operator's tool of tierd: looks at a customer's state in Redis,\n"
    "explains its tier, replays orders to try a policy or to rebuild lost\n"
    "state, prints the events tierd published.  It reads the configuration\n"
    "tierd reads (-c FILE, TIERD_* variables) and decides by the same policy.\n"
    "It never publishes to Kafka.\n"
    "\n"
    "commands:\n"
    "  show [--events N] CUSTOMER\n"
    "                      partition, tier, live score and its components, profile,\n"
    "                      the window's months, quota use, outbox, last N events\n"
    "  explain CUSTOMER    why this tier, in rules and thresholds; what would move it\n"
    "  backtest --policy FILE [--from TIME] [--to TIME] [--keep]\n"
    "                      replay orders into scratch keys under the configured and\n"
    "                      a candidate policy: tier matrix, tier changes, quota events\n"
    "  rebuild (--partition N | --all) [--from TIME]\n"
    "                      rebuild lost partition state from Kafka, in timestamp order\n"
    "  seek --partition N (--offset O | --beginning) [--profiles]\n"
    "                      move the offset tierd holds for a partition, its state\n"
    "                      kept (after a topic was deleted and made again)\n"
    "  dump [--partition N] [--customer C]\n"
    "                      the state of every partition and customer as JSON lines,\n"
    "                      a format kept across layout changes (tierctl dump "
    "--help):\n" TIERCTL_DUMP_FORMAT
    "  events [-e] [--customer C] [--kind tier_change|quota] [--topic T]\n"
    "         [--reason R] [--from TIME] [--to TIME]\n"
    "                      tier-changes and quota-events decoded, one JSON object a\n"
    "                      line; follows the topics, or exits at their end with -e\n"
    "\n"
    "options:\n"
    "  -c, --config FILE   YAML configuration, as for tierd\n"
    "  -v, --verbose       log what the replay's pipeline logs (reviews, refusals)\n"
    "  -h, --help          this text; `tierctl COMMAND --help` for one command\n"
    "      --version       print the version\n"
    "\n"
    "TIME is epoch milliseconds or ISO 8601: 2026-03-01, 2026-03-01T08:00,\n"
    "2026-03-01T08:00:00Z, 2026-03-01T08:00:00+08:00.  Without an offset it is\n"
    "in the configured time_zone.\n"
    "\n"
    "exit status: 0 done, 1 Redis or Kafka failed, or the state is unreadable\n"
    "(another state format: `tierctl rebuild --partition N`), 2 usage,\n"
    "configuration or policy refused, 3 customer not found, 4 refused: a live\n"
    "tierd holds the partition's lease.\n";

/* ------------------------------------------------------------------ */
/* Setup                                                               */

int tierctl_open(tierctl_t *t, const char *path, int connect) {
    char err[1024] = "";
    if (config_load(&t->conf, path, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierctl: configuration refused: %s\n", err);
        config_free(&t->conf);
        return TC_USAGE;
    }
    t->conf_loaded = 1;
    if (month_zone_init(&t->zone, t->conf.time_zone, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierctl: configuration refused: time_zone: %s\n", err);
        return TC_USAGE;
    }
    if (policyconf_load(&t->conf, &t->policy, err, sizeof(err)) != 0) {
        fprintf(stderr, "tierctl: policy refused: %s\n", err);
        return TC_USAGE;
    }
    if (!connect) return TC_OK;
    t->store = store_new(&t->conf, err, sizeof(err));
    if (!t->store || store_connect(t->store, err, sizeof(err)) != STORE_OK) {
        fprintf(stderr, "tierctl: %s\n", err);
        return TC_FAIL;
    }
    return TC_OK;
}

void *tierctl_calloc(size_t size) {
    void *p = calloc(1, size);
    if (!p) fprintf(stderr, "tierctl: out of memory\n");
    return p;
}

void tierctl_close(tierctl_t *t) {
    store_destroy(t->store);
    t->store = NULL;
    if (t->conf_loaded) config_free(&t->conf);
    t->conf_loaded = 0;
}

/* ------------------------------------------------------------------ */
/* Partitions                                                          */

/* Redis glob: * ? [ ] and \ match literally only when escaped. */
static void glob_escape(const char *s, char *out, size_t size) {
    size_t n = 0;
    for (; *s && n + 3 < size; s++) {
        if (strchr("*?[]\\", *s)) out[n++] = '\\';
        out[n++] = *s;
    }
    out[n] = '\0';
}

/* Keys look like "<prefix>:{<topic>.<P>}:meta" (or ":c", the customer
 * states, which a partition may hold without its meta: dump says so): P
 * follows head. */
typedef struct parts_seen {
    const char *head;
    size_t hl;
    int32_t n;
} parts_seen_t;

static int part_seen(void *opaque, const char *k, size_t len) {
    parts_seen_t *ps = opaque;
    if (len <= ps->hl || memcmp(k, ps->head, ps->hl) != 0) return 0;
    const char *p = k + ps->hl, *end = k + len;
    long long v = 0;
    int nd = 0;
    for (; p < end && *p >= '0' && *p <= '9' && nd < 11; p++, nd++) v = v * 10 + (*p - '0');
    int known =
        (end - p == 6 && memcmp(p, "}:meta", 6) == 0) || (end - p == 3 && memcmp(p, "}:c", 3) == 0);
    if (nd == 0 || !known || v > INT32_MAX - 1) return 0;
    if (v + 1 > ps->n) ps->n = (int32_t)v + 1;
    return 0;
}

int32_t tierctl_partitions(store_t *s, const config_t *c, char *errstr, size_t errstr_size) {
    char pfx[512], topic[512], pattern[1100], head[1100];
    glob_escape(c->key_prefix, pfx, sizeof(pfx));
    glob_escape(c->topic_orders, topic, sizeof(topic));
    snprintf(pattern, sizeof(pattern), "%s:{%s.*}:*", pfx, topic);
    int hl = snprintf(head, sizeof(head), "%s:{%s.", c->key_prefix, c->topic_orders);
    parts_seen_t ps = {head, (size_t)hl, 0};
    if (store_scan(s, pattern, part_seen, &ps, errstr, errstr_size) != STORE_OK) return -1;
    return ps.n;
}

/* ------------------------------------------------------------------ */
/* Redis                                                               */

int tierctl_cmd(store_tx_t *tx, int argc, const char *const *argv) {
    return store_tx_add_copy(tx, argc, argv, NULL);
}

int tierctl_query(store_t *s, store_tx_t *tx, redisReply **replies, char *errstr,
                  size_t errstr_size) {
    if (store_pipeline(s, tx, replies, errstr, errstr_size) != STORE_OK) return TC_FAIL;
    for (size_t i = 0; i < tx->ncmds; i++)
        if (replies[i]->type == REDIS_REPLY_ERROR) {
            snprintf(errstr, errstr_size, "redis: %s: %s", tx->cmds[i].argv[0], replies[i]->str);
            for (size_t j = 0; j < tx->ncmds; j++) {
                freeReplyObject(replies[j]);
                replies[j] = NULL;
            }
            return TC_FAIL;
        }
    return TC_OK;
}

int tierctl_meta_cmd(store_tx_t *tx, store_t *s, const config_t *c, int32_t p) {
    char key[512];
    const char *argv[2 + STORE_META_NFIELDS] = {"HMGET", key};
    store_key(s, c->topic_orders, p, "meta", key, sizeof(key));
    memcpy(argv + 2, store_meta_fields, sizeof(store_meta_fields));
    return tierctl_cmd(tx, 2 + STORE_META_NFIELDS, argv);
}

int tierctl_meta(store_t *s, const config_t *c, int32_t p, store_meta_t *m, char *errstr,
                 size_t errstr_size) {
    store_tx_t tx = {0};
    redisReply *r[2] = {NULL, NULL};
    int rc = -1;
    char ckey[512];
    store_key(s, c->topic_orders, p, "c", ckey, sizeof(ckey));
    /* HSCAN, which tierctl's ACL rule has: do customer states exist? */
    const char *scan[5] = {"HSCAN", ckey, "0", "COUNT", "1"};
    if (tierctl_meta_cmd(&tx, s, c, p) != 0 || tierctl_cmd(&tx, 5, scan) != 0) {
        snprintf(errstr, errstr_size, "out of memory");
        goto out;
    }
    if (tierctl_query(s, &tx, r, errstr, errstr_size) != TC_OK) goto out;
    rc = store_meta_parse(r[0], m);
    if (rc >= 0 && store_meta_orphan(m, r[1]) < 0) rc = -1;
    if (rc < 0) snprintf(errstr, errstr_size, "redis: unexpected reply to HMGET of a meta");
out:
    for (size_t i = 0; i < 2; i++)
        if (r[i]) freeReplyObject(r[i]);
    store_tx_free(&tx);
    return rc;
}

int tierctl_partition_arg(const char *s, int32_t *p) {
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < 0 || v > INT32_MAX - 1) return -1;
    *p = (int32_t)v;
    return 0;
}

int tierctl_check_lease(tierctl_t *t, int32_t p, char *errstr, size_t errstr_size) {
    char key[512];
    store_tx_t tx = {0};
    redisReply *rep = NULL;
    store_key(t->store, t->conf.topic_orders, p, "meta", key, sizeof(key));
    const char *argv[4] = {"HMGET", key, "lease", "owner"};
    int rc = tierctl_cmd(&tx, 4, argv) ? TC_FAIL
                                       : tierctl_query(t->store, &tx, &rep, errstr, errstr_size);
    store_tx_free(&tx);
    if (rc != TC_OK) return rc;
    const redisReply *l = rep->element[0], *o = rep->element[1];
    int64_t until = l->type == REDIS_REPLY_STRING ? strtoll(l->str, NULL, 10) : 0;
    int64_t left = until - store_now_ms();
    if (left > 0) {
        snprintf(errstr, errstr_size,
                 "refused: %s [%d] is owned by %s, whose lease runs %" PRId64 ".%03d s more; "
                 "stop that tierd first (a killed one's lease lapses within %d s)",
                 t->conf.topic_orders, (int)p, o->type == REDIS_REPLY_STRING ? o->str : "?",
                 left / 1000, (int)(left % 1000), STORE_LEASE_MS / 1000);
        rc = TC_REFUSED;
    }
    freeReplyObject(rep);
    return rc;
}

int tierctl_fenced_exec(tierctl_t *t, int32_t p, int64_t epoch, const store_tx_t *tx, char *errstr,
                        size_t errstr_size) {
    store_meta_t now;
    if (store_read(t->store, t->conf.topic_orders, p, &now, 0, NULL, NULL, NULL, NULL, NULL, errstr,
                   errstr_size) != STORE_OK)
        return -1;
    if (now.epoch != epoch) {
        store_unwatch(t->store);
        snprintf(errstr, errstr_size, "%s [%d]: another owner claimed the partition meanwhile",
                 t->conf.topic_orders, (int)p);
        return -1;
    }
    if (store_exec(t->store, tx, errstr, errstr_size) != STORE_OK) {
        if (!errstr[0]) snprintf(errstr, errstr_size, "another owner wrote meanwhile");
        return -1;
    }
    return 0;
}

int tierctl_format_check(const config_t *c, int32_t p, const store_meta_t *m, char *errstr,
                         size_t errstr_size) {
    if (m->bad[0]) {
        snprintf(errstr, errstr_size,
                 "%s [%d]: its meta field %s does not parse: stop the tierd that owns it and run "
                 "`tierctl rebuild --partition %d` to rebuild it from the topics",
                 c->topic_orders, (int)p, m->bad, (int)p);
        return -1;
    }
    if (m->orphan) {
        snprintf(errstr, errstr_size,
                 "%s [%d] holds customer states but no meta (offset, format): run `tierctl "
                 "rebuild --partition %d` to rebuild it from the topics",
                 c->topic_orders, (int)p, (int)p);
        return -1;
    }
    if (txn_format_ok(m)) return 0;
    /* Format 1 wrote no format field: state without one is format 1. */
    snprintf(errstr, errstr_size,
             "%s [%d] holds state format %d and tierctl reads formats %d to %d: stop the tierd "
             "that owns it and run `tierctl rebuild --partition %d` to rebuild it from the topics",
             c->topic_orders, (int)p, m->format ? (int)m->format : 1, STATE_FORMAT_OLDEST,
             STATE_FORMAT, (int)p);
    return -1;
}

int tierctl_hscan(store_t *s, const char *key, tierctl_field_fn fn, void *opaque,
                  volatile sig_atomic_t *stop, char *errstr, size_t errstr_size) {
    char cursor[32] = "0";
    do {
        store_tx_t tx = {0};
        redisReply *r = NULL;
        const char *argv[5] = {"HSCAN", key, cursor, "COUNT", "1000"};
        int rc = tierctl_cmd(&tx, 5, argv) != 0 ? TC_FAIL
                                                : tierctl_query(s, &tx, &r, errstr, errstr_size);
        store_tx_free(&tx);
        if (rc != TC_OK) return -1;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(errstr, errstr_size, "redis: unexpected HSCAN reply for %s", key);
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *kv = r->element[1];
        for (size_t i = 0; rc == TC_OK && i + 1 < kv->elements; i += 2)
            if (fn(opaque, kv->element[i], kv->element[i + 1]) != 0) rc = TC_FAIL;
        freeReplyObject(r);
        if (rc != TC_OK) {
            snprintf(errstr, errstr_size, "out of memory");
            return -1;
        }
        if (stop && *stop) {
            snprintf(errstr, errstr_size, "interrupted");
            return -1;
        }
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Kafka, read by hand                                                 */

rd_kafka_t *tierctl_kafka(const config_t *c, char *errstr, size_t errstr_size) {
    /* read_committed as tierd reads: no aborted record counts. */
    static const char *const fixed[] = {"group.id",
                                        "tierctl",
                                        "enable.auto.commit",
                                        "false",
                                        "enable.auto.offset.store",
                                        "false",
                                        "enable.partition.eof",
                                        "true",
                                        "isolation.level",
                                        "read_committed",
                                        NULL};
    char why[512];
    rd_kafka_conf_t *conf = kafkaconf_build(c, fixed, errstr, errstr_size);
    if (!conf) return NULL;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "kafka consumer: %s", why);
        return NULL;
    }
    /* conf is now owned by rk */
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

int32_t tierctl_topic_partitions(rd_kafka_t *rk, const char *topic, char *errstr,
                                 size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(rk, topic, NULL);
    int32_t n = -1;
    if (!t) {
        snprintf(errstr, errstr_size, "kafka: topic %s: %s", topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, t, &md, 10000);
    if (err)
        snprintf(errstr, errstr_size, "kafka: metadata of %s: %s", topic, rd_kafka_err2str(err));
    else if (md->topic_cnt != 1 || md->topics[0].err)
        snprintf(
            errstr, errstr_size, "kafka: topic %s: %s", topic,
            rd_kafka_err2str(md->topic_cnt ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC));
    else
        n = md->topics[0].partition_cnt;
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(t);
    return n;
}

int64_t tierctl_offset_at(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t ms,
                          char *errstr, size_t errstr_size) {
    int64_t lo = 0, hi = 0, off = -1;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 10000);
    if (err) goto fail;
    if (ms <= 0) return lo;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = ms;
    err = rd_kafka_offsets_for_times(rk, l, 10000);
    if (!err) err = l->elems[0].err;
    off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    if (err) goto fail;
    return off < 0 || off > hi ? hi : off; /* no record at or after ms: the end */
fail:
    snprintf(errstr, errstr_size, "kafka: offsets of %s [%d]: %s", topic, (int)partition,
             rd_kafka_err2str(err));
    return -1;
}

int tierctl_read(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t from, int64_t to,
                 tierctl_record_fn fn, void *opaque, volatile sig_atomic_t *stop, char *errstr,
                 size_t errstr_size) {
    int rc = -1, idle = 0;
    if (from >= to) return 0;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, partition)->offset = from;
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (err) {
        snprintf(errstr, errstr_size, "kafka: assign %s [%d]: %s", topic, (int)partition,
                 rd_kafka_err2str(err));
        return -1;
    }
    while (!*stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m) {
            if (++idle < 60) continue;
            snprintf(errstr, errstr_size, "kafka: %s [%d]: nothing read for 30 s", topic,
                     (int)partition);
            break;
        }
        idle = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            rc = 0; /* the end of what exists (a compacted tail) */
            break;
        }
        if (m->err) {
            snprintf(errstr, errstr_size, "kafka: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            break;
        }
        int64_t off = m->offset;
        /* A record past the end asked for is not handed over. */
        int done = off >= to || fn(opaque, m) != 0 || off + 1 >= to;
        rd_kafka_message_destroy(m);
        if (done) {
            rc = 0;
            break;
        }
    }
    if (*stop && rc != 0) snprintf(errstr, errstr_size, "interrupted");
    rd_kafka_assign(rk, NULL);
    return rc;
}

/* ------------------------------------------------------------------ */
/* JSON lines                                                          */

void out_flush(out_t *o) {
    if (o->n && !o->failed && fwrite(o->buf, 1, o->n, stdout) != o->n) o->failed = 1;
    o->n = 0;
}

void out_raw_full(out_t *o, const char *s, size_t n) {
    out_flush(o);
    if (n > sizeof(o->buf)) { /* longer than the buffer: straight through */
        if (!o->failed && fwrite(s, 1, n, stdout) != n) o->failed = 1;
        return;
    }
    memcpy(o->buf + o->n, s, n);
    o->n += n;
}

/* Digits by hand: snprintf was a third of a large dump's time. */
void out_i64(out_t *o, int64_t v) {
    char b[24], *e = b + sizeof(b), *p = e;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    out_raw(o, p, (size_t)(e - p));
}

/* A JSON string: quotes, backslashes and control characters escaped;
 * bytes that are not UTF-8 (tierd never writes any) as U+FFFD, so the
 * line stays JSON. */
void out_str(out_t *o, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    out_raw(o, "\"", 1);
    while (n > 0) {
        size_t ok = utf8_invalid_at(s, n), run = 0;
        for (size_t i = 0; i <= ok; i++) {
            unsigned char c = i < ok ? (unsigned char)s[i] : 0;
            if (i < ok && c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
                run++;
                continue;
            }
            out_raw(o, s + i - run, run);
            run = 0;
            if (i == ok) break;
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            switch (c) {
            case '"': out_raw(o, "\\\"", 2); break;
            case '\\': out_raw(o, "\\\\", 2); break;
            case '\n': out_raw(o, "\\n", 2); break;
            case '\r': out_raw(o, "\\r", 2); break;
            case '\t': out_raw(o, "\\t", 2); break;
            default: out_raw(o, e, 6); break;
            }
        }
        if (ok == n) break;
        out_raw(o, "\\ufffd", 6); /* one byte that starts no valid sequence */
        s += ok + 1;
        n -= ok + 1;
    }
    out_raw(o, "\"", 1);
}

/* ------------------------------------------------------------------ */
/* Times and numbers                                                   */

static int digits(const char *s, int n, int *out) {
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int tierctl_parse_time(const char *s, int64_t *ms, char *errstr, size_t errstr_size) {
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, msec = 0, has_off = 0, off_min = 0;
    size_t len = strlen(s);

    if (len > 0 && len <= 16 && strspn(s, "0123456789") == len) {
        *ms = strtoll(s, NULL, 10);
        return 0;
    }
    if (len < 10 || digits(p, 4, &y) || p[4] != '-' || digits(p + 5, 2, &mo) || p[7] != '-' ||
        digits(p + 8, 2, &d))
        goto bad;
    p += 10;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        if (digits(p + 1, 2, &h) || p[3] != ':' || digits(p + 4, 2, &mi)) goto bad;
        p += 6;
        if (*p == ':') {
            if (digits(p + 1, 2, &sec)) goto bad;
            p += 3;
            if (*p == '.') {
                int n = 0;
                p++;
                while (isdigit((unsigned char)*p)) {
                    if (n < 3) msec = msec * 10 + (*p - '0');
                    n++;
                    p++;
                }
                if (n == 0) goto bad;
                for (; n < 3; n++) msec *= 10;
            }
        }
    }
    if (*p == 'Z' || *p == 'z') {
        has_off = 1;
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        int sign = *p == '-' ? -1 : 1;
        if (digits(p + 1, 2, &oh)) goto bad;
        p += 3;
        if (*p == ':') p++;
        if (digits(p, 2, &om)) goto bad;
        p += 2;
        has_off = 1;
        off_min = sign * (oh * 60 + om);
    }
    if (*p != '\0' || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        goto bad;
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = sec;
    tm.tm_isdst = -1;
    time_t t = has_off ? timegm(&tm) - (time_t)off_min * 60 : mktime(&tm);
    *ms = (int64_t)t * 1000 + msec;
    return 0;
bad:
    snprintf(errstr, errstr_size,
             "\"%s\" is not a time: use epoch milliseconds or ISO 8601 such as 2026-03-01, "
             "2026-03-01T08:00:00Z or 2026-03-01T08:00:00+08:00",
             s);
    return -1;
}

const char *tierctl_time_text(int64_t ms, char *buf, size_t size) {
    struct tm tm;
    time_t t = (time_t)(ms / 1000);
    gmtime_r(&t, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

const char *tierctl_score_text(int32_t score_c, char *buf, size_t size) {
    if (score_c < 0)
        snprintf(buf, size, "none");
    else
        snprintf(buf, size, "%d.%02d", (int)(score_c / 100), (int)(score_c % 100));
    return buf;
}

/* ------------------------------------------------------------------ */
/* main                                                                */

typedef struct command {
    const char *name;
    int (*run)(int, char **, const char *, volatile sig_atomic_t *);
} command_t;

static const command_t commands[] = {
    {"show", tierctl_show},       {"explain", tierctl_explain}, {"backtest", tierctl_backtest},
    {"rebuild", tierctl_rebuild}, {"dump", tierctl_dump},       {"events", tierctl_events},
    {"seek", tierctl_seek},
};

int main(int argc, char **argv) {
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"verbose", no_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {NULL, 0, NULL, 0}};
    const char *path = NULL;
    int opt, verbose = 0;

    /* "+": options stop at the command; its own options follow it. */
    while ((opt = getopt_long(argc, argv, "+c:vh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 'v': verbose = 1; break;
        case 'h': fputs(help_main, stdout); return TC_OK;
        case 'V': printf("tierctl %s\n", TIERD_VERSION); return TC_OK;
        default: fputs(help_main, stderr); return TC_USAGE;
        }
    }
    if (optind >= argc) {
        fputs(help_main, stderr);
        return TC_USAGE;
    }
    if (strcmp(argv[optind], "help") == 0) {
        fputs(help_main, stdout);
        return TC_OK;
    }
    /* Only the pipeline's warnings unless asked: a replay reviews a lot. */
    log_level = verbose ? LOG_INFO : LOG_WARN;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[optind], commands[i].name) == 0) {
            char **sub = argv + optind;
            int subc = argc - optind;
            optind = 0; /* glibc: start the command's own getopt afresh */
            return commands[i].run(subc, sub, path, &stop_flag);
        }
    fprintf(stderr, "tierctl: unknown command \"%s\"; try tierctl --help\n", argv[optind]);
    return TC_USAGE;
}
