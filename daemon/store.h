/*
 * store.h -- tierd's state in Redis.  Owns the connection and the key
 * layout; knows nothing of orders or policy.
 *
 * Key layout (all keys of one partition share the hash tag {topic.P}):
 *   <prefix>:{<topic>.<P>}:meta        hash: epoch, offset, month, reviewed, poffset,
 *                                      format (STATE_FORMAT, state.h), owner, updated_at,
 *                                      lease (owner's lease, wall-clock ms; see store_lease),
 *                                      rv_month and rv_after while a paged review runs,
 *                                      prev_fp, prev_pfp (state_order_fp of the value of the record
 *                                      before offset, poffset)
 *   <prefix>:{<topic>.<P>}:c           hash: <customer> -> the customer's whole state, one
 *                                      binary value (state.h, docs/state-format.md)
 *   <prefix>:{<topic>.<P>}:p           hash: <customer> -> profile
 *        "format market chain grade cooperation growth has_override override_tier updated_at"
 *   <prefix>:{<topic>.<P>}:outbox      stream: decided events not yet acknowledged by
 *                                      Kafka, one entry per transaction: t (topic),
 *                                      k (key), i (event id), v (Avro), repeated per event
 *
 * Exactly-once rests on two rules kept here:
 *  - a partition's offset is written in the same MULTI/EXEC as the
 *    customer states it covers;
 *  - every commit runs under WATCH of the meta key after checking the epoch
 *    the writer was given at claim time: a newer owner bumps the epoch, so
 *    a stale owner's EXEC is refused (STORE_FENCED).
 */
#ifndef TIERD_STORE_H
#define TIERD_STORE_H

#include "arena.h"
#include "config.h"

#include <hiredis/hiredis.h>
#include "tierd/order.h"

#include <stddef.h>
#include <stdint.h>

/* STORE_PENDING: sent; the outcome comes later (store_exec_send). */
enum { STORE_OK = 0, STORE_ERR = -1, STORE_FENCED = -2, STORE_DENIED = -3, STORE_PENDING = -4 };

typedef struct store store_t;

typedef struct store_meta {
    int64_t epoch;
    int64_t offset;   /* next order offset to apply; -1 when the partition has no state */
    int32_t month;    /* current event-time month index; -1 when none */
    int32_t reviewed; /* last month reviewed; -1 when none */
    int64_t poffset;  /* next customer-profiles offset to apply; -1 when none */
    int32_t format;   /* state format (state.h); 0 when the meta has none */
    int32_t rv_month; /* the month a paged review is in the middle of; -1 none */
    /* The last customer that review has done (ids in byte order); "" none. */
    char rv_after[ORDER_ID_MAX + 1];
    /* state_order_fp (a 64-bit hash of bytes) of the value of the order
     * record at offset - 1, written with the offset by each batch: a topic
     * made again holds another record there (consumer.c checks it when it
     * takes the partition).  has_prev_fp 0: none (a tool moved the offset,
     * apply_skip moved it past records the broker deleted, or state from
     * before it was kept). */
    uint64_t prev_fp;
    int has_prev_fp;
    uint64_t prev_pfp; /* the same for the profile record at poffset - 1 */
    int has_prev_pfp;
    /* The offset of the record prev_fp (pprev_at: prev_pfp) hashes when
     * only transaction markers and aborted records follow it up to the
     * offset (apply_skip moved it past them; stored as "HASH@AT");
     * -1: the record at offset - 1. */
    int64_t prev_at, pprev_at;
    /* "" when every field present parses; else the first that does not,
     * as `field "value"` (the value cut short): that field reads as absent,
     * and nothing may trust the rest (txn.c and tierctl refuse the
     * partition, naming the fix). */
    char bad[64];
    /* The meta holds no offset, format or review, yet the partition's
     * customer hash holds states (a meta deleted by hand): nothing may
     * start it over from the topic's start (txn.c and tierctl refuse it).
     * Set by store_claim and tierctl's reads (store_meta_orphan). */
    int orphan;
} store_meta_t;

/* One input's fields of a meta (0: orders, 1: profiles) and their names
 * in Redis, for code that treats both inputs alike. */
