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

#define TXN_KEYS_MAX STORE_READ_KEYS_MAX

/* What a transaction reads besides the meta: HMGET keys[i] fields[i]
 * (HGETALL when nfields[i] is 0). */
typedef struct txn_read {
    size_t nkeys;
    char *keys[TXN_KEYS_MAX];
    const char **fields[TXN_KEYS_MAX];
    size_t *flens[TXN_KEYS_MAX];
    size_t nfields[TXN_KEYS_MAX];
} txn_read_t;

/* A writer's answers: the meta it read says its view is stale (decide);
 * there is nothing to write after all (stream). */
enum { TXN_AGAIN = 1, TXN_SKIP = 2 };

/* A read going out in parts while the writer plans (txn_ops_t.stream). */
typedef struct txn_stream txn_stream_t;

/* Sends what r names (the same keys every part, each with fields) to be
 * read with the first attempt; nothing when the read cannot go in parts
 * (a cluster, Redis unreachable), and the attempt then reads it all
 * after plan.  The replies to each key reach decide as one array, the
 * parts' fields in order. */
void txn_stream_part(txn_stream_t *st, const txn_read_t *r);

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
    /* Optional: the writer's planning, before the first attempt, with its
     * reads sent in parts as it goes (txn_stream_part), so Redis reads
     * while the writer still works.  The first attempt of a streamed read
     * does not call plan: stream must leave the writer as plan would, and
     * have sent in its parts exactly what plan would read.  APPLY_OK,
     * TXN_SKIP (nothing to write: txn_run returns APPLY_OK), or an APPLY_*
     * error. */
    int (*stream)(void *ctx, txn_stream_t *st, char *errstr, size_t errstr_size);
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

/* APPLY_CORRUPT when a field of Redis' meta does not parse (now->bad),
 * or when it still says no state while the claim found customer states
 * (p->meta.orphan): errstr names the key, what is wrong and the fix, and
 * tierd_state_corrupt_total counts it.  Else APPLY_OK.  Judged before
 * txn_meta_verdict, whose offsets may be what does not parse. */
int txn_meta_unreadable(apply_ctx_t *a, const apply_part_t *p, const store_meta_t *now,
                        char *errstr, size_t errstr_size);

/* Whether meta says the partition holds state this tierd can read: a
 * format from STATE_FORMAT_OLDEST to STATE_FORMAT, or no state at all yet. */
int txn_format_ok(const store_meta_t *m);

#endif
