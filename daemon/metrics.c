/*
 * metrics.c -- the HTTP thread behind /metrics, /healthz and /readyz.
 *
 * Owns: one libmicrohttpd daemon with its own epoll thread, exactly one
 * thread whose only job is answering these requests; it starts in
 * metrics_start and is joined in metrics_stop (MHD_stop_daemon).
 * Its queue in is the `latest` slot, a one-deep mailbox the main loop
 * overwrites under `mu`; its queue out is the HTTP responses.  The thread
 * copies the slot into `serving` (touched by no other thread) and renders
 * from that copy with the lock released.
 *
 * Must never: call back into the main loop, touch Kafka or Redis, allocate
 * in metrics_publish, or take a signal meant for the main loop (the thread
 * is started with every signal blocked).
 *
 * Must never starve /healthz either: a liveness probe that queues behind
 * idle or slow clients gets tierd restarted for nothing.  See
 * http_conn_limit and metrics_start for how the server stays open to it.
 */
#include "metrics.h"

#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#define MOD "metrics"

const double metrics_rtt_bounds[METRICS_RTT_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
};
/* The same bounds as label values, written once so they never print as
 * 0.00025000000000000001. */
static const char *const rtt_le[METRICS_RTT_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
    "0.01",   "0.025",   "0.05",   "0.1",   "0.25",   "1",
};

const double metrics_latency_bounds[METRICS_LAT_BUCKETS] = {
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
};
static const char *const lat_le[METRICS_LAT_BUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
};

/* A snapshot and the policy strings it points at, so a reload may free
 * the originals while the HTTP thread renders. */
typedef struct slot {
    metrics_snapshot_t s;
    char policy_name[128];
    char policy_version[64];
} slot_t;

struct metrics {
    struct MHD_Daemon *d; /* NULL when disabled */
    int port;
    pthread_mutex_t mu; /* guards everything below */
    slot_t latest;
    int published;         /* latest holds a publish */
    uint64_t published_ms; /* monotonic time of that publish */
    unsigned stale_after_ms;
    int starting; /* MHD log lines go to start_err too */
    char start_err[256];
    uint64_t logged_ms;  /* when the last MHD line was logged after start */
    unsigned suppressed; /* MHD lines dropped since then */
    slot_t serving;      /* the HTTP thread's copy; no lock, so never a thread pool */
};

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Copies a snapshot into a slot and points its strings at the slot's own
 * buffers.  No allocation: this runs on the main loop every second. */
static void slot_fill(slot_t *dst, const metrics_snapshot_t *s) {
    dst->s = *s;
    if (s->policy_name) {
        snprintf(dst->policy_name, sizeof(dst->policy_name), "%s", s->policy_name);
        dst->s.policy_name = dst->policy_name;
    }
    if (s->policy_version) {
        snprintf(dst->policy_version, sizeof(dst->policy_version), "%s", s->policy_version);
        dst->s.policy_version = dst->policy_version;
    }
}

/* ---- rendering ---------------------------------------------------------- */

typedef struct buf {
    char *p; /* owned; handed to the caller by metrics_render */
    size_t len, cap;
    int oom;
} buf_t;

static void buf_reserve(buf_t *b, size_t more) {
    if (b->oom || b->len + more + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return;
    }
    b->p = p;
    b->cap = cap;
}

