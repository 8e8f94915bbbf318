/*
 * The metrics module: the exposition text of a snapshot, line by line, and
 * the real HTTP server on a free loopback port, spoken to by a tiny socket
 * client (HTTP/1.0, read to EOF) so no HTTP library judges the replies.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <errno.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "metrics.h"

static const char *const reasons[] = {"NOT_AVRO", "KEY_MISMATCH", "bad \"quote\" \\ x"};

static void fill(metrics_snapshot_t *s) {
    memset(s, 0, sizeof(*s));
    s->applied = 42;
    s->duplicates = 7;
    s->dead = 6;
    s->dead_by_reason[0] = 1;
    s->dead_by_reason[1] = 2;
    s->dead_by_reason[2] = 3;
    s->reason_names = reasons;
    s->nreasons = 3;
    s->tier_events = 5;
    s->quota_events = 9;
    s->quota_by_kind[POLICY_QUOTA_WARNING] = 4;
    s->quota_by_kind[POLICY_QUOTA_REACHED] = 3;
    s->quota_by_kind[POLICY_QUOTA_EXCEEDED] = 2;
    s->outbox_depth = 11;
    s->read_errors[0] = 8;
    s->parts[0].partition = 0;
    s->parts[0].lag = 120;
    s->parts[0].committed = 1000;
    s->parts[0].assigned = 1;
    snprintf(s->parts[0].node, sizeof(s->parts[0].node), "127.0.0.1:7001");
    s->parts[0].node_up = 1;
    s->parts[1].partition = 3;
    s->parts[1].lag = 0;
    s->parts[1].committed = 55;
    s->parts[1].assigned = 1;
    snprintf(s->parts[1].node, sizeof(s->parts[1].node), "127.0.0.1:7002");
    s->parts[1].node_up = 1;
    s->parts[2].partition = 7; /* no longer ours: not exported */
    s->parts[2].lag = 99;
    s->parts[2].committed = 12;
    s->parts[2].assigned = 0;
    s->nparts = 3;
    s->orders_per_second = 12.5;
    s->ready = 1;
    s->healthy = 1;
    s->policy_name = "supply-tiers";
    s->policy_version = "2024-06";
    s->batch_records_sum = 300;
    s->batch_count = 4;
    s->review_seconds_sum = 0.75;
    s->review_count = 2;
}

