/*
 * decide.h -- the "decide" step: turns stored state into the policy
 * engine's inputs and its decisions into events in the outbox.
 *
 * Owns the text forms of a customer's decision state and profile in Redis
 * (see store.h for the keys), and the outbox entries.  An event is encoded
 * (Avro) when it is decided and written into the same MULTI/EXEC as the
 * state it explains, so a crash can delay it but never lose it, and a
 * republished event is byte-identical.
 *
 * Must never read the clock: an event's bytes are a function of the
 * decision's inputs only.  When Redis loses acknowledged writes, tierd
 * consumes again and decides again; the events it then publishes carry the
 * same event_id as the first ones, and must carry the same bytes, or a
 * subscriber deduplicating by event_id keeps whichever came first.
 */
#ifndef TIERD_DECIDE_H
#define TIERD_DECIDE_H

#include "events.h"
#include "month.h"
#include "store.h"
#include "tierd/order.h"
#include "tierd/policy.h"

#include <stddef.h>
#include <stdint.h>

typedef struct decide_customer {
    char id[ORDER_ID_MAX + 1];
    size_t len;
    policy_state_t st;
    int64_t seq;          /* tier changes published so far */
    int32_t live_score_c; /* score over the window of its latest order, hundredths; -1 none */
    char scale;           /* classification scale digit from the last review, 'X' before */
    int has_profile;
    policy_profile_t profile;
    int64_t profile_updated_at;
    int dirty; /* state changed: write it back */
    size_t batch_index; /* its place in a profiles batch's field lists */
} decide_customer_t;

/* A growable list of (bytes, length) arguments that owns its copies. */
typedef struct decide_args {
    char **v;
    size_t *len;
    size_t n, cap;
} decide_args_t;

int decide_args_push(decide_args_t *a, const char *s, size_t len);
void decide_args_free(decide_args_t *a);

typedef struct decide_ctx {
    const policy_t *policy; /* borrowed */
    events_t *events;       /* borrowed */
    const month_zone_t *zone; /* borrowed: when a review decides (decide_review_at) */
    const char *tier_topic, *quota_topic;
    char outbox_key[256];
    uint64_t tier_events, quota_events; /* counters */
    /* Events decided in this transaction: one outbox entry holds them all
     * (fields t, k, i, v repeated per event, in decision order). */
    decide_args_t outbox;
    size_t entry_from, entry_events; /* the entry being filled: its first arg, its events */
} decide_ctx_t;

/* Adds the last outbox entry to tx when events were decided (an entry
 * holds at most 256 events; the earlier ones were added as they filled);
 * the ctx must outlive store_exec (decide_ctx_free after it). */
int decide_flush_outbox(decide_ctx_t *d, store_tx_t *tx);
void decide_ctx_free(decide_ctx_t *d);

/* "format market chain grade cooperation growth has_override override_tier updated_at" */
int decide_profile_parse(policy_profile_t *p, int64_t *updated_at, const char *s, size_t len);
int decide_profile_format(const policy_profile_t *p, int64_t updated_at, char *buf, size_t size);

/* The profile in force: the customer's own or the policy's default. */
const policy_profile_t *decide_profile(const decide_ctx_t *d, const decide_customer_t *c);

/* A tier change's decided_at, from what triggered the decision:
 *   - an order (placement, upgrade on the order): the order's placed_at;
 *   - the review of month M: decide_review_at(M), the first instant of
 *     M + 1 in zone z (time_zone), the moment M closes in event time;
 *   - a profile (override, compliance): the profile's updated_at; for a
 *     tombstone, the updated_at of the profile it deletes (0 when none
 *     was stored). */
int64_t decide_review_at(const month_zone_t *z, int32_t month);

/* When dec->changed: bumps the sequence, encodes the tier change (decided
 * at decided_at_ms, see above) and adds it to the transaction's outbox
 * entry.  Always stores dec->next into c->st (marks c dirty when anything
 * moved). */
int decide_tier_change(decide_ctx_t *d, store_tx_t *tx, decide_customer_t *c,
                       const policy_decision_t *dec, const policy_month_t *window,
                       size_t nwindow, int32_t month, int64_t decided_at_ms, char *errstr,
                       size_t errstr_size);

/* Encodes a quota event and adds it to the transaction's outbox entry. */
int decide_quota(decide_ctx_t *d, store_tx_t *tx, const decide_customer_t *c, int32_t month,
                 int32_t tier, policy_quota_kind_t kind, const policy_quota_limits_t *lim,
                 int64_t consumed, const char *order_id, int64_t placed_at_ms, char *errstr,
                 size_t errstr_size);

#endif
