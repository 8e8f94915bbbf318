/*
 * validate.h -- judges a decoded order against the rules of SPEC section 4.
 *
 * Pure: no clock (the caller passes now_ms), no I/O, no globals, so every
 * rule is a unit test.  Deciding ORDER_ERR_LATE needs the partition's window
 * and is not done here.
 */
#ifndef TIERD_VALIDATE_H
#define TIERD_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "tierd/order.h"

typedef struct validate_rules {
    char currency[4];           /* ISO 4217 code the orders must carry, e.g. "EUR" */
    int64_t max_future_skew_ms; /* how far placed_at may be ahead of now */
} validate_rules_t;

/* Checks, in this order, and stops at the first failure: EMPTY_ID, BAD_ID,
 * KEY_MISMATCH (only when key is non-NULL and key_len > 0), NO_LINES,
 * TOO_MANY_LINES, per line BAD_SKU / BAD_QUANTITY / NEGATIVE_PRICE, then
 * OVERFLOW, BAD_CURRENCY, FUTURE.
 *
 * On ORDER_OK fills o->qty (sum of quantities) and o->amount (sum of
 * quantity * unit_price), both positive even for a RETURN.  On failure errstr
 * names the offending value, e.g. "line 3: quantity -2 must be > 0".
 * ORDER_ERR_INTERNAL means the caller passed NULL where it must not. */
order_err_t validate_order(order_t *o, const void *key, size_t key_len, int64_t now_ms,
                           const validate_rules_t *r, char *errstr, size_t errstr_size);

#endif
