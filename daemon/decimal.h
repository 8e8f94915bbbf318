/*
 * decimal.h -- integers as decimal text, the same as printf's %d / %u /
 * PRId64, for the hot paths that format several numbers per record
 * (snprintf's format parsing cost more than the digits).  Each writes
 * without a NUL and returns the number of bytes written: at most 20.
 */
#ifndef TIERD_DECIMAL_H
#define TIERD_DECIMAL_H

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

#endif
