/*
 * decode.h -- turns the bytes of one Kafka record value into an order_t.
 *
 * Private to the daemon (sits beside decode.c).  The decoder owns the parsed
 * Order schema and reads the bytes itself, so decoding a record allocates
 * nothing once the order's line buffer has grown to fit.  A decoder is not
 * thread-safe: use one per consuming thread.
 */
#ifndef TIERD_DECODE_H
#define TIERD_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "tierd/order.h"

typedef struct decoder decoder_t;

/* Parses the embedded Order schema and builds the reusable value.
 * Returns NULL and fills errstr when the schema cannot be used (which means
 * the binary was built from a schema this decoder was not written for). */
decoder_t *decode_new(char *errstr, size_t errstr_size);

/* Accepts NULL. */
void decode_destroy(decoder_t *d);

/* Decodes one Order from buf/len, which is either plain Avro binary (no
 * container, no header) or the Confluent wire format (0x00, a 4-byte
 * big-endian schema id, then Avro binary).  Any schema id is accepted.
 *
 * On ORDER_OK every field of *out is filled except qty and amount (the
 * validator's job).  out->lines is grown with realloc and kept across calls:
 * start from a zeroed order_t, reuse it, and free it with order_reset().
 * On error *out holds a partial decode (still safe to reuse or reset) and
 * errstr says what is wrong.
 *
 * Returns ORDER_ERR_NOT_AVRO for bytes that are not exactly one Order,
 * ORDER_ERR_TOO_MANY_LINES, ORDER_ERR_BAD_ID / ORDER_ERR_BAD_SKU /
 * ORDER_ERR_BAD_CURRENCY for a string too long for its field, and
 * ORDER_ERR_INTERNAL when memory ran out or the decoder contradicted its
 * own pre-scan (not the record's fault: do not dead-letter it). */
order_err_t decode_order(decoder_t *d, const void *buf, size_t len, order_t *out,
                         char *errstr, size_t errstr_size);

/* The same contract, decoded through libavro generic values: the path
 * decode_order() took before it read the bytes itself.  Kept for the tests,
 * which require both paths to give the same verdict, order and errstr on
 * every input; the daemon does not call it.  Its first call builds the
 * libavro value class (ORDER_ERR_INTERNAL if that fails). */
order_err_t decode_order_libavro(decoder_t *d, const void *buf, size_t len, order_t *out,
                                 char *errstr, size_t errstr_size);

/* The schema id of the last record either path looked at, or -1 when it
 * had no Confluent framing.  Set as soon as the framing is recognised, so it
 * is also available for a record that then failed to decode. */
int64_t decode_last_schema_id(const decoder_t *d);

#endif
