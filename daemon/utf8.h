/*
 * utf8.h -- is a byte string well-formed UTF-8?
 *
 * Every string tierd copies into an event or a Redis key (ids, SKUs, the
 * record key, the currency) must be UTF-8: Avro declares its strings so,
 * and a consumer in another language would fail on them later, far from
 * the record that caused it.  Pure; no locale, no allocation.
 */
#ifndef TIERD_UTF8_H
#define TIERD_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* Offset of the first byte of s[0..n) that does not start a well-formed
 * sequence, or n when every byte does.  Well-formed is Unicode's table
 * 3-7 (RFC 3629): no overlong forms, no surrogates U+D800..U+DFFF, nothing
 * above U+10FFFF, no sequence cut short by the end of s, no stray
 * continuation byte.  NUL and other control characters are valid UTF-8;
 * refusing them is the caller's rule. */
size_t utf8_invalid_at(const char *s, size_t n);

/* utf8_invalid_at(s, n) == n.  s may be NULL when n is 0. */
bool utf8_valid(const char *s, size_t n);

#endif