static char *render(const metrics_snapshot_t *s) {
    size_t len = 0;
    char *text = metrics_render(s, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_true(len > 0 && text[len - 1] == '\n');
    return text;
}

/* The text holds `line` as a whole line. */
static int has_line(const char *text, const char *line) {
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return 1;
    return 0;
}

static void expect_line(const char *text, const char *line) {
    if (!has_line(text, line)) fail_msg("missing line: %s\n--- text ---\n%s", line, text);
}

static void test_render_counters_and_types(void **state) {
    (void)state;
    metrics_snapshot_t s;
    fill(&s);
    char *t = render(&s);

    expect_line(t, "tierd_orders_applied_total 42");
    expect_line(t, "tierd_duplicates_ignored_total 7");
    expect_line(t, "tierd_events_decided_total{kind=\"tier_change\"} 5");
    expect_line(t, "tierd_events_decided_total{kind=\"quota\"} 9");
    expect_line(t, "tierd_quota_events_total{kind=\"WARNING\"} 4");
    expect_line(t, "tierd_quota_events_total{kind=\"REACHED\"} 3");
    expect_line(t, "tierd_quota_events_total{kind=\"EXCEEDED\"} 2");
    expect_line(t, "tierd_quota_events_total{kind=\"HARD_CAP_EXCEEDED\"} 0");
    expect_line(t, "tierd_outbox_depth 11");
    expect_line(t, "tierd_read_errors_total{input=\"orders\"} 8");
    expect_line(t, "tierd_read_errors_total{input=\"profiles\"} 0");
    expect_line(t, "tierd_orders_per_second 12.5");
    expect_line(t, "tierd_ready 1");
    expect_line(t, "tierd_policy_info{name=\"supply-tiers\",version=\"2024-06\"} 1");
    expect_line(t, "tierd_batch_records_sum 300");
    expect_line(t, "tierd_batch_records_count 4");
    expect_line(t, "tierd_review_duration_seconds_sum 0.75");
    expect_line(t, "tierd_review_duration_seconds_count 2");

    static const struct {
        const char *name, *type;
    } fams[] = {
        {"tierd_orders_applied_total", "counter"},
        {"tierd_duplicates_ignored_total", "counter"},
        {"tierd_redelivered_total", "counter"},
        {"tierd_dead_letters_total", "counter"},
        {"tierd_batches_total", "counter"},
        {"tierd_fenced_commits_total", "counter"},
        {"tierd_reviews_total", "counter"},
        {"tierd_profiles_applied_total", "counter"},
        {"tierd_events_decided_total", "counter"},
        {"tierd_quota_events_total", "counter"},
        {"tierd_events_published_total", "counter"},
        {"tierd_redis_commands_total", "counter"},
        {"tierd_redis_redirects_total", "counter"},
        {"tierd_read_errors_total", "counter"},
        {"tierd_partition_redis_up", "gauge"},
        {"tierd_outbox_depth", "gauge"},
        {"tierd_consumer_lag", "gauge"},
        {"tierd_committed_offset", "gauge"},
        {"tierd_orders_per_second", "gauge"},
        {"tierd_ready", "gauge"},
        {"tierd_policy_info", "gauge"},
        {"tierd_redis_round_trip_seconds", "histogram"},
        {"tierd_batch_records", "summary"},
        {"tierd_review_duration_seconds", "summary"},
    };
    for (size_t i = 0; i < sizeof(fams) / sizeof(fams[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "# TYPE %s %s", fams[i].name, fams[i].type);
        expect_line(t, line);
        snprintf(line, sizeof(line), "# HELP %s ", fams[i].name);
        assert_non_null(strstr(t, line));
    }
    /* every line is a comment or starts with tierd_ */
    for (const char *p = t; *p; p = strchr(p, '\n') + 1)
        assert_true(strncmp(p, "# ", 2) == 0 || strncmp(p, "tierd_", 6) == 0);
    free(t);
}

static void test_render_dead_letters_by_reason_escaped(void **state) {
    (void)state;
    metrics_snapshot_t s;
    fill(&s);
    char *t = render(&s);
    expect_line(t, "tierd_dead_letters_total{reason=\"NOT_AVRO\"} 1");
    expect_line(t, "tierd_dead_letters_total{reason=\"KEY_MISMATCH\"} 2");
    expect_line(t, "tierd_dead_letters_total{reason=\"bad \\\"quote\\\" \\\\ x\"} 3");
    free(t);

    /* a newline in a label must not break the line */
    s.policy_name = "two\nlines";
    s.policy_version = NULL;
    t = render(&s);
    expect_line(t, "tierd_policy_info{name=\"two\\nlines\",version=\"\"} 1");
    free(t);

    /* no reason table: the total is still exported */
    s.nreasons = 0;
    s.reason_names = NULL;
    t = render(&s);
    expect_line(t, "tierd_dead_letters_total{reason=\"unknown\"} 6");
    free(t);
}

static void test_render_lag_per_assigned_partition(void **state) {
    (void)state;
    metrics_snapshot_t s;
    fill(&s);
    char *t = render(&s);
    expect_line(t, "tierd_consumer_lag{partition=\"0\"} 120");
    expect_line(t, "tierd_consumer_lag{partition=\"3\"} 0");
    expect_line(t, "tierd_committed_offset{partition=\"0\"} 1000");
    expect_line(t, "tierd_committed_offset{partition=\"3\"} 55");
    assert_null(strstr(t, "partition=\"7\""));
    free(t);
}

/* Which partition waits on which Redis node: in /metrics and /readyz. */
static void test_render_partition_nodes(void **state) {
    (void)state;
    metrics_snapshot_t s;
    char text[1024];
    fill(&s);
    s.parts[1].node_up = 0;
    s.parts[2].node_up = 0; /* not ours: neither exported nor listed */
    s.redis_redirects[METRICS_REDIR_MOVED] = 2;
    s.redis_redirects[METRICS_REDIR_ASK] = 5;
    char *t = render(&s);
    expect_line(t, "tierd_partition_redis_up{partition=\"0\",node=\"127.0.0.1:7001\"} 1");
    expect_line(t, "tierd_partition_redis_up{partition=\"3\",node=\"127.0.0.1:7002\"} 0");
    expect_line(t, "tierd_redis_redirects_total{kind=\"moved\"} 2");
    expect_line(t, "tierd_redis_redirects_total{kind=\"ask\"} 5");
    expect_line(t, "tierd_redis_redirects_total{kind=\"tryagain\"} 0");
    expect_line(t, "tierd_redis_redirects_total{kind=\"clusterdown\"} 0");
    assert_null(strstr(t, "partition=\"7\""));
    free(t);

    metrics_ready_text(&s, text, sizeof(text));
    assert_string_equal(text, "ready\npartition 3 waits on redis 127.0.0.1:7002\n");
    s.parts[0].node_up = 0;
    s.ready = 0;
    metrics_ready_text(&s, text, sizeof(text));
    assert_string_equal(text, "not ready\npartition 0 waits on redis 127.0.0.1:7001\n"
                              "partition 3 waits on redis 127.0.0.1:7002\n");
    metrics_ready_text(&s, text, 20); /* truncated, still a string */
    assert_int_equal(strlen(text), 19);
}

/* Why a partition's reading waits, by input: /readyz names each. */
static void test_ready_text_waits(void **state) {
    (void)state;
    metrics_snapshot_t s;
    char text[1024];
    fill(&s);
    s.parts[0].waits[0] = METRICS_WAIT_PAST_END;
    s.parts[1].waits[0] = s.parts[1].waits[1] = METRICS_WAIT_DIFFERS;
    s.parts[2].waits[1] = METRICS_WAIT_PAST_END; /* not ours: not listed */
    metrics_ready_text(&s, text, sizeof(text));
    assert_string_equal(text, "ready\n"
                              "partition 0 waits: the offset tierd holds lies past the orders "
                              "topic's end (tierctl seek or rebuild)\n"
                              "partition 3 waits: the orders topic's record before the offset "
                              "tierd holds is not the one it applied there (tierctl seek or "
                              "rebuild)\n"
                              "partition 3 waits: the profiles topic's record before the offset "
                              "tierd holds is not the one it applied there (tierctl seek or "
                              "rebuild)\n");
}

/* Reads the histogram's bucket lines in order; returns how many. */
static size_t buckets(const char *t, double *v, size_t max) {
    const char *key = "tierd_redis_round_trip_seconds_bucket{le=\"";
    size_t n = 0;
    for (const char *p = t; (p = strstr(p, key)) != NULL && n < max; p++) {
        const char *q = strstr(p, "\"} ");
        assert_non_null(q);
        v[n++] = strtod(q + 3, NULL);
    }
    return n;
}

static void test_render_histogram_monotonic(void **state) {
    (void)state;
    metrics_snapshot_t s;
    fill(&s);
    const double obs[] = {0.00005, 0.0003, 0.0003, 0.002, 0.04, 0.2, 3.0};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) metrics_observe_rtt(&s, obs[i]);
    assert_int_equal(s.redis_rtt_count, 7);

    char *t = render(&s);
    double v[METRICS_RTT_BUCKETS + 1];
    assert_int_equal(buckets(t, v, METRICS_RTT_BUCKETS + 1), METRICS_RTT_BUCKETS + 1);
    for (size_t i = 1; i <= METRICS_RTT_BUCKETS; i++) assert_true(v[i] >= v[i - 1]);
    expect_line(t, "tierd_redis_round_trip_seconds_bucket{le=\"0.0001\"} 1");
    expect_line(t, "tierd_redis_round_trip_seconds_bucket{le=\"0.0005\"} 3");
    expect_line(t, "tierd_redis_round_trip_seconds_bucket{le=\"1\"} 6");
    expect_line(t, "tierd_redis_round_trip_seconds_bucket{le=\"+Inf\"} 7");
    expect_line(t, "tierd_redis_round_trip_seconds_count 7");
    free(t);

    /* a torn fill is clamped: buckets never go down, +Inf holds them all */
    s.redis_rtt_buckets[5] = 100;
    t = render(&s);
    assert_int_equal(buckets(t, v, METRICS_RTT_BUCKETS + 1), METRICS_RTT_BUCKETS + 1);
    for (size_t i = 1; i <= METRICS_RTT_BUCKETS; i++) assert_true(v[i] >= v[i - 1]);
    expect_line(t, "tierd_redis_round_trip_seconds_bucket{le=\"+Inf\"} 100");
    free(t);
}

static void test_render_order_latency(void **state) {
    (void)state;
    metrics_snapshot_t s;
    fill(&s);
    const double obs[] = {0.004, 0.005, 0.07, 0.07, 1.5, 45.0, 3600.0};
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++)
        metrics_hist_observe(metrics_latency_bounds, METRICS_LAT_BUCKETS, s.order_latency_buckets,
                             &s.order_latency_sum, &s.order_latency_count, obs[i]);
    char *t = render(&s);
    expect_line(t, "# TYPE tierd_order_latency_seconds histogram");
    expect_line(t, "tierd_order_latency_seconds_bucket{le=\"0.005\"} 2");
    expect_line(t, "tierd_order_latency_seconds_bucket{le=\"0.05\"} 2");
    expect_line(t, "tierd_order_latency_seconds_bucket{le=\"0.1\"} 4");
    expect_line(t, "tierd_order_latency_seconds_bucket{le=\"2.5\"} 5");
    expect_line(t, "tierd_order_latency_seconds_bucket{le=\"60\"} 6");
    expect_line(t, "tierd_order_latency_seconds_bucket{le=\"+Inf\"} 7");
    expect_line(t, "tierd_order_latency_seconds_count 7");
    expect_line(t, "tierd_order_latency_seconds_sum 3646.649");
    free(t);
}

