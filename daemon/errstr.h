/*
 * errstr.h -- filling the caller-owned errstr buffer (STYLE: errors are
 * values, with a sentence a user can act on).
 *
 * Private to the daemon.  decode, events and validate each had their own
 * copy of this one function; it lives here so none of them depends on the
 * others just to format a message.
 */
#ifndef TIERD_ERRSTR_H
#define TIERD_ERRSTR_H

#include <stddef.h>

/* printf into errstr, truncating to errstr_size.  A NULL or empty buffer
 * is allowed: the caller did not want the text. */
__attribute__((format(printf, 3, 4))) void errstr_fmt(char *errstr, size_t errstr_size,
                                                      const char *fmt, ...);

#endif
