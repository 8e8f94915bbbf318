/*
 * agg.h -- per customer, per month aggregates (docs/behaviour.md), pure.
 *
 * The arithmetic of one order on one customer-month, and the types the
 * customer state (state.h) keeps them in.  agg_apply is the rule written
 * plainly, with a set of SKU names: the unit tests hold state_apply's
 * fingerprinted, in-place version against it.  An order is applied whole
 * or not at all: every sum is checked for overflow before anything
 * changes.
 */
#ifndef TIERD_AGG_H
#define TIERD_AGG_H

#include "tierd/order.h"

#include <stddef.h>
#include <stdint.h>

typedef struct agg_month {
    int64_t qty;    /* sum of quantity, RETURN subtracts, floor 0 */
    int64_t amount; /* sum of quantity * unit_price, same rule */
    int64_t orders; /* SALE orders */
    int64_t skus;   /* distinct SKUs in SALE lines */
} agg_month_t;

/* Distinct SKUs of one customer-month, kept sorted for binary search.
 * The names sit one after another in one buffer, so a set costs two
 * allocations however many SKUs it holds. */
typedef struct agg_sku {
    uint32_t off, len; /* the name is names[off .. off+len) */
} agg_sku_t;

typedef struct agg_skuset {
    agg_sku_t *v; /* sorted by name (owned) */
    size_t n, cap;
    char *names; /* owned */
    size_t used, names_cap;
} agg_skuset_t;

/* 1 added, 0 already there, -1 out of memory. */
int agg_skuset_add(agg_skuset_t *s, const char *sku, size_t len);
void agg_skuset_free(agg_skuset_t *s);

/* Applies a validated order (o->qty and o->amount filled) to its month.
 * Returns ORDER_OK, or ORDER_ERR_OVERFLOW leaving m and skus untouched.
 * For a RETURN, *excess gets the units that would have taken qty below 0. */
order_err_t agg_apply(agg_month_t *m, agg_skuset_t *skus, const order_t *o, int64_t *excess);

#endif