/* ---- the server --------------------------------------------------------- */

typedef struct resp {
    int status;
    char head[1024];
    char body[65536];
} resp_t;

/* Sends `req` raw and reads the reply to EOF.  0, or -1 on a socket error. */
static int http(int port, const char *req, resp_t *r) {
    char raw[sizeof(r->head) + sizeof(r->body)];
    size_t n = 0;
    struct sockaddr_in a;
    struct timeval tv = {5, 0};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rc = -1;

    memset(r, 0, sizeof(*r));
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) goto out;
    if (send(fd, req, strlen(req), 0) != (ssize_t)strlen(req)) goto out;
    for (;;) {
        ssize_t got = recv(fd, raw + n, sizeof(raw) - 1 - n, 0);
        if (got < 0) goto out;
        if (got == 0) break;
        n += (size_t)got;
        if (n == sizeof(raw) - 1) break;
    }
    raw[n] = '\0';
    char *end = strstr(raw, "\r\n\r\n");
    if (!end || sscanf(raw, "HTTP/1.%*d %d", &r->status) != 1) goto out;
    snprintf(r->head, sizeof(r->head), "%.*s", (int)(end - raw), raw);
    snprintf(r->body, sizeof(r->body), "%s", end + 4);
    rc = 0;
out:
    close(fd);
    return rc;
}

