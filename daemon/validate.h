/*
 * validate.h -- judges a decoded order against the rules of docs/behaviour.md.
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

/* The default of min_placed_at_ms: 2000-01-01T00:00:00Z.  Orders stamped
 * earlier come from a producer whose clock or field mapping is broken. */
#define VALIDATE_MIN_PLACED_AT_MS_DEFAULT 946684800000LL

typedef struct validate_rules {
    char currency[4];           /* ISO 4217 code the orders must carry, e.g. "EUR" */
    int64_t max_future_skew_ms; /* how far placed_at may be ahead of now */
    int64_t min_placed_at_ms;   /* placed_at below this is BAD_PLACED_AT; a rules
                                 * struct left at zero refuses only placed_at < 0 */
} validate_rules_t;

/* Checks, in this order, and stops at the first failure:
 *   EMPTY_ID (order_id, then customer_id);
 *   for order_id, then customer_id: BAD_ID (too long, control character),
 *     then BAD_UTF8;
 *   BAD_UTF8 for the record key, then KEY_MISMATCH (both only when key is
 *     non-NULL and key_len > 0);
 *   NO_LINES, TOO_MANY_LINES;
 *   per line: BAD_SKU (empty, too long, control character), BAD_UTF8,
 *     BAD_QUANTITY, NEGATIVE_PRICE;
 *   OVERFLOW;
 *   BAD_UTF8 for the currency, then BAD_CURRENCY;
 *   BAD_PLACED_AT (placed_at < r->min_placed_at_ms), then FUTURE.
 * So a string's own rules (empty, length, control characters) come first,
 * then its encoding, then the rules that compare it with something else.
 *
 * On ORDER_OK fills o->qty (sum of quantities) and o->amount (sum of
 * quantity * unit_price), both positive even for a RETURN.  On failure errstr
 * names the offending value, e.g. "line 3: quantity -2 must be > 0".
 * ORDER_ERR_INTERNAL means the caller passed NULL where it must not. */
order_err_t validate_order(order_t *o, const void *key, size_t key_len, int64_t now_ms,
                           const validate_rules_t *r, char *errstr, size_t errstr_size);

/* The rules an id obeys wherever it comes from (an order's ids, a
 * profile's customer_id, a profile tombstone's key): EMPTY_ID when len is 0,
 * BAD_ID when longer than ORDER_ID_MAX or holding a control character (NUL
 * included), BAD_UTF8 when not well-formed UTF-8, else ORDER_OK.  what names
 * the field in errstr, e.g. "customer_id". */
order_err_t validate_id(const char *what, const void *id, size_t len, char *errstr,
                        size_t errstr_size);

#endif
