/*
 * order.h -- the Order event as tierd sees it after decoding, and the
 * reasons an order can be refused (dead-lettered).
 *
 * This header is a contract: the decoder fills an order_t, the validator
 * judges it, and the reason codes travel in the dead-letter headers where
 * other programs read them.  Codes are stable strings; never renumber.
 */
#ifndef TIERD_ORDER_H
#define TIERD_ORDER_H

#include <stddef.h>
#include <stdint.h>

#define ORDER_ID_MAX 64      /* bytes, order_id and customer_id */
#define ORDER_SKU_MAX 64     /* bytes per SKU */
#define ORDER_LINES_MAX 1000 /* lines per order */
#define ORDER_CURRENCY_MAX 3 /* ISO 4217 alphabetic code */

typedef enum { ORDER_SALE = 0, ORDER_RETURN = 1 } order_kind_t;

typedef struct order_line {
    char sku[ORDER_SKU_MAX + 1]; /* NUL-terminated copy */
    uint8_t sku_len;
    int64_t quantity;
    int64_t unit_price;
} order_line_t;

typedef struct order {
    char order_id[ORDER_ID_MAX + 1];
    uint8_t order_id_len;
    char customer_id[ORDER_ID_MAX + 1];
    uint8_t customer_id_len;
    int64_t placed_at_ms; /* epoch milliseconds, UTC */
    order_kind_t kind;
    char currency[ORDER_CURRENCY_MAX + 1];
    uint32_t nlines;
    order_line_t *lines; /* owned by the order; order_reset() frees */
    uint32_t lines_cap;
    /* Filled by validation: sums over the lines, overflow-checked. */
    int64_t qty;    /* sum of quantity */
    int64_t amount; /* sum of quantity * unit_price */
} order_t;

/* Why a record was refused.  The string form (order_reason_code) is what
 * goes into the dead-letter header "tierd.reason". */
typedef enum {
    ORDER_OK = 0,
    ORDER_ERR_NOT_AVRO,            /* framing/encoding broken, truncated, trailing bytes */
    ORDER_ERR_EMPTY_ID,            /* order_id or customer_id missing or empty */
    ORDER_ERR_BAD_ID,              /* id longer than 64 bytes or has control characters */
    ORDER_ERR_KEY_MISMATCH,        /* record key present and != customer_id */
    ORDER_ERR_NO_LINES,            /* zero lines */
    ORDER_ERR_TOO_MANY_LINES,      /* more than ORDER_LINES_MAX lines */
    ORDER_ERR_BAD_SKU,             /* empty, too long, or control characters */
    ORDER_ERR_BAD_QUANTITY,        /* quantity <= 0 */
    ORDER_ERR_NEGATIVE_PRICE,      /* unit_price < 0 */
    ORDER_ERR_OVERFLOW,            /* a sum does not fit in 64 bits */
    ORDER_ERR_BAD_CURRENCY,        /* not the configured currency */
    ORDER_ERR_FUTURE,              /* placed_at beyond now + max_future_skew */
    ORDER_ERR_LATE,                /* placed_at before the partition's window */
    ORDER_ERR_INTERNAL,            /* our fault, not the record's (out of memory,
                               * a libavro bug, a NULL argument): retry or
                               * stop, never dead-letter */
    ORDER_ERR_BAD_FIELD,           /* a field is out of its range (customer
                               * profile: cooperation, growth, tier_override);
                               * after INTERNAL so nothing is renumbered */
    ORDER_ERR_BAD_PLACED_AT,       /* placed_at before the configured minimum
                               * (min_placed_at_s, default 2000-01-01Z) */
    ORDER_ERR_BAD_UTF8,            /* a string bound for an event or a Redis key
                               * (ids, sku, record key, currency) is not
                               * well-formed UTF-8 */
    ORDER_ERR_UNKNOWN_SCHEMA,      /* framed with a schema id the registry does
                               * not know */
    ORDER_ERR_INCOMPATIBLE_SCHEMA, /* the writer schema does not resolve to
                                    * tierd's, or the record holds what
                                    * tierd's schema cannot (an enum symbol
                                    * it lacks, with no default) */
    ORDER_ERR__COUNT
} order_err_t;

/* "NOT_AVRO", "EMPTY_ID", ... -- stable, machine-readable. */
const char *order_reason_code(order_err_t err);

/* Frees the lines and zeroes the order; accepts NULL. */
void order_reset(order_t *o);

#endif
