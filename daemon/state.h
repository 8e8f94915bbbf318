/*
 * state.h -- the compact, versioned state of ONE customer: its decision
 * state, and for each kept month the aggregates, the tier and grade in
 * effect, the quota kinds fired, the distinct SKUs (as 32-bit
 * fingerprints) and the orders applied (as 64-bit fingerprints, the
 * dedupe set).  It replaces a hash field per order id, a text aggregate
 * per month and a SKU name list per month with one value.
 *
 * Pure: no I/O, no clock, no globals.  The store reads and writes the
 * bytes; everything here is arithmetic on them.
 *
 * Encoding (the on-disk contract; docs/state-format.md says more).
 * "uv" is an unsigned LEB128 varint: 7 bits a byte, least significant
 * group first, high bit set on every byte but the last, in its shortest
 * form only (a last byte of 0 after the first is refused, as is anything
 * past 64 bits).  "sv" is a zigzag varint: 0, -1, 1, -2 ... are written
 * as the uv 0, 1, 2, 3 ...  "u32le"/"u64le" are fixed little-endian.
 * Format 4 (written):
 *
 *   u8     format          STATE_FORMAT (4)
 *   uv     mark            flags + 4 * (scale + 4 * override_tier): flags
 *                          bit 0 evaluated, bit 1 has_override; scale 0..3
 *                          for 'X', '1', '2', '3'; override 0..POLICY_TIERS_MAX
 *   uv     tier            0..POLICY_TIERS_MAX
 *   uv     seq             0..INT64_MAX
 *   uv     live score + 1  0 (none)..10001, in hundredths
 *   uv     nmonths         0..STATE_MONTHS_MAX
 *   then nmonths months, strictly ascending:
 *     sv   month           the first month: the month itself, MONTH_MIN..MONTH_MAX
 *     uv   gap             every later one: months skipped since the
 *                          previous, month - previous - 1 (so never equal),
 *                          up to MONTH_MAX
 *     uv   qty             0..INT64_MAX
 *     uv   amount          0..INT64_MAX
 *     uv   orders          0..INT64_MAX
 *     uv   mark            tier + 17 * (grade + 5 * qmask): tier
 *                          0..POLICY_TIERS_MAX (0 not recorded), grade 0 not
 *                          recorded or 1..4 for A..D, qmask only bits below
 *                          POLICY_QUOTA__COUNT
 *     uv   nskus
 *     uv   skubytes        the bytes of the SKU set that follows (0 when
 *                          nskus is 0), so a reader can step over it
 *     then the SKU fingerprints, Rice-coded: each gap (the first value,
 *                          then value - previous - 1) as gap >> k in unary
 *                          (1 bits, a 0 bit) and its low k = 32 -
 *                          bitlen(nskus) bits, bit 0 of each byte first,
 *                          the last byte's spare bits 0
 *     uv   nfps            then nfps x u64le, strictly ascending
 *   sv     first_month     minus the first kept month (0 without months);
 *                          the sum MONTH_MIN..MONTH_MAX (month.h)
 *   u32le  checksum        CRC-32C (Castagnoli) of every byte before it
 *
 * Format 3 (still read, and written back as 4): the same without
 * skubytes.
 *
 * Format 2 (still read, and written back as 4): flags, tier, first_month
 * (sv), override_tier, seq, live_score_c (sv) and scale (u8) apart in the
 * header; per month tier, grade and qmask apart, the SKUs as nskus x
 * u32le; no first_month at the end.
 *
 * The month's distinct-SKU count is not stored: it is nskus.  Decoding
 * accepts exactly the bytes state_encode writes: any format-4 value it
 * accepts encodes back to the same bytes.  A new layout gets a new
 * STATE_FORMAT; state_decode refuses every format outside
 * STATE_FORMAT_OLDEST..STATE_FORMAT.
 */
#ifndef TIERD_STATE_H
#define TIERD_STATE_H

#include "agg.h"
#include "arena.h"
#include "tierd/order.h"
#include "tierd/policy.h"

#include <stddef.h>
#include <stdint.h>

