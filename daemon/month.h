/*
 * month.h -- calendar months in the configured time zone.
 *
 * A month is an int32 index, year * 12 + (month - 1), so "three months
 * back" is plain subtraction.  The zone is process-wide (glibc's TZ): it
 * is set once at start by month_set_zone(); everything else here is a pure
 * function of its arguments and that zone.
 */
#ifndef TIERD_MONTH_H
#define TIERD_MONTH_H

#include <stddef.h>
#include <stdint.h>

/* Sets the zone (IANA name such as "Asia/Shanghai").  Refuses names that
 * have no zoneinfo file, because glibc silently falls back to UTC. */
int month_set_zone(const char *zone, char *errstr, size_t errstr_size);

/* The month that holds instant ms (epoch milliseconds). */
int32_t month_of_ms(int64_t ms);
/* First instant (epoch ms) of month m, in the zone. */
int64_t month_start_ms(int32_t m);
/* 202611 for November 2026. */
static inline int month_yyyymm(int32_t m) { return (m / 12) * 100 + (m % 12) + 1; }
static inline int32_t month_from_yyyymm(int v) { return (v / 100) * 12 + (v % 100) - 1; }

#endif
