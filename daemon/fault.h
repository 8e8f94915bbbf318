/*
 * fault.h -- fault injection for the integration tests, compiled in only
 * when the CMake option TIERD_TEST_HOOKS is ON (scripts/test turns it on;
 * release, demo and Docker builds leave it off).
 *
 * A hook is a file named by an environment variable: while the file
 * exists, tierd stops at that point, so a test can kill it exactly there:
 *   TIERD_FAULT_COMMIT_STALL_FILE   an order or profile batch waits before
 *                                   its EXEC (test_rebalance.py)
 *   TIERD_FAULT_REVIEW_STALL_FILE   a review page waits before its EXEC
 *   TIERD_FAULT_PUBLISH_STALL_FILE  the publisher holds the outboxes' events
 *                                   (both test_events_crash.py)
 *   TIERD_FAULT_SEEK_FAIL_FILE      a rewind's seek fails, as one that timed
 *                                   out: the reading stays where it was
 *                                   (test_redis_rollback.py)
 * and one that changes what tierd reads:
 *   TIERD_FAULT_OUT_OF_RANGE_FILE   holds "P O" when tierd starts: the
 *                                   orders record at partition P, offset O
 *                                   comes, once, as librdkafka's
 *                                   out-of-range error, though the broker
 *                                   holds it (test_offsets.py)
 * Built without the option, the hooks are not in the binary: the
 * functions below do nothing, and a TIERD_FAULT_* variable in the
 * environment is ignored, with one warning at start.
 */
#ifndef TIERD_FAULT_H
#define TIERD_FAULT_H

#include <stdint.h>

typedef enum fault_point {
    FAULT_COMMIT = 0, /* before the EXEC of an order or profile batch */
    FAULT_REVIEW,     /* before the EXEC of a review page */
    FAULT_PUBLISH,    /* the outbox publisher's round */
    FAULT_SEEK,       /* a rewind's seek: refused, the position left as it was */
    FAULT__COUNT
} fault_point_t;

typedef struct fault {
    const char *stall_file[FAULT__COUNT]; /* borrowed (the environment); NULL: no hook */
    /* From TIERD_FAULT_OUT_OF_RANGE_FILE, read once at start: the orders
     * record to hand over as an error, while range_armed (0: none, or done). */
    int range_armed;
    int32_t range_partition;
    int64_t range_offset;
} fault_t;

/* Fills f from the TIERD_FAULT_* variables and logs, once, that fault
 * injection is on, or that this build ignores them.  A zeroed fault_t has
 * no hook. */
void fault_from_env(fault_t *f);

/* Waits while point p's file exists, at most 120 s ("fault injection:
 * stalled before EXEC" in the log, once). */
void fault_stall(const fault_t *f, fault_point_t p);

/* 1 while point p's file exists: the caller holds back for now. */
int fault_holding(const fault_t *f, fault_point_t p);

/* 1, once, when the orders record at (partition, offset) is the one the
 * out-of-range file named at start: the caller takes it for librdkafka's
 * _AUTO_OFFSET_RESET at that offset. */
int fault_out_of_range_at(fault_t *f, int32_t partition, int64_t offset);
/* Per record: a flag's test inline, the call only while the hook is armed
 * (never in a build without the hooks). */
static inline int fault_out_of_range(fault_t *f, int32_t partition, int64_t offset) {
    return f->range_armed && fault_out_of_range_at(f, partition, offset);
}

#endif
