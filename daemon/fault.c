/*
 * fault.c -- see fault.h.  The only file that looks at TIERD_TEST_HOOKS
 * (CMake defines it for this file alone), so no other code can grow a
 * test-only branch.
 */
#include "fault.h"

#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static const char *const fault_env[FAULT__COUNT] = {
    [FAULT_COMMIT] = "TIERD_FAULT_COMMIT_STALL_FILE",
    [FAULT_REVIEW] = "TIERD_FAULT_REVIEW_STALL_FILE",
    [FAULT_PUBLISH] = "TIERD_FAULT_PUBLISH_STALL_FILE",
    [FAULT_SEEK] = "TIERD_FAULT_SEEK_FAIL_FILE",
};
static const char range_env[] = "TIERD_FAULT_OUT_OF_RANGE_FILE";

#ifdef TIERD_TEST_HOOKS

/* The record TIERD_FAULT_OUT_OF_RANGE_FILE names, if any. */
static void range_from_env(fault_t *f, const char *path) {
    long long p = -1, o = -1;
    FILE *fp = path ? fopen(path, "r") : NULL;
    f->range_armed = 0;
    if (!fp) return;
    if (fscanf(fp, "%lld %lld", &p, &o) == 2 && p >= 0 && p <= INT32_MAX) {
        f->range_armed = 1;
        f->range_partition = (int32_t)p;
        f->range_offset = o;
    }
    fclose(fp);
}

void fault_from_env(fault_t *f) {
    const char *range = getenv(range_env);
    int any = range != NULL;
    range_from_env(f, range);
    for (int p = 0; p < FAULT__COUNT; p++) any |= (f->stall_file[p] = getenv(fault_env[p])) != NULL;
    if (any) log_warn("main", "fault injection is on (TIERD_FAULT_*): for tests only");
}

int fault_out_of_range_at(fault_t *f, int32_t partition, int64_t offset) {
    if (f->range_partition != partition || f->range_offset != offset) return 0;
    f->range_armed = 0; /* once */
    log_warn("consumer", "fault injection: the record at offset %" PRId64 " comes as out of range",
             offset);
    return 1;
}

static int exists(const fault_t *f, fault_point_t p) {
    struct stat st;
    return f->stall_file[p] != NULL && stat(f->stall_file[p], &st) == 0;
}

void fault_stall(const fault_t *f, fault_point_t p) {
    for (int i = 0; i < 1200 && exists(f, p); i++) {
        if (i == 0) log_warn("txn", "fault injection: stalled before EXEC");
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
}

int fault_holding(const fault_t *f, fault_point_t p) {
    return exists(f, p);
}

#else /* no hooks in this build */

void fault_from_env(fault_t *f) {
    int p = 0;
    memset(f, 0, sizeof(*f));
    while (p < FAULT__COUNT && getenv(fault_env[p]) == NULL) p++;
    if (p < FAULT__COUNT || getenv(range_env)) /* once is enough */
        log_warn("main", "%s is set, but this tierd was built without TIERD_TEST_HOOKS: ignored",
                 p < FAULT__COUNT ? fault_env[p] : range_env);
}

void fault_stall(const fault_t *f, fault_point_t p) {
    (void)f, (void)p;
}

int fault_holding(const fault_t *f, fault_point_t p) {
    (void)f, (void)p;
    return 0;
}

int fault_out_of_range_at(fault_t *f, int32_t partition, int64_t offset) {
    (void)f, (void)partition, (void)offset;
    return 0;
}

#endif