static void buf_put(buf_t *b, const char *s, size_t n) {
    buf_reserve(b, n);
    if (b->oom) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s) {
    buf_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void buf_printf(buf_t *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->oom = 1;
        return;
    }
    if ((size_t)n < sizeof(small)) {
        buf_put(b, small, (size_t)n);
        return;
    }
    buf_reserve(b, (size_t)n);
    if (b->oom) return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A label value as the exposition format wants it: \ " and newline escaped. */
static void buf_label(buf_t *b, const char *v) {
    for (const char *c = v ? v : ""; *c; c++) {
        switch (*c) {
        case '\\': buf_str(b, "\\\\"); break;
        case '"': buf_str(b, "\\\""); break;
        case '\n': buf_str(b, "\\n"); break;
        default: buf_put(b, c, 1); break;
        }
    }
}

/* Prometheus floats: NaN, +Inf, -Inf, or a number Go's ParseFloat reads. */
static void buf_double(buf_t *b, double v) {
    if (isnan(v))
        buf_str(b, "NaN");
    else if (isinf(v))
        buf_str(b, v > 0 ? "+Inf" : "-Inf");
    else
        buf_printf(b, "%.15g", v);
}

static void head(buf_t *b, const char *name, const char *type, const char *help) {
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(buf_t *b, const char *name, const char *help, uint64_t v) {
    head(b, name, "counter", help);
    buf_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void gauge_u(buf_t *b, const char *name, const char *help, uint64_t v) {
    head(b, name, "gauge", help);
    buf_printf(b, "%s %" PRIu64 "\n", name, v);
}

static void summary(buf_t *b, const char *name, const char *help, double sum, uint64_t count) {
    head(b, name, "summary", help);
    buf_printf(b, "%s_sum ", name);
    buf_double(b, sum);
    buf_printf(b, "\n%s_count %" PRIu64 "\n", name, count);
}

/* Buckets must not decrease and +Inf must hold them all, or Prometheus
 * computes nonsense quantiles: a racy fill is clamped here. */
static void histogram(buf_t *b, const char *name, const char *help, const char *const *le,
                      const double *buckets, size_t n, double sum, uint64_t count) {
    double cum = 0;
    head(b, name, "histogram", help);
    for (size_t i = 0; i < n; i++) {
        if (buckets[i] > cum) cum = buckets[i];
        buf_printf(b, "%s_bucket{le=\"%s\"} ", name, le[i]);
        buf_double(b, cum);
        buf_str(b, "\n");
    }
    double total = (double)count > cum ? (double)count : cum;
    buf_printf(b, "%s_bucket{le=\"+Inf\"} ", name);
    buf_double(b, total);
    buf_printf(b, "\n%s_sum ", name);
    buf_double(b, sum);
    buf_printf(b, "\n%s_count ", name);
    buf_double(b, total);
    buf_str(b, "\n");
}

/* One series per assigned partition with a known value (>= 0): its lag
 * (committed = 0) or its committed offset (committed = 1). */
static void partition_gauge(buf_t *b, const char *name, const char *help,
                            const metrics_snapshot_t *s, size_t nparts, int committed) {
    head(b, name, "gauge", help);
    for (size_t i = 0; i < nparts; i++) {
        int64_t v = committed ? s->parts[i].committed : s->parts[i].lag;
        if (s->parts[i].assigned && v >= 0)
            buf_printf(b, "%s{partition=\"%" PRId32 "\"} %" PRId64 "\n", name,
                       s->parts[i].partition, v);
    }
}

char *metrics_render(const metrics_snapshot_t *s, size_t *len) {
    buf_t b = {0};
    size_t nreasons = s->nreasons < METRICS_MAX_REASONS ? s->nreasons : METRICS_MAX_REASONS;
    size_t nparts = s->nparts < METRICS_MAX_PARTS ? s->nparts : METRICS_MAX_PARTS;

    counter(&b, "tierd_orders_applied_total", "Orders applied to the monthly aggregates.",
            s->applied);
    counter(&b, "tierd_duplicates_ignored_total",
            "Orders ignored because they had been applied before.", s->duplicates);
    counter(&b, "tierd_redelivered_total", "Records received again after a rebalance or restart.",
            s->redelivered);

    head(&b, "tierd_dead_letters_total", "counter",
         "Records refused and sent to the dead-letter topic, by reason.");
    if (nreasons == 0) {
        buf_printf(&b, "tierd_dead_letters_total{reason=\"unknown\"} %" PRIu64 "\n", s->dead);
    }
    for (size_t i = 0; i < nreasons; i++) {
        const char *name = s->reason_names ? s->reason_names[i] : NULL;
        buf_str(&b, "tierd_dead_letters_total{reason=\"");
        if (name)
            buf_label(&b, name);
        else
            buf_printf(&b, "%zu", i);
        buf_printf(&b, "\"} %" PRIu64 "\n", s->dead_by_reason[i]);
    }

    counter(&b, "tierd_dead_letter_standins_total",
            "Dead letters the topic refused as they were (too large, not a valid record), sent "
            "as stand-ins.",
            s->dead_standins);
    counter(&b, "tierd_dead_letters_lost_total",
            "Dead letters the topic refused even as stand-ins; each is logged with its "
            "coordinates.",
            s->dead_lost);
    head(&b, "tierd_read_errors_total", "counter",
         "Errors the consumer got in place of records (a fetch the broker refused, a topic "
         "gone), by input: orders or profiles; the log names the topic and the fix.");
    buf_printf(&b, "tierd_read_errors_total{input=\"orders\"} %" PRIu64 "\n", s->read_errors[0]);
    buf_printf(&b, "tierd_read_errors_total{input=\"profiles\"} %" PRIu64 "\n", s->read_errors[1]);
    head(&b, "tierd_deleted_unread_total", "counter",
         "Offsets the broker deleted (retention) before tierd read them, by input: an upper "
         "bound of the records lost (transaction markers take offsets too).");
    buf_printf(&b, "tierd_deleted_unread_total{input=\"orders\"} %" PRIu64 "\n",
               s->deleted_unread[0]);
    buf_printf(&b, "tierd_deleted_unread_total{input=\"profiles\"} %" PRIu64 "\n",
               s->deleted_unread[1]);
    head(&b, "tierd_partitions_past_end", "gauge",
         "Partitions whose reading waits because the topic does not hold what tierd read "
         "(made again, or the broker lost records): the offset held lies past its end, or the "
         "record before it is another; by input.");
    buf_printf(&b, "tierd_partitions_past_end{input=\"orders\"} %" PRIu32 "\n", s->past_end[0]);
    buf_printf(&b, "tierd_partitions_past_end{input=\"profiles\"} %" PRIu32 "\n", s->past_end[1]);
    counter(&b, "tierd_batches_total", "Batches committed.", s->batches);
    counter(&b, "tierd_fenced_commits_total",
            "Batch commits refused because another member owns the partition now.", s->fenced);
    counter(&b, "tierd_state_corrupt_total",
            "Customer states that did not parse; their partition waits for tierctl rebuild.",
            s->state_corrupt);
    counter(&b, "tierd_review_pages_total",
            "Review transactions committed (a month's review runs in pages of 1000 customers).",
            s->review_pages);
    counter(&b, "tierd_reviews_total", "Monthly partition reviews run.", s->reviews);
    counter(&b, "tierd_profiles_applied_total", "Customer profile records applied.", s->profiles);

    head(&b, "tierd_events_decided_total", "counter", "Events the policy decided, by kind.");
    buf_printf(&b, "tierd_events_decided_total{kind=\"tier_change\"} %" PRIu64 "\n",
               s->tier_events);
    buf_printf(&b, "tierd_events_decided_total{kind=\"quota\"} %" PRIu64 "\n", s->quota_events);

    /* Every kind, at 0 too: an alert on increase() needs the series to
     * exist before the first event, or its first increase is never seen. */
    head(&b, "tierd_quota_events_total", "counter",
         "Quota events decided and committed to the outbox, by kind.");
    for (size_t k = 0; k < POLICY_QUOTA__COUNT; k++)
        buf_printf(&b, "tierd_quota_events_total{kind=\"%s\"} %" PRIu64 "\n",
                   policy_quota_kind_name((policy_quota_kind_t)k), s->quota_by_kind[k]);

    counter(&b, "tierd_events_published_total",
            "Events acknowledged by Kafka and removed from the outbox.", s->events_published);
    counter(&b, "tierd_redis_commands_total", "Commands sent to Redis.", s->redis_commands);
    head(&b, "tierd_redis_redirects_total", "counter",
         "Requests a Redis Cluster redirected, by kind: moved (the slot map changed), ask (a "
         "slot being migrated), tryagain and clusterdown (retried after a backoff).");
    static const char *const redir_kind[METRICS_REDIR__COUNT] = {"moved", "ask", "tryagain",
                                                                 "clusterdown"};
    for (size_t k = 0; k < METRICS_REDIR__COUNT; k++)
        buf_printf(&b, "tierd_redis_redirects_total{kind=\"%s\"} %" PRIu64 "\n", redir_kind[k],
                   s->redis_redirects[k]);
    gauge_u(&b, "tierd_outbox_depth",
            "Outbox entries (one transaction's events each) Kafka has not acknowledged.",
            s->outbox_depth);

    partition_gauge(&b, "tierd_consumer_lag",
                    "Records between the committed offset and the end of an assigned partition.", s,
                    nparts, 0);
    partition_gauge(&b, "tierd_committed_offset",
                    "Next offset to consume, as last committed, of an assigned partition.", s,
                    nparts, 1);

    head(&b, "tierd_partition_redis_up", "gauge",
         "1 when the Redis node serving an assigned partition answers; 0 while the partition "
         "waits on it (on a cluster: its slot's master).");
    for (size_t i = 0; i < nparts; i++) {
        if (!s->parts[i].assigned) continue;
        buf_printf(&b, "tierd_partition_redis_up{partition=\"%" PRId32 "\",node=\"",
                   s->parts[i].partition);
        buf_label(&b, s->parts[i].node);
        buf_printf(&b, "\"} %d\n", s->parts[i].node_up ? 1 : 0);
    }

    head(&b, "tierd_orders_per_second", "gauge", "Orders applied per second, last interval.");
    buf_str(&b, "tierd_orders_per_second ");
    buf_double(&b, s->orders_per_second);
    buf_str(&b, "\n");
    gauge_u(&b, "tierd_ready",
            "1 when orders are being applied: Redis reachable, a partition assigned.",
            s->ready ? 1 : 0);

    head(&b, "tierd_policy_info", "gauge", "The policy in force; the value is always 1.");
    if (s->policy_name) {
        buf_str(&b, "tierd_policy_info{name=\"");
        buf_label(&b, s->policy_name);
        buf_str(&b, "\",version=\"");
        buf_label(&b, s->policy_version);
        buf_str(&b, "\"} 1\n");
    }

    histogram(&b, "tierd_redis_round_trip_seconds",
              "Round-trip time of Redis calls (a pipeline or transaction is one).", rtt_le,
              s->redis_rtt_buckets, METRICS_RTT_BUCKETS, s->redis_rtt_seconds_sum,
              s->redis_rtt_count);
    histogram(&b, "tierd_order_latency_seconds",
              "From an order record's Kafka timestamp to the commit of its batch in Redis.", lat_le,
              s->order_latency_buckets, METRICS_LAT_BUCKETS, s->order_latency_sum,
              s->order_latency_count);

    summary(&b, "tierd_batch_records", "Records per batch.", (double)s->batch_records_sum,
            s->batch_count);
    summary(&b, "tierd_review_duration_seconds", "Time a monthly partition review took.",
            s->review_seconds_sum, s->review_count);

    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (len) *len = b.len;
    return b.p;
}

void metrics_ready_text(const metrics_snapshot_t *s, char *buf, size_t size) {
    size_t nparts = s->nparts < METRICS_MAX_PARTS ? s->nparts : METRICS_MAX_PARTS;
    size_t len = (size_t)snprintf(buf, size, "%s\n", s->ready ? "ready" : "not ready");
    for (size_t i = 0; i < nparts && len < size; i++) {
        if (!s->parts[i].assigned) continue;
        if (!s->parts[i].node_up)
            len += (size_t)snprintf(buf + len, size - len,
                                    "partition %" PRId32 " waits on redis %.*s\n",
                                    s->parts[i].partition, METRICS_NODE_MAX, s->parts[i].node);
        for (int input = 0; input < 2 && len < size; input++) {
            int why = s->parts[i].waits[input];
            const char *topic = input ? "profiles" : "orders";
            if (why == METRICS_WAIT_PAST_END)
                len += (size_t)snprintf(buf + len, size - len,
                                        "partition %" PRId32 " waits: the offset tierd holds lies "
                                        "past the %s topic's end (tierctl seek or rebuild)\n",
                                        s->parts[i].partition, topic);
            else if (why == METRICS_WAIT_DIFFERS)
                len += (size_t)snprintf(buf + len, size - len,
                                        "partition %" PRId32 " waits: the %s topic's record before "
                                        "the offset tierd holds is not the one it applied there "
                                        "(tierctl seek or rebuild)\n",
                                        s->parts[i].partition, topic);
        }
    }
}

void metrics_hist_observe(const double *bounds, size_t n, double *buckets, double *sum,
                          uint64_t *count, double v) {
    *sum += v;
    (*count)++;
    for (size_t i = 0; i < n; i++)
        if (v <= bounds[i]) buckets[i] += 1;
}

void metrics_observe_rtt(metrics_snapshot_t *s, double seconds) {
    metrics_hist_observe(metrics_rtt_bounds, METRICS_RTT_BUCKETS, s->redis_rtt_buckets,
                         &s->redis_rtt_seconds_sum, &s->redis_rtt_count, seconds);
}

/* ---- the HTTP thread ---------------------------------------------------- */

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             char *body, size_t len, enum MHD_ResponseMemoryMode mode) {
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO; /* MHD closes the connection */
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) MHD_add_response_header(r, "Allow", "GET, HEAD");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned status, const char *text) {
    return reply(c, status, "text/plain; charset=utf-8", (char *)text, strlen(text),
                 MHD_RESPMEM_PERSISTENT);
}

/* Every request is answered on its first call, before any body is read:
 * none of these endpoints takes one. */
static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls) {
    metrics_t *m = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;

    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    int is_metrics = strcmp(url, "/metrics") == 0;
    int is_health = strcmp(url, "/healthz") == 0;
    int is_ready = strcmp(url, "/readyz") == 0;
    if (!is_metrics && !is_health && !is_ready)
        return reply_text(c, MHD_HTTP_NOT_FOUND, "not found\n");

    pthread_mutex_lock(&m->mu);
    int fresh = m->published && now_ms() - m->published_ms < m->stale_after_ms;
    int have = m->published;
    if (have) slot_fill(&m->serving, &m->latest.s);
    pthread_mutex_unlock(&m->mu);

    if (is_health) {
        if (!fresh) return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "stale: main loop silent\n");
        if (!m->serving.s.healthy)
            return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "unhealthy\n");
        return reply_text(c, MHD_HTTP_OK, "ok\n");
    }
    if (is_ready) {
        if (!fresh) return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "stale: main loop silent\n");
        /* A line per waiting partition: 40 bytes each at most, plus one */
        size_t size = 16 + (size_t)METRICS_MAX_PARTS * (40 + METRICS_NODE_MAX);
        char *body = malloc(size);
        if (!body) return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        metrics_ready_text(&m->serving.s, body, size);
        return reply(c, m->serving.s.ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                     "text/plain; charset=utf-8", body, strlen(body), MHD_RESPMEM_MUST_FREE);
    }
    if (!have) return reply_text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no metrics published yet\n");
    size_t len = 0;
    char *body = metrics_render(&m->serving.s, &len);
    if (!body) return reply_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len,
                 MHD_RESPMEM_MUST_FREE);
}