typedef struct store_input {
    int64_t *offset;
    uint64_t *fp;
    int *has_fp;
    int64_t *at;
    const char *offset_field, *fp_field;
} store_input_t;

static inline store_input_t store_meta_input(store_meta_t *m, int input) {
    store_input_t v = {&m->offset, &m->prev_fp, &m->has_prev_fp, &m->prev_at, "offset", "prev_fp"};
    if (input) {
        store_input_t p = {&m->poffset,  &m->prev_pfp, &m->has_prev_pfp,
                           &m->pprev_at, "poffset",    "prev_pfp"};
        v = p;
    }
    return v;
}

/* A list of commands for one MULTI/EXEC, built by the caller.  Strings are
 * borrowed until store_exec returns; store_tx_printf copies its result. */
typedef struct store_tx {
    struct store_cmd {
        int argc;
        const char **argv;
        size_t *argvlen;
    } * cmds;
    size_t ncmds, cap;
    char **owned; /* strings copied by store_tx_printf / store_tx_arg_copy */
    size_t nowned, capowned;
} store_tx_t;

int store_tx_add(store_tx_t *tx, int argc, const char **argv, const size_t *argvlen);
/* Adds a command whose arguments are given as (ptr, len) pairs, copied. */
int store_tx_addv(store_tx_t *tx, int argc, ...);
/* store_tx_add, but the arguments are copied (argvlen NULL: strlen). */
int store_tx_add_copy(store_tx_t *tx, int argc, const char *const *argv, const size_t *argvlen);
void store_tx_free(store_tx_t *tx);

store_t *store_new(const config_t *c, char *errstr, size_t errstr_size);
void store_destroy(store_t *s);
/* (Re)connects: timeouts, keepalive, AUTH, SELECT.  On a cluster
 * (redis.cluster): reads the slot map from the seeds and connects to every
 * master, so that a node that is no cluster node, no seed answering or a
 * wrong password fails here, before anything is written.  Logs nothing. */
int store_connect(store_t *s, char *errstr, size_t errstr_size);
/* Connected and not backing off; on a cluster, at least one master is. */
int store_connected(const store_t *s);
/* Keys get the hash tag {<tag>.<P>} instead of {<topic>.<P>}: tierctl
 * backtest's scratch keys, so that they have slots of their own, away from
 * the live partition's (on a cluster, maybe on another master), while each
 * scratch partition's keys still share one slot, so that its transactions
 * stay on one node.  -1 when tag is too long or holds a brace. */
int store_set_tag(store_t *s, const char *tag);
/* Whether the store talks to a Redis Cluster. */
int store_cluster(const store_t *s);
/* The node serving partition into name: on a cluster, the master of its
 * slot ("host:port", "-" when none does); else redis.host:port (or the
 * socket).  Returns whether that node is up (connected and not backing
 * off): 0 means the partition waits on it. */
int store_partition_node(store_t *s, const char *topic, int32_t partition, char *name, size_t size);
/* At start: store_connect, then whether the Redis user may run every
 * command tierd sends, on the keys of `topic` (the orders topic): each is
 * queued in a MULTI that is discarded, so nothing is written.
 * STORE_DENIED when Redis answered but refused AUTH, SELECT or one of
 * them (errstr names the command and Redis' reply); STORE_ERR when it did
 * not answer.  On a cluster: the slot map (CLUSTER SLOTS), then the same
 * on every master, with ASKING and EXISTS as well, on the keys of a
 * partition that master serves (ACLs are each node's own).  Then INFO
 * memory on each: STORE_DENIED when a maxmemory with an allkeys-* policy
 * may evict tierd's keys; when INFO is refused, STORE_OK with errstr
 * saying so (a warning for the caller; empty otherwise).  Logs nothing. */
int store_check(store_t *s, const char *topic, char *errstr, size_t errstr_size);
/* Replies of a cluster that redirected a command, since start, by kind:
 * counts[METRICS_REDIR_MOVED], _ASK, _TRYAGAIN, _CLUSTERDOWN (metrics.h);
 * all 0 on a single node. */
