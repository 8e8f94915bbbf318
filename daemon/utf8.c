/*
 * utf8.c -- the UTF-8 well-formedness check.
 *
 * A lead byte fixes the sequence length and the range its *second* byte
 * may take; that one range is what excludes overlong forms (E0, F0),
 * surrogates (ED) and code points above U+10FFFF (F4).  Every later byte
 * is a plain continuation, 80..BF.  Bytes C0, C1 and F5..FF never occur.
 */
#include <stdint.h>
#include <string.h>

#include "utf8.h"

size_t utf8_invalid_at(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0, len, k;
    uint8_t c, lo, hi;

    while (i < n) {
        uint64_t w;
        /* Eight ASCII bytes at once: ids and SKUs mostly are. */
        if (n - i >= 8 && (memcpy(&w, p + i, 8), !(w & UINT64_C(0x8080808080808080)))) {
            i += 8;
            continue;
        }
        c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        lo = 0x80;
        hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0; /* below is an overlong 2-byte form */
            else if (c == 0xed)
                hi = 0x9f; /* above is a surrogate */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90; /* below is an overlong 3-byte form */
            else if (c == 0xf4)
                hi = 0x8f; /* above is past U+10FFFF */
        } else {
            return i; /* a continuation byte, C0, C1 or F5..FF */
        }
        if (n - i < len) return i;
        if (p[i + 1] < lo || p[i + 1] > hi) return i;
        for (k = 2; k < len; k++)
            if (p[i + k] < 0x80 || p[i + k] > 0xbf) return i;
        i += len;
    }
    return n;
}

bool utf8_valid(const char *s, size_t n) {
    return utf8_invalid_at(s, n) == n;
}
