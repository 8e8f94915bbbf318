/*
 * apply.h -- applies one partition's batch of order records to Redis,
 * exactly once.
 *
 * Per batch: decode and validate every record, read the state it touches
 * in one watched round trip, decide in C (lateness, duplicates, sums,
 * overflow), hand the refused records to the dead-letter sink and wait
 * until they are durable, then write aggregates, applied order ids and the
 * partition's next offset in one MULTI/EXEC.  A crash anywhere before EXEC
 * leaves Redis as it was; after EXEC the offset says the batch is done.
 */
#ifndef TIERD_APPLY_H
#define TIERD_APPLY_H

#include "decode.h"
#include "events.h"
#include "fault.h"
#include "month.h"
#include "store.h"
#include "strmap.h"
#include "tierd/order.h"
#include "tierd/policy.h"
#include "validate.h"

#include <stddef.h>
#include <stdint.h>

enum { APPLY_OK = 0, APPLY_RETRY = -1, APPLY_FENCED = -2, APPLY_REWIND = -3, APPLY_CORRUPT = -4 };

typedef enum {
    MSG_NEW = 0,
    MSG_APPLIED,     /* counted into the aggregates */
    MSG_DUPLICATE,   /* order_id already applied for this customer: ignored */
    MSG_REDELIVERED, /* offset below the partition's stored offset: ignored */
    MSG_DEAD,        /* refused: goes to the dead-letter topic */
} apply_state_t;

typedef struct apply_msg {
    int64_t offset;
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    /* results */
    apply_state_t state;
    order_err_t verdict;
    char reason[240];
} apply_msg_t;

typedef struct apply_part {
    const char *topic;
    int32_t partition;
    store_meta_t meta; /* epoch from the claim; offset and month as last committed */
    int outbox_dirty;  /* events were decided: the publisher has work */
    int review_steady; /* the last review changed nothing and nobody is new */
} apply_part_t;

typedef struct apply_stats {
    uint64_t applied, duplicates, redelivered, dead, batches, fenced;
    uint64_t return_excess_units;
    uint64_t reviews, profiles;
    uint64_t dead_by_reason[ORDER_ERR__COUNT + 1];
    uint64_t tier_events, quota_events;          /* decided and committed to the outbox */
    uint64_t quota_by_kind[POLICY_QUOTA__COUNT]; /* quota_events, by policy_quota_kind_t */
    double review_seconds;                       /* wall time spent in committed reviews */
    uint64_t state_corrupt;                      /* customer states that did not parse */
    uint64_t review_pages;                       /* review transactions committed */
} apply_stats_t;

/* An order batch whose EXEC was sent and whose reply is still to be read
 * (txn_ops_t.later): what it counts waits here until Redis confirms it. */
typedef struct apply_flight {
    int active;
    int32_t partition;
    int64_t from;   /* the partition's next offset until it landed */
    int64_t offset; /* and once it landed */
    apply_stats_t tally;
} apply_flight_t;

/* Told the outcome of a transaction sent ahead: APPLY_OK (it landed; offset
 * is the partition's next), APPLY_FENCED (another instance claimed the
 * partition), or APPLY_REWIND (refused, or its reply lost: consume again
 * from what Redis holds).  Must not call the store. */
typedef void (*apply_settled_fn)(void *opaque, int32_t partition, int64_t offset, int rc,
                                 const char *errstr);

/* Makes the refused records durable (the dead-letter topic).  Returns 0
 * only when every one of them is written; the batch is not committed
 * otherwise. */
typedef int (*apply_dead_fn)(void *opaque, const apply_part_t *p, apply_msg_t **dead, size_t n,
                             char *errstr, size_t errstr_size);

