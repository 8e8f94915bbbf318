/*
 * validate.c -- the business rules an Order must pass before it may touch
 * the aggregates (docs/behaviour.md, "Bad input").
 *
 * Owns nothing.  Must never read a clock, do I/O or keep state: the caller
 * gives now_ms and the rules, so the same order always gets the same answer.
 * The decoder has already bounded every length; the checks on lengths here
 * are for order_t values built some other way (tests, replays).
 *
 * Every refusal fills errstr with one sentence naming the value, because the
 * text lands in the dead-letter header an operator reads.  Values that came
 * off the wire are quoted with non-printable bytes escaped.
 */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "validate.h"

#include "errstr.h"
#include "utf8.h"

/* Room for ORDER_ID_MAX bytes each escaped as \xNN, the quotes and a NUL. */
#define VALIDATE_QUOTE_MAX (ORDER_ID_MAX * 4 + 3)

/* Writes s as a double-quoted string a terminal and a Kafka header can show:
 * bytes outside printable ASCII become \xNN.  Stops (with "...") rather than
 * overflowing dst. */
static const char *validate_quote(char *dst, size_t dst_size, const void *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    const uint8_t *p = s;
    size_t o = 0, i;

    if (dst_size < 6) {
        if (dst_size > 0) dst[0] = '\0';
        return dst;
    }
    dst[o++] = '"';
    for (i = 0; i < len; i++) {
        uint8_t c = p[i];
        /* Keep room for the longest escape, '"', "..." and the NUL. */
        if (o + 4 + 1 + 3 + 1 > dst_size) {
            memcpy(dst + o, "...", 3);
            o += 3;
            break;
        }
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
            dst[o++] = '\\';
            dst[o++] = 'x';
            dst[o++] = hex[c >> 4];
            dst[o++] = hex[c & 0xf];
        } else {
            dst[o++] = (char)c;
        }
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}

/* Room for "-292275055-05-16T16:47:04.192Z" (INT64_MIN ms) with margin. */
#define VALIDATE_UTC_MAX 40

/* Epoch milliseconds as an ISO 8601 UTC time, for a sentence.  gmtime_r
 * reads no clock and no zone, so validation stays pure. */
static const char *validate_utc_text(char *dst, size_t dst_size, int64_t ms) {
    int64_t sec = ms / 1000, frac = ms % 1000;
    struct tm tm;
    time_t t;

    if (frac < 0) { /* round toward minus infinity: -1 ms is 23:59:59.999 */
        sec--;
        frac += 1000;
    }
    t = (time_t)sec;
    if (gmtime_r(&t, &tm) == NULL) {
        errstr_fmt(dst, dst_size, "beyond the calendar");
        return dst;
    }
    errstr_fmt(dst, dst_size, "%04lld-%02d-%02dT%02d:%02d:%02d.%03dZ", (long long)tm.tm_year + 1900,
               tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
    return dst;
}

/* Index of the first control character (< 0x20 or DEL), or -1. */
static long validate_find_control(const char *s, size_t len) {
    size_t i;

    for (i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c < 0x20 || c == 0x7f) return (long)i;
    }
    return -1;
}

/* BAD_UTF8 with a sentence naming the first bad byte, or ORDER_OK. */
static order_err_t validate_utf8(const char *what, const char *s, size_t len, char *errstr,
                                 size_t errstr_size) {
    char q[VALIDATE_QUOTE_MAX];
    size_t at = utf8_invalid_at(s, len);

    if (at == len) return ORDER_OK;
    errstr_fmt(errstr, errstr_size,
               "%s %s is not valid UTF-8 at byte %zu (0x%02x); strings must be UTF-8", what,
               validate_quote(q, sizeof(q), s, len), at + 1, (unsigned)(uint8_t)s[at]);
    return ORDER_ERR_BAD_UTF8;
}

order_err_t validate_id(const char *what, const void *id, size_t len, char *errstr,
                        size_t errstr_size) {
    char q[VALIDATE_QUOTE_MAX];
    const char *s = id;
    long at;

    if (len == 0 || s == NULL) {
        errstr_fmt(errstr, errstr_size, "%s is empty", what);
        return ORDER_ERR_EMPTY_ID;
    }
    if (len > ORDER_ID_MAX) {
        errstr_fmt(errstr, errstr_size, "%s is %zu bytes; at most %d are allowed", what, len,
                   ORDER_ID_MAX);
        return ORDER_ERR_BAD_ID;
    }
    at = validate_find_control(s, len);
    if (at >= 0) {
        errstr_fmt(errstr, errstr_size,
                   "%s %s has control character 0x%02x at byte %ld; ids must be printable", what,
                   validate_quote(q, sizeof(q), s, len), (unsigned)(uint8_t)s[at], at + 1);
        return ORDER_ERR_BAD_ID;
    }
    return validate_utf8(what, s, len, errstr, errstr_size);
}

