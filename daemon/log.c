/*
 * log.c -- formats one line per event: "<level> module: message".
 * When stderr is the journal (JOURNAL_STREAM set) the level travels as a
 * syslog prefix <N> and no timestamp is printed; otherwise an ISO-8601 UTC
 * timestamp leads the line.
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

_Atomic int log_level = LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {3, 4, 6, 7};

int log_level_parse(const char *name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0) return i;
    return -1;
}

void log_write(int level, const char *module, const char *fmt, ...) {
    /* Process-wide: stderr is the process's, journal or not; read once. */
    static _Atomic int journal = -1;
    char msg[2048];
    va_list ap;

    if (journal < 0) journal = getenv("JOURNAL_STREAM") != NULL;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (level < 0) level = 0;
    if (level > 3) level = 3;

    if (journal) {
        fprintf(stderr, "<%d>%s: %s\n", syslog_prio[level], module, msg);
    } else {
        struct timeval tv;
        struct tm tm;
        char ts[32];
        gettimeofday(&tv, NULL);
        gmtime_r(&tv.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
        fprintf(stderr, "%s.%03dZ %-5s %s: %s\n", ts, (int)(tv.tv_usec / 1000), level_names[level],
                module, msg);
    }
}
