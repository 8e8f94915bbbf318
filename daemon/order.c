/*
 * order.c -- the small pieces of the order contract that are code rather
 * than declarations: the stable reason strings and the order's destructor.
 *
 * The reason strings leave the process (dead-letter header "tierd.reason")
 * and other programs match on them, so they are spelled out one by one
 * instead of being derived from the enum names by a macro: renaming an enum
 * constant must never change what goes on the wire.
 */
#include <stdlib.h>
#include <string.h>

#include "tierd/order.h"

const char *order_reason_code(order_err_t err) {
    switch (err) {
    case ORDER_OK: return "OK";
    case ORDER_ERR_NOT_AVRO: return "NOT_AVRO";
    case ORDER_ERR_EMPTY_ID: return "EMPTY_ID";
    case ORDER_ERR_BAD_ID: return "BAD_ID";
    case ORDER_ERR_KEY_MISMATCH: return "KEY_MISMATCH";
    case ORDER_ERR_NO_LINES: return "NO_LINES";
    case ORDER_ERR_TOO_MANY_LINES: return "TOO_MANY_LINES";
    case ORDER_ERR_BAD_SKU: return "BAD_SKU";
    case ORDER_ERR_BAD_QUANTITY: return "BAD_QUANTITY";
    case ORDER_ERR_NEGATIVE_PRICE: return "NEGATIVE_PRICE";
    case ORDER_ERR_OVERFLOW: return "OVERFLOW";
    case ORDER_ERR_BAD_CURRENCY: return "BAD_CURRENCY";
    case ORDER_ERR_FUTURE: return "FUTURE";
    case ORDER_ERR_LATE: return "LATE";
    case ORDER_ERR_INTERNAL: return "INTERNAL";
    case ORDER_ERR_BAD_FIELD: return "BAD_FIELD";
    case ORDER_ERR_BAD_PLACED_AT: return "BAD_PLACED_AT";
    case ORDER_ERR_BAD_UTF8: return "BAD_UTF8";
    case ORDER_ERR_UNKNOWN_SCHEMA: return "UNKNOWN_SCHEMA";
    case ORDER_ERR_INCOMPATIBLE_SCHEMA: return "INCOMPATIBLE_SCHEMA";
    case ORDER_ERR__COUNT: break;
    }
    /* A value outside the enum is a bug in the caller; say so rather than
     * return NULL into a header. */
    return "UNKNOWN";
}

void order_reset(order_t *o) {
    if (o == NULL) return;
    free(o->lines);
    memset(o, 0, sizeof(*o));
}