void store_redirects(const store_t *s, uint64_t *counts);
/* Commands sent since start (for metrics and the benchmark). */
uint64_t store_commands(const store_t *s);
/* Round trips so far: total seconds, count, and the cumulative histogram
 * over metrics_rtt_bounds (METRICS_RTT_BUCKETS entries). */
void store_rtt(const store_t *s, double *sum, uint64_t *count, double *buckets);

/* Key of partition state: writes "<prefix>:{topic.P}:<suffix>" into buf. */
void store_key(const store_t *s, const char *topic, int32_t partition, const char *suffix,
               char *buf, size_t size);

/* Takes ownership of a partition: bumps its epoch (fencing any older
 * owner), takes the lease and returns the stored offset and month, in one
 * MULTI/EXEC. */
int store_claim(store_t *s, const char *topic, int32_t partition, const char *owner,
                store_meta_t *out, char *errstr, size_t errstr_size);

/* The owner's lease.  The epoch fences a stale writer but says nothing
 * about whether the owner is alive; the lease does.  meta.lease holds the
 * wall-clock ms until which the owner holds the partition: tierd takes it
 * at claim, renews it every STORE_LEASE_RENEW_MS while it owns the
 * partition and removes it when it gives the partition up.  A live owner
 * is one whose lease lies in the future (tierctl rebuild refuses then);
 * a killed one's lapses STORE_LEASE_MS after its last renewal. */
#define STORE_LEASE_MS 30000
#define STORE_LEASE_RENEW_MS 10000

/* The wall clock in ms, as leases are written. */
int64_t store_now_ms(void);

/* Sets meta.lease to until_ms (0: removes it), only while meta.epoch is
 * still `epoch` (watched): STORE_FENCED when another owner took over.
 * now (may be NULL) gets the meta as read, so the caller can tell a Redis
 * that went back in time while nothing else was written. */
int store_lease(store_t *s, const char *topic, int32_t partition, int64_t epoch, int64_t until_ms,
                store_meta_t *now, char *errstr, size_t errstr_size);

/* For tools that only look (tierctl): the meta fields store_read reads,
 * in its order, to HMGET without a WATCH, and that HMGET's reply read
 * into m.  store_meta_parse returns 1 when the meta key has any of them,
 * 0 when it has none (m then says "no state"), -1 when r is not such a
 * reply. */
#define STORE_META_NFIELDS 10
extern const char *const store_meta_fields[STORE_META_NFIELDS];
int store_meta_parse(const redisReply *r, store_meta_t *m);
/* No offset, profiles offset, format or review: a partition nobody has
 * written yet (epoch, owner and lease are a claim's, not state). */
int store_meta_empty(const store_meta_t *m);
/* Sets m->orphan from the reply to HSCAN <the partition's c key> 0 COUNT
 * 1: m says no state (store_meta_empty, every field parsing) while the
 * hash holds customer states.  -1 when scan is not such a reply. */
int store_meta_orphan(store_meta_t *m, const redisReply *scan);

/* One round trip: WATCH meta, HMGET meta, then for each i HMGET keys[i]
 * with fields[i] (HGETALL when nfields[i] is 0).  replies[i] receives the
 * array reply, which the store owns: it lives in the store's reply arena
 * until the next store_read, and must NOT be given to freeReplyObject.
 * The WATCH stays armed for store_exec/store_unwatch. */
int store_read(store_t *s, const char *topic, int32_t partition, store_meta_t *meta, size_t nkeys,
               char **keys, const char ***fields, size_t **fieldlens, size_t *nfields,
               redisReply **replies, char *errstr, size_t errstr_size);

/* The same watched read, sent in parts while the caller goes on working
 * (one node only): Redis reads the first customers while the caller
 * decodes the next.  store_read_open appends WATCH meta and HMGET meta
 * (behind a transaction in the air, as store_read); each
 * store_read_part appends HMGET keys[i] fields[i] for i < nkeys (the same
 * keys every part, STORE_READ_KEYS_MAX at most, each with fields) and
 * writes everything out; store_read_close writes what is left, settles
 * the transaction in the air, and reads every reply: replies[i] is one
 * array of the parts' elements for keys[i], in order, owned as
 * store_read's are.  Between open and close nothing else may use the
 * store.  store_read_open fails without sending anything on a cluster or
 * when Redis is not reachable (read with store_read then); a part that
 * cannot be written drops the connection, and close says so.
 * store_read_abort reads and drops the replies and unwatches. */