/* libmicrohttpd's own complaints: during start (a bind failure) the first
 * one becomes errstr; afterwards (connection errors, a client over its
 * address's limit) they go to our log, at most one a second, so that a
 * flood of connections does not become a flood of log lines. */
__attribute__((format(printf, 2, 0))) static void mhd_log(void *cls, const char *fmt, va_list ap) {
    metrics_t *m = cls;
    char msg[256];
    unsigned dropped = 0;
    uint64_t t = now_ms();
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    pthread_mutex_lock(&m->mu);
    int starting = m->starting, quiet = 0;
    if (starting && !m->start_err[0]) snprintf(m->start_err, sizeof(m->start_err), "%s", msg);
    if (!starting) {
        if (m->logged_ms && t - m->logged_ms < 1000) {
            m->suppressed++;
            quiet = 1;
        } else {
            dropped = m->suppressed;
            m->suppressed = 0;
            m->logged_ms = t;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (starting || quiet) return; /* starting: the caller reports errstr */
    if (dropped)
        log_warn(MOD, "http: %s (and %u more lines in the last second)", msg, dropped);
    else
        log_warn(MOD, "http: %s", msg);
}

/* Connections the server holds at once.  libmicrohttpd accepts no more
 * than its connection limit and leaves the rest in the kernel's backlog,
 * where a probe waits until a held connection ends: with the old limit of
 * 16 and a 10 s idle timeout, 40 idle clients kept /healthz waiting 15 s.
 * So the limit is large and the thread is epoll's (no FD_SETSIZE ceiling,
 * one turn per ready socket, not per open one).  Each connection costs a
 * descriptor: HTTP_FD_RESERVE of the soft RLIMIT_NOFILE are left for
 * Kafka, Redis and the rest.  tierd does not raise the soft limit: under
 * systemd it is 1024 (768 connections) and the unit's
 * SystemCallFilter=~@resources forbids setrlimit. */
#define HTTP_CONN_MAX 1000
#define HTTP_CONN_MIN 64
#define HTTP_FD_RESERVE 256
/* A connection that sends or reads nothing for this long is closed.  A
 * slow client that trickles bytes keeps its connection: the limit above,
 * not the timeout, is what bounds those. */
#define HTTP_IDLE_TIMEOUT_S 5
/* Per connection: our requests are a line and a few headers.  A request
 * that outgrows it is answered 431 and closed, so a trickling client ends
 * after this many bytes. */
#define HTTP_CONN_MEMORY (16 * 1024)

static unsigned http_conn_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur >= HTTP_CONN_MAX + HTTP_FD_RESERVE)
        return HTTP_CONN_MAX;
    if (rl.rlim_cur < HTTP_CONN_MIN + HTTP_FD_RESERVE) return HTTP_CONN_MIN;
    return (unsigned)(rl.rlim_cur - HTTP_FD_RESERVE);
}

