/*
 * metrics.h -- tierd's metrics and health endpoints.
 *
 * The main loop fills a metrics_snapshot_t and publishes it (once a second
 * and at shutdown).  One HTTP thread, started by metrics_start and joined by
 * metrics_stop, serves the latest snapshot and nothing else:
 *
 *   GET /metrics   Prometheus text exposition 0.0.4
 *   GET /healthz   "the loop turns": 200 "ok" while publishes keep coming
 *                  and the snapshot says healthy; 503 once the last publish
 *                  is older than the staleness window (3 s by default:
 *                  three missed seconds).  A liveness probe: waiting for
 *                  Redis or Kafka is no reason to fail it, so the loop
 *                  keeps publishing, healthy, while it waits.
 *   GET /readyz    "orders are being applied": 200 "ready" when the
 *                  snapshot says ready and it is fresh; 503 while Redis is
 *                  unreachable or no partition is assigned.  Either way,
 *                  one line more per assigned partition whose Redis node
 *                  does not answer: "partition 3 waits on redis
 *                  127.0.0.1:7001" (on a cluster the other partitions go
 *                  on, and tierd stays ready while one of them does).
 *   other paths    404; methods other than GET and HEAD: 405
 *
 * Idle or slow clients cannot starve the probes: the server holds hundreds
 * of connections at once, closes idle ones after 5 s and limits one
 * address to half of them (metrics.c says why those numbers).
 *
 * The snapshot is the thread's only input: metrics_publish copies it into a
 * mutex-guarded slot and returns; the HTTP thread copies the slot out and
 * renders without holding the lock, so a slow scrape never stalls the main
 * loop.  Publishing allocates nothing.
 */
#ifndef TIERD_METRICS_H
#define TIERD_METRICS_H

#include "tierd/policy.h"

#include <stddef.h>
#include <stdint.h>

#define METRICS_MAX_REASONS 32
#define METRICS_MAX_PARTS 256
#define METRICS_RTT_BUCKETS 12
#define METRICS_LAT_BUCKETS 13
#define METRICS_NODE_MAX 80 /* "host:port" of a Redis node, truncated beyond */
/* Why a partition's reading of an input topic waits (parts[].waits). */
#define METRICS_WAIT_PAST_END 1 /* the offset tierd holds lies past the topic's end */
#define METRICS_WAIT_DIFFERS 2  /* the record before it is not the one applied there */
/* Redirections a Redis Cluster answered, by kind (store.h's order). */
enum {
    METRICS_REDIR_MOVED,
    METRICS_REDIR_ASK,
    METRICS_REDIR_TRYAGAIN,
    METRICS_REDIR_CLUSTERDOWN,
    METRICS_REDIR__COUNT
};

/* Upper bounds, in seconds, of the Redis round-trip histogram buckets:
 * 100 us .. 1 s.  redis_rtt_buckets[i] counts round trips <= bound i. */
extern const double metrics_rtt_bounds[METRICS_RTT_BUCKETS];
/* Order latency buckets, in seconds: 5 ms .. 60 s. */
extern const double metrics_latency_bounds[METRICS_LAT_BUCKETS];

typedef struct metrics metrics_t;

/* What the main loop publishes.  Counters are totals since start.  The
 * strings (reason_names[], policy_name, policy_version) are read only during
 * metrics_publish and metrics_render: the policy strings are copied, so they
 * may be freed on reload; reason_names must stay valid until metrics_stop
 * (the consumer holds them). */
