/*
 * tierctl.h -- the operator's tool of tierd, private to its three files:
 *   tierctl.c         command line, setup, and what the commands share
 *   tierctl_show.c    show, explain: read one customer, judge it, print
 *   tierctl_replay.c  backtest, rebuild: orders replayed through apply
 *
 * tierctl reads the configuration tierd reads (config_load) and the policy
 * it decides by (policyconf_load).  It never publishes to Kafka, and writes
 * a live key only in `rebuild`, which refuses while a daemon owns the
 * partition.
 */
#ifndef TIERD_TIERCTL_H
#define TIERD_TIERCTL_H

#include "config.h"
#include "store.h"
#include "tierd/policy.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

/* Exit statuses (documented in TIERCTL.md). */
enum {
    TC_OK = 0,
    TC_FAIL = 1,      /* Redis or Kafka failed, or the data is unreadable */
    TC_USAGE = 2,     /* bad arguments, configuration or policy refused */
    TC_NOT_FOUND = 3, /* show/explain: no partition knows the customer */
    TC_REFUSED = 4,   /* rebuild: a live tierd owns the partition */
};

typedef struct tierctl {
    config_t conf;     /* owned when conf_loaded */
    int conf_loaded;
    policy_t policy;   /* the configured policy (tierd's) */
    store_t *store;    /* the live keyspace; owned */
    volatile sig_atomic_t *stop; /* set by SIGINT/SIGTERM */
} tierctl_t;

/* Loads the configuration (path may be NULL: defaults and TIERD_*), the
 * time zone and the configured policy, and connects to Redis when
 * `connect`.  Returns TC_OK, TC_USAGE (refused, message printed) or
 * TC_FAIL. */
int tierctl_open(tierctl_t *t, const char *path, int connect);
void tierctl_close(tierctl_t *t);

/* How many partitions of the orders topic have state in Redis: one more
 * than the highest P with a <prefix>:{<orders>.P}:meta key (SCAN); 0 when
 * none.  -1 with errstr when Redis fails. */
int32_t tierctl_partitions(store_t *s, const config_t *c, char *errstr, size_t errstr_size);

/* TIME as the user writes it: epoch milliseconds (digits only), or ISO 8601
 * "YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z|+HH:MM|-HH:MM]"; without an offset, in
 * the configured time zone.  -1 with errstr when it is neither. */
int tierctl_parse_time(const char *s, int64_t *ms, char *errstr, size_t errstr_size);
/* "2026-03-01T00:00:00Z" (UTC) into buf. */
const char *tierctl_time_text(int64_t ms, char *buf, size_t size);

/* "41.25" for 4125 hundredths, "none" for -1. */
const char *tierctl_score_text(int32_t score_c, char *buf, size_t size);

/* Reads TierChange values (schemas/tier_change.avsc) with avro-c's
 * generic reader: the schema and one value are built once and reused. */
typedef struct tierctl_tc tierctl_tc_t;
typedef struct tierctl_tc_info {
    int32_t previous_tier; /* 0 when null (the first placement) */
    int32_t new_tier;
    int64_t sequence;
    char reason[32];
    char review_month[16]; /* "YYYY-MM" or "" */
} tierctl_tc_info_t;
tierctl_tc_t *tierctl_tc_new(char *errstr, size_t errstr_size);
void tierctl_tc_destroy(tierctl_tc_t *d);
int tierctl_tc_decode(tierctl_tc_t *d, const void *buf, size_t len, tierctl_tc_info_t *out,
                      char *errstr, size_t errstr_size);

/* One outbox entry's fields (borrowed from the reply). */
typedef struct tierctl_outbox_entry {
    const char *id;      /* stream entry id */
    const char *topic;   /* t */
    const char *key;     /* k (customer) */
    size_t key_len;
    const char *event_id; /* i */
    const char *value;   /* v (Avro) */
    size_t value_len;
} tierctl_outbox_entry_t;
/* Fills e from one XRANGE element; -1 when a field is missing. */
int tierctl_outbox_entry(const redisReply *r, tierctl_outbox_entry_t *e);

/* The commands: argv[0] is the command's name. */
int tierctl_show(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_explain(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_backtest(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);
int tierctl_rebuild(int argc, char **argv, const char *conf_path, volatile sig_atomic_t *stop);

/* Help texts, printed by --help and copied into TIERCTL.md. */
extern const char tierctl_help_show[], tierctl_help_explain[], tierctl_help_backtest[],
    tierctl_help_rebuild[];

#endif