/* "a.b.c.d:port" or "[v6]:port", numeric only. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, int *v6, uint16_t *port,
                        char *errstr, size_t errstr_size) {
    char host[64];
    const char *colon;
    size_t hlen;

    memset(ss, 0, sizeof(*ss));
    if (listen[0] == '[') {
        const char *close = strchr(listen, ']');
        if (!close || close[1] != ':') goto bad;
        colon = close + 1;
        hlen = (size_t)(close - listen - 1);
        if (hlen == 0 || hlen >= sizeof(host)) goto bad;
        memcpy(host, listen + 1, hlen);
        *v6 = 1;
    } else {
        colon = strrchr(listen, ':');
        if (!colon) goto bad;
        hlen = (size_t)(colon - listen);
        if (hlen == 0 || hlen >= sizeof(host) || memchr(listen, ':', hlen)) goto bad;
        memcpy(host, listen, hlen);
        *v6 = 0;
    }
    host[hlen] = '\0';

    const char *p = colon + 1;
    unsigned long n = 0;
    if (!*p) goto bad;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') goto bad;
        n = n * 10 + (unsigned long)(*p - '0');
        if (n > 65535) goto bad;
    }
    *port = (uint16_t)n;

    if (*v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(*port);
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) goto bad;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(*port);
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) goto bad;
    }
    return 0;
bad:
    snprintf(errstr, errstr_size,
             "metrics: listen address \"%s\" is not ADDRESS:PORT with a numeric IPv4 address "
             "or a bracketed IPv6 one (e.g. 127.0.0.1:9464, [::1]:9464), or \"\" to disable",
             listen);
    return -1;
}

int metrics_check_listen(const char *listen, char *errstr, size_t errstr_size) {
    struct sockaddr_storage ss;
    int v6;
    uint16_t port;
    return parse_listen(listen, &ss, &v6, &port, errstr, errstr_size);
}

metrics_t *metrics_start(const char *listen, char *errstr, size_t errstr_size) {
    metrics_t *m = NULL; /* owned here until returned */
    struct sockaddr_storage ss;
    uint16_t port = 0;
    int v6 = 0;
    int mu_ok = 0;

    if (listen && listen[0] && parse_listen(listen, &ss, &v6, &port, errstr, errstr_size) < 0)
        goto fail;
    m = calloc(1, sizeof(*m));
    if (!m) {
        snprintf(errstr, errstr_size, "metrics: out of memory");
        goto fail;
    }
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        snprintf(errstr, errstr_size, "metrics: cannot create a mutex");
        goto fail;
    }
    mu_ok = 1;
    m->stale_after_ms = 3000;
    if (!listen || !listen[0]) return m; /* disabled: publishes are kept, nothing served */

    /* The HTTP thread inherits this mask: signals stay with the main loop. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    m->starting = 1;
    /* Half the connections at most from one address: a client that leaks
     * connections, or trickles requests, leaves the other half to the
     * probes and scrapers elsewhere (behind docker's proxy, every outside
     * client is one address; the healthcheck inside is another). */
    unsigned limit = http_conn_limit();
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | (v6 ? MHD_USE_IPv6 : 0);
    m->d = MHD_start_daemon(flags, port, NULL, NULL, handle, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log,
                            m, /* first, or MHD warns */
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                            limit / 2, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_IDLE_TIMEOUT_S,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_CONN_MEMORY,
                            MHD_OPTION_END);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_mutex_lock(&m->mu);
    m->starting = 0;
    pthread_mutex_unlock(&m->mu);
    if (!m->d) {
        snprintf(errstr, errstr_size, "metrics: cannot serve on %s: %s", listen,
                 m->start_err[0] ? m->start_err
                 : saved         ? strerror(saved)
                                 : "libmicrohttpd could not start");
        goto fail;
    }
    if (m->start_err[0]) log_warn(MOD, "http: %s", m->start_err); /* started anyway */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->d, MHD_DAEMON_INFO_BIND_PORT);
    m->port = info ? info->port : port;
    return m;

fail:
    if (m && mu_ok) pthread_mutex_destroy(&m->mu);
    free(m);
    return NULL;
}

void metrics_publish(metrics_t *m, const metrics_snapshot_t *s) {
    if (!m || !s) return;
    uint64_t t = now_ms();
    pthread_mutex_lock(&m->mu);
    slot_fill(&m->latest, s);
    m->published = 1;
    m->published_ms = t;
    pthread_mutex_unlock(&m->mu);
}

void metrics_stop(metrics_t *m) {
    if (!m) return;
    if (m->d) MHD_stop_daemon(m->d); /* joins the HTTP thread */
    pthread_mutex_destroy(&m->mu);
    free(m);
}

int metrics_port(const metrics_t *m) {
    return m ? m->port : 0;
}

void metrics_set_stale_after_ms(metrics_t *m, unsigned ms) {
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stale_after_ms = ms;
    pthread_mutex_unlock(&m->mu);
}
