/*
 * tierctl.h -- the operator's tool of tierd, private to the six files
 * of daemon/tierctl/:
 *   tierctl.c   command line, setup, and what the commands share
 *   show.c      show, explain: read one customer, judge it, print
 *   dump.c      dump: every partition and customer as JSON lines
 *   events.c    events: the event topics decoded, as JSON lines
 *   replay.c    backtest, rebuild: orders replayed through apply
 *   seek.c      seek: the offset tierd holds for a partition, moved
 *
 * It is built on tierdcore, the library tierd is built on, and uses its
 * private headers in daemon/: a rule or a codec lives there once, and
 * tierctl calls it rather than keeping a copy.
 *
 * tierctl reads the configuration tierd reads (config_load) and the policy
 * it decides by (policyconf_load).  It never publishes to Kafka, and writes
 * a live key only in `rebuild` and `seek`, which refuse while a daemon holds the
 * partition's lease (store_lease).  The operator's view is docs/tierctl.md,
 * section "tierctl".
 */
#ifndef TIERD_TIERCTL_H
#define TIERD_TIERCTL_H

#include "config.h"
#include "month.h"
#include "store.h"
#include "tierd/policy.h"

#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Exit statuses (docs/tierctl.md). */
enum {
    TC_OK = 0,
    TC_FAIL = 1,      /* Redis or Kafka failed, or the data is unreadable */
    TC_USAGE = 2,     /* bad arguments, configuration or policy refused */
    TC_NOT_FOUND = 3, /* show/explain/dump --customer: no partition knows the customer */
    TC_REFUSED = 4,   /* rebuild: a live tierd owns the partition */
};

typedef struct tierctl {
    config_t conf; /* owned when conf_loaded */
    int conf_loaded;
    policy_t policy;             /* the configured policy (tierd's) */
    month_zone_t zone;           /* the configured time_zone */
    store_t *store;              /* the live keyspace; owned */
    volatile sig_atomic_t *stop; /* set by SIGINT/SIGTERM */
} tierctl_t;

/* Loads the configuration (path may be NULL: defaults and TIERD_*), the
 * time zone and the configured policy, and connects to Redis when
 * `connect`.  Returns TC_OK, TC_USAGE (refused, message printed) or
 * TC_FAIL. */
int tierctl_open(tierctl_t *t, const char *path, int connect);
void tierctl_close(tierctl_t *t);

/* calloc(1, size) for a command's state (large: a policy is), saying
 * "out of memory" on stderr when it fails. */
void *tierctl_calloc(size_t size);

/* How many partitions of the orders topic have state in Redis: one more
 * than the highest P with a <prefix>:{<orders>.P}:meta key (SCAN); 0 when
 * none.  -1 with errstr when Redis fails. */
int32_t tierctl_partitions(store_t *s, const config_t *c, char *errstr, size_t errstr_size);

/* A --partition argument: digits, 0 to INT32_MAX - 1.  0, or -1 when it
 * is anything else. */
int tierctl_partition_arg(const char *s, int32_t *p);

/* TIME as the user writes it: epoch milliseconds (digits only), or ISO 8601
 * "YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z|+HH:MM|-HH:MM]"; without an offset, in
 * the configured time zone.  -1 with errstr when it is neither. */
int tierctl_parse_time(const char *s, int64_t *ms, char *errstr, size_t errstr_size);
/* "2026-03-01T00:00:00Z" (UTC) into buf. */
const char *tierctl_time_text(int64_t ms, char *buf, size_t size);

/* "41.25" for 4125 hundredths, "none" for -1. */
const char *tierctl_score_text(int32_t score_c, char *buf, size_t size);

/* Runs tx's commands in one pipelined round trip; replies[i] for command
 * i (caller frees).  TC_OK or TC_FAIL with errstr. */
int tierctl_query(store_t *s, store_tx_t *tx, redisReply **replies, char *errstr,
                  size_t errstr_size);
/* Adds a command of NUL-terminated words (copied). */
int tierctl_cmd(store_tx_t *tx, int argc, const char *const *argv);

/* Partition p's meta, read without a WATCH (tierctl only looks):
 * tierctl_meta_cmd adds the HMGET to tx, for reading many partitions in
 * one round trip (store_meta_parse reads each reply); tierctl_meta reads
 * one, and whether its customer hash holds states (m->orphan when the
 * meta says none): 1 the partition has a meta, 0 it has none, -1 with
 * errstr. */
int tierctl_meta_cmd(store_tx_t *tx, store_t *s, const config_t *c, int32_t p);
int tierctl_meta(store_t *s, const config_t *c, int32_t p, store_meta_t *m, char *errstr,
                 size_t errstr_size);
/* TC_OK when no live tierd holds partition p's lease (store_lease);
 * TC_REFUSED, or TC_FAIL when Redis failed, with errstr. */
int tierctl_check_lease(tierctl_t *t, int32_t p, char *errstr, size_t errstr_size);
/* Runs tx under a WATCH of p's meta if its epoch is still `epoch` (the one
 * tierctl's own store_claim took).  0, or -1 with errstr. */
