/*
 * outbox.h -- what a transaction decided, as entries of the partition's
 * outbox stream (store.h): each tier change or quota event the policy
 * decided is encoded (events.h) and written into the same MULTI/EXEC as
 * the state it explains, so a crash can delay an event but never lose it,
 * and a republished event is byte-identical.  publish.c reads the entries
 * out and produces them; nothing here talks to Kafka.
 *
 * An entry is one XADD of fields t (topic), k (key), i (event id) and
 * v (Avro), repeated per event in decision order, at most
 * OUTBOX_ENTRY_EVENTS events: a transaction that decides more (a batch of
 * new customers, a review page) writes several entries, so the publisher
 * reads the outbox in pieces of bounded size.
 *
 * Must never read the clock: an event's bytes are a function of the
 * decision's inputs only.  When Redis loses acknowledged writes, tierd
 * consumes again and decides again; the events it then publishes carry the
 * same event_id as the first ones, and must carry the same bytes, or a
 * subscriber deduplicating by event_id keeps whichever came first.
 */
#ifndef TIERD_OUTBOX_H
#define TIERD_OUTBOX_H

#include "apply.h"
#include "arena.h"
#include "customer.h"
#include "events.h"
#include "month.h"
#include "store.h"
#include "tierd/policy.h"

#include <stddef.h>
#include <stdint.h>

#define OUTBOX_ENTRY_EVENTS 256

/* The XADD arguments of one transaction's entries: (bytes, length) pairs,
 * the variable ones copied into the outbox's arena, alive until
 * outbox_free (after store_exec). */
typedef struct outbox_args {
    const char **v;
    size_t *len;
    size_t n, cap;
    arena_t strs;
} outbox_args_t;

typedef struct outbox {
    const policy_t *policy;   /* borrowed: named in every event */
    events_t *events;         /* borrowed: the encoder */
    const month_zone_t *zone; /* borrowed: when a review decides (outbox_review_at) */
    const char *tier_topic, *quota_topic;
    char key[256];                               /* the partition's outbox stream */
    uint64_t tier_events, quota_events;          /* decided in this transaction */
    uint64_t quota_by_kind[POLICY_QUOTA__COUNT]; /* quota_events, by policy_quota_kind_t */
    outbox_args_t args;
    size_t entry_from, entry_events; /* the entry being filled: its first arg, its events */
} outbox_t;

/* An empty outbox for a transaction on partition p, as a's writers
 * (batches, review pages, profile batches) fill it. */
void outbox_open(outbox_t *o, const apply_ctx_t *a, const apply_part_t *p);

/* Adds the last entry to tx when events were decided (the earlier ones
 * were added as they filled).  The outbox must outlive store_exec. */
int outbox_flush(outbox_t *o, store_tx_t *tx);
/* Frees what the entries hold; the outbox can then be opened again. */
void outbox_free(outbox_t *o);

/* A tier change's decided_at, from what triggered the decision:
 *   - an order (placement, upgrade on the order): the order's placed_at;
 *   - the review of month M: outbox_review_at(z, M), the first instant of
 *     M + 1 in zone z (time_zone), the moment M closes in event time;
 *   - a profile (override, compliance): the profile's updated_at; for a
 *     tombstone, the updated_at of the profile it deletes (0 when none
 *     was stored). */
int64_t outbox_review_at(const month_zone_t *z, int32_t month);

/* Records the policy's decision dec for customer c.  When dec->changed:
 * bumps c's sequence, encodes the tier change (decided at decided_at_ms,
 * see above) and adds it to the transaction's entry.  Always stores
 * dec->next into c->st (marks c dirty when anything moved). */
int outbox_tier_change(outbox_t *o, store_tx_t *tx, customer_t *c, const policy_decision_t *dec,
                       const policy_month_t *window, size_t nwindow, int32_t month,
                       int64_t decided_at_ms, char *errstr, size_t errstr_size);

/* Encodes a quota event the policy decided and adds it to the entry. */
int outbox_quota(outbox_t *o, store_tx_t *tx, const customer_t *c, int32_t month, int32_t tier,
                 policy_quota_kind_t kind, const policy_quota_limits_t *lim, int64_t consumed,
                 const char *order_id, int64_t placed_at_ms, char *errstr, size_t errstr_size);

#endif