static int get(int port, const char *method, const char *path, resp_t *r) {
    char req[256];
    snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: localhost\r\n\r\n", method, path);
    return http(port, req, r);
}

static metrics_t *start_local(void) {
    char err[256] = "";
    metrics_t *m = metrics_start("127.0.0.1:0", err, sizeof(err));
    if (!m) fail_msg("metrics_start: %s", err);
    assert_true(metrics_port(m) > 0);
    return m;
}

static void test_server_endpoints(void **state) {
    (void)state;
    metrics_t *m = start_local();
    int port = metrics_port(m);
    resp_t *r = malloc(sizeof(*r));
    assert_non_null(r);

    /* nothing published yet: not alive, not ready, no numbers */
    assert_int_equal(get(port, "GET", "/healthz", r), 0);
    assert_int_equal(r->status, 503);
    assert_int_equal(get(port, "GET", "/readyz", r), 0);
    assert_int_equal(r->status, 503);
    assert_int_equal(get(port, "GET", "/metrics", r), 0);
    assert_int_equal(r->status, 503);

    metrics_snapshot_t s;
    fill(&s);
    char policy[] = "supply-tiers";
    s.policy_name = policy;
    metrics_publish(m, &s);
    policy[0] = 'X'; /* the module copied it: a reload may free the original */

    assert_int_equal(get(port, "GET", "/metrics", r), 0);
    assert_int_equal(r->status, 200);
    assert_non_null(strstr(r->head, "text/plain; version=0.0.4"));
    expect_line(r->body, "tierd_orders_applied_total 42");
    expect_line(r->body, "tierd_policy_info{name=\"supply-tiers\",version=\"2024-06\"} 1");
    char *direct = metrics_render(&s, NULL);
    assert_non_null(direct);
    assert_non_null(strstr(direct, "name=\"Xupply-tiers\"")); /* same renderer, own copy */
    free(direct);

    assert_int_equal(get(port, "HEAD", "/metrics", r), 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "");

    assert_int_equal(get(port, "GET", "/healthz", r), 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "ok\n");
    assert_int_equal(get(port, "GET", "/readyz", r), 0);
    assert_int_equal(r->status, 200);

    assert_int_equal(get(port, "GET", "/nope", r), 0);
    assert_int_equal(r->status, 404);
    assert_int_equal(get(port, "DELETE", "/metrics", r), 0);
    assert_int_equal(r->status, 405);
    assert_int_equal(http(port,
                          "POST /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
                          "Connection: close\r\n\r\nhello",
                          r),
                     0);
    assert_int_equal(r->status, 405);
    assert_non_null(strstr(r->head, "Allow: GET, HEAD"));

    /* paused: alive but not ready; main loop reports trouble: not healthy */
    s.ready = 0;
    metrics_publish(m, &s);
    assert_int_equal(get(port, "GET", "/readyz", r), 0);
    assert_int_equal(r->status, 503);
    expect_line(r->body, "not ready");
    /* a partition whose node is down is named, ready or not */
    s.parts[0].node_up = 0;
    metrics_publish(m, &s);
    assert_int_equal(get(port, "GET", "/readyz", r), 0);
    assert_int_equal(r->status, 503);
    assert_string_equal(r->body, "not ready\npartition 0 waits on redis 127.0.0.1:7001\n");
    s.ready = 1;
    metrics_publish(m, &s);
    assert_int_equal(get(port, "GET", "/readyz", r), 0);
    assert_int_equal(r->status, 200);
    assert_string_equal(r->body, "ready\npartition 0 waits on redis 127.0.0.1:7001\n");
    s.ready = 0;
    s.parts[0].node_up = 1;
    metrics_publish(m, &s);
    assert_int_equal(get(port, "GET", "/healthz", r), 0);
    assert_int_equal(r->status, 200);
    s.healthy = 0;
    metrics_publish(m, &s);
    assert_int_equal(get(port, "GET", "/healthz", r), 0);
    assert_int_equal(r->status, 503);

    free(r);
    metrics_stop(m);
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls until the endpoint answers `status`, for at most 5 s. */
static int wait_status(int port, const char *path, int status) {
    resp_t *r = malloc(sizeof(*r));
    uint64_t deadline = mono_ms() + 5000;
    int ok = 0;
    assert_non_null(r);
    while (!ok && mono_ms() < deadline) {
        if (get(port, "GET", path, r) == 0 && r->status == status)
            ok = 1;
        else
            nanosleep(&(struct timespec){0, 10 * 1000 * 1000}, NULL);
    }
    free(r);
    return ok;
}

static void test_healthz_goes_stale(void **state) {
    (void)state;
    metrics_t *m = start_local();
    int port = metrics_port(m);
    metrics_snapshot_t s;
    fill(&s);

    metrics_set_stale_after_ms(m, 200);
    metrics_publish(m, &s);
    assert_true(wait_status(port, "/healthz", 200));
    /* publishes stop: the main loop is presumed stuck */
    assert_true(wait_status(port, "/healthz", 503));
    assert_true(wait_status(port, "/readyz", 503));
    /* and it comes back with the next publish */
    metrics_set_stale_after_ms(m, 60000);
    metrics_publish(m, &s);
    assert_true(wait_status(port, "/healthz", 200));
    assert_true(wait_status(port, "/readyz", 200));
    metrics_stop(m);
}

/* A loopback TCP connection to port, or -1. */
static int dial(int port) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The server closed fd (EOF or reset), by its idle timeout say. */
static int closed_by_peer(int fd) {
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

#define CROWD_IDLE 300
#define CROWD_SLOW 30

/* A liveness probe must not queue behind other clients: with 300
 * connections that send nothing and 30 that send a request a byte at a
 * time and never finish it, /healthz still answers 200 within a second,
 * probe after probe, for a few seconds.  Connections the server drops (its
 * idle timeout) are opened again, so the crowd stays the same size. */
static void test_healthz_not_starved_by_idle_and_slow_clients(void **state) {
    (void)state;
    static const char slow_req[] = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    int idle[CROWD_IDLE], slow[CROWD_SLOW];
    size_t sent[CROWD_SLOW];
    int probes = 0, worst_ms = 0, reopened = 0;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1024) {
        print_message("skipped: %d descriptors are too few for the crowd\n", (int)rl.rlim_cur);
        skip();
    }
    resp_t *r = malloc(sizeof(*r));
    assert_non_null(r);

    metrics_t *m = start_local();
    int port = metrics_port(m);
    metrics_snapshot_t s;
    fill(&s);
    metrics_set_stale_after_ms(m, 600000);
    metrics_publish(m, &s);

    for (int i = 0; i < CROWD_IDLE; i++) {
        idle[i] = dial(port);
        assert_true(idle[i] >= 0);
    }
    for (int i = 0; i < CROWD_SLOW; i++) {
        slow[i] = dial(port);
        assert_true(slow[i] >= 0);
        sent[i] = 0;
    }

    uint64_t end = mono_ms() + 4000;
    while (mono_ms() < end) {
        for (int i = 0; i < CROWD_IDLE; i++) {
            if (!closed_by_peer(idle[i])) continue;
            close(idle[i]);
            idle[i] = dial(port);
            assert_true(idle[i] >= 0);
            reopened++;
        }
        for (int i = 0; i < CROWD_SLOW; i++) {
            char byte = sent[i] < sizeof(slow_req) - 1 ? slow_req[sent[i]] : 'a';
            if (closed_by_peer(slow[i]) ||
                send(slow[i], &byte, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1) {
                close(slow[i]);
                slow[i] = dial(port);
                assert_true(slow[i] >= 0);
                sent[i] = 0;
                reopened++;
                continue;
            }
            sent[i]++;
        }
        uint64_t t0 = mono_ms();
        int rc = get(port, "GET", "/healthz", r);
        int took = (int)(mono_ms() - t0);
        if (rc != 0 || r->status != 200 || took >= 1000)
            fail_msg("probe %d: rc %d, status %d after %d ms with %d idle and %d slow "
                     "connections open",
                     probes, rc, r->status, took, CROWD_IDLE, CROWD_SLOW);
        if (took > worst_ms) worst_ms = took;
        probes++;
        /* the slow clients' pace: a byte from each every 100 ms */
        nanosleep(&(struct timespec){0, 100 * 1000 * 1000}, NULL);
    }
    print_message("%d probes, slowest %d ms; %d connections the server closed were reopened\n",
                  probes, worst_ms, reopened);
    assert_true(probes >= 10);

    for (int i = 0; i < CROWD_IDLE; i++) close(idle[i]);
    for (int i = 0; i < CROWD_SLOW; i++) close(slow[i]);
    free(r);
    metrics_stop(m);
}

static void test_start_disabled_and_bad_addresses(void **state) {
    (void)state;
    char err[256] = "";
    metrics_snapshot_t s;
    fill(&s);

    metrics_t *m = metrics_start("", err, sizeof(err));
    assert_non_null(m);
    assert_int_equal(metrics_port(m), 0);
    metrics_publish(m, &s);
    metrics_stop(m);
    metrics_stop(NULL);
    metrics_publish(NULL, &s);

    static const char *const bad[] = {
        "127.0.0.1",     "localhost:9464", "::1:9464", "[::1]9464", "[::1]:",
        "1.2.3.4:65536", "1.2.3.4:9x",     ":9464",    "[]:80",     "999.0.0.1:80",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        m = metrics_start(bad[i], err, sizeof(err));
        if (m) fail_msg("accepted %s", bad[i]);
        assert_non_null(strstr(err, bad[i]));
    }

    /* the port is taken: a sentence, not a crash */
    metrics_t *a = start_local();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", metrics_port(a));
    err[0] = '\0';
    m = metrics_start(addr, err, sizeof(err));
    assert_null(m);
    assert_non_null(strstr(err, addr));
    metrics_stop(a);
}

static void test_start_ipv6_loopback(void **state) {
    (void)state;
    char err[256] = "";
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    a.sin6_addr = in6addr_loopback;
    int have_v6 = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (fd >= 0) close(fd);
    if (!have_v6) skip(); /* no ::1 on this machine */

    metrics_t *m = metrics_start("[::1]:0", err, sizeof(err));
    if (!m) fail_msg("metrics_start: %s", err);
    assert_true(metrics_port(m) > 0);
    metrics_stop(m);
}

int main(void) {
    /* The crowd test holds about 700 descriptors (both ends of each
     * connection): a soft limit of 1024 is close, so take the hard one. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_counters_and_types),
        cmocka_unit_test(test_render_dead_letters_by_reason_escaped),
        cmocka_unit_test(test_render_lag_per_assigned_partition),
        cmocka_unit_test(test_render_partition_nodes),
        cmocka_unit_test(test_ready_text_waits),
        cmocka_unit_test(test_render_histogram_monotonic),
        cmocka_unit_test(test_render_order_latency),
        cmocka_unit_test(test_server_endpoints),
        cmocka_unit_test(test_healthz_goes_stale),
        cmocka_unit_test(test_healthz_not_starved_by_idle_and_slow_clients),
        cmocka_unit_test(test_start_disabled_and_bad_addresses),
        cmocka_unit_test(test_start_ipv6_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
