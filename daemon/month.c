/*
 * month.c -- month bucketing through glibc's localtime_r/mktime, in the
 * zone of a month_zone_t (one zone per process: month.h says why).  Each
 * zone value caches the last month it found, [start, end), which keeps
 * the common case (orders arriving in the current month) off the libc
 * path; there is no cache outside the values.
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

int month_zone_check(const char *name, char *errstr, size_t errstr_size) {
    char path[512];
    const char *dir = getenv("TZDIR");
    struct stat st;

    if (name == NULL || *name == '\0' || name[0] == '/' || strstr(name, "..")) {
        snprintf(errstr, errstr_size, "time zone \"%s\" is not an IANA zone name",
                 name ? name : "");
        return -1;
    }
    if (strlen(name) > MONTH_ZONE_NAME_MAX) {
        snprintf(errstr, errstr_size, "time zone name of %zu bytes is too long for one",
                 strlen(name));
        return -1;
    }
    if (strcmp(name, "UTC") != 0) {
        snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/usr/share/zoneinfo", name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            snprintf(errstr, errstr_size,
                     "time zone \"%s\" is unknown (no %s; is tzdata installed?)", name, path);
            return -1;
        }
    }
    return 0;
}

int month_zone_init(month_zone_t *z, const char *name, char *errstr, size_t errstr_size) {
    if (month_zone_check(name, errstr, errstr_size) != 0) return -1;
    /* glibc offers no zone per value: the process's TZ is the zone. */
    setenv("TZ", name, 1);
    tzset();
    memset(z, 0, sizeof(*z));
    memcpy(z->name, name, strlen(name) + 1);
    return 0;
}

/* The C library works in time_t seconds; all of the arithmetic below
 * assumes they are 64 bits wide. */
_Static_assert(sizeof(time_t) == sizeof(int64_t), "tierd needs a 64-bit time_t");

/* a / b rounded toward minus infinity, for b > 0; defined for every a. */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;

    if (a % b < 0) q--;
    return q;
}

int month_start_ms_checked(const month_zone_t *z, int32_t m, int64_t *out) {
    struct tm tm;
    time_t t;
    int64_t y = month_year(m);

    (void)z; /* the process's zone is z's (month.h) */
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)(y - 1900); /* |y| < 2^28: no overflow */
    tm.tm_mon = (int)(m - y * 12);
    tm.tm_mday = 1;
    tm.tm_isdst = -1;
    /* mktime returns -1 both for failure and for 1969-12-31T23:59:59; a
     * success always writes tm_wday, so an impossible one marks failure. */
    tm.tm_wday = -1;
    t = mktime(&tm);
    if (t == (time_t)-1 && tm.tm_wday == -1) return -1;
    if (__builtin_mul_overflow((int64_t)t, (int64_t)1000, out)) return -1;
    return 0;
}

int64_t month_start_ms(const month_zone_t *z, int32_t m) {
    int64_t ms;

    if (month_start_ms_checked(z, m, &ms) != 0) return m < 0 ? INT64_MIN : INT64_MAX;
    return ms;
}

int month_of_ms_checked(month_zone_t *z, int64_t ms, int32_t *out) {
    struct tm tm;
    time_t t;
    int64_t m, start, end;

    if (z->last.valid && ms >= z->last.start && ms < z->last.end) {
        *out = z->last.month;
        return 0;
    }
    t = (time_t)floor_div(ms, 1000);
    if (localtime_r(&t, &tm) == NULL) return -1;
    m = ((int64_t)tm.tm_year + 1900) * 12 + tm.tm_mon;
    if (m < MONTH_MIN || m > MONTH_MAX) return -1;
    /* Cache only a month whose bounds the library could place and that
     * does hold ms, so a hit is always the answer a miss would give. */
    if (month_start_ms_checked(z, (int32_t)m, &start) == 0 &&
        month_start_ms_checked(z, (int32_t)m + 1, &end) == 0 && start <= ms && ms < end) {
        z->last.start = start;
        z->last.end = end;
        z->last.month = (int32_t)m;
        z->last.valid = 1;
    }
    *out = (int32_t)m;
    return 0;
}

int32_t month_of_ms(month_zone_t *z, int64_t ms) {
    int32_t m;

    if (month_of_ms_checked(z, ms, &m) != 0) return ms < 0 ? MONTH_MIN : MONTH_MAX;
    return m;
}