#define STORE_READ_KEYS_MAX 4
int store_read_open(store_t *s, const char *topic, int32_t partition, char *errstr,
                    size_t errstr_size);
int store_read_part(store_t *s, size_t nkeys, char *const *keys, const char **const *fields,
                    size_t *const *fieldlens, const size_t *nfields);
int store_read_close(store_t *s, store_meta_t *meta, size_t *nkeys, redisReply **replies,
                     char *errstr, size_t errstr_size);
void store_read_abort(store_t *s);
int store_unwatch(store_t *s);

/* One round trip: MULTI, tx's commands, EXEC, under the WATCH armed by
 * store_read.  STORE_FENCED when the WATCH saw another writer. */
int store_exec(store_t *s, const store_tx_t *tx, char *errstr, size_t errstr_size);

/* store_exec without waiting for its reply: the transaction is written to
 * the connection and STORE_PENDING returned, so the caller works while
 * Redis executes it.  Its outcome (STORE_OK, STORE_FENCED or STORE_ERR,
 * and why) goes to fn once read: at store_settle, which every other
 * store call that talks to Redis runs first, so Redis' answers are read
 * in the order they were asked for and at most one transaction is in the
 * air.  fn must not call the store.  Anything else than STORE_PENDING is
 * the outcome itself (fn is not called): an error sending, or on a
 * cluster, where the transaction runs at once as store_exec. */
typedef void (*store_settled_fn)(void *opaque, int rc, const char *errstr);
int store_exec_send(store_t *s, const store_tx_t *tx, store_settled_fn fn, void *opaque,
                    char *errstr, size_t errstr_size);
/* Reads the reply of the transaction in the air, if any, and hands its
 * outcome to its fn.  Returns that outcome; STORE_OK when none was. */
int store_settle(store_t *s);

/* Plain commands outside any transaction (the outbox publisher): one
 * pipelined round trip; replies[i] for tx's command i (caller frees).
 * On a cluster each command goes to the master of its key's slot
 * (argv[1]); a command whose master cannot be reached gets an error reply
 * of its own, so the other commands' replies still count; STORE_ERR only
 * when no command could be sent.  A command without a key gets an error
 * reply there: use store_scan to list keys. */
int store_pipeline(store_t *s, const store_tx_t *tx, redisReply **replies, char *errstr,
                   size_t errstr_size);
/* The same, with every reply built in a: they live until a is reset or
 * freed and must NOT be given to freeReplyObject.  One arena of objects
 * instead of a malloc per reply and per string, for a caller that reads
 * thousands of small replies at a time (the publisher's outboxes). */
int store_pipeline_in(store_t *s, const store_tx_t *tx, redisReply **replies, arena_t *a,
                      char *errstr, size_t errstr_size);

/* A pipeline in two halves, for a reader that works on one reply while
 * Redis makes the next (tierctl dump): store_pipeline_send writes tx's
 * commands out and returns; store_pipeline_recv reads the n oldest replies
 * not yet read (caller frees).  One Redis only (STORE_ERR on a cluster:
 * use store_pipeline); nothing else may use s while replies are unread.
 * A failure drops the connection, with every reply it still owed. */
int store_pipeline_send(store_t *s, const store_tx_t *tx, char *errstr, size_t errstr_size);
int store_pipeline_recv(store_t *s, size_t n, redisReply **replies, char *errstr,
                        size_t errstr_size);

/* Every key matching pattern (SCAN MATCH), on the one node or on every
 * master of a cluster, to fn; fn returns nonzero to stop (STORE_ERR). */
typedef int (*store_scan_fn)(void *opaque, const char *key, size_t len);
int store_scan(store_t *s, const char *pattern, store_scan_fn fn, void *opaque, char *errstr,
               size_t errstr_size);

#endif
