/*
 * month.h -- calendar months in a time zone.
 *
 * A month is an int32 index, year * 12 + (month - 1), so "three months
 * back" is plain subtraction.  Which month an instant falls in depends on
 * the zone, so every function that converts between instants and months
 * takes the zone as a value (month_zone_t), made once by month_zone_init()
 * and handed to whoever needs it (the apply context holds tierd's).  The
 * rest of this header is pure arithmetic on month indexes.
 *
 * One zone per process.  glibc has no per-value time zone: localtime_r and
 * mktime read the process's TZ, which month_zone_init() sets.  A
 * month_zone_t names its zone and keeps its own cache, but the conversions
 * underneath use whichever zone was initialised last, so a process must not
 * use two zones at once (a test that switches zones initialises the new
 * one first and stops using the old).  Not thread-safe for the same reason
 * (setenv), and because the cache is written on use: one zone value per
 * thread.
 *
 * Every function is defined for every input: nothing here overflows.  A
 * month is *representable* when it lies in [MONTH_MIN, MONTH_MAX], the
 * months whose YYYYMM fits an int (years -21474836 to 21474836).  Inside
 * that range every conversion is exact and round-trips; a caller may add or
 * subtract a few hundred million months to a representable month without
 * leaving int32.  The _checked variants say -1 where a result is not
 * representable; the plain ones saturate, as documented on each.
 */
#ifndef TIERD_MONTH_H
#define TIERD_MONTH_H

#include <stddef.h>
#include <stdint.h>

#define MONTH_MIN (-257698032) /* January of year -21474836: YYYYMM -2147483599 */
#define MONTH_MAX 257698043    /* December of year 21474836: YYYYMM 2147483612 */

/* Longest zone name accepted (IANA names are far shorter). */
#define MONTH_ZONE_NAME_MAX 255

/* A time zone and what month_of_ms() last found in it.  Made by
 * month_zone_init(); copying a made one is fine (the copy has its own
 * cache); a zeroed one is not a zone. */
typedef struct month_zone {
    char name[MONTH_ZONE_NAME_MAX + 1]; /* IANA name, "UTC" for instance */
    /* The last month found, [start, end) in epoch ms: orders arrive mostly
     * in the current month, and this keeps them off the C library. */
    struct {
        int valid;
        int64_t start, end;
        int32_t month;
    } last;
} month_zone_t;

/* Makes *z the zone `name` (IANA, such as "Asia/Shanghai") and makes it
 * the process's zone (TZ; see above).  Refuses names that have no zoneinfo
 * file, because glibc silently falls back to UTC; *z is then untouched. */
int month_zone_init(month_zone_t *z, const char *name, char *errstr, size_t errstr_size);
/* month_zone_init's checks of name alone: 0, or -1 with its reason.  The
 * process's zone is left as it is (a reload checks a new file with it). */
int month_zone_check(const char *name, char *errstr, size_t errstr_size);

/* The month that holds instant ms (epoch milliseconds) in zone z: 0 and
 * *out set, or -1 (*out untouched) when that month is outside
 * [MONTH_MIN, MONTH_MAX].  Updates z's cache. */
int month_of_ms_checked(month_zone_t *z, int64_t ms, int32_t *out);
/* The same, clamped: MONTH_MIN or MONTH_MAX when not representable.  Every
 * int64 ms gives a month; instants after year 21474836 all share MONTH_MAX. */
int32_t month_of_ms(month_zone_t *z, int64_t ms);

/* First instant (epoch ms) of month m in zone z: 0 and *out set, or -1
 * when the C library cannot place it (only for months far outside
 * [MONTH_MIN, MONTH_MAX]). */
int month_start_ms_checked(const month_zone_t *z, int32_t m, int64_t *out);
/* The same for any int32 m; saturates to INT64_MIN (m < 0) or INT64_MAX
 * where the checked form says -1, so it stays non-decreasing in m. */
int64_t month_start_ms(const month_zone_t *z, int32_t m);

/* Year of month m, rounding toward minus infinity (month -1 is year -1). */
static inline int32_t month_year(int32_t m) {
    return m >= 0 ? m / 12 : -(int32_t)((-(int64_t)m + 11) / 12);
}

/* 202611 for November 2026: year * 100 + month, so for negative years
 * -88 is December of year -1 (floor division by 100 recovers the year). */
static inline int month_yyyymm_checked(int32_t m, int *out) {
    int32_t y = month_year(m);

    if (m < MONTH_MIN || m > MONTH_MAX) return -1;
    *out = (int)((int64_t)y * 100 + (m - (int64_t)y * 12) + 1);
    return 0;
}

/* The same, clamped: months past either end give the YYYYMM of
 * MONTH_MIN or MONTH_MAX. */
static inline int month_yyyymm(int32_t m) {
    int v = 0;

    (void)month_yyyymm_checked(m < MONTH_MIN ? MONTH_MIN : m > MONTH_MAX ? MONTH_MAX : m, &v);
    return v;
}

/* The inverse of month_yyyymm: 0 and *out set, or -1 when the last two
 * digits are not 01..12 (so 202613, 202600 and 0 are refused). */
static inline int month_from_yyyymm_checked(int v, int32_t *out) {
    int64_t y = v >= 0 ? v / 100 : -((-(int64_t)v + 99) / 100);
    int64_t mm = (int64_t)v - y * 100;

    if (mm < 1 || mm > 12) return -1;
    *out = (int32_t)(y * 12 + mm - 1);
    return 0;
}

/* The same for any int: the last two digits count months from January
 * (202613 is 202701, 202600 is 202512).  Never overflows: the result is
 * within a few months of [MONTH_MIN, MONTH_MAX]. */
static inline int32_t month_from_yyyymm(int v) {
    int64_t y = v >= 0 ? v / 100 : -((-(int64_t)v + 99) / 100);

    return (int32_t)(y * 12 + ((int64_t)v - y * 100) - 1);
}

#endif
