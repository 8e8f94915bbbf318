/*
 * month.c -- month bucketing through glibc's localtime_r/mktime.
 * A two-entry cache of the last month's [start, end) keeps the common case
 * (orders arriving in the current month) off the libc path.
 *
 * placed_at is any int64 off the wire, so nothing here may overflow: years
 * and months are computed in int64 and only narrowed once known to fit, and
 * a failure of the C library is a value, never an uninitialised struct tm.
 */
#include "month.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static struct {
    int valid;
    int64_t start, end;
    int32_t month;
} cache;

int month_set_zone(const char *zone, char *errstr, size_t errstr_size) {
    char path[512];
    const char *dir = getenv("TZDIR");
    struct stat st;

    if (zone == NULL || *zone == '\0' || zone[0] == '/' || strstr(zone, "..")) {
        snprintf(errstr, errstr_size, "time zone \"%s\" is not an IANA zone name",
                 zone ? zone : "");
        return -1;
    }
    if (strcmp(zone, "UTC") != 0) {
        snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/usr/share/zoneinfo", zone);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(errstr, errstr_size,
                     "time zone \"%s\" is unknown (no %s; is tzdata installed?)", zone,
                     path);
            return -1;
        }
    }
    setenv("TZ", zone, 1);
    tzset();
    cache.valid = 0;
    return 0;
}

/* The C library works in time_t seconds; all of the arithmetic below
 * assumes they are 64 bits wide. */
_Static_assert(sizeof(time_t) == sizeof(int64_t), "tierd needs a 64-bit time_t");

/* a / b rounded toward minus infinity, for b > 0; defined for every a. */
static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;

    if (a % b < 0)
        q--;
    return q;
}

int month_start_ms_checked(int32_t m, int64_t *out)
{
    struct tm tm;
    time_t t;
    int64_t y = month_year(m);

    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)(y - 1900); /* |y| < 2^28: no overflow */
    tm.tm_mon = (int)(m - y * 12);
    tm.tm_mday = 1;
    tm.tm_isdst = -1;
    /* mktime returns -1 both for failure and for 1969-12-31T23:59:59; a
     * success always writes tm_wday, so an impossible one marks failure. */
    tm.tm_wday = -1;
    t = mktime(&tm);
    if (t == (time_t)-1 && tm.tm_wday == -1)
        return -1;
    if (__builtin_mul_overflow((int64_t)t, (int64_t)1000, out))
        return -1;
    return 0;
}

int64_t month_start_ms(int32_t m)
{
    int64_t ms;

    if (month_start_ms_checked(m, &ms) != 0)
        return m < 0 ? INT64_MIN : INT64_MAX;
    return ms;
}

int month_of_ms_checked(int64_t ms, int32_t *out)
{
    struct tm tm;
    time_t t;
    int64_t m, start, end;

    if (cache.valid && ms >= cache.start && ms < cache.end) {
        *out = cache.month;
        return 0;
    }
    t = (time_t)floor_div(ms, 1000);
    if (localtime_r(&t, &tm) == NULL)
        return -1;
    m = ((int64_t)tm.tm_year + 1900) * 12 + tm.tm_mon;
    if (m < MONTH_MIN || m > MONTH_MAX)
        return -1;
    /* Cache only a month whose bounds the library could place and that
     * does hold ms, so a hit is always the answer a miss would give. */
    if (month_start_ms_checked((int32_t)m, &start) == 0 &&
        month_start_ms_checked((int32_t)m + 1, &end) == 0 && start <= ms && ms < end) {
        cache.start = start;
        cache.end = end;
        cache.month = (int32_t)m;
        cache.valid = 1;
    }
    *out = (int32_t)m;
    return 0;
}

int32_t month_of_ms(int64_t ms)
{
    int32_t m;

    if (month_of_ms_checked(ms, &m) != 0)
        return ms < 0 ? MONTH_MIN : MONTH_MAX;
    return m;
}
