/*
 * customer.h -- one customer as a transaction decides on it: its tier
 * state, sequence, live score and scale, loaded from its stored state
 * (state.h), and the profile in force (the p hash, profile_text.h).
 *
 * Order batches, review pages and profile batches each load the customers
 * they touch into a customer_t, let the policy decide, record what it
 * decided through outbox.h (which moves the tier state and the sequence),
 * and store the customer back into its state when it is dirty.
 *
 * Pure: no I/O, no clock.
 */
#ifndef TIERD_CUSTOMER_H
#define TIERD_CUSTOMER_H

#include "state.h"
#include "tierd/order.h"
#include "tierd/policy.h"

#include <stddef.h>
#include <stdint.h>

typedef struct customer {
    char id[ORDER_ID_MAX + 1];
    size_t len;
    policy_state_t st;
    int64_t seq;          /* tier changes published so far */
    int32_t live_score_c; /* score over the window of its latest order, hundredths; -1 none */
    char scale;           /* classification scale digit from the last review, 'X' before */
    int has_profile;
    policy_profile_t profile;
    int64_t profile_updated_at;
    int dirty; /* the decision state changed: write it back */
} customer_t;

/* The profile in force: the customer's own or the policy's default. */
const policy_profile_t *customer_profile(const customer_t *c, const policy_t *policy);

/* The decision fields (tier state, sequence, live score, scale) from the
 * stored state s, and back into it.  Nothing else of either is touched. */
void customer_load(customer_t *c, const state_customer_t *s);
void customer_store(const customer_t *c, state_customer_t *s);

#endif