static order_err_t validate_line(const order_line_t *l, uint32_t n, char *errstr,
                                 size_t errstr_size) {
    char q[VALIDATE_QUOTE_MAX], what[32];
    long at;

    if (l->sku_len == 0) {
        errstr_fmt(errstr, errstr_size, "line %" PRIu32 ": sku is empty", n);
        return ORDER_ERR_BAD_SKU;
    }
    if (l->sku_len > ORDER_SKU_MAX) {
        errstr_fmt(errstr, errstr_size, "line %" PRIu32 ": sku is %u bytes; at most %d are allowed",
                   n, (unsigned)l->sku_len, ORDER_SKU_MAX);
        return ORDER_ERR_BAD_SKU;
    }
    at = validate_find_control(l->sku, l->sku_len);
    if (at >= 0) {
        errstr_fmt(errstr, errstr_size,
                   "line %" PRIu32 ": sku %s has control character 0x%02x at byte %ld", n,
                   validate_quote(q, sizeof(q), l->sku, l->sku_len), (unsigned)(uint8_t)l->sku[at],
                   at + 1);
        return ORDER_ERR_BAD_SKU;
    }
    if (!utf8_valid(l->sku, l->sku_len)) { /* the label is formatted for the message only */
        errstr_fmt(what, sizeof(what), "line %" PRIu32 ": sku", n);
        validate_utf8(what, l->sku, l->sku_len, errstr, errstr_size);
        return ORDER_ERR_BAD_UTF8;
    }
    if (l->quantity <= 0) {
        errstr_fmt(errstr, errstr_size, "line %" PRIu32 ": quantity %" PRId64 " must be > 0", n,
                   l->quantity);
        return ORDER_ERR_BAD_QUANTITY;
    }
    if (l->unit_price < 0) {
        errstr_fmt(errstr, errstr_size, "line %" PRIu32 ": unit_price %" PRId64 " must be >= 0", n,
                   l->unit_price);
        return ORDER_ERR_NEGATIVE_PRICE;
    }
    return ORDER_OK;
}

/* Sums only after every line passed validate_line(), so quantities are > 0
 * and prices >= 0 here; the overflow checks still cover both directions. */
static order_err_t validate_sums(order_t *o, char *errstr, size_t errstr_size) {
    int64_t qty = 0, amount = 0, line_amount;
    uint32_t i;

    for (i = 0; i < o->nlines; i++) {
        const order_line_t *l = &o->lines[i];

        if (__builtin_mul_overflow(l->quantity, l->unit_price, &line_amount)) {
            errstr_fmt(errstr, errstr_size,
                       "line %" PRIu32 ": quantity %" PRId64 " * unit_price %" PRId64
                       " does not fit in 64 bits",
                       i + 1, l->quantity, l->unit_price);
            return ORDER_ERR_OVERFLOW;
        }
        if (__builtin_add_overflow(qty, l->quantity, &qty)) {
            errstr_fmt(errstr, errstr_size,
                       "line %" PRIu32 ": the sum of quantities passes %" PRId64
                       " when adding %" PRId64,
                       i + 1, INT64_MAX, l->quantity);
            return ORDER_ERR_OVERFLOW;
        }
        if (__builtin_add_overflow(amount, line_amount, &amount)) {
            errstr_fmt(errstr, errstr_size,
                       "line %" PRIu32 ": the order amount passes %" PRId64 " when adding %" PRId64,
                       i + 1, INT64_MAX, line_amount);
            return ORDER_ERR_OVERFLOW;
        }
    }
    o->qty = qty;
    o->amount = amount;
    return ORDER_OK;
}

/* The ids, then the record key against customer_id. */
static order_err_t validate_ids(const order_t *o, const void *key, size_t key_len, char *errstr,
                                size_t errstr_size) {
    char q1[VALIDATE_QUOTE_MAX], q2[VALIDATE_QUOTE_MAX];
    order_err_t err;
    if (o->order_id_len == 0) {
        errstr_fmt(errstr, errstr_size, "order_id is empty; every order needs one");
        return ORDER_ERR_EMPTY_ID;
    }
    if (o->customer_id_len == 0) {
        errstr_fmt(errstr, errstr_size, "customer_id is empty; every order needs one");
        return ORDER_ERR_EMPTY_ID;
    }
    if ((err = validate_id("order_id", o->order_id, o->order_id_len, errstr, errstr_size)) !=
            ORDER_OK ||
        (err = validate_id("customer_id", o->customer_id, o->customer_id_len, errstr,
                           errstr_size)) != ORDER_OK)
        return err;
    /* A record without a key is allowed; with one, it routes the order to
     * the partition that owns the customer, so it must be that customer.
     * A key that is not UTF-8 cannot be; say what is wrong with it. */
    if (key == NULL || key_len == 0) return ORDER_OK;
    if ((err = validate_utf8("record key", key, key_len, errstr, errstr_size)) != ORDER_OK)
        return err;
    if (key_len != o->customer_id_len || memcmp(key, o->customer_id, key_len) != 0) {
        errstr_fmt(errstr, errstr_size,
                   "record key %s differs from customer_id %s; producers must key orders "
                   "by customer_id",
                   validate_quote(q1, sizeof(q1), key, key_len),
                   validate_quote(q2, sizeof(q2), o->customer_id, o->customer_id_len));
        return ORDER_ERR_KEY_MISMATCH;
    }
    return ORDER_OK;
}