typedef struct metrics_snapshot {
    uint64_t applied, duplicates, redelivered, dead, batches, fenced, reviews, profiles;
    uint64_t state_corrupt; /* customer states that did not parse */
    uint64_t review_pages;  /* review transactions committed */
    uint64_t dead_standins; /* dead letters sent as stand-ins (publish_dead) */
    uint64_t dead_lost;     /* dead letters refused even as stand-ins */
    /* Errors the consumers got in place of records: [0] orders, [1]
     * customer profiles (a fetch refused, a topic gone). */
    uint64_t read_errors[2];
    /* Offsets the broker deleted (retention) before tierd read them, and
     * partitions whose reading waits because the offset tierd holds lies
     * past the topic's end: [0] orders, [1] profiles. */
    uint64_t deleted_unread[2];
    uint32_t past_end[2];
    uint64_t dead_by_reason[METRICS_MAX_REASONS];
    const char *const *reason_names; /* nreasons entries; NULL entries are named by index */
    size_t nreasons;
    uint64_t tier_events, quota_events, events_published, outbox_depth;
    uint64_t quota_by_kind[POLICY_QUOTA__COUNT]; /* quota_events by kind, all exported */
    uint64_t redis_commands;
    uint64_t redis_redirects[METRICS_REDIR__COUNT]; /* a cluster's MOVED, ASK, ... */
    double redis_rtt_seconds_sum;                   /* round-trip latency */
    uint64_t redis_rtt_count;
    double redis_rtt_buckets[METRICS_RTT_BUCKETS]; /* cumulative, see metrics_rtt_bounds */
    uint64_t batch_records_sum, batch_count;       /* batch sizes */
    double review_seconds_sum;
    uint64_t review_count;
    /* Kafka timestamp of an order record to the commit of its batch. */
    double order_latency_sum;
    uint64_t order_latency_count;
    double order_latency_buckets[METRICS_LAT_BUCKETS]; /* see metrics_latency_bounds */
    struct {
        int32_t partition;
        int64_t lag;       /* < 0: unknown, not exported */
        int64_t committed; /* < 0: nothing committed yet, not exported */
        int assigned;      /* only assigned partitions are exported */
        /* The Redis node that serves it ("host:port"; a cluster: its
         * slot's master, "-" while none does), and whether that node
         * answers (0: the partition waits on it). */
        char node[METRICS_NODE_MAX];
        int node_up;
        /* Why its reading of [0] orders, [1] profiles waits, a
         * METRICS_WAIT_* (docs/operations.md, "An input topic made
         * again"); 0: it reads. */
        int waits[2];
    } parts[METRICS_MAX_PARTS];
    size_t nparts;
    double orders_per_second; /* over the last interval */
    /* orders are being applied: Redis reachable and at least one partition
     * assigned (not paused, not shutting down) */
    int ready;
    /* the loop turns: 0 only after a fatal error, never for Redis or Kafka
     * being away (that is !ready); staleness is checked here too */
    int healthy;
    const char *policy_name, *policy_version;
} metrics_snapshot_t;

/* Starts the HTTP thread listening on `listen`: "127.0.0.1:9464",
 * "[::1]:9464" (numeric addresses only; port 0 picks a free port, see
 * metrics_port).  "" disables the server: the handle is valid, accepts
 * publishes and serves nothing.  NULL and errstr filled on failure. */
metrics_t *metrics_start(const char *listen, char *errstr, size_t errstr_size);

/* 0 when `listen` is an address metrics_start accepts ("" aside); else -1
 * and the reason in errstr.  For --check-config. */
int metrics_check_listen(const char *listen, char *errstr, size_t errstr_size);

/* Copies the snapshot for the HTTP thread and stamps the time of the
 * publish, which /healthz checks.  Never allocates; accepts NULL. */
void metrics_publish(metrics_t *m, const metrics_snapshot_t *s);

/* Stops the server and joins its thread; accepts NULL. */
void metrics_stop(metrics_t *m);

/* The port the server is bound to; 0 when disabled. */
int metrics_port(const metrics_t *m);

/* How old the last publish may be before /healthz and /readyz answer 503
 * (default 3000 ms).  Tests shorten it. */
void metrics_set_stale_after_ms(metrics_t *m, unsigned ms);

/* The body of /readyz for a snapshot: "ready\n" or "not ready\n", then a
 * line for each assigned partition whose Redis node does not answer.
 * Truncated to fit size (which must be > 0).  Pure. */
void metrics_ready_text(const metrics_snapshot_t *s, char *buf, size_t size);

/* Adds one observation v to a cumulative histogram over the n `bounds`:
 * sum, count and every bucket whose bound v does not exceed.  Pure. */
void metrics_hist_observe(const double *bounds, size_t n, double *buckets, double *sum,
                          uint64_t *count, double v);
/* metrics_hist_observe on the snapshot's round-trip histogram. */
void metrics_observe_rtt(metrics_snapshot_t *s, double seconds);

/* Renders the Prometheus text exposition of a snapshot into a malloc'd,
 * NUL-terminated buffer the caller frees; *len gets its length without the
 * NUL.  NULL when out of memory.  Pure. */
char *metrics_render(const metrics_snapshot_t *s, size_t *len);

#endif
