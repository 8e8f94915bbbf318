/*
 * events.h -- the Avro codec of tierd's own topics: encodes TierChange and
 * QuotaEvent records for publishing, and reads a TierChange back (tierctl).
 * The records tierd consumes are decode.h's.
 *
 * Private to the daemon (sits beside events.c); the contracts are the .avsc
 * files in schemas/, which other programs read.  An events_t owns the two
 * parsed schemas and one reusable value each (codec.h), so it is built once
 * at start and is not thread-safe: one per thread that uses it.
 */
#ifndef TIERD_EVENTS_H
#define TIERD_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "tierd/order.h"
#include "tierd/policy.h"

typedef struct events events_t;

/* Parses the embedded schemas and checks they have the layout this codec
 * was written for (field order and types, enum symbols).  NULL with errstr
 * when they do not, or when memory runs out. */
events_t *events_new(char *errstr, size_t errstr_size);

/* Accepts NULL. */
void events_destroy(events_t *e);

/* One tier change, as the caller knows it when decision->changed is true.
 * Nothing here is copied or kept after the call returns. */
typedef struct events_tier_change {
    const char *customer_id;           /* 1..ORDER_ID_MAX bytes */
    int64_t sequence;                  /* 1, 2, 3 ... per customer */
    const policy_decision_t *decision; /* reason must not be POLICY_REASON_NONE */
    const policy_month_t *window;      /* the window's aggregates, to give each checked
                                        * month its amount, orders and skus; may be NULL */
    size_t nwindow;
    int32_t month; /* review or order month; -1 => null (profile change) */
    const char *classification;
    const policy_t *policy; /* name and version travel in the event */
    int64_t decided_at_ms;  /* from the decision's inputs, never the clock (outbox.h) */
} events_tier_change_t;

/* Encodes a TierChange as plain Avro binary (no framing).  On success
 * returns 0, *out is a malloc'd buffer of *len bytes the caller frees, and
 * event_id (when not NULL) holds "<customer_id>:tier:<sequence>".  Returns
 * -1 with errstr for a caller mistake (no change, missing field, a month
 * that has no YYYY-MM form, event_id too small) or when memory runs out;
 * *out is then NULL. */
int events_encode_tier_change(events_t *e, const events_tier_change_t *tc, char **out, size_t *len,
                              char *event_id, size_t event_id_size, char *errstr,
                              size_t errstr_size);
/* The same bytes through libavro's generic values: slower, kept as the
 * reference test_events holds the direct encoding above to. */
int events_encode_tier_change_libavro(events_t *e, const events_tier_change_t *tc, char **out,
                                      size_t *len, char *event_id, size_t event_id_size,
                                      char *errstr, size_t errstr_size);

/* One quota threshold crossed by one order. */
typedef struct events_quota {
    const char *customer_id; /* 1..ORDER_ID_MAX bytes */
    int32_t month;           /* the month whose purchases crossed */
    int32_t tier;            /* tier in effect for the month */
    policy_quota_kind_t kind;
    const policy_quota_limits_t *limits; /* hard_cap POLICY_NO_HARD_CAP => null */
    int64_t consumed;                    /* the month's qty after the crossing order */
    const char *order_id;
    int64_t placed_at_ms;
    const policy_t *policy;
} events_quota_t;

/* Encodes a QuotaEvent like events_encode_tier_change(); event_id gets
 * "<customer_id>:<YYYY-MM>:<KIND>". */
int events_encode_quota(events_t *e, const events_quota_t *q, char **out, size_t *len,
                        char *event_id, size_t event_id_size, char *errstr, size_t errstr_size);
/* The same through libavro's generic values: the reference the direct
 * encoding is tested against (test_events). */
int events_encode_quota_libavro(events_t *e, const events_quota_t *q, char **out, size_t *len,
                                char *event_id, size_t event_id_size, char *errstr,
                                size_t errstr_size);

/* What tierctl shows of a TierChange it reads back from the topic. */
typedef struct events_tier_change_info {
    int32_t previous_tier; /* 0 when null (the first placement) */
    int32_t new_tier;
    int64_t sequence;
    char reason[32];
    char review_month[16]; /* "YYYY-MM" or "" */
} events_tier_change_info_t;

/* Reads one TierChange as tierd publishes it (plain Avro) into *out: 0, or
 * -1 with errstr.  It reads into the value the encoder fills, so it may not
 * run between an encode and the use of its bytes (none does: both copy out
 * before returning).  No pre-scan: for tools reading tierd's own output,
 * never for a daemon's input (decode.h). */
int events_read_tier_change(events_t *e, const void *buf, size_t len,
                            events_tier_change_info_t *out, char *errstr, size_t errstr_size);

#endif