int tierctl_fenced_exec(tierctl_t *t, int32_t p, int64_t epoch, const store_tx_t *tx, char *errstr,
                        size_t errstr_size);
/* 0 when tierctl can read partition p's customer states: the format it
 * reads (STATE_FORMAT), or no state yet (and no customer states either:
 * m->orphan).  Else -1 and a sentence naming
 * the fix (`tierctl rebuild --partition P`).  Every command but rebuild
 * refuses such a partition. */
int tierctl_format_check(const config_t *c, int32_t p, const store_meta_t *m, char *errstr,
                         size_t errstr_size);

/* Walks the hash `key` with HSCAN ... COUNT 1000, a page in memory at a
 * time, calling fn for every field and value (non-zero: out of memory,
 * stop).  HSCAN may return a field more than once: fn sees every repeat.
 * 0 when done, -1 with errstr (Redis failed, fn failed, stop set). */
typedef int (*tierctl_field_fn)(void *opaque, const redisReply *field, const redisReply *value);
int tierctl_hscan(store_t *s, const char *key, tierctl_field_fn fn, void *opaque,
                  volatile sig_atomic_t *stop, char *errstr, size_t errstr_size);

/* A Kafka consumer for reading by hand (assign, never subscribe): no
 * group membership, no commits, end of partition reported. */
rd_kafka_t *tierctl_kafka(const config_t *c, char *errstr, size_t errstr_size);
/* Number of partitions of `topic`; -1 with errstr. */
int32_t tierctl_topic_partitions(rd_kafka_t *rk, const char *topic, char *errstr,
                                 size_t errstr_size);
/* The first offset at or after time ms (the end when none); -1 with errstr. */
int64_t tierctl_offset_at(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t ms,
                          char *errstr, size_t errstr_size);

/* Reads [from, to) of one partition, calling fn for each record in
 * offset order (fn returns non-zero to stop).  0 when done, -1 with errstr
 * (Kafka failed, or no record for 30 s before `to`). */
typedef int (*tierctl_record_fn)(void *opaque, rd_kafka_message_t *m);
int tierctl_read(rd_kafka_t *rk, const char *topic, int32_t partition, int64_t from, int64_t to,
                 tierctl_record_fn fn, void *opaque, volatile sig_atomic_t *stop, char *errstr,
                 size_t errstr_size);

/* JSON lines on stdout (dump, events), buffered here: a million
 * customers are millions of lines. */
typedef struct out {
    char buf[1 << 16];
    size_t n;
    int failed; /* a write failed (a closed pipe): stop */
} out_t;
void out_flush(out_t *o);
/* out_raw's path when the bytes do not fit what is left of the buffer. */
void out_raw_full(out_t *o, const char *s, size_t n);
/* Inline: a dump calls these a dozen times a line, mostly with string
 * literals, whose strlen the compiler then counts. */
static inline void out_raw(out_t *o, const char *s, size_t n) {
    if (o->n + n > sizeof(o->buf)) {
        out_raw_full(o, s, n);
        return;
    }
    memcpy(o->buf + o->n, s, n);
    o->n += n;
}
static inline void out_s(out_t *o, const char *s) {
    out_raw(o, s, strlen(s));
}
void out_i64(out_t *o, int64_t v);
/* A JSON string: quotes, backslashes and control characters escaped;
 * bytes that are not UTF-8 (tierd never writes any) as U+FFFD, so the
 * line stays JSON. */
void out_str(out_t *o, const char *s, size_t n);

/* The commands: argv[0] is the command's name. */
int tierctl_show(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_explain(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_backtest(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_rebuild(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_dump(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_events(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_seek(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);

/* The lines `tierctl dump` prints, one of each type, for the help texts:
 * docs/tierctl.md documents each field. */
#define TIERCTL_DUMP_FORMAT                                                                        \
    "  {\"type\":\"partition\",\"partition\":0,\"offset\":1234,\"month\":\"2026-11\","             \
    "\"reviewed\":\"2026-10\",\"epoch\":7}\n"                                                      \
    "  {\"type\":\"customer\",\"partition\":0,\"customer\":\"C1\",\"tier\":3,\"sequence\":4,"      \
    "\"first_month\":\"2026-08\",\"evaluated\":true,\"live_score\":42.7}\n"                        \
    "  {\"type\":\"month\",\"partition\":0,\"customer\":\"C1\",\"month\":\"2026-10\",\"qty\":12,"  \
    "\"amount\":35000,\"orders\":3,\"skus\":2,\"tier\":3,\"grade\":\"A\",\"applied\":4}\n"         \
    "  {\"type\":\"error\",\"partition\":0,\"customer\":\"C2\",\"error\":\"...\"}\n"

/* Help texts, printed by `tierctl COMMAND --help`; docs/tierctl.md repeats them. */
extern const char tierctl_help_show[], tierctl_help_explain[], tierctl_help_backtest[],
    tierctl_help_rebuild[], tierctl_help_dump[], tierctl_help_events[], tierctl_help_seek[];

#endif