typedef struct apply_ctx {
    store_t *store;     /* borrowed */
    decoder_t *decoder; /* borrowed */
    validate_rules_t rules;
    int32_t window;         /* W */
    month_zone_t zone;      /* time_zone: months of orders, reviews' decided_at */
    const char *owner;      /* instance id, written into meta */
    const policy_t *policy; /* borrowed; NULL: aggregates only, no decisions */
    events_t *events;       /* borrowed */
    const char *tier_topic, *quota_topic, *profile_topic;
    apply_dead_fn dead;
    void *dead_opaque;
    apply_stats_t stats;
    fault_t fault; /* the tests' hooks (fault.h): none unless built with them */
    apply_flight_t flight;
    apply_settled_fn settled; /* NULL: every EXEC waits for its reply */
    void *settled_opaque;
    int64_t idle_close_after_ms;
    /* working memory, reused between batches */
    order_t decoded; /* every record is decoded here; it keeps the lines */
    order_t *orders; /* the batch's valid orders, without their lines */
    size_t orders_cap;
    struct batch_work *work; /* batch.c's per-batch arrays: grown, never shrunk */
    strmap_t cust;           /* customer id -> its index in the batch */
} apply_ctx_t;

void apply_init(apply_ctx_t *a);
/* Reads the reply of a batch's EXEC still in the air, if any (its outcome
 * goes to a->settled). */
void apply_settle(apply_ctx_t *a);
/* Gives back the batches' working memory, which they keep between
 * batches at the largest size seen (grown again by the next batch).
 * A review does this first: its pass 1 holds an entry per customer of the
 * partition, and the two never need their memory at once. */
void apply_release(apply_ctx_t *a);
/* Whether partition's last batch was sent and not yet confirmed. */
int apply_in_flight(const apply_ctx_t *a, int32_t partition);
void apply_stats_add(apply_stats_t *to, const apply_stats_t *from);
/* A customer's state in field id (idlen bytes) of hash ckey does not
 * parse (why): errstr names both, tierd_state_corrupt_total counts it
 * when count is set, and the caller's partition waits for `tierctl
 * rebuild` (the customer is never replaced by a new one).  Returns
 * APPLY_CORRUPT. */
int apply_corrupt(apply_ctx_t *a, const char *ckey, const char *id, size_t idlen, const char *why,
                  int count, char *errstr, size_t errstr_size);
/* The hash a later reading knows the topic by (meta's prev_fp, prev_pfp;
 * consumer.c's topic_check): 1 and *fp = state_order_fp of last's value
 * when a batch ending with `last` moves the offset `held` to just after
 * it; 0 when every record was below `held` (redelivered), whose hash
 * then stays. */
int apply_prev_fp(const apply_msg_t *last, int64_t held, uint64_t *fp);
/* Moves p's stored offset of input (0: orders, 1: profiles) up to `to`,
 * in a fenced transaction of its own, when Redis holds less: the broker
 * deleted the records between before tierd read them (consumer.c's
 * out_of_range), or they are transaction markers and aborted records
 * (marker_tick), and no batch moves the offset past them until a record
 * comes after.  keep_check 1 (markers only): the hash of the last record
 * applied (prev_fp, prev_pfp) stays, now saying its offset ("HASH@AT",
 * store.h's prev_at), so a partition taken later still checks that record;
 * 0 (records deleted): the hash goes, its record may be gone.  Returns
 * APPLY_* (txn_run). */
int apply_skip(apply_ctx_t *a, apply_part_t *p, int input, int64_t to, int keep_check, char *errstr,
               size_t errstr_size);
void apply_free(apply_ctx_t *a);

/* Applies msgs (one partition, ascending offsets).  now_ms is the wall
 * clock for the future-skew rule.  APPLY_FENCED: another instance owns the
 * partition now; drop the batch.  APPLY_RETRY: Redis or the dead-letter
 * sink failed; nothing was written, call again later with the same msgs.
 * APPLY_REWIND: Redis went back in time (it lost acknowledged writes, e.g.
 * a crash with appendfsync everysec): re-claim the partition and consume
 * again from the offset Redis now holds. */
int apply_batch(apply_ctx_t *a, apply_part_t *p, apply_msg_t *msgs, size_t n, int64_t now_ms,
                char *errstr, size_t errstr_size);

#endif
