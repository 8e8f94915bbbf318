/*
 * month.c -- month bucketing through glibc's localtime_r/mktime.
 * A two-entry cache of the last month's [start, end) keeps the common case
 * (orders arriving in the current month) off the libc path.
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

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

int64_t month_start_ms(int32_t m) {
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_year = (int)(floor_div(m, 12) - 1900);
    tm.tm_mon = (int)(m - floor_div(m, 12) * 12);
    tm.tm_mday = 1;
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm) * 1000;
}

int32_t month_of_ms(int64_t ms) {
    struct tm tm;
    time_t t;
    int32_t m;

    if (cache.valid && ms >= cache.start && ms < cache.end) return cache.month;
    t = (time_t)floor_div(ms, 1000);
    localtime_r(&t, &tm);
    m = (int32_t)(tm.tm_year + 1900) * 12 + tm.tm_mon;
    cache.start = month_start_ms(m);
    cache.end = month_start_ms(m + 1);
    cache.month = m;
    cache.valid = 1;
    return m;
}
