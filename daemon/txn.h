/*
 * txn.h -- one watched transaction on a partition, the same for every
 * writer (order batches, review pages, profile batches).
 *
 * A writer says what it reads and, given what Redis holds, what it
 * writes; txn_run does the rest, once for all of them: WATCH the
 * partition's meta and read in one round trip; judge whether Redis is
 * still ours (txn_meta_verdict: FENCED when another instance claimed the
 * partition, REWIND when Redis lost writes) and whether it holds the
 * state format this tierd writes; let the writer decide; MULTI/EXEC; a
 * WATCH that fired is FENCED.  When the writer finds its cached view stale
 * (our last EXEC landed though its reply was lost, say), the meta is
 * refreshed, the outbox marked for publishing, and the transaction is
 * decided again, at most three times.
 */
#ifndef TIERD_TXN_H
#define TIERD_TXN_H

#include "apply.h"

#define TXN_KEYS_MAX 4

/* What a transaction reads besides the meta: HMGET keys[i] fields[i]
 * (HGETALL when nfields[i] is 0). */
typedef struct txn_read {
    size_t nkeys;
    char *keys[TXN_KEYS_MAX];
    const char **fields[TXN_KEYS_MAX];
    size_t *flens[TXN_KEYS_MAX];
    size_t nfields[TXN_KEYS_MAX];
} txn_read_t;

/* A writer's answer when the meta it read says its view is stale. */
enum { TXN_AGAIN = 1 };

typedef struct txn_ops {
    /* Fills what to read.  Called before every attempt. */
    int (*plan)(void *ctx, txn_read_t *r, char *errstr, size_t errstr_size);
    /* Given the meta (ours, in our format) and the replies, decides and
     * adds the writes to tx.  APPLY_OK, TXN_AGAIN, or an APPLY_* error
     * with errstr set.  The replies are freed after it returns. */
    int (*decide)(void *ctx, const store_meta_t *now, redisReply **replies, store_tx_t *tx,
                  char *errstr, size_t errstr_size);
    /* After EXEC: the writer moves its caches forward and counts what it
     * committed into tally. */
    void (*committed)(void *ctx, apply_stats_t *tally);
    fault_point_t fault; /* the tests' hook before its EXEC (fault.h) */
    /* The EXEC may be sent without waiting for its reply
     * (store_exec_send): committed then runs at once, as if it had
     * landed, with the counts kept aside (apply_flight_t) until the reply
     * says so; a refusal or a lost reply goes to the apply context's
     * settled hook instead, and the cached meta, now ahead of Redis, makes
     * the partition's next transaction REWIND. */
    int later;
} txn_ops_t;

/* Runs the transaction.  Returns APPLY_OK, APPLY_RETRY (Redis failed, or
 * the state kept changing), APPLY_FENCED, APPLY_REWIND or APPLY_CORRUPT
 * (the partition holds another state format), errstr saying why. */
int txn_run(apply_ctx_t *a, apply_part_t *p, const txn_ops_t *ops, void *ctx, char *errstr,
            size_t errstr_size);

/* What Redis' meta (read under WATCH) says of our cached one:
 * APPLY_FENCED when another instance claimed the partition (a newer epoch),
 * else APPLY_REWIND when Redis is older in epoch, offset or profiles offset
 * (it lost writes: consume again from what it holds), else APPLY_OK.
 * One rule for batches, reviews and profiles. */
int txn_meta_verdict(const apply_part_t *p, const store_meta_t *now);

/* Whether meta says the partition holds state this tierd can read: a
 * format from STATE_FORMAT_OLDEST to STATE_FORMAT, or no state at all yet. */
int txn_format_ok(const store_meta_t *m);

#endif