#define STATE_FORMAT 4        /* the format written, also stored in each partition's meta */
#define STATE_FORMAT_OLDEST 2 /* the oldest format still read (and rewritten as 4) */
#define STATE_MONTHS_MAX (POLICY_WINDOW_MAX + 2)
#define STATE_SCORE_MAX 10000 /* live_score_c in hundredths, as policy_score_t.score_c */

typedef struct state_month {
    int32_t month;        /* year*12 + month-1, as month.h */
    agg_month_t agg;      /* qty, amount, orders, skus (agg.skus == nskus) */
    int32_t tier;         /* tier in effect when the month began; 0 = not recorded */
    policy_grade_t grade; /* worst grade in effect during the month; NONE = not recorded */
    uint32_t qmask;       /* quota kinds fired, policy_quota_bit() per kind */
    uint32_t *skus;       /* sorted, distinct 32-bit SKU fingerprints (SALE lines); owned */
    uint32_t nskus, capskus;
    uint64_t *fps; /* sorted, distinct 64-bit order_id fingerprints of the orders
                           * applied in this month; owned */
    uint32_t nfps, capfps;
    /* Set by state_decode_lazy: the month's two sets are still in the
     * bytes of the value decoded, not copied, so skus and fps hold
     * nothing yet; nskus and nfps are their counts.  raw is the Rice-coded
     * SKU set (rawlen bytes; of format 4, its codes not yet checked),
     * rawfps the order fingerprints (checked).  NULL once they are
     * decoded (a change to the sets decodes them first). */
    const uint8_t *raw, *rawfps;
    size_t rawlen;
} state_month_t;

/* months[nmonths..capmonths) are spare slots: their counts mean nothing,
 * but they own their arrays, so a month dropped and a month inserted later
 * reuse memory instead of allocating.  The slots grow as months are
 * inserted (at most STATE_MONTHS_MAX), so a customer costs memory for the
 * months it has, not for the longest window a policy may ask for. */
typedef struct state_customer {
    policy_state_t st;    /* tier, first_month, evaluated, has_override, override_tier */
    int64_t seq;          /* tier changes published so far */
    int32_t live_score_c; /* hundredths; -1 none */
    char scale;           /* classification scale digit, 'X' before any review */
    uint32_t nmonths;     /* months[0..nmonths) ascending by month */
    uint32_t capmonths;
    state_month_t *months; /* owned */
} state_customer_t;

/* Empty customer: tier 0, live_score_c -1, scale 'X', no months. */
void state_init(state_customer_t *c);
/* Back to state_init's value, KEEPING the arrays' memory. */
void state_reset(state_customer_t *c);
/* Frees every array (spare slots too) and leaves state_init's value;
 * accepts NULL. */
void state_free(state_customer_t *c);

/* 0, or -1 with a sentence in errstr (truncated, bad version, lengths past
 * the end, months not ascending, fingerprints not sorted/distinct, counts
 * above bounds, trailing bytes, checksum mismatch).  Never reads past len,
 * never allocates from an unchecked length (counts are bounded by the
 * bytes left first).  c must have been initialised; its arrays are reused.
 * On -1, c is left reset (as state_reset). */
int state_decode(state_customer_t *c, const void *buf, size_t len, char *errstr,
                 size_t errstr_size);
/* The same, but each month's SKU and order fingerprint sets (formats 3
 * and 4) stay in buf (state_month_t.raw) until something changes them:
 * encoding copies an unchanged month's sets as bytes, state_seen searches
 * them in place.  For a caller that reads a value, changes a month or two
 * of it and writes it back.  The checks are state_decode's but one: a
 * format-4 SKU set is stepped over by its length, its codes are checked
 * when the set is decoded (state_unpack), so a value only state_decode
 * refuses is one whose checksum matches bytes that no tierd wrote.  buf
 * must stay unchanged and alive until c is encoded for the last time,
 * reset or decoded again. */
int state_decode_lazy(state_customer_t *c, const void *buf, size_t len, char *errstr,
                      size_t errstr_size);