/* The lines, one by one, then the sums over them. */
static order_err_t validate_lines(order_t *o, char *errstr, size_t errstr_size) {
    order_err_t err;
    if (o->nlines == 0) {
        errstr_fmt(errstr, errstr_size, "the order has no lines; at least 1 is required");
        return ORDER_ERR_NO_LINES;
    }
    if (o->nlines > ORDER_LINES_MAX) {
        errstr_fmt(errstr, errstr_size, "the order has %" PRIu32 " lines; at most %d are allowed",
                   o->nlines, ORDER_LINES_MAX);
        return ORDER_ERR_TOO_MANY_LINES;
    }
    for (uint32_t i = 0; i < o->nlines; i++)
        if ((err = validate_line(&o->lines[i], i + 1, errstr, errstr_size)) != ORDER_OK) return err;
    return validate_sums(o, errstr, errstr_size);
}

/* Exact, case-sensitive: "eur" is not "EUR".  Bounded by the array sizes
 * in case either side is not NUL-terminated. */
static order_err_t validate_currency(const order_t *o, const validate_rules_t *r, char *errstr,
                                     size_t errstr_size) {
    char q1[VALIDATE_QUOTE_MAX], q2[VALIDATE_QUOTE_MAX];
    size_t cur_len = strnlen(o->currency, sizeof(o->currency));
    size_t want_len = strnlen(r->currency, sizeof(r->currency));
    order_err_t err = validate_utf8("currency", o->currency, cur_len, errstr, errstr_size);
    if (err != ORDER_OK) return err;
    if (cur_len != want_len || memcmp(o->currency, r->currency, cur_len) != 0) {
        errstr_fmt(errstr, errstr_size, "currency %s is not the configured currency %s",
                   validate_quote(q1, sizeof(q1), o->currency, cur_len),
                   validate_quote(q2, sizeof(q2), r->currency, want_len));
        return ORDER_ERR_BAD_CURRENCY;
    }
    return ORDER_OK;
}

/* placed_at between min_placed_at and now + max_future_skew. */
static order_err_t validate_time(const order_t *o, int64_t now_ms, const validate_rules_t *r,
                                 char *errstr, size_t errstr_size) {
    char t1[VALIDATE_UTC_MAX], t2[VALIDATE_UTC_MAX];
    int64_t limit;
    if (o->placed_at_ms < r->min_placed_at_ms) {
        errstr_fmt(errstr, errstr_size,
                   "placed_at %" PRId64 " ms (%s) is earlier than the minimum %" PRId64
                   " ms (%s); check the producer's clock and how it fills placed_at",
                   o->placed_at_ms, validate_utc_text(t1, sizeof(t1), o->placed_at_ms),
                   r->min_placed_at_ms, validate_utc_text(t2, sizeof(t2), r->min_placed_at_ms));
        return ORDER_ERR_BAD_PLACED_AT;
    }
    /* now + skew past INT64_MAX means nothing can be in the future; a
     * negative skew past INT64_MIN means everything is. */
    if (__builtin_add_overflow(now_ms, r->max_future_skew_ms, &limit))
        limit = r->max_future_skew_ms > 0 ? INT64_MAX : INT64_MIN;
    if (o->placed_at_ms > limit) {
        errstr_fmt(errstr, errstr_size,
                   "placed_at %" PRId64 " ms is later than now %" PRId64
                   " ms plus the allowed clock skew of %" PRId64 " ms; check the producer's clock",
                   o->placed_at_ms, now_ms, r->max_future_skew_ms);
        return ORDER_ERR_FUTURE;
    }
    return ORDER_OK;
}

order_err_t validate_order(order_t *o, const void *key, size_t key_len, int64_t now_ms,
                           const validate_rules_t *r, char *errstr, size_t errstr_size) {
    order_err_t err;
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    if (o == NULL || r == NULL || (o->nlines > 0 && o->lines == NULL)) {
        errstr_fmt(errstr, errstr_size, "validate_order called without an order or rules");
        return ORDER_ERR_INTERNAL;
    }
    if ((err = validate_ids(o, key, key_len, errstr, errstr_size)) != ORDER_OK ||
        (err = validate_lines(o, errstr, errstr_size)) != ORDER_OK ||
        (err = validate_currency(o, r, errstr, errstr_size)) != ORDER_OK)
        return err;
    return validate_time(o, now_ms, r, errstr, errstr_size);
}
