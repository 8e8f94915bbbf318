/*
 * errstr.c -- see errstr.h.  Owns nothing; must never write past
 * errstr_size or touch a NULL buffer.
 */
#include <stdarg.h>
#include <stdio.h>

#include "errstr.h"

void errstr_fmt(char *errstr, size_t errstr_size, const char *fmt, ...) {
    va_list ap;

    if (errstr == NULL || errstr_size == 0) return;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
}