/* Decodes the sets of c's month `month` if state_decode_lazy left them in
 * the bytes, with state_decode's checks: 0 (also when the month is absent
 * or decoded already); -1 when they do not parse, with state_decode's
 * message for them; -2 out of memory.  On failure c is as it was. */
int state_unpack(state_customer_t *c, int32_t month, char *errstr, size_t errstr_size);
size_t state_encoded_size(const state_customer_t *c);
/* At least state_encoded_size(c), computed without encoding. */
size_t state_encoded_bound(const state_customer_t *c);
/* Writes exactly state_encoded_size(c) bytes and returns that size.  c
 * should pass state_check: what encode writes for a customer that does
 * not is refused by decode (except a stale agg.skus, which is not stored:
 * decode gives nskus). */
size_t state_encode(const state_customer_t *c, uint8_t *out);
/* Encodes c into a (one pass, for an upper bound, the rest given back):
 * the bytes and *len; NULL when out of memory. */
const uint8_t *state_encode_in(const state_customer_t *c, arena_t *a, size_t *len);
/* 0 when c holds only what the encoding can say (the bounds above, months
 * ascending, fingerprints sorted and distinct, agg.skus == nskus), or -1
 * with the first thing wrong in errstr. */
int state_check(const state_customer_t *c, char *errstr, size_t errstr_size);
/* CRC-32C of len bytes: the encoding's checksum. */
uint32_t state_checksum(const void *buf, size_t len);

/* Finds month m, or inserts it (zeroed, tier 0, grade not recorded) in
 * order when create; NULL when absent (create 0), out of memory, or
 * STATE_MONTHS_MAX would be exceeded.  Inserting moves the months after
 * it: pointers to them are then stale. */
state_month_t *state_month(state_customer_t *c, int32_t m, int create);
/* Drops the months before m (keeps their memory for reuse). */
void state_drop_before(state_customer_t *c, int32_t m);
/* 1 when fp is in any kept month (the dedupe check). */
int state_seen(const state_customer_t *c, uint64_t fp);
/* Records an applied order's fingerprint in its month: 1 added, 0 already
 * there, -1 out of memory. */
int state_add_fp(state_month_t *m, uint64_t fp);

/* Applies a validated order (o->qty and o->amount filled) to month m, with
 * EXACTLY the semantics of agg_apply (RETURN subtracts with floor 0 and
 * reports *excess; SALE adds with overflow check, counts the order, adds
 * its SKUs' fingerprints), except distinct SKUs are counted by 32-bit
 * fingerprint.  Returns ORDER_OK, ORDER_ERR_OVERFLOW, or
 * ORDER_ERR_INTERNAL (out of memory); on either error nothing changed.
 * It does not record the order's fingerprint: state_add_fp does. */
order_err_t state_apply(state_month_t *m, const order_t *o, int64_t *excess);
/* The same with the order's SKU fingerprints already taken (sorted,
 * distinct: state_order_skus), so a batch need not keep the lines. */
order_err_t state_apply_skus(state_month_t *m, const order_t *o, const uint32_t *skus, size_t n,
                             int64_t *excess);
/* The fingerprints of o's lines into out (room for o->nlines), sorted and
 * distinct; returns how many. */
size_t state_order_skus(const order_t *o, uint32_t *out);

/* FNV-1a 64 of the bytes, then the splitmix64 finaliser so every output
 * bit depends on every input bit. */
uint64_t state_order_fp(const char *order_id, size_t len);
/* The high half of the same hash. */
uint32_t state_sku_fp(const char *sku, size_t len);

/* The window view the policy engine wants: fills w[0..W) for months
 * end-W+1..end, oldest first (zeros, tier 0 and grade not recorded for
 * months absent).  W <= 0 writes nothing. */
void state_window(const state_customer_t *c, int32_t end, int32_t W, policy_month_t *w);

/* For logs: "tier=3 first=2026-01 evaluated=1 override=0 seq=4 score=71.25
 * scale=2 months=2026-09,2026-10" (override=N when has_override,
 * score=none when -1).  snprintf's contract: NUL-terminated, cut to size,
 * returns the full length. */
int state_describe(const state_customer_t *c, char *buf, size_t size);

#endif
