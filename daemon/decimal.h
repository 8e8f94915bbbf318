/*
 * decimal.h -- integers as decimal text, the same as printf's %d / %u /
 * PRId64, and doubles as printf's "%.2f" and "%.0f", for the hot paths
 * that format several numbers per record (snprintf's format parsing, and
 * its exact binary-to-decimal conversion, cost more than the digits).
 * Each writes without a NUL and returns the number of bytes written: at
 * most DECIMAL_MAX (the doubles: 0 when they leave the value to printf).
 */
#ifndef TIERD_DECIMAL_H
#define TIERD_DECIMAL_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { DECIMAL_MAX = 20 }; /* "-9223372036854775808", "18446744073709551615" */

static inline size_t decimal_u64(char *out, uint64_t v) {
    char tmp[DECIMAL_MAX];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static inline size_t decimal_i64(char *out, int64_t v) {
    if (v >= 0) return decimal_u64(out, (uint64_t)v);
    out[0] = '-';
    return 1 + decimal_u64(out + 1, 0 - (uint64_t)v); /* INT64_MIN too */
}

/* printf's "%.2f" of v, for |v| < 1e15; otherwise 0 (use printf).  v
 * times 100 is exact in a long double of 64 mantissa bits (53 + 7), and
 * rounding it to an integer, ties to even, is what glibc's printf does
 * with the exact decimal value in the default rounding mode.  "-0.00"
 * for small negatives and -0, as printf. */
static inline size_t decimal_fixed2(char *out, double v) {
#if LDBL_MANT_DIG >= 64
    if (!(fabs(v) < 1e15)) return 0; /* NaN too */
    long long c = llrintl((long double)v * 100.0L);
    uint64_t a = c < 0 ? 0 - (uint64_t)c : (uint64_t)c;
    size_t n = 0;
    if (signbit(v)) out[n++] = '-';
    n += decimal_u64(out + n, a / 100);
    out[n++] = '.';
    out[n++] = (char)('0' + a % 100 / 10);
    out[n++] = (char)('0' + a % 10);
    return n;
#else
    (void)out, (void)v;
    return 0;
#endif
}

/* printf's "%.0f" of a whole v, |v| < 1e15 ("-0" for -0); otherwise 0. */
static inline size_t decimal_whole(char *out, double v) {
    if (!(fabs(v) < 1e15) || v != floor(v)) return 0;
    if (v == 0 && signbit(v)) {
        out[0] = '-', out[1] = '0';
        return 2;
    }
    return decimal_i64(out, (int64_t)v);
}

#endif
