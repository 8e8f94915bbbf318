/*
 * decode.h -- turns the bytes of one Kafka record value into what tierd
 * consumes: an order_t (topic orders) or a customer profile (topic
 * customer-profiles).
 *
 * Private to the daemon (sits beside decode.c).  The decoder owns the
 * parsed Order and CustomerProfile schemas.  It reads an Order's bytes
 * itself, so decoding an order allocates nothing once the order's line
 * buffer has grown to fit.  A decoder is not thread-safe: use one per
 * consuming thread.
 */
#ifndef TIERD_DECODE_H
#define TIERD_DECODE_H

#include <stddef.h>
#include <stdint.h>

#include "schemacache.h"
#include "tierd/order.h"
#include "tierd/policy.h"

typedef struct decoder decoder_t;

/* Parses the embedded Order and CustomerProfile schemas and builds the
 * profile's reusable value.  Returns NULL and fills errstr when a schema
 * cannot be used (which means the binary was built from a schema this
 * decoder was not written for). */
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
order_err_t decode_order(decoder_t *d, const void *buf, size_t len, order_t *out, char *errstr,
                         size_t errstr_size);

/* The same contract, decoded through libavro generic values: the path
 * decode_order() took before it read the bytes itself.  Kept for the tests,
 * which require both paths to give the same verdict, order and errstr on
 * every input; the daemon does not call it.  Its first call builds the
 * libavro value class (ORDER_ERR_INTERNAL if that fails). */
order_err_t decode_order_libavro(decoder_t *d, const void *buf, size_t len, order_t *out,
                                 char *errstr, size_t errstr_size);

/* From now on a record framed with a schema id (the Confluent wire format)
 * is read by its writer schema, which fetch gives by id (the schema
 * registry; schemacache.h): the direct path when it is tierd's own
 * schema, Avro schema resolution when it differs but resolves.  An id
 * fetch does not know refuses the record as ORDER_ERR_UNKNOWN_SCHEMA, a
 * writer schema that does not resolve (or a record holding an enum symbol
 * tierd's schema lacks and has no default for) as
 * ORDER_ERR_INCOMPATIBLE_SCHEMA; a fetch that got no answer returns
 * ORDER_ERR_INTERNAL (not the record's fault: retry it).  Up to
 * cache_size verdicts are kept for each record type.  A record without
 * the framing is read as plain Avro, as without a registry.  0, or -1
 * with errstr. */
int decode_use_registry(decoder_t *d, schemacache_fetch_fn fetch, void *ctx, size_t cache_size,
                        char *errstr, size_t errstr_size);

/* The schema id of the last record decoded (an Order by either path, or a
 * CustomerProfile), or -1 when it had no Confluent framing.  Set as soon as
 * the framing is recognised, so it is also available for a record that then
 * failed to decode. */
int64_t decode_last_schema_id(const decoder_t *d);

/* Decodes one CustomerProfile (topic customer-profiles) from plain Avro
 * binary or the Confluent wire format, any schema id, as decode_order.  A
 * tombstone (NULL value) is the caller's business: it never reaches here.
 *
 * Refuses with: ORDER_ERR_NOT_AVRO for bytes that are not exactly one
 * CustomerProfile (truncated, trailing bytes, enum or union index out of
 * range, a boolean byte other than 0/1, a length past the end);
 * ORDER_ERR_EMPTY_ID / ORDER_ERR_BAD_ID / ORDER_ERR_BAD_UTF8 for customer_id
 * empty, longer than ORDER_ID_MAX or with control characters, or not UTF-8
 * (validate_id's rules, in that order); when key_len > 0, ORDER_ERR_BAD_UTF8
 * for a key that is not UTF-8, then ORDER_ERR_KEY_MISMATCH when the key
 * differs from customer_id; ORDER_ERR_BAD_FIELD for
 * cooperation or growth not finite in [0, 1] or tier_override outside
 * 1..POLICY_TIERS_MAX; ORDER_ERR_INTERNAL for our own failures (NULL
 * arguments, out of memory, libavro disagreeing with the pre-scan).
 *
 * customer_id is filled as soon as it is known to be valid (so a refusal
 * for a later reason can still name the customer), else set to "".  *out
 * and *updated_at_ms (may be NULL) are written only on ORDER_OK. */
order_err_t decode_profile(decoder_t *d, const void *buf, size_t len, const void *key,
                           size_t key_len, char customer_id[ORDER_ID_MAX + 1],
                           policy_profile_t *out, int64_t *updated_at_ms, char *errstr,
                           size_t errstr_size);

#endif
